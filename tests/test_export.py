"""rlgrad.export and rlgrad/policy_loader.py: the exported deterministic action, from onnxruntime
and from the numpy-only loader (run in a subprocess that cannot import rlgrad), against rlgrad's
own forward with the normalisation, squashing and clipping written out in float64."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import rlgrad
from rlgrad import nn
from rlgrad.distributions import Normal
from rlgrad.export import LOADER, ONNX_OPSET, export_policy
from rlgrad.policies import CategoricalPolicy, GaussianPolicy, ValueFunction
from rlgrad.tensor import Tensor, no_grad

OBS_DIM, N_ACTIONS, ACTION_DIM, N_OBS = 5, 4, 3, 1000
NORMALIZER = {"mean": [0.5, -1.0, 2.0, 0.0, 0.3], "var": [4.0, 0.25, 1.0, 9.0, 0.01],
              "epsilon": 1e-8, "clip": 5.0}
INF = float("inf")
CLIP_BOUNDS = ([-0.3, -INF, 0.0], [0.2, 1.0, INF])
SQUASH_BOUNDS = ([-0.3, -2.0, 0.0], [0.2, 1.0, 5.0])
U32 = float(np.finfo(np.float32).eps) / 2  # the unit roundoff of float32
# onnxruntime's vectorised tanh and sigmoid are not correctly rounded: allow them a few ulps
ACTIVATION_ULPS = 8
LIPSCHITZ = {nn.Tanh: 1.0, nn.ReLU: 1.0, nn.Sigmoid: 0.25, nn.Identity: 1.0}

DISCRETE = [("discrete", act, norm, None, False)
            for act in ("tanh", "relu", "sigmoid") for norm in (False, True)]
CONTINUOUS = [("continuous", act, norm, bounds, squash)
              for act in ("tanh", "relu", "sigmoid") for norm in (False, True)
              for bounds, squash in ((None, False), (CLIP_BOUNDS, False), (None, True),
                                     (SQUASH_BOUNDS, True))]
CASES = DISCRETE + CONTINUOUS


def case_id(case) -> str:
    kind, act, norm, bounds, squash = case
    b = "nobounds" if bounds is None else "bounds"
    return f"{kind}-{act}-{'norm' if norm else 'raw'}-{b}-{'squash' if squash else 'mean'}"


def make_policy(kind: str, activation: str, seed: int = 0):
    """Random weights from rlgrad's own init, then each Linear rescaled so that its outputs have
    mean 0 and std 1 over a sample of observations (a data-dependent init): the outputs are
    O(1) and well conditioned whatever the activation, so the argmax varies and the bounds bite
    (with init alone, sigmoid hidden units vary by ~1% and one action wins nearly everywhere)."""
    rng = np.random.default_rng(seed)
    cls, n_out = (CategoricalPolicy, N_ACTIONS) if kind == "discrete" else (GaussianPolicy,
                                                                           ACTION_DIM)
    policy = cls(OBS_DIM, n_out, hidden_sizes=(16, 16), activation=activation, init="default",
                 rng=rng)
    h = make_obs(seed=seed + 100)
    with no_grad():
        for m in policy.action_layers():
            if isinstance(m, nn.Linear):
                z = m(h).data.astype(np.float64)
                mu, sd = z.mean(axis=0), z.std(axis=0)
                m.weight.data[...] = m.weight.data / sd[:, None]
                m.bias.data[...] = (m.bias.data - mu) / sd
            h = m(h)
    return policy


def make_obs(n: int = N_OBS, seed: int = 1) -> np.ndarray:
    """float32 observations around NORMALIZER's mean, wide enough that clip=5 is reached."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, OBS_DIM)) * 2.0 + 0.5).astype(np.float32)


def normalized(obs: np.ndarray, n: dict = NORMALIZER) -> np.ndarray:
    x = (obs.astype(np.float64) - n["mean"]) / np.sqrt(np.asarray(n["var"]) + n["epsilon"])
    return np.clip(x, -n["clip"], n["clip"])


def reference(policy, obs: np.ndarray, norm: bool, bounds, squash: bool) -> np.ndarray:
    """rlgrad's forward in float64: policy(x).mode(), then squash, scale and clip."""
    return reference_and_error_bound(policy, obs, norm, bounds, squash)[0]


def gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def reference_and_error_bound(policy, obs, norm, bounds, squash, normalizer=NORMALIZER):
    """The float64 reference and a first-order bound on how far a float32 evaluation of the same
    formula may be from it, per element.

    Each float32 operation rounds its result r by at most u |r|; a dot product of n terms plus a
    bias by at most gamma_{n+1} (|W| |h| + |b|) (Higham, Accuracy and Stability of Numerical
    Algorithms, 3.1); an error e already in an operand reaches the result times the operation's
    Lipschitz constant. The exported normaliser and bounds are the float32 roundings of the
    given float64 values, which the bound also covers.
    """
    u = U32
    x = obs.astype(np.float64)
    with no_grad():
        mode = policy(normalized(obs, normalizer) if norm else x).mode()
    e = np.zeros_like(x)  # obs are float32 already: the cast is exact
    if norm:
        n = normalizer
        mean, std = np.asarray(n["mean"]), np.sqrt(np.asarray(n["var"]) + n["epsilon"])
        z = (x - mean) / std
        # mean, std rounded to float32 (std: 2 roundings), then a subtraction and a division
        e = (u * np.abs(mean) + u * np.abs(x - mean)) / std + 3 * u * np.abs(z)
        x = np.clip(z, -n["clip"], n["clip"])  # Lipschitz 1; clip is exact in float32
    with no_grad():
        for m in policy.action_layers():
            if isinstance(m, nn.Linear):
                w, b = m.weight.data.astype(np.float64), m.bias.data.astype(np.float64)
                terms = np.abs(x) @ np.abs(w).T + np.abs(b)
                e = e @ np.abs(w).T + gamma(w.shape[1] + 1) * terms
                x = x @ w.T + b
            else:
                x = m(Tensor(x)).data
                e = LIPSCHITZ[type(m)] * e + ACTIVATION_ULPS * u * np.abs(x)
    # the layers above are what forward() computes: check it rather than assume it
    np.testing.assert_allclose(x if isinstance(policy, GaussianPolicy) else x.argmax(-1), mode,
                               rtol=1e-12, atol=1e-12)
    if isinstance(policy, CategoricalPolicy):
        # float32 may pick another action only where another logit is within both errors
        top = np.take_along_axis(x, mode[:, None], axis=1)
        top_err = np.take_along_axis(e, mode[:, None], axis=1)
        rival = (x >= top - top_err - e) & (np.arange(x.shape[1]) != mode[:, None])
        return mode, ~rival.any(axis=1)
    x = mode
    if squash:
        x = np.tanh(x)
        e = e + ACTIVATION_ULPS * u * np.abs(x)
        if bounds is not None:
            low, high = np.asarray(bounds[0]), np.asarray(bounds[1])
            scale = (high - low) / 2
            t = x + 1
            e_t = e + u * np.abs(t)
            x = low + t * scale
            # scale and low rounded to float32, a product and a sum
            e = (scale * e_t + u * scale * np.abs(t) + u * np.abs(t * scale) + u * np.abs(low)
                 + u * np.abs(x))
    if bounds is not None:
        low, high = np.asarray(bounds[0]), np.asarray(bounds[1])
        x = np.clip(x, low, high)
        # clip is Lipschitz 1 in its value and its bounds, rounded to float32
        e = np.maximum(e, u * np.abs(x))
    return x, e


def export_case(case, out_dir: Path, fmt: str) -> tuple[object, Path]:
    kind, act, norm, bounds, squash = case
    policy = make_policy(kind, act)
    path = out_dir / ("policy.onnx" if fmt == "onnx" else "policy.npz")
    written = export_policy(policy, path, fmt, obs_normalizer=NORMALIZER if norm else None,
                            action_space=bounds, squash=squash)
    assert written == path
    return policy, path


def assert_actions(actual: np.ndarray, expected: np.ndarray, kind: str,
                   bound: np.ndarray | None) -> None:
    """Discrete: equal wherever float32 rounding cannot change the argmax (``bound`` is that
    mask: all but the few observations with two logits closer than the error bound).

    Box: within the worst-case float32 error bound, which holds whatever the conditioning of the
    net (typically ~1e-4 absolute here), and within rtol = atol = 1e-5, the precision actually
    reached (errors are ~1e-6: rounding adds up like a random walk, not in the worst case).
    """
    if kind == "discrete":
        assert actual.dtype == np.int64 and actual.shape == expected.shape
        assert bound.mean() > 0.99
        np.testing.assert_array_equal(actual[bound], expected[bound])
        return
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    err = np.abs(actual.astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (
        f"error {err[worst]:.3g} > float32 bound {bound[worst]:.3g} at {worst}: actual "
        f"{actual[worst]}, expected {expected[worst]}")
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def load_loader(path: Path):
    spec = importlib.util.spec_from_file_location(f"loader_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the test data exercise what they are meant to --------------------------------------------


def test_cases_reach_the_clip_the_bounds_and_several_actions():
    obs = make_obs()
    n = NORMALIZER
    raw = (obs.astype(np.float64) - n["mean"]) / np.sqrt(np.asarray(n["var"]) + n["epsilon"])
    assert 0.01 < np.mean(np.abs(raw) > n["clip"]) < 0.5
    for act in ("tanh", "relu", "sigmoid"):
        for norm in (False, True):
            a = reference(make_policy("discrete", act), obs, norm, None, False)
            assert len(np.unique(a)) >= 3, (act, norm)
            mean = reference(make_policy("continuous", act), obs, norm, None, False)
            clipped = reference(make_policy("continuous", act), obs, norm, CLIP_BOUNDS, False)
            assert 0.05 < np.mean(clipped != mean) < 0.95, (act, norm)


# ---- ONNX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_onnx_matches_rlgrad_forward(case, tmp_path):
    kind, _, norm, bounds, squash = case
    policy, path = export_case(case, tmp_path, "onnx")
    obs = make_obs()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actions,) = session.run(["action"], {"obs": obs})
    expected, bound = reference_and_error_bound(policy, obs, norm, bounds, squash)
    assert_actions(actions, expected, kind, bound)
    (one,) = session.run(["action"], {"obs": obs[:1]})  # the batch axis is dynamic
    assert_actions(one, expected[:1], kind, None if bound is None else bound[:1])


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_onnx_model_signature_and_metadata(kind, tmp_path):
    bounds = None if kind == "discrete" else CLIP_BOUNDS
    _, path = export_case((kind, "tanh", True, bounds, False), tmp_path, "onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", ONNX_OPSET)]
    (inp,) = model.graph.input
    assert inp.name == "obs" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == OBS_DIM and len(dims) == 2
    (out,) = model.graph.output
    assert out.name == "action"
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    if kind == "discrete":
        assert out.type.tensor_type.elem_type == onnx.TensorProto.INT64 and dims == ["batch"]
    else:
        assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert dims == ["batch", ACTION_DIM]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rlgrad_version"] == rlgrad.__version__
    assert meta["rlgrad_kind"] == kind
    assert json.loads(meta["rlgrad_obs_normalizer"]) == NORMALIZER
    assert json.loads(meta["rlgrad_squash"]) is False
    if kind == "discrete":
        assert json.loads(meta["rlgrad_action_low"]) is None
    else:
        assert json.loads(meta["rlgrad_action_low"]) == [-0.3, "-inf", 0.0]
        assert json.loads(meta["rlgrad_action_high"]) == [0.2, 1.0, "inf"]


def test_onnx_without_normalizer_records_none(tmp_path):
    _, path = export_case(("continuous", "tanh", False, None, False), tmp_path, "onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["rlgrad_obs_normalizer"]) is None
    assert json.loads(meta["rlgrad_action_low"]) is None


# ---- numpy loader ------------------------------------------------------------------------------

# Loads each export's own copy of policy_loader.py with a clean sys.path (-I: no cwd, no
# PYTHONPATH) and rlgrad made unimportable, then checks rlgrad was never imported.
_RUNNER = """
import importlib.abc, importlib.util, sys
from pathlib import Path
import numpy as np

class NoRlgrad(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rlgrad", "agents", "experiments"):
            raise ImportError(f"the loader imported {name}")
        return None

sys.meta_path.insert(0, NoRlgrad())
root = Path(sys.argv[1])
obs = np.load(root / "obs.npy")
for i, case in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
    spec = importlib.util.spec_from_file_location(f"policy_loader_{i}", case / "policy_loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    np.save(case / "actions.npy", module.load_policy(str(case / "policy.npz"))(obs))
assert not any(m.split(".")[0] == "rlgrad" for m in sys.modules), "rlgrad was imported"
"""


@pytest.fixture(scope="module")
def numpy_exports(tmp_path_factory):
    """Every case exported to its own directory (policy.npz + policy_loader.py only), run once
    by the loader in a clean subprocess."""
    root = tmp_path_factory.mktemp("numpy_exports")
    obs = make_obs()
    np.save(root / "obs.npy", obs)
    policies = {}
    for case in CASES:
        d = root / case_id(case)
        d.mkdir()
        policies[case_id(case)], _ = export_case(case, d, "numpy")
        assert sorted(p.name for p in d.iterdir()) == ["policy.npz", "policy_loader.py"]
    proc = subprocess.run([sys.executable, "-I", "-c", _RUNNER, str(root)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return root, obs, policies


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_numpy_loader_matches_rlgrad_forward(case, numpy_exports):
    root, obs, policies = numpy_exports
    kind, _, norm, bounds, squash = case
    actions = np.load(root / case_id(case) / "actions.npy")
    expected, bound = reference_and_error_bound(policies[case_id(case)], obs, norm, bounds,
                                                squash)
    assert_actions(actions, expected, kind, bound)


def test_numpy_export_copies_the_loader_verbatim(numpy_exports):
    root, _, _ = numpy_exports
    copy = root / case_id(CASES[0]) / "policy_loader.py"
    assert copy.read_bytes() == LOADER.read_bytes()


def test_loader_imports_numpy_only():
    tree = ast.parse(LOADER.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("__import__", "exec", "eval"), node.func.id
        elif isinstance(node, ast.Attribute):
            assert node.attr != "import_module"
    assert imported == {"numpy"}


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_loader_single_observation_and_bad_input(kind, tmp_path):
    bounds = None if kind == "discrete" else SQUASH_BOUNDS
    _, path = export_case((kind, "tanh", True, bounds, kind == "continuous"), tmp_path, "numpy")
    policy = load_loader(tmp_path / "policy_loader.py").load_policy(path)
    obs = make_obs(10)
    batch = policy(obs)
    single = policy(obs[3])
    assert np.shape(single) == batch.shape[1:]
    if kind == "discrete":
        assert single == batch[3]
    else:  # matrix-vector and matrix-matrix products may sum in different orders
        np.testing.assert_allclose(single, batch[3], rtol=1e-6, atol=1e-7)
    bad = [obs[:, :-1], obs[None], np.float32(1.0), np.where(np.eye(10, OBS_DIM) > 0, np.nan, obs)]
    for x in bad:
        with pytest.raises(ValueError, match="obs must be finite, of shape") as e:
            policy(x)
        assert "\n" not in str(e.value)


def test_loader_refuses_other_npz(tmp_path):
    np.savez(tmp_path / "other.npz", weight_0=np.zeros((2, 2)))
    loader = load_loader(LOADER)
    with pytest.raises(ValueError, match="is not an rlgrad policy export"):
        loader.load_policy(tmp_path / "other.npz")


def test_numpy_npz_holds_plain_arrays(tmp_path):
    _, path = export_case(("continuous", "relu", True, SQUASH_BOUNDS, True), tmp_path, "numpy")
    with np.load(path, allow_pickle=False) as f:
        z = {k: f[k] for k in f.files}
    assert str(z["kind"]) == "continuous" and str(z["rlgrad_version"]) == rlgrad.__version__
    assert [str(op) for op in z["ops"]] == ["linear", "relu", "linear", "relu", "linear"]
    assert all(z[f"weight_{i}"].dtype == np.float32 for i in range(3))
    np.testing.assert_array_equal(z["obs_var"], NORMALIZER["var"])
    np.testing.assert_array_equal(z["action_low"], np.float32(SQUASH_BOUNDS[0]))


# ---- what action_layers() may contain ----------------------------------------------------------


class WithIdentity(CategoricalPolicy):
    def action_layers(self):
        return [nn.Identity(), *super().action_layers(), nn.Identity()]


class WithCustomLayer(CategoricalPolicy):
    class Double(nn.Module):
        def forward(self, x):
            return x * 2.0

    def action_layers(self):
        return [*super().action_layers(), self.Double()]


class ShapesDoNotChain(CategoricalPolicy):
    def action_layers(self):
        layers = super().action_layers()
        return [layers[0], nn.Linear(7, N_ACTIONS)]


class OtherWeights(CategoricalPolicy):
    """action_layers() of the right shapes that are not the ones forward() uses."""

    def action_layers(self):
        return list(CategoricalPolicy(OBS_DIM, N_ACTIONS, (16, 16), init="default",
                                      rng=np.random.default_rng(99)).action_layers())


def test_identity_layers_are_dropped(tmp_path):
    policy = WithIdentity(OBS_DIM, N_ACTIONS, (16, 16), init="default",
                          rng=np.random.default_rng(0))
    export_policy(policy, tmp_path / "p.onnx", "onnx")
    obs = make_obs()
    (actions,) = ort.InferenceSession(str(tmp_path / "p.onnx")).run(None, {"obs": obs})
    np.testing.assert_array_equal(actions, reference(policy, obs, False, None, False))


class NoBiasTrunk(nn.Module):
    """A policy not built on an MLP: a bias-free first layer, its own action_layers()."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(3)
        self.trunk = nn.Linear(OBS_DIM, 8, bias=False, rng=rng)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, ACTION_DIM, rng=rng)
        self.log_std = nn.Parameter(np.zeros(ACTION_DIM), dtype=np.float32)

    def forward(self, obs):
        return Normal(self.head(self.act(self.trunk(obs))), self.log_std)

    def action_layers(self):
        return [self.trunk, self.act, self.head]


@pytest.mark.parametrize("fmt", ["onnx", "numpy"])
def test_other_policies_supply_their_own_layers(fmt, tmp_path):
    policy = NoBiasTrunk()
    path = export_policy(policy, tmp_path / ("p." + ("onnx" if fmt == "onnx" else "npz")), fmt)
    obs = make_obs()
    if fmt == "onnx":
        (actions,) = ort.InferenceSession(str(path)).run(None, {"obs": obs})
    else:
        actions = load_loader(tmp_path / "policy_loader.py").load_policy(path)(obs)
    with no_grad():
        expected = policy(obs.astype(np.float64)).mode()
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls, match", [
    (WithCustomLayer, r"layer 5 of action_layers\(\) is a Double; export supports Linear"),
    (ShapesDoNotChain, "layer 1 \\(Linear\\) takes 7 inputs but the layers before it give 16"),
    (OtherWeights, r"action_layers\(\) of OtherWeights do not reproduce the logits"),
])
def test_bad_action_layers(cls, match, tmp_path):
    policy = cls(OBS_DIM, N_ACTIONS, (16, 16), init="default", rng=np.random.default_rng(0))
    for fmt, name in (("onnx", "p.onnx"), ("numpy", "p.npz")):
        with pytest.raises(ValueError, match=match) as e:
            export_policy(policy, tmp_path / name, fmt)
        assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights(value, tmp_path):
    policy = make_policy("continuous", "tanh")
    policy.net[2].weight.data[1, 3] = value
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\) has non-finite weights"):
        export_policy(policy, tmp_path / "p.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_policy_without_action_layers(tmp_path):
    with pytest.raises(TypeError, match="policy must be an rlgrad Module with action_layers"):
        export_policy(ValueFunction(OBS_DIM), tmp_path / "p.onnx", "onnx")


# ---- argument errors ---------------------------------------------------------------------------


def one_line_error(exc, match, tmp_path, *args, **kwargs):
    kwargs.setdefault("policy", make_policy("continuous", "tanh"))
    kwargs.setdefault("path", tmp_path / "out" / "p.onnx")
    kwargs.setdefault("format", "onnx")
    with pytest.raises(exc, match=match) as e:
        export_policy(**kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("fmt", ["torchscript", "ONNX", None, ""])
def test_unknown_format(fmt, tmp_path):
    one_line_error(ValueError, "unknown export format .*expected one of \\['onnx', 'numpy'\\]",
                   tmp_path, format=fmt)


@pytest.mark.parametrize("fmt, name", [("onnx", "p.npz"), ("numpy", "p.onnx"), ("numpy", "p")])
def test_suffix_must_fit_the_format(fmt, name, tmp_path):
    one_line_error(ValueError, f"format '{fmt}' writes a", tmp_path, format=fmt,
                   path=tmp_path / "out" / name)


def _bad_norm(**change):
    return {**NORMALIZER, **change}


@pytest.mark.parametrize("norm, exc, match", [
    ({k: v for k, v in NORMALIZER.items() if k != "var"}, ValueError, "has keys"),
    ({**NORMALIZER, 0: 1}, ValueError, "has keys \\['0', 'clip', 'epsilon', 'mean', 'var'\\]"),
    (_bad_norm(count=10), ValueError, "expected exactly \\['mean', 'var', 'epsilon', 'clip'\\]"),
    (_bad_norm(mean=[0.0] * 4), ValueError, "must be 5 floats .*shape \\(4,\\)"),
    (_bad_norm(var=[[1.0] * 5]), ValueError, "must be 5 floats .*shape \\(1, 5\\)"),
    (_bad_norm(mean=["a"] * 5), ValueError, "must be 5 floats"),
    (_bad_norm(var=[1.0, np.nan, 1.0, 1.0, 1.0]), ValueError, "'var'\\] has non-finite"),
    (_bad_norm(mean=[1.0, np.inf, 1.0, 1.0, 1.0]), ValueError, "'mean'\\] has non-finite"),
    (_bad_norm(var=[1.0, -0.5, 1.0, 1.0, 1.0]), ValueError, "must be >= 0"),
    (_bad_norm(var=[0.0] * 5, epsilon=0.0), ValueError, "std > 0"),
    (_bad_norm(epsilon=-1e-8), ValueError, "epsilon'\\] must be finite and >= 0"),
    (_bad_norm(epsilon=np.nan), ValueError, "epsilon'\\] must be finite and >= 0"),
    (_bad_norm(clip=0.0), ValueError, "clip'\\] must be > 0"),
    (_bad_norm(clip=np.nan), ValueError, "clip'\\] must be > 0"),
    (_bad_norm(clip=True), TypeError, "clip'\\] must be a real number"),
    (_bad_norm(epsilon="1e-8"), TypeError, "epsilon'\\] must be a real number"),
    ([("mean", 0.0)], TypeError, "obs_normalizer must be a mapping"),
])
def test_bad_normalizer(norm, exc, match, tmp_path):
    one_line_error(exc, match, tmp_path, obs_normalizer=norm)


def test_infinite_clip_means_no_clip(tmp_path):
    policy = make_policy("continuous", "tanh")
    norm = _bad_norm(clip=INF)
    export_policy(policy, tmp_path / "p.onnx", "onnx", obs_normalizer=norm)
    obs = make_obs()
    (actions,) = ort.InferenceSession(str(tmp_path / "p.onnx")).run(None, {"obs": obs})
    expected, bound = reference_and_error_bound(policy, obs, True, None, False, norm)
    assert np.abs(normalized(obs, norm)).max() > 2 * NORMALIZER["clip"]
    assert_actions(actions, expected, "continuous", bound)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "p.onnx")).metadata_props}
    assert json.loads(meta["rlgrad_obs_normalizer"])["clip"] == "inf"


@pytest.mark.parametrize("bounds, squash, exc, match", [
    (([0.0, 0.0], [1.0, 1.0]), False, ValueError, "must be a float or 3 floats .*shape \\(2,\\)"),
    (([0.0] * 3, [[1.0] * 3]), False, ValueError, "high must be a float or 3 floats"),
    (([0.0, np.nan, 0.0], [1.0] * 3), False, ValueError, "low has nan"),
    (([0.0, 2.0, 0.0], [1.0] * 3), False, ValueError, "low must be <= high"),
    (([-1.0, -INF, -1.0], [1.0] * 3), True, ValueError, "squash .* must then be finite"),
    ((-1e39, 1.0), True, ValueError, "must fit float32"),
    ((0.0,), False, TypeError, "action_space must be \\(low, high\\)"),
    (5, False, TypeError, "action_space must be \\(low, high\\)"),
    (None, 1, TypeError, "squash must be a bool"),
])
def test_bad_bounds(bounds, squash, exc, match, tmp_path):
    one_line_error(exc, match, tmp_path, action_space=bounds, squash=squash)


@pytest.mark.parametrize("bounds, squash", [((0.0, 1.0), False), (None, True)])
def test_categorical_takes_no_bounds_or_squash(bounds, squash, tmp_path):
    one_line_error(ValueError, "a categorical policy takes neither", tmp_path,
                   policy=make_policy("discrete", "tanh"), action_space=bounds, squash=squash)


def test_scalar_bounds_and_objects_with_low_high(tmp_path):
    class Box:
        low, high = np.full(ACTION_DIM, -0.1), np.full(ACTION_DIM, 0.1)

    policy = make_policy("continuous", "tanh")
    obs = make_obs()
    expected, bound = reference_and_error_bound(policy, obs, False, (Box.low, Box.high), False)
    for space in ((-0.1, 0.1), Box()):
        path = export_policy(policy, tmp_path / "p.onnx", "onnx", action_space=space)
        (actions,) = ort.InferenceSession(str(path)).run(None, {"obs": obs})
        assert_actions(actions, expected, "continuous", bound)


# ---- paths -------------------------------------------------------------------------------------


def test_unwritable_paths(tmp_path):
    policy = make_policy("discrete", "tanh")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot write .*file/p.onnx") as e:
        export_policy(policy, tmp_path / "file" / "p.onnx", "onnx")
    assert "\n" not in str(e.value)
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        export_policy(policy, tmp_path / "dir.npz", "numpy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.npz", "file"]
    assert list((tmp_path / "dir.npz").iterdir()) == []


def test_export_creates_parents_and_replaces_existing_files(tmp_path):
    path = tmp_path / "a" / "b" / "p.npz"
    export_policy(make_policy("discrete", "tanh", seed=0), path, "numpy")
    first = path.read_bytes()
    export_policy(make_policy("discrete", "tanh", seed=1), path, "numpy")
    assert path.read_bytes() != first
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.npz", "policy_loader.py"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_onnx_without_the_onnx_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    from rlgrad.policies import CategoricalPolicy

    policy = CategoricalPolicy(4, 2, hidden_sizes=(8,), rng=np.random.default_rng(0))
    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ValueError, match=r"pip install 'rlgrad\[export\]'"):
        export_policy(policy, tmp_path / "p.onnx", "onnx")
    assert not (tmp_path / "p.onnx").exists()
