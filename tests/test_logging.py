from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import plugin_data_pb2 as hparams_plugin_data_pb2

from rlgrad.logging import Progress, SummaryWriter, hparams_markdown


def read_events(log_dir: str) -> EventAccumulator:
    acc = EventAccumulator(log_dir)
    acc.Reload()
    return acc


def test_scalars_read_back(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        for step in range(5):
            writer.add_scalar("charts/episodic_return", 10.0 * step, global_step=step * 128)
        writer.add_scalar("losses/value_loss", np.float32(0.25), 640)
        writer.add_scalar("losses/entropy", np.array(1.5), 640)
        writer.add_scalar("losses/nan", float("nan"), 1)
    acc = read_events(str(tmp_path))
    tags = acc.Tags()["scalars"]
    assert sorted(tags) == [
        "charts/episodic_return",
        "losses/entropy",
        "losses/nan",
        "losses/value_loss",
    ]
    events = acc.Scalars("charts/episodic_return")
    assert [e.step for e in events] == [0, 128, 256, 384, 512]
    assert [e.value for e in events] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert acc.Scalars("losses/value_loss")[0].value == 0.25
    assert acc.Scalars("losses/entropy")[0].step == 640
    assert np.isnan(acc.Scalars("losses/nan")[0].value)


def test_text_and_hyperparameters_read_back(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_text("notes", "héllo *world*", global_step=3)
        writer.add_hyperparameters({"lr": 0.001, "env_id": "CartPole-v1"})
    acc = read_events(str(tmp_path))
    assert sorted(acc.Tags()["tensors"]) == ["hyperparameters", "notes"]
    for tag in ("notes", "hyperparameters"):
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "text"
    (notes,) = acc.Tensors("notes")
    assert notes.step == 3
    assert notes.tensor_proto.string_val == ["héllo *world*".encode()]
    assert len(notes.tensor_proto.tensor_shape.dim) == 0
    (hp,) = acc.Tensors("hyperparameters")
    assert hp.tensor_proto.string_val[0].decode() == (
        "|param|value|\n|-|-|\n|lr|0.001|\n|env_id|CartPole-v1|"
    )


def test_hparams_markdown_escapes_table_syntax():
    assert hparams_markdown({}) == "|param|value|\n|-|-|"
    assert hparams_markdown({"a|b": "x\ny", "n": None}) == (
        "|param|value|\n|-|-|\n|a\\|b|x y|\n|n|None|"
    )
    with pytest.raises(TypeError, match="mapping"):
        hparams_markdown([("a", 1)])


def test_writer_rejects_bad_input_and_use_after_close(tmp_path):
    writer = SummaryWriter(tmp_path)
    with pytest.raises(TypeError, match="add_scalar\\('x'\\): expected a number, got str"):
        writer.add_scalar("x", "high", 0)
    with pytest.raises(TypeError, match="tag must be a non-empty str"):
        writer.add_scalar("", 1.0, 0)
    with pytest.raises(TypeError, match="expected a str, got int"):
        writer.add_text("t", 5)
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalar("x", 1.0, 0)


def test_flush_makes_events_visible_before_close(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.add_scalar("a", 1.0, 7)
    writer.flush()
    assert [e.step for e in read_events(str(tmp_path)).Scalars("a")] == [7]
    writer.close()


def test_import_is_quiet_and_needs_neither_torch_nor_tensorflow():
    code = (
        "import sys, rlgrad.logging\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow')]\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_off_a_terminal_measure_sps_from_the_resume_step():
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(100_000, start_step=20_000, stream=stream, clock=clock)
    assert progress.enabled and not progress.is_terminal
    clock.now = 9.9
    progress.update(71_000, **{"return": 80.0})
    assert stream.getvalue() == ""  # not yet line_interval (10 s) since the start
    clock.now = 10.0
    progress.update(72_130, **{"return": 87.5})
    # 52,130 steps in 10 s since the resume at 20,000 (from step 0 it would be 7,213 SPS)
    assert stream.getvalue() == (
        "step 72,130/100,000 (72%) | 5,213 SPS | return 87.5 | ETA 0:00:05\n"
    )
    clock.now = 19.0
    progress.update(90_000)
    assert stream.getvalue().count("\n") == 1
    clock.now = 20.0
    progress.update(90_000)  # metrics are kept until new values come
    assert stream.getvalue().splitlines()[1] == (
        "step 90,000/100,000 (90%) | 3,500 SPS | return 87.5 | ETA 0:00:03"
    )
    clock.now = 25.0
    progress.close(100_000, **{"return": 90.25})
    progress.close(100_000)  # a second close prints nothing
    assert stream.getvalue().splitlines()[2:] == [
        "step 100,000/100,000 (100%) | 3,200 SPS | return 90.25 | elapsed 0:00:25"
    ]


def test_progress_without_start_step_counts_from_the_first_update():
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(stream=stream, line_interval=2.0, clock=clock)
    clock.now = 100.0
    progress.update(50_000)  # a resumed run: this is where counting starts
    clock.now = 101.0
    progress.update(51_000)
    assert stream.getvalue() == ""
    clock.now = 102.0
    progress.update(52_000, loss=float("nan"))
    clock.now = 104.0
    progress.update(56_000)
    assert stream.getvalue().splitlines() == [
        "step 52,000 | 1,000 SPS | loss nan",
        "step 56,000 | 1,500 SPS | loss nan",
    ]


def test_progress_always_prints_a_final_line_off_a_terminal():
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(1000, stream=stream, clock=clock)
    clock.now = 1.0
    progress.update(100)
    clock.now = 3.0
    progress.close(1000)
    assert stream.getvalue() == "step 1,000/1,000 (100%) | 450 SPS | elapsed 0:00:02\n"
    # the final line of a Progress that never saw an update
    stream = io.StringIO()
    with Progress(500, start_step=500, stream=stream, clock=clock):
        pass
    assert stream.getvalue() == "step 500/500 (100%) | elapsed 0:00:00\n"


def test_progress_draws_a_tqdm_bar_on_a_terminal_at_most_every_interval():
    terminal, clock = FakeTerminal(), FakeClock()
    progress = Progress(1000, start_step=0, stream=terminal, clock=clock)
    assert progress.is_terminal
    assert "0/1.00k" in terminal.getvalue()  # tqdm draws the empty bar at once
    clock.now = 0.3
    progress.update(250, **{"return": 12.345678})
    drawn = terminal.getvalue()
    assert "\r 25%|" in drawn and "250/1.00k" in drawn and "step/s, return=12.35]" in drawn
    clock.now = 0.5
    progress.update(300)
    assert terminal.getvalue() == drawn  # 0.2 s since the last redraw < interval 0.25 s
    clock.now = 0.55
    progress.update(400)
    assert terminal.getvalue()[len(drawn):].startswith("\r 40%|")
    progress.close(1000)
    assert "\r100%|" in terminal.getvalue() and terminal.getvalue().endswith("]\n")
    assert "step 1,000" not in terminal.getvalue()  # no plain lines on a terminal


def test_progress_bar_starts_at_the_resume_step():
    terminal = FakeTerminal()
    progress = Progress(100_000, start_step=40_000, stream=terminal, clock=FakeClock())
    progress.close()
    assert "40%|" in terminal.getvalue() and "40.0k/100k" in terminal.getvalue()


def test_progress_disabled_prints_nothing():
    clock = FakeClock()
    for stream in (io.StringIO(), FakeTerminal()):
        progress = Progress(10, start_step=0, stream=stream, enabled=False, clock=clock)
        assert not progress.enabled
        clock.now += 100.0
        progress.update(5, x=1.0)
        progress.close(10)
        assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"total_steps": 0}, ValueError, "total_steps must be None or an integer >= 1, got 0"),
        ({"total_steps": True}, ValueError, "total_steps must be None or an integer >= 1"),
        ({"total_steps": 10.0}, ValueError, "total_steps must be None or an integer >= 1"),
        ({"start_step": -1}, ValueError, "start_step must be None or an integer >= 0, got -1"),
        ({"enabled": 1}, TypeError, "enabled must be True, False or None, got 1"),
        ({"interval": -0.1}, ValueError, "interval must be a finite number of seconds >= 0"),
        ({"line_interval": float("nan")}, ValueError, "line_interval must be a finite"),
        ({"clock": 3.0}, TypeError, "clock must be a callable"),
        ({"stream": object()}, TypeError, "stream must have a write method, got object"),
    ],
)
def test_progress_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Progress(**kwargs)


def read_hparams_record(acc: EventAccumulator, tag: str):
    content = acc.SummaryMetadata(tag).plugin_data.content
    return hparams_plugin_data_pb2.HParamsPluginData.FromString(content)


def test_hparams_records_read_back(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_hparams_start(
            {
                "lr": np.float32(0.5),
                "num_envs": np.int64(4),
                "seed": 2**60,  # beyond 2**53 a float64 would round it
                "norm_obs": np.bool_(True),
                "anneal_lr": False,
                "max_grad_norm": float("inf"),
                "env_id": "CartPole-v1",
                "schedule": None,
                "hidden": (64, 64),
                "tags": ["a", 1],
            },
            group_name="ppo lr=0.5",
            walltime=123.0,
        )
        writer.add_scalar("charts/episodic_return", 1.0, 700)
        writer.add_hparams_end({"eval/return_mean": 5}, "running", walltime=456.0)
    acc = read_events(str(tmp_path))
    start = read_hparams_record(acc, "_hparams_/session_start_info")
    assert start.version == 0 and start.WhichOneof("data") == "session_start_info"
    info = start.session_start_info
    assert (info.group_name, info.start_time_secs) == ("ppo lr=0.5", 123.0)
    kinds = {k: v.WhichOneof("kind") for k, v in info.hparams.items()}
    values = {k: (kind, getattr(info.hparams[k], kind)) for k, kind in kinds.items()}
    assert values == {
        "lr": ("number_value", 0.5),
        "num_envs": ("number_value", 4.0),
        "seed": ("string_value", "1152921504606846976"),
        "norm_obs": ("bool_value", True),
        "anneal_lr": ("bool_value", False),
        "max_grad_norm": ("string_value", "inf"),
        "env_id": ("string_value", "CartPole-v1"),
        "schedule": ("string_value", "None"),
        "hidden": ("string_value", "[64, 64]"),
        "tags": ("string_value", "['a', 1]"),
    }
    end = read_hparams_record(acc, "_hparams_/session_end_info").session_end_info
    assert (end.status, end.end_time_secs) == (api_pb2.STATUS_RUNNING, 456.0)
    # the final metric lands at the largest step written so far
    assert [(e.step, e.value) for e in acc.Scalars("eval/return_mean")] == [(700, 5.0)]


def test_add_hparams_with_tags_already_written(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("eval/return_mean", 3.0, 10)
        writer.add_hparams({"lr": 0.1}, ["eval/return_mean"], status="failure")
    acc = read_events(str(tmp_path))
    assert [(e.step, e.value) for e in acc.Scalars("eval/return_mean")] == [(10, 3.0)]
    assert read_hparams_record(acc, "_hparams_/session_start_info").session_start_info.hparams[
        "lr"
    ].number_value == 0.1
    end = read_hparams_record(acc, "_hparams_/session_end_info").session_end_info
    assert end.status == api_pb2.STATUS_FAILURE


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda w: w.add_hparams_start({}), ValueError, "hparams is empty"),
        (lambda w: w.add_hparams_start([("a", 1)]), TypeError, "hparams must be a mapping"),
        (lambda w: w.add_hparams_start({1: 2}), TypeError, "hparam names must be non-empty strs"),
        (
            lambda w: w.add_hparams_start({"net": {"depth": 2}}),
            TypeError,
            "hparam 'net': expected a bool, number, str, None, list or tuple, got dict",
        ),
        (lambda w: w.add_hparams_start({"a": 1}, group_name=3), TypeError, "group_name must be"),
        (lambda w: w.add_hparams({"a": 1}, "eval/x"), TypeError, "metrics must be a mapping"),
        (
            lambda w: w.add_hparams({"a": 1}, ["eval/missing"]),
            ValueError,
            r"metrics \['eval/missing'\] were not written with add_scalar",
        ),
        (lambda w: w.add_hparams({"a": 1}, {"m": "high"}), TypeError, "metric 'm': expected a"),
        (lambda w: w.add_hparams({"a": 1}, {"": 1.0}), TypeError, "tag must be a non-empty str"),
        (lambda w: w.add_hparams({"a": 1}, {"m": 1.0}, status="done"), ValueError, "status must"),
        (lambda w: w.add_hparams_end({"m": 1.0}, status="ok"), ValueError, "status must be one"),
        (
            lambda w: w.add_hparams({"a": 1}, {"m": 1.0}, global_step=-1),
            ValueError,
            "global_step must be None or an integer >= 0, got -1",
        ),
        (
            lambda w: w.add_hparams_end({"m": 1.0}, global_step="10"),
            ValueError,
            "global_step must be None or an integer >= 0, got '10'",
        ),
    ],
)
def test_hparams_reject_bad_input_before_writing(tmp_path, call, error, match):
    with SummaryWriter(tmp_path) as writer:
        with pytest.raises(error, match=match):
            call(writer)
    assert read_events(str(tmp_path)).Tags()["tensors"] == []
    assert read_events(str(tmp_path)).Tags()["scalars"] == []


def test_hparams_records_are_written_once(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.add_hparams_start({"lr": 0.1})
    with pytest.raises(ValueError, match="HParams start record of .* is already written"):
        writer.add_hparams_start({"lr": 0.2})
    writer.add_hparams_end({"eval/return_mean": 1.0})
    with pytest.raises(ValueError, match="HParams end record of .* is already written"):
        writer.add_hparams_end({"eval/return_mean": 2.0})
    with pytest.raises(ValueError, match="HParams end record of .* is already written"):
        writer.add_hparams({"lr": 0.3}, {})
    writer.close()
    closed = SummaryWriter(tmp_path / "closed")
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        closed.add_hparams_start({"lr": 0.1})
    with pytest.raises(ValueError, match="closed"):
        closed.add_hparams_end({"eval/return_mean": 1.0})
    acc = read_events(str(tmp_path))
    assert [e.value for e in acc.Scalars("eval/return_mean")] == [1.0]
    assert len(acc.Tensors("_hparams_/session_start_info")) == 1
    assert len(acc.Tensors("_hparams_/session_end_info")) == 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def post_json(url: str, body: dict):
    """POST as TensorBoard's HParams frontend does: a JSON body sent as text/plain."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


@contextlib.contextmanager
def tensorboard_server(logdir, *args: str):
    """Run the ``tensorboard`` program of this Python environment on ``logdir``; yields the base
    URL and a function that returns the server's output so far (for failure messages)."""
    program = Path(sys.executable).with_name("tensorboard")
    assert program.exists(), f"tensorboard is a test dependency; {program} is missing"
    port = free_port()
    log = (logdir / f"tensorboard-{port}.log").open("w+")
    command = [str(program), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen([*command, *args], stdout=log, stderr=subprocess.STDOUT)

    def output() -> str:
        log.flush()
        log.seek(0)
        return log.read()[-3000:]

    try:
        yield f"http://127.0.0.1:{port}", server, output
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def poll(server, fetch, ready, output, timeout: float = 60.0):
    """``fetch()`` until ``ready(result)``; the last result, or an assertion error with the
    server's output."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline and server.poll() is None:
        try:
            result = fetch()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            result = None
        if result is not None and ready(result):
            return result
        time.sleep(0.25)
    raise AssertionError(f"tensorboard never got ready; last answer {result!r}:\n{output()}")


def test_tensorboard_server_shows_scalars_and_text(tmp_path):
    run_dir = tmp_path / "CartPole-v1__test__0__0"
    with SummaryWriter(run_dir) as writer:
        writer.add_scalar("charts/episodic_return", 21.0, 100)
        writer.add_hyperparameters({"lr": 0.01})
    run = run_dir.name
    with tensorboard_server(tmp_path, "--load_fast", "false") as (url, server, output):
        base = f"{url}/data/plugin"
        tags = poll(
            server,
            lambda: (get_json(f"{base}/scalars/tags"), get_json(f"{base}/text/tags")),
            lambda r: run in r[0] and run in r[1],
            output,
        )
        assert "charts/episodic_return" in tags[0][run]
        assert tags[1][run] == ["hyperparameters"]
        points = get_json(f"{base}/scalars/scalars?run={run}&tag=charts/episodic_return")
        assert [(p[1], p[2]) for p in points] == [(100, 21.0)]
        (entry,) = get_json(f"{base}/text/text?run={run}&tag=hyperparameters")
        assert "<table>" in entry["text"] and "<td>0.01</td>" in entry["text"]


ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def write_sweep(logdir) -> None:
    """Four runs as a trainer writes them: two PPO runs with different hparams (the second with
    one more name), and two A2C seeds grouped into one row."""
    with SummaryWriter(logdir / "CartPole-v1__ppo__lr0.01") as writer:
        writer.add_hparams_start(
            {"lr": 0.01, "env_id": "CartPole-v1", "norm_obs": True, "hidden": (64, 64),
             "schedule": None}
        )
        writer.add_scalar("charts/episodic_return", 30.0, 500)
        writer.add_hparams_end({"eval/return_mean": 50.0}, global_step=1000)
    with SummaryWriter(logdir / "Acrobot-v1__ppo__lr0.001") as writer:
        writer.add_hparams_start(
            {"lr": 0.001, "env_id": "Acrobot-v1", "norm_obs": False, "hidden": [32],
             "schedule": "linear", "clip_coef": 0.2}
        )
        writer.add_scalar("charts/episodic_return", -90.0, 800)
        writer.add_hparams_end({"eval/return_mean": -80.0}, status="failure")
    for seed, mean_return in ((0, 10.0), (1, 20.0)):
        with SummaryWriter(logdir / f"CartPole-v1__a2c__seed{seed}") as writer:
            writer.add_hparams_start(
                {"lr": 0.1, "env_id": "CartPole-v1", "seed": seed}, group_name="a2c lr=0.1"
            )
            writer.add_hparams_end({"eval/return_mean": mean_return}, global_step=2000)


def session_groups(url: str, experiment: dict, **col_options: dict) -> dict:
    """The request the HParams dashboard sends: every hparam and metric column, all statuses;
    ``col_options`` adds ordering or filters to the named columns."""
    columns = [{"hparam": h["name"], "includeInResult": True} for h in experiment["hparamInfos"]]
    columns += [{"metric": m["name"], "includeInResult": True} for m in experiment["metricInfos"]]
    for column in columns:
        name = column.get("hparam") or column["metric"]["tag"]
        column.update(col_options.get(name, {}))
    request = {"experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": columns,
               "startIndex": 0, "sliceSize": 100}
    return post_json(f"{url}/data/plugin/hparams/session_groups", request)


def test_tensorboard_hparams_dashboard_shows_the_sweep(tmp_path):
    write_sweep(tmp_path)
    hparam_names = {"lr", "env_id", "norm_obs", "hidden", "schedule", "clip_coef", "seed"}
    with tensorboard_server(tmp_path) as (url, server, output):
        experiment = poll(
            server,
            lambda: post_json(f"{url}/data/plugin/hparams/experiment",
                              {"experimentName": "", "hparamsLimit": 1000}),
            lambda e: {h["name"] for h in e.get("hparamInfos", [])} == hparam_names
            and len(e.get("metricInfos", [])) == 2,
            output,
        )
        infos = {h["name"]: h for h in experiment["hparamInfos"]}
        # the experiment spans every run: the ranges, and clip_coef that only one run has
        assert infos["lr"]["type"] == "DATA_TYPE_FLOAT64" and infos["lr"]["differs"]
        assert infos["lr"]["domainInterval"] == {"minValue": 0.001, "maxValue": 0.1}
        assert infos["clip_coef"]["type"] == "DATA_TYPE_FLOAT64"
        assert infos["norm_obs"]["type"] == "DATA_TYPE_BOOL"
        assert sorted(infos["norm_obs"]["domainDiscrete"]) == [False, True]
        assert sorted(infos["hidden"]["domainDiscrete"]) == ["[32]", "[64, 64]"]
        assert sorted(infos["schedule"]["domainDiscrete"]) == ["None", "linear"]
        assert sorted(m["name"]["tag"] for m in experiment["metricInfos"]) == [
            "charts/episodic_return", "eval/return_mean"
        ]

        answer = poll(server, lambda: session_groups(url, experiment),
                      lambda r: r["totalSize"] == 3, output)
        groups = {g["name"]: g for g in answer["sessionGroups"]}
        assert sorted(groups) == [
            "Acrobot-v1__ppo__lr0.001", "CartPole-v1__ppo__lr0.01", "a2c lr=0.1"
        ]

        def metrics(group):
            return {m["name"]["tag"]: (m["trainingStep"], m["value"])
                    for m in group["metricValues"]}

        ppo = groups["CartPole-v1__ppo__lr0.01"]
        assert ppo["hparams"] == {"lr": 0.01, "env_id": "CartPole-v1", "norm_obs": True,
                                  "hidden": "[64, 64]", "schedule": "None"}
        assert metrics(ppo) == {"charts/episodic_return": (500, 30.0),
                                "eval/return_mean": (1000, 50.0)}
        assert [s["status"] for s in ppo["sessions"]] == ["STATUS_SUCCESS"]
        acrobot = groups["Acrobot-v1__ppo__lr0.001"]
        assert acrobot["hparams"] == {"lr": 0.001, "env_id": "Acrobot-v1", "norm_obs": False,
                                      "hidden": "[32]", "schedule": "linear", "clip_coef": 0.2}
        assert metrics(acrobot) == {"charts/episodic_return": (800, -90.0),
                                    "eval/return_mean": (800, -80.0)}
        assert [s["status"] for s in acrobot["sessions"]] == ["STATUS_FAILURE"]
        a2c = groups["a2c lr=0.1"]
        assert sorted(s["name"] for s in a2c["sessions"]) == [
            "CartPole-v1__a2c__seed0", "CartPole-v1__a2c__seed1"
        ]
        assert {k: a2c["hparams"][k] for k in ("lr", "env_id")} == {"lr": 0.1,
                                                                     "env_id": "CartPole-v1"}
        assert metrics(a2c)["eval/return_mean"][1] == 15.0  # the mean over the two seeds

        # sorted and filtered as the dashboard asks
        best_first = session_groups(url, experiment,
                                    **{"eval/return_mean": {"order": "ORDER_DESC"}})
        assert [g["name"] for g in best_first["sessionGroups"]] == [
            "CartPole-v1__ppo__lr0.01", "a2c lr=0.1", "Acrobot-v1__ppo__lr0.001"
        ]
        large_lr = session_groups(url, experiment, lr={
            "filterInterval": {"minValue": 0.005, "maxValue": 1.0}, "order": "ORDER_ASC"})
        assert [g["name"] for g in large_lr["sessionGroups"]] == [
            "CartPole-v1__ppo__lr0.01", "a2c lr=0.1"
        ]
        acrobot_only = session_groups(url, experiment,
                                      env_id={"filterDiscrete": ["Acrobot-v1"]})
        assert [g["name"] for g in acrobot_only["sessionGroups"]] == ["Acrobot-v1__ppo__lr0.001"]
