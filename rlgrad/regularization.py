r"""Penalties on the parameters as differentiable loss terms: L1 and L2.

.. math::
    \Omega_1(\theta) = w \sum_i |\theta_i|, \qquad
    \Omega_2(\theta) = \frac{w}{2} \sum_i \theta_i^2, \qquad
    \nabla \Omega_2 = w \, \theta

Add one to the loss: ``loss = mse + l2_penalty(model, 1e-4)``.

L2 in the loss, coupled weight decay, decoupled weight decay
-------------------------------------------------------------
Three ways to pull the parameters towards zero, with a decay coefficient ``wd`` and learning
rate ``lr``; ``g = grad f(theta)`` is the gradient of the loss without the penalty.

1. **L2 in the loss**, ``f(theta) + l2_penalty(params, wd)``. Its gradient is ``g + wd * theta``,
   and that sum is what the optimizer sees. Plain SGD then steps
   ``theta -= lr * (g + wd * theta)``, i.e. ``theta *= 1 - lr * wd`` plus the gradient step. An
   adaptive optimizer treats the decay term like any other gradient: in Adam it enters both
   moments, ``m`` and ``v``, and is divided by ``sqrt(v_hat)``, so a coordinate with large loss
   gradients (large ``v``) is barely decayed and one with small gradients is decayed hard.
2. **Coupled weight decay**, ``SGD(weight_decay=wd)``, ``Adam(weight_decay=wd)`` (also Adagrad,
   RMSprop): the optimizer adds ``wd * theta`` to the gradient before its update. This is
   *identical* to 1., update for update, for SGD with or without momentum and for Adam alike;
   only the place where the sum ``g + wd * theta`` is formed differs. So
   ``SGD(params, lr, weight_decay=wd)`` on ``f`` gives the same iterates as ``SGD(params, lr)``
   on ``f + l2_penalty(params, wd)``, even bitwise: the engine's gradient of the penalty,
   ``wd / 2 * theta`` twice, rounds exactly like ``wd * theta`` (halving and doubling are exact).
3. **Decoupled weight decay**, ``AdamW(weight_decay=wd)``: ``theta *= 1 - lr * wd`` is applied
   directly to the parameters, and the Adam step uses ``g`` alone. The decay is not rescaled by
   ``sqrt(v_hat)``: every coordinate shrinks by the same factor per step. For plain SGD (no
   momentum) it would equal 1. and 2.; for Adam it is a different algorithm, with different
   iterates and a different fixed point.

L1 has no coupled-optimizer counterpart here. Its (sub)gradient ``w * sign(theta)`` is 0 at
``theta = 0`` (torch's convention), so a (sub)gradient step moves a coordinate across zero rather
than to it: exact zeros (sparsity) need a proximal step (soft thresholding), not this penalty.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from .tensor import Tensor

__all__ = ["l1_penalty", "l2_penalty"]


def l1_penalty(params: Iterable[Tensor] | Any, weight: float) -> Tensor:
    r"""The L1 penalty, a scalar Tensor to add to the loss.

    .. math:: \Omega_1(\theta) = w \sum_{p \in \text{params}} \sum_i |p_i|, \qquad
              \frac{\partial \Omega_1}{\partial p_i} = w \, \mathrm{sign}(p_i)
              \quad (0 \text{ at } p_i = 0)

    Args:
        params: Tensors, or a Module (its ``parameters()``).
        weight: w >= 0.
    """
    ps = _params(params, "l1_penalty")
    _check_weight(weight, "l1_penalty")
    total = ps[0].abs().sum()
    for p in ps[1:]:
        total = total + p.abs().sum()
    return weight * total


def l2_penalty(params: Iterable[Tensor] | Any, weight: float) -> Tensor:
    r"""The L2 penalty (half the squared norm), a scalar Tensor to add to the loss.

    .. math:: \Omega_2(\theta) = \frac{w}{2} \sum_{p \in \text{params}} \sum_i p_i^2, \qquad
              \frac{\partial \Omega_2}{\partial p_i} = w \, p_i

    The factor 1/2 makes ``w`` the same number as an optimizer's ``weight_decay``: adding this to
    the loss is SGD's / Adam's ``weight_decay=w`` (see the module docstring), not AdamW's.

    Args:
        params: Tensors, or a Module (its ``parameters()``).
        weight: w >= 0.
    """
    ps = _params(params, "l2_penalty")
    _check_weight(weight, "l2_penalty")
    total = (ps[0] * ps[0]).sum()
    for p in ps[1:]:
        total = total + (p * p).sum()
    return (weight / 2) * total


def _params(params: Any, what: str) -> list[Tensor]:
    if isinstance(params, Tensor):
        ps = [params]
    elif hasattr(params, "parameters") and callable(params.parameters):
        ps = list(params.parameters())
    else:
        try:
            ps = list(params)
        except TypeError:
            raise TypeError(
                f"{what}: params must be Tensors or a Module, got {type(params).__name__}"
            ) from None
    for p in ps:
        if not isinstance(p, Tensor):
            raise TypeError(f"{what}: params must be Tensors, got a {type(p).__name__}")
    if not ps:
        raise ValueError(
            f"{what}: got no parameters (was the generator model.parameters() already consumed?)"
        )
    return ps


def _check_weight(weight: float, what: str) -> None:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise TypeError(f"{what}: weight must be a real number, got {type(weight).__name__}")
    if not weight >= 0:  # also refuses nan
        raise ValueError(f"{what}: weight must be >= 0, got {weight!r}")
