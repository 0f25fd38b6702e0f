#!/usr/bin/env bash
# Ends exactly the daemons scripts/slurm/start.sh started (listed in $STATE/started, found by
# their pid files), nothing else; a munged that was running before start.sh is left alone. The
# /etc/hosts line for the node names goes too; /etc/slurm/slurm.conf stays (start.sh rewrites it).
set -euo pipefail

STATE=${DIFFUSION_LAB_SLURM_STATE:-/var/tmp/diffusion-lab-slurm}
[[ -s $STATE/started ]] || { echo "scripts/slurm/stop.sh: nothing started by start.sh"; exit 0; }

pid_file() {
  case $1 in
    munged) echo /run/munge/munged.pid ;;
    slurmctld) echo "$STATE/slurmctld.pid" ;;
    slurmd-*) echo "$STATE/$1.pid" ;;
  esac
}

# the nodes first, the controller, then munge (which they authenticate with)
for name in slurmd-n1 slurmd-n2 slurmctld munged; do
  grep -qx "$name" "$STATE/started" || continue
  file=$(pid_file "$name")
  pid=$(cat "$file" 2>/dev/null || true)
  if [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "${name%%-*}" ]]; then
    kill -TERM "$pid"
    for _ in $(seq 100); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    [[ -e /proc/$pid ]] && kill -KILL "$pid"
    echo "stopped $name (pid $pid)"
  fi
  sed -i "/^$name\$/d" "$STATE/started"
done

# the node names' /etc/hosts line (rewritten in place: /etc/hosts may be a bind mount)
if grep -q "^127.0.0.1 n1 n2 # written by diffusion-lab" /etc/hosts; then
  hosts=$(grep -v "^127.0.0.1 n1 n2 # written by diffusion-lab" /etc/hosts)
  printf '%s\n' "$hosts" >/etc/hosts
fi
