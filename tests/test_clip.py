"""rlgrad.optim.clip_grad_norm_ / clip_grad_value_ against torch.nn.utils."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import rlgrad
from rlgrad.optim import clip_grad_norm_, clip_grad_value_

SHAPES = [(), (3,), (2, 3), (4,)]


def make(grads: list[np.ndarray | None]):
    ours = [rlgrad.tensor(np.zeros(np.shape(g) if g is not None else (2,)), requires_grad=True)
            for g in grads]  # fmt: skip
    theirs = [torch.zeros(p.data.shape, dtype=torch.float64, requires_grad=True) for p in ours]
    for p, q, g in zip(ours, theirs, grads, strict=True):
        p.grad = None if g is None else g.copy()
        q.grad = None if g is None else torch.tensor(g)
    return ours, theirs


def random_grads(scale: float, seed: int = 0) -> list[np.ndarray | None]:
    rng = np.random.default_rng(seed)
    grads = [np.asarray(scale * rng.normal(size=shape)) for shape in SHAPES]
    grads[1] = None  # a parameter without a gradient is ignored
    return grads


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])  # clips / does not clip
@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, scale):
    ours, theirs = make(random_grads(scale))
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type, foreach=False)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, expected.item(), rtol=1e-12)
    for p, q in zip(ours, theirs, strict=True):
        if q.grad is None:
            assert p.grad is None
        else:
            np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_norm_after_clipping_is_max_norm(norm_type):
    ours, _ = make(random_grads(10.0))
    max_norm = 0.5
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    flat = np.concatenate([p.grad.reshape(-1) for p in ours if p.grad is not None])
    after = np.linalg.norm(flat, ord=norm_type)
    np.testing.assert_allclose(after, max_norm * total / (total + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(after, max_norm, rtol=1e-6)
    # Clipping twice changes (almost) nothing: the norm is already below max_norm.
    np.testing.assert_allclose(clip_grad_norm_(ours, max_norm, norm_type=norm_type), after)


def test_small_norm_is_left_untouched():
    grads = random_grads(1e-3)
    ours, _ = make(grads)
    before = [p.grad for p in ours]
    clip_grad_norm_(ours, max_norm=1.0)
    for p, g, b in zip(ours, grads, before, strict=True):
        assert p.grad is b  # in place, same arrays
        if g is not None:
            np.testing.assert_array_equal(p.grad, g)


def test_zero_gradients_give_zero_norm_and_no_nan():
    ours, theirs = make([np.zeros(3), np.zeros((2, 2))])
    total = clip_grad_norm_(ours, max_norm=1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=False)
    assert total == 0.0 == expected.item()
    for p in ours:
        np.testing.assert_array_equal(p.grad, np.zeros_like(p.grad))


def test_no_gradients_at_all():
    assert clip_grad_norm_([], max_norm=1.0) == 0.0
    assert clip_grad_norm_([rlgrad.tensor(np.ones(2), requires_grad=True)], 1.0) == 0.0


def test_single_tensor_and_float32():
    p = rlgrad.tensor(np.ones(4, np.float32), requires_grad=True)
    p.grad = np.full(4, 3.0, np.float32)
    total = clip_grad_norm_(p, max_norm=1.0)
    assert total == pytest.approx(6.0)
    assert p.grad.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p.grad), 1.0, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_nonfinite_norm_like_torch(bad):
    grads = [np.array([1.0, bad, -2.0]), np.array([0.5])]
    ours, theirs = make(grads)
    total = clip_grad_norm_(ours, max_norm=1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=False)
    np.testing.assert_array_equal(total, expected.item())
    for p, q in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(p.grad, q.grad.numpy())  # NaN-aware

    ours, theirs = make(grads)
    with pytest.raises(RuntimeError) as torch_error:
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True, foreach=False)
    with pytest.raises(RuntimeError, match=re.escape(str(torch_error.value))):
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(ours[0].grad, grads[0])  # raising leaves the grads alone


@pytest.mark.parametrize("clip_value", [0.1, 0.7, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    ours, theirs = make(random_grads(1.0))
    before = [p.grad for p in ours]
    assert clip_grad_value_(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value, foreach=False)
    for p, q, b in zip(ours, theirs, before, strict=True):
        if q.grad is not None:
            assert p.grad is b
            np.testing.assert_array_equal(p.grad, q.grad.numpy())


def test_scalar_grad_of_a_0d_parameter():
    """The engine may leave a numpy scalar (not a 0-d array) as the grad of a 0-d parameter."""
    p = rlgrad.tensor(3.0, requires_grad=True)
    q = rlgrad.tensor(np.array([4.0]), requires_grad=True)
    p.grad, q.grad = np.float64(3.0), np.array([4.0])
    assert clip_grad_norm_([p, q], max_norm=1.0) == pytest.approx(5.0)
    np.testing.assert_allclose([p.grad, q.grad[0]], [0.6, 0.8], rtol=1e-6)
    p.grad = np.float64(3.0)
    clip_grad_value_([p], 0.5)
    assert p.grad == 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_two_norm_fast_path_is_bitwise_numpys_norm_of_norms(dtype, max_norm):
    """The 2-norm path (one square root for all parameters) gives the very bits of
    np.linalg.norm of the per-parameter np.linalg.norm values, and scales as before."""
    rng = np.random.default_rng(7)
    shapes = [(64, 11), (64,), (), (3, 64), (1,), (0,)]
    grads = [np.asarray(rng.normal(size=s) * 10 ** rng.uniform(-3, 3), dtype=dtype)
             for s in shapes]
    params = [rlgrad.tensor(np.zeros(s, dtype), requires_grad=True) for s in shapes]
    for p, g in zip(params, grads):
        p.grad = g[()] if g.ndim == 0 else g.copy()  # a 0-d parameter's grad: a numpy scalar
    norms = [np.linalg.norm(np.reshape(g, -1)) for g in grads if g.size]
    want = float(np.linalg.norm(np.array(norms)))
    got = clip_grad_norm_(params, max_norm)
    assert got == want
    coef = max_norm / (want + 1e-6)
    for p, g in zip(params, grads):
        expected = g * coef if coef < 1 else g
        assert np.asarray(p.grad).dtype == dtype
        np.testing.assert_array_equal(p.grad, expected)


def test_two_norm_of_mixed_dtypes_takes_numpys_norms():
    rng = np.random.default_rng(8)
    grads = [rng.normal(size=5).astype(np.float32), rng.normal(size=(2, 3))]
    params = [rlgrad.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    want = float(np.linalg.norm(np.array([np.linalg.norm(g.ravel()) for g in grads])))
    assert clip_grad_norm_(params, 1e6) == want
