"""NPG and TRPO: the natural-gradient step against a dense solve, the line search, the surrogate
and the KL against torch, learning, and bad options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import AGENTS, NPG, TRPO
from agents.npg import NPGConfig
from agents.trpo import TRPOConfig
from rlgrad.distributions import Categorical, Normal
from rlgrad.envs import NonFiniteError
from rlgrad.tensor import Tensor

SIGNAL = "tests.tiny_envs:Signal-v0"
SIGNAL_BOX = "tests.tiny_envs:SignalBox-v0"



@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: on a loaded machine torch's intra-op threads spin, and a tiny graph's
    backward pass took a quarter of a second with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


METRICS = ("approx_kl", "cg_residual", "cg_iterations", "line_search_steps", "step_size",
           "surrogate_improvement", "line_search_rejected", "policy_loss", "value_loss",
           "explained_variance", "entropy")


def tiny(cls, **kw):
    base = {"num_envs": 2, "num_steps": 64, "hidden_sizes": (8,), "normalize_reward": False}
    return cls.config_class(**{**base, **kw})


def flat_params(agent) -> np.ndarray:
    return np.concatenate([p.data.astype(np.float64).ravel() for p in agent.policy.parameters()])


def collected(agent):
    """One rollout of the agent's collector, prepared (advantages, value targets)."""
    batch = agent.collection.collect(agent.collect_step, 10**9)
    agent.prepare(batch)
    return batch


# ---- an independent policy in torch --------------------------------------------------------


def torch_dist(agent, obs: np.ndarray, theta: torch.Tensor):
    """The agent's policy at flat parameters ``theta`` (float64), rebuilt in torch."""
    params, start = {}, 0
    for name, p in agent.policy.named_parameters():
        params[name] = theta[start:start + p.data.size].reshape(p.shape)
        start += p.data.size
    layers = sorted({int(n.split(".")[1]) for n in params if n.startswith("net.")})
    h = torch.as_tensor(np.array(obs), dtype=torch.float64)
    for i, k in enumerate(layers):
        h = h @ params[f"net.{k}.weight"].T + params[f"net.{k}.bias"]
        if i < len(layers) - 1:
            h = torch.tanh(h)
    if agent.spaces.discrete:
        return torch.distributions.Categorical(logits=h)
    std = params["log_std"].clamp(-20.0, 2.0).exp().expand_as(h)
    return torch.distributions.Independent(torch.distributions.Normal(h, std), 1)


def torch_problem(agent, batch, k: int = 1):
    """(surrogate L(theta), mean KL(pi_old || pi_theta), theta_old) on the batch's every k-th
    transition, the advantages standardised with torch (unbiased std, as sb3)."""
    obs = batch.flat(batch.obs)[::k]
    actions = torch.as_tensor(np.array(batch.flat(batch.actions)[::k]))
    old_logp = torch.as_tensor(np.array(batch.flat(batch.extras["log_prob"])[::k]),
                               dtype=torch.float64)
    adv = torch.as_tensor(np.array(batch.data["advantages"][::k]), dtype=torch.float64)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    theta_old = torch.as_tensor(flat_params(agent))

    def surrogate(theta):
        return (torch.exp(torch_dist(agent, obs, theta).log_prob(actions) - old_logp) * adv).mean()

    def kl(theta):
        old = torch_dist(agent, obs, theta_old)  # anew each call: torch caches derived values
        return torch.distributions.kl_divergence(old, torch_dist(agent, obs, theta)).mean()

    return surrogate, kl, theta_old


# ---- the natural-gradient step -------------------------------------------------------------


@pytest.mark.parametrize("env_id,k", [(SIGNAL, 1), (SIGNAL_BOX, 1), (SIGNAL, 3)])
def test_natural_gradient_step_is_the_dense_solution(env_id, k):
    """theta - theta_old = sqrt(2 delta / g^T x) x with x = (F + lambda I)^-1 g, F the dense
    Hessian of the mean KL and g the surrogate's gradient, both by torch."""
    agent = NPG(env_id, tiny(NPG, cg_iterations=100, max_kl=0.02, sub_sampling_factor=k),
                seed=1)
    batch = collected(agent)
    surrogate, kl, theta_old = torch_problem(agent, batch, k)
    g = torch.autograd.functional.jacobian(surrogate, theta_old).numpy()
    fisher = torch.autograd.functional.hessian(kl, theta_old).numpy()
    assert np.linalg.eigvalsh(fisher).max() > 1e-2  # F is not negligible next to the damping
    x = np.linalg.solve(fisher + 0.1 * np.eye(len(g)), g)
    expected = math.sqrt(2 * 0.02 / (g @ x)) * x

    metrics = agent.update(batch)
    step = flat_params(agent) - theta_old.numpy()
    assert np.linalg.norm(step - expected) <= 2e-3 * np.linalg.norm(expected)
    assert metrics["line_search_rejected"] == 0.0
    assert metrics["step_size"] == pytest.approx(math.sqrt(2 * 0.02 / (g @ x)), rel=2e-3)
    assert metrics["cg_residual"] < 1e-4 * np.linalg.norm(g)
    assert metrics["cg_iterations"] <= len(g)
    # the step's KL and surrogate gain as torch measures them
    theta = torch.as_tensor(flat_params(agent))
    assert metrics["approx_kl"] == pytest.approx(kl(theta).item(), rel=1e-3)
    gain = (surrogate(theta) - surrogate(theta_old)).item()
    assert metrics["surrogate_improvement"] == pytest.approx(gain, rel=1e-3)


def test_the_cg_iteration_budget_is_respected_and_reported():
    agent = NPG(SIGNAL, tiny(NPG, cg_iterations=2, cg_damping=1e-3), seed=1)
    metrics = agent.update(collected(agent))
    assert metrics["cg_iterations"] == 2.0
    assert metrics["cg_residual"] > 0


# ---- the line search ------------------------------------------------------------------------


def violating_step():
    """(NPG, TRPO) agents with the same parameters, a prepared batch and a max_kl that the
    full natural-gradient step exceeds (a Gaussian policy's true KL grows faster than its
    quadratic model)."""
    max_kl = 0.3
    npg = NPG(SIGNAL_BOX, tiny(NPG, max_kl=max_kl), seed=0)
    batch = collected(npg)
    trpo = TRPO(SIGNAL_BOX, tiny(TRPO, max_kl=max_kl), seed=0)
    np.testing.assert_array_equal(flat_params(npg), flat_params(trpo))
    return npg, trpo, batch, max_kl


def test_a_step_that_exceeds_max_kl_is_shrunk():
    npg, trpo, batch, max_kl = violating_step()
    surrogate, kl, theta_old = torch_problem(trpo, batch)
    full = npg.update(batch)
    full_step = flat_params(npg) - theta_old.numpy()
    assert full["approx_kl"] > max_kl  # the premise: NPG's full step violates the bound

    metrics = trpo.update(batch)
    n = int(metrics["line_search_steps"])
    assert n > 0 and metrics["line_search_rejected"] == 0.0
    # the accepted step is shrink^n times the full one, inside the bound, and improves L
    np.testing.assert_allclose(flat_params(trpo) - theta_old.numpy(), 0.8 ** n * full_step,
                               rtol=1e-4, atol=1e-6)
    theta = torch.as_tensor(flat_params(trpo))
    assert kl(theta).item() <= max_kl
    assert metrics["approx_kl"] == pytest.approx(kl(theta).item(), rel=1e-3)
    assert (surrogate(theta) - surrogate(theta_old)).item() > 0
    assert metrics["step_size"] == pytest.approx(0.8 ** n * full["step_size"], rel=1e-6)
    # and the fraction before it fails the test
    previous = theta_old + torch.as_tensor(0.8 ** (n - 1) * full_step)
    assert kl(previous).item() > max_kl or surrogate(previous) <= surrogate(theta_old)


def test_a_line_search_that_finds_nothing_keeps_the_policy_and_says_so():
    npg, _, batch, max_kl = violating_step()
    trpo = TRPO(SIGNAL_BOX, tiny(TRPO, max_kl=max_kl, line_search_steps=1), seed=0)
    before = [p.data.copy() for p in trpo.policy.parameters()]
    value_before = [p.data.copy() for p in trpo.value.parameters()]
    metrics = trpo.update(batch)
    assert metrics["line_search_rejected"] == 1.0
    assert metrics["line_search_steps"] == 1.0
    assert metrics["approx_kl"] == metrics["step_size"] == 0.0
    assert metrics["surrogate_improvement"] == 0.0
    for p, b in zip(trpo.policy.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    # the value function is fitted all the same
    assert any(not np.array_equal(p.data, b) for p, b in zip(trpo.value.parameters(),
                                                           value_before))


@pytest.mark.parametrize("cls,bound", [(TRPO, 1.0), (NPG, 1.5)])
def test_every_step_of_a_short_run_stays_near_max_kl(cls, bound):
    """The mean KL of each update's step, measured by torch, <= bound * max_kl (TRPO by its
    line search; NPG because the damped quadratic model is at delta and the KL is nearly
    quadratic at this size)."""
    agent = cls(SIGNAL, tiny(cls, num_envs=4, num_steps=128, max_kl=0.02), seed=2)
    kls = []
    update = agent.update

    def measured(batch):
        _, kl, _ = torch_problem(agent, batch)
        metrics = update(batch)
        kls.append((kl(torch.as_tensor(flat_params(agent))).item(), metrics))
        return metrics

    agent.update = measured
    agent.learn(5_000)
    assert len(kls) >= 9
    for kl, metrics in kls:
        assert kl <= bound * 0.02
        assert metrics["approx_kl"] == pytest.approx(kl, rel=1e-3, abs=1e-9)
    assert sum(m["line_search_rejected"] for _, m in kls) < len(kls)


@pytest.mark.parametrize("cls", [NPG, TRPO])
def test_a_step_that_overflows_restores_the_parameters_and_raises(cls):
    agent = cls(SIGNAL, tiny(cls, max_kl=1e300), seed=0)
    batch = collected(agent)
    before = [p.data.copy() for p in agent.policy.parameters()]
    with pytest.raises(NonFiniteError, match=r"non-finite at update 1, step 0; parameters "
                                             r"restored"):
        agent.update(batch)
    for p, b in zip(agent.policy.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


# ---- the formulas against torch -------------------------------------------------------------


@pytest.mark.parametrize("ent_coef", [0.0, 0.05])
@pytest.mark.parametrize("kind", ["categorical", "normal"])
def test_surrogate_and_kl_match_torch(kind, ent_coef):
    rng = np.random.default_rng(0)
    b = 16
    if kind == "categorical":
        agent = NPG(SIGNAL, tiny(NPG, ent_coef=ent_coef), seed=0)
        logits = rng.normal(size=(b, 3))
        old_logits = logits + 0.3 * rng.normal(size=(b, 3))
        actions = rng.integers(0, 3, b)
        z = Tensor(logits, requires_grad=True)
        ours, ours_old = Categorical(z), Categorical(old_logits)
        zt = torch.tensor(logits, requires_grad=True)
        theirs = torch.distributions.Categorical(logits=zt)
        theirs_old = torch.distributions.Categorical(logits=torch.tensor(old_logits))
        inputs, torch_inputs = [z], [zt]
        torch_actions = torch.as_tensor(actions)
    else:
        agent = NPG(SIGNAL_BOX, tiny(NPG, ent_coef=ent_coef), seed=0)
        mean, log_std = rng.normal(size=(b, 2)), rng.normal(size=2) * 0.3
        old_mean, old_log_std = mean + 0.2 * rng.normal(size=(b, 2)), log_std - 0.1
        actions = rng.normal(size=(b, 2))
        m, s = Tensor(mean, requires_grad=True), Tensor(log_std, requires_grad=True)
        ours, ours_old = Normal(m, s), Normal(old_mean, old_log_std)
        mt, st = torch.tensor(mean, requires_grad=True), torch.tensor(log_std, requires_grad=True)
        normal = torch.distributions.Normal
        theirs = torch.distributions.Independent(normal(mt, st.exp().expand_as(mt)), 1)
        theirs_old = torch.distributions.Independent(
            normal(torch.tensor(old_mean), torch.tensor(old_log_std).exp().expand(b, 2)), 1)
        inputs, torch_inputs = [m, s], [mt, st]
        torch_actions = torch.as_tensor(actions)
    old_logp = theirs_old.log_prob(torch_actions).detach().numpy()
    adv = rng.normal(size=b)
    data = {"actions": actions, "log_prob": old_logp, "advantages": adv}

    surrogate = agent.surrogate(ours, data)
    kl = NPG.mean_kl(ours_old, ours)
    ratio = torch.exp(theirs.log_prob(torch_actions) - torch.as_tensor(old_logp))
    expected = (ratio * torch.as_tensor(adv)).mean() + ent_coef * theirs.entropy().mean()
    expected_kl = torch.distributions.kl_divergence(theirs_old, theirs).mean()
    assert surrogate.item() == pytest.approx(expected.item(), rel=1e-10)
    assert kl.item() == pytest.approx(expected_kl.item(), rel=1e-10)
    from rlgrad.autograd import grad

    for ours_out, theirs_out in ((surrogate, expected), (kl, expected_kl)):
        got = grad(ours_out, inputs)
        want = torch.autograd.grad(theirs_out, torch_inputs, retain_graph=True)
        for a, w in zip(got, want):
            np.testing.assert_allclose(a.data, w.numpy(), rtol=1e-9, atol=1e-12)


# ---- learning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["npg", "trpo"])
def test_agents_learn_the_signal_environment(name, seed):
    cls = AGENTS[name]
    agent = cls(SIGNAL, tiny(cls, num_envs=4, num_steps=128, hidden_sizes=(16,), max_kl=0.05),
                seed=seed)
    before = agent.evaluate(16).mean()
    agent.learn(6_000)
    after = agent.evaluate(16).mean()
    # random play earns ~4, reading the cue earns 8
    assert after > 7.5, (before, after)
    assert after > before + 1.0


@pytest.mark.parametrize("name", ["npg", "trpo"])
def test_agents_learn_the_box_signal_environment(name):
    cls = AGENTS[name]
    agent = cls(SIGNAL_BOX, tiny(cls, num_envs=4, num_steps=128, hidden_sizes=(16,),
                                 max_kl=0.05), seed=0)
    before = agent.evaluate(16).mean()
    agent.learn(10_000)
    after = agent.evaluate(16).mean()
    # reward 1 - (a - cue)^2 / 4 per step: a = 0 earns 6, a = cue earns 8
    assert after > 7.5, (before, after)
    assert after > before + 1.0


def test_an_update_reports_every_metric():
    agent = TRPO(SIGNAL, tiny(TRPO, grad_variance_batches=4), seed=0)
    infos = []
    agent.learn(1_000, callback=lambda a, info: infos.append(info))
    assert infos, "no update ran: nothing below was checked"
    for info in infos:
        m = info["metrics"]
        assert set(METRICS) | {"grad_variance", "grad_relative_variance"} <= set(m)
        assert all(math.isfinite(v) for v in m.values()), m
        assert m["line_search_rejected"] in (0.0, 1.0)
        assert 1 <= m["cg_iterations"] <= agent.config.cg_iterations
        assert info["learning_rate"] == 1e-3  # the value function's, the only optimizer


def test_saved_agent_loads_with_its_value_optimizer(tmp_path):
    from agents import load

    agent = TRPO(SIGNAL, tiny(TRPO), seed=0)
    agent.learn(512)
    agent.save(tmp_path / "run")
    loaded = load(tmp_path / "run", env=SIGNAL)
    assert type(loaded) is TRPO
    np.testing.assert_array_equal(flat_params(loaded), flat_params(agent))
    assert loaded.value_optimizer.state_dict()["state"].keys() == \
        agent.value_optimizer.state_dict()["state"].keys()
    loaded.learn(256, reset_num_timesteps=False)
    assert loaded.global_step == 768


# ---- options ----------------------------------------------------------------------------------


def test_defaults_follow_sb3_contrib_and_normalise_box_only():
    c = TRPOConfig()
    assert (c.value_lr, c.num_envs, c.num_steps, c.value_minibatch_size, c.gamma,
            c.cg_iterations, c.cg_damping, c.line_search_shrink, c.line_search_steps,
            c.value_epochs, c.gae_lambda, c.normalize_advantages, c.max_kl,
            c.sub_sampling_factor) == (1e-3, 1, 2048, 128, 0.99, 15, 0.1, 0.8, 10, 10, 0.95,
                                       True, 0.01, 1)
    assert not c.resolve(True).normalize_obs and not c.resolve(True).normalize_reward
    assert c.resolve(False).normalize_obs and c.resolve(False).normalize_reward


@pytest.mark.parametrize("cls,field,value,match", [
    (NPG, "max_kl", 0.0, r"max_kl must be > 0, got 0.0"),
    (TRPO, "max_kl", -0.01, r"max_kl must be > 0, got -0.01"),
    (TRPO, "max_kl", float("nan"), r"max_kl must be a finite number"),
    (NPG, "cg_iterations", 0, r"cg_iterations must be >= 1, got 0"),
    (TRPO, "cg_iterations", True, r"cg_iterations must be an integer, got True"),
    (TRPO, "cg_damping", -0.1, r"cg_damping must be >= 0"),
    (TRPO, "line_search_shrink", 0.0, r"line_search_shrink must be > 0 and < 1, got 0.0"),
    (TRPO, "line_search_shrink", 1.0, r"line_search_shrink must be > 0 and < 1, got 1.0"),
    (TRPO, "line_search_shrink", 1.5, r"line_search_shrink must be > 0 and < 1, got 1.5"),
    (TRPO, "line_search_steps", 0, r"line_search_steps must be >= 1, got 0"),
    (NPG, "sub_sampling_factor", 0, r"sub_sampling_factor must be >= 1"),
    (NPG, "lr", 3e-4, r"lr is not used by NPG .*use.* value_lr|lr is not used by NPG"),
    (TRPO, "minibatch_size", 64, r"minibatch_size is not used by TRPO .*value_minibatch_size"),
    (TRPO, "update_epochs", 4, r"update_epochs is not used by TRPO .*value_epochs"),
    (TRPO, "vf_coef", 0.5, r"vf_coef is not used by TRPO"),
    (TRPO, "shared_network", True, r"shared_network is not supported by TRPO"),
    (NPG, "squash", True, r"squash is not supported by NPG"),
])
def test_bad_options_are_one_line_errors(cls, field, value, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        cls(SIGNAL, seed=0, **{field: value})
    assert "\n" not in str(info.value)


def test_npg_config_is_the_base_of_trpo_config():
    assert issubclass(TRPOConfig, NPGConfig)
    assert AGENTS["npg"] is NPG and AGENTS["trpo"] is TRPO
