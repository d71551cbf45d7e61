"""The infinite-width limit of one scaling of the hyperparameters with the width (docs/theory.md section 7):
exact exponents, phase and health, arranged as a JSON-ready dict (what ``phasediag limit --json`` prints)."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from phasediag.core import scaling
from phasediag.errors import FieldError

__all__ = ["EXPONENT_FIELDS", "to_exponent", "exponents_of", "limit_result"]

MAX_EXPONENT = 10**6  # |width exponent|: d^1e6 is beyond float64 at any d > 1 already
MAX_TEXT = 100  # characters of an exponent as written
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE]([-+]?[0-9]+))?")
_FRACTION = re.compile(r"[-+]?[0-9]+/[0-9]+")

#: (field, hyperparameter) in the order of the exponents k, su, sw, eu, ew
EXPONENT_FIELDS = (("output_scale_exp", "output_scale"), ("init_var_u_exp", "init_var_u"),
                   ("init_var_w_exp", "init_var_w"), ("lr_u_exp", "lr_u"), ("lr_w_exp", "lr_w"))


def to_exponent(field: str, value) -> Fraction:
    """A width exponent, kept exact: a fraction as written ("-1/2", Fraction(-1, 2)); a decimal (0.25, "1e-3")
    as the nearest fraction with denominator <= 10^6 (the library's rule for floats)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise FieldError(field, f"{value!r} is not a number or a fraction (e.g. -1/2, 0.25)")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    if len(text) > MAX_TEXT:  # Fraction() of a long text converts it in full
        raise FieldError(field, f"{text[:12]!r}... ({len(text)} characters) is not a usable exponent "
                                f"(a number or a fraction of at most {MAX_TEXT} characters)")
    decimal = _DECIMAL.fullmatch(text)
    if not (decimal or _FRACTION.fullmatch(text)):  # ASCII decimal or p/q, as a config's numbers
        raise FieldError(field, f"{text!r} is not a number or a fraction (e.g. -1/2, 0.25)")
    try:
        if decimal and abs(int(decimal.group(1) or 0)) > 30:  # 1e999999999: Fraction() would build 10^999999999
            f = Fraction(_float_or_inf(text))
        else:
            f = Fraction(text)
    except ZeroDivisionError:
        raise FieldError(field, f"{text!r} is not a number or a fraction (e.g. -1/2, 0.25)") from None
    if abs(f) > MAX_EXPONENT:  # exact: before any float() that would overflow
        raise FieldError(field, f"{text} is not a usable exponent (|exponent| <= 1e6)")
    return f if "/" in text else f.limit_denominator(10**6)


def _float_or_inf(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else math.copysign(10.0**7, value)  # beyond MAX_EXPONENT either way


def exponents_of(param: str | None, given: dict) -> tuple[str | None, tuple[Fraction, ...]]:
    """(parametrization name or None, the five exponents) from a named parametrization or explicit exponents
    (`given`: field -> value or None; missing ones are 0)."""
    explicit = [name for name, _ in EXPONENT_FIELDS if given.get(name) is not None]
    if param is None:
        return None, tuple(Fraction(0) if given.get(name) is None else to_exponent(name, given[name])
                           for name, _ in EXPONENT_FIELDS)
    if explicit:
        raise FieldError("param", f"conflicts with {', '.join(explicit)}: give a named parametrization or "
                                  "exponents, not both")
    try:
        p = scaling.parametrization(param)
    except KeyError as e:
        raise FieldError("param", str(e.args[0])) from None
    return p.name, tuple(p.exponents)


def limit_result(param: str | None, exponents: tuple, init: str = "typical", check: bool = False) -> dict:
    """The JSON-ready limit (exponents as exact fraction strings such as "-1/2")."""
    if init not in ("typical", "sampled"):
        raise FieldError("init", f"must be typical or sampled, got {init!r}")
    lim = scaling.exact_limit(*exponents, init=init)
    result = {
        "param": param,
        "init": init,
        "inputs": {hp: str(x) for (_, hp), x in zip(EXPONENT_FIELDS, lim.exponents)},
        "exponents": {name: str(x) for name, x in lim.limit._asdict().items()},
        "phase": lim.phase,
        "health": list(lim.health),
    }
    if check:
        found = scaling.check_exponents(*lim.exponents, init=init)
        slopes = {name: {"measured": None if math.isnan(c.measured) else c.measured, "exact": str(c.exact),
                         "points": c.points} for name, c in found.items()}
        result["check"] = {"widths": [float(w) for w in scaling.DEFAULT_WIDTHS], "init": init,
                           "seeds": len(scaling.DEFAULT_SEEDS) if init == "sampled" else None, "slopes": slopes}
    return result
