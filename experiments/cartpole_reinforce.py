"""The main job: REINFORCE with a learned baseline on CartPole-v1, logged to TensorBoard.

    python -m experiments.cartpole_reinforce [--seed 1] [--total-steps 200000] [--logdir runs]

Trains with the agent's default options, evaluates the final policy for 10 episodes, prints the
summary and the command that opens TensorBoard on the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass

from agents import ReinforceBaseline
from rlgrad.train import TrainingInterrupted, train


@dataclass
class Args:
    seed: int = 1
    """seed of the run (environments, initial weights, action sampling)"""
    total_steps: int = 200_000
    """environment steps to train for"""
    logdir: str = "runs"
    """directory of runs; this one goes to LOGDIR/CartPole-v1__reinforce_baseline__SEED__TIME"""
    env_id: str = "CartPole-v1"
    """the Gymnasium environment"""


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Args()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--total-steps", type=int, default=defaults.total_steps)
    parser.add_argument("--logdir", default=defaults.logdir)
    parser.add_argument("--env-id", default=defaults.env_id)
    return Args(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = train(lambda: ReinforceBaseline(args.env_id, seed=args.seed),
                        args.total_steps, args.logdir, env_id=args.env_id)
    except TrainingInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=1))
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if not os.path.exists(tensorboard):
        tensorboard = "tensorboard"
    print(f"\nwatch the curves:  {shlex.quote(tensorboard)} --logdir {shlex.quote(args.logdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
