"""Forked workers writing into the parent's arrays (workers.fill_forked): every row lands once, errors are
raised deterministically, and no worker outlives the call however it ends."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from phasediag.engine import workers

pytestmark = pytest.mark.skipif(not workers.remote_write_available(), reason="needs Linux process_vm_writev")


def arrays_of(n: int) -> dict[str, np.ndarray]:
    return {"x": np.zeros(n), "code": np.zeros(n, dtype=np.int8), "traj": np.zeros((n, 3)),
            "flag": np.zeros(n, dtype=bool)}


def values(lo: int, hi: int) -> dict[str, np.ndarray]:
    rows = np.arange(lo, hi)
    return {"x": np.sqrt(rows + 0.5), "code": (rows % 7).astype(np.int8),
            "traj": rows[:, None] * np.array([1.0, -2.0, 0.25]), "flag": np.asarray(lo % 2 == 0)}  # flag: 0-d


@pytest.fixture
def forked_pids(monkeypatch) -> list[int]:
    """The pids of every worker forked in the test (to check that each was reaped)."""
    pids: list[int] = []
    real = workers.fork_worker

    def fork() -> int:
        pid = real()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(workers, "fork_worker", fork)
    return pids


def assert_reaped(pids: list[int]) -> None:
    assert pids
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # not our child any more: it was waited for


@pytest.mark.parametrize("n_workers, size", [(2, 7), (3, 5), (2, 50)])
def test_every_row_lands_once_with_the_values_of_a_serial_pass(n_workers, size, forked_pids):
    n = 203
    tasks = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
    got = arrays_of(n)
    done = list(workers.fill_forked(got, tasks, values, n_workers))
    assert sorted(done) == list(range(len(tasks)))
    expected = arrays_of(n)
    for lo, hi in tasks:
        for name, v in values(lo, hi).items():
            expected[name][lo:hi] = v
    for name in expected:
        assert got[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(got[name], expected[name])
    assert len(forked_pids) == n_workers
    assert_reaped(forked_pids)


def test_the_earliest_failing_task_is_raised_whatever_finishes_first(forked_pids):
    import time

    def evaluate(lo, hi):
        if lo == 30:
            time.sleep(0.3)  # fails last in time, but is the earliest task that fails
            raise ValueError("task at 30")
        if lo == 60:
            raise KeyError("task at 60")
        return values(lo, hi)

    tasks = [(lo, lo + 10) for lo in range(0, 200, 10)]
    with pytest.raises(ValueError, match="task at 30"):
        list(workers.fill_forked(arrays_of(200), tasks, evaluate, 2))
    assert_reaped(forked_pids)


def test_an_exception_that_cannot_be_pickled_still_reaches_the_parent_as_text():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def evaluate(lo, hi):
        raise Local("not picklable")

    with pytest.raises(RuntimeError, match="Local: not picklable"):
        list(workers.fill_forked(arrays_of(20), [(0, 10), (10, 20)], evaluate, 2))


@pytest.mark.parametrize("death, message", [(lambda: os._exit(3), "exited with status 3"),
                                            (lambda: os.kill(os.getpid(), signal.SIGKILL), "killed by signal 9")])
def test_a_worker_that_dies_is_an_error_not_a_hang(death, message, forked_pids):
    def evaluate(lo, hi):
        if lo == 40:
            death()
        return values(lo, hi)

    with pytest.raises(RuntimeError, match=f"worker process .*{message}"):
        list(workers.fill_forked(arrays_of(100), [(lo, lo + 10) for lo in range(0, 100, 10)], evaluate, 2))
    assert_reaped(forked_pids)


def test_closing_the_generator_early_kills_and_reaps_the_workers(forked_pids):
    import time

    def slow(lo, hi):
        time.sleep(0.05)
        return values(lo, hi)

    results = workers.fill_forked(arrays_of(400), [(lo, lo + 10) for lo in range(0, 400, 10)], slow, 2)
    next(results)
    results.close()
    assert_reaped(forked_pids)


def test_a_kernel_that_refuses_the_transport_is_reported_before_any_result(monkeypatch, forked_pids):
    def refused(pid, pieces):  # what seccomp or Yama ptrace_scope >= 2 would do
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(workers, "_write_remote", refused)
    with pytest.raises(workers.RemoteWriteUnavailable):
        next(workers.fill_forked(arrays_of(40), [(0, 20), (20, 40)], values, 2))
    assert_reaped(forked_pids)


def test_arrays_that_are_not_contiguous_are_refused():
    strided = {"x": np.zeros((10, 2))[:, 0]}
    with pytest.raises(ValueError, match="C-contiguous"):
        next(workers.fill_forked(strided, [(0, 5), (5, 10)], lambda lo, hi: {"x": np.ones(hi - lo)}, 2))


def test_result_mappings_are_kept_from_the_workers_and_forkable_again_afterwards():
    from phasediag.engine import sweep

    n = 64
    mapped = {name: sweep.mapped_array(a.shape, a.dtype, huge=False, populate=False) for name, a in arrays_of(n).items()}
    assert all(workers.own_mapping(a) is not None for a in mapped.values())
    tasks = [(lo, lo + 8) for lo in range(0, n, 8)]
    list(workers.fill_forked(mapped, tasks, values, 2))
    expected = arrays_of(n)
    for lo, hi in tasks:
        for name, v in values(lo, hi).items():
            expected[name][lo:hi] = v
    pid = os.fork()
    if pid == 0:  # a later fork (not a worker) must see the results: MADV_DOFORK was restored
        ok = all(np.array_equal(mapped[k], expected[k]) for k in expected)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


class NeedsTwoArgs(Exception):
    """Pickles, but does not unpickle: its constructor does not take its own args."""

    def __init__(self, name, value):
        super().__init__(f"{name} = {value}")


def test_an_error_that_does_not_unpickle_still_arrives_in_order_as_text():
    def evaluate(lo, hi):
        if lo == 0:
            import time

            time.sleep(0.2)  # the earliest failure arrives last
            raise ValueError("task at 0")
        if lo == 30:
            raise NeedsTwoArgs("x", 3)
        return values(lo, hi)

    tasks = [(lo, lo + 10) for lo in range(0, 60, 10)]
    with pytest.raises(ValueError, match="task at 0"):
        list(workers.fill_forked(arrays_of(60), tasks, evaluate, 2))
    with pytest.raises(RuntimeError, match="NeedsTwoArgs: x = 3"):
        list(workers.fill_forked(arrays_of(60), tasks[3:], evaluate, 2))


def test_system_exit_in_a_task_reaches_the_parent_with_its_message():
    def evaluate(lo, hi):
        raise SystemExit("solver gave up")

    with pytest.raises(SystemExit, match="solver gave up"):
        list(workers.fill_forked(arrays_of(20), [(0, 10), (10, 20)], evaluate, 2))


def test_a_worker_reaped_behind_our_back_is_reported_not_a_crash(forked_pids):
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps children at once

    def evaluate(lo, hi):
        if lo == 20:
            os._exit(3)
        return values(lo, hi)

    try:
        with pytest.raises(RuntimeError, match="a worker process ended"):
            list(workers.fill_forked(arrays_of(60), [(lo, lo + 10) for lo in range(0, 60, 10)], evaluate, 2))
    finally:
        signal.signal(signal.SIGCHLD, old)


def test_descriptors_above_1024_are_watched(forked_pids):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the file limit is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        while not held or held[-1] < 1100:  # a caller with many open files: our pipes get numbers > 1024
            held.append(os.dup(0))
        got = arrays_of(40)
        assert sorted(workers.fill_forked(got, [(0, 20), (20, 40)], values, 2)) == [0, 1]
        np.testing.assert_array_equal(got["x"], np.sqrt(np.arange(40) + 0.5))
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert_reaped(forked_pids)


def read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("arrays, tasks, n, message", [
    (lambda: arrays_of(10), [(0, 5), (5, 11)], 2, "outside the arrays' 10 rows"),
    (lambda: arrays_of(10), [(3, 2)], 2, "outside"),
    (lambda: {"x": np.zeros(10)}, [(0, 10)], 0, "workers >= 1"),
    (lambda: {"x": np.zeros(10)[::-1]}, [(0, 10)], 2, "C-contiguous"),
    (lambda: {"x": read_only(np.zeros(10))}, [(0, 10)], 2, "writeable"),
])
def test_bad_calls_are_refused_before_any_worker_starts(arrays, tasks, n, message, forked_pids):
    with pytest.raises(ValueError, match=message):
        next(workers.fill_forked(arrays(), tasks, values, n))
    assert not forked_pids


def test_no_tasks_start_no_workers(forked_pids):
    assert list(workers.fill_forked(arrays_of(5), [], values, 2)) == []
    assert not forked_pids
