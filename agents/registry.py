"""The registered agents, and loading a saved agent without importing what the file names.

A checkpoint is data: its metadata names the agent by its registered name (``"ppo"``), never
by a module path. :func:`load` builds the registered class of that name, or the class the
caller passes (``load(path, agent=MyAgent)``), where the caller vouches for the code.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["AGENTS", "register", "load"]

AGENTS: dict[str, type] = {}


def register(cls: type, name: str | None = None) -> type:
    """Register an agent class under ``name`` (default ``cls.name``)."""
    key = name or cls.name
    if key in AGENTS and AGENTS[key] is not cls:
        raise ValueError(f"agent name {key!r} is taken by {AGENTS[key].__name__}")
    AGENTS[key] = cls
    return cls


def load(path: str | os.PathLike[str], agent: type | None = None, env: Any = None,
         **kw: Any) -> Any:
    """An agent restored from the checkpoint directory (or ``checkpoint.json``) at ``path``,
    ready to ``predict`` or ``learn`` on.

    Args:
        agent: the class to build; default the registered class the checkpoint names.
        env: a Gymnasium id or VecEnv to use instead of the checkpoint's ``env_id`` (needed
            when that id names a module, ``pkg.mod:Env-v0``: the caller vouches for it).
        **kw: passed to the constructor (``threads``, ``env_kwargs``).
    """
    from agents.base import Agent
    from rlgrad.checkpoint import load_checkpoint

    arrays, meta = load_checkpoint(path)
    name = meta.get("agent")
    if agent is None:
        if name not in AGENTS:
            raise ValueError(f"{path}: agent {name!r} is not registered (known: "
                             f"{', '.join(sorted(AGENTS))}); pass its class: "
                             f"load(path, agent=MyAgent)")
        agent = AGENTS[name]
    if not (isinstance(agent, type) and issubclass(agent, Agent)):
        raise TypeError(f"agent must be an Agent subclass, got {agent!r}")
    env_id = meta.get("env_id")
    if env is None:
        if not isinstance(env_id, str):
            raise ValueError(f"{path}: checkpoint has no env_id")
        if ":" in env_id:
            raise ValueError(f"{path}: the checkpoint's environment {env_id!r} names a module; "
                             "loading never imports it: pass env='pkg.mod:Env-v0' yourself")
        env = env_id
    config = agent.config_class.from_dict(meta["config"])
    instance = agent(env, config=config, seed=meta["seed"], **kw)
    try:
        instance.load_state_dict(arrays, meta)
    except BaseException:
        instance.close()
        raise
    return instance
