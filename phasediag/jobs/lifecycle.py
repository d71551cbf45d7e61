"""The one lifecycle of every job: read, resolve, execute, write the run directory, draw, summarize.

Also the commands that work on a finished run directory of any kind: :func:`plot`, :func:`export_csv`,
:func:`merge`, :func:`load`. They raise ConfigError / ResultsError for bad input (the CLI's exit status 2).

Run directory (one layout for every kind; the default is ``outputs/<name>/``, a kind may add a sub-folder,
and a shard goes to ``.../shard-KKKK-of-NNNN/``): the data (``results.npz``, or the kind's own data file),
the figures ``<name>__<what>.<format>``, and ``meta.json``, written last. meta.json has the same schema for
every kind: ``schema``, ``kind``, ``name``, ``version``, ``config`` (resolved), ``config_hash``, ``created``,
``timing``, ``shard``, ``coords``, ``dims``, ``files`` (every file this run wrote), ``manifest`` (their sizes
and SHA-256) and ``figures``, then the kind's own fields. While a run that can resume is in progress,
``.partial-<config_hash>/`` holds its finished work. Every writer here holds the directory through
:func:`phasediag.results.rundir.writer` (one at a time) and commits through its transactions; every reader
verifies the manifest (:func:`phasediag.results.store.load_meta`, :func:`~phasediag.results.store.open_data`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import stat
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import phasediag
from phasediag.config.reader import ConfigError, config_hash, read_config
from phasediag.config.rules import MAX_WORKERS
from phasediag.errors import BadInput, BusyError, FieldError, ManifestError
from phasediag.engine.sweep import CHECKPOINT_EVERY, DEFAULT_CHUNK, Shard
from phasediag.jobs import EXPERIMENTS, kind_module, kind_of_config, kind_of_meta
from phasediag.plots.base import FigureOptions, figure_formats, render
from phasediag.results import rundir, store
from phasediag.results.atomic import atomic_path
from phasediag.results.store import Result, ResultsError

__all__ = ["Options", "Summary", "OptionError", "DEFAULT_ROOT", "SCHEMA", "parse_shard", "default_out", "run",
           "load", "plot", "export_csv", "merge"]

DEFAULT_ROOT = Path("outputs")
SCHEMA = store.SCHEMA
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
    shared: bool = False  # with shard: write into the one result all shards share in `out` (no merge)
    plot: bool = True
    chunk_size: int = DEFAULT_CHUNK
    checkpoint_every: float = CHECKPOINT_EVERY
    settings: Any = None  # a kind's own settings (validation: phasediag.studies.validation.Settings)
    progress_total: Callable[[int], None] | None = None
    progress: Callable[[int], None] | None = None
    warn: Callable[[str], None] | None = None  # one line about something recovered from (default: a warning)
    destination: Path | None = None  # where the results go (None: memory); set by `run`, for the room checks

    def given(self) -> set[str]:
        """The options set away from their defaults that only some kinds honour."""
        return {name for name, given in (("shard", self.shard is not None), ("resume", self.resume),
                                         ("shared", self.shared),
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
    match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text)
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
    outputs/<name>/..., None to compute in memory and write nothing). Returns the result and its summary.

    The run holds the directory's writer lock from start to end (a second writer fails at once); the
    previous result stays complete and readable until the new one is committed."""
    started = time.perf_counter()
    options = options or Options()
    if not (isinstance(options.workers, int) and 1 <= options.workers <= MAX_WORKERS):
        raise OptionError("workers", f"must be an integer in [1, {MAX_WORKERS}], got {options.workers!r:.40}")
    # where the results will go, for a job's check of the room it needs (the default: under outputs/)
    options.destination = None if out is None else DEFAULT_ROOT if out is DEFAULT else Path(out)
    kind, module, spec = resolve(source, validate=validate, experiment=experiment, options=options)
    digest = config_hash(spec.resolved)
    if out is DEFAULT:
        out = default_out(spec.name, getattr(module, "OUT_SUFFIX", ""), None if options.shared else options.shard)
    if options.shared:
        return _run_shared_shard(source, module, spec, options, out, kind, digest, started)
    if out is None:
        result = _execute(module, spec, options, None, kind, digest, source)
        result.meta["timing"]["total_s"] = round(time.perf_counter() - started, 6)
        return result, _summary(module, result, None, [])
    out = Path(out)
    with _final_names(out), rundir.writer(out) as directory:
        _check_targets(out, module, spec, options.shard, directory.owned)  # (before anything is removed)
        partial = directory.partial(digest)  # (leftovers of killed runs go: temporaries, others' checkpoints)
        result = _current(out, kind, digest, options.shard) if options.resume else None
        if result is not None:
            directory.remove_partial(partial)
            if options.plot and result.meta.get("figures_pending"):
                _draw_commit(module, result, directory, started=started, workers=options.workers)
                return result, _summary(module, result, out, _paths(out, result.meta))
            return result, _up_to_date(module, result, out)
        if not options.resume:
            directory.remove_partial(partial)
        ours = not partial.exists()  # (a checkpoint folder this run starts: a refused write removes it)
        result = _execute(module, spec, options, partial, kind, digest, source)
        try:
            write(module, result, directory, plot=options.plot, started=started, partial=partial,
                  workers=options.workers)
        except BadInput:  # (refused before anything was written: leave the directory as it was)
            if ours:
                directory.remove_partial(partial)
            raise
    return result, _summary(module, result, out, _paths(out, result.meta))


def _check_targets(out: Path, module, spec, shard: Shard | None, owned: set[str] | None = None) -> None:
    """The files a run commits, refused before the computation if something else has their names: a file
    that is not a regular file, or one the tool did not write (`owned`: the tool's files of `out`, see
    rundir.tool_files). The figures, whose names depend on the result, are checked before it is written."""
    for name in (store.META_FILE, store.RESULTS_FILE):
        rundir.check_regular_target(out / name)
    rundir.check_owned(out, [store.META_FILE, *_data_names(module, spec, shard)], owned)


def _data_names(module, spec=None, shard: Shard | None = None) -> list[str]:
    """The data files a job of `module` writes, as far as they are known before it runs (spec None: a merge):
    the kind's `data_names(spec, shard)`, else results.npz unless the kind writes its own data (then its
    commit refuses them: rundir.Transaction.commit)."""
    if hasattr(module, "data_names"):
        return list(module.data_names(spec, shard))
    return [] if hasattr(module, "write_data") else [store.RESULTS_FILE]


def _figure_names(module, result: Result, formats: Sequence[str] | None = None) -> list[str]:
    """The files drawing `result`'s figures writes (in `formats`, default the config's)."""
    try:
        chosen = figure_formats(result.meta, formats)
    except ValueError as exc:
        raise ConfigError(f"formats: {exc}") from None
    return [f"{stem}.{fmt}" for stem, _ in module.figures(result) for fmt in chosen]


def _up_to_date(module, result: Result, out: Path) -> Summary:
    """The summary of a run that found its result complete in `out` and did nothing."""
    summary = _summary(module, result, out, _paths(out, result.meta))
    summary.status = "up to date"
    return summary


def _run_shared_shard(source, module, spec, options: Options, out: Path | None, kind: str, digest: str,
                      started: float) -> tuple[Result | None, Summary]:
    """`run --shard K/N --shared`: evaluate shard K into the one result that all N shards write in `out` (a
    folder they all see), and commit it if this shard is the last to finish: the commit is the unsharded run
    resumed with every chunk recorded (`run` without --shard, with --resume, does the same and computes what
    shards left undone)."""
    if options.shard is None:
        raise OptionError("shared", "needs --shard K/N: the shards of one grid write into one shared result")
    if out is None:
        raise OptionError("shared", "needs a run directory (out) that every shard sees")
    out = Path(out)
    whole = dataclasses.replace(options, shard=None, shared=False, resume=True)
    with _final_names(out), rundir.shard_writer(out):
        current = _current(out, kind, digest, None)
        if current is None:
            _check_targets(out, module, spec, None)  # (the result all shards commit)
            done, total = module.execute_shared(spec, options, out / f"{rundir.PARTIAL_PREFIX}{digest}")
    if current is not None:
        return current, _up_to_date(module, current, out)
    if done == total:  # (every shard's chunks recorded: the last shard to finish commits)
        with contextlib.suppress(BusyError):  # another shard that saw them all is committing
            return run(source, out=out, options=whole)
    shard = options.shard
    summary = Summary(kind, spec.name, str(out), "shard done", digest,
                      {"total_s": round(time.perf_counter() - started, 6)},
                      details={"shard": {"index": shard.index, "count": shard.count},
                               "points_done": done, "grid_points": total})
    summary.text = (f"{spec.name}: shard {shard.index}/{shard.count} written into {out}; {done:,} of {total:,} "
                    f"grid points done" + ("" if done == total else "; the last shard to finish commits the "
                                           "result (or run the config without --shard, with --resume)"))
    return None, summary


def _execute(module, spec, options: Options, partial: Path | None, kind: str, digest: str, source) -> Result:
    if options.progress_total:
        options.progress_total(module.units(spec, options))
    try:
        result = module.execute(spec, options, partial)
    except (FloatingPointError, OverflowError) as exc:  # values beyond what the computation can represent
        raise ConfigError(f"{spec.name}: a value of the config is outside the range the computation supports "
                          f"({' '.join(str(exc).split())[:120]})") from None
    result.meta = _common_meta(result.meta, kind, spec, digest, source, options.shard)
    return result


def _paths(out: Path, meta: dict) -> list[str]:
    """The committed files of a run directory as paths: the data, meta.json, then the figures."""
    figures = meta.get("figures") or []
    files = [n for n in meta.get("files", []) if n != store.META_FILE]
    return ([str(out / n) for n in files if n not in figures] + [str(out / store.META_FILE)]
            + [str(out / n) for n in files if n in figures])


def write(module, result: Result, directory: rundir.RunDirectory, *, plot: bool, started: float,
          partial: Path | None = None, workers: int = 1) -> list[str]:
    """Commit a result to its run directory: first the data with meta.json (its figures recorded as pending,
    so that --resume draws them if the run is stopped while drawing), then the figures with meta.json
    again. The previous result's figures and tables are dropped with the first commit; checkpoints too."""
    drawing = plot and not result.is_shard
    directory.check_owned([store.META_FILE, *(_figure_names(module, result) if drawing else [])])
    txn = directory.begin()
    saved = time.perf_counter()
    data = getattr(module, "write_data", _write_npz)(result, txn.dir)
    result.meta["timing"]["save_s"] = round(time.perf_counter() - saved, 6)
    result.meta["files"] = [p.name for p in data]
    result.meta["figures"] = []
    if drawing:
        result.meta["figures_pending"] = True
    result.meta["timing"]["total_s"] = round(time.perf_counter() - started, 6)
    txn.commit(result.meta)
    if partial is not None:  # the data are committed: the checkpoints are not needed
        directory.remove_partial(partial)
    if drawing:
        _draw_commit(module, result, directory, started=started, workers=workers)
    return result.meta["files"]


def _draw_commit(module, result: Result, directory: rundir.RunDirectory, formats: Sequence[str] | None = None,
                 *, timing: str = "plot_s", started: float | None = None, keep_figures: bool = False,
                 workers: int = 1) -> list[str]:
    """Draw the figures of a committed result and commit them (with meta.json) beside its data; returns the
    names drawn. `keep_figures`: keep the earlier figures this drawing does not replace (`plot --formats`)."""
    directory.check_owned(_figure_names(module, result, formats))  # (before drawing: never over a user's file)
    txn = directory.begin()
    paths = draw(module, result, txn.dir, formats, timing=timing, workers=workers)
    new = [p.name for p in paths]
    manifest = _entries(directory.path, result.meta)
    old_figures = [n for n in result.meta.get("figures") or [] if n in manifest and n not in new]
    kept = [n for n in old_figures if keep_figures and _unchanged(directory.path / n, manifest[n])]
    figures = kept + new
    keep = {n: e for n, e in manifest.items() if n not in new and (n not in old_figures or n in kept)}
    result.meta.pop("figures_pending", None)
    result.meta["figures"] = figures
    result.meta["files"] = [n for n in result.meta.get("files", []) if n in keep and n not in figures] + figures
    if started is not None:
        result.meta["timing"]["total_s"] = round(time.perf_counter() - started, 6)
    txn.commit(result.meta, keep=keep)
    return new


def _entries(directory: Path, meta: dict) -> dict[str, dict]:
    """The manifest of a committed result; for a directory written before manifests, the entries of the
    files its meta.json lists, computed now (its next commit records them)."""
    if meta.get("manifest"):
        return dict(meta["manifest"])
    listed = meta.get("files") or [store.RESULTS_FILE]
    return {n: rundir.file_entry(directory / n) for n in listed
            if n != store.META_FILE and _unchanged(directory / n, None)}


def _unchanged(path: Path, entry: dict | None) -> bool:
    """Whether `path` is a regular file (of `entry`'s size, if given: a figure kept by a re-plot)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and (entry is None or info.st_size == entry.get("size"))


@contextlib.contextmanager
def _final_names(out: Path):
    """An OSError about a file being staged names the file it was to become (out/results.npz), not the
    staging folder's temporary."""
    try:
        yield
    except OSError as exc:
        name = rundir.final_name(exc.filename, out) if exc.filename else out  # (write() errors name nothing)
        if name is None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(name)) from None


def draw(module, result: Result, out: Path, formats: Sequence[str] | None = None, *,
         timing: str = "plot_s", workers: int = 1) -> list[Path]:
    started = time.perf_counter()
    try:
        chosen = figure_formats(result.meta, formats)
    except ValueError as exc:
        raise ConfigError(f"formats: {exc}") from None
    stems = module.figures(result)
    for stem, _ in stems:  # figure names come from the stored config: never a path
        rundir.plain_name(f"{stem}.png", "figure name")
    paths = render(stems, out, chosen, options=FigureOptions.of(result.meta), workers=workers)
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
    merged["kind"], merged["config_hash"], merged["schema"] = kind, digest, SCHEMA
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


def _current(out: Path, kind: str, digest: str, shard: Shard | None) -> Result | None:
    """The result in `out` if it is a complete, verified result of this config and shard, else None."""
    try:
        result = _load_once(out, None, mmap=True)  # verified: the manifest, and what the data hold
        meta = result.meta
        found = kind_of_meta(meta, str(out))
    except (BadInput, OSError):
        return None
    want = None if shard is None else {"index": shard.index, "count": shard.count}
    got = meta.get("shard")
    got = None if not isinstance(got, dict) else {"index": got.get("index"), "count": got.get("count")}
    return result if found == kind and meta.get("config_hash") == digest and got == want else None


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


def load(directory: str | Path, only: set[str] | None = None, mmap: bool = False) -> Result:
    """The result in a run directory of any kind (`only`: just these data variables, and the coordinates),
    verified against its manifest. A directory being committed to by another process right now is read once
    the commit is complete (a commit that a killed process left is finished first, if it can be)."""
    directory = Path(directory)
    deadline = time.monotonic() + 10.0
    while True:
        stamp = _meta_stamp(directory)
        try:
            return _load_once(directory, only, mmap)
        except ManifestError:
            settling = rundir.commit_pending(directory) or _meta_stamp(directory) != stamp
            if not settling or time.monotonic() > deadline:
                raise
            if not rundir.recover(directory):
                time.sleep(0.05)


def _meta_stamp(directory: Path):
    try:
        info = os.stat(directory / store.META_FILE)
        return info.st_ino, info.st_mtime_ns, info.st_size
    except OSError:
        return None


def _load_once(directory: Path, only: set[str] | None, mmap: bool = False) -> Result:
    with _reading(directory):
        meta = store.load_meta(directory)
        kind = kind_of_meta(meta, str(directory))
        module = kind_module(kind)
        if isinstance(meta.get("schema"), int) and meta["schema"] >= 2:
            store.check_fields(directory, meta, {**store.COMMON_FIELDS, **getattr(module, "META_FIELDS", {})})
            if isinstance(meta.get("config"), dict) and meta.get("config_hash") != config_hash(meta["config"]):
                raise ResultsError(f"{directory / store.META_FILE}: its config_hash is not the hash of its config "
                                   "(the config was edited after the run)")
        loader = getattr(module, "load_data", None)
        result = loader(directory, meta) if loader else store.load(directory, only=only, meta=meta, mmap=mmap)
        result.meta.setdefault("kind", kind)
        try:
            result.check(complete=only is None)
            if hasattr(module, "check_result"):
                module.check_result(result)
        except ResultsError as exc:  # name the file that holds it
            data = [n for n in meta.get("files") or [] if n != store.META_FILE and n not in (meta.get("figures") or [])]
            named = next((n for n in data if str(exc).startswith(f"{n}: ")), None)  # (the message names it)
            where = directory if named else directory / (data[0] if data else store.RESULTS_FILE)
            raise ResultsError(f"{where}{'/' if named else ': '}{exc}") from None
    return result


def _module_of(result: Result):
    return kind_module(result.kind)


def _existing(directory: Path) -> Path:
    if not directory.is_dir():
        raise ResultsError(f"{directory}: no complete results here (not a directory)")
    return directory


def plot(directory: str | Path, formats: Sequence[str] | None = None,
         options: dict[str, Any] | None = None) -> list[Path]:
    """Re-draw the figures of a run directory (any kind) from its data; meta.json records them.

    `options`: figure settings in the resolved shape of a config's plot section (labels, title, size, style,
    dpi: :func:`phasediag.config.reader.figure_option_values`), checked (label names against the run's,
    :func:`plot_names`) before anything is written and merged over the stored config's (labels name by name)
    into meta.json's config.plot, so that meta.json says how its figures were drawn. With options, the
    figures are drawn in `formats` (default: the config's) and earlier figures in other formats are dropped
    (they would not match)."""
    from phasediag.config.reader import check_figure_names, figure_option_values

    directory = _existing(Path(directory))
    if options:
        unknown = sorted(set(options) - {"labels", "title", "size", "style", "dpi"})
        if unknown:
            raise OptionError(unknown[0], "not a figure setting; settings: labels, title, size, style, dpi")
        options = figure_option_values(**options)
    with _final_names(directory), rundir.writer(directory, create=False, field=None) as held:
        result = load(directory)
        if result.is_shard:
            raise ResultsError(f"{directory} holds shard {result.meta['shard']['index']}/"
                               f"{result.meta['shard']['count']}: run 'phasediag merge' first")
        module = _module_of(result)
        with _reading(directory):
            if options:
                check_figure_names(options, *plot_names(module, result.meta))
                result.meta["config"]["plot"] = merged_plot(result.meta["config"].get("plot") or {}, options)
        result.meta.setdefault("timing", {})
        with _reading(directory):
            drawn = _draw_commit(module, result, held, formats, timing="replot_s", keep_figures=not options)
    return [directory / n for n in drawn]


def plot_names(module, meta: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(label names, figure names) a run's plot.labels and plot.title mapping may name, from its meta.json:
    the kind's own (a study module's PLOT_LABELS and FIGURE_NAMES), else a sweep's (sweep, scaling, validation
    runs: the sweep variables and metrics of its resolved config; phasediag.config.sweep.plot_names_of)."""
    if hasattr(module, "PLOT_LABELS") and hasattr(module, "FIGURE_NAMES"):
        return tuple(module.PLOT_LABELS), tuple(module.FIGURE_NAMES)
    from phasediag.config.sweep import plot_names_of

    return plot_names_of(meta)


def merged_plot(plot: dict, options: dict[str, Any]) -> dict:
    """A config's plot section with figure `options` over it: labels merged name by name, the others
    replaced."""
    merged = dict(plot)
    for key, value in options.items():
        merged[key] = {**(merged.get("labels") or {}), **value} if key == "labels" else value
    return merged


def merge(directories: Sequence[str | Path], out: str | Path, plot: bool = True) -> Summary:
    """Join the shard directories of one job into one run directory (identical to an unsharded run)."""
    started = time.perf_counter()
    directories = [Path(d) for d in directories]
    out = Path(out)
    inputs = {os.path.realpath(d) for d in directories}
    if os.path.realpath(out) in inputs:
        raise OptionError("out", "must not be one of the shard directories")
    metas = [store.load_meta(d) for d in directories]
    kinds = {kind_of_meta(m, str(d)) for m, d in zip(metas, directories)}
    if len(kinds) > 1:
        raise ConfigError(f"merge: the directories hold different kinds of runs ({', '.join(sorted(kinds))})")
    (kind,) = kinds
    module = kind_module(kind)
    if not hasattr(module, "merge"):
        raise ConfigError(f"merge: {kind} runs are not sharded; there is nothing to merge")
    for d, m in zip(directories, metas):
        if m.get("shard") is None:
            raise ResultsError(f"{d}: not a shard (written without --shard K/N); merge joins shard directories")
    for d in directories:
        _load_once(d, None, mmap=True)  # each shard verified, one at a time, in bounded memory
    with _final_names(out), rundir.writer(out) as held:
        held.check_owned([store.META_FILE, *_data_names(module)])  # (before any I/O)
        held.clean_leftovers()
        txn = held.begin()
        with _reading(directories[0].parent if len(directories) > 1 else directories[0]):
            result = module.merge(directories, txn.dir, plot)
            if plot:  # (its figures, refused before the data are committed)
                held.check_owned(_figure_names(module, result))
        result.meta["kind"] = kind
        result.meta["schema"] = SCHEMA
        result.meta.setdefault("timing", {})
        result.meta["figures"] = []
        if plot:
            result.meta["figures_pending"] = True
        result.meta["timing"]["merge_s"] = round(time.perf_counter() - started, 6)
        txn.commit(result.meta)
        if plot:
            with _reading(out):
                _draw_commit(module, result, held)
            result.meta["timing"]["merge_s"] = round(time.perf_counter() - started, 6)
    return _summary(module, result, out, _paths(out, result.meta))


def export_csv(directory: str | Path, out: str | Path | None = None) -> list[str]:
    """Tidy CSV tables of a run directory (any kind): one table per set of dimensions, one row per point of
    them (the coordinates, then every data variable on them; categorical codes as their names).

    Tables written into the run directory itself (the default) are committed to its manifest, so that a
    later run that changes the results removes them; elsewhere they are written atomically."""
    directory = _existing(Path(directory))
    if out is not None and Path(out).exists() and Path(out).is_dir():
        raise OptionError("out", f"{out} is a directory; give the path of the CSV file to write")
    inside = out is None or os.path.realpath(Path(out).parent) == os.path.realpath(directory)
    if not inside and Path(os.path.realpath(Path(out).parent)).is_relative_to(os.path.realpath(directory)):
        raise OptionError("out", f"{out}: write tables into the run directory {directory} itself or outside it")
    if not inside and rundir.tool_files(Path(out).parent):  # (another run directory: its manifest, its lock)
        raise OptionError("out", f"{Path(out).parent} is a run directory of phasediag: export its own results "
                                 f"there with 'phasediag export {Path(out).parent} --csv', or choose another folder")
    if not inside:
        result = _exportable(directory)
        paths = _table_paths(result, Path(out))
        side = _side_paths(result, Path(out))
        inputs = {os.path.realpath(directory / n) for n in result.meta.get("files", [])}
        try:
            for path in [*paths.values(), *side.values()]:
                if os.path.realpath(path) in inputs:
                    raise OptionError("out", f"{path} is a file of the run directory {directory}")
                if path.suffix != ".csv":
                    raise OptionError("out", f"{path}: a table's name must end in .csv")
                rundir.check_regular_target(path)  # (all checked before any is written)
            # every table to a temporary first, all moved into place once all are written: together or none
            with contextlib.ExitStack() as stack:
                staged = {path: stack.enter_context(atomic_path(path)) for path in [*paths.values(), *side.values()]}
                for (dims, variables), path in paths.items():
                    _write_table(staged[path], result, dims, variables)
                for key, path in side.items():
                    store.write_columns(staged[path], result.tables[key])
                for path, tmp in staged.items():  # (an error here removes every temporary: nothing written)
                    _check_replaceable_table(path, tmp)
            return [str(path) for path in staged]
        except OSError as exc:  # the place the user chose cannot take a file: bad input, like a run directory's
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENAMETOOLONG,
                                 errno.ENOENT):
                raise
            raise OptionError("out", f"cannot write {exc.filename or out}: {exc.strerror}") from None
    with _final_names(directory), rundir.writer(directory, create=False, field=None) as held:
        result = _exportable(directory)
        name = f"{result.name}.csv" if out is None else Path(out).name
        paths = _table_paths(result, Path(name))
        taken = {n for n in result.meta.get("files", []) if n not in (result.meta.get("tables") or [])}
        side = _side_paths(result, Path(name))
        for path in [*paths.values(), *side.values()]:
            if rundir.plain_name(path.name, "table name") in taken or not path.name.endswith(".csv"):
                raise OptionError("out", f"{path.name}: not a table name this run directory can take "
                                         f"(it must end in .csv and must not be one of its files)"
                                         + ("; give the table's name with --out" if out is None else ""))
        rundir.check_owned(directory, [p.name for p in [*paths.values(), *side.values()]], held.owned,
                           hint="move it or choose another table name")
        txn = held.begin()
        for (dims, variables), path in paths.items():
            _write_table(txn.path(path.name), result, dims, variables)
        for key, path in side.items():
            store.write_columns(txn.path(path.name), result.tables[key])
        names = [p.name for p in [*paths.values(), *side.values()]]
        keep = {n: e for n, e in _entries(directory, result.meta).items() if n not in names}
        result.meta["tables"] = list(dict.fromkeys([*(result.meta.get("tables") or []), *names]))
        result.meta["files"] = [n for n in result.meta.get("files", []) if n in keep] + names
        txn.commit(result.meta, keep=keep)
    return [str(directory / n) for n in names]


def _check_replaceable_table(path: Path, staged: Path) -> None:
    """Outside a run directory there is no manifest to say whose a file is: an existing `path` is replaced only
    if it is a table of the same columns (its first line is the header of the table `staged` holds), i.e. an
    earlier export of this kind of result, never another file that happens to have the name."""
    try:
        with open(path, "rb") as fh:
            current = fh.readline(65536)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OptionError("out", f"cannot read {path}: {exc.strerror}") from None
    with open(staged, "rb") as fh:
        header = fh.readline(65536)
    if current != header:
        raise OptionError("out", f"{path} exists and is not a table of these columns (its first line is not "
                                 f"their header): phasediag replaces only its own tables; move it or choose "
                                 f"another name")


def _exportable(directory: Path) -> Result:
    result = load(directory)
    if result.is_shard:
        raise ResultsError(f"{directory} holds a shard: run 'phasediag merge' first")
    return result


def _table_paths(result: Result, base: Path) -> dict[tuple, Path]:
    """(dims, variables) -> the path of its table: `base` for the main table, `<stem>_<what>.csv` beside it."""
    tables: dict[tuple[str, ...], list[str]] = {}
    for name in result.arrays:
        tables.setdefault(result.dims(name), []).append(name)
    names = getattr(_module_of(result), "TABLES", {})
    main = next(iter(tables), ())
    paths = {}
    for dims, variables in tables.items():
        extra = [d for d in dims if d not in main]
        suffix = "" if dims == main else names.get("_".join(extra) or "by_" + "_".join(dims),
                                                     "_".join(extra) or "by_" + "_".join(dims))
        paths[(dims, tuple(variables))] = (base if not suffix else
                                           base.with_name(f"{base.stem}_{suffix}{base.suffix or '.csv'}"))
    return paths


def _side_paths(result: Result, base: Path) -> dict[str, Path]:
    """The result's tables beside the grid (result.tables, e.g. boundaries) -> `<stem>_<name>.csv`."""
    return {key: base.with_name(f"{base.stem}_{key}{base.suffix or '.csv'}") for key in result.tables}


def _write_table(path: Path, result: Result, dims: tuple[str, ...], variables) -> str:
    coords = [result.coords[d] if d in result.coords else np.arange(result.arrays[variables[0]].shape[i])
              for i, d in enumerate(dims)]
    grids = np.meshgrid(*coords, indexing="ij") if coords else []
    columns = {d: g.reshape(-1) for d, g in zip(dims, grids)}
    legends = result.meta.get("legends", {})
    for name in variables:
        flat = np.asarray(result.arrays[name]).reshape(-1)
        if name in legends:  # codes were checked against their legend when the result was loaded
            names = store.legend_names(legends[name])
            flat = np.array([names[str(int(code))] for code in flat])
        columns[name] = flat
    store.write_columns(path, columns)
    return str(path)

