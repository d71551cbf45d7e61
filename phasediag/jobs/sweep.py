"""Job kinds `sweep` and `scaling`: the closed form evaluated on a grid of hyperparameters.

`sweep`: a finite-width sweep (gradient flow or exact GD, docs/theory.md sections 4-6 and 9); `scaling`
(`mode: scaling`): the infinite-width limit over a grid of scaling exponents (section 7). Reading the config
is :mod:`phasediag.config.sweep`, the chunked evaluation :mod:`phasediag.engine.sweep`, the figures
:mod:`phasediag.plots.maps` and :mod:`phasediag.plots.scaling`.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np

from phasediag.config.reader import ConfigError, Located, read_config
from phasediag.config.sweep import Config, config_from_root
from phasediag.engine import sweep
from phasediag.engine.metrics import LEGENDS
from phasediag.errors import ResultsError
from phasediag.results import npz, store
from phasediag.results.store import Result

SUPPORTS = frozenset({"shard", "resume", "shared", "chunk_size", "checkpoint_every"})
#: the fields of a sweep's meta.json beyond the common ones (checked when a run directory is read)
META_FIELDS = {"mode": str, "axes": list, "shape": list, "grid_points": int, "metrics": dict, "legends": dict,
               "thresholds": dict}
TABLES = {"time": "trajectories"}  # export: the trajectory table is <name>_trajectories.csv


def read(root: Located, source: str, options) -> Config:
    """The sweep config; every bad value, and a grid its destination has no room for, are reported before
    any work."""
    config = config_from_root(root)
    check_room(config, options, options.destination)
    if units(config, options) > sweep.CHECK_FIRST_POINTS:
        return config  # (checked chunk by chunk as it is evaluated)
    try:  # values beyond float range overflow while checked (V^2 <= U W, a Gram): an error, not a warning
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            sweep.validate(config, options.chunk_size, options.shard)
    except FloatingPointError as exc:
        from phasediag.engine.point import SUPPORTED_RANGE

        raise ConfigError(f"model/data/init: floating-point {exc} while checking the values: they are outside "
                          f"the range the closed form supports ({SUPPORTED_RANGE})") from None
    return config


def units(config: Config, options) -> int:
    start, stop = _bounds(config, options.shard)
    return stop - start


def execute(config: Config, options, checkpoint: Path | None) -> Result:
    result = sweep.run(config, chunk_size=options.chunk_size, shard=options.shard, workers=options.workers,
                       checkpoint=checkpoint, checkpoint_every=options.checkpoint_every, progress=options.progress,
                       warn=options.warn)
    if options.shard is None:  # (a shard holds part of the lines: its merge finds them)
        add_boundaries(config, result)
    return result


BOUNDARIES_FILE = "boundaries.csv"


def add_boundaries(config: Config, result: Result) -> None:
    """The exact boundaries of the config's `boundaries:` entries (engine.boundaries), found from the grid's
    labels: into result.tables["boundaries"], and described in meta["boundaries"] (file, column kinds,
    crossings, log-log slopes of the entries with `against`)."""
    if not config.boundaries:
        return
    from phasediag.engine import boundaries

    started = time.perf_counter()
    codes = {spec.of: np.asarray(result.arrays[spec.of]).reshape(config.shape) for spec in config.boundaries}
    table = boundaries.find_all(config, codes)
    result.tables["boundaries"] = table
    result.meta["boundaries"] = _described(config, table)
    result.meta.setdefault("timing", {})["boundaries_s"] = round(time.perf_counter() - started, 6)


def _described(config: Config, table: dict[str, np.ndarray]) -> dict:
    """meta.json's entry of the boundaries table (its file, column kinds, crossings, slopes), as JSON holds it."""
    import json

    from phasediag.engine import boundaries

    kinds = boundaries.column_kinds(config)
    assert {name: store.column_kind(values) for name, values in table.items()} == kinds, "the table's own kinds"
    entry = {"file": BOUNDARIES_FILE, "crossings": int(len(table["boundary"])), "columns": kinds,
             "slopes": boundaries.fit_slopes(config, table)}
    return json.loads(json.dumps(entry))


def _check_boundaries(result: Result) -> None:
    """ResultsError unless the boundaries table and its meta.json entry are the ones the config implies: a
    table where the config asks for one (not in a shard), its crossings between neighbouring grid values, and
    the entry's kinds, count and slopes those of that table."""
    config_text = result.meta.get("config")
    if not (isinstance(config_text, dict) and "boundaries" in config_text) and "boundaries" not in result.meta \
            and "boundaries" not in result.tables:
        return  # (no boundaries asked for nor present: the config need not be read)
    try:
        config = config_from_root(read_config(config_text)[0]) if isinstance(config_text, dict) else None
    except ConfigError as exc:
        raise ResultsError(f"meta.json: its config is not valid ({exc})") from None
    wanted = bool(config and config.boundaries and result.meta.get("shard") is None)
    have = "boundaries" in result.meta or "boundaries" in result.tables
    if not wanted:
        if have:
            raise ResultsError("meta.json: it describes boundaries its config does not ask for")
        return
    if "boundaries" not in result.tables or not isinstance(result.meta.get("boundaries"), dict):
        raise ResultsError("meta.json: its config asks for boundaries and it has no boundaries table")
    from phasediag.engine import boundaries

    table = result.tables["boundaries"]
    problem = boundaries.table_problem(config, table)
    if problem is None and result.meta["boundaries"] != _described(config, table):
        problem = "meta.json's boundaries entry (columns, crossings, slopes) is not that of the table"
    if problem is None:  # found again (from the grid's labels; sampled: as they were, ~ the sweep's own cost)
        codes = {spec.of: np.asarray(result.arrays[spec.of]).reshape(config.shape) for spec in config.boundaries
                 if spec.quantiles is None and spec.of in result.arrays}
        if len(codes) == len({spec.of for spec in config.boundaries if spec.quantiles is None}):
            where = boundaries.first_difference(table, boundaries.find_all(config, codes))
            problem = None if where is None else f"its crossings are not the ones the config and results.npz give " \
                                                  f"({where} differs)"
    if problem is not None:
        raise ResultsError(f"{BOUNDARIES_FILE}: {problem}")


def execute_shared(config: Config, options, folder: Path) -> tuple[int, int]:
    """Shard `options.shard` into the result all shards share (engine.sweep.run_shared_shard)."""
    return sweep.run_shared_shard(config, options.shard, folder, chunk_size=options.chunk_size,
                                  workers=options.workers, checkpoint_every=options.checkpoint_every,
                                  progress=options.progress)


def data_names(config: Config | None, shard=None) -> list[str]:
    """The data files a run of `config` (None: a merge, whose config is the shards') writes, known before it
    runs: results.npz, and the boundaries table if the config asks for boundaries (not in a shard)."""
    found = config is not None and config.boundaries and shard is None
    return [store.RESULTS_FILE] + ([BOUNDARIES_FILE] if found else [])


def write_data(result: Result, out: Path) -> list[Path]:
    """results.npz into the staging folder `out`: the file the run streamed its chunks into is linked there
    (written once; until the commit it stays in the checkpoint folder too, so a commit that fails leaves the
    run resumable), or moved where the file system has no hard links; a result in memory is written."""
    tables = _write_tables(result, out)
    path = Path(out) / store.RESULTS_FILE
    if result.data_file is None:
        store.write_npz(path, {**result.coords, **result.arrays})
        return [path, *tables]
    try:
        os.link(result.data_file, path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise  # (a full disk or inode table: the run stays resumable)
        os.replace(result.data_file, path)
    return [path, *tables]


def _write_tables(result: Result, out: Path) -> list[Path]:
    if "boundaries" not in result.tables:
        return []
    path = Path(out) / BOUNDARIES_FILE
    store.write_columns(path, result.tables["boundaries"])
    return [path]


def check_result(result: Result) -> None:
    """ResultsError unless the grid that meta.json describes (axes, shape, grid points, shard range) is the
    one the coordinates and arrays hold."""
    meta = result.meta
    axes, shape = meta.get("axes"), meta.get("shape")
    if not isinstance(axes, list) or not isinstance(shape, list) or len(axes) != len(shape) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ResultsError("meta.json: axes and shape must be lists of one name and one length per axis")
    if any(a not in result.coords or len(result.coords[a]) != n for a, n in zip(axes, shape)):
        raise ResultsError("meta.json: its axes and shape are not the coordinates results.npz holds")
    points = int(np.prod(shape, dtype=object))
    if meta.get("grid_points") != points:
        raise ResultsError(f"meta.json: grid_points is {meta.get('grid_points')!r}, the shape holds {points}")
    shard = meta.get("shard")
    if shard is not None:
        start, stop = shard.get("start"), shard.get("stop")
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop <= points) or any(
                len(a) != stop - start for a in result.arrays.values()):
            raise ResultsError("meta.json: the shard's start and stop are not the points its arrays hold")
    _check_boundaries(result)


def figures(result: Result):
    if result.meta.get("mode") == "scaling":
        from phasediag.plots.scaling import figure_stems
    else:
        from phasediag.plots.maps import figure_stems
    return figure_stems(result)


def figure_for(result: Result, name: str):
    """The map (or line plot) of any stored metric `name`, whether or not the config's plot.maps lists it."""
    plot = {**result.meta["config"].get("plot", {}), "maps": [name]}
    only = Result(result.coords, result.arrays, {**result.meta, "config": {**result.meta["config"], "plot": plot}},
                  tables=result.tables)
    stems = [(stem, draw) for stem, draw in figures(only) if not stem.endswith("__trajectories")]
    if not stems:
        raise KeyError(f"{name!r}: not a metric that can be drawn as a map; metrics: "
                       f"{', '.join(result.meta.get('metrics', {}))}")
    return stems[0][1]()


def summarize(result: Result) -> dict:
    """Grid size and shape, the shard, and how many points carry each label of every categorical metric."""
    counts = {}
    for name, legend in LEGENDS.items():
        if name in result.arrays:
            total = npz.code_counts(result.arrays[name])  # (bounded memory, whatever the grid's size)
            counts[name] = {legend[c]: total[c] for c in sorted(total)}
    out = {"grid_points": result.meta["grid_points"], "shape": result.meta["shape"],
           "shard": result.meta["shard"], "counts": counts}
    if "boundaries" in result.meta:
        table = result.boundaries
        kinds = sorted(set(zip(table.get("along", ()), table.get("rule", ()), table.get("below", ()),
                               table.get("above", ()))))
        out["boundaries"] = {
            "crossings": result.meta["boundaries"]["crossings"],
            "kinds": [{"along": str(a), "rule": str(r), "below": str(b), "above": str(c),
                       "crossings": int(np.sum((table["along"] == a) & (table["below"] == b) & (table["above"] == c)))}
                      for a, r, b, c in kinds],
            "slopes": result.meta["boundaries"]["slopes"]}
    return out


def text(summary: dict) -> str:
    t = summary["timing"]
    lines = [f"{summary['name']}: {summary['grid_points']} points {tuple(summary['shape'])} -> {summary['out']} "
             f"(evaluated in {t['eval_s']:.3g} s)"]
    lines += [f"  {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
              for name, counts in summary.get("counts", {}).items()]
    found = summary.get("boundaries")
    if found:
        lines += [f"  boundary along {k['along']}: {k['below']} | {k['above']} ({k['rule']}), {k['crossings']} "
                  "crossings" for k in found["kinds"]]
        lines += [f"  slope of {f['along']} at {f['below']} | {f['above']} against {f['against']}"
                  + "".join(f", {name} = {value:g}" for name, value in f.get("at", {}).items())
                  + f": {f['slope']:.6g} over {f['points']} lines"
                  + (f" (exact: {f['exact_slope']})" if f.get("exact_slope") is not None else "")
                  for f in found["slopes"] if "slope" in f]
    lines += [f"  wrote {path}" for path in summary["files"]]
    return "\n".join(lines)


def merge(directories: list[Path], out: Path, plot: bool) -> Result:
    """Join shard directories into `out` (streamed: one array in memory at a time; bit-identical to a single
    run); the result holds the categorical arrays only unless figures are to be drawn."""
    if plot:  # drawing loads the joined result: refuse before writing anything if it cannot fit
        need = sum((d / store.RESULTS_FILE).stat().st_size for d in directories
                   if (d / store.RESULTS_FILE).is_file())
        have = available_memory()
        if need > MEMORY_FRACTION * have:
            raise ConfigError(f"merge: drawing the maps needs the joined result in memory ({need / 1e9:.3g} GB; "
                              f"{_memory_limit_text(have)}); use --no-plot (the merge itself holds one metric "
                              "at a time)")
    meta = store.merge_files(directories, out, verified=True)  # (lifecycle.merge verified every shard)
    meta["files"] = [store.RESULTS_FILE]
    result = store.load(out, only=None if plot else set(LEGENDS), meta=meta, verify=False, mmap=True)
    if (meta.get("config") or {}).get("boundaries"):  # (found on the whole grid: the shards hold parts of lines)
        add_boundaries(config_from_root(read_config(meta["config"])[0]), result)
        meta["files"] += [p.name for p in _write_tables(result, out)]
    return result


def _bounds(config: Config, shard) -> tuple[int, int]:
    n = sweep.grid_size(config)
    return shard.bounds(n) if shard else (0, n)


MEMORY_FRACTION = 0.8  # of the available memory, at most, for the result arrays


def available_memory(meminfo: str = "/proc/meminfo") -> int:
    """Bytes of memory available to a new job: MemAvailable (free memory plus the page cache and buffers the
    kernel can reclaim), not MemFree, which leaves out the cache and so understates it on a busy machine;
    sysconf's free pages where /proc/meminfo is missing (not Linux)."""
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


def _memory_limit_text(have: int) -> str:
    return f"the limit is {MEMORY_FRACTION * 100:.0f} % of the {have / 1e9:.3g} GB of memory available"


def check_room(config: Config, options, out: Path | None) -> None:
    """Refuse, before any work, a grid whose results cannot be held: on disk where they stream to (`out`),
    in memory for a run that writes nothing, and in memory too when its maps are to be drawn."""
    start, stop = _bounds(config, None if options.shared else options.shard)  # (shared: the whole grid's file)
    need = sweep.result_bytes(config, stop - start)
    split = "split it with --shard K/N (N >= {parts:,}) and join the parts with 'phasediag merge --no-plot'"
    if out is None or options.plot and (options.shard is None or options.shared):
        have = available_memory()
        if need > MEMORY_FRACTION * have:
            parts = -(-need // int(MEMORY_FRACTION / 2 * have))  # Python integers: exact for any grid
            how = ("write it to disk (out=...), which holds one chunk per worker in memory" if out is None
                   else "use --no-plot: the run streams its results to disk, holding one chunk per worker")
            raise ConfigError(f"sweep: {stop - start:,} grid points need {need / 1e9:.3g} GB of result arrays in "
                              f"memory{'' if out is None else ' to draw the maps'}; {_memory_limit_text(have)}; "
                              f"{how}, or {split.format(parts=parts)}, or make the sweep smaller")
    if out is not None:
        free = _free_disk(Path(out))
        if need > free:
            parts = -(-need // max(free, 1))
            raise ConfigError(f"sweep: {stop - start:,} grid points need {need / 1e9:.3g} GB of result arrays on "
                              f"disk; {out} has {free / 1e9:.3g} GB free; free some space, choose another --out, "
                              f"or {split.format(parts=parts)} on several disks")


def _free_disk(out: Path) -> int:
    """Bytes free for `out`: on the file system of its nearest existing folder."""
    import shutil

    for folder in [out, *out.parents]:
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return 1 << 62  # pragma: no cover - no folder of the path exists, not even the root
