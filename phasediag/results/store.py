"""Sweep results on disk: results.npz (named arrays) + meta.json, written atomically and deterministically.

results.npz holds each axis's 1-D coordinates under its own name ("seed" for the seed axis, "time" for a
trajectory time axis) and each metric array shaped meta["shape"] (axes in meta["axes"] order; trajectory
arrays "traj_<field>" have the time axis last). Zip entries carry a fixed timestamp, so the same results
give byte-identical files. A shard directory holds the flat slice [start, stop) of every array instead
(meta["shard"]), until `merge` joins the shards.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phasediag.config.reader import NAME_PATTERN
from phasediag.errors import ManifestError, ResultsError
from phasediag.results import npz
from phasediag.results.atomic import atomic_path, atomic_write
from phasediag.results.rundir import FILE_NAME, hash_open, json_default

RESULTS_FILE = "results.npz"
META_FILE = "meta.json"
FIGURE_SUFFIXES = ("png", "pdf", "svg", "eps", "ps")
SCHEMA = 2  # of meta.json; 2: it carries a manifest (the size and SHA-256 of every other file)




@dataclass
class Result:
    """One run's result, whatever its kind: coordinates, data variables and attributes (as an xarray Dataset).

    coords: coordinate name -> 1-D values; arrays: data variable name -> array, its dimensions named by
    :meth:`dims`; meta: everything else (JSON-ready: kind, name, resolved config, version, timing, ...).
    ``result["ntk_change"]`` is a data variable (or a coordinate), ``result.to_xarray()`` the Dataset.
    """

    coords: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    meta: dict
    payload: Any = field(default=None, repr=False, compare=False)  # a kind's own form of its data (not saved)
    summary: dict | None = field(default=None, repr=False, compare=False)  # what `--json` printed after the run
    data_file: Path | None = field(default=None, repr=False, compare=False)  # the finished results.npz that
    #                                              holds `arrays` (memory-mapped): committed by moving it
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)  # tidy tables beside
    #                                              the grid (name -> column -> 1-D array), e.g. "boundaries"

    @property
    def boundaries(self) -> dict[str, np.ndarray]:
        """The exact phase boundaries of a sweep with `boundaries:` (one row per crossing; columns: every
        sweep variable, then phasediag.engine.boundaries.COLUMNS); empty without them."""
        return self.tables.get("boundaries", {})

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "sweep")

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def axes(self) -> list[str]:
        """A sweep's grid axes, in order (the dimensions of every map metric)."""
        return list(self.meta["axes"])

    @property
    def is_shard(self) -> bool:
        return self.meta.get("shard") is not None

    def dims(self, name: str) -> tuple[str, ...]:
        """The dimension names of data variable `name` (coordinates are their own dimension). A shard holds
        the flat slice [start, stop) of the grid: its grid axes are one dimension, `point`."""
        if name in self.coords:
            return (name,)
        if name not in self.arrays:
            raise KeyError(name)
        if "dims" in self.meta and name in self.meta["dims"]:
            dims = tuple(self.meta["dims"][name])
        else:  # a sweep written before dims were recorded
            dims = tuple(self.axes) + (("time",) if name.startswith("traj_") else ())
        if self.is_shard and "axes" in self.meta:
            dims = ("point",) + dims[len(self.meta["axes"]):]
        return dims

    def check(self, complete: bool = True) -> None:
        """ResultsError unless every value is what a run writes: the data variables and coordinates its meta
        lists (all of them if `complete`, no others), numeric arrays whose dimensions match their shape and
        the coordinates (1-D), and categorical codes that their legend names."""
        self._check_names(complete)
        numeric = set(self.meta.get("metrics") or ()) | set(self.meta.get("legends") or ())
        for name, values in {**self.coords, **self.arrays}.items():
            if np.asarray(values).dtype.kind not in ("biuf" if name in numeric else "biufU"):
                raise ResultsError(f"{name} holds {np.asarray(values).dtype} values, not "
                                   + ("numbers" if name in numeric else "numbers or text"))
        for name, values in self.coords.items():
            if np.ndim(values) != 1:
                raise ResultsError(f"coordinate {name} has shape {np.shape(values)}, not 1-D")
            if np.asarray(values).dtype.kind == "f" and np.isnan(values).any():
                raise ResultsError(f"coordinate {name} holds NaN")
        for name, values in self.arrays.items():
            dims = self.dims(name)
            shape = np.shape(values)
            if len(dims) != len(shape) or any(d in self.coords and np.size(self.coords[d]) != n
                                              for d, n in zip(dims, shape)):
                raise ResultsError(f"{name} has shape {shape}, its dimensions {list(dims)} do not fit")
        for name, legend in (self.meta.get("legends") or {}).items():
            if name in self.arrays:
                _check_codes(name, np.asarray(self.arrays[name]), legend)

    def _check_names(self, complete: bool) -> None:
        dims, coords = self.meta.get("dims"), self.meta.get("coords")
        if isinstance(dims, dict) and dims:
            extra = sorted(set(self.arrays) - set(dims))
            missing = sorted(set(dims) - set(self.arrays)) if complete else []
            if extra or missing:
                raise ResultsError(f"holds the data variable {extra[0]!r}, which meta.json does not list" if extra
                                   else f"has no data variable {missing[0]!r}, which meta.json lists")
        if isinstance(coords, list) and coords:
            missing = sorted(set(coords) - set(self.coords))
            if missing:
                raise ResultsError(f"has no coordinate {missing[0]!r}, which meta.json lists")

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.arrays:
            return self.arrays[name]
        if name in self.coords:
            return self.coords[name]
        raise KeyError(f"{name!r}: not in this result; data variables: {', '.join(self.arrays)}; "
                       f"coordinates: {', '.join(self.coords)}")

    def __contains__(self, name: object) -> bool:
        return name in self.arrays or name in self.coords

    def keys(self) -> list[str]:
        """The data variables' names."""
        return list(self.arrays)

    def plot(self, name: str | None = None):
        """A matplotlib Figure of data variable (or figure stem) `name` (default: the first figure the config
        asks for); nothing is saved."""
        from phasediag.jobs import figure_of

        return figure_of(self, name)

    def to_xarray(self):
        """An ``xarray.Dataset``: coordinates, data variables with their dimensions, meta as attributes
        (JSON text under ``attrs["meta"]``). Needs xarray (``pip install 'phasediag[xarray]'``)."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("to_xarray needs xarray: pip install 'phasediag[xarray]'") from None
        variables = {name: (self.dims(name), values) for name, values in self.arrays.items()}
        coords = {name: values for name, values in self.coords.items()}
        attrs = {"kind": self.kind, "name": self.name, "meta": json.dumps(self.meta, default=json_default)}
        return xr.Dataset(variables, coords=coords, attrs=attrs)


def legend_names(legend) -> dict[str, str]:
    """A stored legend (a list of labels by code, or {"code": label} where codes may be negative) as
    {"code": label}; ResultsError for anything else."""
    if isinstance(legend, list) and all(isinstance(n, str) for n in legend):
        return {str(code): label for code, label in enumerate(legend)}
    if isinstance(legend, dict) and all(isinstance(n, str) for n in legend.values()):
        return {str(k): v for k, v in legend.items()}
    raise ResultsError(f"a legend must be a list of labels or a mapping of codes to labels, got {legend!r:.80}")


def _check_codes(name: str, codes: np.ndarray, legend) -> None:
    known = legend_names(legend)
    if codes.dtype.kind not in "biu":
        raise ResultsError(f"{name} holds {codes.dtype} values, not the integer codes of its legend")
    found = npz.code_counts(codes)  # (bounded memory: a result may be larger than memory)
    bad = [int(c) for c in sorted(found) if str(int(c)) not in known]
    if bad:
        raise ResultsError(f"{name} holds the code {bad[0]}, which its legend does not name "
                           f"(codes: {', '.join(known)})")


def column_kind(values: np.ndarray) -> str:
    """How a table column is stored and read back: "float", "int", "bool" or "str"."""
    kind = np.asarray(values).dtype.kind
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(kind, "str")


def cell_text(value) -> str:
    """A table cell as CSV text: floats round-trip (repr), booleans as true/false."""
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    if isinstance(value, (np.bool_, bool)):
        return "true" if value else "false"
    return str(value.item() if isinstance(value, np.generic) else value)


def write_columns(path: Path, columns: dict[str, np.ndarray]) -> None:
    """A tidy CSV table (a header, then one row per index of the equal-length columns), written atomically."""
    import csv

    rows = len(next(iter(columns.values()))) if columns else 0
    with atomic_write(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(list(columns))
        for i in range(rows):
            writer.writerow([cell_text(column[i]) for column in columns.values()])


def read_columns(fh, kinds: dict[str, str], path: Path) -> dict[str, np.ndarray]:
    """The table `write_columns` wrote (an open text file `fh`, read from `path`), its columns typed by
    `kinds` (name -> column_kind); ResultsError if its header is not those columns or a cell is not of its
    kind."""
    import csv

    try:
        rows = list(csv.reader(fh))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not a CSV table ({exc})") from None
    if not rows or rows[0] != list(kinds):
        raise ResultsError(f"{path}: its columns are not the {len(kinds)} that meta.json lists")
    body = rows[1:]
    if any(len(r) != len(kinds) for r in body):
        raise ResultsError(f"{path}: a row does not have {len(kinds)} cells")
    out = {}
    for j, (name, kind) in enumerate(kinds.items()):
        cells = [r[j] for r in body]
        try:
            if kind == "float":
                out[name] = np.array([float(c) for c in cells], dtype=float)
            elif kind == "int":
                out[name] = np.array([int(c) for c in cells], dtype=np.int64)
            elif kind == "bool":
                if any(c not in ("true", "false") for c in cells):
                    raise ValueError("not true or false")
                out[name] = np.array([c == "true" for c in cells], dtype=bool)
            else:
                out[name] = np.array(cells, dtype=str)
        except (ValueError, OverflowError):  # (an integer beyond int64 too)
            raise ResultsError(f"{path}: column {name} holds a value that is not of kind {kind}") from None
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez-compatible file with fixed zip timestamps (byte-identical for identical arrays), atomically."""
    with atomic_path(path) as tmp:
        npz.write(tmp, arrays)


def save(result: Result, out_dir: Path) -> list[Path]:
    """Commit `result` to run directory `out_dir` as results.npz and meta.json (with its manifest), through
    the directory's lock and one transaction, as every writer does. Returns the paths, meta.json last."""
    from phasediag.results.rundir import writer

    out_dir = Path(out_dir)
    with writer(out_dir) as held:
        txn = held.begin()
        write_npz(txn.path(RESULTS_FILE), {**result.coords, **result.arrays})
        result.meta = {**result_meta(result.meta), "schema": max(SCHEMA, result.meta.get("schema") or 0),
                       "files": [RESULTS_FILE], "figures": []}
        return [out_dir / name for name in txn.commit(result.meta)]


def load_meta(out_dir: Path) -> dict:
    """meta.json of a complete run directory, checked: its names are plain file names, and every data file
    it lists is a regular file of the size its manifest records (ResultsError naming what is wrong). The
    contents are verified against the manifest's SHA-256 when read (:func:`open_data`)."""
    out_dir = Path(out_dir)
    meta_path = out_dir / META_FILE
    if not meta_path.is_file():
        raise ResultsError(f"{out_dir}: no complete results here (no {META_FILE})")
    if meta_path.is_symlink():
        raise ResultsError(f"{meta_path}: is a symbolic link; a run directory's files are regular files")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (OSError, ValueError, RecursionError) as exc:
        raise ResultsError(f"{out_dir}: unreadable {META_FILE}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not isinstance(meta.get("config"), dict):
        raise ResultsError(f"{out_dir}: {META_FILE} is not the metadata of a phasediag run")
    if not NAME_PATTERN.fullmatch(meta["name"]):  # it names the files plot and export write
        raise ResultsError(f"{out_dir}: {META_FILE} has the name {meta['name']!r}, not a plain file name")
    for key in ("files", "figures"):
        if not isinstance(meta.get(key) or [], list):
            raise ResultsError(f"{out_dir}: {META_FILE}: {key} must be a list of file names")
        for name in meta.get(key) or []:
            _plain(out_dir, name, key)
    figures = set(meta.get("figures") or [])
    for name in figures:
        if Path(name).suffix.lstrip(".") not in FIGURE_SUFFIXES:
            raise ResultsError(f"{out_dir}: {META_FILE}: figures names {name!r}, not a figure file")
    listed = meta.get("files") or (["validation.json"] if "settings" in meta else [RESULTS_FILE])  # older runs
    data = [n for n in listed if n != META_FILE and n not in figures]
    manifest = _manifest(out_dir, meta, listed)
    for name in data:
        path = out_dir / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise ResultsError(f"{out_dir}: no complete results here ({name} is missing)") from None
        if not stat.S_ISREG(info.st_mode):
            raise ResultsError(f"{path}: not a regular file")
        if manifest is not None and info.st_size != manifest[name]["size"]:
            raise ManifestError(f"{path}: {info.st_size:,} bytes, but {META_FILE} records "
                                f"{manifest[name]['size']:,}: the run directory was changed after it was written")
    return meta


#: the fields every meta.json of schema >= 2 has, and their JSON types
COMMON_FIELDS = {"schema": int, "kind": str, "name": str, "version": str, "config": dict, "config_hash": str,
                 "created": str, "timing": dict, "shard": (dict, type(None)), "coords": list, "dims": dict,
                 "files": list, "manifest": dict, "figures": list}


def check_fields(out_dir: Path, meta: dict, fields: dict) -> None:
    """ResultsError naming the first field of `fields` (name -> type or tuple of types) that meta.json lacks
    or holds with another type; names in `coords`, `dims` and `axes` must be text."""
    for key, types in fields.items():
        value = meta.get(key, ...)
        if value is ... or not isinstance(value, types) or (isinstance(value, bool) and bool not in
                                                            (types if isinstance(types, tuple) else (types,))):
            want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise ResultsError(f"{out_dir}: {META_FILE}: {key} is {'missing' if value is ... else type(value).__name__}"
                               f", not {want.replace('NoneType', 'null')}")
    names = [*meta.get("coords", []), *meta.get("axes", []),
             *(d for dims in meta.get("dims", {}).values() for d in (dims if isinstance(dims, list) else [None]))]
    if not all(isinstance(n, str) for n in names):
        raise ResultsError(f"{out_dir}: {META_FILE}: coords, axes and dims must name dimensions as text")


def _plain(out_dir: Path, name, key: str) -> str:
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
        raise ResultsError(f"{out_dir}: {META_FILE}: {key} names {name!r:.80}, not a plain file name")
    return name


def _manifest(out_dir: Path, meta: dict, listed: list[str]) -> dict | None:
    """The manifest of a run directory (None for one written before manifests: schema < 2)."""
    manifest, schema = meta.get("manifest"), meta.get("schema")
    if schema is not None and (not isinstance(schema, int) or isinstance(schema, bool) or schema < 0):
        raise ResultsError(f"{out_dir}: {META_FILE}: schema is {schema!r:.40}, not a schema number")
    if isinstance(schema, int) and schema > SCHEMA:
        raise ResultsError(f"{out_dir}: {META_FILE} has schema {schema}: written by a newer phasediag "
                           f"(this one reads up to {SCHEMA})")
    if manifest is not None and (schema is None or schema < 2):
        raise ResultsError(f"{out_dir}: {META_FILE} has a manifest but schema {schema!r}, not 2")
    if manifest is None and not (isinstance(schema, int) and schema >= 2):
        return None
    if not isinstance(manifest, dict):
        raise ResultsError(f"{out_dir}: {META_FILE} has no manifest of its files")
    for name, entry in manifest.items():
        _plain(out_dir, name, "manifest")
        if not (isinstance(entry, dict) and isinstance(entry.get("size"), int) and not isinstance(entry["size"], bool)
                and isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
            raise ResultsError(f"{out_dir}: {META_FILE}: the manifest entry of {name} is not a size and a SHA-256")
    if set(manifest) != {n for n in listed if n != META_FILE}:
        raise ResultsError(f"{out_dir}: {META_FILE}: its files and its manifest do not list the same files")
    return manifest


def open_data(out_dir: Path, meta: dict, name: str, verify: bool = True):
    """Open data file `name` of a run directory for reading, verified against the manifest's size and
    SHA-256 (ManifestError naming the file if its bytes differ); the caller closes it. `verify=False`: a
    file this process has just written (a merge's staged result), with no manifest yet."""
    path = Path(out_dir) / name
    listed = _manifest(Path(out_dir), meta, meta.get("files") or [name]) if verify else None
    if listed is not None and name not in listed:
        raise ResultsError(f"{path}: not a file {META_FILE} lists: the run directory was changed after it was written")
    fh = open(path, "rb")
    entry = (listed or {}).get(name)
    if entry is not None:
        try:
            got = hash_open(fh)
        except BaseException:
            fh.close()
            raise
        if got != {"size": entry["size"], "sha256": entry["sha256"]}:
            fh.close()
            raise ManifestError(f"{path}: its bytes are not the ones {META_FILE} records (SHA-256 differs): "
                                f"the run directory was changed after it was written")
    return fh


def _no_constant(text: str):
    raise ValueError(f"{text} is not a number JSON allows")


def _coord_names(meta: dict) -> list[str]:
    """The coordinates stored beside the data variables (a sweep written before `coords` was recorded: its
    axes, and the time axis of trajectories)."""
    if meta.get("coords"):
        return list(meta["coords"])
    return list(meta.get("axes", [])) + (["time"] if meta.get("times") is not None else [])


def load(out_dir: Path, only: set[str] | None = None, meta: dict | None = None, verify: bool = True,
         mmap: bool = False) -> Result:
    """Read a results directory written by `save` (`only`: just these arrays, and the coordinates; `meta`:
    its meta.json, if already read; `verify`: see :func:`open_data`; `mmap`: the data variables memory-mapped
    read-only instead of read, for results larger than memory; the coordinates are read). Every value comes
    from the one open results.npz whose bytes were verified against `meta`'s manifest (meta.json is read
    first, so a commit in between is a ManifestError, which phasediag.load retries), never by its name anew."""
    meta = load_meta(out_dir) if meta is None else meta
    keep = None if only is None else set(only) | set(_coord_names(meta))
    try:
        with open_data(out_dir, meta, RESULTS_FILE, verify) as fh, np.load(fh, allow_pickle=False) as data:
            coord_names = set(_coord_names(meta))
            lazy = npz.open_arrays(fh) if mmap else {}  # (the verified file itself: a commit since may have
            #                                             given its name to another run's file)
            stored = {name: lazy[name] if name in lazy and name not in coord_names else data[name]
                      for name in data.files if keep is None or name in keep}
    except ResultsError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        detail = " ".join(str(exc).split())[:200] or "empty"
        raise ResultsError(f"{out_dir}: unreadable {RESULTS_FILE}: {detail}") from None
    coords = {name: stored.pop(name) for name in _coord_names(meta) if name in stored}
    return Result(coords=coords, arrays=stored, meta=meta, tables=_tables(out_dir, meta, verify))


TABLE_KEYS = ("boundaries",)  # meta.json keys that describe a tidy table beside the grid: {file, columns, ...}


def _tables(out_dir: Path, meta: dict, verify: bool) -> dict[str, dict[str, np.ndarray]]:
    """The tables meta.json describes (TABLE_KEYS), read from their files (verified like the data)."""
    import io

    out = {}
    for key in TABLE_KEYS:
        info = meta.get(key)
        if info is None:
            continue
        if not (isinstance(info, dict) and isinstance(info.get("file"), str) and isinstance(info.get("columns"), dict)
                and all(k in ("float", "int", "bool", "str") for k in info["columns"].values())):
            raise ResultsError(f"meta.json: {key} must name its file and the kind of every column")
        name = _plain(out_dir, info["file"], key)
        with open_data(out_dir, meta, name, verify) as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
            out[key] = read_columns(text, dict(info["columns"]), Path(out_dir) / name)
    return out


def shard_order(metas: list[dict]) -> list[int]:
    """Check that `metas` are the shards 1..N of one config, each once; return their indices in shard order."""
    if not metas:
        raise ResultsError("nothing to merge")
    first = metas[0]
    if any(m.get("shard") is None for m in metas):
        raise ResultsError("merge takes shard directories (written with --shard K/N)")
    for m in metas:
        shard = m["shard"]
        if not isinstance(shard, dict) or not all(isinstance(shard.get(k), int) and not isinstance(shard[k], bool)
                                                  for k in ("index", "count")):
            raise ResultsError("a shard's meta.json has no integer shard index and count")
    count = first["shard"]["count"]
    for m in metas:
        if m["config_hash"] != first["config_hash"]:
            raise ResultsError("shards come from different configs (config_hash differs)")
        if m["shard"]["count"] != count:
            raise ResultsError("shards were cut with different N in --shard K/N")
    got = sorted(m["shard"]["index"] for m in metas)
    if got != list(range(1, count + 1)):
        missing = sorted(set(range(1, count + 1)) - set(got))
        raise ResultsError(f"need shards 1..{count} exactly once; missing {missing}" if missing
                           else "a shard is given twice")
    order = sorted(range(len(metas)), key=lambda i: metas[i]["shard"]["index"])
    _check_bounds([metas[i] for i in order])
    return order


def _check_bounds(ordered: list[dict]) -> None:
    """A sweep shard's [start, stop) must be its part K of N of the grid (ResultsError otherwise)."""
    if "start" not in ordered[0]["shard"]:
        return
    points = int(np.prod(ordered[0]["shape"], dtype=object))
    count = len(ordered)
    for k, m in enumerate(ordered, start=1):
        want = ((k - 1) * points // count, k * points // count)
        if (m["shard"].get("start"), m["shard"].get("stop")) != want or list(m["shape"]) != list(ordered[0]["shape"]):
            raise ResultsError(f"shard {k}/{count} does not hold points [{want[0]}, {want[1]}) of the grid")


#: the fields of meta.json that describe one directory's files, not its result
DIRECTORY_FIELDS = ("files", "manifest", "figures", "figures_pending", "tables")


def result_meta(meta: dict) -> dict:
    """`meta` without the fields that list a directory's files (for a result written somewhere else)."""
    return {k: v for k, v in meta.items() if k not in DIRECTORY_FIELDS}


def merged_meta(ordered: list[dict]) -> dict:
    """The meta of the joined result: the first shard's, without the shard, with every shard's timing."""
    meta = result_meta(ordered[0])
    meta["shard"] = None
    shard_times = [m["timing"]["eval_s"] for m in ordered]
    meta["timing"] = {"eval_s": round(sum(shard_times), 6), "shards_eval_s": shard_times}
    return meta


def merge(shards: list[Result]) -> Result:
    """Join shard results (any order) into the full result; checks they are one complete, consistent set."""
    ordered = [shards[i] for i in shard_order([s.meta for s in shards])]
    joined = _Joined([s.arrays for s in ordered], list(ordered[0].arrays), set(), tuple(ordered[0].meta["shape"]))
    return Result(coords=ordered[0].coords, arrays=dict(joined.items()),
                       meta=merged_meta([s.meta for s in ordered]))


def merge_files(directories: list[Path], out_dir: Path, verified: bool = False) -> dict:
    """`merge` of shard directories straight into `out_dir`: the joined results.npz is laid out, then each
    shard's rows of each array are copied into place (in the kernel where it can), so memory holds one block
    at most, whatever the grid's size. Same bytes as `merge` then `save`. Returns the merged meta (meta.json
    is left to the caller, to be written last). `verified`: the caller has just checked every shard against its
    manifest (sizes are checked again, the SHA-256 is not computed twice)."""
    metas = [load_meta(d) for d in directories]
    order = shard_order(metas)
    ordered = [Path(directories[i]) for i in order]
    meta = merged_meta([metas[i] for i in order])
    shape = tuple(meta["shape"])
    parts, coords, checked = [], {}, []  # (checked: the identity of each shard file read and checked)
    try:
        for d, i in zip(ordered, order):
            with open_data(d, metas[i], RESULTS_FILE, verify=not verified) as fh, \
                    np.load(fh, allow_pickle=False) as data:
                extents = npz.extents(fh)
                names = [n for n in _coord_names(meta) if n in extents]
                part_coords = {n: data[n] for n in names}
                checked.append(_identity(os.fstat(fh.fileno())))
            parts.append(extents)
            if not coords:
                coords = part_coords
            elif list(extents) != list(parts[0]):
                raise ResultsError(f"{d}: holds other arrays than {ordered[0]}: not a shard of the same run")
            for name, values in part_coords.items():
                if not np.array_equal(values, coords[name]):
                    raise ResultsError(f"{d}: its {name} coordinates differ from {ordered[0]}'s: "
                                       f"not a part of the same grid")
    except ResultsError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ResultsError(f"unreadable shard results: {' '.join(str(exc).split())[:200] or 'empty'}") from None
    data_names = [n for n in parts[0] if n not in coords]
    rows = int(np.prod(shape))
    specs = []
    for name in data_names:
        _, first_shape, dtype, _ = parts[0][name]
        for extents, d in zip(parts, ordered):
            _, part_shape, part_dtype, fortran = extents[name]
            if part_dtype != dtype or part_shape[1:] != first_shape[1:] or fortran or not part_shape:
                raise ResultsError(f"{d}: its {name} array does not fit the grid of {rows} points")
        total = sum(extents[name][1][0] for extents in parts)
        if total != rows:
            raise ResultsError(f"the shards hold {total} points of {name}, the grid has {rows}")
        specs.append((name, shape + first_shape[1:], dtype))
    layout = npz.Layout([(n, v.shape, v.dtype) for n, v in coords.items()] + specs)
    target = Path(out_dir) / RESULTS_FILE
    npz.create(target, layout, coords)
    written = {name: 0 for name in data_names}  # bytes of each joined array filled so far, in shard order
    out_fd = os.open(target, os.O_RDWR | os.O_CLOEXEC)
    try:
        for d, extents, identity in zip(ordered, parts, checked):
            in_fd = os.open(d / RESULTS_FILE, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _identity(os.fstat(in_fd)) != identity:  # (replaced since it was checked: not copied)
                    raise ResultsError(f"{d / RESULTS_FILE}: changed while it was being merged")
                for name in data_names:
                    offset, part_shape, dtype, _ = extents[name]
                    size = int(np.prod(part_shape)) * dtype.itemsize
                    npz.copy_bytes(in_fd, offset, out_fd, layout.members[name].data_offset + written[name], size)
                    written[name] += size
            finally:
                os.close(in_fd)
    finally:
        os.close(out_fd)
    npz.finish(target, layout)
    return meta


def _identity(info: os.stat_result) -> tuple[int, ...]:
    """What tells one file from another that took its name (a commit swaps in a new file)."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


class _Joined:
    """Mapping-like view that joins each array of the shards (npz files or dicts of arrays, in shard order)
    only when asked for it (`items()`, as `write_npz` iterates)."""

    def __init__(self, files, names: list[str], coords: set[str], shape: tuple[int, ...], sources=None):
        self.files, self.names, self.coords, self.shape = files, names, coords, shape
        self.sources = list(sources) if sources is not None else [f"shard {k + 1}" for k in range(len(files))]

    def items(self):
        for name in self.names:
            yield name, self._join(name)

    def _join(self, name: str) -> np.ndarray:
        first = self.files[0][name]
        if name in self.coords:
            for f, source in zip(self.files[1:], self.sources[1:]):
                if not np.array_equal(f[name], first):
                    raise ResultsError(f"{source}: its {name} coordinates differ from {self.sources[0]}'s: "
                                       f"not a part of the same grid")
            return first
        rows = int(np.prod(self.shape))
        out = np.empty((rows,) + first.shape[1:], dtype=first.dtype)
        lo = 0
        for k, f in enumerate(self.files):  # one shard's part in memory at a time
            part = first if k == 0 else f[name]
            if lo + len(part) > rows or part.shape[1:] != first.shape[1:]:
                raise ResultsError(f"{self.sources[k]}: its {name} array does not fit the grid of {rows} points")
            out[lo:lo + len(part)] = part
            lo += len(part)
        if lo != rows:
            raise ResultsError(f"the shards hold {lo} points of {name}, the grid has {rows}")
        return out.reshape(self.shape + first.shape[1:])
