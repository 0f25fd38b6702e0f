#!/usr/bin/env bash
# A real single-machine SLURM cluster for the tests: munged, slurmctld and two slurmd "nodes"
# (n1, n2) on this host, from Debian's packages, without systemd.
#
#   sudo apt-get install -y slurm-wlm munge      # Debian 12: SLURM 22.05, munge 0.5.15
#   sudo scripts/slurm/start.sh                  # idempotent: starts only what is not running
#   sinfo                                        # debug* up, n1 n2 idle
#   sudo scripts/slurm/stop.sh                   # ends exactly the daemons this script started
#
# In CI (.ci/run), after the pip install and before pytest (elsewhere the SLURM tests skip, saying why):
#   if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
#     apt-get update -q >/dev/null
#     apt-get -o DPkg::Lock::Timeout=600 install -y -q slurm-wlm munge >/dev/null
#     scripts/slurm/start.sh
#     trap scripts/slurm/stop.sh EXIT
#   fi
#
# Writes /etc/slurm/slurm.conf (where sinfo, sbatch and srun look; refuses to replace one it did not
# write), adds "127.0.0.1 n1 n2" to /etc/hosts (node names resolve, as on a cluster) and keeps its state, logs and pid files under $DIFFUSION_LAB_SLURM_STATE (default
# /var/tmp/diffusion-lab-slurm). Ports: slurmctld 6817, slurmd n1 6818, n2 6819 (override with
# SLURMCTLD_PORT, SLURMD_PORT_N1, SLURMD_PORT_N2). Each node has CPUS_PER_NODE CPUs (default 2;
# SlurmdParameters=config_overrides lets two nodes share one machine's cores).
# The settings a container needs (no cgroups, no systemd, no accounting) are explained in
# /work/shared/REFERENCE.md's "A real SLURM cluster on one Debian 12 machine": proctrack/linuxproc,
# task/none, ReturnToService=2, JobRequeue=1, AuthInfo=cred_expire=10 (a requeued job otherwise
# waits 120 s in BeginTime), KillWait=5, MinJobAge=600.
set -euo pipefail

STATE=${DIFFUSION_LAB_SLURM_STATE:-/var/tmp/diffusion-lab-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by diffusion-lab scripts/slurm/start.sh"
HOST=$(hostname -s)
CTLD_PORT=${SLURMCTLD_PORT:-6817}
N1_PORT=${SLURMD_PORT_N1:-6818}
N2_PORT=${SLURMD_PORT_N2:-6819}
CPUS=${CPUS_PER_NODE:-2}

die() { echo "scripts/slurm/start.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (munged runs as munge, slurmd as root)"
for tool in munged slurmctld slurmd sinfo scontrol; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y slurm-wlm munge"
done

# running <pid file> <command name>: the pid in the file is alive and is that program
running() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(cat "$1")
  [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$2" ]]
}

# remember <name>: stop.sh ends only what is listed in $STATE/started
remember() { grep -qx "$1" "$STATE/started" 2>/dev/null || echo "$1" >>"$STATE/started"; }

mkdir -p "$STATE"/{ctld,log} "$STATE"/spool/{n1,n2}
t0=$(date +%s%N)

# --- munge --------------------------------------------------------------------------------
MUNGE_PID=/run/munge/munged.pid
if ! running "$MUNGE_PID" munged; then
  [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile=/etc/munge/munge.key; }
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  runuser -u munge -- munged   # refuses to run as root; writes $MUNGE_PID itself
  remember munged
fi

# --- slurm.conf ---------------------------------------------------------------------------
if [[ -e $CONF ]] && ! head -1 "$CONF" | grep -qF "$MARK"; then
  die "$CONF exists and was not written by this script; move it away first"
fi
mkdir -p /etc/slurm
cat >"$CONF.new" <<CONFIG
$MARK
ClusterName=diffusionlab
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
KillWait=5
MinJobAge=600
NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$N1_PORT CPUs=$CPUS State=UNKNOWN
NodeName=n2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$N2_PORT CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONFIG
if cmp -s "$CONF.new" "$CONF"; then rm "$CONF.new"; else mv "$CONF.new" "$CONF"; fi

# --- the node names resolve, as on a real cluster (Lightning's DDP finds its main node by the
# first name in SLURM_NODELIST); a line in /etc/hosts, which stop.sh removes again
HOSTS_LINE="127.0.0.1 n1 n2 $MARK"
if ! grep -qxF "$HOSTS_LINE" /etc/hosts; then
  for node in n1 n2; do
    getent hosts "$node" >/dev/null && die "the node name $node already means a host here"
  done
  echo "$HOSTS_LINE" >>/etc/hosts
fi

# --- slurmctld and the two slurmd ---------------------------------------------------------
if ! running "$STATE/slurmctld.pid" slurmctld; then
  slurmctld -c   # -c: a cold start (no saved jobs; job ids restart at 1)
  remember slurmctld
fi
for node in n1 n2; do
  if ! running "$STATE/slurmd-$node.pid" slurmd; then
    slurmd -N "$node"
    remember "slurmd-$node"
  fi
done

# --- up: the controller answers and both nodes are idle -----------------------------------
for _ in $(seq 100); do
  if scontrol ping 2>/dev/null | grep -q UP &&
    [[ $(sinfo -h -N -t idle,mixed,allocated -o %N 2>/dev/null | sort -u | wc -l) == 2 ]]; then
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    printf 'SLURM cluster up in %d.%03d s: ' $((ms / 1000)) $((ms % 1000))
    sinfo -h -o '%P %a %D %t %N' | tr '\n' ' '
    echo
    exit 0
  fi
  sleep 0.1
done
die "the cluster did not come up in 10 s; see $STATE/log/"
