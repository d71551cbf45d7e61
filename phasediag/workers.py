"""Process-parallel work: an ordered map for the simulated-training commands (validate, experiment
studies), and `fill_forked` for the sweep engine's chunks.

Each task is independent and seeded by its own index, so the results do not depend on the number of
workers; forked processes inherit the parent's modules and data without pickling them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import sys
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

__all__ = ["ordered_map", "fill_forked", "remote_write_available", "RemoteWriteUnavailable"]

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


# ---------- forked workers that write straight into the parent's arrays ----------

class RemoteWriteUnavailable(RuntimeError):
    """This system does not let a forked worker write into its parent's memory (not Linux, no
    process_vm_writev, or refused: seccomp, Yama ptrace_scope >= 2); the caller falls back to threads."""


_HEADER = struct.Struct("<qqq")  # worker -> parent: (task, status, bytes of the pickled error that follows)
_TASK = struct.Struct("<q")      # parent -> worker: the next task's index
_OK, _FAILED = 0, 1
_READY = -1                      # the task index of a worker's first report
_IN_FLIGHT = 2                   # tasks handed to each worker at a time, so that it never waits for the next
_PR_SET_PDEATHSIG, _PR_SET_PTRACER, _SIGKILL = 1, 0x59616D61, 9
_MADV_DONTFORK, _MADV_DOFORK = 10, 11


@functools.lru_cache(maxsize=None)
def _libc():
    """libc with process_vm_writev, or None where there is none (or no fork)."""
    import ctypes

    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        write = libc.process_vm_writev
    except (OSError, AttributeError):
        return None
    write.restype = ctypes.c_ssize_t
    write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                      ctypes.c_ulong]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def remote_write_available() -> bool:
    """Whether `fill_forked` can be tried here (the kernel may still refuse it: RemoteWriteUnavailable)."""
    return _libc() is not None


def _write_remote(pid: int, pieces: list[tuple[int, int, int]]) -> None:
    """Copy each (local address, address in process `pid`, bytes) from this process into process `pid`."""
    import ctypes

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    count = len(pieces)
    local = (IoVec * count)(*(IoVec(src, size) for src, _, size in pieces))
    remote = (IoVec * count)(*(IoVec(dst, size) for _, dst, size in pieces))
    want = sum(size for _, _, size in pieces)
    done = _libc().process_vm_writev(pid, local, count, remote, count, 0)
    if done != want:
        err = ctypes.get_errno()
        raise OSError(err, f"process_vm_writev wrote {done} of {want} bytes: {os.strerror(err)}")


def fill_forked(arrays: dict[str, np.ndarray], tasks: list[tuple[int, int]],
                evaluate: Callable[[int, int], dict[str, np.ndarray]], workers: int) -> Iterator[int]:
    """Fill arrays[k][lo:hi] = evaluate(lo, hi)[k] for every task (lo, hi) on `workers` forked processes;
    yield the index of each task as it lands, in the order they finish.

    Each worker evaluates a task in its own memory and writes the results straight into `arrays` in this
    process (Linux process_vm_writev: one copy from a cache-warm source, the destination pages faulted in by
    the kernel in batches by every worker at once; no shared memory, no pickling, no GIL). Tasks are handed
    out in order, two in flight per worker. If tasks fail, the error of the earliest failing task is raised
    once every task before it has finished, so the error does not depend on timing; a worker that dies is
    such an error. Raises RemoteWriteUnavailable, before yielding anything, when the kernel refuses the
    writes. The workers are killed and reaped when the generator finishes, fails, is closed or interrupted.
    `arrays` must be C-contiguous, indexed by the task rows on their first axis."""
    import signal

    if not remote_write_available():
        raise RemoteWriteUnavailable("process_vm_writev is not available on this system")
    if not all(a.flags.c_contiguous for a in arrays.values()):
        raise ValueError("fill_forked needs C-contiguous arrays")
    rows = {name: (a.ctypes.data, a.strides[0], a.dtype, a.shape[1:]) for name, a in arrays.items()}
    probe = np.zeros(workers, dtype=np.int64)  # each worker's first write: its pid, checked here
    parent = os.getpid()
    children: list[_Child] = []
    declared, own = False, []
    try:
        declared = _let_descendants_write()
        own = [m for m in map(_own_mapping, arrays.values()) if m is not None]
        _advise(own, _MADV_DONTFORK)  # the workers never touch them: no page-table copy, no copy-on-write
        for index in range(workers):
            from_parent, to_child = os.pipe()
            from_child, to_parent = os.pipe()
            pid = _fork()
            if pid == 0:  # the worker: never returns
                os.close(to_child), os.close(from_child)
                for child in children:
                    os.close(child.orders), os.close(child.reports)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it kills us on Ctrl-C
                _worker(parent, from_parent, to_parent, probe.ctypes.data + 8 * index, rows, tasks, evaluate)
            os.close(from_parent), os.close(to_parent)
            children.append(_Child(pid, to_child, from_child))
        _advise(own, _MADV_DOFORK)  # later forks (not ours) see the results as usual
        own = []
        for index, child in enumerate(children):
            _, status, _ = _HEADER.unpack(_read_exact(child.reports, _HEADER.size, child.pid))
            if status != _OK or probe[index] != child.pid:
                raise RemoteWriteUnavailable("the kernel refused process_vm_writev into this process")
        yield from _dispatch(children, len(tasks))
    finally:
        _advise(own, _MADV_DOFORK)
        for child in children:
            with contextlib.suppress(OSError):
                os.kill(child.pid, signal.SIGKILL)
        for child in children:
            os.close(child.orders), os.close(child.reports)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
        if declared:
            _libc().prctl(_PR_SET_PTRACER, 0, 0, 0, 0)



def _own_mapping(array: np.ndarray) -> tuple[int, int] | None:
    """(address, bytes) of the memory mapping `array` fills from its start (an mmap.mmap at the root of its
    bases), or None: only such memory may be advised without touching its neighbours'."""
    import mmap

    root = array
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    root = root.obj if isinstance(root, memoryview) else root
    if not isinstance(root, mmap.mmap) or len(root) == 0:
        return None
    start = np.frombuffer(root, dtype=np.uint8).ctypes.data
    return (start, len(root)) if start == array.ctypes.data else None


def _advise(mappings: list[tuple[int, int]], advice: int) -> None:
    for address, size in mappings:
        _libc().madvise(address, size, advice)  # best effort: without it a fork only costs more


def _let_descendants_write() -> bool:
    """Under Yama ptrace_scope 1 (Ubuntu's default) only ancestors may write into a process: declare this
    process its own 'ptracer', which lets its descendants, and them only, do so (until reset). Whether it
    was declared (any earlier declaration is replaced)."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            if f.read().strip() != "1":
                return False
    except OSError:
        return False
    return _libc().prctl(_PR_SET_PTRACER, os.getpid(), 0, 0, 0) == 0


def _fork() -> int:
    import warnings

    with warnings.catch_warnings():  # Python >= 3.12 warns about fork in threaded processes; the worker
        warnings.simplefilter("ignore", DeprecationWarning)  # runs only numpy code on its own data
        return os.fork()


class _Child:
    """A forked worker as the parent sees it: pid, the pipe its orders go to, the pipe its reports come from,
    and the tasks it holds."""

    def __init__(self, pid: int, orders: int, reports: int):
        self.pid, self.orders, self.reports = pid, orders, reports
        self.holds: set[int] = set()

    def give(self, task: int) -> None:
        os.write(self.orders, _TASK.pack(task))
        self.holds.add(task)


def _dispatch(children: list[_Child], n_tasks: int) -> Iterator[int]:
    """Hand out the tasks in order, _IN_FLIGHT per worker; yield each finished task's index."""
    import pickle
    import select

    next_task = 0
    failures: dict[int, BaseException] = {}
    by_fd = {child.reports: child for child in children}

    def refill(child: _Child) -> None:
        nonlocal next_task
        while len(child.holds) < _IN_FLIGHT and next_task < n_tasks and not failures:
            child.give(next_task)
            next_task += 1

    for child in children:
        refill(child)
    while busy := [child.reports for child in children if child.holds]:
        for fd in select.select(busy, [], [])[0]:
            child = by_fd[fd]
            try:
                task, status, size = _HEADER.unpack(_read_exact(fd, _HEADER.size, child.pid))
                if status != _OK:
                    failures[task] = pickle.loads(_read_exact(fd, size, child.pid))
            except RuntimeError as exc:  # the worker died: the earliest task it held failed
                failures[min(child.holds)] = exc
                child.holds.clear()
                continue
            child.holds.discard(task)
            if status == _OK:
                yield task
            refill(child)
    if failures:
        raise failures[min(failures)]


def _read_exact(fd: int, size: int, pid: int) -> bytes:
    data = b""
    while len(data) < size:
        part = os.read(fd, size - len(data))
        if not part:  # the worker is gone without a word: killed (out of memory?) or crashed
            raise _death(pid)
        data += part
    return data


def _death(pid: int) -> RuntimeError:
    """The error for a worker that is gone, with its exit status (it is left for the cleanup to reap)."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    how = "exited"
    if info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        how = f"was killed by signal {info.si_status}"
    elif info is not None:
        how = f"exited with status {info.si_status}"
    return RuntimeError(f"a worker process {how} while evaluating the sweep")


def _worker(parent: int, orders: int, reports: int, probe: int, rows, tasks, evaluate) -> None:
    """The forked worker's loop: evaluate each task it is sent and write the results into the parent; exit
    when the parent closes the pipe (or dies)."""
    status = 1
    try:
        _libc().prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before we could ask to die with it
            return
        pid = np.array([os.getpid()], dtype=np.int64)
        try:
            _write_remote(parent, [(pid.ctypes.data, probe, 8)])
        except OSError:
            os.write(reports, _HEADER.pack(_READY, _FAILED, 0))
            return
        os.write(reports, _HEADER.pack(_READY, _OK, 0))
        while len(message := os.read(orders, _TASK.size)) == _TASK.size:
            task = _TASK.unpack(message)[0]
            lo, hi = tasks[task]
            try:
                parts = _contiguous(rows, hi - lo, evaluate(lo, hi))
                _write_remote(parent, [(part.ctypes.data, rows[name][0] + lo * rows[name][1], part.nbytes)
                                       for name, part in parts.items()])
            except Exception as exc:  # sent to the parent, which raises it
                payload = _pickled(exc)
                os.write(reports, _HEADER.pack(task, _FAILED, len(payload)) + payload)
            else:
                os.write(reports, _HEADER.pack(task, _OK, 0))
        status = 0
    finally:
        os._exit(status)  # never the parent's cleanup, atexit handlers or buffered output


def _contiguous(rows, n: int, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each named array as n contiguous rows of the parent's dtype (broadcast views of constants expanded)."""
    return {name: np.ascontiguousarray(np.broadcast_to(values[name], (n, *tail)), dtype=dtype)
            for name, (_, _, dtype, tail) in rows.items()}


def _pickled(exc: BaseException) -> bytes:
    import pickle

    try:
        return pickle.dumps(exc)
    except Exception:  # an exception that cannot be pickled still reaches the parent, as its text
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
