"""Loggers: Weights & Biases that never blocks (offline unless credentials exist, or WANDB_MODE
says) and a CSV logger that a resumed run continues. The W&B run's name, group and id (one run per
run folder) are config values: conf/logger/wandb.yaml and the resolvers in diffusion_lab/resolvers.py."""

from __future__ import annotations

import netrc
import os
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from diffusion_lab.callbacks._lightning import continuing_experiment

DEFAULT_WANDB_HOST = "https://api.wandb.ai"


def wandb_credentials_found() -> bool:
    """True if WANDB_API_KEY is set or ~/.netrc holds a key for the W&B host (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_WANDB_HOST)).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline(offline: bool | None) -> bool:
    """An explicit ``offline`` wins, then WANDB_MODE, then: offline exactly when no credentials."""
    if offline is not None:
        return bool(offline)
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    return not wandb_credentials_found()


def make_wandb_logger(offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """A Lightning WandbLogger that runs offline when it could not log in, so it never prompts.

    Offline runs land in ``<save_dir>/wandb/offline-run-*``; upload them with ``wandb sync``.
    """
    return WandbLogger(offline=wandb_offline(offline), **kwargs)


class ContinuingCSVLogger(CSVLogger):
    """Lightning's CSVLogger that appends to the run folder's metrics.csv: a run resumed with
    ``resume=<run folder>`` continues its loss curve in the same file."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        return continuing_experiment(self)  # Lightning's internals: callbacks/_lightning.py
