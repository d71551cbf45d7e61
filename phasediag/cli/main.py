"""The ``phasediag`` command line.

Kept thin and fast to start: only click is imported at module level. numpy, the numerical core, matplotlib,
yaml and tqdm are imported inside the commands, so ``phasediag --help`` stays quick.

Exit status: 0 success, 1 internal error (message only; set PHASEDIAG_DEBUG=1 for the traceback),
2 bad input (a one-line message naming the option), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM, e.g.
a batch scheduler's time limit); an interrupted or terminated run cleans up after itself.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import click

from phasediag import __version__
from phasediag.config.hyperparameters import FIELDS as HYPER_FIELDS
from phasediag.config.hyperparameters import Hyperparameters
from phasediag.errors import BadInput as LibraryBadInput

DEBUG_ENV = "PHASEDIAG_DEBUG"



# ----------------------------------------------------------------------------------------------------------
# parameter types (pure Python: no numpy at parse time)


def _parse_float(text) -> float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    return float(str(text).strip())


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
        if math.isinf(v) and "inf" not in str(raw).lower():  # e.g. 1e400: beyond float range, not 'inf'
            fail(f"{raw} is beyond the floating-point range (about 1.8e308)")
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
        raw = value
        if self.integer:  # exact for integers beyond 2^53 written out in full
            try:
                n = int(str(value).strip())
            except ValueError:
                pass
            else:
                if self.minimum is not None and n < self.minimum:
                    self.fail(f"must be >= {self.minimum:g}, got {raw}", param, ctx)
                return n
        try:
            v = _parse_float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        v = self.check(v, raw, lambda msg: self.fail(msg, param, ctx))
        return int(v) if self.integer and math.isfinite(v) else v


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
            try:
                v = _parse_float(s)
            except (TypeError, ValueError):
                fail(f"{str(s).strip()!r} is not a number (in {value!r})")
            out.append(self.element.check(v, str(s).strip(), fail))
        return out


POSITIVE = RealType(0.0, strict=True)
NONNEGATIVE = RealType(0.0)
FINITE = RealType()
WIDTH = RealType(1.0, integer=True)
TIME = RealType(0.0, allow_inf=True)
HORIZON = RealType(0.0, strict=True, allow_inf=True)
TIMES = RealListType(TIME, name="T1,T2,...")
GRAM = RealListType(FINITE, length=3, name="U,W,V")


# ----------------------------------------------------------------------------------------------------------
# the group: one-line errors, exit codes

def flag(field: str) -> str:
    """The command-line flag of a library field name: lr_u -> --lr-u."""
    return "--" + field.replace("_", "-")


def _debug() -> bool:
    """PHASEDIAG_DEBUG set (and not 0): let unexpected exceptions show their traceback."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (scancel, a batch time limit) exits with 143 through the usual cleanup -- temporary files
    removed, worker processes killed -- instead of dying on the spot."""
    import signal

    def terminated(signum, frame):
        with contextlib.suppress(OSError):  # os.write: safe even if the signal interrupted a write to stderr
            os.write(2, b"Terminated\n")
        sys.exit(128 + signum)

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # not the main thread (an embedding program): leave it alone
            signal.signal(signal.SIGTERM, terminated)


class PhasediagGroup(click.Group):
    """A click group whose errors are one line and whose unexpected exceptions exit 1 without a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        _exit_cleanly_on_sigterm()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            if isinstance(e, _NO_ARGS_IS_HELP):  # bare `phasediag` (click >= 8.2): show the help
                e.show()
                sys.exit(e.exit_code)
            msg = " ".join(e.format_message().split())
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"Error: {msg}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except LibraryBadInput as e:  # the library's bad-input errors: one line, exit status 2
            click.echo(f"Error: {' '.join(str(e).split())}", err=True)
            sys.exit(2)
        except click.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
            click.echo("Interrupted", err=True)
            sys.exit(130)
        except OSError as e:  # the file system refused (a path under a file, permissions, a full disk)
            if _debug():
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"Error: cannot read or write {where}{e.strerror or e}", err=True)
            sys.exit(1)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if _debug():
                raise
            detail = " ".join(str(e).split()) or type(e).__name__
            click.echo(f"Error: internal error: {type(e).__name__}: {detail} "
                       f"(set {DEBUG_ENV}=1 for the traceback)", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=PhasediagGroup, no_args_is_help=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="phasediag", message="%(prog)s %(version)s")
def phasediag():
    """Exact phase diagrams of training regimes (kernel / feature learning / saddle) of a two-layer linear
    network, from the closed-form solution of its gradient flow and of discrete gradient descent.

    Exit status: 0 success, 1 internal error, 2 bad input.
    """


# ----------------------------------------------------------------------------------------------------------
# phasediag solve

SOLVE_EPILOG = """\b
Examples:
  phasediag solve                                   # defaults: a feature-learning (alignment) point
  phasediag solve --width 4000 --output-scale 0.00025 --lr-u 4000 --lr-w 0.00025 \\
                  --init-var-u 1 --init-var-w 1 --seed 1 --t-max 10   # kernel, aligning
  phasediag solve --seed 7 --teacher -2 --times 0,1,10,100,inf --json
  phasediag solve --optimizer gd --lr-u 2.3 --lr-w 0.2 --plot outputs/catapult.png   # GD catapult
"""


def _options(*decorators):
    """Apply click option decorators in the order listed (top to bottom in --help)."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


_HYPER = Hyperparameters()
_HYPER_OPTIONS = _options(
    click.option("--width", type=WIDTH, default=_HYPER.width, show_default=True,
                 help="Hidden width d (integer >= 1; 1e6 is accepted)."),
    click.option("--output-scale", type=POSITIVE, default=_HYPER.output_scale, show_default=True,
                 help="Output scale kappa > 0."),
    click.option("--lr-u", type=POSITIVE, default=_HYPER.lr_u, show_default=True,
                 help="Learning rate eta_u of the output layer u."),
    click.option("--lr-w", type=POSITIVE, default=_HYPER.lr_w, show_default=True,
                 help="Learning rate eta_w of the input layer w."),
    click.option("--init-var-u", type=NONNEGATIVE, default=_HYPER.init_var_u, show_default="1/width",
                 help="Initial variance sigma_u^2 of u's entries (0 = zero-initialized layer)."),
    click.option("--init-var-w", type=NONNEGATIVE, default=_HYPER.init_var_w, show_default="1/width",
                 help="Initial variance sigma_w^2 of w's entries."),
    click.option("--input-var", type=POSITIVE, default=_HYPER.input_var, show_default=True,
                 help="Input variance a = E[x^2] > 0."),
    click.option("--teacher", type=FINITE, default=_HYPER.teacher, show_default=True,
                 help="Teacher slope m* = E[xy]/E[x^2]."),
)


def MODEL_OPTIONS(f):
    """The eight hyperparameter options, handed to the command as one `hyper` (a Hyperparameters)."""
    import functools

    @functools.wraps(f)
    def wrapped(**kwargs):
        values = {name: kwargs.pop(name) for name in HYPER_FIELDS}
        return f(hyper=Hyperparameters(**values), **kwargs)

    return _HYPER_OPTIONS(wrapped)


TIME_GRID_OPTIONS = _options(
    click.option("--times", type=TIMES, default=None,
                 help="Comma-separated times (GD, SGD: integer step counts), 'inf' for the end of training (solve)."),
    click.option("--t-max", type=POSITIVE, default=None, show_default="100",
                 help="Log-spaced grid: last time. The grid is t=0 then POINTS-1 log-spaced times in [T_MIN, T_MAX]."),
    click.option("--t-min", type=POSITIVE, default=None, show_default="T_MAX/1000; GD, SGD: 1",
                 help="Log-spaced grid: first positive time."),
    click.option("--points", type=click.IntRange(min=2, max=100_000), default=None, show_default="25",
                 help="Log-spaced grid: number of times including t=0 (GD: duplicates after rounding dropped)."),
)

OUTPUT_OPTIONS = _options(
    click.option("--ntk-threshold", type=POSITIVE, default=0.1, show_default=True,
                 help="|ntk_change| at or above this means feature learning."),
    click.option("--alignment-threshold", type=POSITIVE, default=0.1, show_default=True,
                 help="Alignment / disalignment at or above this counts."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object (one line) instead of the table."),
    click.option("--plot", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                 help="Write a 2x2 figure (m, NTK, alignment, loss vs t) to FILE (.png, .pdf, .svg, ...)."),
    click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (and the JSON with --json)."),
)


@phasediag.command(epilog=SOLVE_EPILOG)
@MODEL_OPTIONS
@click.option("--gram", type=GRAM, default=None,
              help="Initialize from an explicit Gram U=|u0|^2, W=|w0|^2, V=u0.w0 (needs V^2 <= U W).")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=None,
              help="Initialize from an exact sample of (U, W, V) at this width (reproducible).")
@click.option("--typical", is_flag=True, default=False,
              help="Typical initialization U = d sigma_u^2, W = d sigma_w^2, V = 0 (the default).")
@TIME_GRID_OPTIONS
@click.option("--optimizer", type=click.Choice(["flow", "gd"]), default="flow", show_default=True,
              help="flow: exact gradient flow; gd: exact discrete gradient descent (times are step counts).")
@click.option("--horizon", type=HORIZON, default=math.inf, show_default="inf",
              help="Training horizon T for the final/phase block (GD: integer steps).")
@OUTPUT_OPTIONS
def solve(hyper, gram, seed, typical, times, t_max, t_min, points, optimizer, horizon, ntk_threshold, alignment_threshold, as_json, plot,
          quiet):
    """Solve one hyperparameter point exactly: the trajectory m(t), NTK Theta(t), alignment zeta(t), layer
    norms, excess loss and the kernel (frozen-NTK) prediction m_lin(t), then the end-of-training block
    (phase label, tau, t_learn; with GD its outcome).

    Defaults give a feature-learning point: typical initialization with U = W = 1 (init variances 1/width),
    kappa = 1, eta = 0.1, a = 1, m* = 1, on t = 0 plus 24 log-spaced times in [0.1, 100].
    """
    chosen = [name for name, given in (("--gram", gram is not None), ("--seed", seed is not None),
                                       ("--typical", typical)) if given]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} are mutually exclusive: choose one initialization")
    init = {"--gram": "gram", "--seed": "seed"}.get(chosen[0], "typical") if chosen else "typical"
    _check_grid_and_plot(times, t_max, t_min, points, plot)

    from phasediag.engine.point import InputError, NumericalRangeError, grid_times, solve_point

    try:
        times = grid_times(times, t_max, t_min, points, steps=optimizer == "gd")
        result = solve_point(
            hyper, init=init, gram=gram, seed=seed, times=times, optimizer=optimizer, horizon=horizon, ntk_threshold=ntk_threshold,
            alignment_threshold=alignment_threshold,
        )
    except InputError as e:
        raise click.BadParameter(e.message, param_hint=f"'{flag(e.field)}'") from None
    except NumericalRangeError as e:  # inputs beyond the supported range: bad input (exit 2), said plainly
        if _debug():
            raise
        raise BadInput(str(e)) from None

    _emit_point(result, plot, as_json, quiet, format_result)


def _check_grid_and_plot(times, t_max, t_min, points, plot) -> None:
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


def _emit_point(result: dict, plot, as_json: bool, quiet: bool, formatter) -> None:
    """Draw the trajectory figure if asked, then print the JSON or the table."""
    if plot is not None:
        from phasediag.plots.trajectory import trajectory_figure

        try:
            trajectory_figure(result, plot)
        except OSError as e:
            raise click.FileError(plot, hint=e.strerror or str(e)) from None

    if as_json:
        import json

        click.echo(json.dumps(result, allow_nan=False))
    elif not quiet:
        click.echo(formatter(result))
    if plot is not None and not quiet:
        click.echo(f"wrote {plot}", err=True)


# ----------------------------------------------------------------------------------------------------------
# phasediag simulate

SIMULATE_EPILOG = """\b
Examples:
  phasediag simulate --width 1000 --seed 3 --times 0,10,100,1000 --json
  phasediag simulate --optimizer sgd --batch-size 8 --samples 256 --noise-var 0.1 --t-max 2000
  # the exact prediction for the same network: its sampled Gram, printed under "init"
  phasediag simulate --width 50 --json | jq -r '.init | "\\(.U),\\(.W),\\(.V)"' \\
    | xargs -I{} phasediag solve --width 50 --optimizer gd --gram {} --json
"""


@phasediag.command(epilog=SIMULATE_EPILOG)
@MODEL_OPTIONS
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True,
              help="Seed of the initial vectors (and, for SGD, of the dataset and the batch order).")
@click.option("--optimizer", type=click.Choice(["gd", "sgd", "flow"]), default="gd", show_default=True,
              help="gd: full-batch GD on the population loss; sgd: minibatch SGD on --samples points; "
                   "flow: the gradient flow (adaptive Dormand-Prince, rtol 1e-12).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="SGD minibatch size (each epoch: a fresh permutation, remainder dropped).")
@click.option("--samples", type=click.IntRange(min=1, max=100_000_000), default=1024, show_default=True,
              help="SGD dataset size n: x ~ N(0, input_var), y = teacher x + noise.")
@click.option("--noise-var", type=NONNEGATIVE, default=0.0, show_default=True,
              help="SGD label-noise variance.")
@TIME_GRID_OPTIONS
@OUTPUT_OPTIONS
def simulate(hyper, seed, optimizer, batch_size, samples, noise_var, times, t_max, t_min, points, ntk_threshold, alignment_threshold,
             as_json, plot, quiet):
    """Train the actual vectors u, w in R^d (GD, minibatch SGD or the gradient flow) and report what solve
    reports, measured: m, NTK, alignment, norms and loss per time, the frozen-NTK prediction m_lin, the
    imbalance Delta and Gram determinant G, and the phase label of the measured trajectory.

    The JSON's "init" holds the sampled vectors' Gram (U, W, V): 'phasediag solve --gram U,W,V' (with
    '--optimizer gd' for GD) is the exact prediction for the same network. Times are step counts for GD and SGD
    (default: t = 0 plus 24 log-spaced steps up to 100).
    """
    _check_grid_and_plot(times, t_max, t_min, points, plot)
    from phasediag.engine.point import InputError, NumericalRangeError, grid_times
    from phasediag.training.measure import simulate_point

    try:
        times = grid_times(times, t_max, t_min, points, steps=optimizer != "flow")
        result = simulate_point(
            hyper, seed=seed, times=times,
            optimizer=optimizer, batch_size=batch_size, samples=samples, noise_var=noise_var,
            ntk_threshold=ntk_threshold, alignment_threshold=alignment_threshold,
        )
    except InputError as e:
        raise click.BadParameter(e.message, param_hint=f"'{flag(e.field)}'") from None
    except NumericalRangeError as e:  # inputs beyond the supported range: bad input (exit 2), said plainly
        if _debug():
            raise
        raise BadInput(str(e)) from None
    _emit_point(result, plot, as_json, quiet, format_simulation)


# ----------------------------------------------------------------------------------------------------------
# text output


def _fmt(v, *, none="-") -> str:
    if v is None:
        return none
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    return f"{v:.6g}"


def format_table(result) -> str:
    """The trajectory as an aligned text table: t, m, NTK, alignment, loss, m_lin (non-finite values: -)."""
    cols = [("t", "t"), ("m", "m"), ("NTK", "ntk"), ("alignment", "alignment"), ("loss", "loss"),
            ("m_lin", "m_lin")]
    rows = [[_fmt(t, none="inf") for t in result["t"]]]
    rows += [[_fmt(v) for v in result[key]] for _, key in cols[1:]]
    widths = [max(len(head), *(len(s) for s in col)) for (head, _), col in zip(cols, rows)]
    lines = ["  ".join(head.rjust(w) for (head, _), w in zip(cols, widths))]
    for i in range(len(result["t"])):
        lines.append("  ".join(col[i].rjust(w) for col, w in zip(rows, widths)))
    return "\n".join(lines)


def format_summary(result) -> str:
    """A short block: initial state, state at the horizon, phase label, time scales (and the GD outcome)."""
    p, ini, fin = result["params"], result["init"], result["final"]
    how = {"typical": "typical", "seed": f"sampled, seed {p.get('seed')}", "gram": "explicit Gram"}[p["init"]]
    horizon = "inf" if fin["horizon"] is None else _fmt(fin["horizon"])
    mech = f" (mechanism: {fin['mechanism']})" if fin["mechanism"] else ""
    th = fin["thresholds"]
    lines = [
        f"init:   U = {_fmt(ini['U'])}, W = {_fmt(ini['W'])}, V = {_fmt(ini['V'])} ({how}); "
        f"m0 = {_fmt(ini['m'])}, NTK0 = {_fmt(ini['ntk'])}, alignment0 = {_fmt(ini['alignment'])}",
        f"final:  (t = {horizon}{', GD' if p['optimizer'] == 'gd' else ''}) m = {_fmt(fin['m'])}, "
        f"NTK = {_fmt(fin['ntk'])}, alignment = {_fmt(fin['alignment'])}, ntk_change = {_fmt(fin['ntk_change'])}",
        f"phase:  {fin['phase'].replace('_', ' ')}{mech}  [label {fin['label']}; thresholds ntk {_fmt(th['ntk'])}, "
        f"alignment {_fmt(th['alignment'])}]" + ("   (gradient-flow label)" if p["optimizer"] == "gd" else ""),
        f"times:  tau = {_fmt(fin['tau'], none='inf')}, t_learn (90% of the excess loss gone) = "
        f"{_fmt(fin['t_learn'], none='inf')}" + ("   (gradient flow)" if p["optimizer"] == "gd" else ""),
    ]
    if fin.get("not_converged"):
        lines.append("note:   not converged at the horizon (excess loss above 1% of its initial value)")
    if "gd_outcome" in fin:
        lines.append(f"GD:     {fin['gd_outcome']}")
    return "\n".join(lines)


def format_result(result) -> str:
    return format_table(result) + "\n\n" + format_summary(result)


def exact_command(result) -> str:
    """The 'phasediag solve' command giving the exact prediction for a simulated run (same Gram and times)."""
    p, ini = result["params"], result["init"]
    opts = [f"--{k.replace('_', '-')} {p[k]!r}" for k in ("width", "output_scale", "lr_u", "lr_w", "input_var",
                                                         "teacher")]
    times = ",".join(str(t) for t in result["t"])
    steps = "" if p["optimizer"] == "flow" else " --optimizer gd"
    return (f"phasediag solve {' '.join(opts)} --gram {ini['U']!r},{ini['W']!r},{ini['V']!r}{steps} "
            f"--times {times}")


def format_simulation(result) -> str:
    """Table and summary of a simulated run (measured quantities)."""
    p, ini, fin = result["params"], result["init"], result["final"]
    how = {"gd": "GD on the population loss", "flow": "gradient flow (DOPRI5)",
           "sgd": f"SGD, batch {p.get('batch_size')} of {p.get('samples')} samples, noise var "
                  f"{_fmt(p.get('noise_var'))}"}[p["optimizer"]]
    mech = f" (mechanism: {fin['mechanism']})" if fin["mechanism"] else ""
    lines = [
        f"init:   U = {_fmt(ini['U'])}, W = {_fmt(ini['W'])}, V = {_fmt(ini['V'])} (sampled vectors, width "
        f"{p['width']}, seed {p['seed']}); m0 = {_fmt(ini['m'])}, NTK0 = {_fmt(ini['ntk'])}",
        f"final:  (t = {_fmt(fin['horizon'])}, {how}) m = {_fmt(fin['m'])}, NTK = {_fmt(fin['ntk'])}, "
        f"alignment = {_fmt(fin['alignment'])}, ntk_change = {_fmt(fin['ntk_change'])}",
        f"phase:  {fin['phase'].replace('_', ' ')}{mech}  [measured label {fin['label']}]",
        f"drift:  imbalance Delta {_fmt(result['imbalance'][0])} -> {_fmt(result['imbalance'][-1])}",
        f"exact:  {exact_command(result)}" + ("   (population GD, without minibatch noise)"
                                               if p["optimizer"] == "sgd" else ""),
    ]
    if fin["diverged"]:
        lines.append("note:   diverged (|u|^2 or |w|^2 above 1e80)")
    elif fin["not_converged"]:
        lines.append("note:   not converged at the last time (excess loss above 1% of its initial value)")
    return format_table(result) + "\n\n" + "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# sweeps: phasediag run / plot / export / merge


class BadInput(click.ClickException):
    """Bad config, bad results directory or bad option value found after parsing: exit status 2."""

    exit_code = 2


def _progress(quiet: bool):
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


def _echo_summary(summary, as_json: bool, quiet: bool) -> None:
    """Print a lifecycle Summary: its JSON object, or its text."""
    import json

    if as_json:
        click.echo(json.dumps(summary.to_dict(), allow_nan=False))
    elif not quiet:
        if summary.status == "up to date":
            click.echo(f"{summary.out}: up to date (config {summary.config_hash}), nothing to do")
            return
        click.echo(summary.text)


def _shard_option(shard):
    from phasediag.jobs.lifecycle import parse_shard

    try:
        return parse_shard(shard)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--shard'") from None


def _run_job(config, out, as_json: bool, quiet: bool, **how) -> None:
    """Run any job kind through the lifecycle, print its summary (bad input: one line, exit 2)."""
    from phasediag.config.reader import ConfigError
    from phasediag.jobs import lifecycle

    flags = {"validate", "experiment"}
    modes = {k: how.pop(k) for k in flags if k in how}
    start, update, close = _progress(quiet or as_json)
    options = lifecycle.Options(progress_total=start, progress=update, **how)
    try:
        _, summary = lifecycle.run(config, out=lifecycle.DEFAULT if out is None else out, options=options,
                                   **modes)
    except lifecycle.OptionError as e:
        raise BadInput(f"{flag(e.field)}: {e.message}") from None
    except ConfigError as e:
        raise BadInput(str(e)) from None
    finally:
        close()
    _echo_summary(summary, as_json, quiet)


RUN_EPILOG = """\b
Examples:
  phasediag run configs/1_width_vs_init.yaml                 # -> outputs/width_vs_init/
  phasediag run configs/7_gd_lr_vs_width.yaml --workers 2 --json
  phasediag run configs/big.yaml --shard 3/100      # -> outputs/big/shard-0003-of-0100/ (examples/slurm/)
"""


@phasediag.command(epilog=RUN_EPILOG)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory.  [default: outputs/<name>/, or outputs/<name>/shard-K-of-N/]")
@click.option("--shard", default=None, metavar="K/N",
              help="Evaluate only part K of N of the grid (cluster arrays); join the parts with 'merge'.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel workers: forked processes on Linux (threads elsewhere); results are bit-identical "
                   "for any number.")
@click.option("--resume", is_flag=True, help="Reuse finished chunks of an interrupted run; skip a finished one.")
@click.option("--no-plot", is_flag=True, help="Write results.npz and meta.json only.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=131072, show_default=True,
              help="Grid points per vectorized chunk (bounds memory; does not change any result).")
@click.option("--checkpoint-every", type=RealType(0.0), default=5.0, show_default=True, metavar="SECONDS",
              help="Save finished chunks for --resume at most this often (0: after every chunk).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (paths, counts, timings).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
def run(config, out, shard, workers, resume, no_plot, chunk_size, checkpoint_every, as_json, quiet):
    """Evaluate a YAML sweep CONFIG on its grid and write results.npz, meta.json and the figures.

    Outputs are written under temporary names and renamed into place: an interrupted or failed run never
    leaves a partial results.npz (finished chunks are kept in .partial-*/ for --resume).
    """
    _run_job(config, out, as_json, quiet, shard=_shard_option(shard), workers=workers, resume=resume,
             plot=not no_plot, chunk_size=chunk_size, checkpoint_every=checkpoint_every)


def _formats(value):
    if value is None:
        return None
    from phasediag.config.sweep import FORMATS

    items = [v.strip().lower() for v in value.split(",")]
    bad = [v for v in items if v not in FORMATS]
    if bad:
        raise click.BadParameter(f"unknown format {bad[0]!r}; allowed: {', '.join(FORMATS)}",
                                 param_hint="'--formats'")
    return items


@phasediag.command("plot")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--formats", default=None, metavar="png,pdf,svg", help="Figure formats.  [default: the config's]")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as a JSON list.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
def plot_command(directory, formats, as_json, quiet):
    """Re-render the figures of a results DIRECTORY (from results.npz and meta.json)."""
    from phasediag.config.reader import ConfigError
    from phasediag.jobs import lifecycle

    formats = _formats(formats)
    try:
        paths = [str(p) for p in lifecycle.plot(directory, formats)]
    except ConfigError as e:
        raise BadInput(str(e)) from None
    _echo_paths(paths, as_json, quiet)


def _echo_paths(paths, as_json: bool, quiet: bool) -> None:
    import json

    if as_json:
        click.echo(json.dumps(paths))
    elif not quiet:
        for p in paths:
            click.echo(f"wrote {p}")


@phasediag.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--csv", "as_csv", is_flag=True, required=True, help="Write tidy CSV tables (one row per point).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="CSV path.  [default: DIRECTORY/<name>.csv; trajectories in <name>_trajectories.csv]")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as a JSON list.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
def export_command(directory, as_csv, out, as_json, quiet):
    """Export a results DIRECTORY as tidy CSV: axis values and every metric per grid point."""
    from phasediag.config.reader import ConfigError
    from phasediag.jobs import lifecycle

    try:
        paths = lifecycle.export_csv(directory, out)
    except ConfigError as e:
        raise BadInput(str(e)) from None
    _echo_paths(paths, as_json, quiet)


@phasediag.command("merge")
@click.argument("directories", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory of the joined result.")
@click.option("--no-plot", is_flag=True, help="Do not draw the figures.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
def merge_command(directories, out, no_plot, as_json, quiet):
    """Join the shard DIRECTORIES of one config (written by 'run --shard K/N' or 'validate --shard K/N') into
    one result."""
    from phasediag.config.reader import ConfigError
    from phasediag.jobs import lifecycle

    try:
        summary = lifecycle.merge(list(directories), out, plot=not no_plot)
    except ConfigError as e:
        raise BadInput(str(e)) from None
    _echo_summary(summary, as_json, quiet)


# ----------------------------------------------------------------------------------------------------------
# phasediag limit: the infinite-width limit of a scaling of the hyperparameters with the width


class ExponentType(click.ParamType):
    """A width exponent, kept exact (phasediag.engine.limit.to_exponent: -1/2 as written, 0.25 as a fraction)."""

    name = "exponent"

    def convert(self, value, param, ctx):
        from phasediag.engine.limit import to_exponent

        try:
            return to_exponent(param.name if param is not None else "exponent", value)
        except LibraryBadInput as e:
            self.fail(e.message if hasattr(e, "message") else str(e), param, ctx)


EXPONENT = ExponentType()
LIMIT_ROWS = (  # (exponent field, row label)
    ("ntk_init", "Theta0           initial NTK"),
    ("c", "c                kappa sqrt(eta_u eta_w)"),
    ("ntk_final", "Theta_inf        final NTK"),
    ("rho", "rho              2c|m*|/Theta0"),
    ("rho0", "rho0             2c|m0|/Theta0 (sampled init)"),
    ("alignment", "A                |m*|/(kappa sqrt(G))"),
    ("m0", "|m0|             initial output (sampled init)"),
    ("ntk_change", "|ntk_change|     Theta_inf/Theta0 - 1"),
    ("zeta_inf", "|zeta_inf|       final alignment"),
)
HEALTH_NOTES = {
    "unstable": "Theta_inf grows with d: GD with O(1) steps diverges",
    "frozen": "Theta_inf vanishes: nothing is learned in O(1) steps",
    "divergent_output": "the sampled initial output m0 grows with d",
}

LIMIT_EPILOG = """\b
Examples:
  phasediag limit --param mean_field                  # feature learning, healthy
  phasediag limit --output-scale-exp -1/2 --check     # NTK parametrization, with measured slopes
  phasediag limit --param standard --json             # kernel, unstable
  phasediag limit --param lazy --init sampled --check
"""


def _phase_line(result: dict) -> str:
    rho = result["exponents"]["rho"]
    if result["phase"] == "kernel":
        return f"kernel  (exp(rho) = {rho} < 0: the NTK freezes as d grows)"
    how = "changes by a finite factor" if rho == "0" else "grows from a vanishing start"
    return f"feature learning  (exp(rho) = {rho} >= 0: the NTK {how})"


def format_limit(result: dict) -> str:
    """A readable table of the limit exponents (with measured slopes under --check), phase and health."""
    from phasediag.core.scaling import PARAMETRIZATIONS

    head = ", ".join(f"{hp} ~ d^{x}" for hp, x in result["inputs"].items())
    lines = []
    if result["param"] is not None:
        lines.append(f"{result['param']}: {PARAMETRIZATIONS[result['param']].summary}")
    lines += [head + f"   ({result['init']} init)", ""]
    slopes = result.get("check", {}).get("slopes", {})
    width = max(len(label) for _, label in LIMIT_ROWS)
    lines.append(f"{'quantity'.ljust(width)}  {'exponent':>8}" + ("  measured" if "check" in result else ""))
    for name, label in LIMIT_ROWS:
        row = f"{label.ljust(width)}  {result['exponents'][name]:>8}"
        if "check" in result:
            measured = slopes.get(name, {}).get("measured")
            row += f"  {'-' if measured is None else f'{round(measured, 4) + 0.0:+.4f}':>8}"
        lines.append(row)
    if "check" in result:
        c = result["check"]
        seeds = f", median over {c['seeds']} seeds" if c["seeds"] else ""
        lines.append(f"(measured: least-squares log-log slopes of the exact solution over d = "
                     f"{c['widths'][0]:.0e} .. {c['widths'][-1]:.0e}, {len(c['widths'])} widths{seeds})")
        short = [f"{name} on {s['points']}" for name, s in slopes.items() if s["points"] < len(c["widths"])]
        if short:
            lines.append(f"(fitted on fewer widths, the others leave the float64 range: {', '.join(short)}; "
                         "- = fewer than 3)")
    lines += ["", f"phase:   {_phase_line(result)}"]
    notes = [f"{flag} ({HEALTH_NOTES[flag]})" for flag in result["health"]]
    lines.append("health:  " + ("; ".join(notes) if notes else "healthy"))
    return "\n".join(lines)


@phasediag.command("limit", epilog=LIMIT_EPILOG)
@click.option("--output-scale-exp", "output_scale", type=EXPONENT, default=None, metavar="K",
              help="kappa ~ d^K (a number or a fraction such as -1/2).  [default: 0]")
@click.option("--init-var-u-exp", "init_var_u", type=EXPONENT, default=None, metavar="SU",
              help="sigma_u^2 ~ d^SU.  [default: 0]")
@click.option("--init-var-w-exp", "init_var_w", type=EXPONENT, default=None, metavar="SW",
              help="sigma_w^2 ~ d^SW.  [default: 0]")
@click.option("--lr-u-exp", "lr_u", type=EXPONENT, default=None, metavar="EU", help="eta_u ~ d^EU.  [default: 0]")
@click.option("--lr-w-exp", "lr_w", type=EXPONENT, default=None, metavar="EW", help="eta_w ~ d^EW.  [default: 0]")
@click.option("--param", default=None, metavar="NAME",
              help="A named parametrization: ntk, mean_field, mup, standard, standard_stable, lazy.")
@click.option("--init", type=click.Choice(["typical", "sampled"]), default="typical", show_default=True,
              help="Initialization for the NTK-change exponent and --check (sampled: random Gram, random m0).")
@click.option("--check", is_flag=True,
              help="Also measure the exponents on the exact finite-width solution (d = 1e2 .. 1e12).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (one line) instead of the table.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (and the JSON with --json).")
def limit(output_scale, init_var_u, init_var_w, lr_u, lr_w, param, init, check, as_json, quiet):
    """The infinite-width limit of hyperparameters scaled as powers of the width d (docs/theory.md section 7):
    exact exponents of the NTK, rho = 2c|m*|/Theta0, the alignment ratio A and m0; the phase (kernel if
    exp(rho) < 0, else feature learning) and health (unstable, frozen, divergent_output), decided exactly.
    Prefactors do not matter. Without options: every exponent 0.
    """
    from phasediag.engine.limit import exponents_of, limit_result

    given = {"output_scale_exp": output_scale, "init_var_u_exp": init_var_u, "init_var_w_exp": init_var_w,
             "lr_u_exp": lr_u, "lr_w_exp": lr_w}
    try:
        name, exps = exponents_of(param, given)
    except LibraryBadInput as e:
        if getattr(e, "field", None) == "param" and "conflicts" in str(e):
            message = e.message
            for field in given:  # the library names fields; say the flags
                message = message.replace(field, flag(field))
            raise click.UsageError(f"--param {message}") from None
        raise click.BadParameter(e.message, param_hint=f"'{flag(e.field)}'") from None
    result = limit_result(name, exps, init, check)
    if as_json:
        import json

        click.echo(json.dumps(result, allow_nan=False))
    elif not quiet:
        click.echo(format_limit(result))


# ----------------------------------------------------------------------------------------------------------
# phasediag validate

VALIDATE_EPILOG = """\b
Examples:
  phasediag validate configs/1_width_vs_init.yaml                  # -> outputs/width_vs_init/validate/
  phasediag validate configs/7_gd_lr_vs_width.yaml --points 40 --workers 2 --json
  phasediag validate configs/1_width_vs_init.yaml --shard 2/8 --out v/2 && phasediag merge v/* --out v/all
"""


@phasediag.command(epilog=VALIDATE_EPILOG)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--points", type=click.IntRange(min=1, max=100_000), default=24, show_default=True,
              help="Grid points to simulate, spread over the predicted phases (GD: outcomes too).")
@click.option("--max-width", type=WIDTH, default=10_000, show_default=True,
              help="Only points of at most this width are simulated (the vectors are stored).")
@click.option("--method", type=click.Choice(["gd", "flow"]), default="gd", show_default=True,
              help="flow configs: gd = GD at a small step (its discretization error is the deviation), "
                   "flow = Dormand-Prince integration of the flow. GD configs always use GD.")
@click.option("--step", type=RealType(0.0, strict=True), default=0.01, show_default=True,
              help="flow configs, --method gd: a Theta_max times the learning-rate factor (the step size).")
@click.option("--max-steps", type=click.IntRange(min=1, max=10_000_000), default=200_000, show_default=True,
              help="Cap on simulated steps per point (GD configs: the exact map is compared at the same step).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory.  [default: outputs/<name>/validate/, or .../shard-K-of-N/]")
@click.option("--shard", default=None, metavar="K/N",
              help="Simulate only part K of N of the selected points; join the parts with 'merge'.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes simulating points in parallel (results are bit-identical for any number).")
@click.option("--no-plot", is_flag=True, help="Write validation.json and meta.json only.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (with every point's row).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no table.")
def validate(config, points, max_width, method, step, max_steps, out, shard, workers, no_plot, as_json, quiet):
    """Check the closed form against simulated training on points of a sweep CONFIG.

    Points are chosen over the predicted phases; each is simulated at its configured width from vectors seeded
    by (config seed, grid index) and compared with the exact solution for the same vectors: per point the map
    label, the predicted and measured labels, NTK change and alignment, and the worst deviation over the path.
    Writes validation.json, meta.json and two figures (markers coloured by measured phase over the predicted
    map; predicted vs measured). Exit status 0 also when labels differ: read the report.
    """
    from phasediag.studies.validation import Settings

    settings = Settings(points=points, max_width=max_width, step=step, max_steps=max_steps, method=method)
    _run_job(config, out, as_json, quiet, shard=_shard_option(shard), workers=workers, plot=not no_plot,
             settings=settings, validate=True)


# ----------------------------------------------------------------------------------------------------------
# phasediag experiment

EXPERIMENT_EPILOG = """\b
Examples:
  phasediag experiment configs/12_nonlinear_digits.yaml      # needs: pip install '.[experiments]'
  phasediag experiment configs/11_gd_vs_sgd.yaml --workers 2 --json
"""


@phasediag.command(epilog=EXPERIMENT_EPILOG)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory.  [default: outputs/<name>/]")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes training in parallel (results are bit-identical for any number).")
@click.option("--no-plot", is_flag=True, help="Write the results and meta.json only.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (paths, timings, findings).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
def experiment(config, out, workers, no_plot, as_json, quiet):
    """Run a simulated-training study from a YAML CONFIG whose top-level key 'experiment' names it:
    'nonlinear' (a tanh / ReLU two-layer network on scikit-learn's digits: NTK change, alignment, test error
    against init scale) or 'sgd_drift' (the linear model under SGD vs GD: drift of the imbalance Delta and the
    alignment across batch sizes and learning rates).
    """
    _run_job(config, out, as_json, quiet, workers=workers, plot=not no_plot, experiment=True)


def main(argv=None):
    """Console-script entry point."""
    return phasediag.main(args=argv, prog_name="phasediag")


if __name__ == "__main__":  # pragma: no cover
    main()
