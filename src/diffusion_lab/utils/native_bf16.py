"""Whether the device computes bf16 natively, detected once per device type, logged with its reason.

bf16 pays only where the hardware has it: on x86 CPUs AVX512-BF16 (Cooper Lake, Zen 4 and later)
or AMX (Sapphire Rapids and later), on ARM the BF16 extension, on NVIDIA GPUs compute capability
8.0 and above. Elsewhere torch emulates it and a bf16 step is slower than fp32. Asked, in order:
torch's own CPU probes (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``,
which read the CPU as oneDNN does), the kernel's flags in /proc/cpuinfo when torch has no probe,
and ``torch.cuda.is_bf16_supported()`` for CUDA.

Resolvers (registered in diffusion_lab/resolvers.py): ``${auto_precision:${trainer.accelerator}}``
is ``bf16-mixed`` where native bf16 exists and ``32-true`` elsewhere; ``${compile_pays:...}`` is
true on CUDA only (torch.compile measured nothing on the CPU and costs 24-41 s there).
torch is imported inside the functions: ``import diffusion_lab`` stays light.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
CPU_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "bf16": "ARM BF16"}


@dataclass(frozen=True)
class Bf16Support:
    """Whether ``device_type`` (cpu, cuda, ...) has native bf16, and how that was found."""

    device_type: str
    native: bool
    reason: str

    def __str__(self) -> str:
        return (
            f"native bf16 on {self.device_type}: {'yes' if self.native else 'no'} ({self.reason})"
        )


def torch_cpu_probes() -> dict[str, Callable[[], bool]]:
    """torch's CPU feature probes that say bf16 (name -> probe); empty where this torch has none."""
    import torch

    names = {"_is_avx512_bf16_supported": "AVX512-BF16", "_is_amx_tile_supported": "AMX"}
    return {label: getattr(torch.cpu, n) for n, label in names.items() if hasattr(torch.cpu, n)}


def cpuinfo_flags(text: str) -> set[str]:
    """The CPU flags of /proc/cpuinfo's text (x86 ``flags``, ARM ``Features``), of its first CPU."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def detect_cpu(
    probes: Mapping[str, Callable[[], bool]] | None = None, cpuinfo: str | None = None
) -> Bf16Support:
    """Native bf16 on this CPU: torch's probes (``probes``, default :func:`torch_cpu_probes`),
    else the flags of ``cpuinfo`` (default: /proc/cpuinfo's text, if readable)."""
    probes = torch_cpu_probes() if probes is None else probes
    if probes:
        found = [label for label, probe in probes.items() if probe()]
        names = " / ".join(probes)
        if found:
            return Bf16Support("cpu", True, f"torch.cpu reports {' and '.join(found)}")
        return Bf16Support("cpu", False, f"torch.cpu reports no {names}: bf16 would be emulated")
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return Bf16Support("cpu", False, "no torch probe and no /proc/cpuinfo to read")
    found = [label for flag, label in CPU_FLAGS.items() if flag in cpuinfo_flags(cpuinfo)]
    if found:
        return Bf16Support("cpu", True, f"/proc/cpuinfo flags {' and '.join(found)}")
    return Bf16Support("cpu", False, "no avx512_bf16, amx_bf16 or bf16 flag in /proc/cpuinfo")


def detect_cuda() -> Bf16Support:
    import torch

    if not torch.cuda.is_available():
        return Bf16Support("cuda", False, "torch sees no CUDA device")
    name = torch.cuda.get_device_name()
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 counts no emulation
        native = torch.cuda.is_bf16_supported()
    if native:
        return Bf16Support("cuda", True, f"torch.cuda.is_bf16_supported() on {name}")
    return Bf16Support("cuda", False, f"torch.cuda.is_bf16_supported() is false on {name}")


def device_type(accelerator: str) -> str:
    """Lightning's ``trainer.accelerator`` as a torch device type: auto is cuda where torch sees
    one (as Lightning picks), else cpu; gpu is cuda."""
    name = str(accelerator)
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name == "gpu" else name


@functools.cache
def bf16_support(device: str) -> Bf16Support:
    """Native bf16 on a device type (cpu, cuda), detected once per process and logged."""
    if device == "cpu":
        support = detect_cpu()
    elif device == "cuda":
        support = detect_cuda()
    else:
        support = Bf16Support(device, False, f"not checked on {device}: fp32")
    log.info("%s", support)
    return support


def precision_for(support: Bf16Support) -> str:
    """The trainer precision that pays: bf16-mixed with native bf16, else 32-true."""
    return "bf16-mixed" if support.native else "32-true"


def auto_precision(accelerator: str = "auto") -> str:
    """``${auto_precision:${trainer.accelerator}}``: bf16-mixed where the device that the trainer
    will use has native bf16, 32-true elsewhere."""
    return precision_for(bf16_support(device_type(accelerator)))


def compile_pays(accelerator: str = "auto") -> bool:
    """``${compile_pays:${trainer.accelerator}}`` (perf=fast's module.compile_net): torch.compile
    on CUDA (not yet measured on a GPU here), never on the CPU (compare.py: nothing gained on
    top of channels-last, 24-41 s of compilation)."""
    return device_type(accelerator) == "cuda"


def report(precision: object, accelerator: str = "auto") -> Bf16Support:
    """Log the device's bf16 support once (diffusion-train's start), and warn when
    ``precision`` asks for bf16 where it would be emulated."""
    support = bf16_support(device_type(accelerator))
    if str(precision).startswith("bf16") and not support.native:
        log.warning(
            "trainer.precision=%s without native bf16 (%s): emulated, likely slower than 32-true",
            precision,
            support.reason,
        )
    return support
