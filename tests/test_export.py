"""diffusion-export and load_pretrained on a checkpoint trained once for real (conftest's
tiny_run): the folder's files, bitwise the same EMA weights and samples as the checkpoint, the
model card's three lines run as written, and commands taking ckpt_path accept the folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file
from test_sample import check_ok, run_sample

import diffusion_lab
from diffusion_lab import CONFIG_DIR
from diffusion_lab.diffusion import DDIMSampler, DDPMSampler
from diffusion_lab.edit import run_edit
from diffusion_lab.export import run_export
from diffusion_lab.runs.checkpoints import load_module, resolve_checkpoint
from diffusion_lab.runs.pretrained import load_pretrained

DIGITS = [str(i) for i in range(10)]


def run_export_command(*overrides: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "diffusion_lab.export", *overrides]
    return subprocess.run(
        command, capture_output=True, text=True, env=os.environ, timeout=600, cwd=cwd
    )


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    out = root / "exports" / "digits"
    result = run_export_command(
        f"ckpt_path={tiny_run}", f"out={out}", f"hydra.run.dir={root / 'log'}"
    )
    if result.returncode != 0:
        raise AssertionError(f"diffusion-export failed:\n{result.stdout}\n{result.stderr}")
    return out


def test_the_folder_holds_weights_config_and_card(exported, tiny_run):
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert not list(exported.parent.glob(".digits-*")), "the staging folder was left behind"
    config = json.loads((exported / "config.json").read_text())
    assert config["format"] == "diffusion-lab-export" and config["format_version"] == 1
    assert config["class_names"] == DIGITS and config["image_shape"] == [1, 16, 16]
    assert config["prediction"] == "v"  # the default recipe's target
    assert config["net"]["_target_"].endswith("ContextUnet") and config["net"]["n_feat"] == 8
    assert config["schedule"]["timesteps"] == 20
    assert config["sampler"]["_target_"].endswith("DDIMSampler") and config["sampler"]["steps"] == 5
    assert config["data"]["source"]["_target_"].endswith("DigitsSource")
    assert "optimizer" in config["training"] and "net" not in config["training"]
    card = (exported / "README.md").read_text()
    result = json.loads((tiny_run / "result.json").read_text())
    assert "- epochs: 1" in card and "DigitsSource" in card
    assert f"- val/loss: {result['metrics']['val/loss']:.4g}" in card


def test_round_trip_gives_bitwise_the_same_ema_weights_and_samples(exported, tiny_run):
    checkpoint = resolve_checkpoint(tiny_run)
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    ema = {
        k.removeprefix("ema.module."): v for k, v in stored.items() if k.startswith("ema.module.")
    }
    weights = load_file(exported / "model.safetensors")
    assert weights.keys() == ema.keys()
    for key, value in ema.items():
        assert torch.equal(weights[key], value), key

    original = load_module(checkpoint, torch.device("cpu"))
    loaded = load_pretrained(exported)
    for key, value in loaded.ema.module.state_dict().items():
        assert torch.equal(value, ema[key]), key
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    contexts = torch.eye(10)[[3, 7, 7, 1]]
    for build in (lambda s: DDIMSampler(s, steps=5, eta=0.5), DDPMSampler):
        images = []
        for module in (original, loaded):
            generator = torch.Generator().manual_seed(11)
            noise = torch.randn(4, 1, 16, 16, generator=generator)
            sampler = build(module.schedule)
            images.append(module.sample(contexts, noise, sampler=sampler, generator=generator))
        assert torch.equal(images[0], images[1])
    # the raw network of the export is the EMA network too
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(4, 1, 16, 16, generator=generator)
    # (the default sampler, DDIM eta 1, draws noise on the way: the same generator seed for both)
    raw = loaded.sample(contexts, noise, generator=torch.Generator().manual_seed(3), use_ema=False)
    ema = loaded.sample(contexts, noise, generator=torch.Generator().manual_seed(3), use_ema=True)
    assert torch.equal(raw, ema)


def test_the_model_card_snippet_runs_as_written(exported):
    card = (exported / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 3
    scope: dict = {}
    exec(snippet.replace("<this folder>", str(exported)), scope)  # noqa: S102 (our own card)
    assert scope["images"].shape == (10, 1, 16, 16)
    assert scope["images"].abs().max() <= 1.0 + 1e-6
    assert diffusion_lab.load_pretrained is load_pretrained


def test_diffusion_sample_takes_the_export_folder(exported, tiny_run, tmp_path):
    overrides = ("sampler.steps=5", "contexts=[2,5]", "n=2", "seed=3")
    check_ok(run_sample(tmp_path / "from_export", f"ckpt_path={exported}", *overrides))
    check_ok(run_sample(tmp_path / "from_run", f"ckpt_path={tiny_run}", *overrides))
    arrays = [np.load(tmp_path / name / "samples.npz") for name in ("from_export", "from_run")]
    np.testing.assert_array_equal(arrays[0]["images"], arrays[1]["images"])
    assert arrays[0]["class_names"].tolist() == DIGITS


def test_diffusion_edit_takes_the_export_folder_with_a_data_set_index(exported, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "edit",
            [f"ckpt_path={exported}", "image=4", "contexts=[9]", "n=2", "device=cpu"]
            + ["sampler.steps=5"],
        )
    written = run_edit(cfg, tmp_path / "edit")
    assert written["checkpoint"] == exported and written["nfe"] == 3
    with np.load(written["arrays"]) as arrays:
        assert arrays["images"].shape == (2, 16, 16, 1)


def test_export_refuses_a_folder_in_use_and_foreign_configs(exported, tiny_run, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in exported.iterdir()}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("export", [f"ckpt_path={tiny_run}", f"out={exported}"])
    with pytest.raises(ValueError, match=r"exists and is not an empty folder; give a new folder"):
        run_export(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in exported.iterdir()} == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes())
    (foreign / "config.json").write_text(json.dumps({"format": "something-else"}))
    assert resolve_checkpoint(foreign) == foreign
    with pytest.raises(ValueError, match=r"is not a diffusion-lab export: its config\.json has no"):
        load_module(foreign, torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match=r"is no export folder: it needs config\.json"):
        load_pretrained(tmp_path)


# --- onnx=true: the network as an ONNX graph, run by onnxruntime ----------------------------
@pytest.fixture(scope="module")
def exported_onnx(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export-onnx") / "digits"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("export", [f"ckpt_path={tiny_run}", f"out={out}", "onnx=true"])
    assert run_export(cfg)["onnx"] == out / "model.onnx"
    return out


def test_onnx_export_adds_the_graph_and_names_it(exported_onnx):
    assert sorted(p.name for p in exported_onnx.iterdir()) == [
        "README.md",
        "config.json",
        "model.onnx",
        "model.safetensors",
    ]
    config = json.loads((exported_onnx / "config.json").read_text())
    assert config["onnx"] == {
        "file": "model.onnx",
        "inputs": ["x", "t", "context"],
        "output": "prediction",
    }
    card = (exported_onnx / "README.md").read_text()
    assert "model.onnx: one call of the network" in card and "v prediction" in card
    assert load_pretrained(exported_onnx).num_classes == 10  # the folder still loads as before


def test_onnxruntime_gives_the_ema_networks_prediction_at_any_batch_size(exported_onnx, tiny_run):
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(exported_onnx / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["x", "t", "context"]
    net = load_module(resolve_checkpoint(tiny_run), torch.device("cpu")).ema.module.eval()
    generator = torch.Generator().manual_seed(5)
    for batch in (1, 3, 7):
        x = torch.randn(batch, 1, 16, 16, generator=generator)
        t = torch.linspace(0.05, 1.0, batch)
        context = torch.eye(10)[torch.arange(batch) % 10]
        context[0] = 0.0  # the null context
        if batch > 2:
            context[1] = 0.5 * torch.eye(10)[3] + 0.5 * torch.eye(10)[8]  # a mix
        inputs = {"x": x.numpy(), "t": t.numpy(), "context": context.numpy()}
        (prediction,) = session.run(["prediction"], inputs)
        with torch.no_grad():
            expected = net(x, t, context)
        assert prediction.shape == (batch, 1, 16, 16)
        np.testing.assert_allclose(prediction, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_onnx_must_be_true_or_false_and_nothing_is_written(tiny_run, tmp_path):
    out = tmp_path / "digits"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("export", [f"ckpt_path={tiny_run}", f"out={out}", "onnx=maybe"])
    with pytest.raises(ValueError, match=r"^onnx must be true or false, got 'maybe'$"):
        run_export(cfg)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_attention_unet_exports_too_and_a_missing_exporter_is_named(tmp_path, monkeypatch):
    import importlib.util

    import onnxruntime

    from diffusion_lab.models.unet import UNet
    from diffusion_lab.runs.onnx_graph import example_inputs, export_onnx

    torch.manual_seed(0)
    net = UNet(in_channels=3, n_cfeat=4, height=16, n_feat=16, channel_mults=(1, 2))
    net.eval()
    path = export_onnx(net, (3, 16, 16), 4, tmp_path / "unet.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, t, context = example_inputs((3, 16, 16), 4, batch=5)
    (prediction,) = session.run(None, {"x": x.numpy(), "t": t.numpy(), "context": context.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(prediction, net(x, t, context).numpy(), rtol=1e-4, atol=1e-5)

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a),
    )
    with pytest.raises(ValueError, match=r"onnx=true needs the packages onnxscript: pip install"):
        export_onnx(net, (3, 16, 16), 4, tmp_path / "again.onnx")
    assert not (tmp_path / "again.onnx").exists()
