"""Grids of training runs: every combination, run in parallel as ordinary runs.

A :class:`Grid` is the product agents x environments x optimizers x learning rates x other
options x seeds. Each point is an ordinary run of :func:`rlgrad.train.train`, in its own process,
under one log directory, named after its configuration::

    LOGDIR/CartPole-v1__reinforce_baseline__adam__lr0.01__seed1/

so the runs sit side by side in TensorBoard (the full configuration is also in each run's text
tab and ``config.json``; ``rlgrad sweep`` starts each run from its agent's preset for the
environment, as ``rlgrad train`` does, see :class:`Grid`), and a rerun of the same sweep finds
them: a run is complete when its ``summary.json`` exists, and complete runs are skipped. An
incomplete run (a Ctrl-C, a crash) that has a loadable checkpoint is resumed from it; one
without is deleted and starts again.
A run another process is writing (its :class:`rlgrad.train.RunLock` is live) is left alone and
reported as running elsewhere, so two sweeps on one logdir share the work instead of deleting
each other's runs.

:func:`run_sweep` runs the grid on local processes (one per core by default) or on a Ray cluster
(``backend="ray"``, the optional ``ray`` extra). Every run gets one BLAS/OpenMP thread by
default (``threads``), as in ``rlgrad train``, so a run gives bitwise the same result in a sweep
as alone (see :mod:`rlgrad.threads`): two runs of 300k CartPole steps side by side on two cores
took 34 s with the default threads and 4.8 s with one each (measured here).
A run that raises, or whose process dies, is reported with its error and the others go on.

Everything is checked before anything starts: the agents, optimizers, options and their values
(each combination builds and validates its config), the environments, and that no existing run
directory holds a run of another configuration under the same name.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

__all__ = ["Grid", "RunSpec", "RunResult", "SweepResult", "run_sweep", "execute_run",
           "resolve_agent", "parse_set", "THREAD_ENV"]

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Environment of every sweep worker: one math-library thread per run (by default; a sweep with
``threads=n`` sets these to ``n``). The limit that makes a run bitwise the same in a sweep and
alone is the in-process one (:func:`rlgrad.threads.math_threads`); these also reach libraries a
child loads later, and OpenMP."""

BACKENDS = ("local", "ray")


# ---- the grid -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, everything a worker process needs (picklable, JSON-friendly).

    ``agent`` is ``"module:QualName"`` so any process can import the class; ``config`` is the
    agent config's ``to_dict()``; ``preset`` the record of the preset it started from (see
    :class:`Grid`), or None.
    """

    name: str
    agent: str
    agent_name: str
    env_id: str
    seed: int
    total_steps: int
    config: dict[str, Any]
    eval_episodes: int = 10
    preset: dict[str, Any] | None = None

    def hparams(self) -> dict[str, Any]:
        """What :func:`rlgrad.train.train` writes to ``config.json`` for this run."""
        out = {"agent": self.agent_name, "env_id": self.env_id, "seed": self.seed,
               "total_steps": self.total_steps, **self.config}
        if self.preset is not None:
            out["preset"] = self.preset
        return out


@dataclass
class Grid:
    """A grid of runs: the product of every axis, seeds last.

    Args:
        agents: agent names (keys of the ``agents`` mapping given to :meth:`runs`) or
            ``package.module:ClassName``.
        envs: Gymnasium ids.
        seeds: one run per seed for every other combination.
        optimizers: optimizer names; None keeps each agent's default.
        lrs: learning rates of the policy's optimizer; None keeps each agent's default.
        options: other config fields, each with its list of values, e.g.
            ``{"ent_coef": [0.0, 0.01], "hidden_sizes": [(32, 32)]}``. A field listed here
            appears in the run name even with a single value.
        total_steps: environment steps of every run.
        eval_episodes: episodes of the final evaluation of every run.
        presets: where each (agent class, environment id) starts from:
            ``presets(cls, env_id)`` returns None (the agent's defaults) or a preset record
            ``{"file": str, "source": str, "options": {field: value}}`` (the CLI's come from
            ``agents/presets``). The grid's values override the preset's, and the run's
            ``config.json`` records it under ``"preset"``, with ``"overridden"``: the options
            of the preset that the grid set. None: every run starts from its agent's defaults.
    """

    agents: Sequence[str]
    envs: Sequence[str]
    seeds: Sequence[int] = (0,)
    optimizers: Sequence[str] | None = None
    lrs: Sequence[float] | None = None
    options: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    total_steps: int = 100_000
    eval_episodes: int = 10
    presets: Callable[[type, str], Mapping[str, Any] | None] | None = None

    def axes(self) -> dict[str, list[Any]]:
        """The config axes in run-name order: optimizer, lr, then the options as given."""
        axes: dict[str, list[Any]] = {}
        if self.optimizers is not None:
            axes["optimizer"] = list(self.optimizers)
        if self.lrs is not None:
            axes["lr"] = list(self.lrs)
        for key, values in self.options.items():
            if key in ("optimizer", "lr"):
                raise ValueError(f"give {key!r} as Grid({key}s=...), not as an option")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise TypeError(f"option {key!r} needs a list of values, got {values!r}")
            axes[key] = list(values)
        return axes

    def runs(self, agents: Mapping[str, type] | None = None) -> list[RunSpec]:
        """Every run of the grid, checked; raises ValueError/TypeError before anything runs.

        ``agents`` maps names to agent classes (``agents.AGENTS``); names with a ``:`` are
        imported.
        """
        _check_int("total_steps", self.total_steps, minimum=1)
        _check_int("eval_episodes", self.eval_episodes, minimum=0)
        for axis in ("agents", "envs", "seeds"):
            values = getattr(self, axis)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise TypeError(f"Grid.{axis} must be a list, got {values!r}")
            if not values:
                raise ValueError(f"the grid is empty: Grid.{axis} has no values")
        axes = self.axes()
        for key, values in axes.items():
            if not values:
                raise ValueError(f"the grid is empty: {key!r} has no values")
        for seed in self.seeds:
            _check_int("seed", seed, minimum=0)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        if "optimizer" in axes:
            from rlgrad import optim

            for name in axes["optimizer"]:
                if name not in optim.OPTIMIZERS:
                    optim.make(name, [])  # raises with the known names and a suggestion
        classes = {name: resolve_agent(name, agents or {}) for name in self.agents}
        from rlgrad.envs import describe_spaces

        discrete: dict[str, bool] = {}
        for env_id in self.envs:
            if not isinstance(env_id, str):
                raise TypeError(f"environment ids must be strings, got {env_id!r}")
            try:
                discrete[env_id] = describe_spaces(env_id).discrete
            except ValueError:
                raise
            except Exception as e:  # gymnasium's own errors: name not found, bad module
                raise ValueError(f"unknown or unusable environment {env_id!r}: {e}") from e

        specs: list[RunSpec] = []
        keys = list(axes)
        for agent_name, cls in classes.items():
            fields = {f.name for f in dataclasses.fields(cls.config_class)}
            foreign = [k for k in keys if k not in fields]
            if foreign:
                raise ValueError(f"option(s) {foreign} do not apply to agent {agent_name!r}; "
                                 f"its options: {sorted(fields)}")
            for env_id in self.envs:
                preset = self._preset(cls, env_id, fields)
                base = {} if preset is None else preset["options"]
                for values in itertools.product(*axes.values()):
                    given = dict(zip(keys, values))
                    config = _build_config(cls, {**base, **given})
                    record = None if preset is None else {
                        **preset, "overridden": sorted(set(base) & set(given))}
                    # the values the agent will run with (and write to config.json): fields
                    # left None for "the action space's default" filled in
                    if hasattr(config, "resolve"):
                        config = config.resolve(discrete[env_id])
                    full = config.to_dict()
                    for seed in self.seeds:
                        name = run_name(env_id, cls.name, full, keys, int(seed))
                        specs.append(RunSpec(
                            name=name, agent=f"{cls.__module__}:{cls.__qualname__}",
                            agent_name=cls.name, env_id=env_id, seed=int(seed),
                            total_steps=int(self.total_steps), config=full,
                            eval_episodes=int(self.eval_episodes), preset=record))
        seen: dict[str, RunSpec] = {}
        for spec in specs:
            if spec.name in seen:
                raise ValueError(f"two runs of the grid share the name {spec.name!r} (a value "
                                 "given twice, e.g. 0.01 and 1e-2?)")
            seen[spec.name] = spec
        return specs

    def _preset(self, cls: type, env_id: str, fields: set[str]) -> dict[str, Any] | None:
        """The preset record of ``cls`` on ``env_id``, checked, as JSON gives it back."""
        if self.presets is None:
            return None
        found = self.presets(cls, env_id)
        if found is None:
            return None
        if not isinstance(found, Mapping) or set(found) != {"file", "source", "options"} \
                or not isinstance(found["options"], Mapping):
            raise TypeError(f"presets({cls.__name__}, {env_id!r}) must give None or "
                            f"{{'file', 'source', 'options'}}, got {found!r}")
        from rlgrad.config import suggest

        unknown = sorted(set(found["options"]) - fields)
        if unknown:
            raise ValueError(f"preset {found['file']} [{env_id!r}]: unknown option "
                             f"{unknown[0]!r} for agent {cls.name!r}"
                             f"{suggest(unknown[0], sorted(fields))}")
        return json.loads(json.dumps(dict(found)))


def _build_config(cls: type, given: dict[str, Any]) -> Any:
    config = cls.config_class.from_dict(given)
    config.validate()
    return config


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "x".join(_fmt(v) for v in value)
    return str(value)


def run_name(env_id: str, agent: str, config: Mapping[str, Any], keys: Sequence[str],
             seed: int) -> str:
    """``{env}__{agent}__{optimizer}__lr{lr}__{key}{value}...__seed{seed}``.

    The optimizer and learning rate always appear (the agent's defaults if the grid does not
    set them), then every other key of the grid in order; characters unsafe in paths become
    ``_``. Deterministic, so a rerun of a sweep finds its runs.
    """
    parts = [env_id, agent, _fmt(config["optimizer"]), f"lr{_fmt(config['lr'])}"]
    parts += [f"{k}{_fmt(config[k])}" for k in keys if k not in ("optimizer", "lr")]
    parts.append(f"seed{seed}")
    return "__".join(re.sub(r"[^A-Za-z0-9_.+=-]+", "_", p) for p in parts)


def resolve_agent(spec: str, agents: Mapping[str, type]) -> type:
    """The agent class named ``spec`` in ``agents``, or imported from ``module:ClassName``."""
    if not isinstance(spec, str):
        raise TypeError(f"agent names must be strings, got {spec!r}")
    if spec in agents:
        return agents[spec]
    if ":" in spec:
        return _import_class(spec)
    import difflib

    close = difflib.get_close_matches(spec, list(agents), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown agent {spec!r}.{hint} Known agents: "
                     f"{', '.join(sorted(agents)) or 'none given'}, or package.module:ClassName")


def _import_class(path: str) -> type:
    """The agent class ``module:QualName`` (imported: only for names a user gave)."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"agent {path!r}: expected package.module:ClassName")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import agent module {module_name!r}: {e}") from e
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"module {module_name!r} has no agent class {qualname!r}")
    # what train() and the CLI need of an agent class
    if not isinstance(obj, type) or not isinstance(getattr(obj, "name", None), str) \
            or not dataclasses.is_dataclass(getattr(obj, "config_class", None)):
        kind = f"class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__
        raise TypeError(f"agent {path!r} is a {kind}, not an agent class (a subclass of "
                        "agents.Agent)")
    return obj


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ---- one run ------------------------------------------------------------------------------


def execute_run(spec: RunSpec, logdir: str | os.PathLike[str],
                threads: int | None = 1) -> dict[str, Any]:
    """Train ``spec`` into ``logdir/spec.name`` with :func:`rlgrad.train.train`; its summary.

    An existing run directory is continued from its checkpoint if it has a loadable one, and
    otherwise deleted and started again, holding the run's lock while deciding so that nobody
    else writes it meanwhile. Raises :class:`rlgrad.train.RunLocked` or
    :class:`rlgrad.train.RunExists` when another process has the run.
    """
    return _execute(spec, logdir, threads)[0]


def _execute(spec: RunSpec, logdir: str | os.PathLike[str],
             threads: int | None) -> tuple[dict[str, Any], int | None]:
    """(summary, the step the run was resumed at or None)."""
    from rlgrad.checkpoint import load_checkpoint
    from rlgrad.train import RunLock, train

    cls = _import_class(spec.agent)
    config = cls.config_class.from_dict(spec.config)

    def make() -> Any:
        return cls(spec.env_id, config=config, seed=spec.seed, threads=threads)

    kw: dict[str, Any] = dict(eval_episodes=spec.eval_episodes, progress=False,
                              env_id=spec.env_id, threads=threads)
    if spec.preset is not None:
        kw["extra_config"] = {"preset": spec.preset}
    run_dir = Path(logdir) / spec.name
    if run_dir.exists():  # an earlier attempt: continue it or discard it, holding its lock
        with RunLock(run_dir) as lock:
            if is_complete(run_dir):  # finished by another process since the sweep looked
                return _read_summary(run_dir) or {}, None
            try:
                _, meta = load_checkpoint(run_dir)
            except ValueError:
                lock.discard_run()
            else:
                summary = train(make, spec.total_steps, resume_from=run_dir, **kw)
                return summary, int(meta.get("global_step", 0))
    return train(make, spec.total_steps, logdir, name=spec.name, **kw), None


def _guarded_run(spec: RunSpec, logdir: str, threads: int | None = 1) -> tuple[str, Any, str]:
    """``("done", (summary, resumed at), "")``, ``("elsewhere", message, "")`` (another process
    has the run) or ``("failed", message, traceback)``: never raises."""
    from rlgrad.train import RunExists, RunLocked

    try:
        return "done", _execute(spec, logdir, threads), ""
    except (RunLocked, RunExists) as e:
        return "elsewhere", str(e), ""
    except BaseException as e:  # noqa: BLE001 - a Ctrl-C'd run is a failed run too
        return "failed", f"{type(e).__name__}: {e}", traceback.format_exc()


def _child_main(spec: RunSpec, logdir: str, threads: int | None, conn: Any) -> None:
    try:
        conn.send(_guarded_run(spec, logdir, threads))
    finally:
        conn.close()


# ---- results ------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What became of one run: ``status`` is ``"done"`` (``resumed_at``: the step it continued
    from, or None), ``"skipped"`` (complete before), ``"elsewhere"`` (another process is
    writing it; ``error`` says which) or ``"failed"`` (``error`` holds the message,
    ``traceback`` the details)."""

    spec: RunSpec
    status: str
    seconds: float = 0.0
    summary: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    resumed_at: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class SweepResult:
    """Every run's result in grid order, and the sweep's wall time in seconds."""

    results: list[RunResult]
    wall_seconds: float

    def by_status(self, status: str) -> list[RunResult]:
        return [r for r in self.results if r.status == status]

    @property
    def failed(self) -> list[RunResult]:
        return self.by_status("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary_line(self) -> str:
        counts = {s: len(self.by_status(s)) for s in ("done", "skipped", "failed", "elsewhere")}
        resumed = sum(r.resumed_at is not None for r in self.by_status("done"))
        line = f"{len(self.results)} runs: {counts['done']} done"
        line += f" ({resumed} resumed)" if resumed else ""
        line += f", {counts['skipped']} skipped (complete before), {counts['failed']} failed"
        line += f", {counts['elsewhere']} running elsewhere" if counts["elsewhere"] else ""
        return line + f", in {self.wall_seconds:.1f} s"


# ---- the sweep ----------------------------------------------------------------------------


def is_complete(run_dir: Path) -> bool:
    """A run is complete when train() wrote its ``summary.json`` (it does so last)."""
    return (run_dir / "summary.json").is_file()


def _check_existing(specs: Sequence[RunSpec], logdir: Path) -> None:
    """Refuse to skip, resume or delete a run directory that holds another configuration."""
    for spec in specs:
        path = logdir / spec.name / "config.json"
        if not path.is_file():
            continue
        try:
            found = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # an unreadable config belongs to an incomplete run: it is redone
        if not isinstance(found, dict):
            continue
        expected = json.loads(json.dumps(spec.hparams()))
        # the fields decide: a preset's record (its source text) and a resume history are not
        # the configuration
        diff = sorted(k for k in set(found) | set(expected)
                      if k not in ("preset", "resumed") and found.get(k) != expected.get(k))
        if diff:
            shown = ", ".join(f"{k}: {found.get(k)!r} there, {expected.get(k)!r} now"
                              for k in diff[:3])
            raise ValueError(f"{logdir / spec.name} holds a run of another configuration "
                             f"({shown}); use another --logdir or remove it")


def available_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_sweep(
    grid: Grid | Sequence[RunSpec],
    logdir: str | os.PathLike[str],
    *,
    agents: Mapping[str, type] | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    threads: int | None = 1,
) -> SweepResult:
    """Run every run of ``grid`` not yet complete under ``logdir``; never raises for a run.

    Args:
        grid: a :class:`Grid` (checked with ``grid.runs(agents)``) or its list of RunSpecs.
        logdir: the sweep's directory; run ``NAME`` goes to ``logdir/NAME``. With Ray it must
            be a path every node sees (a shared file system).
        agents: name -> agent class, e.g. ``agents.AGENTS``.
        backend: ``"local"`` (one process per run, ``workers`` at a time) or ``"ray"``.
        workers: runs at once; default the number of cores (local) or of the Ray cluster's
            CPUs (each Ray task asks for one CPU).
        address: the Ray cluster to join (``ray.init(address=...)``); None starts a local Ray
            instance with ``workers`` CPUs.
        on_result: called in this process with each RunResult as soon as it is known
            (skipped runs first).
        threads: math-library threads of each run (:func:`rlgrad.threads.math_threads`).

    A run is skipped when complete (``summary.json``), reported as ``"elsewhere"`` when another
    live process holds its lock, resumed when it has a loadable checkpoint, and started (again)
    otherwise; see :func:`execute_run`.

    Returns the results in grid order. Raises ValueError/TypeError for a bad grid, backend,
    worker count, thread count or logdir, before any run starts.
    """
    specs = grid.runs(agents) if isinstance(grid, Grid) else list(grid)
    if not specs:
        raise ValueError("the grid is empty: no runs to make")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"runs given twice: {twice[:3]}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers is not None:
        _check_int("workers", workers, minimum=1)
    if address is not None and backend != "ray":
        raise ValueError(f"address {address!r} is for backend='ray', not {backend!r}")
    if threads is not None:
        _check_int("threads", threads, minimum=1)
    from rlgrad.train import RunLock, check_writable

    root = check_writable(logdir)
    _check_existing(specs, root)
    if backend == "ray":
        ray = _import_ray()
    start = time.perf_counter()
    results: dict[str, RunResult] = {}

    def report(result: RunResult) -> None:
        results[result.name] = result
        if on_result is not None:
            on_result(result)

    todo = []
    for spec in specs:
        run_dir = root / spec.name
        if is_complete(run_dir):
            report(RunResult(spec, "skipped", summary=_read_summary(run_dir)))
            continue
        owner = RunLock(run_dir).owner()
        if owner is not None:
            report(RunResult(spec, "elsewhere", error=f"running elsewhere: pid "
                             f"{owner.get('pid')} on host {owner.get('host')}"))
            continue
        todo.append(spec)  # the worker resumes it or starts it again, under its lock
    root.mkdir(parents=True, exist_ok=True)
    if todo:
        if backend == "local":
            _run_local(todo, str(root), workers or available_workers(), threads, report)
        else:
            _run_ray(ray, todo, str(root), workers, address, threads, report)
    return SweepResult([results[s.name] for s in specs], time.perf_counter() - start)


def _result(spec: RunSpec, seconds: float, message: tuple[str, Any, str]) -> RunResult:
    """The RunResult of a worker's :func:`_guarded_run` message."""
    status, payload, tb = message
    if status == "done":
        summary, resumed_at = payload
        return RunResult(spec, "done", seconds, summary=summary, resumed_at=resumed_at)
    if status == "elsewhere":
        return RunResult(spec, "elsewhere", seconds, error=payload)
    return RunResult(spec, "failed", seconds, error=payload, traceback=tb)


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _thread_vars(threads: int | None) -> dict[str, str]:
    """THREAD_ENV for ``threads`` threads (None: the process's own, nothing set)."""
    return {} if threads is None else {k: str(threads) for k in THREAD_ENV}


@contextmanager
def _thread_env(threads: int | None = 1) -> Iterator[None]:
    """Set THREAD_ENV while worker processes start (they inherit it), then restore."""
    variables = _thread_vars(threads)
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _context() -> Any:
    # forkserver forks every run from one clean process that has numpy and rlgrad imported
    # (no 0.5 s of imports per run); spawn where there is no fork.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "gymnasium", "rlgrad.train", "rlgrad.sweep"])
        return ctx
    return mp.get_context("spawn")


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"worker process died from signal {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process died from signal {-code}"
    return f"worker process exited with code {code} without a result"


def _run_local(specs: Sequence[RunSpec], logdir: str, workers: int, threads: int | None,
               report: Callable[[RunResult], None]) -> None:
    """One process per run (not a pool): a run that kills its process is that run's failure
    alone, where a dying pool worker would break every run in flight."""
    ctx = _context()
    pending = deque(specs)
    running: dict[Any, tuple[Any, Any, RunSpec, float]] = {}  # sentinel -> (proc, conn, ...)
    try:
        with _thread_env(threads):
            while pending or running:
                while pending and len(running) < workers:
                    spec = pending.popleft()
                    reader, writer = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_child_main,
                                       args=(spec, logdir, threads, writer),
                                       name=f"rlgrad-sweep:{spec.name}", daemon=True)
                    proc.start()
                    writer.close()  # ours: so a dead child reads as EOF
                    running[proc.sentinel] = (proc, reader, spec, time.perf_counter())
                handles = [h for proc, reader, _, _ in running.values()
                           for h in (proc.sentinel, reader)]
                ready = set(wait(handles))
                for sentinel in list(running):
                    proc, reader, spec, started = running[sentinel]
                    if sentinel not in ready and reader not in ready:
                        continue
                    message = None
                    try:
                        if reader.poll():
                            message = reader.recv()
                    except (EOFError, OSError):
                        message = None
                    proc.join()  # it has sent its result or closed the pipe: it is ending
                    reader.close()
                    del running[sentinel]
                    seconds = time.perf_counter() - started
                    if message is None:
                        report(RunResult(spec, "failed", seconds,
                                         error=_exit_reason(proc.exitcode)))
                    else:
                        report(_result(spec, seconds, message))
    finally:
        # on Ctrl-C the children got SIGINT too: they save their run and stop; wait for them
        for proc, reader, _, _ in running.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
            reader.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ValueError("backend 'ray' needs ray: pip install 'rlgrad[ray]'") from e
    return ray


def _ray_task(spec: RunSpec, logdir: str, threads: int | None) -> tuple[str, Any, str]:
    for key, value in _thread_vars(threads).items():
        os.environ.setdefault(key, value)
    return _guarded_run(spec, logdir, threads)


def _run_ray(ray: Any, specs: Sequence[RunSpec], logdir: str, workers: int | None,
             address: str | None, threads: int | None,
             report: Callable[[RunResult], None]) -> None:
    started_here = not ray.is_initialized()
    if started_here:
        kw: dict[str, Any] = {"runtime_env": {"env_vars": _thread_vars(threads)},
                              "include_dashboard": False, "log_to_driver": False,
                              "logging_level": "warning"}
        if address is not None:
            kw["address"] = address
        else:
            kw["num_cpus"] = workers or available_workers()
        ray.init(**kw)
    try:
        # one CPU each and no retries: a run that crashed is reported, not silently redone
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        # submit no more than can run, so a run's time is its own and not its wait in a queue
        slots = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = deque(specs)
        refs: dict[Any, tuple[RunSpec, float]] = {}
        while queue or refs:
            while queue and len(refs) < slots:
                spec = queue.popleft()
                refs[task.remote(spec, logdir, threads)] = (spec, time.perf_counter())
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                spec, t0 = refs.pop(ref)
                report(_ray_result(ray, ref, spec, time.perf_counter() - t0))
    finally:
        if started_here:
            ray.shutdown()


def _ray_result(ray: Any, ref: Any, spec: RunSpec, seconds: float) -> RunResult:
    try:
        message = ray.get(ref)
    except Exception as e:  # noqa: BLE001 - the worker died (WorkerCrashedError, ...)
        return RunResult(spec, "failed", seconds, error=f"{type(e).__name__}: {e}".strip())
    return _result(spec, seconds, message)


# ---- the command line -----------------------------------------------------------------------


def parse_set(items: Sequence[str], classes: Sequence[type]) -> dict[str, list[Any]]:
    """``["ent_coef=0", "ent_coef=0.01", "hidden_sizes=32,32"]`` -> grid options.

    A key given more than once becomes an axis of the grid with each value. Values are parsed
    by the declared type of the field in the agents' configs (:func:`rlgrad.config.field_kinds`):
    numbers, ``true``/``false``, comma-separated integers for sizes, strings otherwise, and
    ``none`` for a field that may be None.
    """
    from rlgrad.config import field_kinds

    kinds: dict[str, tuple[str, bool]] = {}
    for cls in classes:
        for name, kind in field_kinds(cls.config_class).items():
            kinds.setdefault(name, kind)
    options: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        if key in ("optimizer", "lr"):
            raise ValueError(f"give {key} with --{key}, not --set")
        if key not in kinds:
            import difflib

            close = difflib.get_close_matches(key, list(kinds), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            agents = ", ".join(c.name for c in classes)
            raise ValueError(f"unknown option {key!r} in --set {item} for agent(s) {agents}."
                             f"{hint} Options: {', '.join(sorted(kinds))}")
        options.setdefault(key, []).append(_parse_value(key, text.strip(), *kinds[key]))
    return options


_EXPECTED = {"bool": "true or false", "ints": "comma-separated integers", "int": "an integer",
             "float": "a finite number", "str": "a string"}


def _parse_value(key: str, text: str, kind: str, optional: bool = False) -> Any:
    if optional and text.lower() == "none":
        return None
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        if kind == "ints":
            return tuple(int(v) for v in text.split(",") if v.strip())
        if kind == "int":
            return int(text)
        if kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        also = " or none" if optional else ""
        raise ValueError(f"--set {key}={text}: expected {_EXPECTED[kind]}{also}") from None
    return text
