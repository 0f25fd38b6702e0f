"""Noise levels of a discrete VP schedule and fractional timesteps (EDM's view of a DDPM schedule).

Karras et al. 2022 (EDM) write the forward process as x_sigma = x_0 + sigma eps; a VP schedule's
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps is the same process scaled:

    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t),   x_sigma = x_vp sqrt(1 + sigma^2),
    alpha_bar = 1 / (1 + sigma^2)                                          (EDM Table 1, "VP").

sigma_0 = 0 and sigma grows strictly with t (every beta_t > 0); a zero-terminal-SNR schedule has
sigma_T = inf. A noise level between two integer timesteps gets a fractional t by interpolating
log sigma linearly between its neighbours (k-diffusion's ``DiscreteSchedule.sigma_to_t`` and
``t_to_sigma``; diffusers' ``_sigma_to_t``), the convention of DESIGN.md:

    t = i + (log sigma - log sigma_i) / (log sigma_{i+1} - log sigma_i),   sigma_i <= sigma <= sigma_{i+1}.

Between t = 0 (log sigma = -inf) and t = 1 no finite sigma lies on that line, so the levels
samplers may visit are sigma_1..sigma_T (and 0, the clean image). Pure Python floats and float64.
"""

from __future__ import annotations

import bisect
import math

import torch

# t / T held in a float dtype lands within about T * eps(dtype) of the timestep it encodes (float32:
# 6e-5 at T = 1000): a timestep read back from t / T this close to an integer is that integer
INTEGER_TOLERANCE_ULPS = 8


def sigmas_from_alpha_bars(alpha_bars: torch.Tensor) -> list[float]:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for t = 0..T, inf where alpha_bar_t = 0."""
    return [
        math.sqrt((1.0 - ab) / ab) if ab > 0 else math.inf for ab in alpha_bars.double().tolist()
    ]


class NoiseLevels:
    """sigma <-> fractional t for one schedule (its ``alpha_bars``, (T + 1,) float64).

    ``sigmas[t]`` for integer t; :meth:`t_from_sigma` and :meth:`sigma_at` interpolate log sigma
    linearly between neighbouring integer timesteps, inverse to each other on [sigma_1, sigma_T].
    """

    def __init__(self, alpha_bars: torch.Tensor) -> None:
        self.alpha_bars = alpha_bars.double().tolist()
        self.sigmas = sigmas_from_alpha_bars(alpha_bars)
        self.log_sigmas = [math.log(s) if s > 0 else -math.inf for s in self.sigmas]
        self.timesteps = len(self.sigmas) - 1
        finite = [s for s in self.sigmas if math.isfinite(s)]
        self.sigma_min, self.sigma_max_finite = self.sigmas[1], finite[-1]

    def t_from_sigma(self, sigma: float) -> float:
        """Fractional t in [1, T] for sigma in [sigma_1, sigma_T]; 0 for sigma = 0, T for inf."""
        if sigma == 0:
            return 0.0
        if sigma == math.inf:
            if self.sigmas[-1] != math.inf:
                raise ValueError(f"sigma = inf lies above sigma_T = {self.sigmas[-1]:.6g}")
            return float(self.timesteps)
        if not self.sigmas[1] * (1 - 1e-12) <= sigma <= self.sigmas[-1] * (1 + 1e-12):
            raise ValueError(
                f"sigma = {sigma:.6g} lies outside the schedule's levels "
                f"[sigma_1, sigma_T] = [{self.sigmas[1]:.6g}, {self.sigmas[-1]:.6g}]"
            )
        if self.timesteps == 1:
            return 1.0
        log_sigma = math.log(sigma)
        # the last integer timestep i in 1..T-1 with log sigma_i <= log sigma (sigma rises with t)
        low = bisect.bisect_right(self.log_sigmas, log_sigma) - 1
        low = min(max(low, 1), self.timesteps - 1)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        if hi == math.inf:  # below an infinite sigma_T the line is flat at t = T - 1
            return float(low)
        return low + min(max((log_sigma - lo) / (hi - lo), 0.0), 1.0)

    def sigma_at(self, t: float) -> float:
        """sigma at a fractional t in [0, T]: exp of log sigma interpolated linearly (the inverse
        of :meth:`t_from_sigma`); an integer t reads the table."""
        if not 0 <= t <= self.timesteps:
            raise ValueError(f"t = {t!r} lies outside 0..T={self.timesteps}")
        if float(t).is_integer():
            return self.sigmas[int(t)]
        low = math.floor(t)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        if lo == -math.inf:  # between t = 0 and 1 the line stays at log sigma = -inf
            return 0.0
        if hi == math.inf:
            return math.inf
        return math.exp(lo + (t - low) * (hi - lo))

    def alpha_bar_at(self, t: float) -> float:
        """alpha_bar = 1 / (1 + sigma^2) at a fractional t; the table's value at integer t."""
        if float(t).is_integer() and 0 <= t <= self.timesteps:
            return self.alpha_bars[int(t)]
        return 1.0 / (1.0 + self.sigma_at(t) ** 2)


def alpha_bars_at(alpha_bars: torch.Tensor, t_fraction: torch.Tensor) -> torch.Tensor:
    """alpha_bar at the timesteps t = T t_fraction encoded as the network receives them
    (t_fraction = t / T, shape (B,), any float dtype): float64 (B,) on its device.

    A t within 8 T eps(dtype) of an integer is that integer and reads the table (t / T loses that
    much in its dtype); otherwise 1 / (1 + sigma(t)^2), log sigma interpolated linearly between
    the neighbouring integer timesteps as in :meth:`NoiseLevels.sigma_at`.
    """
    table = alpha_bars.to(device=t_fraction.device, dtype=torch.float64)
    T = table.numel() - 1
    tolerance = INTEGER_TOLERANCE_ULPS * T * torch.finfo(t_fraction.dtype).eps
    t = t_fraction.detach().to(torch.float64).reshape(-1) * T
    nearest = t.round().clamp(0, T).long()
    low = t.floor().clamp(0, max(T - 1, 0)).long()
    log_sigmas = 0.5 * (torch.log1p(-table) - torch.log(table))  # -inf at t = 0, inf at ab = 0
    lo, hi = log_sigmas[low], log_sigmas[(low + 1).clamp(max=T)]
    log_sigma = lo + (t - low) * (hi - lo)
    interpolated = torch.sigmoid(-2.0 * log_sigma)  # 1 / (1 + sigma^2) = sigmoid(-2 log sigma)
    interpolated = torch.where(lo == -math.inf, torch.ones_like(t), interpolated)
    interpolated = torch.where(hi == math.inf, torch.zeros_like(t), interpolated)
    return torch.where((t - nearest).abs() <= tolerance, table[nearest], interpolated)
