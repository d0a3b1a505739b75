"""Does the agent learn, how fast, and how reliably: one run per seed, a table per setting.

    python -m benchmarks.bench_learning --agent reinforce_baseline --env CartPole-v1 \\
        --seeds 1 2 3 4 5 6 7 8 9 10 --total-steps 200000 --threshold 475

For each seed: train with the agent's default options (plus any ``--set key=value``), evaluate the
final policy deterministically for 10 episodes, and report the evaluation return, the first
environment step at which the mean of the last 20 training episodes reached ``--threshold``,
and the wall time of training (runs go one after another, one thread each, so the times are not
inflated by each other). The last lines summarise: how many seeds reached the threshold in
evaluation, the median steps to threshold, the slowest run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from agents import AGENTS  # noqa: E402


def run_seed(agent_name: str, env_id: str, seed: int, total_steps: int, threshold: float,
             overrides: dict, eval_episodes: int = 10) -> dict:
    cls = AGENTS[agent_name]
    agent = cls(env_id, cls.config_class.from_dict(overrides), seed=seed)
    recent: list[float] = []
    reached = [None]

    def watch(a, info):
        for step, ret, _ in info["episodes"]:
            recent.append(ret)
            if reached[0] is None and len(recent) >= 20 and np.mean(recent[-20:]) >= threshold:
                reached[0] = step

    start = time.perf_counter()
    agent.learn(total_steps, watch)
    wall = time.perf_counter() - start
    returns = agent.evaluate(eval_episodes)
    agent.close()
    return {"seed": seed, "eval_return": float(np.mean(returns)), "steps_to_threshold": reached[0],
            "wall_seconds": wall, "steps": agent.global_step, "sps": agent.global_step / wall}


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="reinforce_baseline", choices=sorted(AGENTS))
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--total-steps", type=int, default=200_000)
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. lr=0.005 normalize_advantages=false")
    args = parser.parse_args(argv)
    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}

    print(f"{args.agent} on {args.env}, {args.total_steps} steps, options {overrides or 'default'}")
    print("| seed | eval return (10 episodes) | steps until last-20 mean >= "
          f"{args.threshold:g} | wall (s) | steps/s |")
    print("|---:|---:|---:|---:|---:|")
    rows = []
    for seed in args.seeds:
        r = run_seed(args.agent, args.env, seed, args.total_steps, args.threshold, overrides)
        rows.append(r)
        reached = "never" if r["steps_to_threshold"] is None else f"{r['steps_to_threshold']:,}"
        print(f"| {seed} | {r['eval_return']:.1f} | {reached} | {r['wall_seconds']:.1f} "
              f"| {r['sps']:,.0f} |", flush=True)
    solved = sum(r["eval_return"] >= args.threshold for r in rows)
    steps = [r["steps_to_threshold"] for r in rows]
    finite = sorted(s for s in steps if s is not None)
    # a seed that never got there counts as infinitely slow, so the median is honest
    padded = finite + [float("inf")] * (len(steps) - len(finite))
    median = float(np.median(padded))
    print(f"\nevaluation >= {args.threshold:g}: {solved} of {len(rows)} seeds; median steps to "
          f"threshold: {median:,.0f}; slowest run {max(r['wall_seconds'] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
