"""The network as an ONNX graph, for runtimes without PyTorch (``diffusion-export onnx=true``).

``model.onnx`` is ONE call of the network, the EMA weights baked in, batch size free:

- inputs ``x`` (B, C, H, W) float32, the noisy images; ``t`` (B,) float32, the timestep divided
  by T (t / T in (0, 1], as the samplers pass it); ``context`` (B, K) float32, a one-hot class, a mix,
  or zeros for the null context;
- output ``prediction`` (B, C, H, W): what the net predicts, config.json's ``prediction``
  (eps, v or x0).

A sampler (the schedule, the steps, guidance as two calls) runs around it; config.json holds the
schedule. Exported with torch.onnx's dynamo exporter (the ``onnx`` extra: onnx, onnxscript);
tests/test_export.py checks it against torch with onnxruntime.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from diffusion_lab.utils.checks import InputError

ONNX_FILE = "model.onnx"
INPUT_NAMES = ("x", "t", "context")
OUTPUT_NAME = "prediction"
ONNX_PACKAGES = ("onnx", "onnxscript")
CHATTY_LOGGERS = ("onnx_ir", "onnxscript")  # an INFO line per graph pass and folded constant


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter's own INFO lines off (warnings stay) while it runs."""
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def require_onnx_exporter() -> None:
    """Refuse, in one line, when torch.onnx's exporter lacks its packages."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"onnx=true needs the packages {', '.join(missing)}: pip install -e '.[onnx]'"
        )


def example_inputs(
    image_shape: tuple[int, int, int], num_classes: int, batch: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, t, context) of ``batch`` images: noise, t / T in (0, 1), one class each in turn."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *image_shape, generator=generator)
    t = torch.rand(batch, generator=generator).clamp_min(1e-3)
    context = torch.eye(num_classes)[torch.arange(batch) % num_classes]
    return x, t, context


def export_onnx(
    net: torch.nn.Module, image_shape: tuple[int, int, int], num_classes: int, path: Path
) -> Path:
    """Write ``net`` (a copy in eval mode, float32, on the CPU: ``net`` itself is left as it is) to
    ``path`` as an ONNX graph with a free batch dimension (see the module docstring). Returns
    ``path``."""
    require_onnx_exporter()
    net = copy.deepcopy(net).eval().float().cpu()
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in INPUT_NAMES)  # positional: nets name them differently
    with torch.no_grad(), quiet_exporter():
        program = torch.onnx.export(
            net,
            example_inputs(image_shape, num_classes),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
            verbose=False,
        )
        program.save(str(path))
    return path
