"""rlgrad/rollout.py: Batch and its mini-batches, the episode and rollout collectors, and the
``valid`` mask of steps that are not transitions."""

from __future__ import annotations

import numpy as np
import pytest

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from rlgrad.envs import make_vec
from rlgrad.rollout import Batch, EpisodeCollector, Minibatch, RolloutCollector

TINY = "tests.tiny_envs:Tiny-v0"  # observation [t, start], reward 1 + action, 4-step limit


def act_ones(obs):
    """Action 1 everywhere (reward 2 on Tiny), the observation's step counter as an extra."""
    return np.ones(len(obs), dtype=np.int64), {"seen_t": np.asarray(obs)[:, 0].copy()}


def tiny_rollouts(num_envs=2, num_steps=3, **kw):
    env = make_vec(TINY, num_envs, seed=0)
    return env, RolloutCollector(env, np.random.default_rng(0), num_steps, **kw)


# ---- Batch and mini-batches -------------------------------------------------------------------


def hand_batch(T=5, N=3, invalid=((4, 1), (4, 2), (3, 2))):
    """A batch whose observations are their own flat index in time-major order (-1 where
    invalid), so every mini-batch row can be traced back."""
    valid = np.ones((T, N), bool)
    for t, n in invalid:
        valid[t, n] = False
    index = np.full((T, N), -1.0)
    index[valid] = np.arange(valid.sum())
    obs = np.repeat(index[..., None], 2, axis=-1)
    z = np.zeros((T, N), bool)
    return Batch(obs, index.astype(np.int64), index * 10, z, z.copy(), obs.copy(), valid,
                 episodes=[], extras={"log_prob": -index})


def test_batch_counts_and_flattens_only_valid_entries_in_time_major_order():
    batch = hand_batch()
    assert batch.size == 12
    np.testing.assert_array_equal(batch.flat(batch.actions), np.arange(12))
    flat = batch.flat(batch.obs)
    assert flat.shape == (12, 2) and not flat.flags.writeable
    assert batch.flat(batch.obs) is flat  # computed once, shared
    arrays = batch.flat_arrays()
    assert set(arrays) == {"obs", "actions", "rewards", "log_prob"}
    np.testing.assert_array_equal(arrays["log_prob"], -np.arange(12))
    batch.data["advantages"] = np.arange(11.0)
    with pytest.raises(ValueError, match=r"advantages.*11 entries.*\(12\)"):
        batch.flat_arrays()


@pytest.mark.parametrize("size,epochs", [(4, 3), (5, 2), (11, 1), (1, 2)])
def test_minibatches_cover_every_transition_once_per_epoch(size, epochs):
    batch = hand_batch()
    batch.data["advantages"] = np.arange(12) * 0.5
    rng = np.random.default_rng(3)
    mbs = list(batch.minibatches(size, epochs, rng))
    per_epoch = -(-12 // size)
    assert len(mbs) == per_epoch * epochs
    orders = []
    for e in range(epochs):
        epoch = mbs[e * per_epoch:(e + 1) * per_epoch]
        assert [mb.epoch for mb in epoch] == [e] * per_epoch
        assert [mb.last_in_epoch for mb in epoch] == [False] * (per_epoch - 1) + [True]
        assert [mb.size for mb in epoch] == [size] * (per_epoch - 1) + [12 - size * (per_epoch - 1)]
        ids = np.concatenate([mb.actions for mb in epoch])
        np.testing.assert_array_equal(np.sort(ids), np.arange(12))  # each exactly once
        for mb in epoch:  # the rows of every array belong together
            np.testing.assert_array_equal(mb.obs[:, 0], mb.actions)
            np.testing.assert_array_equal(mb.log_prob, -mb.actions)
            np.testing.assert_array_equal(mb.advantages, mb["actions"] * 0.5)
        orders.append(ids)
    if epochs > 1:
        assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch


@pytest.mark.parametrize("size", [0, 12, 100])
def test_full_batch_minibatches_take_no_random_draw(size):
    batch = hand_batch()
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    mbs = list(batch.minibatches(size, 3, rng))
    assert rng.bit_generator.state == state
    assert [(mb.epoch, mb.last_in_epoch, mb.size) for mb in mbs] == [(e, True, 12)
                                                                    for e in range(3)]
    for mb in mbs:
        np.testing.assert_array_equal(mb.actions, np.arange(12))  # unshuffled


@pytest.mark.parametrize("size,epochs,match", [
    (-1, 1, "mini-batch size"), (2.0, 1, "mini-batch size"), (True, 1, "mini-batch size"),
    (4, 0, "epochs"), (4, True, "epochs"), (4, 1.5, "epochs"),
])
def test_minibatches_reject_bad_sizes(size, epochs, match):
    with pytest.raises(ValueError, match=match):
        next(hand_batch().minibatches(size, epochs, np.random.default_rng(0)))


def test_minibatch_names_what_it_lacks():
    mb = Minibatch({"obs": np.zeros((2, 1))}, 0, True)
    with pytest.raises(AttributeError, match=r"no 'advantages'.*\['obs'\]"):
        mb.advantages  # noqa: B018


# ---- RolloutCollector ---------------------------------------------------------------------------


def test_rollouts_continue_where_the_previous_one_ended():
    env, collector = tiny_rollouts()
    first = collector.collect(act_ones, 10**6)
    second = collector.collect(act_ones, 10**6)
    np.testing.assert_array_equal(first.obs[:, :, 0], [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(second.obs[0], first.final_obs[-1])  # no episode ended there
    np.testing.assert_array_equal(second.obs[:, :, 0], [[3, 3], [0, 0], [1, 1]])
    np.testing.assert_array_equal(collector.obs, second.final_obs[-1])
    np.testing.assert_array_equal(first.extras["seen_t"], first.obs[:, :, 0])
    for batch in (first, second):
        assert batch.size == 6 and batch.valid.all()
        # final_obs is s_{t+1} of every step: the true last observation where the time limit
        # cut the episode (t = 4), never the observation it was reset to
        np.testing.assert_array_equal(batch.final_obs[:, :, 0], batch.obs[:, :, 0] + 1)
    np.testing.assert_array_equal(second.truncated, [[True, True], [False] * 2, [False] * 2])
    assert not second.terminated.any()
    assert not np.array_equal(second.final_obs[0, :, 1], second.obs[1, :, 1])  # reset: new start
    np.testing.assert_array_equal(second.final_obs[0, :, 1], second.obs[0, :, 1])
    assert env.num_steps == 12


def test_rollout_episodes_end_at_the_right_steps():
    env, collector = tiny_rollouts()
    first = collector.collect(act_ones, 10**6, step_offset=100)
    second = collector.collect(act_ones, 10**6, step_offset=100 + first.size)
    assert first.episodes == []
    # both episodes (4 steps, reward 2 each) end at the first step of the second rollout
    assert second.episodes == [(100 + 6 + 2, 8.0, 4), (100 + 6 + 2, 8.0, 4)]


def test_rollout_respects_the_remaining_budget():
    env, collector = tiny_rollouts(num_steps=3)
    short = collector.collect(act_ones, 5)  # 2 vector steps of 2 environments fit in 5
    assert short.rewards.shape == (2, 2) and short.size == 4
    assert collector.collect(act_ones, 1) is None
    assert env.num_steps == 4  # nothing stepped for the refused rollout
    np.testing.assert_array_equal(collector.collect(act_ones, 4).obs[0, :, 0], [2, 2])


def test_restart_resets_with_a_seed_from_the_generator():
    seeds = []
    env, collector = tiny_rollouts()
    original = env.reset
    env.reset = lambda seed=None: (seeds.append(seed), original(seed=seed))[1]
    expected = np.random.default_rng(0)
    collector.collect(act_ones, 10**6)
    collector.collect(act_ones, 10**6)
    assert seeds == [int(expected.integers(2**31 - 1))]
    collector.restart()
    batch = collector.collect(act_ones, 10**6)
    assert seeds[1] == int(expected.integers(2**31 - 1))
    np.testing.assert_array_equal(batch.obs[0, :, 0], [0, 0])


def test_rollout_normalises_next_observations_with_an_update_and_final_ones_without():
    calls = []

    def normalize(obs, update):
        calls.append((obs[:, 0].tolist(), update))
        return obs * 2.0

    env, collector = tiny_rollouts(num_steps=4, normalize=normalize)
    batch = collector.collect(act_ones, 10**6)
    # the reset, then each next observation, and the true final one of the ended episodes
    assert calls == [([0.0, 0.0], True), ([1.0, 1.0], True), ([2.0, 2.0], True),
                     ([3.0, 3.0], True), ([0.0, 0.0], True), ([4.0, 4.0], False)]
    np.testing.assert_array_equal(batch.obs[:, :, 0], [[0, 0], [2, 2], [4, 4], [6, 6]])
    np.testing.assert_array_equal(batch.final_obs[-1, :, 0], [8, 8])
    np.testing.assert_array_equal(collector.obs[:, 0], [0, 0])


# ---- the valid mask -----------------------------------------------------------------------------


class ScriptedVecEnv:
    """A stand-in for :class:`rlgrad.envs.VecEnv` with a ``valid`` attribute, as a vector env
    with NEXT_STEP autoreset would need: after the step that ends an episode, its next step only
    resets (no transition).

    Observation ``[k, n]`` (vector step, env index), reward ``10 k + n``. ``ends`` maps a step
    to the environments whose episode ends there (truncated); ``invalid`` maps a step to the
    environments for which it is not a transition."""

    def __init__(self, num_envs, ends, invalid):
        self.num_envs, self.ends, self.invalid = num_envs, ends, invalid
        self.k = 0
        self.valid = None
        self.reset_seeds = []
        self.ep_return = np.zeros(num_envs)
        self.ep_length = np.zeros(num_envs, dtype=np.int64)

    def _obs(self):
        return np.stack([np.full(self.num_envs, float(self.k)),
                         np.arange(self.num_envs, dtype=float)], axis=1)

    def reset(self, seed=None):
        self.reset_seeds.append(seed)
        self.k = 0
        self.ep_return[:] = 0
        self.ep_length[:] = 0
        return self._obs()

    def step(self, actions):
        n = self.num_envs
        self.k += 1
        rewards = 10.0 * self.k + np.arange(n)
        self.valid = ~np.isin(np.arange(n), self.invalid.get(self.k, []))
        truncated = np.isin(np.arange(n), self.ends.get(self.k, []))
        terminated = np.zeros(n, bool)
        self.ep_return += np.where(self.valid, rewards, 0.0)
        self.ep_length += self.valid
        self.finished_envs = np.flatnonzero(truncated)
        self.finished_returns = self.ep_return[truncated].copy()
        self.finished_lengths = self.ep_length[truncated].copy()
        self.ep_return[truncated] = 0
        self.ep_length[truncated] = 0
        obs = self._obs()
        return obs, rewards, terminated, truncated, obs


def test_rollout_uses_the_envs_valid_mask():
    # env 1's episode ends after step 1; step 2 only resets it (not a transition)
    env = ScriptedVecEnv(3, ends={1: [1], 3: [0]}, invalid={2: [1]})
    seen = []

    def scale(rewards, terminated, truncated, valid):
        seen.append(valid.copy())
        return np.where(valid, rewards / 10.0, 0.0)

    collector = RolloutCollector(env, np.random.default_rng(0), 4, scale_rewards=scale)
    batch = collector.collect(act_ones, 10**6, step_offset=50)
    expected = np.ones((4, 3), bool)
    expected[1, 1] = False
    np.testing.assert_array_equal(batch.valid, expected)
    np.testing.assert_array_equal(np.stack(seen), expected)
    assert batch.size == 11
    np.testing.assert_array_equal(batch.flat(batch.obs)[:, 0], [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3])
    np.testing.assert_allclose(batch.rewards[0], [1.0, 1.1, 1.2])  # scaled
    # steps count transitions only: env 1's episode ends at transition 3, env 0's at 3 + 2 + 3
    # (the episode statistics are the environment's own, unscaled)
    assert batch.episodes == [(53, 11.0, 1), (58, 60.0, 3)]
    second = collector.collect(act_ones, 10**6)
    assert second.size == 12 and second.obs[0, 0, 0] == 4


def test_episode_batches_use_the_envs_valid_mask():
    env = ScriptedVecEnv(2, ends={2: [0], 3: [1]}, invalid={3: [0]})
    collector = EpisodeCollector(env, np.random.default_rng(0), steps_per_update=3)
    batch = collector.collect(act_ones, 10**6, step_offset=7)
    # env 0 ends after step 2 (budget reached: idle from then on); step 3 was no transition of
    # env 0 anyway; env 1 ends after step 3
    np.testing.assert_array_equal(batch.valid, [[True, True], [True, True], [False, True]])
    assert batch.size == 5
    assert batch.episodes == [(7 + 4, 30.0, 2), (7 + 5, 63.0, 3)]
    assert env.reset_seeds == [int(np.random.default_rng(0).integers(2**31 - 1))]


# ---- EpisodeCollector ---------------------------------------------------------------------------


def tiny_episodes(num_envs=3, **kw):
    env = make_vec(TINY, num_envs, seed=0)
    return env, EpisodeCollector(env, np.random.default_rng(0), **kw)


def test_episode_batches_start_from_a_fresh_reset_and_finish_running_episodes():
    env, collector = tiny_episodes(num_envs=2, steps_per_update=10)
    batch = collector.collect(act_ones, 10**6, step_offset=20)
    # 10 steps are reached during the second episodes (4 steps each), which then finish
    assert batch.rewards.shape == (8, 2) and batch.valid.all() and batch.size == 16
    assert batch.episodes == [(28, 8.0, 4), (28, 8.0, 4), (36, 8.0, 4), (36, 8.0, 4)]
    np.testing.assert_array_equal(np.flatnonzero(batch.truncated[:, 0]), [3, 7])
    again = collector.collect(act_ones, 10**6)
    np.testing.assert_array_equal(again.obs[0, :, 0], [0, 0])
    assert not np.array_equal(again.obs[0, :, 1], batch.obs[0, :, 1])  # a new reset seed


def test_episode_batch_envs_go_idle_once_the_budget_is_reached():
    env, collector = tiny_episodes(num_envs=3, steps_per_update=5, max_episode_tail=100)
    batch = collector.collect(act_ones, 10**6)
    # the budget (5) is passed during the first episodes: each env stops after its episode
    assert batch.rewards.shape == (4, 3) and batch.size == 12
    assert len(batch.episodes) == 3


def test_hard_cap_cuts_running_episodes_at_the_exact_step_count():
    env, collector = tiny_episodes(num_envs=3, steps_per_update=5, max_episode_tail=2)
    batch = collector.collect(act_ones, 10**6)
    # cap 5 + 2 = 7: two vector steps (6), then only env 0 steps once more
    assert batch.size == 7 and batch.episodes == []
    np.testing.assert_array_equal(batch.valid, [[True] * 3, [True] * 3, [True, False, False]])
    cut = np.argwhere(batch.truncated & batch.valid).tolist()
    assert cut == [[1, 1], [1, 2], [2, 0]]
    # the cut episodes' final observation is the one after their last transition
    assert batch.final_obs[1, 1, 0] == batch.final_obs[1, 2, 0] == 2
    assert batch.final_obs[2, 0, 0] == 3


@pytest.mark.parametrize("remaining", [1, 6, 13])
def test_episode_batches_never_exceed_the_remaining_budget(remaining):
    env, collector = tiny_episodes(num_envs=3, steps_per_update=100)
    batch = collector.collect(act_ones, remaining)
    assert batch.size == remaining
