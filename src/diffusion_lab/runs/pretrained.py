"""Exported models: a folder that travels without Lightning checkpoints or the run that made it.

An export folder (written by diffusion-export) holds

- ``model.safetensors``: the EMA weights of the network (its ``state_dict`` keys), nothing else;
- ``config.json``: ``format`` and ``format_version``; ``net``, ``schedule`` and ``sampler``
  (the configs with ``_target_``, as the checkpoint holds them); ``prediction`` (eps, v or x0);
  ``class_names``; ``image_shape`` [C, H, W]; ``data`` (the training data config, or null);
  ``training`` (the module's other hyper-parameters: loss, EMA decay, optimizer, ...);
  ``source`` (the checkpoint it came from) and ``diffusion_lab_version``;
- ``README.md``: the model card;
- with ``diffusion-export onnx=true``, ``model.onnx``: the network alone
  (:mod:`diffusion_lab.runs.onnx_graph`), named in config.json's ``onnx``.

::

    import diffusion_lab, torch
    model = diffusion_lab.load_pretrained("exports/digits")
    images = model.sample(torch.eye(10))        # (10, C, H, W) in [-1, 1], one per class
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.utils.checks import InputError, MissingInputError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT = "diffusion-lab-export"
FORMAT_VERSION = 1
MODULE_FIELDS = ("net", "schedule", "sampler", "prediction", "class_names", "data")


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an export folder (it holds config.json and model.safetensors)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of an export folder, refused unless it is this project's format."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{str(folder / CONFIG_FILE)!r} is not readable JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(
            f"{str(folder)!r} is not a diffusion-lab export: its config.json has no "
            f"format={FORMAT!r} (write one with diffusion-export)"
        )
    if config.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{str(folder)!r} has export format_version {config.get('format_version')!r}; "
            f"this diffusion-lab reads version {FORMAT_VERSION}"
        )
    return config


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu") -> DiffusionModule:
    """The :class:`DiffusionModule` of an export folder on ``device``, in eval mode, without
    grads, ready to ``.sample``. The network and its EMA copy both hold the exported (EMA)
    weights, so ``use_ema`` makes no difference; it has no optimizer state (not for resuming)."""
    folder = Path(folder).expanduser()
    if not is_export(folder):
        raise MissingInputError(
            f"{str(folder)!r} is no export folder: it needs {CONFIG_FILE} and {WEIGHTS_FILE} "
            "(write one with diffusion-export ckpt_path=<run> out=<folder>)"
        )
    config = read_config(folder)
    module = DiffusionModule(
        **config.get("training", {}), **{name: config[name] for name in MODULE_FIELDS}
    )
    weights = load_file(folder / WEIGHTS_FILE, device="cpu")
    module.net.load_state_dict(weights, strict=True)
    module.ema.module.load_state_dict(weights, strict=True)
    return module.to(device).eval().requires_grad_(False)
