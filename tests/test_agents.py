"""The agents: the estimator, learning, determinism, resume, checkpoint state and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import rlgrad
import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import AGENTS, Agent, Reinforce, ReinforceBaseline
from agents.reinforce_baseline import ReinforceBaselineConfig
from rlgrad.distributions import Categorical
from rlgrad.envs import NonFiniteError
from rlgrad.returns import discounted_returns

SIGNAL = "tests.tiny_envs:Signal-v0"
SIGNAL_BOX = "tests.tiny_envs:SignalBox-v0"



def collect(agent, budget, cap):
    """One episode batch of ``budget`` steps, at most ``cap``, as the agent's loop collects it."""
    return agent.collection.collect_episodes(agent.collect_step, budget, cap)

def small(cls, **kw):
    base = {"steps_per_update": 256, "num_envs": 4, "hidden_sizes": (16,)}
    return cls.config_class(**{**base, **kw})


def params_of(agent: Agent) -> dict[str, np.ndarray]:
    arrays, _ = agent.state_dict()
    return arrays


# ---- the estimator --------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", [0.0, 1.5])
def test_score_function_estimator_is_unbiased_on_a_bandit(baseline):
    """E[grad log pi(a) (r(a) - b)] = grad E[r] for a softmax bandit, by the engine."""
    rng = np.random.default_rng(0)
    theta = np.array([0.3, -0.2, 0.5, 0.0])
    reward = np.array([1.0, 2.0, -1.0, 0.5])
    pi = np.exp(theta) / np.exp(theta).sum()
    exact = pi * (reward - pi @ reward)  # d/dtheta sum_a pi_a r_a

    n = 200_000
    logits = rlgrad.tensor(np.tile(theta, (n, 1)), requires_grad=True)
    dist = Categorical(logits)
    actions = dist.sample(rng)
    surrogate = (dist.log_prob(actions) * (reward[actions] - baseline)).mean()
    surrogate.backward()
    estimate = logits.grad.sum(axis=0)  # the same theta in every row

    per_sample = (np.eye(4)[actions] - pi) * (reward[actions] - baseline)[:, None]
    stderr = per_sample.std(axis=0) / np.sqrt(n)
    np.testing.assert_allclose(estimate, per_sample.mean(axis=0), rtol=1e-6, atol=1e-9)
    assert np.all(np.abs(estimate - exact) < 4 * stderr), (estimate, exact, stderr)


# ---- learning -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,env_id", [
    ("reinforce", SIGNAL),
    ("reinforce_baseline", SIGNAL),
    ("reinforce_baseline", SIGNAL_BOX),
])
def test_agents_learn_a_tiny_environment(name, env_id):
    cls = AGENTS[name]
    agent = cls(env_id, small(cls), seed=3)
    before = agent.evaluate(16).mean()
    agent.learn(20_000)
    after = agent.evaluate(16).mean()
    agent.close()
    # random play earns ~4 (discrete) / ~5 (Box near 0); reading the cue earns 8
    assert after > 7.5, (before, after)
    assert after > before + 1.0


def test_minibatch_updates_learn_too():
    cfg = small(ReinforceBaseline, minibatch_size=64, update_epochs=2)
    agent = ReinforceBaseline(SIGNAL, cfg, seed=1)
    agent.learn(20_000)
    assert agent.evaluate(16).mean() > 7.5


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adagrad", "adamw"])
def test_any_optimizer_by_name_updates_the_policy(optimizer):
    agent = Reinforce(SIGNAL, small(Reinforce, optimizer=optimizer, lr=0.05), seed=0)
    before = params_of(agent)
    agent.learn(600)
    after = params_of(agent)
    expected = {"sgd": "SGD", "momentum": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad",
                "adamw": "AdamW"}[optimizer]
    assert type(agent.optimizer).__name__ == expected
    assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith("policy"))


# ---- batches and returns ----------------------------------------------------------------------


def test_batches_hold_whole_episodes_and_count_only_used_steps():
    agent = Reinforce("tests.tiny_envs:Tiny-v0", small(Reinforce, steps_per_update=10), seed=0)
    batch = collect(agent, 10, 100)
    # every used transition belongs to an episode that ends inside the batch
    for n in range(agent.env.num_envs):
        col = batch.valid[:, n]
        last = np.flatnonzero(col)[-1]
        assert batch.terminated[last, n] or batch.truncated[last, n]
        assert col[: last + 1].all() and not col[last + 1:].any()
    assert batch.size >= 10
    assert len(batch.episodes) == batch.size // 4  # Tiny episodes last 4 steps
    np.testing.assert_allclose([e[2] for e in batch.episodes], 4)


def test_hard_cap_cuts_running_episodes_and_marks_them_truncated():
    agent = ReinforceBaseline("tests.tiny_envs:Tiny-v0", small(ReinforceBaseline, num_envs=3),
                              seed=0)
    batch = collect(agent, 5, 5)
    assert batch.size == 5
    cut = batch.truncated & batch.valid
    assert cut.any()
    # a cut episode's final observation is the next observation, to be valued by V
    t, n = np.argwhere(cut)[0]
    assert batch.final_obs[t, n, 0] == batch.obs[t, n, 0] + 1


def test_baseline_bootstraps_truncated_episodes_with_the_final_observation_value():
    agent = ReinforceBaseline("tests.tiny_envs:Tiny-v0", small(ReinforceBaseline, num_envs=2,
                                                                gamma=0.5), seed=0)
    batch = collect(agent, 8, 8)
    returns = discounted_returns(batch.rewards, batch.terminated, batch.truncated, 0.5,
                                 agent.bootstrap_values(batch))
    with rlgrad.no_grad():
        v_final = agent.value(batch.final_obs[-1]).data
    # last step of every episode is a time-limit truncation: G = r + gamma V(final obs)
    np.testing.assert_allclose(returns[-1], batch.rewards[-1] + 0.5 * v_final, rtol=1e-6)


# ---- determinism and resume -----------------------------------------------------------------


def test_same_seed_gives_identical_runs_and_different_seeds_differ():
    def run(seed):
        agent = ReinforceBaseline(SIGNAL, small(ReinforceBaseline), seed=seed)
        curve = []
        agent.learn(2_000, lambda a, info: curve.extend(r for _, r, _ in info["episodes"]))
        return params_of(agent), curve

    p1, c1 = run(5)
    p2, c2 = run(5)
    p3, c3 = run(6)
    assert c1 == c2
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    assert c1 != c3


@pytest.mark.parametrize("name", ["reinforce", "reinforce_baseline"])
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(name):
    cls = AGENTS[name]
    total = 3_000

    straight = cls(SIGNAL, small(cls), seed=2)
    straight.learn(total)

    first = cls(SIGNAL, small(cls), seed=2)

    def stop_after_two(agent, info):
        if agent.num_updates == 2:
            agent.stop_requested = True

    first.learn(total, stop_after_two)
    assert first.num_updates == 2 and first.global_step < total
    arrays, meta = first.state_dict()

    second = cls(SIGNAL, small(cls), seed=2)
    second.load_state_dict(arrays, meta)
    second.learn(total - second.global_step, reset_num_timesteps=False)
    assert second.global_step == straight.global_step
    a, b = params_of(straight), params_of(second)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_stop_request_during_collection_drops_the_batch_and_keeps_the_state():
    agent = Reinforce(SIGNAL, small(Reinforce), seed=0)
    agent.learn(512)
    before = params_of(agent)
    rng_before = agent.rng.bit_generator.state
    step_before = agent.global_step
    calls = {"n": 0}
    original = agent.env.step

    def step_then_stop(actions):
        calls["n"] += 1
        if calls["n"] == 5:
            agent.stop_requested = True
        return original(actions)

    agent.env.step = step_then_stop
    agent.learn(10_000, reset_num_timesteps=False)
    assert agent.global_step == step_before
    assert agent.rng.bit_generator.state == rng_before
    after = params_of(agent)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_load_state_dict_rejects_mismatches_and_leaves_the_agent_untouched():
    agent = ReinforceBaseline(SIGNAL, small(ReinforceBaseline), seed=0)
    agent.learn(600)
    arrays, meta = agent.state_dict()
    other = ReinforceBaseline(SIGNAL, small(ReinforceBaseline), seed=1)
    before = params_of(other)

    bad_shape = dict(arrays)
    key = next(k for k in arrays if k.startswith("value."))
    bad_shape[key] = np.zeros((3, 3), dtype=np.float32)
    missing = {k: v for k, v in arrays.items() if k != key}
    wide = ReinforceBaseline(SIGNAL, small(ReinforceBaseline, hidden_sizes=(8,)), seed=0)
    for bad_arrays, bad_meta, match in [
        (bad_shape, meta, "shape"),
        (missing, meta, "missing"),
        (arrays, dict(meta, agent="reinforce"), "agent"),
        (arrays, dict(meta, format=99), "format"),
        (arrays, dict(meta, spaces={**meta["spaces"], "obs_dim": 7}), "spaces"),
    ]:
        with pytest.raises(ValueError, match=match):
            other.load_state_dict(bad_arrays, bad_meta)
    with pytest.raises(ValueError):
        wide.load_state_dict(arrays, meta)
    after = params_of(other)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


# ---- faults -------------------------------------------------------------------------------


def test_nan_observation_stops_with_the_step_and_env_index():
    agent = Reinforce("tests.tiny_envs:Tiny-v0", small(Reinforce, num_envs=2), seed=0,
                      env_kwargs={"nan_at": 3})
    before = params_of(agent)
    with pytest.raises(NonFiniteError, match=r"step.*env index|env index.*step"):
        agent.learn(100)
    after = params_of(agent)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_nan_loss_raises_before_any_parameter_changes():
    agent = Reinforce(SIGNAL, small(Reinforce), seed=0)
    batch = collect(agent, 64, 64)
    agent.prepare(batch)
    batch.data["advantages"] = batch.data["advantages"] * np.nan
    before = params_of(agent)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        agent.update(batch)
    after = params_of(agent)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
        assert np.isfinite(after[k]).all()


@pytest.mark.parametrize("field,value,match", [
    ("lr", 0.0, "lr"),
    ("lr", -1e-3, "lr"),
    ("gamma", 1.5, "gamma"),
    ("gamma", -0.1, "gamma"),
    ("num_envs", 0, "num_envs"),
    ("steps_per_update", -5, "steps_per_update"),
    ("optimizer", "adamm", "did you mean 'adam'"),
    ("activation", "swish", "activation"),
    ("hidden_sizes", (), "hidden_sizes"),
])
def test_bad_config_is_rejected_before_anything_is_built(field, value, match):
    with pytest.raises(ValueError, match=match):
        ReinforceBaseline(SIGNAL, ReinforceBaselineConfig(**{field: value}))


def test_bad_seed_env_and_spaces():
    with pytest.raises(ValueError, match="seed"):
        Reinforce(SIGNAL, seed=-1)
    with pytest.raises(ValueError, match="(?i)did you mean"):
        Reinforce("Cartpole-v1")
    with pytest.raises(ValueError, match="versioned environments"):
        Reinforce("CartPole-v9")
    with pytest.raises(ValueError, match="Discrete"):
        Reinforce("tests.tiny_envs:TinyDict-v0")
    with pytest.raises(ValueError, match="total_steps"):
        Reinforce(SIGNAL, small(Reinforce)).learn(0)


def test_gradient_variance_is_measured_without_changing_parameters():
    agent = ReinforceBaseline(SIGNAL, small(ReinforceBaseline, grad_variance_batches=4), seed=0)
    batch = collect(agent, 256, 256)
    agent.prepare(batch)
    before = params_of(agent)
    m = agent.gradient_variance(batch, 4)
    assert m["grad_variance"] > 0 and np.isfinite(m["grad_relative_variance"])
    after = params_of(agent)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])



def test_episodes_per_update_collects_whole_episodes():
    cfg = small(Reinforce, num_envs=3, episodes_per_update=7)
    agent = Reinforce("tests.tiny_envs:Tiny-v0", cfg, seed=0)
    sizes = []
    agent.learn(200, lambda a, info: sizes.append((len(info["episodes"]), info["steps"])))
    # Tiny episodes last 4 steps on 3 envs: 7 finished episodes take 3 vector steps of 3
    # episodes each, so a batch holds 9 episodes and 36 steps
    assert sizes[0] == (9, 36)
    assert sum(s for _, s in sizes) == agent.global_step <= 200


def test_newton_can_drive_a_small_policy():
    cfg = small(Reinforce, optimizer="newton", lr=0.5, hidden_sizes=(4,))
    cfg.validate()
    agent = Reinforce(SIGNAL, cfg, seed=0)
    before = params_of(agent)
    agent.learn(512)
    after = params_of(agent)
    assert type(agent.optimizer).__name__ == "Newton"
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert all(np.isfinite(v).all() for v in after.values())


@pytest.mark.parametrize("edit,match", [
    (lambda g: g.update(eps=-1.0), "eps"),
    (lambda g: g.update(betas=[2.0, 0.9]), "beta"),
    (lambda g: g.update(lr=float("nan")), "lr|nan"),
])
def test_a_checkpoint_with_bad_optimizer_hyperparameters_is_refused(edit, match):
    agent = Reinforce(SIGNAL, small(Reinforce), seed=0)
    agent.learn(200)
    arrays, meta = agent.state_dict()
    edit(meta["optimizers"]["policy"]["param_groups"][0])
    other = Reinforce(SIGNAL, small(Reinforce), seed=1)
    before = params_of(other)
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(arrays, meta)
    for k, v in params_of(other).items():
        np.testing.assert_array_equal(before[k], v)


def test_a_checkpoint_with_a_negative_step_count_is_refused():
    agent = Reinforce(SIGNAL, small(Reinforce), seed=0)
    agent.learn(200)
    arrays, meta = agent.state_dict()
    states = meta["optimizers"]["policy"]["state"]
    first = next(iter(states.values()))
    first["step"] = -3
    with pytest.raises(ValueError, match="step"):
        Reinforce(SIGNAL, small(Reinforce), seed=1).load_state_dict(arrays, meta)
