"""Smoke test of benchmarks/bench_agents.py: tiny runs, the table's rows, no timing claims."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from benchmarks import bench_agents  # noqa: E402


@pytest.mark.parametrize("run", [bench_agents.run_rlgrad, bench_agents.run_torch])
def test_reinforce_runs_use_the_step_budget(run):
    result = run(600, seed=0)
    # rlgrad never exceeds the budget; the PyTorch batch may finish its running episodes past it
    assert 600 <= result.steps <= 600 + 8 * 500
    assert result.steps_per_second > 0 and result.steps_per_cpu_second > 0
    assert math.isfinite(result.final_return) and result.final_return > 0


def test_table_has_a_row_per_implementation_with_positive_numbers():
    # SB3 PPO always collects at least one rollout of 2048 steps
    runs = bench_agents.bench(steps=300, sb3_steps=64, repeats=1, seed=1)
    assert list(runs) == [bench_agents.RLGRAD, bench_agents.TORCH, bench_agents.SB3]
    assert runs[bench_agents.SB3][0].steps == 2048
    lines = bench_agents.table(runs).splitlines()
    assert len(lines) == 2 + 3
    for name, line in zip(runs, lines[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == name
        steps_per_second, ratio = float(cells[1]), float(cells[2].rstrip("x"))
        cpu_steps_per_second, cpu_ratio = (float(c.rstrip("x")) for c in cells[4].split(","))
        assert min(steps_per_second, ratio, cpu_steps_per_second, cpu_ratio) > 0
        assert float(cells[5]) > 0  # steps/s of the single run
        assert float(cells[6]) > 0  # final training return of the single run
