"""Which observation features a trained CartPole policy and its value function respond to.

One REINFORCE-with-baseline agent is trained on CartPole-v1; its greedy policy is then run for
a few episodes, and at every visited state the engine differentiates, with respect to the
observation, the log-probability of the chosen (greedy) action and the value estimate
(:func:`rlgrad.sensitivity.policy_sensitivity`). Bars: the mean absolute derivative per
feature, and the same times the feature's standard deviation over the visited states (the effect
of a typical change of that feature: the raw derivative favours features that vary little, like
the pole angle in radians), and the signed mean of the derivative of the policy's log-odds of
pushing right, log pi(right|s) - log pi(left|s), which says in which direction each feature
moves the decision (the derivative of log pi(a*|s) itself is small wherever the policy is sure).

    python -m experiments.saliency            # full: docs/saliency.png
    python -m experiments.saliency --quick    # seconds
"""

from __future__ import annotations

import numpy as np

from agents import ReinforceBaseline, ReinforceBaselineConfig
from experiments import _common as common
from rlgrad.checkpoint import load_checkpoint
from rlgrad.envs import make_vec
from rlgrad.plot import new_figure, save_figure
from rlgrad.sensitivity import input_gradients, policy_sensitivity
from rlgrad.sweep import is_complete
from rlgrad.tensor import no_grad
from rlgrad.train import train

NAME = "saliency"
ENV = "CartPole-v1"
FEATURES = ["cart position", "cart velocity", "pole angle", "pole angular velocity"]
SEED = 1
FULL = {"total_steps": 150_000, "episodes": 10, "options": {}}
QUICK = {"total_steps": 2_000, "episodes": 2, "options": {"steps_per_update": 500,
                                                          "num_envs": 4}}


def trained_agent(setting: dict, logdir) -> ReinforceBaseline:
    """Train the agent (or load it, if its run is complete) and return it."""
    config = ReinforceBaselineConfig(**setting["options"])
    run = logdir / f"{ENV}__reinforce_baseline__seed{SEED}"
    if not is_complete(run):
        train(lambda: ReinforceBaseline(ENV, config, seed=SEED), setting["total_steps"], logdir,
              name=run.name, progress=False, env_id=ENV)
    agent = ReinforceBaseline(ENV, config, seed=SEED)
    agent.load_state_dict(*load_checkpoint(run))
    return agent


def visited_states(agent: ReinforceBaseline, episodes: int, seed: int = 12345
                   ) -> tuple[np.ndarray, np.ndarray]:
    """States ``(B, 4)`` of ``episodes`` greedy episodes, one per environment, and returns."""
    env = make_vec(ENV, episodes, seed=seed)
    try:
        obs = env.reset(seed=seed)
        running = np.ones(episodes, dtype=bool)
        returns = np.zeros(episodes)
        states = []
        while running.any():
            states.append(obs[running])
            with no_grad():
                actions = agent.distribution(obs).mode()
            obs, rewards, terminated, truncated, _ = env.step(actions)
            returns += rewards * running
            running &= ~(terminated | truncated)
    finally:
        env.close()
    return np.concatenate(states), returns


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(NAME, __doc__).parse_args(argv)
    timer = common.Timer()
    setting = QUICK if args.quick else FULL
    logdir, figure = common.paths(NAME, args)
    logdir.mkdir(parents=True, exist_ok=True)
    agent = trained_agent(setting, logdir)
    try:
        states, returns = visited_states(agent, setting["episodes"])
        grads = policy_sensitivity(agent, states)
        # the policy's preference for pushing right: log pi(right|s) - log pi(left|s)
        right, left = np.ones(len(states), np.int64), np.zeros(len(states), np.int64)
        log_odds = input_gradients(
            lambda s: agent.distribution(s).log_prob(right) - agent.distribution(s).log_prob(left),
            states)
    finally:
        agent.close()
    std = states.std(axis=0)
    stats = {}
    for key in ("log_prob", "value"):
        g = grads[key].astype(np.float64)
        signed = (log_odds if key == "log_prob" else grads[key]).astype(np.float64)
        stats[key] = {"abs": np.abs(g).mean(axis=0), "signed": signed.mean(axis=0),
                      "scaled": np.abs(g).mean(axis=0) * std}

    fig, axes = new_figure(ncols=3, nrows=2, size=(4.4, 3.2))
    x = np.arange(len(FEATURES))
    short = ["cart\nposition", "cart\nvelocity", "pole\nangle", "pole angular\nvelocity"]
    panels = {
        "log_prob": ["mean |d log π(a*|s) / ds|, a* greedy", "the same × std of the feature",
                     "mean d [log π(right|s) − log π(left|s)] / ds"],
        "value": ["mean |dV(s) / ds|", "the same × std of the feature", "mean dV(s) / ds"],
    }
    for row, key in enumerate(("log_prob", "value")):
        for col, (what, color) in enumerate((("abs", "tab:blue"), ("scaled", "tab:orange"),
                                             ("signed", "tab:green"))):
            ax = axes[row, col]
            ax.bar(x, stats[key][what], color=color)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_title(panels[key][col], fontsize=9)
            ax.set_xticks(x, short, fontsize=8)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{ENV}: input gradients of the trained policy (top) and value (bottom), "
                 f"averaged over {len(states):,} visited states (greedy return "
                 f"{returns.mean():.0f})", fontsize=10)
    save_figure(fig, figure)

    rows = ["| feature | std over states | mean abs d log pi(a*) / ds | × std | "
            "mean d log-odds(right) / ds | mean abs dV/ds | × std | mean dV/ds |",
            "|-|-|-|-|-|-|-|-|"]
    for j, name in enumerate(FEATURES):
        lp, v = stats["log_prob"], stats["value"]
        rows.append(f"| {name} | {std[j]:.3g} | {lp['abs'][j]:.3g} | {lp['scaled'][j]:.3g} | "
                    f"{lp['signed'][j]:+.3g} | {v['abs'][j]:.3g} | {v['scaled'][j]:.3g} | "
                    f"{v['signed'][j]:+.3g} |")
    table = "\n".join(rows)
    print(f"\ngreedy return over {len(returns)} episodes: {returns.mean():.1f}; "
          f"{len(states)} states\n\n{table}")
    common.write_text(logdir / "table.md", table)
    seconds = timer.done(NAME)
    return {"figure": figure, "table": table, "stats": stats, "states": len(states),
            "greedy_return": float(returns.mean()), "seconds": seconds}


if __name__ == "__main__":
    main()
