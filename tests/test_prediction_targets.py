"""module.prediction = eps | v | x0 in DiffusionModule: the loss and its min-SNR weights per target,
the eps-model for sampling, checkpoints, the zero-terminal-SNR refusal, and real v / x0 runs that
train and sample from their checkpoints through the entry points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_lit_module import make_module
from test_sample import check_ok, load_arrays, run_sample
from test_train import compose_train, run_train

from diffusion_lab import CONFIG_DIR
from diffusion_lab.diffusion.predictions import EpsModel
from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.train import build_module
from diffusion_lab.utils.images import to_uint8

ZERO_SNR = {
    "_target_": "diffusion_lab.diffusion.make_schedule",
    "name": "linear",
    "timesteps": 20,
    "zero_terminal_snr": True,
}


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("weighting", ["none", "min_snr"])
def test_loss_regresses_the_target_with_its_min_snr_weight(prediction, weighting):
    """RecordingNet predicts zeros, so the per-sample loss is the target's mean square; the targets
    and weights are written out here from the papers (Salimans & Ho; Hang et al.)."""
    module = make_module(
        net={"_target_": "test_lit_module.RecordingNet"},
        prediction=prediction,
        loss_weighting=weighting,
    )
    images = torch.randn(64, 1, 8, 8)
    loss = module._loss(module.net, images, torch.zeros(64, 3), torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    t = torch.randint(1, 21, (64,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    alpha_bar = module.schedule.alpha_bars[t].float().view(-1, 1, 1, 1)
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    target = {"eps": noise, "v": alpha * noise - sigma * images, "x0": images}[prediction]
    snr = (alpha_bar / (1 - alpha_bar)).view(-1)
    weight = {
        "eps": torch.minimum(snr, torch.tensor(5.0)) / snr,
        "v": torch.minimum(snr, torch.tensor(5.0)) / (snr + 1),
        "x0": torch.minimum(snr, torch.tensor(5.0)),
    }[prediction]
    if weighting == "none":
        weight = torch.ones_like(weight)
    expected = (target.pow(2).mean(dim=(1, 2, 3)) * weight).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_sampling_net_converts_v_and_x0_nets_and_passes_eps_nets(tmp_path):
    import lightning as L

    for prediction in ("eps", "v", "x0"):
        module = make_module(prediction=prediction)
        assert module.hparams.prediction == module.prediction == prediction
        with module.sampling_net() as net:
            if prediction == "eps":
                assert net is module.ema.module
            else:
                assert isinstance(net, EpsModel) and net.net is module.ema.module
                assert net.prediction == prediction and not net.net.training
        images = module.sample(torch.eye(3), generator=torch.Generator().manual_seed(0))
        assert images.shape == (3, 1, 8, 8) and torch.isfinite(images).all()

        trainer = L.Trainer(max_epochs=0, logger=False, enable_progress_bar=False)
        trainer.strategy.connect(module)
        path = tmp_path / f"{prediction}.ckpt"
        trainer.save_checkpoint(path)
        assert DiffusionModule.load_from_checkpoint(path).prediction == prediction


class HandConverted(torch.nn.Module):
    """An eps-model from a v or x0 net, written out from the formulas (not EpsModel):
    v: eps = sigma x_t + alpha v, x0 = alpha x_t - sigma v; x0: eps = (x_t - alpha x0) / sigma."""

    def __init__(self, net: torch.nn.Module, prediction: str, alpha_bars: torch.Tensor) -> None:
        super().__init__()
        self.net, self.prediction, self.alpha_bars = net, prediction, alpha_bars

    def eps_and_x0(self, x, t, context):
        timestep = (t * (len(self.alpha_bars) - 1)).round().long()
        alpha_bar = self.alpha_bars[timestep].to(x.dtype).view(-1, 1, 1, 1)
        alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        output = self.net(x, t, context)
        if self.prediction == "v":
            return sigma * x + alpha * output, alpha * x - sigma * output
        return (x - alpha * output) / sigma, output

    def forward(self, x, t, context):
        return self.eps_and_x0(x, t, context)[0]


def sample_by_hand(module: DiffusionModule, sampler, prediction: str) -> torch.Tensor:
    """diffusion-sample's chain for contexts=[0,3] n=2 seed=0 (its noise and generator), on the
    EMA net read as a ``prediction`` net; uint8 images (4, C, H, W) as the command writes them."""
    contexts = torch.eye(module.num_classes)[[0, 0, 3, 3]]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn((4, *module.image_shape), generator=generator)
    net = module.ema.module.eval()
    model = HandConverted(net, prediction, module.schedule.alpha_bars)
    images = sampler.sample(model, noise, contexts, 0.0, generator)
    return to_uint8(images).int()


def test_zero_terminal_snr_is_refused_for_eps_prediction_where_the_module_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"zero terminal SNR.*module.prediction=v"):
        make_module(schedule=ZERO_SNR)
    assert make_module(schedule=ZERO_SNR, prediction="v").schedule.alpha_bars[-1].item() == 0.0
    cfg = compose_train(tmp_path, "scheduler.zero_terminal_snr=true", "module.prediction=eps")
    with pytest.raises(ValueError, match="zero terminal SNR"):
        build_module(cfg)
    # the default target is v: zero terminal SNR alone builds
    zero_snr = build_module(compose_train(tmp_path, "scheduler.zero_terminal_snr=true"))
    assert zero_snr.prediction == "v" and zero_snr.schedule.alpha_bars[-1].item() == 0.0
    with pytest.raises(ValueError, match="unknown prediction 'noise'; accepted: eps, v, x0"):
        make_module(prediction="noise")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "samplers"),
    [
        (
            [
                "module.prediction=v",
                "scheduler.zero_terminal_snr=true",
                "module.loss_weighting=min_snr",
            ],
            ["ddpm", "dpmpp"],
        ),
        (["module.prediction=x0"], ["ddim"]),
    ],
    ids=["v-zero-snr", "x0"],
)
def test_v_and_x0_runs_train_and_sample_from_their_checkpoints(tmp_path, overrides, samplers):
    run_dir = tmp_path / "train"
    run_train(
        run_dir,
        *overrides,
        "trainer.max_epochs=1",
        "logger=csv",
        "callbacks.samples.animate=false",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
    )
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    module = DiffusionModule.load_from_checkpoint(checkpoint, map_location="cpu")
    assert module.prediction == overrides[0].removeprefix("module.prediction=")
    assert (run_dir / "samples" / "epoch_000.png").is_file()  # the in-training grids sampled too
    for sampler in samplers:
        out = tmp_path / f"sample-{sampler}"
        steps = [] if sampler == "ddpm" else ["sampler.steps=5"]
        result = run_sample(
            out, f"ckpt_path={checkpoint}", f"sampler={sampler}", "contexts=[0,3]", "n=2", *steps
        )
        check_ok(result)
        images = torch.from_numpy(load_arrays(out)["images"]).permute(0, 3, 1, 2).int()
        assert images.shape == (4, 1, 16, 16)
        # the same chain in this process, with the target converted to eps by hand (Salimans &
        # Ho): the command's images come from the net's v / x0 read as that target
        config = OmegaConf.load(Path(CONFIG_DIR) / "sampler" / f"{sampler}.yaml")
        if steps:
            config.steps = 5
        by_hand = sample_by_hand(module, module.make_sampler(config), module.prediction)
        assert (images - by_hand).abs().max() <= 1  # uint8 rounding of float32 differences
        other = {"v": "x0", "x0": "v"}[module.prediction]  # the net read as the wrong target
        wrong = sample_by_hand(module, module.make_sampler(config), other)
        assert (images - wrong).abs().float().mean() > 5  # so the check above can fail
