#!/usr/bin/env bash
# Self-test of the fake Slurm in this folder. Prints 'N passed, M failed' on
# its last line; exits non-zero when a check failed. Takes ~10-20 s.
#   tests/fake-slurm/selftest.sh
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
FIX="$HERE/../fixtures/slurm"
export PATH="$HERE:$PATH"
export FAKE_SLURM_DIR; FAKE_SLURM_DIR="$(mktemp -d /tmp/fake-slurm-selftest.XXXXXX)"
W="$FAKE_SLURM_DIR/work"; mkdir -p "$W"; cd "$W"
# The runners notice that FAKE_SLURM_DIR is gone and kill what they run.
trap 'rm -rf "$FAKE_SLURM_DIR"' EXIT
unset FAKE_SLURM_FAIL FAKE_SLURM_FAIL_ONCE FAKE_SLURM_VANISH FAKE_SLURM_REQUEUE FAKE_SLURM_PREEMPT \
  FAKE_SLURM_PREEMPT_CANCEL FAKE_SLURM_TIMEOUT FAKE_SLURM_MAX_ARRAY_SIZE FAKE_SLURM_SCENARIO_NAME \
  FAKE_SLURM_PURGE_AFTER SLURM_CONF

PASS=0; FAIL=0
ok()  { PASS=$((PASS+1)); echo "ok   - $1"; }
bad() { FAIL=$((FAIL+1)); echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/       /'; }
# check DESC EXPECTED ACTUAL
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "expected: $(printf %q "$2")"$'\n'"actual:   $(printf %q "$3")"; fi; }
q() { squeue --me --name="$1" --states=all --array --noheader --format='%i|%T|%r'; }
# wait_for NAME REGEX SECONDS: until q NAME matches (grep -E on the whole output)
wait_for() {
  local end=$(( $(date +%s%N) + ${3:-10} * 1000000000 ))
  while [ "$(date +%s%N)" -lt "$end" ]; do q "$1" | grep -Eq "$2" && return 0; sleep 0.1; done
  return 1
}
# wait_done NAME COUNT SECONDS: until COUNT lines, none PENDING/RUNNING/COMPLETING
wait_done() {
  local end=$(( $(date +%s%N) + ${3:-10} * 1000000000 )) out
  while [ "$(date +%s%N)" -lt "$end" ]; do
    out="$(q "$1")"
    if [ "$(printf '%s\n' "$out" | grep -c .)" = "$2" ] && ! printf '%s\n' "$out" | grep -Eq 'PENDING|RUNNING|COMPLETING'; then return 0; fi
    sleep 0.1
  done
  return 1
}
states() { q "$1" | sort -t'|' -k1,1V | cut -d'|' -f2- | tr '\n' ' ' | sed 's/ $//'; }

# ------------------------------------------------------------ submit everything
# (many jobs at once so that the whole test takes seconds)
mkdir -p "$W/sub"
PLAIN=$(sbatch --parsable --job-name=plain --output='%x-%j.out' --chdir="$W/sub" --wrap 'pwd; env | grep -E "^SLURM" | sort' 2>&1)
FAILA=$(FAKE_SLURM_FAIL=1 sbatch --parsable --job-name=faila --array=0-2 --output='faila-%a.out' --wrap 'echo ran > '"$W"'/faila.ran.$SLURM_ARRAY_TASK_ID')
EXIT3=$(sbatch --parsable --job-name=exit3 --wrap 'exit 3')
VAN=$(FAKE_SLURM_VANISH=2 sbatch --parsable --job-name=van --array=0-3 --wrap 'true')
RQ=$(FAKE_SLURM_REQUEUE=0 FAKE_SLURM_KILL_AFTER=0.4 sbatch --parsable --job-name=rq --array=0-1 --output='rq-%a.out' \
  --wrap 'echo "start ${SLURM_RESTART_COUNT-unset}" >> '"$W"'/rq.$SLURM_ARRAY_TASK_ID; sleep 1; echo done >> '"$W"'/rq.$SLURM_ARRAY_TASK_ID')
PC=$(FAKE_SLURM_PREEMPT_CANCEL='*' FAKE_SLURM_KILL_AFTER=0.3 sbatch --parsable --job-name=pc --output=pc.out --wrap 'sleep 5')
TO=$(FAKE_SLURM_TIMEOUT='*' FAKE_SLURM_KILL_AFTER=0.3 sbatch --parsable --job-name=to --output=to.out --wrap 'sleep 5')
DK=$(sbatch --parsable --job-name=depkill --dependency=afterok:"$EXIT3" --kill-on-invalid-dep=yes --wrap true)
DN=$(sbatch --parsable --job-name=depnever --dependency=afterok:"$EXIT3" --wrap true)
DA=$(sbatch --parsable --job-name=depany --dependency=afterany:"$EXIT3" --wrap true)
DKA=$(sbatch --parsable --job-name=depkilla --dependency=afterok:"$FAILA" --kill-on-invalid-dep=yes --wrap true)
DU=$(sbatch --parsable --job-name=depunknown --dependency=afterok:999999 --wrap true)
HOLD=$(sbatch --parsable --job-name=hold --hold --wrap true)
cat > "$W/directives.sh" <<'S'
#!/bin/bash
#SBATCH --job-name=from-directive
#SBATCH --array=0-1
#SBATCH --output=dir-%a.out
echo "name=$SLURM_JOB_NAME task=$SLURM_ARRAY_TASK_ID args=$*"
S
DIR1=$(sbatch --parsable "$W/directives.sh" a b)
DIR2=$(sbatch --parsable --job-name=cli-wins --output=cli-%a.out "$W/directives.sh")

# ------------------------------------------------------------ sbatch output and errors
[[ "$PLAIN" =~ ^[0-9]+$ ]] && ok "sbatch --parsable prints a job id ($PLAIN)" || bad "sbatch --parsable prints a job id" "$PLAIN"
check "job ids count up" "$((PLAIN+1))" "$FAILA"
out=$(sbatch --job-name=nonparsable --hold --wrap true); check "sbatch without --parsable" "Submitted batch job $((DIR2+2))" "$out"
scancel --name=nonparsable

err=$(sbatch --parsable --array=0-2000 --wrap true 2>&1 >/dev/null); rc=$?
check "array above MaxArraySize: message as real Slurm" "$(cat "$FIX/sbatch-array-above-max.stderr.txt")" "$err"
check "array above MaxArraySize: exit code as real Slurm" "$(cat "$FIX/sbatch-array-above-max.exit.txt")" "$rc"
sbatch --parsable --array=1000 --hold --job-name=cap --wrap true >/dev/null; check "index 1000 accepted (MaxArraySize=1001)" 0 $?
sbatch --parsable --array=1001 --job-name=cap --wrap true >/dev/null 2>&1; check "index 1001 rejected" 1 $?
FAKE_SLURM_MAX_ARRAY_SIZE=10 sbatch --parsable --array=0-10 --job-name=cap --wrap true >/dev/null 2>&1; check "FAKE_SLURM_MAX_ARRAY_SIZE=10 rejects index 10" 1 $?
FAKE_SLURM_MAX_ARRAY_SIZE=10 sbatch --parsable --array=0-9 --hold --job-name=cap --wrap true >/dev/null; check "FAKE_SLURM_MAX_ARRAY_SIZE=10 takes 0-9" 0 $?
scancel --name=cap
check "scontrol show config = captured text" "$(cat "$FIX/scontrol-show-config.txt")" "$(scontrol show config)"
check "scontrol show config with FAKE_SLURM_MAX_ARRAY_SIZE=10" "MaxArraySize            = 10" \
  "$(FAKE_SLURM_MAX_ARRAY_SIZE=10 scontrol show config | grep '^MaxArraySize')"
check "only MaxArraySize changes" 2 "$(diff <(scontrol show config) <(FAKE_SLURM_MAX_ARRAY_SIZE=10 scontrol show config) | grep -c '^[<>]')"
err=$(sbatch --parsable -p nope --wrap true 2>&1 >/dev/null); rc=$?
check "invalid partition: message" "$(cat "$FIX/sbatch-invalid-partition.stderr.txt")" "$err"
check "invalid partition: exit code" "$(cat "$FIX/sbatch-invalid-partition.exit.txt")" "$rc"
sbatch --parsable -p gpu --gres=gpu:1 --gpus 1 --mem 1G --time 10 -c 2 --requeue --export=ALL --job-name=gpu --some-flag=x --other-flag y --wrap true >/dev/null
check "partition gpu and unknown flags accepted" 0 $?
err=$(sbatch --parsable --dependency=afterok:abc --wrap true 2>&1 >/dev/null); rc=$?
check "bad dependency: message" "$(cat "$FIX/sbatch-dependency-bad-syntax.stderr.txt")" "$err"
check "bad dependency: exit code" 1 "$rc"

# ------------------------------------------------------------ squeue basics
out=$(squeue --me --name=no-such-name --states=all --array --noheader --format='%i|%T|%r'); rc=$?
check "squeue with no match: empty, exit 0" "|0" "$out|$rc"
err=$(squeue -j 999999 --noheader --format='%i|%T|%r' 2>&1); rc=$?
check "squeue -j unknown" "$(cat "$FIX/squeue-unknown-jobid.stderr.txt")|1" "$err|$rc"
check "held job" "$HOLD|PENDING|JobHeldUser" "$(q hold)"
scontrol release "$HOLD"
wait_for hold "COMPLETED" 5 && ok "released job runs" || bad "released job runs" "$(q hold)"

# throttled array, grouped without --array
THR=$(sbatch --parsable --job-name=thr --array=0-5%2 --output='thr-%A_%a.out' --wrap '
  mkdir "'"$W"'/thr.run.$SLURM_ARRAY_TASK_ID"; n=$(ls -d "'"$W"'"/thr.run.* | wc -l); echo $n >> "'"$W"'/thr.conc"
  while [ ! -e "'"$W"'/thr.go" ]; do sleep 0.05; done; sleep 0.2; rmdir "'"$W"'/thr.run.$SLURM_ARRAY_TASK_ID"')
wait_for thr "RUNNING" 5
g=$(squeue --me --name=thr --states=all --noheader --format='%i|%T|%r' | grep '\[')
[[ "$g" =~ ^${THR}_\[[0-9]-5%2\]\|PENDING\|JobArrayTaskLimit$ ]] && ok "without --array pending tasks are grouped ($g)" || bad "grouped pending tasks" "$g"
m=$(q thr | grep -c 'PENDING|JobArrayTaskLimit'); [ "$m" -ge 1 ] && ok "throttled tasks: PENDING|JobArrayTaskLimit" || bad "throttled reason" "$(q thr)"
x=$(squeue --me --name=thr --states=all --array --noheader --format='%i|%F|%K|%A|%a|%j' | grep "^${THR}_1|")
[[ "$x" =~ ^${THR}_1\|${THR}\|1\|[0-9]+\|\(null\)\|thr$ ]] && ok "%F %K %A %a %j ($x)" || bad "%F %K %A %a %j" "$x"
touch "$W/thr.go"

# cancel
CAN=$(sbatch --parsable --job-name=can --wrap 'sleep 30; touch '"$W"'/can.finished')
CANA=$(sbatch --parsable --job-name=cana --array=0-3%2 --wrap 'sleep 30')
wait_for can RUNNING 5
check "scancel of a running job: silent, exit 0" "|0" "$(scancel "$CAN" 2>&1)|$?"
wait_for can "CANCELLED" 3 && check "cancelled job" "$CAN|CANCELLED|None" "$(q can)" || bad "cancelled job" "$(q can)"
wait_for cana "RUNNING" 5
scancel "${CANA}_0"
check "scancel ID_TASK cancels one task" "CANCELLED|None" "$(q cana | grep "^${CANA}_0|" | cut -d'|' -f2-)"
wait_for cana "^${CANA}_2\|RUNNING" 5 || bad "next task starts after a cancel" "$(q cana)"
scancel --name=cana
check "scancel --name: all tasks cancelled, pending ones keep their reason" \
  "CANCELLED|None CANCELLED|None CANCELLED|None CANCELLED|JobArrayTaskLimit" "$(states cana)"
check "scancel unknown id: silent, exit 0 (as real)" "|0" "$(scancel 999999 2>&1)|$?"
check "scancel bad id" "$(cat "$FIX/scancel-bad-id.stderr.txt")|1" "$(scancel abc 2>&1)|$?"

# dependencies
D1=$(sbatch --parsable --job-name=chain --wrap 'while [ ! -e "'"$W"'/chain.go" ]; do sleep 0.05; done; date +%s%N > '"$W"'/chain.1')
D2=$(sbatch --parsable --job-name=chain --dependency=afterok:"$D1" --array=0-1 --wrap 'date +%s%N > '"$W"'/chain.2.$SLURM_ARRAY_TASK_ID')
D3=$(sbatch --parsable --job-name=chain --dependency=afterok:"$D2" --kill-on-invalid-dep=yes --wrap 'date +%s%N > '"$W"'/chain.3')
wait_for chain "^${D2}_0\|PENDING\|Dependency" 3 && ok "afterok target running: PENDING|Dependency" || bad "PENDING|Dependency" "$(q chain)"
touch "$W/chain.go"
wait_for depkill "CANCELLED" 5
check "afterok on failed job, --kill-on-invalid-dep=yes" "$DK|CANCELLED|DependencyNeverSatisfied" "$(q depkill)"
wait_for depkilla "CANCELLED" 5
check "afterok on array with a failed task, --kill-on-invalid-dep=yes" "$DKA|CANCELLED|DependencyNeverSatisfied" "$(q depkilla)"
check "afterok on failed job, no kill: pending forever" "$DN|PENDING|DependencyNeverSatisfied" "$(q depnever)"
scancel "$DN"
wait_for depany COMPLETED 5 && ok "afterany on a failed job runs" || bad "afterany" "$(q depany)"
wait_for depunknown COMPLETED 5 && ok "afterok on an unknown job id runs (as real Slurm)" || bad "unknown dependency" "$(q depunknown)"

# preemption: PREEMPTED, then PENDING|BeginTime, then RUNNING, then COMPLETED
PRE=$(FAKE_SLURM_PREEMPT=0 FAKE_SLURM_KILL_AFTER=0.5 FAKE_SLURM_PREEMPT_SHOW=1 FAKE_SLURM_REQUEUE_DELAY=1 sbatch --parsable --job-name=pre \
  --wrap 'echo "start ${SLURM_RESTART_COUNT-unset}" >> '"$W"'/pre.log; sleep 0.8; echo done >> '"$W"'/pre.log')
seen=""; end=$(( $(date +%s%N) + 10000000000 ))
while [ "$(date +%s%N)" -lt "$end" ]; do
  s=$(q pre | cut -d'|' -f2-); [ "${seen##* }" != "$s" ] && seen="$seen $s"
  [ "$s" = "COMPLETED|None" ] && break; sleep 0.05
done
seen="$(echo "$seen" | sed 's/ PENDING|None//; s/^ RUNNING|None//')"
check "preempt timeline" " PREEMPTED|None PENDING|BeginTime RUNNING|None COMPLETED|None" "$seen"
check "preempted task ran twice, SLURM_RESTART_COUNT unset then 1" "start unset start 1 done" "$(tr '\n' ' ' < "$W/pre.log" | sed 's/ $//')"

# ------------------------------------------------------------ wait for the rest
wait_done plain 1 5; wait_done thr 6 10; wait_done faila 3 5; wait_done exit3 1 5
wait_done rq 2 10; wait_done to 1 5; wait_done chain 4 10
wait_done from-directive 2 5; wait_done cli-wins 2 5
f="$W/sub/plain-$PLAIN.out"
check "plain job completed" "$PLAIN|COMPLETED|None" "$(q plain)"
check "--chdir and %x-%j" "$W/sub" "$(head -1 "$f" 2>/dev/null)"
grep -q "^SLURM_JOB_ID=$PLAIN$" "$f" && grep -q "^SLURM_JOB_NAME=plain$" "$f" && grep -q '^SLURMD_NODENAME=' "$f" \
  && ! grep -q '^SLURM_ARRAY' "$f" && ! grep -q '^SLURM_RESTART_COUNT' "$f" \
  && ok "plain job env (no SLURM_ARRAY_*, no SLURM_RESTART_COUNT on a first run)" || bad "plain job env" "$(cat "$f")"
check "throttled array completed" "COMPLETED|None COMPLETED|None COMPLETED|None COMPLETED|None COMPLETED|None COMPLETED|None" "$(states thr)"
check "throttle %2: at most 2 at once" 2 "$(sort -n "$W/thr.conc" | tail -1)"
grep -q "^SLURM_ARRAY_JOB_ID=$THR" "$W/thr-${THR}_3.out" 2>/dev/null || true
check "FAKE_SLURM_FAIL=1" "COMPLETED|None FAILED|NonZeroExitCode COMPLETED|None" "$(states faila)"
[ ! -e "$W/faila.ran.1" ] && [ -e "$W/faila.ran.0" ] && ok "failed task did not run the script" || bad "failed task did not run the script"
grep -q 'FAKE_SLURM_FAIL' "$W/faila-1.out" && ok "failed task has a log line" || bad "failed task log" "$(cat "$W/faila-1.out" 2>&1)"
check "exit 3 -> FAILED" "$EXIT3|FAILED|NonZeroExitCode" "$(q exit3)"
wait_done van 3 5
check "FAKE_SLURM_VANISH=2: task 2 gone" "${VAN}_0 ${VAN}_1 ${VAN}_3" "$(q van | cut -d'|' -f1 | sort -V | tr '\n' ' ' | sed 's/ $//')"
check "FAKE_SLURM_REQUEUE=0: both completed" "COMPLETED|None COMPLETED|None" "$(states rq)"
check "requeued task ran twice" "start unset start 1 done" "$(tr '\n' ' ' < "$W/rq.0" | sed 's/ $//')"
check "other task ran once" "start unset done" "$(tr '\n' ' ' < "$W/rq.1" | sed 's/ $//')"
check "requeued task's log was truncated (as real)" "" "$(cat "$W/rq-0.out")"
wait_done pc 1 5
check "FAKE_SLURM_PREEMPT_CANCEL -> PREEMPTED for good" "$PC|PREEMPTED|None" "$(q pc)"
check "FAKE_SLURM_TIMEOUT -> TIMEOUT|TimeLimit" "$TO|TIMEOUT|TimeLimit" "$(q to)"
grep -q 'DUE TO TIME LIMIT' "$W/to.out" && ok "timeout log line" || bad "timeout log line" "$(cat "$W/to.out")"
check "dependency chain completed" "COMPLETED|None COMPLETED|None COMPLETED|None COMPLETED|None" "$(states chain)"
a=$(cat "$W/chain.1"); b0=$(cat "$W/chain.2.0"); b1=$(cat "$W/chain.2.1"); c=$(cat "$W/chain.3")
[ "$a" -lt "$b0" ] && [ "$a" -lt "$b1" ] && [ "$b0" -lt "$c" ] && [ "$b1" -lt "$c" ] && ok "dependency chain ran in order" || bad "chain order" "$a $b0 $b1 $c"
check "#SBATCH lines (name, array, output) and script args" "name=from-directive task=0 args=a b" "$(cat "$W/dir-0.out")"
check "command line wins over #SBATCH" "name=cli-wins task=1 args=" "$(cat "$W/cli-1.out")"

# scontrol requeue of a finished job: runs again with SLURM_RESTART_COUNT=1
RR=$(sbatch --parsable --job-name=rr --output=rr.out --wrap 'echo "restart=${SLURM_RESTART_COUNT-unset}"')
wait_done rr 1 5
FAKE_SLURM_REQUEUE_DELAY=1 scontrol requeue "$RR"; check "scontrol requeue: exit 0" 0 $?
wait_for rr "PENDING\|BeginTime|COMPLETING" 2 && ok "requeued: COMPLETING/PENDING|BeginTime" || bad "requeued state" "$(q rr)"
wait_for rr "COMPLETED" 5 && check "requeued job ran again" "restart=1" "$(cat "$W/rr.out")" || bad "requeued job ran again" "$(q rr)"
err=$(scontrol requeue 999999 2>&1); rc=$?
check "scontrol requeue unknown" "$(cat "$FIX/scontrol-requeue-unknown.stderr.txt")|1" "$err|$rc"

# FAIL_ONCE: fails the first time a (name, index) is submitted, runs after
F1=$(FAKE_SLURM_FAIL_ONCE=0 sbatch --parsable --job-name=once --wrap true); wait_done once 1 5
F2=$(FAKE_SLURM_FAIL_ONCE=0 sbatch --parsable --job-name=once --wrap true); sleep 0.2; wait_done once 2 5
check "FAKE_SLURM_FAIL_ONCE" "$F1|FAILED|NonZeroExitCode $F2|COMPLETED|None" "$(q once | sort | tr '\n' ' ' | sed 's/ $//')"
# FAKE_SLURM_SCENARIO_NAME limits scenarios to matching names
N1=$(FAKE_SLURM_FAIL='*' FAKE_SLURM_SCENARIO_NAME='zzz*' sbatch --parsable --job-name=scen --wrap true); wait_done scen 1 5
check "FAKE_SLURM_SCENARIO_NAME" "$N1|COMPLETED|None" "$(q scen)"
# purge: finished jobs disappear after FAKE_SLURM_PURGE_AFTER seconds
P1=$(FAKE_SLURM_PURGE_AFTER=0.3 sbatch --parsable --job-name=purge --wrap true); wait_for purge COMPLETED 5; sleep 0.5
check "FAKE_SLURM_PURGE_AFTER" "" "$(q purge)"

# calls.jsonl
n_sq=$(grep -c '"cmd": "squeue"' "$FAKE_SLURM_DIR/calls.jsonl"); n_sb=$(grep -c '"cmd": "sbatch"' "$FAKE_SLURM_DIR/calls.jsonl")
[ "$n_sq" -gt 10 ] && [ "$n_sb" -gt 20 ] && ok "calls.jsonl records every call ($n_sb sbatch, $n_sq squeue)" || bad "calls.jsonl" "$n_sb $n_sq"
python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$FAKE_SLURM_DIR/calls.jsonl" && ok "calls.jsonl is JSON lines" || bad "calls.jsonl is JSON lines"
logs=$(cat "$FAKE_SLURM_DIR"/runner-*.log 2>/dev/null); check "no runner errors" "" "$logs"

# concurrency: 8 parallel sbatch calls get 8 distinct ids
for i in 1 2 3 4 5 6 7 8; do sbatch --parsable --job-name=par --hold --wrap true > "$W/par.$i" & done; wait
check "parallel sbatch: distinct ids" 8 "$(cat "$W"/par.* | sort -u | wc -l)"
scancel --name=par

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
