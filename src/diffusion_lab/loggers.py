"""Weights & Biases that never blocks: offline unless credentials exist (or WANDB_MODE says)."""

from __future__ import annotations

import netrc
import os
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

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
