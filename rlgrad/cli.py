"""The ``rlgrad`` command: ``train``, ``eval``, ``export``, ``sweep`` and ``plot``.

This module is the composition root: the only place in ``rlgrad`` that looks agents up, by name
in ``agents.AGENTS`` or as ``--agent package.module:ClassName`` for a user's own agent. It has no
logic of its own beyond turning options into calls.

Code runs only where the user names it. A ``package.module:ClassName`` agent or a
``module:Env-v0`` environment typed on the command line is imported, with the current directory
on ``sys.path`` as ``python -m`` has it. One named in a checkpoint never is: ``rlgrad eval`` and
``rlgrad train --resume`` take the agents ``agents.AGENTS`` registers and the environments
Gymnasium already knows, and for anything else say which ``--agent`` / ``--env`` to type.

Errors are one line on stderr, ``rlgrad: error: ...``, exit status 1 (2 for options argparse or
the agent lookup refuses, 130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "resolve_agent", "build_config", "checkpoint_agent", "checkpoint_env"]


def _agents() -> dict[str, type]:
    from agents import AGENTS

    return AGENTS


def resolve_agent(spec: str) -> type:
    """An agent class by registered name or as ``package.module:ClassName`` (imported)."""
    from agents import Agent
    from rlgrad.sweep import resolve_agent as resolve

    cls = resolve(spec, _agents())
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"agent {spec!r} is {cls!r}, not an agent class (a subclass of "
                        "agents.Agent)")
    return cls


def checkpoint_agent(meta: dict[str, Any], where: Any) -> type:
    """The agent class a checkpoint names, if it is one ``agents.AGENTS`` registers (by name,
    and at the module path the checkpoint recorded, if any). Never imports anything: a class
    elsewhere must be named on the command line (``--agent``)."""
    name, path = meta.get("agent"), meta.get("agent_path")
    cls = _agents().get(name) if isinstance(name, str) else None
    if cls is not None and path in (None, f"{cls.__module__}:{cls.__qualname__}"):
        return cls
    typed = path if isinstance(path, str) and ":" in path else "package.module:ClassName"
    raise ValueError(f"{where}: the checkpoint's agent {path or name!r} is not one of rlgrad's "
                     f"({', '.join(sorted(_agents()))}) and rlgrad does not import code that a "
                     f"checkpoint names; if you trust it, name it: --agent {typed}")


def checkpoint_env(meta: dict[str, Any], where: Any) -> str:
    """The environment id a checkpoint names, if making it imports nothing new: an id without
    a module part (Gymnasium's registry decides, as for any id), or ``module:Env-v0`` whose
    module is already imported (``allow_import=False`` of :func:`rlgrad.envs.make`). Otherwise
    it must be named on the command line (``--env``)."""
    from rlgrad.envs import describe_spaces

    env_id = meta.get("env_id")
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"{where}: the checkpoint names no environment; give --env")
    try:
        describe_spaces(env_id, allow_import=False)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return env_id


def _import_from_cwd() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does (the console
    script does not), for a module the user typed. Sweep workers inherit it."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        sys.path.insert(0, cwd)


def _typed_names(argv: list[str]) -> tuple[list[str], list[str]]:
    """The values of ``--agent`` and ``--env`` on the command line, before the real parse."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--agent", nargs="+", default=[])
    pre.add_argument("--env", nargs="+", default=[])
    try:
        known, _ = pre.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return [], []  # the real parser reports it
    return known.agent, known.env


class _NoneValue:
    """``none`` typed for an option that may be None (None itself means "not given")."""

    def __repr__(self) -> str:
        return "None"


_NONE = _NoneValue()


def _value_type(kind: str, optional: bool) -> Callable[[str], Any]:
    """The argparse ``type`` of a config field of :func:`rlgrad.config.field_kinds`' ``kind``;
    ``none`` gives None where the field may be None."""
    base = {"float": float, "int": int, "ints": int, "str": str}[kind]
    if not optional:
        return base

    def parse(text: str) -> Any:
        return _NONE if text.lower() == "none" else base(text)

    parse.__name__ = base.__name__  # argparse names it in "invalid float value"
    return parse


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _config_fields(classes: list[type]
                   ) -> dict[str, tuple[dataclasses.Field, tuple[str, bool], dict[str, Any]]]:
    """Every config field of the given agents: the field, its kind (see
    :func:`rlgrad.config.field_kinds`) and each agent's default."""
    from rlgrad.config import field_kinds

    fields: dict[str, tuple[dataclasses.Field, tuple[str, bool], dict[str, Any]]] = {}
    for cls in classes:
        kinds = field_kinds(cls.config_class)
        for f in dataclasses.fields(cls.config_class):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            entry = fields.setdefault(f.name, (f, kinds[f.name], {}))
            entry[2][cls.name] = default
    return fields


def _add_config_options(parser: argparse.ArgumentParser, classes: list[type]) -> None:
    group = parser.add_argument_group("agent options (default: the agent's own; with --resume: "
                                      "the run's)")
    for name, (f, (kind, optional), defaults) in _config_fields(classes).items():
        default = next(iter(defaults.values()))
        values = set(map(repr, defaults.values()))
        if len(values) == 1 and len(defaults) == len(classes):
            shown = f"default: {default!r}"
        else:
            shown = "default: " + ", ".join(f"{a}: {d!r}" for a, d in defaults.items())
        kw: dict[str, Any] = {"default": None, "help": f"{f.metadata.get('help', '')} ({shown})"}
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind == "ints":
            kw.update(nargs="+", type=int, metavar="N")
        else:
            kw["type"] = _value_type(kind, optional)
            if optional:
                kw["metavar"] = f"{kind.upper()}|none"
        group.add_argument(flag, dest=f"cfg_{name}", **kw)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The agent options given on the command line."""
    return {k[4:]: None if v is _NONE else v for k, v in vars(args).items()
            if k.startswith("cfg_") and v is not None}


def _option(key: str) -> str:
    """The command-line option of a config field or of a run's identity."""
    return {"agent": "--agent", "env_id": "--env"}.get(key, "--" + key.replace("_", "-"))


def build_config(cls: type, args: argparse.Namespace,
                 base: dict[str, Any] | None = None) -> Any:
    """The agent's config: ``base`` (e.g. a checkpoint's config; default the agent's defaults)
    with every option given on the command line, validated."""
    given = _given(args)
    own = {f.name for f in dataclasses.fields(cls.config_class)}
    foreign = sorted(set(given) - own)
    if foreign:
        opts = ", ".join(_option(k) for k in foreign)
        raise ValueError(f"option(s) {opts} do not apply to agent {cls.name!r}")
    values = {k: v for k, v in (base or {}).items() if k in own}
    config = cls.config_class.from_dict({**values, **given})
    config.validate()
    return config


def _train(args: argparse.Namespace) -> int:
    from rlgrad.train import conflict_message, resume_conflicts, train

    threads, extra_config, notes = args.threads, None, []
    if args.resume is not None:
        from rlgrad.checkpoint import load_checkpoint

        for given, flag in ((args.run_name, "--run-name"), (args.config, "--config"),
                            (args.no_preset or None, "--no-preset")):
            if given is not None:
                raise ValueError(f"{flag} does not go with --resume: a resumed run keeps its "
                                 "directory and configuration (give the options to change)")
        if args.total_steps is None:
            raise ValueError("--resume needs --total-steps (the run's total budget)")
        _, meta = load_checkpoint(args.resume)
        cls = resolve_agent(args.agent) if args.agent else checkpoint_agent(meta, args.resume)
        env_id = args.env if args.env else checkpoint_env(meta, args.resume)
        seed = meta.get("seed") if args.seed is None else args.seed
        conflicts = resume_conflicts(meta, cls.config_class, _given(args), agent=cls.name,
                                     env_id=env_id, seed=seed)
        if conflicts:
            raise ValueError(conflict_message(args.resume, conflicts, _option))
        config = build_config(cls, args, meta.get("config"))
        notes.append(_recorded_preset_line(cls, env_id, args.resume))
        total_steps = args.total_steps
    else:
        run = None
        if args.config is not None:
            from rlgrad.configfile import load_run_config

            run = load_run_config(args.config)
        cls, env_id = _agent_and_env(args, run)
        file_options = {}
        if run is not None:
            from rlgrad.configfile import config_options

            file_options = config_options(run, cls.config_class, cls.name)
            notes.append(f"config: {run.path}")
            _warn_resumed(run)
        recorded = None if run is None or args.no_preset else run.preset_record
        preset = None if args.no_preset or recorded is not None or (
            run is not None and not run.preset) else _preset_for(cls, env_id)
        base = {**(preset.options if preset else {}), **file_options}
        config = build_config(cls, args, base)
        given = set(_given(args))
        if recorded is not None:  # a run's config.json: its preset, carried over
            overridden = set(recorded.get("overridden", [])) | (set(recorded["options"]) & given)
            extra_config = {"preset": {**recorded, "overridden": sorted(overridden)}}
            notes.append(f"preset: {cls.__name__} on {env_id} from {recorded['file']} "
                         f"({recorded['source']}), as {run.path} records it")
        elif preset is not None:
            overridden = set(preset.options) & (set(file_options) | given)
            extra_config = {"preset": _preset_record(preset, overridden)}
            notes.append(_preset_line(cls, env_id, preset))
        else:
            notes.append("preset: none (--no-preset)" if args.no_preset else
                         "preset: none (the config file's preset = false)"
                         if run is not None and not run.preset else "preset: none")
        seed = _first(args.seed, run and run.seed, 0)
        total_steps = _first(args.total_steps, run and run.total_steps, 200_000)
        threads = _first(args.threads, run and run.threads, 1)
    threads = 1 if threads is None else threads

    summary = train(
        lambda: cls(env_id, config=config, seed=seed, threads=threads),
        total_steps,
        args.logdir,
        name=args.run_name,
        resume_from=args.resume,
        eval_episodes=args.eval_episodes,
        eval_every=args.eval_every,
        save_every=args.save_every,
        progress=not args.quiet,
        env_id=env_id,
        extra_config=extra_config,
        note="; ".join(notes) or None,
        threads=threads,
    )
    if not args.quiet:
        print(json.dumps(summary, indent=1))
    return 0


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next(v for v in values if v is not None)


def _agent_and_env(args: argparse.Namespace, run: Any) -> tuple[type, str]:
    """The agent class and environment id of a new run: the command line's, else the config
    file's. A file names a registered agent and an environment whose module (if any) is
    imported already: code a file names is never imported, as for a checkpoint."""
    spec = args.agent if args.agent else run.agent if run is not None else None
    env_id = args.env if args.env else run.env_id if run is not None else None
    if spec is None or env_id is None:
        raise ValueError("train needs --agent and --env (or a --config FILE naming them, or "
                         "--resume CHECKPOINT)")
    if not args.agent and ":" in spec:
        raise ValueError(f"config file {run.path} names agent {spec!r}; rlgrad does not import "
                         f"code that a file names: give --agent {spec} on the command line")
    if not args.env and ":" in env_id and env_id.partition(":")[0] not in sys.modules:
        raise ValueError(f"config file {run.path} names environment {env_id!r}, which would "
                         f"import module {env_id.partition(':')[0]!r}; rlgrad does not import "
                         f"code that a file names: give --env {env_id} on the command line")
    return resolve_agent(spec), env_id


def _warn_resumed(run: Any) -> None:
    """Say so when a config file is the config.json of a run that was resumed with other
    values: a run from it uses the last values from its first step on."""
    steps = [h.get("step") for h in run.resumed if isinstance(h, dict)]
    keys = sorted({k for h in run.resumed if isinstance(h, dict)
                   for k in (h.get("changed") or {}) if isinstance(k, str)})
    if run.resumed:
        print(f"rlgrad: warning: {run.path} is the config of a run resumed at step(s) "
              f"{', '.join(map(str, steps))} with other {', '.join(keys) or 'options'}; this "
              "run uses its last values from step 0 and does not replay those changes",
              file=sys.stderr, flush=True)


# ---- presets --------------------------------------------------------------------------------


def _preset_for(cls: type, env_id: str) -> Any:
    """The preset (``agents.presets``) of a registered agent for ``env_id``, or None; its
    options checked to be fields of the agent."""
    from agents.presets import preset
    from rlgrad.config import suggest

    if _agents().get(cls.name) is not cls:
        return None  # a user's class: its fields are its own, rlgrad has no preset for them
    found = preset(cls.name, env_id)
    if found is None:
        return None
    own = [f.name for f in dataclasses.fields(cls.config_class)]
    unknown = sorted(set(found.options) - set(own))
    if unknown:
        raise ValueError(f"preset file {found.path} [{env_id!r}]: unknown option {unknown[0]!r} "
                         f"for agent {cls.name!r}{suggest(unknown[0], own)}")
    return found


def _preset_file(path: Path) -> str:
    """A preset file's path as the project shows it: ``agents/presets/ppo.toml``."""
    import agents

    root = Path(agents.__file__).resolve().parents[1]
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _preset_record(preset: Any, overridden: set[str] = frozenset()) -> dict[str, Any]:
    """What ``config.json`` records under ``"preset"``: the file, its source, the options it
    gives, and those of them the command line or the config file overrode."""
    return {"file": _preset_file(preset.path), "source": preset.source,
            "options": json.loads(json.dumps(preset.options)), "overridden": sorted(overridden)}


def _preset_line(cls: type, env_id: str, preset: Any) -> str:
    return f"preset: {cls.__name__} on {env_id} from {_preset_file(preset.path)} " \
           f"({preset.source})"


def _recorded_preset_line(cls: type, env_id: str, checkpoint: str) -> str:
    """The preset a resumed run started from, as its config.json records it."""
    from rlgrad.train import _read_json, _run_dir_of

    record = _read_json(_run_dir_of(checkpoint) / "config.json").get("preset")
    if not isinstance(record, dict):
        return "preset: none"
    return f"preset: {cls.__name__} on {env_id} from {record.get('file')} " \
           f"({record.get('source')})"


def _sweep_presets(cls: type, env_id: str) -> dict[str, Any] | None:
    """The preset record of a sweep's run (see :class:`rlgrad.sweep.Grid`)."""
    found = _preset_for(cls, env_id)
    return None if found is None else {k: v for k, v in _preset_record(found).items()
                                       if k != "overridden"}


# ---- eval and export ------------------------------------------------------------------------


def _saved_agent(checkpoint: str, agent: str | None, env: str | None, threads: int) -> Any:
    """The agent saved at ``checkpoint``, its state loaded: its class
    registered (or ``agent`` as typed), its environment the checkpoint's unless it needs a
    module imported (or ``env`` as typed). Call inside ``math_threads``; close it."""
    from rlgrad.checkpoint import load_checkpoint

    arrays, meta = load_checkpoint(checkpoint)
    cls = resolve_agent(agent) if agent else checkpoint_agent(meta, checkpoint)
    env_id = env if env else checkpoint_env(meta, checkpoint)
    own = {f.name for f in dataclasses.fields(cls.config_class)}
    config = cls.config_class.from_dict({k: v for k, v in (meta.get("config") or {}).items()
                                         if k in own})
    # the saved config as it is: its num_envs shapes the reward scaler's state, and PPO's
    # mini-batch size is checked against num_steps * num_envs
    instance = cls(env_id, config=config, seed=meta.get("seed", 0), threads=threads)
    try:
        instance.load_state_dict(arrays, meta)
    except BaseException:
        instance.close()
        raise
    return instance


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from rlgrad.threads import math_threads

    with math_threads(args.threads):
        agent = _saved_agent(args.checkpoint, args.agent, args.env, args.threads)
        try:
            if args.video is not None:
                from rlgrad.video import record_video

                returns = record_video(agent, agent.env_id, args.video, args.episodes,
                                       args.seed)
            else:
                returns = agent.evaluate(args.episodes, seed=args.seed,
                                         deterministic=not args.stochastic)
        finally:
            agent.close()
    result = {"checkpoint": str(args.checkpoint), "episodes": args.episodes,
              "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
              "returns": [float(r) for r in returns]}
    print(json.dumps(result, indent=1))
    return 0


def _export_view(agent: Any) -> Any:
    """The module ``rlgrad.export.export_policy`` reads from an agent: ``policy(obs)`` the
    distribution the agent acts from, ``action_layers()`` the network's layers to it, and
    ``squash`` whether actions are tanh-squashed into the bounds.

    ``agent.policy`` (separate networks) or ``agent.net`` (a shared trunk, whose ``forward``
    gives the value too). A tanh-squashed Gaussian is handed on as its base Gaussian: export
    applies the squash and the scaling to the bounds itself (``squash=True``)."""
    from rlgrad.distributions import TanhNormal
    from rlgrad.nn import Module

    net = getattr(agent, "policy", None)
    if not callable(getattr(net, "action_layers", None)):
        net = getattr(agent, "net", None)
    if not (isinstance(net, Module) and callable(getattr(net, "action_layers", None))):
        raise ValueError(f"agent {agent.name!r} has no policy network that export knows: it "
                         "needs agent.policy, or agent.net, with action_layers()")

    class ExportedPolicy(Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.squash = bool(getattr(net, "squash", False))

        def forward(self, obs: Any) -> Any:
            dist = agent.distribution(obs)
            return dist.base if isinstance(dist, TanhNormal) else dist

        def action_layers(self) -> list[Module]:
            return list(net.action_layers())

    return ExportedPolicy()


def _export(args: argparse.Namespace) -> int:
    from rlgrad.export import FORMATS, SUFFIXES, export_policy
    from rlgrad.threads import math_threads

    out = Path(args.out)
    fmt = args.format
    if fmt is None:
        by_suffix = {s: f for f, s in SUFFIXES.items()}
        fmt = by_suffix.get(out.suffix)
        if fmt is None:
            raise ValueError(f"--out {str(out)!r}: give --format ({' or '.join(FORMATS)}) or a "
                             f"file ending in {' or '.join(SUFFIXES.values())}")
    with math_threads(args.threads):
        agent = _saved_agent(args.checkpoint, args.agent, args.env, args.threads)
        try:
            view = _export_view(agent)
            norm = agent.obs_normalizer
            normalizer = None if norm is None else {
                "mean": norm.obs_rms.mean, "var": norm.obs_rms.var, "epsilon": norm.epsilon,
                "clip": norm.clip}
            bounds = None if agent.spaces.discrete else (agent.spaces.action_low,
                                                         agent.spaces.action_high)
            path = export_policy(view, out, fmt, obs_normalizer=normalizer,
                                 action_space=bounds, squash=view.squash)
        finally:
            agent.close()
    result = {"checkpoint": str(args.checkpoint), "format": fmt, "out": str(path)}
    if fmt == "numpy":
        from rlgrad.export import LOADER

        result["loader"] = str(path.with_name(LOADER.name))
    print(json.dumps(result, indent=1))
    return 0


_AGENT_HELP = ("or package.module:ClassName for your own, imported with the current directory "
               "on sys.path (as python -m does)")
_ENV_HELP = ("Gymnasium id, e.g. CartPole-v1, or module:EnvName-v0 (module imported first, "
             "with the current directory on sys.path)")
_THREADS_HELP = "math-library (BLAS/OpenMP) threads per run (default: 1)"


def _parser(agent_classes: list[type]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlgrad", description="Policy-gradient RL on rlgrad's autodiff engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    registered = ", ".join(sorted(_agents()))

    t = sub.add_parser("train", help="train an agent on a Gymnasium environment",
                       description="Train an agent; TensorBoard events, checkpoint and "
                                   "summary.json go to LOGDIR/<run name>/, a directory no "
                                   "other run uses. --resume continues a run: options that "
                                   "shape it (--agent, --env, --seed, --hidden-sizes, "
                                   "--activation, --optimizer, ...) must stay as they were; "
                                   "the others apply from its checkpoint on and are recorded "
                                   "in its config.json. Resuming a complete run with "
                                   "--total-steps at or below its steps is an error (exit 1) "
                                   "that leaves it as it was.")
    t.add_argument("--agent", help=f"agent name ({registered}) {_AGENT_HELP}")
    t.add_argument("--env", help=_ENV_HELP)
    t.add_argument("--total-steps", type=int, default=None,
                   help="environment steps to train for (default: 200000)")
    t.add_argument("--seed", type=int, default=None,
                   help="seed of the run (default: 0; with --resume: the run's)")
    t.add_argument("--logdir", default="runs", help="directory of runs (default: runs)")
    t.add_argument("--run-name", default=None,
                   help="name of the run directory inside LOGDIR, which must not exist yet "
                        "(default: {env}__{agent}__{seed}__{time}, with -1, -2, ... appended "
                        "if taken)")
    t.add_argument("--resume", default=None, metavar="PATH",
                   help="continue the run whose checkpoint (or run directory) is PATH")
    t.add_argument("--config", default=None, metavar="FILE",
                   help="start from the agent, environment, seed, steps and options a TOML, "
                        "YAML or JSON file gives (a run's config.json as it is); options on "
                        "the command line override it")
    t.add_argument("--no-preset", action="store_true",
                   help="start from the agent's plain defaults, not from its preset for the "
                        "environment (agents/presets/AGENT.toml)")
    t.add_argument("--eval-episodes", type=int, default=10,
                   help="episodes of each evaluation, and of the final one (default: 10)")
    t.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="also evaluate after the first update at or past every N environment "
                        "steps (deterministic, on a fixed seed, on environments of its own), "
                        "and keep the best policy's checkpoint in RUN/best/ (default: 0, only "
                        "the final evaluation)")
    t.add_argument("--save-every", type=int, default=10,
                   help="save a checkpoint every this many updates (default: 10)")
    t.add_argument("--threads", type=_threads, default=None,
                   help="math-library (BLAS/OpenMP) threads per run (default: the --config "
                        "file's threads, else 1)")
    t.add_argument("--quiet", action="store_true",
                   help="print nothing but errors and warnings: no first line, progress or "
                        "summary")
    _add_config_options(t, agent_classes)
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a saved agent",
                       description="Evaluate the agent saved in a checkpoint. Its agent and "
                                   "environment load by name when rlgrad registers them or "
                                   "Gymnasium knows them; code a checkpoint names elsewhere is "
                                   "never imported: name it with --agent / --env.")
    e.add_argument("checkpoint", help="checkpoint JSON file or run directory")
    e.add_argument("--episodes", type=int, default=10, help="episodes (default: 10)")
    e.add_argument("--seed", type=int, default=None, help="seed of the evaluation episodes")
    e.add_argument("--stochastic", action="store_true",
                   help="sample actions instead of taking the most likely one")
    e.add_argument("--video", default=None, metavar="DIR",
                   help="record the episodes as MP4 files in DIR")
    e.add_argument("--agent", default=None,
                   help=f"the checkpoint's agent class: a name ({registered}) {_AGENT_HELP} "
                        "(default: the checkpoint's, if registered)")
    e.add_argument("--env", default=None,
                   help=f"{_ENV_HELP}, with the spaces of the checkpoint's (default: the "
                        "checkpoint's, unless it needs a module imported)")
    e.add_argument("--threads", type=_threads, default=1, help=_THREADS_HELP)
    e.set_defaults(func=_eval)

    x = sub.add_parser("export", help="export a saved policy for inference without rlgrad",
                       description="Write the deterministic policy of a checkpoint, with its "
                                   "observation normalisation and action bounds, as an ONNX "
                                   "model or as a numpy-only .npz (with policy_loader.py "
                                   "beside it). Its agent and environment load as for eval.")
    x.add_argument("checkpoint", help="checkpoint JSON file or run directory")
    x.add_argument("--out", required=True, metavar="PATH",
                   help="the file to write: .onnx or .npz")
    x.add_argument("--format", choices=("onnx", "numpy"), default=None,
                   help="onnx (needs the onnx package) or numpy (default: by the suffix of "
                        "--out)")
    x.add_argument("--agent", default=None,
                   help=f"the checkpoint's agent class: a name ({registered}) {_AGENT_HELP} "
                        "(default: the checkpoint's, if registered)")
    x.add_argument("--env", default=None,
                   help=f"{_ENV_HELP}, with the spaces of the checkpoint's (default: the "
                        "checkpoint's, unless it needs a module imported)")
    x.add_argument("--threads", type=_threads, default=1, help=_THREADS_HELP)
    x.set_defaults(func=_export)

    _add_sweep_parsers(sub, agent_classes)
    return parser


def _add_sweep_parsers(sub: Any, agent_classes: list[type]) -> None:
    """Add ``rlgrad sweep`` and ``rlgrad plot`` to the CLI's subparsers."""
    names = sorted(c.name for c in agent_classes)
    s = sub.add_parser(
        "sweep", help="train a grid of runs in parallel",
        description="Train every combination of agents x envs x optimizers x learning rates x "
                    "options x seeds as ordinary runs under LOGDIR, named after their "
                    "configuration. Complete runs (summary.json present) are skipped, runs "
                    "with a checkpoint (after a Ctrl-C) are resumed, and runs another process "
                    "is writing are left to it, so rerunning a sweep finishes it. Exits 1 if "
                    "any run failed.")
    s.add_argument("--agent", nargs="+", required=True,
                   help=f"agent names ({', '.join(names)}) {_AGENT_HELP}")
    s.add_argument("--env", nargs="+", required=True, help="Gymnasium ids")
    s.add_argument("--optimizer", nargs="+", default=None,
                   help="optimizers (default: the agent's)")
    s.add_argument("--lr", nargs="+", type=float, default=None,
                   help="learning rates (default: the agent's)")
    s.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    s.add_argument("--total-steps", type=int, default=100_000,
                   help="environment steps per run (default: 100000)")
    s.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="another agent option; a key given several times is an axis of the "
                        "grid, e.g. --set ent_coef=0 ent_coef=0.01 hidden_sizes=32,32")
    s.add_argument("--logdir", default="runs/sweep", help="directory of the sweep's runs "
                   "(default: runs/sweep)")
    s.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local processes or a Ray cluster (default: local)")
    s.add_argument("--workers", type=int, default=None,
                   help="runs at once (default: one per core, or the Ray cluster's CPUs)")
    s.add_argument("--address", default=None,
                   help="Ray cluster address (default: start a local Ray instance)")
    s.add_argument("--eval-episodes", type=int, default=10,
                   help="evaluation episodes at the end of each run (default: 10)")
    s.add_argument("--no-preset", action="store_true",
                   help="start every run from its agent's plain defaults, not from the "
                        "agent's preset for the environment")
    s.add_argument("--threads", type=_threads, default=1, help=_THREADS_HELP)
    s.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    s.set_defaults(func=lambda args: _sweep_command(args, agent_classes))

    p = sub.add_parser(
        "plot", help="plot and tabulate the runs under a directory",
        description="Read the TensorBoard event files under LOGDIR, group runs whose "
                    "configuration differs only in the seed, draw each group's mean over "
                    "seeds with a 95% bootstrap confidence band against environment steps "
                    "(over the steps all its runs reached) and each run's own curve to its "
                    "end, write a PNG and print a table: steps reached, final return (each "
                    "run's value at its own last step; mean and CI), steps to a threshold, "
                    "area under the curve. Runs whose config.json or event file cannot be "
                    "read are skipped with a warning, and a warning says when the runs of a "
                    "group differ in length. With --aggregate or --profile, normalise each "
                    "run's final score between its environment's random and reference "
                    "scores and aggregate over environments and seeds as Agarwal et al. "
                    "2021 do (stratified bootstrap 95% CIs); the figure then shows the "
                    "aggregates.")
    p.add_argument("logdir", help="directory holding the runs")
    p.add_argument("--tag", default="charts/episodic_return", help="scalar to plot "
                   "(default: charts/episodic_return)")
    p.add_argument("--out", default=None, help="PNG file (default: LOGDIR/plot.png)")
    p.add_argument("--threshold", type=float, default=None,
                   help="level for 'steps to threshold' (default: the environment's "
                        "reward_threshold, 475 for CartPole-v1, -100 for Acrobot-v1)")
    p.add_argument("--window", type=int, default=20,
                   help="running mean over this many points (episodes) (default: 20)")
    p.add_argument("--x", choices=("step", "time"), default="step",
                   help="x axis: environment steps or seconds since the run started")
    p.add_argument("--points", type=int, default=100,
                   help="points of the plotted curves (default: 100)")
    p.add_argument("--aggregate", action="append", default=None, metavar="METRIC",
                   choices=("iqm", "mean", "median", "optimality_gap"),
                   help="aggregate normalised final scores over environments and seeds: iqm "
                        "(interquartile mean), mean, median or optimality_gap, with stratified "
                        "bootstrap 95%% CIs; repeat for several")
    p.add_argument("--profile", action="store_true",
                   help="draw and tabulate performance profiles (fraction of runs with "
                        "normalised score > tau, with 95%% CIs)")
    p.add_argument("--scores", default=None, metavar="FILE",
                   help="TOML file of random and reference scores per environment, added to "
                        "(or replacing entries of) rlgrad/data/scores.toml")
    p.set_defaults(func=_plot_command)


def _sweep_command(args: argparse.Namespace, agent_classes: list[type]) -> int:
    from rlgrad.sweep import Grid, RunResult, parse_set, run_sweep

    known = {c.name: c for c in agent_classes}
    classes = [resolve_agent(a) for a in args.agent]
    grid = Grid(agents=args.agent, envs=args.env, seeds=args.seeds, optimizers=args.optimizer,
                lrs=args.lr, options=parse_set(args.set, classes), total_steps=args.total_steps,
                eval_episodes=args.eval_episodes,
                presets=None if args.no_preset else _sweep_presets)
    specs = grid.runs(known)
    if args.dry_run:
        for spec in specs:
            print(spec.name)
        print(f"{len(specs)} runs")
        return 0
    count = [0]
    width = len(str(len(specs)))

    def on_result(r: RunResult) -> None:
        count[0] += 1
        head = f"[{count[0]:>{width}}/{len(specs)}] {r.status:<7} {r.name}"
        if r.status == "failed":
            print(f"{head} after {r.seconds:.1f} s: {r.error}", flush=True)
        elif r.status == "elsewhere":
            print(f"{head}: {r.error}", flush=True)
        elif r.status == "done":
            ret = (r.summary or {}).get("train_return_last20")
            tail = f", return (last 20) {ret:.1f}" if isinstance(ret, (int, float)) else ""
            if r.resumed_at is not None:
                tail = f" (resumed at step {r.resumed_at}){tail}"
            print(f"{head} in {r.seconds:.1f} s{tail}", flush=True)
        else:
            print(head, flush=True)

    try:
        result = run_sweep(specs, args.logdir, backend=args.backend, workers=args.workers,
                           address=args.address, on_result=on_result, threads=args.threads)
    except KeyboardInterrupt:
        print("\nrlgrad: sweep interrupted; the runs in progress saved their last update: "
              "run the same command again to resume them", file=sys.stderr)
        return 130
    print(result.summary_line())
    for r in result.failed:
        print(f"\nFAILED {r.name}: {r.error}", file=sys.stderr)
        if r.traceback:
            print(r.traceback.rstrip(), file=sys.stderr)
    return 0 if result.ok else 1


def _plot_command(args: argparse.Namespace) -> int:
    from rlgrad import plot

    out = Path(args.out) if args.out else Path(args.logdir) / "plot.png"
    if out.suffix.lower() != ".png":
        raise ValueError(f"the figure is written as PNG; give a .png file, got {str(out)!r}")
    if args.out and not out.parent.is_dir():  # fail before reading every run
        raise ValueError(f"cannot write plot to {out} (no directory {out.parent})")
    aggregating = bool(args.aggregate) or args.profile
    if args.scores is not None and not aggregating:
        raise ValueError("--scores is used only with --aggregate or --profile")

    def warn(message: str) -> None:
        print(f"rlgrad: warning: {message}", file=sys.stderr, flush=True)

    runs = plot.load_runs(args.logdir, args.tag, on_skip=warn)
    stats = plot.summarize(runs, window=args.window, threshold=args.threshold,
                           points=args.points, x=args.x)
    for note in plot.length_notes(stats):
        warn(note)
    print(plot.format_table(stats))
    if aggregating:
        table = plot.load_score_table(args.scores)
        aggs = plot.aggregate_groups(stats, table, metrics=list(dict.fromkeys(
            args.aggregate or [])), profile=args.profile)
        if args.aggregate:
            print("\n" + plot.format_aggregate_table(aggs))
        if args.profile:
            print("\n" + plot.format_profile_table(aggs))
    try:
        if aggregating:
            plot.plot_aggregates(aggs, out, parents=False)
        else:
            plot.plot_groups(stats, out, ylabel=f"{args.tag} (mean of last {args.window})",
                             parents=False)
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise ValueError(f"cannot write plot to {out} ({reason})") from None
    print(f"\nwrote {out}")
    return 0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _os_error(e: OSError) -> str:
    """``PATH: reason`` for an OSError (a full disk, a file where a directory should be)."""
    reason = e.strerror or _one_line(e)
    if e.filename is None:
        return reason
    where = str(e.filename) + (f" -> {e.filename2}" if e.filename2 is not None else "")
    return f"{where}: {reason}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    classes = list(_agents().values())
    # a user's own agent (--agent pkg.mod:Class) brings its own options: look it up first
    agents, envs = _typed_names(argv)
    if any(":" in name for name in agents + envs):
        _import_from_cwd()
    try:
        for spec in agents:
            if ":" in spec:
                cls = resolve_agent(spec)
                if cls not in classes:
                    classes.append(cls)
    except (ValueError, TypeError) as e:
        print(f"rlgrad: error: {_one_line(e)}", file=sys.stderr)
        return 2
    parser = _parser(classes)
    args = parser.parse_args(argv)
    from rlgrad.train import EnvironmentFailed

    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        print(f"\nrlgrad: {_one_line(e)}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FloatingPointError, EnvironmentFailed) as e:
        print(f"rlgrad: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"rlgrad: error: {_os_error(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
