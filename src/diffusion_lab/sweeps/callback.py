"""The Hydra callback that keeps a multirun's summary up to date (conf/hydra/default.yaml).

Hydra calls ``on_job_end`` in the process that ran the job (the sweep's own process under the basic
launcher, the job's process under submitit) and ``on_multirun_end`` once the sweeper returns. The
basic sweeper re-raises a failed job's error after its batch, so ``on_multirun_end`` may never run:
rebuilding the summary at every job's end is what keeps it complete.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.runs.layout import INTERRUPTED_FILE, RESULT_FILE
from diffusion_lab.runs.result import error_line, is_rank_zero
from diffusion_lab.sweeps.summary import write_summary
from diffusion_lab.utils.io import write_json

log = logging.getLogger(__name__)


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


class SweepSummary(Callback):
    """summary.csv, summary.md and summary.png in the sweep folder, rebuilt as each job ends and
    when the multirun ends; with W&B as the logger the table is also logged once, as a run of
    job_type ``summary`` in the sweep's group.

    Args:
        wandb: log the table to W&B at the multirun's end when the sweep's logger is W&B.
    """

    def __init__(self, wandb: bool = True) -> None:
        self.wandb = wandb

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config) or not is_rank_zero():
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            _record_failure(job_dir, job_return)
        self._rebuild(Path(config.hydra.sweep.dir), live=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        sweep = Path(config.hydra.sweep.dir)
        rows = self._rebuild(sweep, live=False)
        if rows and self.wandb:
            from diffusion_lab.sweeps.wandb import log_summary, wandb_settings

            settings = wandb_settings(config, sweep)
            if settings is not None:
                try:
                    log_summary(sweep, rows, **settings)
                except Exception:  # a W&B hiccup must not turn a finished sweep into a failure
                    log.exception("could not log the sweep summary to W&B")

    @staticmethod
    def _rebuild(sweep: Path, live: bool) -> list:
        try:
            rows = write_summary(sweep, live=live)
        except Exception:  # never let the summary break the sweep it describes
            log.exception("could not write the sweep summary in %s", sweep)
            return []
        log.info("sweep summary: %s", sweep / "summary.md")
        return rows


def _record_failure(job_dir: Path, job_return: JobReturn) -> None:
    """A job that failed before train() could say so (e.g. in its config) gets a failed
    result.json from its return, so the summary shows failed rather than killed."""
    if (job_dir / RESULT_FILE).exists() or (job_dir / INTERRUPTED_FILE).exists():
        return
    try:
        job_return.return_value  # noqa: B018  (a failed job's return_value re-raises its error)
        return
    except Exception as raised:
        error = raised
    write_json(
        job_dir / RESULT_FILE,
        {
            "status": "failed",
            "metrics": {},
            "overrides": list(job_return.overrides or []),
            "error": error_line(error),
        },
    )
