"""hydra/launcher=parallel: jobs side by side, each with its device or its share of the cores."""

from __future__ import annotations

import csv
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_summary import ONE_EPOCH
from test_train import TINY

from diffusion_lab.runs.layout import INTERRUPTED_FILE, RESULT_FILE
from diffusion_lab.sweeps.launchers import available_cores
from diffusion_lab.sweeps.parallel import Assignment, JobDevices, assign_devices, stop_file

CHEAP = ["logger=csv", "~callbacks.quality", "callbacks.progress=null"]


def test_job_slots_get_gpus_round_robin_and_an_equal_share_of_the_cores():
    gpus = ["0", "1", "2", "3"]
    assert [assign_devices(k, 4, gpus, 16).gpus for k in range(4)] == [
        ("0",),
        ("1",),
        ("2",),
        ("3",),
    ]
    # more slots than GPUs: k mod the GPU count
    assert [assign_devices(k, 6, ["0", "1"], 12).gpus for k in range(6)] == [("0",), ("1",)] * 3
    # a list the user gave, kept in its order; several GPUs per job
    assert assign_devices(1, 2, ["5", "2"], 8) == Assignment(gpus=("2",), threads=4)
    assert assign_devices(1, 2, gpus, 8, gpus_per_job=2).gpus == ("2", "3")
    assert assign_devices(0, 3, [], 8) == Assignment(gpus=(), threads=2)  # CPU: 8 // 3
    assert assign_devices(2, 4, [], 2).threads == 1  # never less than one thread


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 2, [], 2), r"slot must be in 0..n_jobs-1 = 0..1, got 2"),
        ((0, 0, [], 2), r"n_jobs must be an integer >= 1, got 0"),
        ((0, 1, [], 0), r"cores must be an integer >= 1"),
        ((0, 1, ["0"], 2, 2), r"gpus_per_job=2 is more than the 1 visible GPUs"),
    ],
)
def test_impossible_assignments_are_refused_by_name(args, message):
    with pytest.raises(ValueError, match=message):
        assign_devices(*args)


def sweep_command(sweep: Path, *overrides: str, quality: bool = False) -> list[str]:
    command = [sys.executable, "-m", "diffusion_lab.train", "-m", f"hydra.sweep.dir={sweep}"]
    cheap = [override for override in CHEAP if quality is False or "quality" not in override]
    return [
        *command,
        *TINY,
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        *cheap,
        *overrides,
    ]


ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as stream:
        return list(csv.DictReader(stream))


def test_two_jobs_run_at_once_with_half_the_cores_each_and_a_failed_one_is_recorded(tmp_path):
    sweep = tmp_path / "sweep"
    # job 1 fails after its training: the metric it should rank by was never logged
    # long enough (3 epochs of 2 batches, a quality panel each) that the two overlap even when the
    # second worker starts a few seconds after the first on an idle machine
    three_epochs = [o.replace("max_epochs=1", "max_epochs=3") for o in ONE_EPOCH]
    command = sweep_command(
        sweep, *three_epochs, "optimized_metric=val/loss,quality/none/fid", quality=True
    )
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode != 0  # a failed job fails the sweep, after its batch
    ok, failed = (json.loads((sweep / job / RESULT_FILE).read_text()) for job in ("0", "1"))
    assert ok["status"] == "ok" and failed["status"] == "failed", result.stderr[-5000:]
    assert "quality/none/fid" in failed["error"]
    # side by side: each started before the other finished
    times = [
        (
            datetime.datetime.fromisoformat(r["started"]),
            datetime.datetime.fromisoformat(r["finished"]),
        )
        for r in (ok, failed)
    ]
    assert times[0][0] < times[1][1] and times[1][0] < times[0][1], times
    expected_threads = max(1, available_cores() // 2)
    assert ok["threads"] == failed["threads"] == expected_threads
    assert ok["gpus"] is None  # trainer.accelerator=cpu: no GPU assigned
    summary = rows(sweep)
    assert [row["status"] for row in summary] == ["ok", "failed"]
    assert "quality/none/fid" in summary[1]["error"]
    # the quality panel in a sweep job: the sampler group's DDIM, not the final DDPM-T, and its
    # cost in the summary
    assert "quality/ddim/fid" in ok["metrics"] and "quality/ddpm/fid" not in ok["metrics"]
    assert float(summary[0]["quality/seconds"]) == ok["metrics"]["quality/seconds"] > 0


def wait_until(condition, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-5000:]
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_sigterm_to_the_sweep_reaches_every_running_job(tmp_path):
    sweep = tmp_path / "sweep"
    # three jobs on two slots: the third must never start after the stop
    command = sweep_command(sweep, "trainer.max_epochs=50", "seed=0,1,2")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    both_training = lambda: all(  # noqa: E731
        (sweep / job / "checkpoints" / "last.ckpt").is_file() for job in ("0", "1")
    )
    wait_until(both_training, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-5000:]
    for job in ("0", "1"):
        interrupted = json.loads((sweep / job / INTERRUPTED_FILE).read_text())
        assert interrupted["signal"] == "SIGTERM" and interrupted["global_step"] > 0
        assert Path(interrupted["checkpoint"]).is_file()
        assert not (sweep / job / RESULT_FILE).exists()
    assert not (sweep / "2").exists()
    leftovers = [p.name for p in sweep.iterdir() if p.name.startswith(".summary-")]
    assert leftovers == []  # no summary file half written when the workers were ended
    assert [row["status"] for row in rows(sweep)] == ["interrupted", "interrupted"]


def test_once_the_sweep_is_stopped_a_worker_refuses_its_next_job_before_hydra_makes_it(tmp_path):
    from omegaconf import OmegaConf

    from hydra_plugins.diffusion_lab_launcher.parallel_launcher import (
        SweepStopped,
        execute_unless_stopped,
    )

    stop = stop_file(tmp_path)
    stop.parent.mkdir()
    stop.touch()
    # refused before Hydra's execute_job is reached: these arguments would make it fail
    with pytest.raises(SweepStopped, match="job 2 not started: the sweep was stopped") as refused:
        execute_unless_stopped(str(stop), 2, None, None, None, None, None)
    assert refused.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == [stop.parent]
    # a new multirun in the same folder (resuming a stopped sweep) starts with no stop
    target = "hydra_plugins.diffusion_lab_launcher.parallel_launcher.ParallelLauncher"
    config = OmegaConf.create(
        {"hydra": {"launcher": {"_target_": target}, "sweep": {"dir": str(tmp_path)}}}
    )
    devices = JobDevices()
    before = signal.getsignal(signal.SIGTERM)
    devices.on_multirun_start(config)
    try:
        assert not stop.exists() and signal.getsignal(signal.SIGTERM) is not before
    finally:
        devices.on_multirun_end(config)
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_final_ddpm_panel_is_skipped_in_multirun_jobs_unless_asked_for(tmp_path):
    from hydra.utils import instantiate
    from test_train import compose_train

    from diffusion_lab.sweeps.launchers import is_multirun

    assert is_multirun("RunMode.MULTIRUN") and not is_multirun("RunMode.RUN")
    assert not is_multirun(None)  # composed outside a run
    finals = {}
    ddpm = (
        "callbacks.quality.final_samplers.ddpm=${callbacks.samples.samplers.ddpm}"  # off by default
    )
    assert not instantiate(compose_train(tmp_path).callbacks.quality).final_factories
    for overrides in [[], ["callbacks.quality.multirun=true"]]:
        for asked in ([], ["callbacks.quality.final_in_multirun=true"]):
            cfg = compose_train(tmp_path, ddpm, *overrides, *asked)
            panel = instantiate(cfg.callbacks.quality)
            finals[(bool(overrides), bool(asked))] = sorted(panel.final_factories)
    assert finals == {
        (False, False): ["ddpm"],
        (False, True): ["ddpm"],
        (True, False): [],
        (True, True): ["ddpm"],
    }


def test_optuna_sends_two_trials_at_once_to_the_parallel_launcher(tmp_path):
    sweep = tmp_path / "optuna"
    command = sweep_command(sweep, *ONE_EPOCH, "hparams_search=optuna")
    command += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    written = [json.loads((sweep / job / RESULT_FILE).read_text()) for job in ("0", "1")]
    times = [
        (
            datetime.datetime.fromisoformat(r["started"]),
            datetime.datetime.fromisoformat(r["finished"]),
        )
        for r in written
    ]
    assert times[0][0] < times[1][1] and times[1][0] < times[0][1], times  # one batch of two
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(r["value"] for r in written))
    assert [row["status"] for row in rows(sweep)] == ["ok", "ok"]
