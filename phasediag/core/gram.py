"""Initial state of the network: the Gram entries (U, W, V) and determinant G (docs/theory.md section 2).

The gradient flow depends on the initial weights only through U = |u0|^2, W = |w0|^2, V = u0.w0, so a point
of any width costs O(1). G = U W - V^2 is carried separately: forming it by subtraction loses every digit
for nearly parallel layers, and a sample has it exactly as sigma_u^2 sigma_w^2 c1^2 c2^2.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.core._rng import chi_square, standard_normal


class Gram(NamedTuple):
    """Initial Gram entries of (u0, w0); arrays that broadcast together.

    U = |u0|^2, W = |w0|^2, V = u0 . w0 and G = U W - V^2 >= 0 (Gram determinant).
    """

    U: np.ndarray
    W: np.ndarray
    V: np.ndarray
    G: np.ndarray


_SPLIT = 134217729.0  # 2^27 + 1: Veltkamp splitting constant for float64


def _exact_scale(a: np.ndarray) -> bool:
    """a is one number, a power of two >= 1 (or 0): a * b is then exact for every finite b (no rounding, and
    no underflow since |a b| >= |b|), the common case of unit learning rates and output scale."""
    if a.ndim != 0 or not np.isfinite(a):
        return False
    return bool(a == 0 or (abs(a) >= 1 and np.frexp(a)[0] in (0.5, -0.5)))


def two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dekker's error-free product: a * b == p + e exactly (barring over/underflow). e is a 0-d zero when one
    factor is a scalar power of two >= 1 (the product is then exact)."""
    for one, other in ((a, b), (b, a)):
        if np.ndim(one) == 0 and one == 1.0:  # a unit rate or output scale: nothing to multiply
            return np.asarray(other), np.zeros(())
        if np.ndim(one) == 0 and one == 0.0 and np.all(np.isfinite(other)):  # V = 0 (typical init): kappa V = 0
            return np.zeros(()), np.zeros(())
    p = a * b
    if _exact_scale(np.asarray(a)) or _exact_scale(np.asarray(b)):
        return p, np.zeros(())
    ca = _SPLIT * a
    a_hi = ca - (ca - a)
    a_lo = a - a_hi
    cb = _SPLIT * b
    b_hi = cb - (cb - b)
    b_lo = b - b_hi
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def difference_of_products(a, b, c, d) -> np.ndarray:
    """a*b - c*d to about one rounding of the result, even under heavy cancellation."""
    p1, e1 = two_product(np.asarray(a, float), np.asarray(b, float))
    p2, e2 = two_product(np.asarray(c, float), np.asarray(d, float))
    return (p1 - p2) + (e1 - e2)


def explicit_gram(U, W, V) -> Gram:
    """A given Gram (U, W, V); G = U W - V^2 evaluated error-free and clipped at 0.

    The caller validates V^2 <= U W (to rounding); a tiny negative G from rounding becomes 0. Entries so large
    that G overflows raise FloatingPointError.
    """
    U, W, V = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (U, W, V)))
    with np.errstate(over="raise", invalid="raise"):  # beyond float range: an error, never a warning and inf
        G = np.maximum(difference_of_products(U, W, V, V), 0.0)
    return Gram(U, W, V, G)


def typical_gram(width, init_var_u, init_var_w) -> Gram:
    """The deterministic large-width idealization: U = d sigma_u^2, W = d sigma_w^2, V = 0, G = U W."""
    width, init_var_u, init_var_w = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (width, init_var_u, init_var_w))
    )
    with np.errstate(over="raise", invalid="raise"):  # beyond float range: an error, never a warning and inf
        U = width * init_var_u
        W = width * init_var_w
        return Gram(U, W, np.zeros(()), U * W)  # V = 0 for every point: a 0-d zero broadcasts (and costs nothing)


def sample_gram(width, init_var_u, init_var_w, seed: int, index=0) -> Gram:
    """Exact sample of the Gram of u0 ~ N(0, sigma_u^2 I_d), w0 ~ N(0, sigma_w^2 I_d) (Bartlett).

    With c1^2 ~ chi^2_d, c2^2 ~ chi^2_{d-1} (0 at d = 1) and n ~ N(0, 1) independent:
        U = sigma_u^2 c1^2,  V = sigma_u sigma_w c1 n,  W = sigma_w^2 (n^2 + c2^2),  G = sigma_u^2 sigma_w^2 c1^2 c2^2.
    Each point's draw depends only on (seed, index) through a counter-based stream, so a grid gives the same
    values however it is chunked, sharded or ordered. `index` is an integer array (the flat grid index).
    """
    width, init_var_u, init_var_w, index = np.broadcast_arrays(
        np.asarray(width, dtype=float),
        np.asarray(init_var_u, dtype=float),
        np.asarray(init_var_w, dtype=float),
        np.asarray(index, dtype=np.int64),
    )
    return scaled_gram(init_var_u, init_var_w, unit_draws(width, seed, index))


class UnitDraws(NamedTuple):
    """The variance-free part of a sampled Gram (`sample_gram`): c1^2 ~ chi^2_d, c2^2 ~ chi^2_{d-1} (0 at
    d = 1), n ~ N(0, 1); arrays of one shape."""

    c1_sq: np.ndarray
    c2_sq: np.ndarray
    n: np.ndarray


def unit_draws(width, seed: int, index) -> UnitDraws:
    """The draws of `sample_gram` at (width, seed, index), for any variances (`scaled_gram`)."""
    width, index = np.broadcast_arrays(np.asarray(width, dtype=float), np.asarray(index, dtype=np.int64))
    c1_sq = chi_square(width, seed, index, stream=0)
    c2_sq = np.where(width > 1, chi_square(np.maximum(width - 1, 1.0), seed, index, stream=1), 0.0)
    return UnitDraws(c1_sq, c2_sq, standard_normal(seed, index, stream=2))


def scaled_gram(init_var_u, init_var_w, draws: UnitDraws) -> Gram:
    """The sampled Gram of `draws` at variances sigma_u^2, sigma_w^2 (bit for bit what `sample_gram` gives)."""
    c1_sq, c2_sq, n = draws
    with np.errstate(over="raise", invalid="raise"):  # beyond float range: an error, never a warning and inf
        sigma_uw = np.sqrt(init_var_u) * np.sqrt(init_var_w)
        U = init_var_u * c1_sq
        V = sigma_uw * np.sqrt(c1_sq) * n
        W = init_var_w * (n * n + c2_sq)
        G = (init_var_u * init_var_w) * (c1_sq * c2_sq)
    return Gram(U, W, V, G)
