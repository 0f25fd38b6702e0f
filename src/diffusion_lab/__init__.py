"""diffusion-lab: context-conditioned diffusion experiments with Lightning and Hydra."""

from pathlib import Path

from diffusion_lab.resolvers import register_resolvers

__version__ = "0.1.0"

# the Hydra configs (conf/ at the repository root) that every entry point composes
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

register_resolvers()
