"""What a sweep optimises (optimized_metric, diffusion-train's return value, result.json) and the
Optuna and SLURM (submitit) sweeps."""

from __future__ import annotations

import csv
import json
import os
from types import SimpleNamespace

import pytest
import torch
import yaml
from test_summary import run_multirun
from test_train import compose_train, run_train

from diffusion_lab.runs.layout import RESULT_FILE
from diffusion_lab.runs.result import check_direction, optimized_value, recording_result


def test_optimized_metric_is_the_quality_panels_fid_or_without_it_the_validation_loss(tmp_path):
    cfg = compose_train(tmp_path)
    assert (cfg.optimized_metric, cfg.optimized_metric_direction) == (
        "quality/ddim/fid",
        "minimize",
    )
    cfg = compose_train(tmp_path, "~callbacks.quality")
    assert (cfg.optimized_metric, cfg.optimized_metric_direction) == ("val/loss", "minimize")


def test_optimized_metric_follows_the_quality_callbacks_choice(tmp_path):
    quality = ["callbacks.quality.metric=quality/ddim/class_acc"]
    quality += ["callbacks.quality.metric_direction=maximize"]
    cfg = compose_train(tmp_path, *quality)
    assert (cfg.optimized_metric, cfg.optimized_metric_direction) == (
        "quality/ddim/class_acc",
        "maximize",
    )


def test_a_missing_metric_names_itself_and_the_metrics_there_are():
    assert optimized_value({"val/loss": 0.25}, "val/loss") == 0.25
    with pytest.raises(ValueError, match=r"'quality/ddim/fid'.*logged: train/loss, val/loss"):
        optimized_value({"val/loss": 0.25, "train/loss": 0.5}, "quality/ddim/fid")
    with pytest.raises(ValueError, match="'up'.*minimize, maximize"):
        check_direction("up")


def fake_trainer(epochs: int, **metrics: float) -> SimpleNamespace:
    callback_metrics = {
        key.replace("__", "/"): torch.tensor(value) for key, value in metrics.items()
    }
    return SimpleNamespace(callback_metrics=callback_metrics, current_epoch=epochs)


def test_result_json_records_the_run(tmp_path):
    # without the quality panel the run optimises val/loss
    cfg = compose_train(tmp_path, "scheduler=cosine", "~callbacks.quality")
    with recording_result(cfg) as result:
        metrics = result.finish(fake_trainer(3, val__loss=0.5, train__loss=0.75))
    assert metrics == {"val/loss": 0.5, "train/loss": 0.75}
    written = json.loads((tmp_path / RESULT_FILE).read_text())
    assert written["status"] == "ok" and written["epochs"] == 3
    assert (written["optimized_metric"], written["value"]) == ("val/loss", 0.5)
    assert written["direction"] == "minimize" and written["seconds"] >= 0
    assert written["metrics"] == metrics and written["overrides"] == [
        "scheduler=cosine",
        "~callbacks.quality",
    ]


def test_a_failed_run_writes_failed_and_reraises(tmp_path):
    cfg = compose_train(tmp_path)
    (tmp_path / RESULT_FILE).write_text('{"status": "ok"}')  # a stale one from an earlier attempt
    with pytest.raises(RuntimeError, match="out of memory"), recording_result(cfg):
        assert not (tmp_path / RESULT_FILE).exists()
        raise RuntimeError("out of memory\nsecond line")
    written = json.loads((tmp_path / RESULT_FILE).read_text())
    assert written["status"] == "failed" and written["value"] is None
    assert written["error"] == "RuntimeError: out of memory second line"


def test_a_stopped_run_writes_no_result(tmp_path):
    cfg = compose_train(tmp_path)
    with pytest.raises(KeyboardInterrupt), recording_result(cfg):
        raise KeyboardInterrupt
    assert not (tmp_path / RESULT_FILE).exists()


def test_diffusion_train_fails_on_a_metric_it_never_logged(tmp_path):
    """A name no check can rule out before training (not val/* without validation, not quality/*
    without the panel: those are refused first, test_bad_input) fails when training ends, with
    one line, and result.json says failed with the metrics there are."""
    run_dir = tmp_path / "run"
    overrides = ["logger=csv", "+trainer.fast_dev_run=true", "~callbacks.quality"]
    overrides += ["optimized_metric=train/nothing"]
    result = run_train(run_dir, *overrides, check=False)
    assert result.returncode == 2
    assert (
        "diffusion-train: error: optimized_metric='train/nothing' was not logged"
        in (result.stderr.splitlines()[-1])
    )
    assert "val/loss" in result.stderr  # among the metrics there are
    written = json.loads((run_dir / RESULT_FILE).read_text())
    assert written["status"] == "failed" and "train/nothing" in written["error"]
    assert written["metrics"]["val/loss"] > 0


def test_only_rank_zero_writes_the_result(tmp_path, monkeypatch):
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    cfg = compose_train(tmp_path, "~callbacks.quality")
    with recording_result(cfg) as result:
        result.finish(fake_trainer(1, val__loss=0.5))
    assert not (tmp_path / RESULT_FILE).exists()


def test_optuna_search_space_and_direction_follow_the_config(tmp_path):
    quality = ["callbacks.quality.metric=quality/ddim/class_acc"]
    quality += ["callbacks.quality.metric_direction=maximize"]
    cfg = compose_train(tmp_path, "hparams_search=optuna", *quality)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {
        "module.optimizer.lr",
        "model.n_feat",
        "scheduler",
        "module.loss_weighting",
        "module.ema_decay",
        "module.context_dropout",
    }
    assert compose_train(tmp_path, "hparams_search=optuna").hydra.sweeper.direction == "minimize"


def test_a_two_trial_optuna_sweep_writes_its_best_trial_and_the_summary(tmp_path):
    import optuna

    sweep = tmp_path / "optuna"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_multirun(
        sweep,
        "hparams_search=optuna",  # TINY pins model.n_feat=8: a fixed override leaves the search
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=tiny",
        "logger=csv",
    )
    assert result.returncode == 0, result.stderr[-5000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "module.optimizer.lr",
        "scheduler",
        "module.loss_weighting",
        "module.ema_decay",
        "module.context_dropout",
    }
    with open(sweep / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert best["best_value"] == pytest.approx(min(float(row["optimized_value"]) for row in rows))
    study = optuna.load_study(study_name="tiny", storage=storage)
    values = sorted(trial.value for trial in study.trials)
    assert values == pytest.approx(sorted(float(row["optimized_value"]) for row in rows))
    assert (sweep / "summary.png").is_file()


SLURM_GPUS = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]


def test_slurm_tasks_gpus_and_nodes_follow_the_trainer(tmp_path):
    launcher = compose_train(tmp_path, *SLURM_GPUS).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    cpu = compose_train(tmp_path, "hydra/launcher=slurm", "trainer=cpu", "trainer.devices=2")
    assert (cpu.hydra.launcher.tasks_per_node, cpu.hydra.launcher.gpus_per_node) == (2, None)
    assert cpu.hydra.launcher.nodes == 1
    auto = compose_train(tmp_path, "hydra/launcher=slurm")  # trainer.devices=auto
    with pytest.raises(Exception, match="needs trainer.devices as a positive number.*'auto'"):
        _ = auto.hydra.launcher.tasks_per_node


def test_slurm_batch_script_asks_for_lightnings_requeue_signal(tmp_path, monkeypatch):
    """The sbatch script submitit would submit, built as the launcher builds it (a stand-in srun
    on PATH: submitit refuses to build one off a cluster)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    overrides = [*SLURM_GPUS, "hydra.launcher.partition=gpu", "hydra.launcher.account=lab"]
    cfg = compose_train(tmp_path, *overrides, "hydra.launcher.timeout_min=30")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    del params["_target_"], params["submitit_folder"]
    executor = submitit.AutoExecutor(
        folder=tmp_path / "submitit",
        cluster="slurm",
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{k if k in generic else f"slurm_{k}": v for k, v in params.items()}
    )
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in [
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--signal=USR1@120",  # Lightning's SLURMEnvironment requeue signal, 120 s ahead
        "--partition=gpu",
        "--account=lab",
        "--time=30",
    ]:
        assert f"#SBATCH {line}\n" in script


def test_a_one_job_sweep_on_submitits_local_executor_gets_its_summary_row(tmp_path):
    sweep = tmp_path / "submitit"
    result = run_multirun(sweep, "hydra/launcher=submitit_local", "logger=csv")
    assert result.returncode == 0, result.stderr[-5000:]
    with open(sweep / "summary.csv") as stream:
        (row,) = list(csv.DictReader(stream))
    assert (row["job"], row["status"], row["epochs"]) == ("0", "ok", "1")
    assert (
        float(row["optimized_value"])
        == json.loads((sweep / "0" / RESULT_FILE).read_text())["value"]
    )
    (job_log,) = (sweep / ".submitit").glob("*/*_0_log.out")
    assert "sweep summary" in job_log.read_text()  # rebuilt at the job's end, in the job's process
