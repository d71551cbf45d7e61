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
    generator stops early (an error, an interrupt, close()) the workers are killed and the remaining tasks
    dropped."""
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
        # Submitted here rather than by pool.map, which cancels its futures when it is left early: Python 3.11's
        # executor, finding its workers killed (below) with cancelled futures pending, raised InvalidStateError
        # in its own thread (a traceback on Ctrl-C) and left its pipes open.
        batches = [pool.submit(_run_batch, task, items[k:k + chunk]) for k in range(0, len(items), chunk)]
        started = _processes(pool)  # (every task submitted: the workers are started)
        yield from _counted((result for batch in batches for result in batch.result()), progress)
        complete = True
    except BrokenProcessPool:
        raise RuntimeError(f"a worker process {_how_it_ended(started)} while it worked") from None
    finally:
        if not complete:  # do not wait for the tasks still queued or running: the executor then fails them
            for process in started + _processes(pool):
                with contextlib.suppress(OSError, AttributeError):
                    process.kill()
        pool.shutdown(wait=True)


def _run_batch(task: Callable[[T], R], batch: list[T]) -> list[R]:
    return [task(item) for item in batch]


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
