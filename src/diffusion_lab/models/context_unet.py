"""The course's ContextUnet: a small UNet whose decoder is scaled by a context embedding and shifted
by a time embedding.

    x (B, C, H, H) -> init residual block (F) -> down1 (F, H/2) -> down2 (2F, H/4)
      -> avg-pool to a (2F, 1, 1) vector -> up0: ConvTranspose to (2F, H/4)
      -> up1(cemb1 * up0 + temb1, down2) (F, H/2) -> up2(cemb2 * up1 + temb2, down1) (F, H)
      -> out conv on cat(up2, init) -> eps (B, C, H, H)

Differences from the course notebook, both deliberate:
- the residual shortcut 1x1 conv of the first block is a registered module (the course builds a new,
  random, untrained one inside ``forward`` on every call, so its outputs are never deterministic);
- the pooling to a vector uses a kernel of H/4, so 32x32 images (CIFAR-10) work as well as 16x16
  (identical to the course's AvgPool2d(4) at H = 16).
"""

from __future__ import annotations

import torch
from torch import nn

from diffusion_lab.models.checks import check_net_inputs
from diffusion_lab.utils.checks import InputError

NORMS = ("batch", "group")
GROUPS = 8
RESIDUAL_SCALE = 1.414  # the course divides residual sums by ~sqrt(2) to keep unit variance


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(GROUPS, channels)


class ResidualConvBlock(nn.Module):
    """Two (Conv3x3, norm, GELU) layers; with ``residual`` the input is added back, through a 1x1
    conv when the channel count changes, and the sum divided by 1.414."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool, norm: str) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1), _norm(norm, out_channels), nn.GELU()
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, 1, 1), _norm(norm, out_channels), nn.GELU()
        )
        needs_projection = residual and in_channels != out_channels
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if needs_projection else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.conv1(x))
        if not self.residual:
            return h
        return (self.shortcut(x) + h) / RESIDUAL_SCALE


class UnetDown(nn.Sequential):
    """Two conv blocks, then MaxPool2d(2): (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__(
            ResidualConvBlock(in_channels, out_channels, residual=False, norm=norm),
            ResidualConvBlock(out_channels, out_channels, residual=False, norm=norm),
            nn.MaxPool2d(2),
        )


class UnetUp(nn.Module):
    """cat(x, skip) on channels, ConvTranspose2d(k=2, s=2), two conv blocks: doubles H and W."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 2, 2),
            ResidualConvBlock(out_channels, out_channels, residual=False, norm=norm),
            ResidualConvBlock(out_channels, out_channels, residual=False, norm=norm),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([x, skip], dim=1))


class EmbedFC(nn.Sequential):
    """Linear, GELU, Linear: (B, in_dim) -> (B, emb_dim)."""

    def __init__(self, in_dim: int, emb_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim))


class ContextUnet(nn.Module):
    """eps = net(x, t, context).

    Args:
        in_channels: image channels C (3 for sprites/CIFAR-10, 1 for digits).
        n_feat: base feature width F (the course uses 64 for sprites); a multiple of 8.
        n_cfeat: context width K (number of classes).
        height: image side H, a multiple of 4 (16 for sprites/digits, 32 for CIFAR-10).
        norm: ``batch`` (the course) or ``group`` in the residual blocks.

    Forward: x (B, C, H, H) float; t (B,) or (B, 1, 1, 1) float, the timestep divided by T;
    context (B, K) float (one-hot, a mix, or zeros) or None for the null context.
    Returns the predicted noise, (B, C, H, H).
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_feat: int = 64,
        n_cfeat: int = 5,
        height: int = 16,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if height < 4 or height % 4:
            raise InputError(f"height must be a positive multiple of 4 (e.g. 16, 32), got {height}")
        if n_feat < GROUPS or n_feat % GROUPS:
            raise InputError(f"n_feat must be a positive multiple of {GROUPS}, got {n_feat}")
        if norm not in NORMS:
            raise InputError(f"unknown norm {norm!r}; accepted: {', '.join(NORMS)}")
        if in_channels < 1 or n_cfeat < 1:
            raise InputError(
                f"need in_channels >= 1 and n_cfeat >= 1, got {in_channels}, {n_cfeat}"
            )
        self.in_channels, self.n_feat, self.n_cfeat, self.height = (
            in_channels,
            n_feat,
            n_cfeat,
            height,
        )

        self.init_conv = ResidualConvBlock(in_channels, n_feat, residual=True, norm=norm)
        self.down1 = UnetDown(n_feat, n_feat, norm)
        self.down2 = UnetDown(n_feat, 2 * n_feat, norm)
        self.to_vec = nn.Sequential(nn.AvgPool2d(height // 4), nn.GELU())

        self.timeembed1 = EmbedFC(1, 2 * n_feat)
        self.timeembed2 = EmbedFC(1, n_feat)
        self.contextembed1 = EmbedFC(n_cfeat, 2 * n_feat)
        self.contextembed2 = EmbedFC(n_cfeat, n_feat)

        self.up0 = nn.Sequential(
            nn.ConvTranspose2d(2 * n_feat, 2 * n_feat, height // 4, height // 4),
            nn.GroupNorm(GROUPS, 2 * n_feat),
            nn.ReLU(),
        )
        self.up1 = UnetUp(4 * n_feat, n_feat, norm)
        self.up2 = UnetUp(2 * n_feat, n_feat, norm)
        self.out = nn.Sequential(
            nn.Conv2d(2 * n_feat, n_feat, 3, 1, 1),
            nn.GroupNorm(GROUPS, n_feat),
            nn.ReLU(),
            nn.Conv2d(n_feat, in_channels, 3, 1, 1),
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        check_net_inputs(self, x, t, context)
        if context is None:
            context = x.new_zeros(x.shape[0], self.n_cfeat)
        t = t.reshape(-1, 1).to(x.dtype)
        context = context.to(x.dtype)
        batch = x.shape[0]

        init = self.init_conv(x)
        down1 = self.down1(init)
        down2 = self.down2(down1)
        hidden = self.to_vec(down2)

        cemb1 = self.contextembed1(context).view(batch, 2 * self.n_feat, 1, 1)
        temb1 = self.timeembed1(t).view(batch, 2 * self.n_feat, 1, 1)
        cemb2 = self.contextembed2(context).view(batch, self.n_feat, 1, 1)
        temb2 = self.timeembed2(t).view(batch, self.n_feat, 1, 1)

        up1 = self.up0(hidden)
        up2 = self.up1(cemb1 * up1 + temb1, down2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)
        return self.out(torch.cat([up3, init], dim=1))
