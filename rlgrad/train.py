"""A training run: checks, run directory, TensorBoard, checkpoints, Ctrl-C, evaluation, summary.

The agent's own ``learn`` loop does the learning; this module wraps it in what a run needs on
disk. It knows agents only through the interface they share (``learn``, ``evaluate``,
``state_dict``, ``load_state_dict``, ``stop_requested``, ``config``), so it never imports
``agents``.

A run directory ``LOGDIR/{env}__{agent}__{seed}__{unix time}/`` holds the TensorBoard event
file, ``config.json``, the checkpoint (``checkpoint.json`` + its arrays file) and
``summary.json``; with evaluation during training also ``evaluations.json`` and the checkpoint
directory ``best/`` of the best evaluated policy. It is created exclusively: a second run
started in the same second with the same name gets ``NAME-1`` (then ``-2``, ...), and an
explicitly named run never writes into an existing directory. While a process writes a run, the
directory holds a lock file ``.lock`` naming that process (:class:`RunLock`), so a sweep or a
``--resume`` elsewhere leaves it alone.

A resumed run continues from its checkpoint. What shapes the arrays or the run's identity
(agent, environment, seed, network shape, optimizers) cannot change; everything else can
(:func:`resumable_fields`), and what changed is recorded in ``config.json`` (``"resumed"``) and
in the TensorBoard text tab.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .envs import describe_spaces
from .logging import Progress, SummaryWriter, hparams_markdown
from .threads import math_threads

try:
    from .envs import EnvironmentStepError
except ImportError:  # rlgrad.envs before it names the environment's own errors
    EnvironmentStepError = None

__all__ = ["train", "resume", "evaluate_episodes", "metric_tag", "run_name", "check_run_name",
           "check_writable", "resumable_fields", "resume_conflicts", "RunLock",
           "TrainingInterrupted", "EnvironmentFailed", "RunLocked", "RunExists", "NothingToTrain",
           "EXIT_INTERRUPTED", "FIXED_ON_RESUME", "LOCK_FILE", "LOSS_KEYS", "EVAL_SEED_OFFSET",
           "EVALUATIONS_FILE", "BEST_DIR"]

EXIT_INTERRUPTED = 130
LOCK_FILE = ".lock"

FIXED_ON_RESUME = frozenset({"hidden_sizes", "activation", "optimizer", "value_optimizer",
                             "log_std_init"})
"""Config fields a resumed run never changes: they set array shapes (network sizes, which
optimizer and so which state arrays) or what the checkpoint replaces anyway (initial values)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request (Ctrl-C); the run was saved at its last completed update."""

    def __init__(self, run_dir: Path, global_step: int) -> None:
        super().__init__(f"interrupted: saved {run_dir} at step {global_step}")
        self.run_dir = run_dir
        self.global_step = global_step


class EnvironmentFailed(RuntimeError):
    """The environment raised mid-run; the run was saved at its last completed update."""

    def __init__(self, run_dir: Path, env_id: str, global_step: int | None,
                 error: BaseException) -> None:
        if EnvironmentStepError is not None and isinstance(error, EnvironmentStepError):
            what = " ".join(str(error).split())  # it names the environment itself
        else:
            what = f"environment {env_id} failed: " + " ".join(
                f"{type(error).__name__}: {error}".split())
        saved = (f"saved {run_dir} at step {global_step}; continue with --resume {run_dir}"
                 if global_step is not None else f"could not save {run_dir}")
        super().__init__(f"{what} ({saved})")
        self.run_dir = run_dir
        self.global_step = global_step
        self.error = error


class RunLocked(ValueError):
    """Another live process holds the run directory's lock."""

    def __init__(self, run_dir: Path, message: str) -> None:
        super().__init__(message)
        self.run_dir = run_dir


class RunExists(ValueError):
    """An explicitly named run directory exists already."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"run directory {run_dir} exists; give another --run-name, or continue "
                         f"that run with --resume {run_dir}")
        self.run_dir = run_dir


class NothingToTrain(ValueError):
    """A resumed run is already at (or past) its budget and complete: nothing was written."""

    def __init__(self, run_dir: Path, global_step: int, total_steps: int) -> None:
        super().__init__(f"{run_dir} is already at step {global_step}, at or past --total-steps "
                         f"{total_steps}: nothing to train, summary.json left as it was; give a "
                         "larger --total-steps to train on")
        self.run_dir = run_dir


# ---- names and directories ------------------------------------------------------------------


def _now() -> int:
    """Unix time in seconds, the stamp of default run names (a seam for the tests' clock)."""
    return int(time.time())


def run_name(env_id: str, agent: str, seed: int, stamp: int | None = None) -> str:
    """``{env}__{agent}__{seed}__{unix time}``, with characters unsafe in paths replaced."""
    env = re.sub(r"[^A-Za-z0-9_.-]+", "_", env_id)
    return f"{env}__{agent}__{seed}__{_now() if stamp is None else stamp}"


def check_run_name(name: Any) -> str:
    """``name`` if it names a directory directly inside the logdir, else ValueError.

    Refused: the empty name, ``.`` and ``..``, names with a path separator (so ``../x``,
    ``a/b`` and absolute paths) or a NUL byte.
    """
    if not isinstance(name, str):
        raise TypeError(f"run name must be a str, got {type(name).__name__} {name!r}")
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if name in ("", ".", "..") or any(s in name for s in seps) or "\0" in name:
        raise ValueError(f"run name {name!r} must name a directory inside the logdir: not empty, "
                         "not '.' or '..', no '/'")
    return name


def check_writable(logdir: str | os.PathLike[str]) -> Path:
    """Raise ValueError unless ``logdir`` exists as a writable directory or can be created.

    Leaves nothing behind: it tries a temporary file in the nearest existing ancestor.
    """
    path = Path(logdir).absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"logdir {str(logdir)!r}: {probe} is a file, not a directory")
    try:
        # os.access says yes to root everywhere; a temporary file that vanishes at once is the
        # reliable test (read-only mounts, /proc, full quotas)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ValueError(f"logdir {str(logdir)!r} is not writable: cannot create files in "
                         f"{probe} ({e.strerror})") from None
    return path


def _create_run_dir(logdir: Path, name: str, unique: bool) -> Path:
    """Make ``logdir/name`` with ``os.mkdir``, which fails if it exists, so two processes never
    get the same directory. ``unique``: take ``name-1``, ``name-2``, ... when it is taken;
    otherwise a taken name raises :class:`RunExists`."""
    logdir.mkdir(parents=True, exist_ok=True)
    for k in itertools.count():
        run_dir = logdir / (name if k == 0 else f"{name}-{k}")
        try:
            os.mkdir(run_dir)
        except FileExistsError:
            if not unique:
                raise RunExists(run_dir) from None
            continue
        return run_dir
    raise AssertionError("unreachable")


def _run_dir_of(checkpoint: str | os.PathLike[str]) -> Path:
    """The run directory of a checkpoint given as the directory or as its JSON file."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    if path.is_file() or path.with_name(path.name + ".json").is_file():
        return path.parent
    raise CheckpointError(f"{checkpoint}: no such run directory or checkpoint")


# ---- the lock -------------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), with its state;
    None where /proc cannot tell. Two processes with the same pid have different start times."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command) "
    return f"{fields[0]}:{fields[19]}"  # state, starttime


def _this_process() -> dict[str, Any]:
    start = _process_start(os.getpid())
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "start": None if start is None else start.split(":")[1], "time": time.time()}


def _owner_alive(owner: Mapping[str, Any]) -> bool:
    """False only when the owner is known to be gone: same host, and its pid is dead, a zombie
    or a newer process. A lock of another host is taken as live (this host cannot tell)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    now = _process_start(pid)
    if now is not None:
        state, start = now.split(":")
        if state == "Z" or (owner.get("start") is not None and owner.get("start") != start):
            return False
    return True


_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (pid, depth): the locks this process holds


class RunLock:
    """The lock file ``RUN_DIR/.lock`` of a run being written: who writes it.

    :meth:`acquire` creates the file with ``O_CREAT | O_EXCL`` (so of two processes exactly one
    gets it) holding the owner's pid, host and process start time as JSON, and
    :meth:`release` removes it. A lock whose owner is dead on this host (a killed process) is
    stale: it is removed and taken. The lock is reentrant within one process (a sweep worker
    holds it while it decides, then :func:`train` takes it again). Usable as a context manager.

    Raises :class:`RunLocked` naming the owner when another live process holds it.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._key = os.path.abspath(self.path)

    def __repr__(self) -> str:
        return f"RunLock({str(self.run_dir)!r})"

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        pid, _ = _HELD.get(self._key, (None, 0))
        return pid == os.getpid()

    def owner(self) -> dict[str, Any] | None:
        """The live owner's record (pid, host, start, time), or None when no live process holds
        the lock (no lock file, or a stale one). Reads only."""
        found = self._read()
        if found is None:
            return None
        _, owner = found
        return owner if self._live(owner) else None

    def acquire(self) -> RunLock:
        if self.held:
            pid, depth = _HELD[self._key]
            _HELD[self._key] = (pid, depth + 1)
            return self
        me = _this_process()
        for _ in range(5):  # a stale lock broken, or a lock removed while we looked: again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                found = self._read()
                if found is None:
                    continue  # released in between
                text, owner = found
                if self._live(owner):
                    raise RunLocked(self.run_dir, self._describe(owner)) from None
                self._break(text)
                continue
            except FileNotFoundError:
                raise RunLocked(self.run_dir, f"run directory {self.run_dir} is gone (removed "
                                "by another process?)") from None
            try:
                os.write(fd, (json.dumps(me) + "\n").encode())
            finally:
                os.close(fd)
            _HELD[self._key] = (os.getpid(), 1)
            return self
        raise RunLocked(self.run_dir, f"cannot take the lock {self.path}: it keeps changing")

    def release(self) -> None:
        """Give the lock up (the file goes when the outermost holder releases)."""
        if not self.held:
            return
        pid, depth = _HELD[self._key]
        if depth > 1:
            _HELD[self._key] = (pid, depth - 1)
            return
        del _HELD[self._key]
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def discard_run(self) -> None:
        """Delete the run directory this process holds the lock of (the lock goes with it).

        It is renamed aside first, so nobody sees a half-deleted run under its name."""
        import shutil

        if not self.held:
            raise RuntimeError(f"{self!r} is not held by this process")
        aside = self.run_dir.with_name(f".{self.run_dir.name}.discarded-{uuid.uuid4().hex[:8]}")
        os.rename(self.run_dir, aside)
        del _HELD[self._key]
        shutil.rmtree(aside, ignore_errors=True)

    # a lock file just created may not hold its record yet: wait this long before calling an
    # unreadable one stale
    UNREADABLE_GRACE = 10.0

    def _live(self, owner: dict[str, Any] | None) -> bool:
        if owner is None:  # unreadable: fresh (being written) or garbage
            try:
                return time.time() - self.path.stat().st_mtime < self.UNREADABLE_GRACE
            except FileNotFoundError:
                return False
        return _owner_alive(owner)

    def _read(self) -> tuple[str, dict[str, Any] | None] | None:
        """(text, owner record or None if unreadable), or None without a lock file."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return "", None
        try:
            owner = json.loads(text)
        except json.JSONDecodeError:
            return text, None
        return text, owner if isinstance(owner, dict) else None

    def _break(self, stale_text: str) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile.

        It is renamed to a unique name first, then compared with what was found stale: a fresh
        lock taken away by mistake (another process broke the stale one first and took the lock)
        is put back."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            text = aside.read_text()
        except OSError:
            text = stale_text
        if text != stale_text:
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        os.remove(aside)

    def _describe(self, owner: dict[str, Any] | None) -> str:
        if owner is None:
            return f"run {self.run_dir} is being written by another process (lock {self.path})"
        return (f"run {self.run_dir} is being written by pid {owner.get('pid')} on host "
                f"{owner.get('host')} (remove {self.path} if that process is gone)")


# ---- checks ---------------------------------------------------------------------------------


def _check_total_steps(total_steps: Any) -> int:
    if not isinstance(total_steps, (int, np.integer)) or isinstance(total_steps, bool) \
            or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    return int(total_steps)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def resumable_fields(config_class: type) -> frozenset[str]:
    """The config fields a resumed run may change: those whose metadata says ``"resume": True``
    (:func:`rlgrad.config.resumable_fields`: learning rates, coefficients, ...), or every
    field of a config that declares nothing (a plain dataclass); never those of
    :data:`FIXED_ON_RESUME`."""
    from .config import resumable_fields as marked

    fields = dataclasses.fields(config_class)
    if any("resume" in f.metadata for f in fields):
        free = set(marked(config_class))
    else:
        free = {f.name for f in fields}
    return frozenset(free - FIXED_ON_RESUME)


def _plain(x: Any) -> Any:
    """``x`` as JSON gives it back (tuples become lists), for comparisons with a checkpoint."""
    return json.loads(json.dumps(x))


def resume_conflicts(meta: Mapping[str, Any], config_class: type, config: Mapping[str, Any], *,
                     agent: str | None = None, env_id: str | None = None,
                     seed: int | None = None) -> list[tuple[str, Any, Any]]:
    """``(key, given, the checkpoint's)`` for every given value a resumed run cannot take: the
    agent, environment or seed, or a config field outside :func:`resumable_fields`, that differs
    from the checkpoint ``meta``. ``config`` may hold only some fields (those given)."""
    conflicts = []
    for key, given in (("agent", agent), ("env_id", env_id), ("seed", seed)):
        if given is not None and given != meta.get(key):
            conflicts.append((key, given, meta.get(key)))
    saved = meta.get("config") or {}
    free = resumable_fields(config_class)
    for key, given in config.items():
        if key not in free and key in saved and _plain(given) != saved[key]:
            conflicts.append((key, _plain(given), saved[key]))
    return conflicts


def conflict_message(run_dir: Any, conflicts: list[tuple[str, Any, Any]],
                     option: Callable[[str], str] = str) -> str:
    """One line naming every option that differs from the checkpoint of ``run_dir``."""
    shown = ", ".join(f"{option(k)} {_short(given)} (the run's: {_short(saved)})"
                      for k, given, saved in conflicts)
    return (f"cannot resume {run_dir} with another {shown}: these are fixed by its checkpoint; "
            "leave them out, or start a new run")


def _short(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


# ---- TensorBoard --------------------------------------------------------------------------


LOSS_KEYS = frozenset({"policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl",
                       "clipfrac", "explained_variance"})
"""The metrics CleanRL logs under ``losses/`` (``explained_variance`` among them)."""


def metric_tag(key: str) -> str:
    """The TensorBoard tag of an update's metric ``key``, with CleanRL's names.

    A key that already holds a ``/`` is a tag (``curvature/hessian_max``); the keys of
    :data:`LOSS_KEYS` go under ``losses/``; everything else (``grad_norm``, ``grad_variance``,
    the second-order agents' ``cg_residual``, ``line_search_steps``, ...) under
    ``diagnostics/``.
    """
    if "/" in key:
        return key
    return f"losses/{key}" if key in LOSS_KEYS else f"diagnostics/{key}"


class _Logger:
    """Writes an update's metrics to TensorBoard, keyed by environment steps."""

    def __init__(self, writer: SummaryWriter, progress: Progress) -> None:
        self.writer = writer
        self.progress = progress
        self.recent: list[float] = []

    def __call__(self, agent: Any, info: dict[str, Any]) -> None:
        w, step = self.writer, agent.global_step
        for end_step, ret, length in info["episodes"]:
            w.add_scalar("charts/episodic_return", ret, end_step)
            w.add_scalar("charts/episodic_length", length, end_step)
            self.recent.append(ret)
        self.recent = self.recent[-20:]
        w.add_scalar("charts/SPS", info["steps"] / max(info["seconds"], 1e-9), step)
        w.add_scalar("charts/learning_rate", info["learning_rate"], step)
        for key, value in info["metrics"].items():
            if value is not None and np.isfinite(value):
                w.add_scalar(metric_tag(key), value, step)
        metrics = {"return": float(np.mean(self.recent))} if self.recent else {}
        self.progress.update(step, **metrics)


# ---- evaluation during training -------------------------------------------------------------

EVAL_SEED_OFFSET = 1_000_003
"""A run evaluates on the seed ``seed + EVAL_SEED_OFFSET`` (the default of ``Agent.evaluate``):
the same episodes at every evaluation, so two evaluations differ only by the policy, and never
the episodes of training."""

EVALUATIONS_FILE = "evaluations.json"
BEST_DIR = "best"


class _EpisodeLengths:
    """A VecEnv as ``Agent.evaluate`` sees it, counting the steps of each environment's first
    episode (the one evaluate scores; it masks what an environment does after it ends), since
    evaluate returns the returns alone."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.lengths = np.zeros(env.num_envs, dtype=np.int64)
        self._running = np.ones(env.num_envs, dtype=bool)

    def reset(self, *args: Any, **kw: Any) -> Any:
        self.lengths[:] = 0
        self._running[:] = True
        return self.env.reset(*args, **kw)

    def step(self, actions: Any) -> Any:
        out = self.env.step(actions)
        self.lengths += self._running
        self._running &= ~(np.asarray(out[2], dtype=bool) | np.asarray(out[3], dtype=bool))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)


def evaluate_episodes(agent: Any, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(returns, lengths)``, each ``(episodes,)``, of ``agent.evaluate(episodes, seed=seed)``:
    the deterministic policy with its frozen observation normalisation, one episode on each of
    ``episodes`` environments of its own (those evaluate makes itself: the same returns)."""
    from .envs import make_vec

    env = _EpisodeLengths(make_vec(agent.env_id, episodes, seed=seed, **agent.env_kwargs))
    try:
        returns = np.asarray(agent.evaluate(episodes, seed=seed, env=env), dtype=np.float64)
    finally:
        env.close()
    return returns, env.lengths.copy()


def _brief(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An evaluation record without its per-episode lists (for summary.json)."""
    if record is None:
        return None
    return {k: record[k] for k in ("step", "mean_return", "std_return", "mean_length")}


class _Evaluations:
    """The evaluations of a run, SB3's ``EvalCallback``: after the first update at or past each
    multiple of ``every`` environment steps (and once at the end), ``episodes`` deterministic
    episodes on the fixed seed ``seed``, written as ``eval/mean_return``, ``eval/std_return``
    and ``eval/mean_length``.

    With ``every`` > 0 each evaluation is kept in ``RUN/evaluations.json`` and the state of the
    best one so far (the highest mean return; the earlier on a tie) in the checkpoint directory
    ``RUN/best/``. A resumed run reads its history back up to its checkpoint's step; a best
    whose ``best/`` does not hold it (a crash between the two writes) is dropped with its
    directory, and the best is then the best evaluation from the resume on.
    """

    def __init__(self, run_dir: Path, writer: SummaryWriter, every: int, episodes: int,
                 seed: int, start_step: int, resumed: bool) -> None:
        self.path = run_dir / EVALUATIONS_FILE
        self.best_dir = run_dir / BEST_DIR
        self.writer = writer
        self.every, self.episodes, self.seed = every, episodes, seed
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        if resumed and every:
            self._restore(start_step)
        self.next_step = every * (start_step // every + 1) if every else None

    def due(self, step: int) -> bool:
        return self.next_step is not None and step >= self.next_step

    def run(self, agent: Any, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
            write_mean: bool = True) -> bool:
        """Evaluate ``agent`` (whose state is ``arrays, meta``); True for a new best. The mean
        return is written to TensorBoard unless ``write_mean`` is False (the end record of the
        run writes it)."""
        step = int(agent.global_step)
        returns, lengths = evaluate_episodes(agent, self.episodes, self.seed)
        record = {"step": step, "mean_return": float(np.mean(returns)),
                  "std_return": float(np.std(returns)), "mean_length": float(np.mean(lengths)),
                  "seed": self.seed, "returns": returns.tolist(), "lengths": lengths.tolist()}
        if write_mean:
            self.writer.add_scalar("eval/mean_return", record["mean_return"], step)
        self.writer.add_scalar("eval/std_return", record["std_return"], step)
        self.writer.add_scalar("eval/mean_length", record["mean_length"], step)
        self.last = record
        if self.every:
            self.next_step = self.every * (step // self.every + 1)
        if not self.every:
            return False
        better = self.best is None or record["mean_return"] > self.best["mean_return"]
        if better:
            save_checkpoint(self.best_dir / "checkpoint", arrays, meta)
            self.best = record
        self.history.append(record)
        _write_json(self.path, {"seed": self.seed, "episodes": self.episodes,
                                "best_step": self.best["step"], "evaluations": self.history})
        return better

    def _restore(self, start_step: int) -> None:
        import shutil

        data = _read_json(self.path)
        try:
            history = [dict(r) for r in data.get("evaluations", [])
                       if int(r["step"]) <= start_step]
            best = None
            for r in history:
                if best is None or float(r["mean_return"]) > float(best["mean_return"]):
                    best = r
        except (KeyError, TypeError, ValueError):  # not a history this module wrote
            history, best = [], None
        if best is not None:
            try:
                best_step = load_checkpoint(self.best_dir)[1].get("global_step")
            except (CheckpointError, ValueError, OSError):
                best_step = None
            if best_step != best["step"]:
                best = None
        if best is None and self.best_dir.exists():
            shutil.rmtree(self.best_dir)
        self.history, self.best = history, best
        self.last = history[-1] if history else None


# ---- the run ------------------------------------------------------------------------------


def train(
    make_agent: Callable[[], Any],
    total_steps: int,
    logdir: str | os.PathLike[str] = "runs",
    *,
    name: str | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    eval_episodes: int = 10,
    eval_every: int = 0,
    eval_seed: int | None = None,
    save_every: int = 10,
    progress: bool = True,
    env_id: str | None = None,
    extra_hparams: dict[str, Any] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    note: str | None = None,
    callback: Callable[[Any, dict[str, Any]], bool | None] | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Train the agent that ``make_agent()`` builds for ``total_steps`` environment steps.

    Checks every argument, the environment's spaces (``env_id`` given) and that ``logdir`` is
    writable, and builds the agent (which validates its config), before anything is written.
    Creates the run directory ``logdir/name`` exclusively (default name :func:`run_name`, made
    unique with ``-1``, ``-2``, ...; an explicit ``name`` that exists raises :class:`RunExists`)
    and holds its :class:`RunLock` until the end. Saves a checkpoint every ``save_every`` updates
    and at the end, evaluates for ``eval_episodes`` episodes and writes ``summary.json``.
    Returns the summary. ``callback(agent, info)`` is called after every update, as by
    ``agent.learn`` (returning False ends training there). Training and evaluation run with
    ``threads`` math-library threads (:func:`rlgrad.threads.math_threads`; None: as the process
    has them). ``progress`` prints to stderr (also when it is not a terminal) a first line
    naming the agent, environment, seed and run directory (then ``note``, e.g. the preset the
    CLI applied) and a progress line.

    TensorBoard tags are CleanRL's, keyed by environment steps: ``charts/episodic_return``,
    ``charts/episodic_length``, ``charts/SPS``, ``charts/learning_rate``, the agent's metrics
    under :func:`metric_tag`, and ``eval/mean_return``, ``eval/std_return``,
    ``eval/mean_length``. A new run writes its HParams start record (its hyperparameters: agent,
    environment, seed, steps, every config field, ``extra_hparams``) and every finished run its
    end record, with ``eval/mean_return`` (the final evaluation) and ``charts/episodic_return``
    (the mean of the last 20 episodes) as metrics and status ``success``, or ``failure`` after
    an error; a run stopped by Ctrl-C (to be resumed) writes none.

    ``config.json`` holds the hyperparameters and ``extra_config`` (JSON keys that are not
    hyperparameters, such as the CLI's ``"preset"`` record).

    Evaluation during training (SB3's ``EvalCallback``): with ``eval_every`` > 0, after the
    first update at or past each multiple of ``eval_every`` environment steps the agent is
    evaluated for ``eval_episodes`` deterministic episodes on the seed ``eval_seed`` (default
    ``seed + EVAL_SEED_OFFSET``, the same at every evaluation, as the final evaluation),
    on environments of its own with the frozen normalisation; every evaluation (the final one
    too) goes to ``evaluations.json`` and the best one's state to the checkpoint directory
    ``RUN/best/`` beside the run's last checkpoint (which is saved with it); ``summary.json``
    records ``eval_best`` and ``eval_last`` (``step``, ``mean_return``, ``std_return``,
    ``mean_length``).

    ``resume_from`` (a run directory or its checkpoint) continues that run up to
    ``total_steps``: ``make_agent()`` must build the same agent, environment, seed and fixed
    config fields as the checkpoint's (else ValueError naming them, see
    :func:`resume_conflicts`); config fields that may change and differ are recorded in
    ``config.json`` under ``"resumed"`` (with ``total_steps`` if it changed) and in the
    TensorBoard text tab. A run already at ``total_steps`` with a ``summary.json`` raises
    :class:`NothingToTrain` and writes nothing; one without (stopped between its last update
    and its summary) is evaluated and summarised.

    Ctrl-C (SIGINT) stops at the end of the current step: the batch being collected is dropped,
    the agent is saved as it was after its last completed update, TensorBoard is flushed and
    :class:`TrainingInterrupted` is raised (the CLI exits with 130). Any error out of training
    saves the last completed update too, then propagates; an error of the environment is
    raised as :class:`EnvironmentFailed`. A nan or inf in an observation, reward, loss or
    gradient raises before parameters change, so what is saved is finite.
    """
    total_steps = _check_total_steps(total_steps)
    eval_episodes = _check_int("eval_episodes", eval_episodes, 0)
    eval_every = _check_int("eval_every", eval_every, 0)
    if eval_every and not eval_episodes:
        raise ValueError(f"eval_every={eval_every} needs eval_episodes >= 1 (episodes of each "
                         "evaluation), got 0")
    if eval_seed is not None:
        _check_int("eval_seed", eval_seed, 0)
    save_every = _check_int("save_every", save_every, 1)
    if threads is not None:
        _check_int("threads", threads, 1)
    if note is not None and not isinstance(note, str):
        raise TypeError(f"note must be a str or None, got {note!r}")
    extra_config = _check_extra_config(extra_config)
    if name is not None:
        check_run_name(name)
        if resume_from is not None:
            raise ValueError("a resumed run keeps its directory: give name or resume_from, "
                             "not both")
    options = _RunOptions(total_steps, eval_episodes, eval_every, eval_seed, save_every,
                          bool(progress), dict(extra_hparams or {}), extra_config, note,
                          callback)
    with math_threads(threads):
        if env_id is not None:
            describe_spaces(env_id)  # unknown ids and unsupported spaces fail here
        if resume_from is not None:
            run_dir = _run_dir_of(resume_from)
            check_writable(run_dir)
        else:
            check_writable(logdir)
        agent = make_agent()
        try:
            clash = sorted(set(extra_config) & {f.name for f in
                                                dataclasses.fields(agent.config)})
            if clash:
                raise ValueError(f"extra_config key {clash[0]!r} is a config field of "
                                 f"{agent.name}")
            if resume_from is None:
                run_dir = _create_run_dir(Path(logdir), name or run_name(
                    agent.env_id, agent.name, agent.seed), unique=name is None)
            with RunLock(run_dir):
                record = None
                if resume_from is not None:
                    record = _load_for_resume(agent, resume_from, run_dir, total_steps)
                return _run(agent, run_dir, options, record)
        finally:
            agent.close()


@dataclasses.dataclass(frozen=True)
class _RunOptions:
    """train()'s arguments, checked, as _run and _learn need them."""

    total_steps: int
    eval_episodes: int
    eval_every: int
    eval_seed: int | None
    save_every: int
    progress: bool
    extra_hparams: dict[str, Any]
    extra_config: dict[str, Any]
    note: str | None
    callback: Callable[[Any, dict[str, Any]], bool | None] | None


_IDENTITY_KEYS = ("agent", "env_id", "seed", "total_steps")


def _check_extra_config(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra_config must be a mapping, got {type(extra).__name__}")
    for key in extra:
        if not isinstance(key, str) or not key:
            raise TypeError(f"extra_config keys must be non-empty strs, got {key!r}")
        if key in _IDENTITY_KEYS or key == "resumed":
            raise ValueError(f"extra_config key {key!r} is one train() writes itself")
    try:
        return json.loads(json.dumps(dict(extra), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"extra_config must be JSON data: {e}") from None


def resume(make_agent: Callable[[], Any], checkpoint: str | os.PathLike[str], total_steps: int,
           **kw: Any) -> dict[str, Any]:
    """Continue the run saved at ``checkpoint`` up to ``total_steps``."""
    return train(make_agent, total_steps, resume_from=checkpoint, **kw)


def _load_for_resume(agent: Any, checkpoint: str | os.PathLike[str], run_dir: Path,
                     total_steps: int) -> dict[str, Any]:
    """Load the checkpoint into ``agent`` (holding the run's lock); what changed."""
    arrays, meta = load_checkpoint(checkpoint)
    config = agent.config.to_dict()
    conflicts = resume_conflicts(meta, type(agent.config), config, agent=agent.name,
                                 env_id=agent.env_id, seed=agent.seed)
    if conflicts:
        raise ValueError(conflict_message(run_dir, conflicts))
    step = int(meta.get("global_step", 0))
    if step >= total_steps and (run_dir / "summary.json").exists():
        raise NothingToTrain(run_dir, step, total_steps)
    saved = meta.get("config") or {}
    changed = {k: {"from": saved[k], "to": _plain(v)} for k, v in config.items()
               if k in saved and _plain(v) != saved[k]}
    previous = _read_json(run_dir / "config.json")
    if previous.get("total_steps") not in (None, total_steps):
        changed["total_steps"] = {"from": previous["total_steps"], "to": total_steps}
    agent.load_state_dict(arrays, meta)
    return {"step": step, "changed": changed, "config": previous}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


def _is_environment_error(error: BaseException) -> bool:
    """Whether ``error`` came from the environment: an ``EnvironmentStepError`` where
    rlgrad.envs has it; before that, a RuntimeError raised inside an environment's ``step`` or
    ``reset`` (a frame of a Gymnasium env or of rlgrad's VecEnv)."""
    if EnvironmentStepError is not None:
        return isinstance(error, EnvironmentStepError)
    if not isinstance(error, RuntimeError) or isinstance(error, (NotImplementedError,
                                                                 RecursionError)):
        return False
    import gymnasium as gym

    from .envs import VecEnv

    envs = (gym.Env, gym.vector.VectorEnv, VecEnv)
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name in ("step", "reset") \
                and isinstance(frame.f_locals.get("self"), envs):
            return True
        tb = tb.tb_next
    return False


def _run(agent: Any, run_dir: Path, opts: _RunOptions,
         resumed: dict[str, Any] | None) -> dict[str, Any]:
    config = agent.config.to_dict()
    hparams = {"agent": agent.name, "env_id": agent.env_id, "seed": agent.seed,
               "total_steps": opts.total_steps, **config, **opts.extra_hparams}
    if resumed is None:
        _write_json(run_dir / "config.json", {**hparams, **opts.extra_config})
    elif resumed["changed"]:
        history = list(resumed["config"].get("resumed", []))
        history.append({"step": resumed["step"], "changed": resumed["changed"]})
        _write_json(run_dir / "config.json", {**resumed["config"], **_plain(hparams),
                                              **opts.extra_config, "resumed": history})
    if opts.progress:
        line = f"{agent.name} on {agent.env_id}, seed {agent.seed}, run {run_dir}"
        if resumed is not None:
            line += f", resumed at step {resumed['step']}"
        print(line + (f"; {opts.note}" if opts.note else ""), file=sys.stderr, flush=True)
    writer = SummaryWriter(run_dir)
    try:
        shown = {**hparams, **{k: json.dumps(v) if isinstance(v, (dict, list)) else v
                               for k, v in opts.extra_config.items()}}
        writer.add_text("hyperparameters", hparams_markdown(shown))
        if resumed is None:
            writer.add_hparams_start(hparams)
        else:
            rows = {"step": resumed["step"], **{k: f"{v['from']} -> {v['to']}"
                                                for k, v in resumed["changed"].items()}}
            writer.add_text("resumed", hparams_markdown(rows), resumed["step"])
        try:
            return _learn(agent, run_dir, writer, opts, resumed is not None)
        except KeyboardInterrupt:
            raise  # stopped to be resumed: the resumed run writes the end record
        except BaseException:
            try:
                writer.add_hparams_end(status="failure")
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
    finally:
        writer.close()


def _learn(agent: Any, run_dir: Path, writer: SummaryWriter, opts: _RunOptions,
           resumed: bool) -> dict[str, Any]:
    total_steps, callback, save_every = opts.total_steps, opts.callback, opts.save_every
    bar = Progress(total_steps, start_step=agent.global_step, enabled=opts.progress)
    logger = _Logger(writer, bar)
    eval_seed = agent.seed + EVAL_SEED_OFFSET if opts.eval_seed is None else opts.eval_seed
    evals = _Evaluations(run_dir, writer, opts.eval_every, opts.eval_episodes, eval_seed,
                         agent.global_step, resumed) if opts.eval_episodes else None
    start = time.perf_counter()
    steps_at_start = agent.global_step
    # the state after the last completed update, which is what any stop saves: an error in the
    # middle of collecting a batch leaves the agent's generator (and whatever collection
    # touches) past that point
    last = [agent.num_updates, *agent.state_dict()]
    saved = [agent.num_updates if resumed else None]

    def save() -> None:
        if saved[0] != last[0]:
            save_checkpoint(run_dir / "checkpoint", last[1], last[2])
            saved[0] = last[0]

    def on_update(a: Any, info: dict[str, Any]) -> bool | None:
        logger(a, info)
        stop = callback is not None and callback(a, info) is False  # as agent.learn's
        arrays, meta = a.state_dict()
        # evaluated before the state counts as completed: an evaluation that raises leaves the
        # update to be done (and evaluated) again on resume
        best = evals is not None and evals.due(a.global_step) and evals.run(a, arrays, meta)
        last[:] = [a.num_updates, arrays, meta]
        if a.num_updates % save_every == 0 or best:
            save()  # with a new best, so that a resumed run starts after it
        return False if stop else None

    previous = None
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: setattr(agent, "stop_requested", True))
    except ValueError:  # not the main thread: Ctrl-C cannot reach us anyway
        previous = None
    try:
        if agent.global_step < total_steps:  # else only the evaluation and summary are due
            # from where the agent is (0, or the checkpoint's step) up to total_steps; the
            # learning-rate schedule spans the whole run, as in a run never stopped
            agent.learn(total_steps - agent.global_step, callback=on_update,
                        reset_num_timesteps=False)
    except BaseException as e:
        try:
            save()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        if _is_environment_error(e):
            on_disk = saved[0] == last[0]
            raise EnvironmentFailed(run_dir, agent.env_id, last[2].get("global_step", 0) if
                                    on_disk else None, e) from e
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        tail = {"return": float(np.mean(logger.recent))} if logger.recent else {}
        bar.close(agent.global_step, **tail)
        writer.flush()
    wall = time.perf_counter() - start
    save()
    if agent.stop_requested:
        raise TrainingInterrupted(run_dir, agent.global_step)
    last_20 = float(np.mean(logger.recent)) if logger.recent else None
    summary: dict[str, Any] = {
        "agent": agent.name,
        "env_id": agent.env_id,
        "seed": agent.seed,
        "total_steps": agent.global_step,
        "num_updates": agent.num_updates,
        "num_episodes": agent.num_episodes,
        "wall_seconds": wall,
        "sps": (agent.global_step - steps_at_start) / max(wall, 1e-9),
        "train_return_last20": last_20,
        "run_dir": str(run_dir),
    }
    end_metrics: dict[str, float] = {}
    if evals is not None:
        final = evals.last
        if final is None or final["step"] != agent.global_step:
            # the end record writes eval/mean_return: one point per evaluation
            evals.run(agent, last[1], last[2], write_mean=False)
            final = evals.last
            end_metrics["eval/mean_return"] = final["mean_return"]
        summary.update(eval_return_mean=final["mean_return"],
                       eval_return_std=final["std_return"], eval_episodes=opts.eval_episodes,
                       eval_seed=eval_seed, eval_last=_brief(final),
                       eval_best=_brief(evals.best))
    else:
        summary.update(eval_return_mean=None, eval_return_std=None, eval_episodes=0,
                       eval_seed=None, eval_last=None, eval_best=None)
    if last_20 is not None:
        end_metrics["charts/episodic_return"] = last_20
    _write_json(run_dir / "summary.json", summary)
    writer.add_hparams_end(end_metrics, global_step=agent.global_step)
    return summary
