"""Gradient clipping by global norm and by value, in place on ``param.grad`` (as in torch)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from rlgrad.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _with_grad(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    r"""Scale all gradients together so that their joint norm is at most ``max_norm``.

    The norm is taken over all gradients as if they were concatenated into one vector
    (parameters whose grad is None are ignored):

    .. math::
        \|g\|_p = \Big\| \big(\|g_1\|_p, \ldots, \|g_n\|_p\big) \Big\|_p, \qquad
        c = \frac{\texttt{max\_norm}}{\|g\|_p + 10^{-6}}, \qquad
        g_i \leftarrow c \, g_i \ \text{ if } c < 1

    so after clipping the norm is ``max_norm * ||g|| / (||g|| + 1e-6)``, i.e. ``max_norm`` up to
    that 1e-6, and gradients with a smaller norm (including all-zero ones) are left untouched.
    As in torch, a NaN norm turns every gradient into NaN, and an infinite one zeroes the finite
    entries, unless ``error_if_nonfinite`` raises first.

    Args:
        parameters: a Tensor or an iterable of Tensors whose ``.grad`` is scaled in place.
        max_norm: the largest allowed norm.
        norm_type: p of the p-norm; ``float("inf")`` for the largest absolute value.
        error_if_nonfinite: raise RuntimeError if the total norm is NaN or infinite.

    Returns:
        The total norm of the gradients before clipping, as a Python float.
    """
    params = _with_grad(parameters)
    norm_type = float(norm_type)
    grads = [_flat(p.grad) for p in params]
    grads = [g for g in grads if g.size]
    if not grads:
        return 0.0
    if norm_type == 2.0 and _same_float_dtype(grads):
        # fast path, bitwise numpy's norm of norms: ||g_i|| = sqrt(g_i . g_i), all square
        # roots taken in one call
        norms = np.sqrt(np.array([g.dot(g) for g in grads]))
        total_norm = float(np.sqrt(norms.dot(norms)))
    else:
        norms = np.array([np.linalg.norm(g, ord=norm_type) for g in grads])
        total_norm = float(np.linalg.norm(norms, ord=norm_type))
    if error_if_nonfinite and not math.isfinite(total_norm):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
            "so it cannot be clipped. To disable this error and scale the gradients by the "
            "non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    clip_coef = float(max_norm) / (total_norm + 1e-6)
    if clip_coef < 1.0 or math.isnan(clip_coef):
        for p in params:
            # In place for an array; a numpy scalar (the grad of a 0-d parameter) is rebound.
            p.grad *= clip_coef
    return total_norm


def _flat(g: Any) -> np.ndarray:
    return g.reshape(-1) if isinstance(g, (np.ndarray, np.generic)) else np.reshape(g, -1)


def _same_float_dtype(arrays: list[np.ndarray]) -> bool:
    """Whether all arrays share one floating dtype: then ``np.linalg.norm`` of each is
    ``sqrt(g . g)`` in that dtype, and taking the roots after stacking changes no bit."""
    dtype = arrays[0].dtype
    return dtype.kind == "f" and all(g.dtype == dtype for g in arrays)


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient entry into ``[-clip_value, clip_value]``, in place."""
    clip_value = float(clip_value)
    for p in _with_grad(parameters):
        if isinstance(p.grad, np.ndarray):
            np.clip(p.grad, -clip_value, clip_value, out=p.grad)
        else:  # a numpy scalar (the grad of a 0-d parameter) cannot be written in place
            p.grad = np.clip(p.grad, -clip_value, clip_value)
