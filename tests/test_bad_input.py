"""Bad input gets one clear line naming the value and what is accepted, before the run folder gets
any file (Hydra's own .hydra/ and log aside): data files, checkpoints, run folders, numbers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SPRITES_IMAGES_FILE, SPRITES_LABELS_FILE
from hydra.core.hydra_config import HydraConfig
from PIL import Image
from test_train import compose_train, run_train

from diffusion_lab.data import ImageFolderSource, SpritesSource
from diffusion_lab.runs.checkpoints import check_checkpoint, resolve_checkpoint
from diffusion_lab.train import train


def train_in_process(tmp_path: Path, *overrides: str) -> Path:
    """train() on the composed config with the run folder tmp_path/run; returns that folder."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = compose_train(run_dir, "logger=csv", "model.n_feat=8", *overrides)
    try:
        train(cfg)
    finally:
        HydraConfig.instance().cfg = None
    return run_dir


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
        (
            "module.optimizer.lr=-0.001",
            "module.optimizer.lr must be a finite number > 0, got -0.001",
        ),
        ("module.optimizer.lr=nan", "module.optimizer.lr must be a finite number > 0, got nan"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1 (or -1: no limit"),
        ("guidance_scale=-1", "guidance_scale must be a finite number >= 0, got -1"),
    ],
)
def test_impossible_numbers_stop_training_before_any_file(tmp_path, override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train_in_process(tmp_path, override)
    assert list((tmp_path / "run").iterdir()) == []


def test_the_command_prints_one_line_and_leaves_only_hydras_files(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, "module.optimizer.lr=-1e-3", "logger=csv", check=False)
    assert result.returncode != 0
    message = "ValueError: module.optimizer.lr must be a finite number > 0, got -0.001"
    assert message in result.stderr.splitlines()  # the traceback's last line: the whole story
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "train.log"]


# --- data files -----------------------------------------------------------------------------
def cut_short(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("mmap", [True, False])
def test_truncated_sprites_npy_is_named(sprites_root, mmap):
    cut_short(sprites_root / SPRITES_IMAGES_FILE, 3000)
    with pytest.raises(ValueError, match=r"sprites_1788_16x16\.npy: not a readable .npy array, "):
        SpritesSource(sprites_root, mmap=mmap).load()


def test_corrupt_sprites_npy_is_named_and_stops_training_before_any_file(sprites_root, tmp_path):
    (sprites_root / SPRITES_LABELS_FILE).write_bytes(b"this is not an npy file" * 10)
    with pytest.raises(ValueError, match=r"sprite_labels_nc_1788_16x16\.npy: not a readable"):
        train_in_process(tmp_path, "data=sprites", f"data.source.root={sprites_root}")
    assert list((tmp_path / "run").iterdir()) == []


def test_empty_class_folder_is_named(folder_root):
    (folder_root / "bird").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images in class subfolders \['bird'\]"):
        ImageFolderSource(folder_root, image_size=8).load()


def test_non_image_file_in_a_class_folder_is_named(folder_root):
    (folder_root / "cat" / "notes.txt").write_text("a cat")
    with pytest.raises(ValueError, match=r"notes\.txt: not an image file \(suffix '.txt'\); .*png"):
        ImageFolderSource(folder_root, image_size=8).load()


def test_broken_image_in_a_class_folder_is_named(folder_root):
    (folder_root / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken\.png: not a readable image"):
        ImageFolderSource(folder_root, image_size=8).load()
    Image.new("RGB", (4, 4)).save(folder_root / "cat" / "broken.png")
    assert len(ImageFolderSource(folder_root, image_size=8).load().images) == 6


# --- checkpoints ----------------------------------------------------------------------------
@pytest.fixture
def cut_checkpoint(tmp_path) -> Path:
    path = tmp_path / "cut.ckpt"
    torch.save({"diffusion_lab": {}, "state_dict": {"w": torch.zeros(1000)}}, path)
    cut_short(path, 1500)
    return path


def test_a_checkpoint_cut_short_is_named(cut_checkpoint):
    with pytest.raises(ValueError, match=r"cut\.ckpt' is not a diffusion-lab checkpoint: torch"):
        check_checkpoint(cut_checkpoint)


@pytest.mark.parametrize("key", ["ckpt_path"])
def test_train_from_a_bad_checkpoint_stops_before_any_file(tmp_path, cut_checkpoint, key):
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(cut_checkpoint.read_bytes())
    with pytest.raises(ValueError, match="the file is cut short or not a checkpoint"):
        train_in_process(tmp_path, f"{key}={run}")
    assert list((tmp_path / "run").iterdir()) == []


def test_resume_of_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"resume=/nowhere: no run folder with .*accepted"):
        train_in_process(tmp_path, "resume=/nowhere")
    assert list((tmp_path / "run").iterdir()) == []


def test_a_run_folder_without_checkpoint_is_named(tmp_path):
    (tmp_path / "failed_run" / ".hydra").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in the run folder .*failed_run"):
        resolve_checkpoint(tmp_path / "failed_run", prefer="last")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in the run folder"):
        train_in_process(tmp_path, f"ckpt_path={tmp_path / 'failed_run'}")


def test_sample_refuses_a_checkpoint_cut_short(cut_checkpoint, tmp_path):
    from test_sample import compose_sample

    from diffusion_lab.sample import run_sampling

    cfg = compose_sample(f"ckpt_path={cut_checkpoint}")
    with pytest.raises(ValueError, match="cut short or not a checkpoint"):
        run_sampling(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sprites_fixture_is_intact_without_tampering(sprites_root):
    """The fixtures the tests above corrupt load fine as written."""
    assert SpritesSource(sprites_root).load().images.shape == (40, 3, 16, 16)
    assert np.load(sprites_root / SPRITES_LABELS_FILE).shape == (40, 5)
