"""SampleGrids: the last epoch's grid and the GIF come from one pass of each sampler's chain; the
grid's samplers are the partial sampler configs of conf/callbacks (DDPM beside the sampler group's
sampler, with all its options)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from test_fast_paths import quiet_trainer
from test_lit_module import make_module
from test_train import TINY, compose_train
from torch.utils.data import DataLoader, TensorDataset

from diffusion_lab.callbacks import SampleGrids
from diffusion_lab.diffusion import DDPMSampler, DPMSolverSampler
from diffusion_lab.train import build_module

DDIM_4 = {"_target_": "diffusion_lab.diffusion.DDIMSampler", "_partial_": True, "steps": 4}


class StopAfterTheGrid(L.Callback):
    """Asks training to stop after epoch 0's epoch-end hooks (the grid's among them) ran, as an
    early stopping placed after the grids would: the grid did not know it was the last."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


def fit_with_grids(
    tmp_path: Path, max_epochs: int = 1, after: tuple[L.Callback, ...] = (), **trainer_options
) -> tuple[SampleGrids, list]:
    """A tiny module (T = 20) fitted with SampleGrids; returns it and the EMA net's call sizes."""
    torch.manual_seed(0)
    module = make_module()
    calls: list[int] = []  # batch size of every EMA-network call: only sampling uses that net
    module.ema.module.register_forward_hook(lambda net, inputs, output: calls.append(len(output)))
    grids = SampleGrids(
        samplers={"ddpm": DDPMSampler, "ddim": DDIM_4},  # a partial (Hydra's) and a config
        output_dir=str(tmp_path / "samples"),
        samples_per_class=6,
        animation_frames=5,
    )
    images = torch.rand(24, 1, 8, 8) * 2 - 1
    contexts = torch.eye(3)[torch.arange(24) % 3]
    trainer = quiet_trainer(
        max_epochs=max_epochs,
        callbacks=[grids, *after],
        default_root_dir=tmp_path,
        **trainer_options,
    )
    trainer.fit(module, DataLoader(TensorDataset(images, contexts), batch_size=8))
    return grids, calls


def test_the_gif_replays_the_last_grids_chains(tmp_path: Path) -> None:
    grids, calls = fit_with_grids(tmp_path)
    # one pass per sampler over the whole grid (3 classes x 6): DDPM's 20 steps, DDIM's 4
    assert calls == [18] * (20 + 4)
    assert grids.last_gif is not None and grids.last_gif.is_file()
    shown = torch.arange(18).view(3, 6)[:, :4].flatten()  # the first 4 images of each row
    for name in ("ddpm", "ddim"):
        frames, times = grids.final_trajectories[name]
        assert times[0] == 20 and times[-1] == 0
        assert frames.shape[1:] == (12, 1, 8, 8)
        assert torch.equal(frames[-1], grids.last_images[name][shown])
    with Image.open(grids.last_gif) as gif:
        assert gif.n_frames == len(grids.final_trajectories["ddpm"][1])  # DDPM has more frames


def test_a_run_stopped_before_its_last_epoch_samples_the_gif_itself(tmp_path: Path) -> None:
    grids, calls = fit_with_grids(tmp_path, max_epochs=5, after=(StopAfterTheGrid(),))
    assert grids.final_trajectories == {}  # epoch 0's grid did not know it was the last
    assert grids.last_gif is not None and grids.last_gif.is_file()
    gif_calls = [12] * (20 + 4)  # the GIF's own chains, on its 12 images, after the grids
    assert calls[-len(gif_calls) :] == gif_calls and set(calls[: -len(gif_calls)]) == {18}


def test_the_gif_shows_animation_columns_images_per_row(tmp_path: Path) -> None:
    torch.manual_seed(0)
    grids = SampleGrids(
        samplers={"ddim": DDIM_4}, samples_per_class=6, animation_frames=5, animation_columns=2
    )
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    contexts = torch.eye(3)[torch.arange(8) % 3]
    trainer = quiet_trainer(max_epochs=1, callbacks=[grids], default_root_dir=tmp_path)
    trainer.fit(make_module(), DataLoader(TensorDataset(images, contexts), batch_size=8))
    frames, _ = grids.final_trajectories["ddim"]
    shown = torch.arange(18).view(3, 6)[:, :2].flatten()
    assert frames.shape[1] == 6 and torch.equal(frames[-1], grids.last_images["ddim"][shown])


def test_with_sampler_dpmpp_the_second_panel_is_dpm_solver_with_its_options(tmp_path: Path):
    """The sampler group's sampler, all of it: DPM-Solver++ at its 20 steps with eps_scale, not a
    DDIM that borrowed its step count (main@ed5278f: DDIMSampler(steps=20), eps_scale ignored)."""
    tiny = [option for option in TINY if option != "sampler.steps=5"]  # dpmpp's own 20 steps
    cfg = compose_train(tmp_path, *tiny, "sampler=dpmpp", "sampler.eps_scale=1.01")
    grids = instantiate(cfg.callbacks.samples, every_n_epochs=1, animate=False)
    module = build_module(cfg)
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    contexts = torch.eye(10)[torch.arange(4)]
    trainer = quiet_trainer(max_epochs=1, callbacks=[grids], default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(TensorDataset(images, contexts), batch_size=4))

    ddpm, second = grids.samplers["ddpm"], grids.samplers["ddim"]
    assert isinstance(second, DPMSolverSampler) and second.nfe == 20 and second.steps == 20
    assert second.eps_scale == pytest.approx(1.01) and second.clip_denoised
    assert isinstance(ddpm, DDPMSampler) and ddpm.clip_denoised and ddpm.eps_scale == 1.0
    # the panel's images are that sampler's: the same chain again on the grid's noise
    expected = module.sample(grids.contexts, grids.noise, sampler=second)  # deterministic
    assert torch.allclose(grids.last_images["ddim"], expected, atol=1e-6)
    unscaled = DPMSolverSampler(module.schedule, steps=20, clip_denoised=True)
    plain = module.sample(grids.contexts, grids.noise, sampler=unscaled)
    assert not torch.allclose(grids.last_images["ddim"], plain, atol=1e-4)  # eps_scale mattered
    assert trainer.callback_metrics["samples/ddim_seconds"] > 0


def test_the_ddpm_panel_takes_the_sampler_groups_variance(tmp_path: Path) -> None:
    tiny = [option for option in TINY if option != "sampler.steps=5"]  # DDPM has no steps
    cfg = compose_train(tmp_path, *tiny, "sampler=ddpm", "sampler.variance=posterior")
    grids = instantiate(cfg.callbacks.samples)
    grids.setup(quiet_trainer(), build_module(cfg), "fit")
    assert grids.samplers["ddpm"].variance == "posterior"


def test_no_sampler_is_refused() -> None:
    with pytest.raises(ValueError, match="callbacks.samples.samplers names no sampler"):
        SampleGrids(samplers={})
