"""REINFORCE and REINFORCE with a baseline against an independent computation on fixed data.

``prepare`` is checked against returns written here episode by episode (an explicit discounted
sum, no recursion), the loss and its gradient against the same formula in torch on a float64
copy of the networks (:mod:`tests.oracles`), and the baseline's value fit against
``torch.optim.Adam`` on ``mean((V - G)^2)``. Learning tests cannot see a wrong baseline
(``G - 0.5 V`` learns too); these can.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import Reinforce, ReinforceBaseline
from rlgrad.rollout import Batch
from tests.oracles import Mirror, assert_close, assert_grads_match, mixed_vec, scramble

SIGNAL = "tests.tiny_envs:Signal-v0"
SIGNAL_BOX = "tests.tiny_envs:SignalBox-v0"
GAMMA = 0.9


def make(cls, env_id=SIGNAL, **kw):
    base = {"num_envs": 4, "hidden_sizes": (8,), "gamma": GAMMA, "steps_per_update": 24}
    return cls(env_id, cls.config_class(**{**base, **kw}), seed=3)


def hand_batch(agent) -> Batch:
    """A (6, 4) episode batch written by hand, every kind of end in it:

    env 0: terminated after step 2, then an episode cut by the time limit after step 5;
    env 1: truncated after step 1, then terminated and truncated at once after step 3 (terminated
    wins), idle for steps 4-5 (invalid: their rewards of 50 must reach nothing);
    env 2: one episode cut off by the batch's step cap after step 5;
    env 3: truncated after step 0, terminated after step 5.
    """
    rng = np.random.default_rng(11)
    T, N, sp = 6, 4, agent.spaces
    obs = rng.normal(size=(T, N, sp.obs_dim)).astype(np.float32)
    final_obs = np.concatenate([obs[1:], rng.normal(size=(1, N, sp.obs_dim))]).astype(np.float32)
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    valid = np.ones((T, N), bool)
    terminated[2, 0] = truncated[5, 0] = True
    truncated[1, 1] = terminated[3, 1] = truncated[3, 1] = True
    valid[4:, 1] = False
    truncated[5, 2] = True
    truncated[0, 3] = terminated[5, 3] = True
    ended = terminated | truncated
    # where an episode ended, final_obs is the true last observation, not the next (reset) one
    final_obs[ended] = rng.normal(size=(int(ended.sum()), sp.obs_dim)).astype(np.float32) + 3
    rewards = rng.uniform(-1, 2, size=(T, N))
    rewards[~valid] = 50.0
    if sp.discrete:
        actions = rng.integers(0, sp.action_dim, size=(T, N))
    else:
        actions = rng.normal(size=(T, N, sp.action_dim)).astype(np.float32)
    return Batch(obs, actions, rewards, terminated, truncated, final_obs, valid, episodes=[])


def collected_batch(agent) -> Batch:
    """An episode batch of :func:`tests.oracles.mixed_vec` with a budget of 10 steps and a
    cap of 14: terminations, a time-limit truncation, a cut by the cap, an idle environment."""
    batch = agent.collection.collect_episodes(agent.collect_step, 10, 14)
    ends = [batch.terminated & batch.valid, batch.truncated & ~batch.terminated & batch.valid]
    assert all(e.any() for e in ends) and not batch.valid.all()
    return batch


def naive_returns(batch: Batch, gamma: float, tail) -> np.ndarray:
    """G_t of every valid transition, flat in time-major order, episode by episode:

    G_t = sum_{j >= t} gamma^(j - t) r_j + gamma^(L - t) * (0 if terminated else tail(t_end, n)),

    the sum over the rest of the episode (L its end), ``tail`` the value of the final
    observation where the episode was cut off."""
    T, N = batch.rewards.shape
    G = np.full((T, N), np.nan)
    for n in range(N):
        episode: list[int] = []
        for t in range(T):
            if not batch.valid[t, n]:
                continue
            episode.append(t)
            if batch.terminated[t, n] or batch.truncated[t, n]:
                end = 0.0 if batch.terminated[t, n] else tail(t, n)
                r = [batch.rewards[s, n] for s in episode]
                for i, s in enumerate(episode):
                    G[s, n] = sum(gamma ** (j - i) * r[j] for j in range(i, len(r))) \
                        + gamma ** (len(r) - i) * end
                episode = []
        assert not episode, "an episode batch holds whole (or cut-off) episodes only"
    flat = G[batch.valid]
    assert np.isfinite(flat).all()
    return flat


def standardise(x: np.ndarray) -> np.ndarray:
    """As documented in rlgrad.returns.normalize: population std (ddof 0), eps 1e-8."""
    return (x - x.mean()) / (x.std(ddof=0) + 1e-8)


def expected_prepare(agent, batch: Batch, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """(returns, advantages) by the naive computation and the torch copy of V."""
    mirror = Mirror(agent.modules())
    if isinstance(agent, ReinforceBaseline):
        v_final = mirror.value_np(batch.final_obs.reshape(-1, agent.spaces.obs_dim))
        v_final = v_final.reshape(batch.rewards.shape)
        G = naive_returns(batch, GAMMA, lambda t, n: v_final[t, n])
        adv = G - mirror.value_np(batch.obs[batch.valid])
    else:
        G = naive_returns(batch, GAMMA, lambda t, n: 0.0)
        adv = G
    return G, standardise(adv) if normalize else adv


def build(cls, source, normalize, env_id=SIGNAL, **kw):
    """An agent with scrambled parameters and a batch: hand-written or collected."""
    env = mixed_vec() if source == "collected" else env_id
    agent = make(cls, env, normalize_advantages=normalize, **kw)
    scramble(agent)
    return agent, collected_batch(agent) if source == "collected" else hand_batch(agent)


# ---- prepare: returns and advantages ----------------------------------------------------------


@pytest.mark.parametrize("cls", [Reinforce, ReinforceBaseline])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("source", ["hand", "collected"])
def test_prepare_equals_per_episode_returns(cls, normalize, source):
    agent, batch = build(cls, source, normalize)
    agent.prepare(batch)
    G, adv = expected_prepare(agent, batch, normalize)
    assert_close(batch.data["returns"], G, 1e-5, "returns")
    assert_close(batch.data["advantages"], adv, 1e-5, "advantages")
    agent.close()


def test_idle_steps_reach_no_return():
    agent, batch = build(ReinforceBaseline, "hand", False)
    agent.prepare(batch)
    rewards = batch.rewards.copy()
    rewards[~batch.valid] = -1e3
    other = Batch(batch.obs, batch.actions, rewards, batch.terminated, batch.truncated,
                  batch.final_obs, batch.valid, episodes=[])
    agent.prepare(other)
    np.testing.assert_array_equal(other.data["returns"], batch.data["returns"])


# ---- the loss and its gradient --------------------------------------------------------------


def torch_policy_loss(agent, mb, adv, ent_coef):
    """-(log pi(a|s) * A).mean() - c_H * H.mean(), in torch."""
    mirror = Mirror(agent.modules())
    dist = mirror.dist(mb.obs)
    actions = torch.as_tensor(np.asarray(mb.actions, dtype=np.float64))
    logp = dist.log_prob(actions.long() if agent.spaces.discrete else actions)
    terms = logp * torch.as_tensor(adv)
    policy_loss = -terms.mean()
    entropy = dist.entropy().mean()
    loss = policy_loss - ent_coef * entropy
    loss.backward()
    # the loss is a mean of terms of both signs: compare it at the scale of the terms
    scale = float(terms.detach().abs().mean()) + ent_coef * float(entropy.detach().abs())
    return mirror, loss, policy_loss, entropy, scale


@pytest.mark.parametrize("cls", [Reinforce, ReinforceBaseline])
@pytest.mark.parametrize("env_id", [SIGNAL, SIGNAL_BOX])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("ent_coef", [0.0, 0.3])
def test_loss_value_and_gradient_equal_torch(cls, env_id, normalize, ent_coef):
    agent, batch = build(cls, "hand", normalize, env_id, ent_coef=ent_coef)
    agent.prepare(batch)
    _, adv = expected_prepare(agent, batch, normalize)
    mb = next(batch.minibatches(0, 1, agent.rng))
    loss, metrics = agent.loss(mb)
    loss.backward()
    mirror, t_loss, t_pg, t_ent, scale = torch_policy_loss(agent, mb, adv, ent_coef)
    assert_close(loss.item(), t_loss.item(), 1e-5, "loss", scale)
    assert_close(metrics["policy_loss"], t_pg.item(), 1e-5, "policy_loss", scale)
    assert_close(metrics["entropy"], t_ent.item(), 1e-5, "entropy")
    assert_grads_match({"policy": agent.policy}, _only(mirror, "policy."))
    if cls is ReinforceBaseline:  # the baseline is a constant of the policy loss
        assert all(p.grad is None for p in agent.value.parameters())


@pytest.mark.parametrize("cls", [Reinforce, ReinforceBaseline])
def test_minibatch_loss_uses_the_batch_advantages_of_its_transitions(cls):
    agent, batch = build(cls, "hand", True)
    agent.prepare(batch)
    _, adv = expected_prepare(agent, batch, True)
    batch.data["index"] = np.arange(batch.size)
    mb = next(batch.minibatches(7, 1, np.random.default_rng(0)))
    assert mb.size == 7
    loss, _ = agent.loss(mb)
    loss.backward()
    mirror, t_loss, _, _, scale = torch_policy_loss(agent, mb, adv[mb.index], 0.0)
    assert_close(loss.item(), t_loss.item(), 1e-5, "loss", scale)
    assert_grads_match({"policy": agent.policy}, _only(mirror, "policy."))


def _only(mirror: Mirror, prefix: str) -> Mirror:
    mirror.params = {k: v for k, v in mirror.params.items() if k.startswith(prefix)}
    return mirror


# ---- the baseline's value fit ----------------------------------------------------------------


@pytest.mark.parametrize("source", ["hand", "collected"])
def test_value_fit_is_adam_on_the_squared_error_to_the_returns(source):
    steps = 3
    agent, batch = build(ReinforceBaseline, source, True, value_steps=steps, value_lr=0.05)
    agent.prepare(batch)
    G, _ = expected_prepare(agent, batch, True)
    mirror = _only(Mirror(agent.modules()), "value.")
    v_before = mirror.value_np(batch.obs[batch.valid])
    policy_before = {k: v.copy() for k, v in agent.policy.state_dict().items()}

    metrics = agent.after_update(batch)

    adam = torch.optim.Adam(list(mirror.params.values()), lr=0.05)
    obs = batch.obs[batch.valid]
    for _ in range(steps):
        adam.zero_grad()
        last_loss = ((mirror.value(obs) - torch.as_tensor(G)) ** 2).mean()
        last_loss.backward()
        last_grads = mirror.grads()
        adam.step()
    for name, p in agent.value.named_parameters():
        key = f"value.{name}"
        assert_close(p.grad, last_grads[key], 1e-4, f"last gradient of {key}")
        assert_close(p.data, mirror.params[key].detach().numpy(), 1e-4, key)
    assert_close(metrics["value_loss"], last_loss.item(), 1e-5, "value_loss")
    ev = 1 - np.var(G - v_before) / np.var(G)
    assert_close(metrics["explained_variance"], ev, 1e-5, "explained_variance")
    # the policy's optimizer had no gradient in these steps: the policy did not move
    for k, v in agent.policy.state_dict().items():
        np.testing.assert_array_equal(v, policy_before[k], err_msg=k)

