"""diffusion-edit on a checkpoint trained once for real (conftest's tiny_run): a class swap from a
data-set index, inpainting from PNG files, the same seed giving the same edits in and out of
process; bad input fails with its one line before any output file exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from diffusion_lab import CONFIG_DIR
from diffusion_lab.data import DigitsSource
from diffusion_lab.edit import run_edit

OUTPUT_FILES = ("edit.png", "edit.npz")
TINY_DDIM = "sampler.steps=5"  # the tiny checkpoint has T = 20


def run_edit_command(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, writing into run_dir."""
    command = [sys.executable, "-m", "diffusion_lab.edit", f"hydra.run.dir={run_dir}"]
    command += ["device=cpu", *overrides]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=600)


def check_ok(result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0:
        raise AssertionError(f"diffusion-edit failed:\n{result.stdout[-3000:]}\n{result.stderr}")


def compose_edit(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("edit", overrides=["device=cpu", TINY_DDIM, *overrides])


def load_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "edit.npz") as arrays:
        return dict(arrays)


def assert_no_output(run_dir: Path) -> None:
    for name in OUTPUT_FILES:
        assert not (run_dir / name).exists(), name
    assert not list(run_dir.glob(".edit-*")), "a temporary file was left behind"


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The digits as the run's source loads them: uint8 (N, H, W, 1)."""
    return DigitsSource(16).load().images.permute(0, 2, 3, 1).numpy()


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_class_swap_of_a_data_set_image_writes_grid_and_arrays(tiny_run, digits, tmp_path):
    run_dir = tmp_path / "run"
    overrides = (f"ckpt_path={tiny_run}", "image=12", "strength=0.6", 'contexts=[7,"1:1,3:0.5"]')
    result = run_edit_command(run_dir, *overrides, TINY_DDIM, "n=3", "seed=4")
    check_ok(result)
    # t0 = round(0.6 * 20) = 12: the DDIM grid 20, 16, 12, 8, 4 from 12 down is 3 steps
    assert "SDEdit, strength 0.6 (t0=12), DDIM, 3 NFE" in result.stdout
    arrays = load_arrays(run_dir)
    assert arrays["images"].shape == (6, 16, 16, 1) and arrays["images"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["original"], digits[12])
    assert arrays["labels"].tolist() == ["7"] * 3 + ["1:1,3:0.5"] * 3
    np.testing.assert_array_equal(arrays["contexts"][0], np.eye(10, dtype=np.float32)[7])
    assert arrays["contexts"][3][[1, 3]].tolist() == [1.0, 0.5]
    assert int(arrays["start_t"]) == 12 and float(arrays["strength"]) == pytest.approx(0.6)
    assert "keep" not in arrays
    edits = arrays["images"].astype(int)
    assert np.abs(edits[0] - edits[1]).max() > 0  # different noise per edit
    with Image.open(run_dir / "edit.png") as grid:
        assert grid.width > (1 + 3) * 16 * 3 and grid.height > 2 * 16 * 3

    # the same seed in this process gives the same edits
    same = run_edit(compose_edit(*overrides, "n=3", "seed=4"), tmp_path / "again")
    np.testing.assert_array_equal(load_arrays(same["arrays"].parent)["images"], arrays["images"])
    other = run_edit(compose_edit(*overrides, "n=3", "seed=5"), tmp_path / "other")
    assert not np.array_equal(load_arrays(other["arrays"].parent)["images"], arrays["images"])


def test_inpainting_from_png_files_keeps_the_known_pixels(tiny_run, digits, tmp_path):
    image = save_png(tmp_path / "digit.png", digits[5][..., 0])
    redraw = np.zeros((16, 16), dtype=np.uint8)
    redraw[8:] = 255  # white: redraw the bottom half
    mask = save_png(tmp_path / "mask.png", redraw)
    run_dir = tmp_path / "run"
    result = run_edit_command(
        run_dir,
        f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
        f"image={image}",
        f"mask={mask}",
        "strength=1",
        "contexts=[3]",
        "resamplings=2",
        "jump_length=2",
        TINY_DDIM,
        "n=2",
    )
    check_ok(result)
    # 5 steps, jumps of 2 at 1 and 3 steps from the end, each redone once: 5 + 2 * 2 calls
    assert "RePaint, strength 1 (t0=20), DDIM, 9 NFE" in result.stdout
    arrays = load_arrays(run_dir)
    np.testing.assert_array_equal(arrays["keep"], (redraw == 0).astype(np.float32))
    for edit in arrays["images"]:
        np.testing.assert_array_equal(edit[:8], digits[5][:8])
    assert np.abs(arrays["images"][:, 8:].astype(int) - digits[5][8:]).max() > 0


def grey(size: int) -> np.ndarray:
    return np.full((size, size), 128, dtype=np.uint8)


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("strength=0", ValueError, r"strength must be in \(0, 1\] .* got 0"),
        ("strength=1.5", ValueError, r"strength must be in \(0, 1\] .* got 1\.5"),
        ("strength=abc", ValueError, r"strength must be in \(0, 1\] .*got 'abc'"),
        ("image=1797", ValueError, r"image index 1797 is out of range; .* 1797 images: 0\.\.1796"),
        ("image=<missing>", FileNotFoundError, r"image '.*missing\.png' does not exist"),
        ("image=<big>", ValueError, r"image '.*big\.png' is 32x32 with 1 channel\(s\); this model "),
        ("image=<rgb>", ValueError, r"is 16x16 with 3 channel\(s\); this model takes 16x16 images, grey"),
        ("image=<text>", ValueError, r"image '.*text\.png' is not an image PIL can read"),
        ("mask=<big>", ValueError, r"mask '.*big\.png' is 32x32; it must have the image's size, 16x16"),
        ("mask=<missing>", FileNotFoundError, r"mask '.*missing\.png' does not exist"),
        ("resamplings=0", ValueError, r"RePaint resamplings must be an integer >= 1, got 0"),
        ("contexts=[dragon]", ValueError, r"unknown class 'dragon'"),
    ],
)  # fmt: skip
def test_bad_input_fails_before_any_output(tiny_run, tmp_path, override, error, message):
    files = {
        "missing": tmp_path / "missing.png",
        "big": save_png(tmp_path / "big.png", grey(32)),
        "rgb": save_png(tmp_path / "rgb.png", np.zeros((16, 16, 3), dtype=np.uint8)),
        "text": tmp_path / "text.png",
    }
    files["text"].write_text("not a picture")
    for name, path in files.items():
        override = override.replace(f"<{name}>", str(path))
    image = "image=3" if not override.startswith("image=") else override
    cfg = compose_edit(f"ckpt_path={tiny_run}", image, override)
    run_dir = tmp_path / "run"
    with pytest.raises(error, match=message):
        run_edit(cfg, run_dir)
    assert_no_output(run_dir)


def test_the_command_fails_with_the_message_and_no_files(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    result = run_edit_command(run_dir, f"ckpt_path={tiny_run}", "image=3", "strength=0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "diffusion-edit: error: strength must be in (0, 1] (the share of the T timesteps to "
        "redo), got 0"
    ]
    assert_no_output(run_dir)
