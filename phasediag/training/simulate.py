"""Finite-width witness: train the actual vectors u, w in R^d and measure what docs/theory.md predicts.

This module is deliberately independent of ``phasediag.core``: it never uses the closed form, only
the model's definition (docs/theory.md section 1), so the tests can check the closed form against it.

Model: f(x) = kappa (u . w) x = m x with u, w in R^d, loss L = E[(f(x) - y)^2] / 2. The data enter
only through a = E[x^2] (``input_var``) and b = E[x y] = a m* (``teacher`` = m*). With the residual
r := a m - b the gradients are dL/du = kappa r w and dL/dw = kappa r u.

Three trainers, all returning a :class:`Trace` recorded at the requested instants:

- :func:`gd_vectors`: full-batch gradient descent on the population loss;
- :func:`sgd_vectors`: minibatch SGD on a sampled finite dataset;
- :func:`integrate_flow`: the gradient flow, integrated by an adaptive Dormand-Prince 5(4) scheme.

Time is measured in gradient-descent steps (the step size is inside the learning rates), so GD
step k corresponds to flow time t = k. Everything is numpy only, vectorized over the width d
(loops run over time steps only), pure (no I/O, randomness only through a passed ``Generator``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, NamedTuple

import numpy as np

from phasediag.engine.point import NumericalRangeError  # (a BadInput and a ValueError)
from phasediag.training import activations

__all__ = [
    "DIVERGENCE_LIMIT",
    "Trace",
    "sample_vectors",
    "gd_vectors",
    "sgd_vectors",
    "integrate_flow",
    "FlowIntegrator",
    "epoch_batches",
    "activated_measurements",
    "activated_gradients",
]

#: A (S)GD run is declared diverged once |u|^2 or |w|^2 exceeds this value (or is not finite).
#: Below it every recorded quantity, and one more update, is computable without overflow for any
#: hyperparameters in docs/theory.md section 8's range.
DIVERGENCE_LIMIT = 1e80


class Trace(NamedTuple):
    """A recorded trajectory. Every field is a float64 array of shape (n,), aligned with the n
    requested steps or times.

    - ``t``: the step count (GD, SGD) or flow time (flow), in GD steps.
    - ``m``: end-to-end slope kappa (u . w).
    - ``ntk``: Theta = kappa^2 (lr_w |u|^2 + lr_u |w|^2), learning-rate-weighted NTK (per unit x x').
    - ``alignment``: zeta = u . w / (|u| |w|), in [-1, 1]; 0 where u or w is the zero vector.
    - ``norm_u2``, ``norm_w2``: |u|^2 and |w|^2.
    - ``loss``: population excess loss a (m - m*)^2 / 2 (also for SGD: population, not batch, loss).
    - ``U``, ``W``, ``V``: Gram entries |u|^2, |w|^2, u . w (U, W duplicate norm_u2, norm_w2).
    - ``imbalance``: Delta = |u|^2 / lr_u - |w|^2 / lr_w.
    - ``gram_det``: G = |u|^2 |w|^2 - (u . w)^2 >= 0, computed as |u|^2 |w_perp|^2 with w_perp the
      (twice re-orthogonalized) component of w orthogonal to u, so that it is relatively accurate
      even when G << |u|^2 |w|^2 (never by the cancelling difference U W - V^2).

    For a diverged (S)GD run (see :data:`DIVERGENCE_LIMIT`) every field except ``t`` is +inf from
    the first record at or after the divergence on: a sentinel meaning "diverged", not a limit.
    """

    t: np.ndarray
    m: np.ndarray
    ntk: np.ndarray
    alignment: np.ndarray
    norm_u2: np.ndarray
    norm_w2: np.ndarray
    loss: np.ndarray
    U: np.ndarray
    W: np.ndarray
    V: np.ndarray
    imbalance: np.ndarray
    gram_det: np.ndarray


@dataclass(frozen=True)
class _Model:
    """Validated hyperparameters: kappa, layer learning rates, a = E[x^2], m*, b = a m*."""

    kappa: float
    lr_u: float
    lr_w: float
    a: float
    teacher: float

    @property
    def b(self) -> float:
        return self.a * self.teacher


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def _model(output_scale: float, lr_u: float, lr_w: float, input_var: float, teacher: float) -> _Model:
    teacher = float(teacher)
    if not np.isfinite(teacher):
        raise ValueError(f"teacher must be finite, got {teacher!r}")
    model = _Model(
        kappa=_positive("output_scale", output_scale),
        lr_u=_positive("lr_u", lr_u),
        lr_w=_positive("lr_w", lr_w),
        a=_positive("input_var", input_var),
        teacher=teacher,
    )
    _check_range(model)
    return model


def _check_range(model: _Model) -> None:
    """Every number a run measures (NTK, loss, the step) stays finite while |u|^2, |w|^2 <= DIVERGENCE_LIMIT;
    else the inputs are beyond float range (Python floats would raise OverflowError mid-run)."""
    m_max = model.kappa * DIVERGENCE_LIMIT + abs(model.teacher)  # |m| and |m - m*| before divergence
    ntk_max = model.kappa * model.kappa * max(model.lr_u, model.lr_w) * 2 * DIVERGENCE_LIMIT
    if not (math.isfinite(ntk_max) and math.isfinite(model.a * m_max * m_max)):
        raise NumericalRangeError(f"output_scale {model.kappa:g}, lr_u {model.lr_u:g}, lr_w {model.lr_w:g}, "
                                  f"input_var {model.a:g}, teacher {model.teacher:g}: the network's NTK or loss "
                                  "would leave the floating-point range")


def _vectors(u0: np.ndarray, w0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy u0, w0 to float64 1-D arrays of equal length, finite, not above the divergence limit."""
    u = np.array(u0, dtype=np.float64).reshape(-1)
    w = np.array(w0, dtype=np.float64).reshape(-1)
    if u.shape != w.shape or u.size == 0:
        raise ValueError(f"u0 and w0 must be non-empty vectors of equal length, got {u.shape}, {w.shape}")
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(w))):
        raise ValueError("u0 and w0 must be finite")
    if np.max(np.abs(u)) > 1e40 or np.max(np.abs(w)) > 1e40 or _too_large(u, w):
        raise NumericalRangeError(f"|u0|^2 or |w0|^2 exceeds DIVERGENCE_LIMIT = {DIVERGENCE_LIMIT:g} (the initial "
                                  "variances are too large)")
    return u, w


def _too_large(u: np.ndarray, w: np.ndarray) -> bool:
    """True when |u|^2 or |w|^2 is above DIVERGENCE_LIMIT or not finite (entries must be < 1e150)."""
    uu, ww = float(u @ u), float(w @ w)
    return not (uu <= DIVERGENCE_LIMIT and ww <= DIVERGENCE_LIMIT)


def _step_array(steps: np.ndarray) -> np.ndarray:
    """Validate a sorted 1-D array of non-negative integer step counts; return it as int64."""
    s = np.asarray(steps)
    if s.ndim != 1:
        raise ValueError(f"steps must be a 1-D array, got shape {s.shape}")
    if s.size and not (np.all(np.isfinite(s)) and np.all(s == np.floor(s)) and np.all(s >= 0)):
        raise ValueError("steps must be finite non-negative integers")
    s = s.astype(np.int64)
    if np.any(np.diff(s) < 0):
        raise ValueError("steps must be sorted")
    return s


def _time_array(times: np.ndarray) -> np.ndarray:
    """Validate a sorted 1-D array of finite non-negative times; return it as float64."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"times must be a 1-D array, got shape {t.shape}")
    if t.size and not (np.all(np.isfinite(t)) and np.all(t >= 0)):
        raise ValueError("times must be finite and >= 0")
    if np.any(np.diff(t) < 0):
        raise ValueError("times must be sorted")
    return t


# --------------------------------------------------------------------------------------------
# Measurements


def _gram_det(u: np.ndarray, w: np.ndarray, uu: float) -> float:
    """|u|^2 |w_perp|^2 with w_perp = w minus its projection on u (projected twice, for accuracy)."""
    if uu == 0.0 or u.size == 1:  # two vectors in R^1 are always parallel: G = 0 exactly
        return 0.0
    p = w - (float(u @ w) / uu) * u
    p = p - (float(u @ p) / uu) * u
    return uu * float(p @ p)


def _measure(u: np.ndarray, w: np.ndarray, model: _Model) -> tuple[float, ...]:
    """The Trace fields after ``t``, in order, for the state (u, w)."""
    uu, ww, uw = float(u @ u), float(w @ w), float(u @ w)
    m = model.kappa * uw
    ntk = model.kappa**2 * (model.lr_w * uu + model.lr_u * ww)
    loss = 0.5 * model.a * (m - model.teacher) ** 2
    return _fields(u, w, model, m, ntk, loss, uu, ww, uw)


def _fields(u, w, model: _Model, m: float, ntk: float, loss: float, uu: float, ww: float,
            uw: float) -> tuple[float, ...]:
    """The Trace fields after ``t`` from m, the NTK and the loss (the model's or an activated network's) and the
    vectors' Gram entries: the alignment, norms, imbalance and Gram determinant are the vectors' own."""
    norms = float(np.sqrt(uu) * np.sqrt(ww))
    alignment = min(1.0, max(-1.0, uw / norms)) if norms > 0.0 else 0.0
    imbalance = uu / model.lr_u - ww / model.lr_w
    return (m, ntk, alignment, uu, ww, loss, uu, ww, uw, imbalance, _gram_det(u, w, uu))


_DIVERGED = (np.inf,) * (len(Trace._fields) - 1)


def _trace(t: np.ndarray, rows: list[tuple[float, ...]]) -> Trace:
    """Assemble a Trace from the recorded times and one row of measurements per time."""
    cols = np.array(rows, dtype=np.float64).reshape(len(rows), len(Trace._fields) - 1).T
    return Trace(np.asarray(t, dtype=np.float64), *cols)


# --------------------------------------------------------------------------------------------
# Initialization


def sample_vectors(
    width: int, init_var_u: float, init_var_w: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw u0 ~ N(0, init_var_u I_d) and w0 ~ N(0, init_var_w I_d) (docs/theory.md section 1).

    Returns two float64 arrays of shape (width,). A zero variance gives the exact zero vector.
    Both vectors' normal draws (u first, then w) are always consumed, so the generator's stream
    does not depend on the variances.
    """
    d = int(width)
    if d != width or d < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    out = []
    for var in (init_var_u, init_var_w):
        var = float(var)
        if not (np.isfinite(var) and var >= 0.0):
            raise ValueError(f"init variances must be finite and >= 0, got {var!r}")
        z = rng.standard_normal(d)
        out.append(np.sqrt(var) * z if var > 0.0 else np.zeros(d))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# Discrete descent (GD and SGD share one loop)


def _descend(
    u0: np.ndarray,
    w0: np.ndarray,
    model: _Model,
    steps: np.ndarray,
    coefficients: Iterator[tuple[float, float]],
) -> Trace:
    """Run u <- u - lr_u kappa r w, w <- w - lr_w kappa r u (simultaneous), r = a_k m - b_k.

    ``coefficients`` yields (a_k, b_k) for step k = 0, 1, ...; the state after k steps is recorded
    at every requested k. Stops at divergence (see DIVERGENCE_LIMIT) and records +inf sentinels.
    """
    u, w = _vectors(u0, w0)
    rows: list[tuple[float, ...]] = []
    k = 0
    for target in steps:
        while k < target and u is not None:
            a_k, b_k = next(coefficients)
            u, w = _update(u, w, model, a_k, b_k)
            k += 1
        rows.append(_DIVERGED if u is None else _measure(u, w, model))
    return _trace(steps, rows)


def _update(
    u: np.ndarray, w: np.ndarray, model: _Model, a_k: float, b_k: float
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One simultaneous descent step; (None, None) if the new state is beyond DIVERGENCE_LIMIT."""
    with np.errstate(over="ignore", invalid="ignore"):  # only reachable beyond docs/theory.md section 8's range
        r = a_k * model.kappa * float(u @ w) - b_k
        g = model.kappa * r
        u_new = u - (model.lr_u * g) * w
        w_new = w - (model.lr_w * g) * u
        too_large = _too_large(u_new, w_new)
    if too_large:
        return None, None
    return u_new, w_new


def _constant(a: float, b: float) -> Iterator[tuple[float, float]]:
    while True:
        yield a, b


def gd_vectors(
    u0: np.ndarray,
    w0: np.ndarray,
    *,
    output_scale: float,
    lr_u: float,
    lr_w: float,
    input_var: float,
    teacher: float,
    steps: np.ndarray,
    activation: str = "linear",
    slope: float = activations.DEFAULT_SLOPE,
    nodes: int = activations.DEFAULT_NODES,
    diagnostics: dict | None = None,
) -> Trace:
    """Full-batch gradient descent on the population loss, in R^d.

    u0, w0: float arrays of shape (d,). Each step (simultaneous update, r at the old state):
        r = a m - b,  u <- u - lr_u kappa r w,  w <- w - lr_w kappa r u,
    with a = input_var, b = input_var * teacher, m = kappa (u . w).
    steps: sorted 1-D array of non-negative integer step counts (repeats allowed); the Trace has
    one entry per element, t = step count. Cost O(max(steps) * d).

    Divergence: once |u|^2 or |w|^2 exceeds DIVERGENCE_LIMIT the run stops, and every record at or
    after that step has all fields except t equal to +inf (no overflow warning is ever emitted).

    activation: the network f(x) = kappa sum_i u_i phi(w_i x) with phi one of activations.ACTIVATIONS
    (`slope`: leaky_relu's); the population gradients are then sums over the split quadrature with `nodes`
    per half-line, and the Trace records what :func:`activated_measurements` defines. "linear" (the default) is
    the model above, with the exact moments a, b (no quadrature). Cost O(max(steps) d nodes) when activated.
    diagnostics: a dict to receive "quadrature_error" (see ``_Network.measure``; activated networks only).
    """
    model = _model(output_scale, lr_u, lr_w, input_var, teacher)
    if activation != "linear":
        net = _network(activation, slope, nodes, model, diagnostics)
        return _descend_network(u0, w0, net, _step_array(steps), net.population_gradients)
    return _descend(u0, w0, model, _step_array(steps), _constant(model.a, model.b))


def epoch_batches(samples: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield, epoch after epoch, the sample indices of one epoch as an array (samples // batch_size, batch_size):
    a fresh permutation of range(samples) cut into consecutive batches, the remainder dropped."""
    n_batches = samples // batch_size
    while True:
        yield rng.permutation(samples)[: n_batches * batch_size].reshape(n_batches, batch_size)


def _batch_moments(
    x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[float, float]]:
    """Yield (mean(x_B^2), mean(x_B y_B)) per minibatch B, epoch after epoch.

    Each epoch is a fresh permutation of the n samples cut into n // batch_size consecutive
    batches; the n % batch_size left-over samples of an epoch are skipped (drop-last).
    """
    for idx in epoch_batches(x.size, batch_size, rng):
        xb, yb = x[idx], y[idx]
        a_b = np.mean(xb * xb, axis=1)
        b_b = np.mean(xb * yb, axis=1)
        yield from zip(a_b.tolist(), b_b.tolist())


def sgd_vectors(
    u0: np.ndarray,
    w0: np.ndarray,
    *,
    output_scale: float,
    lr_u: float,
    lr_w: float,
    input_var: float,
    teacher: float,
    batch_size: int,
    samples: int,
    noise_var: float,
    steps: np.ndarray,
    rng: np.random.Generator,
    activation: str = "linear",
    slope: float = activations.DEFAULT_SLOPE,
    nodes: int = activations.DEFAULT_NODES,
    diagnostics: dict | None = None,
) -> Trace:
    """Minibatch SGD on a finite sampled dataset, in R^d.

    Dataset (drawn first from ``rng``): x ~ N(0, input_var) of shape (samples,), then
    y = teacher x + sqrt(noise_var) N(0, 1). Batches: each epoch a new permutation (from ``rng``),
    cut into samples // batch_size batches of batch_size distinct samples (the remainder of an
    epoch is skipped). Step k uses the gradient of its batch's mean loss, i.e. the GD update of
    :func:`gd_vectors` with (a, b) replaced by the batch moments (mean(x_B^2), mean(x_B y_B)).

    With batch_size == samples this is exactly gd_vectors with input_var = mean(x^2) and
    teacher = mean(x y) / mean(x^2) of the sample (up to the order of summation).
    The Trace's ``loss`` is the population excess loss input_var (m - teacher)^2 / 2.
    steps and divergence: as in :func:`gd_vectors`.

    activation: as in :func:`gd_vectors`. The batch gradient is then that of the batch's mean loss of the
    activated network; dataset and batches are drawn exactly as for "linear" (the same seed, the same data and
    order whatever the activation), and the records are population values (quadrature).
    """
    model = _model(output_scale, lr_u, lr_w, input_var, teacher)
    samples, batch_size = int(samples), int(batch_size)
    if not 1 <= batch_size <= samples:
        raise ValueError(f"need 1 <= batch_size <= samples, got {batch_size}, {samples}")
    noise_var = float(noise_var)
    if not (np.isfinite(noise_var) and noise_var >= 0.0):
        raise ValueError(f"noise_var must be finite and >= 0, got {noise_var!r}")
    x = np.sqrt(model.a) * rng.standard_normal(samples)
    y = model.teacher * x + np.sqrt(noise_var) * rng.standard_normal(samples)
    if activation != "linear":
        net = _network(activation, slope, nodes, model, diagnostics)
        return _descend_network(u0, w0, net, _step_array(steps), _batch_gradients(net, x, y, batch_size, rng))
    moments = _batch_moments(x, y, batch_size, rng)
    return _descend(u0, w0, model, _step_array(steps), moments)


def _batch_gradients(net: _Network, x: np.ndarray, y: np.ndarray, batch_size: int,
                     rng: np.random.Generator) -> Callable:
    """gradients(u, w) of the minibatch of step k, k = 0, 1, ...: batches of :func:`epoch_batches`."""
    weights = np.full(batch_size, 1.0 / batch_size)

    def batches() -> Iterator[np.ndarray]:
        for idx in epoch_batches(x.size, batch_size, rng):
            yield from idx

    order = batches()

    def gradients(u, w):
        idx = next(order)
        return net.gradients(u, w, x[idx], y[idx], weights)

    return gradients


# --------------------------------------------------------------------------------------------
# Gradient flow: adaptive Dormand-Prince 5(4) with a PI step-size controller (Hairer's DOPRI5)

_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
# 5th-order minus embedded 4th-order weights (7 stages, FSAL).
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
_SAFETY, _BETA = 0.9, 0.04
_EXPO = 0.2 - 0.75 * _BETA
_FAC_MIN, _FAC_MAX = 0.2, 10.0  # bounds on h_new / h


def _rhs(y: np.ndarray, model: _Model) -> np.ndarray:
    """Flow velocity for the stacked state y = [u; w] of shape (2, d)."""
    g = model.kappa * (model.a * model.kappa * float(y[0] @ y[1]) - model.b)
    out = np.empty_like(y)
    np.multiply(-(model.lr_u * g), y[1], out=out[0])
    np.multiply(-(model.lr_w * g), y[0], out=out[1])
    return out


def _dopri_step(y: np.ndarray, k1: np.ndarray, h: float, rhs: Callable[[np.ndarray], np.ndarray]):
    """One Dormand-Prince step from y (velocity k1): (y_new, k7 = velocity at y_new, error vector)."""
    ks = [k1]
    for row in _A[1:]:
        y_stage = y + h * sum(coef * k for coef, k in zip(row, ks) if coef != 0.0)
        ks.append(rhs(y_stage))
    y_new = y_stage  # the last row holds the 5th-order weights (FSAL)
    err = h * sum(coef * k for coef, k in zip(_E, ks) if coef != 0.0)
    return y_new, ks[-1], err


def _error_norm(err: np.ndarray, y: np.ndarray, y_new: np.ndarray, rtol: float) -> float:
    """Largest per-layer error relative to that layer's norm: max_l |err_l| / (rtol max|y_l|)."""
    worst = 0.0
    for e, a, b in zip(err, y, y_new):
        num = float(np.linalg.norm(e))
        if num == 0.0:
            continue
        den = rtol * max(float(np.linalg.norm(a)), float(np.linalg.norm(b)))
        worst = max(worst, num / den if den > 0.0 else np.inf)
    return worst


def _initial_step(y: np.ndarray, model: _Model) -> float:
    """A conservative first step: 1e-4 of the fastest initial rate (a Theta0 or c |r0|)."""
    uu, ww = float(y[0] @ y[0]), float(y[1] @ y[1])
    ntk = model.kappa**2 * (model.lr_w * uu + model.lr_u * ww)
    c = model.kappa * np.sqrt(model.lr_u * model.lr_w)
    r = model.a * model.kappa * float(y[0] @ y[1]) - model.b
    rate = max(model.a * ntk, c * abs(r))
    return 1e-4 / rate if rate > 0.0 else np.inf


class FlowIntegrator:
    """Mutable DOPRI5 state for dy/dt = rhs(y), y = [u; w] of shape (2, d): position y at time t, FSAL velocity,
    proposed step h (the first one `first_step`). :meth:`advance_to` lands exactly on each target time."""

    def __init__(self, y: np.ndarray, rhs: Callable[[np.ndarray], np.ndarray], first_step: float, rtol: float,
                 max_steps: int):
        self.y, self.rhs, self.rtol, self.max_steps = y, rhs, rtol, max_steps
        self.t, self.k1 = 0.0, rhs(y)
        self.h, self.fac_old, self.steps = first_step, 1e-4, 0

    def advance_to(self, target: float) -> None:
        """Integrate from self.t to exactly ``target`` (landing on it with a shortened step)."""
        rejected = False
        while self.t < target:
            self.steps += 1
            if self.steps > self.max_steps:
                raise RuntimeError(f"integrate_flow: more than max_steps={self.max_steps} steps")
            h = min(self.h, target - self.t)
            y_new, k7, err_vec = _dopri_step(self.y, self.k1, h, self.rhs)
            err = _error_norm(err_vec, self.y, y_new, self.rtol)
            fac11 = err**_EXPO
            if err <= 1.0:
                fac = min(1 / _FAC_MIN, max(1 / _FAC_MAX, fac11 / self.fac_old**_BETA / _SAFETY))
                h_next = h / fac if not rejected else min(h / fac, h)
                self.fac_old = max(err, 1e-4)
                self.t = target if h == target - self.t else self.t + h
                self.y, self.k1, rejected = y_new, k7, False
                self.h = max(h_next, self.h) if h < self.h else h_next
            else:
                self.h = h / min(1 / _FAC_MIN, fac11 / _SAFETY)
                rejected = True


def integrate_flow(
    u0: np.ndarray,
    w0: np.ndarray,
    *,
    output_scale: float,
    lr_u: float,
    lr_w: float,
    input_var: float,
    teacher: float,
    times: np.ndarray,
    rtol: float = 1e-12,
    max_steps: int = 2_000_000,
    activation: str = "linear",
    slope: float = activations.DEFAULT_SLOPE,
    nodes: int = activations.DEFAULT_NODES,
    diagnostics: dict | None = None,
) -> Trace:
    """Integrate the gradient flow du/dt = -lr_u kappa r w, dw/dt = -lr_w kappa r u in R^d.

    r = a m - b with a = input_var, b = input_var * teacher, m = kappa (u . w); t in GD steps.
    u0, w0: float arrays of shape (d,). times: sorted 1-D array of finite times >= 0 (repeats
    allowed); the integrator lands exactly on each of them (no interpolation).

    Method: explicit Dormand-Prince 5(4), local extrapolation, PI step-size control. The local
    error of each step, measured per layer as |err_u| / |u| and |err_w| / |w| (Euclidean norms over
    the width), is kept below ``rtol``. The step adapts to the fast phase (rate a Theta) and, after
    convergence, is limited by explicit stability (about 3 / (a Theta)): integrating to time T
    costs about a Theta_inf T / 3 steps of O(d) work. Raises RuntimeError after ``max_steps``.

    activation: as in :func:`gd_vectors` (the velocity from the quadrature gradients, O(d nodes) per stage).
    """
    model = _model(output_scale, lr_u, lr_w, input_var, teacher)
    times = _time_array(times)
    rtol = _positive("rtol", rtol)
    u, w = _vectors(u0, w0)
    y = np.stack([u, w])
    if activation == "linear":
        rhs, measure = partial(_rhs, model=model), partial(_measure, model=model)
    else:
        net = _network(activation, slope, nodes, model, diagnostics)

        def rhs(state):
            gu, gw = net.population_gradients(state[0], state[1])
            return np.stack([-model.lr_u * gu, -model.lr_w * gw])

        measure = net.measure
    solver = FlowIntegrator(y, rhs, _initial_step(y, model), rtol, int(max_steps))
    rows = []
    for target in times:
        solver.advance_to(float(target))
        rows.append(measure(solver.y[0], solver.y[1]))
    return _trace(times, rows)


# --------------------------------------------------------------------------------------------
# A network with an activation: f(x) = kappa sum_i u_i phi(w_i x) (docs/theory.md section 10)


class _Network:
    """The activated network on the one-dimensional task, with a reusable (d, Q) workspace.

    Population expectations are sums over the split quadrature of :mod:`phasediag.training.activations`;
    a minibatch is the same computation over the batch's x with equal weights 1/B.
    """

    def __init__(self, model: _Model, act: activations.Activation, nodes: int, diagnostics: dict | None):
        self.model, self.act = model, act
        self.quad = activations.population_quadrature(model.a, nodes)
        self._fine = activations.population_quadrature(model.a, 2 * nodes) if diagnostics is not None else None
        self.diagnostics = diagnostics
        if diagnostics is not None:
            diagnostics["quadrature_error"] = 0.0
        self._space: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _arrays(self, w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Z = w x^T, H = phi(Z), D = phi'(Z), each (d, len(x)), in reused buffers."""
        Z, H, D = self._space.get(x.size) or self._space.setdefault(
            x.size, tuple(np.empty((w.size, x.size)) for _ in range(3)))
        np.multiply.outer(w, x, out=Z)
        self.act.phi(Z, H)
        self.act.dphi(Z, H, D)
        return Z, H, D

    def gradients(self, u: np.ndarray, w: np.ndarray, x: np.ndarray, y: np.ndarray,
                  p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dL/du, dL/dw) of L = sum_q p_q (f(x_q) - y_q)^2 / 2:
        dL/du_i = kappa sum_q p_q r_q phi(w_i x_q),  dL/dw_i = kappa u_i sum_q p_q r_q phi'(w_i x_q) x_q."""
        kappa = self.model.kappa
        _, H, D = self._arrays(w, x)
        pr = p * (kappa * (u @ H) - y)
        return kappa * (H @ pr), kappa * u * (D @ (pr * x))

    def population_gradients(self, u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.quad.x
        return self.gradients(u, w, x, self.model.teacher * x, self.quad.p)

    def measure(self, u: np.ndarray, w: np.ndarray) -> tuple[float, ...]:
        """The Trace fields after ``t`` (see :func:`activated_measurements`). With `diagnostics`, also the
        quadrature's error estimate: the largest change of m, the NTK and the loss when the rule is doubled
        (relative to |m| + |m*|, the NTK, and loss + a m*^2 / 2), the worst over the records so far."""
        values = self._measure(u, w, self.quad)
        if self._fine is not None:
            fine = self._measure(u, w, self._fine)
            model = self.model
            scales = ((0, abs(values[0]) + abs(model.teacher)), (1, values[1]),
                      (5, values[5] + 0.5 * model.a * model.teacher**2))
            change = max((abs(values[i] - fine[i]) / scale for i, scale in scales if scale > 0), default=0.0)
            self.diagnostics["quadrature_error"] = max(self.diagnostics["quadrature_error"], change)
        return values

    def _measure(self, u: np.ndarray, w: np.ndarray, quad: activations.Quadrature) -> tuple[float, ...]:
        model, (x, p) = self.model, quad
        _, H, D = self._arrays(w, x)
        f = model.kappa * (u @ H)
        r = f - model.teacher * x
        m = float(p @ (x * f)) / model.a
        loss = 0.5 * float(p @ (r * r))
        slope_u = (H @ (p * x)) / model.a  # E[x phi(w_i x)] / a: unit i's linear read-out
        slope_w = (D @ (p * x * x)) / model.a  # E[x^2 phi'(w_i x)] / a
        ntk = model.kappa**2 * (model.lr_u * float(slope_u @ slope_u) + model.lr_w * float((u * slope_w) @ (u * slope_w)))
        return _fields(u, w, model, m, ntk, loss, float(u @ u), float(w @ w), float(u @ w))

    def step(self, u: np.ndarray, w: np.ndarray, grads: tuple[np.ndarray, np.ndarray]):
        """u - lr_u dL/du, w - lr_w dL/dw; (None, None) beyond DIVERGENCE_LIMIT."""
        with np.errstate(over="ignore", invalid="ignore"):
            u_new = u - self.model.lr_u * grads[0]
            w_new = w - self.model.lr_w * grads[1]
            too_large = _too_large(u_new, w_new)
        return (None, None) if too_large else (u_new, w_new)


def _network(activation: str, slope: float, nodes: int, model: _Model, diagnostics: dict | None = None) -> _Network:
    return _Network(model, activations.activation(activation, slope), nodes, diagnostics)


def _descend_network(u0, w0, net: _Network, steps: np.ndarray, gradients: Callable) -> Trace:
    """The loop of :func:`_descend` for an activated network: `gradients(u, w)` of step k, k = 0, 1, ..."""
    u, w = _vectors(u0, w0)
    rows: list[tuple[float, ...]] = []
    k = 0
    with np.errstate(over="ignore", invalid="ignore"):  # beyond the limit the step is discarded, not used
        for target in steps:
            while k < target and u is not None:
                u, w = net.step(u, w, gradients(u, w))
                k += 1
            rows.append(_DIVERGED if u is None else net.measure(u, w))
    return _trace(steps, rows)


def activated_measurements(u: np.ndarray, w: np.ndarray, *, activation: str, slope: float = activations.DEFAULT_SLOPE,
                           output_scale: float, lr_u: float, lr_w: float, input_var: float, teacher: float,
                           nodes: int = activations.DEFAULT_NODES) -> dict[str, float]:
    """What a Trace records for the state (u, w) of f(x) = kappa sum_i u_i phi(w_i x), x ~ N(0, a), y = m* x:

        m    = E[x f(x)] / a                                    (the best linear slope)
        loss = E[(f(x) - m* x)^2] / 2                           (excess loss, nonlinear residual included)
        ntk  = E_{x,x'}[x K(x, x') x'] / a^2
             = kappa^2 [lr_u sum_i (E[x phi(w_i x)]/a)^2 + lr_w sum_i u_i^2 (E[x^2 phi'(w_i x)]/a)^2],

    K(x, x') = sum_theta eta_theta d_theta f(x) d_theta f(x') the learning-rate-weighted kernel: `ntk` is its
    component on the linear function x x', the rate at which the slope learns (dm/dt = -a ntk (m - m*) while the
    residual is linear). For phi = identity every one of them is the linear model's (Theta = kappa^2 (lr_w |u|^2
    + lr_u |w|^2)). Expectations by the split quadrature with `nodes` per half-line."""
    model = _model(output_scale, lr_u, lr_w, input_var, teacher)
    u, w = _vectors(u, w)
    values = _network(activation, slope, nodes, model).measure(u, w)
    return dict(zip(Trace._fields[1:], values))


def activated_gradients(u: np.ndarray, w: np.ndarray, *, activation: str, slope: float = activations.DEFAULT_SLOPE,
                        output_scale: float, lr_u: float, lr_w: float, input_var: float, teacher: float,
                        nodes: int = activations.DEFAULT_NODES) -> tuple[np.ndarray, np.ndarray]:
    """(dL/du, dL/dw), each of shape (d,), of the population loss L = E[(f(x) - m* x)^2]/2 of the activated
    network (the step :func:`gd_vectors` takes is -lr_u dL/du, -lr_w dL/dw):

        dL/du_i = kappa E[r(x) phi(w_i x)],   dL/dw_i = kappa u_i E[r(x) phi'(w_i x) x],   r = f(x) - m* x."""
    model = _model(output_scale, lr_u, lr_w, input_var, teacher)
    u, w = _vectors(u, w)
    return _network(activation, slope, nodes, model).population_gradients(u, w)
