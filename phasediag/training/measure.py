"""One point by simulated training: the engine of ``phasediag simulate`` and of ``validate``'s points.

The actual vectors u, w in R^d are drawn and trained (:mod:`phasediag.training.simulate`: GD on the population loss,
minibatch SGD on a sampled dataset, or the gradient flow integrated by DOPRI5). The recorded trajectory is
reported with the keys of ``phasediag solve`` (plus the imbalance and the Gram determinant), and labelled by
the same rules (docs/theory.md section 6, :func:`phasediag.core.phase_codes`) applied to *measured* order parameters:

- ntk_change = Theta(T)/Theta(0) - 1 at the last recorded time T;
- min |zeta| is the minimum over the recorded times, or 0 if m changes sign between two records
  (zeta = 0 exactly where m = 0); alignment_gain = |zeta_T| - min|zeta|, disalignment = |zeta_0| - min|zeta|,
  both 0 when the initial vectors are parallel (G = 0: they stay parallel);
- measured saddle: m has not reached the teacher's side by T (m_T m* <= 0 with m* != 0), i.e. training is
  still stuck at or behind m = 0.

The initial Gram (U, W, V) of the sampled vectors is part of the result, so ``phasediag solve --gram U,W,V``
(with ``--optimizer gd`` for GD) is the exact prediction for the very same network.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from phasediag import __version__, core
from phasediag.config import rules
from phasediag.config.hyperparameters import Hyperparameters, finite
from phasediag.errors import BadInput
from phasediag.training import activations, simulate
from phasediag.engine.point import (DEFAULTS, SUPPORTED_RANGE, InputError, NumericalRangeError, check_time,
                                    json_number, json_numbers, log_times, split_label)

__all__ = ["OPTIMIZERS", "MAX_WIDTH", "measured_order_parameters", "measured_label", "simulate_point",
           "SIM_DEFAULTS"]

#: Training methods: discrete GD on the population loss, minibatch SGD on a sample, the gradient flow.
OPTIMIZERS = ("gd", "sgd", "flow")

#: Largest width simulated (two float64 vectors of this length, a few temporaries: ~0.5 GB).
MAX_WIDTH = 10_000_000

#: Step budget of the flow integrator (DOPRI5): beyond it a run is refused, before it starts if foreseeable.
FLOW_MAX_STEPS = 2_000_000

#: Defaults of the simulation-only options.
SIM_DEFAULTS: dict[str, Any] = {"seed": 0, "optimizer": "gd", "batch_size": 32, "samples": 1024,
                                "noise_var": 0.0, "activation": "linear", "slope": activations.DEFAULT_SLOPE,
                                "nodes": activations.DEFAULT_NODES}


def measured_order_parameters(trace: simulate.Trace) -> core.OrderParameters:
    """Order parameters of a recorded (finite) trajectory, as 0-d arrays (rules in the module docstring)."""
    zeta = np.asarray(trace.alignment, dtype=float)
    m = np.asarray(trace.m, dtype=float)
    ntk0, ntk_T = float(trace.ntk[0]), float(trace.ntk[-1])
    change = ntk_T / ntk0 - 1.0 if ntk0 > 0 else 0.0  # Theta0 = 0: u = w = 0, nothing ever moves
    signs = np.sign(m)
    crosses = bool(np.any(signs[:-1] * signs[1:] < 0) or np.any(signs == 0))
    min_abs = 0.0 if crosses else float(np.min(np.abs(zeta)))
    rotates = float(trace.gram_det[0]) > 0
    gain = abs(float(zeta[-1])) - min_abs if rotates else 0.0
    dis = abs(float(zeta[0])) - min_abs if rotates else 0.0
    loss0, loss_T = float(trace.loss[0]), float(trace.loss[-1])
    return core.OrderParameters(
        ntk_change=np.asarray(change), alignment_init=np.asarray(zeta[0]), alignment_final=np.asarray(zeta[-1]),
        alignment_gain=np.asarray(gain), disalignment=np.asarray(dis),
        not_converged=np.asarray(loss0 > 0 and loss_T > 0.01 * loss0),
    )


def measured_label(trace: simulate.Trace, teacher: float, ntk_threshold: float = 0.1,
                   alignment_threshold: float = 0.1) -> str | None:
    """The docs/theory.md section 6 label of a recorded trajectory; None if the run diverged."""
    if not np.all(np.isfinite(trace.m)):
        return None
    op = measured_order_parameters(trace)
    saddle = teacher != 0 and float(trace.m[-1]) * teacher <= 0
    return core.PHASES[int(core.phase_codes(op, np.asarray(saddle), ntk_threshold, alignment_threshold))]


def _first_time(t: np.ndarray, loss: np.ndarray, fraction: float = 0.1) -> float | None:
    """First recorded time at which the excess loss is at most `fraction` of its initial value."""
    if not loss[0] > 0:
        return 0.0
    hit = np.nonzero(loss <= fraction * loss[0])[0]
    return float(t[hit[0]]) if hit.size else None


def _check_times(times: Sequence[float] | None, steps: bool) -> list[float]:
    if times is None:
        times = log_times(DEFAULTS["t_max"], DEFAULTS["points"], steps=steps)
    out = sorted(check_time("times", t, steps=steps) for t in times)
    if not out:
        raise InputError("times", "needs at least one time")
    if not math.isfinite(out[-1]):
        raise InputError("times", "simulated training needs finite times (inf is for 'solve')")
    return out


def _check_flow_cost(u0: np.ndarray, w0: np.ndarray, hyper: dict, t_end: float) -> None:
    """Refuse at once a flow integration that cannot finish within the integrator's step budget: after
    convergence DOPRI5's stability limit is a step of about 3.3 / (a Theta_inf), so reaching t_end costs at
    least a Theta_inf t_end / 3.3 steps (Theta_inf from the closed form for these very vectors)."""
    gram = core.explicit_gram(float(u0 @ u0), float(w0 @ w0), float(u0 @ w0))
    problem = core.Problem(hyper["output_scale"], hyper["lr_u"], hyper["lr_w"], hyper["input_var"],
                           hyper["teacher"], gram)
    ntk_inf = float(core.flow_state(core.invariants(problem), np.asarray([np.inf])).ntk[0])
    steps = hyper["input_var"] * ntk_inf * t_end / 3.3
    if steps > FLOW_MAX_STEPS:
        raise InputError("times", f"integrating the flow to t = {t_end:g} takes about {steps:.3g} steps (a Theta_inf "
                                  f"t / 3.3), more than the integrator's {FLOW_MAX_STEPS:,}: the flow is stiff over "
                                  "this span; use optimizer gd or shorter times")


def _train(optimizer: str, u0, w0, hyper: dict, times: list[float], batch_size: int, samples: int,
           noise_var: float, rng: np.random.Generator, network: dict) -> simulate.Trace:
    if optimizer == "gd":
        return simulate.gd_vectors(u0, w0, **hyper, steps=np.asarray(times, dtype=np.int64), **network)
    if optimizer == "sgd":
        return simulate.sgd_vectors(u0, w0, **hyper, batch_size=batch_size, samples=samples, noise_var=noise_var,
                                    steps=np.asarray(times, dtype=np.int64), rng=rng, **network)
    return simulate.integrate_flow(u0, w0, **hyper, times=np.asarray(times, dtype=float), max_steps=FLOW_MAX_STEPS,
                                   **network)


def _network_options(activation: str, slope: float, nodes: int) -> dict:
    """The activation keywords of the trainers, validated (FieldError naming the option)."""
    return {"activation": rules.activation(activation), "slope": rules.slope(slope),
            "nodes": rules.quadrature_nodes(nodes)}


def simulate_point(
    hyper: Hyperparameters = Hyperparameters(),
    *,
    seed: int | Sequence[int] = SIM_DEFAULTS["seed"],
    times: Sequence[float] | None = None,
    optimizer: str = SIM_DEFAULTS["optimizer"],
    batch_size: int = SIM_DEFAULTS["batch_size"],
    samples: int = SIM_DEFAULTS["samples"],
    noise_var: float = SIM_DEFAULTS["noise_var"],
    ntk_threshold: float = DEFAULTS["ntk_threshold"],
    alignment_threshold: float = DEFAULTS["alignment_threshold"],
    activation: str = SIM_DEFAULTS["activation"],
    slope: float = SIM_DEFAULTS["slope"],
    nodes: int = SIM_DEFAULTS["nodes"],
) -> dict:
    """Train one network of width d and return a JSON-ready dict with the keys of ``solve_point`` plus
    ``imbalance`` and ``gram_det`` (per time) and ``final.diverged``.

    The vectors u0 ~ N(0, init_var_u I_d), w0 ~ N(0, init_var_w I_d) (variances default to 1/width) come from
    ``numpy.random.default_rng(seed)``; SGD then draws its dataset (``samples`` points, x ~ N(0, input_var),
    y = teacher x + N(0, noise_var)) and its batch order from the same generator. ``seed`` may be a sequence of
    integers (``validate`` uses (seed, grid index)). times: step counts for GD/SGD (integers), flow times for
    ``optimizer="flow"``; the final block is at the last time. Raises InputError naming the option.

    activation (``slope``: leaky_relu's slope): the network f(x) = kappa sum_i u_i phi(w_i x) instead of the
    linear model, on the same task and from the same vectors (docs/theory.md section 10): m is then its best
    linear slope E[x f] / a, loss its excess population loss, ntk the kernel's linear component (see
    ``simulate.activated_measurements``), population expectations by a split Gauss-Legendre rule of ``nodes``
    per half-line, whose own error estimate is ``final.quadrature_error``.
    """
    started = time.perf_counter()
    if optimizer not in OPTIMIZERS:
        raise InputError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    steps = optimizer != "flow"
    h = hyper.checked()
    width = h.width
    if width > MAX_WIDTH:
        raise InputError("width", f"simulation stores the vectors: at most {MAX_WIDTH:,} (use 'solve' beyond), "
                                    f"got {width:,}")
    hyper = {"output_scale": h.output_scale, "lr_u": h.lr_u, "lr_w": h.lr_w, "input_var": h.input_var,
             "teacher": h.teacher}
    var_u, var_w = h.init_var_u, h.init_var_w
    ntk_threshold = rules.ntk_threshold(ntk_threshold)  # the rules of the config keys and the CLI options
    alignment_threshold = rules.alignment_threshold(alignment_threshold)
    if optimizer == "sgd":
        samples, batch_size = int(samples), int(batch_size)
        if not 1 <= samples <= rules.MAX_SAMPLES:
            raise InputError("samples", f"must be an integer in [1, {rules.MAX_SAMPLES:,}], got {samples}")
        if not 1 <= batch_size <= samples:
            raise InputError("batch_size", f"must lie in [1, samples = {samples}], got {batch_size}")
        noise_var = finite("noise_var", low=0.0, x=noise_var)
    network = _network_options(activation, slope, nodes)
    if activation != "linear":
        rules.network_size(width, 2 * network["nodes"])
        if optimizer == "sgd":
            rules.network_size(width, batch_size, "batch_size")
    times = _check_times(times, steps)
    seeds = seed if isinstance(seed, (list, tuple)) else [seed]
    for s in seeds:
        rules.seed(s)

    rng = np.random.default_rng(seed)
    u0, w0 = simulate.sample_vectors(width, var_u, var_w, rng)
    try:
        # Python floats raise OverflowError where numpy arrays raise FloatingPointError; the vectors' own
        # checks (|u0|^2 beyond DIVERGENCE_LIMIT) raise ValueError: all of them mean inputs out of range
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            if optimizer == "flow":
                gain = activations.activation(activation, network["slope"]).gain
                _check_flow_cost(u0, w0, {**hyper, "output_scale": gain * hyper["output_scale"]}, times[-1])
            diagnostics: dict = {}
            trace = _train(optimizer, u0, w0, hyper, times, batch_size, samples, noise_var, rng,
                           {**network, "diagnostics": diagnostics} if activation != "linear" else network)
            start = simulate.gd_vectors(u0, w0, **hyper, steps=np.zeros(1, dtype=np.int64), **network)
    except NumericalRangeError as exc:  # the simulated network's own range check
        raise NumericalRangeError(f"{exc} while simulating this point: the inputs are probably outside the "
                                  f"supported range ({SUPPORTED_RANGE})") from exc
    except BadInput:
        raise
    except (FloatingPointError, OverflowError, ValueError) as exc:
        detail = ("floating-point overflow" if isinstance(exc, OverflowError) else
                  f"floating-point {exc}" if isinstance(exc, FloatingPointError) else str(exc))
        raise NumericalRangeError(f"{detail} while simulating this point: the inputs are probably outside the "
                                  f"supported range ({SUPPORTED_RANGE})") from exc
    except RuntimeError as exc:  # the flow integrator's step budget
        raise InputError("times", f"{exc}: the flow is stiff over this span; use optimizer gd or "
                                    f"shorter times") from None
    result = _result(trace, start, hyper, width, var_u, var_w, seed, optimizer, batch_size, samples, noise_var,
                     ntk_threshold, alignment_threshold, network)
    if activation != "linear":
        result["final"]["quadrature_error"] = json_number(diagnostics["quadrature_error"])
    if activation == "relu" and optimizer != "sgd":
        result["split"] = _split_solution(u0, w0, hyper, trace.t, optimizer)
    result["meta"] = {"version": __version__, "elapsed_s": time.perf_counter() - started}
    return result


def _split_solution(u0: np.ndarray, w0: np.ndarray, hyper: dict, t: np.ndarray, optimizer: str) -> dict | None:
    """The ReLU network's exact split solution (core.relu_solution) at the recorded times, JSON-ready; None where
    its closed form cannot be evaluated (inputs far outside docs/theory.md section 8's range)."""
    try:
        sol = core.relu_solution(u0, w0, **hyper, times=t, optimizer=optimizer)
    except (FloatingPointError, OverflowError, ValueError):  # the halves' closed form beyond float range
        return None
    return {"m": json_numbers(sol.m), "ntk": json_numbers(sol.ntk), "alignment": json_numbers(sol.alignment),
            "loss": json_numbers(sol.loss), "m_positive": json_numbers(sol.m_positive),
            "m_negative": json_numbers(sol.m_negative), "crossed": [int(n) for n in sol.crossed],
            "first_crossing": json_number(sol.first_crossing)}


def _result(trace, start, hyper, width, var_u, var_w, seed, optimizer, batch_size, samples, noise_var,
            ntk_threshold, alignment_threshold, network) -> dict:
    steps = optimizer != "flow"
    teacher, input_var = hyper["teacher"], hyper["input_var"]
    m0, ntk0 = float(start.m[0]), float(start.ntk[0])
    m_lin, loss_lin = core.kernel_prediction(m0, teacher, ntk0, input_var, trace.t, steps=steps)
    diverged = not bool(np.all(np.isfinite(trace.m)))
    label = measured_label(trace, teacher, ntk_threshold, alignment_threshold)
    phase, mechanism = split_label(label) if label is not None else ("diverged", None)
    op = None if diverged else measured_order_parameters(trace)
    final = {
        "horizon": json_number(trace.t[-1]),
        "m": json_number(trace.m[-1]),
        "ntk": json_number(trace.ntk[-1]),
        "alignment": json_number(trace.alignment[-1]),
        "loss": json_number(trace.loss[-1]),
        "ntk_change": None if op is None else json_number(op.ntk_change),
        "phase": phase,
        "mechanism": mechanism,
        "label": label,
        "alignment_gain": None if op is None else json_number(op.alignment_gain),
        "disalignment": None if op is None else json_number(op.disalignment),
        "not_converged": True if op is None else bool(op.not_converged),
        "tau": None,
        "t_learn": None if diverged else _first_time(trace.t, trace.loss),
        "thresholds": {"ntk": ntk_threshold, "alignment": alignment_threshold},
        "diverged": diverged,
    }
    seed_out = [int(s) for s in seed] if isinstance(seed, (list, tuple)) else int(seed)
    params = {"width": width, **{k: hyper[k] for k in ("output_scale", "lr_u", "lr_w")},
              "init_var_u": var_u, "init_var_w": var_w, "input_var": input_var, "teacher": teacher,
              "init": "sampled vectors", "seed": seed_out, "optimizer": optimizer}
    if optimizer == "sgd":
        params.update(batch_size=batch_size, samples=samples, noise_var=noise_var)
    params["activation"] = network["activation"]
    if network["activation"] == "leaky_relu":
        params["slope"] = network["slope"]
    if network["activation"] != "linear":
        params["nodes"] = network["nodes"]
    return {
        "params": params,
        "t": [int(t) if steps else float(t) for t in trace.t],
        "m": json_numbers(trace.m), "ntk": json_numbers(trace.ntk), "alignment": json_numbers(trace.alignment),
        "norm_u2": json_numbers(trace.norm_u2), "norm_w2": json_numbers(trace.norm_w2), "loss": json_numbers(trace.loss),
        "m_lin": json_numbers(m_lin), "loss_lin": json_numbers(loss_lin),
        "imbalance": json_numbers(trace.imbalance), "gram_det": json_numbers(trace.gram_det),
        "init": {"U": json_number(start.U[0]), "W": json_number(start.W[0]), "V": json_number(start.V[0]), "G": json_number(start.gram_det[0]),
                 "m": json_number(start.m[0]), "ntk": json_number(start.ntk[0]), "alignment": json_number(start.alignment[0])},
        "final": final,
    }
