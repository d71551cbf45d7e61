"""The eight numbers of one point of the model (docs/theory.md section 1), one type for every layer.

``solve``, ``simulate``, the sweep configs' `model` / `data` keys and the CLI's options all use these names.
Pure Python (no numpy), so the command line can take its defaults from here and still start fast.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

from phasediag.errors import FieldError

__all__ = ["Hyperparameters", "MODEL_FIELDS", "DATA_FIELDS", "FIELDS", "real", "finite", "integer_width"]

MODEL_FIELDS = ("width", "output_scale", "lr_u", "lr_w", "init_var_u", "init_var_w")
DATA_FIELDS = ("input_var", "teacher")
FIELDS = MODEL_FIELDS + DATA_FIELDS


@dataclass(frozen=True)
class Hyperparameters:
    """width d, output_scale kappa, lr_u eta_u (output layer u), lr_w eta_w (input layer w), init_var_u
    sigma_u^2, init_var_w sigma_w^2 (None: 1/width, so that U = W = 1 at typical initialization), input_var
    a = E[x^2] and teacher m* = E[xy]/E[x^2]."""

    width: int = 100
    output_scale: float = 1.0
    lr_u: float = 0.1
    lr_w: float = 0.1
    init_var_u: float | None = None
    init_var_w: float | None = None
    input_var: float = 1.0
    teacher: float = 1.0

    def checked(self) -> "Hyperparameters":
        """The same point with every value checked (FieldError naming the field) and the variances filled in:
        width an integer in [1, 2^53]; output_scale, lr_u, lr_w, input_var finite and > 0; init variances finite and
        >= 0; teacher finite."""
        width = integer_width(self.width)
        return Hyperparameters(
            width=width,
            output_scale=finite("output_scale", self.output_scale, low=0.0, strict=True),
            lr_u=finite("lr_u", self.lr_u, low=0.0, strict=True),
            lr_w=finite("lr_w", self.lr_w, low=0.0, strict=True),
            init_var_u=1.0 / width if self.init_var_u is None else finite("init_var_u", self.init_var_u, low=0.0),
            init_var_w=1.0 / width if self.init_var_w is None else finite("init_var_w", self.init_var_w, low=0.0),
            input_var=finite("input_var", self.input_var, low=0.0, strict=True),
            teacher=finite("teacher", self.teacher),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Hyperparameters":
        """From a mapping with (some of) the eight names; another key is a FieldError."""
        names = {f.name for f in fields(cls)}
        for key in values:
            if key not in names:
                raise FieldError(str(key), f"not a hyperparameter; known: {', '.join(FIELDS)}")
        return cls(**values)


def real(field: str, x) -> float:
    """`x` as a float (not NaN); FieldError naming `field` otherwise."""
    if isinstance(x, bool):
        raise FieldError(field, f"{x!r} is not a number")
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):
        raise FieldError(field, f"{x!r} is not a number") from None
    if math.isnan(v):
        raise FieldError(field, "must be a number, not NaN")
    return v


def finite(field: str, x, *, low: float | None = None, strict: bool = False) -> float:
    """`x` as a finite float, >= low (> low if strict) when `low` is given; FieldError otherwise."""
    v = real(field, x)
    if not math.isfinite(v):
        raise FieldError(field, f"must be finite, got {x}" if low is None else
                         f"must be a finite number {'>' if strict else '>='} {low:g}, got {x}")
    if low is not None and (v <= low if strict else v < low):
        raise FieldError(field, f"must be a finite number {'>' if strict else '>='} {low:g}, got {x}")
    return v


MAX_WIDTH = 2**53  # widths are exact in float64 up to here (a sweep's model.width has the same bound)


def integer_width(x) -> int:
    """A width: an integer in [1, 2^53] (1e6 written as a float is fine); FieldError otherwise."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        if not 1 <= x <= MAX_WIDTH:
            shown = f"{float(x):.6g}" if abs(x) > MAX_WIDTH and abs(x) < 1e308 else x  # no 300-digit message
            raise FieldError("width", f"must be an integer in [1, 2^53], got {shown}")
        return int(x)
    v = real("width", x)
    if not math.isfinite(v) or v != math.floor(v) or not 1 <= v <= MAX_WIDTH:
        raise FieldError("width", f"must be an integer in [1, 2^53], got {x}")
    return int(v)
