"""The sweep's summary table in Weights & Biases: one run of job_type ``summary`` in the sweep's
group (the group every job of the sweep logs to), offline exactly when the jobs were."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diffusion_lab.loggers import wandb_offline
from diffusion_lab.sweeps.summary import JobRow, table


def sweep_group(job_name: str, sweep_dir: str | Path) -> str:
    """The W&B group shared by one multirun's jobs, e.g. ``train-2026-01-01_12-00-00-000000``."""
    return f"{job_name}-{Path(sweep_dir).name}"


def wandb_settings(config: DictConfig, sweep_dir: str | Path) -> dict[str, Any] | None:
    """project, entity, group and offline of the sweep's W&B logger, or None without one."""
    for logger_cfg in (OmegaConf.select(config, "logger") or {}).values():
        if str(logger_cfg.get("_target_", "")).endswith("make_wandb_logger"):
            job_name = OmegaConf.select(config, "hydra.job.name", default="train")
            return {
                "project": logger_cfg.get("project"),
                "entity": logger_cfg.get("entity"),
                "group": logger_cfg.get("group") or sweep_group(job_name, config.hydra.sweep.dir),
                "offline": logger_cfg.get("offline"),
            }
    return None


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
