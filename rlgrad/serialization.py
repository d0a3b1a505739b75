"""An agent's state as checkpoint arrays and JSON metadata, and back: checked, then assigned.

The state of an agent between two updates is its modules' parameters, its optimizers' state,
its normalisers' statistics, its two generators (training and diagnostics) and its counters.
:func:`agent_state` writes them as ``(arrays, meta)`` for :func:`rlgrad.checkpoint.save_checkpoint`;
:func:`restore_agent_state` checks every piece against the agent (format, agent name, spaces,
array names and shapes, optimizer groups and buffers, normaliser statistics, generator states)
before it assigns anything, so a checkpoint that does not fit leaves the agent untouched.

The metadata names the agent by its registered name only. Loading never imports a module the
checkpoint names: which class to build is the caller's choice (``agents.load`` looks the name
up in the registry; the CLI takes ``--agent pkg.mod:Class`` from the user).

This module knows agents only through the attributes they share (``name``, ``env_id``,
``seed``, ``config``, ``spaces``, ``modules()``, ``optimizers()``, ``normalizers()``, ``rng``,
``diagnostics_rng``, ``global_step``, ``num_updates``, ``num_episodes``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np

from . import optim
from .checkpoint import CheckpointError, rng_state, set_rng_state, validate_arrays

__all__ = ["AGENT_STATE_FORMAT", "agent_state", "restore_agent_state"]

AGENT_STATE_FORMAT = 2


def agent_state(agent: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, meta)``: ``module.param`` and ``optim.NAME.*`` and ``normalizer.NAME.*``
    arrays; JSON metadata with the config, spaces, counters and generator states."""
    arrays: dict[str, np.ndarray] = {}
    for mname, module in agent.modules().items():
        for pname, value in module.state_dict().items():
            arrays[f"{mname}.{pname}"] = value
    optim_meta = {}
    for oname, opt in agent.optimizers().items():
        o_arrays, o_meta = optim.flatten_state_dict(opt.state_dict())
        for k, v in o_arrays.items():
            arrays[f"optim.{oname}.{k}"] = v
        optim_meta[oname] = o_meta
    for nname, norm in agent.normalizers().items():
        for k, v in norm.state_dict().items():
            arrays[f"normalizer.{nname}.{k}"] = np.asarray(v)
    meta = {
        "format": AGENT_STATE_FORMAT,
        "agent": agent.name,
        "env_id": agent.env_id,
        "seed": agent.seed,
        "config": agent.config.to_dict(),
        "spaces": agent.spaces.to_dict(),
        "global_step": agent.global_step,
        "num_updates": agent.num_updates,
        "num_episodes": agent.num_episodes,
        "rng": rng_state(agent.rng),
        "diagnostics_rng": rng_state(agent.diagnostics_rng),
        "optimizers": optim_meta,
        "normalizers": sorted(agent.normalizers()),
    }
    return arrays, meta


def restore_agent_state(agent: Any, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Put ``agent`` in the state of :func:`agent_state`'s output; CheckpointError (a
    ValueError) before anything is assigned if any piece does not fit."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint metadata must be an object, got {type(meta).__name__}")
    if meta.get("format") != AGENT_STATE_FORMAT:
        raise CheckpointError(f"agent state format {meta.get('format')!r} is not supported "
                              f"(expected {AGENT_STATE_FORMAT})")
    if meta.get("agent") != agent.name:
        raise CheckpointError(f"checkpoint is of agent {meta.get('agent')!r}, not {agent.name!r}")
    if meta.get("spaces") != json.loads(json.dumps(agent.spaces.to_dict())):
        raise CheckpointError(f"checkpoint spaces {meta.get('spaces')} do not match the "
                              f"environment's {agent.spaces.to_dict()}")
    for key in ("global_step", "num_updates", "num_episodes"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"checkpoint {key} must be an integer >= 0, got {value!r}")
    modules = agent.modules()
    expected = {f"{m}.{p}": v.shape for m, mod in modules.items()
                for p, v in mod.state_dict().items()}
    validate_arrays(expected, {k: v for k, v in arrays.items()
                               if not k.startswith(("optim.", "normalizer."))})
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointError(f"checkpoint array {name!r} holds nan or inf")

    opt_states = {}
    saved_optims = meta.get("optimizers")
    if not isinstance(saved_optims, dict):
        raise CheckpointError("checkpoint has no optimizer states")
    for oname, opt in agent.optimizers().items():
        if oname not in saved_optims:
            raise CheckpointError(f"checkpoint has no state for optimizer {oname!r}")
        prefix = f"optim.{oname}."
        o_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        try:
            state = optim.unflatten_state_dict(o_arrays, saved_optims[oname])
            _check_optimizer_state(opt, state)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"optimizer {oname!r} state does not fit: {e}") from None
        opt_states[oname] = state

    normalizers = agent.normalizers()
    if sorted(normalizers) != meta.get("normalizers"):
        raise CheckpointError(f"checkpoint has normalisers {meta.get('normalizers')}, the agent "
                              f"{sorted(normalizers)} (normalize_obs/normalize_reward differ)")
    norm_states = {}
    for nname, norm in normalizers.items():
        prefix = f"normalizer.{nname}."
        norm_states[nname] = {k[len(prefix):]: v for k, v in arrays.items()
                              if k.startswith(prefix)}
        _check_normalizer_state(nname, norm, norm_states[nname])

    for key in ("rng", "diagnostics_rng"):
        probe = np.random.default_rng()
        try:
            set_rng_state(probe, meta.get(key))
        except (TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {key} is not a generator state: {e}") from None

    # everything fits: assign
    for mname, module in modules.items():
        prefix = f"{mname}."
        module.load_state_dict({k[len(prefix):]: v for k, v in arrays.items()
                                if k.startswith(prefix)})
    for oname, opt in agent.optimizers().items():
        opt.load_state_dict(opt_states[oname])
    for nname, norm in normalizers.items():
        norm.load_state_dict(norm_states[nname])
    set_rng_state(agent.rng, meta["rng"])
    set_rng_state(agent.diagnostics_rng, meta["diagnostics_rng"])
    agent.global_step = meta["global_step"]
    agent.num_updates = meta["num_updates"]
    agent.num_episodes = meta["num_episodes"]


def _check_normalizer_state(name: str, norm: Any, state: dict[str, np.ndarray]) -> None:
    current = norm.state_dict()
    if set(state) != set(current):
        raise CheckpointError(f"normaliser {name!r} has {sorted(state)}, expected "
                              f"{sorted(current)}")
    for k, v in state.items():
        if np.shape(v) != np.shape(current[k]):
            raise CheckpointError(f"normaliser {name!r} {k} has shape {np.shape(v)}, expected "
                                  f"{np.shape(current[k])}")
    try:  # the normaliser's own checks (dtype, var >= 0, count >= 0), on a copy
        copy.deepcopy(norm).load_state_dict(state)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"normaliser {name!r} state does not fit: {e}") from None


def _check_optimizer_state(opt: optim.Optimizer, state: dict[str, Any]) -> None:
    groups = state.get("param_groups", [])
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"{len(groups)} parameter groups, expected {len(opt.param_groups)}")
    for saved, group in zip(groups, opt.param_groups):
        missing = sorted(set(group) - set(saved) - {"params"})
        if missing:
            raise ValueError(f"the saved parameter group lacks hyperparameters {missing} "
                             f"(a different optimizer?)")
        if len(saved.get("params", [])) != len(group["params"]):
            raise ValueError(f"a group has {len(saved.get('params', []))} parameters, expected "
                             f"{len(group['params'])}")
        # the optimizer's own rules (lr > 0, 0 <= beta < 1, eps >= 0, ...), as at construction
        opt._check_hyperparameters({k: v for k, v in saved.items() if k != "params"})
        for key, value in saved.items():
            if isinstance(value, float) and not np.isfinite(value):
                raise ValueError(f"hyperparameter {key!r} is {value}")
    params = [p for g in opt.param_groups for p in g["params"]]
    for index, s in state.get("state", {}).items():
        i = int(index)
        if not 0 <= i < len(params):
            raise ValueError(f"state refers to parameter {i} of {len(params)}")
        step = s.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                                 or step < 0 or step != int(step)):
            raise ValueError(f"step count of parameter {i} is {step!r}, expected an integer >= 0")
        for key, value in s.items():
            arr = np.asarray(value)
            if arr.ndim and arr.shape != params[i].shape:
                raise ValueError(f"state {key!r} of parameter {i} has shape {arr.shape}, "
                                 f"expected {params[i].shape}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError(f"state {key!r} of parameter {i} holds nan or inf")
