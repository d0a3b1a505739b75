"""The optimizer base class: parameter groups, per-parameter state, and a pickle-free state_dict.

An optimizer updates ``param.data`` in place from ``param.grad``. It never rebinds ``.data``, so
views and aliases of a parameter that modules hold stay valid after ``step()``.

Saving and loading
------------------
``Optimizer.state_dict()`` has torch's layout, with numpy arrays instead of tensors::

    {"state": {0: {"step": 3, "exp_avg": ndarray, ...}, 1: {...}},
     "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), ..., "params": [0, 1]}, ...]}

Parameters are numbered in the order they appear across ``param_groups``. A parameter that has no
state yet (it never had a gradient) has no entry in ``"state"``.

To write it without pickle, split it into arrays and JSON metadata::

    arrays, meta = flatten_state_dict(optimizer.state_dict(), prefix="optim.")
    np.savez(path + ".npz", **arrays)
    with open(path + ".json", "w") as f:
        json.dump(meta, f)

    with np.load(path + ".npz", allow_pickle=False) as arrays, open(path + ".json") as f:
        optimizer.load_state_dict(unflatten_state_dict(arrays, json.load(f)))

``load_state_dict`` validates the number of groups, the number of parameters per group and every
state array's shape against the parameters it is loaded into, and copies the arrays.
"""

from __future__ import annotations

from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any

import numpy as np

from rlgrad.tensor import Tensor

__all__ = ["Optimizer", "ParamState", "flatten_state_dict", "unflatten_state_dict"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class ParamState(MutableMapping):
    """Per-parameter state, keyed by the parameter's identity: ``optimizer.state[p]``.

    Tensors compare elementwise (``p == q`` is an array), so they cannot be dict keys by value.
    A missing parameter reads as a fresh empty dict that is stored, like torch's
    ``defaultdict(dict)``.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Tensor, dict[str, Any]]] = {}

    def __getitem__(self, param: Tensor) -> dict[str, Any]:
        entry = self._entries.get(id(param))
        if entry is None:
            entry = self._entries[id(param)] = (param, {})
        return entry[1]

    def __setitem__(self, param: Tensor, value: dict[str, Any]) -> None:
        # The entry keeps the parameter alive, so its id cannot be reused by another object.
        self._entries[id(param)] = (param, value)

    def __delitem__(self, param: Tensor) -> None:
        del self._entries[id(param)]

    def __contains__(self, param: object) -> bool:
        return id(param) in self._entries

    def __iter__(self) -> Iterator[Tensor]:
        return (param for param, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> ValuesView:
        return _StateValues(self)

    def items(self) -> ItemsView:
        return _StateItems(self)


class _StateValues(ValuesView):
    """``ParamState.values()``, iterated without a lookup per parameter."""

    __slots__ = ()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (state for _, state in self._mapping._entries.values())


class _StateItems(ItemsView):
    """``ParamState.items()``, iterated without a lookup per parameter."""

    __slots__ = ()

    def __iter__(self) -> Iterator[tuple[Tensor, dict[str, Any]]]:
        return iter(self._mapping._entries.values())


class Optimizer:
    """Base class of all optimizers.

    Args:
        params: an iterable of Tensors, or of dicts (parameter groups) with a ``"params"`` key and
            optional hyperparameters that override ``defaults`` for that group, e.g.
            ``[{"params": policy.parameters()}, {"params": value_fn.parameters(), "lr": 1e-2}]``.
        defaults: the optimizer's hyperparameters, used for every key a group does not set.

    A subclass validates its hyperparameters in ``_check_hyperparameters`` (called for the
    defaults and for every group) and implements ``step``.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        if isinstance(params, (Tensor, dict)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or "
                f"dicts, but got a {type(params).__name__} (wrap it in a list)"
            )
        self._check_hyperparameters(defaults)
        self.defaults = defaults
        self.state = ParamState()
        self.param_groups: list[dict[str, Any]] = []

        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        """Raise ValueError for an invalid hyperparameter in ``group``; subclasses override."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyperparameters (defaults fill the rest).

        Useful to start training new layers, or to give the value network its own lr.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' key")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs. Please use a list instead."
            )
        params = list(params)
        for param in params:
            if not isinstance(param, Tensor):
                raise TypeError(
                    "optimizer can only optimize Tensors, but one of the params is "
                    f"{type(param).__module__}.{type(param).__qualname__}"
                )

        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("optimizer got a parameter group with duplicate parameters")
        existing = {id(p) for group in self.param_groups for p in group["params"]}
        if not existing.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")

        group = {**self.defaults, **param_group, "params": params}
        self._check_hyperparameters(group)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters: to None (default) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                elif isinstance(p.grad, np.ndarray):
                    p.grad.fill(0)
                else:  # a numpy scalar (the grad of a 0-d parameter) cannot be zeroed in place
                    p.grad = np.zeros_like(p.grad)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return ``closure()`` if given, else None.

        The closure, when given, re-evaluates the model and returns the loss; it is called before
        the update (it may run ``backward`` to refresh the gradients).
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Return the state as plain dicts, numbers and numpy arrays (copies, never aliases).

        Layout: ``{"state": {index: {name: ndarray | number}}, "param_groups": [...]}``, where
        each group holds its hyperparameters and ``"params"``: the indices of its parameters.
        See the module docstring to save it as npz + JSON.
        """
        index: dict[int, int] = {}
        param_groups = []
        for group in self.param_groups:
            indices = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                indices.append(index[id(p)])
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = indices
            param_groups.append(packed)

        state = {}
        for p, s in self.state.items():
            if id(p) in index and s:
                state[index[id(p)]] = {
                    name: value.copy() if isinstance(value, np.ndarray) else value
                    for name, value in s.items()
                }
        return {"state": dict(sorted(state.items())), "param_groups": param_groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state from :meth:`state_dict` (possibly after a JSON / npz round trip).

        Hyperparameters come from the saved groups; arrays are copied, cast to each parameter's
        dtype. Raises ValueError, before changing anything, if the number of groups, the number of
        parameters in a group, a state index or a state array's shape does not match.
        """
        if "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(
                f"state_dict must have 'state' and 'param_groups' keys, got {sorted(state_dict)}"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter group(s), but the optimizer "
                f"has {len(self.param_groups)}"
            )
        params_by_index: dict[int, Tensor] = {}
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"loaded state dict has {len(saved['params'])} parameters in group {i}, but "
                    f"the optimizer's group {i} has {len(group['params'])}"
                )
            missing = sorted(set(self.defaults) - set(saved))
            if missing:
                raise ValueError(
                    f"loaded parameter group {i} lacks hyperparameters {missing}; was it saved "
                    f"from a different optimizer than {type(self).__name__}?"
                )
            for saved_index, p in zip(saved["params"], group["params"], strict=True):
                params_by_index[int(saved_index)] = p

        new_state: dict[int, tuple[Tensor, dict[str, Any]]] = {}
        for key, saved_state in state_dict["state"].items():
            index = int(key)  # JSON turns int keys into strings
            if index not in params_by_index:
                raise ValueError(
                    f"loaded state dict has state for parameter {index}, which is in no "
                    "parameter group"
                )
            p = params_by_index[index]
            loaded = {}
            for name, value in saved_state.items():
                if isinstance(value, np.ndarray):
                    if value.shape != p.data.shape:
                        raise ValueError(
                            f"loaded state {name!r} of parameter {index} has shape {value.shape}, "
                            f"but the parameter has shape {p.data.shape}"
                        )
                    loaded[name] = np.array(value, dtype=p.data.dtype, copy=True)
                elif isinstance(value, np.generic):
                    loaded[name] = value.item()
                else:
                    loaded[name] = value
            new_state[id(p)] = (p, loaded)

        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            for name, value in saved.items():
                if name == "params":
                    continue
                # JSON has no tuples: restore e.g. Adam's betas to the type of the default.
                if isinstance(self.defaults.get(name), tuple) and isinstance(value, list):
                    value = tuple(value)
                group[name] = value
        self.state = ParamState()
        for p, s in new_state.values():
            self.state[p] = s

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def flatten_state_dict(
    state_dict: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split an optimizer state_dict into arrays for ``np.savez`` and JSON-serializable metadata.

    Returns ``(arrays, meta)``: ``arrays`` maps ``f"{prefix}state.{index}.{name}"`` to each state
    array; ``meta`` holds the param groups and the scalar state, and names the arrays it refers to
    (``{"__array__": key}``), so :func:`unflatten_state_dict` needs only ``arrays`` and ``meta``.
    Use ``prefix`` to keep several optimizers in one npz file.
    """
    arrays: dict[str, np.ndarray] = {}
    meta_state: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        entry: dict[str, Any] = {}
        for name, value in param_state.items():
            if isinstance(value, np.ndarray):
                key = f"{prefix}state.{index}.{name}"
                arrays[key] = value
                entry[name] = {"__array__": key}
            else:
                entry[name] = _to_json(value)
        meta_state[str(index)] = entry
    param_groups = [
        {k: _to_json(v) for k, v in group.items()} for group in state_dict["param_groups"]
    ]
    return arrays, {"state": meta_state, "param_groups": param_groups}


def _to_json(value: Any) -> Any:
    """Tuples become lists and numpy scalars Python numbers, as JSON would have them."""
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def unflatten_state_dict(
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Rebuild a state_dict from :func:`flatten_state_dict`'s output (e.g. ``np.load`` + JSON).

    The arrays are read (copied) out of ``arrays``, so an ``NpzFile`` may be closed afterwards.
    """
    state: dict[int, dict[str, Any]] = {}
    for index, entry in meta["state"].items():
        param_state = {}
        for name, value in entry.items():
            if isinstance(value, dict) and "__array__" in value:
                key = value["__array__"]
                if key not in arrays:
                    raise ValueError(f"state array {key!r} is missing from the saved arrays")
                param_state[name] = np.array(arrays[key], copy=True)
            else:
                param_state[name] = value
        state[int(index)] = param_state
    param_groups = [dict(group) for group in meta["param_groups"]]
    return {"state": state, "param_groups": param_groups}
