"""The multirun summary: one row per job of a sweep folder, written as summary.csv and summary.md.

A job's status comes from the files it left (see results.py):

    ok           result.json says ok
    interrupted  interrupted.json is there (preempted; resuming removes it)
    failed       result.json says failed (its error's first line is in the row)
    killed       neither file: the job died without a word (SIGKILL, lost node, out of memory)
    running      as killed, but only while the sweep is still going (rebuilt as a job ends)
"""

from __future__ import annotations

import csv
import fcntl
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from diffusion_lab.runs import sweep_jobs
from diffusion_lab.sweeps.results import INTERRUPTED_FILE, RESULT_FILE, read_json
from diffusion_lab.visualize import atomic_write

SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")
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
        raise FileNotFoundError(
            f"{sweep} is not a folder; pass a multirun folder, e.g. "
            "outputs/train/multiruns/<datetime>"
        )
    if (sweep / ".hydra" / "overrides.yaml").is_file():
        raise ValueError(
            f"{sweep} is a single run's folder, not a sweep: pass the multirun folder above its "
            "jobs (outputs/train/multiruns/<datetime>, written by diffusion-train -m)"
        )
    try:
        sweep_jobs(sweep)
    except FileNotFoundError as error:
        raise ValueError(f"{sweep} is not a sweep folder: {error}") from None
    return sweep


def _configured_metric(job: Path) -> tuple[str, str]:
    """(optimized_metric, direction) from the job's saved config, for a job that left no result."""
    try:
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        metric = OmegaConf.select(cfg, "optimized_metric", default="val/loss")
        direction = OmegaConf.select(cfg, "optimized_metric_direction", default="minimize")
        return str(metric), str(direction)
    except Exception:  # an old or hand-edited config: the default is the honest guess
        return "val/loss", "minimize"


def _last_grid(job: Path) -> Path | None:
    grids = sorted((job / "samples").glob("epoch_*.png"))
    return grids[-1] if grids else None


def read_job(job: Path, live: bool = False) -> JobRow:
    """One job folder's row; ``live``: the sweep is still running, so a silent job is running."""
    overrides = [str(item) for item in OmegaConf.load(job / ".hydra" / "overrides.yaml")]
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


def summary_csv(rows: Sequence[JobRow]) -> str:
    header, cells = table(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if cell is None else cell for cell in line] for line in cells])
    return buffer.getvalue()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def summary_markdown(rows: Sequence[JobRow], title: str) -> str:
    """A Markdown table, one row per job, with the overrides that tell the jobs apart."""
    common, varying = varying_overrides(rows)
    header, cells = table(rows, varying)
    drop = {"optimized_metric", "direction"}  # said once above the table when all jobs agree
    metrics = {(row.optimized_metric, row.direction) for row in rows}
    if len(metrics) != 1:
        drop = set()
    if not any(row.error for row in rows):
        drop.add("error")
    keep = [index for index, name in enumerate(header) if name not in drop]
    lines = [f"# Sweep {title}", ""]
    if len(metrics) == 1:
        ((metric, direction),) = metrics
        lines.append(f"Optimised: `{metric}` ({direction}); column `optimized_value`.")
    best = best_row(rows)
    if best is not None:
        shown = " ".join(varying[rows.index(best)]) or "(no overrides)"
        lines.append(f"Best: job {best.job} (`{shown}`), {best.value:.4g}.")
    counts = ", ".join(
        f"{sum(r.status == s for r in rows)} {s}"
        for s in STATUSES
        if any(r.status == s for r in rows)
    )
    lines.append(f"Jobs: {len(rows)} ({counts}).")
    if common:
        lines.append(f"Common to all jobs: `{' '.join(common)}`.")
    lines += ["", "| " + " | ".join(header[i] for i in keep) + " |"]
    lines.append("|" + "|".join("---" for _ in keep) + "|")
    for line in cells:
        lines.append("| " + " | ".join(_cell(line[i]) for i in keep) + " |")
    return "\n".join(lines) + "\n"


@contextmanager
def summary_lock(sweep: Path) -> Iterator[None]:
    """One writer at a time (jobs of a parallel launcher end together): whoever holds the lock
    reads every job afresh, so the last writer has seen every result written before it."""
    with open(sweep / ".summary.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_summary(sweep_dir: str | Path, live: bool = False) -> list[JobRow]:
    """Rebuild summary.csv, summary.md and summary.png in ``sweep_dir``; returns the rows."""
    from diffusion_lab.sweeps.plot import summary_figure  # matplotlib: only when writing

    sweep = check_sweep_dir(sweep_dir)
    with summary_lock(sweep):
        rows = read_sweep(sweep, live)
        with atomic_write(sweep / "summary.csv") as stream:
            stream.write(summary_csv(rows).encode())
        with atomic_write(sweep / "summary.md") as stream:
            stream.write(summary_markdown(rows, sweep.name).encode())
        summary_figure(rows, sweep / "summary.png")
    return rows
