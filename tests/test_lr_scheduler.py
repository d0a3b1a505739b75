"""rlgrad.optim.lr_scheduler against torch.optim.lr_scheduler, 50 steps with an optimizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rlgrad
from rlgrad import optim
from rlgrad.optim import lr_scheduler

LRS = (0.1, 0.03)  # two param groups with different lrs
STEPS = 50


class Warmup:
    """A callable object: LambdaLR saves its __dict__ (a plain function is not saved)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, epoch: int) -> float:
        return min(1.0, (epoch + 1) / self.n)


CASES = [
    ("LambdaLR", lambda: {"lr_lambda": lambda epoch: 0.95**epoch}),
    ("LambdaLR", lambda: {"lr_lambda": [lambda epoch: 1 / (1 + epoch), Warmup(10)]}),
    ("StepLR", lambda: {"step_size": 7, "gamma": 0.5}),
    ("StepLR", lambda: {"step_size": 1}),
    ("LinearLR", lambda: {}),
    ("LinearLR", lambda: {"start_factor": 0.1, "total_iters": 20}),
    ("LinearLR", lambda: {"start_factor": 1.0, "end_factor": 0.0, "total_iters": STEPS}),
    ("LinearLR", lambda: {"start_factor": 0.5, "end_factor": 0.2, "total_iters": 80}),
    ("CosineAnnealingLR", lambda: {"T_max": STEPS}),
    ("CosineAnnealingLR", lambda: {"T_max": 10, "eta_min": 0.01}),  # passes T_max: goes back up
    ("CosineAnnealingLR", lambda: {"T_max": 3, "eta_min": 0.001}),
]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def build(name: str, kwargs: dict):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=3), rng.normal(size=(2, 2))]
    ours = [rlgrad.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    opt = optim.SGD(
        [{"params": [p], "lr": lr} for p, lr in zip(ours, LRS, strict=True)],
        lr=LRS[0],
        momentum=0.9,
    )
    topt = torch.optim.SGD(
        [{"params": [q], "lr": lr} for q, lr in zip(theirs, LRS, strict=True)],
        lr=LRS[0],
        momentum=0.9,
    )
    sched = getattr(lr_scheduler, name)(opt, **kwargs)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    return ours, opt, sched, theirs, topt, tsched


def train_step(rng, ours, opt, theirs, topt) -> None:
    for p, q in zip(ours, theirs, strict=True):
        g = rng.normal(size=p.data.shape)
        p.grad, q.grad = g, torch.tensor(g)
    opt.step()
    topt.step()


def assert_same_lrs(opt, sched, topt, tsched) -> None:
    lrs = [g["lr"] for g in opt.param_groups]
    np.testing.assert_allclose(lrs, [g["lr"] for g in topt.param_groups], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12, atol=1e-15)
    assert sched.get_last_lr() == lrs
    assert sched.last_epoch == tsched.last_epoch


@pytest.mark.parametrize(("name", "make_kwargs"), CASES, ids=CASE_IDS)
def test_matches_torch_for_50_steps(name, make_kwargs):
    ours, opt, sched, theirs, topt, tsched = build(name, make_kwargs())
    assert_same_lrs(opt, sched, topt, tsched)  # construction already takes step 0
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(STEPS):
        train_step(rng, ours, opt, theirs, topt)
        sched.step()
        tsched.step()
        assert_same_lrs(opt, sched, topt, tsched)
        seen.add(round(opt.param_groups[0]["lr"], 12))
    assert len(seen) > 1  # the schedule did change the lr
    for p, q in zip(ours, theirs, strict=True):  # and the optimizer used the scheduled lrs
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "make_kwargs"), CASES, ids=CASE_IDS)
def test_state_dict_round_trip(name, make_kwargs):
    ours, opt, sched, theirs, topt, tsched = build(name, make_kwargs())
    rng = np.random.default_rng(1)
    for _ in range(20):
        train_step(rng, ours, opt, theirs, topt)
        sched.step()
        tsched.step()

    saved_sched = json.loads(json.dumps(sched.state_dict()))
    arrays, meta = optim.flatten_state_dict(opt.state_dict())
    saved_opt = optim.unflatten_state_dict(arrays, json.loads(json.dumps(meta)))

    # Resume: build both, load the optimizer (restoring the lrs), then the scheduler.
    resumed = [rlgrad.tensor(p.data, requires_grad=True) for p in ours]
    resumed_opt = optim.SGD(
        [{"params": [p], "lr": lr} for p, lr in zip(resumed, LRS, strict=True)],
        lr=LRS[0],
        momentum=0.9,
    )
    kwargs = make_kwargs()
    resumed_sched = getattr(lr_scheduler, name)(resumed_opt, **kwargs)
    resumed_opt.load_state_dict(saved_opt)
    resumed_sched.load_state_dict(saved_sched)
    if name == "LambdaLR" and isinstance(kwargs["lr_lambda"], list):
        assert kwargs["lr_lambda"][1].n == 10

    for _ in range(STEPS - 20):
        grads = [rng.normal(size=p.data.shape) for p in ours]
        for p, r, q, g in zip(ours, resumed, theirs, grads, strict=True):
            p.grad, r.grad, q.grad = g, g, torch.tensor(g)
        for o in (opt, resumed_opt, topt):
            o.step()
        for s in (sched, resumed_sched, tsched):
            s.step()
        assert resumed_sched.get_last_lr() == sched.get_last_lr()
        assert [g["lr"] for g in resumed_opt.param_groups] == [g["lr"] for g in opt.param_groups]
        assert_same_lrs(resumed_opt, resumed_sched, topt, tsched)
        for p, r in zip(ours, resumed, strict=True):
            np.testing.assert_array_equal(r.data, p.data)


def test_lambda_lr_saves_callable_objects_not_functions():
    p = rlgrad.tensor(np.ones(2), requires_grad=True)
    opt = optim.SGD([{"params": [p]}, {"params": [rlgrad.tensor(np.ones(2))]}], lr=0.1)
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 1.0, Warmup(7)])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None, {"n": 7}]
    json.dumps(state)
    other = Warmup(99)
    lr_scheduler.LambdaLR(opt, [lambda e: 1.0, other]).load_state_dict(state)
    assert other.n == 7


def test_resume_with_last_epoch_matches_torch():
    p = rlgrad.tensor(np.ones(2), requires_grad=True)
    q = torch.ones(2, requires_grad=True)
    opt = optim.SGD([{"params": [p], "lr": 0.05, "initial_lr": 0.1}])
    topt = torch.optim.SGD([{"params": [q], "lr": 0.05, "initial_lr": 0.1}])
    for name, kwargs in [("StepLR", {"step_size": 3}), ("CosineAnnealingLR", {"T_max": 7})]:
        sched = getattr(lr_scheduler, name)(opt, last_epoch=9, **kwargs)
        tsched = getattr(torch.optim.lr_scheduler, name)(topt, last_epoch=9, **kwargs)
        for _ in range(15):
            topt.step()
            sched.step()
            tsched.step()
            assert_same_lrs(opt, sched, topt, tsched)


def test_resume_without_initial_lr_raises():
    opt = optim.SGD([rlgrad.tensor(np.ones(2), requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=4)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("LinearLR", {"start_factor": 0.0}),
        ("LinearLR", {"start_factor": 1.5}),
        ("LinearLR", {"end_factor": -0.1}),
        ("LinearLR", {"end_factor": 1.1}),
        ("LambdaLR", {"lr_lambda": [lambda e: 1.0] * 3}),
    ],
)
def test_bad_arguments_raise_like_torch(name, kwargs):
    q = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError) as torch_error:
        getattr(torch.optim.lr_scheduler, name)(torch.optim.SGD([q], lr=0.1), **kwargs)
    opt = optim.SGD([rlgrad.tensor(np.ones(2), requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError) as error:
        getattr(lr_scheduler, name)(opt, **kwargs)
    assert str(error.value) == str(torch_error.value)


def test_needs_an_optimizer():
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)


def test_load_state_dict_checks_group_count():
    opt = optim.SGD([rlgrad.tensor(np.ones(2), requires_grad=True)], lr=0.1)
    state = lr_scheduler.StepLR(opt, step_size=2).state_dict()
    two = optim.SGD(
        [{"params": [rlgrad.tensor(np.ones(2))]}, {"params": [rlgrad.tensor(np.ones(2))]}], lr=0.1
    )
    with pytest.raises(ValueError, match="2 param groups"):
        lr_scheduler.StepLR(two, step_size=2).load_state_dict(state)
