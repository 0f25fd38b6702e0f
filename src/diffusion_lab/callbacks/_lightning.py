"""Every touch of Lightning's private internals, in one place (lightning>=2.2,<3, pyproject.toml).

Exact resume and preemption need state that Lightning keeps to itself; each function below says
which public API is missing. tests/test_lightning_internals.py checks on a real Trainer after a
tiny fit that every attribute used here still exists with the shape used here, and names the one
that changed: a Lightning upgrade fails that test instead of breaking exact resume silently.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

# ``_ResultMetric`` (Lightning's accumulator of one logged key) fields that hold the running sums
RESULT_SUMS = ("value", "cumulated_batch_size")


# --- the trainer's cluster environment -------------------------------------------------------
def cluster_environment(trainer: L.Trainer) -> ClusterEnvironment | None:
    """The environment Lightning detected (SLURM, torchelastic, ...).

    Missing public API: ``trainer.strategy.cluster_environment`` exists on parallel strategies
    only; a single-device run's environment is only on the private accelerator connector."""
    return trainer._accelerator_connector.cluster_environment


# --- finishing a training batch inside on_train_batch_end ---------------------------------------
def finish_train_batch(
    trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, index: int
) -> None:
    """Do, from a callback's ``on_train_batch_end``, what the loop does after the callbacks: the
    module's own ``on_train_batch_end`` hook (our EMA update) and the logger connector's end of
    batch (the step's logged values), so a checkpoint saved now holds the state after the batch.

    Missing public API: no way to save a checkpoint "after this batch is fully done" or to stop
    from a callback right after the batch (``trainer.should_stop`` is honoured only at an epoch
    boundary once ``min_steps`` is met); the logger connector is private."""
    pl_module.on_train_batch_end(outputs, batch, index)
    trainer._logger_connector.on_batch_end()
    trainer._logger_connector.update_train_step_metrics()


# --- a checkpoint as of the end of the epoch's validation ---------------------------------------
def dump_checkpoint(trainer: L.Trainer) -> dict[str, Any]:
    """The checkpoint dict ``trainer.save_checkpoint`` would write, without its barrier.

    Missing public API: ``trainer.save_checkpoint`` synchronises all ranks (a barrier); a rank
    stopped inside a collective-free sampling chain must write without one."""
    return trainer._checkpoint_connector.dump_checkpoint(weights_only=False)


def hpc_save_path(trainer: L.Trainer) -> Path:
    """``<default_root_dir>/hpc_ckpt_<N+1>.ckpt``: where Lightning's SLURM requeue handler saves,
    and where the requeued job's restore looks first.

    Missing public API: the hpc checkpoint's name and lookup live on the private checkpoint
    connector (``hpc_save_path``, ``_hpc_resume_path``)."""
    return Path(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir))


@contextmanager
def before_epoch_marked_processed(trainer: L.Trainer) -> Iterator[None]:
    """Inside ``on_train_epoch_end``: the loop's counters as of just before it (the epoch not yet
    marked processed, its last batch not yet counted as stepped; the restore adds it, see
    ``_TrainingEpochLoop.reset``), put back on exit. A checkpoint dumped in the block resumes as
    Lightning's own epoch-end (validation) checkpoints do.

    Missing public API: loop progress is read-only in spirit (``fit_loop.epoch_progress``) and
    ``epoch_loop._batches_that_stepped`` (the logging step) is private."""
    progress, epoch_loop = trainer.fit_loop.epoch_progress, trainer.fit_loop.epoch_loop
    shift = int(progress.total.processed == progress.total.completed + 1)
    progress.total.processed -= shift
    progress.current.processed -= shift
    epoch_loop._batches_that_stepped -= shift
    try:
        yield
    finally:
        progress.total.processed += shift
        progress.current.processed += shift
        epoch_loop._batches_that_stepped += shift


# --- the epoch's running sums of logged values ---------------------------------------------------
def epoch_done(trainer: L.Trainer) -> bool:
    """Whether the training epoch's batches are all done (we are at its end).

    Missing public API: the epoch loop (``_TrainingEpochLoop``) is a private class."""
    return bool(trainer.fit_loop.epoch_loop.done)


def epoch_results(trainer: L.Trainer) -> list[Any]:
    """The training epoch's ``_ResultMetric`` accumulators, one per logged key.

    Missing public API: Lightning saves no running sums of ``on_epoch=True`` values in checkpoints
    (``trainer.callback_metrics`` holds only finished values); they live in the epoch loop's
    private ``_results`` (a ``_ResultCollection``)."""
    return list(trainer.fit_loop.epoch_loop._results.values())


def epoch_name(metric: Any) -> str:
    """The name an ``on_epoch`` value is logged under (``train/loss_epoch`` for a value logged
    with both on_step and on_epoch). Missing public API: ``_Metadata.forked_name`` is private."""
    return metric.meta.forked_name(on_step=False)


def epoch_sums(metric: Any) -> dict[str, Any]:
    """The running sums of one accumulator (:data:`RESULT_SUMS`), detached on the CPU.
    Missing public API: ``_ResultMetric``'s state fields are private."""
    return {name: getattr(metric, name).detach().cpu().clone() for name in RESULT_SUMS}


def set_epoch_sums(metric: Any, sums: dict[str, Any], add: bool) -> None:
    """Set (or, with ``add``, add to) an accumulator's running sums, on its device and dtype.
    Missing public API: as :func:`epoch_sums`."""
    for name in RESULT_SUMS:
        state = getattr(metric, name)
        saved = sums[name].to(state.device, state.dtype)
        setattr(metric, name, saved + state if add else saved)


# --- a CSV logger that continues a run's metrics.csv ---------------------------------------------
class ContinuingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing metrics.csv is continued (its columns kept, rows
    appended) instead of deleted.

    Missing public API: the writer deletes an existing file in its private
    ``_check_log_dir_exists`` (called from ``__init__``) and offers no append mode; its file
    system is the private ``_fs``."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as stream:
                self.metrics_keys = sorted(csv.DictReader(stream).fieldnames or [])


def continuing_experiment(logger: CSVLogger) -> ExperimentWriter:
    """The CSV logger's writer, built once as a :class:`ContinuingExperimentWriter` (what
    ``runs.loggers.ContinuingCSVLogger.experiment`` returns on rank 0).

    Missing public API: CSVLogger takes no writer class; its ``experiment`` property builds its
    writer into the private ``_experiment`` with the private ``_fs``."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = ContinuingExperimentWriter(log_dir=logger.log_dir)
    return logger._experiment
