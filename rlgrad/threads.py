"""The math library's threads: one inside training, so a run is as fast beside another process as
alone, and ``rlgrad train`` and ``rlgrad sweep`` give bitwise the same parameters.

numpy's BLAS (OpenBLAS) starts one thread per core by default. For the small matrices of policy
networks, two threads spin against each other and against any other busy process: on two cores
a small-network run was measured 5-14x slower beside one busy process. threadpoolctl changes
the limit inside a running process (environment variables only act before numpy is imported) and
restores it afterwards, so the Python API leaves the caller's setting as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["math_threads"]


@contextmanager
def math_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with at most ``n`` BLAS/OpenMP threads (None: leave them as they are)."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield
