"""rlgrad.tensor: every primitive against torch.autograd and central finite differences.

Gradient checks run in float64. Each op is checked three ways: values and gradients against torch
(to 1e-9), the gradient against this file's own central differences, and against
``rlgrad.gradcheck`` (so a bug in gradcheck alone cannot hide a bug in an op).
"""

from __future__ import annotations

import gc
import operator
import sys
import warnings
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - torch's usual name
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes, valid_tuple_axes

import rlgrad
from rlgrad.tensor import Tensor

RTOL, ATOL = 1e-9, 1e-12
FD_EPS, FD_RTOL, FD_ATOL = 1e-6, 1e-5, 1e-6

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def sample(shape, domain: str, rng: np.random.Generator) -> np.ndarray:
    """A float64 array of ``shape`` inside the domain where the op is smooth."""
    x = np.asarray(rng.standard_normal(shape), dtype=np.float64)
    if domain == "pos":
        x = np.abs(x) + 0.5
    elif domain == "nonzero":
        x = np.where(x < 0, x - 0.3, x + 0.3)
    elif domain == "clip":  # clip(-0.5, 0.7): keep away from the kinks
        for edge in (-0.5, 0.7):
            x = np.where(np.abs(x - edge) < 0.05, x + 0.1, x)
    elif domain != "any":
        raise ValueError(domain)
    return np.asarray(x, dtype=np.float64)  # 0-d stays an array, not a numpy scalar


def torch_index(index):
    """The same index for a torch tensor (numpy arrays and lists become torch tensors)."""
    if isinstance(index, tuple):
        return tuple(torch_index(i) for i in index)
    if isinstance(index, np.ndarray):
        return torch.from_numpy(index)
    if isinstance(index, list):
        return torch.tensor(index)
    if isinstance(index, Tensor):
        return torch.from_numpy(index.data)
    return index


def torch_like(x):
    """A torch constant for a numpy array; Python scalars stay as they are."""
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def compare_with_torch(rl_fn, torch_fn, arrays, seed=0, rtol=RTOL, atol=ATOL):
    """Values and vector-Jacobian products of ``rl_fn`` and ``torch_fn`` agree (float64)."""
    xs = [rlgrad.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out, tout = rl_fn(*xs), torch_fn(*ts)
    assert isinstance(out, rlgrad.Tensor)
    assert out.shape == tuple(tout.shape)
    assert out.dtype == np.float64
    assert_close(out.data, tout.detach().numpy(), rtol, atol, "forward value")
    w = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(w)
    tout.backward(torch.from_numpy(w))
    for i, (x, t) in enumerate(zip(xs, ts)):
        expected = np.zeros_like(arrays[i]) if t.grad is None else t.grad.numpy()
        assert x.grad is not None, f"input {i} got no gradient"
        assert x.grad.shape == x.shape and x.grad.dtype == x.dtype
        assert_close(x.grad, expected, rtol, atol, f"gradient of input {i}")
    return out


def central_diff_grads(fn, arrays, w, eps=FD_EPS):
    """d sum(w * fn(*arrays)) / d arrays[i] by central differences, evaluated without a graph."""

    def f(values):
        with rlgrad.no_grad():
            return float(np.sum(fn(*[rlgrad.tensor(v) for v in values]).data * w))

    grads = []
    for i, a in enumerate(arrays):
        g = np.zeros(a.shape)
        for j in range(a.size):
            plus = [np.array(v, dtype=np.float64) for v in arrays]
            minus = [np.array(v, dtype=np.float64) for v in arrays]
            plus[i].reshape(-1)[j] += eps
            minus[i].reshape(-1)[j] -= eps
            g.reshape(-1)[j] = (f(plus) - f(minus)) / (2 * eps)
        grads.append(g)
    return grads


def check_finite_differences(fn, arrays, seed=0, with_gradcheck=True):
    """The engine's gradient equals central differences (our helper and rlgrad.gradcheck)."""
    xs = [rlgrad.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    w = np.random.default_rng(seed + 1).standard_normal(out.shape)
    out.backward(w)
    numeric = central_diff_grads(fn, arrays, w)
    for i, (x, g) in enumerate(zip(xs, numeric)):
        got = np.zeros_like(g) if x.grad is None else x.grad
        assert_close(got, g, FD_RTOL, FD_ATOL, f"finite differences, input {i}")
    if with_gradcheck:
        assert rlgrad.gradcheck(fn, arrays) is True


def leaf(a, requires_grad=True):
    return rlgrad.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def tleaf(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


# --------------------------------------------------------------------------------------------
# elementwise and shape ops of one tensor
# --------------------------------------------------------------------------------------------

# name: (rlgrad op, torch op, input domain). The input is a (3, 4) array.
UNARY = {
    "neg": (lambda x: -x, lambda x: -x, "any"),
    "exp": (lambda x: x.exp(), torch.exp, "any"),
    "log": (lambda x: x.log(), torch.log, "pos"),
    "tanh": (lambda x: x.tanh(), torch.tanh, "any"),
    "sigmoid": (lambda x: x.sigmoid(), torch.sigmoid, "any"),
    "relu": (lambda x: x.relu(), torch.relu, "nonzero"),
    "sqrt": (lambda x: x.sqrt(), torch.sqrt, "pos"),
    "abs": (lambda x: x.abs(), torch.abs, "nonzero"),
    "abs_builtin": (lambda x: abs(x), torch.abs, "nonzero"),
    "clip": (lambda x: x.clip(-0.5, 0.7), lambda x: x.clamp(-0.5, 0.7), "clip"),
    "clip_lo": (lambda x: x.clip(lo=-0.5), lambda x: x.clamp(min=-0.5), "clip"),
    "clip_hi": (lambda x: x.clip(hi=0.7), lambda x: x.clamp(max=0.7), "clip"),
    "pow_2": (lambda x: x**2, lambda x: x**2, "any"),
    "pow_3": (lambda x: x**3, lambda x: x**3, "any"),
    "pow_float": (lambda x: x**2.0, lambda x: x**2.0, "any"),
    "pow_half": (lambda x: x**0.5, lambda x: x**0.5, "pos"),
    "pow_neg": (lambda x: x**-1.5, lambda x: x**-1.5, "pos"),
    "pow_neg_int": (lambda x: x**-2, lambda x: x**-2, "nonzero"),
    "pow_np_scalar": (lambda x: x ** np.float64(1.7), lambda x: x**1.7, "pos"),
    "rpow": (lambda x: 2**x, lambda x: 2**x, "any"),
    "rpow_float": (lambda x: 0.7**x, lambda x: 0.7**x, "any"),
    "radd": (lambda x: 2.5 + x, lambda x: 2.5 + x, "any"),
    "add_scalar": (lambda x: x + 2.5, lambda x: x + 2.5, "any"),
    "rsub": (lambda x: 2.5 - x, lambda x: 2.5 - x, "any"),
    "sub_scalar": (lambda x: x - 2, lambda x: x - 2, "any"),
    "rmul": (lambda x: 3 * x, lambda x: 3 * x, "any"),
    "div_scalar": (lambda x: x / 3, lambda x: x / 3, "any"),
    "rdiv": (lambda x: 1.5 / x, lambda x: 1.5 / x, "nonzero"),
    "reshape_args": (lambda x: x.reshape(4, 3), lambda x: x.reshape(4, 3), "any"),
    "reshape_tuple": (lambda x: x.reshape((2, -1)), lambda x: x.reshape(2, -1), "any"),
    "reshape_3d": (lambda x: x.reshape(2, 3, 2), lambda x: x.reshape(2, 3, 2), "any"),
    "transpose": (lambda x: x.transpose(), lambda x: x.T, "any"),
    "transpose_axes": (lambda x: x.transpose(1, 0), lambda x: x.permute(1, 0), "any"),
    "T": (lambda x: x.T, lambda x: x.T, "any"),
    "softmax": (lambda x: rlgrad.softmax(x), lambda x: torch.softmax(x, -1), "any"),
    "softmax_0": (lambda x: rlgrad.softmax(x, axis=0), lambda x: torch.softmax(x, 0), "any"),
    "log_softmax": (lambda x: rlgrad.log_softmax(x), lambda x: torch.log_softmax(x, -1), "any"),
    "log_softmax_0": (
        lambda x: rlgrad.log_softmax(x, axis=0),
        lambda x: torch.log_softmax(x, 0),
        "any",
    ),
    "softmax_method": (lambda x: x.softmax(1), lambda x: torch.softmax(x, 1), "any"),
    "log_softmax_method": (lambda x: x.log_softmax(), lambda x: torch.log_softmax(x, -1), "any"),
    "logsumexp": (
        lambda x: rlgrad.logsumexp(x),
        lambda x: torch.logsumexp(x, tuple(range(x.ndim))),
        "any",
    ),
    "sum": (lambda x: x.sum(), lambda x: x.sum(), "any"),
    "mean": (lambda x: x.mean(), lambda x: x.mean(), "any"),
    "max": (lambda x: x.max(), lambda x: x.amax(), "any"),
    "min": (lambda x: x.min(), lambda x: x.amin(), "any"),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_against_torch(name):
    rl_fn, t_fn, domain = UNARY[name]
    x = sample((3, 4), domain, np.random.default_rng(1))
    compare_with_torch(rl_fn, t_fn, [x])


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_against_finite_differences(name):
    rl_fn, _, domain = UNARY[name]
    x = sample((3, 4), domain, np.random.default_rng(2))
    check_finite_differences(rl_fn, [x])


ELEMENTWISE = [
    n for n in UNARY if not n.startswith(("reshape", "transpose", "T", "softmax", "log_softmax"))
]


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 2)], ids=str)
def test_unary_on_other_ranks(name, shape):
    rl_fn, t_fn, domain = UNARY[name]
    x = sample(shape, domain, np.random.default_rng(3))
    compare_with_torch(rl_fn, t_fn, [x])
    check_finite_differences(rl_fn, [x], with_gradcheck=False)


# --------------------------------------------------------------------------------------------
# binary ops with broadcasting
# --------------------------------------------------------------------------------------------


def _cond(shape):
    return np.asarray(np.arange(int(np.prod(shape))).reshape(shape) % 3 == 0)


def _rl_where(a, b):
    return rlgrad.where(_cond(np.broadcast_shapes(a.shape, b.shape)), a, b)


def _torch_where(a, b):
    shape = torch.broadcast_shapes(a.shape, b.shape)
    return torch.where(torch.from_numpy(_cond(tuple(shape))), a, b)


# name: (rlgrad op, torch op, domain of a, domain of b)
BINARY = {
    "add": (operator.add, operator.add, "any", "any"),
    "sub": (operator.sub, operator.sub, "any", "any"),
    "mul": (operator.mul, operator.mul, "any", "any"),
    "div": (operator.truediv, operator.truediv, "any", "nonzero"),
    "pow": (operator.pow, operator.pow, "pos", "any"),
    "where": (_rl_where, _torch_where, "any", "any"),
}

BROADCAST_PAIRS = [
    ((3, 1), (1, 4)),
    ((4,), (3, 4)),
    ((), (3, 4)),
    ((2, 1, 4), (3, 1)),
    ((3, 4), (3, 4)),
]
BROADCAST_PAIRS += [(b, a) for a, b in BROADCAST_PAIRS[:-1]]


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_broadcast_against_torch(name, shapes):
    rl_fn, t_fn, da, db = BINARY[name]
    rng = np.random.default_rng(4)
    a, b = sample(shapes[0], da, rng), sample(shapes[1], db, rng)
    out = compare_with_torch(rl_fn, t_fn, [a, b])
    assert out.shape == np.broadcast_shapes(*shapes)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_broadcast_against_finite_differences(name, shapes):
    rl_fn, _, da, db = BINARY[name]
    rng = np.random.default_rng(5)
    a, b = sample(shapes[0], da, rng), sample(shapes[1], db, rng)
    check_finite_differences(rl_fn, [a, b])


@settings(max_examples=40, deadline=None)
@given(
    shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
    name=st.sampled_from(sorted(BINARY)),
    seed=st.integers(0, 2**16),
)
def test_binary_broadcast_hypothesis(shapes, name, seed):
    rl_fn, t_fn, da, db = BINARY[name]
    rng = np.random.default_rng(seed)
    a, b = sample(shapes.input_shapes[0], da, rng), sample(shapes.input_shapes[1], db, rng)
    out = compare_with_torch(rl_fn, t_fn, [a, b], seed=seed)
    assert out.shape == shapes.result_shape
    check_finite_differences(rl_fn, [a, b], seed=seed, with_gradcheck=False)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
@pytest.mark.parametrize(
    "side", ["tensor_op_array", "array_op_tensor", "tensor_op_scalar", "scalar_op_tensor"]
)
def test_binary_with_constants_on_either_side(name, side):
    """numpy arrays and Python scalars work on both sides and broadcast as numpy does."""
    rl_op, t_op, da, db = BINARY[name]
    rng = np.random.default_rng(6)
    if side == "tensor_op_array":
        x, c = sample((3, 1), da, rng), sample((4,), db, rng)
        rl_fn, t_fn = (lambda t: rl_op(t, c)), (lambda t: t_op(t, torch_like(c)))
    elif side == "array_op_tensor":
        x, c = sample((3, 4), db, rng), sample((4,), da, rng)
        rl_fn, t_fn = (lambda t: rl_op(c, t)), (lambda t: t_op(torch_like(c), t))
    elif side == "tensor_op_scalar":
        x, c = sample((3, 4), da, rng), 1.7
        rl_fn, t_fn = (lambda t: rl_op(t, c)), (lambda t: t_op(t, c))
    else:
        x, c = sample((3, 4), db, rng), 1.7
        rl_fn, t_fn = (lambda t: rl_op(c, t)), (lambda t: t_op(c, t))
    out = compare_with_torch(rl_fn, t_fn, [x])
    assert isinstance(out, rlgrad.Tensor)
    check_finite_differences(rl_fn, [x], with_gradcheck=False)


def test_numpy_scalar_on_the_left_gives_a_tensor():
    x = leaf([1.0, 2.0])
    for out in (np.float64(2.0) + x, np.float64(2.0) * x, np.ones(2) - x, np.ones(2) / x):
        assert isinstance(out, rlgrad.Tensor)
        assert out.requires_grad


# --------------------------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3,), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3,)),
    ((2, 3), (3, 4)),
    ((2, 3, 4), (4, 5)),
    ((4, 5), (2, 5, 3)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 6)),
    ((4,), (2, 4, 5)),
    ((2, 3, 4), (4,)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_against_torch(shapes):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    out = compare_with_torch(operator.matmul, operator.matmul, [a, b])
    assert out.shape == np.matmul(a, b).shape


@pytest.mark.parametrize("shapes", MATMUL_SHAPES[:6], ids=str)
def test_matmul_against_finite_differences(shapes):
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    check_finite_differences(operator.matmul, [a, b])


@settings(max_examples=30, deadline=None)
@given(
    shapes=mutually_broadcastable_shapes(
        signature=np.matmul.signature, max_dims=2, min_side=1, max_side=3
    ),
    seed=st.integers(0, 2**16),
)
def test_matmul_hypothesis(shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s) for s in shapes.input_shapes)
    out = compare_with_torch(operator.matmul, operator.matmul, [a, b], seed=seed)
    assert out.shape == shapes.result_shape
    check_finite_differences(operator.matmul, [a, b], seed=seed, with_gradcheck=False)


def test_matmul_with_numpy_operand_on_either_side():
    rng = np.random.default_rng(9)
    w, x = rng.standard_normal((3, 4)), rng.standard_normal((2, 3))
    compare_with_torch(lambda t: x @ t, lambda t: torch.from_numpy(x) @ t, [w])
    compare_with_torch(lambda t: t @ w, lambda t: t @ torch.from_numpy(w), [x])


@pytest.mark.parametrize("x_shape", [(3,), (2, 3), (2, 2, 3), (70, 3)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("out_features", [4, 1])  # one output (a value head) has a fast path
def test_linear_function(x_shape, bias, out_features):
    rng = np.random.default_rng(30)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal((out_features, 3))]
    if bias:
        arrays.append(rng.standard_normal(out_features))
    compare_with_torch(rlgrad.linear, F.linear, arrays)
    if x_shape[0] < 70:
        check_finite_differences(rlgrad.linear, arrays)


@pytest.mark.parametrize("x_shape", [(3,), (2, 3), (2, 2, 3)], ids=str)
@pytest.mark.parametrize("out_features", [4, 1])
def test_linear_gradient_with_respect_to_the_input_by_grad(x_shape, out_features):
    """Saliency: d value / d observation through rlgrad.grad, also with create_graph."""
    rng = np.random.default_rng(31)
    x_np, w_np = rng.standard_normal(x_shape), rng.standard_normal((out_features, 3))
    b_np = rng.standard_normal(out_features)
    x = leaf(x_np)
    w = rlgrad.tensor(w_np)
    xt = tleaf(x_np)
    (expected,) = torch.autograd.grad(
        F.linear(xt, torch.from_numpy(w_np), torch.from_numpy(b_np)).tanh().sum(), [xt]
    )
    for create_graph in (False, True):
        out = rlgrad.linear(x, w, rlgrad.tensor(b_np)).tanh().sum()
        (g,) = rlgrad.grad(out, [x], create_graph=create_graph)
        assert g.shape == x_shape
        assert_close(g.data, expected.numpy())


# --------------------------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------------------------


def _dims(axis, ndim):
    return tuple(range(ndim)) if axis is None else axis


REDUCTIONS = {
    "sum": (
        lambda x, axis, k: x.sum(axis=axis, keepdims=k),
        lambda x, axis, k: x.sum(dim=_dims(axis, x.ndim), keepdim=k),
    ),
    "mean": (
        lambda x, axis, k: x.mean(axis=axis, keepdims=k),
        lambda x, axis, k: x.mean(dim=_dims(axis, x.ndim), keepdim=k),
    ),
    "max": (
        lambda x, axis, k: x.max(axis=axis, keepdims=k),
        lambda x, axis, k: x.amax(dim=_dims(axis, x.ndim), keepdim=k),
    ),
    "min": (
        lambda x, axis, k: x.min(axis=axis, keepdims=k),
        lambda x, axis, k: x.amin(dim=_dims(axis, x.ndim), keepdim=k),
    ),
    "logsumexp": (
        lambda x, axis, k: rlgrad.logsumexp(x, axis=axis, keepdims=k),
        lambda x, axis, k: torch.logsumexp(x, dim=_dims(axis, x.ndim), keepdim=k),
    ),
}
AXES = [None, 0, 1, -1, 2, (0, 2), (2, 0), (0, 1, 2), (-1, 1)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_against_torch(name, axis, keepdims):
    rl_red, t_red = REDUCTIONS[name]
    x = np.random.default_rng(10).standard_normal((2, 3, 4))
    out = compare_with_torch(
        lambda t: rl_red(t, axis, keepdims), lambda t: t_red(t, axis, keepdims), [x]
    )
    assert out.shape == np.sum(x, axis=axis, keepdims=keepdims).shape


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)], ids=str)
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_against_finite_differences(name, axis, keepdims):
    rl_red, _ = REDUCTIONS[name]
    x = np.random.default_rng(11).standard_normal((2, 3, 4))
    check_finite_differences(lambda t: rl_red(t, axis, keepdims), [x])


@settings(max_examples=40, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(REDUCTIONS)), keepdims=st.booleans())
def test_reduction_hypothesis(data, name, keepdims):
    shape = data.draw(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    axis = data.draw(st.none() | valid_tuple_axes(len(shape), min_size=1))
    seed = data.draw(st.integers(0, 2**16))
    rl_red, t_red = REDUCTIONS[name]
    x = np.random.default_rng(seed).standard_normal(shape)
    fn = lambda t: rl_red(t, axis, keepdims)  # noqa: E731
    compare_with_torch(fn, lambda t: t_red(t, axis, keepdims), [x], seed=seed)
    check_finite_differences(fn, [x], seed=seed, with_gradcheck=False)


def test_reductions_of_a_scalar_and_a_vector():
    for shape in [(), (5,)]:
        x = np.random.default_rng(12).standard_normal(shape)
        compare_with_torch(lambda t: t.sum(), lambda t: t.sum(), [x])
        compare_with_torch(lambda t: t.mean(), lambda t: t.mean(), [x])
        compare_with_torch(lambda t: t.max(), lambda t: t.amax(), [x])
        compare_with_torch(
            lambda t: rlgrad.logsumexp(t), lambda t: torch.logsumexp(t, tuple(range(t.ndim))), [x]
        )


@pytest.mark.parametrize("axis", [0, 1, 2, -1, None], ids=str)
@pytest.mark.parametrize("last", [4, 11])  # a short last axis takes a fast path
def test_softmax_family_axes(axis, last):
    x = np.random.default_rng(13).standard_normal((2, 3, last))
    if axis is None:
        flat = lambda f: lambda t: f(t.reshape(-1), 0).reshape(t.shape)  # noqa: E731
        t_sm, t_lsm = flat(torch.softmax), flat(torch.log_softmax)
    else:
        t_sm = lambda t: torch.softmax(t, axis)  # noqa: E731
        t_lsm = lambda t: torch.log_softmax(t, axis)  # noqa: E731
    compare_with_torch(lambda t: rlgrad.softmax(t, axis=axis), t_sm, [x])
    compare_with_torch(lambda t: rlgrad.log_softmax(t, axis=axis), t_lsm, [x])
    if last == 4:
        check_finite_differences(
            lambda t: rlgrad.log_softmax(t, axis=axis), [x], with_gradcheck=False
        )
        check_finite_differences(lambda t: rlgrad.softmax(t, axis=axis), [x], with_gradcheck=False)


@pytest.mark.parametrize("shape", [(6,), (5, 2), (70, 3)])
def test_log_softmax_of_vectors_and_batches(shape):
    x = np.random.default_rng(14).standard_normal(shape) * 3
    compare_with_torch(rlgrad.log_softmax, lambda t: torch.log_softmax(t, -1), [x])
    compare_with_torch(rlgrad.softmax, lambda t: torch.softmax(t, -1), [x])


# --------------------------------------------------------------------------------------------
# indexing
# --------------------------------------------------------------------------------------------

INDICES = {
    "int": 2,
    "negative_int": -1,
    "int_pair": (1, -2),
    "slice": slice(1, None, 2),
    "slice_negative_bounds": (slice(-3, -1), slice(None, 3)),
    "int_array_repeats": np.array([0, 2, 0, 0]),
    "negative_int_array": np.array([-1, -1, 0]),
    "list": [1, 1, 3],
    "tensor_index": rlgrad.tensor(np.array([3, 3, 0])),
    "2d_int_array": np.array([[0, 1], [1, 1]]),
    "rows_and_actions": (np.arange(4), np.array([1, 0, 4, 1])),
    "pairs_with_repeats": (np.array([0, 0, 1, 3, 0]), np.array([1, 1, 2, 2, 1])),
    "int_array_and_int": (np.array([2, 2, 0]), 3),
    "bool_rows": np.array([True, False, True, True]),
    "bool_rows_and_slice": (np.array([True, False, True, True]), slice(1, None)),
    "bool_rows_and_int_array": (np.array([True, False, True, False]), np.array([0, 0])),
    "slice_and_int_array": (slice(1, None), np.array([0, 0, 4])),
    "ellipsis": (Ellipsis, 1),
    "none": (None, slice(1, 3)),
    "none_middle": (slice(None), None, 2),
    "ellipsis_none": (Ellipsis, None),
    "ellipsis_int_array": (Ellipsis, np.array([4, 4, 1])),
}


@pytest.mark.parametrize("name", list(INDICES))
def test_indexing_against_torch(name):
    index = INDICES[name]
    x = np.random.default_rng(15).standard_normal((4, 5))
    compare_with_torch(lambda t: t[index], lambda t: t[torch_index(index)], [x])


@pytest.mark.parametrize("name", list(INDICES))
def test_indexing_against_finite_differences(name):
    index = INDICES[name]
    x = np.random.default_rng(16).standard_normal((4, 5))
    check_finite_differences(lambda t: t[index], [x])


def test_bool_mask_of_full_shape():
    x = np.random.default_rng(17).standard_normal((4, 5))
    mask = x > 0.2
    compare_with_torch(lambda t: t[mask], lambda t: t[torch.from_numpy(mask)], [x])
    compare_with_torch(lambda t: t[t > 0.2], lambda t: t[t > 0.2], [x])
    check_finite_differences(lambda t: t[mask], [x])


def test_negative_step_slice():
    # torch has no negative steps: compare with flip
    x = np.random.default_rng(18).standard_normal((4, 5))
    compare_with_torch(lambda t: t[::-1, ::-2], lambda t: t.flip(0, 1)[:, ::2], [x])
    check_finite_differences(lambda t: t[::-1, 1::-1], [x])


@pytest.mark.parametrize(
    "index",
    [
        (slice(None), np.array([0, 0]), -1),
        (np.array([0, 1]), slice(None), np.array([4, 4])),
        (np.array([1, 1, 0]), np.array([2, 2, 2]), np.array([0, 4, 0])),
        (Ellipsis, np.array([1, 1]), slice(None, 2)),
        (1, Ellipsis, None),
    ],
    ids=str,
)
def test_indexing_3d(index):
    x = np.random.default_rng(19).standard_normal((2, 3, 5))
    compare_with_torch(lambda t: t[index], lambda t: t[torch_index(index)], [x])
    check_finite_differences(lambda t: t[index], [x], with_gradcheck=False)


def test_repeated_indices_accumulate():
    x = leaf(np.arange(5.0))
    x[np.array([1, 1, 1, 4])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 3.0, 0.0, 0.0, 1.0])


def test_policy_gradient_gather_large_batch():
    """logp[np.arange(n), actions] over a batch big enough for any fast path."""
    rng = np.random.default_rng(20)
    logits = rng.standard_normal((300, 3))
    actions = rng.integers(0, 3, 300)
    adv = rng.standard_normal(300)
    compare_with_torch(
        lambda t: -(rlgrad.log_softmax(t)[np.arange(300), actions] * adv).mean(),
        lambda t: (
            -(
                torch.log_softmax(t, -1)[torch.arange(300), torch.from_numpy(actions)]
                * torch.from_numpy(adv)
            ).mean()
        ),
        [logits],
    )


# --------------------------------------------------------------------------------------------
# concatenate, stack, where
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shapes,axis",
    [
        (((2, 3), (4, 3)), 0),
        (((2, 3), (2, 1), (2, 2)), 1),
        (((2, 3), (2, 1)), -1),
        (((3,), (2,)), 0),
        (((1, 2, 3), (2, 2, 3)), 0),
    ],
    ids=str,
)
def test_concatenate(shapes, axis):
    rng = np.random.default_rng(21)
    arrays = [rng.standard_normal(s) for s in shapes]
    fn = lambda *ts: rlgrad.concatenate(ts, axis=axis)  # noqa: E731
    compare_with_torch(fn, lambda *ts: torch.cat(ts, dim=axis), arrays)
    check_finite_differences(fn, arrays)


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_stack(axis):
    rng = np.random.default_rng(22)
    arrays = [rng.standard_normal((2, 3)) for _ in range(3)]
    fn = lambda *ts: rlgrad.stack(ts, axis=axis)  # noqa: E731
    compare_with_torch(fn, lambda *ts: torch.stack(ts, dim=axis), arrays)
    check_finite_differences(fn, arrays)


def test_concatenate_and_stack_with_constants():
    rng = np.random.default_rng(23)
    c = rng.standard_normal((2, 3))
    x = rng.standard_normal((2, 3))
    compare_with_torch(
        lambda t: rlgrad.concatenate([c, t, t], axis=1),
        lambda t: torch.cat([torch.from_numpy(c), t, t], dim=1),
        [x],
    )
    compare_with_torch(
        lambda t: rlgrad.stack([t, c, t * 2]),
        lambda t: torch.stack([t, torch.from_numpy(c), t * 2]),
        [x],
    )


def test_where_variants():
    rng = np.random.default_rng(24)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    cond = rng.random((2, 3, 4)) > 0.5  # the condition broadcasts beyond both inputs
    tc = torch.from_numpy(cond)
    compare_with_torch(
        lambda x, y: rlgrad.where(cond, x, y), lambda x, y: torch.where(tc, x, y), [a, b]
    )
    compare_with_torch(
        lambda x: rlgrad.where(cond[0], x, 0.0), lambda x: torch.where(tc[0], x, 0.0), [a]
    )
    compare_with_torch(
        lambda x: rlgrad.where(cond[0], -1.5, x), lambda x: torch.where(tc[0], -1.5, x), [a]
    )
    compare_with_torch(
        lambda x: rlgrad.where(x > 0, x, x * x), lambda x: torch.where(x > 0, x, x * x), [a]
    )
    compare_with_torch(
        lambda x: rlgrad.where(rlgrad.tensor(cond[1]), x, b),
        lambda x: torch.where(tc[1], x, torch.from_numpy(b)),
        [a],
    )
    check_finite_differences(lambda x, y: rlgrad.where(cond, x, y), [a, b])


# --------------------------------------------------------------------------------------------
# kinks, ties, infinities: the documented choices, as torch makes them
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_max_with_ties_shares_the_gradient_like_amax(axis, keepdims):
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, -1.0, 3.0]])
    compare_with_torch(
        lambda t: t.max(axis=axis, keepdims=keepdims),
        lambda t: t.amax(dim=_dims(axis, 2), keepdim=keepdims),
        [x],
    )
    compare_with_torch(
        lambda t: t.min(axis=axis, keepdims=keepdims),
        lambda t: t.amin(dim=_dims(axis, 2), keepdim=keepdims),
        [-x],
    )


def test_clip_at_the_boundaries_passes_the_gradient():
    x = np.array([-1.0, -0.5, 0.0, 0.7, 1.0, 0.69999])
    compare_with_torch(lambda t: t.clip(-0.5, 0.7), lambda t: t.clamp(-0.5, 0.7), [x])
    compare_with_torch(lambda t: t.clip(lo=-0.5), lambda t: t.clamp(min=-0.5), [x])
    compare_with_torch(lambda t: t.clip(hi=0.7), lambda t: t.clamp(max=0.7), [x])
    compare_with_torch(lambda t: t.clamp(-0.5, 0.7), lambda t: t.clamp(-0.5, 0.7), [x])


def test_abs_and_relu_at_zero():
    x = np.array([-1.0, 0.0, 2.0, -0.0])
    compare_with_torch(lambda t: t.abs(), torch.abs, [x])
    compare_with_torch(lambda t: t.relu(), torch.relu, [x])


def test_relu_of_infinities():
    # a masked logit of -inf through a relu must give 0, not nan (-inf * 0)
    x = np.array([-np.inf, np.inf, -1.0, 1.0])
    compare_with_torch(lambda t: t.relu(), torch.relu, [x])


@pytest.mark.parametrize("p", [0, 0.0, 1, 2, 3])
def test_pow_scalar_exponent_at_zero(p):
    x = np.array([0.0, 1.5, -2.0])
    compare_with_torch(lambda t: t**p, lambda t: t**p, [x])


def test_pow_tensor_exponent_against_torch():
    rng = np.random.default_rng(25)
    base, expo = np.abs(rng.standard_normal((3, 4))) + 0.2, rng.standard_normal((3, 4))
    compare_with_torch(operator.pow, operator.pow, [base, expo])
    # integer-valued exponents on a negative base are defined, their d/d(exponent) is nan in both
    base = np.array([-2.0, -1.5, 3.0])
    compare_with_torch(
        lambda b: b ** np.array([2.0, 3.0, 0.5]),
        lambda b: b ** torch.tensor([2.0, 3.0, 0.5], dtype=torch.float64),
        [base],
    )


def test_pow_tensor_exponent_with_zero_base():
    # torch: d(x^y)/dy is 0 where x == 0 and y >= 0 (0 * log 0 taken as 0)
    compare_with_torch(
        operator.pow, operator.pow, [np.array([0.0, 0.0, 2.0]), np.array([2.0, 0.5, 3.0])]
    )
    compare_with_torch(lambda y: 0.0**y, lambda y: 0.0**y, [np.array([1.0, 2.0, 0.5])])


def test_rpow_and_division_both_ways():
    rng = np.random.default_rng(26)
    x = sample((3, 4), "nonzero", rng)
    compare_with_torch(lambda t: 2**t, lambda t: 2**t, [x])
    compare_with_torch(lambda t: np.e**t, lambda t: np.e**t, [x])
    compare_with_torch(lambda t: 3.0 / t, lambda t: 3.0 / t, [x])
    compare_with_torch(lambda t: t / 3.0, lambda t: t / 3.0, [x])
    compare_with_torch(lambda a, b: a / b, lambda a, b: a / b, [x, sample((3, 4), "nonzero", rng)])
    compare_with_torch(lambda a, b: b / a, lambda a, b: b / a, [x, x[::-1].copy()])


def test_sqrt_against_torch():
    x = np.array([0.01, 0.25, 1.0, 4.0, 100.0])
    compare_with_torch(lambda t: t.sqrt(), torch.sqrt, [x])


def test_logsumexp_with_minus_infinity_entries():
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    for axis in (1, -1):
        compare_with_torch(
            lambda t, a=axis: rlgrad.logsumexp(t, axis=a),
            lambda t, a=axis: torch.logsumexp(t, a),
            [x],
        )
    compare_with_torch(
        lambda t: rlgrad.logsumexp(t[:2]), lambda t: torch.logsumexp(t[:2], (0, 1)), [x]
    )


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_family_with_huge_logits(axis):
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0], [1000.0, 1000.0, -1000.0]])
    for rl_fn, t_fn in [
        (lambda t: rlgrad.log_softmax(t, axis=axis), lambda t: torch.log_softmax(t, axis)),
        (lambda t: rlgrad.softmax(t, axis=axis), lambda t: torch.softmax(t, axis)),
        (lambda t: rlgrad.logsumexp(t, axis=axis), lambda t: torch.logsumexp(t, axis)),
        (lambda t: t.sigmoid(), torch.sigmoid),
        (lambda t: t.tanh(), torch.tanh),
    ]:
        out = compare_with_torch(rl_fn, t_fn, [x])
        assert np.all(np.isfinite(out.data))
        xs = leaf(x)
        rl_fn(xs).backward(np.ones(out.shape))
        assert np.all(np.isfinite(xs.grad))


def test_log_softmax_with_minus_infinity_logits():
    x = np.array([[0.0, -np.inf, 1.0], [3.0, 2.0, -np.inf]])
    # log-probabilities of masked actions are -inf, the others finite with finite gradients
    xs = leaf(x)
    out = rlgrad.log_softmax(xs)
    w = np.array([[1.0, 0.0, 0.5], [0.2, 1.0, 0.0]])
    xt = tleaf(x)
    tout = torch.log_softmax(xt, -1)
    assert_close(out.data, tout.detach().numpy())
    out.backward(w)
    tout.backward(torch.from_numpy(w))
    assert_close(xs.grad, xt.grad.numpy())


def test_sigmoid_of_large_inputs_is_finite_and_silent():
    for dtype in (np.float32, np.float64):
        x = rlgrad.tensor(np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            out = x.sigmoid()
        assert out.dtype == dtype
        # torch rounds sigmoid(-100) to 0 in float32; the exact value is a float32 denormal
        expected = torch.sigmoid(torch.from_numpy(x.data.astype(np.float64))).numpy()
        np.testing.assert_allclose(out.data, expected, rtol=1e-6, atol=1e-38)
        xg = rlgrad.tensor(x.data, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            xg.sigmoid().sum().backward()
        assert np.all(np.isfinite(xg.grad)) and xg.grad.dtype == dtype


# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------

SCALAR_OPS_F32 = {
    "add": lambda t: t + 1.5,
    "radd": lambda t: 1.5 + t,
    "sub": lambda t: t - 2,
    "rsub": lambda t: 2 - t,
    "mul": lambda t: t * 0.1,
    "rmul": lambda t: 3 * t,
    "div": lambda t: t / 7,
    "rdiv": lambda t: 1.0 / t,
    "pow_int": lambda t: t**2,
    "pow_float": lambda t: t**1.5,
    "rpow": lambda t: 2**t,
    "rpow_float": lambda t: 0.5**t,
    "neg": lambda t: -t,
    "mean": lambda t: t.mean(axis=0),
    "max": lambda t: t.max(axis=1),
    "clip": lambda t: t.clip(0.5, 1.0),
    "clip_lo": lambda t: t.clip(lo=0.5),
    "where_scalar": lambda t: rlgrad.where(t.data > 1, t, 0.0),
    "sigmoid": lambda t: t.sigmoid(),
    "softmax": lambda t: rlgrad.softmax(t),
    "log_softmax": lambda t: rlgrad.log_softmax(t),
    "logsumexp": lambda t: rlgrad.logsumexp(t, axis=1),
    "index_repeats": lambda t: t[np.array([0, 0, 1]), np.array([2, 2, 1])],
    "bool_mask": lambda t: t[t.data > 1],
    "chain": lambda t: ((t * 2 - 1).tanh() ** 2 / 3 + t.exp().log()).sqrt() * 0.5,
}


@pytest.mark.parametrize("name", list(SCALAR_OPS_F32))
def test_float32_stays_float32_against_python_scalars(name):
    x = rlgrad.tensor(np.linspace(0.5, 2.0, 6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    out = SCALAR_OPS_F32[name](x)
    assert out.dtype == np.float32
    out.backward(np.ones(out.shape, dtype=np.float32))
    assert x.grad is not None and x.grad.dtype == np.float32 and x.grad.shape == x.shape
    # and the gradient is the float64 one, to float32 precision
    x64 = rlgrad.tensor(x.data.astype(np.float64), requires_grad=True)
    SCALAR_OPS_F32[name](x64).backward(np.ones(out.shape))
    np.testing.assert_allclose(x.grad, x64.grad, rtol=1e-5, atol=1e-6)


def test_float32_grads_on_float32_leaves_through_linear_and_matmul():
    rng = np.random.default_rng(27)
    x = rlgrad.tensor(rng.standard_normal((5, 3)).astype(np.float32))
    w = rlgrad.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    b = rlgrad.tensor(np.zeros(4, np.float32), requires_grad=True)
    v = rlgrad.tensor(rng.standard_normal((4, 2)).astype(np.float32), requires_grad=True)
    loss = (rlgrad.linear(x, w, b).tanh() @ v).max(axis=1).mean()
    assert loss.dtype == np.float32
    loss.backward()
    for p in (w, b, v):
        assert p.grad.dtype == np.float32


@pytest.mark.parametrize(
    "src,dst", [(np.float64, np.float32), (np.float32, np.float64), (np.float64, np.float64)]
)
def test_astype_casts_and_casts_the_gradient_back(src, dst):
    x_np = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    x = rlgrad.tensor(x_np.astype(src), requires_grad=True)
    y = x.astype(dst)
    assert y.dtype == dst
    np.testing.assert_array_equal(y.data, x.data.astype(dst))
    (y.tanh() * 3).sum().backward()
    assert x.grad.dtype == src
    xt = torch.tensor(x_np, dtype=getattr(torch, np.dtype(src).name), requires_grad=True)
    (xt.to(getattr(torch, np.dtype(dst).name)).tanh() * 3).sum().backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-6)
    with pytest.raises(TypeError):
        x.astype(np.int64)


def test_array_operands_follow_numpy_promotion():
    x32 = rlgrad.tensor(np.ones(3, np.float32), requires_grad=True)
    for other in (np.ones(3, np.float32), np.ones(3, np.float64), np.ones(3, np.int64)):
        for op in (operator.add, operator.mul, operator.truediv):
            assert op(x32, other).dtype == op(x32.data, other).dtype
            assert op(other, x32).dtype == op(other, x32.data).dtype


def test_float64_throughout():
    x = leaf(np.linspace(0.1, 1.0, 6).reshape(2, 3))
    out = rlgrad.log_softmax((x**2 + 1 / x).sqrt() @ np.ones((3, 2))).max()
    assert out.dtype == np.float64
    out.backward()
    assert x.grad.dtype == np.float64


# --------------------------------------------------------------------------------------------
# the Tensor API
# --------------------------------------------------------------------------------------------


def test_tensor_factory_and_attributes():
    src = np.arange(6.0).reshape(2, 3)
    t = rlgrad.tensor(src, requires_grad=True)
    assert isinstance(t, rlgrad.Tensor)
    assert isinstance(t.data, np.ndarray)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float64
    assert t.requires_grad is True and t.grad is None
    src[0, 0] = 100.0  # a copy, like torch.tensor
    assert t.data[0, 0] == 0.0
    assert isinstance(t.numpy(), np.ndarray)
    np.testing.assert_array_equal(t.numpy(), t.data)
    assert rlgrad.tensor([1.0, 2.0]).dtype == np.float64
    assert rlgrad.tensor([1, 2]).requires_grad is False
    assert rlgrad.tensor([1, 2], dtype=np.float32).dtype == np.float32
    assert rlgrad.tensor(np.float32(1.0)).dtype == np.float32
    assert rlgrad.tensor(rlgrad.tensor([1.0])).shape == (1,)


def test_scalar_results_hold_0d_arrays():
    """``.data`` is documented as "a numpy array (a 0-d array for a scalar)", for every op.

    numpy turns 0-d results of ufuncs and full integer indexing into numpy scalars, which are
    immutable and cannot serve as ``out=``; the engine must keep them arrays.
    """
    x = leaf([1.0, 2.0, 3.0])
    s = leaf(0.5)
    results = {
        "x[1]": x[1],
        "s * s": s * s,
        "s + 1": s + 1,
        "x @ x": x @ x,
        "-s": -s,
        "s ** 2": s**2,
        "s.exp()": s.exp(),
        "s.log()": s.log(),
        "s.tanh()": s.tanh(),
        "s.sqrt()": s.sqrt(),
        "s.abs()": s.abs(),
        "s.relu()": s.relu(),
        "s.clip(0, 1)": s.clip(0, 1),
        "s.sigmoid()": s.sigmoid(),
        "x.sum()": x.sum(),
        "x.max()": x.max(),
        "x.mean()": x.mean(),
        "logsumexp(x)": rlgrad.logsumexp(x),
        "s / 2": s / 2,
    }
    not_arrays = [k for k, v in results.items() if not isinstance(v.data, np.ndarray)]
    assert not_arrays == [], f"these give numpy scalars, not 0-d arrays: {not_arrays}"
    for v in results.values():
        assert isinstance(v.numpy(), np.ndarray) and v.shape == ()
    (s * s + x[1]).backward()
    assert isinstance(s.grad, np.ndarray) and s.grad.shape == ()


def test_item():
    t = rlgrad.tensor(np.array([[2.5]]))
    assert t.item() == 2.5 and isinstance(t.item(), float)
    assert rlgrad.tensor(3.0).item() == 3.0
    with pytest.raises(ValueError, match=r"\(2,\)"):
        rlgrad.tensor([1.0, 2.0]).item()


def test_detach_stops_gradients():
    x = leaf([1.0, 2.0, 3.0])
    d = (x * 2).detach()
    assert d.requires_grad is False
    np.testing.assert_array_equal(d.data, [2.0, 4.0, 6.0])
    loss = (x * d).sum() + (x.detach() * 5).sum()
    loss.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])  # d and x.detach() are constants


def test_backward_accumulates_like_torch():
    x, xt = leaf([0.5, -1.0]), tleaf([0.5, -1.0])
    (x * x).sum().backward()
    (x.tanh()).sum().backward()
    (xt * xt).sum().backward()
    (xt.tanh()).sum().backward()
    assert_close(x.grad, xt.grad.numpy())


def test_backward_with_a_gradient_argument():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    y = x * 3
    y.backward(np.array([[1.0, 0.0], [2.0, -1.0]]))
    np.testing.assert_array_equal(x.grad, [[3.0, 0.0], [6.0, -3.0]])
    x.grad = None
    y.backward(rlgrad.tensor(np.ones((2, 2))))
    np.testing.assert_array_equal(x.grad, np.full((2, 2), 3.0))


def test_backward_of_a_leaf_and_grad_is_not_aliased():
    g = np.array([1.0, 2.0])
    x = leaf([0.0, 0.0])
    x.backward(g)
    g[0] = 100.0  # the user's array must not become x.grad
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).sum().backward()
    a.grad += 1  # two leaves fed by one array must not share it
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


# --------------------------------------------------------------------------------------------
# graph semantics
# --------------------------------------------------------------------------------------------


MANY_USES = {
    "x*x+x": (lambda x: x * x + x, lambda x: x * x + x),
    "y*y*y": (lambda x: (lambda y: y * y * y)(x.tanh()), lambda x: (lambda y: y * y * y)(x.tanh())),
    "x+x+x": (lambda x: x + x + x, lambda x: x + x + x),
    "index_twice": (
        lambda x: x[0] * x[0] + x[1:].sum() * x[-1],
        lambda x: x[0] * x[0] + x[1:].sum() * x[-1],
    ),
    "stack": (
        lambda x: (lambda y: rlgrad.stack([y, y * 2, y.exp()]).sum(axis=0) * y)(x.sigmoid()),
        lambda x: (lambda y: torch.stack([y, y * 2, y.exp()]).sum(0) * y)(x.sigmoid()),
    ),
    "log_softmax": (
        lambda x: (lambda y: y / y.sum() - rlgrad.log_softmax(y) * y)(x * 2),
        lambda x: (lambda y: y / y.sum() - torch.log_softmax(y, -1) * y)(x * 2),
    ),
}


@pytest.mark.parametrize("name", list(MANY_USES))
def test_a_node_used_many_times_accumulates(name):
    rl_fn, t_fn = MANY_USES[name]
    x = np.array([0.3, -1.2, 2.0])
    compare_with_torch(rl_fn, t_fn, [x])
    check_finite_differences(rl_fn, [x])


def test_many_uses_closed_form():
    x = leaf([0.3, -1.2, 2.0])
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1, rtol=1e-15)
    x = leaf([0.3, -1.2, 2.0])
    y = x.tanh()
    (y * y * y).sum().backward()
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, 3 * t**2 * (1 - t**2), rtol=1e-12)


def test_zero_upstream_gradient_gives_zero_gradients():
    x, w = leaf([[1.0, -2.0], [0.5, 3.0]]), leaf([[0.1, 0.2], [0.3, 0.4]])
    out = rlgrad.log_softmax((x @ w).tanh()) * x.abs().sqrt().exp()
    out.backward(np.zeros(out.shape))
    for t in (x, w):
        assert t.grad is not None
        np.testing.assert_array_equal(t.grad, np.zeros(t.shape))


def test_inputs_without_requires_grad_get_no_grad():
    a = rlgrad.tensor([1.0, 2.0])
    x = leaf([3.0, 4.0])
    (a * x + a.exp()).sum().backward()
    assert a.grad is None
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])
    assert (a * 2).requires_grad is False


def test_non_leaf_tensors_keep_no_grad():
    x = leaf([1.0, 2.0])
    y = x * 2
    z = y.tanh()
    z.sum().backward()
    assert y.grad is None and z.grad is None
    assert x.grad is not None
    xt = tleaf([1.0, 2.0])
    yt = xt * 2
    yt.tanh().sum().backward()
    assert yt.grad is None  # the same in torch (it warns)


def test_no_grad_builds_no_graph():
    x = leaf([1.0, 2.0])
    assert rlgrad.is_grad_enabled()
    with rlgrad.no_grad():
        assert not rlgrad.is_grad_enabled()
        y = (x * 2).exp().sum()
        z = rlgrad.log_softmax(x) + rlgrad.linear(x, leaf(np.ones((3, 2))))[0]
    assert rlgrad.is_grad_enabled()
    for t in (y, z):
        assert t.requires_grad is False
        assert t.is_leaf
    with pytest.raises(RuntimeError):
        y.backward()
    assert x.grad is None


def test_no_grad_restores_on_exceptions_and_nests():
    with pytest.raises(KeyError), rlgrad.no_grad():
        raise KeyError("boom")
    assert rlgrad.is_grad_enabled()
    x = leaf([1.0])
    with rlgrad.no_grad():
        with rlgrad.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_no_grad_as_a_decorator():
    @rlgrad.no_grad()
    def f(t):
        return t * 2

    x = leaf([1.0])
    assert f(x).requires_grad is False
    assert (x * 2).requires_grad is True


SECOND_BACKWARD = {
    "square": (lambda x: (x * x).sum(), lambda x: (x * x).sum()),
    "tanh": (lambda x: x.tanh().sum(), lambda x: x.tanh().sum()),
    "log_softmax_gather": (
        lambda x: rlgrad.log_softmax(x.reshape(2, 3))[np.array([0, 1]), np.array([2, 2])].sum(),
        lambda x: torch.log_softmax(x.reshape(2, 3), -1)[
            torch.tensor([0, 1]), torch.tensor([2, 2])
        ].sum(),
    ),
    "linear": (
        lambda x: rlgrad.linear(x.reshape(2, 3), x.reshape(3, 2).T.tanh(), x[:2]).sum(),
        lambda x: torch.nn.functional.linear(
            x.reshape(2, 3), x.reshape(3, 2).T.tanh(), x[:2]
        ).sum(),
    ),
    "max_logsumexp": (
        lambda x: (x.sigmoid() / x.exp()).max() + rlgrad.logsumexp(x),
        lambda x: (x.sigmoid() / x.exp()).amax() + torch.logsumexp(x, 0),
    ),
}


@pytest.mark.parametrize("name", list(SECOND_BACKWARD))
def test_second_backward_over_the_same_graph_accumulates(name):
    rl_fn, t_fn = SECOND_BACKWARD[name]
    x = leaf(np.linspace(-1.0, 1.5, 6))
    loss = rl_fn(x)
    loss.backward()
    first = x.grad.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first, rtol=1e-14)
    xt = tleaf(np.linspace(-1.0, 1.5, 6))
    lt = t_fn(xt)
    lt.backward(retain_graph=True)
    lt.backward()
    assert_close(x.grad, xt.grad.numpy())


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _names_both_shapes(message: str, a: tuple, b: tuple) -> bool:
    flat = message.replace(" ", "")
    return str(a).replace(" ", "") in flat and str(b).replace(" ", "") in flat


@pytest.mark.parametrize(
    "op",
    [
        operator.add,
        operator.sub,
        operator.mul,
        operator.truediv,
        operator.pow,
        lambda a, b: rlgrad.where(True, a, b),
    ],
)
@pytest.mark.parametrize("shapes", [((3,), (4,)), ((2, 3), (3, 2)), ((2, 3, 4), (5, 4))], ids=str)
def test_shapes_that_cannot_broadcast_raise_value_error(op, shapes):
    a = rlgrad.tensor(np.ones(shapes[0]) + 1, requires_grad=True)
    b = rlgrad.tensor(np.ones(shapes[1]) + 1, requires_grad=True)
    with pytest.raises(ValueError) as info:
        op(a, b)
    assert _names_both_shapes(str(info.value), *shapes), str(info.value)
    with pytest.raises(ValueError) as info:
        op(a, np.ones(shapes[1]))
    assert _names_both_shapes(str(info.value), *shapes), str(info.value)


@pytest.mark.parametrize(
    "shapes", [((2, 3), (2, 3)), ((3,), (4,)), ((2, 3, 4), (5, 6)), ((3,), (2, 4))], ids=str
)
def test_shapes_that_cannot_multiply_raise_value_error(shapes):
    a = rlgrad.tensor(np.ones(shapes[0]), requires_grad=True)
    b = rlgrad.tensor(np.ones(shapes[1]), requires_grad=True)
    with pytest.raises(ValueError) as info:
        a @ b
    assert _names_both_shapes(str(info.value), *shapes), str(info.value)
    with pytest.raises(ValueError) as info:
        a @ np.ones(shapes[1])
    assert _names_both_shapes(str(info.value), *shapes), str(info.value)


def test_concatenate_stack_and_linear_reject_bad_shapes():
    a, b = leaf(np.ones((2, 3))), leaf(np.ones((2, 4)))
    with pytest.raises(ValueError):
        rlgrad.concatenate([a, b], axis=0)
    with pytest.raises(ValueError):
        rlgrad.stack([a, b])
    with pytest.raises(ValueError) as info:
        rlgrad.linear(a, leaf(np.ones((5, 4))))
    assert _names_both_shapes(str(info.value), (2, 3), (5, 4))


def test_backward_on_a_non_scalar_without_gradient_raises():
    y = leaf([1.0, 2.0]) * 2
    with pytest.raises(ValueError):
        y.backward()
    with pytest.raises(ValueError):
        y.backward(np.ones(3))  # wrong shape


@pytest.mark.parametrize(
    "data", [[1, 2, 3], np.arange(3), [True, False], np.arange(3, dtype=np.int32)]
)
def test_non_float_data_cannot_require_grad(data):
    with pytest.raises(TypeError):
        rlgrad.tensor(data, requires_grad=True)
    assert rlgrad.tensor(data).requires_grad is False
    assert rlgrad.tensor(data, requires_grad=True, dtype=np.float64).requires_grad


def test_bad_axis_raises():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(ValueError):
        x.sum(axis=2)
    with pytest.raises(ValueError):
        x.max(axis=(0, 0))
    with pytest.raises(ValueError):
        x.reshape(4, 2)


def test_a_graph_is_freed_with_its_output_without_the_garbage_collector():
    x = leaf(np.ones(3))
    gc.disable()
    try:
        hidden = (x * 2).tanh()
        ref = weakref.ref(hidden)
        out = rlgrad.log_softmax(hidden * hidden)[1]
        out.backward()
        del hidden
        assert ref() is not None  # the output's graph holds it
        del out
        assert ref() is None  # no reference cycle keeps it alive
    finally:
        gc.enable()


def test_a_chain_100000_ops_deep_backpropagates_without_recursion():
    assert sys.getrecursionlimit() < 100_000
    x = leaf([0.5, -0.25])
    y = x
    for i in range(50_000):
        y = y * 1.00001
        y = y + 0.001 * (i % 2)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.00001**50_000), rtol=1e-9)
    del y  # freeing the chain must not recurse either
