"""diffusion-sample on a checkpoint trained once for real: the files and their shapes, contexts by
name, index, mix and vector, seeds, both samplers, GIFs, run folders; bad input fails before any
output file exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from diffusion_lab import CONFIG_DIR
from diffusion_lab.diffusion import DDIMSampler, DDPMSampler, make_schedule
from diffusion_lab.runs.checkpoints import resolve_checkpoint
from diffusion_lab.sample import contexts_from_config, frame_stride, run_sampling

OUTPUT_FILES = ("samples.png", "samples.npz", "denoising.gif")
DIGITS = [str(i) for i in range(10)]
SPRITES = ["hero", "non-hero", "food", "spell", "side-facing"]
TINY_DDIM = "sampler.steps=5"  # the tiny checkpoint has T = 20 timesteps, DDIM at most 20 steps


@pytest.fixture(scope="module")
def trained_run(tiny_run: Path) -> Path:
    """A run folder with best-*.ckpt and last.ckpt from one short real epoch on the digits
    (conftest's tiny_run, shared with other test files; only read here)."""
    return tiny_run


@pytest.fixture(scope="module")
def checkpoint(trained_run) -> Path:
    return trained_run / "checkpoints" / "last.ckpt"


def run_sample(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, writing into run_dir."""
    command = [sys.executable, "-m", "diffusion_lab.sample", f"hydra.run.dir={run_dir}"]
    command += ["device=cpu", *overrides]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=600)


def check_ok(result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0:
        raise AssertionError(f"diffusion-sample failed:\n{result.stdout[-3000:]}\n{result.stderr}")


def compose_sample(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("sample", overrides=["device=cpu", *overrides])


def load_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "samples.npz") as arrays:
        return dict(arrays)


def assert_no_output(run_dir: Path) -> None:
    for name in OUTPUT_FILES:
        assert not (run_dir / name).exists(), name
    assert not list(run_dir.glob(".samples-*")), "a temporary file was left behind"


# --- in-process: the pieces ---------------------------------------------------------------
def test_run_folder_resolves_to_its_one_best_else_last(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").touch()
    assert resolve_checkpoint(tmp_path / "run") == folder / "last.ckpt"
    (folder / "best-epoch=003-val_loss=0.1000.ckpt").touch()
    assert resolve_checkpoint(tmp_path / "run") == folder / "best-epoch=003-val_loss=0.1000.ckpt"
    (folder / "best-epoch=007-val_loss=0.0900.ckpt").touch()
    assert resolve_checkpoint(tmp_path / "run") == folder / "last.ckpt"
    assert resolve_checkpoint(folder / "last.ckpt") == folder / "last.ckpt"
    (folder / "last.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match=r"found 2\) and for .*last\.ckpt"):
        resolve_checkpoint(tmp_path / "run")


def test_contexts_by_name_index_mix_vector_all_and_null():
    spec = OmegaConf.create({"c": ["hero", 2, "hero:1,food:0.6", [1, 0, 0.6, 0, 0]]}).c
    rows, labels = contexts_from_config(spec, SPRITES)
    assert labels == ["hero", "2", "hero:1,food:0.6", "[1, 0, 0.6, 0, 0]"]
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [1, 0, 0.6, 0, 0], [1, 0, 0.6, 0, 0]]
    )
    torch.testing.assert_close(rows, expected.float())
    rows, labels = contexts_from_config("all", SPRITES)
    assert labels == SPRITES and torch.equal(rows, torch.eye(5))
    assert contexts_from_config(None, SPRITES) == (None, ["unconditional"])
    rows, labels = contexts_from_config(7, DIGITS)  # contexts=7 reaches us as an int
    assert labels == ["7"] and rows.argmax().item() == 7


def test_animation_takes_a_frame_every_so_many_timesteps():
    schedule = make_schedule("linear", 500)
    assert frame_stride(DDPMSampler(schedule), 20) == 20  # the course: every 20th DDPM step
    assert frame_stride(DDIMSampler(schedule, steps=25), 20) == 1  # DDIM: every step
    assert frame_stride(DDIMSampler(schedule, steps=50), 20) == 2
    assert frame_stride(DDIMSampler(schedule, steps=5), 20) == 1


# --- the real command ---------------------------------------------------------------------
def test_named_and_mixed_contexts_write_grid_arrays_and_gif(checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    overrides = (
        f"ckpt_path={checkpoint}",
        TINY_DDIM,
        'contexts=[3,"7:1,1:0.5"]',
        "n=3",
        "guidance_scale=2",
        "seed=1",
    )
    result = run_sample(run_dir, *overrides, "animate=true", "animation_every=5")
    check_ok(result)
    assert "DDIMSampler(T=20, steps=5, eta=1.0, clip_denoised=True) on cpu: 5 NFE" in result.stdout
    assert f"-> {run_dir / 'samples.png'}, {run_dir / 'samples.npz'}, " in result.stdout
    arrays = load_arrays(run_dir)
    assert arrays["images"].shape == (6, 16, 16, 1) and arrays["images"].dtype == np.uint8
    assert arrays["contexts"].shape == (6, 10) and arrays["contexts"].dtype == np.float32
    mix = np.zeros(10, dtype=np.float32)
    mix[[7, 1]] = [1.0, 0.5]
    np.testing.assert_array_equal(arrays["contexts"][0], np.eye(10, dtype=np.float32)[3])
    np.testing.assert_array_equal(arrays["contexts"][5], mix)
    assert arrays["labels"].tolist() == ["3"] * 3 + ["7:1,1:0.5"] * 3
    assert arrays["class_names"].tolist() == DIGITS
    with Image.open(run_dir / "samples.png") as grid:
        assert grid.width > 3 * 16 * 3 and grid.height > 2 * 16 * 3  # 2 rows of 3, scaled by 3
    with Image.open(run_dir / "denoising.gif") as gif:
        assert gif.n_frames == 1 + 5  # x_T, then every DDIM step (5 timesteps apart = every)

    # the same seed in this process gives the same images, also without the animation
    same = run_sampling(
        compose_sample(*overrides),
        tmp_path / "again",
    )
    assert same["animation"] is None and same["nfe"] == 5
    np.testing.assert_array_equal(load_arrays(tmp_path / "again")["images"], arrays["images"])


def test_run_folder_all_classes_with_ddpm(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    result = run_sample(run_dir, f"ckpt_path={trained_run}", "sampler=ddpm", "n=2")
    check_ok(result)
    # one network call per timestep: NFE = T; the run folder's best checkpoint
    assert "DDPMSampler(T=20, variance='beta', clip_denoised=True) on cpu: 20 NFE" in result.stdout
    assert f"from {trained_run / 'checkpoints'}/best-epoch000-val_loss" in result.stdout
    arrays = load_arrays(run_dir)
    assert arrays["images"].shape == (20, 16, 16, 1)
    assert arrays["labels"].tolist() == [name for name in DIGITS for _ in range(2)]
    np.testing.assert_array_equal(
        arrays["contexts"], np.eye(10, dtype=np.float32).repeat(2, axis=0)
    )
    assert (run_dir / "samples.png").is_file() and not (run_dir / "denoising.gif").exists()


def test_seed_weights_and_null_context_change_the_images(checkpoint, tmp_path):
    def images(name: str, *overrides: str) -> dict[str, np.ndarray]:
        cfg = compose_sample(f"ckpt_path={checkpoint}", "n=2", *overrides)
        run_sampling(cfg, tmp_path / name)
        return load_arrays(tmp_path / name)

    first = images("first", TINY_DDIM, "contexts=[4]")
    again = images("again", TINY_DDIM, "contexts=[4]")
    other_seed = images("other_seed", TINY_DDIM, "contexts=[4]", "seed=5")
    raw_net = images("raw_net", TINY_DDIM, "contexts=[4]", "use_ema=false")
    null = images("null", "contexts=null", "~sampler")  # the checkpoint's own DDIM
    np.testing.assert_array_equal(first["images"], again["images"])
    assert not np.array_equal(first["images"], other_seed["images"])
    assert not np.array_equal(first["images"], raw_net["images"])
    assert null["labels"].tolist() == ["unconditional"] * 2
    np.testing.assert_array_equal(null["contexts"], np.zeros((2, 10), dtype=np.float32))


# --- bad input ----------------------------------------------------------------------------
@pytest.fixture
def bad_paths(tmp_path, checkpoint) -> dict[str, Path]:
    """A missing file, a run folder with no checkpoints, a text file and a foreign torch file."""
    (tmp_path / "empty_run").mkdir()
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, foreign)
    return {
        "checkpoint": checkpoint,
        "missing": tmp_path / "missing.ckpt",
        "empty_run": tmp_path / "empty_run",
        "text": text,
        "foreign": foreign,
    }


@pytest.mark.parametrize(
    ("ckpt", "override", "error", "message"),
    [
        ("checkpoint", "contexts=[dragon]", ValueError, r"unknown class 'dragon'; known .*0, 1, 2"),
        ("checkpoint", 'contexts=["3:lots"]', ValueError, r"weight 'lots' of class '3'"),
        (
            "checkpoint",
            'contexts=["3:nan"]',
            ValueError,
            r"weight 'nan' of class '3' is not finite",
        ),
        ("checkpoint", "contexts=[[1,0,0.5]]", ValueError, r"has 3 weights; .* have 10"),
        ("checkpoint", "contexts=[[1,0,0,0,0,0,0,0,0,x]]", ValueError, r"must be a number"),
        ("checkpoint", "contexts=[]", ValueError, r"names no context"),
        ("checkpoint", "n=0", ValueError, r"n must be an integer >= 1, got 0"),
        ("checkpoint", "guidance_scale=-1", ValueError, r"guidance_scale must be .* got -1"),
        ("checkpoint", "animation_every=0", ValueError, r"animation_every must be"),
        (
            "checkpoint",
            "sampler.steps=50",
            ValueError,
            r"DDIM steps \(T=20\) must be an integer >= 1 and <= 20",
        ),
        ("checkpoint", "device=tpu", ValueError, r"unknown device 'tpu'; accepted"),
        ("missing", "n=1", FileNotFoundError, r"missing\.ckpt' does not exist"),
        ("empty_run", "n=1", FileNotFoundError, r"looked for one .*empty_run/checkpoints"),
        ("text", "n=1", ValueError, r"notes\.ckpt' is not a diffusion-lab checkpoint: torch"),
        ("foreign", "n=1", ValueError, r"foreign\.ckpt' is not a .* no 'diffusion_lab' entry"),
    ],
)
def test_bad_input_fails_before_any_output(bad_paths, tmp_path, ckpt, override, error, message):
    cfg = compose_sample(f"ckpt_path={bad_paths[ckpt]}", TINY_DDIM, override, "animate=true")
    with pytest.raises(error, match=message):
        run_sampling(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_sampler_is_hydras_error_naming_the_options(tmp_path):
    with pytest.raises(MissingConfigException, match=r"(?s)sampler/nosuch.*ddim.*ddpm.*euler"):
        compose_sample(f"ckpt_path={tmp_path / 'never_read.ckpt'}", "sampler=nosuch")


def test_the_command_fails_with_the_message_and_no_files(checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    result = run_sample(run_dir, f"ckpt_path={checkpoint}", TINY_DDIM, "contexts=[3,dragon]")
    assert result.returncode != 0
    assert "unknown class 'dragon'; known classes: 0, 1, 2" in result.stderr
    assert_no_output(run_dir)
