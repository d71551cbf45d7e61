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


def stall_limit(st: State, k: Flat, stalled: np.ndarray) -> None:
    """In place, on arrays: the end state of every `stalled` run set to its exact limit (docs/theory.md section
    9), whichever step decided it. The nonzero one of alpha, beta decays to 0 (by (1 - c r)^2 per step) and the
    other stays 0, so m = 0 and delta = -m* exactly; G = Delta = 0 on the saddle, where P is not carried."""
    at = np.flatnonzero(stalled)
    st.alpha[at], st.beta[at], st.slope[at] = 0.0, 0.0, 0.0
    st.delta[at] = -k.m_star[at]


def is_settled(st: State, k: Flat) -> np.ndarray:
    """m = m* to a few roundings, or so close that a step (relative change 2 c a |m - m*| of alpha and
    beta) no longer moves alpha and beta in float64: float GD has stopped."""
    gap = np.abs(st.delta)
    return (gap <= 4.0 * EPS * (st.alpha + st.beta + np.abs(k.m_star))) | (2.0 * k.c * k.a * gap <= EPS)


# -- the exact tail of a converging run (docs/theory.md section 9, "End of a converging run") --------------
# In y = a c (m - m*) (= c r), T = a c (alpha + beta) and mu = a c m*, L = sum over the remaining steps of
# ln(1 - y_j^2) obeys L(y, T) = ln(1 - y^2) + L(y', T'), so L = sum_n l_n(T; mu) y^n with l_n (1 - (1 - 2T)^n)
# given by the lower orders. Coefficients (numerators as polynomials in T, lowest power first, for the mu^0
# and mu^2 parts of l_4, the mu^1 and mu^3 parts of l_5):
_L4_NUM = ((18, -171, 750, -1944, 3218, -3464, 2360, -928, 160),  # mu^0 part, times T^2
           (18, -183, 859, -2444, 4639, -6060, 5340, -2880, 720))  # mu^2 part
_L5_NUM = ((-378, 7110, -65091, 384672, -1641652, 5363092, -13870948, 28966448, -49352312, 68841376, -78426304,
            72373440, -53306496, 30607616, -13200384, 4020224, -770048, 69632),  # mu^1 part, times T^2
           (-270, 5220, -49086, 297870, -1305457, 4383044, -11672890, 25195088, -44655300, 65439936, -79403856,
            79420240, -64712192, 42024960, -20962816, 7543808, -1741824, 193536))  # mu^3 part
#: the tail is taken once the first omitted term, |l_5 y^5| times a safety factor, is below this
TAIL_TOLERANCE = 1e-17
_TAIL_SAFETY = 8.0
#: and only while |y| <= this times min(T, 1 - T), T in [TAIL_T_MIN, 1 - TAIL_T_MIN] (away from the poles
#: of the l_n at T = 0 and T = 1; a slower run steps until `is_settled`)
_TAIL_GUARD = 0.05
TAIL_T_MIN = 1e-3
#: sup over 0 < T < 1, |mu| <= T of |l_5| / (max(|mu|, T) (T^2 + mu^2) / (T^7 (1 - T)^4)): 1/8, approached as
#: T -> 1 (0.1240 at T = 0.999, 0.0746 at T = 0.001); rounded up (tests/test_gd_tail.py)
L5_BOUND = 0.13


def tail_ready(st: State, k: Flat):
    """Where the series of L truncated after y^4 is exact to float64: the first omitted term, by the bound
    |l_5| <= L5_BOUND max(|mu|, T) (T^2 + mu^2) / (T^7 (1 - T)^4) (the mu of max(|mu|, T) also covers l_6 when
    mu is small) times a safety factor, is below TAIL_TOLERANCE, and |y| <= _TAIL_GUARD min(T, 1 - T) with T in
    [TAIL_T_MIN, 1 - TAIL_T_MIN], away from the poles of the l_n. Also every point at m = m* exactly (L = 0,
    nothing moves any more). Checked at every step of a run decided to converge."""
    ac = k.a * k.c
    y = np.abs(ac * st.delta)
    T = ac * (st.alpha + st.beta)
    mu = ac * k.m_star
    Tc = np.minimum(np.maximum(T, TAIL_T_MIN), 1.0 - TAIL_T_MIN)
    u = 1.0 - Tc
    T2, u2 = Tc * Tc, u * u
    mu_c = np.minimum(np.abs(mu), 1.0)  # (|mu| < T < 1 where converging)
    y_c = np.minimum(y, 1.0)
    y2 = y_c * y_c
    # the bound times y^5 below the tolerance, multiplied out (no division: this runs at every step)
    term = _TAIL_SAFETY * L5_BOUND * np.maximum(mu_c, Tc) * (T2 + mu_c * mu_c) * (y2 * y2 * y_c)
    ok = ((T == Tc) & (y <= _TAIL_GUARD * np.minimum(Tc, u)) & (np.abs(mu) <= 1.0)
          & (term < TAIL_TOLERANCE * ((T2 * T2 * T2 * Tc) * (u2 * u2))))
    return ok | (st.delta == 0)


def _poly(coefficients, x):
    out = np.full(np.shape(x), float(coefficients[-1]))
    for c in coefficients[-2::-1]:
        out = out * x + c
    return out


def tail_terms(T, mu, fifth: bool = False):
    """(l_2, l_3, l_4) of the series of L at T, mu (0 < T < 1), and l_5 with `fifth` (the first omitted term,
    which `tail_ready` bounds)."""
    t1 = T - 1.0
    q3 = (4.0 * T - 6.0) * T + 3.0  # (1 - rho^3) / (2T), rho = 1 - 2T
    q4 = (2.0 * T - 2.0) * T + 1.0  # (1 - rho^4) / (8 T (1 - T)) ...
    mu2 = mu * mu
    T2 = T * T
    l2 = 0.25 / (T * t1)
    l3 = mu * (2.0 * T - 1.0) * ((3.0 * T - 3.0) * T + 1.0) / (4.0 * T2 * T * t1 * t1 * q3)
    l4 = ((T2 * _poly(_L4_NUM[0], T) + mu2 * _poly(_L4_NUM[1], T))
          / (32.0 * T2 * T2 * T * t1 * t1 * t1 * q4 * q3 * q3))
    if not fifth:
        return l2, l3, l4
    q5 = (((16.0 * T - 40.0) * T + 40.0) * T - 20.0) * T + 5.0  # (1 - rho^5) / (2T)
    l5 = (mu * (T2 * _poly(_L5_NUM[0], T) + mu2 * _poly(_L5_NUM[1], T))
          / (32.0 * (T2 * T2 * T2 * T) * (t1 * t1) * (t1 * t1) * (q4 * q4) * (q3 * q3 * q3) * q5))
    return l2, l3, l4, l5


def tail_end(st: State, k: Flat) -> State:
    """The end of training from a state where `tail_ready` holds: m = m*, and with the remaining
    L = l_2 y^2 + l_3 y^3 + l_4 y^4, alpha_inf beta_inf = alpha beta e^(2L), alpha_inf - beta_inf = m*,
    P_inf = P e^L. The larger of alpha_inf, beta_inf is (s_inf + |m*|)/2 with s_inf = hypot(m*, 2 h),
    h = sqrt(alpha beta) e^L, the smaller h (h / larger): no cancellation, and exactly 0 when alpha beta = 0.
    Arrays only, and always evaluated by numpy (the compiled loop hands its ready points back): numpy's exp
    and libm's differ in the last bit for ~5 % of arguments."""
    ac = k.a * k.c
    y = ac * st.delta
    T = ac * (st.alpha + st.beta)
    fixed = st.delta == 0
    safe_T = np.where(fixed, 0.5, T)  # at m = m* (even an unstable minimum, T > 1) nothing moves: L = 0
    l2, l3, l4 = tail_terms(safe_T, ac * k.m_star)
    L = np.where(fixed, 0.0, (y * y) * (l2 + y * (l3 + y * l4)))
    e = np.exp(L)
    h = np.sqrt(st.alpha) * np.sqrt(st.beta) * e
    larger = 0.5 * (np.hypot(k.m_star, 2.0 * h) + np.abs(k.m_star))
    smaller = h * (h / larger)
    up = k.m_star > 0
    alpha = np.where(fixed, st.alpha, np.where(up, larger, smaller))
    beta = np.where(fixed, st.beta, np.where(up, smaller, larger))
    scale = np.where(k.g0 > 0, st.scale * e, st.scale)
    return State(alpha, beta, np.zeros_like(st.delta), scale, k.m_star.copy())  # (delta = 0: m = m* exactly)
