"""The README's example: a custom agent that changes the loss, in about 20 lines."""

from dataclasses import dataclass, field

from agents import Reinforce, ReinforceConfig
from agents.base import opt


@dataclass
class EntropyConfig(ReinforceConfig):
    bonus: float = field(default=0.01, metadata=opt("weight of the entropy bonus", ge=0))


class EntropyReinforce(Reinforce):
    """REINFORCE whose loss also rewards uncertain policies: -(log pi * G) - bonus * H(pi)."""

    name = "entropy_reinforce"
    config_class = EntropyConfig

    def loss(self, mb):
        dist = self.distribution(mb.obs)
        policy_loss = -(dist.log_prob(mb.actions) * mb.advantages).mean()
        entropy = dist.entropy().mean()
        bonus = self.config.bonus * entropy
        return policy_loss - bonus, {"policy_loss": policy_loss.item(),
                                     "entropy": entropy.item(), "entropy_bonus": bonus.item()}
