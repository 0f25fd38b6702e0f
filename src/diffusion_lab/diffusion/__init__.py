"""Pure-torch diffusion math: noise schedules, the forward process, DDPM/DDIM samplers, contexts."""

from diffusion_lab.diffusion.samplers import DDIMSampler, DDPMSampler, NFECounter, Sampler
from diffusion_lab.diffusion.schedules import SCHEDULE_NAMES, NoiseSchedule, make_schedule

__all__ = [
    "SCHEDULE_NAMES",
    "DDIMSampler",
    "DDPMSampler",
    "NFECounter",
    "NoiseSchedule",
    "Sampler",
    "make_schedule",
]
