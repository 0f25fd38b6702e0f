"""The modern UNet: shapes for several sizes, contexts (one-hot, mixes, null) and guidance, the time
embedding, refused sizes, learning, and real `model=unet` runs on the digits and on 32x32 images."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from test_train import compose_train, run_train

from diffusion_lab.diffusion import DDIMSampler, NFECounter, make_schedule
from diffusion_lab.models import UNet
from diffusion_lab.models.unet import sinusoidal_embedding
from diffusion_lab.train import build_module

SMALL = {"n_feat": 16, "num_res_blocks": 1}


@pytest.mark.parametrize(
    ("channels", "height", "classes", "mults", "attention"),
    [
        (1, 16, 10, (1, 2, 2), (8,)),
        (3, 32, 10, (1, 2, 2, 2), (16,)),
        (3, 8, 5, (1, 2), (4,)),
        (1, 24, 3, (1, 2, 2, 2), (24, 3)),
    ],
)
def test_output_has_the_input_shape_for_several_sizes(channels, height, classes, mults, attention):
    net = UNet(
        channels, classes, height, channel_mults=mults, attention_resolutions=attention, **SMALL
    )
    assert (net.in_channels, net.height, net.n_cfeat) == (channels, height, classes)
    x = torch.randn(3, channels, height, height)
    context = torch.eye(classes)[torch.arange(3) % classes]
    assert net(x, torch.rand(3), context).shape == x.shape
    assert net(x, torch.rand(3, 1, 1, 1), None).shape == x.shape


def trained_looking(net: UNet) -> UNet:
    """Zero-initialised output layers make a fresh net ignore its input; perturb every weight."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return net.eval()


def test_null_context_is_the_zero_vector_and_mixes_blend_class_embeddings():
    net = trained_looking(UNet(1, 4, 16, channel_mults=(1, 2), attention_resolutions=(8,), **SMALL))
    x, t = torch.randn(2, 1, 16, 16), torch.rand(2)
    zeros = torch.zeros(2, 4)
    torch.testing.assert_close(net(x, t, None), net(x, t, zeros), rtol=0, atol=0)
    one_hot = torch.eye(4)[[0, 2]]
    assert not torch.allclose(net(x, t, one_hot), net(x, t, zeros))
    # the context enters through a linear map without bias: a mix is the blend of its classes
    time_only = net.embed(t, None)
    a, b = torch.eye(4)[[0, 0]], torch.eye(4)[[2, 2]]
    mix = 0.7 * a + 0.3 * b
    blended = 0.7 * (net.embed(t, a) - time_only) + 0.3 * (net.embed(t, b) - time_only)
    torch.testing.assert_close(net.embed(t, mix) - time_only, blended, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(net(x, t, mix), net(x, t, a))


def test_guided_sampling_runs_one_batched_call_per_step():
    net = trained_looking(UNet(1, 3, 8, channel_mults=(1, 2), attention_resolutions=(), **SMALL))
    sampler = DDIMSampler(make_schedule("linear", 50), steps=5)
    counter = NFECounter(net)
    images = sampler.sample(counter, torch.randn(4, 1, 8, 8), torch.eye(3)[[0, 1, 2, 0]], 2.0)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
    assert counter.calls == 5


def test_sinusoidal_embedding_is_the_transformer_formula():
    t = torch.tensor([0.0, 3.0, 250.0])
    dim = 6
    got = sinusoidal_embedding(t, dim)
    for row, value in enumerate(t.tolist()):
        frequencies = [10000 ** (-i / 3) for i in range(3)]
        expected = [math.cos(value * w) for w in frequencies] + [
            math.sin(value * w) for w in frequencies
        ]
        torch.testing.assert_close(got[row], torch.tensor(expected))
    assert sinusoidal_embedding(t, 7).shape == (3, 7)


def test_time_reaches_the_output():
    net = trained_looking(UNet(1, 3, 8, channel_mults=(1, 2), attention_resolutions=(), **SMALL))
    x, context = torch.randn(1, 1, 8, 8), torch.eye(3)[:1]
    assert not torch.allclose(
        net(x, torch.tensor([0.1]), context), net(x, torch.tensor([0.9]), context)
    )


def test_it_learns_a_fixed_batch():
    torch.manual_seed(0)
    net = UNet(1, 3, 8, channel_mults=(1, 2), attention_resolutions=(4,), dropout=0.0, **SMALL)
    x, t, context = torch.randn(8, 1, 8, 8), torch.rand(8), torch.eye(3)[torch.arange(8) % 3]
    target = torch.randn(8, 1, 8, 8)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = (net(x, t, context) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_dropout_is_on_in_training_and_off_in_eval():
    net = trained_looking(
        UNet(1, 3, 8, channel_mults=(1, 2), attention_resolutions=(), dropout=0.5, **SMALL)
    )
    x, t, context = torch.randn(2, 1, 8, 8), torch.rand(2), torch.eye(3)[:2]
    torch.testing.assert_close(net(x, t, context), net(x, t, context), rtol=0, atol=0)
    net.train()
    assert not torch.allclose(net(x, t, context), net(x, t, context))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"height": 20, "channel_mults": (1, 2, 2, 2)},
            r"height 20 is not divisible by 2\^\(levels - 1\) = 8",
        ),
        ({"height": 4, "channel_mults": (1, 2, 2, 2)}, "height 4 is not divisible"),
        (
            {"attention_resolutions": (16, 3)},
            r"attention_resolutions \[3\] are not reached.*\[16, 8, 4\]",
        ),
        ({"channel_mults": ()}, "channel_mults must be positive integers"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"n_cfeat": 0}, "need in_channels, n_cfeat, n_feat and num_res_blocks >= 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"in_channels": 1, "n_cfeat": 3, "height": 16, "channel_mults": (1, 2, 2), **SMALL}
    with pytest.raises(ValueError, match=message):
        UNet(**{**arguments, **kwargs})


def test_bad_inputs_are_named():
    net = UNet(1, 3, 8, channel_mults=(1, 2), attention_resolutions=(), **SMALL)
    with pytest.raises(ValueError, match=r"x must be \(B, 1, 8, 8\), got \(2, 1, 16, 16\)"):
        net(torch.randn(2, 1, 16, 16), torch.rand(2), None)
    with pytest.raises(ValueError, match=r"context must be \(B, n_cfeat\) = \(2, 3\)"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="t must hold one value per image"):
        net(torch.randn(2, 1, 8, 8), torch.rand(3), None)


def test_model_unet_and_the_cifar10_preset_compose(tmp_path):
    module = build_module(compose_train(tmp_path, "model=unet"))
    assert isinstance(module.net, UNet) and module.image_shape == (1, 16, 16)
    assert module.num_classes == 10
    cfg = compose_train(tmp_path, "experiment=cifar10_unet")
    assert (cfg.model.n_feat, list(cfg.model.channel_mults), cfg.model.num_res_blocks) == (
        128,
        [1, 2, 2, 2],
        2,
    )
    assert (list(cfg.model.attention_resolutions), cfg.model.dropout) == ([16], 0.1)
    assert (cfg.scheduler.name, cfg.scheduler.timesteps) == ("linear", 1000)
    module = build_module(cfg)
    assert module.image_shape == (3, 32, 32) and module.num_classes == 10
    # the README's figure, to the digit it prints (DDPM's own net, without the context: 35.7M)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (figure,) = re.findall(r"dropout 0\.1, ([0-9.]+)M parameters", readme)
    count = sum(p.numel() for p in module.net.parameters())
    assert f"{count / 1e6:.1f}" == figure == "38.3"


@pytest.mark.slow
def test_model_unet_trains_on_the_digits_and_on_32x32_images(tmp_path, cifar10_root):
    for name, extra in [
        ("digits", []),
        (
            "cifar10",
            [
                "data=cifar10",
                f"data.source.root={cifar10_root}",
                "data.source.verify_checksums=false",
            ],
        ),
    ]:
        run_dir = tmp_path / name
        run_train(run_dir, "model=unet", *extra, "logger=csv", "+trainer.fast_dev_run=true")
        assert (run_dir / "samples" / "epoch_000.png").is_file()
