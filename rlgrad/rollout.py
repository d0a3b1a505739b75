"""Collecting experience: two collectors behind one :class:`Batch`.

- :class:`EpisodeCollector` (REINFORCE): every batch starts by resetting all environments with a
  seed drawn from the run's generator, collects at least a step budget, then lets running
  episodes finish. Every episode in a batch is complete, and the state of a run between two
  updates is parameters + optimizer state + generator state: a resumed run continues exactly as
  the uninterrupted one.
- :class:`RolloutCollector` (actor-critic): ``T`` steps of every environment from wherever the
  environments are; their state is kept across updates, and the cut at the rollout's end is
  bootstrapped by the agent with V(s_T). A run resumed from a checkpoint cannot restore the
  environments' internal state, so it resets them and restarts the episodes that were in
  progress (the parameters, optimizer, normaliser and generator states are exact).

Both hand the agent's ``act(obs)`` the (normalised) observations ``(N, obs_dim)`` and store
what it returns: the actions to send and per-step extras (old log-probabilities, values).

Autoreset. :class:`rlgrad.envs.VecEnv` resets a finished sub-environment either in the same
step (``SAME_STEP``: the step returns the reset observation and, separately, the final one) or,
for Gymnasium's ``NEXT_STEP`` vector envs, in the following step, which ignores the action and
is not a transition. Such entries are marked ``valid = False`` and never used: not as
transitions, not in returns, not counted as steps (the bug behind CleanRL #499 is to treat them
as transitions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Batch", "Minibatch", "EpisodeCollector", "RolloutCollector", "StopCollection"]

Act = Callable[[np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
"""``act(obs (N, obs_dim)) -> (actions (N, ...), extras {name: (N, ...)})``."""

Normalize = Callable[[np.ndarray, bool], np.ndarray]
"""``normalize(raw_obs, update) -> obs``: the agent's observation normalisation."""

ScaleRewards = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``scale(rewards, terminated, truncated, valid) -> rewards`` (all ``(N,)``): the agent's
reward scaling, e.g. :class:`rlgrad.normalize.RewardScaler`."""


class StopCollection(Exception):
    """A stop was requested during collection (Ctrl-C): the partial batch is dropped."""


class Minibatch(Mapping):
    """Flat ``(B, ...)`` arrays of one mini-batch, by key or as attributes: ``mb.obs``,
    ``mb.actions``, the agent's extras (``mb.log_prob``) and what ``prepare`` put in
    ``batch.data`` (``mb.advantages``, ``mb.returns``).

    ``epoch`` is the pass over the batch it belongs to; ``last_in_epoch`` marks the epoch's last.
    """

    def __init__(self, arrays: dict[str, np.ndarray], epoch: int, last_in_epoch: bool) -> None:
        self._arrays = arrays
        self.epoch = epoch
        self.last_in_epoch = last_in_epoch

    def __getitem__(self, key: str) -> np.ndarray:
        return self._arrays[key]

    def __getattr__(self, key: str) -> np.ndarray:
        try:
            return self.__dict__["_arrays"][key]
        except KeyError:
            raise AttributeError(f"mini-batch has no {key!r}; it has {sorted(self._arrays)}") \
                from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def size(self) -> int:
        return len(self._arrays["obs"])


@dataclass
class Batch:
    """T vector steps of N environments. Shapes: ``(T, N)``, ``(T, N, obs_dim)``.

    Attributes:
        obs: observations the actions were taken in (normalised if the agent normalises).
        actions: the actions as sampled (for a Gaussian policy: unclipped, so their
            log-probabilities are exact; only the action sent to the environment is clipped).
        rewards: rewards (scaled if the agent scales them), float64.
        terminated, truncated: the episode ended after this step, by a terminal state or a cut
            (time limit, the end of an episode-collector batch).
        final_obs: ``s_{t+1}`` where an episode ended (the true final observation, never the
            reset one), the next observation elsewhere; ``V(final_obs)`` is the bootstrap value.
        valid: the entries that are transitions of this batch (inactive environments of an
            episode batch and autoreset steps are not).
        extras: per-step arrays the agent recorded during collection (``log_prob``, ``value``).
        episodes: ``(step at the end, return, length)`` of every episode that ended.
        data: flat ``(B, ...)`` arrays the agent's ``prepare`` computes (advantages, returns).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    valid: np.ndarray
    episodes: list[tuple[int, float, int]]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    _flat: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        """Number of transitions ``B`` (the environment steps this batch counts)."""
        return int(np.count_nonzero(self.valid))

    def flat(self, x: np.ndarray) -> np.ndarray:
        """``x[valid]`` in time-major order, ``(B, ...)``; computed once per array and
        read-only, since every caller shares it."""
        hit = self._flat.get(id(x))
        if hit is None or hit[0] is not x:
            picked = x[self.valid]
            picked.flags.writeable = False
            hit = self._flat[id(x)] = (x, picked)
        return hit[1]

    def flat_arrays(self) -> dict[str, np.ndarray]:
        """Every per-transition array, flat: obs, actions, rewards, extras and ``data``."""
        arrays = {"obs": self.flat(self.obs), "actions": self.flat(self.actions),
                  "rewards": self.flat(self.rewards)}
        arrays.update((k, self.flat(v)) for k, v in self.extras.items())
        for k, v in self.data.items():
            if len(v) != self.size:
                raise ValueError(f"batch.data[{k!r}] has {len(v)} entries, expected one per "
                                 f"transition ({self.size})")
            arrays[k] = v
        return arrays

    def minibatches(self, size: int, epochs: int, rng: np.random.Generator
                    ) -> Iterator[Minibatch]:
        """``epochs`` passes over the batch in shuffled mini-batches of ``size`` transitions
        (the last of a pass may be smaller). ``size`` 0 or >= the batch gives the whole batch
        once per pass, unshuffled, without drawing from ``rng``."""
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"mini-batch size must be an integer >= 0, got {size!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        arrays = self.flat_arrays()
        n = self.size
        if size == 0 or size >= n:
            for epoch in range(epochs):
                yield Minibatch(arrays, epoch, True)
            return
        for epoch in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, size):
                idx = order[start:start + size]
                yield Minibatch({k: v[idx] for k, v in arrays.items()}, epoch,
                                start + size >= n)


class _Store:
    """Per-step arrays appended during collection, stacked into a Batch at the end."""

    KEYS = ("obs", "actions", "rewards", "terminated", "truncated", "final_obs", "valid")

    def __init__(self) -> None:
        self.lists: dict[str, list[np.ndarray]] = {k: [] for k in self.KEYS}
        self.extras: dict[str, list[np.ndarray]] = {}

    def append(self, extras: Mapping[str, np.ndarray], **step: np.ndarray) -> None:
        for k, v in step.items():
            self.lists[k].append(v)
        for k, v in extras.items():
            self.extras.setdefault(k, []).append(v)

    def batch(self, episodes: list[tuple[int, float, int]]) -> Batch:
        return Batch(**{k: np.stack(v) for k, v in self.lists.items()}, episodes=episodes,
                     extras={k: np.stack(v) for k, v in self.extras.items()})


def _identity(obs: np.ndarray, update: bool) -> np.ndarray:
    return obs


class _Collector:
    def __init__(self, env: Any, rng: np.random.Generator, normalize: Normalize | None = None,
                 scale_rewards: ScaleRewards | None = None) -> None:
        self.env = env
        self.rng = rng
        self.normalize = normalize or _identity
        self.scale_rewards = scale_rewards
        self.stop_requested: Callable[[], bool] = lambda: False

    def _step(self, actions: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One vector step: (next obs, rewards, terminated, truncated, final obs, valid), the
        observations normalised, the rewards scaled."""
        raw_next, rewards, terminated, truncated, raw_final = self.env.step(actions)
        valid = getattr(self.env, "valid", None)
        valid = np.ones(len(rewards), dtype=bool) if valid is None else np.array(valid)
        next_obs = self.normalize(raw_next, True)
        # where no episode ended, final_obs is next_obs (VecEnv returns the same array)
        final_obs = next_obs if raw_final is raw_next else self.normalize(raw_final, False)
        if self.scale_rewards is not None:
            rewards = self.scale_rewards(rewards, terminated, truncated, valid)
        return next_obs, rewards, terminated, truncated, final_obs, valid

    def _reset(self) -> np.ndarray:
        return self.normalize(self.env.reset(seed=int(self.rng.integers(2**31 - 1))), True)


class EpisodeCollector(_Collector):
    """Whole episodes from a fresh reset per batch (REINFORCE).

    A batch is at least ``steps_per_update`` steps (or, with ``episodes_per_update`` > 0, that
    many finished episodes), after which running episodes finish, up to ``max_episode_tail``
    extra steps (0: ``steps_per_update``); episodes still running then are cut off (marked
    truncated, to be bootstrapped). An environment whose episode ends after the budget is
    reached goes idle; its further steps are not used. The remaining step budget of the run is
    never exceeded.
    """

    def __init__(self, env: Any, rng: np.random.Generator, steps_per_update: int,
                 episodes_per_update: int = 0, max_episode_tail: int = 0,
                 normalize: Normalize | None = None,
                 scale_rewards: ScaleRewards | None = None) -> None:
        super().__init__(env, rng, normalize, scale_rewards)
        self.steps_per_update = steps_per_update
        self.episodes_per_update = episodes_per_update
        self.max_episode_tail = max_episode_tail

    @classmethod
    def from_config(cls, env: Any, rng: np.random.Generator, config: Any,
                    **kw: Any) -> EpisodeCollector:
        return cls(env, rng, config.steps_per_update, config.episodes_per_update,
                   config.max_episode_tail, **kw)

    def collect(self, act: Act, remaining: int, step_offset: int = 0) -> Batch:
        """The next batch, within ``remaining`` steps of the run's budget."""
        if self.episodes_per_update:  # capped only by max_episode_tail, if set
            cap = min(self.max_episode_tail or remaining, remaining)
            return self.collect_episodes(act, remaining, cap, self.episodes_per_update,
                                         step_offset)
        tail = self.max_episode_tail or self.steps_per_update
        return self.collect_episodes(act, min(self.steps_per_update, remaining),
                                     min(self.steps_per_update + tail, remaining), 0,
                                     step_offset)

    def collect_episodes(self, act: Act, budget: int, hard_cap: int, episodes: int = 0,
                         step_offset: int = 0) -> Batch:
        """Run from a fresh reset until ``budget`` steps are taken (or ``episodes`` episodes
        have finished) and the running episodes end, or ``hard_cap`` steps are reached."""
        env, n = self.env, self.env.num_envs
        obs = self._reset()
        store = _Store()
        active = np.ones(n, dtype=bool)
        n_active = n
        finished: list[tuple[int, float, int]] = []
        collected = 0
        while True:
            if self.stop_requested():
                raise StopCollection
            if hard_cap - collected < n_active:
                late = np.flatnonzero(active)[hard_cap - collected:]
                self._cut(store, late, obs)
                active[late] = False
                n_active = int(active.sum())
                if not n_active:
                    break
            actions, extras = act(obs)
            next_obs, rewards, terminated, truncated, final_obs, valid = self._step(actions)
            store.append(extras, obs=obs, actions=actions, rewards=rewards,
                         terminated=terminated, truncated=truncated, final_obs=final_obs,
                         valid=active & valid)
            collected += int(np.count_nonzero(active & valid))
            ended = env.finished_envs
            if len(ended):
                counted = active[ended]  # idle environments' episodes are not ours
                step = step_offset + collected
                finished.extend((step, ret, length) for ret, length in zip(
                    env.finished_returns[counted].tolist(),
                    env.finished_lengths[counted].tolist()))
                done_enough = len(finished) >= episodes if episodes else collected >= budget
                if done_enough:
                    active[ended] = False
                    n_active = int(active.sum())
                    if not n_active:
                        break
            if collected >= hard_cap:
                self._cut(store, np.flatnonzero(active), next_obs)
                break
            obs = next_obs
        return store.batch(finished)

    @staticmethod
    def _cut(store: _Store, envs: np.ndarray, obs: np.ndarray) -> None:
        """Mark the last transition of ``envs`` as truncated, with ``obs`` as final observation."""
        lists = store.lists
        if len(envs) and lists["obs"]:
            lists["truncated"][-1] = lists["truncated"][-1].copy()
            lists["final_obs"][-1] = lists["final_obs"][-1].copy()
            cut = envs[~(lists["terminated"][-1][envs] | lists["truncated"][-1][envs])]
            lists["truncated"][-1][cut] = True
            lists["final_obs"][-1][cut] = obs[cut]


class RolloutCollector(_Collector):
    """Fixed-horizon rollouts: ``T`` steps of every environment, continuing from where the
    previous rollout stopped (the environments are reset only the first time).

    The batch's last row is cut by the end of the rollout: ``final_obs[T - 1]`` is the
    observation the next rollout starts from (or the true final observation where an episode
    ended at that step), so ``V(final_obs)`` bootstraps it.
    """

    def __init__(self, env: Any, rng: np.random.Generator, num_steps: int,
                 normalize: Normalize | None = None,
                 scale_rewards: ScaleRewards | None = None) -> None:
        super().__init__(env, rng, normalize, scale_rewards)
        self.num_steps = num_steps
        self.obs: np.ndarray | None = None

    @classmethod
    def from_config(cls, env: Any, rng: np.random.Generator, config: Any,
                    **kw: Any) -> RolloutCollector:
        return cls(env, rng, config.num_steps, **kw)

    def restart(self) -> None:
        """Forget the environments' state: the next rollout starts from a reset."""
        self.obs = None

    def collect(self, act: Act, remaining: int, step_offset: int = 0) -> Batch | None:
        """The next rollout: ``num_steps`` steps of every environment, fewer if the run's
        ``remaining`` budget is smaller; None when it is less than one vector step."""
        num_steps = min(self.num_steps, remaining // self.env.num_envs)
        if num_steps < 1:
            return None
        if self.obs is None:
            self.obs = self._reset()
        env = self.env
        store = _Store()
        finished: list[tuple[int, float, int]] = []
        collected = 0
        obs = self.obs
        for _ in range(num_steps):
            if self.stop_requested():
                self.obs = None  # the environments moved on: the next rollout resets them
                raise StopCollection
            actions, extras = act(obs)
            next_obs, rewards, terminated, truncated, final_obs, valid = self._step(actions)
            store.append(extras, obs=obs, actions=actions, rewards=rewards,
                         terminated=terminated, truncated=truncated, final_obs=final_obs,
                         valid=valid)
            collected += int(np.count_nonzero(valid))
            if len(env.finished_envs):
                step = step_offset + collected
                finished.extend((step, ret, length) for ret, length in zip(
                    env.finished_returns.tolist(), env.finished_lengths.tolist()))
            obs = next_obs
        self.obs = obs
        return store.batch(finished)
