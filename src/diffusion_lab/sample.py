"""diffusion-sample: load a checkpoint, sample one row of images per context, write them.

diffusion-sample ckpt_path=outputs/train/runs/<datetime>            # one row per class, DDIM
diffusion-sample ckpt_path=<run> contexts=[hero,food] sampler=ddpm guidance_scale=2
diffusion-sample ckpt_path=<run> contexts=["hero:1,food:0.6"] n=16 animate=true

Into the Hydra run folder: ``samples.png`` (a labelled grid, one row per context), ``samples.npz``
(``images`` (N, H, W, C) uint8, ``contexts`` (N, K) float32, ``labels`` (N,) the row label of each
image, ``class_names`` (K,)) and, with ``animate=true``, ``denoising.gif``. All input is checked
before sampling, and files are written (atomically) only after sampling succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image

from diffusion_lab import CONFIG_DIR
from diffusion_lab.diffusion import Sampler
from diffusion_lab.diffusion.contexts import parse_context, parse_contexts
from diffusion_lab.diffusion.samplers.base import StepCallback
from diffusion_lab.lit_module import DiffusionModule, Trajectory
from diffusion_lab.runs.checkpoints import load_module, resolve_checkpoint, resolve_device
from diffusion_lab.utils.checks import InputError, require_int, require_number
from diffusion_lab.utils.cli import input_errors_end_the_command
from diffusion_lab.utils.images import labelled_grid, save_gif, save_image, to_uint8
from diffusion_lab.utils.io import atomic_write
from diffusion_lab.utils.progress import track

log = logging.getLogger(__name__)

IMAGES_FILE = "samples.png"
ARRAYS_FILE = "samples.npz"
ANIMATION_FILE = "denoising.gif"


# --- input: options, checkpoint, device, contexts ------------------------------------------
def check_options(cfg: DictConfig) -> None:
    """The plain numeric fields: n, animation_every and scale >= 1, guidance_scale >= 0, an int seed."""
    for name in ("n", "animation_every", "scale"):
        require_int(name, cfg[name], minimum=1)
    require_number("guidance_scale", cfg.guidance_scale, minimum=0)
    require_int("seed", cfg.seed)


def raw_context(weights: Sequence[Any], class_names: Sequence[str]) -> torch.Tensor:
    """A context (K,) given as its K weights, e.g. the course's [1, 0, 0.6, 0, 0]."""
    if len(weights) != len(class_names):
        raise InputError(
            f"context {list(weights)} has {len(weights)} weights; this checkpoint's contexts have "
            f"{len(class_names)}, one per class: {', '.join(class_names)}"
        )
    try:
        return torch.tensor([float(weight) for weight in weights])
    except (TypeError, ValueError):
        raise InputError(f"context {list(weights)}: every weight must be a number") from None


def contexts_from_config(
    value: Any, class_names: Sequence[str]
) -> tuple[torch.Tensor | None, list[str]]:
    """Rows of contexts (R, K), or None for the null context, and a label for each row.

    ``value`` is the ``contexts`` field: ``all``, null, one spec ("hero", "3", "hero:1,food:0.6"),
    or a list of specs and raw weight vectors ([hero, [1, 0, 0.6, 0, 0]]).
    """
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    if not isinstance(value, (list, tuple)):
        contexts, labels = parse_contexts(None if value is None else str(value), class_names)
    elif not value:
        raise InputError("contexts=[] names no context; give class names, all or null")
    else:
        rows, labels = [], []
        for item in value:
            if isinstance(item, (list, tuple)):
                rows.append(raw_context(item, class_names))
                labels.append("[" + ", ".join(f"{float(weight):g}" for weight in item) + "]")
            else:
                rows.append(parse_context(str(item), class_names))
                labels.append(str(item).strip())
        contexts = torch.stack(rows)
    check_contexts(contexts, labels, len(class_names))
    return contexts, labels


def check_contexts(contexts: torch.Tensor | None, labels: Sequence[str], num_classes: int) -> None:
    """Contexts (R, K) must have the checkpoint's width K and finite weights."""
    if contexts is None:
        return
    if contexts.ndim != 2 or contexts.shape[1] != num_classes:
        raise InputError(
            f"contexts of shape {tuple(contexts.shape)} do not fit a checkpoint with "
            f"{num_classes} context dimensions"
        )
    for row, label in zip(contexts, labels):
        if not torch.isfinite(row).all():
            raise InputError(f"context {label!r} has a weight that is not a finite number")


# --- sampling -------------------------------------------------------------------------------
def frame_stride(sampler: Sampler, every_timesteps: int) -> int:
    """Sampler steps between GIF frames so that a frame comes every ``every_timesteps`` timesteps:
    every 20th step of DDPM; every max(1, round(20 steps / T)) steps of DDIM."""
    return max(1, round(every_timesteps * sampler.nfe / sampler.schedule.timesteps))


def draw_samples(
    module: DiffusionModule,
    sampler: Sampler,
    contexts: torch.Tensor | None,
    noise: torch.Tensor,
    guidance_scale: float,
    generator: torch.Generator,
    use_ema: bool,
    frame_every: int | None = None,
    on_step: StepCallback | None = None,
) -> Trajectory:
    """Denoise noise (N, C, H, W) given contexts (N, K) or None; keep every ``frame_every``-th
    step as a frame when given (one run either way: the frames end on the images). Shows its
    progress over the sampler's steps, and calls ``on_step(i, n, t, x)`` too when given. The
    frames come back as float on the CPU."""
    label = f"{sampler.label}, {len(noise)} images"
    with track(label) as progress:  # a bar in a terminal, else a log line every 10%

        def step(index: int, total: int, t_prev: float, x: torch.Tensor) -> None:
            progress.on_step(index, total, t_prev, x)
            if on_step is not None:
                on_step(index, total, t_prev, x)

        run = module.sample_trajectory(
            contexts,
            noise,
            sampler,
            guidance_scale,
            generator,
            use_ema,
            frame_every=frame_every,
            on_step=step,
        )
    run.frames = run.frames.float().cpu()
    return run


# --- output ---------------------------------------------------------------------------------
def sampler_title(sampler: Sampler, seconds: float, guidance_scale: float, use_ema: bool) -> str:
    """E.g. "DDIM, 25 NFE, 0.84 s, guidance 2" (", raw weights" without EMA)."""
    weights = "" if use_ema else ", raw weights"
    return (
        f"{sampler.label}, {sampler.nfe} NFE, {seconds:.2f} s, guidance {guidance_scale:g}{weights}"
    )


def animation_frames(
    samples: Trajectory, row_labels: Sequence[str], sampler: Sampler, scale: int
) -> list[Image.Image]:
    """One labelled grid per frame, titled with the sampler and the frame's timestep."""
    return [
        labelled_grid(frame, row_labels, title=f"{sampler.label} t={t}", scale=scale)
        for frame, t in zip(samples.frames, samples.timesteps)
    ]


def save_arrays(
    path: Path,
    images: torch.Tensor,
    contexts: torch.Tensor,
    labels: Sequence[str],
    class_names: Sequence[str],
) -> Path:
    """samples.npz: images (N, C, H, W) in [-1, 1] as uint8 (N, H, W, C), contexts (N, K) as
    float32, one label per image, the class names; written atomically."""
    with atomic_write(path) as stream:
        np.savez(
            stream,
            images=to_uint8(images).permute(0, 2, 3, 1).numpy(),
            contexts=contexts.float().cpu().numpy(),
            labels=np.array(labels, dtype=str),
            class_names=np.array(class_names, dtype=str),
        )
    return path


# --- the run --------------------------------------------------------------------------------
def run_sampling(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Check the input, sample, then write the files into ``output_dir``.

    Returns the checkpoint, the sampler's repr, its NFE, the seconds of sampling and the paths
    written (``animation`` is None without ``animate``).
    """
    check_options(cfg)
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    device = resolve_device(cfg.device)
    module = load_module(checkpoint, device, cfg.get("precision"))
    class_names = module.class_names or [str(i) for i in range(module.num_classes)]
    rows, row_labels = contexts_from_config(cfg.contexts, class_names)
    sampler = module.make_sampler(cfg.get("sampler"))

    n = cfg.n
    contexts = rows.repeat_interleave(n, dim=0) if rows is not None else None
    generator = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn((len(row_labels) * n, *module.image_shape), generator=generator)
    frame_every = frame_stride(sampler, cfg.animation_every) if cfg.animate else None
    samples = draw_samples(
        module, sampler, contexts, noise, cfg.guidance_scale, generator, cfg.use_ema, frame_every
    )

    title = sampler_title(sampler, samples.seconds, cfg.guidance_scale, cfg.use_ema)
    grid = labelled_grid(samples.images, row_labels, title=title, scale=cfg.scale)
    gif_frames = animation_frames(samples, row_labels, sampler, cfg.scale) if cfg.animate else []
    saved_contexts = contexts if contexts is not None else torch.zeros(len(noise), len(class_names))
    image_labels = [label for label in row_labels for _ in range(n)]

    output_dir = Path(output_dir)
    arrays = save_arrays(
        output_dir / ARRAYS_FILE, samples.images, saved_contexts, image_labels, class_names
    )
    images = save_image(grid, output_dir / IMAGES_FILE)
    animation = save_gif(gif_frames, output_dir / ANIMATION_FILE) if cfg.animate else None
    written = ", ".join(str(path) for path in (images, arrays, animation) if path is not None)
    log.info(
        "%r on %s: %d NFE, %.2f s for %d images (%d contexts x %d) from %s -> %s",
        sampler,
        device,
        sampler.nfe,
        samples.seconds,
        len(noise),
        len(row_labels),
        n,
        checkpoint,
        written,
    )
    return {
        "checkpoint": checkpoint,
        "sampler": repr(sampler),
        "nfe": sampler.nfe,
        "seconds": samples.seconds,
        "images": images,
        "arrays": arrays,
        "animation": animation,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
@input_errors_end_the_command("diffusion-sample")
def main(cfg: DictConfig) -> None:
    run_sampling(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
