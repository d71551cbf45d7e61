"""Process-parallel map for the simulated-training commands (validate, experiment studies).

Each task is independent and seeded by its own index, so the results do not depend on the number of
workers; forked processes inherit the parent's modules and data without pickling them.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(task: Callable[[T], R], items: Iterable[T], workers: int,
                progress: Callable[[int], None] | None = None, chunksize: int | None = None) -> Iterator[R]:
    """Yield task(item) for every item, in the order of `items`, on `workers` forked processes (in this
    process when workers <= 1 or there is one item). Items go to workers in chunks of `chunksize` (default: about
    8 chunks per worker). `progress(1)` is called as each result arrives."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        results: Iterable[R] = map(task, items)
        yield from _counted(results, progress)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunk = chunksize or max(1, len(items) // (8 * workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield from _counted(pool.map(task, items, chunksize=chunk), progress)


def _counted(results: Iterable[R], progress: Callable[[int], None] | None) -> Iterator[R]:
    for result in results:
        if progress:
            progress(1)
        yield result
