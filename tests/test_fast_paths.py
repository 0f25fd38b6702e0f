"""The fast paths (perf=fast) train as the plain path does: fused Adam and a compiled net give the
eager loss curve within float tolerance; compiled sampling gives the eager images."""

from __future__ import annotations

import functools
import shutil

import lightning as L
import pytest
import torch
from test_lit_module import make_module
from torch.utils.data import DataLoader, TensorDataset

from diffusion_lab.models.fast_paths import fused_kernels_available, match_state_layouts


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def quiet_trainer(**options) -> L.Trainer:
    """A CPU trainer without logger, checkpoints, progress bar or summary."""
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    defaults |= dict(enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**(defaults | options))


def fit_losses(steps: int = 4, **module_options) -> tuple[list[float], L.LightningModule]:
    """Training losses of `steps` batches from one seed: same weights, data, t, noise, dropout."""
    torch.manual_seed(0)
    module = make_module(**module_options)
    images = torch.rand(32, 1, 8, 8) * 2 - 1
    contexts = torch.eye(3)[torch.arange(32) % 3]
    recorder = LossRecorder()
    trainer = quiet_trainer(max_steps=steps, callbacks=[recorder])
    trainer.fit(module, DataLoader(TensorDataset(images, contexts), batch_size=8))
    return recorder.losses, module


def test_fused_adam_follows_the_default_adam() -> None:
    eager, _ = fit_losses()
    fused, module = fit_losses(fused_optimizer=True)
    assert module.trainer.optimizers[0].defaults["fused"] is True
    assert len(eager) == 4 and len(set(eager)) == 4  # the loss moves: the steps did something
    assert fused == pytest.approx(eager, rel=1e-5)


def test_channels_last_weights_follow_the_default_layout() -> None:
    eager, _ = fit_losses()
    nhwc, module = fit_losses(channels_last=True)
    conv = module.net.init_conv.conv2[0].weight  # 8 -> 8 channels: the layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nhwc == pytest.approx(eager, rel=1e-5)


def test_optimizer_state_takes_its_parameters_layout_so_fused_adam_stays_exact() -> None:
    """A resume that switches channels_last restores Adam's state in the other layout."""
    torch.manual_seed(0)
    start, grad, exp_avg, exp_avg_sq = torch.randn(4, 8, 8, 3, 3).unbind()
    nhwc = torch.channels_last

    def fused_step(param_layout, state_layout, match: bool) -> torch.Tensor:
        param = torch.nn.Parameter(start.clone(memory_format=param_layout))
        param.grad = grad.contiguous(memory_format=param_layout)
        optimizer = torch.optim.Adam([param], lr=1e-2, fused=True)
        state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq.abs()}
        state = {key: value.clone(memory_format=state_layout) for key, value in state.items()}
        optimizer.state[param] = {"step": torch.tensor(1.0), **state}
        if match:
            match_state_layouts(optimizer)
            assert optimizer.state[param]["exp_avg"].stride() == param.stride()
        optimizer.step()
        return param.detach().contiguous()

    reference = fused_step(torch.contiguous_format, torch.contiguous_format, match=False)
    for param_layout, state_layout in [
        (nhwc, torch.contiguous_format),
        (torch.contiguous_format, nhwc),
    ]:
        torch.testing.assert_close(fused_step(param_layout, state_layout, match=True), reference)


def test_fused_optimizer_falls_back_with_a_warning_where_there_are_no_kernels() -> None:
    rprop = {"_target_": "torch.optim.Rprop", "_partial_": True, "lr": 1e-3}
    assert not fused_kernels_available(functools.partial(torch.optim.Rprop), torch.device("cpu"))
    module = make_module(optimizer=rprop, fused_optimizer=True)
    with pytest.warns(UserWarning, match="no fused kernels for cpu"):
        optimizer = module.configure_optimizers()  # no LR scheduler: the optimizer alone
    assert isinstance(optimizer, torch.optim.Rprop)


def c_compiler() -> str | None:
    """torch.compile's CPU backend (inductor) builds C++ kernels: without a compiler it cannot
    run at all, the one condition under which the compile test is skipped; any other failure of
    torch.compile fails the test."""
    return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


@pytest.mark.slow
@pytest.mark.skipif(
    c_compiler() is None, reason="no C++ compiler: torch.compile cannot build CPU kernels"
)
def test_compiled_net_trains_and_samples_as_the_eager_net() -> None:
    eager, eager_module = fit_losses(steps=3)
    compiled, compiled_module = fit_losses(steps=3, compile_net=True)
    assert compiled == pytest.approx(eager, rel=1e-4)
    # compiled in place: same parameter names, so checkpoints load either way
    assert compiled_module.state_dict().keys() == eager_module.state_dict().keys()
    # the training batch size, so that sampling compiles one more graph (eval mode), not a
    # dynamic-shape one: compiling is what makes this test slow
    noise = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    contexts = torch.eye(3)[torch.arange(8) % 3]
    images = [
        module.sample(contexts, noise, generator=torch.Generator().manual_seed(2))
        for module in (eager_module, compiled_module)
    ]
    # fused kernels round differently (~1e-6 per eps, more where BatchNorm divides by a small
    # running variance); DDIM's steps carry each step's difference into the next
    torch.testing.assert_close(images[1], images[0], rtol=1e-3, atol=2e-3)
