"""Input gradients through the engine: how sensitive a network's output is to each input feature.

Saliency for policies: which observation features move the chosen action's log-probability and
the value estimate. The derivatives are taken with respect to the observation (not the
parameters) by the same reverse-mode engine that trains the agents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .tensor import Tensor, enable_grad

__all__ = ["input_gradients", "policy_sensitivity"]


def input_gradients(fn: Callable[[Tensor], Tensor], obs: Any) -> np.ndarray:
    """Per-sample input gradients ``d fn(obs)_b / d obs_b``, shape ``(B, obs_dim)``.

    .. math:: G_{bj} = \\frac{\\partial f(s_b)}{\\partial s_{bj}}
              = \\frac{\\partial}{\\partial s_{bj}} \\sum_{c} f(s_c)

    ``fn`` maps a Tensor ``(B, obs_dim)`` to ``(B,)`` and must treat the rows independently
    (``f(s_b)`` depends on row b alone, as an MLP does; not batch statistics). Then the
    gradient of the sum over the batch has ``d f(s_b) / d s_b`` in row b, so one backward pass
    gives every sample's gradient. ``obs`` of a float64 dtype stays float64 (for gradient
    checks); anything else is computed in float32, the networks' dtype.
    """
    arr = np.asarray(obs.data if isinstance(obs, Tensor) else obs)
    if arr.ndim != 2:
        raise ValueError(f"obs must have shape (B, obs_dim), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"obs must hold numbers, got dtype {arr.dtype}")
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    x = Tensor(arr, requires_grad=True, dtype=dtype)
    with enable_grad():
        y = fn(x)
    if not isinstance(y, Tensor):
        raise TypeError(f"fn must return a Tensor, got {type(y).__name__}")
    if y.shape != (arr.shape[0],):
        raise ValueError(f"fn must return one value per row, shape ({arr.shape[0]},); "
                         f"got {y.shape}")
    if not y.requires_grad:  # a function that ignores its input
        return np.zeros(arr.shape, dtype=dtype)
    y.sum().backward()
    return np.zeros(arr.shape, dtype=dtype) if x.grad is None else np.array(x.grad)


def policy_sensitivity(agent: Any, obs: Any, actions: Any = None) -> dict[str, np.ndarray]:
    """Input gradients of a trained agent's policy and value, each ``(B, obs_dim)``.

    .. math:: \\text{log\\_prob}_{bj} = \\frac{\\partial \\log \\pi_\\theta(a^*_b \\mid s_b)}
              {\\partial s_{bj}}, \\qquad
              \\text{value}_{bj} = \\frac{\\partial V_\\phi(s_b)}{\\partial s_{bj}}

    ``a*`` is ``actions`` if given (e.g. the actions taken), else the policy's most likely
    action at each state, held fixed while s varies. For a Gaussian policy the log-probability
    of its own mean does not depend on s (its gradient is 0), so ``actions`` is required there.

    ``agent`` needs ``distribution(obs)`` returning a distribution with ``log_prob`` (every
    rlgrad agent has it) and, for the ``"value"`` entry, a ``value`` module mapping
    ``(B, obs_dim)`` to ``(B,)`` (REINFORCE with baseline); without one the entry is absent.
    """
    arr = np.asarray(obs)
    if arr.ndim != 2:
        raise ValueError(f"obs must have shape (B, obs_dim), got {arr.shape}")
    if not callable(getattr(agent, "distribution", None)):
        raise TypeError(f"agent must have a distribution(obs) method, got {type(agent).__name__}")
    if actions is None:
        dist = agent.distribution(arr.astype(np.float32))
        if not hasattr(dist, "logits"):
            raise ValueError("give the actions for a continuous policy: the log-probability of "
                             "its mean action does not depend on the state")
        actions = dist.mode()
    actions = np.asarray(actions)
    if actions.shape[:1] != arr.shape[:1]:
        raise ValueError(f"actions must have one entry per observation ({arr.shape[0]}), got "
                         f"shape {actions.shape}")
    out = {"log_prob": input_gradients(lambda s: agent.distribution(s).log_prob(actions), arr)}
    value = getattr(agent, "value", None)
    if value is not None and callable(value):
        out["value"] = input_gradients(value, arr)
    return out
