"""Learning-rate schedules that rewrite ``optimizer.param_groups[i]["lr"]``, as torch's do.

Usage (call the scheduler after the optimizer, once per update or per epoch)::

    optimizer = Adam(params, lr=3e-4)
    scheduler = LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=n_updates)
    for _ in range(n_updates):
        ...
        optimizer.step()
        scheduler.step()

The values match torch's to rounding, because the same formulas are used in the same order:
StepLR, LinearLR and CosineAnnealingLR are *recursive* (each step rescales the current
``group["lr"]``), so, as in torch, they compose with other changes made to the lr in between.

To resume from a checkpoint: build the optimizer and the scheduler, then load the optimizer's
state_dict (constructing a scheduler already takes one step and writes the lrs), then the
scheduler's. Both state_dicts are JSON-serializable (numbers and lists).
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable
from typing import Any

from rlgrad.optim.optimizer import Optimizer

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "LinearLR", "CosineAnnealingLR"]


class LRScheduler:
    """Base class: a subclass implements :meth:`get_lr`, the lrs after ``last_epoch`` steps.

    Args:
        optimizer: the optimizer whose ``param_groups[i]["lr"]`` the scheduler sets.
        last_epoch: index of the last step taken; -1 (default) starts a new schedule and records
            each group's current lr as ``group["initial_lr"]`` (the ``base_lrs``). Another value
            resumes a schedule and requires ``initial_lr`` in every group.

    Constructing a scheduler performs its first step, to ``last_epoch = 0`` (which may already
    change the lr, e.g. LinearLR's ``start_factor``).
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise ValueError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                        f"a scheduler with last_epoch={last_epoch}; load the optimizer's "
                        "state_dict first, or start with last_epoch=-1"
                    )
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """Return the lr of every param group for the current ``last_epoch``."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance the schedule by one step and write the new lrs into the optimizer."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """Return the lrs the last :meth:`step` set (a copy)."""
        return list(self._last_lr)

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Return every attribute but the optimizer (numbers and lists of numbers)."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes saved by :meth:`state_dict` (copied)."""
        base_lrs = state_dict.get("base_lrs")
        if base_lrs is None or len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"loaded scheduler state has base_lrs {base_lrs!r}, but the optimizer has "
                f"{len(self.optimizer.param_groups)} param groups"
            )
        self.__dict__.update(copy.deepcopy(state_dict))


class LambdaLR(LRScheduler):
    r"""Set each group's lr to its initial lr times a function of the step:

    .. math::
        \eta_t = \eta_0 \cdot \lambda(t)

    Args:
        optimizer: the optimizer to schedule.
        lr_lambda: a function of the step count ``t`` (an int), or a list of them, one per group.
        last_epoch: see :class:`LRScheduler`.

    The functions are not saved in :meth:`state_dict`, as in torch: for a callable object its
    ``__dict__`` is saved (and restored into the current object), for a plain function None.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != len(optimizer.param_groups):
                raise ValueError(
                    f"Expected {len(optimizer.param_groups)} lr_lambdas, but got {len(lr_lambda)}"
                )
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [
            base_lr * lmbda(self.last_epoch)
            for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        state = {
            k: copy.deepcopy(v)
            for k, v in self.__dict__.items()
            if k not in ("optimizer", "lr_lambdas")
        }
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else copy.deepcopy(fn.__dict__)
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        lr_lambdas = state_dict.pop("lr_lambdas", [None] * len(self.lr_lambdas))
        super().load_state_dict(state_dict)
        for fn, saved in zip(self.lr_lambdas, lr_lambdas, strict=True):
            if saved is not None:
                fn.__dict__.update(copy.deepcopy(saved))


class StepLR(LRScheduler):
    r"""Multiply the lr by ``gamma`` every ``step_size`` steps:

    .. math::
        \eta_t = \eta_{t-1} \cdot \gamma \ \text{ if } t > 0 \text{ and } t \bmod
        \texttt{step\_size} = 0, \text{ else } \eta_{t-1}
        \qquad (= \eta_0 \, \gamma^{\lfloor t / \texttt{step\_size} \rfloor}
        \text{ if nothing else changes the lr})

    Args:
        optimizer: the optimizer to schedule.
        step_size: period of the decay, in steps.
        gamma: multiplicative decay factor (default 0.1).
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class LinearLR(LRScheduler):
    r"""Scale the lr by a factor that moves linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then stays:

    .. math::
        \eta_t = \eta_0 \Big(s + (e - s) \frac{\min(t, T)}{T}\Big)

    computed, as in torch, recursively: ``eta_0 = s * lr`` at construction, then for
    ``1 <= t <= T``

    .. math::
        \eta_t = \eta_{t-1} \Big(1 + \frac{e - s}{T s + (t - 1)(e - s)}\Big).

    A linear warm-up is ``LinearLR(opt, start_factor=0.01, total_iters=n)``; a linear decay to
    zero (as in PPO) is ``LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=n)``.

    Args:
        optimizer: the optimizer to schedule.
        start_factor: s, in (0, 1] (default 1/3).
        end_factor: e, in [0, 1] (default 1).
        total_iters: T, the number of steps to reach ``end_factor`` (default 5).
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError(
                "Starting multiplicative factor expected to be greater than 0 and less or equal "
                "to 1."
            )
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lrs()
        s, e, t = self.start_factor, self.end_factor, self.last_epoch
        factor = 1.0 + (e - s) / (self.total_iters * s + (t - 1) * (e - s))
        return [lr * factor for lr in self._current_lrs()]


class CosineAnnealingLR(LRScheduler):
    r"""Anneal the lr from its initial value to ``eta_min`` along half a cosine over ``T_max``
    steps (and back up over the next ``T_max``, and so on, as in torch):

    .. math::
        \eta_t = \eta_{min} + \tfrac{1}{2} (\eta_0 - \eta_{min})
            \Big(1 + \cos\frac{t \pi}{T_{max}}\Big)

    computed, as in torch, recursively from the current lr, so the two agree only while nothing
    else changes the lr:

    .. math::
        \eta_t = \eta_{min} + (\eta_{t-1} - \eta_{min})
            \frac{1 + \cos(t \pi / T_{max})}{1 + \cos((t - 1) \pi / T_{max})}

    except at ``t = T_max + 1 (mod 2 T_max)``, where that ratio is 0/0 and torch uses
    ``eta_t = eta_{t-1} + (eta_0 - eta_min)(1 - cos(pi / T_max)) / 2``.

    Args:
        optimizer: the optimizer to schedule.
        T_max: number of steps of the half cosine.
        eta_min: the smallest lr (default 0).
        last_epoch: see :class:`LRScheduler`.
    """

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, T_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if (t - 1 - T_max) % (2 * T_max) == 0:
            return [
                lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
                for base_lr, lr in zip(self.base_lrs, self._current_lrs(), strict=True)
            ]
        ratio = (1 + math.cos(math.pi * t / T_max)) / (1 + math.cos(math.pi * (t - 1) / T_max))
        return [ratio * (lr - eta_min) + eta_min for lr in self._current_lrs()]
