"""Orchestration of `phasediag run / plot / export / merge`: directories, resume, atomic outputs, figures.

The CLI parses options and calls these; they raise ConfigError / ResultsError for bad input (exit 2).
Layout of an output directory: results.npz + meta.json (complete results), the figures, and while a run
is in progress `.partial-<config_hash>/` holding finished chunks (what `--resume` reuses).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from phasediag.results import store as results
from phasediag.engine import sweep
from phasediag.config.sweep import Config, ConfigError, load_config
from phasediag.results.atomic import atomic_write

DEFAULT_ROOT = Path("outputs")


def parse_shard(text: str | None) -> sweep.Shard | None:
    """'K/N' with 1 <= K <= N -> Shard (None stays None)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{text!r}: expected K/N, e.g. 3/10")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= k <= n:
        raise ValueError(f"{text!r}: need 1 <= K <= N")
    return sweep.Shard(k, n)


def default_out(config: Config, shard: sweep.Shard | None) -> Path:
    base = DEFAULT_ROOT / config.name
    return base / f"shard-{shard.index:04d}-of-{shard.count:04d}" if shard else base


def _complete_and_current(out: Path, digest: str, shard: sweep.Shard | None) -> bool:
    meta_path = out / results.META_FILE
    if not meta_path.is_file() or not (out / results.RESULTS_FILE).is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    want = None if shard is None else {"index": shard.index, "count": shard.count}
    got = meta.get("shard")
    got = None if got is None else {"index": got.get("index"), "count": got.get("count")}
    return meta.get("config_hash") == digest and got == want


def _available_memory() -> int:
    import os

    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


def _check_size(config: Config, shard: sweep.Shard | None) -> None:
    """Refuse, before any work, a grid whose result arrays cannot fit in memory (suggest --shard)."""
    n = sweep.grid_size(config)
    start, stop = shard.bounds(n) if shard else (0, n)
    need = sweep.result_bytes(config, stop - start)
    have = _available_memory()
    if need > 0.8 * have:
        parts = int(np.ceil(need / (0.4 * have)))
        raise ConfigError(f"sweep: {stop - start:,} grid points need {need / 1e9:.3g} GB of result arrays, "
                          f"more than the {have / 1e9:.3g} GB of memory available; split it with --shard K/N "
                          f"(N >= {parts}) and join the parts with 'phasediag merge --no-plot' (it holds one "
                          f"metric of the grid at a time), or make the sweep smaller")


def _previous_figures(out: Path) -> set[str]:
    """The figure files an earlier run recorded in `out`'s meta.json (plain names inside `out` only)."""
    try:
        names = json.loads((out / results.META_FILE).read_text()).get("figures") or []
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and n == Path(n).name and not n.startswith(".")}


def run_config(
    config_path: str | Path,
    *,
    out: str | Path | None = None,
    shard: sweep.Shard | None = None,
    workers: int = 1,
    resume: bool = False,
    plot: bool = True,
    chunk_size: int = sweep.DEFAULT_CHUNK,
    checkpoint_every: float = sweep.CHECKPOINT_EVERY,
    progress: Callable[[int], None] | None = None,
    progress_total: Callable[[int], None] | None = None,
) -> dict:
    """Validate, evaluate, save and draw one config. Returns a JSON-ready summary."""
    started = time.perf_counter()
    config = load_config(config_path)
    _check_size(config, shard)
    sweep.validate(config, chunk_size, shard)  # every bad value is reported before anything is written
    out = Path(out) if out is not None else default_out(config, shard)
    digest = sweep.config_hash(config)
    if resume and _complete_and_current(out, digest, shard):
        return {"out": str(out), "status": "up to date", "config_hash": digest,
                "files": [str(out / results.RESULTS_FILE), str(out / results.META_FILE)]}
    n = sweep.grid_size(config)
    start, stop = shard.bounds(n) if shard else (0, n)
    if progress_total:
        progress_total(stop - start)
    partial = out / f".partial-{digest}"
    if not resume and partial.exists():
        shutil.rmtree(partial)
    result = sweep.run(config, chunk_size=chunk_size, shard=shard, workers=workers,
                       checkpoint=partial if stop - start > chunk_size else None,
                       checkpoint_every=checkpoint_every, progress=progress)
    saved = time.perf_counter()
    previous = _previous_figures(out)
    files = [str(p) for p in results.save(result, out)]
    result.meta["timing"]["save_s"] = round(time.perf_counter() - saved, 6)
    figures = draw(result, out) if plot and not result.is_shard else []
    result.meta["timing"]["total_s"] = round(time.perf_counter() - started, 6)
    result.meta["figures"] = [Path(f).name for f in figures]
    results.save_meta(result, out)
    for stale in previous - set(result.meta["figures"]):  # an earlier run's figures this run did not redraw
        (out / stale).unlink(missing_ok=True)
    if partial.exists():
        shutil.rmtree(partial)
    return summary(result, out, files + figures)


def draw(result: results.Result, out: Path, formats: list[str] | None = None) -> list[str]:
    """Render the config's figures into `out` (returns their paths)."""
    if result.meta.get("mode") == "scaling":
        from phasediag.plots.scaling import render_all
    else:
        from phasediag.plots.maps import render_all

    started = time.perf_counter()
    paths = [str(p) for p in render_all(result, out, formats)]
    result.meta["timing"]["plot_s"] = round(time.perf_counter() - started, 6)
    return paths


def summary(result: results.Result, out: Path, files: list[str]) -> dict:
    """What a script wants to know after a run: where, how big, how long, which phases."""
    from phasediag.engine.metrics import LEGENDS

    counts = {}
    for name, legend in LEGENDS.items():
        if name in result.arrays:
            codes, freq = np.unique(result.arrays[name], return_counts=True)
            counts[name] = {legend[int(c)]: int(f) for c, f in zip(codes, freq)}
    return {"out": str(out), "status": "done", "name": result.meta["name"],
            "grid_points": result.meta["grid_points"], "shape": result.meta["shape"],
            "shard": result.meta["shard"], "counts": counts, "timing": result.meta["timing"],
            "config_hash": result.meta["config_hash"], "files": files}


def plot_dir(directory: str | Path, formats: list[str] | None = None) -> list[str]:
    """Re-render the figures of a results directory."""
    directory = Path(directory)
    result = results.load(directory)
    if result.is_shard:
        raise results.ResultsError(f"{directory} holds shard {result.meta['shard']['index']}/"
                                   f"{result.meta['shard']['count']}: run 'phasediag merge' first")
    return draw(result, directory, formats)


def merge_dirs(directories: list[str | Path], out: str | Path, plot: bool = True) -> dict:
    """Join shard directories into one results directory (bit-identical to a single run)."""
    out = Path(out)
    if plot:  # drawing loads the joined result: refuse before writing anything if it cannot fit
        need = sum((Path(d) / results.RESULTS_FILE).stat().st_size for d in directories
                   if (Path(d) / results.RESULTS_FILE).is_file())
        have = _available_memory()
        if need > 0.8 * have:
            raise ConfigError(f"merge: drawing the maps needs the joined result in memory ({need / 1e9:.3g} GB), "
                              f"more than the {have / 1e9:.3g} GB available; use --no-plot (the "
                              "merge itself holds one metric at a time)")
    meta = results.merge_files([Path(d) for d in directories], out)  # streamed: one array at a time
    files = [str(out / results.RESULTS_FILE)]
    results.save_meta(results.Result(coords={}, arrays={}, meta=meta), out)  # complete from here on
    from phasediag.engine.metrics import LEGENDS

    merged = results.load(out, only=None if plot else set(LEGENDS))  # the summary counts the categories
    figures = draw(merged, out) if plot else []
    merged.meta["figures"] = [Path(f).name for f in figures]
    files.append(str(results.save_meta(merged, out)))
    return summary(merged, out, files + figures)


def export_csv(directory: str | Path, out: str | Path | None = None) -> list[str]:
    """Tidy tables: one row per grid point (axis values, then every metric; categorical codes as names),
    and with trajectories a second table with one row per (point, time)."""
    from phasediag.engine.metrics import LEGENDS

    directory = Path(directory)
    result = results.load(directory)
    if result.is_shard:
        raise results.ResultsError(f"{directory} holds a shard: run 'phasediag merge' first")
    base = Path(out) if out is not None else directory / f"{result.meta['name']}.csv"
    shape = tuple(result.meta["shape"])
    grids = np.meshgrid(*(result.coords[a] for a in result.axes), indexing="ij")
    point_columns = {a: g.reshape(-1) for a, g in zip(result.axes, grids)}
    metrics = {k: v for k, v in result.arrays.items() if not k.startswith("traj_")}
    for name, values in metrics.items():
        flat = values.reshape(-1)
        point_columns[name] = np.asarray(LEGENDS[name])[flat] if name in LEGENDS else flat
    written = [_write_csv(base, point_columns, int(np.prod(shape)))]
    traj = {k: v for k, v in result.arrays.items() if k.startswith("traj_")}
    if traj:
        times = result.coords["time"]
        rows = int(np.prod(shape)) * len(times)
        columns = {a: np.repeat(g.reshape(-1), len(times)) for a, g in zip(result.axes, grids)}
        columns["time"] = np.tile(times, int(np.prod(shape)))
        columns.update({k[len("traj_"):]: v.reshape(-1) for k, v in traj.items()})
        written.append(_write_csv(base.with_name(base.stem + "_trajectories.csv"), columns, rows))
    return written


def _write_csv(path: Path, columns: dict[str, np.ndarray], rows: int) -> str:
    names = list(columns)
    with atomic_write(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for i in range(rows):
            writer.writerow([_cell(columns[n][i]) for n in names])
    return str(path)


def _cell(value) -> str:
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    if isinstance(value, (np.bool_, bool)):
        return "true" if value else "false"
    return str(value.item() if isinstance(value, np.generic) else value)


__all__ = ["ConfigError", "export_csv", "merge_dirs", "parse_shard", "plot_dir", "run_config"]
