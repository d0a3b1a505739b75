"""TensorBoard event files and a console progress report.

:class:`SummaryWriter` writes TensorBoard event files with the ``tensorboard`` package's own
``EventFileWriter`` and protocol buffers, so neither PyTorch nor TensorFlow is needed. Method names
follow ``torch.utils.tensorboard.SummaryWriter``. Scalars are classic ``simple_value`` summaries
(the scalars plugin), text is a string tensor tagged for the text plugin (rendered as Markdown),
and :meth:`SummaryWriter.add_hparams_start` / :meth:`SummaryWriter.add_hparams_end` write the
session records of the HParams plugin, so a sweep can be sorted and filtered in TensorBoard's
HParams dashboard.

:class:`Progress` reports training progress: a tqdm bar on a terminal, a plain line every few
seconds anywhere else (a CI log, a file).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
from google.protobuf import struct_pb2
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2 as hparams_plugin_data_pb2
from tensorboard.plugins.text import plugin_data_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tqdm import tqdm

__all__ = ["Progress", "SummaryWriter", "hparams_markdown"]

_TEXT_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name="text",
        content=plugin_data_pb2.TextPluginData(version=0).SerializeToString(),
    )
)

# An HParams record lives in its summary's metadata; the value is an empty float tensor.
_HPARAMS_NULL_TENSOR = tensor_pb2.TensorProto(
    dtype="DT_FLOAT",
    tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=0)]
    ),
)
_STATUSES = {
    "success": api_pb2.STATUS_SUCCESS,
    "failure": api_pb2.STATUS_FAILURE,
    "running": api_pb2.STATUS_RUNNING,
    "unknown": api_pb2.STATUS_UNKNOWN,
}
_MAX_EXACT_INT = 2**53  # larger ints are not exact as a protobuf number (a float64)


class SummaryWriter:
    """Write scalars, text and HParams records to a TensorBoard event file in ``log_dir``.

    Events are queued and written by a background thread; :meth:`flush` forces them to disk,
    :meth:`close` (or leaving a ``with`` block) flushes and closes the file.

    For the HParams dashboard, the run directory is one "session". A trainer writes its start
    record when a new run begins and its end record when the run finishes::

        writer = SummaryWriter(run_dir)
        if not resumed:
            writer.add_hparams_start(hparams)           # once per run directory
        try:
            ...                                         # training: add_scalar(...)
        except TrainingInterrupted:                     # Ctrl-C, to be resumed: no end record
            raise
        except Exception:
            writer.add_hparams_end(status="failure")
            raise
        writer.add_hparams_end({"eval/return_mean": mean_return}, global_step=total_steps)

    TensorBoard keeps the first start record and the first end record it finds in a run
    directory, so each is written once per run: a resumed run writes no second start record, and
    a run stopped in order to be resumed writes no end record (its status shows as Unknown until
    the resumed run ends it). Then ``tensorboard --logdir runs`` shows the sweep in the HParams
    tab: a row per run, its hyperparameters, and the last value of each of its scalar tags.

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
        self._scalar_tags: set[str] = set()
        self._max_step = 0
        self._hparams_started = False
        self._hparams_ended = False

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
        self._scalar_tags.add(tag)

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

    def add_hparams_start(
        self,
        hparams: Mapping[str, Any],
        *,
        group_name: str = "",
        walltime: float | None = None,
    ) -> None:
        """Record this run's hyperparameters for TensorBoard's HParams dashboard.

        Call it once, when a new run starts; :meth:`add_hparams_end` records the end. The
        dashboard shows a row per run directory with these values beside the last value of each
        scalar tag the run wrote, so the runs of a sweep can be sorted and filtered.

        Values: a bool stays a bool; an int or float is a number (except an int beyond 2**53,
        which a float64 cannot hold exactly, and nan / inf: those become strings, so they are
        shown rather than dropped); a str stays; None becomes ``"None"``; a list or tuple becomes
        the string of the list (``(64, 64)`` and ``[64, 64]`` are both ``"[64, 64]"``). Anything
        else is a TypeError. Runs with the same non-empty ``group_name`` share one row whose
        metrics are their mean (the seeds of one configuration, say).

        Unlike ``torch.utils.tensorboard``, no experiment record is written: TensorBoard then
        derives the experiment from the start records of all runs, so the hparam names, their
        ranges and which of them differ cover the whole sweep. (With a per-run experiment record
        it shows the names and values of whichever run it reads first.)
        """
        summary = _session_start_summary(hparams, group_name, walltime)
        self._check_hparams_order(start=True)
        self._add(summary, None, walltime)
        self._hparams_started = True

    def add_hparams_end(
        self,
        metrics: Mapping[str, float] | Sequence[str] = (),
        status: str = "success",
        *,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Record the end of this run for the HParams dashboard: its final metrics and status.

        ``metrics`` is either a mapping of tags to final values, each written as a scalar at
        ``global_step`` (default: the largest step this writer has written), or a sequence of
        tags this writer has already written with :meth:`add_scalar`; an unknown tag is a
        ValueError rather than a column that silently stays empty. Either way each scalar tag of
        the run is a metric column in the dashboard. ``status`` is ``"success"``, ``"failure"``,
        ``"running"`` or ``"unknown"``. Call it once per run directory (see the class docstring).
        """
        values = _check_metrics(metrics, self._scalar_tags)
        _check_count("global_step", global_step, minimum=0)
        end = _session_end_summary(status, walltime)
        self._check_hparams_order(start=False)
        step = self._max_step if global_step is None else global_step
        for tag, value in values.items():
            self.add_scalar(tag, value, step, walltime)
        self._add(end, None, walltime)
        self._hparams_ended = True

    def add_hparams(
        self,
        hparams: Mapping[str, Any],
        metrics: Mapping[str, float] | Sequence[str],
        *,
        status: str = "success",
        global_step: int | None = None,
        group_name: str = "",
    ) -> None:
        """Start and end records in one call, like ``torch.utils.tensorboard``'s ``add_hparams``,
        for a script that logs everything once it is done (see :meth:`add_hparams_start` and
        :meth:`add_hparams_end`). Unlike torch's, the records go into this writer's ``log_dir``
        rather than a new time-stamped subdirectory, so the HParams row is the run whose curves
        the Scalars tab shows. Every argument is checked before anything is written.
        """
        start = _session_start_summary(hparams, group_name, None)
        _check_metrics(metrics, self._scalar_tags)
        _check_count("global_step", global_step, minimum=0)
        _session_end_summary(status, None)
        self._check_hparams_order(start=True)
        self._add(start, None, None)
        self._hparams_started = True
        self.add_hparams_end(metrics, status, global_step=global_step)

    def _check_hparams_order(self, *, start: bool) -> None:
        if self._closed:
            raise ValueError(f"SummaryWriter for {self.log_dir!r} is closed")
        if self._hparams_ended:
            raise ValueError(f"the HParams end record of {self.log_dir!r} is already written")
        if start and self._hparams_started:
            raise ValueError(f"the HParams start record of {self.log_dir!r} is already written")

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
            self._max_step = max(self._max_step, event.step)
        self._writer.add_event(event)


def _hparams_summary(
    tag: str, data: hparams_plugin_data_pb2.HParamsPluginData
) -> summary_pb2.Summary:
    data.version = hparams_metadata.PLUGIN_DATA_VERSION
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=hparams_metadata.PLUGIN_NAME, content=data.SerializeToString()
        )
    )
    value = summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=_HPARAMS_NULL_TENSOR)
    return summary_pb2.Summary(value=[value])


def _session_start_summary(
    hparams: Mapping[str, Any], group_name: str, walltime: float | None
) -> summary_pb2.Summary:
    if not isinstance(hparams, Mapping):
        raise TypeError(
            f"hparams must be a mapping of names to values, got {type(hparams).__name__}"
        )
    if not hparams:
        raise ValueError("hparams is empty; the HParams dashboard needs at least one")
    if not isinstance(group_name, str):
        raise TypeError(f"group_name must be a str, got {type(group_name).__name__}")
    info = hparams_plugin_data_pb2.SessionStartInfo(
        group_name=group_name, start_time_secs=time.time() if walltime is None else walltime
    )
    for name, value in hparams.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"hparam names must be non-empty strs, got {name!r}")
        info.hparams[name].CopyFrom(_hparam_value(name, value))
    return _hparams_summary(
        hparams_metadata.SESSION_START_INFO_TAG,
        hparams_plugin_data_pb2.HParamsPluginData(session_start_info=info),
    )


def _hparam_value(name: str, value: Any) -> struct_pb2.Value:
    if isinstance(value, (bool, np.bool_)):
        return struct_pb2.Value(bool_value=bool(value))
    if isinstance(value, (int, np.integer)):
        if abs(int(value)) > _MAX_EXACT_INT:
            return struct_pb2.Value(string_value=str(int(value)))
        return struct_pb2.Value(number_value=float(value))
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return struct_pb2.Value(number_value=x) if math.isfinite(x) else struct_pb2.Value(
            string_value=str(x)
        )
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    if value is None:
        return struct_pb2.Value(string_value="None")
    if isinstance(value, (list, tuple)):
        return struct_pb2.Value(string_value=str(list(value)))
    raise TypeError(
        f"hparam {name!r}: expected a bool, number, str, None, list or tuple, "
        f"got {type(value).__name__} {value!r}"
    )


def _check_metrics(
    metrics: Mapping[str, float] | Sequence[str], written: set[str]
) -> dict[str, float]:
    """The metric values to write: those of a mapping, none for a sequence of written tags."""
    if isinstance(metrics, Mapping):
        values = {}
        for tag, value in metrics.items():
            _check_tag(tag)
            try:
                values[tag] = float(value)
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"metric {tag!r}: expected a number, got {type(value).__name__} {value!r}"
                ) from e
        return values
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Sequence):
        raise TypeError(
            "metrics must be a mapping of tags to values or a sequence of tags, "
            f"got {type(metrics).__name__} {metrics!r}"
        )
    for tag in metrics:
        _check_tag(tag)
    unknown = [tag for tag in metrics if tag not in written]
    if unknown:
        raise ValueError(
            f"metrics {unknown} were not written with add_scalar by this writer; "
            f"written: {sorted(written)}"
        )
    return {}


def _session_end_summary(status: str, walltime: float | None) -> summary_pb2.Summary:
    if status not in _STATUSES:
        raise ValueError(f"status must be one of {list(_STATUSES)}, got {status!r}")
    info = hparams_plugin_data_pb2.SessionEndInfo(
        status=_STATUSES[status], end_time_secs=time.time() if walltime is None else walltime
    )
    return _hparams_summary(
        hparams_metadata.SESSION_END_INFO_TAG,
        hparams_plugin_data_pb2.HParamsPluginData(session_end_info=info),
    )


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
    """Training progress: a tqdm bar on a terminal, a plain line now and then anywhere else.

    On a terminal (``stream.isatty()``) a tqdm bar shows the step, steps per second, the time
    left and the latest metrics, redrawn at most every ``interval`` seconds. Anywhere else (a CI
    log, a file) a line is printed every ``line_interval`` seconds::

        step 40,960/100,000 (41%) | 5,213 SPS | return 87.5 | ETA 0:00:11

    and :meth:`close` always prints a last line, with the time taken in place of the ETA.
    :meth:`update` is meant for every iteration of a training loop: unless it is time to print,
    it returns after one clock read.

    Steps per second count from where this Progress started, never from step 0, so the first
    report after a resume is real:

    .. math:: \\mathrm{SPS} = \\frac{s - s_0}{t - t_0}, \\qquad
              \\mathrm{ETA} = \\frac{S - s}{\\mathrm{SPS}}

    with ``s`` the step at time ``t``, ``S`` = ``total_steps``, and ``(s_0, t_0)`` =
    (``start_step``, the time of construction) when ``start_step`` is given, else the step and
    time of the first :meth:`update`. The tqdm bar uses the same average (``smoothing=0``).

    Args:
        total_steps: the step budget, for the percentage and the ETA; None to omit them.
        start_step: the step training starts from (a resumed run's step); see above.
        stream: where to print; ``sys.stderr`` by default.
        enabled: False prints nothing; None (the default) and True print.
        interval: minimum seconds between redraws of the terminal bar.
        line_interval: seconds between plain lines when ``stream`` is not a terminal.
        clock: monotonic seconds, ``time.monotonic`` by default (injectable for tests).
    """

    def __init__(
        self,
        total_steps: int | None = None,
        *,
        start_step: int | None = None,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.25,
        line_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_count("total_steps", total_steps, minimum=1)
        _check_count("start_step", start_step, minimum=0)
        if enabled is not None and not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True, False or None, got {enabled!r}")
        _check_seconds("interval", interval)
        _check_seconds("line_interval", line_interval)
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.stream = sys.stderr if stream is None else stream
        if not callable(getattr(self.stream, "write", None)):
            raise TypeError(f"stream must have a write method, got {type(self.stream).__name__}")
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled is not False
        self.is_terminal = bool(callable(isatty) and isatty())
        self.total_steps = total_steps
        self.interval = interval
        self.line_interval = line_interval
        self._clock = clock
        self._metrics: dict[str, Any] = {}
        self._step = start_step
        self._origin: tuple[int, float] | None = None  # (s_0, t_0)
        self._last_print = 0.0
        self._bar: Any = None
        self._closed = not self.enabled
        if self.enabled and start_step is not None:
            self._start(start_step, clock())

    def update(self, step: int, **metrics: float) -> None:
        """Report progress at ``step`` with the latest ``metrics`` (printed at the next report,
        and kept until new values come)."""
        if self._closed:
            return
        now = self._clock()
        self._step = step
        if metrics:
            self._metrics.update(metrics)
        if self._origin is None:
            self._start(step, now)
        elif now - self._last_print >= (self.interval if self.is_terminal else self.line_interval):
            self._report(step, now, final=False)

    def close(self, step: int | None = None, **metrics: float) -> None:
        """Print the final report (at ``step``, else the last step seen) and end the bar.
        Closing twice, or closing a disabled Progress, prints nothing."""
        if self._closed:
            return
        self._closed = True
        now = self._clock()
        if step is not None:
            self._step = step
        self._metrics.update(metrics)
        if self._step is None:
            return  # nothing was ever reported, so there is nothing to sum up
        if self._origin is None:
            self._start(self._step, now)
        self._report(self._step, now, final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, step: int, now: float) -> None:
        self._origin = (step, now)
        self._last_print = now
        if self.is_terminal:
            self._bar = tqdm(
                total=self.total_steps,
                initial=step,
                file=self.stream,
                unit="step",
                unit_scale=True,
                smoothing=0,
                leave=True,
                disable=False,
            )

    def _report(self, step: int, now: float, *, final: bool) -> None:
        self._last_print = now
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k: _short(v) for k, v in self._metrics.items()}, refresh=False)
            if final:
                self._bar.close()  # draws the last state and ends the line
            else:
                self._bar.refresh()
            return
        self.stream.write(self._line(step, now, final) + "\n")
        self.stream.flush()

    def _line(self, step: int, now: float, final: bool) -> str:
        start_step, start_time = self._origin
        elapsed = now - start_time
        sps = (step - start_step) / elapsed if elapsed > 0 else None
        parts = [f"step {step:,}"]
        if self.total_steps:
            parts[0] += f"/{self.total_steps:,} ({100 * step / self.total_steps:.0f}%)"
        if sps is not None:
            parts.append(f"{sps:,.0f} SPS")
        parts += [f"{k} {_short(v)}" for k, v in self._metrics.items()]
        if final:
            parts.append(f"elapsed {_duration(elapsed)}")
        elif self.total_steps and sps:
            parts.append(f"ETA {_duration(max(self.total_steps - step, 0) / sps)}")
        return " | ".join(parts)


def _duration(seconds: float) -> str:
    """``H:MM:SS``, hours unbounded."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _check_count(name: str, value: int | None, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")


def _check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value >= 0
    ):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def _short(value: float) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{x:.4g}" if math.isfinite(x) else str(x)
