"""EDM's Euler and Heun samplers (Karras et al. 2022, "Elucidating the Design Space of Diffusion-
Based Generative Models", Algorithms 1 and 2; k-diffusion's ``sample_euler`` / ``sample_heun``).

EDM integrates the probability-flow ODE in the noise level sigma on x_sigma = x_0 + sigma eps. A VP
model sees x_vp = x_sigma / sqrt(1 + sigma^2) = sqrt(alpha_bar) x_sigma (noise_levels.py), so with
the (guided, scaled) eps_hat and x0_hat of :meth:`Sampler.denoise` at x_vp:

    D(x_sigma; sigma) = x0_hat,   d = (x_sigma - D) / sigma = eps_hat     (EDM eq. 3 and Alg. 1),

eps_hat and x0_hat being consistent (x_vp = sqrt(alpha_bar) x0_hat + sqrt(1 - alpha_bar) eps_hat)
also after clipping. One step sigma_i -> sigma_{i+1} on x_sigma (the chain holds x_vp):

    Euler:  x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i = x0_hat + sigma_{i+1} eps_hat,
            i.e. x_vp' = sqrt(alpha_bar') x0_hat + sqrt(1 - alpha_bar') eps_hat  (DDIM, eta 0);
    Heun:   x' = x_i + (sigma_{i+1} - sigma_i) d_i,  d' = eps_hat(x'; sigma_{i+1}),
            x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (d_i + d') / 2             (Alg. 1, lines 5-8),

except onto sigma = 0 (the last step) and from sigma = inf (the pure noise of a zero-terminal-SNR
schedule at t = T), where Heun takes the Euler step: NFE = 2 N - 1 (2 N - 2 from sigma = inf).

Churn (Alg. 2, lines 4-6): before the step from sigma_i, if S_tmin <= sigma_i <= S_tmax,

    gamma_i = min(S_churn / N, sqrt(2) - 1),  sigma_hat = sigma_i (1 + gamma_i),
    x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise z,   z ~ N(0, I) from the generator,

and the step runs from (x_hat, sigma_hat). sigma_hat is capped at the schedule's largest finite
noise level (sigma_T): above it the network has no timestep (k-diffusion clamps t the same way).
"""

from __future__ import annotations

import math

import torch

from diffusion_lab.diffusion.samplers.base import Sampler, check_steps
from diffusion_lab.diffusion.samplers.karras import sigma_grid
from diffusion_lab.diffusion.schedules import NoiseSchedule
from diffusion_lab.utils.checks import InputError, is_number


def _check_number(name: str, value: float, low: float, accepted: str, inf: bool = False) -> float:
    is_real = isinstance(value, int | float) and not isinstance(value, bool)
    ok = is_real and not math.isnan(value) and value >= low and (inf or is_number(value))
    if not ok:
        raise InputError(f"{name} must be {accepted}, got {value!r}")
    return float(value)


class EDMSampler(Sampler):
    """The shared part of :class:`EulerSampler` and :class:`HeunSampler`: the sigma grid, churn.

    Args:
        schedule: the noise schedule the model was trained on.
        steps: N, the number of noise levels before the final sigma = 0.
        spacing: "karras" (eq. 5 with ``rho``) or "uniform" (DDIM's integer timesteps).
        rho: Karras' exponent (7); higher spends more steps near the data.
        churn: S_churn >= 0 (0: deterministic); s_tmin, s_tmax: the sigma range where it acts;
            s_noise: S_noise > 0, the scale of the added noise (EDM's ImageNet-64: 40, 0.05, 50, 1.003).
        sigma_min, sigma_max: Karras' range; None: sigma_1 and sigma_T of the schedule.
        clip_denoised, eps_scale: as for every sampler.
    """

    name = "EDM"

    def __init__(
        self,
        schedule: NoiseSchedule,
        steps: int = 25,
        spacing: str = "karras",
        rho: float = 7.0,
        churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        clip_denoised: bool = False,
        eps_scale: float = 1.0,
    ) -> None:
        steps = check_steps(steps, schedule.timesteps, self.name)
        self.churn = _check_number("churn", churn, 0.0, "a finite number >= 0 (0 = off)")
        self.s_tmin = _check_number("s_tmin", s_tmin, 0.0, "a number >= 0", inf=True)
        self.s_tmax = _check_number("s_tmax", s_tmax, self.s_tmin, "a number >= s_tmin", inf=True)
        self.s_noise = _check_number("s_noise", s_noise, 0.0, "a finite number > 0 (1 = EDM)")
        if self.s_noise == 0:
            raise InputError(f"s_noise must be a finite number > 0 (1 = EDM), got {s_noise!r}")
        super().__init__(schedule, clip_denoised, eps_scale)
        self.steps, self.spacing, self.rho = steps, spacing, float(rho)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._timesteps, self.sigmas = sigma_grid(
            self._levels, steps, spacing, rho, sigma_min, sigma_max
        )
        self._sigma_of = {**dict(zip(self._timesteps, self.sigmas)), 0: 0.0}

    @property
    def timesteps(self) -> list[float]:
        return list(self._timesteps)

    def _gamma(self, sigma: float) -> float:
        """gamma_i = min(S_churn / N, sqrt(2) - 1) where S_tmin <= sigma_i <= S_tmax, else 0."""
        if self.churn == 0 or not self.s_tmin <= sigma <= self.s_tmax or math.isinf(sigma):
            return 0.0
        return min(self.churn / self.steps, math.sqrt(2.0) - 1.0)

    def _churn(
        self, x: torch.Tensor, t: float, sigma: float, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, float, float]:
        """(x_hat, t_hat, sigma_hat) in VP scale: Alg. 2's added noise, or (x, t, sigma) unchanged."""
        gamma = self._gamma(sigma)
        sigma_hat = min(sigma * (1.0 + gamma), self._levels.sigma_max_finite)
        if sigma_hat <= sigma:
            return x, t, sigma
        x_sigma = x * math.sqrt(1.0 + sigma**2)
        z = self._noise_like(x, generator)
        x_hat = x_sigma + (math.sqrt(sigma_hat**2 - sigma**2) * self.s_noise) * z
        return (
            x_hat / math.sqrt(1.0 + sigma_hat**2),
            self._levels.t_from_sigma(sigma_hat),
            sigma_hat,
        )

    def _euler(self, eps: torch.Tensor, x0: torch.Tensor, t_next: float) -> torch.Tensor:
        """x_vp' = sqrt(alpha_bar') x0_hat + sqrt(1 - alpha_bar') eps_hat = (D + sigma' d) scaled."""
        alpha_bar = self._alpha_bar(t_next)
        return math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * eps

    def _step(self, x, eps, x0, t, t_prev, generator, state):
        return self._euler(eps, x0, t_prev)

    def _options_repr(self) -> str:
        parts = [f", spacing={self.spacing!r}"]
        if self.spacing == "karras":
            parts.append(f", rho={self.rho:g}")
            parts += [f", {n}={getattr(self, n):g}" for n in ("sigma_min", "sigma_max")
                      if getattr(self, n) is not None]  # fmt: skip
        if self.churn > 0:
            parts.append(f", churn={self.churn:g}, s_tmin={self.s_tmin:g}, s_tmax={self.s_tmax:g}")
            parts.append(f", s_noise={self.s_noise:g}")
        return "".join(parts) + super()._options_repr()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(T={self.schedule.timesteps}, steps={self.steps}"
            f"{self._options_repr()})"
        )


class EulerSampler(EDMSampler):
    """EDM's Euler sampler (Alg. 2 with the first-order step; k-diffusion ``sample_euler``): one
    network call per noise level, NFE = N. Deterministic with churn = 0; on ``spacing="uniform"``
    it is DDIM with eta 0 step for step."""

    name = "Euler"

    def _advance(self, denoise, x, t, t_prev, generator, state):
        x, t, _ = self._churn(x, t, self._sigma_of[t], generator)
        eps, x0 = denoise(x, t)
        return self._euler(eps, x0, t_prev)


class HeunSampler(EDMSampler):
    """EDM's Heun sampler (Alg. 1, and Alg. 2 with churn > 0; k-diffusion ``sample_heun``): the
    Euler step corrected by the slope at its end, two network calls per step except the last
    (onto sigma = 0) and one from sigma = inf, which are Euler steps: NFE = 2 N - 1."""

    name = "Heun"

    @property
    def nfe(self) -> int:
        sigmas = self.sigmas + [0.0]
        return sum(
            2 if math.isfinite(s) and s_next > 0 else 1 for s, s_next in zip(sigmas, sigmas[1:])
        )

    def _advance(self, denoise, x, t, t_prev, generator, state):
        x, t, sigma = self._churn(x, t, self._sigma_of[t], generator)
        sigma_next = self._sigma_of[t_prev]
        eps, x0 = denoise(x, t)
        if sigma_next == 0 or math.isinf(sigma):
            return self._euler(eps, x0, t_prev)
        x_sigma = x * math.sqrt(1.0 + sigma**2)
        x_euler = x_sigma + (sigma_next - sigma) * eps  # d = (x - D) / sigma = eps_hat
        eps_next, _ = denoise(x_euler / math.sqrt(1.0 + sigma_next**2), t_prev)
        x_next = x_sigma + (0.5 * (sigma_next - sigma)) * (eps + eps_next)
        return x_next / math.sqrt(1.0 + sigma_next**2)
