from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode

from rlgrad.envs import (
    EnvironmentAPIError,
    EnvironmentStepError,
    NonFiniteError,
    SpaceSpec,
    VecEnv,
    check_finite,
    check_spaces,
    clip_actions,
    describe_spaces,
    make,
    make_vec,
    spaces_for,
)

TINY = "tests.tiny_envs:Tiny-v0"


def rollout(env: VecEnv, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Reset, then step through ``actions`` ``(T, N)``; stack every returned array."""
    out = {"reset": env.reset()}
    keys = ["obs", "rewards", "terminated", "truncated", "final_obs"]
    steps = [env.step(a) for a in actions]
    for i, key in enumerate(keys):
        out[key] = np.stack([s[i] for s in steps])
    return out


def random_actions(seed: int, T: int, N: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(T, N))


def copy_native_state_into_sync(native: VecEnv, sync: VecEnv) -> None:
    for i, sub in enumerate(sync.env.envs):
        sub.unwrapped.state = native.env.unwrapped.state[:, i].copy()


def test_auto_vectorization_choice():
    with make_vec("CartPole-v1", 2, 0) as env:
        assert env.vectorization == "native"
    with make_vec("InvertedPendulum-v5", 2, 0) as env:
        assert env.vectorization == "sync"


@pytest.mark.parametrize("vectorization", ["native", "sync"])
def test_same_seed_same_trajectories(vectorization):
    actions = random_actions(0, 300, 4)
    with make_vec("CartPole-v1", 4, 3, vectorization=vectorization) as a:
        first = rollout(a, actions)
    with make_vec("CartPole-v1", 4, 3, vectorization=vectorization) as b:
        second = rollout(b, actions)
    assert first["terminated"].any()  # resets happened inside the rollout
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    with make_vec("CartPole-v1", 4, 4, vectorization=vectorization) as c:
        assert not np.array_equal(c.reset(), first["reset"])


@pytest.mark.parametrize("vectorization", ["native", "sync"])
def test_reset_seeds_only_the_first_time(vectorization):
    with make_vec("CartPole-v1", 3, 0, vectorization=vectorization) as env:
        first = env.reset()
        assert not np.array_equal(env.reset(), first)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "InvertedPendulum-v5"])
def test_action_space_is_seeded(env_id):
    samples = []
    for seed in (5, 5, 6):
        with make_vec(env_id, 3, seed) as env:
            env.reset()
            samples.append(np.stack([env.action_space.sample() for _ in range(20)]))
    np.testing.assert_array_equal(samples[0], samples[1])
    assert not np.array_equal(samples[0], samples[2])


def test_native_and_sync_share_physics():
    # The two draw reset states from different random streams, so the same seed gives different
    # trajectories; from the same state with the same actions they agree, up to float rounding.
    actions = np.tile([[0, 1, 1], [1, 0, 1]], (3, 1))  # no termination within 5 steps
    with (
        make_vec("CartPole-v1", 3, 0, vectorization="native", max_episode_steps=5) as native,
        make_vec("CartPole-v1", 3, 0, vectorization="sync", max_episode_steps=5) as sync,
    ):
        native.reset()
        sync.reset()
        copy_native_state_into_sync(native, sync)
        for t in range(5):
            n_obs, n_rew, n_term, n_trunc, n_final = native.step(actions[t])
            s_obs, s_rew, s_term, s_trunc, s_final = sync.step(actions[t])
            np.testing.assert_allclose(n_final, s_final, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(n_rew, s_rew)
            np.testing.assert_array_equal(n_term, s_term)
            np.testing.assert_array_equal(n_trunc, s_trunc)
        assert n_trunc.all() and not n_term.any()
        # after the truncation both are reset, each from its own random stream
        assert np.abs(n_obs).max() <= 0.05 and np.abs(s_obs).max() <= 0.05
        assert not np.allclose(n_obs, n_final)


def test_sync_matches_single_envs_seeded_seed_plus_i():
    # CartPole truncated after 5 steps: final_obs is the 5th observation of the episode, obs the
    # reset observation, both exactly what a lone env seeded with seed + i produces.
    N, seed = 3, 10
    actions = np.tile([[0, 1, 0], [1, 0, 1]], (6, 1))
    with make_vec("CartPole-v1", N, seed, vectorization="sync", max_episode_steps=5) as env:
        got = rollout(env, actions)
    for i in range(N):
        single = gym.make("CartPole-v1", max_episode_steps=5)
        obs, _ = single.reset(seed=seed + i)
        np.testing.assert_array_equal(got["reset"][i], obs)
        for t in range(len(actions)):
            obs, reward, terminated, truncated, _ = single.step(actions[t, i])
            np.testing.assert_array_equal(got["final_obs"][t, i], obs)
            assert got["truncated"][t, i] == truncated
            if terminated or truncated:
                obs, _ = single.reset()
            np.testing.assert_array_equal(got["obs"][t, i], obs)
        single.close()
    assert got["truncated"][4].all()


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_final_obs_on_truncation_and_termination(vectorization):
    # Tiny: obs = [t, start], start drawn at reset; time limit 4; terminates at t == 3 if asked
    with make_vec(TINY, 2, 0, vectorization=vectorization) as env:
        got = rollout(env, np.zeros((9, 2), dtype=np.int64))
    starts = got["reset"][:, 1]
    np.testing.assert_array_equal(got["truncated"][:, 0], [0, 0, 0, 1, 0, 0, 0, 1, 0])
    assert not got["terminated"].any()
    np.testing.assert_array_equal(got["final_obs"][3], np.stack([[4.0, 4.0], starts], axis=1))
    assert (got["obs"][3, :, 0] == 0).all() and (got["obs"][3, :, 1] != starts).all()
    rows_not_done = [0, 1, 2, 4, 5, 6, 8]
    np.testing.assert_array_equal(got["final_obs"][rows_not_done], got["obs"][rows_not_done])

    with make_vec(TINY, 2, 0, vectorization=vectorization, terminate_at=3) as env:
        got = rollout(env, np.zeros((4, 2), dtype=np.int64))
    np.testing.assert_array_equal(got["terminated"][:, 1], [0, 0, 1, 0])
    assert not got["truncated"].any()
    np.testing.assert_array_equal(got["final_obs"][2, :, 0], [3.0, 3.0])
    np.testing.assert_array_equal(got["obs"][2, :, 0], [0.0, 0.0])


@pytest.mark.parametrize("vectorization", ["native", "sync"])
def test_episode_statistics_match_naive_count(vectorization):
    T, N = 400, 5
    actions = random_actions(1, T, N)
    with make_vec("CartPole-v1", N, 0, vectorization=vectorization, max_episode_steps=30) as env:
        env.reset()
        reported = []
        want = []
        running = [[0.0, 0] for _ in range(N)]
        for t in range(T):
            _, rewards, terminated, truncated, _ = env.step(actions[t])
            reported += list(
                zip(env.finished_envs, env.finished_returns, env.finished_lengths, strict=True)
            )
            for i in range(N):
                running[i][0] += rewards[i]
                running[i][1] += 1
                if terminated[i] or truncated[i]:
                    want.append((i, *running[i]))
                    running[i] = [0.0, 0]
        assert env.num_episodes == len(want) > N
        assert env.num_steps == T * N
    assert [(int(i), float(r), int(n)) for i, r, n in reported] == want
    assert env.finished_returns.dtype == np.float64 and env.finished_lengths.dtype == np.int64


def test_episode_returns_follow_rewards():
    with make_vec(TINY, 2, 0) as env:
        env.reset()
        for a in ([1, 0], [1, 0], [0, 0]):
            env.step(np.array(a))
            assert len(env.finished_envs) == 0
        env.step(np.array([1, 1]))
    np.testing.assert_array_equal(env.finished_envs, [0, 1])
    np.testing.assert_array_equal(env.finished_returns, [2 + 2 + 1 + 2, 1 + 1 + 1 + 2])
    np.testing.assert_array_equal(env.finished_lengths, [4, 4])


def test_check_spaces_accepts_supported_spaces():
    obs = spaces.Box(-1, 1, shape=(4,))
    assert check_spaces(obs, spaces.Discrete(3)) == SpaceSpec(4, "discrete", 3)
    spec = check_spaces(obs, spaces.Box(-2, 2, shape=(2,)))
    assert spec == SpaceSpec(4, "continuous", 2, (-2.0, -2.0), (2.0, 2.0))
    assert not spec.discrete and check_spaces(obs, spaces.Discrete(3)).discrete
    assert spec.to_dict() == {
        "obs_dim": 4,
        "action_kind": "continuous",
        "action_dim": 2,
        "action_low": [-2.0, -2.0],
        "action_high": [2.0, 2.0],
    }


@pytest.mark.parametrize(
    "obs_space, action_space, bad",
    [
        (spaces.Dict({"a": spaces.Box(0, 1, (2,))}), spaces.Discrete(2), "observation space Dict"),
        (spaces.Box(0, 1, (3, 4)), spaces.Discrete(2), "observation space Box"),
        (spaces.Discrete(5), spaces.Discrete(2), "observation space Discrete"),
        (spaces.Box(0, 1, (3,)), spaces.MultiDiscrete([2, 3]), "action space MultiDiscrete"),
        (spaces.Box(0, 1, (3,)), spaces.Box(0, 1, (2, 2)), "action space Box"),
        (spaces.Box(0, 1, (3,)), spaces.Box(0, 5, (2,), dtype=np.int64), "action space Box"),
        (spaces.Box(0, 1, (3,)), spaces.Discrete(2, start=1), "action space Discrete"),
    ],
)
def test_check_spaces_rejects_unsupported(obs_space, action_space, bad):
    with pytest.raises(ValueError, match=f"Unsupported {bad}.*supported: observation space a 1-D"):
        check_spaces(obs_space, action_space)


def test_unsupported_env_fails_before_stepping():
    with pytest.raises(ValueError, match="Unsupported observation space Dict"):
        describe_spaces("tests.tiny_envs:TinyDict-v0")
    with pytest.raises(ValueError, match="Unsupported observation space Dict"):
        make_vec("tests.tiny_envs:TinyDict-v0", 2, 0)


def test_spaces_for_and_describe_spaces():
    obs_space, action_space = spaces_for("CartPole-v1")
    assert obs_space.shape == (4,) and action_space == spaces.Discrete(2)
    assert describe_spaces("CartPole-v1") == SpaceSpec(4, "discrete", 2)


@pytest.mark.parametrize(
    "env_id, message",
    [
        ("Cartpole-v1", "Did you mean: `CartPole`"),
        ("CartPole-v9", "It provides versioned environments: \\[ `v0`, `v1` \\]"),
        ("NoSuchEnvAtAll-v0", "NoSuchEnvAtAll"),
        ("no_such_module_xyz:Tiny-v0", "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_unknown_id_keeps_gymnasium_hint(env_id, message):
    with pytest.raises(ValueError, match=message):
        make_vec(env_id, 2, 0)
    with pytest.raises(ValueError, match=message):
        spaces_for(env_id)


def test_module_colon_id_imports_the_module():
    sys.modules.pop("tests.tiny_envs", None)
    for name in [k for k in gym.registry if k.startswith("Tiny")]:
        del gym.registry[name]
    with make_vec(TINY, 2, 0) as env:
        assert env.reset().shape == (2, 2)
    assert "Tiny-v0" in gym.registry


def test_native_without_same_step_falls_back_to_sync():
    with make_vec("tests.tiny_envs:TinyNextStep-v0", 2, 0) as env:
        assert env.vectorization == "sync"
    with pytest.raises(ValueError, match="autoreset mode"):
        make_vec("tests.tiny_envs:TinyNextStep-v0", 2, 0, vectorization="native")
    with pytest.raises(ValueError, match="no native vector implementation"):
        make_vec(TINY, 2, 0, vectorization="native")
    with make_vec("tests.tiny_envs:TinyNextStep-v0", 2, 0, vectorization="native",
                  autoreset_mode="next_step") as env:
        assert env.vectorization == "native" and env.autoreset_mode == "next_step"
    raw = gym.make_vec("CartPole-v1", 2)  # Gymnasium's own: NEXT_STEP, accepted as such
    with VecEnv(raw, 0) as env:
        assert env.autoreset_mode == "next_step"
    raw = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED})
    with pytest.raises(ValueError, match="autoreset mode.*Disabled"):
        VecEnv(raw, 0)
    raw.close()


def test_check_finite_names_step_and_env_index():
    obs = np.zeros((4, 3))
    rewards = np.zeros(4)
    check_finite(obs, rewards, 0)
    obs[2, 1] = np.nan
    obs[3, 0] = np.inf
    with pytest.raises(NonFiniteError, match="observation at environment step 17, env index 2"):
        check_finite(obs, rewards, 17)
    rewards[1] = -np.inf
    with pytest.raises(FloatingPointError, match="reward at environment step 5, env index 1"):
        check_finite(np.zeros((4, 3)), rewards, 5)
    final = np.zeros((4, 3))
    final[3, 2] = np.nan
    with pytest.raises(ValueError, match="final observation at environment step 9, env index 3"):
        check_finite(np.zeros((4, 3)), np.zeros(4), 9, final)


def test_vec_env_raises_on_nan_observation():
    with make_vec(TINY, 3, 0, nan_at=2) as env:
        env.reset()
        env.step(np.zeros(3, dtype=np.int64))
        with pytest.raises(NonFiniteError, match="observation at environment step 6, env index 0"):
            env.step(np.zeros(3, dtype=np.int64))
    with make_vec(TINY, 3, 0, nan_at=4) as env:  # only the final observation is nan
        env.reset()
        for _ in range(3):
            env.step(np.zeros(3, dtype=np.int64))
        with pytest.raises(NonFiniteError, match="final observation at environment step 12"):
            env.step(np.zeros(3, dtype=np.int64))
    with make_vec(TINY, 3, 0, nan_at=2, check_finite=False) as env:
        env.reset()
        env.step(np.zeros(3, dtype=np.int64))
        assert np.isnan(env.step(np.zeros(3, dtype=np.int64))[0][:, 0]).all()


def test_box_actions_are_clipped():
    actions = np.array([[2.0, -3.0], [0.5, 0.25]])
    with make_vec("tests.tiny_envs:TinyBox-v0", 2, 0) as env:
        env.reset()
        np.testing.assert_allclose(env.step(actions)[1], [0.0, 0.75])
    with make_vec("tests.tiny_envs:TinyBox-v0", 2, 0, clip_actions=False) as env:
        env.reset()
        np.testing.assert_allclose(env.step(actions)[1], [-1.0, 0.75])
    box = spaces.Box(-1.0, 1.0, shape=(2,))
    np.testing.assert_array_equal(clip_actions(actions, box), [[1.0, -1.0], [0.5, 0.25]])
    with pytest.raises(TypeError, match="Box"):
        clip_actions(actions, spaces.Discrete(2))


def test_bad_actions_raise():
    with make_vec("CartPole-v1", 3, 0) as env:
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(np.zeros(3, dtype=np.int64))
        env.reset()
        with pytest.raises(ValueError, match=r"actions have shape \(2,\), expected \(3,\)"):
            env.step(np.zeros(2, dtype=np.int64))
        with pytest.raises(TypeError, match="integers, got dtype float64"):
            env.step(np.zeros(3))
        with pytest.raises(ValueError, match=r"action 2 for env index 1 is outside \[0, 2\)"):
            env.step(np.array([0, 2, 1]))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_num_envs(bad):
    with pytest.raises(ValueError, match="num_envs"):
        make_vec("CartPole-v1", bad, 0)


def test_inverted_pendulum_constructs_and_steps():
    with make_vec("InvertedPendulum-v5", 2, 0) as env:
        assert env.spaces.action_kind == "continuous" and env.spaces.action_dim == 1
        obs = env.reset()
        assert obs.shape == (2, 4) and obs.dtype == np.float64
        rng = np.random.default_rng(0)
        for _ in range(30):
            obs, rewards, terminated, truncated, final_obs = env.step(rng.normal(size=(2, 1)) * 5)
        assert obs.shape == final_obs.shape == (2, 4) and rewards.shape == (2,)
        assert env.num_episodes > 0  # random actions drop the pole within 30 steps


def test_same_step_cartpole_has_gymnasiums_dynamics_bitwise():
    from rlgrad.envs import SameStepCartPoleVectorEnv

    ours, theirs = SameStepCartPoleVectorEnv(num_envs=5), CartPoleVectorEnv(num_envs=5)
    obs_a, _ = ours.reset(seed=3)
    obs_b, _ = theirs.reset(seed=3)
    np.testing.assert_array_equal(obs_a, obs_b)
    rng = np.random.default_rng(0)
    for _ in range(8):  # CartPole cannot fail within 8 steps from a reset state
        actions = rng.integers(0, 2, 5)
        a = ours.step(actions)
        b = theirs.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(ours.state, theirs.state)


# ---------------------------------------------------------------------------------------------
# Autoreset modes: NEXT_STEP's autoreset entries are not transitions (CleanRL issue #499)


def naive_transitions(env_id: str, seed: int, actions: np.ndarray, **kwargs) -> list[list]:
    """Per env ``i``: a lone env seeded ``seed + i`` and reset by hand takes ``actions[i]``."""
    out = []
    for i, row in enumerate(actions):
        env = gym.make(env_id, **kwargs)
        obs, _ = env.reset(seed=seed + i)
        transitions = []
        for a in row:
            next_obs, reward, terminated, truncated, _ = env.step(a)
            transitions.append((obs, a, reward, terminated, truncated, next_obs))
            obs = env.reset()[0] if terminated or truncated else next_obs
        env.close()
        out.append(transitions)
    return out


def vec_transitions(env: VecEnv, actions: np.ndarray, T: int) -> tuple[list[list], list]:
    """Step ``T`` times; env ``i`` takes ``actions[i, k]`` at its ``k``-th valid entry.

    Returns the valid transitions of each env and the reported (env, return, length) episodes.
    """
    N = env.num_envs
    taken = np.zeros(N, dtype=np.int64)
    transitions: list[list] = [[] for _ in range(N)]
    episodes = []
    obs = env.reset()
    for _ in range(T):
        a = actions[np.arange(N), taken]
        next_obs, rewards, terminated, truncated, final_obs = env.step(a)
        assert env.valid.shape == (N,) and env.valid.dtype == bool
        if env.autoreset_mode == "next_step":
            assert final_obs is next_obs  # the done step's observation is the final one
            assert not (rewards[~env.valid].any() or terminated[~env.valid].any()
                        or truncated[~env.valid].any())
        else:
            assert env.valid.all()
        for i in np.flatnonzero(env.valid):
            transitions[i].append(
                (obs[i], a[i], rewards[i], terminated[i], truncated[i], final_obs[i]))
        episodes += zip(env.finished_envs.tolist(), env.finished_returns.tolist(),
                        env.finished_lengths.tolist())
        taken += env.valid
        obs = next_obs
    return transitions, episodes


def assert_same_transitions(got: list[list], want: list[list]) -> None:
    for i, (g, w) in enumerate(zip(got, want)):
        assert len(g) > 0
        for k, (x, y) in enumerate(zip(g, w)):  # want may run longer than got
            for name, u, v in zip(["obs", "action", "reward", "terminated", "truncated",
                                   "final obs"], x, y):
                np.testing.assert_array_equal(u, v, err_msg=f"env {i} transition {k} {name}")


def episodes_of(transitions: list[list]) -> list[tuple[int, float, int]]:
    """(env, return, length) of the episodes that end within each env's transitions."""
    out = []
    for i, row in enumerate(transitions):
        ret, length = 0.0, 0
        for _, _, reward, terminated, truncated, _ in row:
            ret, length = ret + float(reward), length + 1
            if terminated or truncated:
                out.append((i, ret, length))
                ret, length = 0.0, 0
    return out


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_autoreset_modes_give_the_transitions_of_single_envs(mode):
    N, T, seed = 3, 150, 7
    actions = random_actions(2, N, T + 1).astype(np.int64)  # (N, steps): one row per env
    with make_vec("CartPole-v1", N, seed, vectorization="sync", autoreset_mode=mode,
                  max_episode_steps=20) as env:
        assert env.autoreset_mode == mode
        assert env.env.metadata["autoreset_mode"].value == {"same_step": "SameStep",
                                                            "next_step": "NextStep"}[mode]
        got, reported = vec_transitions(env, actions, T)
        num_steps, num_episodes = env.num_steps, env.num_episodes
    want = naive_transitions("CartPole-v1", seed, actions, max_episode_steps=20)
    assert_same_transitions(got, want)
    flags = np.array([[t[3], t[4]] for row in got for t in row])
    assert flags[:, 0].any() and flags[:, 1].any()  # both kinds of episode end happened
    lengths = [len(row) for row in got]
    if mode == "same_step":
        assert lengths == [T] * N
    else:  # one autoreset entry per episode that ended before the last step
        assert all(T - len(row) >= 3 for row in got)
    # statistics count transitions only
    assert num_steps == sum(lengths)
    assert sorted(reported) == sorted(episodes_of(got))
    assert num_episodes == len(reported)


def test_native_next_step_cartpole_is_gymnasiums_and_matches_same_step():
    N, T, seed = 4, 200, 3
    actions = random_actions(5, N, T + 1).astype(np.int64)
    with make_vec("CartPole-v1", N, seed, autoreset_mode="next_step",
                  max_episode_steps=25) as nxt:
        assert nxt.vectorization == "native" and nxt.autoreset_mode == "next_step"
        assert type(nxt.env.unwrapped) is CartPoleVectorEnv
        got_next, episodes_next = vec_transitions(nxt, actions, T)
    with make_vec("CartPole-v1", N, seed, max_episode_steps=25) as same:
        assert same.vectorization == "native" and same.autoreset_mode == "same_step"
        got_same, episodes_same = vec_transitions(same, actions, T)
    # both draw the reset states from one generator in the same order, so the valid
    # transitions agree exactly; NEXT_STEP has fewer of them (one autoreset per episode)
    assert sum(map(len, got_next)) < sum(map(len, got_same))
    assert_same_transitions(got_next, got_same)
    assert len(episodes_next) > N and sorted(episodes_next) == sorted(episodes_of(got_next))
    for i in range(N):  # each env's episodes: those of SAME_STEP, fewer of them
        mine = [e for e in episodes_next if e[0] == i]
        assert mine == [e for e in episodes_same if e[0] == i][:len(mine)]


def test_next_step_reset_clears_pending_autoresets():
    with make_vec(TINY, 2, 0, autoreset_mode="next_step") as env:
        env.reset()
        for _ in range(4):
            env.step(np.zeros(2, dtype=np.int64))
        assert len(env.finished_envs) == 2  # both truncated at t = 4
        obs = env.reset()
        env.step(np.ones(2, dtype=np.int64))
        assert env.valid.all() and env.num_steps == 10
        with pytest.raises(ValueError, match="read-only"):
            env.valid[0] = False
    assert obs.shape == (2, 2)


@pytest.mark.parametrize("bad", ["", "next", "SameStep", 1, ["same_step"]])
def test_bad_autoreset_mode(bad):
    with pytest.raises(ValueError, match="autoreset_mode"):
        make_vec("CartPole-v1", 2, 0, autoreset_mode=bad)


# ---------------------------------------------------------------------------------------------
# Non-finite actions


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_never_reach_the_env(bad, clip):
    with make_vec("tests.tiny_envs:TinyBox-v0", 3, 0, clip_actions=clip) as env:
        env.reset()
        actions = np.zeros((3, 2), dtype=np.float32)
        actions[1, 1] = bad
        with pytest.raises(NonFiniteError, match=rf"non-finite action \[ *0\., +{bad}\] for env "
                                                 r"index 1 \(not sent") as info:
            env.step(actions)
        assert "\n" not in str(info.value)
        assert [sub.unwrapped.steps for sub in env.env.envs] == [0, 0, 0]
        # finite actions whose float32 sum (6e38) overflows are not non-finite
        with pytest.warns(RuntimeWarning, match="overflow"):
            env.step(np.full((3, 2), 1e38, dtype=np.float32))
        assert [sub.unwrapped.steps for sub in env.env.envs] == [1, 1, 1]
        with pytest.raises(TypeError, match="Box actions must be real numbers, got dtype bool"):
            env.step(np.zeros((3, 2), dtype=bool))


# ---------------------------------------------------------------------------------------------
# Environments that break Gymnasium's API, or raise


def assert_one_line(error: BaseException, *parts: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


ZEROS = np.zeros(2, dtype=np.int64)

# Gymnasium's passive env checker warns about the broken environments before they fail
BROKEN = pytest.mark.filterwarnings("ignore:.*WARN:")


def first_error(env_id: str, steps: int = 1, **kwargs) -> BaseException:
    """The one error make_vec, reset or ``steps`` steps raise (failing if none does)."""
    with pytest.raises(Exception) as info:  # noqa: B017 - each caller checks the type
        with make_vec(env_id, 2, 0, **kwargs) as env:
            env.reset()
            for _ in range(steps):
                env.step(ZEROS)
    return info.value


@BROKEN
@pytest.mark.parametrize("env_id", ["tests.tiny_envs:TinyOldStep-v0",
                                    "tests.tiny_envs:TinyOldStepNoLimit-v0"])
def test_old_step_api_is_one_clear_error(env_id):
    error = first_error(env_id)
    assert isinstance(error, EnvironmentAPIError) and isinstance(error, ValueError)
    assert_one_line(error, env_id.split(":")[1], "old Gym step API",
                    "Gymnasium's API returns 5 values: obs, reward, terminated, truncated, info")


@BROKEN
@pytest.mark.parametrize("bad_at, steps", [("reset", 0), ("step", 1), ("final", 3)])
def test_observation_of_the_wrong_shape_is_one_clear_error(bad_at, steps):
    error = first_error("tests.tiny_envs:TinyBadObs-v0", steps, bad_at=bad_at)
    assert isinstance(error, EnvironmentAPIError)
    assert_one_line(error, "'TinyBadObs-v0'", "observation of shape (3,)", "(2,)")


@BROKEN
@pytest.mark.parametrize("text", [False, True])
def test_reward_that_is_not_a_scalar_is_one_clear_error(text):
    error = first_error("tests.tiny_envs:TinyBadReward-v0", text=text)
    assert isinstance(error, EnvironmentAPIError)
    assert_one_line(error, "'TinyBadReward-v0' (env index 0)", "reward",
                    "'x'" if text else "shape (2,)", "expected one scalar number")


@pytest.mark.parametrize("fault, parts", [
    ("old_api", ["TinyBrokenVector", "Gymnasium's API returns 5 values"]),
    ("obs_shape", ["observations of shape (2, 3)", "expected (2, 2)", "shape (2,)"]),
    ("reward_shape", ["rewards of shape (2, 1)", "expected (2,)", "one scalar per"]),
])
def test_user_vector_env_breaking_the_api_is_one_clear_error(fault, parts):
    from tests.tiny_envs import TinyBrokenVector

    with VecEnv(TinyBrokenVector(fault), 0) as env:
        env.reset()
        with pytest.raises(EnvironmentAPIError) as info:
            env.step(ZEROS)
    assert_one_line(info.value, *parts)


@pytest.mark.parametrize("error_type", [OSError, ValueError])
def test_exception_in_env_step_is_an_environment_step_error(error_type):
    error = first_error("tests.tiny_envs:TinyRaises-v0", 2, error_type=error_type)
    assert type(error) is EnvironmentStepError and isinstance(error, RuntimeError)
    assert not isinstance(error, ValueError)  # not mistaken for a bad argument
    assert str(error) == (f"Environment 'TinyRaises-v0' raised {error_type.__name__} in step: "
                          "physics exploded second line")
    assert type(error.__cause__) is error_type


def test_exception_in_env_reset_is_an_environment_step_error():
    error = first_error("tests.tiny_envs:TinyRaises-v0", 0, in_reset=True)
    assert type(error) is EnvironmentStepError and type(error.__cause__) is KeyError
    assert_one_line(error, "'TinyRaises-v0' raised KeyError in reset", "no such level")


@pytest.mark.parametrize("bad", [-1, True, 1.5, "0"])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer or None"):
        make_vec("CartPole-v1", 2, bad)
    with make_vec("CartPole-v1", 2, 0) as env:
        with pytest.raises(ValueError, match="seed must be a non-negative integer or None"):
            env.reset(seed=bad)


# ---------------------------------------------------------------------------------------------
# Optional dependencies


def hide_package(monkeypatch, missing: str, package: str) -> None:
    """Make ``import missing`` fail and ``package`` be imported afresh (and fail with it)."""
    monkeypatch.setitem(sys.modules, missing, None)
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("env_id, missing, package, extra", [
    ("Hopper-v5", "mujoco", "gymnasium.envs.mujoco", "mujoco"),
    ("LunarLander-v3", "Box2D", "gymnasium.envs.box2d", "box2d"),
])
def test_missing_dependency_names_our_extra(monkeypatch, env_id, missing, package, extra):
    hide_package(monkeypatch, missing, package)
    for call in (lambda: make_vec(env_id, 1, 0), lambda: describe_spaces(env_id),
                 lambda: make(env_id)):
        with pytest.raises(ValueError) as info:
            call()
        assert type(info.value) is ValueError
        assert_one_line(info.value, f"'{env_id}' needs", f"pip install 'rlgrad[{extra}]'")


@BROKEN
@pytest.mark.parametrize("missing", ["pygame", "moviepy"])
def test_record_video_names_the_video_extra(monkeypatch, tmp_path, missing):
    from rlgrad.video import record_video

    class Still:
        def act(self, obs, deterministic=False):
            return np.zeros(len(obs), dtype=np.int64)

    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ValueError) as info:
        record_video(Still(), "CartPole-v1", tmp_path / "videos")
    assert_one_line(info.value, "recording video", "pip install 'rlgrad[video]'")


# ---------------------------------------------------------------------------------------------
# MuJoCo's log file

ROOT = Path(__file__).resolve().parents[1]

HOPPER_RUN = """
import numpy as np
from rlgrad.envs import make_vec
env = make_vec("Hopper-v5", 1, seed=0)
env.reset()
rng = np.random.default_rng(0)
for _ in range(100):
    env.step(rng.uniform(-1, 1, size=(1, 3)))
# what an unstable simulation does: MuJoCo warns (and resets the state)
env.env.envs[0].unwrapped.data.qvel[:] = 1e12
env.step(np.zeros((1, 3)))
env.close()
"""


def test_mujoco_run_writes_no_log_file_and_no_deprecation_warnings(tmp_path):
    pytest.importorskip("mujoco")
    run = subprocess.run(
        [sys.executable, "-W", "default", "-c", HOPPER_RUN], cwd=tmp_path, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "huge value in QVEL" in run.stderr  # the warning happened, and still reaches stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert "DeprecationWarning" not in run.stderr, run.stderr


def test_mujoco_log_file_chosen_by_the_user_is_kept(tmp_path):
    mujoco = pytest.importorskip("mujoco")
    before = mujoco.MjLogConfig.get()
    try:
        mine = mujoco.MjLogConfig.get()
        mine.logto_file, mine.logfile = True, str(tmp_path / "mine.log")
        mine.set()
        make_vec("InvertedPendulum-v5", 1, 0).close()
        now = mujoco.MjLogConfig.get()
        assert now.logto_file and now.logfile == str(tmp_path / "mine.log")
    finally:
        before.set()


def test_mujoco_without_log_config_gets_a_warning_callback(monkeypatch):
    import types

    from rlgrad import envs

    installed = []
    fake = types.SimpleNamespace(get_mju_user_warning=lambda: None,
                                 set_mju_user_warning=installed.append)
    monkeypatch.setitem(sys.modules, "mujoco", fake)
    envs._keep_mujoco_log_out_of_cwd()
    assert len(installed) == 1
    with pytest.warns(RuntimeWarning, match="^MuJoCo: Nan, Inf or huge value in QACC$"):
        installed[0]("Nan, Inf or huge value\nin QACC")


# ---------------------------------------------------------------------------------------------
# Ids that import a module


def forget_tiny_envs(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "tests.tiny_envs", raising=False)
    for name in [k for k in gym.registry if k.startswith("Tiny")]:
        monkeypatch.delitem(gym.registry, name)


def _make_vec_closed(env_id, **kwargs):
    make_vec(env_id, 1, 0, **kwargs).close()


def _make_closed(env_id, **kwargs):
    make(env_id, **kwargs).close()


@pytest.mark.parametrize("call", [_make_vec_closed, describe_spaces, spaces_for, _make_closed])
def test_allow_import_false_refuses_to_import_a_module(monkeypatch, call):
    forget_tiny_envs(monkeypatch)
    with pytest.raises(ValueError) as info:
        call(TINY, allow_import=False)
    assert_one_line(info.value, "checkpoint names environment 'tests.tiny_envs:Tiny-v0'",
                    "module 'tests.tiny_envs'",
                    "pass --env tests.tiny_envs:Tiny-v0 on the command line to vouch for it")
    assert "tests.tiny_envs" not in sys.modules  # nothing ran
    call("CartPole-v1", allow_import=False)  # plain ids import nothing
    call(TINY)  # the user typed it
    call(TINY, allow_import=False)  # imported already: importing again runs nothing


def test_halfcheetah_compiles_without_a_log_file_or_a_deprecation_screen(tmp_path):
    """HalfCheetah's model uses MuJoCo's deprecated 'settotalmass': the compiler warns while the
    environment is built, before any MuJoCo object exists to reconfigure, so the warning route
    must be in place first."""
    root = str(Path(__file__).parents[1])
    code = (f"import sys; sys.path.insert(0, {root!r})\n"
            "import numpy as np\n"
            "from rlgrad.envs import make_vec\n"
            "env = make_vec('HalfCheetah-v5', 2, seed=0); env.reset()\n"
            "for _ in range(5): env.step(np.zeros((2, 6)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert "deprecated" not in out.stderr
