"""Tensor: a numpy array that remembers how it was computed, and reverse-mode autodiff over it.

Every primitive below computes its value and, right under it, its local derivative: a closure
``backward(g, create_graph)`` that maps the gradient of the output, ``g``, to the gradients of
the inputs (the chain rule, one link at a time). Derived operations (``a - b = a + (-b)``,
``mean = sum / n``, ``softmax = exp(log_softmax)``, ...) are written in terms of primitives and
need no backward of their own.

Each backward is written once, in operators that numpy arrays and Tensors share (``*``, ``@``,
``.sum``, ``.reshape``, ``.T``) plus a few helpers that dispatch on the type (``_exp``,
``_sum_to``, ``_scatter``). An ordinary ``backward()`` runs them on raw arrays, which is fast;
``grad(..., create_graph=True)`` runs the very same formulas on Tensors, so the gradient is itself
a differentiable graph: that is how Hessian-vector products (double backprop) work.

Graphs are not freed after a backward pass: a second ``backward()`` over the same graph works and
accumulates into ``.grad`` again (torch would need ``retain_graph=True``). A graph lives as long as
the output Tensor that holds it.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Tensor",
    "tensor",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "linear",
    "softmax",
    "log_softmax",
    "logsumexp",
    "concatenate",
    "stack",
    "where",
]

# --------------------------------------------------------------------------------------------
# grad mode
# --------------------------------------------------------------------------------------------

try:
    from numpy._core.umath import clip as _clip_ufunc
except ImportError:  # another numpy layout: the public function, a little slower
    _clip_ufunc = np.clip

_grad_enabled = True
_counter = itertools.count()  # creation order of graph nodes, a topological order


def is_grad_enabled() -> bool:
    """True when new operations record a graph (the default)."""
    return _grad_enabled


class _GradMode:
    """Context manager and decorator that sets grad recording on or off, restoring it after."""

    enabled = True

    def __enter__(self) -> None:
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = self.enabled

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._prev

    def __call__(self, fn: Callable) -> Callable:
        mode = type(self)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with mode():
                return fn(*args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = fn.__doc__
        return wrapper


class no_grad(_GradMode):  # noqa: N801 - torch's name
    """Inside ``with no_grad():`` operations build no graph (rollout inference, updates)."""

    enabled = False


class enable_grad(_GradMode):  # noqa: N801 - torch's name
    """Inside ``with enable_grad():`` operations record a graph even within ``no_grad``."""

    enabled = True


# --------------------------------------------------------------------------------------------
# the Tensor
# --------------------------------------------------------------------------------------------


class Tensor:
    """An n-dimensional array with an optional gradient.

    Attributes:
        data: the value, a numpy array (a 0-d array for a scalar).
        grad: after ``backward()``, d(output)/d(self) as a numpy array of ``data``'s shape and
            dtype, accumulated across calls as in torch; None before. Only leaves (tensors made by
            the user with ``requires_grad=True``) keep ``.grad``.
        requires_grad: whether gradients flow to (and through) this tensor.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_seq", "__weakref__")
    # numpy defers every binary operator with a Tensor to the Tensor's reflected method.
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        arr = np.array(data, dtype=dtype)  # always a copy, like torch.tensor
        if requires_grad and not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {arr.dtype}; "
                "pass dtype=np.float32 or np.float64"
            )
        self.data = arr
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Callable | None = None

    # ---- basic properties ----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}, dtype={self.data.dtype}{grad})"

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                             "use .any() or .all() on .data")
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def numpy(self) -> np.ndarray:
        """The value as a numpy array (shares memory with the tensor, like torch)."""
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def detach(self) -> Tensor:
        """The same values (shared memory), cut from the graph."""
        return _leaf(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        if not self.is_leaf:
            raise ValueError("requires_grad_ can only change leaf tensors")
        self.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def backward(self, gradient: Any = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` by the chain rule.

        ``gradient`` is d(loss)/d(self), required unless ``self`` holds a single element (then
        it is 1). Calling it twice over the same graph accumulates twice: graphs are kept.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the graph "
                "was created with requires_grad=True (or the graph was built under no_grad)"
            )
        if gradient is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() without a gradient needs a one-element output, got shape "
                    f"{self.shape}; pass gradient= of that shape"
                )
            seed = np.ones(self.data.shape, self.data.dtype)  # np.ones_like, without its dispatch
        else:
            seed = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient)
            if seed.shape != self.shape:
                raise ValueError(
                    f"gradient has shape {seed.shape}, expected the output's shape {self.shape}"
                )
        global _grad_enabled
        previous, _grad_enabled = _grad_enabled, False
        try:
            grads = _backprop([self], [seed], create_graph=False, stop_at=None)
        finally:
            _grad_enabled = previous
        taken = {id(seed)}
        for leaf, g in grads.items():
            d = leaf.data
            if not isinstance(g, np.ndarray):  # numpy returns scalars for 0-d arithmetic
                g = np.array(g, dtype=d.dtype)
                taken.add(id(g))
                leaf.grad = g if leaf.grad is None else leaf.grad + g
                continue
            if g.dtype != d.dtype or g.shape != d.shape:
                g = np.broadcast_to(g, d.shape).astype(d.dtype)
            if leaf.grad is not None:
                leaf.grad += g
            elif g.base is None and id(g) not in taken and g.flags.writeable:
                leaf.grad = g  # a fresh array that no other leaf holds: keep it
                taken.add(id(g))
            else:
                # the same array may reach several leaves (a + b), be the seed, or be a view
                leaf.grad = g.copy()

    # ---- arithmetic ---------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        a, b = self, _lift(other, self)
        out = a.data + b.data

        def backward(node, g, cg):
            return (_sum_to(g, a.data.shape) if a.requires_grad else None,
                    _sum_to(g, b.data.shape) if b.requires_grad else None)

        return _result(out, (a, b), backward)

    def __radd__(self, other: Any) -> Tensor:
        return _lift(other, self).__add__(self)

    def __neg__(self) -> Tensor:
        a = self

        def backward(node, g, cg):
            return (-g,)

        return _result(-a.data, (a,), backward)

    def __sub__(self, other: Any) -> Tensor:
        b = _lift(other, self)
        # -b of a constant (no gradient to carry) is plain numpy: one graph node fewer
        return self + (-b if b.requires_grad else _leaf(np.asarray(-b.data)))

    def __rsub__(self, other: Any) -> Tensor:
        return _lift(other, self) + (-self)

    def __mul__(self, other: Any) -> Tensor:
        a, b = self, _lift(other, self)
        out = a.data * b.data

        def backward(node, g, cg):
            x, y = (a, b) if cg else (a.data, b.data)
            return (_sum_to(g * y, x.shape) if a.requires_grad else None,
                    _sum_to(g * x, y.shape) if b.requires_grad else None)

        return _result(out, (a, b), backward)

    def __rmul__(self, other: Any) -> Tensor:
        return _lift(other, self).__mul__(self)

    def __truediv__(self, other: Any) -> Tensor:
        a, b = self, _lift(other, self)
        out = a.data / b.data

        def backward(node, g, cg):
            # d(x/y)/dx = 1/y,  d(x/y)/dy = -x/y^2
            x, y = (a, b) if cg else (a.data, b.data)
            return (_sum_to(g / y, x.shape) if a.requires_grad else None,
                    _sum_to(-g * x / (y * y), y.shape) if b.requires_grad else None)

        return _result(out, (a, b), backward)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _lift(other, self).__truediv__(self)

    def __pow__(self, exponent: Any) -> Tensor:
        a = self
        kind = type(exponent)
        if kind is int or kind is float or (isinstance(exponent, numbers.Real)
                                             and kind is not bool):
            p = exponent
            out = a.data**p

            def backward(node, g, cg):
                # d(x^p)/dx = p x^(p-1); exactly 0 for p = 0 (also at x = 0, as torch)
                if p == 0:
                    return (g * 0,)
                x = a if cg else a.data
                return (g * (p * x ** (p - 1)),)

            return _result(out, (a,), backward)
        b = _lift(exponent, self)
        out = a.data**b.data

        def backward_tensor(node, g, cg):
            # d(x^y)/dx = y x^(y-1) (0 where y = 0),  d(x^y)/dy = x^y log x (0 where x = 0 and
            # y >= 0, the limit, as torch)
            x, y, z = (a, b, node) if cg else (a.data, b.data, node.data)
            ga = gb = None
            with np.errstate(divide="ignore", invalid="ignore"):
                if a.requires_grad:
                    ga = _sum_to(where(b.data == 0, 0.0, g * y * x ** (y - 1)) if cg else
                                 np.where(b.data == 0, 0.0, g * y * x ** (y - 1)), x.shape)
                if b.requires_grad:
                    zero = (a.data == 0) & (b.data >= 0)
                    safe_x = where(zero, 1.0, x) if cg else np.where(zero, 1.0, x)
                    gb = _sum_to(g * z * _log(safe_x), y.shape)
            return ga, gb

        return _result(out, (a, b), backward_tensor)

    def __rpow__(self, base: Any) -> Tensor:
        return _lift(base, self).__pow__(self)

    def __matmul__(self, other: Any) -> Tensor:
        a, b = self, _lift(other, self)
        try:
            out = np.matmul(a.data, b.data)
        except ValueError:
            raise ValueError(
                f"cannot matrix-multiply shapes {a.shape} and {b.shape}: the last dimension of "
                "the first must equal the second-to-last (or only) dimension of the second"
            ) from None

        def backward(node, g, cg):
            x, y = (a, b) if cg else (a.data, b.data)
            # promote 1-D operands to matrices as numpy does, then undo it on the way back
            x2 = x.reshape(1, -1) if x.ndim == 1 else x
            y2 = y.reshape(-1, 1) if y.ndim == 1 else y
            g2 = g
            if y.ndim == 1:
                g2 = _expand_dims(g2, -1)
            if x.ndim == 1:
                g2 = _expand_dims(g2, -2)
            ga = gb = None
            if a.requires_grad:
                ga = _sum_to(g2 @ _swap_last(y2), x2.shape).reshape(x.shape)
            if b.requires_grad:
                gb = _sum_to(_swap_last(x2) @ g2, y2.shape).reshape(y.shape)
            return ga, gb

        return _result(out, (a, b), backward)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _lift(other, self).__matmul__(self)

    # comparisons give boolean tensors outside the graph (their derivative is zero a.e.)
    def __lt__(self, other: Any) -> Tensor:
        return _leaf(self.data < _data(other))

    def __le__(self, other: Any) -> Tensor:
        return _leaf(self.data <= _data(other))

    def __gt__(self, other: Any) -> Tensor:
        return _leaf(self.data > _data(other))

    def __ge__(self, other: Any) -> Tensor:
        return _leaf(self.data >= _data(other))

    # ---- indexing -----------------------------------------------------------------------
    def __getitem__(self, index: Any) -> Tensor:
        a = self
        idx = _normalize_index(index)
        out = a.data[idx]

        def backward(node, g, cg):
            return (_scatter(g, idx, a.data.shape),)

        return _result(out, (a,), backward)

    # ---- reductions ---------------------------------------------------------------------
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        a = self
        axis = _check_axis(axis, a.ndim)
        out = np.add.reduce(a.data, axis=axis, keepdims=keepdims)

        def backward(node, g, cg):
            if not keepdims and axis is not None:
                g = _expand_dims(g, axis)
            return (_broadcast_to(g, a.data.shape),)

        return _result(np.asarray(out), (a,), backward)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Mean over ``axis``: (sum x) / n, n the number of elements reduced; d/dx_i = 1/n."""
        a = self
        axis = _check_axis(axis, a.ndim)
        n = a.data.size if axis is None else math.prod([a.data.shape[i] for i in axis])
        out = np.add.reduce(a.data, axis=axis, keepdims=keepdims) / n

        def backward(node, g, cg):
            if not cg and axis is None:
                return (np.full(a.data.shape, g / n, dtype=g.dtype),)
            if not keepdims and axis is not None:
                g = _expand_dims(g, axis)
            return (_broadcast_to(g / n, a.data.shape),)

        return _result(np.asarray(out), (a,), backward)

    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Maximum over ``axis``; ties share the gradient equally (as torch.amax)."""
        a = self
        axis = _check_axis(axis, a.ndim)
        out_k = a.data.max(axis=axis, keepdims=True)
        out = out_k if keepdims else (out_k.reshape(()) if axis is None else
                                      np.squeeze(out_k, axis=axis))

        def backward(node, g, cg):
            mask = a.data == out_k
            share = (mask / mask.sum(axis=axis, keepdims=True)).astype(a.data.dtype)
            if not keepdims and axis is not None:
                g = _expand_dims(g, axis)
            return (g * share,)

        return _result(np.asarray(out), (a,), backward)

    def min(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Minimum over ``axis``: -max(-x)."""
        return -((-self).max(axis=axis, keepdims=keepdims))

    # ---- elementwise functions ----------------------------------------------------------
    def exp(self) -> Tensor:
        a = self
        out = np.exp(a.data)

        def backward(node, g, cg):
            # d e^x / dx = e^x
            return (g * (node if cg else node.data),)

        return _result(out, (a,), backward)

    def log(self) -> Tensor:
        a = self
        out = np.log(a.data)

        def backward(node, g, cg):
            # d log x / dx = 1 / x
            return (g / (a if cg else a.data),)

        return _result(out, (a,), backward)

    def tanh(self) -> Tensor:
        a = self
        out = np.tanh(a.data)
        if not _grad_enabled:
            return _leaf(out)

        def backward(node, g, cg):
            return (_tanh_grad(g, node if cg else node.data, cg),)

        return _result(out, (a,), backward)

    def sigmoid(self) -> Tensor:
        a = self
        # 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below: e^-|x| never overflows
        e = np.exp(-np.abs(a.data))
        out = np.where(a.data >= 0, 1 / (1 + e), e / (1 + e)).astype(a.data.dtype, copy=False)

        def backward(node, g, cg):
            # d sigma / dx = sigma (1 - sigma)
            y = node if cg else node.data
            return (g * (y * (1 - y)),)

        return _result(out, (a,), backward)

    def relu(self) -> Tensor:
        a = self
        mask = a.data > 0
        out = np.maximum(a.data, 0).astype(a.data.dtype, copy=False)  # max(x, 0): relu(-inf) = 0

        def backward(node, g, cg):
            return (g * mask,)

        return _result(out, (a,), backward)

    def sqrt(self) -> Tensor:
        a = self
        out = np.sqrt(a.data)

        def backward(node, g, cg):
            # d sqrt x / dx = 1 / (2 sqrt x)
            return (g / (2 * (node if cg else node.data)),)

        return _result(out, (a,), backward)

    def abs(self) -> Tensor:
        a = self
        out = np.abs(a.data)
        sign = np.sign(a.data)  # 0 at 0, as torch

        def backward(node, g, cg):
            return (g * sign,)

        return _result(out, (a,), backward)

    def __abs__(self) -> Tensor:
        return self.abs()

    def clip(self, lo: float | None = None, hi: float | None = None) -> Tensor:
        """Clamp into [lo, hi]; the gradient passes where lo <= x <= hi (as torch.clamp)."""
        if lo is None and hi is None:
            raise ValueError("clip needs at least one of lo and hi")
        a = self
        if lo is not None and hi is not None and a.data.dtype.kind == "f":
            out = _clip_ufunc(a.data, lo, hi)  # what np.clip calls, without its wrapper
        else:
            out = np.clip(a.data, lo, hi)

        def backward(node, g, cg):
            x = a.data
            if lo is None:
                mask = x <= hi
            elif hi is None:
                mask = x >= lo
            else:
                mask = x >= lo
                mask &= x <= hi
            return (g * mask,)

        return _result(out.astype(a.data.dtype, copy=False), (a,), backward)

    clamp = clip

    def astype(self, dtype: Any) -> Tensor:
        """The same values in another floating dtype; the gradient is cast back."""
        a = self
        dtype = np.dtype(dtype)
        if dtype == a.data.dtype:
            return a
        if a.requires_grad and not np.issubdtype(dtype, np.floating):
            raise TypeError(f"cannot cast a tensor that requires grad to {dtype}")

        def backward(node, g, cg):
            return (g.astype(a.data.dtype),)

        return _result(a.data.astype(dtype), (a,), backward)

    # ---- shape ---------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        a = self
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        try:
            out = a.data.reshape(shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {a.shape} into {shape}") from None

        def backward(node, g, cg):
            return (g.reshape(a.data.shape),)

        return _result(out, (a,), backward)

    def transpose(self, *axes: Any) -> Tensor:
        """Permute the axes as numpy does (reversed when none are given)."""
        a = self
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        axes = axes or tuple(reversed(range(a.ndim)))
        if sorted(ax % max(a.ndim, 1) for ax in axes) != list(range(a.ndim)):
            raise ValueError(f"axes {axes} are not a permutation of the {a.ndim} axes of {a.shape}")
        out = a.data.transpose(axes)
        inverse = tuple(np.argsort([ax % a.ndim for ax in axes]))

        def backward(node, g, cg):
            return (g.transpose(inverse),)

        return _result(out, (a,), backward)

    @property
    def T(self) -> Tensor:  # noqa: N802 - numpy's name
        return self.transpose()

    def flatten(self) -> Tensor:
        return self.reshape(-1)

    def squeeze(self, axis: int | None = None) -> Tensor:
        return self.reshape(np.squeeze(self.data, axis=axis).shape)

    def unsqueeze(self, axis: int) -> Tensor:
        return self.reshape(np.expand_dims(self.data, axis).shape)

    def _sum_to(self, shape: tuple[int, ...]) -> Tensor:
        """Sum broadcast axes away so the result has ``shape`` (the adjoint of broadcast_to)."""
        a = self
        out = _sum_to(a.data, shape)

        def backward(node, g, cg):
            return (_broadcast_to(g, a.data.shape),)

        return _result(np.asarray(out), (a,), backward)

    def _broadcast_to(self, shape: tuple[int, ...]) -> Tensor:
        a = self
        out = np.broadcast_to(a.data, shape)

        def backward(node, g, cg):
            return (_sum_to(g, a.data.shape),)

        return _result(out, (a,), backward)

    # ---- softmax family as methods ------------------------------------------------------
    def softmax(self, axis: int = -1) -> Tensor:
        return softmax(self, axis)

    def log_softmax(self, axis: int = -1) -> Tensor:
        return log_softmax(self, axis)

    def logsumexp(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
                  ) -> Tensor:
        return logsumexp(self, axis, keepdims)


# --------------------------------------------------------------------------------------------
# construction helpers
# --------------------------------------------------------------------------------------------


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A new leaf Tensor holding a copy of ``data``.

    dtype follows numpy's inference (Python floats give float64) unless ``dtype`` is given.
    ``requires_grad=True`` needs a floating dtype (TypeError otherwise).
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _leaf(data: np.ndarray) -> Tensor:
    t = object.__new__(Tensor)
    t.data = data
    t.grad = None
    t.requires_grad = False
    t._parents = ()
    t._backward = None
    return t


def _result(data: np.ndarray, parents: tuple[Tensor, ...], backward: Callable) -> Tensor:
    """Wrap an op's value; record the op in the graph if grad mode is on and an input needs it."""
    t = object.__new__(Tensor)
    # numpy returns scalars, not 0-d arrays, from arithmetic on 0-d arrays: .data is an array
    t.data = data if type(data) is np.ndarray else np.asarray(data)
    t.grad = None
    if _grad_enabled:
        for p in parents:
            if p.requires_grad:
                t.requires_grad = True
                t._parents = parents
                t._backward = backward
                t._seq = next(_counter)
                return t
    t.requires_grad = False
    t._parents = ()
    t._backward = None
    return t


def _lift(x: Any, like: Tensor) -> Tensor:
    """A Tensor for the other operand of a binary op.

    Python scalars take the floating dtype of ``like`` (so float32 stays float32, as numpy's
    weak scalars); numpy arrays keep their own dtype and numpy's promotion rules apply.
    """
    if isinstance(x, Tensor):
        return x
    if type(x) is np.ndarray:
        return _leaf(x)
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return _leaf(_python_scalar(x, like.data.dtype))
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        return _leaf(np.asarray(x))
    raise TypeError(f"unsupported operand type {type(x).__name__!r} for a Tensor operation")


def _python_scalar(x: bool | int | float, dtype: np.dtype) -> np.ndarray:
    """A Python number as a 0-d array next to an array of ``dtype``: in that dtype when it is
    floating (or both are integers), else numpy's own type for the number."""
    if dtype.kind == "f" or (dtype.kind in "iu" and isinstance(x, numbers.Integral)):
        return np.asarray(x, dtype=dtype)
    return np.asarray(x)


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _check_axis(axis: Any, ndim: int) -> tuple[int, ...] | None:
    """Normalise ``axis`` (int, tuple or None) into a sorted tuple of non-negative ints."""
    if axis is None:
        return None
    if axis == -1 and ndim > 0 and type(axis) is int:  # the common case, checked cheaply
        return (ndim - 1,)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        if not isinstance(ax, (int, np.integer)) or not -max(ndim, 1) <= ax < max(ndim, 1):
            raise ValueError(f"axis {axis} is out of range for a tensor with {ndim} dimensions")
        out.append(int(ax) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis} repeats a dimension")
    return tuple(sorted(out))


def _normalize_index(index: Any) -> Any:
    """Turn Tensors and lists inside an index into numpy arrays (basic parts stay as they are)."""
    if isinstance(index, tuple):
        return tuple(_normalize_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


# --------------------------------------------------------------------------------------------
# helpers used inside backward formulas: each works on numpy arrays and on Tensors
# --------------------------------------------------------------------------------------------


def _sum_to(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, giving ``shape``.

    This is the one place that sends a broadcast gradient back to each input's shape.
    """
    if g.shape == shape:
        return g
    if isinstance(g, Tensor):
        return g._sum_to(shape)
    lead = g.ndim - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    if not stretched and shape:  # only leading axes added (a bias over a batch): one reduce
        return np.add.reduce(g, axis=tuple(range(lead)))
    out = np.add.reduce(g, axis=tuple(range(lead)) + stretched, keepdims=True)
    if lead:
        out = out.reshape(out.shape[lead:])
    return out.reshape(shape)


# below this many elements a broadcast gradient is copied out: np.broadcast_to's view costs
# 2 us of Python, a small copy a fraction of that (the values are the same)
_SMALL = 4096


def _broadcast_to(g: Any, shape: tuple[int, ...]) -> Any:
    if g.shape == shape:
        return g
    if isinstance(g, Tensor):
        return g._broadcast_to(shape)
    if math.prod(shape) <= _SMALL:
        out = np.empty(shape, dtype=g.dtype)
        out[...] = g
        return out
    return np.broadcast_to(g, shape)


def _expand_dims(g: Any, axis: Any) -> Any:
    """``g`` reshaped with a new axis of length 1 at each of ``axis`` (as np.expand_dims)."""
    axes = (axis,) if isinstance(axis, int) else axis
    ndim = g.ndim + len(axes)
    new = {a % ndim for a in axes}
    dims = iter(g.shape)
    return g.reshape(tuple(1 if i in new else next(dims) for i in range(ndim)))


def _swap_last(x: Any) -> Any:
    if x.ndim == 2:
        return x.T
    axes = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return x.transpose(axes)


def _mul_into(g: np.ndarray, d: np.ndarray) -> np.ndarray:
    """g * d, written into the temporary ``d`` when the dtypes allow (saves an allocation)."""
    if d.dtype == g.dtype and d.shape == g.shape:
        return np.multiply(g, d, out=d)
    return g * d


def _exp(x: Any) -> Any:
    return x.exp() if isinstance(x, Tensor) else np.exp(x)


def _log(x: Any) -> Any:
    return x.log() if isinstance(x, Tensor) else np.log(x)


def _is_basic_index(idx: Any) -> bool:
    parts = idx if isinstance(idx, tuple) else (idx,)
    return all(
        p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts
    )


def _scatter(g: Any, idx: Any, shape: tuple[int, ...]) -> Any:
    """The adjoint of ``x[idx]``: a zero array of ``shape`` with ``g`` added at ``idx``.

    Repeated integer indices accumulate (``x[[0, 0]]`` sends both gradients to x[0]).
    """
    if isinstance(g, Tensor):
        return _index_add(g, idx, shape)
    out = np.zeros(shape, dtype=g.dtype)
    if _is_basic_index(idx) or (isinstance(idx, np.ndarray) and idx.dtype == bool):
        out[idx] = g  # no element can be hit twice
        return out
    parts = idx if isinstance(idx, tuple) else (idx,)
    if len(parts) == len(shape) and all(
        isinstance(p, (np.ndarray, int, np.integer)) and np.asarray(p).dtype.kind in "iu"
        for p in parts
    ):
        # pure integer-array indexing: one bincount over flat positions is much faster than
        # np.add.at. Out-of-range indices already raised in the forward pass.
        arrays = [np.asarray(p) for p in parts]
        if any(a.shape != arrays[0].shape for a in arrays):
            arrays = np.broadcast_arrays(*arrays)
        flat = np.ravel_multi_index(arrays, shape, mode="wrap").ravel()
        weights = g.ravel() if g.size == flat.size else np.broadcast_to(g, flat.shape).ravel()
        summed = np.bincount(flat, weights=weights, minlength=out.size)
        return summed.astype(g.dtype, copy=False).reshape(shape)
    np.add.at(out, idx, g)
    return out


def _index_add(g: Tensor, idx: Any, shape: tuple[int, ...]) -> Tensor:
    """Differentiable ``_scatter`` (used by double backprop); its adjoint is indexing again."""
    out = _scatter(g.data, idx, shape)

    def backward(node, h, cg):
        return (h[idx],)

    return _result(out, (g,), backward)


# --------------------------------------------------------------------------------------------
# the graph walk
# --------------------------------------------------------------------------------------------


def _topological_order(roots: Sequence[Tensor]) -> list[Tensor]:
    """The interior nodes below ``roots``, each before every node it was computed from.

    Every node carries the sequence number of its creation, and an op is always created after
    its inputs, so sorting the reachable nodes by decreasing number is a topological order.
    The search is an explicit stack: a chain 100,000 ops deep needs no recursion.
    """
    stack = [r for r in roots if r._backward is not None]
    seen = set(stack)
    while stack:
        for p in stack.pop()._parents:
            if p._backward is not None and p not in seen:
                seen.add(p)
                stack.append(p)
    return sorted(seen, key=_creation_order, reverse=True)


_creation_order = operator.attrgetter("_seq")


def _backprop(
    roots: Sequence[Tensor],
    seeds: Sequence[Any],
    create_graph: bool,
    stop_at: Iterable[Tensor] | None,
) -> dict[Tensor, Any]:
    """The chain rule over the graph below ``roots``.

    Returns the accumulated gradient of each leaf (``stop_at is None``) or of each tensor in
    ``stop_at``, keyed by the tensor. Gradients are numpy arrays, or Tensors with their own graph
    when ``create_graph``. Each node's gradient is complete when it is reached, because every
    node computed from it comes earlier in the order.
    """
    grads: dict[Tensor, Any] = {}
    for r, s in zip(roots, seeds):
        if r.requires_grad:
            grads[r] = grads[r] + s if r in grads else s
    wanted = None if stop_at is None else set(stop_at)
    found: dict[Tensor, Any] = {}
    pop, get = grads.pop, grads.get
    for node in _topological_order(roots):
        g = pop(node, None)
        if g is None:
            continue
        if wanted is not None and node in wanted:
            found[node] = g
        for p, pg in zip(node._parents, node._backward(node, g, create_graph)):
            if pg is not None and p.requires_grad:
                prev = get(p)
                grads[p] = pg if prev is None else prev + pg
    # what is left are the leaves' gradients
    for t, g in grads.items():
        if wanted is None or t in wanted:
            found[t] = g
    return found


# --------------------------------------------------------------------------------------------
# fused and multi-input primitives
# --------------------------------------------------------------------------------------------


def linear(x: Tensor | np.ndarray, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The affine map of a dense layer, fused into one node.

    .. math:: y = x W^T + b, \\quad
              \\frac{\\partial L}{\\partial x} = G W, \\quad
              \\frac{\\partial L}{\\partial W} = G^T x, \\quad
              \\frac{\\partial L}{\\partial b} = \\textstyle\\sum_{batch} G

    Shapes: x ``(..., in)``, weight ``(out, in)`` (torch's layout), bias ``(out,)``, y
    ``(..., out)``, G = dL/dy.
    """
    x = x if isinstance(x, Tensor) else _leaf(np.asarray(x))
    weight = weight if isinstance(weight, Tensor) else _leaf(np.asarray(weight))
    if bias is not None and not isinstance(bias, Tensor):
        bias = _leaf(np.asarray(bias))
    xd, wd = x.data, weight.data
    if wd.ndim != 2 or xd.ndim == 0 or xd.shape[-1] != wd.shape[1]:
        raise ValueError(
            f"linear: input of shape {xd.shape} does not fit a weight of shape {wd.shape} "
            f"(expected input (..., {wd.shape[-1]}))"
        )
    out = np.dot(xd, wd.T) if xd.ndim <= 2 else xd @ wd.T  # the same product (see below)
    if bias is not None:
        out += bias.data
    if not _grad_enabled:  # inference (a rollout step): no graph, so no closure to build
        return _leaf(out)
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(node, g, cg):
        xv, w = (x, weight) if cg else (xd, wd)
        grads = _linear_grads(g, xv, w, x.requires_grad, weight.requires_grad,
                              bias is not None and bias.requires_grad, cg)
        return grads if bias is not None else grads[:2]

    return _result(out, parents, backward)


def _linear_grads(g: Any, x: Any, w: Any, need_x: bool, need_w: bool, need_b: bool,
                  cg: bool) -> tuple[Any, Any, Any]:
    """``(G W, G^T x, sum_batch G)``, the local derivatives of ``y = x W^T + b`` (None where not
    needed), on arrays or, with ``cg``, on Tensors. Shared by :func:`linear` and the fused
    layer stacks of ``rlgrad.nn``, so both compute bitwise the same gradients."""
    # np.dot is np.matmul for 1-D and 2-D arrays, bitwise (both call the same BLAS routine),
    # with less overhead per call; N-D arrays and Tensors take matmul
    gx = gw = gb = None
    if need_x:
        # one output (a value head): G W is an outer product, which a broadcast multiply
        # does three times faster than a matrix product with an inner dimension of 1
        if w.shape[0] == 1:
            gx = g * w[0]
        else:
            gx = g @ w if cg or g.ndim > 2 else np.dot(g, w)
    g2 = g if g.ndim == 2 else g.reshape(-1, w.shape[0])
    if need_w:
        x2 = x if x.ndim == 2 else x.reshape(-1, w.shape[1])
        gw = g2.T @ x2 if cg else np.dot(g2.T, x2)
    if need_b:
        if cg:
            gb = g2.sum(axis=0)
        elif g2.shape[0] < 64:
            gb = np.add.reduce(g2, axis=0)
        else:
            # a matrix-vector product sums the rows several times faster than sum(axis=0)
            gb = np.dot(_ones(g2.shape[0], g2.dtype), g2)
    return gx, gw, gb


_ones_cache: dict[np.dtype, np.ndarray] = {}


def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of n ones, kept for the next call of the same size (a batch)."""
    ones = _ones_cache.get(dtype)
    if ones is None or ones.shape[0] != n:
        ones = np.ones(n, dtype=dtype)
        ones.flags.writeable = False
        _ones_cache[dtype] = ones
    return ones


def _tanh_grad(g: Any, y: Any, cg: bool) -> Any:
    """``g (1 - y^2)``: the local derivative of ``y = tanh x``, from its output ``y`` (an array,
    or a Tensor with ``cg``). Shared by :meth:`Tensor.tanh` and the fused layer stacks."""
    if cg or y.ndim == 0:
        return g * (1 - y * y)
    d = y * y
    np.subtract(1, d, out=d)
    return _mul_into(g, d)


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else _leaf(np.asarray(x))


def _reduce_keepdims(ufunc: np.ufunc, x: np.ndarray, axis: int | None) -> np.ndarray:
    """``ufunc.reduce(x, axis, keepdims=True)``, fast for a short last axis.

    numpy reduces a short contiguous last axis (the 2 logits of CartPole) slowly, about 100 us
    for 4096 rows; a few whole-column operations do the same in a few microseconds.
    """
    if x.size >= 256 and axis is not None and axis == x.ndim - 1 and x.ndim >= 2 \
            and 1 < x.shape[-1] <= 8:
        acc = x[..., 0].copy()
        for j in range(1, x.shape[-1]):
            ufunc(acc, x[..., j], out=acc)
        return acc[..., None]
    return ufunc.reduce(x, axis=axis, keepdims=True)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Log-probabilities from logits, stable for any finite logits, fused into one node.

    .. math:: y_i = x_i - \\log \\textstyle\\sum_j e^{x_j}, \\qquad
              \\frac{\\partial L}{\\partial x_i} = g_i - e^{y_i} \\textstyle\\sum_j g_j
    """
    x = _as_tensor(x)
    (ax,) = _check_axis(axis, x.ndim) or (None,)
    out = x.data - _reduce_keepdims(np.maximum, x.data, ax)
    out -= np.log(_reduce_keepdims(np.add, np.exp(out), ax))

    def backward(node, g, cg):
        if cg:
            return (g - node.exp() * g.sum(axis=ax, keepdims=True),)
        p = np.exp(node.data)
        p *= _reduce_keepdims(np.add, g, ax)
        return (g - p,)

    return _result(out, (x,), backward)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Probabilities from logits, stable for any finite logits.

    .. math:: p_i = e^{x_i} / \\textstyle\\sum_j e^{x_j}, \\qquad
              \\frac{\\partial L}{\\partial x_i} = p_i (g_i - \\textstyle\\sum_j g_j p_j)
    """
    x = _as_tensor(x)
    (ax,) = _check_axis(axis, x.ndim) or (None,)
    e = np.exp(x.data - x.data.max(axis=ax, keepdims=True))
    out = e / e.sum(axis=ax, keepdims=True)

    def backward(node, g, cg):
        p = node if cg else node.data
        return (p * (g - (g * p).sum(axis=ax, keepdims=True)),)

    return _result(out, (x,), backward)


def logsumexp(x: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
              ) -> Tensor:
    """log sum_i exp(x_i) over ``axis``, shifted by the max so it never overflows.

    .. math:: \\mathrm{lse}(x) = m + \\log \\textstyle\\sum_i e^{x_i - m}, \\quad
              \\frac{\\partial\\, \\mathrm{lse}}{\\partial x_i} = e^{x_i - \\mathrm{lse}(x)}
    """
    x = _as_tensor(x)
    axes = _check_axis(axis, x.ndim)
    m = x.data.max(axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # rows of -inf stay -inf instead of nan
    with np.errstate(divide="ignore"):  # log 0 = -inf for such rows, as intended
        out_k = m + np.log(np.exp(x.data - m).sum(axis=axes, keepdims=True))
    out = out_k if keepdims else (out_k.reshape(()) if axes is None else
                                  np.squeeze(out_k, axis=axes))

    def backward(node, g, cg):
        if not keepdims and axes is not None:
            g = _expand_dims(g, axes)
        lse = node if cg else node.data
        if not keepdims:
            lse = lse.reshape(out_k.shape)
        xd = x if cg else x.data
        return (g * _exp(xd - lse),)

    return _result(np.asarray(out, dtype=x.data.dtype), (x,), backward)


def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis; the gradient is split back by slices."""
    ts = [_as_tensor(t) for t in tensors]
    if not ts:
        raise ValueError("concatenate needs at least one tensor")
    try:
        out = np.concatenate([t.data for t in ts], axis=axis)
    except ValueError as e:
        raise ValueError(f"cannot concatenate shapes {[t.shape for t in ts]} on axis {axis}: "
                         f"{e}") from None
    ax = axis % out.ndim
    bounds = np.cumsum([0] + [t.shape[ax] for t in ts])

    def backward(node, g, cg):
        lead = (slice(None),) * ax
        return tuple(g[lead + (slice(int(s), int(e)),)] if t.requires_grad else None
                     for t, s, e in zip(ts, bounds[:-1], bounds[1:]))

    return _result(out, tuple(ts), backward)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along a new axis; the gradient is taken apart by indexing that axis."""
    ts = [_as_tensor(t) for t in tensors]
    if not ts:
        raise ValueError("stack needs at least one tensor")
    try:
        out = np.stack([t.data for t in ts], axis=axis)
    except ValueError:
        raise ValueError(f"stack needs tensors of one shape, got {[t.shape for t in ts]}") from None
    ax = axis % out.ndim

    def backward(node, g, cg):
        lead = (slice(None),) * ax
        return tuple(g[lead + (i,)] if t.requires_grad else None for i, t in enumerate(ts))

    return _result(out, tuple(ts), backward)


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """Elementwise ``x`` where ``condition`` holds, else ``y``, broadcasting as numpy.

    The gradient goes to ``x`` where the condition holds and to ``y`` elsewhere.
    """
    cond = np.asarray(_data(condition), dtype=bool)
    a = x if isinstance(x, Tensor) else None
    b = y if isinstance(y, Tensor) else None
    like = a if a is not None else b
    if like is None:
        like = _leaf(np.asarray(np.where(cond, x, y)))
    a = _lift(x, like)
    b = _lift(y, like)
    try:
        out = np.where(cond, a.data, b.data)
    except ValueError:
        raise ValueError(f"where: shapes {cond.shape}, {a.shape} and {b.shape} do not "
                         "broadcast together") from None

    def backward(node, g, cg):
        return (_sum_to(g * cond, a.data.shape) if a.requires_grad else None,
                _sum_to(g * ~cond, b.data.shape) if b.requires_grad else None)

    return _result(out, (a, b), backward)
