"""Training throughput against the peers, in environment steps per second, side by side.

Suites (``--suite``):

- ``reinforce`` (default): CartPole-v1, rlgrad's REINFORCE with baseline against the same
  algorithm in plain PyTorch and against Stable-Baselines3 PPO (its defaults).
- ``ppo-hopper``: Hopper-v5 with the MuJoCo defaults (2048-step rollouts of one environment,
  mini-batches of 64, 10 epochs, observation and reward normalisation), rlgrad's PPO against
  SB3's PPO with the same settings (``VecNormalize``). Target: rlgrad >= 4x SB3.
- ``ppo-cartpole``: CartPole-v1 with CleanRL ``ppo.py``'s settings (4 envs x 128 steps, 4 epochs,
  4 mini-batches), rlgrad's PPO against SB3's PPO with the same settings.
- ``trpo-hopper``: Hopper-v5, rlgrad's TRPO against sb3-contrib's TRPO with the same settings
  (its defaults: 2048 steps, CG 15, damping 0.1, max KL 0.01, 10 critic updates of 128).

All three train in this process, one after another, in a rotating order over a few repetitions,
with one thread each; the table gives the median run. Each run is timed around its training call
only (construction is excluded) and repeats the same seed, so every repetition does the same work
and the spread is the machine's noise. Steps per second of wall time are the measure; steps per
second of this process's CPU time are shown next to them because on a machine shared with other
work they barely move when the process has to wait for a core. Targets: rlgrad at least 2x the
PyTorch REINFORCE and 15x SB3 PPO.

    python -m benchmarks.bench_agents [--suite reinforce] [--steps 100000] [--sb3-steps 20000]
        [--repeats 3] [--seed 0]
    python -m benchmarks.bench_agents --suite ppo-hopper --steps 20480 --sb3-steps 20480
"""

from __future__ import annotations

import os

# one thread each: set before numpy and torch load their thread pools
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from torch.distributions import Categorical  # noqa: E402

from agents import ReinforceBaseline, ReinforceBaselineConfig  # noqa: E402

torch.set_num_threads(1)

ENV_ID = "CartPole-v1"
RLGRAD, TORCH, SB3 = "rlgrad ReinforceBaseline", "PyTorch REINFORCE + baseline", "SB3 PPO"
# rlgrad / other, as stated in the issue
TARGETS = {TORCH: 2.0, SB3: 15.0}
# the final training return is the mean over this many last training episodes (a batch cut short
# by the step budget may end none)
LAST_EPISODES = 20


def final_return(episode_returns: list[float]) -> float:
    return float(np.mean(episode_returns[-LAST_EPISODES:]))


@dataclass
class Run:
    """One timed training run: ``steps`` environment steps used for learning in ``seconds`` of
    wall time and ``cpu_seconds`` of process time."""

    steps: int
    seconds: float
    cpu_seconds: float
    final_return: float  # mean undiscounted return of the last LAST_EPISODES training episodes

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    @property
    def steps_per_cpu_second(self) -> float:
        return self.steps / self.cpu_seconds


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall) and ``t.cpu_seconds`` (process)."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu


# ---- 1. rlgrad ---------------------------------------------------------------------------------
def run_rlgrad(steps: int, seed: int) -> Run:
    """``agents.ReinforceBaseline`` with its defaults."""
    agent = ReinforceBaseline(ENV_ID, seed=seed)
    returns: list[float] = []

    def keep_returns(agent, info):
        returns.extend(ret for _, ret, _ in info["episodes"])

    with Timer() as t:
        agent.learn(steps, callback=keep_returns)
    agent.close()
    return Run(agent.global_step, t.seconds, t.cpu_seconds, final_return(returns))


# ---- 2. the same algorithm in plain PyTorch ----------------------------------------------------
def mlp(sizes) -> torch.nn.Sequential:
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


class TorchReinforce:
    """REINFORCE with a value baseline, batched like ``agents.ReinforceBaseline``.

    A batch starts from a seeded reset, runs until ``budget`` steps are collected and then lets
    the running episodes finish (an environment whose episode ends after that goes idle), so both
    implementations make about as many updates per step and see whole Monte-Carlo returns;
    steps taken by idle environments are not counted, as in rlgrad. Gymnasium's
    native CartPole resets an environment in the step *after* its episode ended (``NEXT_STEP``
    autoreset); that step's transition is not a real one and is masked out.
    """

    def __init__(self, seed: int, c: ReinforceBaselineConfig) -> None:
        torch.manual_seed(seed)
        self.c, self.rng = c, np.random.default_rng(seed)
        self.env = gym.make_vec(ENV_ID, num_envs=c.num_envs,
                                vectorization_mode="vector_entry_point")
        sizes = [self.env.single_observation_space.shape[0], *c.hidden_sizes]
        self.policy = mlp([*sizes, int(self.env.single_action_space.n)])
        self.value = mlp([*sizes, 1])
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=c.lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=c.value_lr)
        self.global_step, self.episode_returns = 0, []

    def learn(self, total_steps: int) -> None:
        while self.global_step < total_steps:
            self.update(*self.collect(min(self.c.steps_per_update, total_steps - self.global_step)))

    def collect(self, budget: int):
        """Arrays ``(T + 1, N, 4)`` observations, ``(T, N)`` actions, rewards, terminated,
        truncated and the mask of real transitions."""
        n = self.c.num_envs
        obs, _ = self.env.reset(seed=int(self.rng.integers(2**31 - 1)))
        buf = {k: [] for k in ("obs", "act", "rew", "term", "trunc", "valid")}
        active, resetting = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
        running, count = np.zeros(n), 0
        while active.any():
            with torch.no_grad():
                action = Categorical(logits=self.policy(torch.from_numpy(obs))).sample().numpy()
            next_obs, rew, term, trunc, _ = self.env.step(action)
            valid = active & ~resetting
            for k, v in zip(buf, (obs, action, rew, term, trunc, valid)):
                buf[k].append(v)
            count += int(valid.sum())
            done = term | trunc
            running += rew
            self.episode_returns += running[done & valid].tolist()
            running[done] = 0.0
            resetting = done
            if count >= budget:
                active &= ~done
            obs = next_obs
        buf["obs"].append(obs)
        return [np.stack(v) for v in buf.values()]

    def update(self, obs, act, rew, term, trunc, valid) -> None:
        c = self.c
        # reward-to-go, bootstrapped with V(s_T) where the time limit cut an episode off
        boot = np.zeros(rew.shape, dtype=np.float32)
        cut = trunc & ~term & valid
        if cut.any():
            with torch.no_grad():
                boot[cut] = self.value(torch.from_numpy(obs[1:][cut])).squeeze(-1).numpy()
        ret, g = np.zeros(rew.shape, dtype=np.float32), np.zeros(rew.shape[1], dtype=np.float32)
        for t in reversed(range(len(rew))):
            g = rew[t] + c.gamma * np.where(term[t] | trunc[t], boot[t], g)
            ret[t] = g
        obs_t = torch.from_numpy(obs[:-1][valid])
        act_t, ret_t = torch.from_numpy(act[valid]), torch.from_numpy(ret[valid])
        with torch.no_grad():
            adv = ret_t - self.value(obs_t).squeeze(-1)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        policy_loss = -(Categorical(logits=self.policy(obs_t)).log_prob(act_t) * adv).mean()
        self.policy_opt.zero_grad()
        policy_loss.backward()
        self.policy_opt.step()
        for _ in range(c.value_steps):
            value_loss = ((self.value(obs_t).squeeze(-1) - ret_t) ** 2).mean()
            self.value_opt.zero_grad()
            value_loss.backward()
            self.value_opt.step()
        self.global_step += int(valid.sum())


def run_torch(steps: int, seed: int) -> Run:
    """:class:`TorchReinforce` with rlgrad's default hyperparameters."""
    algo = TorchReinforce(seed, ReinforceBaselineConfig())
    with Timer() as t:
        algo.learn(steps)
    algo.env.close()
    return Run(algo.global_step, t.seconds, t.cpu_seconds, final_return(algo.episode_returns))


# ---- 3. Stable-Baselines3 PPO ------------------------------------------------------------------
def run_sb3(steps: int, seed: int) -> Run:
    """SB3 PPO with its defaults. ``learn`` rounds up to whole rollouts of 2048 steps, so the
    steps are SB3's own count; the returns come from its buffer of the last 100 episodes."""
    model = PPO("MlpPolicy", ENV_ID, seed=seed, device="cpu")
    with Timer() as t:
        model.learn(steps)
    model.get_env().close()
    returns = [info["r"] for info in model.ep_info_buffer]
    return Run(model.num_timesteps, t.seconds, t.cpu_seconds, final_return(returns))


# ---- 4. PPO and TRPO against SB3 / sb3-contrib with the same settings ---------------------------
PPO_HOPPER = dict(n_steps=2048, batch_size=64, n_epochs=10, learning_rate=3e-4, gamma=0.99,
                  gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)
PPO_CARTPOLE = dict(n_steps=128, batch_size=128, n_epochs=4, learning_rate=2.5e-4, gamma=0.99,
                    gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5)


def _sb3_run(model_fn, steps: int) -> Run:
    model = model_fn()
    with Timer() as t:
        model.learn(steps)
    returns = [info["r"] for info in model.ep_info_buffer]
    model.get_env().close()
    return Run(model.num_timesteps, t.seconds, t.cpu_seconds, final_return(returns or [0.0]))


def _rlgrad_run(agent_fn, steps: int) -> Run:
    agent = agent_fn()
    returns: list[float] = []
    with Timer() as t:
        agent.learn(steps, lambda a, info: returns.extend(r for _, r, _ in info["episodes"]))
    agent.close()
    return Run(agent.global_step, t.seconds, t.cpu_seconds, final_return(returns or [0.0]))


def ppo_hopper_jobs(seed: int) -> list:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from agents import PPO as RlgradPPO

    def sb3():
        env = VecNormalize(make_vec_env("Hopper-v5", n_envs=1, seed=seed), gamma=0.99)
        return PPO("MlpPolicy", env, seed=seed, device="cpu", **PPO_HOPPER)

    return [("rlgrad PPO", lambda n: _rlgrad_run(lambda: RlgradPPO("Hopper-v5", seed=seed), n)),
            ("SB3 PPO", lambda n: _sb3_run(sb3, n))]


def ppo_cartpole_jobs(seed: int) -> list:
    from stable_baselines3.common.env_util import make_vec_env

    from agents import PPO as RlgradPPO

    def sb3():
        env = make_vec_env("CartPole-v1", n_envs=4, seed=seed)
        return PPO("MlpPolicy", env, seed=seed, device="cpu", **PPO_CARTPOLE)

    return [("rlgrad PPO", lambda n: _rlgrad_run(lambda: RlgradPPO("CartPole-v1", seed=seed), n)),
            ("SB3 PPO", lambda n: _sb3_run(sb3, n))]


def trpo_hopper_jobs(seed: int) -> list:
    from sb3_contrib import TRPO as SB3TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from agents import AGENTS

    def sb3():
        env = VecNormalize(make_vec_env("Hopper-v5", n_envs=1, seed=seed), gamma=0.99)
        return SB3TRPO("MlpPolicy", env, seed=seed, device="cpu")

    return [("rlgrad TRPO", lambda n: _rlgrad_run(lambda: AGENTS["trpo"]("Hopper-v5", seed=seed),
                                                   n)),
            ("sb3-contrib TRPO", lambda n: _sb3_run(sb3, n))]


SUITES = {"ppo-hopper": ppo_hopper_jobs, "ppo-cartpole": ppo_cartpole_jobs,
          "trpo-hopper": trpo_hopper_jobs}
TARGETS_VS = {"ppo-hopper": 4.0, "trpo-hopper": 4.0}


def bench_pair(suite: str, steps: int, repeats: int, seed: int) -> str:
    """Interleaved runs of rlgrad and the peer, rotating the order; a table of medians."""
    jobs = SUITES[suite](seed)
    runs: dict[str, list[Run]] = {name: [] for name, _ in jobs}
    for rep in range(repeats):
        for name, fn in (jobs if rep % 2 == 0 else jobs[::-1]):
            run = fn(steps)
            runs[name].append(run)
            print(f"repeat {rep + 1}/{repeats}  {name:<18} {run.steps:>8} steps "
                  f"{run.seconds:7.2f} s  {run.steps_per_second:8.0f} steps/s", flush=True)
    ours, peer = (name for name, _ in jobs)
    med = {k: statistics.median(r.steps_per_second for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r.steps_per_cpu_second for r in v) for k, v in runs.items()}
    ratio = med[ours] / med[peer]
    target = TARGETS_VS.get(suite)
    verdict = "" if target is None else f" (target >= {target:g}x: " \
        f"{'met' if ratio >= target else 'missed'})"
    return (f"| implementation | steps/s (median of {repeats}) | steps/s of CPU time |\n"
            f"|---|---:|---:|\n| {ours} | {med[ours]:.0f} | {cpu[ours]:.0f} |\n"
            f"| {peer} | {med[peer]:.0f} | {cpu[peer]:.0f} |\n\n"
            f"{ours} / {peer}: {ratio:.2f}x wall, {cpu[ours] / cpu[peer]:.2f}x CPU{verdict}")


# ---- the comparison ----------------------------------------------------------------------------
def bench(steps: int, sb3_steps: int, repeats: int, seed: int = 0,
          log: bool = False) -> dict[str, list[Run]]:
    """``repeats`` runs of each implementation, interleaved; the order rotates every repetition
    so slow drift of a shared machine does not always land on the same one."""
    jobs = [(RLGRAD, run_rlgrad, steps), (TORCH, run_torch, steps), (SB3, run_sb3, sb3_steps)]
    runs: dict[str, list[Run]] = {name: [] for name, _, _ in jobs}
    for rep in range(repeats):
        for name, fn, n in jobs[rep % 3:] + jobs[:rep % 3]:
            run = fn(n, seed)
            runs[name].append(run)
            if log:
                print(f"repeat {rep + 1}/{repeats}  {name:<29} {run.steps:>7} steps "
                      f"{run.seconds:6.2f} s  {run.steps_per_second:8.0f} steps/s  "
                      f"final return {run.final_return:6.1f}", flush=True)
    return runs


def table(runs: dict[str, list[Run]]) -> str:
    """Markdown: median steps/s of each implementation and rlgrad's ratio to it, the same on CPU
    time, every run's steps/s and final training return."""
    median = {name: statistics.median(r.steps_per_second for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r.steps_per_cpu_second for r in rs) for name, rs in runs.items()}
    lines = ["| implementation | steps/s (median) | ratio of rlgrad to it | target "
             "| steps/s of CPU time (median), ratio | steps/s of each run "
             f"| final training return of each run (last {LAST_EPISODES} episodes) |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for name, rs in runs.items():
        ratio = median[RLGRAD] / median[name]
        target = TARGETS.get(name)
        verdict = "" if target is None else \
            f">= {target:g}x ({'met' if ratio >= target else 'missed'})"
        each = ", ".join(f"{r.steps_per_second:.0f}" for r in rs)
        returns = ", ".join(f"{r.final_return:.1f}" for r in rs)
        lines.append(f"| {name} | {median[name]:.0f} | {ratio:.2f}x | {verdict} "
                     f"| {cpu[name]:.0f}, {cpu[RLGRAD] / cpu[name]:.2f}x | {each} | {returns} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="reinforce", choices=["reinforce", *SUITES],
                        help="which comparison (default: reinforce)")
    parser.add_argument("--steps", type=int, default=100_000,
                        help="environment steps per run of rlgrad and PyTorch")
    parser.add_argument("--sb3-steps", type=int, default=20_000,
                        help="environment steps per SB3 PPO run (rounded up to 2048s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each implementation")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run")
    args = parser.parse_args(argv)
    for name, value in (("steps", args.steps), ("sb3-steps", args.sb3_steps),
                        ("repeats", args.repeats)):
        if value <= 0:
            parser.error(f"--{name} must be a positive integer, got {value}")
    if args.suite != "reinforce":
        print(bench_pair(args.suite, args.steps, args.repeats, args.seed))
        return
    runs = bench(args.steps, args.sb3_steps, args.repeats, args.seed, log=True)
    print()
    print(table(runs))


if __name__ == "__main__":
    main()
