"""What the agent tests compare against: torch copies of the networks, and endings on cue.

:class:`Mirror` copies every parameter of ``agent.modules()`` into a torch leaf tensor under the
same name (``"policy.net.0.weight"``, ``"value.net.2.bias"``, ``"net.value_head.weight"``) and
evaluates the networks with torch's own layers and distributions, so a test can write an
agent's loss in torch and compare its value and its gradient, parameter by parameter, with what
rlgrad computed.

:func:`mixed_vec` is a vector env of four tiny environments whose episodes end in every way a
batch must handle (terminated, truncated, both at once), deterministically.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import TimeLimit

from rlgrad import nn
from rlgrad.envs import VecEnv
from rlgrad.policies import CategoricalPolicy
from tests.tiny_envs import Tiny

__all__ = ["Mirror", "assert_close", "assert_grads_match", "mixed_vec", "rlgrad_grads",
           "scramble"]


class Mirror:
    """Torch leaves for the parameters of ``modules`` (``agent.modules()``), float64."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.params: dict[str, torch.Tensor] = {}
        for mname, module in modules.items():
            for pname, p in module.named_parameters():
                value = torch.tensor(np.asarray(p.data, dtype=np.float64), requires_grad=True)
                self.params[f"{mname}.{pname}"] = value

    def _mlp(self, prefix: str, mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
        for i, child in enumerate(mlp.children()):
            if isinstance(child, nn.Linear):
                x = F.linear(x, self.params[f"{prefix}.{i}.weight"],
                             self.params[f"{prefix}.{i}.bias"])
            elif isinstance(child, nn.Tanh):
                x = torch.tanh(x)
            elif isinstance(child, nn.ReLU):
                x = torch.relu(x)
            else:
                raise TypeError(f"no torch mirror for {type(child).__name__}")
        return x

    def _trunk(self, obs: Any) -> torch.Tensor:
        return self._mlp("net.trunk", self.modules["net"].trunk, _t(obs))

    def dist(self, obs: Any) -> torch.distributions.Distribution:
        """pi(.|s): Categorical over logits, or a diagonal Gaussian (log-prob and entropy summed
        over the action dimensions)."""
        if "net" in self.modules:  # one trunk, two heads
            out = F.linear(self._trunk(obs), self.params["net.policy_head.weight"],
                           self.params["net.policy_head.bias"])
            discrete, log_std = self.modules["net"].discrete, "net.log_std"
        else:
            policy = self.modules["policy"]
            out = self._mlp("policy.net", policy.net, _t(obs))
            discrete, log_std = isinstance(policy, CategoricalPolicy), "policy.log_std"
        if discrete:
            return torch.distributions.Categorical(logits=out)
        normal = torch.distributions.Normal(out, self.params[log_std].exp())
        return torch.distributions.Independent(normal, 1)

    def value(self, obs: Any) -> torch.Tensor:
        """V(s) ``(B,)``."""
        if "net" in self.modules:
            h = self._trunk(obs)
            return F.linear(h, self.params["net.value_head.weight"],
                            self.params["net.value_head.bias"]).reshape(-1)
        return self._mlp("value.net", self.modules["value"].net, _t(obs)).reshape(-1)

    def value_np(self, obs: Any) -> np.ndarray:
        with torch.no_grad():
            return self.value(obs).numpy()

    def grads(self) -> dict[str, np.ndarray]:
        """The torch gradient of every parameter (zeros where it got none)."""
        return {k: np.zeros(tuple(p.shape)) if p.grad is None else p.grad.numpy()
                for k, p in self.params.items()}


def rlgrad_grads(modules: dict[str, nn.Module]) -> dict[str, np.ndarray]:
    """rlgrad's gradient of every parameter of ``modules``, by the Mirror's names."""
    return {f"{m}.{n}": np.zeros(p.shape) if p.grad is None else np.asarray(p.grad, np.float64)
            for m, module in modules.items() for n, p in module.named_parameters()}


def assert_close(actual: Any, expected: Any, rtol: float = 1e-4, what: str = "",
                 scale: float | None = None) -> None:
    """float32 against float64: relative ``rtol``, and an absolute floor of ``rtol`` times
    ``scale`` (default: the largest magnitude expected), for entries that cancel down to
    rounding noise."""
    expected = np.asarray(expected, dtype=np.float64)
    if scale is None:
        scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol,
                               atol=rtol * max(scale, 1e-3), err_msg=what)


def scramble(agent: Any, seed: int = 0) -> None:
    """Replace every parameter of the agent by random values of order 1 (float32), so that
    policies are far from uniform and values far from 0: a wrong term cannot hide in a tiny
    output layer."""
    rng = np.random.default_rng(seed)
    for module in agent.modules().values():
        for _, p in module.named_parameters():
            p.data[...] = rng.normal(scale=0.6, size=p.shape).astype(p.data.dtype)


def assert_grads_match(modules: dict[str, nn.Module], mirror: Mirror, rtol: float = 1e-4
                       ) -> None:
    """Every parameter's rlgrad gradient equals torch's; at least one is non-zero."""
    ours, theirs = rlgrad_grads(modules), mirror.grads()
    assert ours.keys() == theirs.keys()
    assert any(np.abs(g).max() > 0 for g in theirs.values())
    for k in theirs:
        assert_close(ours[k], theirs[k], rtol, what=k)


def _t(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def mixed_vec(seed: int = 0) -> VecEnv:
    """Four :class:`tests.tiny_envs.Tiny` (observation ``[t, start]``, reward ``1 + action``):
    env 0 terminates after 2 steps (time limit 4); env 1 is truncated by a 4-step limit; env 2
    terminates after 4 steps, when its 4-step limit truncates it too; env 3 terminates after 3
    steps (limit 5)."""
    makers = [lambda: TimeLimit(Tiny(terminate_at=2), 4),
              lambda: TimeLimit(Tiny(), 4),
              lambda: TimeLimit(Tiny(terminate_at=4), 4),
              lambda: TimeLimit(Tiny(terminate_at=3), 5)]
    vec = SyncVectorEnv(makers, autoreset_mode=AutoresetMode.SAME_STEP, copy=False)
    return VecEnv(vec, seed, name="sync")
