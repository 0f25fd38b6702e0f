"""Property tests (hypothesis): noise schedules and samplers over many small random settings.

Schedules: lengths, beta_0 = 0, alpha_bar_0 = 1, alpha_bar in (0, 1], finite, monotone, and
alpha_bar_t = prod_{s<=t} (1 - beta_s) recomputed here with numpy. Samplers, with the exact eps of
Gaussian data (tests/test_samplers.py GaussianEps) as the model: shapes and dtypes kept, one model
call per step (guidance included), descending timesteps ending on t = 0, finite output, and the same
output for the same seed.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_samplers import CLASS_MEANS, GaussianEps

from diffusion_lab.diffusion import DDIMSampler, DDPMSampler, NFECounter, make_schedule
from diffusion_lab.diffusion.schedules import SCHEDULE_NAMES

FAST = settings(max_examples=25, deadline=None)

schedules = st.builds(
    make_schedule,
    name=st.sampled_from(SCHEDULE_NAMES),
    timesteps=st.integers(1, 300),
    beta_start=st.floats(1e-5, 0.05),
    beta_end=st.floats(0.05, 0.5),
)


@FAST
@given(schedules)
def test_schedule_tables_are_well_formed(schedule):
    T = schedule.timesteps
    betas, alpha_bars = schedule.betas.numpy(), schedule.alpha_bars.numpy()
    assert betas.shape == alpha_bars.shape == schedule.alphas.shape == (T + 1,)
    assert schedule.alpha_bars.dtype == torch.float64
    assert betas[0] == 0 and alpha_bars[0] == 1
    assert np.isfinite(betas).all() and np.isfinite(alpha_bars).all()
    assert ((betas[1:] > 0) & (betas[1:] < 1)).all()
    assert ((alpha_bars > 0) & (alpha_bars <= 1)).all()
    assert (np.diff(alpha_bars) < 0).all()  # strictly decreasing: every beta_t > 0
    np.testing.assert_allclose(alpha_bars, np.cumprod(1.0 - betas), rtol=1e-12)


@st.composite
def sampling_cases(draw):
    schedule = make_schedule(draw(st.sampled_from(SCHEDULE_NAMES)), draw(st.integers(2, 60)))
    if draw(st.booleans()):
        sampler = DDPMSampler(schedule, variance=draw(st.sampled_from(["beta", "posterior"])))
    else:
        steps = draw(st.integers(1, schedule.timesteps))
        sampler = DDIMSampler(schedule, steps=steps, eta=draw(st.floats(0.0, 1.0)))
    batch = draw(st.integers(1, 7))  # odd sizes included
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    classes = draw(
        st.one_of(st.none(), st.lists(st.integers(0, 1), min_size=batch, max_size=batch))
    )
    guidance = draw(st.floats(0.0, 5.0)) if classes is not None else 0.0
    return sampler, batch, dtype, classes, guidance, draw(st.integers(0, 2**31 - 1))


def run_case(sampler, batch, dtype, classes, guidance, seed):
    model = NFECounter(GaussianEps(sampler.schedule.alpha_bars))
    context = None if classes is None else torch.eye(len(CLASS_MEANS), dtype=dtype)[classes]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((batch, 1, 2, 3), generator=generator, dtype=dtype)
    steps: list[tuple[int, int, int]] = []
    images = sampler.sample(
        model,
        noise,
        context,
        guidance,
        generator,
        on_step=lambda i, n, t, x: steps.append((i, n, t)),
    )
    return images, model.calls, steps


@FAST
@given(sampling_cases())
def test_samplers_keep_shapes_count_steps_and_repeat_per_seed(case):
    sampler, batch, dtype, classes, guidance, seed = case
    images, calls, steps = run_case(*case)
    assert images.shape == (batch, 1, 2, 3) and images.dtype == dtype
    assert torch.isfinite(images).all()
    timesteps = sampler.timesteps
    assert len(timesteps) == sampler.nfe == calls == len(steps)  # guidance: one batched call
    assert timesteps[0] == sampler.schedule.timesteps
    assert all(a > b for a, b in zip(timesteps, timesteps[1:])) and timesteps[-1] >= 1
    assert [i for i, _, _ in steps] == list(range(1, calls + 1))
    assert {n for _, n, _ in steps} == {calls} and steps[-1][2] == 0
    if isinstance(sampler, DDIMSampler):
        assert len(timesteps) == sampler.steps
    again, _, _ = run_case(*case)
    assert torch.equal(images, again)
