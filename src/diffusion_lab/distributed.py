"""What DiffusionModule needs so that many processes (DDP) train and validate as one.

- :func:`average_buffers`: the ranks' BatchNorm statistics made equal (their mean), so the live net
  and its EMA, which averages buffers too, are the same on every rank.
- :func:`validation_indices`: which validation images a batch holds, so each image gets its own
  fixed timestep and noise whatever the batch size or the world size.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import Strategy

from diffusion_lab.data.index_loader import IndexLoader


def average_buffers(net: torch.nn.Module, strategy: Strategy) -> None:
    """Every floating buffer of ``net`` (BatchNorm's running mean and variance) set to its mean
    over the ranks, in one all-reduce of their concatenation; the result is the same on every
    rank. Each rank updates these buffers from its own images and DDP only broadcasts rank 0's
    at the next forward, so without this the ranks' EMA copies drift apart."""
    buffers = [buffer for buffer in net.buffers() if buffer.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([buffer.detach().reshape(-1) for buffer in buffers])
    mean = strategy.reduce(flat, reduce_op="mean")
    for buffer, value in zip(buffers, mean.split([buffer.numel() for buffer in buffers])):
        buffer.copy_(value.view_as(buffer))


def validation_indices(loader: Any, batch_idx: int, batch: int) -> tuple[torch.Tensor, int]:
    """(indices in the validation set of this rank's batch ``batch_idx`` of ``batch`` images,
    the validation set's size), for the trainer's validation loader (or a list holding it).

    An IndexLoader knows its batches (``batch_indices``). A torch DataLoader is unshuffled, so
    batch b holds images b * B, ...: exact in one process; under DDP its DistributedSampler
    interleaves and pads, and the indices (so the draws) are then approximate."""
    if isinstance(loader, list):
        loader = loader[0]
    if isinstance(loader, IndexLoader):
        return loader.batch_indices(batch_idx), loader.sampler.num_samples
    start, count = batch_idx * loader.batch_size, len(loader.dataset)
    return torch.arange(start, start + batch) % count, count
