"""The compiled GD loop (core/_gd_jit.py, the `fast` extra) against the vectorized one: bit for bit.

Both run the per-point rules of core/_gd_rules.py; these tests hold them to the same results for every field, over the
ranges of docs/theory.md section 8, near the edge of stability (where outcomes and step counts are most
sensitive), on a bundled grid, and for the points near the float64 range the compiled loop hands back.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import phasediag.core._gd_rules as rules
from phasediag.core import GD_CODE, GD_OUTCOMES, Problem, explicit_gram, gd, gd_outcome, invariants
from phasediag.core._gd_jit import outcome as compiled_outcome
from strategies import cases, gd_edge_points

ROOT = Path(__file__).resolve().parents[1]


def _batch(invs):
    """Flat constants and start states of several points, concatenated."""
    flats = [rules.flatten(inv)[:2] for inv in invs]
    k = rules.Flat(*(np.concatenate(parts) for parts in zip(*(f[0] for f in flats))))
    start = rules.State(*(np.concatenate(parts) for parts in zip(*(f[1] for f in flats))))
    return k, start


@contextlib.contextmanager
def _vectorized():
    """gd_outcome as without the `fast` extra (an environment variable, so usable inside hypothesis tests)."""
    saved = os.environ.get(gd.COMPILED_ENV)
    os.environ[gd.COMPILED_ENV] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[gd.COMPILED_ENV]
        else:
            os.environ[gd.COMPILED_ENV] = saved


def _assert_same(invs, max_steps, settle, tail=True):
    """Every point the compiled loop keeps equals the vectorized loop's result for that point alone (which may
    raise FloatingPointError: then the compiled loop must have handed the point back)."""
    k, start = _batch(invs)
    codes, steps, stopped, end, peak, ready, deferred = compiled_outcome(k, start, max_steps, settle, tail)
    codes = np.where(codes == rules.UNDECIDED, GD_CODE["oscillates"], codes)
    at = np.flatnonzero(ready & ~deferred)  # converging runs stopped where the exact tail takes over
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        summed = rules.tail_end(end.take(at), rules.Flat(*(x[at] for x in k)))
    for full, part in zip(end, summed):
        full[at] = part
    for i, inv in enumerate(invs):  # (each drawn invariant is one point)
        try:
            with _vectorized():
                want = gd_outcome(inv, max_steps=max_steps, settle=settle, tail=tail)
        except FloatingPointError:
            assert deferred[i], "the vectorized loop overflows where the compiled one ran"
            continue
        if deferred[i]:
            continue
        got = dict(outcome=codes[i], steps=steps[i], stopped=stopped[i], alpha=end.alpha[i], beta=end.beta[i],
                   delta=end.delta[i], scale=end.scale[i], loss_peak=peak[i], slope=end.slope[i])
        for name, value in got.items():
            assert np.array_equal(getattr(want, name), value), (name, i, getattr(want, name), value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cases(), min_size=1, max_size=6), st.sampled_from([0, 1, 16, 17, 2000]), st.booleans(),
       st.booleans())
def test_compiled_loop_is_bit_identical_over_section_8(drawn, max_steps, settle, tail):
    _assert_same([case.core_invariants() for case in drawn], max_steps, settle, tail)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(gd_edge_points().map(lambda case: case.core_invariants()), min_size=1, max_size=8),
       st.sampled_from([33, 3000]), st.booleans())
def test_compiled_loop_is_bit_identical_near_the_edge_of_stability(invs, max_steps, settle):
    _assert_same(invs, max_steps, settle)


def test_bundled_gd_grid_is_bit_identical_with_and_without_numba(monkeypatch):
    from phasediag.config.sweep import load_config
    from phasediag.engine import sweep

    config = load_config(ROOT / "configs" / "7_gd_lr_vs_width.yaml")
    compiled = sweep.run(config, workers=1)
    monkeypatch.setenv(gd.COMPILED_ENV, "0")  # as without the `fast` extra
    vectorized = sweep.run(config, workers=1)
    assert compiled.arrays.keys() == vectorized.arrays.keys()
    for name, values in vectorized.arrays.items():
        assert np.array_equal(compiled.arrays[name], values, equal_nan=True), name
    assert np.any(compiled.arrays["gd_outcome"] == GD_CODE["oscillates"])  # every kind of run is in it


def test_points_near_the_float_range_are_handed_to_the_vectorized_loop(monkeypatch):
    """a c = 1e-70 with a Theta0 = 1.5: the divergence bound (1e12 / (a c)) puts the states a run may reach
    beyond the compiled loop's proven range, so the point is deferred, and gd_outcome's result for it is the
    vectorized loop's, beside ordinary points that the compiled loop runs."""
    n = gd.COMPILED_MIN_POINTS
    c = np.r_[1e-70, np.full(n - 1, 0.3)]
    x = 1.5 / (2 * c)  # a Theta0 = 1.5 at a = 1, kappa = 1, eta = c (as gd_point in tests/test_core.py)
    inv = invariants(Problem(1.0, c, c, 1.0, 1.0, explicit_gram(x, x, 0.0)))
    k, start = _batch([inv])
    deferred = compiled_outcome(k, start, 5000, True)[6]
    assert deferred[0] and not np.any(deferred[1:])
    got = gd_outcome(inv, max_steps=5000)
    monkeypatch.setenv(gd.COMPILED_ENV, "0")
    want = gd_outcome(inv, max_steps=5000)
    assert GD_OUTCOMES[got.outcome[0]] == "converges" and math.isfinite(got.alpha[0])
    for name in want._fields:
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
