"""DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", Algorithm 2 and its third-order extension), data prediction.

Notation: alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t /
sigma_t) (half the log-SNR, increasing as t falls), m_i = x0_hat at the i-th most recent visited
timestep s_i (s_0 the current one), h = lambda_t - lambda_{s_0}, h_i = lambda_{s_i} - lambda_{s_{i+1}},
r_i = h_i / h and phi = exp(-h) - 1. One step s_0 -> t:

    order 1:  x_t = (sigma_t / sigma_{s_0}) x - alpha_t phi m_0                 (= DDIM, eta 0)
    order 2:  D_1 = (m_0 - m_1) / r_0
              x_t = (sigma_t / sigma_{s_0}) x - alpha_t phi (m_0 + D_1 / 2)    ("2M", midpoint)
    order 3:  D_10 = (m_0 - m_1) / r_0,  D_11 = (m_1 - m_2) / r_1,
              D_1 = D_10 + r_0 / (r_0 + r_1) (D_10 - D_11),  D_2 = (D_10 - D_11) / (r_0 + r_1)
              x_t = (sigma_t / sigma_{s_0}) x - alpha_t phi m_0 + alpha_t (phi / h + 1) D_1
                    - alpha_t ((phi + h) / h^2 - 1/2) D_2

(the same formulas as diffusers' DPMSolverMultistepScheduler with algorithm_type="dpmsolver++").
The first steps use the orders that the history allows (1, then 2, ...); the last step lands on
t = 0 where sigma = 0 and lambda = +inf, which only the first-order step can take (it returns
x0_hat there); and with ``lower_order_final`` and fewer than 15 steps the step before it is at
most second order, as the paper and diffusers advise for few steps.

``spacing="karras"`` visits Karras' noise levels (karras.py) at their fractional timesteps instead
of the DDIM grid. ``sde=True`` is DPM-Solver++(2M) SDE (k-diffusion's ``sample_dpmpp_2m_sde``
with eta 1 and the midpoint rule; diffusers' algorithm_type="sde-dpmsolver++"), which solves the
reverse SDE and adds fresh noise z ~ N(0, I) from the generator at every step but the last:

    order 1:  x_t = (sigma_t / sigma_{s_0}) e^{-h} x + alpha_t (1 - e^{-2h}) m_0
                    + sigma_t sqrt(1 - e^{-2h}) z
    order 2:  the same + alpha_t (1 - e^{-2h}) D_1 / 2,   D_1 = (m_0 - m_1) / r_0.
"""

from __future__ import annotations

import math

from diffusion_lab.diffusion.samplers.base import Sampler, check_steps
from diffusion_lab.diffusion.samplers.karras import sigma_grid
from diffusion_lab.diffusion.schedules import NoiseSchedule
from diffusion_lab.utils.checks import require_bool, require_int

DPM_SOLVER_ORDERS = (1, 2, 3)
LOWER_ORDER_FINAL_BELOW = 15  # diffusers' threshold for lowering the order of the last steps


class DPMSolverSampler(Sampler):
    """DPM-Solver++ multistep (2M by default) on the DDIM timestep grid or Karras' levels.

    Args:
        schedule: the noise schedule.
        steps: number of steps = network calls; timesteps round(linspace(T, 0, steps + 1))
            without the final 0, as DDIM's, then a last step onto t = 0.
        order: 1, 2 or 3 (order 1 is DDIM with eta 0); 1 or 2 with ``sde``.
        lower_order_final: at most second order on the step before the last when steps < 15.
        spacing: "uniform" (the DDIM grid) or "karras" (with ``rho``, ``sigma_min``,
            ``sigma_max`` as for :class:`EulerSampler`).
        sde: DPM-Solver++(2M) SDE, the stochastic variant (noise from the generator).
        clip_denoised, eps_scale: as for every sampler.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        steps: int = 20,
        order: int = 2,
        lower_order_final: bool = True,
        clip_denoised: bool = False,
        eps_scale: float = 1.0,
        spacing: str = "uniform",
        rho: float = 7.0,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        sde: bool = False,
    ) -> None:
        steps = check_steps(steps, schedule.timesteps, "DPM-Solver")
        require_int("DPM-Solver order", order, minimum=1, maximum=max(DPM_SOLVER_ORDERS))
        require_bool("DPM-Solver sde", sde)
        if sde and order == 3:
            raise ValueError("DPM-Solver++ SDE takes order 1 or 2 (as diffusers), got order 3")
        super().__init__(schedule, clip_denoised, eps_scale)
        self.steps = steps
        self.order = int(order)
        self.lower_order_final = bool(lower_order_final)
        self.spacing, self.rho, self.sde = spacing, float(rho), sde
        self._timesteps, _ = sigma_grid(self._levels, steps, spacing, rho, sigma_min, sigma_max)
        self._index = {t: i for i, t in enumerate(self._timesteps)}

    @property
    def timesteps(self) -> list[float]:
        return list(self._timesteps)

    def step_orders(self) -> list[int]:
        """The order used at each step (before any cut for an infinite lambda in the history)."""
        orders = []
        for i in range(1, self.steps + 1):
            order = min(self.order, i)
            if i == self.steps:
                order = 1
            elif (
                i == self.steps - 1
                and self.lower_order_final
                and self.steps < LOWER_ORDER_FINAL_BELOW
            ):
                order = min(order, 2)
            orders.append(order)
        return orders

    def _alpha_sigma_lambda(self, t: float) -> tuple[float, float, float]:
        alpha_bar = self._alpha_bar(t)
        alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        if alpha == 0:
            return alpha, sigma, -math.inf
        if sigma == 0:
            return alpha, sigma, math.inf
        return alpha, sigma, math.log(alpha) - math.log(sigma)

    def _new_state(self):
        return {"x0": [], "lambda": [], "orders": self.step_orders()}

    def _step(self, x, eps, x0, t, t_prev, generator, state):
        alpha_s, sigma_s, lambda_s = self._alpha_sigma_lambda(t)
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(t_prev)
        history_x0, history_lambda = state["x0"], state["lambda"]
        history_x0.insert(0, x0)
        history_lambda.insert(0, lambda_s)
        del history_x0[self.order :], history_lambda[self.order :]
        # an infinite lambda (alpha_bar = 0 at t = T) in the history makes its r infinite and its
        # correction vanish: take the lower order instead of computing inf / inf
        finite = next(
            (i for i, lam in enumerate(history_lambda) if not math.isfinite(lam)),
            len(history_lambda),
        )
        # a chain started off the grid (an edit's start_t) begins with one first-order step
        order = min(state["orders"][self._index.get(t, 0)], max(finite, 1))

        h = lambda_t - lambda_s
        if self.sde:
            noise_levels = (sigma_s, alpha_t, sigma_t)
            return self._sde_step(x, history_x0, history_lambda, order, h, noise_levels, generator)
        phi = math.expm1(-h)  # exp(-h) - 1; -1 on the step onto t = 0 (h = inf)
        ratio = sigma_t / sigma_s
        x_next = ratio * x - (alpha_t * phi) * x0
        if order == 1:
            return x_next
        m0, m1 = history_x0[0], history_x0[1]
        r0 = (lambda_s - history_lambda[1]) / h
        d10 = (m0 - m1) / r0
        if order == 2:
            return x_next - (0.5 * alpha_t * phi) * d10
        m2 = history_x0[2]
        r1 = (history_lambda[1] - history_lambda[2]) / h
        d11 = (m1 - m2) / r1
        d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11)
        d2 = (d10 - d11) / (r0 + r1)
        return x_next + (alpha_t * (phi / h + 1.0)) * d1 - (alpha_t * ((phi + h) / h**2 - 0.5)) * d2

    def _sde_step(self, x, history_x0, history_lambda, order, h, noise_levels, generator):
        """DPM-Solver++(2M) SDE, data prediction (diffusers' ``dpm_solver_first_order_update``
        and ``multistep_dpm_solver_second_order_update`` for "sde-dpmsolver++", midpoint);
        ``noise_levels`` = (sigma_s, alpha_t, sigma_t)."""
        sigma_s, alpha_t, sigma_t = noise_levels
        decay = math.exp(-h)  # 0 on the step onto t = 0 and on the step from alpha_bar = 0
        gain = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
        m0 = history_x0[0]
        x_next = (sigma_t / sigma_s * decay) * x + (alpha_t * gain) * m0
        if order == 2:
            r0 = (history_lambda[0] - history_lambda[1]) / h
            x_next = x_next + (0.5 * alpha_t * gain / r0) * (m0 - history_x0[1])
        if sigma_t > 0:
            x_next = x_next + (sigma_t * math.sqrt(gain)) * self._noise_like(x, generator)
        return x_next

    def __repr__(self) -> str:
        options = (
            f", spacing={self.spacing!r}, rho={self.rho:g}" if self.spacing != "uniform" else ""
        )
        options += ", sde=True" if self.sde else ""
        return (
            f"DPMSolverSampler(T={self.schedule.timesteps}, steps={self.steps}, "
            f"order={self.order}{options}{self._options_repr()})"
        )
