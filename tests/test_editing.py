"""SDEdit and RePaint (diffusion/editing.py) against closed-form Gaussian data.

As in tests/test_samplers.py, data x0 ~ N(mu_c, s^2) per pixel has an exact, linear eps, so every
chain is affine in its start and its noise. SDEdit starts from x_{t0} = sqrt(ab_{t0}) x_g +
sqrt(1 - ab_{t0}) eps for a guide x_g, whose moments the tests propagate step by step with their
own float64 arithmetic; RePaint's jumps back up are q(x_{t_b} | x_{t_a}), affine too. The
probability-flow ODE maps x_t to x_0 = mu + s (x_t - sqrt(ab_t) mu) / sqrt(v_t) (tests/test_dpm_solver.py),
which an accurate solver started at t0 must reproduce per sample.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_samplers import (
    CLASS_MEANS,
    DATA_STD,
    GaussianEps,
    assert_moments,
    exact_eps_coefficients,
)

from diffusion_lab.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    NFECounter,
    make_schedule,
)
from diffusion_lab.diffusion.editing import (
    inpaint,
    repaint_nfe,
    repaint_path,
    sdedit,
    start_timestep,
)

SHAPE = (1, 2, 2)


class GaussianEpsAndX0(GaussianEps):
    """The exact model with ``eps_and_x0``: x0 = E[x0 | x_t] = mu + sqrt(ab) s^2 (x_t - sqrt(ab) mu)
    / v_t, defined at ab = 0 too (a zero-terminal-SNR schedule)."""

    def eps_and_x0(self, x, t, context):
        T = len(self.alpha_bars) - 1
        ab = self.alpha_bars[torch.round(t * T).long()].to(x.dtype).view(-1, 1, 1, 1)
        mu = (context.to(torch.float64) @ CLASS_MEANS).to(x.dtype).view(-1, 1, 1, 1)
        x0 = mu + ab.sqrt() * DATA_STD**2 * (x - ab.sqrt() * mu) / (ab * DATA_STD**2 + 1 - ab)
        return self(x, t, context), x0


def one_hot(n: int, class_index: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.full((n,), class_index), 2).double()


def draws(n: int, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=generator, dtype=torch.float64), generator


def data(n: int, class_index: int, seed: int) -> torch.Tensor:
    """n images of class ``class_index``: N(mu_c, s^2) per pixel."""
    noise, _ = draws(n, seed)
    return CLASS_MEANS[class_index].item() + DATA_STD * noise


def propagate(alpha_bars, moves, mu, eta, mean, var):
    """Mean and variance after DDIM(eta) steps (t > t_next) and forward jumps (t < t_next) along
    ``moves`` [(t, t_next), ...] from N(mean, var); eta = 1 over all steps is DDPM (posterior)."""
    for t, t_next in moves:
        ab, ab_next = alpha_bars[t], alpha_bars[t_next]
        if t_next > t:  # x_next = sqrt(ratio) x + sqrt(1 - ratio) z
            ratio = ab_next / ab
            mean, var = math.sqrt(ratio) * mean, ratio * var + 1 - ratio
            continue
        k, m = exact_eps_coefficients(ab, mu)
        sigma2 = eta**2 * (1 - ab_next) / (1 - ab) * (1 - ab / ab_next)
        coef_eps = -math.sqrt(ab_next * (1 - ab) / ab) + math.sqrt(max(1 - ab_next - sigma2, 0.0))
        a, b = math.sqrt(ab_next / ab) + coef_eps * k, coef_eps * m
        mean, var = a * mean + b, a * a * var + sigma2
    return mean, var


def chain(sampler, start_t):
    steps = sampler.timesteps_from(start_t)
    return list(zip(steps, steps[1:] + [0]))


# --- the chain started mid-way --------------------------------------------------------------
def test_timesteps_from_keeps_the_grid_below_the_start():
    schedule = make_schedule("linear", 500)
    ddim = DDIMSampler(schedule, steps=25)
    assert ddim.timesteps_from(None) == ddim.timesteps == ddim.timesteps_from(500)
    assert ddim.timesteps_from(300) == list(range(300, 0, -20))
    assert ddim.timesteps_from(310) == [310, *range(300, 0, -20)]  # off the grid: one step more
    assert ddim.timesteps_from(5) == [5]
    assert DDPMSampler(schedule).timesteps_from(3) == [3, 2, 1]
    for bad in (0, 501, 2.5, True):
        with pytest.raises(
            ValueError, match=r"start_t \(a timestep of T=500\) must be an integer >= 1 and <= 500"
        ):
            ddim.timesteps_from(bad)


def test_dpm_solver_order_one_from_an_off_grid_start_is_ddim():
    schedule = make_schedule("cosine", 500)
    guide, generator = draws(64, 1)
    context = one_hot(64, 0)
    outputs = []
    for sampler in (DPMSolverSampler(schedule, steps=10, order=1), DDIMSampler(schedule, steps=10)):
        generator.manual_seed(2)
        outputs.append(
            sdedit(sampler, GaussianEps(schedule.alpha_bars), guide, 0.33, context, 0, generator)
        )
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-11, atol=1e-11)


# --- SDEdit -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build",
    [
        lambda s: DDPMSampler(s, variance="posterior"),
        lambda s: DDIMSampler(s, steps=10, eta=0.5),
        lambda s: DPMSolverSampler(s, steps=10, order=3),
    ],
)
def test_strength_one_is_plain_sampling_from_the_same_noise(build):
    # at zero terminal SNR x_T = sqrt(0) x_g + sqrt(1) eps is the noise itself: equal bit for bit
    schedule = make_schedule("linear", 100, zero_terminal_snr=True)
    sampler = build(schedule)
    model = GaussianEpsAndX0(schedule.alpha_bars)
    guide, _ = draws(16, 3)
    noise, generator = draws(16, 4)
    context = one_hot(16, 1)
    edited = sdedit(sampler, model, guide, 1.0, context, 2.0, generator.manual_seed(5), noise)
    plain = sampler.sample(model, noise, context, 2.0, generator.manual_seed(5))
    assert torch.equal(edited, plain)


def test_strength_one_on_the_course_schedule_is_plain_sampling_up_to_alpha_bar_T():
    # the course's alpha_bar_T = 0.0064: x_T = 0.08 x_g + 0.9968 eps instead of eps; DDIM (eta 0)
    # with the exact eps is an affine map a x_T + b, so the images differ by a (x_T - eps)
    schedule = make_schedule("linear", 500)
    sampler = DDIMSampler(schedule, steps=25)
    model = GaussianEps(schedule.alpha_bars)
    guide = torch.full((64, *SHAPE), -1.0, dtype=torch.float64)
    noise, _ = draws(64, 6)
    context = one_hot(64, 0)
    edited = sdedit(sampler, model, guide, 1.0, context, noise=noise)
    plain = sampler.sample(model, noise, context)
    _, slope_squared = propagate(schedule.alpha_bars.tolist(), chain(sampler, None), 0.6, 0.0, 0, 1)
    alpha_bar_T = schedule.alpha_bars[-1].item()
    x_T = math.sqrt(alpha_bar_T) * guide + math.sqrt(1 - alpha_bar_T) * noise
    torch.testing.assert_close(edited - plain, math.sqrt(slope_squared) * (x_T - noise))
    assert (edited - plain).abs().max().item() < 0.1
    other = sampler.sample(model, draws(64, 7)[0], context)
    assert (other - plain).abs().mean().item() > 0.2


@pytest.mark.parametrize("strength", [1e-6, 0.002])
def test_strength_near_zero_returns_the_input(strength):
    schedule = make_schedule("linear", 500)
    assert start_timestep(strength, 500) == 1  # round(strength T) = 0 or 1: one step from t = 1
    guide = data(256, 1, seed=8)
    for sampler in (DDPMSampler(schedule), DDIMSampler(schedule, steps=25)):
        out = sdedit(sampler, GaussianEps(schedule.alpha_bars), guide, strength, one_hot(256, 0))
        # x_1 carries sqrt(beta_1) = 0.01 of noise; x0_hat pulls it 1e-4 towards the class mean
        torch.testing.assert_close(out, guide, rtol=0, atol=0.05)
        assert (out - guide).abs().mean().item() < 0.01


@pytest.mark.parametrize(
    ("build", "eta"),
    [
        (lambda s: DDPMSampler(s, variance="posterior"), 1.0),
        (lambda s: DDIMSampler(s, steps=20, eta=0.0), 0.0),
        (lambda s: DDIMSampler(s, steps=40, eta=0.6), 0.6),
    ],
)
@pytest.mark.parametrize("strength", [0.3, 0.7])
def test_class_swap_lands_on_the_closed_form_distribution(build, eta, strength):
    # guides of class 1 (mu = -0.4), edited with the context of class 0 (mu = 0.6)
    schedule = make_schedule("linear", 200)
    sampler = build(schedule)
    alpha_bars = schedule.alpha_bars.tolist()
    n = 20000
    guide = data(n, 1, seed=9)
    _, generator = draws(1, 10)
    model = GaussianEps(schedule.alpha_bars)
    out = sdedit(sampler, model, guide, strength, one_hot(n, 0), generator=generator)
    t0 = start_timestep(strength, 200)
    ab0, mu_guide = alpha_bars[t0], CLASS_MEANS[1].item()
    start_mean, start_var = math.sqrt(ab0) * mu_guide, ab0 * DATA_STD**2 + 1 - ab0
    mean, var = propagate(alpha_bars, chain(sampler, t0), 0.6, eta, start_mean, start_var)
    assert_moments(out, mean, var, out.numel())
    # and it is a swap: closer to class 0 than the guide, more so the higher the strength
    assert out.mean().item() > mu_guide + 0.3 * strength


@pytest.mark.parametrize("strength", [0.2, 0.5, 0.9])
def test_sdedit_with_an_accurate_ode_solver_is_the_exact_flow_from_t0(strength):
    schedule = make_schedule("linear", 500)
    sampler = DPMSolverSampler(schedule, steps=100, order=2)
    guide, noise = data(128, 1, seed=11), draws(128, 12)[0]
    out = sdedit(
        sampler, GaussianEps(schedule.alpha_bars), guide, strength, one_hot(128, 0), noise=noise
    )
    t0 = start_timestep(strength, 500)
    ab0 = schedule.alpha_bars[t0].item()
    x_t0 = math.sqrt(ab0) * guide + math.sqrt(1 - ab0) * noise
    exact = 0.6 + DATA_STD * (x_t0 - math.sqrt(ab0) * 0.6) / math.sqrt(ab0 * DATA_STD**2 + 1 - ab0)
    # DPM-Solver-2M's own error at 100 steps is a few 1e-3 (tests/test_dpm_solver.py)
    torch.testing.assert_close(out, exact, rtol=0, atol=5e-3)
    assert (out - guide).abs().mean().item() > 0.1


def test_sdedit_of_the_target_class_keeps_its_distribution():
    # a guide drawn from the class itself makes x_{t0} ~ q(x_{t0}): the chain ends on the data
    schedule = make_schedule("linear", 1000)
    guide = data(5000, 0, seed=13)
    sampler = DDPMSampler(schedule, variance="posterior")
    out = sdedit(sampler, GaussianEps(schedule.alpha_bars), guide, 0.5, one_hot(5000, 0))
    assert out.mean().item() == pytest.approx(0.6, abs=0.02)
    assert out.std().item() == pytest.approx(DATA_STD, abs=0.02)
    assert (out - guide).abs().mean().item() > 0.1  # re-drawn, not returned


@pytest.mark.parametrize("strength", [0, -0.1, 1.01, "0.5", True, float("nan")])
def test_bad_strength_is_named(strength):
    sampler = DDIMSampler(make_schedule("linear", 50), steps=5)
    guide = torch.zeros(2, *SHAPE)
    with pytest.raises(ValueError, match=r"strength must be (in|a number in) \(0, 1\]"):
        sdedit(sampler, GaussianEps(sampler.schedule.alpha_bars), guide, strength)


# --- RePaint ------------------------------------------------------------------------------------
def test_repaint_path_follows_get_schedule_jump():
    assert repaint_path(6, 2, 2) == [0, 1, 2, 3, 4, 3, 2, 3, 4, 5, 6, 5, 4, 5, 6]
    assert repaint_path(5, 10, 3) == [0, 1, 2, 3, 4, 5]  # no jump: jump_length beyond the chain
    assert repaint_path(3, 1, 1) == [0, 1, 2, 3]
    path = repaint_path(250, 10, 10)  # RePaint's defaults: 24 jump points, 9 extra passes each
    downs = sum(1 for a, b in zip(path, path[1:]) if b > a)
    assert downs == 250 + 24 * 9 * 10 and path[-1] == 250
    for name, args in (("jump_length", (0, 1)), ("resamplings", (2, 0))):
        with pytest.raises(ValueError, match=f"RePaint {name} must be an integer >= 1"):
            repaint_path(10, *args)


def half_mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, *SHAPE[1:], dtype=torch.float64)
    mask[..., 0, :] = 1.0  # keep the top row
    return mask


@pytest.mark.parametrize(
    "build",
    [
        lambda s: DDPMSampler(s),
        lambda s: DDIMSampler(s, steps=8, eta=0.0),
        lambda s: DPMSolverSampler(s, steps=8, order=2),
    ],
)
@pytest.mark.parametrize(("jump_length", "resamplings"), [(10, 1), (2, 3)])
def test_inpainting_keeps_the_known_pixels_and_counts_its_calls(build, jump_length, resamplings):
    schedule = make_schedule("linear", 40)
    sampler = build(schedule)
    image = data(32, 1, seed=14)
    model = NFECounter(GaussianEps(schedule.alpha_bars))
    generator = torch.Generator().manual_seed(15)
    out = inpaint(
        sampler, model, image, half_mask(), one_hot(32, 0), 1.5, generator, None, 1.0,
        jump_length, resamplings,
    )  # fmt: skip
    assert torch.equal(out[..., 0, :], image[..., 0, :])
    assert not torch.allclose(out[..., 1, :], image[..., 1, :], atol=0.1)
    assert model.calls == repaint_nfe(sampler, None, jump_length, resamplings)
    assert model.calls > sampler.nfe if resamplings > 1 else model.calls == sampler.nfe


@pytest.mark.parametrize(("jump_length", "resamplings"), [(10, 1), (5, 3)])
def test_inpainted_pixels_have_the_closed_form_distribution(jump_length, resamplings):
    # the exact eps acts pixel by pixel: a filled pixel follows the chain with its jumps alone
    schedule = make_schedule("linear", 60)
    sampler = DDIMSampler(schedule, steps=20, eta=1.0)
    n = 20000
    image = data(n, 1, seed=16)
    out = inpaint(
        sampler,
        GaussianEps(schedule.alpha_bars),
        image,
        half_mask(),
        one_hot(n, 0),
        generator=torch.Generator().manual_seed(17),
        strength=0.5,
        jump_length=jump_length,
        resamplings=resamplings,
    )
    times = sampler.timesteps_from(30) + [0]
    path = repaint_path(len(times) - 1, jump_length, resamplings)
    moves = [(times[a], times[b]) for a, b in zip(path, path[1:])]
    ab0 = schedule.alpha_bars[30].item()
    start_mean, start_var = math.sqrt(ab0) * -0.4, ab0 * DATA_STD**2 + 1 - ab0
    mean, var = propagate(schedule.alpha_bars.tolist(), moves, 0.6, 1.0, start_mean, start_var)
    filled = out[..., 1, :]
    assert_moments(filled, mean, var, filled.numel())


def test_bad_masks_are_named():
    schedule = make_schedule("linear", 20)
    sampler = DDIMSampler(schedule, steps=4)
    model = GaussianEps(schedule.alpha_bars)
    image = torch.zeros(2, *SHAPE, dtype=torch.float64)
    with pytest.raises(
        ValueError,
        match=r"mask of shape \(1, 1, 3, 3\) does not fit images of shape \(2, 1, 2, 2\)",
    ):
        inpaint(sampler, model, image, torch.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        inpaint(sampler, model, image, torch.full((1, 1, 2, 2), 2.0))
    with pytest.raises(
        ValueError, match=r"mask must be a tensor \(B or 1, 1 or C, H, W\), got \(2, 2\)"
    ):
        inpaint(sampler, model, image, torch.ones(2, 2))
