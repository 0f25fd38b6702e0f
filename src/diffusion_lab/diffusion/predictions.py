"""Prediction targets: what the network outputs (eps, v or x0), its training target, its min-SNR
weight, and the conversion to the ``model(x, t, context) -> eps`` that every sampler takes.

Notation (Salimans & Ho 2022): alpha = sqrt(alpha_bar_t), sigma = sqrt(1 - alpha_bar_t), so that
x_t = alpha x0 + sigma eps, and

    v   = alpha eps - sigma x0
    x0  = alpha x_t - sigma v            eps = sigma x_t + alpha v          (alpha^2 + sigma^2 = 1)
    x0  = (x_t - sigma eps) / alpha      eps = (x_t - alpha x0) / sigma.

An eps-predicting net amplifies its error by sigma / alpha in x0 (about 12x at the course's
alpha_bar_T = 0.0064, and without bound at zero terminal SNR); v keeps both directions bounded.

Every function is pure torch; alpha and sigma broadcast against the images, e.g. (B, 1, 1, 1).
"""

from __future__ import annotations

import torch
from torch import nn

from diffusion_lab.diffusion.noise_levels import alpha_bars_at
from diffusion_lab.utils.checks import InputError

PREDICTIONS = ("eps", "v", "x0")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise InputError(f"unknown prediction {prediction!r}; accepted: {', '.join(PREDICTIONS)}")
    return prediction


def alpha_sigma(
    alpha_bars: torch.Tensor, t: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for integer t (B,), shaped
    (B, 1, ..., 1) in ``like``'s dtype and device (computed in the table's float64 first)."""
    alpha_bar = alpha_bars.to(like.device)[t.to(like.device).long()]
    shape = (-1, *([1] * (like.ndim - 1)))
    alpha = alpha_bar.sqrt().to(like.dtype).reshape(shape)
    sigma = (1.0 - alpha_bar).sqrt().to(like.dtype).reshape(shape)
    return alpha, sigma


def v_from_eps_x0(eps: torch.Tensor, x0: torch.Tensor, alpha, sigma) -> torch.Tensor:
    return alpha * eps - sigma * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha, sigma) -> torch.Tensor:
    return alpha * x_t - sigma * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha, sigma) -> torch.Tensor:
    return sigma * x_t + alpha * v


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Undefined where alpha = 0 (SNR 0): an eps prediction holds no information on x0 there."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Undefined where sigma = 0 (t = 0, never a sampling step)."""
    return (x_t - alpha * x0) / sigma


def training_target(
    prediction: str, x0: torch.Tensor, eps: torch.Tensor, alpha, sigma
) -> torch.Tensor:
    """What the net learns to output for x_t = alpha x0 + sigma eps: eps, v or x0."""
    if prediction == "eps":
        return eps
    if prediction == "v":
        return v_from_eps_x0(eps, x0, alpha, sigma)
    if prediction == "x0":
        return x0
    raise ValueError(check_prediction(prediction))


def min_snr_weight(prediction: str, snr: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for an MSE on the given target.

    The weight min(SNR, gamma) belongs to the x0 loss; the same objective on an eps or a v loss
    (||eps - eps_hat||^2 = SNR ||x0 - x0_hat||^2, ||v - v_hat||^2 = (SNR + 1) ||x0 - x0_hat||^2)
    is min(SNR, gamma) / SNR for eps and min(SNR, gamma) / (SNR + 1) for v.
    """
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1.0)
    if prediction == "x0":
        return clipped
    raise ValueError(check_prediction(prediction))


def eps_and_x0_from_output(
    prediction: str, output: torch.Tensor, x_t: torch.Tensor, alpha, sigma
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_hat, x0_hat) from the net's ``output`` under the given target."""
    if prediction == "eps":
        return output, x0_from_eps(x_t, output, alpha, sigma)
    if prediction == "v":
        return eps_from_v(x_t, output, alpha, sigma), x0_from_v(x_t, output, alpha, sigma)
    if prediction == "x0":
        return eps_from_x0(x_t, output, alpha, sigma), output
    raise ValueError(check_prediction(prediction))


class EpsModel(nn.Module):
    """A net predicting ``prediction`` (v or x0; eps passes through) seen as the eps-model that
    samplers take: ``model(x, t / T, context) -> eps``, and ``model.eps_and_x0(...)`` giving x0
    as well (which samplers use where alpha_bar_t = 0 and eps cannot give it).

    ``alpha_bars``: the schedule's table (T + 1,); t / T is mapped back to the timestep, read
    from the table at integer t and interpolated in log sigma between them at a fractional t
    (:func:`~diffusion_lab.diffusion.noise_levels.alpha_bars_at`; Karras-spaced samplers).
    The net is a submodule, so ``.eval()`` and ``.to()`` reach it.
    """

    def __init__(self, net: nn.Module, prediction: str, alpha_bars: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.prediction = check_prediction(prediction)
        self.register_buffer("alpha_bars", alpha_bars.detach().clone(), persistent=False)

    def eps_and_x0(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps_hat, x0_hat), each (B, C, H, W), for x (B, C, H, W) and t / T (B,)."""
        alpha_bar = alpha_bars_at(self.alpha_bars, t.reshape(-1)).to(x.device)
        shape = (-1, *([1] * (x.ndim - 1)))
        alpha = alpha_bar.sqrt().to(x.dtype).reshape(shape)
        sigma = (1.0 - alpha_bar).sqrt().to(x.dtype).reshape(shape)
        return eps_and_x0_from_output(self.prediction, self.net(x, t, context), x, alpha, sigma)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.prediction == "eps":
            return self.net(x, t, context)
        return self.eps_and_x0(x, t, context)[0]
