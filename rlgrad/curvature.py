"""Second-order information about a policy or a loss, from Hessian- and Fisher-vector products.

Nothing here forms a matrix of parameter size: every quantity is read off products ``M v``.

- :class:`FisherVectorProduct` / :func:`fisher_vector_product`: ``F v + damping v`` for the
  Fisher information of a policy's action distribution (natural gradient, TRPO's conjugate
  gradient solve).
- :func:`hessian_eigenvalues`: a few eigenvalues of a loss's Hessian by Lanczos iteration
  (sharpness, curvature along training).
- :func:`hessian_trace`: Hutchinson's randomised estimate of tr(H).
- :func:`gradient_noise_scale`: McCandlish et al.'s simple noise scale from a few minibatch
  gradients (the critical batch size).

Vectors over all parameters are "flat": the parameters' elements one after another, in the order
of ``params``, each parameter in C order (what ``np.concatenate([v.ravel() for v in parts])``
gives).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from types import CodeType
from typing import Any

import numpy as np

from .autograd import grad
from .distributions import Categorical, Distribution, Normal
from .nn import _layer_stack, _layer_stack_tangent
from .tensor import Tensor, _sum_to, linear, no_grad

__all__ = [
    "FisherVectorProduct",
    "fisher_vector_product",
    "hessian_eigenvalues",
    "hessian_trace",
    "gradient_noise_scale",
]

FVP_METHODS = ("analytic", "double_backprop")
WHICH = ("LA", "SA", "LM")

# --------------------------------------------------------------------------------------------
# input checks shared by the functions below
# --------------------------------------------------------------------------------------------


def _check_params(params: Tensor | Iterable[Tensor]) -> list[Tensor]:
    items = [params] if isinstance(params, Tensor) else list(params)
    if not items:
        raise ValueError("params is empty: expected at least one Tensor")
    seen: set[int] = set()
    for i, p in enumerate(items):
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}] is a {type(p).__name__}, expected a Tensor")
        if not p.requires_grad:
            raise ValueError(f"params[{i}] of shape {p.shape} does not require grad")
        if id(p) in seen:
            raise ValueError(f"params[{i}] of shape {p.shape} is listed twice")
        seen.add(id(p))
    return items


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_damping(damping: Any) -> float:
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real) \
            or not math.isfinite(damping) or damping < 0:
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
    return float(damping)


def _check_rng(rng: Any) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, a seed >= 0 or None, got {rng!r}")


def _check_loss(loss: Any) -> Tensor:
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss must be a Tensor, got {type(loss).__name__}")
    if loss.data.size != 1:
        raise ValueError(f"loss must be a scalar, got a Tensor of shape {loss.shape}")
    if not loss.requires_grad:
        raise ValueError("loss does not require grad: it was computed without a graph to params")
    if not np.isfinite(loss.data).all():
        raise ValueError(f"loss is not finite: {loss.item()!r}")
    return loss


def _flat_dtype(params: Sequence[Tensor]) -> np.dtype:
    return np.result_type(*[p.dtype for p in params])


def _split(flat: np.ndarray, params: Sequence[Tensor]) -> list[np.ndarray]:
    parts, start = [], 0
    for p in params:
        parts.append(flat[start:start + p.data.size].reshape(p.shape).astype(p.dtype, copy=False))
        start += p.data.size
    return parts


def _join(parts: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=dtype).ravel() for x in parts])


def _check_vectors(vectors: Any, params: Sequence[Tensor]) -> list[np.ndarray]:
    if isinstance(vectors, (np.ndarray, Tensor)):
        raise TypeError("vectors must be a list with one array per parameter, got a single "
                        "array (use FisherVectorProduct for flat vectors)")
    vs = list(vectors)
    if len(vs) != len(params):
        raise ValueError(f"vectors has {len(vs)} parts for {len(params)} parameters")
    out = []
    for i, (v, p) in enumerate(zip(vs, params)):
        arr = np.asarray(v.data if isinstance(v, Tensor) else v)
        if arr.shape != p.shape:
            raise ValueError(f"vectors[{i}] has shape {arr.shape}, expected the shape of "
                             f"params[{i}], {p.shape}")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"vectors[{i}] holds {arr.dtype} values, expected real numbers")
        if not np.isfinite(arr).all():
            raise ValueError(f"vectors[{i}] is not finite")
        out.append(arr)
    return out


def _check_flat(v: Any, dim: int) -> np.ndarray:
    arr = np.asarray(v.data if isinstance(v, Tensor) else v)
    if arr.shape != (dim,):
        raise ValueError(f"expected a flat vector of shape ({dim},), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"the vector holds {arr.dtype} values, expected real numbers")
    if not np.isfinite(arr).all():
        raise ValueError("the vector is not finite")
    return arr


# --------------------------------------------------------------------------------------------
# Fisher-vector products
# --------------------------------------------------------------------------------------------


def _unclamped_log_std(dist: Normal) -> Tensor:
    # Normal keeps its log-std clamped; the clip node's one input is the log-std it was given.
    # Without a graph only the clamped value exists, and clamping it again changes nothing.
    log_std = dist.log_std
    return log_std._parents[0] if log_std._parents else log_std


def _detached(dist: Distribution) -> Distribution:
    """The same distribution cut from the graph: pi_old in KL(pi_old || pi_theta)."""
    if type(dist) is Categorical:
        return Categorical(logits=dist.logits.detach())
    if type(dist) is Normal:
        return Normal(dist.mean.detach(), _unclamped_log_std(dist).detach())
    raise TypeError(f"the Fisher information needs a Categorical or a Normal, got "
                    f"{type(dist).__name__}")


def _output_fisher(dist: Distribution
                   ) -> tuple[list[Tensor], Callable[[list[np.ndarray]], list[np.ndarray]]]:
    """The distribution's outputs y that depend on parameters, and u -> M u, where M is the
    Hessian in y of the batch mean of KL(pi_old || pi_y) at y = y_old (its Fisher metric).

    Categorical, logits z ``(..., K)``, N the number of batch elements, p = softmax(z):

    .. math:: M u = \\frac{1}{N} \\big(p \\odot u - p\\, (p^T u)\\big) \\quad \\text{per row}

    Normal, mean mu and the (clamped) log-std s = log sigma, broadcast together to a shape of
    N batch elements; summed back over broadcast axes, so a state-independent log-std of shape
    ``(A,)`` gets N copies of its term:

    .. math:: (M u)_\\mu = \\frac{1}{N} \\frac{u_\\mu}{\\sigma^2}, \\qquad
              (M u)_s = \\frac{2}{N} u_s, \\qquad \\text{no } \\mu s \\text{ cross term}
    """
    if type(dist) is Categorical:
        logits = dist.logits
        p = np.exp(dist.logp.data)
        n = max(1, int(np.prod(dist.batch_shape)))

        def categorical_metric(us: list[np.ndarray]) -> list[np.ndarray]:
            pu = p * us[0]
            pu -= p * np.add.reduce(pu, axis=-1, keepdims=True)
            pu /= n
            return [pu]

        outputs = [logits] if logits.requires_grad else []
        return outputs, categorical_metric
    if type(dist) is Normal:
        mean, log_std = dist.mean, dist.log_std
        shape = np.broadcast_shapes(mean.shape, log_std.shape)
        n = max(1, int(np.prod(shape[:-1])))
        inv_var_n = np.exp(-2.0 * log_std.data) / n
        outputs, blocks = [], []
        if mean.requires_grad:
            outputs.append(mean)
            blocks.append(lambda u: _sum_to(u * inv_var_n, mean.shape))
        if log_std.requires_grad:
            outputs.append(log_std)
            blocks.append(lambda u: _sum_to(np.broadcast_to(u, shape), log_std.shape) * (2.0 / n))

        def normal_metric(us: list[np.ndarray]) -> list[np.ndarray]:
            return [block(u) for block, u in zip(blocks, us)]

        return outputs, normal_metric
    raise TypeError(f"the Fisher information needs a Categorical or a Normal, got "
                    f"{type(dist).__name__}")


def _interior_nodes(roots: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """(interior nodes in creation order, leaves) of the graph below ``roots``."""
    stack = list(roots)
    seen = {id(t): t for t in roots}
    while stack:
        for parent in stack.pop()._parents:
            if id(parent) not in seen:
                seen[id(parent)] = parent
                stack.append(parent)
    nodes = [t for t in seen.values() if t._backward is not None]
    nodes.sort(key=lambda t: t._seq)
    leaves = [t for t in seen.values() if t._backward is None]
    return nodes, leaves


# ---- forward mode: the tangent of each primitive ------------------------------------------
# A rule maps the tangents of a node's inputs (None where an input does not depend on the
# parameters) to the tangent of its output: the directional derivative y' = sum_i J_i x_i'.
# Rules never write into the tangents they are given.

Tangents = list[np.ndarray | None]


def _tangent_linear(node: Tensor, dots: Tangents) -> np.ndarray:
    # y = x W^T + b:  y' = x' W^T + x W'^T + b'
    x, weight = node._parents[0], node._parents[1]
    dx, dw, db = dots[0], dots[1], dots[2] if len(dots) == 3 else None
    out = None  # once set, a fresh array of this rule's own: added to in place
    if dx is not None:
        out = dx @ weight.data.T
    if dw is not None:
        term = x.data @ dw.T
        out = term if out is None else np.add(out, term, out=out)
    if db is not None:
        out = np.broadcast_to(db, node.shape) if out is None else np.add(out, db, out=out)
    return out


def _tangent_add(node: Tensor, dots: Tangents) -> np.ndarray:
    # y = a + b:  y' = a' + b'
    da, db = dots
    out = da if db is None else db if da is None else da + db
    return out if out.shape == node.shape else np.broadcast_to(out, node.shape)


def _tangent_mul(node: Tensor, dots: Tangents) -> np.ndarray:
    # y = a b:  y' = a' b + a b'
    (a, b), (da, db) = node._parents, dots
    out = None if da is None else da * b.data
    if db is not None:
        out = a.data * db if out is None else out + a.data * db
    return out if out.shape == node.shape else np.broadcast_to(out, node.shape)


def _tangent_truediv(node: Tensor, dots: Tangents) -> np.ndarray:
    # y = a / b:  y' = (a' - y b') / b
    b, (da, db) = node._parents[1], dots
    num = da if db is None else -(node.data * db) if da is None else da - node.data * db
    out = num / b.data
    return out if out.shape == node.shape else np.broadcast_to(out, node.shape)


def _tangent_matmul(node: Tensor, dots: Tangents) -> np.ndarray:
    # y = a @ b:  y' = a' @ b + a @ b'
    (a, b), (da, db) = node._parents, dots
    out = None if da is None else da @ b.data
    if db is not None:
        out = a.data @ db if out is None else out + a.data @ db
    return out


def _tangent_tanh(node: Tensor, dots: Tangents) -> np.ndarray:
    # y = tanh x:  y' = x' (1 - y^2)
    d = node.data * node.data
    np.subtract(1, d, out=d)
    return np.multiply(dots[0], d, out=d) if d.shape == dots[0].shape else dots[0] * d


_TANGENT_RULES: list[tuple[Callable, Callable[[Tensor, Tangents], np.ndarray]]] = [
    (linear, _tangent_linear),
    (Tensor.__add__, _tangent_add),
    (Tensor.__mul__, _tangent_mul),
    (Tensor.__truediv__, _tangent_truediv),
    (Tensor.__matmul__, _tangent_matmul),
    (Tensor.tanh, _tangent_tanh),
    (Tensor.__neg__, lambda node, dots: -dots[0]),
    (Tensor.exp, lambda node, dots: dots[0] * node.data),  # y' = x' y
    (Tensor.sigmoid, lambda node, dots: dots[0] * (node.data * (1 - node.data))),
    (Tensor.relu, lambda node, dots: dots[0] * (node._parents[0].data > 0)),
    # clip passes the tangent where it passes the value, lo <= x <= hi, i.e. where y == x
    (Tensor.clip, lambda node, dots: dots[0] * (node.data == node._parents[0].data)),
    (Tensor.reshape, lambda node, dots: dots[0].reshape(node.shape)),
    (Tensor.astype, lambda node, dots: dots[0].astype(node.dtype)),
    # an MLP's Linear + activation stack is one fused node (rlgrad.nn), with its own rule
    (_layer_stack, _layer_stack_tangent),
]


def _backward_code(fn: Callable) -> CodeType | None:
    """The code of the ``backward`` closure a primitive records: what identifies its nodes."""
    found = [c for c in fn.__code__.co_consts if isinstance(c, CodeType)
             and c.co_name == "backward"]
    return found[0] if len(found) == 1 else None


_TANGENTS = {code: rule for fn, rule in _TANGENT_RULES
             if (code := _backward_code(fn)) is not None}


def _tangent_plan(outputs: list[Tensor], params: list[Tensor]
                  ) -> list[tuple[Tensor, Callable]] | None:
    """The nodes between params and outputs with their tangent rules, in creation order; None
    if a node on the way has no rule here (or a parameter is not a leaf)."""
    if not all(p.is_leaf for p in params):
        return None
    nodes, _ = _interior_nodes(outputs)
    depends = {id(p) for p in params}
    plan = []
    for node in nodes:
        if any(id(p) in depends for p in node._parents):
            rule = _TANGENTS.get(node._backward.__code__)
            if rule is None:
                return None
            depends.add(id(node))
            plan.append((node, rule))
    return plan


class _JacobianProducts:
    """J v and J^T w for the Jacobian J = dy/dtheta of graph outputs y in parameters theta.

    J^T w is one ordinary backward pass. J v is a forward-mode (tangent) pass over the recorded
    graph when every node between theta and y is a primitive with a tangent rule above (the
    layers and activations of an MLP policy), ``jvp_mode = "forward"``.

    Otherwise, ``jvp_mode = "double_vjp"``: the graph of J^T u, built once with create_graph for
    a placeholder u, is linear in u, so backpropagating v through it gives
    d(v^T J^T u)/du = J v. Only the part of that graph that depends on u should be walked:
    while J v is computed, every other tensor (the forward pass, the parameters) is marked as
    needing no gradient, which makes the walk a tangent pass too, with more Python per node.
    """

    def __init__(self, outputs: list[Tensor], params: list[Tensor],
                 forward_mode: bool = True) -> None:
        self.outputs, self.params = outputs, params
        self._plan = _tangent_plan(outputs, params) if forward_mode else None
        if self._plan is not None:
            self.jvp_mode = "forward"
            reached = {id(p) for p in params} | {id(node) for node, _ in self._plan}
            self.depends_on_params = any(id(y) in reached for y in outputs)
            return
        self.jvp_mode = "double_vjp"
        self.placeholders = [Tensor(np.zeros(y.shape, dtype=y.dtype), requires_grad=True)
                             for y in outputs]
        jt_u = grad(outputs, params, grad_output=self.placeholders, create_graph=True,
                    allow_unused=True)
        # parameters J^T u does not reach, or reaches only through a zero derivative, have a
        # zero column in J
        self.used = [i for i, g in enumerate(jt_u) if g is not None and g.requires_grad]
        self.roots = [jt_u[i] for i in self.used]
        self.depends_on_params = bool(self.roots)
        nodes, leaves = _interior_nodes(self.roots)
        depends = {id(u) for u in self.placeholders}
        for node in nodes:
            if any(id(p) in depends for p in node._parents):
                depends.add(id(node))
        self.constants = [t for t in nodes + leaves if t.requires_grad and id(t) not in depends]

    def jvp(self, vs: list[np.ndarray]) -> list[np.ndarray]:
        """J v, one array per output, for ``vs`` one array per parameter."""
        if self._plan is not None:
            dots: dict[int, np.ndarray | None] = {id(p): v for p, v in zip(self.params, vs)}
            for node, rule in self._plan:
                dots[id(node)] = rule(node, [dots.get(id(p)) for p in node._parents])
            found = [dots.get(id(y)) for y in self.outputs]
        elif not self.roots:
            found = [None] * len(self.outputs)
        else:
            for t in self.constants:
                t.requires_grad = False
            try:
                jv = grad(self.roots, self.placeholders, grad_output=[vs[i] for i in self.used],
                          allow_unused=True)
            finally:
                for t in self.constants:
                    t.requires_grad = True
            found = [None if g is None else g.data for g in jv]
        return [np.zeros(y.shape, dtype=y.dtype) if g is None else g
                for g, y in zip(found, self.outputs)]

    def vjp(self, ws: list[np.ndarray]) -> list[np.ndarray]:
        """J^T w, one array per parameter, for ``ws`` one array per output."""
        with no_grad():
            jt_w = grad(self.outputs, self.params, grad_output=ws, allow_unused=True)
        return [np.zeros(p.shape, dtype=p.dtype) if g is None else g.data
                for g, p in zip(jt_w, self.params)]


class FisherVectorProduct:
    """v -> F v + damping v on flat vectors, for the Fisher information F of a policy.

    .. math::
        F = \\nabla^2_\\theta\\, \\frac{1}{N} \\sum_{b=1}^{N}
            \\mathrm{KL}\\big(\\pi_{\\mathrm{old}}(\\cdot|s_b) \\,\\|\\, \\pi_\\theta(\\cdot|s_b)
            \\big)\\Big|_{\\theta = \\theta_{\\mathrm{old}}}
          = \\frac{1}{N} \\sum_b \\mathbb{E}_{a \\sim \\pi}\\big[\\nabla_\\theta \\log
            \\pi_\\theta(a|s_b)\\, \\nabla_\\theta \\log \\pi_\\theta(a|s_b)^T\\big]

    where pi_old is ``dist`` detached: the Hessian at the current parameters of the mean KL
    divergence from the current policy, the metric of TRPO's trust region and of the natural
    gradient. F is positive semi-definite; ``damping`` > 0 makes ``F + damping I`` definite,
    so conjugate gradient can solve with it.

    ``dist`` is a Categorical or a Normal computed from ``params`` with its graph (built with
    gradients enabled), over a batch of N states; it is read, never changed. The graph pieces
    are built once, here; each call then costs about a forward and a backward pass.

    ``method``:
      - ``"analytic"`` (the default, fast): ``F v = J^T M J v``, with J the Jacobian in theta
        of the distribution's parameters y (logits; mean and log-std) and M the Hessian in y
        of the mean KL, known in closed form per batch element: diag(p) - p p^T for the
        logits of a Categorical (p its probabilities), 1/sigma^2 for a Normal's mean and 2 for
        each log-std, no cross term; over N, and summed over the N copies of a
        state-independent log-std. One tangent pass gives J v, one backward pass J^T (M J v).
        The KL's gradient in y vanishes at theta_old, so the other term of its Hessian, with
        the second derivatives of y, is zero: this is the exact Hessian, not an
        approximation (it is the Gauss-Newton matrix of the KL).
      - ``"double_backprop"`` (the reference): ``F v = grad((grad KL)^T v)`` through the graph
        of the KL's gradient, built once with ``create_graph=True``.

    Calling it with a flat vector of ``dim`` elements returns a flat array of ``dtype``.
    ``jvp_mode`` tells how the analytic method gets J v: ``"forward"``, a tangent pass over the
    graph (every node on the way is a primitive with a tangent rule: linear layers,
    activations, clip, arithmetic), or ``"double_vjp"``, backpropagation through the graph of
    J^T u (any other graph); None for ``"double_backprop"``.
    """

    def __init__(self, dist: Distribution, params: Tensor | Iterable[Tensor],
                 damping: float = 0.0, method: str = "analytic") -> None:
        if not isinstance(dist, Distribution):
            raise TypeError(f"dist must be a Categorical or a Normal, got {type(dist).__name__}")
        if method not in FVP_METHODS:
            raise ValueError(f"method must be one of {FVP_METHODS}, got {method!r}")
        self.params = _check_params(params)
        self.damping = _check_damping(damping)
        self.method = method
        self.dtype = _flat_dtype(self.params)
        self.dim = sum(p.data.size for p in self.params)
        old = _detached(dist)  # raises TypeError for other distributions
        if method == "analytic":
            outputs, self._metric = _output_fisher(dist)
            if not outputs:
                raise ValueError("dist does not depend on params: build it from the policy "
                                 "with gradients enabled (not under no_grad)")
            self._jacobian = _JacobianProducts(outputs, self.params)
            self.jvp_mode: str | None = self._jacobian.jvp_mode
            if not self._jacobian.depends_on_params:
                raise ValueError("dist does not depend on any of params")
        else:
            self.jvp_mode = None
            kl = old.kl(dist).mean()
            if not kl.requires_grad:
                raise ValueError("dist does not depend on params: build it from the policy "
                                 "with gradients enabled (not under no_grad)")
            kl_grads = grad(kl, self.params, create_graph=True, allow_unused=True)
            self._used = [i for i, g in enumerate(kl_grads) if g is not None and g.requires_grad]
            if not self._used:
                raise ValueError("dist does not depend on any of params")
            self._kl_grads = [kl_grads[i] for i in self._used]

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """A flat vector as one array per parameter, of its shape and dtype."""
        return _split(_check_flat(flat, self.dim), self.params)

    def join(self, parts: Sequence[Any]) -> np.ndarray:
        """One array per parameter as a flat vector of ``dtype``."""
        return _join(_check_vectors(parts, self.params), self.dtype)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """F v + damping v for a flat vector ``v`` of shape ``(dim,)``."""
        flat = _check_flat(v, self.dim)
        vs = _split(flat, self.params)
        if self.method == "analytic":
            jac = self._jacobian
            fv = jac.vjp(self._metric(jac.jvp(vs)))
        else:
            with no_grad():
                hv = grad(self._kl_grads, self.params, grad_output=[vs[i] for i in self._used],
                          allow_unused=True)
            fv = [np.zeros(p.shape, dtype=p.dtype) if h is None else h.data
                  for h, p in zip(hv, self.params)]
        out = _join(fv, self.dtype)
        if not np.isfinite(out).all():
            raise ValueError("the Fisher-vector product is not finite: the distribution's "
                             "parameters (or the policy's inputs) are not finite")
        if self.damping:
            out += self.damping * flat.astype(self.dtype, copy=False)
        return out


def fisher_vector_product(dist: Distribution, params: Tensor | Iterable[Tensor],
                          vectors: Sequence[Any], damping: float = 0.0) -> list[np.ndarray]:
    """F v + damping v, one array per parameter, for ``vectors`` one array per parameter.

    .. math:: F = \\nabla^2_\\theta\\, \\overline{\\mathrm{KL}}(\\pi_{\\mathrm{old}} \\,\\|\\,
              \\pi_\\theta)\\big|_{\\theta = \\theta_{\\mathrm{old}}}

    the Fisher information of the policy behind ``dist`` (a Categorical or a Normal built from
    ``params`` with its graph); see :class:`FisherVectorProduct`, which this builds for one
    product (build it yourself to take many, as conjugate gradient does).
    """
    params = _check_params(params)
    vs = _check_vectors(vectors, params)
    fvp = FisherVectorProduct(dist, params, damping)
    return _split(fvp(_join(vs, fvp.dtype)), params)


# --------------------------------------------------------------------------------------------
# the Hessian of a loss: Hessian-vector products, Lanczos, Hutchinson
# --------------------------------------------------------------------------------------------


class _HessianVectorProduct:
    """v -> H v for the Hessian of a scalar loss on flat float64 vectors.

    .. math:: H v = \\nabla_\\theta \\big( g^T v \\big), \\quad g = \\nabla_\\theta L

    g's graph is built once (create_graph=True); each product is one backward pass through it.
    """

    def __init__(self, loss: Tensor, params: Tensor | Iterable[Tensor]) -> None:
        self.loss = _check_loss(loss)
        self.params = _check_params(params)
        self.dim = sum(p.data.size for p in self.params)
        gs = grad(self.loss, self.params, create_graph=True, allow_unused=True)
        # a gradient that is constant in params (a linear loss) contributes nothing to H
        self.used = [i for i, g in enumerate(gs) if g is not None and g.requires_grad]
        self.grads = [gs[i] for i in self.used]

    def __call__(self, v: np.ndarray) -> np.ndarray:
        if not self.used:
            return np.zeros(self.dim)
        vs = _split(v, self.params)
        with no_grad():
            hv = grad(self.grads, self.params, grad_output=[vs[i] for i in self.used],
                      allow_unused=True)
        out = np.concatenate([np.zeros(p.data.size) if h is None else
                              h.data.ravel().astype(np.float64) for h, p in zip(hv, self.params)])
        if not np.isfinite(out).all():
            raise ValueError("a Hessian-vector product is not finite: the loss's second "
                             "derivatives overflow at these parameters")
        return out


def _orthogonalize(w: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """w minus its projection on the orthonormal rows of ``basis``, by classical Gram-Schmidt
    run twice ("twice is enough": orthogonal to rounding, where once can lose it)."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _select(values: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k wanted values, in the order of ``which``."""
    if which == "LA":
        order = np.argsort(-values, kind="stable")
    elif which == "SA":
        order = np.argsort(values, kind="stable")
    else:
        order = np.argsort(-np.abs(values), kind="stable")
    return order[:k]


def _check_which(which: Any) -> str:
    if not isinstance(which, str) or which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    return which


def hessian_eigenvalues(loss: Tensor, params: Tensor | Iterable[Tensor], k: int = 1,
                        which: str = "LA", iterations: int | None = None,
                        rng: np.random.Generator | int | None = None) -> np.ndarray:
    """k eigenvalues of the Hessian H of a scalar ``loss`` in ``params``, by Lanczos iteration.

    Lanczos builds an orthonormal basis Q_m = [q_1 .. q_m] of the Krylov space
    span{q_1, H q_1, ..., H^(m-1) q_1} (q_1 random) in which H is tridiagonal:

    .. math::
        \\beta_j q_{j+1} = H q_j - \\alpha_j q_j - \\beta_{j-1} q_{j-1}, \\quad
        \\alpha_j = q_j^T H q_j, \\quad
        Q_m^T H Q_m = T_m = \\mathrm{tridiag}(\\beta, \\alpha, \\beta)

    and the eigenvalues of T_m (Ritz values) approach H's extreme eigenvalues first. Each step
    costs one Hessian-vector product H q = grad(g^T q), g = grad(loss) built once with
    ``create_graph=True``; H is never formed. Every new q is re-orthogonalised against all the
    previous ones (twice), so rounding does not bring back copies of converged eigenvalues.

    A Ritz value theta with eigenvector s of T_m has residual ||H y - theta y|| =
    beta_m |s_m| (y = Q_m s); some eigenvalue of H lies within it. With ``iterations=None`` the
    iteration runs at least min(n, max(2k + 1, 20)) steps (scipy's ncv), then stops when the
    k wanted Ritz values all have residuals <= sqrt(eps) ||T||, and at the latest at
    n = the number of parameter elements, where T_n is H in another basis and the eigenvalues
    are exact to rounding. With ``iterations`` an integer, it runs exactly that many steps
    (at most n; at least k is required). What no residual can show is an eigenvalue the
    Krylov space has not reached yet: k values bunched within sqrt(eps) ||H|| of each other
    (the near-zero end of an ill-conditioned Hessian) can converge in the test while smaller
    ones are still missing; ask for ``iterations`` up to n there.

    A breakdown, beta_j ~ 0, means the Krylov space is an invariant subspace of H (the start
    vector missed some eigenvectors, as for repeated eigenvalues): the iteration goes on from a
    new random vector orthogonal to all previous ones, with beta_j = 0, so T_m is block
    diagonal and its eigenvalues are still eigenvalues of H.

    ``which`` (as scipy's ``eigsh``): "LA" the k largest (algebraic), returned in decreasing
    order; "SA" the k smallest, in increasing order; "LM" the k largest in magnitude, in
    decreasing order of magnitude. (scipy returns all three in increasing order; here the first
    value is always the most extreme one asked for.) ``rng`` (Generator, seed or None) draws
    the start vector. Returns a float64 array of shape ``(k,)``.
    """
    which = _check_which(which)
    k = _positive_int(k, "k")
    hvp = _HessianVectorProduct(loss, params)
    n = hvp.dim
    if k > n:
        raise ValueError(f"k={k} is larger than the dimension of the Hessian, {n}")
    if iterations is None:
        min_steps, max_steps = min(n, max(2 * k + 1, 20)), n
    else:
        steps = _positive_int(iterations, "iterations")
        if steps < k:
            raise ValueError(f"iterations={steps} is less than k={k}: Lanczos needs at least "
                             "k steps for k eigenvalues")
        min_steps = max_steps = min(steps, n)
    rng = _check_rng(rng)
    eps = float(np.finfo(_flat_dtype(hvp.params)).eps)
    converged_tol = math.sqrt(eps)
    breakdown_tol = 10 * math.sqrt(n) * eps

    def random_unit(basis: np.ndarray) -> np.ndarray:
        w = _orthogonalize(rng.standard_normal(n), basis)
        return w / np.linalg.norm(w)

    # the rows q_j, grown by doubling: a run that converges early never holds n x n numbers
    basis = np.zeros((min(max_steps, max(2 * min_steps, 32)), n))
    alphas: list[float] = []
    betas: list[float] = []
    basis[0] = random_unit(basis[:0])
    scale = 0.0  # a running bound on ||T|| <= ||H||, the unit of the tolerances
    next_check = min_steps
    for j in range(max_steps):
        q = basis[j]
        w = hvp(q)
        alpha = float(q @ w)
        w -= alpha * q
        if j:
            w -= betas[-1] * basis[j - 1]
        w = _orthogonalize(w, basis[:j + 1])
        beta = float(np.linalg.norm(w))
        alphas.append(alpha)
        scale = max(scale, abs(alpha) + beta + (betas[-1] if j else 0.0))
        m = j + 1
        if m == max_steps:
            break
        if m >= next_check:
            # eigh of T_m costs O(m^3): past a few hundred steps, test only every m/32 steps
            next_check = m + (1 if m < 256 else m // 32)
            ritz, vecs = np.linalg.eigh(_tridiagonal(alphas, betas))
            wanted = _select(ritz, k, which)
            if np.all(beta * np.abs(vecs[-1, wanted]) <= converged_tol * max(scale, 1e-300)):
                break
        if m == len(basis):
            basis = np.concatenate([basis, np.zeros((min(m, max_steps - m), n))])
        if beta <= breakdown_tol * scale:
            basis[m] = random_unit(basis[:m])
            beta = 0.0
        else:
            basis[m] = w / beta
        betas.append(beta)
    ritz = np.linalg.eigvalsh(_tridiagonal(alphas, betas[:len(alphas) - 1]))
    return ritz[_select(ritz, k, which)]


def _tridiagonal(alphas: list[float], betas: list[float]) -> np.ndarray:
    t = np.diag(np.asarray(alphas, dtype=np.float64))
    if betas:
        off = np.asarray(betas, dtype=np.float64)
        t += np.diag(off, 1) + np.diag(off, -1)
    return t


def hessian_trace(loss: Tensor, params: Tensor | Iterable[Tensor], samples: int = 100,
                  rng: np.random.Generator | int | None = None) -> float:
    """Hutchinson's estimate of the trace of the Hessian H of a scalar ``loss`` in ``params``.

    .. math:: \\mathrm{tr}(H) = \\mathbb{E}_z[z^T H z]
              \\approx \\frac{1}{S} \\sum_{i=1}^{S} z_i^T H z_i,
              \\qquad z_i \\in \\{-1, +1\\}^n \\text{ Rademacher}

    Unbiased because E[z z^T] = I. With Rademacher probes z_i^2 = 1, so the diagonal of H
    contributes exactly tr(H) to every sample: the variance comes from the off-diagonal
    entries only, Var[z^T H z] = 2 sum_{i != j} H_ij^2, and a diagonal Hessian gives the exact
    trace from one sample. Costs ``samples`` Hessian-vector products through one gradient graph
    (built once). ``rng`` (Generator, seed or None) draws the probes.
    """
    samples = _positive_int(samples, "samples")
    hvp = _HessianVectorProduct(loss, params)
    rng = _check_rng(rng)
    total = 0.0
    for _ in range(samples):
        z = rng.integers(0, 2, hvp.dim).astype(np.float64) * 2.0 - 1.0
        total += float(z @ hvp(z))
    return total / samples


# --------------------------------------------------------------------------------------------
# gradient noise
# --------------------------------------------------------------------------------------------


def gradient_noise_scale(sample_grads: Any, batch_size: int) -> float:
    """McCandlish et al. (2018)'s simple noise scale, B_simple = tr(Sigma) / |G|^2.

    G is the true gradient and Sigma the covariance of the per-example gradients, so a gradient
    averaged over B examples has covariance Sigma / B; B_simple estimates the critical batch
    size, where the noise in a minibatch gradient is as large as the gradient itself.

    ``sample_grads`` ``(k, P)`` holds k >= 2 independent gradient estimates g_1 .. g_k, each
    over ``batch_size`` = B examples. With their mean g_bar and sample covariance
    S = 1/(k-1) sum_i (g_i - g_bar)(g_i - g_bar)^T (which estimates Sigma / B):

    .. math::
        \\widehat{\\mathrm{tr}\\,\\Sigma} = B\\, \\mathrm{tr}(S), \\qquad
        \\widehat{|G|^2} = |\\bar g|^2 - \\frac{\\mathrm{tr}(S)}{k}, \\qquad
        \\hat B_{\\mathrm{simple}} = \\frac{\\widehat{\\mathrm{tr}\\,\\Sigma}}{\\widehat{|G|^2}}

    Both estimates are unbiased: E[B tr S] = tr Sigma, and E|g_bar|^2 = |G|^2 +
    tr(Sigma)/(k B), the excess that tr(S)/k removes. (They are the paper's Appendix A
    estimators with the small batch B and the big batch k B.) Plugging in |g_bar|^2 instead
    would bias B_simple low by that excess. The ratio of unbiased estimates is itself biased,
    upward for a noisy denominator (1/x is convex), and consistent as k grows; the paper
    smooths numerator and denominator separately over steps before dividing, which the caller
    can do with these formulas. When the noise swamps the signal, the estimate of |G|^2 is
    <= 0 and this returns inf.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    g = np.asarray(sample_grads.data if isinstance(sample_grads, Tensor) else sample_grads)
    if g.ndim != 2 or g.shape[0] < 2 or g.shape[1] < 1:
        raise ValueError(f"sample_grads must have shape (k, P) with k >= 2 gradient estimates "
                         f"and P >= 1, got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.number) or np.issubdtype(g.dtype, np.complexfloating):
        raise TypeError(f"sample_grads holds {g.dtype} values, expected real numbers")
    g = g.astype(np.float64)
    if not np.isfinite(g).all():
        raise ValueError("sample_grads is not finite")
    k = g.shape[0]
    g_bar = g.mean(axis=0)
    tr_s = float(((g - g_bar) ** 2).sum() / (k - 1))
    tr_sigma = batch_size * tr_s
    g_sq = float(g_bar @ g_bar) - tr_s / k
    if g_sq <= 0:
        return math.inf
    return tr_sigma / g_sq
