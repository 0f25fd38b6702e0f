"""The real images a study compares against: a reference set and a disjoint "floor" set.

Pure torch on uint8 splits (N, C, H, W) with class indices (N,); no Lightning or Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffusion_lab.evaluation.classifier import uint8_to_unit_range
from diffusion_lab.utils.checks import InputError

LabelledImages = tuple[torch.Tensor, torch.Tensor]  # (uint8 images (N, C, H, W), classes (N,))


def labelled_images(dataset: torch.utils.data.TensorDataset) -> LabelledImages:
    """(uint8 images (N, C, H, W), class indices (N,)) of a split of (image, one-hot context)."""
    images, contexts = dataset.tensors
    return images, contexts.argmax(dim=1)


def check_val_split(val: LabelledImages) -> None:
    """The judge is checked on held-out real images: an empty val split is refused."""
    if len(val[0]) == 0:
        raise InputError(
            "the judge needs held-out real images, but data.val_fraction=0 leaves no val split; "
            "use a data.val_fraction > 0"
        )


@dataclass
class RealSets:
    """The real images the study compares against, both float (N, C, H, W) in [-1, 1].

    ``reference`` is what every sampler's images are measured against; ``floor`` (with its class
    ``floor_labels``) is a disjoint set of real images scored like a sampler's, or None when the
    split is too small for two sets; ``split`` names where they came from and ``note`` says why.
    """

    split: str
    reference: torch.Tensor
    floor: torch.Tensor | None
    floor_labels: torch.Tensor | None
    note: str


def choose_real_sets(
    train: LabelledImages, val: LabelledImages, num_generated: int, seed: int
) -> RealSets:
    """N = ``num_generated`` real images as the reference and N others as the floor, from the val
    split when it holds 2N, else from the train split (which the judge has seen).

    A split with fewer than 2N images gives a smaller reference (all it holds, up to N) and no
    floor: a floor of another size than the generated sets would not be a fair one, FID being
    biased by set size. The images are a seeded random choice: a seed always picks the same ones.
    """
    if len(val[0]) >= 2 * num_generated:
        split, (images, labels) = "val", val
        note = f"val split ({len(val[0])} images, unseen by the judge)"
    else:
        split, (images, labels) = "train", train
        note = (
            f"train split ({len(train[0])} images, which the judge was trained on): the val split "
            f"holds {len(val[0])}, fewer than 2 x {num_generated} (reference + real row)"
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    reference = order[:num_generated]
    floor = order[num_generated : 2 * num_generated] if len(order) >= 2 * num_generated else None
    return RealSets(
        split=split,
        reference=uint8_to_unit_range(images[reference]),
        floor=uint8_to_unit_range(images[floor]) if floor is not None else None,
        floor_labels=labels[floor] if floor is not None else None,
        note=note,
    )
