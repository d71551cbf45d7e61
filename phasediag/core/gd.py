"""Exact discrete gradient descent (docs/theory.md section 9).

With p = u/sqrt(eta_u), q = w/sqrt(eta_w) one GD step is p' = p - c r q, q' = q - c r p, so
alpha = c|p + q|^2/4 and beta = c|p - q|^2/4 obey exactly
    alpha' = alpha (1 - c r)^2,   beta' = beta (1 + c r)^2,   r = a (m - m*),
the Gram determinant and imbalance scale by P^2 and P, P = prod (1 - c^2 r^2), and the distance to the
teacher obeys delta' = delta (1 - a Theta + a^2 c^2 delta m) with delta = m - m*. delta is carried as its
own variable: r taken from alpha - beta would lose every digit when alpha ~ beta >> |m - m*| (kernel regime,
large initialization); elsewhere it is taken from alpha - beta, since the recurrence alone drifts off stable
oscillating orbits (its errors accumulate unchecked). A GD trajectory at any width costs O(steps).

The per-point rules (the step, the certificates
that decide a run, the settling test) are in core/_gd_rules.py; this module runs them over many points
(vectorized, or compiled by core/_gd_jit.py with the `fast` extra) and builds states from them.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from phasediag.core._gd_rules import (CATAPULT, CHECK_EVERY, CONVERGES, DIVERGES, GD_CODE, STALLS, UNDECIDED, Flat,
                                      State, advance, decide, flatten, is_settled, stall_limit, stops, tail_end,
                                      tail_ready)
from phasediag.core.flow import (FlowState, Invariants, cosine, flow_state, kernel_prediction, layer_norms,
                                 with_time_axis)

class GDResult(NamedTuple):
    """Outcome of exact GD per point: `outcome` codes into GD_OUTCOMES, `steps` = the step at which it was
    decided (a check, or the step past the divergence bound), the end state (alpha, beta, delta = m - m*, P and
    the slope m; see gd_outcome), `loss_peak` = max excess loss / initial excess loss over the steps 0 ..
    `stopped` (1 when nothing rose; 0/0 := 1): the whole run's peak when it converges or stalls (the loss never
    rises after the certificate), but an oscillating run's only up to its certificate (a lower bound on its
    orbit's peak), and `stopped` = the step where the run was left (its tail taken, settled, decided, past the
    divergence bound or max_steps; a stall's end state is its limit, not the state at `stopped`)."""

    outcome: np.ndarray
    steps: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    delta: np.ndarray
    scale: np.ndarray
    loss_peak: np.ndarray
    slope: np.ndarray
    stopped: np.ndarray


def gd_outcome(inv: Invariants, max_steps: int = 100_000, settle: bool = True, tail: bool = True) -> GDResult:
    """Run exact GD from every point until its outcome is decided (early stopping per point).

    With `settle` the returned state of a converging run is its end of training: it steps on until the rest of
    the run can be summed in closed form (the exact tail, docs/theory.md section 9; m = m* exactly there), or,
    without `tail`, until m = m* to rounding (or max_steps). A stalling run's state is its exact limit (m = 0,
    alpha = beta = 0: docs/theory.md section 9), whichever step decided it. Certificates are checked every
    `CHECK_EVERY` steps (they stay true once true), the divergence bound and the tail at every step. An
    oscillating run reports its state where certified (or at max_steps), a diverging one at the first step
    past the bound. Every rule
    is per point, so a point's result never depends on the others. With the `fast` extra (numba) the points
    run compiled (core/_gd_jit.py, bit-identical), else in one vectorized loop.
    Shapes: all fields have the points' broadcast shape.
    """
    k, start, shape = flatten(inv)
    compiled = _compiled() if start.alpha.size >= COMPILED_MIN_POINTS or _compiled_outcome else None
    if compiled is None:
        outcome, steps, stopped, final, peak, ready = _outcome_vectorized(k, start, max_steps, settle, tail)
    else:
        outcome, steps, stopped, final, peak, ready, deferred = compiled(k, start, max_steps, settle, tail)
        if np.any(deferred):  # near the float64 range: the loop that watches the floating-point flags
            rest = np.flatnonzero(deferred)
            parts = _outcome_vectorized(Flat(*(x[rest] for x in k)), start.take(rest), max_steps, settle, tail)
            for full, part in zip((outcome, steps, stopped, *final, peak, ready), (*parts[:3], *parts[3], *parts[4:])):
                full[rest] = part
    if np.any(ready):  # converging runs: the end of training from the exact tail
        at = np.flatnonzero(ready)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            end = tail_end(final.take(at), Flat(*(x[at] for x in k)))
        for full, part in zip(final, end):
            full[at] = part
    outcome[outcome == UNDECIDED] = GD_CODE["oscillates"]
    fields = (outcome, steps, final.alpha, final.beta, final.delta, final.scale, peak, final.slope, stopped)
    return GDResult(*(x.reshape(shape) for x in fields))


#: fewer points run vectorized even with numba until the compiled loop is loaded (~1 s per process); once it
#: is (a sweep ran, e.g. before its boundaries are searched), every call runs compiled
COMPILED_MIN_POINTS = 64
#: set to 0 to run GD vectorized although numba is installed (same results; e.g. where numba misbehaves)
COMPILED_ENV = "PHASEDIAG_GD_COMPILED"


def _compiled():
    """The compiled loop (core/_gd_jit.py) when numba is installed and not switched off, else None. Imported
    on first use: numba takes ~0.5 s to import."""
    global _compiled_outcome
    if os.environ.get(COMPILED_ENV, "1") == "0":
        return None
    if _compiled_outcome is None:
        try:
            from phasediag.core._gd_jit import outcome
        except ImportError:
            outcome = False
        _compiled_outcome = outcome
    return _compiled_outcome or None


_compiled_outcome = None


def _outcome_vectorized(k: Flat, state: State, max_steps: int, settle: bool, tail: bool):
    """(outcome codes with UNDECIDED left, steps, stopped, state there, loss_peak, tail-ready) of flat points,
    all in one loop over the shrinking array of active points (under np.errstate: overflow raises
    FloatingPointError)."""
    n = state.alpha.size
    final = State(*(x.copy() for x in state))
    delta0 = np.where(state.delta != 0, state.delta, np.inf)  # loss ratio (delta/delta0)^2; 0 when delta0 = 0
    peak = np.ones(n)
    outcome = np.full(n, UNDECIDED, dtype=np.int8)
    steps = np.full(n, max_steps, dtype=np.int64)
    stopped = steps.copy()
    ready = np.zeros(n, dtype=bool)
    active = np.arange(n)
    st, sub, pk, d0, code, decided = state, k, peak.copy(), delta0, outcome.copy(), steps.copy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for step in range(max_steps + 1):
            pk = np.maximum(pk, np.minimum(np.abs(st.delta / d0), 1e150) ** 2)
            blown = ~(st.alpha + st.beta <= sub.bound)
            done = blown.copy()
            if step % CHECK_EVERY == 0 or step == max_steps:  # the same steps for every point
                fresh = code == UNDECIDED
                code = np.where(fresh, decide(st, sub, pk), code).astype(np.int8)
                decided = np.where(fresh & (code != UNDECIDED), step, decided)
                done |= (code != UNDECIDED) & ((not settle) | is_settled(st, sub) | stops(code))
            at_tail = np.zeros(blown.shape, dtype=bool)
            converging = np.flatnonzero((code == CONVERGES) | (code == CATAPULT)) if settle and tail else ()
            if len(converging):  # (checked at every step: the tail is taken at the first step it is exact)
                at_tail[converging] = tail_ready(st.take(converging), Flat(*(x[converging] for x in sub)))
                at_tail &= ~blown
                done |= at_tail
            if np.any(done):
                code = np.where(blown, DIVERGES, code)  # retire diverged points at once
                decided = np.where(blown, step, decided)
                finished = active[done]
                for full, part in zip(final, st):
                    full[finished] = part[done]
                peak[finished], outcome[finished], steps[finished] = pk[done], code[done], decided[done]
                stopped[finished] = step
                ready[finished] = at_tail[done]
                keep = ~done
                active = active[keep]
                st, pk, d0, code, decided = st.take(keep), pk[keep], d0[keep], code[keep], decided[keep]
                sub = Flat(*(x[active] for x in k))
                if active.size == 0:
                    break
            if step == max_steps:
                break
            st = advance(st, sub)
    for full, part in zip(final, st):
        full[active] = part
    peak[active], outcome[active], steps[active] = pk, code, decided
    stall_limit(final, k, outcome == STALLS)
    return outcome, steps, stopped, final, peak, ready


def _state(inv: Invariants, st: State) -> FlowState:
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
    k, st, shape = flatten(inv)
    n = st.alpha.size
    records = np.empty((len(State._fields), n, steps.size))
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
            stepped = advance(st.take(live), Flat(*(x[live] for x in k)))
            for full, part in zip(st, stepped):
                full[live] = part
            gone |= ~(st.alpha + st.beta <= k.bound)
    if position < steps.size:  # trailing inf: the end of training
        end = gd_outcome(inv, max_steps=max_steps)
        records[:, :, position] = [getattr(end, field).ravel() for field in State._fields]
        diverged[:, position] = end.outcome.ravel() == GD_CODE["diverges"]
    out_shape = shape + (steps.size,)
    per_step = with_time_axis(inv)
    state = _state(per_step, State(*(x.reshape(out_shape) for x in records)))
    bad = diverged.reshape(out_shape)
    blown = {f: np.where(bad, np.inf, getattr(state, f)) for f in ("ntk", "norm_u2", "norm_w2", "loss")}
    state = state._replace(m=np.where(bad, np.copysign(np.inf, state.m), state.m), **blown)
    state = _exact_start(inv, state, steps == 0)
    m_lin = kernel_prediction(per_step.m0, per_step.teacher, per_step.ntk_init, per_step.input_var, steps,
                              steps=True, gap=per_step.gap, loss=False).m_lin
    return state._replace(m_lin=np.broadcast_to(m_lin, out_shape).copy())


def gd_end_state(inv: Invariants, result: GDResult) -> FlowState:
    """The state where each run of `result` (= gd_outcome(inv, ...)) stopped: the end of training of a converging
    run (of a stall: its limit), where an oscillating one was certified (or step max_steps), and for a diverging
    run the first step past the divergence bound (finite values, where gd_state reports inf). Shapes: the
    points' broadcast shape."""
    return _state(inv, State(result.alpha, result.beta, result.delta, result.scale, result.slope))


def _exact_start(inv: Invariants, state: FlowState, at_zero: np.ndarray) -> FlowState:
    """Records at step 0 are the initial state exactly (not a re-evaluation from alpha, beta)."""
    if not np.any(at_zero):
        return state
    start = flow_state(inv, 0.0)
    return FlowState(*(np.where(at_zero, np.asarray(s)[..., None], x) for s, x in zip(start, state)))
