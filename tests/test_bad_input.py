"""Bad input gets one clear line naming the value and what is accepted, before the run folder gets
any file (Hydra's own .hydra/ and log aside): data files, checkpoints, run folders, numbers."""

from __future__ import annotations

import importlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import SPRITES_IMAGES_FILE, SPRITES_LABELS_FILE
from hydra.core.hydra_config import HydraConfig
from PIL import Image
from test_train import TINY, compose_train

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


# --- through the real commands: one line on stderr, status 2, no traceback, nothing written ----
# Every case runs the command's real entry point (its @hydra.main function, with the command line
# in sys.argv) inside this process: importing torch and Lightning costs a subprocess ~15 s on two
# cores, the check itself ~1 s. One case per command also runs as its own process
# (test_each_command_refuses_in_its_own_process), for the exit status the shell sees.
ENTRY_POINTS = {
    "diffusion-train": ("diffusion_lab.train", "train.log"),
    "diffusion-sample": ("diffusion_lab.sample", "sample.log"),
    "diffusion-eval": ("diffusion_lab.evaluate", "evaluate.log"),
}


def command_line(command: str, run_dir: Path, *overrides: str) -> list[str]:
    """The arguments after the command's name: its run folder, the tiny net for training."""
    tiny = [*TINY, "logger=csv"] if command == "diffusion-train" else []
    return [f"hydra.run.dir={run_dir}", *tiny, *overrides]


def run_command(command: str, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``command`` (a Hydra entry point, as its console script runs it) writing into run_dir."""
    module, _ = ENTRY_POINTS[command]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    argv = [sys.executable, "-m", module, *command_line(command, run_dir, *overrides)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def run_in_process(
    command: str, run_dir: Path, capfd: pytest.CaptureFixture, *overrides: str
) -> SimpleNamespace:
    """``command``'s entry point called here with the command line in sys.argv, as its console
    script calls it; returns what a subprocess would: its status, stdout and stderr."""
    module, _ = ENTRY_POINTS[command]
    main = importlib.import_module(module).main
    capfd.readouterr()
    argv, handlers, level = sys.argv, logging.root.handlers[:], logging.root.level
    sys.argv = [command, *command_line(command, run_dir, *overrides)]
    try:
        main()
        returncode = 0
    except SystemExit as stop:
        returncode = stop.code
    finally:
        sys.argv = argv
        HydraConfig.instance().cfg = None
        logging.root.handlers[:] = handlers  # not Hydra's, bound to this test's captured streams
        logging.root.setLevel(level)
    output = capfd.readouterr()
    return SimpleNamespace(returncode=returncode, stdout=output.out, stderr=output.err)


def assert_refused(
    result: subprocess.CompletedProcess, command: str, message: str, run_dir: Path
) -> None:
    """Exactly one line on stderr, ``<command>: error: <message...>``, status 2, no traceback
    anywhere, and the run folder holds only Hydra's .hydra/ and log."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr[-3000:]
    assert result.stderr.startswith(f"{command}: error: "), result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stdout and "Error executing job" not in result.stdout
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", ENTRY_POINTS[command][1]]


def corrupt_sprites(root: Path) -> Path:
    (root / SPRITES_LABELS_FILE).write_bytes(b"this is not an npy file" * 10)
    return root


def empty_class_folder(root: Path) -> Path:
    (root / "bird").mkdir()
    return root


def non_image_in_a_class_folder(root: Path) -> Path:
    (root / "cat" / "notes.txt").write_text("a cat")
    return root


def failed_run(tmp_path: Path) -> Path:
    (tmp_path / "failed_run" / ".hydra").mkdir(parents=True)
    return tmp_path / "failed_run"


# each case: (overrides from the inputs (tmp, cut, sprites, folder), the message)
# one case per row of the README's "Common errors" table (the number row: one number per command)
TRAIN_CASES = {
    "truncated checkpoint": (
        lambda i: [f"ckpt_path={i.cut}"],
        "cut.ckpt' is not a diffusion-lab checkpoint: torch.load failed (",
    ),
    "no checkpoint in the run folder": (
        lambda i: [f"ckpt_path={failed_run(i.tmp)}"],
        "no checkpoint in the run folder '",
    ),
    "resume of a folder that is not a run": (
        lambda i: ["resume=/nowhere"],
        "resume=/nowhere: no run folder with .hydra/overrides.yaml and checkpoints/last.ckpt",
    ),
    "unreadable sprites file": (
        lambda i: ["data=sprites", f"data.source.root={corrupt_sprites(i.sprites)}"],
        "sprite_labels_nc_1788_16x16.npy: not a readable .npy array, truncated or corrupt",
    ),
    "sprites folder missing": (
        lambda i: ["data=sprites", "data.source.root=/nonexistent"],
        "sprites source: missing ",
    ),
    "empty class folder": (
        lambda i: [
            "data=folder",
            "data.num_classes=3",
            f"data.source.root={empty_class_folder(i.folder)}",
        ],
        "holds no images in class subfolders ['bird']",
    ),
    "not an image file": (
        lambda i: [
            "data=folder",
            "data.num_classes=2",
            f"data.source.root={non_image_in_a_class_folder(i.folder)}",
        ],
        "notes.txt: not an image file (suffix '.txt')",
    ),
    "impossible number": (
        lambda i: ["data.batch_size=0"],
        "data.batch_size must be an integer >= 1, got 0",
    ),
    "impossible sampler steps": (
        lambda i: ["sampler.steps=0"],
        "DDIM steps (T=20) must be an integer >= 1 and <= 20, got 0",
    ),
    "metric never logged: no validation": (
        lambda i: ["callbacks.quality=null", "++trainer.limit_val_batches=0"],
        "optimized_metric='val/loss' is never logged: trainer.limit_val_batches=0 runs no "
        "validation",
    ),
    "metric never logged: no quality panel": (
        lambda i: ["callbacks.quality=null", "optimized_metric=quality/ddim/fid"],
        "optimized_metric='quality/ddim/fid' is never logged: the quality panel",
    ),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_diffusion_train_refuses_bad_input_with_one_line(
    tmp_path, capfd, cut_checkpoint, sprites_root, folder_root, case
):
    overrides, message = TRAIN_CASES[case]
    inputs = SimpleNamespace(
        tmp=tmp_path, cut=cut_checkpoint, sprites=sprites_root, folder=folder_root
    )
    run_dir = tmp_path / "run"
    result = run_in_process("diffusion-train", run_dir, capfd, *overrides(inputs))
    assert_refused(result, "diffusion-train", message, run_dir)
    assert not (run_dir / "result.json").exists()


@pytest.mark.parametrize(
    ("command", "overrides", "message"),
    [
        ("diffusion-sample", ["n=0"], "n must be an integer >= 1, got 0"),
        ("diffusion-sample", ["guidance_scale=-1"], "guidance_scale must be a finite number >= 0"),
        ("diffusion-sample", ["ckpt_path={cut}"], "is not a diffusion-lab checkpoint: torch.load"),
        ("diffusion-eval", ["ckpt_path={cut}"], "is not a diffusion-lab checkpoint: torch.load"),
        ("diffusion-eval", ["n_per_class=0"], "n_per_class must be an integer >= 1, got 0"),
    ],
)
def test_sample_and_eval_refuse_bad_input_with_one_line(
    tmp_path, capfd, cut_checkpoint, command, overrides, message
):
    run_dir = tmp_path / "run"
    given = (o.format(cut=cut_checkpoint) for o in overrides)
    result = run_in_process(command, run_dir, capfd, *given)
    assert_refused(result, command, message, run_dir)


@pytest.mark.parametrize(
    ("command", "override", "message"),
    [
        ("diffusion-train", "data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
        ("diffusion-sample", "n=0", "n must be an integer >= 1, got 0"),
        ("diffusion-eval", "n_per_class=0", "n_per_class must be an integer >= 1, got 0"),
    ],
)
def test_each_command_refuses_in_its_own_process(tmp_path, command, override, message):
    """What the shell sees: status 2 and the one line, from a process of its own."""
    run_dir = tmp_path / "run"
    assert_refused(run_command(command, run_dir, override), command, message, run_dir)


def test_diffusion_summary_refuses_a_missing_folder_with_one_line(tmp_path):
    command = [sys.executable, "-m", "diffusion_lab.sweeps.cli", str(tmp_path / "nowhere")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"diffusion-summary: error: {tmp_path / 'nowhere'} is not a folder; pass a multirun "
        "folder, e.g. outputs/train/multiruns/<datetime>"
    ]
    assert result.stdout == ""


def test_an_old_checkpoint_name_with_equals_is_hydras_own_one_line_error(tmp_path, capfd):
    """The table's first row comes from Hydra's override parser, before any of our code runs:
    Hydra's own message and status (1), also without a traceback."""
    run_dir = tmp_path / "run"
    bad = "ckpt_path=run/best-epoch=016.ckpt"
    result = run_in_process("diffusion-sample", run_dir, capfd, bad)
    assert result.returncode == 1
    assert "mismatched input '='" in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_an_error_that_is_not_bad_input_keeps_its_traceback(tmp_path, monkeypatch):
    """A ValueError that is not an InputError (a bug, a library's error) is not turned into a
    one-line message."""
    from diffusion_lab.utils.cli import input_errors_end_the_command

    @input_errors_end_the_command("diffusion-x")
    def task() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        task()


def test_an_input_error_ends_the_command_with_status_2(capsys):
    from diffusion_lab.utils.checks import require_int
    from diffusion_lab.utils.cli import input_errors_end_the_command

    @input_errors_end_the_command("diffusion-x")
    def task() -> None:
        require_int("n", 0, minimum=1)

    with pytest.raises(SystemExit) as stop:
        task()
    assert stop.value.code == 2
    assert capsys.readouterr().err == "diffusion-x: error: n must be an integer >= 1, got 0\n"


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
