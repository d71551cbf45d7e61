"""Exact discrete gradient descent (docs/theory.md section 9).

With p = u/sqrt(eta_u), q = w/sqrt(eta_w) one GD step is p' = p - c r q, q' = q - c r p, so
alpha = c|p + q|^2/4 and beta = c|p - q|^2/4 obey exactly
    alpha' = alpha (1 - c r)^2,   beta' = beta (1 + c r)^2,   r = a (m - m*),
the Gram determinant and imbalance scale by P^2 and P, P = prod (1 - c^2 r^2), and the distance to the
teacher obeys delta' = delta (1 - a Theta + a^2 c^2 delta m) with delta = m - m*. delta is carried as its
own variable: r taken from alpha - beta would lose every digit when alpha ~ beta >> |m - m*| (kernel regime,
large initialization); elsewhere it is taken from alpha - beta, since the recurrence alone drifts off stable
oscillating orbits (its errors accumulate unchecked). A GD trajectory at any width costs O(steps). The outcome of a run is decided per point with early stopping:

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

from phasediag.core.flow import (FlowState, Invariants, cosine, flow_state, kernel_prediction, layer_norms,
                                 with_time_axis)

GD_OUTCOMES = ("converges", "catapult", "diverges", "oscillates", "stalls")
GD_CODE = {name: code for code, name in enumerate(GD_OUTCOMES)}
_UNDECIDED = -1
_DIVERGENCE_FACTOR = 1e12
_CHECK_EVERY = 16


class GDResult(NamedTuple):
    """Outcome of exact GD per point: `outcome` codes into GD_OUTCOMES, `steps` taken until decided (or until
    settled, for converging runs), the state there (alpha, beta, delta = m - m*, P), `loss_peak` = max
    excess loss / initial excess loss over the run (1 when nothing rose; 0/0 := 1), and the slope m there."""

    outcome: np.ndarray
    steps: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    delta: np.ndarray
    scale: np.ndarray
    loss_peak: np.ndarray
    slope: np.ndarray


class _Flat(NamedTuple):
    """Point constants flattened to 1-D for the step loop."""

    a: np.ndarray
    c: np.ndarray
    m_star: np.ndarray
    g0: np.ndarray
    saddle: np.ndarray
    bound: np.ndarray


class _State(NamedTuple):
    """The exact GD state: alpha, beta >= 0, delta = m - m*, Gram scale P, and the slope m itself (each of
    m and delta carried in the form that rounds least, see `_step`)."""

    alpha: np.ndarray
    beta: np.ndarray
    delta: np.ndarray
    scale: np.ndarray
    slope: np.ndarray

    def take(self, index) -> "_State":
        return _State(*(x[index] for x in self))


def _flatten(inv: Invariants) -> tuple[_Flat, _State, tuple]:
    shape = np.broadcast_shapes(inv.c.shape, inv.alpha0.shape, inv.teacher.shape, inv.gap.shape)

    def flat(x):
        return np.broadcast_to(x, shape).ravel().astype(float)

    a, c, m_star = flat(inv.input_var), flat(inv.c), flat(inv.teacher)
    s0, Q = flat(inv.s0), flat(inv.Q)
    with np.errstate(over="raise", divide="raise"):  # beyond float range: an error, as the steps themselves
        bound = _DIVERGENCE_FACTOR * np.maximum(np.maximum(s0, Q), 1.0 / (a * c))
    consts = _Flat(a, c, m_star, flat(inv.g), np.broadcast_to(inv.saddle, shape).ravel(), bound)
    start = _State(flat(inv.alpha0), flat(inv.beta0), -flat(inv.gap), np.ones(a.size), flat(inv.m0))
    return consts, start, shape


#: how much more accurate (by its error bound) the delta recurrence must be than delta = (alpha - beta) - m*
#: to be taken (two bits: on the oscillating orbits the two bounds are within 2x of each other)
RECURRENCE_GAIN = 4.0


def _step(st: _State, k: _Flat) -> _State:
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
    delta = _best((((alpha - beta) - k.m_star, alpha + beta + np.abs(k.m_star)),
                   (st.delta * factor, RECURRENCE_GAIN * np.abs(st.delta) * (1.0 + k.a * ntk + np.abs(growth)))))
    shrink = (1.0 - cr) * (1.0 + cr)
    spread, pull = 1.0 + cr * cr, (k.a * st.delta) * ntk  # m' = m (1 + (c r)^2) - r Theta
    slope = _best(((alpha - beta, alpha + beta),
                   (k.m_star + delta, np.abs(k.m_star) + np.abs(delta)),
                   (m * spread - pull, np.abs(m) * spread + np.abs(pull))))
    # P only matters where g > 0 (else G = Delta = 0 and P could grow without bound)
    return _State(alpha, beta, delta, np.where(k.g0 > 0, st.scale * shrink, st.scale), slope)


def _best(candidates) -> np.ndarray:
    """The value of the (value, size of the terms it combines) pair with the smallest size (the first on ties)."""
    value, size = candidates[0]
    for other, other_size in candidates[1:]:
        better = other_size < size
        value, size = np.where(better, other, value), np.where(better, other_size, size)
    return value


def _decide(st: _State, k: _Flat, loss_ratio) -> np.ndarray:
    """Outcome code of each point at the current state, or _UNDECIDED."""
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
    out = np.full(s.shape, _UNDECIDED, dtype=np.int8)
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
    k, state, shape = _flatten(inv)
    n = state.alpha.size
    final = _State(*(x.copy() for x in state))
    delta0 = np.where(state.delta != 0, state.delta, np.inf)  # loss ratio (delta/delta0)^2; 0 when delta0 = 0
    peak = np.ones(n)
    outcome = np.full(n, _UNDECIDED, dtype=np.int8)
    steps = np.full(n, max_steps, dtype=np.int64)
    active = np.arange(n)
    st, sub, pk, d0, code = state, k, peak.copy(), delta0, outcome.copy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for step in range(max_steps + 1):
            pk = np.maximum(pk, np.minimum(np.abs(st.delta / d0), 1e150) ** 2)
            blown = ~(st.alpha + st.beta <= sub.bound)
            scheduled = step % _CHECK_EVERY == 0 or step == max_steps
            if scheduled or np.any(blown):
                if scheduled:  # the same steps for every point, so a point's result never depends on others
                    code = np.where(code == _UNDECIDED, _decide(st, sub, pk), code)
                    settled = _settled(st, sub) | (code == GD_CODE["diverges"])
                    done = (code != _UNDECIDED) & ((not settle) | settled | (code == GD_CODE["stalls"]))
                else:
                    done = np.zeros(blown.shape, dtype=bool)
                code = np.where(blown, GD_CODE["diverges"], code)  # retire diverged points at once
                done |= blown
                finished = active[done]
                for full, part in zip(final, st):
                    full[finished] = part[done]
                peak[finished], outcome[finished], steps[finished] = pk[done], code[done], step
                keep = ~done
                active = active[keep]
                st, pk, d0, code = st.take(keep), pk[keep], d0[keep], code[keep]
                sub = _Flat(*(x[active] for x in k))
                if active.size == 0:
                    break
            if step == max_steps:
                break
            st = _step(st, sub)
    for full, part in zip(final, st):
        full[active] = part
    peak[active], outcome[active] = pk, code
    outcome[outcome == _UNDECIDED] = GD_CODE["oscillates"]
    fields = (outcome, steps, final.alpha, final.beta, final.delta, final.scale, peak, final.slope)
    return GDResult(*(x.reshape(shape) for x in fields))


def _settled(st: _State, k: _Flat) -> np.ndarray:
    """m = m* to a few roundings, or so close that a step (relative change 2 c a |m - m*| of alpha and
    beta) no longer moves alpha and beta in float64: float GD has stopped."""
    gap = np.abs(st.delta)
    eps = np.finfo(float).eps
    return (gap <= 4.0 * eps * (st.alpha + st.beta + np.abs(k.m_star))) | (2.0 * k.c * k.a * gap <= eps)


def _state(inv: Invariants, st: _State) -> FlowState:
    """FlowState from the GD variables (Gram determinant G P^2 and imbalance c^2 Delta P)."""
    m = st.slope
    ntk = 2.0 * inv.c * (st.alpha + st.beta)
    kappa_sqrt_g = inv.output_scale * np.sqrt(inv.gram.G) * np.abs(st.scale)  # G scales by P^2
    norm_u2, norm_w2 = layer_norms(inv.lr_u, inv.lr_w, inv.c2, inv.ntk_imbalance * st.scale, kappa_sqrt_g, m, ntk)
    zeta = cosine(m, kappa_sqrt_g, inv.m0)
    loss = 0.5 * inv.input_var * st.delta**2
    return FlowState(m=m, ntk=ntk, alignment=zeta, norm_u2=norm_u2, norm_w2=norm_w2, loss=loss, m_lin=m)


def gd_state(inv: Invariants, steps, max_steps: int = 100_000) -> FlowState:
    """Exact GD state after each number of steps in `steps` (sorted 1-D non-negative integers; np.inf means
    the end of training, as from `gd_outcome`). Shapes: points' broadcast shape + (len(steps),).

    Step 0 is the initial state exactly. `m_lin` is the kernel prediction of GD with the frozen NTK,
    `kernel_prediction(..., steps=True)`: m* + (m0 - m*) (1 - a Theta0)^k (+-inf where that geometric sequence
    blows up). A run that diverged reports m = +-inf and inf NTK, norms and loss from the first record past the
    divergence bound (its alignment stays at the last finite value).
    """
    steps = np.asarray(steps, dtype=float).ravel()
    finite = steps[np.isfinite(steps)]
    if np.any(steps < 0) or np.any(finite != np.floor(finite)) or np.any(np.diff(steps) < 0):
        raise ValueError("GD steps must be sorted non-negative integers (inf allowed last)")
    k, st, shape = _flatten(inv)
    n = st.alpha.size
    records = np.empty((len(_State._fields), n, steps.size))
    diverged = np.zeros((n, steps.size), dtype=bool)
    gone = np.zeros(n, dtype=bool)
    position = 0
    last = int(finite.max()) if finite.size else 0
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for step in range(last + 1):
            while position < steps.size and steps[position] == step:
                records[:, :, position] = st
                diverged[:, position] = gone
                position += 1
            if step == last:
                break
            live = ~gone
            stepped = _step(st.take(live), _Flat(*(x[live] for x in k)))
            for full, part in zip(st, stepped):
                full[live] = part
            gone |= ~(st.alpha + st.beta <= k.bound)
    if position < steps.size:  # trailing inf: the end of training
        end = gd_outcome(inv, max_steps=max_steps)
        records[:, :, position] = [getattr(end, field).ravel() for field in _State._fields]
        diverged[:, position] = end.outcome.ravel() == GD_CODE["diverges"]
    out_shape = shape + (steps.size,)
    per_step = with_time_axis(inv)
    state = _state(per_step, _State(*(x.reshape(out_shape) for x in records)))
    bad = diverged.reshape(out_shape)
    blown = {f: np.where(bad, np.inf, getattr(state, f)) for f in ("ntk", "norm_u2", "norm_w2", "loss")}
    state = state._replace(m=np.where(bad, np.copysign(np.inf, state.m), state.m), **blown)
    state = _exact_start(inv, state, steps == 0)
    m_lin = kernel_prediction(per_step.m0, per_step.teacher, per_step.ntk_init, per_step.input_var, steps,
                              steps=True, gap=per_step.gap, loss=False).m_lin
    return state._replace(m_lin=np.broadcast_to(m_lin, out_shape).copy())


def gd_end_state(inv: Invariants, result: GDResult) -> FlowState:
    """The state where each run of `result` (= gd_outcome(inv, ...)) stopped: the end of training of a converging
    run, step max_steps of an oscillating one, and for a diverging run the first step past the divergence bound
    (finite values, where gd_state reports inf). Shapes: the points' broadcast shape."""
    return _state(inv, _State(result.alpha, result.beta, result.delta, result.scale, result.slope))


def _exact_start(inv: Invariants, state: FlowState, at_zero: np.ndarray) -> FlowState:
    """Records at step 0 are the initial state exactly (not a re-evaluation from alpha, beta)."""
    if not np.any(at_zero):
        return state
    start = flow_state(inv, 0.0)
    return FlowState(*(np.where(at_zero, np.asarray(s)[..., None], x) for s, x in zip(start, state)))
