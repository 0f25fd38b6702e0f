"""Pure-torch denoising networks: ``out = net(x, t / T, context)`` (out: eps, v or x0)."""

from diffusion_lab.models.context_unet import ContextUnet
from diffusion_lab.models.unet import UNet

__all__ = ["ContextUnet", "UNet"]
