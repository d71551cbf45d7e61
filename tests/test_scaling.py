"""Infinite-width scaling exponents (docs/theory.md section 7), the named parametrizations and `phasediag limit`.

Expected values are exponents worked out by hand from docs/theory.md sections 3-5 (written next to each), slopes measured
on the exact finite-width solution of phasediag.core, or consequences of exact identities (AM-GM bounds,
the rescaling symmetries of the model) -- never the module's own output.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from fractions import Fraction as F

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from phasediag import cli
from phasediag.core import (
    HEALTH_FLAGS,
    LIMIT_PHASES,
    PARAMETRIZATIONS,
    Problem,
    check_exponents,
    exact,
    exact_limit,
    exact_limit_exponents,
    flow_state,
    invariants,
    limit_exponents,
    limit_health,
    limit_phase,
    loglog_slope,
    parametrization,
    typical_gram,
)

WIDTHS = np.logspace(2, 12, 11)
LIMIT_KEYS = {"ntk_init", "c", "ntk_final", "rho", "rho0", "alignment", "m0", "ntk_change", "zeta_inf"}


def quarter_lattice():
    """Exponent sets on a 1/4 lattice inside docs/theory.md section 8's ranges for d = 1e2 .. 1e12
    (kappa in [1e-8, 1e8]: |k| <= 2/3; sigma^2 in [1e-16, 1e4]: s in [-4/3, 1/3];
    eta in [1e-6, 1e6]: |e| <= 1/2)."""
    ks = es = [F(x, 4) for x in (-2, -1, 0, 1, 2)]
    ss = [F(x, 4) for x in (-4, -2, -1, 0, 1)]
    return itertools.product(ks, ss, ss, es, es)


def clean_asymptotics(s) -> bool:
    """The corrections to a pure power law are powers of d with exponent gaps |delta| (the NTK's two layer
    terms, delta = (ew + su) - (eu + sw)), |exp(rho)| (1 + rho^2 under the square root of Theta_inf) and
    |exp(A)| (zeta = A/sqrt(1 + A^2)). A gap of 1/4 bends the fitted slope by ~0.02 over 1e2..1e12, so the
    +-0.01 comparison uses the sets whose gaps are 0 (exact power laws) or >= 1/2."""
    k, su, sw, eu, ew = s
    rho = -(k + 1) + (eu + ew) / 2 - max(ew + su, eu + sw)  # exp(c) - exp(Theta0), by hand
    A = -(k + 1 + (su + sw) / 2)
    return all(g == 0 or abs(g) >= F(1, 2) for g in (ew + su - eu - sw, rho, A))


def core_point(width, s):
    """Invariants at width(s) with every hyperparameter d^exponent (prefactors 1), typical init, m* = a = 1."""
    kappa, vu, vw, lu, lw = (np.asarray(width, float) ** float(x) for x in s)
    return invariants(Problem(kappa, lu, lw, 1.0, 1.0, typical_gram(width, vu, vw)))


# --------------------------------------------------------------------------------------------------------
# formulas against the exact finite-width solution


def test_measured_slopes_match_exact_exponents_on_the_lattice():
    """Typical init: slopes of Theta0, Theta_inf, |ntk_change|, |zeta_inf| within +-0.01 of the exponents."""
    sets = [s for s in quarter_lattice() if clean_asymptotics(s)]
    assert len(sets) > 1000
    worst = {}
    for s in sets:
        for name, c in check_exponents(*s).items():
            assert c.points == len(WIDTHS), (s, name)
            worst[name] = max(worst.get(name, (0.0, None)), (abs(c.measured - float(c.exact)), s))
    assert set(worst) == {"ntk_init", "ntk_final", "ntk_change", "zeta_inf"}
    for name, (err, s) in worst.items():
        assert err <= 0.01, f"{name}: slope off by {err:.4f} at {[str(x) for x in s]}"


SPARSE_LATTICE = [s for s in itertools.islice(quarter_lattice(), 0, None, 97) if clean_asymptotics(s)]


@pytest.mark.parametrize("s", SPARSE_LATTICE)
def test_c_rho_and_alignment_exponents_measured_on_invariants(s):
    """exp(c), exp(rho) and exp(A) against slopes of c, 2c|m*|/Theta0 and |m*|/(kappa sqrt(G)) from the core."""
    inv = core_point(WIDTHS, s)
    lim = exact_limit_exponents(*s)
    assert abs(loglog_slope(WIDTHS, inv.c) - float(lim.c)) < 1e-9
    assert abs(loglog_slope(WIDTHS, 2 * inv.c / inv.ntk_init) - float(lim.rho)) < 0.01
    A = 1.0 / (inv.output_scale * np.sqrt(inv.gram.G))
    assert abs(loglog_slope(WIDTHS, A) - float(lim.alignment)) < 1e-9


@pytest.mark.parametrize("s", [
    (F(-1, 2), 0, 0, 0, 0),  # NTK: rho0 ~ rho ~ d^-1/2, random-sign NTK change ~ 1/d
    (0, 0, 0, -1, -1),  # lazy: m0 ~ d^1/2 diverges; the change ~ rho0^2 ~ 1/d beats rho^2 ~ 1/d^2
    (-1, 0, 0, 1, 1),  # mean field
    (F(-1, 2), -1, -1, 0, 0),  # small init: exp(rho) = 1/2 > 0, the NTK grows from a vanishing start
    (-1, 0, 0, 1, -1),  # docs/theory.md section 6's imbalanced "kernel, aligning" scaling
    (0, -1, 0, -1, -1),  # standard with a stable rate
])
def test_sampled_init_slopes(s):
    """Sampled (U, W, V), median over 32 seeds: within +-0.03 (sampling noise), m0 included."""
    found = check_exponents(*s, init="sampled")
    assert set(found) == {"ntk_init", "ntk_final", "ntk_change", "zeta_inf", "m0"}
    for name, c in found.items():
        assert abs(c.measured - float(c.exact)) < 0.03, (name, c)


def test_kernel_ntk_change_is_measured_at_1e_minus_24():
    """Lazy scaling, typical init: rho = 2c/Theta0 = 2 d^-1 / 2 = 1/d, so Theta_inf/Theta0 - 1 =
    sqrt(1 + d^-2) - 1 ~ d^-2/2 = 5e-25 at d = 1e12 -- far below float64 resolution of a subtraction."""
    inv = core_point(1e12, (0, 0, 0, -1, -1))
    end = flow_state(inv, np.inf)
    assert end.ntk / inv.ntk_init - 1 == 0.0  # the subtraction sees nothing
    found = check_exponents(0, 0, 0, -1, -1)["ntk_change"]
    assert found.exact == -2 and abs(found.measured + 2) < 1e-6


def test_out_of_float_range_gives_nan_slopes_without_warnings():
    """kappa = d^100 overflows float64 at every width: nothing to fit, no warning (warnings are errors)."""
    found = check_exponents(100, 0, 0, 0, 0)
    assert all(np.isnan(c.measured) and c.points == 0 for c in found.values())
    partial = check_exponents(30, 0, 0, -20, 0)  # Theta0 ~ d^61 fits in float64 only at the smallest widths
    assert 0 < partial["ntk_init"].points < len(WIDTHS)


def test_check_exponents_rejects_bad_arguments():
    with pytest.raises(ValueError):
        check_exponents(0, 0, 0, 0, 0, init="random")
    with pytest.raises(ValueError):
        check_exponents(0, 0, 0, 0, 0, widths=[10.0, 100.0])


# --------------------------------------------------------------------------------------------------------
# exact identities and boundaries


exponent = st.fractions(min_value=-3, max_value=3, max_denominator=12)
exponent_sets = st.tuples(exponent, exponent, exponent, exponent, exponent)


@settings(max_examples=200)
@given(exponent_sets, st.fractions(min_value=-2, max_value=2, max_denominator=12))
def test_rescaling_symmetries_leave_every_exponent_unchanged(s, x):
    """(kappa, u, eta_u) -> (kappa d^-x, u d^x, eta_u d^2x) leaves kappa u and the flow of kappa u . w unchanged;
    likewise for w. So no limit exponent may move."""
    k, su, sw, eu, ew = s
    ref = exact_limit(*s)
    for moved in ((k - x, su + 2 * x, sw, eu + 2 * x, ew), (k - x, su, sw + 2 * x, eu, ew + 2 * x)):
        other = exact_limit(*moved)
        assert (other.limit, other.phase, other.health) == (ref.limit, ref.phase, ref.health)


@settings(max_examples=200)
@given(exponent_sets, st.sampled_from(["typical", "sampled"]))
def test_exact_bounds_and_identities(s, init):
    """AM-GM: rho <= A and rho0 <= |cos(u0, w0)| ~ d^-1/2 (equal exponents for balanced layers); Theta_inf
    is the larger of Theta0 and c; m0 ~ kappa sqrt(d) sigma_u sigma_w = |m*| / (A sqrt(d))."""
    k, su, sw, eu, ew = s
    lim = exact_limit_exponents(*s, init=init)
    delta = (ew + su) - (eu + sw)
    assert lim.rho <= lim.alignment and (lim.rho == lim.alignment) == (delta == 0)
    assert lim.rho0 == F(-1, 2) - abs(delta) / 2
    assert lim.ntk_final == max(lim.ntk_init, lim.c) and lim.ntk_final >= lim.ntk_init
    assert lim.m0 == F(-1, 2) - lim.alignment
    assert lim.zeta_inf == min(lim.alignment, 0)
    assert all(isinstance(v, F) for v in lim)


@settings(max_examples=100)
@given(st.lists(exponent_sets, min_size=1, max_size=20), st.sampled_from(["typical", "sampled"]))
def test_float_version_is_vectorized_and_agrees_with_exact(sets, init):
    cols = [np.array([float(s[i]) for s in sets]) for i in range(5)]
    lim = limit_exponents(*cols, init=init)
    phase = limit_phase(*cols)
    health = limit_health(*cols)
    for j, s in enumerate(sets):
        ref = exact_limit(*s, init=init)
        for name in LIMIT_KEYS:
            assert lim._asdict()[name][j] == pytest.approx(float(getattr(ref.limit, name)), abs=1e-12)
        assert LIMIT_PHASES[phase[j]] == ref.phase
        assert tuple(f for f in HEALTH_FLAGS if health[f][j]) == ref.health


def test_float_version_broadcasts():
    lim = limit_exponents(np.linspace(-1, 0, 5)[:, None], 0.0, 0.0, np.linspace(0, 1, 3), 1.0)
    assert all(np.shape(v) == (5, 3) for v in lim)
    assert limit_phase(np.zeros((2, 4))).shape == (2, 4)
    with pytest.raises(ValueError):
        limit_exponents(np.nan)


def test_boundary_decided_exactly():
    """Mean field moved by the symmetries (x = 0.1 on u, 0.2 on w): rho is exactly 0 -> feature learning, but
    the float formula rounds it to -2.2e-16; the exact version and the tolerance both get it right."""
    s = (-1.3, 0.2, 0.4, 1.2, 1.4)
    assert float(limit_exponents(*s).rho) < 0  # the rounding the exact version must not be fooled by
    assert exact_limit(*s).limit.rho == 0 and exact_limit(*s).phase == "feature_learning"
    assert LIMIT_PHASES[limit_phase(*s)] == "feature_learning"
    assert LIMIT_PHASES[limit_phase(*s, tol=0.0)] == "kernel"


@pytest.mark.parametrize("s, phase, health", [
    # rho = -k - 1 at su = sw = 0, eu = ew = e; Theta0 = 2k + 1 + e; m0 = k + 1/2
    ((-1, 0, 0, 1, 1), "feature_learning", ()),  # rho = 0 exactly: finite NTK change
    ((-1 + F(1, 10**6), 0, 0, 1, 1), "kernel", ("unstable",)),  # rho = -1e-6, Theta0 = 2e-6
    ((-1 - F(1, 10**6), 0, 0, 1, 1), "feature_learning", ("frozen",)),  # rho = 1e-6, Theta0 = -2e-6
    # Theta0 = 1e-6 = c, rho = 0:
    ((-1, 0, 0, 1 + F(1, 10**6), 1 + F(1, 10**6)), "feature_learning", ("unstable",)),
    ((F(-1, 2), 0, 0, 0, 0), "kernel", ()),  # m0 exponent exactly 0: not divergent
    ((F(-1, 2) + F(1, 10**6), 0, 0, 0, 0), "kernel", ("unstable", "divergent_output")),  # Theta0 2e-6, m0 1e-6
])
def test_flags_at_and_next_to_boundaries(s, phase, health):
    got = exact_limit(*s)
    assert got.phase == phase and got.health == health


def test_exact_conversion():
    assert exact(1 / 3) == F(1, 3) and exact(0.1) == F(1, 10) and exact(-0.5) == F(-1, 2)
    assert exact("-1/2") == F(-1, 2) and exact(2) == 2 and exact(np.float64(0.25)) == F(1, 4)
    assert exact(F(1, 7)) == F(1, 7)
    for bad in (float("nan"), float("inf"), True):
        with pytest.raises(ValueError):
            exact(bad)


# --------------------------------------------------------------------------------------------------------
# named parametrizations


# (Theta0, c, rho, A, m0) exponents worked out by hand:
#   Theta0 = 2k + 1 + max(ew + su, eu + sw), c = k + (eu + ew)/2, rho = c - Theta0,
#   A = -(k + 1 + (su + sw)/2), m0 = k + 1/2 + (su + sw)/2
NAMED = {
    "ntk": ((F(-1, 2), 0, 0, 0, 0), (0, F(-1, 2), F(-1, 2), F(-1, 2), 0), "kernel", ()),
    "mean_field": ((-1, 0, 0, 1, 1), (0, 0, 0, 0, F(-1, 2)), "feature_learning", ()),
    "mup": ((0, -2, 0, -1, 1), (0, 0, 0, 0, F(-1, 2)), "feature_learning", ()),
    "standard": ((0, -1, 0, 0, 0), (1, 0, -1, F(-1, 2), 0), "kernel", ("unstable",)),
    "standard_stable": ((0, -1, 0, -1, -1), (0, -1, -1, F(-1, 2), 0), "kernel", ()),
    "lazy": ((0, 0, 0, -1, -1), (0, -1, -1, -1, F(1, 2)), "kernel", ("divergent_output",)),
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_parametrizations(name):
    exps, (theta0, c, rho, A, m0), phase, health = NAMED[name]
    p = parametrization(name)
    assert tuple(p.exponents) == exps and p.name == name and len(p.doc) > 200
    got = exact_limit(*p.exponents)
    assert (got.limit.ntk_init, got.limit.c, got.limit.rho, got.limit.alignment, got.limit.m0) == (
        theta0, c, rho, A, m0)
    assert got.phase == phase and got.health == health


def test_named_set_is_complete():
    assert set(PARAMETRIZATIONS) == set(NAMED)


def test_mup_is_mean_field_moved_by_the_symmetry():
    """kappa -> kappa d, sigma_u^2 -> sigma_u^2/d^2, eta_u -> eta_u/d^2 maps mean field onto muP: the same
    m(t) and Theta(t) at every finite width, not only the same exponents."""
    t = np.array([0.0, 0.3, 3.0, np.inf])
    mf, mup = (core_point(np.array([[1e2], [1e6], [1e11]]), parametrization(n).exponents)
               for n in ("mean_field", "mup"))
    a, b = flow_state(mf, t), flow_state(mup, t)
    np.testing.assert_allclose(b.m, a.m, rtol=1e-12)
    np.testing.assert_allclose(b.ntk, a.ntk, rtol=1e-12)


def test_standard_stable_has_the_largest_stable_global_rate():
    """SP with eta ~ d^e: exp(Theta_inf) = 1 + e, unstable for any e > -1."""
    assert exact_limit(0, -1, 0, -1, -1).health == ()
    assert exact_limit(0, -1, 0, F(-999, 1000), F(-999, 1000)).health == ("unstable",)


@pytest.mark.parametrize("x", [F(0), F(1, 4), F(1, 2), F(1), F(3, 2)])
def test_lazy_family_from_mean_field(x):
    """kappa x d^x on top of mean field with rates / d^2x: Theta0 stays O(1), rho = -x (kernel for x > 0),
    m0 ~ d^(x - 1/2) diverges for x > 1/2; x = 1/2 is the NTK parametrization, x = 1 the 'lazy' entry."""
    got = exact_limit(-1 + x, 0, 0, 1 - 2 * x, 1 - 2 * x)
    assert got.limit.ntk_init == 0 and got.limit.rho == -x
    assert got.phase == ("kernel" if x > 0 else "feature_learning")
    assert got.health == (("divergent_output",) if x > F(1, 2) else ())


def test_parametrization_lookup():
    assert parametrization("Mean-Field").name == "mean_field"
    with pytest.raises(KeyError, match="known: ntk, mean_field"):
        parametrization("sgd")


# --------------------------------------------------------------------------------------------------------
# phasediag limit


def run(*args: str):
    try:  # click < 8.2 mixes stderr into output unless told not to
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(cli.phasediag, ["limit", *args], prog_name="phasediag")


def run_json(*args: str) -> dict:
    res = run("--json", *args)
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    return json.loads(lines[0])


def test_cli_json_for_explicit_exponents():
    """kappa ~ d^-1/2, eta_u ~ d^1/2: Theta0 = -1 + 1 + max(0, 1/2) = 1/2, c = -1/2 + 1/4 = -1/4,
    rho = -3/4, A = -1/2, m0 = 0, rho0 = -1/2 - 1/4 = -3/4."""
    out = run_json("--output-scale-exp", "-1/2", "--lr-u-exp", "0.5")
    assert set(out) == {"param", "init", "inputs", "exponents", "phase", "health"}
    assert set(out["exponents"]) == LIMIT_KEYS
    assert out["param"] is None and out["init"] == "typical"
    assert out["inputs"] == {"output_scale": "-1/2", "init_var_u": "0", "init_var_w": "0", "lr_u": "1/2",
                             "lr_w": "0"}
    e = out["exponents"]
    assert (e["ntk_init"], e["c"], e["rho"], e["alignment"], e["m0"], e["rho0"]) == (
        "1/2", "-1/4", "-3/4", "-1/2", "0", "-3/4")
    assert e["ntk_change"] == "-3/2" and out["phase"] == "kernel" and out["health"] == ["unstable"]


def test_cli_defaults_are_all_zero():
    """k = s = e = 0: Theta0 ~ d, c ~ 1, rho ~ 1/d, A ~ 1/d, m0 ~ d^1/2."""
    out = run_json()
    assert set(out["inputs"].values()) == {"0"}
    assert (out["exponents"]["ntk_init"], out["exponents"]["rho"], out["exponents"]["m0"]) == ("1", "-1", "1/2")
    assert out["health"] == ["unstable", "divergent_output"]


@pytest.mark.parametrize("name", sorted(NAMED))
def test_cli_named(name):
    out = run_json("--param", name)
    _, _, phase, health = NAMED[name]
    assert out["param"] == name and out["phase"] == phase and out["health"] == list(health)


def test_cli_sampled_changes_the_ntk_change_exponent():
    """Lazy: typical 2 exp(rho) = -2, sampled 2 max(exp(rho), exp(rho0)) = 2 max(-1, -1/2) = -1."""
    assert run_json("--param", "lazy")["exponents"]["ntk_change"] == "-2"
    assert run_json("--param", "lazy", "--init", "sampled")["exponents"]["ntk_change"] == "-1"


@pytest.mark.parametrize("init", ["typical", "sampled"])
def test_cli_check(init):
    out = run_json("--param", "ntk", "--check", "--init", init)
    check = out["check"]
    assert check["widths"] == pytest.approx(list(WIDTHS)) and check["init"] == init
    expected = {"ntk_init", "ntk_final", "ntk_change", "zeta_inf"} | ({"m0"} if init == "sampled" else set())
    assert set(check["slopes"]) == expected
    for name, s in check["slopes"].items():
        assert s["exact"] == out["exponents"][name] and s["points"] == 11
        assert abs(s["measured"] - float(F(s["exact"]))) < 0.03


def test_cli_check_out_of_range_is_null():
    out = run_json("--output-scale-exp", "100", "--check")
    assert all(s["measured"] is None for s in out["check"]["slopes"].values())


def test_cli_table():
    res = run("--param", "mup", "--check")
    assert res.exit_code == 0, res.stderr
    text = res.stdout
    assert text.startswith("mup: ")
    assert "measured" in text and "feature learning" in text and "health:  healthy" in text
    assert "d^-2" in text  # init_var_u ~ d^-2
    res = run("--param", "standard")
    assert "unstable" in res.stdout and "measured" not in res.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--param", "sgd"], "known: ntk, mean_field, mup, standard, standard_stable, lazy"),
    (["--param", "ntk", "--lr-u-exp", "1"], "--param conflicts with --lr-u-exp"),
    (["--lr-w-exp", "abc"], "'abc' is not a number"),
    (["--init-var-u-exp", "nan"], "--init-var-u-exp"),
    (["--output-scale-exp", "1/0"], "--output-scale-exp"),
    (["--init", "random"], "--init"),
])
def test_cli_errors_exit_2(args, fragment):
    res = run(*args)
    assert res.exit_code == 2
    assert fragment in res.stderr


def test_cli_limit_help_is_fast():
    """`phasediag limit --help` imports neither numpy nor the core."""
    code = ("import sys\nfrom phasediag.cli import main\ntry:\n    main(['limit', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numpy', 'phasediag.core') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--param" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "[]"
