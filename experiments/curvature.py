"""Does the curvature explain which step sizes work? First order against second order.

1. Plain SGD on the policy (REINFORCE with a learned baseline, the learning-rate experiment's
   setting) over a range of learning rates, each run measuring the curvature of its own policy
   loss every ``curvature_every`` updates, before the update (``agents.diagnostics``): the
   largest Hessian eigenvalue lambda_max and the SGD stability edge 2 / lambda_max. Gradient
   descent on a quadratic with top curvature lambda_max diverges for lr > 2 / lambda_max; the
   table gives, per learning rate, the fraction of measured updates that took such a step, and
   which runs collapsed (ended below the return they started at). On CartPole-v1 (the same
   seeds and budget as ``experiments.learning_rate``, whose runs these reproduce: the
   diagnostics draw from their own generator) and on InvertedPendulum-v5 (Gaussian policy).
2. First order (PPO, A2C) against second order (NPG, TRPO: a natural-gradient step of fixed KL)
   on the same two tasks, same seeds and steps, each agent at its defaults except that NPG and
   TRPO step 8 environments for 256 steps (their default batch of 2048, collected 8 at a time
   rather than from one environment, which is ~3x faster here): return against environment
   steps and against wall time, and the KL of each update (``approx_kl``; A2C does not
   measure it).

    python -m experiments.curvature            # full: docs/curvature.png
    python -m experiments.curvature --quick    # seconds
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import _common as common
from rlgrad.plot import (
    Run,
    draw_groups,
    format_table,
    load_runs,
    new_figure,
    running_mean,
    save_figure,
)
from rlgrad.sweep import Grid, RunSpec

NAME = "curvature"
SGD_ENVS = ["CartPole-v1", "InvertedPendulum-v5"]
COMPARE = ["ppo", "a2c", "npg", "trpo"]
AGENT_COLORS = {"ppo": "tab:blue", "a2c": "tab:orange", "npg": "tab:green", "trpo": "tab:red"}
FULL = {
    "seeds": [1, 2, 3], "curvature_every": 2,
    # the learning-rate experiment's SGD range from "learns" to "collapses"
    "lrs": {"CartPole-v1": [1.0, 3.0, 10.0, 30.0, 100.0],
            "InvertedPendulum-v5": [1.0, 3.0, 10.0]},
    "steps": {"CartPole-v1": 100_000, "InvertedPendulum-v5": 50_000},
    "sgd_options": {},
    "compare_steps": {"InvertedPendulum-v5": 50_000, "CartPole-v1": 100_000},
    "compare_options": {"npg": {"num_envs": [8], "num_steps": [256]},
                        "trpo": {"num_envs": [8], "num_steps": [256]}},
}
QUICK = {
    "seeds": [1], "curvature_every": 1,
    "lrs": {"CartPole-v1": [1.0, 100.0], "InvertedPendulum-v5": [10.0]},
    "steps": {"CartPole-v1": 1_500, "InvertedPendulum-v5": 1_000},
    "sgd_options": {"steps_per_update": [500], "num_envs": [4]},
    "compare_steps": {"CartPole-v1": 1_500},
    "compare_options": {"ppo": {"num_steps": [64]},
                        "npg": {"num_envs": [4], "num_steps": [128]},
                        "trpo": {"num_envs": [4], "num_steps": [128]}},
}
# where a metric's key may have been written: as is, or under the trainer's own prefixes
PREFIXES = ("", "diagnostics/", "losses/")
FLOOR = 1e-3  # lambda_max <= 0 (a saturated, deterministic policy has 0) drawn here, log axis


def sgd_specs(setting: dict) -> list[RunSpec]:
    grids = [Grid(agents=["reinforce_baseline"], envs=[env], optimizers=["sgd"],
                  lrs=setting["lrs"][env], seeds=setting["seeds"],
                  options={**setting["sgd_options"],
                           "curvature_every": [setting["curvature_every"]]},
                  total_steps=setting["steps"][env], eval_episodes=0)
             for env in SGD_ENVS]
    return common.specs(*grids)


def compare_specs(setting: dict) -> list[RunSpec]:
    """The first- against second-order runs, each environment's in :data:`COMPARE` order
    (PPO's on InvertedPendulum, the longest, start first)."""
    grids = [Grid(agents=[agent], envs=[env], seeds=setting["seeds"],
                  options=setting["compare_options"].get(agent, {}),
                  total_steps=steps, eval_episodes=0)
             for env, steps in setting["compare_steps"].items() for agent in COMPARE]
    return common.specs(*grids)


def load_metric(logdir: Path, key: str) -> dict[str, Run]:
    """Run name -> the points of metric ``key`` (e.g. ``curvature/hessian_max``), under
    whichever tag the trainer wrote it: ``key`` itself or ``key`` behind one of
    :data:`PREFIXES`, the first found in that order for each run. Empty if no run has it."""
    found: dict[str, Run] = {}
    for prefix in PREFIXES:
        try:
            runs = load_runs(logdir, prefix + key, on_skip=print)
        except ValueError:  # no run has this tag
            continue
        for run in runs:
            found.setdefault(run.name, run)
    return found


def exceed_fraction(lr: float, hessian_max: np.ndarray) -> float:
    """The fraction of measured updates whose step is past the SGD stability edge:
    mean over updates of [lr > 2 / lambda_max] (never when lambda_max <= 0)."""
    return float(np.mean(lr * np.asarray(hessian_max) > 2.0))


def collapsed(run: Run, window: int = 20) -> bool:
    """The run ended below where it started: the mean of its last ``window`` episode returns
    is below the mean of its first ``window``."""
    return bool(run.values[-window:].mean() < run.values[:window].mean())


def sgd_analysis(runs: Sequence[Run], curvature: dict[str, dict[str, Run]], env: str
                 ) -> list[dict]:
    """One row per learning rate of ``env``: its runs, their final returns, whether each
    collapsed, their lambda_max and lambda_min along training, and how often lr > 2 / lambda_max
    (per run, and pooled over the rate's measured updates)."""
    by_lr: dict[float, list[Run]] = {}
    for run in common.select(runs, env_id=env, agent="reinforce_baseline"):
        if run.name in curvature["hessian_max"]:
            by_lr.setdefault(run.config["lr"], []).append(run)
    rows = []
    for lr in sorted(by_lr):
        members = by_lr[lr]
        hmax = [curvature["hessian_max"][r.name] for r in members]
        hmin = [curvature["hessian_min"][r.name].values for r in members
                if r.name in curvature["hessian_min"]]
        pooled = np.concatenate([h.values for h in hmax])
        rows.append({
            "lr": lr, "runs": members, "hessian_max": hmax,
            "final": [float(r.values[-20:].mean()) for r in members],
            "collapsed": [collapsed(r) for r in members],
            "fractions": [exceed_fraction(lr, h.values) for h in hmax],
            "exceeded": int(np.sum(lr * pooled > 2.0)), "measured": len(pooled),
            "ratio_first": float(np.median([lr * h.values[0] for h in hmax])),
            "ratio_median": float(np.median(lr * pooled)),
            "hessian_median": float(np.median(pooled)),
            "hessian_min_median": float(np.median(np.concatenate(hmin))) if hmin else math.nan,
        })
    return rows


SGD_HEADER = ["| env | SGD lr | final return (seed mean) | collapsed | lr·λ_max at the first "
              "update | median lr·λ_max | updates with lr > 2/λ_max | median λ_max | median "
              "λ_min |", "|-|-|-|-|-|-|-|-|-|"]


def sgd_table(env: str, rows: list[dict]) -> list[str]:
    return [f"| {env} | {row['lr']:g} | {np.mean(row['final']):.1f} | "
            f"{sum(row['collapsed'])}/{len(row['runs'])} | {row['ratio_first']:.3g} | "
            f"{row['ratio_median']:.3g} | {row['exceeded']}/{row['measured']} "
            f"({row['exceeded'] / row['measured']:.0%}) | {row['hessian_median']:.3g} | "
            f"{row['hessian_min_median']:.3g} |" for row in rows]


def draw_sgd(axes: Sequence, env: str, rows: list[dict], returns: list[Run]) -> None:
    """Three panels: learning curves per lr; lambda_max along training with each lr's
    instability level 2 / lr; the fraction of updates past the edge per lr."""
    import matplotlib

    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.92, max(len(rows), 2)))
    names = {r.name for row in rows for r in row["runs"]}
    stats = common.curves([r for r in returns if r.name in names],
                          label=lambda r: f"lr={r.config['lr']:g}")
    stats.sort(key=lambda s: s.config["lr"])
    ax = axes[0]
    ax.set_prop_cycle(color=colors)
    draw_groups(ax, stats, title=f"{env}: REINFORCE + baseline, SGD", threshold=False)

    ax = axes[1]
    for row, color in zip(rows, colors):
        for h, bad in zip(row["hessian_max"], row["collapsed"]):
            ax.plot(h.steps, np.maximum(h.values, FLOOR), color=color, lw=1.0,
                    ls="--" if bad else "-", alpha=0.85)
        ax.axhline(2.0 / row["lr"], color=color, ls=":", lw=1.2)
        ax.text(0.01, 2.0 / row["lr"], f"2/{row['lr']:g}",
                color=color, fontsize=6, va="bottom", transform=ax.get_yaxis_transform())
    ax.set_yscale("log")
    ax.set_ylim(bottom=FLOOR / 2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("largest Hessian eigenvalue of the policy loss")
    ax.set_title(f"lambda_max along training (dashed: a collapsed run; <= 0 drawn at "
                 f"{FLOOR:g});\ndotted: 2/lr; above it, that lr steps past the SGD stability "
                 "edge 2/lambda_max", fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[2]
    lrs = np.array([row["lr"] for row in rows])
    for row, color in zip(rows, colors):
        for frac, bad in zip(row["fractions"], row["collapsed"]):
            ax.scatter(row["lr"], frac, color=color, marker="x" if bad else "o", s=30,
                       zorder=3)
    ax.plot(lrs, [np.mean(row["fractions"]) for row in rows], color="grey", lw=1)
    edge0 = float(np.median([2.0 / h.values[0] for row in rows for h in row["hessian_max"]
                             if h.values[0] > 0]))
    ax.axvline(edge0, color="black", ls="--", lw=1,
               label=f"2/λ_max at the first update: {edge0:.3g} (median over seeds)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("SGD learning rate of the policy")
    ax.set_ylabel("fraction of updates with lr > 2 / lambda_max")
    ax.set_title("fraction of updates past the edge, each seed (x: the run collapsed) "
                 "and their mean", fontsize=8)
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(lrs, [np.mean(row["final"]) for row in rows], color="tab:red", marker="s",
              ms=3, lw=1)
    twin.set_ylabel("final return (mean over seeds)", color="tab:red")


def draw_agents(ax: Any, stats: list, **kw: Any) -> None:
    """``draw_groups`` with one fixed colour per agent; TRPO dashed (it can hide NPG)."""
    ax.set_prop_cycle(color=[AGENT_COLORS[s.label] for s in stats])
    draw_groups(ax, stats, **kw)
    ax.title.set_fontsize(9)
    for line in ax.get_lines():
        if line.get_label().startswith("trpo"):
            line.set_linestyle("--")
    ax.legend(fontsize=7, loc="best")


def seconds_to_threshold(run: Run, threshold: float, window: int = 20) -> float | None:
    """The run's own wall time (s) when the running mean of its last ``window`` returns first
    reaches ``threshold``; None if it never does."""
    hit = np.nonzero(running_mean(run.values, window) >= threshold)[0]
    return float(run.seconds[hit[0]]) if hit.size else None


def compare_rows(env: str, by_steps: list, by_time: list, runs: list[Run], kl: dict[str, Run],
                 line_search: dict[str, Run]) -> list[str]:
    """Table rows; seconds to threshold is each run's own (the seed-mean curve against wall
    time ends with the run that ended first, so it can miss a threshold every run reached)."""
    by_name = {r.name: r for r in runs}
    rows = []
    for s, t in zip(by_steps, by_time):
        times = ([seconds_to_threshold(by_name[n], s.threshold) for n in s.runs]
                 if s.threshold is not None else [])
        reached = [x for x in times if x is not None]
        to_time = (f"{np.median(reached):.1f} ({len(reached)}/{len(times)} runs)" if reached
                   else "never")
        kls = [kl[n].values for n in s.runs if n in kl]
        n_updates = np.mean([len(kl[n].values) for n in s.runs]) if kls else None
        ls = [line_search[n].values for n in s.runs if n in line_search]
        seconds = float(np.mean(t.ends))
        to_steps = "never" if s.steps_to_threshold is None else f"{s.steps_to_threshold:,.0f}"
        rows.append(
            f"| {env} | {s.label} | {s.final_mean:.1f} [{s.final_low:.1f}, {s.final_high:.1f}] "
            f"| {s.auc:.1f} [{s.auc_low:.1f}, {s.auc_high:.1f}] | {to_steps} | {to_time} | "
            f"{seconds:.1f} | {'-' if n_updates is None else f'{n_updates:.0f}'} | "
            f"{f'{np.mean(np.concatenate(kls)):.2g}' if kls else 'not logged'} | "
            f"{f'{np.mean(np.concatenate(ls)):.2f}' if ls and s.label == 'trpo' else '-'} |")
    return rows


COMPARE_HEADER = ["| env | agent | final return [95% CI] | AUC [95% CI] | steps to threshold | "
                  "seconds to threshold (median of runs) | run time (s) | updates | mean KL per "
                  "update | TRPO backtracks per update |", "|-|-|-|-|-|-|-|-|-|-|"]


def draw_compare(axes: Sequence, env: str, runs: list[Run], kl: dict[str, Run],
                 workers: int) -> tuple[list, list]:
    """Return against steps and against wall time, and the KL per update; the stats drawn."""

    def label(r: Run) -> str:
        return str(r.config["agent"])

    def order(stats: list) -> list:
        return sorted(stats, key=lambda s: COMPARE.index(s.label))

    by_steps = order(common.curves(runs, label=label))
    by_time = order(common.curves(runs, label=label, x="time", span="group"))
    draw_agents(axes[0], by_steps, title=f"{env}: first vs second order, against steps")
    draw_agents(axes[1], by_time, title=f"{env}: against wall time ({workers} runs at once)")
    kl_runs = [kl[r.name] for r in runs if r.name in kl]
    if kl_runs:
        draw_agents(axes[2], order(common.curves(kl_runs, label=label, window=1)),
                    ylabel="approx_kl, KL(pi_old || pi) (PPO: mean over mini-batches)",
                    threshold=False, title=f"{env}: KL per update (A2C: not measured)")
        axes[2].set_yscale("log")
    return by_steps, by_time


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__).parse_args(argv)
    timer = common.Timer()
    setting = QUICK if args.quick else FULL
    logdir, figure = common.paths(NAME, args)
    sgd, compare = sgd_specs(setting), compare_specs(setting)
    print(f"{NAME}: {len(sgd)} SGD runs measuring their curvature, {len(compare)} runs of "
          f"{', '.join(COMPARE)}")
    common.sweep(compare[:len(setting["seeds"])] + sgd + compare[len(setting["seeds"]):],
                 logdir, args.workers)
    result = report(logdir, figure, args.workers, list(setting["compare_steps"]))
    return {**result, "seconds": timer.done(NAME)}


def report(logdir: Path, figure: Path, workers: int, compare_envs: Sequence[str]) -> dict:
    """The figure and the tables from the runs under ``logdir``."""
    returns = common.load(logdir)
    curvature = {k: load_metric(logdir, f"curvature/{k}") for k in ("hessian_max", "hessian_min")}
    if not curvature["hessian_max"]:
        raise ValueError(f"no run under {str(logdir)!r} logged curvature/hessian_max")
    fig, axes = new_figure(ncols=3, nrows=len(SGD_ENVS) + len(compare_envs), size=(5.4, 4.1))
    table = list(SGD_HEADER)
    analysis = {}
    for i, env in enumerate(SGD_ENVS):
        analysis[env] = sgd_analysis(returns, curvature, env)
        table += sgd_table(env, analysis[env])
        draw_sgd(axes[i], env, analysis[env], returns)

    kl = load_metric(logdir, "approx_kl")
    line_search = load_metric(logdir, "line_search_steps")
    compare_table, all_steps = list(COMPARE_HEADER), []
    for i, env in enumerate(compare_envs, start=len(SGD_ENVS)):
        runs = common.select(returns, env_id=env, agent=lambda a: a in COMPARE)
        by_steps, by_time = draw_compare(axes[i], env, runs, kl, workers)
        compare_table += compare_rows(env, by_steps, by_time, runs, kl, line_search)
        all_steps += by_steps
    save_figure(fig, figure)

    text = "\n".join(table) + "\n\n" + "\n".join(compare_table)
    print("\n" + text)
    common.write_text(logdir / "table.md", text + "\n\n" + format_table(all_steps))
    return {"figure": figure, "table": text, "sgd": analysis}


if __name__ == "__main__":
    main()
