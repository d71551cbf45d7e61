"""Accuracy of the float64 core against the independent high-precision reference (docs/theory.md section 8).

Every expected value comes from tests/reference.py (mpmath, precision checked at two levels), never from
the core.  Tolerances (tests/reference.py: ``state_tolerances``):
- Theta, |u|^2, |w|^2, ntk_change: relative 1e-9, however small ntk_change is;
- m: |err| <= 1e-9 max(|m|, min(sqrt(m^2 + g^2), |m0| + |m*|)) everywhere (absolute near a sign
  crossing, where that max is the second term);
- zeta: the m bound / sqrt(m^2 + kappa^2 G);
- near a sign crossing of m, i.e. |m| < 1e-5 min(sqrt(m^2 + g^2), |m0| + |m*|) (empty when g = 0), and
  near a zero of ntk_change (|m + m0| < 1e-5 times the m scale, only after a crossing), Theta, |u|^2,
  |w|^2 and ntk_change are held to max(1e-9 relative, the error induced by the allowed error of m);
- |u|^2, |w|^2 have an absolute floor eta kappa^2 |U W - V^2 - G| / Theta0 (x4) from the inputs' own
  rounding: zero for explicit Grams, one ulp of G for typical ones, the sample's rounding for sampled;
- an absolute floor of 2^-1022 everywhere (float64 has no relative accuracy below its normal range);
- loss (not in section 8): the error induced by the allowed error of m; m_lin (not in section 8 either):
  1e-9 relative, or absolute at the scale of its two terms, plus the effect of a 1e-15 relative error
  in a Theta0 (for GD, m_lin is the frozen-kernel GD prediction m* + (m0 - m*)(1 - a Theta0)^k);
- t_learn, tau and the invariants: relative 1e-9;
- labels: equal to the reference's labels except within a relative 1e-6 of a threshold;
- GD (section 9): the same state tolerances at every step whose conditioning (reference perturbation,
  see Reference.gd_amplification) is below 1e4, for the steps before the run leaves any bounded region.
Every float output must be finite (inf only where the spec says: t_learn = inf when never reached), and
the core is called under warnings-as-errors with numpy's default floating-point reporting restored, so
an overflow/invalid/divide warning that the core does not handle itself fails the test.
Run (from the repository root): python3 -m pytest tests/test_accuracy.py -q -W error
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mpmath import mp, mpf

from phasediag import core
from reference import Reference, state_tolerances
from strategies import Case, case_and_times, cases, clip_V, gd_cases, time_scales

pytestmark = pytest.mark.filterwarnings("error")

# Below the normal range float64 cannot carry relative accuracy: errors up to the smallest normal number
# (2^-1022 ~ 2.2e-308) are always accepted (e.g. m ~ exp(-2e12) at a saddle underflows to 0).
UNDERFLOW = mpf(2) ** -1022

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_core(fn, *args, **kwargs):
    """Call the core with every warning an error and numpy's default floating-point reporting."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="warn", invalid="warn", divide="warn", under="ignore"):
            return fn(*args, **kwargs)


def _fmt(x):
    return "None" if x is None else mp.nstr(x, 20) if isinstance(x, mp.mpf) else repr(x)


class Checker:
    """Collects every discrepancy of one example and fails with all of them (inputs, expected, got)."""

    def __init__(self, case: Case):
        self.case = case
        self.failures: list[str] = []

    def fail(self, what: str, got, expected, tol=None, note=""):
        msg = f"{what}: got {_fmt(got)}, expected {_fmt(expected)}"
        if tol is not None:
            err = abs(mpf(float(got)) - expected) if math.isfinite(float(got)) else mp.inf
            msg += f", |err| {mp.nstr(err, 3)} > tol {mp.nstr(tol, 3)} (x{mp.nstr(err / tol, 3) if tol else 'inf'})"
        self.failures.append(msg + (f" [{note}]" if note else ""))

    def finite(self, what: str, got) -> bool:
        ok = math.isfinite(float(got))
        if not ok:
            self.failures.append(f"{what}: not finite: {got!r}")
        return ok

    def close(self, what: str, got, expected, tol):
        got = float(got)
        if expected is None:
            return
        tol = max(tol, UNDERFLOW)
        if mp.isinf(expected):
            if got != float(expected):
                self.fail(what, got, expected)
            return
        if not self.finite(what, got):
            return
        with mp.workdps(40):
            if abs(mpf(got) - expected) > tol:
                self.fail(what, got, expected, tol)

    def equal(self, what: str, got, expected):
        if got != expected:
            self.fail(what, got, expected)

    def check(self):
        assert not self.failures, f"core vs reference for {self.case!r}:\n  " + "\n  ".join(self.failures)


def _norm_floors(case: Case, gram, inv_ref) -> tuple:
    """Absolute floors for |u|^2, |w|^2 from inputs inconsistent at the rounding level (see docstring)."""
    U, W, V, G = (Fraction(float(x)) for x in (gram.U, gram.W, gram.V, gram.G))
    delta = abs(U * W - V * V - G)
    if delta == 0 or inv_ref["Theta0"] == 0:
        return (0, 0)
    with mp.workdps(40):
        base = 4 * inv_ref["k"] ** 2 * mpf(delta.numerator) / mpf(delta.denominator) / inv_ref["Theta0"]
        return (base * inv_ref["eu"], base * inv_ref["ew"])


def compare_state(chk: Checker, where: str, got: dict, exp: dict, inv_ref: dict, floors, ntk_change=None):
    """got: the core's FlowState fields (floats) at one time; exp: reference state."""
    tol = state_tolerances(exp, inv_ref, floors)
    chk.close(f"{where} m", got["m"], exp["m"], tol["m"])
    chk.close(f"{where} ntk (Theta)", got["ntk"], exp["Theta"], tol["Theta"])
    chk.close(f"{where} norm_u2", got["norm_u2"], exp["norm_u2"], tol["norm_u2"])
    chk.close(f"{where} norm_w2", got["norm_w2"], exp["norm_w2"], tol["norm_w2"])
    chk.close(f"{where} loss", got["loss"], exp["loss"], tol["loss"])
    if "m_lin" in got:
        chk.close(f"{where} m_lin", got["m_lin"], exp["m_lin"], tol["m_lin"])
    if exp["zeta"] is None:  # m = 0 and G = 0: zeta = 0/0; documented: sign(m0) (parallel layers), 0 if m0 = 0
        if chk.finite(f"{where} alignment", got["alignment"]):
            chk.equal(f"{where} alignment (undefined, documented sign(m0))", float(got["alignment"]),
                      float(mp.sign(inv_ref["m0"])))
    else:
        chk.close(f"{where} alignment (zeta)", got["alignment"], exp["zeta"], tol["zeta"])
    if ntk_change is not None:
        if exp["ntk_change"] is None:  # Theta0 = 0: the core documents 0
            chk.equal(f"{where} ntk_change (Theta0 = 0, documented 0)", float(ntk_change), 0.0)
        else:
            chk.close(f"{where} ntk_change", ntk_change, exp["ntk_change"], tol["ntk_change"])


FIELDS = ("m", "ntk", "alignment", "norm_u2", "norm_w2", "loss", "m_lin")


def check_flow(case: Case, ref: Reference, ts: list, chk: Checker | None = None) -> Checker:
    chk = chk or Checker(case)
    inv = case.core_invariants()
    tarr = np.array(ts, dtype=float)
    fs = run_core(core.flow_state, inv, tarr)
    ntk = run_core(core.ntk_change, inv, tarr)
    for name in FIELDS:
        assert np.shape(getattr(fs, name)) == tarr.shape, name
    assert np.shape(ntk) == tarr.shape
    inv_ref = ref.invariants()
    floors = _norm_floors(case, case.core_gram(), inv_ref)
    for i, (t, exp) in enumerate(zip(ts, ref.states(ts))):
        got = {name: float(np.asarray(getattr(fs, name))[i]) for name in FIELDS}
        compare_state(chk, f"t={t!r}", got, exp, inv_ref, floors, ntk_change=float(ntk[i]))
    return chk


# ---------------------------------------------------------------------------------------------------------
# Property-based: the whole state over the full ranges
# ---------------------------------------------------------------------------------------------------------
@settings(max_examples=800, **SETTINGS)
@given(data=case_and_times(n_times=4))
def test_flow_state_matches_reference(data):
    case, ref, ts = data
    check_flow(case, ref, ts).check()


@settings(max_examples=250, **SETTINGS)
@given(case=cases())
def test_invariants_tau_and_t_learn_match_reference(case):
    ref = Reference(case.point)
    inv_ref = ref.invariants()
    inv = case.core_invariants()
    chk = Checker(case)
    rel = lambda x: mpf("1e-9") * abs(x)
    for name, exp in (("c", inv_ref["c"]), ("g", inv_ref["g"]), ("m0", inv_ref["m0"]), ("s0", inv_ref["s"]),
                      ("Q", inv_ref["Qs"]), ("alpha0", inv_ref["alpha0"]), ("beta0", inv_ref["beta0"]),
                      ("alpha_inf", (inv_ref["Qs"] + inv_ref["ms"]) / 2), ("beta_inf", (inv_ref["Qs"] - inv_ref["ms"]) / 2),
                      ("rate", 2 * inv_ref["c"] * inv_ref["a"] * inv_ref["Qs"])):
        chk.close(f"invariants.{name}", np.asarray(getattr(inv, name)), exp, rel(exp))
    chk.equal("invariants.saddle", bool(inv.saddle), bool(inv_ref["saddle"]))
    tau = ref.tau()
    chk.close("relaxation_time", run_core(core.relaxation_time, inv), tau, rel(tau))
    tl = ref.t_learn()
    got = float(run_core(core.t_learn, inv))
    if mp.isinf(tl):
        chk.equal("t_learn (never)", got, math.inf)
    else:
        chk.close("t_learn", got, tl, rel(tl))
    chk.check()


@settings(max_examples=300, **SETTINGS)
@given(data=case_and_times(n_times=1), thresholds=st.sampled_from([(0.1, 0.1), (0.1, 0.1), (1e-3, 0.3), (0.5, 1e-2),
                                                                    (0.1, 0.9), (0.1, 1 - 1e-9)]))
def test_order_parameters_and_labels_match_reference(data, thresholds):
    case, ref, (horizon,) = data
    ntk_threshold, alignment_threshold = thresholds
    inv = case.core_invariants()
    chk = Checker(case)
    op = run_core(core.order_parameters, inv, horizon)
    exp = ref.order_parameters(horizon)
    inv_ref = ref.invariants()
    s0, sT = ref.state(0.0), ref.state(horizon)
    floors = (0, 0)
    tol0, tolT = state_tolerances(s0, inv_ref, floors), state_tolerances(sT, inv_ref, floors)
    where = f"T={horizon!r}"
    for name in op._fields:
        chk.finite(f"{where} order_parameters.{name}", np.asarray(getattr(op, name), dtype=float))
    if exp["ntk_change"] is None:
        chk.equal(f"{where} ntk_change (Theta0 = 0)", float(op.ntk_change), 0.0)
    else:
        chk.close(f"{where} ntk_change", op.ntk_change, exp["ntk_change"], tolT["ntk_change"])
    for name, z, tol in (("alignment_init", exp["zeta0"], tol0["zeta"]), ("alignment_final", exp["zetaT"], tolT["zeta"])):
        if z is None:  # documented: sign(m0) for parallel layers, 0 when m0 = 0
            chk.equal(f"{where} {name} (undefined, documented sign(m0))", float(getattr(op, name)),
                      float(mp.sign(inv_ref["m0"])))
        else:
            chk.close(f"{where} {name}", getattr(op, name), z, tol)
    if exp["alignment"] is None:  # G = 0: the layers stay parallel, amounts undefined; documented 0
        chk.equal(f"{where} alignment_gain (G = 0)", float(op.alignment_gain), 0.0)
        chk.equal(f"{where} disalignment (G = 0)", float(op.disalignment), 0.0)
    else:
        tol_amount = (tol0["zeta"] or 0) + (tolT["zeta"] or 0)
        chk.close(f"{where} alignment_gain", op.alignment_gain, exp["alignment"], tol_amount)
        chk.close(f"{where} disalignment", op.disalignment, exp["disalignment"], tol_amount)
        # 1 - each, formed without cancellation: accurate relative to itself where zeta ~ 1 (the rules' form above
        # an alignment_threshold of 1/2); an error dm moves 1 - |zeta| by (1 - zeta^2) times zeta's own error
        z0, zT = abs(exp["zeta0"]), abs(exp["zetaT"])
        tol_min = 0 if exp["crosses"] else (tol0["zeta"] if z0 <= zT else tolT["zeta"])
        for name, m, z, tol in (("alignment_gain_complement", sT["m"], zT, tolT["zeta"]),
                                ("disalignment_complement", inv_ref["m0"], z0, tol0["zeta"])):
            with mp.workdps(80):  # 1 - |zeta| from its definition, in digits enough for zeta within 1e-40 of 1
                want = 1 - abs(m) / mp.sqrt(m * m + inv_ref["k"] ** 2 * inv_ref["G"]) + exp["min_abs_zeta"]
            chk.close(f"{where} {name}", getattr(op, name), want, 1e-13 * want + 2 * (1 - z * z) * tol + tol_min)
    ratio = exp["loss_ratio"]
    if ratio is None or abs(ratio - mpf("0.01")) > mpf("1e-6") * mpf("0.01"):
        chk.equal(f"{where} not_converged", bool(op.not_converged), bool(exp["not_converged"]))
    label, ambiguous = ref.classify(horizon, ntk_threshold, alignment_threshold)
    code = int(run_core(core.classify, inv, horizon, ntk_threshold=ntk_threshold,
                        alignment_threshold=alignment_threshold))
    assert 0 <= code < len(core.PHASES)
    if not ambiguous:
        chk.equal(f"{where} classify{thresholds}", core.PHASES[code], label)
    chk.check()


# ---------------------------------------------------------------------------------------------------------
# Exact discrete GD (section 9): gd_state against the mpmath map
# ---------------------------------------------------------------------------------------------------------
GD_STEPS = np.array([0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 300])




@settings(max_examples=50, **SETTINGS)
@given(case=gd_cases())
# found by CI: small init (U = 0) with a tiny kappa: m ~ 1e-8 on its way to m* = -1e-3, where m* + delta
# cancels and the accumulated rounding of delta reached 1e-9 of |u|^2 = 2 eta_u m^2 / (Theta + c^2 |Delta|)
@example(case=Case(kappa=1e-08, lr_u=1.0, lr_w=1.0, a=1000.0, mstar=-0.001, kind="typical", U=0.0, W=1e6, V=0.0,
                   G=None, width=100, var_u=0.0, var_w=1e4))
def test_gd_state_matches_mpmath_map(case):
    ref = Reference(case.point)
    inv_ref = ref.invariants()
    n = int(GD_STEPS[-1])
    traj = ref.gd(n, keep=GD_STEPS)
    amps = ref.gd_amplification(n, keep=GD_STEPS)
    inv = case.core_invariants()
    gs = run_core(core.gd_state, inv, GD_STEPS)
    for name in FIELDS:
        assert np.shape(getattr(gs, name)) == GD_STEPS.shape, name
    chk = Checker(case)
    floors = _norm_floors(case, case.core_gram(), inv_ref)
    with mp.workdps(60):
        bound = 1e6 * max(inv_ref["s"], inv_ref["Qs"], 1 / (inv_ref["a"] * inv_ref["c"]))
        theta0 = inv_ref["Theta0"]
        for i, k in enumerate(GD_STEPS):
            got = {name: float(np.asarray(getattr(gs, name))[i]) for name in FIELDS}
            for name in FIELDS:
                assert not math.isnan(got[name]), f"NaN in gd_state.{name} at step {k} for {case!r}"
            exp = dict(traj[k])
            if exp["Theta"] > 2 * bound * inv_ref["c"] or amps[k] > 1e4:
                continue  # left every bounded region, or the map is ill-conditioned up to here
            # frozen-NTK GD: m_{k+1} - m* = (1 - a Theta0)(m_k - m*)
            f = 1 - inv_ref["a"] * theta0
            exp["m_lin"] = inv_ref["ms"] + (inv_ref["m0"] - inv_ref["ms"]) * f ** int(k)
            exp["m_lin_dlogtheta0"] = (-(inv_ref["m0"] - inv_ref["ms"]) * int(k) * f ** (int(k) - 1)
                                       * inv_ref["a"] * theta0 if k > 0 else 0)
            compare_state(chk, f"GD step {k}", got, exp, inv_ref, floors)
    chk.check()


# ---------------------------------------------------------------------------------------------------------
# Initial-state constructors (section 2)
# ---------------------------------------------------------------------------------------------------------
@settings(max_examples=100, **SETTINGS)
@given(U=st.floats(1e-16, 1e19), W=st.floats(1e-16, 1e19), rho=st.floats(-1.0, 1.0), width=st.integers(1, 10**15),
       var_u=st.floats(1e-16, 1e4), var_w=st.floats(1e-16, 1e4), seed=st.integers(0, 2**32 - 1))
def test_gram_constructors(U, W, rho, width, var_u, var_w, seed):
    V = clip_V(U, W, rho * math.sqrt(U * W))
    g = run_core(core.explicit_gram, U, W, V)
    exact = Fraction(U) * Fraction(W) - Fraction(V) ** 2
    assert (float(g.U), float(g.W), float(g.V)) == (U, W, V)
    assert abs(Fraction(float(g.G)) - exact) <= Fraction(math.ulp(float(exact))), (U, W, V, float(g.G), exact)
    t = run_core(core.typical_gram, width, var_u, var_w)
    assert (float(t.U), float(t.W), float(t.V)) == (float(width) * var_u, float(width) * var_w, 0.0)
    assert abs(Fraction(float(t.G)) - Fraction(float(t.U)) * Fraction(float(t.W))) <= Fraction(math.ulp(float(t.G)))
    s = run_core(core.sample_gram, width, var_u, var_w, seed, 7)
    Us, Ws, Vs, Gs = (float(x) for x in s)
    assert all(math.isfinite(x) for x in (Us, Ws, Vs, Gs)) and Us > 0 and Ws > 0 and Gs >= 0
    if width == 1:
        assert Gs == 0.0
    # the sampled G is U W - V^2 up to the rounding of U, W, V
    assert abs(Fraction(Gs) - (Fraction(Us) * Fraction(Ws) - Fraction(Vs) ** 2)) <= Fraction(1e-14) * Fraction(Us * Ws)
    # counter-based: the same (seed, index) gives the same draw inside an array of indices
    arr = run_core(core.sample_gram, width, var_u, var_w, seed, np.array([3, 7, 11]))
    assert tuple(float(np.asarray(x)[1]) for x in arr) == (Us, Ws, Vs, Gs)


# ---------------------------------------------------------------------------------------------------------
# Deterministic regression cases: the three traps of section 8, the g = 0 cases, t = 0 and t = inf
# ---------------------------------------------------------------------------------------------------------
def _explicit(kappa, lr_u, lr_w, a, mstar, U, W, V, label):
    return Case(kappa, lr_u, lr_w, a, mstar, "explicit", U, W, clip_V(U, W, V), None, label=label)


def _typical(kappa, lr_u, lr_w, a, mstar, width, var_u, var_w, label):
    return Case(kappa, lr_u, lr_w, a, mstar, "typical", float(width) * var_u, float(width) * var_w, 0.0, None,
                width, var_u, var_w, label=label)


REGRESSION = [
    # trap 1: small initialization, m ~ 1e-19 on its way to m* ~ 1e2 (plateau), same and opposite sign
    _explicit(1.0, 1.0, 1.0, 1.0, 1e2, 1e-19, 1e-19, 5e-20, "plateau m0>0"),
    _explicit(1.0, 1.0, 1.0, 1.0, 1e2, 1e-19, 1e-19, -5e-20, "plateau m0<0 (crossing)"),
    _typical(1.0, 0.5, 2.0, 1.0, -1e2, 100, 1e-21, 1e-21, "plateau typical V=0"),
    # trap 1b: kernel regime, alpha ~ beta, ntk_change ~ 1e-12 (both signs of m0 m*)
    _typical(1e-6, 1.0, 1.0, 1.0, 1.0, 10**12, 1.0, 1.0, "kernel typical"),
    _explicit(1e-6, 1.0, 1.0, 1.0, 1.0, 1e12, 1e12, 3e5, "kernel m0 m*>0"),
    _explicit(1e-6, 1.0, 1.0, 1.0, 1.0, 1e12, 1e12, -3e5, "kernel m0 m*<0 (crossing)"),
    # kernel, aligning (section 6 example): kappa = 1/d, eta_u = d, eta_w = 1/d at d = 4000
    _explicit(1 / 4000, 4000.0, 1 / 4000, 1.0, 1.0, 4000.0, 4000.0, 63.0, "kernel aligning"),
    # trap 2: z* ~ 1 (m0 ~ m*)
    _explicit(1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 0.5, 1.0 + 1e-10, "z* ~ 1"),
    _explicit(1.0, 0.3, 3.0, 2.0, -0.7, 1.0, 1.0, -0.7 * (1 - 2**-40), "z* ~ 1 (m*<0)"),
    # trap 3: z* >> 1 at early times (m0 > 0, m* < 0, nearly balanced and parallel)
    _explicit(1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0 - 1e-12, "z* >> 1"),
    _explicit(1.0, 1.0, 1.0, 1.0, -1e3, 1e4, 1e4, 1e4 * (1 - 1e-15), "z* >> 1 extreme"),
    # g = 0: sign-locked convergence, saddle, m0 = 0, both layers zero
    _explicit(1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 0.25, 0.25, "g=0 converges up"),
    _explicit(2.0, 4.0, 1.0, 0.5, -3.0, 1.0, 0.25, -0.5, "g=0 converges, m<0"),
    _explicit(1.0, 1.0, 1.0, 1.0, -1.0, 0.25, 0.25, 0.25, "g=0 saddle"),
    _explicit(1.0, 1.0, 1.0, 1.0, 1.0, 100.0, 100.0, -100.0, "g=0 saddle |m0|>>|m*|"),
    _explicit(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, "both layers zero"),
    _explicit(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 2.0, 0.0, "u0 = 0 (m0 = 0, g > 0)"),
    _explicit(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, "m0 = 0, orthogonal"),
    # d = 1 (G = 0, g > 0) crossing: the flipping layer passes through 0
    _explicit(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0**-20, -(2.0**-10), "d=1 crossing"),
    # extremes of the ranges
    _typical(1e8, 1e6, 1e6, 1e3, 1e3, 10**15, 1e4, 1e4, "all max"),
    _typical(1e-8, 1e-6, 1e-6, 1e-3, -1e-3, 1, 1e-16, 1e-16, "all min"),
    _typical(1e-8, 1e6, 1e-6, 1e3, 1e-3, 10**15, 1e-16, 1e4, "imbalanced extreme"),
]


def _regression_times(ref: Reference) -> list:
    sc = time_scales(ref)
    ts = [0.0, math.inf, 1e12, 1e-30 * sc["tau"]]
    ts += [x * sc["tau"] for x in (1e-6, 1e-3, 0.1, 1.0, 3.0, 30.0, 300.0)]
    if "plateau" in sc:
        ts += [x * sc["plateau"] for x in (0.1, 0.5, 0.9, 0.99, 1.0, 1.01, 1.1, 2.0)]
    if "cross" in sc:
        ts += [sc["cross"] * (1 + e) for e in (-1e-2, -1e-6, -1e-10, 0.0, 1e-10, 1e-6, 1e-2)]
    return sorted({min(max(t, 0.0), 1e12) for t in ts})


@pytest.mark.parametrize("case", REGRESSION, ids=[c.label for c in REGRESSION])
def test_regression_flow(case):
    ref = Reference(case.point)
    chk = check_flow(case, ref, _regression_times(ref))
    inv = case.core_invariants()
    tau, tl = ref.tau(), ref.t_learn()
    chk.close("relaxation_time", run_core(core.relaxation_time, inv), tau, mpf("1e-9") * tau)
    got = float(run_core(core.t_learn, inv))
    if mp.isinf(tl):
        chk.equal("t_learn (never)", got, math.inf)
    else:
        chk.close("t_learn", got, tl, mpf("1e-9") * tl)
    label, ambiguous = ref.classify()
    if not ambiguous:  # e.g. alignment = disalignment to 1e-6 when a nearly parallel pair flips sign
        chk.equal("classify", core.PHASES[int(run_core(core.classify, inv))], label)
    chk.check()


def test_regression_saddle_and_limits():
    """g = 0 saddle: m -> 0 at rate 2 c a |m*|, Theta_inf = 0, ntk_change(inf) = -1, label saddle;
    t = 0 returns the initial state exactly (to 1e-15)."""
    case = _explicit(1.0, 1.0, 1.0, 1.0, -1.0, 0.25, 0.25, 0.25, "g=0 saddle")
    inv = case.core_invariants()
    end = run_core(core.flow_state, inv, math.inf)
    assert float(end.m) == 0.0 and float(end.ntk) == 0.0
    assert float(run_core(core.ntk_change, inv, math.inf)) == -1.0
    assert core.PHASES[int(run_core(core.classify, inv))] == "saddle"
    ref = Reference(case.point)
    tau = float(ref.tau())
    with mp.workdps(30):
        assert abs(mpf(float(run_core(core.relaxation_time, inv))) * 2 * ref.invariants()["c"] * 1.0 * 1.0 - 1) < 1e-12
    start = run_core(core.flow_state, inv, 0.0)
    for name, value in (("m", 0.25), ("norm_u2", 0.25), ("norm_w2", 0.25), ("ntk", 0.5)):
        assert float(getattr(start, name)) == pytest.approx(value, rel=1e-15, abs=0)
    # m(t) / m(t + tau) -> e at late times (decay rate 2 c a |m*| = 1/tau)
    late = run_core(core.flow_state, inv, np.array([40 * tau, 41 * tau]))
    assert float(late.m[0] / late.m[1]) == pytest.approx(math.e, rel=1e-9)
