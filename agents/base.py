"""The agent base: configuration, hooks, and the one training loop every agent shares.

A new agent writes its config (a dataclass of fields declared with :func:`rlgrad.config.opt`),
and the hooks it needs::

    setup()             networks and optimizers (default: the policy and one optimizer)
    record(obs, dist, actions) -> extras     per-step arrays kept during collection
    prepare(batch)      advantages and returns into ``batch.data``
    loss(mb)            the scalar loss of one mini-batch and its metrics
    after_update(batch) a separate pass after the mini-batch loop (a value fit), optional

and never the loop. :meth:`Agent.learn` collects a batch with the agent's collector
(:class:`rlgrad.rollout.EpisodeCollector` by default, :class:`rlgrad.rollout.RolloutCollector`
for actor-critic agents), calls ``prepare``, then for every mini-batch of
``batch.minibatches(minibatch_size, update_epochs)`` takes one :meth:`Agent.gradient_step` on
``loss(mb)``: zero every optimizer the agent owns, back-propagate, clip the global gradient norm,
step every optimizer, and check that every parameter is still finite. A joint loss
``pg + vf_coef * v - ent_coef * H`` trains policy and value together this way.

Randomness: ``self.rng`` (seeded by ``seed``) shapes training: initial weights, environment
resets, actions, mini-batch order. Diagnostics draw from ``self.diagnostics_rng``, so turning one
on never changes the run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rlgrad import config as cfg
from rlgrad import nn, optim
from rlgrad.checkpoint import rng_state, set_rng_state
from rlgrad.distributions import Distribution, TanhNormal
from rlgrad.envs import NonFiniteError, VecEnv, make_vec
from rlgrad.normalize import ObservationNormalizer, RewardScaler
from rlgrad.policies import make_policy
from rlgrad.rollout import Batch, EpisodeCollector, Minibatch, StopCollection
from rlgrad.tensor import Tensor, no_grad
from rlgrad.threads import math_threads

__all__ = ["Agent", "AgentConfig", "EpisodeConfig", "Batch", "Minibatch", "LR_SCHEDULES",
           "log_prob", "schedule_factor"]

opt = cfg.opt
LR_SCHEDULES = ("constant", "linear", "cosine")


def optimizer_names() -> list[str]:
    """The registered optimizers' names (a config field's choices)."""
    return sorted(optim.OPTIMIZERS)


def _activations() -> list[str]:
    return sorted(nn.ACTIVATIONS)


@dataclass
class AgentConfig:
    """Hyperparameters every agent has; each field is a CLI option, a sweep axis and a
    ``config.json`` key, and declares its own constraint (checked by :meth:`validate`)."""

    optimizer: str = field(default="adam", metadata=opt(
        "optimizer, by name", choices=optimizer_names))
    lr: float = field(default=1e-2, metadata=opt(
        "learning rate of the policy's optimizer", gt=0, resume=True))
    optimizer_eps: float | None = field(default=None, metadata=opt(
        "eps of Adam/RMSprop-like optimizers; None for the optimizer's own default", gt=0))
    lr_schedule: str = field(default="constant", metadata=opt(
        "learning-rate schedule over the run's steps: constant, linear (to 0) or cosine",
        choices=LR_SCHEDULES, resume=True))
    warmup_steps: int = field(default=0, metadata=opt(
        "linear learning-rate warm-up over this many environment steps", ge=0, resume=True))
    gamma: float = field(default=0.99, metadata=opt("discount factor", ge=0, le=1))
    num_envs: int = field(default=8, metadata=opt("environments stepped in parallel", gt=0))
    hidden_sizes: tuple[int, ...] = field(default=(64, 64), metadata=opt(
        "hidden layer sizes of the policy (and value) network", gt=0))
    activation: str = field(default="tanh", metadata=opt(
        "hidden activation", choices=_activations))
    ent_coef: float = field(default=0.0, metadata=opt(
        "weight of the entropy bonus", ge=0, resume=True))
    max_grad_norm: float = field(default=0.0, metadata=opt(
        "clip the global gradient norm to this; 0 disables clipping", ge=0, resume=True))
    normalize_advantages: bool = field(default=True, metadata=opt(
        "standardise the advantages (per batch, or per mini-batch for PPO)"))
    minibatch_size: int = field(default=0, metadata=opt(
        "gradient steps on shuffled mini-batches of this size; 0 means one full-batch step",
        ge=0))
    update_epochs: int = field(default=1, metadata=opt("passes over the batch per update", gt=0))
    log_std_init: float = field(default=0.0, metadata=opt(
        "initial log standard deviation of Gaussian policies"))
    normalize_obs: bool = field(default=False, metadata=opt(
        "running observation normalisation (Welford), clipped to +-10"))
    normalize_reward: bool = field(default=False, metadata=opt(
        "divide rewards by the running std of the discounted return, clipped to +-10"))
    grad_variance_batches: int = field(default=0, metadata=opt(
        "measure the policy gradient's variance across this many disjoint mini-batches of "
        "each batch (diagnostics/grad_variance); 0 disables it", ge=0, resume=True))
    curvature_every: int = field(default=0, metadata=opt(
        "every this many updates, measure the policy loss's curvature before the update "
        "(curvature/*: Hessian extreme eigenvalues, trace, top Fisher eigenvalue, gradient "
        "noise scale); 0 disables it", ge=0, resume=True))

    def validate(self) -> None:
        """Raise ValueError/TypeError naming the first bad value and what was expected."""
        cfg.validate(self)
        self.check()

    def check(self) -> None:
        """Constraints between fields; subclasses extend it."""

    def resolve(self, discrete: bool) -> AgentConfig:
        """This config with every field left None for "the action space's default" filled in
        (PPO's defaults differ between discrete and Box actions)."""
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AgentConfig:
        """A config from field values as JSON, a config file, the CLI or a sweep give them:
        lists become tuples, ints become floats where the field is a float; an unknown field is
        an error naming the nearest known one. Call ``validate()`` on the result."""
        kinds = cfg.field_kinds(cls)
        unknown = sorted(set(d) - set(kinds))
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r} for {cls.__name__}"
                             f"{cfg.suggest(unknown[0], list(kinds))}")
        kw = {}
        for key, value in d.items():
            kind, _ = kinds[key]
            if kind == "ints" and isinstance(value, list):
                value = tuple(value)
            elif kind == "float" and isinstance(value, int) and not isinstance(value, bool):
                try:
                    value = float(value)
                except OverflowError:  # too large for a float: validate() says so
                    pass
            kw[key] = value
        return cls(**kw)


@dataclass
class EpisodeConfig(AgentConfig):
    """Batches of whole episodes (REINFORCE): the budget of one batch."""

    steps_per_update: int = field(default=4000, metadata=opt(
        "environment steps per batch (running episodes are then finished)", gt=0))
    episodes_per_update: int = field(default=0, metadata=opt(
        "if > 0, a batch is this many finished episodes (plus those still running then) "
        "instead of steps_per_update steps, capped at max_episode_tail steps if that is set",
        ge=0))
    max_episode_tail: int = field(default=0, metadata=opt(
        "extra steps allowed to finish running episodes after the budget; 0 means "
        "steps_per_update", ge=0))

    def check(self) -> None:
        super().check()
        if not self.episodes_per_update and self.num_envs > self.steps_per_update:
            raise ValueError(f"num_envs ({self.num_envs}) is larger than steps_per_update "
                             f"({self.steps_per_update}): every batch would be one step")


class Agent:
    """Base of the policy-gradient agents.

    ``Agent(env, config=None, seed=0, **options)``: ``env`` is a Gymnasium id or a
    :class:`rlgrad.envs.VecEnv`; options are config fields (``lr=3e-4``) applied over
    ``config`` (or the defaults). Subclasses set ``name``, ``config_class`` and ``collector``
    and write the hooks; see :class:`agents.Reinforce` for the smallest one.
    """

    name: ClassVar[str] = "agent"
    config_class: ClassVar[type[AgentConfig]] = EpisodeConfig
    collector: ClassVar[type] = EpisodeCollector

    def __init__(self, env: str | VecEnv, config: AgentConfig | None = None, seed: int = 0,
                 *, env_kwargs: dict[str, Any] | None = None, threads: int | None = 1,
                 **options: Any) -> None:
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        if options:
            config = type(config).from_dict({**_given(config), **options})
        cfg.validate(config)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self.threads = threads
        self.env_kwargs = dict(env_kwargs or {})
        if isinstance(env, VecEnv):
            self.env, self.env_id = env, env.env.spec.id if env.env.spec else "custom"
        else:
            self.env_id = env
            self.env = make_vec(env, config.resolve(_discrete(env, self.env_kwargs)).num_envs,
                                seed=self.seed, **self.env_kwargs)
        self.spaces = self.env.spaces
        self.config = config.resolve(self.spaces.discrete)
        self.config.validate()
        if self.config.num_envs != self.env.num_envs:
            raise ValueError(f"config.num_envs is {self.config.num_envs}, the environment has "
                             f"{self.env.num_envs}")
        self.rng = np.random.default_rng(self.seed)
        self.diagnostics_rng = np.random.default_rng([self.seed, 1])
        self.global_step = 0
        self.num_updates = 0
        self.num_episodes = 0
        self.stop_requested = False
        self._schedule_total = 0
        c = self.config
        self.obs_normalizer = ObservationNormalizer(self.spaces.obs_dim) if c.normalize_obs \
            else None
        self.reward_scaler = RewardScaler(self.env.num_envs, c.gamma) if c.normalize_reward \
            else None
        self.setup()
        # the schedule is a LambdaLR per optimizer, stepped to the environment step before
        # each update: lr = base lr * schedule_factor(step)
        self.lr_schedulers = {
            k: optim.lr_scheduler.LambdaLR(o, self._lr_factor)
            for k, o in self.optimizers().items()}
        self.collection = self.collector.from_config(
            self.env, self.rng, c, normalize=self._normalize_for_collection,
            scale_rewards=None if self.reward_scaler is None else self.reward_scaler)
        self.collection.stop_requested = lambda: self.stop_requested

    # ---- what subclasses write -------------------------------------------------------------
    def setup(self) -> None:
        """Build the networks and optimizers. Default: the policy and its optimizer."""
        self.policy = self.make_policy()
        self.optimizer = self.make_optimizer(self.policy.parameters(), self.config.lr)

    def record(self, obs: np.ndarray, dist: Distribution, actions: np.ndarray,
               pre_tanh: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-step arrays to keep with the batch (called under no_grad during collection);
        ``pre_tanh`` is the Gaussian sample before squashing, for a squashed policy."""
        return {}

    def prepare(self, batch: Batch) -> None:
        """Fill ``batch.data`` with flat ``(B,)`` arrays the loss reads (advantages, ...)."""

    def loss(self, mb: Minibatch) -> tuple[Tensor, dict[str, float]]:
        """The scalar loss of one mini-batch and its metrics."""
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    def after_update(self, batch: Batch) -> dict[str, float]:
        """A pass after the mini-batch loop (e.g. a separate value fit); returns metrics."""
        return {}

    def stop_epochs(self, metrics: dict[str, float]) -> bool:
        """Called after each epoch's last mini-batch step: True ends the update early."""
        return False

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy}

    def optimizers(self) -> dict[str, optim.Optimizer]:
        return {"policy": self.optimizer}

    # ---- building blocks -----------------------------------------------------------------
    def make_policy(self, output_gain: float = 0.01) -> nn.Module:
        c = self.config
        return make_policy(self.spaces.discrete, self.spaces.obs_dim, self.spaces.action_dim,
                           hidden_sizes=c.hidden_sizes, activation=c.activation,
                           log_std_init=c.log_std_init, rng=self.rng)

    def make_optimizer(self, params: Any, lr: float, name: str | None = None
                       ) -> optim.Optimizer:
        kw = {} if self.config.optimizer_eps is None else {"eps": self.config.optimizer_eps}
        return optim.make(name or self.config.optimizer, list(params), lr=lr, **kw)

    def distribution(self, obs: np.ndarray) -> Distribution:
        return self.policy(obs)

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        """Observations as the policy sees them: normalised with the frozen statistics."""
        obs = np.asarray(obs)
        if self.obs_normalizer is None:
            return obs
        return self.obs_normalizer(obs, update=False)

    def _normalize_for_collection(self, obs: np.ndarray, update: bool) -> np.ndarray:
        if self.obs_normalizer is None:
            return obs
        return self.obs_normalizer(obs, update=update)

    def collect_step(self, obs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions for observations ``(N, obs_dim)`` during collection, and the per-step extras
        to keep: ``pre_tanh`` for a squashed Gaussian (so log-probabilities of the stored
        actions are exact), plus what :meth:`record` returns."""
        with no_grad():
            dist = self.distribution(obs)
            if isinstance(dist, TanhNormal):
                actions, pre_tanh = dist.sample_with_pre_tanh(self.rng)
                extras = {"pre_tanh": pre_tanh}
            else:
                actions, extras = dist.sample(self.rng), {}
            extras.update(self.record(obs, dist, actions, extras.get("pre_tanh")))
        return actions, extras

    # ---- acting --------------------------------------------------------------------------
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions for already-normalised observations ``(N, obs_dim)``: sampled from the
        training generator, or the distribution's mode."""
        with no_grad():
            dist = self.distribution(obs)
        return dist.mode() if deterministic else dist.sample(self.rng)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, None]:
        """SB3's ``predict``: actions for one raw observation ``(obs_dim,)`` or a batch
        ``(B, obs_dim)``, with the saved (frozen) normalisation; Box actions clipped to the
        bounds. Returns ``(actions, None)`` (no recurrent state)."""
        obs = np.asarray(observation, dtype=np.float64)
        single = obs.ndim == 1
        if obs.shape[-1:] != (self.spaces.obs_dim,) or obs.ndim not in (1, 2):
            raise ValueError(f"observation has shape {obs.shape}, expected "
                             f"({self.spaces.obs_dim},) or (B, {self.spaces.obs_dim})")
        if not np.isfinite(obs).all():
            raise ValueError("observation contains nan or inf")
        obs = self.normalize_obs(obs[None] if single else obs).astype(np.float32)
        rng = np.random.default_rng() if not deterministic else None
        with no_grad():
            dist = self.distribution(obs)
        actions = dist.mode() if deterministic else dist.sample(rng)
        if not self.spaces.discrete:
            actions = np.clip(actions, self.spaces.action_low, self.spaces.action_high)
        return (actions[0] if single else actions), None

    # ---- the loop ------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: Callable[[Agent, dict[str, Any]], Any]
              | None = None, progress_bar: bool = False, reset_num_timesteps: bool = True
              ) -> Agent:
        """Train for ``total_steps`` environment steps (a budget never exceeded), as SB3 does:
        ``reset_num_timesteps=True`` starts counting (and the learning-rate schedule) from 0;
        False continues from ``global_step``, so the run ends at ``global_step + total_steps``.

        After each update ``callback(agent, info)`` gets ``info`` with ``metrics`` (the update's
        mean losses and diagnostics), ``episodes`` (``(step, return, length)`` of the episodes
        that ended), ``steps`` (steps of the batch), ``seconds`` and ``learning_rate``;
        returning ``False`` stops training after that update. A stop request
        (``agent.stop_requested = True``, e.g. from a SIGINT handler) drops the batch being
        collected and returns with the agent exactly as after its last completed update.
        """
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) \
                or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        if reset_num_timesteps:
            self.global_step = 0
        end = self.global_step + int(total_steps)
        self._schedule_total = end
        bar = None
        if progress_bar:
            from rlgrad.logging import Progress

            bar = Progress(end, start_step=self.global_step)
        try:
            with math_threads(self.threads):
                self._learn(end, callback, bar)
        finally:
            if bar is not None:
                bar.close(self.global_step)
        return self

    def _learn(self, end: int, callback: Callable[..., Any] | None, bar: Any) -> None:
        while self.global_step < end and not self.stop_requested:
            boundary_rng = rng_state(self.rng)
            start = time.perf_counter()
            try:
                batch = self.collection.collect(self.collect_step, end - self.global_step,
                                                self.global_step)
            except StopCollection:
                set_rng_state(self.rng, boundary_rng)
                break
            if batch is None:  # less than one vector step of budget left
                break
            lr = self.apply_lr_schedule()
            self.prepare(batch)
            metrics = self.update(batch)
            self.global_step += batch.size
            self.num_updates += 1
            self.num_episodes += len(batch.episodes)
            info = {"metrics": metrics, "episodes": batch.episodes, "steps": batch.size,
                    "seconds": time.perf_counter() - start, "learning_rate": lr}
            if bar is not None and batch.episodes:
                bar.update(self.global_step, **{"return": float(np.mean(
                    [r for _, r, _ in batch.episodes]))})
            if callback is not None and callback(self, info) is False:
                break

    def _lr_factor(self, step: int) -> float:
        return schedule_factor(self.config.lr_schedule, step, self._schedule_total,
                               self.config.warmup_steps)

    def apply_lr_schedule(self) -> float:
        """Step every optimizer's scheduler to the current environment step; returns the
        policy's (first) learning rate."""
        for scheduler in self.lr_schedulers.values():
            scheduler.last_epoch = self.global_step - 1
            scheduler.step()
        return float(next(iter(self.optimizers().values())).param_groups[0]["lr"])

    def set_base_lrs(self) -> None:
        """Re-read the base learning rates from the config (after a resume, which restores the
        optimizers' saved lrs, or a resume that changed the config's)."""
        for key, lr in self.config_lrs().items():
            scheduler = self.lr_schedulers.get(key)
            if scheduler is not None:
                scheduler.base_lrs = [lr] * len(scheduler.optimizer.param_groups)
                for group in scheduler.optimizer.param_groups:
                    group["initial_lr"] = lr

    def config_lrs(self) -> dict[str, float]:
        """Optimizer name -> the config's learning rate for it."""
        return {"policy": self.config.lr}

    def update(self, batch: Batch) -> dict[str, float]:
        """Gradient steps on ``loss`` over the batch's mini-batches, then ``after_update``."""
        c = self.config
        totals: dict[str, list[float]] = {}
        if c.grad_variance_batches > 1:
            for k, v in self.gradient_variance(batch, c.grad_variance_batches).items():
                totals[k] = [v]
        if c.curvature_every and self.num_updates % c.curvature_every == 0:
            from agents.diagnostics import curvature_metrics

            for k, v in curvature_metrics(self, batch).items():
                totals[f"curvature/{k}"] = [v]
        for mb in batch.minibatches(c.minibatch_size, c.update_epochs, self.rng):
            loss, metrics = self.loss(mb)
            metrics["grad_norm"] = self.gradient_step(loss)
            for k, v in metrics.items():
                totals.setdefault(k, []).append(v)
            if mb.last_in_epoch and self.stop_epochs(metrics):
                break
        out = {k: float(np.mean(v)) for k, v in totals.items()}
        out.update(self.after_update(batch))
        return out

    def gradient_step(self, loss: Tensor, max_grad_norm: float | None = None) -> float:
        """One step of every optimizer on ``loss``; returns the gradient's global norm before
        clipping (``max_grad_norm``, default the config's; 0 disables it).

        A non-finite loss or gradient raises before any parameter changes. After the step every
        parameter is checked: a non-finite one restores the pre-step parameters and raises
        :class:`rlgrad.envs.NonFiniteError` naming the update, the step and the parameter.
        """
        where = f"update {self.num_updates + 1}, step {self.global_step}"
        if not np.isfinite(loss.data).all():
            raise NonFiniteError(f"loss is {loss.item()} at {where}; parameters left unchanged")
        opts = list(self.optimizers().values())
        for o in opts:
            o.zero_grad()
        loss.backward()
        params = [p for o in opts for g in o.param_groups for p in g["params"]]
        limit = self.config.max_grad_norm if max_grad_norm is None else max_grad_norm
        norm = optim.clip_grad_norm_(params, limit if limit > 0 else math.inf)
        if not np.isfinite(norm):
            raise NonFiniteError(f"gradient norm is {norm} at {where}; parameters left "
                                 "unchanged")
        # one flat copy before the step, one after: a single sum then tells whether every
        # parameter is finite (a few microseconds instead of one reduce per parameter)
        before = np.concatenate([p.data.ravel() for p in params])
        for o in opts:
            # the loss's graph is kept, so it can serve as the closure Newton's method needs
            o.step(lambda: loss)
        after = np.concatenate([p.data.ravel() for p in params])
        bad = None if np.isfinite(np.add.reduce(after)) else _first_nonfinite(params)
        if bad is not None:
            start = 0
            for q in params:
                q.data[...] = before[start:start + q.size].reshape(q.shape)
                start += q.size
            raise NonFiniteError(
                f"the optimizer step made parameter {self._param_name(bad)} non-finite at "
                f"{where}; parameters restored to before the step (lower the learning rate)")
        return float(norm)

    def _param_name(self, param: Tensor) -> str:
        for mname, module in self.modules().items():
            for pname, p in module.named_parameters():
                if p is param:
                    return f"{mname}.{pname}"
        return "?"

    def gradient_variance(self, batch: Batch, k: int) -> dict[str, float]:
        """See :func:`agents.diagnostics.gradient_variance` (diagnostics generator only)."""
        from agents.diagnostics import gradient_variance

        return gradient_variance(self, batch, k)

    # ---- evaluation ----------------------------------------------------------------------
    def evaluate(self, episodes: int = 10, seed: int | None = None, deterministic: bool = True,
                 env: VecEnv | None = None) -> np.ndarray:
        """Undiscounted returns of ``episodes`` episodes, one per environment, ``(episodes,)``.

        Deterministic by default (the distribution's mode), with the frozen observation
        normalisation. Uses its own environments and generator: training is not disturbed.
        """
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes <= 0:
            raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
        seed = self.seed + 1_000_003 if seed is None else seed
        own = env is None
        env = make_vec(self.env_id, episodes, seed=seed, **self.env_kwargs) if own else env
        rng = np.random.default_rng(seed)
        try:
            with math_threads(self.threads):
                obs = env.reset(seed=seed)
                returns = np.zeros(episodes)
                running = np.ones(episodes, dtype=bool)
                while running.any():
                    with no_grad():
                        dist = self.distribution(self.normalize_obs(obs))
                    actions = dist.mode() if deterministic else dist.sample(rng)
                    obs, rewards, terminated, truncated, _ = env.step(actions)
                    returns += rewards * running
                    running &= ~(terminated | truncated)
        finally:
            if own:
                env.close()
        return returns

    # ---- checkpoint state ----------------------------------------------------------------
    def normalizers(self) -> dict[str, Any]:
        out = {}
        if self.obs_normalizer is not None:
            out["obs"] = self.obs_normalizer
        if self.reward_scaler is not None:
            out["reward"] = self.reward_scaler
        return out

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, metadata) describing the agent between two updates; see
        :mod:`rlgrad.serialization`."""
        from rlgrad.serialization import agent_state

        return agent_state(self)

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; everything is checked before anything is
        assigned, so on error (ValueError) the agent is untouched."""
        from rlgrad.serialization import restore_agent_state

        restore_agent_state(self, arrays, meta)
        self.set_base_lrs()
        self.collection.restart() if hasattr(self.collection, "restart") else None

    def save(self, path: Any) -> Any:
        """Write the agent as a checkpoint directory ``path`` (``checkpoint.json`` + arrays,
        the format of a run directory); returns the JSON file's path."""
        from rlgrad.checkpoint import save_checkpoint

        arrays, meta = self.state_dict()
        return save_checkpoint(path, arrays, meta)

    @classmethod
    def load(cls, path: Any, env: str | VecEnv | None = None, **kw: Any) -> Agent:
        """An agent of this class restored from a checkpoint (``agents.load`` finds the
        class by the registered name instead)."""
        from agents.registry import load

        return load(path, agent=cls, env=env, **kw)

    def close(self) -> None:
        self.env.close()


def schedule_factor(name: str, step: int, total: int, warmup: int = 0) -> float:
    r"""The learning-rate multiplier at environment step ``step`` of ``total``:

    .. math:: f = \min(1, \tfrac{s + 1}{w}) \cdot \begin{cases} 1 & \text{constant} \\
              1 - s / S & \text{linear (CleanRL's anneal\_lr)} \\
              \tfrac12 (1 + \cos(\pi s / S)) & \text{cosine} \end{cases}

    with ``s`` the step, ``S`` the total and ``w`` the warm-up steps (no warm-up when 0).
    """
    progress = min(step / total, 1.0) if total > 0 else 0.0
    if name == "constant":
        f = 1.0
    elif name == "linear":
        f = 1.0 - progress
    elif name == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {name!r}")
    if warmup > 0:
        f *= min(1.0, (step + 1) / warmup)
    return f


def log_prob(dist: Distribution, actions: Any, pre_tanh: Any = None) -> Tensor:
    """log pi(a) of stored actions; exact for a squashed Gaussian when ``pre_tanh`` is given."""
    if isinstance(dist, TanhNormal):
        return dist.log_prob(actions, pre_tanh=pre_tanh)
    return dist.log_prob(actions)


def _first_nonfinite(params: list[Tensor]) -> Tensor | None:
    """The first parameter holding a nan or inf, else None. One sum per array (finite iff every
    entry is, barring overflow, which the full test then clears), so the check costs little
    next to the step.

    The optimizers' state needs no check of its own here: every optimizer in rlgrad.optim
    keeps moments that are sums of finite multiples of gradients (checked finite before the
    step) and of squared gradients (finite, since their sum, the squared norm, is), with
    hyperparameters the config has checked finite; a checkpoint refuses any non-finite array
    before it is written, optimizer state included.
    """
    for p in params:
        if not np.isfinite(np.add.reduce(p.data, axis=None)) and not np.isfinite(p.data).all():
            return p
    return None


def _given(config: AgentConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


# make_vec's own options, which the single environment behind describe_spaces does not take
_VECTOR_OPTIONS = ("vectorization", "autoreset_mode", "clip_actions", "check_finite")


def _discrete(env_id: str, env_kwargs: dict[str, Any]) -> bool:
    from rlgrad.envs import describe_spaces

    kwargs = {k: v for k, v in env_kwargs.items() if k not in _VECTOR_OPTIONS}
    return describe_spaces(env_id, **kwargs).discrete
