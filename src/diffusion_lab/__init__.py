"""diffusion-lab: context-conditioned diffusion experiments with Lightning and Hydra."""

from pathlib import Path

from diffusion_lab.resolvers import register_resolvers

__version__ = "0.1.0"

# the Hydra configs (conf/ at the repository root) that every entry point composes
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

register_resolvers()


def __getattr__(name: str):
    """``diffusion_lab.load_pretrained``, imported on first use (torch and Lightning are heavy)."""
    if name == "load_pretrained":
        from diffusion_lab.runs.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'diffusion_lab' has no attribute {name!r}")
