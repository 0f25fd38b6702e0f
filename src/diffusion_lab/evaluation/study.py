"""The steps-vs-quality study: every sampler denoises the same noise into the same classes, and the
judge scores each result (class accuracy, FID, KID) beside its cost (NFE, seconds).

Pure functions on a noise-prediction net ``net(x, t / T, context) -> eps``, samplers already built
(from a panel, see panel.py), a trained judge and tensors; no Lightning, no Hydra. From a
checkpoint's module::

    samplers = [(entry, module.make_sampler(entry.config)) for entry in expand_panel(panel)]
    with module.sampling_net(use_ema=True) as net:
        rows = run_study(net, samplers, judge, real_images, n_per_class=50)

diffusion-eval and the in-training quality callback both score through :func:`run_study`, so
they give the same numbers for the same checkpoint, noise and sampler.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from diffusion_lab.diffusion import NFECounter, Sampler
from diffusion_lab.diffusion.samplers import Model, StepCallback
from diffusion_lab.evaluation.classifier import ImageClassifier
from diffusion_lab.evaluation.metrics import (
    check_kid_subset_size,
    class_accuracy,
    feature_distances,
)
from diffusion_lab.evaluation.panel import PanelEntry
from diffusion_lab.utils.checks import require_int
from diffusion_lab.utils.progress import ProgressFactory, track
from diffusion_lab.utils.timing import timed

log = logging.getLogger(__name__)

ROW_FIELDS = (
    "sampler",
    "options",
    "steps",
    "eta",
    "nfe",
    "seconds",
    "images_per_second",
    "class_accuracy",
    "fid",
    "kid_mean",
    "kid_std",
)


def study_inputs(
    num_classes: int, image_shape: Sequence[int], n_per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed input every sampler gets: ``n_per_class`` images of each of the K classes.

    Returns (labels (N,) = 0,..,0, 1,..., K-1; one-hot contexts (N, K); noise x_T (N, C, H, W)
    ~ N(0, I) from a CPU generator seeded with ``seed``), N = K n_per_class.
    """
    require_int("n_per_class", n_per_class, minimum=1)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    contexts = torch.eye(num_classes)[labels]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(labels), *image_shape), generator=generator)
    return labels, contexts, noise


def _warm_up(net: Model, noise: torch.Tensor, contexts: torch.Tensor) -> None:
    """One forward on two images, so that the first sampler's time holds no one-off set-up."""
    with torch.inference_mode():
        net(noise[:2], torch.ones(len(noise[:2]), device=noise.device), contexts[:2])


def _device_of(net: Model) -> torch.device:
    if isinstance(net, torch.nn.Module):
        parameter = next(net.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


def _both(first: StepCallback, then: StepCallback | None) -> StepCallback:
    if then is None:
        return first

    def hook(index: int, total: int, t_prev: int, x: torch.Tensor) -> None:
        first(index, total, t_prev, x)
        then(index, total, t_prev, x)

    return hook


def run_study(
    net: Model,
    samplers: Sequence[tuple[PanelEntry, Sampler]],
    classifier: ImageClassifier,
    real_images: torch.Tensor,
    n_per_class: int,
    seed: int = 0,
    guidance_scale: float = 0.0,
    kid_subset_size: int = 100,
    device: torch.device | str | None = None,
    progress: ProgressFactory = track,
    features: torch.nn.Module | None = None,
    on_step: StepCallback | None = None,
    start: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Sample with every sampler from the same noise and contexts, time it, score it.

    ``net`` is the noise-prediction network in eval mode (``module.sampling_net()``); it runs on
    ``device`` (default: its parameters' device). Every sampler gets the same x_T (N, C, H, W) and
    one-hot contexts for ``n_per_class`` images of each of the judge's K classes
    (:func:`study_inputs` with ``seed``), and the same CPU generator (seeded ``seed + 1``) for the
    noise it adds on the way (DDPM, DDIM with eta > 0). The judge scores the images against their
    classes and against ``real_images`` (M, C, H, W) in [-1, 1]. ``progress(label)`` shows each
    sampler's steps (default: a rich bar in a terminal, else log lines). FID and KID use the
    judge's features, or ``features`` (:func:`~diffusion_lab.evaluation.metrics.feature_extractor`).
    ``on_step``, when given, is called after every step too, after the progress (a caller's stop
    check: an exception it raises ends the study there). ``start``, when given, is every chain's
    x_T (N, C, H, W) instead of the study's noise (benchmarks/prior_mismatch.py starts from the
    true marginal q(x_T | c)); its rows follow the study's labels (:func:`study_inputs`).

    Returns one row per sampler with :data:`ROW_FIELDS`: sampler (the entry's family), options
    (its options as text), steps (the sampler's ``steps``, else its NFE: T for DDPM), eta (the
    sampler's ``eta`` or None), nfe (network calls counted during sampling), seconds (wall,
    device synchronised), images_per_second, class_accuracy, fid, kid_mean, kid_std.
    """
    if not samplers:
        raise ValueError("run_study needs at least one (PanelEntry, Sampler)")
    if real_images.ndim != 4:
        raise ValueError(f"real_images must be (M, C, H, W), got {tuple(real_images.shape)}")
    labels, contexts, noise = study_inputs(
        classifier.num_classes, real_images.shape[1:], n_per_class, seed
    )
    if start is not None:
        if start.shape != noise.shape:
            raise ValueError(
                f"start must be the study's x_T shape {tuple(noise.shape)}, got {tuple(start.shape)}"
            )
        noise = start
    check_kid_subset_size(kid_subset_size, len(real_images), len(noise))
    device = torch.device(device) if device is not None else _device_of(net)
    noise, contexts = noise.to(device), contexts.to(device)
    _warm_up(net, noise, contexts)

    rows = []
    for entry, sampler in samplers:
        generator = torch.Generator().manual_seed(seed + 1)
        counter = NFECounter(net)
        with progress(entry.label) as bar:
            run = partial(sampler.sample, counter, noise, contexts, guidance_scale, generator)
            images, seconds = timed(partial(run, on_step=_both(bar.on_step, on_step)), device)
        images = images.float().cpu()
        row = {
            "sampler": entry.family,
            "options": entry.options_text,
            "steps": getattr(sampler, "steps", sampler.nfe),
            "eta": getattr(sampler, "eta", None),
            "nfe": counter.calls,
            "seconds": seconds,
            "images_per_second": len(images) / seconds,
            "class_accuracy": class_accuracy(classifier, images, labels),
            **feature_distances(classifier, real_images, images, kid_subset_size, seed, features),
        }
        log.info(
            "%s: %d NFE, %.2f s, class accuracy %.3f, FID %.3f, KID %.4f",
            entry.label,
            row["nfe"],
            seconds,
            row["class_accuracy"],
            row["fid"],
            row["kid_mean"],
        )
        rows.append(row)
    return rows


def real_row(
    classifier: ImageClassifier,
    reference_images: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    kid_subset_size: int = 100,
    seed: int = 0,
    features: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """The floor of the table: a second set of REAL images (N, C, H, W) in [-1, 1] with their
    classes (N,), scored like a sampler's. What a perfect sampler would get with sets this size
    (FID is not 0 between two samples of one distribution). Sampler "real", no steps or timing."""
    return {
        "sampler": "real",
        "options": None,
        "steps": None,
        "eta": None,
        "nfe": None,
        "seconds": None,
        "images_per_second": None,
        "class_accuracy": class_accuracy(classifier, images, labels),
        **feature_distances(classifier, reference_images, images, kid_subset_size, seed, features),
    }
