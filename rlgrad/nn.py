"""Neural-network building blocks on the engine, named and initialised as in torch.nn."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from .tensor import (
    Tensor,
    _leaf,
    _linear_grads,
    _result,
    _tanh_grad,
    is_grad_enabled,
    linear,
)

__all__ = [
    "Parameter",
    "Module",
    "Linear",
    "Sequential",
    "Tanh",
    "ReLU",
    "Sigmoid",
    "Identity",
    "MLP",
    "ACTIVATIONS",
    "orthogonal_",
]


class Parameter(Tensor):
    """A leaf Tensor that a Module registers as trainable (requires_grad=True)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, dtype: Any = None) -> None:
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)


class _IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class: attributes that are Parameters or Modules are registered in order.

    Subclasses set them in ``__init__`` (after ``super().__init__()``) and define ``forward``.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() was called in "
                f"{type(self).__name__}.__init__"
            )
        # a name keeps its place in the order when reassigned with the same kind, as in torch
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs, this module's first, then its children's in order."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            pre, mod = stack.pop(0)
            for name, p in mod._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield pre + name, p
            children = [(f"{pre}{name}.", m) for name, m in mod._modules.items()]
            stack[0:0] = children
        return

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """A copy of every parameter's value, by dotted name."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True
                        ) -> _IncompatibleKeys:
        """Copy values into the parameters in place (optimizers keep their references).

        Every name and shape is checked before anything is written, so on error the module is
        untouched. ``strict`` makes missing or unexpected names an error; shapes always are.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"state_dict does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        arrays = {}
        for name, value in state_dict.items():
            if name not in own:
                continue
            arr = np.asarray(value.data if isinstance(value, Tensor) else value)
            if arr.shape != own[name].shape:
                raise ValueError(
                    f"shape mismatch for {name!r}: checkpoint has {arr.shape}, the module "
                    f"has {own[name].shape}"
                )
            if not np.issubdtype(arr.dtype, np.number):
                raise TypeError(f"{name!r} holds {arr.dtype} values, expected numbers")
            arrays[name] = arr
        for name, arr in arrays.items():
            own[name].data[...] = arr
        return _IncompatibleKeys(missing, unexpected)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


def orthogonal_(shape: tuple[int, int], gain: float, rng: np.random.Generator,
                dtype: Any = np.float64) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal rows or columns, times ``gain``.

    As torch.nn.init.orthogonal_: QR of a standard normal matrix, signs fixed by diag(R).
    """
    rows, cols = shape
    flat = rng.standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).astype(dtype)


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features) as in torch.

    ``init="default"`` is torch's: W and b uniform in +-1/sqrt(in_features).
    ``init="orthogonal"`` is the RL habit (CleanRL, SB3): orthogonal W times ``gain``, b = 0.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str = "default",
        gain: float = 1.0,
        rng: np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        for what, n in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(n, (int, np.integer)) or n <= 0:
                raise ValueError(f"{what} must be a positive integer, got {n!r}")
        rng = np.random.default_rng() if rng is None else rng
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if init == "default":
            bound = 1.0 / np.sqrt(in_features)
            w = rng.uniform(-bound, bound, (out_features, in_features))
            b = rng.uniform(-bound, bound, out_features)
        elif init == "orthogonal":
            w = orthogonal_((out_features, in_features), gain, rng)
            b = np.zeros(out_features)
        else:
            raise ValueError(f"init must be 'default' or 'orthogonal', got {init!r}")
        self.weight = Parameter(w, dtype=dtype)
        self.bias = Parameter(b, dtype=dtype) if bias else None

    def forward(self, x: Tensor | np.ndarray) -> Tensor:
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Sequential(Module):
    """Modules applied one after another; children are named "0", "1", ..."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__} at {i}")
            setattr(self, str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m.forward(x)  # what m(x) would call, one Python call fewer per layer
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.sigmoid()


class Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


ACTIVATIONS: dict[str, type[Module]] = {
    "tanh": Tanh,
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "identity": Identity,
}


def _activation(a: str | type[Module] | Callable[[], Module] | None, what: str) -> Module | None:
    if a is None:
        return None
    if isinstance(a, str):
        if a.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown {what} {a!r}; expected one of {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[a.lower()]()
    if isinstance(a, Module):
        return a
    m = a()
    if not isinstance(m, Module):
        raise TypeError(f"{what} must build a Module, got {type(m).__name__}")
    return m


class MLP(Sequential):
    """Linear layers of the given sizes with an activation between them.

    ``MLP([4, 64, 64, 2])`` is Linear(4, 64), Tanh, Linear(64, 64), Tanh, Linear(64, 2).
    ``activation`` and ``output_activation`` take a name ("tanh", "relu", ...) or a Module class.
    ``init`` and ``rng`` go to every Linear; with ``init="orthogonal"`` hidden layers get gain
    sqrt(2) and the output layer ``output_gain``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | type[Module] = "tanh",
        output_activation: str | type[Module] | None = None,
        init: str = "default",
        output_gain: float = 1.0,
        rng: np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got {sizes}")
        rng = np.random.default_rng() if rng is None else rng
        layers: list[Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            gain = output_gain if last else float(np.sqrt(2))
            layers.append(Linear(n_in, n_out, init=init, gain=gain, rng=rng, dtype=dtype))
            act = _activation(output_activation if last else activation,
                              "output_activation" if last else "activation")
            if act is not None:
                layers.append(act)
        super().__init__(*layers)
        self.sizes = sizes

    def forward(self, x: Any) -> Any:
        """The layers in turn, as one graph node (see :func:`_layer_stack`) when they are plain
        ``Linear`` layers with ``Tanh``, ``ReLU`` or ``Identity`` between them; otherwise (a
        layer replaced by another kind of module) one module after another, as Sequential."""
        layers = self._fusable_layers()
        if layers is None:
            return super().forward(x)
        return _layer_stack(x, layers)

    def _fusable_layers(self) -> list[list[Any]] | None:
        """``[weight, bias, activation name or None]`` per Linear, or None if not fusable."""
        layers: list[list[Any]] = []
        for m in self._modules.values():
            kind = type(m)
            if kind is Linear:
                bias = None if m.bias is None else _as_tensor(m.bias)
                layers.append([_as_tensor(m.weight), bias, None])
            elif kind is Identity:
                continue
            elif kind in _FUSED_ACTIVATIONS and layers and layers[-1][2] is None:
                layers[-1][2] = _FUSED_ACTIVATIONS[kind]
            else:
                return None
        return layers or None


_FUSED_ACTIVATIONS: dict[type, str] = {Tanh: "tanh", ReLU: "relu"}


def _layer_stack(x: Any, layers: list[list[Any]]) -> Tensor:
    r"""Dense layers with activations, ``h_0 = x``, ``h_k = phi_k(h_{k-1} W_k^T + b_k)``, fused
    into one graph node whose backward runs the layers' own local derivatives in reverse:

    .. math:: G_k = \frac{\partial L}{\partial h_k} \odot \phi_k'
              \big(\tanh' = 1 - h_k^2,\ \mathrm{relu}' = [h_k > 0]\big), \quad
              \frac{\partial L}{\partial W_k} = G_k^T h_{k-1}, \quad
              \frac{\partial L}{\partial b_k} = \textstyle\sum_{batch} G_k, \quad
              \frac{\partial L}{\partial h_{k-1}} = G_k W_k

    The values and gradients are bitwise those of the unfused ``linear`` and ``tanh``/``relu``
    nodes (the same numpy expressions, in the same order); one node instead of one per layer
    and activation saves the per-node bookkeeping of the graph, which for RL-sized networks
    costs as much as the arithmetic. Under ``no_grad`` no Tensor is made until the output.
    With ``create_graph`` the hidden activations are recomputed as Tensors and the same
    formulas run on them, so the gradient is differentiable again (double backprop).
    """
    if not is_grad_enabled():  # inference: numpy only
        h = x.data if isinstance(x, Tensor) else np.asarray(x)
        for weight, bias, act in layers:
            h = _affine(h, weight, bias)
            if act == "tanh":
                np.tanh(h, out=h)
            elif act == "relu":
                h = np.maximum(h, 0).astype(h.dtype, copy=False)
        return _leaf(h)
    x = x if isinstance(x, Tensor) else _leaf(np.asarray(x))
    hs = [x.data]  # the input of each layer, then the output
    for weight, bias, act in layers:
        h = _affine(hs[-1], weight, bias)
        if act == "tanh":
            np.tanh(h, out=h)
        elif act == "relu":
            h = np.maximum(h, 0).astype(h.dtype, copy=False)
        hs.append(h)
    parents = (x, *(p for layer in layers for p in layer[:2] if p is not None))
    # which layer inputs carry a gradient: x's, then those after a layer with a trainable part
    carries = [x.requires_grad]
    for weight, bias, _ in layers:
        carries.append(carries[-1] or weight.requires_grad
                       or (bias is not None and bias.requires_grad))

    def backward(node, g, cg):
        values = _recompute(x, layers) if cg else hs
        grads: list[Any] = [None] * len(parents)  # x, W_1, b_1, W_2, ...
        i = len(parents)
        for k in range(len(layers) - 1, -1, -1):
            weight, bias, act = layers[k]
            if act == "tanh":
                g = _tanh_grad(g, values[k + 1], cg)
            elif act == "relu":
                g = g * (values[k + 1].data > 0 if cg else values[k + 1] > 0)
            need_b = bias is not None and bias.requires_grad
            g, gw, gb = _linear_grads(g, values[k], weight if cg else weight.data,
                                      carries[k], weight.requires_grad, need_b, cg)
            if bias is not None:
                i -= 1
                grads[i] = gb
            i -= 1
            grads[i] = gw
            if g is None:  # nothing below this layer needs a gradient
                break
        grads[0] = g
        return grads

    backward.stack = (layers, hs)  # what _layer_stack_tangent reads (forward mode)
    return _result(hs[-1], parents, backward)


def _layer_stack_tangent(node: Tensor, dots: list[np.ndarray | None]) -> np.ndarray:
    r"""Forward mode through a fused layer stack: the tangent of its output from the tangents
    ``dots`` of its inputs (x, W_1, b_1, ...; None for an input that does not move),

    .. math:: h_k' = \phi_k'(h_k) \odot (h_{k-1}' W_k^T + h_{k-1} W_k'^T + b_k')

    with the stack's own activations (for directional derivatives, Fisher-vector products by
    forward mode). Writes into no given tangent.
    """
    layers, hs = node._backward.stack
    dh, i = dots[0], 1
    for k, (weight, bias, act) in enumerate(layers):
        dw = dots[i]
        db = dots[i + 1] if bias is not None else None
        i += 1 if bias is None else 2
        h = hs[k]
        out = None
        if dh is not None:
            out = np.dot(dh, weight.data.T) if dh.ndim <= 2 else dh @ weight.data.T
        if dw is not None:
            term = np.dot(h, dw.T) if h.ndim <= 2 else h @ dw.T
            out = term if out is None else np.add(out, term, out=out)
        if db is not None:
            out = np.broadcast_to(db, hs[k + 1].shape) if out is None else out + db
        if out is not None and act == "tanh":
            out = _tanh_grad(out, hs[k + 1], False)  # writes into a temporary, not into out
        elif out is not None and act == "relu":
            out = out * (hs[k + 1] > 0)
        dh = out
    return np.zeros_like(node.data) if dh is None else dh


def _affine(h: np.ndarray, weight: Tensor, bias: Tensor | None) -> np.ndarray:
    """``h W^T + b`` as :func:`rlgrad.tensor.linear` computes it, with its shape check."""
    w = weight.data
    if w.ndim != 2 or h.ndim == 0 or h.shape[-1] != w.shape[1]:
        raise ValueError(
            f"linear: input of shape {h.shape} does not fit a weight of shape {w.shape} "
            f"(expected input (..., {w.shape[-1]}))"
        )
    out = np.dot(h, w.T) if h.ndim <= 2 else h @ w.T  # bitwise the same product
    if bias is not None:
        out += bias.data
    return out


def _as_tensor(p: Any) -> Tensor:
    return p if isinstance(p, Tensor) else _leaf(np.asarray(p))


def _recompute(x: Tensor, layers: list[list[Any]]) -> list[Tensor]:
    """The layer inputs and output as Tensors on the graph (for double backprop)."""
    values = [x]
    for weight, bias, act in layers:
        h = linear(values[-1], weight, bias)
        if act == "tanh":
            h = h.tanh()
        elif act == "relu":
            h = h.relu()
        values.append(h)
    return values
