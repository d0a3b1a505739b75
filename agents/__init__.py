"""Policy-gradient agents on rlgrad: each computes its gradient through rlgrad's engine.

``AGENTS`` maps the names used by the CLI (``rlgrad train --agent NAME``) to the classes.
"""

from __future__ import annotations

from agents.base import Agent, AgentConfig, Batch
from agents.reinforce import Reinforce, ReinforceConfig
from agents.reinforce_baseline import ReinforceBaseline, ReinforceBaselineConfig

AGENTS: dict[str, type[Agent]] = {
    Reinforce.name: Reinforce,
    ReinforceBaseline.name: ReinforceBaseline,
}

__all__ = [
    "AGENTS",
    "Agent",
    "AgentConfig",
    "Batch",
    "Reinforce",
    "ReinforceConfig",
    "ReinforceBaseline",
    "ReinforceBaselineConfig",
]
