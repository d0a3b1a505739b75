"""Vectorized Gymnasium environments: construction, seeding, space checks, episode statistics.

:func:`make_vec` builds a :class:`VecEnv`, a thin layer over a Gymnasium ``VectorEnv`` that

- handles both of Gymnasium's autoreset modes (below) and says which entries of a step are
  transitions (:attr:`VecEnv.valid`);
- seeds once, at the first :meth:`VecEnv.reset`, and never again;
- counts episode returns and lengths with a few numpy vector operations per step;
- checks actions (refusing nan and inf before the environment sees them), clips Box actions to
  their bounds, refuses non-finite observations and rewards and outputs that break Gymnasium's
  API, each with a one-line error.

Autoreset. When the episode of sub-environment ``i`` ends at step ``t``:

- ``SAME_STEP`` (the default): ``i`` is reset inside step ``t``; the step returns the reset
  observation and, aside, the final observation of the episode. Every entry of every step is a
  transition ``(s_t, a_t, r_t, s_{t+1})``.
- ``NEXT_STEP``: step ``t`` returns the final observation itself; step ``t + 1`` ignores ``i``'s
  action and returns its reset observation with reward 0, not terminated, not truncated. That
  entry is *not* a transition (treating it as one is the bug of CleanRL issue #499):
  ``VecEnv.valid[i]`` is False there, and episode statistics and ``num_steps`` skip it.

Vectorization is chosen per environment: the environment's own vectorized implementation
(``vector_entry_point``, e.g. CartPole) where it exists in the requested autoreset mode, else
``SyncVectorEnv`` (the sub-environments stepped in a loop in this process; on few cores
``AsyncVectorEnv``'s inter-process traffic costs more than it saves for small environments).
Gymnasium 1.x's native ``CartPoleVectorEnv`` only knows ``NEXT_STEP``; for ``SAME_STEP`` CartPole
runs through :class:`SameStepCartPoleVectorEnv`, which resets in the same step.
"""

from __future__ import annotations

import copy
import importlib
import math
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.envs.registration import EnvSpec, load_env_creator
from gymnasium.error import DependencyNotInstalled
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

__all__ = [
    "EnvironmentAPIError",
    "EnvironmentStepError",
    "NonFiniteError",
    "SameStepCartPoleVectorEnv",
    "SpaceSpec",
    "VecEnv",
    "check_finite",
    "check_spaces",
    "clip_actions",
    "describe_spaces",
    "make",
    "make_vec",
    "spaces_for",
]

Vectorization = Literal["auto", "native", "sync"]
Autoreset = Literal["same_step", "next_step"]

_MODES: dict[str, AutoresetMode] = {
    "same_step": AutoresetMode.SAME_STEP,
    "next_step": AutoresetMode.NEXT_STEP,
}


class NonFiniteError(FloatingPointError, ValueError):
    """An environment produced a nan or inf observation or reward, or a policy a nan/inf action.

    A ``FloatingPointError`` (what numpy raises for floating-point trouble) that is also a
    ``ValueError``, so a caller that reports bad values uniformly catches it too.
    """


class EnvironmentAPIError(ValueError):
    """An environment's output breaks Gymnasium's API.

    The old Gym step API (4 values), an observation whose shape is not the observation space's,
    a reward that is not one scalar per sub-environment. A bug in the environment, reported in
    one line naming it; retrying will not help.
    """


class EnvironmentStepError(RuntimeError):
    """The environment itself raised in ``step`` or ``reset``.

    The message is one line naming the environment id and the original exception's type and
    message; ``__cause__`` is the original exception. A trainer can catch this one type to save
    its state and exit; the :class:`VecEnv` must not be stepped again.
    """


def _one_line(x: Any) -> str:
    """``x`` (an array, a value or a message) printed on one line."""
    if isinstance(x, np.ndarray):
        return np.array2string(x, separator=", ", max_line_width=sys.maxsize)
    return " ".join(str(x).split())


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


def spaces_for(
    env_id: str, *, allow_import: bool = True, **kwargs: Any
) -> tuple[gym.Space, gym.Space]:
    """Make one environment, read ``(observation_space, action_space)``, close it.

    Cheap enough to call before anything is written to disk. ``kwargs`` go to ``gym.make``;
    ``allow_import`` as in :func:`make`.
    """
    env = make(env_id, allow_import=allow_import, **kwargs)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def describe_spaces(env_id: str, *, allow_import: bool = True, **kwargs: Any) -> SpaceSpec:
    """``check_spaces(*spaces_for(env_id, ...))``: fails early on an unusable environment."""
    return check_spaces(*spaces_for(env_id, allow_import=allow_import, **kwargs))


def clip_actions(actions: np.ndarray, action_space: spaces.Box) -> np.ndarray:
    """Clip ``(N, action_dim)`` (or ``(action_dim,)``) actions to a Box's bounds.

    Policies sample from an unbounded Gaussian; keep the unclipped sample for the log-probability
    and send the clipped one to the environment. ``np.clip`` lets nan through and turns inf into
    a bound: :meth:`VecEnv.step` refuses non-finite actions before clipping.
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
            f"{index}: {_one_line(x[index])}"
        )


# ---------------------------------------------------------------------------------------------
# Construction


def _resolve_spec(env_id: str, *, allow_import: bool = True) -> EnvSpec:
    """Look up an id, importing ``module`` first for ``module:Name-v0`` ids (as Gymnasium does).

    Importing runs the module's code. With ``allow_import=False`` (an id read from a checkpoint,
    which anyone may have written) a module not imported yet is refused; one already imported
    runs nothing new.
    """
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a str such as 'CartPole-v1', got {env_id!r}")
    if not isinstance(allow_import, bool):
        raise TypeError(f"allow_import must be a bool, got {allow_import!r}")
    module, _, name = env_id.rpartition(":")
    if module:
        if not allow_import and module not in sys.modules:
            raise ValueError(
                f"The checkpoint names environment {env_id!r}, which would import module "
                f"{module!r} (running its code); pass --env {env_id} on the command line to "
                "vouch for it"
            )
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


# Gymnasium's environments that need an optional dependency, by module, and the extra of ours
# that installs it.
_EXTRAS = {
    "gymnasium.envs.mujoco.": ("MuJoCo (the mujoco package)", "mujoco"),
    "gymnasium.envs.box2d.": ("Box2D (the box2d package)", "box2d"),
}


@contextmanager
def _dependencies_of(spec: EnvSpec) -> Iterator[None]:
    """Turn Gymnasium's ``DependencyNotInstalled`` into one ValueError line naming our extra."""
    try:
        yield
    except DependencyNotInstalled as e:
        entries = [spec.entry_point, spec.vector_entry_point]
        modules = [x if isinstance(x, str) else getattr(x, "__module__", "") for x in entries]
        for prefix, (what, extra) in _EXTRAS.items():
            if any(m and m.startswith(prefix) for m in modules):
                raise ValueError(
                    f"Environment {spec.id!r} needs {what}, which is not installed: "
                    f"pip install 'rlgrad[{extra}]'"
                ) from None
        raise ValueError(
            f"Environment {spec.id!r} needs a package that is not installed: {_one_line(e)}"
        ) from None


def _keep_mujoco_log_out_of_cwd() -> None:
    """Stop MuJoCo from writing ``MUJOCO_LOG.TXT`` into the working directory.

    MuJoCo reports warnings (``Nan, Inf or huge value in QACC ...``, which it answers by resetting
    the simulation) through its default log handler, which prints them to stderr and appends them
    to ``MUJOCO_LOG.TXT`` in the current directory: every run directory, notebook and repository
    a MuJoCo agent is started from gains a stray file. Only the file is switched off, and only
    while it is the default: the warnings still reach stderr, and a log file a user configured
    stays. MuJoCo without ``MjLogConfig`` (before the unified log handler) writes the file unless
    a warning callback is installed; ours re-issues the message as a Python ``RuntimeWarning``.
    Called once a MuJoCo environment exists, so non-MuJoCo runs never touch mujoco.
    """
    mujoco = sys.modules.get("mujoco")
    if mujoco is None:
        return
    log_config = getattr(mujoco, "MjLogConfig", None)
    if log_config is not None:
        config = log_config.get()
        if config.logto_file and config.logfile == "MUJOCO_LOG.TXT":
            config.logto_file = False
            config.set()
    elif mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_mujoco_warning)


def _mujoco_warning(message: str) -> None:
    # a model-compiler deprecation (HalfCheetah's XML uses 'settotalmass') is the library's
    # business, hidden by Python's default filters like any DeprecationWarning; the rest
    # (NaN/huge accelerations, which MuJoCo answers by resetting) show as RuntimeWarnings
    # (attributed to this module, not to gymnasium's, which shows its own deprecations once)
    category = DeprecationWarning if "deprecated" in message else RuntimeWarning
    warnings.warn(f"MuJoCo: {_one_line(message)}", category, stacklevel=1)


def _route_mujoco_warnings(spec: EnvSpec) -> None:
    """Before a MuJoCo environment's model is compiled, send MuJoCo's warnings to Python's
    ``warnings`` instead of its default handler, which prints each one and appends it to
    ``MUJOCO_LOG.TXT`` in the working directory (the compiler warns while the env is built,
    before :func:`_keep_mujoco_log_out_of_cwd` can act). A callback the user installed stays."""
    entry = spec.entry_point
    module = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
    if "mujoco" not in str(module):
        return
    try:
        import mujoco
    except ImportError:
        return  # _dependencies_of names the extra to install
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_mujoco_warning)


def make(env_id: str, *, allow_import: bool = True, **kwargs: Any) -> gym.Env:
    """One Gymnasium environment: ``gym.make`` with rlgrad's id lookup and errors.

    Args:
        env_id: any registered id, or ``"module:Name-v0"`` to import ``module`` first (the module
            registers the environment on import).
        allow_import: False refuses to import a module named by ``env_id`` (ids read from a
            checkpoint); the user vouches for it by typing the id.
        **kwargs: passed to ``gym.make`` (``render_mode``, the environment's constructor).

    Raises:
        ValueError: unknown id (with Gymnasium's "Did you mean" hint), a module not allowed,
            a missing optional dependency (naming the extra to install).
    """
    spec = _resolve_spec(env_id, allow_import=allow_import)
    _route_mujoco_warnings(spec)
    with _dependencies_of(spec):
        env = gym.make(spec, **kwargs)
    _keep_mujoco_log_out_of_cwd()
    return env


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



def _autoreset_mode_of(env: VectorEnv) -> AutoresetMode | None:
    """The autoreset mode a vector env declares in its metadata (None if it declares none)."""
    mode = env.metadata.get("autoreset_mode")
    if isinstance(mode, str):  # a value such as "SameStep", as some environments write it
        try:
            return AutoresetMode(mode)
        except ValueError:
            return None
    return mode if isinstance(mode, AutoresetMode) else None


def _make_gym_vec(
    spec: EnvSpec,
    num_envs: int,
    vectorization: Vectorization,
    mode: AutoresetMode,
    kwargs: dict[str, Any],
) -> tuple[VectorEnv, str]:
    """A Gymnasium vector env in autoreset ``mode`` and the name of the vectorization used."""
    if vectorization != "sync" and spec.vector_entry_point is not None:
        entry = spec.vector_entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
        if creator is CartPoleVectorEnv and mode == AutoresetMode.SAME_STEP:
            spec = copy.deepcopy(spec)
            spec.vector_entry_point = SameStepCartPoleVectorEnv
        env = gym.make_vec(spec, num_envs, vectorization_mode="vector_entry_point", **kwargs)
        native_mode = _autoreset_mode_of(env)
        if native_mode == mode:
            return env, "native"
        env.close()
        if vectorization == "native":
            raise ValueError(
                f"The native vector env of {spec.id} uses autoreset mode {native_mode}, "
                f"expected {mode}; use vectorization='sync' or 'auto'"
            )
    elif vectorization == "native":
        raise ValueError(f"{spec.id} has no native vector implementation (vector_entry_point)")
    env = gym.make_vec(
        spec,
        num_envs,
        vectorization_mode="sync",
        # VecEnv copies the observations itself; SyncVectorEnv's deepcopy would be a second copy.
        vector_kwargs={"autoreset_mode": mode, "copy": False},
        **kwargs,
    )
    return env, "sync"


def make_vec(
    env_id: str,
    num_envs: int,
    seed: int | None,
    *,
    vectorization: Vectorization = "auto",
    autoreset_mode: Autoreset | None = None,
    clip_actions: bool = True,
    check_finite: bool = True,
    allow_import: bool = True,
    **kwargs: Any,
) -> VecEnv:
    """Make ``num_envs`` copies of a Gymnasium environment behind a :class:`VecEnv`.

    Args:
        env_id: any registered id, or ``"module:Name-v0"`` to import ``module`` first (the module
            registers the environment on import).
        num_envs: number of sub-environments ``N``.
        seed: seeds the first :meth:`VecEnv.reset` (sub-environment ``i`` of a sync vector env
            gets ``seed + i``) and the action space; never reseeded later. None: unseeded.
        vectorization: ``"auto"`` (native where the environment has a vectorized implementation
            in the requested autoreset mode, else sync), ``"native"`` or ``"sync"`` to force one.
        autoreset_mode: ``"same_step"`` or ``"next_step"`` (see the module docstring) to force
            one; None (the default) is ``"same_step"``, which every environment supports and in
            which every entry of a step is a transition. ``"next_step"`` CartPole is Gymnasium's
            own ``CartPoleVectorEnv``.
        clip_actions: clip Box actions to the space's bounds in :meth:`VecEnv.step`.
        check_finite: raise :class:`NonFiniteError` on nan/inf observations or rewards.
        allow_import: False refuses to import the module of a ``"module:Name-v0"`` id (pass it
            for ids read from a checkpoint; see :func:`make`).
        **kwargs: passed to the environment's constructor (e.g. ``max_episode_steps=200``).

    Raises:
        ValueError: unknown id (with Gymnasium's "Did you mean" hint), unsupported spaces, a
            missing optional dependency (naming the extra to install), bad arguments.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if vectorization not in ("auto", "native", "sync"):
        raise ValueError(
            f"Invalid vectorization: {vectorization!r} (expected 'auto', 'native' or 'sync')"
        )
    if autoreset_mode is not None and (
        not isinstance(autoreset_mode, str) or autoreset_mode not in _MODES
    ):
        raise ValueError(
            f"Invalid autoreset_mode: {autoreset_mode!r} (expected 'same_step', 'next_step' or "
            "None)"
        )
    _check_seed(seed)
    mode = _MODES[autoreset_mode or "same_step"]
    spec = _resolve_spec(env_id, allow_import=allow_import)
    _route_mujoco_warnings(spec)
    with _dependencies_of(spec):
        env, used = _make_gym_vec(spec, int(num_envs), vectorization, mode, kwargs)
    _keep_mujoco_log_out_of_cwd()
    try:
        return VecEnv(env, seed, clip_actions=clip_actions, check_finite=check_finite, name=used)
    except BaseException:
        env.close()
        raise


def _check_seed(seed: Any) -> None:
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")


def _read_only(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


# ---------------------------------------------------------------------------------------------
# The wrapper


class VecEnv:
    """A Gymnasium ``VectorEnv`` with explicit autoreset, seeding and episode statistics.

    Usage::

        env = make_vec("CartPole-v1", num_envs=8, seed=0)
        obs = env.reset()                                   # (N, obs_dim)
        obs, rewards, terminated, truncated, final_obs = env.step(actions)
        for ret, length in zip(env.finished_returns, env.finished_lengths): ...

    Attributes:
        env: the wrapped Gymnasium ``VectorEnv``, in ``SAME_STEP`` or ``NEXT_STEP`` autoreset.
        env_id: the id of its environment (the class name of a vector env without a spec).
        num_envs: ``N``.
        spaces: the :class:`SpaceSpec` of one sub-environment.
        vectorization: ``"native"``, ``"sync"`` or ``"wrapped"`` (a user-built vector env).
        autoreset_mode: ``"same_step"`` or ``"next_step"`` (see the module docstring).
        valid: ``(N,)`` read-only bool, after each :meth:`step`: False exactly where the entry of
            that step was a ``NEXT_STEP`` autoreset (action ignored, reset observation, reward 0:
            no transition). All True in ``SAME_STEP`` mode and at ordinary steps.
        num_steps: environment steps taken since construction: the valid entries of every
            :meth:`step` (``N`` per step in ``SAME_STEP`` mode).
        num_episodes: episodes finished since construction.
        finished_envs: ``(K,)`` indices of the sub-environments whose episode ended in the last
            :meth:`step`, in increasing order (``K = 0`` most steps).
        finished_returns: ``(K,)`` float64 undiscounted returns of those episodes.
        finished_lengths: ``(K,)`` int64 lengths (transitions) of those episodes.
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
        mode = _autoreset_mode_of(env)
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
            raise ValueError(
                f"VecEnv needs a vector env with autoreset mode {AutoresetMode.SAME_STEP} or "
                f"{AutoresetMode.NEXT_STEP} (its metadata['autoreset_mode']), got "
                f"{env.metadata.get('autoreset_mode')!r}; build it with rlgrad.envs.make_vec"
            )
        _check_seed(seed)
        self.env = env
        self.env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        self.num_envs = env.num_envs
        self.spaces = check_spaces(env.single_observation_space, env.single_action_space)
        self.vectorization = name
        self.autoreset_mode: Autoreset = (
            "next_step" if mode == AutoresetMode.NEXT_STEP else "same_step"
        )
        self._next_step = mode == AutoresetMode.NEXT_STEP
        self.seed = seed
        self._clip = clip_actions and not self.spaces.discrete
        self._check_finite = check_finite
        self._action_shape = env.action_space.shape
        self._action_dtype = env.action_space.dtype
        self._obs_shape = (self.num_envs, *env.single_observation_space.shape)
        self._rewards_shape = (self.num_envs,)
        self._seeded = False
        self._started = False
        # our CartPole builds new arrays every step; any other env may reuse its buffers
        self._copy_obs = not isinstance(env, SameStepCartPoleVectorEnv)
        self.num_steps = 0
        self.num_episodes = 0
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        # NEXT_STEP: the sub-environments whose episode ended in the last step, so that this
        # step is their autoreset
        self._resetting = np.zeros(self.num_envs, dtype=bool)
        self._any_resetting = False
        self.valid = self._all_valid = _read_only(np.ones(self.num_envs, dtype=bool))
        self.finished_envs = self._no_envs = _read_only(np.zeros(0, dtype=np.int64))
        self.finished_returns = self._no_returns = _read_only(np.zeros(0))
        self.finished_lengths = self._no_lengths = _read_only(np.zeros(0, dtype=np.int64))

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
        _check_seed(seed)
        reseed = seed is not None or not self._seeded
        if seed is None and not self._seeded:
            seed = self.seed
        seed = None if seed is None else int(seed)
        try:
            result = self.env.reset(seed=seed)  # reset(seed=None) continues the streams
        except Exception as e:
            raise self._env_error(e, "reset", None) from e
        if not (isinstance(result, tuple) and len(result) == 2):
            raise EnvironmentAPIError(
                f"Environment {self.env_id!r} returned a {type(result).__name__} from reset; "
                "Gymnasium's API returns 2 values: obs, info"
            )
        if reseed:
            self.env.action_space.seed(seed)
            self._seeded = True
        obs = self._as_obs(result[0], "reset")
        if self._check_finite:
            check_finite(obs, np.zeros(self.num_envs), self.num_steps)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._resetting[:] = False
        self._any_resetting = False
        self.valid = self._all_valid
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
            actions: ``(N,)`` integers in ``[0, n)`` for Discrete, ``(N, action_dim)`` finite
                floats for Box (clipped to the bounds unless ``clip_actions=False``).

        Returns:
            ``(obs, rewards, terminated, truncated, final_obs)``: ``obs`` ``(N, obs_dim)`` is the
            observation to act on next; ``rewards`` ``(N,)`` float64; ``terminated``,
            ``truncated`` ``(N,)`` bool; ``final_obs`` ``(N, obs_dim)`` is the last observation
            of the episode where one ended (``terminated | truncated``) and equal to ``obs``
            elsewhere, so ``V(final_obs)`` is the bootstrap value ``V(s_{t+1})`` for
            :func:`rlgrad.returns.gae`. In ``SAME_STEP`` mode ``obs`` is already the reset
            observation where an episode ended; in ``NEXT_STEP`` mode it is the final
            observation itself (``final_obs`` is ``obs``), and the next step's entry is the
            reset (see :attr:`valid`). All arrays are fresh (not views of env buffers);
            ``final_obs`` is ``obs`` itself in a step where no final observation differs.

        Raises:
            NonFiniteError: a nan or inf action (before the environment sees it), observation or
                reward.
            EnvironmentAPIError: the environment broke Gymnasium's API.
            EnvironmentStepError: the environment raised.
        """
        if not self._started:
            raise RuntimeError("VecEnv.step called before reset()")
        actions = self._check_actions(actions)
        try:
            obs, rewards, terminated, truncated, info = self.env.step(actions)
        except Exception as e:
            raise self._env_error(e, "step", actions) from e
        obs = self._as_obs(obs, "step")
        rewards = self._as_rewards(rewards)
        done = terminated | truncated

        if self._any_resetting:  # NEXT_STEP: these entries are autoresets, not transitions
            valid = self.valid = _read_only(~self._resetting)
            if np.logical_or.reduce(done & self._resetting):
                i = int(np.flatnonzero(done & self._resetting)[0])
                raise EnvironmentAPIError(
                    f"Environment {self.env_id!r} reported the end of an episode at the "
                    f"autoreset step of env index {i}; NEXT_STEP autoreset steps are not done"
                )
            self.num_steps += int(np.add.reduce(valid))
            self._ep_return += np.where(valid, rewards, 0.0)
            self._ep_length += valid
        else:
            self.valid = self._all_valid
            self.num_steps += self.num_envs
            self._ep_return += rewards
            self._ep_length += 1

        final_obs = obs
        any_final = not self._next_step and "_final_obs" in info
        if any_final:
            final_obs = obs.copy()
            mask = info["_final_obs"]
            final_obs[mask] = self._final_obs(info["final_obs"][mask])
        if self._check_finite:
            # one sum is finite iff every term is (barring overflow, which the full check
            # then clears): a cheap test every step, the full one only when it fails
            total = np.add.reduce(obs, axis=None) + np.add.reduce(rewards)
            if any_final:
                total += np.add.reduce(final_obs, axis=None)
            if not np.isfinite(total):
                check_finite(obs, rewards, self.num_steps, final_obs if any_final else None)

        if np.logical_or.reduce(done):
            idx = np.flatnonzero(done)
            self.finished_envs = idx
            self.finished_returns = self._ep_return[idx]
            self.finished_lengths = self._ep_length[idx]
            self._ep_return[idx] = 0.0
            self._ep_length[idx] = 0
            self.num_episodes += len(idx)
            if self._next_step:
                self._resetting = done
                self._any_resetting = True
        else:
            self.finished_envs = self._no_envs
            self.finished_returns = self._no_returns
            self.finished_lengths = self._no_lengths
            if self._any_resetting:
                self._resetting = np.zeros(self.num_envs, dtype=bool)
                self._any_resetting = False
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
        if actions.dtype.kind not in "fiu":
            raise TypeError(f"Box actions must be real numbers, got dtype {actions.dtype}")
        # before clipping, which lets nan through and turns inf into a bound; one sum is finite
        # iff every term is, barring overflow, which the full check then clears
        if actions.dtype.kind == "f" and not math.isfinite(np.add.reduce(actions, axis=None)):
            bad = (~np.isfinite(actions)).reshape(self.num_envs, -1).any(axis=1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise NonFiniteError(
                    f"non-finite action {_one_line(actions[i])} for env index {i} (not sent "
                    "to the environment)"
                )
        if self._clip:
            actions = np.clip(actions, self.env.action_space.low, self.env.action_space.high)
        return actions.astype(self._action_dtype, copy=False)

    # ---- checks of the environment's output (the failure paths are out of the way) --------

    def _as_obs(self, obs: Any, call: str) -> np.ndarray:
        """The batch of observations, a fresh array of shape ``(N, *obs_shape)``."""
        if self._copy_obs:
            try:
                obs = np.array(obs)  # never hand out an environment's buffer, which it reuses
            except ValueError as e:  # a ragged list
                raise EnvironmentAPIError(
                    f"Environment {self.env_id!r} returned observations from {call} that are "
                    f"not an array: {_one_line(e)}"
                ) from e
        if obs.shape != self._obs_shape:
            raise EnvironmentAPIError(
                f"Environment {self.env_id!r} returned observations of shape {obs.shape} from "
                f"{call}, expected {self._obs_shape}: {self.num_envs} times the observation "
                f"space's shape {self.single_observation_space.shape}"
            )
        return obs

    def _as_rewards(self, rewards: Any) -> np.ndarray:
        try:
            rewards = np.asarray(rewards, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise EnvironmentAPIError(
                f"Environment {self.env_id!r} returned rewards that are not numbers: "
                f"{_one_line(e)}; expected one scalar per sub-environment"
            ) from e
        if rewards.shape != self._rewards_shape:
            raise EnvironmentAPIError(
                f"Environment {self.env_id!r} returned rewards of shape {rewards.shape}, "
                f"expected {self._rewards_shape}: one scalar per sub-environment"
            )
        return rewards

    def _final_obs(self, ended: np.ndarray) -> np.ndarray:
        """``(K, *obs_shape)`` final observations from ``info["final_obs"][mask]``."""
        try:
            # SyncVectorEnv gives an object array of per-env observations, native envs an array
            ended = np.stack(ended) if ended.dtype == object else ended
        except ValueError:
            ended = None
        if ended is None or ended.shape[1:] != self._obs_shape[1:]:
            shapes = "different" if ended is None else ended.shape[1:]
            raise EnvironmentAPIError(
                f"Environment {self.env_id!r} returned a final observation of shape {shapes}, "
                f"expected the observation space's shape {self._obs_shape[1:]}"
            )
        return ended

    def _env_error(self, error: Exception, call: str, actions: np.ndarray | None) -> Exception:
        """The one-line error to raise for an exception from the wrapped env's ``call``."""
        message = str(error)
        if call == "step" and isinstance(error, ValueError) and "expected 5, got 4" in message:
            # a 4-tuple met an unpacking of step's result (Gymnasium's wrappers, its vector
            # envs or ours)
            return EnvironmentAPIError(
                f"Environment {self.env_id!r} uses the old Gym step API (step returned 4 "
                "values); Gymnasium's API returns 5 values: obs, reward, terminated, truncated, "
                "info"
            )
        if isinstance(error, (TypeError, ValueError)) and isinstance(
            self.env.unwrapped, SyncVectorEnv
        ):
            found = self._find_malformed_output(call, actions)
            if found is not None:
                return found
        return EnvironmentStepError(
            f"Environment {self.env_id!r} raised {type(error).__name__} in {call}: "
            f"{_one_line(message)}"
        )

    def _find_malformed_output(
        self, call: str, actions: np.ndarray | None
    ) -> EnvironmentAPIError | None:
        """Which sub-environment's output made ``SyncVectorEnv`` fail, if one's did.

        ``SyncVectorEnv`` batches the sub-environments' observations and rewards into arrays and
        fails with a bare numpy error (``Output array is the wrong shape``) when one does not
        fit. Checking every sub-environment's output on every step would cost more than a
        CartPole step; instead, once the vector env has already failed (and is unusable), each
        sub-environment repeats the call alone and its output is checked.
        """
        obs_shape = self.single_observation_space.shape
        for i, sub in enumerate(self.env.unwrapped.envs):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = sub.reset() if actions is None else sub.step(actions[i])
            except Exception:
                continue
            obs_i = result[0]
            if np.shape(obs_i) != obs_shape:
                return EnvironmentAPIError(
                    f"Environment {self.env_id!r} (env index {i}) returned an observation of "
                    f"shape {np.shape(obs_i)} from {call}, expected the observation space's "
                    f"shape {obs_shape}"
                )
            if actions is not None:
                reward = np.asarray(result[1])
                if reward.ndim != 0 or reward.dtype.kind not in "biuf":
                    return EnvironmentAPIError(
                        f"Environment {self.env_id!r} (env index {i}) returned the reward "
                        f"{_one_line(reward)} (shape {reward.shape}, dtype {reward.dtype}), "
                        "expected one scalar number per sub-environment"
                    )
        return None

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VecEnv({self.env_id!r}, num_envs={self.num_envs}, "
            f"vectorization={self.vectorization!r}, autoreset_mode={self.autoreset_mode!r})"
        )
