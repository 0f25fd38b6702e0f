"""Preemption: SIGTERM/SIGUSR1 to a real training process saves a loadable checkpoint within
seconds (also while it draws its grid), writes interrupted.json, logs the resume command and exits
with 128 + signal; a multirun stops after the interrupted job; checkpoints are written atomically."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from test_train import TINY

from diffusion_lab.callbacks import Preempted, Preemption, check_stop
from diffusion_lab.callbacks import preemption as preemption_module
from diffusion_lab.runs.checkpoints import AtomicCheckpointIO, check_checkpoint

# every step's loss on disk at once (the marker the tests wait for), many short steps per epoch
WATCHED = [
    "logger=csv",
    "trainer.log_every_n_steps=1",
    "+logger.csv.flush_logs_every_n_steps=1",
    "data.batch_size=8",
    "callbacks.samples.animate=false",
]


def start_train(run_dir: Path, *overrides: str, multirun: bool = False) -> subprocess.Popen:
    """diffusion-train in the background; its output goes to <run_dir>.out."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "diffusion_lab.train", *(["-m"] if multirun else [])]
    command += [f"hydra.{'sweep' if multirun else 'run'}.dir={run_dir}", *TINY, *overrides]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    output = open(run_dir.with_suffix(".out"), "w")  # noqa: SIM115 (closed by the OS at exit)
    return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)


def output_of(run_dir: Path) -> str:
    return run_dir.with_suffix(".out").read_text()


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    """The CSV logger's rows so far (empty before its first flush)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def steps_logged(run_dir: Path) -> int:
    return sum(1 for row in csv_rows(run_dir) if row.get("train/loss_step"))


def validated(run_dir: Path) -> bool:
    return any(row.get("val/loss") for row in csv_rows(run_dir))


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended (status {process.returncode}) before the marker")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the marker did not appear in time")
        time.sleep(0.01)


def interrupt(
    process: subprocess.Popen, run_dir: Path, signum: int = signal.SIGTERM
) -> tuple[float, dict]:
    """Send ``signum``; return (seconds until the checkpoint file was on disk, interrupted.json)."""
    marker = run_dir / "interrupted.json"
    sent = time.time()
    process.send_signal(signum)
    while not marker.is_file():
        assert process.poll() is None or marker.is_file(), output_of(run_dir)[-3000:]
        assert time.time() - sent < 60, "no checkpoint within 60 s of the signal"
        time.sleep(0.005)
    record = json.loads(marker.read_text())
    seconds = Path(record["checkpoint"]).stat().st_mtime - sent
    assert process.wait(timeout=120) == 128 + signum, output_of(run_dir)[-3000:]
    return seconds, record


def check_interrupted(run_dir: Path, record: dict, signame: str = "SIGTERM") -> None:
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert record["signal"] == signame and record["checkpoint"] == str(checkpoint)
    check_checkpoint(checkpoint)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["global_step"] == record["global_step"] > 0
    assert f"diffusion-train resume={run_dir}" in output_of(run_dir)
    assert not list((run_dir / "checkpoints").glob(".*")), "a temporary file was left behind"


def test_sigterm_mid_epoch_saves_a_checkpoint_within_seconds(tmp_path):
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *WATCHED, "trainer.max_epochs=3")
    wait_until(lambda: steps_logged(run_dir) >= 10, process)
    seconds, record = interrupt(process, run_dir)
    check_interrupted(run_dir, record)
    assert record["epoch"] == 0 and record["global_step"] >= 10
    assert seconds < 5, f"checkpoint on disk {seconds:.2f} s after SIGTERM"
    print(f"SIGTERM mid-epoch: checkpoint on disk {seconds:.3f} s after the signal")


def test_sigusr1_while_drawing_the_grid_stops_the_chain(tmp_path):
    """A DDPM grid of T = 1000 steps takes seconds: the chain checks the flag between steps."""
    run_dir = tmp_path / "run"
    slow_grid = ["scheduler.timesteps=1000", "callbacks.samples.every_n_epochs=1"]
    process = start_train(run_dir, *WATCHED, *slow_grid, "+trainer.limit_train_batches=5")
    wait_until(lambda: validated(run_dir), process)
    seconds, record = interrupt(process, run_dir, signal.SIGUSR1)
    check_interrupted(run_dir, record, "SIGUSR1")
    assert "SIGUSR1, stopped while sampling" in output_of(run_dir)
    assert record["global_step"] == 5
    assert not (run_dir / "samples" / "epoch_000.png").exists()
    assert seconds < 5, f"checkpoint on disk {seconds:.2f} s after SIGUSR1 during the grid"
    print(f"SIGUSR1 during the grid: checkpoint on disk {seconds:.3f} s after the signal")


def test_multirun_stops_after_the_interrupted_job(tmp_path):
    sweep = tmp_path / "sweep"
    process = start_train(sweep, *WATCHED, "trainer.max_epochs=3", "seed=1,2,3", multirun=True)
    wait_until(lambda: steps_logged(sweep / "0") >= 5, process)
    _, record = interrupt(process, sweep / "0")
    assert record["global_step"] >= 5
    assert not (sweep / "1").exists(), "the sweep went on to the next job"
    # the stopped sweep's summary is written by the stopped job itself, which shows as interrupted
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and ",interrupted," in summary[1], summary


def test_check_stop_raises_only_after_a_signal(monkeypatch):
    monkeypatch.setattr(preemption_module, "_received", {})
    check_stop(1, 10, 5, None)
    monkeypatch.setattr(preemption_module, "_received", {"signum": signal.SIGTERM, "time": 0.0})
    with pytest.raises(Preempted) as stopped:
        check_stop(2, 10, 4, None)
    assert stopped.value.code == 143


def test_under_slurm_requeue_the_requeue_signal_saves_the_hpc_checkpoint(tmp_path, monkeypatch):
    """Lightning's requeue handler (a save inside the signal handler, wherever training is) is
    replaced: the signal is honoured at the next safe point, into Lightning's hpc_ckpt_N.ckpt,
    which a requeued job restores by itself (tests/test_slurm_cluster.py runs it on SLURM)."""
    import lightning as L

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setattr(preemption_module, "_received", {})
    before = signal.getsignal(signal.SIGUSR1)
    trainer = L.Trainer(
        plugins=[SLURMEnvironment(auto_requeue=True)],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
    )
    callback = Preemption()
    callback.setup(trainer, None, "fit")
    callback.on_train_start(trainer, None)
    try:
        assert signal.getsignal(signal.SIGUSR1) is preemption_module._record
        preemption_module._record(signal.SIGUSR1, None)
        assert callback.checkpoint_path == tmp_path / "hpc_ckpt_1.ckpt"
        preemption_module._received.update(signum=signal.SIGTERM)  # a cancel, not a requeue
        assert callback.checkpoint_path == tmp_path / "checkpoints" / "last.ckpt"
    finally:
        callback.teardown(trainer, None, "fit")
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def torn_save(obj, stream):  # a kill halfway through writing
        stream.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # readable as any file the user writes


def test_sigterm_during_the_quality_panels_final_ddpm_stops_within_seconds(tmp_path, monkeypatch):
    """The final DDPM panel (T = 1000 steps here) checks the flag between steps as the grids do:
    the checkpoint and interrupted.json are written and the process exits with 143 at once
    (main@ed5278f sampled on to the end of the chain, and scored it, before stopping)."""
    run_dir = tmp_path / "run"
    quality = [
        "scheduler.timesteps=1000",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=5",
        "callbacks.samples=null",  # no grid: the panel's DDPM is the only T-step chain
        "callbacks.quality.n_per_class=4",
        "callbacks.quality.kid_subset_size=10",
        "callbacks.quality.classifier.epochs=1",
        # the final DDPM panel is off by default
        "callbacks.quality.final_samplers.ddpm={_target_: diffusion_lab.diffusion.DDPMSampler, "
        "_partial_: true}",
    ]
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # each log line on disk as it is written
    process = start_train(run_dir, *WATCHED, *quality)
    # the panel's DDIM (5 steps) is scored and logged; its DDPM (1000 steps) starts right after
    wait_until(lambda: "study][INFO] - ddim: 5 NFE" in output_of(run_dir), process)
    sent = time.time()
    seconds, record = interrupt(process, run_dir)
    exited = time.time() - sent
    check_interrupted(run_dir, record)
    assert record["global_step"] == 5 and record["epoch"] == 0
    assert "SIGTERM, stopped while sampling" in output_of(run_dir)
    assert "- ddpm: 1000 NFE" not in output_of(run_dir), "the DDPM chain ran to its end"
    assert seconds < 5, f"checkpoint on disk {seconds:.2f} s after SIGTERM during the panel"
    assert exited < 10, f"the process exited {exited:.2f} s after SIGTERM"
    print(f"SIGTERM during the final DDPM panel: checkpoint {seconds:.3f} s, exit {exited:.3f} s")
