"""Resolvers for conf/hydra/launcher/slurm.yaml: SLURM's tasks and GPUs per node follow the trainer.

Lightning's SLURMEnvironment runs DDP over the tasks srun starts, and insists on one task per device:
``ntasks-per-node = trainer.devices`` and ``nodes = trainer.num_nodes``. Registered on import
(diffusion_lab.train imports this package), before Hydra resolves the launcher's config.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def tasks_per_node(devices: object) -> int:
    """One SLURM task per device; ``trainer.devices`` must say how many (not auto, not a list)."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(
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


def register_resolvers() -> None:
    for name, resolver in [
        ("slurm_tasks_per_node", tasks_per_node),
        ("slurm_gpus_per_node", gpus_per_node),
        ("sync_batchnorm", sync_batchnorm),
    ]:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()
