"""A two-layer network with a nonlinearity, trained by gradient descent: the numerical core of the `nonlinear` study.

Pure numpy (no YAML, files or plots); scikit-learn is imported only by :func:`load_digits_data`.
Notation follows docs/theory.md sections 1-3 and 6, generalized from vectors u, w in R^d to matrices:

- data X in R^{n x p} (rows are inputs x), one-hot targets Y in R^{n x k};
- hidden layer W in R^{d x p} (row i is hidden unit i's input weights w_i), output layer U in R^{d x k};
- network   F = kappa phi(X W^T) U   in R^{n x k},   i.e.   f_a(x) = kappa sum_i U_ia phi(w_i . x),
  with kappa = ``output_scale`` and phi = ``activation`` (tanh, relu or linear = identity);
- square loss   L = (1/2n) sum_x |f(x) - y(x)|^2   (the theory's a (m - m*)^2/2 + L* when p = k = 1, phi = id);
- layer-wise gradient descent   U <- U - eta_u dL/dU,   W <- W - eta_w dL/dW   (eta_u = ``lr_u``, eta_w = ``lr_w``);
- initialization   U_ia ~ N(0, s^2 sigma_u^2),   W_ij ~ N(0, s^2 sigma_w^2 / p)   with s the ``init_scale``
  (it multiplies both standard deviations). The 1/p keeps the pre-activation w_i . x of variance
  s^2 sigma_w^2 |x|^2/p (~ s^2 sigma_w^2 for standardized inputs); at p = 1 it is the theory's w_i ~ N(0, sigma_w^2).

Gradients (backpropagation by hand), with R = (F - Y)/n and Z = X W^T:
    dL/dU = kappa phi(Z)^T R   (d x k),     dL/dW = [kappa (R U^T) * phi'(Z)]^T X   (d x p).

Empirical NTK on a probe batch X_P (P inputs), learning-rate weighted like the theory's Theta, as a (P k) x (P k)
matrix indexed by (probe input x, output a) -> x k + a:
    K_{(x,a),(x',b)} = sum_theta eta_theta d_theta f_a(x) d_theta f_b(x')
                     = kappa^2 [ eta_u delta_ab phi(W x) . phi(W x')
                                 + eta_w (x . x') sum_i U_ia U_ib phi'(w_i . x) phi'(w_i . x') ].
For phi = id, p = k = 1 this is K = Theta x x'^T with the theory's Theta = kappa^2 (eta_w |u|^2 + eta_u |w|^2).
- ``ntk_change`` = ||K_t - K_0||_F / ||K_0||_F (>= 0; = |Theta_t/Theta_0 - 1| in that linear case, any probe);
- ``ntk_trace_change`` = tr K_t / tr K_0 - 1 (signed; = the theory's ntk_change Theta_t/Theta_0 - 1 there);
- ``ntk_scale`` = lambda_max(K) / P: the probe's estimate of the largest eigenvalue of the kernel operator with
  the loss's 1/n, so that GD with the kernel frozen at K is stable iff ntk_scale < 2 (= a Theta when p = k = 1).

Alignment of the output weights with the hidden layer (the matrix version of |zeta| = |cos(u, w)|):
    alignment(U, W) = ||P_W U||_F / ||U||_F   in [0, 1],
where P_W projects the hidden-unit space R^d onto the span of the top r = min(k, p) left singular vectors of W
(the r directions of hidden-unit space that carry most of the hidden layer's weight). It is the fraction of
the output weights' norm that reads out the hidden layer's dominant directions; for p = k = 1 it is exactly
|u . w| / (|u| |w|). A random U has alignment ~ sqrt(r/d) (~ 1/sqrt(d) like |zeta0| in docs/theory.md section 7).
Why W and not the learned change W_t - W_0: each column of a gradient dL/dW = [(kappa R U^T) * phi'(Z)]^T X
is a combination of the columns of U re-weighted unit by unit by phi' (exactly in span U for phi = id), so
W_t - W_0 is aligned with U almost by construction, even in the kernel regime (the theory's "kernel, aligning" in
the linear model); the alignment of U with W itself only grows once the learned part dominates the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "ACTIVATIONS", "DIGITS_CLASSES", "Params", "Dataset", "Trace", "activation_functions", "init_params",
    "forward", "loss", "gradients", "ntk_matrix", "ntk_change", "ntk_trace_change", "ntk_scale", "alignment",
    "rate_factor", "record_steps", "train", "load_digits_data", "split_dataset", "EXTRA_HINT",
]

ACTIVATIONS = ("tanh", "relu", "linear")
DIGITS_CLASSES = 10
EXTRA_HINT = "pip install 'phasediag[experiments]'"
DIVERGENCE_FACTOR = 1e8  # a run whose training loss exceeds this times max(initial loss, 1) has diverged


class Params(NamedTuple):
    """Network weights: W (d, p) hidden layer (row i = unit i's input weights), U (d, k) output layer."""

    W: np.ndarray
    U: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """A train/test split: X_* (n, p) float64 inputs, Y_* (n, k) float64 targets, labels_* (n,) int classes."""

    X_train: np.ndarray
    Y_train: np.ndarray
    labels_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    labels_test: np.ndarray


class Trace(NamedTuple):
    """One training run. Record arrays have shape (len(steps),) and hold the state *after* `steps[j]` steps
    (steps[0] = 0: the initialization); they are NaN from the first record after a divergence on.

    loss: training loss L; train_error / test_error: fraction misclassified (argmax of f); ntk_change,
    ntk_trace_change, ntk_scale: see the module docstring; alignment: ||P_W U||_F / ||U||_F; norm_u, norm_w:
    ||U||_F, ||W||_F; move_u, move_w: ||U_t - U_0||_F / ||U_0||_F, ||W_t - W_0||_F / ||W_0||_F.
    diverged: the loss became non-finite or exceeded DIVERGENCE_FACTOR max(L_0, 1), at step diverged_step
    (-1 if not). final: the weights after the last step (None after a divergence).
    """

    steps: np.ndarray
    loss: np.ndarray
    train_error: np.ndarray
    test_error: np.ndarray
    ntk_change: np.ndarray
    ntk_trace_change: np.ndarray
    ntk_scale: np.ndarray
    alignment: np.ndarray
    norm_u: np.ndarray
    norm_w: np.ndarray
    move_u: np.ndarray
    move_w: np.ndarray
    diverged: bool
    diverged_step: int
    final: Params | None


RECORD_FIELDS = ("loss", "train_error", "test_error", "ntk_change", "ntk_trace_change", "ntk_scale", "alignment",
                 "norm_u", "norm_w", "move_u", "move_w")


# ---------------------------------------------------------------- the network


def _tanh(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.tanh(z, out=out)


def _tanh_prime(z: np.ndarray, h: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.multiply(h, h, out=out)
    return np.subtract(1.0, out, out=out)


def _relu(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0, out=out)


def _relu_prime(z: np.ndarray, h: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.greater(z, 0.0, out=out, casting="unsafe")  # phi'(0) := 0; 1.0 / 0.0 in a float array


def _identity(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.copyto(out, z)
    return out


def _one(z: np.ndarray, h: np.ndarray, out: np.ndarray) -> np.ndarray:
    out.fill(1.0)
    return out


# phi(z, out) and phi'(z, phi(z), out), written into preallocated arrays: fresh (n, d) temporaries on every
# step cost more than the arithmetic (page faults), so the training loop reuses one workspace
_FUNCTIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (_tanh, _tanh_prime), "relu": (_relu, _relu_prime), "linear": (_identity, _one),
}


def activation_functions(activation: str) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    """(phi, dphi): phi(z, out) and dphi(z, phi(z), out) = phi'(z) elementwise into `out` (relu'(0) := 0)."""
    try:
        return _FUNCTIONS[activation]
    except KeyError:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}") from None


class _Workspace:
    """Reusable (rows, d) arrays Z, H, D, G for inputs of up to `rows` rows (views of the first m rows)."""

    def __init__(self, rows: int, width: int):
        self.buffers = np.empty((4, rows, width))

    def views(self, m: int) -> tuple[np.ndarray, ...]:
        return tuple(self.buffers[i, :m] for i in range(4))


def init_params(normal_w: np.ndarray, normal_u: np.ndarray, *, init_var_w: float, init_var_u: float,
                init_scale: float = 1.0, symmetric: bool = False) -> Params:
    """Initial weights from standard-normal draws: W = s sqrt(sigma_w^2/p) Z_W, U = s sigma_u Z_U.

    normal_w (d, p) and normal_u (d, k) are N(0, 1) arrays, so the same draws serve every init scale s
    (common random numbers across a sweep). symmetric: the hidden units come in pairs with the same input
    weights and opposite output weights (rows d/2.. repeat rows ..d/2 of Z_W and negate those of Z_U; d even),
    so the initial function is f_0 = 0 (the analogue of the theory's typical initialization, m0 = u0 . w0 = 0);
    then U is orthogonal to every column of W and the initial alignment is 0."""
    d, p = normal_w.shape
    if symmetric:
        if d % 2:
            raise ValueError(f"a symmetric initialization needs an even width, got {d}")
        half = d // 2
        normal_w = np.concatenate([normal_w[:half], normal_w[:half]])
        normal_u = np.concatenate([normal_u[:half], -normal_u[:half]])
    return Params(W=init_scale * np.sqrt(init_var_w / p) * normal_w, U=init_scale * np.sqrt(init_var_u) * normal_u)


def _hidden(params: Params, X: np.ndarray, activation: str,
            work: _Workspace | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z = X W^T, H = phi(Z), D = phi'(Z): each (n, d) (written into `work` when given)."""
    phi, dphi = activation_functions(activation)
    n, d = X.shape[0], params.W.shape[0]
    Z, H, D, _ = (work or _Workspace(n, d)).views(n)
    np.matmul(X, params.W.T, out=Z)
    phi(Z, H)
    dphi(Z, H, D)
    return Z, H, D


def forward(params: Params, X: np.ndarray, *, activation: str, output_scale: float) -> np.ndarray:
    """F = kappa phi(X W^T) U: (n, k)."""
    phi, _ = activation_functions(activation)
    Z = X @ params.W.T
    return output_scale * (phi(Z, Z) @ params.U)


def loss(params: Params, X: np.ndarray, Y: np.ndarray, *, activation: str, output_scale: float) -> float:
    """L = (1/2n) sum_x |f(x) - y(x)|^2."""
    R = forward(params, X, activation=activation, output_scale=output_scale) - Y
    return 0.5 * float(np.sum(R * R)) / X.shape[0]


def gradients(params: Params, X: np.ndarray, Y: np.ndarray, *, activation: str, output_scale: float,
              work: _Workspace | None = None) -> tuple[float, Params]:
    """(L, (dL/dW, dL/dU)) by backpropagation: with E = F - Y and Z = X W^T,
    dL/dU = (kappa/n) phi(Z)^T E (d, k) and dL/dW = (kappa/n) [(E U^T) * phi'(Z)]^T X (d, p).
    `work`: a reusable workspace for the (n, d) intermediates (the training loop passes one)."""
    n = X.shape[0]
    work = work or _Workspace(n, params.W.shape[0])
    _, H, D = _hidden(params, X, activation, work)
    G = work.views(n)[3]
    E = H @ params.U
    E *= output_scale
    E -= Y
    np.matmul(E, params.U.T, out=G)
    G *= D
    factor = output_scale / n
    grad_U = H.T @ E
    grad_U *= factor
    grad_W = G.T @ X
    grad_W *= factor
    return 0.5 * float(np.sum(E * E)) / n, Params(W=grad_W, U=grad_U)


# ---------------------------------------------------------------- NTK, alignment


def ntk_matrix(params: Params, X_probe: np.ndarray, *, activation: str, output_scale: float, lr_u: float,
               lr_w: float) -> np.ndarray:
    """The learning-rate-weighted empirical NTK on the probe batch: (P k, P k), index (x, a) -> x k + a.

    K = kappa^2 [eta_u (H H^T) kron I_k + eta_w ((X X^T) kron 1_{k x k}) * (A A^T)] with H = phi(X W^T) (P, d)
    and A_{(x,a), i} = U_ia phi'(w_i . x) ((P k, d)); closed form, see the module docstring."""
    _, H, D = _hidden(params, X_probe, activation)
    P, k = X_probe.shape[0], params.U.shape[1]
    A = (D[:, None, :] * params.U.T[None, :, :]).reshape(P * k, -1)  # A[(x, a), i] = phi'_i(x) U_ia
    gram_x = np.repeat(np.repeat(X_probe @ X_probe.T, k, axis=0), k, axis=1)
    K = lr_w * gram_x * (A @ A.T)
    K += lr_u * np.kron(H @ H.T, np.eye(k))
    return output_scale**2 * K


def ntk_change(K: np.ndarray, K0: np.ndarray) -> float:
    """||K - K0||_F / ||K0||_F (NaN when K0 = 0)."""
    norm0 = np.linalg.norm(K0)
    return float(np.linalg.norm(K - K0) / norm0) if norm0 > 0 else float("nan")


def ntk_trace_change(K: np.ndarray, K0: np.ndarray) -> float:
    """tr K / tr K0 - 1 (NaN when tr K0 = 0)."""
    trace0 = float(np.trace(K0))
    return (float(np.trace(K)) - trace0) / trace0 if trace0 > 0 else float("nan")


def ntk_scale(K: np.ndarray, probe_size: int) -> float:
    """lambda_max(K) / P: the per-step kernel rate of the largest mode (GD on a frozen K is stable iff < 2)."""
    return float(np.linalg.eigvalsh(K)[-1]) / probe_size


def alignment(U: np.ndarray, W: np.ndarray) -> float:
    """||P_W U||_F / ||U||_F, P_W the projection onto the top r = min(k, p) left singular vectors of W (d, p).

    U (d, k). For p = k = 1: |u . w| / (|u| |w|). NaN when U = 0 or W = 0 (undefined, like zeta0 = 0/0).
    Well defined when W has a gap after its r-th singular value (rank W >= r suffices generically); with
    d <= r it is 1 for any U."""
    norm_u = np.linalg.norm(U)
    if norm_u == 0 or not np.any(W):
        return float("nan")
    rank = min(U.shape[1], W.shape[1])
    left, _, _ = np.linalg.svd(W, full_matrices=False)
    return float(min(np.linalg.norm(left[:, :rank].T @ U) / norm_u, 1.0))


def rate_factor(initial_ntk_scale: float, cap: float | None) -> float:
    """The common factor f = min(1, cap / ntk_scale(K0)) applied to both rates (1 when cap is None).

    A common factor of eta_u and eta_w only rescales the gradient-flow time (the path and the theory's
    rho = 2c|m*|/Theta0 do not change), so it makes large-init runs stable without changing their regime."""
    if cap is None or not initial_ntk_scale > cap:
        return 1.0
    return cap / initial_ntk_scale


# ---------------------------------------------------------------- training


def record_steps(steps: int, record: int) -> np.ndarray:
    """Step 0, then `record - 1` log-spaced steps from 1 to `steps` (rounded, duplicates dropped): int64."""
    grid = np.unique(np.round(np.logspace(0.0, np.log10(steps), record - 1)).astype(np.int64))
    return np.concatenate([[0], grid]).astype(np.int64)


def _error(F: np.ndarray, labels: np.ndarray | None) -> float:
    if labels is None or labels.size == 0:
        return float("nan")
    return float(np.mean(np.argmax(F, axis=1) != labels))


def train(params: Params, X: np.ndarray, Y: np.ndarray, *, activation: str, output_scale: float, lr_u: float,
          lr_w: float, steps: np.ndarray, X_probe: np.ndarray, labels: np.ndarray | None = None,
          X_test: np.ndarray | None = None, labels_test: np.ndarray | None = None, batch_size: int | None = None,
          rng: np.random.Generator | None = None) -> Trace:
    """Layer-wise GD from `params` on (X (n, p), Y (n, k)), recording at the sorted step counts `steps`.

    The NTK K_t is taken on X_probe (P, p) with the rates used for training (lr_u, lr_w). batch_size None:
    full-batch GD; otherwise each epoch visits a permutation of the n examples (from `rng`) in batches of
    batch_size (the last, shorter batch included). Errors use argmax(f) against `labels` (NaN when None).
    Floating-point trouble never warns: a run that overflows is reported as diverged.
    """
    steps = np.asarray(steps, dtype=np.int64)
    kw = dict(activation=activation, output_scale=output_scale)
    ntk_kw = dict(kw, lr_u=lr_u, lr_w=lr_w)
    records = {f: np.full(steps.size, np.nan) for f in RECORD_FIELDS}
    start = Params(params.W.copy(), params.U.copy())
    K0 = ntk_matrix(start, X_probe, **ntk_kw)
    loss0 = loss(start, X, Y, **kw)
    bound = DIVERGENCE_FACTOR * max(loss0, 1.0)
    batches = batch_indices(X.shape[0], batch_size, rng)
    work = _Workspace(X.shape[0] if batch_size is None else min(batch_size, X.shape[0]), params.W.shape[0])
    current, done, diverged_step = start, 0, -1
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            for j, target in enumerate(steps):
                while done < target:
                    rows = next(batches)
                    Xb, Yb = (X, Y) if rows is None else (X[rows], Y[rows])
                    value, grad = gradients(current, Xb, Yb, **kw, work=work)
                    if not value <= bound:
                        raise FloatingPointError("loss above the divergence bound")
                    current = Params(current.W - lr_w * grad.W, current.U - lr_u * grad.U)
                    done += 1
                _record(records, j, current, start, K0, X, Y, X_probe, labels, X_test, labels_test, ntk_kw, bound)
        except (FloatingPointError, np.linalg.LinAlgError):
            diverged_step = int(done)
            first_bad = int(np.searchsorted(steps, done))
            for f in RECORD_FIELDS:
                records[f][first_bad:] = np.nan
    diverged = diverged_step >= 0
    return Trace(steps=steps, **records, diverged=diverged, diverged_step=diverged_step,
                 final=None if diverged else current)


def batch_indices(n: int, batch_size: int | None, rng: np.random.Generator | None):
    """Row indices of each step: None (all rows) for full batch, else slices of per-epoch permutations."""
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    if rng is None:
        raise ValueError("minibatch training needs an rng")
    while True:
        order = rng.permutation(n)
        for begin in range(0, n, batch_size):
            yield order[begin:begin + batch_size]


def _record(records: dict, j: int, current: Params, start: Params, K0: np.ndarray, X, Y, X_probe, labels,
            X_test, labels_test, ntk_kw: dict, bound: float) -> None:
    """Fill record j from the current weights; FloatingPointError when the loss is past `bound`."""
    kw = {"activation": ntk_kw["activation"], "output_scale": ntk_kw["output_scale"]}
    F = forward(current, X, **kw)
    E = F - Y
    value = 0.5 * float(np.sum(E * E)) / X.shape[0]
    if not value <= bound:
        raise FloatingPointError("loss above the divergence bound")
    records["loss"][j] = value
    records["train_error"][j] = _error(F, labels)
    if X_test is not None:
        records["test_error"][j] = _error(forward(current, X_test, **kw), labels_test)
    K = ntk_matrix(current, X_probe, **ntk_kw)
    records["ntk_change"][j] = ntk_change(K, K0)
    records["ntk_trace_change"][j] = ntk_trace_change(K, K0)
    records["ntk_scale"][j] = ntk_scale(K, X_probe.shape[0])
    records["alignment"][j] = alignment(current.U, current.W)
    records["norm_u"][j] = np.linalg.norm(current.U)
    records["norm_w"][j] = np.linalg.norm(current.W)
    records["move_u"][j] = _relative(current.U - start.U, start.U)
    records["move_w"][j] = _relative(current.W - start.W, start.W)


def _relative(change: np.ndarray, reference: np.ndarray) -> float:
    norm0 = np.linalg.norm(reference)
    return float(np.linalg.norm(change) / norm0) if norm0 > 0 else float("nan")


# ---------------------------------------------------------------- data


def load_digits_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8 x 8 digits (no download): X (1797, 64) float64 pixel values 0..16, labels (1797,).

    Raises ImportError naming the extra to install when scikit-learn is missing."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(f"the digits dataset needs scikit-learn, which is not installed: {EXTRA_HINT} "
                          f"(or pip install scikit-learn)") from exc
    data = load_digits()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.int64)


def split_dataset(X: np.ndarray, labels: np.ndarray, *, test_fraction: float, rng: np.random.Generator,
                  standardize: bool = True, center_targets: bool = False,
                  classes: int | None = None) -> Dataset:
    """Random train/test split (a permutation from `rng`; round(test_fraction n) test examples), then
    standardization of every feature with the *training* mean and std (features constant on the training
    set are only centred), and one-hot targets (minus 1/k when center_targets)."""
    n = X.shape[0]
    k = int(classes if classes is not None else labels.max() + 1)
    order = rng.permutation(n)
    n_test = int(round(test_fraction * n))
    test, tr = np.sort(order[:n_test]), np.sort(order[n_test:])
    X_train, X_test = X[tr].astype(np.float64), X[test].astype(np.float64)
    if standardize:
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    eye = np.eye(k) - (1.0 / k if center_targets else 0.0)
    return Dataset(X_train=X_train, Y_train=eye[labels[tr]], labels_train=labels[tr], X_test=X_test,
                   Y_test=eye[labels[test]], labels_test=labels[test])
