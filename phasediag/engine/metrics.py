"""Registry of per-point metrics: what a sweep stores, how each is computed from the core, how it is drawn.

A metric is computed from a `PointSet` (the Invariants of a chunk of grid points plus lazily computed
end-of-horizon quantities), so every metric of a chunk shares one evaluation of the closed form.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from phasediag import core
from phasediag.core.flow import hypot
from phasediag.engine.limit import MAX_EXPONENT
from phasediag.errors import ResultsError

EPS = float(np.finfo(float).eps)  # 2.2e-16, one ulp of 1

# Resolutions (`Metric.resolution`; docs/theory.md section 8, "Resolution of the maps"), measured against a
# 50-digit mpmath evaluation by tests/test_resolution.py.
#
# ntk_change = (m - m0)(m + m0) / (s0 (s + s0)) (section 6) is relatively accurate except where it passes
# through 0 at a finite horizon, at m = -m0 (only after m crosses 0, m0 m* < 0). There the factor m + m0
# cancels and inherits the absolute error of m: at most ~30 eps m_scale (section 8's measured worst for m,
# 5e-15), with m_scale <= s0 there; the remaining factor |m - m0| / (s0 (s + s0)) is ~1/s0 (|m - m0| ~ 2 s0,
# s ~ s0). So |error| <= ~32 eps for |ntk_change| <= 1; measured worst 22 eps. Twice that: 64 eps.
NTK_CHANGE_RESOLUTION = 64 * EPS
# zeta = m / hypot(m, kappa sqrt(G)) has a rounding error of ~2 eps plus |dzeta/dm| times m's error; where m is
# relatively accurate (T = 0, T = inf, and away from a sign crossing of m) |dzeta/dm| |m| <= 0.385, so with m's
# ~30 eps relative error |error| <= ~16 eps. The amounts |zeta_T| - min|zeta| and |zeta_0| - min|zeta| add the
# error of the other cosine and one subtraction: ~18 eps; measured worst 22 eps. Rounded up: 32 eps. Near a sign
# crossing of m at a finite horizon, where section 8 bounds m only absolutely (eps m_scale), the error is that
# bound times |dzeta/dm| instead (no float64 evaluation does better; the sign of zeta_T there is undetermined).
ALIGNMENT_RESOLUTION = 32 * EPS
# GD's end state is iterated, not evaluated in closed form: each step rounds alpha and beta (relatively, a few
# eps), so Theta_T and zeta_T carry an error that grows with the steps taken; ntk_change = (Theta_T - Theta0)/
# Theta0 adds one subtraction. Measured against an iteration of the map in adaptive high precision by
# tests/test_resolution.py (converging runs, |a c m*| < 1): worst 486 eps (ntk_change) and 599 eps (zeta) in 150 points.
# Exception (docs/theory.md section 8): a catapult at a distance D = -Phi0 = 4 - a^2 c^2 m* (m* - m0) - a Theta0
# below the window's upper edge, whose long transient amplifies each step's rounding by ~1/D (inherent to float64
# GD): against a 50-digit iteration (m0 = 0, a c m* = 0.3, 0.5, 0.9, D = 1e-1 ... 1e-9) the ntk_change error is
# C eps/D with C from 1e-3 to 6e2 (typically ~0.5), within 1024 eps for D >= 3e-3; the zeta error 0.05-7x that.
GD_NTK_CHANGE_RESOLUTION = 1024 * EPS
GD_ALIGNMENT_RESOLUTION = 1024 * EPS
# mode: scaling exponents are sums of the five inputs (|input| <= MAX_EXPONENT = M): each addition rounds by at
# most eps/2 of its result, so e.g. ntk_init = 2k + 1 + max(ew + su, eu + sw) errs by <= (4M + 1) eps and
# rho0 = c + m0 - ntk_init by <= (13.5 M + 2.5) eps. The factor n of each exponent's `n * EPS * MAX_EXPONENT`
# is the power of two above its operation count's bound (measured worst: 0.16 to 0.39 of it at M = 1e6).


@dataclass(frozen=True)
class Metric:
    """name: key in results.npz; label: axis/colour-bar text in the notation of docs/theory.md; kind: continuous |
    categorical | flag; log: drawn on a log scale of |value| (spans decades); threshold: the classify
    setting drawn as a contour on its map (or None); optimizer: computed only for that optimizer (None: always);
    resolution: absolute bound on the evaluation error, |computed - exact| <= resolution for every value with
    |exact| <= 1 over the supported range of docs/theory.md section 8 (exponents: |input exponent| <= 1e6), with
    the exceptions stated there; a value below it is indistinguishable from 0 (maps draw it as "no change").
    None: no absolute floor (the value is relatively accurate, or exact)."""

    name: str
    label: str
    kind: str
    dtype: str
    log: bool
    compute: Callable[["PointSet"], np.ndarray]
    threshold: str | None = None
    optimizer: str | None = None
    resolution: float | None = None


class PointSet:
    """A chunk of grid points: the core's Invariants and lazily evaluated results at the horizon (`end`: the
    state of the sweep's own optimizer there; `final`: the gradient flow's, `gd`: the exact GD run)."""

    def __init__(self, inv: core.Invariants, horizon: float, ntk_threshold: float, alignment_threshold: float,
                 max_steps: int = 100_000, optimizer: str = "flow"):
        self.inv = inv
        self.horizon = horizon
        self.ntk_threshold = ntk_threshold
        self.alignment_threshold = alignment_threshold
        self.max_steps = max_steps
        self.optimizer = optimizer

    @cached_property
    def _at_horizon(self) -> tuple[core.FlowState, np.ndarray]:
        return core.flow_state_and_change(self.inv, self.horizon)  # one closed-form evaluation for both

    @cached_property
    def order(self) -> core.OrderParameters:
        return core.order_parameters(self.inv, self.horizon, self._at_horizon,
                                     complements=core.uses_complements(self.alignment_threshold))

    @cached_property
    def final(self) -> core.FlowState:
        return self._at_horizon[0]

    @cached_property
    def gd(self) -> core.GDResult:
        return core.gd_outcome(self.inv, max_steps=self.max_steps)

    @cached_property
    def gd_end(self) -> core.FlowState:
        """The GD run at the horizon (its end of training for horizon inf); a run that diverged before the
        horizon: where it crossed the divergence bound (finite; maps leave diverged points undrawn)."""
        stopped = core.gd_end_state(self.inv, self.gd)
        if np.isinf(self.horizon):
            return stopped
        at = core.gd_state(self.inv, [self.horizon], max_steps=self.max_steps)
        at = core.FlowState(*(np.asarray(x)[..., 0] for x in at))
        gone = ~np.isfinite(at.ntk)
        return core.FlowState(*(np.where(gone, s, a) for s, a in zip(stopped, at)))

    @property
    def end(self) -> core.FlowState:
        return self.gd_end if self.optimizer == "gd" else self.final


def _phase(p: PointSet) -> np.ndarray:
    return core.classify_order(p.inv, p.order, p.ntk_threshold, p.alignment_threshold)


def _gd_ntk_final(p: PointSet) -> np.ndarray:
    """Theta_T = 2 c (alpha + beta) of the GD run at the horizon, the same value as the GD sweep's ntk_final
    (its end of training for horizon inf; where a run diverged before the horizon, where it crossed the bound);
    beyond float range (inputs far outside docs/theory.md section 8's range) an error, as in the core's own
    evaluation, never a warning and inf."""
    with np.errstate(over="raise", invalid="raise"):
        return p.gd_end.ntk


def _solution_norm(p: PointSet) -> np.ndarray:
    """kappa |u_T| |w_T| = sqrt(m_T^2 + kappa^2 G) (docs/theory.md section 5: large G means large norms)."""
    return hypot(p.final.m, p.inv.kappa_sqrt_g)


def _gd_solution_norm(p: PointSet) -> np.ndarray:
    """kappa |u_T| |w_T| of the GD run (G is not conserved under GD: from the norms themselves)."""
    with np.errstate(over="raise", invalid="raise"):
        return p.inv.output_scale * np.sqrt(p.gd_end.norm_u2 * p.gd_end.norm_w2)


def _gd_ntk_change(p: PointSet) -> np.ndarray:
    """Theta_T/Theta0 - 1 of the GD run, as (Theta_T - Theta0)/Theta0 (0 when Theta0 = 0, as for the flow)."""
    ntk0 = p.inv.ntk_init
    with np.errstate(over="raise", invalid="raise"):
        return np.divide(p.gd_end.ntk - ntk0, ntk0, out=np.zeros(np.broadcast(p.gd_end.ntk, ntk0).shape),
                         where=ntk0 > 0)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("phase", "phase", "categorical", "int8", False, _phase),
    Metric("ntk_init", r"initial NTK $\Theta_0$", "continuous", "float64", True, lambda p: p.inv.ntk_init),
    Metric("ntk_final", r"final NTK $\Theta_T$", "continuous", "float64", True, lambda p: p.final.ntk),
    Metric("ntk_change", r"NTK change $\Theta_T/\Theta_0 - 1$", "continuous", "float64", True,
           lambda p: p.order.ntk_change, threshold="ntk_threshold", resolution=NTK_CHANGE_RESOLUTION),
    Metric("alignment_init", r"initial alignment $\zeta_0$", "continuous", "float64", False,
           lambda p: p.order.alignment_init),
    Metric("alignment_final", r"final alignment $\zeta_T$", "continuous", "float64", False,
           lambda p: p.order.alignment_final, resolution=ALIGNMENT_RESOLUTION),
    Metric("alignment_gain", r"alignment $|\zeta_T| - \min|\zeta|$", "continuous", "float64", False,
           lambda p: p.order.alignment_gain, threshold="alignment_threshold", resolution=ALIGNMENT_RESOLUTION),
    Metric("disalignment", r"disalignment $|\zeta_0| - \min|\zeta|$", "continuous", "float64", False,
           lambda p: p.order.disalignment, threshold="alignment_threshold", resolution=ALIGNMENT_RESOLUTION),
    Metric("m_init", r"initial slope $m_0$", "continuous", "float64", False, lambda p: p.inv.m0),
    Metric("m_final", r"final slope $m_T$", "continuous", "float64", False, lambda p: p.final.m),
    Metric("loss_final", r"final excess loss $a(m_T - m^*)^2/2$", "continuous", "float64", True,
           lambda p: p.final.loss),
    Metric("norm_u2_final", r"$|u_T|^2$", "continuous", "float64", True, lambda p: p.final.norm_u2),
    Metric("norm_w2_final", r"$|w_T|^2$", "continuous", "float64", True, lambda p: p.final.norm_w2),
    Metric("solution_norm", r"solution norm $\kappa|u_T||w_T|$", "continuous", "float64", True, _solution_norm),
    Metric("tau", r"relaxation time $\tau = 1/(a\Theta_\infty)$ [steps]", "continuous", "float64", True,
           lambda p: core.relaxation_time(p.inv)),
    Metric("t_learn", r"$t_{learn}$ (90% of excess loss gone) [steps]", "continuous", "float64", True,
           lambda p: core.t_learn(p.inv)),
    Metric("not_converged", "not converged at the horizon", "flag", "bool", False, lambda p: p.order.not_converged),
    Metric("gram_U", r"$U = |u_0|^2$", "continuous", "float64", True, lambda p: p.inv.gram.U),
    Metric("gram_W", r"$W = |w_0|^2$", "continuous", "float64", True, lambda p: p.inv.gram.W),
    Metric("gram_V", r"$V = u_0 \cdot w_0$", "continuous", "float64", False, lambda p: p.inv.gram.V),
    Metric("gd_outcome", "GD outcome", "categorical", "int8", False, lambda p: p.gd.outcome, optimizer="gd"),
    Metric("gd_steps", "GD steps to decide", "continuous", "int64", True, lambda p: p.gd.steps, optimizer="gd"),
    # (over the steps the run took: an oscillating run's only up to its certificate, gd_steps; see GDResult)
    Metric("gd_loss_peak", "GD peak loss / initial loss", "continuous", "float64", True,
           lambda p: p.gd.loss_peak, optimizer="gd"),
    Metric("gd_ntk_final", r"final NTK under GD $\Theta_T$", "continuous", "float64", True,
           _gd_ntk_final, optimizer="gd"),
)}

#: On a GD sweep these end-state metrics are the GD run's own (at the horizon, as `solve --optimizer gd`
#: reports them); the gradient flow's keep their meaning under the name flow_<name>.
GD_END_STATE: dict[str, Metric] = {m.name: m for m in (
    Metric("ntk_final", r"final NTK $\Theta_T$ (GD)", "continuous", "float64", True, lambda p: p.gd_end.ntk),
    Metric("ntk_change", r"NTK change $\Theta_T/\Theta_0 - 1$ (GD)", "continuous", "float64", True, _gd_ntk_change,
           threshold="ntk_threshold", resolution=GD_NTK_CHANGE_RESOLUTION),
    Metric("alignment_final", r"final alignment $\zeta_T$ (GD)", "continuous", "float64", False,
           lambda p: p.gd_end.alignment, resolution=GD_ALIGNMENT_RESOLUTION),
    Metric("m_final", r"final slope $m_T$ (GD)", "continuous", "float64", False, lambda p: p.gd_end.m),
    Metric("loss_final", r"final excess loss $a(m_T - m^*)^2/2$ (GD)", "continuous", "float64", True,
           lambda p: p.gd_end.loss),
    Metric("norm_u2_final", r"$|u_T|^2$ (GD)", "continuous", "float64", True, lambda p: p.gd_end.norm_u2),
    Metric("norm_w2_final", r"$|w_T|^2$ (GD)", "continuous", "float64", True, lambda p: p.gd_end.norm_w2),
    Metric("solution_norm", r"solution norm $\kappa|u_T||w_T|$ (GD)", "continuous", "float64", True,
           _gd_solution_norm),
)}
FLOW_PREFIX = "flow_"


def _flow_twin(m: Metric) -> Metric:
    """The gradient flow's `m` on a GD sweep, named flow_<name>."""
    return Metric(FLOW_PREFIX + m.name, m.label + " (gradient flow)", m.kind, m.dtype, m.log, m.compute,
                  threshold=m.threshold, optimizer="gd", resolution=m.resolution)


METRICS.update({FLOW_PREFIX + name: _flow_twin(METRICS[name]) for name in GD_END_STATE})

class ScalingPointSet:
    """A chunk of exponent sets (k, su, sw, eu, ew) of `mode: scaling`: the limit exponents (docs/theory.md
    section 7) for typical and for sampled initialization (they differ only in the exponent of the NTK change)."""

    def __init__(self, k, su, sw, eu, ew):
        self.exponents = (k, su, sw, eu, ew)
        self.limit = core.limit_exponents(*self.exponents, init="typical")
        self.limit_sampled = core.limit_exponents(*self.exponents, init="sampled")

    @cached_property
    def health(self) -> dict[str, np.ndarray]:
        return core.limit_health(*self.exponents)


def _exponent(field: str, label: str, ulps: int) -> Metric:
    """A limit exponent; its resolution is `ulps` * EPS * MAX_EXPONENT (see the bounds at the top)."""
    return Metric(f"{field}_exp", label, "continuous", "float64", False,
                  lambda p: getattr(p.limit, field), optimizer="scaling", resolution=ulps * EPS * MAX_EXPONENT)


def _health(flag: str, label: str) -> Metric:
    return Metric(flag, label, "flag", "bool", False, lambda p: p.health[flag], optimizer="scaling")


def _input(i: int, key: str) -> Metric:
    return Metric(f"{key}_exp", f"exponent of {key}", "continuous", "float64", False,
                  lambda p: p.exponents[i], optimizer="scaling")


SCALING_METRICS: dict[str, Metric] = {m.name: m for m in (
    *(_input(i, key) for i, key in enumerate(("output_scale", "init_var_u", "init_var_w", "lr_u", "lr_w"))),
    Metric("limit_phase", "phase as d -> infinity", "categorical", "int8", False,
           lambda p: core.limit_phase(*p.exponents), optimizer="scaling"),
    _exponent("ntk_init", r"exponent of $\Theta_0$", 8),
    _exponent("ntk_final", r"exponent of $\Theta_\infty$", 8),
    _exponent("c", r"exponent of $c = \kappa\sqrt{\eta_u\eta_w}$", 2),
    _exponent("rho", r"exponent of $\rho = 2c|m^*|/\Theta_0$", 16),
    _exponent("rho0", r"exponent of $\rho_0 = 2c|m_0|/\Theta_0$", 16),
    _exponent("alignment", r"exponent of the alignment ratio $A$", 4),
    _exponent("m0", r"exponent of $m_0$ (sampled init)", 4),
    _exponent("ntk_change", r"exponent of $|\Theta_\infty/\Theta_0 - 1|$ (typical init)", 32),
    _exponent("zeta_inf", r"exponent of $|\zeta_\infty|$", 4),
    Metric("ntk_change_sampled_exp", r"exponent of $|\Theta_\infty/\Theta_0 - 1|$ (sampled init)", "continuous",
           "float64", False, lambda p: p.limit_sampled.ntk_change, optimizer="scaling",
           resolution=32 * EPS * MAX_EXPONENT),
    _health("unstable", r"unstable ($\Theta_\infty$ grows with d)"),
    _health("frozen", r"frozen ($\Theta_\infty$ vanishes with d)"),
    _health("divergent_output", r"divergent initial output ($m_0$ grows with d)"),
)}
METRICS.update(SCALING_METRICS)

# categorical legends: code -> name
LEGENDS = {"phase": core.PHASES, "gd_outcome": core.GD_OUTCOMES, "limit_phase": core.LIMIT_PHASES}

# metrics a `plot.maps` entry may name (finite-width sweeps; mode: scaling)
MAP_METRICS = tuple(name for name, m in METRICS.items() if m.kind != "flag" and m.optimizer != "scaling")
SCALING_MAPS = tuple(name for name, m in SCALING_METRICS.items() if m.kind != "flag")

# trajectory arrays (with train.times): grid shape + (len(times),)
TRAJECTORY_FIELDS = ("m", "ntk", "alignment", "loss", "m_lin")


def resolution_of(name: str, info: dict) -> float | None:
    """The resolution of metric `name` (see `Metric`): `info["resolution"]` (info: the metric's entry of a run
    directory's meta.json "metrics") when info has that key, else the registry's (run directories written
    before the field existed), None for a metric the registry does not know. A stored value that is not None
    or a number >= 0 is a ResultsError."""
    if isinstance(info, dict) and "resolution" in info:
        value = info["resolution"]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ResultsError(f"meta.json: metrics.{name}.resolution must be null or a number >= 0, got {value!r}")
        return float(value)
    metric = METRICS.get(name)
    return None if metric is None else metric.resolution


def metrics_for(kind: str) -> list[Metric]:
    """The metrics a sweep stores: kind is "flow", "gd" (finite width) or "scaling" (exponents only). On a GD
    sweep the end-state metrics are the GD run's (GD_END_STATE) and the flow's are named flow_<name>."""
    if kind == "scaling":
        return list(SCALING_METRICS.values())
    chosen = [m for m in METRICS.values() if m.optimizer in (None, kind)]
    return [GD_END_STATE.get(m.name, m) for m in chosen] if kind == "gd" else chosen


def metric_for(name: str, kind: str) -> Metric | None:
    """The metric `name` as a sweep of `kind` computes it (None if that kind has none of that name)."""
    return next((m for m in metrics_for(kind) if m.name == name), None)
