"""Stochastic policies and value functions: an MLP and the distribution that reads its output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .distributions import Categorical, Distribution, Normal, TanhNormal
from .nn import MLP, Linear, Module, Parameter
from .tensor import Tensor

__all__ = ["CategoricalPolicy", "GaussianPolicy", "SharedActorCritic", "ValueFunction",
           "make_policy"]


class CategoricalPolicy(Module):
    """pi(a|s) = softmax(f_theta(s))_a for ``Discrete`` action spaces.

    ``net`` maps observations ``(B, obs_dim)`` to logits ``(B, n_actions)``.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes: Sequence[int] = (64, 64),
                 activation: str = "tanh", init: str = "orthogonal",
                 rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.net = MLP([obs_dim, *hidden_sizes, n_actions], activation=activation, init=init,
                       output_gain=0.01, rng=rng)

    def forward(self, obs: Any) -> Distribution:
        return Categorical(logits=self.net(obs))

    def action_layers(self) -> list[Module]:
        """The modules from observations to logits, in order (what ``rlgrad.export`` runs)."""
        return list(self.net.children())


class GaussianPolicy(Module):
    """pi(a|s) = N(mu_theta(s), diag(exp(log_std))^2) for ``Box`` action spaces.

    The log-std is one Parameter per action dimension, independent of the state (the usual
    choice for REINFORCE, PPO and TRPO on MuJoCo), initialised to ``log_std_init``. With
    ``squash``, the Gaussian sample is squashed by tanh into ``[low, high]``
    (:class:`rlgrad.distributions.TanhNormal`, log-probabilities with the log-det-Jacobian
    correction); otherwise only the action sent to the environment is clipped to the bounds.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int] = (64, 64),
                 activation: str = "tanh", init: str = "orthogonal", log_std_init: float = 0.0,
                 rng: np.random.Generator | None = None, squash: bool = False,
                 low: Sequence[float] | None = None, high: Sequence[float] | None = None) -> None:
        super().__init__()
        self.net = MLP([obs_dim, *hidden_sizes, action_dim], activation=activation, init=init,
                       output_gain=0.01, rng=rng)
        self.log_std = Parameter(np.full(action_dim, log_std_init), dtype=np.float32)
        self.squash = squash
        self.bounds = _bounds(low, high) if squash else None

    def forward(self, obs: Any) -> Distribution:
        return _gaussian(self.net(obs), self.log_std, self.bounds)

    def action_layers(self) -> list[Module]:
        """The modules from observations to the mean, in order (what ``rlgrad.export`` runs)."""
        return list(self.net.children())


class ValueFunction(Module):
    """V_phi(s): an MLP from observations ``(B, obs_dim)`` to values ``(B,)``."""

    def __init__(self, obs_dim: int, hidden_sizes: Sequence[int] = (64, 64),
                 activation: str = "tanh", init: str = "orthogonal",
                 rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.net = MLP([obs_dim, *hidden_sizes, 1], activation=activation, init=init,
                       output_gain=1.0, rng=rng)

    def forward(self, obs: Any) -> Tensor:
        return self.net(obs).reshape(-1)


class SharedActorCritic(Module):
    """One trunk, two heads: pi(a|s) from the policy head, V(s) from the value head.

    ``trunk`` is an MLP ``obs_dim -> hidden_sizes`` with the activation after every layer;
    ``policy_head`` (orthogonal gain 0.01) gives logits or the Gaussian mean, ``value_head``
    (gain 1) the value. Gradients of a joint loss reach the trunk from both heads.
    """

    def __init__(self, discrete: bool, obs_dim: int, action_dim: int,
                 hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh",
                 init: str = "orthogonal", log_std_init: float = 0.0,
                 rng: np.random.Generator | None = None, squash: bool = False,
                 low: Sequence[float] | None = None, high: Sequence[float] | None = None) -> None:
        super().__init__()
        self.discrete = discrete
        self.trunk = MLP([obs_dim, *hidden_sizes], activation=activation,
                         output_activation=activation, init=init, output_gain=float(np.sqrt(2)),
                         rng=rng)
        self.policy_head = Linear(hidden_sizes[-1], action_dim, init=init, gain=0.01, rng=rng)
        self.value_head = Linear(hidden_sizes[-1], 1, init=init, gain=1.0, rng=rng)
        if not discrete:
            self.log_std = Parameter(np.full(action_dim, log_std_init), dtype=np.float32)
        self.squash = squash and not discrete
        self.bounds = _bounds(low, high) if self.squash else None

    def _dist(self, h: Tensor) -> Distribution:
        out = self.policy_head(h)
        if self.discrete:
            return Categorical(logits=out)
        return _gaussian(out, self.log_std, self.bounds)

    def action_layers(self) -> list[Module]:
        """The modules from observations to logits or mean (what ``rlgrad.export`` runs)."""
        return [*self.trunk.children(), self.policy_head]

    def distribution(self, obs: Any) -> Distribution:
        return self._dist(self.trunk(obs))

    def value(self, obs: Any) -> Tensor:
        return self.value_head(self.trunk(obs)).reshape(-1)

    def forward(self, obs: Any) -> tuple[Distribution, Tensor]:
        h = self.trunk(obs)
        return self._dist(h), self.value_head(h).reshape(-1)


def _bounds(low: Any, high: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if low is None or high is None:
        return None
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError("a tanh-squashed policy needs finite action bounds, got "
                         f"low={low.tolist()}, high={high.tolist()}")
    return low, high


def _gaussian(mean: Tensor, log_std: Tensor, bounds: Any) -> Distribution:
    if bounds is None:
        return Normal(mean, log_std)
    return TanhNormal(mean, log_std, *bounds)


def make_policy(discrete: bool, obs_dim: int, action_dim: int, **kwargs: Any) -> Module:
    """The policy for a space: categorical over ``action_dim`` actions, or Gaussian."""
    if discrete:
        for key in ("log_std_init", "squash", "low", "high"):
            kwargs.pop(key, None)
        return CategoricalPolicy(obs_dim, action_dim, **kwargs)
    return GaussianPolicy(obs_dim, action_dim, **kwargs)
