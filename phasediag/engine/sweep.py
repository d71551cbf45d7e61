"""Sweep execution: config -> grid -> core -> named result arrays, in bounded-size chunks.

The grid is the Cartesian product of the sweep axes (then a seed axis with `init: {seeds: N}`), addressed
by flat C-order index. A chunk is a contiguous range of flat indices; each point's numbers depend only on
its own index (sampled initializations use a counter-based stream keyed by (seed, flat index)), so results
are bit-identical whatever the chunk size, shard split or number of workers.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

import phasediag
from phasediag import core
from phasediag.config import reader
from phasediag.config.sweep import Config, ConfigError, Quantity
from phasediag.engine.metrics import LEGENDS, METRICS, TRAJECTORY_FIELDS, PointSet, metrics_for
from phasediag.results.store import Result
from phasediag.results import stream
from phasediag.results.stream import MemoryResult, StreamedResult

DEFAULT_CHUNK = 1 << 17  # 1 MiB per float64 temporary: measured best on the 1000 x 1000 grid (benchmarks/)
_TRAJ_BUDGET = 1 << 21  # points x times per chunk for trajectory arrays (~16 MB per array)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (1-based): the flat range [start, stop) of an n-point grid."""

    index: int
    count: int

    def bounds(self, n: int) -> tuple[int, int]:
        return (self.index - 1) * n // self.count, self.index * n // self.count


def grid_size(config: Config) -> int:
    import math

    return math.prod(int(n) for n in config.shape)  # Python integers: never wraps


def config_hash(config: Config) -> str:
    """Fingerprint of everything that determines the numbers (plot settings excluded)."""
    return reader.config_hash(config.resolved)


def chunk_length(config: Config, chunk_size: int = DEFAULT_CHUNK) -> int:
    if config.times is None:
        return chunk_size
    return max(1, min(chunk_size, _TRAJ_BUDGET // len(config.times)))


def chunks(start: int, stop: int, length: int) -> Iterator[tuple[int, int]]:
    for lo in range(start, stop, length):
        yield lo, min(lo + length, stop)


# ---------- the allocator ----------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@functools.lru_cache(maxsize=None)  # process-wide and idempotent: look libc up once
def tune_allocator() -> bool:
    """Let glibc keep chunk-sized temporaries on its heap instead of mmap/munmap-ing each one.

    A chunk's evaluation makes a few hundred short-lived arrays of chunk_size * 8 bytes. Above glibc's mmap
    threshold (128 KiB, grown only by certain frees) each is a fresh mapping whose pages are faulted in and
    zeroed, which made the closed form ~1.5x slower at the default chunk size. Raising the mmap threshold to
    32 MiB and the trim threshold to 128 MiB reuses the memory instead; arrays above 32 MiB (the results)
    are still mapped and returned to the system. No-op (False) without glibc. Process-wide; called by `run`.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 128 << 20))


# ---------- model values on a chunk ----------

def grid_variables(config: Config, flat: np.ndarray | range) -> dict[str, np.ndarray]:
    """The sweep variables at the flat (C-order) grid indices `flat`; a `range` (a chunk) is expanded by
    repeating and tiling the axis values, without an integer division per point."""
    if not isinstance(flat, range):
        position = np.unravel_index(flat, config.shape)
        return {axis.name: axis.values[position[k]] for k, axis in enumerate(config.axes)}
    out = {}
    for k, axis in enumerate(config.axes):  # (a trailing seed axis, if any, is in config.shape only)
        n = len(axis.values)
        stride = int(np.prod(config.shape[k + 1:], dtype=np.int64))
        if stride < 16:  # a fast axis: tile one period of the pattern (a slice when the chunk is inside one)
            pattern = axis.values if stride == 1 else np.repeat(axis.values, stride)
            offset, length = flat.start % pattern.size, len(flat)
            reps = -(-(offset + length) // pattern.size)
            out[axis.name] = (pattern if reps == 1 else np.tile(pattern, reps))[offset:offset + length]
            continue
        first, last = flat.start // stride, (flat.stop - 1) // stride  # blocks of `stride` equal values
        blocks = np.arange(first, last + 1)
        counts = np.full(blocks.size, stride)
        counts[0] -= flat.start - first * stride
        counts[-1] -= (last + 1) * stride - flat.stop
        out[axis.name] = np.repeat(axis.values[blocks % n], counts)
    return out


def _where_text(variables: dict[str, np.ndarray], i: int) -> str:
    return ", ".join(f"{name}={values[i]:.6g}" for name, values in variables.items())


def _require(q: Quantity, values: np.ndarray, rule: str, variables, low: float, high: float | None = None,
             strict: bool = False, shown: np.ndarray | None = None) -> None:
    """low <= values (< if strict) [<= high] everywhere, by two reductions (NaN fails); else a ConfigError
    naming the first failing point and its value (of `shown`, if given: the value as written)."""
    lo, hi = np.min(values), np.max(values)
    if (lo > low if strict else lo >= low) and (high is None or hi <= high):
        return
    ok = (values > low if strict else values >= low) & (True if high is None else values <= high)
    _fail_at(q, values if shown is None else shown, ok, rule, variables)


def _fail_at(q: Quantity, values: np.ndarray, ok: np.ndarray, rule: str, variables) -> None:
    if not np.all(ok):
        i = int(np.flatnonzero(~np.asarray(ok))[0])
        at = f" at {_where_text(variables, i)}" if variables else ""
        where = f"{q.path} (line {q.line})" if q.line else q.path
        raise ConfigError(f"{where}: {q.text!r} {rule}, got {np.ravel(values)[min(i, np.size(values) - 1)]:.6g}{at}")


def model_values(config: Config, flat: np.ndarray | range) -> tuple[dict[str, np.ndarray], core.Problem]:
    """Evaluate and check every model/data/init quantity on the points `flat`; build the core Problem."""
    return values_at(config, grid_variables(config, flat), flat)


def values_at(config: Config, variables: dict[str, np.ndarray], flat: np.ndarray | range | None = None,
              draws: core.UnitDraws | None = None) -> tuple[dict[str, np.ndarray], core.Problem]:
    """Evaluate and check every model/data/init quantity at the sweep-variable values `variables` (name ->
    1-D array, one entry per point: grid points or any others); build the core Problem. `flat`: the points'
    flat grid indices, which key a sampled initialization's draws (needed with init: {seeds: N} only);
    `draws`: those draws already made (core.unit_draws at these points' widths and indices)."""
    n = len(next(iter(variables.values()))) if variables else len(flat)

    def value(q: Quantity) -> np.ndarray:  # a constant stays 0-d: the core then combines it as a scalar
        x = np.asarray(q.evaluate(variables), dtype=float)
        return x if x.ndim == 0 else core.broadcast(x, (n,))

    v = {key: value(q) for key, q in {**config.model, **config.data}.items()}
    width = np.round(v["width"])
    _require(config.model["width"], width, "must round to a whole number in [1, 2^53]", variables,
             low=1.0, high=2.0**53, shown=v["width"])
    for key in ("output_scale", "lr_u", "lr_w"):
        _require(config.model[key], v[key], "must be > 0", variables, low=0.0, strict=True)
    for key in ("init_var_u", "init_var_w"):
        _require(config.model[key], v[key], "must be >= 0", variables, low=0.0)
    _require(config.data["input_var"], v["input_var"], "must be > 0", variables, low=0.0, strict=True)
    _require(config.data["noise_var"], v["noise_var"], "must be >= 0", variables, low=0.0)
    v["width"] = width
    if config.init_kind == "gram":
        U, W, V = (value(q) for q in config.gram)
        _require(config.gram[0], U, "must be >= 0", variables, low=0.0)
        _require(config.gram[1], W, "must be >= 0", variables, low=0.0)
        _fail_at(config.gram[2], V, V * V <= U * W * (1 + 1e-12), "needs V^2 <= U W", variables)
        gram = core.explicit_gram(U, W, V)
    elif config.init_kind == "seeds" and draws is not None:
        gram = core.scaled_gram(v["init_var_u"], v["init_var_w"], draws)
    elif config.init_kind == "seeds":
        if flat is None:
            raise ValueError("a sampled initialization is keyed by grid points: give their flat indices")
        index = np.arange(flat.start, flat.stop) if isinstance(flat, range) else flat
        gram = core.sample_gram(width, v["init_var_u"], v["init_var_w"], seed=config.seed, index=index)
    else:
        gram = core.typical_gram(width, v["init_var_u"], v["init_var_w"])
    problem = core.Problem(v["output_scale"], v["lr_u"], v["lr_w"], v["input_var"], v["teacher"], gram)
    return {k: core.broadcast(x, (n,)) for k, x in v.items()}, problem


#: grids up to this many points (of the shard) are checked before anything is computed or written; larger
#: ones as they are evaluated (every chunk checks its points the same way), since the check of a 1e9-point
#: grid alone costs a third of its evaluation; a bad value found then leaves nothing behind
CHECK_FIRST_POINTS = 10**7


def validate(config: Config, chunk_size: int = DEFAULT_CHUNK, shard: Shard | None = None) -> None:
    """Check every grid point's model values (of the shard) before anything is computed or written
    (raises ConfigError)."""
    n = grid_size(config)
    start, stop = shard.bounds(n) if shard else (0, n)
    check = scaling_values if config.mode == "scaling" else model_values
    for lo, hi in chunks(start, stop, chunk_size):
        check(config, range(lo, hi))


def stored_metrics(config: Config) -> list:
    """The metrics this config stores: the `metrics:` list (with the plotted maps), else all of its kind."""
    every = metrics_for(config.kind)
    return every if config.metrics is None else [m for m in every if m.name in config.metrics]


def array_specs(config: Config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape of one point's values, dtype) of every stored array: metrics (), trajectories (T,)."""
    specs = {m.name: ((), np.dtype(m.dtype)) for m in stored_metrics(config)}
    if config.times is not None:
        specs.update({f"traj_{field}": ((len(config.times),), np.dtype(float)) for field in TRAJECTORY_FIELDS})
    return specs


def result_bytes(config: Config, points: int) -> int:
    """Bytes the result arrays of `points` grid points take (what a run writes, to disk or to memory)."""
    return points * sum(int(np.prod(tail)) * dtype.itemsize for tail, dtype in array_specs(config).values())


# ---------- evaluation ----------

def scaling_values(config: Config, flat: np.ndarray | range) -> tuple[np.ndarray, ...]:
    """The exponents (k, su, sw, eu, ew) on the points `flat` of a `mode: scaling` grid (bases checked > 0)."""
    from phasediag.config.sweep import SCALING_KEYS

    variables = grid_variables(config, flat)
    out = []
    for key in SCALING_KEYS:
        base = np.broadcast_to(config.bases[key].evaluate(variables), (len(flat),))
        _require(config.bases[key], base, "must be > 0", variables, low=0.0, strict=True)
        out.append(np.broadcast_to(config.model[key].evaluate(variables), (len(flat),)).astype(float))
    return tuple(out)


def evaluate_chunk(config: Config, start: int, stop: int) -> dict[str, np.ndarray]:
    """All stored arrays for the flat points [start, stop): metrics shaped (n,), trajectories (n, T).

    A floating-point overflow (values beyond the range the closed form supports) is a ConfigError naming the
    first grid point where it happens."""
    try:
        return _evaluate_chunk(config, start, stop)
    except FloatingPointError as exc:
        lo, hi = start, stop
        while hi - lo > 1:  # bisect to one failing point (only on this error path)
            mid = (lo + hi) // 2
            try:
                _evaluate_chunk(config, lo, mid)
            except FloatingPointError:
                hi = mid
            else:
                lo = mid
        where = _where_text(grid_variables(config, np.array([lo])), 0) if config.axes else f"point {lo}"
        from phasediag.engine.point import SUPPORTED_RANGE

        raise ConfigError(f"model/data: floating-point {exc} at {where}: the values there are outside the range "
                          f"the closed form supports ({SUPPORTED_RANGE})") from None


def _evaluate_chunk(config: Config, start: int, stop: int) -> dict[str, np.ndarray]:
    if config.mode == "scaling":
        from phasediag.engine.metrics import ScalingPointSet

        points = ScalingPointSet(*scaling_values(config, range(start, stop)))
        return {m.name: np.asarray(m.compute(points)).astype(m.dtype, copy=False).reshape(-1)
                for m in stored_metrics(config)}
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):  # (as `validate` checks)
        _, problem = model_values(config, range(start, stop))
    inv = core.invariants(problem)
    points = PointSet(inv, config.horizon, config.ntk_threshold, config.alignment_threshold, config.max_steps,
                      config.optimizer)
    n = stop - start  # broadcast views, not copies: the sink makes the one copy into the results
    out = {m.name: core.broadcast(np.asarray(m.compute(points), dtype=m.dtype), (n,))
           for m in stored_metrics(config)}
    if config.times is not None:
        if config.optimizer == "gd":
            state = core.gd_state(inv, config.times, max_steps=config.max_steps)
        else:
            state = core.flow_state(core.with_time_axis(inv), config.times)
        for field in TRAJECTORY_FIELDS:
            out[f"traj_{field}"] = core.broadcast(getattr(state, field), (stop - start, len(config.times)))
    return out


#: results up to this size get transparent huge pages; larger ones are pre-faulted in 4 KiB pages (see below)
HUGE_PAGE_RESULTS = 256 << 20


def allocate(config: Config, n: int) -> dict[str, np.ndarray]:
    """The result arrays of n points (first axis: the point), each in its own anonymous mapping, never
    faulted in one 4 KiB page at a time by a single thread: the results are written exactly once, and those
    faults cost more than copying the values in. Up to HUGE_PAGE_RESULTS in all they get transparent huge
    pages (madvise), the fastest here (0.10 s instead of 0.15-0.2 s for the 1e6-point evaluation); larger
    results are pre-faulted (MAP_POPULATE), because huge pages for 1.5 GB stalled 2-3 s in the kernel's
    compaction where pre-faulting took 0.5 s (benchmarks/bench.py, docs/benchmarks.md). Forked workers write
    into `shared_result` instead."""
    specs = result_specs(config, n)
    huge = result_bytes(config, n) <= HUGE_PAGE_RESULTS
    return {name: mapped_array(shape, dtype, huge, populate=not huge) for name, (shape, dtype) in specs.items()}


def result_specs(config: Config, n: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """name -> (shape, dtype) of every result array of n points."""
    return {name: ((n,) + tail, dtype) for name, (tail, dtype) in array_specs(config).items()}


def shared_result(config: Config, n: int, start: int = 0) -> MemoryResult:
    """The result arrays of n points (the first: flat point `start`) that forked workers write into."""
    return MemoryResult.for_workers(result_specs(config, n), start)


def mapped_array(shape: tuple[int, ...], dtype: np.dtype, huge: bool, populate: bool) -> np.ndarray:
    import mmap

    count = int(np.prod(shape))
    size = max(count * dtype.itemsize, 1)
    flags = getattr(mmap, "MAP_PRIVATE", None)
    if flags is None:  # pragma: no cover - not POSIX
        return np.empty(shape, dtype)
    flags |= mmap.MAP_ANONYMOUS | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
    buffer = mmap.mmap(-1, size, flags=flags)
    if huge and size >= 1 << 21 and hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # a kernel without THP
            buffer.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


#: Default seconds between checkpoints: the chunks finished since the last one are flushed to disk and then
#: listed in the record together, so a fast sweep is not slowed by a flush per chunk, and a killed job loses
#: at most this much work.
CHECKPOINT_EVERY = 5.0


def run(
    config: Config,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    shard: Shard | None = None,
    workers: int = 1,
    checkpoint: Path | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Result:
    """Evaluate the grid (or one shard of it).

    `checkpoint`: a folder (a run directory's checkpoint folder) where the results are written as the chunks
    finish, into the results.npz that will be committed (results.stream.StreamedResult): memory holds one
    chunk per worker whatever the grid's size, and every `checkpoint_every` seconds (0: after every chunk)
    the finished chunks are made durable and recorded, so that a stopped run resumes from them; the result's
    arrays are then that file, memory-mapped (`result.data_file`). None: the arrays are in memory.
    `progress(k)` is called with the points just done, `warn(text)` for a checkpoint it cannot use."""
    started = time.perf_counter()
    tune_allocator()
    n = grid_size(config)
    start, stop = shard.bounds(n) if shard else (0, n)
    length = chunk_length(config, chunk_size)
    all_chunks = list(chunks(start, stop, length))
    requested, workers = workers, workers_for(workers, len(all_chunks))
    sink, done = _open_sink(config, start, stop, shard, workers, checkpoint, warn)
    try:
        # (in memory nothing is made durable: each chunk is recorded as it arrives, see MemoryResult.record)
        _fill(config, sink, all_chunks, done, workers, 0.0 if checkpoint is None else checkpoint_every, progress)
        arrays = sink.finish()
    except ConfigError:  # a bad value found while evaluating (a grid too large to check first): no result
        sink.discard()
        raise
    except BaseException:  # Ctrl-C, SIGTERM, a failing chunk or worker: what is finished stays for --resume
        sink.close()
        raise
    if shard is None and checkpoint is None:
        arrays = {k: a.reshape(config.shape + a.shape[1:]) for k, a in arrays.items()}
    eval_s = time.perf_counter() - started
    meta = build_meta(config, n, length, workers, shard, (start, stop), eval_s)
    meta["workers_requested"] = requested
    meta["worker_kind"] = "processes" if workers > 1 else "serial"
    return Result(coords=coordinates(config), arrays=arrays, meta=meta,
                  data_file=None if checkpoint is None else sink.path)


def _fill(config: Config, sink, all_chunks: list[tuple[int, int]], done: list[tuple[int, int]], workers: int,
          checkpoint_every: float, progress: Callable[[int], None] | None) -> None:
    """Evaluate the chunks of `all_chunks` that `done` does not cover into `sink`, recording the finished ones
    every `checkpoint_every` seconds (and those finished when it stops, whatever stops it)."""
    covered = _coverage(done)
    todo = [(lo, hi) for lo, hi in all_chunks if not covered(lo, hi)]
    skipped = sum(hi - lo for lo, hi in all_chunks) - sum(hi - lo for lo, hi in todo)
    if progress and skipped:
        progress(skipped)
    pending: list[tuple[int, int]] = []
    last_save = time.perf_counter()
    try:
        for lo, hi, receipt in execute_chunks(config, todo, workers, sink):
            pending.append((lo, hi, receipt))
            if time.perf_counter() - last_save >= checkpoint_every:
                sink.record(pending)
                pending, last_save = [], time.perf_counter()
            if progress:
                progress(hi - lo)
    except BaseException:
        with contextlib.suppress(OSError):
            sink.record(pending)
        raise
    sink.record(pending)


def run_shared_shard(config: Config, shard: Shard, folder: Path, *, chunk_size: int = DEFAULT_CHUNK,
                     workers: int = 1, checkpoint_every: float = CHECKPOINT_EVERY,
                     progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Evaluate `shard` into the whole grid's results.npz in `folder`, the checkpoint folder of the unsharded
    run (the same file: laid out by whichever shard comes first, written by all at once in disjoint rows, each
    with its own record; see StreamedResult.open_shared). Nothing is completed or committed here. Returns
    (points of the grid recorded as finished by any writer, the grid's points)."""
    n = grid_size(config)
    length = chunk_length(config, chunk_size)
    shard_chunks = list(chunks(*shard.bounds(n), length))
    sink = _streamed(config, folder, record=stream.shard_record(shard.index, shard.count))
    done = sink.open_shared(shard.bounds(n))
    try:
        _fill(config, sink, shard_chunks, done, workers_for(workers, len(shard_chunks)), checkpoint_every,
              progress)
    finally:
        sink.close()
    return recorded_points(config, folder), n


def recorded_points(config: Config, folder: Path) -> int:
    """The points of the grid that the records in checkpoint `folder` list as finished (0 if it holds none
    that check out)."""
    sink = _streamed(config, folder)
    return 0 if sink.check() is not None else sum(hi - lo for lo, hi in _union(sink.done))


def _streamed(config: Config, folder: Path, bounds: tuple[int, int] | None = None,
              record: str = stream.RECORD) -> StreamedResult:
    """The results.npz in checkpoint `folder` of the whole grid (shaped as the grid), or of a shard's flat
    range `bounds` (one axis of points)."""
    rows = tuple(config.shape) if bounds is None else (bounds[1] - bounds[0],)
    start, stop = (0, grid_size(config)) if bounds is None else bounds
    specs = {name: (rows + tail, dtype) for name, (tail, dtype) in array_specs(config).items()}
    return StreamedResult(folder, coordinates(config), specs, config_hash(config), start, stop, record)


def _open_sink(config: Config, start: int, stop: int, shard: Shard | None, workers: int,
               folder: Path | None, warn):
    """Where the chunks go, and the ranges already there (a resumed run's)."""
    if folder is None:
        if workers > 1:
            return shared_result(config, stop - start, start), []
        return MemoryResult(allocate(config, stop - start), start), []
    sink = _streamed(config, folder, None if shard is None else (start, stop))
    return sink, sink.open(warn)


def workers_for(workers: int, n_chunks: int) -> int:
    """The number of workers a sweep of `n_chunks` chunks is evaluated with (never more than there are
    chunks); the results do not depend on it."""
    return max(1, min(workers, n_chunks))


#: the sweeps being evaluated by forked workers: token -> (config, sink), inherited by every worker at fork
_JOBS: dict[int, tuple] = {}


def execute_chunks(config: Config, todo: list[tuple[int, int]], workers: int, sink):
    """Evaluate the chunks `todo` (flat ranges) and write each into `sink`; yield each (lo, hi, the receipt
    sink.write returned), in order, once it is written.

    With workers > 1 the chunks are evaluated by forked processes (engine.workers.ordered_map), each
    writing its chunk into the sink itself (with os.pwrite to an inherited file descriptor): nothing but
    the range and the receipt (its CRC-32s) come back. Every chunk is written once, into rows nobody else
    writes, so the results are the same bits for any number of workers."""
    from phasediag.engine.workers import ordered_map  # (in this process for one worker or one chunk)

    token = id(sink)
    _JOBS[token] = (config, sink)
    try:
        yield from ordered_map(_evaluate_into, [(token, lo, hi) for lo, hi in todo], workers, chunksize=1)
    finally:
        _JOBS.pop(token, None)


def _evaluate_into(task: tuple[int, int, int]) -> tuple[int, int, object]:
    token, lo, hi = task
    config, sink = _JOBS[token]
    return lo, hi, sink.write(lo, hi, evaluate_chunk(config, lo, hi))


def _union(ranges: list[tuple[int, int]]) -> list[list[int]]:
    """The union of the flat ranges `ranges` as sorted, disjoint [lo, hi] pairs (a chunk may be recorded
    twice, by a shard and a resumed run)."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return merged


def _coverage(done: list[tuple[int, int]]) -> Callable[[int, int], bool]:
    """Whether the ranges `done` cover [lo, hi) (their union, searched: a resumed 1e9-point run has
    thousands of both)."""
    import bisect

    merged = _union(done)
    starts = [lo for lo, _ in merged]

    def covered(lo: int, hi: int) -> bool:
        k = bisect.bisect_right(starts, lo) - 1
        return k >= 0 and merged[k][1] >= hi

    return covered


def coordinates(config: Config) -> dict[str, np.ndarray]:
    coords = {axis.name: axis.values for axis in config.axes}
    if config.init_kind == "seeds":
        coords["seed"] = np.arange(config.seeds)
    if config.times is not None:
        coords["time"] = config.times
    return coords


def build_meta(config: Config, n: int, chunk: int, workers: int, shard: Shard | None, bounds, eval_s: float):
    metrics = stored_metrics(config)
    axes = list(config.axis_names)
    dims = {m.name: axes for m in metrics}
    if config.times is not None:
        dims.update({f"traj_{field}": axes + ["time"] for field in TRAJECTORY_FIELDS})
    return {
        "kind": "scaling" if config.mode == "scaling" else "sweep",
        "name": config.name,
        "description": config.description,
        "mode": config.mode,
        "axes": list(config.axis_names),
        "shape": list(config.shape),
        "times": None if config.times is None else config.times.tolist(),
        "grid_points": n,
        "metrics": {m.name: {"label": m.label, "kind": m.kind, "log": m.log, "threshold": m.threshold,
                             "resolution": m.resolution} for m in metrics},
        "coords": list(coordinates(config)),
        "dims": dims,
        "legends": {k: list(v) for k, v in LEGENDS.items() if k in METRICS},
        "thresholds": {"ntk_threshold": config.ntk_threshold, "alignment_threshold": config.alignment_threshold},
        "config": config.resolved,
        "config_hash": config_hash(config),
        "version": phasediag.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "chunk_size": chunk,
        "workers": workers,
        "shard": None if shard is None else {"index": shard.index, "count": shard.count,
                                             "start": bounds[0], "stop": bounds[1]},
        "timing": {"eval_s": round(eval_s, 6)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
