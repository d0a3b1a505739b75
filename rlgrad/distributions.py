"""Action distributions of stochastic policies: log-probabilities and entropies on the engine.

Sampling draws from a caller's ``numpy.random.Generator`` (one per run, seeded), so runs repeat
exactly; ``log_prob``, ``entropy`` and ``kl`` return Tensors that carry gradients back to the
policy's outputs. ``detach()`` gives the same distribution cut from the graph: the fixed
``pi_old`` of a trust region, ``KL(pi_old || pi_theta)`` with ``pi_old = dist.detach()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .tensor import (
    Tensor,
    _broadcast_to,
    _expand_dims,
    _leaf,
    _python_scalar,
    _result,
    _scatter,
    _sum_to,
    is_grad_enabled,
    log_softmax,
)

__all__ = [
    "Distribution", "Categorical", "Normal", "TanhNormal", "LOG_STD_MIN", "LOG_STD_MAX",
    "TANH_CLIP",
]

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
TANH_CLIP = 1.0 - 1e-6
_LOG_2PI = math.log(2 * math.pi)
_LOG_2 = math.log(2.0)


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else _leaf(np.asarray(x))


def _frozen_copy(x: Tensor) -> Tensor:
    """The values of ``x`` in a new array, off the graph: later in-place updates of ``x`` (an
    optimizer step on a parameter passed straight in) do not reach the copy."""
    return _leaf(x.data.copy())


def _softplus(x: Tensor) -> Tensor:
    """softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), on the engine.

    ``max(x, 0)`` is written ``(x + |x|) / 2`` so the derivative at 0 is 1/2 (as the exact
    sigmoid(0)); ``e^-|x|`` never overflows.
    """
    return (x + x.abs()) * 0.5 + ((-x.abs()).exp() + 1.0).log()


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

    def detach(self) -> Distribution:
        """The same distribution with parameters copied off the graph (no gradient flows)."""
        raise NotImplementedError


class Categorical(Distribution):
    """A distribution over K actions given by unnormalised logits of shape ``(..., K)``.

    .. math:: \\log \\pi(a) = z_a - \\log \\textstyle\\sum_k e^{z_k}, \\qquad
              H = -\\textstyle\\sum_k \\pi_k \\log \\pi_k

    ``sample`` and ``mode`` refuse non-finite logits (ValueError naming the first bad one): a NaN
    would otherwise play action 0 and a ``+inf`` the wrong action. ``-inf`` is refused too (its
    entropy is NaN); mask actions with a large negative finite logit instead.
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
        self._check_finite(z)
        # the ufuncs' own methods: sum/max/cumsum cost a Python detour each, per vector step
        cdf = np.add.accumulate(np.exp(z - np.maximum.reduce(z, axis=-1, keepdims=True)),
                                axis=-1)
        u = rng.random(self.batch_shape + (1,)) * cdf[..., -1:]
        below = np.add.reduce(cdf < u, axis=-1, dtype=np.int64)
        return np.minimum(below, z.shape[-1] - 1)

    def mode(self) -> np.ndarray:
        z = self.logits.data
        self._check_finite(z)
        return np.argmax(z, axis=-1)

    @staticmethod
    def _check_finite(z: np.ndarray) -> None:
        """One reduce over the logits: their sum is finite if every logit is (or it overflowed,
        which the full scan then rules out). No errstate: entering one costs half the check,
        and numpy warns only on the way to the error (or for logits near 1e308)."""
        if np.isfinite(np.add.reduce(z, axis=None)):
            return
        bad = np.argwhere(~np.isfinite(z))
        if bad.size == 0:
            return
        idx = tuple(int(i) for i in bad[0])
        row = f" (row {', '.join(map(str, idx[:-1]))})" if len(idx) > 1 else ""
        raise ValueError(f"Categorical logits must be finite, got {z[idx]} at logits"
                         f"[{', '.join(map(str, idx))}]{row}; mask actions with a large negative "
                         "finite logit")

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
        if a.size and (np.minimum.reduce(a, axis=None) < 0 or np.maximum.reduce(a, axis=None) >= k):
            raise ValueError(f"actions must lie in [0, {k}), got values in [{a.min()}, {a.max()}]")
        if a.ndim == 0:
            return self.logp[int(a)]
        return _pick(self.logp, a)

    def entropy(self) -> Tensor:
        return _categorical_entropy(self.logp)

    def kl(self, other: Distribution) -> Tensor:
        """KL(self || other) = sum_k pi_k (log pi_k - log rho_k)."""
        if not isinstance(other, Categorical):
            raise TypeError(f"kl needs another Categorical, got {type(other).__name__}")
        return (self.logp.exp() * (self.logp - other.logp)).sum(axis=-1)

    def detach(self) -> Categorical:
        copy = Categorical(_frozen_copy(self.logits))
        if self._logp is not None:
            copy._logp = _frozen_copy(self._logp)
        return copy


def _pick(logp: Tensor, a: np.ndarray) -> Tensor:
    """``log pi(a)``: the entry of each action in ``logp`` ``(..., K)``, for integer actions of
    the batch shape ``(...)`` (at least one axis), one graph node.

    The composite ``logp.reshape(-1, K)[arange(B), a.ravel()].reshape(a.shape)`` in one node:
    the gradient goes back through the same adjoints (reshape, scatter into zeros, reshape),
    so it is bitwise the composite's.
    """
    k = logp.shape[-1]
    idx = (np.arange(a.size), a.ravel())
    out = logp.data.reshape(-1, k)[idx]
    if a.ndim != 1:
        out = out.reshape(a.shape)

    def backward(node, g, cg):
        g = g if a.ndim == 1 else g.reshape(a.size)
        return (_scatter(g, idx, (a.size, k)).reshape(logp.shape),)

    return _result(out, (logp,), backward)


def _categorical_entropy(logp: Tensor) -> Tensor:
    r"""The categorical entropy :math:`H = -\sum_k \pi_k \log \pi_k` over the last axis of
    log-probabilities, one graph node:

    .. math:: \frac{\partial H}{\partial \log \pi_k} = -\pi_k (1 + \log \pi_k)

    computed as the composite ``-(logp.exp() * logp).sum(-1)`` computes it: its local
    derivatives, summed in the order the graph walk would (the product's term, then the
    exponential's), so the gradient is bitwise the composite's as long as nothing created
    after the entropy uses ``logp`` (an agent's ``log_prob`` before ``entropy``, as usual).
    """
    lp = logp.data
    p = np.exp(lp)
    axis = (lp.ndim - 1,)
    out = -np.asarray(np.add.reduce(p * lp, axis=axis))

    def backward(node, g, cg):
        l, q = (logp, logp.exp()) if cg else (lp, p)
        gb = _broadcast_to(_expand_dims(-g, axis), lp.shape)
        return (_sum_to(gb * q, lp.shape) + _sum_to(gb * l, lp.shape) * q,)

    return _result(np.asarray(out), (logp,), backward)


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
        actions = self.mean.data + self.std.data * noise
        if actions.shape != self.mean.shape:  # a log-std with more rows than the mean
            raise ValueError(f"log_std of shape {self.std.shape} does not broadcast to the "
                             f"mean's shape {self.mean.shape}")
        return actions

    def mode(self) -> np.ndarray:
        return self.mean.data.copy()

    def log_prob(self, actions: Any) -> Tensor:
        a = np.asarray(actions.data if isinstance(actions, Tensor) else actions)
        if a.shape != self.mean.shape:
            raise ValueError(f"actions have shape {a.shape}, expected {self.mean.shape}")
        return self._log_prob(a)

    def _log_prob(self, x: Any) -> Tensor:
        """log N(x) for ``x`` of the mean's shape, an array or a Tensor whose graph is kept."""
        return _gaussian_log_prob(_as_tensor(x), self.mean, self.log_std, self.std)

    def entropy(self) -> Tensor:
        # state-independent log-std: the same entropy for every batch element
        batch = self.batch_shape if self.log_std.ndim == 1 and self.batch_shape else None
        return _gaussian_entropy(self.log_std, batch, self.mean.dtype)

    def kl(self, other: Distribution) -> Tensor:
        """KL(self || other) = sum_i log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2."""
        if not isinstance(other, Normal):
            raise TypeError(f"kl needs another Normal, got {type(other).__name__}")
        var1 = self.std * self.std
        var2 = other.std * other.std
        diff = self.mean - other.mean
        return (other.log_std - self.log_std + (var1 + diff * diff) / (var2 * 2) - 0.5).sum(
            axis=-1)

    def detach(self) -> Normal:
        # log_std is already clamped; clamping the copy again changes nothing
        return Normal(_frozen_copy(self.mean), _frozen_copy(self.log_std))


def _gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor, std: Tensor) -> Tensor:
    r"""The diagonal Gaussian's log-density summed over the last axis, one graph node.

    .. math:: z = (x - \mu) / \sigma, \qquad
              \log \pi = -\textstyle\sum_i \big[\tfrac12 z_i^2 + \log \sigma_i
              + \tfrac12 \log 2\pi\big], \qquad
              \frac{\partial \log \pi}{\partial \mu_i} = \frac{z_i}{\sigma_i}
              = -\frac{\partial \log \pi}{\partial x_i}, \quad
              \frac{\partial \log \pi}{\partial \sigma_i} = \frac{z_i^2}{\sigma_i}, \quad
              \frac{\partial \log \pi}{\partial \log \sigma_i} \Big|_\sigma = -1

    ``std`` is ``exp(log_std)``, a node of its own: the gradient reaches ``log_std`` directly
    (the -1) and through ``std`` (:math:`z^2/\sigma \cdot \sigma`). The value and the
    gradients are computed by the very expressions, in the very order, of the composite
    ``-((z * z) * 0.5 + log_std + log(2 pi) / 2).sum(-1)`` with ``z = (x - mean) / std``
    written in Tensor ops, so they are bitwise the composite's; one node instead of nine
    saves the graph's per-node cost, which for a batch of 64 exceeds the arithmetic. With
    ``create_graph`` the same formulas run on Tensors (``z`` recomputed on the graph).
    """
    xd, m, ls, s = x.data, mean.data, log_std.data, std.data
    d = xd - m  # the composite's x + (-mu): bitwise the same for numbers
    z = d / s
    zz = z * z
    half = _python_scalar(0.5, zz.dtype)
    t = zz * half + ls
    t += _python_scalar(0.5 * _LOG_2PI, t.dtype)
    axis = (t.ndim - 1,)
    out = -np.add.reduce(t, axis=axis)
    if not is_grad_enabled():
        return _leaf(np.asarray(out))
    need_d = x.requires_grad or mean.requires_grad

    def backward(node, g, cg):
        if cg:
            dv = x - mean
            sv = std
            zv = dv / sv
        else:
            dv, zv, sv = d, z, s
        gt = _broadcast_to(_expand_dims(-g, axis), t.shape)  # through -sum(...)
        g_ls = _sum_to(gt, ls.shape) if log_std.requires_grad else None
        gzz = _sum_to(gt * half, zz.shape)
        gz = gzz * zv + gzz * zv  # z * z: one term per factor
        gx = gm = gs = None
        if need_d:
            gd = _sum_to(gz / sv, d.shape)
            gx = _sum_to(gd, xd.shape) if x.requires_grad else None
            gm = -_sum_to(gd, m.shape) if mean.requires_grad else None
        if std.requires_grad:
            gs = _sum_to(-gz * dv / (sv * sv), s.shape)
        return gx, gm, g_ls, gs

    return _result(np.asarray(out), (x, mean, log_std, std), backward)


def _gaussian_entropy(log_std: Tensor, batch: tuple[int, ...] | None, dtype: Any) -> Tensor:
    r"""The diagonal Gaussian's entropy :math:`H = \sum_i (\tfrac12 + \tfrac12 \log 2\pi
    + \log \sigma_i)`, :math:`\partial H / \partial \log \sigma_i = 1`, one graph node.

    With ``batch`` (a state-independent ``log_std`` of shape ``(A,)``), the same value for
    each of the batch's elements, in ``dtype``, as ``H * ones(batch)``. Bitwise the composite
    ``(log_std + c).sum(-1) * ones(batch)``, as :func:`_gaussian_log_prob` is.
    """
    ls = log_std.data
    per_dim = ls + _python_scalar(0.5 + 0.5 * _LOG_2PI, ls.dtype)
    axis = (per_dim.ndim - 1,)
    total = np.asarray(np.add.reduce(per_dim, axis=axis))
    ones = None if batch is None else np.ones(batch, dtype=dtype)
    out = total if ones is None else total * ones

    def backward(node, g, cg):
        if ones is not None:
            g = _sum_to(g * ones, total.shape)
        return (_sum_to(_broadcast_to(_expand_dims(g, axis), per_dim.shape), ls.shape),)

    return _result(np.asarray(out), (log_std,), backward)


class TanhNormal(Distribution):
    """A diagonal Gaussian squashed by tanh, optionally scaled into a box (SAC's policy).

    ``u ~ N(mean, diag(std^2))`` with ``log_std`` clamped as in :class:`Normal`, and

    .. math:: a = c + s \\tanh u, \\qquad c = \\tfrac{\\text{high} + \\text{low}}{2}, \\quad
              s = \\tfrac{\\text{high} - \\text{low}}{2}

    (``c = 0``, ``s = 1`` without bounds: actions in (-1, 1)). By the change of variables,

    .. math:: \\log \\pi(a) = \\log \\mathcal{N}(u; \\mu, \\sigma)
              - \\textstyle\\sum_i \\big[\\log(1 - \\tanh^2 u_i) + \\log s_i\\big],
              \\qquad \\log(1 - \\tanh^2 u) = 2\\,(\\log 2 - u - \\operatorname{softplus}(-2u))

    The right-hand form is the stable one: ``1 - tanh(u)^2`` underflows to 0 for ``|u| > 19``
    in float64 (``|u| > 9`` in float32), its logarithm does not.

    **Exact log-probabilities of sampled actions.** ``log_prob(actions)`` recovers ``u`` as
    ``atanh`` of the unit action clipped to ``[-TANH_CLIP, TANH_CLIP]`` (``TANH_CLIP = 1 - 1e-6``,
    so ``|u| <= 7.25``): outside that range ``tanh`` has rounded ``u`` away (to exactly 1 beyond
    ``|u| = 19``), so such an action gets the log-probability of ``|u| = 7.25``, finite but not its
    own; inside, ``atanh(tanh u)`` loses about ``eps / (1 - |tanh u|)`` of ``u``: up to 4e-11
    in float64 and 0.02 in float32 near the clip. To be exact, keep the pre-squash sample:
    ``actions, u = dist.sample_with_pre_tanh(rng)`` then ``dist.log_prob(actions, pre_tanh=u)``
    (``u`` is checked against ``actions``). ``rsample`` is the reparameterised form for SAC's
    actor loss: its ``u`` carries the graph, and so does ``log_prob(actions, pre_tanh=u)``.

    **Entropy.** The action's entropy has no closed form. ``entropy()`` returns the entropy of
    the base Gaussian, ``H[u] = sum_i (1/2 + log(2 pi)/2 + log sigma_i)``, not of ``a``: by the
    change of variables ``H[a] = H[u] + E[sum_i log(s_i (1 - tanh^2 u_i))] <= H[u] + sum_i log
    s_i``. As an entropy bonus it rewards a wider base (the usual use in PPO); for an estimate of
    ``H[a]`` average ``-log_prob`` over samples.

    **KL.** ``kl`` is the KL divergence of the base Gaussians. It is the KL of the action
    distributions too: ``a = c + s tanh(u)`` is a bijection, and the Jacobian terms of
    ``log pi_1(a) - log pi_2(a)`` cancel, so the log-ratio at every action equals that of the
    base densities at its ``u`` (both distributions must share the bounds).
    """

    def __init__(self, mean: Any, log_std: Any, low: Any = None, high: Any = None) -> None:
        self.base = Normal(mean, log_std)
        self.mean, self.log_std, self.std = self.base.mean, self.base.log_std, self.base.std
        if (low is None) != (high is None):
            raise ValueError("TanhNormal needs both low and high, or neither")
        dtype = self.mean.dtype if np.issubdtype(self.mean.dtype, np.floating) else np.float64
        n = self.mean.shape[-1]
        if low is None:
            self.low = self.high = None
            self._loc = np.zeros((), dtype)
            self._scale = np.ones((), dtype)
            self._log_scale = 0.0
        else:
            self.low = _check_bound("low", low, n)
            self.high = _check_bound("high", high, n)
            if not np.all(self.low < self.high):
                i = int(np.argmin(self.high - self.low))
                raise ValueError(f"TanhNormal needs low < high, got low[{i}] = {self.low[i]} and "
                                 f"high[{i}] = {self.high[i]}")
            scale = (self.high - self.low) / 2
            self._loc = ((self.high + self.low) / 2).astype(dtype)
            self._scale = scale.astype(dtype)
            self._log_scale = float(np.log(scale).sum())
        # how far outside the box an action may lie from rounding of the affine map alone
        self._tol = 1e-6 + 16 * np.finfo(dtype).eps * np.max(1 + np.abs(self._loc) / self._scale)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.mean.shape[:-1]

    def _squash(self, u: np.ndarray) -> np.ndarray:
        a = np.tanh(u)
        return a if self.low is None else self._loc + self._scale * a

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Squashed actions of the mean's shape (the same draws as :class:`Normal`'s)."""
        return self.sample_with_pre_tanh(rng)[0]

    def sample_with_pre_tanh(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(actions, u)``: the squashed actions and the Gaussian sample they came from."""
        u = self.base.sample(rng)
        return self._squash(u), u

    def rsample(self, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """``(actions, u)`` as Tensors, ``u = mean + std * noise``, differentiable in the
        parameters (the reparameterisation trick); the same values as
        :meth:`sample_with_pre_tanh` from the same generator state."""
        noise = rng.standard_normal(self.mean.shape).astype(self.mean.dtype, copy=False)
        u = self.mean + self.std * noise
        a = u.tanh()
        return (a if self.low is None else a * self._scale + self._loc), u

    def mode(self) -> np.ndarray:
        """The squashed mean ``c + s tanh(mu)`` (the mode of ``u``, mapped; not the mode of
        ``a``, which the Jacobian shifts)."""
        return self._squash(self.mean.data)

    def log_prob(self, actions: Any, pre_tanh: Any = None) -> Tensor:
        """log pi(a) of actions of the mean's shape; exact with ``pre_tanh`` (see the class)."""
        a = np.asarray(actions.data if isinstance(actions, Tensor) else actions)
        if a.shape != self.mean.shape:
            raise ValueError(f"actions have shape {a.shape}, expected {self.mean.shape}")
        if pre_tanh is None:
            unit = a if self.low is None else (a - self._loc) / self._scale
            outside = ~(np.abs(unit) <= 1 + self._tol)  # NaN is outside too
            if outside.any():
                idx = tuple(int(i) for i in np.argwhere(outside)[0])
                raise ValueError(f"actions must lie in [low, high] ({self._bounds_text()}), got "
                                 f"{a[idx]} at index {list(idx)}")
            u = _leaf(np.arctanh(np.clip(unit, -TANH_CLIP, TANH_CLIP)))
        else:
            u = _as_tensor(pre_tanh)
            if u.shape != self.mean.shape:
                raise ValueError(f"pre_tanh has shape {u.shape}, expected {self.mean.shape}")
            off = ~(np.abs(self._squash(u.data) - a) <= self._tol * self._scale)
            if off.any():
                idx = tuple(int(i) for i in np.argwhere(off)[0])
                raise ValueError(f"pre_tanh does not match actions: at index {list(idx)} it "
                                 f"squashes to {self._squash(u.data)[idx]}, actions hold {a[idx]}")
        log_det = ((_LOG_2 - u - _softplus(u * -2.0)) * 2.0).sum(axis=-1)
        logp = self.base._log_prob(u) - log_det
        return logp - self._log_scale if self._log_scale else logp

    def entropy(self) -> Tensor:
        """The entropy of the base Gaussian ``H[u]``, an upper bound of ``H[a] - sum log s``."""
        return self.base.entropy()

    def kl(self, other: Distribution) -> Tensor:
        """KL(self || other) of the base Gaussians, equal to the KL of the squashed actions."""
        if not isinstance(other, TanhNormal):
            raise TypeError(f"kl needs another TanhNormal, got {type(other).__name__}")
        if not (_same(self.low, other.low) and _same(self.high, other.high)):
            raise ValueError(f"kl needs the same bounds, got {self._bounds_text()} and "
                             f"{other._bounds_text()}")
        return self.base.kl(other.base)

    def detach(self) -> TanhNormal:
        return TanhNormal(_frozen_copy(self.mean), _frozen_copy(self.log_std), self.low,
                          self.high)

    def _bounds_text(self) -> str:
        if self.low is None:
            return "no bounds: (-1, 1)"
        return f"low {self.low.tolist()}, high {self.high.tolist()}"


def _check_bound(name: str, x: Any, n: int) -> np.ndarray:
    """A bound as float64 of shape ``(n,)``, from a scalar or ``(n,)``."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.shape not in ((), (n,)):
        raise ValueError(f"{name} has shape {arr.shape}, expected () or ({n},)")
    arr = np.broadcast_to(arr.astype(np.float64), (n,)).copy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def _same(x: np.ndarray | None, y: np.ndarray | None) -> bool:
    return (x is None and y is None) or (x is not None and y is not None
                                         and np.array_equal(x, y))
