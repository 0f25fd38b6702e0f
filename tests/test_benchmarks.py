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
import torch

from diffusion_lab.utils.native_bf16 import auto_precision

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
COMPARE = BENCHMARKS / "compare.py"
PEAK = BENCHMARKS / "peak.py"
SAMPLING_SPEED = BENCHMARKS / "sampling_speed.py"
TINY_PEAK = [
    "--matmul-size",
    "32",
    "--conv-batch",
    "2",
    "--conv-channels",
    "4",
    "--conv-height",
    "8",
]
TINY = ["model.n_feat=8", "data.batch_size=16", "scheduler.timesteps=20", "sampler.steps=5"]


def load_compare():
    spec = importlib.util.spec_from_file_location("compare", COMPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_computed_from_the_timings():
    compare = load_compare()
    fp32 = {"precision": "32-true", "flops_per_step": 4e9}  # 4 GFLOP per step
    rows = {
        "course": {"steady_s": 2.0, "warmup_s": 0.5, "loader": "torch", "peak_mib": None} | fp32,
        "plain-index": {"steady_s": 1.0, "warmup_s": 0.1, "loader": "index", "peak_mib": None}
        | fp32,
        "lightning": {"steady_s": 0.8, "warmup_s": 3.0, "loader": "index", "peak_mib": 12.0}
        | {"precision": "bf16-mixed", "flops_per_step": 4e9},
    }
    peaks = {"matmul": {"fp32": 20.0, "bf16": 50.0}}  # GFLOP/s
    compare.summarise(rows, batch_size=16, steps=4, peaks=peaks)  # 64 images, 16 GFLOP per row
    assert [rows[n]["images_per_s"] for n in rows] == pytest.approx([32.0, 64.0, 80.0])
    assert [rows[n]["ms_per_step"] for n in rows] == pytest.approx([500.0, 250.0, 200.0])
    assert [rows[n]["vs_course"] for n in rows] == pytest.approx([1.0, 2.0, 2.5])
    assert [rows[n]["gflops"] for n in rows] == pytest.approx([8.0, 16.0, 20.0])
    # each row against the peak of its own precision: fp32 20, bf16 50 GFLOP/s
    assert [rows[n]["peak_fraction"] for n in rows] == pytest.approx([0.4, 0.8, 0.4])
    assert rows["course"]["vs_plain"] is None  # no plain-torch row to compare the torch loader with
    assert rows["lightning"]["vs_plain"] == pytest.approx(1.25)
    lines = compare.table(rows).splitlines()
    assert (
        lines[-1]
        == "| lightning | bf16-mixed | 80 | 200.0 | 3.0 | 2.50x | 1.250x | 20.0 | 40 | 12 |"
    )
    assert lines[2] == "| course | 32-true | 32 | 500.0 | 0.5 | 1.00x | - | 8.0 | 40 | - |"
    compare.summarise(rows, batch_size=16, steps=4)  # no peaks: no share of them
    assert compare.table(rows).splitlines()[2].endswith("| 8.0 | - | - |")


def test_a_training_steps_flops_are_the_nets_forward_and_backward():
    """FlopCounterMode's count for one step of a one-conv net: 2 MACs-to-FLOPs x (forward,
    input gradient, weight gradient) = 3 x 2 B C_out C_in k^2 H W."""
    compare = load_compare()
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    flops = compare.peak.counted_flops(lambda: conv(x).sum().backward())
    assert flops == 3 * 2 * 4 * 5 * 3 * 9 * 8 * 8


def run_script(*command: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_peak_measures_matmul_and_conv_in_fp32_and_bf16(tmp_path: Path) -> None:
    out = tmp_path / "peak.json"
    result = run_script(str(PEAK), *TINY_PEAK, "--repeats", "2", "--json", str(out))
    peaks = json.loads(out.read_text())
    for kernel in ("matmul", "conv", "conv_nchw", "conv_nhwc"):
        assert set(peaks[kernel]) == {"fp32", "bf16"} and min(peaks[kernel].values()) > 0
    assert peaks["conv"]["bf16"] == max(peaks["conv_nchw"]["bf16"], peaks["conv_nhwc"]["bf16"])
    assert peaks["setting"]["matmul_size"] == 32
    assert "| matmul |" in result.stdout


def test_sampling_speed_has_fp32_and_bf16_rows() -> None:
    result = run_script(
        str(SAMPLING_SPEED), "--n", "2", "--n-feat", "8", "--timesteps", "5",
        "--ddim-steps", "2", "--dpm-steps", "2",
    )  # fmt: skip
    rows = [line for line in result.stdout.splitlines() if line.startswith("| DDIMSampler")]
    assert [row.split("|")[2].strip() for row in rows] == ["32-true", "bf16-mixed"]
    assert rows[0].split("|")[8].strip() == "1.00x"  # fp32 against itself


def test_compare_times_the_course_plain_and_lightning_rows_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    peak_json = tmp_path / "peak.json"
    run_script(str(PEAK), *TINY_PEAK, "--repeats", "1", "--json", str(peak_json))
    # one row of each kind: the course's loop, a plain loop (in bf16), Lightning, perf=fast
    rows = ["course", "plain-bf16", "lightning", "lightning-fast"]
    command = [sys.executable, str(COMPARE), "--steps", "2", "--warmup", "1", "--images", "120"]
    command += ["--rows", *rows, "--extras", "--logger", "none", "--json", str(out)]
    command += ["--peak", str(peak_json)]
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
    assert "| lightning | 32-true |" in result.stdout  # the table is printed too
    precisions = {name: row["precision"] for name, row in report["rows"].items()}
    assert precisions["plain-bf16"] == "bf16-mixed" and precisions["lightning"] == "32-true"
    assert precisions["lightning-fast"] == auto_precision("cpu")  # perf=fast: bf16 where native
    flops = {row["flops_per_step"] for row in report["rows"].values()}
    assert len(flops) == 1 and flops.pop() > 0  # one setting: one step's FLOPs for every row
    for name, row in report["rows"].items():
        assert row["gflops"] > 0 and row["peak_fraction"] > 0, name
    assert report["peaks"]["matmul"].keys() == {"fp32", "bf16"}
