"""``phasediag limit``: the infinite-width limit of a scaling of the hyperparameters with the width, and its
text table."""

from __future__ import annotations

import click

from phasediag.cli.options import EXPONENT, flag, json_option, quiet_option
from phasediag.errors import BadInput as LibraryBadInput

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


@click.command("limit", epilog=LIMIT_EPILOG)
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
@json_option()
@quiet_option()
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
    notes = [f"{health} ({HEALTH_NOTES[health]})" for health in result["health"]]
    lines.append("health:  " + ("; ".join(notes) if notes else "healthy"))
    return "\n".join(lines)
