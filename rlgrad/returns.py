"""Returns and advantages for batches of vectorized rollouts.

Every function takes arrays laid out as ``(T, N)``: ``T`` time steps of ``N`` environments, rows in
the order they were collected. Episodes may end anywhere inside the batch; the flags say how:

- ``terminated[t, n]``: the episode reached a terminal state after step ``t``. Nothing follows it,
  so the value after it is 0.
- ``truncated[t, n]``: the episode was cut off after step ``t`` (time limit). The state after it
  still had a future, so its value is estimated: ``bootstrap_values[t, n]`` must be
  ``V(s_{t+1})`` of the *final* observation of that episode (``final_obs`` from
  :class:`rlgrad.envs.VecEnv`), never of the observation the environment was reset to.
- the last row ``t = T - 1`` is cut off by the end of the batch, so it is treated as truncated
  unless it is terminated; ``bootstrap_values[T - 1, n]`` is ``V`` of the observation that follows
  it.

If both flags are set, terminated wins (the state is terminal, its value is 0).
``bootstrap_values`` is read only where a row is cut off (truncated, or the last row, and not
terminated); other entries are ignored and may hold anything finite.

An optional ``valid`` mask (``(T, N)`` bool) marks the entries that are transitions. An entry
with ``valid`` False is not one (the autoreset step of Gymnasium's ``NEXT_STEP`` mode, which
always directly follows a done step): its advantage and return are 0, and the recursion skips it,
as if it were removed from its environment's column. Everything above then applies to the
valid entries: the entry before a skipped one is treated by its own flags, and the last valid
entry of a column is the one cut off by the end of the batch.

The functions are numpy only, vectorized over environments, with a Python loop over time.
Results are float64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["discounted_returns", "gae", "normalize", "explained_variance"]


def discounted_returns(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    bootstrap_values: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    r"""Reward-to-go of every step, restarting at episode boundaries.

    .. math::

        G_t = r_t + \gamma \cdot
            \begin{cases}
                0                  & \text{if terminated}_t \\
                B_t                & \text{else if truncated}_t \text{ or } t = T - 1 \\
                G_{t+1}            & \text{otherwise}
            \end{cases}

    where ``B_t = bootstrap_values[t]`` is ``V(s_{t+1})`` of the final observation of an episode
    that was cut off. With ``bootstrap_values=None`` cut-off episodes bootstrap with 0: the pure
    Monte Carlo return of the rewards seen, biased low for episodes stopped by a time limit.
    With ``valid``, ``t + 1`` and ``T - 1`` mean the next and the last valid entry of the column,
    and ``G_t = 0`` where ``valid`` is False (see the module docstring).

    Args:
        rewards: ``(T, N)`` (or ``(T,)`` for one environment) rewards ``r_t``.
        terminated: same shape, bool.
        truncated: same shape, bool.
        gamma: discount factor in ``[0, 1]``.
        bootstrap_values: same shape as ``rewards``, or None for 0.
        valid: same shape, bool, or None for all valid.

    Returns:
        ``G``, same shape as ``rewards``, float64.
    """
    _check_unit_interval("gamma", gamma)
    rewards, terminated, truncated, bootstrap_values, valid = _check_batch(
        rewards, terminated, truncated, bootstrap_values, valid
    )
    cut = _cut_off(terminated, truncated, valid)
    returns = np.empty_like(rewards)
    g = np.zeros(rewards.shape[1:])
    for t in reversed(range(rewards.shape[0])):
        g_t = np.where(cut[t], bootstrap_values[t], g)
        g_t = np.where(terminated[t], 0.0, g_t)
        g_t = rewards[t] + gamma * g_t
        if valid is None:
            g = g_t
        else:  # an invalid entry passes on the return of the entry after it
            g = np.where(valid[t], g_t, g)
            g_t = np.where(valid[t], g_t, 0.0)
        returns[t] = g_t
    return returns


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    bootstrap_values: np.ndarray | None,
    gamma: float,
    lam: float,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Generalized advantage estimation (Schulman et al. 2016).

    .. math::

        V'_t &= \begin{cases}
                    B_t       & \text{if truncated}_t \text{ or } t = T - 1 \\
                    V_{t+1}   & \text{otherwise}
                \end{cases} \\
        \delta_t &= r_t + \gamma (1 - \text{terminated}_t) V'_t - V_t \\
        A_t &= \delta_t + \gamma \lambda (1 - \text{done}_t) A_{t+1} \\
        R_t &= A_t + V_t

    with ``V_t = values[t]`` = ``V(s_t)``, ``B_t = bootstrap_values[t]`` = ``V(s_{t+1})`` of the
    final observation of a cut-off episode, and ``done_t`` = terminated or truncated or
    ``t = T - 1``. ``lam = 1`` gives ``R_t`` equal to :func:`discounted_returns` with the same
    bootstrap values; ``lam = 0`` gives the one-step TD error ``A_t = delta_t``. With ``valid``,
    ``t + 1`` and ``T - 1`` mean the next and the last valid entry of the column, and
    ``A_t = R_t = 0`` where ``valid`` is False (see the module docstring).

    Args:
        rewards: ``(T, N)`` (or ``(T,)``) rewards ``r_t``.
        values: same shape, ``V(s_t)`` of the observation each action was taken in.
        terminated: same shape, bool.
        truncated: same shape, bool.
        bootstrap_values: same shape, or None to bootstrap cut-off episodes with 0.
        gamma: discount factor in ``[0, 1]``.
        lam: GAE ``lambda`` in ``[0, 1]``.
        valid: same shape, bool, or None for all valid.

    Returns:
        ``(advantages, returns)``, each the shape of ``rewards``, float64; ``returns`` are the
        value-function targets ``A_t + V_t``.
    """
    _check_unit_interval("gamma", gamma)
    _check_unit_interval("lam", lam)
    rewards, terminated, truncated, bootstrap_values, valid = _check_batch(
        rewards, terminated, truncated, bootstrap_values, valid
    )
    values = _check_real("values", values, rewards.shape)
    cut = _cut_off(terminated, truncated, valid)
    done = terminated | cut
    next_values = _next_valid(values, valid)
    next_values = np.where(cut, bootstrap_values, next_values)
    deltas = rewards + gamma * np.where(terminated, 0.0, next_values) - values

    advantages = np.empty_like(rewards)
    a = np.zeros(rewards.shape[1:])
    for t in reversed(range(rewards.shape[0])):
        a_t = deltas[t] + gamma * lam * np.where(done[t], 0.0, a)
        if valid is None:
            a = a_t
        else:  # an invalid entry passes on the advantage of the entry after it
            a = np.where(valid[t], a_t, a)
            a_t = np.where(valid[t], a_t, 0.0)
        advantages[t] = a_t
    if valid is None:
        return advantages, advantages + values
    return advantages, np.where(valid, advantages + values, 0.0)


def normalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    r"""Shift and scale to zero mean and unit standard deviation over all entries.

    .. math:: \hat x = (x - \operatorname{mean}(x)) / (\operatorname{std}(x) + \epsilon)

    ``std`` is the population standard deviation (``ddof=0``); mean and std are computed in
    float64. A constant input maps to zeros. Returns a new float array of the same shape and
    float dtype (float32 stays float32).

    Raises ValueError for a non-finite entry, and for values so large that their variance
    overflows float64 (``|x|`` beyond about 1e154): dividing by an infinite std would silently
    zero every advantage. Rewards that large want scaling first.
    """
    x = np.asarray(x)
    if not _is_real(x.dtype):
        raise TypeError(f"normalize: expected a real-valued array, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"normalize: expected a non-empty array, got shape {x.shape}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"normalize: eps must be a real number, got {eps!r}")
    if not 0 <= eps < np.inf:
        raise ValueError(f"normalize: invalid eps: {eps} (expected a finite number >= 0)")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(dtype=np.float64)
        std = x.std(dtype=np.float64)
    if not (np.isfinite(mean) and np.isfinite(std)):
        bad = np.argwhere(~np.isfinite(x))
        if bad.size:
            idx = tuple(int(i) for i in bad[0])
            raise ValueError(f"normalize: expected finite values, got {x[idx]} at index "
                             f"{list(idx)}")
        raise ValueError(
            f"normalize: values of magnitude up to {np.abs(x).max():.3g} are too large to "
            "normalize (their variance overflows float64); scale the rewards down, e.g. with "
            "rlgrad.normalize.RewardScaler or a constant reward scale"
        )
    dtype = np.result_type(x.dtype, np.float32)
    return ((x - mean) / (std + eps)).astype(dtype, copy=False)


def explained_variance(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    r"""How much of the variance of ``y_true`` the prediction explains.

    .. math:: \mathrm{EV} = 1 - \operatorname{Var}[y - \hat y] / \operatorname{Var}[y]

    1 is a perfect prediction, 0 is no better than predicting the mean, negative is worse.
    Returns nan when ``Var[y] = 0`` (as Stable-Baselines3 does). Both arrays must have the same
    shape: an ``(N,)`` against ``(N, 1)`` mix-up raises instead of broadcasting to ``(N, N)``.
    """
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_pred.shape != y_true.shape:
        raise ValueError(
            f"explained_variance: y_pred has shape {y_pred.shape} but y_true has shape "
            f"{y_true.shape}; expected equal shapes"
        )
    if y_true.size == 0:
        raise ValueError("explained_variance: expected non-empty arrays, got size 0")
    var_y = np.var(y_true)
    if var_y == 0:
        return float("nan")
    return float(1.0 - np.var(y_true - y_pred) / var_y)


def _cut_off(terminated: np.ndarray, truncated: np.ndarray, valid: np.ndarray | None
             ) -> np.ndarray:
    """Entries whose successor is estimated by a bootstrap value: truncated or the column's last
    (valid) entry, and not terminal."""
    cut = truncated.copy()
    if valid is None:
        cut[-1] = True
        return cut & ~terminated
    # valid entries with no valid entry after them: the reversed cumulative count is 1
    last = valid & (np.cumsum(valid[::-1], axis=0)[::-1] == 1)
    return (cut | last) & ~terminated & valid


def _next_valid(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """values of the next (valid) entry in each column; 0 after the last (it is cut off)."""
    following = np.zeros_like(values)
    if valid is None:
        following[:-1] = values[1:]
        return following
    v = np.zeros(values.shape[1:])
    for t in reversed(range(values.shape[0])):
        following[t] = v
        v = np.where(valid[t], values[t], v)
    return following


def _check_unit_interval(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Invalid {name}: {value} (expected a number in [0, 1])")


def _is_real(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _check_real(name: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x)
    if not _is_real(x.dtype):
        raise ValueError(f"{name} must be a real-valued array, got dtype {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name} has shape {x.shape}, expected {shape} (the shape of rewards)")
    return x.astype(np.float64, copy=False)


def _check_bool(name: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.bool_:
        raise ValueError(f"{name} must be a bool array, got dtype {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name} has shape {x.shape}, expected {shape} (the shape of rewards)")
    return x


def _check_batch(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    bootstrap_values: np.ndarray | None,
    valid: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    rewards = np.asarray(rewards)
    if rewards.ndim not in (1, 2) or rewards.shape[0] == 0:
        raise ValueError(f"rewards has shape {rewards.shape}, expected (T, N) or (T,) with T >= 1")
    shape = rewards.shape
    rewards = _check_real("rewards", rewards, shape)
    terminated = _check_bool("terminated", terminated, shape)
    truncated = _check_bool("truncated", truncated, shape)
    if bootstrap_values is None:
        bootstrap_values = np.zeros(shape)
    else:
        bootstrap_values = _check_real("bootstrap_values", bootstrap_values, shape)
    if valid is not None:
        valid = _check_bool("valid", valid, shape)
    return rewards, terminated, truncated, bootstrap_values, valid
