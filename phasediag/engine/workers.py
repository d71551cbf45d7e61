"""Process-parallel work, one mechanism for every job: `ordered_map`, forked worker processes
(concurrent.futures) that inherit the parent's modules and data without pickling them.

Each task is independent and seeded by its own index, so the results do not depend on the number of
workers. The sweep engine's tasks write their chunks into the result themselves (a shared file or mapping
the workers inherit, phasediag.results.stream), so only a range comes back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

from phasediag.results.atomic import STOP_SIGNALS

__all__ = ["ordered_map", "single_threaded_blas"]

T = TypeVar("T")
R = TypeVar("R")


def single_threaded_blas():
    """threadpoolctl's limit to one BLAS thread, so that matrix products (whose reduction order depends on the
    thread count) give the same bits in a worker process and in this one; a no-op context when threadpoolctl
    (installed with scikit-learn) is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def ordered_map(task: Callable[[T], R], items: Iterable[T], workers: int,
                progress: Callable[[int], None] | None = None, chunksize: int | None = None) -> Iterator[R]:
    """Yield task(item) for every item, in the order of `items`, on `workers` forked processes (in this
    process when workers <= 1 or there is one item). Items go to workers in chunks of `chunksize` (default:
    about 8 chunks per worker). `progress(1)` is called as each result arrives.

    An error in a task is raised here once the tasks before it are done (so it does not depend on timing);
    a worker that dies raises RuntimeError saying how it ended. The workers ignore Ctrl-C and SIGTERM (a
    batch system signals the whole job: this process decides) and exit if this process dies; when the
    generator stops early (an error, an interrupt, close()) the remaining tasks are cancelled and the
    workers killed."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        results: Iterable[R] = map(task, items)
        yield from _counted(results, progress)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    chunk = chunksize or max(1, len(items) // (8 * workers))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_started, initargs=(os.getpid(),))
    complete, started = False, []
    try:
        results = pool.map(task, items, chunksize=chunk)  # (every task submitted: the workers are started)
        started = _processes(pool)
        yield from _counted(results, progress)
        complete = True
    except BrokenProcessPool:
        raise RuntimeError(f"a worker process {_how_it_ended(started)} while it worked") from None
    finally:
        if not complete:  # do not wait for the tasks still queued or running
            for process in started + _processes(pool):
                with contextlib.suppress(OSError, AttributeError):
                    process.kill()
        pool.shutdown(wait=True, cancel_futures=True)


def _processes(pool) -> list:
    """The pool's worker processes (concurrent.futures keeps them in `_processes`; none if it does not)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _how_it_ended(processes: list) -> str:
    for process in processes:
        with contextlib.suppress(AssertionError, ValueError):  # (joined already, or never started)
            process.join(timeout=1.0)
    codes = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
    if not codes:
        return "ended"
    return f"was killed by signal {-codes[0]}" if codes[0] < 0 else f"exited with status {codes[0]}"


def _worker_started(parent: int) -> None:
    """In each worker: leave Ctrl-C and SIGTERM to the parent, and exit when the parent is gone (killed:
    nobody would read the results)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="phasediag-parent-watch", daemon=True).start()


def _counted(results: Iterable[R], progress: Callable[[int], None] | None) -> Iterator[R]:
    for result in results:
        if progress:
            progress(1)
        yield result
