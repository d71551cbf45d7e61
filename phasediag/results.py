"""Sweep results on disk: results.npz (named arrays) + meta.json, written atomically and deterministically.

results.npz holds each axis's 1-D coordinates under its own name ("seed" for the seed axis, "time" for a
trajectory time axis) and each metric array shaped meta["shape"] (axes in meta["axes"] order; trajectory
arrays "traj_<field>" have the time axis last). Zip entries carry a fixed timestamp, so the same results
give byte-identical files. A shard directory holds the flat slice [start, stop) of every array instead
(meta["shard"]), until `merge` joins the shards.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phasediag.io import atomic_path, atomic_write

RESULTS_FILE = "results.npz"
META_FILE = "meta.json"


class ResultsError(ValueError):
    """A results directory that is missing, incomplete or inconsistent."""


@dataclass
class SweepResult:
    """coords: axis name -> 1-D values; arrays: metric name -> array; meta: everything else (JSON-ready)."""

    coords: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    meta: dict

    @property
    def axes(self) -> list[str]:
        return list(self.meta["axes"])

    @property
    def is_shard(self) -> bool:
        return self.meta.get("shard") is not None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez-compatible file with fixed zip timestamps (byte-identical for identical arrays)."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)


def save(result: SweepResult, out_dir: Path) -> list[Path]:
    """Write results.npz then meta.json (the latter marks the directory complete)."""
    out_dir = Path(out_dir)
    write_npz(out_dir / RESULTS_FILE, {**result.coords, **result.arrays})
    return [out_dir / RESULTS_FILE, save_meta(result, out_dir)]


def save_meta(result: SweepResult, out_dir: Path) -> Path:
    """(Re)write meta.json atomically, e.g. after timings and figure names are known."""
    path = Path(out_dir) / META_FILE
    with atomic_write(path) as fh:
        json.dump(result.meta, fh, indent=2, allow_nan=False, default=_json_default)
        fh.write("\n")
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def load(out_dir: Path) -> SweepResult:
    """Read a results directory written by `save`."""
    out_dir = Path(out_dir)
    meta_path, npz_path = out_dir / META_FILE, out_dir / RESULTS_FILE
    if not meta_path.is_file() or not npz_path.is_file():
        raise ResultsError(f"{out_dir}: no complete results here (need {RESULTS_FILE} and {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(npz_path, allow_pickle=False) as data:
            stored = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ResultsError(f"{out_dir}: unreadable results: {exc}") from None
    coord_names = meta["axes"] + (["time"] if meta.get("times") is not None else [])
    coords = {name: stored.pop(name) for name in coord_names if name in stored}
    return SweepResult(coords=coords, arrays=stored, meta=meta)


def merge(shards: list[SweepResult]) -> SweepResult:
    """Join shard results (any order) into the full result; checks they are one complete, consistent set."""
    if not shards:
        raise ResultsError("nothing to merge")
    first = shards[0].meta
    if any(s.meta.get("shard") is None for s in shards):
        raise ResultsError("merge takes shard directories (written with --shard K/N)")
    count = first["shard"]["count"]
    for s in shards:
        if s.meta["config_hash"] != first["config_hash"]:
            raise ResultsError("shards come from different configs (config_hash differs)")
        if s.meta["shard"]["count"] != count:
            raise ResultsError("shards were cut with different N in --shard K/N")
    got = sorted(s.meta["shard"]["index"] for s in shards)
    if got != list(range(1, count + 1)):
        missing = sorted(set(range(1, count + 1)) - set(got))
        raise ResultsError(f"need shards 1..{count} exactly once; missing {missing}" if missing
                           else "a shard is given twice")
    ordered = sorted(shards, key=lambda s: s.meta["shard"]["index"])
    shape = tuple(first["shape"])
    arrays = {}
    for name in ordered[0].arrays:
        parts = [s.arrays[name] for s in ordered]
        arrays[name] = np.concatenate(parts, axis=0).reshape(shape + parts[0].shape[1:])
    meta = dict(first)
    meta["shard"] = None
    shard_times = [s.meta["timing"]["eval_s"] for s in ordered]
    meta["timing"] = {"eval_s": round(sum(shard_times), 6), "shards_eval_s": shard_times}
    return SweepResult(coords=ordered[0].coords, arrays=arrays, meta=meta)
