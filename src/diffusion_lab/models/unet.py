"""A modern conditional UNet in the DDPM / improved-DDPM style (Ho et al. 2020, Nichol & Dhariwal
2021), for any context of class weights.

    x (B, C, H, W) -> conv (F) -> levels l = 0..L-1 at H / 2^l, each with ``num_res_blocks`` residual
    blocks of F * mult_l channels (+ self-attention at the chosen resolutions), a strided conv
    between levels -> middle: res, attention, res -> the mirror image with skip concatenations and
    nearest-upsampling convs -> GroupNorm, SiLU, conv -> output (B, C, H, W).

Conditioning: emb = MLP(sinusoid(t * time_scale)) + W c, where t is the timestep divided by T (so
t * 1000 is DDPM's timestep on a 1000-step schedule) and W a bias-free linear map of the context
weights c (B, K): a one-hot row selects a class embedding, a mix blends them, and the all-zero null
context adds nothing, leaving the unconditional model that classifier-free guidance needs. Every
residual block turns emb into a per-channel scale and shift (FiLM, as in improved DDPM):

    h = GroupNorm(h) * (1 + scale) + shift.

Output convs of every residual block, attention and the network are zero-initialised, so each block
starts as the identity (a common choice since improved DDPM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_lab.models.checks import check_net_inputs
from diffusion_lab.utils.checks import InputError

NORM_GROUPS = 32  # GroupNorm(32) as in DDPM; fewer where a width is not a multiple of 32


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(NORM_GROUPS, channels), channels)


def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style embedding of t (B,): [cos(t w_i), sin(t w_i)] with w_i = max_period^(-i /
    half), i < half = dim // 2 (zero-padded to ``dim`` if odd). Returns (B, dim)."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    angles = t.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(embedding, (0, dim % 2))


class ResidualBlock(nn.Module):
    """GroupNorm, SiLU, conv3x3, then scale-and-shift by the embedding, SiLU, dropout, conv3x3;
    plus the input (through a 1x1 conv when the width changes). (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H * W positions, residual: (B, C, H, W) -> same."""

    def __init__(self, channels: int, head_dim: int) -> None:
        super().__init__()
        self.heads = channels // head_dim if channels % head_dim == 0 else 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, channels // self.heads, -1)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, HW, d)
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(h.transpose(-1, -2).reshape(batch, channels, height, width))


class Block(nn.Module):
    """A residual block, followed by self-attention when ``attention``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        dropout: float,
        attention: bool,
        head_dim: int,
    ) -> None:
        super().__init__()
        self.res = ResidualBlock(in_channels, out_channels, emb_dim, dropout)
        self.attention = SelfAttention(out_channels, head_dim) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attention(self.res(x, emb))


class Downsample(nn.Conv2d):
    """Strided conv3x3: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, stride=2, padding=1)


class Upsample(nn.Module):
    """Nearest x2, then conv3x3: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """out = net(x, t, context), for any prediction target (eps, v, x0).

    Args:
        in_channels: image channels C.
        n_cfeat: context width K (number of classes).
        height: image side H (square images); a multiple of 2^(levels - 1).
        n_feat: base width F (DDPM's CIFAR-10 net: 128).
        channel_mults: width of each level in units of F (DDPM CIFAR-10: 1, 2, 2, 2).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: the sides (e.g. 16) at which blocks add self-attention; each must be
            one that the net reaches, H / 2^l.
        dropout: in every residual block (DDPM CIFAR-10: 0.1).
        attention_head_dim: channels per attention head (one head if a width is not a multiple).
        time_scale: t (= timestep / T, in [0, 1]) is multiplied by this before the sinusoid.

    Forward: x (B, C, H, H); t (B,) or (B, 1, 1, 1) floats; context (B, K) weights or None (null).
    Returns (B, C, H, H).
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_cfeat: int = 10,
        height: int = 32,
        n_feat: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        attention_head_dim: int = 32,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        channel_mults, attention_resolutions = list(channel_mults), list(attention_resolutions)
        self._check_arguments(
            in_channels, n_cfeat, height, n_feat, channel_mults, num_res_blocks, dropout
        )
        resolutions = [height // 2**level for level in range(len(channel_mults))]
        unreached = sorted(set(attention_resolutions) - set(resolutions))
        if unreached:
            raise InputError(
                f"attention_resolutions {unreached} are not reached; at height {height} with "
                f"{len(channel_mults)} levels the resolutions are {resolutions}"
            )
        self.in_channels, self.n_cfeat, self.height, self.n_feat = (
            in_channels,
            n_cfeat,
            height,
            n_feat,
        )
        self.time_scale = float(time_scale)
        emb_dim = 4 * n_feat
        self.time_mlp = nn.Sequential(
            nn.Linear(n_feat, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.context_embedding = nn.Linear(n_cfeat, emb_dim, bias=False)  # null context -> 0

        def block(cin: int, cout: int, resolution: int) -> Block:
            attention = resolution in attention_resolutions
            return Block(cin, cout, emb_dim, dropout, attention, attention_head_dim)

        self.input = nn.Conv2d(in_channels, n_feat, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels, channels = [n_feat], n_feat
        for level, (mult, resolution) in enumerate(zip(channel_mults, resolutions)):
            for _ in range(num_res_blocks):
                self.down.append(block(channels, n_feat * mult, resolution))
                channels = n_feat * mult
                skip_channels.append(channels)
            if level < len(channel_mults) - 1:
                self.down.append(Downsample(channels))
                skip_channels.append(channels)
        self.middle = nn.ModuleList(
            [
                Block(channels, channels, emb_dim, dropout, True, attention_head_dim),
                Block(channels, channels, emb_dim, dropout, False, attention_head_dim),
            ]
        )
        self.up = nn.ModuleList()
        for level in reversed(range(len(channel_mults))):
            mult, resolution = channel_mults[level], resolutions[level]
            for _ in range(num_res_blocks + 1):
                self.up.append(block(channels + skip_channels.pop(), n_feat * mult, resolution))
                channels = n_feat * mult
            if level > 0:
                self.up.append(Upsample(channels))
        self.output = nn.Sequential(
            group_norm(channels),
            nn.SiLU(),
            zero_init(nn.Conv2d(channels, in_channels, 3, padding=1)),
        )

    @staticmethod
    def _check_arguments(
        in_channels, n_cfeat, height, n_feat, channel_mults, num_res_blocks, dropout
    ) -> None:
        if in_channels < 1 or n_cfeat < 1 or n_feat < 1 or num_res_blocks < 1:
            raise InputError(
                "need in_channels, n_cfeat, n_feat and num_res_blocks >= 1, got "
                f"{in_channels}, {n_cfeat}, {n_feat}, {num_res_blocks}"
            )
        if not channel_mults or any(m < 1 for m in channel_mults):
            raise InputError(f"channel_mults must be positive integers, got {channel_mults}")
        factor = 2 ** (len(channel_mults) - 1)
        if height < factor or height % factor:
            raise InputError(
                f"height {height} is not divisible by 2^(levels - 1) = {factor}: "
                f"{len(channel_mults)} levels (channel_mults={channel_mults}) halve the image "
                f"{len(channel_mults) - 1} times; use a height that is a multiple of {factor} "
                "or fewer channel_mults"
            )
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout}")

    def embed(self, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """The conditioning vector (B, 4F): time MLP of sinusoid(t * time_scale) + W context."""
        weight = self.time_mlp[0].weight
        emb = self.time_mlp(sinusoidal_embedding(t * self.time_scale, self.n_feat).to(weight))
        if context is not None:
            emb = emb + self.context_embedding(context.to(emb.dtype))
        return emb

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        check_net_inputs(self, x, t, context)
        emb = self.embed(t.reshape(-1), context).to(x.dtype)
        h = self.input(x)
        skips = [h]
        for module in self.down:
            h = module(h, emb) if isinstance(module, Block) else module(h)
            skips.append(h)
        for module in self.middle:
            h = module(h, emb)
        for module in self.up:
            if isinstance(module, Block):  # each block of the way up takes one skip
                h = torch.cat([h, skips.pop()], dim=1)
            h = module(h, emb) if isinstance(module, Block) else module(h)
        return self.output(h)
