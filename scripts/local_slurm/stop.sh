#!/usr/bin/env bash
# scripts/local_slurm/stop.sh - stop ONLY the daemons that start.sh started, using the
# pid files it recorded in /run/local-slurm (each pid is checked against the expected
# executable first, so a stale file never kills an unrelated process).  Idempotent.
# Usage: stop.sh [NAME...]  - only these daemons (as start.sh names them: slurmd, slurmd-n1..,
# slurmctld, slurmctld-localnodes, slurmdbd, mariadb, munged), e.g. the ones one start.sh call
# reported as "started NAME"; default: all recorded ones.
# If this script owns a slurmctld, that cluster's jobs are cancelled first so that no job
# processes (slurmstepd + tasks) outlive it; LOCAL_SLURM_CANCEL_JOBS=0 skips that.
set -uo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
CANCEL_JOBS="${LOCAL_SLURM_CANCEL_JOBS:-1}"

log() { echo "[local-slurm] $*" >&2; }
[[ $(id -u) == 0 ]] || { log "ERROR: must run as root"; exit 1; }

if (($#)); then
  names=("$@")
else
  names=(); for f in "$RUN_DIR"/*.pid; do [[ -e $f ]] && names+=("$(basename "$f" .pid)"); done
fi
for name in "${names[@]}"; do exe_of "$name" >/dev/null || { log "ERROR: unknown daemon $name"; exit 2; }; done
# the nodes first, then their controllers, then what the controllers need
ORDER=()
for kind in slurmd slurmctld slurmdbd mariadb munged; do
  for name in "${names[@]}"; do [[ ${name%%-*} == "$kind" ]] && ORDER+=("$name"); done
done

owned_pid() { # prints the pid if $RUN_DIR/NAME.pid names a live process running the expected exe
  local f="$RUN_DIR/$1.pid" pid
  [[ -s $f ]] || return 1
  pid=$(<"$f"); [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$(exe_of "$1")")" ]] || return 1
  echo "$pid"
}
running() { # live and not a zombie (PID 1 here may reap orphans late)
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

for name in "${ORDER[@]}"; do
  [[ $CANCEL_JOBS == 1 && ${name%%-*} == slurmctld ]] && owned_pid "$name" >/dev/null || continue
  export SLURM_CONF
  SLURM_CONF=$(conf_of "$name")
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [[ -n ${jobs// /} ]]; then
    log "cancelling jobs of $SLURM_CONF: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do   # KillWait=10, so this normally takes a few seconds
      [[ -z "$(squeue -h -o %A 2>/dev/null)" ]] && break; sleep 0.25
    done
  fi
done

for name in "${ORDER[@]}"; do
  f="$RUN_DIR/$name.pid"
  [[ -e $f ]] || continue
  if pid=$(owned_pid "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for 30s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  else
    log "$name: recorded pid $(<"$f") is not running; dropping stale pid file"
  fi
  rm -f "$f"
done
log "done"
