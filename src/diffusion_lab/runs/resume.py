"""Resuming: ``diffusion-train resume=<run folder>`` (or ``resume=last``) continues THAT run.

Hydra puts the job into the run folder (conf/hydra/default.yaml: ``hydra.run.dir`` from
``resume``, the resuming command's own config under ``.hydra/resume-<datetime>/``). Here:

- the config: the run's own overrides (``<run>/.hydra/overrides.yaml``) composed again, with the
  resuming command's overrides on top (``resume=<run> trainer.max_epochs=100`` trains longer);
- the checkpoint: ``<run>/checkpoints/last.ckpt`` (the epoch-end one, or the preemption's, mid-epoch);
- the rest comes from the checkpoint: global step, optimizer, LR schedule, EMA, the loader's
  position inside the epoch, the RNG states (``callbacks.ResumeState``), and from the folder: the
  W&B run id (``<run>/wandb_run_id``, resolvers.wandb_run_id), the CSV log and train.log (appended).

``ckpt_path=<checkpoint>`` instead starts a NEW run folder from a checkpoint's full training state.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from diffusion_lab import CONFIG_DIR
from diffusion_lab.runs.checkpoints import check_checkpoint, resolve_checkpoint
from diffusion_lab.runs.layout import CHECKPOINTS_DIR, LAST_FILE, RUN_OVERRIDES
from diffusion_lab.utils.checks import InputError, MissingInputError

log = logging.getLogger(__name__)


def _key(override: str) -> str:
    """The config key an override sets: ``+trainer.x=1`` -> ``trainer.x``."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(original: list[str], current: list[str]) -> list[str]:
    """The run's overrides with the current command's on top: an override of the same key
    replaces the original one (keeping its ``+`` where the original added the key); the
    original's ``ckpt_path`` is dropped (a resumed run starts from its own last.ckpt)."""
    current_keys = {_key(override) for override in current}
    added = {_key(override) for override in original if override.startswith("+")}
    merged = [o for o in original if _key(o) not in current_keys and _key(o) != "ckpt_path"]
    for override in current:
        if _key(override) in added and not override.startswith(("+", "~")):
            override = "+" + override
        merged.append(override)
    return merged


def run_folder() -> Path:
    """This job's folder (Hydra's runtime.output_dir)."""
    return Path(HydraConfig.get().runtime.output_dir)


def _compose(overrides: list[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():  # inside diffusion-train's @hydra.main
        return hydra.compose("train", overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra.compose("train", overrides=overrides)


def resumed_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` itself unless ``resume`` is set; then the run's config composed again (see the
    module docstring). Raises, naming what is accepted, for a folder that is not a run's."""
    if cfg.get("resume") is None:
        return cfg
    folder = run_folder()
    if (
        not (folder / RUN_OVERRIDES).is_file()
        or not (folder / CHECKPOINTS_DIR / LAST_FILE).is_file()
    ):
        raise MissingInputError(
            f"resume={cfg.resume}: no run folder with {RUN_OVERRIDES} and checkpoints/{LAST_FILE} "
            f"there (looked in {str(folder)!r}); accepted: a diffusion-train run folder "
            "(outputs/train/runs/<datetime>, a multirun job folder) or last (the newest run's)"
        )
    if cfg.get("ckpt_path") is not None:
        raise InputError(
            f"resume={cfg.resume} and ckpt_path={cfg.ckpt_path} exclude each other: resume "
            "continues a run in its folder from its last.ckpt; ckpt_path starts a new run folder"
        )
    original = [str(o) for o in OmegaConf.load(folder / RUN_OVERRIDES)]
    overrides = merge_overrides(original, list(HydraConfig.get().overrides.task))
    log.info("resuming the run in %s with the overrides %s", folder, overrides)
    return _compose(overrides)


def checkpoint_to_fit_from(cfg: DictConfig) -> Path | None:
    """The checkpoint ``trainer.fit`` starts from, checked: with ``resume`` the run folder's
    last.ckpt; else ``ckpt_path`` (a .ckpt, a run folder: its last.ckpt, ``last`` or ``best``:
    the newest run's); None to start afresh."""
    if cfg.get("resume") is not None:
        checkpoint = run_folder() / CHECKPOINTS_DIR / LAST_FILE
    elif cfg.get("ckpt_path") is not None:
        checkpoint = resolve_checkpoint(cfg.ckpt_path, prefer="last")
    else:
        return None
    check_checkpoint(checkpoint)
    return checkpoint
