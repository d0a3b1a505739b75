"""Running statistics of observations and returns, saved with the agent.

:class:`RunningMeanStd` keeps the mean and variance of a stream of batches.
:class:`ObservationNormalizer` standardises observations with it; :class:`RewardScaler` divides
rewards by the running standard deviation of the discounted return. Both follow
Stable-Baselines3's ``VecNormalize`` (the statistics are those of its ``RunningMeanStd``), and
both take the statistics' state in and out as float64 arrays (``state_dict`` /
``load_state_dict``), so a checkpoint restores them bit for bit.

Every statistic is float64, whatever the dtype of the data. Non-finite data is refused: one NaN
would poison the statistics, and through them every later observation or reward.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["RunningMeanStd", "ObservationNormalizer", "RewardScaler"]


class RunningMeanStd:
    r"""Mean and population variance of every batch seen so far, merged exactly.

    The state is ``mean`` :math:`\mu_A`, ``var`` :math:`\sigma_A^2` (arrays of ``shape``) and
    ``count`` :math:`n_A`. A batch of :math:`n_B` rows with mean :math:`\mu_B` and population
    variance :math:`\sigma_B^2` (over axis 0) is merged by Chan, Golub and LeVeque's parallel
    algorithm (1979):

    .. math::

        \delta = \mu_B - \mu_A, \qquad n = n_A + n_B, \qquad
        \mu = \mu_A + \delta \, \frac{n_B}{n}, \qquad
        \sigma^2 = \frac{\sigma_A^2 n_A + \sigma_B^2 n_B + \delta^2 n_A n_B / n}{n}

    The state starts at ``mean = 0``, ``var = 1``, ``count = epsilon``, as in Stable-Baselines3's
    ``RunningMeanStd``: a pseudo-sample of weight ``epsilon`` that keeps the variance defined
    before any data. After batches :math:`x_1 \dots x_k` the statistics are those of their
    concatenation :math:`X` (:math:`N` rows) pooled with that pseudo-sample,

    .. math::

        \mu = \frac{\sum X}{N + \epsilon}, \qquad
        \sigma^2 = \frac{\epsilon (1 + \mu^2) + \sum (X - \mu)^2}{N + \epsilon},

    exactly numpy's ``mean`` and ``var`` of :math:`X` for ``epsilon = 0`` (up to rounding).

    Args:
        shape: the shape of one row.
        epsilon: the weight of the initial pseudo-sample, ``>= 0``.
    """

    def __init__(self, shape: int | Sequence[int] = (), epsilon: float = 1e-4) -> None:
        self.shape = _check_shape(shape)
        self.epsilon = _check_real_number("epsilon", epsilon, low=0.0)
        self.mean = np.zeros(self.shape, np.float64)
        self.var = np.ones(self.shape, np.float64)
        self.count = self.epsilon

    def __repr__(self) -> str:
        return f"RunningMeanStd(shape={self.shape}, count={self.count})"

    def update(self, x: Any) -> None:
        """Merge a batch ``x`` of shape ``(B, *shape)``; an empty batch changes nothing."""
        self._update_checked(_check_array("x", x, (None, *self.shape)))

    def _update_checked(self, x: np.ndarray) -> None:
        """:meth:`update` for a real, finite array of shape ``(B, *shape)`` (checked by the
        caller)."""
        if x.shape[0] == 1:
            self._update_one(x[0])
            return
        if x.shape[0] == 0:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            batch_mean = x.mean(axis=0, dtype=np.float64)
            batch_var = x.var(axis=0, dtype=np.float64)
        if not (np.isfinite(batch_mean).all() and np.isfinite(batch_var).all()):
            raise ValueError(f"RunningMeanStd: the variance of x overflows float64 (values of "
                             f"magnitude up to {np.abs(x).max():.3g}); scale the data down")
        self.update_from_moments(batch_mean, batch_var, x.shape[0])

    def update_from_moments(self, batch_mean: Any, batch_var: Any, batch_count: float) -> None:
        """Merge a batch given by its mean, population variance (arrays of ``shape``) and size."""
        batch_mean = _check_array("batch_mean", batch_mean, self.shape).astype(np.float64)
        batch_var = _check_array("batch_var", batch_var, self.shape).astype(np.float64)
        if np.any(batch_var < 0):
            raise ValueError(f"batch_var must be >= 0, got {batch_var.min()}")
        batch_count = _check_real_number("batch_count", batch_count, low=0.0)
        if batch_count == 0:
            return
        delta = batch_mean - self.mean
        total = self.count + batch_count
        with np.errstate(over="ignore", invalid="ignore"):
            mean = self.mean + delta * (batch_count / total)
            m2 = self.var * self.count + batch_var * batch_count + np.square(delta) * (
                self.count * batch_count / total)
            var = m2 / total
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise ValueError(
                f"RunningMeanStd: the statistics overflow float64 (batch values of magnitude "
                f"up to about {np.abs(batch_mean).max() + np.sqrt(batch_var.max()):.3g}); "
                "scale the data down"
            )
        self.mean, self.var, self.count = mean, var, total

    def _update_one(self, row: Any) -> None:
        r"""The merge of a batch of one finite row (one step of one environment), fast.

        :meth:`update_from_moments` with :math:`\mu_B` the row, :math:`\sigma_B^2 = 0`,
        :math:`n_B = 1`: the same expressions on the same values, minus the term
        :math:`\sigma_B^2 n_B = 0`, whose addition changes no bit of the non-negative sum it
        joins, and minus the checks of moments known to be right. (``np.mean`` of one row
        turns a -0.0 into +0.0; no result below depends on the sign of a zero ``delta``.)
        """
        if not self.shape:  # a scalar stream (the returns of one environment): Python floats
            self._update_scalar(float(row))
            return
        delta = row.astype(np.float64) - self.mean
        total = self.count + 1.0
        # no errstate (it costs as much as the arithmetic): any overflow or invalid operation
        # here ends in a non-finite statistic, so numpy warns only on the way to the error
        mean = self.mean + delta * (1.0 / total)
        var = (self.var * self.count + np.square(delta) * (self.count * 1.0 / total)) / total
        if not np.isfinite(np.add.reduce(mean, axis=None) + np.add.reduce(var, axis=None)) \
                and not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise ValueError(
                f"RunningMeanStd: the statistics overflow float64 (batch values of magnitude "
                f"up to about {np.abs(row).max():.3g}); scale the data down"
            )
        self.mean, self.var, self.count = mean, var, total

    def _update_scalar(self, x: float) -> None:
        """:meth:`_update_one` for ``shape == ()`` in Python floats: the same IEEE double
        operations as numpy's, without its per-call cost; the state stays numpy float64."""
        mean, var, count = float(self.mean), float(self.var), self.count
        delta = x - mean
        total = count + 1.0
        mean = mean + delta * (1.0 / total)
        var = (var * count + delta * delta * (count * 1.0 / total)) / total
        if not (math.isfinite(mean) and math.isfinite(var)):
            raise ValueError(
                f"RunningMeanStd: the statistics overflow float64 (batch values of magnitude "
                f"up to about {abs(x):.3g}); scale the data down"
            )
        self.mean, self.var, self.count = np.float64(mean), np.float64(var), total

    def state_dict(self) -> dict[str, np.ndarray]:
        """``mean``, ``var`` (of ``shape``) and ``count`` (0-d), float64 copies."""
        return {"mean": self.mean.copy(), "var": self.var.copy(),
                "count": np.array(self.count, np.float64)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s arrays; everything is checked before anything is set."""
        arrays = _check_state(type(self).__name__, state,
                              {"mean": self.shape, "var": self.shape, "count": ()})
        if np.any(arrays["var"] < 0) or arrays["count"] < 0:
            raise ValueError(f"{type(self).__name__} state needs var >= 0 and count >= 0, got "
                             f"min var {arrays['var'].min()} and count {arrays['count']}")
        self.mean, self.var, self.count = arrays["mean"], arrays["var"], float(arrays["count"])


class ObservationNormalizer:
    r"""Observations standardised by their running mean and variance (SB3's ``VecNormalize``).

    .. math:: \hat o = \operatorname{clip}\big((o - \mu) / \sqrt{\sigma^2 + \epsilon},
              -c, c\big)

    computed in float64 and returned as float32. ``obs_rms`` is a :class:`RunningMeanStd` of
    the observations (its own ``epsilon`` is 1e-4, the count of its pseudo-sample).

    ``normalizer(obs)`` first merges ``obs`` into the statistics, then standardises it with the
    updated statistics (SB3's order); ``normalizer(obs, update=False)`` and
    :meth:`normalize` only standardise. :meth:`frozen` gives an independent copy that never
    updates, whatever ``update`` says: the one to hand to evaluation.

    Args:
        shape: the shape of one observation.
        clip: :math:`c > 0`, the bound of the standardised values.
        epsilon: :math:`\epsilon \ge 0`, added to the variance.
    """

    def __init__(self, shape: int | Sequence[int], clip: float = 10.0,
                 epsilon: float = 1e-8) -> None:
        self.obs_rms = RunningMeanStd(shape)
        self.shape = self.obs_rms.shape
        self.clip = _check_real_number("clip", clip, low=0.0, open_low=True, allow_inf=True)
        self.epsilon = _check_real_number("epsilon", epsilon, low=0.0)
        self.training = True

    def __repr__(self) -> str:
        return (f"ObservationNormalizer(shape={self.shape}, clip={self.clip}, "
                f"epsilon={self.epsilon}, training={self.training})")

    def __call__(self, obs: Any, update: bool = True) -> np.ndarray:
        """Standardise observations ``(B, *shape)`` (or one of ``shape``), updating first."""
        obs = self._check_obs(obs)
        if update and self.training:
            self.obs_rms._update_checked(obs.reshape((-1, *self.shape)))
        return self._standardise(obs)

    def normalize(self, obs: Any) -> np.ndarray:
        """Standardise without touching the statistics."""
        return self._standardise(self._check_obs(obs))

    def frozen(self) -> ObservationNormalizer:
        """A copy of the current statistics that never updates."""
        copied = copy.deepcopy(self)
        copied.training = False
        return copied

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.obs_rms.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.obs_rms.load_state_dict(state)

    def _check_obs(self, obs: Any) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.shape == self.shape:
            return _check_array("obs", obs, self.shape)
        return _check_array("obs", obs, (None, *self.shape))

    def _standardise(self, obs: np.ndarray) -> np.ndarray:
        z = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)
        # np.clip, written as maximum then minimum: the same values for bounds other than 0
        # (clip > 0), and faster on a single observation
        np.maximum(z, -self.clip, out=z)
        np.minimum(z, self.clip, out=z)
        return z.astype(np.float32)


class RewardScaler:
    r"""Rewards divided by the running standard deviation of the discounted return.

    Each environment ``n`` keeps a running discounted return :math:`R_n`. One vector step with
    rewards :math:`r`, in this order:

    1. :math:`R_n \leftarrow \gamma R_n + r_n` for every valid entry;
    2. the statistics ``ret_rms`` merge the batch of those :math:`R_n` (one value per valid
       environment);
    3. :math:`\hat r_n = \operatorname{clip}\big(r_n / \sqrt{\sigma^2 + \epsilon}, -c, c\big)`
       with the updated variance :math:`\sigma^2` (not centred: subtracting a mean would change
       which behaviour is rewarded); :math:`\hat r_n = 0` for an invalid entry;
    4. :math:`R_n \leftarrow 0` where a valid entry's episode ended (terminated or truncated).

    This is the order of Stable-Baselines3's ``VecNormalize.step_wait`` (``_update_reward``, then
    ``normalize_reward``, then ``returns[dones] = 0``, where ``dones`` is terminated or truncated).
    ``valid`` False marks a step that is not a transition (the autoreset step of Gymnasium's
    ``NEXT_STEP`` mode): it updates neither :math:`R` nor the statistics, as Gymnasium's vector
    ``NormalizeReward`` skips autoreset steps. Gymnasium's wrapper differs otherwise: it
    computes :math:`R \leftarrow \gamma (1 - \text{terminated}) R + r`, with the flag of the
    current step, does not reset on truncation, and does not clip.

    ``scaler(rewards, terminated, truncated, valid, update=False)`` and :meth:`normalize` only
    scale, leaving :math:`R` and the statistics as they are; :meth:`frozen` gives a copy that
    never updates.

    Args:
        num_envs: the number of environments ``N``.
        gamma: :math:`\gamma \in [0, 1]`, the discount of the running return (the agent's).
        clip: :math:`c > 0`, the bound of the scaled rewards.
        epsilon: :math:`\epsilon \ge 0`, added to the variance.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0,
                 epsilon: float = 1e-8) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral):
            raise TypeError(f"num_envs must be an int, got {num_envs!r}")
        if num_envs < 1:
            raise ValueError(f"Invalid num_envs: {num_envs} (expected >= 1)")
        self.num_envs = int(num_envs)
        self.gamma = _check_real_number("gamma", gamma, low=0.0, high=1.0)
        self.clip = _check_real_number("clip", clip, low=0.0, open_low=True, allow_inf=True)
        self.epsilon = _check_real_number("epsilon", epsilon, low=0.0)
        self.ret_rms = RunningMeanStd(())
        self.returns = np.zeros(self.num_envs, np.float64)
        self.training = True

    def __repr__(self) -> str:
        return (f"RewardScaler(num_envs={self.num_envs}, gamma={self.gamma}, clip={self.clip}, "
                f"epsilon={self.epsilon}, training={self.training})")

    def __call__(self, rewards: Any, terminated: Any, truncated: Any, valid: Any = None,
                 update: bool = True) -> np.ndarray:
        """Scaled rewards ``(N,)``, float64, of one vector step (in the order above)."""
        n = self.num_envs
        rewards = _check_array("rewards", rewards, (n,)).astype(np.float64)
        terminated = _check_flags("terminated", terminated, n)
        truncated = _check_flags("truncated", truncated, n)
        valid = np.ones(n, bool) if valid is None else _check_flags("valid", valid, n)
        if n == 1:
            return self._step_one(rewards, terminated, truncated, valid, update)
        if update and self.training:
            returns = np.where(valid, self.gamma * self.returns + rewards, self.returns)
            # refuses returns whose statistics overflow (long before R itself could)
            self.ret_rms.update(returns[valid])
            self.returns = np.where(valid & (terminated | truncated), 0.0, returns)
        return np.where(valid, self._scale(rewards), 0.0)

    def _step_one(self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                  valid: np.ndarray, update: bool) -> np.ndarray:
        """:meth:`__call__` for one environment (checked arrays of shape ``(1,)``), in Python
        floats: the same IEEE double operations in the same order, so the same bits."""
        r, ok = float(rewards[0]), bool(valid[0])
        if update and self.training:
            if ok:
                ret = self.gamma * float(self.returns[0]) + r
                self.ret_rms._update_scalar(ret)  # raises before anything else changes
                self.returns = np.array([0.0 if terminated[0] or truncated[0] else ret])
            else:
                self.returns = self.returns.copy()
        if not ok:
            return np.zeros(1)
        denom = float(self.ret_rms.var) + self.epsilon
        if denom == 0.0:  # no variance and no epsilon: numpy's inf, nan and warning
            return self._scale(rewards)
        return np.array([min(max(r / math.sqrt(denom), -self.clip), self.clip)])

    def normalize(self, rewards: Any) -> np.ndarray:
        """Scale rewards without touching the running returns or the statistics."""
        return self._scale(_check_array("rewards", rewards, (None,)).astype(np.float64))

    def frozen(self) -> RewardScaler:
        """A copy of the current state that never updates."""
        copied = copy.deepcopy(self)
        copied.training = False
        return copied

    def state_dict(self) -> dict[str, np.ndarray]:
        """The statistics of the returns and the running returns ``(N,)``, float64 copies."""
        return {**self.ret_rms.state_dict(), "returns": self.returns.copy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s arrays; everything is checked before anything is set."""
        arrays = _check_state(type(self).__name__, state,
                              {"mean": (), "var": (), "count": (), "returns": (self.num_envs,)})
        rms = RunningMeanStd(())
        rms.load_state_dict({k: arrays[k] for k in ("mean", "var", "count")})
        self.ret_rms, self.returns = rms, arrays["returns"]

    def _scale(self, rewards: np.ndarray) -> np.ndarray:
        return np.clip(rewards / np.sqrt(self.ret_rms.var + self.epsilon), -self.clip, self.clip)


# ---- checks ----------------------------------------------------------------------------------


def _check_shape(shape: Any) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0 for d in dims):
        raise ValueError(f"shape must hold non-negative ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_real_number(name: str, value: Any, low: float, high: float = np.inf,
                       open_low: bool = False, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    ok = (value > low if open_low else value >= low) and value <= high
    if not ok or (value == np.inf and not allow_inf):
        bound = f"in [{low}, {high}]" if high < np.inf else f"{'>' if open_low else '>='} {low}"
        raise ValueError(f"Invalid {name}: {value} (expected a {'' if allow_inf else 'finite '}"
                         f"number {bound})")
    return value


def _check_array(name: str, x: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """A real, finite array of ``shape`` (``None`` matches any length)."""
    x = np.asarray(x)
    kind = x.dtype.kind
    if kind not in "iuf":  # bool, complex, object, strings, ...
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim != len(shape) or not _fits(x.shape, shape):
        want = "(" + ", ".join("B" if s is None else str(s) for s in shape) + \
            ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} has shape {x.shape}, expected {want}")
    # the sum of squares (one BLAS call, no warning) is finite iff every entry is, barring an
    # overflow of the sum, which the full scan then clears
    if kind == "f" and not np.isfinite(np.vdot(x, x)) and not np.isfinite(x).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{name} must be finite, got {x[idx]} at index {list(idx)}")
    return x


def _fits(actual: tuple[int, ...], shape: tuple[int | None, ...]) -> bool:
    for s, d in zip(shape, actual):
        if s is not None and s != d:
            return False
    return True


def _check_flags(name: str, x: Any, n: int) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.bool_:
        raise TypeError(f"{name} must be a bool array, got dtype {x.dtype}")
    if x.shape != (n,):
        raise ValueError(f"{name} has shape {x.shape}, expected ({n},)")
    return x


def _check_state(owner: str, state: Any, expected: dict[str, tuple[int, ...]]
                 ) -> dict[str, np.ndarray]:
    """Copies of ``state``'s arrays, once every name, type, dtype, shape and value is right."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{owner} state must be a mapping of arrays, got {type(state).__name__}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{owner} state does not match: missing keys {missing}, unexpected keys "
                         f"{unexpected}")
    arrays = {}
    for name, shape in expected.items():
        value = state[name]
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{owner} state {name!r} must be a numpy array, got "
                            f"{type(value).__name__}")
        if value.dtype != np.float64:
            raise TypeError(f"{owner} state {name!r} has dtype {value.dtype}, expected float64")
        if value.shape != shape:
            raise ValueError(f"{owner} state {name!r} has shape {value.shape}, expected {shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"{owner} state {name!r} must be finite, got {value.tolist()}")
        arrays[name] = value.copy()
    return arrays
