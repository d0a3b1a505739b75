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

    def __init__(self, terminate_at: int | None = None, nan_at: int | None = None):
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.nan_at = nan_at

    def _obs(self):
        t = np.nan if self.t == self.nan_at else self.t
        return np.array([t, self.start])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.start = float(self.np_random.random())
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0 + float(action), self.t == self.terminate_at, False, {}


class TinyBox(gym.Env):
    """Box actions in ``[-1, 1]^2``; the reward is the sum of the action the env received."""

    def __init__(self):
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
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


gym.register("Tiny-v0", entry_point=Tiny, max_episode_steps=4)
gym.register("TinyBox-v0", entry_point=TinyBox, max_episode_steps=10)
gym.register("TinyDict-v0", entry_point=TinyDict)
gym.register(
    "TinyNextStep-v0",
    entry_point=Tiny,
    vector_entry_point=TinyNextStepVector,
    max_episode_steps=4,
)
