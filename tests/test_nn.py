"""rlgrad.nn: Module bookkeeping, Linear (init, forward), Sequential, activations, MLP vs torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - torch's usual name

import rlgrad
from rlgrad import nn


def assert_close(actual, expected, rtol=1e-10, atol=1e-12, what=""):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def torch_sequential_like(model: nn.Sequential) -> torch.nn.Sequential:
    """A torch Sequential with the same layers and a copy of the same weights, float64."""
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            layers.append(
                torch.nn.Linear(
                    m.in_features, m.out_features, bias=m.bias is not None, dtype=torch.float64
                )
            )
        elif isinstance(m, nn.Tanh):
            layers.append(torch.nn.Tanh())
        elif isinstance(m, nn.ReLU):
            layers.append(torch.nn.ReLU())
        else:
            raise TypeError(type(m))
    tmodel = torch.nn.Sequential(*layers)
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return tmodel


def snapshot(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: p.data.copy() for k, p in module.named_parameters()}


def assert_unchanged(module: nn.Module, before: dict[str, np.ndarray]) -> None:
    after = snapshot(module)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


# --------------------------------------------------------------------------------------------
# Linear
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_features,out_features", [(1, 3), (7, 5), (256, 64)])
def test_linear_default_init_is_torchs_uniform(in_features, out_features):
    layer = nn.Linear(in_features, out_features, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(in_features)
    w, b = layer.weight.data, layer.bias.data
    assert w.shape == (out_features, in_features) and b.shape == (out_features,)
    assert w.dtype == np.float32 and b.dtype == np.float32  # torch's default dtype
    assert isinstance(layer.weight, nn.Parameter) and layer.weight.requires_grad
    assert np.all(np.abs(w) <= bound) and np.all(np.abs(b) <= bound)
    # torch draws from the same interval
    tl = torch.nn.Linear(in_features, out_features)
    assert tl.weight.abs().max().item() <= bound + 1e-7
    if w.size >= 10_000:
        # uniform on [-bound, bound]: flat histogram, variance bound^2 / 3
        counts, _ = np.histogram(w, bins=4, range=(-bound, bound))
        np.testing.assert_allclose(counts / w.size, 0.25, atol=0.02)
        assert abs(w.mean()) < 0.02 * bound
        np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.05)
        assert np.abs(w).max() > 0.99 * bound


def test_linear_init_depends_on_the_rng():
    a = nn.Linear(4, 3, rng=np.random.default_rng(1))
    b = nn.Linear(4, 3, rng=np.random.default_rng(1))
    c = nn.Linear(4, 3, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)


def gram(w: np.ndarray) -> np.ndarray:
    """W W^T when W has no more rows than columns (orthonormal rows), else W^T W."""
    return w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (64, 8)], ids=str)
@pytest.mark.parametrize("gain", [1.0, np.sqrt(2), 0.01])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_orthogonal_init(shape, gain, dtype):
    out_features, in_features = shape
    layer = nn.Linear(
        in_features,
        out_features,
        init="orthogonal",
        gain=gain,
        rng=np.random.default_rng(3),
        dtype=dtype,
    )
    w = layer.weight.data
    assert w.shape == shape and w.dtype == dtype
    # float32 precision here; the float64 case is checked to 1e-12 below
    assert_close(gram(w.astype(np.float64)), gain**2 * np.eye(min(shape)), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(layer.bias.data, np.zeros(out_features))
    # the same property as torch's orthogonal_
    tw = torch.empty(shape, dtype=torch.float64)
    torch.nn.init.orthogonal_(tw, gain=gain)
    assert_close(gram(tw.numpy()), gain**2 * np.eye(min(shape)), rtol=0, atol=1e-12)
    # and different draws from different generators
    other = nn.Linear(
        in_features,
        out_features,
        init="orthogonal",
        gain=gain,
        rng=np.random.default_rng(4),
        dtype=dtype,
    )
    assert not np.allclose(other.weight.data, w)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)], ids=str)
def test_linear_orthogonal_init_in_float64_is_orthogonal_to_float64_precision(shape):
    layer = nn.Linear(
        shape[1],
        shape[0],
        init="orthogonal",
        gain=np.sqrt(2),
        rng=np.random.default_rng(3),
        dtype=np.float64,
    )
    assert_close(gram(layer.weight.data), 2.0 * np.eye(min(shape)), rtol=0, atol=1e-12)


def test_orthogonal_init_in_float32():
    layer = nn.Linear(6, 4, init="orthogonal", gain=2.0, rng=np.random.default_rng(4))
    w = layer.weight.data.astype(np.float64)
    assert layer.weight.dtype == np.float32
    assert_close(w @ w.T, 4 * np.eye(4), rtol=0, atol=1e-5)


@pytest.mark.parametrize("x_shape", [(3,), (2, 3), (4, 2, 3), (100, 3)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_gradients_equal_torch(x_shape, bias):
    rng = np.random.default_rng(5)
    layer = nn.Linear(3, 4, bias=bias, rng=rng, dtype=np.float64)
    assert (layer.bias is None) == (not bias)
    x_np = rng.standard_normal(x_shape)
    w_out = rng.standard_normal(x_shape[:-1] + (4,))
    x = rlgrad.tensor(x_np, requires_grad=True)
    out = layer(x)
    xt = torch.tensor(x_np, requires_grad=True)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True) if bias else None
    tout = F.linear(xt, wt, bt)
    assert out.shape == tuple(tout.shape)
    assert_close(out.data, tout.detach().numpy())
    out.backward(w_out)
    tout.backward(torch.from_numpy(w_out))
    assert_close(x.grad, xt.grad.numpy())
    assert_close(layer.weight.grad, wt.grad.numpy())
    if bias:
        assert_close(layer.bias.grad, bt.grad.numpy())
    # a numpy input works as a constant
    assert_close(layer(x_np).data, tout.detach().numpy())


def test_linear_float32_matches_torch_float32():
    rng = np.random.default_rng(6)
    layer = nn.Linear(5, 3, rng=rng)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    out = layer(x)
    assert out.dtype == np.float32
    tout = F.linear(
        torch.from_numpy(x), torch.from_numpy(layer.weight.data), torch.from_numpy(layer.bias.data)
    )
    np.testing.assert_allclose(out.data, tout.numpy(), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert layer.weight.grad.dtype == np.float32 and layer.bias.grad.dtype == np.float32


def test_linear_rejects_bad_arguments():
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(ValueError):
            nn.Linear(bad, 3)
        with pytest.raises(ValueError):
            nn.Linear(3, bad)
    with pytest.raises(ValueError):
        nn.Linear(3, 3, init="xavier")
    with pytest.raises(ValueError):
        nn.Linear(3, 4)(np.ones((2, 5), dtype=np.float32))


# --------------------------------------------------------------------------------------------
# Module bookkeeping
# --------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(2, 3, rng=np.random.default_rng(7))
        self.scale = nn.Parameter(np.ones(3))
        self.head = nn.Sequential(nn.Linear(3, 3, rng=np.random.default_rng(8)), nn.Tanh())
        self.not_a_param = rlgrad.tensor(np.ones(2), requires_grad=True)

    def forward(self, x):
        return self.head(self.inner(x) * self.scale)


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(2, 3)
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.head = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh())


def test_named_parameters_follow_torchs_names_and_order():
    names = [n for n, _ in Block().named_parameters()]
    assert names == [n for n, _ in TorchBlock().named_parameters()]
    assert names == ["scale", "inner.weight", "inner.bias", "head.0.weight", "head.0.bias"]
    params = list(Block().parameters())
    assert len(params) == 5
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)


def test_shared_parameters_are_listed_once():
    layer = nn.Linear(2, 2)
    model = nn.Sequential(layer, nn.Tanh(), layer)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]


def test_reassigning_an_attribute_updates_the_registry_in_place_like_torch():
    block, tblock = Block(), TorchBlock()
    block.inner = nn.Linear(2, 3, bias=False)
    tblock.inner = torch.nn.Linear(2, 3, bias=False)
    # torch keeps a replaced submodule in its place in the order
    assert [n for n, _ in block.named_parameters()] == [n for n, _ in tblock.named_parameters()]
    block.scale = None
    tblock.scale = None
    assert [n for n, _ in block.named_parameters()] == [n for n, _ in tblock.named_parameters()]
    assert [n for n, _ in block.named_parameters()] == [
        "inner.weight",
        "head.0.weight",
        "head.0.bias",
    ]


def test_module_attributes_need_init():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError):
        Broken()


def test_zero_grad():
    model = nn.MLP([3, 4, 2], rng=np.random.default_rng(9), dtype=np.float64)
    model(np.ones((2, 3))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_is_a_copy_by_name():
    block = Block()
    sd = block.state_dict()
    assert list(sd) == [n for n, _ in block.named_parameters()]
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["scale"][:] = 5.0
    np.testing.assert_array_equal(block.scale.data, np.ones(3))


def test_load_state_dict_round_trip_in_place():
    a = nn.MLP([3, 5, 2], rng=np.random.default_rng(10), dtype=np.float64)
    b = nn.MLP([3, 5, 2], rng=np.random.default_rng(11), dtype=np.float64)
    x = np.random.default_rng(12).standard_normal((4, 3))
    assert not np.allclose(a(x).data, b(x).data)
    ids = [id(p) for p in b.parameters()]
    result = b.load_state_dict(a.state_dict())
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    assert [id(p) for p in b.parameters()] == ids  # optimizers keep their references
    np.testing.assert_array_equal(a(x).data, b(x).data)


def test_load_state_dict_strict_checks_names_and_leaves_the_module_untouched():
    model = nn.MLP([3, 4, 2], rng=np.random.default_rng(13), dtype=np.float64)
    good = nn.MLP([3, 4, 2], rng=np.random.default_rng(14), dtype=np.float64).state_dict()
    before = snapshot(model)

    missing = dict(good)
    del missing["2.bias"]
    with pytest.raises(ValueError, match=r"2\.bias"):
        model.load_state_dict(missing)
    assert_unchanged(model, before)

    unexpected = dict(good, **{"3.weight": np.ones((2, 2))})
    with pytest.raises(ValueError, match=r"3\.weight"):
        model.load_state_dict(unexpected)
    assert_unchanged(model, before)

    result = model.load_state_dict(missing, strict=False)
    assert list(result.missing_keys) == ["2.bias"]
    np.testing.assert_array_equal(model[0].weight.data, good["0.weight"])
    np.testing.assert_array_equal(model[2].bias.data, before["2.bias"])
    result = model.load_state_dict(unexpected, strict=False)
    assert list(result.unexpected_keys) == ["3.weight"]


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_checks_shapes_and_leaves_the_module_untouched(strict):
    model = nn.MLP([3, 4, 2], rng=np.random.default_rng(15), dtype=np.float64)
    good = nn.MLP([3, 4, 2], rng=np.random.default_rng(16), dtype=np.float64).state_dict()
    before = snapshot(model)
    bad = dict(good)
    bad["2.weight"] = np.ones((4, 2))  # transposed; the keys before it are fine
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad, strict=strict)
    message = str(info.value).replace(" ", "")
    assert "2.weight" in message and "(4,2)" in message and "(2,4)" in message
    assert_unchanged(model, before)


def test_state_dict_names_match_torch_and_load_from_torch():
    model = nn.MLP([3, 6, 6, 2], rng=np.random.default_rng(17), dtype=np.float64)
    tmodel = torch.nn.Sequential(
        torch.nn.Linear(3, 6),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 6),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 2),
    ).double()
    assert list(model.state_dict()) == list(tmodel.state_dict())
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    x = np.random.default_rng(18).standard_normal((5, 3))
    assert_close(model(x).data, tmodel(torch.from_numpy(x)).detach().numpy())


# --------------------------------------------------------------------------------------------
# Sequential, activations, MLP
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module,torch_fn", [(nn.Tanh(), torch.tanh), (nn.ReLU(), torch.relu)])
def test_activation_modules(module, torch_fn):
    x_np = np.array([[-2.0, -0.5, 0.0], [0.3, 1.0, 4.0]])
    x, xt = rlgrad.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    out, tout = module(x), torch_fn(xt)
    assert_close(out.data, tout.detach().numpy())
    out.backward(np.arange(6.0).reshape(2, 3))
    tout.backward(torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    assert_close(x.grad, xt.grad.numpy())
    assert list(module.parameters()) == []


def test_sequential():
    rng = np.random.default_rng(19)
    l1, l2 = nn.Linear(3, 4, rng=rng, dtype=np.float64), nn.Linear(4, 2, rng=rng, dtype=np.float64)
    model = nn.Sequential(l1, nn.ReLU(), l2)
    assert len(model) == 3 and model[0] is l1 and model[-1] is l2
    x = rng.standard_normal((5, 3))
    expected = l2(l1(x).relu())
    np.testing.assert_array_equal(model(x).data, expected.data)
    with pytest.raises(TypeError):
        nn.Sequential(l1, lambda t: t)


def test_mlp_structure():
    model = nn.MLP([4, 8, 8, 2])
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [m.weight.shape for m in model if isinstance(m, nn.Linear)] == [(8, 4), (8, 8), (2, 8)]
    model = nn.MLP([4, 8, 2], activation="relu", output_activation="tanh")
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.Tanh]
    model = nn.MLP([4, 8, 2], activation=nn.ReLU)
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert len(list(nn.MLP([3, 1]).parameters())) == 2
    with pytest.raises(ValueError):
        nn.MLP([4])
    with pytest.raises(ValueError):
        nn.MLP([4, 2, 2], activation="swish")


def test_mlp_orthogonal_init_gains():
    model = nn.MLP(
        [6, 5, 3],
        init="orthogonal",
        output_gain=0.01,
        rng=np.random.default_rng(20),
        dtype=np.float64,
    )
    hidden, out = model[0].weight.data, model[2].weight.data
    assert_close(hidden @ hidden.T, 2.0 * np.eye(5), rtol=0, atol=1e-6)  # gain sqrt(2)
    assert_close(out @ out.T, 1e-4 * np.eye(3), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(model[2].bias.data, np.zeros(3))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("output_activation", [None, "tanh"])
def test_mlp_forward_and_parameter_gradients_equal_torch(activation, output_activation):
    rng = np.random.default_rng(21)
    model = nn.MLP(
        [4, 16, 16, 3],
        activation=activation,
        output_activation=output_activation,
        rng=rng,
        dtype=np.float64,
    )
    tmodel = torch_sequential_like(model)
    obs = rng.standard_normal((32, 4))
    actions = rng.integers(0, 3, 32)
    adv = rng.standard_normal(32)
    returns = rng.standard_normal((32, 3))

    out = model(obs)
    tout = tmodel(torch.from_numpy(obs))
    assert_close(out.data, tout.detach().numpy())
    # a categorical policy-gradient loss plus a regression loss
    logp = rlgrad.log_softmax(out)
    loss = -(logp[np.arange(32), actions] * adv).mean() + ((out - returns) ** 2).mean()
    tlogp = torch.log_softmax(tout, -1)
    tloss = (
        -(tlogp[torch.arange(32), torch.from_numpy(actions)] * torch.from_numpy(adv)).mean()
        + ((tout - torch.from_numpy(returns)) ** 2).mean()
    )
    assert_close(loss.item(), tloss.item())
    loss.backward()
    tloss.backward()
    tparams = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape
        assert_close(p.grad, tparams[name].grad.numpy(), what=name)


def test_mlp_gradients_for_a_single_observation():
    rng = np.random.default_rng(22)
    model = nn.MLP([3, 5, 2], rng=rng, dtype=np.float64)
    tmodel = torch_sequential_like(model)
    obs = rng.standard_normal(3)
    out, tout = model(obs), tmodel(torch.from_numpy(obs))
    assert out.shape == (2,)
    rlgrad.log_softmax(out)[1].backward()
    torch.log_softmax(tout, -1)[1].backward()
    tparams = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), what=name)


@pytest.mark.parametrize("obs_shape", [(3,), (6, 3)], ids=str)
@pytest.mark.parametrize("out_features", [1, 2])
def test_mlp_gradient_with_respect_to_the_observation(obs_shape, out_features):
    """Saliency of a value head (one output) and of a policy head, as torch computes it."""
    rng = np.random.default_rng(23)
    model = nn.MLP([3, 5, out_features], rng=rng, dtype=np.float64)
    tmodel = torch_sequential_like(model)
    obs_np = rng.standard_normal(obs_shape)
    obs = rlgrad.tensor(obs_np, requires_grad=True)
    tobs = torch.tensor(obs_np, requires_grad=True)
    model(obs).sum().backward()
    tmodel(tobs).sum().backward()
    assert obs.grad.shape == obs_shape
    assert_close(obs.grad, tobs.grad.numpy())


def test_mlp_under_no_grad_builds_no_graph():
    model = nn.MLP([3, 4, 2])
    with rlgrad.no_grad():
        out = model(np.ones((2, 3), dtype=np.float32))
    assert out.requires_grad is False


# --------------------------------------------------------------------------------------------
# MLP's fused layer stack
# --------------------------------------------------------------------------------------------


def layer_by_layer(model: nn.MLP, x):
    """The MLP run one module after another (Sequential's forward): the unfused reference."""
    return nn.Sequential.forward(model, x)


def forward_backward(forward, model, x, g, x_grad=True):
    model.zero_grad()
    xt = rlgrad.tensor(x, requires_grad=x_grad)
    out = forward(xt)
    out.backward(g)
    return out, xt.grad, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape", [(5,), (7, 5), (64, 5), (3, 4, 5)], ids=str)
@pytest.mark.parametrize("output_activation", [None, "tanh", "relu"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_mlp_is_bitwise_the_layer_by_layer_graph(activation, output_activation, x_shape,
                                                       dtype):
    rng = np.random.default_rng(30)
    model = nn.MLP([5, 8, 6, 3], activation=activation, output_activation=output_activation,
                   rng=rng, dtype=dtype)
    x = rng.standard_normal(x_shape).astype(dtype)
    g = rng.standard_normal(x_shape[:-1] + (3,)).astype(dtype)
    out, gx, gps = forward_backward(model, model, x, g)
    assert len(out._parents) == 1 + 6  # one node: x and the three layers' weights and biases
    ref, ref_gx, ref_gps = forward_backward(lambda t: layer_by_layer(model, t), model, x, g)
    np.testing.assert_array_equal(out.data, ref.data)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    np.testing.assert_array_equal(gx, ref_gx)
    for name, p, q in zip(dict(model.named_parameters()), gps, ref_gps):
        assert p.dtype == q.dtype, name
        np.testing.assert_array_equal(p, q, err_msg=name)
    with rlgrad.no_grad():  # the numpy-only inference path
        inferred = model(x)
    assert inferred.requires_grad is False and inferred._parents == ()
    np.testing.assert_array_equal(inferred.data, ref.data)


def test_fused_mlp_with_frozen_layers_and_float64_inputs_matches_the_unfused_graph():
    rng = np.random.default_rng(31)
    model = nn.MLP([4, 6, 6, 1], rng=rng)  # float32 weights
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    x = rng.standard_normal((9, 4))  # float64: promotes every layer to float64
    g = rng.standard_normal((9, 1))
    out, gx, gps = forward_backward(model, model, x, g, x_grad=False)
    ref, _, ref_gps = forward_backward(lambda t: layer_by_layer(model, t), model, x, g,
                                       x_grad=False)
    assert out.dtype == np.float64 and gx is None
    np.testing.assert_array_equal(out.data, ref.data)
    assert gps[0] is None and gps[1] is None
    for p, q in zip(gps[2:], ref_gps[2:]):
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_layer_stack_gradients_match_central_differences(activation):
    from rlgrad.nn import _layer_stack

    rng = np.random.default_rng(32)
    # x, then W1 b1 (activation), W2 without a bias (activation), W3 b3 (no activation)
    inputs = [rng.standard_normal(s) for s in [(6, 3), (4, 3), (4,), (4, 4), (2, 4), (2,)]]

    def fn(x, w1, b1, w2, w3, b3):
        return _layer_stack(x, [[w1, b1, activation], [w2, None, activation], [w3, b3, None]])

    assert rlgrad.gradcheck(fn, inputs)


def test_fused_mlp_double_backward_matches_torch():
    """Hessian-vector products through the fused stack (create_graph recomputes the layers on
    the graph) against torch, for the parameters and the input."""
    rng = np.random.default_rng(33)
    model = nn.MLP([3, 5, 4, 2], rng=rng, dtype=np.float64)
    tmodel = torch_sequential_like(model)
    x_np = rng.standard_normal((6, 3))
    x = rlgrad.tensor(x_np, requires_grad=True)
    params = [x, *model.parameters()]
    vs = [rng.standard_normal(p.shape) for p in params]
    out = model(x)
    assert len(out._parents) == 7
    (hv_x, *hv) = rlgrad.hvp((out * out).sum() + out.sum(), params, vs)

    tx = torch.tensor(x_np, requires_grad=True)
    tparams = [tx, *tmodel.parameters()]
    tout = tmodel(tx)
    tg = torch.autograd.grad((tout * tout).sum() + tout.sum(), tparams, create_graph=True)
    dot = sum((g * torch.from_numpy(v)).sum() for g, v in zip(tg, vs))
    thv = torch.autograd.grad(dot, tparams)
    assert_close(hv_x, thv[0].numpy(), what="x")
    for (name, _), h, th in zip(model.named_parameters(), hv, thv[1:]):
        assert_close(h, th.numpy(), what=name)


def test_mlp_with_a_replaced_module_runs_module_by_module():
    rng = np.random.default_rng(34)
    model = nn.MLP([3, 4, 2], rng=rng, dtype=np.float64)
    model.__setattr__("1", nn.Sigmoid())  # not fusable: Sequential's path
    x = rng.standard_normal((5, 3))
    out = model(x)
    assert len(out._parents) != 5  # the last linear node, not the fused stack
    w0, b0, w2, b2 = (p.data for p in model.parameters())
    want = (1 / (1 + np.exp(-(x @ w0.T + b0)))) @ w2.T + b2
    assert_close(out.data, want)


def test_fused_mlp_rejects_an_input_of_the_wrong_width():
    model = nn.MLP([4, 3, 2])
    for grad_mode in (rlgrad.enable_grad, rlgrad.no_grad):
        with grad_mode(), pytest.raises(ValueError, match=r"input of shape \(2, 5\) does not "
                                                          r"fit a weight of shape \(3, 4\)"):
            model(np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("moving", ["all", "params", "x", "last bias"])
def test_fused_layer_stack_tangent_is_the_directional_derivative(activation, moving):
    """Forward mode through the fused node (for Fisher-vector products) against central
    differences along the tangents, in float64, with some inputs held still."""
    from rlgrad.nn import _layer_stack, _layer_stack_tangent

    rng = np.random.default_rng(35)
    # x, then W1 b1, W2 (no bias), W3 b3; every layer with the activation
    shapes = [(6, 3), (5, 3), (5,), (4, 5), (2, 4), (2,)]
    values = [rng.standard_normal(s) for s in shapes]

    def stack(vals, grad=True):
        x, w1, b1, w2, w3, b3 = (rlgrad.tensor(v, requires_grad=grad) for v in vals)
        return _layer_stack(x, [[w1, b1, activation], [w2, None, activation],
                                [w3, b3, activation]])

    dots = [rng.standard_normal(s) for s in shapes]
    if moving == "params":
        dots[0] = None
    elif moving == "x":
        dots[1:] = [None] * 5
    elif moving == "last bias":
        dots[:-1] = [None] * 5
    frozen = [None if d is None else d.copy() for d in dots]
    out = stack(values)
    got = _layer_stack_tangent(out, dots)
    eps = 1e-6
    with rlgrad.no_grad():
        plus = stack([v if d is None else v + eps * d for v, d in zip(values, dots)], False)
        minus = stack([v if d is None else v - eps * d for v, d in zip(values, dots)], False)
    assert_close(got, (plus.data - minus.data) / (2 * eps), rtol=1e-6, atol=1e-8)
    for d, f in zip(dots, frozen):  # the given tangents are not written into
        assert (d is None and f is None) or np.array_equal(d, f)
