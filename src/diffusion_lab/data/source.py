"""The contract between an image source and the datamodule.

A source reads one data set from wherever it lives and returns it whole as `LoadedImages`: uint8
images (N, C, H, W) in 0..255 and float32 one-hot contexts (N, K). Conversion to float in [-1, 1]
happens later, per batch, on the device (see `DiffusionDataModule.on_after_batch_transfer`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LoadedImages:
    """A whole data set in memory.

    Attributes:
        images: uint8 tensor (N, C, H, W), values 0..255.
        contexts: float32 tensor (N, K), one row per image (one-hot for a labelled image).
        class_names: K names; `class_names[k]` is the class that column k of `contexts` stands for.
    """

    images: torch.Tensor
    contexts: torch.Tensor
    class_names: list[str]

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            found = getattr(self.images, "dtype", type(self.images).__name__)
            raise ValueError(f"images must be a uint8 torch tensor (N, C, H, W); got {found}")
        if self.images.ndim != 4:
            raise ValueError(
                f"images must be 4-D (N, C, H, W); got shape {tuple(self.images.shape)}"
            )
        if len(self.images) == 0:
            raise ValueError("images is empty (N = 0); a data set needs at least one image")
        if not isinstance(self.contexts, torch.Tensor) or self.contexts.dtype != torch.float32:
            found = getattr(self.contexts, "dtype", type(self.contexts).__name__)
            raise ValueError(f"contexts must be a float32 torch tensor (N, K); got {found}")
        if self.contexts.ndim != 2:
            raise ValueError(f"contexts must be 2-D (N, K); got shape {tuple(self.contexts.shape)}")
        if len(self.contexts) != len(self.images):
            raise ValueError(
                f"contexts has {len(self.contexts)} rows but there are {len(self.images)} images; "
                "one context row per image is required"
            )
        if self.contexts.shape[1] != len(self.class_names):
            raise ValueError(
                f"contexts has K={self.contexts.shape[1]} columns but {len(self.class_names)} "
                f"class names were given ({self.class_names}); they must match"
            )

    @property
    def channels(self) -> int:
        """C: 1 (grey) or 3 (RGB)."""
        return self.images.shape[1]

    @property
    def height(self) -> int:
        return self.images.shape[2]

    @property
    def width(self) -> int:
        return self.images.shape[3]


class ImageSource(ABC):
    """Where a data set comes from. Subclasses set `name` and implement `load()`.

    `prepare()` runs once per machine before `load()` (the datamodule calls it from Lightning's
    `prepare_data`, on one process only): the place for downloads. `load()` runs on every process.
    """

    name: str = "image"

    def prepare(self) -> None:  # noqa: B027 (an optional hook: most sources have no files to fetch)
        """Fetch files that are not there yet. Nothing to do by default."""

    @abstractmethod
    def load(self) -> LoadedImages:
        """Read the whole data set: uint8 images (N, C, H, W) and float32 contexts (N, K)."""


def one_hot_contexts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer class labels (N,) in 0..num_classes-1 -> float32 one-hot contexts (N, num_classes)."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)
