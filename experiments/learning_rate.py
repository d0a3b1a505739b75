"""Learning rate over four orders of magnitude, for SGD and Adam.

REINFORCE with a learned baseline on CartPole-v1, the policy's learning rate swept in half
decades, the value network's optimizer left at its default (Adam, 1e-2) so that only the policy
step changes. Figure: final return and area under the curve against the learning rate, and the
learning curves of a few learning rates (too low: a crawl; too high: overshoot and collapse).

    python -m experiments.learning_rate            # full: docs/learning_rate.png
    python -m experiments.learning_rate --quick    # seconds
"""

from __future__ import annotations

import numpy as np

from experiments import _common as common
from rlgrad.plot import draw_groups, format_table, new_figure, save_figure
from rlgrad.sweep import Grid

NAME = "learning_rate"
ENV = "CartPole-v1"
# four orders of magnitude each, placed where each optimizer goes from crawling to diverging
LRS = {"sgd": [1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, 30.0, 100.0],
       "adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]}
FULL = {"seeds": [1, 2, 3, 4, 5], "total_steps": 100_000, "options": {}}
QUICK = {"seeds": [1, 2], "total_steps": 1_500,
         "options": {"steps_per_update": [500], "num_envs": [4]}}


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__).parse_args(argv)
    timer = common.Timer()
    setting = QUICK if args.quick else FULL
    lrs = {opt: (v[::4] if args.quick else v) for opt, v in LRS.items()}
    logdir, figure = common.paths(NAME, args)
    grids = [Grid(agents=["reinforce_baseline"], envs=[ENV], optimizers=[opt], lrs=lr_list,
                  seeds=setting["seeds"], options=setting["options"],
                  total_steps=setting["total_steps"], eval_episodes=0)
             for opt, lr_list in lrs.items()]
    print(f"{NAME}: {sum(len(v) for v in lrs.values()) * len(setting['seeds'])} runs")
    common.sweep(common.specs(*grids), logdir, args.workers)

    runs = common.load(logdir)
    fig, axes = new_figure(ncols=3, size=(5.2, 4.0))
    rows = ["| optimizer | lr | final return [95% CI] | AUC [95% CI] |", "|-|-|-|-|"]
    summary: dict[str, dict[float, tuple[float, float, float, float]]] = {}
    for opt, marker in (("sgd", "o"), ("adam", "s")):
        stats = common.curves(common.select(runs, optimizer=opt),
                              label=lambda r: f"{r.config['optimizer']} lr={r.config['lr']:g}")
        stats.sort(key=lambda s: s.config["lr"])
        x = np.array([s.config["lr"] for s in stats])
        final = np.array([[s.final_mean, s.final_low, s.final_high] for s in stats])
        auc = np.array([s.auc for s in stats])
        summary[opt] = {s.config["lr"]: (s.final_mean, s.final_low, s.final_high, s.auc)
                        for s in stats}
        (line,) = axes[0, 0].plot(x, final[:, 0], marker=marker, label=f"{opt}: final return")
        axes[0, 0].fill_between(x, final[:, 1], final[:, 2], color=line.get_color(), alpha=0.2)
        axes[0, 0].plot(x, auc, marker=marker, ls="--", color=line.get_color(),
                        label=f"{opt}: AUC (mean over training)")
        for s in stats:
            rows.append(f"| {opt} | {s.config['lr']:g} | {s.final_mean:.1f} "
                        f"[{s.final_low:.1f}, {s.final_high:.1f}] | {s.auc:.1f} "
                        f"[{s.auc_low:.1f}, {s.auc_high:.1f}] |")
        # three learning rates: the lowest, the best by AUC, the highest
        best = int(np.argmax(auc))
        picks = sorted({0, best, len(stats) - 1})
        draw_groups(axes[0, 1 if opt == "sgd" else 2], [stats[i] for i in picks],
                    title=f"{opt}: lowest lr, best lr by AUC, highest lr")
    ax = axes[0, 0]
    ax.set_xscale("log")
    ax.set_xlabel("learning rate of the policy")
    ax.set_ylabel("episodic return (mean of last 20 episodes)")
    ax.set_title(f"{ENV}, REINFORCE + baseline, {len(setting['seeds'])} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, figure)
    table = "\n".join(rows)
    print("\n" + table)
    common.write_text(logdir / "table.md", table + "\n\n" + format_table(
        common.curves(runs, label=lambda r: f"{r.config['optimizer']} lr={r.config['lr']:g}")))
    seconds = timer.done(NAME)
    return {"figure": figure, "table": table, "summary": summary, "seconds": seconds}


if __name__ == "__main__":
    main()
