"""A training run: checks, run directory, TensorBoard, checkpoints, Ctrl-C, evaluation, summary.

The agent's own ``learn`` loop does the learning; this module wraps it in what a run needs on
disk. It knows agents only through the interface they share (``learn``, ``evaluate``,
``state_dict``, ``load_state_dict``, ``stop_requested``), so it never imports ``agents``.

A run directory ``LOGDIR/{env}__{agent}__{seed}__{unix time}/`` holds the TensorBoard event
file, ``config.json``, the checkpoint (``checkpoint.json`` + its arrays file) and
``summary.json``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint
from .envs import describe_spaces
from .logging import Progress, SummaryWriter, hparams_markdown

__all__ = ["train", "resume", "run_name", "check_writable", "TrainingInterrupted",
           "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request (Ctrl-C); the run was saved at its last completed update."""

    def __init__(self, run_dir: Path, global_step: int) -> None:
        super().__init__(f"interrupted: saved {run_dir} at step {global_step}")
        self.run_dir = run_dir
        self.global_step = global_step


def run_name(env_id: str, agent: str, seed: int, stamp: int | None = None) -> str:
    """``{env}__{agent}__{seed}__{unix time}``, with characters unsafe in paths replaced."""
    env = re.sub(r"[^A-Za-z0-9_.-]+", "_", env_id)
    return f"{env}__{agent}__{seed}__{int(time.time()) if stamp is None else stamp}"


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


def _check_total_steps(total_steps: Any) -> int:
    if not isinstance(total_steps, (int, np.integer)) or isinstance(total_steps, bool) \
            or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    return int(total_steps)


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


class _Logger:
    """Writes an update's metrics to TensorBoard, keyed by environment steps."""

    SCALARS = {
        "policy_loss": "losses/policy_loss",
        "value_loss": "losses/value_loss",
        "entropy": "losses/entropy",
        "grad_norm": "diagnostics/grad_norm",
        "explained_variance": "diagnostics/explained_variance",
        "grad_variance": "diagnostics/grad_variance",
    }

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
            tag = self.SCALARS.get(key, f"losses/{key}" if "loss" in key else f"diagnostics/{key}")
            if value is not None and np.isfinite(value):
                w.add_scalar(tag, value, step)
        metrics = {"return": float(np.mean(self.recent))} if self.recent else {}
        self.progress.update(step, **metrics)


def train(
    make_agent: Callable[[], Any],
    total_steps: int,
    logdir: str | os.PathLike[str] = "runs",
    *,
    name: str | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    eval_episodes: int = 10,
    save_every: int = 10,
    progress: bool | None = None,
    env_id: str | None = None,
    extra_hparams: dict[str, Any] | None = None,
    callback: Callable[[Any, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the agent that ``make_agent()`` builds for ``total_steps`` environment steps.

    Checks every argument, the environment's spaces (``env_id`` given) and that ``logdir`` is
    writable before anything is built or written. Saves a checkpoint every ``save_every``
    updates and at the end, evaluates for ``eval_episodes`` episodes and writes
    ``summary.json``. Returns the summary.

    Ctrl-C (SIGINT) stops at the end of the current step: the batch being collected is dropped,
    the agent is saved as it was after its last completed update, TensorBoard is flushed and
    :class:`TrainingInterrupted` is raised (the CLI exits with 130). A nan or inf in an
    observation, reward, loss or gradient raises before parameters change and before the
    checkpoint is overwritten, so the last good checkpoint stays.
    """
    total_steps = _check_total_steps(total_steps)
    if not isinstance(eval_episodes, int) or eval_episodes < 0:
        raise ValueError(f"eval_episodes must be an integer >= 0, got {eval_episodes!r}")
    if not isinstance(save_every, int) or save_every <= 0:
        raise ValueError(f"save_every must be a positive integer, got {save_every!r}")
    if env_id is not None:
        describe_spaces(env_id)  # unknown ids and unsupported spaces fail here
    if resume_from is not None:
        checkpoint_arrays, checkpoint_meta = load_checkpoint(resume_from)
        run_dir = Path(resume_from)
        run_dir = run_dir if run_dir.is_dir() else run_dir.parent
        check_writable(run_dir)
    else:
        check_writable(logdir)

    agent = make_agent()
    try:
        if resume_from is not None:
            agent.load_state_dict(checkpoint_arrays, checkpoint_meta)
        else:
            run_dir = Path(logdir) / (name or run_name(agent.env_id, agent.name, agent.seed))
        run_dir.mkdir(parents=True, exist_ok=True)
        return _run(agent, run_dir, total_steps, eval_episodes, save_every, progress,
                    extra_hparams or {}, callback, resumed=resume_from is not None)
    finally:
        agent.close()


def resume(make_agent: Callable[[], Any], checkpoint: str | os.PathLike[str], total_steps: int,
           **kw: Any) -> dict[str, Any]:
    """Continue the run saved at ``checkpoint`` up to ``total_steps``."""
    return train(make_agent, total_steps, resume_from=checkpoint, **kw)


def _save(agent: Any, run_dir: Path, saved: list[int]) -> None:
    """Checkpoint the agent unless this very update is already on disk (``saved`` holds the
    update count of the last save)."""
    if saved and saved[0] == agent.num_updates:
        return
    arrays, meta = agent.state_dict()
    save_checkpoint(run_dir / "checkpoint", arrays, meta)
    saved[:] = [agent.num_updates]


def _run(agent: Any, run_dir: Path, total_steps: int, eval_episodes: int, save_every: int,
         progress: bool | None, extra_hparams: dict[str, Any],
         callback: Callable[[Any, dict[str, Any]], None] | None, resumed: bool) -> dict[str, Any]:
    hparams = {"agent": agent.name, "env_id": agent.env_id, "seed": agent.seed,
               "total_steps": total_steps, **agent.config.to_dict(), **extra_hparams}
    if not resumed:
        (run_dir / "config.json").write_text(json.dumps(hparams, indent=1) + "\n")
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", hparams_markdown(hparams))
    bar = Progress(total_steps, enabled=progress)
    logger = _Logger(writer, bar)
    start = time.perf_counter()
    steps_at_start = agent.global_step
    saved: list[int] = [agent.num_updates] if resumed else []

    def on_update(a: Any, info: dict[str, Any]) -> None:
        logger(a, info)
        if callback is not None:
            callback(a, info)
        if a.num_updates % save_every == 0:
            _save(a, run_dir, saved)

    previous = None
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: setattr(agent, "stop_requested", True))
    except ValueError:  # not the main thread: Ctrl-C cannot reach us anyway
        previous = None
    try:
        agent.learn(total_steps, callback=on_update)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        last = {"return": float(np.mean(logger.recent))} if logger.recent else {}
        bar.close(agent.global_step, **last)
        writer.flush()
    wall = time.perf_counter() - start
    if agent.stop_requested:
        _save(agent, run_dir, saved)
        writer.close()
        raise TrainingInterrupted(run_dir, agent.global_step)
    _save(agent, run_dir, saved)
    summary: dict[str, Any] = {
        "agent": agent.name,
        "env_id": agent.env_id,
        "seed": agent.seed,
        "total_steps": agent.global_step,
        "num_updates": agent.num_updates,
        "num_episodes": agent.num_episodes,
        "wall_seconds": wall,
        "sps": (agent.global_step - steps_at_start) / max(wall, 1e-9),
        "train_return_last20": float(np.mean(logger.recent)) if logger.recent else None,
        "run_dir": str(run_dir),
    }
    if eval_episodes:
        returns = agent.evaluate(eval_episodes)
        summary.update(eval_return_mean=float(np.mean(returns)),
                       eval_return_std=float(np.std(returns)),
                       eval_episodes=eval_episodes)
        writer.add_scalar("eval/return_mean", summary["eval_return_mean"], agent.global_step)
    else:
        summary.update(eval_return_mean=None, eval_return_std=None, eval_episodes=0)
    writer.close()
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, run_dir / "summary.json")
    return summary
