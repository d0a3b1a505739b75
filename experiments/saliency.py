"""Which observation features a trained CartPole policy and its value function respond to.

One REINFORCE-with-baseline agent is trained on CartPole-v1; its greedy policy is then run for
a few episodes, and at every visited state the engine differentiates, with respect to the
observation, the log-probability of the chosen (greedy) action and the value estimate
(:func:`rlgrad.sensitivity.policy_sensitivity`). Bars: the mean absolute derivative per
feature, and the same times the feature's standard deviation over the visited states (the effect
of a typical change of that feature: the raw derivative favours features that vary little, like
the pole angle in radians). Dots: the signed mean of d log pi(push right | s) / ds.

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
from rlgrad.sensitivity import policy_sensitivity
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
        push_right = policy_sensitivity(agent, states, actions=np.ones(len(states), np.int64))
    finally:
        agent.close()
    std = states.std(axis=0)
    stats = {}
    for key in ("log_prob", "value"):
        g = grads[key].astype(np.float64)
        signed = (push_right[key] if key == "log_prob" else grads[key]).astype(np.float64)
        stats[key] = {"abs": np.abs(g).mean(axis=0), "signed": signed.mean(axis=0),
                      "scaled": np.abs(g).mean(axis=0) * std}

    fig, axes = new_figure(ncols=2, nrows=2, size=(5.4, 3.4))
    titles = {"log_prob": "log π(a*|s), a* the greedy action", "value": "V(s)"}
    x = np.arange(len(FEATURES))
    short = ["cart\nposition", "cart\nvelocity", "pole\nangle", "pole angular\nvelocity"]
    for row, key in enumerate(("log_prob", "value")):
        ax = axes[row, 0]
        ax.bar(x, stats[key]["abs"], color="tab:blue", label="mean |derivative|")
        signed_label = ("mean d log π(right|s)/ds (signed)" if key == "log_prob"
                        else "mean dV/ds (signed)")
        ax.plot(x, stats[key]["signed"], "o", color="black", label=signed_label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"d {titles[key]} / d s")
        ax.set_xticks(x, short, fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        ax = axes[row, 1]
        ax.bar(x, stats[key]["scaled"], color="tab:orange")
        ax.set_title(f"{titles[key].split(',')[0]}: mean |derivative| × std of the feature")
        ax.set_xticks(x, short, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{ENV}: input sensitivity over {len(states):,} visited states "
                 f"(greedy return {returns.mean():.0f})", fontsize=10)
    save_figure(fig, figure)

    rows = ["| feature | std over states | mean abs d log pi(a*) / ds | × std | "
            "mean d log pi(right) / ds | mean abs dV/ds | × std | mean dV/ds |",
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
