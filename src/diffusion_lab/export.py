"""diffusion-export: a checkpoint as a folder that travels (safetensors + config.json + model card).

diffusion-export ckpt_path=outputs/train/runs/<datetime> out=exports/digits
diffusion-export ckpt_path=<run>/checkpoints/last.ckpt out=exports/digits-last
diffusion-export ckpt_path=<run> out=exports/digits-onnx onnx=true   # + model.onnx

Writes ``out/model.safetensors`` (the EMA weights), ``out/config.json`` and ``out/README.md``
(see :mod:`diffusion_lab.runs.pretrained` for the format), with ``onnx=true`` also ``out/model.onnx``
(the network alone, :mod:`diffusion_lab.runs.onnx_graph`); the folder appears whole or not at all (it
is written beside ``out`` and renamed into place) and ``out`` must not exist yet, or be empty.
Every command that takes ``ckpt_path`` accepts the folder, and
``diffusion_lab.load_pretrained(out)`` loads it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from diffusion_lab import CONFIG_DIR, __version__
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.runs.checkpoints import load_module, resolve_checkpoint
from diffusion_lab.runs.layout import CHECKPOINTS_DIR, RESULT_FILE
from diffusion_lab.runs.onnx_graph import (
    INPUT_NAMES,
    ONNX_FILE,
    OUTPUT_NAME,
    export_onnx,
    require_onnx_exporter,
)
from diffusion_lab.runs.pretrained import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    MODULE_FIELDS,
    WEIGHTS_FILE,
    is_export,
)
from diffusion_lab.utils.checks import InputError, require_bool
from diffusion_lab.utils.cli import input_errors_end_the_command

log = logging.getLogger(__name__)


def export_config(module: DiffusionModule, checkpoint: Path, onnx: bool = False) -> dict[str, Any]:
    """config.json's content: the named fields, the rest of the recipe under ``training``; with
    ``onnx``, ``onnx`` names the graph's file, inputs and output."""
    hparams = dict(module.hparams)
    config: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
    config.update({name: hparams[name] for name in MODULE_FIELDS})
    config["image_shape"] = list(module.image_shape)
    config["training"] = {k: v for k, v in hparams.items() if k not in MODULE_FIELDS}
    config["source"] = str(checkpoint)
    config["diffusion_lab_version"] = __version__
    if onnx:
        config["onnx"] = {"file": ONNX_FILE, "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME}
    return config


def run_result(checkpoint: Path) -> dict[str, Any] | None:
    """The run's result.json (<run>/checkpoints/<file>.ckpt -> <run>/result.json), if any."""
    path = checkpoint.parent.parent / RESULT_FILE
    if checkpoint.parent.name != CHECKPOINTS_DIR or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def model_card(config: dict[str, Any], checkpoint: Path, result: dict[str, Any] | None) -> str:
    """README.md: what the model is, what it was trained on, for how long, how good, and how to
    load it."""
    channels, height, width = config["image_shape"]
    data = config["data"] or {}
    source = (data.get("source") or {}).get("_target_", "unknown").rsplit(".", 1)[-1]
    names = ", ".join(config["class_names"]) or "(none stored)"
    training_epochs = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)
    epochs = (result or {}).get("epochs", training_epochs.get("epoch", -1) + 1)
    lines = [
        f"# diffusion-lab model: {source}, {height}x{width}x{channels}",
        "",
        f"A context-conditioned diffusion model ({config['net']['_target_'].rsplit('.', 1)[-1]}, "
        f"{config['prediction']} prediction) exported by diffusion-export from `{checkpoint}`.",
        "",
        "## Data",
        f"- source: {source}; images {channels} x {height} x {width}; classes: {names}",
        f"- data config: `{json.dumps(data, sort_keys=True)}`",
        "",
        "## Training",
        f"- epochs: {epochs}",
        f"- noise schedule: `{json.dumps(config['schedule'], sort_keys=True)}`",
        f"- default sampler: `{json.dumps(config['sampler'], sort_keys=True)}`",
        "- weights: the EMA weights (model.safetensors"
        + (f"; the network alone as ONNX in {ONNX_FILE})" if "onnx" in config else ")"),
        "",
        "## Measured quality",
    ]
    metrics = (result or {}).get("metrics") or {}
    quality = {k: v for k, v in metrics.items() if k.startswith("quality/") or k == "val/loss"}
    if quality:
        lines += [f"- {key}: {value:.4g}" for key, value in sorted(quality.items())]
    else:
        lines.append("- not measured (the run folder has no result.json with metrics)")
    lines += [
        "",
        "## Use",
        "```python",
        "import diffusion_lab, torch",
        "model = diffusion_lab.load_pretrained('<this folder>')",
        f"images = model.sample(torch.eye({len(config['class_names']) or 1}))"
        "  # one image per class, in [-1, 1]",
        "```",
        "Or on the command line: `diffusion-sample ckpt_path=<this folder>`.",
        "",
    ]
    if "onnx" in config:
        lines += [
            f"{ONNX_FILE}: one call of the network, batch size free. Inputs x (B, C, H, W), "
            "t (B,) = timestep / T, context (B, K) (zeros: no class), all float32; output the "
            f"{config['prediction']} prediction (B, C, H, W). A sampler runs around it "
            "(the schedule is in config.json).",
            "",
        ]
    return "\n".join(lines)


def check_out(out: Any) -> Path:
    """``out`` as a path that does not exist yet or is an empty folder."""
    if out is None or str(out).strip() == "":
        raise InputError("out must name the export folder to write, e.g. out=exports/digits")
    path = Path(str(out)).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(
            f"out {str(path)!r} exists and is not an empty folder; give a new folder (nothing "
            "is overwritten)"
        )
    return path


def write_export(module: DiffusionModule, checkpoint: Path, out: Path, onnx: bool = False) -> Path:
    """Write the three files (four with ``onnx``) into a temporary folder beside ``out``, then
    rename it to ``out``."""
    config = export_config(module, checkpoint, onnx)
    weights = {k: v.detach().cpu().contiguous() for k, v in module.ema.module.state_dict().items()}
    card = model_card(config, checkpoint, run_result(checkpoint))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        save_file(weights, staging / WEIGHTS_FILE, metadata={"format": FORMAT})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (staging / CARD_FILE).write_text(card)
        if onnx:
            export_onnx(
                module.ema.module, module.image_shape, module.num_classes, staging / ONNX_FILE
            )
        os.chmod(staging, 0o755)
        for written in staging.iterdir():  # safetensors writes its file owner-only
            os.chmod(written, 0o644)
        if out.exists():
            out.rmdir()  # empty, as check_out made sure
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Check the input, load the checkpoint, write the export folder. Returns its paths."""
    out = check_out(cfg.out)
    onnx = require_bool("onnx", cfg.onnx)
    if onnx:
        require_onnx_exporter()
    checkpoint = resolve_checkpoint(cfg.ckpt_path)
    if is_export(checkpoint):
        raise InputError(f"ckpt_path {str(checkpoint)!r} is an export already; copy the folder")
    module = load_module(checkpoint, torch.device("cpu"))
    folder = write_export(module, checkpoint, out, onnx)
    files = [WEIGHTS_FILE, CONFIG_FILE, CARD_FILE] + ([ONNX_FILE] if onnx else [])
    log.info("exported %s -> %s (%s)", checkpoint, folder, ", ".join(files))
    return {
        "checkpoint": checkpoint,
        "folder": folder,
        "weights": folder / WEIGHTS_FILE,
        "config": folder / CONFIG_FILE,
        "card": folder / CARD_FILE,
        "onnx": folder / ONNX_FILE if onnx else None,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@input_errors_end_the_command("diffusion-export")
def main(cfg: DictConfig) -> None:
    run_export(cfg)


if __name__ == "__main__":
    main()
