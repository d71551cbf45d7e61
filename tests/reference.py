"""Independent high-precision reference for the solvable model (docs/theory.md sections 3-6 and 9).

Written from docs/theory.md only -- it does not import or imitate ``phasediag.core``.  Everything is evaluated
with mpmath from the *exact* values of the float inputs, using the formulas of sections 3-5 nearly
literally.  Literal formulas cancel (docs/theory.md section 8), so every public function evaluates at two
precisions (50 and 100 digits to start with) and accepts the result only when the two agree to
``AGREEMENT`` (1e-16) times the tolerance that the accuracy tests apply to that quantity; otherwise the
precision is doubled, up to ``MAX_DPS`` digits.  The reference error is therefore provably negligible
next to the tolerances of docs/theory.md section 8.

Only algebraic identities of section 4 are used to avoid divisions by zero (beta0 = (g^2/4)/alpha0,
b + q = a^2 g^2/(q - b) for b < 0); the remaining cancellation is handled by the precision loop.

The tolerances themselves (docs/theory.md section 8, and the conventions this test-suite adopts where the
spec is silent) are defined here too, in ``state_tolerances`` -- one place, used by the reference's own
precision check and by tests/test_accuracy.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from mpmath import mp, mpf

BASE_DPS = 50
MAX_DPS = 3200
AGREEMENT = mpf("1e-16")  # reference error must be <= AGREEMENT * (test tolerance)

# ---------------------------------------------------------------------------------------------------------
# Tolerances of docs/theory.md section 8 (and the documented conventions where the spec is silent)
# ---------------------------------------------------------------------------------------------------------
REL = mpf("1e-9")
# "Near a sign crossing of m": |m| < CROSSING * min(sqrt(m^2 + g^2), |m0| + |m*|).  There m itself is
# still held to the spec bound 1e-9 * max(|m|, min(...)) (which is absolute there), and quantities that
# are smooth functions of m (Theta, |u|^2, |w|^2, ntk_change) are held to
# max(1e-9 |f|, |df/dm| * tol_m): the error that the *allowed* error of m induces.  The zone is
# empty when g = 0 (then sqrt(m^2 + g^2) = |m|), and it is the only place where |u|^2 or |w|^2 can
# approach 0 relative to their scale (|u|^2 |w|^2 = G + m^2/kappa^2).
CROSSING = mpf("1e-5")
# "Near a zero of ntk_change" (Theta(t) = Theta0 at t > 0, i.e. m = -m0, only possible when m crosses 0):
# |m + m0| < NTK_ZERO * max(|m|, min(...)); there ntk_change gets the same m-induced bound.
NTK_ZERO = mpf("1e-5")
# m_lin (not in section 8) also gets the effect of a relative error 1e-15 in a Theta0 (a rounded input of
# the frozen-kernel prediction: at a Theta0 = 1 - 5e-17, (1 - a Theta0) is not representable relatively)
THETA0_ROUNDING = mpf("1e-15")


@dataclass(frozen=True)
class Point:
    """One point of hyperparameter space, as Python floats (the exact values are used)."""

    kappa: float
    lr_u: float
    lr_w: float
    a: float
    mstar: float
    U: float
    W: float
    V: float
    G: Optional[float] = None  # None: G = U W - V^2 exactly; a float (e.g. from sampling) is used as is


def _mp(x) -> mpf:
    return mpf(x)  # exact conversion of a Python float


class _Model:
    """All quantities at one fixed working precision ``dps``."""

    def __init__(self, p: Point, dps: int):
        self.p = p
        self.dps = dps
        with mp.workdps(dps):
            k, eu, ew = _mp(p.kappa), _mp(p.lr_u), _mp(p.lr_w)
            a, ms = _mp(p.a), _mp(p.mstar)
            U, W, V = _mp(p.U), _mp(p.W), _mp(p.V)
            if p.G is None:
                G = U * W - V * V  # exact: products of two doubles need 106 bits, dps >= 50 gives 166
            else:
                G = _mp(p.G)
            if G < 0:
                raise ValueError(f"V^2 > U W for {p}")
            # Delta = U/eta_u - W/eta_w; the numerator is exact, so Delta == 0 iff it is exactly 0
            Delta = (U * ew - W * eu) / (eu * ew)
            c = k * mp.sqrt(eu * ew)
            g2 = k * k * (eu * ew * Delta * Delta / 4 + G)
            m0 = k * V
            b = a * ms
            s = mp.sqrt(m0 * m0 + g2)
            if m0 >= 0:
                alpha0 = (s + m0) / 2
                beta0 = (g2 / 4) / alpha0 if alpha0 > 0 else mpf(0)
            else:
                beta0 = (s - m0) / 2
                alpha0 = (g2 / 4) / beta0
            q = mp.sqrt(b * b + a * a * g2)
            Qs = mp.sqrt(ms * ms + g2)
            self.k, self.eu, self.ew, self.a, self.ms, self.b = k, eu, ew, a, ms, b
            self.U, self.W, self.V, self.G, self.Delta = U, W, V, G, Delta
            self.c, self.g2, self.g, self.m0, self.s = c, g2, mp.sqrt(g2), m0, s
            self.alpha0, self.beta0, self.q, self.Qs = alpha0, beta0, q, Qs
            self.Theta0 = 2 * c * s
            self.saddle = g2 == 0 and m0 * ms <= 0
            if g2 > 0:
                bq = b + q if b >= 0 else a * a * g2 / (q - b)  # = b + q without cancellation
                self.zs = 2 * a * alpha0 / bq
                self.zm = -bq / (2 * a * beta0)
                self.lam = 2 * c * q
            else:
                self.zs = self.zm = self.lam = None

    # -- time evolution -----------------------------------------------------------------------------------
    def _m_and_dm(self, t):
        """(m(t), m(t) - m*) for a finite t >= 0 (exact input)."""
        ms, m0 = self.ms, self.m0
        if t == 0 or m0 == ms:
            return m0, m0 - ms
        if self.g2 > 0:
            e = mp.exp(-self.lam * t)
            zs, zm = self.zs, self.zm
            dz = (1 - zs) * (zs - zm) * e / ((1 - zm) - (1 - zs) * e)  # z - z*  (section 4)
            z = zs + dz
            m = self.alpha0 / z - self.beta0 * z
            # m - m* = -beta0 (z - z*)(z - z-)/z  (the Riccati right-hand side / (2 c z); exact identity)
            dm = -self.beta0 * dz * (z - zm) / z
            return m, dm
        # g = 0: Theta = 2c|m|, dm/dt = -2c|m| a (m - m*): sign-locked logistic (section 4)
        if m0 == 0:
            return mpf(0), -ms
        E = mp.exp(-2 * self.c * self.a * mp.sign(m0) * ms * t)
        den = m0 + (ms - m0) * E
        return m0 * ms / den, -ms * (ms - m0) * E / den

    def _m_and_dm_inf(self):
        if self.m0 == self.ms:
            return self.m0, mpf(0)
        if self.g2 > 0 or self.m0 * self.ms > 0:
            return self.ms, mpf(0)
        return mpf(0), -self.ms  # saddle (incl. m0 = 0 with g = 0)

    def state(self, t: float) -> dict:
        with mp.workdps(self.dps):
            if t == math.inf:
                m, dm = self._m_and_dm_inf()
            else:
                m, dm = self._m_and_dm(_mp(t))
            return self._derived(m, dm, t)

    def _derived(self, m, dm, t) -> dict:
        k, c = self.k, self.c
        Theta = 2 * c * mp.sqrt(m * m + self.g2)
        if t == 0 or self.m0 == self.ms:
            Theta = self.Theta0  # exactly the initial state
        nu2, nw2 = self._norms(m, Theta, self.Delta, self.G)
        if t == 0 and self.p.G is None:
            nu2, nw2 = self.U, self.W  # exactly (for a consistent Gram the formulas give these values)
        den = mp.sqrt(m * m + k * k * self.G)
        zeta = m / den if den > 0 else None
        ntk = Theta / self.Theta0 - 1 if self.Theta0 > 0 else None
        dlog = mpf(0)  # d m_lin / d ln Theta0
        if self.Theta0 == 0:
            m_lin = self.m0  # frozen NTK = 0: nothing moves
        elif t == math.inf:
            m_lin = self.ms
        else:
            x = self.a * self.Theta0 * _mp(t)
            m_lin = self.ms + (self.m0 - self.ms) * mp.exp(-x)
            dlog = -(self.m0 - self.ms) * x * mp.exp(-x)
        # exact zeros are expected only at t = 0, t = inf, for a stationary point or on a g = 0 path;
        # anywhere else an exact 0 means total cancellation and the precision loop must go on
        zeros_ok = t == 0 or t == math.inf or self.m0 == self.ms or self.g2 == 0
        return dict(m=m, dm=dm, Theta=Theta, zeta=zeta, norm_u2=nu2, norm_w2=nw2,
                    loss=self.a * dm * dm / 2, m_lin=m_lin, m_lin_dlogtheta0=dlog, ntk_change=ntk,
                    zeros_ok=zeros_ok)

    def _norms(self, m, Theta, Delta, G):
        """|u|^2 = eta_u (Theta + c^2 Delta)/(2c^2), |w|^2 = eta_w (Theta - c^2 Delta)/(2c^2) (section 3
        forms); the one with the minus sign as 2 eta (m^2 + kappa^2 G)/(Theta + c^2 |Delta|) (section 8),
        since (Theta^2 - c^4 Delta^2) = 4 c^2 (m^2 + kappa^2 G): no cancellation, so no digit is lost even
        when a layer shrinks towards 0.  (U + (Theta - Theta0)/(2 kappa^2 eta_w) of section 3 cancels
        completely there.)"""
        c2 = self.c * self.c
        if Theta == 0:
            return mpf(0), mpf(0)
        small = 2 * (m * m + self.k * self.k * G) / (Theta + c2 * abs(Delta))
        big_u = self.eu * (Theta + c2 * Delta) / (2 * c2)
        big_w = self.ew * (Theta - c2 * Delta) / (2 * c2)
        if Delta >= 0:
            return big_u, self.ew * small
        return self.eu * small, big_w

    def invariants(self) -> dict:
        return dict(G=self.G, Delta=self.Delta, c=self.c, g=self.g, g2=self.g2, s=self.s, m0=self.m0,
                    alpha0=self.alpha0, beta0=self.beta0, q=self.q, Qs=self.Qs, zstar=self.zs,
                    zminus=self.zm, lam=self.lam, Theta0=self.Theta0, saddle=self.saddle)

    def tau(self):
        with mp.workdps(self.dps):
            if self.saddle:
                return 1 / (2 * self.c * self.a * abs(self.ms))
            m_inf, _ = self._m_and_dm_inf()
            return 1 / (self.a * 2 * self.c * mp.sqrt(m_inf * m_inf + self.g2))

    # -- t_learn: root of |m(t) - m*| = sqrt(fraction) |m0 - m*|, bisection in log t --------------------
    def t_learn(self, fraction: float = 0.1):
        with mp.workdps(self.dps):
            if self.m0 == self.ms:
                return mpf(0)
            target = mp.sqrt(_mp(fraction)) * abs(self.m0 - self.ms)
            _, dm_inf = self._m_and_dm_inf()
            if abs(dm_inf) >= target:
                return mp.inf  # never (saddle, or g = 0 with m0 = 0)

            def h(u):  # decreasing in u = ln t (m moves monotonically, section 3)
                return abs(self._m_and_dm(mp.exp(u))[1]) - target

            u0 = mp.log(self.tau())
            lo = hi = u0
            while h(hi) > 0:
                hi += 2
            while h(lo) < 0:
                lo -= 2
            tol = mpf(10) ** (-(self.dps * 3) // 4)
            while hi - lo > tol * max(1, abs(hi)):
                mid = (lo + hi) / 2
                if h(mid) > 0:
                    lo = mid
                else:
                    hi = mid
            return mp.exp((lo + hi) / 2)

    # -- exact discrete GD (section 9) -------------------------------------------------------------------
    def gd(self, nsteps: int, perturb=0, keep=None) -> dict:
        """{k: state after k GD steps} for k in keep (default 0..nsteps).  alpha <- alpha (1 - c r)^2, beta <- beta (1 + c r)^2;
        with p = u/sqrt(eta_u), q = w/sqrt(eta_w): p - q and p + q scale by (1 +- c r), so Delta and
        sqrt(G) are multiplied by (1 - c^2 r^2) each step (checked against vector GD in test_reference)."""
        out = {}
        keep = set(range(nsteps + 1)) if keep is None else set(keep)
        with mp.workdps(self.dps):
            k, c, a, ms = self.k, self.c, self.a, self.ms
            al, be, De, G = self.alpha0, self.beta0, self.Delta, self.G
            if perturb:  # relative perturbations (of m0, g^2, Delta, G): conditioning of the map
                pm, pg, pd, pG = (1 + mpf(x) for x in perturb)
                m0, g2 = self.m0 * pm, self.g2 * pg
                sp = mp.sqrt(m0 * m0 + g2)
                if m0 >= 0:
                    al = (sp + m0) / 2
                    be = g2 / 4 / al if al > 0 else mpf(0)
                else:
                    be = (sp - m0) / 2
                    al = g2 / 4 / be
                De, G = De * pd, G * pG
            for step in range(nsteps + 1):
                m = al - be if step or perturb else self.m0
                if step in keep:
                    Theta = 2 * c * (al + be) if step or perturb else self.Theta0
                    den = mp.sqrt(m * m + k * k * G)
                    nu2, nw2 = self._norms(m, Theta, De, G)
                    if step == 0 and not perturb and self.p.G is None:
                        nu2, nw2 = self.U, self.W
                    out[step] = dict(
                        m=m, dm=m - ms, Theta=Theta, zeta=m / den if den > 0 else None, norm_u2=nu2,
                        norm_w2=nw2, loss=a * (m - ms) ** 2 / 2, g2=4 * al * be,
                        ntk_change=Theta / self.Theta0 - 1 if self.Theta0 > 0 else None, zeros_ok=True)
                if step == nsteps:
                    break
                r = a * (m - ms)
                f, h = 1 - c * r, 1 + c * r
                al, be, De, G = al * f * f, be * h * h, De * f * h, G * (f * h) ** 2
        return out


# ---------------------------------------------------------------------------------------------------------
# Tolerances (docs/theory.md section 8) -- shared by the precision check here and by the accuracy tests
# ---------------------------------------------------------------------------------------------------------
def m_scale(m, inv, g2=None) -> mpf:
    """max(|m|, min(sqrt(m^2 + g^2), |m0| + |m*|)): the scale of the m bound in docs/theory.md section 8."""
    g2 = inv["g2"] if g2 is None else g2
    return max(abs(m), min(mp.sqrt(m * m + g2), abs(inv["m0"]) + abs(inv["ms"])))


def state_tolerances(st: dict, inv: dict, norm_floor=(0, 0), mlin_time=None) -> dict:
    """Absolute tolerance for every key of a reference state (None where the quantity is undefined).

    norm_floor: absolute floor for (|u|^2, |w|^2) caused by inputs that are inconsistent at the rounding
    level (a sampled Gram's G is not exactly U W - V^2); (0, 0) for explicit/typical Grams.
    """
    with mp.workdps(40):
        m, Theta, c = st["m"], st["Theta"], inv["c"]
        g2 = st.get("g2", inv["g2"])  # GD states carry their own (non-conserved) g^2
        sm = m_scale(m, inv, g2)
        tol_m = REL * sm
        near_cross = abs(m) < CROSSING * min(mp.sqrt(m * m + g2), abs(inv["m0"]) + abs(inv["ms"]))
        tol = dict(m=tol_m, dm=max(tol_m, REL * abs(st["dm"])))

        def smooth(name, value, dfdm, floor=0):
            bound = REL * abs(value)
            if near_cross and Theta > 0:
                bound = max(bound, abs(dfdm) * tol_m)
            tol[name] = max(bound, floor)

        smooth("Theta", Theta, 4 * c * c * m / Theta if Theta > 0 else 0)
        smooth("norm_u2", st["norm_u2"], 2 * inv["eu"] * m / Theta if Theta > 0 else 0, norm_floor[0])
        smooth("norm_w2", st["norm_w2"], 2 * inv["ew"] * m / Theta if Theta > 0 else 0, norm_floor[1])
        ntk = st["ntk_change"]
        if ntk is None:
            tol["ntk_change"] = None
        else:
            bound = REL * abs(ntk)
            dntk = 4 * c * c * abs(m) / (Theta * inv["Theta0"]) if Theta > 0 else 0
            if near_cross or abs(m + inv["m0"]) < NTK_ZERO * sm:
                bound = max(bound, dntk * tol_m)
            tol["ntk_change"] = bound
        den = mp.sqrt(m * m + inv["k"] ** 2 * inv["G"])
        tol["zeta"] = tol_m / den if st["zeta"] is not None else None
        # excess loss: not listed in section 8; held to the error induced by the allowed error of m
        tol["loss"] = max(REL * st["loss"], inv["a"] * (abs(st["dm"]) * tol_m + tol_m * tol_m / 2))
        # m_lin (frozen-NTK prediction): 1e-9 relative, or absolute at the scale of its two terms
        if "m_lin" in st:
            e_lin = abs(st["m_lin"] - inv["ms"])
            tol["m_lin"] = REL * max(abs(st["m_lin"]), min(abs(inv["ms"]), e_lin)) + THETA0_ROUNDING * abs(
                st.get("m_lin_dlogtheta0", 0))
        return tol


def _inv_for_tol(model: _Model) -> dict:
    d = model.invariants()
    d.update(k=model.k, eu=model.eu, ew=model.ew, a=model.a, ms=model.ms)
    return d


def _close(x, y, tol) -> bool:
    if x is None or y is None or tol is None:
        return x is None and y is None
    if mp.isinf(x) or mp.isinf(y):
        return x == y
    return abs(x - y) <= AGREEMENT * tol


def _adaptive(point: Point, compute: Callable[[_Model], object], agree: Callable[[object, object, _Model], bool]):
    dps = BASE_DPS
    lo = compute(_Model(point, dps))
    while dps < MAX_DPS:
        hi_model = _Model(point, 2 * dps)
        hi = compute(hi_model)
        if agree(lo, hi, hi_model):
            return hi, hi_model
        lo, dps = hi, 2 * dps
    raise ArithmeticError(f"reference did not converge up to {MAX_DPS} digits for {point}")


def _states_agree(lo, hi, model):
    inv = _inv_for_tol(model)
    los = lo if isinstance(lo, list) else [lo]
    his = hi if isinstance(hi, list) else [hi]
    for a_, b_ in zip(los, his):
        tol = state_tolerances(b_, inv)
        for key in ("m", "dm", "Theta", "zeta", "norm_u2", "norm_w2", "loss", "m_lin", "ntk_change"):
            if key in b_ and not _close(a_[key], b_[key], tol[key]):
                return False
            if key in b_ and b_[key] == 0 and not b_["zeros_ok"]:
                return False
    return True


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------
class Reference:
    """High-precision reference for one point.  All returned numbers are mpf (or None if undefined)."""

    def __init__(self, point: Point):
        self.point = point
        self._m = _Model(point, 2 * BASE_DPS)

    def invariants(self) -> dict:
        """G, Delta, c, g, g2, s, m0, alpha0, beta0, q, Qs (= Q* = sqrt(m*^2 + g^2)), zstar, zminus, lam,
        Theta0, saddle; plus the inputs k, eu, ew, a, ms.  (Exact algebra at 100 digits; no cancellation
        except Delta and G, whose numerators are exact.)"""
        return _inv_for_tol(self._m)

    def state(self, t: float) -> dict:
        """m, dm = m - m*, Theta, zeta, norm_u2, norm_w2, loss (excess), m_lin, ntk_change at time t
        (a float, may be inf)."""
        st, _ = _adaptive(self.point, lambda mo: mo.state(t), _states_agree)
        return st

    def states(self, ts) -> list:
        st, _ = _adaptive(self.point, lambda mo: [mo.state(t) for t in ts], _states_agree)
        return st

    def tau(self) -> mpf:
        return self._m.tau()

    def t_learn(self, fraction: float = 0.1) -> mpf:
        def agree(lo, hi, model):
            if mp.isinf(lo) or mp.isinf(hi) or hi == 0:
                return lo == hi
            return abs(lo - hi) <= AGREEMENT * REL * hi
        val, _ = _adaptive(self.point, lambda mo: mo.t_learn(fraction), agree)
        return val

    def gd(self, nsteps: int, keep=None) -> dict:
        """Exact GD states after k steps (section 9), keys as in state() plus g2, as {k: state} for k in
        `keep` (default: every k = 0..nsteps)."""
        keep = sorted(set(range(nsteps + 1) if keep is None else (int(k) for k in keep)))

        def compute(mo):
            traj = mo.gd(nsteps, keep=keep)
            return [traj[k] for k in keep]

        sts, _ = _adaptive(self.point, compute, _gd_agree)
        return dict(zip(keep, sts))

    def gd_limit(self, max_steps: int = 100_000) -> dict | None:
        """The end of exact GD, iterated at 100 digits until |m - m*| <= 1e-60 (|m*| + alpha + beta), where
        what remains changes nothing at float64: alpha, beta, P (the product of the factors 1 - c^2 r^2), m,
        Theta, zeta, ntk_change and the steps taken; None if it has not converged within max_steps."""
        mo = self._m
        with mp.workdps(mo.dps):
            c, a, ms = mo.c, mo.a, mo.ms
            alpha, beta, P = mo.alpha0, mo.beta0, mpf(1)
            for step in range(max_steps + 1):
                m = alpha - beta
                if abs(m - ms) <= mpf(10) ** -60 * (abs(ms) + alpha + beta):
                    Theta = 2 * c * (alpha + beta)
                    den = mp.sqrt(m * m + mo.k * mo.k * mo.G * P * P)
                    return dict(alpha=alpha, beta=beta, P=P, m=m, Theta=Theta, zeta=m / den if den > 0 else None,
                                ntk_change=Theta / mo.Theta0 - 1 if mo.Theta0 > 0 else None, steps=step)
                f, h = 1 - c * a * (m - ms), 1 + c * a * (m - ms)
                alpha, beta, P = alpha * f * f, beta * h * h, P * f * h
        return None

    def gd_amplification(self, nsteps: int, rho: float = 1e-20, keep=None) -> dict:
        """Condition number of the GD state after k = 0..nsteps steps: the largest change of m, Theta,
        |u|^2, |w|^2 (in units of rho times the scale of their test tolerance) caused by relative
        perturbations of size rho of the initial m0, g^2, Delta and G (four sign patterns).  A float
        evaluation cannot be expected to beat ~1e-16 times this."""
        keep = sorted(set(range(nsteps + 1) if keep is None else (int(k) for k in keep)))
        base = _Model(self.point, 2 * BASE_DPS)
        ref = base.gd(nsteps, keep=keep)
        amps = {k: mpf(0) for k in keep}
        inv = _inv_for_tol(base)
        tols = {k: state_tolerances(ref[k], inv) for k in keep}
        patterns = [(1, 1, 1, 1), (-1, 1, -1, 1), (1, -1, 1, -1), (-1, -1, 1, 1)]
        with mp.workdps(2 * BASE_DPS):
            for pat in patterns:
                pert = base.gd(nsteps, perturb=tuple(x * rho for x in pat), keep=keep)
                for k in keep:
                    x, y, tol = ref[k], pert[k], tols[k]
                    for key in ("m", "Theta", "norm_u2", "norm_w2"):
                        scale = tol[key] / REL
                        if scale > 0:
                            amps[k] = max(amps[k], abs(x[key] - y[key]) / (rho * scale))
        return amps

    # -- order parameters and labels (section 6) --------------------------------------------------------
    def order_parameters(self, horizon: float = math.inf) -> dict:
        inv = self.invariants()
        s0 = self.state(0.0)
        sT = self.state(horizon)
        z0, zT = s0["zeta"], sT["zeta"]
        m0, mT = inv["m0"], sT["m"]
        crosses = m0 * mT < 0 or (m0 != 0 and mT == 0)
        if inv["G"] == 0 or z0 is None or zT is None:
            zmin = align = disalign = None  # parallel layers: |zeta| = 1, amounts undefined (section 6)
        else:
            zmin = mpf(0) if crosses else min(abs(z0), abs(zT))
            align, disalign = abs(zT) - zmin, abs(z0) - zmin
        if horizon == math.inf or m0 == inv["ms"]:
            not_conv = False
        else:
            not_conv = sT["loss"] > mpf("0.01") * s0["loss"]
        return dict(ntk_change=sT["ntk_change"], zeta0=z0, zetaT=zT, min_abs_zeta=zmin, crosses=crosses,
                    alignment=align, disalignment=disalign, not_converged=not_conv,
                    loss_ratio=sT["loss"] / s0["loss"] if s0["loss"] > 0 else None)

    def classify(self, horizon=math.inf, ntk_threshold=0.1, alignment_threshold=0.1, margin=1e-6):
        """(label, ambiguous): label per docs/theory.md section 6; ambiguous=True when any compared quantity is
        within a relative `margin` of its threshold (or alignment ~ disalignment when that decides)."""
        inv = self.invariants()
        if inv["saddle"]:
            return "saddle", False
        op = self.order_parameters(horizon)
        nt, at = mpf(ntk_threshold), mpf(alignment_threshold)
        ntk = abs(op["ntk_change"])
        amb = abs(ntk - nt) <= margin * nt
        al, dis = op["alignment"], op["disalignment"]
        if al is not None:
            amb = amb or abs(al - at) <= margin * at or abs(dis - at) <= margin * at
            if max(al, dis) >= at:
                amb = amb or abs(al - dis) <= margin * at
        if ntk < nt:
            if al is None or max(al, dis) < at:
                return "kernel", amb
            return ("kernel_aligning" if al >= dis else "kernel_disaligning"), amb
        if al is None or max(al, dis) < at:
            return "rescaling", amb
        return ("alignment" if al >= dis else "disalignment"), amb


def _gd_agree(lo, hi, model):
    return _states_agree(lo, hi, model)
