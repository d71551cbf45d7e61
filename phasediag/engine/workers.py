"""Process-parallel work: an ordered map for the simulated-training commands (validate, experiment
studies), and `fill_forked` for the sweep engine's chunks.

Each task is independent and seeded by its own index, so the results do not depend on the number of
workers; forked processes inherit the parent's modules and data without pickling them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import struct
import sys
import threading
from typing import Callable, Iterable, Iterator, NamedTuple, TypeVar

import numpy as np

from phasediag.results.atomic import STOP_SIGNALS, signals_held

__all__ = ["ordered_map", "single_threaded_blas", "fill_forked", "remote_write_available", "RemoteWriteUnavailable"]

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
    process_vm_writev, refused: seccomp, Yama ptrace_scope >= 2), or no worker process can be started (a
    process limit, no memory to fork); the caller falls back to threads."""


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
    writes or no worker can be started. The workers ignore Ctrl-C and SIGTERM (a batch system signals the
    whole job): this process decides, and kills and reaps them when the generator finishes, fails, is closed
    or interrupted; forking and that cleanup hold those signals until they are done. Consume the generator
    in the thread that started it (a worker dies with the thread that forked it).
    `arrays` must be C-contiguous and writeable, indexed by the task rows on their first axis."""
    _check(arrays, tasks, workers)
    if not tasks:
        return
    if not remote_write_available():
        raise RemoteWriteUnavailable("process_vm_writev is not available on this system")
    rows = {name: (a.ctypes.data, a.strides[0], a.dtype, a.shape[1:]) for name, a in arrays.items()}
    probe = np.zeros(workers, dtype=np.int64)  # each worker's first write: its pid, checked here
    own = [m for m in map(own_mapping, arrays.values()) if m is not None]
    job = _Job(os.getpid(), probe, rows, tasks, evaluate)
    children: list[_Child] = []
    using_ptracer = False
    try:
        with signals_held():
            _ptracer.declare()
            using_ptracer = True
            _advise(own, _MADV_DONTFORK)  # the workers never touch them: no page-table copy, no copy-on-write
            try:
                for index in range(min(workers, len(tasks))):
                    children.append(_spawn(job, index, children))
            finally:
                _advise(own, _MADV_DOFORK)  # later forks (not ours) see the results as usual
        for index, child in enumerate(children):
            _, status, _ = child.report()
            if status != _OK or probe[index] != child.pid:
                raise RemoteWriteUnavailable("the kernel refused process_vm_writev into this process")
        yield from _dispatch(children, len(tasks))
    finally:
        with signals_held():  # a second Ctrl-C must not leave workers behind
            if using_ptracer:
                _ptracer.release()
            for child in children:
                child.kill()
            for child in children:
                child.reap()


def _check(arrays: dict[str, np.ndarray], tasks: list[tuple[int, int]], workers: int) -> None:
    if workers < 1:
        raise ValueError(f"fill_forked needs workers >= 1, got {workers}")
    if not all(a.flags.c_contiguous and a.flags.writeable for a in arrays.values()):
        raise ValueError("fill_forked needs C-contiguous, writeable arrays")
    rows = min((len(a) for a in arrays.values()), default=0)
    bad = next(((lo, hi) for lo, hi in tasks if not 0 <= lo <= hi <= rows), None)
    if bad is not None:
        raise ValueError(f"fill_forked: task rows {bad} outside the arrays' {rows} rows")


class _Job(NamedTuple):
    """What every worker of one fill_forked call needs."""

    parent: int
    probe: np.ndarray
    rows: dict
    tasks: list
    evaluate: Callable


def _spawn(job: _Job, index: int, siblings: list["_Child"]) -> "_Child":
    """Fork worker `index` (with the signals held); RemoteWriteUnavailable if it cannot be started."""
    fds: list[int] = []
    try:
        fds.extend(os.pipe())  # orders: (worker's read end, our write end)
        fds.extend(os.pipe())  # reports: (our read end, worker's write end)
        pid = fork_worker()
    except BaseException as exc:
        for fd in fds:
            os.close(fd)
        if isinstance(exc, OSError):  # a process or file limit, no memory to fork
            raise RemoteWriteUnavailable(f"cannot start a worker process: {exc}") from None
        raise
    from_parent, to_child, from_child, to_parent = fds
    if pid == 0:
        _worker(job, index, from_parent, to_parent, [to_child, from_child] + [fd for c in siblings for fd in c.fds])
    os.close(from_parent), os.close(to_parent)
    return _Child(pid, to_child, from_child)


def own_mapping(array: np.ndarray) -> tuple[int, int] | None:
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


class _Ptracer:
    """Under Yama ptrace_scope 1 (Ubuntu's default) only ancestors may write into a process: while any
    fill_forked runs, this process declares itself its own 'ptracer', which lets its descendants, and them
    only, do so. Counted, so that overlapping calls (threads) do not revoke each other's declaration; the
    last one resets it to none (replacing any declaration the host program made before)."""

    def __init__(self) -> None:
        self.lock, self.users, self.declared = threading.Lock(), 0, False

    def declare(self) -> None:
        """Count one more user (declaring for the first); call `release` when done."""
        with self.lock:
            if self.users == 0:
                self.declared = _yama_scope() == 1 and _libc().prctl(_PR_SET_PTRACER, os.getpid(), 0, 0, 0) == 0
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0 and self.declared:
                _libc().prctl(_PR_SET_PTRACER, 0, 0, 0, 0)
                self.declared = False


_ptracer = _Ptracer()


def _yama_scope() -> int | None:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def fork_worker() -> int:
    import warnings

    with warnings.catch_warnings():  # Python >= 3.12 warns about fork in a threaded process (e.g. BLAS
        warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",  # threads);
                                category=DeprecationWarning)  # the worker runs only numpy code on its own data
        return os.fork()


class _Child:
    """A forked worker as the parent sees it: pid, the pipe its orders go to, the pipe its reports come from,
    the tasks it holds, and whether it is already gone."""

    def __init__(self, pid: int, orders: int, reports: int):
        self.pid, self.orders, self.reports = pid, orders, reports
        self.holds: set[int] = set()
        self.reaped = False  # waited for elsewhere (SIGCHLD ignored, or another reaper): its pid may be reused

    @property
    def fds(self) -> list[int]:
        return [self.orders, self.reports]

    def report(self) -> tuple[int, int, int]:
        """Its next report: (task, status, bytes of the pickled error that follows)."""
        return _HEADER.unpack(_read_exact(self.reports, _HEADER.size, self))

    def give(self, task: int) -> None:
        self.holds.add(task)
        with contextlib.suppress(BrokenPipeError):  # it just died: its end of file reports that
            os.write(self.orders, _TASK.pack(task))

    def kill(self) -> None:
        if not self.reaped:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)

    def reap(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self.reaped:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.reaped = True


def _dispatch(children: list[_Child], n_tasks: int) -> Iterator[int]:
    """Hand out the tasks in order, _IN_FLIGHT per worker; yield each finished task's index."""
    import selectors

    next_task = 0
    failures: dict[int, BaseException] = {}

    def refill(child: _Child) -> None:
        nonlocal next_task
        while len(child.holds) < _IN_FLIGHT and next_task < n_tasks and not failures:
            child.give(next_task)
            next_task += 1

    with selectors.DefaultSelector() as selector:  # not select(): it fails on descriptors >= 1024
        for child in children:
            selector.register(child.reports, selectors.EVENT_READ, child)
            refill(child)
        while any(child.holds for child in children):
            for key, _ in selector.select():
                child = key.data
                try:
                    task, status, size = child.report()
                    if status != _OK:
                        failures[task] = _unpickled(_read_exact(child.reports, size, child))
                except RuntimeError as exc:  # the worker died: the earliest task it held failed
                    if child.holds:
                        failures[min(child.holds)] = exc
                    child.holds.clear()
                    selector.unregister(child.reports)
                    continue
                child.holds.discard(task)
                if status == _OK:
                    yield task
                refill(child)
    if failures:
        raise failures[min(failures)]


def _read_exact(fd: int, size: int, child: _Child) -> bytes:
    data = b""
    while len(data) < size:
        part = os.read(fd, size - len(data))
        if not part:  # the worker is gone without a word: killed (out of memory?) or crashed
            raise _death(child)
        data += part
    return data


def _death(child: _Child) -> RuntimeError:
    """The error for a worker that is gone, with its exit status (it is left for the cleanup to reap)."""
    try:
        info = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # reaped by someone else (SIGCHLD ignored, a waitpid(-1) elsewhere)
        child.reaped = True
        info = None
    how = "ended"
    if info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        how = f"was killed by signal {info.si_status}"
    elif info is not None:
        how = f"exited with status {info.si_status}"
    return RuntimeError(f"a worker process {how} while evaluating the sweep")


def _worker(job: _Job, index: int, orders: int, reports: int, not_ours: list[int]) -> None:
    """The forked worker: evaluate each task it is sent and write the results into the parent; exit when
    the parent closes the pipe (or dies). Never returns into the caller's code."""
    status = 1
    try:
        for sig in STOP_SIGNALS:  # still held: ignore them before letting them in
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        for fd in not_ours:
            os.close(fd)
        _libc().prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != job.parent:  # the parent died before we could ask to die with it
            return
        pid = np.array([os.getpid()], dtype=np.int64)
        try:
            _write_remote(job.parent, [(pid.ctypes.data, job.probe.ctypes.data + 8 * index, 8)])
        except OSError:
            os.write(reports, _HEADER.pack(_READY, _FAILED, 0))
            return
        os.write(reports, _HEADER.pack(_READY, _OK, 0))
        while len(message := os.read(orders, _TASK.size)) == _TASK.size:
            task = _TASK.unpack(message)[0]
            lo, hi = job.tasks[task]
            try:
                parts = _contiguous(job.rows, hi - lo, job.evaluate(lo, hi))
                _write_remote(job.parent, [(part.ctypes.data, job.rows[name][0] + lo * job.rows[name][1],
                                            part.nbytes) for name, part in parts.items()])
            except BaseException as exc:  # sent to the parent, which raises it (SystemExit included)
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
    """The exception, pickled so that it unpickles (else a RuntimeError with its text: a class that cannot
    be pickled, or whose constructor does not take its own args)."""
    import pickle

    try:
        payload = pickle.dumps(exc)
        pickle.loads(payload)
        return payload
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _unpickled(payload: bytes) -> BaseException:
    import pickle

    try:
        return pickle.loads(payload)
    except Exception as exc:  # noqa: BLE001 - the error itself is what matters; say what we know
        return RuntimeError(f"a worker's error could not be read back ({type(exc).__name__}: {exc})")
