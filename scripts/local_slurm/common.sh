# scripts/local_slurm/common.sh - sourced by start.sh and stop.sh: where each local cluster keeps its files and
# which names its daemons are recorded under in $RUN_DIR (only daemons started by start.sh are recorded).
#
# LOCAL_SLURM_NODES=1 (default): cluster "localcluster", one node named after this host, /etc/slurm/slurm.conf,
#   ports 6817 (slurmctld) and 6818 (slurmd).
# LOCAL_SLURM_NODES=N >= 2: cluster "localnodes" beside it, nodes n1..nN (several slurmd on this host, Debian
#   builds slurmd with MULTIPLE_SLURMD), /etc/slurm/localnodes/slurm.conf (use it with SLURM_CONF=...),
#   ports 6827 (slurmctld) and 6828.. (one slurmd per node). munge, MariaDB and slurmdbd are shared.

RUN_DIR=/run/local-slurm          # "owned" pid files: daemons started by start.sh
LOG_DIR=/var/log/slurm

# cluster_layout NODES: set CLUSTER, TAG (suffix of its file and daemon names), CONF, CTLD_PORT, SLURMD_PORT
cluster_layout() {
  [[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "[local-slurm] ERROR: LOCAL_SLURM_NODES must be a positive integer" >&2; exit 2; }
  if (($1 == 1)); then
    CLUSTER=localcluster TAG="" CONF=/etc/slurm/slurm.conf CTLD_PORT=6817 SLURMD_PORT=6818
  else
    CLUSTER=localnodes TAG=-localnodes CONF=/etc/slurm/localnodes/slurm.conf CTLD_PORT=6827 SLURMD_PORT=6828
  fi
}

# conf_of NAME: the slurm.conf of the cluster whose slurmctld is recorded as NAME (slurmctld or slurmctld-TAG)
conf_of() {
  if [[ $1 == slurmctld ]]; then echo /etc/slurm/slurm.conf; else echo "/etc/slurm/${1#slurmctld-}/slurm.conf"; fi
}

# exe_of NAME: the executable of a recorded daemon name (slurmd-n1 -> /usr/sbin/slurmd)
exe_of() {
  case ${1%%-*} in
    slurmd | slurmctld | slurmdbd | munged) echo "/usr/sbin/${1%%-*}" ;;
    mariadb) echo /usr/sbin/mariadbd ;;
    *) return 1 ;;
  esac
}
