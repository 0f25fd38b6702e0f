"""benchmarks/compare.py: its arithmetic on known timings, and a tiny run of every kind of row that
writes the table as JSON (the run's timings are not checked: timings are taken on a quiet machine,
never asserted in tests)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

COMPARE = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"
TINY = ["model.n_feat=8", "data.batch_size=16", "scheduler.timesteps=20", "sampler.steps=5"]


def load_compare():
    spec = importlib.util.spec_from_file_location("compare", COMPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_computed_from_the_timings():
    compare = load_compare()
    rows = {
        "course": {"steady_s": 2.0, "warmup_s": 0.5, "loader": "torch", "peak_mib": None},
        "plain-index": {"steady_s": 1.0, "warmup_s": 0.1, "loader": "index", "peak_mib": None},
        "lightning": {"steady_s": 0.8, "warmup_s": 3.0, "loader": "index", "peak_mib": 12.0},
    }
    compare.summarise(rows, batch_size=16, steps=4)  # 64 images in each row's steady time
    assert [rows[n]["images_per_s"] for n in rows] == pytest.approx([32.0, 64.0, 80.0])
    assert [rows[n]["ms_per_step"] for n in rows] == pytest.approx([500.0, 250.0, 200.0])
    assert [rows[n]["vs_course"] for n in rows] == pytest.approx([1.0, 2.0, 2.5])
    assert rows["course"]["vs_plain"] is None  # no plain-torch row to compare the torch loader with
    assert rows["lightning"]["vs_plain"] == pytest.approx(1.25)
    lines = compare.table(rows).splitlines()
    assert lines[-1] == "| lightning | 80 | 200.0 | 3.0 | 2.50x | 1.250x | 12 |"
    assert lines[2] == "| course | 32 | 500.0 | 0.5 | 1.00x | - | - |"


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
        assert row["steady_s"] > 0 and row["warmup_s"] >= 0, name
    assert report["rows"]["lightning"]["loader"] == "index"
    assert set(report["extras"]) == {
        "validation_pass_s",
        "epoch_grid_s",
        "final_gif_s",
        "checkpoint_save_s",
    }
    assert "| lightning-fused |" in result.stdout  # the table is printed too
