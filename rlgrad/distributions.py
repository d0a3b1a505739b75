"""Action distributions of stochastic policies: log-probabilities and entropies on the engine.

Sampling draws from a caller's ``numpy.random.Generator`` (one per run, seeded), so runs repeat
exactly; ``log_prob``, ``entropy`` and ``kl`` return Tensors that carry gradients back to the
policy's outputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .tensor import Tensor, _leaf, log_softmax

__all__ = ["Distribution", "Categorical", "Normal", "LOG_STD_MIN", "LOG_STD_MAX"]

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
_LOG_2PI = math.log(2 * math.pi)


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else _leaf(np.asarray(x))


class Distribution:
    """What an agent needs of a policy's action distribution."""

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def mode(self) -> np.ndarray:
        raise NotImplementedError

    def log_prob(self, actions: Any) -> Tensor:
        raise NotImplementedError

    def entropy(self) -> Tensor:
        raise NotImplementedError

    def kl(self, other: Distribution) -> Tensor:
        raise NotImplementedError


class Categorical(Distribution):
    """A distribution over K actions given by unnormalised logits of shape ``(..., K)``.

    .. math:: \\log \\pi(a) = z_a - \\log \\textstyle\\sum_k e^{z_k}, \\qquad
              H = -\\textstyle\\sum_k \\pi_k \\log \\pi_k
    """

    def __init__(self, logits: Any) -> None:
        self.logits = _as_tensor(logits)
        if self.logits.ndim < 1 or self.logits.shape[-1] < 1:
            raise ValueError(f"logits need a last axis of categories, got {self.logits.shape}")
        self._logp: Tensor | None = None

    @property
    def logp(self) -> Tensor:
        """log pi over the categories, ``(..., K)``: log_softmax of the logits, made on first use
        (sampling during a rollout does not need it)."""
        if self._logp is None:
            self._logp = log_softmax(self.logits, axis=-1)
        return self._logp

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.logits.shape[:-1]

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.logp.data)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One action per batch element by inverting the CDF with one uniform draw each.

        The CDF is built from exp(z - max z), unnormalised: the draw is scaled by its total.
        """
        z = self.logits.data
        # the ufuncs' own methods: sum/max/cumsum cost a Python detour each, per vector step
        cdf = np.add.accumulate(np.exp(z - np.maximum.reduce(z, axis=-1, keepdims=True)),
                                axis=-1)
        u = rng.random(self.batch_shape + (1,)) * cdf[..., -1:]
        below = np.add.reduce(cdf < u, axis=-1, dtype=np.int64)
        return np.minimum(below, z.shape[-1] - 1)

    def mode(self) -> np.ndarray:
        return np.argmax(self.logits.data, axis=-1)

    def log_prob(self, actions: Any) -> Tensor:
        """log pi(a) for integer actions of the batch shape."""
        a = np.asarray(actions.data if isinstance(actions, Tensor) else actions)
        if a.shape != self.batch_shape:
            raise ValueError(f"actions have shape {a.shape}, expected the batch shape "
                             f"{self.batch_shape}")
        if a.dtype.kind not in "iu":
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise ValueError("Categorical actions must be integers")
            a = a.astype(np.int64)
        k = self.logits.shape[-1]
        if a.size and (a.min() < 0 or a.max() >= k):
            raise ValueError(f"actions must lie in [0, {k}), got values in [{a.min()}, {a.max()}]")
        if a.ndim == 0:
            return self.logp[int(a)]
        flat = self.logp.reshape(-1, k)[np.arange(a.size), a.ravel()]
        return flat.reshape(a.shape) if a.ndim != 1 else flat

    def entropy(self) -> Tensor:
        logp = self.logp
        return -(logp.exp() * logp).sum(axis=-1)

    def kl(self, other: Distribution) -> Tensor:
        """KL(self || other) = sum_k pi_k (log pi_k - log rho_k)."""
        if not isinstance(other, Categorical):
            raise TypeError(f"kl needs another Categorical, got {type(other).__name__}")
        return (self.logp.exp() * (self.logp - other.logp)).sum(axis=-1)


class Normal(Distribution):
    """A diagonal Gaussian over real action vectors: mean ``(..., A)``, log-std ``(A,)`` or
    ``(..., A)``; log-probabilities and entropies sum over the A action dimensions.

    log-std is clamped to [LOG_STD_MIN, LOG_STD_MAX] so std, log-probabilities and their
    gradients stay finite.

    .. math:: \\log \\pi(a) = -\\textstyle\\sum_i \\Big[\\frac{(a_i - \\mu_i)^2}{2\\sigma_i^2}
              + \\log \\sigma_i + \\tfrac12 \\log 2\\pi\\Big], \\qquad
              H = \\textstyle\\sum_i \\big(\\tfrac12 + \\tfrac12\\log 2\\pi + \\log\\sigma_i\\big)
    """

    def __init__(self, mean: Any, log_std: Any) -> None:
        self.mean = _as_tensor(mean)
        log_std = _as_tensor(log_std)
        if self.mean.ndim < 1:
            raise ValueError(f"mean needs a last axis of action dimensions, got {self.mean.shape}")
        if log_std.shape[-1:] != self.mean.shape[-1:]:
            raise ValueError(f"log_std of shape {log_std.shape} does not fit mean of shape "
                             f"{self.mean.shape}")
        self.log_std = log_std.clip(LOG_STD_MIN, LOG_STD_MAX)
        self.std = self.log_std.exp()

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.mean.shape[:-1]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(self.mean.shape).astype(self.mean.dtype, copy=False)
        return self.mean.data + np.broadcast_to(self.std.data, self.mean.shape) * noise

    def mode(self) -> np.ndarray:
        return self.mean.data.copy()

    def log_prob(self, actions: Any) -> Tensor:
        a = np.asarray(actions.data if isinstance(actions, Tensor) else actions)
        if a.shape != self.mean.shape:
            raise ValueError(f"actions have shape {a.shape}, expected {self.mean.shape}")
        z = (a - self.mean) / self.std
        return -((z * z) * 0.5 + self.log_std + 0.5 * _LOG_2PI).sum(axis=-1)

    def entropy(self) -> Tensor:
        per_dim = self.log_std + (0.5 + 0.5 * _LOG_2PI)
        total = per_dim.sum(axis=-1)
        if self.log_std.ndim == 1 and self.batch_shape:
            # state-independent log-std: the same entropy for every batch element
            return total * np.ones(self.batch_shape, dtype=self.mean.dtype)
        return total

    def kl(self, other: Distribution) -> Tensor:
        """KL(self || other) = sum_i log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2."""
        if not isinstance(other, Normal):
            raise TypeError(f"kl needs another Normal, got {type(other).__name__}")
        var1 = self.std * self.std
        var2 = other.std * other.std
        diff = self.mean - other.mean
        return (other.log_std - self.log_std + (var1 + diff * diff) / (var2 * 2) - 0.5).sum(
            axis=-1)
