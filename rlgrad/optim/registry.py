"""Optimizers by name, for agents and the CLI: ``make("adam", params, lr=3e-4)``.

==========  =====================================  ==========
name        builds                                 default lr
==========  =====================================  ==========
sgd         ``SGD``                                1e-3
momentum    ``SGD(momentum=0.9)``                  1e-3
nesterov    ``SGD(momentum=0.9, nesterov=True)``   1e-3
adagrad     ``Adagrad``                            1e-2
rmsprop     ``RMSprop``                            1e-2
adam        ``Adam``                               1e-3
adamw       ``AdamW`` (weight_decay=1e-2)          1e-3
newton      ``Newton`` (``step`` needs a closure)  1.0
==========  =====================================  ==========

Every default is the class's own, i.e. torch's (torch's SGD has defaulted to lr=1e-3 since
2.2); a keyword given to :func:`make` overrides it. Register another optimizer with a line
below, or from outside the package with ``register("name", factory)`` or ``@register("name")``
on a class or function that takes ``(params, **hyperparameters)``.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import Any

from rlgrad.optim.adagrad import Adagrad
from rlgrad.optim.adam import Adam
from rlgrad.optim.adamw import AdamW
from rlgrad.optim.optimizer import Optimizer, ParamsT
from rlgrad.optim.rmsprop import RMSprop
from rlgrad.optim.sgd import SGD

__all__ = ["OPTIMIZERS", "make", "register"]

OptimizerFactory = Callable[..., Optimizer]

OPTIMIZERS: dict[str, OptimizerFactory] = {}
"""Name -> factory called as ``factory(params, **hyperparameters)``."""


def register(
    name: str,
    factory: OptimizerFactory | None = None,
    /,
    *,
    overwrite: bool = False,
    **defaults: Any,
) -> Any:
    """Register ``factory`` under ``name``, with ``defaults`` that :func:`make`'s keywords override.

    Call it directly, ``register("momentum", SGD, momentum=0.9)``, or use it as a decorator,
    ``@register("newton")`` above a class or function; the decorator returns it unchanged.
    Registering a taken name raises ValueError unless ``overwrite=True``.
    """

    def add(factory: OptimizerFactory) -> OptimizerFactory:
        if name in OPTIMIZERS and not overwrite:
            raise ValueError(
                f"optimizer {name!r} is already registered; pass overwrite=True to replace it"
            )
        OPTIMIZERS[name] = functools.partial(factory, **defaults) if defaults else factory
        return factory

    return add if factory is None else add(factory)


def make(name: str, params: ParamsT, **hyperparameters: Any) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params``.

    Raises ValueError for an unknown name, listing the known ones.
    """
    factory = OPTIMIZERS.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, OPTIMIZERS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown optimizer {name!r}{hint} Known optimizers: {', '.join(sorted(OPTIMIZERS))}"
        )
    return factory(params, **hyperparameters)


register("sgd", SGD)
register("momentum", SGD, momentum=0.9)
register("nesterov", SGD, momentum=0.9, nesterov=True)
register("adagrad", Adagrad)
register("rmsprop", RMSprop)
register("adam", Adam)
register("adamw", AdamW)
