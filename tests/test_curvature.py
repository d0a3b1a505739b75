"""rlgrad.curvature: Fisher-vector products, Hessian eigenvalues (Lanczos), Hutchinson's trace,
the gradient noise scale.

Oracles, in float64: dense Hessians from torch (torch.autograd.functional.hessian) and rlgrad's
own dense ``hessian``, the Fisher as the expected outer product of the score over categories,
central differences of gradients, numpy.linalg.eigvalsh and solve.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - torch's usual name

import rlgrad
import rlgrad.curvature
from rlgrad import nn
from rlgrad.curvature import _TANGENT_RULES, _TANGENTS, _detached, _JacobianProducts
from rlgrad.distributions import LOG_STD_MAX, LOG_STD_MIN, Categorical, Distribution, Normal
from rlgrad.policies import GaussianPolicy

OBS_DIM, HIDDEN, N_ACT = 3, 5, 4
CASES = ["categorical", "normal", "normal_state_log_std"]


def flat(parts):
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def unflat(theta, shapes):
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(theta[start:start + size].reshape(shape))
        start += size
    return out


class Policy:
    """A small rlgrad MLP policy and its torch twin, as a function of the flat parameters.

    categorical: logits = MLP(obs). normal: mean = MLP(obs), a state-independent log-std
    parameter with one entry above LOG_STD_MAX (clamped, so its Fisher row is zero).
    normal_state_log_std: MLP(obs) = [mean, log_std], split by indexing (a graph without a
    tangent rule for every node: the double-vjp path).
    """

    def __init__(self, case: str, batch_shape=(6,), seed=0) -> None:
        rng = np.random.default_rng(seed)
        self.case = case
        out = 2 * N_ACT if case == "normal_state_log_std" else N_ACT
        self.net = nn.MLP([OBS_DIM, HIDDEN, out], rng=rng, dtype=np.float64)
        self.params = list(self.net.parameters())
        if case == "normal":
            self.log_std = nn.Parameter(np.array([0.3, -0.5, LOG_STD_MAX + 0.5, 0.1]),
                                        dtype=np.float64)
            self.params.append(self.log_std)
        self.obs = rng.standard_normal(batch_shape + (OBS_DIM,))
        self.shapes = [p.shape for p in self.params]
        self.theta0 = flat([p.data for p in self.params])
        self.dim = self.theta0.size

    def dist(self) -> Distribution:
        y = self.net(self.obs)
        if self.case == "categorical":
            return Categorical(logits=y)
        if self.case == "normal":
            return Normal(y, self.log_std)
        return Normal(y[..., :N_ACT], y[..., N_ACT:])

    def set_theta(self, theta) -> None:
        for p, part in zip(self.params, unflat(theta, self.shapes)):
            p.data[...] = part

    # ---- torch twin ----------------------------------------------------------------------
    def torch_dist(self, theta):
        w1, b1, w2, b2, *rest = unflat(theta, self.shapes)
        h = torch.tanh(F.linear(torch.from_numpy(self.obs), w1, b1))
        y = F.linear(h, w2, b2)
        if self.case == "categorical":
            return torch.distributions.Categorical(logits=y)
        mean, log_std = (y, rest[0]) if self.case == "normal" else (y[..., :N_ACT],
                                                                     y[..., N_ACT:])
        return torch.distributions.Normal(mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp())

    def torch_mean_kl(self, theta):
        old = self.torch_dist(torch.from_numpy(self.theta0))
        kl = torch.distributions.kl_divergence(old, self.torch_dist(theta))
        return (kl if self.case == "categorical" else kl.sum(-1)).mean()

    def torch_fisher(self) -> np.ndarray:
        theta = torch.from_numpy(self.theta0.copy())
        return torch.autograd.functional.hessian(self.torch_mean_kl, theta,
                                                   vectorize=True).numpy()


def dense(fvp: rlgrad.FisherVectorProduct) -> np.ndarray:
    return np.stack([fvp(e) for e in np.eye(fvp.dim)], axis=1)


# --------------------------------------------------------------------------------------------
# Fisher-vector products
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["analytic", "double_backprop"])
@pytest.mark.parametrize("batch_shape", [(6,), (2, 3)])
@pytest.mark.parametrize("case", CASES)
def test_fisher_matches_the_hessian_of_the_mean_kl_from_torch(case, batch_shape, method):
    pol = Policy(case, batch_shape)
    fvp = rlgrad.FisherVectorProduct(pol.dist(), pol.params, method=method)
    expected = pol.torch_fisher()
    np.testing.assert_allclose(dense(fvp), expected, rtol=1e-9, atol=1e-12)
    if case == "normal":  # the clamped log-std entry: no curvature at all
        i = pol.dim - N_ACT + 2
        assert np.all(expected[i] == 0) and np.all(dense(fvp)[i] == 0)
    damped = rlgrad.FisherVectorProduct(pol.dist(), pol.params, damping=0.25, method=method)
    np.testing.assert_allclose(dense(damped), expected + 0.25 * np.eye(pol.dim), rtol=1e-9,
                               atol=1e-12)


def test_the_analytic_path_uses_forward_mode_for_mlp_policies_and_double_vjp_otherwise():
    policies = {case: Policy(case) for case in CASES}
    modes = {case: rlgrad.FisherVectorProduct(pol.dist(), pol.params).jvp_mode
             for case, pol in policies.items()}
    assert modes == {"categorical": "forward", "normal": "forward",
                     "normal_state_log_std": "double_vjp"}
    pol = Policy("normal")
    assert rlgrad.FisherVectorProduct(pol.dist(), pol.params,
                                      method="double_backprop").jvp_mode is None


def test_categorical_fisher_is_the_expected_outer_product_of_the_score():
    """F = 1/N sum_b sum_k p_bk grad log p_bk grad log p_bk^T, exactly over the categories."""
    pol = Policy("categorical", (7,))
    theta = torch.from_numpy(pol.theta0.copy())

    def logp(th):
        return torch.log_softmax(pol.torch_dist(th).logits, -1)

    scores = torch.autograd.functional.jacobian(logp, theta).numpy()  # (N, K, P)
    p = np.exp(logp(theta).numpy())
    expected = np.einsum("bk,bki,bkj->ij", p, scores, scores) / 7
    fvp = rlgrad.FisherVectorProduct(pol.dist(), pol.params)
    np.testing.assert_allclose(dense(fvp), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_fvp_matches_central_differences_of_the_kl_gradient(case):
    """F v ~ (grad KL(pi_old || pi_{theta+eps v}) - grad KL(pi_old || pi_{theta-eps v})) / 2eps."""
    pol = Policy(case)
    rng = np.random.default_rng(1)
    v = rng.standard_normal(pol.dim)
    fv = rlgrad.FisherVectorProduct(pol.dist(), pol.params)(v)
    with rlgrad.no_grad():
        old = pol.dist()

    def kl_grad(theta):
        pol.set_theta(theta)
        kl = old.kl(pol.dist()).mean()
        return flat([g.data for g in rlgrad.grad(kl, pol.params)])

    eps = 1e-5
    numeric = (kl_grad(pol.theta0 + eps * v) - kl_grad(pol.theta0 - eps * v)) / (2 * eps)
    pol.set_theta(pol.theta0)
    np.testing.assert_allclose(fv, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_the_fast_path_equals_double_backprop(case):
    pol = Policy(case, (5, 2), seed=3)
    dist = pol.dist()
    fast = rlgrad.FisherVectorProduct(dist, pol.params, damping=0.1)
    reference = rlgrad.FisherVectorProduct(dist, pol.params, damping=0.1,
                                           method="double_backprop")
    rng = np.random.default_rng(2)
    for _ in range(3):  # the object is reusable: the graph pieces are built once
        v = rng.standard_normal(pol.dim)
        np.testing.assert_allclose(fast(v), reference(v), rtol=1e-10, atol=1e-12)


def test_fisher_vector_product_takes_and_returns_one_array_per_parameter():
    pol = Policy("normal")
    rng = np.random.default_rng(4)
    vs = [rng.standard_normal(p.shape) for p in pol.params]
    out = rlgrad.fisher_vector_product(pol.dist(), pol.params, vs, damping=0.5)
    assert [o.shape for o in out] == pol.shapes
    expected = (pol.torch_fisher() + 0.5 * np.eye(pol.dim)) @ flat(vs)
    np.testing.assert_allclose(flat(out), expected, rtol=1e-9, atol=1e-12)
    fvp = rlgrad.FisherVectorProduct(pol.dist(), pol.params, damping=0.5)
    np.testing.assert_allclose(fvp(fvp.join(vs)), expected, rtol=1e-9, atol=1e-12)
    assert [a.shape for a in fvp.split(fvp.join(vs))] == pol.shapes


def _every_rule(lib, obs, w, b, c, s, w2):
    """A graph through every primitive with a tangent rule."""
    linear = rlgrad.linear if lib is rlgrad else F.linear
    h = linear(obs, w, b).tanh() * c
    # an MLP's fused Linear + tanh stack (rlgrad.nn._layer_stack) against the two torch ops
    stack = (rlgrad.nn._layer_stack(h, [[w2, b, "tanh"]]) if lib is rlgrad
             else torch.tanh(F.linear(h, w2, b)))
    h = h + stack + s.exp()
    h = (-h).sigmoid() / (s * s + 1.0)
    h = ((h @ w2).relu() + (h @ w2).clip(-0.2, 0.2)).reshape(-1)
    return h, h.astype(np.float32) if lib is rlgrad else h.to(torch.float32)


def test_tangent_rules_match_torch_jvp_and_the_double_vjp():
    rng = np.random.default_rng(6)
    obs = rng.standard_normal((5, 3))
    values = [rng.standard_normal(shape) for shape in ((4, 3), (4,), (4,), (4,), (4, 4))]
    tangents = [rng.standard_normal(v.shape) for v in values]
    params = [rlgrad.tensor(v, requires_grad=True) for v in values]
    outputs = list(_every_rule(rlgrad, obs, *params))
    forward = _JacobianProducts(outputs, params)
    assert forward.jvp_mode == "forward"
    used = {node._backward.__code__ for node, _ in forward._plan}
    assert used == set(_TANGENTS) and len(_TANGENTS) == len(_TANGENT_RULES)  # every rule ran
    double_vjp = _JacobianProducts(outputs, params, forward_mode=False)
    assert double_vjp.jvp_mode == "double_vjp"
    _, expected = torch.autograd.functional.jvp(
        lambda *ps: _every_rule(torch, torch.from_numpy(obs), *ps),
        tuple(torch.from_numpy(v) for v in values), tuple(torch.from_numpy(t) for t in tangents))
    got_forward, got_double = forward.jvp(tangents), double_vjp.jvp(tangents)
    for got in (got_forward, got_double):
        np.testing.assert_allclose(got[0], expected[0].numpy(), rtol=1e-10, atol=1e-12)
        assert got[1].dtype == np.float32
        np.testing.assert_allclose(got[1], expected[1].numpy(), rtol=1e-5, atol=1e-6)
    # relu and clip are tested on both sides of their kinks
    w, b, c, s, w2 = values
    h = np.tanh(obs @ w.T + b) * c + np.exp(s)
    z = (1 / (1 + np.exp(h))) / (s * s + 1) @ w2
    assert (z < 0).any() and (z > 0).any() and (abs(z) < 0.2).any() and (abs(z) > 0.2).any()


def test_fvp_leaves_the_graph_parameters_and_grads_as_they_were():
    pol = Policy("normal_state_log_std")  # the double-vjp path marks tensors while it runs
    dist = pol.dist()
    fvp = rlgrad.FisherVectorProduct(dist, pol.params)
    fvp(np.ones(pol.dim))
    assert all(p.requires_grad and p.grad is None for p in pol.params)
    assert dist.mean.requires_grad and dist.log_std.requires_grad
    loss = dist.log_prob(np.zeros((6, N_ACT))).mean()  # the policy's graph still backprops
    loss.backward()
    assert all(p.grad is not None for p in pol.params)


def test_fvp_of_a_float32_gaussian_policy():
    rng = np.random.default_rng(5)
    policy = GaussianPolicy(11, 3, rng=rng)
    obs = rng.standard_normal((64, 11)).astype(np.float32)
    params = list(policy.parameters())
    fvp = rlgrad.FisherVectorProduct(policy(obs), params, damping=0.1)
    assert fvp.jvp_mode == "forward" and fvp.dtype == np.float32
    v = rng.standard_normal(fvp.dim).astype(np.float32)
    out = fvp(v)
    assert out.dtype == np.float32
    reference = rlgrad.FisherVectorProduct(policy(obs), params, damping=0.1,
                                           method="double_backprop")(v)
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-5)
    # the same policy in float64
    p64 = {name: nn.Parameter(p.data, dtype=np.float64) for name, p in policy.named_parameters()}
    h = obs.astype(np.float64)
    for layer in (0, 2, 4):
        h = rlgrad.linear(h, p64[f"net.{layer}.weight"], p64[f"net.{layer}.bias"])
        h = h.tanh() if layer < 4 else h
    exact = rlgrad.FisherVectorProduct(Normal(h, p64["log_std"]), list(p64.values()),
                                       damping=0.1)(v)
    np.testing.assert_allclose(out, exact, rtol=1e-4, atol=1e-5)


def test_detached_copies_values_and_drops_the_graph():
    pol = Policy("normal")
    dist = pol.dist()
    old = _detached(dist)
    assert type(old) is Normal and not old.mean.requires_grad and not old.log_std.requires_grad
    np.testing.assert_array_equal(old.mean.data, dist.mean.data)
    np.testing.assert_array_equal(old.log_std.data, dist.log_std.data)  # clamped alike
    cat = Policy("categorical").dist()
    old_cat = _detached(cat)
    assert type(old_cat) is Categorical and not old_cat.logits.requires_grad
    np.testing.assert_array_equal(old_cat.logits.data, cat.logits.data)

    class Squashed(Normal):
        pass

    with pytest.raises(TypeError, match="Categorical or a Normal"):
        _detached(Squashed(dist.mean, pol.log_std))


def test_fvp_rejects_bad_input():
    pol = Policy("normal")
    dist, params = pol.dist(), pol.params
    good = [np.zeros(p.shape) for p in params]
    with pytest.raises(ValueError, match="4 parameters"):
        rlgrad.fisher_vector_product(dist, params[:4], good)
    with pytest.raises(ValueError, match=r"vectors\[1\] has shape"):
        rlgrad.fisher_vector_product(dist, params, [good[0], np.zeros(3)] + good[2:])
    with pytest.raises(ValueError, match=r"vectors\[0\] is not finite"):
        rlgrad.fisher_vector_product(dist, params, [np.full(params[0].shape, np.nan)]
                                     + good[1:])
    with pytest.raises(TypeError, match="one array per parameter"):
        rlgrad.fisher_vector_product(dist, params, np.zeros(pol.dim))
    for damping in (-1.0, math.inf, math.nan, True, "0.1"):
        with pytest.raises(ValueError, match="damping"):
            rlgrad.FisherVectorProduct(dist, params, damping=damping)
    with pytest.raises(ValueError, match="method"):
        rlgrad.FisherVectorProduct(dist, params, method="kfac")
    with pytest.raises(ValueError, match="empty"):
        rlgrad.FisherVectorProduct(dist, [])
    with pytest.raises(ValueError, match="listed twice"):
        rlgrad.FisherVectorProduct(dist, [params[0], params[0]])
    with pytest.raises(TypeError, match=r"params\[1\]"):
        rlgrad.FisherVectorProduct(dist, [params[0], np.zeros(3)])
    with pytest.raises(TypeError, match="Categorical or a Normal"):
        rlgrad.FisherVectorProduct(Distribution(), params)
    with rlgrad.no_grad():
        detached = pol.dist()
    for method in ("analytic", "double_backprop"):
        with pytest.raises(ValueError, match="does not depend on params"):
            rlgrad.FisherVectorProduct(detached, params, method=method)
    other = nn.Parameter(np.zeros(2), dtype=np.float64)
    for method in ("analytic", "double_backprop"):
        with pytest.raises(ValueError, match="any of params"):
            rlgrad.FisherVectorProduct(pol.dist(), [other], method=method)
    pol.obs[0, 0] = np.nan  # a non-finite observation: the product would be nan
    for method in ("analytic", "double_backprop"):
        with np.errstate(invalid="ignore"):
            broken = rlgrad.FisherVectorProduct(pol.dist(), params, method=method)
            with pytest.raises(ValueError, match="product is not finite"):
                broken(np.ones(pol.dim))
    fvp = rlgrad.FisherVectorProduct(dist, params)
    with pytest.raises(ValueError, match=rf"\({pol.dim},\)"):
        fvp(np.zeros(pol.dim + 1))
    with pytest.raises(ValueError, match="not finite"):
        fvp(np.full(pol.dim, np.inf))


def test_natural_gradient_step_by_cg_equals_the_dense_solution():
    """TRPO's step sqrt(2 delta / (g^T F^-1 g)) F^-1 g: CG on our FVP against numpy.solve."""
    pol = Policy("categorical", (8,), seed=7)
    rng = np.random.default_rng(8)
    actions, adv = rng.integers(0, N_ACT, 8), rng.standard_normal(8)
    dist = pol.dist()
    with rlgrad.no_grad():
        logp_old = pol.dist().log_prob(actions).data
    surrogate = ((dist.log_prob(actions) - logp_old).exp() * adv).mean()
    g = flat([t.data for t in rlgrad.grad(surrogate, pol.params)])
    damping, delta = 0.1, 0.01
    fvp = rlgrad.FisherVectorProduct(dist, pol.params, damping=damping)
    x = rlgrad.conjugate_gradient(fvp, g, iters=3 * pol.dim, tol=1e-28)
    step = math.sqrt(2 * delta / (g @ x)) * x
    x_dense = np.linalg.solve(pol.torch_fisher() + damping * np.eye(pol.dim), g)
    step_dense = math.sqrt(2 * delta / (g @ x_dense)) * x_dense
    np.testing.assert_allclose(step, step_dense, rtol=1e-8, atol=1e-12)
    # the step meets the quadratic trust region exactly: 1/2 s^T (F + damping I) s = delta
    assert 0.5 * step @ fvp(step) == pytest.approx(delta, rel=1e-8)


# --------------------------------------------------------------------------------------------
# the Hessian of a loss
# --------------------------------------------------------------------------------------------


class NetLoss:
    """A REINFORCE loss of a tanh-MLP categorical policy, in rlgrad (on Parameters) and torch
    (on one flat vector), so its Hessian is indefinite and dense."""

    def __init__(self, sizes=(3, 4, 3), batch=7, seed=0) -> None:
        rng = np.random.default_rng(seed)
        self.net = nn.MLP(list(sizes), rng=rng, dtype=np.float64)
        self.params = list(self.net.parameters())
        self.shapes = [p.shape for p in self.params]
        self.obs = rng.standard_normal((batch, sizes[0]))
        self.actions = rng.integers(0, sizes[-1], batch)
        self.adv = rng.standard_normal(batch)
        self.theta0 = flat([p.data for p in self.params])
        self.dim = self.theta0.size

    def loss(self) -> rlgrad.Tensor:
        logp = rlgrad.log_softmax(self.net(self.obs))
        return -(logp[np.arange(len(self.actions)), self.actions] * self.adv).mean()

    def torch_loss(self, theta):
        h = torch.from_numpy(self.obs)
        parts = unflat(theta, self.shapes)
        for i in range(0, len(parts), 2):
            h = F.linear(h, parts[i], parts[i + 1])
            if i + 2 < len(parts):
                h = torch.tanh(h)
        logp = torch.log_softmax(h, -1)
        picked = logp[torch.arange(len(self.actions)), torch.from_numpy(self.actions)]
        return -(picked * torch.from_numpy(self.adv)).mean()

    def torch_hessian(self) -> np.ndarray:
        theta = torch.from_numpy(self.theta0.copy())
        return torch.autograd.functional.hessian(self.torch_loss, theta, vectorize=True).numpy()

    def rlgrad_hessian(self) -> np.ndarray:
        def fn(theta):
            h = self.obs
            parts = [theta[a:b].reshape(shape) for a, b, shape in self._slices()]
            for i in range(0, len(parts), 2):
                h = rlgrad.linear(h, parts[i], parts[i + 1])
                if i + 2 < len(parts):
                    h = h.tanh()
            logp = rlgrad.log_softmax(h)
            return -(logp[np.arange(len(self.actions)), self.actions] * self.adv).mean()

        return rlgrad.hessian(fn, self.theta0)

    def _slices(self):
        start = 0
        for shape in self.shapes:
            size = int(np.prod(shape))
            yield start, start + size, shape
            start += size


def quadratic(eigenvalues, seed=0):
    """loss = 1/2 x^T A x over two parameter tensors, A = Q diag(eigenvalues) Q^T."""
    n = len(eigenvalues)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(eigenvalues) @ q.T
    w = rlgrad.tensor(rng.standard_normal((2, (n - 1) // 2)), requires_grad=True)
    b = rlgrad.tensor(rng.standard_normal(n - w.data.size), requires_grad=True)
    x = rlgrad.concatenate([w.reshape(-1), b])
    return (x * (x @ a)).sum() * 0.5, [w, b]


@pytest.fixture(scope="module")
def net_loss():
    nl = NetLoss()
    h = nl.torch_hessian()
    np.testing.assert_allclose(nl.rlgrad_hessian(), h, rtol=1e-9, atol=1e-12)  # two oracles
    return nl, h


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_hessian_eigenvalues_of_a_network_loss_match_eigvalsh(net_loss, which):
    nl, h = net_loss
    true = np.linalg.eigvalsh(h)
    order = {"LA": np.argsort(-true), "SA": np.argsort(true), "LM": np.argsort(-np.abs(true))}
    expected = true[order[which]][:3]
    got = rlgrad.hessian_eigenvalues(nl.loss(), nl.params, k=3, which=which, rng=0)
    assert got.shape == (3,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * np.abs(true).max())


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_the_order_of_which(which):
    """Known eigenvalues, where the three orders differ: the largest magnitude is negative."""
    eigs = np.array([-5.0, -1.0, 0.5, 2.0, 3.0, 4.5, 0.0, 1.0, -2.0])
    loss, params = quadratic(eigs)
    got = rlgrad.hessian_eigenvalues(loss, params, k=3, which=which, rng=1)
    expected = {"LA": [4.5, 3.0, 2.0], "SA": [-5.0, -2.0, -1.0], "LM": [-5.0, 4.5, 3.0]}[which]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_full_dimension_lanczos_is_exact(net_loss):
    nl, h = net_loss
    true = np.linalg.eigvalsh(h)
    scale = np.abs(true).max()
    for iterations in (None, nl.dim):
        got = rlgrad.hessian_eigenvalues(nl.loss(), nl.params, k=nl.dim, which="SA",
                                         iterations=iterations, rng=2)
        np.testing.assert_allclose(got, true, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("spectrum", ["geometric", "clustered"])
def test_full_dimension_lanczos_is_exact_on_hard_spectra(spectrum):
    """Eleven decades, or thirty eigenvalues within 3e-8 of each other: without
    reorthogonalisation Lanczos loses orthogonality and returns copies of converged values."""
    eigs = (np.geomspace(1e-10, 1.0, 61) if spectrum == "geometric"
            else np.r_[np.ones(30), 1 + 1e-9 * np.arange(30), 5.0])
    loss, params = quadratic(eigs, seed=3)
    got = rlgrad.hessian_eigenvalues(loss, params, k=61, which="SA", rng=3)
    np.testing.assert_allclose(got, np.sort(eigs), rtol=0, atol=1e-13)


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_lanczos_runs_as_long_as_convergence_needs(which, monkeypatch):
    """200 evenly spaced eigenvalues: small relative gaps, so about 90 steps before the test
    passes (the basis grows past its first allocation), and the answer is exact."""
    eigs = np.linspace(1.0, 2.0, 200)
    loss, params = quadratic(eigs, seed=3)
    calls = []
    product = rlgrad.curvature._HessianVectorProduct.__call__
    monkeypatch.setattr(rlgrad.curvature._HessianVectorProduct, "__call__",
                        lambda self, v: calls.append(1) or product(self, v))
    got = rlgrad.hessian_eigenvalues(loss, params, k=3, which=which, rng=3)
    expected = eigs[::-1][:3] if which == "LA" else eigs[:3]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert 40 < len(calls) < 200


def test_lanczos_on_a_larger_network_finds_the_extremes_before_the_dimension():
    nl = NetLoss(sizes=(4, 8, 8, 3), batch=16, seed=3)
    true = np.linalg.eigvalsh(nl.torch_hessian())
    assert nl.dim == 139
    for which, expected in (("LA", true[::-1][:2]), ("SA", true[:2])):
        got = rlgrad.hessian_eigenvalues(nl.loss(), nl.params, k=2, which=which, rng=4)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8 * np.abs(true).max())
    # a fixed, small number of steps: Ritz values, inside the spectrum, near its ends
    few = rlgrad.hessian_eigenvalues(nl.loss(), nl.params, k=1, which="LA", iterations=5,
                                     rng=4)
    assert true[0] <= few[0] <= true[-1] + 1e-12


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_lanczos_breakdown_on_repeated_eigenvalues(which):
    """Four distinct eigenvalues in nine dimensions: the Krylov space of any start vector is an
    invariant subspace of dimension 4, and the iteration must go on from new directions to
    find the multiplicities."""
    c = np.array([3.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 2.0, 5.0])
    x = rlgrad.tensor(np.linspace(-1, 1, 9), requires_grad=True)
    loss = (x * x * c).sum() * 0.5
    got = rlgrad.hessian_eigenvalues(loss, [x], k=9, which=which, rng=5)
    expected = np.sort(c)[::-1] if which == "LA" else np.sort(c)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    top = rlgrad.hessian_eigenvalues(loss, [x], k=2, which=which, rng=5)
    np.testing.assert_allclose(top, expected[:2], rtol=0, atol=1e-12)


def test_lanczos_on_a_zero_hessian():
    """A linear loss: every beta is exactly 0 (H q = 0), each step a breakdown."""
    x = rlgrad.tensor(np.ones(4), requires_grad=True)
    loss = (x * np.arange(4.0)).sum()
    np.testing.assert_array_equal(rlgrad.hessian_eigenvalues(loss, [x], k=4), np.zeros(4))
    assert rlgrad.hessian_trace(loss, [x], samples=3) == 0.0


def test_hessian_eigenvalues_are_reproducible_with_a_seed(net_loss):
    nl, _ = net_loss
    a = rlgrad.hessian_eigenvalues(nl.loss(), nl.params, k=2, iterations=6,
                                   rng=np.random.default_rng(9))
    b = rlgrad.hessian_eigenvalues(nl.loss(), nl.params, k=2, iterations=6,
                                   rng=np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


def test_hessian_eigenvalues_reject_bad_input(net_loss):
    nl, _ = net_loss
    loss = nl.loss()
    with pytest.raises(ValueError, match=f"k={nl.dim + 1} is larger than the dimension"):
        rlgrad.hessian_eigenvalues(loss, nl.params, k=nl.dim + 1)
    for k in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            rlgrad.hessian_eigenvalues(loss, nl.params, k=k)
    for which in ("LR", "la", None):
        with pytest.raises(ValueError, match="which must be one of"):
            rlgrad.hessian_eigenvalues(loss, nl.params, which=which)
    with pytest.raises(ValueError, match="iterations=2 is less than k=3"):
        rlgrad.hessian_eigenvalues(loss, nl.params, k=3, iterations=2)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        rlgrad.hessian_eigenvalues(loss, nl.params, iterations=0)
    with pytest.raises(TypeError, match="rng"):
        rlgrad.hessian_eigenvalues(loss, nl.params, rng="seed")
    with pytest.raises(ValueError, match="scalar"):
        rlgrad.hessian_eigenvalues(nl.net(nl.obs), nl.params)
    with pytest.raises(TypeError, match="loss must be a Tensor"):
        rlgrad.hessian_eigenvalues(1.0, nl.params)
    with rlgrad.no_grad():
        constant = nl.loss()
    with pytest.raises(ValueError, match="does not require grad"):
        rlgrad.hessian_eigenvalues(constant, nl.params)
    x = rlgrad.tensor(np.ones(2), requires_grad=True)
    with np.errstate(all="ignore"):
        with pytest.raises(ValueError, match="loss is not finite"):
            rlgrad.hessian_eigenvalues((x / 0.0).sum(), [x])
        with pytest.raises(ValueError, match="product is not finite"):  # infinite curvature
            rlgrad.hessian_eigenvalues((x * 0.0).sqrt().sum(), [x])


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    c = np.array([3.0, -1.0, 0.5, 2.0, 7.0])
    x = rlgrad.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    y = rlgrad.tensor(np.ones((2, 2)), requires_grad=True)
    loss = (x * x * c).sum() * 0.5 + (y ** 3).sum()  # H = diag(c, 6 y)
    for seed in range(3):
        got = rlgrad.hessian_trace(loss, [x, y], samples=1, rng=seed)
        assert got == pytest.approx(c.sum() + 24.0, rel=1e-14)


def test_hutchinson_mean_is_within_a_few_standard_errors(net_loss):
    nl, h = net_loss
    samples = 400
    got = rlgrad.hessian_trace(nl.loss(), nl.params, samples=samples, rng=11)
    off = h - np.diag(np.diag(h))
    std_err = math.sqrt(2 * (off ** 2).sum() / samples)  # Var z^T H z = 2 sum_{i!=j} H_ij^2
    assert abs(got - np.trace(h)) < 4 * std_err
    # and it is the mean of z^T H z over its Rademacher probes, to rounding
    rng = np.random.default_rng(11)
    probes = [rng.integers(0, 2, nl.dim) * 2.0 - 1.0 for _ in range(samples)]
    assert got == pytest.approx(np.mean([z @ h @ z for z in probes]), rel=1e-10, abs=1e-13)


def test_hessian_trace_rejects_bad_input(net_loss):
    nl, _ = net_loss
    for samples in (0, True, 2.0):
        with pytest.raises(ValueError, match="samples must be a positive integer"):
            rlgrad.hessian_trace(nl.loss(), nl.params, samples=samples)
    with pytest.raises(TypeError, match=r"params\[0\]"):
        rlgrad.hessian_trace(nl.loss(), [np.ones(3)])


# --------------------------------------------------------------------------------------------
# gradient noise scale
# --------------------------------------------------------------------------------------------


def test_noise_scale_equals_the_two_batch_size_estimators_of_the_paper():
    """McCandlish et al. Appendix A: |G|^2 and tr(Sigma) from |G_small|^2 (batch B, the rows)
    and |G_big|^2 (batch k B, their mean)."""
    rng = np.random.default_rng(0)
    k, b = 6, 32
    grads = rng.standard_normal((k, 10)) + 0.8
    g_small = np.mean(np.sum(grads ** 2, axis=1))
    g_big = np.sum(grads.mean(axis=0) ** 2)
    b_small, b_big = b, k * b
    g2 = (b_big * g_big - b_small * g_small) / (b_big - b_small)
    trace = (g_small - g_big) / (1 / b_small - 1 / b_big)
    assert rlgrad.gradient_noise_scale(grads, b) == pytest.approx(trace / g2, rel=1e-12)


def test_noise_scale_recovers_the_true_value_from_many_estimates():
    rng = np.random.default_rng(1)
    p, b, k = 20, 16, 4000
    g_true = rng.standard_normal(p)
    sigma_diag = rng.uniform(0.5, 2.0, p) * 30  # per-example variances
    grads = g_true + rng.standard_normal((k, p)) * np.sqrt(sigma_diag / b)
    expected = sigma_diag.sum() / (g_true @ g_true)
    assert rlgrad.gradient_noise_scale(grads, b) == pytest.approx(expected, rel=0.05)
    # doubling the batch halves the minibatch covariance, not the per-example noise
    grads2 = g_true + rng.standard_normal((k, p)) * np.sqrt(sigma_diag / (2 * b))
    assert rlgrad.gradient_noise_scale(grads2, 2 * b) == pytest.approx(expected, rel=0.05)


def test_noise_scale_is_inf_when_the_noise_swamps_the_gradient():
    assert rlgrad.gradient_noise_scale(np.array([[1.0, -2.0], [-1.0, 2.0]]), 8) == math.inf


def test_noise_scale_rejects_bad_input():
    good = np.ones((3, 4))
    for bad in (np.ones(4), np.ones((1, 4)), np.ones((3, 0)), np.ones((2, 2, 2))):
        with pytest.raises(ValueError, match=r"shape \(k, P\)"):
            rlgrad.gradient_noise_scale(bad, 4)
    with pytest.raises(ValueError, match="not finite"):
        rlgrad.gradient_noise_scale(np.array([[1.0, np.nan], [0.0, 1.0]]), 4)
    with pytest.raises(TypeError, match="real numbers"):
        rlgrad.gradient_noise_scale(np.array([["a", "b"], ["c", "d"]]), 4)
    for batch_size in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            rlgrad.gradient_noise_scale(good, batch_size)
