"""Self-tests of phasediag.training.simulate: the simulators against the model's own exact laws.

Nothing here uses phasediag.core. Each check is a law of docs/theory.md that the simulated vectors must
obey (sections 1, 3 and 9), or an identity between two simulators.
Run (from the repository root): python3 -m pytest tests/test_simulate.py -q -W error
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim_cases import Case

from phasediag.training.simulate import (
    DIVERGENCE_LIMIT,
    Trace,
    gd_vectors,
    integrate_flow,
    sample_vectors,
    sgd_vectors,
)

pytestmark = pytest.mark.filterwarnings("error")

LAW_TOL = 1e-9  # relative; the flow integrator runs at rtol = 1e-12 (observed errors <= ~1e-11)
ROUNDING = 1e-12  # relative; for identities that hold exactly in exact arithmetic, step by step


FLOW_CASES = {
    "d1_lr_ratio_1e3": Case(1, 1.0, 1.0, 1.0, 1.0, 1e-3, 1.0, 1.5, seed=0),
    "d2_lr_ratio_1e-3_negative_teacher": Case(2, 0.5, 0.5, 1.0, 1e-3, 1.0, 2.0, -1.0, seed=1),
    "d1000_sign_crossing": Case(1000, 1e-3, 1e-3, 1.0, 0.1, 0.1, 1.0, -2.0, seed=5, opposite=True),
    "d1000_zero_u": Case(1000, 0.0, 1e-3, 1.0, 0.1, 0.1, 1.0, -2.0, seed=4),
    "d1000_kernel_ntk_param": Case(1000, 1.0, 1.0, 1000**-0.5, 0.05, 0.05, 1.0, 1.0, seed=2),
    "d1000_small_init": Case(1000, 1e-6, 1e-6, 1.0, 0.01, 0.01, 1.0, 3.0, seed=3),
    "d1000_kernel_aligning": Case(1000, 1.0, 1.0, 1e-3, 1e3, 1e-3, 1.0, 1.0, seed=6),
}
FLOW_TIMES = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 50)])


@lru_cache(maxsize=None)
def flow_trace(name: str) -> Trace:
    case = FLOW_CASES[name]
    u0, w0 = case.start()
    return integrate_flow(u0, w0, times=FLOW_TIMES, **case.hyper())


def assert_close(actual, expected, scale, tol, what):
    """|actual - expected| <= tol * scale, elementwise, with a readable failure message."""
    err = np.abs(np.asarray(actual) - np.asarray(expected))
    bad = err > tol * np.asarray(scale)
    assert not np.any(bad), f"{what}: worst error/scale {np.max(err / scale):.3g} > {tol:g}"


# ------------------------------------------------------------------------------------------
# sample_vectors


def test_sample_vectors_shapes_zero_variance_and_reproducibility():
    u, w = sample_vectors(7, 0.0, 2.0, np.random.default_rng(1))
    assert u.shape == w.shape == (7,) and u.dtype == w.dtype == np.float64
    assert np.all(u == 0.0) and not np.any(np.signbit(u)) and np.all(w != 0.0)
    u2, w2 = sample_vectors(7, 0.0, 2.0, np.random.default_rng(1))
    assert np.array_equal(u, u2) and np.array_equal(w, w2)
    # the stream does not depend on the variances: same draws, rescaled
    u3, w3 = sample_vectors(7, 3.0, 8.0, np.random.default_rng(1))
    np.testing.assert_allclose(w3, 2.0 * w, rtol=1e-15)


def test_sample_vectors_moments():
    var_u, var_w, d = 0.3, 5.0, 200_000
    u, w = sample_vectors(d, var_u, var_w, np.random.default_rng(2))
    # sample variance of N(0, s^2) has standard error s^2 sqrt(2/d) ~ 0.3%: allow 5 sigma
    assert abs(np.mean(u**2) / var_u - 1) < 5 * np.sqrt(2 / d)
    assert abs(np.mean(w**2) / var_w - 1) < 5 * np.sqrt(2 / d)
    assert abs(np.mean(u * w)) < 5 * np.sqrt(var_u * var_w / d)  # independence


@pytest.mark.parametrize("bad", [dict(width=0), dict(width=2.5), dict(init_var_u=-1.0), dict(init_var_w=np.nan)])
def test_sample_vectors_rejects_bad_input(bad):
    args = dict(width=3, init_var_u=1.0, init_var_w=1.0) | bad
    with pytest.raises(ValueError):
        sample_vectors(args["width"], args["init_var_u"], args["init_var_w"], np.random.default_rng(0))


# ------------------------------------------------------------------------------------------
# Trace bookkeeping


def test_trace_fields_are_consistent_with_their_definitions():
    case = FLOW_CASES["d1000_sign_crossing"]
    u0, w0 = case.start()
    tr = gd_vectors(u0, w0, steps=np.array([0, 0, 3, 10]), **case.hyper())
    assert all(f.shape == (4,) and f.dtype == np.float64 for f in tr)
    np.testing.assert_array_equal(tr.t, [0, 0, 3, 10])
    np.testing.assert_array_equal(tr.U, tr.norm_u2)
    np.testing.assert_array_equal(tr.W, tr.norm_w2)
    k = case.output_scale
    np.testing.assert_allclose(tr.m, k * tr.V, rtol=1e-15)
    np.testing.assert_allclose(tr.ntk, k**2 * (case.lr_w * tr.U + case.lr_u * tr.W), rtol=1e-15)
    np.testing.assert_allclose(tr.alignment, tr.V / np.sqrt(tr.U * tr.W), rtol=1e-14)
    np.testing.assert_allclose(tr.loss, case.input_var * (tr.m - case.teacher) ** 2 / 2, rtol=1e-15)
    np.testing.assert_allclose(tr.imbalance, tr.U / case.lr_u - tr.W / case.lr_w, rtol=1e-15)
    np.testing.assert_allclose(tr.gram_det, tr.U * tr.W - tr.V**2, rtol=1e-9)
    # records at step 0 are the initial vectors
    assert tr.U[0] == u0 @ u0 and tr.W[0] == w0 @ w0 and tr.V[0] == u0 @ w0 and tr.m[0] == tr.m[1]


def test_gram_det_is_relatively_accurate_for_nearly_parallel_layers():
    rng = np.random.default_rng(7)
    u = rng.standard_normal(50)
    e = rng.standard_normal(50)
    e -= (e @ u) / (u @ u) * u  # exactly-known perpendicular part, up to rounding
    w = 3.0 * u + 1e-6 * e
    tr = gd_vectors(u, w, output_scale=1, lr_u=1, lr_w=1, input_var=1, teacher=0, steps=np.array([0]))
    expected = (u @ u) * (1e-6) ** 2 * (e @ e)  # G = |u|^2 |w_perp|^2, about 1e-12 |u|^2 |w|^2
    assert abs(tr.gram_det[0] / expected - 1) < 1e-8
    assert abs(tr.alignment[0]) <= 1.0


def test_d1_layers_are_parallel_and_zero_layer_has_zero_alignment():
    tr = gd_vectors(np.array([0.7]), np.array([-1.3]), output_scale=2, lr_u=0.1, lr_w=0.2,
                    input_var=1, teacher=1, steps=np.arange(5))
    assert np.all(tr.gram_det == 0.0) and np.all(np.abs(tr.alignment) == 1.0)
    tr = integrate_flow(np.zeros(4), np.ones(4), output_scale=1, lr_u=1, lr_w=1, input_var=1,
                        teacher=1, times=np.array([0.0, 1.0]))
    assert tr.alignment[0] == 0.0 and tr.alignment[1] == 1.0


# ------------------------------------------------------------------------------------------
# Gradient flow: conservation laws and the NTK / alignment / norm laws (docs/theory.md section 3)


@pytest.mark.parametrize("name", FLOW_CASES)
def test_flow_conserves_imbalance_and_gram_determinant(name):
    case, tr = FLOW_CASES[name], flow_trace(name)
    scale = tr.U[0] / case.lr_u + tr.W[0] / case.lr_w + tr.U / case.lr_u + tr.W / case.lr_w
    assert_close(tr.imbalance, tr.imbalance[0], scale, LAW_TOL, "Delta")
    # G is conserved relative to itself; where it vanishes (d = 1, zero layer), it stays ~0
    g_scale = tr.gram_det[0] + 1e-6 * tr.U * tr.W * (tr.gram_det[0] == 0)
    assert_close(tr.gram_det, tr.gram_det[0], g_scale, LAW_TOL, "G")


@pytest.mark.parametrize("name", FLOW_CASES)
def test_flow_obeys_ntk_law(name):
    case, tr = FLOW_CASES[name], flow_trace(name)
    c2 = case.c**2
    expected = tr.ntk[0] ** 2 + 4 * c2 * (tr.m**2 - tr.m[0] ** 2)
    scale = tr.ntk**2 + tr.ntk[0] ** 2 + 4 * c2 * (tr.m**2 + tr.m[0] ** 2)
    assert_close(tr.ntk**2, expected, scale, LAW_TOL, "Theta^2")


@pytest.mark.parametrize("name", FLOW_CASES)
def test_flow_obeys_alignment_law(name):
    case, tr = FLOW_CASES[name], flow_trace(name)
    denom = np.hypot(tr.m, case.output_scale * np.sqrt(tr.gram_det[0]))
    positive = denom > 0  # zeta is 0/0 at a zero-initialized layer's start (recorded as 0)
    expected = np.divide(tr.m, denom, out=np.zeros_like(denom), where=positive)
    assert_close(tr.alignment, expected, 1.0, LAW_TOL, "zeta")


@pytest.mark.parametrize("name", FLOW_CASES)
def test_flow_obeys_layer_norm_laws(name):
    case, tr = FLOW_CASES[name], flow_trace(name)
    k2, dtheta = case.output_scale**2, tr.ntk - tr.ntk[0]
    for norm, start, lr_other in ((tr.norm_u2, tr.U[0], case.lr_w), (tr.norm_w2, tr.W[0], case.lr_u)):
        expected = start + dtheta / (2 * k2 * lr_other)
        scale = norm + start + (tr.ntk + tr.ntk[0]) / (2 * k2 * lr_other)
        assert_close(norm, expected, scale, LAW_TOL, "layer norm")


@pytest.mark.parametrize("name", FLOW_CASES)
def test_flow_decreases_loss_and_learns_the_teacher(name):
    case, tr = FLOW_CASES[name], flow_trace(name)
    assert np.all(np.diff(tr.loss) <= 1e-12 * tr.loss[0])
    assert abs(tr.m[-1] - case.teacher) < 1e-9 * abs(case.teacher)  # g > 0 in every case
    if case.opposite:
        assert np.any(np.sign(tr.m) != np.sign(tr.m[0]))  # m crossed zero


def test_flow_velocity_is_minus_ntk_times_residual():
    """dm/dt = -Theta (a m - b), checked by a central difference (error O(h^2) ~ 1e-9)."""
    case = FLOW_CASES["d1000_sign_crossing"]
    u0, w0 = case.start()
    t, h = np.array([0.5, 5.0, 30.0]), 1e-4
    times = np.sort(np.concatenate([t - h, t, t + h]))
    tr = integrate_flow(u0, w0, times=times, **case.hyper())
    m = tr.m.reshape(3, 3)
    dmdt = (m[:, 2] - m[:, 0]) / (2 * h)
    expected = -tr.ntk.reshape(3, 3)[:, 1] * case.input_var * (m[:, 1] - case.teacher)
    assert_close(dmdt, expected, np.abs(expected), 1e-6, "dm/dt")


def test_flow_records_exact_start_repeated_times_and_stationary_zero_state():
    case = FLOW_CASES["d2_lr_ratio_1e-3_negative_teacher"]
    u0, w0 = case.start()
    tr = integrate_flow(u0, w0, times=np.array([0.0, 0.0, 2.0, 2.0]), **case.hyper())
    assert tr.V[0] == u0 @ w0 and tr.U[1] == u0 @ u0
    assert tr.m[2] == tr.m[3] and tr.m[2] != tr.m[0]
    zero = integrate_flow(np.zeros(3), np.zeros(3), times=np.array([0.0, 1e3]), **case.hyper())
    assert np.all(zero.m == 0) and np.all(zero.ntk == 0) and np.all(zero.loss == zero.loss[0])


@pytest.mark.parametrize("times", [[1.0, 0.5], [-1.0], [np.inf], [[1.0]]])
def test_flow_rejects_bad_times(times):
    with pytest.raises(ValueError):
        integrate_flow(np.ones(2), np.ones(2), output_scale=1, lr_u=1, lr_w=1, input_var=1,
                       teacher=1, times=np.array(times))


def test_flow_raises_when_out_of_steps():
    with pytest.raises(RuntimeError, match="max_steps"):
        integrate_flow(np.ones(2), np.ones(2), output_scale=1, lr_u=1, lr_w=1, input_var=1,
                       teacher=5, times=np.array([1e3]), max_steps=50)


# ------------------------------------------------------------------------------------------
# Gradient descent: the exact one-step laws of docs/theory.md section 9


def gd_factor_laws(case: Case, tr: Trace) -> None:
    """Delta_{k+1} = Delta_k (1 - c^2 r_k^2) and G_{k+1} = G_k (1 - c^2 r_k^2)^2, r_k = a m_k - b."""
    ok = np.isfinite(tr.loss)
    r = case.input_var * (tr.m - case.teacher)
    f = (1 - case.c**2 * r**2)[:-1][ok[1:]]
    nxt, now = (lambda x: x[1:][ok[1:]]), (lambda x: x[:-1][ok[1:]])
    layer = tr.U / case.lr_u + tr.W / case.lr_w
    scale = nxt(layer) + now(layer) * np.abs(f)
    assert_close(nxt(tr.imbalance), now(tr.imbalance) * f, scale, ROUNDING, "Delta step")
    g_scale = nxt(tr.gram_det) + now(tr.gram_det) * f**2 + 1e-13 * nxt(tr.U * tr.W)
    assert_close(nxt(tr.gram_det), now(tr.gram_det) * f**2, g_scale, 1e-10, "G step")


@pytest.mark.parametrize("name", FLOW_CASES)
def test_gd_multiplies_imbalance_and_gram_determinant_by_exact_factors(name):
    case = FLOW_CASES[name]
    # steps as large as convergence allows (a Theta, 2 a c |m*| <= 1), so the factors move from 1
    u0, w0 = case.start()
    theta0 = case.output_scale**2 * (case.lr_w * (u0 @ u0) + case.lr_u * (w0 @ w0))
    scale = 1.0 / (case.input_var * max(theta0, 2 * case.c * abs(case.teacher)))
    case = case._replace(lr_u=case.lr_u * scale, lr_w=case.lr_w * scale)
    tr = gd_vectors(u0, w0, steps=np.arange(400), **case.hyper())
    assert np.all(np.isfinite(tr.loss))
    gd_factor_laws(case, tr)
    f = 1 - case.c**2 * (case.input_var * (tr.m - case.teacher)) ** 2
    # the laws were exercised far above the tolerance (kernel cases have c |r| << 1: factors ~ 1)
    assert 1 - np.min(f) > 1e5 * ROUNDING


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(1, 40),
    log_ratio=st.floats(-3, 3),
    log_kappa=st.floats(-1, 1),
    teacher=st.floats(-3, 3).filter(lambda x: abs(x) > 1e-3),
    log_var=st.floats(-4, 1),
    lr_scale=st.floats(0.05, 1.9),
)
def test_gd_factor_laws_hold_for_random_runs(seed, width, log_ratio, log_kappa, teacher, log_var, lr_scale):
    case = Case(width, 10**log_var / width, 10**log_var / width, 10**log_kappa, 10 ** (log_ratio / 2),
                10 ** (-log_ratio / 2), 1.0, teacher, seed)
    u0, w0 = case.start()
    theta0 = case.output_scale**2 * (case.lr_w * (u0 @ u0) + case.lr_u * (w0 @ w0))
    s = lr_scale / max(theta0, 2 * case.c * abs(teacher))  # a*Theta up to ~2: mostly converging
    case = case._replace(lr_u=case.lr_u * s, lr_w=case.lr_w * s)
    gd_factor_laws(case, gd_vectors(u0, w0, steps=np.arange(60), **case.hyper()))


def test_gd_divergence_stops_cleanly_with_inf_sentinels():
    u0, w0 = sample_vectors(10, 0.1, 0.1, np.random.default_rng(0))
    tr = gd_vectors(u0, w0, output_scale=1, lr_u=3, lr_w=3, input_var=1, teacher=2,
                    steps=np.arange(0, 400, 7))
    finite = np.isfinite(tr.loss)
    first_bad = np.argmin(finite)
    assert 0 < first_bad and np.all(finite[:first_bad]) and not np.any(finite[first_bad:])
    for field in tr._fields[1:]:
        assert np.all(getattr(tr, field)[first_bad:] == np.inf), field
    assert max(tr.U[first_bad - 1], tr.W[first_bad - 1]) <= DIVERGENCE_LIMIT
    np.testing.assert_array_equal(tr.t, np.arange(0, 400, 7))


@pytest.mark.parametrize("steps", [[3, 1], [-1], [1.5], [[1]]])
def test_gd_rejects_bad_steps(steps):
    with pytest.raises(ValueError):
        gd_vectors(np.ones(2), np.ones(2), output_scale=1, lr_u=1, lr_w=1, input_var=1, teacher=1,
                   steps=np.array(steps))


def test_gd_approaches_flow_at_first_order():
    """GD with rates h*eta after T/h steps -> flow with rates eta at time T, error ~ h."""
    case = Case(50, 0.02, 0.02, 1.0, 0.2, 0.05, 1.0, 2.0, seed=3)
    u0, w0 = case.start()
    T = 20.0
    flow = integrate_flow(u0, w0, times=np.array([T]), **case.hyper())
    errors = []
    for h in (0.01, 0.005, 0.0025):
        hyper = case.hyper() | dict(lr_u=case.lr_u * h, lr_w=case.lr_w * h)
        gd = gd_vectors(u0, w0, steps=np.array([round(T / h)]), **hyper)
        errors.append(abs(gd.m[0] - flow.m[0]) / abs(flow.m[0]))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 0.8) & (orders < 1.2)), orders


# ------------------------------------------------------------------------------------------
# SGD


def sgd_data(seed: int, samples: int, input_var: float, teacher: float, noise_var: float):
    """The dataset sgd_vectors draws first from default_rng(seed), per its docstring."""
    rng = np.random.default_rng(seed)
    x = np.sqrt(input_var) * rng.standard_normal(samples)
    return x, teacher * x + np.sqrt(noise_var) * rng.standard_normal(samples)


def test_full_batch_sgd_equals_gd_on_the_empirical_moments():
    case = Case(20, 0.05, 0.05, 1.0, 0.1, 0.3, 1.5, -1.2, seed=11)
    u0, w0 = case.start()
    n, noise = 64, 0.3
    steps = np.arange(0, 300, 10)
    sgd = sgd_vectors(u0, w0, batch_size=n, samples=n, noise_var=noise, steps=steps,
                      rng=np.random.default_rng(5), **case.hyper())
    x, y = sgd_data(5, n, case.input_var, case.teacher, noise)
    a_hat, b_hat = np.mean(x * x), np.mean(x * y)
    gd = gd_vectors(u0, w0, steps=steps, **(case.hyper() | dict(input_var=a_hat, teacher=b_hat / a_hat)))
    for field in ("m", "U", "W", "ntk", "imbalance", "gram_det"):
        np.testing.assert_allclose(getattr(sgd, field), getattr(gd, field), rtol=1e-10, err_msg=field)
    # and SGD's loss is the population loss, not the empirical one
    np.testing.assert_allclose(sgd.loss, case.input_var * (sgd.m - case.teacher) ** 2 / 2, rtol=1e-15)


def test_sgd_step_is_the_gradient_of_the_batch_mean_loss():
    case = Case(5, 0.2, 0.2, 0.7, 0.05, 0.08, 1.0, 0.9, seed=12)
    u0, w0 = case.start()
    n, noise = 8, 0.5
    sgd = sgd_vectors(u0, w0, batch_size=n, samples=n, noise_var=noise, steps=np.array([1]),
                      rng=np.random.default_rng(9), **case.hyper())
    x, y = sgd_data(9, n, case.input_var, case.teacher, noise)
    k = case.output_scale
    residual = k * (u0 @ w0) * x - y  # f(x) - y per sample
    u1 = u0 - case.lr_u * np.mean(residual * k * x) * w0  # d/du of mean((f - y)^2)/2
    w1 = w0 - case.lr_w * np.mean(residual * k * x) * u0
    np.testing.assert_allclose([sgd.U[0], sgd.W[0], sgd.V[0]], [u1 @ u1, w1 @ w1, u1 @ w1], rtol=1e-12)


def test_small_batch_sgd_breaks_conservation_of_imbalance():
    case = Case(20, 0.1, 0.1, 1.0, 0.05, 0.05, 1.0, 1.0, seed=13)
    u0, w0 = case.start()
    steps = np.array([0, 1000, 2000])
    gd = gd_vectors(u0, w0, steps=steps, **case.hyper())
    sgd = sgd_vectors(u0, w0, batch_size=2, samples=200, noise_var=1.0, steps=steps,
                      rng=np.random.default_rng(0), **case.hyper())
    assert sgd.loss[-1] < 0.05 * sgd.loss[0]  # it does learn
    drift = {name: np.abs(tr.imbalance / tr.imbalance[0] - 1) for name, tr in (("gd", gd), ("sgd", sgd))}
    late = {name: abs(tr.imbalance[2] / tr.imbalance[1] - 1) for name, tr in (("gd", gd), ("sgd", sgd))}
    assert drift["sgd"][-1] > 2 * drift["gd"][-1]
    # after convergence GD conserves Delta to rounding; SGD's noise keeps shrinking it
    assert late["gd"] < 1e-12 and late["sgd"] > 1e-3


def test_sgd_rejects_bad_batches():
    with pytest.raises(ValueError):
        sgd_vectors(np.ones(2), np.ones(2), output_scale=1, lr_u=1, lr_w=1, input_var=1, teacher=1,
                    batch_size=5, samples=4, noise_var=0, steps=np.array([1]), rng=np.random.default_rng(0))
