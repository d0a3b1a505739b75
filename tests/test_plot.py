"""The plot: reading event files back, grouping by configuration without the seed, the curve,
the bootstrap band and the table's numbers, checked against a hand-made set of runs."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import scipy.stats

from rlgrad import plot
from rlgrad.cli import main
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
    assert "| Hand-v0 | lr=0.1 | 2 | 40 | 5.5 [5.0, 6.0] | 30 (≥ 3) | 2.6 [2.6, 2.6] |" in table
    assert "| Hand-v0 | lr=0.2 | 1 | 40 | 10.0 [10.0, 10.0] | 15 (≥ 3) | 10.0 [10.0, 10.0] |" \
        in table
    assert "(1)" not in table  # equal lengths: no notes


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


# ---- runs of unequal length -----------------------------------------------------------------


def write_run(root, name, points, config=None, end=None, complete=True):
    """A run directory with ``points`` of TAG and, if ``end``, a scalar of another tag at step
    ``end`` (the step the run reached after its last episode, as charts/SPS is in training)."""
    run = root / name
    with SummaryWriter(run) as w:
        for step, value in points:
            w.add_scalar(TAG, value, step)
        if end is not None:
            w.add_scalar("charts/SPS", 1000.0, end)
    if config is not None:
        (run / "config.json").write_text(json.dumps(config))
        if complete:
            (run / "summary.json").write_text("{}")
    return run


def config(seed, env="Hand-v0", **kw):
    return {"agent": "agent", "env_id": env, "seed": seed, **kw}


@pytest.fixture
def unequal(tmp_path):
    """One group, two seeds: seed 1 runs 200 steps and climbs to 500, seed 2 stops at 50."""
    root = tmp_path / "runs"
    write_run(root, "long", [(10, 10.0), (50, 20.0), (100, 300.0), (180, 500.0)], config(1),
              end=200)
    write_run(root, "short", [(10, 30.0), (40, 40.0)], config(2), end=50)
    return root


def test_each_run_ends_where_it_ended_and_the_mean_only_where_all_did(unequal):
    (s,) = plot.summarize(plot.load_runs(unequal, TAG), window=1, threshold=35.0, points=5)
    np.testing.assert_array_equal(s.end_steps, [200, 50])  # the other tag's last step counts
    np.testing.assert_array_equal(s.ends, [200, 50])
    # the final value is each run's own last value, not the long run cut at step 50 (20.0)
    np.testing.assert_array_equal(s.finals, [500, 40])
    assert s.final_mean == 270
    # the mean curve: from the latest first point to the shortest run's end, never beyond
    np.testing.assert_allclose(s.x, [10, 20, 30, 40, 50])
    np.testing.assert_allclose(s.mean, [20, 20, 20, 25, 30])  # (10 + 30) / 2 ... (20 + 40) / 2
    assert s.steps_to_threshold is None  # 35 is reached by the long run alone, after step 50
    # each run's own curve is drawn to its own end, held after its last point
    (lx, ly), (sx, sy) = s.run_curves
    np.testing.assert_array_equal(lx, [10, 50, 100, 180, 200])
    np.testing.assert_array_equal(ly, [10, 20, 300, 500, 500])
    np.testing.assert_array_equal(sx, [10, 40, 50])
    np.testing.assert_array_equal(sy, [30, 40, 40])
    assert s.unequal_length and s.auc_range == (10, 50)


def test_unequal_lengths_are_noted_in_the_table(unequal):
    stats = plot.summarize(plot.load_runs(unequal, TAG), window=1)
    (note,) = plot.length_notes(stats)
    assert note.startswith("runs of Hand-v0 agent differ in length (50 to 200 steps)")
    assert "stop at 50 steps" in note and "own last step" in note
    table = plot.format_table(stats)
    assert "| Hand-v0 | agent | 2 | 50–200 (1) | 270.0 [40.0, 500.0] |" in table
    assert f"(1) {note}" in table


def test_groups_of_one_env_keep_their_own_lengths(tmp_path):
    """A 200-step group beside a 50-step one: its curve and final go to 200, its AUC is taken
    over the range every run of the environment reached (so areas compare), and says so."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        write_run(root, f"long{seed}", [(10, 1.0), (50, 2.0), (200, 9.0)],
                  config(seed, lr=0.1), end=200)
        write_run(root, f"short{seed}", [(10, 4.0), (50, 5.0)], config(seed, lr=0.2), end=50)
    long, short = plot.summarize(plot.load_runs(root, TAG), window=1, threshold=8.0)
    assert long.label == "lr=0.1" and long.x[-1] == 200 and short.x[-1] == 50
    np.testing.assert_array_equal(long.finals, [9, 9])
    assert long.steps_to_threshold == 200
    assert long.auc_range == short.auc_range == (10, 50)
    assert long.auc == pytest.approx(1.0)  # 1 over [10, 50)
    assert plot.length_notes([long, short]) == []  # each group's runs are of one length
    table = plot.format_table([long, short])
    assert "| Hand-v0 | lr=0.1 | 2 | 200 | 9.0 [9.0, 9.0] | 200 (≥ 8) | 1.0 [1.0, 1.0] (1) |" \
        in table
    assert "(1) AUC over [10, 50] steps, the range every run of Hand-v0 reached" in table
    assert "| Hand-v0 | lr=0.2 | 2 | 50 | 5.0 [5.0, 5.0] | never (≥ 8) | 4.0 [4.0, 4.0] |" \
        in table


def test_runs_with_no_common_range_have_no_mean_curve(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "early", [(10, 1.0), (20, 2.0)], config(1))
    write_run(root, "late", [(30, 3.0), (40, 4.0)], config(2))
    (s,) = plot.summarize(plot.load_runs(root, TAG), window=1, threshold=0.0)
    assert s.x.size == 0 and s.steps_to_threshold is None and math.isnan(s.auc)
    np.testing.assert_array_equal(s.finals, [2, 4])
    assert "no mean curve" in plot.length_notes([s])[0]
    plot.plot_groups([s], tmp_path / "empty.png")  # draws the runs alone


def test_the_figure_draws_every_run_to_its_end(unequal):
    stats = plot.summarize(plot.load_runs(unequal, TAG), window=1)
    fig, axes = plot.new_figure()
    plot.draw_groups(axes[0, 0], stats)
    ends = sorted(float(line.get_xdata()[-1]) for line in axes[0, 0].lines)
    assert ends == [50, 50, 200]  # the mean curve (to 50) and each run to its own end


def test_cli_warns_when_runs_of_a_group_differ_in_length(unequal, tmp_path, capsys):
    assert main(["plot", str(unequal), "--out", str(tmp_path / "p.png"), "--window", "1"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert err.startswith("rlgrad: warning: runs of Hand-v0 agent differ in length (50 to 200")
    assert "| 50–200 (1) | 270.0 [40.0, 500.0] |" in out and "\n(1) runs of Hand-v0" in out


# ---- unreadable runs are skipped ----------------------------------------------------------


def corrupt_event_file(run, how):
    (file,) = run.glob("events.out.tfevents*")
    data = file.read_bytes()
    if how == "garbage":
        file.write_bytes(b"this is not an event file" * 4)
    elif how == "truncated":
        file.write_bytes(data[: len(data) - 7])
    elif how == "flipped":
        file.write_bytes(data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:])
    elif how == "directory":
        file.unlink()
        file.mkdir()
    return file


@pytest.mark.parametrize("text,reason", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "holds a JSON list, expected an object"),
    ("\udcff", "cannot read"),
])
def test_a_run_with_a_bad_config_is_skipped_with_one_line(logdir, tmp_path, capsys, text,
                                                           reason):
    bad = logdir / "Hand-v0__agent__lr0.2__seed1" / "config.json"
    bad.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert main(["plot", str(logdir), "--out", str(tmp_path / "p.png"), "--window", "2"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("rlgrad: warning: skipped run ")
    assert f"{bad} {reason}" in err or f"{reason} {bad}" in err
    assert "| Hand-v0 | agent | 2 |" in out and "lr=0.2" not in out  # the others go on
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        plot.load_runs(logdir, TAG)  # the library, without on_skip, refuses


@pytest.mark.parametrize("how,reason", [("garbage", "is corrupt"), ("truncated", "is corrupt"),
                                        ("flipped", "is corrupt"), ("directory", "cannot read")])
def test_a_run_with_a_bad_event_file_is_skipped_with_one_line(logdir, tmp_path, capsys, how,
                                                              reason):
    file = corrupt_event_file(logdir / "Hand-v0__agent__lr0.1__seed2", how)
    assert main(["plot", str(logdir), "--out", str(tmp_path / "p.png")]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert err.startswith("rlgrad: warning: skipped run Hand-v0__agent__lr0.1__seed2: ")
    assert str(file) in err and reason in err
    assert "| Hand-v0 | lr=0.1 | 1 |" in out and "| Hand-v0 | lr=0.2 | 1 |" in out
    skipped = []
    runs = plot.load_runs(logdir, TAG, on_skip=skipped.append)
    assert len(runs) == 2 and len(skipped) == 1 and str(file) in skipped[0]


# ---- writing the figure -------------------------------------------------------------------


def test_cli_cannot_write_into_a_missing_directory(logdir, tmp_path, capsys):
    out = tmp_path / "missing" / "p.png"
    assert main(["plot", str(logdir), "--out", str(out)]) == 1
    std, err = capsys.readouterr()
    assert err == f"rlgrad: error: cannot write plot to {out} (no directory {out.parent})\n"
    assert std == "" and not out.parent.exists()


def test_cli_reports_an_os_error_writing_the_figure(logdir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "taken.png"
    out.mkdir()
    assert main(["plot", str(logdir), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"rlgrad: error: cannot write plot to {out} (Is a directory)\n"

    from matplotlib.figure import Figure

    def denied(self, *args, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Figure, "savefig", denied)
    out = tmp_path / "p.png"
    assert main(["plot", str(logdir), "--out", str(out)]) == 1
    assert capsys.readouterr().err == \
        f"rlgrad: error: cannot write plot to {out} (Permission denied)\n"


# ---- aggregates across environments (Agarwal et al. 2021) ---------------------------------

# normalised scores of three environments, four runs each
SCORES = [np.array([0.1, 0.4, 0.35, 0.9]), np.array([1.2, 0.8, 0.95, 1.05]),
          np.array([-0.1, 0.2, 0.05, 0.6])]


def test_aggregates_by_hand():
    pooled = np.sort(np.concatenate(SCORES))  # 12 runs: IQM drops 3 at each end
    assert plot.aggregate(SCORES, "iqm") == pytest.approx(pooled[3:9].mean())
    assert plot.aggregate(SCORES, "iqm") == pytest.approx(
        scipy.stats.trim_mean(np.concatenate(SCORES), 0.25))
    env_means = [0.4375, 1.0, 0.1875]
    assert plot.aggregate(SCORES, "mean") == pytest.approx(np.mean(env_means))
    assert plot.aggregate(SCORES, "median") == pytest.approx(0.4375)
    # 1 - mean(min(s, 1)): 1.2 and 1.05 count as 1
    gap = 1 - (0.1 + 0.4 + 0.35 + 0.9 + 1 + 0.8 + 0.95 + 1 - 0.1 + 0.2 + 0.05 + 0.6) / 12
    assert plot.aggregate(SCORES, "optimality_gap") == pytest.approx(gap)


@pytest.mark.parametrize("metric", plot.AGGREGATES)
def test_intervals_are_scipys_stratified_bootstrap(metric):
    """The interval is scipy.stats.bootstrap with one sample per environment, paired=False,
    percentile, and equals a stratified bootstrap written out with numpy."""
    est, low, high = plot.aggregate_interval(SCORES, metric, n_resamples=4000, seed=3)

    def env_means(s):
        return np.stack([x.mean(axis=-1) for x in s], axis=-1)

    stat = {  # along the last axis, so one call takes every resample
        "iqm": lambda *s, axis=-1: scipy.stats.trim_mean(np.concatenate(s, -1), 0.25, axis=-1),
        "mean": lambda *s, axis=-1: env_means(s).mean(axis=-1),
        "median": lambda *s, axis=-1: np.median(env_means(s), axis=-1),
        "optimality_gap": lambda *s, axis=-1: 1 - np.minimum(np.concatenate(s, -1), 1).mean(-1),
    }[metric]
    assert est == pytest.approx(stat(*SCORES))
    direct = scipy.stats.bootstrap(SCORES, stat, paired=False, vectorized=True,
                                   method="percentile", n_resamples=4000,
                                   rng=np.random.default_rng(3))
    assert (low, high) == pytest.approx((direct.confidence_interval.low,
                                         direct.confidence_interval.high))
    # the oracle: resample each environment's runs within it, 20000 times
    rng = np.random.default_rng(0)
    boot = stat(*[s[rng.integers(0, s.size, (20000, s.size))] for s in SCORES])
    o_low, o_high = np.percentile(boot, [2.5, 97.5])
    _, low, high = plot.aggregate_interval(SCORES, metric, n_resamples=20000)
    # Monte-Carlo error of a 2.5% quantile from 20000 resamples, on a spread of about 0.3
    assert low == pytest.approx(o_low, abs=0.015) and high == pytest.approx(o_high, abs=0.015)
    assert low <= est <= high


@pytest.mark.parametrize("metric", ["iqm", "mean"])
def test_the_bootstrap_is_stratified(metric):
    """Env A's runs all score 0, env B's all 1. Resampled within each env, every resample
    holds four zeros and four ones, so the IQM and the mean are 0.5 in every one; a bootstrap
    over the pooled runs would mix them and spread."""
    scores = [np.zeros(4), np.ones(4)]
    assert plot.aggregate_interval(scores, metric) == (0.5, 0.5, 0.5)
    rng = np.random.default_rng(0)
    pooled = np.concatenate(scores)
    unstratified = [pooled[rng.integers(0, 8, 8)].mean() for _ in range(2000)]
    assert np.percentile(unstratified, 2.5) < 0.3  # what the test would see if unstratified


def test_an_environment_with_one_run_is_held_fixed():
    scores = [np.array([0.0]), np.array([1.0, 1.0, 3.0])]
    est, low, high = plot.aggregate_interval(scores, "mean", n_resamples=4000)
    assert est == pytest.approx((0 + 5 / 3) / 2)
    # env B's mean resamples to 1, 5/3, 7/3 or 3; env A stays 0
    assert low == pytest.approx(0.5) and high == pytest.approx(1.5)
    est, low, high = plot.aggregate_interval([np.array([0.2]), np.array([0.4])], "mean")
    assert est == pytest.approx(0.3) and math.isnan(low) and math.isnan(high)


def test_performance_profile_by_hand():
    taus = np.array([-0.5, 0.0, 0.5, 1.0, 1.5])
    frac, low, high = plot.performance_profile(SCORES, taus)
    # scores above: all 12; 11 (not -0.1); 6 (0.9 1.2 0.8 0.95 1.05 0.6); 2 (1.2 1.05); none
    np.testing.assert_allclose(frac, np.array([12, 11, 6, 2, 0]) / 12)
    assert np.all(low <= frac) and np.all(frac <= high)
    assert low[0] == high[0] == 1 and low[-1] == high[-1] == 0
    frac, low, high = plot.performance_profile([np.zeros(4), np.ones(4)], [0.5])
    assert frac[0] == low[0] == high[0] == 0.5  # stratified: always four runs above


@pytest.mark.parametrize("bad,match", [
    ([], "one non-empty 1-d array"),
    ([np.array([])], "one non-empty 1-d array"),
    ([np.ones((2, 2))], "one non-empty 1-d array"),
    ([np.array([0.0, np.nan])], "finite"),
])
def test_bad_scores(bad, match):
    with pytest.raises(ValueError, match=match):
        plot.aggregate(bad)
    with pytest.raises(ValueError, match="aggregate must be one of iqm, mean, median"):
        plot.aggregate(SCORES, "max")


def test_the_score_table():
    table = plot.load_score_table()
    assert plot.DEFAULT_SCORES.is_file() and plot.DEFAULT_SCORES.parent.name == "data"
    assert sorted(table) == sorted(["CartPole-v1", "Acrobot-v1", "Pendulum-v1",
                                    "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5",
                                    "InvertedPendulum-v5"])
    for env_id, entry in table.items():
        assert entry.random < entry.reference and entry.source == str(plot.DEFAULT_SCORES)
        threshold = plot.default_threshold(env_id)
        if threshold is not None:  # the file says: reward_threshold where there is one
            assert entry.reference == threshold
    assert table["CartPole-v1"].random == 24.96
    assert plot.normalize_score(249.98, 24.96, 475.0) == pytest.approx(0.5)


@pytest.mark.parametrize("text,match", [
    ("[oops", "is not valid TOML"),
    ('["X-v0"]\nrandom = 0\n', "must hold exactly 'random' and 'reference'"),
    ('["X-v0"]\nrandom = 0\nreference = true\n', "reference must be a finite number"),
    ('["X-v0"]\nrandom = 0\nreference = nan\n', "reference must be a finite number"),
    ('["X-v0"]\nrandom = 2\nreference = 2\n', "random and reference are both 2"),
])
def test_bad_score_files(tmp_path, text, match):
    path = tmp_path / "scores.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.*{match}|{match}"):
        plot.load_score_table(path)
    with pytest.raises(ValueError, match="cannot read score table"):
        plot.load_score_table(tmp_path / "none.toml")


def write_sweep(root):
    """Two settings (lr 0.1, 0.2) x CartPole-v1, Acrobot-v1 x three seeds; each run holds its
    final return from step 10 to its end (so with window 1 its final is that value)."""
    finals = {
        ("CartPole-v1", 0.1): [475.0, 249.98, 24.96], ("CartPole-v1", 0.2): [400.0, 300.0, 475.0],
        ("Acrobot-v1", 0.1): [-100.0, -300.0, -500.0], ("Acrobot-v1", 0.2): [-90.0, -120.0, -200.0],
    }
    for (env, lr), values in finals.items():
        for seed, value in enumerate(values):
            write_run(root, f"{env}__agent__lr{lr}__seed{seed}", [(10, value), (100, value)],
                      config(seed, env=env, lr=lr), end=100)
    table = plot.load_score_table()
    # event files hold float32 values: normalise what they hold
    norm = {k: plot.normalize_score(np.float32(v), table[k[0]].random, table[k[0]].reference)
            for k, v in finals.items()}
    return root, norm


def test_aggregate_groups_normalise_each_environment(tmp_path):
    root, norm = write_sweep(tmp_path / "sweep")
    stats = plot.summarize(plot.load_runs(root, TAG), window=1)
    aggs = plot.aggregate_groups(stats, plot.load_score_table(), metrics=plot.AGGREGATES,
                                 profile=True)
    assert [a.label for a in aggs] == ["lr=0.1", "lr=0.2"]
    a = aggs[0]
    assert sorted(a.envs) == ["Acrobot-v1", "CartPole-v1"] and a.n_runs == 6
    np.testing.assert_allclose(a.scores["CartPole-v1"], [1, 0.5, 0], atol=1e-7)  # float32
    np.testing.assert_allclose(a.scores["Acrobot-v1"], [1, 0.5, 0])
    np.testing.assert_array_equal(a.scores["CartPole-v1"], norm["CartPole-v1", 0.1])
    # environments in the order of their groups (runs sorted by name: Acrobot first)
    scores = [norm["Acrobot-v1", 0.1], norm["CartPole-v1", 0.1]]
    for metric in plot.AGGREGATES:
        assert a.estimates[metric] == pytest.approx(plot.aggregate_interval(scores, metric))
    assert a.estimates["iqm"][0] == pytest.approx(0.5)
    every = np.concatenate([v for a in aggs for v in a.scores.values()])
    np.testing.assert_allclose(a.taus, np.linspace(min(0, every.min()), max(1, every.max()),
                                                   101))
    np.testing.assert_allclose(a.profile, [(np.concatenate(scores) > t).mean() for t in a.taus])


def test_cli_aggregate_and_profile(tmp_path, capsys):
    root, norm = write_sweep(tmp_path / "sweep")
    out = tmp_path / "agg.png"
    argv = ["plot", str(root), "--out", str(out), "--window", "1", "--aggregate", "iqm",
            "--aggregate", "optimality_gap", "--profile"]
    assert main(argv) == 0
    std, err = capsys.readouterr()
    assert err == ""
    scores = [norm["Acrobot-v1", 0.2], norm["CartPole-v1", 0.2]]
    iqm = plot.aggregate_interval(scores)
    gap = plot.aggregate_interval(scores, "optimality_gap")
    assert "| setting | envs | runs | IQM [95% CI] | optimality gap [95% CI] |" in std
    assert (f"| lr=0.2 | 2 | 6 | {iqm[0]:.3f} [{iqm[1]:.3f}, {iqm[2]:.3f}] | "
            f"{gap[0]:.3f} [{gap[1]:.3f}, {gap[2]:.3f}] |") in std
    assert "| setting | > 0 [95% CI] |" in std and "| lr=0.1 | 0.67 [" in std
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_cli_an_environment_missing_from_the_table(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed in (1, 2):
        write_run(root, f"Hand{seed}", [(10, float(seed))], config(seed))
    argv = ["plot", str(root), "--out", str(tmp_path / "p.png"), "--aggregate", "iqm"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no random and reference score for 'Hand-v0'" in err
    assert str(plot.DEFAULT_SCORES) in err and "--scores FILE" in err
    extra = tmp_path / "mine.toml"
    extra.write_text('["Hand-v0"]\nrandom = 0.0\nreference = 2.0\n')
    assert main(argv + ["--scores", str(extra)]) == 0
    assert "| agent | 1 | 2 | 0.750 [0.500, 1.000] |" in capsys.readouterr().out


def test_cli_aggregate_options(logdir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["plot", str(logdir), "--aggregate", "max"])
    assert "invalid choice: 'max'" in capsys.readouterr().err
    assert main(["plot", str(logdir), "--scores", "x.toml"]) == 1
    assert "--scores is used only with --aggregate or --profile" in capsys.readouterr().err


def test_cli_profile_alone(tmp_path, capsys):
    root, _ = write_sweep(tmp_path / "sweep")
    out = tmp_path / "profile.png"
    assert main(["plot", str(root), "--out", str(out), "--window", "1", "--profile"]) == 0
    std = capsys.readouterr().out
    assert "| setting | > 0 [95% CI] |" in std and "IQM" not in std
    assert out.read_bytes()[:4] == b"\x89PNG"
