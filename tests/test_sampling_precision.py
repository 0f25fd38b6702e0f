"""Sampling in bf16: only the network's forward runs under autocast, the samplers compute in fp32.

The closed-form Gaussian tests of tests/test_samplers.py again, with the exact eps predictor
written as one matmul (F.linear), so that autocast runs it in bf16. bf16 keeps 8 significant bits:
its unit roundoff is u = 2^-8 ~ 0.0039. The predictor's output carries three roundings (x, the
weights, the result), a relative error up to about 3u, and the samplers' fp32 arithmetic adds
nothing of that size: each tolerance below is stated in units of u.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from test_lit_module import make_module
from test_samplers import CLASS_MEANS, DATA_STD, exact_eps_coefficients, propagate_ddpm
from test_train import TINY, compose_train
from torch.utils._python_dispatch import TorchDispatchMode

from diffusion_lab.diffusion import DDIMSampler, DDPMSampler, DPMSolverSampler, make_schedule
from diffusion_lab.diffusion.predictions import EpsModel
from diffusion_lab.models.precision import AutocastNet, autocast_dtype, in_precision
from diffusion_lab.runs.checkpoints import load_module
from diffusion_lab.train import train
from diffusion_lab.utils.checks import InputError

BF16_ROUNDOFF = 2.0**-8  # u: half the spacing of bf16 numbers just above 1 (8 significant bits)
CASTS = ("aten.to.dtype", "aten._to_copy.default")


class LinearGaussianEps(torch.nn.Module):
    """The exact eps predictor of tests/test_samplers.py, eps = k_t x + m_t(c), as one F.linear
    on [x, c] (N, D + K) with the weight [k_t I_D | -k_t sqrt(ab_t) CLASS_MEANS], (D, D + K): the
    matmul autocast runs in bf16. ``seen_dtypes``: the dtype of every output it returned."""

    def __init__(self, alpha_bars: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("alpha_bars", alpha_bars.float())
        self.seen_dtypes: list[torch.dtype] = []

    def forward(self, x, t, context):
        timesteps = len(self.alpha_bars) - 1
        alpha_bar = self.alpha_bars[torch.round(t[0] * timesteps).long()]
        k = (1 - alpha_bar).sqrt() / (alpha_bar * DATA_STD**2 + 1 - alpha_bar)
        pixels = x[0].numel()
        means = CLASS_MEANS.to(x.dtype)[None, :].expand(pixels, -1)
        weight = torch.cat([k * torch.eye(pixels), -k * alpha_bar.sqrt() * means], dim=1)
        eps = F.linear(torch.cat([x.flatten(1), context], dim=1), weight.to(x.dtype))
        self.seen_dtypes.append(eps.dtype)
        return eps.view_as(x)


def gaussian_inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """fp32 noise (n, 1, 2, 2), contexts of class 0 (mean 0.6), and the generator after them."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 1, 2, 2, generator=generator)
    return noise, torch.eye(2)[[0] * n], generator


def ddim_closed_form(sampler: DDIMSampler, noise: torch.Tensor, mu: float) -> torch.Tensor:
    """DDIM eta 0 with the exact predictor: an affine map a x_T + b, composed in float64."""
    alpha_bars = sampler.schedule.alpha_bars.tolist()
    a, b = 1.0, 0.0
    for t, t_prev in zip(sampler.timesteps, sampler.timesteps[1:] + [0]):
        ab, ab_prev = alpha_bars[t], alpha_bars[t_prev]
        k, m = exact_eps_coefficients(ab, mu)
        coef_eps = -math.sqrt(ab_prev * (1 - ab) / ab) + math.sqrt(1 - ab_prev)
        step_a, step_b = math.sqrt(ab_prev / ab) + coef_eps * k, coef_eps * m
        a, b = step_a * a, step_a * b + step_b
    return a * noise.double() + b


# --- the wrapper ------------------------------------------------------------------------------


def test_the_net_runs_in_bf16_and_its_output_comes_back_in_fp32() -> None:
    net = LinearGaussianEps(make_schedule("linear", 20).alpha_bars)
    noise, contexts, _ = gaussian_inputs(4)
    eps = AutocastNet(net, torch.bfloat16)(noise, torch.full((4,), 0.5), contexts)
    assert net.seen_dtypes == [torch.bfloat16] and eps.dtype == torch.float32
    exact = net(noise, torch.full((4,), 0.5), contexts)  # no autocast: fp32
    assert net.seen_dtypes[-1] == torch.float32
    error = ((eps - exact).abs() / exact.abs().max()).max().item()
    assert 0 < error <= 3 * BF16_ROUNDOFF  # rounded (so bf16 did run), within three roundings


def test_precision_names_are_lightnings_and_fp32_is_the_net_itself() -> None:
    net = torch.nn.Linear(2, 2)
    assert in_precision(net, "32-true") is net and in_precision(net, 32) is net
    assert autocast_dtype("bf16") is autocast_dtype("bf16-mixed") is torch.bfloat16
    assert autocast_dtype("16-mixed") is torch.float16
    with pytest.raises(InputError, match=r"^precision must be one of 32-true, .*; got 'fp8'$"):
        in_precision(net, "fp8")


class DtypeLog(TorchDispatchMode):
    """Records (op, input dtypes, output dtypes, inside the net?) for every aten op run."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.inside = False
        self.ops: list[tuple[str, set, set, bool]] = []
        net.register_forward_pre_hook(lambda *_: setattr(self, "inside", True))
        net.register_forward_hook(lambda *_: setattr(self, "inside", False))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        dtypes = [
            a.dtype for a in torch.utils._pytree.tree_leaves((args, kwargs)) if torch.is_tensor(a)
        ]
        outs = [o.dtype for o in torch.utils._pytree.tree_leaves(out) if torch.is_tensor(o)]
        self.ops.append((str(func), set(dtypes), set(outs), self.inside))
        return out


@pytest.mark.parametrize(
    "make_sampler",
    [
        lambda s: DDPMSampler(s, variance="posterior"),
        lambda s: DDIMSampler(s, steps=5, eta=0.5),
        lambda s: DPMSolverSampler(s, steps=5),
    ],
    ids=["ddpm", "ddim", "dpmpp"],
)
def test_only_the_network_computes_in_bf16_the_sampler_in_fp32(make_sampler) -> None:
    schedule = make_schedule("linear", 10)
    net = LinearGaussianEps(schedule.alpha_bars)
    noise, contexts, generator = gaussian_inputs(3)
    log = DtypeLog(net)
    with log:
        images = make_sampler(schedule).sample(
            AutocastNet(net, torch.bfloat16), noise, contexts, 1.5, generator
        )
    assert images.dtype == torch.float32
    inside = [op for op in log.ops if op[3]]
    outside = [op for op in log.ops if not op[3]]
    assert any(torch.bfloat16 in outs for _, _, outs, _ in inside)  # the matmul ran in bf16
    for name, dtypes, outs, _ in outside:
        assert torch.bfloat16 not in outs, name  # no bf16 result outside the net
        if torch.bfloat16 in dtypes:  # the one op that reads the net's bf16 output: the cast back
            assert name in CASTS and outs == {torch.float32}, name


# --- closed-form Gaussian samplers with the net in bf16 ---------------------------------------


def ddim_bf16_error_bound(sampler: DDIMSampler, noise: torch.Tensor, mu: float) -> float:
    """A first-order worst-case bound on max |x_0(bf16 net) - x_0(exact)| for DDIM eta 0.

    Each step is x_prev = A x + C eps(x), A = sqrt(ab_prev / ab), C = sqrt(1 - ab_prev) -
    sqrt(ab_prev (1 - ab) / ab); the exact eps is k x + m. The bf16 eps differs from it by at
    most 4u (|k| |x| + |m|) (x, k and m rounded once each, the result once), so an error e of x
    becomes |A + C k| e + |C| 4u (|k| X + |m|), X bounding |x| on the chain (the exact chain's
    a x_T + b, plus e). Rounding errors of opposite signs cancel in practice: the bound is loose
    (about 20x on the course schedule), but it is what bf16's 8 bits guarantee."""
    alpha_bars = sampler.schedule.alpha_bars.tolist()
    x_max = noise.abs().max().item()
    a, b, error = 1.0, 0.0, 0.0
    for t, t_prev in zip(sampler.timesteps, sampler.timesteps[1:] + [0]):
        ab, ab_prev = alpha_bars[t], alpha_bars[t_prev]
        k, m = exact_eps_coefficients(ab, mu)
        coef_x = math.sqrt(ab_prev / ab)
        coef_eps = math.sqrt(1 - ab_prev) - math.sqrt(ab_prev * (1 - ab) / ab)
        bound_x = abs(a) * x_max + abs(b) + error
        step_a = coef_x + coef_eps * k
        error = abs(step_a) * error + abs(coef_eps) * 4 * BF16_ROUNDOFF * (
            abs(k) * bound_x + abs(m)
        )
        a, b = step_a * a, step_a * b + coef_eps * m
    return error


@pytest.mark.parametrize("steps", [25, 100])
def test_ddim_with_a_bf16_net_stays_within_the_bf16_bound_of_the_closed_form(steps) -> None:
    schedule = make_schedule("linear", 500)  # the course's: alpha_bar_T = 0.0064
    sampler = DDIMSampler(schedule, steps=steps, eta=0.0)
    net = LinearGaussianEps(schedule.alpha_bars)
    noise, contexts, _ = gaussian_inputs(4096)
    exact = ddim_closed_form(sampler, noise, mu=0.6)
    torch.testing.assert_close(
        sampler.sample(net, noise, contexts).double(), exact, atol=2e-5, rtol=0
    )
    error = sampler.sample(AutocastNet(net, torch.bfloat16), noise, contexts).double() - exact
    bound = ddim_bf16_error_bound(sampler, noise, mu=0.6)
    assert 0 < error.abs().max().item() <= bound < 0.15  # images in [-1, 1]: under 8% of the range
    assert abs(error.mean().item()) < BF16_ROUNDOFF  # round-to-nearest: no drift of the mean


def test_a_schedule_ending_near_zero_snr_amplifies_the_bf16_rounding() -> None:
    """The first DDIM step from alpha_bar_T ~ 1e-8 (cosine, betas clipped at 0.999) multiplies
    the eps error by about sqrt(alpha_bar_prev / alpha_bar_T): bf16 is no choice for an
    eps-predicting net on such a schedule (v prediction does not divide by alpha)."""
    course = ddim_bf16_error_bound(
        DDIMSampler(make_schedule("linear", 500), 25), gaussian_inputs(4096)[0], mu=0.6
    )
    sampler = DDIMSampler(make_schedule("cosine", 500), steps=25, eta=0.0)
    net = LinearGaussianEps(sampler.schedule.alpha_bars)
    noise, contexts, _ = gaussian_inputs(4096)
    exact = ddim_closed_form(sampler, noise, mu=0.6)
    error = sampler.sample(AutocastNet(net, torch.bfloat16), noise, contexts).double() - exact
    bound = ddim_bf16_error_bound(sampler, noise, mu=0.6)
    assert error.abs().max().item() <= bound and bound > 100 * course
    assert error.abs().max().item() > 0.5  # visible: half the image range


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_ddpm_with_a_bf16_net_keeps_the_closed_form_moments(variance) -> None:
    """Mean and variance of DDPM-100's output within 5 standard errors, widened by 4u of the
    mean and 8u of the variance (one eps's relative error, twice for a square)."""
    schedule = make_schedule("linear", 100)
    sampler = DDPMSampler(schedule, variance=variance)
    net = AutocastNet(LinearGaussianEps(schedule.alpha_bars), torch.bfloat16)
    noise, contexts, generator = gaussian_inputs(10000)
    samples = sampler.sample(net, noise, contexts, generator=generator)
    mean, var = propagate_ddpm(
        schedule.alpha_bars.tolist(), schedule.betas.tolist(), 0.6, variance == "posterior"
    )
    count = samples.numel()
    mean_tolerance = 5 * math.sqrt(var / count) + 4 * BF16_ROUNDOFF * abs(mean)
    var_tolerance = 5 * var * math.sqrt(2 / count) + 8 * BF16_ROUNDOFF * var
    assert samples.mean().item() == pytest.approx(mean, abs=mean_tolerance)
    assert samples.var().item() == pytest.approx(var, abs=var_tolerance)


# --- the module and the callbacks ---------------------------------------------------------------


def autocast_state() -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")


def record_autocast(net: torch.nn.Module) -> list[tuple[int, bool, torch.dtype]]:
    """(batch size, autocast on?, its dtype) of every forward of ``net``, appended as it runs."""
    calls: list[tuple[int, bool, torch.dtype]] = []
    net.register_forward_hook(
        lambda _, inputs, __: calls.append((len(inputs[0]), *autocast_state()))
    )
    return calls


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_the_module_samples_with_its_net_under_bf16_autocast_and_returns_fp32(prediction) -> None:
    module = make_module(prediction=prediction)
    assert module.sampling_precision == "32-true"  # no trainer, no checkpoint: fp32
    calls = record_autocast(module.ema.module)
    contexts = torch.eye(3)[[0, 1, 2, 0]]
    module.sample(contexts, generator=torch.Generator().manual_seed(0))
    assert calls[-1][1] is False  # fp32: no autocast
    module.sampling_precision = "bf16"  # Lightning's short name
    assert module.sampling_precision == "bf16-mixed"
    with module.sampling_net() as net:
        inner = net.net if isinstance(net, EpsModel) else net  # v -> eps outside the autocast
        assert isinstance(inner, AutocastNet) and inner.net is module.ema.module
    images = module.sample(contexts, generator=torch.Generator().manual_seed(0))
    assert images.dtype == torch.float32
    assert calls[-1] == (4, True, torch.bfloat16)
    module.sampling_precision = None  # back to following the trainer or the checkpoint
    assert module.sampling_precision == "32-true"
    with pytest.raises(InputError, match="^precision must be one of"):
        module.sampling_precision = "float8"


class AutocastProbe(L.Callback):
    """Records the autocast state of every call of the EMA net (validation and sampling only:
    training uses the live net) from the start of the fit."""

    calls: list[tuple[int, bool, torch.dtype]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        AutocastProbe.calls = record_autocast(pl_module.ema.module)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory) -> Path:
    """One short epoch on the digits (T = 20) with trainer.precision=bf16-mixed, the sample grids and
    a tiny quality panel (4 images per class: N = 40; DDIM-5 and the final DDPM-20)."""
    run_dir = tmp_path_factory.mktemp("bf16") / "run"
    overrides = [
        *TINY,
        "trainer.max_epochs=1",
        "trainer.precision=bf16-mixed",
        "++trainer.limit_train_batches=2",  # bf16 is emulated (slow) on CPUs without AVX512-BF16
        "++trainer.limit_val_batches=1",
        "logger=none",
        "callbacks.samples.animate=false",
        "callbacks.quality.n_per_class=4",
        "callbacks.quality.kid_subset_size=10",
        "callbacks.quality.classifier.epochs=1",
        f"+callbacks.probe={{_target_: {__name__}.AutocastProbe}}",
    ]
    cfg = compose_train(run_dir, *overrides)
    with open_dict(cfg):
        del cfg["hydra"]  # as diffusion-train's main() gets it (HydraConfig answers ${hydra:...})
    try:
        train(cfg)
    finally:
        HydraConfig.instance().cfg = None
    return run_dir


def test_the_grids_and_the_quality_panel_of_a_bf16_run_sample_under_bf16_autocast(bf16_run):
    sizes = {size for size, _, _ in AutocastProbe.calls}
    assert {2 * 10, 4 * 10} <= sizes  # the grids' 2 per class, the panel's 4 per class
    assert all(on and dtype == torch.bfloat16 for _, on, dtype in AutocastProbe.calls)


def test_a_checkpoint_keeps_its_runs_precision_for_the_sampling_commands(bf16_run) -> None:
    checkpoint = bf16_run / "checkpoints" / "last.ckpt"
    assert load_module(checkpoint, torch.device("cpu")).sampling_precision == "bf16-mixed"
    module = load_module(checkpoint, torch.device("cpu"), precision="32-true")
    assert module.sampling_precision == "32-true"
    with pytest.raises(InputError, match="^precision must be one of .*; got 'fp32'$"):
        load_module(Path("no-such.ckpt"), torch.device("cpu"), precision="fp32")  # before loading
