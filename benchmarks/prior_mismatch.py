"""Is the deterministic samplers' loss with steps the start, x_T ~ N(0, I), not the net?

With a schedule whose alpha_bar_T > 0 (the course's linear one: sqrt(alpha_bar_T) = 0.080 at
T = 500) the trained marginal is q(x_T | c) = E_{x0 ~ data(c)} N(sqrt(alpha_bar_T) x0,
(1 - alpha_bar_T) I), not N(0, I). A deterministic sampler (the probability-flow ODE) carries the
start's error to the end; a stochastic one forgets it. This samples every sampler twice from the
same eps and contexts: from x_T = eps (as every command does) and from the true marginal
x_T = sqrt(alpha_bar_T) x0 + sqrt(1 - alpha_bar_T) eps with x0 a training image of the asked class,
and prints the judge's class accuracy and FID for both. If the start is the cause, the second
column no longer loses with steps.

    python benchmarks/prior_mismatch.py outputs/train/runs/<run> --n-per-class 50
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table

from diffusion_lab.evaluate import get_run_judge, load_inputs
from diffusion_lab.evaluation.classifier import uint8_to_unit_range
from diffusion_lab.evaluation.study import run_study, study_inputs

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
PANEL = [
    "panel.ddpm=null",
    "ddim_steps=[10,25,100]",
    "ddim_etas=[0.0,1.0]",
    "panel.dpmpp.steps=[10,20]",
    "panel.dpmpp_sde=null",
    "panel.euler.steps=10",
    "panel.heun=null",
]


def true_marginal_start(
    eps: torch.Tensor,
    labels: torch.Tensor,
    train: tuple[torch.Tensor, torch.Tensor],
    alpha_bar_t: float,
    seed: int,
) -> torch.Tensor:
    """x_T = sqrt(alpha_bar_T) x0 + sqrt(1 - alpha_bar_T) eps (N, C, H, W), x0 a random training
    image of each label's class."""
    images, classes = train
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.empty_like(eps)
    for k in labels.unique():
        pool = images[classes == k]
        rows = (labels == k).nonzero().flatten()
        pick = torch.randint(len(pool), (len(rows),), generator=generator)
        x0[rows] = uint8_to_unit_range(pool[pick]).to(eps.dtype)
    return alpha_bar_t**0.5 * x0 + (1.0 - alpha_bar_t) ** 0.5 * eps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_path")
    parser.add_argument("--n-per-class", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overrides = [
        f"ckpt_path={args.ckpt_path}",
        f"n_per_class={args.n_per_class}",
        f"seed={args.seed}",
    ]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides + PANEL)
    inputs = load_inputs(cfg)
    judge = get_run_judge(cfg, inputs)
    module = inputs.module
    labels, _, eps = study_inputs(
        module.num_classes, module.image_shape, args.n_per_class, args.seed
    )
    alpha_bar_t = float(module.schedule.alpha_bars[-1])
    starts = {
        "x_T = eps": eps,
        "x_T ~ q(x_T | c)": true_marginal_start(eps, labels, inputs.train, alpha_bar_t, args.seed),
    }
    table = Table(title=f"{args.ckpt_path}: sqrt(alpha_bar_T) = {alpha_bar_t**0.5:.4f}")
    table.add_column("sampler")
    for name in starts:
        table.add_column(f"{name}: acc / FID", justify="right")
    with module.sampling_net(True) as net:
        studies = [
            run_study(
                net,
                inputs.samplers,
                judge.classifier,
                inputs.real.reference,
                args.n_per_class,
                seed=args.seed,
                start=start,
            )
            for start in starts.values()
        ]
    for (entry, _), *rows in zip(inputs.samplers, *studies):
        cells = [f"{row['class_accuracy']:.3f} / {row['fid']:.2f}" for row in rows]
        table.add_row(entry.label, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
