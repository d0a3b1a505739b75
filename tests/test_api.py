"""The Python API as SB3 users expect it: constructor options, learn, predict, save, load."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import A2C, AGENTS, PPO, ReinforceBaseline, load

SIGNAL = "tests.tiny_envs:Signal-v0"


def params(agent):
    arrays, _ = agent.state_dict()
    return {k: v.copy() for k, v in arrays.items() if not k.startswith("optim.")}


def test_config_fields_as_keyword_arguments_and_their_checks():
    agent = PPO("CartPole-v1", seed=1, lr=3e-4, num_steps=16, minibatch_size=32)
    assert agent.config.lr == 3e-4 and agent.config.num_steps == 16
    assert agent.config.num_envs == 4  # the discrete default, resolved
    agent.close()
    with pytest.raises(ValueError, match="unknown option 'lrr'.*did you mean 'lr'"):
        PPO("CartPole-v1", lrr=1e-3)
    for bad in ({"hidden_sizes": "64"}, {"hidden_sizes": (2.7,)}, {"ent_coef": float("nan")},
                {"clip_coef": 0.0}, {"gae_lambda": 1.5}, {"target_kl": 0.0},
                {"num_steps": 8, "minibatch_size": 64}):
        with pytest.raises((ValueError, TypeError)):
            PPO("CartPole-v1", **bad)


def test_predict_takes_one_observation_or_a_batch_and_returns_sb3s_pair():
    agent = PPO("Pendulum-v1", seed=0, num_steps=64, minibatch_size=32)
    agent.learn(128)
    obs = np.array([0.5, -0.5, 0.1])
    action, state = agent.predict(obs, deterministic=True)
    assert state is None and action.shape == (1,)
    actions, _ = agent.predict(np.stack([obs, obs]), deterministic=True)
    assert actions.shape == (2, 1)
    np.testing.assert_allclose(actions[0], action, rtol=1e-5)  # gemv vs gemm rounding
    assert np.all(np.abs(actions) <= 2.0)  # clipped to the Box bounds
    with pytest.raises(ValueError, match="shape"):
        agent.predict(np.zeros(4))
    with pytest.raises(ValueError, match="nan"):
        agent.predict(np.array([np.nan, 0.0, 0.0]))
    agent.close()


def test_save_load_predict_in_a_fresh_process_gives_the_same_actions(tmp_path):
    agent = PPO("Pendulum-v1", seed=2, num_steps=64, minibatch_size=32)
    agent.learn(256)
    agent.save(tmp_path / "ppo_pendulum")
    obs = np.random.default_rng(0).uniform(-1, 1, size=(50, 3))
    expected, _ = agent.predict(obs, deterministic=True)
    agent.close()
    np.save(tmp_path / "obs.npy", obs)
    script = textwrap.dedent(f"""
        import numpy as np
        from agents import load
        agent = load({str(tmp_path / "ppo_pendulum")!r})
        actions, _ = agent.predict(np.load({str(tmp_path / "obs.npy")!r}), deterministic=True)
        np.save({str(tmp_path / "actions.npy")!r}, actions)
        print(agent.global_step)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "256"
    np.testing.assert_array_equal(np.load(tmp_path / "actions.npy"), expected)


def test_learn_after_load_continues_the_step_count_and_the_schedule(tmp_path):
    straight = PPO("CartPole-v1", seed=3, num_steps=16, minibatch_size=32)
    lrs_straight = []
    straight.learn(640, lambda a, info: lrs_straight.append(info["learning_rate"]))

    first = PPO("CartPole-v1", seed=3, num_steps=16, minibatch_size=32)
    lrs = []
    first.learn(640, lambda a, info: lrs.append(info["learning_rate"]) or a.global_step < 320)
    assert first.global_step == 320
    first.save(tmp_path / "half")
    second = PPO.load(tmp_path / "half")
    assert second.global_step == 320
    # 320 more steps from step 320: the schedule spans 0..640, as the straight run's
    second.learn(320, lambda a, info: lrs.append(info["learning_rate"]),
                 reset_num_timesteps=False)
    assert second.global_step == 640
    np.testing.assert_allclose(lrs, lrs_straight)


def test_a_callback_returning_false_stops_after_that_update():
    agent = A2C("CartPole-v1", seed=0)
    seen = []
    agent.learn(10_000, lambda a, info: seen.append(a.num_updates) or len(seen) < 3)
    assert seen == [1, 2, 3] and agent.num_updates == 3
    assert agent.global_step == 3 * agent.config.num_steps * agent.config.num_envs
    agent.close()


def test_reset_num_timesteps_as_in_sb3():
    agent = ReinforceBaseline(SIGNAL, seed=0, steps_per_update=64, num_envs=2,
                              hidden_sizes=(8,))
    agent.learn(128)
    assert agent.global_step == 128
    agent.learn(128, reset_num_timesteps=False)
    assert agent.global_step == 256
    agent.learn(128)
    assert agent.global_step == 128
    agent.close()


def test_load_imports_only_registered_agents_or_the_class_passed(tmp_path):
    agent = PPO("CartPole-v1", seed=0, num_steps=16, minibatch_size=32)
    agent.learn(64)
    path = agent.save(tmp_path / "run")
    agent.close()
    doc = json.loads(path.read_text())
    assert "agent_path" not in doc["meta"] and doc["meta"]["agent"] == "ppo"
    assert type(load(tmp_path / "run")) is PPO
    assert type(load(tmp_path / "run", agent=AGENTS["ppo"])) is PPO
    with pytest.raises(TypeError, match="Agent subclass"):
        load(tmp_path / "run", agent=dict)
