"""Evaluation during training (SB3's EvalCallback): when it runs, what it writes, the best
checkpoint, resuming, and that it never changes the training."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import PPO, Reinforce, load
from rlgrad.checkpoint import load_checkpoint, save_checkpoint
from rlgrad.cli import main
from rlgrad.envs import make_vec
from rlgrad.train import EVAL_SEED_OFFSET, TrainingInterrupted, train

BOX = "SignalBox-v0"  # continuous rewards: evaluations differ from one update to the next
EVAL_STEPS = [128, 256, 320, 448, 512, 640]  # first update (of 64 steps) at or past 100 k


def make_ppo(env: str = BOX, seed: int = 0):
    return lambda: PPO(env, num_envs=2, num_steps=32, minibatch_size=32, hidden_sizes=(8,),
                       lr=3e-3, seed=seed)


def make_reinforce(seed: int = 0):
    """REINFORCE, whose resume is exact (its batches are whole episodes; PPO's rollouts run on
    through an update, and a resumed PPO starts its environments afresh)."""
    return lambda: Reinforce(BOX, Reinforce.config_class(
        num_envs=2, steps_per_update=64, hidden_sizes=(8,), lr=3e-2), seed=seed)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "evaluations.json").read_text())["evaluations"]


def same_arrays(a_dir: Path, b_dir: Path) -> None:
    a, _ = load_checkpoint(a_dir)
    b, _ = load_checkpoint(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_evaluations_after_the_first_update_past_each_multiple(tmp_path):
    summary = train(make_ppo(), 640, tmp_path, name="r", eval_every=100, eval_episodes=4,
                    progress=False)
    run = tmp_path / "r"
    records = history(run)
    assert [r["step"] for r in records] == EVAL_STEPS  # the final one (640) counted once
    for tag, key in (("eval/mean_return", "mean_return"), ("eval/std_return", "std_return"),
                     ("eval/mean_length", "mean_length")):
        logged = scalars(run, tag)
        assert [s for s, _ in logged] == EVAL_STEPS, tag
        assert [v for _, v in logged] == pytest.approx([r[key] for r in records], rel=1e-6)
    for r in records:
        assert len(r["returns"]) == len(r["lengths"]) == 4 and r["seed"] == EVAL_SEED_OFFSET
        assert r["mean_return"] == pytest.approx(np.mean(r["returns"]))
        assert r["lengths"] == [8] * 4  # SignalBox episodes end at their time limit
    assert len({r["mean_return"] for r in records}) == len(records)  # a real choice of best
    assert summary["eval_last"] == {k: records[-1][k] for k in
                                    ("step", "mean_return", "std_return", "mean_length")}
    assert summary["eval_seed"] == EVAL_SEED_OFFSET
    assert summary["eval_return_mean"] == records[-1]["mean_return"]


def test_the_best_checkpoint_is_the_best_logged_evaluation(tmp_path):
    summary = train(make_ppo(), 640, tmp_path, name="r", eval_every=100, eval_episodes=4,
                    progress=False)
    run = tmp_path / "r"
    logged = scalars(run, "eval/mean_return")
    best_step, best_value = max(logged, key=lambda sv: sv[1])
    assert best_step != logged[-1][0]  # not merely the last policy
    assert summary["eval_best"]["step"] == best_step
    assert summary["eval_best"]["mean_return"] == pytest.approx(best_value, rel=1e-6)
    _, meta = load_checkpoint(run / "best")
    assert meta["global_step"] == best_step
    _, last = load_checkpoint(run)
    assert last["global_step"] == 640  # the last checkpoint is beside it

    agent = load(run / "best")
    try:
        again = agent.evaluate(4, seed=summary["eval_seed"])
    finally:
        agent.close()
    assert float(np.mean(again)) == summary["eval_best"]["mean_return"]  # exactly


def test_evaluation_lengths_are_the_episodes_own(tmp_path):
    # CartPole pays 1 a step, so a return is the episode's length: two independent counts
    summary = train(make_ppo("CartPole-v1"), 256, tmp_path, name="r", eval_every=128,
                    eval_episodes=3, progress=False)
    records = history(tmp_path / "r")
    assert [r["step"] for r in records] == [128, 256]
    for r in records:
        assert r["returns"] == [float(n) for n in r["lengths"]]
        assert len(set(r["lengths"])) > 1 or r["lengths"][0] == 500
    # and as predict plays them, on the evaluation's own environments and seed
    agent = load(tmp_path / "r")
    env = make_vec("CartPole-v1", 3, seed=summary["eval_seed"])
    try:
        obs = env.reset(seed=summary["eval_seed"])
        lengths, running = np.zeros(3, int), np.ones(3, bool)
        while running.any():
            actions, _ = agent.predict(obs, deterministic=True)
            obs, _, terminated, truncated, _ = env.step(actions)
            lengths += running
            running &= ~(terminated | truncated)
    finally:
        env.close()
        agent.close()
    assert lengths.tolist() == records[-1]["lengths"]


def test_evaluating_changes_nothing_in_the_training(tmp_path):
    train(make_ppo(), 384, tmp_path, name="with", eval_every=64, eval_episodes=3,
          progress=False)
    train(make_ppo(), 384, tmp_path, name="without", eval_episodes=0, progress=False)
    same_arrays(tmp_path / "with", tmp_path / "without")
    assert scalars(tmp_path / "with", "charts/episodic_return") == \
        scalars(tmp_path / "without", "charts/episodic_return")


def test_without_eval_every_only_the_final_evaluation(tmp_path):
    summary = train(make_ppo(), 256, tmp_path, name="r", eval_episodes=2, progress=False)
    run = tmp_path / "r"
    assert not (run / "best").exists() and not (run / "evaluations.json").exists()
    assert summary["eval_best"] is None
    assert summary["eval_last"]["step"] == 256
    assert [s for s, _ in scalars(run, "eval/mean_return")] == [256]
    assert [s for s, _ in scalars(run, "eval/mean_length")] == [256]
    assert summary["eval_last"]["mean_length"] == 8.0


def ctrl_c_after(n: int):
    def callback(agent, info):
        if agent.num_updates == n:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


def test_a_resumed_run_evaluates_as_a_straight_one(tmp_path):
    kw = dict(eval_every=100, eval_episodes=4, progress=False)
    with pytest.raises(TrainingInterrupted):
        train(make_reinforce(), 640, tmp_path, name="resumed", callback=ctrl_c_after(6), **kw)
    assert [r["step"] for r in history(tmp_path / "resumed")] == EVAL_STEPS[:3]
    resumed = train(make_reinforce(), 640, resume_from=tmp_path / "resumed", **kw)
    straight = train(make_reinforce(), 640, tmp_path, name="straight", **kw)
    assert len({r["mean_return"] for r in history(tmp_path / "straight")}) > 1
    assert history(tmp_path / "resumed") == history(tmp_path / "straight")
    assert resumed["eval_best"] == straight["eval_best"]
    assert resumed["eval_last"] == straight["eval_last"]
    same_arrays(tmp_path / "resumed" / "best", tmp_path / "straight" / "best")
    assert [s for s, _ in scalars(tmp_path / "resumed", "eval/mean_return")] == EVAL_STEPS


def test_a_best_checkpoint_that_does_not_hold_the_best_is_dropped_on_resume(tmp_path):
    kw = dict(eval_every=100, eval_episodes=4, progress=False)
    with pytest.raises(TrainingInterrupted):
        train(make_reinforce(), 640, tmp_path, name="r", callback=ctrl_c_after(6), **kw)
    run = tmp_path / "r"
    data = json.loads((run / "evaluations.json").read_text())
    data["evaluations"][0]["mean_return"] = 100.0  # a best no later evaluation beats ...
    (run / "evaluations.json").write_text(json.dumps(data))
    arrays, meta = load_checkpoint(run)  # ... whose state best/ no longer holds
    assert meta["global_step"] == 384 != data["evaluations"][0]["step"]
    save_checkpoint(run / "best" / "checkpoint", arrays, meta)
    summary = train(make_reinforce(), 640, resume_from=run, **kw)
    assert summary["eval_best"]["step"] > 384  # chosen after the resume
    assert load_checkpoint(run / "best")[1]["global_step"] == summary["eval_best"]["step"]
    assert [r["step"] for r in history(run)] == EVAL_STEPS  # the history is kept
    assert history(run)[0]["mean_return"] == 100.0


def test_cli_eval_every(tmp_path, capsys):
    code = main(["train", "--agent", "ppo", "--env", BOX, "--total-steps", "256", "--logdir",
                 str(tmp_path), "--run-name", "r", "--eval-every", "128", "--eval-episodes",
                 "2", "--quiet", "--num-envs", "2", "--num-steps", "32", "--minibatch-size",
                 "32", "--hidden-sizes", "8"])
    assert code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["eval_best"]["step"] in (128, 256) and (tmp_path / "r" / "best").is_dir()


@pytest.mark.parametrize("args,match", [
    (["--eval-every", "100", "--eval-episodes", "0"], "eval_every=100 needs eval_episodes >= 1"),
    (["--eval-every", "-5"], "eval_every must be an integer >= 0, got -5"),
])
def test_bad_eval_options_fail_before_anything_is_written(tmp_path, capsys, args, match):
    code = main(["train", "--agent", "ppo", "--env", BOX, "--logdir", str(tmp_path / "logs"),
                 "--quiet", *args])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("rlgrad: error: ") and err.count("\n") == 1 and match in err, err
    assert not (tmp_path / "logs").exists()
