from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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


def test_progress_prints_throttled_line():
    stream = io.StringIO()
    progress = Progress(1000, stream=stream, enabled=True, interval=0.0)
    time.sleep(0.01)
    progress.update(250, episode_return=12.345678)
    line = stream.getvalue()
    assert line.startswith("\rstep 250/1,000 (25%) | ")
    assert "SPS | episode_return 12.35" in line
    progress.interval = 3600
    progress.update(500)
    assert stream.getvalue() == line
    progress.close(1000)
    assert "step 1,000/1,000 (100%)" in stream.getvalue()
    assert stream.getvalue().endswith("\n")


def test_progress_is_silent_when_not_a_terminal_or_disabled():
    stream = io.StringIO()
    for progress in (
        Progress(10, stream=stream, interval=0.0),
        Progress(stream=stream, enabled=False),
    ):
        assert not progress.enabled
        progress.update(5, x=1.0)
        progress.close(10)
    assert stream.getvalue() == ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_tensorboard_server_shows_scalars_and_text(tmp_path):
    run_dir = tmp_path / "CartPole-v1__test__0__0"
    with SummaryWriter(run_dir) as writer:
        writer.add_scalar("charts/episodic_return", 21.0, 100)
        writer.add_hyperparameters({"lr": 0.01})
    port = free_port()
    log = (tmp_path / "tensorboard.log").open("w+")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}/data/plugin"
    run = run_dir.name
    try:
        deadline = time.monotonic() + 60
        scalars = text = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                break
            try:
                scalars = get_json(f"{base}/scalars/tags")
                text = get_json(f"{base}/text/tags")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if scalars and run in scalars and text and run in text:
                break
            time.sleep(0.5)
        log.seek(0)
        assert scalars and run in scalars, f"no scalars from tensorboard: {log.read()[-2000:]}"
        assert "charts/episodic_return" in scalars[run]
        assert text[run] == ["hyperparameters"]
        points = get_json(f"{base}/scalars/scalars?run={run}&tag=charts/episodic_return")
        assert [(p[1], p[2]) for p in points] == [(100, 21.0)]
        (entry,) = get_json(f"{base}/text/text?run={run}&tag=hyperparameters")
        assert "<table>" in entry["text"] and "<td>0.01</td>" in entry["text"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
