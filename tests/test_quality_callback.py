"""The in-training quality panel: it logs quality/<name>/{class_acc,fid,kid} every N epochs (DDPM
only after the last), its numbers are diffusion-eval's for the same checkpoint, noise and sampler,
and it reuses the cached judge."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_train import run_train

from diffusion_lab import CONFIG_DIR
from diffusion_lab.callbacks import QualityPanel
from diffusion_lab.evaluate import run_evaluation

# a tiny panel: 4 images per class, a one-epoch judge; the sampler group's DDIM at 5 steps (TINY)
QUALITY = [
    "callbacks.quality.every_n_epochs=2",
    "callbacks.quality.n_per_class=4",
    "callbacks.quality.kid_subset_size=10",
    "callbacks.quality.classifier.epochs=1",
    "callbacks.quality.final_samplers.ddpm=${callbacks.samples.samplers.ddpm}",  # off by default
]
SAME_IN_EVAL = ["n_per_class=4", "kid_subset_size=10", "classifier.epochs=1", "seed=0"]


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory) -> tuple[Path, str]:
    """Three real epochs on the digits (T = 20) with the CSV logger: (run folder, its output)."""
    run_dir = tmp_path_factory.mktemp("quality") / "run"
    result = run_train(
        run_dir, "trainer.max_epochs=3", "logger=csv", "callbacks.samples.animate=false", *QUALITY
    )
    return run_dir, result.stdout + result.stderr


def logged(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def epoch_values(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    return {int(row["epoch"]): float(row[key]) for row in rows if row.get(key)}


def test_the_panel_is_logged_every_n_epochs_and_ddpm_after_the_last(quality_run):
    run_dir, output = quality_run
    rows = logged(run_dir)
    for key in ("class_acc", "fid", "kid", "seconds", "nfe"):
        assert sorted(epoch_values(rows, f"quality/ddim/{key}")) == [1, 2], key  # 2nd and last
        assert sorted(epoch_values(rows, f"quality/ddpm/{key}")) == [2], key  # the last only
    assert set(epoch_values(rows, "quality/ddim/nfe").values()) == {5.0}
    assert epoch_values(rows, "quality/ddpm/nfe") == {2: 20.0}
    for value in epoch_values(rows, "quality/ddim/class_acc").values():
        assert 0.0 <= value <= 1.0
    assert len(epoch_values(rows, "quality/judge_val_accuracy")) == 1  # logged once
    assert output.count("quality judge: val accuracy") == 1


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_the_callback_gives_diffusion_evals_numbers(quality_run, tmp_path, name):
    """The last epoch's quality/<name>/* equal diffusion-eval's on last.ckpt with the same noise
    (seed), sampler and options (up to the float32 that logged values are stored in)."""
    run_dir, _ = quality_run
    at_the_end = {
        key: epoch_values(logged(run_dir), f"quality/{name}/{key}")[2]
        for key in ("class_acc", "fid", "kid")
    }
    sampler = ["sampler=ddim", "sampler.steps=5"] if name == "ddim" else ["sampler=ddpm"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "evaluate",
            [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "device=cpu"]
            + sampler
            + SAME_IN_EVAL,
        )
    (row,) = [row for row in run_evaluation(cfg, tmp_path)["rows"] if row["sampler"] == name]
    assert at_the_end["class_acc"] == pytest.approx(row["class_accuracy"], rel=1e-6)
    assert at_the_end["fid"] == pytest.approx(row["fid"], rel=1e-6)
    assert at_the_end["kid"] == pytest.approx(row["kid_mean"], rel=1e-6, abs=1e-9)


def test_the_judge_of_a_second_run_comes_from_the_cache(quality_run, tmp_path):
    _, first_output = quality_run
    second = run_train(
        tmp_path / "run",
        "trainer.max_epochs=1",
        "logger=csv",
        "callbacks.samples.animate=false",
        *QUALITY,
    )
    output = second.stdout + second.stderr
    assert "judge from the cache" in output and "judge trained" not in output


def test_bad_options_name_the_value():
    with pytest.raises(ValueError, match="callbacks.quality.n_per_class must be an integer >= 1"):
        QualityPanel(sampler=lambda schedule: None, n_per_class=0)
    with pytest.raises(ValueError, match="metric_direction must be one of"):
        QualityPanel(sampler=lambda schedule: None, metric_direction="down")
    with pytest.raises(ValueError, match="has no sampler to score"):
        QualityPanel()
