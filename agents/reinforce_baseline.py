"""REINFORCE with a learned baseline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.base import opt, optimizer_names
from agents.reinforce import Reinforce, ReinforceConfig
from rlgrad.policies import ValueFunction
from rlgrad.returns import explained_variance, normalize
from rlgrad.rollout import Batch
from rlgrad.tensor import no_grad


@dataclass
class ReinforceBaselineConfig(ReinforceConfig):
    """Adds the value network's optimizer and its number of steps per update."""

    lr: float = field(default=1e-2, metadata=opt(
        "learning rate of the policy's optimizer", gt=0, resume=True))
    value_optimizer: str = field(default="adam", metadata=opt(
        "optimizer of the value network, by name", choices=optimizer_names))
    value_lr: float = field(default=1e-2, metadata=opt(
        "learning rate of the value network", gt=0, resume=True))
    value_steps: int = field(default=10, metadata=opt(
        "full-batch gradient steps on the value loss per update", gt=0, resume=True))


class ReinforceBaseline(Reinforce):
    """REINFORCE with a learned baseline V_phi(s).

    .. math:: \\nabla_\\theta J \\approx \\frac{1}{B} \\sum_t \\nabla_\\theta
              \\log \\pi_\\theta(a_t \\mid s_t) \\, (G_t - V_\\phi(s_t)), \\qquad
              L_V(\\phi) = \\frac{1}{B} \\sum_t (V_\\phi(s_t) - G_t)^2

    Subtracting a baseline that does not depend on the action leaves the gradient's expectation
    unchanged and lowers its variance. The advantages are ``G_t - V_phi(s_t)`` with V taken
    before the update (standardised if ``normalize_advantages``). V is fitted to the returns by
    its own optimizer after the policy step (``value_steps`` full-batch steps, in
    :meth:`after_update`); episodes cut off by the step cap are bootstrapped with V(s_T).
    """

    name = "reinforce_baseline"
    config_class = ReinforceBaselineConfig

    def setup(self) -> None:
        super().setup()
        c = self.config
        self.value = ValueFunction(self.spaces.obs_dim, c.hidden_sizes, c.activation,
                                   rng=self.rng)
        self.value_optimizer = self.make_optimizer(self.value.parameters(), c.value_lr,
                                                   c.value_optimizer)

    def modules(self):
        return {"policy": self.policy, "value": self.value}

    def optimizers(self):
        return {"policy": self.optimizer, "value": self.value_optimizer}

    def config_lrs(self):
        return {"policy": self.config.lr, "value": self.config.value_lr}

    def bootstrap_values(self, batch: Batch) -> np.ndarray:
        cut = batch.truncated & ~batch.terminated
        values = np.zeros(batch.rewards.shape)
        if cut.any():
            with no_grad():
                values[cut] = self.value(batch.final_obs[cut]).data
        return values

    def advantages(self, batch: Batch, returns: np.ndarray) -> np.ndarray:
        with no_grad():
            values = self.value(batch.flat(batch.obs)).data.astype(np.float64)
        batch.data["values"] = values
        adv = returns - values
        return normalize(adv) if self.config.normalize_advantages else adv

    def after_update(self, batch: Batch) -> dict[str, float]:
        obs = batch.flat(batch.obs)
        target = batch.data["returns"].astype(np.float32)
        for _ in range(self.config.value_steps):
            diff = self.value(obs) - target
            value_loss = (diff * diff).mean()
            self.gradient_step(value_loss, max_grad_norm=0.0)
        return {"value_loss": value_loss.item(),
                "explained_variance": explained_variance(batch.data["values"],
                                                         batch.data["returns"])}
