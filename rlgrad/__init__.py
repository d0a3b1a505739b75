"""rlgrad: policy-gradient reinforcement learning on a reverse-mode autodiff engine over numpy."""

from __future__ import annotations

from . import nn, optim, regularization
from ._allocator import tune_allocator
from .autograd import conjugate_gradient, grad, gradcheck, hessian, hvp, jacobian
from .curvature import (
    FisherVectorProduct,
    fisher_vector_product,
    gradient_noise_scale,
    hessian_eigenvalues,
    hessian_trace,
)
from .regularization import l1_penalty, l2_penalty
from .sensitivity import input_gradients, policy_sensitivity
from .tensor import (
    Tensor,
    concatenate,
    enable_grad,
    is_grad_enabled,
    linear,
    log_softmax,
    logsumexp,
    no_grad,
    softmax,
    stack,
    tensor,
    where,
)

__version__ = "0.1.0"

tune_allocator()

__all__ = [
    "Tensor",
    "tensor",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "linear",
    "softmax",
    "log_softmax",
    "logsumexp",
    "concatenate",
    "stack",
    "where",
    "grad",
    "hvp",
    "hessian",
    "jacobian",
    "conjugate_gradient",
    "gradcheck",
    "FisherVectorProduct",
    "fisher_vector_product",
    "hessian_eigenvalues",
    "hessian_trace",
    "gradient_noise_scale",
    "l1_penalty",
    "l2_penalty",
    "input_gradients",
    "policy_sensitivity",
    "nn",
    "optim",
    "regularization",
]
