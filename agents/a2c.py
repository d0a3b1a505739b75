"""A2C: synchronous advantage actor-critic (Mnih et al. 2016), as Stable-Baselines3 runs it."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.base import log_prob, opt, optimizer_names
from rlgrad.rollout import Minibatch
from rlgrad.tensor import Tensor

__all__ = ["A2C", "A2CConfig"]


@dataclass
class A2CConfig(ActorCriticConfig):
    """SB3's A2C defaults (RMSprop, alpha 0.99, eps 1e-5; 5-step rollouts; GAE lambda 1, i.e.
    n-step returns; value weight 0.5; gradient norm 0.5), with 8 environments as the RL Zoo runs
    it on CartPole."""

    optimizer: str = field(default="rmsprop", metadata=opt(
        "optimizer, by name (the A2C paper and SB3 use RMSprop)",
        choices=optimizer_names))
    lr: float = field(default=7e-4, metadata=opt("learning rate", gt=0, resume=True))
    optimizer_eps: float | None = field(default=1e-5, metadata=opt(
        "eps of the optimizer (SB3's RMSprop: 1e-5)", gt=0))
    num_steps: int = field(default=5, metadata=opt("steps per environment in each rollout",
                                                   gt=0))
    gae_lambda: float = field(default=1.0, metadata=opt(
        "GAE lambda (1: n-step returns, as in the A2C paper)", ge=0, le=1))
    max_grad_norm: float = field(default=0.5, metadata=opt(
        "clip the global gradient norm to this; 0 disables clipping", ge=0, resume=True))
    normalize_advantages: bool = field(default=False, metadata=opt(
        "standardise the advantages of each rollout"))


class A2C(ActorCritic):
    r"""Advantage actor-critic: one gradient step per rollout on the joint loss

    .. math:: L = -\frac1B \sum_t \log \pi_\theta(a_t|s_t) \hat A_t
              + c_v \frac1B \sum_t (V_\theta(s_t) - R_t)^2
              - c_H \frac1B \sum_t H[\pi_\theta(\cdot|s_t)]

    with GAE(lambda) advantages :math:`\hat A_t` and targets :math:`R_t = \hat A_t + V(s_t)`
    (lambda 1: the n-step return bootstrapped from V at the rollout's end). The value loss is
    the plain mean squared error, as in SB3 (PPO's has CleanRL's factor 1/2).
    """

    name = "a2c"
    config_class = A2CConfig

    def loss(self, mb: Minibatch) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        dist, value = self.evaluate_actions(mb.obs)
        logp = log_prob(dist, mb.actions, mb.get("pre_tanh"))
        adv = self.standardize_advantages(mb.advantages)
        policy_loss = -(logp * adv.astype(logp.dtype)).mean()
        diff = value - mb.value_targets.astype(value.dtype)
        value_loss = (diff * diff).mean()
        entropy = dist.entropy().mean()
        loss = policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy
        return loss, {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                      "entropy": entropy.item()}
