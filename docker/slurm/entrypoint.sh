#!/usr/bin/env bash
# Entry point of the Slurm cluster's image (docker/slurm/Dockerfile, docker/slurm/compose.yaml).
# Runs as root, as Slurm's daemons must; jobs run as the user distrain.
#
#   1. The munge key: the first container of the cluster to start makes it, under a lock, in
#      the volume /keys (mode 0400); every container copies it to /etc/munge and starts
#      munged. Nothing secret is in the image.
#   2. The role:
#      slurmctld  MariaDB and slurmdbd (accounting: sacct), then slurmctld in the
#                 foreground. slurm.conf is written here and served to the nodes
#                 (configless: the nodes have no copy of their own).
#      node       slurmd as a dynamic node (slurmd -Z) named after its container
#                 (project_node_1, ...), in the partition `all`; any number of nodes
#                 registers itself, so `--scale node=N` takes any N >= 1.
#      COMMAND    anything else, as given (after munged started).
#
# Settings (the environment, from compose.yaml):
#   DISTRAIN_SLURM_CPUS  CPUs each node offers Slurm (default 8: the recipe's 2 tasks x 4 CPUs
#                        fit on one node; the containers share the host's cores in any case)
#   DISTRAIN_SLURM_CONTROLLER  the controller's host name (default slurmctld)
set -euo pipefail

controller=${DISTRAIN_SLURM_CONTROLLER:-slurmctld}
cpus=${DISTRAIN_SLURM_CPUS:-8}
keys=/keys

log() { echo "slurm-entrypoint: $*"; }

munge_key() {
  (
    flock 9
    if [ ! -s "$keys/munge.key" ]; then
      umask 077
      mungekey --create --keyfile="$keys/.munge.key.new" --bits=1024
      mv -f "$keys/.munge.key.new" "$keys/munge.key"
      log "made a new munge key in $keys"
    fi
  ) 9>"$keys/.munge.lock"
  install -o munge -g munge -m 0400 "$keys/munge.key" /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  setpriv --reuid=munge --regid=munge --init-groups munged
}

shared_folder() {
  install -d -o distrain -g distrain -m 0755 /shared
  # the recipes of this image, so `sbatch launch/slurm.sbatch` works from /shared
  [ -L /shared/launch ] || ln -s /etc/distrain/launch /shared/launch
}

slurm_conf() {
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=distrain
SlurmctldHost=$controller
SlurmctldParameters=enable_configless
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$controller
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
# Dynamic nodes: slurmctld talks to every node itself; at most MaxNodeCount of them
MaxNodeCount=64
TreeWidth=65533
ReturnToService=2
# A dead node is noticed in 20 s; scancel's SIGTERM is followed by SIGKILL 3 s later
SlurmdTimeout=20
KillWait=3
KillOnBadExit=1
MinJobAge=600
Nodeset=dynamic Feature=distrain
PartitionName=all Nodes=dynamic Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

slurmdbd_conf() {
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db
EOF
  chown slurm:slurm /etc/slurm/slurmdbd.conf
  chmod 0600 /etc/slurm/slurmdbd.conf
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$seconds"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  log "$what did not come up in $seconds s" >&2
  return 1
}

accounting() {
  # MariaDB on its socket only; slurmdbd logs in as the OS user slurm (unix_socket), so no
  # password exists anywhere
  install -d -o mysql -g mysql /run/mysqld
  mariadbd --user=mysql --skip-networking >/var/log/slurm/mariadb.log 2>&1 &
  wait_for 60 MariaDB mysqladmin ping
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  slurmdbd_conf
  slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
}

node_name() {
  # the container's name (project_node_1), from Docker's DNS for its address (not
  # /etc/hosts, which names the container by its id)
  local full
  full=$(getent -s dns hosts "$(hostname -i | cut -d' ' -f1)" | awk '{print $2}')
  echo "${full%%.*}"
}

case "${1:-node}" in
  slurmctld)
    munge_key
    shared_folder
    slurm_conf
    accounting
    log "slurmctld on $(hostname)"
    exec slurmctld -D -i
    ;;
  node)
    munge_key
    shared_folder
    name=$(node_name)
    wait_for 180 "slurmctld at $controller:6817" \
      timeout 2 bash -c "exec 3<>/dev/tcp/$controller/6817"
    log "slurmd $name with $cpus CPUs"
    exec slurmd -D -Z -N "$name" --conf-server "$controller" \
      --conf "CPUs=$cpus Feature=distrain"
    ;;
  *)
    munge_key
    exec "$@"
    ;;
esac
