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

from diffusion_lab.evaluation.study import ROW_FIELDS
from diffusion_lab.visualize import atomic_write

CSV_FILE = "results.csv"
MARKDOWN_FILE = "results.md"
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
        "| sampler | steps | eta | NFE | seconds | images/s | class accuracy | FID | KID (mean ± std) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = {"ddpm": "DDPM", "ddim": "DDIM"}.get(row["sampler"], row["sampler"])
        cells = [
            name,
            _cell(row["steps"], 0),
            _cell(row["eta"], 1),
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
