"""Infinite-width limit: scaling exponents of the two-layer linear network (docs/theory.md section 7).

Every hyperparameter scales as a power of the width d, with a free constant in front (default 1):

    kappa = output_scale ~ d^k,  sigma_u^2 ~ d^su,  sigma_w^2 ~ d^sw,  eta_u ~ d^eu,  eta_w ~ d^ew.

Derivation (typical initialization U = d sigma_u^2, W = d sigma_w^2, V = 0; teacher m* and a fixed, O(1)):

- NTK (docs/theory.md section 3): Theta0 = kappa^2 (eta_w U + eta_u W) = d^(2k+1) (d^(ew+su) + d^(eu+sw)), so
      exp(Theta0) = 2k + 1 + max(ew + su, eu + sw).
- c = kappa sqrt(eta_u eta_w):  exp(c) = k + (eu + ew)/2.
- rho := 2c|m*|/Theta0:  exp(rho) = exp(c) - exp(Theta0) = -(k + 1) - |delta|/2 - (su + sw)/2 where
  delta := (ew + su) - (eu + sw) is the layer imbalance of the NTK.
- Alignment ratio A := |m*|/(kappa sqrt(G)), G = U W = d^2 sigma_u^2 sigma_w^2:
      exp(A) = -(k + 1 + (su + sw)/2);  |zeta_inf| = A/sqrt(1 + A^2) (docs/theory.md section 5), so
      exp(zeta_inf) = min(exp(A), 0).
  exp(rho) = exp(A) - |delta|/2 <= exp(A) (AM-GM: rho <= A, docs/theory.md section 7).
- Sampled initialization: m0 = kappa V, V = sigma_u sigma_w c1 n with c1 ~ sqrt(d), n ~ N(0, 1), so
      exp(m0) = k + 1/2 + (su + sw)/2 = -exp(A) - 1/2  (typical initialization has m0 = 0 exactly);
  rho0 := 2c|m0|/Theta0:  exp(rho0) = exp(c) + exp(m0) - exp(Theta0) = -1/2 - |delta|/2 <= -1/2
  (exactly rho0 <= |cos(u0, w0)| ~ d^-1/2, by AM-GM on Theta0). U, W, G keep their typical exponents.
- End of training (docs/theory.md section 5): Theta_inf^2 = Theta0^2 (1 + rho^2 - rho0^2) = Theta0^2 + 4 c^2 (m*^2 - m0^2), so
      exp(Theta_inf) = max(exp(Theta0), exp(c))     (rho0 <= d^-1/2 never matters).
- NTK change Theta_inf/Theta0 - 1 = sqrt(1 + rho^2 - rho0^2) - 1 = (rho^2 - rho0^2)/(sqrt(...) + 1):
      exp(rho) < 0 (kernel):   2 exp(rho) typical; 2 max(exp(rho), exp(rho0)) sampled (random sign);
      exp(rho) = 0:            0 (a finite change);
      exp(rho) > 0:            exp(rho) (the NTK grows from a vanishing start).

Phase: kernel if exp(rho) < 0, feature_learning if exp(rho) >= 0. Health flags: unstable if
exp(Theta_inf) > 0 (discrete GD with O(1) steps diverges: it needs a Theta <= 2, docs/theory.md section 9), frozen if
exp(Theta_inf) < 0 (the rate a Theta_inf vanishes: nothing is learned in O(1) steps), divergent_output if
exp(m0) > 0 (the sampled initial output blows up). None of the exponents depends on the prefactors.

Two exact symmetries leave every exponent unchanged: (k, su, eu) -> (k - x, su + 2x, eu + 2x) and
(k, sw, ew) -> (k - x, sw + 2x, ew + 2x) (moving a factor d^x from kappa into one layer, whose learning rate
must follow as the square; the finite-width dynamics of kappa u . w are identical).

Two versions: `limit_exponents`, `limit_phase`, `limit_health` are numpy-vectorized over float arrays of
exponents (for exponent-space maps; boundaries decided with a tolerance `tol`); `exact_limit` and
`exact_limit_exponents` take floats or Fractions, convert floats with
Fraction(str(x)).limit_denominator(10**6) and decide boundaries (exponent exactly 0) without any tolerance.
`check_exponents` measures the exponents on the exact finite-width solution of phasediag.core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from phasediag.core.flow import Problem, flow_state, invariants, ntk_change
from phasediag.core.gram import Gram, sample_gram, typical_gram

EXPONENT_NAMES = ("k", "su", "sw", "eu", "ew")
HYPERPARAMETERS = ("output_scale", "init_var_u", "init_var_w", "lr_u", "lr_w")  # same order as the exponents
LIMIT_PHASES = ("kernel", "feature_learning")
HEALTH_FLAGS = ("unstable", "frozen", "divergent_output")
INITS = ("typical", "sampled")
MAX_DENOMINATOR = 10**6
DEFAULT_WIDTHS = np.logspace(2, 12, 11)
DEFAULT_SEEDS = tuple(range(32))
CHECKED = ("ntk_init", "ntk_final", "ntk_change", "zeta_inf", "m0")  # quantities check_exponents measures


class ScalingExponents(NamedTuple):
    """Width exponents: kappa ~ d^k, sigma_u^2 ~ d^su, sigma_w^2 ~ d^sw, eta_u ~ d^eu, eta_w ~ d^ew."""

    k: Any
    su: Any
    sw: Any
    eu: Any
    ew: Any


class LimitExponents(NamedTuple):
    """Width exponents of the limit quantities (floats, arrays or Fractions; see the module docstring).

    ntk_init: Theta0; c: kappa sqrt(eta_u eta_w); ntk_final: Theta_inf; rho: 2c|m*|/Theta0;
    rho0: 2c|m0|/Theta0 (sampled init); alignment: A = |m*|/(kappa sqrt(G)); m0: sampled initial output
    (typical: m0 = 0); ntk_change: |Theta_inf/Theta0 - 1| for the chosen init; zeta_inf: |zeta_inf|.
    """

    ntk_init: Any
    c: Any
    ntk_final: Any
    rho: Any
    rho0: Any
    alignment: Any
    m0: Any
    ntk_change: Any
    zeta_inf: Any


class ExactLimit(NamedTuple):
    """The exact limit of one exponent set: inputs, limit exponents, phase name and health flags."""

    exponents: ScalingExponents
    limit: LimitExponents
    phase: str
    health: tuple[str, ...]
    init: str


class _Ops(NamedTuple):
    maximum: Callable
    minimum: Callable
    where: Callable
    half: Any


_FLOAT_OPS = _Ops(np.maximum, np.minimum, np.where, 0.5)
_EXACT_OPS = _Ops(max, min, lambda cond, a, b: a if cond else b, Fraction(1, 2))


# ----------------------------------------------------------------------------------------------------------
# exact exponent arithmetic


def exact(x: Any) -> Fraction:
    """An exponent as a Fraction: Fractions and ints as they are, strings parsed ("-1/2", "0.25"), floats via
    Fraction(str(x)).limit_denominator(10**6) (so 1/3 -> 1/3 and 0.1 -> 1/10). Raises ValueError for NaN/inf."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool):
        raise ValueError(f"an exponent must be a number, got {x!r}")
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    if isinstance(x, str):
        return Fraction(x.strip())
    value = float(x)
    if not np.isfinite(value):
        raise ValueError(f"an exponent must be finite, got {x!r}")
    return Fraction(str(value)).limit_denominator(MAX_DENOMINATOR)


def exact_exponents(k: Any = 0, su: Any = 0, sw: Any = 0, eu: Any = 0, ew: Any = 0) -> ScalingExponents:
    """The five exponents as Fractions (see `exact`)."""
    return ScalingExponents(*(exact(x) for x in (k, su, sw, eu, ew)))


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")


def _limit(e: ScalingExponents, init: str, ops: _Ops) -> LimitExponents:
    """docs/theory.md section 7 formulas, written once for float arrays (numpy ops) and Fractions (Python ops)."""
    ntk_init = 2 * e.k + 1 + ops.maximum(e.ew + e.su, e.eu + e.sw)
    c = e.k + (e.eu + e.ew) / 2
    rho = c - ntk_init
    m0 = e.k + ops.half + (e.su + e.sw) / 2
    rho0 = c + m0 - ntk_init
    alignment = -(e.k + 1 + (e.su + e.sw) / 2)
    kernel_change = 2 * rho if init == "typical" else 2 * ops.maximum(rho, rho0)
    return LimitExponents(
        ntk_init=ntk_init, c=c, ntk_final=ops.maximum(ntk_init, c), rho=rho, rho0=rho0, alignment=alignment,
        m0=m0, ntk_change=ops.where(rho < 0, kernel_change, rho), zeta_inf=ops.minimum(alignment, 0),
    )


def exact_limit_exponents(k: Any = 0, su: Any = 0, sw: Any = 0, eu: Any = 0, ew: Any = 0, *,
                          init: str = "typical") -> LimitExponents:
    """Limit exponents as exact Fractions (formulas in the module docstring)."""
    _check_init(init)
    lim = _limit(exact_exponents(k, su, sw, eu, ew), init, _EXACT_OPS)
    return LimitExponents(*(Fraction(x) for x in lim))


def _phase_name(rho: Fraction) -> str:
    return "kernel" if rho < 0 else "feature_learning"


def _health_names(lim: LimitExponents) -> tuple[str, ...]:
    flags = {"unstable": lim.ntk_final > 0, "frozen": lim.ntk_final < 0, "divergent_output": lim.m0 > 0}
    return tuple(name for name in HEALTH_FLAGS if flags[name])


def exact_limit(k: Any = 0, su: Any = 0, sw: Any = 0, eu: Any = 0, ew: Any = 0, *,
                init: str = "typical") -> ExactLimit:
    """Exact limit of one exponent set: kernel if exp(rho) < 0 else feature_learning; health flags
    unstable (exp(Theta_inf) > 0), frozen (exp(Theta_inf) < 0), divergent_output (exp(m0) > 0) -- all decided
    on Fractions, so an exponent that is exactly 0 is exactly 0."""
    _check_init(init)
    lim = exact_limit_exponents(k, su, sw, eu, ew, init=init)
    return ExactLimit(exact_exponents(k, su, sw, eu, ew), lim, _phase_name(lim.rho), _health_names(lim), init)


# ----------------------------------------------------------------------------------------------------------
# vectorized float versions (exponent-space maps)


def _float_exponents(k, su, sw, eu, ew) -> ScalingExponents:
    arrays = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (k, su, sw, eu, ew)))
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("exponents must be finite")
    return ScalingExponents(*arrays)


def limit_exponents(k=0.0, su=0.0, sw=0.0, eu=0.0, ew=0.0, *, init: str = "typical") -> LimitExponents:
    """Limit exponents as float arrays of the broadcast shape of the inputs (formulas in the module
    docstring; every one is continuous in the inputs, so no tolerance is needed here)."""
    _check_init(init)
    lim = _limit(_float_exponents(k, su, sw, eu, ew), init, _FLOAT_OPS)
    return LimitExponents(*(np.asarray(x, dtype=float) for x in lim))


def limit_phase(k=0.0, su=0.0, sw=0.0, eu=0.0, ew=0.0, *, tol: float = 1e-9) -> np.ndarray:
    """Codes into LIMIT_PHASES (int8 array): 0 kernel where exp(rho) < -tol, else 1 feature_learning.

    `tol` absorbs float rounding of exponents on a boundary (e.g. 0.1 + 0.2 - 0.3); use `exact_limit` to
    decide a single point exactly."""
    rho = limit_exponents(k, su, sw, eu, ew).rho
    return np.where(rho < -tol, 0, 1).astype(np.int8)


def limit_health(k=0.0, su=0.0, sw=0.0, eu=0.0, ew=0.0, *, tol: float = 1e-9) -> dict[str, np.ndarray]:
    """Boolean arrays, one per HEALTH_FLAGS name: unstable (exp(Theta_inf) > tol), frozen
    (exp(Theta_inf) < -tol), divergent_output (exp(m0) > tol); all False = healthy."""
    lim = limit_exponents(k, su, sw, eu, ew)
    return {"unstable": lim.ntk_final > tol, "frozen": lim.ntk_final < -tol, "divergent_output": lim.m0 > tol}


# ----------------------------------------------------------------------------------------------------------
# named parametrizations


class Parametrization(NamedTuple):
    """A named scaling of the hyperparameters with the width: exponents (Fractions) and what it does."""

    name: str
    exponents: ScalingExponents
    summary: str
    doc: str


def _param(name: str, exps: tuple[str, ...], summary: str, doc: str) -> Parametrization:
    return Parametrization(name, exact_exponents(*exps), summary, " ".join(doc.split()))


PARAMETRIZATIONS: dict[str, Parametrization] = {p.name: p for p in (
    _param("ntk", ("-1/2", "0", "0", "0", "0"), "kappa = d^-1/2, O(1) init and rates", """
        Neural-tangent parametrization (Jacot et al.): f = d^-1/2 sum_i u_i w_i x with O(1) weights and O(1)
        learning rates. The 1/sqrt(d) output scale makes Theta0 a sum of d terms of size 1/d, so Theta0 = O(1),
        while c = kappa sqrt(eta_u eta_w) ~ d^-1/2: rho ~ d^-1/2, the kernel limit; the NTK changes by ~1/d, with
        a random sign at sampled init since rho0 ~ rho. The initial output m0 is O(1); healthy."""),
    _param("mean_field", ("-1", "0", "0", "1", "1"), "kappa = 1/d, O(1) init, rates ~ d", """
        Mean-field parametrization (Mei-Montanari-Nguyen, Chizat-Bach): f = (1/d) sum_i u_i w_i x is an average
        over neurons; each neuron's gradient is O(1/d), so the rates are d for every weight to move by O(1).
        Theta0 and c are both O(1), hence rho = O(1): feature learning, the NTK changes by a finite factor and
        the layers align by a finite amount (A = O(1)). m0 ~ d^-1/2; healthy. It is the NTK parametrization
        times a lazy factor d^-1/2 on kappa (rates times d)."""),
    _param("mup", ("0", "-2", "0", "-1", "1"), "muP (SGD): u var 1/d^2, lr_u 1/d; w var 1, lr_w d", """
        Maximal-update parametrization for SGD (Yang-Hu), in this model's form: no multiplier (kappa = 1); the
        output layer u (fan_in d) gets variance 1/fan_in^2 = 1/d^2 and rate 1/fan_in = 1/d, the input layer w
        (fan_in 1, fan_out d) variance 1 and rate fan_out = d. Theta0 = O(1), c = O(1), rho = O(1): feature
        learning with a stable O(1) NTK (healthy). It is mean-field moved by the exact symmetry
        (kappa, sigma_u^2, eta_u) -> (kappa d, sigma_u^2/d^2, eta_u/d^2): identical dynamics at every width."""),
    _param("standard", ("0", "-1", "0", "0", "0"), "SP: variances 1/fan_in, O(1) rates", """
        Standard parametrization (framework defaults): kappa = 1, every weight N(0, 1/fan_in): u has variance
        1/d, w variance 1 (its fan_in is 1); one O(1) learning rate. The input layer's NTK term eta_u W = d
        grows with width: Theta0 ~ d, so GD with O(1) steps diverges at large width (unstable). rho ~ 1/d
        (kernel), m0 = O(1)."""),
    _param("standard_stable", ("0", "-1", "0", "-1", "-1"), "SP with a global rate ~ 1/d", """
        Standard parametrization with the largest global learning rate that keeps the NTK bounded: with
        eta ~ d^e, exp(Theta0) = 1 + max(e - 1, e) = 1 + e <= 0 needs e <= -1. Then Theta0 = O(1) (healthy)
        but c ~ 1/d and rho ~ 1/d: the kernel limit (the NTK changes by ~1/d^2), and A ~ d^-1/2 (the layers do
        not align): stable SP at large width is lazy."""),
    _param("lazy", ("0", "0", "0", "-1", "-1"), "NTK with kappa x d^1/2, rates / d", """
        Lazy training (Chizat-Oyallon-Bach): a large output scale with the rates divided by its square, here
        kappa = d^1/2 on top of the NTK parametrization (kappa = 1, rates 1/d). Theta0 = O(1) is unchanged,
        c ~ 1/d, rho ~ 1/d: kernel, deeper than NTK (NTK change ~ 1/d^2 at typical init). Its known price:
        the sampled initial output m0 ~ d^1/2 diverges (divergent_output) unless the initial output is
        centred to 0 (as the typical initialization has it)."""),
)}


def parametrization(name: str) -> Parametrization:
    """Look up a named parametrization ('-' and case are ignored: 'Mean-Field' -> mean_field).

    Raises KeyError naming the known ones."""
    key = name.strip().lower().replace("-", "_")
    if key not in PARAMETRIZATIONS:
        raise KeyError(f"unknown parametrization {name!r}; known: {', '.join(PARAMETRIZATIONS)}")
    return PARAMETRIZATIONS[key]


# ----------------------------------------------------------------------------------------------------------
# numerical confirmation on the exact finite-width solution


class SlopeCheck(NamedTuple):
    """A measured log-log slope (nan when fewer than 3 widths gave a finite, normal value) beside the
    exact exponent; `points` = number of widths used in the fit."""

    measured: float
    exact: Fraction
    points: int


def hyperparameters(width, k=0.0, su=0.0, sw=0.0, eu=0.0, ew=0.0,
                    prefactors: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """{name: prefactor * width^exponent} for the HYPERPARAMETERS names (prefactors default 1).

    Overflow gives inf and underflow 0 silently; callers screen them."""
    pre = dict.fromkeys(HYPERPARAMETERS, 1.0) | dict(prefactors or {})
    unknown = set(pre) - set(HYPERPARAMETERS)
    if unknown:
        raise ValueError(f"unknown prefactor(s) {sorted(unknown)}; allowed: {', '.join(HYPERPARAMETERS)}")
    d = np.asarray(width, dtype=float)
    with np.errstate(over="ignore", under="ignore"):
        return {name: pre[name] * d ** float(x) for name, x in zip(HYPERPARAMETERS, (k, su, sw, eu, ew))}


def _fittable(y: np.ndarray) -> np.ndarray:
    """|y| finite and a normal float (subnormals have lost relative precision)."""
    y = np.abs(y)
    return np.isfinite(y) & (y >= np.finfo(float).tiny)


def loglog_slope(x, y) -> float:
    """Least-squares slope of log|y| against log x over the points where |y| is finite and normal
    (>= 2.2e-308); nan if fewer than 3 such points."""
    x, y = np.asarray(x, dtype=float), np.abs(np.asarray(y, dtype=float))
    ok = _fittable(y)
    if ok.sum() < 3:
        return float("nan")
    lx, ly = np.log(x[ok]), np.log(y[ok])
    lx = lx - lx.mean()
    return float(np.dot(lx, ly - ly.mean()) / np.dot(lx, lx))


def _measure(hp: dict[str, np.ndarray], gram: Gram, teacher: float, input_var: float) -> dict[str, np.ndarray]:
    """|Theta0|, Theta_inf, |ntk_change| (the core's well-conditioned form), |zeta_inf|, |m0| at each point."""
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # out of float64 range: raise, not warn
        inv = invariants(Problem(hp["output_scale"], hp["lr_u"], hp["lr_w"], input_var, teacher, gram))
    end = flow_state(inv, np.inf)
    return {"ntk_init": inv.ntk_init, "ntk_final": end.ntk, "ntk_change": np.abs(ntk_change(inv, np.inf)),
            "zeta_inf": np.abs(end.alignment), "m0": np.abs(inv.m0)}


def _measure_safely(hp: dict[str, np.ndarray], gram: Gram, teacher: float,
                    input_var: float) -> dict[str, np.ndarray]:
    """`_measure`, width by width where the vectorized call hits a float range error (value nan there)."""
    try:
        return _measure(hp, gram, teacher, input_var)
    except FloatingPointError:
        pass
    n = np.shape(hp["output_scale"])[0]
    out = {name: np.full(np.shape(hp["output_scale"]), np.nan) for name in CHECKED}
    for i in range(n):
        try:
            one = _measure({k: v[i] for k, v in hp.items()}, Gram(*(np.broadcast_to(g, (n,))[i] for g in gram)),
                           teacher, input_var)
        except FloatingPointError:
            continue
        for name in CHECKED:
            out[name][i] = one[name]
    return out


def _measured_values(widths: np.ndarray, hp, init: str, seeds: Sequence[int], teacher: float,
                     input_var: float) -> dict[str, np.ndarray]:
    """Per width: the quantity (typical) or its median over the seeds (sampled)."""
    usable = np.all([np.isfinite(v) & (v > 0) for v in hp.values()], axis=0)
    hp = {name: np.where(usable, v, 1.0) for name, v in hp.items()}
    if init == "typical":
        vals = _measure_safely(hp, typical_gram(widths, hp["init_var_u"], hp["init_var_w"]), teacher, input_var)
    else:
        if len(seeds) == 0:
            raise ValueError("sampled init needs at least one seed")
        draws = [_measure_safely(hp, sample_gram(widths, hp["init_var_u"], hp["init_var_w"], seed=int(s)),
                                 teacher, input_var) for s in seeds]
        vals = {name: np.median([dr[name] for dr in draws], axis=0) for name in CHECKED}
    return {name: np.where(usable, v, np.nan) for name, v in vals.items()}


def check_exponents(k: Any = 0, su: Any = 0, sw: Any = 0, eu: Any = 0, ew: Any = 0, *,
                    widths=DEFAULT_WIDTHS, init: str = "typical", seeds: Sequence[int] = DEFAULT_SEEDS,
                    teacher: float = 1.0, input_var: float = 1.0) -> dict[str, SlopeCheck]:
    """Measure the exponents on the exact finite-width solution (prefactors 1) and set them beside the exact.

    At each width the hyperparameters are d^exponent, the initial Gram typical (U = d sigma_u^2, W = d sigma_w^2,
    V = 0) or sampled (median of the absolute values over `seeds`), and the end of training comes from
    phasediag.core (ntk_change from its well-conditioned form, accurate at 1e-24). Returns, for each of
    ntk_init (Theta0), ntk_final (Theta_inf), ntk_change (|Theta_inf/Theta0 - 1|), zeta_inf (|zeta_inf|) and,
    sampled only, m0 (|m0|), the least-squares slope of log|value| against log d and the exact exponent.
    Widths where a hyperparameter or result leaves the float64 range are left out of the fit (`points`).
    """
    _check_init(init)
    widths = np.asarray(widths, dtype=float)
    if widths.ndim != 1 or widths.size < 3 or np.any(~np.isfinite(widths)) or np.any(widths < 1):
        raise ValueError("widths must be a 1-D array of at least 3 finite widths >= 1")
    lim = exact_limit_exponents(k, su, sw, eu, ew, init=init)
    hp = hyperparameters(widths, *(float(x) for x in exact_exponents(k, su, sw, eu, ew)))
    values = _measured_values(widths, hp, init, seeds, teacher, input_var)
    names = CHECKED if init == "sampled" else CHECKED[:-1]  # typical init: m0 = 0 exactly
    out = {}
    for name in names:
        v = values[name]
        points = int(np.sum(_fittable(v)))
        out[name] = SlopeCheck(loglog_slope(widths, v), getattr(lim, name), points)
    return out
