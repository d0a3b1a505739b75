"""Learning curves over seeds from TensorBoard event files: a figure and a table.

:func:`load_runs` reads every run under a directory with TensorBoard's own
``EventAccumulator``. :func:`summarize` groups runs whose configuration (``config.json``, or the
run name) differs only in the seed, and for each group computes

- each run's curve: the running mean of the last ``window`` points of the tag (episodic returns
  by default) at x, a step function of x (environment steps, or seconds since the run started),
  held between points:

  .. math:: c_r(x) = \\frac{1}{|W_r(x)|} \\sum_{i \\in W_r(x)} y_{r,i}, \\qquad
            W_r(x) = \\text{the last } \\min(\\text{window}, \\#\\{i : x_{r,i} \\le x\\})
            \\text{ points with } x_{r,i} \\le x

- the mean over seeds :math:`\\bar c(x) = \\frac1n \\sum_r c_r(x)` on a common range
  :math:`[x_0, x_1]` of each environment's runs (:math:`x_0` the latest first point, :math:`x_1`
  the earliest last point, so every curve is defined and no run is extrapolated; or each
  group's own range, ``span="group"``), with a 95%
  percentile-bootstrap confidence band: resample the n seeds with replacement 1000 times (a
  seeded generator), take the mean of each resample, read the 2.5% and 97.5% quantiles;
- the final value :math:`c_r(x_1)` of each run, its mean over seeds and bootstrap CI;
- steps to threshold: the first x where :math:`\\bar c(x) \\ge` threshold (the environment's
  ``reward_threshold`` by default: 475 for CartPole-v1, -100 for Acrobot-v1), exact, found
  among the points where :math:`\\bar c` changes;
- AUC: the normalised area :math:`\\frac{1}{x_1 - x_0} \\int_{x_0}^{x_1} \\bar c(x)\\,dx`
  (the mean level of the curve, in return units), exact for the step function; it is the mean
  of the runs' own areas, which also give it a bootstrap CI.

matplotlib (the ``plot`` extra) is imported only to draw, with the Agg canvas (no display).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Run", "GroupStats", "load_runs", "summarize", "bootstrap_ci", "running_mean",
           "curve_at", "format_table", "plot_groups", "draw_groups", "new_figure",
           "save_figure", "default_threshold"]

_SEED_PART = re.compile(r"^seed(\d+)$")


@dataclass
class Run:
    """One run's points of one tag: ``steps``, ``seconds`` (since the run's first event) and
    ``values``, all ``(P,)`` and ordered by step."""

    name: str
    path: Path
    config: dict[str, Any]
    steps: np.ndarray
    seconds: np.ndarray
    values: np.ndarray

    @property
    def seed(self) -> int | None:
        seed = self.config.get("seed")
        return int(seed) if isinstance(seed, (int, np.integer)) else None

    @property
    def env_id(self) -> str:
        return str(self.config.get("env_id", ""))

    @property
    def group_key(self) -> str:
        """The configuration without the seed, as a canonical JSON string."""
        return json.dumps({k: v for k, v in self.config.items() if k != "seed"},
                          sort_keys=True, default=str)


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


def load_runs(logdir: str | os.PathLike[str], tag: str = "charts/episodic_return", *,
              include_incomplete: bool = False) -> list[Run]:
    """Every run under ``logdir`` (each directory holding event files) that has ``tag``.

    The configuration comes from the run's ``config.json``; without one, from its name
    (``...__seed{N}`` names the seed). A directory with a ``config.json`` but no
    ``summary.json`` is a crashed or unfinished run and is left out unless
    ``include_incomplete``. Runs are returned sorted by name.
    """
    from tensorboard.backend.event_processing import event_accumulator

    root = Path(logdir)
    if not root.is_dir():
        raise ValueError(f"logdir {str(logdir)!r} is not a directory")
    dirs = sorted({p.parent for p in root.rglob("events.out.tfevents*")})
    runs = []
    for path in dirs:
        config_file = path / "config.json"
        if config_file.is_file():
            if not include_incomplete and not (path / "summary.json").is_file():
                continue
            config = json.loads(config_file.read_text())
        else:
            config = _config_from_name(path.name)
        acc = event_accumulator.EventAccumulator(
            str(path), size_guidance={event_accumulator.SCALARS: 0,
                                      event_accumulator.TENSORS: 1})
        acc.Reload()
        if tag not in acc.Tags().get("scalars", []):
            continue
        events = acc.Scalars(tag)
        steps = np.array([e.step for e in events], dtype=np.float64)
        order = np.argsort(steps, kind="stable")
        start = acc.FirstEventTimestamp()
        runs.append(Run(
            name=str(path.relative_to(root)) if path != root else path.name,
            path=path, config=config, steps=steps[order],
            seconds=np.array([e.wall_time - start for e in events])[order],
            values=np.array([e.value for e in events], dtype=np.float64)[order]))
    if not runs:
        raise ValueError(f"no run under {str(logdir)!r} has the scalar {tag!r}")
    return runs


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """``out[i]`` = mean of ``values[max(0, i - window + 1) : i + 1]``, shape ``(P,)``."""
    if not isinstance(window, int) or window < 1:
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


@dataclass
class GroupStats:
    """A group of runs (same configuration, several seeds) and its statistics.

    ``x``, ``mean``, ``low``, ``high`` are the plotted curve ``(points,)``; ``finals`` the
    final value of each run ``(n,)``.
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


def summarize(runs: Sequence[Run], *, window: int = 20, threshold: float | None = None,
              points: int = 100, x: str = "step", span: str = "env",
              n_resamples: int = 1000, seed: int = 0) -> list[GroupStats]:
    """Group ``runs`` by configuration without the seed and compute each group's statistics
    (see the module docstring). ``x`` is ``"step"`` or ``"time"`` (seconds since the run's
    start). ``span="env"`` puts every group of an environment on one range [x0, x1], so their
    final values and areas compare at equal x; ``"group"`` gives each group its own (for wall
    time, where runs of different settings last differently long). ``threshold`` None means
    each environment's ``reward_threshold``. Groups come in the order of their first run."""
    if x not in ("step", "time"):
        raise ValueError(f"x must be 'step' or 'time', got {x!r}")
    if span not in ("env", "group"):
        raise ValueError(f"span must be 'env' or 'group', got {span!r}")
    if not isinstance(points, int) or points < 2:
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
        xs_of = {id(r): (r.steps if x == "step" else r.seconds) for r in env_runs}
        labels = _labels([g[0].config for g in env_groups])
        thr = threshold if threshold is not None else default_threshold(env_id)
        for members, label in zip(env_groups, labels):
            spanned = env_runs if span == "env" else members
            x0 = max(float(xs_of[id(r)][0]) for r in spanned)
            x1 = max(x0, min(float(xs_of[id(r)][-1]) for r in spanned))
            grid = np.linspace(x0, x1, points)
            curves = np.stack([curve_at(xs_of[id(r)], r.values, grid, window) for r in members])
            low, high = bootstrap_ci(curves, n_resamples=n_resamples, seed=seed)
            finals = np.array([curve_at(xs_of[id(r)], r.values, np.array([x1]), window)[0]
                               for r in members])
            f_low, f_high = bootstrap_ci(finals, n_resamples=n_resamples, seed=seed)
            # the group mean is a step function: exact crossing and area from its breakpoints
            breaks = np.unique(np.concatenate(
                [[x0]] + [xs_of[id(r)][(xs_of[id(r)] > x0) & (xs_of[id(r)] <= x1)]
                          for r in members]))
            level = np.mean([curve_at(xs_of[id(r)], r.values, breaks, window) for r in members],
                            axis=0)
            reached = None
            if thr is not None:
                hits = np.flatnonzero(level >= thr)
                reached = float(breaks[hits[0]]) if hits.size else None
            aucs = np.array([_area(xs_of[id(r)], r.values, x0, x1, window) for r in members])
            a_low, a_high = bootstrap_ci(aucs, n_resamples=n_resamples, seed=seed)
            out.append(GroupStats(
                env_id=env_id, label=label,
                config={k: v for k, v in members[0].config.items() if k != "seed"},
                runs=[r.name for r in members], seeds=[r.seed for r in members], x=grid,
                mean=curves.mean(axis=0), low=low, high=high, finals=finals,
                final_mean=float(finals.mean()), final_low=float(f_low),
                final_high=float(f_high), threshold=thr, steps_to_threshold=reached,
                auc=float(aucs.mean()), aucs=aucs, auc_low=float(a_low), auc_high=float(a_high),
                x_axis=x))
    return out


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


def format_table(stats: Sequence[GroupStats], digits: int = 1) -> str:
    """A Markdown table: env, group, seeds, final value [95% CI], steps to threshold,
    AUC [95% CI]."""
    x_unit = "s" if stats and stats[0].x_axis == "time" else "steps"
    rows = ["| env | group | seeds | final [95% CI] | "
            f"{x_unit} to threshold | AUC [95% CI] |", "|-|-|-|-|-|-|"]
    for s in stats:
        if s.threshold is None:
            reached = "—"
        elif s.steps_to_threshold is None:
            reached = f"never (≥ {s.threshold:g})"
        else:
            reached = f"{_num(s.steps_to_threshold, 0 if x_unit == 'steps' else 1)} " \
                      f"(≥ {s.threshold:g})"
        rows.append(f"| {s.env_id} | {s.label} | {len(s.runs)} | {_num(s.final_mean, digits)} "
                    f"[{_num(s.final_low, digits)}, {_num(s.final_high, digits)}] | {reached} | "
                    f"{_num(s.auc, digits)} [{_num(s.auc_low, digits)}, "
                    f"{_num(s.auc_high, digits)}] |")
    return "\n".join(rows)


# ---- drawing ------------------------------------------------------------------------------


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.0, 4.0)) -> Any:
    """A matplotlib Figure on the Agg canvas (no display, no global pyplot state) and its
    axes array ``(nrows, ncols)``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'rlgrad[plot]'") from e
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Any, out: str | os.PathLike[str], dpi: int = 110) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"the figure is written as PNG; give a .png file, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def draw_groups(ax: Any, stats: Sequence[GroupStats], *, ylabel: str = "episodic return",
                title: str | None = None, threshold: bool = True) -> None:
    """Each group's mean curve and its 95% band on ``ax``."""
    alpha = 0.18 if len(stats) <= 4 else 0.08  # many bands on top of each other turn to mud
    for s in stats:
        (line,) = ax.plot(s.x, s.mean, label=f"{s.label} (n={len(s.runs)})", lw=1.6)
        ax.fill_between(s.x, s.low, s.high, color=line.get_color(), alpha=alpha, lw=0)
    if threshold and stats and stats[0].threshold is not None:
        ax.axhline(stats[0].threshold, color="grey", ls=":", lw=1)
    ax.set_xlabel("environment steps" if not stats or stats[0].x_axis == "step"
                  else "wall time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else (stats[0].env_id if stats else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def plot_groups(stats: Sequence[GroupStats], out: str | os.PathLike[str], *,
                ylabel: str = "episodic return") -> Path:
    """One panel per environment with every group's mean and 95% band; writes a PNG."""
    if not stats:
        raise ValueError("nothing to plot: no groups")
    envs: dict[str, list[GroupStats]] = {}
    for s in stats:
        envs.setdefault(s.env_id, []).append(s)
    fig, axes = new_figure(ncols=len(envs))
    for ax, (env_id, groups) in zip(axes[0], envs.items()):
        draw_groups(ax, groups, ylabel=ylabel, title=env_id or None)
    return save_figure(fig, out)
