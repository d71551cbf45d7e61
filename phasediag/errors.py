"""The error types of the library. Every bad input raises a :class:`BadInput` (the CLI turns it, in one place,
into one line and exit status 2); the message names the config key path and line, the run option or the
hyperparameter field (`lr_u`), never a command-line flag: the CLI maps fields to its flags."""

from __future__ import annotations

__all__ = ["BadInput", "ConfigError", "ResultsError", "ManifestError", "FieldError", "BusyError", "PhasediagWarning"]


class BadInput(ValueError):
    """Input the library cannot use: a config, a run directory, an option or a hyperparameter value."""


class ConfigError(BadInput):
    """Bad config: the message names the key path and line."""


class ResultsError(BadInput):
    """A run directory that is missing, incomplete or inconsistent."""


class ManifestError(ResultsError):
    """A run directory whose files are not the ones its meta.json records (size or SHA-256 differ)."""


class BusyError(RuntimeError):
    """Another process is writing the run directory (the CLI's exit status 75, "try again later")."""


class FieldError(BadInput):
    """A bad value of a named field (a hyperparameter such as `lr_u`, or a run option such as `shard`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class PhasediagWarning(UserWarning):
    """Something the run recovered from on its own (e.g. a corrupt checkpoint chunk, computed again)."""
