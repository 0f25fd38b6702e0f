"""The multirun summary: summary.csv, summary.md and summary.png in the sweep folder, one row per
job (sweeps/rows.py), rebuilt under a lock as jobs end."""

from __future__ import annotations

import csv
import fcntl
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from diffusion_lab.sweeps.rows import (
    STATUSES,
    JobRow,
    best_row,
    check_sweep_dir,
    read_sweep,
    table,
    varying_overrides,
)
from diffusion_lab.utils.io import atomic_write


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
