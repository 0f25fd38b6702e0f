"""What the web app (diffusion-app) does, without the page: contexts from sliders, sampler configs
from the controls, the checkpoints to pick from, generating and editing.

Every function takes and returns plain values (numbers, lists, PIL images, paths), so it can be
tested without Gradio; :mod:`diffusion_lab.app` only lays the controls out and wires them here.
Bad input raises ValueError with one line, which the page shows as a message.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from diffusion_lab import CONFIG_DIR
from diffusion_lab.diffusion.samplers.base import StepCallback
from diffusion_lab.image_edits import (
    before_after_grid,
    edit_images,
    edit_title,
    image_tensor,
    load_data_set,
)
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.runs.checkpoints import TRAIN_RUNS_DIR, load_module, resolve_checkpoint
from diffusion_lab.runs.pretrained import is_export
from diffusion_lab.sample import draw_samples, sampler_title
from diffusion_lab.utils.checks import InputError, require_int
from diffusion_lab.utils.images import labelled_grid, save_gif

SAMPLER_FAMILIES = ("ddim", "ddpm", "dpmpp", "euler", "heun")  # conf/sampler/<name>.yaml
MAX_IMAGES = 64
GIF_FRAMES = 25  # about this many frames in the denoising GIF: a frame every nfe // 25 steps


def contexts_from_sliders(weights: Sequence[float], count: int) -> torch.Tensor | None:
    """``count`` copies of the context (K,) the sliders give, (count, K); None when every weight
    is 0 (the null context: unconditional samples)."""
    values = [float(w) for w in weights]
    if not all(math.isfinite(w) for w in values):
        raise InputError(f"context weights must be finite numbers, got {values}")
    if not any(values):
        return None
    return torch.tensor(values).repeat(count, 1)


def context_label(weights: Sequence[float], class_names: Sequence[str]) -> str:
    """E.g. "3:1, 8:0.6", or "unconditional" for all zeros."""
    parts = [f"{name}:{float(w):g}" for name, w in zip(class_names, weights) if float(w)]
    return ", ".join(parts) or "unconditional"


@dataclass(frozen=True)
class SamplerChoice:
    """The page's sampler controls: the family (conf/sampler/<family>.yaml) and the options that
    family reads: steps (every family but DDPM, which runs all T), eta (DDIM), order
    (DPM-Solver++), churn (EDM's Euler and Heun: S_churn, noise re-added before each step)."""

    family: str
    steps: int
    eta: float = 0.0
    order: int = 2
    churn: float = 0.0

    def config(self) -> dict[str, Any]:
        """The family's partial sampler config with the page's options."""
        family = self.family
        if family not in SAMPLER_FAMILIES:
            raise InputError(f"unknown sampler {family!r}; accepted: {', '.join(SAMPLER_FAMILIES)}")
        path = Path(CONFIG_DIR) / "sampler" / f"{family}.yaml"
        config = OmegaConf.to_container(OmegaConf.load(path))
        if family != "ddpm":
            config["steps"] = int(self.steps)
        if family == "ddim":
            config["eta"] = float(self.eta)
        if family == "dpmpp":
            config["order"] = int(self.order)
        if family in ("euler", "heun"):
            config["churn"] = float(self.churn)
        return config


def check_count(count: Any) -> int:
    if isinstance(count, float) and count.is_integer():
        count = int(count)  # a Gradio number box gives floats
    return require_int("the number of images", count, minimum=1, maximum=MAX_IMAGES)


def check_guidance(guidance: float, contexts: torch.Tensor | None) -> float:
    if not math.isfinite(guidance) or guidance < 0:
        raise InputError(f"guidance must be a finite number >= 0, got {guidance!r}")
    if guidance > 0 and contexts is None:
        raise InputError(
            "guidance > 0 needs a context: with every weight 0 the conditional and the null "
            "model are the same; move a class slider or set guidance to 0"
        )
    return float(guidance)


def default_steps_and_eta(module: DiffusionModule) -> tuple[int, float]:
    """The page's first steps and eta for ``module``: its run's default sampler's (``steps``
    capped at T; DDIM 10 steps, eta 1 for the default recipe), else 25 steps and eta 0."""
    config = module.hparams.get("sampler") or {}
    steps = int(config.get("steps", 25))
    eta = float(config.get("eta", 0.0))
    return min(steps, module.schedule.timesteps), eta


def list_checkpoints(runs_dir: Path = TRAIN_RUNS_DIR) -> list[str]:
    """The run folders under ``runs_dir`` that hold a checkpoint, and export folders, newest
    first (by the checkpoint's modification time)."""
    found: dict[Path, float] = {}
    for pattern in ("*/checkpoints/last.ckpt", "*/checkpoints/best-*.ckpt"):
        for path in runs_dir.glob(pattern):
            run = path.parent.parent
            found[run] = max(found.get(run, 0.0), path.stat().st_mtime)
    for config in runs_dir.glob("*/config.json"):
        if is_export(config.parent):
            found[config.parent] = config.stat().st_mtime
    return [str(run) for run, _ in sorted(found.items(), key=lambda item: -item[1])]


@dataclass
class Models:
    """The loaded model of one checkpoint at a time (the page's picker switches it)."""

    device: torch.device
    path: str | None = None
    module: DiffusionModule | None = None
    checkpoint: Path | None = None
    _data: Any = field(default=None, repr=False)
    precision: str | None = None  # the net's while sampling; None: the checkpoint's run's

    def get(self, path: str) -> DiffusionModule:
        if path != self.path or self.module is None:
            checkpoint = resolve_checkpoint(path)
            self.module = load_module(checkpoint, self.device, self.precision)
            self.path, self.checkpoint, self._data = path, checkpoint, None
        return self.module

    def data_image(self, index: int) -> tuple[torch.Tensor, str]:
        if self._data is None:
            self._data = load_data_set(self.module, self.checkpoint)
        return self._data.image(index)


@dataclass
class Generated:
    grid: Image.Image
    info: str
    animation: Path


def generate(
    module: DiffusionModule,
    weights: Sequence[float],
    choice: SamplerChoice,
    guidance: float,
    seed: int,
    count: int,
    out_dir: Path,
    scale: int = 4,
    on_step: StepCallback | None = None,
) -> Generated:
    """``count`` images for the sliders' context: the grid, "DDIM, 5 NFE, 0.12 s, ..." and a
    denoising GIF (written into ``out_dir``, about 25 frames). ``on_step(i, n, t, x)`` after
    every step (the page's progress bar)."""
    count = check_count(count)
    contexts = contexts_from_sliders(weights, count)
    guidance = check_guidance(float(guidance), contexts)
    sampler = module.make_sampler(choice.config())
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((count, *module.image_shape), generator=generator)
    stride = max(1, sampler.nfe // GIF_FRAMES)
    samples = draw_samples(
        module, sampler, contexts, noise, guidance, generator, True, stride, on_step
    )
    label = context_label(weights, module.class_names or [str(i) for i in range(len(weights))])
    title = sampler_title(sampler, samples.seconds, guidance, True)
    grid = labelled_grid(samples.images, [label], title=title, scale=scale)
    frames = [
        labelled_grid(frame, [label], title=f"t={t}", scale=scale)
        for frame, t in zip(samples.frames, samples.timesteps)
    ]
    animation = save_gif(frames, Path(tempfile.mkdtemp(dir=out_dir)) / "denoising.gif")
    return Generated(grid, title, animation)


def picture_from_editor(value: Any) -> tuple[Image.Image | None, Image.Image | None]:
    """(the uploaded picture, the painted strokes as a grey redraw mask or None) from an image
    editor's value {"background", "layers", "composite"} (numpy arrays or PIL images)."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        return _as_picture(value), None
    background = _as_picture(value.get("background"))
    painted = None
    for layer in value.get("layers") or []:
        layer = _as_picture(layer)
        if layer is None:
            continue
        alpha = np.asarray(layer.convert("RGBA"))[..., 3] > 0
        painted = alpha if painted is None else painted | alpha
    if painted is None or not painted.any():
        return background, None
    return background, Image.fromarray((painted * 255).astype(np.uint8), mode="L")


def _as_picture(value: Any) -> Image.Image | None:
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (str, Path)):
        with Image.open(value) as opened:
            return opened.copy()
    array = np.asarray(value)
    if array.dtype != np.uint8:
        raise InputError(f"the uploaded image has pixels of type {array.dtype}; give a PNG")
    return Image.fromarray(array)


def fit_upload(picture: Image.Image, shape: Sequence[int]) -> Image.Image:
    """An upload as the model's mode (grey or colour): alpha dropped; the size is kept (a
    picture of another size is refused by :func:`image_tensor`)."""
    channels = shape[0]
    if picture.mode in ("RGBA", "LA", "P"):
        picture = picture.convert("RGB" if channels == 3 else "L")
    if channels == 1 and picture.mode == "RGB":
        picture = picture.convert("L")
    return picture


def edit(
    models: Models,
    index: int | None,
    editor_value: Any,
    strength: float,
    weights: Sequence[float],
    choice: SamplerChoice,
    guidance: float,
    seed: int,
    count: int,
    scale: int = 4,
    on_step: StepCallback | None = None,
) -> tuple[Image.Image, str]:
    """Edit a data-set image (``index``) or an upload (``editor_value``, with painted pixels as
    the mask: inpainting) towards the sliders' context: (the before/after grid, its title).
    ``on_step(i, n, t, x)`` after every step (the page's progress bar)."""
    module = models.module
    count = check_count(count)
    picture, painted = picture_from_editor(editor_value)
    if picture is not None:
        image = image_tensor(
            fit_upload(picture, module.image_shape), module.image_shape, "the upload"
        )
        image_label = "upload"
    elif index is not None:
        image, image_label = models.data_image(int(index))
    else:
        raise InputError("pick a data-set index or upload an image to edit")
    mask = None
    if painted is not None:
        if painted.size != picture.size:
            raise InputError(f"the painted mask is {painted.size}, the image {picture.size}")
        mask = torch.from_numpy(1.0 - np.asarray(painted, dtype=np.float32) / 255.0)[None, None]
    contexts = contexts_from_sliders(weights, count)
    guidance = check_guidance(float(guidance), contexts)
    sampler = module.make_sampler(choice.config())
    generator = torch.Generator().manual_seed(int(seed))
    edits = edit_images(
        module, sampler, image, contexts, float(strength), mask, guidance, generator,
        on_step=on_step, count=count,
    )  # fmt: skip
    title = edit_title(sampler, edits, float(strength), mask is not None)
    label = f"{image_label} -> {context_label(weights, module.class_names)}"
    return before_after_grid(image, edits.images, [label], title, mask, scale), title
