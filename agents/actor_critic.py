"""What A2C and PPO share: fixed-horizon rollouts, a policy and a value function, GAE.

Rollouts are ``num_steps`` steps of each of ``num_envs`` environments, continued across updates
(:class:`rlgrad.rollout.RolloutCollector`). During collection the agent records the sampled
actions' log-probabilities and the values V(s_t); :meth:`ActorCritic.prepare` computes GAE(lambda)
advantages and the value targets, bootstrapping every cut with V of the true next observation:
the rollout's end and time-limit truncations, while terminations bootstrap with 0
(:func:`rlgrad.returns.gae` states the rule).

Networks: separate policy and value MLPs (the default, as in CleanRL's ``ppo.py`` and
``ppo_continuous_action.py``) or, with ``shared_network``, one trunk with a policy head and a
value head. Orthogonal initialisation: hidden layers gain sqrt(2), policy head 0.01, value head
1. One optimizer over all parameters, stepped on the joint loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.base import Agent, AgentConfig, log_prob, opt
from rlgrad.normalize import RunningMeanStd
from rlgrad.policies import SharedActorCritic, ValueFunction
from rlgrad.returns import explained_variance, gae
from rlgrad.rollout import Batch, RolloutCollector
from rlgrad.tensor import Tensor, no_grad

__all__ = ["ActorCritic", "ActorCriticConfig"]


@dataclass
class ActorCriticConfig(AgentConfig):
    """Rollouts, GAE and the value function."""

    num_steps: int = field(default=128, metadata=opt(
        "steps per environment in each rollout", gt=0))
    gae_lambda: float = field(default=0.95, metadata=opt(
        "GAE lambda: 0 is the one-step TD error, 1 the Monte-Carlo return", ge=0, le=1))
    vf_coef: float = field(default=0.5, metadata=opt(
        "weight of the value loss in the joint loss", ge=0, resume=True))
    shared_network: bool = field(default=False, metadata=opt(
        "one trunk with policy and value heads instead of two networks"))
    squash: bool = field(default=False, metadata=opt(
        "tanh-squashed Gaussian for Box actions (with the log-det-Jacobian correction)"))
    normalize_value: bool = field(default=False, metadata=opt(
        "learn V on value targets standardised by their running statistics"))

    def check(self) -> None:
        super().check()
        if None in (self.num_steps, self.num_envs, self.minibatch_size):
            return  # resolved by the action space first
        rollout = self.num_steps * self.num_envs
        if self.minibatch_size > rollout:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) is larger than the "
                             f"rollout (num_steps * num_envs = {rollout})")


class ActorCritic(Agent):
    """Base of the actor-critic agents: setup, record and prepare; subclasses write ``loss``."""

    config_class = ActorCriticConfig
    collector = RolloutCollector

    def setup(self) -> None:
        c = self.config
        if c.shared_network:
            self.net = SharedActorCritic(
                self.spaces.discrete, self.spaces.obs_dim, self.spaces.action_dim,
                hidden_sizes=c.hidden_sizes, activation=c.activation,
                log_std_init=c.log_std_init, rng=self.rng, **self._squash_kw())
            params = list(self.net.parameters())
        else:
            self.policy = self.make_policy()
            self.value = ValueFunction(self.spaces.obs_dim, c.hidden_sizes, c.activation,
                                       rng=self.rng)
            params = [*self.policy.parameters(), *self.value.parameters()]
        self.optimizer = self.make_optimizer(params, c.lr)
        self.value_normalizer = RunningMeanStd() if c.normalize_value else None

    def _squash_kw(self) -> dict:
        if not self.config.squash or self.spaces.discrete:
            return {}
        return {"squash": True, "low": self.spaces.action_low, "high": self.spaces.action_high}

    def make_policy(self, output_gain: float = 0.01):
        from rlgrad.policies import make_policy

        c = self.config
        return make_policy(self.spaces.discrete, self.spaces.obs_dim, self.spaces.action_dim,
                           hidden_sizes=c.hidden_sizes, activation=c.activation,
                           log_std_init=c.log_std_init, rng=self.rng, **self._squash_kw())

    def modules(self):
        if self.config.shared_network:
            return {"net": self.net}
        return {"policy": self.policy, "value": self.value}

    def normalizers(self):
        out = super().normalizers()
        if self.value_normalizer is not None:
            out["value"] = self.value_normalizer
        return out

    def distribution(self, obs):
        return self.net.distribution(obs) if self.config.shared_network else self.policy(obs)

    def values(self, obs) -> Tensor:
        """V(s) ``(B,)`` as the value network outputs it (standardised if normalize_value)."""
        return self.net.value(obs) if self.config.shared_network else self.value(obs)

    def evaluate_actions(self, obs):
        """(distribution, V(s)) in one pass of a shared trunk."""
        if self.config.shared_network:
            return self.net(obs)
        return self.policy(obs), self.value(obs)

    def _value_scale(self) -> tuple[float, float]:
        if self.value_normalizer is None:
            return 0.0, 1.0
        return float(self.value_normalizer.mean), float(np.sqrt(self.value_normalizer.var + 1e-8))

    def record(self, obs, dist, actions, pre_tanh=None):
        mu, sigma = self._value_scale()
        value = self.values(obs).data.astype(np.float64) * sigma + mu
        return {"log_prob": log_prob(dist, actions, pre_tanh).data, "value": value}

    def prepare(self, batch: Batch) -> None:
        """GAE(lambda) advantages and targets ``R_t = A_t + V(s_t)``, flat ``(B,)``."""
        c = self.config
        cut = ~batch.terminated & (batch.truncated | _last_row(batch.rewards.shape))
        bootstrap = np.zeros(batch.rewards.shape)
        if cut.any():
            mu, sigma = self._value_scale()
            with no_grad():
                v = self.values(batch.final_obs[cut]).data.astype(np.float64)
            bootstrap[cut] = v * sigma + mu
        adv, ret = gae(batch.rewards, batch.extras["value"], batch.terminated, batch.truncated,
                       bootstrap, c.gamma, c.gae_lambda, valid=batch.valid)
        batch.data["advantages"] = batch.flat(adv)
        batch.data["returns"] = batch.flat(ret)
        if self.value_normalizer is not None:
            self.value_normalizer.update(batch.data["returns"])
            mu, sigma = self._value_scale()
            batch.data["value_targets"] = (batch.data["returns"] - mu) / sigma
            batch.data["old_values"] = (batch.flat(batch.extras["value"]) - mu) / sigma
        else:
            batch.data["value_targets"] = batch.data["returns"]
            batch.data["old_values"] = batch.flat(batch.extras["value"])

    def standardize_advantages(self, adv: np.ndarray) -> np.ndarray:
        r"""Advantages of one mini-batch standardised if ``normalize_advantages``:
        :math:`(A - \bar A) / (s_A + 10^{-8})` with the unbiased std (ddof 1, as torch's
        ``std`` in CleanRL); a single advantage becomes 0."""
        if not self.config.normalize_advantages:
            return adv
        if len(adv) < 2:
            return adv - adv
        return (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)

    def after_update(self, batch: Batch) -> dict[str, float]:
        return {"explained_variance": explained_variance(batch.flat(batch.extras["value"]),
                                                         batch.data["returns"])}


def _last_row(shape: tuple[int, ...]) -> np.ndarray:
    last = np.zeros(shape, dtype=bool)
    last[-1] = True
    return last
