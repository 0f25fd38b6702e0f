"""What the launchers ask for: SLURM's tasks and GPUs per node follow the trainer
(conf/hydra/launcher/slurm.yaml); the parallel launcher's jobs at once follow the visible devices
(conf/hydra/launcher/parallel.yaml, sweeps/parallel.py).

Lightning's SLURMEnvironment runs DDP over the tasks srun starts, and insists on one task per device:
``ntasks-per-node = trainer.devices`` and ``nodes = trainer.num_nodes``. (Registered as resolvers in
diffusion_lab/resolvers.py.)
"""

from __future__ import annotations

import os

from diffusion_lab.utils.checks import InputError, is_int

VISIBLE_GPUS_ENV = (
    "DIFFUSION_LAB_SWEEP_GPUS"  # the GPUs a parallel sweep hands out (sweeps/parallel.py)
)


def tasks_per_node(devices: object) -> int:
    """One SLURM task per device; ``trainer.devices`` must say how many (not auto, not a list)."""
    if not is_int(devices) or devices < 1:
        raise InputError(
            f"hydra/launcher=slurm starts one task per device and needs trainer.devices as a "
            f"positive number of devices per node, got {devices!r}; e.g. trainer=ddp "
            "trainer.devices=4 (and trainer.num_nodes=2 for two nodes)"
        )
    return devices


def gpus_per_node(accelerator: str, devices: object) -> int | None:
    """GPUs to ask SLURM for on each node: one per task, none for CPU training."""
    return None if accelerator == "cpu" else tasks_per_node(devices)


def sync_batchnorm(accelerator: str) -> bool:
    """conf/trainer/ddp.yaml's sync_batchnorm: on GPUs only (torch's SyncBatchNorm refuses CPU
    modules, so DDP on CPU nodes, e.g. ``trainer=ddp trainer.accelerator=cpu``, keeps per-rank
    batch statistics)."""
    if accelerator == "auto":
        import torch

        return torch.cuda.is_available()
    return accelerator in ("gpu", "cuda")


def available_cores() -> int:
    """The cores this process may run on (its affinity), which may be fewer than the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs the sweep's workers may use: the sweep process's list, else CUDA_VISIBLE_DEVICES,
    else every GPU torch sees (asking torch starts CUDA in this process: the sweep's, not a job's)."""
    for name in (VISIBLE_GPUS_ENV, "CUDA_VISIBLE_DEVICES"):
        if name in os.environ:
            return [gpu for gpu in os.environ[name].split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def device_count() -> int:
    """The default number of jobs side by side: one per visible GPU; on a machine without GPUs
    two (each job half the cores; more jobs than that mostly wait on memory bandwidth)."""
    gpus = visible_gpus()
    return len(gpus) if gpus else min(2, available_cores())


def is_multirun(mode: object) -> bool:
    """``${hydra_multirun:${hydra:mode}}``: True in a multirun's job (mode RunMode.MULTIRUN)."""
    return str(mode).rsplit(".", 1)[-1] == "MULTIRUN"
