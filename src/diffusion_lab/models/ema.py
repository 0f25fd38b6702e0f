"""Exponential moving average of a network's weights, on top of torch's ``AveragedModel``."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from diffusion_lab.utils.checks import InputError


def warmup_ema_decay(decay: float, num_updates: torch.Tensor) -> torch.Tensor:
    """min(decay, (1 + n) / (10 + n)): early averages forget the random initialisation quickly."""
    n = num_updates.to(torch.float32)
    return torch.clamp((1.0 + n) / (10.0 + n), max=decay)


def _ema_update(
    averaged: list[torch.Tensor],
    current: list[torch.Tensor],
    num_averaged: torch.Tensor,
    decay: float,
) -> None:
    """In place, for one device/dtype group: averaged <- d averaged + (1 - d) current."""
    if not averaged[0].is_floating_point():  # e.g. BatchNorm's num_batches_tracked: just follow
        torch._foreach_copy_(averaged, current)
        return
    d = warmup_ema_decay(decay, num_averaged).to(averaged[0].dtype)  # stays on device: no sync
    torch._foreach_mul_(averaged, d)
    torch._foreach_add_(averaged, torch._foreach_mul(current, 1.0 - d))


class EMA(AveragedModel):
    """theta_ema <- d theta_ema + (1 - d) theta at every update, d = min(decay, (1+n)/(10+n)).

    Buffers (BatchNorm statistics) are averaged too. The copy never requires gradients, so DDP
    leaves it alone; as a submodule it is saved in checkpoints and moves with the LightningModule.
    """

    def __init__(self, net: nn.Module, decay: float = 0.995) -> None:
        if not 0.0 <= decay < 1.0:
            raise InputError(f"ema decay must be in [0, 1), got {decay}")
        # AveragedModel deep-copies net; a partial (not a closure) keeps it picklable for ddp_spawn
        super().__init__(net, multi_avg_fn=partial(_ema_update, decay=decay), use_buffers=True)
        self.decay = decay
        self.module.requires_grad_(False)
