"""Training runs end to end: the CLI, files on disk, TensorBoard, Ctrl-C, faults, bad input."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from threadpoolctl import threadpool_info, threadpool_limits

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import Reinforce, ReinforceBaseline
from rlgrad.checkpoint import load_checkpoint
from rlgrad.cli import main
from rlgrad.envs import NonFiniteError
from rlgrad.train import TrainingInterrupted, train
from tests.tiny_envs import Signal

ROOT = Path(__file__).resolve().parents[1]
SIGNAL = "tests.tiny_envs:Signal-v0"
SMALL = ["--num-envs", "4", "--steps-per-update", "256", "--hidden-sizes", "16"]


def only_run_dir(logdir: Path) -> Path:
    (run,) = [p for p in logdir.iterdir() if p.is_dir()]
    return run


def scalars(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return acc


def test_cli_train_writes_run_directory_tensorboard_checkpoint_and_summary(tmp_path, capsys):
    code = main(["train", "--agent", "reinforce_baseline", "--env", SIGNAL, "--total-steps",
                 "3000", "--seed", "4", "--logdir", str(tmp_path), "--eval-episodes", "5",
                 "--quiet", *SMALL])
    assert code == 0
    run = only_run_dir(tmp_path)
    assert run.name.startswith("tests.tiny_envs_Signal-v0__reinforce_baseline__4__")
    summary = json.loads((run / "summary.json").read_text())
    for key in ("eval_return_mean", "eval_return_std", "total_steps", "wall_seconds"):
        assert key in summary
    assert summary["total_steps"] <= 3000
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 4 and config["num_envs"] == 4 and config["hidden_sizes"] == [16]

    acc = scalars(run)
    tags = set(acc.Tags()["scalars"])
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS",
                "charts/learning_rate", "losses/policy_loss", "losses/value_loss",
                "losses/entropy", "diagnostics/grad_norm", "losses/explained_variance"):
        assert tag in tags, tag
    returns = acc.Scalars("charts/episodic_return")
    assert all(0 <= e.value <= 8 for e in returns)
    steps = [e.step for e in returns]
    assert steps == sorted(steps) and steps[-1] <= 3000
    assert acc.Scalars("charts/learning_rate")[0].value == pytest.approx(1e-2)
    text = acc.Tensors("hyperparameters")[0].tensor_proto.string_val[0].decode()
    assert "|value_steps|10|" in text.replace(" ", "")

    arrays, meta = load_checkpoint(run)
    assert meta["global_step"] == summary["total_steps"]
    assert any(k.startswith("value.") for k in arrays)

    # rlgrad eval CHECKPOINT
    capsys.readouterr()
    assert main(["eval", str(run / "checkpoint.json"), "--episodes", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["returns"]) == 3 and 0 <= result["return_mean"] <= 8


def test_same_seed_twice_gives_identical_curves(tmp_path):
    curves = []
    for name in ("a", "b"):
        main(["train", "--agent", "reinforce", "--env", SIGNAL, "--total-steps", "2000",
              "--logdir", str(tmp_path), "--run-name", name, "--quiet", "--eval-episodes", "0",
              *SMALL])
        acc = scalars(tmp_path / name)
        curves.append([(e.step, e.value) for e in acc.Scalars("charts/episodic_return")])
    assert curves[0] == curves[1] and len(curves[0]) > 10


def test_interrupted_run_saves_its_last_update_and_resume_matches_a_straight_run(tmp_path):
    def make():
        return ReinforceBaseline(SIGNAL, ReinforceBaseline.config_class(
            num_envs=4, steps_per_update=256, hidden_sizes=(16,)), seed=9)

    def ctrl_c_after_three(agent, info):
        if agent.num_updates == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the handler turns it into a stop request

    with pytest.raises(TrainingInterrupted) as exc:
        train(make, 4000, tmp_path / "a", name="run", eval_episodes=0, callback=ctrl_c_after_three,
              progress=False)
    run = tmp_path / "a" / "run"
    assert exc.value.run_dir == run
    _, meta = load_checkpoint(run)
    assert meta["num_updates"] == 3
    assert not (run / "summary.json").exists()
    assert len(scalars(run).Scalars("charts/SPS")) == 3  # flushed

    resumed = train(make, 4000, resume_from=run, eval_episodes=0, progress=False)
    straight = train(make, 4000, tmp_path / "b", name="run", eval_episodes=0, progress=False)
    assert resumed["total_steps"] == straight["total_steps"]
    a, _ = load_checkpoint(run)
    b, _ = load_checkpoint(tmp_path / "b" / "run")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_ctrl_c_on_the_command_line_exits_130_with_a_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "rlgrad", "train", "--agent", "reinforce_baseline", "--env",
           "CartPole-v1", "--total-steps", "100000000", "--logdir", str(tmp_path), "--run-name",
           "long", "--save-every", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "long" / "checkpoint.json").exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"no checkpoint appeared: {proc.communicate(timeout=5)}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err
    _, meta = load_checkpoint(tmp_path / "long")
    assert meta["num_updates"] >= 1
    assert not (tmp_path / "long" / "summary.json").exists()


def test_nan_in_an_observation_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    def make():
        return Reinforce("tests.tiny_envs:Tiny-v0", Reinforce.config_class(
            num_envs=1, steps_per_update=16, hidden_sizes=(8,)), seed=0,
            env_kwargs={"nan_after": 100})

    with pytest.raises(NonFiniteError, match="env index 0"):
        train(make, 10_000, tmp_path, name="run", save_every=1, progress=False)
    arrays, meta = load_checkpoint(tmp_path / "run")
    assert 0 < meta["global_step"] <= 100
    assert all(np.isfinite(v).all() for v in arrays.values())


@pytest.mark.parametrize("args,match", [
    (["--env", "Cartpole-v1"], "(?i)did you mean"),
    (["--env", "tests.tiny_envs:TinyDict-v0"], "Discrete"),
    (["--lr", "0"], "lr"),
    (["--lr", "-0.1"], "lr"),
    (["--gamma", "1.01"], "gamma"),
    (["--total-steps", "0"], "total_steps"),
    (["--seed", "-3"], "seed"),
    (["--optimizer", "adamm"], "did you mean"),
    (["--agent", "reinforc"], "did you mean 'reinforce'"),
    (["--agent", "reinforce", "--value-lr", "0.1"], "do not apply"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, capsys, args, match):
    logdir = tmp_path / "logs"
    base = {"--agent": "reinforce_baseline", "--env": SIGNAL, "--total-steps": "1000"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = ["train", *[x for kv in base.items() for x in kv], "--logdir", str(logdir), "--quiet"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert re.search(match, err, re.IGNORECASE), err
    assert not logdir.exists()


def test_unwritable_logdir_fails_before_anything_is_written(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for logdir in (blocker / "runs", Path("/proc/rlgrad-runs")):
        code = main(["train", "--agent", "reinforce", "--env", SIGNAL, "--total-steps", "100",
                     "--logdir", str(logdir), "--quiet"])
        assert code != 0
        assert "logdir" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_help_documents_every_option_and_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ("--optimizer", "--lr", "--gamma", "--num-envs", "--hidden-sizes",
                   "--steps-per-update", "--ent-coef", "--max-grad-norm", "--minibatch-size",
                   "--value-lr", "--value-steps", "--total-steps", "--seed", "--logdir",
                   "--resume", "--eval-episodes"):
        assert option in out, option
    assert "(default: 0.99)" in out and "reinforce: 'adam'" in out


def test_a_users_own_agent_class_by_module_path(tmp_path):
    code = main(["train", "--agent", "tests.custom_agent:EntropyReinforce", "--env", SIGNAL,
                 "--total-steps", "1000", "--logdir", str(tmp_path), "--quiet",
                 "--eval-episodes", "2", "--bonus", "0.5", *SMALL])
    assert code == 0
    run = only_run_dir(tmp_path)
    assert "entropy_reinforce" in run.name
    assert "diagnostics/entropy_bonus" in scalars(run).Tags()["scalars"]


def test_eval_records_one_video_per_episode(tmp_path, capsys):
    pytest.importorskip("moviepy", reason="the video extra (moviepy) is not installed")
    assert main(["train", "--agent", "reinforce", "--env", "CartPole-v1", "--total-steps",
                 "500", "--logdir", str(tmp_path), "--run-name", "r", "--quiet",
                 "--eval-episodes", "0", "--steps-per-update", "250"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--episodes", "2", "--video",
                 str(tmp_path / "videos")]) == 0
    result = json.loads(capsys.readouterr().out)
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
    assert len(result["returns"]) == 2


# ---- run directories and their locks --------------------------------------------------------

STAMP = 1_700_000_000
NAME = f"tests.tiny_envs_Signal-v0__reinforce__0__{STAMP}"


def make_tiny(seed: int = 0):
    return lambda: Reinforce(SIGNAL, Reinforce.config_class(
        num_envs=2, steps_per_update=64, hidden_sizes=(8,)), seed=seed)


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: STAMP + 0.5)  # the clock of the default name
    first = train(make_tiny(), 128, tmp_path, eval_episodes=0, progress=False)
    kept = {p.name: p.read_bytes() for p in (tmp_path / NAME).iterdir() if p.is_file()}
    second = train(make_tiny(), 256, tmp_path, eval_episodes=0, progress=False)
    assert Path(first["run_dir"]) == tmp_path / NAME
    assert Path(second["run_dir"]) == tmp_path / f"{NAME}-1"
    assert {p.name: p.read_bytes() for p in (tmp_path / NAME).iterdir() if p.is_file()} == kept
    assert load_checkpoint(tmp_path / NAME)[1]["global_step"] == 128
    assert load_checkpoint(tmp_path / f"{NAME}-1")[1]["global_step"] == 256


def _train_at_the_barrier(logdir: Path, barrier) -> None:
    barrier.wait(timeout=60)
    train(make_tiny(), 256, logdir, eval_episodes=0, progress=False)


def test_two_processes_started_at_once_get_two_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: STAMP + 0.5)  # the children inherit the clock
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_train_at_the_barrier, args=(tmp_path, barrier))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME, f"{NAME}-1"]
    for run in tmp_path.iterdir():
        arrays, meta = load_checkpoint(run)
        assert meta["global_step"] == 256 and meta["num_updates"] == 4
        assert json.loads((run / "summary.json").read_text())["run_dir"] == str(run)
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        assert not (run / ".lock").exists()


def test_a_run_holds_its_lock_while_it_trains_and_removes_it_at_the_end(tmp_path):
    seen = []

    def look(agent, info):
        seen.append(json.loads((tmp_path / "r" / ".lock").read_text()))

    train(make_tiny(), 128, tmp_path, name="r", eval_episodes=0, progress=False, callback=look)
    assert len(seen) == 2
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (tmp_path / "r" / ".lock").exists()


def _hold_lock(run_dir: Path, ready, done) -> None:
    from rlgrad.train import RunLock

    RunLock(run_dir).acquire()
    ready.set()
    done.wait(timeout=120)


def test_the_lock_is_exclusive_and_a_dead_owners_lock_is_taken_over(tmp_path):
    from rlgrad.train import RunLock, RunLocked

    train(make_tiny(), 128, tmp_path, name="r", eval_episodes=0, progress=False)
    run = tmp_path / "r"
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(run, ready, done))
    holder.start()
    try:
        assert ready.wait(timeout=60)
        assert RunLock(run).owner()["pid"] == holder.pid
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on host"):
            RunLock(run).acquire()
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            train(make_tiny(), 256, resume_from=run, eval_episodes=0, progress=False)
        assert load_checkpoint(run)[1]["global_step"] == 128  # untouched
    finally:
        holder.kill()
        holder.join()
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # left by the kill
    assert RunLock(run).owner() is None  # its owner is dead: stale
    train(make_tiny(), 256, resume_from=run, eval_episodes=0, progress=False)
    assert load_checkpoint(run)[1]["global_step"] == 256
    assert not (run / ".lock").exists()


def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    from rlgrad.train import RunLock, RunLocked

    record = {"pid": os.getpid(), "host": socket.gethostname(), "start": "1", "time": 0}
    (tmp_path / ".lock").write_text(json.dumps(record))  # our pid, but not our start time
    assert RunLock(tmp_path).owner() is None
    record["host"] = "another-host"  # a host we cannot look at: taken as live
    (tmp_path / ".lock").write_text(json.dumps(record))
    assert RunLock(tmp_path).owner() == record
    with pytest.raises(RunLocked, match="pid .* on host another-host"):
        RunLock(tmp_path).acquire()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    from rlgrad.train import RunLock

    with RunLock(tmp_path) as outer:
        with RunLock(tmp_path) as inner:
            assert inner.held and outer.held
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()


# ---- an error of the environment ------------------------------------------------------------


class Flaky(Signal):
    """Signal-v0 that raises a RuntimeError once ``fail_at`` steps were taken by all of its
    instances (None: never)."""

    fail_at: int | None = None
    steps = 0

    def step(self, action):
        Flaky.steps += 1
        if Flaky.fail_at is not None and Flaky.steps > Flaky.fail_at:
            raise RuntimeError("the simulator lost its state")
        return super().step(action)


gym.register("Flaky-v0", entry_point=Flaky, max_episode_steps=8)


def test_an_environment_error_saves_the_last_update_and_resume_continues_exactly(
        tmp_path, capsys, monkeypatch):
    opts = ["--agent", "reinforce", "--env", "Flaky-v0", "--num-envs", "2",
            "--steps-per-update", "64", "--hidden-sizes", "8", "--eval-episodes", "0",
            "--quiet", "--total-steps", "640", "--save-every", "100", "--logdir", str(tmp_path)]
    monkeypatch.setattr(Flaky, "steps", 0)
    monkeypatch.setattr(Flaky, "fail_at", 300)  # in the fifth batch of 64 steps
    assert main(["train", *opts, "--run-name", "broken"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rlgrad: error: ") and err.count("\n") == 1, err
    assert re.search("Flaky-v0.*RuntimeError.*the simulator lost its state", err), err
    assert f"saved {tmp_path / 'broken'} at step 256" in err
    _, meta = load_checkpoint(tmp_path / "broken")
    assert (meta["global_step"], meta["num_updates"]) == (256, 4)  # the last completed update
    assert not (tmp_path / "broken" / ".lock").exists()

    monkeypatch.setattr(Flaky, "fail_at", None)
    assert main(["train", "--resume", str(tmp_path / "broken"), "--total-steps", "640",
                 "--quiet", "--eval-episodes", "0"]) == 0
    assert main(["train", *opts, "--run-name", "straight"]) == 0
    a, _ = load_checkpoint(tmp_path / "broken")
    b, _ = load_checkpoint(tmp_path / "straight")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_an_error_of_the_agent_is_not_called_an_environment_error(tmp_path):
    class Broken(Reinforce):
        def loss(self, *args, **kw):
            raise RuntimeError("bug in the loss")

    with pytest.raises(RuntimeError, match="^bug in the loss$"):
        train(lambda: Broken(SIGNAL, Broken.config_class(num_envs=2, steps_per_update=64,
                                                         hidden_sizes=(8,))),
              128, tmp_path, name="r", eval_episodes=0, progress=False)
    assert load_checkpoint(tmp_path / "r")[1]["num_updates"] == 0  # what there was: saved


# ---- math threads ---------------------------------------------------------------------------


def _thread_counts() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info()}


def test_training_and_evaluation_run_with_one_math_thread(tmp_path):
    seen = {}

    class Probe(Reinforce):
        def evaluate(self, *args, **kw):
            seen["evaluate"] = _thread_counts()
            return super().evaluate(*args, **kw)

    def look(agent, info):
        seen["learn"] = _thread_counts()

    with threadpool_limits(2):  # the caller's process has more than one thread
        train(lambda: Probe(SIGNAL, Probe.config_class(num_envs=2, steps_per_update=64,
                                                       hidden_sizes=(8,))),
              64, tmp_path, eval_episodes=1, progress=False, callback=look)
        assert _thread_counts() == {2}  # restored
    assert seen == {"learn": {1}, "evaluate": {1}}


def test_math_threads_limits_and_restores():
    from rlgrad.threads import math_threads

    with threadpool_limits(2):
        with pytest.raises(KeyError):
            with math_threads(1):
                assert _thread_counts() == {1}
                raise KeyError("restored after an error too")
        assert _thread_counts() == {2}
        with math_threads(None):
            assert _thread_counts() == {2}
    for bad in (0, -1, True, 1.0, "1"):
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            with math_threads(bad):
                pass


# ---- TensorBoard tags -----------------------------------------------------------------------


def test_metric_tags_are_cleanrls():
    from rlgrad.train import metric_tag

    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl",
                "clipfrac", "explained_variance"):
        assert metric_tag(key) == f"losses/{key}"
    for key in ("grad_norm", "grad_variance", "cg_residual", "cg_iterations",
                "line_search_steps", "step_size", "surrogate_improvement",
                "line_search_rejected", "entropy_bonus", "bc_loss"):
        assert metric_tag(key) == f"diagnostics/{key}"
    assert metric_tag("curvature/hessian_max") == "curvature/hessian_max"
    assert metric_tag("losses/custom") == "losses/custom"


SECOND_ORDER = {"cg_residual": 1e-3, "cg_iterations": 10.0, "line_search_steps": 2.0,
                "step_size": 0.5, "surrogate_improvement": 0.01, "line_search_rejected": 0.0,
                "approx_kl": 0.004, "curvature/hessian_max": 3.0}


class SecondOrderLike(Reinforce):
    """Reports what TRPO / NPG report after their natural-gradient step (fixed values)."""

    name = "second_order_like"

    def after_update(self, batch):
        return dict(SECOND_ORDER)


def test_tensorboard_tags_of_every_metric_keyed_by_environment_steps(tmp_path):
    from agents import PPO

    train(lambda: PPO(SIGNAL, num_envs=2, num_steps=32, minibatch_size=32, hidden_sizes=(8,)),
          192, tmp_path, name="ppo", eval_episodes=0, progress=False)
    acc = scalars(tmp_path / "ppo")
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl",
                "clipfrac", "explained_variance"):
        assert [e.step for e in acc.Scalars(f"losses/{key}")] == [64, 128, 192], key
    assert [e.step for e in acc.Scalars("diagnostics/grad_norm")] == [64, 128, 192]
    tags = set(acc.Tags()["scalars"])
    assert not {t for t in tags if t.startswith("diagnostics/")} - {"diagnostics/grad_norm"}

    train(lambda: SecondOrderLike(SIGNAL, SecondOrderLike.config_class(
        num_envs=2, steps_per_update=64, hidden_sizes=(8,), grad_variance_batches=2)),
          128, tmp_path, name="second", eval_episodes=0, progress=False)
    acc = scalars(tmp_path / "second")
    for key, value in SECOND_ORDER.items():
        tag = {"approx_kl": "losses/approx_kl"}.get(
            key, key if "/" in key else f"diagnostics/{key}")
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [64, 128], tag
        assert events[0].value == pytest.approx(value), tag
    assert [e.step for e in acc.Scalars("diagnostics/grad_variance")] == [64, 128]
    assert not any(t.startswith("diagnostics/curvature") for t in acc.Tags()["scalars"])


# ---- learning-rate schedules ----------------------------------------------------------------


@pytest.mark.parametrize("schedule,warmup", [("linear", 0), ("cosine", 0), ("cosine", 300),
                                             ("constant", 200)])
def test_learning_rate_schedules_as_logged(tmp_path, schedule, warmup):
    lr, total, batch = 0.02, 1024, 64
    code = main(["train", "--agent", "reinforce", "--env", SIGNAL, "--total-steps", str(total),
                 "--logdir", str(tmp_path), "--run-name", "r", "--eval-episodes", "0",
                 "--quiet", "--num-envs", "2", "--steps-per-update", str(batch),
                 "--hidden-sizes", "8", "--lr", str(lr), "--lr-schedule", schedule,
                 "--warmup-steps", str(warmup)])
    assert code == 0
    logged = [(e.step, e.value) for e in scalars(tmp_path / "r").Scalars("charts/learning_rate")]
    assert [s for s, _ in logged] == list(range(batch, total + 1, batch))
    for step, value in logged:
        s = step - batch  # the rate of an update is set at the step its batch starts from
        f = {"constant": 1.0, "linear": 1 - s / total,
             "cosine": 0.5 * (1 + np.cos(np.pi * s / total))}[schedule]
        if warmup:
            f *= min(1.0, (s + 1) / warmup)
        assert value == pytest.approx(lr * f, rel=1e-6), (step, value)
    if schedule == "linear":
        assert logged[-1][1] == pytest.approx(lr * batch / total)  # the last update: near 0
        assert logged[-1][1] < lr / 10


def test_schedule_options_are_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--lr-schedule" in out and "--warmup-steps" in out


# ---- the HParams dashboard ------------------------------------------------------------------


def hparams_records(run_dir: Path) -> list[tuple[str, object]]:
    """Every HParams record of every event file of the run, in the order written:
    ("start", SessionStartInfo) or ("end", SessionEndInfo)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(
                    value.metadata.plugin_data.content)
                kind = data.WhichOneof("data")
                if kind == "session_start_info":
                    out.append(("start", data.session_start_info))
                elif kind == "session_end_info":
                    out.append(("end", data.session_end_info))
    return out


def test_a_run_writes_its_hparams_start_and_end_records(tmp_path):
    from tensorboard.plugins.hparams import api_pb2

    summary = train(make_tiny(seed=3), 256, tmp_path, name="r", eval_episodes=2,
                    progress=False, extra_hparams={"group": "g"})
    records = hparams_records(tmp_path / "r")
    assert [kind for kind, _ in records] == ["start", "end"]
    start = records[0][1]
    assert start.hparams["agent"].string_value == "reinforce"
    assert start.hparams["env_id"].string_value == SIGNAL
    assert start.hparams["seed"].number_value == 3
    assert start.hparams["lr"].number_value == pytest.approx(5e-3)
    assert start.hparams["hidden_sizes"].string_value == "[8]"
    assert start.hparams["group"].string_value == "g"
    assert records[1][1].status == api_pb2.STATUS_SUCCESS
    acc = scalars(tmp_path / "r")
    (ev,) = acc.Scalars("eval/mean_return")  # one point: the final evaluation
    assert (ev.step, ev.value) == (256, pytest.approx(summary["eval_return_mean"]))
    last = acc.Scalars("charts/episodic_return")[-1]
    assert (last.step, last.value) == (256, pytest.approx(summary["train_return_last20"]))


def test_a_failed_run_ends_with_status_failure(tmp_path):
    from tensorboard.plugins.hparams import api_pb2

    class Broken(Reinforce):
        def loss(self, mb):
            if self.num_updates == 2:
                raise RuntimeError("bug in the loss")
            return super().loss(mb)

    with pytest.raises(RuntimeError, match="bug in the loss"):
        train(lambda: Broken(SIGNAL, Broken.config_class(num_envs=2, steps_per_update=64,
                                                         hidden_sizes=(8,))),
              512, tmp_path, name="r", eval_episodes=0, progress=False)
    records = hparams_records(tmp_path / "r")
    assert [kind for kind, _ in records] == ["start", "end"]
    assert records[1][1].status == api_pb2.STATUS_FAILURE


def test_ctrl_c_writes_no_end_record_and_the_resumed_run_no_second_start(tmp_path):
    from tensorboard.plugins.hparams import api_pb2

    def ctrl_c_after_two(agent, info):
        if agent.num_updates == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(make_tiny(), 512, tmp_path, name="r", eval_episodes=1, progress=False,
              callback=ctrl_c_after_two)
    assert [kind for kind, _ in hparams_records(tmp_path / "r")] == ["start"]
    train(make_tiny(), 512, resume_from=tmp_path / "r", eval_episodes=1, progress=False)
    records = hparams_records(tmp_path / "r")
    assert [kind for kind, _ in records] == ["start", "end"]
    assert records[1][1].status == api_pb2.STATUS_SUCCESS


@pytest.mark.parametrize("kw,error,match", [
    ({"extra_config": {"seed": 1}}, ValueError, "extra_config key 'seed' is one train"),
    ({"extra_config": {"resumed": []}}, ValueError, "extra_config key 'resumed'"),
    ({"extra_config": {"lr": 0.1}}, ValueError, "extra_config key 'lr' is a config field"),
    ({"extra_config": {"x": object()}}, TypeError, "extra_config must be JSON data"),
    ({"extra_config": {"x": float("nan")}}, TypeError, "extra_config must be JSON data"),
    ({"extra_config": [("x", 1)]}, TypeError, "extra_config must be a mapping"),
    ({"eval_every": -1}, ValueError, "eval_every must be an integer >= 0"),
    ({"eval_every": True}, ValueError, "eval_every must be an integer >= 0"),
    ({"eval_every": 64, "eval_episodes": 0}, ValueError, "needs eval_episodes >= 1"),
    ({"eval_seed": -1}, ValueError, "eval_seed must be an integer >= 0"),
    ({"note": 3}, TypeError, "note must be a str or None"),
])
def test_bad_train_arguments_write_nothing(tmp_path, kw, error, match):
    with pytest.raises(error, match=match):
        train(make_tiny(), 64, tmp_path / "logs", progress=False, **kw)
    assert not (tmp_path / "logs").exists() or list((tmp_path / "logs").iterdir()) == []


def test_extra_config_goes_to_config_json_and_the_text_tab_only(tmp_path):
    record = {"file": "f.toml", "source": "s", "options": {"lr": 0.1}}
    train(make_tiny(), 64, tmp_path, name="r", eval_episodes=0, progress=False,
          extra_config={"preset": record}, note="preset: mine")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["preset"] == record and config["lr"] == 5e-3
    (start,) = [info for kind, info in hparams_records(tmp_path / "r") if kind == "start"]
    assert "preset" not in start.hparams and "lr" in start.hparams
    text = scalars(tmp_path / "r").Tensors("hyperparameters")[0].tensor_proto.string_val[0]
    assert '|preset|{"file": "f.toml"' in text.decode()
