"""Per-rank random streams under DDP: every rank trains on other images, so it must draw other
timesteps, noise and dropped contexts too."""

from __future__ import annotations

import torch


def offset_seed_by_rank(rank: int) -> None:
    """``seed_everything`` gives every rank the same seed: reseed torch's global generator with
    that seed + ``rank`` (at the start of fitting)."""
    torch.manual_seed(torch.initial_seed() + rank)
