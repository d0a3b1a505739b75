"""Checkpoints as numpy arrays plus JSON, written atomically, validated on load, no pickle.

A checkpoint named ``PREFIX`` is two files side by side::

    PREFIX.json                  format version, the caller's metadata, and the name, size and
                                 sha256 of the arrays file it belongs to
    PREFIX.<sha256[:16]>.npz     the arrays (weights, optimizer moments, ...), plain .npy members

The arrays file is named after its content, so saving never overwrites the arrays the current
JSON points to. Each file is written to a temporary file in the same directory, flushed, fsynced
and moved into place with ``os.replace``; the JSON goes last and is the commit point:

- a crash before the JSON is replaced leaves the previous checkpoint complete and loadable (plus,
  at worst, an orphaned arrays file that the next save deletes);
- a crash after it leaves the new checkpoint complete;
- a JSON and an arrays file that do not belong together, or an arrays file truncated or altered
  on disk, fail the sha256 check with :class:`CheckpointError`; nothing mismatched loads silently.

Old arrays files of the same prefix are deleted after a successful save. One writer per prefix.

Metadata is anything JSON holds: dicts with str keys, lists, str, int (of any size, so numpy
``PCG64`` states round-trip exactly), float, bool, None; numpy scalars are converted, tuples come
back as lists. Arrays belong in ``arrays``: e.g. optimizer moments under ``"optim/exp_avg/0"``,
its step counter and learning rate in ``meta``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "validate_arrays",
]

FORMAT = "rlgrad-checkpoint"
FORMAT_VERSION = 1
DEFAULT_NAME = "checkpoint"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, inconsistent or does not fit what the caller expects."""


# ---------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``arrays`` and ``meta`` as one checkpoint; returns the path of its JSON file.

    Args:
        path: an existing directory (the checkpoint is ``DIR/checkpoint.json`` and its arrays
            file), a ``PREFIX`` (``PREFIX.json``), or a path ending in ``.json``. Missing parent
            directories are created.
        arrays: name to array. Names are non-empty strings (``/`` allowed); object arrays are
            refused, since they would need pickle.
        meta: JSON-compatible metadata: agent name, hyperparameters, spaces, step counters,
            :func:`rng_state` dicts, optimizer scalars.

    Raises:
        TypeError: an array of objects, a name that is not a string, or metadata that JSON
            cannot hold. Raised before anything is written.
    """
    json_path = _json_path(path)
    checked = _check_arrays(arrays)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arrays_file": None,
        "sha256": None,
        "size": None,
        "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in checked.items()},
        "meta": _to_json({} if meta is None else meta, "meta"),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    stem = json_path.name[: -len(".json")]

    tmp_npz, digest, size = _write_temp(json_path.parent, stem, lambda f: _write_npz(f, checked))
    npz_path = json_path.parent / f"{stem}.{digest[:16]}.npz"
    already_there = npz_path.exists()  # same content as an earlier save: never delete it
    try:
        os.replace(tmp_npz, npz_path)
    except BaseException:
        _remove(tmp_npz)
        raise
    document.update(arrays_file=npz_path.name, sha256=digest, size=size)
    text = json.dumps(document, indent=1, allow_nan=True) + "\n"
    try:
        tmp_json, _, _ = _write_temp(json_path.parent, stem, lambda f: f.write(text.encode()))
        try:
            os.replace(tmp_json, json_path)
        except BaseException:
            _remove(tmp_json)
            raise
    except BaseException:
        if not already_there:
            _remove(npz_path)
        raise
    _fsync_dir(json_path.parent)
    _remove_stale_arrays_files(json_path.parent, stem, keep=npz_path.name)
    return json_path


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping of name to array, got {type(arrays).__name__}")
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"array names must be non-empty str, got {name!r}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(
                f"array {name!r} has dtype {array.dtype}: object arrays cannot be saved without "
                "pickle; pass numeric arrays"
            )
        checked[name] = array
    return checked


def _to_json(x: Any, where: str) -> Any:
    """A copy of ``x`` made of JSON types, or TypeError naming where the bad value sits."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, float)):
        return x
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, Mapping):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: JSON keys must be str, got {k!r}")
            out[k] = _to_json(v, f"{where}[{k!r}]")
        return out
    if isinstance(x, (list, tuple)):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, np.ndarray):
        raise TypeError(f"{where}: is an array of shape {x.shape}; put arrays in `arrays`")
    raise TypeError(f"{where}: cannot store {type(x).__name__} {x!r} in JSON")


def _write_npz(f: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    # What np.savez does, minus its keyword-argument interface (a name like "file" would clash).
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _write_temp(
    directory: Path, stem: str, write: Callable[[BinaryIO], object]
) -> tuple[str, str, int]:
    """Write a temporary file in ``directory`` durably; returns (its path, sha256, size)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            digest = hashlib.sha256()
            size = 0
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except BaseException:
        _remove(tmp)
        raise
    return tmp, digest.hexdigest(), size


def _remove(path: str | os.PathLike[str]) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory: Path) -> None:
    # Makes the renames durable on POSIX; directories cannot be opened this way on Windows.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_arrays_files(directory: Path, stem: str, keep: str) -> None:
    pattern = re.compile(re.escape(stem) + r"\.[0-9a-f]{16}\.npz")
    for entry in os.scandir(directory):
        if entry.name != keep and pattern.fullmatch(entry.name):
            _remove(entry.path)


# ---------------------------------------------------------------------------------------------
# Loading


def load_checkpoint(
    path: str | os.PathLike[str], expected_meta: Mapping[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; returns ``(arrays, meta)``.

    Everything is checked before anything is returned: the format version, that the arrays file
    is the one the JSON was written with (size and sha256), that it holds exactly the recorded
    names, shapes and dtypes, and that ``meta[k] == v`` for every item of ``expected_meta`` (e.g.
    ``{"agent": "ppo", "env_id": "CartPole-v1"}``). Arrays are loaded with
    ``allow_pickle=False``.

    Args:
        path: as for :func:`save_checkpoint`.
        expected_meta: metadata items the checkpoint must have.

    Raises:
        CheckpointError: a ``ValueError`` naming the file and what is wrong with it.
    """
    json_path = _json_path(path)
    document = _read_json(json_path)
    where = str(json_path)
    npz_name = document.get("arrays_file")
    if not isinstance(npz_name, str) or Path(npz_name).name != npz_name or npz_name in ("", ".."):
        raise CheckpointError(f"{where}: invalid arrays_file entry {npz_name!r}")
    npz_path = json_path.parent / npz_name
    try:
        data = npz_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{npz_path}: arrays file of checkpoint {where} is missing") from None
    except OSError as e:
        raise CheckpointError(f"{npz_path}: cannot read arrays file ({e})") from e
    if len(data) != document.get("size"):
        raise CheckpointError(
            f"{npz_path}: arrays file has {len(data)} bytes, {where} recorded "
            f"{document.get('size')} (truncated, or not the file this checkpoint was written with)"
        )
    if hashlib.sha256(data).hexdigest() != document.get("sha256"):
        raise CheckpointError(
            f"{npz_path}: sha256 does not match the one recorded in {where} (corrupted, or not the "
            "file this checkpoint was written with)"
        )
    arrays = _read_npz(data, npz_path)
    _check_manifest(arrays, document.get("arrays"), npz_path)
    meta = document.get("meta")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
    for key, want in (expected_meta or {}).items():
        if key not in meta:
            raise CheckpointError(f"{where}: meta has no {key!r} (expected {want!r})")
        if meta[key] != want:
            raise CheckpointError(f"{where}: meta[{key!r}] is {meta[key]!r}, expected {want!r}")
    return arrays, meta


def _json_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / f"{DEFAULT_NAME}.json"
    if path.suffix == ".json":
        return path
    return path.with_name(path.name + ".json")


def _read_json(json_path: Path) -> dict[str, Any]:
    try:
        text = json_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{json_path}: checkpoint file is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{json_path}: cannot read checkpoint file ({e})") from e
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not an rlgrad checkpoint (no format {FORMAT!r})")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path}: checkpoint format version {version!r}, this rlgrad reads version "
            f"{FORMAT_VERSION}"
        )
    return document


def _read_npz(data: bytes, npz_path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{npz_path}: cannot read arrays ({e})") from e


def _check_manifest(arrays: dict[str, np.ndarray], manifest: Any, npz_path: Path) -> None:
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{npz_path}: checkpoint JSON has no 'arrays' record")
    if set(arrays) != set(manifest):
        raise CheckpointError(
            f"{npz_path}: holds arrays {sorted(arrays)}, the JSON records {sorted(manifest)}"
        )
    for name, array in arrays.items():
        record = manifest[name]
        if not isinstance(record, dict):
            raise CheckpointError(f"{npz_path}: invalid JSON record for array {name!r}")
        if [*array.shape] != record.get("shape") or array.dtype.str != record.get("dtype"):
            raise CheckpointError(
                f"{npz_path}: array {name!r} is {array.dtype.str} {array.shape}, the JSON "
                f"records {record.get('dtype')} {record.get('shape')}"
            )


def validate_arrays(
    expected: Mapping[str, Sequence[int] | np.ndarray], got: Mapping[str, np.ndarray]
) -> None:
    """Check that ``got`` has exactly the names of ``expected``, with the expected shapes.

    Call it before assigning anything, so an agent stays untouched when a checkpoint does not fit.

    Args:
        expected: name to shape (a sequence of ints), or name to array (its shape is used), e.g. a
            module's current parameters.
        got: name to array, e.g. the arrays of :func:`load_checkpoint`.

    Raises:
        CheckpointError: listing every missing name, unexpected name and shape mismatch.
    """
    problems = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    for name, want in expected.items():
        if name in got:
            want_shape = tuple(want.shape) if hasattr(want, "shape") else tuple(want)
            got_shape = tuple(np.shape(got[name]))
            if got_shape != want_shape:
                problems.append(f"{name!r} has shape {got_shape}, expected {want_shape}")
    if problems:
        raise CheckpointError("arrays do not match: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Random number generators


def rng_state(gen: np.random.Generator) -> dict[str, Any]:
    """The state of a numpy ``Generator`` as JSON-compatible data.

    For the default ``PCG64`` it is a dict of ints (128-bit ones, which JSON keeps exact); other
    bit generators' arrays become lists. Restore with :func:`set_rng_state`.
    """
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"rng_state expects a numpy.random.Generator, got {type(gen).__name__}")
    return _arrays_to_lists(gen.bit_generator.state)


def set_rng_state(gen: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Put ``gen`` in the state returned by :func:`rng_state`; its stream continues from there."""
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"set_rng_state expects a numpy.random.Generator, got {type(gen).__name__}")
    kind = type(gen.bit_generator).__name__
    if not isinstance(state, Mapping) or state.get("bit_generator") != kind:
        got = state.get("bit_generator") if isinstance(state, Mapping) else state
        raise ValueError(f"RNG state is for bit generator {got!r}, expected {kind!r}")
    try:
        gen.bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"invalid {kind} RNG state: {e!r}") from e


def _arrays_to_lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _arrays_to_lists(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.integer):
        return int(x)
    return x
