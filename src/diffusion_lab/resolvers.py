"""Every OmegaConf resolver the configs use, registered once, from the package's ``__init__``.

==========================  =====================================================================
``resume_run_dir``          conf/hydra/default.yaml ``hydra.run.dir``: a resumed run's own folder
``resume_output_subdir``    ``hydra.output_subdir``: ``.hydra``, or ``.hydra/resume-<datetime>``
``run_name``                conf/logger/wandb.yaml ``name``: the run's overrides, or "default"
``sweep_group``             ``group``: one W&B group per multirun, none for a single run
``wandb_run_id``            ``id``: one W&B run per run folder, kept in ``<run>/wandb_run_id``
``slurm_tasks_per_node``    conf/hydra/launcher/slurm.yaml: one SLURM task per device
``slurm_gpus_per_node``     GPUs per node: one per task, none on CPU
``sync_batchnorm``          conf/trainer/ddp.yaml: SyncBatchNorm on GPUs only
``sweep_device_count``      conf/hydra/launcher/parallel.yaml: jobs at once, one per device
``hydra_multirun``          conf/callbacks/default.yaml: whether this job is one of a multirun
``auto_precision``          ``trainer.precision``: bf16-mixed where the device has native bf16, else
                            32-true (conf/perf/fast.yaml; utils/native_bf16.py)
``compile_pays``            conf/perf/fast.yaml ``module.compile_net``: on CUDA, not on the CPU
==========================  =====================================================================

Only light modules are imported here (no Lightning, Hydra or W&B): ``import diffusion_lab`` stays
cheap, and ``diffusion_lab.diffusion`` usable from a notebook alone.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import OmegaConf

from diffusion_lab.runs.layout import HYDRA_DIR, WANDB_ID_FILE, newest_checkpoint
from diffusion_lab.sweeps.launchers import (
    device_count,
    gpus_per_node,
    is_multirun,
    sync_batchnorm,
    tasks_per_node,
)
from diffusion_lab.utils.native_bf16 import auto_precision, compile_pays


def resume_run_dir(resume: str | None, fresh: str) -> str:
    """The folder ``resume`` names (a run folder, or ``last``: the newest run with a last.ckpt),
    else ``fresh``. A name that is no folder also gives ``fresh``: diffusion-train then refuses
    it (runs/resume.py) before writing anything there but Hydra's own files."""
    if resume is None:
        return fresh
    if str(resume) == "last":
        try:
            return str(newest_checkpoint(kind="last").parent.parent)
        except FileNotFoundError:
            return fresh
    path = Path(str(resume)).expanduser()
    return str(path) if path.is_dir() else fresh


def resume_output_subdir(resume: str | None, stamp: str) -> str:
    """``.hydra``; when resuming ``.hydra/resume-<stamp>``, so that the run's own composed config
    and overrides stay as they were."""
    return HYDRA_DIR if resume is None else f"{HYDRA_DIR}/resume-{stamp}"


def run_name(override_dirname: str | None) -> str:
    """A run's display name: its command-line overrides (``data=sprites,scheduler=cosine``)."""
    return override_dirname or "default"


def sweep_group(mode: object, job_name: str, sweep_dir: str | Path) -> str | None:
    """The group one multirun's jobs share, e.g. ``train-2026-01-01_12-00-00-000000``; None
    outside a multirun (``mode`` is Hydra's RunMode or its name)."""
    if str(getattr(mode, "name", mode)) != "MULTIRUN":
        return None
    return f"{job_name}-{Path(sweep_dir).name}"


def wandb_run_id(run_dir: str | Path) -> str:
    """The W&B run id of a run folder: read from ``<run_dir>/wandb_run_id``, else a new one (8
    characters, as W&B makes them) written there, so a resumed run logs into the same W&B run."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


RESOLVERS = {
    "resume_run_dir": resume_run_dir,
    "resume_output_subdir": resume_output_subdir,
    "run_name": run_name,
    "sweep_group": sweep_group,
    "wandb_run_id": wandb_run_id,
    "slurm_tasks_per_node": tasks_per_node,
    "slurm_gpus_per_node": gpus_per_node,
    "sync_batchnorm": sync_batchnorm,
    "sweep_device_count": device_count,
    "hydra_multirun": is_multirun,
    "auto_precision": auto_precision,
    "compile_pays": compile_pays,
}


def register_resolvers() -> None:
    """Register every resolver above (again: replacing is harmless, the functions are the same)."""
    for name, resolver in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
