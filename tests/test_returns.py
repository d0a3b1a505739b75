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


# ---- direct sums, episode by episode, with invalid entries dropped --------------------------
#
# A second reference, written as sums rather than recursions: for an entry t of an episode that
# ends at e (terminated, truncated, or the last valid entry of its column),
#   G_t = sum_{j=t..e} gamma^(j-t) r_j + gamma^(e-t+1) * (0 if terminated_e else B_e)
#   A_t = sum_{j=t..e} (gamma lam)^(j-t) delta_j,  delta_j = r_j + gamma V'_j - V_j,
#   V'_j = V_{j+1} inside the episode, 0 after a terminal entry, B_e after a cut-off one.
# Invalid entries are removed from the column first and get 0.


def column_episodes(terminated_n, truncated_n, valid_n):
    """Episodes of one environment's column as lists of time indices (invalid entries dropped),
    each with whether it ended in a terminal state."""
    kept = [t for t in range(len(valid_n)) if valid_n[t]]
    episode = []
    for k, t in enumerate(kept):
        episode.append(t)
        if terminated_n[t] or truncated_n[t] or k == len(kept) - 1:
            yield episode, bool(terminated_n[t])
            episode = []


def direct_returns(rewards, terminated, truncated, gamma, bootstrap, valid):
    T, N = rewards.shape
    out = np.zeros((T, N))
    for n in range(N):
        for ep, terminal in column_episodes(terminated[:, n], truncated[:, n], valid[:, n]):
            e = ep[-1]
            tail = 0.0 if terminal else bootstrap[e, n]
            for i, t in enumerate(ep):
                rest = ep[i:]
                g = sum(gamma**k * rewards[j, n] for k, j in enumerate(rest))
                out[t, n] = g + gamma ** len(rest) * tail
    return out


def direct_gae(rewards, values, terminated, truncated, bootstrap, gamma, lam, valid):
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for ep, terminal in column_episodes(terminated[:, n], truncated[:, n], valid[:, n]):
            after = [values[j, n] for j in ep[1:]] + [0.0 if terminal else bootstrap[ep[-1], n]]
            deltas = [rewards[j, n] + gamma * v1 - values[j, n] for j, v1 in zip(ep, after)]
            for i, t in enumerate(ep):
                adv[t, n] = sum((gamma * lam) ** k * d for k, d in enumerate(deltas[i:]))
    return adv, np.where(valid, adv + values, 0.0)


def next_step_valid(terminated, truncated, first_valid=True):
    """Gymnasium's NEXT_STEP autoreset: the step after a done step is the reset, not a
    transition."""
    done = terminated | truncated
    valid = np.ones_like(done)
    valid[1:] = ~done[:-1]
    valid[0] = first_valid
    return valid


@pytest.mark.parametrize("lam", [0.0, 0.8, 1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("mask", ["none", "next_step", "random"])
def test_returns_and_gae_match_direct_sums(lam, gamma, mask):
    T, N = 30, 4
    rewards, values, terminated, truncated, bootstrap = random_batch(21, T, N, 0.12, 0.12)
    if mask == "none":
        valid = None
    elif mask == "next_step":
        valid = next_step_valid(terminated, truncated)
        rewards, values = np.where(valid, rewards, 0.0), np.where(valid, values, 0.0)
        terminated, truncated = terminated & valid, truncated & valid
    else:
        valid = np.random.default_rng(22).random((T, N)) < 0.8
    ref_valid = np.ones((T, N), bool) if valid is None else valid
    got = discounted_returns(rewards, terminated, truncated, gamma, bootstrap, valid=valid)
    want = direct_returns(rewards, terminated, truncated, gamma, bootstrap, ref_valid)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    adv, ret = gae(rewards, values, terminated, truncated, bootstrap, gamma, lam, valid=valid)
    want_adv, want_ret = direct_gae(rewards, values, terminated, truncated, bootstrap, gamma, lam,
                                    ref_valid)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-12, atol=1e-12)
    if lam == 1.0:
        np.testing.assert_allclose(ret, got, rtol=1e-12, atol=1e-12)


def test_rollout_boundary_bootstraps_with_the_value_of_the_next_observation():
    # one long rollout of a single episode-free stream, cut into two rollouts of 5 and 7 rows;
    # the first rollout's last row is bootstrapped with V(s_5), the value of the observation the
    # second rollout starts from
    rng = np.random.default_rng(23)
    rewards, values = rng.normal(size=(2, 12, 3))
    flags = np.zeros((12, 3), bool)
    v_end = rng.normal(size=3)
    boot = np.zeros((12, 3))
    boot[-1] = v_end
    boot_first = np.zeros((5, 3))
    boot_first[-1] = values[5]
    for gamma, lam in [(0.9, 0.0), (0.9, 0.95), (1.0, 1.0), (0.0, 0.5)]:
        adv, _ = gae(rewards, values, flags, flags, boot, gamma, lam)
        first, _ = gae(rewards[:5], values[:5], flags[:5], flags[:5], boot_first, gamma, lam)
        second, _ = gae(rewards[5:], values[5:], flags[5:], flags[5:], boot[5:], gamma, lam)
        want, _ = direct_gae(rewards[:5], values[:5], flags[:5], flags[:5], boot_first, gamma, lam,
                             np.ones((5, 3), bool))
        np.testing.assert_allclose(first, want, rtol=1e-12, atol=1e-12)
        # the second rollout is the tail of the long one; the first equals it when nothing
        # reaches across the cut (lam = 0: one-step TD errors; gamma = 0)
        np.testing.assert_allclose(second, adv[5:], rtol=1e-12, atol=1e-12)
        if lam == 0.0 or gamma == 0.0:
            np.testing.assert_allclose(first, adv[:5], rtol=1e-12, atol=1e-12)
        else:
            assert not np.allclose(first, adv[:5])
    g = discounted_returns(rewards[:5], flags[:5], flags[:5], 0.5, boot_first)
    np.testing.assert_allclose(g[-1], rewards[4] + 0.5 * values[5], rtol=1e-12)


def test_truncation_mid_rollout_termination_and_both_flags_by_hand():
    # env 0: truncated at t=1 (final observation worth 7, the reset one 1000), last row cut (3)
    # env 1: terminated at t=1 (value after it 0, whatever bootstrap says), then cut at t=2 (5)
    # env 2: both flags at t=0: terminal wins
    gamma, lam = 0.5, 0.5
    rewards = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 1.0], [1.0, 2.0, 1.0]])
    values = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 1.0], [1000.0, 1.0, 1.0]])
    terminated = np.array([[False, False, True], [False, True, False], [False, False, False]])
    truncated = np.array([[False, False, True], [True, False, False], [False, False, False]])
    bootstrap = np.array([[-99.0, -99.0, 50.0], [7.0, 100.0, -99.0], [3.0, 5.0, 8.0]])
    adv, ret = gae(rewards, values, terminated, truncated, bootstrap, gamma, lam)
    d0 = [1 + 0.5 * 0 - 0, 1 + 0.5 * 7 - 0, 1 + 0.5 * 3 - 1000]
    d1 = [2 + 0.5 * 1 - 1, 2 + 0 - 1, 2 + 0.5 * 5 - 1]
    d2 = [4 + 0 - 2, 1 + 0.5 * 1 - 1, 1 + 0.5 * 8 - 1]
    want = np.array([
        [d0[0] + 0.25 * d0[1], d1[0] + 0.25 * d1[1], d2[0]],
        [d0[1], d1[1], d2[1] + 0.25 * d2[2]],
        [d0[2], d1[2], d2[2]],
    ])
    np.testing.assert_allclose(adv, want, rtol=1e-14)
    np.testing.assert_allclose(ret, want + values, rtol=1e-14)
    g = discounted_returns(rewards, terminated, truncated, gamma, bootstrap)
    np.testing.assert_allclose(g[:, 0], [1 + 0.5 * (1 + 0.5 * 7), 1 + 0.5 * 7, 1 + 0.5 * 3])
    np.testing.assert_allclose(g[:, 1], [2 + 0.5 * 2, 2, 2 + 0.5 * 5])
    np.testing.assert_allclose(g[:, 2], [4, 1 + 0.5 * (1 + 0.5 * 8), 1 + 0.5 * 8])


def test_invalid_entries_are_removed_from_the_recursion():
    # NEXT_STEP layout in one env: the entry after each done step is the autoreset step; the
    # result at valid entries equals the computation on the column with those rows removed
    rewards, values, terminated, truncated, bootstrap = random_batch(24, 40, 1, 0.15, 0.15)
    valid = next_step_valid(terminated, truncated, first_valid=False)
    # whatever the invalid entries hold is ignored
    junk = np.random.default_rng(25).normal(size=(40, 1)) * 1e6
    rewards, values, bootstrap = (np.where(valid, x, junk) for x in (rewards, values, bootstrap))
    terminated, truncated = terminated | ~valid, truncated & valid
    keep = valid[:, 0]
    for gamma, lam in [(0.99, 0.95), (1.0, 1.0), (0.9, 0.0)]:
        adv, ret = gae(rewards, values, terminated, truncated, bootstrap, gamma, lam, valid=valid)
        adv_c, ret_c = gae(rewards[keep], values[keep], terminated[keep], truncated[keep],
                           bootstrap[keep], gamma, lam)
        np.testing.assert_array_equal(adv[~valid], 0.0)
        np.testing.assert_array_equal(ret[~valid], 0.0)
        np.testing.assert_allclose(adv[keep], adv_c, rtol=1e-12)
        np.testing.assert_allclose(ret[keep], ret_c, rtol=1e-12)
        g = discounted_returns(rewards, terminated, truncated, gamma, bootstrap, valid=valid)
        g_c = discounted_returns(rewards[keep], terminated[keep], truncated[keep], gamma,
                                 bootstrap[keep])
        np.testing.assert_array_equal(g[~valid], 0.0)
        np.testing.assert_allclose(g[keep], g_c, rtol=1e-12)


def test_trailing_invalid_entries_leave_the_last_valid_one_cut_off():
    rewards = np.array([[1.0, 1.0], [2.0, 1.0], [9.0, 1.0]])
    values = np.array([[0.5, 0.0], [0.25, 0.0], [9.0, 0.0]])
    flags = np.zeros((3, 2), bool)
    bootstrap = np.array([[9.0, 9.0], [10.0, 9.0], [9.0, 9.0]])
    valid = np.array([[True, False], [True, False], [False, False]])
    adv, ret = gae(rewards, values, flags, flags, bootstrap, 0.5, 1.0, valid=valid)
    # env 0: rows 0 and 1, row 1 cut off with its own bootstrap value 10; env 1: nothing valid
    np.testing.assert_allclose(adv[:, 0], [1 + 0.5 * (2 + 5) - 0.5, 2 + 5 - 0.25, 0.0])
    np.testing.assert_allclose(ret[:, 0], [1 + 0.5 * (2 + 5), 2 + 5, 0.0])
    np.testing.assert_array_equal(adv[:, 1], 0.0)
    np.testing.assert_array_equal(ret[:, 1], 0.0)
    g = discounted_returns(rewards, flags, flags, 0.5, bootstrap, valid=valid)
    np.testing.assert_allclose(g, [[1 + 0.5 * 7, 0], [7, 0], [0, 0]])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    T=st.integers(1, 20),
    N=st.integers(1, 4),
    p_term=st.floats(0, 1),
    p_trunc=st.floats(0, 1),
    p_valid=st.floats(0, 1),
    gamma=st.floats(0, 1),
    lam=st.floats(0, 1),
)
def test_random_valid_masks_match_direct_sums(seed, T, N, p_term, p_trunc, p_valid, gamma, lam):
    rewards, values, terminated, truncated, bootstrap = random_batch(seed, T, N, p_term, p_trunc)
    valid = np.random.default_rng(seed + 1).random((T, N)) < p_valid
    got = discounted_returns(rewards, terminated, truncated, gamma, bootstrap, valid=valid)
    want = direct_returns(rewards, terminated, truncated, gamma, bootstrap, valid)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    adv, ret = gae(rewards, values, terminated, truncated, bootstrap, gamma, lam, valid=valid)
    want_adv, want_ret = direct_gae(rewards, values, terminated, truncated, bootstrap, gamma, lam,
                                    valid)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-9, atol=1e-9)


def test_rejects_bad_valid_mask():
    rewards, values, terminated, truncated, bootstrap = random_batch(0, 4, 2)
    with pytest.raises(ValueError, match="valid must be a bool array, got dtype int64"):
        gae(rewards, values, terminated, truncated, bootstrap, 0.9, 0.9,
            valid=np.ones((4, 2), np.int64))
    with pytest.raises(ValueError, match=r"valid has shape \(4,\), expected \(4, 2\)"):
        discounted_returns(rewards, terminated, truncated, 0.9, valid=np.ones(4, bool))


# ---- normalize: overflow and non-finite values ------------------------------------------------

def test_normalize_refuses_values_whose_variance_overflows():
    # rewards of 1e300 give returns near 1e302; their variance is inf, and dividing by it used to
    # map every advantage to 0
    rewards = np.full((500, 2), 1e300)
    flags = np.zeros((500, 2), bool)
    returns = discounted_returns(rewards, flags, flags, 0.99)
    assert np.isfinite(returns).all() and returns.max() > 9e301
    with pytest.raises(ValueError, match=r"magnitude up to 9\.\d+e\+301 .*scale the rewards"):
        normalize(returns)
    big = np.array([1e200, -1e200, 3.0], np.float64)
    with pytest.raises(ValueError, match=r"magnitude up to 1e\+200"):
        normalize(big)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_normalize_refuses_non_finite_values(bad):
    x = np.arange(6.0).reshape(2, 3)
    x[1, 1] = bad
    with pytest.raises(ValueError, match=rf"expected finite values, got {bad} at index \[1, 1\]"):
        normalize(x)


def test_normalize_float32_is_computed_in_float64():
    # float32 values whose squares overflow float32 (1e20^2 = 1e40 > 3.4e38) still normalize
    x = np.array([1e20, -1e20, 3e20, 0.0], np.float32)
    y = normalize(x)
    assert y.dtype == np.float32
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, (x64 - x64.mean()) / x64.std(), rtol=1e-6)


@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf")])
def test_normalize_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="invalid eps"):
        normalize(np.arange(3.0), eps=eps)
