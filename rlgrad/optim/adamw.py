"""AdamW: Adam with decoupled weight decay."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlgrad.optim.adam import _adam_update, _adam_update_group, _check_adam_hyperparameters
from rlgrad.optim.optimizer import Optimizer, ParamsT

__all__ = ["AdamW"]


class AdamW(Optimizer):
    r"""AdamW (Loshchilov & Hutter, 2019): Adam whose weight decay shrinks the parameters
    directly instead of being added to the gradient.

    .. math::
       \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2 \text{ (betas)}, \theta_0
                \text{ (params)}, f(\theta) \text{ (objective)}, \lambda
                \text{ (weight decay)}, \textit{amsgrad}, \epsilon                           \\
            &\textbf{initialize}: m_0 \leftarrow 0 \text{ (first moment)},
                v_0 \leftarrow 0 \text{ (second moment)}, v_0^{max} \leftarrow 0              \\
            &\textbf{for}\: t = 1 \:\textbf{to}\: \ldots \:\textbf{do}                      \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})                            \\
            &\quad \theta_{t-1} \leftarrow \theta_{t-1} - \gamma \lambda \theta_{t-1}         \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t                         \\
            &\quad v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2                       \\
            &\quad \widehat{m_t} \leftarrow m_t / (1 - \beta_1^t)                             \\
            &\quad \textbf{if}\: \textit{amsgrad}:                                           \\
            &\qquad v_t^{max} \leftarrow \max(v_{t-1}^{max}, v_t)                             \\
            &\qquad \widehat{v_t} \leftarrow v_t^{max} / (1 - \beta_2^t)                      \\
            &\quad \textbf{else}: \; \widehat{v_t} \leftarrow v_t / (1 - \beta_2^t)           \\
            &\quad \theta_t \leftarrow \theta_{t-1}
                - \gamma \, \widehat{m_t} / (\sqrt{\widehat{v_t}} + \epsilon)                 \\
       \end{aligned}

    State per parameter (torch's names): ``step`` (t, an int), ``exp_avg`` (m), ``exp_avg_sq``
    (v) and, with amsgrad, ``max_exp_avg_sq`` (v^max).

    **Weight decay, three different things.** (1) An L2 term ``lambda / 2 * ||theta||^2`` in the
    loss adds ``lambda * theta`` to the gradient. (2) :class:`~rlgrad.optim.Adam`'s
    ``weight_decay`` does the same inside the optimizer (*coupled*): the decay passes through m
    and v and is divided by ``sqrt(v_hat)``. (3) AdamW *decouples* it: ``theta *= 1 - lr *
    weight_decay`` before the Adam step, which sees only the loss gradient, so every coordinate
    shrinks by the same factor however large its gradients. Note that the decay is scaled by lr
    (as in torch), so a scheduler that lowers lr also lowers the decay.

    Args:
        params: Tensors or parameter groups (dicts) to optimize.
        lr: learning rate gamma (default 1e-3).
        betas: (beta1, beta2), decay rates of the moment estimates (default (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default 1e-8).
        weight_decay: decoupled decay lambda (default 1e-2).
        amsgrad: use the running maximum of v (AMSGrad) (default False).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        }
        super().__init__(params, defaults)
        self._buffers: dict[int, dict[str, Any]] = {}  # see adam._adam_update_group

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        _check_adam_hyperparameters(group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update; see the class docstring for the rule."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            weight_decay = group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if weight_decay != 0:
                for p in params:
                    p.data *= 1 - group["lr"] * weight_decay
            if _adam_update_group(params, [p.grad for p in params], self.state, group,
                                  self._buffers):
                continue
            for p in params:
                _adam_update(p.data, p.grad, self.state[p], group)
        return loss
