"""Networks with an activation on the model's one-dimensional task (docs/theory.md section 10).

f(x) = kappa sum_i u_i phi(w_i x), x ~ N(0, a), y = m* x: the activations and their derivatives against
mpmath, the split quadrature against mpmath integrals and against sampled data, the gradients against finite
differences (population and minibatch, every activation), the linear case against the linear model, the small-
weight gains of section 10, the exact ReLU split solution against simulated training, the same vectors for every
activation, and the command line.
"""

from __future__ import annotations

import json

import mpmath
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from phasediag import core
from phasediag.cli import phasediag
from phasediag.training import activations, simulate
from phasediag.training.measure import simulate_point
from phasediag.config.hyperparameters import Hyperparameters

pytestmark = pytest.mark.filterwarnings("error")

NONLINEAR = ("relu", "leaky_relu", "tanh", "sigmoid", "swish")
HYPER = dict(output_scale=1.3, lr_u=0.3, lr_w=0.2, input_var=1.7, teacher=0.8)


def mp_phi(name: str, z, slope=0.01):
    z = mpmath.mpf(z)
    sig = 1 / (1 + mpmath.exp(-z))
    return {"linear": z, "relu": max(z, 0), "leaky_relu": z if z > 0 else slope * z, "tanh": mpmath.tanh(z),
            "sigmoid": sig, "swish": z * sig}[name]


def mp_dphi(name: str, z, slope=0.01):
    z = mpmath.mpf(z)
    sig = 1 / (1 + mpmath.exp(-z))
    sig_slope = 1 / (4 * mpmath.cosh(z / 2) ** 2)  # sigma (1 - sigma), without cancellation at any precision
    return {"linear": 1, "relu": 1 if z > 0 else 0, "leaky_relu": 1 if z > 0 else slope,
            "tanh": 1 / mpmath.cosh(z) ** 2, "sigmoid": sig_slope, "swish": sig + z * sig_slope}[name]


@pytest.mark.parametrize("name", activations.ACTIVATIONS)
def test_activations_and_derivatives_match_mpmath(name):
    z = np.concatenate([-np.geomspace(800, 1e-12, 60), [0.0], np.geomspace(1e-12, 800, 60)])
    act = activations.activation(name, slope=0.07)
    phi, dphi = act(z), act.derivative(z)
    with mpmath.workdps(40):
        want = np.array([float(mp_phi(name, v, 0.07)) for v in z])
        want_d = np.array([float(mp_dphi(name, v, 0.07)) for v in z])
        # swish' = sigma + z sigma' has a root (z ~ -1.28): there only an absolute accuracy is possible
        cond = np.array([float(abs(mp_phi("sigmoid", v)) + abs(v * mp_dphi("sigmoid", v))) for v in z]) \
            if name == "swish" else 0.0
    assert np.all(np.abs(phi - want) <= 6e-16 * np.abs(want)), name
    assert np.all(np.abs(dphi - want_d) <= 6e-16 * (np.abs(want_d) + cond)), name


def test_unknown_activation_and_bad_slope_are_refused():
    with pytest.raises(ValueError, match="unknown activation"):
        activations.activation("gelu")
    with pytest.raises(ValueError, match="slope"):
        activations.activation("leaky_relu", slope=float("nan"))


# ---------------------------------------------------------------------------------------------------- quadrature


def mp_expect(f, a):
    """E[f(x)], x ~ N(0, a), by mpmath quadrature split at 0 (40 digits)."""
    with mpmath.workdps(40):
        s = mpmath.sqrt(a)
        density = lambda x: mpmath.exp(-x * x / (2 * a)) / (s * mpmath.sqrt(2 * mpmath.pi))  # noqa: E731
        return mpmath.quad(lambda x: f(x) * density(x), [-mpmath.inf, 0, mpmath.inf])


@pytest.mark.parametrize("name", NONLINEAR)
@pytest.mark.parametrize("w", [1e-3, 0.3, 2.0, -1.5])
def test_quadrature_moments_of_a_unit_match_mpmath(name, w):
    a = 1.7
    x, p = activations.population_quadrature(a)
    act = activations.activation(name)
    got_phi = float(p @ (x * act(w * x)))
    got_dphi = float(p @ (x * x * act.derivative(w * x)))
    got_sq = float(p @ act(w * x) ** 2)
    want_phi = float(mp_expect(lambda t: t * mp_phi(name, w * t), a))
    want_dphi = float(mp_expect(lambda t: t * t * mp_dphi(name, w * t), a))
    want_sq = float(mp_expect(lambda t: mp_phi(name, w * t) ** 2, a))
    for got, want in ((got_phi, want_phi), (got_dphi, want_dphi), (got_sq, want_sq)):
        assert abs(got - want) <= 1e-14 * max(abs(want), 1e-3), (name, w, got, want)


def test_quadrature_integrates_gaussian_moments_to_rounding():
    for a in (1e-3, 1.0, 250.0):
        x, p = activations.population_quadrature(a)
        assert abs(p.sum() - 1) < 1e-15
        assert abs(p @ x**2 / a - 1) < 1e-15
        assert abs(p @ x**4 / (3 * a * a) - 1) < 2e-15
        assert abs(p @ np.abs(x) / np.sqrt(2 * a / np.pi) - 1) < 1e-15


@pytest.mark.parametrize("name", NONLINEAR)
def test_population_values_agree_with_sampled_data(name):
    """m, the loss and the NTK by quadrature against their sample means over 2e6 sampled inputs (within 5 standard
    errors): the quadrature computes the expectations that sampled data estimate."""
    rng = np.random.default_rng(11)
    d, a, teacher, kappa, lr_u, lr_w = 20, 1.7, 0.8, 1.3, 0.3, 0.2
    u, w = rng.normal(0, 0.6, d), rng.normal(0, 0.9, d)
    got = simulate.activated_measurements(u, w, activation=name, output_scale=kappa, lr_u=lr_u, lr_w=lr_w,
                                          input_var=a, teacher=teacher)
    act = activations.activation(name)
    x = np.sqrt(a) * rng.standard_normal(2_000_000)
    H = act(np.multiply.outer(x, w))
    f = kappa * H @ u
    samples = {"m": x * f / a, "loss": 0.5 * (f - teacher * x) ** 2}
    for key, values in samples.items():
        err = values.std() / np.sqrt(values.size)
        assert abs(got[key] - values.mean()) < 5 * err, (name, key, got[key], values.mean(), err)


def test_the_error_estimate_is_tiny_for_moderate_weights_and_flags_a_saturated_network():
    rng = np.random.default_rng(2)
    u, w = rng.normal(0, 0.3, 30), rng.normal(0, 1.0, 30)
    diagnostics: dict = {}
    slow = dict(HYPER, lr_u=0.01, lr_w=0.01)  # stable: the weights stay of the size they start at
    simulate.gd_vectors(u, w, **slow, steps=np.array([0, 5]), activation="tanh", diagnostics=diagnostics)
    assert diagnostics["quadrature_error"] < 1e-14
    coarse: dict = {}
    simulate.gd_vectors(u, 300 * w, **HYPER, steps=np.array([0]), activation="tanh", nodes=8, diagnostics=coarse)
    assert coarse["quadrature_error"] > 1e-4


# ---------------------------------------------------------------------------------------------------- gradients


def finite_difference(loss, u, w, i, h=1e-6):
    e = np.zeros_like(u)
    e[i] = h
    return ((loss(u + e, w) - loss(u - e, w)) / (2 * h), (loss(u, w + e) - loss(u, w - e)) / (2 * h))


@pytest.mark.parametrize("name", activations.ACTIVATIONS)
def test_population_gradients_match_finite_differences(name):
    """The population gradient of every activation against central differences of the population loss (the
    quadrature's), unit by unit."""
    rng = np.random.default_rng(5)
    d = 12
    u, w = rng.normal(0, 0.5, d), rng.normal(0, 0.8, d)
    net = dict(activation=name, slope=0.05, **HYPER)
    loss = lambda uu, ww: simulate.activated_measurements(uu, ww, **net)["loss"]  # noqa: E731
    gu, gw = simulate.activated_gradients(u, w, **net)
    for i in range(d):
        fd_u, fd_w = finite_difference(loss, u, w, i)
        assert fd_u == pytest.approx(gu[i], rel=1e-7, abs=1e-10)
        assert fd_w == pytest.approx(gw[i], rel=1e-7, abs=1e-10)


@pytest.mark.parametrize("name", NONLINEAR)
def test_one_gd_step_applies_the_population_gradient(name):
    rng = np.random.default_rng(6)
    u, w = rng.normal(0, 0.5, 8), rng.normal(0, 0.8, 8)
    gu, gw = simulate.activated_gradients(u, w, activation=name, slope=0.05, **HYPER)
    one = simulate.gd_vectors(u, w, **HYPER, steps=np.array([1]), activation=name, slope=0.05)
    u1, w1 = u - HYPER["lr_u"] * gu, w - HYPER["lr_w"] * gw
    assert one.U[0] == pytest.approx(u1 @ u1, rel=1e-13)
    assert one.W[0] == pytest.approx(w1 @ w1, rel=1e-13)
    assert one.V[0] == pytest.approx(u1 @ w1, rel=1e-12)


@pytest.mark.parametrize("name", NONLINEAR)
def test_minibatch_gradients_match_finite_differences_of_the_batch_loss(name):
    """SGD with one batch holding the whole sample: its step is the gradient of the sample's mean loss."""
    rng = np.random.default_rng(7)
    d, n = 6, 40
    u, w = rng.normal(0, 0.5, d), rng.normal(0, 0.8, d)
    data_rng = np.random.default_rng(3)
    x = np.sqrt(HYPER["input_var"]) * data_rng.standard_normal(n)
    y = HYPER["teacher"] * x + np.sqrt(0.1) * data_rng.standard_normal(n)
    act = activations.activation(name, 0.05)
    kappa = HYPER["output_scale"]

    def batch_loss(uu, ww):
        return 0.5 * np.mean((kappa * act(np.multiply.outer(x, ww)) @ uu - y) ** 2)

    one = simulate.sgd_vectors(u, w, **HYPER, batch_size=n, samples=n, noise_var=0.1, steps=np.array([1]),
                               rng=np.random.default_rng(3), activation=name, slope=0.05)
    gu = np.array([finite_difference(batch_loss, u, w, i)[0] for i in range(d)])
    gw = np.array([finite_difference(batch_loss, u, w, i)[1] for i in range(d)])
    u1, w1 = u - HYPER["lr_u"] * gu, w - HYPER["lr_w"] * gw
    assert one.U[0] == pytest.approx(u1 @ u1, rel=1e-8)
    assert one.W[0] == pytest.approx(w1 @ w1, rel=1e-8)
    assert one.V[0] == pytest.approx(u1 @ w1, rel=1e-7)


# ---------------------------------------------------------------------------------------------------- the linear case


@settings(max_examples=40)
@given(width=st.integers(1, 40), log_var=st.floats(-4, 1), log_kappa=st.floats(-2, 1), teacher=st.floats(-3, 3),
       seed=st.integers(0, 2**32 - 1))
def test_identity_through_the_quadrature_is_the_linear_model(width, log_var, log_kappa, teacher, seed):
    """leaky_relu of slope 1 is the identity taken through the whole activated machinery (quadrature, network
    gradients, measurements): it reproduces the linear model (exact moments) to rounding."""
    rng = np.random.default_rng(seed)
    u0, w0 = simulate.sample_vectors(width, 10**log_var, 10**log_var, rng)
    kappa = 10**log_kappa
    # a stable step: a Theta <= 0.4 at the start and at the end (Theta_inf <= 2 kappa lr (|m*| + kappa sqrt(U W)))
    a = 1.3
    lr = 0.2 / max(1.0, a * kappa * kappa * (u0 @ u0 + w0 @ w0),
                   2 * a * kappa * (abs(teacher) + kappa * np.sqrt((u0 @ u0) * (w0 @ w0))))
    hyper = dict(output_scale=kappa, lr_u=lr, lr_w=0.5 * lr, input_var=a, teacher=teacher)
    steps = np.array([0, 1, 3, 10])
    linear = simulate.gd_vectors(u0, w0, **hyper, steps=steps)
    identity = simulate.gd_vectors(u0, w0, **hyper, steps=steps, activation="leaky_relu", slope=1.0)
    for field in ("m", "ntk", "U", "W", "V", "alignment"):
        a, b = getattr(linear, field), getattr(identity, field)
        scale = np.abs(a) + {"m": abs(teacher) + 1e-300, "V": np.sqrt(linear.U * linear.W)}.get(field, 0.0)
        assert np.all(np.abs(a - b) <= 1e-12 * scale + 1e-300), field
    loss_scale = linear.loss + hyper["input_var"] * (teacher**2 + linear.m**2)
    assert np.all(np.abs(linear.loss - identity.loss) <= 1e-12 * loss_scale)


def test_activation_linear_is_todays_simulate_on_the_command_line():
    runner = CliRunner()
    for extra in ([], ["--optimizer", "sgd"], ["--optimizer", "flow", "--t-max", "20"]):
        plain = runner.invoke(phasediag, ["simulate", "--width", "30", "--json", *extra])
        linear = runner.invoke(phasediag, ["simulate", "--width", "30", "--json", "--activation", "linear", *extra])
        assert plain.exit_code == linear.exit_code == 0
        a, b = json.loads(plain.stdout), json.loads(linear.stdout)
        a.pop("meta"), b.pop("meta")
        assert a == b
        assert a["params"]["activation"] == "linear"


# ---------------------------------------------------------------------------------------------------- theory section 10


def test_small_weights_see_the_activations_gain():
    """m = gamma m_linear with gamma = 1, 1/4 (tanh, sigmoid) as the weights go to 0, and exactly 1/2 (relu,
    swish: z/2 plus an even function) and (1 + slope)/2 (leaky_relu) at any size (section 10)."""
    rng = np.random.default_rng(4)
    u, w = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
    for name, gain, exact in (("tanh", 1.0, False), ("sigmoid", 0.25, False), ("swish", 0.5, True),
                              ("relu", 0.5, True), ("leaky_relu", 0.55, True)):
        assert activations.activation(name, 0.1).gain == gain
        for scale in ((1.0, 0.3) if exact else (1e-4, 1e-6)):
            m = simulate.activated_measurements(u, scale * w, activation=name, slope=0.1, **HYPER)["m"]
            m_linear = HYPER["output_scale"] * u @ (scale * w)
            tol = 1e-14 if exact else 10 * scale
            assert m == pytest.approx(gain * m_linear, rel=tol), (name, scale)


def test_the_same_seed_draws_the_same_vectors_and_data_whatever_the_activation():
    hyper = Hyperparameters(width=40, init_var_u=0.1, init_var_w=0.1)
    inits = {name: simulate_point(hyper, seed=9, optimizer="sgd", times=[0, 1], activation=name)["init"]
             for name in activations.ACTIVATIONS}
    grams = {name: (init["U"], init["W"], init["V"]) for name, init in inits.items()}
    assert len(set(grams.values())) == 1
    # the same dataset and batches: at batch_size = samples the identity-like leaky relu retraces linear SGD
    base = simulate_point(hyper, seed=9, optimizer="sgd", times=[0, 5, 20], batch_size=8, samples=64)
    leaky = simulate_point(hyper, seed=9, optimizer="sgd", times=[0, 5, 20], batch_size=8, samples=64,
                           activation="leaky_relu", slope=1.0)
    assert np.allclose(base["m"], leaky["m"], rtol=1e-12, atol=1e-15)


def relu_case(seed=1, d=200, var=1e-4):
    rng = np.random.default_rng(seed)
    return simulate.sample_vectors(d, var, var, rng)


RELU_HYPER = dict(output_scale=1.0, lr_u=0.5, lr_w=0.5, input_var=1.0, teacher=1.0)


def test_relu_split_solution_is_exact_for_gd_up_to_the_first_crossing():
    u0, w0 = relu_case()
    steps = np.arange(0, 60)
    sol = core.relu_solution(u0, w0, **RELU_HYPER, times=steps, optimizer="gd")
    trace = simulate.gd_vectors(u0, w0, **RELU_HYPER, steps=steps, activation="relu")
    first = int(sol.first_crossing)
    # the step at which a trained w_i first changes sign is the predicted one
    w_signs = []
    for k in (first - 1, first):
        w_k = _relu_gd_weights(u0, w0, k)
        w_signs.append(np.sign(w_k))
    assert np.all(w_signs[0] == np.sign(w0)) and np.any(w_signs[1] != np.sign(w0))
    upto = steps <= first
    for field in ("m", "ntk", "alignment", "norm_u2", "norm_w2"):
        a, b = getattr(sol, field)[upto], getattr(trace, field)[upto]
        assert np.all(np.abs(a - b) <= 1e-13 * np.abs(b) + 1e-300), field
    assert np.all(sol.crossed[steps < first] == 0) and sol.crossed[first] > 0


def _relu_gd_weights(u0, w0, k):
    """w after k steps of the ReLU network's population GD (the same loop, vectors kept)."""
    x, p = activations.population_quadrature(1.0)
    u, w = u0.copy(), w0.copy()
    for _ in range(k):
        H = np.maximum(np.multiply.outer(w, x), 0.0)
        D = (np.multiply.outer(w, x) > 0).astype(float)
        r = u @ H - x
        u, w = u - 0.5 * (H @ (p * r)), w - 0.5 * u * (D @ (p * r * x))
    return w


def test_relu_split_solution_is_exact_for_the_flow_before_the_first_crossing():
    u0, w0 = relu_case(seed=2, d=100)
    probe = core.relu_solution(u0, w0, **RELU_HYPER, times=np.array([0.0]), optimizer="flow")
    t_cross = probe.first_crossing
    assert 0 < t_cross < np.inf
    times = np.array([0.0, 0.25 * t_cross, 0.5 * t_cross, 0.99 * t_cross])
    sol = core.relu_solution(u0, w0, **RELU_HYPER, times=times, optimizer="flow")
    trace = simulate.integrate_flow(u0, w0, **RELU_HYPER, times=times, activation="relu")
    for field in ("m", "ntk", "alignment", "norm_u2"):
        a, b = getattr(sol, field), getattr(trace, field)
        assert np.all(np.abs(a - b) <= 1e-10 * np.abs(b)), field
    assert np.all(sol.crossed == 0)
    after = core.relu_solution(u0, w0, **RELU_HYPER, times=np.array([1.01 * t_cross]), optimizer="flow")
    assert after.crossed[0] >= 1


def test_relu_split_solution_holds_for_all_time_when_no_unit_can_cross():
    """|u_i|/sqrt(eta_u) < |w_i|/sqrt(eta_w) for every unit: p_i + q_i and p_i - q_i have opposite signs, so
    q_i = ((p+q) z^-1/2 - (p-q) z^1/2)/2 never vanishes and the split solution is exact throughout."""
    rng = np.random.default_rng(8)
    w0 = rng.normal(0, 0.1, 60)
    u0 = 0.5 * w0 * rng.uniform(-1, 1, 60)
    steps = np.array([0, 1, 5, 20, 100, 400])
    sol = core.relu_solution(u0, w0, **RELU_HYPER, times=steps, optimizer="gd")
    trace = simulate.gd_vectors(u0, w0, **RELU_HYPER, steps=steps, activation="relu")
    assert sol.first_crossing == np.inf and np.all(sol.crossed == 0)
    for field in ("m", "ntk", "alignment", "norm_u2", "norm_w2"):
        a, b = getattr(sol, field), getattr(trace, field)
        assert np.all(np.abs(a - b) <= 1e-12 * np.abs(b)), field
    assert abs(trace.m[-1] - 1.0) < 1e-9  # and it trains to the teacher
    flow = core.relu_solution(u0, w0, **RELU_HYPER, times=np.array([0.0, 3.0, np.inf]), optimizer="flow")
    assert flow.first_crossing == np.inf and flow.m[-1] == pytest.approx(1.0, rel=1e-14)


# ---------------------------------------------------------------------------------------------------- command line


def test_simulate_reports_the_activation_the_split_solution_and_the_quadrature_error():
    out = CliRunner().invoke(phasediag, ["simulate", "--activation", "relu", "--width", "50", "--times", "0,5,50",
                                         "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["params"]["activation"] == "relu" and result["params"]["nodes"] == 64
    assert result["final"]["quadrature_error"] < 1e-13
    assert result["split"]["m"][0] == pytest.approx(result["m"][0], rel=1e-14)
    text = CliRunner().invoke(phasediag, ["simulate", "--activation", "tanh", "--width", "50", "--times", "0,5"])
    assert text.exit_code == 0 and "no exact solution for tanh" in text.stdout


@pytest.mark.parametrize("args, option", [(["--activation", "gelu"], "--activation"), (["--slope", "inf"], "--slope"),
                                          (["--nodes", "3"], "--nodes"), (["--nodes", "x"], "--nodes"),
                                          (["--activation", "tanh", "--width", "10000000", "--nodes", "4096"], "--nodes"),
                                          (["--activation", "relu", "--optimizer", "sgd", "--width", "100000",
                                            "--batch-size", "1000", "--samples", "100000"], "--batch-size"),
                                          (["--activation", "leaky_relu", "--slope", "-1"], "--slope")])
def test_bad_activation_options_get_one_line_and_exit_2(args, option):
    out = CliRunner().invoke(phasediag, ["simulate", *args])
    assert out.exit_code == 2
    assert option in out.stderr and "Traceback" not in out.stderr


def test_the_trajectory_figure_names_the_activation_and_draws_the_split_solution():
    from phasediag.plots.trajectory import trajectory_figure

    result = simulate_point(Hyperparameters(width=40), times=[0, 1, 10, 100], activation="relu")
    fig = trajectory_figure(result)
    assert fig._suptitle.get_text().startswith("ReLU network, simulated GD")
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "exact ReLU split solution" in labels
    assert any("E[(f(x) - m^* x)^2]/2" in ax.get_ylabel() for ax in fig.axes)
    linear = trajectory_figure(simulate_point(Hyperparameters(width=40), times=[0, 1, 10]))
    assert "network" not in linear._suptitle.get_text()
    assert not any("split" in t.get_text() for legend in linear.legends for t in legend.get_texts())


@pytest.mark.parametrize("extra", [["--lr-u", "1e6", "--lr-w", "1e6"], ["--init-var-u", "1e4", "--init-var-w", "1e4"],
                                   ["--output-scale", "1e-308"]])
def test_a_diverging_or_extreme_relu_run_prints_no_warning(extra):
    out = CliRunner().invoke(phasediag, ["simulate", "--activation", "relu", "--width", "20", "--json", *extra])
    assert out.exit_code == 0 and out.stderr == ""
    json.loads(out.stdout)
