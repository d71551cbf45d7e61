"""`phasediag experiment CONFIG`: studies by simulated training, beyond what the closed form covers.

A config names its study with the top-level key ``experiment``; each study lives in its own module with a
``run(root, *, source, out, workers, plot, progress_total, progress) -> dict`` entry point that reads the parsed YAML
(:class:`phasediag.config.sweep.Located` values, so errors name the key path and line), trains, writes its results
atomically under ``out`` and returns a JSON-ready summary. Studies:

- ``nonlinear``: a two-layer tanh / ReLU network on scikit-learn's digits (``pip install '.[experiments]'``);
- ``sgd_drift``: the linear model under SGD vs GD: how the conservation laws (Delta, alignment) drift.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from phasediag.config.reader import ConfigError, did_you_mean, fail, parse_yaml, string

__all__ = ["EXPERIMENTS", "run_experiment", "fmt", "write_study", "write_meta"]

#: experiment name -> module implementing ``run``
EXPERIMENTS = {
    "nonlinear": "phasediag.studies.nonlinear_digits",
    "sgd_drift": "phasediag.studies.sgd_drift",
}


def run_experiment(path: str | Path, *, out: str | Path | None = None, workers: int = 1, plot: bool = True,
                   progress_total: Callable[[int], None] | None = None,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Read the YAML at ``path``, dispatch on its ``experiment`` key, return the study's summary.

    ``progress_total(n)`` is called once with the number of work units, ``progress(k)`` as k more finish
    (both may be None). Raises ConfigError on bad input.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the config: {getattr(exc, 'strerror', None) or exc}") from None
    root = parse_yaml(text, source)
    if not isinstance(root.value, dict):
        raise fail("config", root.line, "must be a mapping (key: value)")
    if "experiment" not in root.value:
        raise ConfigError(f"experiment: is required at the top level (one of {', '.join(EXPERIMENTS)}); "
                          f"sweeps of the closed form run with 'phasediag run'")
    item = root.value["experiment"]
    kind = string(item)
    if kind not in EXPERIMENTS:
        raise fail(item.path, item.line, f"unknown experiment {kind!r}{did_you_mean(kind, EXPERIMENTS)}; "
                                          f"allowed: {', '.join(EXPERIMENTS)}")
    module = importlib.import_module(EXPERIMENTS[kind])
    return module.run(root, source=source, out=out, workers=workers, plot=plot,
                      progress_total=progress_total, progress=progress)


# ---------------------------------------------------------------- shared by the studies


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for the human summary ("n/a" for a missing one)."""
    return "n/a" if value is None else f"{value:.{digits}g}"


def write_study(out_dir: Path, name: str, arrays: dict, figures: Sequence[tuple[str, Callable[[Path], Any]]],
                formats: Sequence[str]) -> list[Path]:
    """Write results.npz and each figure `draw(path)` as `<name>__<stem>.<fmt>`, atomically; return the paths.
    `write_meta` comes last."""
    from phasediag.results.store import write_npz

    files = [out_dir / "results.npz"]
    write_npz(files[0], arrays)
    for stem, draw in figures:
        for ext in formats:
            files.append(out_dir / f"{name}__{stem}.{ext}")
            draw(files[-1])
    return files


def write_meta(out_dir: Path, files: list[Path], meta: dict) -> None:
    """Append meta.json to `files` and write it, listing every file: written last, so its presence marks a
    complete result."""
    from phasediag.results.atomic import atomic_write

    files.append(out_dir / "meta.json")
    with atomic_write(files[-1]) as fh:
        json.dump({**meta, "files": [p.name for p in files]}, fh, indent=2, allow_nan=False)
        fh.write("\n")
