"""Noise-level grids for samplers that step in sigma (EDM's Euler and Heun, DPM-Solver++).

``spacing="karras"`` (Karras et al. 2022, eq. 5; k-diffusion's ``get_sigmas_karras``), N = steps:

    sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0..N-1 (sigma_0 = sigma_max when N = 1), then sigma_N = 0,

with sigma_max = sigma_T and sigma_min = sigma_1 of the schedule by default (k-diffusion's and
diffusers' choice for a discrete DDPM schedule); rho = 7 spends the steps near the data. Each
sigma_i is visited at its fractional timestep (log sigma interpolated, see noise_levels.py).
On a zero-terminal-SNR schedule sigma_T = inf and the formula has no range: the grid then starts
at sigma_0 = inf (t = T, pure noise) and places the other N - 1 levels by the formula between
sigma_{T-1} and sigma_min.

``spacing="uniform"``: DDIM's integer timesteps round(linspace(T, 0, N + 1)) without the final 0,
at their table sigmas; there Euler is DDIM with eta 0 and DPM-Solver++ its usual self.
"""

from __future__ import annotations

import math

from diffusion_lab.diffusion.noise_levels import NoiseLevels
from diffusion_lab.diffusion.samplers.base import spaced_timesteps
from diffusion_lab.utils.checks import InputError, require_choice, require_number

SPACINGS = ("karras", "uniform")


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """(sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for
    i = 0..N-1, descending from sigma_max to sigma_min (without the final 0)."""
    if steps == 1:
        return [float(sigma_max)]
    max_inv_rho, min_inv_rho = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    sigmas = [
        (max_inv_rho + i / (steps - 1) * (min_inv_rho - max_inv_rho)) ** rho for i in range(steps)
    ]
    # the ends exactly ((x^(1/rho))^rho may miss x by an ulp): sigma_T and sigma_1 at t = T and 1
    sigmas[0], sigmas[-1] = float(sigma_max), float(sigma_min)
    return sigmas


def _check_positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    return require_number(f"{name} (null: the schedule's)", value, minimum=0, above=True)


def check_grid_options(
    spacing: str, rho: float, sigma_min: float | None, sigma_max: float | None
) -> None:
    """Refuse an unknown spacing, rho <= 0, or sigma bounds that are not positive numbers."""
    require_choice("spacing", spacing, SPACINGS)
    require_number("rho (Karras et al.: 7)", rho, minimum=0, above=True)
    _check_positive("sigma_min", sigma_min)
    _check_positive("sigma_max", sigma_max)
    if spacing == "uniform" and (sigma_min is not None or sigma_max is not None):
        raise InputError(
            "sigma_min and sigma_max apply to spacing='karras'; spacing='uniform' takes the "
            f"DDIM grid's levels (got sigma_min={sigma_min!r}, sigma_max={sigma_max!r})"
        )


def sigma_grid(
    levels: NoiseLevels,
    steps: int,
    spacing: str = "karras",
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> tuple[list[float], list[float]]:
    """(timesteps, sigmas) of the grid, each descending with ``steps`` entries (the final t = 0,
    sigma = 0 is implied). Uniform timesteps are ints; Karras ones fractional floats."""
    check_grid_options(spacing, rho, sigma_min, sigma_max)
    if spacing == "uniform":
        timesteps = spaced_timesteps(levels.timesteps, steps)
        return timesteps, [levels.sigmas[t] for t in timesteps]
    low = levels.sigma_min if sigma_min is None else float(sigma_min)
    high = levels.sigmas[-1] if sigma_max is None else float(sigma_max)
    for name, value in (("sigma_min", low), ("sigma_max", high)):
        if not levels.sigma_min <= value <= levels.sigmas[-1]:
            raise InputError(
                f"{name} = {value:.6g} lies outside the schedule's noise levels [sigma_1, sigma_T] "
                f"= [{levels.sigma_min:.6g}, {levels.sigmas[-1]:.6g}]"
            )
    top = levels.sigma_max_finite if math.isinf(high) else high
    if low > top:
        raise InputError(f"sigma_min = {low:.6g} must not exceed sigma_max = {top:.6g}")
    if math.isinf(high):  # zero terminal SNR: start on the pure noise at t = T
        sigmas = [math.inf]
        if steps > 1:
            sigmas += karras_sigmas(steps - 1, low, levels.sigma_max_finite, rho)
    else:
        sigmas = karras_sigmas(steps, low, high, rho)
    return [levels.t_from_sigma(s) for s in sigmas], sigmas
