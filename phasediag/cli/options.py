"""What the commands share: parameter types, option groups, the flag of a library field, the progress bar and
the one bad-input exception (exit status 2).

Pure Python at import time (click, phasediag.errors, phasediag.config.hyperparameters): the types check ranges
without numpy; tqdm and the library are imported when a command runs.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import click

from phasediag.config import rules
from phasediag.config.hyperparameters import FIELDS as HYPER_FIELDS
from phasediag.config.hyperparameters import Hyperparameters, integer_width
from phasediag.errors import BadInput as LibraryBadInput
from phasediag.errors import FieldError

DEBUG_ENV = "PHASEDIAG_DEBUG"


def debug() -> bool:
    """PHASEDIAG_DEBUG set (and not 0): let unexpected exceptions show their traceback."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def flag(field: str) -> str:
    """The command-line flag of a library field name: lr_u -> --lr-u."""
    return "--" + field.replace("_", "-")


class BadInput(click.ClickException):
    """Bad config, bad results directory or bad option value found after parsing: exit status 2."""

    exit_code = 2


# ----------------------------------------------------------------------------------------------------------
# parameter types (pure Python: no numpy at parse time)


def parse_number(value, fail) -> int | float:
    """An option's number, read as a config reads its numbers (phasediag.config.rules.number_text: ASCII
    decimal or inf, integers exact, nothing beyond float range); `fail(message)` otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower().lstrip("+-") == "nan":
        fail(f"{text!r} is NaN; a number is required")
    try:
        return rules.number_text(text)
    except ValueError as e:
        fail(str(e))


class RealType(click.ParamType):
    """A float with a range check. ``minimum``/``strict`` bound it from below; ``allow_inf`` admits +inf."""

    def __init__(self, minimum: float | None = None, *, strict: bool = False, allow_inf: bool = False,
                 integer: bool = False):
        self.minimum = minimum
        self.strict = strict
        self.allow_inf = allow_inf
        self.integer = integer
        if integer:
            self.name = "integer"
        elif minimum is None:
            self.name = "float"
        else:
            self.name = ("float>" if strict else "float>=") + f"{minimum:g}"

    def check(self, v: float, raw, fail) -> float:
        if math.isnan(v):
            fail(f"{raw!r} is NaN; a number is required")
        if math.isinf(v) and not (self.allow_inf and v > 0):
            fail(f"{raw!r} is not finite" + (" (only +inf is allowed)" if self.allow_inf else ""))
        if self.minimum is not None:
            if self.strict and not v > self.minimum:
                fail(f"must be > {self.minimum:g}, got {raw}")
            if not self.strict and not v >= self.minimum:
                fail(f"must be >= {self.minimum:g}, got {raw}")
        if self.integer and math.isfinite(v) and v != math.floor(v):
            fail(f"must be an integer, got {raw}")
        return v

    def convert(self, value, param, ctx):
        fail = lambda msg: self.fail(msg, param, ctx)  # noqa: E731
        n = parse_number(value, fail)
        if self.integer and isinstance(n, int):  # exact for integers beyond 2^53 written out in full
            if self.minimum is not None and n < self.minimum:
                fail(f"must be >= {self.minimum:g}, got {value}")
            return n
        v = self.check(float(n), value, fail)
        return int(v) if self.integer and math.isfinite(v) else v


class IntegerType(click.ParamType):
    """An integer in [low, high] (high None: no bound), written as the numbers of a config are (1e6 is fine)."""

    name = "integer"

    def __init__(self, low: int, high: int | None = None):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        fail = lambda msg: self.fail(msg, param, ctx)  # noqa: E731
        n = parse_number(value, fail)
        if isinstance(n, float) and not (math.isfinite(n) and n == math.floor(n)):
            fail(f"must be an integer, got {value}")
        n = int(n)
        if n < self.low or (self.high is not None and n > self.high):
            allowed = f"in [{self.low:,}, {self.high:,}]" if self.high is not None else f">= {self.low:,}"
            fail(f"must be an integer {allowed}, got {value}")
        return n


class RuleType(click.ParamType):
    """A number checked by a library rule (phasediag.config.rules, phasediag.config.hyperparameters): the rule
    a config key and the Python API apply to the same setting, so all three refuse alike."""

    def __init__(self, rule, name: str):
        self.rule, self.name = rule, name

    def convert(self, value, param, ctx):
        fail = lambda msg: self.fail(msg, param, ctx)  # noqa: E731
        n = parse_number(value, fail)
        try:
            return self.rule(n)
        except FieldError as e:
            fail(e.message)


class RealListType(click.ParamType):
    """A comma-separated list of numbers, each checked by ``element`` (a :class:`RealType`)."""

    def __init__(self, element: RealType, *, length: int | None = None, name: str = "LIST"):
        self.element = element
        self.length = length
        self.name = name

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [s for s in str(value).split(",")]
        fail = lambda msg: self.fail(msg, param, ctx)  # noqa: E731
        if any(str(s).strip() == "" for s in items):
            fail(f"{value!r}: empty entry in the comma-separated list")
        if self.length is not None and len(items) != self.length:
            fail(f"{value!r}: expected {self.length} comma-separated numbers, got {len(items)}")
        out = []
        for s in items:
            v = parse_number(s, lambda msg: fail(f"{msg} (in {value!r})"))
            out.append(self.element.check(float(v), str(s).strip(), fail))
        return out


class ExponentType(click.ParamType):
    """A width exponent, kept exact (phasediag.engine.limit.to_exponent: -1/2 as written, 0.25 as a fraction)."""

    name = "exponent"

    def convert(self, value, param, ctx):
        from phasediag.engine.limit import to_exponent

        try:
            return to_exponent(param.name if param is not None else "exponent", value)
        except LibraryBadInput as e:
            self.fail(e.message if hasattr(e, "message") else str(e), param, ctx)


POSITIVE = RealType(0.0, strict=True)
NONNEGATIVE = RealType(0.0)
FINITE = RealType()
WIDTH = RuleType(integer_width, "integer")  # the config's model.width rule: an integer in [1, 2^53]
TIME = RealType(0.0, allow_inf=True)
HORIZON = RuleType(rules.horizon, "float>0")  # (GD's whole steps: checked with --optimizer, by the library)
NTK_THRESHOLD = RuleType(rules.ntk_threshold, "float>0")
ALIGNMENT_THRESHOLD = RuleType(rules.alignment_threshold, "float")
TIMES = RealListType(TIME, name="T1,T2,...")
GRAM = RealListType(FINITE, length=3, name="U,W,V")
EXPONENT = ExponentType()
SEED = RuleType(rules.seed, "integer")


# ----------------------------------------------------------------------------------------------------------
# option groups


def options(*decorators):
    """Apply click option decorators in the order listed (top to bottom in --help)."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


JSON_HELP = "Print one JSON object (one line) instead of the table."
QUIET_HELP = "Print nothing but errors (and the JSON with --json)."


def json_option(help: str = JSON_HELP):
    """--json, passed to the command as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def quiet_option(help: str = QUIET_HELP):
    """--quiet / -q."""
    return click.option("--quiet", "-q", is_flag=True, help=help)


def no_plot_option(help: str):
    """--no-plot."""
    return click.option("--no-plot", is_flag=True, help=help)


def workers_option(help: str):
    """--workers N (1 to MAX_WORKERS, default 1)."""
    return click.option("--workers", type=IntegerType(1, rules.MAX_WORKERS), default=1, show_default=True,
                        help=f"{help} At most {rules.MAX_WORKERS:,}.")


def shard_option(help: str):
    """--shard K/N, passed as text; :func:`shard_value` turns it into the library's Shard."""
    return click.option("--shard", default=None, metavar="K/N", help=help)


def shard_value(shard):
    """The --shard text as a phasediag.jobs.lifecycle Shard (None stays None); bad text: a --shard error."""
    from phasediag.jobs.lifecycle import parse_shard

    try:
        return parse_shard(shard)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--shard'") from None


_DEFAULTS = Hyperparameters()
_HYPER_OPTIONS = options(
    click.option(flag("width"), type=WIDTH, default=_DEFAULTS.width, show_default=True,
                 help="Hidden width d (an integer in [1, 2^53]; 1e6 is accepted)."),
    click.option(flag("output_scale"), type=POSITIVE, default=_DEFAULTS.output_scale, show_default=True,
                 help="Output scale kappa > 0."),
    click.option(flag("lr_u"), type=POSITIVE, default=_DEFAULTS.lr_u, show_default=True,
                 help="Learning rate eta_u of the output layer u."),
    click.option(flag("lr_w"), type=POSITIVE, default=_DEFAULTS.lr_w, show_default=True,
                 help="Learning rate eta_w of the input layer w."),
    click.option(flag("init_var_u"), type=NONNEGATIVE, default=_DEFAULTS.init_var_u, show_default="1/width",
                 help="Initial variance sigma_u^2 of u's entries (0 = zero-initialized layer)."),
    click.option(flag("init_var_w"), type=NONNEGATIVE, default=_DEFAULTS.init_var_w, show_default="1/width",
                 help="Initial variance sigma_w^2 of w's entries."),
    click.option(flag("input_var"), type=POSITIVE, default=_DEFAULTS.input_var, show_default=True,
                 help="Input variance a = E[x^2] > 0."),
    click.option(flag("teacher"), type=FINITE, default=_DEFAULTS.teacher, show_default=True,
                 help="Teacher slope m* = E[xy]/E[x^2]."),
)


def hyperparameter_options(f):
    """The eight hyperparameter options, handed to the command as one `hyper` (a Hyperparameters)."""

    @functools.wraps(f)
    def wrapped(**kwargs):
        values = {name: kwargs.pop(name) for name in HYPER_FIELDS}
        return f(hyper=Hyperparameters(**values), **kwargs)

    return _HYPER_OPTIONS(wrapped)


time_grid_options = options(
    click.option("--times", type=TIMES, default=None,
                 help="Comma-separated times (GD, SGD: integer step counts), 'inf' for the end of training (solve)."),
    click.option("--t-max", type=POSITIVE, default=None, show_default="100",
                 help="Log-spaced grid: last time. The grid is t=0 then POINTS-1 log-spaced times in [T_MIN, T_MAX]."),
    click.option("--t-min", type=POSITIVE, default=None, show_default="T_MAX/1000; GD, SGD: 1",
                 help="Log-spaced grid: first positive time."),
    click.option("--points", type=IntegerType(2, 100_000), default=None, show_default="25",
                 help="Log-spaced grid: number of times including t=0, 2 to 100,000 (GD: duplicates after rounding "
                      "dropped)."),
)

output_options = options(
    click.option("--ntk-threshold", type=NTK_THRESHOLD, default=0.1, show_default=True,
                 help="|ntk_change| at or above this means feature learning (> 0)."),
    click.option("--alignment-threshold", type=ALIGNMENT_THRESHOLD, default=0.1, show_default=True,
                 help="Alignment / disalignment at or above this counts (in (0, 1))."),
    json_option(),
    click.option("--plot", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                 help="Write a 2x2 figure (m, NTK, alignment, loss vs t) to FILE (.png, .pdf, .svg, ...)."),
    quiet_option(),
)


def check_grid_and_plot(times, t_max, t_min, points, plot) -> None:
    """--times excludes the grid options; --plot needs a figure format matplotlib writes."""
    grid_opts = [name for name, v in (("--t-max", t_max), ("--t-min", t_min), ("--points", points))
                 if v is not None]
    if times is not None and grid_opts:
        raise click.UsageError(f"--times conflicts with {', '.join(grid_opts)}: give a list or a grid, not both")
    if plot is not None:
        from phasediag.plots.base import WRITABLE_FORMATS as PLOT_FORMATS

        suffix = os.path.splitext(plot)[1][1:].lower()
        if suffix and suffix not in PLOT_FORMATS:
            raise click.BadParameter(f"unsupported figure format '.{suffix}' (use one of "
                                     f"{', '.join(PLOT_FORMATS[:6])}, ...)", param_hint="'--plot'")


# ----------------------------------------------------------------------------------------------------------
# progress


def progress(quiet: bool):
    """A tqdm bar on a terminal (stderr), nothing under --quiet or in batch jobs. Returns (start, update, close)."""
    if quiet or not sys.stderr.isatty():
        return None, None, lambda: None
    from tqdm import tqdm

    bar = {}

    def start(total: int) -> None:
        tqdm.monitor_interval = 0  # no monitor thread: --workers forks, best done without other threads
        bar["tqdm"] = tqdm(total=total, unit="pt", unit_scale=True, leave=False, file=sys.stderr)

    def update(k: int) -> None:
        bar["tqdm"].update(k)

    def close() -> None:
        if "tqdm" in bar:
            bar["tqdm"].close()

    return start, update, close
