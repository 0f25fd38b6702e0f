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
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from diffusion_lab import CONFIG_DIR
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.runs.result import is_rank_zero, optimized_value, recording_result
from diffusion_lab.runs.resume import checkpoint_to_fit_from, resumed_config
from diffusion_lab.sweeps.summary import write_summary
from diffusion_lab.utils.checks import is_int, require_number

log = logging.getLogger(__name__)


def instantiate_plainly(config: DictConfig, **kwargs):
    """Hydra's instantiate, but a target's own error (a ValueError naming the value) is raised as
    it is, not inside Hydra's three-line InstantiationException."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, (ValueError, TypeError, FileNotFoundError)):
            raise cause from None
        raise


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Every configured logger (conf/logger/): W&B's name, group and id come from its config."""
    return [instantiate(logger_cfg) for logger_cfg in (cfg.get("logger") or {}).values()]


def _check_monitored_metrics(cfg: DictConfig) -> None:
    """A callback that monitors val/* needs a validation set: say so before training, not after."""
    if cfg.data.get("val_fraction", 1) != 0:
        return
    for name, callback_cfg in (cfg.get("callbacks") or {}).items():
        monitor = callback_cfg.get("monitor") if callback_cfg is not None else None
        if isinstance(monitor, str) and monitor.startswith("val/"):
            raise ValueError(
                f"data.val_fraction=0 leaves no validation set, but callbacks.{name} monitors "
                f"{monitor!r}; set callbacks.{name}.monitor=null or a val_fraction > 0"
            )


def build_callbacks(cfg: DictConfig, have_logger: bool) -> list[L.Callback]:
    _check_monitored_metrics(cfg)
    # callbacks.<name>=null switches one off, as ~callbacks.<name> does
    configs = [c for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks = [instantiate(c) for c in configs]
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


def check_numbers(cfg: DictConfig) -> None:
    """Numbers that would fail late (after the run folder filled) or train nothing, checked first:
    the learning rate, the epoch count, the grids' guidance weight. (data.* is checked by the
    datamodule, which is built before anything is written too.)"""
    lr = OmegaConf.select(cfg, "module.optimizer.lr")
    if lr is not None:
        require_number("module.optimizer.lr", lr, minimum=0, above=True)
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if epochs is not None and not (is_int(epochs) and (epochs >= 1 or epochs == -1)):
        raise ValueError(
            f"trainer.max_epochs must be an integer >= 1 (or -1: no limit, with trainer.max_steps),"
            f" got {epochs!r}"
        )
    require_number("guidance_scale", cfg.get("guidance_scale", 0.0), minimum=0)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit on the composed config; returns the final metrics (callback_metrics as floats) and writes
    them, with the optimised metric, to ``<run dir>/result.json`` (status failed on an error).

    ``resume=<run folder>`` continues that run: its config, this command's overrides on top. Bad
    input (impossible numbers, missing or malformed data, a net that does not fit the data) is
    refused before anything is written to the run folder, result.json included; in a multirun the
    sweep's summary callback records such a job as failed."""
    cfg = resumed_config(cfg)
    check_numbers(cfg)
    datamodule, module, checkpoint = prepare(cfg)
    try:
        with recording_result(cfg) as result:
            metrics = result.finish(fit(cfg, datamodule, module, checkpoint))
    except (SystemExit, KeyboardInterrupt):
        # a stop ends the whole multirun (Hydra's callbacks do not run for it): show the stopped
        # job in the sweep's summary now, as interrupted (interrupted.json) or killed
        refresh_sweep_summary()
        raise
    log.info("final metrics: %s", metrics)
    return metrics


def refresh_sweep_summary() -> None:
    """Rebuild the sweep's summary from inside a multirun job (rank zero), never raising."""
    if not HydraConfig.initialized() or not is_rank_zero():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    try:
        write_summary(Path(hydra_cfg.sweep.dir), live=False)
    except Exception:  # the stop's own exit status is what matters here
        log.exception("could not write the sweep summary in %s", hydra_cfg.sweep.dir)


def prepare(cfg: DictConfig) -> tuple[L.LightningDataModule, DiffusionModule, Path | None]:
    """Seed, then build and check the data and the module, and find the checkpoint to fit from
    (``resume`` or ``ckpt_path``): everything that can fail on bad input, before any file is
    written. The data is loaded and set up here; fit's own setup reuses it."""
    checkpoint = checkpoint_to_fit_from(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_plainly(cfg.data)
    module = build_module(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module.adopt_data(datamodule)
    return datamodule, module, checkpoint


def fit(
    cfg: DictConfig,
    datamodule: L.LightningDataModule,
    module: DiffusionModule,
    checkpoint: Path | None,
) -> L.Trainer:
    """Build loggers, callbacks and trainer from ``cfg``, fit ``module`` on ``datamodule`` (from
    ``checkpoint`` if given) and return the trainer."""
    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg, bool(loggers)), logger=loggers or False
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams({"config": resolved})
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    finally:
        if any(isinstance(logger, WandbLogger) for logger in loggers):
            import wandb  # only when W&B is in use: it is slow to import

            wandb.finish()  # each job its own run, also inside a multirun
    return trainer


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Train; return ``optimized_metric``'s final value to Hydra's sweepers (Optuna, ...)."""
    return optimized_value(train(cfg), cfg.optimized_metric)


if __name__ == "__main__":
    main()
