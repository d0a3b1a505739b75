"""rlgrad.optim optimizers against torch.optim, step by step, in float64 (and float32)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import rlgrad
from rlgrad import optim
from rlgrad.optim import flatten_state_dict, unflatten_state_dict

PAIRS = {
    "SGD": (optim.SGD, torch.optim.SGD),
    "Adagrad": (optim.Adagrad, torch.optim.Adagrad),
    "RMSprop": (optim.RMSprop, torch.optim.RMSprop),
    "Adam": (optim.Adam, torch.optim.Adam),
    "AdamW": (optim.AdamW, torch.optim.AdamW),
}

# Every option of every optimizer, alone and combined.
CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "maximize": True}),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1, "nesterov": True, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05}),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5}),
    ("Adagrad", {"lr": 0.1, "eps": 1e-3}),
    ("RMSprop", {}),
    ("RMSprop", {"alpha": 0.9}),
    ("RMSprop", {"eps": 1e-3}),
    ("RMSprop", {"weight_decay": 0.1}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"alpha": 0.9, "weight_decay": 0.1, "momentum": 0.5, "centered": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.1, "betas": (0.5, 0.9)}),
    ("Adam", {"eps": 1e-3}),
    ("Adam", {"weight_decay": 0.1}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"lr": 0.05, "betas": (0.8, 0.95), "weight_decay": 0.1, "amsgrad": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.5}),
    ("AdamW", {"weight_decay": 0.0}),
    ("AdamW", {"amsgrad": True}),
    ("AdamW", {"lr": 0.1, "betas": (0.5, 0.9), "eps": 1e-3, "amsgrad": True}),
]
CASE_IDS = [f"{kind}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for kind, kw in CASES]

# Group 0 holds a scalar-shaped and a vector parameter, group 1 (its own lr) a matrix and a vector.
SHAPES = [(), (3,), (2, 3), (4,)]
GROUP1_LR = 0.02
STEPS = 12
STATE_NAMES = {
    "step", "momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg",
    "grad_avg", "sum",
}  # fmt: skip
RTOL, ATOL = 1e-12, 1e-14


def initial_arrays(dtype=np.float64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=shape).astype(dtype) for shape in SHAPES]


def gradient_schedule(dtype=np.float64) -> list[list[np.ndarray | None]]:
    """Seeded gradients for every step: magnitudes vary over two decades (so AMSGrad's max
    matters), the last parameter has no grad at step 0 (its state starts late), the second none
    at step 4, and step 7 is all zeros."""
    rng = np.random.default_rng(1)
    schedule = []
    for t in range(STEPS):
        scale = 10 ** rng.uniform(-1, 1)
        grads = [np.asarray(scale * rng.normal(size=shape), dtype) for shape in SHAPES]
        if t == 0:
            grads[3] = None
        if t == 4:
            grads[1] = None
        if t == 7:
            grads = [np.zeros(shape, dtype) for shape in SHAPES]
        schedule.append(grads)
    return schedule


def groups(params: list) -> list[dict]:
    return [{"params": params[:2]}, {"params": params[2:], "lr": GROUP1_LR}]


def build(kind: str, kwargs: dict, dtype=np.float64):
    """The same parameters and optimizer in rlgrad and in torch (single-tensor code path)."""
    ours_cls, torch_cls = PAIRS[kind]
    arrays = initial_arrays(dtype)
    ours = [rlgrad.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    opt = ours_cls(groups(ours), **kwargs)
    topt = torch_cls(groups(theirs), **kwargs, foreach=False)
    return ours, opt, theirs, topt


def set_grads(ours: list, theirs: list, grads: list) -> None:
    for p, q, g in zip(ours, theirs, grads, strict=True):
        p.grad = None if g is None else g.copy()
        q.grad = None if g is None else torch.tensor(g)


def assert_match_torch(opt, ours, topt, theirs, rtol=RTOL, atol=ATOL) -> None:
    for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=rtol, atol=atol, err_msg=f"{i}")
        ours_state = opt.state[p] if p in opt.state else {}
        torch_state = topt.state[q] if q in topt.state else {}
        assert set(ours_state) == set(torch_state), f"param {i}"
        assert set(ours_state) <= STATE_NAMES
        for name, value in ours_state.items():
            expected = torch_state[name]
            if name == "step":
                assert value == expected.item(), f"param {i} step"
            else:
                assert value.dtype == p.data.dtype, f"param {i} {name} dtype"
                np.testing.assert_allclose(
                    value, expected.numpy(), rtol=rtol, atol=atol, err_msg=f"param {i} {name}"
                )


@pytest.mark.parametrize(("kind", "kwargs"), CASES, ids=CASE_IDS)
def test_matches_torch_every_step(kind, kwargs):
    ours, opt, theirs, topt = build(kind, kwargs)
    data_before = [p.data for p in ours]
    for grads in gradient_schedule():
        set_grads(ours, theirs, grads)
        opt.step()
        topt.step()
        assert_match_torch(opt, ours, topt, theirs)
        for p, g in zip(ours, grads, strict=True):  # the optimizer must not write into .grad
            if g is not None:
                np.testing.assert_array_equal(p.grad, g)
    # Updated in place: views and aliases held by modules stay valid.
    assert all(p.data is before for p, before in zip(ours, data_before, strict=True))
    assert all(p.data.dtype == np.float64 for p in ours)


@pytest.mark.parametrize(("kind", "kwargs"), CASES, ids=CASE_IDS)
def test_float32_stays_float32(kind, kwargs):
    ours, opt, theirs, topt = build(kind, kwargs, dtype=np.float32)
    for grads in gradient_schedule(np.float32):
        set_grads(ours, theirs, grads)
        opt.step()
        topt.step()
    for p in ours:
        assert p.data.dtype == np.float32
    # Both libraries compute in single precision, in slightly different orders.
    assert_match_torch(opt, ours, topt, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kind", "kwargs"), CASES, ids=CASE_IDS)
def test_state_dict_layout_matches_torch(kind, kwargs):
    ours, opt, theirs, topt = build(kind, kwargs)
    for grads in gradient_schedule()[:3]:
        set_grads(ours, theirs, grads)
        opt.step()
        topt.step()
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sorted(sd["state"]) == sorted(tsd["state"])
    for index, param_state in sd["state"].items():
        assert set(param_state) == set(tsd["state"][index])
    assert len(sd["param_groups"]) == len(tsd["param_groups"])
    for group, tgroup in zip(sd["param_groups"], tsd["param_groups"], strict=True):
        # Ours holds a subset of torch's keys (no foreach/fused/... flags), with equal values.
        assert {k: tgroup[k] for k in group} == group


@pytest.mark.parametrize(("kind", "kwargs"), CASES, ids=CASE_IDS)
def test_state_dict_round_trip_through_npz_and_json(kind, kwargs, tmp_path):
    ours, opt, theirs, topt = build(kind, kwargs)
    schedule = gradient_schedule()
    for grads in schedule[:6]:
        set_grads(ours, theirs, grads)
        opt.step()
        topt.step()

    arrays, meta = flatten_state_dict(opt.state_dict(), prefix="optim.")
    np.savez(tmp_path / "optim.npz", **arrays)
    (tmp_path / "optim.json").write_text(json.dumps(meta))
    with np.load(tmp_path / "optim.npz") as saved_arrays:
        loaded = unflatten_state_dict(
            saved_arrays, json.loads((tmp_path / "optim.json").read_text())
        )

    # A fresh run: parameters restored (as a model checkpoint would), optimizer from the files.
    resumed = [rlgrad.tensor(p.data, requires_grad=True) for p in ours]
    resumed_opt = PAIRS[kind][0](groups(resumed), **kwargs)
    resumed_opt.load_state_dict(loaded)

    for grads in schedule[6:]:
        set_grads(ours, theirs, grads)
        set_grads(resumed, theirs, grads)
        opt.step()
        resumed_opt.step()
        topt.step()
        for p, r in zip(ours, resumed, strict=True):
            np.testing.assert_array_equal(r.data, p.data)  # identical to the uninterrupted run
        assert_match_torch(resumed_opt, resumed, topt, theirs)
    assert_states_equal(resumed_opt.state_dict(), opt.state_dict())


def assert_states_equal(a: dict, b: dict) -> None:
    def as_json(groups):  # JSON turns tuples (betas) into lists
        return json.loads(json.dumps(groups))

    assert as_json(a["param_groups"]) == as_json(b["param_groups"])
    assert a["state"].keys() == b["state"].keys()
    for index in a["state"]:
        assert a["state"][index].keys() == b["state"][index].keys()
        for name, value in a["state"][index].items():
            np.testing.assert_array_equal(value, b["state"][index][name])


def test_add_param_group_matches_torch():
    for kind, kwargs in [("Adam", {"lr": 0.1}), ("Adagrad", {"lr": 0.1}), ("SGD", {"lr": 0.1})]:
        ours_cls, torch_cls = PAIRS[kind]
        arrays = initial_arrays()
        ours = [rlgrad.tensor(a, requires_grad=True) for a in arrays]
        theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
        opt = ours_cls(ours[:2], **kwargs)
        topt = torch_cls(theirs[:2], **kwargs, foreach=False)
        for t, grads in enumerate(gradient_schedule()):
            if t == 3:
                opt.add_param_group({"params": ours[2:], "lr": GROUP1_LR})
                topt.add_param_group({"params": theirs[2:], "lr": GROUP1_LR})
            active = 2 if t < 3 else 4
            set_grads(ours[:active], theirs[:active], grads[:active])
            opt.step()
            topt.step()
            assert_match_torch(opt, ours, topt, theirs)


def test_group_hyperparameters_override_defaults():
    ours = [rlgrad.tensor(a, requires_grad=True) for a in initial_arrays()]
    opt = optim.Adam([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.5, "amsgrad": True}])
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.5]
    assert [g["amsgrad"] for g in opt.param_groups] == [False, True]
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    assert opt.param_groups[1]["params"][0] is ours[2]


def test_grad_none_param_is_skipped():
    p, q = (rlgrad.tensor(np.ones(3), requires_grad=True) for _ in range(2))
    opt = optim.Adam([p, q], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    assert q not in opt.state
    np.testing.assert_array_equal(q.data, np.ones(3))
    q.grad = np.ones(3)
    p.grad = None
    before = {name: np.copy(v) for name, v in opt.state[p].items()}
    opt.step()
    assert opt.state[p].keys() == before.keys()
    for name, value in opt.state[p].items():
        np.testing.assert_array_equal(value, before[name])
    assert opt.state[q]["step"] == 1


def test_sgd_momentum_is_textbook_heavy_ball_while_lr_is_constant():
    """v_t = beta v_{t-1} + alpha g_t; theta -= v_t  equals torch's form for a constant lr."""
    rng = np.random.default_rng(2)
    alpha, beta = 0.1, 0.9
    p = rlgrad.tensor(rng.normal(size=5), requires_grad=True)
    theta = p.data.copy()
    velocity = np.zeros(5)
    opt = optim.SGD([p], lr=alpha, momentum=beta)
    for t in range(20):
        g = rng.normal(size=5)
        if t == 10:  # from here on the two forms part ways, as the docstring says
            alpha = opt.param_groups[0]["lr"] = 0.01
        p.grad = g.copy()
        opt.step()
        velocity = beta * velocity + alpha * g
        theta -= velocity
        if t < 10:
            np.testing.assert_allclose(p.data, theta, rtol=1e-12, atol=1e-12)
    assert not np.allclose(p.data, theta, rtol=1e-6, atol=1e-6)


def test_adamw_without_decay_is_adam():
    a, b = (rlgrad.tensor(initial_arrays()[2], requires_grad=True) for _ in range(2))
    adam, adamw = optim.Adam([a], lr=0.1), optim.AdamW([b], lr=0.1, weight_decay=0.0)
    for grads in gradient_schedule():
        a.grad, b.grad = grads[2], grads[2]
        adam.step()
        adamw.step()
    np.testing.assert_array_equal(a.data, b.data)


# --- bad hyperparameters: the same ValueError as torch -----------------------------------------

BAD = [
    ("SGD", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("SGD", {"lr": 0.1, "momentum": -0.5}, "Invalid momentum value: -0.5"),
    ("SGD", {"lr": 0.1, "weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    (
        "SGD",
        {"lr": 0.1, "nesterov": True},
        "Nesterov momentum requires a momentum and zero dampening",
    ),
    (
        "SGD",
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
        "Nesterov momentum requires a momentum and zero dampening",
    ),
    ("Adagrad", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("Adagrad", {"lr_decay": -0.1}, "Invalid lr_decay value: -0.1"),
    ("Adagrad", {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    (
        "Adagrad",
        {"initial_accumulator_value": -1.0},
        "Invalid initial_accumulator_value value: -1.0",
    ),
    ("Adagrad", {"eps": -1e-10}, "Invalid epsilon value: -1e-10"),
    ("RMSprop", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("RMSprop", {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    ("RMSprop", {"momentum": -0.9}, "Invalid momentum value: -0.9"),
    ("RMSprop", {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ("RMSprop", {"alpha": -0.99}, "Invalid alpha value: -0.99"),
    ("Adam", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("Adam", {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    ("Adam", {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    ("Adam", {"betas": (-0.1, 0.999)}, "Invalid beta parameter at index 0: -0.1"),
    ("Adam", {"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    ("Adam", {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ("AdamW", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("AdamW", {"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    ("AdamW", {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    ("AdamW", {"betas": (0.9, 1.5)}, "Invalid beta parameter at index 1: 1.5"),
    ("AdamW", {"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
]


@pytest.mark.parametrize(("kind", "kwargs", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_hyperparameters_raise_like_torch(kind, kwargs, message):
    ours_cls, torch_cls = PAIRS[kind]
    with pytest.raises(ValueError) as torch_error:
        torch_cls([torch.zeros(2, requires_grad=True)], **kwargs)
    assert str(torch_error.value) == message
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ours_cls([rlgrad.tensor(np.zeros(2), requires_grad=True)], **kwargs)


def test_bad_hyperparameter_in_a_group_raises():
    p, q = (rlgrad.tensor(np.zeros(2), requires_grad=True) for _ in range(2))
    with pytest.raises(ValueError, match="Invalid learning rate: -0.5"):
        optim.SGD([{"params": [p]}, {"params": [q], "lr": -0.5}], lr=0.1)
    opt = optim.Adam([p])
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.0"):
        opt.add_param_group({"params": [q], "betas": (0.9, 1.0)})
    assert len(opt.param_groups) == 1


# --- the base class ------------------------------------------------------------------------------


def test_params_validation():
    p, q = (rlgrad.tensor(np.zeros(2), requires_grad=True) for _ in range(2))
    with pytest.raises(ValueError, match="duplicate"):
        optim.SGD([p, q, p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [q, p]}], lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [p]})
    with pytest.raises(TypeError, match="can only optimize Tensors.*numpy.ndarray"):
        optim.SGD([p, np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="got a dict"):
        optim.SGD({"params": [p]}, lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])


def test_generator_params_and_single_tensor_group():
    p, q = (rlgrad.tensor(np.zeros(2), requires_grad=True) for _ in range(2))
    opt = optim.SGD((x for x in [p]), lr=0.1)
    opt.add_param_group({"params": q})
    assert opt.param_groups[0]["params"][0] is p
    assert opt.param_groups[1]["params"][0] is q


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    p, q = (rlgrad.tensor(np.ones(2), requires_grad=True) for _ in range(2))
    grad = np.ones(2)
    p.grad = grad
    opt = optim.SGD([p, q], lr=0.1)
    opt.zero_grad(set_to_none=set_to_none)
    if set_to_none:
        assert p.grad is None
    else:
        assert p.grad is grad
        np.testing.assert_array_equal(grad, np.zeros(2))
    assert q.grad is None


@pytest.mark.parametrize(("kind", "kwargs"), CASES[::3], ids=CASE_IDS[::3])
def test_engine_gradients_of_a_0d_parameter(kind, kwargs):
    """backward() may leave a numpy scalar, not a 0-d array, as the grad of a 0-d parameter."""
    p = rlgrad.tensor(1.5, requires_grad=True)
    q = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    opt, topt = PAIRS[kind][0]([p], **kwargs), PAIRS[kind][1]([q], **kwargs)
    data = p.data
    for _ in range(3):
        opt.zero_grad()
        topt.zero_grad()
        (p * p * p).backward()
        (q * q * q).backward()
        opt.step()
        topt.step()
    assert p.data is data and p.data.shape == ()
    np.testing.assert_allclose(p.data, q.item(), rtol=RTOL)
    opt.zero_grad(set_to_none=False)
    assert p.grad == 0.0


def test_step_calls_closure_and_returns_its_loss():
    p = rlgrad.tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.SGD([p], lr=0.25)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert len(calls) == 1
    assert loss.item() == 5.0
    np.testing.assert_allclose(p.data, [0.5, -1.0])  # theta - 0.25 * 2 theta
    assert opt.step() is None


def test_state_dict_returns_copies_and_load_copies():
    p = rlgrad.tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg"] is not opt.state[p]["exp_avg"]
    sd["state"][0]["exp_avg"] += 100.0
    assert opt.state[p]["exp_avg"][0] < 1.0

    other = optim.Adam([rlgrad.tensor(np.ones(3), requires_grad=True)])
    other.load_state_dict(sd)
    loaded = next(iter(other.state.values()))
    sd["state"][0]["exp_avg"][:] = -1.0  # the caller's arrays are not aliased
    assert loaded["exp_avg"][0] > 100.0
    assert other.param_groups[0]["lr"] == 0.1  # hyperparameters come from the state dict


def test_load_state_dict_restores_tuple_betas_after_json():
    p = rlgrad.tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam([p], betas=(0.5, np.float32(0.75)), lr=np.float32(0.5))
    _, meta = flatten_state_dict(opt.state_dict())
    fresh = optim.Adam([rlgrad.tensor(np.ones(3), requires_grad=True)])
    fresh.load_state_dict(unflatten_state_dict({}, json.loads(json.dumps(meta))))
    assert fresh.param_groups[0]["betas"] == (0.5, 0.75)
    assert fresh.param_groups[0]["lr"] == 0.5


def test_load_state_dict_casts_to_param_dtype():
    p = rlgrad.tensor(np.ones(3), requires_grad=True)
    opt = optim.RMSprop([p])
    p.grad = np.ones(3)
    opt.step()
    q = rlgrad.tensor(np.ones(3, np.float32), requires_grad=True)
    opt32 = optim.RMSprop([q])
    opt32.load_state_dict(opt.state_dict())
    assert opt32.state[q]["square_avg"].dtype == np.float32


def _adam_state_dict(shapes):
    params = [rlgrad.tensor(np.ones(s), requires_grad=True) for s in shapes]
    opt = optim.Adam(params)
    for p in params:
        p.grad = np.ones(p.data.shape)
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize(
    ("make_target", "message"),
    [
        (
            lambda ps: optim.Adam([{"params": ps[:1]}, {"params": ps[1:]}]),
            "1 parameter group.s., but the optimizer has 2",
        ),
        (lambda ps: optim.Adam(ps[:1]), "has 2 parameters in group 0"),
        (lambda ps: optim.SGD(ps), "lacks hyperparameters"),
    ],
    ids=["group-count", "group-size", "other-optimizer"],
)
def test_load_state_dict_rejects_mismatch(make_target, message):
    sd = _adam_state_dict([(2,), (3,)])
    target = make_target([rlgrad.tensor(np.ones(s), requires_grad=True) for s in [(2,), (3,)]])
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(sd)


def test_load_state_dict_rejects_wrong_shape_and_changes_nothing():
    sd = _adam_state_dict([(2,), (3,)])
    params = [rlgrad.tensor(np.ones(s), requires_grad=True) for s in [(2,), (4,)]]
    opt = optim.Adam(params, lr=0.5)
    with pytest.raises(ValueError, match=re.escape("shape (3,), but the parameter has shape (4,)")):
        opt.load_state_dict(sd)
    assert len(opt.state) == 0
    assert opt.param_groups[0]["lr"] == 0.5


def test_load_state_dict_rejects_unknown_index():
    sd = _adam_state_dict([(2,)])
    sd["state"][5] = sd["state"][0]
    opt = optim.Adam([rlgrad.tensor(np.ones(2), requires_grad=True)])
    with pytest.raises(ValueError, match="parameter 5, which is in no parameter group"):
        opt.load_state_dict(sd)


def test_two_optimizers_in_one_npz(tmp_path):
    sd_policy = _adam_state_dict([(2,), (3,)])
    sd_value = _adam_state_dict([(4,)])
    a1, m1 = flatten_state_dict(sd_policy, prefix="policy_optim.")
    a2, m2 = flatten_state_dict(sd_value, prefix="value_optim.")
    np.savez(tmp_path / "ckpt.npz", **a1, **a2)
    with np.load(tmp_path / "ckpt.npz") as arrays:
        back = unflatten_state_dict(arrays, json.loads(json.dumps(m2)))
    assert_states_equal(back, sd_value)


def test_unflatten_reports_missing_array():
    arrays, meta = flatten_state_dict(_adam_state_dict([(2,)]))
    with pytest.raises(ValueError, match="state.0.exp_avg"):
        unflatten_state_dict({}, meta)


def test_repr_lists_groups():
    opt = optim.SGD([rlgrad.tensor(np.ones(2), requires_grad=True)], lr=0.1, momentum=0.9)
    text = repr(opt)
    assert text.startswith("SGD (") and "Parameter Group 0" in text and "momentum: 0.9" in text


# --- registry ------------------------------------------------------------------------------------

REGISTERED = [
    ("sgd", optim.SGD, {"lr": 1e-3, "momentum": 0.0, "nesterov": False}),
    ("momentum", optim.SGD, {"lr": 1e-3, "momentum": 0.9, "nesterov": False}),
    ("nesterov", optim.SGD, {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "dampening": 0.0}),
    ("adagrad", optim.Adagrad, {"lr": 1e-2, "lr_decay": 0.0, "eps": 1e-10}),
    ("rmsprop", optim.RMSprop, {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "centered": False}),
    ("adam", optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}),
    ("adamw", optim.AdamW, {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 1e-2}),
]


@pytest.mark.parametrize(("name", "cls", "defaults"), REGISTERED, ids=[r[0] for r in REGISTERED])
def test_make_builds_registered_optimizer(name, cls, defaults):
    p = rlgrad.tensor(np.ones(2), requires_grad=True)
    opt = optim.make(name, [p])
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert {k: group[k] for k in defaults} == defaults
    assert optim.make(name, [p], lr=0.5).param_groups[0]["lr"] == 0.5


def test_make_torch_defaults_agree():
    """The registry's defaults are torch's (for the names torch has)."""
    for name, torch_cls in [
        ("sgd", torch.optim.SGD),
        ("adagrad", torch.optim.Adagrad),
        ("rmsprop", torch.optim.RMSprop),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
    ]:
        ours = optim.make(name, [rlgrad.tensor(np.ones(2), requires_grad=True)])
        theirs = torch_cls([torch.ones(2, requires_grad=True)])
        group, tgroup = ours.param_groups[0], theirs.param_groups[0]
        assert {k: v for k, v in group.items() if k != "params"} == {
            k: tgroup[k] for k in group if k != "params"
        }


def test_make_unknown_name_lists_known_ones():
    p = rlgrad.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="did you mean 'adam'.*adagrad, adam, adamw, momentum"):
        optim.make("adma", [p])
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'") as error:
        optim.make("lbfgs", [p])
    assert "did you mean" not in str(error.value)


def test_register_function_and_decorator():
    try:
        optim.register("slow_sgd", optim.SGD, lr=1e-5)
        assert optim.make("slow_sgd", [rlgrad.tensor(np.ones(2))]).param_groups[0]["lr"] == 1e-5

        @optim.register("my_adam")
        class MyAdam(optim.Adam):
            pass

        assert type(optim.make("my_adam", [rlgrad.tensor(np.ones(2))])) is MyAdam
        with pytest.raises(ValueError, match="already registered"):
            optim.register("adam", MyAdam)
        optim.register("my_adam", optim.Adam, overwrite=True)
        assert optim.OPTIMIZERS["my_adam"] is optim.Adam
    finally:
        optim.OPTIMIZERS.pop("slow_sgd", None)
        optim.OPTIMIZERS.pop("my_adam", None)


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_whole_group_adam_step_is_bitwise_the_per_parameter_rule(cls, amsgrad):
    from rlgrad.optim.adam import _adam_update

    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), ()]
    a = [rlgrad.tensor(rng.normal(size=s), requires_grad=True) for s in shapes]
    b = [rlgrad.tensor(p.data.copy(), requires_grad=True) for p in a]
    opt = cls(a, lr=0.01, weight_decay=0.1, amsgrad=amsgrad)
    group = dict(opt.param_groups[0])
    states = [{} for _ in b]
    for _ in range(5):
        grads = [rng.normal(size=s) for s in shapes]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.copy(), g.copy()
        opt.step()
        for q, g, st in zip(b, grads, states):  # the reference: one parameter at a time
            if cls is optim.AdamW:
                q.data *= 1 - group["lr"] * group["weight_decay"]
                _adam_update(q.data, g, st, group)
            else:
                _adam_update(q.data, g + group["weight_decay"] * q.data, st, group)
        for p, q, st in zip(a, b, states):
            np.testing.assert_array_equal(p.data, q.data)
            for name in st:
                np.testing.assert_array_equal(opt.state[p][name], st[name])
    assert opt._buffers, "the whole-group path was not taken"


@pytest.mark.parametrize("hyper", ["lr", "beta1", "beta2"])
def test_whole_group_adam_with_a_numpy_scalar_hyperparameter_is_the_per_parameter_rule(hyper):
    """A numpy float64 hyperparameter promotes (1 - beta1) * grad of float32 parameters to
    float64; the whole-group path must not round that product into float32 scratch space."""
    from rlgrad.optim.adam import _adam_update

    rng = np.random.default_rng(1)
    shapes = [(3, 4), (4,), (2,)]
    a = [rlgrad.tensor(rng.normal(size=s).astype(np.float32), requires_grad=True)
         for s in shapes]
    b = [p.data.copy() for p in a]
    lr, beta1, beta2 = 0.01, 0.9, 0.999
    if hyper == "lr":
        lr = np.float64(lr)
    elif hyper == "beta1":
        beta1 = np.float64(beta1)
    else:
        beta2 = np.float64(beta2)
    opt = optim.Adam(a, lr=lr, betas=(beta1, beta2))
    group = dict(opt.param_groups[0])
    states = [{} for _ in b]
    for _ in range(4):
        grads = [rng.normal(size=s).astype(np.float32) for s in shapes]
        for p, g in zip(a, grads):
            p.grad = g.copy()
        opt.step()
        for q, g, st in zip(b, grads, states):
            _adam_update(q, g, st, group)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p.data, q)


def test_param_state_values_and_items_are_the_mappings():
    params = [rlgrad.tensor(np.ones(s), requires_grad=True) for s in [(2,), (3,), ()]]
    opt = optim.Adam(params)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    keys = list(opt.state)
    assert keys == [] or all(k is p for k, p in zip(keys, params))
    assert len(opt.state.values()) == len(opt.state.items()) == 3
    assert all(v is opt.state[k] for k, v in zip(keys, opt.state.values()))
    assert all(k is kk and v is opt.state[k] for (k, v), kk in zip(opt.state.items(), keys))
    assert [s["step"] for s in opt.state.values()] == [1, 1, 1]
    other = optim.Adam(params)
    other.load_state_dict(opt.state_dict())
    assert [s["step"] for s in other.state.values()] == [1, 1, 1]
    assert all(k is p for (k, _), p in zip(other.state.items(), params))


def test_whole_group_adam_with_a_gradient_of_another_dtype_steps_per_parameter():
    # the group path does not apply; the per-parameter rule must find the state untouched
    params = [rlgrad.tensor(np.ones(s, np.float32), requires_grad=True) for s in [(2,), (3,)]]
    opt = optim.Adam(params, lr=0.1)
    params[0].grad = np.ones(2)  # float64, set by hand
    params[1].grad = np.ones(3, np.float32)
    opt.step()
    assert [opt.state[p]["step"] for p in params] == [1, 1]
    np.testing.assert_allclose(params[0].data, 0.9, rtol=1e-6)
    np.testing.assert_allclose(params[1].data, 0.9, rtol=1e-6)
