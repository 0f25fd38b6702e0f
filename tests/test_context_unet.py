"""The course's ContextUnet: shapes, size, determinism, gradients and input checks."""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.models import ContextUnet

COURSE_PARAMETERS = 1_480_771  # the course notebook's count at (3, 64, 5, 16)
SHORTCUT_PARAMETERS = 3 * 64 + 64  # the 1x1 conv the course rebuilt inside forward, now registered


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("channels", "height", "classes"), [(3, 16, 5), (3, 32, 10), (1, 16, 10), (1, 8, 3)]
)
def test_output_has_the_input_shape(channels, height, classes):
    net = ContextUnet(in_channels=channels, n_feat=16, n_cfeat=classes, height=height)
    x = torch.randn(4, channels, height, height)
    context = torch.eye(classes)[torch.arange(4) % classes]
    assert net(x, torch.rand(4), context).shape == x.shape
    assert net(x, torch.rand(4, 1, 1, 1), None).shape == x.shape


def test_parameter_count_is_the_course_plus_the_registered_shortcut():
    net = ContextUnet(in_channels=3, n_feat=64, n_cfeat=5, height=16)
    assert count(net) == COURSE_PARAMETERS + SHORTCUT_PARAMETERS


def test_eval_mode_is_deterministic():
    torch.manual_seed(0)
    net = ContextUnet(in_channels=3, n_feat=16, n_cfeat=5, height=16).eval()
    x, t, context = torch.randn(2, 3, 16, 16), torch.rand(2), torch.eye(5)[:2]
    torch.testing.assert_close(net(x, t, context), net(x, t, context), rtol=0, atol=0)


def test_context_and_time_change_the_output():
    torch.manual_seed(0)
    net = ContextUnet(in_channels=1, n_feat=16, n_cfeat=3, height=16).eval()
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([0.5])
    base = net(x, t, torch.tensor([[1.0, 0, 0]]))
    assert not torch.allclose(base, net(x, t, torch.tensor([[0.0, 1, 0]])))
    assert not torch.allclose(base, net(x, torch.tensor([0.1]), torch.tensor([[1.0, 0, 0]])))
    # None is the all-zero null context
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.zeros(1, 3)))


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_gradients_reach_every_parameter(norm):
    torch.manual_seed(0)
    net = ContextUnet(in_channels=3, n_feat=16, n_cfeat=5, height=16, norm=norm)
    x = torch.randn(4, 3, 16, 16)
    loss = net(x, torch.rand(4), torch.eye(5)[:4]).pow(2).mean()
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 18}, "height must be a positive multiple of 4"),
        ({"n_feat": 20}, "n_feat must be a positive multiple of 8, got 20"),
        ({"norm": "layer"}, "unknown norm 'layer'"),
    ],
)
def test_bad_construction_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ContextUnet(**kwargs)


def test_bad_forward_inputs_are_named():
    net = ContextUnet(in_channels=3, n_feat=16, n_cfeat=5, height=16)
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(
        ValueError, match=r"context must be \(B, n_cfeat\) = \(2, 5\), got \(2, 10\)"
    ):
        net(x, torch.rand(2), torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"x must be \(B, 3, 16, 16\), got \(2, 3, 32, 32\)"):
        net(torch.randn(2, 3, 32, 32), torch.rand(2))
    with pytest.raises(ValueError, match="t must hold one value per image"):
        net(x, torch.rand(3))
