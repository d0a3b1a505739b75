"""Running statistics: against numpy on the concatenated data, SB3's RunningMeanStd, a naive
reward-scaling loop, and exact save / load."""

from __future__ import annotations

import io

import numpy as np
import pytest

from rlgrad.normalize import ObservationNormalizer, RewardScaler, RunningMeanStd


def batches(seed: int, shape: tuple[int, ...], sizes=(1, 7, 0, 64, 3, 250, 2, 1, 33)):
    rng = np.random.default_rng(seed)
    return [rng.normal(3.0, 2.0, size=(b, *shape)) * rng.uniform(0.5, 4, size=shape)
            for b in sizes]


def pooled_with_prior(data: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the data pooled with a pseudo-sample of weight epsilon, mean 0 and
    variance 1 (the documented meaning of RunningMeanStd's initial state)."""
    n = data.shape[0]
    mean = data.sum(axis=0) / (n + epsilon)
    var = (epsilon * (1 + mean**2) + ((data - mean) ** 2).sum(axis=0)) / (n + epsilon)
    return mean, var


# ---- RunningMeanStd ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_running_stats_equal_numpy_on_the_concatenation(shape):
    bs = batches(0, shape)
    rms = RunningMeanStd(shape, epsilon=0.0)
    for b in bs:
        rms.update(b)
    data = np.concatenate(bs)
    np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-12)
    assert rms.count == data.shape[0]
    assert rms.mean.dtype == rms.var.dtype == np.float64 and rms.mean.shape == shape


@pytest.mark.parametrize("epsilon", [1e-4, 0.5])
def test_running_stats_with_the_initial_pseudo_sample(epsilon):
    bs = batches(1, (3,))
    rms = RunningMeanStd((3,), epsilon)
    for b in bs:
        rms.update(b)
    data = np.concatenate(bs)
    mean, var = pooled_with_prior(data, epsilon)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(rms.var, var, rtol=1e-12)
    assert rms.count == pytest.approx(data.shape[0] + epsilon, rel=1e-15)


def test_running_stats_match_stable_baselines3():
    from stable_baselines3.common.running_mean_std import RunningMeanStd as SB3RunningMeanStd

    ours, theirs = RunningMeanStd((4,)), SB3RunningMeanStd(shape=(4,))
    for b in batches(2, (4,), sizes=(1, 5, 100, 2, 17)):
        ours.update(b)
        theirs.update(b)
    np.testing.assert_allclose(ours.mean, theirs.mean, rtol=1e-14)
    np.testing.assert_allclose(ours.var, theirs.var, rtol=1e-14)
    assert ours.count == theirs.count


def test_running_stats_of_large_offset_data_are_accurate():
    # Chan's merge does not subtract large squares: data at 1e8 with unit spread keeps its var
    rng = np.random.default_rng(3)
    bs = [1e8 + rng.normal(size=(b,)) for b in (10, 1000, 3, 500)]
    rms = RunningMeanStd(epsilon=0.0)
    for b in bs:
        rms.update(b)
    np.testing.assert_allclose(rms.var, np.concatenate(bs).var(), rtol=1e-9)


def test_update_from_moments_equals_update():
    a, b = RunningMeanStd((2,)), RunningMeanStd((2,))
    for x in batches(4, (2,), sizes=(3, 40, 1)):
        a.update(x)
        b.update_from_moments(x.mean(axis=0), x.var(axis=0), x.shape[0])
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.var, b.var)


def test_running_stats_accept_integer_and_float32_data():
    rms = RunningMeanStd(epsilon=0.0)
    rms.update(np.array([1, 2, 3, 4], np.int64))
    rms.update(np.array([5.5], np.float32))
    np.testing.assert_allclose([rms.mean, rms.var], [3.1, np.var([1, 2, 3, 4, 5.5])], rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_running_stats_refuse_non_finite_data(bad):
    rms = RunningMeanStd((3,))
    x = np.zeros((4, 3))
    x[2, 1] = bad
    with pytest.raises(ValueError, match=rf"x must be finite, got {bad} at index \[2, 1\]"):
        rms.update(x)
    np.testing.assert_array_equal(rms.mean, 0.0)
    np.testing.assert_array_equal(rms.var, 1.0)
    assert rms.count == 1e-4


def test_running_stats_refuse_data_whose_variance_overflows():
    rms = RunningMeanStd()
    with pytest.raises(ValueError, match=r"overflows float64 \(values of magnitude up to 1e\+300"):
        rms.update(np.array([1e300, -1e300]))
    rms.update(np.array([1e100, -1e100]))
    before = rms.state_dict()
    with pytest.raises(ValueError, match="statistics overflow float64"):
        rms.update_from_moments(np.array(1e300), np.array(0.0), 5)
    for k, v in rms.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_running_stats_bad_input():
    rms = RunningMeanStd((3,))
    with pytest.raises(ValueError, match=r"x has shape \(3,\), expected \(B, 3\)"):
        rms.update(np.zeros(3))
    with pytest.raises(ValueError, match=r"x has shape \(2, 4\), expected \(B, 3\)"):
        rms.update(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="x must hold real numbers, got dtype bool"):
        rms.update(np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="batch_var must be >= 0"):
        rms.update_from_moments(np.zeros(3), -np.ones(3), 2)
    with pytest.raises(TypeError, match="batch_count must be a real number"):
        rms.update_from_moments(np.zeros(3), np.ones(3), True)
    with pytest.raises(ValueError, match="Invalid epsilon"):
        RunningMeanStd((3,), epsilon=-1.0)
    with pytest.raises(ValueError, match="shape must hold non-negative ints"):
        RunningMeanStd((3, True))
    rms.update(np.zeros((0, 3)))  # an empty batch changes nothing
    assert rms.count == 1e-4


# ---- save / load -------------------------------------------------------------------------------

def _npz_round_trip(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_running_stats_round_trip_is_exact():
    rms = RunningMeanStd((3,))
    for b in batches(5, (3,)):
        rms.update(b)
    state = rms.state_dict()
    assert set(state) == {"mean", "var", "count"}
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in state.values())
    restored = RunningMeanStd((3,))
    restored.load_state_dict(_npz_round_trip(state))
    np.testing.assert_array_equal(restored.mean, rms.mean)
    np.testing.assert_array_equal(restored.var, rms.var)
    assert restored.count == rms.count
    # the copy goes on exactly as the original
    x = np.random.default_rng(6).normal(size=(9, 3))
    rms.update(x)
    restored.update(x)
    np.testing.assert_array_equal(restored.mean, rms.mean)
    np.testing.assert_array_equal(restored.var, rms.var)
    # state_dict hands out copies
    state["mean"][:] = 99.0
    assert not np.any(rms.mean == 99.0)


@pytest.mark.parametrize("change,error,match", [
    (lambda s: s.pop("var"), ValueError, r"missing keys \['var'\]"),
    (lambda s: s.update(extra=np.zeros(3)), ValueError, r"unexpected keys \['extra'\]"),
    (lambda s: s.update(mean=np.zeros(4)), ValueError, r"'mean' has shape \(4,\), expected \(3,\)"),
    (lambda s: s.update(count=np.zeros(1)), ValueError, r"'count' has shape \(1,\), expected \(\)"),
    (lambda s: s.update(var=np.ones(3, np.float32)), TypeError, "dtype float32, expected float64"),
    (lambda s: s.update(count=5.0), TypeError, "'count' must be a numpy array, got float"),
    (lambda s: s.update(mean=np.array([0.0, np.nan, 0.0])), ValueError, "must be finite"),
    (lambda s: s.update(var=np.array([1.0, -1.0, 1.0])), ValueError, "var >= 0"),
    (lambda s: s.update(count=np.array(-2.0)), ValueError, "count >= 0"),
])
def test_load_state_dict_checks_everything_before_assigning(change, error, match):
    rms = RunningMeanStd((3,))
    rms.update(np.arange(12.0).reshape(4, 3))
    before = rms.state_dict()
    state = rms.state_dict()
    change(state)
    with pytest.raises(error, match=match):
        rms.load_state_dict(state)
    for k, v in rms.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TypeError, match="mapping of arrays"):
        rms.load_state_dict([("mean", np.zeros(3))])


# ---- ObservationNormalizer ---------------------------------------------------------------------

def test_observation_normalizer_updates_first_then_standardises():
    rng = np.random.default_rng(7)
    norm = ObservationNormalizer((3,))
    seen = []
    for b in (4, 1, 20):
        obs = rng.normal(5.0, 3.0, size=(b, 3))
        seen.append(obs)
        out = norm(obs)
        mean, var = pooled_with_prior(np.concatenate(seen), 1e-4)
        want = np.clip((obs - mean) / np.sqrt(var + 1e-8), -10, 10).astype(np.float32)
        assert out.dtype == np.float32 and out.shape == obs.shape
        np.testing.assert_allclose(out, want, rtol=1e-6)


def test_observation_normalizer_update_false_normalize_and_frozen_leave_statistics():
    rng = np.random.default_rng(8)
    norm = ObservationNormalizer((2,))
    norm(rng.normal(size=(50, 2)))
    before = norm.state_dict()
    obs = rng.normal(4.0, size=(5, 2))
    out = norm(obs, update=False)
    np.testing.assert_array_equal(norm.normalize(obs), out)
    frozen = norm.frozen()
    np.testing.assert_array_equal(frozen(obs), out)
    np.testing.assert_array_equal(frozen(obs, update=True), out)
    for k, v in norm.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
        np.testing.assert_array_equal(frozen.state_dict()[k], before[k])
    # the frozen copy is independent: the training normalizer goes on updating
    norm(obs)
    assert norm.obs_rms.count > frozen.obs_rms.count
    np.testing.assert_array_equal(frozen.state_dict()["mean"], before["mean"])


def test_observation_normalizer_clips_and_takes_one_observation():
    norm = ObservationNormalizer((2,), clip=3.0)
    norm(np.random.default_rng(9).normal(size=(100, 2)))
    out = norm(np.array([1e6, -1e6]), update=False)
    assert out.shape == (2,)
    np.testing.assert_array_equal(out, [3.0, -3.0])
    count = norm.obs_rms.count
    norm(np.array([0.5, 0.5]))
    assert norm.obs_rms.count == count + 1


def test_observation_normalizer_round_trip_and_bad_input():
    norm = ObservationNormalizer((2,))
    norm(np.random.default_rng(10).normal(size=(30, 2)))
    other = ObservationNormalizer((2,))
    other.load_state_dict(_npz_round_trip(norm.state_dict()))
    obs = np.array([[0.3, -2.0]])
    np.testing.assert_array_equal(other(obs), norm(obs))
    with pytest.raises(ValueError, match=r"obs must be finite, got nan at index \[0, 1\]"):
        norm(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"obs must be finite"):
        norm.frozen()(np.array([[0.0, np.inf]]))
    with pytest.raises(ValueError, match=r"obs has shape \(3,\), expected \(B, 2\)"):
        norm(np.zeros(3))
    with pytest.raises(ValueError, match="Invalid clip"):
        ObservationNormalizer((2,), clip=0.0)
    with pytest.raises(ValueError, match=r"'mean' has shape \(2,\), expected \(3,\)"):
        ObservationNormalizer((3,)).load_state_dict(norm.state_dict())


# ---- RewardScaler ------------------------------------------------------------------------------

def naive_reward_scaling(rewards, terminated, truncated, valid, gamma, clip, epsilon):
    """The documented order, environment by environment, with the statistics recomputed from
    every running return pushed so far (pooled with the 1e-4 pseudo-sample)."""
    T, N = rewards.shape
    R = [0.0] * N
    pushed = []
    out = np.zeros((T, N))
    for t in range(T):
        step = []
        for n in range(N):
            if valid[t, n]:
                R[n] = gamma * R[n] + rewards[t, n]
                step.append(R[n])
        pushed.extend(step)
        if pushed:
            _, var = pooled_with_prior(np.array(pushed), 1e-4)
        else:
            var = 1.0
        for n in range(N):
            if valid[t, n]:
                out[t, n] = min(max(rewards[t, n] / np.sqrt(var + epsilon), -clip), clip)
                if terminated[t, n] or truncated[t, n]:
                    R[n] = 0.0
    return out, np.array(R), np.array(pushed)


@pytest.mark.parametrize("mask", ["all", "next_step"])
@pytest.mark.parametrize("gamma,clip", [(0.99, 10.0), (0.0, 10.0), (1.0, 1.5)])
def test_reward_scaler_matches_naive_loop(mask, gamma, clip):
    T, N = 60, 3
    rng = np.random.default_rng(11)
    rewards = rng.normal(1.0, 2.0, size=(T, N))
    terminated = rng.random((T, N)) < 0.1
    truncated = rng.random((T, N)) < 0.05
    valid = np.ones((T, N), bool)
    if mask == "next_step":
        valid[1:] = ~(terminated | truncated)[:-1]
        rewards[~valid] = 1e3  # not transitions: ignored, whatever they hold
    scaler = RewardScaler(N, gamma, clip=clip)
    got = np.stack([scaler(rewards[t], terminated[t], truncated[t], valid[t])
                    for t in range(T)])
    want, want_R, pushed = naive_reward_scaling(rewards, terminated, truncated, valid, gamma,
                                                clip, 1e-8)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(scaler.returns, want_R, rtol=1e-12, atol=1e-15)
    mean, var = pooled_with_prior(pushed, 1e-4)
    np.testing.assert_allclose([scaler.ret_rms.mean, scaler.ret_rms.var], [mean, var],
                               rtol=1e-12)
    assert scaler.ret_rms.count == pytest.approx(valid.sum() + 1e-4, rel=1e-15)
    if clip == 1.5:
        assert np.abs(got).max() == 1.5


def test_reward_scaler_resets_on_termination_and_truncation_and_skips_invalid():
    scaler = RewardScaler(3, 0.5)
    f, t = np.array([False, False, False]), np.array([True, False, False])
    scaler(np.array([1.0, 1.0, 1.0]), f, f)
    np.testing.assert_array_equal(scaler.returns, [1.0, 1.0, 1.0])
    scaler(np.array([2.0, 2.0, 2.0]), t, t[[1, 0, 2]])  # env 0 terminated, env 1 truncated
    np.testing.assert_array_equal(scaler.returns, [0.0, 0.0, 2.5])
    count = scaler.ret_rms.count
    valid = np.array([False, False, True])
    out = scaler(np.array([7.0, 7.0, 1.0]), t, t, valid)  # flags of invalid entries are ignored
    np.testing.assert_array_equal(scaler.returns, [0.0, 0.0, 2.25])
    assert scaler.ret_rms.count == count + 1
    assert out[0] == out[1] == 0.0 and out[2] > 0


def test_reward_scaler_update_false_frozen_and_round_trip():
    rng = np.random.default_rng(12)
    scaler = RewardScaler(2, 0.9)
    for _ in range(20):
        scaler(rng.normal(size=2), rng.random(2) < 0.2, np.zeros(2, bool))
    state = scaler.state_dict()
    assert set(state) == {"mean", "var", "count", "returns"}
    assert all(v.dtype == np.float64 for v in state.values())
    r = np.array([0.5, -3.0])
    flags = np.zeros(2, bool)
    out = scaler(r, flags, flags, update=False)
    np.testing.assert_array_equal(out, scaler.normalize(r))
    np.testing.assert_array_equal(out, r / np.sqrt(scaler.ret_rms.var + 1e-8))
    frozen = scaler.frozen()
    np.testing.assert_array_equal(frozen(r, flags, flags), out)
    for k, v in scaler.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
        np.testing.assert_array_equal(frozen.state_dict()[k], state[k])
    # a restored scaler continues exactly as the original
    restored = RewardScaler(2, 0.9)
    restored.load_state_dict(_npz_round_trip(state))
    for _ in range(5):
        r, term = rng.normal(size=2), rng.random(2) < 0.3
        np.testing.assert_array_equal(restored(r, term, flags), scaler(r, term, flags))
    for k, v in scaler.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[k], v)


def test_reward_scaler_bad_input():
    scaler = RewardScaler(2, 0.99)
    f = np.zeros(2, bool)
    with pytest.raises(ValueError, match=r"rewards must be finite, got nan at index \[1\]"):
        scaler(np.array([0.0, np.nan]), f, f)
    with pytest.raises(ValueError, match=r"rewards has shape \(3,\), expected \(2,\)"):
        scaler(np.zeros(3), f, f)
    with pytest.raises(TypeError, match="rewards must hold real numbers, got dtype bool"):
        scaler(np.ones(2, bool), f, f)
    with pytest.raises(TypeError, match="terminated must be a bool array, got dtype int64"):
        scaler(np.zeros(2), np.zeros(2, np.int64), f)
    with pytest.raises(ValueError, match=r"valid has shape \(1,\), expected \(2,\)"):
        scaler(np.zeros(2), f, f, np.ones(1, bool))
    with pytest.raises(ValueError, match="overflows float64.*scale the data down"):
        scaler(np.array([1e200, 0.0]), f, f)
    np.testing.assert_array_equal(scaler.returns, 0.0)  # refused: nothing changed
    with pytest.raises(ValueError, match=r"Invalid gamma: 1.5 \(expected a finite number in"):
        RewardScaler(2, 1.5)
    with pytest.raises(TypeError, match="num_envs must be an int, got True"):
        RewardScaler(True, 0.9)
    with pytest.raises(ValueError, match="Invalid num_envs: 0"):
        RewardScaler(0, 0.9)
    with pytest.raises(ValueError, match=r"'returns' has shape \(2,\), expected \(3,\)"):
        RewardScaler(3, 0.9).load_state_dict(scaler.state_dict())


# ---- the single-row and single-environment fast paths ----------------------------------------

def reference_update(rms: RunningMeanStd, x: np.ndarray) -> None:
    """RunningMeanStd.update through the batch moments (the general path), for any batch."""
    if x.shape[0]:
        rms.update_from_moments(x.mean(axis=0, dtype=np.float64),
                                x.var(axis=0, dtype=np.float64), x.shape[0])


def assert_same_state(a, b):
    for (k, u), v in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(u, v, err_msg=k)
        assert np.signbit(u).tolist() == np.signbit(v).tolist(), k


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_running_stats_of_single_rows_are_bitwise_the_batch_moments_path(shape, dtype):
    rng = np.random.default_rng(20)
    rms, ref = RunningMeanStd(shape), RunningMeanStd(shape)
    for t in range(200):
        row = (rng.normal(2.0, 3.0, size=(1, *shape)) * 10).astype(dtype)
        if t % 7 == 0 and dtype != np.int64:
            row[...] = -0.0  # np.mean turns -0.0 into +0.0; the statistics must not differ
        rms.update(row)
        reference_update(ref, row)
        assert_same_state(rms, ref)


def test_observation_normalizer_of_one_observation_is_bitwise_the_batch_path():
    rng = np.random.default_rng(21)
    norm = ObservationNormalizer((11,), clip=3.0)
    ref = RunningMeanStd((11,))
    for t in range(100):
        obs = rng.normal(1.0, 2.0, size=11 if t % 2 else (1, 11)).astype(np.float32)
        got = norm(obs)
        reference_update(ref, obs.reshape(1, 11))
        want = np.clip((obs - ref.mean) / np.sqrt(ref.var + 1e-8), -3.0, 3.0).astype(np.float32)
        np.testing.assert_array_equal(got, want)
        assert got.shape == obs.shape and got.dtype == np.float32
        assert_same_state(norm.obs_rms, ref)


@pytest.mark.parametrize("gamma,clip", [(0.99, 10.0), (0.0, 10.0), (1.0, 0.5)])
def test_reward_scaler_of_one_environment_is_bitwise_the_vector_path(gamma, clip):
    """RewardScaler(1) runs in Python floats; the same IEEE operations as the numpy path."""
    rng = np.random.default_rng(22)
    scaler = RewardScaler(1, gamma, clip=clip)
    rms, returns = RunningMeanStd(()), np.zeros(1)
    for t in range(300):
        r = rng.normal(0.5, 3.0, size=1)
        term, trunc, valid = rng.random(1) < 0.05, rng.random(1) < 0.03, rng.random(1) < 0.9
        update = t % 11 != 0
        got = scaler(r, term, trunc, valid if t % 3 else None, update=update)
        if t % 3 == 0:
            valid = np.ones(1, bool)
        if update:  # the vector path, written out
            ret = np.where(valid, gamma * returns + r, returns)
            reference_update(rms, ret[valid])
            returns = np.where(valid & (term | trunc), 0.0, ret)
        want = np.where(valid, np.clip(r / np.sqrt(rms.var + 1e-8), -clip, clip), 0.0)
        np.testing.assert_array_equal(got, want)
        assert got.shape == (1,) and got.dtype == np.float64
        np.testing.assert_array_equal(scaler.returns, returns)
        assert_same_state(scaler.ret_rms, rms)


@pytest.mark.filterwarnings("ignore:overflow encountered")  # numpy's, on the way to the error
def test_single_rows_whose_statistics_overflow_are_refused_and_change_nothing():
    rms = RunningMeanStd((3,))
    rms.update(np.ones((4, 3)))
    before = rms.state_dict()
    with pytest.raises(ValueError, match=r"statistics overflow float64 .*1e\+200.*scale the"):
        rms.update(np.array([[0.0, 1e200, 0.0]]))
    for k, v in rms.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    scaler = RewardScaler(1, 0.99)
    f = np.zeros(1, bool)
    scaler(np.array([1.0]), f, f)
    state = scaler.state_dict()
    with pytest.raises(ValueError, match=r"statistics overflow float64 .*1e\+200.*scale the"):
        scaler(np.array([1e200]), f, f)
    for k, v in scaler.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    with pytest.raises(ValueError, match=r"obs must be finite, got nan at index \[0, 2\]"):
        ObservationNormalizer(3)(np.array([[0.0, 1.0, np.nan]]))
