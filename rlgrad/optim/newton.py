"""Newton's method: a step to the minimum of the local quadratic model, for small models only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rlgrad.autograd import grad
from rlgrad.optim.optimizer import Optimizer, ParamsT
from rlgrad.optim.registry import register
from rlgrad.tensor import Tensor, _leaf, concatenate, enable_grad

__all__ = ["Newton", "flat_hessian"]

DEFAULT_MAX_PARAMS = 2000


@register("newton")
class Newton(Optimizer):
    r"""Newton's method with a damped (Levenberg) Hessian, by double backprop.

    .. math::
       \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \lambda \text{ (damping)}, \theta_0
                \text{ (all params, flattened and concatenated)},
                f(\theta) \text{ (objective, the closure)}                                 \\
            &\textbf{for}\: t = 1 \:\textbf{to}\: \ldots \:\textbf{do}                     \\
            &\quad g_t \leftarrow \nabla_\theta f(\theta_{t-1})                             \\
            &\quad H_t \leftarrow \nabla^2_\theta f(\theta_{t-1})                           \\
            &\quad d_t \leftarrow (H_t + \lambda I)^{-1} g_t
                \quad \text{(numpy.linalg.solve)}                                          \\
            &\quad \theta_t \leftarrow \theta_{t-1} - \gamma \, d_t                          \\
       \end{aligned}

    With ``lr=1`` and ``damping=0`` the step lands on the stationary point of the second-order
    Taylor model, so a quadratic ``0.5 theta^T A theta - b^T theta`` (A positive definite) is
    minimised in one step, and near a minimum with a positive-definite, Lipschitz Hessian the
    error squares every step (quadratic convergence). Parameter groups may set their own ``lr``
    and ``damping``: the damping becomes a diagonal with each group's value on its coordinates,
    and each group moves by its own ``lr`` along its part of ``d``.

    **The closure is required.** It must recompute the loss with the graph (grad mode on) and
    return it as a one-element Tensor, as for ``torch.optim.LBFGS``; it may also call
    ``backward()`` (harmless: ``.grad`` is neither needed nor changed here). The Hessian is built
    over every parameter with ``requires_grad`` in every group, by one backward pass for the
    gradient (with ``create_graph=True``) and one more per Hessian row, then symmetrised
    (``(H + H^T) / 2``, which removes rounding asymmetry only). See :func:`flat_hessian`.

    **Small models only.** For n parameters a step stores n^2 floats (the Hessian), runs n + 1
    backward passes and an O(n^3) solve; the constructor raises ValueError past ``max_params``.
    For large models use a first-order optimizer, or a Hessian-free step with
    :func:`rlgrad.hvp` and :func:`rlgrad.conjugate_gradient` (as TRPO does).

    **Singular or indefinite Hessians.** ``numpy.linalg.solve`` raises only for an exactly
    singular ``H + lambda I`` (e.g. a parameter the loss ignores, with ``damping=0``); that is
    re-raised as ValueError advising a larger damping. An *indefinite* Hessian (a non-convex
    loss away from a minimum) is not detected: the solve succeeds and ``d`` points to the saddle
    or maximum of the quadratic model, so the step can increase the loss. A damping larger than
    ``-lambda_min(H)`` makes ``H + lambda I`` positive definite and the step a descent step
    again; a large damping turns Newton into gradient descent with learning rate
    ``lr / damping``. A non-finite loss, gradient or Hessian raises ValueError.

    State per parameter: ``step`` (t, an int).

    Args:
        params: Tensors or parameter groups (dicts) to optimize.
        lr: step size gamma, > 0 (default 1.0, the full Newton step).
        damping: lambda >= 0, added to the Hessian's diagonal (default 1e-4). Note that it biases
            each step in directions of curvature comparable to lambda; use 0 for an exact step
            on a well-posed convex problem.
        max_params: the largest total number of parameter elements accepted (default 2000).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        damping: float = 1e-4,
        max_params: int = DEFAULT_MAX_PARAMS,
    ) -> None:
        if isinstance(max_params, bool) or not isinstance(max_params, (int, np.integer)) or (
            max_params < 1
        ):
            raise ValueError(f"Invalid max_params value: {max_params!r} (a positive integer)")
        self.max_params = int(max_params)
        defaults = {"lr": lr, "damping": damping}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = 0

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        if not 0.0 < group["lr"]:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["damping"]:
            raise ValueError(f"Invalid damping value: {group['damping']}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, refusing it if the total size would pass ``max_params``."""
        super().add_param_group(param_group)
        n = sum(p.data.size for group in self.param_groups for p in group["params"])
        if n > self.max_params:
            self.param_groups.pop()
            raise ValueError(
                f"Newton got {n} parameters, more than max_params={self.max_params}: each step "
                f"stores the {n} x {n} Hessian ({n * n * 8 / 2**20:.1f} MiB in float64), runs "
                f"{n + 1} backward passes and an O(n^3) solve. Use a first-order optimizer or a "
                "Hessian-free step (rlgrad.hvp + rlgrad.conjugate_gradient), or raise max_params "
                "if you mean it"
            )

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:
        """Perform one Newton step; see the class docstring. Returns the closure's loss."""
        if closure is None:
            raise TypeError(
                "Newton.step needs a closure that recomputes the loss with the graph and returns "
                "it, e.g. step(lambda: loss_fn(model(x), y)); the Hessian cannot be built from "
                ".grad alone"
            )
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        with enable_grad():
            loss = closure()
        if not isinstance(loss, Tensor):
            raise TypeError(
                f"the closure must return the loss as a Tensor, got {type(loss).__name__}"
            )

        params = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
        if not params:
            return loss
        g, h = flat_hessian(loss, params)
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
            raise ValueError(
                f"Newton: the gradient or Hessian is not finite (loss {loss.item()!r}); the "
                "parameters have probably diverged"
            )

        damping = np.concatenate([
            np.full(p.data.size, group["damping"], dtype=np.float64)
            for group in self.param_groups for p in group["params"] if p.requires_grad
        ])
        h[np.diag_indices_from(h)] += damping
        try:
            d = np.linalg.solve(h, g)
        except np.linalg.LinAlgError as e:
            raise ValueError(
                f"Newton: H + damping * I is singular ({e}); some direction has no curvature, "
                "e.g. a parameter the loss does not use. Raise damping (now "
                f"{sorted({group['damping'] for group in self.param_groups})})"
            ) from None

        offset = 0
        for group in self.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                n = p.data.size
                param = p.data
                param -= (group["lr"] * d[offset:offset + n]).reshape(param.shape).astype(
                    param.dtype, copy=False
                )
                offset += n
                self.state[p]["step"] = self.state[p].get("step", 0) + 1
        return loss


def flat_hessian(loss: Tensor, params: Sequence[Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The gradient and Hessian of a scalar ``loss`` w.r.t. ``params``, flattened and joined.

    .. math:: g = \\nabla_\\theta f, \\qquad H_{ij} = \\frac{\\partial g_i}{\\partial \\theta_j},
              \\qquad \\theta = \\mathrm{concat}(\\mathrm{vec}(p_1), \\ldots, \\mathrm{vec}(p_k))

    Returns ``g`` of shape ``(n,)`` and the symmetrised ``H`` of shape ``(n, n)``, float64, where
    n is the total number of elements; a parameter's elements are in row-major (C) order. Costs
    one backward pass with ``create_graph=True`` and one backward pass per row. A parameter the
    loss does not use gets zero rows and columns.
    """
    if loss.data.size != 1:
        raise ValueError(f"the loss must have one element, got shape {loss.shape}")
    if not loss.requires_grad:
        raise ValueError(
            "the loss does not require grad: was it computed under no_grad, or from "
            "parameters with requires_grad=False?"
        )
    gs = grad(loss, params, create_graph=True, allow_unused=True)
    parts = [
        _leaf(np.zeros(p.data.size, dtype=p.dtype)) if gi is None else gi.reshape(-1)
        for gi, p in zip(gs, params)
    ]
    g_flat = concatenate(parts)
    n = g_flat.data.size
    g = np.asarray(g_flat.data, dtype=np.float64)
    h = np.zeros((n, n))
    if g_flat.requires_grad:  # otherwise the gradient is constant: the loss is linear
        e = np.zeros(n, dtype=g_flat.dtype)
        for i in range(n):
            e[i] = 1
            rows = grad(g_flat, params, grad_output=e, allow_unused=True)
            e[i] = 0
            h[i] = np.concatenate([
                np.zeros(p.data.size) if r is None else r.data.ravel() for r, p in zip(rows, params)
            ])
    h = 0.5 * (h + h.T)
    return g, h
