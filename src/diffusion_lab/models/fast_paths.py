"""Fast paths of training, each the same computation up to float rounding (tests/test_fast_paths.py):
fused optimizer kernels, channels-last weights, ``torch.compile``. Pure torch; DiffusionModule
switches them on from its hyper-parameters (``module.fused_optimizer``, ``module.channels_last``,
``module.compile_net``: conf/perf/*.yaml)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.optim import optimizer as torch_optimizer


def fused_kernels_available(make_optimizer: Any, device: torch.device) -> bool:
    """Whether ``make_optimizer(params, fused=True)`` is possible: the optimizer class takes a
    ``fused`` argument and torch has fused kernels for ``device``'s type."""
    optimizer_class = getattr(make_optimizer, "func", make_optimizer)  # a functools.partial
    try:
        takes_fused = "fused" in inspect.signature(optimizer_class).parameters
    except (TypeError, ValueError):
        return False
    supported = getattr(torch_optimizer, "_get_fused_kernels_supported_devices", None)
    return takes_fused and supported is not None and device.type in supported()


def match_state_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each state tensor of ``optimizer`` (Adam's exp_avg, ...) its parameter's memory layout.

    A resumed run restores the state in the layout it was saved in, which differs from the
    parameters' when `channels_last` changed between the runs; fused Adam reads a parameter's
    tensors as if they shared one layout, and mixes elements up (silently) when they do not."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if not torch.is_tensor(value) or value.shape != param.shape:
                continue  # e.g. Adam's step count
            if value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def to_channels_last(*nets: torch.nn.Module) -> None:
    """Store the nets' 4-D weights channels-last (NHWC), in place (``param.data`` is swapped, so
    an optimizer built before keeps its parameters): convolutions then run in that layout."""
    for net in nets:
        net.to(memory_format=torch.channels_last)


def compile_in_place(*nets: torch.nn.Module, **options: Any) -> None:
    """``torch.compile`` (with ``options``) each net in place: the modules, their parameters and
    state_dict keys stay as they are (checkpoints keep their keys). Compilation happens at each
    net's first call (and again for a new input shape or train/eval mode)."""
    for net in nets:
        net.compile(**options)
