"""NPG: the natural policy gradient (Kakade 2001), one trust-region-sized step per batch.

Shared with :mod:`agents.trpo`, which adds a backtracking line search on the same direction:
the surrogate, the Fisher-vector products, the conjugate-gradient solve, the step and its
finiteness checks, and the value function's separate fit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.base import opt, optimizer_names
from rlgrad.autograd import conjugate_gradient, grad
from rlgrad.curvature import FisherVectorProduct
from rlgrad.distributions import Categorical, Distribution, Normal
from rlgrad.envs import NonFiniteError
from rlgrad.normalize import RunningMeanStd
from rlgrad.policies import ValueFunction
from rlgrad.rollout import Batch, Minibatch
from rlgrad.tensor import Tensor, no_grad

__all__ = ["NPG", "NPGConfig"]

# fields of the actor-critic config a second-order agent has no use for, and what to set instead
_UNUSED = {
    "lr": "the policy's step is set by max_kl; the value function's learning rate is value_lr",
    "minibatch_size": "the policy takes one full-batch step; the value function's mini-batches "
                      "are value_minibatch_size",
    "update_epochs": "the policy takes one step per batch; the value function's passes are "
                     "value_epochs",
    "vf_coef": "the value function is fitted by its own optimizer, not through a joint loss",
}

# fields left None default by the action space, as PPO's do: normalisation on for Box actions
DISCRETE_DEFAULTS = {"normalize_obs": False, "normalize_reward": False}
BOX_DEFAULTS = {"normalize_obs": True, "normalize_reward": True}


@dataclass
class NPGConfig(ActorCriticConfig):
    """sb3-contrib's TRPO defaults (its names in brackets): value learning rate 1e-3
    [learning_rate], one environment of 2048 steps [n_steps], GAE lambda 0.95, gamma 0.99,
    15 conjugate-gradient iterations [cg_max_steps] with damping 0.1 [cg_damping], max KL 0.01
    [target_kl], 10 value epochs [n_critic_updates] of mini-batches of 128 [batch_size],
    advantages normalised per batch [normalize_advantage], no sub-sampling
    [sub_sampling_factor]; Adam with eps 1e-5 for the value function, as SB3's policies use.
    Observations and rewards are normalised by default for Box actions only (as PPO here; sb3
    leaves that to a VecNormalize wrapper, which the RL Zoo uses for TRPO on MuJoCo)."""

    lr: float | None = field(default=None, metadata=opt(
        "not used: the policy's step is set by max_kl; use value_lr", gt=0))
    minibatch_size: int | None = field(default=None, metadata=opt(
        "not used: the policy takes one full-batch step; use value_minibatch_size", ge=0))
    update_epochs: int | None = field(default=None, metadata=opt(
        "not used: one policy step per batch; use value_epochs", gt=0))
    vf_coef: float | None = field(default=None, metadata=opt(
        "not used: the value function has its own optimizer", ge=0))
    optimizer: str = field(default="adam", metadata=opt(
        "optimizer of the value function, by name",
        choices=optimizer_names))
    optimizer_eps: float | None = field(default=1e-5, metadata=opt(
        "eps of the value function's Adam (SB3's policies: 1e-5)", gt=0))
    num_envs: int = field(default=1, metadata=opt("environments stepped in parallel", gt=0))
    num_steps: int = field(default=2048, metadata=opt(
        "steps per environment in each rollout (sb3: n_steps)", gt=0))
    normalize_obs: bool | None = field(default=None, metadata=opt(
        "running observation normalisation, clipped to +-10 (default: on for Box)"))
    normalize_reward: bool | None = field(default=None, metadata=opt(
        "scale rewards by the running std of the discounted return (default: on for Box)"))
    max_kl: float = field(default=0.01, metadata=opt(
        "trust-region size delta: the step's mean KL(pi_old || pi) (sb3: target_kl)", gt=0,
        resume=True))
    cg_iterations: int = field(default=15, metadata=opt(
        "conjugate-gradient iterations for F^-1 g (sb3: cg_max_steps)", ge=1, resume=True))
    cg_damping: float = field(default=0.1, metadata=opt(
        "damping lambda: conjugate gradient solves (F + lambda I) x = g", ge=0, resume=True))
    value_lr: float = field(default=1e-3, metadata=opt(
        "learning rate of the value function's optimizer (sb3: learning_rate)", gt=0,
        resume=True))
    value_epochs: int = field(default=10, metadata=opt(
        "passes of the value fit over the batch per update (sb3: n_critic_updates)", gt=0,
        resume=True))
    value_minibatch_size: int = field(default=128, metadata=opt(
        "mini-batch size of the value fit; 0 means full-batch steps (sb3: batch_size)", ge=0))
    sub_sampling_factor: int = field(default=1, metadata=opt(
        "the policy step uses every k-th transition of the batch (sb3: sub_sampling_factor)",
        ge=1))

    def check(self) -> None:
        super().check()
        name = type(self).__name__.removesuffix("Config")
        for key, instead in _UNUSED.items():
            if getattr(self, key) is not None:
                raise ValueError(f"{key} is not used by {name} ({instead}); leave it unset, "
                                 f"got {getattr(self, key)!r}")
        if self.shared_network:
            raise ValueError(f"shared_network is not supported by {name}: the value fit would "
                             "move the policy outside its trust region; use separate networks")
        if self.squash:
            raise ValueError(f"squash is not supported by {name}: its Fisher-vector products "
                             "and KL take a Categorical or a plain Normal policy")

    def resolve(self, discrete: bool) -> NPGConfig:
        defaults = DISCRETE_DEFAULTS if discrete else BOX_DEFAULTS
        missing = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **missing) if missing else self


class NPG(ActorCritic):
    r"""Natural policy gradient with a KL-sized step, and a value function fitted on its own.

    On the batch's transitions (every ``sub_sampling_factor``-th), with GAE advantages
    standardised over them, :math:`\hat A_t = (A_t - \bar A) / (\mathrm{std}(A) + 10^{-8})`,

    .. math::
        L(\theta) &= \frac1B \sum_t \rho_t(\theta) \hat A_t
                     \;+\; c_H \frac1B \sum_t H[\pi_\theta(\cdot|s_t)], \qquad
                     \rho_t = \frac{\pi_\theta(a_t|s_t)}{\pi_{old}(a_t|s_t)} \\
        g &= \nabla_\theta L(\theta)\big|_{\theta_{old}}, \qquad
        F = \nabla^2_\theta\, \bar D(\theta)\big|_{\theta_{old}}, \qquad
        \bar D(\theta) = \frac1B \sum_t \mathrm{KL}\big(\pi_{old}(\cdot|s_t) \,\|\,
                         \pi_\theta(\cdot|s_t)\big) \\
        x &\approx (F + \lambda I)^{-1} g \quad (k \text{ conjugate-gradient iterations from }
             x_0 = 0) \\
        \theta &\leftarrow \theta_{old} + \beta x, \qquad
                 \beta = \sqrt{2 \delta / x^T (F + \lambda I) x}

    with :math:`\delta` = ``max_kl``, :math:`\lambda` = ``cg_damping``, :math:`k` =
    ``cg_iterations`` and :math:`c_H` = ``ent_coef`` (0 by default, as sb3-contrib has none).
    F is the Fisher information of the policy (the KL's gradient vanishes at theta_old, so its
    Hessian there is the Fisher), reached only through the products F v of
    :class:`rlgrad.curvature.FisherVectorProduct`. The step makes the damped
    quadratic model of the KL equal delta, :math:`\tfrac12 \beta^2 x^T (F + \lambda I) x =
    \delta` (the undamped one, :math:`\tfrac12 \beta^2 x^T F x`, is at most delta). In exact
    arithmetic every conjugate-gradient iterate has :math:`x_k^T (F + \lambda I) x_k = g^T x_k`
    (its residual is orthogonal to the Krylov space that holds x_k), so beta is the textbook
    :math:`\sqrt{2 \delta / g^T x}`, and :math:`\sqrt{2 \delta / g^T F^{-1} g}` once converged
    (without damping). We pay one more product for :math:`x^T (F + \lambda I) x`, as
    sb3-contrib does: with float32 products and a solve stopped early on an ill-conditioned F
    the two drift apart (by 10% on a tiny policy without damping), and only this one keeps the
    model's KL at delta; the same product gives the residual.

    NPG takes the step whatever its actual KL; :class:`agents.TRPO` searches along it. Then V is
    fitted by its own optimizer (``optimizer``, Adam; ``value_lr``): ``value_epochs`` passes of
    shuffled mini-batches of ``value_minibatch_size``, each one step on
    :math:`\frac1B \sum_t (V_\phi(s_t) - R_t)^2` (SB3's MSE, no 1/2), with
    :math:`R_t = A_t + V_{old}(s_t)`.

    Every parameter change is checked: a non-finite surrogate, gradient or direction raises
    :class:`rlgrad.envs.NonFiniteError` before anything changes; a step that makes a parameter
    non-finite restores the old parameters and raises it, naming the update and the step.

    Metrics: ``approx_kl`` (mean KL(pi_old || pi) of the step taken, 0 if none), ``cg_residual``
    (:math:`\lVert g - (F + \lambda I) x \rVert`), ``cg_iterations``, ``line_search_steps``
    (step fractions rejected before the accepted one; all tried when none was),
    ``step_size`` (the multiplier of x applied, 0 if none), ``surrogate_improvement``
    (:math:`L(\theta) - L(\theta_{old})`),
    ``line_search_rejected`` (1.0 when the policy was left unchanged), ``policy_loss``
    (:math:`-L` at the parameters the update leaves), ``grad_norm`` (:math:`\lVert g \rVert`),
    ``entropy`` (at theta_old), ``value_loss`` (mean over the value steps) and
    ``explained_variance``.

    Where we differ from sb3-contrib's TRPO (which has no separate NPG): conjugate gradient
    starts from 0, not from 1e-4-scaled Gaussian noise; the KL of the step is
    KL(pi_old || pi), where sb3 evaluates KL(pi || pi_old) (the two have the same Hessian at
    theta_old, so the direction is the same); the optional entropy term; normalisation
    defaults for Box actions (see :class:`NPGConfig`).
    """

    name = "npg"
    config_class = NPGConfig

    def setup(self) -> None:
        c = self.config
        self.policy = self.make_policy()
        self.value = ValueFunction(self.spaces.obs_dim, c.hidden_sizes, c.activation,
                                   rng=self.rng)
        self.value_optimizer = self.make_optimizer(self.value.parameters(), c.value_lr)
        self.value_normalizer = RunningMeanStd() if c.normalize_value else None

    def optimizers(self):
        return {"value": self.value_optimizer}

    def config_lrs(self):
        return {"value": self.config.value_lr}

    # ---- the formulas ---------------------------------------------------------------------
    def surrogate(self, dist: Distribution, mb: Minibatch | dict[str, np.ndarray]) -> Tensor:
        """L = mean(exp(log pi(a|s) - log pi_old(a|s)) * A) + ent_coef * mean(H), the
        advantages ``mb["advantages"]`` taken as given (standardise them first)."""
        logp = dist.log_prob(mb["actions"])
        ratio = (logp - np.asarray(mb["log_prob"]).astype(logp.dtype)).exp()
        objective = (ratio * np.asarray(mb["advantages"]).astype(logp.dtype)).mean()
        if self.config.ent_coef:
            objective = objective + dist.entropy().mean() * self.config.ent_coef
        return objective

    @staticmethod
    def mean_kl(old: Distribution, new: Distribution) -> Tensor:
        """mean_t KL(old(.|s_t) || new(.|s_t))."""
        return old.kl(new).mean()

    def loss(self, mb: Minibatch) -> tuple[Tensor, dict[str, float]]:
        """-L on a mini-batch with its advantages standardised (what the gradient diagnostics
        read; the update itself standardises over the whole batch)."""
        arrays = dict(mb)
        arrays["advantages"] = self.standardize_advantages(mb.advantages)
        objective = self.surrogate(self.policy(mb.obs), arrays)
        return -objective, {"policy_loss": -objective.item()}

    # ---- the update -----------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One natural-gradient step of the policy (with TRPO's line search), then the value
        fit; replaces the base's mini-batch loop."""
        c = self.config
        out: dict[str, float] = {}
        if c.grad_variance_batches > 1:
            out.update(self.gradient_variance(batch, c.grad_variance_batches))
        out.update(self.policy_step(self.policy_batch(batch)))
        out.update(self.fit_value(batch))
        out.update(self.after_update(batch))
        return out

    def policy_batch(self, batch: Batch) -> dict[str, np.ndarray]:
        """The transitions of the policy step (every ``sub_sampling_factor``-th, as sb3),
        their advantages standardised over them."""
        k = self.config.sub_sampling_factor
        arrays = {key: v[::k] for key, v in batch.flat_arrays().items()}
        arrays["advantages"] = self.standardize_advantages(arrays["advantages"])
        return arrays

    def step_fractions(self) -> Sequence[float]:
        """The fractions of the full step beta x to try, in order: NPG takes the full step."""
        return (1.0,)

    def accept(self, kl: float, improvement: float) -> bool:
        """Whether a step with mean KL ``kl`` and surrogate gain ``improvement`` (both finite)
        is taken: NPG takes it whatever they are."""
        return True

    def policy_step(self, mb: dict[str, np.ndarray]) -> dict[str, float]:
        """Direction, scale and (for TRPO) line search on the policy; returns the metrics."""
        c = self.config
        where = f"update {self.num_updates + 1}, step {self.global_step}"
        params = list(self.policy.parameters())
        dist = self.policy(mb["obs"])
        objective = self.surrogate(dist, mb)
        old_objective = objective.item()
        g = _flat([gi.data if gi is not None else None
                   for gi in grad(objective, params, allow_unused=True)], params)
        if not math.isfinite(old_objective) or not np.isfinite(g).all():
            raise NonFiniteError(f"the surrogate or its gradient is not finite at {where}; "
                                 "parameters left unchanged")
        fisher = FisherVectorProduct(dist, params, c.cg_damping)

        def fvp(v: np.ndarray) -> np.ndarray:
            try:
                return fisher(v)
            except ValueError as e:  # a non-finite product (or vector)
                raise NonFiniteError(f"{e} at {where}; parameters left unchanged") from None

        residuals: list[float] = []
        try:
            x = conjugate_gradient(fvp, g, iters=c.cg_iterations, residuals=residuals)
        except NonFiniteError:
            raise
        except ValueError as e:  # p^T A p <= 0: F is singular along the search direction
            raise ValueError(f"conjugate gradient broke down at {where} ({e}); use "
                             "cg_damping > 0") from None
        ax = fvp(x)
        xax = float(x @ ax)
        if not np.isfinite(x).all() or not math.isfinite(xax):
            raise NonFiniteError(f"the natural-gradient direction is not finite at {where}; "
                                 "parameters left unchanged")
        residual = float(np.linalg.norm(g - ax))
        old = _detached(dist)
        metrics = {"cg_iterations": float(len(residuals) - 1), "cg_residual": residual,
                   "grad_norm": float(np.linalg.norm(g)),
                   "entropy": float(dist.entropy().mean().item())}

        beta = math.sqrt(2.0 * c.max_kl / xax) if xax > 0 else 0.0
        fractions = list(self.step_fractions()) if beta > 0 else []
        theta_old = [p.data.copy() for p in params]
        full_step = [beta * s for s in _split(x, params)]
        for i, frac in enumerate(fractions):
            self._assign(params, theta_old, full_step, frac, where)
            with no_grad():
                new = self.policy(mb["obs"])
                kl = self.mean_kl(old, new).item()
                new_objective = self.surrogate(new, mb).item()
            improvement = new_objective - old_objective
            if math.isfinite(kl) and math.isfinite(improvement) and self.accept(kl, improvement):
                metrics.update(approx_kl=kl, line_search_steps=float(i), step_size=frac * beta,
                               surrogate_improvement=improvement, line_search_rejected=0.0,
                               policy_loss=-new_objective)
                return metrics
        for p, saved in zip(params, theta_old):
            p.data[...] = saved
        metrics.update(approx_kl=0.0, line_search_steps=float(len(fractions)), step_size=0.0,
                       surrogate_improvement=0.0, line_search_rejected=1.0,
                       policy_loss=-old_objective)
        return metrics

    def _assign(self, params: list[Tensor], theta_old: list[np.ndarray],
                full_step: list[np.ndarray], frac: float, where: str) -> None:
        """theta = theta_old + frac * full_step; a non-finite result restores theta_old and
        raises NonFiniteError."""
        with np.errstate(over="ignore", invalid="ignore"):
            for p, start, s in zip(params, theta_old, full_step):
                p.data[...] = start + frac * s
        for p in params:
            if not np.isfinite(p.data).all():
                for q, saved in zip(params, theta_old):
                    q.data[...] = saved
                raise NonFiniteError(
                    f"the natural-gradient step (fraction {frac:g}) made "
                    f"{self._param_name(p)} non-finite at {where}; parameters restored to "
                    "before the step (lower max_kl)")

    def fit_value(self, batch: Batch) -> dict[str, float]:
        """``value_epochs`` passes of mini-batch steps on mean((V(s) - R)^2)."""
        c = self.config
        losses = []
        for mb in batch.minibatches(c.value_minibatch_size, c.value_epochs, self.rng):
            value = self.value(mb.obs)
            diff = value - mb.value_targets.astype(value.dtype)
            loss = (diff * diff).mean()
            self.gradient_step(loss)
            losses.append(loss.item())
        return {"value_loss": float(np.mean(losses))}


def _detached(dist: Distribution) -> Distribution:
    """The same distribution as constants: pi_old."""
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits.data)
    if isinstance(dist, Normal):
        return Normal(dist.mean.data, dist.log_std.data)
    raise TypeError(f"NPG needs a Categorical or a Normal policy, got {type(dist).__name__}")


def _flat(parts: list[np.ndarray | None], params: list[Tensor]) -> np.ndarray:
    return np.concatenate([np.zeros(p.data.size) if a is None else
                           np.asarray(a, dtype=np.float64).ravel() for a, p in zip(parts, params)])


def _split(flat: np.ndarray, params: list[Tensor]) -> list[np.ndarray]:
    out, start = [], 0
    for p in params:
        out.append(flat[start:start + p.data.size].reshape(p.shape))
        start += p.data.size
    return out
