"""Why does deterministic DDIM get worse with more steps? One checkpoint, one judge, many samplers.

    python benchmarks/ddim_trend.py outputs/train/runs/<datetime>            # digits, 50 per class
    python benchmarks/ddim_trend.py <run> --steps 10 25 100 --eps-scales 1.005 --guidance 0 2 --ddpm
    python benchmarks/ddim_trend.py <run> --override data=sprites --out table.md

All samplers denoise the same noise into the same classes (evaluation.run_study): DDPM over all T
steps (with --ddpm); at every step count DDIM at each --etas (0: the trend, 1: the stochastic control) and
DDIM eta 0 with epsilon scaling (Ning et al. 2024: the step uses eps / b); DPM-Solver++ 2M at every
--dpm-nfe (and 3M at the first); all at the first --guidance scale, and DDIM eta 0 again at each
further one. The judge, its reference images and the scores are diffusion-eval's
(``diffusion_lab.evaluate.load_inputs`` / ``train_judge``), so the numbers compare with its tables.
Prints a Markdown table (and writes it with --out).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from diffusion_lab import CONFIG_DIR
from diffusion_lab.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    NoiseSchedule,
    Sampler,
)
from diffusion_lab.evaluate import load_inputs, train_judge
from diffusion_lab.evaluation.study import run_study
from diffusion_lab.utils.timing import device_name


@dataclass(frozen=True)
class Spec:
    """A sampler for ``run_study``: what its rows are called and how it is built."""

    kind: str
    steps: int
    eta: float | None
    label: str
    factory: Callable[[NoiseSchedule], Sampler]

    def build(self, schedule: NoiseSchedule) -> Sampler:
        return self.factory(schedule)


def specs(
    steps: list[int],
    etas: list[float],
    eps_scales: list[float],
    dpm_nfe: list[int],
    ddpm_steps: int | None,
) -> list[Spec]:
    result = []
    if ddpm_steps is not None:
        result.append(Spec("ddpm", ddpm_steps, None, f"DDPM-{ddpm_steps}", DDPMSampler))
    for n in steps:
        for eta in etas:
            result.append(
                Spec(
                    "ddim",
                    n,
                    eta,
                    f"DDIM-{n} eta {eta:g}",
                    lambda s, n=n, eta=eta: DDIMSampler(s, n, eta=eta),
                )
            )
        for b in eps_scales:
            result.append(
                Spec(
                    f"ddim b={b:g}",
                    n,
                    0.0,
                    f"DDIM-{n} eta 0, eps / {b:g}",
                    lambda s, n=n, b=b: DDIMSampler(s, n, eps_scale=b),
                )
            )
    for i, n in enumerate(dpm_nfe):
        for order in (2, 3) if i == 0 else (2,):
            result.append(
                Spec(
                    f"dpm++ {order}M",
                    n,
                    None,
                    f"DPM-Solver++({order}M)-{n}",
                    lambda s, n=n, order=order: DPMSolverSampler(s, n, order=order),
                )
            )
    return result


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| sampler | guidance | NFE | seconds | class accuracy | FID | KID |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['guidance']:g} | {row['nfe']} | {row['seconds']:.1f} | "
            f"{row['class_accuracy']:.3f} | {row['fid']:.3f} | {row['kid_mean']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_path", help="a .ckpt file or a run folder (as diffusion-eval takes)")
    parser.add_argument("--n-per-class", type=int, default=50)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 100])
    parser.add_argument("--etas", type=float, nargs="*", default=[0.0, 1.0])
    parser.add_argument("--eps-scales", type=float, nargs="*", default=[1.005])
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0])
    parser.add_argument("--dpm-nfe", type=int, nargs="*", default=[10, 15, 20])
    parser.add_argument("--ddpm", action="store_true", help="also DDPM over all T steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="a diffusion-eval override, e.g. --override data=sprites (repeatable)",
    )
    args = parser.parse_args()

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[
                f"ckpt_path={args.ckpt_path}",
                f"n_per_class={args.n_per_class}",
                f"device={args.device}",
                *args.override,
            ],
        )
    inputs = load_inputs(cfg)
    judge = train_judge(cfg, inputs)
    timesteps = inputs.module.schedule.timesteps
    ddpm_steps = timesteps if args.ddpm else None
    study = specs(args.steps, args.etas, args.eps_scales, args.dpm_nfe, ddpm_steps)
    runs = [(guidance, spec) for spec in study for guidance in args.guidance[:1]]
    runs += [
        (guidance, spec)
        for guidance in args.guidance[1:]
        for spec in study
        if spec.kind == "ddim" and spec.eta == 0.0
    ]
    header = (
        f"{inputs.checkpoint} ({inputs.module.prediction} prediction, T = {timesteps}); judge val "
        f"accuracy {judge.accuracy:.3f}; {cfg.n_per_class} images per class; "
        f"{device_name(inputs.device)}\n\n"
    )
    rows = []
    with inputs.module.sampling_net(cfg.use_ema) as net:
        for guidance, spec in runs:  # one sampler at a time: the table grows as rows finish
            (row,) = run_study(
                net,
                inputs.module.schedule,
                [spec],
                judge.classifier,
                inputs.real.reference,
                cfg.n_per_class,
                seed=cfg.seed,
                guidance_scale=guidance,
                kid_subset_size=cfg.kid_subset_size,
            )
            rows.append({**row, "label": spec.label, "guidance": guidance})
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
            if args.out is not None:
                args.out.write_text(header + markdown(rows) + "\n")
    print(header + markdown(rows))


if __name__ == "__main__":
    main()
