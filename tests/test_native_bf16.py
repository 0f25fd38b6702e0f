"""Native-bf16 detection (utils/native_bf16.py) and the resolvers that follow it: both answers, from
capabilities injected into the detection (torch's probes, /proc/cpuinfo's text, the cached
answer), never by patching torch."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from diffusion_lab import CONFIG_DIR
from diffusion_lab.utils import native_bf16
from diffusion_lab.utils.native_bf16 import Bf16Support, cpuinfo_flags, detect_cpu

ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16 fsrm\n"
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx avx2 fma\n"
NEOVERSE_V1 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"


def test_torchs_probes_decide_when_this_torch_has_them() -> None:
    yes = detect_cpu(probes={"AVX512-BF16": lambda: False, "AMX": lambda: True}, cpuinfo=ZEN3)
    assert yes == Bf16Support("cpu", True, "torch.cpu reports AMX")
    no = detect_cpu(probes={"AVX512-BF16": lambda: False, "AMX": lambda: False}, cpuinfo=ZEN4)
    assert not no.native and "no AVX512-BF16 / AMX" in no.reason  # the probes win over the text


@pytest.mark.parametrize(
    ("text", "native", "reason"),
    [
        (ZEN4, True, "/proc/cpuinfo flags AVX512-BF16"),
        (NEOVERSE_V1, True, "/proc/cpuinfo flags ARM BF16"),
        (ZEN3, False, "no avx512_bf16, amx_bf16 or bf16 flag in /proc/cpuinfo"),
        ("", False, "no avx512_bf16, amx_bf16 or bf16 flag in /proc/cpuinfo"),
    ],
    ids=["zen4", "arm-bf16", "avx2-only", "empty"],
)
def test_without_torch_probes_the_cpuinfo_flags_decide(text, native, reason) -> None:
    assert detect_cpu(probes={}, cpuinfo=text) == Bf16Support("cpu", native, reason)


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not Path("/proc/cpuinfo").is_file(),
    reason="an x86 Linux machine: torch's probes and the kernel's flags describe the same CPU",
)
def test_torch_and_the_kernel_agree_on_this_cpu() -> None:
    assert native_bf16.torch_cpu_probes()  # this torch has the probes
    flags = cpuinfo_flags(Path("/proc/cpuinfo").read_text())
    assert detect_cpu().native == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_detection_runs_once_per_device_type_and_logs_its_reason(monkeypatch, caplog) -> None:
    calls = []

    def fake_detect_cpu() -> Bf16Support:
        calls.append(1)
        return Bf16Support("cpu", True, "injected")

    native_bf16.bf16_support.cache_clear()
    monkeypatch.setattr(native_bf16, "detect_cpu", fake_detect_cpu)
    with caplog.at_level(logging.INFO, logger=native_bf16.__name__):
        assert native_bf16.auto_precision("cpu") == native_bf16.auto_precision("cpu")
    native_bf16.bf16_support.cache_clear()  # the next test's detection is the real one again
    assert len(calls) == 1
    assert caplog.messages == ["native bf16 on cpu: yes (injected)"]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize(("native", "precision"), [(True, "bf16-mixed"), (False, "32-true")])
def test_perf_fast_trains_in_bf16_where_it_is_native(monkeypatch, native, precision) -> None:
    support = {"cpu": Bf16Support("cpu", native, "injected")}
    monkeypatch.setattr(native_bf16, "bf16_support", support.__getitem__)
    cfg = compose_train("perf=fast", "trainer.accelerator=cpu")
    assert cfg.trainer.precision == precision
    assert cfg.module.compile_net is False and cfg.module.channels_last is True
    assert cfg.module.fused_optimizer is True
    assert compose_train("trainer.accelerator=cpu").trainer.precision == "32-true"  # the default
    assert compose_train("perf=fast", "trainer.precision=32-true").trainer.precision == "32-true"


def test_perf_fast_compiles_on_cuda_only() -> None:
    assert native_bf16.compile_pays("gpu") and native_bf16.compile_pays("cuda")
    assert not native_bf16.compile_pays("cpu")
    assert compose_train("perf=fast", "trainer=gpu").module.compile_net is True


def test_bf16_asked_for_where_it_is_emulated_is_warned(monkeypatch, caplog) -> None:
    support = {"cpu": Bf16Support("cpu", False, "injected")}
    monkeypatch.setattr(native_bf16, "bf16_support", support.__getitem__)
    with caplog.at_level(logging.WARNING, logger=native_bf16.__name__):
        native_bf16.report("32-true", "cpu")
        assert caplog.messages == []
        native_bf16.report("bf16-mixed", "cpu")
    assert caplog.messages == [
        "trainer.precision=bf16-mixed without native bf16 (injected): emulated, likely slower "
        "than 32-true"
    ]
