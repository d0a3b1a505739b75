"""The sweep: grid expansion and naming, checks before anything starts, skipping complete runs,
crashed runs (an exception, a dying process), the CLI, and the Ray backend on a local instance."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from threadpoolctl import threadpool_limits

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import AGENTS, Reinforce
from rlgrad.checkpoint import load_checkpoint
from rlgrad.cli import main
from rlgrad.sweep import Grid, RunSpec, parse_set, run_sweep

ROOT = Path(__file__).resolve().parents[1]

SIGNAL = "tests.tiny_envs:Signal-v0"
TINY = {"steps_per_update": [64], "num_envs": [2], "hidden_sizes": [(8,)]}
CRASHING = "tests.test_sweep:Crashing"


class Crashing(Reinforce):
    """Fails by seed: 13 raises, 14 exits its process, 15 is killed, 16 reports its threads."""

    name = "crashing"

    def loss(self, mb):
        if self.seed == 13:
            raise RuntimeError("boom at seed 13")
        if self.seed == 14:
            os._exit(3)
        if self.seed == 15:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.seed == 16:
            raise RuntimeError(f"threads={os.environ.get('OMP_NUM_THREADS')}")
        return super().loss(mb)


def tiny_grid(**kw) -> Grid:
    base = dict(agents=["reinforce"], envs=[SIGNAL], seeds=[1, 2], options=TINY,
                total_steps=256, eval_episodes=0)
    return Grid(**{**base, **kw})


# ---- the grid -------------------------------------------------------------------------------


def test_grid_is_the_product_with_deterministic_names():
    grid = Grid(agents=["reinforce", "reinforce_baseline"], envs=["CartPole-v1"],
                optimizers=["adam", "sgd"], lrs=[1e-2, 1e-3], seeds=[1, 2, 3],
                options={"ent_coef": [0.0, 0.01]})
    specs = grid.runs(AGENTS)
    assert len(specs) == 2 * 2 * 2 * 2 * 3
    assert len({s.name for s in specs}) == len(specs)
    assert [s.name for s in specs] == [s.name for s in grid.runs(AGENTS)]
    assert specs[0].name == "CartPole-v1__reinforce__adam__lr0.01__ent_coef0__seed1"
    assert specs[-1].name == \
        "CartPole-v1__reinforce_baseline__sgd__lr0.001__ent_coef0.01__seed3"
    assert specs[-1].config["ent_coef"] == 0.01 and specs[-1].config["optimizer"] == "sgd"
    assert specs[-1].agent == "agents.reinforce_baseline:ReinforceBaseline"


def test_defaults_appear_in_the_name():
    (spec,) = Grid(agents=["reinforce_baseline"], envs=["CartPole-v1"]).runs(AGENTS)
    assert spec.name == "CartPole-v1__reinforce_baseline__adam__lr0.01__seed0"
    assert spec.hparams()["total_steps"] == 100_000


def test_sizes_and_booleans_in_names():
    specs = tiny_grid(seeds=[0], options={"hidden_sizes": [(32, 16)],
                                          "normalize_advantages": [True, False]}).runs(AGENTS)
    assert [s.name.split("__", 2)[2] for s in specs] == [
        "adam__lr0.005__hidden_sizes32x16__normalize_advantagesTrue__seed0",
        "adam__lr0.005__hidden_sizes32x16__normalize_advantagesFalse__seed0"]


@pytest.mark.parametrize("kw,error,match", [
    ({"agents": ["reinforce_basline"]}, ValueError, "Did you mean 'reinforce_baseline'"),
    ({"agents": ["nope.module:Agent"]}, ValueError, "cannot import"),
    ({"optimizers": ["adm"]}, ValueError, "unknown optimizer 'adm'"),
    ({"options": {"value_lr": [0.1]}}, ValueError, "do not apply to agent 'reinforce'"),
    ({"options": {"no_such_field": [1]}}, ValueError, "no_such_field"),
    ({"agents": []}, ValueError, "Grid.agents has no values"),
    ({"envs": []}, ValueError, "Grid.envs has no values"),
    ({"seeds": []}, ValueError, "Grid.seeds has no values"),
    ({"lrs": []}, ValueError, "'lr' has no values"),
    ({"options": {"ent_coef": []}}, ValueError, "'ent_coef' has no values"),
    ({"lrs": [-1.0]}, ValueError, "lr must be > 0, got -1.0"),
    ({"lrs": [0.01, 1e-2]}, ValueError, "share the name"),
    ({"seeds": [1, 1]}, ValueError, "distinct"),
    ({"seeds": [-1]}, ValueError, "seed must be an integer >= 0, got -1"),
    ({"total_steps": 0}, ValueError, "total_steps"),
    ({"envs": ["NoSuchEnv-v9"]}, ValueError, "NoSuchEnv"),
    ({"options": {"normalize_advantages": ["yes"]}}, TypeError, "True or False"),
    ({"options": {"ent_coef": 0.1}}, TypeError, "list of values"),
    ({"options": {"lr": [0.1]}}, ValueError, "Grid\\(lrs=...\\)"),
])
def test_bad_grid_fails_before_anything_starts(tmp_path, kw, error, match):
    logdir = tmp_path / "sweep"
    with pytest.raises(error, match=match):
        run_sweep(tiny_grid(**kw), logdir, agents=AGENTS)
    assert not logdir.exists()


@pytest.mark.parametrize("kw,match", [
    ({"backend": "slurm"}, "backend must be one of"),
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"address": "auto"}, "is for backend='ray'"),
    ({"threads": 0}, "threads must be an integer >= 1"),
])
def test_bad_sweep_options(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run_sweep(tiny_grid(), tmp_path / "sweep", agents=AGENTS, **kw)
    assert not (tmp_path / "sweep").exists()


def test_parse_set_makes_axes_from_repeated_keys():
    options = parse_set(["ent_coef=0", "ent_coef=0.01", "hidden_sizes=32,32",
                         "normalize_advantages=false", "activation=relu"], [Reinforce])
    assert options == {"ent_coef": [0.0, 0.01], "hidden_sizes": [(32, 32)],
                       "normalize_advantages": [False], "activation": ["relu"]}
    with pytest.raises(ValueError, match="expected a finite number"):
        parse_set(["ent_coef=lots"], [Reinforce])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set(["ent_coef"], [Reinforce])
    with pytest.raises(ValueError, match="--lr"):
        parse_set(["lr=0.1"], [Reinforce])


# ---- running --------------------------------------------------------------------------------


def test_sweep_runs_every_run_and_a_rerun_skips_them(tmp_path):
    seen = []
    result = run_sweep(tiny_grid(lrs=[1e-2, 1e-3]), tmp_path, agents=AGENTS, workers=2,
                       on_result=seen.append)
    assert result.ok and [r.status for r in result.results] == ["done"] * 4
    assert sorted(r.name for r in seen) == sorted(r.name for r in result.results)
    for r in result.results:
        run_dir = tmp_path / r.name
        assert (run_dir / "summary.json").is_file()
        assert json.loads((run_dir / "config.json").read_text()) == r.spec.hparams()
        assert r.summary["total_steps"] <= 256
    mtimes = {r.name: (tmp_path / r.name / "summary.json").stat().st_mtime_ns
              for r in result.results}

    again = run_sweep(tiny_grid(lrs=[1e-2, 1e-3, 3e-3]), tmp_path, agents=AGENTS, workers=2)
    assert [r.status for r in again.results] == ["skipped"] * 4 + ["done"] * 2
    assert {r.name: (tmp_path / r.name / "summary.json").stat().st_mtime_ns
            for r in again.results[:4]} == mtimes
    assert again.results[0].summary == result.results[0].summary


def test_incomplete_run_is_redone_and_another_config_is_refused(tmp_path):
    (spec,) = tiny_grid(seeds=[1]).runs(AGENTS)
    run_dir = tmp_path / spec.name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(spec.hparams()))
    (run_dir / "events.out.tfevents.stale").write_text("left by a crash")
    result = run_sweep([spec], tmp_path)
    assert result.results[0].status == "done"
    assert not (run_dir / "events.out.tfevents.stale").exists()

    other = tiny_grid(seeds=[1], total_steps=512).runs(AGENTS)
    with pytest.raises(ValueError, match="another configuration.*total_steps: 256 there, 512"):
        run_sweep(other, tmp_path)
    assert (run_dir / "summary.json").is_file()


def test_crashed_runs_are_reported_and_the_others_finish(tmp_path):
    grid = tiny_grid(agents=[CRASHING], seeds=[1, 13, 14, 15, 16, 2])
    result = run_sweep(grid, tmp_path, workers=2)
    status = {r.spec.seed: r for r in result.results}
    assert [status[s].status for s in (1, 2)] == ["done", "done"]
    assert status[13].status == "failed"
    assert status[13].error == "RuntimeError: boom at seed 13"
    assert "boom at seed 13" in status[13].traceback and "def loss" not in status[13].error
    assert status[14].status == "failed" and "exited with code 3" in status[14].error
    assert status[15].status == "failed" and "SIGKILL" in status[15].error
    assert status[16].error == "RuntimeError: threads=1"  # one BLAS thread per worker
    assert not result.ok and len(result.failed) == 4
    assert "2 done, 0 skipped (complete before), 4 failed" in result.summary_line()

    again = run_sweep(grid, tmp_path, workers=2)
    assert [r.status for r in again.results] == ["skipped", "failed", "failed", "failed",
                                                 "failed", "skipped"]


def test_cli_sweep_then_plot(tmp_path, capsys):
    logdir = tmp_path / "sweep"
    argv = ["sweep", "--agent", "reinforce", "--env", SIGNAL, "--lr", "0.01", "0.001",
            "--seeds", "1", "2", "--total-steps", "256", "--eval-episodes", "0",
            "--set", "steps_per_update=64", "num_envs=2", "hidden_sizes=8",
            "--logdir", str(logdir), "--workers", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 runs: 4 done" in out and "lr0.001__steps_per_update64" in out
    assert main(argv) == 0
    assert "4 runs: 0 done, 4 skipped" in capsys.readouterr().out

    assert main(["plot", str(logdir), "--out", str(tmp_path / "p.png"), "--threshold", "1"]) == 0
    out = capsys.readouterr().out
    assert "| lr=0.001 | 2 |" in out and "| lr=0.01 | 2 |" in out
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["sweep", "--agent", "reinforce", "--env", SIGNAL, "--optimizer", "adm",
                 "--logdir", str(tmp_path / "bad")]) == 1
    assert "unknown optimizer 'adm'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_sweep_exits_nonzero_when_a_run_fails(tmp_path, capsys):
    argv = ["sweep", "--agent", CRASHING, "--env", SIGNAL, "--seeds", "1", "13",
            "--total-steps", "128", "--eval-episodes", "0", "--set", "steps_per_update=64",
            "num_envs=2", "hidden_sizes=8", "--logdir", str(tmp_path)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 done, 0 skipped (complete before), 1 failed" in captured.out
    assert "FAILED Signal-v0__crashing" in captured.err.replace("tests.tiny_envs_", "")
    assert "boom at seed 13" in captured.err


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys):
    assert main(["sweep", "--agent", "reinforce", "reinforce_baseline", "--env", "CartPole-v1",
                 "--seeds", "1", "2", "--dry-run", "--logdir", str(tmp_path / "x")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "4 runs" and lines[0] == "CartPole-v1__reinforce__adam__lr0.005__seed1"
    assert not (tmp_path / "x").exists()


# ---- Ray ------------------------------------------------------------------------------------


def test_ray_backend_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    grid = tiny_grid(agents=[CRASHING], seeds=[1, 13, 14])
    result = run_sweep(grid, tmp_path, backend="ray", workers=2)
    status = {r.spec.seed: r for r in result.results}
    assert status[1].status == "done" and (tmp_path / status[1].name / "summary.json").is_file()
    assert status[13].error == "RuntimeError: boom at seed 13"
    assert status[14].status == "failed" and status[14].error  # the worker died
    again = run_sweep(grid, tmp_path, backend="ray", workers=2)
    assert again.results[0].status == "skipped"


def test_runspec_travels_to_workers():
    (spec,) = tiny_grid(seeds=[1]).runs(AGENTS)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert RunSpec(**json.loads(json.dumps(dataclasses.asdict(spec)))) == \
        dataclasses.replace(spec, config=json.loads(json.dumps(spec.config)))


# ---- runs another process writes, runs to resume ---------------------------------------------


def same_arrays(a_dir: Path, b_dir: Path) -> None:
    a, _ = load_checkpoint(a_dir)
    b, _ = load_checkpoint(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{a_dir.name}: {k}")


def _hold_lock(run_dir: Path, ready, done) -> None:
    from rlgrad.train import RunLock

    RunLock(run_dir).acquire()
    ready.set()
    done.wait(timeout=120)


def test_a_run_another_process_is_writing_is_left_to_it(tmp_path):
    specs = tiny_grid().runs(AGENTS)
    busy = tmp_path / specs[0].name
    busy.mkdir()
    (busy / "config.json").write_text(json.dumps(specs[0].hparams()))
    (busy / "events.out.tfevents.theirs").write_text("the other process's events")
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(busy, ready, done))
    holder.start()
    try:
        assert ready.wait(timeout=60)
        result = run_sweep(specs, tmp_path, workers=2)
        assert [r.status for r in result.results] == ["elsewhere", "done"]
        assert f"running elsewhere: pid {holder.pid} on host" in result.results[0].error
        assert result.ok and "1 done, 0 skipped (complete before), 0 failed, 1 running " \
            "elsewhere" in result.summary_line()
        assert (busy / "events.out.tfevents.theirs").exists()  # not deleted
    finally:
        holder.kill()
        holder.join()
    # its owner is gone (a stale lock): the run has no checkpoint, so it is started again
    again = run_sweep(specs, tmp_path, workers=2)
    assert [r.status for r in again.results] == ["done", "skipped"]
    assert not (busy / "events.out.tfevents.theirs").exists()
    assert (busy / "summary.json").is_file() and not (busy / ".lock").exists()


def test_a_worker_that_finds_its_run_locked_reports_it_running_elsewhere(tmp_path):
    from rlgrad.sweep import _guarded_run

    (spec,) = tiny_grid(seeds=[1]).runs(AGENTS)
    run_dir = tmp_path / spec.name
    run_dir.mkdir()
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(run_dir, ready, done))
    holder.start()
    try:
        assert ready.wait(timeout=60)
        status, message, _ = _guarded_run(spec, str(tmp_path))
    finally:
        holder.kill()
        holder.join()
    assert status == "elsewhere" and f"pid {holder.pid}" in message
    assert list(run_dir.iterdir()) == [run_dir / ".lock"]


class SelfInterrupting(Reinforce):
    """Presses Ctrl-C on its whole sweep (its process group) during the fourth update of seed 2,
    when RLGRAD_TEST_CTRL_C is set."""

    name = "self_interrupting"

    def loss(self, mb):
        if os.environ.get("RLGRAD_TEST_CTRL_C") and self.seed == 2 and self.num_updates == 3 \
                and not getattr(self, "pressed", False):
            self.pressed = True
            os.killpg(os.getpgrp(), signal.SIGINT)
        return super().loss(mb)


def test_a_sweep_rerun_after_ctrl_c_resumes_the_runs_it_saved(tmp_path):
    options = {"steps_per_update": [64], "num_envs": [2], "hidden_sizes": [(8,)]}
    grid = Grid(agents=["tests.test_sweep:SelfInterrupting"], envs=[SIGNAL], seeds=[1, 2, 3],
                options=options, total_steps=512, eval_episodes=0)
    specs = grid.runs(AGENTS)
    logdir = tmp_path / "interrupted"
    argv = ["sweep", "--agent", "tests.test_sweep:SelfInterrupting", "--env", SIGNAL,
            "--seeds", "1", "2", "3", "--total-steps", "512", "--eval-episodes", "0", "--set",
            "steps_per_update=64", "num_envs=2", "hidden_sizes=8", "--workers", "2",
            "--logdir", str(logdir)]
    proc = subprocess.run([sys.executable, "-m", "rlgrad", *argv], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "RLGRAD_TEST_CTRL_C": "1"},
                          capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert "run the same command again to resume" in proc.stderr
    run2 = logdir / specs[1].name
    _, meta = load_checkpoint(run2)
    assert meta["num_updates"] == 4 and meta["global_step"] == 256  # its last update, saved
    assert not (run2 / "summary.json").exists() and not (run2 / ".lock").exists()
    first_events = sorted(run2.glob("events.out.tfevents.*"))
    assert len(first_events) == 1

    result = run_sweep(specs, logdir, workers=2)  # the rerun, with no Ctrl-C
    assert result.ok
    resumed = {r.spec.seed: r.resumed_at for r in result.results if r.status == "done"}
    assert resumed[2] == 256
    assert first_events[0].exists()  # continued, not started again
    acc = EventAccumulator(str(run2))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("charts/SPS")]
    assert steps == sorted(set(steps)) and len(steps) == 8  # every update logged once

    straight = run_sweep(specs, tmp_path / "straight", workers=2)
    assert [r.status for r in straight.results] == ["done"] * 3
    for spec in specs:
        same_arrays(logdir / spec.name, tmp_path / "straight" / spec.name)


def test_a_run_dir_without_a_loadable_checkpoint_is_started_again(tmp_path):
    (spec,) = tiny_grid(seeds=[1]).runs(AGENTS)
    run_sweep([spec], tmp_path / "straight")
    run_dir = tmp_path / "redo" / spec.name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(spec.hparams()))
    (run_dir / "checkpoint.json").write_text("{not json")  # torn: not loadable
    result = run_sweep([spec], tmp_path / "redo")
    assert result.results[0].status == "done" and result.results[0].resumed_at is None
    same_arrays(run_dir, tmp_path / "straight" / spec.name)


def test_train_and_sweep_give_bitwise_the_same_parameters(tmp_path, capsys):
    config = ["--num-envs", "8", "--steps-per-update", "2048", "--hidden-sizes", "64", "64"]
    with threadpool_limits(2):  # the calling process has more than one math thread
        assert main(["train", "--agent", "reinforce_baseline", "--env", SIGNAL,
                     "--total-steps", "4096", "--logdir", str(tmp_path / "train"),
                     "--run-name", "r", "--eval-episodes", "0", "--quiet", *config]) == 0
        assert main(["sweep", "--agent", "reinforce_baseline", "--env", SIGNAL, "--seeds", "0",
                     "--total-steps", "4096", "--eval-episodes", "0", "--logdir",
                     str(tmp_path / "sweep"), "--set", "num_envs=8", "steps_per_update=2048",
                     "hidden_sizes=64,64"]) == 0
    (run,) = (tmp_path / "sweep").iterdir()
    assert load_checkpoint(run)[1]["global_step"] == 4096
    same_arrays(tmp_path / "train" / "r", run)


def test_a_grid_with_more_environments_than_steps_per_batch_fails_before_anything(
        tmp_path, capsys):
    assert main(["sweep", "--agent", "reinforce", "--env", SIGNAL, "--logdir",
                 str(tmp_path / "s"), "--set", "num_envs=8", "steps_per_update=4"]) == 1
    assert "num_envs (8) is larger than steps_per_update (4)" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_set_parses_options_that_may_be_none(tmp_path):
    from agents import PPO

    assert parse_set(["target_kl=none", "target_kl=0.02"], [PPO]) == \
        {"target_kl": [None, 0.02]}
    with pytest.raises(ValueError, match="expected a finite number or none"):
        parse_set(["target_kl=lots"], [PPO])


def test_a_sweep_of_an_agent_with_action_space_defaults_finds_its_runs_again(tmp_path):
    # PPO leaves lr, num_envs, ... None until it knows the action space: the grid fills them in,
    # so the run names and config.json say what ran, and a rerun recognises its runs
    grid = Grid(agents=["ppo"], envs=[SIGNAL], seeds=[1], total_steps=128, eval_episodes=0,
                options={"num_envs": [2], "num_steps": [32], "minibatch_size": [32],
                         "hidden_sizes": [(8,)]})
    (spec,) = grid.runs(AGENTS)
    assert "__lr0.00025__" in spec.name and spec.config["update_epochs"] is not None
    assert run_sweep(grid, tmp_path, agents=AGENTS).results[0].status == "done"
    assert json.loads((tmp_path / spec.name / "config.json").read_text()) == spec.hparams()
    assert run_sweep(grid, tmp_path, agents=AGENTS).results[0].status == "skipped"


# ---- presets --------------------------------------------------------------------------------

SIGNAL_PRESET = {"file": "mine.toml", "source": "tuned by hand",
                 "options": {"lr": 0.02, "steps_per_update": 64, "num_envs": 2, "gamma": 0.9}}


def signal_presets(cls, env_id):
    return SIGNAL_PRESET if (cls.name, env_id) == ("reinforce", SIGNAL) else None


def test_a_sweep_starts_each_run_from_its_preset_and_records_it(tmp_path):
    grid = Grid(agents=["reinforce", "reinforce_baseline"], envs=[SIGNAL], seeds=[1],
                total_steps=128, eval_episodes=0, presets=signal_presets,
                options={"gamma": [0.95], "hidden_sizes": [(8,)], "num_envs": [2],
                         "steps_per_update": [64]})
    with_preset, without = grid.runs(AGENTS)
    assert "__lr0.02__" in with_preset.name  # the preset's learning rate, in the name
    assert with_preset.config["lr"] == 0.02 and with_preset.config["gamma"] == 0.95
    assert with_preset.preset == {**SIGNAL_PRESET,
                                  "overridden": ["gamma", "num_envs", "steps_per_update"]}
    assert without.preset is None and "preset" not in without.hparams()
    result = run_sweep(grid, tmp_path, agents=AGENTS)
    assert [r.status for r in result.results] == ["done", "done"]
    for spec in (with_preset, without):
        assert json.loads((tmp_path / spec.name / "config.json").read_text()) == spec.hparams()
    assert run_sweep(grid, tmp_path, agents=AGENTS).results[0].status == "skipped"
    # a preset whose source text changed since: the fields decide, so the run is still found
    edited = dataclasses.replace(grid, presets=lambda cls, env: None if cls.name != "reinforce"
                                 else {**SIGNAL_PRESET, "source": "tuned again"})
    assert [r.status for r in run_sweep(edited, tmp_path, agents=AGENTS).results] == \
        ["skipped", "skipped"]


def test_a_preset_with_an_unknown_option_fails_before_anything_starts(tmp_path):
    bad = {**SIGNAL_PRESET, "options": {"lrr": 0.1}}
    grid = tiny_grid(presets=lambda cls, env: bad)
    with pytest.raises(ValueError, match="preset mine.toml .*unknown option 'lrr' for agent "
                                         "'reinforce'; did you mean 'lr'"):
        run_sweep(grid, tmp_path / "s", agents=AGENTS)
    with pytest.raises(TypeError, match="must give None or"):
        run_sweep(tiny_grid(presets=lambda cls, env: {"lr": 0.1}), tmp_path / "s",
                  agents=AGENTS)
    assert not (tmp_path / "s").exists()


def test_cli_sweep_uses_the_presets_unless_told_not_to(tmp_path, capsys):
    argv = ["sweep", "--agent", "ppo", "--env", "CartPole-v1", "--dry-run", "--logdir",
            str(tmp_path / "x")]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == "CartPole-v1__ppo__adam__lr0.001__seed0"
    assert main([*argv, "--no-preset"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "CartPole-v1__ppo__adam__lr0.00025__seed0"
    assert not (tmp_path / "x").exists()
