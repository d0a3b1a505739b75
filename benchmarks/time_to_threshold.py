"""Wall time from process start until a run's training curve reaches a threshold.

    python -m benchmarks.time_to_threshold --agent ppo --env CartPole-v1 --threshold 475 \\
        --seeds 1 2 3 [--total-steps 100000]

Each seed is one ``rlgrad train`` process (its preset, if any, one math thread). The clock
starts just before the process is started (so imports and environment construction count) and
stops at the wall time TensorBoard recorded for the first training episode at which the mean of
the last 20 episodes reached the threshold.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def seconds_to_threshold(agent: str, env: str, seed: int, steps: int, threshold: float
                         ) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        subprocess.run([sys.executable, "-m", "rlgrad", "train", "--agent", agent, "--env", env,
                        "--seed", str(seed), "--total-steps", str(steps), "--logdir", tmp,
                        "--eval-episodes", "0", "--quiet"], check=True)
        (run,) = Path(tmp).iterdir()
        ea = EventAccumulator(str(run), size_guidance={"scalars": 0})
        ea.Reload()
        events = ea.Scalars("charts/episodic_return")
        values = np.array([e.value for e in events])
        for i in range(19, len(values)):
            if values[i - 19:i + 1].mean() >= threshold:
                return events[i].wall_time - start
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--total-steps", type=int, default=100_000)
    args = parser.parse_args(argv)
    times = []
    for seed in args.seeds:
        t = seconds_to_threshold(args.agent, args.env, seed, args.total_steps, args.threshold)
        times.append(t)
        print(f"seed {seed}: {'never' if t is None else f'{t:.1f} s'}", flush=True)
    reached = [t for t in times if t is not None]
    if reached:
        print(f"\nmedian {statistics.median(reached):.1f} s from process start to a last-20 "
              f"mean of {args.threshold:g} ({len(reached)} of {len(times)} seeds)")


if __name__ == "__main__":
    main()
