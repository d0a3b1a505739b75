"""PPO: proximal policy optimisation with the clipped surrogate (Schulman et al. 2017)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.base import log_prob, opt
from rlgrad.rollout import Minibatch
from rlgrad.tensor import Tensor, where

__all__ = ["PPO", "PPOConfig"]

# CleanRL's ppo.py (discrete actions) and ppo_continuous_action.py (Box actions), where they
# differ; fields left None in PPOConfig take these by the environment's action space.
DISCRETE_DEFAULTS = {"lr": 2.5e-4, "num_envs": 4, "num_steps": 128, "minibatch_size": 128,
                     "update_epochs": 4, "ent_coef": 0.01, "normalize_obs": False,
                     "normalize_reward": False}
BOX_DEFAULTS = {"lr": 3e-4, "num_envs": 1, "num_steps": 2048, "minibatch_size": 64,
                "update_epochs": 10, "ent_coef": 0.0, "normalize_obs": True,
                "normalize_reward": True}


@dataclass
class PPOConfig(ActorCriticConfig):
    """CleanRL's defaults. Fields shown as None default by the action space:
    discrete ``ppo.py`` (lr 2.5e-4, 4 envs x 128 steps, mini-batches of 128 = 4 per rollout,
    4 epochs, entropy 0.01, no normalisation) and Box ``ppo_continuous_action.py`` (lr 3e-4,
    1 env x 2048 steps, mini-batches of 64, 10 epochs, no entropy bonus, observations and
    rewards normalised)."""

    lr: float | None = field(default=None, metadata=opt(
        "learning rate (default: 2.5e-4 discrete, 3e-4 Box)", gt=0, resume=True))
    optimizer_eps: float | None = field(default=1e-5, metadata=opt(
        "eps of Adam (CleanRL: 1e-5)", gt=0))
    lr_schedule: str = field(default="linear", metadata=opt(
        "learning-rate schedule: linear annealing to 0 (CleanRL's anneal_lr), constant, cosine",
        choices=("constant", "linear", "cosine"), resume=True))
    num_envs: int | None = field(default=None, metadata=opt(
        "environments stepped in parallel (default: 4 discrete, 1 Box)", gt=0))
    num_steps: int | None = field(default=None, metadata=opt(
        "steps per environment in each rollout (default: 128 discrete, 2048 Box)", gt=0))
    minibatch_size: int | None = field(default=None, metadata=opt(
        "mini-batch size (default: 128 discrete, 64 Box)", gt=0))
    update_epochs: int | None = field(default=None, metadata=opt(
        "passes over the rollout per update (default: 4 discrete, 10 Box)", gt=0))
    ent_coef: float | None = field(default=None, metadata=opt(
        "weight of the entropy bonus (default: 0.01 discrete, 0 Box)", ge=0, resume=True))
    normalize_obs: bool | None = field(default=None, metadata=opt(
        "running observation normalisation, clipped to +-10 (default: on for Box)"))
    normalize_reward: bool | None = field(default=None, metadata=opt(
        "scale rewards by the running std of the discounted return (default: on for Box)"))
    max_grad_norm: float = field(default=0.5, metadata=opt(
        "clip the global gradient norm to this; 0 disables clipping", ge=0, resume=True))
    clip_coef: float = field(default=0.2, metadata=opt(
        "surrogate clipping range epsilon", gt=0, resume=True))
    clip_vloss: bool = field(default=True, metadata=opt(
        "clip the value loss around the old values, as the policy ratio is clipped"))
    target_kl: float | None = field(default=None, metadata=opt(
        "stop the update's epochs once the approximate KL exceeds this (None: never)", gt=0,
        resume=True))

    def resolve(self, discrete: bool) -> PPOConfig:
        defaults = DISCRETE_DEFAULTS if discrete else BOX_DEFAULTS
        missing = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **missing) if missing else self


class PPO(ActorCritic):
    r"""Proximal policy optimisation, clipped (CleanRL's formulation).

    For each mini-batch, with ratio :math:`\rho_t = \pi_\theta(a_t|s_t) /
    \pi_{old}(a_t|s_t)` and GAE advantages standardised over the mini-batch,

    .. math::
        L^{clip} &= \frac1B \sum_t \max\big(-\hat A_t \rho_t,\;
                    -\hat A_t \operatorname{clip}(\rho_t, 1 - \epsilon, 1 + \epsilon)\big) \\
        L^{V} &= \frac1{2B} \sum_t \max\big((V_\theta(s_t) - R_t)^2,\;
                 (V_{old}(s_t) + \operatorname{clip}(V_\theta(s_t) - V_{old}(s_t), -\epsilon,
                 \epsilon) - R_t)^2\big) \\
        L &= L^{clip} + c_v L^V - c_H \frac1B \sum_t H[\pi_\theta(\cdot|s_t)]

    (``clip_vloss=False``: the first term of :math:`L^V` alone). Logged with it:
    ``approx_kl`` = mean((rho - 1) - log rho), the low-variance estimator of KL(pi_old || pi),
    ``old_approx_kl`` = mean(-log rho), and ``clipfrac``, the fraction of ratios outside
    [1 - epsilon, 1 + epsilon]. With ``target_kl``, the update stops after the first epoch
    whose last mini-batch has ``approx_kl > target_kl``.
    """

    name = "ppo"
    config_class = PPOConfig

    def loss(self, mb: Minibatch) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        dist, value = self.evaluate_actions(mb.obs)
        logp = log_prob(dist, mb.actions, mb.get("pre_tanh"))
        logratio = logp - mb.log_prob.astype(logp.dtype)
        ratio = logratio.exp()
        adv = self.standardize_advantages(mb.advantages)
        adv = adv.astype(logp.dtype)
        pg1 = ratio * -adv
        pg2 = ratio.clip(1.0 - c.clip_coef, 1.0 + c.clip_coef) * -adv
        policy_loss = where(pg1.data >= pg2.data, pg1, pg2).mean()

        target = mb.value_targets.astype(value.dtype)
        unclipped = (value - target) ** 2
        if c.clip_vloss:
            old = mb.old_values.astype(value.dtype)
            clipped = (value - old).clip(-c.clip_coef, c.clip_coef) + old - target
            clipped = clipped * clipped
            value_loss = where(unclipped.data >= clipped.data, unclipped, clipped).mean() * 0.5
        else:
            value_loss = unclipped.mean() * 0.5
        entropy = dist.entropy().mean()
        loss = policy_loss + value_loss * c.vf_coef - entropy * c.ent_coef

        # metrics only (no gradient flows through them): plain sums, no numpy dispatch
        r = ratio.data.astype(np.float64)
        lr_ = logratio.data.astype(np.float64)
        n = len(r)
        metrics = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                   "entropy": entropy.item(), "old_approx_kl": -float(np.add.reduce(lr_)) / n,
                   "approx_kl": float(np.add.reduce((r - 1.0) - lr_)) / n,
                   "clipfrac": float(np.count_nonzero(np.abs(r - 1.0) > c.clip_coef)) / n}
        return loss, metrics

    def stop_epochs(self, metrics: dict[str, float]) -> bool:
        return self.config.target_kl is not None and metrics["approx_kl"] > self.config.target_kl
