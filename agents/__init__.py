"""Policy-gradient agents on rlgrad: each computes its gradient through rlgrad's engine.

``AGENTS`` maps the names used by the CLI (``rlgrad train --agent NAME``) to the classes;
:func:`load` restores a saved agent by that name, importing nothing a checkpoint names.
"""

from __future__ import annotations

from agents.a2c import A2C, A2CConfig
from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.base import Agent, AgentConfig, Batch, EpisodeConfig, Minibatch
from agents.npg import NPG, NPGConfig
from agents.ppo import PPO, PPOConfig
from agents.registry import AGENTS, load, register
from agents.reinforce import Reinforce, ReinforceConfig
from agents.reinforce_baseline import ReinforceBaseline, ReinforceBaselineConfig
from agents.trpo import TRPO, TRPOConfig

for _cls in (Reinforce, ReinforceBaseline, A2C, PPO, NPG, TRPO):
    register(_cls)

__all__ = [
    "AGENTS", "load", "register",
    "Agent", "AgentConfig", "EpisodeConfig", "Batch", "Minibatch",
    "ActorCritic", "ActorCriticConfig",
    "Reinforce", "ReinforceConfig", "ReinforceBaseline", "ReinforceBaselineConfig",
    "A2C", "A2CConfig", "PPO", "PPOConfig", "NPG", "NPGConfig", "TRPO", "TRPOConfig",
]
