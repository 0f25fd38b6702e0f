"""Grids, captions and atomic writes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from diffusion_lab.utils.images import (
    atomic_write,
    labelled_grid,
    save_gif,
    save_image,
    side_by_side,
    to_uint8,
)


def test_to_uint8_maps_the_model_range_to_bytes():
    values = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5)
    assert to_uint8(values).flatten().tolist() == [0, 0, 128, 255, 255]


def test_labelled_grid_has_one_row_per_label_and_fits_its_title():
    images = torch.zeros(6, 1, 4, 4)
    grid = labelled_grid(images, ["a", "b", "c"], title="a long title that is wider than the grid")
    assert grid.mode == "RGB"
    plain = labelled_grid(images, ["a", "b", "c"])
    assert grid.width > plain.width  # widened for the title
    with pytest.raises(ValueError, match="5 images do not split into 3 labelled rows"):
        labelled_grid(torch.zeros(5, 1, 4, 4), ["a", "b", "c"])


def test_side_by_side_and_gif(tmp_path):
    panel = Image.new("RGB", (10, 8))
    picture = side_by_side([panel, panel], caption="x")
    assert picture.width == 10 + 12 + 10 and picture.height > 8
    path = save_gif([panel, picture.resize((10, 8))], tmp_path / "a.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 2
    with pytest.raises(ValueError, match="at least one frame"):
        save_gif([], tmp_path / "b.gif")


def test_failed_writes_leave_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "x.png") as stream:
        stream.write(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    saved = save_image(Image.new("RGB", (3, 3)), tmp_path / "ok.png")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.png"]
    assert saved.stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600
