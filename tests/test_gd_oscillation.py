"""Certificate (C) of core/_gd_rules.py: a GD run certified to oscillate stays bounded and never converges.

The certificate names a set S = {lo <= A <= hi, A B <= p} (A = a c alpha, B = a c beta for m* > 0) that the
exact map sends into itself. These tests take the map itself, in 60-digit arithmetic, from certified
states and check that it never leaves S, never diverges and never nears a minimum; and they run the
certified runs of the bundled config 7 on to max_steps, as the outcome was decided before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mpmath import mp, mpf

import phasediag.core._gd_rules as rules
from phasediag.core import GD_CODE, Problem, explicit_gram, gd_outcome, invariants

ROOT = Path(__file__).resolve().parents[1]


def _point(mu, A, B, sign=1.0):
    """A single GD state with a = 1, c = 1 (so A = alpha, B = beta, mu = m*); sign -1 mirrors it."""
    k = rules.Flat(*(np.array([x]) for x in (1.0, 1.0, sign * mu, 1.0, False, 1e12)))
    alpha, beta = (A, B) if sign > 0 else (B, A)
    st = rules.State(*(np.array([x]) for x in (alpha, beta, alpha - beta - sign * mu, 1.0, alpha - beta)))
    return k, st


def _iterate_exactly(mu, A, B, steps):
    """The exact map A' = A (1 - y)^2, B' = B (1 + y)^2, y = A - B - mu, at 60 digits: (A, B, y) per step."""
    mp.dps = 60
    A, B, mu = mpf(A), mpf(B), mpf(mu)
    out = []
    for _ in range(steps):
        y = A - B - mu
        A, B = A * (1 - y) ** 2, B * (1 + y) ** 2
        out.append((A, B, y))
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.floats(1.01, 1.7), st.floats(0.1, 0.9), st.floats(-20.0, 0.0), st.sampled_from([1.0, -1.0]))
def test_a_certified_state_stays_bounded_and_away_from_the_minima(mu, fraction, log_B, sign):
    A, B = fraction * (1 + mu), 10.0**log_B if log_B > -20 else 0.0
    k, st_ = _point(mu, A, B, sign)
    assume(bool(rules.oscillating(st_, k)[0]))
    assert mu > 1.0
    # the certified set, rebuilt independently of the code: any state of it maps into a bounded region with
    # A B non-increasing; here, the orbit from the certified state, exactly
    p0 = mpf(A) * mpf(B)
    ys = []
    for A_k, B_k, y in _iterate_exactly(mu, A, B, 2000):
        assert 0 <= A_k <= 1 + mu and 0 <= B_k <= 1, (A_k, B_k)
        assert A_k * B_k <= p0 * (1 + mpf("1e-6")), "A B grew"
        ys.append(abs(y))
    # no convergence: near every minimum y is pushed away by |1 - 2T| > 1, so |y| keeps returning to O(1)
    assert max(ys[-50:]) > 0.05 * (mu - 1) ** 0.5


def test_certified_runs_of_config_7_oscillate_for_all_max_steps():
    """The certificate decides config 7's oscillating runs at their first checks; run on to max_steps with
    the engine's own step, no other outcome's certificate (converges, catapult, diverges, stalls) ever
    holds and m stays away from m*, as the outcome was decided before the certificate existed."""
    from phasediag.config.sweep import load_config
    from phasediag.engine import sweep

    config = load_config(ROOT / "configs" / "7_gd_lr_vs_width.yaml")
    result = sweep.run(config, workers=1)
    oscillating = result.arrays["gd_outcome"] == GD_CODE["oscillates"]
    assert oscillating.sum() >= 20
    assert np.all(result.arrays["gd_steps"][oscillating] <= 64)  # decided early, not at max_steps
    with np.errstate(under="ignore"):
        _, problem = sweep.model_values(config, np.flatnonzero(oscillating.ravel()))  # the runs as the sweep
    inv = invariants(problem)
    k, state, _ = rules.flatten(inv)
    nearest = np.full(inv.c.shape, np.inf)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for step in range(config.max_steps):
            if step % rules.CHECK_EVERY == 0:
                code = rules.decide(state, k, np.ones(inv.c.shape))
                assert np.all((code == rules.UNDECIDED) | (code == rules.OSCILLATES)), step
            if step > config.max_steps - 200:
                nearest = np.minimum(nearest, np.abs(state.delta))
            state = rules.advance(state, k)
    # at a minimum delta = m - m* = 0; the orbits keep away (period-2/4/8 cycles around it)
    assert np.all(nearest > 1e-3)


def test_no_certificate_without_an_unstable_minimum_or_far_from_the_line():
    """mu <= 1 has stable minima (convergence possible): never certified; nor a state far from B = 0."""
    for mu in (0.5, 0.999, 1.0):
        k, st_ = _point(mu, 0.8, 0.0)
        assert not rules.oscillating(st_, k)[0]
    k, st_ = _point(1.2, 1.0, 0.0)
    assert rules.oscillating(st_, k)[0]
    k, st_ = _point(1.2, 1.0, 0.8)
    assert not rules.oscillating(st_, k)[0]
    k, st_ = _point(1.2, 1.0, 0.0, sign=-1.0)  # the mirror image (m* < 0: the roles of A and B swap)
    assert rules.oscillating(st_, k)[0]


def test_an_oscillating_run_stops_where_certified():
    """m0 = 0, a c m* = 1.2, a Theta0 = 2.2: certified at a check, its state there is the reported one."""
    c = 1.2
    x = 2.2 / (2 * c)
    inv = invariants(Problem(1.0, c, c, 1.0, 1.0, explicit_gram(x, x, 0.0)))
    result = gd_outcome(inv, max_steps=20_000)
    assert int(result.outcome) == GD_CODE["oscillates"]
    assert int(result.steps) % rules.CHECK_EVERY == 0 and int(result.steps) <= 256
    k, start, _ = rules.flatten(inv)
    state = start
    for _ in range(int(result.steps)):
        state = rules.advance(state, k)
    assert float(state.alpha[0]) == float(result.alpha) and float(state.beta[0]) == float(result.beta)
    assert rules.oscillating(state, k)[0]
