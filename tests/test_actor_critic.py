"""A2C and PPO against independent computations: GAE on collected rollouts, the losses and their
gradients against torch on fixed data, PPO's diagnostics and early stop, learning, bad options,
checkpoints of normalised agents and determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import A2C, PPO
from rlgrad.rollout import Minibatch
from tests.oracles import Mirror, assert_close, assert_grads_match, mixed_vec, scramble

SIGNAL = "tests.tiny_envs:Signal-v0"
SIGNAL_BOX = "tests.tiny_envs:SignalBox-v0"
GAMMA = 0.9


def small(cls, env=SIGNAL, seed=0, **kw):
    base = {"num_envs": 2, "num_steps": 8, "hidden_sizes": (8,), "gamma": GAMMA}
    if cls is PPO:
        base["minibatch_size"] = 16
    return cls(env, cls.config_class(**{**base, **kw}), seed=seed)


def params_of(agent) -> dict[str, np.ndarray]:
    arrays, _ = agent.state_dict()
    return arrays


# ---- prepare: GAE on a collected rollout ------------------------------------------------------


def naive_gae(batch, values, v_final, v_next, gamma, lam):
    """GAE written per environment and per segment of the rollout:

    delta_t = r_t + gamma V' - V(s_t), with V' = 0 after a termination, V(final obs) after a
    truncation, V(s_T) (the observation the next rollout starts from) after the last step and
    V(s_{t+1}) otherwise; A_t = sum_{k=t}^{e} (gamma lam)^(k - t) delta_k, e the end of t's
    segment (a termination, a truncation or the last step)."""
    T, N = batch.rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        delta, segment = {}, []
        for t in range(T):
            if batch.terminated[t, n]:
                after = 0.0
            elif batch.truncated[t, n]:
                after = v_final[t, n]
            elif t == T - 1:
                after = v_next[n]
            else:
                after = values[t + 1, n]
            delta[t] = batch.rewards[t, n] + gamma * after - values[t, n]
            segment.append(t)
            if batch.terminated[t, n] or batch.truncated[t, n] or t == T - 1:
                for s in segment:
                    adv[s, n] = sum((gamma * lam) ** (k - s) * delta[k]
                                    for k in range(s, segment[-1] + 1))
                segment = []
    return adv


def second_rollout(agent):
    """The agent's second rollout (it starts mid-episode) and the observation after it."""
    agent.collection.collect(agent.collect_step, 10**6)
    batch = agent.collection.collect(agent.collect_step, 10**6)
    return batch, agent.collection.obs


@pytest.mark.parametrize("cls", [PPO, A2C])
@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0])
def test_prepare_equals_a_naive_gae_per_environment(cls, lam):
    agent = small(cls, mixed_vec(), num_envs=4, num_steps=7, gae_lambda=lam, minibatch_size=7)
    scramble(agent)
    batch, next_obs = second_rollout(agent)
    T, N = batch.rewards.shape
    last = np.zeros((T, N), bool)
    last[-1] = True
    # the rollout holds every kind of end: terminated, truncated only, both, cut by its end
    assert (batch.terminated & ~batch.truncated).any()
    assert (batch.truncated & ~batch.terminated).any()
    assert (batch.truncated & batch.terminated).any()
    assert (last & ~batch.terminated & ~batch.truncated).any()

    mirror = Mirror(agent.modules())
    values = mirror.value_np(batch.obs.reshape(T * N, -1)).reshape(T, N)
    v_final = mirror.value_np(batch.final_obs.reshape(T * N, -1)).reshape(T, N)
    v_next = mirror.value_np(next_obs)
    with torch.no_grad():
        logp = mirror.dist(batch.obs.reshape(T * N, -1)).log_prob(
            torch.as_tensor(batch.actions.reshape(-1))).numpy().reshape(T, N)
    # what was recorded during collection: V(s_t) and log pi(a_t|s_t)
    assert_close(batch.extras["value"], values, 1e-5, "recorded values")
    assert_close(batch.extras["log_prob"], logp, 1e-5, "recorded log-probabilities")

    agent.prepare(batch)
    adv = naive_gae(batch, values, v_final, v_next, GAMMA, lam)
    assert_close(batch.data["advantages"], adv.reshape(-1), 1e-5, "advantages")
    assert_close(batch.data["returns"], (adv + values).reshape(-1), 1e-5, "returns")
    assert_close(batch.data["value_targets"], (adv + values).reshape(-1), 1e-5, "targets")
    assert_close(batch.data["old_values"], values.reshape(-1), 1e-5, "old values")


def test_normalize_value_learns_on_standardised_targets():
    agent = small(PPO, mixed_vec(), num_envs=4, num_steps=7, gae_lambda=0.8, minibatch_size=7,
                  normalize_value=True)
    scramble(agent)
    first, _ = second_rollout(agent)
    agent.prepare(first)  # the statistics now hold the first batch's returns
    R1 = first.data["returns"]
    mu1, var1 = _pooled(R1)
    sigma1 = math.sqrt(var1 + 1e-8)
    batch = agent.collection.collect(agent.collect_step, 10**6)
    next_obs = agent.collection.obs
    T, N = batch.rewards.shape
    mirror = Mirror(agent.modules())

    def v(obs):  # V in the returns' scale: the network's standardised output, scaled back
        return mirror.value_np(obs.reshape(-1, obs.shape[-1])) * sigma1 + mu1

    values = v(batch.obs).reshape(T, N)
    assert_close(batch.extras["value"], values, 1e-5, "recorded values")
    agent.prepare(batch)
    adv = naive_gae(batch, values, v(batch.final_obs).reshape(T, N), v(next_obs), GAMMA, 0.8)
    returns = (adv + values).reshape(-1)
    assert_close(batch.data["returns"], returns, 1e-5, "returns")
    mu, var = _pooled(np.concatenate([R1, batch.data["returns"]]))
    sigma = math.sqrt(var + 1e-8)
    assert_close(batch.data["value_targets"], (returns - mu) / sigma, 1e-5, "value targets")
    assert_close(batch.data["old_values"], (values.reshape(-1) - mu) / sigma, 1e-5, "old values")


def _pooled(x, eps=1e-4):
    """Mean and variance of ``x`` pooled with RunningMeanStd's pseudo-sample (mean 0, var 1,
    weight eps)."""
    mu = x.sum() / (len(x) + eps)
    var = (eps * (1 + mu**2) + np.sum((x - mu) ** 2)) / (len(x) + eps)
    return mu, var


# ---- PPO's loss on fixed data -------------------------------------------------------------------

RATIOS = np.array([0.55, 0.7, 0.9, 1.0, 1.12, 1.35, 1.7, 2.2])  # clip_coef 0.2: both sides
VALUE_SHIFTS = np.array([-0.6, -0.35, -0.1, 0.1, 0.35, 0.6])


def fixed_minibatch(agent, mirror, seed=0):
    """16 transitions: ratios pi/pi_old of RATIOS, each with a positive and a negative
    advantage (mean 0, so standardising keeps the signs); old values off by VALUE_SHIFTS."""
    rng = np.random.default_rng(seed)
    sp, B = agent.spaces, 2 * len(RATIOS)
    obs = rng.normal(size=(B, sp.obs_dim)).astype(np.float32)
    if sp.discrete:
        actions = rng.integers(0, sp.action_dim, size=B)
    else:
        actions = rng.normal(size=(B, sp.action_dim)).astype(np.float32)
    with torch.no_grad():
        logp = mirror.dist(obs).log_prob(_actions(actions)).numpy()
        values = mirror.value(obs).numpy()
    ratio = np.repeat(RATIOS, 2)
    a = rng.uniform(0.5, 2.0, size=len(RATIOS))
    adv = np.stack([a, -a], axis=1).reshape(-1)
    return Minibatch({
        "obs": obs, "actions": actions,
        "log_prob": (logp - np.log(ratio)).astype(np.float32),
        "advantages": adv,
        "old_values": values + np.resize(VALUE_SHIFTS, B),
        "value_targets": values + rng.normal(scale=0.8, size=B),
    }, 0, True)


def _actions(actions):
    a = torch.as_tensor(np.asarray(actions))
    return a.long() if a.dtype in (torch.int32, torch.int64) else a.double()


def torch_ppo_loss(mirror, mb, c):
    """CleanRL's ppo.py loss and diagnostics, in torch."""
    dist = mirror.dist(mb.obs)
    newlogprob = dist.log_prob(_actions(mb.actions))
    newvalue = mirror.value(mb.obs)
    logratio = newlogprob - torch.as_tensor(mb.log_prob, dtype=torch.float64)
    ratio = logratio.exp()
    adv = torch.as_tensor(mb.advantages)
    if c.normalize_advantages:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # torch's std: unbiased
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * torch.clamp(ratio, 1 - c.clip_coef, 1 + c.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    returns = torch.as_tensor(mb.value_targets)
    old = torch.as_tensor(mb.old_values)
    v_loss_unclipped = (newvalue - returns) ** 2
    if c.clip_vloss:
        v_clipped = old + torch.clamp(newvalue - old, -c.clip_coef, c.clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    else:
        v_loss = 0.5 * v_loss_unclipped.mean()
    entropy = dist.entropy().mean()
    loss = pg_loss - c.ent_coef * entropy + c.vf_coef * v_loss
    loss.backward()
    with torch.no_grad():
        r, lr, a = ratio.numpy(), logratio.numpy(), adv.numpy()
        above, below = r > 1 + c.clip_coef, r < 1 - c.clip_coef
        cover = {
            "pg": [above & (a > 0), above & (a < 0), below & (a > 0), below & (a < 0),
                   np.abs(r - 1) < c.clip_coef],
            "v": [(v_loss_clipped > v_loss_unclipped).numpy(),
                  (v_loss_clipped < v_loss_unclipped).numpy()] if c.clip_vloss else [],
        }
        metrics = {"policy_loss": pg_loss.item(), "value_loss": v_loss.item(),
                   "entropy": entropy.item(), "approx_kl": float(np.mean((r - 1) - lr)),
                   "old_approx_kl": float(np.mean(-lr)),
                   "clipfrac": float(np.mean(np.abs(r - 1) > c.clip_coef))}
    return loss.item(), metrics, cover


@pytest.mark.parametrize("env_id", [SIGNAL, SIGNAL_BOX])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("clip_vloss", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_ppo_loss_and_gradient_equal_torch(env_id, shared, clip_vloss, normalize):
    agent = small(PPO, env_id, shared_network=shared, clip_vloss=clip_vloss,
                  normalize_advantages=normalize, ent_coef=0.1, vf_coef=0.7)
    scramble(agent)
    mirror = Mirror(agent.modules())
    mb = fixed_minibatch(agent, mirror)
    loss, metrics = agent.loss(mb)
    loss.backward()
    t_loss, t_metrics, cover = torch_ppo_loss(mirror, mb, agent.config)
    # the data reach every branch: ratios clipped above and below with advantages of both
    # signs, ratios inside the range, and (clip_vloss) either term of the value maximum
    assert all(m.any() for m in cover["pg"] + cover["v"])
    assert_close(loss.item(), t_loss, 1e-5, "loss", scale=1.0)
    for k, v in t_metrics.items():
        assert_close(metrics[k], v, 1e-4, k, scale=1e-2 if "kl" in k else 1.0)
    assert metrics["clipfrac"] == t_metrics["clipfrac"] == 10 / 16
    assert_grads_match(agent.modules(), mirror)


def test_ppo_kl_estimators_are_the_direct_formulas():
    """approx_kl = mean((rho - 1) - log rho), old_approx_kl = mean(-log rho), clipfrac =
    fraction of |rho - 1| > epsilon, from the ratios the data were built with."""
    agent = small(PPO, clip_coef=0.4)
    scramble(agent)
    mb = fixed_minibatch(agent, Mirror(agent.modules()))
    _, metrics = agent.loss(mb)
    rho = np.repeat(RATIOS, 2)
    assert_close(metrics["approx_kl"], np.mean(rho - 1 - np.log(rho)), 1e-4)
    assert_close(metrics["old_approx_kl"], np.mean(-np.log(rho)), 1e-4)
    assert metrics["clipfrac"] == np.mean(np.abs(rho - 1) > 0.4) == 6 / 16


# ---- A2C's loss on fixed data -------------------------------------------------------------------


@pytest.mark.parametrize("env_id", [SIGNAL, SIGNAL_BOX])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_a2c_loss_and_gradient_equal_torch(env_id, shared, normalize):
    agent = small(A2C, env_id, shared_network=shared, normalize_advantages=normalize,
                  ent_coef=0.1, vf_coef=0.7)
    scramble(agent)
    mirror = Mirror(agent.modules())
    mb = fixed_minibatch(agent, mirror, seed=1)
    mb._arrays["advantages"] = np.random.default_rng(2).normal(0.5, 1.5, size=mb.size)
    loss, metrics = agent.loss(mb)
    loss.backward()

    dist = mirror.dist(mb.obs)
    logp = dist.log_prob(_actions(mb.actions))
    adv = torch.as_tensor(mb.advantages)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = -(logp * adv).mean()
    value_loss = ((mirror.value(mb.obs) - torch.as_tensor(mb.value_targets)) ** 2).mean()
    entropy = dist.entropy().mean()
    t_loss = policy_loss + 0.7 * value_loss - 0.1 * entropy
    t_loss.backward()
    assert_close(loss.item(), t_loss.item(), 1e-5, "loss", scale=1.0)
    assert_close(metrics["policy_loss"], policy_loss.item(), 1e-5, "policy_loss", scale=1.0)
    assert_close(metrics["value_loss"], value_loss.item(), 1e-5, "value_loss")
    assert_close(metrics["entropy"], entropy.item(), 1e-5, "entropy")
    assert_grads_match(agent.modules(), mirror)


# ---- the update loop ----------------------------------------------------------------------------


@pytest.mark.parametrize("target_kl,steps", [(None, 12), (1e6, 12), (1e-7, 3)])
def test_target_kl_stops_after_the_epoch_that_exceeds_it(target_kl, steps):
    agent = small(PPO, num_steps=12, minibatch_size=8, update_epochs=4, lr=0.05,
                  lr_schedule="constant", target_kl=target_kl)
    batch = agent.collection.collect(agent.collect_step, 10**6)
    agent.prepare(batch)
    taken, step = [], agent.gradient_step

    def counted(loss, *args, **kw):
        taken.append(loss)
        return step(loss, *args, **kw)

    agent.gradient_step = counted
    metrics = agent.update(batch)
    assert len(taken) == steps  # 24 transitions, mini-batches of 8: 3 steps per epoch
    if target_kl == 1e-7:
        assert metrics["approx_kl"] > 0


@pytest.mark.parametrize("cls", [PPO, A2C])
def test_shared_network_trains_trunk_and_both_heads(cls):
    agent = small(cls, shared_network=True)
    before = params_of(agent)
    assert {k for k in before if not k.startswith("optim.")} >= {
        "net.trunk.0.weight", "net.policy_head.weight", "net.value_head.weight"}
    agent.learn(16)  # one rollout, one update
    after = params_of(agent)
    for k in ("net.trunk.0.weight", "net.trunk.0.bias", "net.policy_head.weight",
              "net.policy_head.bias", "net.value_head.weight", "net.value_head.bias"):
        assert not np.array_equal(before[k], after[k]), k


@pytest.mark.parametrize("cls,kw", [
    (PPO, {"lr": 3e-3, "num_envs": 4, "num_steps": 64, "minibatch_size": 64,
           "update_epochs": 4, "lr_schedule": "constant"}),
    (A2C, {"lr": 3e-3, "num_envs": 4, "num_steps": 8}),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_learns_the_signal_environment(cls, kw, seed):
    agent = small(cls, seed=seed, hidden_sizes=(16,), gamma=0.99, **kw)
    before = agent.evaluate(16).mean()
    agent.learn(3000)
    after = agent.evaluate(16).mean()
    agent.close()
    # random play earns about 4, reading the cue 8
    assert after > 7.5 and after > before + 1.0, (before, after)


# ---- bad options ------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("cls,options,error,name", [
    (PPO, {"clip_coef": 0.0}, ValueError, "clip_coef"),
    (PPO, {"clip_coef": -0.2}, ValueError, "clip_coef"),
    (PPO, {"gae_lambda": -0.1}, ValueError, "gae_lambda"),
    (PPO, {"gae_lambda": 1.01}, ValueError, "gae_lambda"),
    (A2C, {"gae_lambda": 1.5}, ValueError, "gae_lambda"),
    (PPO, {"minibatch_size": 17}, ValueError, "minibatch_size"),  # rollout is 2 x 8
    (A2C, {"minibatch_size": 17}, ValueError, "minibatch_size"),
    (PPO, {"target_kl": 0.0}, ValueError, "target_kl"),
    (PPO, {"target_kl": -0.01}, ValueError, "target_kl"),
    (PPO, {"target_kl": NAN}, ValueError, "target_kl"),
    (PPO, {"lr": NAN}, ValueError, "lr"),
    (PPO, {"clip_coef": INF}, ValueError, "clip_coef"),
    (PPO, {"vf_coef": INF}, ValueError, "vf_coef"),
    (A2C, {"ent_coef": NAN}, ValueError, "ent_coef"),
    (A2C, {"gamma": NAN}, ValueError, "gamma"),
    (PPO, {"hidden_sizes": "64"}, TypeError, "hidden_sizes"),
    (A2C, {"hidden_sizes": (2.7,)}, TypeError, "hidden_sizes"),
    (PPO, {"hidden_sizes": (True,)}, TypeError, "hidden_sizes"),
    (PPO, {"hidden_sizes": (0,)}, ValueError, "hidden_sizes"),
    (PPO, {"num_steps": True}, TypeError, "num_steps"),
    (PPO, {"update_epochs": 0}, ValueError, "update_epochs"),
    (PPO, {"clip_vloss": "yes"}, TypeError, "clip_vloss"),
    (A2C, {"shared_network": 1}, TypeError, "shared_network"),
])
@pytest.mark.parametrize("via", ["options", "config"])
def test_bad_options_are_one_line_errors_at_construction(cls, options, error, name, via):
    base = {"num_envs": 2, "num_steps": 8, "hidden_sizes": (8,)}
    if cls is PPO:
        base["minibatch_size"] = 8
    with pytest.raises(error, match=name) as e:
        if via == "options":
            cls(SIGNAL, **{**base, **options})
        else:
            cls(SIGNAL, cls.config_class(**{**base, **options}))
    assert "\n" not in str(e.value)


# ---- checkpoints and determinism --------------------------------------------------------------


def test_checkpoint_of_a_normalised_ppo_keeps_its_statistics_exactly(tmp_path):
    kw = {"num_envs": 2, "num_steps": 256, "minibatch_size": 256, "update_epochs": 2,
          "hidden_sizes": (16,), "normalize_obs": True, "normalize_reward": True}
    agent = PPO("Pendulum-v1", seed=0, **kw)
    agent.learn(2048)
    arrays, meta = agent.state_dict()
    stats = {k: v.copy() for k, v in arrays.items() if k.startswith("normalizer.")}
    assert {"normalizer.obs.count", "normalizer.reward.returns"} <= stats.keys()
    assert stats["normalizer.obs.count"] > 2048
    returns = agent.evaluate(3, seed=7)

    fresh = PPO("Pendulum-v1", seed=5, **kw)
    assert not np.array_equal(fresh.evaluate(3, seed=7), returns)  # the test can fail
    fresh.load_state_dict(arrays, meta)
    agent.save(tmp_path / "ckpt")
    loaded = PPO.load(tmp_path / "ckpt")
    for other in (fresh, loaded):
        rms, scaler = other.obs_normalizer.obs_rms, other.reward_scaler
        for key, value in (("obs.mean", rms.mean), ("obs.var", rms.var),
                           ("obs.count", rms.count), ("reward.mean", scaler.ret_rms.mean),
                           ("reward.var", scaler.ret_rms.var),
                           ("reward.count", scaler.ret_rms.count),
                           ("reward.returns", scaler.returns)):
            np.testing.assert_array_equal(value, stats[f"normalizer.{key}"], err_msg=key)
        np.testing.assert_array_equal(other.evaluate(3, seed=7), returns)
    # evaluating froze the statistics: they are those of the end of training still
    for k, v in agent.state_dict()[0].items():
        if k.startswith("normalizer."):
            np.testing.assert_array_equal(v, stats[k], err_msg=k)


@pytest.mark.parametrize("key,change,match", [
    ("normalizer.obs.var", lambda v: np.full_like(v, -1.0), "var >= 0"),
    ("normalizer.reward.count", lambda v: np.full_like(v, -1.0), "count >= 0"),
    ("normalizer.obs.mean", lambda v: v.astype(np.float32), "float64"),
    ("normalizer.value.var", lambda v: np.full_like(v, -1.0), "var >= 0"),
])
def test_bad_normaliser_statistics_leave_the_agent_untouched(key, change, match):
    """The statistics are checked with the rest, before anything is assigned."""
    kw = {"num_envs": 2, "num_steps": 8, "minibatch_size": 8, "hidden_sizes": (8,),
          "normalize_obs": True, "normalize_reward": True, "normalize_value": True}
    agent = PPO(SIGNAL_BOX, seed=0, **kw)
    agent.learn(32)
    arrays, meta = agent.state_dict()
    other = PPO(SIGNAL_BOX, seed=1, **kw)
    before = params_of(other)
    arrays[key] = change(arrays[key])
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(arrays, meta)
    after = params_of(other)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


@pytest.mark.parametrize("cls", [PPO, A2C])
def test_same_seed_gives_bit_identical_parameters(cls):
    def run(seed):
        agent = small(cls, seed=seed, **({"minibatch_size": 8} if cls is PPO else {}))
        agent.learn(480)
        return params_of(agent)

    a, b, c = run(4), run(4), run(5)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(not np.array_equal(a[k], c[k]) for k in a if not k.startswith("optim."))
