"""Progress over long work: log lines (about every 10%) when the output is not a terminal, a task in
a display that is already live, and no second live display inside a training run."""

from __future__ import annotations

import io
import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from rich.console import Console
from rich.progress import Progress

from diffusion_lab.diffusion import DDIMSampler, make_schedule
from diffusion_lab.utils.progress import StepProgress, track, trainer_display, trainer_progress


def zero_eps(x: torch.Tensor, t: torch.Tensor, context) -> torch.Tensor:
    return torch.zeros_like(x)


def test_plain_mode_logs_about_every_ten_percent_of_a_samplers_steps(caplog, monkeypatch):
    monkeypatch.setattr("diffusion_lab.utils.progress.in_terminal", lambda: False)
    sampler = DDIMSampler(make_schedule("linear", 100), steps=50)
    with (
        caplog.at_level(logging.INFO, logger="diffusion_lab.utils.progress"),
        track("DDIM-50") as bar,
    ):
        sampler.sample(zero_eps, torch.randn(2, 1, 8, 8), on_step=bar.on_step)
    lines = [r.getMessage() for r in caplog.records if r.name == "diffusion_lab.utils.progress"]
    assert lines[0] == "DDIM-50: 1/50 (2%), t=98"
    assert lines[-1] == "DDIM-50: 50/50 (100%), t=0"
    assert len(lines) == 11 and bar.lines == 11  # 0%, 10%, ..., 100%
    assert [line.split(" (")[1].split("%")[0] for line in lines[1:]] == [
        str(p) for p in range(10, 101, 10)
    ]


def test_epochs_are_logged_with_their_loss(caplog):
    progress = StepProgress("judge")
    with caplog.at_level(logging.INFO, logger="diffusion_lab.utils.progress"):
        for epoch in (1, 2):
            progress.on_epoch(epoch, 2, 0.5 / epoch)
    assert [r.getMessage() for r in caplog.records] == [
        "judge: 1/2 (50%), loss 0.5000",
        "judge: 2/2 (100%), loss 0.2500",
    ]


def test_a_live_display_gets_a_task_that_is_removed_after():
    display = Progress(console=Console(force_terminal=True, file=io.StringIO()))
    with display:
        with track("DDPM-10", display=display) as bar:
            bar.update(3, 10)
            (task,) = display.tasks
            assert (task.description, task.completed, task.total) == ("DDPM-10", 3, 10)
        assert display.tasks == []


class Counting(L.Callback):
    """Runs a sampler through trainer_progress at the end of every training epoch, as the quality
    and grid callbacks do, and records whether it found the trainer's live display."""

    def __init__(self) -> None:
        self.found_display: list[bool] = []
        self.task_progress: list[tuple[float, float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        display = trainer_display(trainer)
        self.found_display.append(display is not None)
        sampler = DDIMSampler(make_schedule("linear", 20), steps=5)
        with trainer_progress(trainer)("DDIM-5") as bar:
            sampler.sample(zero_eps, torch.randn(2, 1, 8, 8), on_step=bar.on_step)
            (task,) = [task for task in display.tasks if task.description == "DDIM-5"]
            self.task_progress.append((task.completed, task.total))
        assert "DDIM-5" not in [task.description for task in display.tasks]


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(8, 2))
        return torch.utils.data.DataLoader(data, batch_size=4)


def test_inside_training_with_a_rich_progress_bar_the_task_joins_its_display(monkeypatch):
    """No LiveError (rich allows one live display per console): the sampler's progress is a task
    in RichProgressBar's display, even when stdout is a terminal."""
    monkeypatch.setattr("diffusion_lab.utils.progress.in_terminal", lambda: True)

    def second_live_display():
        raise AssertionError("a second live display inside training")

    monkeypatch.setattr("diffusion_lab.utils.progress.own_display", second_live_display)
    counting = Counting()
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[RichProgressBar(), counting],
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(Tiny())
    assert counting.found_display == [True, True]
    assert counting.task_progress == [(5, 5), (5, 5)]
    assert trainer_display(trainer) is None  # stopped after training: callbacks log lines then
