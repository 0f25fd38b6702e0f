"""diffusion-eval and its room: the judge learns, the metrics measure what they claim (0 for a set
against itself, growing with a shift), the study runs every sampler on a checkpoint trained once for
real, the CLI writes its table, and a checkpoint/data mismatch fails before any output exists."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from diffusion_lab import CONFIG_DIR
from diffusion_lab.data import DigitsSource
from diffusion_lab.diffusion import DDIMSampler
from diffusion_lab.evaluate import build_samplers, run_evaluation
from diffusion_lab.evaluation import (
    ImageClassifier,
    class_accuracy,
    drop_steps_above,
    expand_panel,
    feature_distances,
    run_study,
    train_classifier,
)
from diffusion_lab.evaluation.classifier import uint8_to_unit_range
from diffusion_lab.evaluation.report import plot_lines
from diffusion_lab.evaluation.study import ROW_FIELDS, study_inputs
from diffusion_lab.runs.checkpoints import load_module, resolve_checkpoint

# a tiny net gains nothing from threads, and two processes that each spin two on two cores run
# several times slower (as in test_notebooks)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY_T = 20  # the tiny checkpoint's scheduler.timesteps (test_train.TINY)
RESULT_FILES = ("results.csv", "results.md", "results.png")
DDPM = {"_target_": "diffusion_lab.diffusion.DDPMSampler", "_partial_": True}
DDIM = {"_target_": "diffusion_lab.diffusion.DDIMSampler", "_partial_": True}
NEW_FAMILIES = ("dpmpp", "dpmpp_sde", "euler", "heun")  # in diffusion-eval's default panel


class ScaledDDIM(DDIMSampler):
    """A sampler that diffusion_lab does not know: DDIM on eps / eps_scale (epsilon scaling). It
    plugs into the study through its config alone."""

    def __init__(self, schedule, steps: int = 25, eps_scale: float = 1.0) -> None:
        super().__init__(schedule, steps=steps)
        self.eps_scale = eps_scale

    def predict_eps(self, *args, **kwargs):
        return super().predict_eps(*args, **kwargs) / self.eps_scale


def dark_and_bright(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A trivially separable toy problem: uint8 (n, 1, 8, 8) images around 40 (class 0) or 200
    (class 1), plus uniform noise of +-40 per pixel; labels alternate 0, 1, 0, ..."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    base = torch.where(labels[:, None, None, None] == 1, 200, 40)
    noise = torch.randint(-40, 41, (n, 1, 8, 8), generator=generator)
    return (base + noise).clamp(0, 255).to(torch.uint8), labels


@pytest.fixture(scope="module")
def toy_judge() -> tuple[ImageClassifier, float, torch.Tensor, torch.Tensor]:
    """(classifier, its val accuracy, its float training images, their labels) on the toy."""
    train_images, train_labels = dark_and_bright(200, seed=0)
    val_images, val_labels = dark_and_bright(100, seed=1)
    judge, accuracy = train_classifier(
        train_images, train_labels, val_images, val_labels, epochs=2, batch_size=32, lr=1e-3, seed=0
    )
    return judge, accuracy, uint8_to_unit_range(train_images), train_labels


# --- the judge ----------------------------------------------------------------------------
def test_judge_learns_dark_versus_bright_far_above_chance(toy_judge):
    judge, accuracy, _, _ = toy_judge
    assert accuracy >= 0.95  # chance is 0.5
    assert not judge.training
    assert all(not parameter.requires_grad for parameter in judge.parameters())


def test_judge_is_the_same_for_the_same_seed_and_differs_for_another():
    images, labels = dark_and_bright(64, seed=2)
    runs = [
        train_classifier(images, labels, images, labels, epochs=1, batch_size=16, seed=seed)[0]
        for seed in (3, 3, 4)
    ]
    same = [torch.equal(a, b) for a, b in zip(*(r.state_dict().values() for r in runs[:2]))]
    other = [torch.equal(a, b) for a, b in zip(*(r.state_dict().values() for r in runs[1:]))]
    assert all(same) and not all(other)


def test_features_are_the_penultimate_layer_and_wrong_sizes_are_refused():
    judge = ImageClassifier(in_channels=3, num_classes=5, height=16, feature_dim=24).eval()
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    features = judge.features(images)
    assert features.shape == (6, 24) and judge(images).shape == (6, 5)
    torch.testing.assert_close(judge.head(features), judge(images))
    with pytest.raises(
        ValueError, match=r"takes images \(N, 3, 16, 16\), got shape \(6, 3, 8, 8\)"
    ):
        judge(torch.zeros(6, 3, 8, 8))
    with pytest.raises(ValueError, match="height must be an integer >= 8, got 4"):
        ImageClassifier(in_channels=1, num_classes=2, height=4)


def test_bad_training_input_names_the_value():
    images, labels = dark_and_bright(8, seed=0)
    with pytest.raises(ValueError, match=r"classifier.epochs must be an integer >= 1, got 0"):
        train_classifier(images, labels, images, labels, epochs=0)
    with pytest.raises(ValueError, match=r"train images must be uint8"):
        train_classifier(images.float(), labels, images, labels, epochs=1)
    with pytest.raises(ValueError, match=r"val labels must be in 0\.\.1, got 0\.\.2"):
        train_classifier(images, labels, images, labels + (labels > 0), epochs=1, num_classes=2)


# --- metrics ------------------------------------------------------------------------------
def test_class_accuracy_is_one_on_separable_images_and_chance_on_shuffled_labels(toy_judge):
    judge, _, images, labels = toy_judge
    assert class_accuracy(judge, images, labels) == 1.0
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert abs(class_accuracy(judge, images, shuffled) - 0.5) < 0.15
    with pytest.raises(ValueError, match=r"labels must be \(200,\)"):
        class_accuracy(judge, images, labels[:10])


def test_fid_and_kid_are_zero_for_one_distribution_and_grow_with_a_shift(toy_judge):
    judge = toy_judge[0]
    real = uint8_to_unit_range(dark_and_bright(200, seed=10)[0])
    same = uint8_to_unit_range(dark_and_bright(200, seed=11)[0])
    shifted = (same + 0.3).clamp(-1, 1)
    itself = feature_distances(judge, real, real, kid_subset_size=50)
    resampled = feature_distances(judge, real, same, kid_subset_size=50)
    moved = feature_distances(judge, real, shifted, kid_subset_size=50)
    assert abs(itself["fid"]) < 1e-6
    assert resampled["fid"] < 0.1
    assert moved["fid"] > 1.0 and moved["fid"] > 50 * resampled["fid"]
    assert abs(resampled["kid_mean"]) < 3 * resampled["kid_std"] + 1e-6  # KID is unbiased
    assert moved["kid_mean"] > resampled["kid_mean"] + 3 * resampled["kid_std"]
    assert feature_distances(judge, real, shifted, kid_subset_size=50) == moved  # seeded subsets


def test_kid_subset_size_larger_than_a_set_names_both_sizes(toy_judge):
    judge = toy_judge[0]
    real = uint8_to_unit_range(dark_and_bright(30, seed=0)[0])
    fake = uint8_to_unit_range(dark_and_bright(40, seed=1)[0])
    with pytest.raises(ValueError, match=r"kid_subset_size=35 .* 30 real images and 40 generated"):
        feature_distances(judge, real, fake, kid_subset_size=35)
    with pytest.raises(ValueError, match=r"kid_subset_size=45 .* 30 real images and 40 generated"):
        feature_distances(judge, real, fake, kid_subset_size=45)
    with pytest.raises(ValueError, match="kid_subset_size must be an integer >= 2, got 1"):
        feature_distances(judge, real, fake, kid_subset_size=1)


# --- the study's samplers and inputs ------------------------------------------------------
def test_panel_lists_expand_into_a_grid_in_order_and_null_entries_are_left_out():
    panel = {
        "ddpm": DDPM,
        "ddim": {**DDIM, "steps": [5, 50, 20], "eta": [0.0, 1.0]},
        "off": None,
    }
    entries = expand_panel(panel)
    assert [(entry.family, entry.options) for entry in entries] == [
        ("ddpm", {}),
        ("ddim", {"steps": 5, "eta": 0.0}),
        ("ddim", {"steps": 5, "eta": 1.0}),
        ("ddim", {"steps": 50, "eta": 0.0}),
        ("ddim", {"steps": 50, "eta": 1.0}),
        ("ddim", {"steps": 20, "eta": 0.0}),
        ("ddim", {"steps": 20, "eta": 1.0}),
    ]
    assert entries[1].config == {**DDIM, "steps": 5, "eta": 0.0}
    assert entries[1].label == "ddim (steps=5, eta=0.0)"
    kept, dropped = drop_steps_above(entries, 20)
    assert [entry.options.get("steps") for entry in kept] == [None, 5, 5, 20, 20]
    assert [entry.options for entry in dropped] == [
        {"steps": 50, "eta": 0.0},
        {"steps": 50, "eta": 1.0},
    ]


def test_bad_panels_name_the_problem():
    with pytest.raises(ValueError, match=r"no sampler to study: the panel .* is empty"):
        expand_panel({"ddpm": None})
    with pytest.raises(ValueError, match=r"panel entry 'ddim' must be a sampler config"):
        expand_panel({"ddim": {"steps": 5}})
    with pytest.raises(ValueError, match=r"option steps is an empty list"):
        expand_panel({"ddim": {**DDIM, "steps": []}})
    with pytest.raises(ValueError, match=r"no sampler to study: .* T=20 \(ddim \(steps=50\)\)"):
        drop_steps_above(expand_panel({"ddim": {**DDIM, "steps": 50}}), 20)


def test_study_inputs_are_n_per_class_of_each_class_from_the_seed():
    labels, contexts, noise = study_inputs(3, (1, 8, 8), n_per_class=2, seed=5)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(contexts, torch.eye(3)[labels])
    assert noise.shape == (6, 1, 8, 8)
    assert torch.equal(noise, study_inputs(3, (1, 8, 8), 2, seed=5)[2])
    assert not torch.equal(noise, study_inputs(3, (1, 8, 8), 2, seed=6)[2])


# --- on a tiny checkpoint trained once for real -------------------------------------------
@pytest.fixture(scope="module")
def trained_run(epoch_run: Path) -> Path:
    """A run folder with checkpoints from one real epoch on the digits (T = 20): conftest's
    epoch_run."""
    return epoch_run


@pytest.fixture(scope="module")
def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, val images, val labels) of the 16x16 digits: 1,597 + 200."""
    loaded = DigitsSource(image_size=16).load()
    labels = loaded.contexts.argmax(dim=1)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, val = order[200:], order[:200]
    return loaded.images[train], labels[train], loaded.images[val], labels[val]


def test_study_gives_one_row_per_sampler_with_its_nfe_and_scores(trained_run, digits_split):
    module = load_module(resolve_checkpoint(trained_run), torch.device("cpu"))
    assert module.schedule.timesteps == TINY_T
    judge, _ = train_classifier(*digits_split, epochs=1, batch_size=128, seed=0)
    real = uint8_to_unit_range(digits_split[2][:40])
    scaled = {"_target_": f"{__name__}.ScaledDDIM", "_partial_": True, "eps_scale": 1.01}
    panel = {"ddpm": DDPM, "ddim": {**DDIM, "steps": 5, "eta": [0.0, 1.0]}, "scaled": scaled}
    samplers, skipped = build_samplers(module, {**panel, "scaled": {**scaled, "steps": [3, 50]}})
    assert skipped == (
        f"Skipped, more steps than the checkpoint's T = {TINY_T}: scaled (eps_scale=1.01, steps=50)."
    )
    assert isinstance(samplers[-1][1], ScaledDDIM) and samplers[-1][1].eps_scale == 1.01
    with module.sampling_net(use_ema=True) as net:
        rows = run_study(net, samplers, judge, real, n_per_class=2, kid_subset_size=10)
    assert [(row["sampler"], row["options"], row["steps"], row["eta"]) for row in rows] == [
        ("ddpm", "", TINY_T, None),
        ("ddim", "steps=5, eta=0.0", 5, 0.0),
        ("ddim", "steps=5, eta=1.0", 5, 1.0),
        ("scaled", "eps_scale=1.01, steps=3", 3, 0.0),
    ]
    assert [row["nfe"] for row in rows] == [TINY_T, 5, 5, 3]
    for row in rows:
        assert set(row) == set(ROW_FIELDS)
        assert row["seconds"] > 0 and row["images_per_second"] == pytest.approx(20 / row["seconds"])
        assert 0.0 <= row["class_accuracy"] <= 1.0
        assert math.isfinite(row["fid"]) and row["fid"] > 0
        assert math.isfinite(row["kid_mean"]) and row["kid_std"] >= 0
    assert rows[3]["fid"] != rows[1]["fid"]  # eps / 1.01 is another sampler than plain DDIM
    # start=: every chain from the given x_T; the study's own noise gives the same scores
    _, _, noise = study_inputs(judge.num_classes, real.shape[1:], 2, seed=0)
    ddim = samplers[1:2]
    with module.sampling_net(use_ema=True) as net:
        same = run_study(net, ddim, judge, real, n_per_class=2, kid_subset_size=10, start=noise)
        other = run_study(net, ddim, judge, real, 2, kid_subset_size=10, start=noise.flip(0))
        with pytest.raises(ValueError, match=r"start must be the study's x_T shape \(20, 1, 16"):
            run_study(net, ddim, judge, real, n_per_class=2, start=noise[:3])
    assert same[0]["fid"] == rows[1]["fid"] and same[0]["kid_mean"] == rows[1]["kid_mean"]
    assert other[0]["fid"] != rows[1]["fid"]


def run_evaluate(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, writing into run_dir."""
    command = [sys.executable, "-m", "diffusion_lab.evaluate", f"hydra.run.dir={run_dir}"]
    command += ["device=cpu", *overrides]
    env = {**os.environ, **ONE_THREAD}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_cli_writes_the_table_with_the_judges_accuracy(tmp_path, trained_run):
    run_dir = tmp_path / "eval"
    result = run_evaluate(
        run_dir,
        f"ckpt_path={trained_run}",
        "n_per_class=4",
        "ddim_steps=[5,50]",
        "ddim_etas=[0.0]",
        "classifier.epochs=1",
        "kid_subset_size=10",
    )
    if result.returncode != 0:
        raise AssertionError(f"diffusion-eval failed:\n{result.stdout[-3000:]}\n{result.stderr}")
    with open(run_dir / "results.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    # digits val holds 90 images >= 2 x 40: reference and real row both come from it; the default
    # panel holds every family: DDPM-T, DDIM, DPM-Solver++ and its SDE, EDM's Euler and Heun (2N - 1)
    assert [(row["sampler"], row["steps"], row["nfe"]) for row in rows] == [
        ("real", "", ""),
        ("ddpm", str(TINY_T), str(TINY_T)),
        ("ddim", "5", "5"),
        ("dpmpp", "10", "10"),
        ("dpmpp", "20", "20"),
        ("dpmpp_sde", "20", "20"),
        ("euler", "10", "10"),
        ("heun", "18", "35"),
    ]
    assert {row["reference"] for row in rows} == {"val"}
    judge_accuracies = {row["judge_val_accuracy"] for row in rows}
    assert len(judge_accuracies) == 1 and 0.0 <= float(judge_accuracies.pop()) <= 1.0
    for row in rows:
        assert 0.0 <= float(row["class_accuracy"]) <= 1.0 and math.isfinite(float(row["fid"]))
    markdown = (run_dir / "results.md").read_text()
    assert "| sampler | options | NFE |" in markdown
    assert "| ddim | steps=5, eta=0.0, clip_denoised=True, eps_scale=1.0 | 5 |" in markdown
    assert "held-out real (val) images" in markdown
    assert f"more steps than the checkpoint's T = {TINY_T}: ddim (steps=50, eta=0.0," in markdown
    assert (
        "| ddpm | variance=beta, clip_denoised=True, eps_scale=1.0 | 20 |" in result.stdout
    )  # printed too
    with Image.open(run_dir / "results.png") as picture:
        assert picture.format == "PNG" and picture.width >= 600 and picture.height >= 400


def test_sampler_sweep_over_one_checkpoint_trains_the_judge_at_most_once(tmp_path, trained_run):
    """diffusion-eval -m sampler=ddim sampler.steps=2,5: one job per sampler, each with its own
    table of that sampler alone, the judge from the cache."""
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "diffusion_lab.evaluate", "-m", f"hydra.sweep.dir={sweep_dir}"]
    command += [f"ckpt_path={trained_run}", "device=cpu", "sampler=ddim", "sampler.steps=2,5"]
    command += ["n_per_class=4", "classifier.epochs=1", "kid_subset_size=10"]
    env = {**os.environ, **ONE_THREAD}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    for job, steps in (("0", "2"), ("1", "5")):
        with open(sweep_dir / job / "results.csv", newline="") as stream:
            rows = list(csv.DictReader(stream))
        assert [(row["sampler"], row["steps"], row["nfe"]) for row in rows] == [
            ("real", "", ""),
            ("ddim", steps, steps),
        ]
        assert (sweep_dir / job / "results.png").is_file()
    assert output.count("judge trained") <= 1 and output.count("judge from the cache") >= 1


def compose_evaluate(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("evaluate", overrides=["device=cpu", *overrides])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+data.image_size=32"], r"data.image_size=32 but the digits source gives 16x16"),
        (
            ["+data.image_size=32", "+data.source.image_size=32"],
            r"images \(1, 32, 32\) .* takes images \(1, 16, 16\)",
        ),
        (["data=sprites"], r"classes \['hero', .* of the classes \['0', '1'"),
        (["n_per_class=4", "kid_subset_size=50"], r"kid_subset_size=50 .* 40 generated"),
        (
            [
                "ddim_steps=[50]",
                *[f"panel.{name}=null" for name in NEW_FAMILIES],
                "panel.ddpm=null",
            ],
            r"no sampler to study",
        ),
        (
            ["sampler=ddim", "sampler.steps=5", "sampler.eta=2"],
            r"DDIM eta must be in \[0, 1\], got 2",
        ),
        (["+data.val_fraction=0"], r"needs held-out real images"),
    ],
    ids=[
        "image-size",
        "model-shape",
        "sprites-data",
        "kid-subset",
        "no-sampler",
        "bad-eta",
        "no-val-split",
    ],
)
def test_bad_input_fails_before_any_result_is_written(
    tmp_path, trained_run, sprites_root, overrides, message
):
    if "data=sprites" in overrides:
        overrides = [*overrides, f"data.source.root={sprites_root}"]
    cfg = compose_evaluate(f"ckpt_path={trained_run}", *overrides)
    output_dir = tmp_path / "eval"
    with pytest.raises(ValueError, match=message):
        run_evaluation(cfg, output_dir)
    for name in RESULT_FILES:
        assert not (output_dir / name).exists(), name
    assert not output_dir.exists() or not list(output_dir.iterdir())


def test_plot_lines_are_one_per_family_and_non_step_options_labelled_by_what_differs():
    rows = [{"sampler": "real", "options": None}]
    for steps, eta in ((10, 0.0), (10, 1.0), (25, 0.0), (25, 1.0)):
        rows.append({"sampler": "ddim", "options": f"steps={steps}, eta={eta}, clip=False"})
    rows.append({"sampler": "ddpm", "options": "variance=beta, clip=False"})
    lines = plot_lines(rows)
    assert list(lines) == ["ddim (eta=0.0)", "ddim (eta=1.0)", "ddpm"]
    assert [row["options"] for row in lines["ddim (eta=1.0)"]] == [
        "steps=10, eta=1.0, clip=False",
        "steps=25, eta=1.0, clip=False",
    ]
