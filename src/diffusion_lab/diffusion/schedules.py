"""Noise schedules for the DDPM forward process.

Conventions (DDPM paper, the course, DESIGN.md): integer timesteps t in 0..T, index 0 is the clean
image. ``betas``, ``alphas`` and ``alpha_bars`` have length T + 1 with

    beta_0 = 0,   alpha_t = 1 - beta_t,   alpha_bar_t = prod_{s=1..t} alpha_s   (so alpha_bar_0 = 1),

all computed in float64. The forward process is

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

(The course notebooks put (1 - alpha_bar_t) on the noise instead of its square root: a known bug.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffusion_lab.utils.checks import InputError, require_int

SCHEDULE_NAMES = ("linear", "cosine", "quadratic", "sigmoid")


class NoiseSchedule:
    """A discrete noise schedule: ``betas``, ``alphas``, ``alpha_bars``, each float64 of shape (T+1,).

    Build one with :func:`make_schedule`, or directly from betas for t = 1..T.
    """

    def __init__(self, betas: torch.Tensor, name: str = "custom") -> None:
        """``betas``: shape (T,), the values beta_1..beta_T, each in (0, 1] (beta_T = 1 gives
        alpha_bar_T = 0: zero terminal SNR)."""
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(
                f"betas must be a 1-D tensor of length T >= 1, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError(
                f"betas must lie in (0, 1]; got min {betas.min().item()}, max {betas.max().item()}"
            )
        self.name = name
        self.betas = torch.cat([betas.new_zeros(1), betas])
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)

    @property
    def timesteps(self) -> int:
        """T, the number of noising steps (the schedules hold T + 1 entries)."""
        return self.betas.numel() - 1

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """Move the (float64) tables to ``device``; returns self for chaining."""
        self.betas = self.betas.to(device)
        self.alphas = self.alphas.to(device)
        self.alpha_bars = self.alpha_bars.to(device)
        return self

    def _gather(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] reshaped to (B, 1, ..., 1) to broadcast against ``like``, in its dtype/device."""
        values = table.to(like.device)[t.to(like.device).long()]
        return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise.

        x0, noise: (B, C, H, W); t: integer tensor (B,) with values in 0..T.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        if t.ndim != 1 or t.shape[0] != x0.shape[0]:
            raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
        alpha_bar = self._gather(self.alpha_bars, t, x0)
        return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), float64, same shape as t."""
        alpha_bar = self.alpha_bars.to(t.device)[t.long()]
        return alpha_bar / (1.0 - alpha_bar)

    def posterior_variance(self) -> torch.Tensor:
        """beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t for t = 1..T, index 0 = 0.

        The variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 7); shape (T+1,), float64.
        """
        variance = torch.zeros_like(self.betas)
        variance[1:] = (1.0 - self.alpha_bars[:-1]) / (1.0 - self.alpha_bars[1:]) * self.betas[1:]
        return variance

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(name={self.name!r}, T={self.timesteps}, "
            f"alpha_bar_T={self.alpha_bars[-1].item():.3g})"
        )


def _linear_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """DDPM / the course: beta_t evenly spaced from beta_start (t=1) to beta_end (t=T)."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def _quadratic_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """sqrt(beta_t) evenly spaced, then squared (diffusers' 'scaled_linear')."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2


def _sigmoid_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """beta_t = beta_start + (beta_end - beta_start) sigmoid(linspace(-6, 6, T)) (GeoDiff)."""
    ramp = torch.sigmoid(torch.linspace(-6.0, 6.0, timesteps, dtype=torch.float64))
    return beta_start + (beta_end - beta_start) * ramp


COSINE_OFFSET = 0.008
MAX_BETA = 0.999


def _cosine_betas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Improved DDPM (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = f(t) / f(0) with

    f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2),  s = 0.008,
    beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), 0.999).

    beta_start and beta_end do not apply to this schedule.
    """
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


_BETA_BUILDERS: dict[str, Callable[[int, float, float], torch.Tensor]] = {
    "linear": _linear_betas,
    "cosine": _cosine_betas,
    "quadratic": _quadratic_betas,
    "sigmoid": _sigmoid_betas,
}


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1):
    shift and scale sqrt(alpha_bar_t) linearly so that sqrt(alpha_bar_1) keeps its value and
    sqrt(alpha_bar_T) becomes 0, then read the betas back:

        s_t = sqrt(alpha_bar_t),  s'_t = (s_t - s_T) s_1 / (s_1 - s_T),
        beta_1 = 1 - s'_1^2,  beta_t = 1 - s'_t^2 / s'_{t-1}^2  (t >= 2),  so beta_T = 1.

    ``betas``: beta_1..beta_T, shape (T,), T >= 2; returns the same shape, float64.
    """
    if betas.numel() < 2:
        raise InputError("zero terminal SNR needs T >= 2 timesteps (alpha_bar_1 is kept)")
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alpha_bars = root**2
    alphas = torch.cat([alpha_bars[:1], alpha_bars[1:] / alpha_bars[:-1]])
    betas = 1.0 - alphas
    betas[-1] = 1.0  # alpha_bar_T = 0 exactly, whatever the rounding above
    return betas


def make_schedule(
    name: str,
    timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    zero_terminal_snr: bool = False,
) -> NoiseSchedule:
    """Build a named :class:`NoiseSchedule` with T = ``timesteps``.

    Names: ``linear`` (the course: T=500, 1e-4..0.02), ``cosine`` (improved DDPM; ignores the beta
    range), ``quadratic`` and ``sigmoid`` (both from beta_start to beta_end). With
    ``zero_terminal_snr`` the schedule is rescaled so that alpha_bar_T = 0 (Lin et al. 2023, see
    :func:`rescale_zero_terminal_snr`): x_T is pure noise, as at sampling time; it needs a v- or
    x0-predicting net (eps cannot give x0 at SNR 0).
    """
    if name not in _BETA_BUILDERS:
        raise InputError(f"unknown schedule {name!r}; accepted: {', '.join(SCHEDULE_NAMES)}")
    require_int("timesteps T", timesteps, minimum=1)
    if not 0 < beta_start <= beta_end < 1:
        raise InputError(
            f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
        )
    betas = _BETA_BUILDERS[name](int(timesteps), float(beta_start), float(beta_end))
    if zero_terminal_snr:
        return NoiseSchedule(rescale_zero_terminal_snr(betas), name=f"{name}+zero_snr")
    return NoiseSchedule(betas, name=name)
