"""Tuned hyperparameters per environment, as data: ``agents/presets/{agent}.toml``.

A preset file has one table per environment id; each key is a config field of that agent, plus
``source``, a sentence saying where the values came from (a peer's tuned file, our own search).
``rlgrad train --agent ppo --env Pendulum-v1`` starts from the preset when one exists and says
so; options given explicitly override it; ``--no-preset`` gives the agent's plain defaults.
From Python, pass the preset's options yourself: ``PPO(env, **preset("ppo", env).options)``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Preset", "preset", "PRESET_DIR"]

PRESET_DIR = Path(__file__).with_name("presets")


@dataclass(frozen=True)
class Preset:
    agent: str
    env_id: str
    options: dict[str, Any]
    source: str
    path: Path


def preset(agent: str, env_id: str, directory: Path | None = None) -> Preset | None:
    """The preset of ``agent`` for ``env_id``, or None if there is none."""
    path = (directory or PRESET_DIR) / f"{agent}.toml"
    if not path.is_file():
        return None
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"preset file {path} cannot be read: {e}") from None
    entry = table.get(env_id)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ValueError(f"preset file {path}: [{env_id!r}] must be a table")
    options = dict(entry)
    source = options.pop("source", "")
    return Preset(agent, env_id, options, str(source), path)
