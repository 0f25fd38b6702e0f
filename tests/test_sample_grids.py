"""SampleGrids: the last epoch's grid and the GIF come from one pass of each sampler's chain."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from test_fast_paths import quiet_trainer
from test_lit_module import make_module
from torch.utils.data import DataLoader, TensorDataset

from diffusion_lab.callbacks import SampleGrids


def fit_with_grids(
    tmp_path: Path, max_epochs: int = 1, **trainer_options
) -> tuple[SampleGrids, list]:
    """A tiny module (T = 20) fitted with SampleGrids; returns it and the EMA net's call sizes."""
    torch.manual_seed(0)
    module = make_module()
    calls: list[int] = []  # batch size of every EMA-network call: only sampling uses that net
    module.ema.module.register_forward_hook(lambda net, inputs, output: calls.append(len(output)))
    grids = SampleGrids(
        output_dir=str(tmp_path / "samples"), samples_per_class=6, ddim_steps=4, animation_frames=5
    )
    images = torch.rand(24, 1, 8, 8) * 2 - 1
    contexts = torch.eye(3)[torch.arange(24) % 3]
    trainer = quiet_trainer(
        max_epochs=max_epochs, callbacks=[grids], default_root_dir=tmp_path, **trainer_options
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
    grids, calls = fit_with_grids(tmp_path, max_epochs=5, max_steps=4)  # stops in epoch 1 of 5
    assert grids.final_trajectories == {}  # no last-epoch grid was drawn
    assert grids.last_gif is not None and grids.last_gif.is_file()
    gif_calls = [12] * (20 + 4)  # the GIF's own chains, on its 12 images, after the grids
    assert calls[-len(gif_calls) :] == gif_calls and set(calls[: -len(gif_calls)]) == {18}
