"""One hyperparameter point: ``phasediag solve`` (the exact solution) and ``phasediag simulate`` (trained
vectors), and their text tables."""

from __future__ import annotations

import contextlib
import math

import click

from phasediag.cli.options import (
    GRAM,
    HORIZON,
    NONNEGATIVE,
    SEED,
    FINITE,
    BadInput,
    IntegerType,
    check_grid_and_plot,
    debug,
    flag,
    hyperparameter_options,
    output_options,
    time_grid_options,
)
from phasediag.config.rules import ACTIVATIONS, DEFAULT_NODES, DEFAULT_SLOPE, MAX_NODES, MAX_SAMPLES, MIN_NODES

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


@click.command(epilog=SOLVE_EPILOG)
@hyperparameter_options
@click.option("--gram", type=GRAM, default=None,
              help="Initialize from an explicit Gram U=|u0|^2, W=|w0|^2, V=u0.w0 (needs V^2 <= U W).")
@click.option("--seed", type=SEED, default=None,
              help="Initialize from an exact sample of (U, W, V) at this width (reproducible).")
@click.option("--typical", is_flag=True, default=False,
              help="Typical initialization U = d sigma_u^2, W = d sigma_w^2, V = 0 (the default).")
@time_grid_options
@click.option("--optimizer", type=click.Choice(["flow", "gd"]), default="flow", show_default=True,
              help="flow: exact gradient flow; gd: exact discrete gradient descent (times are step counts).")
@click.option("--horizon", type=HORIZON, default=math.inf, show_default="inf",
              help="Training horizon T for the final/phase block (GD: integer steps).")
@output_options
def solve(hyper, gram, seed, typical, times, t_max, t_min, points, optimizer, horizon, ntk_threshold,
          alignment_threshold, as_json, plot, quiet):
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
    check_grid_and_plot(times, t_max, t_min, points, plot)

    from phasediag.engine.point import grid_times, solve_point

    with _point_errors():
        times = grid_times(times, t_max, t_min, points, steps=optimizer == "gd")
        result = solve_point(
            hyper, init=init, gram=gram, seed=seed, times=times, optimizer=optimizer, horizon=horizon,
            ntk_threshold=ntk_threshold, alignment_threshold=alignment_threshold,
        )
    _emit_point(result, plot, as_json, quiet, format_result)


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


@click.command(epilog=SIMULATE_EPILOG)
@hyperparameter_options
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the initial vectors (and, for SGD, of the dataset and the batch order).")
@click.option("--optimizer", type=click.Choice(["gd", "sgd", "flow"]), default="gd", show_default=True,
              help="gd: full-batch GD on the population loss; sgd: minibatch SGD on --samples points; "
                   "flow: the gradient flow (adaptive Dormand-Prince, rtol 1e-12).")
@click.option("--batch-size", type=IntegerType(1, MAX_SAMPLES), default=32, show_default=True,
              help="SGD minibatch size, at most --samples (each epoch: a fresh permutation, remainder dropped).")
@click.option("--samples", type=IntegerType(1, MAX_SAMPLES), default=1024, show_default=True,
              help=f"SGD dataset size n, at most {MAX_SAMPLES:,}: x ~ N(0, input_var), y = teacher x + noise.")
@click.option("--noise-var", type=NONNEGATIVE, default=0.0, show_default=True,
              help="SGD label-noise variance.")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="linear", show_default=True,
              help="Train f(x) = kappa sum_i u_i phi(w_i x) with this phi instead of the linear model (same vectors, "
                   "same task; population expectations by quadrature).")
@click.option("--slope", type=FINITE, default=DEFAULT_SLOPE, show_default=True,
              help="leaky_relu's slope for negative inputs.")
@click.option("--nodes", type=IntegerType(MIN_NODES, MAX_NODES), default=DEFAULT_NODES, show_default=True,
              help="Quadrature nodes per half-line of an activated network (its error estimate is reported).")
@time_grid_options
@output_options
def simulate(hyper, seed, optimizer, batch_size, samples, noise_var, activation, slope, nodes, times, t_max, t_min,
             points, ntk_threshold, alignment_threshold, as_json, plot, quiet):
    """Train the actual vectors u, w in R^d (GD, minibatch SGD or the gradient flow) and report what solve
    reports, measured: m, NTK, alignment, norms and loss per time, the frozen-NTK prediction m_lin, the
    imbalance Delta and Gram determinant G, and the phase label of the measured trajectory.

    The JSON's "init" holds the sampled vectors' Gram (U, W, V): 'phasediag solve --gram U,W,V' (with
    '--optimizer gd' for GD) is the exact prediction for the same network. Times are step counts for GD and SGD
    (default: t = 0 plus 24 log-spaced steps up to 100).
    """
    check_grid_and_plot(times, t_max, t_min, points, plot)
    from phasediag.engine.point import grid_times
    from phasediag.training.measure import simulate_point

    with _point_errors():
        times = grid_times(times, t_max, t_min, points, steps=optimizer != "flow")
        result = simulate_point(
            hyper, seed=seed, times=times,
            optimizer=optimizer, batch_size=batch_size, samples=samples, noise_var=noise_var,
            ntk_threshold=ntk_threshold, alignment_threshold=alignment_threshold,
            activation=activation, slope=slope, nodes=nodes,
        )
    _emit_point(result, plot, as_json, quiet, format_simulation)


@contextlib.contextmanager
def _point_errors():
    """The point engine's errors as command-line errors: a bad field names its flag; inputs beyond the
    supported numerical range are bad input (exit 2), said plainly."""
    from phasediag.engine.point import InputError, NumericalRangeError

    try:
        yield
    except InputError as e:
        raise click.BadParameter(e.message, param_hint=f"'{flag(e.field)}'") from None
    except NumericalRangeError as e:
        if debug():
            raise
        raise BadInput(str(e)) from None


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
        lines.append(f"flow:   (t = {horizon}) m = {_fmt(fin['flow_m'])}, NTK = {_fmt(fin['flow_ntk'])}, "
                     f"alignment = {_fmt(fin['flow_alignment'])}, ntk_change = {_fmt(fin['flow_ntk_change'])}")
    return "\n".join(lines)


def format_result(result) -> str:
    return format_table(result) + "\n\n" + format_summary(result)


def exact_command(result) -> str:
    """The 'phasediag solve' command giving the exact prediction for a simulated run (same Gram and times)."""
    p, ini = result["params"], result["init"]
    opts = [f"{flag(k)} {p[k]!r}" for k in ("width", "output_scale", "lr_u", "lr_w", "input_var", "teacher")]
    times = ",".join(str(t) for t in result["t"])
    steps = "" if p["optimizer"] == "flow" else " --optimizer gd"
    return (f"phasediag solve {' '.join(opts)} --gram {ini['U']!r},{ini['W']!r},{ini['V']!r}{steps} "
            f"--times {times}")


def _theory_line(result) -> str:
    """What the theory says about this network: the exact solve command (linear), the split solution (relu),
    or the linear model of the same output scale times the activation's gain (the network linearized at 0)."""
    p, fin = result["params"], result["final"]
    activation = p.get("activation", "linear")
    if activation == "linear":
        return f"exact:  {exact_command(result)}" + ("   (population GD, without minibatch noise)"
                                                      if p["optimizer"] == "sgd" else "")
    quadrature = f"; quadrature error {_fmt(fin.get('quadrature_error'))}"
    if "split" in result and result["split"] is None:
        return f"split:  the exact ReLU split solution cannot be evaluated at these values{quadrature}"
    if "split" in result:
        split = result["split"]
        first = split["first_crossing"]
        return (f"split:  the exact ReLU split solution has m = {_fmt(split['m'][-1])}, NTK = {_fmt(split['ntk'][-1])}, "
                f"alignment = {_fmt(split['alignment'][-1])} at the last time; it is exact until the first w_i "
                f"crosses 0 (t = {_fmt(first, none='never')}); {split['crossed'][-1]} of {p['width']} cross by the "
                f"end{quadrature}")
    return f"theory: no exact solution for {activation}{quadrature}"


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
        _theory_line(result),
    ]
    if fin["diverged"]:
        lines.append("note:   diverged (|u|^2 or |w|^2 above 1e80)")
    elif fin["not_converged"]:
        lines.append("note:   not converged at the last time (excess loss above 1% of its initial value)")
    return format_table(result) + "\n\n" + "\n".join(lines)
