"""DDP with real processes (gloo, two CPU ranks, tiny configs), each claim an assertion that could
fail: val/loss is the one-process loss over the same validation set; the ranks end with the same
live and EMA weights, bit for bit; each epoch's training images are split between the ranks with
none shared or left out; one result.json, one grid per grid epoch, one W&B run; and a 2-process run
stopped by SIGTERM mid-epoch (with gradient accumulation and LR warmup) and resumed with
``resume=<run>`` ends bitwise equal to the uninterrupted 2-process run."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from test_preemption import WATCHED, csv_rows, interrupt, start_train, wait_until
from test_resume import resume
from test_train import run_train

from diffusion_lab.callbacks.rank_audit import state_digests
from diffusion_lab.lit_module import DiffusionModule

DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.sync_batchnorm=false",  # SyncBatchNorm needs CUDA; the course net has BatchNorm
    "trainer.deterministic=true",
    "callbacks.quality=null",
]
# 1797 digits: 65 validation images (33 + 32 on two ranks: uneven shards), 1732 training images,
# 14 steps of 2 x 64 per epoch (the last 34 + 34)
SEMANTICS = [
    *DDP,
    "data.val_fraction=0.0362",
    "data.batch_size=64",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "callbacks.samples.every_n_epochs=1",
    "logger=[csv,wandb]",
]
VAL_IMAGES, TRAIN_IMAGES = 65, 1732


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """One 2-process run of two full epochs, started in an empty working directory."""
    cwd = tmp_path_factory.mktemp("ddp")
    run_dir = cwd / "run"
    run_train(run_dir, *SEMANTICS, cwd=cwd)
    return run_dir


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def test_val_loss_is_the_one_process_loss_over_the_validation_set(ddp_run):
    """The last epoch's val/loss, logged by two ranks over 33 + 32 images, against the final
    weights validated again here in one process over all 65 at another batch size (16)."""
    logged = [float(row["val/loss"]) for row in csv_rows(ddp_run) if row.get("val/loss")]
    assert len(logged) == 2
    module = DiffusionModule.load_from_checkpoint(ddp_run / "checkpoints" / "last.ckpt")
    data = instantiate({**module.hparams.data, "batch_size": 16})
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, deterministic=True
    )
    (metrics,) = trainer.validate(module, datamodule=data, verbose=False)
    assert len(data.val_set) == VAL_IMAGES
    assert metrics["val/loss"] == pytest.approx(logged[-1], rel=1e-5)


def test_every_rank_ends_with_the_same_live_and_ema_weights(ddp_run):
    record = json.loads((ddp_run / "ranks.json").read_text())
    assert record["world_size"] == 2
    first, second = record["digests"]
    assert first.keys() == second.keys()
    assert any(name.startswith("ema.module.") for name in first)
    assert any("running_mean" in name for name in first)  # BatchNorm buffers, averaged
    assert [name for name in first if first[name] != second[name]] == []
    checkpoint = last_checkpoint(ddp_run)
    saved = state_digests(checkpoint["state_dict"])
    assert saved == first  # the digests are those of the weights rank 0 saved
    assert int(checkpoint["state_dict"]["ema.n_averaged"]) == checkpoint["global_step"] == 28


def test_each_epoch_splits_the_training_set_between_the_ranks_once(ddp_run):
    record = json.loads((ddp_run / "ranks.json").read_text())
    assert record["train_size"] == TRAIN_IMAGES
    assert [epoch["epoch"] for epoch in record["epochs"]] == [0, 1]
    for epoch in record["epochs"]:
        assert epoch["per_rank"] == [TRAIN_IMAGES // 2] * 2
        assert epoch["distinct"] == TRAIN_IMAGES and epoch["repeated"] == 0


def test_one_result_one_grid_per_epoch_one_wandb_run(ddp_run):
    cwd = ddp_run.parent
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]  # rank 1 wrote no folder of its own
    assert [p.relative_to(cwd) for p in cwd.rglob("result.json")] == [Path("run/result.json")]
    assert json.loads((ddp_run / "result.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in (ddp_run / "samples").iterdir()) == [
        "denoising.gif",
        "epoch_000.png",
        "epoch_001.png",
    ]
    assert len(list((ddp_run / "wandb").glob("offline-run-*"))) == 1


def loader_states(checkpoint: dict) -> list[dict]:
    """The IndexLoader states Lightning saved (the fit loop's combined loader's)."""
    return list(checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"])


# --- exact resume under DDP --------------------------------------------------------------------
RESUMABLE = [
    *DDP,
    *WATCHED,  # batch 8, every step logged
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=12",
    "+trainer.limit_val_batches=2",
    "+trainer.accumulate_grad_batches=2",  # 6 optimizer steps per epoch
    "module.lr_warmup_steps=4",
    "callbacks.samples.every_n_epochs=1",
    "callbacks.samples.samples_per_class=1",
]


def test_sigterm_mid_epoch_then_resume_equals_the_uninterrupted_ddp_run(tmp_path):
    whole = tmp_path / "whole"
    run_train(whole, *RESUMABLE)
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *RESUMABLE)
    wait_until(lambda: sum(1 for row in csv_rows(run_dir) if row.get("train/loss_step")), process)
    _, record = interrupt(process, run_dir)
    assert record["epoch"] == 0 and 1 <= record["global_step"] < 6, record
    stopped = last_checkpoint(run_dir)
    (position,) = [state["position"] for state in loader_states(stopped)]
    assert position == 2 * record["global_step"]  # stopped where an accumulation window ended
    (resume_state,) = [v for k, v in stopped["callbacks"].items() if "ResumeState" in k]
    assert len(resume_state["rng"]) == 2  # both ranks' generators
    resume(run_dir)
    a, b = last_checkpoint(run_dir), last_checkpoint(whole)
    assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"]) == (12, 1)
    for key, value in b["state_dict"].items():  # the net and its EMA
        assert torch.equal(a["state_dict"][key], value), key
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for state_a, state_b in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()
    ):
        for key in state_b:
            assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])), key
    losses = [
        [(r["step"], r["train/loss_step"]) for r in csv_rows(d) if r.get("train/loss_step")]
        for d in (run_dir, whole)
    ]
    assert losses[0] == losses[1] and len(losses[1]) == 12
