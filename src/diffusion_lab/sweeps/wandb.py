"""The sweep's summary table in Weights & Biases: one run of job_type ``summary`` in the sweep's
group (the group every job of the sweep logs to), offline exactly when the jobs were."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diffusion_lab.resolvers import sweep_group
from diffusion_lab.runs.loggers import wandb_offline
from diffusion_lab.sweeps.rows import JobRow, table

WANDB_LOGGER_KEY = "wandb"  # conf/logger/wandb.yaml: the W&B logger is cfg.logger.wandb


def wandb_settings(config: DictConfig | None, sweep_dir: str | Path) -> dict[str, Any] | None:
    """project, entity, group and offline of the sweep's W&B logger (``logger.wandb``), or None
    when the sweep logs elsewhere. The group is the jobs' (``sweep_group``), computed from the
    sweep folder unless the config names one literally."""
    logger_cfg = OmegaConf.select(config, f"logger.{WANDB_LOGGER_KEY}") if config else None
    if logger_cfg is None:
        return None
    job_name = OmegaConf.select(config, "hydra.job.name", default="train")
    group = OmegaConf.to_container(logger_cfg, resolve=False).get("group")  # "${...}" unresolved
    if not isinstance(group, str) or "${" in group:
        group = sweep_group("MULTIRUN", job_name, sweep_dir)
    return {
        "project": logger_cfg.get("project"),
        "entity": logger_cfg.get("entity"),
        "group": group,
        "offline": logger_cfg.get("offline"),
    }


def log_summary(
    sweep: Path,
    rows: Sequence[JobRow],
    project: str | None,
    entity: str | None,
    group: str,
    offline: bool | None = None,
) -> Path:
    """Log the table (and summary.png) as one W&B run in ``group``; returns the run's folder."""
    import wandb

    header, cells = table(rows)
    run = wandb.init(
        project=project,
        entity=entity,
        group=group,
        job_type="summary",
        name=f"summary-{sweep.name}",
        dir=str(sweep),
        mode="offline" if wandb_offline(offline) else "online",
        config={"sweep_dir": str(sweep.resolve()), "jobs": len(rows)},
    )
    try:
        logged: dict[str, Any] = {
            "sweep/summary": wandb.Table(columns=header, data=cells, allow_mixed_types=True)
        }
        if (sweep / "summary.png").is_file():
            logged["sweep/summary_png"] = wandb.Image(str(sweep / "summary.png"))
        run.log(logged)
        return Path(run.dir).parent
    finally:
        run.finish()
