"""Run configuration files, ``rlgrad train --config FILE``: TOML, YAML or JSON.

The format follows the suffix: ``.toml``, ``.yaml`` / ``.yml`` (pyyaml) or
``.json``, such as the ``config.json`` a run writes, which is accepted as it is. The top level
is a table of

============== ================================================================================
``agent``      a registered agent name (a file never names code to import: give a
               ``package.module:ClassName`` agent on the command line, ``--agent``)
``env_id``     the environment id; ``env`` is accepted for it (one of the two)
``seed``       the run's seed
``total_steps`` environment steps
option fields  any config field of the agent (``lr``, ``hidden_sizes``, ...), with the same
               constraints as on the command line
``threads``    math-library threads, the default of ``--threads`` (a run's ``config.json`` may
               hold it; it does not change the result)
``preset``     ``false``: start from the agent's plain defaults, as ``--no-preset``; ``true``
               (the default): from the preset of the agent and environment, if there is one.
               The table a run's ``config.json`` records under ``preset`` (``file``,
               ``source``, ``options``, ``overridden``: the preset that run started from) is
               carried over as :attr:`RunConfig.preset_record` and no preset is looked up: the
               file's fields already hold every value it set (and a preset file edited since
               would change nothing anyway), so the new run's ``config.json`` says the same
``resumed``    the resume history of a run's ``config.json``: ignored. The fields hold the
               values the run ended with, which a new run uses from its first step, so
               :attr:`RunConfig.resumed` lets the caller say that the new run does not replay
               the changes
============== ================================================================================

Every other key is an error naming the key and the nearest known one. Values: TOML has no null,
so the string ``"none"`` stands for None in a field that may be None (in every format); YAML 1.1
reads ``3e-4`` (no dot) as a string, so in a YAML file a string that is a number is taken as the
number in a float field. Precedence, lowest first: the agent's defaults, its preset, the file,
the command line.

A run started from another run's ``config.json`` with the same seed reproduces it bit for bit
(the ``config.json`` holds every config field, resolved).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import field_kinds, suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunConfig", "read_config_file", "load_run_config", "config_options", "RUN_KEYS",
           "SUFFIXES", "MAX_BYTES"]

SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
MAX_BYTES = 1 << 20
"""A configuration file is a few hundred bytes; anything above a MiB is not one."""

RUN_KEYS = ("agent", "env_id", "env", "seed", "total_steps", "threads", "preset", "resumed")
"""The keys of a file that are not config fields."""


@dataclass(frozen=True)
class RunConfig:
    """What a configuration file says; None where it says nothing.

    ``options`` holds the config fields as the file gives them: check them against the agent
    with :func:`config_options`.
    """

    path: Path
    format: str
    agent: str | None = None
    env_id: str | None = None
    seed: int | None = None
    total_steps: int | None = None
    threads: int | None = None
    preset: bool = True
    preset_record: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    resumed: tuple[Any, ...] = ()


def read_config_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """The top-level table of the file at ``path`` and its format (``"toml"``, ``"yaml"`` or
    ``"json"``, by suffix). Raises ValueError, one line naming the file, for a missing or
    oversized file, an unknown suffix, a syntax error, a duplicate key or a top level that is
    not a table."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"config file {path}: unknown format {path.suffix or '(no suffix)'!r}; "
                         f"expected one of {', '.join(SUFFIXES)}")
    try:
        if not path.exists():
            raise ValueError(f"config file {path}: no such file")
        if not path.is_file():
            raise ValueError(f"config file {path} is not a regular file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ValueError(f"config file {path} is {size} bytes, more than a config file "
                             f"holds ({MAX_BYTES})")
        text = path.read_bytes()[:MAX_BYTES + 1].decode("utf-8")
    except OSError as e:
        raise ValueError(f"config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path} is not UTF-8 text ({e.reason} at byte "
                         f"{e.start})") from None
    data = _parse(text, fmt, path)
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise ValueError(f"config file {path}: the top level must be a table of keys, got "
                         f"{what}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ValueError(f"config file {path}: keys must be strings, got {bad[0]!r}")
    return data, fmt


def _parse(text: str, fmt: str, path: Path) -> Any:
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file {path}: {_one_line(e)}") from None
    if fmt == "json":
        try:
            return json.loads(text, object_pairs_hook=_unique_json_keys)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path}: {e.msg} at line {e.lineno} column "
                             f"{e.colno}") from None
        except _DuplicateKey as e:
            raise ValueError(f"config file {path}: duplicate key {e.key!r}") from None
    try:
        import yaml
    except ImportError:
        raise ValueError(f"config file {path}: reading YAML needs pyyaml (pip install "
                         "pyyaml)") from None
    try:
        return yaml.load(text, Loader=_unique_key_loader(yaml))  # a SafeLoader
    except _DuplicateKey as e:
        raise ValueError(f"config file {path}: duplicate key {e.key!r}") from None
    except (yaml.YAMLError, TypeError) as e:  # TypeError: an unhashable key
        raise ValueError(f"config file {path}: {_one_line(e)}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key


def _unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _unique_key_loader(yaml: Any) -> type:
    """PyYAML's SafeLoader, refusing a key given twice (which it would silently overwrite)."""

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in out:
                raise _DuplicateKey(key)
            out[key] = loader.construct_object(value_node, deep=deep)
        return out

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _int(path: Path, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config file {path}: {key} must be an integer >= {minimum}, got "
                         f"{value!r}")
    return value


def _name(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"config file {path}: {key} must be a non-empty string, got {value!r}")
    return value


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """The file at ``path`` read and its run keys (:data:`RUN_KEYS`) checked; every other key
    is kept in ``options`` for :func:`config_options` to check against the agent's fields."""
    path = Path(path)
    data, fmt = read_config_file(path)
    kw: dict[str, Any] = {}
    if "agent" in data:
        kw["agent"] = _name(path, "agent", data["agent"])
    if "env_id" in data and "env" in data and data["env_id"] != data["env"]:
        raise ValueError(f"config file {path} gives env_id {data['env_id']!r} and env "
                         f"{data['env']!r}: give one of them")
    for key in ("env_id", "env"):
        if key in data:
            kw["env_id"] = _name(path, key, data[key])
    for key, minimum in (("seed", 0), ("total_steps", 1), ("threads", 1)):
        if key in data:
            kw[key] = _int(path, key, data[key], minimum)
    if "preset" in data:
        preset = data["preset"]
        if isinstance(preset, bool):
            kw["preset"] = preset
        elif _is_preset_record(preset):
            kw["preset_record"] = dict(preset)
        else:
            raise ValueError(f"config file {path}: preset must be true, false or the table a "
                             "run's config.json records (file, source, options, overridden), "
                             f"got {preset!r}")
    if "resumed" in data:
        if not isinstance(data["resumed"], list):
            raise ValueError(f"config file {path}: resumed must be the list of changes a "
                             f"run's config.json records, got {data['resumed']!r}")
        kw["resumed"] = tuple(data["resumed"])
    options = {k: v for k, v in data.items() if k not in RUN_KEYS}
    return RunConfig(path=path, format=fmt, options=options, **kw)


def _is_preset_record(value: Any) -> bool:
    if not isinstance(value, Mapping) or not {"file", "source", "options"} <= set(value) \
            or not set(value) <= {"file", "source", "options", "overridden"}:
        return False
    overridden = value.get("overridden", [])
    return isinstance(value["file"], str) and isinstance(value["source"], str) \
        and isinstance(value["options"], Mapping) and isinstance(overridden, list) \
        and all(isinstance(k, str) for k in overridden)


def config_options(run: RunConfig, config_class: type, agent: str) -> dict[str, Any]:
    """The file's option fields for the config dataclass ``config_class`` of agent ``agent``,
    with ``"none"`` as None (and, from YAML, numbers written as strings as numbers) where the
    field's type says so. Raises ValueError for a key that is neither a run key nor a field,
    naming the nearest known one. The values are checked when the config is validated."""
    kinds = field_kinds(config_class)
    for key in run.options:
        if key not in kinds:
            known = [*RUN_KEYS, *kinds]
            raise ValueError(f"config file {run.path}: unknown key {key!r} for agent "
                             f"{agent!r}{suggest(key, known)}")
    out = {}
    for key, value in run.options.items():
        kind, optional = kinds[key]
        if optional and kind != "str" and isinstance(value, str) and value.lower() == "none":
            value = None
        elif kind == "float" and run.format == "yaml" and isinstance(value, str):
            value = _yaml_float(value)
        out[key] = value
    return out


def _yaml_float(text: str) -> Any:
    try:
        x = float(text)
    except ValueError:
        return text  # not a number: validation names it
    return x if math.isfinite(x) else text

