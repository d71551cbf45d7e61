"""The closed form (phasediag.core) against the finite-width witness (phasediag.training.simulate).

The simulator trains the actual vectors u, w in R^d; the core only sees their Gram entries. Agreement is
asserted per quantity, with the error scales of docs/theory.md section 8:
- m:     |m_sim - m_cf| <= tol * max(|m|, min(hypot(m, g), |m0| + |m*|))  (relative, except near m = 0)
- zeta:  |zeta_sim - zeta_cf| <= tol * (the m scale) / hypot(m, kappa sqrt(G))
- Theta, |u|^2, |w|^2: relative error <= tol
- loss:  |loss_sim - loss_cf| <= a (|m - m*| + tol * m scale) * tol * m scale  (the loss error implied by m's)
Run (from the repository root): python3 -m pytest tests/test_closed_form_vs_simulation.py -q -W error
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scipy import stats

from phasediag.core import (
    GD_OUTCOMES,
    Gram,
    Problem,
    explicit_gram,
    flow_state,
    gd_outcome,
    gd_state,
    invariants,
    sample_gram,
)
from phasediag.training.simulate import Trace, gd_vectors, integrate_flow, sample_vectors
from sim_cases import Case

pytestmark = pytest.mark.filterwarnings("error")

FLOW_TOL = 1e-9  # integrate_flow runs at rtol = 1e-12; observed agreement is 1e-11 or better
GD_TOL = 1e-10  # exact GD map vs vector GD: both are exact up to rounding


def closed_form(case: Case, u0: np.ndarray, w0: np.ndarray):
    """Invariants of the case with the Gram of the simulated (u0, w0) (G by core.explicit_gram)."""
    gram = explicit_gram(u0 @ u0, w0 @ w0, u0 @ w0)
    return invariants(Problem(case.output_scale, case.lr_u, case.lr_w, case.input_var, case.teacher, gram))


def m_scale(inv, m) -> np.ndarray:
    """docs/theory.md section 8's scale for errors in m: max(|m|, min(hypot(m, g), |m0| + |m*|))."""
    return np.maximum(np.abs(m), np.minimum(np.hypot(m, inv.g), np.abs(inv.m0) + np.abs(inv.teacher)))


def worst(err, scale) -> float:
    """max of err / scale (0 where both vanish)."""
    err, scale = np.broadcast_arrays(np.abs(err), scale)
    return float(np.max(np.divide(err, scale, out=np.zeros_like(err), where=err > 0)))


def assert_agree(sim: Trace, cf, inv, tol: float) -> None:
    """Assert the agreement documented in the module docstring, field by field (G: the initial one)."""
    scale = m_scale(inv, cf.m)
    errors = {
        "m": worst(sim.m - cf.m, scale),
        "ntk": worst(sim.ntk - cf.ntk, cf.ntk),
        "norm_u2": worst(sim.norm_u2 - cf.norm_u2, cf.norm_u2),
        "norm_w2": worst(sim.norm_w2 - cf.norm_w2, cf.norm_w2),
        "alignment": worst((sim.alignment - cf.alignment) * np.hypot(cf.m, inv.output_scale * np.sqrt(inv.gram.G)),
                           scale),
        "loss": worst(sim.loss - cf.loss, inv.input_var * (np.abs(cf.m - inv.teacher) + tol * scale) * scale),
    }
    bad = {k: v for k, v in errors.items() if v > tol}
    assert not bad, f"disagreement (error/scale) above {tol:g}: {bad}"


# ------------------------------------------------------------------------------------------
# Gradient flow: closed form vs direct integration in R^d

FLOW_CASES = {
    "d1_ratio_1e3": Case(1, 1.0, 1.0, 1.0, 1.0, 1e-3, 1.0, 1.5, seed=0),
    "d1_ratio_1e-3_crossing": Case(1, 1.0, 1.0, 1.0, 1e-3, 1.0, 1.0, -2.0, seed=1, opposite=True),
    "d2_ratio_1e-3_negative_teacher": Case(2, 0.5, 0.5, 1.0, 1e-3, 1.0, 2.0, -1.0, seed=1),
    "d2_ratio_1e3_crossing": Case(2, 0.5, 0.5, 1.0, 1.0, 1e-3, 0.5, 2.0, seed=2, opposite=True),
    "d1000_crossing": Case(1000, 1e-3, 1e-3, 1.0, 0.1, 0.1, 1.0, -2.0, seed=5, opposite=True),
    "d1000_zero_u": Case(1000, 0.0, 1e-3, 1.0, 0.1, 0.1, 1.0, -2.0, seed=4),
    "d1000_zero_w_ratio_1e3": Case(1000, 1e-3, 0.0, 1.0, 1.0, 1e-3, 1.0, 3.0, seed=7),
    "d1000_kernel_ntk_param": Case(1000, 1.0, 1.0, 1000**-0.5, 0.05, 0.05, 1.0, 1.0, seed=2),
    "d1000_large_init_standard": Case(1000, 1.0, 1.0, 1.0, 1e-4, 1e-4, 1.0, 1.0, seed=8),
    "d1000_small_init_feature": Case(1000, 1e-6, 1e-6, 1.0, 0.01, 0.01, 1.0, 3.0, seed=3),
    "d1000_small_init_ratio_1e-3": Case(1000, 1e-5, 1e-5, 1.0, 1e-3, 1.0, 1.0, -0.5, seed=9, opposite=True),
    "d1000_kernel_aligning": Case(1000, 1.0, 1.0, 1e-3, 1e3, 1e-3, 1.0, 1.0, seed=6),
}
FLOW_TIMES = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 40)])


@lru_cache(maxsize=None)
def flow_pair(name: str):
    case = FLOW_CASES[name]
    u0, w0 = case.start()
    inv = closed_form(case, u0, w0)
    return integrate_flow(u0, w0, times=FLOW_TIMES, **case.hyper()), flow_state(inv, FLOW_TIMES), inv


@pytest.mark.parametrize("name", FLOW_CASES)
def test_closed_form_flow_matches_integrated_flow(name):
    sim, cf, inv = flow_pair(name)
    assert_agree(sim, cf, inv, FLOW_TOL)


@pytest.mark.parametrize("name", [n for n, c in FLOW_CASES.items() if c.opposite])
def test_crossing_cases_do_cross_zero(name):
    sim, cf, _ = flow_pair(name)
    assert sim.m[0] * FLOW_CASES[name].teacher < 0 and np.any(sim.m * sim.m[0] < 0)
    assert np.array_equal(np.sign(sim.m), np.sign(cf.m))  # and on the same side at every sample


def test_cases_span_kernel_and_feature_learning():
    """The case table covers both regimes: NTK change from < 1e-3 to > 10x."""
    change = {name: flow_pair(name)[0].ntk[-1] / flow_pair(name)[0].ntk[0] - 1 for name in FLOW_CASES}
    assert abs(change["d1000_kernel_ntk_param"]) < 1e-3 and abs(change["d1000_kernel_aligning"]) < 1e-3
    assert change["d1000_small_init_feature"] > 10
    _, cf, _ = flow_pair("d1000_kernel_aligning")  # rotation without NTK change (docs/theory.md section 6)
    assert abs(cf.alignment[-1]) - abs(cf.alignment[0]) > 0.1


def test_d1_balanced_opposite_sign_is_a_saddle_in_both():
    """g = 0 (d = 1, Delta = 0) and m0 m* < 0: m decays to 0 and never learns."""
    case = Case(1, 1.0, 1.0, 1.0, 0.3, 0.3, 1.0, 1.0, seed=0)
    u0, w0 = np.array([1.0]), np.array([-1.0])  # exactly balanced
    inv = closed_form(case, u0, w0)
    assert bool(inv.saddle)
    times = np.array([0.0, 1.0, 10.0, 50.0])
    sim = integrate_flow(u0, w0, times=times, **case.hyper())
    cf = flow_state(inv, times)
    np.testing.assert_allclose(sim.m, cf.m, rtol=FLOW_TOL)
    np.testing.assert_allclose(sim.ntk, cf.ntk, rtol=FLOW_TOL)
    assert sim.m[-1] < 0 and abs(sim.m[-1]) < 1e-6 * abs(sim.m[0])


# ------------------------------------------------------------------------------------------
# Explicit vector GD at small steps converges to the closed-form flow at first order


def test_vector_gd_converges_to_closed_form_flow_at_first_order():
    case = Case(50, 0.02, 0.02, 1.0, 0.2, 0.05, 1.0, 2.0, seed=3)
    u0, w0 = case.start()
    T = 20.0
    cf = flow_state(closed_form(case, u0, w0), T)
    errors = []
    for h in (0.01, 0.005, 0.0025):  # GD with rates h*eta for T/h steps ~ flow with eta at time T
        gd = gd_vectors(u0, w0, steps=np.array([round(T / h)]),
                        **(case.hyper() | dict(lr_u=case.lr_u * h, lr_w=case.lr_w * h)))
        errors.append([abs(gd.m[0] / cf.m - 1), abs(gd.ntk[0] / h / cf.ntk - 1)])
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders >= 0.8) & (orders <= 1.2)), orders


# ------------------------------------------------------------------------------------------
# The exact GD map (alpha, beta recursion) vs vector GD


def orthogonal_start(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Sampled (u0, w0) with w0 made orthogonal to u0: m0 = 0 up to rounding."""
    u0, w0 = case.start()
    return u0, w0 - (u0 @ w0) / (u0 @ u0) * u0


def rates_for(case: Case, u0, w0, a_theta0: float) -> Case:
    """The case with both rates scaled (ratio kept) so that a Theta0 = a_theta0."""
    theta0 = case.output_scale**2 * (case.lr_w * (u0 @ u0) + case.lr_u * (w0 @ w0))
    s = a_theta0 / (case.input_var * theta0)
    return case._replace(lr_u=case.lr_u * s, lr_w=case.lr_w * s)


GD_CASES = {
    # name: (case, a Theta0, orthogonalize)
    "lazy_d100": (Case(100, 0.01, 0.01, 1.0, 1.0, 1.0, 1.0, 1.5, seed=20), 1.0, False),
    "lazy_d2_ratio_1e3": (Case(2, 0.5, 0.5, 1.0, 1.0, 1e-3, 1.0, -1.0, seed=21), 1.5, False),
    "d1000_ratio_1e-3_crossing": (Case(1000, 1e-3, 1e-3, 1.0, 1e-3, 1.0, 2.0, 1.0, seed=22, opposite=True),
                                  0.5, False),
    "small_init_d100": (Case(100, 1e-6, 1e-6, 1.0, 1.0, 1.0, 1.0, 2.0, seed=23), 1e-4, False),
    "catapult_d100_m0_zero": (Case(100, 0.1, 0.1, 1.0, 1.0, 1.0, 1.0, 1.0, seed=24), 3.0, True),
}


@lru_cache(maxsize=None)
def gd_pair(name: str, steps: tuple[int, ...]):
    base, a_theta0, orthogonal = GD_CASES[name]
    u0, w0 = orthogonal_start(base) if orthogonal else base.start()
    case = rates_for(base, u0, w0, a_theta0)
    inv = closed_form(case, u0, w0)
    steps_arr = np.array(steps)
    return case, gd_vectors(u0, w0, steps=steps_arr, **case.hyper()), gd_state(inv, steps_arr), inv


GD_STEPS = tuple(range(0, 400, 3))


@pytest.mark.parametrize("name", GD_CASES)
def test_exact_gd_map_matches_vector_gd(name):
    case, sim, cf, inv = gd_pair(name, GD_STEPS)
    assert np.all(np.isfinite(sim.loss)) and np.all(np.isfinite(cf.loss))
    assert_agree(sim, cf, inv, GD_TOL)  # observed: <= 1.1e-14 for every field


def test_catapult_run_is_a_catapult_in_both():
    case, sim, cf, inv = gd_pair("catapult_d100_m0_zero", GD_STEPS)
    assert 2 < case.input_var * sim.ntk[0] < 4 and abs(sim.m[0]) < 1e-12
    assert GD_OUTCOMES[int(gd_outcome(inv).outcome)] == "catapult"
    assert np.max(sim.loss) > 2 * sim.loss[0]  # the loss rises ...
    assert sim.loss[-1] < 1e-12 * sim.loss[0]  # ... then converges
    assert case.input_var * sim.ntk[-1] < 2  # at a flatter minimum (the catapult mechanism)


def test_divergent_run_diverges_in_both():
    base = Case(100, 0.1, 0.1, 1.0, 1.0, 1.0, 1.0, 1.0, seed=25)
    u0, w0 = base.start()
    case = rates_for(base, u0, w0, 5.0)
    inv = closed_form(case, u0, w0)
    assert GD_OUTCOMES[int(gd_outcome(inv).outcome)] == "diverges"
    sim = gd_vectors(u0, w0, steps=np.array([0, 2000]), **case.hyper())
    assert np.isfinite(sim.loss[0]) and sim.loss[-1] == np.inf


# ------------------------------------------------------------------------------------------
# sample_gram (Bartlett, counter-based) vs brute-force Gaussian vectors

N_SAMPLES = 20_000
KS_P_MIN = 1e-3  # fixed seeds: deterministic; a real distribution error gives p ~ 0 at this N


@lru_cache(maxsize=None)
def gram_samples(width: int, var_u: float, var_w: float):
    exact = sample_gram(width, var_u, var_w, seed=1234, index=np.arange(N_SAMPLES))
    rng = np.random.default_rng(width)
    pairs = [sample_vectors(width, var_u, var_w, rng) for _ in range(N_SAMPLES)]
    brute = np.array([[u @ u, w @ w, u @ w] for u, w in pairs]).T
    return exact, brute


@pytest.mark.parametrize("width", [1, 2, 7, 100])
def test_sample_gram_matches_brute_force_in_distribution(width):
    var_u, var_w = 0.7, 1.9
    exact, (U, W, V) = gram_samples(width, var_u, var_w)
    pairs = [("U", exact.U, U), ("W", exact.W, W), ("V", exact.V, V)]
    if width > 1:  # at d = 1, zeta = sign(V) and G = 0 exactly (checked below)
        pairs += [("zeta", exact.V / np.sqrt(exact.U * exact.W), V / np.sqrt(U * W)), ("G", exact.G, U * W - V**2)]
    for what, a, b in pairs:
        p = stats.ks_2samp(a, b).pvalue
        assert p > KS_P_MIN, f"{what}: KS p = {p:.2g}"


@pytest.mark.parametrize("width", [1, 2, 7, 100])
def test_sample_gram_and_brute_force_match_exact_moments_and_quantiles(width):
    """Both samples against the exact law: U/s_u^2, W/s_w^2 ~ chi^2_d; E V = 0, Var V = d s_u^2 s_w^2."""
    var_u, var_w = 0.7, 1.9
    exact, brute = gram_samples(width, var_u, var_w)
    n = N_SAMPLES
    for U, W, V in ((exact.U, exact.W, exact.V), brute):
        for x, var in ((U, var_u), (W, var_w)):
            assert abs(np.mean(x) / (width * var) - 1) < 5 * np.sqrt(2 / (width * n))
            assert abs(np.var(x) / (2 * width * var**2) - 1) < 0.25
            # empirical CDF at the exact deciles: binomial standard error sqrt(p (1 - p) / n), 5 sigma
            p = np.arange(1, 10) / 10
            cdf = np.mean(x[:, None] <= var * stats.chi2.ppf(p, width)[None, :], axis=0)
            assert np.all(np.abs(cdf - p) < 5 * np.sqrt(p * (1 - p) / n)), cdf
        assert abs(np.mean(V)) < 5 * np.sqrt(width * var_u * var_w / n)
        assert abs(np.var(V) / (width * var_u * var_w) - 1) < 0.25
        if width == 1:  # parallel layers: |zeta| = 1, random sign
            np.testing.assert_allclose(np.abs(V) / np.sqrt(U * W), 1.0, rtol=1e-15)
            assert abs(np.mean(V > 0) - 0.5) < 5 * np.sqrt(0.25 / n)


@pytest.mark.parametrize("width", [1, 2, 7, 100, 10**12])
def test_sample_gram_determinant_is_consistent_and_nonnegative(width):
    g = sample_gram(width, 0.3, 2.0, seed=5, index=np.arange(2000))
    assert np.all(g.G >= 0) and np.all(g.U >= 0) and np.all(g.W >= 0)
    if width == 1:
        assert np.all(g.G == 0)
    else:
        direct = g.U * g.W - g.V**2  # fine here: random layers are far from parallel (G ~ U W)
        np.testing.assert_allclose(g.G, direct, rtol=1e-9 * width, atol=1e-12 * np.max(g.U * g.W))


def test_sample_gram_is_reproducible_and_chunk_independent():
    index = np.arange(3000)
    whole = sample_gram(7, 0.5, 1.5, seed=99, index=index)
    again = sample_gram(7, 0.5, 1.5, seed=99, index=index)
    for a, b in zip(whole, again):
        np.testing.assert_array_equal(a, b)
    pieces = [sample_gram(7, 0.5, 1.5, seed=99, index=chunk) for chunk in np.array_split(index, [1, 17, 1000, 2999])]
    for field, full in zip(Gram._fields, whole):
        np.testing.assert_array_equal(np.concatenate([getattr(p, field) for p in pieces]), full)
    rng = np.random.default_rng(0)
    perm = rng.permutation(index)
    shuffled = sample_gram(7, 0.5, 1.5, seed=99, index=perm)
    np.testing.assert_array_equal(shuffled.U, whole.U[perm])
    single = sample_gram(7, 0.5, 1.5, seed=99, index=1234)
    assert float(single.V) == whole.V[1234]
    other = sample_gram(7, 0.5, 1.5, seed=100, index=index)
    assert not np.any(other.U == whole.U)


def test_sample_gram_zero_variance_layer():
    g = sample_gram(50, 0.0, 1.0, seed=3, index=np.arange(100))
    assert np.all(g.U == 0) and np.all(g.V == 0) and np.all(g.G == 0) and np.all(g.W > 0)


# ---------------------------------------------------------------------------------------------------------
# GD's exact map on orbits that oscillate (a stable 2-cycle at width 1), against a 40-digit iteration

@pytest.mark.parametrize("u0, w0, lr, kappa", [  # config 7's validation points 8689 and 8283 (its seed)
    (-1.3244018479694142, -0.24029531839263366, 1.3561362896660138, 0.841395141645195),
    (-0.21543544072386853, -0.42844141051079215, 1.163152533576813, 0.9440608762859234),
])
def test_the_gd_map_stays_on_an_oscillating_orbit(u0, w0, lr, kappa):
    """The map once carried delta = m - m* by its own recurrence on such orbits, which drifted off the stable
    2-cycle linearly (3e-2 and 8e-2 by steps 742 and 979) while the vectors stayed on it."""
    import mpmath

    steps = 1200
    gram = explicit_gram(u0 * u0, w0 * w0, u0 * w0)._replace(G=np.zeros(()))  # two numbers: G = 0 exactly
    inv = invariants(Problem(kappa, lr, lr, 1.0, 1.0, gram))
    assert GD_OUTCOMES[int(np.ravel(gd_outcome(inv, max_steps=2000).outcome)[0])] == "oscillates"
    m = np.asarray(gd_state(inv, np.arange(steps)).m).ravel()
    with mpmath.workdps(40):
        u, w, exact = mpmath.mpf(u0), mpmath.mpf(w0), []
        for _ in range(steps):
            slope = kappa * u * w
            exact.append(float(slope))
            r = kappa * (slope - 1)
            u, w = u - lr * r * w, w - lr * r * u
    assert np.max(np.abs(m - np.array(exact))) <= 4e-15 * max(1.0, np.max(np.abs(exact)))
