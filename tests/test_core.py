"""Core behaviour: limits, degenerate cases, independent closed forms of special cases, labels, GD outcomes.

Expected values come from independent formulas (the initial state read directly off the Gram, logistic
solutions of the scalar ODE in sign-locked cases, the theory's stated boundaries), never from the code itself.
The mpmath comparison over the full ranges lives in test_accuracy.py.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phasediag.core import (
    GD_OUTCOMES,
    PHASES,
    Problem,
    classify,
    explicit_gram,
    flow_state,
    gd_outcome,
    gd_state,
    invariants,
    kernel_prediction,
    ntk_change,
    order_parameters,
    relaxation_time,
    sample_gram,
    t_learn,
    typical_gram,
)


def log_uniform(lo, hi):
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0**e)


hyper = st.fixed_dictionaries(
    {
        "kappa": log_uniform(1e-8, 1e8),
        "lr_u": log_uniform(1e-6, 1e6),
        "lr_w": log_uniform(1e-6, 1e6),
        "a": log_uniform(1e-3, 1e3),
        "m_star": st.tuples(log_uniform(1e-3, 1e3), st.sampled_from([-1.0, 1.0])).map(lambda p: p[0] * p[1]),
        "width": log_uniform(1, 1e15).map(round),
        "var_u": st.one_of(st.just(0.0), log_uniform(1e-16, 1e4)),
        "var_w": st.one_of(st.just(0.0), log_uniform(1e-16, 1e4)),
        "seed": st.integers(0, 2**31),
    }
)


def point(p, sampled=True):
    gram = (sample_gram if sampled else lambda d, su, sw, seed: typical_gram(d, su, sw))(
        p["width"], p["var_u"], p["var_w"], seed=p["seed"]
    )
    return invariants(Problem(p["kappa"], p["lr_u"], p["lr_w"], p["a"], p["m_star"], gram)), gram


def close(x, y, rel=1e-13, abs_=0.0):
    return np.all(np.abs(np.asarray(x) - y) <= rel * np.abs(y) + abs_)


@settings(max_examples=300, deadline=None)
@given(hyper, st.booleans())
def test_time_zero_is_the_initial_state(p, sampled):
    inv, gram = point(p, sampled)
    s = flow_state(inv, 0.0)
    kappa = p["kappa"]
    assert close(s.m, kappa * gram.V, abs_=1e-300)
    assert close(s.ntk, kappa**2 * (p["lr_w"] * gram.U + p["lr_u"] * gram.W), abs_=1e-300)
    assert close(s.norm_u2, gram.U, rel=1e-12, abs_=1e-300)
    assert close(s.norm_w2, gram.W, rel=1e-12, abs_=1e-300)
    assert close(s.m_lin, s.m)
    assert ntk_change(inv, 0.0) == 0.0


@settings(max_examples=300, deadline=None)
@given(hyper, st.booleans())
def test_infinite_time_is_the_end_of_training(p, sampled):
    inv, gram = point(p, sampled)
    end = flow_state(inv, np.inf)
    kappa, m_star = p["kappa"], p["m_star"]
    assert all(np.all(np.isfinite(x)) for x in end)
    if inv.saddle:  # g = 0 and m0 m* <= 0: m decays to the saddle m = 0
        assert end.m == 0.0 and end.ntk == 0.0
        return
    c = kappa * math.sqrt(p["lr_u"] * p["lr_w"])
    assert close(end.m, m_star)
    assert close(end.ntk, 2 * c * math.hypot(m_star, float(inv.g)), rel=1e-12)
    assert close(end.alignment, m_star / math.hypot(m_star, kappa * math.sqrt(float(gram.G))), rel=1e-12)
    assert end.loss == 0.0
    assert close(end.m_lin, m_star)


@settings(max_examples=200, deadline=None)
@given(hyper)
def test_conservation_laws_along_the_closed_form(p):
    inv, gram = point(p)
    tau = float(relaxation_time(inv))
    t = np.array([1e-3, 0.3, 1.0, 3.0, 30.0]) * tau
    s = flow_state(inv, t)
    kappa, lr_u, lr_w = p["kappa"], p["lr_u"], p["lr_w"]
    # NTK law, with the layer norms (independent of how Theta was computed)
    assert close(s.ntk, kappa**2 * (lr_w * s.norm_u2 + lr_u * s.norm_w2), rel=1e-11)
    # imbalance Delta conserved: check it on the larger side of the two norms to avoid cancellation
    delta0 = gram.U / lr_u - gram.W / lr_w
    scale = gram.U / lr_u + gram.W / lr_w
    assert np.all(np.abs(s.norm_u2 / lr_u - s.norm_w2 / lr_w - delta0) <= 1e-11 * (scale + s.norm_u2 / lr_u))
    # alignment law zeta = m / sqrt(m^2 + kappa^2 G)
    radius = np.sqrt(s.m**2 + kappa**2 * gram.G)
    expected = np.divide(s.m, radius, out=np.zeros_like(s.m), where=radius > 0)  # zeta := 0 at 0/0
    assert np.all(np.abs(s.alignment - expected) <= 1e-12)


def logistic(m0, m_star, rate, t):
    """m' = rate/m* m (m* - m): sign-locked g = 0 flow with m0, m* > 0."""
    return m_star / (1.0 + (m_star / m0 - 1.0) * np.exp(-rate * t))


@pytest.mark.parametrize("m0,m_star", [(0.3, 2.0), (5.0, 0.5), (-0.3, -2.0)])
def test_balanced_parallel_layers_follow_the_logistic(m0, m_star):
    # d = 1, balanced (eta_u U = ... Delta = 0): g = 0, m cannot change sign (docs/theory.md section 4)
    kappa, lr, a = 1.5, 0.4, 2.0
    u = math.sqrt(abs(m0) / kappa)
    inv = invariants(Problem(kappa, lr, lr, a, m_star, explicit_gram(u * u, u * u, math.copysign(u * u, m0))))
    assert inv.g == 0 and not inv.saddle
    c = kappa * lr
    t = np.array([0.0, 0.1, 1.0, 5.0, np.inf])
    expected = np.sign(m0) * logistic(abs(m0), abs(m_star), 2 * c * a * abs(m_star), t)
    s = flow_state(inv, t)
    assert close(s.m, expected, rel=1e-13)
    assert close(s.ntk, 2 * c * np.abs(expected), rel=1e-13)
    assert np.all(np.abs(s.alignment) == 1.0)
    assert PHASES[classify(inv)] == "rescaling"


@pytest.mark.parametrize("m0", [0.7, -0.7, 0.0])
def test_saddle_never_learns(m0):
    kappa, lr, a, m_star = 1.0, 0.5, 1.0, -1.3 if m0 >= 0 else 1.3
    u = math.sqrt(abs(m0))
    inv = invariants(Problem(kappa, lr, lr, a, m_star, explicit_gram(u * u, u * u, math.copysign(u * u, m0))))
    assert inv.saddle
    t = np.array([0.0, 0.5, 2.0, 50.0, 1e6, np.inf])
    s = flow_state(inv, t)
    rate = 2 * kappa * lr * a * abs(m_star)
    # m' = -2 c a m (m - m*) with m m* <= 0: m decays to 0 without crossing, at final rate 2 c a |m*|
    x = np.exp(-rate * t)
    expected = m0 * abs(m_star) * x / (abs(m_star) + abs(m0) * (1 - x))
    assert close(s.m, expected, rel=1e-13)
    assert np.all(s.m * m0 >= 0)
    assert close(s.loss[-1], 0.5 * a * m_star**2)
    assert close(relaxation_time(inv), 1 / rate)
    assert PHASES[classify(inv)] == "saddle"
    assert t_learn(inv) == np.inf  # the loss can fall at most to a m*^2/2 > 10% of the initial


def test_saddle_with_large_start_reaches_the_target_loss():
    # m0 = 10, m* = -0.5: the loss a (m - m*)^2/2 falls below 10% of its start on the way to m = 0
    inv = invariants(Problem(1.0, 1.0, 1.0, 1.0, -0.5, explicit_gram(10.0, 10.0, 10.0)))
    tl = float(t_learn(inv))
    assert np.isfinite(tl)
    s = flow_state(inv, np.array([0.0, tl]))
    assert close(s.loss[1], 0.1 * s.loss[0], rel=1e-12)


def test_both_layers_zero_is_defined():
    inv = invariants(Problem(1.0, 1.0, 1.0, 1.0, 1.0, explicit_gram(0.0, 0.0, 0.0)))
    s = flow_state(inv, np.array([0.0, 1.0, np.inf]))
    assert np.all(s.m == 0) and np.all(s.ntk == 0) and np.all(s.alignment == 0)
    assert np.all(ntk_change(inv, np.array([1.0, np.inf])) == 0)
    assert t_learn(inv) == np.inf and PHASES[classify(inv)] == "saddle"


def test_zero_initialized_layer_learns_and_aligns_fully():
    # u0 = 0: G = 0, the layers become parallel as soon as u grows; zeta(0) = 0/0 is reported as 0
    inv = invariants(Problem(1.0, 1.0, 1.0, 1.0, 2.0, explicit_gram(0.0, 3.0, 0.0)))
    assert inv.g > 0 and not inv.saddle
    s = flow_state(inv, np.array([0.0, 0.1, np.inf]))
    assert s.alignment[0] == 0.0 and np.all(s.alignment[1:] == 1.0)
    assert close(s.m[-1], 2.0)
    op = order_parameters(inv)
    assert op.alignment_gain == 0 and op.disalignment == 0  # undefined at G = 0: no rotation
    assert PHASES[classify(inv)] == "rescaling"


def test_zero_teacher_with_balanced_parallel_start_decays_algebraically():
    # m* = 0 and g = 0: m' = -2 c a |m| m, m = m0 / (1 + 2 c a |m0| t): no exponential rate (tau = inf)
    inv = invariants(Problem(2.0, 0.5, 0.5, 3.0, 0.0, explicit_gram(1.0, 1.0, 1.0)))
    c, a, m0 = 1.0, 3.0, 2.0
    t = np.array([0.0, 0.2, 7.0, 1e9, np.inf])
    x = 2 * c * a * m0 * t
    s = flow_state(inv, t)
    assert close(s.m[:-1], m0 / (1 + x[:-1])) and s.m[-1] == 0
    assert close(ntk_change(inv, t)[:-1], -x[:-1] / (1 + x[:-1])) and ntk_change(inv, np.inf) == -1
    assert relaxation_time(inv) == np.inf
    r = math.sqrt(0.1)
    assert close(t_learn(inv), (1 / r - 1) / (2 * c * a * m0))


@settings(max_examples=300, deadline=None)
@given(hyper, st.floats(0.01, 0.9))
def test_t_learn_inverts_the_trajectory(p, fraction):
    inv, _ = point(p)
    tl = float(t_learn(inv, fraction))
    if inv.m0 == inv.teacher:
        assert tl == 0.0
        return
    if not np.isfinite(tl):
        assert inv.saddle
        return
    s = flow_state(inv, np.array([0.0, tl]))
    assert close(s.loss[1], fraction * s.loss[0], rel=1e-9)


def test_relaxation_time_is_the_final_exponential_rate():
    inv = invariants(Problem(0.3, 2.0, 0.7, 1.5, -0.8, explicit_gram(2.0, 5.0, 1.0)))
    tau = float(relaxation_time(inv))
    t1, t2 = 20 * tau, 21 * tau
    s = flow_state(inv, np.array([t1, t2]))
    slope = math.log(abs(s.m[1] - (-0.8)) / abs(s.m[0] - (-0.8))) / (t2 - t1)
    assert abs(slope * tau + 1) < 1e-6
    # and it is 1 / (a Theta_inf)
    assert close(tau, 1 / (1.5 * flow_state(inv, np.inf).ntk), rel=1e-13)


def test_theory_example_kernel_aligning():
    # docs/theory.md section 6: kappa = 1/d, eta_u = d, eta_w = 1/d at d = 4000: zeta 0.02 -> 0.70 with ntk_change ~1.2e-7
    d = 4000.0
    inv = invariants(Problem(1 / d, d, 1 / d, 1.0, 1.0, explicit_gram(d, d, 0.02 * d)))
    op = order_parameters(inv)
    assert abs(op.alignment_init - 0.02) < 1e-12
    assert abs(op.alignment_final - 1 / math.sqrt(1 + (1 - 0.02**2))) < 1e-12  # kappa^2 G = 1 - 0.02^2
    theta0 = (1 / d**2) * ((1 / d) * d + d * d)
    c2 = 1 / d**2
    expected = math.sqrt(1 + 4 * c2 * (1 - (0.02 * d / d) ** 2) / theta0**2) - 1  # NTK law at m = m*
    assert close(op.ntk_change, expected, rel=1e-9)
    assert 1.1e-7 < op.ntk_change < 1.3e-7
    assert PHASES[classify(inv)] == "kernel_aligning"


def test_kernel_disaligning_exists():
    # mirror image of the above, missing from the theory's list: imbalanced layers, |m0| > |m*|
    inv = invariants(Problem(1.0, 1e3, 1e-3, 1.0, 0.1, explicit_gram(10.0, 10.0, 3.0)))
    op = order_parameters(inv)
    assert abs(op.ntk_change) < 1e-6 and op.disalignment > 0.25
    assert PHASES[classify(inv)] == "kernel_disaligning"


def test_mechanisms_of_feature_learning():
    small = invariants(Problem(1.0, 1.0, 1.0, 1.0, 1.0, typical_gram(100, 1e-8, 1e-8)))
    assert PHASES[classify(small)] == "alignment"  # small init: NTK grows from ~0 while layers align
    big_start = invariants(Problem(1.0, 1.0, 1.0, 1.0, 0.01, explicit_gram(4.0, 4.0, 3.9)))
    assert PHASES[classify(big_start)] == "disalignment"  # |m0| >> |m*|: layers turn away, NTK shrinks
    wide = invariants(Problem(1.0, 1.0, 1.0, 1.0, 1.0, typical_gram(10**6, 1.0, 1.0)))
    assert PHASES[classify(wide)] == "kernel"


def test_thresholds_move_the_boundary():
    inv = invariants(Problem(1.0, 1.0, 1.0, 1.0, 1.0, typical_gram(10, 0.3, 0.3)))
    change = float(ntk_change(inv))
    assert PHASES[classify(inv, ntk_threshold=change * 1.01)].startswith("kernel")
    assert not PHASES[classify(inv, ntk_threshold=change * 0.99)].startswith("kernel")


def test_finite_horizon_flags_not_converged():
    inv = invariants(Problem(1.0, 1.0, 1.0, 1.0, 1.0, typical_gram(100, 1e-8, 1e-8)))
    tl99 = float(t_learn(inv, 0.01))
    assert order_parameters(inv, horizon=0.5 * tl99).not_converged
    assert not order_parameters(inv, horizon=1.01 * tl99).not_converged
    assert not order_parameters(inv).not_converged


def test_arrays_broadcast_points_against_times():
    width = np.array([10.0, 1e3, 1e6])
    inv = invariants(Problem(1 / np.sqrt(width), 1.0, 1.0, 1.0, 1.0, typical_gram(width, 1.0, 1.0)))
    t = np.array([0.0, 1.0, np.inf])
    grid = flow_state(
        invariants(Problem(1 / np.sqrt(width[:, None]), 1.0, 1.0, 1.0, 1.0, typical_gram(width[:, None], 1.0, 1.0))),
        t,
    )
    assert grid.m.shape == (3, 3)
    for i in range(3):
        single = invariants(Problem(1 / np.sqrt(width[i]), 1.0, 1.0, 1.0, 1.0, typical_gram(width[i], 1.0, 1.0)))
        assert np.array_equal(flow_state(single, t).ntk, grid.ntk[i])
    assert classify(inv).shape == (3,)


def test_negative_time_is_rejected():
    inv = invariants(Problem(1.0, 1.0, 1.0, 1.0, 1.0, typical_gram(10, 1.0, 1.0)))
    with pytest.raises(ValueError):
        flow_state(inv, -1.0)


# ---- exact discrete GD (docs/theory.md section 9) ----

def gd_point(a_theta0, acm, m_star=1.0, a=1.0):
    """m0 = 0 (V = 0), d = 1, balanced rates: a Theta0 and a c m* set exactly."""
    c = acm / (a * m_star)
    x = a_theta0 / (2 * a * c)  # Theta0 = 2 c X with kappa = 1, eta = c, U = W = X
    return invariants(Problem(1.0, c, c, a, m_star, explicit_gram(x, x, 0.0)))


@pytest.mark.parametrize("acm", [0.05, 0.3])
def test_gd_outcome_boundaries_at_zero_start(acm):
    upper = 4 - acm**2  # docs/theory.md section 9: catapult window 2 < a Theta0 < 4 - (a c m*)^2 for m0 = 0
    cases = {1.0: "converges", 1.98: "converges", 2.02: "catapult", 0.99 * upper: "catapult",
             1.01 * upper: "diverges"}
    for a_theta0, expected in cases.items():
        assert GD_OUTCOMES[gd_outcome(gd_point(a_theta0, acm)).outcome] == expected, a_theta0


def test_gd_cannot_converge_when_a_c_m_star_exceeds_one():
    for acm in (1.05, 1.5, 3.0):
        for a_theta0 in (0.01, 0.5, 1.5):
            outcome = GD_OUTCOMES[gd_outcome(gd_point(a_theta0, acm), max_steps=20_000).outcome]
            assert outcome in ("oscillates", "diverges"), (acm, a_theta0, outcome)


def test_gd_converges_below_two_and_agrees_with_flow_at_small_steps():
    rng = np.random.default_rng(1)
    for _ in range(50):
        acm, a_theta0 = rng.uniform(0.001, 0.5), rng.uniform(0.01, 2.0)
        assert GD_OUTCOMES[gd_outcome(gd_point(a_theta0, acm)).outcome] == "converges"
    # a tiny learning rate: GD after k steps ~ flow at t = k (error O(step))
    inv = invariants(Problem(1.0, 1e-3, 1e-3, 1.0, 1.0, typical_gram(100, 0.01, 0.01)))
    k = np.array([0, 500, 2000, 8000])
    assert np.max(np.abs(gd_state(inv, k).m - flow_state(inv, k.astype(float)).m)) < 5e-3


def test_gd_saddle_stalls_and_small_init_plateau_is_decided():
    saddle = invariants(Problem(1.0, 0.1, 0.1, 1.0, -1.0, explicit_gram(1.0, 1.0, 1.0)))
    assert GD_OUTCOMES[gd_outcome(saddle).outcome] == "stalls"
    plateau = invariants(Problem(1.0, 1e-3, 1e-3, 1.0, 1.0, typical_gram(100, 1e-12, 1e-12)))
    res = gd_outcome(plateau, max_steps=10)  # decided at once by the monotone certificate
    assert GD_OUTCOMES[res.outcome] == "converges"


def test_gd_state_end_of_training_and_divergence():
    inv = gd_point(3.0, 0.2)
    s = gd_state(inv, [0, 1, np.inf])
    assert close(s.m[-1], 1.0, rel=1e-12) and s.loss[-1] < 1e-25
    assert s.ntk[-1] * 1.0 < 2.0  # a stable minimum: a Theta_inf < 2 after the catapult
    blow = gd_state(gd_point(6.0, 0.2), [0, 50, 100])
    assert np.isinf(blow.m[-1]) and np.isinf(blow.loss[-1]) and np.isfinite(blow.m[0])


def test_gd_steps_must_be_integers():
    with pytest.raises(ValueError):
        gd_state(gd_point(1.0, 0.1), [0, 1.5])


# ---- the kernel (frozen-NTK) prediction (docs/theory.md section 5) ----

EPS = np.finfo(float).eps
KERNEL_SLOPES = [(0.0, 1.0), (1e-3, 1.0), (0.7, 1.0), (3.0, 1.0), (-0.5, 1.0), (1e3, -2.0), (2e-3, 1e3),
                 (-1e3, 1e-3), (1.0, 1.0), (-2.0, -2.0)]  # (m0, m*); the last two: m0 = m*
KERNEL_RATES = [(1.0, 1.0), (0.37, 2.3), (1e3, 7e-6), (1e-3, 4e2)]  # (a, Theta0): a Theta0 from 7e-3 to 2.3
KERNEL_TIMES = np.array([0.0, 1e-300, 1e-18, 1e-9, 1e-3, 0.3, 0.69, 0.7, 1.0, 5.0, 50.0, 700.0, 1e4, 1e12])
GD_RATES = [(1.0, 1e-6), (1.0, 0.3), (0.5, 2.0), (2.0, 0.999), (1.0, 2.0), (1.0, 2.5), (3.0, 5.0 / 3.0),
            (0.1, 40.0)]  # (a, Theta0): a Theta0 = 1e-6 ... 5, i.e. 1 - a Theta0 from ~1 to -3 (diverging above 2)
GD_STEPS = np.array([0, 1, 2, 3, 7, 10, 64, 100, 1000, 10_000, 100_000, 1_000_000], dtype=float)


def _kernel_reference(m0, m_star, a, theta0, t, steps):
    """mpmath (60 digits) m_lin = m* + (m0 - m*) D and loss_lin = a (m0 - m*)^2 D^2 / 2 from the exact float
    inputs, D = exp(-a Theta0 t) or (1 - a Theta0)^k; returns (m_lin, loss_lin, D, x = a Theta0 t). Early on
    (x < 1) m_lin is summed as m0 + (m* - m0)(-expm1(-x)): at 60 digits exp(-1e-300) is 1."""
    from mpmath import mp, mpf

    with mp.workdps(60):
        m0, m_star, rate = mpf(m0), mpf(m_star), mpf(a) * mpf(theta0)
        if steps:
            x = mpf(0)
            d = (1 - rate) ** int(t)
            m_lin = m_star + (m0 - m_star) * d
        else:
            x = rate * mpf(t)
            d = mp.exp(-x)
            m_lin = m0 + (m_star - m0) * -mp.expm1(-x) if x < 1 else m_star + (m0 - m_star) * d
        return m_lin, mpf(a) * (m0 - m_star) ** 2 * d * d / 2, d, x


def _check_kernel(m0, m_star, a, theta0, t, steps):
    got = kernel_prediction(m0, m_star, theta0, a, t, steps=steps)
    assert got.m_lin.shape == got.loss_lin.shape == t.shape
    for k, tk in enumerate(t):
        m_exp, loss_exp, d, x = _kernel_reference(m0, m_star, a, theta0, tk, steps)
        m_got, loss_got = float(got.m_lin[k]), float(got.loss_lin[k])
        where = f"m0={m0} m*={m_star} a={a} Theta0={theta0} t={tk} steps={steps}: m_lin {m_got!r} vs {m_exp}"
        if m0 == m_star:  # nothing to learn: exactly m*, zero loss, even where D overflows
            assert m_got == m_star and loss_got == 0.0, where
            continue
        if abs(m_exp) > np.finfo(float).max:  # a diverging linear model: the sign of the blow-up
            assert np.isinf(m_got) and np.sign(m_got) == np.sign(float(m_exp)), where
            continue
        gap, d, x = abs(m0 - m_star), abs(float(d)), float(x)
        if steps:  # GD: m* - (m* - m0) D, with 1 - a Theta0 rounded once and then raised to the k-th power
            d_rel = (tk + 2) * EPS * (1 + a * theta0 / max(abs(1 - a * theta0), 1e-300))
            tol = 4 * EPS * (abs(m_star) + gap * d) + gap * d * d_rel
            loss_rel = 8 * EPS + 2 * d_rel
        else:  # flow: rounding a Theta0 moves m_lin by ~ |m0 - m*| x D eps
            rate_term = 2 * EPS * gap * x * d
            if m0 * m_star >= 0:  # m_lin lies between m0 and m*: no cancellation, relatively accurate
                tol = 4 * EPS * abs(float(m_exp)) + rate_term
            else:  # a few ulps of the larger term of the form used
                terms = abs(m_star) + gap * d if d < 0.5 else abs(m0) + gap * (1 - d)
                tol = 4 * EPS * terms + rate_term
            loss_rel = (8 + 4 * x) * EPS
        assert abs(m_got - float(m_exp)) <= tol, where
        if tk == 0 and not steps:
            assert m_got == m0, where  # m_lin(0) = m0 exactly
        if float(loss_exp) > np.finfo(float).max:
            assert loss_got == np.inf, where
        elif float(loss_exp) > 1e-300:  # the loss is formed from D^2 directly: relative accuracy throughout
            assert abs(loss_got - float(loss_exp)) <= loss_rel * float(loss_exp), where
        else:
            assert loss_got <= 1e-300, where


@pytest.mark.parametrize("m0, m_star", KERNEL_SLOPES)
@pytest.mark.parametrize("a, theta0", KERNEL_RATES)
def test_kernel_prediction_flow_matches_mpmath(m0, m_star, a, theta0):
    _check_kernel(m0, m_star, a, theta0, KERNEL_TIMES, steps=False)
    # t = inf: m* exactly (the end of training), zero excess loss
    end = kernel_prediction(m0, m_star, theta0, a, np.inf, steps=False)
    assert end.m_lin == m_star and end.loss_lin == 0.0


@pytest.mark.parametrize("m0, m_star", KERNEL_SLOPES)
@pytest.mark.parametrize("a, theta0", GD_RATES)
def test_kernel_prediction_gd_matches_mpmath(m0, m_star, a, theta0):
    _check_kernel(m0, m_star, a, theta0, GD_STEPS, steps=True)


def test_kernel_prediction_conventions():
    # Theta0 = 0: nothing moves (flow and GD, t = inf included)
    for steps in (False, True):
        for t in (np.array([0.0, 1.0, 1e6, np.inf]), np.inf):
            got = kernel_prediction(0.25, 1.0, 0.0, 2.0, t, steps=steps)
            assert np.all(got.m_lin == 0.25) and np.all(got.loss_lin == 2.0 * 0.75**2 / 2)
    # GD at a Theta0 > 2: +-inf once the geometric sequence overflows (sign of (m0 - m*)(1 - a Theta0)^k);
    # a Theta0 < 2: m* at the end (inf steps); a Theta0 = 2: (-1)^inf := 1 (numpy), m0
    got = kernel_prediction(0.0, 1.0, 5.0, 1.0, np.array([0.0, 3.0, 1001.0, 1000.0, np.inf]), steps=True)
    assert list(got.m_lin[:1]) == [0.0] and got.m_lin[1] == 1.0 - (-4.0) ** 3
    assert list(got.m_lin[2:]) == [np.inf, -np.inf, -np.inf] and np.all(got.loss_lin[2:] == np.inf)
    assert kernel_prediction(0.0, 1.0, 1.5, 1.0, np.inf, steps=True).m_lin == 1.0
    # loss0 given (the caller's own initial loss) scales D^2; 0 stays 0 where D^2 overflows
    got = kernel_prediction(1.0, 1.0, 5.0, 1.0, np.array([0.0, 10.0, 1000.0, np.inf]), steps=True, loss0=0.0)
    assert np.all(got.loss_lin == 0.0) and np.all(got.m_lin == 1.0)
    got = kernel_prediction(0.0, 1.0, 1.0, 0.5, np.array([0.0, 2.0]), steps=False, loss0=3.0)
    assert got.loss_lin[0] == 3.0 and got.loss_lin[1] == 3.0 * math.exp(-2.0)
    # an error-free gap (the core's m* - kappa V) is used as given
    got = kernel_prediction(1.0, 1.0 + 2**-52, 1.0, 1.0, np.array([0.0, 1.0]), steps=False, gap=2**-52 + 1e-30)
    assert got.m_lin[0] == 1.0 and got.loss_lin[0] == 0.5 * (2**-52 + 1e-30) ** 2
    # shapes broadcast; bad times are rejected
    got = kernel_prediction(np.zeros((3, 1)), 1.0, np.array([1.0, 2.0]), 1.0, np.array([[0.0], [1.0], [2.0]]),
                            steps=True)
    assert got.m_lin.shape == got.loss_lin.shape == (3, 2)
    assert kernel_prediction(0.0, 1.0, 1.0, 1.0, 1.0, steps=False, loss=False).loss_lin is None
    for t, steps in (([-1.0], False), ([np.nan], False), ([0.5], True)):
        with pytest.raises(ValueError):
            kernel_prediction(0.0, 1.0, 1.0, 1.0, np.array(t), steps=steps)


def _kernel_of(inv, t, steps):
    return kernel_prediction(inv.m0, inv.teacher, inv.ntk_init, inv.input_var, t, steps=steps, gap=inv.gap).m_lin


@settings(max_examples=100, deadline=None)
@given(hyper, st.booleans())
def test_flow_and_gd_states_report_the_kernel_prediction(p, sampled):
    inv, _ = point(p, sampled)
    times = np.array([0.0, 1e-6, 0.3, 1.0, 10.0, 1e4, np.inf])
    for t in (np.inf, 0.0, 2.5):
        assert np.array_equal(flow_state(inv, t).m_lin, _kernel_of(inv, t, False))
    assert np.array_equal(flow_state(inv, times).m_lin, _kernel_of(inv, times, False))
    assert flow_state(inv, 0.0).m_lin == inv.m0


def test_gd_state_reports_the_kernel_prediction():
    rng = np.random.default_rng(3)
    n = 40
    inv = invariants(Problem(1.0, 10 ** rng.uniform(-3, 0.5, n), 10 ** rng.uniform(-3, 0.5, n),
                             10 ** rng.uniform(-1, 1, n), rng.choice([-1.0, 1.0], n) * 10 ** rng.uniform(-2, 1, n),
                             sample_gram(np.full(n, 50), 0.02, 0.02, 9)))
    steps = np.array([0, 1, 2, 5, 30, 200])
    m_lin = gd_state(inv, steps).m_lin
    per_step = [np.asarray(x)[:, None] for x in (inv.m0, inv.teacher, inv.ntk_init, inv.input_var, inv.gap)]
    expected = kernel_prediction(*per_step[:4], steps.astype(float), steps=True, gap=per_step[4]).m_lin
    assert m_lin.shape == (n, steps.size) and np.array_equal(m_lin, expected, equal_nan=True)
    assert np.any(np.abs(1 - inv.input_var * inv.ntk_init) > 1)  # diverging kernel GD among them
    end = gd_state(inv, [0, np.inf], max_steps=2000).m_lin
    assert np.array_equal(end[:, 1], kernel_prediction(inv.m0, inv.teacher, inv.ntk_init, inv.input_var, np.inf,
                                                       steps=True, gap=inv.gap).m_lin)


# ---- sampler ----

def test_sampler_is_independent_of_chunking_and_seeded():
    idx = np.arange(1000)
    whole = sample_gram(50, 0.3, 2.0, seed=7, index=idx)
    parts = [sample_gram(50, 0.3, 2.0, seed=7, index=chunk) for chunk in np.array_split(idx[::-1], 7)]
    joined = np.concatenate([p.U for p in parts])[::-1]
    assert np.array_equal(whole.U, joined)
    other = sample_gram(50, 0.3, 2.0, seed=8, index=idx)
    assert not np.any(other.U == whole.U)


@pytest.mark.parametrize("width", [1e9, 1e15])
def test_sampler_at_huge_width_has_chi_square_moments(width):
    n = 20000
    g = sample_gram(width, 2.0, 3.0, seed=11, index=np.arange(n))
    z = (g.U / (2.0 * width) - 1) / math.sqrt(2 / width)  # chi^2_d standardized: mean 0, sd 1
    assert abs(z.mean()) < 4 / math.sqrt(n) and abs(z.std() - 1) < 0.03
    v = g.V / math.sqrt(6.0 * width)  # V / (sigma_u sigma_w sqrt(d)) -> N(0, 1)
    assert abs(v.mean()) < 4 / math.sqrt(n) and abs(v.std() - 1) < 0.03
    assert np.all(g.G > 0)


def test_sampler_degenerate_widths_and_variances():
    g = sample_gram(1, 1.0, 1.0, seed=0, index=np.arange(100))
    assert np.all(g.G == 0)  # d = 1: the layers are parallel
    assert np.allclose(g.V**2, g.U * g.W, rtol=1e-12)
    z = sample_gram(30, 0.0, 1.0, seed=0, index=np.arange(10))
    assert np.all(z.U == 0) and np.all(z.V == 0) and np.all(z.G == 0) and np.all(z.W > 0)
