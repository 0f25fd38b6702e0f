"""benchmarks/compare.py runs every kind of row and writes its table as JSON (tiny setting; its
numbers are not checked: timings are taken on a quiet machine, never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

COMPARE = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"
TINY = ["model.n_feat=8", "data.batch_size=16", "scheduler.timesteps=20", "sampler.steps=5"]


def test_compare_times_the_course_plain_and_lightning_rows_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    rows = ["course", "plain-index", "lightning", "lightning-fused"]
    command = [sys.executable, str(COMPARE), "--steps", "2", "--warmup", "1", "--images", "120"]
    command += ["--rows", *rows, "--extras", "--logger", "none", "--json", str(out)]
    result = subprocess.run(
        [*command, "--override", *TINY], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["rows"]) == rows
    assert report["setting"] == {
        "batch_size": 16,
        "n_feat": 8,
        "image": [3, 16, 16],
        "timesteps": 20,
    }
    for name, row in report["rows"].items():
        assert row["images_per_s"] > 0 and row["ms_per_step"] > 0, name
        assert row["images_per_s"] * row["ms_per_step"] / 1000 == pytest.approx(16), name
    assert report["rows"]["course"]["vs_course"] == 1.0
    assert report["rows"]["plain-index"]["vs_plain"] == 1.0
    assert report["rows"]["lightning"]["loader"] == "index"
    assert set(report["extras"]) == {
        "validation_pass_s",
        "epoch_grid_s",
        "final_gif_s",
        "checkpoint_save_s",
    }
    assert "| lightning-fused |" in result.stdout  # the table is printed too
