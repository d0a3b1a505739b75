"""Run a policy exported by rlgrad (``format="numpy"``) with numpy alone.

This file imports nothing but numpy, so it runs when copied on its own next to the ``.npz``::

    from policy_loader import load_policy
    policy = load_policy("policy.npz")
    action = policy(obs)        # obs (obs_dim,) -> one action, (B, obs_dim) -> B actions

The deterministic action, computed in float32 (as the ONNX export does)::

    x = clip((obs - obs_mean) / obs_std, -obs_clip, obs_clip)      if the npz has obs_mean
    z = the "ops" in order: linear (x W^T + b), tanh, relu, sigmoid
    discrete:   argmax_k z_k (int64, first index on ties)
    continuous: a = tanh(z) if squash, then low + (a + 1) * action_scale if the npz has
                action_scale, then min(max(a, action_low), action_high) if it has action_low
"""

import numpy as np

_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, np.float32(0)),
                "sigmoid": lambda x: np.float32(1) / (np.float32(1) + np.exp(-x))}


def load_policy(path):
    """The exported policy as a function from observations to deterministic actions."""
    with np.load(path, allow_pickle=False) as f:
        z = {k: f[k] for k in f.files}
    if str(z.get("format", "")) != "rlgrad-policy" or int(z["format_version"]) != 1:
        raise ValueError(f"{path} is not an rlgrad policy export of format version 1")
    ops, obs_dim, squash = [str(op) for op in z["ops"]], int(z["obs_dim"]), bool(z["squash"])

    def policy(obs):
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != obs_dim or not np.isfinite(x).all():
            raise ValueError(f"obs must be finite, of shape ({obs_dim},) or (B, {obs_dim}); "
                             f"got shape {x.shape}")
        if "obs_mean" in z:
            x = np.clip((x - z["obs_mean"]) / z["obs_std"], -z["obs_clip"], z["obs_clip"])
        layer = 0
        for op in ops:
            if op == "linear":
                x = x @ z[f"weight_{layer}"].T + z[f"bias_{layer}"]
                layer += 1
            else:
                x = _ACTIVATIONS[op](x)
        if str(z["kind"]) == "discrete":
            return np.argmax(x, axis=-1).astype(np.int64)
        if squash:
            x = np.tanh(x)
        if "action_scale" in z:
            x = z["action_low"] + (x + np.float32(1)) * z["action_scale"]
        if "action_low" in z:
            x = np.minimum(np.maximum(x, z["action_low"]), z["action_high"])
        return x

    return policy
