"""The one parallel mechanism (workers.ordered_map): forked processes, results in order, errors independent of
timing, workers that die are an error, an early stop kills them, and they never outlive their parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from phasediag.engine import workers


def slow_square(x):
    time.sleep(0.002 * (x % 5))  # out of order: later items often finish first
    return x * x, os.getpid()


def test_results_come_in_order_from_several_processes():
    got = list(workers.ordered_map(slow_square, range(40), 2, chunksize=1))
    assert [v for v, _ in got] == [x * x for x in range(40)]
    assert len({pid for _, pid in got}) == 2 and os.getpid() not in {pid for _, pid in got}
    assert [v for v, _ in workers.ordered_map(slow_square, range(5), 1)] == [0, 1, 4, 9, 16]


def fails_at_3_and_7(x):
    if x == 7:
        raise ValueError("seven")
    if x == 3:
        time.sleep(0.2)  # the earlier failure finishes last: it is still the one raised
        raise KeyError("three")
    return x


def test_the_earliest_failing_item_is_the_error_whatever_the_timing():
    with pytest.raises(KeyError, match="three"):
        list(workers.ordered_map(fails_at_3_and_7, range(10), 2, chunksize=1))


def dies_at_4(x):
    if x == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_a_worker_that_dies_is_an_error_naming_how():
    with pytest.raises(RuntimeError, match="a worker process was killed by signal 9"):
        list(workers.ordered_map(dies_at_4, range(10), 2, chunksize=1))


def pid_then_sleep(x):
    if x < 2:
        return os.getpid()
    time.sleep(30)
    return os.getpid()


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # (a zombie is gone, just not yet reaped)
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_stopping_early_kills_the_workers_instead_of_waiting_for_them():
    results = workers.ordered_map(pid_then_sleep, range(8), 2, chunksize=1)
    first = next(results)
    started = time.monotonic()
    results.close()  # as a KeyboardInterrupt in the consumer does
    assert time.monotonic() - started < 10  # not the 30 s the queued tasks would take
    assert gone(first)


def ignores_sigint(x):
    if x == 0:
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C sent to the whole process group reaches the workers too
        time.sleep(0.1)
    return x


def test_workers_leave_ctrl_c_to_the_parent():
    assert list(workers.ordered_map(ignores_sigint, range(6), 2, chunksize=1)) == list(range(6))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_do_not_outlive_a_parent_that_is_killed(tmp_path):
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, signal, time
        from phasediag.engine import workers

        def task(x):
            with open({str(pids)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(60)

        for _ in workers.ordered_map(task, range(4), 2, chunksize=1):
            pass
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.05)
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    proc.send_signal(signal.SIGKILL)  # no cleanup of its own: the workers must notice
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(map(gone, children)):
        time.sleep(0.1)
    assert all(map(gone, children)), "a worker outlived its killed parent"


_WRITING: dict = {}


def _write_chunk(task: tuple[int, int]) -> int:
    lo, hi = task
    sink, values = _WRITING["sink"], _WRITING["values"]
    sink.write(lo, hi, {name: v[lo - sink.start:hi - sink.start] for name, v in values.items()})
    sink.write(lo, hi, {"constant": np.ones((), bool)})  # a 0-d value: broadcast over the chunk's rows
    return os.getpid()


@pytest.mark.parametrize("dtype, tail", [("float64", ()), ("int8", ()), ("bool", ()), ("float64", (3,))])
def test_workers_write_chunks_into_the_result_files_this_process_sees(dtype, tail):
    """Forked workers write unaligned chunks of every kind of result array (1-byte codes and flags, 2-D
    trajectories) into the files in memory behind this process's result arrays: it sees every value, rows
    outside a chunk are untouched, a write in this process lands as well, and finish() leaves the arrays and
    closes the files."""
    from phasediag.results import stream

    n = 50_003
    shape = (n,) + tail
    values = (np.arange(np.prod(shape)).reshape(shape) % 7 + 1).astype(dtype)
    sink = stream.MemoryResult.for_workers({"x": (shape, dtype), "constant": ((n,), bool)}, 10)
    assert not sink.arrays["x"].any()  # zeros before anything is written
    files = {fd: (os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in sink.files.values()}
    bounds = [10, 11, 4106, 4107, 9000, 30011, n + 10]
    _WRITING.update(sink=sink, values={"x": values})  # (inherited by the forked workers)
    pids = set(workers.ordered_map(_write_chunk, list(zip(bounds[:-1], bounds[1:])), 2, chunksize=1))
    assert os.getpid() not in pids and len(pids) >= 1
    assert np.array_equal(sink.arrays["x"], values) and sink.arrays["constant"].all()
    sink.write(12, 20, {"x": np.zeros((8,) + tail, dtype)})  # in this process too; the neighbours keep theirs
    expected = values.copy()
    expected[2:10] = 0
    assert np.array_equal(sink.arrays["x"], expected)
    arrays = sink.finish()
    assert np.array_equal(arrays["x"], expected)
    assert not sink.files
    for fd, identity in files.items():  # closed (or the number reused by another file since)
        try:
            assert (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != identity
        except OSError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_NOFILE and /proc/self/fd: Linux")
def test_many_results_of_workers_in_memory_stay_within_the_open_file_limit(tmp_path):
    """Before Python 3.13 each array of a workers' result in memory keeps a descriptor while it lives (its
    mapping's): 40 results kept at once under a soft limit of 256 open files need ~800, so the soft limit is
    raised (never past the hard one) instead of failing with 'Too many open files'; each result is the same
    as one worker's."""
    script = textwrap.dedent("""
        import os, resource, sys
        import numpy as np
        import phasediag
        config = {"name": "fd", "sweep": {"d": {"log": [1, 100, 3]}, "s": {"log": [0.01, 1, 3]}},
                  "model": {"width": "d", "init_var_u": "s", "init_var_w": "s"}}
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        one = phasediag.run(config, workers=1, chunk_size=3)
        kept = [phasediag.run(config, workers=2, chunk_size=3) for _ in range(40)]
        assert all(np.array_equal(r[k], one[k]) for r in kept for k in one.arrays)
        soft_now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        print(len(kept), len(os.listdir("/proc/self/fd")), soft_now, hard)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    kept, open_files, soft, hard = map(int, done.stdout.split())
    assert kept == 40 and open_files <= soft <= hard
    if sys.version_info >= (3, 13):
        assert open_files < 64  # the mappings keep no descriptor: nothing to raise


def test_ctrl_c_during_a_parallel_sweep_leaves_no_traceback_and_no_open_pipes():
    """Ctrl-C at varied moments of `workers=2` sweeps in one process: KeyboardInterrupt each time, nothing
    printed by the executor's own thread (Python 3.11's raised InvalidStateError there when the futures of
    workers it found killed had been cancelled) and no descriptor left open once the result is gone."""
    script = textwrap.dedent("""
        import gc, os, signal, threading, time
        import phasediag
        import phasediag.engine.sweep as sweep
        config = {"name": "ctrl_c", "sweep": {"d": {"log": [1, 100, 6]}, "s": {"log": [0.01, 1, 6]}},
                  "model": {"width": "d", "init_var_u": "s", "init_var_w": "s"}}
        evaluate = sweep.evaluate_chunk
        sweep.evaluate_chunk = lambda config, lo, hi: time.sleep(0.1) or evaluate(config, lo, hi)
        before = len(os.listdir("/proc/self/fd"))
        for delay in (0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1, 1.25):
            threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            try:
                phasediag.run(config, workers=2, chunk_size=1)
                raise SystemExit("not interrupted")
            except KeyboardInterrupt:
                pass
            time.sleep(0.2)
            gc.collect()
        time.sleep(0.5)
        print(before, len(os.listdir("/proc/self/fd")))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    before, after = map(int, done.stdout.split())
    assert after == before


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="the workers' result in memory is memfd-backed here")
def test_a_workers_result_in_memory_is_mapped_in_as_its_chunks_arrive():
    """The pages the workers wrote through the files are mapped into this process while they compute the
    next chunks, not at the first read after the run: reading every page of the result afterwards takes
    (almost) no page fault. Left to that read, the 5,000-odd pages here take hundreds of faults (fault-around
    maps 16 pages per fault at most)."""
    import resource

    import phasediag

    config = {"name": "mapped", "sweep": {"d": {"log": [1, 1e6, 400]}, "s": {"log": [1e-8, 1, 400]}},
              "model": {"width": "d", "init_var_u": "s", "init_var_w": "s"}}
    result = phasediag.run(config, workers=2, chunk_size=4096)
    assert result.meta["worker_kind"] == "processes"
    pages = sum(-(-np.asarray(a).nbytes // 4096) for a in result.arrays.values())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for array in result.arrays.values():
        np.asarray(array).reshape(-1).view(np.uint8)[::4096].max(initial=0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert pages > 5000 and faults < 40, (pages, faults)
