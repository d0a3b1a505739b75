"""Adam: bias-corrected first and second moment estimates of the gradient."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlgrad.optim.optimizer import Optimizer, ParamsT

__all__ = ["Adam"]


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), optionally AMSGrad (Reddi, Kale & Kumar, 2018).

    .. math::
       \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2 \text{ (betas)}, \theta_0
                \text{ (params)}, f(\theta) \text{ (objective)}, \lambda
                \text{ (weight decay)}, \textit{amsgrad}, \epsilon                           \\
            &\textbf{initialize}: m_0 \leftarrow 0 \text{ (first moment)},
                v_0 \leftarrow 0 \text{ (second moment)}, v_0^{max} \leftarrow 0              \\
            &\textbf{for}\: t = 1 \:\textbf{to}\: \ldots \:\textbf{do}                      \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})                            \\
            &\quad \textbf{if}\: \lambda \neq 0: \; g_t \leftarrow g_t + \lambda \theta_{t-1}  \\
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
    loss adds ``lambda * theta`` to the gradient. (2) Adam's ``weight_decay`` does exactly that,
    inside the optimizer: the decay term is *coupled* to the adaptive update, so it enters m and v
    and is divided by ``sqrt(v_hat)``; coordinates with large gradients are barely decayed.
    (3) :class:`~rlgrad.optim.AdamW` *decouples* it: ``theta *= 1 - lr * weight_decay`` before the
    Adam step, which uses the raw gradient, so every coordinate shrinks at the same rate.

    Args:
        params: Tensors or parameter groups (dicts) to optimize.
        lr: learning rate gamma (default 1e-3).
        betas: (beta1, beta2), decay rates of the moment estimates (default (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default 1e-8).
        weight_decay: coupled L2 penalty lambda (default 0).
        amsgrad: use the running maximum of v (AMSGrad) (default False).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
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
        self._buffers: dict[int, dict[str, Any]] = {}  # see _adam_update_group

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        _check_adam_hyperparameters(group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update; see the class docstring for the rule."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            weight_decay = group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad if weight_decay == 0 else p.grad + weight_decay * p.data
                     for p in params]
            if _adam_update_group(params, grads, self.state, group, self._buffers):
                continue
            for p, grad in zip(params, grads):
                _adam_update(p.data, grad, self.state[p], group)
        return loss


def _check_adam_hyperparameters(group: Mapping[str, Any]) -> None:
    """Raise ValueError (with torch's wording) for invalid Adam / AdamW hyperparameters."""
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {beta1}")
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {beta2}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


def _adam_update(
    param: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]
) -> None:
    """The Adam step shared by Adam and AdamW, from ``m_t`` to ``theta_t`` in the math box.

    Updates ``state`` (created on first use) and ``param`` in place; ``grad`` already includes
    Adam's coupled weight decay, if any. ``group`` supplies lr, betas, eps and amsgrad.
    """
    if not state:
        state["step"] = 0
        state["exp_avg"] = np.zeros_like(param)
        state["exp_avg_sq"] = np.zeros_like(param)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(param)
    state["step"] += 1
    param -= _adam_direction(state, grad, state["step"], group)


def _adam_direction(
    moments: Mapping[str, np.ndarray], grad: np.ndarray, step: int, group: Mapping[str, Any]
) -> np.ndarray:
    """Update the moments in place and return ``lr * m_hat / (sqrt(v_hat) + eps)``.

    ``moments`` holds ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad) of the
    shape of ``grad``: one parameter's state, or the flat vectors of a whole group.
    """
    beta1, beta2 = group["betas"]
    exp_avg = moments["exp_avg"]
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad
    exp_avg_sq = moments["exp_avg_sq"]
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad

    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = group["lr"] / bias_correction1

    if group["amsgrad"]:
        max_exp_avg_sq = moments["max_exp_avg_sq"]
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = np.sqrt(max_exp_avg_sq)
    else:
        denom = np.sqrt(exp_avg_sq)
    denom /= bias_correction2**0.5
    denom += group["eps"]
    return step_size * exp_avg / denom


def _adam_update_group(
    params: list[Any],
    grads: list[np.ndarray],
    states: Any,
    group: Mapping[str, Any],
    buffers: dict[int, dict[str, Any]],
) -> bool:
    """:func:`_adam_update` for every parameter of a group at once; False if it does not apply.

    The arithmetic is the same, element by element (so the results are bitwise those of the
    per-parameter loop), but it runs on one flat vector per moment instead of once per
    parameter: an RL policy has a few small tensors, and numpy's per-call overhead, not the
    arithmetic, is what a step costs. The state stays per parameter, as views into the flat
    vectors kept in ``buffers``. It applies when every parameter of the group has a gradient,
    all share one dtype and one step count; otherwise (and for a single parameter) the caller
    loops over :func:`_adam_update`.
    """
    if len(params) < 2 or len(params) != len(group["params"]) \
            or not _python_numbers(group["lr"], *group["betas"]):
        return False
    dtype = params[0].data.dtype
    for g in grads:  # checked before the buffers re-point any state at them
        if g.dtype != dtype:
            return False
    key = id(group)
    buf = buffers.get(key)
    if (buf is None or buf["states"] is not states or buf["params"] != params
            or buf["amsgrad"] != group["amsgrad"]):
        buf = _build_group_buffers(params, states, group)
        if buf is None:
            return False
        buffers[key] = buf
    st = buf["dicts"]
    step = st[0].get("step", 0)
    for s in st:
        if s.get("step", 0) != step:  # some parameter missed a step
            return False
    step += 1
    for s in st:
        s["step"] = step
    np.concatenate(grads, axis=None, out=buf["grad"])
    _adam_direction_flat(buf, step, group)
    for p, u in zip(params, buf["update_views"]):
        p.data -= u
    return True


def _python_numbers(*values: Any) -> bool:
    """Whether every value is a Python int or float: numpy's weak scalars, which keep a float32
    product in float32. (A numpy float64 hyperparameter promotes ``(1 - beta1) * grad`` to
    float64, and writing that into a float32 scratch buffer would round differently.)"""
    return all(type(v) is float or type(v) is int for v in values)


def _adam_direction_flat(buf: dict[str, Any], step: int, group: Mapping[str, Any]) -> None:
    """:func:`_adam_direction` on a group's flat vectors, every temporary written into a kept
    buffer: the same operations on the same operands in the same order, so bitwise the same
    result, without allocating. Reads ``buf["grad"]``, leaves the step in ``buf["update"]``."""
    beta1, beta2 = group["betas"]
    grad, tmp, update = buf["grad"], buf["tmp"], buf["update"]
    exp_avg = buf["exp_avg"]
    exp_avg *= beta1
    np.multiply(1 - beta1, grad, out=tmp)
    exp_avg += tmp
    exp_avg_sq = buf["exp_avg_sq"]
    exp_avg_sq *= beta2
    np.multiply(1 - beta2, grad, out=tmp)
    tmp *= grad
    exp_avg_sq += tmp

    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = group["lr"] / bias_correction1

    denom = tmp
    if group["amsgrad"]:
        max_exp_avg_sq = buf["max_exp_avg_sq"]
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        np.sqrt(max_exp_avg_sq, out=denom)
    else:
        np.sqrt(exp_avg_sq, out=denom)
    denom /= bias_correction2**0.5
    denom += group["eps"]
    np.multiply(step_size, exp_avg, out=update)
    update /= denom


def _build_group_buffers(
    params: list[Any], states: Any, group: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Flat moment vectors for a group, filled from the current state (zeros at first), with
    each parameter's state re-pointed at its slice; None if the group does not qualify.

    The buffers stay valid while the optimizer's state object and the group's parameters are
    the same; ``load_state_dict`` replaces the state object, so they are rebuilt after it.
    (Assigning new arrays into ``optimizer.state[p]`` by hand is not supported.)
    """
    dtype = params[0].data.dtype
    if any(p.data.dtype != dtype for p in params):
        return None
    st = [states[p] for p in params]
    if len({s.get("step", 0) for s in st}) != 1:
        return None
    names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
    sizes = [p.data.size for p in params]
    offsets = np.cumsum([0] + sizes)
    buf: dict[str, Any] = {"states": states, "params": list(params), "dicts": st,
                           "amsgrad": group["amsgrad"], "dtype": dtype}
    for name in names:
        flat = np.zeros(offsets[-1], dtype=dtype)
        for s, p, a, b in zip(st, params, offsets[:-1], offsets[1:]):
            if name in s:
                flat[a:b] = np.asarray(s[name]).ravel()
            s[name] = flat[a:b].reshape(p.data.shape)
        buf[name] = flat
    for name in ("grad", "tmp", "update"):  # scratch space of _adam_direction_flat
        buf[name] = np.zeros(offsets[-1], dtype=dtype)
    buf["update_views"] = [buf["update"][a:b].reshape(p.data.shape)
                           for p, a, b in zip(params, offsets[:-1], offsets[1:])]
    return buf
