"""Which optimizer trains REINFORCE with a baseline fastest, each at its best learning rate.

SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam and AdamW on CartPole-v1 and Acrobot-v1. Each
optimizer gets a grid of four learning rates, half a decade apart, placed around its working
range (found by a one-seed scan: SGD needs a learning rate about 300 times Adam's, because the
policy gradient's norm is small). The learning rate with the largest area under the curve over
three selection seeds (101-103) wins; the optimizer is then run at it with 5 other seeds (1-5),
so the reported numbers are not inflated by the selection, and compared on the table's numbers.

    python -m experiments.optimizers            # full: docs/optimizers.png
    python -m experiments.optimizers --quick    # seconds
"""

from __future__ import annotations

from experiments import _common as common
from rlgrad.plot import draw_groups, format_table, new_figure, save_figure
from rlgrad.sweep import Grid

NAME = "optimizers"
LRS = {
    "sgd": [1.0, 3.0, 10.0, 30.0],
    "momentum": [0.1, 0.3, 1.0, 3.0],
    "nesterov": [0.1, 0.3, 1.0, 3.0],
    "adagrad": [3e-3, 1e-2, 3e-2, 1e-1],
    "rmsprop": [3e-4, 1e-3, 3e-3, 1e-2],
    "adam": [3e-3, 1e-2, 3e-2, 1e-1],
    "adamw": [3e-3, 1e-2, 3e-2, 1e-1],
}
FULL = {"envs": {"CartPole-v1": 150_000, "Acrobot-v1": 100_000},
        "select_seeds": [101, 102, 103], "seeds": [1, 2, 3, 4, 5], "options": {},
        "optimizers": list(LRS)}
QUICK = {"envs": {"CartPole-v1": 1_500, "Acrobot-v1": 1_500}, "select_seeds": [101],
         "seeds": [1, 2], "options": {"steps_per_update": [500], "num_envs": [2]},
         "optimizers": ["sgd", "adam"]}


def grids(setting: dict, seeds: list[int], lrs: dict[tuple[str, str], list[float]]) -> list:
    return [Grid(agents=["reinforce_baseline"], envs=[env], optimizers=[opt],
                 lrs=lrs[env, opt], seeds=seeds, options=setting["options"],
                 total_steps=steps, eval_episodes=0)
            for env, steps in setting["envs"].items() for opt in setting["optimizers"]]


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__).parse_args(argv)
    timer = common.Timer()
    setting = QUICK if args.quick else FULL
    logdir, figure = common.paths(NAME, args)
    envs, opts = list(setting["envs"]), setting["optimizers"]

    # 1. the learning rate of each optimizer on each environment, by AUC on the selection seeds
    grid_lrs = {(env, opt): LRS[opt][1:3] if args.quick else LRS[opt] for env in envs
                for opt in opts}
    print(f"{NAME}: selecting learning rates")
    common.sweep(common.specs(*grids(setting, setting["select_seeds"], grid_lrs)), logdir,
                 args.workers)
    runs = common.load(logdir)
    best, selection_rows = common.best_lr(
        [r for r in runs if r.config["optimizer"] in opts],
        key=lambda r: (r.env_id, r.config["optimizer"]), seeds=setting["select_seeds"])

    # 2. every optimizer at its learning rate with all seeds
    print(f"{NAME}: final runs at the selected learning rates")
    final_lrs = {key: [lr] for key, lr in best.items()}
    common.sweep(common.specs(*grids(setting, setting["seeds"], final_lrs)), logdir,
                 args.workers)
    runs = common.load(logdir)
    fig, axes = new_figure(ncols=len(envs), size=(6.0, 4.4))
    tables, ranking = [], {}
    rows = ["| env | optimizer | lr | final return [95% CI] | seeds reaching the threshold | "
            "steps to threshold (mean curve) | AUC [95% CI] |", "|-|-|-|-|-|-|-|"]
    for ax, env in zip(axes[0], envs):
        picked = [r for r in common.select(runs, env_id=env,
                                           seed=lambda s: s in setting["seeds"])
                  if r.config["optimizer"] in opts
                  and r.config["lr"] == best[env, r.config["optimizer"]]]
        stats = common.curves(picked, label=lambda r: f"{r.config['optimizer']} "
                                                      f"lr={r.config['lr']:g}")
        stats.sort(key=lambda s: -s.auc)
        ranking[env] = stats
        for s in stats:
            solved = int((s.finals >= s.threshold).sum())
            reached = "never" if s.steps_to_threshold is None else \
                f"{s.steps_to_threshold:,.0f}"
            rows.append(f"| {env} | {s.config['optimizer']} | {s.config['lr']:g} | "
                        f"{s.final_mean:.1f} [{s.final_low:.1f}, {s.final_high:.1f}] | "
                        f"{solved}/{len(s.runs)} (≥ {s.threshold:g}) | {reached} | "
                        f"{s.auc:.1f} [{s.auc_low:.1f}, {s.auc_high:.1f}] |")
        # the same colour for an optimizer in every panel: draw in a fixed order
        draw_groups(ax, sorted(stats, key=lambda s: list(LRS).index(s.config["optimizer"])),
                    title=f"{env}: REINFORCE + baseline, best lr each")
        tables.append(format_table(stats))
    save_figure(fig, figure)
    table = "\n".join(rows)
    print("\n" + table)
    common.write_text(logdir / "table.md", table + "\n\n" + "\n\n".join(tables) +
                      "\n\nLearning-rate selection:\n\n" + "\n".join(selection_rows))
    print("\nlearning-rate selection:\n" + "\n".join(selection_rows))
    seconds = timer.done(NAME)
    return {"figure": figure, "table": table, "best_lr": best, "ranking": ranking,
            "seconds": seconds}


if __name__ == "__main__":
    main()
