"""One run's result on disk: ``<run dir>/result.json``, written at the end of ``train()``.

{"status": "ok" | "failed", "metrics": {name: float}, "optimized_metric": name, "value": float | null,
 "direction": "minimize" | "maximize", "epochs": int | null, "seconds": float, "overrides": [str],
 "error": str (failed runs only), "started": ISO time, "finished": ISO time,
 "threads": torch's intra-op threads, "gpus": CUDA_VISIBLE_DEVICES or null}

Only the process of global rank 0 writes it (Lightning re-launches DDP ranks into rank 0's folder).
A run killed before its end (SIGKILL, a node lost) leaves none; a preempted run leaves
``interrupted.json`` instead (see the multirun summary's statuses).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from diffusion_lab.runs.layout import RESULT_FILE
from diffusion_lab.utils.checks import InputError
from diffusion_lab.utils.io import write_json

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


def optimized_value(metrics: Mapping[str, float], name: str) -> float:
    """The final value of the metric a sweep optimises, e.g. ``val/loss`` or ``quality/ddim/fid``."""
    if name not in metrics:
        available = ", ".join(sorted(metrics)) or "none (did validation run?)"
        raise InputError(
            f"optimized_metric={name!r} was not logged by this run; metrics logged: {available}. "
            "Set optimized_metric to one of them (or turn on the callback that logs it)."
        )
    return float(metrics[name])


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise InputError(
            f"optimized_metric_direction={direction!r} is not one of {', '.join(DIRECTIONS)}"
        )
    return direction


def error_line(error: BaseException) -> str:
    """``Type: message`` on one line (at most 500 characters), for a table cell; Hydra's
    instantiation errors put the cause on their second line."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:500]


def is_rank_zero() -> bool:
    """True in the process that should write run files: global rank 0 (Lightning sets the rank
    from RANK / LOCAL_RANK / SLURM_PROCID, and again once a DDP strategy knows it)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


class ResultRecorder:
    """Collects what ``result.json`` says about one run; see :func:`recording_result`."""

    def __init__(self, cfg: DictConfig, run_dir: Path | None, overrides: list[str]) -> None:
        self.run_dir = run_dir
        self.metric = str(cfg.get("optimized_metric") or "val/loss")
        self.direction = check_direction(str(cfg.get("optimized_metric_direction") or "minimize"))
        self.overrides = overrides
        self.started = time.perf_counter()
        self.started_at = _now()
        self.metrics: dict[str, float] = {}
        self.epochs: int | None = None

    def finish(self, trainer) -> dict[str, float]:
        """Final metrics (``trainer.callback_metrics`` as floats); checks the optimised metric is
        among them, so a sweep never ranks a run by a missing number."""
        self.metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
        self.epochs = int(trainer.current_epoch)
        optimized_value(self.metrics, self.metric)
        return self.metrics

    def payload(self, error: BaseException | None = None) -> dict[str, Any]:
        payload = {
            "status": "failed" if error else "ok",
            "metrics": self.metrics,
            "optimized_metric": self.metric,
            "value": self.metrics.get(self.metric),
            "direction": self.direction,
            "epochs": self.epochs,
            "seconds": round(time.perf_counter() - self.started, 3),
            "overrides": self.overrides,
            "started": self.started_at,
            "finished": _now(),
            "threads": torch.get_num_threads(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        if error is not None:
            payload["error"] = error_line(error)
        return payload

    def write(self, error: BaseException | None = None) -> None:
        if self.run_dir is None or not is_rank_zero():
            return
        write_json(self.run_dir / RESULT_FILE, self.payload(error))


@contextmanager
def recording_result(cfg: DictConfig) -> Iterator[ResultRecorder]:
    """Write ``<run dir>/result.json`` when the block ends: status ok, or failed with the error's
    first line (the error is re-raised). A stale result.json (a requeued run in the same folder) is
    removed first. SystemExit and KeyboardInterrupt write nothing: the run did not end, it was
    stopped (preemption writes interrupted.json)."""
    run_dir, overrides = _hydra_run()
    recorder = ResultRecorder(cfg, run_dir, overrides)
    if run_dir is not None and is_rank_zero():
        (run_dir / RESULT_FILE).unlink(missing_ok=True)
    try:
        yield recorder
    except Exception as error:
        try:
            recorder.write(error)
        except OSError as write_error:  # never hide the run's own error behind this one
            log.warning("could not write %s: %s", RESULT_FILE, write_error)
        raise
    recorder.write()


def _hydra_run() -> tuple[Path | None, list[str]]:
    """(this run's output folder, its command-line overrides), or (None, []) outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, []
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.get("output_dir")
    overrides = list(hydra_cfg.overrides.get("task") or [])
    return (Path(output_dir) if output_dir else None), overrides
