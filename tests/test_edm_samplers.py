"""EDM's Euler and Heun, Karras spacing, fractional timesteps and DPM-Solver++(2M) SDE against
closed-form Gaussian data (as tests/test_samplers.py and tests/test_dpm_solver.py).

For x0 ~ N(mu, s^2) per pixel, x_sigma = x0 + sigma eps ~ N(mu, s^2 + sigma^2), so the exact
denoiser and noise predictor at any noise level sigma (alpha_bar = 1 / (1 + sigma^2)) are

    x0_hat = mu + sqrt(ab) s^2 (x_vp - sqrt(ab) mu) / v,   eps_hat = sqrt(1 - ab) (x_vp - sqrt(ab) mu) / v,

v = ab s^2 + 1 - ab, and the probability-flow ODE keeps z-scores: from sigma_a to sigma_b it maps
x_sigma to mu + sqrt(s^2 + sigma_b^2) / sqrt(s^2 + sigma_a^2) (x_sigma - mu). The samplers here
evaluate the net at fractional t; the exact model below turns t / T back into sigma with its own
numpy log-sigma interpolation, independent of diffusion_lab.diffusion.noise_levels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_samplers import CLASS_MEANS, DATA_STD

from diffusion_lab.diffusion import (
    DDIMSampler,
    DPMSolverSampler,
    EulerSampler,
    HeunSampler,
    NFECounter,
    make_schedule,
)
from diffusion_lab.diffusion.noise_levels import NoiseLevels, alpha_bars_at
from diffusion_lab.diffusion.predictions import EpsModel


def table_sigmas(schedule) -> np.ndarray:
    alpha_bars = schedule.alpha_bars.numpy()
    with np.errstate(divide="ignore"):
        return np.sqrt((1 - alpha_bars) / alpha_bars)


class ExactGaussian:
    """The exact eps (and x0) of x0 ~ N(context @ CLASS_MEANS, DATA_STD^2) at fractional t."""

    def __init__(self, schedule, output: str = "eps") -> None:
        self.T = schedule.timesteps
        self.log_sigmas = np.log(table_sigmas(schedule)[1:])  # t = 1..T
        self.output = output
        self.batch_sizes: list[int] = []

    def alpha_bar(self, t_over_T: torch.Tensor) -> torch.Tensor:
        t = t_over_T.double().numpy() * self.T
        if np.isinf(self.log_sigmas[-1]):  # zero terminal SNR: the line is at inf above T - 1
            log_sigma = np.interp(t, np.arange(1, self.T), self.log_sigmas[:-1])
            log_sigma = np.where(t > self.T - 1 + 1e-9, np.inf, log_sigma)
        else:
            log_sigma = np.interp(t, np.arange(1, self.T + 1), self.log_sigmas)
        return torch.from_numpy(1 / (1 + np.exp(2 * log_sigma))).view(-1, 1, 1, 1)

    def eps_and_x0(self, x, t, context):
        self.batch_sizes.append(x.shape[0])
        ab = self.alpha_bar(t).to(x.dtype)
        mu = (context.double() @ CLASS_MEANS).to(x.dtype).view(-1, 1, 1, 1)
        variance = ab * DATA_STD**2 + 1 - ab
        centred = (x - ab.sqrt() * mu) / variance
        return (1 - ab).sqrt() * centred, mu + ab.sqrt() * DATA_STD**2 * centred

    def __call__(self, x, t, context):
        eps, x0 = self.eps_and_x0(x, t, context)
        if self.output == "eps":
            return eps
        ab = self.alpha_bar(t).to(x.dtype)
        if self.output == "x0":
            return x0
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0  # v


class EpsOnly:
    """An eps-model without eps_and_x0 (the samplers compute x0 themselves)."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x, t, context):
        return self.model(x, t, context)


def inputs(n=64, seed=0, context_class=0):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 1, 2, 2, generator=generator, dtype=torch.float64)
    context = torch.nn.functional.one_hot(torch.full((n,), context_class), 2).double()
    return noise, context


def sample(sampler, model=None, n=64, seed=0, context_class=0, **kwargs):
    model = model or EpsOnly(ExactGaussian(sampler.schedule))
    noise, context = inputs(n, seed, context_class)
    generator = torch.Generator().manual_seed(seed + 1)
    return sampler.sample(model, noise, context, generator=generator, **kwargs), noise


def flow(x_sigma: torch.Tensor, mu: float, sigma_from: float, sigma_to: float) -> torch.Tensor:
    """The exact probability-flow map of the Gaussian data between two noise levels."""
    ratio = math.sqrt(DATA_STD**2 + sigma_to**2) / math.sqrt(DATA_STD**2 + sigma_from**2)
    return mu + ratio * (x_sigma - mu)


def error_at_sigma_min(sampler, mu=0.6) -> float:
    """Max distance to the exact flow at the last noise level (before the final step onto 0,
    whose size does not shrink with N: sigma_min stays sigma_1)."""
    model = EpsOnly(ExactGaussian(sampler.schedule))
    noise, context = inputs(128, context_class=0)
    states = [x for _, x in sampler.iter_steps(model, noise, context)]
    sigma_max, sigma_min = sampler.sigmas[0], sampler.sigmas[-1]
    exact = flow(noise * math.sqrt(1 + sigma_max**2), mu, sigma_max, sigma_min)
    return (states[-2] * math.sqrt(1 + sigma_min**2) - exact).abs().max().item()


def final_error(sampler, mu=0.6) -> float:
    out, noise = sample(sampler, n=128)
    sigma_max = table_sigmas(sampler.schedule)[-1]  # every grid here starts at sigma_T
    exact = flow(noise * math.sqrt(1 + sigma_max**2), mu, sigma_max, 0.0)
    return (out - exact).abs().max().item()


# --- the grid and fractional timesteps --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "steps", "rho", "bounds"),
    [
        ("linear", 10, 7.0, (None, None)),
        ("cosine", 18, 3.0, (0.05, 20.0)),
        ("linear", 2, 7.0, (None, None)),
    ],
)
def test_karras_grid_is_the_formula_over_the_schedule_range(name, steps, rho, bounds):
    schedule = make_schedule(name, 1000)
    sampler = EulerSampler(schedule, steps=steps, rho=rho, sigma_min=bounds[0], sigma_max=bounds[1])
    sigmas = table_sigmas(schedule)
    low = bounds[0] if bounds[0] is not None else sigmas[1]
    high = bounds[1] if bounds[1] is not None else sigmas[-1]
    ramp = np.linspace(0, 1, steps)
    expected = (high ** (1 / rho) + ramp * (low ** (1 / rho) - high ** (1 / rho))) ** rho
    np.testing.assert_allclose(sampler.sigmas, expected, rtol=1e-12)
    # each level's timestep: log sigma interpolated in the table (numpy's interp on the inverse)
    t = np.interp(np.log(expected), np.log(sigmas[1:]), np.arange(1, 1001))
    np.testing.assert_allclose(sampler.timesteps, t, rtol=1e-10, atol=1e-9)
    if bounds == (None, None):
        assert sampler.timesteps[0] == 1000 and sampler.timesteps[-1] == 1
    assert all(a > b for a, b in zip(sampler.timesteps, sampler.timesteps[1:]))


def test_fractional_t_interpolates_log_sigma_at_integers_and_midpoints():
    schedule = make_schedule("cosine", 200)
    levels, sigmas = NoiseLevels(schedule.alpha_bars), table_sigmas(schedule)
    for t in (1, 2, 57, 199, 200):
        assert levels.sigma_at(float(t)) == pytest.approx(sigmas[t], rel=1e-14)
        assert levels.t_from_sigma(sigmas[t]) == pytest.approx(t, abs=1e-9)
        assert levels.alpha_bar_at(float(t)) == schedule.alpha_bars[t].item()
    for t in (1, 57, 199):  # the midpoint of a log-linear segment is the geometric mean
        middle = math.sqrt(sigmas[t] * sigmas[t + 1])
        assert levels.sigma_at(t + 0.5) == pytest.approx(middle, rel=1e-12)
        assert levels.t_from_sigma(middle) == pytest.approx(t + 0.5, abs=1e-9)
        assert levels.alpha_bar_at(t + 0.5) == pytest.approx(1 / (1 + middle**2), rel=1e-12)
    assert levels.sigma_at(0.0) == 0.0 and levels.t_from_sigma(0.0) == 0.0
    # the tensor version the v/x0 wrapper uses: the same values from t / T in float64, and the
    # table itself at integer t sent as float32 t / T (which misses the integer by an ulp)
    t = torch.tensor([1.0, 57.5, 123.25, 200.0], dtype=torch.float64)
    expected = [levels.alpha_bar_at(v) for v in t.tolist()]
    np.testing.assert_allclose(
        alpha_bars_at(schedule.alpha_bars, t / 200).numpy(), expected, rtol=1e-12
    )
    integers = torch.arange(0, 201)
    got = alpha_bars_at(schedule.alpha_bars, (integers / 200).float())
    assert torch.equal(got, schedule.alpha_bars[integers])
    with pytest.raises(ValueError, match=r"sigma = 1e-05 lies outside the schedule's levels"):
        levels.t_from_sigma(1e-5)


def test_zero_terminal_snr_grid_starts_on_pure_noise():
    schedule = make_schedule("linear", 500, zero_terminal_snr=True)
    sampler = HeunSampler(schedule, steps=8)
    sigmas = table_sigmas(schedule)
    assert sampler.sigmas[0] == math.inf and sampler.timesteps[0] == 500
    ramp = np.linspace(0, 1, 7)
    high, low = sigmas[499] ** (1 / 7), sigmas[1] ** (1 / 7)
    np.testing.assert_allclose(sampler.sigmas[1:], (high + ramp * (low - high)) ** 7, rtol=1e-12)
    assert sampler.nfe == 2 * 8 - 2  # the steps from sigma = inf and onto 0 are Euler steps


# --- Euler, Heun and DPM-Solver++ on the exact model --------------------------------------------


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [5, 25])
def test_euler_on_the_uniform_grid_is_ddim_with_eta_zero(schedule_name, steps):
    schedule = make_schedule(schedule_name, 500)
    euler, _ = sample(EulerSampler(schedule, steps=steps, spacing="uniform"), seed=4)
    ddim, _ = sample(DDIMSampler(schedule, steps=steps, eta=0.0), seed=4)
    torch.testing.assert_close(euler, ddim, rtol=1e-12, atol=1e-12)
    assert (
        EulerSampler(schedule, steps=steps, spacing="uniform").timesteps
        == DDIMSampler(schedule, steps=steps).timesteps
    )


def test_first_order_dpm_solver_on_karras_levels_is_euler():
    schedule = make_schedule("linear", 1000)
    euler, _ = sample(EulerSampler(schedule, steps=12))
    dpm, _ = sample(DPMSolverSampler(schedule, steps=12, order=1, spacing="karras"))
    torch.testing.assert_close(dpm, euler, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_heun_converges_at_second_order_and_euler_at_first(schedule_name):
    """Halving the step (N - 1 = 20 -> 40 -> 80 intervals of the rho-warped grid) divides Heun's
    error by about 4 and Euler's by about 2 (measured here: 4.1-4.6 and 1.9-2.0)."""
    schedule = make_schedule(schedule_name, 1000)
    heun = [error_at_sigma_min(HeunSampler(schedule, steps=n)) for n in (21, 41, 81)]
    euler = [error_at_sigma_min(EulerSampler(schedule, steps=n)) for n in (21, 41, 81)]
    for a, b in zip(heun, heun[1:]):
        assert 3.5 < a / b < 5.0, heun
    for a, b in zip(euler, euler[1:]):
        assert 1.8 < a / b < 2.2, euler
    assert heun[-1] < 0.25 * euler[-1]


@pytest.mark.parametrize("steps", [25, 40])
def test_heun_beats_euler_at_equal_nfe(steps):
    """From about 18 steps on; with fewer, Heun's large first steps from sigma_T = 157 (linear,
    T = 1000) cost more than its second order gains on this data (diffusers' Heun agrees)."""
    schedule = make_schedule("linear", 1000)
    heun = HeunSampler(schedule, steps=steps)
    euler = EulerSampler(schedule, steps=heun.nfe)
    assert heun.nfe == euler.nfe == 2 * steps - 1
    assert final_error(heun) < 0.5 * final_error(euler)


def test_dpm_solver_2m_on_karras_levels_beats_first_order():
    schedule = make_schedule("cosine", 1000)
    first = final_error(DPMSolverSampler(schedule, steps=10, order=1, spacing="karras"))
    second = final_error(DPMSolverSampler(schedule, steps=10, order=2, spacing="karras"))
    assert second < 0.5 * first


@pytest.mark.parametrize(
    "build",
    [
        lambda s: HeunSampler(s, steps=100, churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.0),
        lambda s: DPMSolverSampler(s, steps=100, spacing="karras", sde=True),
        lambda s: DPMSolverSampler(s, steps=100, sde=True),
    ],
)
def test_stochastic_samplers_land_on_the_data_distribution(build):
    """With enough steps. (First-order stochastic chains converge slowly here: Euler with churn 80
    reaches std 0.476 at 400 steps, DDIM eta 1 0.490; so Euler's churn is checked step by step
    in test_one_churned_euler_step_is_algorithm_2 instead.)"""
    sampler = build(make_schedule("linear", 1000))
    for class_index, mu in enumerate(CLASS_MEANS.tolist()):
        out, _ = sample(sampler, n=5000, context_class=class_index, seed=class_index)
        assert out.mean().item() == pytest.approx(mu, abs=0.02)
        assert out.std().item() == pytest.approx(DATA_STD, abs=0.02)
    # random through the generator: reproducible with a seed, different with another
    first, _ = sample(sampler, n=8, seed=5)
    again, _ = sample(sampler, n=8, seed=5)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    noise, context = inputs(8, seed=5)
    model = EpsOnly(ExactGaussian(sampler.schedule))
    other = sampler.sample(model, noise, context, generator=torch.Generator().manual_seed(99))
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_first_order_dpm_solver_sde_is_ddim_with_eta_one(schedule_name):
    """sigma_t^2 (1 - e^{-2h}) = (1 - ab_t) / (1 - ab_s) (1 - ab_s / ab_t): DDIM's eta = 1 variance,
    and the same mean; the noise comes from the generator in the same order."""
    schedule = make_schedule(schedule_name, 1000)
    dpm = DPMSolverSampler(schedule, steps=15, order=1, sde=True)
    ddim = DDIMSampler(schedule, steps=15, eta=1.0)
    torch.testing.assert_close(sample(dpm)[0], sample(ddim)[0], rtol=1e-10, atol=1e-10)


def test_churn_outside_its_sigma_range_or_zero_changes_nothing():
    schedule = make_schedule("linear", 500)
    plain, _ = sample(HeunSampler(schedule, steps=10))
    outside, _ = sample(HeunSampler(schedule, steps=10, churn=30.0, s_tmin=500.0))
    torch.testing.assert_close(outside, plain, rtol=0, atol=0)
    churned, _ = sample(HeunSampler(schedule, steps=10, churn=30.0))
    assert not torch.allclose(churned, plain)


def test_one_churned_euler_step_is_algorithm_2():
    """Two levels, churn on the first: x_hat = x + sqrt(s_hat^2 - s^2) S_noise z, then Euler from
    s_hat onto sigma_1 and onto 0; recomputed here from the same z and the exact model."""
    schedule = make_schedule("linear", 1000)
    churn, s_noise = 0.6, 1.003
    sampler = EulerSampler(
        schedule, steps=2, churn=churn, s_tmin=1.0, s_noise=s_noise, sigma_max=5.0
    )
    noise, context = inputs(16)
    out = sampler.sample(
        EpsOnly(ExactGaussian(schedule)), noise, context, generator=torch.Generator().manual_seed(3)
    )
    z = torch.randn(noise.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s0, s1 = 5.0, table_sigmas(schedule)[1]
    s_hat = s0 * (1 + min(churn / 2, math.sqrt(2) - 1))
    x = noise * math.sqrt(1 + s0**2) + math.sqrt(s_hat**2 - s0**2) * s_noise * z
    mu = 0.6
    for s, s_next in ((s_hat, s1), (s1, 0.0)):  # exact D in sigma space: mu + s^2/(s^2+sig^2)(x-mu)
        denoised = mu + DATA_STD**2 / (DATA_STD**2 + s**2) * (x - mu)
        x = x + (s_next - s) * (x - denoised) / s
    torch.testing.assert_close(out, x, rtol=1e-9, atol=1e-9)


# --- the shared machinery: guidance, targets, eps scaling, zero terminal SNR, NFE --------------

BUILDERS = [
    lambda s, **kw: EulerSampler(s, steps=8, **kw),
    lambda s, **kw: HeunSampler(s, steps=8, churn=5.0, **kw),
    lambda s, **kw: DPMSolverSampler(s, steps=8, spacing="karras", sde=True, **kw),
]


class Guided:
    """(1 + w) eps(x, c) - w eps(x, null), computed here: what guidance must feed the step."""

    def __init__(self, model, w) -> None:
        self.model, self.w = model, w

    def __call__(self, x, t, context):
        null = torch.zeros_like(context)
        return (1 + self.w) * self.model(x, t, context) - self.w * self.model(x, t, null)


@pytest.mark.parametrize("build", BUILDERS)
def test_guidance_is_the_classifier_free_combination_in_one_batch(build):
    schedule = make_schedule("linear", 200)
    sampler = build(schedule)
    exact = ExactGaussian(schedule)
    noise, context = inputs(6)
    context[1::2] = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def run(model, w):
        generator = torch.Generator().manual_seed(7)
        return sampler.sample(model, noise, context, guidance_scale=w, generator=generator)

    counter = NFECounter(EpsOnly(exact))
    guided = run(counter, 2.0)
    assert counter.calls == sampler.nfe and set(exact.batch_sizes) == {12}  # one batched forward
    expected = run(Guided(EpsOnly(exact), 2.0), 0.0)
    torch.testing.assert_close(guided, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(guided, run(EpsOnly(exact), 0.0))


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_v_and_x0_nets_sample_as_their_eps_model(build, prediction):
    """The wrapper converts at the fractional t the sampler visits (alpha_bar from log sigma)."""
    schedule = make_schedule("cosine", 500)
    sampler = build(schedule)
    assert any(not float(t).is_integer() for t in sampler.timesteps)
    net = EpsModel(ExactGaussian(schedule, output=prediction), prediction, schedule.alpha_bars)
    wrapped, _ = sample(sampler, net)
    direct, _ = sample(sampler, EpsOnly(ExactGaussian(schedule)))
    torch.testing.assert_close(wrapped, direct, rtol=1e-9, atol=1e-9)


class ScaledEps:
    def __init__(self, model, b) -> None:
        self.model, self.b = model, b

    def __call__(self, x, t, context):
        return self.model(x, t, context) / self.b


@pytest.mark.parametrize("build", BUILDERS)
def test_eps_scaling_steps_with_eps_divided_by_b(build):
    schedule = make_schedule("linear", 100)
    model = EpsOnly(ExactGaussian(schedule))
    scaled, _ = sample(build(schedule, eps_scale=1.05), model)
    expected, _ = sample(build(schedule), ScaledEps(model, 1.05))
    torch.testing.assert_close(scaled, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(scaled, sample(build(schedule), model)[0])


@pytest.mark.parametrize("build", BUILDERS)
def test_clipping_keeps_x0_in_range(build):
    sampler = build(make_schedule("linear", 100), clip_denoised=True)

    def wild(x, t, context):
        return -5 * torch.ones_like(x)  # predicts x0 far outside [-1, 1]

    out = sampler.sample(wild, torch.zeros(2, 1, 2, 2, dtype=torch.float64))
    assert out.abs().max().item() <= 1 + 1e-9


def test_euler_at_zero_terminal_snr_on_the_uniform_grid_is_ddim():
    schedule = make_schedule("linear", 500, zero_terminal_snr=True)
    net = EpsModel(ExactGaussian(schedule, output="v"), "v", schedule.alpha_bars)
    euler, _ = sample(EulerSampler(schedule, steps=10, spacing="uniform"), net)
    ddim, _ = sample(DDIMSampler(schedule, steps=10), net)
    torch.testing.assert_close(euler, ddim, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: HeunSampler(s, steps=80),
        lambda s: HeunSampler(s, steps=80, churn=20.0),
        lambda s: DPMSolverSampler(s, steps=80, spacing="karras", sde=True),
    ],
)
def test_zero_terminal_snr_starts_from_pure_noise_with_a_v_net(build):
    """At alpha_bar_T = 0 the chain starts on sigma = inf, where only the v net gives x0."""
    schedule = make_schedule("linear", 500, zero_terminal_snr=True)
    sampler = build(schedule)
    net = NFECounter(EpsModel(ExactGaussian(schedule, output="v"), "v", schedule.alpha_bars))
    for class_index, mu in enumerate(CLASS_MEANS.tolist()):
        out, _ = sample(sampler, net, n=4000, context_class=class_index, seed=2)
        assert torch.isfinite(out).all()
        assert out.mean().item() == pytest.approx(mu, abs=0.03)
        assert out.std().item() == pytest.approx(DATA_STD, abs=0.03)
    assert net.calls == 2 * sampler.nfe


def test_deterministic_zero_terminal_snr_follows_the_exact_flow_from_pure_noise():
    """From sigma = inf the ODE maps x_T = z to mu + s z; Heun's error shrinks ~4x per doubling."""
    schedule = make_schedule("linear", 500, zero_terminal_snr=True)
    net = EpsModel(ExactGaussian(schedule, output="v"), "v", schedule.alpha_bars)
    errors = []
    for steps in (40, 80):
        out, noise = sample(HeunSampler(schedule, steps=steps), net)
        errors.append((out - (0.6 + DATA_STD * noise)).abs().max().item())
    assert errors[1] < 0.02 and errors[1] < 0.3 * errors[0]


def test_nfe_timesteps_and_trajectory():
    schedule = make_schedule("linear", 100)
    for sampler, nfe in (
        (EulerSampler(schedule, steps=7), 7),
        (HeunSampler(schedule, steps=7), 13),
        (HeunSampler(schedule, steps=1), 1),
        (HeunSampler(schedule, steps=7, churn=10.0), 13),
    ):
        counter = NFECounter(EpsOnly(ExactGaussian(schedule)))
        seen = []
        noise, context = inputs(3)
        sampler.sample(
            counter, noise, context, on_step=lambda i, n, t, x, seen=seen: seen.append((i, n, t))
        )
        assert counter.calls == sampler.nfe == nfe
        after = sampler.timesteps[1:] + [0]
        assert seen == [(i, sampler.steps, t) for i, t in enumerate(after, start=1)]
    sampler = HeunSampler(schedule, steps=7)
    model = EpsOnly(ExactGaussian(schedule))
    frames, times = sampler.trajectory(model, noise, every=3, context=context)
    assert times == [sampler.timesteps[0], sampler.timesteps[3], sampler.timesteps[6], 0]
    torch.testing.assert_close(frames[-1], sampler.sample(model, noise, context))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda s: EulerSampler(s, steps=0),
            r"Euler steps \(T=100\) must be an integer >= 1 and <= 100, got 0",
        ),
        (
            lambda s: HeunSampler(s, steps=2.5),
            r"Heun steps \(T=100\) must be an integer >= 1 and <= 100, got 2.5",
        ),
        (
            lambda s: EulerSampler(s, spacing="log"),
            "spacing must be one of karras, uniform; got 'log'",
        ),
        (
            lambda s: HeunSampler(s, rho=0.0),
            r"rho \(Karras et al.: 7\) must be a finite number > 0, got 0.0",
        ),
        (lambda s: HeunSampler(s, rho=-7), "got -7"),
        (lambda s: EulerSampler(s, churn=-1.0), r"churn must be a finite number >= 0 .*got -1.0"),
        (lambda s: EulerSampler(s, churn=math.inf), "churn must be a finite number >= 0"),
        (lambda s: HeunSampler(s, s_noise=0.0), r"s_noise must be a finite number > 0 .*got 0.0"),
        (
            lambda s: HeunSampler(s, s_tmin=2.0, s_tmax=1.0),
            "s_tmax must be a number >= s_tmin, got 1.0",
        ),
        (
            lambda s: EulerSampler(s, sigma_min=-1.0),
            r"sigma_min \(null: the schedule's\) must be a finite number > 0",
        ),
        (
            lambda s: EulerSampler(s, sigma_min=1e-5),
            r"sigma_min = 1e-05 lies outside .*\[sigma_1, sigma_T\]",
        ),
        (lambda s: EulerSampler(s, sigma_max=1e4), r"sigma_max = 10000 lies outside"),
        (
            lambda s: EulerSampler(s, sigma_min=1.0, sigma_max=0.5),
            "sigma_min = 1 must not exceed sigma_max = 0.5",
        ),
        (
            lambda s: EulerSampler(s, spacing="uniform", sigma_max=1.0),
            "sigma_min and sigma_max apply to spacing='karras'",
        ),
        (
            lambda s: DPMSolverSampler(s, spacing="cosine"),
            "spacing must be one of karras, uniform; got 'cosine'",
        ),
        (
            lambda s: DPMSolverSampler(s, sde=True, order=3),
            "DPM-Solver\\+\\+ SDE takes order 1 or 2",
        ),
        (lambda s: DPMSolverSampler(s, sde="yes"), "sde must be true or false, got 'yes'"),
    ],
)
def test_bad_arguments_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build(make_schedule("linear", 100))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["sampler=euler"],
            "EulerSampler(T=500, steps=25, spacing='karras', rho=7, clip_denoised=True)",
        ),
        (
            ["sampler=heun", "sampler.churn=40", "sampler.s_noise=1.003"],
            "HeunSampler(T=500, steps=18, spacing='karras', rho=7, churn=40, s_tmin=0, s_tmax=inf, "
            "s_noise=1.003, clip_denoised=True)",
        ),
        (
            ["sampler=dpmpp_sde"],
            "DPMSolverSampler(T=500, steps=20, order=2, spacing='karras', rho=7, sde=True, "
            "clip_denoised=True)",
        ),
        (
            ["sampler=dpmpp", "sampler.spacing=karras"],
            "DPMSolverSampler(T=500, steps=20, order=2, spacing='karras', rho=7, clip_denoised=True)",
        ),
    ],
)
def test_sampler_configs_build_on_the_schedule(overrides, expected):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from diffusion_lab import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=["ckpt_path=unused", *overrides])
    sampler = instantiate(cfg.sampler)(make_schedule("linear", 500))
    assert repr(sampler) == expected


# --- an independent implementation: diffusers' schedulers on the same exact model --------------


def run_diffusers(reference, model, noise, context, T, timesteps=None, noises=None):
    """diffusers' loop: x = noise * init_noise_sigma, then scale_model_input, the model, step.
    diffusers counts timesteps from 0 for our t = 1; ``timesteps`` (ours) replaces the model's t
    where diffusers rounds it (DPM-Solver with Karras sigmas steps on the exact sigmas but
    evaluates the net at the nearest integer t)."""
    x = noise * reference.init_noise_sigma
    reference.set_begin_index(0)  # else a repeated first timestep makes diffusers skip a sigma
    for i, t in enumerate(reference.timesteps):
        ours = timesteps[i] if timesteps is not None else float(t) + 1
        t_in = torch.full((len(noise),), ours / T, dtype=torch.float64)
        eps = model(reference.scale_model_input(x, t), t_in, context)
        extra = {} if noises is None else {"variance_noise": noises[i]}
        x = reference.step(eps, t, x, **extra).prev_sample
    return x


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [6, 10, 25])
@pytest.mark.parametrize("family", ["euler", "heun"])
def test_euler_and_heun_agree_with_diffusers_karras_schedulers(schedule_name, steps, family):
    """EulerDiscreteScheduler / HeunDiscreteScheduler(use_karras_sigmas=True): the same sigmas,
    timesteps and images. diffusers keeps its tables in float32, hence the tolerances."""
    diffusers = pytest.importorskip("diffusers")
    T = 1000
    schedule = make_schedule(schedule_name, T)
    cls = {"euler": diffusers.EulerDiscreteScheduler, "heun": diffusers.HeunDiscreteScheduler}
    reference = cls[family](
        num_train_timesteps=T, trained_betas=schedule.betas[1:].numpy(), use_karras_sigmas=True
    )
    reference.set_timesteps(steps)
    ours = (EulerSampler if family == "euler" else HeunSampler)(schedule, steps=steps)
    assert len(reference.timesteps) == ours.nfe
    unique = list(dict.fromkeys(float(t) + 1 for t in reference.timesteps))  # Heun repeats each
    np.testing.assert_allclose(unique, ours.timesteps, rtol=0, atol=0.05)  # float32 log sigmas
    np.testing.assert_allclose(
        list(dict.fromkeys(reference.sigmas.tolist())), ours.sigmas + [0.0], rtol=5e-4
    )
    model = EpsOnly(ExactGaussian(schedule))
    noise, context = inputs(8)
    expected = run_diffusers(reference, model, noise, context, T)
    torch.testing.assert_close(ours.sample(model, noise, context), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [8, 20])
@pytest.mark.parametrize("sde", [False, True])
def test_dpm_solver_karras_and_sde_agree_with_diffusers(schedule_name, steps, sde):
    """DPMSolverMultistepScheduler(dpmsolver++ or sde-dpmsolver++, order 2, use_karras_sigmas,
    final sigma zero) with the same noise at every step (``variance_noise``)."""
    diffusers = pytest.importorskip("diffusers")
    T = 1000
    schedule = make_schedule(schedule_name, T)
    reference = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T,
        trained_betas=schedule.betas[1:].numpy(),
        solver_order=2,
        algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++",
        use_karras_sigmas=True,
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    reference.set_timesteps(steps)
    ours = DPMSolverSampler(schedule, steps=steps, order=2, spacing="karras", sde=sde)
    sigmas = [NoiseLevels(schedule.alpha_bars).sigma_at(t) for t in ours.timesteps]
    np.testing.assert_allclose(reference.sigmas[:-1].tolist(), sigmas, rtol=5e-4)
    assert [int(t) + 1 for t in reference.timesteps] == [round(t) for t in ours.timesteps]
    model = EpsOnly(ExactGaussian(schedule))
    noise, context = inputs(8)
    generator = torch.Generator().manual_seed(11)
    # ours draws z ~ N(0, I) at every step but the last (onto sigma = 0), in this order
    noises = [
        torch.randn(noise.shape, generator=generator, dtype=noise.dtype) for _ in range(steps)
    ]
    noises[-1] = torch.zeros_like(noise)
    expected = run_diffusers(reference, model, noise, context, T, ours.timesteps, noises)
    got = ours.sample(model, noise, context, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
