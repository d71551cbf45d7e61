"""Exact gradient-flow solution of the two-layer linear network (THEORY sections 3-5).

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
positive factors, so every output keeps ~1e-14 relative accuracy (THEORY section 8).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.core.gram import Gram, difference_of_products


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
    m0 m* <= 0 (m can never reach m*).
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

    @property
    def ntk_init(self) -> np.ndarray:
        """Theta0 = kappa^2 (eta_w U + eta_u W) = 2 c s0."""
        return 2.0 * self.c * self.s0


class FlowState(NamedTuple):
    """State at time t: end-to-end slope m, NTK Theta, alignment zeta = cos(u, w), squared layer norms,
    excess loss a (m - m*)^2 / 2, and the frozen-NTK (kernel) prediction m_lin."""

    m: np.ndarray
    ntk: np.ndarray
    alignment: np.ndarray
    norm_u2: np.ndarray
    norm_w2: np.ndarray
    loss: np.ndarray
    m_lin: np.ndarray


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den for num, den >= 0, with 0/0 := 0 (a term that is identically zero in the dynamics)."""
    safe = den > 0
    return np.where(safe, num / np.where(safe, den, 1.0), 0.0)


def _times_zero_safe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b with 0 * inf := 0 (a vanishing coefficient of an infinite time)."""
    return np.where(a == 0, 0.0, a * np.where(a == 0, 1.0, b))


def split(m: np.ndarray, s: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) = ((s + m)/2, (s - m)/2) with the smaller one formed as h / larger (no cancellation).

    s = hypot(m, g) and h = g^2/4 = alpha beta.
    """
    larger = 0.5 * (s + np.abs(m))
    smaller = _ratio(h, larger)
    return np.where(m >= 0, larger, smaller), np.where(m >= 0, smaller, larger)


def invariants(problem: Problem) -> Invariants:
    """Precompute the conserved quantities of THEORY section 3 for every point of `problem`."""
    kappa, lr_u, lr_w, a, m_star = (
        np.asarray(x, dtype=float)
        for x in (problem.output_scale, problem.lr_u, problem.lr_w, problem.input_var, problem.teacher)
    )
    U, W, V, G = (np.asarray(x, dtype=float) for x in problem.gram)
    kappa, lr_u, lr_w, a, m_star, U, W, V, G = np.broadcast_arrays(kappa, lr_u, lr_w, a, m_star, U, W, V, G)
    c = kappa * np.sqrt(lr_u * lr_w)
    c2 = kappa * kappa * (lr_u * lr_w)
    ntk_imbalance = (kappa * kappa) * difference_of_products(lr_w, U, lr_u, W)
    g = np.hypot(np.abs(ntk_imbalance) / (2.0 * c), kappa * np.sqrt(G))
    h = 0.25 * g * g
    m0 = kappa * V
    s0 = np.hypot(m0, g)
    Q = np.hypot(m_star, g)
    alpha0, beta0 = split(m0, s0, h)
    alpha_inf, beta_inf = split(m_star, Q, h)
    has_q = Q > 0
    Q_safe = np.where(has_q, Q, 1.0)
    a_hat = np.where(has_q, alpha_inf / Q_safe, 0.5)
    b_hat = np.where(has_q, beta_inf / Q_safe, 0.5)
    return Invariants(
        output_scale=kappa, lr_u=lr_u, lr_w=lr_w, input_var=a, teacher=m_star, gram=Gram(U, W, V, G),
        c=c, c2=c2, ntk_imbalance=ntk_imbalance, g=g, h=h, m0=m0, s0=s0, Q=Q,
        alpha0=alpha0, beta0=beta0, alpha_inf=alpha_inf, beta_inf=beta_inf, a_hat=a_hat, b_hat=b_hat,
        rate=2.0 * c * a * Q, saddle=(g == 0) & (m0 * m_star <= 0),
    )


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
    x = _times_zero_safe(inv.rate, t)
    E = np.exp(-x)
    has_q = inv.Q > 0
    Dq = np.where(has_q, -np.expm1(-x) / np.where(has_q, inv.Q, 1.0),
                  _times_zero_safe(2.0 * inv.c * inv.input_var, t))
    return _Clock(E, Dq)


def _alpha_beta(inv: Invariants, clk: _Clock):
    """alpha(t), beta(t) and their denominators (all >= 0)."""
    den_a = _times_zero_safe(inv.alpha0, clk.Dq) + inv.b_hat + inv.a_hat * clk.E
    den_b = _times_zero_safe(inv.beta0, clk.Dq) + inv.a_hat + inv.b_hat * clk.E
    h_dq = _times_zero_safe(inv.h, clk.Dq)
    alpha = _ratio(inv.alpha0 * (inv.a_hat + inv.b_hat * clk.E) + h_dq, den_a)
    beta = _ratio(inv.beta0 * (inv.b_hat + inv.a_hat * clk.E) + h_dq, den_b)
    return alpha, beta, den_a, den_b


def _m_minus_teacher(inv: Invariants, clk: _Clock, den_a, den_b) -> np.ndarray:
    """m(t) - m* as a product of one signed and several positive factors (valid off the saddle):
    E (m0 - m*)/(s0 + Q) [(alpha0 + alpha_inf)/den_a + (beta0 + beta_inf)/den_b]."""
    bracket = _ratio(inv.alpha0 + inv.alpha_inf, den_a) + _ratio(inv.beta0 + inv.beta_inf, den_b)
    return clk.E * _ratio(inv.m0 - inv.teacher, inv.s0 + inv.Q) * bracket


def _m_minus_start(inv: Invariants, clk: _Clock, den_a, den_b) -> np.ndarray:
    """m(t) - m0 = Dq (m* - m0) [alpha0/den_a + beta0/den_b]: positive factors, exact at t = 0."""
    dq = np.where(np.isfinite(clk.Dq), clk.Dq, 0.0)  # Dq = inf only at Q = 0, t = inf (not used there)
    return dq * (inv.teacher - inv.m0) * (_ratio(inv.alpha0, den_a) + _ratio(inv.beta0, den_b))


def _slope(inv: Invariants, clk: _Clock, alpha, beta, den_a, den_b):
    """m(t) and m(t) - m*, each from the form with the smallest rounding error (THEORY section 8):
    alpha - beta (error ~ ulp (alpha + beta)), m* + (m - m*) (~ ulp (|m*| + |m - m*|), off the saddle), or
    m0 + (m - m0) (~ ulp (|m0| + |m - m0|), while Dq is finite)."""
    m_direct = alpha - beta
    to_end = _m_minus_teacher(inv, clk, den_a, den_b)
    from_start = _m_minus_start(inv, clk, den_a, den_b)
    err_direct = alpha + beta
    err_end = np.where(inv.saddle, np.inf, np.abs(inv.teacher) + np.abs(to_end))
    err_start = np.where(np.isfinite(clk.Dq), np.abs(inv.m0) + np.abs(from_start), np.inf)
    m = np.where(
        (err_end <= err_direct) & (err_end <= err_start), inv.teacher + to_end,
        np.where(err_start <= err_direct, inv.m0 + from_start, m_direct),
    )
    diff = np.where(inv.saddle, m - inv.teacher, to_end)
    return m, diff


def _norms(inv: Invariants, m, ntk):
    """|u|^2 = eta_u (Theta + c^2 Delta)/(2c^2), |w|^2 = eta_w (Theta - c^2 Delta)/(2c^2); the one with the
    minus sign as 2 eta (m^2 + kappa^2 G)/(Theta + c^2 |Delta|) (no cancellation)."""
    imb = inv.ntk_imbalance
    big = (ntk + np.abs(imb)) / (2.0 * inv.c2)
    small = _ratio(2.0 * (m * m + inv.output_scale**2 * inv.gram.G), ntk + np.abs(imb))
    u_big = imb >= 0
    norm_u2 = inv.lr_u * np.where(u_big, big, small)
    norm_w2 = inv.lr_w * np.where(u_big, small, big)
    return norm_u2, norm_w2


def alignment_of(inv: Invariants, m) -> np.ndarray:
    """zeta = cos(u, w) = m / hypot(m, kappa sqrt(G)); defined as 0 when m = 0 and G = 0 (a zero layer)."""
    r = np.hypot(m, inv.output_scale * np.sqrt(inv.gram.G))
    return np.where(r > 0, m / np.where(r > 0, r, 1.0), 0.0)


def flow_state(inv: Invariants, t) -> FlowState:
    """Exact state at time(s) t (broadcast against the points; np.inf = end of training).

    Shapes: the broadcast of the Invariants arrays with t (e.g. points[..., None] with t of shape (T,)).
    """
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        clk = _clock(inv, t)
        alpha, beta, den_a, den_b = _alpha_beta(inv, clk)
        m, diff = _slope(inv, clk, alpha, beta, den_a, den_b)
        ntk = 2.0 * inv.c * (alpha + beta)
        norm_u2, norm_w2 = _norms(inv, m, ntk)
        x = _times_zero_safe(inv.input_var * inv.ntk_init, np.asarray(t, dtype=float))
        decay = np.exp(-x)  # early on, m0 + (m* - m0)(1 - e^-x) keeps m_lin(0) = m0 exactly
        m_lin = np.where(decay < 0.5, inv.teacher + (inv.m0 - inv.teacher) * decay,
                         inv.m0 - (inv.m0 - inv.teacher) * -np.expm1(-x))
        return FlowState(
            m=m, ntk=ntk, alignment=alignment_of(inv, m), norm_u2=norm_u2, norm_w2=norm_w2,
            loss=0.5 * inv.input_var * diff * diff, m_lin=m_lin,
        )


def ntk_change(inv: Invariants, t=np.inf) -> np.ndarray:
    """Theta(t)/Theta0 - 1, with relative accuracy ~1e-14 however small it is (off a sign crossing of m).

    Formula (g > 0): Dq (m* - m0) [s0 m* Dq + m0 (1 + E)] / (2 s0 den_a den_b), a product of positive
    factors and one signed bracket that can only cancel when m0 and m* have opposite signs. For g = 0 one of
    alpha, beta vanishes and (alpha - alpha0)/alpha0 = Dq (m* - m0)/den_a directly. For Q = 0 (m* = 0,
    g = 0: algebraic decay m = m0/(1 + x), x = 2 c a |m0| t) it is -x/(1 + x). Defined as 0 when Theta0 = 0.
    """
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        clk = _clock(inv, t)
        _, _, den_a, den_b = _alpha_beta(inv, clk)
        shift = inv.teacher - inv.m0
        both = inv.h > 0
        dq = np.where(both, clk.Dq, 0.0)  # finite: h > 0 implies Q > 0
        two_sided = dq * shift * (inv.s0 * inv.teacher * dq + inv.m0 * (1.0 + clk.E)) / np.where(
            both, 2.0 * inv.s0 * den_a * den_b, 1.0
        )
        dq = np.where(~both & (inv.Q > 0), clk.Dq, 0.0)
        one_sided = shift * np.where(inv.m0 >= 0, _ratio(dq, den_a), -_ratio(dq, den_b))
        x = _times_zero_safe(2.0 * inv.c * inv.input_var * np.abs(inv.m0), np.asarray(t, dtype=float))
        finite = np.isfinite(x)
        algebraic = np.where(finite, -np.where(finite, x, 0.0) / (1.0 + np.where(finite, x, 0.0)), -1.0)
        out = np.where(both, two_sided, np.where(inv.Q > 0, one_sided, algebraic))
        return np.where(inv.s0 > 0, out, 0.0)


def relaxation_time(inv: Invariants) -> np.ndarray:
    """tau = 1/lambda = 1/(2 c a Q) = 1/(a Theta_inf) (saddle: 1/(2 c a |m*|)); inf when Q = 0."""
    return np.where(inv.rate > 0, 1.0 / np.where(inv.rate > 0, inv.rate, 1.0), np.inf)


def t_learn(inv: Invariants, fraction: float = 0.1) -> np.ndarray:
    """Time at which the excess loss has fallen to `fraction` of its initial value (THEORY section 5).

    Exact inversion of alpha(t) (by the symmetry m -> -m, take m0 >= 0): at the target slope
    m_t = m* + r (m0 - m*), r = sqrt(fraction), 1 - E = Q Y with the positive product
        Y = (1 - r)(alpha0 + alpha_t)(s0 + Q) / ((s0 + s_t)(alpha0 + alpha_inf)(alpha_t + beta_inf)),
    so t = -log1p(-Q Y)/(2 c a Q) (= Y/(2 c a) when Q = 0). 0 when m0 = m*; inf when the target is never
    reached (the saddle: m only decays to 0, or nothing moves).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must lie in (0, 1)")
    r = np.sqrt(fraction)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        flip = np.where(inv.m0 < 0, -1.0, 1.0)
        m0, m_star = flip * inv.m0, flip * inv.teacher
        m_t = m_star + r * (m0 - m_star)
        s_t = np.hypot(m_t, inv.g)
        alpha0, _ = split(m0, inv.s0, inv.h)
        alpha_inf, beta_inf = split(m_star, inv.Q, inv.h)
        alpha_t, _ = split(m_t, s_t, inv.h)
        num = (1.0 - r) * (alpha0 + alpha_t) * (inv.s0 + inv.Q)
        den = (inv.s0 + s_t) * (alpha0 + alpha_inf) * (alpha_t + beta_inf)
        Y = _ratio(num, den)
        y = inv.Q * Y  # = 1 - E, accurate while E is not small
        # E itself as a positive product, accurate when E is small (a long plateau before learning)
        E = r * _ratio(
            (alpha_t + alpha_inf) * (inv.s0 + inv.Q) * (alpha0 + beta_inf),
            (alpha0 + alpha_inf) * (s_t + inv.Q) * (alpha_t + beta_inf),
        )
        reachable = (inv.s0 > 0) & ~(inv.saddle & (m_t * m0 <= 0)) & (E > 0)
        near = reachable & (y < 0.5)
        y_safe = np.where(near & (y > 0), y, 0.5)
        t_near = Y * np.where(near & (y > 0), -np.log1p(-y_safe) / y_safe, 1.0) / (2.0 * inv.c * inv.input_var)
        far = reachable & ~near
        t_far = -np.log(np.where(far, E, 0.5)) / np.where(far, inv.rate, 1.0)
        out = np.where(near, t_near, np.where(far, t_far, np.inf))
        return np.where(inv.m0 == inv.teacher, 0.0, out)
