"""The per-point rules of exact GD (docs/theory.md section 9), written once for arrays and for scalars.

Only arithmetic, comparisons, & | ~ and `select` are used, so core/gd.py runs them vectorized over many
points and core/_gd_jit.py compiles the same functions (numba) for one point at a time.

The outcome of a run is decided per point with early stopping:

- diverges: alpha + beta exceeds 1e12 times max(s0, Q, 1/(a c)) (a converging catapult peaks near 1/(a c));
- converges / catapult: a certificate that the loss never rises again and m -> m* holds (below), or m = m*
  exactly (a step can land on a minimum, e.g. a Theta0 = 1 at m0 = 0); catapult if the loss ever exceeded its
  initial value, converges otherwise;
- stalls: the g = 0 saddle (m0 m* <= 0) decaying to m = 0 (certified: |1 - c r| < 1 from here on);
- oscillates: certified bounded for ever and never converging (below, (C)); or, uncertified, none of the
  other outcomes within `max_steps`.

Certificates (delta = |m - m*|, r = a(m - m*)): since m' - m* = (m - m*)(1 - a Theta + a c^2 r m),
(A) delta < |m*|, c|r| < 1 and, with Theta between 2c(|m*| - delta) and 2c hypot(|m*| + delta, g),
    0 < a Theta - a^2 c^2 delta (|m*| + delta) and a Theta + a^2 c^2 delta (|m*| + delta) < 2: |r| contracts
    geometrically for ever (g cannot grow while c|r| < 1);
(B) off the saddle, c a delta < 1 and 2 a c hypot(M, g) + a^2 c^2 delta M < 1 with M = max(|m|, |m*|): m moves
    monotonically to m* like the flow (no overshoot), e.g. through a small-initialization plateau.
(C) oscillation, in A = a c alpha, B = a c beta, mu = a c m* > 1 (mu < -1: the same with A, B swapped), where
    y = A - B - mu and A' = A (1 - y)^2 = f_B(A) := A (1 + mu + B - A)^2, B' = B (1 + y)^2, A'B' = A B (1 - y^2)^2.
    With p >= A B, lo <= A <= hi and b >= p / lo, the set S = {lo <= A <= hi, B >= 0, A B <= p} maps into
    itself when hi >= 4 (1 + mu + b)^3 / 27 (the largest value of f_b), hi <= 1 + mu (so f_B >= f_0 there,
    and f_0 is unimodal), lo <= min(mu, f_0(hi)) (the least of f_0 on [lo, hi] is at an end, f_0(lo) >= lo
    for lo <= mu), and |y| <= sqrt 2 on S (mu + b - lo <= sqrt 2, hi - mu <= sqrt 2: A B cannot grow).
    Bounded for ever, so it never diverges; and it cannot converge: every minimum (A - B = mu) has
    T = A + B = sqrt(mu^2 + 4 A B) > 1, where y' = y (1 - 2T + ...) pushes away (|1 - 2T| > 1); only a run that
    lands exactly on a minimum would, a set of starts of measure zero that is not sought. Margins of 1e-9
    (1e-6 on A B) keep the inequalities clear of float64 rounding. It holds from a few steps on for the
    oscillating runs of configs/7_gd_lr_vs_width.yaml (1 < mu < 1.34, orbits drawn to B = 0).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.core.flow import Invariants

GD_OUTCOMES = ("converges", "catapult", "diverges", "oscillates", "stalls")
GD_CODE = {name: code for code, name in enumerate(GD_OUTCOMES)}
UNDECIDED = -1
# the codes as plain constants: the rules also run compiled, where a dict cannot be read
CONVERGES, CATAPULT, DIVERGES, OSCILLATES, STALLS = (
    GD_CODE[name] for name in ("converges", "catapult", "diverges", "oscillates", "stalls"))
EPS = float(np.finfo(float).eps)
DIVERGENCE_FACTOR = 1e12
CHECK_EVERY = 16


class Flat(NamedTuple):
    """Point constants flattened to 1-D for the step loop."""

    a: np.ndarray
    c: np.ndarray
    m_star: np.ndarray
    g0: np.ndarray
    saddle: np.ndarray
    bound: np.ndarray


class State(NamedTuple):
    """The exact GD state: alpha, beta >= 0, delta = m - m*, Gram scale P, and the slope m itself (each of
    m and delta carried in the form that rounds least, see `advance`)."""

    alpha: np.ndarray
    beta: np.ndarray
    delta: np.ndarray
    scale: np.ndarray
    slope: np.ndarray

    def take(self, index) -> "State":
        return State(*(x[index] for x in self))


def flatten(inv: Invariants) -> tuple[Flat, State, tuple]:
    shape = np.broadcast_shapes(inv.c.shape, inv.alpha0.shape, inv.teacher.shape, inv.gap.shape)

    def flat(x):
        return np.broadcast_to(x, shape).ravel().astype(float)

    a, c, m_star = flat(inv.input_var), flat(inv.c), flat(inv.teacher)
    s0, Q = flat(inv.s0), flat(inv.Q)
    with np.errstate(over="raise", divide="raise"):  # beyond float range: an error, as the steps themselves
        bound = DIVERGENCE_FACTOR * np.maximum(np.maximum(s0, Q), 1.0 / (a * c))
    consts = Flat(a, c, m_star, flat(inv.g), np.broadcast_to(inv.saddle, shape).ravel(), bound)
    start = State(flat(inv.alpha0), flat(inv.beta0), -flat(inv.gap), np.ones(a.size), flat(inv.m0))
    return consts, start, shape


#: how much more accurate (by its error bound) the delta recurrence must be than delta = (alpha - beta) - m*
#: to be taken (two bits: on the oscillating orbits the two bounds are within 2x of each other)
RECURRENCE_GAIN = 4.0


def advance(st: State, k: Flat) -> State:
    """One exact GD step. delta' is taken from whichever form rounds less: delta times its factor
    (cancels when a Theta ~ 1 + ..., e.g. a step that lands near m*) or (alpha' - beta') - m*. So is m':
    alpha' - beta' (cancels when alpha ~ beta), m* + delta' (cancels when m is small next to m*: small
    initialization), or m's own update m (1 + (c r)^2) - r Theta, r = a delta (cancels when a step reverses
    m). Each form's rounding error is proportional to the size of the terms it combines."""
    cr = k.c * k.a * st.delta
    ntk = 2.0 * k.c * (st.alpha + st.beta)
    m = st.slope
    growth = k.a * k.c * cr * m
    factor = (1.0 - k.a * ntk) + growth
    alpha = st.alpha * (1.0 - cr) ** 2
    beta = st.beta * (1.0 + cr) ** 2
    # The recurrence's error accumulates from step to step, unchecked by alpha and beta (on a stable
    # oscillating orbit it drifted off the orbit linearly: 8e-2 after 979 steps at width 1); the direct form
    # keeps delta tied to alpha - beta, so the map inherits the true map's stability. The recurrence is taken
    # only where its error bound is RECURRENCE_GAIN times smaller (alpha ~ beta >> |delta|: cancellation).
    delta = best((((alpha - beta) - k.m_star, alpha + beta + np.abs(k.m_star)),
                   (st.delta * factor, RECURRENCE_GAIN * np.abs(st.delta) * (1.0 + k.a * ntk + np.abs(growth)))))
    shrink = (1.0 - cr) * (1.0 + cr)
    spread, pull = 1.0 + cr * cr, (k.a * st.delta) * ntk  # m' = m (1 + (c r)^2) - r Theta
    slope = best(((alpha - beta, alpha + beta),
                   (k.m_star + delta, np.abs(k.m_star) + np.abs(delta)),
                   (m * spread - pull, np.abs(m) * spread + np.abs(pull))))
    # P only matters where g > 0 (else G = Delta = 0 and P could grow without bound)
    return State(alpha, beta, delta, select(k.g0 > 0, st.scale * shrink, st.scale), slope)


def select(condition, if_true, if_false):
    """np.where (compiled: a branch on scalars)."""
    return np.where(condition, if_true, if_false)


def best(candidates):
    """The value of the (value, size of the terms it combines) pair with the smallest size (the first on ties)."""
    value, size = candidates[0]
    for other, other_size in candidates[1:]:
        better = other_size < size
        value, size = select(better, other, value), select(better, other_size, size)
    return value


def decide(st: State, k: Flat, loss_ratio):
    """Outcome code of each point at the current state, or UNDECIDED."""
    a, c, m_star = k.a, k.c, k.m_star
    s = st.alpha + st.beta
    m = st.slope
    delta = np.abs(st.delta)
    g = k.g0 * np.abs(st.scale)
    cr = c * a * delta
    wobble = (a * c) ** 2 * delta * (np.abs(m_star) + delta)
    cert_a = (
        (delta < np.abs(m_star)) & (cr < 1.0)
        & (2.0 * a * c * (np.abs(m_star) - delta) - wobble > 0.0)
        & (2.0 * a * c * np.hypot(np.abs(m_star) + delta, g) + wobble < 2.0)
    )
    big_m = np.maximum(np.abs(m), np.abs(m_star))
    cert_b = ~k.saddle & (cr < 1.0) & (2.0 * a * c * np.hypot(big_m, g) + (a * c) ** 2 * delta * big_m < 1.0)
    stall = k.saddle & (((c * a * (np.abs(m) + np.abs(m_star)) < 2.0) & (m * m_star <= 0)) | (s == 0))
    converging = cert_a | cert_b | (st.delta == 0)  # delta = 0: a fixed point, even an unstable one
    out = select(oscillating(st, k), OSCILLATES, UNDECIDED)  # (excludes (A), (B); not delta = 0)
    out = select(converging, select(loss_ratio > 1.0, CATAPULT, CONVERGES), out)
    out = select(stall, STALLS, out)
    return select(~np.isfinite(s) | (s > k.bound), DIVERGES, out)


#: relative margins of certificate (C), far above float64 rounding
_MARGIN, _PRODUCT_MARGIN = 1e-9, 1e-6
_SQRT2 = float(np.sqrt(2.0))


def oscillating(st: State, k: Flat):
    """Certificate (C): the run stays in a bounded set S for ever and cannot converge. Every operand is
    clamped first (the certificate needs |mu| < 2, A and B below 4, b <= 1), so nothing overflows."""
    ac = k.a * k.c
    mu = ac * k.m_star
    up = mu > 0
    big = np.minimum(ac * select(up, st.alpha, st.beta), 4.0)  # A for mu > 0, B for mu < 0
    small = np.minimum(ac * select(up, st.beta, st.alpha), 4.0)
    size = np.minimum(np.abs(mu), 2.0)
    p = big * small * (1.0 + _PRODUCT_MARGIN)
    top = 4.0 / 27.0 * (1.0 + size) ** 3  # hi with b = 0; f_0(x) = x (1 + mu - x)^2 below
    lo0 = np.minimum(size, top * (1.0 + size - top) ** 2)
    b = np.minimum(2.0 * p / np.maximum(lo0, 0.01), 1.0)
    hi = 4.0 / 27.0 * (1.0 + size + b) ** 3 * (1.0 + _MARGIN)
    lo = np.minimum(size, hi * (1.0 + size - hi) ** 2) * (1.0 - _MARGIN)
    return ((np.abs(mu) > 1.0) & (np.abs(mu) < 2.0) & (lo0 > 0.01) & (lo > 0.0) & (p <= b * lo) & (b < 1.0)
            & (hi <= (1.0 + size) * (1.0 - _MARGIN)) & (hi - size <= _SQRT2 * (1.0 - _MARGIN))
            & (size + b - lo <= _SQRT2 * (1.0 - _MARGIN)) & (big >= lo) & (big <= hi) & (small < 4.0))


def stops(code):
    """Outcomes that end a run where decided (the others, converging, step on until settled)."""
    return (code == STALLS) | (code == OSCILLATES) | (code == DIVERGES)


def is_settled(st: State, k: Flat) -> np.ndarray:
    """m = m* to a few roundings, or so close that a step (relative change 2 c a |m - m*| of alpha and
    beta) no longer moves alpha and beta in float64: float GD has stopped."""
    gap = np.abs(st.delta)
    return (gap <= 4.0 * EPS * (st.alpha + st.beta + np.abs(k.m_star))) | (2.0 * k.c * k.a * gap <= EPS)
