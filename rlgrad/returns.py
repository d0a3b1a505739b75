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

    Args:
        rewards: ``(T, N)`` (or ``(T,)`` for one environment) rewards ``r_t``.
        terminated: same shape, bool.
        truncated: same shape, bool.
        gamma: discount factor in ``[0, 1]``.
        bootstrap_values: same shape as ``rewards``, or None for 0.

    Returns:
        ``G``, same shape as ``rewards``, float64.
    """
    _check_unit_interval("gamma", gamma)
    rewards, terminated, truncated, bootstrap_values = _check_batch(
        rewards, terminated, truncated, bootstrap_values
    )
    cut = _cut_off(terminated, truncated)
    returns = np.empty_like(rewards)
    g = np.zeros(rewards.shape[1:])
    for t in reversed(range(rewards.shape[0])):
        g = np.where(cut[t], bootstrap_values[t], g)
        g = np.where(terminated[t], 0.0, g)
        g = rewards[t] + gamma * g
        returns[t] = g
    return returns


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    bootstrap_values: np.ndarray | None,
    gamma: float,
    lam: float,
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
    bootstrap values; ``lam = 0`` gives the one-step TD error ``A_t = delta_t``.

    Args:
        rewards: ``(T, N)`` (or ``(T,)``) rewards ``r_t``.
        values: same shape, ``V(s_t)`` of the observation each action was taken in.
        terminated: same shape, bool.
        truncated: same shape, bool.
        bootstrap_values: same shape, or None to bootstrap cut-off episodes with 0.
        gamma: discount factor in ``[0, 1]``.
        lam: GAE ``lambda`` in ``[0, 1]``.

    Returns:
        ``(advantages, returns)``, each the shape of ``rewards``, float64; ``returns`` are the
        value-function targets ``A_t + V_t``.
    """
    _check_unit_interval("gamma", gamma)
    _check_unit_interval("lam", lam)
    rewards, terminated, truncated, bootstrap_values = _check_batch(
        rewards, terminated, truncated, bootstrap_values
    )
    values = _check_real("values", values, rewards.shape)
    cut = _cut_off(terminated, truncated)
    done = terminated | cut
    next_values = np.empty_like(values)
    next_values[:-1] = values[1:]
    next_values = np.where(cut, bootstrap_values, next_values)
    deltas = rewards + gamma * np.where(terminated, 0.0, next_values) - values

    advantages = np.empty_like(rewards)
    a = np.zeros(rewards.shape[1:])
    for t in reversed(range(rewards.shape[0])):
        a = deltas[t] + gamma * lam * np.where(done[t], 0.0, a)
        advantages[t] = a
    return advantages, advantages + values


def normalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    r"""Shift and scale to zero mean and unit standard deviation over all entries.

    .. math:: \hat x = (x - \operatorname{mean}(x)) / (\operatorname{std}(x) + \epsilon)

    ``std`` is the population standard deviation (``ddof=0``). A constant input maps to zeros.
    Returns a new float array of the same shape.
    """
    x = np.asarray(x)
    if not _is_real(x.dtype):
        raise TypeError(f"normalize: expected a real-valued array, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"normalize: expected a non-empty array, got shape {x.shape}")
    if not eps >= 0:
        raise ValueError(f"normalize: invalid eps: {eps} (expected >= 0)")
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    return (x - x.mean()) / (x.std() + eps)


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


def _cut_off(terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """Rows whose successor is estimated by a bootstrap value: truncated or last, not terminal."""
    cut = truncated.copy()
    cut[-1] = True
    return cut & ~terminated


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    return rewards, terminated, truncated, bootstrap_values
