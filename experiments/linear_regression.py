"""Fit y = m x + b by mean squared error with nine first-order optimizers and Newton's method.

The question: how do the optimizers differ on the simplest model there is, on a well-conditioned
problem and on an ill-conditioned one? The loss

.. math:: L(m, b) = \\frac{1}{n} \\sum_i (m x_i + b - y_i)^2, \\qquad
          \\nabla^2 L = 2 \\begin{pmatrix} \\overline{x^2} & \\bar x \\\\ \\bar x & 1 \\end{pmatrix}

is a quadratic bowl. Two data sets, y = 2 x - 1 + noise (sd 0.1):

* ``centred``: x ~ U(0, 1) minus its mean. The Hessian is diagonal, 2 diag(1/12, 1): condition
  number 12, round contours.
* ``ravine``: x ~ U(9, 11), not centred. m and b are almost interchangeable (raising m by 0.1 and
  lowering b by 1 barely changes the fit): condition number ~3e4, a long narrow valley.

Each optimizer starts at (m, b) = (0, 0) and takes ``--steps`` updates. Batch GD, momentum,
Nesterov, AdaGrad, RMSprop, Adam, AdamW and Newton use all n points per step, so they differ only
in the update rule; SGD uses one point per step and mini-batch GD ``--batch-size`` points (drawn
without replacement, reshuffled every epoch). The reference is the closed-form least-squares
solution (numpy.linalg.lstsq). Learning rates, in ``HYPERPARAMETERS``, were tuned once per data
set by hand (a coarse grid, roughly the fastest setting that does not diverge); a run that still
diverges is reported as diverged.

Run:  python -m experiments.linear_regression --plot
      tensorboard --logdir runs/linear_regression
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlgrad import optim
from rlgrad.logging import SummaryWriter
from rlgrad.tensor import Tensor


@dataclass
class Args:
    seed: int = field(default=1, metadata={"help": "seed of the data and of SGD's sampling"})
    logdir: str = field(default="runs/linear_regression", metadata={
        "help": "TensorBoard directory; one run per variant in LOGDIR/<dataset>__<method>/"})
    plot: bool = field(default=False, metadata={"help": "write the figure to --plot-path"})
    plot_path: str = field(default="docs/linear_regression.png", metadata={
        "help": "where --plot writes the PNG"})
    quick: bool = field(default=False, metadata={
        "help": "a smoke test: 150 steps and 64 points (overrides --steps and --n-points)"})
    steps: int = field(default=2000, metadata={"help": "parameter updates per run"})
    n_points: int = field(default=256, metadata={"help": "points per data set"})
    batch_size: int = field(default=16, metadata={"help": "points per step of mini-batch GD"})
    noise: float = field(default=0.1, metadata={"help": "standard deviation of the noise on y"})
    tol: float = field(default=1e-3, metadata={
        "help": "a run has converged at the first step from which its distance to the "
                "closed-form solution stays below tol"})


TRUE_M, TRUE_B = 2.0, -1.0
START = (0.0, 0.0)
DIVERGED = 1e6  # a distance to the solution beyond this counts as diverged
# the (m, b) window of each contour plot: the start, the solution and most of the paths; the
# widest swings (momentum across the ravine) leave it
VIEW = {"centred": ((-0.3, 2.8), (-2.5, 0.3)), "ravine": ((-0.3, 3.6), (-1.6, 3.6))}

# method -> (registry name, points per step: "all", "one" or "batch")
METHODS: dict[str, tuple[str, str]] = {
    "batch GD": ("sgd", "all"),
    "SGD": ("sgd", "one"),
    "mini-batch GD": ("sgd", "batch"),
    "momentum": ("momentum", "all"),
    "nesterov": ("nesterov", "all"),
    "adagrad": ("adagrad", "all"),
    "rmsprop": ("rmsprop", "all"),
    "adam": ("adam", "all"),
    "adamw": ("adamw", "all"),
    "newton": ("newton", "all"),
}

# Hyperparameters per data set, given to optim.make (registry defaults fill the rest, e.g. AdamW's
# weight_decay 1e-2). Each is the best of a coarse grid (about 5 learning rates, and momentum in
# {0.5, 0.9} or {0.9, 0.95, 0.98, 0.99}) at the default --steps and --seed: fewest steps to tol,
# else the smallest final distance, backed off a little from the edge of stability where that
# cost nothing. Gradient descent is stable for lr < 2 / lambda_max of the Hessian: 2 / 2 = 1 on
# the centred set, 2 / 203 ~ 0.0099 on the ravine.
HYPERPARAMETERS: dict[str, dict[str, dict[str, Any]]] = {
    "centred": {
        "batch GD": {"lr": 0.9},  # ~2 / (lambda_min + lambda_max), the best fixed step
        "SGD": {"lr": 0.05},  # smaller is slower, larger is noisier: neither gets within tol
        "mini-batch GD": {"lr": 0.05},
        "momentum": {"lr": 1.2, "momentum": 0.5},  # condition number 12 needs little momentum;
        "nesterov": {"lr": 0.5, "momentum": 0.5},  # 0.9 takes ~140 steps
        "adagrad": {"lr": 2.0},  # a diagonal Hessian: AdaGrad's per-coordinate scaling fits it
        "rmsprop": {"lr": 0.003},  # ends in a cycle of size ~lr around the minimum
        "adam": {"lr": 0.3},
        "adamw": {"lr": 0.3},
        "newton": {"damping": 0.0},  # exact: the default 1e-4 would bias the step
    },
    "ravine": {
        "batch GD": {"lr": 0.0095},
        "SGD": {"lr": 0.006},  # single points with x^2 ~ 121 diverge above ~0.008
        "mini-batch GD": {"lr": 0.009},
        # heavy ball converges at sqrt(momentum) per step when lr lies in
        # [(1 - sqrt(mu))^2 / lambda_min, (1 + sqrt(mu))^2 / lambda_max]: 0.98 keeps that
        # interval non-empty for condition number 3e4 (0.9 would not)
        "momentum": {"lr": 0.019, "momentum": 0.98},
        # Nesterov is stable only for lr < 2 (1 + mu) / ((1 + 2 mu) lambda_max) ~ 0.0066
        "nesterov": {"lr": 0.0065, "momentum": 0.99},
        "adagrad": {"lr": 3.0},
        "rmsprop": {"lr": 0.3},
        "adam": {"lr": 3.0},  # only this large an lr gets through the valley in 2000 steps
        "adamw": {"lr": 1.0},  # the decay per step is lr * weight_decay: 3.0 pulls too hard
        "newton": {"damping": 0.0},
    },
}


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default,
                                help=f.metadata["help"])
    args = Args(**vars(parser.parse_args(argv)))
    if args.quick:
        args.steps, args.n_points = 150, 64
    return args


def make_dataset(name: str, n: int, noise: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """x, y of shape (n,) for the ``centred`` or ``ravine`` data set."""
    if name == "centred":
        x = rng.uniform(0.0, 1.0, n)
        x -= x.mean()
    elif name == "ravine":
        x = rng.uniform(9.0, 11.0, n)
    else:
        raise ValueError(f"unknown data set {name!r}; expected 'centred' or 'ravine'")
    y = TRUE_M * x + TRUE_B + noise * rng.normal(size=n)
    return x, y


def mse(m: Tensor, b: Tensor, x: np.ndarray, y: np.ndarray) -> Tensor:
    """Mean squared error of the line through the engine, differentiable in m and b."""
    return ((m * x + b - y) ** 2).mean()


def mse_numpy(m: float, b: float, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((m * x + b - y) ** 2))


def fit(dataset: str, method: str, x: np.ndarray, y: np.ndarray, solution: np.ndarray,
        args: Args, rng: np.random.Generator, writer: SummaryWriter) -> dict[str, Any]:
    """One run: ``args.steps`` updates of ``method`` from START; the curves and a summary."""
    name, points = METHODS[method]
    hyperparameters = HYPERPARAMETERS[dataset][method]
    m = Tensor(START[0], requires_grad=True)
    b = Tensor(START[1], requires_grad=True)
    opt = optim.make(name, [m, b], **hyperparameters)
    batch = {"all": len(x), "one": 1, "batch": args.batch_size}[points]
    order = rng.permutation(len(x))
    cursor = 0

    def closure() -> Tensor:
        return mse(m, b, x, y)

    path = [START]
    losses = [mse_numpy(*START, x, y)]
    distances = [float(np.hypot(START[0] - solution[0], START[1] - solution[1]))]
    diverged = False
    seconds = 0.0
    for step in range(1, args.steps + 1):
        if batch == len(x):
            idx = slice(None)
        else:
            if cursor + batch > len(x):
                order, cursor = rng.permutation(len(x)), 0
            idx = order[cursor:cursor + batch]
            cursor += batch
        start = time.perf_counter()
        if method == "newton":
            opt.step(closure)
        else:
            opt.zero_grad()
            mse(m, b, x[idx], y[idx]).backward()
            opt.step()
        seconds += time.perf_counter() - start

        mv, bv = float(m.data), float(b.data)
        loss = mse_numpy(mv, bv, x, y)  # on all points, so every method is measured alike
        distance = float(np.hypot(mv - solution[0], bv - solution[1]))
        path.append((mv, bv))
        losses.append(loss)
        distances.append(distance)
        writer.add_scalar("losses/mse", loss, step)
        writer.add_scalar("charts/distance_to_lstsq", distance, step)
        if not math.isfinite(distance) or distance > DIVERGED:
            diverged = True
            break

    within = np.asarray(distances) < args.tol
    # the first step from which the run stays within tol to the end
    steps_to_tol = None
    if within[-1] and not diverged:
        outside = np.flatnonzero(~within)
        steps_to_tol = int(outside[-1]) + 1 if outside.size else 0
    return {
        "dataset": dataset,
        "method": method,
        "hyperparameters": hyperparameters,
        "m": path[-1][0],
        "b": path[-1][1],
        "distance": distances[-1],
        "steps_to_tol": steps_to_tol,
        "diverged": diverged,
        "seconds": seconds,
        "losses": np.asarray(losses),
        "distances": np.asarray(distances),
        "path": np.asarray(path),
        "solution": solution,
        "min_loss": mse_numpy(*solution, x, y),
        "x": x,
        "y": y,
    }


def run(args: Args) -> list[dict[str, Any]]:
    """Every method on every data set; one dict per run (summary numbers and curves)."""
    results = []
    for d, dataset in enumerate(HYPERPARAMETERS):
        x, y = make_dataset(dataset, args.n_points, args.noise,
                            np.random.default_rng([args.seed, d]))
        design = np.stack([x, np.ones_like(x)], axis=1)
        solution = np.linalg.lstsq(design, y, rcond=None)[0]
        for k, method in enumerate(METHODS):
            rng = np.random.default_rng([args.seed, d, k])
            log_dir = os.path.join(args.logdir, f"{dataset}__{method.replace(' ', '_')}")
            with SummaryWriter(log_dir) as writer:
                writer.add_hyperparameters({
                    "dataset": dataset, "method": method, "seed": args.seed,
                    "steps": args.steps, "n_points": args.n_points,
                    **HYPERPARAMETERS[dataset][method]})
                results.append(fit(dataset, method, x, y, solution, args, rng, writer))
    return results


def table(results: list[dict[str, Any]], tol: float) -> str:
    """The summary as a Markdown table."""
    lines = [
        f"| data set | method | hyperparameters | final m | final b | distance to lstsq "
        f"| steps to {tol:g} | wall time (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        hp = ", ".join(f"{k}={v:g}" for k, v in r["hyperparameters"].items())
        if r["diverged"]:
            numbers = "diverged | diverged | diverged"
        else:
            numbers = f"{r['m']:.6f} | {r['b']:.6f} | {r['distance']:.2e}"
        steps = "—" if r["steps_to_tol"] is None else str(r["steps_to_tol"])
        lines.append(f"| {r['dataset']} | {r['method']} | {hp} | {numbers} | {steps} "
                     f"| {r['seconds']:.3f} |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: str) -> None:
    """Per data set (columns): the excess loss per step (log scale), the paths over the loss
    contours in (m, b), and the length of each step ||theta_t - theta_{t-1}|| (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    colors = {method: plt.cm.tab10(i) for i, method in enumerate(METHODS)}
    fig, axes = plt.subplots(3, len(datasets), figsize=(7.5 * len(datasets), 18), squeeze=False)
    for col, dataset in enumerate(datasets):
        runs = [r for r in results if r["dataset"] == dataset]
        ax = axes[0, col]
        for r in runs:
            excess = np.maximum(r["losses"] - r["min_loss"], 1e-16)
            ax.plot(excess, color=colors[r["method"]], label=r["method"], lw=0.9, alpha=0.85)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("MSE - min MSE (all points)")
        ax.set_title(f"{dataset}: loss above the least-squares minimum")
        ax.legend(fontsize=8, ncol=2)

        ax = axes[1, col]
        solution = runs[0]["solution"]
        x, y = runs[0]["x"], runs[0]["y"]
        (m_lo, m_hi), (b_lo, b_hi) = VIEW[dataset]
        ms = np.linspace(m_lo, m_hi, 300)
        bs = np.linspace(b_lo, b_hi, 300)
        mm, bb = np.meshgrid(ms, bs)
        # mean over points of (m x + b - y)^2, expanded so the grid needs no (300, 300, n) array
        sx, sy = x.mean(), y.mean()
        sxx, sxy, syy = (x * x).mean(), (x * y).mean(), (y * y).mean()
        grid = mm * mm * sxx + 2 * mm * bb * sx + bb * bb - 2 * mm * sxy - 2 * bb * sy + syy
        excess = np.maximum(grid - runs[0]["min_loss"], 1e-12)
        levels = np.geomspace(max(excess.min(), 1e-6), excess.max(), 20)
        ax.contour(mm, bb, excess, levels=levels, norm=LogNorm(), cmap="Greys", linewidths=0.6)
        for r in runs:
            p = r["path"]
            # dots at steps 1, 2, 4, 8, ...: their spacing shows how the step length evolves
            marks = [k for k in 2 ** np.arange(12) if k < len(p)]
            oscillating = r["method"] in ("momentum", "nesterov")
            ax.plot(p[:, 0], p[:, 1], color=colors[r["method"]], lw=0.4 if oscillating else 0.9,
                    alpha=0.5 if oscillating else 0.9, marker="o", ms=2.5, markevery=marks,
                    label=r["method"], zorder={"newton": 4, "adagrad": 3}.get(r["method"], 2))
        ax.plot(*START, "ko", ms=5)
        ax.plot(*solution, "r*", ms=12, label="least squares")
        ax.set_xlim(ms[0], ms[-1])
        ax.set_ylim(bs[0], bs[-1])
        ax.set_xlabel("m (slope)")
        ax.set_ylabel("b (intercept)")
        ax.set_title(f"{dataset}: paths from (0, 0) over the MSE contours")
        ax.legend(fontsize=8, ncol=2)

        ax = axes[2, col]
        for r in runs:
            lengths = np.maximum(np.linalg.norm(np.diff(r["path"], axis=0), axis=1), 1e-16)
            steps = np.arange(1, len(lengths) + 1)
            ax.plot(steps, lengths, color=colors[r["method"]], label=r["method"], lw=0.9,
                    alpha=0.85)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("step length ||theta_t - theta_{t-1}||")
        ax.set_title(f"{dataset}: how far each update moves (m, b)")
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    print(table(results, args.tol))
    if args.plot:
        plot(results, args.plot_path)
        print(f"figure: {args.plot_path}")
    print(f"TensorBoard runs: {args.logdir}  ({time.perf_counter() - start:.1f} s in all)")
    return results


if __name__ == "__main__":
    main()
