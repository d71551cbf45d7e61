"""Counter-based random numbers: every draw is a pure function of (seed, index, stream, counter).

A sweep point's random initialization must not depend on how the grid is chunked, sharded or spread over
workers, and creating a numpy Generator per point is too slow for 1e7-point grids. So uniforms come from a
64-bit hash (the splitmix64 finalizer) of the point's coordinates, and normals and chi-squares are exact
transforms of them (Box-Muller; Marsaglia-Tsang rejection with per-point attempt counters).
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ODD = np.uint64(0xD1B54A32D192ED03)
_MAX_ATTEMPTS = 200  # Marsaglia-Tsang accepts with probability > 0.95 per attempt


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijective, well-mixing map of uint64 arrays (wraps modulo 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _check_seed(seed: int) -> np.uint64:
    seed = int(seed)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2^63), got {seed}")
    return np.uint64(seed)


def uniform(seed: int, index: np.ndarray, stream: int, counter) -> np.ndarray:
    """Uniform(0, 1) draws (never exactly 0 or 1), one per element of `index`.

    `index` (int64 >= 0) is the point, `stream` names the quantity, `counter` numbers successive draws.
    """
    index = np.atleast_1d(np.asarray(index, dtype=np.int64)).astype(np.uint64)
    counter = np.atleast_1d(np.asarray(counter, dtype=np.int64)).astype(np.uint64)
    key = _mix(np.full(1, _check_seed(seed)) + _GOLDEN)
    x = _mix(key ^ (index * _ODD))
    x = _mix(x + (np.uint64(stream) * np.uint64(2**32) + counter) * _GOLDEN)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _normal_from(seed: int, index: np.ndarray, stream: int, counter) -> np.ndarray:
    """Box-Muller from two uniforms at counters 2k and 2k+1."""
    u1 = uniform(seed, index, stream, 2 * counter)
    u2 = uniform(seed, index, stream, 2 * counter + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def standard_normal(seed: int, index, stream: int) -> np.ndarray:
    """One N(0, 1) draw per point, shaped like `index`."""
    index = np.asarray(index, dtype=np.int64)
    return _normal_from(seed, index.ravel(), stream, 0).reshape(index.shape)


def _log1p_minus_x(y: np.ndarray) -> np.ndarray:
    """log(1 + y) - y without cancellation for small |y| (series below 0.01, direct above)."""
    small = np.abs(y) < 0.01
    ys = np.where(small, y, 0.0)
    series = np.zeros_like(ys)
    for k in range(12, 1, -1):  # -y^2/2 + y^3/3 - ... to relative 1e-20
        series = ys * ((-1.0) ** (k + 1) / k + series)
    series = ys * series
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = np.log1p(np.where(small, 0.0, y)) - np.where(small, 0.0, y)
    return np.where(small, series, direct)


def _gamma_at_least_one(shape: np.ndarray, seed: int, index: np.ndarray, stream: int) -> np.ndarray:
    """Gamma(shape, 1) for shape >= 1 by Marsaglia-Tsang; exact at any shape (1e15 included).

    Attempt k of a point uses normal counter k (stream) and uniform counter k (stream + 1), so a point's
    value never depends on which other points are drawn with it.
    """
    d = shape - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    out = np.empty_like(shape)
    pending = np.arange(shape.size)
    for attempt in range(_MAX_ATTEMPTS):
        idx = index[pending]
        x = _normal_from(seed, idx, stream, attempt)
        u = uniform(seed, idx, stream + 1, attempt)
        y = c[pending] * x
        ok = y > -1.0
        y_safe = np.where(ok, y, 0.0)
        # log acceptance: x^2/2 + d (1 - v + log v) with v = (1 + y)^3, written to avoid cancellation
        log_accept = 0.5 * x * x + d[pending] * (
            3.0 * _log1p_minus_x(y_safe) - y_safe * y_safe * (3.0 + y_safe)
        )
        accept = ok & (np.log(u) < log_accept)
        chosen = pending[accept]
        out[chosen] = d[chosen] * (1.0 + y_safe[accept]) ** 3
        pending = pending[~accept]
        if pending.size == 0:
            return out
    raise RuntimeError("gamma sampler did not accept within the attempt limit")  # pragma: no cover


def chi_square(df, seed: int, index, stream: int) -> np.ndarray:
    """One chi^2_df draw per point (df > 0, any size), shaped like the broadcast of df and index.

    Uses 4 consecutive stream numbers starting at 4 * stream.
    """
    df, index = np.broadcast_arrays(np.asarray(df, dtype=float), np.asarray(index, dtype=np.int64))
    shape_out = df.shape
    half = df.ravel() / 2.0
    idx = index.ravel()
    base = 4 * stream + 16  # keep clear of the streams used by standard_normal
    boosted = half < 1.0  # Gamma(k) = Gamma(k + 1) U^(1/k) for k < 1
    g = _gamma_at_least_one(np.where(boosted, half + 1.0, half), seed, idx, base)
    if np.any(boosted):
        u = uniform(seed, idx, base + 2, 0)
        with np.errstate(divide="ignore"):
            g = np.where(boosted, g * np.exp(np.log(u) / np.where(boosted, half, 1.0)), g)
    return (2.0 * g).reshape(shape_out)
