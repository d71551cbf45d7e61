"""Exact discrete gradient descent (THEORY section 9).

With p = u/sqrt(eta_u), q = w/sqrt(eta_w) one GD step is p' = p - c r q, q' = q - c r p, so
alpha = c|p + q|^2/4 and beta = c|p - q|^2/4 obey exactly
    alpha' = alpha (1 - c r)^2,   beta' = beta (1 + c r)^2,   r = a (alpha - beta - m*),
and the Gram determinant and imbalance scale by P^2 and P, P = prod (1 - c^2 r^2). A GD trajectory at any
width costs O(steps). The outcome of a run is decided per point with early stopping:

- diverges: alpha + beta exceeds 1e12 times max(s0, Q, 1/(a c)) (a converging catapult peaks near 1/(a c));
- converges / catapult: a certificate that the loss never rises again and m -> m* holds (below), or m = m*
  exactly (a step can land on a minimum, e.g. a Theta0 = 1 at m0 = 0); catapult if the loss ever exceeded its
  initial value, converges otherwise;
- stalls: the g = 0 saddle (m0 m* <= 0) decaying to m = 0 (certified: |1 - c r| < 1 from here on);
- oscillates: none of these within `max_steps` (bounded, not converging: e.g. a c |m*| >= 1).

Certificates (delta = |m - m*|, r = a(m - m*)): since m' - m* = (m - m*)(1 - a Theta + a c^2 r m),
(A) delta < |m*|, c|r| < 1 and, with Theta between 2c(|m*| - delta) and 2c hypot(|m*| + delta, g),
    0 < a Theta - a^2 c^2 delta (|m*| + delta) and a Theta + a^2 c^2 delta (|m*| + delta) < 2: |r| contracts
    geometrically for ever (g cannot grow while c|r| < 1);
(B) off the saddle, c a delta < 1 and 2 a c hypot(M, g) + a^2 c^2 delta M < 1 with M = max(|m|, |m*|): m moves
    monotonically to m* like the flow (no overshoot), e.g. through a small-initialization plateau.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.core.flow import FlowState, Invariants, with_time_axis

GD_OUTCOMES = ("converges", "catapult", "diverges", "oscillates", "stalls")
GD_CODE = {name: code for code, name in enumerate(GD_OUTCOMES)}
_UNDECIDED = -1
_DIVERGENCE_FACTOR = 1e12
_CHECK_EVERY = 16


class GDResult(NamedTuple):
    """Outcome of exact GD per point: `outcome` codes into GD_OUTCOMES, `steps` taken until decided (or until
    settled, for converging runs), the state there (alpha, beta, P), and `loss_peak` = max excess loss /
    initial excess loss over the run (1 when nothing rose; 0/0 := 1)."""

    outcome: np.ndarray
    steps: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    scale: np.ndarray
    loss_peak: np.ndarray


class _Flat(NamedTuple):
    """Point constants flattened to 1-D for the step loop."""

    a: np.ndarray
    c: np.ndarray
    m_star: np.ndarray
    g0: np.ndarray
    saddle: np.ndarray
    bound: np.ndarray


def _flatten(inv: Invariants) -> tuple[_Flat, np.ndarray, np.ndarray, tuple]:
    shape = np.broadcast_shapes(inv.c.shape, inv.alpha0.shape, inv.teacher.shape)

    def flat(x):
        return np.broadcast_to(x, shape).ravel().astype(float)

    a, c, m_star = flat(inv.input_var), flat(inv.c), flat(inv.teacher)
    s0, Q = flat(inv.s0), flat(inv.Q)
    bound = _DIVERGENCE_FACTOR * np.maximum(np.maximum(s0, Q), 1.0 / (a * c))
    consts = _Flat(a, c, m_star, flat(inv.g), np.broadcast_to(inv.saddle, shape).ravel(), bound)
    return consts, flat(inv.alpha0), flat(inv.beta0), shape


def _step(alpha, beta, scale, a, c, m_star):
    """One exact GD step of (alpha, beta) and the Gram scale factor P."""
    cr = c * a * (alpha - beta - m_star)
    return alpha * (1.0 - cr) ** 2, beta * (1.0 + cr) ** 2, scale * ((1.0 - cr) * (1.0 + cr))


def _decide(alpha, beta, scale, k: _Flat, loss_ratio) -> np.ndarray:
    """Outcome code of each point at the current state, or _UNDECIDED."""
    a, c, m_star = k.a, k.c, k.m_star
    s = alpha + beta
    m = alpha - beta
    delta = np.abs(m - m_star)
    g = k.g0 * np.abs(scale)
    cr = c * a * delta
    wobble = (a * c) ** 2 * delta * (np.abs(m_star) + delta)
    cert_a = (
        (delta < np.abs(m_star)) & (cr < 1.0)
        & (2.0 * a * c * (np.abs(m_star) - delta) - wobble > 0.0)
        & (2.0 * a * c * np.hypot(np.abs(m_star) + delta, g) + wobble < 2.0)
    )
    big_m = np.maximum(np.abs(m), np.abs(m_star))
    cert_b = ~k.saddle & (cr < 1.0) & (2.0 * a * c * np.hypot(big_m, g) + (a * c) ** 2 * delta * big_m < 1.0)
    stall = k.saddle & (c * a * (np.abs(m) + np.abs(m_star)) < 2.0) & (m * m_star <= 0)
    converging = cert_a | cert_b | (m == m_star)  # r = 0 exactly: a fixed point, even an unstable one
    out = np.full(alpha.shape, _UNDECIDED, dtype=np.int8)
    out = np.where(converging, np.where(loss_ratio > 1.0, GD_CODE["catapult"], GD_CODE["converges"]), out)
    out = np.where(stall, GD_CODE["stalls"], out)
    return np.where(~np.isfinite(s) | (s > k.bound), GD_CODE["diverges"], out).astype(np.int8)


def gd_outcome(inv: Invariants, max_steps: int = 100_000, settle: bool = True) -> GDResult:
    """Run exact GD from every point until its outcome is decided (vectorized, early stopping per point).

    With `settle`, converging points keep stepping until m = m* to rounding (or max_steps), so the returned
    state is the end of training. Certificates are checked every `_CHECK_EVERY` steps (they stay true once
    true), the divergence bound at every step; `steps` is the step of the check that decided or settled the
    point. Shapes: all fields have the points' broadcast shape.
    """
    k, alpha, beta, shape = _flatten(inv)
    n = alpha.size
    scale = np.ones(n)
    loss0 = (alpha - beta - k.m_star) ** 2
    inv_loss0 = np.where(loss0 > 0, 1.0 / np.where(loss0 > 0, loss0, 1.0), 0.0)
    peak = np.ones(n)
    outcome = np.full(n, _UNDECIDED, dtype=np.int8)
    steps = np.full(n, max_steps, dtype=np.int64)
    active = np.arange(n)
    # working copies of the active points (compacted at each check)
    a_, b_, p_, pk, il, code = alpha.copy(), beta.copy(), scale.copy(), peak.copy(), inv_loss0, outcome.copy()
    sub = k
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for step in range(max_steps + 1):
            pk = np.maximum(pk, (a_ - b_ - sub.m_star) ** 2 * il)
            blown = ~(a_ + b_ <= sub.bound)
            if step % _CHECK_EVERY == 0 or step == max_steps or np.any(blown):
                undecided = code == _UNDECIDED
                code = np.where(undecided, _decide(a_, b_, p_, sub, pk), code)
                settled = _settled(a_, b_, sub.m_star, sub.a * sub.c) | (code == GD_CODE["diverges"])
                done = (code != _UNDECIDED) & ((not settle) | settled | (code == GD_CODE["stalls"]))
                finished = active[done]
                alpha[finished], beta[finished], scale[finished] = a_[done], b_[done], p_[done]
                peak[finished], outcome[finished], steps[finished] = pk[done], code[done], step
                keep = ~done
                active = active[keep]
                a_, b_, p_, pk, il, code = a_[keep], b_[keep], p_[keep], pk[keep], il[keep], code[keep]
                sub = _Flat(*(x[active] for x in k))
                if active.size == 0:
                    break
            if step == max_steps:
                break
            a_, b_, p_ = _step(a_, b_, p_, sub.a, sub.c, sub.m_star)
    alpha[active], beta[active], scale[active], peak[active], outcome[active] = a_, b_, p_, pk, code
    outcome[outcome == _UNDECIDED] = GD_CODE["oscillates"]
    return GDResult(*(x.reshape(shape) for x in (outcome, steps, alpha, beta, scale, peak)))


def _settled(alpha, beta, m_star, ca) -> np.ndarray:
    """m = m* to a few roundings of alpha + beta, or so close that a step (relative change 2 c a |m - m*| of
    alpha and beta) no longer moves them in float64: float GD has stopped."""
    gap = np.abs(alpha - beta - m_star)
    eps = np.finfo(float).eps
    return (gap <= 4.0 * eps * (alpha + beta + np.abs(m_star))) | (2.0 * ca * gap <= eps)


def _state(inv: Invariants, alpha, beta, scale) -> FlowState:
    """FlowState from the GD variables (Gram determinant G P^2 and imbalance c^2 Delta P)."""
    m = alpha - beta
    ntk = 2.0 * inv.c * (alpha + beta)
    imb = inv.ntk_imbalance * scale
    G = inv.gram.G * scale * scale
    big = (ntk + np.abs(imb)) / (2.0 * inv.c2)
    den = ntk + np.abs(imb)
    small = np.where(den > 0, 2.0 * (m * m + inv.output_scale**2 * G) / np.where(den > 0, den, 1.0), 0.0)
    norm_u2 = inv.lr_u * np.where(imb >= 0, big, small)
    norm_w2 = inv.lr_w * np.where(imb >= 0, small, big)
    r = np.hypot(m, inv.output_scale * np.sqrt(G))
    zeta = np.where(r > 0, m / np.where(r > 0, r, 1.0), 0.0)
    loss = 0.5 * inv.input_var * (m - inv.teacher) ** 2
    return FlowState(m=m, ntk=ntk, alignment=zeta, norm_u2=norm_u2, norm_w2=norm_w2, loss=loss, m_lin=m)


def gd_state(inv: Invariants, steps, max_steps: int = 100_000) -> FlowState:
    """Exact GD state after each number of steps in `steps` (sorted 1-D non-negative integers; np.inf means
    the end of training, as from `gd_outcome`). Shapes: points' broadcast shape + (len(steps),).

    `m_lin` is the kernel prediction of GD with the frozen NTK: m* + (m0 - m*) (1 - a Theta0)^k. A run that
    diverged reports m = +-inf and inf NTK, norms and loss from the first record past the divergence bound
    (its alignment stays at the last finite value).
    """
    steps = np.asarray(steps, dtype=float).ravel()
    finite = steps[np.isfinite(steps)]
    if np.any(steps < 0) or np.any(finite != np.floor(finite)) or np.any(np.diff(steps) < 0):
        raise ValueError("GD steps must be sorted non-negative integers (inf allowed last)")
    k, alpha, beta, shape = _flatten(inv)
    n = alpha.size
    scale = np.ones(n)
    records = np.empty((3, n, steps.size))
    diverged = np.zeros((n, steps.size), dtype=bool)
    gone = np.zeros(n, dtype=bool)
    position = 0
    last = int(finite.max()) if finite.size else 0
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for step in range(last + 1):
            while position < steps.size and steps[position] == step:
                records[:, :, position] = alpha, beta, scale
                diverged[:, position] = gone
                position += 1
            if step == last:
                break
            live = ~gone
            alpha[live], beta[live], scale[live] = _step(
                alpha[live], beta[live], scale[live], k.a[live], k.c[live], k.m_star[live]
            )
            gone |= alpha + beta > k.bound
    if position < steps.size:  # trailing inf: the end of training
        end = gd_outcome(inv, max_steps=max_steps)
        records[:, :, position] = end.alpha.ravel(), end.beta.ravel(), end.scale.ravel()
        diverged[:, position] = end.outcome.ravel() == GD_CODE["diverges"]
    out_shape = shape + (steps.size,)
    alpha_r, beta_r, scale_r = (x.reshape(out_shape) for x in records)
    state = _state(with_time_axis(inv), alpha_r, beta_r, scale_r)
    bad = diverged.reshape(out_shape)
    blown = {f: np.where(bad, np.inf, getattr(state, f)) for f in ("ntk", "norm_u2", "norm_w2", "loss")}
    state = state._replace(m=np.where(bad, np.copysign(np.inf, state.m), state.m), **blown)
    return state._replace(m_lin=_kernel_gd(inv, steps, out_shape))


def _kernel_gd(inv: Invariants, steps: np.ndarray, out_shape) -> np.ndarray:
    """Frozen-NTK GD: m* + (m0 - m*) (1 - a Theta0)^k (inf where that geometric series blows up)."""
    factor = 1.0 - np.asarray(inv.input_var * inv.ntk_init)[..., None]
    with np.errstate(over="ignore"):
        decay = np.power(factor, steps)
    lin = np.asarray(inv.teacher)[..., None] + np.asarray(inv.m0 - inv.teacher)[..., None] * decay
    return np.broadcast_to(lin, out_shape).copy()
