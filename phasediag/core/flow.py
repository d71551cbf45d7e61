"""Exact gradient-flow solution of the two-layer linear network (docs/theory.md sections 3-5).

Every function takes arrays that broadcast together and returns arrays of the broadcast shape; a time `t`
(in steps: the learning rates carry the step size) may be an array and may contain `np.inf`.

Formulation. With p = u/sqrt(eta_u), q = w/sqrt(eta_w) the flow is d(p +- q)/dt = -+ c r (p +- q), so the
two positive numbers alpha = c|p + q|^2/4 and beta = c|p - q|^2/4 carry the whole state:
    m = alpha - beta,  Theta = 2c (alpha + beta),  alpha beta = g^2/4 (conserved).
alpha obeys the logistic-type Riccati equation d alpha/dt = -2ca (alpha - alpha_inf)(alpha + beta_inf), solved
exactly as a ratio of two positive sums (no cancellation anywhere), with E = exp(-lambda t),
D = 1 - E = -expm1(-lambda t), lambda = 2 c a Q, and Dq = D / Q (-> 2 c a t as Q -> 0):
    alpha(t) = [alpha0 (a_hat + b_hat E) + h Dq] / [alpha0 Dq + b_hat + a_hat E],
where a_hat = alpha_inf/Q, b_hat = beta_inf/Q, h = g^2/4; beta(t) is the mirror image (alpha <-> beta,
m -> -m). Differences such as m - m*, Theta/Theta0 - 1 and the t_learn inversion are written as products of
positive factors, so every output keeps ~1e-14 relative accuracy (docs/theory.md section 8).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.core.gram import Gram, two_product, difference_of_products


class Problem(NamedTuple):
    """One point (or a grid) of hyperparameter space: everything the dynamics depend on.

    output_scale kappa > 0, lr_u eta_u > 0, lr_w eta_w > 0, input_var a = E[x^2] > 0, teacher m* = b/a,
    gram: the initial Gram (U, W, V, G) (width enters only through it).
    """

    output_scale: np.ndarray
    lr_u: np.ndarray
    lr_w: np.ndarray
    input_var: np.ndarray
    teacher: np.ndarray
    gram: Gram


class Invariants(NamedTuple):
    """Conserved and derived quantities of a Problem (all arrays of the broadcast shape).

    c = kappa sqrt(eta_u eta_w); c2 = c^2; ntk_imbalance = c^2 Delta = kappa^2 (eta_w U - eta_u W)
    (the conserved difference of the two layers' NTK contributions); g = sqrt(kappa^2 (eta_u eta_w Delta^2/4 + G));
    h = g^2/4 = alpha beta; m0 = kappa V; s0 = hypot(m0, g) = Theta0/(2c); Q = hypot(m*, g) = Theta_inf/(2c);
    alpha0, beta0 = (s0 +- m0)/2; alpha_inf, beta_inf = (Q +- m*)/2; a_hat, b_hat = alpha_inf/Q, beta_inf/Q
    (1/2 each when Q = 0); rate = lambda = 2 c a Q (final exponential rate, 1/steps); saddle: g = 0 and
    m0 m* <= 0 (m can never reach m*); gap = m* - kappa V and m0_lo = kappa V - m0 from an error-free
    product, so m* - m0 stays accurate when m0 ~ m*; kappa_sqrt_g = kappa sqrt(G) (zeta = m / hypot(m, it)).
    """

    output_scale: np.ndarray
    lr_u: np.ndarray
    lr_w: np.ndarray
    input_var: np.ndarray
    teacher: np.ndarray
    gram: Gram
    c: np.ndarray
    c2: np.ndarray
    ntk_imbalance: np.ndarray
    g: np.ndarray
    h: np.ndarray
    m0: np.ndarray
    s0: np.ndarray
    Q: np.ndarray
    alpha0: np.ndarray
    beta0: np.ndarray
    alpha_inf: np.ndarray
    beta_inf: np.ndarray
    a_hat: np.ndarray
    b_hat: np.ndarray
    rate: np.ndarray
    saddle: np.ndarray
    gap: np.ndarray
    m0_lo: np.ndarray
    kappa_sqrt_g: np.ndarray

    @property
    def ntk_init(self) -> np.ndarray:
        """Theta0 = kappa^2 (eta_w U + eta_u W) = 2 c s0."""
        return 2.0 * self.c * self.s0


class FlowState(NamedTuple):
    """State at time t: end-to-end slope m, NTK Theta, alignment zeta = cos(u, w), squared layer norms,
    excess loss a (m - m*)^2 / 2, and the frozen-NTK (kernel) prediction m_lin (`kernel_prediction`)."""

    m: np.ndarray
    ntk: np.ndarray
    alignment: np.ndarray
    norm_u2: np.ndarray
    norm_w2: np.ndarray
    loss: np.ndarray
    m_lin: np.ndarray


def broadcast(x, shape: tuple[int, ...]) -> np.ndarray:
    """np.broadcast_to(x, shape) for the two cases a chunk meets, at a fraction of its ~2.5 us Python cost
    (it is called ~60 times per chunk): x already of `shape` comes back as is, a 0-d constant as a read-only
    zero-stride view."""
    x = np.asarray(x)
    if x.shape == shape:
        return x
    if x.ndim == 0:
        view = np.ndarray(shape, x.dtype, x, 0, (0,) * len(shape))
        view.flags.writeable = False
        return view
    return np.broadcast_to(x, shape)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den for num, den >= 0, with 0/0 := 0 (a term that is identically zero in the dynamics).
    (A masked divide: x/0 is never evaluated, and no temporaries beyond the result.)"""
    if np.ndim(den) and np.size(den) and np.min(den) > 0:  # the usual case: a plain divide (NaN fails min)
        return np.divide(num, den)
    out = np.zeros(np.broadcast_shapes(np.shape(num), np.shape(den)))
    return np.divide(num, den, out=out, where=den > 0)


def _times_zero_safe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b with 0 * inf := 0 (a vanishing coefficient of an infinite time)."""
    out = np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b)))
    return np.multiply(a, b, out=out, where=a != 0)


def hypot(x, y) -> np.ndarray:
    """sqrt(x^2 + y^2), 5x faster than np.hypot and within ~1.3 ulp of it; np.hypot where the squares
    would over- or underflow (results outside [1e-150, 1e150], including 0). |y| exactly when x is a 0-d
    zero (and vice versa): a constant zero input (V = 0 of a typical init) costs one pass."""
    for zero, other in ((x, y), (y, x)):
        if _is_zero(zero) and np.shape(other) == np.broadcast_shapes(np.shape(x), np.shape(y)):
            return np.abs(other)
    with np.errstate(over="ignore", under="ignore"):
        r = np.sqrt(x * x + y * y)
    if np.ndim(r) == 0 or r.size == 0:
        odd = not 1e-150 < r < 1e150 if np.ndim(r) == 0 else False
        return np.hypot(x, y) if odd else r
    if r.min() > 1e-150 and r.max() < 1e150:  # two read-only passes; the mask only when needed
        return r
    odd = ~((r > 1e-150) & (r < 1e150))
    x, y = np.broadcast_to(x, r.shape), np.broadcast_to(y, r.shape)
    r[odd] = np.hypot(x[odd], y[odd])
    return r


def split(m: np.ndarray, s: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) = ((s + m)/2, (s - m)/2) with the smaller one formed as h / larger (no cancellation).

    s = hypot(m, g) and h = g^2/4 = alpha beta.
    """
    larger = _larger_half(m, s)
    smaller = _ratio(h, larger)
    if np.ndim(m) == 0:  # one sign for every point (a constant teacher or m0)
        return (larger, smaller) if m >= 0 else (smaller, larger)
    return np.where(m >= 0, larger, smaller), np.where(m >= 0, smaller, larger)


def _larger_half(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(s + |m|)/2, the larger of alpha and beta (a sum: no cancellation)."""
    return 0.5 * s if _is_zero(m) else 0.5 * (s + np.abs(m))


def _alpha_of(m: np.ndarray, s: np.ndarray, h: np.ndarray) -> np.ndarray:
    """split(m, s, h)[0] alone (the larger half needs no division when m >= 0)."""
    larger = _larger_half(m, s)
    if np.ndim(m) == 0:
        return larger if m >= 0 else _ratio(h, larger)
    return np.where(m >= 0, larger, _ratio(h, larger))


def _is_zero(x) -> bool:
    """x is one number, 0 (a constant: no pass over the points is needed to add or compare it)."""
    return np.ndim(x) == 0 and x == 0


def _times(k: np.ndarray, x: np.ndarray) -> np.ndarray:
    """k * x, skipping the pass when k is the scalar 1 (unit output scale)."""
    return x if np.ndim(k) == 0 and k == 1.0 else k * x


def _saddle(g: np.ndarray, m0: np.ndarray, m_star: np.ndarray) -> np.ndarray:
    """G = 0 with m0 on the wrong side of 0 (docs/theory.md section 5): m only decays to 0."""
    wrong_side = m0 * m_star <= 0
    if np.ndim(wrong_side) == 0:
        return g == 0 if wrong_side else np.zeros((), dtype=bool)
    return (g == 0) & wrong_side


def invariants(problem: Problem) -> Invariants:
    """Precompute the conserved quantities of docs/theory.md section 3 for every point of `problem`.

    Inputs that are the same for every point (0-d arrays) are combined as scalars; every field is then
    broadcast to the points' shape (read-only views where nothing varies). Inputs so large that a conserved
    quantity overflows raise FloatingPointError (as the evaluation functions do), never a warning and inf."""
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        return _invariants(problem)


def _invariants(problem: Problem) -> Invariants:
    kappa, lr_u, lr_w, a, m_star = (
        lean_field(np.asarray(x, dtype=float))
        for x in (problem.output_scale, problem.lr_u, problem.lr_w, problem.input_var, problem.teacher)
    )
    U, W, V, G = (lean_field(np.asarray(x, dtype=float)) for x in problem.gram)
    shape = np.broadcast_shapes(kappa.shape, lr_u.shape, lr_w.shape, a.shape, m_star.shape, U.shape, W.shape,
                                V.shape, G.shape)
    kappa2 = kappa * kappa
    c2 = kappa2 * (lr_u * lr_w)
    c = kappa * np.sqrt(lr_u * lr_w)
    ntk_imbalance = _times(kappa2, difference_of_products(lr_w, U, lr_u, W))
    kappa_sqrt_g = _times(kappa, np.sqrt(G))
    if np.any(ntk_imbalance):
        g = hypot(np.abs(ntk_imbalance) / (2.0 * c), kappa_sqrt_g)
    else:  # balanced layers everywhere (eta_w U = eta_u W): g = kappa sqrt(G)
        g = np.abs(kappa_sqrt_g)
    h = 0.25 * g * g
    m0, m0_lo = two_product(kappa, V)  # kappa V = m0 + m0_lo exactly
    s0 = g if _is_zero(m0) else hypot(m0, g)  # (g >= 0)
    Q = hypot(m_star, g)
    alpha0, beta0 = split(m0, s0, h)
    alpha_inf, beta_inf = split(m_star, Q, h)
    has_q = Q > 0
    if np.all(has_q):
        a_hat, b_hat = alpha_inf / Q, beta_inf / Q
    else:
        Q_safe = np.where(has_q, Q, 1.0)
        a_hat = np.where(has_q, alpha_inf / Q_safe, 0.5)
        b_hat = np.where(has_q, beta_inf / Q_safe, 0.5)
    fields = dict(
        output_scale=kappa, lr_u=lr_u, lr_w=lr_w, input_var=a, teacher=m_star, c=c, c2=c2,
        ntk_imbalance=ntk_imbalance, g=g, h=h, m0=m0, s0=s0, Q=Q, alpha0=alpha0, beta0=beta0,
        alpha_inf=alpha_inf, beta_inf=beta_inf, a_hat=a_hat, b_hat=b_hat, rate=2.0 * c * a * Q,
        saddle=_saddle(g, m0, m_star), gap=(m_star - m0) - m0_lo, m0_lo=m0_lo, kappa_sqrt_g=kappa_sqrt_g,
    )
    full = {k: broadcast(v, shape) for k, v in fields.items()}
    return Invariants(gram=Gram(*(broadcast(x, shape) for x in (U, W, V, G))), **full)


def with_time_axis(inv: Invariants) -> Invariants:
    """The same Invariants with a trailing length-1 axis, to broadcast points against a 1-D time array."""
    def expand(x):
        return type(x)(*(np.asarray(y)[..., None] for y in x)) if isinstance(x, tuple) else np.asarray(x)[..., None]

    return Invariants(*(expand(x) for x in inv))


class _Clock(NamedTuple):
    """Time-dependent factors: E = exp(-lambda t), Dq = (1 - E)/Q (2 c a t when Q = 0)."""

    E: np.ndarray
    Dq: np.ndarray


def _clock(inv: Invariants, t) -> _Clock:
    t = np.asarray(t, dtype=float)
    if np.any(t < 0) or np.any(np.isnan(t)):
        raise ValueError("times must be >= 0 (inf allowed)")
    finite_t = bool(np.all(np.isfinite(t)))
    x = inv.rate * t if finite_t else _times_zero_safe(inv.rate, t)
    E = np.exp(-x)
    has_q = inv.Q > 0
    if np.all(has_q):  # the usual case; Q = 0 needs the algebraic limit 2 c a t
        return _Clock(E, -np.expm1(-x) / inv.Q)
    Dq = np.where(has_q, -np.expm1(-x) / np.where(has_q, inv.Q, 1.0),
                  _times_zero_safe(2.0 * inv.c * inv.input_var, t))
    return _Clock(E, Dq)


def _alpha_beta(inv: Invariants, clk: _Clock, finite_dq: bool = False):
    """alpha(t), beta(t) and their denominators (all >= 0). `finite_dq`: Dq has no inf (plain products)."""
    times = np.multiply if finite_dq else _times_zero_safe
    h_dq = times(inv.h, clk.Dq)
    den_a = times(inv.alpha0, clk.Dq) + inv.b_hat + inv.a_hat * clk.E
    den_b = times(inv.beta0, clk.Dq) + inv.a_hat + inv.b_hat * clk.E
    alpha = _ratio(inv.alpha0 * (inv.a_hat + inv.b_hat * clk.E) + h_dq, den_a)
    beta = _ratio(inv.beta0 * (inv.b_hat + inv.a_hat * clk.E) + h_dq, den_b)
    return alpha, beta, den_a, den_b


class _Path(NamedTuple):
    """Evaluation at times t: alpha, beta >= 0, best m, and m - m*, m - m0 each as accurate products."""

    alpha: np.ndarray
    beta: np.ndarray
    m: np.ndarray
    m_err: np.ndarray
    to_end: np.ndarray
    from_start: np.ndarray


def _end_path(inv: Invariants) -> _Path:
    """t = inf without the clock (docs/theory.md section 5): alpha_inf, beta_inf and m = m* exactly; at the saddle (which
    includes Q = 0) m -> 0 and alpha, beta -> 0. The general path gives the same values up to rounding."""
    zero = np.zeros_like(inv.teacher)
    if not inv.saddle.any():  # the usual case: no masking
        return _Path(alpha=inv.alpha_inf, beta=inv.beta_inf, m=inv.teacher, m_err=zero, to_end=zero,
                     from_start=inv.gap)
    off = ~inv.saddle
    return _Path(
        alpha=np.where(off, inv.alpha_inf, zero), beta=np.where(off, inv.beta_inf, zero),
        m=np.where(off, inv.teacher, zero), m_err=zero,
        to_end=np.where(off, zero, -inv.teacher), from_start=np.where(off, inv.gap, -inv.m0),
    )


def _is_end(t) -> bool:
    """t is the scalar inf (the end of training)."""
    return np.ndim(t) == 0 and t == np.inf


def _evaluate(inv: Invariants, t) -> _Path:
    if _is_end(t):
        return _end_path(inv)
    clk = _clock(inv, t)
    finite = np.isfinite(clk.Dq)  # Dq = inf only at Q = 0, t = inf
    all_finite, any_saddle = bool(np.all(finite)), bool(np.any(inv.saddle))
    alpha, beta, den_a, den_b = _alpha_beta(inv, clk, all_finite)
    # m - m* = -E (m* - m0)/(s0 + Q) [(alpha0 + alpha_inf)/den_a + (beta0 + beta_inf)/den_b] off the saddle
    # (on it a denominator can vanish with E; there alpha or beta is identically 0 and alpha - beta is exact)
    off = ~inv.saddle
    if any_saddle:
        den_a_off, den_b_off = np.where(off, den_a, 1.0), np.where(off, den_b, 1.0)
    else:
        den_a_off, den_b_off = den_a, den_b
    bracket = _ratio(inv.alpha0 + inv.alpha_inf, den_a_off) + _ratio(inv.beta0 + inv.beta_inf, den_b_off)
    to_end = -clk.E * _ratio(inv.gap, inv.s0 + inv.Q) * bracket
    err_to_end = np.abs(inv.teacher) + np.abs(to_end)
    if any_saddle:
        to_end = np.where(off, to_end, alpha - beta - inv.teacher)
        err_to_end = np.where(off, err_to_end, np.inf)
    # m - m0 = Dq (m* - m0) [alpha0/den_a + beta0/den_b]: exact at t = 0
    dq = clk.Dq if all_finite else np.where(finite, clk.Dq, 0.0)
    from_start = dq * inv.gap * (_ratio(inv.alpha0, den_a) + _ratio(inv.beta0, den_b))
    err_from_start = np.abs(inv.m0) + np.abs(from_start)
    if not all_finite:
        from_start = np.where(finite, from_start, alpha - beta - inv.m0)
        err_from_start = np.where(finite, err_from_start, np.inf)
    # pick the form of m with the smallest rounding error (docs/theory.md section 8)
    candidates = (
        (alpha - beta, alpha + beta),
        (inv.teacher + to_end, err_to_end),
        (inv.m0 + from_start, err_from_start),
    )
    m, m_err = _best(candidates)
    return _Path(alpha, beta, m, m_err, to_end, from_start)


def _best(candidates):
    """The value whose error estimate is smallest, elementwise, and that estimate."""
    value, err = candidates[0]
    for v, e in candidates[1:]:
        better = e < err
        value, err = np.where(better, v, value), np.where(better, e, err)
    return value, err


def layer_norms(lr_u, lr_w, c2, imbalance, kappa_sqrt_g, m, ntk, r=None):
    """|u|^2 = eta_u (Theta + c^2 Delta)/(2c^2), |w|^2 = eta_w (Theta - c^2 Delta)/(2c^2) (imbalance = c^2 Delta);
    the smaller one (the -c^2|Delta| side) as 2 eta r (r / (Theta + c^2 |Delta|)), r = hypot(m, kappa sqrt(G)):
    free of cancellation, and of underflow where m^2 would underflow. `r`: that hypot, if already known."""
    total = ntk + np.abs(imbalance)
    big = total / (2.0 * c2)
    r = hypot(m, kappa_sqrt_g) if r is None else r
    small = 2.0 * r * _ratio(r, total)
    u_big = imbalance >= 0
    return _times(lr_u, np.where(u_big, big, small)), _times(lr_w, np.where(u_big, small, big))


def _norms(inv: Invariants, m, ntk, r=None):
    return layer_norms(inv.lr_u, inv.lr_w, inv.c2, inv.ntk_imbalance, inv.kappa_sqrt_g, m, ntk, r)


def cosine(m, kappa_sqrt_g, m0, r=None) -> np.ndarray:
    """zeta = m / hypot(m, kappa sqrt(G)). With G = 0 the layers are parallel: zeta = sign(m), or sign(m0)
    where m has underflowed to 0 (it never changes sign then); 0 when m = m0 = 0 (a zero layer: 0/0).
    `r`: hypot(m, kappa sqrt(G)), if already known."""
    r = hypot(m, kappa_sqrt_g) if r is None else r
    if _is_zero(m) and _is_zero(m0):  # a zero function (V = 0 init): zeta = 0
        return broadcast(np.zeros(()), np.shape(r))
    zeta = _ratio(m, r)
    if np.size(r) and np.min(r) == 0:  # r = 0 means m = 0 and G = 0: parallel layers keep sign(m0)
        zeta = np.where(r == 0, np.sign(m0), zeta)
    return zeta


def alignment_of(inv: Invariants, m) -> np.ndarray:
    """zeta = cos(u, w) = m / hypot(m, kappa sqrt(G)) at slope m (see `cosine` for G = 0)."""
    return cosine(m, inv.kappa_sqrt_g, inv.m0)


def misalignment_of(inv: Invariants, m) -> np.ndarray:
    """1 - |zeta| at slope m, without cancellation (relative accuracy where zeta ~ 1, which 1 - |zeta| loses):
    (k/r) (k/(r + |m|)) with k = kappa sqrt(G), r = hypot(m, k); `cosine`'s cases for G = 0 (0 for parallel
    layers, 1 for a zero function)."""
    k = inv.kappa_sqrt_g
    r = hypot(m, k)
    nonzero = np.where(r > 0, r, 1.0)
    out = (k / nonzero) * (k / (nonzero + np.abs(m)))
    if np.size(r) and np.min(r) == 0:  # m = 0 and G = 0: zeta = sign(m0), or 0 for a zero function
        out = np.where(r == 0, np.where(np.asarray(inv.m0) != 0, 0.0, 1.0), out)
    return out


def _state_of(inv: Invariants, path: _Path, t) -> FlowState:
    ntk = 2.0 * inv.c * (path.alpha + path.beta)
    r = hypot(path.m, inv.kappa_sqrt_g)  # shared by the norms and the cosine
    norm_u2, norm_w2 = _norms(inv, path.m, ntk, r)
    m_lin = kernel_prediction(inv.m0, inv.teacher, inv.ntk_init, inv.input_var, t, steps=False, gap=inv.gap,
                              loss=False).m_lin
    return FlowState(
        m=path.m, ntk=ntk, alignment=cosine(path.m, inv.kappa_sqrt_g, inv.m0, r), norm_u2=norm_u2,
        norm_w2=norm_w2, loss=0.5 * inv.input_var * path.to_end**2, m_lin=m_lin,
    )


class KernelPrediction(NamedTuple):
    """The frozen-NTK (kernel, linearized) prediction at times t: slope m_lin and its excess loss loss_lin."""

    m_lin: np.ndarray
    loss_lin: np.ndarray | None


def kernel_prediction(m0, teacher, ntk0, input_var, t, *, steps: bool, gap=None, loss0=None,
                      loss: bool = True) -> KernelPrediction:
    """Frozen-NTK (kernel) prediction of docs/theory.md section 5: training linearized at the initialization.

    With the NTK frozen at Theta0 the distance to the teacher decays by one factor D(t):
        m_lin(t) = m* + (m0 - m*) D(t),    loss_lin(t) = a (m0 - m*)^2 D(t)^2 / 2,
        D(t) = exp(-a Theta0 t)  (gradient flow, `steps=False`),    D(k) = (1 - a Theta0)^k  (GD, `steps=True`).

    Args:
      m0: initial slope m0.
      teacher: teacher slope m*.
      ntk0: initial NTK Theta0 >= 0.
      input_var: input variance a > 0 (the rate is a Theta0).
      t: times >= 0 (flow) or step counts (GD: integers); `np.inf` (the end of training) allowed.
      steps: GD (the discrete power) instead of the flow (the exponential).
      gap: m* - m0 when it is known more accurately than `teacher - m0` rounds it (the core passes its
        error-free `Invariants.gap`); default `teacher - m0`.
      loss0: the initial excess loss a (m0 - m*)^2 / 2 to scale by D^2 (e.g. the caller's own loss at t = 0,
        so that loss_lin(0) equals it); default `0.5 * input_var * gap**2`.
      loss: also form `loss_lin` (None otherwise).

    Returns:
      KernelPrediction(m_lin, loss_lin), arrays of the broadcast shape of all inputs (read-only views possible).

    Forms. Flow: with x = a Theta0 t (0 when a Theta0 = 0, also at t = inf), m* - (m* - m0) D while D < 1/2,
    else m0 + (m* - m0)(-expm1(-x)), so m_lin(0) = m0 exactly and nothing cancels early on; a scalar t = inf
    gives m* exactly (m0 where Theta0 = 0: nothing moves). GD: m* - (m* - m0)(1 - a Theta0)^k, exactly m*
    when m0 = m*, and +-inf where the geometric sequence blows up (a Theta0 > 2). The loss is loss0 times D^2
    formed directly, exp(-2x) or ((1 - a Theta0)^2)^k (not from m_lin - m*, which rounds to 0 long before the
    loss does); 0 when loss0 = 0 (also where D^2 overflows), inf where it blows up.

    Accuracy (tests/test_core.py, against mpmath from the float inputs): flow m_lin to a few ulps of the larger
    term of its form, relatively when m0 and m* have the same sign (m_lin lies between them), plus the effect
    of rounding a Theta0 (a relative error ~x eps in D); loss_lin to ~(8 + 4x) eps relatively. GD: the same,
    except that the one rounding of 1 - a Theta0 grows k-fold in D (relative error ~k eps a Theta0/|1 - a Theta0|).
    """
    m0, teacher, ntk0, input_var = (np.asarray(x, dtype=float) for x in (m0, teacher, ntk0, input_var))
    t = np.asarray(t, dtype=float)
    if np.any(t < 0) or np.any(np.isnan(t)):
        raise ValueError("times must be >= 0 (inf allowed)")
    if steps and np.any(t[np.isfinite(t)] % 1 != 0):
        raise ValueError("GD steps must be integers (inf allowed)")
    gap = teacher - m0 if gap is None else np.asarray(gap, dtype=float)
    loss0 = None if loss0 is None else np.asarray(loss0, dtype=float)
    shape = np.broadcast_shapes(m0.shape, teacher.shape, ntk0.shape, input_var.shape, t.shape, gap.shape,
                                () if loss0 is None else loss0.shape)
    rate = input_var * ntk0
    with np.errstate(over="ignore", invalid="ignore"):
        if steps:
            decay = np.power(1.0 - rate, t)  # +-inf once |1 - a Theta0|^k overflows
            m_lin = np.where(gap == 0, teacher, teacher - gap * decay)  # (0 * inf: m0 = m* stays there)
        elif _is_end(t):
            learns = ntk0 > 0  # exp(-a Theta0 t) = 0 unless Theta0 = 0
            m_lin = teacher if learns.all() else np.where(learns, teacher, m0)
        else:
            x = _times_zero_safe(rate, t)
            decay = np.exp(-x)  # early on, m0 + (m* - m0)(1 - e^-x) keeps m_lin(0) = m0 exactly
            m_lin = np.where(decay < 0.5, teacher - gap * decay, m0 + gap * -np.expm1(-x))
        loss_lin = None
        if loss:
            decay2 = np.power((1.0 - rate) ** 2, t) if steps else np.exp(-2.0 * _times_zero_safe(rate, t))
            start = 0.5 * input_var * gap**2 if loss0 is None else loss0
            loss_lin = broadcast(_times_zero_safe(start, decay2), shape)
    return KernelPrediction(broadcast(m_lin, shape), loss_lin)


def _change_of(inv: Invariants, path: _Path, end: bool = False) -> np.ndarray:
    """(m - m0)(m + m0) / (s0 (s + s0)); `end`: the path is `_end_path`, where m + m0 is m* + kappa V (one
    rounding) off the saddle and m0 on it (m = 0)."""
    eps = np.finfo(float).eps
    sum_teacher_m0 = (inv.teacher + inv.m0) + inv.m0_lo
    if end:
        m_plus_m0 = np.where(inv.saddle, inv.m0, sum_teacher_m0) if inv.saddle.any() else sum_teacher_m0
        return _ratio(path.from_start * m_plus_m0, inv.s0 * ((path.alpha + path.beta) + inv.s0))
    m_plus_m0, _ = _best((
        (path.m + inv.m0, path.m_err + eps * (np.abs(path.m) + np.abs(inv.m0))),
        (path.to_end + sum_teacher_m0, np.where(inv.saddle, np.inf, eps * (
            np.abs(path.to_end) + np.abs(sum_teacher_m0) + np.abs(inv.teacher)))),
        (path.from_start + 2.0 * inv.m0, eps * (np.abs(path.from_start) + 2.0 * np.abs(inv.m0))),
    ))
    s = path.alpha + path.beta
    den = inv.s0 * (s + inv.s0)
    out = np.zeros(np.broadcast_shapes(den.shape, path.from_start.shape))
    return np.divide(path.from_start * m_plus_m0, den, out=out, where=den > 0)


def lean_field(x):
    """A zero-stride array (one value broadcast) as that value, 0-d; anything else unchanged."""
    if isinstance(x, np.ndarray) and x.ndim and x.size and not any(x.strides):
        return np.asarray(x[(0,) * x.ndim])
    return x


def lean(inv: Invariants) -> Invariants:
    """`inv` with its constant fields (zero-stride broadcasts of one value, e.g. a learning rate that is not
    swept) as 0-d arrays: numpy then combines them as scalars instead of streaming an array of one value
    through every operation. Internal: the public functions broadcast what they return to the points' shape."""
    fields = {k: lean_field(getattr(inv, k)) for k in inv._fields if k != "gram"}
    return Invariants(gram=Gram(*(lean_field(x) for x in inv.gram)), **fields)


def shaped(values, shape: tuple[int, ...]):
    """Each array of a NamedTuple (or one array) broadcast to `shape` (views; no copy where it has it; a None
    field stays None)."""
    if isinstance(values, tuple):
        return type(values)(*(None if x is None else broadcast(x, shape) for x in values))
    return broadcast(values, shape)


def flow_state(inv: Invariants, t) -> FlowState:
    """Exact state at time(s) t (broadcast against the points; np.inf = end of training).

    Shapes: the broadcast of the Invariants arrays with t (e.g. points[..., None] with t of shape (T,)).
    """
    shape = np.broadcast_shapes(np.shape(inv.m0), np.shape(t))
    inv = lean(inv)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        return shaped(_state_of(inv, _evaluate(inv, t), t), shape)


def ntk_change(inv: Invariants, t=np.inf) -> np.ndarray:
    """Theta(t)/Theta0 - 1 = (m - m0)(m + m0) / (s0 (s + s0)) (NTK law), relative accuracy ~1e-14 however
    small it is: m - m0 is a product of positive factors and m + m0 is taken from whichever of
    m + m0, (m - m*) + (m* + m0), (m - m0) + 2 m0 rounds least (it can only cancel when m0 m* < 0, near the
    time m = -m0 where the NTK passes back through Theta0). Defined as 0 when Theta0 = 0.
    """
    shape = np.broadcast_shapes(np.shape(inv.m0), np.shape(t))
    inv = lean(inv)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        return shaped(_change_of(inv, _evaluate(inv, t), end=_is_end(t)), shape)


def flow_state_and_change(inv: Invariants, t) -> tuple[FlowState, np.ndarray]:
    """`flow_state` and `ntk_change` at the same times from one evaluation of the closed form."""
    shape = np.broadcast_shapes(np.shape(inv.m0), np.shape(t))
    inv = lean(inv)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        path = _evaluate(inv, t)
        return shaped(_state_of(inv, path, t), shape), shaped(_change_of(inv, path, end=_is_end(t)), shape)


def relaxation_time(inv: Invariants) -> np.ndarray:
    """tau = 1/lambda = 1/(2 c a Q) = 1/(a Theta_inf) (saddle: 1/(2 c a |m*|)); inf when Q = 0."""
    positive = inv.rate > 0
    if positive.all():
        return 1.0 / inv.rate
    return np.divide(1.0, inv.rate, out=np.full(np.shape(inv.rate), np.inf), where=positive)


def t_learn(inv: Invariants, fraction: float = 0.1) -> np.ndarray:
    """Time at which the excess loss has fallen to `fraction` of its initial value (docs/theory.md section 5).

    Exact inversion of alpha(t) (by the symmetry m -> -m, take m0 >= 0): at the target slope
    m_t = m* + r (m0 - m*), r = sqrt(fraction), 1 - E = Q Y with the positive product
        Y = (1 - r)(alpha0 + alpha_t)(s0 + Q) / ((s0 + s_t)(alpha0 + alpha_inf)(alpha_t + beta_inf)),
    so t = -log1p(-Q Y)/(2 c a Q) (= Y/(2 c a) when Q = 0). 0 when m0 = m*; inf when the target is never
    reached (the saddle: m only decays to 0, or nothing moves).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must lie in (0, 1)")
    r = np.sqrt(fraction)
    shape = np.shape(inv.m0)
    inv = lean(inv)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        return shaped(_t_learn(inv, r), shape)


def _t_learn(inv: Invariants, r: float) -> np.ndarray:
    """t_learn at r = sqrt(fraction) on lean invariants (see `t_learn`)."""
    # m -> -m swaps alpha and beta: take them from the invariants instead of splitting again
    neg = inv.m0 < 0
    if np.any(neg):
        flip = np.where(neg, -1.0, 1.0)
        m_star, gap = flip * inv.teacher, flip * inv.gap
        alpha0 = np.where(neg, inv.beta0, inv.alpha0)  # the larger half (split's form, no cancellation)
        alpha_inf, beta_inf = np.where(neg, inv.beta_inf, inv.alpha_inf), np.where(neg, inv.alpha_inf, inv.beta_inf)
    else:
        m_star, gap, alpha0, alpha_inf, beta_inf = inv.teacher, inv.gap, inv.alpha0, inv.alpha_inf, inv.beta_inf
    m0 = np.abs(inv.m0)
    m_t = m_star - r * gap
    s_t = hypot(m_t, inv.g)
    alpha_t = _alpha_of(m_t, s_t, inv.h)
    s0_plus_q, a0_plus_ainf, at_plus_binf = inv.s0 + inv.Q, alpha0 + alpha_inf, alpha_t + beta_inf
    den_common = a0_plus_ainf * at_plus_binf
    Y = _ratio((1.0 - r) * (alpha0 + alpha_t) * s0_plus_q, (inv.s0 + s_t) * den_common)
    y = inv.Q * Y  # = 1 - E, accurate while E is not small
    # E itself as a positive product, accurate when E is small (a long plateau before learning)
    E = r * _ratio((alpha_t + alpha_inf) * s0_plus_q * (alpha0 + beta_inf), (s_t + inv.Q) * den_common)
    reachable = E > 0
    if not np.all(inv.s0 > 0):
        reachable &= inv.s0 > 0
    if np.any(inv.saddle):
        reachable &= ~(inv.saddle & (m_t * m0 <= 0))
    # -log E = lambda t: from log1p(-y) while y < 1/2, else from log(E) (masked: one log per point)
    near = y < 0.5
    log_e = np.zeros(np.shape(reachable))
    np.log(E, out=log_e, where=reachable & ~near)
    np.log1p(-y, out=log_e, where=reachable & near)
    has_rate = inv.rate > 0
    if np.all(has_rate):
        out = np.asarray(np.divide(log_e, inv.rate))  # (0-d inputs give a scalar: made an array)
        np.negative(out, out=out)
    else:  # Q = 0 (y = 0): the algebraic limit t = Y / (2 c a)
        out = np.divide(-log_e, inv.rate, out=np.zeros(np.shape(log_e)), where=has_rate)
        out = np.asarray(np.where(has_rate, out, Y / (2.0 * inv.c * inv.input_var)))
    if not np.all(reachable):
        out[~reachable] = np.inf
    learned = inv.gap == 0
    return np.where(learned, 0.0, out) if np.any(learned) else out
