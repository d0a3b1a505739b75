"""Actor-critic rollouts on Gymnasium's NEXT_STEP autoreset: the reset step is never a
transition (the bug behind CleanRL #499), and GAE over what remains equals a naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from agents import A2C, PPO
from rlgrad.tensor import no_grad


def naive_gae(batch, value_fn, gamma, lam):
    """Per environment, over its valid entries only, in order."""
    T, N = batch.rewards.shape
    out = np.zeros((T, N))
    values = batch.extras["value"]
    for n in range(N):
        steps = [t for t in range(T) if batch.valid[t, n]]
        a_next = 0.0
        for i in reversed(range(len(steps))):
            t = steps[i]
            if batch.terminated[t, n]:
                v_next, cont = 0.0, 0.0
            elif batch.truncated[t, n] or i == len(steps) - 1:
                v_next, cont = value_fn(batch.final_obs[t, n]), 0.0
            else:
                v_next, cont = values[steps[i + 1], n], 1.0
            delta = batch.rewards[t, n] + gamma * v_next - values[t, n]
            a_next = delta + gamma * lam * cont * a_next
            out[t, n] = a_next
    return out[batch.valid]


@pytest.mark.parametrize("cls", [PPO, A2C])
def test_next_step_autoreset_entries_are_not_transitions(cls):
    agent = cls("CartPole-v1", seed=0, num_steps=96, num_envs=4, minibatch_size=96,
                env_kwargs={"autoreset_mode": "next_step"})
    assert agent.env.autoreset_mode == "next_step"
    batch = agent.collection.collect(agent.collect_step, 10**9, 0)
    assert (~batch.valid).any(), "no episode ended: the test would not test anything"
    # every invalid entry directly follows an episode's end in its environment
    for t, n in np.argwhere(~batch.valid):
        assert t > 0 and (batch.terminated[t - 1, n] or batch.truncated[t - 1, n])
    assert batch.size == int(batch.valid.sum())
    agent.prepare(batch)

    def value_fn(obs):
        with no_grad():
            return float(agent.values(obs[None]).data[0])

    c = agent.config
    np.testing.assert_allclose(batch.data["advantages"],
                               naive_gae(batch, value_fn, c.gamma, c.gae_lambda),
                               rtol=1e-5, atol=1e-5)
    agent.learn(2 * 96 * 4)
    assert 600 < agent.global_step <= 2 * 96 * 4  # the budget counts valid steps only
    agent.close()


def test_both_autoreset_modes_learn_the_same_task():
    returns = {}
    for mode in ("same_step", "next_step"):
        agent = PPO("CartPole-v1", seed=1, env_kwargs={"autoreset_mode": mode})
        agent.learn(30_000)
        returns[mode] = float(np.mean(agent.evaluate(5)))
        agent.close()
    assert returns["same_step"] > 150 and returns["next_step"] > 150, returns
