"""RankAudit: under DDP, what the ranks did, checked and written to ``<run dir>/ranks.json``.

- Each training epoch: the data set indices every rank trained on (``IndexLoader.batch_indices``
  of each batch), gathered after the epoch's last batch; recorded per epoch as the images per
  rank, how many distinct images they make together, and how many were served twice.
- At the end of fitting: a SHA-256 digest of every tensor of the module's state (the live net
  and its EMA copy, buffers included), per rank.

{"world_size": W, "train_size": N, "epochs": [{"epoch": e, "per_rank": [n_0, ...],
 "distinct": d, "repeated": r}], "digests": [{name: sha256 hex}, ...] (one per rank)}

Ranks that disagree (other digests, a shared or missing image) are logged as an error; the file
says which. Nothing happens in a single process. The gathers are collectives at points every
rank reaches together (the epoch's last batch, the end of fitting).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from diffusion_lab.data.index_loader import IndexLoader
from diffusion_lab.runs.layout import RANKS_FILE
from diffusion_lab.utils.io import write_json

log = logging.getLogger(__name__)


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and values (contiguous, on the CPU)."""
    value = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{value.dtype}{tuple(value.shape)}".encode())
    digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def state_digests(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``tensor_digest`` of every tensor of a state dict, by name."""
    return {name: tensor_digest(value) for name, value in state.items()}


def _gather(trainer: L.Trainer, value: Any) -> list[Any]:
    values: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(values, value)
    return values


class RankAudit(L.Callback):
    """Record and check the ranks' training indices and final weights (module docstring).

    Args:
        run_dir: where ``ranks.json`` goes; default ``trainer.default_root_dir``.
    """

    def __init__(self, run_dir: str | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self._indices: list[torch.Tensor] = []
        self._epochs: list[dict[str, Any]] = []
        self._train_size: int | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        return trainer.world_size > 1 and torch.distributed.is_initialized()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        loader = trainer.train_dataloader
        if not self._active(trainer) or not isinstance(loader, IndexLoader):
            return
        self._train_size = loader.sampler.num_samples
        self._indices.append(loader.batch_indices(index).cpu())
        if index + 1 < trainer.num_training_batches:
            return
        shards = _gather(trainer, torch.cat(self._indices))
        self._indices = []
        every = torch.cat(shards)
        distinct = int(every.unique().numel())
        self._epochs.append(
            {
                "epoch": trainer.current_epoch,
                "per_rank": [len(shard) for shard in shards],
                "distinct": distinct,
                "repeated": len(every) - distinct,
            }
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(trainer):
            return
        digests = _gather(trainer, state_digests(pl_module.state_dict()))
        if not trainer.is_global_zero:
            return
        differing = sorted(name for name in digests[0] if len({d[name] for d in digests}) > 1)
        if differing:
            log.error("the ranks' weights differ at the end: %s", ", ".join(differing[:5]))
        if any(epoch["repeated"] for epoch in self._epochs):
            log.error("some training images were served to more than one rank: %s", self._epochs)
        run_dir = self.run_dir or Path(trainer.default_root_dir)
        record = {
            "world_size": trainer.world_size,
            "train_size": self._train_size,
            "epochs": self._epochs,
            "digests": digests,
        }
        write_json(run_dir / RANKS_FILE, record)
