"""Diagnostics measure without changing the run, and measure the right thing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import PPO, ReinforceBaseline
from agents.diagnostics import curvature_metrics, policy_parameters


def final_params(agent):
    arrays, _ = agent.state_dict()
    return arrays


@pytest.mark.parametrize("cls,kw", [
    (PPO, {"num_steps": 32, "minibatch_size": 64}),
    (ReinforceBaseline, {"steps_per_update": 256, "grad_variance_batches": 0}),
])
def test_curvature_logging_does_not_change_the_run(cls, kw):
    on = cls("CartPole-v1", seed=4, curvature_every=1, grad_variance_batches=4, **{
        k: v for k, v in kw.items() if k != "grad_variance_batches"})
    seen = []
    on.learn(1024, lambda a, info: seen.append(info["metrics"]))
    off = cls("CartPole-v1", seed=4, **kw)
    off.learn(1024)
    assert all("curvature/hessian_max" in m for m in seen)
    a, b = final_params(on), final_params(off)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_curvature_metrics_match_dense_hessians_from_torch():
    """On a tiny policy (1 hidden unit), the Lanczos extremes equal the dense Hessian's, and the
    Fisher's top eigenvalue equals that of the dense Hessian of the mean KL."""
    agent = ReinforceBaseline("tests.tiny_envs:Signal-v0", seed=0, hidden_sizes=(2,),
                              steps_per_update=64, num_envs=2)
    agent.learn(64)
    batch = agent.collection.collect_episodes(agent.collect_step, 64, 64)
    agent.prepare(batch)
    params = policy_parameters(agent)
    m = curvature_metrics(agent, batch, lanczos_iterations=100, noise_batches=4)

    obs = torch.tensor(batch.flat(batch.obs), dtype=torch.float64)
    actions = torch.tensor(batch.flat(batch.actions))
    adv = torch.tensor(batch.data["advantages"], dtype=torch.float64)
    shapes = [p.shape for p in params]
    flat0 = torch.tensor(np.concatenate([p.data.ravel() for p in params]), dtype=torch.float64)

    def unflatten(flat):
        out, i = [], 0
        for s in shapes:
            n = int(np.prod(s))
            out.append(flat[i:i + n].reshape(s))
            i += n
        return out

    def logits(flat):
        w0, b0, w1, b1 = unflatten(flat)  # one hidden layer of 2 tanh units
        return torch.tanh(obs @ w0.T + b0) @ w1.T + b1

    def policy_loss(flat):
        logp = torch.log_softmax(logits(flat), -1).gather(1, actions[:, None]).squeeze(1)
        return -(logp * adv).mean()

    def mean_kl(flat):
        p_old = torch.softmax(logits(flat0), -1).detach()
        logq = torch.log_softmax(logits(flat), -1)
        return (p_old * (torch.log(p_old) - logq)).sum(-1).mean()

    h = torch.autograd.functional.hessian(policy_loss, flat0).numpy()
    f = torch.autograd.functional.hessian(mean_kl, flat0).numpy()
    eig_h, eig_f = np.linalg.eigvalsh(h), np.linalg.eigvalsh(f)
    # float32 parameters: agreement to float32 rounding of the products
    np.testing.assert_allclose(m["hessian_max"], eig_h[-1], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(m["hessian_min"], eig_h[0], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(m["fisher_max"], eig_f[-1], rtol=1e-3, atol=1e-6)
    assert m["lr_stability_edge"] == pytest.approx(2 / m["hessian_max"])
