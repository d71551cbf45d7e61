"""The GD state at the horizon and at the end of training against an independent 50-digit iteration of the map.

The reference iterates docs/theory.md section 9 in mpmath from the explicit Gram (U, W, V):
p = u/sqrt(eta_u), q = w/sqrt(eta_w), alpha = c|p + q|^2/4, beta = c|p - q|^2/4, c = kappa sqrt(eta_u eta_w),
r = a (alpha - beta - m*), alpha' = alpha (1 - c r)^2, beta' = beta (1 + c r)^2, Theta = 2 c (alpha + beta),
loss = a (m - m*)^2/2. Held here: a stall's state at t = inf is its limit (m -> 0, Theta -> 0, loss -> a m*^2/2,
ntk_change -> -1), not its start; on a finite horizon every GD end-state name of a sweep (gd_ntk_final,
ntk_final, ntk_change, m_final, loss_final) is the state at the horizon; and ntk_change is 0 when Theta0 = 0 in
`solve` as on a sweep (docs/theory.md section 6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from mpmath import mp, mpf, sqrt

from phasediag import core
from phasediag.config.hyperparameters import Hyperparameters
from phasediag.engine.metrics import GD_END_STATE, METRICS, PointSet
from phasediag.engine.point import solve_point


def exact_run(U, W, V, kappa, eta_u, eta_w, a, m_star, steps, dps=50):
    """[(m, Theta, loss)] at steps 0..steps of the exact GD map at `dps` digits."""
    with mp.workdps(dps):
        U, W, V, kappa, eta_u, eta_w, a, m_star = (mpf(x) for x in (U, W, V, kappa, eta_u, eta_w, a, m_star))
        c = kappa * sqrt(eta_u * eta_w)
        pp, qq, pq = U / eta_u, W / eta_w, V / sqrt(eta_u * eta_w)
        alpha, beta = c * (pp + qq + 2 * pq) / 4, c * (pp + qq - 2 * pq) / 4
        out = []
        for step in range(steps + 1):
            m = alpha - beta
            out.append((m, 2 * c * (alpha + beta), a * (m - m_star) ** 2 / 2))
            if step == steps:
                break
            cr = c * a * (m - m_star)
            alpha, beta = alpha * (1 - cr) ** 2, beta * (1 + cr) ** 2
        return out


def close(got, want, atol=1e-300, rtol=1e-12) -> bool:
    return abs(mpf(got) - want) <= atol + rtol * abs(want)


def invariants(U, W, V, kappa, eta_u, eta_w, a, m_star):
    gram = core.explicit_gram(np.asarray(U, dtype=float), np.asarray(W, dtype=float), np.asarray(V, dtype=float))
    return core.invariants(core.Problem(*(np.asarray(x, dtype=float) for x in (kappa, eta_u, eta_w, a, m_star)),
                                        gram))


def sweep_values(inv, horizon, names, max_steps=20_000):
    points = PointSet(inv, horizon, 0.1, 0.1, max_steps, optimizer="gd")
    table = {**METRICS, **GD_END_STATE}
    return {name: float(np.ravel(table[name].compute(points))[0]) for name in names}


END_NAMES = ("m_final", "loss_final", "ntk_final", "gd_ntk_final", "ntk_change")


# -- 1. a stall at t = inf is its limit ---------------------------------------------------------------------

STALLS = [  # (U, W, V, kappa, eta_u, eta_w, a, m*): the g = 0 saddle, m0 m* <= 0
    (1.0, 1.0, -1.0, 1.0, 0.1, 0.1, 1.0, 1.0),  # m0 = -1, m* = 1 (the default point at width 1)
    (4.0, 1.0, 2.0, 0.5, 1.2, 0.3, 2.0, -0.7),  # m0 = 1 > 0 > m*, unequal rates (eta_w U = eta_u W: g = 0)
    (1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 1.0, 0.0),  # m* = 0: m decays like 1/(2 a c k), to the minimum m = 0
]


@pytest.mark.parametrize("point", STALLS)
def test_stall_end_state_is_its_limit(point):
    U, W, V, kappa, eta_u, eta_w, a, m_star = point
    inv = invariants(*point)
    assert core.GD_OUTCOMES[int(np.ravel(core.gd_outcome(inv).outcome)[0])] == "stalls"
    steps = 3000
    run = exact_run(*point, steps)
    with mp.workdps(50):
        m_k, ntk_k, loss_k = run[-1]
        ntk0 = run[0][1]
        if m_star != 0:  # geometric decay: step 3000 is the limit to far beyond float64
            assert abs(m_k) < mpf(10) ** -40 and abs(loss_k - a * mpf(m_star) ** 2 / 2) < mpf(10) ** -40
        else:  # (1/(2 a c k) decay: m tends to 0, slowly; so does the loss a m^2/2)
            assert 0 < m_k < 1 / (a * kappa * eta_u * steps) and all(x[0] > y[0] for x, y in zip(run, run[1:]))
        limit = {"m": 0, "ntk": 0, "loss": a * mpf(m_star) ** 2 / 2, "ntk_change": -1}
        times = [0, 1, 10, 100, 1000, math.inf]
        out = solve_point(Hyperparameters(width=1, output_scale=kappa, lr_u=eta_u, lr_w=eta_w, input_var=a,
                                          teacher=m_star), init="gram", gram=(U, W, V), optimizer="gd", times=times)
        for i, t in enumerate(times[:-1]):  # the finite rows: the state at that step
            m, ntk, loss = run[t]
            assert close(out["m"][i], m, rtol=1e-12) and close(out["ntk"][i], ntk, rtol=1e-12), t
            assert close(out["loss"][i], loss, rtol=1e-12), t
        for key in ("m", "ntk", "loss"):  # the inf row and the end-of-training block: the limit
            assert close(out[key][-1], limit[key]), key
            assert close(out["final"][key], limit[key]), key
        assert close(out["final"]["ntk_change"], limit["ntk_change"])
        assert out["final"]["gd_outcome"] == "stalls" and out["final"]["gd_loss_peak"] == 1.0
        # a GD sweep's end-state metrics at horizon inf
        got = sweep_values(inv, math.inf, END_NAMES)
        want = {"m_final": limit["m"], "loss_final": limit["loss"], "ntk_final": 0, "gd_ntk_final": 0,
                "ntk_change": limit["ntk_change"]}
        for name in END_NAMES:
            assert close(got[name], want[name]), (name, got[name])
        # ... and at a finite horizon the state there
        got = sweep_values(inv, 100.0, END_NAMES)
        m, ntk, loss = run[100]
        want = {"m_final": m, "loss_final": loss, "ntk_final": ntk, "gd_ntk_final": ntk,
                "ntk_change": ntk / ntk0 - 1}
        for name in END_NAMES:
            assert close(got[name], want[name], rtol=1e-11), (name, got[name])


def test_stall_limit_in_a_batch_of_points():
    """Many points at once (compiled with numba, if installed, from 64 points on): every stall ends at its
    limit, the other points are unchanged by it."""
    m_star = np.linspace(-1.0, 1.0, 80)
    inv = invariants(1.0, 1.0, -1.0, 1.0, 0.1, 0.1, 1.0, m_star)  # m0 = -1: a stall for m* >= 0
    res = core.gd_outcome(inv)
    stall = res.outcome == core.GD_CODE["stalls"]
    assert np.array_equal(stall, m_star >= 0)
    end = core.gd_end_state(inv, res)
    assert np.all(end.m[stall] == 0) and np.all(end.ntk[stall] == 0)
    np.testing.assert_array_equal(end.loss[stall], 0.5 * m_star[stall] ** 2)
    np.testing.assert_allclose(end.m[~stall], m_star[~stall], rtol=1e-14, atol=0)


# -- 2. a finite horizon: every GD end-state name is the state at the horizon -------------------------------

@pytest.mark.parametrize("eta", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("v", [0.2, 0.5])
@pytest.mark.parametrize("horizon", [1, 3, 25])
def test_finite_horizon_names_agree_with_the_exact_map(eta, v, horizon):
    inv = invariants(1.0, 1.0, v, 1.0, eta, eta, 1.0, 1.0)
    run = exact_run(1.0, 1.0, v, 1.0, eta, eta, 1.0, 1.0, horizon)
    got = sweep_values(inv, float(horizon), END_NAMES)
    with mp.workdps(50):
        m, ntk, loss = run[horizon]
        want = {"m_final": m, "loss_final": loss, "ntk_final": ntk, "gd_ntk_final": ntk,
                "ntk_change": ntk / run[0][1] - 1}
        for name in END_NAMES:
            assert close(got[name], want[name], rtol=1e-12), (name, got[name], float(want[name]))
    assert got["gd_ntk_final"] == got["ntk_final"]


def test_gd_ntk_final_is_ntk_final_at_horizon_inf():
    eta = np.geomspace(0.05, 5.0, 40)
    inv = invariants(1.0, 1.0, 0.0, 1.0, eta, eta, 1.0, 1.0)
    points = PointSet(inv, math.inf, 0.1, 0.1, 20_000, optimizer="gd")
    got, want = METRICS["gd_ntk_final"].compute(points), GD_END_STATE["ntk_final"].compute(points)
    assert got.tobytes() == want.tobytes()


# -- 4. ntk_change is 0 when Theta0 = 0, in solve as on a sweep ---------------------------------------------

@pytest.mark.parametrize("times", [[0, 1, math.inf], [0, 5]])
def test_solve_ntk_change_zero_without_an_ntk(times):
    hyper = Hyperparameters(init_var_u=0.0, init_var_w=0.0)
    horizon = times[-1]
    out = solve_point(hyper, optimizer="gd", times=times, horizon=horizon)
    assert out["init"]["ntk"] == 0.0 and out["final"]["ntk"] == 0.0
    assert out["final"]["ntk_change"] == 0.0
    run = exact_run(0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 1.0, 1.0, 5)  # (kappa = 1/sqrt(100): nothing ever moves)
    assert all(ntk == 0 and m == 0 for m, ntk, _ in run)
    inv = core.invariants(core.Problem(*(np.asarray(x) for x in (0.1, 0.1, 0.1, 1.0, 1.0)),
                                       core.typical_gram(100, 0.0, 0.0)))
    assert sweep_values(inv, float(horizon), ("ntk_change",))["ntk_change"] == 0.0
