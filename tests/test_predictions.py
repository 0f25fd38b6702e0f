"""Prediction targets (eps, v, x0): conversions, training targets, min-SNR weights, the eps-model
wrapper the samplers take, and sampling at zero terminal SNR; all against algebra done here."""

from __future__ import annotations

import math

import pytest
import torch
from test_samplers import CLASS_MEANS, DATA_STD, GaussianEps

from diffusion_lab.diffusion import DDIMSampler, DDPMSampler, DPMSolverSampler, make_schedule
from diffusion_lab.diffusion.predictions import (
    EpsModel,
    alpha_sigma,
    eps_and_x0_from_output,
    eps_from_v,
    eps_from_x0,
    min_snr_weight,
    training_target,
    v_from_eps_x0,
    x0_from_eps,
    x0_from_v,
)


def random_case(seed: int, T: int = 1000):
    """Random images, noise and timesteps (1..T-1, away from SNR 0 and infinity) on a random
    schedule, with x_t = alpha x0 + sigma eps."""
    generator = torch.Generator().manual_seed(seed)
    name = ["linear", "cosine", "quadratic", "sigmoid"][seed % 4]
    schedule = make_schedule(name, T)
    shape = (6, 3, 4, 4)
    x0 = torch.randn(shape, generator=generator, dtype=torch.float64)
    eps = torch.randn(shape, generator=generator, dtype=torch.float64)
    t = torch.randint(1, T, (shape[0],), generator=generator)
    alpha, sigma = alpha_sigma(schedule.alpha_bars, t, x0)
    return schedule, x0, eps, t, alpha, sigma, alpha * x0 + sigma * eps


@pytest.mark.parametrize("seed", range(24))
def test_conversions_invert_each_other(seed):
    schedule, x0, eps, t, alpha, sigma, x_t = random_case(seed)
    ab = schedule.alpha_bars[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))
    torch.testing.assert_close(alpha, ab.sqrt())
    v = v_from_eps_x0(eps, x0, alpha, sigma)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    # each round trip returns what went in
    torch.testing.assert_close(x0_from_v(x_t, v, alpha, sigma), x0)
    torch.testing.assert_close(eps_from_v(x_t, v, alpha, sigma), eps)
    torch.testing.assert_close(x0_from_eps(x_t, eps, alpha, sigma), x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(eps_from_x0(x_t, x0, alpha, sigma), eps, rtol=1e-6, atol=1e-6)
    # the net's output under each target gives back the same (eps, x0)
    for prediction, output in (("eps", eps), ("v", v), ("x0", x0)):
        torch.testing.assert_close(training_target(prediction, x0, eps, alpha, sigma), output)
        got_eps, got_x0 = eps_and_x0_from_output(prediction, output, x_t, alpha, sigma)
        torch.testing.assert_close(got_eps, eps, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got_x0, x0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_min_snr_weights_give_the_same_objective_for_every_target(seed):
    """Hang et al.: the min-SNR loss is min(SNR, gamma) ||x0 - x0_hat||^2; a prediction that is off
    by d in x0 is off by -d alpha / sigma in eps and by -d / sigma in v (same x_t), so each
    target's weighted MSE must equal that."""
    schedule, x0, eps, t, alpha, sigma, x_t = random_case(seed)
    x0_hat = x0 + 0.1 * torch.randn(
        x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype
    )
    eps_hat = (x_t - alpha * x0_hat) / sigma
    v_hat = alpha * eps_hat - sigma * x0_hat
    snr = schedule.snr(t)
    gamma = 5.0
    expected = snr.clamp(max=gamma) * ((x0 - x0_hat) ** 2).mean(dim=(1, 2, 3))
    for prediction, output in (("eps", eps_hat), ("v", v_hat), ("x0", x0_hat)):
        target = training_target(prediction, x0, eps, alpha, sigma)
        mse = ((output - target) ** 2).mean(dim=(1, 2, 3))
        weighted = min_snr_weight(prediction, snr, gamma) * mse
        torch.testing.assert_close(weighted, expected, rtol=1e-6, atol=1e-9)


class GaussianOutput(torch.nn.Module):
    """The exact Gaussian-data model of tests/test_samplers.py, outputting v or x0 instead of eps:
    E[eps | x_t] as there, E[x0 | x_t] = mu + sqrt(ab) s^2 (x_t - sqrt(ab) mu) / v_t."""

    def __init__(self, alpha_bars: torch.Tensor, prediction: str) -> None:
        super().__init__()
        self.alpha_bars, self.prediction = alpha_bars, prediction

    def forward(self, x, t, context):
        T = len(self.alpha_bars) - 1
        ab = self.alpha_bars[torch.round(t * T).long()].to(x.dtype).view(-1, 1, 1, 1)
        mu = (context.to(torch.float64) @ CLASS_MEANS).to(x.dtype).view(-1, 1, 1, 1)
        variance = ab * DATA_STD**2 + 1 - ab
        x0 = mu + ab.sqrt() * DATA_STD**2 * (x - ab.sqrt() * mu) / variance
        if self.prediction == "x0":
            return x0
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * mu) / variance
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0


@pytest.mark.parametrize("prediction", ["v", "x0"])
@pytest.mark.parametrize(
    "build",
    [
        lambda s: DDIMSampler(s, steps=10),
        lambda s: DDPMSampler(s, variance="posterior"),
        lambda s: DPMSolverSampler(s, steps=10, order=3),
    ],
)
def test_wrapped_v_and_x0_nets_sample_like_the_eps_net(prediction, build):
    schedule = make_schedule("linear", 100)
    wrapped = EpsModel(
        GaussianOutput(schedule.alpha_bars, prediction), prediction, schedule.alpha_bars
    )
    noise = torch.randn(8, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    context = torch.eye(2, dtype=torch.float64)[[0, 1] * 4]
    sampler = build(schedule)

    def sample(model):
        return sampler.sample(model, noise, context, 2.0, torch.Generator().manual_seed(1))

    torch.testing.assert_close(
        sample(wrapped), sample(GaussianEps(schedule.alpha_bars)), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda s: DDIMSampler(s, steps=100),
        lambda s: DDIMSampler(s, steps=250, eta=1.0),
        lambda s: DDPMSampler(s, variance="beta"),
        lambda s: DDPMSampler(s, variance="posterior"),
        lambda s: DPMSolverSampler(s, steps=25),
        lambda s: DPMSolverSampler(s, steps=25, order=3, eps_scale=1.001),
    ],
)
def test_zero_terminal_snr_samples_from_t_T_with_a_v_net(build):
    """At alpha_bar_T = 0 x_T is pure noise and x0_hat(x_T) = E[x0] = mu: samplers must take it
    from the v net (x0 = -v there) rather than divide by sqrt(alpha_bar_T) = 0."""
    schedule = make_schedule("linear", 500, zero_terminal_snr=True)
    net = EpsModel(GaussianOutput(schedule.alpha_bars, "v"), "v", schedule.alpha_bars)
    sampler = build(schedule)
    assert sampler.timesteps[0] == 500
    for class_index, mu in enumerate(CLASS_MEANS.tolist()):
        noise = torch.randn(
            4000, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
        )
        context = torch.eye(2, dtype=torch.float64)[[class_index] * 4000]
        out = sampler.sample(net, noise, context, generator=torch.Generator().manual_seed(3))
        assert torch.isfinite(out).all()
        assert out.mean().item() == pytest.approx(mu, abs=0.03)
        assert out.std().item() == pytest.approx(DATA_STD, abs=0.03)


def test_an_eps_net_at_zero_terminal_snr_is_refused_with_a_clear_message():
    schedule = make_schedule("linear", 50, zero_terminal_snr=True)
    noise = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"alpha_bar_t = 0 at t = 50.*v- or x0-prediction"):
        DDIMSampler(schedule, steps=5).sample(GaussianEps(schedule.alpha_bars), noise)


def test_eps_model_maps_t_over_T_back_to_the_timestep_and_passes_eps_through():
    schedule = make_schedule("cosine", 500)
    exact = GaussianOutput(schedule.alpha_bars, "v")
    wrapped = EpsModel(exact, "v", schedule.alpha_bars)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    context = torch.eye(2, dtype=torch.float64)[[0, 1, 0]]
    t = torch.tensor([1, 250, 499]) / 500
    torch.testing.assert_close(
        wrapped(x, t, context), GaussianEps(schedule.alpha_bars)(x, t, context)
    )
    identity = EpsModel(GaussianEps(schedule.alpha_bars), "eps", schedule.alpha_bars)
    torch.testing.assert_close(
        identity(x, t, context), GaussianEps(schedule.alpha_bars)(x, t, context)
    )
    with pytest.raises(ValueError, match="unknown prediction 'noise'; accepted: eps, v, x0"):
        EpsModel(exact, "noise", schedule.alpha_bars)
    assert math.isclose(wrapped.alpha_bars[-1].item(), schedule.alpha_bars[-1].item())
