from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from rlgrad.envs import (
    NonFiniteError,
    SpaceSpec,
    VecEnv,
    check_finite,
    check_spaces,
    clip_actions,
    describe_spaces,
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
    raw = gym.make_vec("CartPole-v1", 2)  # Gymnasium's own: NEXT_STEP
    with pytest.raises(ValueError, match="autoreset mode"):
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
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

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
