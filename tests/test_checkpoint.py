from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import rlgrad.checkpoint as ckpt
from rlgrad.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    validate_arrays,
)

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(
    not (hasattr(os, "mkfifo") and os.path.exists("/dev/urandom")),
    reason="needs FIFOs and /dev/urandom",
)


def sample_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "policy/0.weight": rng.normal(size=(4, 8)).astype(np.float32),
        "policy/0.bias": rng.normal(size=(8,)),
        "optim/exp_avg/0": rng.normal(size=(4, 8)),
        "counts": rng.integers(0, 100, size=5),
        "mask": rng.random(6) < 0.5,
        "bytes": np.arange(7, dtype=np.uint8),
        "scalar": np.array(3.5, dtype=np.float16),
        "empty": np.zeros((0, 3)),
        "file": np.ones(2),  # a name np.savez(file, **arrays) could not take
        "record": np.array([(1.5, 2), (-0.5, 3)], dtype=[("x", "<f8"), ("n", "<i4")]),
    }


def sample_meta(rng: np.random.Generator) -> dict:
    return {
        "agent": "ppo",
        "env_id": "CartPole-v1",
        "hyperparameters": {"lr": 3e-4, "gamma": 0.99, "hidden": [64, 64], "anneal": True},
        "spaces": {"obs_dim": 4, "action_kind": "discrete", "action_dim": 2},
        "global_step": 123456,
        "seed": 7,
        "rng": rng_state(rng),
        "optimizer": {"name": "adam", "step": 17, "lr": 0.001, "betas": [0.9, 0.999]},
        "note": None,
    }


def files_in(directory) -> list[str]:
    return sorted(os.listdir(directory))


def npz_file(directory) -> str:
    (name,) = [f for f in files_in(directory) if f.endswith(".npz")]
    return os.path.join(directory, name)


# ---------------------------------------------------------------------------------------------
# An independent writer of the documented format, for files save_checkpoint would never write


def canonical_sha256(document: dict) -> str:
    """The checksum rule of the module docstring, spelled out again here as the oracle."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def manifest_of(arrays: dict[str, np.ndarray]) -> dict:
    return {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in arrays.items()}


def forge(
    directory: Path,
    members: dict[str, bytes],
    manifest: dict,
    meta: dict | None = None,
    compression: int = zipfile.ZIP_STORED,
    **overrides,
) -> Path:
    """A checkpoint ``directory/c.json`` with the given zip members, every checksum valid."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    data = buffer.getvalue()
    npz_name = f"c.{hashlib.sha256(data).hexdigest()[:16]}.npz"
    (directory / npz_name).write_bytes(data)
    document = {
        "format": "rlgrad-checkpoint",
        "format_version": 2,
        "arrays_file": npz_name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "arrays": manifest,
        "meta": {} if meta is None else meta,
        **overrides,
    }
    document["document_sha256"] = canonical_sha256(document)
    path = directory / "c.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def forge_arrays(directory: Path, arrays: dict[str, np.ndarray], meta=None, **kw) -> Path:
    members = {name + ".npy": npy(array) for name, array in arrays.items()}
    return forge(directory, members, manifest_of(arrays), meta, **kw)


def resign(json_path: Path, document: dict) -> None:
    document = {k: v for k, v in document.items() if k != "document_sha256"}
    document["document_sha256"] = canonical_sha256(document)
    json_path.write_text(json.dumps(document, indent=1))


class Hung(Exception):
    pass


@pytest.fixture
def no_hang():
    """Turns a read that would block for ever (a FIFO opened by older code) into a failure."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise Hung("blocked reading something that is not a regular file")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 20.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class ReadSpy:
    """Counts the bytes read from one file (by inode) through os.read and Path.read_*."""

    def __init__(self, monkeypatch, path, on_read=None):
        st = os.stat(path)
        self.file = (st.st_dev, st.st_ino)
        self.bytes = 0
        real_read, real_read_bytes = os.read, Path.read_bytes

        def is_ours(st):
            return (st.st_dev, st.st_ino) == self.file

        def read(fd, n):
            data = real_read(fd, n)
            if is_ours(os.fstat(fd)):
                self.bytes += len(data)
                if on_read is not None:
                    on_read()
            return data

        def read_bytes(p):
            data = real_read_bytes(p)
            if is_ours(os.stat(p)):
                self.bytes += len(data)
            return data

        monkeypatch.setattr(os, "read", read)
        monkeypatch.setattr(Path, "read_bytes", read_bytes)
        monkeypatch.setattr(Path, "read_text", lambda p, *a, **k: read_bytes(p).decode())


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("form", ["dir", "prefix", "json"])
def test_round_trip(tmp_path, form):
    path = {"dir": tmp_path, "prefix": tmp_path / "ckpt", "json": tmp_path / "ckpt.json"}[form]
    rng = np.random.default_rng(42)
    rng.random(10)
    arrays = sample_arrays()
    meta = sample_meta(rng)
    json_path = save_checkpoint(path, arrays, meta)
    assert json_path.name == ("checkpoint.json" if form == "dir" else "ckpt.json")
    continued = rng.random(5)

    loaded, loaded_meta = load_checkpoint(path)
    assert loaded.keys() == arrays.keys()
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        assert loaded[name].tobytes() == array.tobytes(), name
    assert loaded_meta == meta
    fresh = np.random.default_rng(0)
    set_rng_state(fresh, loaded_meta["rng"])
    np.testing.assert_array_equal(fresh.random(5), continued)
    assert [f for f in files_in(tmp_path) if f.endswith(".npz")] != []
    assert not [f for f in files_in(tmp_path) if f.endswith(".tmp")]


def test_json_file_follows_the_documented_format(tmp_path):
    json_path = save_checkpoint(tmp_path, {"w": np.arange(3.0)}, {"step": 5})
    document = json.loads(json_path.read_text())
    assert document["format_version"] == ckpt.FORMAT_VERSION == 2
    checksum = document.pop("document_sha256")
    assert checksum == canonical_sha256(document)
    with np.load(npz_file(tmp_path), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["w"], [0.0, 1.0, 2.0])
    assert document["size"] == os.path.getsize(npz_file(tmp_path))


def test_a_checkpoint_written_by_the_documented_rules_loads(tmp_path):
    arrays = sample_arrays()
    meta = {"step": 3, "lr": 0.25, "nested": {"b": [1, 2.5, None, True]}}
    forge_arrays(tmp_path, arrays, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "c")
    assert loaded_meta == meta
    for name, array in arrays.items():
        assert loaded[name].tobytes() == array.tobytes(), name


def test_meta_conversions(tmp_path):
    meta = {"n": np.int64(5), "x": np.float32(0.5), "b": np.bool_(True), "t": (1, 2)}
    save_checkpoint(tmp_path, {}, meta)
    _, loaded = load_checkpoint(tmp_path)
    assert loaded == {"n": 5, "x": 0.5, "b": True, "t": [1, 2]}
    assert type(loaded["n"]) is int and type(loaded["x"]) is float
    save_checkpoint(tmp_path, {}, {"big": 2**200 + 1})
    _, loaded = load_checkpoint(tmp_path)
    assert loaded["big"] == 2**200 + 1


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"w": np.zeros(3)}, r"meta\['w'\]: is an array of shape \(3,\)"),
        ({"opt": {"state": {0: 1.0}}}, r"meta\['opt'\]\['state'\]: JSON keys must be str, got 0"),
        ({"s": {1, 2}}, r"meta\['s'\]: cannot store set"),
        ({"l": [1, object()]}, r"meta\['l'\]\[1\]: cannot store object"),
    ],
)
def test_meta_that_json_cannot_hold_is_refused_before_writing(tmp_path, meta, message):
    with pytest.raises(TypeError, match=message):
        save_checkpoint(tmp_path / "ckpt", {"w": np.zeros(2)}, meta)
    assert files_in(tmp_path) == []


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(TypeError, match="array 'bad' has dtype object.*pickle"):
        save_checkpoint(tmp_path, {"ok": np.zeros(2), "bad": np.array([{}, 1], dtype=object)}, {})
    with pytest.raises(TypeError, match="array names must be non-empty str"):
        save_checkpoint(tmp_path, {3: np.zeros(2)}, {})
    assert files_in(tmp_path) == []


def test_pickled_arrays_are_not_loaded(tmp_path):
    evil = np.array([{"a": 1}], dtype=object)
    forge(
        tmp_path,
        {"evil.npy": npy(evil, allow_pickle=True)},
        {"evil": {"dtype": "|O", "shape": [1]}},
    )
    with pytest.raises(CheckpointError, match=r"c\.[0-9a-f]{16}\.npz: cannot read arrays.*pickle"):
        load_checkpoint(tmp_path / "c")


def huge_header() -> bytes:
    # a .npy header claiming 8 TiB of float64 followed by 16 bytes of data
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**40,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(16)


@pytest.mark.parametrize(
    "members, manifest, compression, message",
    [
        (  # a deflated member could decompress to far more than the file's size
            {"w.npy": npy(np.zeros(1000))},
            {"w": {"dtype": "<f8", "shape": [1000]}},
            zipfile.ZIP_DEFLATED,
            "member 'w.npy' is not a stored .npy array",
        ),
        (
            {"w": b"raw bytes"},
            {"w": {"dtype": "<f8", "shape": [1]}},
            zipfile.ZIP_STORED,
            "member 'w' is not a stored .npy array",
        ),
        (
            {"w.npy": huge_header()},
            {"w": {"dtype": "<f8", "shape": [2**40]}},
            zipfile.ZIP_STORED,
            "cannot read arrays",
        ),
    ],
)
def test_arrays_file_members_that_are_not_plain_npy_are_refused(
    tmp_path, members, manifest, compression, message
):
    forge(tmp_path, members, manifest, compression=compression)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "c")


# ---------------------------------------------------------------------------------------------
# Arrays file: size, sha256, pairing


def test_truncated_arrays_file(tmp_path):
    save_checkpoint(tmp_path, sample_arrays(), {})
    path = npz_file(tmp_path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{os.path.basename(path)}: .*truncated"):
        load_checkpoint(tmp_path)


def test_corrupted_arrays_file(tmp_path):
    save_checkpoint(tmp_path, sample_arrays(), {})
    path = npz_file(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_checkpoint(tmp_path)


def test_mismatched_pair(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    save_checkpoint(a, {"w": np.zeros(3)}, {"run": "a"})
    save_checkpoint(b, {"w": np.ones(3)}, {"run": "b"})
    # the arrays file of b under the name a's JSON points to
    os.replace(npz_file(b), npz_file(a))
    with pytest.raises(CheckpointError, match="sha256 does not match the one recorded in"):
        load_checkpoint(a)


def test_arrays_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, sample_arrays(), {})
    path = npz_file(tmp_path)
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    spy = ReadSpy(monkeypatch, path)
    with pytest.raises(CheckpointError, match=rf"has {size + 4096} bytes, .* recorded {size} "):
        load_checkpoint(tmp_path)
    assert spy.bytes == 0


def test_arrays_file_growing_while_read_is_refused_and_read_no_further(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, sample_arrays(), {})
    path = npz_file(tmp_path)
    size = os.path.getsize(path)

    def grow():  # another process appends after the size check
        with open(path, "ab") as f:
            f.write(b"\0" * 4096)

    spy = ReadSpy(monkeypatch, path, on_read=grow)
    with pytest.raises(CheckpointError, match="arrays file changed while being read"):
        load_checkpoint(tmp_path)
    assert 0 < spy.bytes <= size + 1


# ---------------------------------------------------------------------------------------------
# Only regular files are read


def replace_with(path: Path, kind: str) -> None:
    """Put something that is not the regular file save_checkpoint wrote at ``path``."""
    copy = path.with_name("copy-of-" + path.name)
    if kind == "copy-link":
        copy.write_bytes(path.read_bytes())
    path.unlink()
    if kind == "urandom-link":
        os.symlink("/dev/urandom", path)
    elif kind == "null-link":
        os.symlink("/dev/null", path)
    elif kind == "copy-link":
        os.symlink(copy, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()


@posix_only
@pytest.mark.parametrize(
    "kind, message",
    [
        ("urandom-link", "is a symbolic link, not a regular file; refused unread"),
        ("null-link", "is a symbolic link, not a regular file"),
        ("copy-link", "is a symbolic link, not a regular file"),
        ("fifo", "is a FIFO, not a regular file"),
        ("directory", "is a directory, not a regular file"),
    ],
)
def test_arrays_file_must_be_a_regular_file(tmp_path, no_hang, kind, message):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    path = Path(npz_file(tmp_path))
    replace_with(path, kind)
    with pytest.raises(
        CheckpointError, match=rf"{path.name}: arrays file of checkpoint .*{message}"
    ):
        load_checkpoint(tmp_path)


@posix_only
@pytest.mark.parametrize(
    "kind, message",
    [
        ("urandom-link", "is a character device, not a regular file; refused unread"),
        ("null-link", "is a character device, not a regular file"),
        ("fifo", "is a FIFO, not a regular file"),
        ("directory", "is a directory, not a regular file"),
    ],
)
def test_json_file_must_be_a_regular_file(tmp_path, no_hang, kind, message):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    replace_with(tmp_path / "checkpoint.json", kind)
    with pytest.raises(CheckpointError, match=f"checkpoint.json: checkpoint file {message}"):
        load_checkpoint(tmp_path)


@posix_only
def test_json_may_be_a_symbolic_link_to_a_regular_file(tmp_path):
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"i": 1})
    os.symlink("checkpoint.json", tmp_path / "latest.json")
    arrays, meta = load_checkpoint(tmp_path / "latest.json")
    assert meta == {"i": 1}
    np.testing.assert_array_equal(arrays["w"], np.ones(3))


def test_oversized_json_is_refused_unread(tmp_path, monkeypatch):
    assert ckpt.MAX_JSON_BYTES == 64 * 2**20
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    path = tmp_path / "checkpoint.json"
    with open(path, "r+b") as f:
        f.truncate(ckpt.MAX_JSON_BYTES + 1)  # sparse: costs no disk
    spy = ReadSpy(monkeypatch, path)
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint file has {ckpt.MAX_JSON_BYTES + 1} bytes, more than "
        rf"MAX_JSON_BYTES = {ckpt.MAX_JSON_BYTES}; refused unread",
    ):
        load_checkpoint(tmp_path)
    assert spy.bytes == 0


def test_save_refuses_metadata_beyond_max_json_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "MAX_JSON_BYTES", 4096)
    with pytest.raises(
        ValueError,
        match=r"metadata takes \d+ bytes as JSON, more than "
        "MAX_JSON_BYTES = 4096; put large data in arrays",
    ):
        save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"notes": "x" * 5000})
    assert files_in(tmp_path) == []
    # what passes the check (made with placeholders) can be read back under the same limit
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"notes": "x" * 3000})
    assert load_checkpoint(tmp_path)[1] == {"notes": "x" * 3000}


# ---------------------------------------------------------------------------------------------
# The JSON document: damage, checksum, version


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.unlink(), "checkpoint.json: checkpoint file is missing"),
        (lambda p: p.write_text(p.read_text()[:40]), "checkpoint.json: not valid JSON"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00"), "checkpoint.json: cannot read"),
        (lambda p: p.write_text("[1, 2]"), "not an rlgrad checkpoint"),
        (lambda p: p.write_text("[" * 100_000), "checkpoint.json: not valid JSON.*recursion"),
        (lambda p: p.write_text("1" * 5000), "checkpoint.json: not valid JSON.*digits"),
    ],
)
def test_damaged_json(tmp_path, damage, message):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    damage(tmp_path / "checkpoint.json")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("version", [1, 3, "2", None])
def test_other_format_versions_are_refused_by_name(tmp_path, version):
    json_path = save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    document = json.loads(json_path.read_text())
    document["format_version"] = version
    resign(json_path, document)  # so that it is the version, not the checksum, that fails
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint format version {re.escape(repr(version))}, this rlgrad reads "
        "version 2",
    ):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "old, new",
    [
        ('"global_step": 123456,', '"global_step": 123457,'),
        ('"seed": 7,', '"seed": 1,'),
        ('"lr": 0.0003,', '"lr": 0.0008,'),
        ('"gamma": 0.99,', '"gamma": 0.98,'),
        ('"step": 17,', '"step": 18,'),
        ('"agent": "ppo"', '"agent": "ppa"'),
        ('"anneal": true', '"anneal": false'),
    ],
)
def test_one_changed_value_in_the_metadata_fails_the_checksum(tmp_path, old, new):
    meta = sample_meta(np.random.default_rng(0))
    json_path = save_checkpoint(tmp_path, {"w": np.zeros(3)}, meta)
    text = json_path.read_text()
    assert text.count(old) == 1, text
    json_path.write_text(text.replace(old, new))
    with pytest.raises(
        CheckpointError,
        match=rf"{re.escape(str(json_path))}: the metadata does not match its checksum",
    ):
        load_checkpoint(tmp_path)


def flip_hex(s: str) -> str:
    return ("1" if s[0] == "0" else "0") + s[1:]


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["arrays"]["w"].update(shape=[4]),
        lambda d: d.update(size=d["size"] + 1),
        lambda d: d.update(sha256=flip_hex(d["sha256"])),
        lambda d: d.update(document_sha256=flip_hex(d["document_sha256"])),
        lambda d: d.pop("document_sha256"),
        lambda d: d.update(extra=1),
    ],
)
def test_any_edit_of_the_document_fails_the_checksum(tmp_path, edit):
    json_path = save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"i": 1})
    document = json.loads(json_path.read_text())
    edit(document)
    json_path.write_text(json.dumps(document, indent=1))
    with pytest.raises(CheckpointError, match="the metadata does not match its checksum"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"arrays_file": "../c.0000000000000000.npz"}, "invalid arrays_file entry"),
        ({"arrays_file": ""}, "invalid arrays_file entry"),
        ({"size": -1}, "invalid size entry -1"),
        ({"size": True}, "invalid size entry True"),
        ({"size": "12"}, "invalid size entry '12'"),
        ({"sha256": "0" * 64}, "sha256 does not match"),
        ({"meta": [1]}, "'meta' must be an object, got list"),
    ],
)
def test_checksummed_but_invalid_entries(tmp_path, override, message):
    forge_arrays(tmp_path, {"w": np.zeros(3)}, **override)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "c")


def test_missing_arrays_file_and_missing_checkpoint(tmp_path):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    os.remove(npz_file(tmp_path))
    with pytest.raises(CheckpointError, match="arrays file of checkpoint .* is missing"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="nothing.json: checkpoint file is missing"):
        load_checkpoint(tmp_path / "nothing")
    assert issubclass(CheckpointError, ValueError)


def test_expected_meta(tmp_path):
    save_checkpoint(tmp_path, {}, {"agent": "ppo", "env_id": "CartPole-v1"})
    load_checkpoint(tmp_path, expected_meta={"agent": "ppo"})
    with pytest.raises(CheckpointError, match=r"meta\['agent'\] is 'ppo', expected 'reinforce'"):
        load_checkpoint(tmp_path, expected_meta={"agent": "reinforce"})
    with pytest.raises(CheckpointError, match="meta has no 'seed'"):
        load_checkpoint(tmp_path, expected_meta={"seed": 1})


def test_validate_arrays():
    got = {"w": np.zeros((4, 8)), "b": np.zeros(8)}
    validate_arrays({"w": (4, 8), "b": (8,)}, got)
    validate_arrays({"w": np.ones((4, 8)), "b": np.ones(8)}, got)
    with pytest.raises(CheckpointError, match=r"missing \['v'\]; unexpected \['b'\]"):
        validate_arrays({"w": (4, 8), "v": (8,)}, got)
    with pytest.raises(CheckpointError, match=r"'w' has shape \(4, 8\), expected \(8, 4\)"):
        validate_arrays({"w": (8, 4), "b": (8,)}, got)


# ---------------------------------------------------------------------------------------------
# Finite numbers only


def with_value(shape, dtype, index, value) -> np.ndarray:
    array = np.zeros(shape, dtype=dtype)
    array[index] = value
    return array


both_bad = np.zeros((2, 3))
both_bad[1, 0] = np.inf
both_bad[0, 2] = np.nan  # first in C order
record = np.zeros(4, dtype=[("n", "<i8"), ("x", "<f4", (2,))])
record["x"][2, 1] = -np.inf


@pytest.mark.parametrize(
    "array, message",
    [
        (with_value(5, np.float64, 3, np.nan), r"array 'w' holds nan at index \(3,\)"),
        (with_value((2, 3), np.float32, (1, 2), np.inf), r"'w' holds inf at index \(1, 2\)"),
        (np.array(-np.inf, dtype=np.float16), r"'w' holds -inf at index \(\)"),
        (np.array([1 + 0j, complex(1, np.nan)]), r"'w' holds \(1\+nanj\) at index \(1,\)"),
        (both_bad, r"'w' holds nan at index \(0, 2\)"),
        (record, r"array 'w'\['x'\] holds -inf at index \(2, 1\)"),
    ],
)
def test_save_refuses_non_finite_arrays_before_writing(tmp_path, array, message):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"version": "old"})
    before = files_in(tmp_path)
    with pytest.raises(ValueError, match=message + ": a checkpoint holds finite numbers only"):
        save_checkpoint(tmp_path, {"a": np.ones(2), "w": array}, {"version": "new"})
    assert files_in(tmp_path) == before
    assert load_checkpoint(tmp_path)[1] == {"version": "old"}
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match=message):
        save_checkpoint(fresh / "c", {"w": array}, {})
    assert not fresh.exists()


def test_integer_and_finite_arrays_are_not_refused(tmp_path):
    arrays = {"i": np.array([np.iinfo(np.int64).max]), "f": np.array([np.finfo(np.float64).max])}
    save_checkpoint(tmp_path, arrays, {})
    np.testing.assert_array_equal(load_checkpoint(tmp_path)[0]["f"], arrays["f"])


@pytest.mark.parametrize(
    "array, message",
    [
        (with_value(4, np.float64, 2, np.nan), r"array 'w' holds nan at index \(2,\)"),
        (record, r"array 'w'\['x'\] holds -inf at index \(2, 1\)"),
    ],
)
def test_load_refuses_non_finite_arrays(tmp_path, array, message):
    forge_arrays(tmp_path, {"ok": np.ones(2), "w": array})
    with pytest.raises(CheckpointError, match=r"c\.[0-9a-f]{16}\.npz: " + message):
        load_checkpoint(tmp_path / "c")


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"lr": float("nan")}, r"meta\['lr'\]: nan is not finite"),
        ({"h": {"clip": float("inf")}}, r"meta\['h'\]\['clip'\]: inf is not finite"),
        ({"l": [1.0, np.float32(-np.inf)]}, r"meta\['l'\]\[1\]: .*-inf.* is not finite"),
    ],
)
def test_save_refuses_non_finite_metadata_before_writing(tmp_path, meta, message):
    with pytest.raises(ValueError, match=message):
        save_checkpoint(tmp_path, {"w": np.zeros(2)}, meta)
    assert files_in(tmp_path) == []


def test_save_refuses_metadata_json_cannot_print_before_writing(tmp_path):
    with pytest.raises(ValueError, match="metadata cannot be written as JSON.*digits"):
        save_checkpoint(tmp_path, {"w": np.zeros(2)}, {"n": 10**5000})
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_load_refuses_non_finite_numbers_in_the_json(tmp_path, literal):
    json_path = save_checkpoint(tmp_path, {"w": np.zeros(2)}, {"lr": 0.5})
    text = json_path.read_text()
    assert text.count('"lr": 0.5') == 1
    json_path.write_text(text.replace('"lr": 0.5', f'"lr": {literal}'))
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint.json: holds the non-finite number {re.escape(literal)}; a "
        "checkpoint holds finite numbers only",
    ):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------------------
# Failed and killed saves


class Boom(RuntimeError):
    pass


def fail_on_call(monkeypatch, target, attribute, n, error=None):
    """Make the n-th call (1-based) of target.attribute raise ``error`` (default: Boom)."""
    original = getattr(target, attribute)
    calls = {"count": 0}

    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == n:
            raise error if error is not None else Boom(f"{attribute} failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attribute, wrapper)
    return calls


@pytest.mark.parametrize(
    "target, attribute, n",
    [
        (os, "replace", 1),  # moving the arrays file into place
        (os, "replace", 2),  # the commit: replacing the JSON
        (np.lib.format, "write_array", 2),  # mid-way through the arrays file
        (os, "fsync", 1),  # syncing the arrays file
        (os, "fsync", 2),  # syncing the directory before the JSON points to the arrays file
        (os, "fsync", 3),  # syncing the JSON
    ],
)
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, target, attribute, n):
    save_checkpoint(tmp_path, {"w": np.zeros(3), "b": np.zeros(2)}, {"version": "old"})
    before = files_in(tmp_path)
    calls = fail_on_call(monkeypatch, target, attribute, n)
    with pytest.raises(Boom):
        save_checkpoint(tmp_path, {"w": np.ones(3), "b": np.ones(2)}, {"version": "new"})
    assert calls["count"] == n
    monkeypatch.undo()
    assert files_in(tmp_path) == before  # no temp files, no orphaned arrays file
    arrays, meta = load_checkpoint(tmp_path)
    assert meta == {"version": "old"}
    np.testing.assert_array_equal(arrays["w"], np.zeros(3))


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_fsync_of_file_starting_with(monkeypatch, head: bytes) -> dict[str, int]:
    """Make os.fsync of a regular file whose content starts with ``head`` fail with ENOSPC."""
    real = os.fsync
    calls = {"count": 0}

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.pread(fd, len(head), 0) == head:
            calls["count"] += 1
            raise enospc()
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.skipif(not hasattr(os, "pread"), reason="needs os.pread")
@pytest.mark.parametrize("where", ["writing the arrays", "syncing the arrays", "syncing the json"])
def test_full_disk_keeps_previous_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch, where):
    json_path = save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"version": "old"})
    before = files_in(tmp_path)
    if where == "writing the arrays":
        calls = fail_on_call(monkeypatch, np.lib.format, "write_array", 1, error=enospc())
    else:
        head = b"PK\x03\x04" if where == "syncing the arrays" else b"{"
        calls = fail_fsync_of_file_starting_with(monkeypatch, head)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, {"w": np.ones(3)}, {"version": "new"})
    assert calls["count"] == 1
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (
        f"[Errno {errno.ENOSPC}] cannot save checkpoint {json_path}: {os.strerror(errno.ENOSPC)}"
    )
    assert files_in(tmp_path) == before
    assert load_checkpoint(tmp_path)[1] == {"version": "old"}


def test_crash_between_replaces_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    # a process killed after the arrays file is in place but before the JSON is: simulated by
    # an os.replace that leaves nothing behind to clean up
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"version": "old"})
    original = os.replace

    def replace(src, dst):
        if str(dst).endswith(".json"):
            raise Boom("killed")
        original(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(ckpt, "_remove", lambda path: None)  # a killed process cleans nothing
    with pytest.raises(Boom):
        save_checkpoint(tmp_path, {"w": np.ones(3)}, {"version": "new"})
    monkeypatch.undo()
    assert len([f for f in files_in(tmp_path) if f.endswith(".tmp")]) == 1
    assert load_checkpoint(tmp_path)[1] == {"version": "old"}
    assert not [f for f in files_in(tmp_path) if f.endswith(".tmp")]  # the load removed it
    # the next save removes the orphaned arrays file
    save_checkpoint(tmp_path, {"w": np.full(3, 2.0)}, {"version": "newer"})
    assert len([f for f in files_in(tmp_path) if f.endswith(".npz")]) == 1
    assert load_checkpoint(tmp_path)[1] == {"version": "newer"}


KILLED_MID_SAVE = """
import os, signal, sys
import numpy as np
from rlgrad.checkpoint import save_checkpoint

real_replace = os.replace

def replace(src, dst):
    if str(dst).endswith(".json"):  # the arrays file is in place, the JSON temp file written
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

os.replace = replace
save_checkpoint(sys.argv[1], {"w": np.ones(3)}, {"version": "new"})
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_process_killed_mid_save_leaves_orphans_that_the_next_load_and_save_remove(tmp_path):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"version": "old"})
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_MID_SAVE, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert len([f for f in files_in(tmp_path) if f.endswith(".tmp")]) == 1
    assert len([f for f in files_in(tmp_path) if f.endswith(".npz")]) == 2
    arrays, meta = load_checkpoint(tmp_path)  # its writer died: its lock went with it
    assert meta == {"version": "old"}
    np.testing.assert_array_equal(arrays["w"], np.zeros(3))
    assert not [f for f in files_in(tmp_path) if f.endswith(".tmp")]
    save_checkpoint(tmp_path, {"w": np.full(3, 2.0)}, {"version": "newer"})
    assert len([f for f in files_in(tmp_path) if f.endswith(".npz")]) == 1


# ---------------------------------------------------------------------------------------------
# Orphaned temporary files


ORPHANS = [".checkpoint.0123456789abcdef.tmp", ".checkpoint.ffffffffffffffff.tmp"]
NOT_ORPHANS = [
    ".checkpoint.0123456789abcdef.tmp.keep",
    ".checkpoint.0123456789ABCDEF.tmp",
    ".checkpoint.0123456789abcde.tmp",
    ".checkpoint.notes.tmp",
    ".checkpoint.old.0123456789abcdef.tmp",  # of the prefix checkpoint.old
    ".other.0123456789abcdef.tmp",
    "checkpoint.0123456789abcdef.tmp",
    "notes.tmp",
]


@pytest.mark.parametrize("operation", ["save", "load"])
def test_orphaned_temp_files_are_removed_by_the_next_save_and_load(tmp_path, operation):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    for name in ORPHANS + NOT_ORPHANS:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    (tmp_path / ".checkpoint.1111111111111111.tmp").mkdir()  # the pattern, but not a file
    if hasattr(os, "symlink"):
        os.symlink("notes.tmp", tmp_path / ".checkpoint.2222222222222222.tmp")
    expected = sorted(set(files_in(tmp_path)) - set(ORPHANS))
    if operation == "save":
        save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    else:
        load_checkpoint(tmp_path)
    assert files_in(tmp_path) == expected


def test_orphans_of_a_prefix_are_removed_in_its_directory_only(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_checkpoint(tmp_path / "a", {"w": np.zeros(3)}, {})
    orphan = tmp_path / "b" / ORPHANS[0]
    orphan.write_bytes(b"")
    load_checkpoint(tmp_path / "a")
    save_checkpoint(tmp_path / "a", {"w": np.ones(3)}, {})
    assert orphan.exists()


def test_a_locked_temp_file_is_kept_until_its_lock_is_released(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    live = tmp_path / ORPHANS[0]
    with open(live, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # what a writer in another process holds
        load_checkpoint(tmp_path)
        save_checkpoint(tmp_path, {"w": np.ones(3)}, {})
        assert live.exists()
    load_checkpoint(tmp_path)
    assert not live.exists()


def test_a_live_writers_temp_files_survive_loads_until_renamed(tmp_path, monkeypatch):
    pytest.importorskip("fcntl")
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"version": "old"})
    real = ckpt._sync_and_hash
    seen = []

    def sync_and_hash(f):
        # the temp file is complete, not yet renamed: a reader comes by and cleans up
        result = real(f)
        (tmp,) = [name for name in files_in(tmp_path) if name.endswith(".tmp")]
        seen.append((load_checkpoint(tmp_path)[1], (tmp_path / tmp).exists()))
        return result

    monkeypatch.setattr(ckpt, "_sync_and_hash", sync_and_hash)
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"version": "new"})
    monkeypatch.undo()
    assert seen == [({"version": "old"}, True)] * 2  # the arrays file, then the JSON
    arrays, meta = load_checkpoint(tmp_path)
    assert meta == {"version": "new"}
    np.testing.assert_array_equal(arrays["w"], np.ones(3))
    assert not [f for f in files_in(tmp_path) if f.endswith(".tmp")]


def test_without_fcntl_orphans_are_removed_by_age(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "fcntl", None)
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    old, fresh = (tmp_path / name for name in ORPHANS)
    old.write_bytes(b"")
    fresh.write_bytes(b"")
    long_ago = time.time() - 2 * ckpt.ORPHAN_AGE_SECONDS
    os.utime(old, (long_ago, long_ago))
    load_checkpoint(tmp_path)
    assert not old.exists() and fresh.exists()
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"i": 1})
    assert load_checkpoint(tmp_path)[1] == {"i": 1} and fresh.exists()


def test_saving_again_replaces_the_arrays_file(tmp_path):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"i": 0})
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"i": 1})
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"i": 2})  # same arrays, same file
    assert len(files_in(tmp_path)) == 2
    arrays, meta = load_checkpoint(tmp_path)
    assert meta == {"i": 2}
    np.testing.assert_array_equal(arrays["w"], np.ones(3))


# ---------------------------------------------------------------------------------------------
# Random number generators


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937, np.random.Philox])
def test_rng_state_survives_json(bit_generator):
    gen = np.random.Generator(bit_generator(7))
    gen.normal(size=3)
    state = json.loads(json.dumps(rng_state(gen)))
    want = gen.normal(size=4)
    other = np.random.Generator(bit_generator(0))
    set_rng_state(other, state)
    np.testing.assert_array_equal(other.normal(size=4), want)


def test_set_rng_state_rejects_wrong_generator():
    state = rng_state(np.random.default_rng(0))
    with pytest.raises(ValueError, match="bit generator 'PCG64', expected 'MT19937'"):
        set_rng_state(np.random.Generator(np.random.MT19937(0)), state)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        rng_state(np.random.RandomState(0))
