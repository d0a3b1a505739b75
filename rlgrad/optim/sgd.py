"""Stochastic gradient descent, with optional heavy-ball or Nesterov momentum."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlgrad.optim.optimizer import Optimizer, ParamsT

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Gradient descent: batch, stochastic or mini-batch (by what ``grad`` was computed on), and
    heavy-ball or Nesterov momentum.

    .. math::
       \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \theta_0 \text{ (params)}, f(\theta)
                \text{ (objective)}, \lambda \text{ (weight decay)}, \mu \text{ (momentum)},
                \tau \text{ (dampening)}, \textit{nesterov}, \textit{maximize}              \\
            &\textbf{for}\: t = 1 \:\textbf{to}\: \ldots \:\textbf{do}                        \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})                              \\
            &\quad \textbf{if}\: \textit{maximize}: \; g_t \leftarrow -g_t                    \\
            &\quad \textbf{if}\: \lambda \neq 0: \; g_t \leftarrow g_t + \lambda \theta_{t-1}  \\
            &\quad \textbf{if}\: \mu \neq 0:                                                   \\
            &\qquad \textbf{if}\: t > 1: \; b_t \leftarrow \mu b_{t-1} + (1 - \tau) g_t
                \quad \textbf{else}\: b_t \leftarrow g_t                                        \\
            &\qquad \textbf{if}\: \textit{nesterov}: \; g_t \leftarrow g_t + \mu b_t
                \quad \textbf{else}\: g_t \leftarrow b_t                                        \\
            &\quad \theta_t \leftarrow \theta_{t-1} - \gamma g_t                                \\
       \end{aligned}

    ``b`` is ``state["momentum_buffer"]``; it starts as a copy of the first gradient, not as
    zeros. This is torch's update, term for term. Without momentum the optimizer keeps no state.
    Note that ``maximize`` negates the gradient only: weight decay still shrinks ``theta``.

    **Relation to the textbook heavy-ball form** ``v_t = beta v_{t-1} + alpha g_t``,
    ``theta_t = theta_{t-1} - v_t`` (alpha the learning rate, beta the momentum, v_0 = 0): with
    ``dampening = 0`` and a constant lr, multiplying the buffer recursion by gamma gives
    ``gamma b_t = mu (gamma b_{t-1}) + gamma g_t``, which is the textbook recursion for
    ``v_t = gamma b_t`` with ``beta = mu`` and ``alpha = gamma`` (and ``v_1 = gamma g_1``, as
    ``b_1 = g_1``). So both forms give the same iterates, up to rounding, as long as lr is
    constant. They differ once lr changes mid-run (a scheduler, or editing ``param_groups``):
    torch's buffer holds unscaled gradients, so a new lr rescales the whole accumulated velocity
    at once, whereas the textbook ``v`` keeps the old step sizes baked in and applies the new
    alpha only to new gradients. This class implements torch's form.

    Weight decay here is the coupled L2 penalty: adding ``lambda / 2 * ||theta||^2`` to the loss
    gives exactly the same updates. A nonzero ``dampening`` scales new gradients in the buffer by
    ``1 - tau`` (but the first gradient initializes it undamped, as in torch).

    Args:
        params: Tensors or parameter groups (dicts) to optimize.
        lr: learning rate gamma (default 1e-3, torch's default).
        momentum: momentum factor mu (default 0: plain gradient descent).
        dampening: dampening tau for momentum (default 0).
        weight_decay: L2 penalty lambda (default 0).
        nesterov: use Nesterov momentum (requires momentum > 0 and dampening = 0).
        maximize: ascend the objective instead of descending it.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        if group["lr"] < 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if group["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update; see the class docstring for the rule."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr = group["lr"]
            momentum = group["momentum"]
            dampening = group["dampening"]
            weight_decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                param = p.data
                grad = -p.grad if group["maximize"] else p.grad
                if weight_decay != 0:
                    grad = grad + weight_decay * param

                if momentum != 0:
                    state = self.state[p]
                    momentum_buffer = state.get("momentum_buffer")
                    if momentum_buffer is None:
                        momentum_buffer = state["momentum_buffer"] = np.array(
                            grad, dtype=param.dtype, copy=True
                        )
                    else:
                        momentum_buffer *= momentum
                        momentum_buffer += (1 - dampening) * grad
                    if group["nesterov"]:
                        grad = grad + momentum * momentum_buffer
                    else:
                        grad = momentum_buffer

                param -= lr * grad
        return loss
