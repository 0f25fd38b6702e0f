"""Editing images with a loaded model: read the inputs, run SDEdit or RePaint, lay out the result.

Shared by diffusion-edit and the web app. The inputs:

- the image: a PNG (or any file PIL reads) of the model's size and channels (grey: mode L or LA;
  colour: RGB or RGBA; a palette image counts as colour), or an integer index into the data set
  the run was trained on (as its source loads it, before the train/val split);
- the mask, optional: a file of the image's size, read as grey, in diffusers' convention: white =
  redraw these pixels, black = keep them (grey levels in between blend). RePaint's m (1 = keep)
  is 1 - mask / 255.

Images are float (B, C, H, W) in [-1, 1] as everywhere in the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from PIL import Image, UnidentifiedImageError

from diffusion_lab.diffusion import Sampler
from diffusion_lab.diffusion.editing import (
    inpaint,
    repaint_nfe,
    sdedit,
    start_timestep,
)
from diffusion_lab.diffusion.samplers import StepCallback
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.utils.checks import InputError, MissingInputError, require_int
from diffusion_lab.utils.images import labelled_grid
from diffusion_lab.utils.progress import track
from diffusion_lab.utils.timing import timed

CHANNELS_OF_MODE = {"L": 1, "LA": 1, "RGB": 3, "RGBA": 3, "P": 3}
MASK_GREY = 0.0  # the redrawn pixels in the "masked" column of the grid: mid grey in [-1, 1]


# --- input ------------------------------------------------------------------------------------
def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise MissingInputError(f"{what} {str(path)!r} does not exist; give a PNG file")
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{what} {str(path)!r} is not an image PIL can read ({error})") from None


def image_tensor(picture: Image.Image, shape: Sequence[int], name: str) -> torch.Tensor:
    """A PIL image as (1, C, H, W) in [-1, 1], refused unless it has the model's (C, H, W)."""
    channels, height, width = shape
    mode = picture.mode
    found = CHANNELS_OF_MODE.get(mode)
    kind = {1: "grey (mode L)", 3: "colour (mode RGB)"}
    if found != channels or picture.size != (width, height):
        what = f"{found} channel(s)" if found else f"mode {mode}"
        raise InputError(
            f"{name} is {picture.width}x{picture.height} with {what}; this model takes "
            f"{width}x{height} images, {kind.get(channels, f'{channels} channels')}"
        )
    picture = picture.convert("L" if channels == 1 else "RGB")
    array = np.asarray(picture, dtype=np.float32).reshape(height, width, channels)
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1.0


def read_image(path: str | Path, shape: Sequence[int]) -> torch.Tensor:
    """The image file at ``path`` as (1, C, H, W) in [-1, 1]; ``shape`` is the model's (C, H, W)."""
    path = Path(path).expanduser()
    return image_tensor(_open(path, "image"), shape, f"image {str(path)!r}")


def mask_tensor(picture: Image.Image, shape: Sequence[int], name: str) -> torch.Tensor:
    """RePaint's keep-mask (1, 1, H, W) in [0, 1] from a grey picture (white = redraw)."""
    _, height, width = shape
    if picture.size != (width, height):
        raise InputError(
            f"{name} is {picture.width}x{picture.height}; it must have the image's size, "
            f"{width}x{height} (white = redraw, black = keep)"
        )
    redraw = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy(1.0 - redraw)[None, None]


def read_mask(path: str | Path, shape: Sequence[int]) -> torch.Tensor:
    """The mask file at ``path`` as RePaint's keep-mask (1, 1, H, W) (1 = keep)."""
    path = Path(path).expanduser()
    return mask_tensor(_open(path, "mask"), shape, f"mask {str(path)!r}")


@dataclass
class DataSet:
    """A run's data set as its source loads it: uint8 images (N, C, H, W), contexts (N, K)."""

    images: torch.Tensor
    contexts: torch.Tensor
    class_names: list[str]
    origin: str

    def image(self, index: int) -> tuple[torch.Tensor, str]:
        """Image ``index`` as (1, C, H, W) in [-1, 1] and a label naming it and its class."""
        require_int("a data-set index", index)
        if not 0 <= index < len(self.images):
            raise InputError(
                f"image index {index} is out of range; the run's data set has "
                f"{len(self.images)} images: 0..{len(self.images) - 1}"
            )
        label = self.class_names[int(self.contexts[index].argmax())]
        return self.images[index : index + 1].float() / 127.5 - 1.0, f"#{index} ({label})"


def load_data_set(module: DiffusionModule, checkpoint: Path) -> DataSet:
    """The data set the module was trained on (its ``data`` hparam)."""
    config = module.hparams.get("data")
    origin = f"from the checkpoint {checkpoint}" if config else "not stored in the checkpoint"
    if not config or "source" not in config:
        raise InputError(
            f"the data set of {str(checkpoint)!r} is {origin}; give image=<a PNG> instead of an index"
        )
    loaded = instantiate(config["source"]).load()
    return DataSet(loaded.images, loaded.contexts, list(loaded.class_names), origin)


# --- the edit ---------------------------------------------------------------------------------
@dataclass
class Edits:
    """What one edit made: the images (N, C, H, W) in [-1, 1] on the CPU, the network calls, the
    wall seconds, the start timestep t0."""

    images: torch.Tensor
    nfe: int
    seconds: float
    start_t: int


def edit_images(
    module: DiffusionModule,
    sampler: Sampler,
    image: torch.Tensor,
    contexts: torch.Tensor | None,
    strength: float,
    mask: torch.Tensor | None = None,
    guidance_scale: float = 0.0,
    generator: torch.Generator | None = None,
    use_ema: bool = True,
    jump_length: int = 10,
    resamplings: int = 1,
    on_step: StepCallback | None = None,
    count: int = 1,
) -> Edits:
    """Edit one ``image`` (1, C, H, W) into len(contexts) images (contexts (N, K), or None:
    ``count`` unconditional edits): SDEdit from t0 = round(strength T), or RePaint from t0 with ``mask``
    (1, 1, H, W) (1 = keep). The starting noise and every step's noise come from ``generator``."""
    t0 = start_timestep(strength, module.schedule.timesteps)
    batch = count if contexts is None else len(contexts)
    device = module.device
    images = image.to(device).expand(batch, -1, -1, -1).contiguous()
    noise = torch.randn(images.shape, generator=generator).to(device)
    if contexts is not None:
        contexts = contexts.to(device)

    def run() -> torch.Tensor:
        with module.sampling_net(use_ema) as net:
            if mask is None:
                return sdedit(
                    sampler, net, images, strength, contexts, guidance_scale, generator, noise,
                    on_step,
                )  # fmt: skip
            return inpaint(
                sampler, net, images, mask.to(device), contexts, guidance_scale, generator, noise,
                strength, jump_length, resamplings, on_step,
            )  # fmt: skip

    edited, seconds = timed(run, device)
    if mask is None:
        nfe = len(sampler.timesteps_from(t0))
    else:
        nfe = repaint_nfe(sampler, t0, jump_length, resamplings)
    return Edits(edited.float().cpu(), nfe, seconds, t0)


def tracked_edit(module: DiffusionModule, sampler: Sampler, *args, **options) -> Edits:
    """:func:`edit_images` with a progress bar (or log lines) over its steps."""
    name = type(sampler).__name__.removesuffix("Sampler")
    with track(f"{name} edit") as progress:
        return edit_images(module, sampler, *args, on_step=progress.on_step, **options)


# --- output -----------------------------------------------------------------------------------
def masked_view(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image with its redrawn pixels (mask 0) in mid grey: what the model keeps."""
    return mask * image + (1.0 - mask) * MASK_GREY


def before_after_grid(
    image: torch.Tensor,
    edits: torch.Tensor,
    row_labels: Sequence[str],
    title: str,
    mask: torch.Tensor | None = None,
    scale: int = 3,
) -> Image.Image:
    """One row per target context: the original, (the kept pixels,) then that row's edits.

    image (1, C, H, W); edits (R * n, C, H, W) row-major, n per row."""
    rows = len(row_labels)
    per_row = len(edits) // rows
    before = [image[0]] + ([masked_view(image, mask)[0]] if mask is not None else [])
    cells = []
    for row in range(rows):
        cells += before + list(edits[row * per_row : (row + 1) * per_row])
    return labelled_grid(torch.stack(cells), row_labels, title=title, scale=scale)


def edit_title(sampler: Sampler, edits: Edits, strength: float, inpainting: bool) -> str:
    """E.g. "SDEdit, strength 0.6 (t0=300), DDIM, 15 NFE, 0.21 s"."""
    kind = "RePaint" if inpainting else "SDEdit"
    name = type(sampler).__name__.removesuffix("Sampler")
    return (
        f"{kind}, strength {strength:g} (t0={edits.start_t}), {name}, {edits.nfe} NFE, "
        f"{edits.seconds:.2f} s"
    )
