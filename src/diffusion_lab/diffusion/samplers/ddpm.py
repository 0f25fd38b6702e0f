"""Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2)."""

from __future__ import annotations

import math

import torch

from diffusion_lab.diffusion.samplers.base import Sampler
from diffusion_lab.diffusion.schedules import NoiseSchedule
from diffusion_lab.utils.checks import InputError

# beta: the course's sigma_t^2 = beta_t; posterior: beta~_t; none: no noise added back (the
# course's lesson-1 demonstration: samples collapse towards the average of the data)
DDPM_VARIANCES = ("beta", "posterior", "none")


class DDPMSampler(Sampler):
    """Ancestral DDPM sampling over t = T..1:

        x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,

    with sigma_t^2 = beta_t (``variance="beta"``, as in the course), the posterior variance
    beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (``"posterior"``) or 0 (``"none"``),
    and z = 0 at t = 1. With ``clip_denoised``, or where alpha_t = 0 (beta_T = 1 on a zero-terminal-
    SNR schedule), the mean is written with x0_hat as the posterior mean (DDPM eq. 7):

        mu = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x0_hat
             + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        variance: str = "beta",
        clip_denoised: bool = False,
        eps_scale: float = 1.0,
    ) -> None:
        if variance not in DDPM_VARIANCES:
            raise InputError(
                f"unknown DDPM variance {variance!r}; accepted: {', '.join(DDPM_VARIANCES)}"
            )
        super().__init__(schedule, clip_denoised, eps_scale)
        self.variance = variance
        if variance == "none":
            table = torch.zeros_like(schedule.betas)
        else:
            table = schedule.betas if variance == "beta" else schedule.posterior_variance()
        self._sigmas = table.sqrt().tolist()

    @property
    def timesteps(self) -> list[int]:
        return list(range(self.schedule.timesteps, 0, -1))

    def _step(self, x, eps, x0, t, t_prev, generator, state):
        beta, alpha_bar = self._betas[t], self._alpha_bars[t]
        alpha = 1.0 - beta
        if self.clip_denoised or alpha == 0:
            alpha_bar_prev = self._alpha_bars[t - 1]
            mean = (math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)) * x0 + (
                math.sqrt(alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
            ) * x
        else:
            mean = (x - (beta / math.sqrt(1.0 - alpha_bar)) * eps) / math.sqrt(alpha)
        if t == 1 or self._sigmas[t] == 0:
            return mean
        return mean + self._sigmas[t] * self._noise_like(x, generator)

    def __repr__(self) -> str:
        return (
            f"DDPMSampler(T={self.schedule.timesteps}, variance={self.variance!r}"
            f"{self._options_repr()})"
        )
