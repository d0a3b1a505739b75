"""Every experiment runs end to end in its --quick mode and draws its figure."""

from __future__ import annotations

import importlib

import pytest

EXPERIMENTS = ["optimizers", "baseline", "learning_rate", "gradient_descent", "saliency"]


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
