"""SLURM's requeue, as Lightning's SLURMEnvironment(auto_requeue=True) does it, for the Preemption
callback: the hpc checkpoint's path (Lightning restores the newest ``hpc_ckpt_N.ckpt`` of
``default_root_dir`` by itself when it runs under SLURM) and ``scontrol requeue <job>``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import lightning as L

from diffusion_lab.callbacks._lightning import hpc_save_path

log = logging.getLogger(__name__)

# SLURM ends a requeued job (SIGTERM, then SIGKILL after KillWait): waiting longer means it did not
REQUEUE_WAIT_S = 300.0


def hpc_checkpoint_path(trainer: L.Trainer) -> Path:
    """``<default_root_dir>/hpc_ckpt_<N+1>.ckpt``: the name Lightning's requeue handler saves to."""
    return hpc_save_path(trainer)


def slurm_job_id() -> str:
    """This job's id as ``scontrol requeue`` takes it (``<array job>_<task>`` in an array)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def requeue_and_wait(is_global_zero: bool, wait_s: float = REQUEUE_WAIT_S) -> None:
    """Rank zero requeues this job; every rank then waits for SLURM to end it, so that the job
    never exits by itself (submitit would record the attempt as failed). Returns only if the
    requeue failed or SLURM did not end the job within ``wait_s``."""
    if is_global_zero:
        job = slurm_job_id()
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode != 0:
            log.warning("scontrol requeue %s failed: %s", job, result.stderr.strip())
            return
        log.info("requeued SLURM job %s; waiting for SLURM to end this attempt", job)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
    log.warning("SLURM did not end the requeued job within %.0f s: exiting", wait_s)
