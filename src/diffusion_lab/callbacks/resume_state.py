"""ResumeState: what Lightning's checkpoints leave out, so a resumed run continues bit for bit.

Lightning saves the weights, optimizer, LR schedule, loop progress and (for a stateful loader such
as ``IndexLoader``) the position inside the epoch. It does not save

- the random number generators: torch's CPU and CUDA generators, numpy's and python's global ones
  (the timesteps, noise and dropped contexts of every training step come from them), and
- the running sums behind the epoch-level logged metrics (``train/loss_epoch``): resumed
  mid-epoch, the epoch mean would cover only the batches after the resume.

This callback puts both into the checkpoint (its ``state_dict``; tensors and plain Python values,
so a ``weights_only`` load still reads the file) and gives them back when the resumed run starts
training (``on_train_start``: after the sanity check, before the first batch) and, for the sums,
once the first resumed batch has logged its metrics. On CPU in deterministic mode a run resumed
from a mid-epoch checkpoint then ends with the same weights and logged values, bit for bit, as one
that was never interrupted (tests/test_resume.py).

Under DDP every rank's generators are saved: Lightning writes rank 0's checkpoint dict, so the
ranks' states are gathered into it (``rng``: one state per rank, by global rank) and on resume each
rank takes back its own; a checkpoint of W ranks resumes on W ranks only. The gather is a
collective: mid-epoch every rank is inside ``trainer.save_checkpoint`` together. At an epoch's end
rank 0 may save alone (a preemption while it draws the grid, the other ranks already waiting in
the next epoch), so the states are gathered after the epoch's last training batch, where all ranks
still are, and an epoch-end checkpoint takes those (nothing draws from the global generators
between that batch and the epoch's end: validation uses its own fixed draws). The loader's
position needs no gathering: every rank has served the same number of batches (IndexLoader).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from diffusion_lab.callbacks._lightning import (
    epoch_done,
    epoch_name,
    epoch_results,
    epoch_sums,
    set_epoch_sums,
)
from diffusion_lab.utils.checks import InputError


def capture_rng() -> dict[str, Any]:
    """Every global generator's state, as tensors and plain values."""
    # the legacy global generator is the one seed_everything seeds and third-party code draws from
    name, key, position, has_gauss, cached_gauss = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), position, has_gauss, cached_gauss],
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set every global generator to a state from ``capture_rng``."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise ValueError(
                f"the checkpoint holds {len(state['cuda'])} CUDA generator states but "
                f"{torch.cuda.device_count()} devices are visible: resume on the same GPUs"
            )
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, cached_gauss))  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def gather_rng(trainer: L.Trainer) -> list[dict[str, Any]]:
    """Every rank's ``capture_rng()``, by global rank (a collective under DDP)."""
    state = capture_rng()
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return [state]
    states: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(states, state)
    return states


def _epoch_sums(trainer: L.Trainer) -> dict[str, dict[str, Any]]:
    """The running sums of the training epoch's epoch-level logged values, by logged name."""
    return {
        epoch_name(metric): {"prog_bar": metric.meta.prog_bar, **epoch_sums(metric)}
        for metric in epoch_results(trainer)
        if metric.meta.on_epoch and metric.meta.is_mean_reduction and metric.is_tensor
    }


class ResumeState(L.Callback):
    """Save and restore the RNG states and the epoch's running metric sums (module docstring)."""

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._rng: list[dict[str, Any]] | None = None  # loaded, one per rank, until restored
        self._sums: dict[str, Any] = {}
        self._epoch_end_rng: tuple[int, list[dict[str, Any]]] | None = None  # (epoch, states)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        sums = {}
        if trainer is not None and trainer.state.fn == "fit" and not trainer.sanity_checking:
            sums = {
                "epoch": trainer.current_epoch,
                "epoch_done": epoch_done(trainer),  # batches all done: at its end
                "values": _epoch_sums(trainer),
            }
        return {"rng": self._rng_to_save(trainer), "epoch_sums": sums}

    def _rng_to_save(self, trainer: L.Trainer | None) -> list[dict[str, Any]]:
        """Every rank's generator states: gathered now, or at an epoch's end those gathered after
        its last batch (module docstring)."""
        if trainer is None or trainer.world_size == 1:
            return [capture_rng()]
        if (
            self._epoch_end_rng is not None
            and self._epoch_end_rng[0] == trainer.current_epoch
            and epoch_done(trainer)
        ):
            return self._epoch_end_rng[1]
        return gather_rng(trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        rng = state_dict["rng"]
        self._rng = [rng] if isinstance(rng, dict) else list(rng)  # a dict: one process's
        self._sums = dict(state_dict.get("epoch_sums") or {})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng is None:
            return
        if len(self._rng) != trainer.world_size:
            raise InputError(
                f"the checkpoint holds the random states of {len(self._rng)} ranks, but this run "
                f"has {trainer.world_size}: resume with as many processes (trainer.devices x "
                "trainer.num_nodes) as the saved run"
            )
        restore_rng(self._rng[trainer.global_rank])
        if epoch_done(trainer):  # resumed at an epoch's end: these are that end's states
            self._epoch_end_rng = (trainer.current_epoch, self._rng)
        self._rng = None

    def _pending(self, trainer: L.Trainer, at_epoch_end: bool) -> dict[str, Any]:
        """The saved sums, once, if they belong to this point of this epoch."""
        sums, self._sums = self._sums, {}
        if sums and sums["epoch"] == trainer.current_epoch and sums["epoch_done"] == at_epoch_end:
            return sums["values"]
        return {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        """After the epoch's last batch under DDP: gather the ranks' generator states (module
        docstring). Resumed mid-epoch: the epoch's sums so far join those of the first resumed
        batch (the same additions, in an order that floating point does not see: a + b == b + a)."""
        if trainer.world_size > 1 and index + 1 >= trainer.num_training_batches:
            self._epoch_end_rng = (trainer.current_epoch, gather_rng(trainer))
        if not self._sums:
            return
        saved = self._pending(trainer, at_epoch_end=False)
        for metric in epoch_results(trainer):
            name = epoch_name(metric)
            if name in saved and metric.meta.on_epoch:
                set_epoch_sums(metric, saved[name], add=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Resumed at an epoch's end (from its validation or its grid): the epoch's values are
        logged again from their saved sums, as the uninterrupted run logs them now."""
        if not self._sums:
            return
        for name, saved in self._pending(trainer, at_epoch_end=True).items():
            count = saved["cumulated_batch_size"]
            pl_module.log(name, saved["value"] / count, prog_bar=saved["prog_bar"], batch_size=1)
            (metric,) = [m for m in epoch_results(trainer) if m.meta.name == name]
            set_epoch_sums(metric, saved, add=False)
