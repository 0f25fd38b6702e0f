"""Checkpoints of this project: find one, check it, load it on a device.

Shared by every entry point that takes a checkpoint (diffusion-train ``ckpt_path``/``resume``,
diffusion-sample, diffusion-eval). A checkpoint is named by

- a ``.ckpt`` file (names without ``=``, e.g. ``best-epoch016-val_loss0.0497.ckpt``, parse as a
  Hydra override unquoted),
- a training run folder: its one ``checkpoints/best-*.ckpt``, else ``checkpoints/last.ckpt``
  (``prefer="last"``: the other way round, as resuming wants),
- an export folder (diffusion-export: config.json + model.safetensors), loaded as it is,
- ``last`` or ``best``: that checkpoint of the newest run under ``outputs/train/runs``
  (relative to the working directory) that has one; the log names the run it picked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from diffusion_lab.lit_module import CHECKPOINT_KEY, DiffusionModule
from diffusion_lab.models.precision import normalize_precision
from diffusion_lab.runs.layout import (
    BEST_PATTERN,
    CHECKPOINTS_DIR,
    LAST_FILE,
    TRAIN_RUNS_DIR,
    newest_checkpoint,
)
from diffusion_lab.runs.pretrained import is_export, load_pretrained
from diffusion_lab.utils.checks import InputError, MissingInputError
from diffusion_lab.utils.io import atomic_write

log = logging.getLogger(__name__)

DEVICE_TYPES = ("cpu", "cuda")
KEYWORDS = ("last", "best")


def _in_run_folder(run: Path, prefer: str) -> Path | None:
    """The run folder's checkpoint of kind ``prefer`` ("best" or "last"), else the other; None
    if it has neither (or several best-*.ckpt and no last.ckpt)."""
    folder = run / CHECKPOINTS_DIR
    best = sorted(folder.glob(BEST_PATTERN))
    last = folder / LAST_FILE
    found = {"best": best[0] if len(best) == 1 else None, "last": last if last.is_file() else None}
    other = "last" if prefer == "best" else "best"
    return found[prefer] or found[other]


def resolve_checkpoint(
    path: str | Path, prefer: str = "best", runs_dir: Path = TRAIN_RUNS_DIR
) -> Path:
    """The checkpoint file that ``path`` names: a file as given; in a run folder its checkpoint
    of kind ``prefer`` (``best`` or ``last``), else the other; ``last``/``best``: the newest
    run's. Raises FileNotFoundError naming what was looked for."""
    if prefer not in KEYWORDS:
        raise ValueError(f"prefer must be one of {KEYWORDS}, got {prefer!r}")
    if str(path) in KEYWORDS and not Path(path).exists():
        try:
            checkpoint = newest_checkpoint(runs_dir, kind=str(path))
        except FileNotFoundError as error:
            raise MissingInputError(f"ckpt_path={path}: {error}") from None
        log.info("ckpt_path=%s: picked %s (the newest run's)", path, checkpoint)
        return checkpoint
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingInputError(
            f"ckpt_path {str(path)!r} does not exist; accepted: a .ckpt file, a training run "
            "folder, an export folder, last or best (the newest run's)"
        )
    if path.is_file() or is_export(path):
        return path
    checkpoint = _in_run_folder(path, prefer)
    if checkpoint is None:
        folder = path / CHECKPOINTS_DIR
        raise MissingInputError(
            f"no checkpoint in the run folder {str(path)!r}: looked for one {folder}/{BEST_PATTERN} "
            f"(found {len(list(folder.glob(BEST_PATTERN)))}) and for {folder / LAST_FILE}"
        )
    return checkpoint


def check_checkpoint(path: Path) -> None:
    """Raise ValueError unless ``path`` is a checkpoint written by this project.

    Loads memory-mapped and weights-only: cheap, and a foreign file cannot run code.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(
            f"{str(path)!r} is not a diffusion-lab checkpoint: torch.load failed ({reason}); the "
            "file is cut short or not a checkpoint; give a .ckpt written by diffusion-train"
        ) from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise InputError(
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
        raise InputError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N")
    visible = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= visible:
        raise InputError(f"device {name!r} asked for, but {visible} CUDA devices are visible")
    return device


def load_module(path: Path, device: torch.device, precision: str | None = None) -> DiffusionModule:
    """The module of a checkpoint (or export folder) of this project, on ``device``, in eval
    mode, without grads, sampling in ``precision`` (``32-true``, ``bf16-mixed``, ...; None: the
    precision of the run that wrote the checkpoint, fp32 for an export folder)."""
    if precision is not None:
        normalize_precision(precision)  # refused before the (slow) load
    if is_export(path):
        module = load_pretrained(path, device)
    else:
        check_checkpoint(path)
        module = DiffusionModule.load_from_checkpoint(path, map_location=device, weights_only=True)
        module = module.eval().requires_grad_(False)
    module.sampling_precision = precision
    return module


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but every file appears whole or not at all.

    The checkpoint is written to a temporary file beside the target, flushed to disk (fsync) and
    moved into place with ``os.replace`` (atomic on POSIX and Windows). A kill or an error during
    the save leaves the previous checkpoint of that name intact; the temporary file is removed
    when the save fails with an exception (after SIGKILL a ``.<name>-*`` file may remain).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_write(path) as stream:
            torch.save(checkpoint, stream)
            stream.flush()
            os.fsync(stream.fileno())
