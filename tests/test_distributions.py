"""Distributions against torch.distributions: log-probabilities, entropies, KL and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlgrad
from rlgrad.distributions import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    TANH_CLIP,
    Categorical,
    Normal,
    TanhNormal,
    _softplus,
)
from rlgrad.tensor import Tensor

RTOL, ATOL = 1e-9, 1e-12


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def _torch_tanh_normal(mean, log_std, low=None, high=None):
    """torch's tanh-squashed Gaussian (+ the affine map into [low, high]) and its transforms."""
    td = torch.distributions
    base = td.Independent(td.Normal(mean, log_std.exp()), 1)
    transforms = [td.TanhTransform(cache_size=1)]
    if low is not None:
        transforms.append(td.AffineTransform(torch.tensor((high + low) / 2),
                                             torch.tensor((high - low) / 2), cache_size=1))
    return td.TransformedDistribution(base, transforms), transforms


def _torch_squash(transforms, u):
    """Push u through the transforms so their caches hold it: torch's log_prob is then exact."""
    for t in transforms:
        u = t(u)
    return u


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


# ---- Categorical: the fused pick and entropy nodes --------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [(5,), (64,), (3, 4)], ids=str)
def test_fused_categorical_nodes_are_bitwise_the_composite_graph(batch, dtype):
    rng = np.random.default_rng(43)
    logits = rng.normal(size=(*batch, 4)).astype(dtype)
    actions = rng.integers(0, 4, batch)
    w = rng.normal(size=batch).astype(dtype)

    def run(fused):
        z = rlgrad.tensor(logits, requires_grad=True)
        d = Categorical(z)
        if fused:
            lp, ent = d.log_prob(actions), d.entropy()
            assert len(lp._parents) == len(ent._parents) == 1 and lp._parents[0] is d.logp
        else:  # the composite, in the order agents use it: log-probabilities, then entropy
            logp = d.logp
            lp = logp.reshape(-1, 4)[np.arange(actions.size), actions.ravel()]
            lp = lp.reshape(batch) if len(batch) != 1 else lp
            ent = -(logp.exp() * logp).sum(axis=-1)
        ((lp * w).sum() + (ent * w).sum() * 0.1).backward()
        return lp.data, ent.data, z.grad

    for got, want in zip(run(True), run(False)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_categorical_log_prob_and_entropy_match_central_differences():
    rng = np.random.default_rng(44)
    logits, actions = rng.normal(size=(6, 3)), rng.integers(0, 3, 6)
    assert rlgrad.gradcheck(lambda z: Categorical(z).log_prob(actions), [logits])
    assert rlgrad.gradcheck(lambda z: Categorical(z).entropy(), [logits])
    assert rlgrad.gradcheck(lambda z: Categorical(z).log_prob(actions.reshape(2, 3)),
                            [logits.reshape(2, 3, 3)])


def test_categorical_double_backward_matches_torch():
    rng = np.random.default_rng(45)
    logits, actions, v = rng.normal(size=(5, 3)), rng.integers(0, 3, 5), rng.normal(size=(5, 3))
    z = rlgrad.tensor(logits, requires_grad=True)
    d = Categorical(z)
    (hv,) = rlgrad.hvp((d.log_prob(actions) * 2.0).sum() + d.entropy().sum(), [z], [v])
    zt = _t(logits)
    dt = torch.distributions.Categorical(logits=zt)
    (g,) = torch.autograd.grad((dt.log_prob(torch.tensor(actions)) * 2.0).sum()
                               + dt.entropy().sum(), [zt], create_graph=True)
    (thv,) = torch.autograd.grad((g * torch.tensor(v)).sum(), [zt])
    np.testing.assert_allclose(hv, thv.numpy(), rtol=RTOL, atol=ATOL)


# ---- Normal: the fused log-density and entropy nodes ----------------------------------------

_LOG_2PI = float(np.log(2 * np.pi))


def composite_normal(mean, log_std):
    """Normal's log-std clamp and std, and its log-density and entropy written in Tensor ops:
    the unfused graph the fused nodes replace."""
    ls = log_std.clip(LOG_STD_MIN, LOG_STD_MAX)
    std = ls.exp()

    def log_prob(x):
        z = (x - mean) / std
        return -((z * z) * 0.5 + ls + 0.5 * _LOG_2PI).sum(axis=-1)

    def entropy():
        total = (ls + (0.5 + 0.5 * _LOG_2PI)).sum(axis=-1)
        batch = mean.shape[:-1]
        return total * np.ones(batch, dtype=mean.dtype) if ls.ndim == 1 and batch else total

    return log_prob, entropy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [((3,), (3,)), ((64, 3), (3,)), ((5, 3), (5, 3)),
                                    ((2, 4, 3), (3,)), ((3,), (5, 3))], ids=str)
@pytest.mark.parametrize("x_is_tensor", [False, True])
def test_fused_normal_nodes_are_bitwise_the_composite_graph(shapes, dtype, x_is_tensor):
    mean_shape, std_shape = shapes
    rng = np.random.default_rng(40)
    mean = rng.normal(size=mean_shape).astype(dtype)
    log_std = (rng.normal(size=std_shape) * 0.5).astype(dtype)
    batch = np.broadcast_shapes(mean_shape, std_shape)
    x = rng.normal(size=batch).astype(dtype)
    w = rng.normal(size=batch[:-1]).astype(dtype)

    def run(fused):
        m = rlgrad.tensor(mean, requires_grad=True)
        s = rlgrad.tensor(log_std, requires_grad=True)
        xt = rlgrad.tensor(x, requires_grad=True) if x_is_tensor else x
        if fused:
            d = Normal(m, s)
            lp, ent = d._log_prob(xt), d.entropy()
            assert len(lp._parents) == 4 and len(ent._parents) == 1  # one node each
        else:
            log_prob, entropy = composite_normal(m, s)
            lp, ent = log_prob(xt), entropy()
        ((lp * w).sum() + (ent * w).sum() * 0.5).backward()
        return lp, ent, m.grad, s.grad, xt.grad if x_is_tensor else None

    for got, want in zip(run(True), run(False)):
        if want is None:
            assert got is None
            continue
        if isinstance(got, Tensor):
            got, want = got.data, want.data
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_normal_log_prob_and_entropy_match_central_differences(state_dependent_std):
    rng = np.random.default_rng(41)
    mean = rng.normal(size=(4, 3))
    log_std = rng.normal(size=(4, 3) if state_dependent_std else (3,)) * 0.5
    x = rng.normal(size=(4, 3))
    assert rlgrad.gradcheck(lambda m, s: Normal(m, s).log_prob(x), [mean, log_std])
    assert rlgrad.gradcheck(lambda x, m, s: Normal(m, s)._log_prob(x), [x, mean, log_std])
    assert rlgrad.gradcheck(lambda m, s: Normal(m, s).entropy() + m.sum() * 0, [mean, log_std])


def test_normal_log_prob_double_backward_matches_torch():
    """Hessian-vector products through the fused node (its create_graph path) against torch."""
    rng = np.random.default_rng(42)
    mean, log_std, x = rng.normal(size=(5, 3)), rng.normal(size=3) * 0.5, rng.normal(size=(5, 3))
    w = rng.normal(size=5)
    vm, vs = rng.normal(size=(5, 3)), rng.normal(size=3)
    m = rlgrad.tensor(mean, requires_grad=True)
    s = rlgrad.tensor(log_std, requires_grad=True)
    out = (Normal(m, s).log_prob(x) * w).sum()
    hm, hs = rlgrad.hvp(out, [m, s], [vm, vs])

    mt, st = _t(mean), _t(log_std)
    lp = torch.distributions.Normal(mt, st.exp()).log_prob(torch.tensor(x)).sum(-1)
    gm, gs = torch.autograd.grad((lp * torch.tensor(w)).sum(), [mt, st], create_graph=True)
    thm, ths = torch.autograd.grad((gm * torch.tensor(vm)).sum() + (gs * torch.tensor(vs)).sum(),
                                   [mt, st])
    np.testing.assert_allclose(hm, thm.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hs, ths.numpy(), rtol=RTOL, atol=ATOL)


def test_normal_sample_refuses_a_log_std_with_more_rows_than_the_mean():
    d = Normal(np.zeros(3), np.zeros((2, 3)))  # log-probabilities broadcast; samples cannot
    with pytest.raises(ValueError, match=r"log_std of shape \(2, 3\) does not broadcast to the "
                                         r"mean's shape \(3,\)"):
        d.sample(np.random.default_rng(0))


# ---- Categorical: non-finite logits ----------------------------------------------------------

@pytest.mark.parametrize("method", ["sample", "mode"])
@pytest.mark.parametrize("logits,value,where", [
    (np.array([0.0, np.inf]), "inf", r"logits\[1\];"),
    (np.array([[0.0, 1.0], [np.nan, 0.0], [0.0, np.inf]]), "nan", r"logits\[1, 0\] \(row 1\)"),
    (np.array([[0.0, 1.0], [2.0, -np.inf]]), "-inf", r"logits\[1, 1\] \(row 1\)"),
    (np.array([[[0.0, 1.0]], [[1.0, np.nan]]]), "nan", r"logits\[1, 0, 1\] \(row 1, 0\)"),
])
def test_categorical_refuses_non_finite_logits(method, logits, value, where):
    # before the check, NaN logits played action 0 and [0, +inf] played action 0 too
    d = Categorical(logits)
    with pytest.raises(ValueError, match=rf"must be finite, got {value} at {where}"):
        d.sample(np.random.default_rng(0)) if method == "sample" else d.mode()


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_categorical_huge_finite_logits_still_sample():
    # the sum of the logits overflows, every logit is finite: no error, the right actions
    d = Categorical(np.array([[1e308, 1e308, 0.0], [0.0, 1e308, 1.5e308]]))
    s = d.sample(np.random.default_rng(0))
    assert s[0] in (0, 1) and s[1] == 2
    np.testing.assert_array_equal(d.mode(), [0, 2])


# ---- TanhNormal ------------------------------------------------------------------------------

BOUNDS = {
    "unbounded": (None, None),
    "box": (np.array([-2.0, 0.0, 1.0]), np.array([2.0, 1.0, 5.0])),
}


@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("state_dependent_std", [False, True])
@pytest.mark.parametrize("use_pre_tanh", [False, True])
def test_tanh_normal_log_prob_and_grads_match_torch(bounds, state_dependent_std, use_pre_tanh):
    low, high = BOUNDS[bounds]
    rng = np.random.default_rng(6)
    mean = rng.normal(size=(6, 3))
    log_std = rng.normal(size=(6, 3) if state_dependent_std else (3,)) * 0.5
    w = rng.normal(size=6)
    actions, u = TanhNormal(mean, log_std, low, high).sample_with_pre_tanh(rng)

    m = rlgrad.tensor(mean, requires_grad=True)
    s = rlgrad.tensor(log_std, requires_grad=True)
    lp = TanhNormal(m, s, low, high).log_prob(actions, pre_tanh=u if use_pre_tanh else None)
    (lp * w).sum().backward()

    mt, st = _t(mean), _t(log_std)
    dt, _ = _torch_tanh_normal(mt, st, low, high)
    lp_t = dt.log_prob(torch.tensor(actions))
    (lp_t * torch.tensor(w)).sum().backward()

    np.testing.assert_allclose(lp.data, lp_t.detach().numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m.grad, mt.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s.grad, st.grad.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bounds", BOUNDS)
def test_tanh_normal_log_prob_grads_match_central_differences(bounds):
    low, high = BOUNDS[bounds]
    rng = np.random.default_rng(7)
    mean, log_std = rng.normal(size=(4, 3)), rng.normal(size=3) * 0.5
    actions, u = TanhNormal(mean, log_std, low, high).sample_with_pre_tanh(rng)
    rlgrad.gradcheck(lambda m, s: TanhNormal(m, s, low, high).log_prob(actions),
                     [mean, log_std], atol=1e-7, rtol=1e-6)
    rlgrad.gradcheck(lambda m, s: TanhNormal(m, s, low, high).log_prob(actions, pre_tanh=u),
                     [mean, log_std], atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("bounds", BOUNDS)
def test_tanh_normal_rsample_log_prob_grads_match_torch_and_central_differences(bounds):
    # SAC's actor loss: the gradient flows through u = mean + std * noise and the log-det term
    low, high = BOUNDS[bounds]
    rng = np.random.default_rng(8)
    mean, log_std = rng.normal(size=(5, 3)) * 2, rng.normal(size=(5, 3)) * 0.5
    noise = np.random.default_rng(9).standard_normal(mean.shape)

    def loss(m, s):
        a, u = TanhNormal(m, s, low, high).rsample(np.random.default_rng(9))
        return TanhNormal(m, s, low, high).log_prob(a, pre_tanh=u) + a.sum(axis=-1)

    m = rlgrad.tensor(mean, requires_grad=True)
    s = rlgrad.tensor(log_std, requires_grad=True)
    out = loss(m, s)
    out.sum().backward()

    mt, st = _t(mean), _t(log_std)
    dt, transforms = _torch_tanh_normal(mt, st, low, high)
    a_t = _torch_squash(transforms, mt + st.exp() * torch.tensor(noise))
    out_t = dt.log_prob(a_t) + a_t.sum(-1)
    out_t.sum().backward()

    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m.grad, mt.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s.grad, st.grad.numpy(), rtol=1e-9, atol=1e-9)
    rlgrad.gradcheck(loss, [mean, log_std], atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("bounds", BOUNDS)
def test_tanh_normal_exact_in_the_tails_with_pre_tanh(bounds):
    # tanh(12) = 1 - 7.6e-11 and tanh(25) = 1.0 in float64: the inverse cannot recover u
    low, high = BOUNDS[bounds]
    mean, log_std = np.array([[10.0, -20.0, 0.0]]), np.array([0.5, 0.5, 0.5])
    u = np.array([[12.0, -25.0, 0.3]])
    d = TanhNormal(mean, log_std, low, high)
    actions = d._squash(u)
    dt, transforms = _torch_tanh_normal(torch.tensor(mean), torch.tensor(log_std), low, high)
    want = dt.log_prob(_torch_squash(transforms, torch.tensor(u))).numpy()
    np.testing.assert_allclose(d.log_prob(actions, pre_tanh=u).data, want, rtol=1e-12)
    # without u: the documented clip, the log-density at |u| = atanh(TANH_CLIP)
    u_clip = np.array([[np.arctanh(TANH_CLIP), -np.arctanh(TANH_CLIP), 0.3]])
    clipped = d.log_prob(actions)
    assert np.isfinite(clipped.data).all()
    np.testing.assert_allclose(clipped.data, d.log_prob(d._squash(u_clip), pre_tanh=u_clip).data,
                               rtol=1e-6)


def test_tanh_normal_float32():
    rng = np.random.default_rng(10)
    mean = rng.normal(size=(50, 2)).astype(np.float32) * 3
    log_std = np.zeros(2, np.float32)
    d = TanhNormal(mean, log_std, np.array([-1.0, 0.0]), np.array([1.0, 4.0]))
    actions, u = d.sample_with_pre_tanh(rng)
    assert actions.dtype == np.float32 and u.dtype == np.float32
    lp = d.log_prob(actions, pre_tanh=u)
    assert lp.dtype == np.float32 and np.isfinite(d.log_prob(actions).data).all()
    d64 = TanhNormal(mean.astype(np.float64), log_std.astype(np.float64), np.array([-1.0, 0.0]),
                     np.array([1.0, 4.0]))
    exact = d64.log_prob(d64._squash(u.astype(np.float64)), pre_tanh=u.astype(np.float64)).data
    np.testing.assert_allclose(lp.data, exact, rtol=1e-5, atol=1e-4)


def test_tanh_normal_softplus_is_accurate_and_its_derivative_is_the_sigmoid():
    # log(1 + e^-|x|) without log1p: absolute error ~1e-16, which is what the log-det sum needs;
    # torch's softplus returns x itself above 20, so the oracles are logaddexp and the sigmoid
    x = np.array([-800.0, -30.0, -1.0, -1e-9, 0.0, 1e-9, 0.5, 30.0, 800.0])
    xs = rlgrad.tensor(x, requires_grad=True)
    y = _softplus(xs)
    y.sum().backward()
    np.testing.assert_allclose(y.data, np.logaddexp(0.0, x), rtol=1e-15, atol=2e-16)
    np.testing.assert_allclose(xs.grad, torch.sigmoid(torch.tensor(x)).numpy(), rtol=1e-15,
                               atol=2e-16)
    assert xs.grad[4] == 0.5


def test_tanh_normal_sampling_seeding_bounds_and_mode():
    low, high = BOUNDS["box"]
    mean = np.tile([0.5, -3.0, 8.0], (20_000, 1))
    log_std = np.log(np.array([0.3, 1.0, 2.0]))
    d = TanhNormal(mean, log_std, low, high)
    a = d.sample(np.random.default_rng(11))
    np.testing.assert_array_equal(a, d.sample(np.random.default_rng(11)))
    # the same draws as the base Gaussian, squashed
    u = Normal(mean, log_std).sample(np.random.default_rng(11))
    np.testing.assert_array_equal(a, (high + low) / 2 + (high - low) / 2 * np.tanh(u))
    a2, u2 = d.sample_with_pre_tanh(np.random.default_rng(11))
    np.testing.assert_array_equal(a2, a)
    np.testing.assert_array_equal(u2, u)
    ar, ur = d.rsample(np.random.default_rng(11))
    assert isinstance(ar, Tensor) and isinstance(ur, Tensor)
    np.testing.assert_array_equal(ur.data, u)
    np.testing.assert_allclose(ar.data, a, rtol=1e-15, atol=1e-15)
    assert np.all(a >= low) and np.all(a <= high)
    # the median of a is the squashed mean: tanh is monotone
    np.testing.assert_allclose(np.median(a, axis=0), d.mode()[0], atol=0.03)
    np.testing.assert_allclose(d.mode()[0], (high + low) / 2 + (high - low) / 2 * np.tanh(mean[0]))
    np.testing.assert_allclose(TanhNormal(mean[:2], log_std).mode(), np.tanh(mean[:2]))


def test_tanh_normal_entropy_is_the_base_gaussians():
    rng = np.random.default_rng(12)
    mean, log_std = rng.normal(size=(4, 3)), rng.normal(size=3) * 0.3
    m = rlgrad.tensor(mean, requires_grad=True)
    s = rlgrad.tensor(log_std, requires_grad=True)
    ent = TanhNormal(m, s, *BOUNDS["box"]).entropy()
    ent.sum().backward()
    st = _t(log_std)
    ent_t = torch.distributions.Normal(torch.tensor(mean), st.exp()).entropy().sum(-1)
    ent_t.sum().backward()
    np.testing.assert_allclose(ent.data, ent_t.detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(s.grad, st.grad.numpy(), rtol=RTOL)
    assert m.grad is None  # the entropy of a Gaussian does not depend on its mean


def test_tanh_normal_entropy_bounds_the_action_entropy():
    # documented: H[a] = H[u] + E[sum log(s (1 - tanh^2 u))] <= H[u] + sum log s
    low, high = BOUNDS["box"]
    n = 200_000
    d = TanhNormal(np.tile([0.2, -1.0, 1.5], (n, 1)), np.log(np.array([0.5, 1.0, 0.8])), low, high)
    a, u = d.sample_with_pre_tanh(np.random.default_rng(13))
    neg_lp = -d.log_prob(a, pre_tanh=u).data
    h_a, se = neg_lp.mean(), neg_lp.std() / np.sqrt(n)
    h_u = d.entropy().data[0]
    log_s = np.log((high - low) / 2).sum()
    log_det = np.log((high - low) / 2 * (1 - np.tanh(u) ** 2)).sum(-1).mean()
    assert abs(h_a - (h_u + log_det)) < 4 * se
    assert h_a < h_u + log_s - 10 * se


def test_tanh_normal_kl_is_the_base_kl_and_matches_torch():
    low, high = BOUNDS["box"]
    rng = np.random.default_rng(14)
    m1, m2 = rng.normal(size=(2, 5, 3))
    s1, s2 = rng.normal(size=(2, 5, 3)) * 0.3
    mt = rlgrad.tensor(m1, requires_grad=True)
    st = rlgrad.tensor(s1, requires_grad=True)
    kl = TanhNormal(mt, st, low, high).kl(TanhNormal(m2, s2, low, high))
    kl.sum().backward()
    np.testing.assert_allclose(kl.data, Normal(m1, s1).kl(Normal(m2, s2)).data, rtol=1e-15)

    m1t, s1t = _t(m1), _t(s1)
    p, _ = _torch_tanh_normal(m1t, s1t, low, high)
    q, _ = _torch_tanh_normal(torch.tensor(m2), torch.tensor(s2), low, high)
    kl_t = torch.distributions.kl_divergence(p, q)
    kl_t.sum().backward()
    np.testing.assert_allclose(kl.data, kl_t.detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(mt.grad, m1t.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(st.grad, s1t.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_tanh_normal_kl_invariant_under_the_squashing():
    # the Jacobians cancel: log p(a) - log q(a) = log p_base(u) - log q_base(u) at every sample,
    # so the Monte Carlo KL of the actions estimates the base KL
    low, high = BOUNDS["box"]
    n = 100_000
    p = TanhNormal(np.tile([0.3, -0.5, 1.0], (n, 1)), np.log([0.5, 0.8, 1.2]), low, high)
    q = TanhNormal(np.tile([0.0, 0.4, 0.5], (n, 1)), np.log([0.7, 0.6, 1.0]), low, high)
    a, u = p.sample_with_pre_tanh(np.random.default_rng(15))
    ratio = p.log_prob(a, pre_tanh=u).data - q.log_prob(a, pre_tanh=u).data
    base_ratio = p.base.log_prob(u).data - q.base.log_prob(u).data
    np.testing.assert_allclose(ratio, base_ratio, rtol=1e-9, atol=1e-9)
    kl = p.kl(q).data[0]
    assert abs(ratio.mean() - kl) < 4 * ratio.std() / np.sqrt(n)


def test_tanh_normal_bad_input():
    low, high = BOUNDS["box"]
    with pytest.raises(ValueError, match="both low and high"):
        TanhNormal(np.zeros((2, 3)), np.zeros(3), low=low)
    with pytest.raises(ValueError, match=r"low < high, got low\[1\] = 0.0 and high\[1\] = 0.0"):
        TanhNormal(np.zeros((2, 3)), np.zeros(3), low, np.array([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match=r"high has shape \(2,\), expected \(\) or \(3,\)"):
        TanhNormal(np.zeros((2, 3)), np.zeros(3), -1.0, np.ones(2))
    with pytest.raises(ValueError, match="low must be finite"):
        TanhNormal(np.zeros((2, 3)), np.zeros(3), -np.inf, 1.0)
    with pytest.raises(TypeError, match="high must be real numbers, got dtype bool"):
        TanhNormal(np.zeros((2, 3)), np.zeros(3), 0, np.ones(3, bool))
    d = TanhNormal(np.zeros((2, 3)), np.zeros(3), low, high)
    with pytest.raises(ValueError, match=r"must lie in \[low, high\].*got 5.5 at index \[1, 2\]"):
        d.log_prob(np.array([[0.0, 0.5, 3.0], [0.0, 0.5, 5.5]]))
    with pytest.raises(ValueError, match=r"got nan at index \[0, 0\]"):
        d.log_prob(np.array([[np.nan, 0.5, 3.0], [0.0, 0.5, 3.0]]))
    with pytest.raises(ValueError, match=r"actions have shape \(3,\)"):
        d.log_prob(np.zeros(3))
    a, u = d.sample_with_pre_tanh(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"pre_tanh does not match actions: at index \[0, 0\]"):
        d.log_prob(a, pre_tanh=u[::-1])
    with pytest.raises(ValueError, match=r"pre_tanh has shape \(3,\)"):
        d.log_prob(a, pre_tanh=u[0])
    with pytest.raises(TypeError, match="another TanhNormal"):
        d.kl(Normal(np.zeros((2, 3)), np.zeros(3)))
    with pytest.raises(ValueError, match="same bounds"):
        d.kl(TanhNormal(np.zeros((2, 3)), np.zeros(3)))
    # actions on the boundary (rounding of the affine map) are accepted and finite
    assert np.isfinite(d.log_prob(np.tile(high, (2, 1))).data).all()


# ---- detach: the fixed pi_old of a trust region ---------------------------------------------

@pytest.mark.parametrize("kind", ["categorical", "normal", "tanh_normal"])
def test_detach_is_a_copy_off_the_graph(kind):
    rng = np.random.default_rng(16)
    x = rlgrad.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    s = rlgrad.tensor(rng.normal(size=3) * 0.3, requires_grad=True)
    make = {"categorical": lambda: Categorical(x), "normal": lambda: Normal(x, s),
            "tanh_normal": lambda: TanhNormal(x, s, -2.0, 3.0)}[kind]
    d = make()
    if kind == "categorical":
        d.entropy()  # caches log pi: the copy must not share it
    old = d.detach()
    assert type(old) is type(d)
    params = [old.logits] if kind == "categorical" else [old.mean, old.log_std]
    assert not any(p.requires_grad for p in params)
    a = d.sample(np.random.default_rng(0))
    np.testing.assert_array_equal(old.log_prob(a).data, d.log_prob(a).data)
    np.testing.assert_array_equal(old.entropy().data, d.entropy().data)
    # gradients flow through pi_theta only; KL(pi_old || pi_theta) is 0 with zero gradient
    kl = old.kl(make()).sum()
    kl.backward()
    assert kl.item() == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(x.grad, 0.0, atol=1e-15)
    # an in-place update of the parameters (an optimizer step) does not reach pi_old
    before = old.log_prob(a).data.copy()
    x.data += 1.0
    s.data -= 0.5
    np.testing.assert_array_equal(old.log_prob(a).data, before)


def test_detach_kl_hessian_is_the_fisher_information():
    # the Fisher-vector product of TRPO / NPG: H of KL(pi_old || pi_theta) at theta = theta_old
    rng = np.random.default_rng(17)
    z = rlgrad.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    v = rng.normal(size=(3, 4))
    d = Categorical(z)
    (hv,) = rlgrad.hvp(d.detach().kl(Categorical(z)).sum(), [z], [v])
    p = d.probs
    fisher_v = p * v - p * (p * v).sum(-1, keepdims=True)  # (diag(p) - p p^T) v per row
    np.testing.assert_allclose(hv, fisher_v, rtol=1e-10, atol=1e-12)

    m = rlgrad.tensor(rng.normal(size=(3, 2)), requires_grad=True)
    s = rlgrad.tensor(rng.normal(size=2) * 0.3, requires_grad=True)
    vm, vs = rng.normal(size=(3, 2)), rng.normal(size=2)
    for dist in (Normal(m, s), TanhNormal(m, s)):
        hm, hs = rlgrad.hvp(dist.detach().kl(type(dist)(m, s)).sum(), [m, s], [vm, vs])
        # Fisher of N(mu, e^{2 rho}): 1/sigma^2 for mu, 2 per sample for rho (summed over 3 rows)
        np.testing.assert_allclose(hm, vm / np.exp(2 * s.data), rtol=1e-10)
        np.testing.assert_allclose(hs, 2 * 3 * vs, rtol=1e-10)
