"""The two-layer ReLU network on the one-dimensional task, solved exactly (docs/theory.md section 10).

f(x) = kappa sum_i u_i relu(w_i x), x symmetric with E[x^2] = a, y = m* x (+ noise). For x > 0 only the units
with w_i > 0 are active and relu(w_i x) = w_i x; for x < 0 only those with w_i < 0. So

    f(x) = m_P x  (x > 0),   f(x) = m_N x  (x < 0),   m_P = kappa sum_{w_i > 0} u_i w_i,  m_N = kappa sum_{w_i < 0} u_i w_i,
    L = (a/4) [(m_P - m*)^2 + (m_N - m*)^2],

and each half ("positive", "negative") is the linear model of docs/theory.md sections 1-5 on its own units
with input variance a/2, independent of the other, for as long as no w_i reaches 0. The whole network's
measurements (those of :func:`phasediag.training.simulate.activated_measurements`) follow from the halves:

    m = (m_P + m_N)/2,   loss = loss_P + loss_N,   ntk = (Theta_P + Theta_N)/4,
    |u|^2 = |u_P|^2 + |u_N|^2 (+ |u_0|^2 of units with w_i = 0, which never move),  zeta = kappa^-1 2m / (|u| |w|).

When the split stops holding. In the scaled coordinates p = u / sqrt(eta_u), q = w / sqrt(eta_w) of one half,
gradient flow multiplies p_i + q_i by z^(-1/2) and p_i - q_i by z^(1/2) with the half's common z(t) = alpha0 /
alpha(t) (docs/theory.md section 4; alpha = c |p + q|^2 / 4), so w_i = 0 exactly when z(t) = (p_i + q_i)/(p_i - q_i)
(at time 0: z = 1). z is monotone, so the units that cross by time t are those whose ratio lies between 1 and
z(t), and the first crossing time is found by bisection on z. One GD step multiplies p_i + q_i by (1 - c r_k) and
p_i - q_i by (1 + c r_k) (r_k = (a/2)(m_k - m*) of the half), so the crossings of GD are read off step by step.
Up to the first crossing the solution is exact; after it, the crossed units serve the other half in the network
but not here, and `crossed` counts them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.core.flow import FlowState, Problem, flow_state, invariants
from phasediag.core.gd import gd_state
from phasediag.core.gram import Gram

__all__ = ["ReluSolution", "relu_solution"]


class ReluSolution(NamedTuple):
    """The split solution at the requested times (every array of shape (T,)).

    m, ntk, alignment, norm_u2, norm_w2, loss: the whole network (module docstring); m_positive, m_negative:
    the halves' slopes; crossed: units whose w_i has reached 0 by then (0: the solution is exact);
    first_crossing: the time (flow) or step (GD: the first step after which some w_i has changed sign; the
    state at that step is still exact) of the first crossing, inf if no unit ever crosses.
    """

    t: np.ndarray
    m: np.ndarray
    ntk: np.ndarray
    alignment: np.ndarray
    norm_u2: np.ndarray
    norm_w2: np.ndarray
    loss: np.ndarray
    m_positive: np.ndarray
    m_negative: np.ndarray
    crossed: np.ndarray
    first_crossing: float


class _Half(NamedTuple):
    p_plus: np.ndarray  # p_i + q_i of the half's units
    p_minus: np.ndarray  # p_i - q_i
    problem: Problem | None  # None: the half has no unit


def _gram(u: np.ndarray, w: np.ndarray) -> Gram:
    """(U, W, V, G) with G = |u|^2 |w_perp|^2 (w_perp: w less its projection on u, taken twice): accurate even
    when G << U W."""
    U, W, V = float(u @ u), float(w @ w), float(u @ w)
    if U == 0.0 or u.size == 1:
        G = 0.0
    else:
        perp = w - (V / U) * u
        perp = perp - (float(u @ perp) / U) * u
        G = U * float(perp @ perp)
    return Gram(*(np.asarray(x) for x in (U, W, V, G)))


def _halves(u, w, output_scale, lr_u, lr_w, input_var, teacher) -> tuple[_Half, _Half]:
    halves = []
    for units in (w > 0, w < 0):
        uh, wh = u[units], w[units]
        p, q = uh / np.sqrt(lr_u), wh / np.sqrt(lr_w)
        problem = None if not units.any() else Problem(
            *(np.asarray(float(x)) for x in (output_scale, lr_u, lr_w, 0.5 * input_var, teacher)), _gram(uh, wh))
        halves.append(_Half(p + q, p - q, problem))
    return halves[0], halves[1]


def _empty_state(shape, teacher: float, input_var: float) -> FlowState:
    zero = np.zeros(shape)
    return FlowState(zero, zero, zero, zero, zero, np.full(shape, 0.25 * input_var * teacher * teacher), zero)


def _z(state: FlowState, c: float, alpha0: float, beta0: float) -> np.ndarray:
    """z = alpha0 / alpha = beta / beta0 from (m, Theta), alpha, beta = (Theta/(2c) +- m)/2, from the one of
    alpha, beta that does not cancel."""
    s = state.ntk / (2.0 * c)
    with np.errstate(divide="ignore", invalid="ignore"):
        by_alpha = alpha0 / (0.5 * (s + state.m))
        by_beta = (0.5 * (s - state.m)) / beta0
    return np.where(state.m >= 0, by_alpha, by_beta)


def _flow_crossings(half: _Half, times: np.ndarray) -> tuple[np.ndarray, float]:
    """Units of the half crossed by each time, and the first crossing time (inf if none)."""
    if half.problem is None:
        return np.zeros(times.size, dtype=np.int64), np.inf
    pr = half.problem
    c = float(pr.output_scale * np.sqrt(pr.lr_u * pr.lr_w))
    alpha0 = c * float(half.p_plus @ half.p_plus) / 4.0
    beta0 = c * float(half.p_minus @ half.p_minus) / 4.0
    inv = invariants(pr)
    if alpha0 == 0.0 or beta0 == 0.0:  # u = +-w exactly (up to scale): the units never move across 0
        return np.zeros(times.size, dtype=np.int64), np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = half.p_plus / half.p_minus  # w_i = 0 where z = ratio_i
    z_at = _z(flow_state(inv, times), c, alpha0, beta0)
    z_end = float(_z(flow_state(inv, np.inf), c, alpha0, beta0))
    up = z_end > 1.0
    crossed = np.array([np.count_nonzero((ratio > 1.0) & (ratio <= z) if up else (ratio < 1.0) & (ratio >= z))
                        for z in z_at], dtype=np.int64)
    reach = ratio[(ratio > 1.0) & (ratio <= z_end)] if up else ratio[(ratio < 1.0) & (ratio >= z_end) & (ratio > 0)]
    if reach.size == 0:
        return crossed, np.inf
    target = float(reach.min() if up else reach.max())
    return crossed, _time_of(inv, c, alpha0, beta0, target, up)


def _time_of(inv, c: float, alpha0: float, beta0: float, target: float, up: bool) -> float:
    """The time at which the monotone z(t) reaches `target` (bisection to a relative 1e-15)."""
    def passed(t: float) -> bool:
        z = float(_z(flow_state(inv, np.asarray(t)), c, alpha0, beta0))
        return z >= target if up else z <= target

    rate = float(inv.rate)
    hi = 1.0 / rate if rate > 0 else 1.0
    while not passed(hi):
        hi *= 2.0
    lo = 0.0
    for _ in range(200):  # 1e-15 relative: about 50 halvings past the first bracket
        if hi - lo <= 1e-15 * hi:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if passed(mid) else (mid, hi)
    return hi


def _gd_crossings(half: _Half, steps: np.ndarray, state: FlowState) -> tuple[np.ndarray, float]:
    """Units of the half whose w_i has changed sign by each step, and the first such step (inf if none by the
    last step). `state`: the half's exact GD state at steps 0, 1, ..., max(steps)."""
    if half.problem is None:
        return np.zeros(steps.size, dtype=np.int64), np.inf
    pr = half.problem
    c = float(pr.output_scale * np.sqrt(pr.lr_u * pr.lr_w))
    r = float(pr.input_var) * (state.m - float(pr.teacher))  # the half's residual, step by step
    sign0 = np.sign(half.p_plus - half.p_minus)  # sign(q_i) at step 0 (2 q = (p + q) - (p - q))
    crossed_units = np.zeros(sign0.size, dtype=bool)
    plus, minus = 1.0, 1.0
    counts, first, j = np.zeros(steps.size, dtype=np.int64), np.inf, 0
    for k in range(int(steps.max()) + 1):
        if k > 0 and not np.isfinite(r[k - 1]):  # the half diverged: no crossing is counted from here on
            break
        if k > 0:
            plus, minus = plus * (1.0 - c * r[k - 1]), minus * (1.0 + c * r[k - 1])
            scale = max(abs(plus), abs(minus))
            plus, minus = plus / scale, minus / scale  # only signs matter: keep the pair in range
            now = np.sign(half.p_plus * plus - half.p_minus * minus)
            crossed_units |= now != sign0
            if first == np.inf and crossed_units.any():
                first = float(k)
        while j < steps.size and steps[j] == k:
            counts[j] = np.count_nonzero(crossed_units)
            j += 1
    counts[j:] = np.count_nonzero(crossed_units)
    return counts, first


def relu_solution(u0: np.ndarray, w0: np.ndarray, *, output_scale: float, lr_u: float, lr_w: float,
                  input_var: float, teacher: float, times, optimizer: str = "flow") -> ReluSolution:
    """The split solution of the module docstring for the initial vectors u0, w0 (shape (d,)), at `times`:
    flow times (sorted, >= 0, inf allowed) for optimizer "flow", sorted integer step counts for "gd"."""
    u, w = np.asarray(u0, dtype=float).reshape(-1), np.asarray(w0, dtype=float).reshape(-1)
    times = np.asarray(times, dtype=float).reshape(-1)
    if optimizer not in ("flow", "gd"):
        raise ValueError(f"optimizer must be 'flow' or 'gd', got {optimizer!r}")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # a diverging GD half: inf records
        return _solution(u, w, output_scale, lr_u, lr_w, input_var, teacher, times, optimizer)


def _solution(u, w, output_scale, lr_u, lr_w, input_var, teacher, times, optimizer) -> ReluSolution:
    halves = _halves(u, w, output_scale, lr_u, lr_w, input_var, teacher)
    states, crossings = [], []
    for half in halves:
        if half.problem is None:
            states.append(_empty_state(times.shape, teacher, input_var))
            crossings.append((np.zeros(times.size, dtype=np.int64), np.inf))
        elif optimizer == "flow":
            states.append(flow_state(invariants(half.problem), times))
            crossings.append(_flow_crossings(half, times))
        else:
            every = gd_state(invariants(half.problem), np.arange(int(times.max()) + 1 if times.size else 1))
            states.append(FlowState(*(np.asarray(x)[times.astype(np.int64)] for x in every)))
            crossings.append(_gd_crossings(half, times.astype(np.int64), every))
    pos, neg = states
    still = float(u[w == 0] @ u[w == 0])  # units with w_i = 0 are inactive and never move
    norm_u2, norm_w2 = pos.norm_u2 + neg.norm_u2 + still, pos.norm_w2 + neg.norm_w2
    m = 0.5 * (pos.m + neg.m)
    with np.errstate(divide="ignore", invalid="ignore"):
        alignment = np.where(norm_u2 * norm_w2 > 0, 2.0 * m / (output_scale * np.sqrt(norm_u2 * norm_w2)), 0.0)
    return ReluSolution(
        t=times, m=m, ntk=0.25 * (pos.ntk + neg.ntk), alignment=np.clip(alignment, -1.0, 1.0),
        norm_u2=norm_u2, norm_w2=norm_w2, loss=pos.loss + neg.loss, m_positive=pos.m, m_negative=neg.m,
        crossed=crossings[0][0] + crossings[1][0], first_crossing=min(crossings[0][1], crossings[1][1]),
    )
