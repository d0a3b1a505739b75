"""``rlgrad train --config FILE``: TOML, YAML and a run's config.json; what overrides what; a
run reproduced bit for bit from another's config.json; bad files fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import tests.tiny_envs  # noqa: F401 - registers the tiny environments
from agents import Reinforce
from rlgrad.checkpoint import load_checkpoint
from rlgrad.cli import main
from rlgrad.configfile import config_options, load_run_config, read_config_file

SIGNAL = "tests.tiny_envs:Signal-v0"
TINY = ["--num-envs", "2", "--steps-per-update", "64", "--hidden-sizes", "8"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    assert err.startswith("rlgrad: error: ") and err.count("\n") == 1, err
    return err.strip()


def only_run(logdir: Path) -> Path:
    (run,) = [p for p in logdir.iterdir() if p.is_dir()]
    return run


def same_arrays(a_dir: Path, b_dir: Path) -> None:
    a, _ = load_checkpoint(a_dir)
    b, _ = load_checkpoint(b_dir)
    assert a.keys() == b.keys() and a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---- a run's config.json ---------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--agent", "reinforce_baseline", "--env", SIGNAL, "--seed", "5", "--total-steps", "320",
     "--lr", "0.02", *TINY],
    # a preset (PPO on CartPole-v1) and None-by-default fields resolved for the action space
    ["--agent", "ppo", "--env", "CartPole-v1", "--seed", "2", "--total-steps", "256",
     "--hidden-sizes", "8", "--num-steps", "16", "--minibatch-size", "64"],
], ids=["reinforce_baseline", "ppo-preset"])
def test_a_run_from_another_runs_config_json_reproduces_it_bit_for_bit(tmp_path, capsys, argv):
    code, _, err = cli(capsys, "train", *argv, "--logdir", str(tmp_path / "a"),
                       "--eval-episodes", "0", "--quiet")
    assert code == 0, err
    source = only_run(tmp_path / "a")
    code, _, err = cli(capsys, "train", "--config", str(source / "config.json"), "--logdir",
                       str(tmp_path / "b"), "--eval-episodes", "0", "--quiet")
    assert code == 0, err
    copy = only_run(tmp_path / "b")
    assert copy.name.split("__")[:3] == source.name.split("__")[:3]  # env, agent, seed
    same_arrays(source, copy)
    assert json.loads((copy / "config.json").read_text()) == \
        json.loads((source / "config.json").read_text())  # the preset record carried over


def test_the_command_line_overrides_a_config_json(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--agent", "reinforce", "--env", SIGNAL, "--seed", "5",
                       "--total-steps", "128", "--logdir", str(tmp_path / "a"),
                       "--eval-episodes", "0", "--quiet", *TINY)
    assert code == 0, err
    source = only_run(tmp_path / "a") / "config.json"
    code, _, err = cli(capsys, "train", "--config", str(source), "--seed", "6", "--lr", "0.5",
                       "--total-steps", "192", "--logdir", str(tmp_path / "b"),
                       "--eval-episodes", "0")
    assert code == 0, err
    run = only_run(tmp_path / "b")
    config = json.loads((run / "config.json").read_text())
    assert (config["seed"], config["lr"], config["total_steps"]) == (6, 0.5, 192)
    assert (config["num_envs"], config["steps_per_update"], config["hidden_sizes"]) == \
        (2, 64, [8])  # the file's
    assert err.splitlines()[0] == (f"reinforce on {SIGNAL}, seed 6, run {run}; config: "
                                   f"{source}; preset: none")


def test_a_config_json_of_a_resumed_run_warns_that_its_changes_are_not_replayed(
        tmp_path, capsys):
    common = ["--eval-episodes", "0", "--quiet"]
    assert main(["train", "--agent", "reinforce", "--env", SIGNAL, "--total-steps", "128",
                 "--logdir", str(tmp_path), "--run-name", "r", *common, *TINY]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--total-steps", "192", "--lr",
                 "0.5", *common]) == 0
    code, _, err = cli(capsys, "train", "--config", str(tmp_path / "r" / "config.json"),
                       "--logdir", str(tmp_path / "b"), *common)
    assert code == 0, err
    assert err == (f"rlgrad: warning: {tmp_path / 'r' / 'config.json'} is the config of a run "
                   "resumed at step(s) 128 with other lr, total_steps; this run uses its last "
                   "values from step 0 and does not replay those changes\n")
    config = json.loads((only_run(tmp_path / "b") / "config.json").read_text())
    assert (config["lr"], config["total_steps"]) == (0.5, 192) and "resumed" not in config


# ---- TOML and YAML ---------------------------------------------------------------------------


def test_a_toml_file_and_what_overrides_what(tmp_path, capsys):
    from agents.presets import PRESET_DIR, tomllib

    preset = tomllib.loads((PRESET_DIR / "ppo.toml").read_text())["CartPole-v1"]
    path = tmp_path / "run.toml"
    path.write_text('agent = "ppo"\nenv = "CartPole-v1"\nseed = 3\ntotal_steps = 256\n'
                    'lr = 0.005\nhidden_sizes = [8]\ntarget_kl = "none"\nclip_coef = 0.3\n')
    code, _, err = cli(capsys, "train", "--config", str(path), "--clip-coef", "0.1",
                       "--logdir", str(tmp_path / "logs"), "--eval-episodes", "0")
    assert code == 0, err
    run = only_run(tmp_path / "logs")
    assert err.splitlines()[0].startswith(f"ppo on CartPole-v1, seed 3, run {run}; config: "
                                          f"{path}; preset: PPO on CartPole-v1 from ")
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 0.005 != preset["lr"]  # the file over the preset
    assert config["clip_coef"] == 0.1  # the command line over the file
    assert config["num_envs"] == preset["num_envs"]  # the preset over the defaults
    assert config["target_kl"] is None and config["hidden_sizes"] == [8]
    assert config["preset"]["overridden"] == ["lr"]
    assert load_checkpoint(run)[1]["global_step"] == 256


def test_preset_false_in_a_file_gives_the_plain_defaults(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('agent = "ppo"\nenv_id = "CartPole-v1"\ntotal_steps = 512\npreset = false\n'
                    "hidden_sizes = [8]\n")
    code, _, err = cli(capsys, "train", "--config", str(path), "--logdir",
                       str(tmp_path / "logs"), "--eval-episodes", "0")
    assert code == 0, err
    assert err.splitlines()[0].endswith("preset: none (the config file's preset = false)")
    config = json.loads((only_run(tmp_path / "logs") / "config.json").read_text())
    assert (config["lr"], config["num_envs"]) == (2.5e-4, 4) and "preset" not in config


def test_a_yaml_file(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(f"agent: reinforce\nenv_id: {SIGNAL}\nseed: 1\ntotal_steps: 128\n"
                    "lr: 3e-3\nnum_envs: 2\nsteps_per_update: 64\nhidden_sizes: [8, 8]\n"
                    "optimizer_eps: null\n")
    code, _, err = cli(capsys, "train", "--config", str(path), "--logdir",
                       str(tmp_path / "logs"), "--eval-episodes", "0", "--quiet")
    assert code == 0, err
    config = json.loads((only_run(tmp_path / "logs") / "config.json").read_text())
    assert config["lr"] == 3e-3  # YAML 1.1 reads 3e-3 as a string: taken as the number
    assert (config["seed"], config["hidden_sizes"], config["optimizer_eps"]) == (1, [8, 8], None)


thread_counts: list[set[int]] = []


class ThreadProbe(Reinforce):
    name = "thread_probe"

    def loss(self, mb):
        thread_counts.append({pool["num_threads"] for pool in threadpool_info()})
        return super().loss(mb)


def test_threads_from_a_file_unless_the_command_line_says(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(f'env = "{SIGNAL}"\ntotal_steps = 64\nthreads = 2\nnum_envs = 2\n'
                    "steps_per_update = 64\nhidden_sizes = [8]\n")
    argv = ["train", "--agent", "tests.test_configfile:ThreadProbe", "--config", str(path),
            "--eval-episodes", "0", "--quiet"]
    thread_counts.clear()
    assert main([*argv, "--logdir", str(tmp_path / "a")]) == 0
    assert thread_counts == [{2}]
    assert main([*argv, "--logdir", str(tmp_path / "b"), "--threads", "1"]) == 0
    assert thread_counts == [{2}, {1}]


# ---- bad files -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,text,match", [
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\nlrr = 0.1\n',
     "unknown key 'lrr' for agent 'ppo'; did you mean 'lr'?"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\ntotal_step = 10\n',
     "unknown key 'total_step' for agent 'ppo'; did you mean 'total_steps'?"),
    ("run.toml", 'agent = "reinforce"\nenv = "CartPole-v1"\nvalue_lr = 0.1\n',
     "unknown key 'value_lr' for agent 'reinforce'"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\nseed = true\n',
     "seed must be an integer >= 0, got True"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\ntotal_steps = 0\n',
     "total_steps must be an integer >= 1, got 0"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\nthreads = 0\n',
     "threads must be an integer >= 1, got 0"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\nenv_id = "Acrobot-v1"\n',
     "gives env_id 'Acrobot-v1' and env 'CartPole-v1': give one of them"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\npreset = "yes"\n',
     "preset must be true, false or the table a run's config.json records"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\nlr = "fast"\n',
     "lr must be a number, got 'fast'"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\nnormalize_obs = 1\n',
     "normalize_obs must be True or False, got 1"),
    ("run.toml", 'agent = "ppo"\nenv = "CartPole-v1"\nlr = 0.1\nlr = 0.2\n',
     "Cannot overwrite a value (at line 4"),
    ("run.toml", 'agent = "ppo"\nenv = [', "Invalid value (at end of document)"),
    ("run.json", '{"agent": "ppo", "env": "CartPole-v1", "lr": 0.1, "lr": 0.2}',
     "duplicate key 'lr'"),
    ("run.json", '{"agent": "ppo", "env": "CartPole-v1", "lr": NaN}',
     "lr must be a finite number, got nan"),
    ("run.json", '["ppo"]', "the top level must be a table of keys, got a list"),
    ("run.json", '{"agent": "ppo",', "Expecting property name"),
    ("run.yaml", "agent: ppo\nenv: CartPole-v1\nlr: 0.1\nlr: 0.2\n", "duplicate key 'lr'"),
    ("run.yaml", "", "the top level must be a table of keys, got empty"),
    ("run.yaml", "agent: ppo\n1: 2\n", "keys must be strings, got 1"),
    ("run.yaml", "agent: [ppo\n", "while parsing a flow sequence"),
    ("run.ini", "[x]\n", "unknown format '.ini'"),
    ("run.toml", 'agent = "tests.custom_agent:EntropyReinforce"\nenv = "CartPole-v1"\n',
     "does not import code that a file names: give --agent tests.custom_agent:EntropyReinforce"),
    ("run.toml", 'agent = "reinforce"\nenv = "no_such_module_here:Env-v0"\n',
     "give --env no_such_module_here:Env-v0 on the command line"),
    ("run.toml", 'env = "CartPole-v1"\n', "train needs --agent and --env"),
])
def test_bad_config_files_fail_in_one_line_before_anything_is_written(tmp_path, capsys, name,
                                                                    text, match):
    path = tmp_path / name
    path.write_text(text)
    code, out, err = cli(capsys, "train", "--config", str(path), "--logdir",
                         str(tmp_path / "logs"))
    assert code == 1 and out == ""
    assert match in one_error_line(err)
    assert not (tmp_path / "logs").exists()


def test_missing_non_utf8_and_oversized_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_config_file(tmp_path / "missing.toml")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ValueError, match="is not a regular file"):
        read_config_file(tmp_path / "dir.toml")
    (tmp_path / "latin.toml").write_bytes(b'agent = "caf\xe9"\n')
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_config_file(tmp_path / "latin.toml")
    (tmp_path / "big.json").write_text(json.dumps({"x": "y" * (1 << 20)}))
    with pytest.raises(ValueError, match="more than a config file holds"):
        read_config_file(tmp_path / "big.json")


def test_a_symlinked_file_is_read(tmp_path):
    (tmp_path / "real.toml").write_text('agent = "ppo"\n')
    (tmp_path / "link.toml").symlink_to(tmp_path / "real.toml")
    assert load_run_config(tmp_path / "link.toml").agent == "ppo"


def test_none_in_a_field_that_may_be_none_only(tmp_path):
    from agents import PPO

    (tmp_path / "c.toml").write_text('target_kl = "none"\nactivation = "none"\n')
    options = config_options(load_run_config(tmp_path / "c.toml"), PPO.config_class, "ppo")
    assert options == {"target_kl": None, "activation": "none"}  # a str field keeps "none"
