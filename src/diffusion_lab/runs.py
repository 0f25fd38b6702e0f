"""Find the runs that diffusion-train wrote: the newest checkpoint, the newest sweep and its jobs.

Layout (conf/hydra/default.yaml): outputs/<task>/runs/<datetime>/checkpoints/last.ckpt and
outputs/<task>/multiruns/<datetime>/<job number>/, relative to where the command ran.
"""

from __future__ import annotations

from pathlib import Path


def repo_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` with a pyproject.toml (where diffusion-train runs),
    else ``start``."""
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").is_file():
            return folder
    return start


def _newest(pattern_root: Path, pattern: str) -> Path | None:
    found = sorted(pattern_root.glob(pattern), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def newest_checkpoint(root: Path, task: str = "train") -> Path:
    """The most recently written ``outputs/<task>/runs/*/checkpoints/last.ckpt`` under ``root``."""
    runs = root / "outputs" / task / "runs"
    newest = _newest(runs, "*/checkpoints/last.ckpt")
    if newest is None:
        raise FileNotFoundError(
            f"no checkpoint matches {runs}/*/checkpoints/last.ckpt. Train one first: "
            f"`cd {root} && diffusion-train` (the digits, on the CPU), or point "
            "DIFFUSION_LAB_CKPT at a .ckpt file."
        )
    return newest


def newest_sweep(root: Path, task: str = "train") -> Path:
    """The most recently started ``outputs/<task>/multiruns/*`` under ``root``."""
    sweeps = root / "outputs" / task / "multiruns"
    newest = _newest(sweeps, "*/multirun.yaml")
    if newest is None:
        raise FileNotFoundError(
            f"no sweep matches {sweeps}/*/multirun.yaml. Run one first: `cd {root} && "
            "diffusion-train -m scheduler=linear,cosine logger=csv trainer.max_epochs=5`, or point "
            "DIFFUSION_LAB_SWEEP at a multirun folder."
        )
    return newest.parent


def sweep_jobs(sweep: Path) -> list[Path]:
    """The job folders of a sweep (those with a .hydra/overrides.yaml), in job-number order."""
    jobs = sorted(
        (path.parent.parent for path in sweep.glob("*/.hydra/overrides.yaml")),
        key=lambda job: (not job.name.isdigit(), int(job.name) if job.name.isdigit() else job.name),
    )
    if not jobs:
        raise FileNotFoundError(f"{sweep} holds no job folders (<job>/.hydra/overrides.yaml)")
    return jobs
