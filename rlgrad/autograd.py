"""The calculus toolbox over the engine: gradients, Hessians, conjugate gradient, gradcheck.

Everything here is built from one primitive, the chain rule of ``tensor._backprop``; the second
derivatives come from running it twice (double backprop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .tensor import Tensor, _backprop, _leaf, enable_grad, no_grad

__all__ = [
    "grad",
    "hvp",
    "hessian",
    "jacobian",
    "conjugate_gradient",
    "gradcheck",
    "GradcheckError",
]


def _as_list(x: Tensor | Sequence[Tensor], what: str) -> list[Tensor]:
    items = [x] if isinstance(x, Tensor) else list(x)
    for t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"{what} must be Tensors, got {type(t).__name__}")
    return items


def grad(
    output: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_output: Any = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> list[Tensor | None]:
    """d(output)/d(inputs) as a list of Tensors, one per input (as ``torch.autograd.grad``).

    .. math:: \\text{grad}_i = \\sum_k \\Big(\\frac{\\partial\\, \\text{output}_k}
              {\\partial\\, \\text{input}_i}\\Big)^T \\text{grad\\_output}_k

    ``grad_output`` is required for outputs with more than one element (it is the vector of the
    vector-Jacobian product). Inputs may be leaves or intermediate tensors. ``.grad`` attributes
    are not touched. With ``create_graph=True`` the returned gradients are themselves part of a
    graph, so they can be differentiated again (Hessian-vector products, gradient penalties).
    An input the output does not depend on raises ValueError unless ``allow_unused`` (then None).
    """
    outputs = _as_list(output, "outputs")
    ins = _as_list(inputs, "inputs")
    if grad_output is None:
        grad_outputs: list[Any] = [None] * len(outputs)
    elif isinstance(grad_output, (Tensor, np.ndarray)) or np.isscalar(grad_output):
        grad_outputs = [grad_output]
    else:
        grad_outputs = list(grad_output)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"got {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    for t in ins:
        if not t.requires_grad:
            raise ValueError(f"input of shape {t.shape} does not require grad")
    seeds = []
    for out, go in zip(outputs, grad_outputs):
        if not out.requires_grad:
            raise RuntimeError(
                f"output of shape {out.shape} does not require grad: it does not depend on any "
                "input with requires_grad=True"
            )
        if go is None:
            if out.data.size != 1:
                raise ValueError(f"grad_output is required for an output of shape {out.shape}")
            go = np.ones_like(out.data)
        go_data = go.data if isinstance(go, Tensor) else np.asarray(go, dtype=out.dtype)
        if go_data.shape != out.shape:
            raise ValueError(f"grad_output has shape {go_data.shape}, expected {out.shape}")
        if create_graph:
            seeds.append(go if isinstance(go, Tensor) else _leaf(go_data))
        else:
            seeds.append(go_data)

    mode = enable_grad if create_graph else no_grad
    with mode():
        found = _backprop(outputs, seeds, create_graph=create_graph, stop_at=ins)
    result: list[Tensor | None] = []
    for t in ins:
        g = found.get(t)
        if g is None:
            if not allow_unused:
                raise ValueError(
                    f"an input of shape {t.shape} was not used to compute the output; "
                    "pass allow_unused=True to get None for it"
                )
            result.append(None)
            continue
        if not isinstance(g, Tensor):
            g = _leaf(np.asarray(g))
        if g.shape != t.shape:
            g = g._broadcast_to(t.shape) if create_graph else _leaf(np.broadcast_to(g.data,
                                                                                 t.shape))
        if g.dtype != t.dtype:
            g = g.astype(t.dtype) if create_graph else _leaf(g.data.astype(t.dtype))
        result.append(g)
    return result


def hvp(output: Tensor, params: Sequence[Tensor], v: Sequence[Any]) -> list[np.ndarray]:
    """Hessian-vector product H v of a scalar ``output`` by double backprop, without forming H.

    .. math:: H v = \\nabla_\\theta \\big( (\\nabla_\\theta f)^T v \\big)

    ``v`` holds one array per parameter, of its shape. Returns one array per parameter. Costs
    about two backward passes, whatever the number of parameters: the workhorse of natural
    gradient and TRPO (with ``conjugate_gradient``).
    """
    params = _as_list(params, "params")
    vs = [np.asarray(x.data if isinstance(x, Tensor) else x) for x in v]
    if len(vs) != len(params):
        raise ValueError(f"v has {len(vs)} parts for {len(params)} parameters")
    for p, x in zip(params, vs):
        if x.shape != p.shape:
            raise ValueError(f"v part of shape {x.shape} does not match parameter {p.shape}")
    gs = grad(output, params, create_graph=True, allow_unused=True)
    dot = None
    for g, x in zip(gs, vs):
        if g is None:
            continue
        term = (g * x).sum()
        dot = term if dot is None else dot + term
    if dot is None or not dot.requires_grad:
        return [np.zeros_like(p.data) for p in params]
    hv = grad(dot, params, allow_unused=True)
    return [np.zeros_like(p.data) if h is None else h.data for h, p in zip(hv, params)]


def jacobian(fn: Callable[[Tensor], Tensor], x: Any) -> np.ndarray:
    """The Jacobian d fn(x) / dx as an array of shape ``fn(x).shape + x.shape``.

    One backward pass per output element (reverse mode).
    """
    xt = x if isinstance(x, Tensor) and x.requires_grad else Tensor(_value(x), True)
    with enable_grad():
        y = fn(xt)
    jac = np.zeros(y.shape + xt.shape, dtype=np.result_type(y.dtype, xt.dtype))
    flat = jac.reshape(y.data.size, -1)
    for k in range(y.data.size):
        e = np.zeros(y.data.size, dtype=y.dtype)
        e[k] = 1
        (g,) = grad(y, [xt], grad_output=e.reshape(y.shape), allow_unused=True)
        if g is not None:
            flat[k] = g.data.ravel()
    return jac


def hessian(fn: Callable[[Tensor], Tensor], x: Any) -> np.ndarray:
    """The Hessian of a scalar function, H_ij = d^2 fn / dx_i dx_j, shape ``x.shape * 2``.

    Built row by row from Hessian-vector products with the unit vectors, by double backprop.
    """
    xt = Tensor(_value(x), requires_grad=True)
    if not np.issubdtype(xt.dtype, np.floating):
        raise TypeError(f"hessian needs a floating-point x, got {xt.dtype}")
    with enable_grad():
        y = fn(xt)
    if y.data.size != 1:
        raise ValueError(f"hessian needs a scalar function, got an output of shape {y.shape}")
    (g,) = grad(y, [xt], create_graph=True)
    n = xt.data.size
    h = np.zeros((n, n), dtype=xt.dtype)
    for i in range(n):
        e = np.zeros(n, dtype=xt.dtype)
        e[i] = 1
        if not g.requires_grad:  # gradient independent of x: a linear function
            break
        (row,) = grad(g, [xt], grad_output=e.reshape(xt.shape), allow_unused=True)
        if row is not None:
            h[i] = row.data.ravel()
    return h.reshape(xt.shape + xt.shape)


def conjugate_gradient(
    Avp: Callable[[np.ndarray], np.ndarray],  # noqa: N803 - the matrix is A
    b: np.ndarray,
    iters: int = 10,
    tol: float = 1e-10,
    residuals: list[float] | None = None,
) -> np.ndarray:
    """Solve A x = b for symmetric positive-definite A, given only products A v.

    .. math::
        r_0 = b,\\ p_0 = r_0,\\ x_0 = 0;\\quad
        \\alpha_k = \\frac{r_k^T r_k}{p_k^T A p_k},\\
        x_{k+1} = x_k + \\alpha_k p_k,\\
        r_{k+1} = r_k - \\alpha_k A p_k,\\
        p_{k+1} = r_{k+1} + \\frac{r_{k+1}^T r_{k+1}}{r_k^T r_k} p_k

    Stops after ``iters`` iterations or when r^T r < tol. Exact in n iterations for an n x n A
    (in exact arithmetic). Pass a list as ``residuals`` to have the residual norms
    ||r_k|| = ||b - A x_k|| appended to it, from ||b|| at x_0 = 0 to the returned x (the
    recursion's r_k, which equals b - A x_k up to rounding).
    """
    b = np.asarray(b)
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if residuals is not None and not isinstance(residuals, list):
        raise TypeError(f"residuals must be a list to append to, got {type(residuals).__name__}")
    x = np.zeros_like(b, dtype=np.result_type(b.dtype, np.float32))
    r = b.astype(x.dtype, copy=True)
    p = r.copy()
    rr = float(np.vdot(r, r))
    if residuals is not None:
        residuals.append(math.sqrt(rr))
    for _ in range(iters):
        if rr < tol:
            break
        ap = np.asarray(Avp(p))
        pap = float(np.vdot(p, ap))
        if pap <= 0:
            raise ValueError(f"conjugate_gradient: A is not positive definite (p^T A p = {pap})")
        alpha = rr / pap
        x += alpha * p
        r -= alpha * ap
        rr_new = float(np.vdot(r, r))
        if residuals is not None:
            residuals.append(math.sqrt(rr_new))
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


class GradcheckError(AssertionError):
    """The engine's gradient disagrees with central finite differences."""


def _value(x: Any) -> np.ndarray:
    return np.array(x.data if isinstance(x, Tensor) else x, copy=True)


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """Compare the engine's Jacobian of ``fn`` with central differences; True or raise.

    .. math:: \\frac{\\partial f_k}{\\partial x_i} \\approx
              \\frac{f_k(x + \\epsilon e_i) - f_k(x - \\epsilon e_i)}{2 \\epsilon}

    ``inputs`` are float64 arrays or Tensors; every one is differentiated. Passes when
    |analytic - numeric| <= atol + rtol |numeric| for every element; otherwise raises
    GradcheckError naming the input, the worst element and both values.
    """
    xs = [_value(x) for x in inputs]
    for i, x in enumerate(xs):
        if x.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs (finite differences are too coarse "
                            f"in lower precision); input {i} is {x.dtype}")

    def evaluate(values: list[np.ndarray]) -> np.ndarray:
        with no_grad():
            out = fn(*[Tensor(v) for v in values])
        return np.array(out.data, dtype=np.float64)

    ts = [Tensor(x, requires_grad=True) for x in xs]
    with enable_grad():
        out = fn(*ts)
    n_out = out.data.size
    for i, (x, t) in enumerate(zip(xs, ts)):
        analytic = np.zeros((n_out, x.size))
        for k in range(n_out):
            e = np.zeros(n_out)
            e[k] = 1
            (g,) = grad(out, [t], grad_output=e.reshape(out.shape), allow_unused=True)
            if g is not None:
                analytic[k] = g.data.ravel()
        numeric = np.zeros((n_out, x.size))
        for j in range(x.size):
            plus = [v.copy() for v in xs]
            minus = [v.copy() for v in xs]
            plus[i].reshape(-1)[j] += eps
            minus[i].reshape(-1)[j] -= eps
            numeric[:, j] = ((evaluate(plus) - evaluate(minus)) / (2 * eps)).ravel()
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if not np.all(err <= 0) or not np.all(np.isfinite(analytic)):
            k, j = np.unravel_index(np.nanargmax(np.where(np.isfinite(err), err, np.inf)),
                                    err.shape)
            where = tuple(int(v) for v in np.unravel_index(j, x.shape)) if x.ndim else ()
            raise GradcheckError(
                f"gradient of output element {int(k)} with respect to input {i} element "
                f"{where}: engine {float(analytic[k, j])!r}, finite differences "
                f"{float(numeric[k, j])!r} (atol={atol}, rtol={rtol})"
            )
    return True
