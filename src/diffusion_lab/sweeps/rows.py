"""One row per job of a sweep folder, read from the files the job left behind.

A job's status comes from the files it left (see results.py):

    ok           result.json says ok
    interrupted  interrupted.json is there (preempted; resuming removes it)
    failed       result.json says failed (its error's first line is in the row)
    killed       neither file: the job died without a word (SIGKILL, lost node, out of memory)
    running      as killed, but only while the sweep is still going (rebuilt as a job ends)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from diffusion_lab.runs.layout import (
    GRID_PATTERN,
    INTERRUPTED_FILE,
    RESULT_FILE,
    RUN_CONFIG,
    RUN_OVERRIDES,
    SAMPLES_DIR,
    sweep_jobs,
)
from diffusion_lab.utils.checks import InputError, MissingInputError
from diffusion_lab.utils.io import read_json

STATUSES = ("ok", "failed", "interrupted", "killed", "running")


@dataclass
class JobRow:
    """What one job of a sweep left behind."""

    job: str
    overrides: list[str]
    status: str
    epochs: int | None = None
    seconds: float | None = None
    val_loss: float | None = None
    optimized_metric: str = "val/loss"
    value: float | None = None
    direction: str = "minimize"
    quality: dict[str, float] = field(default_factory=dict)
    error: str = ""
    grid: Path | None = None  # the last samples/epoch_*.png


def check_sweep_dir(sweep_dir: str | Path) -> Path:
    """``sweep_dir`` as a Path if it is a multirun folder (job folders with .hydra/overrides.yaml)."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise MissingInputError(
            f"{sweep} is not a folder; pass a multirun folder, e.g. "
            "outputs/train/multiruns/<datetime>"
        )
    if (sweep / RUN_OVERRIDES).is_file():
        raise InputError(
            f"{sweep} is a single run's folder, not a sweep: pass the multirun folder above its "
            "jobs (outputs/train/multiruns/<datetime>, written by diffusion-train -m)"
        )
    try:
        sweep_jobs(sweep)
    except FileNotFoundError as error:
        raise InputError(f"{sweep} is not a sweep folder: {error}") from None
    return sweep


def _configured_metric(job: Path) -> tuple[str, str]:
    """(optimized_metric, direction) from the job's saved config, for a job that left no result."""
    try:
        cfg = OmegaConf.load(job / RUN_CONFIG)
        metric = OmegaConf.select(cfg, "optimized_metric", default="val/loss")
        direction = OmegaConf.select(cfg, "optimized_metric_direction", default="minimize")
        return str(metric), str(direction)
    except Exception:  # an old or hand-edited config: the default is the honest guess
        return "val/loss", "minimize"


def _last_grid(job: Path) -> Path | None:
    grids = sorted((job / SAMPLES_DIR).glob(GRID_PATTERN))
    return grids[-1] if grids else None


def read_job(job: Path, live: bool = False) -> JobRow:
    """One job folder's row; ``live``: the sweep is still running, so a silent job is running."""
    overrides = [str(item) for item in OmegaConf.load(job / RUN_OVERRIDES)]
    result = read_json(job / RESULT_FILE) or {}
    if "optimized_metric" not in result:
        result["optimized_metric"], result["direction"] = _configured_metric(job)
    metrics = result.get("metrics") or {}
    if result.get("status") == "ok":
        status = "ok"
    elif (job / INTERRUPTED_FILE).is_file():
        status = "interrupted"
    elif result.get("status") == "failed":
        status = "failed"
    else:
        status = "running" if live else "killed"
    return JobRow(
        job=job.name,
        overrides=overrides,
        status=status,
        epochs=result.get("epochs"),
        seconds=result.get("seconds"),
        val_loss=metrics.get("val/loss"),
        optimized_metric=str(result.get("optimized_metric", "val/loss")),
        value=result.get("value") if status == "ok" else None,
        direction=str(result.get("direction", "minimize")),
        quality={key: value for key, value in metrics.items() if key.startswith("quality/")},
        error=str(result.get("error", "")),
        grid=_last_grid(job),
    )


def read_sweep(sweep_dir: str | Path, live: bool = False) -> list[JobRow]:
    """Every job's row, in job-number order."""
    return [read_job(job, live) for job in sweep_jobs(check_sweep_dir(sweep_dir))]


def varying_overrides(rows: Sequence[JobRow]) -> tuple[list[str], list[list[str]]]:
    """(overrides every job shares, each job's others): the others tell the jobs apart."""
    if len(rows) < 2:
        return [], [row.overrides for row in rows]
    common = [item for item in rows[0].overrides if all(item in row.overrides for row in rows)]
    return common, [[item for item in row.overrides if item not in common] for row in rows]


def best_row(rows: Sequence[JobRow]) -> JobRow | None:
    """The ok job with the best optimised value (by its direction), or None."""
    scored = [row for row in rows if row.value is not None and math.isfinite(row.value)]
    if not scored:
        return None
    sign = -1.0 if scored[0].direction == "maximize" else 1.0
    return min(scored, key=lambda row: sign * row.value)


def quality_columns(rows: Sequence[JobRow]) -> list[str]:
    return sorted({key for row in rows for key in row.quality})


def table(
    rows: Sequence[JobRow], overrides: Sequence[Sequence[str]] | None = None
) -> tuple[list[str], list[list[object]]]:
    """(header, one list of cells per job); ``overrides`` replaces each job's full override list."""
    quality = quality_columns(rows)
    header = ["job", "overrides", "status", "epochs", "seconds", "val/loss"]
    header += ["optimized_metric", "optimized_value", "direction", *quality, "error"]
    cells = []
    for index, row in enumerate(rows):
        shown = overrides[index] if overrides is not None else row.overrides
        cells.append(
            [row.job, " ".join(shown), row.status, row.epochs, row.seconds, row.val_loss]
            + [row.optimized_metric, row.value, row.direction]
            + [row.quality.get(key) for key in quality]
            + [row.error]
        )
    return header, cells
