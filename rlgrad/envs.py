"""Vectorized Gymnasium environments: construction, seeding, space checks, episode statistics.

:func:`make_vec` builds a :class:`VecEnv`, a thin layer over a Gymnasium ``VectorEnv`` that

- resets every sub-environment in the same step an episode ends (Gymnasium's ``SAME_STEP``
  autoreset), so no step is wasted and ``step`` hands back the final observation of each finished
  episode next to the first observation of the next one;
- seeds once, at the first :meth:`VecEnv.reset`, and never again;
- counts episode returns and lengths with a few numpy vector operations per step;
- checks actions, clips Box actions to their bounds and refuses non-finite observations.

Vectorization is chosen per environment: the environment's own vectorized implementation
(``vector_entry_point``, e.g. CartPole) where it exists, else ``SyncVectorEnv`` (the
sub-environments stepped in a loop in this process; on few cores ``AsyncVectorEnv``'s
inter-process traffic costs more than it saves for small environments).

Gymnasium 1.x's native ``CartPoleVectorEnv`` only knows ``NEXT_STEP`` autoreset: after a done step
the next ``step`` ignores the action of that sub-environment and returns its reset observation. A
batch of ``(T, N)`` transitions would then hold one fake transition per episode. CartPole is
therefore run through :class:`SameStepCartPoleVectorEnv`, which resets in the same step; any other
native implementation that does not declare ``SAME_STEP`` is replaced by ``SyncVectorEnv``.
"""

from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.envs.registration import EnvSpec, load_env_creator
from gymnasium.vector import AutoresetMode, VectorEnv

__all__ = [
    "NonFiniteError",
    "SameStepCartPoleVectorEnv",
    "SpaceSpec",
    "VecEnv",
    "check_finite",
    "check_spaces",
    "clip_actions",
    "describe_spaces",
    "make_vec",
    "spaces_for",
]

Vectorization = Literal["auto", "native", "sync"]


class NonFiniteError(FloatingPointError, ValueError):
    """An environment produced a nan or inf observation or reward.

    A ``FloatingPointError`` (what numpy raises for floating-point trouble) that is also a
    ``ValueError``, so a caller that reports bad values uniformly catches it too.
    """


# ---------------------------------------------------------------------------------------------
# Spaces


@dataclass(frozen=True)
class SpaceSpec:
    """What a policy needs to know about an environment's (single, unbatched) spaces.

    Attributes:
        obs_dim: length of the flat observation vector.
        action_kind: ``"discrete"`` (``Discrete(n)``, a categorical policy) or ``"continuous"``
            (1-D ``Box``, a Gaussian policy).
        action_dim: number of actions ``n`` for discrete, vector length for continuous; the size
            of the policy's output layer either way.
        action_low: lower bounds of a continuous action (``action_dim`` floats, ``-inf`` where
            unbounded), None for discrete.
        action_high: upper bounds likewise.

    Bounds are tuples, so specs compare with ``==`` and serialize as they are.
    """

    obs_dim: int
    action_kind: Literal["discrete", "continuous"]
    action_dim: int
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None

    @property
    def discrete(self) -> bool:
        return self.action_kind == "discrete"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description, e.g. for a checkpoint's metadata."""
        return {
            "obs_dim": self.obs_dim,
            "action_kind": self.action_kind,
            "action_dim": self.action_dim,
            "action_low": None if self.action_low is None else list(self.action_low),
            "action_high": None if self.action_high is None else list(self.action_high),
        }


_SUPPORTED = (
    "supported: observation space a 1-D Box; action space Discrete(n) (start=0) or a 1-D Box"
)


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> SpaceSpec:
    """Check that rlgrad's policies can handle these single-environment spaces.

    Raises:
        ValueError: naming the unsupported space and the supported ones.
    """
    obs = observation_space
    if not isinstance(obs, spaces.Box) or len(obs.shape) != 1:
        raise ValueError(f"Unsupported observation space {obs}; {_SUPPORTED}")
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise ValueError(f"Unsupported action space {action_space} (start != 0); {_SUPPORTED}")
        return SpaceSpec(obs.shape[0], "discrete", int(action_space.n))
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        if not np.issubdtype(action_space.dtype, np.floating):
            raise ValueError(
                f"Unsupported action space {action_space} (dtype {action_space.dtype}, expected "
                f"floating point); {_SUPPORTED}"
            )
        low = tuple(float(x) for x in action_space.low)
        high = tuple(float(x) for x in action_space.high)
        return SpaceSpec(obs.shape[0], "continuous", action_space.shape[0], low, high)
    raise ValueError(f"Unsupported action space {action_space}; {_SUPPORTED}")


def spaces_for(env_id: str, **kwargs: Any) -> tuple[gym.Space, gym.Space]:
    """Make one environment, read ``(observation_space, action_space)``, close it.

    Cheap enough to call before anything is written to disk. ``kwargs`` go to ``gym.make``.
    """
    env = gym.make(_resolve_spec(env_id), **kwargs)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def describe_spaces(env_id: str, **kwargs: Any) -> SpaceSpec:
    """``check_spaces(*spaces_for(env_id, **kwargs))``: fails early on an unusable environment."""
    return check_spaces(*spaces_for(env_id, **kwargs))


def clip_actions(actions: np.ndarray, action_space: spaces.Box) -> np.ndarray:
    """Clip ``(N, action_dim)`` (or ``(action_dim,)``) actions to a Box's bounds.

    Policies sample from an unbounded Gaussian; keep the unclipped sample for the log-probability
    and send the clipped one to the environment.
    """
    if not isinstance(action_space, spaces.Box):
        raise TypeError(f"clip_actions expects a Box action space, got {action_space}")
    return np.clip(actions, action_space.low, action_space.high)


def check_finite(
    obs: np.ndarray, rewards: np.ndarray, step: int, final_obs: np.ndarray | None = None
) -> None:
    """Raise :class:`NonFiniteError` if an observation or reward of a vector step is nan or inf.

    Args:
        obs: ``(N, obs_dim)`` observations returned by the step.
        rewards: ``(N,)`` rewards.
        step: environment step counter to name in the message.
        final_obs: optional ``(N, obs_dim)`` final observations, checked like ``obs``.

    The message names the step and the index of the first sub-environment with a bad value.
    """
    checks = [("observation", obs), ("reward", rewards)]
    if final_obs is not None:
        checks.append(("final observation", final_obs))
    for what, x in checks:
        if np.isfinite(x).all():
            continue
        bad = ~np.isfinite(x)
        index = int(np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))[0])
        raise NonFiniteError(
            f"Environment returned a non-finite {what} at environment step {step}, env index "
            f"{index}: {x[index]!r}"
        )


# ---------------------------------------------------------------------------------------------
# Construction


class SameStepCartPoleVectorEnv(CartPoleVectorEnv):
    """Gymnasium's numpy-vectorized CartPole, with ``SAME_STEP`` autoreset.

    A sub-environment whose episode ends is reset inside the same :meth:`step`; the returned
    observation is the reset one and ``info["final_obs"]`` (``(N, 4)``, valid where
    ``info["_final_obs"]``) holds the final observation.

    The dynamics are Gymnasium's ``CartPoleVectorEnv.step``, restated operation for operation
    (so trajectories are bitwise the same, which a test checks) without its per-step
    ``action_space.contains`` assertion and its empty reset draw: :class:`VecEnv` has already
    checked the actions, and those two cost about a fifth of a step.
    """

    metadata = {**CartPoleVectorEnv.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def step(self, action):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        x, x_dot, theta, theta_dot = self.state
        force = np.sign(action - 0.5) * self.force_mag
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        temp = (
            force + self.polemass_length * np.square(theta_dot) * sintheta
        ) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(costheta) / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        if self.kinematics_integrator == "euler":
            x = x + self.tau * x_dot
            x_dot = x_dot + self.tau * xacc
            theta = theta + self.tau * theta_dot
            theta_dot = theta_dot + self.tau * thetaacc
        else:  # semi-implicit euler
            x_dot = x_dot + self.tau * xacc
            x = x + self.tau * x_dot
            theta_dot = theta_dot + self.tau * thetaacc
            theta = theta + self.tau * theta_dot
        self.state = np.array((x, x_dot, theta, theta_dot))  # np.stack, without its overhead
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        self.steps += 1
        truncated = self.steps >= self.max_episode_steps
        if self._sutton_barto_reward:
            reward = -np.array(terminated, dtype=np.float32)
        else:
            reward = np.ones(terminated.shape, dtype=np.float32)
        obs = self.state.T.astype(np.float32)
        done = terminated | truncated
        info = {}
        if done.any():
            self.state[:, done] = self.np_random.uniform(
                low=self.low, high=self.high, size=(4, int(done.sum()))
            )
            self.steps[done] = 0
            info = {"final_obs": obs, "_final_obs": done}
            obs = self.state.T.astype(np.float32)
        return obs, reward, terminated, truncated, info


def _resolve_spec(env_id: str) -> EnvSpec:
    """Look up an id, importing ``module`` first for ``module:Name-v0`` ids (as Gymnasium does)."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a str such as 'CartPole-v1', got {env_id!r}")
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            raise ValueError(
                f"Unknown environment id {env_id!r}: cannot import module {module!r} ({e})"
            ) from e
    try:
        return gym.spec(name)
    except gym.error.Error as e:
        raise ValueError(f"Unknown environment id {env_id!r}: {e}") from e


def _make_gym_vec(
    spec: EnvSpec, num_envs: int, vectorization: Vectorization, kwargs: dict[str, Any]
) -> tuple[VectorEnv, str]:
    """A ``SAME_STEP`` Gymnasium vector env and the name of the vectorization used."""
    if vectorization != "sync" and spec.vector_entry_point is not None:
        entry = spec.vector_entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
        if creator is CartPoleVectorEnv:
            spec = copy.deepcopy(spec)
            spec.vector_entry_point = SameStepCartPoleVectorEnv
        env = gym.make_vec(spec, num_envs, vectorization_mode="vector_entry_point", **kwargs)
        if env.metadata.get("autoreset_mode") == AutoresetMode.SAME_STEP:
            return env, "native"
        env.close()
        if vectorization == "native":
            raise ValueError(
                f"The native vector env of {spec.id} uses autoreset mode "
                f"{env.metadata.get('autoreset_mode')}, expected {AutoresetMode.SAME_STEP}; "
                "use vectorization='sync' or 'auto'"
            )
    elif vectorization == "native":
        raise ValueError(f"{spec.id} has no native vector implementation (vector_entry_point)")
    env = gym.make_vec(
        spec,
        num_envs,
        vectorization_mode="sync",
        # VecEnv copies the observations itself; SyncVectorEnv's deepcopy would be a second copy.
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP, "copy": False},
        **kwargs,
    )
    return env, "sync"


def make_vec(
    env_id: str,
    num_envs: int,
    seed: int | None,
    *,
    vectorization: Vectorization = "auto",
    clip_actions: bool = True,
    check_finite: bool = True,
    **kwargs: Any,
) -> VecEnv:
    """Make ``num_envs`` copies of a Gymnasium environment behind a :class:`VecEnv`.

    Args:
        env_id: any registered id, or ``"module:Name-v0"`` to import ``module`` first (the module
            registers the environment on import).
        num_envs: number of sub-environments ``N``.
        seed: seeds the first :meth:`VecEnv.reset` (sub-environment ``i`` of a sync vector env
            gets ``seed + i``) and the action space; never reseeded later. None: unseeded.
        vectorization: ``"auto"`` (native where the environment has a ``SAME_STEP`` vectorized
            implementation, else sync), ``"native"`` or ``"sync"`` to force one.
        clip_actions: clip Box actions to the space's bounds in :meth:`VecEnv.step`.
        check_finite: raise :class:`NonFiniteError` on nan/inf observations or rewards.
        **kwargs: passed to the environment's constructor (e.g. ``max_episode_steps=200``).

    Raises:
        ValueError: unknown id (with Gymnasium's "Did you mean" hint), unsupported spaces, bad
            arguments.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if vectorization not in ("auto", "native", "sync"):
        raise ValueError(
            f"Invalid vectorization: {vectorization!r} (expected 'auto', 'native' or 'sync')"
        )
    spec = _resolve_spec(env_id)
    env, used = _make_gym_vec(spec, int(num_envs), vectorization, kwargs)
    try:
        return VecEnv(env, seed, clip_actions=clip_actions, check_finite=check_finite, name=used)
    except BaseException:
        env.close()
        raise


# ---------------------------------------------------------------------------------------------
# The wrapper


class VecEnv:
    """A Gymnasium ``VectorEnv`` with same-step autoreset, seeding and episode statistics.

    Usage::

        env = make_vec("CartPole-v1", num_envs=8, seed=0)
        obs = env.reset()                                   # (N, obs_dim)
        obs, rewards, terminated, truncated, final_obs = env.step(actions)
        for ret, length in zip(env.finished_returns, env.finished_lengths): ...

    Attributes:
        env: the wrapped Gymnasium ``VectorEnv``.
        num_envs: ``N``.
        spaces: the :class:`SpaceSpec` of one sub-environment.
        vectorization: ``"native"``, ``"sync"`` or ``"wrapped"`` (a user-built vector env).
        num_steps: environment steps taken since construction (``N`` per :meth:`step`).
        num_episodes: episodes finished since construction.
        finished_envs: ``(K,)`` indices of the sub-environments whose episode ended in the last
            :meth:`step`, in increasing order (``K = 0`` most steps).
        finished_returns: ``(K,)`` float64 undiscounted returns of those episodes.
        finished_lengths: ``(K,)`` int64 lengths of those episodes.
    """

    def __init__(
        self,
        env: VectorEnv,
        seed: int | None = None,
        *,
        clip_actions: bool = True,
        check_finite: bool = True,
        name: str = "wrapped",
    ) -> None:
        mode = env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"VecEnv needs a vector env with autoreset mode {AutoresetMode.SAME_STEP}, got "
                f"{mode}; build it with rlgrad.envs.make_vec"
            )
        self.env = env
        self.num_envs = env.num_envs
        self.spaces = check_spaces(env.single_observation_space, env.single_action_space)
        self.vectorization = name
        self.seed = seed
        self._clip = clip_actions and not self.spaces.discrete
        self._check_finite = check_finite
        self._action_shape = env.action_space.shape
        self._action_dtype = env.action_space.dtype
        self._seeded = False
        self._started = False
        # our CartPole builds new arrays every step; any other env may reuse its buffers
        self._copy_obs = not isinstance(env, SameStepCartPoleVectorEnv)
        self.num_steps = 0
        self.num_episodes = 0
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self.finished_envs = self._no_envs = np.zeros(0, dtype=np.int64)
        self.finished_returns = self._no_returns = np.zeros(0)
        self.finished_lengths = self._no_lengths = np.zeros(0, dtype=np.int64)
        for empty in (self._no_envs, self._no_returns, self._no_lengths):
            empty.flags.writeable = False

    @property
    def single_observation_space(self) -> gym.Space:
        return self.env.single_observation_space

    @property
    def single_action_space(self) -> gym.Space:
        return self.env.single_action_space

    @property
    def action_space(self) -> gym.Space:
        """The batched action space, seeded with ``seed`` at the first reset."""
        return self.env.action_space

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every sub-environment; returns observations ``(N, obs_dim)``.

        With ``seed`` the environments are reseeded with it (agents reseed every batch from
        their own generator, so a run's state between updates needs no environment state).
        Otherwise the first call seeds with the constructor's ``seed`` and later calls continue
        the random streams. Running episode returns and lengths restart at 0.
        """
        if seed is not None:
            obs, _ = self.env.reset(seed=int(seed))
            self.env.action_space.seed(int(seed))
            self._seeded = True
        elif not self._seeded:
            obs, _ = self.env.reset(seed=self.seed)
            self.env.action_space.seed(self.seed)
            self._seeded = True
        else:
            obs, _ = self.env.reset()
        obs = np.array(obs)
        if self._check_finite:
            check_finite(obs, np.zeros(self.num_envs), self.num_steps)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self.finished_envs = self._no_envs
        self.finished_returns = self._no_returns
        self.finished_lengths = self._no_lengths
        self._started = True
        return obs

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every sub-environment once.

        Args:
            actions: ``(N,)`` integers in ``[0, n)`` for Discrete, ``(N, action_dim)`` floats for
                Box (clipped to the bounds unless ``clip_actions=False``).

        Returns:
            ``(obs, rewards, terminated, truncated, final_obs)``: ``obs`` ``(N, obs_dim)`` is the
            observation to act on next, already the reset observation where an episode ended;
            ``rewards`` ``(N,)`` float64; ``terminated``, ``truncated`` ``(N,)`` bool;
            ``final_obs`` ``(N, obs_dim)`` is the last observation of the episode where one
            ended (``terminated | truncated``) and equal to ``obs`` elsewhere, so
            ``V(final_obs)`` is the bootstrap value ``V(s_{t+1})`` for
            :func:`rlgrad.returns.gae`. All arrays are fresh (not views of env buffers);
            ``final_obs`` is ``obs`` itself in a step where no episode ended.
        """
        if not self._started:
            raise RuntimeError("VecEnv.step called before reset()")
        actions = self._check_actions(actions)
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        if self._copy_obs:
            obs = np.array(obs)  # never hand out an environment's buffer, which it reuses
        rewards = np.asarray(rewards, dtype=np.float64)
        self.num_steps += self.num_envs
        final_obs = obs
        any_final = "_final_obs" in info
        if any_final:
            final_obs = obs.copy()
            mask = info["_final_obs"]
            ended = info["final_obs"][mask]
            # SyncVectorEnv gives an object array of per-env observations, native envs an array
            final_obs[mask] = np.stack(ended) if ended.dtype == object else ended
        if self._check_finite:
            # one sum is finite iff every term is (barring overflow, which the full check
            # then clears): a cheap test every step, the full one only when it fails
            total = np.add.reduce(obs, axis=None) + np.add.reduce(rewards)
            if any_final:
                total += np.add.reduce(final_obs, axis=None)
            if not np.isfinite(total):
                check_finite(obs, rewards, self.num_steps, final_obs if any_final else None)
        done = terminated | truncated

        self._ep_return += rewards
        self._ep_length += 1
        if np.logical_or.reduce(done):
            idx = np.flatnonzero(done)
            self.finished_envs = idx
            self.finished_returns = self._ep_return[idx]
            self.finished_lengths = self._ep_length[idx]
            self._ep_return[idx] = 0.0
            self._ep_length[idx] = 0
            self.num_episodes += len(idx)
        else:
            self.finished_envs = self._no_envs
            self.finished_returns = self._no_returns
            self.finished_lengths = self._no_lengths
        return obs, rewards, terminated, truncated, final_obs

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != self._action_shape:
            raise ValueError(
                f"actions have shape {actions.shape}, expected {self._action_shape} "
                f"for {self.num_envs} envs of {self.single_action_space}"
            )
        if self.spaces.discrete:
            if actions.dtype.kind not in "iu":
                raise TypeError(f"Discrete actions must be integers, got dtype {actions.dtype}")
            # the ufuncs' reduce, not .min()/.max(), which detour through Python every step
            if (np.minimum.reduce(actions, axis=None) < 0
                    or np.maximum.reduce(actions, axis=None) >= self.spaces.action_dim):
                bad = (actions < 0) | (actions >= self.spaces.action_dim)
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"action {actions[i]} for env index {i} is outside "
                    f"[0, {self.spaces.action_dim})"
                )
            return actions.astype(self._action_dtype, copy=False)
        if self._clip:
            actions = np.clip(actions, self.env.action_space.low, self.env.action_space.high)
        return actions.astype(self._action_dtype, copy=False)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        spec = self.env.spec.id if self.env.spec is not None else type(self.env).__name__
        return f"VecEnv({spec!r}, num_envs={self.num_envs}, vectorization={self.vectorization!r})"


def record_video(agent: Any, env_id: str, video_dir: str, episodes: int = 1,
                 seed: int | None = None) -> np.ndarray:
    """Run ``episodes`` deterministic episodes of ``agent`` and save each as an MP4 file in
    ``video_dir`` (Gymnasium's ``RecordVideo``, which needs ``moviepy``). Returns the returns."""
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise ValueError("recording video needs moviepy: pip install 'rlgrad[video]'") from None
    from gymnasium.wrappers import RecordVideo

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # render off screen, quietly
    env = RecordVideo(gym.make(env_id, render_mode="rgb_array"), video_folder=str(video_dir),
                      episode_trigger=lambda _: True, name_prefix="eval", disable_logger=True)
    spec = check_spaces(env.observation_space, env.action_space)
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=None if seed is None else seed + i)
            done = False
            while not done:
                action = agent.act(np.asarray(obs)[None], deterministic=True)[0]
                if not spec.discrete:
                    action = clip_actions(action, env.action_space)
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[i] += float(reward)
                done = terminated or truncated
    finally:
        env.close()
    return returns
