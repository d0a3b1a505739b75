"""Export a policy's deterministic action, with its observation normalisation, for inference
without rlgrad: an ONNX model, or a numpy-only ``.npz`` read by ``policy_loader.py``.

The exported function, in float32 throughout (inputs are cast to float32 first):

.. math::
    x = \\operatorname{clip}\\big((o - \\mu) / \\sigma, -c, c\\big), \\quad
        \\sigma = \\sqrt{\\mathrm{var} + \\epsilon}  \\qquad \\text{(if there is a normaliser)}

    z = f_\\theta(x) \\qquad \\text{(the policy's ``action_layers()``: logits or mean)}

    a = \\arg\\max_k z_k \\qquad \\text{(categorical; int64, the first index on ties)}

    a = \\min(\\max(g(z), \\mathrm{low}), \\mathrm{high}), \\quad
        g(z) = \\mathrm{low} + (\\tanh z + 1) \\, \\tfrac{\\mathrm{high} - \\mathrm{low}}{2}
        \\text{ if squash, else } z \\qquad \\text{(Gaussian: the mean)}

``sigma`` and ``(high - low) / 2`` are computed in float64 from the given values and rounded to
float32 once, at export. Without ``action_space`` there is no clipping, and ``squash`` gives
``tanh z``.

An agent's deterministic ``predict`` gives the same action when it normalises and clips the
observation with the same statistics, takes ``policy(x).mode()`` (the argmax of the logits, or
the mean), squashes and rescales it if its policy is tanh-squashed, and clips it to the action
space's bounds (the clip ``envs`` applies before ``env.step``): equal for discrete actions
(barring exact ties in float32), within float32 rounding for Box actions, since the agent
computes in the dtype of its observations.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .distributions import Categorical, Normal
from .nn import Identity, Linear, Module, ReLU, Sigmoid, Tanh
from .tensor import Tensor, no_grad

__all__ = ["FORMATS", "ONNX_OPSET", "ONNX_IR_VERSION", "NPZ_FORMAT_VERSION", "export_policy"]

FORMATS = ("onnx", "numpy")
SUFFIXES = {"onnx": ".onnx", "numpy": ".npz"}
# opset 17 and IR version 8 (onnx 1.12): every op used here exists there, so older runtimes load
# the model too
ONNX_OPSET = 17
ONNX_IR_VERSION = 8
NPZ_FORMAT = "rlgrad-policy"
NPZ_FORMAT_VERSION = 1
LOADER = Path(__file__).with_name("policy_loader.py")

_ACTIVATION_OPS: dict[type[Module], str] = {Tanh: "tanh", ReLU: "relu", Sigmoid: "sigmoid"}
_ONNX_OPS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}
_NORMALIZER_KEYS = ("mean", "var", "epsilon", "clip")


@dataclass(frozen=True)
class _Program:
    """What both formats compute, checked and in float32 (see the module docstring)."""

    kind: str                             # "discrete" or "continuous"
    ops: tuple[str, ...]                  # "linear" or an activation name, in order
    weights: tuple[np.ndarray, ...]       # (out, in) per linear op
    biases: tuple[np.ndarray, ...]        # (out,) per linear op
    obs_dim: int
    out_dim: int
    normalizer: dict[str, Any] | None     # as given, float64, for the metadata
    obs_mean: np.ndarray | None           # (obs_dim,)
    obs_std: np.ndarray | None            # (obs_dim,)
    obs_clip: np.float32 | None
    squash: bool
    bounds: tuple[list[float], list[float]] | None  # (low, high) as given, float64
    action_low: np.ndarray | None         # (A,)
    action_high: np.ndarray | None        # (A,)
    action_scale: np.ndarray | None       # (A,), (high - low) / 2 when squash has bounds


def export_policy(policy: Module, path: str | os.PathLike[str], format: str, *,
                  obs_normalizer: Mapping[str, Any] | None = None,
                  action_space: Any = None, squash: bool = False) -> Path:
    """Write ``policy``'s deterministic action (module docstring) to ``path``; returns the path.

    Args:
        policy: a Module with ``action_layers()`` (observation -> logits or mean, as Linear /
            Tanh / ReLU / Sigmoid / Identity modules) whose ``policy(obs)`` is a Categorical
            (discrete actions) or a Normal (Box actions).
        path: the file to write, ending in ``.onnx`` or ``.npz`` as the format says; missing
            parent directories are created, an existing file is replaced atomically.
        format: ``"onnx"``: a model with float32 input ``obs`` ``[batch, obs_dim]`` (dynamic
            batch) and output ``action``, int64 ``[batch]`` or float32 ``[batch, action_dim]``;
            opset :data:`ONNX_OPSET`; metadata props ``rlgrad_version``, ``rlgrad_kind``,
            ``rlgrad_obs_normalizer``, ``rlgrad_action_low`` / ``_high``, ``rlgrad_squash``
            (JSON; infinities as the strings ``"inf"`` / ``"-inf"``).
            ``"numpy"``: an ``.npz`` of plain arrays (no pickle) and a copy of
            ``policy_loader.py`` beside it (replacing a file of that name):
            ``load_policy("policy.npz")(obs)`` with numpy alone.
        obs_normalizer: None, or ``{"mean": (obs_dim,), "var": (obs_dim,), "epsilon": float,
            "clip": float}`` (exactly these keys; ``clip`` may be ``inf``).
        action_space: Box bounds ``(low, high)`` (or an object with ``.low`` and ``.high``), each
            a float or ``(action_dim,)``, ``-inf`` / ``inf`` where unbounded; None for none.
            Must be None for a categorical policy.
        squash: tanh-squash the Gaussian mean (then needs finite bounds, if any are given).

    Raises:
        ValueError: unknown format, wrong suffix, unsupported layer, shapes that do not chain,
            non-finite weights, a bad normaliser or bounds.
        TypeError: a policy without ``action_layers()``, arguments of the wrong type.
        OSError: the path cannot be written.
        ImportError: format ``"onnx"`` without the onnx package.
    """
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {list(FORMATS)}")
    path = Path(path)
    if path.suffix != SUFFIXES[format]:
        raise ValueError(f"format {format!r} writes a {SUFFIXES[format]} file, got path "
                         f"{str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"cannot export to {str(path)!r}: it is a directory")
    program = _program(policy, obs_normalizer, action_space, squash)
    if format == "onnx":
        _write_atomic(path, _onnx_model(program).SerializeToString())
    else:
        _write_atomic(path.with_name(LOADER.name), LOADER.read_bytes())
        _write_atomic(path, _npz_bytes(program))
    return path


# ---------------------------------------------------------------------------------------------
# Checking the policy, the normaliser and the bounds


def _program(policy: Module, obs_normalizer: Mapping[str, Any] | None, action_space: Any,
             squash: bool) -> _Program:
    if not isinstance(policy, Module) or not callable(getattr(policy, "action_layers", None)):
        raise TypeError(f"policy must be an rlgrad Module with action_layers(), got "
                        f"{type(policy).__name__}")
    if not isinstance(squash, (bool, np.bool_)):
        raise TypeError(f"squash must be a bool, got {squash!r}")
    layers = list(policy.action_layers())
    ops: list[str] = []
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    width: int | None = None
    for i, m in enumerate(layers):
        if isinstance(m, Linear):
            with np.errstate(over="ignore"):  # too large for float32 -> inf, refused below
                w = np.asarray(m.weight.data, dtype=np.float32)
                b = (np.zeros(w.shape[0], np.float32) if m.bias is None
                     else np.asarray(m.bias.data, dtype=np.float32))
            if w.ndim != 2 or b.shape != w.shape[:1]:
                raise ValueError(f"layer {i} (Linear) has weight {w.shape} and bias {b.shape}; "
                                 f"expected (out, in) and (out,)")
            if width is not None and w.shape[1] != width:
                raise ValueError(f"layer {i} (Linear) takes {w.shape[1]} inputs but the layers "
                                 f"before it give {width}")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ValueError(f"layer {i} (Linear) has non-finite weights or biases (in "
                                 f"float32)")
            ops.append("linear")
            weights.append(np.ascontiguousarray(w))
            biases.append(np.ascontiguousarray(b))
            width = w.shape[0]
        elif type(m) in _ACTIVATION_OPS:
            ops.append(_ACTIVATION_OPS[type(m)])
        elif type(m) is not Identity:
            raise ValueError(f"layer {i} of action_layers() is a {type(m).__name__}; export "
                             f"supports Linear, Tanh, ReLU, Sigmoid, Identity")
    if not weights:
        raise ValueError(f"action_layers() of {type(policy).__name__} has no Linear layer")
    obs_dim, out_dim = weights[0].shape[1], weights[-1].shape[0]
    kind = _kind_checked(policy, layers, obs_dim, out_dim)
    normalizer, mean, std, clip = _normalizer(obs_normalizer, obs_dim)
    given, low, high, scale = _bounds(action_space, kind, out_dim, bool(squash))
    return _Program(kind, tuple(ops), tuple(weights), tuple(biases), obs_dim, out_dim,
                    normalizer, mean, std, clip, bool(squash), given, low, high, scale)


def _kind_checked(policy: Module, layers: Sequence[Module], obs_dim: int, out_dim: int) -> str:
    """"discrete" or "continuous" from the policy's distribution, after checking on a few fixed
    observations that ``action_layers()`` computes what ``policy(obs)`` feeds it."""
    probe = np.random.default_rng(0).standard_normal((8, obs_dim)).astype(np.float32)
    with no_grad():
        dist = policy(probe)
        z = Tensor(probe)
        for m in layers:
            z = m(z)
    if isinstance(dist, Categorical):
        kind, param = "discrete", dist.logits.data
    elif isinstance(dist, Normal):
        kind, param = "continuous", dist.mean.data
    else:
        raise TypeError(f"policy(obs) of {type(policy).__name__} gives a {type(dist).__name__}; "
                        f"export supports Categorical and Normal")
    z = np.asarray(z.data)
    if z.shape != param.shape or not np.allclose(z, param, rtol=1e-5, atol=1e-6):
        raise ValueError(f"action_layers() of {type(policy).__name__} do not reproduce the "
                         f"{'logits' if kind == 'discrete' else 'mean'} of policy(obs)")
    return kind


def _real(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _normalizer(norm: Mapping[str, Any] | None, obs_dim: int
                ) -> tuple[dict[str, Any] | None, Any, Any, Any]:
    if norm is None:
        return None, None, None, None
    if not isinstance(norm, Mapping):
        raise TypeError(f"obs_normalizer must be a mapping or None, got {type(norm).__name__}")
    if set(norm) != set(_NORMALIZER_KEYS):
        raise ValueError(f"obs_normalizer has keys {sorted(map(str, norm))}; expected exactly "
                         f"{list(_NORMALIZER_KEYS)}")
    arrays = {}
    for key in ("mean", "var"):
        a = np.asarray(norm[key])
        if a.dtype.kind not in "iuf" or a.shape != (obs_dim,):
            raise ValueError(f"obs_normalizer[{key!r}] must be {obs_dim} floats (the policy's "
                             f"obs_dim), got dtype {a.dtype} shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"obs_normalizer[{key!r}] has non-finite values")
        arrays[key] = a.astype(np.float64)
    epsilon = _real("obs_normalizer['epsilon']", norm["epsilon"])
    clip = _real("obs_normalizer['clip']", norm["clip"])
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"obs_normalizer['epsilon'] must be finite and >= 0, got {epsilon}")
    if not clip > 0:
        raise ValueError(f"obs_normalizer['clip'] must be > 0 (inf for none), got {clip}")
    if (arrays["var"] < 0).any():
        raise ValueError(f"obs_normalizer['var'] must be >= 0, got min {arrays['var'].min()}")
    with np.errstate(over="ignore"):  # too large for float32 -> inf, refused just below
        mean = arrays["mean"].astype(np.float32)
        std = np.sqrt(arrays["var"] + epsilon).astype(np.float32)
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ValueError("obs_normalizer: mean and sqrt(var + epsilon) must be finite and "
                         "std > 0 in float32")
    given = {"mean": arrays["mean"].tolist(), "var": arrays["var"].tolist(),
             "epsilon": epsilon, "clip": clip}
    return given, mean, std, np.float32(clip)


def _bounds(action_space: Any, kind: str, action_dim: int, squash: bool
            ) -> tuple[Any, Any, Any, Any]:
    if kind == "discrete":
        if action_space is not None or squash:
            raise ValueError("a categorical policy takes neither action_space bounds nor squash")
        return None, None, None, None
    if action_space is None:
        return None, None, None, None
    if hasattr(action_space, "low") and hasattr(action_space, "high"):
        low, high = action_space.low, action_space.high
    elif isinstance(action_space, Sequence) and len(action_space) == 2:
        low, high = action_space
    else:
        raise TypeError(f"action_space must be (low, high) or have .low and .high, got "
                        f"{type(action_space).__name__}")
    bounds = []
    for name, b in (("low", low), ("high", high)):
        a = np.asarray(b)
        if a.dtype.kind not in "iuf" or a.shape not in ((), (action_dim,)):
            raise ValueError(f"action_space {name} must be a float or {action_dim} floats (the "
                             f"policy's action_dim), got dtype {a.dtype} shape {a.shape}")
        if np.isnan(a).any():
            raise ValueError(f"action_space {name} has nan values")
        bounds.append(np.broadcast_to(a.astype(np.float64), (action_dim,)))
    low64, high64 = bounds
    if (low64 > high64).any():
        raise ValueError(f"action_space low must be <= high, got low {low64.tolist()} and high "
                         f"{high64.tolist()}")
    scale = None
    if squash and not (np.isfinite(low64).all() and np.isfinite(high64).all()):
        raise ValueError("squash scales tanh to the bounds, which must then be finite; got "
                         f"low {low64.tolist()} and high {high64.tolist()}")
    with np.errstate(over="ignore"):  # too large for float32 -> inf, refused below for squash
        low, high = low64.astype(np.float32), high64.astype(np.float32)
    if squash:
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError("squash: the bounds must fit float32 (|bound| < 3.4e38)")
        scale = ((high64 - low64) / 2).astype(np.float32)  # <= max |bound|: finite too
    return (low64.tolist(), high64.tolist()), low, high, scale


# ---------------------------------------------------------------------------------------------
# The two formats


def _json_float(x: float) -> float | str:
    """JSON has no infinities (the values here are never nan)."""
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _metadata(p: _Program) -> dict[str, str]:
    norm = None if p.normalizer is None else {**p.normalizer,
                                              "clip": _json_float(p.normalizer["clip"])}
    low, high = ([[_json_float(x) for x in b] for b in p.bounds] if p.bounds is not None
                 else (None, None))
    return {
        "rlgrad_version": __version__,
        "rlgrad_kind": p.kind,
        "rlgrad_obs_normalizer": json.dumps(norm),
        "rlgrad_action_low": json.dumps(low),
        "rlgrad_action_high": json.dumps(high),
        "rlgrad_squash": json.dumps(p.squash),
    }


def _onnx_model(p: _Program) -> Any:
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        # a ValueError, so the CLI reports it in one line, as every other missing extra
        raise ValueError("format 'onnx' needs the onnx package: pip install 'rlgrad[export]'"
                         ) from None
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    x = "obs"
    if p.obs_mean is not None:
        x = node("Sub", [x, const("obs_mean", p.obs_mean)], "obs_centred")
        x = node("Div", [x, const("obs_std", p.obs_std)], "obs_scaled")
        if np.isfinite(p.obs_clip):
            x = node("Clip", [x, const("obs_clip_low", -p.obs_clip),
                              const("obs_clip_high", p.obs_clip)], "obs_normalized")
    layer = 0
    for i, op in enumerate(p.ops):
        if op == "linear":
            x = node("Gemm", [x, const(f"weight_{layer}", p.weights[layer]),
                              const(f"bias_{layer}", p.biases[layer])], f"linear_{i}", transB=1)
            layer += 1
        else:
            x = node(_ONNX_OPS[op], [x], f"{op}_{i}")
    if p.kind == "discrete":
        node("ArgMax", [x], "action", axis=1, keepdims=0)
        out = helper.make_tensor_value_info("action", TensorProto.INT64, ["batch"])
    else:
        if p.squash:
            x = node("Tanh", [x], "squashed")
        if p.action_low is not None:
            low = const("action_low", p.action_low)
            if p.action_scale is not None:
                x = node("Add", [x, const("one", np.float32(1))], "squashed_plus_one")
                x = node("Mul", [x, const("action_scale", p.action_scale)], "squashed_scaled")
                x = node("Add", [x, low], "squashed_shifted")
            x = node("Max", [x, low], "above_low")
            x = node("Min", [x, const("action_high", p.action_high)], "below_high")
        node("Identity", [x], "action")
        out = helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", p.out_dim])
    obs = helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", p.obs_dim])
    graph = helper.make_graph(nodes, "rlgrad_policy", [obs], [out], initializer=inits)
    model = helper.make_model(graph, producer_name="rlgrad", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION)
    model.doc_string = __doc__.split("\n\n")[0]
    helper.set_model_props(model, _metadata(p))
    onnx.checker.check_model(model, full_check=True)
    return model


def _npz_bytes(p: _Program) -> bytes:
    arrays: dict[str, np.ndarray] = {
        "format": np.array(NPZ_FORMAT),
        "format_version": np.array(NPZ_FORMAT_VERSION),
        "rlgrad_version": np.array(__version__),
        "kind": np.array(p.kind),
        "ops": np.array(p.ops, dtype=str),
        "obs_dim": np.array(p.obs_dim),
        "squash": np.array(p.squash),
    }
    for i, (w, b) in enumerate(zip(p.weights, p.biases)):
        arrays[f"weight_{i}"], arrays[f"bias_{i}"] = w, b
    if p.normalizer is not None:
        arrays.update(obs_mean=p.obs_mean, obs_std=p.obs_std, obs_clip=np.array(p.obs_clip),
                      obs_var=np.array(p.normalizer["var"]),
                      obs_epsilon=np.array(p.normalizer["epsilon"]))
    if p.action_low is not None:
        arrays.update(action_low=p.action_low, action_high=p.action_high)
    if p.action_scale is not None:
        arrays["action_scale"] = p.action_scale
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise type(e)(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0o600 would hide the export from others
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise type(e)(f"cannot write {str(path)!r}: {e.strerror or e}") from None
        raise
