"""What the experiments share: command-line options, a sweep that reports, run selection.

Every experiment takes ``--quick`` (a budget of seconds, for the tests), ``--workers`` (runs at
once, 2 by default: this machine has two cores), ``--logdir`` (where its runs go; a rerun skips
the runs already complete) and ``--out-dir`` (where its figure goes: ``docs/`` in full mode,
the logdir in quick mode so a test never overwrites the committed figures).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents import AGENTS
from rlgrad.plot import GroupStats, Run, load_runs, summarize
from rlgrad.sweep import Grid, RunResult, RunSpec, SweepResult, run_sweep

DOCS = Path(__file__).resolve().parent.parent / "docs"


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a tiny budget (seconds), to check that everything runs")
    p.add_argument("--workers", type=int, default=2, help="runs at once (default: 2)")
    p.add_argument("--logdir", default=None,
                   help=f"directory of the runs (default: runs/experiments/{name}[-quick])")
    p.add_argument("--out-dir", default=None,
                   help="directory of the figure (default: docs/, or the logdir with --quick)")
    return p


def paths(name: str, args: argparse.Namespace) -> tuple[Path, Path]:
    """(logdir, figure path) from the options."""
    logdir = Path(args.logdir or f"runs/experiments/{name}{'-quick' if args.quick else ''}")
    out_dir = Path(args.out_dir) if args.out_dir else (logdir if args.quick else DOCS)
    return logdir, out_dir / f"{name}.png"


def specs(*grids: Grid) -> list[RunSpec]:
    """The runs of several grids (e.g. one learning-rate list per optimizer), in order."""
    return [spec for grid in grids for spec in grid.runs(AGENTS)]


def sweep(runs: Grid | Sequence[RunSpec], logdir: Path, workers: int) -> SweepResult:
    """Run the grid, printing one line per run; a failed run is reported, not fatal."""
    total = len(runs.runs(AGENTS)) if isinstance(runs, Grid) else len(runs)
    count = [0]

    def report(r: RunResult) -> None:
        count[0] += 1
        if r.status != "skipped":
            extra = f": {r.error}" if r.error else ""
            print(f"  [{count[0]}/{total}] {r.status} {r.name} ({r.seconds:.1f} s){extra}",
                  flush=True)

    result = run_sweep(runs, logdir, agents=AGENTS, workers=workers, on_result=report)
    print(f"  {result.summary_line()}", flush=True)
    return result


def select(runs: Sequence[Run], **where: Any) -> list[Run]:
    """The runs whose config has every given value (a callable value is a predicate)."""
    def ok(run: Run) -> bool:
        for key, want in where.items():
            have = run.config.get(key)
            if callable(want):
                if not want(have):
                    return False
            elif have != want:
                return False
        return True

    return [r for r in runs if ok(r)]


def curves(runs: Sequence[Run], label: Callable[[Run], str] | None = None,
           **kw: Any) -> list[GroupStats]:
    """``plot.summarize`` with the groups relabelled by ``label(first run of the group)``."""
    stats = summarize(runs, **kw)
    if label is not None:
        first = {r.name: r for r in runs}
        for s in stats:
            s.label = label(first[s.runs[0]])
    return stats


def best_lr(runs: Sequence[Run], key: Callable[[Run], Any], seeds: Sequence[int]
            ) -> tuple[dict[Any, float], list[str]]:
    """For each ``key(run)`` (e.g. the optimizer), the learning rate whose mean curve over
    ``seeds`` has the largest area (AUC), and Markdown table rows of every candidate."""
    by_key: dict[Any, list[Run]] = {}
    for run in runs:
        if run.seed in seeds:
            by_key.setdefault(key(run), []).append(run)
    best, rows = {}, ["| setting | lr | AUC (selection seeds) | final |", "|-|-|-|-|"]
    for k, members in by_key.items():
        stats = sorted(summarize(members), key=lambda s: s.config["lr"])
        name = " ".join(map(str, k)) if isinstance(k, tuple) else str(k)
        rows += [f"| {name} | {s.config['lr']:g} | {s.auc:.1f} | {s.final_mean:.1f} |"
                 for s in stats]
        best[k] = max(stats, key=lambda s: s.auc).config["lr"]
    return best, rows


def load(logdir: Path, tag: str = "charts/episodic_return") -> list[Run]:
    return load_runs(logdir, tag)


class Timer:
    """Wall time of the whole experiment, printed at the end."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def done(self, name: str) -> float:
        seconds = time.perf_counter() - self.start
        print(f"\n{name}: {seconds / 60:.1f} min wall time")
        return seconds


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
