#!/usr/bin/env bash
# Stop the Slurm started by scripts/slurm/start-local.sh (slurmd, slurmctld,
# and munged if it was started here). Keeps the state folder; pass --clean
# to remove it too (and the /etc/slurm/slurm.conf symlink into it).
set -uo pipefail
DIR="${LMGEO_SLURM_DIR:-/tmp/lmgeo-slurm}"
log() { echo "stop-local: $*" >&2; }

stop_pidfile() { # name pidfile
  local name=$1 pf=$2 pid
  [ -f "$pf" ] || { log "$name: no pid file"; return 0; }
  pid="$(cat "$pf")"
  if ! kill -0 "$pid" 2>/dev/null; then rm -f "$pf"; log "$name: not running"; return 0; fi
  log "stopping $name ($pid)"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "$name: KILL"; kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
  rm -f "$pf"
}

# Cancel what is left so no job step outlives slurmd (best effort).
if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
  SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --user=root --full >/dev/null 2>&1 || true
fi
stop_pidfile slurmd "$DIR/slurmd.pid"
stop_pidfile slurmctld "$DIR/slurmctld.pid"
# munged: stop it with its own client when it is there (it may be shared with
# another slurm on this machine; LMGEO_SLURM_KEEP_MUNGE=1 keeps it).
if [ "${LMGEO_SLURM_KEEP_MUNGE:-0}" != 1 ] && [ -S /run/munge/munge.socket.2 ]; then
  log "stopping munged"
  munged --stop >/dev/null 2>&1 || munged -s >/dev/null 2>&1 || true
fi
if [ "${1:-}" = --clean ]; then
  if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$DIR/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf
  fi
  rm -rf "$DIR"
  log "removed $DIR"
fi
exit 0
