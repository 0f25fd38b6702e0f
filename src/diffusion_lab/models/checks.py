"""Input checks shared by the networks: ``net(x, t, context)`` with the net's own shape."""

from __future__ import annotations

import torch


def check_net_inputs(
    net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None
) -> None:
    """Raise ValueError unless x is (B, in_channels, height, height), t holds B values and context
    is None or (B, n_cfeat); the message names the expected and the given shapes."""
    expected = (net.in_channels, net.height, net.height)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"x must be (B, {net.in_channels}, {net.height}, {net.height}), got {tuple(x.shape)}"
        )
    if t.numel() != x.shape[0]:
        raise ValueError(
            f"t must hold one value per image, (B,) = ({x.shape[0]},), got {tuple(t.shape)}"
        )
    if context is not None and tuple(context.shape) != (x.shape[0], net.n_cfeat):
        raise ValueError(
            f"context must be (B, n_cfeat) = ({x.shape[0]}, {net.n_cfeat}), "
            f"got {tuple(context.shape)}"
        )
