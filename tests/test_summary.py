"""The multirun summary: statuses from the files jobs leave, the table, the files a real multirun gets
(also when one job fails), and diffusion-summary on a sweep folder whose jobs were killed."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from test_train import TINY

from diffusion_lab.sweeps.cli import main as summary_main
from diffusion_lab.sweeps.summary import read_sweep, summary_markdown, write_summary

ONE_EPOCH = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
]


def run_multirun(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`diffusion-train -m` in a subprocess, writing into sweep_dir (W&B offline)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "diffusion_lab.train", "-m", f"hydra.sweep.dir={sweep_dir}"]
    command += [*TINY, *ONE_EPOCH, *overrides]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def make_job(sweep: Path, job: str, overrides: list[str], result: dict | None = None) -> Path:
    folder = sweep / job
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"optimized_metric": "${oc.select:callbacks.quality.metric,val/loss}"}
    config["optimized_metric_direction"] = (
        "${oc.select:callbacks.quality.metric_direction,minimize}"
    )
    config["callbacks"] = {
        "quality": {"metric": "quality/ddim/class_acc", "metric_direction": "maximize"}
    }
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))
    return folder


def ok_result(value: float, **quality: float) -> dict:
    metrics = {"val/loss": value, **{f"quality/ddim/{k}": v for k, v in quality.items()}}
    return {"status": "ok", "metrics": metrics, "optimized_metric": "quality/ddim/class_acc"}


@pytest.fixture
def fake_sweep(tmp_path) -> Path:
    """Five jobs, one of each status, maximising quality/ddim/class_acc."""
    sweep = tmp_path / "sweep"
    common = ["trainer.max_epochs=3"]
    for job, result in [
        ("0", {**ok_result(0.5, class_acc=0.6, fid=40.0), "epochs": 3, "seconds": 12.5}),
        ("1", {**ok_result(0.4, class_acc=0.9, fid=30.0), "epochs": 3, "seconds": 11.0}),
        ("2", {"status": "failed", "metrics": {}, "error": "ValueError: n_feat=-1"}),  # no metric
        ("3", None),
        ("4", None),
    ]:
        if result is not None:
            result = {**result, "direction": "maximize"}
            if result["status"] == "ok":
                result["value"] = result["metrics"]["quality/ddim/class_acc"]
        make_job(sweep, job, [*common, f"model.n_feat={8 * (int(job) + 1)}"], result)
    (sweep / "3" / "interrupted.json").write_text('{"signal": "SIGTERM"}')
    (sweep / "0" / "samples").mkdir()
    for epoch in (0, 2, 1):
        Image.new("RGB", (30, 20), (epoch * 100, 0, 0)).save(
            sweep / "0" / "samples" / f"epoch_{epoch:03d}.png"
        )
    return sweep


def test_statuses_come_from_the_files_each_job_left(fake_sweep):
    rows = read_sweep(fake_sweep)
    assert [row.status for row in rows] == ["ok", "ok", "failed", "interrupted", "killed"]
    assert [row.status for row in read_sweep(fake_sweep, live=True)][-1] == "running"
    assert rows[0].grid == fake_sweep / "0" / "samples" / "epoch_002.png"
    assert rows[1].grid is None
    assert rows[1].quality == {"quality/ddim/class_acc": 0.9, "quality/ddim/fid": 30.0}
    assert (rows[1].value, rows[1].val_loss, rows[1].epochs) == (0.9, 0.4, 3)
    assert rows[2].value is None and rows[2].error == "ValueError: n_feat=-1"
    assert {(row.optimized_metric, row.direction) for row in rows} == {
        ("quality/ddim/class_acc", "maximize")
    }


def test_markdown_names_the_best_job_by_its_direction(fake_sweep):
    text = summary_markdown(read_sweep(fake_sweep), "sweep")
    # every job optimises the same metric (those without a result.json say so in their config)
    assert "Optimised: `quality/ddim/class_acc` (maximize)" in text
    assert "Best: job 1 (`model.n_feat=16`), 0.9." in text
    assert "Common to all jobs: `trainer.max_epochs=3`." in text
    assert "Jobs: 5 (2 ok, 1 failed, 1 interrupted, 1 killed)." in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].split(" | ")[-3:] == ["quality/ddim/class_acc", "quality/ddim/fid", "error |"]
    assert len(table) == 1 + 5
    assert table[3].startswith("| 2 | model.n_feat=24 | failed |")


def test_write_summary_writes_the_three_files(fake_sweep):
    write_summary(fake_sweep)
    with open(fake_sweep / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["job"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert rows[0]["overrides"] == "trainer.max_epochs=3 model.n_feat=8"
    assert float(rows[1]["quality/ddim/fid"]) == 30.0 and rows[4]["quality/ddim/fid"] == ""
    assert rows[1]["optimized_value"] == "0.9" and rows[1]["direction"] == "maximize"
    with Image.open(fake_sweep / "summary.png") as picture:
        assert picture.width > 400 and picture.height > 300
    assert sorted(p.name for p in fake_sweep.iterdir() if p.name.startswith(".summary-")) == []


def test_a_folder_that_is_not_a_sweep_is_refused(tmp_path, fake_sweep, capsys):
    assert summary_main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert summary_main([str(empty)]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err
    assert summary_main([str(fake_sweep / "0")]) == 2
    assert "a single run's folder, not a sweep" in capsys.readouterr().err


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A real two-job multirun whose first job fails (n_feat=-1) and second trains one epoch."""
    sweep = tmp_path_factory.mktemp("failing") / "multirun"
    return sweep, run_multirun(sweep, "model.n_feat=-1,8", "logger=csv")


def test_a_failed_job_shows_as_failed_and_the_other_still_runs(failing_sweep):
    sweep, result = failing_sweep
    assert result.returncode != 0  # Hydra's basic sweeper re-raises the failure after the batch
    assert "n_feat must be a positive multiple of 8, got -1" in result.stderr
    with open(sweep / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["job"], row["status"]) for row in rows] == [("0", "failed"), ("1", "ok")]
    assert "n_feat must be a positive multiple of 8, got -1" in rows[0]["error"]
    assert rows[1]["epochs"] == "1" and float(rows[1]["seconds"]) > 0
    # the optimised metric (the quality panel's FID by default) is one of the job's own columns
    assert float(rows[1][rows[1]["optimized_metric"]]) == float(rows[1]["optimized_value"]) > 0
    assert float(rows[1]["val/loss"]) > 0
    markdown = (sweep / "summary.md").read_text()
    assert "| 1 | model.n_feat=8 | ok | 1 |" in markdown
    assert "Best: job 1 (`model.n_feat=8`)" in markdown
    assert (sweep / "summary.png").stat().st_size > 10_000


def test_diffusion_summary_calls_a_job_without_result_killed(failing_sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(failing_sweep[0], copy)
    for name in ("summary.csv", "summary.md", "summary.png"):
        (copy / name).unlink()
    (copy / "1" / "result.json").unlink()
    command = [sys.executable, "-m", "diffusion_lab.sweeps.cli", str(copy)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| 1 | model.n_feat=8 | killed |" in result.stdout
    with open(copy / "summary.csv") as stream:
        assert [row["status"] for row in csv.DictReader(stream)] == ["failed", "killed"]
    assert (copy / "summary.png").is_file() and (copy / "summary.md").is_file()


def test_with_wandb_the_table_is_logged_once_in_the_sweeps_group(tmp_path):
    sweep = tmp_path / "multirun"
    result = run_multirun(sweep, "seed=1")  # W&B (the default logger), offline
    assert result.returncode == 0, result.stderr[-5000:]
    (summary_run,) = (sweep / "wandb").glob("offline-run-*")
    (table_file,) = (summary_run / "files" / "media" / "table" / "sweep").glob("summary_*.json")
    logged = json.loads(table_file.read_text())
    assert logged["columns"][:3] == ["job", "overrides", "status"]
    assert [row[:1] + row[2:3] for row in logged["data"]] == [["0", "ok"]]
    assert list((summary_run / "files" / "media" / "images" / "sweep").glob("summary_png_*.png"))
    (record,) = summary_run.glob("run-*.wandb")  # the run's protobuf log names group and job type
    data = record.read_bytes()
    job_type = b"\x07summary"  # the length-prefixed protobuf string job_type="summary"
    assert f"train-{sweep.name}".encode() in data and job_type in data
    (job_run,) = (sweep / "0" / "wandb").glob("offline-run-*")  # the job's own run, same group
    job_data = next(job_run.glob("run-*.wandb")).read_bytes()
    assert f"train-{sweep.name}".encode() in job_data and job_type not in job_data
    shutil.rmtree(sweep / "wandb")  # diffusion-summary --wandb logs it again, to the same group
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "diffusion_lab.sweeps.cli", str(sweep), "--wandb"]
    rebuilt = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    (summary_run,) = (sweep / "wandb").glob("offline-run-*")
    data = next(summary_run.glob("run-*.wandb")).read_bytes()
    assert f"train-{sweep.name}".encode() in data and job_type in data


def test_the_callback_records_a_job_that_failed_outside_train(fake_sweep):
    """Hydra's on_job_end with a failed JobReturn and no result.json (the job died before train()
    could write one): the job gets a failed result.json and the summary is rebuilt, live."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from diffusion_lab.sweeps.callback import SweepSummary

    job = make_job(fake_sweep, "5", ["model.n_feat=48"])
    hydra = {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(fake_sweep)}}
    hydra["runtime"] = {"output_dir": str(job)}
    config = OmegaConf.create({"hydra": hydra})
    failed = JobReturn(overrides=["model.n_feat=48"], status=JobStatus.FAILED)
    failed.return_value = KeyError("no such key\nin the config")
    SweepSummary().on_job_end(config, failed)
    result = json.loads((job / "result.json").read_text())
    assert (
        result["status"] == "failed"
        and result["error"] == "KeyError: 'no such key\\nin the config'"
    )
    with open(fake_sweep / "summary.csv") as stream:
        statuses = [row["status"] for row in csv.DictReader(stream)]
    assert statuses == ["ok", "ok", "failed", "interrupted", "running", "failed"]
    run_config = OmegaConf.create({"hydra": {**hydra, "mode": RunMode.RUN}})
    (fake_sweep / "summary.csv").unlink()
    SweepSummary().on_job_end(run_config, failed)  # a single run (or a DDP rank's relaunch)
    assert not (fake_sweep / "summary.csv").exists()
