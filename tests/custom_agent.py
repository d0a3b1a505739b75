"""The README's example: a custom agent that changes the loss, in about 20 lines."""

from dataclasses import dataclass

from agents import Agent, AgentConfig


@dataclass
class EntropyConfig(AgentConfig):
    bonus: float = 0.01  # weight of the entropy bonus


class EntropyReinforce(Agent):
    """REINFORCE whose loss also rewards uncertain policies: -(log pi * G) - bonus * H(pi)."""

    name = "entropy_reinforce"
    config_class = EntropyConfig

    def loss(self, batch, idx=None):
        obs, actions = batch.flat(batch.obs)[idx], batch.flat(batch.actions)[idx]
        dist = self.distribution(obs)
        policy_loss = -(dist.log_prob(actions) * batch.advantages[idx]).mean()
        entropy = dist.entropy().mean()
        bonus = self.config.bonus * entropy
        return policy_loss - bonus, {"policy_loss": policy_loss.item(),
                                     "entropy": entropy.item(), "entropy_bonus": bonus.item()}
