"""Adagrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlgrad.optim.optimizer import Optimizer, ParamsT

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer, 2011).

    .. math::
       \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \theta_0 \text{ (params)}, f(\theta)
                \text{ (objective)}, \lambda \text{ (weight decay)}, \eta \text{ (lr decay)},
                \tau \text{ (initial accumulator value)}, \epsilon                         \\
            &\textbf{initialize}: \mathit{sum}_0 \leftarrow \tau                           \\
            &\textbf{for}\: t = 1 \:\textbf{to}\: \ldots \:\textbf{do}                     \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})                           \\
            &\quad \tilde\gamma \leftarrow \gamma / (1 + (t - 1) \eta)                     \\
            &\quad \textbf{if}\: \lambda \neq 0: \; g_t \leftarrow g_t + \lambda \theta_{t-1} \\
            &\quad \mathit{sum}_t \leftarrow \mathit{sum}_{t-1} + g_t^2                     \\
            &\quad \theta_t \leftarrow \theta_{t-1}
                - \tilde\gamma \, g_t / (\sqrt{\mathit{sum}_t} + \epsilon)                  \\
       \end{aligned}

    State per parameter: ``step`` (t, an int) and ``sum``. As in torch, the state of every
    parameter given to the constructor exists from the start (``step = 0``,
    ``sum = initial_accumulator_value``), so a fresh optimizer's state_dict already holds it.
    Unlike torch, a parameter group's own ``initial_accumulator_value`` is honoured (torch always
    uses the constructor's value).

    Weight decay is the coupled L2 penalty (the same as ``lambda / 2 * ||theta||^2`` in the loss):
    it is added to the gradient, so it also enters ``sum`` and is divided by ``sqrt(sum)``.

    Args:
        params: Tensors or parameter groups (dicts) to optimize.
        lr: learning rate gamma (default 1e-2).
        lr_decay: eta, the step size decays as ``lr / (1 + (t - 1) * lr_decay)`` (default 0).
        weight_decay: L2 penalty lambda (default 0).
        initial_accumulator_value: starting value of ``sum`` (default 0).
        eps: added to the denominator for numerical stability (default 1e-10).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(self.state[p], p.data, group)

    @staticmethod
    def _init_state(state: dict[str, Any], param: np.ndarray, group: Mapping[str, Any]) -> None:
        state["step"] = 0
        state["sum"] = np.full_like(param, group["initial_accumulator_value"])

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        if not 0.0 <= group["lr"]:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["lr_decay"]:
            raise ValueError(f"Invalid lr_decay value: {group['lr_decay']}")
        if not 0.0 <= group["weight_decay"]:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if not 0.0 <= group["initial_accumulator_value"]:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {group['initial_accumulator_value']}"
            )
        if not 0.0 <= group["eps"]:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update; see the class docstring for the rule."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr = group["lr"]
            lr_decay = group["lr_decay"]
            weight_decay = group["weight_decay"]
            eps = group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                param = p.data
                state = self.state[p]
                if not state:  # a parameter added later with add_param_group
                    self._init_state(state, param, group)
                state["step"] += 1
                step = state["step"]

                grad = p.grad
                if weight_decay != 0:
                    grad = grad + weight_decay * param
                clr = lr / (1 + (step - 1) * lr_decay)

                state_sum = state["sum"]
                state_sum += grad * grad
                std = np.sqrt(state_sum)
                std += eps
                param -= clr * grad / std
        return loss
