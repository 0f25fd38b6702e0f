"""Editing an existing image with a trained model: SDEdit (img2img) and RePaint (inpainting).

Both work with every sampler family: they start the sampler's chain mid-way
(:meth:`Sampler.timesteps_from`) and use its own step rule.

SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
Equations"): noise the guide image x_g to t0 = round(strength T) and run the reverse chain from there,
with any context (another class's: a class swap; a mix: a blend):

    x_{t0} = sqrt(alpha_bar_{t0}) x_g + sqrt(1 - alpha_bar_{t0}) eps,    then x_{t0} -> ... -> x_0.

strength 0.4-0.6 keeps the layout; strength 1 starts at t = T, where x_T is almost pure noise (exactly
so at zero terminal SNR): plain sampling.

RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models"):
with a mask m (1 = a known pixel, kept; 0 = a pixel to fill), after every reverse step t -> t_prev

    x_{t_prev} = m * q_sample(x_known, t_prev) + (1 - m) * x_{t_prev}^{sampled},

so the known pixels are exactly x_known at t_prev = 0. Resampling (their section 4.2): after
every ``jump_length`` steps the chain jumps back ``jump_length`` steps by forward noising,

    x_{t_b} = sqrt(alpha_bar_{t_b} / alpha_bar_{t_a}) x_{t_a} + sqrt(1 - alpha_bar_{t_b} / alpha_bar_{t_a}) z
    (t_b > t_a),

and redoes them, ``resamplings`` times in all, which lets the filled region agree with the known
one (their defaults: 250 steps, jump_length 10, resamplings 10; resamplings = 1 is no jump).
Steps and jumps move along the sampler's grid, so they apply to DDIM and DPM-Solver too; a
multistep solver's history restarts after each jump (its next step is first order).

Images are float (B, C, H, W) in [-1, 1]; a mask broadcasts against them ((B or 1, 1 or C, H, W)).
"""

from __future__ import annotations

import math

import torch

from diffusion_lab.diffusion.samplers.base import Model, Sampler, StepCallback
from diffusion_lab.utils.checks import InputError, is_number, require_int


def start_timestep(strength: float, total: int) -> int:
    """t0 = round(strength T), at least 1, for a strength in (0, 1]."""
    if not (is_number(strength) and 0.0 < strength <= 1.0):
        raise InputError(
            f"strength must be in (0, 1] (the share of the T={total} timesteps to redo), "
            f"got {strength!r}"
        )
    return max(1, round(strength * total))


def noise_to(
    sampler: Sampler,
    image: torch.Tensor,
    t: int,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) image + sqrt(1 - alpha_bar_t) noise, noise drawn when not given."""
    if noise is None:
        noise = sampler._noise_like(image, generator)
    steps = torch.full((image.shape[0],), t, dtype=torch.long, device=image.device)
    return sampler.schedule.q_sample(image, steps, noise.to(image))


def check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"image must be a float tensor (B, C, H, W) in [-1, 1], got {shape}")


def sdedit(
    sampler: Sampler,
    model: Model,
    image: torch.Tensor,
    strength: float,
    context: torch.Tensor | None = None,
    guidance_scale: float = 0.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """SDEdit: images (B, C, H, W) denoised from the guide ``image`` (B, C, H, W) noised to
    t0 = round(strength T), given ``context`` (B, K) or None. ``noise`` (the eps of x_{t0})
    defaults to a draw from ``generator``. The chain visits ``sampler.timesteps_from(t0)``."""
    check_image(image)
    t0 = start_timestep(strength, sampler.schedule.timesteps)
    start = noise_to(sampler, image, t0, noise, generator)
    return sampler.sample(model, start, context, guidance_scale, generator, on_step, start_t=t0)


def check_mask(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The mask as the image's dtype and device, refused unless it broadcasts to the image and
    holds values in [0, 1]."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InputError(f"mask must be a tensor (B or 1, 1 or C, H, W), got {shape}")
    try:
        torch.broadcast_shapes(mask.shape, image.shape)
    except RuntimeError:
        raise InputError(
            f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(image.shape)}; "
            "accepted: (B or 1, 1 or C, H, W) with the images' H and W"
        ) from None
    mask = mask.to(device=image.device, dtype=image.dtype)
    if not bool(((mask >= 0) & (mask <= 1)).all()):
        raise InputError("mask values must lie in [0, 1] (1 = keep the known pixel, 0 = fill it)")
    return mask


def repaint_path(steps: int, jump_length: int = 10, resamplings: int = 1) -> list[int]:
    """The positions on a chain of ``steps`` steps (0 = its start, ``steps`` = the images) that
    RePaint visits, in order: down one step at a time, and at every ``jump_length``-th position
    from the end (the end included, the first ``jump_length`` steps not) back up ``jump_length``
    positions, ``resamplings - 1`` times (RePaint's get_schedule_jump, on positions).

    E.g. steps 6, jump_length 2, resamplings 2: 0 1 2 3 4 3 2 3 4 5 6 5 4 5 6.
    """
    for name, value in (("jump_length", jump_length), ("resamplings", resamplings)):
        require_int(f"RePaint {name}", value, minimum=1)
    jumps = {left: resamplings - 1 for left in range(0, steps - jump_length, jump_length)}
    left, path = steps, [0]
    while left >= 1:
        left -= 1
        path.append(steps - left)
        if jumps.get(left, 0) > 0:
            jumps[left] -= 1
            for _ in range(jump_length):
                left += 1
                path.append(steps - left)
    return path


def repaint_nfe(sampler: Sampler, start_t: int | None, jump_length: int, resamplings: int) -> int:
    """Network calls of :func:`inpaint`: one per step down its path."""
    path = repaint_path(len(sampler.timesteps_from(start_t)), jump_length, resamplings)
    return sum(1 for a, b in zip(path, path[1:]) if b > a)


def inpaint(
    sampler: Sampler,
    model: Model,
    image: torch.Tensor,
    mask: torch.Tensor,
    context: torch.Tensor | None = None,
    guidance_scale: float = 0.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    strength: float = 1.0,
    jump_length: int = 10,
    resamplings: int = 1,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """RePaint: images (B, C, H, W) whose pixels with mask 1 are ``image``'s and whose others
    are sampled to agree with them, given ``context`` (B, K) or None.

    The chain starts at t0 = round(strength T) from ``image`` noised there (with ``noise``, else
    a draw from ``generator``: at strength 1 nearly pure noise) and follows
    :func:`repaint_path` over ``sampler.timesteps_from(t0)``. ``on_step(i, n, t, x)`` is called
    after each of the n moves of the path (steps and jumps).
    """
    check_image(image)
    mask = check_mask(mask, image)
    t0 = start_timestep(strength, sampler.schedule.timesteps)
    sampler._check_inputs(image, context, guidance_scale)
    if context is not None:
        context = context.to(device=image.device, dtype=image.dtype)
    times = sampler.timesteps_from(t0) + [0]
    path = repaint_path(len(times) - 1, jump_length, resamplings)
    alpha_bars = sampler.schedule.alpha_bars.tolist()
    x = noise_to(sampler, image, t0, noise, generator)
    state = sampler._new_state()
    for index, (here, there) in enumerate(zip(path, path[1:]), start=1):
        t, t_next = times[here], times[there]
        with torch.inference_mode():
            if there > here:  # a reverse step, then the known pixels noised to t_next
                eps, x0 = sampler.denoise(model, x, t, context, guidance_scale)
                x = sampler._step(x, eps, x0, t, t_next, generator, state)
                known = noise_to(sampler, image, t_next, generator=generator)
                x = mask * known + (1.0 - mask) * x
            else:  # a jump back up: q(x_{t_next} | x_t), and a fresh solver history
                ratio = alpha_bars[t_next] / alpha_bars[t]
                z = sampler._noise_like(x, generator)
                x = math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * z
                state = sampler._new_state()
        if on_step is not None:
            on_step(index, len(path) - 1, t_next, x)
    return x
