"""Lightning callbacks of this project: sample grids (DDPM beside the run's sampler), the in-training quality
panel, and what training needs around them. One module per callback; import them from here."""

from diffusion_lab.callbacks.non_finite import NonFiniteGuard, NonFiniteLossError
from diffusion_lab.callbacks.preemption import Preempted, Preemption, check_stop
from diffusion_lab.callbacks.quality import QualityPanel
from diffusion_lab.callbacks.rank_audit import RankAudit
from diffusion_lab.callbacks.resume_state import ResumeState
from diffusion_lab.callbacks.sample_grids import SampleGrids, one_hot_rows

__all__ = [
    "NonFiniteGuard",
    "NonFiniteLossError",
    "Preempted",
    "Preemption",
    "QualityPanel",
    "RankAudit",
    "ResumeState",
    "SampleGrids",
    "check_stop",
    "one_hot_rows",
]
