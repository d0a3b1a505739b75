"""Batch, mini-batch and stochastic gradient steps at equal environment steps.

REINFORCE with a learned baseline on CartPole-v1, Adam, three ways to spend the same samples:

- batch: one gradient step per batch of 4000 steps (8 environments);
- mini-batch: 8 steps per batch, on shuffled mini-batches of 500 transitions (one epoch);
- stochastic: one step per episode (one environment, ``steps_per_update=1``: batches end at
  episode boundaries, so every batch is exactly one episode; ``max_episode_tail=500`` lets the
  episode run to CartPole's limit).

Each gets its best learning rate of {3e-4, 1e-3, 3e-3, 1e-2} by area under the curve on seeds
101-102, then runs at it with 5 other seeds (1-5). The value network keeps its default of 10
full-batch steps per batch, so the stochastic variant also fits V far more often per sample.
Curves against environment steps and against wall time (each run's own seconds, two runs
sharing two cores).

    python -m experiments.gradient_descent            # full: docs/gradient_descent.png
    python -m experiments.gradient_descent --quick    # seconds
"""

from __future__ import annotations

from experiments import _common as common
from rlgrad.plot import Run, draw_groups, format_table, new_figure, save_figure
from rlgrad.sweep import Grid

NAME = "gradient_descent"
ENV = "CartPole-v1"
LRS = [3e-4, 1e-3, 3e-3, 1e-2]
VARIANTS = {
    "batch": {"steps_per_update": 4000, "num_envs": 8, "minibatch_size": 0},
    "mini-batch": {"steps_per_update": 4000, "num_envs": 8, "minibatch_size": 500},
    "stochastic": {"steps_per_update": 1, "num_envs": 1, "minibatch_size": 0,
                   "max_episode_tail": 500},
}
FULL = {"total_steps": 100_000, "select_seeds": [101, 102], "seeds": [1, 2, 3, 4, 5],
        "lrs": LRS, "scale": 1}
QUICK = {"total_steps": 1_500, "select_seeds": [101], "seeds": [1, 2], "lrs": LRS[1:3],
         "scale": 8}  # batches 8 times smaller


def variant_options(name: str, scale: int) -> dict[str, list]:
    opts = dict(VARIANTS[name])
    if scale > 1 and opts["steps_per_update"] > 1:
        opts["steps_per_update"] //= scale
        opts["minibatch_size"] //= scale
    return {k: [v] for k, v in opts.items()}


def variant_of(run: Run) -> str:
    c = run.config
    if c["steps_per_update"] == 1:
        return "stochastic"
    return "mini-batch" if 0 < c["minibatch_size"] < c["steps_per_update"] else "batch"


def grids(setting: dict, seeds: list[int], lrs: dict[str, list[float]]) -> list[Grid]:
    return [Grid(agents=["reinforce_baseline"], envs=[ENV], optimizers=["adam"], lrs=lrs[name],
                 seeds=seeds, options=variant_options(name, setting["scale"]),
                 total_steps=setting["total_steps"], eval_episodes=0)
            for name in VARIANTS]


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__).parse_args(argv)
    timer = common.Timer()
    setting = QUICK if args.quick else FULL
    logdir, figure = common.paths(NAME, args)

    print(f"{NAME}: selecting learning rates")
    common.sweep(common.specs(*grids(setting, setting["select_seeds"],
                                     {name: setting["lrs"] for name in VARIANTS})),
                 logdir, args.workers)
    best, selection_rows = common.best_lr(common.load(logdir), key=variant_of,
                                          seeds=setting["select_seeds"])
    print(f"{NAME}: final runs")
    common.sweep(common.specs(*grids(setting, setting["seeds"],
                                     {name: [best[name]] for name in VARIANTS})),
                 logdir, args.workers)
    runs = [r for r in common.load(logdir)
            if r.seed in setting["seeds"] and r.config["lr"] == best[variant_of(r)]]

    def label(r: Run) -> str:
        return f"{variant_of(r)} lr={r.config['lr']:g}"

    by_steps = common.curves(runs, label=label)
    by_time = common.curves(runs, label=label, x="time", span="group")
    fig, axes = new_figure(ncols=2, size=(6.0, 4.2))
    draw_groups(axes[0, 0], by_steps, title=f"{ENV}: against environment steps")
    draw_groups(axes[0, 1], by_time, title=f"{ENV}: against wall time")
    save_figure(fig, figure)
    rows = ["| update | lr | gradient steps | final return [95% CI] | steps to 475 | "
            "seconds to 475 | AUC [95% CI] | run time (s) |", "|-|-|-|-|-|-|-|-|"]
    updates = {r.name: r for r in runs}
    for s, t in zip(by_steps, by_time):
        members = [updates[n] for n in s.runs]
        seconds = sum(float(r.seconds[-1]) for r in members) / len(members)
        n_updates = sum(_updates(r) for r in members) / len(members)
        to_steps = "never" if s.steps_to_threshold is None else f"{s.steps_to_threshold:,.0f}"
        to_time = "never" if t.steps_to_threshold is None else f"{t.steps_to_threshold:.1f}"
        rows.append(f"| {s.label.split(' lr=')[0]} | {s.config['lr']:g} | {n_updates:,.0f} | "
                    f"{s.final_mean:.1f} [{s.final_low:.1f}, {s.final_high:.1f}] | "
                    f"{to_steps} | {to_time} | {s.auc:.1f} [{s.auc_low:.1f}, {s.auc_high:.1f}] | "
                    f"{seconds:.1f} |")
    table = "\n".join(rows)
    print("\n" + table + "\n\nlearning-rate selection:\n" + "\n".join(selection_rows))
    common.write_text(logdir / "table.md", table + "\n\n" + format_table(by_steps) + "\n\n" +
                      "\n".join(selection_rows))
    seconds = timer.done(NAME)
    return {"figure": figure, "table": table, "best_lr": best, "seconds": seconds}


def _updates(run: Run) -> int:
    """Gradient steps of the policy: from summary.json's update count and the mini-batching."""
    import json

    summary = json.loads((run.path / "summary.json").read_text())
    c = run.config
    per_batch = 1
    if 0 < c["minibatch_size"] < c["steps_per_update"]:
        per_batch = -(-c["steps_per_update"] // c["minibatch_size"]) * c["update_epochs"]
    return summary["num_updates"] * per_batch


if __name__ == "__main__":
    main()
