"""Input gradients through the engine, against the Jacobian, finite differences and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import Reinforce, ReinforceBaseline
from rlgrad import nn
from rlgrad.autograd import jacobian
from rlgrad.distributions import Categorical
from rlgrad.sensitivity import input_gradients, policy_sensitivity
from rlgrad.tensor import Tensor


def mlp(sizes, seed=0):
    return nn.MLP(sizes, activation="tanh", rng=np.random.default_rng(seed), dtype=np.float64)


@pytest.mark.parametrize("batch,obs_dim", [(1, 1), (5, 4), (7, 3)])
def test_one_backward_pass_gives_the_diagonal_of_the_jacobian(batch, obs_dim):
    net = mlp([obs_dim, 8, 1])
    obs = np.random.default_rng(1).normal(size=(batch, obs_dim))

    def f(x):
        return net(x).reshape(-1)

    g = input_gradients(f, obs)
    jac = jacobian(f, obs)  # (B, B, obs_dim); row b depends on obs_b only
    assert g.shape == (batch, obs_dim) and g.dtype == np.float64
    np.testing.assert_allclose(g, jac[np.arange(batch), np.arange(batch)], rtol=1e-12)


def test_log_prob_gradient_matches_finite_differences_and_torch():
    net = mlp([3, 16, 4], seed=2)
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(6, 3))
    actions = rng.integers(0, 4, size=6)

    def logp(x):
        return Categorical(logits=net(x)).log_prob(actions)

    g = input_gradients(logp, obs)
    eps = 1e-6
    for j in range(3):
        e = np.zeros(3)
        e[j] = eps
        numeric = (logp(Tensor(obs + e)).data - logp(Tensor(obs - e)).data) / (2 * eps)
        np.testing.assert_allclose(g[:, j], numeric, rtol=1e-6, atol=1e-9)

    x = torch.tensor(obs, requires_grad=True)
    h = x
    layers = [net[i] for i in range(len(net)) if isinstance(net[i], nn.Linear)]
    for i, layer in enumerate(layers):
        h = h @ torch.tensor(layer.weight.data).T + torch.tensor(layer.bias.data)
        if i < len(layers) - 1:
            h = torch.tanh(h)
    torch.log_softmax(h, -1)[torch.arange(6), torch.tensor(actions)].sum().backward()
    np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-10)


def test_policy_sensitivity_of_an_agent():
    agent = ReinforceBaseline("CartPole-v1", seed=0)
    try:
        obs = np.random.default_rng(0).normal(scale=0.1, size=(10, 4)).astype(np.float32)
        out = policy_sensitivity(agent, obs)
        assert set(out) == {"log_prob", "value"}
        assert out["log_prob"].shape == out["value"].shape == (10, 4)
        greedy = agent.distribution(obs).mode()
        np.testing.assert_allclose(
            out["log_prob"],
            input_gradients(lambda s: agent.distribution(s).log_prob(greedy), obs), rtol=1e-6)
        np.testing.assert_allclose(out["value"], input_gradients(agent.value, obs), rtol=1e-6)
        # two actions: log pi(0|s) + ... the derivatives of log pi(0) and log pi(1) weigh
        # against each other by the probabilities: p0 dlogp0 + p1 dlogp1 = d(p0 + p1) = 0
        d0 = policy_sensitivity(agent, obs, actions=np.zeros(10, np.int64))["log_prob"]
        d1 = policy_sensitivity(agent, obs, actions=np.ones(10, np.int64))["log_prob"]
        p = agent.distribution(obs).probs
        np.testing.assert_allclose(p[:, :1] * d0 + p[:, 1:] * d1, 0, atol=1e-6)
    finally:
        agent.close()


def test_agent_without_a_value_function_and_a_continuous_policy():
    agent = Reinforce("tests.tiny_envs:SignalBox-v0", seed=0)
    try:
        obs = np.zeros((3, agent.spaces.obs_dim), np.float32)
        with pytest.raises(ValueError, match="give the actions for a continuous policy"):
            policy_sensitivity(agent, obs)
        out = policy_sensitivity(agent, obs, actions=np.ones((3, agent.spaces.action_dim)))
        assert set(out) == {"log_prob"} and out["log_prob"].shape == obs.shape
        assert np.abs(out["log_prob"]).sum() > 0
    finally:
        agent.close()


def test_a_function_that_ignores_its_input_has_zero_gradient():
    g = input_gradients(lambda x: Tensor(np.ones(2)), np.ones((2, 3)))
    np.testing.assert_array_equal(g, np.zeros((2, 3)))


@pytest.mark.parametrize("fn,obs,error,match", [
    (lambda x: x.sum(axis=1), np.ones(3), ValueError, "shape \\(B, obs_dim\\)"),
    (lambda x: x, np.ones((2, 3)), ValueError, "one value per row"),
    (lambda x: 1.0, np.ones((2, 3)), TypeError, "must return a Tensor"),
    (lambda x: x.sum(axis=1), np.array([["a", "b"]]), TypeError, "must hold numbers"),
])
def test_bad_input(fn, obs, error, match):
    with pytest.raises(error, match=match):
        input_gradients(fn, obs)


def test_policy_sensitivity_bad_input():
    with pytest.raises(TypeError, match="distribution"):
        policy_sensitivity(object(), np.zeros((2, 4)))
    agent = ReinforceBaseline("CartPole-v1", seed=0)
    try:
        with pytest.raises(ValueError, match="one entry per observation"):
            policy_sensitivity(agent, np.zeros((2, 4)), actions=np.zeros(3, np.int64))
    finally:
        agent.close()
