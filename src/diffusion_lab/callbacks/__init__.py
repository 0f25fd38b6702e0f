"""Lightning callbacks of this project: sample grids (DDPM beside DDIM), the in-training quality
panel, and what training needs around them. One module per callback; import them from here."""

from diffusion_lab.callbacks.quality import QualityPanel
from diffusion_lab.callbacks.sample_grids import SampleGrids, one_hot_rows, timed_sample

__all__ = ["QualityPanel", "SampleGrids", "one_hot_rows", "timed_sample"]
