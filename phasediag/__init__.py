"""phasediag: exact phase diagrams of training regimes for two-layer linear networks.

The public surface (docs/api.md): ``solve``, ``simulate``, ``run``, ``load``, ``limit``, the types
``Hyperparameters``, ``Result``, ``Point``, ``Limit`` and the error ``BadInput`` (a ValueError; its subclasses
``ConfigError``, ``ResultsError``, ``FieldError``), ``BusyError`` (another process writes that run directory)
and ``PhasediagWarning``. They are imported on first use, so that ``import phasediag``
and the command line start fast.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "solve": "phasediag.api", "simulate": "phasediag.api", "run": "phasediag.api", "load": "phasediag.api",
    "limit": "phasediag.api", "plot": "phasediag.api", "Point": "phasediag.api", "Limit": "phasediag.api",
    "Hyperparameters": "phasediag.config.hyperparameters", "Result": "phasediag.results.store",
    "BadInput": "phasediag.errors", "ConfigError": "phasediag.errors", "ResultsError": "phasediag.errors",
    "FieldError": "phasediag.errors", "BusyError": "phasediag.errors", "PhasediagWarning": "phasediag.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'phasediag' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
