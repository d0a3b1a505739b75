"""TRPO: trust region policy optimisation (Schulman et al. 2015), as sb3-contrib runs it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agents.base import opt
from agents.npg import NPG, NPGConfig

__all__ = ["TRPO", "TRPOConfig"]


@dataclass
class TRPOConfig(NPGConfig):
    """NPG's options (sb3-contrib's TRPO defaults) and the line search: step fractions 1, 0.8,
    0.8^2, ... [line_search_shrinking_factor], at most 10 of them [line_search_max_iter]."""

    line_search_shrink: float = field(default=0.8, metadata=opt(
        "each rejected step fraction is multiplied by this (sb3: line_search_shrinking_factor)",
        gt=0, lt=1, resume=True))
    line_search_steps: int = field(default=10, metadata=opt(
        "step fractions tried before the update is given up (sb3: line_search_max_iter)", ge=1,
        resume=True))


class TRPO(NPG):
    r"""NPG's direction x and scale beta (see :class:`agents.NPG`), with a backtracking line
    search: for :math:`i = 0, 1, \dots, n - 1` try

    .. math:: \theta_i = \theta_{old} + \alpha^i \beta x

    (:math:`\alpha` = ``line_search_shrink``, :math:`n` = ``line_search_steps``) and take the
    first with

    .. math:: \bar D(\theta_i) = \frac1B \sum_t \mathrm{KL}\big(\pi_{old}(\cdot|s_t) \,\|\,
              \pi_{\theta_i}(\cdot|s_t)\big) \le \delta \quad\text{and}\quad
              L(\theta_i) - L(\theta_{old}) > 0

    on the same transitions. If none qualifies the policy keeps theta_old and the update
    reports ``line_search_rejected`` = 1 (an event, not an error); the value function is fitted
    either way. The quadratic model puts the full step at KL delta; the search catches the
    steps where the true KL is larger or the surrogate does not improve.

    Where we differ from sb3-contrib: the KL is KL(pi_old || pi) (sb3 evaluates
    KL(pi || pi_old)) and the bound is inclusive (sb3: ``kl < target_kl``); the rest as
    :class:`agents.NPG` says.
    """

    name = "trpo"
    config_class = TRPOConfig

    def step_fractions(self) -> Sequence[float]:
        c = self.config
        return [c.line_search_shrink ** i for i in range(c.line_search_steps)]

    def accept(self, kl: float, improvement: float) -> bool:
        return kl <= self.config.max_kl and improvement > 0
