"""Paths users copy just work: checkpoint names without `=` parse as unquoted Hydra overrides,
and ckpt_path takes a file, a run folder, `last` or `best` (the newest run's)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from test_sample import check_ok, run_sample
from test_train import run_train

from diffusion_lab.runs.checkpoints import resolve_checkpoint

QUICK = [
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks.samples.animate=false",
    "~callbacks.quality",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_run: Path) -> Path:
    """A copy of conftest's tiny_run (a real one-epoch run) where diffusion-train puts runs."""
    run_dir = tmp_path_factory.mktemp("paths") / "outputs" / "train" / "runs" / "2026-01-01_00-00"
    shutil.copytree(tiny_run, run_dir)
    return run_dir


def make_run(runs: Path, name: str, files: list[str], age: float) -> Path:
    """A fake run folder whose checkpoint files were written ``age`` seconds ago."""
    folder = runs / name / "checkpoints"
    folder.mkdir(parents=True)
    for file in files:
        (folder / file).touch()
        stamp = time.time() - age
        os.utime(folder / file, (stamp, stamp))
    return runs / name


def test_the_written_best_name_has_no_equals_sign_and_parses_unquoted(trained_run):
    (best,) = (trained_run / "checkpoints").glob("best-*.ckpt")
    assert "=" not in best.name
    assert best.name.startswith("best-epoch000-val_loss") and best.name.endswith(".ckpt")
    assert best.parent == trained_run / "checkpoints"  # "/" of val/loss made no sub-folder
    (override,) = OverridesParser.create().parse_overrides([f"ckpt_path={best}"])
    assert override.value() == str(best)


def test_sample_takes_the_exact_written_file_unquoted(trained_run, tmp_path):
    (best,) = (trained_run / "checkpoints").glob("best-*.ckpt")
    result = run_sample(tmp_path / "s", f"ckpt_path={best}", "n=1", "sampler.steps=5")
    check_ok(result)
    assert (tmp_path / "s" / "samples.png").is_file()


def test_old_names_with_equals_still_load_quoted_and_through_the_folder(trained_run, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(trained_run / "checkpoints", run / "checkpoints")
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    old = best.with_name("best-epoch=000-val_loss=0.5000.ckpt")
    best.rename(old)
    assert resolve_checkpoint(run) == old
    with pytest.raises(OverrideParseException, match="mismatched input '=' expecting <EOF>"):
        OverridesParser.create().parse_overrides([f"ckpt_path={old}"])
    (override,) = OverridesParser.create().parse_overrides([f'ckpt_path="{old}"'])
    assert override.value() == str(old)
    check_ok(run_sample(tmp_path / "s", f'ckpt_path="{old}"', "n=1", "sampler.steps=5"))


def test_last_and_best_pick_the_newest_run_that_has_one(tmp_path, caplog):
    runs = tmp_path / "outputs" / "train" / "runs"
    older = make_run(runs, "a", ["last.ckpt", "best-epoch001-val_loss0.1.ckpt"], age=100)
    newer = make_run(runs, "b", ["last.ckpt"], age=10)
    make_run(runs, "c", [], age=0)  # newest, but no checkpoint (a failed run)
    with caplog.at_level("INFO"):
        assert resolve_checkpoint("last", runs_dir=runs) == newer / "checkpoints" / "last.ckpt"
    assert "picked" in caplog.text and str(newer) in caplog.text
    best = older / "checkpoints" / "best-epoch001-val_loss0.1.ckpt"
    assert resolve_checkpoint("best", runs_dir=runs) == best
    assert resolve_checkpoint(older, prefer="last") == older / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(newer, prefer="best") == newer / "checkpoints" / "last.ckpt"


def test_last_without_any_run_names_the_folder_and_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no run under .*last\.ckpt"):
        resolve_checkpoint("last", runs_dir=tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="accepted: a .ckpt file, a training run folder"):
        resolve_checkpoint(tmp_path / "missing.ckpt")


def test_train_ckpt_path_last_continues_from_the_newest_run(trained_run, tmp_path):
    """`ckpt_path=last` run where outputs/train/runs is the newest run's folder."""
    root = trained_run.parents[3]
    result = run_train(
        tmp_path / "next", *QUICK[1:], "trainer.max_epochs=2", "ckpt_path=last", cwd=root
    )
    assert "picked" in result.stderr + result.stdout
    assert (tmp_path / "next" / "checkpoints" / "last.ckpt").is_file()
