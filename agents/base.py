"""The policy-gradient loop, written once: collect a batch, update, report.

A new agent subclasses :class:`Agent` and writes :meth:`Agent.loss` (and, if it learns more than
the policy, :meth:`Agent.setup` and :meth:`Agent.update`). Everything else — environments,
seeding, batching, returns, gradient steps with any optimizer from :mod:`rlgrad.optim`, metrics,
checkpoint state — is here.

Batches end at episode boundaries. Every batch starts by resetting all environments with a seed
drawn from the run's generator, collects at least ``steps_per_update`` steps, then lets running
episodes finish (an environment whose episode ends after the budget is reached goes idle).
So every training episode is complete and counted in the statistics, REINFORCE sees whole
Monte-Carlo returns, and the state of a run between two updates is just (parameters, optimizer
state, generator state, counters): a run resumed from a checkpoint continues exactly as the
uninterrupted run would have. Steps taken by idle environments are not used and not counted.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rlgrad import nn, optim
from rlgrad.checkpoint import rng_state, set_rng_state, validate_arrays
from rlgrad.distributions import Distribution
from rlgrad.envs import NonFiniteError, VecEnv, make_vec
from rlgrad.policies import make_policy
from rlgrad.returns import discounted_returns, normalize
from rlgrad.tensor import Tensor, no_grad

__all__ = ["Agent", "AgentConfig", "Batch", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1


def _help(text: str, **kw: Any) -> dict[str, Any]:
    return {"help": text, **kw}


@dataclass
class AgentConfig:
    """Hyperparameters of the policy-gradient agents; each field is a CLI option."""

    optimizer: str = field(default="adam", metadata=_help(
        "optimizer for the policy, by name: " + ", ".join(sorted(optim.OPTIMIZERS))))
    lr: float = field(default=1e-2, metadata=_help("learning rate of the policy's optimizer"))
    gamma: float = field(default=0.99, metadata=_help("discount factor, in [0, 1]"))
    num_envs: int = field(default=8, metadata=_help("environments stepped in parallel"))
    steps_per_update: int = field(default=4000, metadata=_help(
        "environment steps per batch (running episodes are then finished)"))
    episodes_per_update: int = field(default=0, metadata=_help(
        "if > 0, a batch is this many finished episodes (plus those still running then) "
        "instead of steps_per_update steps, capped at max_episode_tail steps if that is set"))
    hidden_sizes: tuple[int, ...] = field(default=(64, 64), metadata=_help(
        "hidden layer sizes of the policy (and value) network"))
    activation: str = field(default="tanh", metadata=_help("hidden activation: tanh or relu"))
    ent_coef: float = field(default=0.0, metadata=_help("weight of the entropy bonus"))
    max_grad_norm: float = field(default=0.0, metadata=_help(
        "clip the policy gradient to this global norm; 0 disables clipping"))
    normalize_advantages: bool = field(default=True, metadata=_help(
        "standardise the weights of grad log pi in each batch"))
    minibatch_size: int = field(default=0, metadata=_help(
        "policy steps on shuffled mini-batches of this size; 0 means one full-batch step"))
    update_epochs: int = field(default=1, metadata=_help("passes over the batch per update"))
    log_std_init: float = field(default=0.0, metadata=_help(
        "initial log standard deviation of Gaussian policies"))
    grad_variance_batches: int = field(default=0, metadata=_help(
        "measure the policy gradient's variance across this many disjoint mini-batches of "
        "each batch (diagnostics/grad_variance); 0 disables it"))
    max_episode_tail: int = field(default=0, metadata=_help(
        "extra steps allowed to finish running episodes after the budget; 0 means "
        "steps_per_update"))

    def validate(self) -> None:
        """Raise ValueError naming the first bad value and what was expected."""
        if self.optimizer not in optim.OPTIMIZERS:
            optim.make(self.optimizer, [])  # raises with the known names and a suggestion
        _positive("lr", self.lr)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        for name in ("num_envs", "steps_per_update", "update_epochs"):
            _positive_int(name, getattr(self, name))
        for name in ("minibatch_size", "max_episode_tail", "grad_variance_batches",
                     "episodes_per_update"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not self.hidden_sizes or any(int(h) <= 0 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        if self.activation not in nn.ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(nn.ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if self.ent_coef < 0 or self.max_grad_norm < 0:
            raise ValueError("ent_coef and max_grad_norm must be >= 0, got "
                             f"{self.ent_coef} and {self.max_grad_norm}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AgentConfig:
        """A config from field values as JSON, the CLI or a sweep give them: lists become
        tuples, ints become floats where the field is a float; an unknown field or a non-bool
        for a bool field is an error. Call ``validate()`` on the result."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(fields)}")
        kw = {}
        for key, value in d.items():
            default = fields[key].default
            if isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            elif isinstance(default, bool) and not isinstance(value, bool):
                raise TypeError(f"option {key!r} must be True or False, got {value!r}")
            elif isinstance(default, float) and isinstance(value, int) \
                    and not isinstance(value, bool):
                value = float(value)
            kw[key] = value
        return cls(**kw)


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, (int, float, np.number)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class Batch:
    """T vector steps of N environments. Shapes: ``(T, N)``, ``(T, N, obs_dim)``.

    Only ``active`` transitions are used; ``flat(x)`` picks them in time-major order, giving
    ``(B,)`` or ``(B, ...)`` arrays. The agent fills ``returns`` and ``advantages`` (flat).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    active: np.ndarray
    episodes: list[tuple[int, float, int]]  # (step at the end, return, length)
    returns: np.ndarray | None = None
    advantages: np.ndarray | None = None
    _flat: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return int(self.active.sum())

    def flat(self, x: np.ndarray) -> np.ndarray:
        """``x[active]``, computed once per array (losses over mini-batches ask again and
        again) and read-only, since every caller shares it."""
        hit = self._flat.get(id(x))
        if hit is None or hit[0] is not x:
            picked = x[self.active]
            picked.flags.writeable = False
            hit = self._flat[id(x)] = (x, picked)
        return hit[1]


class _StopRequested(Exception):
    """Raised inside collection when a stop was asked for (Ctrl-C): the batch is dropped."""


class Agent:
    """Base of the policy-gradient agents.

    Subclasses set ``name`` and ``config_class`` and write :meth:`loss`; see
    :class:`agents.Reinforce` for the smallest example.
    """

    name: ClassVar[str] = "agent"
    config_class: ClassVar[type[AgentConfig]] = AgentConfig

    def __init__(self, env_id: str, config: AgentConfig | None = None, seed: int = 0,
                 env: VecEnv | None = None, **env_kwargs: Any) -> None:
        self.config = self.config_class() if config is None else config
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                            f"got {type(self.config).__name__}")
        self.config.validate()
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.env_id = env_id
        self.env_kwargs = env_kwargs
        self.seed = int(seed)
        self.env = env if env is not None else make_vec(env_id, self.config.num_envs, seed=seed,
                                                         **env_kwargs)
        self.spaces = self.env.spaces
        self.rng = np.random.default_rng(seed)
        c = self.config
        self.policy = make_policy(
            self.spaces.discrete, self.spaces.obs_dim, self.spaces.action_dim,
            hidden_sizes=c.hidden_sizes, activation=c.activation, log_std_init=c.log_std_init,
            rng=self.rng)
        self.optimizer = optim.make(c.optimizer, self.policy.parameters(), lr=c.lr)
        self.global_step = 0
        self.num_updates = 0
        self.num_episodes = 0
        self.stop_requested = False
        self.setup()

    # ---- what subclasses write -------------------------------------------------------------
    def setup(self) -> None:
        """Build anything beyond the policy (a value network, its optimizer)."""

    def loss(self, batch: Batch, idx: np.ndarray | None = None) -> tuple[Tensor, dict[str, float]]:
        """The policy loss on the transitions ``idx`` of ``batch`` (all when None)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    def prepare(self, batch: Batch) -> None:
        """Fill ``batch.returns`` and ``batch.advantages`` (flat) before the update."""
        batch.returns = batch.flat(self.compute_returns(batch))
        adv = batch.returns
        batch.advantages = normalize(adv) if self.config.normalize_advantages else adv

    def bootstrap_values(self, batch: Batch) -> np.ndarray | None:
        """V(s_T) of cut-off episodes' final observations, ``(T, N)``; None bootstraps with 0."""
        return None

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def optimizers(self) -> dict[str, optim.Optimizer]:
        return {"policy": self.optimizer}

    # ---- acting --------------------------------------------------------------------------
    def distribution(self, obs: np.ndarray) -> Distribution:
        return self.policy(obs)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions for observations ``(N, obs_dim)``, sampled or the distribution's mode."""
        with no_grad():
            dist = self.distribution(obs)
        return dist.mode() if deterministic else dist.sample(self.rng)

    # ---- the loop ------------------------------------------------------------------------
    def compute_returns(self, batch: Batch) -> np.ndarray:
        """Discounted reward-to-go ``(T, N)``, bootstrapped where episodes were cut off."""
        return discounted_returns(batch.rewards, batch.terminated, batch.truncated,
                                  self.config.gamma, self.bootstrap_values(batch))

    def collect(self, budget: int, hard_cap: int, episodes: int = 0) -> Batch:
        """Run the policy from a fresh reset until ``budget`` steps are taken (or, with
        ``episodes`` > 0, that many episodes have finished) and the running episodes end, or
        ``hard_cap`` steps are reached (then the rest are cut off)."""
        episode_budget = episodes
        env, n = self.env, self.env.num_envs
        obs = env.reset(seed=int(self.rng.integers(2**31 - 1)))
        store: dict[str, list[np.ndarray]] = {k: [] for k in (
            "obs", "actions", "rewards", "terminated", "truncated", "final_obs", "active")}
        active = np.ones(n, dtype=bool)
        n_active = n
        episodes: list[tuple[int, float, int]] = []
        collected = 0
        while True:
            if self.stop_requested:
                raise _StopRequested
            if hard_cap - collected < n_active:
                late = np.flatnonzero(active)[hard_cap - collected:]
                self._cut(store, late, obs)
                active[late] = False
                n_active = int(active.sum())
                if not n_active:
                    break
            with no_grad():
                actions = self.distribution(obs).sample(self.rng)
            try:
                next_obs, rewards, terminated, truncated, final_obs = env.step(actions)
            except NonFiniteError as e:
                raise NonFiniteError(f"{e} (training step {self.global_step + collected})") from e
            store["obs"].append(obs)
            store["actions"].append(actions)
            store["rewards"].append(rewards)
            store["terminated"].append(terminated)
            store["truncated"].append(truncated)
            store["final_obs"].append(final_obs)
            store["active"].append(active.copy())
            collected += n_active
            finished = env.finished_envs
            if len(finished):
                counted = active[finished]  # idle environments' episodes are not ours
                step = self.global_step + collected
                episodes.extend((step, ret, length) for ret, length in zip(
                    env.finished_returns[counted].tolist(),
                    env.finished_lengths[counted].tolist()))
                done_enough = (len(episodes) >= episode_budget if episode_budget
                               else collected >= budget)
                if done_enough:
                    active[env.finished_envs] = False
                    n_active = int(active.sum())
                    if not n_active:
                        break
            if collected >= hard_cap:
                self._cut(store, np.flatnonzero(active), next_obs)
                break
            obs = next_obs
        batch = Batch(**{k: np.stack(v) for k, v in store.items()}, episodes=episodes)
        return batch

    @staticmethod
    def _cut(store: dict[str, list[np.ndarray]], envs: np.ndarray, obs: np.ndarray) -> None:
        """Mark the last transition of ``envs`` as truncated, with ``obs`` as final observation."""
        if len(envs) and store["obs"]:
            store["truncated"][-1] = store["truncated"][-1].copy()
            store["final_obs"][-1] = store["final_obs"][-1].copy()
            cut = envs[~(store["terminated"][-1][envs] | store["truncated"][-1][envs])]
            store["truncated"][-1][cut] = True
            store["final_obs"][-1][cut] = obs[cut]

    def policy_step(self, loss: Tensor, optimizer: optim.Optimizer,
                    params: list[nn.Parameter], max_grad_norm: float) -> float:
        """One gradient step on ``loss``; returns the gradient's global norm (before clipping).

        A non-finite loss or gradient raises before any parameter changes.
        """
        if not np.isfinite(loss.data).all():
            raise NonFiniteError(f"loss is {loss.item()} at update {self.num_updates}, "
                                 f"step {self.global_step}; parameters left unchanged")
        optimizer.zero_grad()
        loss.backward()
        norm = optim.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
        if not np.isfinite(norm):
            raise NonFiniteError(f"gradient norm is {norm} at update {self.num_updates}, "
                                 f"step {self.global_step}; parameters left unchanged")
        # the loss's graph is kept, so it can serve as the closure second-order methods need
        optimizer.step(lambda: loss)
        return float(norm)

    def update(self, batch: Batch) -> dict[str, float]:
        """Policy gradient steps: one on the whole batch, or epochs of shuffled mini-batches."""
        c = self.config
        params = list(self.policy.parameters())
        size = batch.size
        mb = c.minibatch_size if 0 < c.minibatch_size < size else size
        totals: dict[str, list[float]] = {}
        if c.grad_variance_batches > 1:
            for k, v in self.gradient_variance(batch, c.grad_variance_batches).items():
                totals[k] = [v]
        for _ in range(c.update_epochs):
            order = self.rng.permutation(size) if mb < size else None
            for start in range(0, size, mb):
                idx = None if order is None else order[start:start + mb]
                loss, metrics = self.loss(batch, idx)
                metrics["grad_norm"] = self.policy_step(loss, self.optimizer, params,
                                                        c.max_grad_norm)
                for k, v in metrics.items():
                    totals.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in totals.items()}

    def gradient_variance(self, batch: Batch, k: int) -> dict[str, float]:
        r"""The spread of the policy-gradient estimate across ``k`` disjoint random mini-batches
        of the same batch (the same policy), without changing any parameter.

        .. math:: \mathrm{Var} = \textstyle\sum_j \widehat{\mathrm{Var}}_i[g_{ij}], \qquad
                  \mathrm{relative} = \mathrm{Var} / \lVert \bar g \rVert^2

        ``grad_variance`` is the trace of the covariance of the mini-batch gradients g_i;
        ``grad_relative_variance`` divides it by the squared norm of their mean, which does not
        depend on the scale of the weights (raw returns vs normalised advantages).
        """
        from rlgrad.autograd import grad

        params = list(self.policy.parameters())
        order = self.rng.permutation(batch.size)
        grads = []
        for idx in np.array_split(order, k):
            loss, _ = self.loss(batch, idx)
            gs = grad(loss, params, allow_unused=True)
            grads.append(np.concatenate([np.zeros(p.size) if g is None else g.data.ravel()
                                         for g, p in zip(gs, params)]))
        g = np.stack(grads).astype(np.float64)
        var = float(g.var(axis=0, ddof=1).sum())
        mean_sq = float(np.square(g.mean(axis=0)).sum())
        return {"grad_variance": var,
                "grad_relative_variance": var / mean_sq if mean_sq > 0 else float("nan")}

    def learn(self, total_steps: int,
              callback: Callable[[Agent, dict[str, Any]], None] | None = None) -> Agent:
        """Train until ``global_step`` reaches ``total_steps`` (a budget that is never exceeded).

        After each update ``callback(agent, info)`` gets the metrics, the finished episodes and
        the steps per second. A stop request (``agent.stop_requested = True``, e.g. from a
        SIGINT handler) drops the batch being collected and returns with the agent exactly as
        after its last completed update.
        """
        _positive_int("total_steps", total_steps)
        c = self.config
        tail = c.max_episode_tail or c.steps_per_update
        while self.global_step < total_steps and not self.stop_requested:
            boundary_rng = rng_state(self.rng)
            remaining = total_steps - self.global_step
            start = time.perf_counter()
            try:
                if c.episodes_per_update:  # capped only by max_episode_tail, if set
                    cap = min(c.max_episode_tail or remaining, remaining)
                    batch = self.collect(remaining, cap, episodes=c.episodes_per_update)
                else:
                    batch = self.collect(min(c.steps_per_update, remaining),
                                         min(c.steps_per_update + tail, remaining))
            except _StopRequested:
                set_rng_state(self.rng, boundary_rng)
                break
            self.prepare(batch)
            metrics = self.update(batch)
            self.global_step += batch.size
            self.num_updates += 1
            self.num_episodes += len(batch.episodes)
            seconds = time.perf_counter() - start
            if callback is not None:
                callback(self, {"metrics": metrics, "episodes": batch.episodes,
                                "steps": batch.size, "seconds": seconds,
                                "learning_rate": self.optimizer.param_groups[0]["lr"]})
        return self

    # ---- evaluation ----------------------------------------------------------------------
    def evaluate(self, episodes: int = 10, seed: int | None = None, deterministic: bool = True,
                 env: VecEnv | None = None) -> np.ndarray:
        """Undiscounted returns of ``episodes`` episodes, one per environment, ``(episodes,)``.

        Deterministic by default (the distribution's mode). Uses its own environments and
        generator, so training is not disturbed.
        """
        _positive_int("episodes", episodes)
        seed = self.seed + 1_000_003 if seed is None else seed
        own = env is None
        env = make_vec(self.env_id, episodes, seed=seed, **self.env_kwargs) if own else env
        rng = np.random.default_rng(seed)
        try:
            obs = env.reset(seed=seed)
            returns = np.zeros(episodes)
            running = np.ones(episodes, dtype=bool)
            while running.any():
                with no_grad():
                    dist = self.distribution(obs)
                actions = dist.mode() if deterministic else dist.sample(rng)
                obs, rewards, terminated, truncated, _ = env.step(actions)
                returns += rewards * running
                running &= ~(terminated | truncated)
        finally:
            if own:
                env.close()
        return returns

    # ---- checkpoint state ----------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, metadata) describing the agent between two updates; JSON + npz friendly."""
        arrays: dict[str, np.ndarray] = {}
        for mname, module in self.modules().items():
            for pname, value in module.state_dict().items():
                arrays[f"{mname}.{pname}"] = value
        optim_meta = {}
        for oname, opt in self.optimizers().items():
            o_arrays, o_meta = optim.flatten_state_dict(opt.state_dict())
            for k, v in o_arrays.items():
                arrays[f"optim.{oname}.{k}"] = v
            optim_meta[oname] = o_meta
        meta = {
            "format": CHECKPOINT_FORMAT,
            "agent": self.name,
            "agent_path": f"{type(self).__module__}:{type(self).__qualname__}",
            "env_id": self.env_id,
            "seed": self.seed,
            "config": self.config.to_dict(),
            "spaces": self.spaces.to_dict(),
            "global_step": self.global_step,
            "num_updates": self.num_updates,
            "num_episodes": self.num_episodes,
            "rng": rng_state(self.rng),
            "optimizers": optim_meta,
        }
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; everything is checked before anything is
        assigned, so on error (ValueError) the agent is untouched."""
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {meta.get('format')!r} is not supported "
                             f"(expected {CHECKPOINT_FORMAT})")
        if meta.get("agent") != self.name:
            raise ValueError(f"checkpoint is of agent {meta.get('agent')!r}, not {self.name!r}")
        if meta.get("spaces") != json.loads(json.dumps(self.spaces.to_dict())):
            raise ValueError(f"checkpoint spaces {meta.get('spaces')} do not match the "
                             f"environment's {self.spaces.to_dict()}")
        expected = {f"{m}.{p}": v.shape for m, mod in self.modules().items()
                    for p, v in mod.state_dict().items()}
        validate_arrays(expected, {k: v for k, v in arrays.items() if not k.startswith("optim.")})
        opt_states = {}
        for oname, opt in self.optimizers().items():
            prefix = f"optim.{oname}."
            o_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            if oname not in meta.get("optimizers", {}):
                raise ValueError(f"checkpoint has no state for optimizer {oname!r}")
            opt_states[oname] = optim.unflatten_state_dict(o_arrays, meta["optimizers"][oname])
            _check_optimizer_state(opt, opt_states[oname])
        probe_rng = np.random.default_rng()
        set_rng_state(probe_rng, meta["rng"])
        # validated: now assign
        for mname, module in self.modules().items():
            prefix = f"{mname}."
            module.load_state_dict({k[len(prefix):]: v for k, v in arrays.items()
                                    if k.startswith(prefix) and not k.startswith("optim.")})
        for oname, opt in self.optimizers().items():
            opt.load_state_dict(opt_states[oname])
        set_rng_state(self.rng, meta["rng"])
        self.global_step = int(meta["global_step"])
        self.num_updates = int(meta["num_updates"])
        self.num_episodes = int(meta["num_episodes"])

    def close(self) -> None:
        self.env.close()


def _check_optimizer_state(opt: optim.Optimizer, state: dict[str, Any]) -> None:
    groups = state.get("param_groups", [])
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"optimizer state has {len(groups)} parameter groups, expected "
                         f"{len(opt.param_groups)}")
    params = [p for g in opt.param_groups for p in g["params"]]
    for index, s in state.get("state", {}).items():
        i = int(index)
        if not 0 <= i < len(params):
            raise ValueError(f"optimizer state refers to parameter {i} of {len(params)}")
        for key, value in s.items():
            arr = np.asarray(value)
            if arr.ndim and arr.shape != params[i].shape:
                raise ValueError(f"optimizer state {key!r} of parameter {i} has shape "
                                 f"{arr.shape}, expected {params[i].shape}")
