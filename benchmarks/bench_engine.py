"""Policy-gradient updates, rlgrad against torch (and JAX, hand-written numpy), side by side.

Two tables, each from repetitions interleaved in blocks in one process (so drift hits all
alike and each implementation runs warm, as in a training loop), one thread each: medians of
wall-clock time per update and, printed after them, of this process's CPU time (the steadier
measure on a machine shared with other work):

1. A REINFORCE step: an MLP 4 -> 64 tanh -> 64 tanh -> 2 logits, the categorical
   log-probability of the taken actions times advantages, backward, and an Adam step; rlgrad,
   torch and the same written out in numpy, over batch sizes.
2. The update PPO runs most: one mini-batch of 64 through a policy and a value MLP (64-64
   tanh), the clipped surrogate with the clipped value loss and the entropy bonus (CleanRL's
   loss, advantages standardised over the mini-batch), backward, the global gradient norm
   clipped to 0.5 and one Adam step over both networks; for the 4-64-64-2 categorical policy
   (CartPole) and the 11-64-64-3 Gaussian policy with a state-independent log-std (Hopper).
   rlgrad, the same update in torch, and, when JAX is installed, ``jax.jit`` of the same
   update with Adam written by hand (no optax), on the CPU.

One thread each: the BLAS pools through threadpoolctl (and the environment variables below,
read when numpy and torch load), torch.set_num_threads(1), and XLA's flags
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` set before JAX loads.

    python -m benchmarks.bench_engine [--repeats 300] [--batch-sizes 1 32 512 4096]
        [--ppo-repeats 300] [--no-jax]
"""

from __future__ import annotations

import os

# one thread each: set before numpy, torch and JAX load their thread pools
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
if _XLA_ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _XLA_ONE_THREAD).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import rlgrad  # noqa: E402
from rlgrad import nn, optim  # noqa: E402
from rlgrad.distributions import Categorical, Normal  # noqa: E402

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


def _interleaved_medians(impls: dict[str, Callable[..., Any]], args: tuple, repeats: int,
                         warmup: int = 10, block: int = 10) -> dict[str, float]:
    """Median microseconds per call of each implementation over ``repeats`` timed calls, made
    in turns of ``block`` consecutive calls (interleaved, so drift hits all alike; in blocks,
    so each runs warm, as in a training loop, not in caches the others just emptied):
    ``name`` of wall-clock time, ``name + "_cpu"`` of this process's CPU time (which barely
    moves when the process waits for a core on a shared machine)."""
    for fn in impls.values():
        for _ in range(warmup):
            fn(*args)
    wall: dict[str, list[float]] = {name: [] for name in impls}
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(math.ceil(repeats / block)):
        for name, fn in impls.items():
            for _ in range(block):
                t0, c0 = time.perf_counter(), time.process_time()
                fn(*args)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    out = {name: statistics.median(ts) * 1e6 for name, ts in wall.items()}
    out.update({f"{name}_cpu": statistics.median(ts) * 1e6 for name, ts in cpu.items()})
    return out


def bench(batch_sizes, repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        impls = {"rlgrad": rlgrad_update(0), "torch": torch_update(0), "numpy": numpy_update(0)}
        for batch in batch_sizes:
            data = make_batch(batch, rng)
            reps = max(20, repeats if batch <= 512 else repeats // 4)
            rows.append({"batch": batch, **_interleaved_medians(impls, data, reps)})
    return rows


# --------------------------------------------------------------------------------------------
# the PPO mini-batch update
# --------------------------------------------------------------------------------------------

# name -> (obs_dim, n_actions or action_dim, discrete)
PPO_POLICIES = {"categorical 4-64-64-2": (4, 2, True), "gaussian 11-64-64-3": (11, 3, False)}
PPO_HIDDEN = (64, 64)
PPO_BATCH = 64
PPO_LR, PPO_ADAM_EPS = 3e-4, 1e-5
PPO_CLIP, PPO_VF_COEF, PPO_ENT_COEF, PPO_MAX_GRAD_NORM = 0.2, 0.5, 0.01, 0.5
_LOG_2PI = math.log(2 * math.pi)


def make_ppo_batch(policy: str, rng: np.random.Generator, batch: int = PPO_BATCH
                   ) -> dict[str, np.ndarray]:
    """A mini-batch as the rollout stores it: float32 observations, actions (int64 or float32),
    old log-probabilities, advantages, value targets and old values (float32)."""
    obs_dim, n, discrete = PPO_POLICIES[policy]
    f32 = np.float32
    actions = (rng.integers(0, n, batch) if discrete else
               rng.standard_normal((batch, n)).astype(f32))
    old_logp = (np.full(batch, -math.log(n)) if discrete else
                np.full(batch, -n * (0.5 + 0.5 * _LOG_2PI))) + 0.1 * rng.standard_normal(batch)
    return {"obs": rng.standard_normal((batch, obs_dim)).astype(f32), "actions": actions,
            "log_prob": old_logp.astype(f32), "advantages": rng.standard_normal(batch).astype(f32),
            "returns": rng.standard_normal(batch).astype(f32),
            "values": rng.standard_normal(batch).astype(f32)}


def ppo_weights(policy: str, seed: int) -> dict[str, list[np.ndarray]]:
    """The starting weights every implementation copies: torch's default initialisation, drawn
    by rlgrad's MLP (W as (out, in)), and a log-std of 0 for the Gaussian policy."""
    obs_dim, n, discrete = PPO_POLICIES[policy]
    rng = np.random.default_rng(seed)
    pi = nn.MLP([obs_dim, *PPO_HIDDEN, n], rng=rng)
    v = nn.MLP([obs_dim, *PPO_HIDDEN, 1], rng=rng)
    return {"pi": [p.data.copy() for p in pi.parameters()],
            "v": [p.data.copy() for p in v.parameters()],
            "log_std": [] if discrete else [np.zeros(n, np.float32)]}


def rlgrad_ppo_update(policy: str, seed: int = 0) -> tuple[Callable[[dict], None], Callable]:
    """(update, parameters) of the PPO update on rlgrad's engine."""
    obs_dim, n, discrete = PPO_POLICIES[policy]
    w = ppo_weights(policy, seed)
    pi = nn.MLP([obs_dim, *PPO_HIDDEN, n])
    v = nn.MLP([obs_dim, *PPO_HIDDEN, 1])
    for p, value in zip([*pi.parameters(), *v.parameters()], w["pi"] + w["v"]):
        p.data[...] = value
    log_std = None if discrete else nn.Parameter(w["log_std"][0])
    params = [*pi.parameters(), *v.parameters(), *([] if log_std is None else [log_std])]
    opt = optim.Adam(params, lr=PPO_LR, eps=PPO_ADAM_EPS)

    def update(b: dict) -> None:
        out = pi(b["obs"])
        value = v(b["obs"]).reshape(-1)
        dist = Categorical(logits=out) if discrete else Normal(out, log_std)
        logp = dist.log_prob(b["actions"])
        ratio = (logp - b["log_prob"]).exp()
        adv = b["advantages"]
        adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
        pg1 = ratio * -adv
        pg2 = ratio.clip(1 - PPO_CLIP, 1 + PPO_CLIP) * -adv
        pg_loss = rlgrad.where(pg1.data >= pg2.data, pg1, pg2).mean()
        unclipped = (value - b["returns"]) ** 2
        clipped = (value - b["values"]).clip(-PPO_CLIP, PPO_CLIP) + b["values"] - b["returns"]
        clipped = clipped * clipped
        v_loss = rlgrad.where(unclipped.data >= clipped.data, unclipped, clipped).mean() * 0.5
        loss = pg_loss + v_loss * PPO_VF_COEF - dist.entropy().mean() * PPO_ENT_COEF
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(params, PPO_MAX_GRAD_NORM)
        opt.step()

    return update, lambda: [p.data for p in params]


def torch_ppo_update(policy: str, seed: int = 0) -> tuple[Callable[[dict], None], Callable]:
    """(update, parameters) of the same PPO update in torch."""
    import torch

    torch.set_num_threads(1)
    obs_dim, n, discrete = PPO_POLICIES[policy]
    w = ppo_weights(policy, seed)

    def mlp(sizes, weights):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.Tanh())
        net = torch.nn.Sequential(*layers)
        with torch.no_grad():
            for p, value in zip(net.parameters(), weights):
                p.copy_(torch.from_numpy(value))
        return net

    pi = mlp([obs_dim, *PPO_HIDDEN, n], w["pi"])
    v = mlp([obs_dim, *PPO_HIDDEN, 1], w["v"])
    log_std = None if discrete else torch.nn.Parameter(torch.from_numpy(w["log_std"][0].copy()))
    params = [*pi.parameters(), *v.parameters(), *([] if log_std is None else [log_std])]
    opt = torch.optim.Adam(params, lr=PPO_LR, eps=PPO_ADAM_EPS)

    def update(b: dict) -> None:
        obs = torch.from_numpy(b["obs"])
        actions = torch.from_numpy(b["actions"])
        out = pi(obs)
        value = v(obs).reshape(-1)
        if discrete:
            logp_all = torch.log_softmax(out, -1)
            logp = logp_all.gather(1, actions[:, None]).squeeze(1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        else:
            ls = log_std.clamp(-20.0, 2.0)
            z = (actions - out) / ls.exp()
            logp = -(0.5 * z * z + ls + 0.5 * _LOG_2PI).sum(-1)
            entropy = (ls + 0.5 + 0.5 * _LOG_2PI).sum(-1).expand(len(obs))
        ratio = (logp - torch.from_numpy(b["log_prob"])).exp()
        adv = torch.from_numpy(b["advantages"])
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - PPO_CLIP, 1 + PPO_CLIP)).mean()
        returns, old = torch.from_numpy(b["returns"]), torch.from_numpy(b["values"])
        unclipped = (value - returns) ** 2
        clipped = (old + (value - old).clamp(-PPO_CLIP, PPO_CLIP) - returns) ** 2
        v_loss = 0.5 * torch.max(unclipped, clipped).mean()
        loss = pg_loss + PPO_VF_COEF * v_loss - PPO_ENT_COEF * entropy.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, PPO_MAX_GRAD_NORM)
        opt.step()

    return update, lambda: [p.detach().numpy() for p in params]


def jax_ppo_update(policy: str, seed: int = 0) -> tuple[Callable[[dict], None], Callable]:
    """(update, parameters) of the same PPO update as one ``jax.jit`` function (Adam by hand)."""
    import jax
    import jax.numpy as jnp

    obs_dim, n, discrete = PPO_POLICIES[policy]
    w = ppo_weights(policy, seed)
    beta1, beta2 = 0.9, 0.999

    def mlp(ws, x):
        for i in range(0, len(ws), 2):
            x = x @ ws[i].T + ws[i + 1]
            if i < len(ws) - 2:
                x = jnp.tanh(x)
        return x

    def loss_fn(params, b):
        out = mlp(params["pi"], b["obs"])
        value = mlp(params["v"], b["obs"]).reshape(-1)
        if discrete:
            logp_all = jax.nn.log_softmax(out, -1)
            logp = jnp.take_along_axis(logp_all, b["actions"][:, None], 1)[:, 0]
            entropy = -(jnp.exp(logp_all) * logp_all).sum(-1)
        else:
            ls = jnp.clip(params["log_std"][0], -20.0, 2.0)
            z = (b["actions"] - out) / jnp.exp(ls)
            logp = -(0.5 * z * z + ls + 0.5 * _LOG_2PI).sum(-1)
            entropy = jnp.broadcast_to((ls + 0.5 + 0.5 * _LOG_2PI).sum(-1), logp.shape)
        ratio = jnp.exp(logp - b["log_prob"])
        adv = b["advantages"]
        adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
        pg_loss = jnp.maximum(-adv * ratio,
                              -adv * jnp.clip(ratio, 1 - PPO_CLIP, 1 + PPO_CLIP)).mean()
        unclipped = (value - b["returns"]) ** 2
        clipped = (b["values"] + jnp.clip(value - b["values"], -PPO_CLIP, PPO_CLIP)
                   - b["returns"]) ** 2
        v_loss = 0.5 * jnp.maximum(unclipped, clipped).mean()
        return pg_loss + PPO_VF_COEF * v_loss - PPO_ENT_COEF * entropy.mean()

    @jax.jit
    def step(params, m, v, t, b):
        grads = jax.grad(loss_fn)(params, b)
        leaves = jax.tree_util.tree_leaves(grads)
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in leaves))
        scale = jnp.minimum(1.0, PPO_MAX_GRAD_NORM / (norm + 1e-6))
        grads = jax.tree_util.tree_map(lambda g: g * scale, grads)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: beta1 * m + (1 - beta1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: beta2 * v + (1 - beta2) * g * g, v, grads)
        step_size = PPO_LR / (1 - beta1**t)
        root = jnp.sqrt(1 - beta2**t)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / root + PPO_ADAM_EPS), params, m, v)
        return params, m, v, t

    params = jax.tree_util.tree_map(jnp.asarray, w)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = [params, zeros, zeros, jnp.asarray(0.0, jnp.float32)]

    def update(b: dict) -> None:
        state[:] = step(*state, b)
        jax.block_until_ready(state[0])

    return update, lambda: [np.asarray(p) for part in ("pi", "v", "log_std")
                            for p in state[0][part]]


def jax_available() -> bool:
    return importlib.util.find_spec("jax") is not None


def bench_ppo(repeats: int, use_jax: bool | None = None, policies: list[str] | None = None,
              warmup: int = 10) -> list[dict]:
    """Median microseconds per PPO mini-batch update, per policy and implementation (``jax``
    is None when JAX is not installed or ``use_jax`` is False)."""
    use_jax = jax_available() if use_jax is None else use_jax
    rows = []
    with threadpool_limits(1):
        for policy in policies or list(PPO_POLICIES):
            impls = {"rlgrad": rlgrad_ppo_update(policy)[0],
                     "torch": torch_ppo_update(policy)[0]}
            if use_jax:
                impls["jax"] = jax_ppo_update(policy)[0]
            batch = make_ppo_batch(policy, np.random.default_rng(1))
            med = _interleaved_medians(impls, (batch,), repeats, warmup)
            rows.append({"policy": policy, "jax": None, "jax_cpu": None, **med})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 512, 4096])
    parser.add_argument("--ppo-repeats", type=int, default=300)
    parser.add_argument("--no-jax", action="store_true", help="leave out the JAX column")
    args = parser.parse_args(argv)
    rows = bench(args.batch_sizes, args.repeats)
    for clock, suffix in (("wall-clock", ""), ("CPU", "_cpu")):
        print(f"REINFORCE step, MLP 4-64-64-2, Adam: median {clock} time")
        print()
        print("| batch | rlgrad (us) | torch (us) | numpy by hand (us) | rlgrad / torch "
              "| rlgrad / numpy |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            us = [r[k + suffix] for k in ("rlgrad", "torch", "numpy")]
            print(f"| {r['batch']} | {us[0]:.0f} | {us[1]:.0f} | {us[2]:.0f} "
                  f"| {us[0] / us[1]:.2f}x | {us[0] / us[2]:.2f}x |")
        print()
    rows = bench_ppo(args.ppo_repeats, use_jax=False if args.no_jax else None)
    for clock, suffix in (("wall-clock", ""), ("CPU", "_cpu")):
        print(f"PPO mini-batch update (batch {PPO_BATCH}: policy + value, clipped losses, "
              f"entropy, grad-norm clip, Adam): median {clock} time")
        print()
        print("| policy | rlgrad (us) | torch (us) | jax.jit (us) | rlgrad / torch "
              "| rlgrad / jax |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            ours, torch_us, jax_us = (r[k + suffix] for k in ("rlgrad", "torch", "jax"))
            jax_col = "n/a" if jax_us is None else f"{jax_us:.0f}"
            jax_ratio = "n/a" if jax_us is None else f"{ours / jax_us:.2f}x"
            print(f"| {r['policy']} | {ours:.0f} | {torch_us:.0f} | {jax_col} "
                  f"| {ours / torch_us:.2f}x | {jax_ratio} |")
        print()


if __name__ == "__main__":
    main()
