"""The device's matmul and convolution peak in fp32 and bf16 (GFLOP/s): the limit compare.py's rows
are measured against.

    python benchmarks/peak.py --json benchmarks/results/peak-cpu.json       # this CPU, torch's threads
    python benchmarks/peak.py --device cuda --matmul-size 8192 --json benchmarks/results/peak-h100.json

matmul: (n, n) @ (n, n), 2 n^3 FLOPs. conv: a 3x3 convolution, padding 1, of (B, C, H, W) to C
channels, 2 B C^2 9 H W FLOPs, as ContextUnet's blocks run them (n_feat 64 on 16x16 sprites, batch
100, by default), in both layouts (NCHW and channels-last); its peak is the faster. FLOPs are
counted by torch.utils.flop_counter.FlopCounterMode, as compare.py counts a training step's. Each
figure is the best of ``--repeats`` timed calls after one warm-up call (bf16: the tensors
themselves in bf16, the kernels autocast would pick).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from diffusion_lab.utils.io import write_json
from diffusion_lab.utils.timing import device_name, timed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def counted_flops(work: Callable[[], Any]) -> int:
    """FLOPs of one call of ``work`` as FlopCounterMode counts them (matmuls, convolutions)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()


def gflops(work: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """GFLOP/s of ``work``: its counted FLOPs over its best time of ``repeats`` calls."""
    flops = counted_flops(work)  # also the warm-up call
    seconds = min(timed(work, device)[1] for _ in range(repeats))
    return flops / seconds / 1e9


def matmul(size: int, dtype: torch.dtype, device: torch.device) -> Callable[[], torch.Tensor]:
    a, b = torch.randn(2, size, size, device=device).to(dtype).unbind()
    return lambda: a @ b


def conv(
    batch: int,
    channels: int,
    height: int,
    dtype: torch.dtype,
    device: torch.device,
    channels_last: bool,
) -> Callable[[], torch.Tensor]:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, channels, height, height, device=device).to(dtype, memory_format=layout)
    weight = torch.randn(channels, channels, 3, 3, device=device).to(dtype, memory_format=layout)
    return lambda: F.conv2d(x, weight, padding=1)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """{"matmul": {dtype: GFLOP/s}, "conv": {dtype: GFLOP/s (the faster layout)}, "conv_nchw",
    "conv_nhwc": per layout}, the setting, device and torch version."""
    device = torch.device(args.device)
    result: dict[str, Any] = {"matmul": {}, "conv": {}, "conv_nchw": {}, "conv_nhwc": {}}
    for name, dtype in DTYPES.items():
        result["matmul"][name] = gflops(
            matmul(args.matmul_size, dtype, device), device, args.repeats
        )
        for layout, channels_last in (("conv_nchw", False), ("conv_nhwc", True)):
            work = conv(
                args.conv_batch, args.conv_channels, args.conv_height, dtype, device, channels_last
            )
            result[layout][name] = gflops(work, device, args.repeats)
        result["conv"][name] = max(result["conv_nchw"][name], result["conv_nhwc"][name])
    setting = {key: getattr(args, key) for key in ("matmul_size", "conv_batch", "conv_channels")}
    setting |= {"conv_height": args.conv_height, "repeats": args.repeats}
    return result | {"device": device_name(device), "torch": torch.__version__, "setting": setting}


def table(peaks: dict[str, Any]) -> str:
    lines = ["| kernel | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |", "|---|---:|---:|---:|"]
    for kernel in ("matmul", "conv_nchw", "conv_nhwc"):
        fp32, bf16 = peaks[kernel]["fp32"], peaks[kernel]["bf16"]
        lines.append(f"| {kernel} | {fp32:,.1f} | {bf16:,.1f} | {bf16 / fp32:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--conv-batch", type=int, default=100)
    parser.add_argument("--conv-channels", type=int, default=64)
    parser.add_argument("--conv-height", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls; the best counts")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--json", type=Path, help="write the peaks here (compare.py --peak PATH)")
    positive = ("matmul_size", "conv_batch", "conv_channels", "conv_height", "repeats")
    return checked(parser, parser.parse_args(argv), positive)


def checked(
    parser: argparse.ArgumentParser, args: argparse.Namespace, positive: tuple[str, ...]
) -> argparse.Namespace:
    """``args``, once the ``positive`` options are >= 1 and a CUDA device is there if asked for
    (else the parser's one-line error; compare.py checks its own options so too)."""
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = measure(args)
    print(f"device: {peaks['device']}; torch {peaks['torch']}; setting {peaks['setting']}")
    print(table(peaks))
    if args.json:
        write_json(args.json, peaks)
    return peaks


if __name__ == "__main__":
    main()
