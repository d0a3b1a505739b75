"""Diagnostics an agent can measure on a batch without changing its run.

Each draws from the agent's ``diagnostics_rng`` (never the training generator), reads the
parameters without stepping them, and returns plain floats for the trainer to log:

- :func:`gradient_variance`: the spread of the policy-gradient estimate across disjoint
  mini-batches of one batch (``diagnostics/grad_variance``).
- :func:`curvature_metrics`: the curvature of the policy loss at the current parameters
  (``curvature/*``): its Hessian's largest and smallest eigenvalues (Lanczos), the Hessian's
  trace (Hutchinson), the largest eigenvalue of the policy's Fisher information, and the
  gradient noise scale. The text's question, "how fast or slow is the optimisation
  converging", has its first answer here: gradient descent on a quadratic with top curvature
  lambda_max is stable only for learning rates below 2 / lambda_max.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlgrad.autograd import grad
from rlgrad.curvature import gradient_noise_scale, hessian_eigenvalues, hessian_trace
from rlgrad.rollout import Batch, Minibatch

__all__ = ["gradient_variance", "curvature_metrics", "policy_parameters"]


def policy_parameters(agent: Any) -> list:
    """The parameters of the policy (for a shared network: all of it)."""
    modules = agent.modules()
    module = modules.get("policy", modules.get("net"))
    return [p for p in module.parameters() if p.requires_grad]


def _minibatch(arrays: dict[str, np.ndarray], idx: np.ndarray | None = None) -> Minibatch:
    return Minibatch(arrays if idx is None else {k: v[idx] for k, v in arrays.items()}, 0, True)


def _flat_grads(loss: Any, params: list) -> np.ndarray:
    gs = grad(loss, params, allow_unused=True)
    return np.concatenate([np.zeros(p.size) if g is None else g.data.ravel()
                           for g, p in zip(gs, params)]).astype(np.float64)


def gradient_variance(agent: Any, batch: Batch, k: int) -> dict[str, float]:
    r"""The spread of the policy-gradient estimate across ``k`` disjoint random mini-batches
    of the same batch (the same policy), without changing any parameter.

    .. math:: \mathrm{Var} = \textstyle\sum_j \widehat{\mathrm{Var}}_i[g_{ij}], \qquad
              \mathrm{relative} = \mathrm{Var} / \lVert \bar g \rVert^2

    ``grad_variance`` is the trace of the covariance of the mini-batch gradients g_i;
    ``grad_relative_variance`` divides it by the squared norm of their mean, which does not
    depend on the scale of the weights (raw returns vs normalised advantages).
    """
    params = policy_parameters(agent)
    arrays = batch.flat_arrays()
    order = agent.diagnostics_rng.permutation(batch.size)
    g = np.stack([_flat_grads(agent.loss(_minibatch(arrays, idx))[0], params)
                  for idx in np.array_split(order, k)])
    var = float(g.var(axis=0, ddof=1).sum())
    mean_sq = float(np.square(g.mean(axis=0)).sum())
    return {"grad_variance": var,
            "grad_relative_variance": var / mean_sq if mean_sq > 0 else float("nan")}


def curvature_metrics(agent: Any, batch: Batch, *, max_samples: int = 2048,
                      lanczos_iterations: int = 30, trace_samples: int = 10,
                      noise_batches: int = 8) -> dict[str, float]:
    r"""Curvature of the agent's loss on (up to ``max_samples`` transitions of) ``batch``,
    with respect to the policy's parameters theta, at the current parameters:

    - ``hessian_max``, ``hessian_min``: the extreme eigenvalues of
      :math:`H = \nabla^2_\theta L`, by Lanczos (the surrogate's Hessian is indefinite, so
      both ends matter); ``lr_stability_edge`` = :math:`2 / \lambda_{max}` (gradient descent
      on the local quadratic model diverges above it; inf if :math:`\lambda_{max} \le 0`).
    - ``hessian_trace``: :math:`\operatorname{tr} H` by Hutchinson's estimator.
    - ``fisher_max``: the largest eigenvalue of the Fisher information
      :math:`F = \nabla^2_\theta \overline{KL}(\pi_{old} \| \pi_\theta)`, the Hessian of the
      mean KL at :math:`\theta = \theta_{old}`.
    - ``gradient_noise_scale``: :math:`\operatorname{tr}\Sigma / |G|^2` (McCandlish et al.
      2018) from ``noise_batches`` disjoint mini-batch gradients.

    All randomness (the subsample, the Lanczos start, the probes, the mini-batches) comes from
    ``agent.diagnostics_rng``; no parameter changes.
    """
    rng = agent.diagnostics_rng
    params = policy_parameters(agent)
    arrays = batch.flat_arrays()
    n = batch.size
    idx = np.sort(rng.choice(n, max_samples, replace=False)) if n > max_samples else None
    sample = _minibatch(arrays, idx)
    iterations = min(lanczos_iterations, sum(p.size for p in params))
    loss, _ = agent.loss(sample)
    top = float(hessian_eigenvalues(loss, params, k=1, which="LA", iterations=iterations,
                                    rng=rng)[0])
    loss, _ = agent.loss(sample)
    bottom = float(hessian_eigenvalues(loss, params, k=1, which="SA", iterations=iterations,
                                       rng=rng)[0])
    loss, _ = agent.loss(sample)
    trace = float(hessian_trace(loss, params, samples=trace_samples, rng=rng))
    dist = agent.distribution(sample.obs)
    kl = dist.detach().kl(dist).mean()
    fisher = float(hessian_eigenvalues(kl, params, k=1, which="LA", iterations=iterations,
                                       rng=rng)[0])
    order = rng.permutation(n)
    parts = np.array_split(order, noise_batches)
    grads = np.stack([_flat_grads(agent.loss(_minibatch(arrays, part))[0], params)
                      for part in parts])
    noise = float(gradient_noise_scale(grads, batch_size=len(parts[0])))
    return {"hessian_max": top, "hessian_min": bottom, "hessian_trace": trace,
            "fisher_max": fisher, "gradient_noise_scale": noise,
            "lr_stability_edge": 2.0 / top if top > 0 else float("inf")}
