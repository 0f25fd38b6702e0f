"""What conf/hydra/launcher/slurm.yaml asks of SLURM: tasks and GPUs per node follow the trainer.

Lightning's SLURMEnvironment runs DDP over the tasks srun starts, and insists on one task per device:
``ntasks-per-node = trainer.devices`` and ``nodes = trainer.num_nodes``. (Registered as resolvers in
diffusion_lab/resolvers.py.)
"""

from __future__ import annotations

from diffusion_lab.utils.checks import InputError, is_int


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
