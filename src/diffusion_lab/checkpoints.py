"""Checkpoints of this project: find one (a file or a run folder), check it, load it on a device.

Shared by the entry points that start from a trained model (diffusion-sample, diffusion-eval).
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffusion_lab.lit_module import CHECKPOINT_KEY, DiffusionModule

DEVICE_TYPES = ("cpu", "cuda")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or in a run folder its one ``checkpoints/best-*.ckpt``, else
    ``checkpoints/last.ckpt``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"ckpt_path {str(path)!r} does not exist; give a .ckpt file or a training run folder"
        )
    if path.is_file():
        return path
    folder = path / "checkpoints"
    best = sorted(folder.glob("best-*.ckpt"))
    if len(best) == 1:
        return best[0]
    last = folder / "last.ckpt"
    if last.is_file():
        return last
    raise FileNotFoundError(
        f"no checkpoint in the run folder {str(path)!r}: looked for one {folder}/best-*.ckpt "
        f"(found {len(best)}) and for {last}"
    )


def check_checkpoint(path: Path) -> None:
    """Raise ValueError unless ``path`` is a checkpoint written by this project.

    Loads memory-mapped and weights-only: cheap, and a foreign file cannot run code.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{str(path)!r} is not a diffusion-lab checkpoint: torch.load failed ({error})"
        ) from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise ValueError(
            f"{str(path)!r} is not a diffusion-lab checkpoint: it has no {CHECKPOINT_KEY!r} entry "
            "(write one with diffusion-train)"
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda if available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N")
    visible = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= visible:
        raise ValueError(f"device {name!r} asked for, but {visible} CUDA devices are visible")
    return device


def load_module(path: Path, device: torch.device) -> DiffusionModule:
    """The module of a checkpoint of this project, on ``device``, in eval mode, without grads."""
    check_checkpoint(path)
    module = DiffusionModule.load_from_checkpoint(path, map_location=device, weights_only=True)
    return module.eval().requires_grad_(False)
