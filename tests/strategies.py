"""Hypothesis strategies over the full ranges of docs/theory.md section 8.

    d in [1, 1e15] (log-uniform integer), kappa in [1e-8, 1e8], sigma^2 in {0} U [1e-16, 1e4],
    eta in [1e-6, 1e6], a in [1e-3, 1e3], m* in +-[1e-3, 1e3], t in [0, 1e12] and inf.

A drawn ``Case`` carries both sides of a comparison: ``case.point`` (exact float inputs for
tests/reference.py) and ``case.core_gram()`` (the Gram built by phasediag.core's own constructor for the
same inputs).  Initial Grams come in three kinds:
- typical:  U = d var_u, W = d var_w, V = 0 (reference: G = U W exactly);
- sampled:  phasediag.core.sample_gram(d, var_u, var_w, seed, index) (reference: the sample's G as is --
            a sampled G is not U W - V^2 of the rounded U, W, V, so it is the input);
- explicit: U, W in {0} U [1e-16, 1e19] and V with V^2 <= U W exactly: generic, nearly parallel
            (|cos| = 1 - 10^-x), as parallel as floats allow, exactly parallel (G = 0, e.g. any d = 1
            network), exactly parallel *and* balanced (g = 0: the sign-locked / saddle cases), and their
            neighbourhood (g ~ 10^-x |m0|, x in [1, 15]: near-saddle plateaus, z* >> 1).
Times are drawn from the point's own scales (``times_for``): x * tau (x log-uniform in [1e-6, 1e3]),
around the small-initialization plateau tau ln(|m*|/alpha0), just before/after the sign crossing of m,
log-uniform in [1e-30, 1e12], 0 and inf.  All times are clipped to [0, 1e12].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

from hypothesis import strategies as st
from mpmath import mp

from reference import Point, Reference

T_MAX = 1e12


def log_uniform(lo: float, hi: float):
    """Floats log-uniform in [lo, hi], endpoints included with some probability."""
    inner = st.floats(math.log10(lo), math.log10(hi)).map(lambda x: min(max(10.0**x, lo), hi))
    return st.one_of(inner, inner, inner, st.sampled_from([lo, hi]))


def signed(strategy):
    return st.tuples(st.sampled_from([-1.0, 1.0]), strategy).map(lambda p: p[0] * p[1])


widths = st.one_of(
    st.floats(0.0, 15.0).map(lambda x: max(1, min(10**15, int(round(10.0**x))))),
    st.sampled_from([1, 2, 3, 10**15]),
)
output_scales = log_uniform(1e-8, 1e8)
init_vars = st.one_of(st.just(0.0), log_uniform(1e-16, 1e4), log_uniform(1e-16, 1e4))
learning_rates = log_uniform(1e-6, 1e6)
input_vars = log_uniform(1e-3, 1e3)
teachers = signed(log_uniform(1e-3, 1e3))


def exact_V_ok(U: float, W: float, V: float) -> bool:
    return Fraction(V) ** 2 <= Fraction(U) * Fraction(W)


def clip_V(U: float, W: float, V: float) -> float:
    """Move V towards 0 by ulps until V^2 <= U W holds exactly."""
    while not exact_V_ok(U, W, V):
        V = math.nextafter(V, 0.0)
    return V


def _short_mantissa(x: float, bits: int = 26) -> float:
    """x rounded to `bits` significant bits (so that squares and products of two are exact)."""
    if x == 0:
        return 0.0
    m, e = math.frexp(x)
    return math.ldexp(round(m * 2**bits), e - bits)


@dataclass(frozen=True)
class Case:
    """A drawn point: hyperparameters, and how its initial Gram was made."""

    kappa: float
    lr_u: float
    lr_w: float
    a: float
    mstar: float
    kind: str  # "typical" | "sampled" | "explicit"
    U: float
    W: float
    V: float
    G: Optional[float]  # None: exact U W - V^2 (typical, explicit); the sample's G (sampled)
    width: Optional[int] = None
    var_u: Optional[float] = None
    var_w: Optional[float] = None
    seed: Optional[int] = None
    index: Optional[int] = None
    label: str = ""  # sub-kind, for the failure report

    @property
    def point(self) -> Point:
        return Point(self.kappa, self.lr_u, self.lr_w, self.a, self.mstar, self.U, self.W, self.V, self.G)

    def core_gram(self):
        from phasediag import core

        if self.kind == "typical":
            return core.typical_gram(self.width, self.var_u, self.var_w)
        if self.kind == "sampled":
            return core.sample_gram(self.width, self.var_u, self.var_w, self.seed, self.index)
        return core.explicit_gram(self.U, self.W, self.V)

    def core_problem(self):
        from phasediag import core

        return core.Problem(self.kappa, self.lr_u, self.lr_w, self.a, self.mstar, self.core_gram())

    def core_invariants(self):
        from phasediag import core

        return core.invariants(self.core_problem())


def _sampled_values(width, var_u, var_w, seed, index):
    from phasediag import core

    g = core.sample_gram(width, var_u, var_w, seed, index)
    return tuple(float(x) for x in (g.U, g.W, g.V, g.G))


@st.composite
def cases(draw, kinds=("typical", "sampled", "explicit")) -> Case:
    kappa, lr_u, lr_w = draw(output_scales), draw(learning_rates), draw(learning_rates)
    a, mstar = draw(input_vars), draw(teachers)
    kind = draw(st.sampled_from(kinds))
    if kind in ("typical", "sampled"):
        width, var_u, var_w = draw(widths), draw(init_vars), draw(init_vars)
        if kind == "typical":
            U, W = float(width) * var_u, float(width) * var_w
            return Case(kappa, lr_u, lr_w, a, mstar, kind, U, W, 0.0, None, width, var_u, var_w)
        seed, index = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 10**6))
        U, W, V, G = _sampled_values(width, var_u, var_w, seed, index)
        return Case(kappa, lr_u, lr_w, a, mstar, kind, U, W, V, G, width, var_u, var_w, seed, index)
    norms = st.one_of(st.just(0.0), log_uniform(1e-16, 1e19), log_uniform(1e-16, 1e19))
    sub = draw(st.sampled_from(["generic", "near_parallel", "max_parallel", "parallel", "balanced_parallel",
                                "near_balanced_parallel"]))
    if sub in ("parallel", "balanced_parallel", "near_balanced_parallel"):
        # U = p^2, W = q^2, V = +-p q exactly: G = 0 (a d = 1 network); balanced: U/eta_u = W/eta_w exactly
        q = _short_mantissa(math.sqrt(draw(log_uniform(1e-16, 1e19))))
        j = draw(st.integers(-3, 3))
        if sub != "parallel":
            while not (1e-6 <= lr_w * 4.0**j <= 1e6):
                j -= int(math.copysign(1, j))
            lr_u = lr_w * 4.0**j
            p = math.ldexp(q, j)
        else:
            p = _short_mantissa(math.sqrt(draw(log_uniform(1e-16, 1e19))))
        zero = draw(st.sampled_from(["none", "none", "none", "u", "w", "both"]))
        if sub == "parallel" and zero in ("u", "both"):
            p = 0.0
        if sub == "parallel" and zero in ("w", "both"):
            q = 0.0
        if sub == "balanced_parallel" and zero == "both":
            p = q = 0.0
        V = draw(st.sampled_from([-1.0, 1.0])) * p * q
        U, W = p * p, q * q
        if sub == "near_balanced_parallel":
            # g ~ 10^-x |m0|: the g = 0 cases' neighbourhood (plateaus near the saddle, z* >> 1)
            x = draw(st.floats(1.0, 15.0))
            if draw(st.booleans()):
                V = clip_V(U, W, V * (1.0 - 10.0**-x))  # slightly not parallel: G > 0
            else:
                U = U * (1.0 + 10.0**-x)  # slightly imbalanced: Delta != 0
                V = clip_V(U, W, V)
        return Case(kappa, lr_u, lr_w, a, mstar, kind, U, W, V, None, label=sub)
    U, W = draw(norms), draw(norms)
    root = math.sqrt(U * W)
    sign = draw(st.sampled_from([-1.0, 1.0]))
    if sub == "generic":
        V = draw(st.floats(-1.0, 1.0)) * root
    elif sub == "near_parallel":
        V = sign * (1.0 - 10.0 ** -draw(st.floats(1.0, 16.0))) * root
    else:  # max_parallel: the largest |V| with V^2 <= U W
        V = sign * math.nextafter(root, math.inf)
    return Case(kappa, lr_u, lr_w, a, mstar, kind, U, W, clip_V(U, W, V), None, label=sub)


# -- times ----------------------------------------------------------------------------------------------
def time_scales(ref: Reference) -> dict:
    """tau, the plateau time tau ln(|m*|/alpha0) (if alpha0 < |m*|), and the time at which m crosses 0
    (if it does): from the reference."""
    inv = ref.invariants()
    out = {"tau": float(ref.tau())}
    with mp.workdps(60):
        if not inv["saddle"] and 0 < inv["alpha0"] < abs(inv["ms"]):
            out["plateau"] = float(mp.mpf(out["tau"]) * mp.log(abs(inv["ms"]) / inv["alpha0"]))
        if inv["g2"] > 0 and inv["m0"] * inv["ms"] < 0:
            # m = 0 at z_c = sqrt(alpha0/beta0); (z - z*)/(z - z-) = y0 exp(-lambda t)
            zs, zm = inv["zstar"], inv["zminus"]
            zc = mp.sqrt(inv["alpha0"] / inv["beta0"])
            y0, yc = (1 - zs) / (1 - zm), (zc - zs) / (zc - zm)
            out["cross"] = float(mp.log(y0 / yc) / inv["lam"])
    return out


@st.composite
def times_for(draw, ref: Reference) -> float:
    scales = time_scales(ref)
    choice = draw(st.sampled_from(["zero", "inf", "tau", "tau", "tau", "plateau", "cross", "log"]))
    if choice == "zero":
        return 0.0
    if choice == "inf":
        return math.inf
    if choice == "plateau" and "plateau" in scales:
        t = scales["plateau"] * draw(st.floats(0.3, 1.5))
    elif choice == "cross" and "cross" in scales:
        eps = draw(st.sampled_from([-1.0, 1.0])) * 10.0 ** draw(st.floats(-12.0, -1.0))
        t = scales["cross"] * (1.0 + eps)
    elif choice == "log":
        t = 10.0 ** draw(st.floats(-30.0, 12.0))
    else:
        t = scales["tau"] * 10.0 ** draw(st.floats(-6.0, 3.0))
    return min(max(t, 0.0), T_MAX)


@st.composite
def case_and_times(draw, n_times: int = 1, kinds=("typical", "sampled", "explicit")):
    case = draw(cases(kinds))
    ref = Reference(case.point)
    ts = [draw(times_for(ref)) for _ in range(n_times)]
    return case, ref, ts


@st.composite
def gd_cases(draw, lo: float = 1e-2, hi: float = 4.5):
    """Points whose GD does something within a few hundred steps: the learning rates are rescaled
    (together) so that a Theta0 lands in [lo, hi] (log-uniform) when that stays inside [1e-6, 1e6]."""
    case = draw(cases())
    x = 10.0 ** draw(st.floats(math.log10(lo), math.log10(hi)))
    theta0 = float(Reference(case.point).invariants()["Theta0"])
    if theta0 > 0:
        f = x / (case.a * theta0)
        lr_u, lr_w = case.lr_u * f, case.lr_w * f
        if 1e-6 <= lr_u <= 1e6 and 1e-6 <= lr_w <= 1e6:
            case = Case(**{**case.__dict__, "lr_u": lr_u, "lr_w": lr_w})
    return case


@st.composite
def gd_edge_points(draw, acm_range=(0.01, 1.6), a_theta0_range=(0.01, 6.0)):
    """GD runs near the edge of stability, as Cases: a Theta0 log-uniform in `a_theta0_range`, a c |m*| uniform
    in `acm_range` (oscillating beyond 1), m0 = 0 or not (U = W = x, V = v x, kappa = 1, eta_u = eta_w = c),
    several scales of a and m*."""
    a_theta0, acm = draw(log_uniform(*a_theta0_range)), draw(st.floats(*acm_range))
    m_star = draw(st.sampled_from([-1.0, 1.0])) * draw(log_uniform(1e-2, 1e2))
    a = draw(log_uniform(0.1, 10.0))
    c = acm / (a * abs(m_star))
    x = a_theta0 / (2 * a * c)
    v = draw(st.sampled_from([0.0, 0.0, 0.5, -0.9, 1.0]))
    return Case(1.0, c, c, a, m_star, "explicit", x, x, clip_V(x, x, v * x), None, label="gd edge")
