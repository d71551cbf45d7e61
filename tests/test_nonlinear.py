"""Job kind `nonlinear` (`phasediag experiment` / `phasediag run` with `experiment: nonlinear`): a tanh / ReLU
two-layer network on digits (issue 5).

The expectations come from outside the code under test: central finite differences of the loss and of the
network function (gradients, NTK), the theory's exact solution of linear GD (`phasediag.core`) for a linear
p = k = 1 network, an NTK worked out by hand, and the definition |cos(u, w)| of the alignment.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from phasediag import core
from phasediag.training import nonlinear as nl
from phasediag.studies import nonlinear_digits as ne
from phasediag.cli import phasediag
from phasediag.config.sweep import ConfigError, parse_yaml
from phasediag.jobs import lifecycle
from helpers import line_of

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny_nonlinear
description: a small nonlinear study
experiment: nonlinear
dataset: {name: digits, test_fraction: 0.25}
model:
  activations: [tanh, relu]
  widths: [24]
  init: [symmetric, standard]
  output_scale: 1/sqrt(d)
  lr_u: 0.2*sqrt(d)
  lr_w: 0.2*sqrt(d)
sweep:
  init_scale: [0.01, 0.3, 30]
train:
  steps: 120
  record: 8
  probe_size: 8
seed: 3
"""


def study_of(text: str) -> ne.Study:
    return ne.read(parse_yaml(text, "test.yaml"), "test.yaml", lifecycle.Options())


def small_case(activation: str, seed: int = 0, n: int = 7, p: int = 5, d: int = 6, k: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    Y = rng.standard_normal((n, k))
    params = nl.Params(W=rng.standard_normal((d, p)) / np.sqrt(p), U=rng.standard_normal((d, k)))
    if activation == "relu":  # central differences must not step across a kink
        assert np.min(np.abs(X @ params.W.T)) > 1e-3
    return X, Y, params


def finite_difference_gradient(params: nl.Params, fn, h: float = 1e-6) -> nl.Params:
    grads = []
    for which in range(2):
        base = params[which]
        grad = np.zeros_like(base)
        for idx in np.ndindex(*base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += h
            minus[idx] -= h
            args_p = [params.W, params.U]
            args_m = [params.W, params.U]
            args_p[which], args_m[which] = plus, minus
            grad[idx] = (fn(nl.Params(*args_p)) - fn(nl.Params(*args_m))) / (2 * h)
        grads.append(grad)
    return nl.Params(*grads)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- gradients and the NTK


@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
def test_gradients_match_central_finite_differences(activation):
    X, Y, params = small_case(activation)
    kw = dict(activation=activation, output_scale=0.7)
    value, grad = nl.gradients(params, X, Y, **kw)
    assert value == pytest.approx(nl.loss(params, X, Y, **kw), rel=1e-13)
    fd = finite_difference_gradient(params, lambda q: nl.loss(q, X, Y, **kw))
    for analytic, numeric in zip(grad, fd):
        assert relative(analytic, numeric) < 1e-7
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_the_finite_difference_tolerance_catches_a_missing_derivative_factor():
    """The check above is sharp: dropping phi'(Z) from dL/dW (a plausible bug) fails it by orders of magnitude."""
    X, Y, params = small_case("tanh")
    kw = dict(activation="tanh", output_scale=0.7)
    fd = finite_difference_gradient(params, lambda q: nl.loss(q, X, Y, **kw))
    E = kw["output_scale"] * np.tanh(X @ params.W.T) @ params.U - Y
    wrong = kw["output_scale"] / X.shape[0] * (E @ params.U.T).T @ X
    assert relative(wrong, fd.W) > 1e-2


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_ntk_is_the_rate_weighted_jacobian_product(activation):
    """K = eta_u J_U J_U^T + eta_w J_W J_W^T with J from central differences of f on the probe."""
    X, _, params = small_case(activation, seed=1, n=4)
    kappa, lr_u, lr_w = 0.9, 0.3, 1.7
    k = params.U.shape[1]
    jac = []
    for out in range(X.shape[0] * k):
        x, a = divmod(out, k)
        jac.append(finite_difference_gradient(
            params, lambda q: nl.forward(q, X[x:x + 1], activation=activation, output_scale=kappa)[0, a]))
    J_W = np.stack([g.W.ravel() for g in jac])
    J_U = np.stack([g.U.ravel() for g in jac])
    expected = lr_u * J_U @ J_U.T + lr_w * J_W @ J_W.T
    K = nl.ntk_matrix(params, X, activation=activation, output_scale=kappa, lr_u=lr_u, lr_w=lr_w)
    np.testing.assert_allclose(K, expected, rtol=1e-6, atol=1e-8)


def test_relu_ntk_computed_by_hand():
    """d = 2 units w1 = (1, 0), w2 = (1, 1); U rows (1, -1), (2, 0.5); x1 = (1, 2), x2 = (-1, 2); kappa = 2,
    eta_u = 1, eta_w = 0.5. Pre-activations: x1 -> (1, 3) (both on), x2 -> (-1, 1) (unit 2 only), so
    phi(Wx1).phi(Wx1) = 10, phi(Wx1).phi(Wx2) = 3, phi(Wx2).phi(Wx2) = 1 and x1.x1 = 5, x1.x2 = 3, x2.x2 = 5;
    sum_i U_ia U_ib phi'phi' = [[5, 0], [0, 1.25]] (x1, x1) and U_2a U_2b = [[4, 1], [1, 0.25]] otherwise.
    K = 4 [1 * phi.phi delta_ab + 0.5 (x.x') S_ab]."""
    params = nl.Params(W=np.array([[1.0, 0.0], [1.0, 1.0]]), U=np.array([[1.0, -1.0], [2.0, 0.5]]))
    X = np.array([[1.0, 2.0], [-1.0, 2.0]])
    expected = np.array([
        [90.0, 0.0, 36.0, 6.0],
        [0.0, 52.5, 6.0, 13.5],
        [36.0, 6.0, 44.0, 10.0],
        [6.0, 13.5, 10.0, 6.5],
    ])
    K = nl.ntk_matrix(params, X, activation="relu", output_scale=2.0, lr_u=1.0, lr_w=0.5)
    np.testing.assert_allclose(K, expected, rtol=1e-14)
    # a unit exactly at its kink counts as off (relu'(0) := 0): x3 = (0, 0) -> only the zero vector
    K3 = nl.ntk_matrix(params, np.array([[0.0, 0.0]]), activation="relu", output_scale=2.0, lr_u=1.0, lr_w=0.5)
    assert np.all(K3 == 0)
    assert nl.ntk_change(2.0 * expected, expected) == pytest.approx(1.0, rel=1e-15)
    assert nl.ntk_trace_change(3.0 * expected, expected) == pytest.approx(2.0, rel=1e-15)
    # lambda_max / P from the characteristic polynomial is not needed: K is PSD with trace 193
    assert 193.0 / 4 <= nl.ntk_scale(expected, 2) * 2 <= 193.0


# ---------------------------------------------------------------- the linear network is the theory's model


def test_linear_network_reproduces_exact_gd_of_the_linear_model():
    """phi = id, p = k = 1: f(x) = kappa (u . w) x, K = Theta x x'^T. Every recorded number must match
    phasediag.core's exact GD map (docs/theory.md section 9) on a = mean x^2, m* = mean(x y) / a."""
    rng = np.random.default_rng(11)
    n, d, kappa, lr_u, lr_w = 64, 24, 0.8, 0.3, 0.7
    x = rng.standard_normal((n, 1))
    y = 1.3 * x + 0.4 * rng.standard_normal((n, 1))
    a = float(np.mean(x * x))
    teacher = float(np.mean(x * y)) / a
    floor = 0.5 * (float(np.mean(y * y)) - a * teacher**2)
    params = nl.Params(W=0.1 * rng.standard_normal((d, 1)), U=0.15 * rng.standard_normal((d, 1)))
    u, w = params.U[:, 0], params.W[:, 0]
    steps = np.array([0, 1, 2, 5, 10, 30, 100, 300])
    trace = nl.train(params, x, y, activation="linear", output_scale=kappa, lr_u=lr_u, lr_w=lr_w, steps=steps,
                     X_probe=x[:5])
    problem = core.Problem(kappa, lr_u, lr_w, a, teacher, core.explicit_gram(u @ u, w @ w, u @ w))
    exact = core.gd_state(core.invariants(problem), steps)
    theta_change = exact.ntk / exact.ntk[0] - 1
    assert theta_change[-1] > 1.0  # the NTK really grew (feature learning): a strong test, not the kernel regime
    np.testing.assert_allclose(trace.ntk_trace_change, theta_change, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(trace.ntk_change, np.abs(theta_change), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(trace.ntk_scale, exact.ntk * float(np.mean(x[:5] ** 2)), rtol=1e-10)
    np.testing.assert_allclose(trace.alignment, np.abs(exact.alignment), rtol=1e-9)
    np.testing.assert_allclose(trace.loss - floor, exact.loss, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(trace.norm_u**2, exact.norm_u2, rtol=1e-10)
    np.testing.assert_allclose(trace.norm_w**2, exact.norm_w2, rtol=1e-10)
    final = trace.final
    assert kappa * float(final.U[:, 0] @ final.W[:, 0]) == pytest.approx(float(exact.m[-1]), rel=1e-10)


# ---------------------------------------------------------------- alignment


def test_matrix_alignment_reduces_to_abs_cosine_for_vectors():
    rng = np.random.default_rng(5)
    for d in (1, 2, 7, 300):
        u, w = rng.standard_normal(d), rng.standard_normal(d)
        expected = abs(u @ w) / (np.linalg.norm(u) * np.linalg.norm(w))
        assert nl.alignment(u[:, None], w[:, None]) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    u = rng.standard_normal(5)
    assert nl.alignment(u[:, None], -3.0 * u[:, None]) == pytest.approx(1.0, rel=1e-14)
    assert np.isnan(nl.alignment(np.zeros((5, 1)), u[:, None]))


def test_matrix_alignment_measures_the_share_in_the_top_k_directions():
    """W = A diag(sv) B^T with orthonormal A (d x p): the top-k directions are A[:, :k]; for
    U = A[:, :k] C + A[:, k:] E the alignment is ||C||_F / sqrt(||C||^2 + ||E||^2)."""
    rng = np.random.default_rng(6)
    d, p, k = 40, 12, 3
    A, _ = np.linalg.qr(rng.standard_normal((d, p)))
    B, _ = np.linalg.qr(rng.standard_normal((p, p)))
    W = A @ np.diag(np.linspace(5.0, 1.0, p)) @ B.T
    C, E = rng.standard_normal((k, k)), rng.standard_normal((p - k, k))
    U = A[:, :k] @ C + A[:, k:] @ E
    expected = np.linalg.norm(C) / np.hypot(np.linalg.norm(C), np.linalg.norm(E))
    assert nl.alignment(U, W) == pytest.approx(expected, rel=1e-12)
    # invariant under rotations of the input space and the output space, and under scaling
    Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    assert nl.alignment(2.0 * U @ Q, 0.1 * W @ B) == pytest.approx(expected, rel=1e-12)
    # a random output layer: E alignment^2 = k/d
    values = [nl.alignment(rng.standard_normal((400, 10)), rng.standard_normal((400, 64))) for _ in range(20)]
    assert np.mean(np.square(values)) == pytest.approx(10 / 400, rel=0.15)


def test_symmetric_initialization_starts_from_the_zero_function_and_zero_alignment():
    rng = np.random.default_rng(2)
    params = nl.init_params(rng.standard_normal((8, 5)), rng.standard_normal((8, 3)), init_var_w=2.0,
                            init_var_u=0.5, init_scale=3.0, symmetric=True)
    X = rng.standard_normal((20, 5))
    for activation in ("tanh", "relu"):
        f0 = nl.forward(params, X, activation=activation, output_scale=1.0)
        assert np.max(np.abs(f0)) < 1e-13
    assert nl.alignment(params.U, params.W) < 1e-12
    plain = nl.init_params(rng.standard_normal((20000, 4)), rng.standard_normal((20000, 1)), init_var_w=2.0,
                           init_var_u=0.5, init_scale=3.0)
    assert np.var(plain.W) == pytest.approx(9.0 * 2.0 / 4, rel=0.03)  # s^2 sigma_w^2 / p
    assert np.var(plain.U) == pytest.approx(9.0 * 0.5, rel=0.05)  # s^2 sigma_u^2
    with pytest.raises(ValueError, match="even width"):
        nl.init_params(np.ones((3, 2)), np.ones((3, 1)), init_var_w=1, init_var_u=1, symmetric=True)


# ---------------------------------------------------------------- training: stability, minibatches


def test_rate_cap_keeps_large_init_stable_and_divergence_is_reported_without_warnings():
    X, Y, _ = small_case("relu", seed=3, n=30, p=6, d=2, k=2)
    rng = np.random.default_rng(4)
    params = nl.init_params(rng.standard_normal((16, 6)), rng.standard_normal((16, 2)), init_var_w=1.0,
                            init_var_u=1.0, init_scale=30.0)
    kw = dict(activation="relu", output_scale=0.25, steps=np.array([0, 5, 50]), X_probe=X[:6])
    K0 = nl.ntk_matrix(params, X[:6], activation="relu", output_scale=0.25, lr_u=1.0, lr_w=1.0)
    scale0 = nl.ntk_scale(K0, 6)
    assert scale0 > 100
    blown = nl.train(params, X, Y, lr_u=1.0, lr_w=1.0, **kw)  # pytest turns any numpy warning into an error
    assert blown.diverged and blown.final is None and 0 < blown.diverged_step <= 50
    assert np.isnan(blown.loss[-1]) and np.isfinite(blown.loss[0])
    factor = nl.rate_factor(scale0, 1.0)
    assert factor == pytest.approx(1.0 / scale0)
    assert nl.rate_factor(0.5, 1.0) == 1.0 and nl.rate_factor(5.0, None) == 1.0
    tamed = nl.train(params, X, Y, lr_u=factor, lr_w=factor, **kw)
    assert not tamed.diverged and tamed.loss[-1] < tamed.loss[0]


def test_minibatches_cover_every_example_once_per_epoch_and_full_batch_is_the_default():
    X, Y, params = small_case("tanh", seed=8, n=10)
    seen = []
    batches = nl.batch_indices(10, 4, np.random.default_rng(0))
    for _ in range(6):  # two epochs of batches 4, 4, 2
        seen.append(next(batches))
    assert [len(b) for b in seen] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(seen[:3])) == list(range(10)) == sorted(np.concatenate(seen[3:]))
    kw = dict(activation="tanh", output_scale=1.0, lr_u=0.5, lr_w=0.5, steps=np.array([0, 3, 9]), X_probe=X[:2])
    full = nl.train(params, X, Y, **kw)
    same = nl.train(params, X, Y, batch_size=10, rng=np.random.default_rng(1), **kw)
    assert np.array_equal(full.loss, same.loss) and np.array_equal(full.final.W, same.final.W)
    mini = nl.train(params, X, Y, batch_size=3, rng=np.random.default_rng(1), **kw)
    assert not np.array_equal(full.final.W, mini.final.W)


def test_split_standardizes_with_training_statistics_only():
    rng = np.random.default_rng(9)
    X = rng.uniform(0, 16, size=(50, 4))
    X[:, 2] = 7.0  # a constant feature is only centred
    labels = rng.integers(0, 3, size=50)
    data = nl.split_dataset(X, labels, test_fraction=0.2, rng=np.random.default_rng(1), center_targets=True,
                            classes=3)
    assert data.X_train.shape == (40, 4) and data.X_test.shape == (10, 4)
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(data.X_train.std(axis=0)[[0, 1, 3]], 1, rtol=1e-12)
    assert np.all(data.X_train[:, 2] == 0) and np.all(data.X_test[:, 2] == 0)
    assert abs(data.X_test[:, 0].mean()) > 1e-6  # test statistics are not used
    np.testing.assert_allclose(data.Y_train.sum(axis=1), 0, atol=1e-15)  # centred one-hot
    assert np.array_equal(np.argmax(data.Y_test, axis=1), data.labels_test)


# ---------------------------------------------------------------- the study


@pytest.fixture(scope="module")
def tiny_arrays():
    study = study_of(TINY)
    return study, ne.simulate_study(study, ne.prepare_data(study), workers=1)


def test_small_init_learns_features_and_large_symmetric_init_is_lazy(tiny_arrays):
    study, arrays = tiny_arrays
    symmetric = study.inits.index("symmetric")
    for ia in range(len(study.activations)):
        small, large = (ia, 0, symmetric, 0), (ia, 0, symmetric, len(study.init_scales) - 1)
        assert arrays["ntk_change"][small][0] > 10 > 0.1 > arrays["ntk_change"][large][0]
        assert arrays["alignment"][small][0] > 0.3 > 0.1 > arrays["alignment"][large][0]
        assert ne.core.PHASES[arrays["mechanism"][small][0]] == "alignment"
        assert ne.core.PHASES[arrays["mechanism"][large][0]] == "kernel"
        assert arrays["lr_factor"][small][0] == 1.0 > arrays["lr_factor"][large][0]
    assert not arrays["diverged"].any()
    assert arrays["traj_ntk_change"].shape == study.shape + (study.record_steps().size,)
    np.testing.assert_array_equal(arrays["traj_ntk_change"][..., 0], 0.0)


def test_workers_give_bit_identical_results(tiny_arrays):
    study, serial = tiny_arrays
    parallel = ne.simulate_study(study, ne.prepare_data(study), workers=2)
    assert serial.keys() == parallel.keys()
    for key in serial:
        assert np.array_equal(serial[key], parallel[key], equal_nan=serial[key].dtype.kind == "f"), key


def test_cli_end_to_end(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("[0.01, 0.3, 30]", "[0.01, 30]").replace("steps: 120", "steps: 60"))
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(phasediag, ["experiment", str(config), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["name"] == "tiny_nonlinear" and info["points"] == 2 * 1 * 2 * 2
    names = sorted(Path(f).name for f in info["files"])
    assert names == sorted(["results.npz", "meta.json", "tiny_nonlinear__vs_init_scale.png",
                            "tiny_nonlinear__vs_step.png"])
    assert all(Path(f).is_file() for f in info["files"])
    meta = json.loads((out / "meta.json").read_text())
    assert {"version", "seed", "config", "timing", "findings", "definitions", "source"} <= meta.keys()
    assert meta["seed"] == 3 and meta["config"]["model"]["output_scale"] == "1/sqrt(d)"
    assert meta["config"]["model_values_by_width"]["output_scale"]["24"] == pytest.approx(24**-0.5)
    assert len(meta["findings"]["groups"]) == 4
    with np.load(out / "results.npz") as z:
        assert z["traj_alignment"].shape == (2, 1, 2, 2, 1, len(meta["config"]["record_steps"]))
        assert list(z["activation"]) == ["tanh", "relu"]
    text = runner.invoke(phasediag, ["experiment", str(config), "--out", str(out), "--no-plot"])
    assert text.exit_code == 0 and "tiny_nonlinear: 8 runs" in text.output and "relu" in text.output
    # `phasediag run` runs the same kind (one lifecycle): same data, same summary
    again = runner.invoke(phasediag, ["run", str(config), "--out", str(tmp_path / "run"), "--no-plot", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["findings"] == info["findings"]
    assert (tmp_path / "run" / "results.npz").read_bytes() == (out / "results.npz").read_bytes()


# ---------------------------------------------------------------- a run directory read back from disk

SMALL = (TINY.replace("[tanh, relu]", "[tanh]").replace("[0.01, 0.3, 30]", "[0.01, 30]")
         .replace("steps: 120", "steps: 40"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run directory of this kind (with its figures) and the study it came from."""
    base = tmp_path_factory.mktemp("nonlinear_run")
    config = base / "small.yaml"
    config.write_text(SMALL)
    out = base / "out"
    result = CliRunner().invoke(phasediag, ["run", str(config), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out, study_of(SMALL)


def test_resolved_is_plain_data_and_the_study_is_rebuilt_from_meta(run_dir):
    out, study = run_dir
    assert isinstance(study.resolved, dict)
    assert json.loads(json.dumps(study.resolved)) == study.resolved
    loaded = lifecycle.load(out)
    assert loaded.meta["config"] == study.resolved
    assert ne.study_of(loaded) == study


def test_load_gives_every_arrays_dims(run_dir):
    out, study = run_dir
    result = lifecycle.load(out)
    assert result.kind == "nonlinear" and result.name == "tiny_nonlinear"
    assert list(result.coords) == list(ne.COORDS) == ["activation", "width", "init", "init_scale", "seed", "step",
                                                      "probe_index"]
    axes = ("activation", "width", "init", "init_scale", "seed")
    assert set(result.meta["dims"]) == set(result.arrays)
    for name, values in result.arrays.items():
        dims = result.dims(name)
        assert dims == (axes + ("step",) if name.startswith("traj_") else axes), name
        assert values.shape == tuple(result.coords[d].size for d in dims), name
    assert result.dims("probe_index") == ("probe_index",) and result.coords["probe_index"].size == 8
    assert result.meta["legends"]["mechanism"] == {**{str(c): n for c, n in enumerate(ne.core.PHASES)}, "-1": "diverged"}
    assert {"train_s", "total_s"} <= result.meta["timing"].keys()
    with np.load(out / "results.npz") as z:  # the stored order: coordinates first, as listed in meta
        assert z.files[:len(ne.COORDS)] == list(ne.COORDS)


def test_plot_redraws_the_figures_from_the_run_directory(run_dir):
    out, _ = run_dir
    stems = ["tiny_nonlinear__vs_init_scale.png", "tiny_nonlinear__vs_step.png"]
    drawn = {name: (out / name).read_bytes() for name in stems}  # drawn by the run, from memory
    for name in stems:
        (out / name).unlink()
    result = CliRunner().invoke(phasediag, ["plot", str(out)])
    assert result.exit_code == 0, result.output
    for name in stems:  # from disk: the same figures, byte for byte
        assert (out / name).read_bytes() == drawn[name], name
    assert sorted(json.loads((out / "meta.json").read_text())["figures"]) == stems
    loaded = lifecycle.load(out)
    assert [stem for stem, _ in ne.figures(loaded)] == [name[:-4] for name in stems]
    fig = loaded.plot("vs_step")  # a Figure, nothing saved
    assert len(fig.axes) == 3 * 2  # (3 panels x 2 inits) x 1 activation


def test_export_csv_of_the_run_directory(run_dir, tmp_path):
    out, study = run_dir
    result = CliRunner().invoke(phasediag, ["export", str(out), "--csv", "--out", str(tmp_path / "t.csv")])
    assert result.exit_code == 0, result.output
    import csv

    with open(tmp_path / "t.csv") as fh:
        trajectories = list(csv.DictReader(fh))
    with open(tmp_path / "t_finals.csv") as fh:
        finals = list(csv.DictReader(fh))
    steps = study.record_steps().size
    assert len(trajectories) == study.runs * steps and len(finals) == study.runs
    assert list(trajectories[0])[:6] == ["activation", "width", "init", "init_scale", "seed", "step"]
    assert "traj_alignment" in trajectories[0] and "mechanism" in finals[0]
    assert {row["mechanism"] for row in finals} <= set(ne.core.PHASES)  # codes decoded to their names
    loaded = lifecycle.load(out)
    first = finals[0]
    assert (first["activation"], first["init"], float(first["init_scale"])) == ("tanh", "symmetric", 0.01)
    assert float(first["test_error"]) == loaded["test_error"][0, 0, 0, 0, 0]


def test_merge_refuses_in_one_line(run_dir, tmp_path):
    out, _ = run_dir
    result = CliRunner().invoke(phasediag, ["merge", str(out), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "not sharded" in result.output and len(result.output.strip().splitlines()) == 1


BAD = [
    ("  activations: [tanh, relu]", "  activations: [tanh, sigmoid]", "model.activations[1]", "activations:",
     "unknown activation 'sigmoid'"),
    ("  widths: [24]", "  widths: [8]", "model.widths[0]", "widths:", "must be > 10"),
    ("  widths: [24]", "  widths: [18]", "model.widths[0]", "widths:", "must be > 20 with init: symmetric"),
    ("  widths: [24]", "  widths: [23]", "model.widths[0]", "widths:", "must be even"),
    ("  init_scale: [0.01, 0.3, 30]", "  init_scale: {log: [0, 1, 3]}", "sweep.init_scale.log[0]", "init_scale:",
     "must be > 0"),
    ("  steps: 120", "  steps: 0", "train.steps", "steps:", "must be an integer in [1"),
    ("  lr_u: 0.2*sqrt(d)", "  lr_u: 0.2*sqrt(width)", "model.lr_u", "lr_u:", "the only variable is d"),
    ("  lr_w: 0.2*sqrt(d)", "  lr_w: -1", "model.lr_w", "lr_w:", "must be > 0"),
    ("train:", "trian:", "trian", "trian:", "did you mean 'train'"),
    ("dataset: {name: digits, test_fraction: 0.25}", "dataset: {name: digits, test_fraction: 1.5}",
     "dataset.test_fraction", "dataset:", "must be in (0, 1)"),
    ("  probe_size: 8", "  probe_size: 8\n  batch_size: 0", "train.batch_size", "batch_size:", "must be an integer"),
    ("  init: [symmetric, standard]", "  init: [symetric]", "model.init[0]", "init:", "did you mean 'symmetric'"),
]


@pytest.mark.parametrize("old,new,where,needle,message", BAD, ids=[b[2] for b in BAD])
def test_bad_config_exits_2_naming_key_and_line_before_training(tmp_path, old, new, where, needle, message):
    text = TINY.replace(old, new)
    assert text != TINY
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(phasediag, ["experiment", str(config), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"{where} (line {line_of(text, needle)})" in result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # refused before anything was trained or written


def test_missing_scikit_learn_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` raise ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'phasediag\[experiments\]'"):
        nl.load_digits_data()
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    result = CliRunner().invoke(phasediag, ["experiment", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "pip install 'phasediag[experiments]'" in result.output and "Traceback" not in result.output


def test_bundled_config_is_valid_within_budget_and_documented():
    path = ROOT / "configs" / "12_nonlinear_digits.yaml"
    study = ne.read(parse_yaml(path.read_text(), str(path)), str(path), lifecycle.Options())
    assert set(study.activations) == {"tanh", "relu"} and len(study.widths) >= 2
    assert set(study.inits) == {"symmetric", "standard"}
    work = study.runs // len(study.widths) * study.steps * 1348 * sum(study.widths)
    assert work < 2e10  # ~1 minute on 2 cores
    for stem in ("vs_init_scale", "vs_step"):
        assert (ROOT / "docs" / "figures" / f"{study.name}__{stem}.png").is_file()
    assert f"{study.name}__vs_init_scale.png" in (ROOT / "README.md").read_text()


def test_kernel_crossover_is_interpolated_on_log_axes():
    s = np.array([1.0, 100.0, 1e4])
    assert ne.crossover(s, np.array([1.0, 0.01, 0.001]), 0.1) == pytest.approx(10.0, rel=1e-12)
    assert ne.crossover(s, np.array([5.0, 3.0, 0.2]), 0.1) is None  # never below the threshold
    assert ne.crossover(s, np.array([0.05, 1.0, 0.01]), 0.1) == pytest.approx(1000.0, rel=1e-12)  # last crossing
    assert ne.crossover(s, np.array([0.05, 0.02, 0.01]), 0.1) is None  # kernel everywhere: no crossover


def test_diverged_runs_are_recorded_labelled_and_drawn(tmp_path):
    """Without the rate cap a large init blows up: the run is flagged, its label is 'diverged', the JSON has no
    NaN (null instead) and the figures still draw."""
    text = (TINY.replace("[tanh, relu]", "[relu]").replace("[symmetric, standard]", "[standard]")
            .replace("[0.01, 0.3, 30]", "[0.01, 30]").replace("steps: 120", "steps: 20")
            .replace("  probe_size: 8", "  probe_size: 8\n  initial_ntk_cap: null"))
    config = tmp_path / "diverge.yaml"
    config.write_text(text)
    result = CliRunner().invoke(phasediag, ["experiment", str(config), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["findings"]["diverged_runs"] == 1
    group = info["findings"]["groups"][0]
    assert group["mechanism"] == ["alignment", "diverged"] and group["test_error"][1] is None
    with np.load(tmp_path / "out" / "results.npz") as z:
        assert z["diverged"][0, 0, 0, 1, 0] and z["mechanism"][0, 0, 0, 1, 0] == -1
        assert z["lr_factor"][0, 0, 0, 1, 0] == 1.0 and np.isnan(z["traj_loss"][0, 0, 0, 1, 0, -1])
    assert (tmp_path / "out" / "tiny_nonlinear__vs_init_scale.png").is_file()
    exported = CliRunner().invoke(phasediag, ["export", str(tmp_path / "out"), "--csv", "--json"])
    finals = [p for p in json.loads(exported.output) if p.endswith("_finals.csv")]
    with open(finals[0], newline="") as fh:
        mechanisms = [row["mechanism"] for row in csv.DictReader(fh)]
    assert mechanisms == ["alignment", "diverged"]  # the negative code has its own name, not "invalid"


def test_config_error_for_zero_variance_and_missing_sections():
    with pytest.raises(ConfigError, match=r"model.init_var_w \(line \d+\): is 0"):
        study_of(TINY.replace("  lr_w: 0.2*sqrt(d)", "  lr_w: 0.2*sqrt(d)\n  init_var_w: 0"))
    with pytest.raises(ConfigError, match="sweep: is required"):
        study_of(TINY.replace("sweep:\n  init_scale: [0.01, 0.3, 30]\n", ""))
