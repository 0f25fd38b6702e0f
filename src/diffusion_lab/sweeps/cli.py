"""diffusion-summary: rebuild a sweep folder's summary.csv, summary.md and summary.png.

diffusion-summary outputs/train/multiruns/2026-01-01_12-00-00-000000
diffusion-summary <sweep dir> --wandb        # also log the table to W&B (the sweep's group)

Works on any multirun folder, also one whose jobs were killed (no result.json: status killed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from diffusion_lab.runs.layout import SUMMARY_FILES
from diffusion_lab.sweeps.rows import check_sweep_dir
from diffusion_lab.sweeps.summary import write_summary
from diffusion_lab.utils.checks import InputError
from diffusion_lab.utils.cli import command_error_line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="diffusion-summary",
        description="Rebuild summary.csv, summary.md and summary.png in a multirun folder.",
    )
    parser.add_argument(
        "sweep_dir", help="a diffusion-train -m folder, outputs/train/multiruns/<x>"
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table as a W&B run (job_type summary) in the sweep's group",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sweep = check_sweep_dir(args.sweep_dir)
    except InputError as error:
        print(command_error_line("diffusion-summary", error), file=sys.stderr)
        return 2
    rows = write_summary(sweep)
    print((sweep / "summary.md").read_text())
    print("wrote " + ", ".join(str(sweep / name) for name in SUMMARY_FILES))
    if args.wandb:
        from diffusion_lab.resolvers import sweep_group
        from diffusion_lab.sweeps.wandb import log_summary, wandb_settings

        multirun = sweep / "multirun.yaml"
        config = OmegaConf.load(multirun) if multirun.is_file() else None
        settings = wandb_settings(config, sweep)
        if settings is None:
            settings = {"project": "diffusion-lab", "entity": None, "offline": None}
            settings["group"] = sweep_group("MULTIRUN", "train", sweep)
        print(f"logged to W&B: {log_summary(sweep, rows, **settings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
