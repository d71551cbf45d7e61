"""Activation functions phi and their derivatives, and the population quadrature of the one-dimensional task.

Pure numpy. One registry serves every network phasediag trains (the two-layer network on the model's own task in
:mod:`phasediag.training.simulate`, the networks on real data in :mod:`phasediag.training.nonlinear`):

    linear       phi(z) = z                                   phi'(z) = 1
    relu         phi(z) = max(z, 0)                           phi'(z) = 1[z > 0]         (phi'(0) := 0)
    leaky_relu   phi(z) = z (z > 0),  slope z (z <= 0)         phi'(z) = 1 or slope       (phi'(0) := slope)
    tanh         phi(z) = tanh z                              phi'(z) = 1 - tanh^2 z
    sigmoid      phi(z) = sigma(z) = 1 / (1 + e^-z)              phi'(z) = sigma (1 - sigma)
    swish        phi(z) = z sigma(z)                          phi'(z) = sigma (1 + z (1 - sigma))

Each is evaluated to a few ulps relative to its value, tails included (where 1 - tanh^2, (1 + tanh(z/2))/2 or
1 - sigma would cancel, from exponentials instead), without overflow for any finite z.

``gain`` is the slope that a network of small weights sees, gamma = lim_{w -> 0} E[x phi(w x)] / (w E[x^2]) for a
symmetric input distribution: phi'(0) for the smooth ones (1, 1, 1/4, 1/2 for linear, tanh, sigmoid, swish) and
the mean of the two one-sided slopes for the kinked ones (1/2 for relu, (1 + slope)/2 for leaky_relu).

Population quadrature (docs/theory.md section 10). Expectations over x ~ N(0, a) are sums over Q nodes,
E[g(x)] ~= sum_q p_q g(x_q). Every unit's kink sits at x = 0 (there is no bias), so the rule is split at 0: on each
half-line x = +-sqrt(a) xi with xi in [0, XI_MAX], an n-point Gauss-Legendre rule with weights multiplied by the
standard normal density. For a g that is smooth on each half-line (every activation above, any weights) the rule
converges geometrically; the tail beyond XI_MAX = 12 standard deviations carries a probability below 4e-33.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from phasediag.config.rules import ACTIVATIONS, DEFAULT_NODES, DEFAULT_SLOPE, MAX_NODES, MIN_NODES

__all__ = ["ACTIVATIONS", "DEFAULT_SLOPE", "Activation", "activation", "Quadrature", "population_quadrature",
           "XI_MAX", "DEFAULT_NODES", "MIN_NODES", "MAX_NODES"]

XI_MAX = 12.0  # the quadrature covers |x| <= 12 sqrt(a)


class Activation(NamedTuple):
    """phi(z, out) writes phi(z) elementwise into `out` (float64, z's shape); dphi(z, h, out) writes phi'(z), given
    h = phi(z) (tanh and sigmoid reuse it)."""

    name: str
    slope: float
    phi: Callable[[np.ndarray, np.ndarray], np.ndarray]
    dphi: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    gain: float
    kinked: bool

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        return self.phi(z, np.empty_like(z))

    def derivative(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        return self.dphi(z, self(z), np.empty_like(z))


def _sigmoid(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """sigma(z) = (1 + tanh(z/2))/2, with the left tail (z < -2, where that sum cancels) as e^z / (1 + e^z)."""
    np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    np.add(out, 0.5, out=out)
    tail = z < -2.0
    if tail.any():
        e = np.exp(z[tail])
        out[tail] = e / (1.0 + e)
    return out


def _sigmoid_slope(z: np.ndarray, h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """sigma'(z) = h (1 - h) for h = sigma(z), with the right tail (z > 2, where 1 - h cancels) as
    e / (1 + e)^2, e = e^-z."""
    np.subtract(1.0, h, out=out)
    np.multiply(out, h, out=out)
    tail = z > 2.0
    if tail.any():
        e = np.exp(-z[tail])
        out[tail] = e / (1.0 + e) ** 2
    return out


def _functions(name: str, slope: float) -> tuple[Callable, Callable]:
    if name == "linear":
        def phi(z, out):
            np.copyto(out, z)
            return out

        def dphi(z, h, out):
            out.fill(1.0)
            return out
    elif name == "relu":
        def phi(z, out):
            return np.maximum(z, 0.0, out=out)

        def dphi(z, h, out):
            return np.greater(z, 0.0, out=out, casting="unsafe")
    elif name == "leaky_relu":
        def phi(z, out):
            np.multiply(z, slope, out=out)
            return np.maximum(z, out, out=out) if slope <= 1.0 else np.minimum(z, out, out=out)

        def dphi(z, h, out):
            out[...] = np.where(z > 0.0, 1.0, slope)
            return out
    elif name == "tanh":
        def phi(z, out):
            return np.tanh(z, out=out)

        def dphi(z, h, out):
            np.multiply(h, h, out=out)
            np.subtract(1.0, out, out=out)
            tail = out < 0.25  # |tanh z| > 0.87: 1 - h^2 cancels; there 4 e / (1 + e)^2 with e = e^-2|z|
            if tail.any():
                e = np.exp(-2.0 * np.abs(z[tail]))
                out[tail] = 4.0 * e / (1.0 + e) ** 2
            return out
    elif name == "sigmoid":
        phi = _sigmoid

        def dphi(z, h, out):
            return _sigmoid_slope(z, h, out)
    elif name == "swish":
        def phi(z, out):
            _sigmoid(z, out)
            return np.multiply(out, z, out=out)

        def dphi(z, h, out):
            # sigma(z) + z sigma'(z) (= sigma (1 + z (1 - sigma)), without the cancelling 1 - sigma)
            sigma = _sigmoid(z, np.empty_like(out))
            _sigmoid_slope(z, sigma, out)
            np.multiply(out, z, out=out)
            return np.add(out, sigma, out=out)
    else:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return phi, dphi


_GAINS = {"linear": 1.0, "relu": 0.5, "tanh": 1.0, "sigmoid": 0.25, "swish": 0.5}


def activation(name: str, slope: float = DEFAULT_SLOPE) -> Activation:
    """The activation called `name` (one of ACTIVATIONS); `slope` is leaky_relu's slope for z < 0 (finite, any
    sign; ignored by the others). Raises ValueError for an unknown name or a non-finite slope."""
    slope = float(slope)
    if not np.isfinite(slope):
        raise ValueError(f"slope must be finite, got {slope!r}")
    phi, dphi = _functions(name, slope)
    gain = (1.0 + slope) / 2.0 if name == "leaky_relu" else _GAINS[name]
    return Activation(name, slope if name == "leaky_relu" else 0.0, phi, dphi, gain, name in ("relu", "leaky_relu"))


class Quadrature(NamedTuple):
    """Nodes x (Q,) and probabilities p (Q,) with E[g(x)] ~= p @ g(x) for x ~ N(0, a); the first Q/2 nodes are
    the negative half-line (x < 0), the rest the positive one."""

    x: np.ndarray
    p: np.ndarray


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the n-point Gauss-Legendre rule on [-1, 1], by Newton's method on P_n (three-term
    recurrence) from Tricomi's initial guesses: accurate to a few ulps (numpy's leggauss, an eigenvalue method,
    leaves errors of ~1e-14 in the weights at n ~ 100)."""
    k = np.arange(1, n + 1)
    x = np.cos(np.pi * (k - 0.25) / (n + 0.5))
    for _ in range(100):
        p_prev, p = np.ones_like(x), x.copy()
        for j in range(2, n + 1):
            p_prev, p = p, ((2 * j - 1) * x * p - (j - 1) * p_prev) / j
        derivative = n * (x * p - p_prev) / (x * x - 1.0)
        step = p / derivative
        x = x - step
        if np.max(np.abs(step)) < 1e-16:
            break
    p_prev, p = np.ones_like(x), x.copy()
    for j in range(2, n + 1):
        p_prev, p = p, ((2 * j - 1) * x * p - (j - 1) * p_prev) / j
    derivative = n * (x * p - p_prev) / (x * x - 1.0)
    weights = 2.0 / ((1.0 - x * x) * derivative * derivative)
    return x[::-1].copy(), weights[::-1].copy()


def population_quadrature(input_var: float, nodes: int = DEFAULT_NODES) -> Quadrature:
    """The split Gauss-Legendre rule of the module docstring: `nodes` per half-line (2 `nodes` in all) for
    x ~ N(0, input_var). Exact for the total probability to rounding (p sums to 1 - 4e-33)."""
    nodes = int(nodes)
    if nodes < 2:
        raise ValueError(f"nodes must be >= 2, got {nodes}")
    t, weights = _gauss_legendre(nodes)
    xi = 0.5 * XI_MAX * (t + 1.0)
    p = 0.5 * XI_MAX * weights * np.exp(-0.5 * xi * xi) / np.sqrt(2.0 * np.pi)
    scale = np.sqrt(float(input_var))
    x = np.concatenate([-scale * xi[::-1], scale * xi])
    return Quadrature(x=x, p=np.concatenate([p[::-1], p]))
