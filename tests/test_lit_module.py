"""DiffusionModule: the loss, its weighting, context dropout, EMA, sampling, bad arguments."""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.lit_module import DiffusionModule
from diffusion_lab.models.ema import EMA

NET = {
    "_target_": "diffusion_lab.models.ContextUnet",
    "in_channels": 1,
    "n_feat": 8,
    "n_cfeat": 3,
    "height": 8,
}
SCHEDULE = {"_target_": "diffusion_lab.diffusion.make_schedule", "name": "linear", "timesteps": 20}
SAMPLER = {"_target_": "diffusion_lab.diffusion.DDIMSampler", "_partial_": True, "steps": 4}
OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


class RecordingNet(torch.nn.Module):
    """Predicts zeros and remembers every input; its loss is then E||eps||^2 per sample."""

    def __init__(self, n_cfeat: int = 3) -> None:
        super().__init__()
        self.n_cfeat, self.in_channels, self.height = n_cfeat, 1, 8
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, t, context):
        self.seen.append((t.detach().clone(), context.detach().clone()))
        return self.scale * x


def make_module(**overrides) -> DiffusionModule:
    arguments = {
        "net": NET,
        "schedule": SCHEDULE,
        "sampler": SAMPLER,
        "optimizer": OPTIMIZER,
        "class_names": ["a", "b", "c"],
    }
    arguments.update(overrides)
    return DiffusionModule(**arguments)


def test_min_snr_weights_each_sample_by_min_snr_gamma_over_snr():
    torch.manual_seed(0)
    module = make_module(net={"_target_": "test_lit_module.RecordingNet"}, loss_weighting="min_snr")
    images = torch.randn(64, 1, 8, 8)
    generator = torch.Generator().manual_seed(3)
    weighted = module._loss(module.net, images, torch.zeros(64, 3), generator)
    # the same draws again, to recompute the loss by hand: the net predicts 0, so loss = mean eps^2
    generator = torch.Generator().manual_seed(3)
    t = torch.randint(1, 21, (64,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    alpha_bar = module.schedule.alpha_bars[t]
    snr = alpha_bar / (1 - alpha_bar)
    weights = torch.minimum(snr, torch.tensor(5.0)) / snr
    expected = (noise.pow(2).mean(dim=(1, 2, 3)) * weights.float()).mean()
    torch.testing.assert_close(weighted, expected)
    assert module.net.seen[0][0].min() >= 1 / 20 and module.net.seen[0][0].max() <= 1.0


def test_context_dropout_zeroes_about_that_share_of_contexts():
    torch.manual_seed(0)
    module = make_module(net={"_target_": "test_lit_module.RecordingNet"}, context_dropout=0.3)
    contexts = torch.eye(3)[torch.randint(0, 3, (4000,))]
    module.training_step((torch.randn(4000, 1, 8, 8), contexts), 0)
    seen = module.net.seen[-1][1]
    dropped = (seen.abs().sum(dim=1) == 0).float().mean().item()
    assert dropped == pytest.approx(0.3, abs=0.03)
    kept = seen.abs().sum(dim=1) > 0
    torch.testing.assert_close(seen[kept], contexts[kept])


def test_ema_follows_the_weights_with_warmup():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.9)
    ema.update_parameters(net)  # first update copies
    history = [net.weight.detach().clone()]
    for _ in range(1, 30):
        with torch.no_grad():
            net.weight.add_(1.0)
        ema.update_parameters(net)
        history.append(net.weight.detach().clone())
    expected = history[0]
    for n, value in enumerate(history[1:], start=1):
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
    torch.testing.assert_close(ema.module.weight, expected)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_sampling_is_reproducible_and_uses_ema_by_default():
    module = make_module()
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(0.1)  # the live weights drift away from the EMA copy
    contexts = torch.eye(3)
    first = module.sample(contexts, generator=torch.Generator().manual_seed(0))
    again = module.sample(contexts, generator=torch.Generator().manual_seed(0))
    live = module.sample(contexts, generator=torch.Generator().manual_seed(0), use_ema=False)
    assert first.shape == (3, 1, 8, 8)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, live)
    assert module.net.training and module.ema.module.training  # modes restored after sampling


def test_checkpoint_round_trip_rebuilds_the_module(tmp_path):
    import lightning as L

    module = make_module()
    trainer = L.Trainer(max_epochs=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path / "module.ckpt"
    trainer.save_checkpoint(path)
    restored = DiffusionModule.load_from_checkpoint(path)
    assert restored.class_names == ["a", "b", "c"]
    assert restored.schedule.timesteps == 20
    for (name, a), b in zip(module.state_dict().items(), restored.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"context_dropout": 1.0}, r"context_dropout must be in \[0, 1\), got 1.0"),
        ({"loss_weighting": "p2"}, "unknown loss_weighting 'p2'"),
        ({"min_snr_gamma": 0}, "min_snr_gamma must be > 0"),
        ({"class_names": ["a", "b"]}, "2 class names"),
        ({"ema_decay": 1.0}, r"ema decay must be in \[0, 1\)"),
    ],
)
def test_bad_module_arguments_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_module(**overrides)
