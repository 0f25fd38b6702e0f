"""Gradient accumulation and the per-step LR schedule, in real (tiny, in-process) fits: batch 8 with
accumulate_grad_batches=4 follows batch 32's learning rates step for step; the EMA is updated once
per optimizer step (n_averaged == global_step); a SIGTERM in the middle of an accumulation window
stops at the window's end and the resumed run ends bit for bit as the uninterrupted one; the
schedule itself: warmup 0 gives the course's per-epoch LinearLR exactly, warmup W the closed form."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from test_lit_module import OPTIMIZER, SAMPLER, SCHEDULE

from diffusion_lab.callbacks import Preempted, Preemption, ResumeState
from diffusion_lab.data import DiffusionDataModule, SpritesSource
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.lr_schedule import WarmupThenDecay

NET = {"_target_": "diffusion_lab.models.ContextUnet", "in_channels": 3, "n_feat": 8}
NET |= {"n_cfeat": 5, "height": 16}
COURSE_DECAY = {"_target_": "torch.optim.lr_scheduler.LinearLR", "_partial_": True}
COURSE_DECAY |= {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 3}


class LearningRates(L.Callback):
    """The learning rate of every optimizer step, as the optimizer is about to use it."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.values.append(optimizer.param_groups[0]["lr"])


class SignalAt(L.Callback):
    """Sends this process SIGTERM as training batch ``index`` of epoch 0 starts (a real signal)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def on_train_batch_start(self, trainer, pl_module, batch, index: int) -> None:
        if trainer.current_epoch == 0 and index == self.index:
            os.kill(os.getpid(), signal.SIGTERM)


def fit(
    root: Path,
    run_dir: Path,
    batch_size: int,
    accumulate: int,
    callbacks: list[L.Callback] = (),
    ckpt_path: Path | None = None,
) -> tuple[L.Trainer, DiffusionModule]:
    """3 epochs on the 38 training sprites, warmup over 3 optimizer steps, the course's decay."""
    L.seed_everything(0, verbose=False)
    module = DiffusionModule(
        net=NET,
        schedule=SCHEDULE,
        sampler=SAMPLER,
        optimizer=OPTIMIZER,
        lr_scheduler=COURSE_DECAY,
        lr_warmup_steps=3,
    )
    data = DiffusionDataModule(
        SpritesSource(root), channels=3, image_size=16, num_classes=5, batch_size=batch_size
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        accumulate_grad_batches=accumulate,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=run_dir,
        callbacks=[ResumeState(), *callbacks],
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer, module


def test_accumulating_four_batches_of_8_follows_batch_32s_schedule(sprites_root, tmp_path):
    small, large = LearningRates(), LearningRates()
    trainer, module = fit(sprites_root, tmp_path / "a", 8, 4, [small])  # 5 batches: steps at 4, 5
    fit(sprites_root, tmp_path / "b", 32, 1, [large])  # 2 batches (32 + 6): 2 steps per epoch
    assert small.values == large.values and len(small.values) == 6
    # warmup 1/3, 2/3, then the course's decay 1 - e / 3 at epochs 1 and 2
    expected = [1e-3 / 3, 2e-3 / 3, 1e-3 * 2 / 3, 1e-3 * 2 / 3, 1e-3 / 3, 1e-3 / 3]
    assert small.values == pytest.approx(expected, rel=1e-12)
    assert int(module.ema.n_averaged) == trainer.global_step == 6  # once per optimizer step


def test_a_stop_inside_an_accumulation_window_resumes_exactly(sprites_root, tmp_path):
    _, whole = fit(sprites_root, tmp_path / "whole", 8, 2)
    run_dir = tmp_path / "run"
    stopping = Preemption(run_dir=str(run_dir))
    with pytest.raises(Preempted):  # signal as batch 2 (the window 2-3's first) starts
        fit(sprites_root, run_dir, 8, 2, [stopping, SignalAt(2)])
    checkpoint_path = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2  # after batch 3, where the window ended
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["position"] == 4
    trainer, resumed = fit(sprites_root, run_dir, 8, 2, ckpt_path=checkpoint_path)
    assert trainer.global_step == 9 == int(resumed.ema.n_averaged)  # 3 steps a epoch (2, 2, 1)
    for (name, a), b in zip(resumed.state_dict().items(), whole.state_dict().values()):
        assert torch.equal(a, b), name


def test_warmup_zero_gives_the_course_per_epoch_linear_lr_bit_for_bit():
    def optimizer() -> torch.optim.Optimizer:
        return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)

    course = optimizer()
    reference = torch.optim.lr_scheduler.LinearLR(course, 1.0, 0.0, total_iters=7)
    composed = WarmupThenDecay(
        optimizer(), 0, lambda optimizer: type(reference)(optimizer, 1.0, 0.0, 7)
    )
    for _epoch in range(7):
        for step in range(5):  # 5 optimizer steps an epoch, the schedule told at each
            assert composed.get_last_lr() == reference.get_last_lr()
            composed.optimizer.step()
            composed.step(epoch_ended=step == 4)
        course.step()
        reference.step()


def test_warmup_is_linear_in_optimizer_steps_and_survives_a_state_round_trip():
    def make() -> WarmupThenDecay:
        return WarmupThenDecay(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5), 4)

    schedule = make()
    seen = []
    for _ in range(6):
        seen.append(schedule.get_last_lr()[0])
        schedule.step()
    assert seen == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5])
    restored = make()
    restored.load_state_dict(schedule.state_dict())
    assert restored.get_last_lr() == schedule.get_last_lr() and restored.steps == 6


@pytest.mark.parametrize("steps", [-1, 2.5, "10"])
def test_a_bad_warmup_is_named_in_one_line(steps):
    with pytest.raises(
        ValueError, match=rf"module.lr_warmup_steps must be an integer >= 0, got {steps!r}"
    ):
        DiffusionModule(
            net=NET, schedule=SCHEDULE, sampler=SAMPLER, optimizer=OPTIMIZER, lr_warmup_steps=steps
        )
