"""Fisher-vector products and TRPO's conjugate-gradient solve, rlgrad against torch.

The policy: an 11 -> 64 tanh -> 64 tanh -> 3 Gaussian MLP with a state-independent log-std
(Hopper's sizes), float32, at a batch of 2048 states. Timed, each in one thread:

- setup: the forward pass and building the FVP (the graph pieces made once per update);
- FVP: one product F v + damping v;
- CG(15): setup plus 15 conjugate-gradient iterations, what a TRPO update pays.

rlgrad runs both of its methods ("analytic": J^T M J v with forward-mode J v; and
"double_backprop"); torch runs the double-backprop FVP of sb3-contrib's TRPO (the gradient of
the mean KL built with create_graph, then grad of (grad KL)^T v with retain_graph), and the
same CG recursion. The same weights and data for all; repetitions interleaved, medians.

    python -m benchmarks.bench_curvature [--repeats 30] [--batch 2048]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import rlgrad
from rlgrad.policies import GaussianPolicy

OBS_DIM, ACTION_DIM, HIDDEN = 11, 3, (64, 64)
DAMPING, CG_ITERS = 0.1, 15


def rlgrad_impl(policy: GaussianPolicy, obs: np.ndarray, method: str) -> dict[str, Callable]:
    params = list(policy.parameters())

    def setup() -> rlgrad.FisherVectorProduct:
        return rlgrad.FisherVectorProduct(policy(obs), params, damping=DAMPING, method=method)

    fvp = setup()

    def cg(b: np.ndarray) -> np.ndarray:
        return rlgrad.conjugate_gradient(setup(), b, iters=CG_ITERS, tol=0.0)

    return {"setup": setup, "fvp": fvp, "cg": cg}


def torch_impl(policy: GaussianPolicy, obs: np.ndarray) -> dict[str, Callable]:
    """The same policy in torch, and sb3-contrib's way to a Fisher-vector product."""
    weights = dict(policy.named_parameters())
    layers: list[torch.nn.Module] = []
    sizes = [OBS_DIM, *HIDDEN, ACTION_DIM]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(n_in, n_out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[f"net.{2 * i}.weight"].data))
            linear.bias.copy_(torch.from_numpy(weights[f"net.{2 * i}.bias"].data))
        layers += [linear, torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    log_std = torch.nn.Parameter(torch.from_numpy(weights["log_std"].data.copy()))
    params = [*net.parameters(), log_std]
    obs_t = torch.from_numpy(obs)

    def setup() -> Callable[[torch.Tensor], torch.Tensor]:
        mean = net(obs_t)
        dist = torch.distributions.Normal(mean, log_std.exp())
        old = torch.distributions.Normal(mean.detach(), log_std.detach().exp())
        kl = torch.distributions.kl_divergence(old, dist).sum(-1).mean()
        grads = torch.autograd.grad(kl, params, create_graph=True)
        flat_grad = torch.cat([g.reshape(-1) for g in grads])

        def fvp(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad((flat_grad * v).sum(), params, retain_graph=True)
            return torch.cat([h.reshape(-1) for h in hv]) + DAMPING * v

        return fvp

    def cg(b: torch.Tensor) -> torch.Tensor:
        avp = setup()
        x = torch.zeros_like(b)
        r, p = b.clone(), b.clone()
        rr = torch.dot(r, r)
        for _ in range(CG_ITERS):
            ap = avp(p)
            alpha = rr / torch.dot(p, ap)
            x += alpha * p
            r -= alpha * ap
            rr_new = torch.dot(r, r)
            p = r + (rr_new / rr) * p
            rr = rr_new
        return x

    return {"setup": setup, "fvp": setup(), "cg": cg}


def bench(batch: int, repeats: int) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    policy = GaussianPolicy(OBS_DIM, ACTION_DIM, HIDDEN, rng=rng)
    obs = rng.standard_normal((batch, OBS_DIM)).astype(np.float32)
    impls = {"analytic": rlgrad_impl(policy, obs, "analytic"),
             "double_backprop": rlgrad_impl(policy, obs, "double_backprop"),
             "torch": torch_impl(policy, obs)}
    dim = sum(p.data.size for p in policy.parameters())
    v = rng.standard_normal(dim).astype(np.float32)
    # rlgrad's flat order is log_std first (the policy's own parameter), torch's last
    v_torch = torch.from_numpy(np.concatenate([v[ACTION_DIM:], v[:ACTION_DIM]]))
    args = {"analytic": v, "double_backprop": v, "torch": v_torch}
    out = {name: np.asarray(impl["fvp"](args[name])) for name, impl in impls.items()}
    out["torch"] = np.concatenate([out["torch"][-ACTION_DIM:], out["torch"][:-ACTION_DIM]])
    scale = np.abs(out["torch"]).max()
    for name in ("analytic", "double_backprop"):
        err = np.abs(out[name] - out["torch"]).max() / scale
        print(f"# {name} FVP against torch: max |difference| / max |F v| = {err:.1e}")
    times: dict[str, dict[str, list[float]]] = {what: {name: [] for name in impls}
                                                for what in ("setup", "fvp", "cg")}
    for _ in range(3):  # warm up
        for name, impl in impls.items():
            for what in times:
                impl[what]() if what == "setup" else impl[what](args[name])
    for _ in range(repeats):
        for what in times:
            for name, impl in impls.items():  # interleaved, so drift hits all alike
                t0 = time.perf_counter()
                impl[what]() if what == "setup" else impl[what](args[name])
                times[what][name].append(time.perf_counter() - t0)
    return {what: {name: statistics.median(ts) * 1e3 for name, ts in by_name.items()}
            for what, by_name in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=2048)
    args = parser.parse_args(argv)
    with threadpool_limits(limits=1):
        rows = bench(args.batch, args.repeats)
    print(f"# {OBS_DIM}-{HIDDEN[0]}-{HIDDEN[1]}-{ACTION_DIM} Gaussian policy, float32, batch "
          f"{args.batch}, one thread, median of {args.repeats}")
    print("| | rlgrad analytic (ms) | rlgrad double backprop (ms) | torch double backprop (ms) "
          "| torch / analytic | torch / rlgrad double backprop |")
    print("|---|---:|---:|---:|---:|---:|")
    labels = {"setup": "setup", "fvp": "one FVP", "cg": f"CG({CG_ITERS}) with setup"}
    for what, r in rows.items():
        print(f"| {labels[what]} | {r['analytic']:.2f} | {r['double_backprop']:.2f} "
              f"| {r['torch']:.2f} | {r['torch'] / r['analytic']:.2f}x "
              f"| {r['torch'] / r['double_backprop']:.2f}x |")


if __name__ == "__main__":
    main()
