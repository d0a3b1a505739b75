"""The ``rlgrad`` command: run names, resuming, code named by checkpoints, errors, progress."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from rlgrad.checkpoint import load_checkpoint, save_checkpoint
from rlgrad.cli import main

ROOT = Path(__file__).resolve().parents[1]
SIGNAL = "tests.tiny_envs:Signal-v0"
TINY = ["--num-envs", "2", "--steps-per-update", "64", "--hidden-sizes", "8"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The single line of an error report, checked to be one line and no traceback."""
    assert err.startswith("rlgrad: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def base_run(capsys, tmp_path: Path, name: str = "run") -> Path:
    """A complete 256-step run (4 updates of 64 steps) of reinforce_baseline on Signal-v0."""
    code, _, err = cli(capsys, "train", "--agent", "reinforce_baseline", "--env", SIGNAL,
                       "--total-steps", "256", "--logdir", str(tmp_path / "logs"),
                       "--run-name", name, "--eval-episodes", "2", "--quiet", *TINY)
    assert code == 0, err
    return tmp_path / "logs" / name


# ---- run names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", "ABSOLUTE", ".", "..", ""])
def test_run_names_outside_the_logdir_are_refused_before_anything_is_written(
        tmp_path, capsys, name):
    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    code, _, err = cli(capsys, "train", "--agent", "reinforce", "--env", SIGNAL,
                       "--total-steps", "64", "--logdir", str(tmp_path / "logs"),
                       "--run-name", name, "--quiet", *TINY)
    assert code == 1
    assert "run name" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_an_explicit_run_name_that_exists_is_refused(tmp_path, capsys):
    run = base_run(capsys, tmp_path)
    before = files(run)
    code, _, err = cli(capsys, "train", "--agent", "reinforce_baseline", "--env", SIGNAL,
                       "--total-steps", "128", "--logdir", str(tmp_path / "logs"),
                       "--run-name", "run", "--quiet", *TINY)
    assert code == 1
    line = one_error_line(err)
    assert f"run directory {run} exists" in line and f"--resume {run}" in line
    assert files(run) == before
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["run"]


# ---- resuming -------------------------------------------------------------------------------


def test_resume_refuses_the_options_its_checkpoint_fixes_and_names_them(tmp_path, capsys):
    run = base_run(capsys, tmp_path)
    before = files(run)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "512",
                       "--lr", "0.5", "--env", "Acrobot-v1", "--agent", "reinforce",
                       "--seed", "9")
    assert code == 1
    line = one_error_line(err)
    assert "--agent reinforce (the run's: reinforce_baseline)" in line
    assert f"--env Acrobot-v1 (the run's: {SIGNAL})" in line
    assert "--seed 9 (the run's: 0)" in line
    assert "--lr" not in line  # that one may change
    assert files(run) == before


@pytest.mark.parametrize("option,shown", [
    (["--hidden-sizes", "16"], "--hidden-sizes 16 (the run's: 8)"),
    (["--hidden-sizes", "8", "8"], "--hidden-sizes 8 8 (the run's: 8)"),
    (["--activation", "relu"], "--activation relu (the run's: tanh)"),
    (["--optimizer", "sgd"], "--optimizer sgd (the run's: adam)"),
    (["--value-optimizer", "sgd"], "--value-optimizer sgd (the run's: adam)"),
    (["--normalize-obs"], "--normalize-obs True (the run's: False)"),
])
def test_resume_refuses_a_change_of_network_shape_or_optimizer(tmp_path, capsys, option, shown):
    run = base_run(capsys, tmp_path)
    before = files(run)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "512", *option)
    assert code == 1 and shown in one_error_line(err)
    assert files(run) == before


def test_resume_accepts_the_fixed_options_at_the_values_they_have(tmp_path, capsys):
    run = base_run(capsys, tmp_path)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "320",
                       "--agent", "reinforce_baseline", "--env", SIGNAL, "--seed", "0",
                       "--hidden-sizes", "8", "--quiet")
    assert code == 0, err
    assert load_checkpoint(run)[1]["global_step"] == 320
    assert json.loads((run / "config.json").read_text())["resumed"] == [
        {"step": 256, "changed": {"total_steps": {"from": 256, "to": 320}}}]  # nothing else


def test_resume_applies_the_options_that_may_change_and_records_them(tmp_path, capsys):
    run = base_run(capsys, tmp_path)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "512",
                       "--lr", "0.5", "--ent-coef", "0.01", "--eval-episodes", "3", "--quiet")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert (config["lr"], config["ent_coef"], config["total_steps"]) == (0.5, 0.01, 512)
    assert config["resumed"] == [{"step": 256, "changed": {
        "lr": {"from": 0.01, "to": 0.5}, "ent_coef": {"from": 0.0, "to": 0.01},
        "total_steps": {"from": 256, "to": 512}}}]
    _, meta = load_checkpoint(run)
    assert meta["global_step"] == 512 and meta["config"]["lr"] == 0.5
    summary = json.loads((run / "summary.json").read_text())
    assert summary["total_steps"] == 512 and summary["eval_episodes"] == 3

    acc = EventAccumulator(str(run))
    acc.Reload()
    (event,) = acc.Tensors("resumed")
    text = event.tensor_proto.string_val[0].decode()
    assert event.step == 256 and "|lr|0.01 -> 0.5|" in text and "|total_steps|256 -> 512|" in text
    rates = {e.step: e.value for e in acc.Scalars("charts/learning_rate")}
    assert all(rates[s] == pytest.approx(0.01) for s in rates if s <= 256)
    assert all(rates[s] == pytest.approx(0.5) for s in rates if s > 256)  # it took effect

    # a second resume adds to the history
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "640",
                       "--lr", "0.25", "--quiet")
    assert code == 0, err
    history = json.loads((run / "config.json").read_text())["resumed"]
    assert [h["step"] for h in history] == [256, 512]
    assert history[1]["changed"]["lr"] == {"from": 0.5, "to": 0.25}


@pytest.mark.parametrize("total", ["256", "128"])
def test_resume_at_or_below_the_steps_done_says_so_and_changes_nothing(tmp_path, capsys, total):
    run = base_run(capsys, tmp_path)
    before = files(run)
    code, out, err = cli(capsys, "train", "--resume", str(run), "--total-steps", total)
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert f"is already at step 256, at or past --total-steps {total}" in line
    assert "summary.json left as it was" in line
    assert files(run) == before


def test_resume_of_a_run_stopped_after_its_last_update_writes_its_summary(tmp_path, capsys):
    run = base_run(capsys, tmp_path)
    (run / "summary.json").unlink()  # as if stopped between the last update and the summary
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "256",
                       "--eval-episodes", "2", "--quiet")
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["total_steps"] == 256 and summary["eval_return_mean"] is not None


def test_resume_and_run_name_do_not_go_together(tmp_path, capsys):
    run = base_run(capsys, tmp_path)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "512",
                       "--run-name", "other")
    assert code == 1 and "--run-name does not go with --resume" in one_error_line(err)


# ---- a checkpoint is data, never code -------------------------------------------------------

EVIL = ("import pathlib\n"
        "pathlib.Path(__file__).with_name('MARKER').write_text('imported')\n"
        "class X:\n    pass\n")


def cartpole_run(capsys, tmp_path: Path) -> Path:
    code, _, err = cli(capsys, "train", "--agent", "reinforce", "--env", "CartPole-v1",
                       "--total-steps", "200", "--logdir", str(tmp_path), "--run-name", "r",
                       "--eval-episodes", "0", "--quiet", "--num-envs", "2",
                       "--steps-per-update", "100", "--hidden-sizes", "8")
    assert code == 0, err
    return tmp_path / "r"


def plant(run: Path, key: str, value: str) -> None:
    """Put ``evil.py`` in the run directory and name it in the checkpoint's metadata (a
    checkpoint written as any other, so it passes every check of its file)."""
    (run / "evil.py").write_text(EVIL)
    arrays, meta = load_checkpoint(run)
    save_checkpoint(run, arrays, {**meta, key: value})


@pytest.mark.parametrize("key,value,hint", [
    ("agent_path", "evil:X", "--agent evil:X"),
    ("env_id", "evil:CartPole-v1", "--env evil:CartPole-v1"),
])
def test_eval_never_imports_a_module_the_checkpoint_names(tmp_path, capsys, key, value, hint):
    run = cartpole_run(capsys, tmp_path)
    plant(run, key, value)
    # python -m puts the current directory, the run directory, first on sys.path
    proc = subprocess.run([sys.executable, "-m", "rlgrad", "eval", str(run), "--episodes", "1"],
                          cwd=run, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert not (run / "MARKER").exists()
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert "import" in line and hint in line


@pytest.mark.parametrize("key,value,hint", [
    ("agent_path", "evil:X", "--agent evil:X"),
    ("env_id", "evil:CartPole-v1", "--env evil:CartPole-v1"),
])
def test_resume_never_imports_a_module_the_checkpoint_names(tmp_path, capsys, monkeypatch,
                                                            key, value, hint):
    run = cartpole_run(capsys, tmp_path)
    plant(run, key, value)
    monkeypatch.syspath_prepend(str(run))  # importable, were it imported
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "400")
    assert not (run / "MARKER").exists()
    assert code == 1 and hint in one_error_line(err)
    assert "evil" not in sys.modules


def test_a_users_agent_loads_from_a_checkpoint_only_when_named(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--agent", "tests.custom_agent:EntropyReinforce",
                       "--env", SIGNAL, "--total-steps", "128", "--logdir", str(tmp_path),
                       "--run-name", "r", "--eval-episodes", "0", "--quiet", *TINY)
    assert code == 0, err
    code, _, err = cli(capsys, "eval", str(tmp_path / "r"), "--episodes", "1")
    assert code == 1
    line = one_error_line(err)
    assert "'entropy_reinforce' is not one of rlgrad's" in line
    assert "--agent package.module:ClassName" in line
    code, out, err = cli(capsys, "eval", str(tmp_path / "r"), "--episodes", "2", "--agent",
                         "tests.custom_agent:EntropyReinforce")
    assert code == 0, err
    assert len(json.loads(out)["returns"]) == 2
    resume = ["train", "--resume", str(tmp_path / "r"), "--total-steps", "192", "--agent",
              "tests.custom_agent:EntropyReinforce", "--quiet"]
    code, _, err = cli(capsys, *resume, "--bonus", "0.5")  # not marked resume=True: fixed
    assert code == 1 and "--bonus 0.5 (the run's: 0.01)" in one_error_line(err)
    code, _, err = cli(capsys, *resume, "--lr", "0.02")
    assert code == 0, err
    _, meta = load_checkpoint(tmp_path / "r")
    assert meta["global_step"] == 192 and meta["config"]["lr"] == 0.02


class NotAnAgent:
    """Has what a duck-typed check would look for, but is no Agent."""

    name = "not_an_agent"

    @dataclasses.dataclass
    class config_class:  # noqa: N801 - the attribute an agent class has
        lr: float = 0.1


@pytest.mark.parametrize("spec,match", [
    ("os:path", "'os:path' is a module, not an agent class"),
    ("tests.test_cli:NotAnAgent", "not an agent class \\(a subclass of agents.Agent\\)"),
    ("tests.test_cli:ROOT", "is a PosixPath, not an agent class"),
    ("tests.no_such_module:X", "cannot import agent module 'tests.no_such_module'"),
])
@pytest.mark.parametrize("command", ["train", "eval"])
def test_an_agent_option_that_names_no_agent_class_is_one_line(tmp_path, capsys, spec, match,
                                                               command):
    argv = ["train", "--env", SIGNAL, "--logdir", str(tmp_path / "logs")] \
        if command == "train" else ["eval", str(tmp_path)]
    code, _, err = cli(capsys, *argv, "--agent", spec)
    assert code == 2
    assert re.search(match, one_error_line(err))
    assert not (tmp_path / "logs").exists()


def test_a_users_agent_in_the_current_directory_from_the_console_script(tmp_path):
    # what the console script sees: the script's directory first on sys.path, not the cwd
    site = tmp_path / "site"
    site.mkdir()
    for package in ("rlgrad", "agents"):
        (site / package).symlink_to(ROOT / package)
    script = tmp_path / "bin" / "rlgrad"
    script.parent.mkdir()
    script.write_text("import sys\nfrom rlgrad.cli import main\nsys.exit(main())\n")
    work = tmp_path / "work"
    (work / "mypkg").mkdir(parents=True)
    (work / "mypkg" / "__init__.py").write_text("")
    (work / "mypkg" / "custom.py").write_text((ROOT / "tests" / "custom_agent.py").read_text())
    proc = subprocess.run(
        [sys.executable, str(script), "train", "--agent", "mypkg.custom:EntropyReinforce",
         "--env", "CartPole-v1", "--bonus", "0.05", "--total-steps", "200", "--num-envs", "2",
         "--steps-per-update", "100", "--hidden-sizes", "8", "--eval-episodes", "0",
         "--quiet", "--logdir", "runs"],
        cwd=work, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    (run,) = (work / "runs").iterdir()
    assert "entropy_reinforce" in run.name
    assert json.loads((run / "config.json").read_text())["bonus"] == 0.05


def test_the_agent_help_says_where_a_users_agent_is_imported_from(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "package.module:ClassName for your own, imported with the current directory on " \
           "sys.path" in out


# ---- errors: one line, nothing left behind --------------------------------------------------


def test_eval_video_into_a_file_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("moviepy", reason="the video extra (moviepy) is not installed")
    run = cartpole_run(capsys, tmp_path)
    (tmp_path / "videos").write_text("a file, not a directory")
    code, _, err = cli(capsys, "eval", str(run), "--episodes", "1", "--video",
                       str(tmp_path / "videos"))
    assert code == 1 and str(tmp_path / "videos") in one_error_line(err)


def _disk_full(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_while_saving_the_checkpoint_is_a_one_line_error(tmp_path, capsys,
                                                                     monkeypatch):
    def full(path, *args, **kw):
        raise _disk_full(path)

    monkeypatch.setattr("rlgrad.train.save_checkpoint", full)
    code, _, err = cli(capsys, "train", "--agent", "reinforce", "--env", SIGNAL,
                       "--total-steps", "128", "--logdir", str(tmp_path), "--run-name", "r",
                       "--quiet", "--save-every", "1", *TINY)
    assert code == 1
    assert one_error_line(err) == f"rlgrad: error: {tmp_path / 'r' / 'checkpoint'}: " \
                                  f"{os.strerror(errno.ENOSPC)}"
    assert not (tmp_path / "r" / ".lock").exists()


def test_a_full_disk_while_writing_the_summary_is_a_one_line_error(tmp_path, capsys,
                                                                  monkeypatch):
    write_text = Path.write_text

    def write(self, *args, **kw):
        if "summary.json" in self.name:
            raise _disk_full(self)
        return write_text(self, *args, **kw)

    monkeypatch.setattr(Path, "write_text", write)
    code, _, err = cli(capsys, "train", "--agent", "reinforce", "--env", SIGNAL,
                       "--total-steps", "128", "--logdir", str(tmp_path), "--run-name", "r",
                       "--quiet", *TINY)
    assert code == 1
    line = one_error_line(err)
    assert "summary.json" in line and line.endswith(os.strerror(errno.ENOSPC))
    assert not (tmp_path / "r" / "summary.json").exists()
    assert [p.name for p in (tmp_path / "r").glob("*summary*")] == []  # no temporary file
    assert load_checkpoint(tmp_path / "r")[1]["global_step"] == 128  # the training is kept


@pytest.mark.parametrize("args,match", [
    (["--num-envs", "8", "--steps-per-update", "4"], "num_envs \\(8\\) is larger than "
                                                      "steps_per_update \\(4\\)"),
    (["--ent-coef", "nan"], "ent_coef must be a finite number, got nan"),
    (["--max-grad-norm", "inf"], "max_grad_norm must be a finite number, got inf"),
    (["--lr", "nan"], "lr must be a finite number, got nan"),
])
def test_invalid_agent_options_fail_before_the_logdir_is_touched(tmp_path, capsys, args, match):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    code, _, err = cli(capsys, "train", "--agent", "reinforce", "--env", SIGNAL,
                       "--total-steps", "256", "--logdir", str(logdir), "--quiet", *args)
    assert code == 1 and re.search(match, one_error_line(err))
    assert list(logdir.iterdir()) == []


def test_invalid_options_on_resume_fail_before_the_run_is_touched(tmp_path, capsys):
    run = base_run(capsys, tmp_path)
    before = files(run)
    for args in (["--ent-coef", "nan"], ["--num-envs", "128"]):
        code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "512", *args)
        assert code == 1, args
        one_error_line(err)
    assert files(run) == before


# ---- progress -------------------------------------------------------------------------------


def test_training_prints_progress_when_stderr_is_not_a_terminal(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--agent", "reinforce", "--env", SIGNAL,
                         "--total-steps", "128", "--logdir", str(tmp_path), "--eval-episodes",
                         "0", *TINY)
    assert code == 0
    assert re.search(r"step 128/128 \(100%\)", err), err
    assert json.loads(out)["total_steps"] == 128
    code, out, err = cli(capsys, "train", "--agent", "reinforce", "--env", SIGNAL,
                         "--total-steps", "128", "--logdir", str(tmp_path), "--eval-episodes",
                         "0", "--quiet", *TINY)
    assert code == 0 and out == "" and err == ""


@pytest.mark.parametrize("command", [["train", "--agent", "reinforce", "--env", SIGNAL],
                                     ["eval", "somewhere"],
                                     ["sweep", "--agent", "reinforce", "--env", SIGNAL]])
def test_threads_must_be_a_positive_integer(tmp_path, capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--threads", "0"])
    assert exc.value.code == 2
    assert "--threads: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_the_first_line_after_a_resume_shows_the_steps_per_second_of_this_process(
        tmp_path, capsys, monkeypatch):
    import functools

    import rlgrad.train
    from rlgrad.logging import Progress

    run = base_run(capsys, tmp_path)
    times = iter([0.0])  # the clock reads 0 when Progress starts, then 10 s later ever after
    monkeypatch.setattr(rlgrad.train, "Progress", functools.partial(
        Progress, clock=lambda: next(times, 10.0)))
    code, out, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "512",
                         "--eval-episodes", "0")
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == f"reinforce_baseline on {SIGNAL}, seed 0, run {run}, resumed at step " \
                       "256; preset: none"
    progress = lines[1:]
    assert len(progress) == 2 and "\r" not in err  # plain lines, not a terminal's bar
    for line in progress:
        m = re.match(r"step ([\d,]+)/512 \(\d+%\) \| ([\d,]+) SPS \| ", line)
        assert m, line
        step, sps = int(m[1].replace(",", "")), int(m[2].replace(",", ""))
        assert sps == round((step - 256) / 10), line  # counted from 256, not from 0
    assert progress[-1].startswith("step 512/512 (100%) | 26 SPS") and "elapsed 0:00:10" in err
    assert json.loads(out)["total_steps"] == 512


# ---- the first line and presets -------------------------------------------------------------

CARTPOLE_PRESET = ["--agent", "ppo", "--env", "CartPole-v1", "--total-steps", "256",
                   "--eval-episodes", "1", "--hidden-sizes", "8"]


def preset_table(agent: str, env_id: str) -> dict:
    from agents.presets import PRESET_DIR, tomllib

    return tomllib.loads((PRESET_DIR / f"{agent}.toml").read_text())[env_id]


def only_run(logdir: Path) -> Path:
    (run,) = [p for p in logdir.iterdir() if p.is_dir()]
    return run


def test_train_starts_from_the_preset_and_says_so(tmp_path, capsys):
    table = dict(preset_table("ppo", "CartPole-v1"))
    source = table.pop("source")
    code, out, err = cli(capsys, "train", *CARTPOLE_PRESET, "--logdir", str(tmp_path))
    assert code == 0, err
    run = only_run(tmp_path)
    assert err.splitlines()[0] == (f"ppo on CartPole-v1, seed 0, run {run}; preset: PPO on "
                                   f"CartPole-v1 from agents/presets/ppo.toml ({source})")
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == {"file": "agents/presets/ppo.toml", "source": source,
                                "options": table, "overridden": []}
    for key, value in table.items():
        assert config[key] == value, key
    assert config["hidden_sizes"] == [8]  # given: not a preset key, applies as usual
    assert json.loads(out)["run_dir"] == str(run)


def test_an_explicit_option_overrides_the_preset(tmp_path, capsys):
    table = preset_table("ppo", "CartPole-v1")
    assert table["lr"] != 0.002 and table["num_steps"] != 16
    code, _, err = cli(capsys, "train", *CARTPOLE_PRESET, "--logdir", str(tmp_path), "--quiet",
                       "--lr", "0.002", "--num-steps", "16", "--minibatch-size", "128")
    assert code == 0, err
    config = json.loads((only_run(tmp_path) / "config.json").read_text())
    assert (config["lr"], config["num_steps"], config["minibatch_size"]) == (0.002, 16, 128)
    assert config["num_envs"] == table["num_envs"] and config["gamma"] == table["gamma"]
    assert config["preset"]["overridden"] == ["lr", "minibatch_size", "num_steps"]
    assert config["preset"]["options"]["lr"] == table["lr"]  # what the file says


def test_no_preset_gives_the_agents_plain_defaults(tmp_path, capsys):
    from agents import PPO

    code, _, err = cli(capsys, "train", *CARTPOLE_PRESET, "--total-steps", "512", "--logdir",
                       str(tmp_path), "--no-preset")
    assert code == 0, err
    run = only_run(tmp_path)
    assert err.splitlines()[0] == f"ppo on CartPole-v1, seed 0, run {run}; preset: none " \
                                  "(--no-preset)"
    config = json.loads((run / "config.json").read_text())
    assert "preset" not in config
    plain = PPO.config_class(hidden_sizes=(8,)).resolve(discrete=True).to_dict()
    assert {k: config[k] for k in plain} == plain
    assert (config["lr"], config["num_envs"], config["num_steps"]) == (2.5e-4, 4, 128)


def test_an_agent_without_a_preset_says_none_and_quiet_prints_nothing(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--agent", "reinforce", "--env", SIGNAL,
                       "--total-steps", "64", "--logdir", str(tmp_path), "--seed", "3",
                       "--eval-episodes", "0", *TINY)
    assert code == 0, err
    run = only_run(tmp_path)
    assert err.splitlines()[0] == f"reinforce on {SIGNAL}, seed 3, run {run}; preset: none"
    code, out, err = cli(capsys, "train", "--agent", "ppo", "--env", "CartPole-v1",
                         "--total-steps", "256", "--logdir", str(tmp_path / "q"), "--quiet",
                         "--eval-episodes", "0", "--hidden-sizes", "8")
    assert (code, out, err) == (0, "", "")
    assert "preset" in json.loads((only_run(tmp_path / "q") / "config.json").read_text())


def test_a_preset_with_an_unknown_option_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import agents.presets

    (tmp_path / "ppo.toml").write_text(f'["{SIGNAL}"]\nsource = "mine"\nnum_step = 32\n')
    monkeypatch.setattr(agents.presets, "PRESET_DIR", tmp_path)
    code, _, err = cli(capsys, "train", "--agent", "ppo", "--env", SIGNAL, "--logdir",
                       str(tmp_path / "logs"), "--total-steps", "64")
    assert code == 1
    line = one_error_line(err)
    assert f"preset file {tmp_path / 'ppo.toml'}" in line and "'num_step'" in line
    assert "did you mean 'num_steps'?" in line
    assert not (tmp_path / "logs").exists()


def test_a_resumed_run_names_the_preset_it_started_from(tmp_path, capsys):
    code, _, err = cli(capsys, "train", *CARTPOLE_PRESET, "--logdir", str(tmp_path),
                       "--quiet")
    assert code == 0, err
    run = only_run(tmp_path)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "512",
                       "--eval-episodes", "0")
    assert code == 0, err
    assert err.splitlines()[0].startswith(
        f"ppo on CartPole-v1, seed 0, run {run}, resumed at step 256; preset: PPO on "
        "CartPole-v1 from agents/presets/ppo.toml (")
    assert json.loads((run / "config.json").read_text())["preset"]["file"] == \
        "agents/presets/ppo.toml"
    for flag in (["--no-preset"], ["--config", str(run / "config.json")]):
        code, _, err = cli(capsys, "train", "--resume", str(run), "--total-steps", "768", *flag)
        assert code == 1 and f"{flag[0]} does not go with --resume" in one_error_line(err)


# ---- export ---------------------------------------------------------------------------------


def export_run(capsys, tmp_path: Path, env: str, *options: str) -> Path:
    code, _, err = cli(capsys, "train", "--agent", "ppo", "--env", env, "--total-steps", "256",
                       "--logdir", str(tmp_path), "--run-name", "r", "--eval-episodes", "0",
                       "--quiet", "--no-preset", "--hidden-sizes", "16", "--num-steps", "64",
                       "--minibatch-size", "32", *options)
    assert code == 0, err
    return tmp_path / "r"


def observations(env: str, n: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(7)
    if env == "CartPole-v1":
        return rng.uniform([-3, -4, -0.3, -4], [3, 4, 0.3, 4], (n, 4))
    theta = rng.uniform(-np.pi, np.pi, n)
    return np.stack([np.cos(theta), np.sin(theta), rng.uniform(-9, 9, n)], axis=1)


def exported_actions(capsys, run: Path, tmp_path: Path, obs: np.ndarray) -> dict:
    import importlib.util

    import onnxruntime as ort

    out = {}
    for fmt, name in (("onnx", "policy.onnx"), ("numpy", "policy.npz")):
        path = tmp_path / fmt / name
        code, stdout, err = cli(capsys, "export", str(run), "--format", fmt, "--out", str(path))
        assert code == 0, err
        assert json.loads(stdout)["out"] == str(path)
        if fmt == "onnx":
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            (out[fmt],) = session.run(["action"], {"obs": obs.astype(np.float32)})
        else:
            spec = importlib.util.spec_from_file_location(
                f"loader_{abs(hash(path))}", path.with_name("policy_loader.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            out[fmt] = module.load_policy(str(path))(obs)
    return out


@pytest.mark.parametrize("options", [["--normalize-obs"], ["--shared-network"]],
                         ids=["normalized", "shared"])
def test_export_of_a_discrete_ppo_acts_as_predict(tmp_path, capsys, options):
    pytest.importorskip("onnxruntime")
    from agents import load
    from rlgrad.tensor import no_grad

    run = export_run(capsys, tmp_path, "CartPole-v1", "--num-envs", "2", *options)
    obs = observations("CartPole-v1").astype(np.float32).astype(np.float64)
    agent = load(run)
    try:
        expected, _ = agent.predict(obs, deterministic=True)
        with no_grad():
            logits = agent.distribution(agent.normalize_obs(obs).astype(np.float32)).logits.data
    finally:
        agent.close()
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5  # no near-tie that float32 rounding could flip
    assert clear.mean() > 0.99 and len(np.unique(expected)) == 2
    for fmt, actions in exported_actions(capsys, run, tmp_path, obs).items():
        assert actions.dtype == np.int64, fmt
        np.testing.assert_array_equal(actions[clear], expected[clear], err_msg=fmt)


@pytest.mark.parametrize("options", [[], ["--shared-network", "--squash"]],
                         ids=["separate", "shared-squashed"])
def test_export_of_a_box_ppo_with_normalized_observations_acts_as_predict(tmp_path, capsys,
                                                                          options):
    pytest.importorskip("onnxruntime")
    from agents import load

    run = export_run(capsys, tmp_path, "Pendulum-v1", "--normalize-obs", *options)
    obs = observations("Pendulum-v1").astype(np.float32).astype(np.float64)
    agent = load(run)
    try:
        assert agent.obs_normalizer is not None and agent.obs_normalizer.obs_rms.count > 200
        expected, _ = agent.predict(obs, deterministic=True)
    finally:
        agent.close()
    assert np.ptp(expected) > 0.01  # the actions vary
    for fmt, actions in exported_actions(capsys, run, tmp_path, obs).items():
        assert actions.dtype == np.float32 and actions.shape == expected.shape, fmt
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6, err_msg=fmt)


def test_export_infers_the_format_and_errors_are_one_line(tmp_path, capsys):
    run = base_run(capsys, tmp_path)  # reinforce_baseline: agent.policy, discrete
    code, out, err = cli(capsys, "export", str(run), "--out", str(tmp_path / "e" / "p.npz"))
    assert code == 0, err
    assert json.loads(out) == {"checkpoint": str(run), "format": "numpy",
                               "out": str(tmp_path / "e" / "p.npz"),
                               "loader": str(tmp_path / "e" / "policy_loader.py")}
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["p.npz", "policy_loader.py"]
    code, _, err = cli(capsys, "export", str(run), "--out", str(tmp_path / "policy.txt"))
    assert code == 1 and "give --format (onnx or numpy)" in one_error_line(err)
    code, _, err = cli(capsys, "export", str(run), "--format", "onnx", "--out",
                       str(tmp_path / "policy.npz"))
    assert code == 1 and "writes a .onnx file" in one_error_line(err)
    assert not (tmp_path / "policy.npz").exists()
