"""The set-up every study shares: the labelled splits, the real sets, KID's subset size and the
judge. diffusion-eval and the quality panel (callbacks/quality.py) both build their study here, so
the same data, seed and options give them the same reference images and the same judge.

Two steps, so that a caller can check all its input before anything expensive runs:

1. :func:`study_sets` (cheap): the uint8 splits (N, C, H, W) with class indices, the real
   reference (and floor) sets of N = n_per_class x K images, KID's subset size;
2. :func:`study_judge`: the judge of those splits, from the judge cache or trained now.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion_lab.evaluation.judge_cache import Judge, JudgeOptions, get_judge
from diffusion_lab.evaluation.metrics import check_kid_subset_size
from diffusion_lab.evaluation.real_sets import (
    LabelledImages,
    RealSets,
    check_val_split,
    choose_real_sets,
    labelled_images,
)
from diffusion_lab.utils.progress import ProgressFactory, track

log = logging.getLogger(__name__)


@dataclass
class StudySets:
    """The labelled ``train`` and ``val`` splits, their ``class_names``, the ``real`` sets, the
    number of images each sampler generates and the KID subset size to use."""

    train: LabelledImages
    val: LabelledImages
    class_names: list[str]
    real: RealSets
    num_generated: int
    kid_subset_size: int


def study_sets(
    train_set: torch.utils.data.TensorDataset,
    val_set: torch.utils.data.TensorDataset | None,
    class_names: Sequence[str],
    n_per_class: int,
    seed: int,
    kid_subset_size: int,
    lower_kid_subset: bool = False,
) -> StudySets:
    """The splits (of (uint8 image, one-hot context)) as labelled images and the real sets.

    Raises InputError for an empty or missing val split (the judge is checked on held-out images)
    and for a ``kid_subset_size`` larger than the sets, unless ``lower_kid_subset``: then it is
    lowered to the smaller set's size, with a warning (the quality panel's choice: a training
    run should not fail over a metric's option)."""
    val = labelled_images(val_set) if val_set is not None else (torch.empty(0), torch.empty(0))
    check_val_split(val)
    train = labelled_images(train_set)
    num_generated = n_per_class * len(class_names)
    real = choose_real_sets(train, val, num_generated, seed)
    largest = min(len(real.reference), num_generated)
    if lower_kid_subset and kid_subset_size > largest:
        log.warning(
            "kid_subset_size=%d is larger than the %d real and %d generated images; using %d",
            kid_subset_size,
            len(real.reference),
            num_generated,
            largest,
        )
        kid_subset_size = largest
    check_kid_subset_size(kid_subset_size, len(real.reference), num_generated)
    return StudySets(train, val, list(class_names), real, num_generated, kid_subset_size)


def study_judge(
    sets: StudySets,
    options: JudgeOptions,
    cache_dir: str | Path | None,
    device: torch.device | str,
    metadata: Mapping[str, Any] | None = None,
    progress: ProgressFactory = track,
) -> Judge:
    """The judge of ``sets``' splits and ``options``: from the cache in ``cache_dir`` (None: no
    cache), else trained on the train split and checked on the val split."""
    return get_judge(
        sets.train, sets.val, sets.class_names, options, cache_dir, device, metadata, progress
    )
