"""The exact tail of a converging GD run (core/_gd_rules.py, docs/theory.md section 9, "End of a converging run").

Once a run is close enough to its minimum, the rest of training is summed in closed form: with
y = a c (m - m*), T = a c (alpha + beta), mu = a c m*, the remaining L = sum ln(1 - y_j^2) is the series
l_2 y^2 + l_3 y^3 + l_4 y^4 + ..., and alpha beta, P follow from e^L. These tests hold the coefficients to a
fit of L computed by iterating the map at 160 digits, the bound on the first omitted term to the coefficient
itself, the end state from every state where the tail is taken to the exact continuation of that state, and
gd_outcome's end of a converging run to the exact continuation of its own float state where it took the tail.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from mpmath import log, lu_solve, matrix, mp, mpf

import phasediag.core._gd_rules as rules
from phasediag.core import GD_CODE, gd_outcome
from strategies import Case, gd_cases, gd_edge_points

EPS = 2.0**-52
T_VALUES = (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99)
MU_FRACTIONS = (0.0, 0.5, -0.99)  # mu / T: at a minimum T = sqrt(mu^2 + 4 A B) >= |mu|


def _remaining_L(y, T, mu, tiny):
    """sum of ln(1 - y_j^2) over the run from (y, T) at fixed mu, by the map A' = A (1 - y)^2, B' = B (1 + y)^2."""
    A, B = (T + y + mu) / 2, (T - y - mu) / 2
    total = mpf(0)
    while abs(y) > tiny:
        total += log(1 - y * y)
        A, B = A * (1 - y) ** 2, B * (1 + y) ** 2
        y = A - B - mu
    return total


def _fitted_terms(T, mu):
    """(l_2, ..., l_6) from L at y = +-1e-12 j, j = 1..5, fitted by a polynomial y^2 .. y^10 at 160 digits
    (the fit's own error, by changing h and the degree, is below 1e-40)."""
    with mp.workdps(160):
        T, mu, h = mpf(T), mpf(mu), mpf("1e-12")
        ys = [h * j for j in (-5, -4, -3, -2, -1, 1, 2, 3, 4)]
        rows = [[y**n for n in range(2, 11)] for y in ys]
        solution = lu_solve(matrix(rows), matrix([_remaining_L(y, T, mu, mpf(10) ** -80) for y in ys]))
        return [solution[i] for i in range(5)]


@pytest.mark.parametrize("T", T_VALUES)
def test_series_coefficients_match_a_high_precision_fit(T):
    for fraction in MU_FRACTIONS:
        mu = fraction * T
        want = _fitted_terms(T, mu)[:4]
        got = rules.tail_terms(np.float64(T), np.float64(mu), fifth=True)
        # l_2..l_4 are used: float64 evaluation; l_5 only bounds (its degree-17 polynomials cancel near T = 1)
        for n, (g, w, tol) in enumerate(zip(got, want, (1e-12, 1e-12, 1e-12, 1e-6)), start=2):
            assert abs(mpf(float(g)) - w) <= tol * abs(w) + 1e-60, (n, T, mu, float(g), float(w))


def test_the_bound_on_the_first_omitted_term_holds():
    """|l_5| <= L5_BOUND max(|mu|, T) (T^2 + mu^2) / (T^7 (1 - T)^4) on a fine grid of 0 < T < 1, |mu| <= T (and
    at the fitted coefficients), with the bound within 10 % of the worst case (it is tight, not loose); at
    mu = 0, where l_5 = 0, the bound's T also covers l_6 y^6 at the largest y the guard lets through."""
    T = np.linspace(1e-3, 1 - 1e-3, 2001)[:, None]
    mu = T * np.linspace(-1.0, 1.0, 201)[None, :]
    l5 = rules.tail_terms(T, mu, fifth=True)[3]
    ratio = np.abs(l5) / _envelope(T, mu)
    assert ratio.max() <= rules.L5_BOUND and ratio.max() >= 0.9 * rules.L5_BOUND
    for T1 in T_VALUES:
        for fraction in MU_FRACTIONS:
            mu1 = fraction * T1
            terms = _fitted_terms(T1, mu1)
            assert abs(terms[3]) <= rules.L5_BOUND * _envelope(T1, mu1)
            if mu1 == 0:
                y = 0.05 * min(T1, 1 - T1)  # (_TAIL_GUARD)
                assert abs(terms[4]) * y**6 <= 0.1 * rules.L5_BOUND * _envelope(T1, mu1) * y**5


def _envelope(T, mu):
    return np.maximum(np.abs(mu), T) * (T * T + mu * mu) / (T**7 * (1 - T) ** 4)


def _unit_state(T, mu, y):
    """(Flat, State) of one point at a = c = 1 (so A = alpha, B = beta, y = delta) with A + B = T, A - B = y + mu."""
    A, B = (T + y + mu) / 2, (T - y - mu) / 2
    k = rules.Flat(*(np.array([x]) for x in (1.0, 1.0, mu, 1.0, False, 1e12)))
    return k, rules.State(*(np.array([x]) for x in (A, B, y, 1.0, A - B)))


def _continued_exactly(k, state):
    """(alpha, beta, P) at the end of the exact map continued from a float state (alpha, beta, delta, P), at 40
    digits, in the delta form: alpha' = alpha (1 - a c delta)^2, beta' = beta (1 + a c delta)^2,
    delta' = delta (1 - 2 a c (alpha + beta) + (a c)^2 delta (m* + delta)); until |a c delta| < 1e-22 (what
    remains then, ~ y^2 / (4 T (1 - T)) < 1e-40 for T >= TAIL_T_MIN, is far below float64)."""
    with mp.workdps(40):
        a, c, m_star = (mpf(float(x[0])) for x in (k.a, k.c, k.m_star))
        alpha, beta, delta, P = (mpf(float(x[0])) for x in (state.alpha, state.beta, state.delta, state.scale))
        ac = a * c
        while abs(ac * delta) >= mpf(10) ** -22:
            y = ac * delta
            alpha, beta, P, delta = (alpha * (1 - y) ** 2, beta * (1 + y) ** 2, P * (1 - y * y),
                                     delta * (1 - 2 * ac * (alpha + beta) + y * ac * (m_star + delta)))
        return alpha, beta, P


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.floats(rules.TAIL_T_MIN, 1 - rules.TAIL_T_MIN), st.floats(-0.999, 0.999), st.floats(-1.0, 1.0),
       st.sampled_from([1e-3, 1e-4, 1e-6, 1e-9]))
def test_tail_end_is_the_exact_continuation_wherever_the_tail_is_taken(T, fraction, y_unit, y_scale):
    """From any state where tail_ready holds, tail_end's alpha, beta and P are those of the map iterated on
    exactly to the end, to a few float64 roundings (the truncation is below 1e-17 by construction)."""
    mu, y = fraction * T, y_unit * y_scale * min(T, 1 - T)
    k, state = _unit_state(T, mu, y)
    assume(state.alpha[0] > 0 and state.beta[0] > 0)
    assume(bool(rules.tail_ready(state, k)[0]))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        end = rules.tail_end(state, k)
    A_inf, B_inf, P_inf = _continued_exactly(k, state)
    with mp.workdps(40):
        size = A_inf + B_inf
        assert abs(mpf(float(end.alpha[0])) - A_inf) <= 8 * EPS * size
        assert abs(mpf(float(end.beta[0])) - B_inf) <= 8 * EPS * size
        assert abs(mpf(float(end.scale[0])) - P_inf) <= 8 * EPS * P_inf
    assert end.delta[0] == 0 and end.slope[0] == mu


def test_a_state_far_from_the_minimum_is_not_taken():
    """The guards: |y| beyond 5 % of min(T, 1 - T), T outside [TAIL_T_MIN, 1 - TAIL_T_MIN], or a large first
    omitted term keep the run stepping."""
    def ready(T, mu, y):
        k, state = _unit_state(T, mu, y)
        return bool(rules.tail_ready(state, k)[0])

    assert ready(0.5, 0.2, 1e-5)
    assert not ready(0.5, 0.2, 0.03)  # beyond the guard
    assert not ready(0.5 * rules.TAIL_T_MIN, 0.0, 1e-12)  # near the pole at T = 0
    assert not ready(0.3, 0.2, 1e-3)  # l_5 y^5 ~ 1e-14: too large
    assert ready(1.5, 0.2, 0.0)  # exactly at m = m* nothing moves, even at an unstable minimum


def _float_state(inv, steps):
    """The engine's float state after `steps` steps of its own step (bit for bit what gd_outcome stepped)."""
    k, state, _ = rules.flatten(inv)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for _ in range(steps):
            state = rules.advance(state, k)
    return k, state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(gd_edge_points(acm_range=(0.01, 0.98), a_theta0_range=(0.01, 3.9)))
# the float state's delta and alpha - beta - m* 2.5e-15 apart when the tail is taken (step 151)
@example(case=Case(1.0, 0.03125, 0.03125, 1.0, -1.0, "explicit", 0.16, 0.16, 0.0, None, label="gd edge"))
def test_gd_outcome_ends_a_converging_run_with_its_exact_tail(case):
    """Through gd_outcome (any a, c, m*, both loops): a converging run stops at `stopped`, well before float GD
    would come to rest, and its end state is the exact continuation of its float state there to 8 roundings
    (alpha, beta of alpha + beta; P of P, where g > 0 carries it), with m = m* exactly and alpha - beta = m* to
    2 roundings. The float state's delta and alpha - beta - m* disagree by the rounding the steps before the
    tail accumulated (2.5e-15 after 151 steps at a c = 1/32); the continuation carries that disagreement I
    to its end, the tail does not (its alpha - beta is m*), so alpha and beta are held to 8 roundings + |I|.
    (Against exact GD from the exact start, the error is that of the float steps: see test_resolution.py.)"""
    _assert_tail_is_exact_continuation(case)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(gd_cases(hi=3.9))
def test_exact_tail_over_the_ranges_of_section_8(case):
    """The same over docs/theory.md section 8 (kappa, rates, a, m*, widths and initializations over their full
    ranges; the rates rescaled so that a Theta0 is in [0.01, 3.9]); runs cut at 5000 steps, as the slowest
    (a Theta ~ 1e-17) would take 1e17 steps to converge."""
    _assert_tail_is_exact_continuation(case, max_steps=5000)


def _assert_tail_is_exact_continuation(case, max_steps=100_000):
    """A converging run of `case` ends in the exact continuation of its float state where it stopped; one whose
    tail was never ready (e.g. T < TAIL_T_MIN, cut off by max_steps) ends in that float state itself."""
    inv = case.core_invariants()
    result = gd_outcome(inv, max_steps=max_steps)
    assume(int(result.outcome) in (GD_CODE["converges"], GD_CODE["catapult"]))
    steps = int(result.stopped)
    k, state = _float_state(inv, steps)
    event("stepped to its end" if result.delta != 0 else "landed on m*" if state.delta[0] == 0 else "tail")
    if result.delta != 0 or state.delta[0] == 0:  # stepped to its end, or landed on the minimum exactly
        for name in ("alpha", "beta", "delta", "scale"):
            assert np.array_equal(getattr(result, name).ravel(), getattr(state, name)), name
        assert result.slope == (case.mstar if state.delta[0] == 0 else state.slope[0])  # (m = m* there)
        return
    assert steps <= int(gd_outcome(inv, max_steps=max_steps, tail=False).stopped)
    alpha, beta, P = _continued_exactly(k, state)
    with mp.workdps(40):
        size = alpha + beta
        gap = abs(mpf(float(state.alpha[0])) - mpf(float(state.beta[0])) - mpf(case.mstar) - mpf(float(state.delta[0])))
        fields = [("alpha", alpha, 8 * EPS * size + gap), ("beta", beta, 8 * EPS * size + gap)]
        if float(inv.g) > 0:  # (P scales g; with g = 0 it is not carried)
            fields.append(("scale", P, 8 * EPS * abs(P)))
        for name, want, tolerance in fields:
            error = abs(mpf(float(getattr(result, name))) - want)
            assert error <= tolerance, (name, float(error), float(tolerance), steps)
        assert abs(mpf(float(result.alpha)) - mpf(float(result.beta)) - mpf(case.mstar)) <= 2 * EPS * size
    assert result.slope == case.mstar
