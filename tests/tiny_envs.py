"""Tiny deterministic environments for the tests, registered on import.

``make_vec("tests.tiny_envs:Tiny-v0", ...)`` imports this module, as Gymnasium's ``module:Env``
ids do.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


class Tiny(gym.Env):
    """Observation ``[t, start]``: the step counter and a random number drawn at reset.

    Reward ``1 + action``; terminates when ``t == terminate_at``; the observation becomes nan at
    ``t == nan_at``. Registered with a time limit of 4 steps.
    """

    def __init__(self, terminate_at: int | None = None, nan_at: int | None = None,
                 nan_after: int | None = None):
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.nan_at = nan_at
        self.nan_after = nan_after  # nan observations once this many steps were taken in all
        self.total_steps = 0

    def _obs(self):
        late = self.nan_after is not None and self.total_steps >= self.nan_after
        t = np.nan if self.t == self.nan_at or late else self.t
        return np.array([t, self.start])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.start = float(self.np_random.random())
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.total_steps += 1
        return self._obs(), 1.0 + float(action), self.t == self.terminate_at, False, {}


class TinyBox(gym.Env):
    """Box actions in ``[-1, 1]^2``; the reward is the sum of the action the env received."""

    def __init__(self):
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.steps = 0  # calls of step, so tests can see what reached the environment

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        self.steps += 1
        return np.zeros(3, dtype=np.float32), float(np.sum(action)), False, False, {}


class TinyDict(Tiny):
    """A Dict observation space, which rlgrad does not support."""

    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Dict({"t": spaces.Box(0, np.inf, shape=(1,))})


class TinyNextStepVector(VectorEnv):
    """A native vector env that only knows NEXT_STEP autoreset; make_vec must avoid it."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int = 4):
        self.num_envs = num_envs
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed=None, options=None):
        return np.zeros((self.num_envs, 2)), {}

    def step(self, actions):
        n = self.num_envs
        return np.zeros((n, 2)), np.ones(n), np.zeros(n, bool), np.zeros(n, bool), {}


class TinyOldStep(Tiny):
    """The old Gym step API: ``step`` returns 4 values ``(obs, reward, done, info)``."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated or truncated, info


class TinyBadObs(Tiny):
    """Returns observations of shape ``(3,)`` where its space says ``(2,)``.

    ``bad_at``: ``"reset"``, ``"step"`` (every step) or ``"final"`` (the last step of an episode,
    which ends by termination at ``t == 3``).
    """

    def __init__(self, bad_at: str = "reset"):
        super().__init__(terminate_at=3)
        self.bad_at = bad_at

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return (np.zeros(3) if self.bad_at == "reset" else obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.bad_at == "step" or (self.bad_at == "final" and terminated):
            obs = np.zeros(3)
        return obs, reward, terminated, truncated, info


class TinyBadReward(Tiny):
    """A reward that is not a scalar: ``np.array([1.0, 1.0])``, or ``"x"`` with ``text=True``."""

    def __init__(self, text: bool = False):
        super().__init__()
        self.text = text

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        reward = "x" if self.text else np.array([1.0, 1.0])
        return obs, reward, terminated, truncated, info


class TinyRaises(Tiny):
    """Raises ``error_type`` (a two-line message) in step ``raise_at``, or KeyError in reset."""

    def __init__(self, raise_at: int = 2, in_reset: bool = False,
                 error_type: type[Exception] = OSError):
        super().__init__()
        self.raise_at = raise_at
        self.in_reset = in_reset
        self.error_type = error_type

    def reset(self, *, seed=None, options=None):
        if self.in_reset:
            raise KeyError("no such level\nsecond line")
        return super().reset(seed=seed)

    def step(self, action):
        if self.t + 1 == self.raise_at:
            raise self.error_type("physics exploded\nsecond line")
        return super().step(action)


class TinyBrokenVector(VectorEnv):
    """A user-built SAME_STEP vector env with one fault in its step output.

    ``fault``: ``"old_api"`` (4 values), ``"obs_shape"`` (observations ``(N, 3)``, space
    ``(2,)``) or ``"reward_shape"`` (rewards ``(N, 1)``).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, fault: str, num_envs: int = 2):
        self.fault = fault
        self.num_envs = num_envs
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed=None, options=None):
        return np.zeros((self.num_envs, 2)), {}

    def step(self, actions):
        n = self.num_envs
        obs, rewards = np.zeros((n, 2)), np.ones(n)
        done = np.zeros(n, dtype=bool)
        if self.fault == "old_api":
            return obs, rewards, done, {}
        if self.fault == "obs_shape":
            obs = np.zeros((n, 3))
        if self.fault == "reward_shape":
            rewards = np.ones((n, 1))
        return obs, rewards, done, done.copy(), {}


gym.register("Tiny-v0", entry_point=Tiny, max_episode_steps=4)
gym.register("TinyBox-v0", entry_point=TinyBox, max_episode_steps=10)
gym.register("TinyDict-v0", entry_point=TinyDict)
gym.register(
    "TinyNextStep-v0",
    entry_point=Tiny,
    vector_entry_point=TinyNextStepVector,
    max_episode_steps=4,
)

gym.register("TinyOldStep-v0", entry_point=TinyOldStep, max_episode_steps=4)
gym.register("TinyOldStepNoLimit-v0", entry_point=TinyOldStep)
gym.register("TinyBadObs-v0", entry_point=TinyBadObs, max_episode_steps=10)
gym.register("TinyBadReward-v0", entry_point=TinyBadReward, max_episode_steps=4)
gym.register("TinyRaises-v0", entry_point=TinyRaises, max_episode_steps=4)


class Signal(gym.Env):
    """A cue in {-1, +1} (with noise) says which action pays: 1 for the right one, else 0.

    Episodes last 8 steps; a policy that reads the cue earns 8, a random one 4. Learnable by a
    policy gradient in a few thousand steps, so the tests can check that agents learn.
    """

    def __init__(self, continuous: bool = False):
        self.continuous = continuous
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        if continuous:
            self.action_space = spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
        else:
            self.action_space = spaces.Discrete(2)

    def _draw(self):
        self.cue = float(self.np_random.choice([-1.0, 1.0]))
        noise = 0.1 * float(self.np_random.standard_normal())
        return np.array([self.cue + noise, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._draw(), {}

    def step(self, action):
        if self.continuous:
            # reward 1 - (a - cue)^2 / 4 in [0, 1] (up to clipping): best at a = cue
            reward = 1.0 - (float(np.asarray(action).ravel()[0]) - self.cue) ** 2 / 4.0
        else:
            reward = float(int(action) == int(self.cue > 0))
        return self._draw(), reward, False, False, {}


gym.register("Signal-v0", entry_point=Signal, max_episode_steps=8)
gym.register("SignalBox-v0", entry_point=Signal, kwargs={"continuous": True},
             max_episode_steps=8)
