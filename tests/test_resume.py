"""Exact resume: a run stopped by SIGTERM mid-epoch (or while drawing its grid) and resumed with
`diffusion-train resume=<run folder>` ends, on CPU in deterministic mode, with the same weights,
EMA, optimizer state and logged loss curve, bit for bit, as a run that was never interrupted; in
the same folder, with the same W&B run id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_preemption import WATCHED, csv_rows, interrupt, start_train, steps_logged, wait_until
from test_train import run_train

from diffusion_lab.runs.resume import merge_overrides

# T = 300 makes each DDPM grid take a few seconds (a grid to interrupt); 12 short steps per epoch
EXACT = [
    *WATCHED,
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=12",
    "+trainer.limit_val_batches=2",
    "scheduler.timesteps=300",
    "callbacks.samples.every_n_epochs=1",
    "callbacks.samples.samples_per_class=1",
]
CURVES = ("train/loss_step", "train/loss_epoch", "val/loss")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "whole"
    run_train(run_dir, *EXACT)
    return run_dir


def curves(run_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Every logged (step, value) of the loss curves, as the CSV holds them (exact strings)."""
    rows = csv_rows(run_dir)
    return {key: [(row["step"], row[key]) for row in rows if row.get(key)] for key in CURVES}


def assert_same_training_state(resumed: Path, whole: Path) -> None:
    a = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in b["state_dict"].items():  # the net and its EMA
        assert torch.equal(a["state_dict"][key], value), key
    for state_a, state_b in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()
    ):
        for key in state_b:
            assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])), key
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert curves(resumed) == curves(whole)
    assert len(curves(whole)["train/loss_step"]) == 24 and len(curves(whole)["val/loss"]) == 2


def resume(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`diffusion-train resume=<run_dir>`: nothing else, the run's overrides come from its folder."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "diffusion_lab.train", f"resume={run_dir}", *overrides]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, cwd=run_dir.parent
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def test_sigterm_mid_epoch_then_resume_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *EXACT)
    wait_until(lambda: steps_logged(run_dir) >= 5, process)
    seconds, record = interrupt(process, run_dir)
    assert record["epoch"] == 0 and 5 <= record["global_step"] < 12, record
    print(f"mid-epoch: step {record['global_step']}, checkpoint {seconds:.3f} s after SIGTERM")
    resume(run_dir)
    assert not (run_dir / "interrupted.json").exists()
    assert_same_training_state(run_dir, uninterrupted)
    assert (run_dir / "samples" / "epoch_001.png").is_file()
    assert len(list((run_dir / ".hydra").glob("resume-*/overrides.yaml"))) == 1


def test_sigterm_during_the_grid_then_resume_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *EXACT)
    wait_until(lambda: any(row.get("val/loss") for row in csv_rows(run_dir)), process)
    seconds, record = interrupt(process, run_dir, signal.SIGTERM)
    assert record["global_step"] == 12 and record["epoch"] == 0, record
    assert not (run_dir / "samples" / "epoch_000.png").exists()
    print(f"during the grid: checkpoint {seconds:.3f} s after SIGTERM")
    resume(run_dir)
    assert (run_dir / "samples" / "epoch_000.png").is_file()
    assert_same_training_state(run_dir, uninterrupted)


def test_resume_last_continues_the_newest_run_in_place_with_its_wandb_run(tmp_path):
    """resume=last from the working directory; a further override (more epochs) applies on top;
    the W&B run id stays; Hydra's record of the original command stays as it was."""
    run_dir = tmp_path / "outputs" / "train" / "runs" / "2026-01-01_00-00-00-000000"
    quick = [
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
    ]
    run_train(run_dir, *quick, "callbacks.samples.animate=false")
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    original = (run_dir / ".hydra" / "overrides.yaml").read_text()
    result = resume(run_dir, "trainer.max_epochs=2")
    assert "resuming the run in" in result.stdout + result.stderr
    assert (run_dir / "wandb_run_id").read_text().strip() == run_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == original
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 4)
    assert (run_dir / "samples" / "epoch_001.png").is_file()
    assert not list(tmp_path.glob("outputs/train/runs/2026-0[2-9]*"))  # no other run folder


def test_merge_overrides_puts_the_new_ones_on_top():
    original = ["data=sprites", "+trainer.limit_train_batches=5", "ckpt_path=/x.ckpt", "seed=1"]
    current = ["resume=/run", "trainer.limit_train_batches=7", "seed=2"]
    assert merge_overrides(original, current) == [
        "data=sprites",
        "resume=/run",
        "+trainer.limit_train_batches=7",
        "seed=2",
    ]


def test_resuming_a_run_that_switched_the_quality_panel_off_uses_that_runs_config(tmp_path):
    """One config per command: the resumed run's (quality panel off, so optimized_metric is
    val/loss), not the resuming command's own defaults (panel on: quality/ddim/fid), for the
    training, result.json and the value diffusion-train returns (which used to exit 1 here)."""
    import json

    run_dir = tmp_path / "run"
    short = ["+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "logger=csv"]
    run_train(run_dir, "trainer.max_epochs=1", "callbacks.quality=null", *short)
    resume(run_dir, "trainer.max_epochs=2")  # asserts status 0
    written = json.loads((run_dir / "result.json").read_text())
    assert written["status"] == "ok" and written["epochs"] == 2
    assert written["optimized_metric"] == "val/loss"
    assert written["value"] == written["metrics"]["val/loss"] > 0
    assert not any(key.startswith("quality/") for key in written["metrics"])
