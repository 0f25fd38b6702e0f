"""diffusion-edit: edit an image with a checkpoint: SDEdit (a class swap, a blend), or RePaint
inpainting with a mask.

diffusion-edit ckpt_path=outputs/train/runs/<datetime> image=12 strength=0.6 'contexts=[7]'
diffusion-edit ckpt_path=<run> image=hero.png 'contexts=[food,"hero:1,food:0.6"]' n=4
diffusion-edit ckpt_path=<run> image=12 mask=mask.png strength=1 resamplings=5

Into the Hydra run folder: ``edit.png`` (one row per target context: the original, with a mask
the pixels kept, then ``n`` edits; titled with the method, strength, t0, sampler, NFE and seconds)
and ``edit.npz`` (``images`` (N, H, W, C) uint8, the edits; ``original`` (H, W, C) uint8;
``contexts`` (N, K) float32; ``labels`` (N,); ``class_names`` (K,); ``strength``; ``start_t``;
with a mask, ``keep`` (H, W) float32, RePaint's m, 1 = kept). All input is checked before
editing, and files are written (atomically) only after editing succeeded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from diffusion_lab import CONFIG_DIR
from diffusion_lab.diffusion.editing import repaint_path
from diffusion_lab.image_edits import (
    before_after_grid,
    edit_title,
    load_data_set,
    read_image,
    read_mask,
    tracked_edit,
)
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.runs.checkpoints import load_module, resolve_checkpoint, resolve_device
from diffusion_lab.sample import contexts_from_config
from diffusion_lab.utils.checks import InputError, is_number, require_int, require_number
from diffusion_lab.utils.cli import input_errors_end_the_command
from diffusion_lab.utils.images import save_image, to_uint8
from diffusion_lab.utils.io import atomic_write

log = logging.getLogger(__name__)

IMAGES_FILE = "edit.png"
ARRAYS_FILE = "edit.npz"


def check_options(cfg: DictConfig) -> None:
    """n and scale >= 1, 0 < strength <= 1, guidance_scale >= 0, an int seed, RePaint's jumps."""
    for name in ("n", "scale"):
        require_int(name, cfg[name], minimum=1)
    strength = cfg.strength
    if not (is_number(strength) and 0 < strength <= 1):
        raise InputError(
            f"strength must be in (0, 1] (the share of the T timesteps to redo), got {strength!r}"
        )
    require_number("guidance_scale", cfg.guidance_scale, minimum=0)
    require_int("seed", cfg.seed)
    repaint_path(1, cfg.jump_length, cfg.resamplings)  # refuses jumps that are no integers >= 1


def source_image(value: Any, module: DiffusionModule, checkpoint: Path) -> tuple[torch.Tensor, str]:
    """The ``image`` field: an index into the run's data set (an int, or digits naming no
    file), else an image file. Returns (1, C, H, W) in [-1, 1] and a label."""
    if isinstance(value, bool) or value is None:
        raise InputError(f"image must be a PNG file or a data-set index, got {value!r}")
    if isinstance(value, int) or (str(value).isdigit() and not Path(str(value)).exists()):
        return load_data_set(module, checkpoint).image(int(value))
    path = Path(str(value))
    return read_image(path, module.image_shape), path.name


def save_arrays(path: Path, arrays: dict[str, Any]) -> Path:
    with atomic_write(path) as stream:
        np.savez(stream, **arrays)
    return path


def run_edit(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Check the input, edit, then write edit.png and edit.npz into ``output_dir``.

    Returns the checkpoint, the sampler's repr, the NFE, the seconds and the paths written."""
    check_options(cfg)
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    device = resolve_device(cfg.device)
    module = load_module(checkpoint, device, cfg.get("precision"))
    class_names = module.class_names or [str(i) for i in range(module.num_classes)]
    rows, row_labels = contexts_from_config(cfg.contexts, class_names)
    image, image_label = source_image(cfg.image, module, checkpoint)
    mask = read_mask(cfg.mask, module.image_shape) if cfg.mask is not None else None
    sampler = module.make_sampler(cfg.get("sampler"))

    n = cfg.n
    contexts = rows.repeat_interleave(n, dim=0) if rows is not None else None
    generator = torch.Generator().manual_seed(cfg.seed)
    edits = tracked_edit(
        module, sampler, image, contexts, cfg.strength, mask,
        guidance_scale=cfg.guidance_scale, generator=generator, use_ema=cfg.use_ema,
        jump_length=cfg.jump_length, resamplings=cfg.resamplings, count=n,
    )  # fmt: skip

    title = edit_title(sampler, edits, cfg.strength, mask is not None)
    labels = [f"{image_label} -> {label}" for label in row_labels]
    grid = before_after_grid(image, edits.images, labels, title, mask, cfg.scale)
    saved_contexts = contexts if contexts is not None else torch.zeros(n, len(class_names))
    arrays = {
        "images": to_uint8(edits.images).permute(0, 2, 3, 1).numpy(),
        "original": to_uint8(image)[0].permute(1, 2, 0).numpy(),
        "contexts": saved_contexts.float().numpy(),
        "labels": np.array([label for label in row_labels for _ in range(n)], dtype=str),
        "class_names": np.array(class_names, dtype=str),
        "strength": np.float32(cfg.strength),
        "start_t": np.int64(edits.start_t),
    }
    if mask is not None:
        arrays["keep"] = mask[0, 0].numpy().astype(np.float32)

    output_dir = Path(output_dir)
    arrays_path = save_arrays(output_dir / ARRAYS_FILE, arrays)
    images_path = save_image(grid, output_dir / IMAGES_FILE)
    log.info(
        "%s with %r on %s from %s: %d images -> %s, %s",
        title,
        sampler,
        device,
        checkpoint,
        len(edits.images),
        images_path,
        arrays_path,
    )
    return {
        "checkpoint": checkpoint,
        "sampler": repr(sampler),
        "nfe": edits.nfe,
        "seconds": edits.seconds,
        "start_t": edits.start_t,
        "images": images_path,
        "arrays": arrays_path,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="edit")
@input_errors_end_the_command("diffusion-edit")
def main(cfg: DictConfig) -> None:
    run_edit(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
