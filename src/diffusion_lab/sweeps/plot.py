"""summary.png: every job's last sample grid side by side, titled with the overrides that tell the
jobs apart, above a bar chart of the optimised metric (best job green, jobs without a value red)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from diffusion_lab.sweeps.rows import JobRow, best_row, varying_overrides
from diffusion_lab.utils.io import atomic_write

COLUMNS = 4  # grids per row of the figure
FAILED = "tab:red"
BEST = "tab:green"
OTHER = "tab:blue"


def _title(row: JobRow, overrides: Sequence[str]) -> str:
    text = textwrap.fill(" ".join(overrides) or "(no overrides)", width=34)
    value = f"{row.optimized_metric} = {row.value:.4g}" if row.value is not None else row.status
    return f"job {row.job}: {text}\n{value}"


def summary_figure(rows: Sequence[JobRow], path: Path) -> Path:
    """Write the figure to ``path`` (PNG, atomically)."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global state
    from PIL import Image

    _, varying = varying_overrides(rows)
    columns = max(1, min(COLUMNS, len(rows)))
    grid_rows = math.ceil(len(rows) / columns)
    figure = Figure(figsize=(4.2 * columns, 4.0 * grid_rows + 3.2), layout="constrained")
    panels = figure.add_gridspec(grid_rows + 1, columns, height_ratios=[4.0] * grid_rows + [3.2])
    for index, row in enumerate(rows):
        axes = figure.add_subplot(panels[index // columns, index % columns])
        axes.set_axis_off()
        failed = row.status != "ok"
        axes.set_title(_title(row, varying[index]), fontsize=8, color=FAILED if failed else "black")
        if row.grid is not None:
            with Image.open(row.grid) as picture:
                axes.imshow(picture.convert("RGB"))
        else:
            axes.text(0.5, 0.5, f"no samples\n({row.status})", ha="center", va="center")
    bars = figure.add_subplot(panels[grid_rows, :])
    best = best_row(rows)
    values = [row.value if row.value is not None else 0.0 for row in rows]
    colors = [BEST if row is best else OTHER if row.value is not None else FAILED for row in rows]
    positions = range(len(rows))
    bars.bar(positions, values, color=colors)
    for position, row in zip(positions, rows):
        if row.value is None:
            bars.annotate(row.status, (position, 0), ha="center", va="bottom", color=FAILED)
    bars.set_xticks(list(positions), [f"job {row.job}" for row in rows])
    metrics = sorted({row.optimized_metric for row in rows})
    direction = rows[0].direction if rows else "minimize"
    label = metrics[0] if len(metrics) == 1 else "optimised metric"
    bars.set_ylabel(label)
    bars.set_title(f"{label} ({direction}; best green, no value red)", fontsize=9)
    with atomic_write(path) as stream:
        figure.savefig(stream, format="png", dpi=100)
    return path
