"""Optimizers, gradient clipping, learning-rate schedules and a registry by name.

One class per file, each with its update rule in its docstring: :class:`SGD` (with momentum and
Nesterov), :class:`Adagrad`, :class:`RMSprop`, :class:`Adam`, :class:`AdamW`, and the second-order
:class:`Newton`. They follow
``torch.optim``'s names, defaults, hyperparameter checks and state keys, and are tested against it.
"""

from __future__ import annotations

from rlgrad.optim import lr_scheduler
from rlgrad.optim.adagrad import Adagrad
from rlgrad.optim.adam import Adam
from rlgrad.optim.adamw import AdamW
from rlgrad.optim.clip import clip_grad_norm_, clip_grad_value_
from rlgrad.optim.newton import Newton
from rlgrad.optim.optimizer import Optimizer, flatten_state_dict, unflatten_state_dict
from rlgrad.optim.registry import OPTIMIZERS, make, register
from rlgrad.optim.rmsprop import RMSprop
from rlgrad.optim.sgd import SGD

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "Newton",
    "clip_grad_norm_",
    "clip_grad_value_",
    "lr_scheduler",
    "OPTIMIZERS",
    "make",
    "register",
    "flatten_state_dict",
    "unflatten_state_dict",
]
