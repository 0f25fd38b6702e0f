"""WarmupThenDecay: linear LR warmup over optimizer steps, then the configured (per-epoch) decay, in
one scheduler stepped once per optimizer step.

The learning rate of optimizer step n (1-based, counting optimizer steps, not micro-batches: with
``accumulate_grad_batches=k`` one step per k batches) taken in epoch e is

    lr(n, e) = base_lr * min(1, n / W) * decay(e),

with W = ``warmup_steps`` (W = 0: no warmup, factor 1) and decay(e) the factor of the configured
torch scheduler after e epoch steps (the course's LinearLR: 1 - e / max_epochs; none: 1). The first
step already trains (lr base / W), unlike diffusers' ``get_*_schedule_with_warmup``, whose first
step has lr 0; the DDPM paper (Ho et al. 2020) warms up over 5,000 steps on CIFAR-10.

The decay scheduler keeps running on the optimizer as it would alone: before it steps, the
param groups get back its own (unscaled) learning rates, so a chainable scheduler (LinearLR,
ExponentialLR, ...) sees the values it set; the warmup factor is applied on top afterwards. With
W = 0 the factor is exactly 1.0 and every learning rate is bit for bit the decay scheduler's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffusion_lab.utils.checks import require_int

DecayFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class WarmupThenDecay:
    """Warmup over ``warmup_steps`` optimizer steps, then ``decay`` stepped once per epoch.

    Args:
        optimizer: the optimizer whose param groups' ``lr`` this sets.
        warmup_steps: W >= 0 (0: no warmup).
        decay: a partial torch LR scheduler taking ``optimizer`` (stepped at each epoch's end), or
            None (constant after warmup).

    Call :meth:`step` after every optimizer step, with ``epoch_ended`` after an epoch's last one
    (``DiffusionModule.lr_scheduler_step`` does). The state (steps taken, the decay's state)
    is saved in checkpoints by Lightning, so a resumed run continues the schedule.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        decay: DecayFactory | None = None,
    ) -> None:
        require_int("module.lr_warmup_steps", warmup_steps, minimum=0)
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.decay = decay(optimizer=optimizer) if decay is not None else None
        self.steps = 0  # optimizer steps taken
        self._apply()

    def factor(self, steps: int) -> float:
        """The warmup factor of the next step after ``steps`` steps: min(1, (steps + 1) / W)."""
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (steps + 1) / self.warmup_steps)

    def decay_lrs(self) -> list[float]:
        """The decay scheduler's own learning rates (the base ones without a decay)."""
        return list(self.decay.get_last_lr()) if self.decay is not None else list(self.base_lrs)

    def _apply(self) -> None:
        scale = self.factor(self.steps)
        for group, lr in zip(self.optimizer.param_groups, self.decay_lrs()):
            group["lr"] = lr * scale

    def step(self, epoch_ended: bool = False) -> None:
        """One optimizer step was taken; ``epoch_ended``: it was the epoch's last."""
        self.steps += 1
        if epoch_ended and self.decay is not None:
            for group, lr in zip(self.optimizer.param_groups, self.decay_lrs()):
                group["lr"] = lr  # the decay steps from its own values (module docstring)
            self.decay.step()
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The learning rates the next optimizer step uses."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "warmup_steps": self.warmup_steps,
            "steps": self.steps,
            "base_lrs": self.base_lrs,
            "decay": self.decay.state_dict() if self.decay is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.base_lrs = list(state["base_lrs"])
        if self.decay is not None and state["decay"] is not None:
            self.decay.load_state_dict(state["decay"])
        self._apply()
