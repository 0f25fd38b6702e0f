"""diffusion-train end to end: every config group composes, every data source runs, a real epoch
writes grids and checkpoints, resuming continues the epoch count, and bad input fails early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import open_dict

from diffusion_lab import CONFIG_DIR
from diffusion_lab.train import (
    build_callbacks,
    build_loggers,
    build_module,
    check_metrics_can_be_logged,
)

# tiny but real: a narrow net and a short chain keep each run to seconds on two CPU cores
TINY = [
    "model.n_feat=8",
    "scheduler.timesteps=20",
    "sampler.steps=5",
    "callbacks.samples.samples_per_class=2",
    "callbacks.samples.animation_frames=4",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
]


def run_train(
    run_dir: Path, *overrides: str, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, writing into run_dir."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [
        sys.executable,
        "-m",
        "diffusion_lab.train",
        f"hydra.run.dir={run_dir}",
        *TINY,
        *overrides,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(
            f"diffusion-train failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def compose_train(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.override_dirname = ",".join(overrides)
    HydraConfig.instance().set_config(cfg)
    return cfg


GROUP_OPTIONS = {
    "scheduler": ["linear", "cosine", "quadratic", "sigmoid"],
    "sampler": ["ddpm", "ddim", "dpmpp", "dpmpp_sde", "euler", "heun"],
    "trainer": ["default", "cpu", "gpu", "ddp"],
    "logger": ["wandb", "csv", "tensorboard", "none"],
    "data": ["digits", "sprites", "cifar10", "folder"],
    "perf": ["default", "fast"],
}


def test_group_options_match_the_config_folders():
    for group, options in GROUP_OPTIONS.items():
        on_disk = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
        assert on_disk == sorted(options), group


@pytest.mark.parametrize(
    "override",
    [f"{group}={option}" for group, options in GROUP_OPTIONS.items() for option in options]
    + ["experiment=sprites_course", "experiment=digits_unet_v"],
)
def test_every_config_option_composes(tmp_path, monkeypatch, override):
    monkeypatch.setenv("WANDB_MODE", "offline")
    extra = ["data.source.root=/nowhere", "data.num_classes=3"] if override == "data=folder" else []
    cfg = compose_train(tmp_path, override, *extra)
    module = build_module(cfg)  # net, schedule, sampler, optimizer and LR schedule instantiate
    assert module.make_sampler().schedule is module.schedule
    if override in ("trainer=default", "trainer=cpu"):
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs
    if override in ("trainer=gpu", "trainer=ddp"):
        check_gpu_trainer(cfg, override)
    if override.startswith("logger="):
        loggers = build_loggers(cfg)
        assert len(loggers) == (0 if override == "logger=none" else 1)
        callbacks = build_callbacks(cfg, have_logger=bool(loggers))
        assert any(type(c).__name__ == "SampleGrids" for c in callbacks)


def check_gpu_trainer(cfg, override: str) -> None:
    """The GPU presets as Lightning parses them: on a machine without CUDA, Lightning itself
    refuses the accelerator (so the config asks for a GPU through Lightning, not just by name);
    with CUDA, the trainer gets CUDA devices (and DDP for trainer=ddp). Hydra wraps Lightning's
    refusal in an InstantiationException; its cause is Lightning's own."""
    if not torch.cuda.is_available():
        with pytest.raises(InstantiationException) as raised:
            instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert isinstance(raised.value.__cause__, MisconfigurationException)
        assert "No supported gpu backend found" in str(raised.value.__cause__)
        return
    with open_dict(cfg):
        cfg.trainer.devices = 1
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert type(trainer.accelerator).__name__ == "CUDAAccelerator"
    if override == "trainer=ddp":
        assert type(trainer.strategy).__name__ == "DDPStrategy"


def test_sprites_course_experiment_is_the_course_recipe(tmp_path):
    cfg = compose_train(tmp_path, "experiment=sprites_course")
    assert cfg.data.source._target_.endswith("SpritesSource")
    assert (cfg.model.n_feat, cfg.scheduler.timesteps, cfg.data.batch_size) == (64, 500, 100)
    assert (cfg.trainer.max_epochs, cfg.module.optimizer.lr) == (32, 1e-3)
    assert cfg.model.in_channels == 3 and cfg.model.n_cfeat == 5 and cfg.model.height == 16
    # the course's network, target and sampler, whatever the defaults (v: docs/ddim_investigation.md)
    assert cfg.model._target_.endswith("ContextUnet") and cfg.model.norm == "batch"
    assert cfg.module.prediction == "eps" and cfg.sampler.steps == 25 and cfg.sampler.eta == 0.0


def test_unknown_group_option_names_the_choices(tmp_path):
    result = run_train(tmp_path / "run", "scheduler=exponential", check=False)
    assert result.returncode != 0
    assert "exponential" in result.stderr and "linear" in result.stderr


@pytest.mark.parametrize("source", ["sprites", "cifar10", "folder", "digits"])
def test_fast_dev_run_on_each_data_source(
    tmp_path, source, sprites_root, cifar10_root, folder_root
):
    roots = {
        "sprites": [f"data.source.root={sprites_root}"],
        "cifar10": [f"data.source.root={cifar10_root}", "data.source.verify_checksums=false"],
        "folder": [f"data.source.root={folder_root}", "data.num_classes=2", "data.image_size=16"],
        "digits": [],
    }[source]
    run_dir = tmp_path / "run"
    run_train(run_dir, f"data={source}", *roots, "logger=csv", "+trainer.fast_dev_run=true")
    assert (run_dir / "samples" / "epoch_000.png").is_file()


def test_missing_sprites_fail_before_training_naming_both_files(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, "data=sprites", f"data.source.root={tmp_path}", check=False)
    assert result.returncode != 0
    assert "sprites_1788_16x16.npy" in result.stderr
    assert "sprite_labels_nc_1788_16x16.npy" in result.stderr
    # W&B is the logger here: still nothing but Hydra's own config and log (no W&B run, no result)
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "train.log"]


def test_model_that_does_not_fit_the_data_fails_before_training(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(run_dir, "model.height=32", "logger=csv", check=False)
    assert result.returncode != 0
    assert "the model (n_cfeat=10) takes images (1, 32, 32) of 10 classes" in result.stderr
    assert not (run_dir / "samples").exists()


@pytest.fixture(scope="module")
def trained_run(epoch_run: Path) -> Path:
    """One real epoch on the digits with W&B offline: grids, GIF, checkpoints, the W&B run
    (conftest's epoch_run)."""
    return epoch_run


def test_one_epoch_on_digits_writes_grids_gif_and_checkpoints(trained_run):
    assert (trained_run / "samples" / "epoch_000.png").is_file()
    assert (trained_run / "samples" / "denoising.gif").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    best = list((trained_run / "checkpoints").glob("best-epoch000-val_loss*.ckpt"))
    assert len(best) == 1
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["class_names"] == [str(i) for i in range(10)]
    assert any(key.startswith("ema.module.") for key in checkpoint["state_dict"])
    assert "diffusion_lab" in checkpoint


def test_wandb_offline_run_holds_the_logged_image(trained_run):
    runs = list((trained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    images = list((runs[0] / "files" / "media" / "images").glob("samples_*.png"))
    assert images, "the sample grid was not logged to W&B"


def test_resume_continues_the_epoch_count(trained_run, tmp_path):
    resumed = tmp_path / "resumed"
    run_train(
        resumed,
        "trainer.max_epochs=2",
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        "logger=csv",
    )
    assert (resumed / "samples" / "epoch_001.png").is_file()
    assert not (resumed / "samples" / "epoch_000.png").exists()
    checkpoint = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == 1


def test_no_validation_set_with_a_val_monitor_is_refused_up_front(tmp_path):
    cfg = compose_train(tmp_path, "data.val_fraction=0")
    with pytest.raises(ValueError, match="callbacks.checkpoint monitors 'val/loss'"):
        check_metrics_can_be_logged(cfg)
    cfg = compose_train(tmp_path, "data.val_fraction=0", "callbacks.checkpoint.monitor=null")
    check_metrics_can_be_logged(cfg)
    assert build_callbacks(cfg, have_logger=False)
