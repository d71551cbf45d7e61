"""`phasediag simulate`: the actual vectors trained, against the exact solution of the same network."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from phasediag import core
from phasediag.config.hyperparameters import Hyperparameters
from phasediag.training import simulate
from phasediag.cli import phasediag
from phasediag.engine.point import solve_point
from phasediag.training.measure import measured_label, measured_order_parameters, simulate_point


def cli(*args, code=0):
    res = CliRunner().invoke(phasediag, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def run_json(*args):
    return json.loads(cli(*args, "--json").output)


def gram_args(result):
    ini = result["init"]
    return ["--gram", f"{ini['U']!r},{ini['W']!r},{ini['V']!r}"]


# regimes: (width, extra options); each run as GD and compared with the exact GD map of the same Gram
REGIMES = {
    "kernel, wide": (2000, []),
    "alignment, small init": (50, ["--init-var-u", "1e-4", "--init-var-w", "1e-4", "--lr-u", "0.2", "--lr-w", "0.2"]),
    "fast output layer": (30, ["--lr-u", "1", "--lr-w", "0.01"]),
    "fast input layer": (30, ["--lr-u", "0.01", "--lr-w", "1"]),
    "large output layer (disalignment)": (10, ["--init-var-u", "1", "--init-var-w", "1e-3", "--teacher", "0.05"]),
    "negative teacher": (40, ["--teacher", "-2", "--lr-u", "0.05", "--lr-w", "0.05"]),
    "d = 1, wrong side": (1, ["--teacher", "-1", "--seed", "4"]),
}
FIELDS = ("m", "ntk", "alignment", "norm_u2", "norm_w2", "loss")


@pytest.mark.parametrize("regime", list(REGIMES))
def test_simulated_gd_equals_exact_gd_of_the_same_gram(regime):
    width, opts = REGIMES[regime]
    opts = opts if "--seed" in opts else [*opts, "--seed", "11"]
    times = "0,1,3,10,30,100,300,1000"
    sim = run_json("simulate", "--width", width, *opts, "--times", times)
    exact_opts = [o for i, o in enumerate(opts) if o != "--seed" and (i == 0 or opts[i - 1] != "--seed")]
    exact = run_json("solve", "--width", width, *exact_opts, *gram_args(sim), "--optimizer", "gd",
                     "--times", times)
    assert sim["t"] == exact["t"]
    teacher = sim["params"]["teacher"]
    for field in FIELDS:
        got, want = np.array(sim[field], float), np.array(exact[field], float)
        scale = np.maximum(np.abs(want), abs(teacher) if field == "m" else 0.0)
        if field == "loss":  # the excess loss is a squared residual: compare it relative to its start
            scale = np.maximum(scale, 1e-12 * want[0])
        if field == "alignment":
            scale = np.ones_like(want)
        assert np.all(np.abs(got - want) <= 1e-9 * scale + 1e-300), (field, got, want)
    # the measured label is the one the same rule gives on the exact path
    assert sim["final"]["label"] is not None and not sim["final"]["diverged"]


def test_simulated_flow_equals_exact_flow():
    times = "0,0.5,2,8,32,128"
    sim = run_json("simulate", "--optimizer", "flow", "--width", 25, "--seed", 2, "--lr-u", 0.3, "--lr-w", 0.7,
                   "--teacher", "-1.5", "--times", times)
    exact = run_json("solve", "--width", 25, "--lr-u", 0.3, "--lr-w", 0.7, "--teacher", "-1.5", *gram_args(sim),
                     "--times", times)
    for field in ("m", "ntk", "alignment"):
        np.testing.assert_allclose(sim[field], exact[field], rtol=1e-9, atol=1e-11)


def test_gd_error_against_the_flow_shrinks_linearly_with_the_step():
    """GD with rates h * eta for T/h steps is Euler's method for the flow at time T: error O(h)."""
    errors = []
    for h in (0.04, 0.02, 0.01):
        steps = round(4.0 / h)
        times = ",".join(str(k) for k in (0, steps // 4, steps // 2, steps))
        opts = ["--width", 20, "--lr-u", h, "--lr-w", 0.5 * h, "--init-var-u", 0.05, "--init-var-w", 0.05]
        sim = run_json("simulate", *opts, "--seed", 5, "--times", times)
        flow = run_json("solve", *opts, *gram_args(sim), "--times", times)
        errors.append(np.max(np.abs(np.array(sim["m"]) - np.array(flow["m"]))))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(1.8 < r < 2.2 for r in ratios), (errors, ratios)
    assert errors[-1] < 0.05


def test_sgd_with_the_full_dataset_as_batch_is_gd_on_the_sample_moments():
    seed, n = 9, 64
    sgd = simulate_point(Hyperparameters(width=15, teacher=0.7), seed=seed, optimizer="sgd", batch_size=n,
                         samples=n, noise_var=0.3, times=[0, 1, 5, 40])
    # the same draws as simulate_point: the vectors, then the dataset, from one generator
    rng = np.random.default_rng(seed)
    u0, w0 = simulate.sample_vectors(15, 1 / 15, 1 / 15, rng)
    x = rng.standard_normal(n)
    y = 0.7 * x + np.sqrt(0.3) * rng.standard_normal(n)
    a_hat, b_hat = np.mean(x * x), np.mean(x * y)
    gd = simulate.gd_vectors(u0, w0, output_scale=1.0, lr_u=0.1, lr_w=0.1, input_var=a_hat, teacher=b_hat / a_hat,
                             steps=np.array([0, 1, 5, 40]))
    np.testing.assert_allclose(sgd["m"], gd.m, rtol=1e-12)
    np.testing.assert_allclose(sgd["imbalance"], gd.imbalance, rtol=1e-10)
    assert sgd["params"]["batch_size"] == n and sgd["init"]["U"] == pytest.approx(float(u0 @ u0), rel=1e-15)


def test_sgd_small_batches_break_the_conservation_law_gd_nearly_keeps():
    hyper = Hyperparameters(width=20, teacher=1.0, lr_u=0.2, lr_w=0.2)
    opts = dict(seed=3, times=[0, 400])
    gd = simulate_point(hyper, **opts, optimizer="gd")
    sgd = simulate_point(hyper, **opts, optimizer="sgd", batch_size=1, samples=256, noise_var=0.5)
    drift = lambda r: abs(r["imbalance"][-1] - r["imbalance"][0]) / (r["init"]["U"] / 0.2 + r["init"]["W"] / 0.2)  # noqa: E731
    assert drift(sgd) > 10 * drift(gd)


def test_json_keys_extend_solves():
    sim = run_json("simulate", "--times", "0,10")
    exact = run_json("solve", "--times", "0,10")
    assert set(exact) <= set(sim) and set(exact["final"]) <= set(sim["final"])
    assert set(exact["init"]) <= set(sim["init"]) and {"U", "W", "V"} <= set(sim["init"])
    assert sim["params"]["seed"] == 0 and sim["params"]["optimizer"] == "gd"


def test_same_seed_same_bits_other_seed_other_vectors():
    x, y = run_json("simulate", "--seed", 4), run_json("simulate", "--seed", 4)
    x.pop("meta"), y.pop("meta")
    assert x == y
    z = run_json("simulate", "--seed", 5)
    assert z["init"]["U"] != x["init"]["U"]


def test_divergence_is_reported_not_nan():
    res = run_json("simulate", "--lr-u", 5, "--lr-w", 5, "--times", "0,10,1000")
    assert res["final"]["diverged"] and res["final"]["phase"] == "diverged" and res["final"]["label"] is None
    assert res["m"][-1] is None and res["m"][0] is not None


def _none_as_inf(values):
    return np.array([np.inf if v is None else v for v in values], dtype=float)


@pytest.mark.parametrize("optimizer, times, lr", [
    ("flow", [0.0, 1e-9, 1e-3, 0.5, 1.0, 10.0, 100.0], 0.1),
    ("gd", [0, 1, 2, 10, 100, 1000], 0.1),
    ("gd", [0, 1, 2, 5, 10, 100, 1000], 5.0),  # diverging (network and kernel model)
    ("sgd", [0, 1, 10, 100], 0.1),
])
def test_simulated_kernel_prediction_is_the_cores(optimizer, times, lr):
    """simulate's m_lin, loss_lin: core.kernel_prediction from the sampled network's (m0, Theta0)."""
    res = simulate_point(Hyperparameters(width=30, lr_u=lr, lr_w=lr, teacher=0.8), seed=3, times=times,
                         optimizer=optimizer)
    m0, ntk0 = res["init"]["m"], res["init"]["ntk"]
    want = core.kernel_prediction(m0, 0.8, ntk0, 1.0, np.asarray(times, dtype=float), steps=optimizer != "flow")
    for key, expected in (("m_lin", want.m_lin), ("loss_lin", want.loss_lin)):
        got = _none_as_inf(res[key])
        assert np.array_equal(got, np.where(np.isfinite(expected), expected, np.inf)), key
    if optimizer == "flow":
        assert res["m_lin"][0] == m0  # exactly the initial slope


@pytest.mark.parametrize("optimizer, times, lr, gram", [
    ("flow", [0.0, 1e-9, 0.3, 1.0, 10.0, 1e4, float("inf")], 0.1, None),
    ("gd", [0, 1, 2, 10, 100, float("inf")], 0.1, None),
    ("gd", [0, 1, 2, 5, 100, 1000, float("inf")], 5.0, None),
    ("gd", [0, 1, 10, 100, float("inf")], 5.0, (1.0, 1.0, 0.8)),  # m0 = m*: the kernel model stays there
])
def test_solved_kernel_loss_is_the_cores(optimizer, times, lr, gram):
    """solve's loss_lin: core.kernel_prediction scaled from the trajectory's own loss(0)."""
    init = {"init": "gram", "gram": gram} if gram else {}
    res = solve_point(Hyperparameters(lr_u=lr, lr_w=lr, teacher=0.8), optimizer=optimizer, times=times, **init)
    want = core.kernel_prediction(res["m"][0], 0.8, res["ntk"][0], 1.0, np.asarray(times, dtype=float),
                                  steps=optimizer == "gd", loss0=res["loss"][0]).loss_lin
    assert np.array_equal(_none_as_inf(res["loss_lin"]), np.where(np.isfinite(want), want, np.inf))
    assert res["loss_lin"][0] == res["loss"][0]
    if gram:
        assert res["loss_lin"] == [0.0] * len(times) and res["m_lin"] == [0.8] * len(times)


@pytest.mark.parametrize("args, option", [
    (["--width", "20000000"], "--width"),
    (["--times", "0,inf"], "--times"),
    (["--times", "0,2.5"], "--times"),
    (["--optimizer", "sgd", "--batch-size", "100", "--samples", "10"], "--batch-size"),
    (["--optimizer", "adam"], "--optimizer"),
    (["--times", "1", "--t-max", "10"], "--times"),
    (["--lr-u", "0"], "--lr-u"),
])
def test_bad_input_exits_2_naming_the_option(args, option):
    res = cli("simulate", *args, code=2)
    assert option in res.output and "Traceback" not in res.output


def test_measured_order_parameters_follow_the_rules():
    t = np.arange(4.0)
    base = dict(t=t, ntk=np.array([1.0, 1.5, 2.0, 2.0]), norm_u2=np.ones(4), norm_w2=np.ones(4), loss=np.ones(4),
                U=np.ones(4), W=np.ones(4), V=np.ones(4), imbalance=np.zeros(4))
    crossing = simulate.Trace(m=np.array([-0.5, -0.1, 0.4, 0.9]), alignment=np.array([-0.5, -0.1, 0.4, 0.9]),
                              gram_det=np.full(4, 0.3), **base)
    op = measured_order_parameters(crossing)
    assert float(op.ntk_change) == 1.0
    assert float(op.alignment_gain) == 0.9 and float(op.disalignment) == 0.5  # min |zeta| = 0 at the crossing
    parallel = crossing._replace(gram_det=np.zeros(4))
    assert float(measured_order_parameters(parallel).alignment_gain) == 0.0
    assert measured_label(crossing, teacher=1.0) == "alignment"
    assert measured_label(crossing, teacher=-1.0) == "saddle"  # ends on the wrong side of m = 0
