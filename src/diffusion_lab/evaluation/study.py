"""The steps-vs-quality study: every sampler denoises the same noise into the same classes, and the
judge scores each result (class accuracy, FID, KID) beside its cost (NFE, seconds).

Pure functions on a noise-prediction net ``net(x, t / T, context) -> eps``, its schedule, a trained
judge and tensors; no Lightning, no Hydra. From a checkpoint's module::

    with module.sampling_net(use_ema=True) as net:
        rows = run_study(net, module.schedule, specs, judge, real_images, n_per_class=50)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffusion_lab.diffusion import DDIMSampler, DDPMSampler, NFECounter, NoiseSchedule, Sampler
from diffusion_lab.diffusion.samplers import Model
from diffusion_lab.evaluation.classifier import ImageClassifier
from diffusion_lab.evaluation.metrics import (
    check_kid_subset_size,
    class_accuracy,
    feature_distances,
)
from diffusion_lab.timing import timed

log = logging.getLogger(__name__)

ROW_FIELDS = (
    "sampler",
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
SAMPLER_KINDS = ("ddpm", "ddim")


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler of the study: DDPM over all T steps (eta None), or DDIM with steps and eta."""

    kind: str
    steps: int
    eta: float | None = None

    def build(self, schedule: NoiseSchedule) -> Sampler:
        if self.kind == "ddpm":
            return DDPMSampler(schedule)
        if self.kind == "ddim":
            return DDIMSampler(schedule, steps=self.steps, eta=self.eta)
        raise ValueError(
            f"unknown sampler kind {self.kind!r}; accepted: {', '.join(SAMPLER_KINDS)}"
        )

    @property
    def label(self) -> str:
        """E.g. "DDPM-500", "DDIM-25 (eta 0)"."""
        if self.kind == "ddpm":
            return f"DDPM-{self.steps}"
        return f"DDIM-{self.steps} (eta {self.eta:g})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def sampler_specs(
    timesteps: int, ddpm: bool, ddim_steps: Sequence[int], ddim_etas: Sequence[float]
) -> tuple[list[SamplerSpec], list[int]]:
    """The study's samplers for a schedule of T = ``timesteps``: DDPM-T if ``ddpm``, then DDIM for
    every (steps, eta) pair in the order given.

    DDIM steps above T cannot be taken (the sampler visits distinct timesteps): they are left out
    and returned as the second value, so the caller can say so. Every step count must be an int
    >= 1 and every eta in [0, 1]; at least one sampler must remain.
    """
    for steps in ddim_steps:
        if not _is_int(steps) or steps < 1:
            raise ValueError(f"ddim_steps must be ints >= 1, got {steps!r} in {list(ddim_steps)}")
    for eta in ddim_etas:
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0 <= eta <= 1:
            raise ValueError(
                f"ddim_etas must be numbers in [0, 1], got {eta!r} in {list(ddim_etas)}"
            )
    if len(set(ddim_steps)) != len(ddim_steps) or len(set(ddim_etas)) != len(ddim_etas):
        raise ValueError(
            f"ddim_steps {list(ddim_steps)} and ddim_etas {list(ddim_etas)} must not repeat a value"
        )
    if ddim_steps and not ddim_etas:
        raise ValueError(f"ddim_steps {list(ddim_steps)} given with no ddim_etas; give e.g. [0.0]")
    skipped = [steps for steps in ddim_steps if steps > timesteps]
    specs = [SamplerSpec("ddpm", timesteps)] if ddpm else []
    specs += [
        SamplerSpec("ddim", steps, float(eta))
        for steps in ddim_steps
        if steps <= timesteps
        for eta in ddim_etas
    ]
    if not specs:
        raise ValueError(
            f"no sampler to study: ddpm is off and ddim_steps {list(ddim_steps)} leaves none "
            f"within T={timesteps}; set ddpm=true or give ddim_steps <= {timesteps}"
        )
    return specs, skipped


def study_inputs(
    num_classes: int, image_shape: Sequence[int], n_per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed input every sampler gets: ``n_per_class`` images of each of the K classes.

    Returns (labels (N,) = 0,..,0, 1,..., K-1; one-hot contexts (N, K); noise x_T (N, C, H, W)
    ~ N(0, I) from a CPU generator seeded with ``seed``), N = K n_per_class.
    """
    if not _is_int(n_per_class) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an int >= 1, got {n_per_class!r}")
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


def run_study(
    net: Model,
    schedule: NoiseSchedule,
    specs: Sequence[SamplerSpec],
    classifier: ImageClassifier,
    real_images: torch.Tensor,
    n_per_class: int,
    seed: int = 0,
    guidance_scale: float = 0.0,
    kid_subset_size: int = 100,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """Sample with every spec from the same noise and contexts, time it, score it.

    ``net`` is the noise-prediction network in eval mode (``module.sampling_net()``); it runs on
    ``device`` (default: its parameters' device). Every sampler gets the same x_T (N, C, H, W) and
    one-hot contexts for ``n_per_class`` images of each of the judge's K classes
    (:func:`study_inputs` with ``seed``), and the same CPU generator (seeded ``seed + 1``) for the
    noise it adds on the way (DDPM, DDIM with eta > 0). The judge scores the images against their
    classes and against ``real_images`` (M, C, H, W) in [-1, 1].

    Returns one row per spec with :data:`ROW_FIELDS`: sampler ("ddpm"/"ddim"), steps, eta (None
    for DDPM), nfe (network calls counted during sampling), seconds (wall, device synchronised),
    images_per_second, class_accuracy, fid, kid_mean, kid_std.
    """
    if not specs:
        raise ValueError("run_study needs at least one SamplerSpec")
    if real_images.ndim != 4:
        raise ValueError(f"real_images must be (M, C, H, W), got {tuple(real_images.shape)}")
    labels, contexts, noise = study_inputs(
        classifier.num_classes, real_images.shape[1:], n_per_class, seed
    )
    check_kid_subset_size(kid_subset_size, len(real_images), len(noise))
    device = torch.device(device) if device is not None else _device_of(net)
    noise, contexts = noise.to(device), contexts.to(device)
    _warm_up(net, noise, contexts)

    rows = []
    for spec in specs:
        sampler = spec.build(schedule)
        generator = torch.Generator().manual_seed(seed + 1)
        counter = NFECounter(net)
        images, seconds = timed(
            lambda: sampler.sample(counter, noise, contexts, guidance_scale, generator),  # noqa: B023
            device,
        )
        images = images.float().cpu()
        row = {
            "sampler": spec.kind,
            "steps": spec.steps,
            "eta": spec.eta,
            "nfe": counter.calls,
            "seconds": seconds,
            "images_per_second": len(images) / seconds,
            "class_accuracy": class_accuracy(classifier, images, labels),
            **feature_distances(classifier, real_images, images, kid_subset_size, seed),
        }
        log.info(
            "%s: %d NFE, %.2f s, class accuracy %.3f, FID %.3f, KID %.4f",
            spec.label,
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
) -> dict[str, Any]:
    """The floor of the table: a second set of REAL images (N, C, H, W) in [-1, 1] with their
    classes (N,), scored like a sampler's. What a perfect sampler would get with sets this size
    (FID is not 0 between two samples of one distribution). Sampler "real", no steps or timing."""
    return {
        "sampler": "real",
        "steps": None,
        "eta": None,
        "nfe": None,
        "seconds": None,
        "images_per_second": None,
        "class_accuracy": class_accuracy(classifier, images, labels),
        **feature_distances(classifier, reference_images, images, kid_subset_size, seed),
    }
