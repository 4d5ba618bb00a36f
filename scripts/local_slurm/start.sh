#!/usr/bin/env bash
# scripts/local_slurm/start.sh - install (apt, if missing), configure and start a REAL
# SLURM cluster on this machine (munge, MariaDB + slurmdbd so `sacct` answers,
# slurmctld, slurmd), without systemd and without cgroups.  Used by tests/slurm and by the
# benchmark.  Idempotent: daemons already running are left alone; only daemons started here
# are recorded in $RUN_DIR/<name>.pid, which is all that stop.sh stops.
# Debian 12 (slurm-wlm 22.05), run as root.
#
# Knobs (environment):
#   LOCAL_SLURM_NODES=1    1 (default): the single-node cluster "localcluster" (/etc/slurm/slurm.conf).
#                          N >= 2: the cluster "localnodes" of nodes n1..nN, one slurmd each on this host,
#                          beside the single-node one (its own slurmctld and ports); point SLURM commands at
#                          it with SLURM_CONF=/etc/slurm/localnodes/slurm.conf (scripts/local_slurm/common.sh)
#   LOCAL_SLURM_ACCOUNTING=slurmdbd|none  slurmdbd (default): MariaDB + slurmdbd, so `sacct` works
#                                         (submitit polls sacct for job state).  none: no DB; sacct
#                                         fails and submitit only sees results via its result pickles.
#   LOCAL_SLURM_CPUS=N     CPUs to advertise (default: what `slurmd -C` detects; more than that
#                          oversubscribes the cores via SlurmdParameters=config_overrides)
#   LOCAL_SLURM_WAIT_S=60  how long to wait for the node to be idle
set -euo pipefail

ACCOUNTING="${LOCAL_SLURM_ACCOUNTING:-slurmdbd}"
WAIT_S="${LOCAL_SLURM_WAIT_S:-60}"
NODES="${LOCAL_SLURM_NODES:-1}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cluster_layout "$NODES"           # CLUSTER, TAG, CONF, CTLD_PORT, SLURMD_PORT
export SLURM_CONF=$CONF           # every SLURM command below talks to this cluster
PARTITION=debug
DBD_CONF=/etc/slurm/slurmdbd.conf
DB_PASS=localslurm                # local-only MariaDB user (socket only, no TCP)

log() { echo "[local-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root"
[[ $ACCOUNTING == slurmdbd || $ACCOUNTING == none ]] || die "LOCAL_SLURM_ACCOUNTING must be slurmdbd or none"

# ---------------------------------------------------------------- 1. packages
pkgs=(slurmctld slurmd slurm-client munge)
[[ $ACCOUNTING == slurmdbd ]] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } ||
    die "apt-get install ${missing[*]} failed"
fi

# ---------------------------------------------------------------- helpers
# alive PIDFILE EXE: the pid in PIDFILE is a live process running EXE
alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1"); [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$2")" ]]
}
# start_daemon NAME PIDFILE EXE CMD...: CMD must daemonize and write PIDFILE
start_daemon() {
  local name=$1 pidfile=$2 exe=$3; shift 3
  if alive "$pidfile" "$exe"; then
    log "$name already running (pid $(<"$pidfile"))"; return 0
  fi
  rm -f "$pidfile" "$RUN_DIR/$name.pid"
  "$@" || die "$name failed to start: $*"
  local i
  for ((i = 0; i < 300; i++)); do alive "$pidfile" "$exe" && break; sleep 0.1; done
  alive "$pidfile" "$exe" || die "$name did not come up (see $LOG_DIR, /var/log/munge)"
  cp "$pidfile" "$RUN_DIR/$name.pid"
  log "started $name (pid $(<"$pidfile"))"
}
wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local t=$1 what=$2 i; shift 2
  for ((i = 0; i < t * 4; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  tail -n 5 "$LOG_DIR"/*.log >&2 2>/dev/null || true
  die "timed out after ${t}s waiting for $what"
}

# ---------------------------------------------------------------- the nodes
# NAMES: the node names; PER_NODE: the suffix that gives each slurmd of this host its own files (slurm.conf's %n)
if ((NODES == 1)); then
  NAMES=("$(hostname -s)"); PER_NODE=""
else
  NAMES=(); for ((i = 1; i <= NODES; i++)); do NAMES+=("n$i"); done
  PER_NODE=-%n
  # a job learns its nodes by name (SLURM_JOB_NODELIST) and its ranks meet at the first (MASTER_ADDR): the names
  # of these nodes must resolve, to this host
  unresolved=()
  for n in "${NAMES[@]}"; do getent hosts "$n" >/dev/null || unresolved+=("$n"); done
  if ((${#unresolved[@]})); then
    [[ -z $(tail -c1 /etc/hosts 2>/dev/null) ]] || echo >>/etc/hosts   # a last line without its newline
    echo "127.0.0.1 ${unresolved[*]}  # nodes of the local SLURM cluster $CLUSTER (midsweep scripts/local_slurm)" \
      >>/etc/hosts || die "cannot add ${unresolved[*]} to /etc/hosts"
    log "added ${unresolved[*]} to /etc/hosts (127.0.0.1)"
  fi
fi
SLURMD_SPOOL=/var/spool/slurmd$TAG${PER_NODE:+/%n}

mkdir -p "$RUN_DIR" /run/slurm "$LOG_DIR" "$(dirname "$CONF")" /var/spool/slurmctld$TAG \
         /run/munge /var/log/munge /var/lib/munge
for n in "${NAMES[@]}"; do mkdir -p "${SLURMD_SPOOL/\%n/$n}"; done
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge

# ---------------------------------------------------------------- 2. config
read -r -a HW <<<"$(slurmd -C | head -1)"   # NodeName=.. CPUs=.. Boards=.. ... RealMemory=..
declare -A hw=()
for kv in "${HW[@]}"; do hw[${kv%%=*}]=${kv#*=}; done
CPUS="${LOCAL_SLURM_CPUS:-${hw[CPUs]}}"
((CPUS > 0)) || die "LOCAL_SLURM_CPUS must be a positive integer"
if ((CPUS > hw[CPUs])); then
  NODE_HW="CPUs=$CPUS"; OVERRIDES="SlurmdParameters=config_overrides"
else
  NODE_HW="CPUs=${hw[CPUs]} Boards=${hw[Boards]} SocketsPerBoard=${hw[SocketsPerBoard]} CoresPerSocket=${hw[CoresPerSocket]} ThreadsPerCore=${hw[ThreadsPerCore]}"
  OVERRIDES="#SlurmdParameters=config_overrides"
fi
if [[ $ACCOUNTING == slurmdbd ]]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

if ((NODES == 1)); then
  NODE_LINES="NodeName=${NAMES[0]} NodeAddr=127.0.0.1 $NODE_HW RealMemory=${hw[RealMemory]} State=UNKNOWN"
  ABOUT="single-node local cluster"
else
  NODE_LINES=$(for ((i = 0; i < NODES; i++)); do
    echo "NodeName=${NAMES[i]} NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + i)) $NODE_HW RealMemory=${hw[RealMemory]} State=UNKNOWN"
  done)
  ABOUT="$NODES-node local cluster (one slurmd per node on this host)"
fi
new_conf=$(cat <<EOF
# generated by midsweep scripts/local_slurm/start.sh - $ABOUT, no systemd, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# requeued jobs wait cred_expire seconds before they may start again (default 120)
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCT
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp$TAG.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
$OVERRIDES
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
# real preemption: a job in partition "high" requeues jobs in "$PARTITION" and they get
# their --signal (submitit: USR2) at preemption time
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
JobRequeue=1
# the 1,000-point benchmark submits one array of 1,000 tasks
MaxArraySize=4001
MaxJobCount=20000
ReturnToService=2
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=/var/spool/slurmctld$TAG
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=/run/slurm/slurmctld$TAG.pid
SlurmdPidFile=/run/slurm/slurmd$PER_NODE.pid
SlurmctldLogFile=$LOG_DIR/slurmctld$TAG.log
SlurmdLogFile=$LOG_DIR/slurmd$PER_NODE.log
SlurmctldDebug=info
SlurmdDebug=info
MinJobAge=300
KillWait=10
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
$NODE_LINES
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
)
conf_changed=0
if [[ ! -f $CONF ]] || [[ "$(<"$CONF")" != "$new_conf" ]]; then
  [[ -f $CONF ]] && cp "$CONF" "$CONF.bak.$(date +%s)"
  printf '%s\n' "$new_conf" >"$CONF"
  conf_changed=1
  log "wrote $CONF"
fi

# ---------------------------------------------------------------- 3. munge
if [[ ! -s /etc/munge/munge.key ]]; then
  mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
start_daemon munged /run/munge/munged.pid /usr/sbin/munged runuser -u munge -- /usr/sbin/munged
wait_for 10 munge bash -c 'munge -n | unmunge'

# ---------------------------------------------------------------- 4. accounting (MariaDB + slurmdbd)
if [[ $ACCOUNTING == slurmdbd ]]; then
  mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
  if [[ ! -d /var/lib/mysql/mysql ]]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  start_daemon mariadb /run/mysqld/mysqld.pid /usr/sbin/mariadbd bash -c \
    'setsid /usr/sbin/mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
       --pid-file=/run/mysqld/mysqld.pid --innodb-lock-wait-timeout=900 \
       </dev/null >>/var/log/slurm/mariadb.log 2>&1 &'
  wait_for 60 MariaDB mariadb-admin --socket=/run/mysqld/mysqld.sock ping
  mariadb --socket=/run/mysqld/mysqld.sock -uroot -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  new_dbd=$(cat <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
)
  if [[ ! -f $DBD_CONF ]] || [[ "$(<"$DBD_CONF")" != "$new_dbd" ]]; then
    printf '%s\n' "$new_dbd" >"$DBD_CONF"
  fi
  chmod 0600 "$DBD_CONF"
  start_daemon slurmdbd /run/slurm/slurmdbd.pid /usr/sbin/slurmdbd /usr/sbin/slurmdbd
  wait_for 60 slurmdbd sacctmgr -n -P list cluster format=cluster
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    log "registered cluster $CLUSTER in slurmdbd"
  fi
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
ctld_was_up=0
alive /run/slurm/slurmctld$TAG.pid /usr/sbin/slurmctld && ctld_was_up=1
start_daemon slurmctld$TAG /run/slurm/slurmctld$TAG.pid /usr/sbin/slurmctld /usr/sbin/slurmctld -f "$CONF"
wait_for 30 slurmctld scontrol ping
if ((ctld_was_up && conf_changed)); then
  log "config changed while slurmctld was running: scontrol reconfigure (some changes need stop+start)"
  scontrol reconfigure || true
fi
if ((NODES == 1)); then
  start_daemon slurmd /run/slurm/slurmd.pid /usr/sbin/slurmd /usr/sbin/slurmd -f "$CONF"
else
  for n in "${NAMES[@]}"; do
    start_daemon "slurmd-$n" "/run/slurm/slurmd-$n.pid" /usr/sbin/slurmd /usr/sbin/slurmd -f "$CONF" -N "$n"
  done
fi

# ---------------------------------------------------------------- 6. wait for the nodes
for NODE in "${NAMES[@]}"; do
  state=""; nudged=0
  for ((i = 0; i < WAIT_S * 4; i++)); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)
    case $state in
      idle | mixed | allocated | completing) break ;;
      down | drained | draining | drain*)
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
      *)   # e.g. "unknown" when slurmd was already up and has not re-registered yet
        if ((i == 20 && !nudged)); then scontrol reconfigure >/dev/null 2>&1 || true; nudged=1; fi ;;
    esac
    sleep 0.25
  done
  case $state in
    idle | mixed | allocated | completing) ;;
    *) sinfo -N -l >&2 || true; die "node $NODE not ready after ${WAIT_S}s (state: ${state:-?}); see $LOG_DIR" ;;
  esac
done
log "cluster $CLUSTER up ($CONF): node(s) ${NAMES[*]} $state; partitions: $(sinfo -h -o '%P' | tr '\n' ' ')"
