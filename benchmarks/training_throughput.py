"""Training throughput of the ContextUnet on the DDPM loss: images/s and peak memory.

    python benchmarks/training_throughput.py                         # sprites setting, CPU
    python benchmarks/training_throughput.py --device cuda --batch 100 1000 --precision bf16

One step = q_sample, forward, MSE on the noise, backward, Adam: what DiffusionModule does per batch,
without Lightning's loop around it.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from diffusion_lab.diffusion import make_schedule
from diffusion_lab.models import ContextUnet
from diffusion_lab.timing import device_name, timed


def train_steps(net, optimizer, schedule, batch, classes, steps, device, precision) -> float:
    """Seconds for ``steps`` optimizer steps on random data of the real shapes."""
    images = torch.rand(batch, net.in_channels, net.height, net.height, device=device) * 2 - 1
    contexts = torch.eye(classes, device=device)[torch.randint(0, classes, (batch,), device=device)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def run() -> None:
        for _ in range(steps):
            t = torch.randint(1, schedule.timesteps + 1, (batch,), device=device)
            noise = torch.randn_like(images)
            with autocast:
                eps = net(
                    schedule.q_sample(images, t, noise), t.float() / schedule.timesteps, contexts
                )
                loss = F.mse_loss(eps.float(), noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return timed(run, device)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[100])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--height", type=int, default=16)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--n-feat", type=int, nargs="+", default=[64])
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    args = parser.parse_args()

    device = torch.device(args.device)
    schedule = make_schedule("linear", 500).to(device)
    name = device_name(device)
    print(
        f"device: {name}; {args.channels}x{args.height}x{args.height}, precision {args.precision}"
    )
    columns = f"| {'n_feat':>6} | {'params':>9} | {'batch':>5} | {'ms/step':>8} | {'images/s':>9} |"
    print(columns + f" {'peak MiB':>8} |")
    print(f"|{'-' * 8}|{'-' * 11}|{'-' * 7}|{'-' * 10}|{'-' * 11}|{'-' * 10}|")
    for n_feat in args.n_feat:
        for batch in args.batch:
            torch.manual_seed(0)
            net = ContextUnet(args.channels, n_feat, args.classes, args.height).to(device)
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
            params = sum(p.numel() for p in net.parameters())
            train_steps(net, optimizer, schedule, batch, args.classes, 3, device, args.precision)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = train_steps(
                net, optimizer, schedule, batch, args.classes, args.steps, device, args.precision
            )
            peak = (
                torch.cuda.max_memory_allocated(device) / 2**20
                if device.type == "cuda"
                else float("nan")
            )
            print(
                f"| {n_feat:>6} | {params:>9,} | {batch:>5} | {1000 * seconds / args.steps:>8.1f} | "
                f"{batch * args.steps / seconds:>9.0f} | {peak:>8.0f} |"
            )


if __name__ == "__main__":
    main()
