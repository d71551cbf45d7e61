"""The one lifecycle of every job: read, resolve, execute, write the run directory, draw, summarize.

Also the commands that work on a finished run directory of any kind: :func:`plot`, :func:`export_csv`,
:func:`merge`, :func:`load`. They raise ConfigError / ResultsError for bad input (the CLI's exit status 2).

Run directory (one layout for every kind; the default is ``outputs/<name>/``, a kind may add a sub-folder,
and a shard goes to ``.../shard-KKKK-of-NNNN/``): the data (``results.npz``, or the kind's own data file),
the figures ``<name>__<what>.<format>``, and ``meta.json``, written last. meta.json has the same schema for
every kind: ``schema``, ``kind``, ``name``, ``version``, ``config`` (resolved), ``config_hash``, ``created``,
``timing``, ``shard``, ``coords``, ``dims``, ``files`` (every file this run wrote) and ``figures``, then the
kind's own fields. While a run that can resume is in progress, ``.partial-<config_hash>/`` holds its
finished work.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import phasediag
from phasediag.config.reader import FORMATS, ConfigError, config_hash, read_config
from phasediag.errors import BadInput, FieldError
from phasediag.engine.sweep import CHECKPOINT_EVERY, DEFAULT_CHUNK, Shard
from phasediag.jobs import EXPERIMENTS, kind_module, kind_of_config, kind_of_meta
from phasediag.plots.base import figure_formats, render
from phasediag.results import store
from phasediag.results.atomic import atomic_write
from phasediag.results.store import Result, ResultsError

__all__ = ["Options", "Summary", "OptionError", "DEFAULT_ROOT", "SCHEMA", "parse_shard", "default_out", "run",
           "load", "plot", "export_csv", "merge"]

DEFAULT_ROOT = Path("outputs")
SCHEMA = 1
class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: `out` meaning "the default output directory" (None means: compute in memory, write nothing)
DEFAULT = _Default()


class OptionError(FieldError):
    """A run option (`field`, e.g. "shard") that the job cannot honour."""


@dataclass
class Options:
    """How to run a job (not what to compute: that is the config). Defaults are the CLI's."""

    workers: int = 1
    shard: Shard | None = None
    resume: bool = False
    plot: bool = True
    chunk_size: int = DEFAULT_CHUNK
    checkpoint_every: float = CHECKPOINT_EVERY
    settings: Any = None  # a kind's own settings (validation: phasediag.studies.validation.Settings)
    progress_total: Callable[[int], None] | None = None
    progress: Callable[[int], None] | None = None

    def given(self) -> set[str]:
        """The options set away from their defaults that only some kinds honour."""
        return {name for name, given in (("shard", self.shard is not None), ("resume", self.resume),
                                         ("chunk_size", self.chunk_size != DEFAULT_CHUNK),
                                         ("checkpoint_every", self.checkpoint_every != CHECKPOINT_EVERY))
                if given}


@dataclass
class Summary:
    """What a script wants to know after a job: where, what, how long; `details` are the kind's own fields."""

    kind: str
    name: str
    out: str | None
    status: str
    config_hash: str
    timing: dict
    files: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    text: str = ""

    def to_dict(self) -> dict:
        """The JSON object `--json` prints."""
        return {"kind": self.kind, "name": self.name, "out": self.out, "status": self.status,
                "config_hash": self.config_hash, "timing": self.timing, "files": self.files, **self.details}


def parse_shard(text: str | None) -> Shard | None:
    """'K/N' with 1 <= K <= N -> Shard (None stays None); ValueError otherwise."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"{text!r}: expected K/N, e.g. 3/10")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= k <= n:
        raise ValueError(f"{text!r}: need 1 <= K <= N")
    return Shard(k, n)


def default_out(name: str, suffix: str = "", shard: Shard | None = None) -> Path:
    """outputs/<name>[/<suffix>][/shard-KKKK-of-NNNN]: the one default for every kind."""
    base = DEFAULT_ROOT / name / suffix if suffix else DEFAULT_ROOT / name
    return base / f"shard-{shard.index:04d}-of-{shard.count:04d}" if shard else base


# ---------------------------------------------------------------- run

def resolve(source: str | Path | dict, *, validate: bool = False, experiment: bool = False,
            options: Options | None = None):
    """Read and resolve a config: (kind, its module, the spec). `validate`: as a validation of the sweep;
    `experiment`: the config must name a study."""
    options = options or Options()
    root, label = read_config(source)
    found = kind_of_config(root)
    if experiment and found not in EXPERIMENTS:
        raise ConfigError(f"experiment: is required at the top level (one of {', '.join(EXPERIMENTS)}); "
                          f"sweeps of the closed form run with 'phasediag run'")
    if validate and found != "sweep":
        raise ConfigError(f"validate needs a finite-width sweep config; this one is a {found} config")
    kind = "validation" if validate else found
    module = kind_module(kind)
    for name in sorted(options.given() - set(getattr(module, "SUPPORTS", ()))):
        raise OptionError(name, f"not available for {kind} runs")
    return kind, module, module.read(root, label, options)


def run(source: str | Path | dict, *, out: str | Path | None = DEFAULT, options: Options | None = None,
        validate: bool = False, experiment: bool = False) -> tuple[Result, Summary]:
    """Run the job a config describes and write its run directory (`out`: a path, DEFAULT for
    outputs/<name>/..., None to compute in memory and write nothing). Returns the result and its summary."""
    started = time.perf_counter()
    options = options or Options()
    kind, module, spec = resolve(source, validate=validate, experiment=experiment, options=options)
    digest = config_hash(spec.resolved)
    if out is DEFAULT:
        out = default_out(spec.name, getattr(module, "OUT_SUFFIX", ""), options.shard)
    out = None if out is None else Path(out)
    if out is not None and options.resume and _complete_and_current(out, kind, digest, options.shard,
                                                                     options.plot):
        result = load(out)
        summary = _summary(module, result, out, [str(out / f) for f in result.meta.get("files", [])])
        summary.status = "up to date"
        return result, summary
    if options.progress_total:
        options.progress_total(module.units(spec, options))
    partial = None if out is None else out / f".partial-{digest}"
    if partial is not None and not options.resume and partial.exists():
        shutil.rmtree(partial)
    result = module.execute(spec, options, partial)
    result.meta = _common_meta(result.meta, kind, spec, digest, source, options.shard)
    if out is None:
        result.meta["timing"]["total_s"] = round(time.perf_counter() - started, 6)
        return result, _summary(module, result, None, [])
    files = write(module, result, out, plot=options.plot, started=started, partial=partial)
    return result, _summary(module, result, out, files)


def write(module, result: Result, out: Path, *, plot: bool, started: float, partial: Path | None = None
          ) -> list[str]:
    """Write a run directory: the data, meta.json (the data are complete from here on; figures still to come
    are recorded as pending, so that --resume draws them if the run is stopped now), the figures, then meta.json
    again with every file listed. An earlier run's figures that this one did not redraw are removed."""
    previous = _previous_figures(out)
    saved = time.perf_counter()
    data = getattr(module, "write_data", _write_npz)(result, out)
    result.meta["timing"]["save_s"] = round(time.perf_counter() - saved, 6)
    drawing = plot and not result.is_shard
    result.meta["files"] = [p.name for p in data] + [store.META_FILE]
    result.meta["figures"] = []
    result.meta["figures_pending"] = drawing
    store.save_meta(result, out)
    if partial is not None and partial.exists():  # the data are saved: the checkpoints are not needed
        shutil.rmtree(partial)
    figures = draw(module, result, out) if drawing else []
    result.meta.pop("figures_pending")
    result.meta["figures"] = [p.name for p in figures]
    result.meta["files"] = [p.name for p in data + figures] + [store.META_FILE]
    result.meta["timing"]["total_s"] = round(time.perf_counter() - started, 6)
    store.save_meta(result, out)
    _remove_stale(out, previous, keep=result.meta["files"])
    return [str(p) for p in data] + [str(out / store.META_FILE)] + [str(p) for p in figures]


def _remove_stale(out: Path, previous: set[str], keep: list[str]) -> None:
    """Remove the figures an earlier run recorded that this one did not write (never a file it did write)."""
    for stale in previous - set(keep):
        path = out / stale
        if path.is_file() and not path.is_symlink():
            path.unlink()


def draw(module, result: Result, out: Path, formats: Sequence[str] | None = None, *,
         timing: str = "plot_s") -> list[Path]:
    started = time.perf_counter()
    try:
        chosen = figure_formats(result.meta, formats)
    except ValueError as exc:
        raise ConfigError(f"formats: {exc}") from None
    paths = render(module.figures(result), out, chosen)
    result.meta["timing"][timing] = round(time.perf_counter() - started, 6)
    return paths


def _write_npz(result: Result, out: Path) -> list[Path]:
    path = Path(out) / store.RESULTS_FILE
    store.write_npz(path, {**result.coords, **result.arrays})
    return [path]


def _common_meta(meta: dict, kind: str, spec, digest: str, source, shard: Shard | None) -> dict:
    """The fields every meta.json has, in one order, then the kind's own."""
    common = {
        "schema": SCHEMA, "kind": kind, "name": spec.name, "description": getattr(spec, "description", ""),
        "version": phasediag.__version__, "python": _python(), "numpy": np.__version__,
        "source": None if isinstance(source, dict) else str(source), "config": spec.resolved,
        "config_hash": digest, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "shard": None if shard is None else {"index": shard.index, "count": shard.count},
        "timing": {}, "coords": [], "dims": {},
    }
    merged = {**common, **meta}
    merged["kind"], merged["config_hash"] = kind, digest
    return merged


def _python() -> str:
    import platform

    return platform.python_version()


def _summary(module, result: Result, out: Path | None, files: list[str]) -> Summary:
    details = module.summarize(result)
    summary = Summary(result.kind, result.name, None if out is None else str(out), "done",
                      result.meta["config_hash"], result.meta["timing"], files, details)
    summary.text = module.text(summary.to_dict())
    return summary


def _complete_and_current(out: Path, kind: str, digest: str, shard: Shard | None, plot: bool) -> bool:
    try:
        meta = json.loads((out / store.META_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or (plot and meta.get("figures_pending")):
        return False
    if not isinstance(meta, dict) or not all((out / f).is_file() for f in meta.get("files", [store.RESULTS_FILE])):
        return False
    want = None if shard is None else {"index": shard.index, "count": shard.count}
    got = meta.get("shard")
    got = None if not isinstance(got, dict) else {"index": got.get("index"), "count": got.get("count")}
    return kind_of_meta(meta, str(out)) == kind and meta.get("config_hash") == digest and got == want


def _previous_figures(out: Path) -> set[str]:
    """The figure files an earlier run recorded in `out`'s meta.json (plain names inside `out` only)."""
    try:
        names = json.loads((out / store.META_FILE).read_text()).get("figures") or []
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and n == Path(n).name and not n.startswith(".")
            and Path(n).suffix.lstrip(".") in FORMATS}  # figure files only: never data or meta


# ---------------------------------------------------------------- finished run directories

@contextlib.contextmanager
def _reading(directory: Path):
    """A run directory whose files do not hold what its kind writes (edited, truncated, from another tool)
    is bad input naming the directory, not an internal error."""
    try:
        yield
    except BadInput:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ResultsError(f"{directory}: not a usable run directory ({type(exc).__name__}: {detail})") from None


def load(directory: str | Path, only: set[str] | None = None) -> Result:
    """The result in a run directory of any kind (`only`: just these data variables, and the coordinates)."""
    directory = Path(directory)
    with _reading(directory):
        meta = store.load_meta(directory)
        kind = kind_of_meta(meta, str(directory))
        module = kind_module(kind)
        loader = getattr(module, "load_data", None)
        result = loader(directory, meta) if loader else store.load(directory, only=only, meta=meta)
        result.meta.setdefault("kind", kind)
        result.check()
    return result


def _module_of(result: Result):
    return kind_module(result.kind)


def plot(directory: str | Path, formats: Sequence[str] | None = None) -> list[Path]:
    """Re-draw the figures of a run directory (any kind) from its data; meta.json records them."""
    directory = Path(directory)
    result = load(directory)
    if result.is_shard:
        raise ResultsError(f"{directory} holds shard {result.meta['shard']['index']}/"
                           f"{result.meta['shard']['count']}: run 'phasediag merge' first")
    result.meta.setdefault("timing", {})
    with _reading(directory):
        paths = draw(_module_of(result), result, directory, formats, timing="replot_s")
    old = [n for n in result.meta.get("figures") or [] if (directory / n).is_file()]
    figures = list(dict.fromkeys(old + [p.name for p in paths]))
    data = [n for n in result.meta.get("files") or [] if n != store.META_FILE and n not in
            set(result.meta.get("figures") or [])]
    result.meta.pop("figures_pending", None)
    result.meta["figures"] = figures
    result.meta["files"] = data + figures + [store.META_FILE]
    store.save_meta(result, directory)
    return paths


def merge(directories: Sequence[str | Path], out: str | Path, plot: bool = True) -> Summary:
    """Join the shard directories of one job into one run directory (identical to an unsharded run)."""
    started = time.perf_counter()
    directories = [Path(d) for d in directories]
    out = Path(out)
    if os.path.realpath(out) in {os.path.realpath(d) for d in directories}:
        raise ConfigError("--out: must not be one of the shard directories")
    metas = [store.load_meta(d) for d in directories]
    kinds = {kind_of_meta(m, str(d)) for m, d in zip(metas, directories)}
    if len(kinds) > 1:
        raise ConfigError(f"merge: the directories hold different kinds of runs ({', '.join(sorted(kinds))})")
    (kind,) = kinds
    module = kind_module(kind)
    if not hasattr(module, "merge"):
        raise ConfigError(f"merge: {kind} runs are not sharded; there is nothing to merge")
    previous = _previous_figures(out)
    with _reading(directories[0].parent if len(directories) > 1 else directories[0]):
        result = module.merge(directories, out, plot)
    result.meta["kind"] = kind
    result.meta.setdefault("timing", {})
    store.save_meta(result, out)  # complete from here on
    figures = draw(module, result, out) if plot else []
    data = [n for n in result.meta.get("files", [store.RESULTS_FILE]) if n != store.META_FILE
            and n not in (result.meta.get("figures") or [])]
    result.meta["figures"] = [p.name for p in figures]
    result.meta["files"] = data + [p.name for p in figures] + [store.META_FILE]
    result.meta["timing"]["merge_s"] = round(time.perf_counter() - started, 6)
    store.save_meta(result, out)
    _remove_stale(out, previous, keep=result.meta["files"])
    files = [str(out / n) for n in data] + [str(out / store.META_FILE)] + [str(p) for p in figures]
    return _summary(module, result, out, files)


def export_csv(directory: str | Path, out: str | Path | None = None) -> list[str]:
    """Tidy CSV tables of a run directory (any kind): one table per set of dimensions, one row per point of
    them (the coordinates, then every data variable on them; categorical codes as their names)."""
    directory = Path(directory)
    result = load(directory)
    if result.is_shard:
        raise ResultsError(f"{directory} holds a shard: run 'phasediag merge' first")
    base = Path(out) if out is not None else directory / f"{result.name}.csv"
    tables: dict[tuple[str, ...], list[str]] = {}
    for name in result.arrays:
        tables.setdefault(result.dims(name), []).append(name)
    names = getattr(_module_of(result), "TABLES", {})
    written = []
    main = next(iter(tables), ())
    for dims, variables in tables.items():
        extra = [d for d in dims if d not in main]
        suffix = "" if dims == main else names.get("_".join(extra) or "by_" + "_".join(dims),
                                                     "_".join(extra) or "by_" + "_".join(dims))
        path = base if not suffix else base.with_name(f"{base.stem}_{suffix}{base.suffix or '.csv'}")
        with _reading(directory):
            written.append(_write_table(path, result, dims, variables))
    return written


def _write_table(path: Path, result: Result, dims: tuple[str, ...], variables: list[str]) -> str:
    coords = [result.coords[d] if d in result.coords else np.arange(result.arrays[variables[0]].shape[i])
              for i, d in enumerate(dims)]
    grids = np.meshgrid(*coords, indexing="ij") if coords else []
    columns = {d: g.reshape(-1) for d, g in zip(dims, grids)}
    legends = result.meta.get("legends", {})
    for name in variables:
        flat = np.asarray(result.arrays[name]).reshape(-1)
        if name in legends:  # a list of labels by code, or {"code": label} (codes may be negative)
            legend = legends[name]
            names = legend if isinstance(legend, dict) else {str(c): n for c, n in enumerate(legend)}
            flat = np.array([names.get(str(int(code)), "invalid") for code in flat])
        columns[name] = flat
    rows = len(next(iter(columns.values()))) if columns else 0
    with atomic_write(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(list(columns))
        for i in range(rows):
            writer.writerow([_cell(column[i]) for column in columns.values()])
    return str(path)


def _cell(value) -> str:
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    if isinstance(value, (np.bool_, bool)):
        return "true" if value else "false"
    return str(value.item() if isinstance(value, np.generic) else value)
