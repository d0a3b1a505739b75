"""The linear-regression experiment in --quick mode: table, TensorBoard runs, figure, Newton."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments import linear_regression as lr


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("linear_regression")
    logdir, png = out / "runs", out / "figure.png"
    args = ["--quick", "--seed", "3", "--logdir", str(logdir), "--plot", "--plot-path", str(png)]
    return lr.main(args), logdir, png


def test_every_method_on_both_data_sets(quick):
    results, _, _ = quick
    runs = {(r["dataset"], r["method"]) for r in results}
    assert runs == {(d, m) for d in ("centred", "ravine") for m in lr.METHODS}
    assert len(results) == 20
    table = lr.table(results, tol=1e-3)
    for r in results:
        assert f"| {r['dataset']} | {r['method']} |" in table


def test_newton_reaches_the_closed_form_in_one_step(quick):
    results, _, _ = quick
    for r in results:
        if r["method"] == "newton":
            x, y = r["x"], r["y"]
            expected = np.polyfit(x, y, 1)  # an independent least-squares fit: (m, b)
            np.testing.assert_allclose(r["solution"], expected, rtol=1e-9, atol=1e-9)
            assert r["distances"][0] > 1.0
            assert r["distances"][1] < 1e-8
            assert r["steps_to_tol"] == 1


def test_batch_gd_decreases_the_loss_monotonically_on_the_centred_set(quick):
    results, _, _ = quick
    (gd,) = [r for r in results if r["dataset"] == "centred" and r["method"] == "batch GD"]
    losses = gd["losses"]
    assert len(losses) == 151  # the start and 150 quick steps
    assert np.all(np.diff(losses) <= 1e-12 * losses[0])
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_allclose(losses[-1], gd["min_loss"], rtol=1e-6)


def test_tensorboard_runs_and_figure(quick):
    results, logdir, png = quick
    assert sorted(os.listdir(logdir)) == sorted(
        f"{d}__{m.replace(' ', '_')}" for d in ("centred", "ravine") for m in lr.METHODS
    )
    acc = EventAccumulator(str(logdir / "ravine__momentum"))
    acc.Reload()
    events = acc.Scalars("losses/mse")
    (run,) = [r for r in results if r["dataset"] == "ravine" and r["method"] == "momentum"]
    assert [e.step for e in events] == list(range(1, len(run["losses"])))
    np.testing.assert_allclose([e.value for e in events], run["losses"][1:], rtol=1e-6)
    assert "charts/distance_to_lstsq" in acc.Tags()["scalars"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 50_000


def test_steps_to_tol_means_staying_within_tol(quick):
    results, _, _ = quick
    for r in results:
        d = r["distances"]
        if r["steps_to_tol"] is None:
            assert r["diverged"] or d[-1] >= 1e-3
        else:
            k = r["steps_to_tol"]
            assert np.all(d[k:] < 1e-3) and (k == 0 or d[k - 1] >= 1e-3)


def test_parse_args_quick_and_types():
    args = lr.parse_args(["--quick", "--seed", "7", "--no-plot"])
    assert args.quick and args.steps == 150 and args.n_points == 64 and args.seed == 7
    assert lr.parse_args([]).steps == 2000
    with pytest.raises(ValueError, match="unknown data set"):
        lr.make_dataset("spiral", 4, 0.1, np.random.default_rng(0))
