"""The precision a network runs in while sampling: only its forward under ``torch.autocast``.

A sampler's own arithmetic (schedule coefficients, the x0 estimate, the update, the noise it adds)
stays in the noise's dtype (fp32): :class:`AutocastNet` runs

    eps_hat = net(x, t / T, c)          under torch.autocast(x.device.type, dtype)
    return eps_hat.to(x.dtype)          (N, C, H, W), back in x's dtype

so that convolutions and matmuls inside the net run in bf16 (or fp16) and everything around them
does not. Precision names are Lightning's (``trainer.precision``): a run trained with
``bf16-mixed`` samples with bf16 autocast, one trained with ``32-true`` in fp32. Pure torch.
"""

from __future__ import annotations

import torch
from torch import nn

from diffusion_lab.utils.checks import require_choice

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "32-true": None,  # no autocast: the weights' own dtype
    "64-true": None,
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,  # bf16 weights: autocast casts the fp32 noise to meet them
    "16-mixed": torch.float16,
    "16-true": torch.float16,
}
SHORT_NAMES = {
    "32": "32-true",
    "64": "64-true",
    "bf16": "bf16-mixed",
    "16": "16-mixed",
}  # Lightning's


def normalize_precision(precision: object, name: str = "precision") -> str:
    """A Lightning precision name in its long form (``bf16`` -> ``bf16-mixed``, 32 -> ``32-true``),
    refused with one line unless it is one of :data:`AUTOCAST_DTYPES`."""
    text = SHORT_NAMES.get(str(precision), str(precision))
    return require_choice(name, text, list(AUTOCAST_DTYPES))


def autocast_dtype(precision: object) -> torch.dtype | None:
    """The autocast dtype of a precision name (None: no autocast)."""
    return AUTOCAST_DTYPES[normalize_precision(precision)]


class AutocastNet(nn.Module):
    """``net``'s forward under ``torch.autocast(x.device.type, dtype)``, its output cast back to the
    input's dtype: the network in bf16, the caller's arithmetic in fp32. ``net`` is a submodule, so
    ``.eval()``, ``.to()`` and ``.parameters()`` reach it."""

    def __init__(self, net: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """eps_hat (N, C, H, W) in x's dtype, for x (N, C, H, W), t / T (N,), context (N, K)."""
        with torch.autocast(x.device.type, dtype=self.dtype):
            output = self.net(x, t, context)
        return output.to(x.dtype)


def in_precision(net: nn.Module, precision: object) -> nn.Module:
    """``net`` itself for an fp32 (or fp64) precision, else :class:`AutocastNet` around it."""
    dtype = autocast_dtype(precision)
    return net if dtype is None else AutocastNet(net, dtype)
