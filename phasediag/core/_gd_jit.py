"""Compiled exact GD (the `fast` extra, numba): the per-point rules of core/_gd_rules.py, point by point.

The step, the certificates and the settling test are those functions themselves (numba compiles
their Python source for scalars; `_select` becomes a branch); only the loop around them is written for
scalars. So a point's trajectory is the same sequence of float64 operations as in the vectorized loop, and
its result is bit-identical to it (tests/test_gd_jit.py); it is faster because each point stops on its own
(no passes over a shrinking array) and nothing leaves the registers between steps.

Overflow: the vectorized loop runs under np.errstate(over="raise"), the compiled one cannot see the floating-
point flags. A point is run here only while every operation provably stays below the float64 range (`_safe`,
`_SAFE`); any other point is handed back (`deferred`) to the vectorized loop, which raises or finishes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np
from numba.extending import overload, register_jitable

import phasediag.core._gd_rules as rules

#: magnitude below which every product the step and the checks form stays inside float64 (see `_safe`)
_SAFE = 1e100


def _digest() -> str:
    """Of this file and the rules: numba's cache checks only the compiled function's own file, so a changed
    rule would otherwise load stale machine code (e.g. after an upgrade, which leaves __pycache__ behind)."""
    text = b"".join(Path(module.__file__).read_bytes() for module in (rules, numba))
    return hashlib.sha256(text + Path(__file__).read_bytes()).hexdigest()[:16]


_DIGEST = _digest()


def _compiled(function):
    """numba.njit with the on-disk cache, under a name that carries _DIGEST (the cache files are named by it)."""
    function.__qualname__ = f"{function.__qualname__}_{_DIGEST}"
    return numba.njit(cache=True)(function)


@overload(rules.select)
def _select_scalar(condition, if_true, if_false):
    return lambda condition, if_true, if_false: if_true if condition else if_false


for _rule in (rules.best, rules.advance, rules.decide, rules.oscillating, rules.stops, rules.is_settled,
              rules.tail_ready):
    register_jitable(_rule)


@_compiled
def _safe(k, delta0):
    """Whether no operation of the point's run can overflow. While it runs, |alpha|, |beta|, |m|, |delta| <= B
    = bound + |m*| (before a step) and <= R = B (1 + a c B)^2 (after one, the state that may cross the bound),
    and every operand of the step and the checks is a product of at most three of R, a c R, c R, a R, a c,
    g0, |P| (checked after every step) and 1; with each below _SAFE = 1e100, none reaches 1e308. The loss
    ratio divides by delta0: R / |delta0| below _SAFE^3."""
    reach = k.bound + abs(k.m_star)
    reach = reach * (1.0 + k.a * k.c * reach) ** 2  # inf (so unsafe) where it overflows
    ac = k.a * k.c
    if not (reach <= _SAFE and ac * reach <= _SAFE and k.c * reach <= _SAFE and k.a * reach <= _SAFE
            and ac <= _SAFE and k.g0 <= _SAFE):
        return False
    return delta0 == 0 or reach <= _SAFE ** 3 * abs(delta0)


@_compiled
def _run(a, c, m_star, g0, saddle, bound, alpha, beta, delta, scale, slope, max_steps, settle, tail, outcome, steps,
         stopped, loss_peak, ready, deferred):
    """Each point from its start until decided (and, with `settle`, a converging one until its tail is ready, or
    without `tail` until it has settled), as gd.py's vectorized loop; the state where it stopped is written
    over the start arrays, points that leave the safe range are flagged in `deferred`."""
    for i in range(a.size):
        k = rules.Flat(a[i], c[i], m_star[i], g0[i], saddle[i], bound[i])
        st = rules.State(alpha[i], beta[i], delta[i], scale[i], slope[i])
        if not _safe(k, st.delta):
            deferred[i] = True
            continue
        d0 = abs(st.delta) if st.delta != 0 else np.inf
        peak_gap = 0.0  # max |delta| so far: the loss ratio's max is a monotone function of it
        code = rules.UNDECIDED
        decided = max_steps
        for step in range(max_steps + 1):
            peak_gap = max(peak_gap, abs(st.delta))
            blown = not (st.alpha + st.beta <= k.bound)
            done = blown
            if step % rules.CHECK_EVERY == 0 or step == max_steps:  # (a constant: no division)
                if code == rules.UNDECIDED:
                    code = rules.decide(st, k, _loss_ratio(peak_gap, d0))
                    if code != rules.UNDECIDED:
                        decided = step
                done = done or (code != rules.UNDECIDED and (not settle or rules.is_settled(st, k)
                                                             or rules.stops(code)))
            if settle and tail and not blown and (code == rules.CONVERGES or code == rules.CATAPULT):
                if rules.tail_ready(st, k):
                    ready[i] = done = True
            if blown:
                code, decided = rules.DIVERGES, step
            if done or step == max_steps:
                break
            st = rules.advance(st, k)
            if not abs(st.scale) <= _SAFE:
                deferred[i] = True
                break
        outcome[i], steps[i], stopped[i], loss_peak[i] = code, decided, step, _loss_ratio(peak_gap, d0)
        alpha[i], beta[i], delta[i], scale[i], slope[i] = st


@_compiled
def _loss_ratio(peak_gap, d0):
    """max over the run of min(|delta / delta0|, 1e150)^2 and 1 (the vectorized loop's running maximum of it)."""
    return max(1.0, min(peak_gap / d0, 1e150) ** 2)


def outcome(k: rules.Flat, start: rules.State, max_steps: int, settle: bool, tail: bool = True):
    """(outcome, steps, stopped, state where stopped (a stall's: its limit), loss_peak, tail-ready, deferred) of
    every point; outcome UNDECIDED where undecided (gd.gd_outcome takes the tails and the deferred points on
    from here)."""
    n = k.a.size
    end = [np.array(x, dtype=float, copy=True) for x in start]
    codes, taken, stopped = np.empty(n, dtype=np.int8), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    peak, ready, deferred = np.empty(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    _run(*(np.ascontiguousarray(x) for x in k), *end, max_steps, settle, tail, codes, taken, stopped, peak, ready,
         deferred)
    end = rules.State(*end)
    rules.stall_limit(end, k, (codes == rules.STALLS) & ~deferred)  # (as the vectorized loop: the exact limit)
    return codes, taken, stopped, end, peak, ready, deferred
