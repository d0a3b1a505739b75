"""RMSprop: divide the gradient by a running root mean square of recent gradients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlgrad.optim.optimizer import Optimizer, ParamsT

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, Coursera lecture 6e), optionally centered (Graves, 2013).

    .. math::
       \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \alpha \text{ (smoothing)}, \theta_0
                \text{ (params)}, f(\theta) \text{ (objective)}, \lambda
                \text{ (weight decay)}, \mu \text{ (momentum)}, \textit{centered}, \epsilon \\
            &\textbf{initialize}: v_0 \leftarrow 0 \text{ (square average)},
                b_0 \leftarrow 0 \text{ (buffer)}, g^{ave}_0 \leftarrow 0                   \\
            &\textbf{for}\: t = 1 \:\textbf{to}\: \ldots \:\textbf{do}                     \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})                           \\
            &\quad \textbf{if}\: \lambda \neq 0: \; g_t \leftarrow g_t + \lambda \theta_{t-1} \\
            &\quad v_t \leftarrow \alpha v_{t-1} + (1 - \alpha) g_t^2                       \\
            &\quad \tilde v_t \leftarrow v_t                                                \\
            &\quad \textbf{if}\: \textit{centered}:                                         \\
            &\qquad g^{ave}_t \leftarrow \alpha g^{ave}_{t-1} + (1 - \alpha) g_t            \\
            &\qquad \tilde v_t \leftarrow \tilde v_t - (g^{ave}_t)^2                        \\
            &\quad \textbf{if}\: \mu > 0:                                                   \\
            &\qquad b_t \leftarrow \mu b_{t-1} + g_t / (\sqrt{\tilde v_t} + \epsilon)       \\
            &\qquad \theta_t \leftarrow \theta_{t-1} - \gamma b_t                           \\
            &\quad \textbf{else}:                                                           \\
            &\qquad \theta_t \leftarrow \theta_{t-1} - \gamma g_t / (\sqrt{\tilde v_t}
                + \epsilon)                                                                 \\
       \end{aligned}

    State per parameter (torch's names): ``step`` (t), ``square_avg`` (v), ``momentum_buffer``
    (b, only if momentum > 0) and ``grad_avg`` (g^ave, only if centered). The centered variant
    normalizes by an estimate of the gradient's variance instead of its raw second moment.

    Weight decay is the coupled L2 penalty (the same as ``lambda / 2 * ||theta||^2`` in the loss):
    it is added to the gradient before the averages, so it is normalized like the gradient.

    Args:
        params: Tensors or parameter groups (dicts) to optimize.
        lr: learning rate gamma (default 1e-2).
        alpha: smoothing constant of the averages (default 0.99).
        eps: added to the denominator for numerical stability (default 1e-8).
        weight_decay: L2 penalty lambda (default 0).
        momentum: momentum factor mu (default 0).
        centered: normalize by the estimated variance of the gradient (default False).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        if not 0.0 <= group["lr"]:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["eps"]:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        if not 0.0 <= group["momentum"]:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if not 0.0 <= group["weight_decay"]:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if not 0.0 <= group["alpha"]:
            raise ValueError(f"Invalid alpha value: {group['alpha']}")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update; see the class docstring for the rule."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr = group["lr"]
            alpha = group["alpha"]
            eps = group["eps"]
            weight_decay = group["weight_decay"]
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                param = p.data
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = np.zeros_like(param)
                    if momentum > 0:
                        state["momentum_buffer"] = np.zeros_like(param)
                    if group["centered"]:
                        state["grad_avg"] = np.zeros_like(param)
                state["step"] += 1

                grad = p.grad
                if weight_decay != 0:
                    grad = grad + weight_decay * param

                square_avg = state["square_avg"]
                square_avg *= alpha
                square_avg += (1 - alpha) * grad * grad

                if group["centered"]:
                    grad_avg = state["grad_avg"]
                    grad_avg *= alpha
                    grad_avg += (1 - alpha) * grad
                    avg = np.sqrt(square_avg - grad_avg * grad_avg)
                else:
                    avg = np.sqrt(square_avg)
                avg += eps

                if momentum > 0:
                    momentum_buffer = state["momentum_buffer"]
                    momentum_buffer *= momentum
                    momentum_buffer += grad / avg
                    param -= lr * momentum_buffer
                else:
                    param -= lr * grad / avg
        return loss
