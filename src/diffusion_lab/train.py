"""diffusion-train: compose the Hydra config, instantiate everything, fit.

diffusion-train                                   # digits, offline, on this machine
diffusion-train data=sprites experiment=sprites_course
diffusion-train -m scheduler=linear,cosine sampler.steps=10,50
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

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
from diffusion_lab.utils.checks import InputError, is_int, is_number, require_number
from diffusion_lab.utils.cli import input_errors_end_the_command
from diffusion_lab.utils.native_bf16 import report as report_bf16

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


def has_validation(cfg: DictConfig) -> bool:
    """Whether validation runs at all: a val split (data.val_fraction > 0) that the trainer uses
    (trainer.limit_val_batches is not 0)."""
    limit = OmegaConf.select(cfg, "trainer.limit_val_batches")
    return cfg.data.get("val_fraction", 1) != 0 and not (is_number(limit) and limit == 0)


def _no_validation_reason(cfg: DictConfig) -> str:
    if cfg.data.get("val_fraction", 1) == 0:
        return "data.val_fraction=0 leaves no validation set"
    return "trainer.limit_val_batches=0 runs no validation"


def check_metrics_can_be_logged(cfg: DictConfig) -> None:
    """A metric the run can never log, refused before training rather than after it: the
    optimised metric (val/* needs validation, quality/* the quality panel) and every val/* metric
    a callback monitors. Other names are checked when training ends (runs.result)."""
    metric = str(cfg.get("optimized_metric") or "val/loss")
    if metric.startswith("val/") and not has_validation(cfg):
        raise InputError(
            f"optimized_metric={metric!r} is never logged: {_no_validation_reason(cfg)}; "
            "turn the quality panel on (its metric is then optimised) or let validation run"
        )
    if metric.startswith("quality/") and OmegaConf.select(cfg, "callbacks.quality") is None:
        raise InputError(
            f"optimized_metric={metric!r} is never logged: the quality panel "
            "(callbacks.quality) is off; turn it on or set optimized_metric=val/loss"
        )
    if has_validation(cfg):
        return
    for name, callback_cfg in (cfg.get("callbacks") or {}).items():
        monitor = callback_cfg.get("monitor") if callback_cfg is not None else None
        if isinstance(monitor, str) and monitor.startswith("val/"):
            raise InputError(
                f"{_no_validation_reason(cfg)}, but callbacks.{name} monitors {monitor!r}; set "
                f"callbacks.{name}.monitor=null or let validation run"
            )


def build_callbacks(cfg: DictConfig, have_logger: bool) -> list[L.Callback]:
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


def check_config(cfg: DictConfig) -> None:
    """What would fail late (after the run folder filled) or train nothing, checked first: the
    learning rate, the epoch count, the grids' guidance weight, the metrics the run must log.
    (data.* is checked by the datamodule and the sampler by the module's make_sampler, both in
    :func:`prepare`, before anything is written too.)"""
    check_metrics_can_be_logged(cfg)
    lr = OmegaConf.select(cfg, "module.optimizer.lr")
    if lr is not None:
        require_number("module.optimizer.lr", lr, minimum=0, above=True)
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if epochs is not None and not (is_int(epochs) and (epochs >= 1 or epochs == -1)):
        raise InputError(
            f"trainer.max_epochs must be an integer >= 1 (or -1: no limit, with trainer.max_steps),"
            f" got {epochs!r}"
        )
    require_number("guidance_scale", cfg.get("guidance_scale", 0.0), minimum=0)


class Trained(NamedTuple):
    """What :func:`train` returns: the final metrics, and the optimised metric's name and value,
    taken from the config the run trained with (the resumed run's, when resuming)."""

    metrics: dict[str, float]
    optimized_metric: str
    value: float


def train(cfg: DictConfig) -> Trained:
    """Fit on the composed config; returns the final metrics (callback_metrics as floats) and the
    optimised metric's value, and writes them to ``<run dir>/result.json`` (status failed on an
    error).

    ``resume=<run folder>`` continues that run: its config, this command's overrides on top; that
    one config is what every part of the command sees (the checks, the fit, result.json and the
    value returned to a sweeper), on every DDP rank alike (each rank runs this function). Bad
    input (impossible numbers, missing or malformed data, a net that does not fit the data) is
    refused before anything is written to the run folder, result.json included; in a multirun the
    sweep's summary callback records such a job as failed."""
    cfg = resumed_config(cfg)
    check_config(cfg)
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
    return Trained(metrics, result.metric, optimized_value(metrics, result.metric))


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
    trainer = cfg.get("trainer") or {}
    report_bf16(trainer.get("precision"), trainer.get("accelerator", "auto"))  # once, with why
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)  # quiet: bad input prints 1 line
        log.info("seed set to %s", cfg.seed)
    datamodule = instantiate_plainly(cfg.data)
    module = build_module(cfg)
    module.make_sampler()  # the sampler config (its steps) checked before anything is written
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
@input_errors_end_the_command("diffusion-train")
def main(cfg: DictConfig) -> float:
    """Train; return ``optimized_metric``'s final value to Hydra's sweepers (Optuna, ...): the
    value of the config the run trained with (see :func:`train`)."""
    return train(cfg).value


if __name__ == "__main__":
    main()
