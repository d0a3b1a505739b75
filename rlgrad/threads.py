"""The math library's threads: one inside training, so a run is as fast beside another process as
alone, and ``rlgrad train`` and ``rlgrad sweep`` give bitwise the same parameters.

numpy's BLAS (OpenBLAS) starts one thread per core by default. For the small matrices of policy
networks, two threads spin against each other and against any other busy process: on two cores
a small-network run was measured 5-14x slower beside one busy process, and two 300k-step
CartPole runs side by side took 34 s with the default threads, 4.8 s with one each. And a matrix
product split over two threads sums in another order than one thread, so the same run gives
other bits with another thread count (a float32 ``(64, 4096) @ (4096, 64)`` does here): a run
must have the same threads in ``rlgrad train`` as in a sweep worker to give the same result.

threadpoolctl changes the limit inside a running process (environment variables only act before
numpy is imported) and restores it afterwards, so the Python API leaves the caller's setting as
it was. Child processes get theirs through environment variables too
(:data:`rlgrad.sweep.THREAD_ENV`), for libraries they load later and OpenMP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["math_threads"]


@contextmanager
def math_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with at most ``n`` BLAS/OpenMP threads (None: leave them as they are).

    Every thread pool this process has loaded is limited; the previous limits are restored on
    exit, also after an exception.

    Raises:
        ValueError: ``n`` is not an integer >= 1 (or None).
    """
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an integer >= 1 or None, got {n!r}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield
