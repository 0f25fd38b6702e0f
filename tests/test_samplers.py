"""Samplers against closed-form Gaussian math.

For data x0 ~ N(mu_c, s^2) per pixel (mu_c chosen by the context), x_t = sqrt(ab) x0 + sqrt(1-ab) eps
is Gaussian with variance v_t = ab s^2 + 1 - ab, and the exact noise predictor is linear:

    E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu_c) / v_t.

So every sampler step is affine in x_t (plus independent Gaussian noise), and the chain's output has a
closed-form mean and variance, which the tests propagate here with their own float64 arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion_lab.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    NFECounter,
    make_schedule,
)

DATA_STD = 0.5
CLASS_MEANS = torch.tensor([0.6, -0.4], dtype=torch.float64)  # the null context has mean 0


class GaussianEps:
    """The exact eps predictor for x0 ~ N(context @ CLASS_MEANS, DATA_STD^2)."""

    def __init__(self, alpha_bars: torch.Tensor) -> None:
        self.alpha_bars = alpha_bars
        self.batch_sizes: list[int] = []

    def __call__(self, x, t, context):
        self.batch_sizes.append(x.shape[0])
        T = len(self.alpha_bars) - 1
        steps = torch.round(t * T).long()
        ab = self.alpha_bars[steps].to(x.dtype).view(-1, 1, 1, 1)
        if context is None:
            mu = torch.zeros_like(ab)
        else:
            mu = (context.to(torch.float64) @ CLASS_MEANS).to(x.dtype).view(-1, 1, 1, 1)
        variance = ab * DATA_STD**2 + 1 - ab
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / variance


def exact_eps_coefficients(ab: float, mu: float) -> tuple[float, float]:
    """eps = k x + m for the Gaussian data above."""
    variance = ab * DATA_STD**2 + 1 - ab
    k = math.sqrt(1 - ab) / variance
    return k, -k * math.sqrt(ab) * mu


def propagate_ddpm(alpha_bars, betas, mu, posterior, add_noise=True):
    """Mean and variance of the DDPM chain's output, starting from N(0, 1)."""
    mean, var = 0.0, 1.0
    T = len(alpha_bars) - 1
    for t in range(T, 0, -1):
        ab, beta = alpha_bars[t], betas[t]
        k, m = exact_eps_coefficients(ab, mu)
        c = beta / math.sqrt(1 - ab)
        a, b = (1 - c * k) / math.sqrt(1 - beta), -c * m / math.sqrt(1 - beta)
        noise_var = 0.0
        if t > 1 and add_noise:
            noise_var = (1 - alpha_bars[t - 1]) / (1 - ab) * beta if posterior else beta
        mean, var = a * mean + b, a * a * var + noise_var
    return mean, var


def propagate_ddim(alpha_bars, timesteps, mu, eta):
    """Mean and variance of the DDIM chain's output over the given timesteps, from N(0, 1)."""
    mean, var = 0.0, 1.0
    for t, t_prev in zip(timesteps, timesteps[1:] + [0]):
        ab, ab_prev = alpha_bars[t], alpha_bars[t_prev]
        k, m = exact_eps_coefficients(ab, mu)
        sigma2 = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        # x_prev = sqrt(ab_prev) (x - sqrt(1-ab) eps) / sqrt(ab) + sqrt(1 - ab_prev - sigma2) eps + sigma z
        dir_coef = math.sqrt(max(1 - ab_prev - sigma2, 0.0))
        x0_x, x0_eps = 1 / math.sqrt(ab), -math.sqrt(1 - ab) / math.sqrt(ab)
        coef_x = math.sqrt(ab_prev) * x0_x
        coef_eps = math.sqrt(ab_prev) * x0_eps + dir_coef
        a, b = coef_x + coef_eps * k, coef_eps * m
        mean, var = a * mean + b, a * a * var + sigma2
    return mean, var


def run(sampler, n=20000, context_class=0, seed=0, dtype=torch.float64, guidance_scale=0.0):
    model = GaussianEps(sampler.schedule.alpha_bars)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 1, 2, 2, generator=generator, dtype=dtype)
    context = torch.nn.functional.one_hot(torch.full((n,), context_class), 2).to(dtype)
    out = sampler.sample(model, noise, context, guidance_scale=guidance_scale, generator=generator)
    return out, noise, model


def assert_moments(samples, mean, var, n):
    # 5 standard errors: the mean's is sqrt(var/n), the variance's about var sqrt(2/n)
    count = samples.numel()
    assert samples.mean().item() == pytest.approx(mean, abs=5 * math.sqrt(var / count))
    assert samples.var().item() == pytest.approx(var, abs=5 * var * math.sqrt(2 / count))


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_ddpm_output_moments_match_closed_form(variance):
    schedule = make_schedule("linear", 200)
    sampler = DDPMSampler(schedule, variance=variance)
    out, _, _ = run(sampler)
    mean, var = propagate_ddpm(
        schedule.alpha_bars.tolist(), schedule.betas.tolist(), 0.6, variance == "posterior"
    )
    assert_moments(out, mean, var, out.numel())


def test_ddpm_without_noise_is_the_deterministic_collapse_to_the_mean():
    """variance="none" (the course's lesson 1): the mean-only chain maps the noise affinely and
    squeezes the samples towards the data mean, far below the data's spread."""
    schedule = make_schedule("linear", 500)
    sampler = DDPMSampler(schedule, variance="none")
    out, noise, _ = run(sampler, n=2000)
    mean, var = propagate_ddpm(
        schedule.alpha_bars.tolist(), schedule.betas.tolist(), 0.6, False, add_noise=False
    )
    again, _, _ = run(sampler, n=2000, seed=0)
    torch.testing.assert_close(out, again, rtol=0, atol=0)  # no randomness once noise is drawn
    assert_moments(out, mean, var, out.numel())
    assert mean == pytest.approx(0.6, abs=0.01)
    assert math.sqrt(var) < 0.1 * DATA_STD


def test_ddpm_over_all_steps_recovers_the_data_distribution():
    sampler = DDPMSampler(make_schedule("linear", 1000), variance="posterior")
    for class_index, mu in enumerate(CLASS_MEANS.tolist()):
        out, _, _ = run(sampler, n=5000, context_class=class_index)
        assert out.mean().item() == pytest.approx(mu, abs=0.02)
        assert out.std().item() == pytest.approx(DATA_STD, abs=0.02)


def test_ddim_eta0_is_the_closed_form_affine_map_of_the_noise():
    schedule = make_schedule("cosine", 500)
    sampler = DDIMSampler(schedule, steps=25, eta=0.0)
    out, noise, _ = run(sampler, n=64)
    alpha_bars = schedule.alpha_bars.tolist()
    # deterministic: propagate the affine map (a, b) with zero noise
    a, b = 1.0, 0.0
    for t, t_prev in zip(sampler.timesteps, sampler.timesteps[1:] + [0]):
        ab, ab_prev = alpha_bars[t], alpha_bars[t_prev]
        k, m = exact_eps_coefficients(ab, 0.6)
        coef_eps = -math.sqrt(ab_prev * (1 - ab) / ab) + math.sqrt(1 - ab_prev)
        step_a, step_b = math.sqrt(ab_prev / ab) + coef_eps * k, coef_eps * m
        a, b = step_a * a, step_a * b + step_b
    torch.testing.assert_close(out, a * noise + b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("steps", "eta"), [(50, 0.0), (50, 0.5), (20, 1.0)])
def test_ddim_output_moments_match_closed_form(steps, eta):
    schedule = make_schedule("linear", 500)
    sampler = DDIMSampler(schedule, steps=steps, eta=eta)
    out, _, _ = run(sampler)
    mean, var = propagate_ddim(schedule.alpha_bars.tolist(), sampler.timesteps, 0.6, eta)
    assert_moments(out, mean, var, out.numel())


def test_ddim_over_all_steps_recovers_the_data_distribution():
    sampler = DDIMSampler(make_schedule("linear", 1000), steps=1000, eta=0.0)
    out, _, _ = run(sampler, n=5000, context_class=1)
    assert out.mean().item() == pytest.approx(-0.4, abs=0.02)
    assert out.std().item() == pytest.approx(DATA_STD, abs=0.02)


def test_ddim_eta1_over_all_steps_equals_ddpm_with_posterior_variance():
    schedule = make_schedule("linear", 100)
    ddim, _, _ = run(DDIMSampler(schedule, steps=100, eta=1.0), n=32, seed=3)
    ddpm, _, _ = run(DDPMSampler(schedule, variance="posterior"), n=32, seed=3)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-10, atol=1e-10)


def test_ddim_timesteps_follow_the_course():
    sampler = DDIMSampler(make_schedule("linear", 500), steps=25)
    assert sampler.timesteps == list(range(500, 0, -20))
    assert sampler.nfe == 25
    assert DDIMSampler(make_schedule("linear", 10), steps=3).timesteps == [10, 7, 3]
    ddpm = DDPMSampler(make_schedule("linear", 500))
    assert ddpm.timesteps[0] == 500 and ddpm.timesteps[-1] == 1 and ddpm.nfe == 500


def test_ddpm_adds_no_noise_at_the_last_step():
    schedule = make_schedule("linear", 1)
    sampler = DDPMSampler(schedule, variance="beta")
    noise = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    outputs = [
        sampler.sample(
            GaussianEps(schedule.alpha_bars), noise, generator=torch.Generator().manual_seed(s)
        )
        for s in (0, 1)
    ]
    torch.testing.assert_close(outputs[0], outputs[1])


def test_guidance_zero_equals_the_conditional_model_and_is_one_call():
    sampler = DDIMSampler(make_schedule("linear", 100), steps=10)
    plain, _, plain_model = run(sampler, n=8)
    guided_zero, _, _ = run(sampler, n=8, guidance_scale=0.0)
    torch.testing.assert_close(plain, guided_zero)
    assert plain_model.batch_sizes == [8] * 10

    counter_model = GaussianEps(sampler.schedule.alpha_bars)
    counter = NFECounter(counter_model)
    noise = torch.randn(8, 1, 2, 2, dtype=torch.float64)
    context = torch.eye(2, dtype=torch.float64)[[0] * 8]
    sampler.sample(counter, noise, context, guidance_scale=2.0)
    assert counter.calls == sampler.nfe == 10
    assert counter_model.batch_sizes == [16] * 10  # conditional and null in one batched forward


def test_guided_eps_is_the_classifier_free_combination():
    sampler = DDPMSampler(make_schedule("linear", 100))
    model = GaussianEps(sampler.schedule.alpha_bars)
    x = torch.randn(6, 1, 2, 2, dtype=torch.float64)
    context = torch.eye(2, dtype=torch.float64)[[0, 1, 0, 1, 0, 1]]
    w = 3.0
    guided = sampler.predict_eps(model, x, 40, context, guidance_scale=w)
    t_in = torch.full((6,), 0.4, dtype=torch.float64)
    expected = (1 + w) * model(x, t_in, context) - w * model(x, t_in, torch.zeros_like(context))
    torch.testing.assert_close(guided, expected)


def test_sampling_is_reproducible_with_a_generator_and_keeps_dtype():
    sampler = DDPMSampler(make_schedule("linear", 20))
    first, _, _ = run(sampler, n=4, seed=7, dtype=torch.float32)
    second, _, _ = run(sampler, n=4, seed=7, dtype=torch.float32)
    assert first.dtype == torch.float32
    torch.testing.assert_close(first, second)
    assert not first.requires_grad


def test_trajectory_frames_end_on_the_samples():
    schedule = make_schedule("linear", 50)
    sampler = DDPMSampler(schedule)
    model = GaussianEps(schedule.alpha_bars)
    noise = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    frames, times = sampler.trajectory(
        model, noise, every=20, generator=torch.Generator().manual_seed(0)
    )
    final = sampler.sample(model, noise, generator=torch.Generator().manual_seed(0))
    assert times == [50, 30, 10, 0]
    assert frames.shape == (4, 3, 1, 2, 2)
    torch.testing.assert_close(frames[0], noise)
    torch.testing.assert_close(frames[-1], final)


def test_clipping_keeps_x0_in_range_and_is_off_by_default():
    schedule = make_schedule("linear", 100)
    assert not DDIMSampler(schedule).clip_denoised
    clipped = DDIMSampler(schedule, steps=10, clip_denoised=True)

    def wild(x, t, context):
        return -5 * torch.ones_like(x)  # predicts x0 far outside [-1, 1]

    out = clipped.sample(wild, torch.zeros(2, 1, 2, 2, dtype=torch.float64))
    assert out.abs().max().item() <= 1 + 1e-9


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda s: DDPMSampler(s, variance="large"), "unknown DDPM variance 'large'"),
        (
            lambda s: DDIMSampler(s, steps=0),
            r"steps \(T=100\) must be an integer >= 1 and <= 100, got 0",
        ),
        (lambda s: DDIMSampler(s, steps=101), "got 101"),
        (lambda s: DDIMSampler(s, eta=1.5), r"eta must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_sampler_arguments_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build(make_schedule("linear", 100))


class ScaledEps:
    """The exact model with its eps divided by b: what epsilon scaling must feed the step."""

    def __init__(self, model, b):
        self.model, self.b = model, b

    def __call__(self, x, t, context):
        return self.model(x, t, context) / self.b


@pytest.mark.parametrize(
    "build",
    [
        lambda s, **kw: DDPMSampler(s, variance="posterior", **kw),
        lambda s, **kw: DDIMSampler(s, steps=10, eta=0.5, **kw),
        lambda s, **kw: DPMSolverSampler(s, steps=10, order=3, **kw),
    ],
)
def test_eps_scaling_steps_with_eps_divided_by_b(build):
    schedule = make_schedule("linear", 100)
    model = GaussianEps(schedule.alpha_bars)
    noise = torch.randn(6, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    context = torch.eye(2, dtype=torch.float64)[[0, 1] * 3]

    def sample(sampler, net):
        return sampler.sample(
            net, noise, context, guidance_scale=1.5, generator=torch.Generator().manual_seed(2)
        )

    b = 1.05
    scaled = sample(build(schedule, eps_scale=b), model)
    expected = sample(build(schedule), ScaledEps(model, b))
    torch.testing.assert_close(scaled, expected, rtol=1e-12, atol=1e-12)
    off = sample(build(schedule, eps_scale=1.0), model)
    torch.testing.assert_close(off, sample(build(schedule), model), rtol=0, atol=0)
    assert not torch.allclose(off, scaled)


def test_eps_scaling_shrinks_ddim_noise_removal_as_in_ning_et_al():
    """b > 1 removes less noise per step, so DDIM eta 0 ends with a larger spread than b = 1
    (the direction Ning et al. use against the exposure bias)."""
    schedule = make_schedule("linear", 500)
    plain, _, _ = run(DDIMSampler(schedule, steps=25), n=2000)
    scaled, _, _ = run(DDIMSampler(schedule, steps=25, eps_scale=1.01), n=2000)
    assert scaled.std().item() > plain.std().item()


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_eps_scale_is_named(value):
    for build in (DDPMSampler, DDIMSampler, DPMSolverSampler):
        with pytest.raises(ValueError, match="eps_scale must be a finite number > 0"):
            build(make_schedule("linear", 100), eps_scale=value)


def test_bad_sample_inputs_are_named():
    sampler = DDIMSampler(make_schedule("linear", 100), steps=5)
    model = GaussianEps(sampler.schedule.alpha_bars)
    noise = torch.randn(4, 1, 2, 2)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0, got -1"):
        sampler.sample(model, noise, torch.zeros(4, 2), guidance_scale=-1.0)
    with pytest.raises(ValueError, match=r"context must be \(B, K\) with B = 4"):
        sampler.sample(model, noise, torch.zeros(3, 2))


def test_moments_helpers_agree_with_each_other_at_full_steps():
    """Guards the test's own algebra: DDIM eta=1 over all steps is DDPM-posterior in closed form."""
    schedule = make_schedule("linear", 300)
    ab, betas = schedule.alpha_bars.tolist(), schedule.betas.tolist()
    ddim = propagate_ddim(ab, list(range(300, 0, -1)), 0.6, eta=1.0)
    ddpm = propagate_ddpm(ab, betas, 0.6, posterior=True)
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-9)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["sampler=ddpm", "sampler.variance=none"],
            "DDPMSampler(T=500, variance='none', clip_denoised=True)",
        ),
        (["sampler=dpmpp"], "DPMSolverSampler(T=500, steps=20, order=2, clip_denoised=True)"),
        (
            ["sampler=ddim", "sampler.eps_scale=1.005"],
            "DDIMSampler(T=500, steps=10, eta=1.0, eps_scale=1.005, clip_denoised=True)",
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
