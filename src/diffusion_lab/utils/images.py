"""Turn image batches into labelled grids, side-by-side panels and GIFs (PIL), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from diffusion_lab.utils.io import atomic_write

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
LINE_HEIGHT = 14


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (B, C, H, W) -> uint8 [0, 255], clamped, on the CPU."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_image(images: torch.Tensor, per_row: int, scale: int = 1, padding: int = 1) -> Image.Image:
    """A grid of [-1, 1] images (B, C, H, W), ``per_row`` to a row, upscaled by ``scale``."""
    grid = make_grid(to_uint8(images), nrow=per_row, padding=padding, pad_value=255)
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy()).convert("RGB")
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return picture


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def labelled_grid(
    images: torch.Tensor,
    row_labels: Sequence[str],
    title: str = "",
    scale: int = 3,
    padding: int = 1,
) -> Image.Image:
    """One row per label: images (R * N, C, H, W) in row-major order, labels on the left, a title
    above."""
    rows = len(row_labels)
    if rows == 0 or images.shape[0] % rows:
        raise ValueError(f"{images.shape[0]} images do not split into {rows} labelled rows")
    per_row = images.shape[0] // rows
    grid = grid_image(images, per_row, scale, padding)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(grid)
    margin = max([_text_width(measure, label, font) for label in row_labels] + [0]) + 6
    top = LINE_HEIGHT + 4 if title else 0
    width = max(grid.width + margin, margin + _text_width(measure, title, font) + 4)
    canvas = Image.new("RGB", (width, grid.height + top), BACKGROUND)
    canvas.paste(grid, (margin, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((margin, 2), title, fill=INK, font=font)
    row_height = grid.height / rows
    for index, label in enumerate(row_labels):
        y = top + (index + 0.5) * row_height - LINE_HEIGHT / 2
        draw.text((2, y), label, fill=INK, font=font)
    return canvas


def side_by_side(panels: Sequence[Image.Image], caption: str = "", gap: int = 12) -> Image.Image:
    """Panels left to right on a white canvas, with a caption line below."""
    width = sum(panel.width for panel in panels) + gap * (len(panels) - 1)
    height = max(panel.height for panel in panels)
    bottom = LINE_HEIGHT + 6 if caption else 0
    canvas = Image.new("RGB", (width, height + bottom), BACKGROUND)
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    if caption:
        ImageDraw.Draw(canvas).text(
            (2, height + 3), caption, fill=INK, font=ImageFont.load_default()
        )
    return canvas


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG (or any PIL format, by suffix) atomically."""
    path = Path(path)
    with atomic_write(path) as stream:
        image.save(stream, format=Image.registered_extensions()[path.suffix.lower()])
    return path


def save_gif(frames: Sequence[Image.Image], path: str | Path, frame_ms: int = 100) -> Path:
    """An animated GIF, written atomically, that loops forever and holds its last frame longer."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 3]
    with atomic_write(path) as stream:
        frames[0].save(
            stream,
            format="GIF",
            save_all=True,
            append_images=list(frames[1:]),
            duration=durations,
            loop=0,
        )
    return Path(path)
