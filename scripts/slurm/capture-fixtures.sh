#!/usr/bin/env bash
# Capture what the real Slurm prints into tests/fixtures/slurm/ (the fake
# Slurm in tests/fake-slurm/ copies these formats).
#
#   LMGEO_SLURM_CPUS=8 eval "$(scripts/slurm/start-local.sh)"
#   scripts/slurm/capture-fixtures.sh [OUT_DIR]
#
# Needs a running local Slurm from start-local.sh (it reads SLURM_CONF) with
# at least 4 CPUs on the node (the preemption case fills the node). Takes
# about 3.5 minutes: a requeued job only becomes eligible again after 2 minutes.
# Job ids differ from run to run; nothing else should.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/tests/fixtures/slurm}"
DIR="${LMGEO_SLURM_DIR:-/tmp/lmgeo-slurm}"
export SLURM_CONF="${SLURM_CONF:-$DIR/slurm.conf}"
WORK="$DIR/capture"
rm -rf "$WORK"; mkdir -p "$WORK" "$OUT"
cd "$WORK"
FMT='%i|%T|%r'
log() { echo "capture: $*" >&2; }

scontrol ping >/dev/null || { log "slurm is not running (SLURM_CONF=$SLURM_CONF)"; exit 1; }
NCPU="$(sinfo -h -o %c -p debug | head -1)"
[ "$NCPU" -ge 4 ] || { log "need >= 4 CPUs on the node (start with LMGEO_SLURM_CPUS=8)"; exit 1; }

# The squeue command of the driver, exactly.
q() { squeue --me --name="$1" --states=all --array --noheader --format="$FMT"; }
# save CASE CMD...: CASE.stdout.txt, CASE.stderr.txt, CASE.exit.txt
save() {
  local c=$1; shift
  "$@" >"$OUT/$c.stdout.txt" 2>"$OUT/$c.stderr.txt"
  echo $? >"$OUT/$c.exit.txt"
}
snap() { q "$1" >"$OUT/$2"; }   # snap NAME FILE
# timeline NAME FILE SECONDS: poll every ~50 ms, keep each distinct output,
# headed by '# +S.SSs' (seconds since the call).
timeline() {
  local name=$1 file=$2 secs=$3 t0 now prev="<none>" cur
  t0=$(date +%s.%N); : >"$OUT/$file"
  while :; do
    now=$(date +%s.%N)
    awk -v a="$now" -v b="$t0" -v s="$secs" 'BEGIN{exit !(a-b>s)}' && break
    cur="$(q "$name")"
    if [ "$cur" != "$prev" ]; then
      printf '# +%.2fs\n%s\n' "$(awk -v a="$now" -v b="$t0" 'BEGIN{print a-b}')" "$cur" >>"$OUT/$file"
      prev="$cur"
    fi
    sleep 0.05
  done
}
wait_state() { # NAME REGEX TIMEOUT: until the squeue output matches
  local i
  for i in $(seq $(( $3 * 10 ))); do q "$1" | grep -Eq "$2" && return 0; sleep 0.1; done
  log "timeout waiting for $1 =~ $2"; q "$1" >&2; return 1
}
ENVCMD='env | grep -E "^SLURM_(JOB_ID|JOB_NAME|ARRAY_JOB_ID|ARRAY_TASK_ID|ARRAY_TASK_COUNT|ARRAY_TASK_MIN|ARRAY_TASK_MAX|ARRAY_TASK_STEP|RESTART_COUNT|SUBMIT_DIR|JOB_PARTITION|CPUS_PER_TASK|CPUS_ON_NODE|JOB_NODELIST|NODELIST|NTASKS|PROCID|LOCALID|TASK_PID|CLUSTER_NAME)=|^SLURMD_NODENAME=" | sed -E "s/^(SLURM_TASK_PID)=.*/\1=<pid>/" | sort'

log "scontrol show config"
scontrol show config >"$OUT/scontrol-show-config.txt"
sinfo -V >"$OUT/sinfo-V.txt"

# ---------------------------------------------------------------- preemption
# Fill every CPU of the node with debug-partition tasks, then submit a job in
# partition 'urgent' (PriorityTier=10, PreemptMode=REQUEUE) that needs them all.
log "preemption (then 2 min until the preempted tasks run again)"
PRE=$(sbatch --parsable --job-name=fx-preempt --array=0-$((NCPU-1)) --output='fx-preempt-%A_%a.out' \
  --wrap "echo start SLURM_RESTART_COUNT=\${SLURM_RESTART_COUNT-unset}; $ENVCMD; if [ -n \"\${SLURM_RESTART_COUNT-}\" ]; then sleep 1; else sleep 300; fi; echo end")
wait_state fx-preempt "^${PRE}_$((NCPU-1))\|RUNNING" 30
sleep 0.5
q fx-preempt >"$OUT/squeue-preempt-0-before.txt"
sbatch --parsable --job-name=fx-urgent -p urgent -c "$NCPU" --wrap 'sleep 2' >/dev/null
timeline fx-preempt squeue-preempt-1-timeline.txt 6
scontrol show job "${PRE}_0" >"$OUT/scontrol-show-job-preempted.txt"

# ---------------------------------------------------------------- requeue
log "scontrol requeue of a running job"
RQ=$(sbatch --parsable --job-name=fx-requeue --output='fx-requeue-%j.out' \
  --wrap "echo start SLURM_RESTART_COUNT=\${SLURM_RESTART_COUNT-unset}; $ENVCMD; sleep 4; echo end")
wait_state fx-requeue "RUNNING" 30
q fx-requeue >"$OUT/squeue-requeue-0-running.txt"
save scontrol-requeue scontrol requeue "$RQ"
timeline fx-requeue squeue-requeue-1-timeline.txt 3
scontrol show job "$RQ" >"$OUT/scontrol-show-job-requeued.txt"

# ---------------------------------------------------------------- timeout
log "time limit (--time=1 -> TIMEOUT after about a minute)"
TO=$(sbatch --parsable --job-name=fx-timeout --time=1 --output='fx-timeout-%j.out' --wrap 'sleep 600')

# ---------------------------------------------------------------- sbatch
log "sbatch --parsable"
save sbatch-parsable-plain sbatch --parsable --job-name=fx-plain --output='fx-plain-%A_%a-%j-%x.out' \
  --wrap "echo hello; $ENVCMD"
save sbatch-parsable-array sbatch --parsable --job-name=fx-array --array=0-3 --output='fx-array-%A_%a-%j-%x.out' \
  --wrap "echo hello \$SLURM_ARRAY_TASK_ID; $ENVCMD"
save sbatch-array-above-max sbatch --parsable --job-name=fx-err --array=0-2000 --wrap true
save sbatch-array-index-1001 sbatch --parsable --job-name=fx-err --array=1001 --wrap true
save sbatch-array-index-1000 sbatch --parsable --job-name=fx-max --hold --array=1000 --wrap true
save sbatch-invalid-partition sbatch --parsable --job-name=fx-err -p nope --wrap true
save sbatch-dependency-unknown-job sbatch --parsable --job-name=fx-depunknown --dependency=afterok:999999 --wrap true
save sbatch-dependency-bad-syntax sbatch --parsable --job-name=fx-err --dependency=afterok:abc --wrap true
# #SBATCH lines in the script; command line wins over them
cat >"$WORK/directives.sh" <<'S'
#!/bin/bash
#SBATCH --job-name=fx-directive-name
#SBATCH --output=fx-directive-%j.out
#SBATCH --array=0-1
echo "name=$SLURM_JOB_NAME task=$SLURM_ARRAY_TASK_ID"
S
save sbatch-directives sbatch --parsable --job-name=fx-directives "$WORK/directives.sh"

# ---------------------------------------------------------------- states
log "pending: held, throttled array, dependency"
HOLD=$(sbatch --parsable --job-name=fx-held --hold --wrap true)
HOLDA=$(sbatch --parsable --job-name=fx-held-array --hold --array=0-3 --wrap true)
THR=$(sbatch --parsable --job-name=fx-throttle --array=0-7%2 --output='fx-throttle-%A_%a.out' --wrap 'sleep 3')
q fx-throttle >"$OUT/squeue-array-throttled-0-just-submitted.txt"
COMMA=$(sbatch --parsable --job-name=fx-comma --array=1,5,7 --hold --wrap true)
DEP1=$(sbatch --parsable --job-name=fx-dep --wrap 'sleep 3')
DEP2=$(sbatch --parsable --job-name=fx-dep --dependency=afterok:"$DEP1" --wrap true)
sleep 1.5
snap fx-held squeue-pending-held.txt
snap fx-held-array squeue-pending-held-array.txt
snap fx-comma squeue-pending-comma-array.txt
wait_state fx-throttle "RUNNING" 10
snap fx-throttle squeue-array-throttled-1-running.txt
squeue --me --name=fx-throttle --states=all --noheader --format="$FMT" >"$OUT/squeue-array-throttled-1-running.without--array.txt"
squeue --me --name=fx-throttle --states=all --array --noheader --format='%i|%F|%K|%A|%a|%j|%T|%r' >"$OUT/squeue-array-throttled-1-running.more-fields.txt"
snap fx-dep squeue-dependency-pending.txt

log "running, completed, failed, cancelled"
RUN=$(sbatch --parsable --job-name=fx-running --wrap 'sleep 20')
wait_state fx-running RUNNING 10; snap fx-running squeue-running.txt
squeue --me --name=fx-running --states=all --noheader --format='%i|%F|%K|%A|%a|%j|%T|%r' >"$OUT/squeue-running.more-fields.txt"
OK=$(sbatch --parsable --job-name=fx-completed --wrap true)
FAIL=$(sbatch --parsable --job-name=fx-failed --wrap 'exit 3')
FAILA=$(sbatch --parsable --job-name=fx-failed-array --array=0-2 --wrap '[ "$SLURM_ARRAY_TASK_ID" = 1 ] && exit 3; exit 0')
CAN=$(sbatch --parsable --job-name=fx-cancelled --wrap 'sleep 60')
CANA=$(sbatch --parsable --job-name=fx-cancelled-array --array=0-3%2 --wrap 'sleep 60')
wait_state fx-completed COMPLETED 15; snap fx-completed squeue-completed.txt
wait_state fx-failed FAILED 15; snap fx-failed squeue-failed.txt
wait_state fx-failed-array "_2\|COMPLETED" 15; sleep 0.5; snap fx-failed-array squeue-failed-array.txt
wait_state fx-cancelled RUNNING 10
save scancel-running scancel "$CAN"
sleep 1; snap fx-cancelled squeue-cancelled.txt
wait_state fx-cancelled-array "RUNNING" 10; sleep 0.5
snap fx-cancelled-array squeue-cancelled-array-0-before.txt
save scancel-one-task scancel "${CANA}_0"
sleep 1; snap fx-cancelled-array squeue-cancelled-array-1-one-task.txt
save scancel-by-name scancel --name=fx-cancelled-array
sleep 1; snap fx-cancelled-array squeue-cancelled-array-2-by-name.txt
scancel "$RUN"

log "dependencies that can never be satisfied"
sbatch --parsable --job-name=fx-dep-never --dependency=afterok:"$FAIL" --wrap true >/dev/null
sbatch --parsable --job-name=fx-dep-kill --dependency=afterok:"$FAIL" --kill-on-invalid-dep=yes --wrap true >/dev/null
sbatch --parsable --job-name=fx-dep-kill-array --dependency=afterok:"$FAILA" --kill-on-invalid-dep=yes --wrap true >/dev/null
sbatch --parsable --job-name=fx-dep-any --dependency=afterany:"$FAIL" --wrap true >/dev/null
sleep 2
snap fx-dep-never squeue-dependency-never-satisfied.txt
snap fx-dep-kill squeue-dependency-never-satisfied-kill.txt
snap fx-dep-kill-array squeue-dependency-never-satisfied-kill-array-dep.txt
snap fx-dep-any squeue-dependency-afterany-on-failed.txt
snap fx-depunknown squeue-dependency-unknown-job.txt
wait_state fx-dep "^${DEP2}\|COMPLETED" 15; snap fx-dep squeue-dependency-chain-done.txt

log "errors and empty output"
save squeue-empty squeue --me --name=fx-no-such-name --states=all --array --noheader --format="$FMT"
save squeue-unknown-jobid squeue -j 999999 --noheader --format="$FMT"
save scancel-unknown scancel 999999
save scancel-unknown-verbose scancel -v 999999
save scancel-unknown-task scancel "${HOLD}_5"
save scancel-bad-id scancel abc
save scontrol-requeue-pending scontrol requeue "$HOLD"
save scontrol-requeue-pending-task scontrol requeue "${HOLDA}_1"
save scontrol-requeue-unknown scontrol requeue 999999
save scontrol-requeue-bad-id scontrol requeue abc
save scontrol-release-unknown scontrol release 999999
scancel "$HOLD" "$HOLDA" "$COMMA"
scancel --name=fx-max

log "waiting for the requeued/preempted jobs to run again and for the timeout"
wait_state fx-requeue "COMPLETED" 200 && snap fx-requeue squeue-requeue-2-completed.txt
wait_state fx-preempt "^${PRE}_0\|COMPLETED" 200
sleep 2; snap fx-preempt squeue-preempt-2-completed.txt
wait_state fx-timeout "TIMEOUT" 150 && snap fx-timeout squeue-timeout.txt
snap fx-throttle squeue-array-throttled-2-completed.txt

# Preemption again with PreemptMode=CANCEL on the victims' partition: then
# PREEMPTED is what squeue shows, and it is final.
log "preemption with PreemptMode=CANCEL"
scontrol update PartitionName=debug PreemptMode=CANCEL
PC=$(sbatch --parsable --job-name=fx-preempt-cancel --array=0-$((NCPU-1)) --wrap 'sleep 300')
wait_state fx-preempt-cancel "^${PC}_$((NCPU-1))\|RUNNING" 30
sleep 0.5
sbatch --parsable --job-name=fx-urgent -p urgent -c "$NCPU" --wrap 'sleep 1' >/dev/null
timeline fx-preempt-cancel squeue-preempt-cancel-mode-timeline.txt 4
scontrol update PartitionName=debug PreemptMode=REQUEUE
scancel --name=fx-dep-never,fx-preempt-cancel,fx-timeout,fx-held,fx-held-array,fx-comma,fx-max 2>/dev/null

# ---------------------------------------------------------------- logs
log "task logs and output file names"
( cd "$WORK" && ls -1 *.out ) >"$OUT/output-file-names.txt"
cp "$WORK/fx-requeue-$RQ.out" "$OUT/log-requeued-job.txt"
cp "$WORK/fx-preempt-${PRE}_0.out" "$OUT/log-preempted-task.txt"
cp "$WORK/fx-timeout-$TO.out" "$OUT/log-timeout.txt"
for f in "$WORK"/fx-plain-*.out; do cp "$f" "$OUT/log-plain-job.txt"; done
for f in "$WORK"/fx-array-*_1-*.out; do cp "$f" "$OUT/log-array-task-1.txt"; done
log "done: $OUT"
