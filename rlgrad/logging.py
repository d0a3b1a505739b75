"""TensorBoard event files and a console progress line.

:class:`SummaryWriter` writes TensorBoard event files with the ``tensorboard`` package's own
``EventFileWriter`` and protocol buffers, so neither PyTorch nor TensorFlow is needed. Method names
follow ``torch.utils.tensorboard.SummaryWriter``. Scalars are classic ``simple_value`` summaries
(the scalars plugin), text is a string tensor tagged for the text plugin (rendered as Markdown).

:class:`Progress` prints one updating status line to a terminal.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.plugins.text import plugin_data_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

__all__ = ["Progress", "SummaryWriter", "hparams_markdown"]

_TEXT_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name="text",
        content=plugin_data_pb2.TextPluginData(version=0).SerializeToString(),
    )
)


class SummaryWriter:
    """Write scalars and text to a TensorBoard event file in ``log_dir``.

    Events are queued and written by a background thread; :meth:`flush` forces them to disk,
    :meth:`close` (or leaving a ``with`` block) flushes and closes the file.

    Args:
        log_dir: directory for the event file; created if missing.
        max_queue: events held in memory before a write is forced.
        flush_secs: the background thread flushes at least this often, in seconds.
        filename_suffix: appended to the event file's name.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        max_queue: int = 10,
        flush_secs: float = 120,
        filename_suffix: str = "",
    ) -> None:
        self.log_dir = os.fspath(log_dir)
        self._writer = EventFileWriter(self.log_dir, max_queue, flush_secs, filename_suffix)
        self._closed = False

    def get_logdir(self) -> str:
        return self.log_dir

    def add_scalar(
        self,
        tag: str,
        scalar_value: float,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Add one point to the curve ``tag`` at x = ``global_step`` (environment steps).

        ``scalar_value`` is anything ``float()`` accepts: a Python number, a numpy scalar or a
        one-element array. nan and inf are written as they are.
        """
        _check_tag(tag)
        try:
            value = float(scalar_value)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"add_scalar({tag!r}): expected a number, got {type(scalar_value).__name__} "
                f"{scalar_value!r}"
            ) from e
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]
        )
        self._add(summary, global_step, walltime)

    def add_text(
        self,
        tag: str,
        text_string: str,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Add Markdown text under ``tag`` in the text tab."""
        _check_tag(tag)
        if not isinstance(text_string, str):
            raise TypeError(f"add_text({tag!r}): expected a str, got {type(text_string).__name__}")
        tensor = tensor_pb2.TensorProto(
            dtype="DT_STRING",
            string_val=[text_string.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),  # rank 0: rendered as Markdown
        )
        value = summary_pb2.Summary.Value(tag=tag, metadata=_TEXT_METADATA, tensor=tensor)
        self._add(summary_pb2.Summary(value=[value]), global_step, walltime)

    def add_hyperparameters(
        self, params: Mapping[str, Any], tag: str = "hyperparameters", global_step: int = 0
    ) -> None:
        """Write ``params`` as a Markdown table in the text tab (see :func:`hparams_markdown`)."""
        self.add_text(tag, hparams_markdown(params), global_step)

    def flush(self) -> None:
        """Write every queued event to disk."""
        if not self._closed:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file. Closing twice is harmless."""
        if not self._closed:
            self._writer.close()
            self._closed = True

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(
        self, summary: summary_pb2.Summary, global_step: int | None, walltime: float | None
    ) -> None:
        if self._closed:
            raise ValueError(f"SummaryWriter for {self.log_dir!r} is closed")
        event = event_pb2.Event(
            wall_time=time.time() if walltime is None else walltime, summary=summary
        )
        if global_step is not None:
            event.step = int(global_step)
        self._writer.add_event(event)


def hparams_markdown(params: Mapping[str, Any]) -> str:
    """A two-column Markdown table ``|param|value|``, one row per entry, in the given order.

    ``|`` and newlines in names or values are escaped so the table stays one row per entry.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"hparams_markdown expects a mapping, got {type(params).__name__}")
    rows = "".join(f"\n|{_cell(k)}|{_cell(v)}|" for k, v in params.items())
    return "|param|value|\n|-|-|" + rows


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _check_tag(tag: str) -> None:
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"tag must be a non-empty str, got {tag!r}")


class Progress:
    """One status line on a terminal: step, steps per second and the latest metrics.

    ``update`` is meant for every iteration of a training loop: it returns after one clock read
    unless ``interval`` seconds have passed since the last print, and does nothing at all when
    disabled. By default it is enabled only when ``stream`` is a terminal, so redirected output
    and CI logs stay clean. Output::

        step 40,960/100,000 (41%) | 5,213 SPS | episode_return 87.5

    Args:
        total_steps: the step budget, for the percentage; None to omit it.
        stream: where to print; ``sys.stderr`` by default.
        enabled: force on or off; None means ``stream.isatty()``.
        interval: minimum seconds between prints.
    """

    def __init__(
        self,
        total_steps: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.25,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total_steps = total_steps
        self.interval = interval
        self._last_time = time.monotonic()
        self._last_step = 0
        self._printed = False

    def update(self, step: int, **metrics: float) -> None:
        """Report progress at ``step``; printed at most once per ``interval``."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_time < self.interval:
            return
        self._print(step, now, metrics)

    def close(self, step: int | None = None, **metrics: float) -> None:
        """Print a last update (if ``step`` is given) and end the line."""
        if not self.enabled:
            return
        if step is not None and (step != self._last_step or not self._printed):
            self._print(step, time.monotonic(), metrics)
        if self._printed:
            self.stream.write("\n")
            self.stream.flush()
            self._printed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _print(self, step: int, now: float, metrics: Mapping[str, float]) -> None:
        elapsed = now - self._last_time
        sps = (step - self._last_step) / elapsed if elapsed > 0 else 0.0
        parts = [f"step {step:,}"]
        if self.total_steps:
            parts[0] += f"/{self.total_steps:,} ({100 * step / self.total_steps:.0f}%)"
        parts.append(f"{sps:,.0f} SPS")
        parts += [f"{k} {_short(v)}" for k, v in metrics.items()]
        # \r returns to the line start, \x1b[K clears what a longer previous line left behind
        self.stream.write("\r" + " | ".join(parts) + "\x1b[K")
        self.stream.flush()
        self._printed = True
        self._last_time = now
        self._last_step = step


def _short(value: float) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{x:.4g}" if math.isfinite(x) else str(x)
