"""`phasediag experiment CONFIG`: studies by simulated training, beyond what the closed form covers.

A config names its study with the top-level key ``experiment``; each study lives in its own module with a
``run(root, *, source, out, workers, plot, progress_total, progress) -> dict`` entry point that reads the parsed YAML
(:class:`phasediag.config.Located` values, so errors name the key path and line), trains, writes its results
atomically under ``out`` and returns a JSON-ready summary. Studies:

- ``nonlinear``: a two-layer tanh / ReLU network on scikit-learn's digits (``pip install '.[experiments]'``);
- ``sgd_drift``: the linear model under SGD vs GD: how the conservation laws (Delta, alignment) drift.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from phasediag.config import ConfigError, _did_you_mean, _fail, _string, parse_yaml

__all__ = ["EXPERIMENTS", "run_experiment"]

#: experiment name -> module implementing ``run``
EXPERIMENTS = {
    "nonlinear": "phasediag.nonlinear_experiment",
    "sgd_drift": "phasediag.sgd_drift",
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
        raise _fail("config", root.line, "must be a mapping (key: value)")
    if "experiment" not in root.value:
        raise ConfigError(f"experiment: is required at the top level (one of {', '.join(EXPERIMENTS)}); "
                          f"sweeps of the closed form run with 'phasediag run'")
    item = root.value["experiment"]
    kind = _string(item)
    if kind not in EXPERIMENTS:
        raise _fail(item.path, item.line, f"unknown experiment {kind!r}{_did_you_mean(kind, EXPERIMENTS)}; "
                                          f"allowed: {', '.join(EXPERIMENTS)}")
    module = importlib.import_module(EXPERIMENTS[kind])
    return module.run(root, source=source, out=out, workers=workers, plot=plot,
                      progress_total=progress_total, progress=progress)
