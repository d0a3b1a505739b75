"""REINFORCE with a learned state-value baseline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.base import AgentConfig, Batch
from agents.reinforce import Reinforce
from rlgrad import optim
from rlgrad.policies import ValueFunction
from rlgrad.returns import explained_variance, normalize
from rlgrad.tensor import no_grad


@dataclass
class ReinforceBaselineConfig(AgentConfig):
    """Adds the value network's optimizer and its number of steps per update."""

    value_optimizer: str = field(default="adam", metadata={
        "help": "optimizer of the value network, by name"})
    value_lr: float = field(default=1e-2, metadata={"help": "learning rate of the value network"})
    value_steps: int = field(default=10, metadata={
        "help": "full-batch gradient steps on the value loss per update"})

    def validate(self) -> None:
        super().validate()
        if self.value_optimizer not in optim.OPTIMIZERS:
            optim.make(self.value_optimizer, [])
        if not self.value_lr > 0:
            raise ValueError(f"value_lr must be a positive number, got {self.value_lr!r}")
        if not isinstance(self.value_steps, int) or self.value_steps <= 0:
            raise ValueError(f"value_steps must be a positive integer, got {self.value_steps!r}")


class ReinforceBaseline(Reinforce):
    """REINFORCE with a learned baseline V_phi(s).

    .. math:: \\nabla_\\theta J \\approx \\frac{1}{B} \\sum_t \\nabla_\\theta
              \\log \\pi_\\theta(a_t \\mid s_t) \\, (G_t - V_\\phi(s_t)), \\qquad
              L_V(\\phi) = \\frac{1}{B} \\sum_t (V_\\phi(s_t) - G_t)^2

    Subtracting a baseline that does not depend on the action leaves the gradient's expectation
    unchanged and lowers its variance. V is fitted to the returns by its own optimizer, after
    the policy step; episodes cut off by a time limit are bootstrapped with V(s_T).
    """

    name = "reinforce_baseline"
    config_class = ReinforceBaselineConfig

    def setup(self) -> None:
        c = self.config
        self.value = ValueFunction(self.spaces.obs_dim, c.hidden_sizes, c.activation,
                                   rng=self.rng)
        self.value_optimizer = optim.make(c.value_optimizer, self.value.parameters(),
                                          lr=c.value_lr)

    def modules(self):
        return {"policy": self.policy, "value": self.value}

    def optimizers(self):
        return {"policy": self.optimizer, "value": self.value_optimizer}

    def bootstrap_values(self, batch: Batch) -> np.ndarray | None:
        cut = batch.truncated & ~batch.terminated
        values = np.zeros(batch.rewards.shape)
        if cut.any():
            with no_grad():
                values[cut] = self.value(batch.final_obs[cut]).data
        return values

    def prepare(self, batch: Batch) -> None:
        batch.returns = batch.flat(self.compute_returns(batch))
        with no_grad():
            self._values = self.value(batch.flat(batch.obs)).data.astype(np.float64)
        adv = batch.returns - self._values
        batch.advantages = normalize(adv) if self.config.normalize_advantages else adv

    def update(self, batch: Batch) -> dict[str, float]:
        metrics = super().update(batch)
        obs = batch.flat(batch.obs)
        target = batch.returns.astype(np.float32)
        params = list(self.value.parameters())
        for _ in range(self.config.value_steps):
            diff = self.value(obs) - target
            value_loss = (diff * diff).mean()
            self.policy_step(value_loss, self.value_optimizer, params, 0.0)
        metrics["value_loss"] = value_loss.item()
        metrics["explained_variance"] = explained_variance(self._values, batch.returns)
        return metrics
