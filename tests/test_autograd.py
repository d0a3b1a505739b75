"""rlgrad.autograd: grad, double backprop, hvp, hessian, jacobian, conjugate_gradient, gradcheck.

Second derivatives are compared with torch (double backward, torch.autograd.functional) and with
central differences of first derivatives, in float64.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - torch's usual name

import rlgrad
from rlgrad.autograd import GradcheckError
from rlgrad.tensor import Tensor, _result

RTOL, ATOL = 1e-9, 1e-12


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def leaf(a):
    return rlgrad.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def tleaf(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


# --------------------------------------------------------------------------------------------
# scalar test functions of a flat float64 vector, written twice: rlgrad and torch
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(0)
OBS = _rng.standard_normal((5, 3))
ACTIONS = np.array([0, 1, 1, 0, 1])
ADV = _rng.standard_normal(5)
C6 = _rng.standard_normal(6)
C23 = _rng.standard_normal((2, 3))
A66 = _rng.standard_normal((6, 6))

# a 3 -> 4 -> 2 tanh policy: W1 (4, 3), b1 (4,), W2 (2, 4), b2 (2,) packed in a 26-vector
_SLICES = [(0, 12, (4, 3)), (12, 16, (4,)), (16, 24, (2, 4)), (24, 26, (2,))]


def unpack(x):
    return [x[a:b].reshape(*shape) for a, b, shape in _SLICES]


def pg_loss(x):
    """REINFORCE loss of a categorical tanh-MLP policy: -mean(A * log pi(a|s))."""
    w1, b1, w2, b2 = unpack(x)
    logp = rlgrad.log_softmax(rlgrad.linear(rlgrad.linear(OBS, w1, b1).tanh(), w2, b2))
    return -(logp[np.arange(5), ACTIONS] * ADV).mean()


def pg_loss_torch(x):
    w1, b1, w2, b2 = unpack(x)
    h = F.linear(torch.from_numpy(OBS), w1, b1).tanh()
    logp = torch.log_softmax(F.linear(h, w2, b2), -1)
    return -(logp[torch.arange(5), torch.from_numpy(ACTIONS)] * torch.from_numpy(ADV)).mean()


def pg_loss_matmul(x):
    """The same policy written with @, broadcasting + and .T instead of linear."""
    w1, b1, w2, b2 = unpack(x)
    h = (OBS @ w1.T + b1).tanh()
    logp = rlgrad.log_softmax(h @ w2.T + b2, axis=-1)
    return -(logp[np.arange(5), ACTIONS] * ADV).sum() / 5


def pg_loss_matmul_torch(x):
    w1, b1, w2, b2 = unpack(x)
    h = (torch.from_numpy(OBS) @ w1.T + b1).tanh()
    logp = torch.log_softmax(h @ w2.T + b2, -1)
    return -(logp[torch.arange(5), torch.from_numpy(ACTIONS)] * torch.from_numpy(ADV)).sum() / 5


def _t(a):
    return torch.from_numpy(a)


# name: (rlgrad fn, torch fn, size of x)
FUNCS = {
    "pg_loss": (pg_loss, pg_loss_torch, 26),
    "pg_loss_matmul": (pg_loss_matmul, pg_loss_matmul_torch, 26),
    "softmax": (
        lambda x: (rlgrad.softmax(x.reshape(2, 3)) * C23).sum() + rlgrad.softmax(x)[2],
        lambda x: (torch.softmax(x.reshape(2, 3), -1) * _t(C23)).sum() + torch.softmax(x, 0)[2],
        6,
    ),
    "softmax_axis0": (
        lambda x: (rlgrad.softmax(x.reshape(2, 3), axis=0) ** 2 * C23).sum(),
        lambda x: (torch.softmax(x.reshape(2, 3), 0) ** 2 * _t(C23)).sum(),
        6,
    ),
    "logsumexp": (
        lambda x: (
            (rlgrad.logsumexp(x.reshape(2, 3), axis=1) * np.array([1.0, -2.0])).sum()
            + rlgrad.logsumexp(x * C6)
        ),
        lambda x: (
            (
                torch.logsumexp(x.reshape(2, 3), 1) * torch.tensor([1.0, -2.0], dtype=torch.float64)
            ).sum()
            + torch.logsumexp(x * _t(C6), 0)
        ),
        6,
    ),
    "log_softmax": (
        lambda x: (rlgrad.log_softmax(x.reshape(3, 2)) * C6.reshape(3, 2)).sum(),
        lambda x: (torch.log_softmax(x.reshape(3, 2), -1) * _t(C6).reshape(3, 2)).sum(),
        6,
    ),
    "sigmoid": (
        lambda x: (x.sigmoid() * C6).sum() + (x.sigmoid() ** 2).sum(),
        lambda x: (x.sigmoid() * _t(C6)).sum() + (x.sigmoid() ** 2).sum(),
        6,
    ),
    "division": (
        lambda x: (x / (1 + x * x)).sum() + (C6 / (x * x + 1)).sum() + (x[0] / x[1:]).sum(),
        lambda x: (x / (1 + x * x)).sum() + (_t(C6) / (x * x + 1)).sum() + (x[0] / x[1:]).sum(),
        6,
    ),
    "pow": (
        lambda x: (
            (x**3).sum()
            + ((x * x + 1) ** 1.5).sum()
            + (2**x).sum()
            + ((x * x + 1) ** (x * 0.5)).sum()
            + ((x * x + 2) ** -1).sum()
        ),
        lambda x: (
            (x**3).sum()
            + ((x * x + 1) ** 1.5).sum()
            + (2**x).sum()
            + ((x * x + 1) ** (x * 0.5)).sum()
            + ((x * x + 2) ** -1).sum()
        ),
        6,
    ),
    "matmul": (
        lambda x: (
            (x.reshape(2, 3) @ x.reshape(3, 2)).tanh().sum()
            + x @ A66 @ x
            + (x @ x.reshape(6, 1)).sum() * (x[:3] @ x[3:])
        ),
        lambda x: (
            (x.reshape(2, 3) @ x.reshape(3, 2)).tanh().sum()
            + x @ _t(A66) @ x
            + (x @ x.reshape(6, 1)).sum() * (x[:3] @ x[3:])
        ),
        6,
    ),
    "batched_matmul": (
        lambda x: ((x.reshape(2, 1, 3) @ x.reshape(1, 3, 2)) ** 2).sum(),
        lambda x: ((x.reshape(2, 1, 3) @ x.reshape(1, 3, 2)) ** 2).sum(),
        6,
    ),
    "indexing": (
        lambda x: (
            (x[np.array([0, 0, 3])] ** 3).sum()
            + x[1] * x[-1] * x[2:4].sum()
            + (x.reshape(2, 3)[np.array([1, 1]), np.array([2, 2])] ** 2).sum()
            + (x.reshape(2, 3)[:, None, 1:] ** 2).sum()
            + (x[x.data > 0] ** 3).sum()
        ),
        lambda x: (
            (x[torch.tensor([0, 0, 3])] ** 3).sum()
            + x[1] * x[-1] * x[2:4].sum()
            + (x.reshape(2, 3)[torch.tensor([1, 1]), torch.tensor([2, 2])] ** 2).sum()
            + (x.reshape(2, 3)[:, None, 1:] ** 2).sum()
            + (x[x > 0] ** 3).sum()
        ),
        6,
    ),
    "max": (
        lambda x: (x.reshape(2, 3) ** 2).max(axis=1).sum() * x.sum() + (x**3).max(),
        lambda x: (x.reshape(2, 3) ** 2).amax(1).sum() * x.sum() + (x**3).amax(),
        6,
    ),
    "exp_log_sqrt_abs": (
        lambda x: (
            (x.exp() * x).sum()
            + (x * x + 1).log().sum()
            + (x * x + 1).sqrt().sum()
            + (x.abs() ** 3).sum()
            + x.tanh().mean() ** 2
        ),
        lambda x: (
            (x.exp() * x).sum()
            + (x * x + 1).log().sum()
            + (x * x + 1).sqrt().sum()
            + (x.abs() ** 3).sum()
            + x.tanh().mean() ** 2
        ),
        6,
    ),
    "clip_relu_where": (
        lambda x: (
            (x.clip(-0.5, 0.7) ** 2).sum()
            + (x.relu() ** 3).sum()
            + rlgrad.where(x.data > 0, x * x, x * x * x).sum()
        ),
        lambda x: (
            (x.clamp(-0.5, 0.7) ** 2).sum()
            + (x.relu() ** 3).sum()
            + torch.where(x > 0, x * x, x * x * x).sum()
        ),
        6,
    ),
    "concatenate_stack": (
        lambda x: (
            (rlgrad.concatenate([x[:3] ** 2, x[3:] * x[:3]]) * C6).sum() ** 2
            + (rlgrad.stack([x[:3], x[3:]], axis=1) ** 3).sum()
        ),
        lambda x: (
            (torch.cat([x[:3] ** 2, x[3:] * x[:3]]) * _t(C6)).sum() ** 2
            + (torch.stack([x[:3], x[3:]], 1) ** 3).sum()
        ),
        6,
    ),
    "reductions_broadcast": (
        lambda x: (
            (x.reshape(2, 3).mean(axis=0) ** 2).sum()
            + (x.reshape(2, 3).sum(axis=1, keepdims=True) * x.reshape(2, 3)).tanh().sum()
            + ((x.reshape(2, 3) * x[:3]).sum() ** 2)
            + (x.reshape(2, 3).T @ C23).sum() ** 2
        ),
        lambda x: (
            (x.reshape(2, 3).mean(0) ** 2).sum()
            + (x.reshape(2, 3).sum(1, keepdim=True) * x.reshape(2, 3)).tanh().sum()
            + ((x.reshape(2, 3) * x[:3]).sum() ** 2)
            + (x.reshape(2, 3).T @ _t(C23)).sum() ** 2
        ),
        6,
    ),
    "linear": (
        lambda x: (
            rlgrad.linear(OBS, x.reshape(2, 3), x[:2] * x[2:4]).tanh().sum()
            + rlgrad.linear(x[:3], x.reshape(2, 3)).exp().sum()
        ),
        lambda x: (
            F.linear(_t(OBS), x.reshape(2, 3), x[:2] * x[2:4]).tanh().sum()
            + F.linear(x[:3], x.reshape(2, 3)).exp().sum()
        ),
        6,
    ),
}


def x0(size, seed=1):
    x = np.random.default_rng(seed).standard_normal(size) * 0.8
    return np.where(np.abs(x) < 0.1, x + 0.3, x)  # keep away from the kinks of abs and relu


def x0_clip(size, seed=1):
    x = x0(size, seed)
    for edge in (-0.5, 0.7):  # and from those of clip
        x = np.where(np.abs(x - edge) < 0.05, x + 0.1, x)
    return x


def start(name):
    return x0_clip(FUNCS[name][2])


def rl_grad_value(fn, x):
    xt = leaf(x)
    (g,) = rlgrad.grad(fn(xt), [xt])
    return g.data


# --------------------------------------------------------------------------------------------
# grad
# --------------------------------------------------------------------------------------------


def test_grad_matches_torch_and_leaves_dot_grad_alone():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(4)
    xa, xb = leaf(a), leaf(b)
    out = ((xa * xb).tanh() @ xb).sum()
    ga, gb = rlgrad.grad(out, [xa, xb])
    ta, tb = tleaf(a), tleaf(b)
    ea, eb = torch.autograd.grad(((ta * tb).tanh() @ tb).sum(), [ta, tb])
    assert isinstance(ga, rlgrad.Tensor) and ga.shape == a.shape and gb.shape == b.shape
    assert not ga.requires_grad
    assert_close(ga.data, ea.numpy())
    assert_close(gb.data, eb.numpy())
    assert xa.grad is None and xb.grad is None
    (g_single,) = rlgrad.grad(out, xa)  # a single tensor works too
    assert_close(g_single.data, ea.numpy())


def test_grad_with_grad_output_and_several_outputs():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3))
    v1, v2 = rng.standard_normal((2, 3)), rng.standard_normal(2)
    x, t = leaf(a), tleaf(a)
    outs = [x.exp() * x, rlgrad.log_softmax(x).sum(axis=1)]
    touts = [t.exp() * t, torch.log_softmax(t, -1).sum(1)]
    (g,) = rlgrad.grad(outs, [x], grad_output=[v1, v2])
    (e,) = torch.autograd.grad(touts, [t], grad_outputs=[_t(v1), _t(v2)], retain_graph=True)
    assert_close(g.data, e.numpy())
    (g,) = rlgrad.grad(outs[0], [x], grad_output=rlgrad.tensor(v1))
    (e,) = torch.autograd.grad(touts[0], [t], grad_outputs=_t(v1))
    assert_close(g.data, e.numpy())


def test_grad_with_respect_to_an_intermediate_tensor():
    a = np.array([0.3, -0.7, 1.1])
    x, t = leaf(a), tleaf(a)
    h, ht = x.tanh(), t.tanh()
    gh, gx = rlgrad.grad((h * h * x).sum(), [h, x])
    eh, ex = torch.autograd.grad((ht * ht * t).sum(), [ht, t])
    assert_close(gh.data, eh.numpy())
    assert_close(gx.data, ex.numpy())


def test_grad_errors():
    x, y = leaf([1.0, 2.0]), leaf([3.0])
    out = (x * x).sum()
    with pytest.raises(ValueError):
        rlgrad.grad(out, [x, y])  # y unused
    gx, gy = rlgrad.grad(out, [x, y], allow_unused=True)
    assert gy is None and gx is not None
    with pytest.raises(ValueError):
        rlgrad.grad(out, [rlgrad.tensor([1.0])])  # does not require grad
    with pytest.raises(ValueError):
        rlgrad.grad(x * 2, [x])  # non-scalar output without grad_output
    with pytest.raises(ValueError):
        rlgrad.grad(x * 2, [x], grad_output=np.ones(3))
    with pytest.raises(RuntimeError):
        rlgrad.grad(rlgrad.tensor([1.0]).sum(), [x])


def test_grad_keeps_float32():
    x = rlgrad.tensor(np.array([0.5, 1.5], dtype=np.float32), requires_grad=True)
    (g,) = rlgrad.grad((x.tanh() * 2).max(), [x])
    assert g.dtype == np.float32
    (g,) = rlgrad.grad((x.tanh() * 2).max(), [x], create_graph=True)
    assert g.dtype == np.float32


# --------------------------------------------------------------------------------------------
# double backprop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FUNCS))
def test_double_backward_matches_torch(name):
    rl_fn, t_fn, _ = FUNCS[name]
    x_np = start(name)
    v = np.random.default_rng(4).standard_normal(x_np.shape)
    x, t = leaf(x_np), tleaf(x_np)
    out, tout = rl_fn(x), t_fn(t)
    assert_close(out.data, tout.detach().numpy(), what="value")
    (g,) = rlgrad.grad(out, [x], create_graph=True)
    (tg,) = torch.autograd.grad(tout, [t], create_graph=True)
    assert g.requires_grad
    assert_close(g.data, tg.detach().numpy(), what="first derivative")
    (gg,) = rlgrad.grad((g * v).sum(), [x])
    (tgg,) = torch.autograd.grad((tg * _t(v)).sum(), [t], retain_graph=True)
    assert_close(gg.data, tgg.numpy(), rtol=1e-8, atol=1e-10, what="second derivative")
    # a gradient penalty through backward(): .grad receives the second-order term
    (g * g).sum().backward()
    (tg * tg).sum().backward()
    assert_close(x.grad, t.grad.numpy(), rtol=1e-8, atol=1e-10, what="gradient penalty")


@pytest.mark.parametrize("name", ["exp_log_sqrt_abs", "sigmoid", "log_softmax", "pow"])
def test_third_derivative_matches_torch(name):
    rl_fn, t_fn, _ = FUNCS[name]
    x_np = start(name)
    x, t = leaf(x_np), tleaf(x_np)
    (g,) = rlgrad.grad(rl_fn(x), [x], create_graph=True)
    (tg,) = torch.autograd.grad(t_fn(t), [t], create_graph=True)
    (gg,) = rlgrad.grad(g[0] * g[1], [x], create_graph=True)
    (tgg,) = torch.autograd.grad(tg[0] * tg[1], [t], create_graph=True)
    (ggg,) = rlgrad.grad(gg.sum(), [x])
    (tggg,) = torch.autograd.grad(tgg.sum(), [t])
    assert_close(ggg.data, tggg.numpy(), rtol=1e-8, atol=1e-10)


def test_double_backward_through_an_intermediate_input():
    # d/dx of (dL/dh . v), h = tanh(x): the input of grad() is not a leaf
    a = np.array([0.2, -0.4, 0.9])
    v = np.array([1.0, 2.0, -1.0])
    x, t = leaf(a), tleaf(a)
    h, ht = (x * 2).tanh(), (t * 2).tanh()
    (gh,) = rlgrad.grad((h**3).sum() * h[0], [h], create_graph=True)
    (tgh,) = torch.autograd.grad((ht**3).sum() * ht[0], [ht], create_graph=True)
    (gx,) = rlgrad.grad((gh * v).sum(), [x])
    (tgx,) = torch.autograd.grad((tgh * _t(v)).sum(), [t])
    assert_close(gx.data, tgx.numpy())


# --------------------------------------------------------------------------------------------
# hvp and hessian
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FUNCS))
def test_hessian_matches_torch(name):
    rl_fn, t_fn, _ = FUNCS[name]
    x_np = start(name)
    h = rlgrad.hessian(rl_fn, x_np)
    expected = torch.autograd.functional.hessian(t_fn, _t(x_np.copy())).numpy()
    assert h.shape == x_np.shape * 2
    assert_close(h, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", list(FUNCS))
def test_hessian_matches_finite_differences_of_gradients(name):
    rl_fn, _, _ = FUNCS[name]
    x_np = start(name)
    h = rlgrad.hessian(rl_fn, x_np)
    eps = 1e-5
    numeric = np.zeros_like(h)
    for j in range(x_np.size):
        e = np.zeros_like(x_np)
        e[j] = eps
        numeric[:, j] = (rl_grad_value(rl_fn, x_np + e) - rl_grad_value(rl_fn, x_np - e)) / (
            2 * eps
        )
    assert_close(h, numeric, rtol=1e-5, atol=1e-6)
    assert_close(h, h.T, rtol=1e-9, atol=1e-12, what="symmetry")


@pytest.mark.parametrize("name", list(FUNCS))
def test_hvp_matches_torch_and_finite_differences(name):
    rl_fn, t_fn, _ = FUNCS[name]
    x_np = start(name)
    v = np.random.default_rng(5).standard_normal(x_np.shape)
    x = leaf(x_np)
    (hv,) = rlgrad.hvp(rl_fn(x), [x], [v])
    assert isinstance(hv, np.ndarray) and hv.shape == x_np.shape
    _, expected = torch.autograd.functional.hvp(t_fn, _t(x_np.copy()), _t(v))
    assert_close(hv, expected.numpy(), rtol=1e-8, atol=1e-10)
    eps = 1e-5
    numeric = (rl_grad_value(rl_fn, x_np + eps * v) - rl_grad_value(rl_fn, x_np - eps * v)) / (
        2 * eps
    )
    assert_close(hv, numeric, rtol=1e-5, atol=1e-6)


def test_hvp_over_several_parameter_tensors():
    """Natural-gradient style: H v over the separate weight and bias tensors of a policy."""
    rng = np.random.default_rng(6)
    flat = rng.standard_normal(26) * 0.5
    params = [leaf(p.copy()) for p in (flat[a:b].reshape(s) for a, b, s in _SLICES)]
    vs = [rng.standard_normal(p.shape) for p in params]

    def loss(w1, b1, w2, b2):
        logp = rlgrad.log_softmax(rlgrad.linear(rlgrad.linear(OBS, w1, b1).tanh(), w2, b2))
        return -(logp[np.arange(5), ACTIONS] * ADV).mean()

    def tloss(w1, b1, w2, b2):
        return pg_loss_torch(torch.cat([w1.reshape(-1), b1, w2.reshape(-1), b2]))

    hv = rlgrad.hvp(loss(*params), params, vs)
    _, expected = torch.autograd.functional.hvp(
        tloss, tuple(_t(p.data.copy()) for p in params), tuple(_t(v) for v in vs)
    )
    for h, e, p in zip(hv, expected, params):
        assert h.shape == p.shape
        assert_close(h, e.numpy(), rtol=1e-8, atol=1e-10)
    for p in params:
        assert p.grad is None


def test_hvp_of_a_linear_function_and_of_an_unused_parameter():
    x, y = leaf([1.0, 2.0]), leaf([3.0])
    hx, hy = rlgrad.hvp((x * 3).sum(), [x, y], [np.ones(2), np.ones(1)])
    np.testing.assert_array_equal(hx, np.zeros(2))
    np.testing.assert_array_equal(hy, np.zeros(1))
    with pytest.raises(ValueError):
        rlgrad.hvp((x * x).sum(), [x], [np.ones(3)])


def test_hessian_closed_form_and_errors():
    a = np.random.default_rng(7).standard_normal((4, 4))
    h = rlgrad.hessian(lambda x: x @ a @ x, np.arange(4.0))
    assert_close(h, a + a.T)
    h = rlgrad.hessian(lambda x: (x * 2).sum(), np.arange(3.0))
    np.testing.assert_array_equal(h, np.zeros((3, 3)))
    h = rlgrad.hessian(lambda x: (x**3).sum(), np.ones((2, 2)))
    assert h.shape == (2, 2, 2, 2)
    assert_close(h.reshape(4, 4), np.diag(np.full(4, 6.0)))
    with pytest.raises(ValueError):
        rlgrad.hessian(lambda x: x * 2, np.ones(3))


# --------------------------------------------------------------------------------------------
# jacobian
# --------------------------------------------------------------------------------------------

JACOBIANS = {
    "tanh": (lambda x: x.tanh(), torch.tanh),
    "softmax": (rlgrad.softmax, lambda x: torch.softmax(x, -1)),
    "log_softmax_2d": (
        lambda x: rlgrad.log_softmax(x.reshape(2, 3)),
        lambda x: torch.log_softmax(x.reshape(2, 3), -1),
    ),
    "matmul": (
        lambda x: x.reshape(2, 3) @ A66[:3, :4],
        lambda x: x.reshape(2, 3) @ _t(A66[:3, :4]),
    ),
    "outer": (
        lambda x: x.reshape(6, 1) * x.reshape(1, 6),
        lambda x: x.reshape(6, 1) * x.reshape(1, 6),
    ),
    "index": (
        lambda x: x[np.array([5, 0, 0])] * x[1],
        lambda x: x[torch.tensor([5, 0, 0])] * x[1],
    ),
    "scalar": (lambda x: rlgrad.logsumexp(x), lambda x: torch.logsumexp(x, 0)),
}


@pytest.mark.parametrize("name", list(JACOBIANS))
def test_jacobian_matches_torch(name):
    rl_fn, t_fn = JACOBIANS[name]
    x_np = x0(6, seed=8)
    j = rlgrad.jacobian(rl_fn, x_np)
    expected = torch.autograd.functional.jacobian(t_fn, _t(x_np.copy())).numpy()
    assert j.shape == expected.shape
    assert_close(j, expected)


def test_jacobian_of_a_matrix_input():
    x_np = x0(6, seed=9).reshape(2, 3)
    j = rlgrad.jacobian(lambda x: rlgrad.softmax(x, axis=0), x_np)
    expected = torch.autograd.functional.jacobian(lambda x: torch.softmax(x, 0), _t(x_np.copy()))
    assert j.shape == (2, 3, 2, 3)
    assert_close(j, expected.numpy())


# --------------------------------------------------------------------------------------------
# conjugate gradient
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 8])
def test_conjugate_gradient_solves_spd_systems(n):
    rng = np.random.default_rng(n)
    m = rng.standard_normal((n, n))
    a = m @ m.T + 0.5 * np.eye(n)
    b = rng.standard_normal(n)
    x = rlgrad.conjugate_gradient(lambda v: a @ v, b, iters=3 * n, tol=1e-24)
    assert_close(x, np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def test_conjugate_gradient_with_hessian_vector_products():
    """TRPO's step: solve H x = g with H v from double backprop, H never formed."""
    x_np = start("pg_loss")
    xt = leaf(x_np)
    loss = pg_loss(xt)
    (g,) = rlgrad.grad(loss, [xt])
    h = rlgrad.hessian(pg_loss, x_np)
    # damp the (indefinite) Hessian into a well-conditioned SPD matrix, as TRPO damps its Fisher
    damping = max(0.0, -np.linalg.eigvalsh(h).min()) + 0.5
    h = h + damping * np.eye(26)

    def avp(v):
        return rlgrad.hvp(pg_loss(xt), [xt], [v])[0] + damping * v

    step = rlgrad.conjugate_gradient(avp, g.data, iters=200, tol=1e-26)
    assert_close(step, np.linalg.solve(h, g.data), rtol=1e-6, atol=1e-8)


def test_conjugate_gradient_stops_early_and_raises_on_indefinite_matrices():
    a = np.diag([1.0, 2.0, 3.0])
    b = np.array([1.0, 0.0, 0.0])  # an eigenvector: one iteration solves it
    calls = []
    x = rlgrad.conjugate_gradient(lambda v: calls.append(v) or a @ v, b, iters=10)
    assert_close(x, [1.0, 0.0, 0.0])
    assert len(calls) == 1
    with pytest.raises(ValueError):
        rlgrad.conjugate_gradient(lambda v: -v, np.ones(3))  # negative definite
    rng = np.random.default_rng(10)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    indefinite = q @ np.diag([3.0, 2.0, 1.0, -1.0, -2.0, 0.5]) @ q.T
    with pytest.raises(ValueError):
        rlgrad.conjugate_gradient(
            lambda v: indefinite @ v, rng.standard_normal(6), iters=6, tol=1e-30
        )
    with pytest.raises(ValueError):
        rlgrad.conjugate_gradient(lambda v: v, np.ones(2), iters=0)


def _spd(n, lo, hi, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigs = np.geomspace(lo, hi, n)
    return q @ np.diag(eigs) @ q.T, rng.standard_normal(n)


def test_conjugate_gradient_residual_history_reaches_1e_10_on_a_200_dim_spd_system():
    a, b = _spd(200, 1.0, 100.0, seed=0)
    history = []
    x = rlgrad.conjugate_gradient(lambda v: a @ v, b, iters=200, tol=1e-20, residuals=history)
    # one norm per iterate, from ||b|| at x_0 = 0; the last is the returned x's residual
    assert history[0] == pytest.approx(np.linalg.norm(b), rel=1e-15)
    assert history[-1] < 1e-10 <= history[-2]
    assert history[-1] == pytest.approx(np.linalg.norm(b - a @ x), rel=1e-2, abs=1e-13)
    assert len(history) - 1 < 200  # the tolerance stopped it, well before n iterations
    assert_close(x, np.linalg.solve(a, b), rtol=1e-9, atol=1e-11)
    # the recorded residuals fall: by orders of magnitude over every 10 iterations
    h = np.array(history)
    assert np.all(h[10:] < 0.5 * h[:-10])


def test_conjugate_gradient_error_falls_monotonically_within_the_chebyshev_bound():
    """||x* - x_k||_A decreases at every step and stays below
    2 ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^k ||x*||_A (CG's classical bound)."""
    a, b = _spd(200, 1.0, 100.0, seed=1)
    x_star = np.linalg.solve(a, b)
    history = []
    rlgrad.conjugate_gradient(lambda v: a @ v, b, iters=40, tol=0.0, residuals=history)
    errors, true_residuals = [np.sqrt(x_star @ a @ x_star)], [np.linalg.norm(b)]
    for k in range(1, 41):
        x = rlgrad.conjugate_gradient(lambda v: a @ v, b, iters=k, tol=0.0)
        errors.append(np.sqrt((x_star - x) @ a @ (x_star - x)))
        true_residuals.append(np.linalg.norm(b - a @ x))
    errors = np.array(errors)
    assert np.all(np.diff(errors) < 0)
    rate = (math.sqrt(100.0) - 1) / (math.sqrt(100.0) + 1)
    assert np.all(errors <= 2 * rate ** np.arange(41) * errors[0] * (1 + 1e-12))
    assert_close(history, true_residuals, rtol=1e-8, atol=1e-12)  # the history is b - A x_k


def test_conjugate_gradient_residuals_must_be_a_list():
    with pytest.raises(TypeError, match="residuals must be a list"):
        rlgrad.conjugate_gradient(lambda v: v, np.ones(2), residuals=())
    history = []
    rlgrad.conjugate_gradient(lambda v: v, np.ones(2), residuals=history)  # A = I: one step
    assert history == [pytest.approx(math.sqrt(2)), 0.0]


# --------------------------------------------------------------------------------------------
# gradcheck: it passes on correct gradients and can fail
# --------------------------------------------------------------------------------------------


def test_gradcheck_passes_on_correct_gradients():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal(3)
    assert rlgrad.gradcheck(lambda x, y: (x * y).tanh() @ y, [a, b]) is True
    assert rlgrad.gradcheck(lambda x: rlgrad.log_softmax(x), [a]) is True
    assert rlgrad.gradcheck(lambda x: x.sum(), [rlgrad.tensor(a)]) is True


def _wrong_square(x: Tensor) -> Tensor:
    """x**2 whose backward claims 3x instead of 2x."""

    def backward(node, g, cg):
        return (g * 3 * (x if cg else x.data),)

    return _result(x.data**2, (x,), backward)


def test_gradcheck_raises_on_a_wrong_custom_op_naming_the_worst_element():
    x = np.array([0.5, -2.0, 1.0])
    with pytest.raises(GradcheckError) as info:
        rlgrad.gradcheck(lambda t: _wrong_square(t).sum(), [x])
    assert isinstance(info.value, AssertionError)
    # numpy 2 prints scalars as np.int64(1), np.float64(-6.0): read through that
    message = re.sub(r"np\.\w+\(([^()]*)\)", r"\1", str(info.value))
    # the worst element is x[1] = -2: engine 3 * -2, finite differences 2 * -2
    assert "element (1,)" in message, message
    numbers = [float(s) for s in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", message)]
    assert any(abs(v - (-6.0)) < 1e-9 for v in numbers), message
    assert any(abs(v - (-4.0)) < 1e-6 for v in numbers), message
    # the same check with our own central differences catches it too
    t = rlgrad.tensor(x, requires_grad=True)
    _wrong_square(t).sum().backward()
    assert not np.allclose(t.grad, 2 * x)


def test_gradcheck_raises_when_a_primitive_backward_is_broken(monkeypatch):
    original_exp = Tensor.exp

    def exp_with_wrong_backward(self):
        out = original_exp(self)
        if out._backward is not None:
            right = out._backward

            def wrong(node, g, cg):
                (gx,) = right(node, g, cg)
                return (gx * 1.01,)

            out._backward = wrong
        return out

    assert rlgrad.gradcheck(lambda t: (t.exp() * t).sum(), [np.array([0.3, 0.4])])
    monkeypatch.setattr(Tensor, "exp", exp_with_wrong_backward)
    with pytest.raises(GradcheckError, match="input 0"):
        rlgrad.gradcheck(lambda t: (t.exp() * t).sum(), [np.array([0.3, 0.4])])
    # an op that does not go through exp still passes: the failure is specific
    assert rlgrad.gradcheck(lambda t: t.sigmoid().sum(), [np.array([0.3, 0.4])])


def test_gradcheck_names_the_input_and_rejects_float32():
    a, b = np.array([1.0, 2.0]), np.array([0.5, 1.5])
    with pytest.raises(GradcheckError, match="input 1"):
        rlgrad.gradcheck(lambda x, y: x * _wrong_square(y), [a, b])
    with pytest.raises(TypeError):
        rlgrad.gradcheck(lambda x: x * 2, [np.ones(2, dtype=np.float32)])


def test_gradcheck_tolerances_decide():
    # a gradient 1e-4 off passes a loose check and fails a tight one
    def slightly_off(x):
        def backward(node, g, cg):
            return (g * (2 * x.data + 1e-4),)

        return _result(x.data**2, (x,), backward)

    x = np.array([1.0, 2.0])
    assert rlgrad.gradcheck(lambda t: slightly_off(t).sum(), [x], atol=1e-3, rtol=0)
    with pytest.raises(GradcheckError):
        rlgrad.gradcheck(lambda t: slightly_off(t).sum(), [x], atol=1e-6, rtol=1e-6)
