"""Jobs of a multirun side by side (conf/hydra/launcher/parallel.yaml, Hydra's joblib launcher):
each job gets its own GPU(s), or its share of the CPU cores.

The launcher runs ``n_jobs`` loky worker processes, each running one job after another. A worker
takes a slot 0..n_jobs-1 when its first job starts (a lock file in the sweep folder, held while
the worker lives) and keeps it: CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when it starts in a
process, so a worker must stay on the GPU(s) it started with. :func:`assign_devices` maps a slot to
devices; :class:`JobDevices` (a Hydra callback, conf/hydra/default.yaml) applies it at each job's
start, before the job touches CUDA, and forwards SIGTERM from the sweep's process to the workers,
so that each running job saves its checkpoint and interrupted.json (callbacks/preemption.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.sweeps.launchers import (
    VISIBLE_GPUS_ENV,
    available_cores,
    visible_gpus,
)

log = logging.getLogger(__name__)

PARALLEL_LAUNCHERS = ("ParallelLauncher", "JoblibLauncher")  # ours (hydra_plugins/), Hydra's
SLOTS_DIR = ".slots"
STOP_FILE = "stop"  # in SLOTS_DIR once SIGTERM reached the sweep: no further job starts
# the GPUs the sweep's process saw, for its workers: set there before they start
STOP_WAIT_S = 300.0  # for the running jobs to checkpoint after SIGTERM


@dataclass(frozen=True)
class Assignment:
    """One job's devices: ``gpus`` for CUDA_VISIBLE_DEVICES (empty on CPU), torch threads."""

    gpus: tuple[str, ...]
    threads: int


def assign_devices(
    slot: int,
    n_jobs: int,
    visible_gpus: Sequence[str],
    cores: int,
    gpus_per_job: int = 1,
) -> Assignment:
    """The devices of the job in ``slot`` (0..n_jobs-1) when ``n_jobs`` run at once.

    GPUs: the job takes ``gpus_per_job`` consecutive GPUs from slot * gpus_per_job on, modulo the
    visible ones (``visible_gpus``: CUDA_VISIBLE_DEVICES entries, or a list the user gave), so
    slot k with one GPU each gets GPU k mod len(visible_gpus). CPU threads: the cores shared out,
    floor(cores / n_jobs), at least 1. With no GPUs the job gets none (CPU training)."""
    for name, value, minimum in [("slot", slot, 0), ("n_jobs", n_jobs, 1), ("cores", cores, 1)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if slot >= n_jobs:
        raise ValueError(f"slot must be in 0..n_jobs-1 = 0..{n_jobs - 1}, got {slot}")
    if isinstance(gpus_per_job, bool) or not isinstance(gpus_per_job, int) or gpus_per_job < 1:
        raise ValueError(f"gpus_per_job must be an integer >= 1, got {gpus_per_job!r}")
    visible = [str(gpu) for gpu in visible_gpus]
    if visible and gpus_per_job > len(visible):
        raise ValueError(
            f"gpus_per_job={gpus_per_job} is more than the {len(visible)} visible GPUs {visible}"
        )
    first = slot * gpus_per_job
    gpus = (
        tuple(visible[(first + i) % len(visible)] for i in range(gpus_per_job)) if visible else ()
    )
    return Assignment(gpus=gpus, threads=max(1, cores // n_jobs))


def _claim_slot(sweep_dir: Path, n_jobs: int) -> int:
    """This worker's slot: the first free one (its lock file held until the process ends)."""
    global _slot
    if _slot is not None:
        return _slot[0]
    folder = sweep_dir / SLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(n_jobs):
            handle = open(folder / f"{slot}.lock", "a")  # noqa: SIM115 (held open)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _slot = (slot, handle)  # the handle keeps the lock
            return slot
        time.sleep(0.05)  # a worker that just ended may not have released its slot yet


_slot: tuple[int, Any] | None = None  # this worker's (slot, its held lock file)
_sweep: dict[str, Path] = {}  # in the sweep's process: its folder


def stop_file(sweep_dir: Path) -> Path:
    """The file whose presence tells the sweep's workers to start no further job
    (hydra_plugins/diffusion_lab_launcher/parallel_launcher.py)."""
    return Path(sweep_dir) / SLOTS_DIR / STOP_FILE


def _is_parallel(config: DictConfig) -> bool:
    target = OmegaConf.select(config, "hydra.launcher._target_", default="") or ""
    return str(target).rsplit(".", 1)[-1] in PARALLEL_LAUNCHERS


class JobDevices(Callback):
    """Gives each job of a ``hydra/launcher=parallel`` sweep its devices (see the module
    docstring); does nothing under other launchers.

    Args:
        gpus: the GPUs to share out (e.g. [0, 2]); default the visible ones.
        gpus_per_job: GPUs each job takes (DDP inside a parallel sweep: ``trainer=ddp``
            ``trainer.strategy=ddp_spawn``).
    """

    def __init__(self, gpus: Sequence[int | str] | None = None, gpus_per_job: int = 1) -> None:
        self.gpus = [str(gpu) for gpu in gpus] if gpus is not None else None
        self.gpus_per_job = gpus_per_job
        self._previous_sigterm: Any = None

    # --- in the sweep's process ------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_parallel(config):
            return
        os.environ[VISIBLE_GPUS_ENV] = ",".join(
            self.gpus if self.gpus is not None else visible_gpus()
        )
        _sweep["dir"] = Path(config.hydra.sweep.dir)  # for the handler (no HydraConfig there)
        stop_file(_sweep["dir"]).unlink(missing_ok=True)  # an earlier stop of this sweep folder
        if signal.getsignal(signal.SIGTERM) is not _forward_sigterm:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _forward_sigterm)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_parallel(config) and self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    # --- in the job's process -------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_parallel(config):
            return
        import torch

        n_jobs = int(config.hydra.launcher.n_jobs)
        slot = _claim_slot(Path(config.hydra.sweep.dir), n_jobs)
        _slot[1].truncate(0)
        _slot[1].write(str(config.hydra.runtime.output_dir))
        _slot[1].flush()  # which job this worker runs, for the SIGTERM forwarding
        on_cpu = OmegaConf.select(config, "trainer.accelerator", default="auto") == "cpu"
        gpus = [] if on_cpu else visible_gpus()
        assignment = assign_devices(slot, n_jobs, gpus, available_cores(), self.gpus_per_job)
        if assignment.gpus:
            if torch.cuda.is_initialized():
                log.warning("CUDA started in this worker before its job: GPU assignment skipped")
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(assignment.gpus)
        torch.set_num_threads(assignment.threads)
        os.environ["OMP_NUM_THREADS"] = str(assignment.threads)  # for anything the job spawns
        log.info(
            "job %s: slot %d of %d, %s, %d torch threads",
            config.hydra.job.num,
            slot,
            n_jobs,
            f"GPU {','.join(assignment.gpus)}" if assignment.gpus else "CPU",
            assignment.threads,
        )

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if _is_parallel(config) and _slot is not None:
            _slot[1].truncate(0)  # this worker runs no job now
            _slot[1].flush()


def _workers() -> list[int]:
    """The loky worker processes of this (the sweep's) process that are alive."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] != "Z" and b"popen_loky" in command:
            found.append(int(entry.name))
    return found


def _running_jobs(sweep_dir: Path) -> list[Path]:
    """The folders of the jobs the workers are running (each slot file names its worker's job)."""
    jobs = []
    for slot_file in sorted((sweep_dir / SLOTS_DIR).glob("*.lock")):
        text = slot_file.read_text().strip()
        if text:
            jobs.append(Path(text))
    return jobs


def _job_ended(job_dir: Path) -> bool:
    from diffusion_lab.runs.layout import INTERRUPTED_FILE, RESULT_FILE

    return (job_dir / INTERRUPTED_FILE).exists() or (job_dir / RESULT_FILE).exists()


def _forward_sigterm(signum: int, _frame: Any) -> None:
    """SIGTERM to the sweep: to every worker, so each running job checkpoints and stops
    (interrupted.json); once each has (or its worker is gone), the workers are ended and the
    sweep exits 143 (128 + SIGTERM), as a stopped job does. The stop file, written first, keeps a
    worker whose job just ended from starting a queued one meanwhile."""
    sweep_dir = _sweep["dir"]
    stop = stop_file(sweep_dir)
    stop.parent.mkdir(parents=True, exist_ok=True)
    stop.touch()
    workers = _workers()
    log.warning("SIGTERM: forwarding it to the sweep's %d job processes", len(workers))
    for pid in workers:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    jobs = _running_jobs(sweep_dir)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline and _workers():
        if all(_job_ended(job) for job in jobs):
            break
        time.sleep(0.2)
    from diffusion_lab.sweeps.summary import summary_lock, write_summary

    # the jobs' own summary refresh holds this lock: ending a worker inside it would leave a
    # half-written file; outside it the stopped jobs have nothing left to write
    with summary_lock(sweep_dir):
        for pid in _workers():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    try:
        write_summary(sweep_dir, live=False)
    except Exception:  # the stop's exit status is what matters here
        log.exception("could not write the sweep summary in %s", sweep_dir)
    sys.exit(128 + signum)
