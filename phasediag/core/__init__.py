"""The pure numerical core: exact solution, sampling, order parameters (no I/O, YAML or plotting).

See docs/core-api.md for the interface and docs/theory.md for the mathematics.
"""

from phasediag.core.flow import (
    FlowState,
    Invariants,
    KernelPrediction,
    Problem,
    alignment_of,
    broadcast,
    flow_state,
    flow_state_and_change,
    invariants,
    kernel_prediction,
    ntk_change,
    relaxation_time,
    t_learn,
    with_time_axis,
)
from phasediag.core._gd_rules import GD_CODE, GD_OUTCOMES
from phasediag.core.gd import GDResult, gd_end_state, gd_outcome, gd_state
from phasediag.core.gram import Gram, UnitDraws, explicit_gram, sample_gram, scaled_gram, typical_gram, unit_draws
from phasediag.core.relu import ReluSolution, relu_solution
from phasediag.core.phases import (
    MECHANISM,
    PHASE_CODE,
    PHASES,
    REGIME,
    OrderParameters,
    classify,
    classify_order,
    order_parameters,
    phase_codes,
    uses_complements,
)
from phasediag.core.scaling import (
    CHECKED,
    EXPONENT_NAMES,
    HEALTH_FLAGS,
    LIMIT_PHASES,
    PARAMETRIZATIONS,
    ExactLimit,
    LimitExponents,
    Parametrization,
    ScalingExponents,
    SlopeCheck,
    check_exponents,
    exact,
    exact_exponents,
    exact_limit,
    exact_limit_exponents,
    hyperparameters,
    limit_exponents,
    limit_health,
    limit_phase,
    loglog_slope,
    parametrization,
)

__all__ = [
    "FlowState", "Invariants", "KernelPrediction", "Problem", "alignment_of", "broadcast", "flow_state",
    "flow_state_and_change", "invariants", "kernel_prediction", "ntk_change", "relaxation_time", "t_learn",
    "with_time_axis", "GD_CODE", "GD_OUTCOMES", "GDResult", "gd_end_state", "gd_outcome", "gd_state", "Gram",
    "explicit_gram", "sample_gram", "typical_gram", "UnitDraws", "unit_draws", "scaled_gram",
    "ReluSolution", "relu_solution", "MECHANISM", "PHASE_CODE", "PHASES", "REGIME",
    "OrderParameters", "classify", "classify_order", "order_parameters", "phase_codes", "uses_complements",
    "CHECKED", "EXPONENT_NAMES", "HEALTH_FLAGS", "LIMIT_PHASES", "PARAMETRIZATIONS", "ExactLimit",
    "LimitExponents", "Parametrization", "ScalingExponents", "SlopeCheck", "check_exponents", "exact",
    "exact_exponents", "exact_limit", "exact_limit_exponents", "hyperparameters", "limit_exponents",
    "limit_health", "limit_phase", "loglog_slope", "parametrization",
]
