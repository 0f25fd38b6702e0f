"""DDIM (Song et al. 2020) on a subsequence of timesteps."""

from __future__ import annotations

import math

from diffusion_lab.diffusion.samplers.base import Sampler, check_steps, spaced_timesteps
from diffusion_lab.diffusion.schedules import NoiseSchedule
from diffusion_lab.utils.checks import InputError


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2020, eq. 12) on a subsequence of ``steps`` timesteps.

    Timesteps: round(linspace(T, 0, steps + 1)) without the final 0 (T=500, 25 steps: 500, 480,
    ..., 20), the last step landing on alpha_bar_0 = 1. One step t -> t_prev:

        sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)
        x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z.

    eta = 0 is deterministic (the course's DDIM); eta = 1 over all T steps is DDPM with the
    posterior variance. The step divides by nothing that vanishes, so it also starts at
    alpha_bar_T = 0 (zero terminal SNR) given the model's x0_hat there.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        steps: int = 25,
        eta: float = 0.0,
        clip_denoised: bool = False,
        eps_scale: float = 1.0,
    ) -> None:
        steps = check_steps(steps, schedule.timesteps, "DDIM")
        if not 0.0 <= eta <= 1.0:
            raise InputError(f"DDIM eta must be in [0, 1], got {eta}")
        super().__init__(schedule, clip_denoised, eps_scale)
        self.steps = steps
        self.eta = float(eta)
        self._timesteps = spaced_timesteps(schedule.timesteps, steps)

    @property
    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    def _step(self, x, eps, x0, t, t_prev, generator, state):
        alpha_bar, alpha_bar_prev = self._alpha_bars[t], self._alpha_bars[t_prev]
        sigma = self.eta * math.sqrt(
            (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)
        )
        direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0))
        x_prev = math.sqrt(alpha_bar_prev) * x0 + direction * eps
        if sigma > 0:
            x_prev = x_prev + sigma * self._noise_like(x, generator)
        return x_prev

    def __repr__(self) -> str:
        return (
            f"DDIMSampler(T={self.schedule.timesteps}, steps={self.steps}, eta={self.eta}"
            f"{self._options_repr()})"
        )
