"""Wall-clock timing of GPU work: wait for queued kernels before reading the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Block until the device's queued work is done (CUDA runs asynchronously; a CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """(work(), wall seconds it took on ``device``)."""
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - start


def device_name(device: torch.device) -> str:
    """E.g. 'NVIDIA H100 80GB HBM3' or 'cpu x2' (the threads torch uses)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} x{torch.get_num_threads()}"
