"""The study's writers: results.csv, results.md (a Markdown table under notes that say what was
compared and by which judge) and results.png (quality against cost).

Pure Python + matplotlib; every file is written atomically, only after everything is computed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from diffusion_lab.evaluation.study import ROW_FIELDS
from diffusion_lab.utils.io import atomic_write

CSV_FILE = "results.csv"
MARKDOWN_FILE = "results.md"
PLOT_FILE = "results.png"
PLOTTED = (("class_accuracy", "class accuracy (judge)"), ("fid", "FID (judge features)"))
COSTS = (("nfe", "network calls (NFE)"), ("seconds", "seconds"))
CSV_FIELDS = (*ROW_FIELDS, "judge_val_accuracy", "reference")


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def plural(count: int, noun: str) -> str:
    """E.g. "1 epoch", "8 epochs"."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table: the real row first, then one line per sampler."""
    lines = [
        "| sampler | options | NFE | seconds | images/s | class accuracy | FID | KID (mean ± std) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [
            row["sampler"],
            row["options"] or "",
            _cell(row["nfe"], 0),
            _cell(row["seconds"], 2),
            _cell(row["images_per_second"], 1),
            _cell(row["class_accuracy"], 3),
            _cell(row["fid"], 3),
            f"{row['kid_mean']:.4f} ± {row['kid_std']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(title: str, notes: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """results.md: a title, one bullet per note (what was compared, by which judge, how far to
    trust it), then the table."""
    lines = [f"# {title}", "", *(f"- {note}" for note in notes if note)]
    return "\n".join([*lines, "", markdown_table(rows), ""])


def write_results(
    output_dir: Path, rows: Sequence[dict[str, Any]], markdown: str, extra: dict[str, Any]
) -> tuple[Path, Path]:
    """results.csv (:data:`CSV_FIELDS`, empty for None; ``extra`` in every row) and results.md,
    each written atomically."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {key: ("" if value is None else value) for key, value in {**row, **extra}.items()}
        )
    paths = (Path(output_dir) / CSV_FILE, Path(output_dir) / MARKDOWN_FILE)
    for path, text in zip(paths, (table.getvalue(), markdown)):
        with atomic_write(path) as stream:
            stream.write(text.encode("utf-8"))
    return paths


def _option_items(row: dict[str, Any]) -> list[str]:
    return [item for item in (row["options"] or "").split(", ") if item]


def plot_lines(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The samplers' rows grouped into plot lines: one per sampler family and its options other
    than the step count, labelled with the options that differ between its lines (``ddim
    (eta=1.0)``); the real row is left out."""
    samplers = [row for row in rows if row["sampler"] != "real"]
    shared: dict[str, set[str]] = {}
    for row in samplers:
        items = set(_option_items(row))
        shared[row["sampler"]] = shared.get(row["sampler"], items) & items
    lines: dict[str, list[dict[str, Any]]] = {}
    for row in samplers:
        rest = [
            item
            for item in _option_items(row)
            if not item.startswith("steps=") and item not in shared[row["sampler"]]
        ]
        label = f"{row['sampler']} ({', '.join(rest)})" if rest else row["sampler"]
        lines.setdefault(label, []).append(row)
    return lines


def results_figure(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Class accuracy and FID (rows of the figure) against NFE and seconds (columns): one line
    per sampler family and its options other than steps (:func:`plot_lines`), points ordered by
    NFE; the real row, if
    there is one, as a dashed horizontal line (what real images score with sets this size)."""
    figure = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(PLOTTED), len(COSTS), squeeze=False)
    lines = plot_lines(rows)
    real = next((row for row in rows if row["sampler"] == "real"), None)
    for (metric, metric_label), row_axes in zip(PLOTTED, axes):
        for (cost, cost_label), ax in zip(COSTS, row_axes):
            for label, points in lines.items():
                points = sorted(points, key=lambda point: point["nfe"])
                xs, ys = [p[cost] for p in points], [p[metric] for p in points]
                ax.plot(xs, ys, marker="o", label=label)
            if real is not None:
                ax.axhline(real[metric], color="grey", linestyle="--", label="real images")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^1 3x10^1 ... overlapped
            ax.set_xlabel(cost_label)
            ax.set_ylabel(metric_label)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure


def write_plot(path: Path, rows: Sequence[dict[str, Any]], title: str = "") -> Path:
    """results.png of :func:`results_figure`, written atomically."""
    buffer = io.BytesIO()
    results_figure(rows, title).savefig(buffer, format="png", dpi=100)
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())
    return Path(path)
