"""DDPM and DDIM samplers with classifier-free guidance.

A model is any callable ``model(x, t, context) -> eps`` with x (B, C, H, W), t = timestep / T as a
float tensor (B,), context (B, K) or None (the null context). Samplers own no weights: they hold a
:class:`NoiseSchedule` and the step rule, and run on the noise tensor's device and dtype.

Every step first predicts the noise, with guidance (Ho & Salimans 2022) when w > 0:

    eps~ = (1 + w) eps(x_t, c) - w eps(x_t, null)        (one batched forward of 2B images)

then estimates the clean image x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps~) / sqrt(alpha_bar_t).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator

import torch

from diffusion_lab.diffusion.schedules import NoiseSchedule

Model = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
# called after every step with (step index from 1, steps in all, t_prev, x_{t_prev}); for progress
# displays and stop checks (an exception raised by it ends the chain there)
StepCallback = Callable[[int, int, int, torch.Tensor], None]

DDPM_VARIANCES = ("beta", "posterior")


class NFECounter:
    """Wraps a model and counts its forward calls (network function evaluations).

    With guidance each call evaluates a doubled batch (conditional + null) in one forward.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None):
        self.calls += 1
        return self.model(x, t, context)


class Sampler(ABC):
    """Shared machinery: guidance, x0 estimation, the step loop and trajectories."""

    def __init__(self, schedule: NoiseSchedule, clip_denoised: bool = False) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.clip_denoised = clip_denoised
        # Python floats: every image of a batch shares t, and float64 tables need not move devices.
        self._alpha_bars = schedule.alpha_bars.tolist()
        self._betas = schedule.betas.tolist()

    @property
    @abstractmethod
    def timesteps(self) -> list[int]:
        """The timesteps the sampler visits, descending; it ends on t = 0 after the last."""

    @property
    def nfe(self) -> int:
        """Network calls per :meth:`sample`: one per visited timestep."""
        return len(self.timesteps)

    def _step_pairs(self) -> list[tuple[int, int]]:
        steps = self.timesteps
        return list(zip(steps, steps[1:] + [0]))

    @abstractmethod
    def _step(
        self,
        x: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        t_prev: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """One reverse step x_t -> x_{t_prev} given the (guided) noise prediction eps."""

    def predict_eps(
        self,
        model: Model,
        x: torch.Tensor,
        t: int,
        context: torch.Tensor | None,
        guidance_scale: float = 0.0,
    ) -> torch.Tensor:
        """eps(x_t, c), guided as (1 + w) eps(x, c) - w eps(x, null) in one batched call if w > 0."""
        t_in = torch.full(
            (x.shape[0],), t / self.schedule.timesteps, device=x.device, dtype=x.dtype
        )
        if context is None or guidance_scale == 0:
            return model(x, t_in, context)
        both = model(
            torch.cat([x, x]),
            torch.cat([t_in, t_in]),
            torch.cat([context, torch.zeros_like(context)]),
        )
        eps_cond, eps_null = both.chunk(2)
        return (1.0 + guidance_scale) * eps_cond - guidance_scale * eps_null

    def _predict_x0(self, x: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        alpha_bar = self._alpha_bars[t]
        x0 = (x - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        return x0.clamp(-1.0, 1.0) if self.clip_denoised else x0

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
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")

    def iter_steps(
        self,
        model: Model,
        noise: torch.Tensor,
        context: torch.Tensor | None = None,
        guidance_scale: float = 0.0,
        generator: torch.Generator | None = None,
        on_step: StepCallback | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Run the chain from x_T = noise; yield (t_prev, x_{t_prev}) after every step.

        The last item is (0, final images). Runs under ``torch.inference_mode``. ``on_step``, if
        given, is called after every step as ``on_step(i, n, t_prev, x)`` with i = 1..n.
        """
        self._check_inputs(noise, context, guidance_scale)
        if context is not None:
            context = context.to(device=noise.device, dtype=noise.dtype)
        x = noise
        pairs = self._step_pairs()
        for index, (t, t_prev) in enumerate(pairs, start=1):
            with torch.inference_mode():
                eps = self.predict_eps(model, x, t, context, guidance_scale)
                x = self._step(x, eps, t, t_prev, generator)
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
    ) -> torch.Tensor:
        """Images (B, C, H, W) from noise x_T (B, C, H, W), given context (B, K) or None.

        ``on_step(i, n, t_prev, x)`` is called after each of the n steps (progress, stop checks).
        """
        steps = self.iter_steps(model, noise, context, guidance_scale, generator, on_step)
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
    ) -> tuple[torch.Tensor, list[int]]:
        """Frames for an animation: x_T, then every ``every``-th step, always ending on the images.

        Returns (frames (F, B, C, H, W), the timestep of each frame).
        """
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        frames, times = [noise], [self.timesteps[0]]
        for i, (t_prev, x) in enumerate(
            self.iter_steps(model, noise, context, guidance_scale, generator, on_step), start=1
        ):
            if i % every == 0 or t_prev == 0:
                frames.append(x)
                times.append(t_prev)
        return torch.stack(frames), times


class DDPMSampler(Sampler):
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2) over t = T..1.

    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,
    with sigma_t^2 = beta_t (``variance="beta"``, as in the course) or the posterior variance
    beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (``"posterior"``), and z = 0 at t = 1.
    With ``clip_denoised`` the mean is the posterior mean of the clipped x0_hat (DDPM eq. 7).
    """

    def __init__(
        self, schedule: NoiseSchedule, variance: str = "beta", clip_denoised: bool = False
    ) -> None:
        if variance not in DDPM_VARIANCES:
            raise ValueError(f"unknown DDPM variance {variance!r}; accepted: beta, posterior")
        super().__init__(schedule, clip_denoised)
        self.variance = variance
        table = schedule.betas if variance == "beta" else schedule.posterior_variance()
        self._sigmas = table.sqrt().tolist()

    @property
    def timesteps(self) -> list[int]:
        return list(range(self.schedule.timesteps, 0, -1))

    def _step(self, x, eps, t, t_prev, generator):
        beta, alpha_bar = self._betas[t], self._alpha_bars[t]
        alpha = 1.0 - beta
        if self.clip_denoised:
            x0 = self._predict_x0(x, eps, t)
            alpha_bar_prev = self._alpha_bars[t - 1]
            mean = (math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)) * x0 + (
                math.sqrt(alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
            ) * x
        else:
            mean = (x - (beta / math.sqrt(1.0 - alpha_bar)) * eps) / math.sqrt(alpha)
        if t == 1:
            return mean
        return mean + self._sigmas[t] * self._noise_like(x, generator)

    def __repr__(self) -> str:
        return f"DDPMSampler(T={self.schedule.timesteps}, variance={self.variance!r})"


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2020, eq. 12) on a subsequence of ``steps`` timesteps.

    Timesteps: round(linspace(T, 0, steps + 1)) without the final 0 (T=500, 25 steps: 500, 480,
    ..., 20), the last step landing on alpha_bar_0 = 1. One step t -> t_prev:

        sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)
        x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z.

    eta = 0 is deterministic (the course's DDIM); eta = 1 over all T steps is DDPM with the
    posterior variance.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        steps: int = 25,
        eta: float = 0.0,
        clip_denoised: bool = False,
    ) -> None:
        total = schedule.timesteps
        if isinstance(steps, bool) or int(steps) != steps or not 1 <= steps <= total:
            raise ValueError(f"DDIM steps must be an integer in 1..T={total}, got {steps!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
        super().__init__(schedule, clip_denoised)
        self.steps = int(steps)
        self.eta = float(eta)
        grid = torch.linspace(total, 0, self.steps + 1, dtype=torch.float64).round().long()
        self._timesteps = grid[:-1].tolist()

    @property
    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    def _step(self, x, eps, t, t_prev, generator):
        alpha_bar, alpha_bar_prev = self._alpha_bars[t], self._alpha_bars[t_prev]
        x0 = self._predict_x0(x, eps, t)
        if self.clip_denoised:  # keep eps consistent with the clipped x0_hat
            eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)
        sigma = self.eta * math.sqrt(
            (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)
        )
        direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0))
        x_prev = math.sqrt(alpha_bar_prev) * x0 + direction * eps
        if sigma > 0:
            x_prev = x_prev + sigma * self._noise_like(x, generator)
        return x_prev

    def __repr__(self) -> str:
        return f"DDIMSampler(T={self.schedule.timesteps}, steps={self.steps}, eta={self.eta})"
