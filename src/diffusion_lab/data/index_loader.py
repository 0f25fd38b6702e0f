"""IndexLoader: batches cut from in-memory tensors by index, on the device, resumable mid-epoch.

The whole (uint8) data set is moved to the device once; each epoch draws one seeded permutation
there, and batch b is ``tensors[order[b * B:(b + 1) * B]]``: one gather per tensor, no per-item
dataset calls and no collation. That is what a ``DataLoader`` over a ``TensorDataset`` yields, in a
different (but seeded) order, without its per-sample Python work.

Order. Epoch e of a loader with data seed s uses the permutation drawn by a generator on the device
seeded with ``epoch_seed(s, e)``: the same (s, e) always gives the same order on a given device type
(CPU and CUDA generators draw different permutations), whatever the global RNG has done.

Distributed. Each epoch's order is cut into global batches of W x B indices (W ranks, B the
per-rank batch size), and rank r takes every W-th index of each from r: no index is repeated or
left out (unlike ``DistributedSampler``, which pads the order with its start), every rank has the
same number of batches (DDP needs one gradient all-reduce per step on every rank), and the ranks'
batch sizes differ by at most one, in the last global batch only. A last global batch of fewer
than W indices (some rank would get none) joins the one before it. Every rank draws the same
permutation (same seed and epoch), so the ranks' indices are disjoint and cover the set once.
With W = 1 this is the plain order cut into batches of B.

State. ``state_dict()`` holds the epoch and the number of batches served in it; Lightning's fit loop
saves it in checkpoints (``loops.fit_loop.state_dict["combined_loader"]``) and gives it back through
``load_state_dict()`` on resume, so a run restored from a mid-epoch checkpoint continues with the
next batch of the same permutation. Lightning sets the epoch through ``loader.sampler.set_epoch``
(as for a ``DistributedSampler``) before each epoch's first batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from diffusion_lab.utils.checks import InputError, require_int


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed for (data seed, epoch), distinct for distinct pairs in practice.

    numpy's SeedSequence hashes the pair, so seed s at epoch e+1 does not repeat seed s+1 at epoch e
    (as ``seed + epoch`` would)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class ShardedPermutation:
    """One epoch's order of N indices (a seeded permutation, or 0..N-1) and this rank's batches
    of it: global batches of W x B indices, of which rank r takes positions r, r + W, ...
    (module docstring).

    Args:
        num_samples: N, the size of the data set (at least the world size).
        shuffle: permute each epoch (training) or keep 0..N-1 (validation).
        seed: the data seed; with the epoch it seeds the permutation (see `epoch_seed`).
        rank, world_size: this process's share of every global batch.
        device: where the permutation is drawn and the indices live.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1; got rank {rank} of {world_size}")
        if num_samples < world_size:
            raise InputError(
                f"{num_samples} images cannot be shared among {world_size} ranks (each needs at "
                "least one); use fewer devices or more data"
            )
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch (as for a DistributedSampler)."""
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        """All N indices (N,) int64 on the device, in ``epoch``'s order."""
        if not self.shuffle:
            return torch.arange(self.num_samples, device=self.device)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator, device=self.device)

    def bounds(self, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
        """(start, end) in the order of each global batch: W x B indices each; the last one
        shorter (dropped with ``drop_last``), or joined to the one before when it has fewer
        than W indices."""
        size, count = batch_size * self.world_size, self.num_samples
        ends = list(range(size, count + 1, size))
        remainder = count % size
        if remainder and not drop_last:
            if remainder >= self.world_size or not ends:
                ends.append(count)
            else:
                ends[-1] = count
        return list(zip([0, *ends[:-1]], ends))

    def batches(self, epoch: int, batch_size: int, drop_last: bool) -> list[torch.Tensor]:
        """This rank's batches of ``epoch``: index tensors (about B,) int64 on the device."""
        order = self.order(epoch)
        return [
            order[start:end][self.rank :: self.world_size]
            for start, end in self.bounds(batch_size, drop_last)
        ]


class IndexLoader:
    """Batches of ``tensors`` (each (N, ...)) taken by index on their device; stateful.

    Args:
        tensors: tensors with the same first dimension N, e.g. (uint8 images (N, C, H, W), float32
            contexts (N, K)). They are moved to ``device`` once, here.
        batch_size: items per batch (per rank).
        shuffle, seed, rank, world_size: see `ShardedPermutation`.
        drop_last: drop the rank's last batch when it is smaller than batch_size.
        device: where the data, the permutation and the batches live.

    Iterating yields tuples of tensors (batch_size, ...) (the last possibly smaller). The epoch is
    ``sampler.epoch``, read when the epoch's first batch is drawn.
    """

    # the DataLoader attributes Lightning reads: `sampler.set_epoch` before each epoch, and
    # `batch_sampler` (None: batches are cut from `sampler`'s order) when it asks about shuffling
    batch_sampler = None

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if not tensors:
            raise ValueError("IndexLoader needs at least one tensor")
        sizes = {len(tensor) for tensor in tensors}
        if len(sizes) != 1:
            raise ValueError(f"all tensors must have the same first dimension; got {sorted(sizes)}")
        require_int("batch_size", batch_size, minimum=1)
        self.tensors = tuple(tensor.to(device) for tensor in tensors)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = ShardedPermutation(
            sizes.pop(),
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world_size,
            device=device,
        )
        self.position = 0  # batches served so far in the current epoch
        self._resume: tuple[int, int] | None = None  # (epoch, position) from load_state_dict

    def __len__(self) -> int:
        return len(self.sampler.bounds(self.batch_size, self.drop_last))

    def batch_indices(self, batch: int) -> torch.Tensor:
        """The data set indices of this rank's batch number ``batch`` of the current epoch (about
        B,): which images a batch holds, e.g. to give each validation image its own fixed
        noise whatever the world size."""
        return self.sampler.batches(self.sampler.epoch, self.batch_size, self.drop_last)[batch]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        # a generator: nothing is drawn until the first batch is asked for, after Lightning's
        # set_epoch (the fit loop creates the iterator before it sets the epoch)
        return self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.sampler.epoch
        start = 0
        if self._resume is not None:
            resume_epoch, resume_position = self._resume
            self._resume = None
            if resume_epoch == epoch:
                start = resume_position
        batches = self.sampler.batches(epoch, self.batch_size, self.drop_last)
        self.position = start
        for batch in range(start, len(batches)):
            index = batches[batch]
            self.position = batch + 1  # counted before the yield: a checkpoint taken while the
            # batch is in training_step resumes at the batch after it
            yield tuple(tensor[index] for tensor in self.tensors)

    def state_dict(self) -> dict[str, Any]:
        """The epoch, the batches served in it, and what they mean (checked on load)."""
        return {
            "epoch": self.sampler.epoch,
            "position": self.position,
            "num_samples": self.sampler.num_samples,
            "batch_size": self.batch_size,
            "world_size": self.sampler.world_size,
            "seed": self.sampler.seed,
            "shuffle": self.sampler.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration of that epoch starts at its next batch.

        Raises ValueError when the state was saved for other data, batch size, world size, seed or
        shuffling: its position would then point at other images."""
        current = self.state_dict()
        differing = {
            key: (state[key], current[key])
            for key in ("num_samples", "batch_size", "world_size", "seed", "shuffle", "drop_last")
            if key in state and state[key] != current[key]
        }
        if differing:
            described = ", ".join(
                f"{key} {saved!r} (now {now!r})" for key, (saved, now) in differing.items()
            )
            raise InputError(
                f"the loader state was saved with {described}: a mid-epoch position cannot be "
                "carried over; resume with the data settings and world size of the saved run"
            )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"loader position {position} is outside 0..{len(self)}")
        self.sampler.set_epoch(int(state["epoch"]))
        self.position = position
        self._resume = (int(state["epoch"]), position)
