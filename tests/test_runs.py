"""Finding runs, checkpoints and sweep jobs in outputs/."""

from __future__ import annotations

import os

import pytest

from diffusion_lab.runs.layout import newest_checkpoint, newest_sweep, repo_root, sweep_jobs


def touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_newest_checkpoint_is_the_last_written(tmp_path):
    runs = tmp_path / "outputs" / "train" / "runs"
    touch(runs / "b" / "checkpoints" / "last.ckpt", 100)
    newer = touch(runs / "a" / "checkpoints" / "last.ckpt", 200)
    best = touch(runs / "b" / "checkpoints" / "best-epoch001-val_loss0.1.ckpt", 50)
    assert newest_checkpoint(runs) == newer
    assert newest_checkpoint(runs, kind="best") == best
    with pytest.raises(FileNotFoundError, match="has a checkpoints/last.ckpt; train one first"):
        newest_checkpoint(tmp_path / "elsewhere")


def test_sweep_jobs_come_in_job_number_order(tmp_path):
    sweep = tmp_path / "outputs" / "train" / "multiruns" / "2026-01-01"
    touch(sweep / "multirun.yaml", 100)
    for job in ("10", "2", "0"):
        touch(sweep / job / ".hydra" / "overrides.yaml", 100)
    assert newest_sweep(tmp_path) == sweep
    assert [job.name for job in sweep_jobs(sweep)] == ["0", "2", "10"]
    with pytest.raises(FileNotFoundError, match="holds no job folders"):
        sweep_jobs(tmp_path)


def test_repo_root_walks_up_to_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert repo_root(tmp_path / "notebooks") == tmp_path
