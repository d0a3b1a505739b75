from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlgrad.returns import discounted_returns, explained_variance, gae, normalize


def random_batch(seed: int, T: int, N: int, p_term: float = 0.1, p_trunc: float = 0.1):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    bootstrap = rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < p_term
    truncated = rng.random((T, N)) < p_trunc
    return rewards, values, terminated, truncated, bootstrap


def episodes(terminated_n, truncated_n):
    """Split one environment's column into episodes: (start, end, terminal) with end inclusive."""
    T = len(terminated_n)
    start = 0
    for t in range(T):
        if terminated_n[t] or truncated_n[t] or t == T - 1:
            yield start, t, bool(terminated_n[t])
            start = t + 1


def naive_returns(rewards, terminated, truncated, gamma, bootstrap):
    T, N = rewards.shape
    out = np.zeros((T, N))
    for n in range(N):
        for start, end, terminal in episodes(terminated[:, n], truncated[:, n]):
            g = 0.0 if terminal else bootstrap[end, n]
            for t in range(end, start - 1, -1):
                g = rewards[t, n] + gamma * g
                out[t, n] = g
    return out


def naive_gae(rewards, values, terminated, truncated, bootstrap, gamma, lam):
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for start, end, terminal in episodes(terminated[:, n], truncated[:, n]):
            # the episode's value sequence V(s_start..s_end), followed by the value after its end
            last = 0.0 if terminal else bootstrap[end, n]
            vs = list(values[start : end + 1, n]) + [last]
            a = 0.0
            for k in range(end - start, -1, -1):
                t = start + k
                delta = rewards[t, n] + gamma * vs[k + 1] - vs[k]
                a = delta + gamma * lam * a
                adv[t, n] = a
    return adv, adv + values


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("T,N", [(1, 1), (1, 4), (7, 1), (50, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discounted_returns_match_naive(gamma, T, N, seed):
    rewards, _, terminated, truncated, bootstrap = random_batch(seed, T, N)
    got = discounted_returns(rewards, terminated, truncated, gamma, bootstrap)
    np.testing.assert_allclose(
        got, naive_returns(rewards, terminated, truncated, gamma, bootstrap), rtol=1e-12
    )


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("T,N", [(1, 2), (9, 1), (40, 4)])
def test_gae_matches_naive(lam, gamma, T, N):
    rewards, values, terminated, truncated, bootstrap = random_batch(T * 100 + N, T, N, 0.15, 0.15)
    adv, ret = gae(rewards, values, terminated, truncated, bootstrap, gamma, lam)
    want_adv, want_ret = naive_gae(rewards, values, terminated, truncated, bootstrap, gamma, lam)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-10, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    T=st.integers(1, 30),
    N=st.integers(1, 5),
    p_term=st.floats(0, 1),
    p_trunc=st.floats(0, 1),
    gamma=st.floats(0, 1),
    lam=st.floats(0, 1),
)
def test_random_flag_patterns(seed, T, N, p_term, p_trunc, gamma, lam):
    rewards, values, terminated, truncated, bootstrap = random_batch(seed, T, N, p_term, p_trunc)
    got = discounted_returns(rewards, terminated, truncated, gamma, bootstrap)
    want = naive_returns(rewards, terminated, truncated, gamma, bootstrap)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    adv, ret = gae(rewards, values, terminated, truncated, bootstrap, gamma, lam)
    want_adv, want_ret = naive_gae(rewards, values, terminated, truncated, bootstrap, gamma, lam)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-9, atol=1e-9)


def test_gae_with_lambda_one_is_discounted_return():
    rewards, values, terminated, truncated, bootstrap = random_batch(5, 64, 3, 0.05, 0.05)
    _, ret = gae(rewards, values, terminated, truncated, bootstrap, 0.97, 1.0)
    want = discounted_returns(rewards, terminated, truncated, 0.97, bootstrap)
    np.testing.assert_allclose(ret, want, rtol=1e-10)


def test_gae_with_lambda_zero_is_td_error():
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [0.25], [4.0]])
    flags = np.zeros((3, 1), dtype=bool)
    bootstrap = np.full((3, 1), 10.0)
    adv, _ = gae(rewards, values, flags, flags, bootstrap, 0.5, 0.0)
    np.testing.assert_allclose(adv[:, 0], [1 + 0.5 * 0.25 - 0.5, 2 + 0.5 * 4 - 0.25, 3 + 5 - 4])


def test_gamma_zero_returns_rewards():
    rewards, _, terminated, truncated, bootstrap = random_batch(3, 20, 2)
    np.testing.assert_array_equal(
        discounted_returns(rewards, terminated, truncated, 0.0, bootstrap), rewards
    )


def test_gamma_one_sums_rest_of_episode():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    terminated = np.array([False, True, False, False, False])
    truncated = np.zeros(5, dtype=bool)
    got = discounted_returns(rewards, terminated, truncated, 1.0)
    np.testing.assert_array_equal(got, [3.0, 2.0, 12.0, 9.0, 5.0])


def test_truncation_bootstraps_from_final_value_not_next_row():
    # env 0 is truncated at t=1 and reset; row t=2 starts a new episode with a huge value
    rewards = np.array([[1.0], [1.0], [1.0]])
    terminated = np.zeros((3, 1), dtype=bool)
    truncated = np.array([[False], [True], [False]])
    values = np.array([[0.0], [0.0], [1000.0]])
    bootstrap = np.array([[-99.0], [7.0], [3.0]])  # row 0 is not cut off: ignored
    g = discounted_returns(rewards, terminated, truncated, 0.5, bootstrap)
    np.testing.assert_allclose(g[:, 0], [1 + 0.5 * (1 + 0.5 * 7), 1 + 0.5 * 7, 1 + 0.5 * 3])
    adv, _ = gae(rewards, values, terminated, truncated, bootstrap, 0.5, 1.0)
    assert adv[1, 0] == pytest.approx(1 + 0.5 * 7 - 0.0)


def test_termination_ignores_bootstrap_and_wins_over_truncation():
    rewards = np.array([[2.0], [2.0]])
    both = np.array([[True], [False]])
    bootstrap = np.full((2, 1), 100.0)
    g = discounted_returns(rewards, both, both, 0.9, bootstrap)
    np.testing.assert_allclose(g[:, 0], [2.0, 2.0 + 90.0])


def test_bootstrap_none_is_zero():
    rewards, _, terminated, truncated, _ = random_batch(7, 30, 3)
    np.testing.assert_array_equal(
        discounted_returns(rewards, terminated, truncated, 0.9),
        discounted_returns(rewards, terminated, truncated, 0.9, np.zeros((30, 3))),
    )


def test_one_dimensional_input():
    rewards, values, terminated, truncated, bootstrap = random_batch(11, 25, 1)
    g2 = discounted_returns(rewards, terminated, truncated, 0.9, bootstrap)
    g1 = discounted_returns(rewards[:, 0], terminated[:, 0], truncated[:, 0], 0.9, bootstrap[:, 0])
    assert g1.shape == (25,)
    np.testing.assert_array_equal(g1, g2[:, 0])


def test_inputs_are_not_modified():
    batch = random_batch(13, 10, 2)
    copies = [x.copy() for x in batch]
    rewards, values, terminated, truncated, bootstrap = batch
    gae(rewards, values, terminated, truncated, bootstrap, 0.9, 0.9)
    discounted_returns(rewards, terminated, truncated, 0.9, bootstrap)
    for x, c in zip(batch, copies, strict=True):
        np.testing.assert_array_equal(x, c)


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan")])
def test_rejects_gamma_and_lam_outside_unit_interval(bad):
    rewards, values, terminated, truncated, bootstrap = random_batch(0, 4, 2)
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(rewards, terminated, truncated, bad)
    with pytest.raises(ValueError, match="lam"):
        gae(rewards, values, terminated, truncated, bootstrap, 0.9, bad)


def test_rejects_mismatched_shapes_and_dtypes():
    rewards, values, terminated, truncated, bootstrap = random_batch(0, 4, 2)
    with pytest.raises(ValueError, match=r"terminated has shape \(4, 1\)"):
        discounted_returns(rewards, terminated[:, :1], truncated, 0.9)
    with pytest.raises(ValueError, match="truncated must be a bool array, got dtype float64"):
        discounted_returns(rewards, terminated, truncated.astype(float), 0.9)
    with pytest.raises(ValueError, match=r"values has shape \(4, 2, 1\)"):
        gae(rewards, values[..., None], terminated, truncated, bootstrap, 0.9, 0.9)
    with pytest.raises(ValueError, match=r"bootstrap_values has shape \(2,\)"):
        gae(rewards, values, terminated, truncated, bootstrap[0], 0.9, 0.9)
    with pytest.raises(ValueError, match=r"rewards has shape \(0, 2\)"):
        discounted_returns(np.zeros((0, 2)), np.zeros((0, 2), bool), np.zeros((0, 2), bool), 0.9)
    with pytest.raises(ValueError, match="rewards must be a real-valued array"):
        discounted_returns(np.array([["a"]]), terminated[:1, :1], truncated[:1, :1], 0.9)


def test_normalize():
    x = np.random.default_rng(0).normal(3.0, 5.0, size=(100, 4))
    y = normalize(x)
    assert y.shape == x.shape
    assert abs(y.mean()) < 1e-12
    assert y.std() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(normalize(np.full(5, 2.0)), np.zeros(5))
    assert normalize(np.arange(4, dtype=np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="non-empty"):
        normalize(np.zeros(0))


def test_explained_variance():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == 1.0
    assert explained_variance(np.full(4, y.mean()), y) == pytest.approx(0.0)
    assert explained_variance(y[::-1], y) == pytest.approx(1 - np.var(y - y[::-1]) / np.var(y))
    assert np.isnan(explained_variance(y, np.ones(4)))
    with pytest.raises(ValueError, match=r"y_pred has shape \(4, 1\) but y_true has shape \(4,\)"):
        explained_variance(y[:, None], y)
