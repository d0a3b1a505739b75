"""Smoke tests of the engine and learning benchmarks: they run and report sane numbers.

No timing is asserted; the benchmarks measure, the tests only check that they can.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import bench_engine, bench_learning  # noqa: E402


def test_engine_benchmark_runs_all_three_implementations():
    rows = bench_engine.bench([1, 8], repeats=20)
    assert [r["batch"] for r in rows] == [1, 8]
    for r in rows:
        assert all(r[k] > 0 and np.isfinite(r[k]) for k in ("rlgrad", "torch", "numpy"))
        assert all(r[k + "_cpu"] >= 0 for k in ("rlgrad", "torch", "numpy"))


def test_the_three_implementations_compute_the_same_update():
    # the benchmark compares like with like: one Adam step of the same loss on the same weights
    import torch

    rng = np.random.default_rng(1)
    obs, actions, adv = bench_engine.make_batch(16, rng)
    # same start: rlgrad's weights copied into torch's model, then one update each
    import rlgrad
    from rlgrad import nn, optim

    model = nn.MLP(bench_engine.SIZES, rng=np.random.default_rng(0))
    tmodel = torch.nn.Sequential(
        torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 2))
    with torch.no_grad():
        for (_, p), tp in zip(model.named_parameters(), tmodel.parameters()):
            tp.copy_(torch.from_numpy(p.data))
    opt = optim.Adam(model.parameters(), lr=bench_engine.LR)
    topt = torch.optim.Adam(tmodel.parameters(), lr=bench_engine.LR)
    loss = -(rlgrad.log_softmax(model(obs))[np.arange(16), actions] * adv).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    tl = -(torch.log_softmax(tmodel(torch.from_numpy(obs)), -1)
           .gather(1, torch.from_numpy(actions)[:, None]).squeeze(1) * torch.from_numpy(adv)).mean()
    topt.zero_grad()
    tl.backward()
    topt.step()
    for p, tp in zip(model.parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_ppo_update_benchmark_runs_every_implementation():
    rows = bench_engine.bench_ppo(repeats=2, warmup=1)
    assert [r["policy"] for r in rows] == list(bench_engine.PPO_POLICIES)
    names = ["rlgrad", "torch"] + (["jax"] if bench_engine.jax_available() else [])
    for r in rows:
        assert all(r[k] > 0 and np.isfinite(r[k]) for k in names)
        assert all(r[k + "_cpu"] >= 0 and np.isfinite(r[k + "_cpu"]) for k in names)
        assert (r["jax"] is None) == (not bench_engine.jax_available())
    (row,) = bench_engine.bench_ppo(repeats=1, use_jax=False, policies=[rows[0]["policy"]],
                                    warmup=0)
    assert row["jax"] is None and row["rlgrad"] > 0


@pytest.mark.parametrize("policy", list(bench_engine.PPO_POLICIES))
def test_the_ppo_implementations_compute_the_same_update(policy):
    # like with like: three updates from the same weights on the same mini-batch
    batch = bench_engine.make_ppo_batch(policy, np.random.default_rng(3))
    start = np.concatenate([w.ravel() for ws in bench_engine.ppo_weights(policy, 0).values()
                            for w in ws])
    makers = [bench_engine.rlgrad_ppo_update, bench_engine.torch_ppo_update]
    if bench_engine.jax_available():
        makers.append(bench_engine.jax_ppo_update)
    finals = []
    for make in makers:
        update, params = make(policy)
        for _ in range(3):
            update(batch)
        finals.append(np.concatenate([np.asarray(p).ravel() for p in params()]))
    assert np.abs(finals[1] - start).max() > 5e-4  # Adam moved every weight by about 3 lr
    for other in finals[::2]:
        np.testing.assert_allclose(other, finals[1], rtol=0, atol=1e-6)


def test_learning_benchmark_reports_a_seed():
    import tests.tiny_envs  # noqa: F401

    r = bench_learning.run_seed("reinforce_baseline", "tests.tiny_envs:Signal-v0", 1, 3000,
                                threshold=7.0, overrides={"num_envs": 4, "steps_per_update": 256,
                                                          "hidden_sizes": (16,)},
                                eval_episodes=4)
    assert r["steps"] <= 3000 and r["wall_seconds"] > 0 and 0 <= r["eval_return"] <= 8
    assert r["steps_to_threshold"] is None or 0 < r["steps_to_threshold"] <= 3000
