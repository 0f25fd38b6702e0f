"""The 16x16 pixel-art sprites of DeepLearning.AI's "How Diffusion Models Work" course."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusion_lab.data.source import ImageSource, LoadedImages
from diffusion_lab.utils.checks import InputError, MissingInputError

SPRITE_CLASS_NAMES = ["hero", "non-hero", "food", "spell", "side-facing"]


class SpritesSource(ImageSource):
    """The course's .npy pair under `root`.

    Files (as distributed with the course notebooks):
        `images_file`: (N, 16, 16, 3) uint8, NHWC, RGB 0..255 (the full set has N = 89,400).
        `labels_file`: (N, 5) float64, one one-hot row per image, columns in the order of
            `SPRITE_CLASS_NAMES`: hero, non-hero, food, spell (spells & weapons), side-facing.

    With `mmap`, both arrays are memory-mapped (`np.load(mmap_mode="r")`), so shapes and dtypes
    are checked before any pixel is read, and the pixels are read once, straight into the
    NCHW tensor that `load()` returns.
    """

    name = "sprites"

    def __init__(
        self,
        root: str | Path,
        images_file: str = "sprites_1788_16x16.npy",
        labels_file: str = "sprite_labels_nc_1788_16x16.npy",
        mmap: bool = True,
    ) -> None:
        self.root = Path(root)
        self.images_file = images_file
        self.labels_file = labels_file
        self.mmap = mmap

    def load(self) -> LoadedImages:
        images_path = self.root / self.images_file
        labels_path = self.root / self.labels_file
        missing = [path.name for path in (images_path, labels_path) if not path.is_file()]
        if missing:
            raise MissingInputError(
                f"sprites source: missing {missing} in {str(self.root.resolve())!r}. "
                f"Expected both {self.images_file!r} (images) and {self.labels_file!r} (labels), "
                'the files of DeepLearning.AI\'s "How Diffusion Models Work" course; put them '
                "there or set data.source.root to the folder that holds them."
            )
        mmap_mode = "r" if self.mmap else None
        images = _load_npy(images_path, mmap_mode)
        labels = _load_npy(labels_path, mmap_mode)
        _check_images(images, images_path)
        _check_labels(labels, labels_path, num_images=len(images))
        images_nchw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        contexts = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        return LoadedImages(images_nchw, contexts, list(SPRITE_CLASS_NAMES))


def _load_npy(path: Path, mmap_mode: str | None) -> np.ndarray:
    """np.load, with a truncated or corrupt file named in one line (numpy's own errors say
    "mmap length is greater than file size" or "contains pickled (object) data")."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(
            f"{path}: not a readable .npy array, truncated or corrupt ({reason}); expected the "
            "course's file as downloaded (np.save format); download it again"
        ) from None


def _check_images(images: np.ndarray, path: Path) -> None:
    """Accept (N, H, W, 3) uint8 only."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(
            f"{path}: images have shape {images.shape}; expected (N, H, W, 3) RGB, NHWC"
        )
    if images.dtype != np.uint8:
        raise InputError(f"{path}: images have dtype {images.dtype}; expected uint8 (0..255)")
    if len(images) == 0:
        raise InputError(f"{path}: holds 0 images; expected at least one")


def _check_labels(labels: np.ndarray, path: Path, num_images: int) -> None:
    """Accept (num_images, 5) with one-hot rows: each row one 1 and four 0s."""
    num_classes = len(SPRITE_CLASS_NAMES)
    if labels.ndim != 2 or labels.shape[1] != num_classes:
        raise InputError(
            f"{path}: labels have shape {labels.shape}; expected (N, {num_classes}), "
            f"one-hot over {SPRITE_CLASS_NAMES}"
        )
    if len(labels) != num_images:
        raise InputError(
            f"{path}: {len(labels)} label rows for {num_images} images; expected one row per image"
        )
    is_one_hot = ((labels == 0) | (labels == 1)).all(axis=1) & (labels.sum(axis=1) == 1)
    if not is_one_hot.all():
        bad_row = int(np.flatnonzero(~is_one_hot)[0])
        raise InputError(
            f"{path}: label row {bad_row} is {labels[bad_row].tolist()}; expected a one-hot row "
            f"(one 1 and {num_classes - 1} zeros), ({(~is_one_hot).sum()} such rows in all)"
        )
