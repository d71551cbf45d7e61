"""Deep networks on real data (issue 15, part 2): phasediag.training.deep and the `deep` study kind.

Gradients against finite differences for every activation, depth 2-6 and both losses; the NTK against the
Jacobian of the network and the two-layer study's formula; the adjacent-layer alignment on cases with a known
answer; reproducibility from the seed; the study through the lifecycle; MNIST-1D generated without a download."""

from __future__ import annotations

import numpy as np
import pytest

import phasediag
from phasediag.config import rules
from phasediag.training import activations as acts
from phasediag.training import deep
from phasediag.training import nonlinear as nl

from helpers import assert_refused

pytestmark = pytest.mark.filterwarnings("error")


def problem(depth: int, activation: str, loss: str, seed: int = 0, widths=None):
    rng = np.random.default_rng(seed)
    n, p, k = 9, 5, 3
    X = rng.normal(size=(n, p))
    labels = rng.integers(0, k, n)
    Y = np.eye(k)[labels] - 1.0 / k
    sizes = [p, *(widths or [6] * (depth - 1)), k]
    layers = deep.init_layers([rng.normal(size=(sizes[i + 1], sizes[i])) for i in range(depth)], 1.2, [1.0] * depth)
    net = deep.Network(acts.activation(activation, 0.1), 0.7, loss, tuple(0.05 * (i + 1) for i in range(depth)))
    return layers, X, Y, labels, net


@pytest.mark.parametrize("loss", deep.LOSSES)
@pytest.mark.parametrize("depth", [2, 3, 4, 6])
@pytest.mark.parametrize("activation", rules.ACTIVATIONS)
def test_gradients_match_finite_differences(activation, depth, loss):
    layers, X, Y, labels, net = problem(depth, activation, loss)
    _, grads = deep.loss_and_gradients(layers, X, Y, labels, net)
    rng = np.random.default_rng(1)
    h = 1e-6
    for l in range(depth):
        for _ in range(4):
            i, j = rng.integers(layers[l].shape[0]), rng.integers(layers[l].shape[1])
            up, down = [W.copy() for W in layers], [W.copy() for W in layers]
            up[l][i, j] += h
            down[l][i, j] -= h
            fd = (deep.loss_and_gradients(up, X, Y, labels, net)[0] -
                  deep.loss_and_gradients(down, X, Y, labels, net)[0]) / (2 * h)
            assert fd == pytest.approx(grads[l][i, j], rel=2e-6, abs=1e-9), (l, i, j)


def jacobian(layers, X, net):
    """d f_a(x) / d W_l by central differences: a list of (P k, n_l n_{l-1}) arrays."""
    out = []
    h = 1e-6
    for l, W in enumerate(layers):
        cols = []
        for idx in np.ndindex(W.shape):
            up, down = [V.copy() for V in layers], [V.copy() for V in layers]
            up[l][idx] += h
            down[l][idx] -= h
            cols.append(((deep.forward(up, X, net)[0] - deep.forward(down, X, net)[0]) / (2 * h)).reshape(-1))
        out.append(np.stack(cols, axis=1))
    return out


@pytest.mark.parametrize("activation", ["tanh", "relu", "swish"])
def test_ntk_is_the_rate_weighted_jacobian_gram(activation):
    layers, X, _, _, net = problem(3, activation, "square", widths=[4, 4])
    probe = X[:4]
    K = deep.ntk_matrix(layers, probe, net)
    J = jacobian(layers, probe, net)
    want = sum(eta * j @ j.T for eta, j in zip(net.lrs, J))
    assert np.allclose(K, want, rtol=1e-6, atol=1e-9)


def test_two_layer_ntk_is_the_two_layer_studys():
    layers, X, _, _, net = problem(2, "tanh", "square", widths=[7])
    W, U = layers[0], layers[1].T
    want = nl.ntk_matrix(nl.Params(W=W, U=U), X[:5], activation="tanh", output_scale=net.output_scale,
                         lr_u=net.lrs[1], lr_w=net.lrs[0])
    assert np.allclose(deep.ntk_matrix(layers, X[:5], net), want, rtol=1e-13, atol=1e-15)


def test_adjacent_alignment_on_known_answers():
    rng = np.random.default_rng(3)
    lower = rng.normal(size=(20, 8))
    left, _, _ = np.linalg.svd(lower, full_matrices=False)
    top, rest = left[:, :3], left[:, 3:]
    assert deep.adjacent_alignment(lower, rng.normal(size=(5, 3)) @ top.T, classes=3) == pytest.approx(1.0)
    assert deep.adjacent_alignment(lower, rng.normal(size=(5, 5)) @ rest.T, classes=3) == pytest.approx(0.0, abs=1e-14)
    mixed = np.vstack([top[:, 0], rest[:, 0]])  # two rows of equal norm, one in the top space
    assert deep.adjacent_alignment(lower, mixed, classes=3) == pytest.approx(np.sqrt(0.5))
    # p = k = 1, two layers: |cos(u, w)|
    w, u = rng.normal(size=(10, 1)), rng.normal(size=(1, 10))
    cos = abs(float((u @ w)[0, 0])) / (np.linalg.norm(u) * np.linalg.norm(w))
    assert deep.adjacent_alignment(w, u, classes=1) == pytest.approx(cos, rel=1e-13)
    assert deep.adjacent_alignment(np.zeros((4, 3)), rng.normal(size=(2, 4)), classes=2) == 0.0


TINY = {
    "name": "tiny_deep", "experiment": "deep", "dataset": {"name": "digits"},
    "model": {"depth": 3, "width": 16, "activations": ["relu"], "losses": ["square", "cross_entropy"],
              "lr": 0.1, "init_var": 2},
    "sweep": {"init_scale": [0.5, 1, 2]}, "train": {"steps": 20, "record": 4, "probe_size": 4}, "seed": 1,
}


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("sklearn")
    return phasediag.run(TINY)


def test_the_study_records_every_pair_and_layer_and_labels_every_run(tiny):
    assert tiny["traj_alignment"].shape == (1, 2, 3, 1, 2, 4) and tiny["traj_norm"].shape == (1, 2, 3, 1, 3, 4)
    assert np.all((tiny["traj_alignment"] >= 0) & (tiny["traj_alignment"] <= 1))
    assert np.all(tiny["mechanism"] >= -1)
    assert tiny["traj_ntk_change"][..., 0].max() == 0.0
    found = tiny.meta["findings"]["groups"]
    assert [g["loss"] for g in found] == ["square", "cross_entropy"]


def test_the_same_seed_gives_the_same_bits_for_any_number_of_workers(tiny):
    again = phasediag.run(TINY, workers=2)
    for name in tiny.arrays:
        assert np.array_equal(tiny[name], again[name], equal_nan=True), name


def test_every_init_scale_starts_from_the_same_draws(tiny):
    norms = tiny["traj_norm"][0, 0, :, 0, :, 0]  # (scale, layer) at step 0
    scales = np.asarray(TINY["sweep"]["init_scale"])
    assert np.allclose(norms / scales[:, None], norms[:1] / scales[0], rtol=1e-14)


def test_mnist1d_is_generated_locally():
    pytest.importorskip("mnist1d")
    config = {**TINY, "dataset": {"name": "mnist1d", "samples": 400}, "sweep": {"init_scale": [1]},
              "model": {**TINY["model"], "losses": ["cross_entropy"]}}
    result = phasediag.run(config)
    assert result.meta["data"]["features"] == 40 and result.meta["data"]["train"] + result.meta["data"]["test"] == 400
    assert np.isfinite(result["traj_test_error"]).all()


def test_sgd_with_the_whole_set_as_batch_is_gd_and_minibatches_are_reproducible(tiny):
    full = phasediag.run({**TINY, "train": {**TINY["train"], "batch_size": 1348}})  # all 1348 training images
    for name in tiny.arrays:
        assert np.array_equal(tiny[name], full[name], equal_nan=True), name
    small = {**TINY, "train": {**TINY["train"], "batch_size": 32}}
    a, b = phasediag.run(small), phasediag.run(small)
    assert np.array_equal(a["traj_loss"], b["traj_loss"])
    assert not np.array_equal(a["traj_loss"], tiny["traj_loss"])


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["dataset"].update(name="cifar10"), "dataset.name"),
    (lambda c: c["dataset"].update(test_fraction=1), "dataset.test_fraction"),
    (lambda c: c["dataset"].update(standardize="yes"), "dataset.standardize"),
    (lambda c: c["model"].update(depth=7), "model.depth"),
    (lambda c: c["model"].update(width=[16, 16, 16]), "model.width"),
    (lambda c: c["model"].update(lr=[0.1, 0.1]), "model.lr"),
    (lambda c: c["model"].update(losses=["hinge"]), "model.losses"),
    (lambda c: c["model"].update(activations=["gelu"]), "model.activations"),
    (lambda c: c["sweep"].update(init_scale=[1, -1]), "sweep.init_scale"),
    (lambda c: (c["model"].update(width=4096), c["train"].update(steps=100_000)), "train.steps"),
    (lambda c: c.update(unknown=1), "unknown"),
    (lambda c: (c["dataset"].update(name="mnist1d", samples=100_000), c["model"].update(width=4096)), "model.width"),
    (lambda c: c["sweep"].update(init_scale=[]), "sweep.init_scale"),
    (lambda c: c["sweep"].update(init_scale=[1, 1]), "distinct"),
    (lambda c: c["sweep"].update(init_scale=[1e-300]), "sweep.init_scale"),
    (lambda c: c["model"].update(init_var=1e300), "model.init_var"),
    (lambda c: c["model"].update(output_scale=1e-300), "model.output_scale"),
    (lambda c: c["model"].update(width=8), "model.width"),
    (lambda c: c["train"].update(batch_size=100_000), "train.batch_size"),
    (lambda c: c["model"].update(losses=["hinge"]), "unknown loss 'hinge'"),
])
def test_bad_deep_configs_get_one_line_naming_the_key_and_exit_2(tmp_path, edit, needle):
    assert_refused(tmp_path, TINY, edit, needle)


def test_a_diverged_run_is_reported_without_warnings_and_drawn():
    pytest.importorskip("sklearn")
    result = phasediag.run({**TINY, "model": {**TINY["model"], "lr": 1e6},
                            "train": {**TINY["train"], "initial_ntk_cap": None}})  # no cap: GD diverges
    assert np.any(result["mechanism"] == -1) and result.meta["findings"]["diverged_runs"] > 0
    from phasediag.studies import deep_networks

    for _, draw in deep_networks.figures(result):
        draw()
