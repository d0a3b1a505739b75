"""Newton's method, and the second-order tools it stands on (hvp, hessian, conjugate_gradient)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlgrad
from rlgrad import nn, optim
from rlgrad.optim.newton import flat_hessian
from rlgrad.tensor import Tensor


def _spd(rng: np.random.Generator, n: int, cond: float = 50.0) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.geomspace(1.0, cond, n)) @ q.T


def _flat(params: list[Tensor]) -> np.ndarray:
    return np.concatenate([p.data.ravel() for p in params])


# --------------------------------------------------------------------------------------------
# Newton
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_one_step_minimises_a_quadratic(seed):
    rng = np.random.default_rng(seed)
    params = [
        Tensor(rng.normal(size=(2, 3)), requires_grad=True),  # a matrix
        Tensor(rng.normal(size=4), requires_grad=True),  # a vector
        Tensor(rng.normal(), requires_grad=True),  # a scalar
    ]
    n = 11
    a, b = _spd(rng, n), rng.normal(size=n)

    def closure():
        x = rlgrad.concatenate([p.reshape(-1) for p in params])
        return 0.5 * (x @ (a @ x)) - b @ x

    opt = optim.Newton(params, damping=0.0)
    loss = opt.step(closure)
    assert isinstance(loss, Tensor)
    np.testing.assert_allclose(_flat(params), np.linalg.solve(a, b), rtol=0, atol=1e-8)
    assert params[0].shape == (2, 3) and params[2].shape == ()
    assert all(opt.state[p]["step"] == 1 for p in params)


def _logistic_data(seed: int = 0, n: int = 200, d: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    logits = x @ np.array([1.5, -2.0, 0.5]) + 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(float)  # noisy: not separable
    return x, y


def _numpy_newton(x, y, theta, steps):
    """Newton on the mean logistic loss by hand: g = X^T (p - y) / n, H = X^T S X / n."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    out = [theta.copy()]
    for _ in range(steps):
        p = 1 / (1 + np.exp(-xb @ theta))
        g = xb.T @ (p - y) / len(y)
        h = (xb * (p * (1 - p))[:, None]).T @ xb / len(y)
        theta = theta - np.linalg.solve(h, g)
        out.append(theta.copy())
    return out


def test_quadratic_convergence_on_logistic_regression():
    x, y = _logistic_data()
    w = Tensor(np.zeros(3), requires_grad=True)
    c = Tensor(0.0, requires_grad=True)

    def closure():
        z = x @ w + c
        # log(1 + e^z) - y z, the negative log-likelihood of a Bernoulli with logit z
        return ((1 + z.exp()).log() - y * z).mean()

    opt = optim.make("newton", [w, c], damping=0.0)
    reference = _numpy_newton(x, y, np.zeros(4), 10)
    optimum = reference[-1]
    errors = [np.linalg.norm(_flat([w, c]) - optimum)]
    for k in range(1, 8):
        opt.step(closure)
        np.testing.assert_allclose(_flat([w, c]), reference[k], rtol=1e-10, atol=1e-12)
        errors.append(np.linalg.norm(_flat([w, c]) - optimum))
    # quadratic convergence: e_{k+1} <= C e_k^2 while the error is above rounding
    pairs = [(e0, e1) for e0, e1 in zip(errors, errors[1:]) if e0 > 1e-7]
    assert len(pairs) >= 5
    for e0, e1 in pairs:
        assert e1 <= 1.0 * e0**2, errors
    assert errors[-1] < 1e-12


def test_hessian_matches_torch_for_an_mlp_loss():
    rng = np.random.default_rng(0)
    model = nn.MLP([3, 4, 2], activation="tanh", rng=rng, dtype=np.float64)
    x, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    params = list(model.parameters())
    g, h = flat_hessian(((model(x) - t) ** 2).mean(), params)

    shapes = [p.shape for p in params]
    sizes = [p.data.size for p in params]
    xt, tt = torch.tensor(x), torch.tensor(t)

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = (c.reshape(s) for c, s in zip(flat.split(sizes), shapes))
        return ((torch.tanh(xt @ w1.T + b1) @ w2.T + b2 - tt) ** 2).mean()

    theta = torch.tensor(_flat(params), requires_grad=True)
    h_torch = torch.autograd.functional.hessian(loss_of, theta).numpy()
    (g_torch,) = torch.autograd.grad(loss_of(theta), theta)
    assert h.shape == (26, 26)
    np.testing.assert_allclose(g, g_torch.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h, h_torch, rtol=1e-9, atol=1e-12)


def test_param_groups_and_state_dict_round_trip():
    rng = np.random.default_rng(3)
    a = _spd(rng, 3)
    u, v = Tensor(np.ones(2), requires_grad=True), Tensor(1.0, requires_grad=True)

    def closure():
        x = rlgrad.concatenate([u, v.reshape(1)])
        return 0.5 * (x @ (a @ x))

    opt = optim.Newton([{"params": [u], "lr": 0.5}, {"params": [v]}], damping=0.0)
    start = _flat([u, v])
    d = np.linalg.solve(a, a @ start)  # the full Newton step
    opt.step(closure)
    np.testing.assert_allclose(_flat([u, v]), start - np.array([0.5, 0.5, 1.0]) * d, atol=1e-12)

    state = opt.state_dict()
    assert state["state"][0] == {"step": 1}
    assert state["param_groups"][0]["lr"] == 0.5
    fresh = optim.Newton([{"params": [u]}, {"params": [v]}])
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == 0.5 and fresh.param_groups[1]["damping"] == 0.0
    assert fresh.state[v]["step"] == 1


def test_damping_blends_towards_gradient_descent():
    a = np.diag([1.0, 100.0])
    x = Tensor(np.array([1.0, 1.0]), requires_grad=True)
    opt = optim.Newton([x], damping=1e6)
    opt.step(lambda: 0.5 * (x @ (a @ x)))
    # (H + lambda I)^{-1} g with a huge lambda is about g / lambda
    np.testing.assert_allclose(x.data, [1 - 1 / (1 + 1e6), 1 - 100 / (100 + 1e6)], rtol=1e-12)


def test_missing_closure():
    x = Tensor(np.ones(2), requires_grad=True)
    opt = optim.Newton([x])
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
    with pytest.raises(TypeError, match="closure must return the loss as a Tensor"):
        opt.step(lambda: 1.0)


def test_too_many_params():
    big = Tensor(np.zeros((40, 60)), requires_grad=True)
    with pytest.raises(ValueError, match=r"2400 parameters, more than max_params=2000.*Hessian"):
        optim.Newton([big])
    optim.Newton([big], max_params=2400)  # allowed when asked for
    opt = optim.Newton([Tensor(np.zeros(10), requires_grad=True)], max_params=15)
    with pytest.raises(ValueError, match="16 parameters, more than max_params=15"):
        opt.add_param_group({"params": [Tensor(np.zeros(6), requires_grad=True)]})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="max_params"):
        optim.Newton([big], max_params=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"lr": 0.0}, "Invalid learning rate: 0.0"), ({"lr": -1.0}, "Invalid learning rate: -1.0"),
     ({"damping": -1e-3}, "Invalid damping value: -0.001")],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optim.Newton([Tensor(np.ones(2), requires_grad=True)], **kwargs)


def test_singular_hessian_asks_for_damping():
    x = Tensor(np.ones(2), requires_grad=True)
    unused = Tensor(np.ones(1), requires_grad=True)
    opt = optim.Newton([x, unused], damping=0.0)
    with pytest.raises(ValueError, match="singular.*Raise damping"):
        opt.step(lambda: (x * x).sum())
    # with damping the unused parameter simply stays where it is
    optim.Newton([x, unused], damping=1e-3).step(lambda: (x * x).sum())
    np.testing.assert_allclose(x.data, 1 - 2 / (2 + 1e-3))
    np.testing.assert_array_equal(unused.data, [1.0])


def test_non_scalar_loss_and_non_finite():
    x = Tensor(np.ones(2), requires_grad=True)
    opt = optim.Newton([x])
    with pytest.raises(ValueError, match="one element"):
        opt.step(lambda: x * x)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="not finite"):
        opt.step(lambda: (x * np.inf).sum() * x.sum())


# --------------------------------------------------------------------------------------------
# the tools: hvp, hessian, conjugate_gradient
# --------------------------------------------------------------------------------------------

FUNCTIONS = {
    # name: (rlgrad function, torch function) of a vector x
    "rosenbrock": (
        lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(),
        lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(),
    ),
    "logsumexp_tanh": (
        lambda x: rlgrad.logsumexp(x.tanh() * x) + (x.sigmoid() * x[::-1]).sum(),
        lambda x: torch.logsumexp(torch.tanh(x) * x, 0) + (torch.sigmoid(x) * x.flip(0)).sum(),
    ),
}


def _fd_hessian(f, x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central differences of the engine's gradient, column by column."""

    def gradient(v):
        t = Tensor(v, requires_grad=True)
        f(t).backward()
        return t.grad

    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = eps
        cols.append((gradient(x + e) - gradient(x - e)) / (2 * eps))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_hessian_and_hvp_against_finite_differences_and_torch(name):
    f, f_torch = FUNCTIONS[name]
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=5) * 0.5
    v = rng.normal(size=5)
    h = rlgrad.hessian(f, x0)
    h_torch = torch.autograd.functional.hessian(f_torch, torch.tensor(x0)).numpy()
    np.testing.assert_allclose(h, h_torch, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(h, _fd_hessian(f, x0), rtol=1e-5, atol=1e-5)

    x = Tensor(x0, requires_grad=True)
    (hv,) = rlgrad.hvp(f(x), [x], [v])
    _, hv_torch = torch.autograd.functional.hvp(f_torch, torch.tensor(x0), torch.tensor(v))
    np.testing.assert_allclose(hv, hv_torch.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hv, h @ v, rtol=1e-10, atol=1e-10)


def test_hvp_over_several_params_matches_flat_hessian():
    rng = np.random.default_rng(1)
    w = Tensor(rng.normal(size=(2, 3)), requires_grad=True)
    b = Tensor(rng.normal(size=2), requires_grad=True)
    x = rng.normal(size=(4, 3))
    loss = ((x @ w.T + b).tanh() ** 2).sum()
    vw, vb = rng.normal(size=(2, 3)), rng.normal(size=2)
    hw, hb = rlgrad.hvp(loss, [w, b], [vw, vb])
    _, h = flat_hessian(loss, [w, b])
    np.testing.assert_allclose(np.concatenate([hw.ravel(), hb]),
                               h @ np.concatenate([vw.ravel(), vb]), rtol=1e-10, atol=1e-12)


def test_conjugate_gradient_solves_an_spd_system():
    rng = np.random.default_rng(2)
    a, b = _spd(rng, 8, cond=100.0), rng.normal(size=8)
    x = rlgrad.conjugate_gradient(lambda p: a @ p, b, iters=50, tol=1e-28)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    # a few iterations give a worse, but still improving, answer
    errors = [np.linalg.norm(rlgrad.conjugate_gradient(lambda p: a @ p, b, iters=k)
                             - np.linalg.solve(a, b)) for k in (1, 4, 8)]
    assert errors[0] > errors[2]


def test_newton_step_by_hvp_and_cg_equals_newton():
    """The Hessian-free step TRPO takes: solve H d = g with CG on hvp products."""
    rng = np.random.default_rng(4)
    x, y = _logistic_data(seed=4)
    w0 = rng.normal(size=3) * 0.1
    w = Tensor(w0, requires_grad=True)

    def closure():
        z = x @ w
        return ((1 + z.exp()).log() - y * z).mean()

    loss = closure()
    (g,) = rlgrad.grad(loss, [w])
    d = rlgrad.conjugate_gradient(lambda v: rlgrad.hvp(closure(), [w], [v])[0], g.data,
                                  iters=10, tol=1e-30)
    optim.Newton([w], damping=0.0).step(closure)
    np.testing.assert_allclose(w.data, w0 - d, rtol=1e-9, atol=1e-12)
