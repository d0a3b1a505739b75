"""A training run alone and beside one busy process: does rlgrad hold its speed on a shared
machine?

    python -m benchmarks.bench_contention [--steps 100000] [--repeats 3]

Each repetition times ``rlgrad train --agent reinforce_baseline --env CartPole-v1`` for
``--steps`` steps (the training's wall time from its ``summary.json``) once alone and once while
another process spins on one core, alternating which goes first. With numpy's BLAS at its
default of one thread per core, two threads per 64-unit matrix product spin against the busy
process (measured 5-14x slower before rlgrad limited them); training now runs with one thread
(threadpoolctl), so on a machine with a free core the ratio should be near 1. Target: beside /
alone <= 1.3. Meaningful only on an otherwise idle machine with at least two cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SPIN = "while True: pass"


def train_seconds(steps: int, logdir: Path) -> float:
    subprocess.run([sys.executable, "-m", "rlgrad", "train", "--agent", "reinforce_baseline",
                    "--env", "CartPole-v1", "--total-steps", str(steps), "--seed", "1",
                    "--logdir", str(logdir), "--eval-episodes", "0", "--quiet"], check=True)
    (summary,) = logdir.glob("*/summary.json")
    seconds = json.loads(summary.read_text())["wall_seconds"]
    for f in sorted(logdir.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    return float(seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    alone, beside = [], []
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        for rep in range(args.repeats):
            for busy in ((False, True) if rep % 2 == 0 else (True, False)):
                spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
                try:
                    seconds = train_seconds(args.steps, logdir)
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()
                (beside if busy else alone).append(seconds)
                print(f"repeat {rep + 1}: {'beside a busy process' if busy else 'alone'} "
                      f"{seconds:.2f} s", flush=True)
    a, b = statistics.median(alone), statistics.median(beside)
    print(f"\nalone {a:.2f} s, beside one busy process {b:.2f} s (medians of {args.repeats}): "
          f"beside / alone = {b / a:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
