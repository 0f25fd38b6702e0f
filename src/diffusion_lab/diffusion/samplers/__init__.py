"""Samplers, one module per family (as diffusers keeps one file per scheduler):

- :mod:`.base`: the shared machinery (guidance, epsilon scaling, x0 estimation, the step loop);
- :mod:`.ddpm`: ancestral DDPM; :mod:`.ddim`: DDIM; :mod:`.dpm_solver`: DPM-Solver++ multistep
  (and its SDE variant);
- :mod:`.edm`: EDM's Euler and Heun (Karras et al. 2022), on :mod:`.karras`' noise-level grids.

Every sampler is built as ``Cls(schedule, **options)`` and has ``.sample``, ``.iter_steps``,
``.trajectory``, ``.timesteps`` and ``.nfe``.
"""

from diffusion_lab.diffusion.samplers.base import (
    Model,
    NFECounter,
    Sampler,
    StepCallback,
    spaced_timesteps,
)
from diffusion_lab.diffusion.samplers.ddim import DDIMSampler
from diffusion_lab.diffusion.samplers.ddpm import DDPM_VARIANCES, DDPMSampler
from diffusion_lab.diffusion.samplers.dpm_solver import DPM_SOLVER_ORDERS, DPMSolverSampler
from diffusion_lab.diffusion.samplers.edm import EDMSampler, EulerSampler, HeunSampler
from diffusion_lab.diffusion.samplers.karras import SPACINGS, karras_sigmas, sigma_grid

__all__ = [
    "DDPM_VARIANCES",
    "DPM_SOLVER_ORDERS",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverSampler",
    "EDMSampler",
    "EulerSampler",
    "HeunSampler",
    "Model",
    "NFECounter",
    "SPACINGS",
    "Sampler",
    "StepCallback",
    "karras_sigmas",
    "sigma_grid",
    "spaced_timesteps",
]
