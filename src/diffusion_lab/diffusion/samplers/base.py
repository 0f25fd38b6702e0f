"""What every sampler shares: guidance, epsilon scaling, the (eps, x0) estimate and the step loop.

A model is any callable ``model(x, t, context) -> eps`` with x (B, C, H, W), t = timestep / T as a
float tensor (B,), context (B, K) or None (the null context). Samplers own no weights: they hold a
:class:`NoiseSchedule` and the step rule, and run on the noise tensor's device and dtype.

Every step first predicts the noise, with guidance (Ho & Salimans 2022) when w > 0:

    eps~ = (1 + w) eps(x_t, c) - w eps(x_t, null)        (one batched forward of 2B images)

divides it by ``eps_scale`` b (epsilon scaling, Ning et al. 2024: b slightly above 1 counters the
exposure bias; b = 1 is off), then estimates the clean image

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps~ / b) / sqrt(alpha_bar_t).

At alpha_bar_t = 0 (a zero-terminal-SNR schedule at t = T) x0_hat cannot come from eps; a model
that also offers ``model.eps_and_x0(x, t, context) -> (eps, x0)`` (the v / x0 prediction wrapper in
:mod:`diffusion_lab.diffusion.predictions`) gives it directly, and samplers use that there.

Timesteps are integers for DDPM, DDIM and DPM-Solver on the DDIM grid; samplers on a grid of noise
levels (Karras spacing, EDM's churn) visit fractional t, whose alpha_bar comes from log sigma
interpolated between integer timesteps (:mod:`diffusion_lab.diffusion.noise_levels`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch

from diffusion_lab.diffusion.noise_levels import NoiseLevels
from diffusion_lab.diffusion.schedules import NoiseSchedule
from diffusion_lab.utils.checks import InputError, require_int, require_number

Model = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
# called after every step with (step index from 1, steps in all, t_prev, x_{t_prev}); for progress
# displays and stop checks (an exception raised by it ends the chain there)
StepCallback = Callable[[int, int, float, torch.Tensor], None]
# denoise(x, t) -> (eps, x0_hat): the guided, scaled model at x_t, handed to Sampler._advance
Denoiser = Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


class NFECounter:
    """Wraps a model and counts its forward calls (network function evaluations).

    With guidance each call evaluates a doubled batch (conditional + null) in one forward. A
    wrapped model's ``eps_and_x0`` is passed on (and counted) too.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.calls = 0
        if callable(getattr(model, "eps_and_x0", None)):
            self.eps_and_x0 = self._counted_eps_and_x0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None):
        self.calls += 1
        return self.model(x, t, context)

    def _counted_eps_and_x0(self, x, t, context):
        self.calls += 1
        return self.model.eps_and_x0(x, t, context)


def check_eps_scale(eps_scale: float) -> float:
    """``eps_scale`` as a float, refused unless finite and > 0."""
    return require_number("eps_scale", eps_scale, minimum=0, above=True)


def check_steps(steps: int, total: int, name: str) -> int:
    """``steps`` as an int in 1..T, refused otherwise with the sampler's ``name``."""
    return require_int(f"{name} steps (T={total})", steps, minimum=1, maximum=total)


def spaced_timesteps(total: int, steps: int) -> list[int]:
    """round(linspace(T, 0, steps + 1)) without the final 0, descending (the course's DDIM grid:
    T=500, 25 steps: 500, 480, ..., 20); the last step then lands on t = 0."""
    grid = torch.linspace(total, 0, steps + 1, dtype=torch.float64).round().long()
    return grid[:-1].tolist()


class Sampler(ABC):
    """Shared machinery: guidance, epsilon scaling, x0 estimation, the step loop and trajectories.

    Args:
        schedule: the noise schedule the model was trained on.
        clip_denoised: clamp x0_hat to [-1, 1] (and make eps consistent with it).
        eps_scale: b in eps~ / b (Ning et al. 2024); 1.0 leaves the model's eps as it is.
    """

    def __init__(
        self, schedule: NoiseSchedule, clip_denoised: bool = False, eps_scale: float = 1.0
    ) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.clip_denoised = clip_denoised
        self.eps_scale = check_eps_scale(eps_scale)
        # Python floats: every image of a batch shares t, and float64 tables need not move devices.
        self._alpha_bars = schedule.alpha_bars.tolist()
        self._betas = schedule.betas.tolist()
        self._levels = NoiseLevels(schedule.alpha_bars)

    def _alpha_bar(self, t: float) -> float:
        """alpha_bar_t: the table at integer t, log-sigma interpolation between them otherwise."""
        return self._alpha_bars[t] if isinstance(t, int) else self._levels.alpha_bar_at(t)

    @property
    @abstractmethod
    def timesteps(self) -> list[float]:
        """The timesteps the sampler visits, descending (integers, or fractional t on a grid of
        noise levels); it ends on t = 0 after the last."""

    @property
    def label(self) -> str:
        """The family's short name, e.g. "DDIM" for a DDIMSampler (titles, progress labels)."""
        return type(self).__name__.removesuffix("Sampler")

    @property
    def nfe(self) -> int:
        """Network calls per :meth:`sample`: one per visited timestep."""
        return len(self.timesteps)

    def timesteps_from(self, start_t: int | None = None) -> list[float]:
        """The timesteps a chain started at x_{start_t} visits, descending: start_t, then the
        sampler's own timesteps below it (editing starts mid-chain: SDEdit, RePaint). None, or
        start_t = T on a grid that starts at T, gives :attr:`timesteps`."""
        if start_t is None:
            return self.timesteps
        total = self.schedule.timesteps
        require_int(f"start_t (a timestep of T={total})", start_t, minimum=1, maximum=total)
        return [int(start_t)] + [t for t in self.timesteps if t < start_t]

    def _step_pairs(self, start_t: int | None = None) -> list[tuple[float, float]]:
        steps = self.timesteps_from(start_t)
        return list(zip(steps, steps[1:] + [0]))

    def _new_state(self) -> dict[str, Any]:
        """Per-chain memory handed to every :meth:`_step` (multistep solvers keep history here)."""
        return {}

    def _advance(
        self,
        denoise: Denoiser,
        x: torch.Tensor,
        t: float,
        t_prev: float,
        generator: torch.Generator | None,
        state: dict[str, Any],
    ) -> torch.Tensor:
        """One step x_t -> x_{t_prev}: one network call, then :meth:`_step`. Samplers that call
        the network more than once per step (Heun) or move x_t first (EDM's churn) override it."""
        eps, x0 = denoise(x, t)
        return self._step(x, eps, x0, t, t_prev, generator, state)

    @abstractmethod
    def _step(
        self,
        x: torch.Tensor,
        eps: torch.Tensor,
        x0: torch.Tensor,
        t: float,
        t_prev: float,
        generator: torch.Generator | None,
        state: dict[str, Any],
    ) -> torch.Tensor:
        """One reverse step x_t -> x_{t_prev} given the (guided, scaled) eps and its x0_hat."""

    def _time_input(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return torch.full(
            (x.shape[0],), t / self.schedule.timesteps, device=x.device, dtype=x.dtype
        )

    @staticmethod
    def _guided(
        call: Callable, x: torch.Tensor, t_in: torch.Tensor, context, guidance_scale: float
    ):
        """call(x, t, c), or (1 + w) call(x, c) - w call(x, null) in one batched call; ``call``
        returns a tensor or a tuple of tensors (each combined the same way)."""
        if context is None or guidance_scale == 0:
            return call(x, t_in, context)
        both = call(
            torch.cat([x, x]),
            torch.cat([t_in, t_in]),
            torch.cat([context, torch.zeros_like(context)]),
        )
        w = guidance_scale

        def combine(out: torch.Tensor) -> torch.Tensor:
            cond, null = out.chunk(2)
            return (1.0 + w) * cond - w * null

        return tuple(combine(o) for o in both) if isinstance(both, tuple) else combine(both)

    def predict_eps(
        self,
        model: Model,
        x: torch.Tensor,
        t: float,
        context: torch.Tensor | None,
        guidance_scale: float = 0.0,
    ) -> torch.Tensor:
        """eps(x_t, c), guided as (1 + w) eps(x, c) - w eps(x, null) in one batched call if w > 0
        (not yet divided by ``eps_scale``)."""
        return self._guided(model, x, self._time_input(x, t), context, guidance_scale)

    def denoise(
        self,
        model: Model,
        x: torch.Tensor,
        t: float,
        context: torch.Tensor | None,
        guidance_scale: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, x0_hat) at x_t: the guided eps divided by ``eps_scale``, and the clean-image
        estimate consistent with it (clamped with ``clip_denoised``). One network call.

        Guidance combines x0 the same way as eps: both are affine in the model's output with the
        same x_t, so guiding either one gives the same step.
        """
        alpha_bar = self._alpha_bar(t)
        both = getattr(model, "eps_and_x0", None)
        if callable(both):
            eps, x0 = self._guided(both, x, self._time_input(x, t), context, guidance_scale)
        else:
            eps, x0 = self.predict_eps(model, x, t, context, guidance_scale), None
        if self.eps_scale != 1.0:
            eps = eps / self.eps_scale
            if alpha_bar > 0:
                x0 = None  # recompute from the scaled eps below
        if x0 is None:
            if alpha_bar == 0:
                raise ValueError(
                    f"alpha_bar_t = 0 at t = {t} (a zero-terminal-SNR schedule): x0 cannot be "
                    "computed from eps; sample a v- or x0-prediction model (its eps_and_x0)"
                )
            x0 = (x - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            if alpha_bar < 1:  # keep eps consistent with the clipped x0_hat
                eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)
        return eps, x0

    @staticmethod
    def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """z ~ N(0, I) drawn on the generator's device (a CPU generator reproduces on any device)."""
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)

    def _check_inputs(
        self, noise: torch.Tensor, context: torch.Tensor | None, guidance_scale: float
    ) -> None:
        if noise.ndim != 4:
            raise ValueError(f"noise must be (B, C, H, W), got shape {tuple(noise.shape)}")
        if context is not None and (context.ndim != 2 or context.shape[0] != noise.shape[0]):
            raise ValueError(
                f"context must be (B, K) with B = {noise.shape[0]} (the noise batch), "
                f"got shape {tuple(context.shape)}"
            )
        if not guidance_scale >= 0:
            raise InputError(f"guidance_scale must be >= 0, got {guidance_scale}")

    def iter_steps(
        self,
        model: Model,
        noise: torch.Tensor,
        context: torch.Tensor | None = None,
        guidance_scale: float = 0.0,
        generator: torch.Generator | None = None,
        on_step: StepCallback | None = None,
        start_t: int | None = None,
    ) -> Iterator[tuple[float, torch.Tensor]]:
        """Run the chain from x_T = noise; yield (t_prev, x_{t_prev}) after every step.

        The last item is (0, final images). Runs under ``torch.inference_mode``. ``on_step``, if
        given, is called after every step as ``on_step(i, n, t_prev, x)`` with i = 1..n. With
        ``start_t``, ``noise`` is x_{start_t} and the chain visits :meth:`timesteps_from`.
        """
        self._check_inputs(noise, context, guidance_scale)
        if context is not None:
            context = context.to(device=noise.device, dtype=noise.dtype)
        x = noise
        pairs = self._step_pairs(start_t)
        state = self._new_state()

        def denoise(x_t: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
            return self.denoise(model, x_t, t, context, guidance_scale)

        for index, (t, t_prev) in enumerate(pairs, start=1):
            with torch.inference_mode():
                x = self._advance(denoise, x, t, t_prev, generator, state)
            if on_step is not None:
                on_step(index, len(pairs), t_prev, x)
            yield t_prev, x

    def sample(
        self,
        model: Model,
        noise: torch.Tensor,
        context: torch.Tensor | None = None,
        guidance_scale: float = 0.0,
        generator: torch.Generator | None = None,
        on_step: StepCallback | None = None,
        start_t: int | None = None,
    ) -> torch.Tensor:
        """Images (B, C, H, W) from noise x_T (B, C, H, W), given context (B, K) or None.

        ``on_step(i, n, t_prev, x)`` is called after each of the n steps (progress, stop checks).
        With ``start_t``, ``noise`` is x_{start_t} (e.g. a noised image) and the chain starts there.
        """
        steps = self.iter_steps(model, noise, context, guidance_scale, generator, on_step, start_t)
        ((_, images),) = deque(steps, maxlen=1)  # keep only the last step's images in memory
        return images

    def trajectory(
        self,
        model: Model,
        noise: torch.Tensor,
        every: int = 20,
        context: torch.Tensor | None = None,
        guidance_scale: float = 0.0,
        generator: torch.Generator | None = None,
        on_step: StepCallback | None = None,
        start_t: int | None = None,
    ) -> tuple[torch.Tensor, list[float]]:
        """Frames for an animation: x_T (x_{start_t}), then every ``every``-th step, always ending
        on the images.

        Returns (frames (F, B, C, H, W), the timestep of each frame).
        """
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        frames, times = [noise], [self.timesteps_from(start_t)[0]]
        steps = self.iter_steps(model, noise, context, guidance_scale, generator, on_step, start_t)
        for i, (t_prev, x) in enumerate(steps, start=1):
            if i % every == 0 or t_prev == 0:
                frames.append(x)
                times.append(t_prev)
        return torch.stack(frames), times

    def _options_repr(self) -> str:
        parts = [f"eps_scale={self.eps_scale:g}"] if self.eps_scale != 1.0 else []
        return "".join(
            f", {p}" for p in parts + (["clip_denoised=True"] if self.clip_denoised else [])
        )
