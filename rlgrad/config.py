"""Configuration fields that check themselves: one place for every option's constraint.

An agent's configuration is a dataclass. Each field declares, next to its default, its help text
and its constraint with :func:`opt`; :func:`validate` checks every field of a config against its
declared type and constraint, so the same rule holds for the CLI, a sweep, a ``config.json`` and a
Python caller::

    @dataclass
    class PPOConfig(AgentConfig):
        clip_coef: float = field(default=0.2, metadata=opt("surrogate clipping range", gt=0))
        gae_lambda: float = field(default=0.95, metadata=opt("GAE lambda", ge=0, le=1))

What a field's type means:

- ``float``: a real number (an ``int`` is accepted, a ``bool`` is not) and finite, always: nan
  and inf are refused for every float option, whatever its bounds.
- ``int``: an integer, not a bool.
- ``bool``: True or False only.
- ``str``: with ``choices`` (a sequence, or a callable returning one, e.g. the registered
  optimizers), one of them.
- ``tuple[int, ...]``: a non-empty tuple of integers; the bounds apply to each element.
- ``X | None``: None, or a value that satisfies the rule for ``X``.

``resume=True`` marks a field that may change when a run is resumed (learning rates,
coefficients, intervals); every other field is fixed for the life of a run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["opt", "validate", "field_kinds", "resumable_fields", "suggest"]


def opt(
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Field metadata: the help text and the constraint (``ge``/``gt``/``le``/``lt`` bounds,
    ``choices`` for strings) that :func:`validate` enforces."""
    return {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices,
            "resume": resume}


def suggest(name: str, known: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def field_kinds(cls: type) -> dict[str, tuple[str, bool]]:
    """``name -> (kind, optional)`` for every field of the dataclass ``cls``: kind is one of
    ``"float"``, ``"int"``, ``"bool"``, ``"str"``, ``"ints"`` (a tuple of ints)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = _kind(hints[f.name], f.name, cls)
    return out


def resumable_fields(cls: type) -> set[str]:
    """The fields of ``cls`` that may change when a run is resumed."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("resume")}


def _kind(hint: Any, name: str, cls: type) -> tuple[str, bool]:
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"{cls.__name__}.{name}: unsupported field type {hint}")
        hint = args[0]
        origin = typing.get_origin(hint)
    if hint is float:
        return "float", optional
    if hint is bool:
        return "bool", optional
    if hint is int:
        return "int", optional
    if hint is str:
        return "str", optional
    if origin is tuple and typing.get_args(hint)[:1] == (int,):
        return "ints", optional
    raise TypeError(f"{cls.__name__}.{name}: unsupported field type {hint}")


def validate(config: Any) -> None:
    """Check every field of the dataclass instance ``config`` against its type and the
    constraint declared with :func:`opt`; raise ValueError/TypeError naming the first bad one."""
    kinds = field_kinds(type(config))
    for f in dataclasses.fields(config):
        kind, optional = kinds[f.name]
        value = getattr(config, f.name)
        if value is None and optional:
            continue
        _check_value(f.name, kind, value, f.metadata)


def _check_value(name: str, kind: str, value: Any, meta: Any) -> None:
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {value!r}")
        return
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {value!r}")
        choices = meta.get("choices")
        if callable(choices):
            choices = choices()
        if choices is not None and value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(sorted(choices))}, got "
                             f"{value!r}{suggest(value, choices)}")
        return
    if kind == "ints":
        if not isinstance(value, tuple):
            raise TypeError(f"{name} must be a sequence of integers, got {value!r}")
        if not value:
            raise ValueError(f"{name} must hold at least one integer, got {value!r}")
        for i, v in enumerate(value):
            _check_number(f"{name}[{i}]", "int", v, meta)
        return
    _check_number(name, kind, value, meta)


def _check_number(name: str, kind: str, value: Any, meta: Any) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        what = "an integer" if kind == "int" else "a number"
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if kind == "int" and not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if kind == "float" and not _is_finite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    ok = {"ge": value >= meta["ge"] if meta.get("ge") is not None else True,
          "gt": value > meta["gt"] if meta.get("gt") is not None else True,
          "le": value <= meta["le"] if meta.get("le") is not None else True,
          "lt": value < meta["lt"] if meta.get("lt") is not None else True}
    if not all(ok.values()):
        raise ValueError(f"{name} must be {_rule(meta)}, got {value!r}")


def _is_finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _rule(meta: Any) -> str:
    parts = [f"{sign} {meta[key]:g}" for key, sign in
             (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if meta.get(key) is not None]
    return " and ".join(parts)
