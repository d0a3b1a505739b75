"""The plot: reading event files back, grouping by configuration without the seed, the curve,
the bootstrap band and the table's numbers, checked against a hand-made set of runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlgrad import plot
from rlgrad.logging import SummaryWriter

TAG = "charts/episodic_return"

# Hand-made runs. Group lr=0.1: seed 1 and seed 2; group lr=0.2: seed 1 (constant 10).
RUNS = {
    ("0.1", 1): [(10, 1.0), (20, 3.0), (30, 5.0), (40, 7.0)],
    ("0.1", 2): [(15, 2.0), (25, 4.0), (40, 6.0)],
    ("0.2", 1): [(10, 10.0), (20, 10.0), (30, 10.0), (40, 10.0)],
}


def write_runs(root, runs=RUNS, complete=True):
    for (lr, seed), points in runs.items():
        run = root / f"Hand-v0__agent__lr{lr}__seed{seed}"
        with SummaryWriter(run) as w:
            for step, value in points:
                w.add_scalar(TAG, value, step)
                w.add_scalar("other/tag", -value, step)
        config = {"agent": "agent", "env_id": "Hand-v0", "seed": seed, "lr": float(lr)}
        (run / "config.json").write_text(json.dumps(config))
        if complete:
            (run / "summary.json").write_text("{}")
    return root


@pytest.fixture
def logdir(tmp_path):
    return write_runs(tmp_path / "runs")


def test_load_runs_reads_back_what_was_written(logdir):
    runs = plot.load_runs(logdir, TAG)
    assert [r.name for r in runs] == sorted(p.name for p in logdir.iterdir())
    by = {(r.config["lr"], r.seed): r for r in runs}
    np.testing.assert_array_equal(by[0.1, 2].steps, [15, 25, 40])
    np.testing.assert_array_equal(by[0.1, 2].values, [2, 4, 6])
    assert np.all(np.diff(by[0.1, 1].seconds) >= 0) and by[0.1, 1].seconds[0] >= 0
    assert by[0.1, 1].group_key == by[0.1, 2].group_key != by[0.2, 1].group_key


def test_table_numbers_match_the_hand_computation(logdir):
    """window 2; common range [x0, x1] = [15, 40] (latest first point, earliest last point).

    lr=0.1 running means: seed 1 [1, 2, 4, 6] at 10, 20, 30, 40; seed 2 [2, 3, 5] at 15, 25, 40.
    Group mean at the breakpoints 15, 20, 25, 30, 40: 1.5, 2, 2.5, 3.5, 5.5.
    AUC = (1.5*5 + 2*5 + 2.5*5 + 3.5*10) / 25 = 65 / 25 = 2.6; each run's own area is 65 / 25
    as well (seed 1: 1*5 + 2*10 + 4*10; seed 2: 2*10 + 3*15), so its CI is [2.6, 2.6].
    Finals 6 and 5: mean 5.5, and the bootstrap means of two values are 5, 5.5 or 6, so the 95%
    interval is [5, 6].
    """
    stats = plot.summarize(plot.load_runs(logdir, TAG), window=2, threshold=3.0, points=6)
    a, b = stats
    assert (a.label, b.label) == ("lr=0.1", "lr=0.2")
    assert a.seeds == [1, 2] and b.seeds == [1]
    np.testing.assert_allclose(a.x, [15, 20, 25, 30, 35, 40])
    np.testing.assert_allclose(a.mean, [1.5, 2, 2.5, 3.5, 3.5, 5.5])
    np.testing.assert_allclose(a.finals, [6, 5])
    assert a.final_mean == 5.5 and (a.final_low, a.final_high) == (5.0, 6.0)
    assert a.steps_to_threshold == 30
    assert a.auc == pytest.approx(2.6)
    np.testing.assert_allclose(a.aucs, [2.6, 2.6])
    assert (a.auc_low, a.auc_high) == pytest.approx((2.6, 2.6))
    assert b.final_mean == b.final_low == b.final_high == 10
    assert b.auc == pytest.approx(10) and b.steps_to_threshold == 15

    table = plot.format_table(stats)
    assert "| Hand-v0 | lr=0.1 | 2 | 5.5 [5.0, 6.0] | 30 (≥ 3) | 2.6 [2.6, 2.6] |" in table
    assert "| Hand-v0 | lr=0.2 | 1 | 10.0 [10.0, 10.0] | 15 (≥ 3) | 10.0 [10.0, 10.0] |" in table


def test_threshold_never_reached_and_exactly_at_the_end(logdir):
    runs = plot.load_runs(logdir, TAG)
    a = plot.summarize(runs, window=2, threshold=5.5)[0]
    assert a.steps_to_threshold == 40
    a = plot.summarize(runs, window=2, threshold=100.0)[0]
    assert a.steps_to_threshold is None
    assert "never (≥ 100)" in plot.format_table([a])


def test_band_contains_the_mean_and_is_reproducible(logdir):
    runs = plot.load_runs(logdir, TAG)
    s1 = plot.summarize(runs, window=2)[0]
    s2 = plot.summarize(runs, window=2)[0]
    np.testing.assert_array_equal(s1.low, s2.low)
    assert np.all(s1.low <= s1.mean + 1e-12) and np.all(s1.mean <= s1.high + 1e-12)


def test_default_threshold_is_the_environments():
    assert plot.default_threshold("CartPole-v1") == 475
    assert plot.default_threshold("Acrobot-v1") == -100
    assert plot.default_threshold("Hand-v0") is None


def test_incomplete_runs_are_left_out_unless_asked(tmp_path, logdir):
    write_runs(logdir, {("0.3", 1): [(10, 1.0), (40, 2.0)]}, complete=False)
    assert len(plot.load_runs(logdir, TAG)) == 3
    assert len(plot.load_runs(logdir, TAG, include_incomplete=True)) == 4


def test_runs_without_config_are_grouped_by_name(tmp_path):
    for seed in (1, 2):
        with SummaryWriter(tmp_path / f"Env-v0__agent__lr0.1__seed{seed}") as w:
            w.add_scalar(TAG, float(seed), 5)
    runs = plot.load_runs(tmp_path, TAG)
    assert [r.seed for r in runs] == [1, 2] and runs[0].group_key == runs[1].group_key
    (s,) = plot.summarize(runs)
    assert s.final_mean == 1.5 and s.env_id == "Env-v0"


def test_other_tags_and_wall_time(logdir):
    stats = plot.summarize(plot.load_runs(logdir, "other/tag"), window=1, threshold=-6.0)
    assert stats[0].final_mean == pytest.approx(-6.5)  # -7 and -6
    timed = plot.summarize(plot.load_runs(logdir, TAG), x="time", span="group")
    assert timed[0].x_axis == "time" and np.all(np.diff(timed[0].x) >= 0)
    assert "s to threshold" in plot.format_table(timed)


def test_plot_writes_a_png(logdir, tmp_path):
    stats = plot.summarize(plot.load_runs(logdir, TAG), window=2)
    out = plot.plot_groups(stats, tmp_path / "fig" / "curves.png")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 5000


def test_bootstrap_ci_by_hand():
    low, high = plot.bootstrap_ci(np.array([3.0]))
    assert low == high == 3.0
    low, high = plot.bootstrap_ci(np.array([[1.0, 2.0], [1.0, 4.0]]))
    np.testing.assert_allclose(low, [1, 2])
    np.testing.assert_allclose(high, [1, 4])
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    low, high = plot.bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))  # the normal approximation
    assert low == pytest.approx(x.mean() - half, abs=0.02)
    assert high == pytest.approx(x.mean() + half, abs=0.02)


def test_running_mean_and_curve_at():
    np.testing.assert_allclose(plot.running_mean(np.array([1.0, 3, 5, 7]), 3), [1, 2, 3, 5])
    c = plot.curve_at(np.array([10.0, 20]), np.array([1.0, 3.0]), np.array([5, 10, 15, 20, 99]),
                      window=2)
    np.testing.assert_allclose(c, [np.nan, 1, 1, 2, 2])


@pytest.mark.parametrize("kw,match", [
    ({"window": 0}, "window must be a positive integer"),
    ({"points": 1}, "points must be an integer >= 2"),
    ({"x": "episodes"}, "x must be 'step' or 'time'"),
    ({"span": "all"}, "span must be 'env' or 'group'"),
])
def test_bad_arguments(logdir, kw, match):
    with pytest.raises(ValueError, match=match):
        plot.summarize(plot.load_runs(logdir, TAG), **kw)


def test_missing_tag_or_directory(tmp_path, logdir):
    with pytest.raises(ValueError, match="no run under .* has the scalar 'nope'"):
        plot.load_runs(logdir, "nope")
    with pytest.raises(ValueError, match="is not a directory"):
        plot.load_runs(tmp_path / "missing")
    with pytest.raises(ValueError, match=".png"):
        plot.plot_groups(plot.summarize(plot.load_runs(logdir, TAG)), tmp_path / "x.jpg")
