"""Learning curves over seeds from TensorBoard event files, aggregates across environments:
figures and tables.

:func:`load_runs` reads every run under a directory. :func:`summarize` groups runs whose
configuration (``config.json``, or the run name) differs only in the seed, and for each group
computes

- each run's curve: the running mean of the last ``window`` points of the tag (episodic returns
  by default) at x, a step function of x (environment steps, or seconds since the run started),
  held between points:

  .. math:: c_r(x) = \\frac{1}{|W_r(x)|} \\sum_{i \\in W_r(x)} y_{r,i}, \\qquad
            W_r(x) = \\text{the last } \\min(\\text{window}, \\#\\{i : x_{r,i} \\le x\\})
            \\text{ points with } x_{r,i} \\le x

  defined from the run's first point to its end :math:`e_r`, the last step (or second) of any
  scalar the run wrote: the step the run reached. A run's curve is drawn to its own end, and no
  number is ever read at an x a run did not reach.
- the mean over seeds :math:`\\bar c(x) = \\frac1n \\sum_r c_r(x)` on :math:`[x_0, x_1]`, with
  :math:`x_1 = \\min_r e_r` the end of the group's shortest run (the mean is drawn only where
  every run of the group has data) and :math:`x_0` the latest first point of the environment's
  runs (``span="env"``, so every group of an environment starts at the same x) or of the group's
  (``span="group"``); with a 95% percentile-bootstrap confidence band: resample the n seeds
  with replacement 1000 times (a seeded generator), take the mean of each resample, read the
  2.5% and 97.5% quantiles;
- the final value :math:`c_r(e_r)` of each run at its own end (with the steps it reached), their
  mean over seeds and its bootstrap CI. When the runs of a group differ in length this mixes
  budgets: :func:`length_notes` says so, in the table and in the command's warnings;
- steps to threshold: the first x in :math:`[x_0, x_1]` where :math:`\\bar c(x) \\ge`
  threshold (the environment's ``reward_threshold`` by default: 475 for CartPole-v1, -100 for
  Acrobot-v1), exact, found among the points where :math:`\\bar c` changes;
- AUC: the normalised area :math:`\\frac{1}{b - a} \\int_a^b \\bar c(x)\\,dx` (the mean level of
  the curve, in return units), exact for the step function, on the range every run of the
  environment reached (``span="env"``, so areas compare at equal x) or every run of the group
  (``span="group"``); it is the mean of the runs' own areas, which also give it a bootstrap CI.

Aggregates across environments (:func:`aggregate_groups`) follow Agarwal et al. 2021, "Deep RL at
the edge of the statistical precipice": each run's final value is normalised between the
environment's random and reference scores (:func:`load_score_table`,
``rlgrad/data/scores.toml``), and a setting's normalised scores over environments and seeds are
summarised by the interquartile mean, mean, median or optimality gap (:func:`aggregate`), with
95% stratified-bootstrap confidence intervals (:func:`aggregate_interval`), and by performance
profiles (:func:`performance_profile`). The resampling is ``scipy.stats.bootstrap``'s.

matplotlib is imported only to draw, with the Agg canvas (no display); scipy only to aggregate.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Run", "GroupStats", "load_runs", "summarize", "bootstrap_ci", "running_mean",
           "curve_at", "format_table", "length_notes", "plot_groups", "draw_groups",
           "new_figure", "save_figure", "default_threshold",
           "AGGREGATES", "ScoreRange", "DEFAULT_SCORES", "load_score_table", "normalize_score",
           "aggregate", "aggregate_interval", "performance_profile", "AggregateStats",
           "aggregate_groups", "format_aggregate_table", "format_profile_table",
           "draw_aggregates", "draw_profiles", "plot_aggregates"]

_SEED_PART = re.compile(r"^seed(\d+)$")
_EVENT_FILES = "events.out.tfevents*"


@dataclass
class Run:
    """One run's points of one tag: ``steps``, ``seconds`` (since the run's first event) and
    ``values``, all ``(P,)`` and ordered by step; ``end_step`` and ``end_second`` are where the
    run ended, the last step and time of any scalar it wrote (None: its last point)."""

    name: str
    path: Path
    config: dict[str, Any]
    steps: np.ndarray
    seconds: np.ndarray
    values: np.ndarray
    end_step: float | None = None
    end_second: float | None = None

    @property
    def seed(self) -> int | None:
        seed = self.config.get("seed")
        ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
        return int(seed) if ok else None

    @property
    def env_id(self) -> str:
        return str(self.config.get("env_id", ""))

    @property
    def group_key(self) -> str:
        """The configuration without the seed, as a canonical JSON string."""
        return json.dumps({k: v for k, v in self.config.items() if k != "seed"},
                          sort_keys=True, default=str)

    def xs(self, x: str = "step") -> np.ndarray:
        """The points' x: ``steps`` or ``seconds``."""
        return self.steps if x == "step" else self.seconds

    def end(self, x: str = "step") -> float:
        """The x the run reached: its last step (or second), never before its last point."""
        own = self.end_step if x == "step" else self.end_second
        last = float(self.xs(x)[-1])
        return last if own is None else max(float(own), last)


def _config_from_name(name: str) -> dict[str, Any]:
    """``{env}__...__seed{N}`` -> {"env_id": env, "name": name without the seed, "seed": N}."""
    parts = name.split("__")
    seed = None
    rest = []
    for part in parts:
        m = _SEED_PART.match(part)
        if m and seed is None:
            seed = int(m.group(1))
        else:
            rest.append(part)
    config: dict[str, Any] = {"env_id": parts[0] if len(parts) > 1 else "",
                              "name": "__".join(rest)}
    if seed is not None:
        config["seed"] = seed
    return config


class _Unreadable(Exception):
    """A run's file cannot be used; the message names the file and why."""


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _Unreadable(f"cannot read {path} ({_reason(e)})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Unreadable(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise _Unreadable(f"{path} holds a JSON {type(config).__name__}, expected an object")
    return config


def _read_scalars(path: Path, tag: str) -> tuple[list[tuple[float, float, float]], float,
                                                 float, float]:
    """The ``(step, wall_time, value)`` points of ``tag`` in every event file of the run
    directory ``path``, the first event's wall time and the largest step and wall time of any
    scalar.

    Records are read with TensorBoard's own record reader, which checks each one's CRC; a
    corrupt or truncated record makes the run unreadable rather than silently shorter (the
    ``EventAccumulator`` stops at the first bad record without a word)."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    points: list[tuple[float, float, float]] = []
    first_time, last_step, last_time = math.inf, -math.inf, -math.inf
    for file in sorted(path.glob(_EVENT_FILES)):
        try:
            reader = PyRecordReader_New(str(file), 0, None, None)
            while True:
                try:
                    reader.GetNext()
                except errors.OutOfRangeError:
                    break
                event = event_pb2.Event.FromString(reader.record())
                first_time = min(first_time, event.wall_time)
                for value in event.summary.value:
                    if not value.HasField("simple_value"):
                        continue
                    last_step = max(last_step, float(event.step))
                    last_time = max(last_time, event.wall_time)
                    if value.tag == tag:
                        points.append((float(event.step), event.wall_time, value.simple_value))
        except errors.DataLossError as e:
            raise _Unreadable(f"event file {file} is corrupt ({e.message})") from None
        except (OSError, errors.OpError, DecodeError) as e:
            raise _Unreadable(f"cannot read event file {file} ({_reason(e)})") from None
    return points, first_time, last_step, last_time


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(getattr(e, "message", None) or e) or type(e).__name__


def load_runs(logdir: str | os.PathLike[str], tag: str = "charts/episodic_return", *,
              include_incomplete: bool = False,
              on_skip: Callable[[str], None] | None = None) -> list[Run]:
    """Every run under ``logdir`` (each directory holding event files) that has ``tag``.

    The configuration comes from the run's ``config.json``; without one, from its name
    (``...__seed{N}`` names the seed). A directory with a ``config.json`` but no
    ``summary.json`` is a crashed or unfinished run and is left out unless
    ``include_incomplete``. A run whose ``config.json`` is not a JSON object, or whose event
    file cannot be read or is corrupt, is reported as one line to ``on_skip`` and left out; with
    ``on_skip`` None it is a ValueError. Runs are returned sorted by name.
    """
    root = Path(logdir)
    if not root.is_dir():
        raise ValueError(f"logdir {str(logdir)!r} is not a directory")
    dirs = sorted({p.parent for p in root.rglob(_EVENT_FILES)})
    runs = []
    for path in dirs:
        name = str(path.relative_to(root)) if path != root else path.name
        config_file = path / "config.json"
        try:
            if config_file.is_file():
                if not include_incomplete and not (path / "summary.json").is_file():
                    continue
                config = _read_config(config_file)
            else:
                config = _config_from_name(path.name)
            points, start, end_step, end_time = _read_scalars(path, tag)
        except _Unreadable as e:
            message = f"skipped run {name}: {e}"
            if on_skip is None:
                raise ValueError(message) from None
            on_skip(message)
            continue
        if not points:
            continue
        steps = np.array([p[0] for p in points])
        order = np.argsort(steps, kind="stable")
        runs.append(Run(
            name=name, path=path, config=config, steps=steps[order],
            seconds=np.array([p[1] - start for p in points])[order],
            values=np.array([p[2] for p in points], dtype=np.float64)[order],
            end_step=end_step, end_second=end_time - start))
    if not runs:
        raise ValueError(f"no run under {str(logdir)!r} has the scalar {tag!r}")
    return runs


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """``out[i]`` = mean of ``values[max(0, i - window + 1) : i + 1]``, shape ``(P,)``."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    values = np.asarray(values, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(len(values))
    lo = np.maximum(0, i - window + 1)
    return (csum[i + 1] - csum[lo]) / (i + 1 - lo)


def curve_at(xs: np.ndarray, values: np.ndarray, at: np.ndarray, window: int) -> np.ndarray:
    """The run's curve c(x) (running mean of the last ``window`` points with x_i <= x) at
    ``at``; nan before the first point."""
    smooth = running_mean(values, window)
    idx = np.searchsorted(np.asarray(xs), np.asarray(at, dtype=np.float64), side="right") - 1
    out = np.full(np.shape(at), np.nan)
    ok = idx >= 0
    out[ok] = smooth[idx[ok]]
    return out


def bootstrap_ci(samples: Any, confidence: float = 0.95, n_resamples: int = 1000,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap CI of the mean over axis 0 of ``samples`` ``(n, ...)``.

    Resamples the n rows with replacement ``n_resamples`` times with a generator seeded by
    ``seed`` (so the band is reproducible); returns (low, high) of shape ``samples.shape[1:]``.
    With one sample the interval is that sample.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"bootstrap_ci needs at least one sample, got shape {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = x.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    means = x[idx].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low, high


def default_threshold(env_id: str) -> float | None:
    """The environment's ``reward_threshold`` from its Gymnasium spec, if it has one."""
    try:
        import gymnasium as gym

        value = gym.spec(env_id).reward_threshold
    except Exception:  # noqa: BLE001 - unknown or unimportable ids simply have none
        return None
    return None if value is None else float(value)


def _empty() -> np.ndarray:
    return np.zeros(0)


@dataclass
class GroupStats:
    """A group of runs (same configuration, several seeds) and its statistics.

    ``x``, ``mean``, ``low``, ``high`` are the plotted mean curve ``(points,)``, over the x every
    run reached (empty if there is none); ``finals`` the value of each run at its own end
    ``(n,)``, ``ends`` that end in the x unit and ``end_steps`` in steps ``(n,)``;
    ``run_curves`` each run's own step curve ``(x, c_r(x))`` from its first point to its end;
    ``auc_range`` the x range of the AUC.
    """

    env_id: str
    label: str
    config: dict[str, Any]
    runs: list[str]
    seeds: list[int | None]
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    finals: np.ndarray
    final_mean: float
    final_low: float
    final_high: float
    threshold: float | None
    steps_to_threshold: float | None
    auc: float
    aucs: np.ndarray
    auc_low: float
    auc_high: float
    x_axis: str = "step"
    extra: dict[str, Any] = field(default_factory=dict)
    ends: np.ndarray = field(default_factory=_empty)
    end_steps: np.ndarray = field(default_factory=_empty)
    run_curves: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    auc_range: tuple[float, float] = (math.nan, math.nan)

    @property
    def unequal_length(self) -> bool:
        """Whether the group's runs reached different numbers of steps."""
        return self.end_steps.size > 0 and bool(self.end_steps.min() != self.end_steps.max())


def summarize(runs: Sequence[Run], *, window: int = 20, threshold: float | None = None,
              points: int = 100, x: str = "step", span: str = "env",
              n_resamples: int = 1000, seed: int = 0) -> list[GroupStats]:
    """Group ``runs`` by configuration without the seed and compute each group's statistics
    (see the module docstring). ``x`` is ``"step"`` or ``"time"`` (seconds since the run's
    start). ``span="env"`` starts every group of an environment at the same x and takes every
    AUC of an environment over the range all its runs reached, so areas compare at equal x;
    ``"group"`` gives each group its own (for wall time, where runs of different settings last
    differently long). ``threshold`` None means each environment's ``reward_threshold``.
    Groups come in the order of their first run."""
    if x not in ("step", "time"):
        raise ValueError(f"x must be 'step' or 'time', got {x!r}")
    if span not in ("env", "group"):
        raise ValueError(f"span must be 'env' or 'group', got {span!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    if not runs:
        raise ValueError("summarize needs at least one run")
    running_mean(np.zeros(1), window)  # checks window
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    by_env: dict[str, list[list[Run]]] = {}
    for members in groups.values():
        by_env.setdefault(members[0].env_id, []).append(members)

    out = []
    for env_id, env_groups in by_env.items():
        env_runs = [r for g in env_groups for r in g]
        labels = _labels([g[0].config for g in env_groups])
        thr = threshold if threshold is not None else default_threshold(env_id)
        env_lo = max(float(r.xs(x)[0]) for r in env_runs)
        env_hi = min(r.end(x) for r in env_runs)
        for members, label in zip(env_groups, labels):
            out.append(_group_stats(env_id, label, members, x, window, points, thr,
                                    env_lo if span == "env" else None,
                                    (env_lo, env_hi) if span == "env" else None,
                                    n_resamples, seed))
    return out


def _group_stats(env_id: str, label: str, members: list[Run], x: str, window: int,
                 points: int, thr: float | None, start: float | None,
                 auc_range: tuple[float, float] | None, n_resamples: int,
                 seed: int) -> GroupStats:
    xs = [r.xs(x) for r in members]
    ends = np.array([r.end(x) for r in members])
    x0 = start if start is not None else max(float(v[0]) for v in xs)
    x1 = float(ends.min())  # the mean stops where the group's shortest run ended
    if x0 <= x1:
        grid = np.linspace(x0, x1, points)
        curves = np.stack([curve_at(v, r.values, grid, window) for v, r in zip(xs, members)])
        low, high = bootstrap_ci(curves, n_resamples=n_resamples, seed=seed)
        mean = curves.mean(axis=0)
        # the group mean is a step function: its exact crossing from its breakpoints
        breaks = np.unique(np.concatenate([[x0]] + [v[(v > x0) & (v <= x1)] for v in xs]))
        level = np.mean([curve_at(v, r.values, breaks, window) for v, r in zip(xs, members)],
                        axis=0)
        hits = np.flatnonzero(level >= thr) if thr is not None else np.zeros(0, dtype=int)
        reached = float(breaks[hits[0]]) if hits.size else None
    else:  # no x that every run of the group reached
        grid = mean = low = high = np.zeros(0)
        reached = None
    finals = np.array([curve_at(v, r.values, np.array([e]), window)[0]
                       for v, r, e in zip(xs, members, ends)])
    f_low, f_high = bootstrap_ci(finals, n_resamples=n_resamples, seed=seed)
    a0, a1 = auc_range if auc_range is not None else (x0, x1)
    if a0 <= a1:
        aucs = np.array([_area(v, r.values, a0, a1, window) for v, r in zip(xs, members)])
        a_low, a_high = bootstrap_ci(aucs, n_resamples=n_resamples, seed=seed)
        auc = float(aucs.mean())
    else:
        aucs = np.full(len(members), np.nan)
        auc = a_low = a_high = math.nan
    run_curves = []
    for v, r, e in zip(xs, members, ends):
        smooth = running_mean(r.values, window)
        run_curves.append((np.append(v, e), np.append(smooth, smooth[-1])))
    return GroupStats(
        env_id=env_id, label=label,
        config={k: v for k, v in members[0].config.items() if k != "seed"},
        runs=[r.name for r in members], seeds=[r.seed for r in members], x=grid,
        mean=mean, low=low, high=high, finals=finals, final_mean=float(finals.mean()),
        final_low=float(f_low), final_high=float(f_high), threshold=thr,
        steps_to_threshold=reached, auc=auc, aucs=aucs, auc_low=float(a_low),
        auc_high=float(a_high), x_axis=x, ends=ends,
        end_steps=np.array([r.end("step") for r in members]), run_curves=run_curves,
        auc_range=(float(a0), float(a1)))


def _area(xs: np.ndarray, values: np.ndarray, x0: float, x1: float, window: int) -> float:
    """(1 / (x1 - x0)) * integral of the run's step-function curve over [x0, x1]."""
    breaks = np.concatenate([[x0], xs[(xs > x0) & (xs <= x1)]])
    level = curve_at(xs, values, breaks, window)
    if x1 <= x0:
        return float(level[0])
    return float(level @ np.diff(np.append(breaks, x1)) / (x1 - x0))


def _labels(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Name each group by the settings that differ between the groups."""
    keys = []
    for k in configs[0]:
        if k in ("seed", "env_id", "run_dir"):
            continue
        if len({json.dumps(c.get(k), default=str) for c in configs}) > 1:
            keys.append(k)
    for c in configs[1:]:
        for k in c:
            if k not in keys and k not in configs[0] and k != "seed":
                keys.append(k)
    if not keys:
        c = configs[0]
        return [str(c.get("agent", c.get("name", c.get("env_id", "run"))))] * len(configs)
    labels = []
    for c in configs:
        parts = []
        for k in keys:
            v = c.get(k)
            if k == "name":
                parts.append(str(v))
            elif k in ("optimizer", "agent"):
                parts.append(str(v))
            else:
                parts.append(f"{k}={_short(v)}")
        labels.append(" ".join(parts))
    return labels


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "x".join(_short(i) for i in v)
    return str(v)


def _num(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:,.{digits}f}"


def _x_num(v: float, x_axis: str) -> str:
    return _num(v, 0 if x_axis == "step" else 1)


def _name(s: GroupStats) -> str:
    return f"{s.env_id} {s.label}" if s.env_id else s.label


def _length_note(s: GroupStats) -> str | None:
    if not s.unequal_length:
        return None
    unit = "steps" if s.x_axis == "step" else "s"
    head = (f"runs of {_name(s)} differ in length ({_num(s.end_steps.min(), 0)} to "
            f"{_num(s.end_steps.max(), 0)} steps)")
    if s.x.size == 0:
        return f"{head}: no x was reached by all of them, so there is no mean curve"
    return (f"{head}: the mean curve and steps to threshold stop at "
            f"{_x_num(float(s.x[-1]), s.x_axis)} {unit}, where the shortest ended; each run's "
            f"final value is read at its own last step")


def _auc_note(s: GroupStats) -> str | None:
    a0, a1 = s.auc_range
    unit = "steps" if s.x_axis == "step" else "s"
    if math.isnan(s.auc):
        return f"no x was reached by every run of {s.env_id or 'the environment'}: no AUC"
    if s.x.size and a1 < s.x[-1]:
        return (f"AUC over [{_x_num(a0, s.x_axis)}, {_x_num(a1, s.x_axis)}] {unit}, the range "
                f"every run of {s.env_id or 'the environment'} reached")
    return None


def length_notes(stats: Sequence[GroupStats]) -> list[str]:
    """One line for each group whose runs differ in length: where its mean curve stops."""
    return [n for n in map(_length_note, stats) if n is not None]


def format_table(stats: Sequence[GroupStats], digits: int = 1) -> str:
    """A Markdown table: env, group, seeds, steps reached, final value [95% CI], steps to
    threshold, AUC [95% CI]; numbered notes under it for groups whose runs differ in length
    and AUCs taken over a shorter range than the group's curve."""
    x_unit = "s" if stats and stats[0].x_axis == "time" else "steps"
    rows = ["| env | group | seeds | steps reached | final [95% CI] | "
            f"{x_unit} to threshold | AUC [95% CI] |", "|-|-|-|-|-|-|-|"]
    notes: list[str] = []

    def mark(note: str | None) -> str:
        if note is None:
            return ""
        if note not in notes:
            notes.append(note)
        return f" ({notes.index(note) + 1})"

    for s in stats:
        if s.threshold is None:
            reached = "—"
        elif s.steps_to_threshold is None:
            reached = f"never (≥ {s.threshold:g})"
        else:
            reached = f"{_x_num(s.steps_to_threshold, s.x_axis)} (≥ {s.threshold:g})"
        if s.end_steps.size == 0:
            ends = "—"
        elif s.unequal_length:
            ends = f"{_num(s.end_steps.min(), 0)}–{_num(s.end_steps.max(), 0)}"
        else:
            ends = _num(s.end_steps[0], 0)
        rows.append(f"| {s.env_id} | {s.label} | {len(s.runs)} | {ends}{mark(_length_note(s))} "
                    f"| {_num(s.final_mean, digits)} [{_num(s.final_low, digits)}, "
                    f"{_num(s.final_high, digits)}] | {reached} | "
                    f"{_num(s.auc, digits)} [{_num(s.auc_low, digits)}, "
                    f"{_num(s.auc_high, digits)}]{mark(_auc_note(s))} |")
    table = "\n".join(rows)
    if notes:
        table += "\n\n" + "\n".join(f"({i}) {n}" for i, n in enumerate(notes, 1))
    return table


# ---- aggregates across environments (Agarwal et al. 2021) ---------------------------------

AGGREGATES = ("iqm", "mean", "median", "optimality_gap")
DEFAULT_SCORES = Path(__file__).resolve().parent / "data" / "scores.toml"


@dataclass(frozen=True)
class ScoreRange:
    """An environment's random and reference scores and the file they come from."""

    random: float
    reference: float
    source: str


def load_score_table(path: str | os.PathLike[str] | None = None) -> dict[str, ScoreRange]:
    """The random and reference score of each environment: ``rlgrad/data/scores.toml``, with the
    entries of ``path`` (same form: a table ``["Env-v0"]`` with ``random = ...`` and
    ``reference = ...``) added or replacing."""
    table = _read_score_file(DEFAULT_SCORES)
    if path is not None:
        table.update(_read_score_file(Path(path)))
    return table


def _read_score_file(path: Path) -> dict[str, ScoreRange]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError as e:
            raise ImportError("reading score tables on Python 3.10 needs tomli") from e
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read score table {path} ({_reason(e)})") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"score table {path} is not valid TOML ({e})") from None
    table = {}
    for env_id, entry in data.items():
        if not isinstance(entry, dict) or set(entry) != {"random", "reference"}:
            raise ValueError(f"score table {path}: [{env_id!r}] must hold exactly 'random' and "
                             f"'reference', got {entry!r}")
        values = []
        for key in ("random", "reference"):
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"score table {path}: [{env_id!r}] {key} must be a finite "
                                 f"number, got {v!r}")
            values.append(float(v))
        if values[0] == values[1]:
            raise ValueError(f"score table {path}: [{env_id!r}] random and reference are both "
                             f"{values[0]:g}; normalising needs them apart")
        table[env_id] = ScoreRange(values[0], values[1], str(path))
    return table


def normalize_score(value: Any, random: float, reference: float) -> np.ndarray:
    """.. math:: \\tilde s = \\frac{s - s_{\\text{random}}}{s_{\\text{reference}} -
                 s_{\\text{random}}}

    0 for the random policy, 1 for the reference."""
    return (np.asarray(value, dtype=np.float64) - random) / (reference - random)


def _statistic(metric: str, gamma: float) -> Callable[..., np.ndarray]:
    """The aggregate of normalised scores ``s_{e,i}`` (env e, run i), one array per env, along
    the last axis (so it also takes batches of resamples):

    - iqm: the mean of the middle 50% of all runs' scores (``trim_mean(..., 0.25)``: a quarter
      of the runs, rounded down, cut at each end);
    - mean: the mean over envs of each env's mean score;
    - median: the median over envs of each env's mean score;
    - optimality_gap: :math:`\\gamma - \\frac1N \\sum_{e,i} \\min(s_{e,i}, \\gamma)`, how far
      the runs fall short of :math:`\\gamma` (lower is better).

    These are rliable's definitions (Agarwal et al. 2021); iqm and the optimality gap pool the
    runs, so with unequal numbers of runs per env each env weighs by its run count."""
    from scipy.stats import trim_mean

    def pooled(samples: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(samples, axis=-1)

    def env_means(samples: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([s.mean(axis=-1) for s in samples], axis=-1)

    stats = {
        "iqm": lambda *s, axis=-1: trim_mean(pooled(s), 0.25, axis=-1),
        "mean": lambda *s, axis=-1: env_means(s).mean(axis=-1),
        "median": lambda *s, axis=-1: np.median(env_means(s), axis=-1),
        "optimality_gap": lambda *s, axis=-1: gamma - np.minimum(pooled(s), gamma).mean(-1),
    }
    if metric not in stats:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {metric!r}")
    return stats[metric]


def _check_scores(scores: Sequence[Any]) -> list[np.ndarray]:
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    if not arrays or any(a.ndim != 1 or a.size == 0 for a in arrays):
        raise ValueError("scores must be one non-empty 1-d array of runs per environment, got "
                         f"shapes {[a.shape for a in arrays]}")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("scores must be finite")
    return arrays


def aggregate(scores: Sequence[Any], metric: str = "iqm", *, gamma: float = 1.0) -> float:
    """The aggregate ``metric`` (one of :data:`AGGREGATES`, see :func:`_statistic`) of
    normalised scores given as one array of runs per environment."""
    return float(_statistic(metric, gamma)(*_check_scores(scores)))


def _stratified_bootstrap(scores: list[np.ndarray], statistic: Callable[..., np.ndarray],
                          confidence: float, n_resamples: int, seed: int,
                          batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of ``statistic`` by ``scipy.stats.bootstrap`` with one sample per env and
    ``paired=False``: each env's runs are resampled with replacement within the env (the
    stratified bootstrap). An env with one run resamples to itself, so it is held fixed (scipy
    needs two observations per sample); with no env of two runs there is no interval (nan)."""
    from scipy.stats import bootstrap

    varied = [s for s in scores if s.size >= 2]
    fixed = [s for s in scores if s.size < 2]
    if not varied:
        nan = np.full(np.shape(statistic(*scores)), np.nan)
        return nan, nan

    def resampled(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        shape = samples[0].shape[:-1]
        held = [np.broadcast_to(s, shape + s.shape) for s in fixed]
        return statistic(*samples, *held, axis=-1)

    res = bootstrap(tuple(varied), resampled, paired=False, vectorized=True, axis=-1,
                    method="percentile", confidence_level=confidence,
                    n_resamples=n_resamples, batch=batch, rng=np.random.default_rng(seed))
    return np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)


def _check_bootstrap(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")


def aggregate_interval(scores: Sequence[Any], metric: str = "iqm", *, confidence: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0,
                       gamma: float = 1.0) -> tuple[float, float, float]:
    """``(estimate, low, high)``: :func:`aggregate` and its stratified-bootstrap percentile
    confidence interval (see :func:`_stratified_bootstrap`), reproducible for a ``seed``."""
    _check_bootstrap(confidence, n_resamples)
    arrays = _check_scores(scores)
    statistic = _statistic(metric, gamma)
    low, high = _stratified_bootstrap(arrays, statistic, confidence, n_resamples, seed)
    return float(statistic(*arrays)), float(low), float(high)


def performance_profile(scores: Sequence[Any], taus: Any, *, confidence: float = 0.95,
                        n_resamples: int = 2000, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The score distribution (Agarwal et al.'s run-score performance profile) at each
    threshold in ``taus`` ``(T,)``, the fraction of all runs scoring above it,

    .. math:: \\hat F(\\tau) = \\frac1N \\sum_{e,i} 1[s_{e,i} > \\tau],

    and its pointwise stratified-bootstrap confidence band: ``(fraction, low, high)``, each
    ``(T,)``."""
    _check_bootstrap(confidence, n_resamples)
    arrays = _check_scores(scores)
    taus = np.asarray(taus, dtype=np.float64)
    if taus.ndim != 1 or taus.size == 0 or not np.isfinite(taus).all():
        raise ValueError(f"taus must be a non-empty 1-d array of finite numbers, got {taus!r}")

    def fraction(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        runs = np.concatenate(samples, axis=-1)
        above = (runs[..., None, :] > taus[:, None]).mean(axis=-1)  # (..., T)
        return np.moveaxis(above, -1, 0)  # scipy wants the resamples on the last axis

    n = sum(a.size for a in arrays)
    batch = max(1, 2**24 // (n * taus.size))  # bounds the (batch, T, N) comparison
    low, high = _stratified_bootstrap(arrays, fraction, confidence, n_resamples, seed, batch)
    return fraction(*arrays), low, high


@dataclass
class AggregateStats:
    """One setting (configuration without seed and environment) over environments: the
    normalised final score of each run by env, each aggregate ``metric -> (estimate, low,
    high)``, and the performance profile at ``taus`` if asked for."""

    label: str
    config: dict[str, Any]
    scores: dict[str, np.ndarray]
    runs: dict[str, list[str]]
    estimates: dict[str, tuple[float, float, float]]
    taus: np.ndarray = field(default_factory=_empty)
    profile: np.ndarray = field(default_factory=_empty)
    profile_low: np.ndarray = field(default_factory=_empty)
    profile_high: np.ndarray = field(default_factory=_empty)

    @property
    def envs(self) -> list[str]:
        return list(self.scores)

    @property
    def n_runs(self) -> int:
        return sum(s.size for s in self.scores.values())


def _setting(s: GroupStats) -> dict[str, Any]:
    """A group's configuration without what names its environment."""
    config = {k: v for k, v in s.config.items() if k not in ("seed", "env_id", "run_dir")}
    name = config.get("name")
    if isinstance(name, str) and s.env_id and name.startswith(s.env_id + "__"):
        config["name"] = name[len(s.env_id) + 2:]  # runs named {env}__... without config.json
    return config


def aggregate_groups(stats: Sequence[GroupStats], table: Mapping[str, ScoreRange], *,
                     metrics: Sequence[str] = ("iqm",), profile: bool = False,
                     taus: Any = None, confidence: float = 0.95, n_resamples: int = 2000,
                     seed: int = 0) -> list[AggregateStats]:
    """Aggregate each setting's runs over environments and seeds.

    A run's score is its final value (``GroupStats.finals``: the running mean at its own last
    step), normalised by :func:`normalize_score` with its environment's entry in ``table``.
    Groups of :func:`summarize` whose configurations differ only in the environment form one
    setting. ``taus`` None: 101 points from min(0, lowest score) to max(1, highest score), the
    same for every setting. Settings come in the order of their first group."""
    for m in metrics:
        _statistic(m, 1.0)  # checks the name
    if not stats:
        raise ValueError("nothing to aggregate: no groups")
    missing = sorted({s.env_id for s in stats if s.env_id not in table})
    if missing:
        sources = sorted({r.source for r in table.values()}) or [str(DEFAULT_SCORES)]
        raise ValueError(
            f"no random and reference score for {', '.join(map(repr, missing))} in "
            f"{' or '.join(sources)}; give them in a TOML file (--scores FILE) with a table "
            f"[\"{missing[0]}\"] holding random = ... and reference = ...")
    settings: dict[str, list[GroupStats]] = {}
    for s in stats:
        if not math.isfinite(s.final_mean) or not np.isfinite(s.finals).all():
            raise ValueError(f"a run of {_name(s)} has a non-finite final value "
                             f"({', '.join(s.runs)}); cannot aggregate it")
        key = json.dumps(_setting(s), sort_keys=True, default=str)
        settings.setdefault(key, []).append(s)
    groups = list(settings.values())
    labels = _labels([_setting(g[0]) for g in groups])
    out = []
    for label, members in zip(labels, groups):
        scores = {s.env_id: normalize_score(s.finals, table[s.env_id].random,
                                            table[s.env_id].reference) for s in members}
        estimates = {m: aggregate_interval(list(scores.values()), m, confidence=confidence,
                                           n_resamples=n_resamples, seed=seed)
                     for m in metrics}
        out.append(AggregateStats(label=label, config=_setting(members[0]), scores=scores,
                                  runs={s.env_id: list(s.runs) for s in members},
                                  estimates=estimates))
    if profile:
        if taus is None:
            every = np.concatenate([v for a in out for v in a.scores.values()])
            taus = np.linspace(min(0.0, every.min()), max(1.0, every.max()), 101)
        for a in out:
            a.taus = np.asarray(taus, dtype=np.float64)
            a.profile, a.profile_low, a.profile_high = performance_profile(
                list(a.scores.values()), a.taus, confidence=confidence,
                n_resamples=n_resamples, seed=seed)
    return out


_METRIC_NAMES = {"iqm": "IQM", "mean": "mean", "median": "median",
                 "optimality_gap": "optimality gap"}


def format_aggregate_table(aggs: Sequence[AggregateStats], digits: int = 3) -> str:
    """A Markdown table: setting, environments, runs, then each aggregate of normalised
    scores with its 95% stratified-bootstrap CI; a note under it when the settings cover
    different environments (their aggregates then do not compare)."""
    metrics = list(aggs[0].estimates) if aggs else []
    head = "| setting | envs | runs |" + "".join(f" {_METRIC_NAMES[m]} [95% CI] |"
                                                 for m in metrics)
    rows = [head, "|-|-|-|" + "-|" * len(metrics)]
    for a in aggs:
        cells = "".join(f" {_num(e, digits)} [{_num(lo, digits)}, {_num(hi, digits)}] |"
                        for e, lo, hi in a.estimates.values())
        rows.append(f"| {a.label} | {len(a.envs)} | {a.n_runs} |{cells}")
    notes = []
    if len({tuple(sorted(a.envs)) for a in aggs}) > 1:
        notes.append("the settings cover different environments: "
                     + "; ".join(f"{a.label}: {', '.join(a.envs)}" for a in aggs))
    if any(math.isnan(lo) for a in aggs for _, lo, _ in a.estimates.values()):
        notes.append("— : no interval with a single run per environment")
    notes.append("scores normalised as (final - random) / (reference - random); lower is "
                 "better for the optimality gap" if "optimality_gap" in metrics else
                 "scores normalised as (final - random) / (reference - random)")
    return "\n".join(rows) + "\n\n" + "\n".join(notes)


def format_profile_table(aggs: Sequence[AggregateStats], taus: Sequence[float] = (
        0.0, 0.25, 0.5, 0.75, 1.0), digits: int = 2) -> str:
    """The performance profiles at a few thresholds: the fraction of runs with normalised
    score > tau [95% CI], computed afresh at exactly these taus."""
    rows = ["| setting |" + "".join(f" > {t:g} [95% CI] |" for t in taus),
            "|-|" + "-|" * len(taus)]
    for a in aggs:
        frac, low, high = performance_profile(list(a.scores.values()), taus)
        rows.append(f"| {a.label} |" + "".join(
            f" {_num(float(f), digits)} [{_num(float(lo), digits)}, {_num(float(hi), digits)}] |"
            for f, lo, hi in zip(frac, low, high)))
    return "\n".join(rows)


# ---- drawing ------------------------------------------------------------------------------


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.0, 4.0)) -> Any:
    """A matplotlib Figure on the Agg canvas (no display, no global pyplot state) and its
    axes array ``(nrows, ncols)``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Any, out: str | os.PathLike[str], dpi: int = 110, *,
                parents: bool = True) -> Path:
    """Write ``fig`` as a PNG to ``out``; ``parents`` creates missing directories (else a
    missing directory is the OSError of opening the file)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"the figure is written as PNG; give a .png file, got {str(out)!r}")
    if parents:
        out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def draw_groups(ax: Any, stats: Sequence[GroupStats], *, ylabel: str = "episodic return",
                title: str | None = None, threshold: bool = True, runs: bool = True) -> None:
    """Each group's mean curve and its 95% band on ``ax``, over the x all its runs reached,
    and (``runs``) each run's own curve to its end as a thin line."""
    alpha = 0.18 if len(stats) <= 4 else 0.08  # many bands on top of each other turn to mud
    for s in stats:
        (line,) = ax.plot(s.x, s.mean, label=f"{s.label} (n={len(s.runs)})", lw=1.6)
        ax.fill_between(s.x, s.low, s.high, color=line.get_color(), alpha=alpha, lw=0)
        if runs:
            for rx, ry in s.run_curves:
                ax.plot(rx, ry, color=line.get_color(), lw=0.6, alpha=0.45,
                        drawstyle="steps-post")
    if threshold and stats and stats[0].threshold is not None:
        ax.axhline(stats[0].threshold, color="grey", ls=":", lw=1)
    ax.set_xlabel("environment steps" if not stats or stats[0].x_axis == "step"
                  else "wall time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else (stats[0].env_id if stats else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def plot_groups(stats: Sequence[GroupStats], out: str | os.PathLike[str], *,
                ylabel: str = "episodic return", parents: bool = True) -> Path:
    """One panel per environment with every group's mean and 95% band and each run's own
    curve; writes a PNG."""
    if not stats:
        raise ValueError("nothing to plot: no groups")
    envs: dict[str, list[GroupStats]] = {}
    for s in stats:
        envs.setdefault(s.env_id, []).append(s)
    fig, axes = new_figure(ncols=len(envs))
    for ax, (env_id, groups) in zip(axes[0], envs.items()):
        draw_groups(ax, groups, ylabel=ylabel, title=env_id or None)
    return save_figure(fig, out, parents=parents)


def draw_aggregates(ax: Any, aggs: Sequence[AggregateStats], metric: str) -> None:
    """Each setting's ``metric`` of normalised scores as a point with its 95% CI bar."""
    ys = np.arange(len(aggs))[::-1]
    for y, a, color in zip(ys, aggs, _colors(len(aggs))):
        est, lo, hi = a.estimates[metric]
        if not math.isnan(lo):
            ax.hlines(y, lo, hi, color=color, lw=5, alpha=0.45)
        ax.plot([est], [y], "|", color=color, ms=14, mew=2)
    ax.set_yticks(ys, [a.label for a in aggs])
    ax.set_ylim(-0.7, len(aggs) - 0.3)
    ax.set_title(_METRIC_NAMES[metric] + (" (lower is better)" if metric == "optimality_gap"
                                          else ""))
    ax.set_xlabel("normalised score")
    ax.grid(alpha=0.3, axis="x")


def draw_profiles(ax: Any, aggs: Sequence[AggregateStats]) -> None:
    """Each setting's performance profile with its 95% band."""
    for a, color in zip(aggs, _colors(len(aggs))):
        ax.plot(a.taus, a.profile, color=color, lw=1.6, label=f"{a.label} (n={a.n_runs})")
        if not np.isnan(a.profile_low).any():
            ax.fill_between(a.taus, a.profile_low, a.profile_high, color=color, alpha=0.18,
                            lw=0)
    ax.set_xlabel(r"normalised score $\tau$")
    ax.set_ylabel(r"fraction of runs with score $> \tau$")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("performance profile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_aggregates(aggs: Sequence[AggregateStats], out: str | os.PathLike[str], *,
                    parents: bool = True) -> Path:
    """One panel per aggregate (points with CI bars per setting) and, if the settings have
    profiles, the performance-profile panel; writes a PNG."""
    if not aggs:
        raise ValueError("nothing to plot: no settings")
    metrics = list(aggs[0].estimates)
    profile = aggs[0].taus.size > 0
    ncols = len(metrics) + profile
    if ncols == 0:
        raise ValueError("nothing to plot: no aggregate and no profile")
    fig, axes = new_figure(ncols=ncols, size=(4.0, 1.2 + 0.45 * max(len(aggs), 4)))
    for ax, metric in zip(axes[0], metrics):
        draw_aggregates(ax, aggs, metric)
    if profile:
        draw_profiles(axes[0, -1], aggs)
    return save_figure(fig, out, parents=parents)
