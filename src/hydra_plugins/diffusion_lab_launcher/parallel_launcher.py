"""``hydra/launcher=parallel``: Hydra's joblib launcher, except that no job starts once the sweep
was told to stop.

Hydra's joblib launcher hands every job to the loky workers at once (``pre_dispatch``), and a
worker whose job ended takes the next one. When SIGTERM reaches the sweep (``_forward_sigterm``
in :mod:`diffusion_lab.sweeps.parallel`), the running jobs checkpoint and return, and their
workers would start the queued jobs (Hydra makes each job's folder) before the sweep ends them.
Here each job is wrapped: in its worker, before Hydra touches anything of the job, it looks for
the sweep's stop file (written before SIGTERM is forwarded) and, if it is there, refuses the job.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals

from diffusion_lab.sweeps.parallel import stop_file

try:
    from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
    from joblib import Parallel, delayed
except ImportError:  # the [parallel] extra is not installed: Hydra's scan must not fail on it
    JoblibLauncher = None

log = logging.getLogger(__name__)


class SweepStopped(SystemExit):
    """A job refused because the sweep was stopped; exit status 143, as a stopped job's."""

    def __init__(self, job: int) -> None:
        super().__init__(128 + signal.SIGTERM)
        self.job = job

    def __str__(self) -> str:
        return f"job {self.job} not started: the sweep was stopped"


def execute_unless_stopped(stop: str, idx: int, *job: Any) -> JobReturn:
    """In a worker: job ``idx`` (Hydra's ``execute_job(idx, *job)``), unless ``stop`` exists."""
    if Path(stop).exists():
        raise SweepStopped(idx)
    return execute_job(idx, *job)


if JoblibLauncher is not None:

    class ParallelLauncher(JoblibLauncher):
        """Hydra's ``JoblibLauncher`` (same options: ``n_jobs``, ``pre_dispatch``, ...) whose
        jobs do not start after the sweep's stop (see the module docstring)."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            setup_globals()
            assert self.config is not None and self.hydra_context is not None
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            options = dict(self.joblib, backend="loky")  # Hydra's launcher insists on loky too
            process_joblib_cfg(options)
            log.info("Joblib.Parallel(%s): %d jobs in %s", options, len(job_overrides), sweep_dir)
            for idx, overrides in enumerate(job_overrides):
                log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
            state = Singleton.get_state()
            stop = str(stop_file(sweep_dir))
            runs = Parallel(**options)(
                delayed(execute_unless_stopped)(
                    stop,
                    initial_job_idx + idx,
                    overrides,
                    self.hydra_context,
                    self.config,
                    self.task_function,
                    state,
                )
                for idx, overrides in enumerate(job_overrides)
            )
            return list(runs)
