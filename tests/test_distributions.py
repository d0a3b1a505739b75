"""Distributions against torch.distributions: log-probabilities, entropies, KL and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlgrad
from rlgrad.distributions import LOG_STD_MAX, LOG_STD_MIN, Categorical, Normal

RTOL, ATOL = 1e-9, 1e-12


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("batch", [(), (5,), (3, 4)])
def test_categorical_log_prob_entropy_and_grads_match_torch(batch):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=batch + (3,)) * 2
    actions = rng.integers(0, 3, size=batch)
    w = rng.normal(size=batch)

    z = rlgrad.tensor(logits, requires_grad=True)
    d = Categorical(logits=z)
    loss = (d.log_prob(actions) * w).sum() + (d.entropy() * w).sum()
    loss.backward()

    zt = _t(logits)
    dt = torch.distributions.Categorical(logits=zt)
    wt = torch.tensor(w)
    loss_t = (dt.log_prob(torch.tensor(actions)) * wt).sum() + (dt.entropy() * wt).sum()
    loss_t.backward()

    np.testing.assert_allclose(d.log_prob(actions).data, dt.log_prob(torch.tensor(actions))
                               .detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(d.entropy().data, dt.entropy().detach().numpy(), rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=RTOL)
    np.testing.assert_allclose(z.grad, zt.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_categorical_kl_matches_torch():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 6, 4))
    za = rlgrad.tensor(a, requires_grad=True)
    kl = Categorical(za).kl(Categorical(b))
    kl.sum().backward()
    ta = _t(a)
    kl_t = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=ta),
                                             torch.distributions.Categorical(logits=_t(b)))
    kl_t.sum().backward()
    np.testing.assert_allclose(kl.data, kl_t.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(za.grad, ta.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_categorical_stable_for_huge_logits():
    z = rlgrad.tensor(np.array([[1000.0, -1000.0, 0.0]]), requires_grad=True)
    d = Categorical(z)
    lp = d.log_prob(np.array([1]))
    (lp.sum() + d.entropy().sum()).backward()
    assert np.isfinite(lp.data).all() and np.isfinite(z.grad).all()
    np.testing.assert_allclose(lp.data, [-2000.0])


def test_categorical_sampling_frequencies_and_seeding():
    probs = np.array([0.1, 0.6, 0.3])
    d = Categorical(np.log(np.tile(probs, (200_000, 1))))
    s = d.sample(np.random.default_rng(3))
    freq = np.bincount(s, minlength=3) / s.size
    # three standard errors of a binomial proportion
    assert np.all(np.abs(freq - probs) < 3 * np.sqrt(probs * (1 - probs) / s.size))
    np.testing.assert_array_equal(s, d.sample(np.random.default_rng(3)))
    assert d.mode()[0] == 1


def test_categorical_rejects_bad_actions():
    d = Categorical(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="lie in"):
        d.log_prob(np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="batch shape"):
        d.log_prob(np.array([0, 1]))


@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_normal_log_prob_entropy_and_grads_match_torch(state_dependent_std):
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(7, 3))
    log_std = rng.normal(size=(7, 3) if state_dependent_std else (3,)) * 0.5
    actions = rng.normal(size=(7, 3))
    w = rng.normal(size=7)

    m = rlgrad.tensor(mean, requires_grad=True)
    s = rlgrad.tensor(log_std, requires_grad=True)
    d = Normal(m, s)
    loss = (d.log_prob(actions) * w).sum() + (d.entropy() * w).sum()
    loss.backward()

    mt, st = _t(mean), _t(log_std)
    dt = torch.distributions.Normal(mt, st.exp())
    wt = torch.tensor(w)
    lp_t = dt.log_prob(torch.tensor(actions)).sum(-1)
    ent_t = dt.entropy().sum(-1)
    (lp_t * wt + ent_t * wt).sum().backward()

    np.testing.assert_allclose(d.log_prob(actions).data, lp_t.detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(d.entropy().data, ent_t.detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(m.grad, mt.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(s.grad, st.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_normal_kl_matches_torch():
    rng = np.random.default_rng(4)
    m1, m2 = rng.normal(size=(2, 5, 2))
    s1, s2 = rng.normal(size=(2, 2)) * 0.3
    mt = rlgrad.tensor(m1, requires_grad=True)
    kl = Normal(mt, s1).kl(Normal(m2, s2))
    kl.sum().backward()
    m1t = _t(m1)
    kl_t = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1t, torch.tensor(s1).exp()),
        torch.distributions.Normal(torch.tensor(m2), torch.tensor(s2).exp())).sum(-1)
    kl_t.sum().backward()
    np.testing.assert_allclose(kl.data, kl_t.detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(mt.grad, m1t.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_normal_clamps_log_std_and_stays_finite():
    s = rlgrad.tensor(np.array([-50.0, 50.0]), requires_grad=True)
    d = Normal(np.zeros((1, 2)), s)
    np.testing.assert_allclose(d.log_std.data, [LOG_STD_MIN, LOG_STD_MAX])
    lp = d.log_prob(np.zeros((1, 2)))
    lp.sum().backward()
    assert np.isfinite(lp.data).all() and np.isfinite(s.grad).all()


def test_normal_sampling_moments_and_seeding():
    d = Normal(np.full((100_000, 2), 1.5), np.log(np.array([0.5, 2.0])))
    x = d.sample(np.random.default_rng(5))
    np.testing.assert_allclose(x.mean(0), [1.5, 1.5], atol=0.03)
    np.testing.assert_allclose(x.std(0), [0.5, 2.0], rtol=0.02)
    np.testing.assert_array_equal(x, d.sample(np.random.default_rng(5)))


def test_normal_shape_errors():
    with pytest.raises(ValueError, match="does not fit"):
        Normal(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="expected"):
        Normal(np.zeros((3, 2)), np.zeros(2)).log_prob(np.zeros((3, 3)))
