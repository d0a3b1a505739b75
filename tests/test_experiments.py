"""Every experiment runs end to end in its --quick mode and draws its figure."""

from __future__ import annotations

import importlib

import pytest

EXPERIMENTS = ["optimizers", "baseline", "learning_rate", "gradient_descent", "saliency",
               "curvature"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_mode_produces_the_figure_and_a_table(name, tmp_path):
    module = importlib.import_module(f"experiments.{name}")
    result = module.main(["--quick", "--logdir", str(tmp_path / "runs"),
                          "--out-dir", str(tmp_path / "docs")])
    figure = tmp_path / "docs" / f"{name}.png"
    assert result["figure"] == figure
    assert figure.read_bytes()[:4] == b"\x89PNG" and figure.stat().st_size > 10_000
    assert result["table"].startswith("|") and result["table"].count("\n") >= 3
    assert (tmp_path / "runs" / "table.md").is_file()
    assert "nan" not in result["table"]


def test_optimizers_picks_a_learning_rate_from_each_grid(tmp_path):
    from experiments import optimizers

    result = optimizers.main(["--quick", "--logdir", str(tmp_path), "--out-dir",
                              str(tmp_path)])
    for (env, opt), lr in result["best_lr"].items():
        assert lr in optimizers.LRS[opt][1:3], (env, opt, lr)
    assert set(result["ranking"]) == set(optimizers.QUICK["envs"])
    # the second call finds every run complete
    again = optimizers.main(["--quick", "--logdir", str(tmp_path), "--out-dir", str(tmp_path)])
    assert again["best_lr"] == result["best_lr"]


def test_saliency_numbers(tmp_path):
    from experiments import saliency

    result = saliency.main(["--quick", "--logdir", str(tmp_path), "--out-dir", str(tmp_path)])
    for key in ("log_prob", "value"):
        stats = result["stats"][key]
        assert stats["abs"].shape == stats["signed"].shape == (4,) and (stats["abs"] > 0).all()
    value = result["stats"]["value"]
    assert (value["abs"] >= abs(value["signed"]) - 1e-7).all()  # mean |g| >= |mean g|
    assert result["states"] > 0


def test_experiments_default_to_docs_only_in_full_mode():
    from experiments import _common

    args = _common.parser("x", None).parse_args(["--quick"])
    logdir, figure = _common.paths("x", args)
    assert figure.parent == logdir != _common.DOCS
    logdir, figure = _common.paths("x", _common.parser("x", None).parse_args([]))
    assert figure == _common.DOCS / "x.png"


def test_curvature_reads_the_metric_under_either_tag_and_counts_steps_past_the_edge(tmp_path):
    import json

    import numpy as np

    from experiments import curvature
    from rlgrad.logging import SummaryWriter

    # a run per spelling of the tag, one with both (the key as is wins), one with neither
    tags = {"plain": ["curvature/hessian_max"], "prefixed": ["diagnostics/curvature/hessian_max"],
            "both": ["curvature/hessian_max", "diagnostics/curvature/hessian_max"], "none": []}
    for name, run_tags in tags.items():
        run = tmp_path / name
        with SummaryWriter(run) as w:
            w.add_scalar("charts/episodic_return", 1.0, 1)
            for i, tag in enumerate(run_tags):
                w.add_scalar(tag, 10.0 * (i + 1), 1)
        (run / "config.json").write_text(json.dumps({"env_id": "E-v0", "seed": 1}))
        (run / "summary.json").write_text("{}")
    found = curvature.load_metric(tmp_path, "curvature/hessian_max")
    assert {k: v.values.tolist() for k, v in found.items()} == {
        "plain": [10.0], "prefixed": [10.0], "both": [10.0]}
    assert curvature.load_metric(tmp_path, "curvature/absent") == {}

    # lr * lambda_max > 2 is past the edge; lambda_max <= 0 never is; exactly 2 is not
    assert curvature.exceed_fraction(2.0, np.array([0.5, 1.0, 1.5, 0.0, -4.0])) == 0.2
    assert curvature.exceed_fraction(100.0, np.array([0.03, 0.0])) == 0.5
