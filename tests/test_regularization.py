"""L1 / L2 penalties against torch, and L2-in-the-loss vs coupled vs decoupled weight decay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlgrad import nn, optim
from rlgrad.regularization import l1_penalty, l2_penalty
from rlgrad.tensor import Tensor

SHAPES = [[(3,)], [(2, 3), (4,)], [(), (2, 2, 2)]]


def _make(shapes, seed=0, zeros=False):
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=s) for s in shapes]
    if zeros:
        for a in arrays:
            a.reshape(-1)[::2] = 0.0  # exact zeros, where |x| has no derivative
    return [Tensor(a, requires_grad=True) for a in arrays], [
        torch.tensor(a, requires_grad=True) for a in arrays
    ]


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("which", ["l1", "l2"])
@pytest.mark.parametrize("zeros", [False, True])
def test_value_and_gradient_match_torch(shapes, which, zeros):
    ours, theirs = _make(shapes, zeros=zeros)
    weight = 0.3
    if which == "l1":
        out = l1_penalty(ours, weight)
        ref = weight * sum(t.abs().sum() for t in theirs)
    else:
        out = l2_penalty(ours, weight)
        ref = weight * sum((t**2).sum() for t in theirs) / 2
    assert isinstance(out, Tensor) and out.shape == ()
    out.backward()
    ref.backward()
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-14)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-14, atol=0)


def test_l1_subgradient_is_zero_at_zero():
    x = Tensor(np.array([-2.0, 0.0, 3.0, -0.0]), requires_grad=True)
    l1_penalty([x], 0.5).backward()
    np.testing.assert_array_equal(x.grad, [-0.5, 0.0, 0.5, 0.0])
    xt = torch.tensor([-2.0, 0.0, 3.0, -0.0], dtype=torch.float64, requires_grad=True)
    (0.5 * xt.abs().sum()).backward()
    np.testing.assert_array_equal(x.grad, xt.grad.numpy())


def test_module_params_and_errors():
    model = nn.Linear(3, 2, rng=np.random.default_rng(0), dtype=np.float64)
    expected = 0.1 / 2 * sum(float((p.data**2).sum()) for p in model.parameters())
    np.testing.assert_allclose(l2_penalty(model, 0.1).item(), expected, rtol=1e-14)
    l1 = l1_penalty(model.weight, 1.0).item()
    np.testing.assert_allclose(l1, np.abs(model.weight.data).sum(), rtol=1e-14)
    gen = model.parameters()
    list(gen)
    with pytest.raises(ValueError, match="no parameters"):
        l2_penalty(gen, 0.1)
    with pytest.raises(ValueError, match="weight must be >= 0, got -0.1"):
        l1_penalty(model, -0.1)
    with pytest.raises(ValueError, match="nan"):
        l2_penalty(model, float("nan"))
    with pytest.raises(TypeError, match="real number"):
        l2_penalty(model, "0.1")
    with pytest.raises(TypeError, match="must be Tensors"):
        l2_penalty([np.ones(3)], 0.1)


# --------------------------------------------------------------------------------------------
# L2 in the loss == coupled weight decay; decoupled weight decay is something else
# --------------------------------------------------------------------------------------------

WD = 0.1
STEPS = 10


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    # coordinates with very different gradient scales make Adam's rescaling visible
    x = rng.normal(size=(16, 3)) * np.array([10.0, 1.0, 0.1])
    y = rng.normal(size=16)
    w0 = rng.normal(size=3)
    return x, y, w0


def _train(opt_name: str, penalty: float, **kwargs) -> np.ndarray:
    """Run the optimizer on the loss (+ l2_penalty(penalty)); return the iterates."""
    x, y, w0 = _problem()
    w = Tensor(w0, requires_grad=True)
    opt = optim.make(opt_name, [w], **kwargs)
    path = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = ((x @ w).tanh() - y) ** 2
        loss = loss.mean()
        if penalty:
            loss = loss + l2_penalty([w], penalty)
        loss.backward()
        opt.step()
        path.append(w.data.copy())
    return np.array(path)


def _train_torch(cls, **kwargs) -> np.ndarray:
    x, y, w0 = (torch.tensor(a) for a in _problem())
    w = w0.clone().requires_grad_(True)
    opt = cls([w], **kwargs)
    path = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = ((torch.tanh(x @ w) - y) ** 2).mean()
        loss.backward()
        opt.step()
        path.append(w.detach().numpy().copy())
    return np.array(path)


@pytest.mark.parametrize("name, kwargs", [
    ("sgd", {"lr": 0.05}),
    ("momentum", {"lr": 0.05}),
    ("nesterov", {"lr": 0.05}),
])
def test_sgd_weight_decay_equals_l2_in_the_loss(name, kwargs):
    coupled = _train(name, 0.0, weight_decay=WD, **kwargs)
    in_loss = _train(name, WD, **kwargs)
    plain = _train(name, 0.0, **kwargs)
    np.testing.assert_allclose(coupled, in_loss, rtol=0, atol=1e-12)
    # in fact bitwise (see the module docstring)
    np.testing.assert_array_equal(coupled, in_loss)
    assert np.abs(coupled - plain).max() > 1e-3  # the decay did something


def test_adam_weight_decay_equals_l2_in_the_loss_and_adamw_differs():
    adam_coupled = _train("adam", 0.0, lr=0.05, weight_decay=WD)
    adam_in_loss = _train("adam", WD, lr=0.05)
    adamw = _train("adamw", 0.0, lr=0.05, weight_decay=WD)
    adam_plain = _train("adam", 0.0, lr=0.05)
    np.testing.assert_allclose(adam_coupled, adam_in_loss, rtol=0, atol=1e-12)
    assert np.abs(adam_coupled - adam_plain).max() > 1e-3
    assert np.abs(adamw - adam_coupled).max() > 1e-3
    assert np.abs(adamw - adam_plain).max() > 1e-3
    # On the first step Adam moves each coordinate by lr * sign(gradient): the coupled decay,
    # inside the gradient, counts only where it outweighs the loss gradient and flips its sign
    # (coordinate 2, whose inputs are small); the decoupled one shrinks theta by lr * wd.
    x, y, w0 = _problem()
    t = np.tanh(x @ w0)
    g0 = 2 / len(y) * x.T @ ((t - y) * (1 - t**2))
    np.testing.assert_allclose(adam_plain[0], w0 - 0.05 * np.sign(g0), atol=1e-7)
    np.testing.assert_allclose(adam_coupled[0], w0 - 0.05 * np.sign(g0 + WD * w0), atol=1e-7)
    assert np.sign(g0 + WD * w0)[2] != np.sign(g0)[2]
    np.testing.assert_allclose(adamw[0] - adam_plain[0], -0.05 * WD * w0, rtol=1e-6)
    np.testing.assert_allclose(adamw, _train_torch(torch.optim.AdamW, lr=0.05, weight_decay=WD),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(adam_coupled,
                               _train_torch(torch.optim.Adam, lr=0.05, weight_decay=WD),
                               rtol=0, atol=1e-12)
