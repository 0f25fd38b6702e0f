"""Pure-torch diffusion math: noise schedules, the forward process, samplers (DDPM, DDIM,
DPM-Solver++, EDM's Euler and Heun), prediction-target conversions, contexts."""

from diffusion_lab.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    EulerSampler,
    HeunSampler,
    NFECounter,
    Sampler,
)
from diffusion_lab.diffusion.schedules import SCHEDULE_NAMES, NoiseSchedule, make_schedule

__all__ = [
    "SCHEDULE_NAMES",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverSampler",
    "EulerSampler",
    "HeunSampler",
    "NFECounter",
    "NoiseSchedule",
    "Sampler",
    "make_schedule",
]
