"""The real single-machine SLURM cluster of scripts/slurm/start.sh, for the tests that need one.

The fixture ``slurm_cluster`` (import ``slurm_cluster_fixture`` into a test module) checks that
the cluster answers (``scontrol ping``) with both nodes up (``sinfo``); otherwise the test is
skipped with the reason: no SLURM installed (not Debian, or no root to install it), or the
cluster not started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
START_SCRIPT = REPOSITORY / "scripts" / "slurm" / "start.sh"
NODES = ("n1", "n2")
PARTITION = "debug"


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def unavailable_reason() -> str | None:
    """Why the cluster cannot be used here, or None when it is up with both nodes."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        if not Path("/etc/debian_version").is_file():
            return "no SLURM: not a Debian machine (scripts/slurm/start.sh uses Debian's slurm-wlm)"
        if os.geteuid() != 0:
            return "no SLURM: installing slurm-wlm and munge and starting the cluster need root"
        return f"no SLURM: apt-get install -y slurm-wlm munge, then {START_SCRIPT}"
    ping = _run("scontrol", "ping")
    if "UP" not in ping.stdout:
        said = ping.stdout.strip() or ping.stderr.strip()
        return f"the SLURM cluster is not started (scontrol ping: {said}); run {START_SCRIPT}"
    nodes = [
        line.split()
        for line in _run("sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %t").stdout.splitlines()
    ]
    up = {node[0] for node in nodes if node[1:] in (["idle"], ["mix"], ["alloc"])}
    if not set(NODES) <= up:
        return f"the SLURM cluster's nodes {', '.join(NODES)} are not all up (sinfo: {nodes})"
    return None


@pytest.fixture(name="slurm_cluster")
def slurm_cluster_fixture() -> str:
    """The partition to submit to; skips the test when the cluster is not there."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return PARTITION


def job_restarts(job_id: str) -> int:
    """How often SLURM requeued a job (scontrol show job's Restarts; kept MinJobAge=600 s)."""
    shown = scontrol_job(job_id)
    for field in shown.split():
        if field.startswith("Restarts="):
            return int(field.split("=", 1)[1])
    raise AssertionError(f"scontrol show job {job_id} has no Restarts field:\n{shown}")


def scontrol_job(job_id: str) -> str:
    """``scontrol show job``'s text for a job (finished jobs stay MinJobAge=600 s)."""
    return _run("scontrol", "show", "job", job_id).stdout
