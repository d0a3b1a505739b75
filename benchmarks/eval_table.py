"""The learning table of a directory of runs: per seed, the final evaluation and when the
training curve first reached a threshold; then how many seeds reached it.

    python -m benchmarks.eval_table runs/bench/ppo_cartpole --threshold 475

Each run's ``summary.json`` gives its final evaluation (10 deterministic episodes after
training, ``rlgrad train``'s default) and its steps; its TensorBoard events give the first
environment step at which the mean of the last 20 training episodes reached the threshold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def first_step_at(run_dir: Path, threshold: float, window: int = 20) -> int | None:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    if "charts/episodic_return" not in ea.Tags()["scalars"]:
        return None
    events = ea.Scalars("charts/episodic_return")
    values = np.array([e.value for e in events])
    for i in range(window - 1, len(values)):
        if values[i - window + 1:i + 1].mean() >= threshold:
            return int(events[i].step)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("--threshold", type=float, required=True)
    args = parser.parse_args(argv)
    rows = []
    for summary_path in sorted(Path(args.logdir).glob("*/summary.json")):
        s = json.loads(summary_path.read_text())
        rows.append((s["seed"], s.get("eval_return_mean"), s["total_steps"], s.get("sps"),
                     first_step_at(summary_path.parent, args.threshold)))
    rows.sort()
    print(f"| seed | evaluation (10 episodes) | steps | steps/s | last-20 mean first >= "
          f"{args.threshold:g} at |")
    print("|---:|---:|---:|---:|---:|")
    for seed, ev, steps, sps, at in rows:
        print(f"| {seed} | {ev:.1f} | {steps:,} | {sps:,.0f} | "
              f"{'never' if at is None else f'{at:,}'} |")
    evals = np.array([r[1] for r in rows])
    print(f"\n{int((evals >= args.threshold).sum())} of {len(rows)} seeds evaluate >= "
          f"{args.threshold:g}; mean evaluation {evals.mean():.1f} (std {evals.std():.1f})")


if __name__ == "__main__":
    main()
