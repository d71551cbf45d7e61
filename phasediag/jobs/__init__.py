"""Job kinds and their one lifecycle.

Every job -- a sweep of the closed form, an infinite-width scaling diagram, a validation against simulated
training, each simulated-training study -- goes through :mod:`phasediag.jobs.lifecycle`:

    read the config (phasediag.config.reader) -> resolve it (kind.read) -> execute it (kind.execute)
    -> write the run directory (phasediag.results.store) -> draw the figures (kind.figures, plots.base)
    -> summarize (kind.summarize; the CLI prints it as text or --json)

A kind is one module that says what it computes and draws. It provides:

- ``read(root, source, options) -> spec``: validate the parsed config (a :class:`~phasediag.config.reader.Located`
  tree) into an object with ``name`` and ``resolved`` (plain data: the resolved config stored in meta.json);
  everything that can be wrong with the input is reported here, before any I/O.
- ``execute(spec, options, checkpoint) -> Result``: compute (``checkpoint``: a directory for finished work, or
  None); the Result's meta holds the kind's own fields (``kind``, ``name`` and ``dims`` at least).
- ``figures(result) -> [(file stem, draw)]``: every figure, each ``draw()`` returning a Figure, drawn from the
  result alone (so a run directory can always be re-plotted).
- ``summarize(result) -> dict`` (JSON-ready) and ``text(summary) -> str`` (the human lines).
- optional: ``SUPPORTS`` (the run options it honours beyond --workers and --no-plot), ``OUT_SUFFIX`` (a
  sub-folder of outputs/<name>/), ``units(spec, options)`` (work units for the progress bar),
  ``write_data(result, out)`` / ``load_data(directory, meta)`` (when the data are not one results.npz),
  ``merge(directories, out) -> Result`` (joining shards), ``TABLES`` (names of the exported CSV tables).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from phasediag.config.reader import Located, did_you_mean, fail, string
from phasediag.errors import ResultsError

__all__ = ["KINDS", "kind_module", "kind_of_config", "kind_of_meta", "figure_of"]

#: job kind -> the module that implements it
KINDS = {
    "sweep": "phasediag.jobs.sweep",
    "scaling": "phasediag.jobs.sweep",
    "validation": "phasediag.studies.validation",
    "sgd_drift": "phasediag.studies.sgd_drift",
    "nonlinear": "phasediag.studies.nonlinear_digits",
    "activations": "phasediag.studies.activations",
    "deep": "phasediag.studies.deep_networks",
}
#: the studies a config names with its top-level key `experiment`
EXPERIMENTS = ("nonlinear", "sgd_drift", "activations", "deep")


def kind_module(kind: str) -> ModuleType:
    return importlib.import_module(KINDS[kind])


def kind_of_config(root: Located) -> str:
    """The job kind a parsed config asks for: its `experiment` (a study), else `mode: scaling`, else a sweep."""
    top = root.value
    if "experiment" in top:
        item = top["experiment"]
        name = string(item)
        if name not in EXPERIMENTS:
            raise fail(item.path, item.line, f"unknown experiment {name!r}{did_you_mean(name, EXPERIMENTS)}; "
                                             f"allowed: {', '.join(EXPERIMENTS)}")
        return name
    mode = top.get("mode")
    return "scaling" if mode is not None and mode.value == "scaling" else "sweep"


def kind_of_meta(meta: dict, source: str) -> str:
    """The kind of a run directory from its meta.json (directories written before kinds were recorded too)."""
    kind = meta.get("kind")
    if kind is None:
        kind = (meta.get("experiment") or ("validation" if "settings" in meta else None)
                or ("scaling" if meta.get("mode") == "scaling" else "sweep"))
    if not isinstance(kind, str) or kind not in KINDS:
        raise ResultsError(f"{source}: unknown kind {kind!r:.40} in meta.json; known: {', '.join(KINDS)}")
    return kind


def figure_of(result, name: str | None = None):
    """The Figure of `result` whose file stem names `name` (a figure stem or a data variable; default: the
    first figure the config asks for)."""
    if result.is_shard:
        raise ResultsError(f"{result.name}: a shard cannot be drawn; merge the shards first")
    module = kind_module(result.kind)
    if name is not None and name in result.arrays and hasattr(module, "figure_for"):
        return module.figure_for(result, name)
    stems = module.figures(result)
    if not stems:
        raise ValueError(f"{result.name}: this {result.kind} result has no figures")
    if name is None:
        return stems[0][1]()
    for stem, draw in stems:
        if stem == name or f"__{name}__" in f"{stem}__":
            return draw()
    raise KeyError(f"{name!r}: no figure of that name; figures: {', '.join(s for s, _ in stems)}")
