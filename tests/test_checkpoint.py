from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

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
    }


def sample_meta(rng: np.random.Generator) -> dict:
    return {
        "agent": "ppo",
        "env_id": "CartPole-v1",
        "hyperparameters": {"lr": 3e-4, "gamma": 0.99, "hidden": [64, 64], "anneal": True},
        "spaces": {"obs_dim": 4, "action_kind": "discrete", "action_dim": 2},
        "global_step": 123456,
        "rng": rng_state(rng),
        "optimizer": {"name": "adam", "step": 17, "lr": 0.001, "betas": [0.9, 0.999]},
        "note": None,
    }


def files_in(directory) -> list[str]:
    return sorted(os.listdir(directory))


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


def test_npz_is_plain_numpy(tmp_path):
    save_checkpoint(tmp_path, {"w": np.arange(3.0)}, {})
    (npz_name,) = [f for f in files_in(tmp_path) if f.endswith(".npz")]
    with np.load(tmp_path / npz_name, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["w"], [0.0, 1.0, 2.0])


def test_meta_conversions(tmp_path):
    meta = {"n": np.int64(5), "x": np.float32(0.5), "b": np.bool_(True), "t": (1, 2)}
    save_checkpoint(tmp_path, {}, meta)
    _, loaded = load_checkpoint(tmp_path)
    assert loaded == {"n": 5, "x": 0.5, "b": True, "t": [1, 2]}
    assert type(loaded["n"]) is int
    save_checkpoint(tmp_path, {}, {"big": 2**200 + 1, "nan": float("nan")})
    _, loaded = load_checkpoint(tmp_path)
    assert loaded["big"] == 2**200 + 1 and np.isnan(loaded["nan"])


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
    # a hand-made checkpoint whose arrays file holds an object (pickled) array
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, zf.open("evil.npy", "w") as member:
        np.lib.format.write_array(member, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    data = buffer.getvalue()
    (tmp_path / "c.0000000000000000.npz").write_bytes(data)
    document = {
        "format": "rlgrad-checkpoint",
        "format_version": 1,
        "arrays_file": "c.0000000000000000.npz",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "arrays": {"evil": {"dtype": "|O", "shape": [1]}},
        "meta": {},
    }
    (tmp_path / "c.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="c.0000000000000000.npz: cannot read arrays.*pickle"):
        load_checkpoint(tmp_path / "c")


def npz_file(directory) -> str:
    (name,) = [f for f in files_in(directory) if f.endswith(".npz")]
    return os.path.join(directory, name)


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


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.unlink(), "checkpoint.json: checkpoint file is missing"),
        (lambda p: p.write_text(p.read_text()[:40]), "checkpoint.json: not valid JSON"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00"), "checkpoint.json: cannot read"),
        (lambda p: p.write_text("[1, 2]"), "not an rlgrad checkpoint"),
        (
            lambda p: p.write_text(
                p.read_text().replace('"format_version": 1', '"format_version": 2')
            ),
            "checkpoint format version 2, this rlgrad reads version 1",
        ),
        (
            lambda p: p.write_text(
                p.read_text().replace('"arrays_file": "', '"arrays_file": "../')
            ),
            "invalid arrays_file entry",
        ),
    ],
)
def test_damaged_json(tmp_path, damage, message):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {})
    damage(tmp_path / "checkpoint.json")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


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


class Boom(RuntimeError):
    pass


def fail_on_call(monkeypatch, target, attribute, n):
    """Make the n-th call (1-based) of target.attribute raise Boom."""
    original = getattr(target, attribute)
    calls = {"count": 0}

    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == n:
            raise Boom(f"{attribute} failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attribute, wrapper)
    return calls


@pytest.mark.parametrize(
    "target, attribute, n",
    [
        (os, "replace", 1),  # moving the arrays file into place
        (os, "replace", 2),  # the commit: replacing the JSON
        (np.lib.format, "write_array", 2),  # mid-way through the arrays file
        (os, "fsync", 2),  # syncing the JSON
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
    assert load_checkpoint(tmp_path)[1] == {"version": "old"}
    # the next save removes the leftovers of the crashed one
    for leftover in [f for f in files_in(tmp_path) if f.endswith(".tmp")]:
        os.remove(tmp_path / leftover)
    save_checkpoint(tmp_path, {"w": np.full(3, 2.0)}, {"version": "newer"})
    assert len([f for f in files_in(tmp_path) if f.endswith(".npz")]) == 1
    assert load_checkpoint(tmp_path)[1] == {"version": "newer"}


def test_saving_again_replaces_the_arrays_file(tmp_path):
    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"i": 0})
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"i": 1})
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"i": 2})  # same arrays, same file
    assert len(files_in(tmp_path)) == 2
    arrays, meta = load_checkpoint(tmp_path)
    assert meta == {"i": 2}
    np.testing.assert_array_equal(arrays["w"], np.ones(3))


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
