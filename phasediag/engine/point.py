"""One hyperparameter point: the glue between the command line and :mod:`phasediag.core`.

:func:`solve_point` validates its inputs, builds the initial Gram and the ``Problem``, evaluates the
trajectory (exact gradient flow, or exact discrete gradient descent) and the end-of-training block, and
returns a JSON-ready ``dict``: plain Python numbers and lists, with every non-finite float (``inf``, and the
``nan``/``inf`` of a diverging GD run) as ``None``. All numbers come from :mod:`phasediag.core`; this
module only arranges them.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from phasediag import __version__, core
from phasediag.config import rules
from phasediag.config.hyperparameters import Hyperparameters, finite, real
from phasediag.errors import BadInput, FieldError

__all__ = [
    "InputError",
    "NumericalRangeError",
    "DEFAULTS",
    "PHASE_OF_LABEL",
    "split_label",
    "log_times",
    "grid_times",
    "solve_point",
    "TRAJECTORY_KEYS",
]

#: Default hyperparameters (documented in ``phasediag solve --help`` and the README). ``init_var_u`` and
#: ``init_var_w`` default to ``1/width`` (``None`` here), so the typical initialization has U = W = 1.
DEFAULTS: dict[str, Any] = {
    **Hyperparameters().to_dict(),
    "t_max": 100.0,
    "points": 25,
    "horizon": math.inf,
    "ntk_threshold": 0.1,
    "alignment_threshold": 0.1,
}

#: Coarse phase and finer mechanism of each label of ``core.PHASES`` (docs/theory.md section 6). The core's own
#: tables (``phasediag.core.phases.REGIME`` / ``MECHANISM``) take precedence when present; this copy agrees
#: with them and only serves if they are missing.
PHASE_OF_LABEL: dict[str, tuple[str, str | None]] = {
    "kernel": ("kernel", None),
    "kernel_aligning": ("kernel", "alignment"),
    "kernel_disaligning": ("kernel", "disalignment"),
    "alignment": ("feature_learning", "alignment"),
    "disalignment": ("feature_learning", "disalignment"),
    "rescaling": ("feature_learning", "rescaling"),
    "saddle": ("saddle", None),
}

#: Largest GD step count evaluated explicitly (the exact GD map costs O(steps)); ``inf`` is always allowed.
MAX_GD_STEPS = rules.MAX_GD_STEPS

#: Keys of the per-time lists in the result, in order.
TRAJECTORY_KEYS = ("t", "m", "ntk", "alignment", "norm_u2", "norm_w2", "loss", "m_lin", "loss_lin")


#: Invalid input; ``field`` names the offending hyperparameter or setting (e.g. ``"lr_u"``).
InputError = FieldError


class NumericalRangeError(BadInput, ArithmeticError):
    """A floating-point overflow / invalid operation in the core: valid but extreme inputs."""


#: The range over which the core is specified and tested (docs/theory.md section 8), quoted in error messages.
SUPPORTED_RANGE = ("d <= 1e15, kappa in [1e-8, 1e8], sigma^2 in {0} U [1e-16, 1e4], eta in [1e-6, 1e6], "
                   "a in [1e-3, 1e3], |m*| in [1e-3, 1e3], t <= 1e12")


# ----------------------------------------------------------------------------------------------------------
# validation


def check_time(option: str, x, *, steps: bool) -> float:
    v = real(option, x)
    if v < 0:
        raise InputError(option, f"times must be >= 0, got {v:g}")
    return rules.gd_steps(option, v, "a time") if steps else v


def check_gram(U, W, V) -> tuple[float, float, float]:
    """Validate an explicit Gram (U, W, V): finite, U, W >= 0 and V^2 <= U W (checked exactly)."""
    U, W, V = (finite("gram", x=x) for x in (U, W, V))
    for name, v in (("U = |u0|^2", U), ("W = |w0|^2", W)):
        if v < 0:
            raise InputError("gram", f"{name} must be >= 0, got {v:g}")
    if Fraction(V) ** 2 > Fraction(U) * Fraction(W):
        raise InputError("gram", f"not a Gram matrix: V^2 > U W (U={U:g}, W={W:g}, V={V:g})")
    return U, W, V


# ----------------------------------------------------------------------------------------------------------
# labels and time grids


def split_label(label: str) -> tuple[str, str | None]:
    """``core.PHASES`` name -> (phase, mechanism), e.g. ``"kernel_aligning"`` -> ``("kernel", "alignment")``."""
    regime, mechanism = getattr(core, "REGIME", {}), getattr(core, "MECHANISM", {})
    if label in regime and label in mechanism:
        return regime[label], mechanism[label]
    try:
        return PHASE_OF_LABEL[label]
    except KeyError:
        raise RuntimeError(f"unknown phase label {label!r} from phasediag.core") from None


def log_times(t_max: float, points: int, t_min: float | None = None, *, steps: bool = False) -> list[float]:
    """The default time grid: ``t = 0`` followed by ``points - 1`` log-spaced times from ``t_min`` to ``t_max``.

    ``t_min`` defaults to ``t_max / 1000`` (three decades); with ``steps=True`` (discrete GD) it defaults to 1,
    the times are rounded to integer step counts and duplicates are dropped, so fewer than ``points`` times may
    result.
    """
    t_max = check_time("t_max", t_max, steps=steps)
    if not (0 < t_max < math.inf):
        raise InputError("t_max", f"must be a finite number > 0, got {t_max}")
    try:
        points_i = int(points)
    except (TypeError, ValueError):
        raise InputError("points", f"must be an integer >= 2, got {points!r}") from None
    if points_i != points or points_i < 2:
        raise InputError("points", f"must be an integer >= 2, got {points}")
    if t_min is None:
        t_min = min(1.0, t_max) if steps else t_max / 1000.0
    t_min = check_time("t_min", t_min, steps=steps)
    if not (0 < t_min <= t_max):
        raise InputError("t_min", f"must satisfy 0 < t_min <= t_max, got {t_min} (t_max {t_max})")
    n = points_i - 1
    grid = np.array([t_max]) if n == 1 else np.geomspace(t_min, t_max, n)
    if steps:
        grid = np.unique(np.rint(grid))
    grid[-1] = t_max  # geomspace's last point is t_max only to rounding
    return [0.0] + [float(x) for x in grid]


def grid_times(times: Sequence[float] | None, t_max: float | None = None, t_min: float | None = None,
               points: int | None = None, *, steps: bool = False) -> list[float] | None:
    """`times` as given, or (when None) the :func:`log_times` grid of the grid settings and their defaults
    (t_max 100, points 25); a list and grid settings together are an InputError."""
    grid = [name for name, v in (("t_max", t_max), ("t_min", t_min), ("points", points)) if v is not None]
    if times is not None:
        if grid:
            raise InputError("times", f"conflicts with {', '.join(grid)}: give a list or a grid, not both")
        return list(times)
    return log_times(DEFAULTS["t_max"] if t_max is None else t_max,
                     DEFAULTS["points"] if points is None else points, t_min, steps=steps)


# ----------------------------------------------------------------------------------------------------------
# evaluation


def json_number(x) -> float | None:
    """A JSON-ready float: non-finite -> None."""
    v = float(x)
    return v if math.isfinite(v) else None


def json_numbers(a) -> list[float | None]:
    return [json_number(v) for v in np.asarray(a, dtype=float).reshape(-1)]


def _scalar(a) -> float:
    return float(np.asarray(a, dtype=float).reshape(-1)[0])


def _make_gram(init: str, width: int, var_u: float, var_w: float, gram, seed):
    if init == "typical":
        return core.typical_gram(width, var_u, var_w)
    if init == "seed":
        return core.sample_gram(width, var_u, var_w, seed, index=0)
    if init == "gram":
        U, W, V = gram
        return core.explicit_gram(U, W, V)
    raise InputError("init", f"unknown initialization {init!r} (typical, seed or gram)")


def _gd_states(inv, times: Sequence[float], max_steps: int):
    """Exact GD states at the given step counts (``inf`` = end state, within `max_steps`), aligned with ``times``."""
    finite = sorted({int(t) for t in times if math.isfinite(t)})
    fields = core.FlowState._fields
    out = {f: np.full(len(times), np.nan) for f in fields}
    if finite:
        st = core.gd_state(inv, np.asarray(finite, dtype=np.int64), max_steps=max_steps)
        pos = {k: i for i, k in enumerate(finite)}
        idx = [pos[int(t)] for t in times if math.isfinite(t)]
        mask = np.array([math.isfinite(t) for t in times])
        for f in fields:
            out[f][mask] = np.asarray(getattr(st, f), dtype=float).reshape(-1)[idx]
    if any(math.isinf(t) for t in times):
        st = core.gd_state(inv, np.inf, max_steps=max_steps)
        mask = np.array([math.isinf(t) for t in times])
        for f in fields:
            out[f][mask] = _scalar(getattr(st, f))
    return core.FlowState(**out)


def solve_point(
    hyper: Hyperparameters = Hyperparameters(),
    *,
    init: str = "typical",
    gram: Sequence[float] | None = None,
    seed: int | None = None,
    times: Sequence[float] | None = None,
    optimizer: str = "flow",
    horizon: float = DEFAULTS["horizon"],
    ntk_threshold: float = DEFAULTS["ntk_threshold"],
    alignment_threshold: float = DEFAULTS["alignment_threshold"],
    gd_max_steps: int = 100_000,
) -> dict:
    """Solve one hyperparameter point; return a JSON-ready dict (see the README for the keys).

    ``init`` is ``"typical"`` (U = d var_u, W = d var_w, V = 0), ``"seed"`` (exact sample with ``seed``,
    index 0) or ``"gram"`` (``gram = (U, W, V)``). ``init_var_*`` default to ``1/width``. ``times`` defaults
    to ``log_times(t_max=100, points=25)``; ``inf`` is allowed. With ``optimizer="gd"`` the times (and a
    finite ``horizon``) are integer step counts and the trajectory is the exact discrete GD one.
    Raises :class:`InputError` (naming the field, e.g. ``lr_u``) on invalid input.
    """
    started = time.perf_counter()
    if optimizer not in ("flow", "gd"):
        raise InputError("optimizer", f"must be 'flow' or 'gd', got {optimizer!r}")
    steps = optimizer == "gd"
    h = hyper.checked()
    ntk_threshold = rules.ntk_threshold(ntk_threshold)  # the rules of the config keys and the CLI options
    alignment_threshold = rules.alignment_threshold(alignment_threshold)
    horizon = rules.horizon(horizon, steps=steps)
    gd_max_steps = rules.gd_max_steps(gd_max_steps, "gd_max_steps")
    if init == "gram":
        if gram is None or len(gram) != 3:
            raise InputError("gram", "expected three numbers U,W,V")
        gram = check_gram(*gram)
    elif init == "seed":
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InputError("seed", f"must be an integer >= 0, got {seed!r}")
        seed = rules.seed(int(seed))
    if times is None:
        times = log_times(DEFAULTS["t_max"], DEFAULTS["points"], steps=steps)
    times = [check_time("times", t, steps=steps) for t in times]
    if not times:
        raise InputError("times", "needs at least one time")
    times.sort()

    try:
        # Overflow, 0/0 and x/0 anywhere in the evaluation are errors, never silent inf/nan (underflow to 0
        # is benign). The core's own local errstate settings (e.g. for a diverging GD run) take precedence.
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            result = _evaluate(h, init, gram, seed, times, steps, horizon, ntk_threshold, alignment_threshold,
                               gd_max_steps)
    except FloatingPointError as exc:
        raise NumericalRangeError(
            f"floating-point {exc} while solving this point: the inputs are probably outside the supported "
            f"range ({SUPPORTED_RANGE})"
        ) from exc
    result["meta"] = {"version": __version__, "elapsed_s": time.perf_counter() - started}
    return result


def _evaluate(h: Hyperparameters, init, gram, seed, times, steps, horizon, ntk_threshold, alignment_threshold,
              gd_max_steps) -> dict:
    """The core calls of :func:`solve_point` on validated inputs (`h` checked: variances filled in)."""
    g0 = _make_gram(init, h.width, h.init_var_u, h.init_var_w, gram, seed)
    problem = core.Problem(h.output_scale, h.lr_u, h.lr_w, h.input_var, h.teacher, g0)
    inv = core.invariants(problem)
    t_arr = np.asarray(times, dtype=float)

    if steps:
        traj = _gd_states(inv, times, gd_max_steps)
        start = _gd_states(inv, [0.0], gd_max_steps)
    else:
        traj = core.flow_state(inv, t_arr)
        start = core.flow_state(inv, np.zeros(1))
    # Excess loss of the kernel (frozen-NTK) prediction (its m_lin is traj.m_lin): the core's kernel_prediction
    # scaled from this trajectory's own loss(0), so loss_lin(0) = loss(0).
    loss_lin = core.kernel_prediction(_scalar(start.m), h.teacher, _scalar(start.ntk), h.input_var, t_arr,
                                      steps=steps, loss0=_scalar(start.loss)).loss_lin

    # End of training (at the horizon): flow quantities, or the exact GD state for optimizer="gd".
    code = int(_scalar(core.classify(inv, horizon=horizon, ntk_threshold=ntk_threshold,
                                     alignment_threshold=alignment_threshold)))
    label = core.PHASES[code]
    phase, mechanism = split_label(label)
    op = core.order_parameters(inv, horizon=horizon)
    if steps:
        end = _gd_states(inv, [horizon], gd_max_steps)
        ntk0 = _scalar(start.ntk)
        ntk_end = _scalar(end.ntk)
        if not math.isfinite(ntk_end):  # diverged before the horizon: null
            ntk_change = math.nan
        else:  # 0 when Theta0 = 0 (docs/theory.md section 6), as on a GD sweep
            ntk_change = (ntk_end - ntk0) / ntk0 if ntk0 > 0 else 0.0
    else:
        end = core.flow_state(inv, np.asarray([horizon]))
        ntk_change = _scalar(core.ntk_change(inv, np.asarray([horizon])))

    final: dict[str, Any] = {
        "horizon": json_number(horizon),
        "m": json_number(_scalar(end.m)),
        "ntk": json_number(_scalar(end.ntk)),
        "alignment": json_number(_scalar(end.alignment)),
        "loss": json_number(_scalar(end.loss)),
        "ntk_change": json_number(ntk_change),
        "phase": phase,
        "mechanism": mechanism,
        "label": label,
        "alignment_gain": json_number(_scalar(op.alignment_gain)),
        "disalignment": json_number(_scalar(op.disalignment)),
        "not_converged": bool(_scalar(op.not_converged)),
        "tau": json_number(_scalar(core.relaxation_time(inv))),
        "t_learn": json_number(_scalar(core.t_learn(inv))),
        "thresholds": {"ntk": ntk_threshold, "alignment": alignment_threshold},
    }
    if steps:  # the gradient flow's end state keeps its own names (as the flow_* metrics of a GD sweep)
        flow_end, flow_change = core.flow_state_and_change(inv, np.asarray([horizon]))
        final.update({f"flow_{key}": json_number(_scalar(getattr(flow_end, key)))
                      for key in ("m", "ntk", "alignment", "loss")})
        final["flow_ntk_change"] = json_number(_scalar(flow_change))
        res = core.gd_outcome(inv, max_steps=gd_max_steps)
        code = getattr(res, "outcome", res)  # GDResult (outcome, steps, ...) or a bare code array
        final["gd_outcome"] = core.GD_OUTCOMES[int(_scalar(code))]
        if hasattr(res, "steps"):
            final["gd_steps"] = int(_scalar(res.steps))
        if hasattr(res, "loss_peak"):
            final["gd_loss_peak"] = json_number(_scalar(res.loss_peak))

    result: dict[str, Any] = {
        "params": {
            **h.to_dict(),
            "init": init,
            "seed": seed if init == "seed" else None,
            "optimizer": "gd" if steps else "flow",
        },
        "t": [(int(t) if steps else float(t)) if math.isfinite(t) else None for t in times],
        "m": json_numbers(traj.m),
        "ntk": json_numbers(traj.ntk),
        "alignment": json_numbers(traj.alignment),
        "norm_u2": json_numbers(traj.norm_u2),
        "norm_w2": json_numbers(traj.norm_w2),
        "loss": json_numbers(traj.loss),
        "m_lin": json_numbers(traj.m_lin),
        "loss_lin": json_numbers(loss_lin),
        "init": {
            "U": json_number(_scalar(g0.U)),
            "W": json_number(_scalar(g0.W)),
            "V": json_number(_scalar(g0.V)),
            "G": json_number(_scalar(g0.G)),
            "m": json_number(_scalar(start.m)),
            "ntk": json_number(_scalar(start.ntk)),
            "alignment": json_number(_scalar(start.alignment)),
        },
        "final": final,
    }
    return result
