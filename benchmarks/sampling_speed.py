"""DDPM vs DDIM sampling speed: seconds and images/s for one batch, as the course compares them.

    python benchmarks/sampling_speed.py                      # the course's sprites setting, CPU
    python benchmarks/sampling_speed.py --device cuda --n 32 256
    python benchmarks/sampling_speed.py --compile          # torch.compile'd net; compile time apart
    python benchmarks/sampling_speed.py --precision bf16-mixed   # one precision (default: both)

Weights do not change the cost, so the net is freshly initialised (eval mode, inference_mode).
Each precision is a set of rows: ``32-true`` the plain fp32 net, ``bf16-mixed`` the net's forward
under bf16 autocast with the samplers in fp32, as every sampling path of the project runs it
(:func:`diffusion_lab.models.precision.in_precision`); "vs fp32" divides the fp32 row's seconds
by this row's.
"""

from __future__ import annotations

import argparse

import torch

from diffusion_lab.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    NFECounter,
    make_schedule,
)
from diffusion_lab.models import ContextUnet
from diffusion_lab.models.precision import in_precision
from diffusion_lab.utils.timing import device_name, timed


def time_sampler(sampler, net, noise, contexts, guidance_scale: float) -> tuple[float, int]:
    counter = NFECounter(net)
    _, seconds = timed(
        lambda: sampler.sample(counter, noise, contexts, guidance_scale=guidance_scale),
        noise.device,
    )
    return seconds, counter.calls


def time_forwards(net, noise, contexts, calls: int, guidance_scale: float) -> float:
    """Seconds of ``calls`` bare network forwards on the sampler's input (the doubled batch under
    guidance): what a sampler costs at the least, its own arithmetic excluded."""
    x, c = noise, contexts
    if guidance_scale > 0:
        x, c = torch.cat([noise, noise]), torch.cat([contexts, torch.zeros_like(contexts)])
    t = torch.full((len(x),), 0.5, device=noise.device)

    def run() -> None:
        with torch.inference_mode():
            for _ in range(calls):
                net(x, t, c)

    return timed(run, noise.device)[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, nargs="+", default=[32], help="batch sizes")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--height", type=int, default=16)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--n-feat", type=int, default=64)
    parser.add_argument("--timesteps", type=int, default=500)
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=[25])
    parser.add_argument("--dpm-steps", type=int, nargs="+", default=[20])
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the net first")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=["32-true", "bf16-mixed"],
        default=["32-true", "bf16-mixed"],
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = ContextUnet(args.channels, args.n_feat, args.classes, args.height).to(device).eval()
    if args.compile:
        net.compile()  # in place, as models.fast_paths.compile_in_place does
    schedule = make_schedule("linear", args.timesteps)
    samplers = [DDPMSampler(schedule)] + [DDIMSampler(schedule, s) for s in args.ddim_steps]
    samplers += [DPMSolverSampler(schedule, s) for s in args.dpm_steps]
    name = device_name(device)
    print(
        f"device: {name}; net n_feat={args.n_feat}, {args.channels}x{args.height}x{args.height}, "
        f"T={args.timesteps}, guidance {args.guidance}"
    )
    print(
        f"| {'sampler':<40} | {'precision':<10} | {'n':>5} | {'NFE':>4} | {'seconds':>8} | "
        f"{'images/s':>9} | {'vs DDPM':>7} | {'vs fp32':>7} | {'overhead':>8} |"
    )
    print(
        f"|{'-' * 42}|{'-' * 12}|{'-' * 7}|{'-' * 6}|{'-' * 10}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 10}|"
    )
    fp32_seconds: dict[tuple[int, int], float] = {}
    for n in args.n:
        noise = torch.randn(n, args.channels, args.height, args.height, device=device)
        contexts = torch.eye(args.classes, device=device)[torch.arange(n) % args.classes]
        for precision in args.precision:
            model = in_precision(net, precision)  # the net's forward under autocast, or itself
            # warm-up: kernels, allocator; the compilation with --compile
            seconds, _ = time_sampler(
                DDIMSampler(schedule, 5), model, noise, contexts, args.guidance
            )
            compiling = ", compiling" if args.compile else ""
            print(f"n={n}, {precision}: warm-up (5 DDIM steps{compiling}) {seconds:.2f} s")
            baseline = None
            for index, sampler in enumerate(samplers):
                seconds, nfe = time_sampler(sampler, model, noise, contexts, args.guidance)
                # the same number of bare forwards, right after: the sampler's own share
                forwards = time_forwards(model, noise, contexts, nfe, args.guidance)
                baseline = baseline or seconds
                if precision == "32-true":
                    fp32_seconds[n, index] = seconds
                fp32 = fp32_seconds.get((n, index))
                vs_fp32 = f"{fp32 / seconds:>6.2f}x" if fp32 else f"{'-':>7}"
                print(
                    f"| {sampler!r:<40} | {precision:<10} | {n:>5} | {nfe:>4} | {seconds:>8.3f} | "
                    f"{n / seconds:>9.1f} | {baseline / seconds:>6.1f}x | {vs_fp32} | "
                    f"{100 * (seconds / forwards - 1):>7.1f}% |"
                )


if __name__ == "__main__":
    main()
