"""The rules of the settings that a config key, a command-line option and a Python argument all set: one
function per setting, raising FieldError naming the setting (the config reader adds the key path and line,
the CLI its flag), so `classify.alignment_threshold: 2`, `--alignment-threshold 2` and
``solve(alignment_threshold=2)`` are refused alike.

Pure Python (no numpy): the command line checks its options with these while parsing.
"""

from __future__ import annotations

import math
import numbers
import re
import sys

from phasediag.config.hyperparameters import real
from phasediag.errors import FieldError

__all__ = ["NUMBER", "INF", "MAX_GD_STEPS", "gd_steps", "MAX_SEED", "MAX_WORKERS", "MAX_SAMPLES",
           "number_text", "ntk_threshold", "alignment_threshold", "horizon", "gd_max_steps", "seed",
           "ACTIVATIONS", "DEFAULT_SLOPE", "DEFAULT_NODES", "MIN_NODES", "MAX_NODES", "MAX_NETWORK_ENTRIES",
           "network_size", "activation", "slope",
           "quadrature_nodes"]

MAX_GD_STEPS = 1_000_000  # the exact GD map costs one vectorized step per step
MAX_SEED = 2**63 - 1  # seeds key a 64-bit counter-based stream
MAX_WORKERS = 1024  # parallel processes of a run: more than any machine's cores
MAX_SAMPLES = 10_000_000  # an SGD dataset (simulate --samples, an sgd_drift config's data.samples)
ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "sigmoid", "swish")  # phasediag.training.activations
DEFAULT_SLOPE = 0.01  # leaky_relu's slope on z < 0
DEFAULT_NODES = 64  # Gauss-Legendre nodes per half-line of the population quadrature
MIN_NODES, MAX_NODES = 8, 4096
#: an activated network holds three (width x inputs) arrays per step (inputs: 2 nodes, or the SGD batch); at most
#: this many entries each (3 x 8 bytes x 5e7 = 1.2 GB)
MAX_NETWORK_ENTRIES = 50_000_000

# The numbers a config or an option may write: ASCII decimal (\d would take other scripts' digits, float()
# '1_000'), or inf; the whole text (fullmatch).
NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
INF = re.compile(r"[-+]?\.?(inf|Inf|INF)(inity)?")
FLOAT_MAX_DIGITS = 309  # an integer of more digits is beyond float64 (about 1.8e308) whatever its value


def number_text(text: str) -> int | float:
    """A number as written (an integer stays exact, inf is inf); ValueError for text that is not a number or
    is one beyond float range (1e400, an integer of 400 digits): no setting can use it."""
    if INF.fullmatch(text):
        return float("-inf") if text.startswith("-") else float("inf")
    if not NUMBER.fullmatch(text):
        raise ValueError(f"{_short(text)!r} is not a number")
    if any(ch in text for ch in ".eE"):
        value = float(text)
    elif len(text.lstrip("+-").lstrip("0")) > FLOAT_MAX_DIGITS:  # before int(): no 1 MB integer conversion
        value = math.inf
    else:
        value = int(text)
    if abs(value) > sys.float_info.max:
        raise ValueError(f"{_short(text)} is beyond the floating-point range (about 1.8e308)")
    return value


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"


def _finite(field: str, x) -> float:
    v = real(field, x)
    if not math.isfinite(v):
        raise FieldError(field, f"must be a finite number, got {x}")
    return v


def ntk_threshold(x, field: str = "ntk_threshold") -> float:
    """|ntk_change| at or above this is feature learning: a finite number > 0."""
    v = _finite(field, x)
    if not v > 0:
        raise FieldError(field, f"must be > 0, got {x}")
    return v


def alignment_threshold(x, field: str = "alignment_threshold") -> float:
    """An alignment gain or disalignment (a change of a cosine, at most 1) at or above this counts: in (0, 1)."""
    v = _finite(field, x)
    if not 0 < v < 1:
        raise FieldError(field, f"must be in (0, 1), got {x}")
    return v


def horizon(x, *, steps: bool = False, field: str = "horizon") -> float:
    """The training horizon: > 0, inf for the end of training; with GD (`steps`) a whole number of steps, at
    most MAX_GD_STEPS."""
    v = real(field, x)
    if not v > 0:
        raise FieldError(field, f"must be > 0 (or inf: the end of training), got {x}")
    return gd_steps(field, v, "the horizon") if steps else v


def gd_steps(field: str, v: float, what: str) -> float:
    """A GD time `v` (of `field`, named `what` in messages): inf, or a whole number of steps, at most
    MAX_GD_STEPS (the exact map costs O(steps))."""
    if math.isfinite(v):
        if v != math.floor(v):
            raise FieldError(field, f"with optimizer gd {what} is a whole number of steps, got {v:g}")
        if v > MAX_GD_STEPS:
            raise FieldError(field, f"with optimizer gd at most {MAX_GD_STEPS:,} steps (the exact map costs "
                                    f"O(steps)), got {v:g}; inf is the end of training")
    return v


def _integer(field: str, x) -> int:
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return int(x)
    v = real(field, x)
    if not math.isfinite(v) or v != math.floor(v):
        raise FieldError(field, f"must be an integer, got {x}")
    return int(v)


def gd_max_steps(x, field: str = "max_steps") -> int:
    """The step budget of GD's end of training: an integer in [1, MAX_GD_STEPS]."""
    n = _integer(field, x)
    if n < 1:
        raise FieldError(field, f"must be an integer >= 1, got {x}")
    if n > MAX_GD_STEPS:
        raise FieldError(field, f"must be at most {MAX_GD_STEPS:,}, got {n:,}")
    return n


def seed(x, field: str = "seed") -> int:
    """A seed: an integer in [0, 2^63 - 1]."""
    n = _integer(field, x)
    if not 0 <= n <= MAX_SEED:
        raise FieldError(field, f"must be an integer in [0, 2^63 - 1], got {x}")
    return n


def activation(x, field: str = "activation") -> str:
    """An activation's name: one of ACTIVATIONS."""
    if not isinstance(x, str) or x not in ACTIVATIONS:
        raise FieldError(field, f"must be one of {', '.join(ACTIVATIONS)}, got {x!r}")
    return x


def slope(x, field: str = "slope") -> float:
    """leaky_relu's slope for negative inputs: in (-1, 1000], so that its small-weight gain (1 + slope)/2 is > 0."""
    v = _finite(field, x)
    if not -1.0 < v <= 1000.0:
        raise FieldError(field, f"must be in (-1, 1000] (its gain (1 + slope)/2 must be > 0), got {x}")
    return v


def quadrature_nodes(x, field: str = "nodes") -> int:
    """Quadrature nodes per half-line: an integer in [MIN_NODES, MAX_NODES]."""
    n = _integer(field, x)
    if not MIN_NODES <= n <= MAX_NODES:
        raise FieldError(field, f"must be an integer in [{MIN_NODES}, {MAX_NODES:,}], got {x}")
    return n


def network_size(width: int, inputs: int, field: str = "nodes") -> None:
    """An activated network of `width` units evaluated on `inputs` points at once (2 x quadrature nodes, or an
    SGD batch) must fit: width x inputs <= MAX_NETWORK_ENTRIES (FieldError naming `field` otherwise)."""
    if width * inputs > MAX_NETWORK_ENTRIES:
        raise FieldError(field, f"width {width:,} x {inputs:,} inputs (2 x nodes, or the SGD batch) is "
                                f"{width * inputs:.3g} entries per array, above {MAX_NETWORK_ENTRIES:.0e} "
                                f"(about 1.2 GB for the three arrays); lower the nodes, the batch or the width")
