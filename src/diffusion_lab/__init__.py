"""diffusion-lab: context-conditioned diffusion experiments with Lightning and Hydra."""

__version__ = "0.1.0"
