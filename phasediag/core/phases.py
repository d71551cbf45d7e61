"""Order parameters and phase labels at a finite point (docs/theory.md section 6).

Codes index `PHASES` (docs/theory.md section 6). Besides "kernel, aligning" there is its mirror image: with
imbalanced layers and |m0| > |m*| the layers can turn *away* from each other while the NTK stays put (e.g.
kappa = 1, eta_u = 1e3, eta_w = 1e-3, Gram U = W = 10, V = 3, m* = 0.1: |zeta| 0.3 -> 0.0105 with ntk_change
-1.8e-7), so
"kernel_disaligning" is a label too, chosen by the same larger-amount rule as the feature-learning mechanisms.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phasediag.core.flow import (FlowState, Invariants, alignment_of, flow_state_and_change, lean, lean_field,
                                 misalignment_of, shaped)

PHASES = (
    "kernel",
    "kernel_aligning",
    "kernel_disaligning",
    "alignment",
    "disalignment",
    "rescaling",
    "saddle",
)
PHASE_CODE = {name: code for code, name in enumerate(PHASES)}
# coarse regime and mechanism of each label (mechanism None: nothing beyond the regime)
REGIME = {
    "kernel": "kernel", "kernel_aligning": "kernel", "kernel_disaligning": "kernel",
    "alignment": "feature_learning", "disalignment": "feature_learning", "rescaling": "feature_learning",
    "saddle": "saddle",
}
MECHANISM = {
    "kernel": None, "kernel_aligning": "alignment", "kernel_disaligning": "disalignment",
    "alignment": "alignment", "disalignment": "disalignment", "rescaling": "rescaling", "saddle": None,
}


class OrderParameters(NamedTuple):
    """Continuous order parameters of a point over the horizon [0, T].

    ntk_change = Theta(T)/Theta0 - 1; alignment_init/final = zeta(0), zeta(T) (signed cosines);
    alignment_gain = |zeta_T| - min|zeta| and disalignment = |zeta_0| - min|zeta| over the path (min|zeta| = 0
    if m crosses 0; both 0 when G = 0, where the layers stay parallel); not_converged: excess loss at T above
    1% of the initial excess (only for finite T and m0 != m*). alignment_gain_complement and
    disalignment_complement: 1 - alignment_gain and 1 - disalignment formed without cancellation (from
    1 - |zeta| = kappa^2 G / (r (r + |m|))), which the rules use for an alignment_threshold above 1/2; None
    where not known (measured trajectories).
    """

    ntk_change: np.ndarray
    alignment_init: np.ndarray
    alignment_final: np.ndarray
    alignment_gain: np.ndarray
    disalignment: np.ndarray
    not_converged: np.ndarray
    alignment_gain_complement: np.ndarray | None = None
    disalignment_complement: np.ndarray | None = None


def order_parameters(inv: Invariants, horizon=np.inf,
                     at_horizon: tuple[FlowState, np.ndarray] | None = None,
                     complements: bool = True) -> OrderParameters:
    """Order parameters of every point at training horizon T = `horizon` (steps; inf = end of training).
    `at_horizon`: `flow_state_and_change(inv, horizon)` if the caller has it already; `complements`: also
    1 - alignment_gain and 1 - disalignment without cancellation (what the rules use for an
    alignment_threshold above 1/2; a sweep at a lower threshold leaves them out: None)."""
    final, change = at_horizon if at_horizon is not None else flow_state_and_change(inv, horizon)
    shape = np.broadcast_shapes(np.shape(final.m), np.shape(inv.m0))
    inv, final = lean(inv), type(final)(*(lean_field(x) for x in final))  # constants as scalars
    zeta0 = alignment_of(inv, inv.m0)
    zeta_T = final.alignment
    abs0, abs_T = np.abs(zeta0), np.abs(zeta_T)
    min_abs = np.minimum(abs0, abs_T)
    crosses = inv.m0 * final.m < 0
    if np.any(crosses):
        min_abs = np.where(crosses, 0.0, min_abs)
    gain, dis = abs_T - min_abs, abs0 - min_abs
    gain_c = misalignment_of(inv, final.m) + min_abs if complements else None
    dis_c = misalignment_of(inv, inv.m0) + min_abs if complements else None
    rotates = inv.gram.G > 0
    if not np.all(rotates):
        gain, dis = np.where(rotates, gain, 0.0), np.where(rotates, dis, 0.0)
        if complements:
            gain_c, dis_c = np.where(rotates, gain_c, 1.0), np.where(rotates, dis_c, 1.0)
    if np.all(np.isinf(horizon)):  # the end of training: converged by definition
        not_converged = np.zeros(np.shape(final.loss), dtype=bool)
    else:
        loss0 = 0.5 * inv.input_var * inv.gap**2
        not_converged = np.isfinite(horizon) & (inv.gap != 0) & (final.loss > 0.01 * loss0)
    return shaped(OrderParameters(
        ntk_change=change, alignment_init=zeta0, alignment_final=zeta_T,
        alignment_gain=gain, disalignment=dis, not_converged=np.asarray(not_converged),
        alignment_gain_complement=gain_c, disalignment_complement=dis_c,
    ), shape)


def uses_complements(alignment_threshold: float) -> bool:
    """Whether the rules at this alignment_threshold compare 1 - alignment_gain and 1 - disalignment (formed
    without cancellation) with 1 - threshold: above 1/2, where the gains are 1 minus small numbers and
    comparing them directly would lose those numbers. The one place that decides it: whoever computes
    order parameters for the rules asks here whether they need the complements."""
    return alignment_threshold > 0.5


def classify_order(
    inv: Invariants, op: OrderParameters, ntk_threshold: float = 0.1, alignment_threshold: float = 0.1
) -> np.ndarray:
    """Phase codes (into PHASES) from precomputed order parameters (rules of docs/theory.md section 6)."""
    return phase_codes(op, inv.saddle, ntk_threshold, alignment_threshold)


_PHASE_TABLE = np.array([PHASE_CODE[name] for name in (
    "rescaling", "rescaling", "disalignment", "alignment",  # NTK moved: not rotated (either), rotated
    "kernel", "kernel", "kernel_disaligning", "kernel_aligning",  # NTK stayed
)], dtype=np.int8)


def phase_codes(
    op: OrderParameters, saddle, ntk_threshold: float = 0.1, alignment_threshold: float = 0.1
) -> np.ndarray:
    """The rules of docs/theory.md section 6 on order parameters, however obtained (closed form or a measured
    trajectory); `saddle` (bool array) overrides them. Returns int8 codes into PHASES."""
    # the rules as a table lookup: index = 4 kernel + 2 rotated + mechanism_alignment (int8 arithmetic)
    index = (np.abs(op.ntk_change) < ntk_threshold).astype(np.int8) << 2
    if uses_complements(alignment_threshold) and op.alignment_gain_complement is not None:
        # near full alignment the gains are 1 minus small numbers: compare those, formed without cancellation
        # (1 - threshold is exact here), so that the rule is as sharp as the cosines are accurate
        gain_c, dis_c = op.alignment_gain_complement, op.disalignment_complement
        index |= (np.minimum(gain_c, dis_c) <= 1.0 - alignment_threshold).astype(np.int8) << 1
        index |= gain_c <= dis_c
    else:
        index |= (np.maximum(op.alignment_gain, op.disalignment) >= alignment_threshold).astype(np.int8) << 1
        index |= op.alignment_gain >= op.disalignment
    code = _PHASE_TABLE[index]
    if np.any(saddle):
        code = np.where(saddle, np.int8(PHASE_CODE["saddle"]), code)
    return np.asarray(code, dtype=np.int8)


def classify(
    inv: Invariants, horizon=np.inf, ntk_threshold: float = 0.1, alignment_threshold: float = 0.1
) -> np.ndarray:
    """Phase code of every point (int8 array indexing PHASES) at the given horizon and thresholds."""
    order = order_parameters(inv, horizon, complements=uses_complements(alignment_threshold))
    return classify_order(inv, order, ntk_threshold, alignment_threshold)
