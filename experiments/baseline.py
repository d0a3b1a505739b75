"""How much does a baseline lower the variance of the policy gradient, and does it help?

Three estimators on CartPole-v1, Adam at lr 1e-2, 5 seeds each:

- vanilla REINFORCE, the weights of grad log pi are the raw returns G_t;
- REINFORCE with normalised returns, (G_t - mean) / std over the batch: a constant baseline
  (the mean) and a rescaling;
- REINFORCE with a learned baseline V(s_t), weights G_t - V(s_t), then normalised.

The variance is measured, not assumed: with ``grad_variance_batches=8`` every update splits its
batch into 8 disjoint random mini-batches, computes the policy gradient on each (same policy)
and logs the trace of their covariance (``diagnostics/grad_variance``) and that trace over the
squared norm of their mean (``diagnostics/grad_relative_variance``, which does not change when
the weights are rescaled, so the three estimators compare on one scale). Along training the
three runs visit different policies, and the relative variance explodes wherever the mean
gradient nears zero (a solved task), so the experiment also measures the three estimators on
the same batches of the same policies: one agent with a baseline is trained, and at a few
points its fresh batches are weighted each of the three ways, all divided by the same number
(the batch's standard deviation of G) so that they estimate the same gradient and their
variances compare directly.

    python -m experiments.baseline            # full: docs/baseline.png
    python -m experiments.baseline --quick    # seconds
"""

from __future__ import annotations

import numpy as np

from agents import ReinforceBaseline, ReinforceBaselineConfig
from experiments import _common as common
from rlgrad.plot import Run, draw_groups, format_table, new_figure, save_figure
from rlgrad.sweep import Grid
from rlgrad.tensor import no_grad

NAME = "baseline"
ENV = "CartPole-v1"
LR = 1e-2  # one learning rate for all three (REINFORCE's own default is 5e-3), Adam
K = 8  # mini-batches per variance measurement
VARIANTS = {  # label: (agent, normalize_advantages)
    "vanilla": ("reinforce", False),
    "normalised returns": ("reinforce", True),
    "learned baseline": ("reinforce_baseline", True),
}
FULL = {"seeds": [1, 2, 3, 4, 5], "total_steps": 150_000, "options": {},
        "matched": {"stages": [0, 20_000, 50_000, 100_000], "batches": 10}}
QUICK = {"seeds": [1, 2], "total_steps": 1_500,
         "options": {"steps_per_update": [500], "num_envs": [4]},
         "matched": {"stages": [0, 1_000], "batches": 2}}


def label_of(run: Run) -> str:
    config = run.config
    for label, (agent, norm) in VARIANTS.items():
        if config["agent"] == agent and config["normalize_advantages"] == norm:
            return label
    raise ValueError(f"no variant for {config}")


def matched_variance(setting: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Variance of the three estimators on the same batches of the same policies,
    ``{label: (stages, batches)}``.

    All three weightings are divided by the same number, the standard deviation of the
    batch's returns, so they estimate the same gradient (a baseline that does not depend on
    the action leaves the expectation unchanged) and their variances compare directly.
    """
    options = {k: v[0] for k, v in setting["options"].items()}
    agent = ReinforceBaseline(ENV, ReinforceBaselineConfig(**options), seed=seed)
    stages, n = setting["matched"]["stages"], setting["matched"]["batches"]
    out = {label: np.zeros((len(stages), n)) for label in VARIANTS}
    c = agent.config
    try:
        for i, stage in enumerate(stages):
            if stage > agent.global_step:
                agent.learn(stage - agent.global_step, reset_num_timesteps=False)
            for j in range(n):
                batch = agent.collection.collect_episodes(
                    agent.collect_step, c.steps_per_update, 2 * c.steps_per_update)
                agent.prepare(batch)
                returns = batch.data["returns"]
                with no_grad():
                    values = agent.value(batch.flat(batch.obs)).data.astype(np.float64)
                scale = returns.std() + 1e-8
                adv = returns - values
                weights = {"vanilla": returns / scale,
                           "normalised returns": (returns - returns.mean()) / scale,
                           "learned baseline": (adv - adv.mean()) / scale}
                for label, w in weights.items():
                    batch.data["advantages"] = w
                    out[label][i, j] = agent.gradient_variance(batch, K)["grad_variance"]
    finally:
        agent.close()
    return out


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__).parse_args(argv)
    timer = common.Timer()
    setting = QUICK if args.quick else FULL
    logdir, figure = common.paths(NAME, args)
    options = {**setting["options"], "grad_variance_batches": [K]}
    specs = []
    for agent, norm in VARIANTS.values():
        specs += common.specs(Grid(agents=[agent], envs=[ENV], seeds=setting["seeds"], lrs=[LR],
                                   options={**options, "normalize_advantages": [norm]},
                                   total_steps=setting["total_steps"], eval_episodes=0))
    print(f"{NAME}: {len(specs)} runs")
    common.sweep(specs, logdir, args.workers)

    label = label_of
    returns = common.curves(common.load(logdir), label=label)
    relvar = common.curves(common.load(logdir, "diagnostics/grad_relative_variance"),
                           label=label, window=1, threshold=float("inf"))
    var = common.curves(common.load(logdir, "diagnostics/grad_variance"), label=label,
                        window=1, threshold=float("inf"))
    print(f"{NAME}: the three estimators on matched policies and batches")
    matched = matched_variance(setting)

    fig, axes = new_figure(ncols=3, size=(5.2, 4.0))
    draw_groups(axes[0, 0], returns, title=f"{ENV}: return")
    draw_groups(axes[0, 1], relvar, ylabel="relative variance of the gradient",
                title="logged along each run's own training", threshold=False)
    axes[0, 1].set_yscale("log")
    ax = axes[0, 2]
    stages = setting["matched"]["stages"]
    width = 0.8 / len(VARIANTS)
    for k, (name, values) in enumerate(matched.items()):
        pos = np.arange(len(stages)) + (k - 1) * width
        ax.bar(pos, values.mean(axis=1), width, label=name,
               yerr=values.std(axis=1, ddof=1) / np.sqrt(values.shape[1])
               if values.shape[1] > 1 else None, capsize=2)
    ax.set_xticks(np.arange(len(stages)), [f"{s // 1000}k" for s in stages])
    ax.set_xlabel("training steps of the (baseline) agent's policy")
    ax.set_ylabel("variance of the gradient, common scale (mean ± s.e.)")
    ax.set_yscale("log")
    ax.set_title("same policy and batches, weights / std(G)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, figure)

    rows = ["| estimator | final return [95% CI] | AUC [95% CI] | mean relative variance "
            "(logged) | mean variance (logged) |", "|-|-|-|-|-|"]
    by_label = {s.label: s for s in relvar}
    by_label_var = {s.label: s for s in var}
    for s in returns:
        rows.append(f"| {s.label} | {s.final_mean:.1f} [{s.final_low:.1f}, {s.final_high:.1f}] "
                    f"| {s.auc:.1f} [{s.auc_low:.1f}, {s.auc_high:.1f}] | "
                    f"{by_label[s.label].auc:.3g} | "
                    f"{by_label_var[s.label].auc:.3g} |")
    matched_rows = ["| policy after | " + " | ".join(matched) + " | baseline / vanilla |",
                    "|-|" + "-|" * (len(matched) + 1)]
    for i, stage in enumerate(stages):
        means = [v[i].mean() for v in matched.values()]
        matched_rows.append(f"| {stage:,} steps | " + " | ".join(f"{m:.3g}" for m in means) +
                            f" | {means[-1] / means[0]:.2g} |")
    table = "\n".join(rows) + "\n\nVariance of the gradient on matched policies and batches, " \
        "weights divided by the batch's std of G " \
        f"(mean over {setting['matched']['batches']} batches):\n\n" + "\n".join(matched_rows)
    print("\n" + table)
    common.write_text(logdir / "table.md", table + "\n\n" + format_table(returns))
    seconds = timer.done(NAME)
    return {"figure": figure, "table": table, "matched": matched, "seconds": seconds,
            "returns": returns, "relvar": relvar}


if __name__ == "__main__":
    main()
