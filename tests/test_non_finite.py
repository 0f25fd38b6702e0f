"""A NaN loss stops training at that step with a message naming it and the last good checkpoint,
which stays intact and loadable (the EMA untouched by the bad step)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from test_train import run_train

from diffusion_lab.callbacks import NonFiniteGuard, NonFiniteLossError
from diffusion_lab.runs.checkpoints import load_module

TESTS_DIR = Path(__file__).parent


class PoisonBatchAt(L.Callback):
    """Test helper (imported by the training subprocess): NaN images from global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            batch[0].fill_(float("nan"))


def test_nan_loss_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{os.environ.get('PYTHONPATH', '')}{os.pathsep}{TESTS_DIR}")
    run_dir = tmp_path / "run"
    result = run_train(
        run_dir,
        "logger=csv",
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=1",
        "callbacks.samples.animate=false",
        "+callbacks.poison._target_=test_non_finite.PoisonBatchAt",
        "+callbacks.poison.step=6",
        check=False,
    )
    assert result.returncode != 0
    last = run_dir / "checkpoints" / "last.ckpt"
    expected = "non-finite loss (NaN or inf) at step 6 (epoch 1)"
    assert expected in result.stderr + result.stdout
    assert f"Last good checkpoint: {last}" in result.stderr + result.stdout
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4 and state["epoch"] == 0
    module = load_module(last, torch.device("cpu"))
    for name, tensor in module.state_dict().items():
        assert torch.isfinite(tensor).all(), name
    assert not (run_dir / "samples" / "epoch_001.png").exists()


class NaNGradient(L.LightningModule):
    """A finite loss whose gradient turns NaN from step ``bad_step`` on."""

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.bad_step = bad_step
        self.weight.register_hook(
            lambda grad: grad * float("nan") if self.global_step >= self.bad_step else grad
        )

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 3)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_nan_gradient_with_a_finite_loss_stops_before_the_step(tmp_path):
    module = NaNGradient(bad_step=3)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[NonFiniteGuard()],
        default_root_dir=tmp_path,
    )
    with pytest.raises(NonFiniteLossError, match="non-finite gradient .* at step 3 .*none"):
        trainer.fit(module)
    assert torch.allclose(module.weight, torch.full((3,), 1 - 3 * 0.1))  # 3 steps, not 4
