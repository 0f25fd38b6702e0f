"""Evaluation knows its run: diffusion-eval takes the data a checkpoint was trained with (source,
root, split seed, val fraction, image size) from the checkpoint, or for an older checkpoint from
its run folder's .hydra/config.yaml; explicit overrides stay possible and are reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_train import run_train

from diffusion_lab import CONFIG_DIR
from diffusion_lab.data import DiffusionDataModule, SpritesSource
from diffusion_lab.evaluate import load_inputs
from diffusion_lab.evaluation.data_choice import choose_data, data_changes
from diffusion_lab.runs.checkpoints import resolve_checkpoint

TRAINING_SEED = 7  # the split seed of the training run; diffusion-eval's own seed stays 0


def compose_evaluate(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("evaluate", overrides=["device=cpu", *overrides])


def sprites_val_images(root: Path, seed: int) -> torch.Tensor:
    """The val split that diffusion-train holds out of the sprites in ``root`` with ``seed``."""
    datamodule = DiffusionDataModule(
        SpritesSource(root=str(root)),
        channels=3,
        image_size=16,
        num_classes=5,
        seed=seed,
        val_fraction=0.25,
    )
    datamodule.setup()
    return datamodule.val_set.tensors[0]


def test_a_sprites_checkpoint_needs_no_data_options(tmp_path, sprites_root):
    run_dir = tmp_path / "train"
    run_train(
        run_dir,
        "data=sprites",
        f"data.source.root={sprites_root}",
        f"data.seed={TRAINING_SEED}",
        "data.val_fraction=0.25",
        "trainer.max_epochs=1",
        "logger=csv",
        "callbacks.samples.animate=false",
    )
    checkpoint = resolve_checkpoint(run_dir)
    options = ["n_per_class=2", "kid_subset_size=5", "classifier.epochs=1"]

    inputs = load_inputs(compose_evaluate(f"ckpt_path={run_dir}", *options))
    assert inputs.class_names == ["hero", "non-hero", "food", "spell", "side-facing"]
    trained_val = sprites_val_images(sprites_root, TRAINING_SEED)
    assert torch.equal(inputs.val[0], trained_val)  # the split training held out, not seed 0's
    assert not torch.equal(trained_val, sprites_val_images(sprites_root, 0))
    assert inputs.data.note == f"Data: as trained (from the checkpoint {checkpoint})."

    # overrides: reported, value by value
    inputs = load_inputs(
        compose_evaluate(f"ckpt_path={run_dir}", "+data.val_fraction=0.5", *options)
    )
    assert len(inputs.val[0]) == 20
    assert "overridden here: data.val_fraction: 0.25 -> 0.5." in inputs.data.note

    # a checkpoint without its data config (not one diffusion-train writes): ask for the data
    alone = tmp_path / "alone.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    del stored["hyper_parameters"]["data"]
    torch.save(stored, alone)
    with pytest.raises(ValueError, match=r"trained with is not stored in the checkpoint; pass it"):
        load_inputs(compose_evaluate(f"ckpt_path={alone}", *options))
    inputs = load_inputs(
        compose_evaluate(
            f"ckpt_path={alone}", "data=sprites", f"data.source.root={sprites_root}", *options
        )
    )
    assert inputs.data.note.startswith("Data: a data config given here")
    assert len(inputs.val[0]) == 2  # the sprites group's val_fraction 0.05 of 40


def test_a_whole_data_group_replaces_the_trained_one_and_every_change_is_listed(tmp_path):
    trained = {"_target_": "D", "seed": 7, "source": {"_target_": "S", "root": "a"}, "hflip": True}
    given = {"_target_": "D", "seed": 0, "source": {"_target_": "S", "root": "b"}}
    choice = choose_data(tmp_path / "checkpoints" / "x.ckpt", trained, given)
    assert choice.config == given
    assert choice.changes == [
        "data.hflip: True -> -",
        "data.seed: 7 -> 0",
        "data.source.root: a -> b",
    ]
    assert data_changes(trained, trained) == []
    merged = choose_data(tmp_path / "x.ckpt", trained, {"source": {"root": "c"}})
    assert merged.config == {**trained, "source": {"_target_": "S", "root": "c"}}
    assert merged.changes == ["data.source.root: a -> c"]
