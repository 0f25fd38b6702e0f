"""DPM-Solver++ multistep against closed-form Gaussian data (see tests/test_samplers.py).

For x0 ~ N(mu, s^2) the probability-flow ODE keeps every sample's z-score: x_t's distribution is
N(sqrt(ab_t) mu, v_t) with v_t = ab_t s^2 + 1 - ab_t at every t, and the ODE's flow is monotone and
affine, so its exact solution from x_T is

    x_0 = mu + s (x_T - sqrt(ab_T) mu) / sqrt(v_T).

An ODE solver's error is its distance to that map; the exact eps model makes it the only error.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_samplers import CLASS_MEANS, DATA_STD, GaussianEps, run

from diffusion_lab.diffusion import DDIMSampler, DPMSolverSampler, NFECounter, make_schedule


def exact_ode_solution(schedule, noise: torch.Tensor, mu: float) -> torch.Tensor:
    alpha_bar_T = schedule.alpha_bars[-1].item()
    variance_T = alpha_bar_T * DATA_STD**2 + 1 - alpha_bar_T
    return mu + DATA_STD * (noise - math.sqrt(alpha_bar_T) * mu) / math.sqrt(variance_T)


def ode_error(sampler, mu=0.6, n=256) -> float:
    out, noise, _ = run(sampler, n=n, context_class=0)
    return (out - exact_ode_solution(sampler.schedule, noise, mu)).abs().max().item()


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [5, 25])
def test_order_one_is_ddim_with_eta_zero(schedule_name, steps):
    schedule = make_schedule(schedule_name, 500)
    dpm, _, _ = run(DPMSolverSampler(schedule, steps=steps, order=1), n=64, seed=4)
    ddim, _, _ = run(DDIMSampler(schedule, steps=steps, eta=0.0), n=64, seed=4)
    torch.testing.assert_close(dpm, ddim, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [10, 20])
def test_higher_orders_are_more_accurate_at_few_steps(schedule_name, steps):
    schedule = make_schedule(schedule_name, 1000)
    first = ode_error(DPMSolverSampler(schedule, steps=steps, order=1))
    second = ode_error(DPMSolverSampler(schedule, steps=steps, order=2))
    third = ode_error(DPMSolverSampler(schedule, steps=steps, order=3))
    assert second < 0.8 * first
    assert third < 0.8 * first


def test_with_enough_steps_it_lands_on_the_data_distribution():
    schedule = make_schedule("linear", 1000)
    sampler = DPMSolverSampler(schedule, steps=100)  # 2M
    assert (
        ode_error(sampler) < 5e-3 < 0.2 * ode_error(DPMSolverSampler(schedule, steps=100, order=1))
    )
    for class_index, mu in enumerate(CLASS_MEANS.tolist()):
        out, _, _ = run(sampler, n=5000, context_class=class_index)
        assert out.mean().item() == pytest.approx(mu, abs=0.02)
        assert out.std().item() == pytest.approx(DATA_STD, abs=0.02)


def test_timesteps_nfe_and_step_orders():
    schedule = make_schedule("linear", 500)
    sampler = DPMSolverSampler(schedule)
    assert (
        sampler.timesteps == DDIMSampler(schedule, steps=20).timesteps == list(range(500, 0, -25))
    )
    assert sampler.order == 2 and sampler.nfe == 20
    assert sampler.step_orders() == [1] + [2] * 18 + [1]
    # few steps: the third order waits for its history and lowers itself before the end
    assert DPMSolverSampler(schedule, steps=6, order=3).step_orders() == [1, 2, 3, 3, 2, 1]
    assert DPMSolverSampler(schedule, steps=20, order=3).step_orders() == [1, 2] + [3] * 17 + [1]
    no_lowering = DPMSolverSampler(schedule, steps=6, order=3, lower_order_final=False)
    assert no_lowering.step_orders() == [1, 2, 3, 3, 3, 1]
    assert DPMSolverSampler(schedule, steps=1).step_orders() == [1]

    model = GaussianEps(schedule.alpha_bars)
    counter = NFECounter(model)
    noise = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    sampler.sample(counter, noise, torch.eye(2, dtype=torch.float64)[[0, 1, 0, 1]], 2.0)
    assert counter.calls == sampler.nfe == 20
    assert model.batch_sizes == [8] * 20


def test_trajectory_ends_on_the_samples():
    schedule = make_schedule("linear", 100)
    sampler = DPMSolverSampler(schedule, steps=10, order=3)
    model = GaussianEps(schedule.alpha_bars)
    noise = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    frames, times = sampler.trajectory(model, noise, every=4)
    assert times == [100, 60, 20, 0]
    torch.testing.assert_close(frames[-1], sampler.sample(model, noise))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, r"DPM-Solver steps \(T=100\) must be an integer >= 1 and <= 100, got 0"),
        ({"steps": 101}, "got 101"),
        ({"order": 4}, "DPM-Solver order must be an integer >= 1 and <= 3, got 4"),
        ({"order": True}, "got True"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DPMSolverSampler(make_schedule("linear", 100), **kwargs)


def test_agrees_with_diffusers_when_installed():
    """An independent implementation: diffusers' DPMSolverMultistepScheduler (dpmsolver++, trailing
    spacing = our grid, final sigma zero), stepping the same exact model. Runs where diffusers is
    installed (not a dependency: pip install diffusers); float32 tables there, hence the tolerance."""
    diffusers = pytest.importorskip("diffusers")
    T = 1000
    schedule = make_schedule("linear", T)
    model = GaussianEps(schedule.alpha_bars)
    noise = torch.randn(8, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    context = torch.eye(2, dtype=torch.float64)[[0, 1] * 4]
    for steps, order in [(10, 1), (10, 2), (10, 3), (25, 2), (25, 3)]:
        reference = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=T,
            trained_betas=schedule.betas[1:].numpy(),
            solver_order=order,
            algorithm_type="dpmsolver++",
            timestep_spacing="trailing",
            final_sigmas_type="zero",
            lower_order_final=True,
        )
        reference.set_timesteps(steps)
        ours = DPMSolverSampler(schedule, steps=steps, order=order)
        # diffusers counts timesteps from 0 for our t = 1
        assert [int(t) + 1 for t in reference.timesteps] == ours.timesteps
        x = noise.clone()
        for t in reference.timesteps:
            t_in = torch.full((8,), (int(t) + 1) / T, dtype=torch.float64)
            x = reference.step(model(x, t_in, context), t, x).prev_sample
        torch.testing.assert_close(ours.sample(model, noise, context), x, rtol=1e-5, atol=1e-5)
