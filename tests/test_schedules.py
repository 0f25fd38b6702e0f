"""Noise schedules against the papers' closed forms, computed here independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion_lab.diffusion.schedules import SCHEDULE_NAMES, make_schedule


def test_linear_matches_course_product():
    schedule = make_schedule("linear", 500)
    expected = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 500))
    assert schedule.alpha_bars.dtype == torch.float64
    assert schedule.alpha_bars.shape == (501,)
    np.testing.assert_allclose(schedule.alpha_bars[1:].numpy(), expected, rtol=1e-12)
    # the course's published endpoint (its alpha_bar[500] ~ 0.0063, same betas up to one step)
    assert schedule.alpha_bars[500].item() == pytest.approx(0.0063, abs=3e-4)


def test_cosine_matches_improved_ddpm_formula():
    T, s = 1000, 0.008

    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    schedule = make_schedule("cosine", T)
    expected = [f(t) / f(0) for t in range(T + 1)]
    # betas are clipped at 0.999 only at the very end; before that alpha_bar is f(t)/f(0) exactly
    unclipped = int((schedule.betas < 0.999).nonzero().max())
    np.testing.assert_allclose(
        schedule.alpha_bars[: unclipped + 1].numpy(), expected[: unclipped + 1], rtol=1e-9
    )
    assert schedule.betas.max().item() == pytest.approx(0.999)


def test_quadratic_and_sigmoid_span_the_beta_range():
    quadratic = make_schedule("quadratic", 100, 1e-4, 0.02)
    np.testing.assert_allclose(
        quadratic.betas[1:].numpy(), np.linspace(0.01, math.sqrt(0.02), 100) ** 2, rtol=1e-12
    )
    sigmoid = make_schedule("sigmoid", 100, 1e-4, 0.02)
    assert 1e-4 < sigmoid.betas[1].item() < 2e-4
    assert 0.0199 < sigmoid.betas[-1].item() < 0.02


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_schedule_is_monotone_and_starts_clean(name):
    schedule = make_schedule(name, 300)
    assert schedule.timesteps == 300
    for table in (schedule.betas, schedule.alphas, schedule.alpha_bars):
        assert table.shape == (301,) and table.dtype == torch.float64
    assert schedule.betas[0].item() == 0.0
    assert schedule.alpha_bars[0].item() == 1.0
    assert bool((schedule.betas[1:] > 0).all() and (schedule.betas[1:] < 1).all())
    assert bool((schedule.alpha_bars[1:] < schedule.alpha_bars[:-1]).all())
    np.testing.assert_allclose(
        schedule.alpha_bars.numpy(), np.cumprod(1.0 - schedule.betas.numpy()), rtol=1e-12
    )


def test_q_sample_uses_sqrt_of_one_minus_alpha_bar():
    schedule = make_schedule("linear", 500)
    t = torch.tensor([1, 250, 500])
    alpha_bar = schedule.alpha_bars[t].float()
    ones = torch.ones(3, 1, 2, 2)
    signal = schedule.q_sample(ones, t, torch.zeros_like(ones))
    noise = schedule.q_sample(torch.zeros_like(ones), t, ones)
    torch.testing.assert_close(signal[:, 0, 0, 0], alpha_bar.sqrt())
    torch.testing.assert_close(noise[:, 0, 0, 0], (1 - alpha_bar).sqrt())


def test_q_sample_has_the_forward_marginal():
    schedule = make_schedule("cosine", 200)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.7)
    t = torch.full((20000,), 120)
    xt = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=generator))
    alpha_bar = schedule.alpha_bars[120].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(alpha_bar) * 0.7, abs=0.03)
    assert xt.var().item() == pytest.approx(1 - alpha_bar, rel=0.05)


def test_posterior_variance_formula():
    schedule = make_schedule("linear", 50)
    variance = schedule.posterior_variance()
    ab, b = schedule.alpha_bars, schedule.betas
    for t in (1, 2, 25, 50):
        expected = (1 - ab[t - 1].item()) / (1 - ab[t].item()) * b[t].item()
        assert variance[t].item() == pytest.approx(expected, rel=1e-12)
    assert variance[1].item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "exponential", "timesteps": 10}, "unknown schedule 'exponential'"),
        ({"name": "linear", "timesteps": 0}, "timesteps T must be an integer >= 1"),
        ({"name": "linear", "timesteps": 2.5}, "timesteps T must be an integer"),
        ({"name": "linear", "timesteps": 10, "beta_start": 0.1, "beta_end": 0.01}, "beta_start"),
        ({"name": "linear", "timesteps": 10, "beta_end": 1.5}, "beta_end=1.5"),
    ],
)
def test_bad_schedule_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(**kwargs)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_zero_terminal_snr_ends_on_pure_noise_and_keeps_the_start(name):
    """Lin et al. 2023, Algorithm 1, recomputed here in numpy from the plain schedule."""
    plain = make_schedule(name, 300)
    rescaled = make_schedule(name, 300, zero_terminal_snr=True)
    assert rescaled.alpha_bars[-1].item() == 0.0  # exactly
    assert rescaled.betas[-1].item() == 1.0
    assert rescaled.snr(torch.tensor([300])).item() == 0.0
    root = np.sqrt(plain.alpha_bars[1:].numpy())
    expected = ((root - root[-1]) * root[0] / (root[0] - root[-1])) ** 2
    np.testing.assert_allclose(rescaled.alpha_bars[1:].numpy(), expected, rtol=1e-9, atol=1e-15)
    assert rescaled.alpha_bars[1].item() == pytest.approx(plain.alpha_bars[1].item(), rel=1e-12)
    assert bool((rescaled.betas[1:] > 0).all() and (rescaled.betas <= 1).all())
    assert make_schedule(name, 300, zero_terminal_snr=False).alpha_bars[-1].item() > 0.0


def test_zero_terminal_snr_needs_two_timesteps():
    with pytest.raises(ValueError, match="zero terminal SNR needs T >= 2"):
        make_schedule("linear", 1, zero_terminal_snr=True)
