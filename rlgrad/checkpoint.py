"""Checkpoints as numpy arrays plus JSON: data, never code; atomic, checksummed, validated.

A checkpoint named ``PREFIX`` is two files side by side::

    PREFIX.json                  format version, the caller's metadata, the name, size and sha256
                                 of the arrays file it belongs to, and ``document_sha256``
    PREFIX.<sha256[:16]>.npz     the arrays (weights, optimizer moments, ...), plain stored .npy
                                 members

**Nothing run unasked.** A checkpoint may come from a stranger, so reading one executes nothing
and reads nothing it was not asked to:

- no pickle: object arrays are refused on save and loaded with ``allow_pickle=False``; every
  member of the arrays file must be an uncompressed ``.npy``;
- only regular files are read. The JSON may be a symbolic link to a regular file (it is the
  name the user typed); the arrays file may not be a symbolic link at all (``save_checkpoint``
  never writes one, and a link could point anywhere). A device (``/dev/urandom``), FIFO, socket
  or directory is refused from its ``stat``, before it is opened;
- reading is bounded: the JSON is refused above :data:`MAX_JSON_BYTES` (64 MiB) before it is
  read (and metadata that would exceed it is refused on save), and the arrays file's size is
  compared with the size the JSON records before it is read, which is then the most that is
  read (a file that changes meanwhile is refused).

**Nothing lost.** Each file is written to a temporary file ``.PREFIX.<16 hex>.tmp`` in the same
directory, flushed, fsynced and moved into place with ``os.replace``. The arrays file goes first
and is named after its content, so saving never overwrites the arrays the current JSON points to;
the JSON goes last and is the commit point:

- a crash or a failed write (a full disk: ``ENOSPC``) before the JSON is replaced leaves the
  previous checkpoint complete and loadable. A failed save removes its own files and raises an
  ``OSError`` (same ``errno``) whose one-line message names the checkpoint and the cause;
- a crash after it leaves the new checkpoint complete;
- old arrays files of the prefix are deleted after a successful save, and so is an arrays file
  orphaned by a crash. One writer per prefix; any number of readers.

A process killed mid-save leaves its temporary file behind. The next save *and* the next load of
that prefix in that directory remove such orphans, and only regular files named exactly
``.PREFIX.<16 hex>.tmp``. A writer holds an exclusive ``fcntl.flock`` on its temporary file from
creation to rename, and the cleaner removes only a file it can lock itself, so a live writer's
file, in this process or another, is never touched, however slow its disk, while the kernel drops
a killed writer's lock at once. A lock is chosen over an age rule ("older than 60 s") because age
cannot tell a stalled writer from a dead one, nor a clock that jumped. (Where ``fcntl`` does not
exist, Windows, the age rule is the fallback: a temporary file is removed once its mtime is
:data:`ORPHAN_AGE_SECONDS` old; a writer stalled that long then fails cleanly.) Arrays files are
never removed by a load: a writer's new arrays file sits beside the old JSON until its commit.

**Nothing mismatched, nothing edited.** ``document_sha256`` is the sha256 of the canonical JSON
of the whole document minus that field, ``json.dumps(doc, sort_keys=True, separators=(",", ":"),
allow_nan=False)`` encoded as UTF-8, so a changed digit anywhere (a step counter, a seed, a
learning rate, a recorded shape) fails the load; so do an arrays file truncated, altered or from
another checkpoint (its size and sha256), or arrays whose names, shapes or dtypes differ from the
record. The checksums catch damage and accidental edits, not a forger, who can recompute them;
that is why loading trusts the files as data only. Another ``format_version`` is refused by name.

**Finite numbers only.** A float or complex array (fields of structured arrays included) holding
nan or inf is refused on save, naming the array and the first bad index, before anything is
written, and on load. Metadata floats must be finite too: saved with ``allow_nan=False``, and the
literals ``NaN``, ``Infinity``, ``-Infinity`` (or a float like ``1e999``) refused on load.

Metadata is anything JSON holds: dicts with str keys, lists, str, int (any size Python prints,
so numpy ``PCG64`` states round-trip exactly), finite float, bool, None; numpy scalars are
converted, tuples come back as lists. Arrays belong in ``arrays``: e.g. optimizer moments under
``"optim/exp_avg/0"``, its step counter and learning rate in ``meta``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
import stat
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: temporary files are cleaned by age instead (module docstring)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT_VERSION",
    "MAX_JSON_BYTES",
    "CheckpointError",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "validate_arrays",
]

FORMAT = "rlgrad-checkpoint"
FORMAT_VERSION = 2
DEFAULT_NAME = "checkpoint"
CHECKSUM_KEY = "document_sha256"
MAX_JSON_BYTES = 64 * 2**20
"""The largest checkpoint JSON file saved or read, in bytes."""
ORPHAN_AGE_SECONDS = 60.0
"""Without ``fcntl`` only: the age (mtime) at which a temporary file counts as orphaned."""

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer
_O_BINARY = getattr(os, "O_BINARY", 0)
_CHUNK = 1 << 20


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
            refused, since they would need pickle, and so are float arrays holding nan or inf.
        meta: JSON-compatible metadata: agent name, hyperparameters, spaces, step counters,
            :func:`rng_state` dicts, optimizer scalars.

    Raises:
        TypeError: an array of objects, a name that is not a string, or metadata that JSON
            cannot hold. Raised before anything is written.
        ValueError: a nan or inf in an array (named, with its first bad index) or in the
            metadata, or metadata beyond :data:`MAX_JSON_BYTES`. Raised before anything is
            written.
        OSError: writing failed (e.g. ``ENOSPC``); the previous checkpoint is intact and no
            file of this save is left. One line naming the checkpoint and the cause.
    """
    json_path = _json_path(path)
    checked = _check_arrays(arrays)
    stem = json_path.name[: -len(".json")]
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        # placeholders as long as the real values, so the size check below is an upper bound
        "arrays_file": f"{stem}.{'0' * 16}.npz",
        "sha256": "0" * 64,
        "size": 2**63 - 1,
        "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in checked.items()},
        "meta": _to_json({} if meta is None else meta, "meta"),
    }
    _encode(document, json_path)
    try:
        _commit(json_path, stem, checked, document)
    except OSError as e:
        cause = e.strerror or str(e)
        message = f"cannot save checkpoint {json_path}: {cause}"
        raise (OSError(message) if e.errno is None else OSError(e.errno, message)) from e
    return json_path


def _commit(
    json_path: Path, stem: str, arrays: Mapping[str, np.ndarray], document: dict[str, Any]
) -> None:
    directory = json_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    _remove_orphan_temps(directory, stem)
    with _temp_file(directory, stem) as (tmp, f):
        _write_npz(f, arrays)
        digest, size = _sync_and_hash(f)
        npz_path = directory / f"{stem}.{digest[:16]}.npz"
        already_there = npz_path.exists()  # same content as an earlier save: never delete it
        os.replace(tmp, npz_path)
    try:
        _fsync_dir(directory)  # the arrays file is in place before the JSON can point to it
        document.update(arrays_file=npz_path.name, sha256=digest, size=size)
        data = _encode(document, json_path)
        with _temp_file(directory, stem) as (tmp, f):
            f.write(data)
            _sync_and_hash(f)
            os.replace(tmp, json_path)
    except BaseException:
        if not already_there:
            _remove(npz_path)
        raise
    _fsync_dir(directory)
    _remove_stale_arrays_files(directory, stem, keep=npz_path.name)


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
        bad = _non_finite(array)
        if bad is not None:
            field, index, x = bad
            raise ValueError(
                f"array {name!r}{field} holds {x!r} at index {index}: a checkpoint holds finite "
                "numbers only"
            )
        checked[name] = array
    return checked


def _non_finite(array: np.ndarray) -> tuple[str, tuple[int, ...], Any] | None:
    """``(field, index, value)`` of the first nan or inf of ``array`` in C order, or None.

    ``field`` is ``""``, or ``"['x']"`` for a field ``x`` of a structured array.
    """
    if array.dtype.names is not None:
        for name in array.dtype.names:
            found = _non_finite(array[name])
            if found is not None:
                return f"[{name!r}]" + found[0], found[1], found[2]
        return None
    if array.dtype.kind not in "fc" or array.size == 0:
        return None
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    flat = int(np.argmax(bad))  # the first True
    index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
    return "", index, array[index].item()


def _to_json(x: Any, where: str) -> Any:
    """A copy of ``x`` made of JSON types, or TypeError/ValueError naming where the bad value
    sits."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        value = float(x)
        if not math.isfinite(value):
            raise ValueError(
                f"{where}: {x!r} is not finite; checkpoint metadata holds finite numbers only"
            )
        return value
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


def _document_sha256(document: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``document`` (sorted keys, no spaces, no nan)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _encode(document: Mapping[str, Any], json_path: Path) -> bytes:
    """The bytes of the JSON file: ``document`` plus its ``document_sha256``, indented."""
    try:
        signed = {**document, CHECKSUM_KEY: _document_sha256(document)}
        text = json.dumps(signed, indent=1, allow_nan=False) + "\n"
    except ValueError as e:  # e.g. an int beyond Python's int-to-str digit limit
        raise ValueError(f"{json_path}: metadata cannot be written as JSON ({e})") from None
    data = text.encode("utf-8")
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(
            f"{json_path}: metadata takes {len(data)} bytes as JSON, more than MAX_JSON_BYTES = "
            f"{MAX_JSON_BYTES}; put large data in arrays"
        )
    return data


def _write_npz(f: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    # What np.savez does, minus its keyword-argument interface (a name like "file" would clash).
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


@contextlib.contextmanager
def _temp_file(directory: Path, stem: str) -> Iterator[tuple[Path, BinaryIO]]:
    """A new ``.{stem}.{16 hex}.tmp`` in ``directory``, flock-ed until the block ends.

    Rename it into place inside the block, so the lock covers the file's whole life under its
    temporary name; on an exception it is removed, still locked.
    """
    tmp, fd = _create_locked(directory, stem)
    try:
        f = os.fdopen(fd, "w+b")
    except BaseException:
        _remove(tmp)
        os.close(fd)
        raise
    try:
        yield tmp, f
    except BaseException:
        _remove(tmp)
        with contextlib.suppress(OSError):  # flushing onto a full disk fails again
            f.close()
        raise
    f.close()


def _create_locked(directory: Path, stem: str) -> tuple[Path, int]:
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY
    for _ in range(100):
        tmp = directory / f".{stem}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:
            continue
        if fcntl is None:
            return tmp, fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a cleaner locked the still unlocked file and removes it
            os.close(fd)
            continue
        except OSError:  # a file system without flock: cleaners cannot lock it either
            return tmp, fd
        # A cleaner may have removed the file between its creation and the lock.
        if _same_file(tmp, fd):
            return tmp, fd
        os.close(fd)
    raise FileExistsError(f"cannot create a temporary file .{stem}.*.tmp in {directory}")


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


def _sync_and_hash(f: BinaryIO) -> tuple[str, int]:
    """Flush and fsync ``f``, then read it back; returns (sha256, size)."""
    f.flush()
    os.fsync(f.fileno())
    f.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


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
    try:
        names = [e.name for e in os.scandir(directory) if pattern.fullmatch(e.name)]
    except OSError:
        return
    for name in names:
        if name != keep:
            with contextlib.suppress(OSError):  # the save itself succeeded
                _remove(directory / name)


def _remove_orphan_temps(directory: Path, stem: str) -> None:
    """Remove the ``.{stem}.{16 hex}.tmp`` files that no live writer holds (module docstring).

    Never fails: an orphan that cannot be removed (read-only directory) harms nothing.
    """
    pattern = re.compile(re.escape(f".{stem}.") + r"[0-9a-f]{16}\.tmp")
    try:
        names = [e.name for e in os.scandir(directory) if pattern.fullmatch(e.name)]
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            _remove_if_orphan(directory / name)


def _remove_if_orphan(tmp: Path) -> None:
    st = os.lstat(tmp)
    if not stat.S_ISREG(st.st_mode):
        return
    if fcntl is None:
        if time.time() - st.st_mtime > ORPHAN_AGE_SECONDS:
            os.remove(tmp)
        return
    # Read-write: where flock is emulated with POSIX locks (NFS), an exclusive lock needs it.
    fd = os.open(tmp, os.O_RDWR | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: a live writer holds it; otherwise we cannot tell
            return
        if _same_file(tmp, fd):
            os.remove(tmp)  # still holding the lock
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Loading


def load_checkpoint(
    path: str | os.PathLike[str], expected_meta: Mapping[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; returns ``(arrays, meta)``.

    Everything is checked before anything is returned: that both files are regular files of
    bounded size, the format version, ``document_sha256`` over the whole JSON document, that
    the arrays file is the one the JSON was written with (size, then sha256), that it holds
    exactly the recorded names, shapes and dtypes, all finite, and that ``meta[k] == v`` for
    every item of ``expected_meta`` (e.g. ``{"agent": "ppo", "env_id": "CartPole-v1"}``).
    Arrays are loaded with ``allow_pickle=False``. Orphaned temporary files of the prefix are
    removed first (module docstring).

    Args:
        path: as for :func:`save_checkpoint`.
        expected_meta: metadata items the checkpoint must have.

    Raises:
        CheckpointError: a ``ValueError`` naming the file and what is wrong with it.
    """
    json_path = _json_path(path)
    _remove_orphan_temps(json_path.parent, json_path.name[: -len(".json")])
    document = _read_json(json_path)
    where = str(json_path)
    npz_name = document.get("arrays_file")
    if not isinstance(npz_name, str) or Path(npz_name).name != npz_name or npz_name in ("", ".."):
        raise CheckpointError(f"{where}: invalid arrays_file entry {npz_name!r}")
    size = document.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckpointError(f"{where}: invalid size entry {size!r}")
    npz_path = json_path.parent / npz_name
    data = _read_arrays_file(npz_path, size, where)
    if hashlib.sha256(data).hexdigest() != document.get("sha256"):
        raise CheckpointError(
            f"{npz_path}: sha256 does not match the one recorded in {where} (corrupted, or not the "
            "file this checkpoint was written with)"
        )
    arrays = _read_npz(data, npz_path)
    _check_manifest(arrays, document.get("arrays"), npz_path)
    for name, array in arrays.items():
        bad = _non_finite(array)
        if bad is not None:
            field, index, x = bad
            raise CheckpointError(
                f"{npz_path}: array {name!r}{field} holds {x!r} at index {index}; a checkpoint "
                "holds finite numbers only"
            )
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


_FILE_KINDS = [
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
]


def _open_regular(path: Path, what: str, *, follow_symlinks: bool) -> tuple[int, int]:
    """Open ``path`` for reading if it is a regular file; returns (fd, size).

    Its kind is checked from ``stat`` before it is opened, so a device or FIFO is never opened,
    and again on the open file, in case it was swapped meanwhile.
    """
    try:
        st = os.stat(path) if follow_symlinks else os.lstat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} is missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read {what} ({e.strerror or e})") from e
    _check_regular(path, st.st_mode, what)
    flags = os.O_RDONLY | _O_NONBLOCK | _O_BINARY | (0 if follow_symlinks else _O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:  # e.g. replaced by a symbolic link since the lstat (ELOOP)
        raise CheckpointError(f"{path}: cannot read {what} ({e.strerror or e})") from e
    try:
        st = os.fstat(fd)
        _check_regular(path, st.st_mode, what)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _check_regular(path: Path, mode: int, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    raise CheckpointError(f"{path}: {what} is {kind}, not a regular file; refused unread")


def _read_at_most(fd: int, limit: int) -> bytearray:
    data = bytearray()
    while len(data) < limit:
        chunk = os.read(fd, min(limit - len(data), _CHUNK))
        if not chunk:
            break
        data += chunk
    return data


def _read_arrays_file(npz_path: Path, size: int, where: str) -> bytearray:
    fd, actual = _open_regular(
        npz_path, f"arrays file of checkpoint {where}", follow_symlinks=False
    )
    try:
        if actual != size:
            raise CheckpointError(
                f"{npz_path}: arrays file has {actual} bytes, {where} recorded {size} "
                "(truncated, or not the file this checkpoint was written with)"
            )
        data = _read_at_most(fd, size + 1)  # one byte more: a file still growing is refused
    except OSError as e:
        raise CheckpointError(f"{npz_path}: cannot read arrays file ({e.strerror or e})") from e
    finally:
        os.close(fd)
    if len(data) != size:
        raise CheckpointError(f"{npz_path}: arrays file changed while being read")
    return data


class _NonFiniteLiteral(Exception):
    pass


def _refuse_constant(literal: str) -> float:
    raise _NonFiniteLiteral(literal)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999 overflows to inf
        raise _NonFiniteLiteral(literal)
    return value


def _read_json(json_path: Path) -> dict[str, Any]:
    fd, size = _open_regular(json_path, "checkpoint file", follow_symlinks=True)
    try:
        if size > MAX_JSON_BYTES:
            raise CheckpointError(
                f"{json_path}: checkpoint file has {size} bytes, more than MAX_JSON_BYTES = "
                f"{MAX_JSON_BYTES}; refused unread"
            )
        data = _read_at_most(fd, MAX_JSON_BYTES + 1)
    except OSError as e:
        raise CheckpointError(
            f"{json_path}: cannot read checkpoint file ({e.strerror or e})"
        ) from e
    finally:
        os.close(fd)
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(f"{json_path}: checkpoint file grew beyond {MAX_JSON_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{json_path}: cannot read checkpoint file ({e})") from e
    try:
        document = json.loads(text, parse_constant=_refuse_constant, parse_float=_parse_float)
    except _NonFiniteLiteral as e:
        raise CheckpointError(
            f"{json_path}: holds the non-finite number {e}; a checkpoint holds finite numbers only"
        ) from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, int digit limit, deep nesting
        raise CheckpointError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not an rlgrad checkpoint (no format {FORMAT!r})")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path}: checkpoint format version {version!r}, this rlgrad reads version "
            f"{FORMAT_VERSION}"
        )
    body = {k: v for k, v in document.items() if k != CHECKSUM_KEY}
    try:
        checksum = _document_sha256(body)
    except (ValueError, RecursionError) as e:  # nesting that parses but does not print back
        raise CheckpointError(f"{json_path}: cannot compute its checksum ({e})") from None
    if document.get(CHECKSUM_KEY) != checksum:
        raise CheckpointError(
            f"{json_path}: the metadata does not match its checksum ({CHECKSUM_KEY}); the file "
            "was edited or damaged after it was saved"
        )
    return document


def _read_npz(data: bytearray, npz_path: Path) -> dict[str, np.ndarray]:
    buffer = io.BytesIO(data)
    try:
        with zipfile.ZipFile(buffer) as zf:
            members = zf.infolist()
        for info in members:
            # Stored members only, so reading is bounded by the file's size (no zip bomb).
            if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"{npz_path}: member {info.filename!r} is not a stored .npy array"
                )
        with np.load(buffer, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, MemoryError) as e:
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
