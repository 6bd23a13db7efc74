#!/usr/bin/env bash
# Start a real one-node Slurm (munge + slurmctld + slurmd) on this machine,
# without systemd, for tests of lmgeo's Slurm executor.
#
#   eval "$(scripts/slurm/start-local.sh)"     # starts (or finds) it, exports SLURM_CONF
#   scripts/slurm/stop-local.sh                # stops it
#
# Must run as root. Installs Debian's slurmctld/slurmd/slurm-client/munge if
# missing. Idempotent: when it is already up it only prints the exports.
# Only `export ...` lines go to stdout; progress goes to stderr.
#
# Environment:
#   LMGEO_SLURM_DIR     state folder (default /tmp/lmgeo-slurm): slurm.conf,
#                       logs, pid files, StateSaveLocation, SlurmdSpoolDir
#   LMGEO_SLURM_CPUS    CPUs the node advertises (default: nproc). More than
#                       the real count is allowed (SlurmdParameters=config_overrides)
#                       so that more tasks can run at once.
#   LMGEO_SLURM_TIMEOUT seconds to wait for the node to become idle (default 60)
set -euo pipefail

DIR="${LMGEO_SLURM_DIR:-/tmp/lmgeo-slurm}"
CPUS="${LMGEO_SLURM_CPUS:-$(nproc)}"
TIMEOUT="${LMGEO_SLURM_TIMEOUT:-60}"
CONF="$DIR/slurm.conf"
log() { echo "start-local: $*" >&2; }
exports() {
  echo "export SLURM_CONF=$CONF"
  echo "export LMGEO_SLURM_DIR=$DIR"
}

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

# --- packages -----------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurmctld slurmd slurm-client munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    slurmctld slurmd slurm-client munge >&2
fi

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- already running? ------------------------------------------------------
if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" \
   && SLURM_CONF="$CONF" scontrol ping >/dev/null 2>&1; then
  log "already running ($DIR)"
  exports
  exit 0
fi

mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
chmod 755 "$DIR"

# --- munge ---------------------------------------------------------------
MUNGE_SOCK=/run/munge/munge.socket.2
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
if ! id munge >/dev/null 2>&1; then
  MUNGE_USER=root
else
  MUNGE_USER=munge
fi
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key --force >&2
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
fi
chown -R "$MUNGE_USER:" /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 700 /etc/munge /var/log/munge /var/lib/munge
chmod 600 /etc/munge/munge.key
chmod 755 /run/munge
if ! { [ -S "$MUNGE_SOCK" ] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }; then
  log "starting munged as $MUNGE_USER"
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  if [ "$MUNGE_USER" = root ]; then
    munged --force
  else
    runuser -u munge -- munged || munged --force
  fi
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n </dev/null | unmunge >/dev/null || { log "munge does not work"; exit 1; }
fi

# --- slurm.conf ----------------------------------------------------------
HOST="$(hostname -s)"
MEM_TOTAL="$(free -m | awk '/^Mem:/ {print $2}')"
REAL_MEM=$(( MEM_TOTAL * 9 / 10 ))
cat > "$CONF" <<CONF
# Written by scripts/slurm/start-local.sh -- a one-node test cluster.
ClusterName=lmgeo-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
ReturnToService=2
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
MinJobAge=600
MaxArraySize=1001
MaxJobCount=100000
SchedulerParameters=batch_sched_delay=1,sched_min_interval=100000
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
# Only for preemption tests: a job here preempts (requeues) debug/gpu jobs.
PartitionName=urgent Nodes=$HOST Default=NO MaxTime=INFINITE State=UP PriorityTier=10
CONF
# A bare `sbatch` (no SLURM_CONF) finds it too, unless the machine has its own.
mkdir -p /etc/slurm
if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
  ln -sfn "$CONF" /etc/slurm/slurm.conf
fi
export SLURM_CONF="$CONF"

# --- daemons -------------------------------------------------------------
if ! alive "$DIR/slurmctld.pid"; then
  log "starting slurmctld"
  # -i: ignore state files that do not match this config (a fresh dir has none)
  slurmctld -i -f "$CONF"
fi
if ! alive "$DIR/slurmd.pid"; then
  log "starting slurmd"
  slurmd -f "$CONF" -N "$HOST"
fi

# --- wait for the node -----------------------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while :; do
  state="$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | sort -u | head -1 || true)"
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*|*'*')
      # config_overrides / ReturnToService=2 normally bring it back; nudge it.
      scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "node $HOST not idle after ${TIMEOUT}s (state: ${state:-none})"
    sinfo -N -l >&2 || true
    echo "--- $DIR/log/slurmctld.log (tail)" >&2
    tail -n 40 "$DIR/log/slurmctld.log" >&2 2>/dev/null || true
    echo "--- $DIR/log/slurmd.log (tail)" >&2
    tail -n 40 "$DIR/log/slurmd.log" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.5
done
log "up: node $HOST $state, $(sinfo -V 2>/dev/null)"
exports
