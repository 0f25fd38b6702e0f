"""Sweeps: what one run leaves behind (result.json), the multirun summary (summary.csv, .md, .png)
and the Hydra callback that rebuilds it as jobs end."""

from diffusion_lab.sweeps import parallel, slurm  # noqa: F401  (register the launchers' resolvers)
from diffusion_lab.sweeps.results import (
    INTERRUPTED_FILE,
    RESULT_FILE,
    optimized_value,
    recording_result,
)

__all__ = ["INTERRUPTED_FILE", "RESULT_FILE", "optimized_value", "recording_result"]
