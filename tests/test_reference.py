"""Self-checks of the high-precision reference (tests/reference.py), independent of phasediag.core.

(a) the closed form against a high-precision Taylor integration (mpmath.odefun) of the scalar ODE
    dm/dt = -2c sqrt(m^2 + g^2)(a m - b), including a sign crossing and the g = 0 logistic;
(b) against a float (DOP853, rtol 1e-13) integration of the d-dimensional vector flow of section 1
    (m, Theta, |u|^2, |w|^2, zeta, i.e. also the conservation and alignment laws of section 3);
(c) the exact GD map of section 9 against plain vector gradient descent;
plus: the closed form satisfies its ODE at random times (mp.diff), the g -> 0 limit of the g > 0 formula
is the g = 0 logistic, t = inf is the limit of large t, t_learn is a root of the loss condition,
section 8's cancellation-free 1 - z* equals the literal one, and the precision loop converges over the
full ranges of section 8.
Run (from the repository root): python3 -m pytest tests/test_reference.py -q -W error
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from mpmath import mp, mpf
from scipy.integrate import solve_ivp

from reference import Point, Reference, _Model, m_scale
from strategies import case_and_times

pytestmark = pytest.mark.filterwarnings("error")


def _ode_rhs(inv):
    c, g2, a, ms = inv["c"], inv["g2"], inv["a"], inv["ms"]
    return lambda t, m: -2 * c * mp.sqrt(m * m + g2) * a * (m - ms)


# (point, times): moderate rates so that the Taylor integrator is fast
ODE_CASES = [
    (Point(1.0, 0.5, 0.25, 1.3, 2.0, U=0.7, W=1.9, V=0.4), [0.3, 1.0, 2.5]),       # generic, m0 m* > 0
    (Point(0.5, 1.0, 1.0, 1.0, 1.5, U=0.5, W=0.3, V=-0.35), [0.5, 1.5, 3.0, 6.0]),  # m crosses 0
    (Point(1.0, 1.0, 1.0, 2.0, -0.7, U=1e-4, W=4e-4, V=1e-4), [1.0, 4.0, 8.0]),      # small init, m* < 0
    (Point(1.0, 1.0, 1.0, 1.0, 1.0, U=0.25, W=0.25, V=0.25), [0.5, 2.0, 5.0]),       # g = 0, logistic
    (Point(1.0, 1.0, 1.0, 1.0, -1.0, U=0.25, W=0.25, V=0.25), [0.5, 2.0, 5.0]),      # g = 0, saddle
    (Point(1.0, 1.0, 1.0, 1.0, 1e2, U=1e-19, W=1e-19, V=5e-20), [0.1, 0.2, 0.24, 0.3]),  # plateau, m ~ 1e-19
    (Point(1e-3, 1.0, 1.0, 1.0, 1.0, U=1e6, W=1e6, V=-3e2), [0.1, 0.5, 1.0, 3.0]),   # kernel, alpha ~ beta
]


@pytest.mark.parametrize("point,times", ODE_CASES)
def test_closed_form_matches_taylor_integration_of_scalar_ode(point, times):
    ref = Reference(point)
    inv = ref.invariants()
    with mp.workdps(30):
        sol = mp.odefun(_ode_rhs(inv), 0, inv["m0"])
        for t in times:
            m_ode = sol(mpf(t))
            m_ref = ref.state(t)["m"]
            assert abs(m_ode - m_ref) <= mpf("1e-25") * m_scale(m_ref, inv)


def _vector_flow(kappa, eu, ew, a, ms, u0, w0, times):
    d = len(u0)

    def rhs(t, y):
        u, w = y[:d], y[d:]
        r = a * (kappa * (u @ w) - ms)
        return np.concatenate([-eu * kappa * r * w, -ew * kappa * r * u])

    sol = solve_ivp(rhs, (0, max(times)), np.concatenate([u0, w0]), method="DOP853", t_eval=times,
                    rtol=1e-13, atol=1e-16)
    assert sol.success
    return sol.y[:d].T, sol.y[d:].T


VECTOR_CASES = [
    # kappa, eta_u, eta_w, a, m*, d, scale of u0, scale of w0, seed, t_max
    (1.0, 0.3, 0.1, 1.0, 1.5, 4, 0.3, 0.5, 0, 12.0),
    (0.2, 2.0, 0.5, 0.7, -2.0, 3, 1.0, 0.2, 1, 8.0),
    (1.0, 1.0, 1.0, 1.0, 3.0, 5, 0.05, 0.05, 2, 6.0),  # small init: plateau then learning
]


@pytest.mark.parametrize("kappa,eu,ew,a,ms,d,su,sw,seed,tmax", VECTOR_CASES)
def test_reference_matches_vector_gradient_flow(kappa, eu, ew, a, ms, d, su, sw, seed, tmax):
    rng = np.random.default_rng(seed)
    u0, w0 = su * rng.standard_normal(d), sw * rng.standard_normal(d)
    times = np.linspace(0, tmax, 9)
    us, ws = _vector_flow(kappa, eu, ew, a, ms, u0, w0, times)
    ref = Reference(Point(kappa, eu, ew, a, ms, U=float(u0 @ u0), W=float(w0 @ w0), V=float(u0 @ w0)))
    for t, u, w in zip(times, us, ws):
        st_ = ref.state(float(t))
        m = kappa * (u @ w)
        theta = kappa**2 * (ew * (u @ u) + eu * (w @ w))
        zeta = (u @ w) / math.sqrt((u @ u) * (w @ w))
        scale = max(abs(float(st_["m"])), abs(ms))
        assert abs(m - float(st_["m"])) <= 1e-9 * scale
        assert theta == pytest.approx(float(st_["Theta"]), rel=1e-9)
        assert u @ u == pytest.approx(float(st_["norm_u2"]), rel=1e-9)
        assert w @ w == pytest.approx(float(st_["norm_w2"]), rel=1e-9)
        assert zeta == pytest.approx(float(st_["zeta"]), rel=1e-9, abs=1e-12)


GD_CASES = [
    # kappa, eta_u, eta_w, a, m*, d, su, sw, seed, steps  (converging, catapult-ish, imbalanced)
    (1.0, 0.2, 0.1, 1.0, 1.5, 4, 0.5, 0.5, 3, 60),
    (1.0, 0.45, 0.45, 1.0, 0.5, 3, 1.0, 1.0, 4, 60),  # catapult: a Theta0 = 2.86
    (0.3, 3.0, 0.2, 2.0, -1.0, 6, 0.4, 0.8, 5, 60),
]


@pytest.mark.parametrize("kappa,eu,ew,a,ms,d,su,sw,seed,steps", GD_CASES)
def test_gd_map_matches_vector_gradient_descent(kappa, eu, ew, a, ms, d, su, sw, seed, steps):
    rng = np.random.default_rng(seed)
    u, w = su * rng.standard_normal(d), sw * rng.standard_normal(d)
    ref = Reference(Point(kappa, eu, ew, a, ms, U=float(u @ u), W=float(w @ w), V=float(u @ w))).gd(steps)
    assert sorted(ref) == list(range(steps + 1))
    for k in range(steps + 1):
        st_ = ref[k]
        m = kappa * (u @ w)
        scale = max(abs(m), abs(ms))
        assert abs(m - float(st_["m"])) <= 1e-10 * scale
        assert kappa**2 * (ew * (u @ u) + eu * (w @ w)) == pytest.approx(float(st_["Theta"]), rel=1e-10)
        assert u @ u == pytest.approx(float(st_["norm_u2"]), rel=1e-10)
        assert w @ w == pytest.approx(float(st_["norm_w2"]), rel=1e-10)
        assert (u @ w) / math.sqrt((u @ u) * (w @ w)) == pytest.approx(float(st_["zeta"]), rel=1e-10)
        r = a * (m - ms)
        u, w = u - eu * kappa * r * w, w - ew * kappa * r * u


def test_closed_form_satisfies_function_space_ode_at_random_times():
    rng = np.random.default_rng(7)
    for _ in range(10):
        p = Point(float(10 ** rng.uniform(-1, 1)), float(10 ** rng.uniform(-1, 1)), float(10 ** rng.uniform(-1, 1)),
                  float(10 ** rng.uniform(-1, 1)), float(rng.choice([-1, 1]) * 10 ** rng.uniform(-1, 1)),
                  U=float(10 ** rng.uniform(-3, 1)), W=float(10 ** rng.uniform(-3, 1)), V=0.0)
        p = Point(**{**p.__dict__, "V": float(rng.uniform(-0.9, 0.9)) * math.sqrt(p.U * p.W)})
        ref = Reference(p)
        model = _Model(p, 60)
        inv = ref.invariants()
        tau = float(ref.tau())
        for x in (0.1, 1.0, 3.0):
            with mp.workdps(60):
                t = mpf(x * tau)
                dmdt = mp.diff(lambda tt: model._m_and_dm(tt)[0], t)
                m = model._m_and_dm(t)[0]
                theta = 2 * inv["c"] * mp.sqrt(m * m + inv["g2"])
                assert abs(dmdt + theta * inv["a"] * (m - inv["ms"])) <= mpf("1e-30") * theta * inv["a"] * (
                    abs(m) + abs(inv["ms"]))


def test_g_to_zero_limit_of_closed_form_is_the_logistic():
    # parallel layers (G = 0) and eta_w = 1 + 2^-52: Delta ~ 2^-54, g ~ 3e-17 |m0|; the g > 0 formula
    # must approach the g = 0 sign-locked logistic (converging and saddle)
    for ms in (1.0, -1.0):
        exact = Reference(Point(1.0, 1.0, 1.0, 1.0, ms, U=0.25, W=0.25, V=0.25))
        near = Reference(Point(1.0, 1.0, 1.0 + 2.0**-52, 1.0, ms, U=0.25, W=0.25, V=0.25))
        assert exact.invariants()["g2"] == 0 and 0 < near.invariants()["g2"] < mpf("1e-30")
        for t in (0.5, 2.0, 5.0, 10.0):
            a, b = exact.state(t), near.state(t)
            assert abs(a["m"] - b["m"]) <= mpf("1e-14") * abs(a["m"])
            assert abs(a["Theta"] - b["Theta"]) <= mpf("1e-14") * abs(a["Theta"])


def test_large_time_approaches_end_of_training():
    for p in (Point(1.0, 0.5, 0.25, 1.3, 2.0, U=0.7, W=1.9, V=0.4),
              Point(0.5, 1.0, 1.0, 1.0, 1.5, U=0.5, W=0.3, V=-0.35),
              Point(1.0, 1.0, 1.0, 1.0, -1.0, U=0.25, W=0.25, V=0.25)):
        ref = Reference(p)
        end, late = ref.state(math.inf), ref.state(200 * float(ref.tau()))
        for key in ("m", "Theta", "norm_u2", "norm_w2", "ntk_change"):
            assert abs(end[key] - late[key]) <= mpf("1e-40") * (1 + abs(end[key]))
        assert end["Theta"] == 2 * ref.invariants()["c"] * abs(end["m"]) or ref.invariants()["g2"] > 0


def test_end_of_training_values_of_section_5():
    ref = Reference(Point(1.0, 0.5, 0.25, 1.3, 2.0, U=0.7, W=1.9, V=0.4))
    inv, end = ref.invariants(), ref.state(math.inf)
    with mp.workdps(60):
        assert end["m"] == inv["ms"]
        assert abs(end["Theta"] - 2 * inv["c"] * mp.hypot(inv["ms"], inv["g"])) < mpf("1e-50")
        assert abs(end["zeta"] - inv["ms"] / mp.sqrt(inv["ms"] ** 2 + inv["k"] ** 2 * inv["G"])) < mpf("1e-50")
        assert abs(ref.tau() * inv["a"] * end["Theta"] - 1) < mpf("1e-50")
        # norm cost: kappa |u_inf| |w_inf| = sqrt(m*^2 + kappa^2 G)
        assert abs(inv["k"] * mp.sqrt(end["norm_u2"] * end["norm_w2"])
                   - mp.sqrt(inv["ms"] ** 2 + inv["k"] ** 2 * inv["G"])) < mpf("1e-40")
    # exactly balanced (U/eta_u = W/eta_w) and parallel (U W = V^2) in floats, m0 m* < 0: the g = 0 saddle
    exact_saddle = Reference(Point(1.0, 4.0, 1.0, 0.5, -2.0, U=1.0, W=0.25, V=0.5))
    inv = exact_saddle.invariants()
    assert inv["g2"] == 0 and inv["saddle"]
    end = exact_saddle.state(math.inf)
    assert end["m"] == 0 and end["Theta"] == 0 and end["ntk_change"] == -1
    assert abs(end["norm_u2"]) < mpf("1e-90") and abs(end["norm_w2"]) < mpf("1e-90")
    assert abs(exact_saddle.tau() * 2 * inv["c"] * inv["a"] * 2 - 1) < mpf("1e-50")  # tau = 1/(2 c a |m*|)


def test_t_learn_is_the_root_of_the_loss_condition():
    for p in (Point(1.0, 0.5, 0.25, 1.3, 2.0, U=0.7, W=1.9, V=0.4),
              Point(1.0, 1.0, 1.0, 1.0, 1e2, U=1e-19, W=1e-19, V=1e-20),
              Point(1.0, 1.0, 1.0, 1.0, 1.0, U=0.25, W=0.25, V=0.25),      # g = 0 logistic
              Point(1.0, 1.0, 1.0, 1.0, 1.0, U=100.0, W=100.0, V=-100.0)):  # g = 0 saddle, |m0| >> |m*|
        ref = Reference(p)
        tl = ref.t_learn()
        assert 0 < tl < mp.inf
        model = _Model(p, 120)
        with mp.workdps(120):
            ratio = lambda t: (model._m_and_dm(t)[1] / (model.m0 - model.ms)) ** 2
            assert abs(ratio(tl) - mpf(0.1)) < mpf("1e-30")  # the float 0.1, as passed
            assert ratio(tl * (1 - mpf("1e-20"))) > mpf(0.1) > ratio(tl * (1 + mpf("1e-20")))
    # never: saddle with |m*| > sqrt(0.1) (|m0| + |m*|); m0 = m*: 0
    assert Reference(Point(1.0, 1.0, 1.0, 1.0, -1.0, U=0.25, W=0.25, V=0.25)).t_learn() == mp.inf
    assert Reference(Point(1.0, 1.0, 1.0, 1.0, 0.25, U=0.25, W=0.25, V=0.25)).t_learn() == 0


def test_section8_one_minus_zstar_form_equals_literal():
    rng = np.random.default_rng(11)
    for _ in range(20):
        U, W = 10 ** rng.uniform(-3, 3, size=2)
        p = Point(float(10 ** rng.uniform(-2, 2)), float(10 ** rng.uniform(-2, 2)), float(10 ** rng.uniform(-2, 2)),
                  float(10 ** rng.uniform(-2, 2)), float(rng.choice([-1, 1]) * 10 ** rng.uniform(-2, 2)),
                  U=float(U), W=float(W), V=float(rng.uniform(-1, 1) * math.sqrt(U * W)))
        inv = Reference(p).invariants()
        with mp.workdps(100):
            ms, m0, s, Qs = inv["ms"], inv["m0"], inv["s"], inv["Qs"]
            form = (ms - m0) * (ms + Qs + s + m0) / ((Qs + s) * (ms + Qs))
            assert abs(form - (1 - inv["zstar"])) < mpf("1e-80") * (1 + abs(form))
            # Theta0 from the layers (section 3) equals 2 c s; alpha0 beta0 = g^2/4; q relation
            theta0 = inv["k"] ** 2 * (inv["ew"] * mpf(p.U) + inv["eu"] * mpf(p.W))
            assert abs(theta0 - inv["Theta0"]) < mpf("1e-80") * theta0
            assert abs(inv["alpha0"] * inv["beta0"] - inv["g2"] / 4) < mpf("1e-80") * inv["g2"]
            assert abs(inv["lam"] - inv["a"] * 2 * inv["c"] * Qs) < mpf("1e-80") * inv["lam"]


# -- the precision loop converges over the full ranges of docs/theory.md section 8 --------------------------------
@settings(max_examples=150, deadline=None)
@given(data=case_and_times(n_times=3, kinds=("typical", "explicit")))
def test_precision_loop_converges_over_full_range(data):
    case, ref, ts = data
    for t in ts:
        st_ = ref.state(t)  # raises ArithmeticError if 3200 digits do not settle it
        assert st_["Theta"] >= 0
        # |u|^2 |w|^2 = G + m^2/kappa^2 (section 3), to the reference's own precision
        inv = ref.invariants()
        with mp.workdps(60):
            lhs = st_["norm_u2"] * st_["norm_w2"]
            rhs = inv["G"] + (st_["m"] / inv["k"]) ** 2
            assert abs(lhs - rhs) <= mpf("1e-20") * (rhs + (st_["norm_u2"] + st_["norm_w2"]) ** 2 * mpf("1e-20"))


def _gd_outcome_m0_zero(a_theta0, acm, nsteps=4000):
    """GD from m0 = 0 with a = c = 1, m* = acm (U = W = a Theta0/2, V = 0, balanced): the reference map."""
    x = a_theta0 / 2
    model = _Model(Point(1.0, 1.0, 1.0, 1.0, acm, U=x, W=x, V=0.0), 30)
    with mp.workdps(30):
        al, be, ms = model.alpha0, model.beta0, model.ms
        loss0 = peak = ms * ms / 2
        for _ in range(nsteps):
            m = al - be
            peak = max(peak, (m - ms) ** 2 / 2)
            if al + be > 1e20:
                return "diverges"
            if abs(m - ms) < mpf("1e-20"):
                return "catapult" if peak > loss0 * (1 + mpf("1e-9")) else "converges"
            r = m - ms
            al, be = al * (1 - r) ** 2, be * (1 + r) ** 2
        return "oscillates"


@pytest.mark.parametrize("acm", [0.3, 0.7])
def test_section9_catapult_window_for_m0_zero(acm):
    """docs/theory.md section 9: for m0 = 0 the catapult window is 2 < a Theta0 < 4 - (a c m*)^2."""
    upper = 4 - acm**2
    assert _gd_outcome_m0_zero(1.9, acm) == "converges"
    assert _gd_outcome_m0_zero(2.1, acm) == "catapult"
    assert _gd_outcome_m0_zero(upper * (1 - 1e-2), acm) == "catapult"
    assert _gd_outcome_m0_zero(upper * (1 + 1e-2), acm) in ("diverges", "oscillates")
