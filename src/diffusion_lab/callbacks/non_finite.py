"""NonFiniteGuard: stop training at the first step whose loss or gradient is NaN or infinite.

The check runs after the backward pass and before the optimizer step (``on_before_optimizer_step``),
so the bad step changes nothing: no optimizer step, no EMA update (the EMA follows the net in
``on_train_batch_end``, which is not reached), no checkpoint. The error names the step and the last
checkpoint written before it, which stays intact and loadable.

Cost: one device-to-host sync per checked step (a single flag over the loss and all gradients).
With fp16 mixed precision (a grad scaler) only the loss is checked: the scaler skips steps whose
gradients overflow, by design.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from diffusion_lab.utils.checks import require_int

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient of a training step was NaN or infinite."""


def _all_finite(loss: torch.Tensor | None, parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    """One boolean tensor: loss and every gradient finite (on the device, no sync)."""
    flags = [torch.isfinite(loss).all()] if loss is not None else []
    flags += [torch.isfinite(p.grad).all() for p in parameters if p.grad is not None]
    return torch.stack(flags).all() if flags else torch.tensor(True)


def last_good_checkpoint(trainer: L.Trainer) -> str:
    """The newest checkpoint a ModelCheckpoint wrote in this run (last, else best), or a note."""
    callback = trainer.checkpoint_callback
    for path in (
        getattr(callback, "last_model_path", ""),
        getattr(callback, "best_model_path", ""),
    ):
        if path:
            return str(path)
    return "none (no checkpoint was written before this step)"


class NonFiniteGuard(L.Callback):
    """Raise ``NonFiniteLossError`` naming the step and the last good checkpoint.

    Args:
        every_n_steps: check every N-th training step (1: every step; each check is one sync).
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = require_int("every_n_steps", every_n_steps, minimum=1)
        self._loss: torch.Tensor | None = None

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        loss, self._loss = self._loss, None
        if trainer.global_step % self.every_n_steps:
            return
        # under fp16 mixed precision the grad scaler skips overflowing steps itself (and lowers
        # its scale): inf gradients are expected there, only the loss is checked
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        parameters = [] if scaled else list(pl_module.parameters())
        if bool(_all_finite(loss, parameters)):
            return
        what = "loss" if loss is not None and not torch.isfinite(loss).all() else "gradient"
        message = (
            f"non-finite {what} (NaN or inf) at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}); the step was not applied. Last good checkpoint: "
            f"{last_good_checkpoint(trainer)}. Try a lower module.optimizer.lr, "
            "trainer.gradient_clip_val=1.0, or precision=32-true"
        )
        log.error(message)
        raise NonFiniteLossError(message)
