"""Where a run keeps what: every file name and run path of the project, defined once.

Hydra puts each run into ``outputs/<task>/runs/<datetime>/`` and each multirun job into
``outputs/<task>/multiruns/<datetime>/<job number>/`` (conf/hydra/default.yaml), relative to where
the command ran. A run folder holds::

    .hydra/config.yaml, overrides.yaml    the composed config and the command line's overrides
    .hydra/resume-<datetime>/             the config of each command that resumed the run
    checkpoints/last.ckpt, best-*.ckpt    (names without "=")
    samples/epoch_XXX.png, denoising.gif
    result.json                           how the run ended (runs/result.py)
    interrupted.json                      written instead when a signal stopped it
    wandb_run_id                          the W&B run a resumed run continues

A multirun folder also holds summary.csv, summary.md and summary.png (sweeps/).
"""

from __future__ import annotations

from pathlib import Path

from diffusion_lab.utils.checks import MissingInputError

TRAIN_RUNS_DIR = Path("outputs/train/runs")  # conf/hydra/default.yaml's run.dir for task train
HYDRA_DIR = ".hydra"
RUN_OVERRIDES = Path(HYDRA_DIR) / "overrides.yaml"
RUN_CONFIG = Path(HYDRA_DIR) / "config.yaml"
CHECKPOINTS_DIR = "checkpoints"
LAST_FILE = "last.ckpt"
BEST_PATTERN = "best-*.ckpt"
SAMPLES_DIR = "samples"
GRID_PATTERN = "epoch_*.png"
RESULT_FILE = "result.json"
INTERRUPTED_FILE = "interrupted.json"
RANKS_FILE = "ranks.json"  # under DDP: what each rank trained on and its final weights
WANDB_ID_FILE = "wandb_run_id"
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")


def repo_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` with a pyproject.toml (where diffusion-train runs),
    else ``start``."""
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").is_file():
            return folder
    return start


def _newest(pattern_root: Path, pattern: str) -> Path | None:
    """The most recently written file matching ``pattern`` under ``pattern_root``, or None."""
    found = sorted(pattern_root.glob(pattern), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def newest_checkpoint(runs_dir: Path = TRAIN_RUNS_DIR, kind: str = "last") -> Path:
    """The ``last`` (or ``best``) checkpoint of the most recently written run under ``runs_dir``
    (``<runs_dir>/*/checkpoints/``). Raises FileNotFoundError saying how to make one."""
    pattern = LAST_FILE if kind == "last" else BEST_PATTERN
    newest = _newest(runs_dir, f"*/{CHECKPOINTS_DIR}/{pattern}")
    if newest is None:
        raise MissingInputError(
            f"no run under {str(Path(runs_dir).resolve())!r} has a {CHECKPOINTS_DIR}/{pattern}; "
            "train one first (`diffusion-train`: the digits, on the CPU), or give a .ckpt file "
            "or a run folder"
        )
    return newest


def newest_sweep(root: Path, task: str = "train") -> Path:
    """The most recently started ``outputs/<task>/multiruns/*`` under ``root``."""
    sweeps = root / "outputs" / task / "multiruns"
    newest = _newest(sweeps, "*/multirun.yaml")
    if newest is None:
        raise MissingInputError(
            f"no sweep matches {sweeps}/*/multirun.yaml. Run one first: `cd {root} && "
            "diffusion-train -m scheduler=linear,cosine logger=csv trainer.max_epochs=5`, or point "
            "DIFFUSION_LAB_SWEEP at a multirun folder."
        )
    return newest.parent


def sweep_jobs(sweep: Path) -> list[Path]:
    """The job folders of a sweep (those with a .hydra/overrides.yaml), in job-number order."""
    jobs = sorted(
        (path.parent.parent for path in sweep.glob(f"*/{RUN_OVERRIDES}")),
        key=lambda job: (not job.name.isdigit(), int(job.name) if job.name.isdigit() else job.name),
    )
    if not jobs:
        raise MissingInputError(f"{sweep} holds no job folders (<job>/.hydra/overrides.yaml)")
    return jobs
