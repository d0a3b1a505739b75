"""One policy-gradient update, rlgrad against torch and hand-written numpy, side by side.

The update: an MLP 4 -> 64 tanh -> 64 tanh -> 2 logits, the categorical log-probability of the
taken actions times advantages, backward, and an Adam step. One thread each, medians over
interleaved repetitions in one process.

    python -m benchmarks.bench_engine [--repeats 300] [--batch-sizes 1 32 512 4096]
"""

from __future__ import annotations

import os

# one thread each: set before numpy and torch load their thread pools
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import rlgrad  # noqa: E402
from rlgrad import nn, optim  # noqa: E402

SIZES = (4, 64, 64, 2)
LR = 1e-3


def make_batch(batch: int, rng: np.random.Generator):
    obs = rng.standard_normal((batch, SIZES[0])).astype(np.float32)
    actions = rng.integers(0, SIZES[-1], batch)
    adv = rng.standard_normal(batch).astype(np.float32)
    return obs, actions, adv


def rlgrad_update(seed: int):
    policy = nn.MLP(SIZES, activation="tanh", rng=np.random.default_rng(seed))
    opt = optim.Adam(policy.parameters(), lr=LR)

    def update(obs, actions, adv):
        logp = rlgrad.log_softmax(policy(obs))[np.arange(len(actions)), actions]
        loss = -(logp * adv).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return update


def torch_update(seed: int):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    policy = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.Tanh(),
        torch.nn.Linear(SIZES[1], SIZES[2]), torch.nn.Tanh(),
        torch.nn.Linear(SIZES[2], SIZES[3]),
    )
    opt = torch.optim.Adam(policy.parameters(), lr=LR)

    def update(obs, actions, adv):
        obs_t, act_t = torch.from_numpy(obs), torch.from_numpy(actions)
        adv_t = torch.from_numpy(adv)
        logp = torch.log_softmax(policy(obs_t), -1).gather(1, act_t[:, None]).squeeze(1)
        loss = -(logp * adv_t).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return update


def numpy_update(seed: int):
    """The same forward, backward and Adam written out by hand: the floor for numpy."""
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1 / np.sqrt(n_in)
        params.append(rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32))
        params.append(rng.uniform(-bound, bound, n_out).astype(np.float32))
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = [0]
    b1, b2, eps = 0.9, 0.999, 1e-8

    def update(obs, actions, adv):
        w1, c1, w2, c2, w3, c3 = params
        h1 = np.tanh(obs @ w1.T + c1)
        h2 = np.tanh(h1 @ w2.T + c2)
        z = h2 @ w3.T + c3
        z = z - z.max(axis=1, keepdims=True)
        logp_all = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        n = len(actions)
        # d loss / d logits = -(onehot - softmax) * adv / n
        gz = np.exp(logp_all) * (adv / n)[:, None]
        gz[np.arange(n), actions] -= adv / n
        g3w, g3b = gz.T @ h2, gz.sum(0)
        gh2 = (gz @ w3) * (1 - h2 * h2)
        g2w, g2b = gh2.T @ h1, gh2.sum(0)
        gh1 = (gh2 @ w2) * (1 - h1 * h1)
        g1w, g1b = gh1.T @ obs, gh1.sum(0)
        step[0] += 1
        t = step[0]
        for p, g, mi, vi in zip(params, (g1w, g1b, g2w, g2b, g3w, g3b), m, v):
            mi *= b1
            mi += (1 - b1) * g
            vi *= b2
            vi += (1 - b2) * g * g
            denom = np.sqrt(vi) / math.sqrt(1 - b2**t) + eps
            p -= (LR / (1 - b1**t)) * mi / denom

    return update


def bench(batch_sizes, repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    impls = {"rlgrad": rlgrad_update(0), "torch": torch_update(0), "numpy": numpy_update(0)}
    for batch in batch_sizes:
        data = make_batch(batch, rng)
        times = {name: [] for name in impls}
        for fn in impls.values():  # warm up
            for _ in range(10):
                fn(*data)
        reps = max(20, repeats if batch <= 512 else repeats // 4)
        for _ in range(reps):
            for name, fn in impls.items():  # interleaved, so drift hits all alike
                t0 = time.perf_counter()
                fn(*data)
                times[name].append(time.perf_counter() - t0)
        med = {name: statistics.median(ts) * 1e6 for name, ts in times.items()}
        rows.append({"batch": batch, **med})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 512, 4096])
    args = parser.parse_args(argv)
    rows = bench(args.batch_sizes, args.repeats)
    print("| batch | rlgrad (us) | torch (us) | numpy by hand (us) | rlgrad / torch "
          "| rlgrad / numpy |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['rlgrad']:.0f} | {r['torch']:.0f} | {r['numpy']:.0f} "
              f"| {r['rlgrad'] / r['torch']:.2f}x | {r['rlgrad'] / r['numpy']:.2f}x |")


if __name__ == "__main__":
    main()
