"""diffusion-train: compose the Hydra config, instantiate everything, fit.

diffusion-train                                   # digits, offline, on this machine
diffusion-train data=sprites experiment=sprites_course
diffusion-train -m scheduler=linear,cosine sampler.steps=10,50
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from diffusion_lab import CONFIG_DIR
from diffusion_lab.lit_module import DiffusionModule

log = logging.getLogger(__name__)


def _run_identity() -> tuple[str, str | None]:
    """(run name from the command-line overrides, W&B group shared by one multirun's jobs)."""
    if not HydraConfig.initialized():
        return "default", None
    hydra_cfg = HydraConfig.get()
    name = hydra_cfg.job.override_dirname or "default"
    group = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        group = f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"
    return name, group


def build_loggers(cfg: DictConfig) -> list[Logger]:
    name, group = _run_identity()
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        extra = {}
        if logger_cfg._target_.endswith("make_wandb_logger"):
            extra = {"name": logger_cfg.name or name, "group": logger_cfg.group or group}
        loggers.append(instantiate(logger_cfg, **extra))
    return loggers


def _check_monitored_metrics(cfg: DictConfig) -> None:
    """A callback that monitors val/* needs a validation set: say so before training, not after."""
    if cfg.data.get("val_fraction", 1) != 0:
        return
    for name, callback_cfg in (cfg.get("callbacks") or {}).items():
        monitor = callback_cfg.get("monitor")
        if isinstance(monitor, str) and monitor.startswith("val/"):
            raise ValueError(
                f"data.val_fraction=0 leaves no validation set, but callbacks.{name} monitors "
                f"{monitor!r}; set callbacks.{name}.monitor=null or a val_fraction > 0"
            )


def build_callbacks(cfg: DictConfig, have_logger: bool) -> list[L.Callback]:
    _check_monitored_metrics(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    # LearningRateMonitor refuses to run without a logger; with logger=none there is nothing to feed
    return [c for c in callbacks if have_logger or not isinstance(c, LearningRateMonitor)]


def build_module(cfg: DictConfig) -> DiffusionModule:
    return DiffusionModule(
        net=cfg.model,
        schedule=cfg.scheduler,
        sampler=cfg.sampler,
        data=cfg.data,  # stored in the checkpoint: diffusion-eval judges on the same data and split
        **OmegaConf.to_container(cfg.module, resolve=True),
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit on the composed config; returns the final metrics (callback_metrics as floats)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    # load and check the data now, so that a missing file or a shape mismatch stops the run before
    # any logger (a W&B run) or callback writes into the run folder; fit's own setup reuses it
    datamodule.prepare_data()
    datamodule.setup("fit")
    module.adopt_data(datamodule)
    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg, bool(loggers)), logger=loggers or False
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams({"config": resolved})
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    finally:
        if any(isinstance(logger, WandbLogger) for logger in loggers):
            import wandb  # only when W&B is in use: it is slow to import

            wandb.finish()  # each job its own run, also inside a multirun
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    log.info("final metrics: %s", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get("val/loss")  # what a Hydra sweeper (e.g. Optuna) would minimise


if __name__ == "__main__":
    main()
