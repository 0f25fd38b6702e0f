"""Preemption: on SIGTERM or SIGUSR1, save a resumable checkpoint within seconds and stop.

The signal handler only records the signal; the work happens at the next safe point:

- after the current training batch (``on_train_batch_end``; with ``accumulate_grad_batches=k``
  after the batch that ends the current accumulation window; after an epoch's last batch, the
  next safe point is the grid's first step or the next epoch's first batch, so a signal during
  validation is honoured right after it), or
- at the next step of a sampling chain (a grid or the GIF: ``check_stop`` is the samplers'
  ``on_step`` hook and raises ``Preempted``; the checkpoint is then saved in ``on_exception``).

There the callback writes ``<checkpoints>/last.ckpt`` (atomically, through the trainer's checkpoint
IO), ``<run dir>/interrupted.json`` ({"signal", "global_step", "epoch", "checkpoint", "time",
"seconds_to_checkpoint"}), logs the command that resumes the run, and raises ``Preempted``: a
``SystemExit`` with status 128 + signal number (143 for SIGTERM), as a process killed by that signal
would report. Being a SystemExit, it passes through Hydra's ``run_job`` (which catches Exception only),
so in a multirun the sweep stops after the interrupted job instead of starting the next one.

Lightning's own SIGTERM handling (``SIGTERMException`` at the next batch, no checkpoint, exit
status 0) is replaced while training. Under SLURM with ``auto_requeue`` (see ``slurm_requeue.py``)
Lightning's requeue handler is replaced too: it saves ``hpc_ckpt_N.ckpt`` inside the signal handler,
wherever the main thread is (mid optimizer step, or after the last epoch's last batch, whose
restore then ends at once having logged nothing). Here the requeue signal is honoured at the same
safe points: ``<run dir>/hpc_ckpt_N.ckpt`` (which Lightning restores by itself in the requeued job),
interrupted.json, ``scontrol requeue``, then the job waits for SLURM to end it (a job that exited by
itself would tell submitit it failed). A signal after the last safe point lets the run finish.
Under DDP the ranks agree on stopping after each batch (one all-reduce of a flag), so all of them
stop at the same step.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

from diffusion_lab.callbacks._lightning import (
    before_epoch_marked_processed,
    cluster_environment,
    dump_checkpoint,
    finish_train_batch,
)
from diffusion_lab.callbacks.slurm_requeue import hpc_checkpoint_path, requeue_and_wait
from diffusion_lab.diffusion.samplers import StepCallback
from diffusion_lab.runs.layout import CHECKPOINTS_DIR, INTERRUPTED_FILE, LAST_FILE

log = logging.getLogger(__name__)


# the signal received, process-wide (signals are): {"signum": int, "time": float} once one came
_received: dict[str, float] = {}


class Preempted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; exit status 128 + signal number."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.message = message

    def __str__(self) -> str:
        return self.message or f"stopped on {signal.Signals(self.signum).name}"


def stop_requested() -> bool:
    """True once SIGTERM/SIGUSR1 arrived while a Preemption callback was listening."""
    return bool(_received)


def check_stop(*_: Any) -> None:
    """A samplers' ``on_step`` hook (``on_step(i, n, t_prev, x)``): raise ``Preempted`` between
    two steps of a chain once a stop signal arrived."""
    if _received:
        raise Preempted(int(_received["signum"]), "stopped while sampling")


def stopping(on_step: StepCallback | None) -> StepCallback:
    """A samplers' ``on_step`` hook that calls ``on_step`` (e.g. a progress bar), then
    :func:`check_stop`; ``check_stop`` alone when there is no other hook."""
    if on_step is None:
        return check_stop

    def hook(index: int, total: int, t_prev: int, x: Any) -> None:
        on_step(index, total, t_prev, x)
        check_stop(index, total, t_prev, x)

    return hook


def _record(signum: int, _frame: Any) -> None:
    if not _received:
        _received.update(signum=signum, time=time.time())
        log.warning(
            "received %s: saving a checkpoint at the next safe point", signal.Signals(signum).name
        )


def _under_slurm_requeue(trainer: L.Trainer) -> bool:
    environment = cluster_environment(trainer)
    return isinstance(environment, SLURMEnvironment) and bool(environment.auto_requeue)


def _requeue_signal(trainer: L.Trainer) -> int:
    return int(cluster_environment(trainer).requeue_signal)


class Preemption(L.Callback):
    """Save, mark and stop on SIGTERM or SIGUSR1 (see the module docstring).

    Args:
        run_dir: the run folder (interrupted.json, the resume command); default
            ``trainer.default_root_dir``.
        dirpath: where ``last.ckpt`` goes; default ``<run_dir>/checkpoints``.
        signals: names of the signals to handle.
    """

    def __init__(
        self,
        run_dir: str | None = None,
        dirpath: str | None = None,
        signals: tuple[str, ...] | list[str] = ("SIGTERM", "SIGUSR1"),
    ) -> None:
        unknown = [name for name in signals if not hasattr(signal, str(name))]
        if unknown:
            raise ValueError(f"unknown signals {unknown}; accepted e.g. SIGTERM, SIGUSR1, SIGINT")
        self.run_dir = Path(run_dir) if run_dir else None
        self.dirpath = Path(dirpath) if dirpath else None
        self.signals = [getattr(signal, str(name)) for name in signals]
        self._previous: dict[int, Any] = {}
        self._listening = False
        self._saved = False
        self._requeue: Path | None = None  # under SLURM auto-requeue: the hpc checkpoint's path
        self._requeue_signum: int | None = None

    @property
    def checkpoint_path(self) -> Path:
        """Where the stop's checkpoint goes: the hpc checkpoint on SLURM's requeue signal."""
        if self._requeue is not None and _received.get("signum") == self._requeue_signum:
            return self._requeue
        return self.dirpath / LAST_FILE

    # --- listening ------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the handlers before Lightning's (it registers its own later, in Trainer._run, and puts
        # these back when it tears down): what teardown restores
        self._previous = {signum: signal.getsignal(signum) for signum in self.signals}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its own handlers (Trainer._run), so ours replace them
        self.run_dir = self.run_dir or Path(trainer.default_root_dir)
        self.dirpath = self.dirpath or self.run_dir / CHECKPOINTS_DIR
        if trainer.is_global_zero:
            (self.run_dir / INTERRUPTED_FILE).unlink(missing_ok=True)  # this run goes on now
        if _under_slurm_requeue(trainer):
            self._requeue = hpc_checkpoint_path(trainer)
            self._requeue_signum = _requeue_signal(trainer)
            log.info("SLURM auto-requeue: the requeue signal saves %s and requeues", self._requeue)
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: preemption signals are not handled")
            return
        _received.clear()
        self._listening = True
        for signum in self.signals:
            signal.signal(signum, _record)

    def _stop_listening(self) -> None:
        """The previous handlers back, and the stop forgotten: it was handled by this fit (a
        checkpoint and Preempted), so a later fit or sampling chain in this process (a notebook,
        a test) is not stopped by it."""
        if self._listening and threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            _received.clear()
        self._listening = False

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop_listening()

    # --- safe points ------------------------------------------------------------------------
    def _agreed(self, trainer: L.Trainer) -> bool:
        if trainer.world_size > 1:  # every rank must stop at the same step
            return bool(trainer.strategy.reduce_boolean_decision(stop_requested(), all=False))
        return stop_requested()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        # not after an epoch's last batch: Lightning would resume from there as from the epoch's
        # end (no validation, grid or LR step); the next safe point is at most a validation away
        # and only where an accumulation window ends (an optimizer step ran): the gradients summed
        # so far in a window are in no checkpoint, so the stop waits for at most k - 1 batches
        if index + 1 >= trainer.num_training_batches:
            return
        if (index + 1) % trainer.accumulate_grad_batches or not self._agreed(trainer):
            return
        # finish the batch as the loop would after the callbacks (the module's hook: the EMA
        # update; the step's logged values), so the checkpoint holds the state after this batch
        finish_train_batch(trainer, pl_module, outputs, batch, index)
        signum = int(_received.get("signum", signal.SIGTERM))  # another rank's signal under DDP
        trainer.save_checkpoint(self.checkpoint_path)
        self._saved = True
        if trainer.is_global_zero:
            self._mark(trainer, signum, "stopped after a training batch")
        self._maybe_requeue(trainer, signum)
        raise Preempted(signum, "stopped after a training batch")

    def _maybe_requeue(self, trainer: L.Trainer, signum: int) -> None:
        """Under SLURM auto-requeue, on its requeue signal: requeue and wait to be ended."""
        if self._requeue is not None and signum == self._requeue_signum:
            requeue_and_wait(trainer.is_global_zero)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # a sampling chain (grid, GIF) stopped by check_stop on rank 0: the other ranks may be
        # waiting in a collective, so write the file directly, without the trainer's barrier
        if isinstance(exception, Preempted) and not self._saved and trainer.is_global_zero:
            self._save_inside_epoch_end(trainer)
            self._saved = True
            self._mark(trainer, exception.signum, str(exception))
            self._maybe_requeue(trainer, exception.signum)
        self._stop_listening()

    def _save_inside_epoch_end(self, trainer: L.Trainer) -> None:
        """Inside ``on_train_epoch_end`` (a grid) the checkpoint is written as of just before
        it (the epoch not yet marked processed), so that the resumed run draws the grid, steps
        the LR schedule and logs the epoch's values as the uninterrupted one does."""
        # as of the end of the epoch's validation, where Lightning's own epoch-end checkpoints
        # are taken; without the trainer's barrier (the other ranks may be in a collective)
        with before_epoch_marked_processed(trainer):
            checkpoint = dump_checkpoint(trainer)
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.checkpoint_path)

    def _mark(self, trainer: L.Trainer, signum: int, where: str) -> None:
        """interrupted.json and the log line that says how to go on."""
        name = signal.Signals(signum).name
        seconds = time.time() - _received["time"] if _received else None
        record = {
            "signal": name,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "checkpoint": str(self.checkpoint_path),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds_to_checkpoint": seconds,
        }
        path = self.run_dir / INTERRUPTED_FILE
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(temporary, path)
        log.warning(
            "%s, %s: checkpoint %s written at step %d (epoch %d)%s. Resume with:\n"
            "  diffusion-train resume=%s",
            name,
            where,
            self.checkpoint_path,
            trainer.global_step,
            trainer.current_epoch,
            f", {seconds:.2f} s after the signal" if seconds is not None else "",
            self.run_dir,
        )
