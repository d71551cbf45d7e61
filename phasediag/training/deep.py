"""A fully connected network of L layers on real data, trained by GD or SGD: the numerical core of the `deep` study.

Pure numpy (no YAML, files or plots). Notation of docs/theory.md, generalized from the two layers u, w to L weight
matrices:

- data X in R^{n x p} (rows are inputs), targets Y in R^{n x k} (one-hot, centred for the square loss), labels;
- layers W_l in R^{n_l x n_{l-1}}, l = 1..L, n_0 = p, n_L = k;  h_0 = x,  z_l = W_l h_{l-1},  h_l = phi(z_l) (l < L),
  f(x) = kappa z_L  (kappa = ``output_scale``; phi any activation of :mod:`phasediag.training.activations`).
  For L = 2 this is f_a(x) = kappa sum_i U_ia phi(w_i . x) with W = W_1 and U = W_2^T;
- losses: square  L = (1/2n) sum_x |f(x) - y(x)|^2,  cross-entropy  L = -(1/n) sum_x log softmax(f(x))_{label};
- layer-wise GD / SGD  W_l <- W_l - eta_l dL/dW_l  (eta_l: ``lrs``);
- initialization  (W_l)_ij ~ N(0, s^2 sigma_l^2 / n_{l-1})  (s: the init scale, sigma_l^2: ``init_vars``).

Gradients by backpropagation (explicit): with G_L = kappa dL/dF (n x k) and G_l = (G_{l+1} W_{l+1}) * phi'(Z_l),
dL/dW_l = G_l^T H_{l-1}; dL/dF = (F - Y)/n (square), (softmax(F) - onehot)/n (cross-entropy).

Empirical NTK on a probe batch (P inputs), learning-rate weighted like the theory's Theta, a (P k) x (P k) matrix:

    K_(x,a),(x',b) = sum_l eta_l (delta_l^a(x) . delta_l^b(x')) (h_{l-1}(x) . h_{l-1}(x')),

delta_L^a = kappa e_a, delta_l^a = (W_{l+1}^T delta_{l+1}^a) * phi'(z_l): df_a/dW_l = delta_l^a h_{l-1}^T. For L = 2
it is :func:`phasediag.training.nonlinear.ntk_matrix`'s formula. ntk_change = ||K_t - K_0||_F / ||K_0||_F.

Alignment of adjacent layers l, l+1 (they share the hidden space R^{n_l}):

    alignment_l = ||W_{l+1} P_l||_F / ||W_{l+1}||_F  in [0, 1],

P_l the projection onto the span of the top r_l = min(k, n_{l-1}, n_{l+1}) left singular vectors of W_l: the share of
the next layer's weight that reads the directions this layer writes most. For L = 2 (W_2 = U^T) it is the two-layer
study's ||P_W U||_F / ||U||_F, and for p = k = 1 exactly |cos(u, w)| = |zeta|. Random layers give ~ sqrt(r_l / n_l).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.training import activations as acts
from phasediag.training.simulate import epoch_batches

__all__ = ["LOSSES", "Network", "Record", "init_layers", "forward", "loss_and_gradients", "ntk_matrix",
           "ntk_change", "adjacent_alignment", "train", "RECORD_FIELDS", "DIVERGENCE_FACTOR"]

LOSSES = ("square", "cross_entropy")
DIVERGENCE_FACTOR = 1e8  # a run whose training loss exceeds this times max(initial loss, 1) has diverged


class Network(NamedTuple):
    """What defines the function and its training: the activation, output scale kappa, the loss, layer rates."""

    activation: acts.Activation
    output_scale: float
    loss: str
    lrs: tuple[float, ...]


def init_layers(normals: list[np.ndarray], init_scale: float, init_vars) -> list[np.ndarray]:
    """W_l = s sigma_l / sqrt(n_{l-1}) N_l from standard-normal draws N_l of shape (n_l, n_{l-1})."""
    return [init_scale * np.sqrt(float(v) / z.shape[1]) * z for z, v in zip(normals, init_vars)]


def forward(layers: list[np.ndarray], X: np.ndarray, net: Network) -> tuple[np.ndarray, list, list]:
    """(F (n, k), pre-activations Z_l, inputs of each layer H_{l-1}) for the rows of X."""
    inputs, pre = [X], []
    h = X
    for l, W in enumerate(layers):
        z = h @ W.T
        pre.append(z)
        if l < len(layers) - 1:
            h = net.activation(z)
            inputs.append(h)
    return net.output_scale * pre[-1], pre, inputs


def _loss(F: np.ndarray, Y: np.ndarray, labels: np.ndarray, kind: str) -> tuple[float, np.ndarray]:
    """(L, dL/dF) for the outputs F (n, k)."""
    n = F.shape[0]
    if kind == "square":
        E = F - Y
        return 0.5 * float(np.sum(E * E)) / n, E / n
    shifted = F - F.max(axis=1, keepdims=True)
    log_z = np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    log_p = shifted - log_z
    p = np.exp(log_p)
    p[np.arange(n), labels] -= 1.0
    return -float(np.mean(log_p[np.arange(n), labels])), p / n


def loss_and_gradients(layers: list[np.ndarray], X: np.ndarray, Y: np.ndarray, labels: np.ndarray,
                       net: Network) -> tuple[float, list[np.ndarray]]:
    """(L, [dL/dW_l]) by backpropagation (module docstring)."""
    F, pre, inputs = forward(layers, X, net)
    value, dF = _loss(F, Y, labels, net.loss)
    G = net.output_scale * dF
    grads = [None] * len(layers)
    for l in range(len(layers) - 1, -1, -1):
        grads[l] = G.T @ inputs[l]
        if l > 0:
            G = (G @ layers[l]) * net.activation.derivative(pre[l - 1])
    return value, grads


def ntk_matrix(layers: list[np.ndarray], X_probe: np.ndarray, net: Network) -> np.ndarray:
    """K of the module docstring on the probe rows X_probe (P, p): shape (P k, P k), index x k + a."""
    _, pre, inputs = forward(layers, X_probe, net)
    P, k = X_probe.shape[0], layers[-1].shape[0]
    delta = np.broadcast_to(net.output_scale * np.eye(k), (P, k, k))  # (P, a, n_L)
    K = np.zeros((P * k, P * k))
    for l in range(len(layers) - 1, -1, -1):
        D = delta.reshape(P * k, -1)
        H = inputs[l] @ inputs[l].T  # (P, P)
        K += net.lrs[l] * (D @ D.T) * np.repeat(np.repeat(H, k, axis=0), k, axis=1)
        if l > 0:
            delta = (delta @ layers[l]) * net.activation.derivative(pre[l - 1])[:, None, :]
    return K


def ntk_change(K: np.ndarray, K0: np.ndarray) -> float:
    norm0 = float(np.linalg.norm(K0))
    return float(np.linalg.norm(K - K0) / norm0) if norm0 > 0 else 0.0


def adjacent_alignment(lower: np.ndarray, upper: np.ndarray, classes: int) -> float:
    """||W_{l+1} P_l||_F / ||W_{l+1}||_F for lower = W_l (n_l, n_{l-1}), upper = W_{l+1} (n_{l+1}, n_l), P_l the
    projection on the top r = min(classes, n_{l-1}, n_{l+1}) left singular vectors of W_l (0 for a zero layer)."""
    r = min(classes, lower.shape[1], upper.shape[0])
    norm = float(np.linalg.norm(upper))
    if norm == 0.0 or not np.any(lower):
        return 0.0
    left = np.linalg.svd(lower, full_matrices=False)[0][:, :r]  # (n_l, r)
    return float(min(1.0, np.linalg.norm(upper @ left) / norm))


class Record(NamedTuple):
    """A run's records (each (len(steps),), NaN from the first record after a divergence) and its divergence."""

    values: dict
    diverged_step: int


RECORD_FIELDS = ("loss", "train_error", "test_error", "test_loss", "ntk_change", "alignment", "norm")


def _error(F: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(F, axis=1) != labels))


def _batches(n: int, batch_size: int | None, rng: np.random.Generator):
    """Row indices of each step: None (every row) for full batch, else the batches of simulate.epoch_batches."""
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    for epoch in epoch_batches(n, batch_size, rng):
        yield from epoch


def train(layers: list[np.ndarray], data, net: Network, *, steps: np.ndarray, X_probe: np.ndarray,
          batch_size: int | None = None, rng: np.random.Generator | None = None) -> Record:
    """GD (batch_size None) or SGD (per-epoch permutations from `rng`, the remainder dropped) from `layers` on
    data (a nonlinear.Dataset), recording at the sorted step counts `steps`: loss, train / test error, test loss,
    ntk_change on X_probe, and per layer pair (alignment, (L - 1, T)) and per layer (norm ||W_l||_F, (L, T)).
    Floating-point trouble never warns: the run is then reported as diverged."""
    steps = np.asarray(steps, dtype=np.int64)
    L = len(layers)
    values = {f: np.full(steps.size, np.nan) for f in RECORD_FIELDS[:5]}
    values["alignment"] = np.full((L - 1, steps.size), np.nan)
    values["norm"] = np.full((L, steps.size), np.nan)
    classes = layers[-1].shape[0]
    X, Y, labels = data.X_train, data.Y_train, data.labels_train
    batches = _batches(X.shape[0], batch_size, rng)
    current, done, diverged_step, bound = [W.copy() for W in layers], 0, -1, None
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            K0 = ntk_matrix(current, X_probe, net)
            bound = DIVERGENCE_FACTOR * max(loss_and_gradients(current, X, Y, labels, net)[0], 1.0)
            for j, target in enumerate(steps):
                while done < target:
                    rows = next(batches)
                    Xb, Yb, lb = (X, Y, labels) if rows is None else (X[rows], Y[rows], labels[rows])
                    value, grads = loss_and_gradients(current, Xb, Yb, lb, net)
                    if not value <= bound:
                        raise FloatingPointError("loss above the divergence bound")
                    current = [W - eta * g for W, eta, g in zip(current, net.lrs, grads)]
                    done += 1
                F = forward(current, X, net)[0]
                value, _ = _loss(F, Y, labels, net.loss)
                if not value <= bound:
                    raise FloatingPointError("loss above the divergence bound")
                F_test = forward(current, data.X_test, net)[0]
                values["loss"][j], values["train_error"][j] = value, _error(F, labels)
                values["test_error"][j] = _error(F_test, data.labels_test)
                values["test_loss"][j] = _loss(F_test, data.Y_test, data.labels_test, net.loss)[0]
                values["ntk_change"][j] = ntk_change(ntk_matrix(current, X_probe, net), K0)
                for l in range(L - 1):
                    values["alignment"][l, j] = adjacent_alignment(current[l], current[l + 1], classes)
                for l in range(L):
                    values["norm"][l, j] = np.linalg.norm(current[l])
        except (FloatingPointError, np.linalg.LinAlgError):
            diverged_step = int(done)
            first_bad = int(np.searchsorted(steps, done))
            for v in values.values():
                v[..., first_bad:] = np.nan
    return Record(values, diverged_step)
