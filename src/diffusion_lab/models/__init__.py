"""Pure-torch noise-prediction networks: ``eps = net(x, t / T, context)``."""

from diffusion_lab.models.context_unet import ContextUnet

__all__ = ["ContextUnet"]
