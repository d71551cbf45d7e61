"""Job kind `activations` (issue 15; the paper's Fig. 1): activated two-layer networks on the model's own task
against the exact theory. ``phasediag experiment CONFIG`` (or ``phasediag run CONFIG``) with
``experiment: activations``.

Per case (an alignment case |m0| < |m*|, a disalignment case |m0| > |m*|, or any others) one pair of initial
vectors u0, w0 in R^d is drawn, and from them the network f(x) = kappa sum_i u_i phi(w_i x) is trained by
population GD (quadrature, :mod:`phasediag.training.simulate`) for every activation phi, so that the networks
of one case differ only in phi (docs/theory.md section 10). Beside each measured trajectory, the theory's curve
for the same initial vectors:

- linear: the exact GD solution of the linear model (core.gd_state) -- exact;
- relu: the exact ReLU split solution (core.relu_solution), exact until the first w_i changes sign (that step
  and the number of units crossed by each step are stored);
- the others: the exact GD solution of the linear model with output scale gamma kappa, gamma the activation's
  small-weight gain (1 tanh, 1/4 sigmoid, 1/2 swish, (1 + slope)/2 leaky_relu): the network linearized in its
  weights' size, the linear theory as it applies to that network.

Compared, per case and activation: the worst deviation over the recorded steps of zeta, of the NTK (the
kernel's linear component, simulate.activated_measurements) and of m, each relative to the largest size of the
theory's curve; and the phase label (docs/theory.md section 6's rules on the recorded trajectory) of the theory
against the one measured on the network.

Results: results.npz with coordinates case, activation, step; meta.json; figures <name>__alignment_vs_step,
<name>__ntk_vs_step and <name>__deviation, drawn from the run directory alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field as dataclass_field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from phasediag import core
from phasediag.config import rules
from phasediag.config.reader import (FIGURE_KEYS, NAME_PATTERN, AnyKey, ConfigError, Located, bounded_int,
                                     check_name, fail, figure_formats, figure_options, located, mapping, number,
                                     plain, ruled, string, width_expression)
from phasediag.config.sweep import swept_values
from phasediag.errors import FieldError
from phasediag.engine.workers import ordered_map, single_threaded_blas
from phasediag.results.store import Result
from phasediag.training import activations as acts
from phasediag.training import simulate
from phasediag.training.measure import measured_label
from phasediag.training.nonlinear import record_steps

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = ["Case", "Study", "read", "units", "execute", "figures", "summarize", "text", "run_case",
           "record_steps", "initial_vectors", "findings", "alignment_figure", "ntk_figure", "deviation_figure",
           "COORDS", "DIMS", "TABLES"]

TOP_KEYS = ("name", "description", "experiment", "model", "data", "cases", "map", "train", "classify", "seed",
            "plot")
#: the map of labels: widths x initial variances (sigma_u^2 = sigma_w^2), rates and output scale in d
MAP_KEYS = ("widths", "init_var", "teacher", "output_scale", "lr_u", "lr_w")
MODEL_KEYS = ("width", "output_scale", "lr_u", "lr_w", "init_var_u", "init_var_w", "activations", "slope")
DATA_KEYS = ("input_var", "teacher")
#: what a case may set (over model and data): the initial variances, the teacher (absolute, or relative to the
#: linear network's initial slope m0 = kappa u0 . w0 of the case's vectors), the output scale and the rates
CASE_KEYS = ("init_var_u", "init_var_w", "teacher", "teacher_over_m0", "output_scale", "lr_u", "lr_w")
TRAIN_KEYS = ("steps", "record", "nodes")
CLASSIFY_KEYS = ("ntk_threshold", "alignment_threshold")
PLOT_KEYS = ("formats", *FIGURE_KEYS)

MAX_WIDTH = 1_000_000
MAX_STEPS = 100_000
MAX_RECORD = 500
MAX_CASES = 6
MAX_INIT_VAR = 1e4  # docs/theory.md section 8's range of sigma^2
INPUT_VAR_RANGE = (1e-3, 1e3)  # and of a
#: cap on the work: runs x steps x width x quadrature nodes (~2-10 ns each on one core: about an hour)
MAX_WORK = 1e12
DIVERGED_CODE = -1


# ---------------------------------------------------------------- the config


@dataclass(frozen=True)
class Case:
    """One initialization and task: the teacher is `teacher`, or `teacher_over_m0` times the linear network's
    initial slope m0 = kappa u0 . w0 of the case's vectors (None: the other one is given)."""

    name: str
    output_scale: float
    lr_u: float
    lr_w: float
    init_var_u: float
    init_var_w: float
    teacher: float | None
    teacher_over_m0: float | None

    def teacher_for(self, m0: float) -> float:
        return self.teacher if self.teacher is not None else self.teacher_over_m0 * m0

    @property
    def resolved(self) -> dict:
        out = {"output_scale": self.output_scale, "lr_u": self.lr_u, "lr_w": self.lr_w,
               "init_var_u": self.init_var_u, "init_var_w": self.init_var_w}
        out.update({"teacher": self.teacher} if self.teacher is not None else {"teacher_over_m0": self.teacher_over_m0})
        return out


@dataclass(frozen=True)
class LabelMap:
    """The grid of `map`: widths d x initial variances s (sigma_u^2 = sigma_w^2 = s); output scale and rates as
    given (numbers or expressions in d, with their values per width)."""

    widths: tuple[int, ...]
    init_vars: tuple[float, ...]
    teacher: float
    output_scale: tuple[str, tuple[float, ...]]
    lr_u: tuple[str, tuple[float, ...]]
    lr_w: tuple[str, tuple[float, ...]]
    init_var_spec: object = None

    @property
    def resolved(self) -> dict:
        return {"widths": list(self.widths), "init_var": self.init_var_spec, "teacher": self.teacher,
                "output_scale": self.output_scale[0], "lr_u": self.lr_u[0], "lr_w": self.lr_w[0]}


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    width: int
    activations: tuple[str, ...]
    slope: float
    input_var: float
    cases: tuple[Case, ...]
    steps: int
    record: int
    nodes: int
    ntk_threshold: float
    alignment_threshold: float
    seed: int
    formats: tuple[str, ...]
    label_map: LabelMap | None = None
    figure: dict = dataclass_field(default_factory=dict, compare=False)

    @property
    def map_shape(self) -> tuple[int, int, int]:
        grid = self.label_map
        return (len(self.activations), len(grid.widths), len(grid.init_vars)) if grid else (0, 0, 0)

    @property
    def runs(self) -> int:
        return len(self.cases) * len(self.activations) + int(np.prod(self.map_shape))

    @property
    def resolved(self) -> dict:
        """Plain data of everything that determines the results (meta.json's config; it reads back as this study)."""
        return {
            "name": self.name, "description": self.description, "experiment": "activations",
            "model": {"width": self.width, "activations": list(self.activations), "slope": self.slope},
            "data": {"input_var": self.input_var},
            **({"cases": {case.name: case.resolved for case in self.cases}} if self.cases else {}),
            **({"map": self.label_map.resolved} if self.label_map else {}),
            "train": {"steps": self.steps, "record": self.record, "nodes": self.nodes},
            "classify": {"ntk_threshold": self.ntk_threshold, "alignment_threshold": self.alignment_threshold},
            "seed": self.seed, "plot": {"formats": list(self.formats), **self.figure},
        }


def _activations(item: Located) -> tuple[str, ...]:
    if not isinstance(item.value, list) or not item.value:
        raise fail(item.path, item.line, f"must be a non-empty list of activations ({', '.join(rules.ACTIVATIONS)})")
    names = tuple(ruled(v, rules.activation, numeric=False) for v in item.value)
    if len(set(names)) != len(names):
        raise fail(item.path, item.line, "activations must be distinct")
    return names


def _case(name: str, item: Located, model: dict, data: dict) -> Case:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise fail(item.path, item.line, "a case's name: letters, digits, '_', '-', '.' (it labels the figures)")
    spec = mapping(item, CASE_KEYS)
    if "teacher" in spec and "teacher_over_m0" in spec:
        raise fail(spec["teacher_over_m0"].path, spec["teacher_over_m0"].line,
                   f"give teacher or teacher_over_m0, not both (teacher is set at line {spec['teacher'].line})")

    def value(key: str, source: dict, **kw) -> float | None:
        item = spec.get(key) or source.get(key)
        return None if item is None else number(item, **kw)

    values = {key: value(key, model, positive=True) for key in ("output_scale", "lr_u", "lr_w")}
    for key in ("init_var_u", "init_var_w"):
        values[key] = value(key, model, nonneg=True)
        if values[key] is not None and values[key] > MAX_INIT_VAR:
            where = spec.get(key) or model.get(key)
            raise fail(where.path, where.line, f"must be at most {MAX_INIT_VAR:g} (the supported range), "
                                               f"got {values[key]:g}")
    missing = [key for key in ("init_var_u", "init_var_w") if values[key] is None]
    if missing:
        raise ConfigError(f"cases.{name}.{missing[0]}: is required (in the case or in model)")
    if values["init_var_u"] == 0 and values["init_var_w"] == 0:
        raise fail(item.path, item.line, "init_var_u and init_var_w are both 0: u = w = 0 never trains")
    teacher = value("teacher", data) if "teacher_over_m0" not in spec else None
    ratio = number(spec["teacher_over_m0"]) if "teacher_over_m0" in spec else None
    if ratio is not None and not 0 < abs(ratio) <= 1e6:
        raise fail(spec["teacher_over_m0"].path, spec["teacher_over_m0"].line,
                   f"must be nonzero with |value| <= 1e6, got {ratio:g}")
    if teacher is None and ratio is None:
        raise ConfigError(f"cases.{name}.teacher: is required (teacher or teacher_over_m0, in the case or data)")
    defaults = {"output_scale": 1.0, "lr_u": 0.1, "lr_w": 0.1}
    return Case(name=name, teacher=teacher, teacher_over_m0=ratio,
                **{k: (defaults[k] if values[k] is None else values[k]) for k in defaults},
                init_var_u=values["init_var_u"], init_var_w=values["init_var_w"])


def read(root: Located, source: str, options) -> Study:
    """The validated study: every bad value named by its key path and line, the work cap; no I/O."""
    top = mapping(root, TOP_KEYS, required=("name", "experiment", "model", "train"))
    if "cases" not in top and "map" not in top:
        raise ConfigError("cases: is required (or map, or both): the cases to draw against the theory, the map of "
                          "labels over width and initial variance")
    if string(top["experiment"]) != "activations":
        raise fail("experiment", top["experiment"].line, f"this study is activations, got {top['experiment'].value!r}")
    name = check_name(top["name"])
    model = mapping(top["model"], MODEL_KEYS, required=("width", "activations"))
    data = mapping(top["data"], DATA_KEYS) if "data" in top else {}
    width = bounded_int(model["width"], low=1, high=MAX_WIDTH)
    cases = ()
    if "cases" in top:
        cases_item = top["cases"]
        cases_map = mapping(cases_item, AnyKey())
        if not cases_map or len(cases_map) > MAX_CASES:
            raise fail(cases_item.path, cases_item.line, f"must name 1 to {MAX_CASES} cases (one figure curve each)")
        cases = tuple(_case(key, sub, model, data) for key, sub in cases_map.items())
    label_map = _label_map(top["map"], model, data) if "map" in top else None
    train = mapping(top["train"], TRAIN_KEYS, required=("steps",))
    steps = bounded_int(train["steps"], low=1, high=MAX_STEPS)
    record = bounded_int(train["record"], low=2, high=MAX_RECORD) if "record" in train else 40
    nodes = ruled(train["nodes"], rules.quadrature_nodes) if "nodes" in train else rules.DEFAULT_NODES
    classify = mapping(top["classify"], CLASSIFY_KEYS) if "classify" in top else {}
    thresholds = {key: (ruled(classify[key], getattr(rules, key)) if key in classify else 0.1) for key in CLASSIFY_KEYS}
    plot = mapping(top["plot"], PLOT_KEYS) if "plot" in top else {}
    study = Study(
        name=name, description=string(top["description"]) if "description" in top else "", width=width,
        activations=_activations(model["activations"]),
        slope=ruled(model["slope"], rules.slope) if "slope" in model else rules.DEFAULT_SLOPE,
        input_var=_input_var(data), cases=cases,
        steps=steps, record=record, nodes=nodes, ntk_threshold=thresholds["ntk_threshold"],
        alignment_threshold=thresholds["alignment_threshold"],
        seed=ruled(top["seed"], rules.seed) if "seed" in top else 0, formats=figure_formats(plot),
        label_map=label_map, figure=figure_options(plot, PLOT_LABELS, root.base_dir, FIGURE_NAMES))
    if cases:
        _check_m0(study, top["cases"])
    widest = max(((width,) if cases else ()) + (label_map.widths if label_map else ()))
    try:
        rules.network_size(widest, 2 * nodes)
    except FieldError as exc:
        item = train.get("nodes") or model["width"]
        raise fail(item.path, item.line, exc.message) from None
    map_width = sum(label_map.widths) * len(label_map.init_vars) * len(study.activations) if label_map else 0
    work = (len(cases) * len(study.activations) * width + map_width) * steps * 2 * nodes
    if work > MAX_WORK:
        raise fail("train.steps", train["steps"].line,
                   f"{study.runs} runs x {steps:,} steps x width {width:,} x {2 * nodes} quadrature nodes is "
                   f"{work:.3g}, above the cap of {MAX_WORK:.0e} (about an hour of one core); reduce train.steps, "
                   "model.width or train.nodes")
    return study


def _input_var(data: dict) -> float:
    if "input_var" not in data:
        return 1.0
    a = number(data["input_var"], positive=True)
    low, high = INPUT_VAR_RANGE
    if not low <= a <= high:
        raise fail(data["input_var"].path, data["input_var"].line, f"must be in [{low:g}, {high:g}] (the supported "
                                                                   f"range), got {a:g}")
    return a


def _check_m0(study: Study, cases_item: Located) -> None:
    """A teacher given relative to m0 needs m0 != 0: the case's vectors are drawn here (cheap) to check."""
    for i, case in enumerate(study.cases):
        if case.teacher_over_m0 is not None:
            u0, w0 = initial_vectors(study, i)
            if case.output_scale * float(u0 @ w0) == 0.0:
                where = cases_item.value[case.name].value["teacher_over_m0"]
                raise fail(where.path, where.line, "the case's initial slope m0 = kappa u0 . w0 is 0 (a zero layer), "
                                                   "so teacher_over_m0 gives no teacher; give teacher instead")


def _label_map(item: Located, model: dict, data: dict) -> LabelMap:
    spec = mapping(item, MAP_KEYS, required=("widths", "init_var"))
    widths_item = spec["widths"]
    if not isinstance(widths_item.value, list) or not widths_item.value:
        raise fail(widths_item.path, widths_item.line, "must be a non-empty list of widths, e.g. [10, 100, 1000]")
    widths = tuple(bounded_int(v, low=1, high=MAX_WIDTH) for v in widths_item.value)
    if len(set(widths)) != len(widths):
        raise fail(widths_item.path, widths_item.line, "widths must be distinct")
    var_item = spec["init_var"]
    values = swept_values(var_item, low=1e-12, high=MAX_INIT_VAR)
    teacher_item = spec.get("teacher") or data.get("teacher")
    rates = {}
    for key, default in (("output_scale", 1.0), ("lr_u", 0.1), ("lr_w", 0.1)):
        source = spec.get(key) or model.get(key)
        rates[key] = (width_expression(source, widths, positive=True) if source is not None
                      else (repr(default), (default,) * len(widths)))
    return LabelMap(widths=widths, init_vars=tuple(float(v) for v in values),
                    teacher=number(teacher_item) if teacher_item is not None else 1.0, init_var_spec=plain(var_item),
                    **rates)


# ---------------------------------------------------------------- training and theory


def initial_vectors(study: Study, i_case: int) -> tuple[np.ndarray, np.ndarray]:
    """u0, w0 of case i (shape (width,)), from SeedSequence([seed, i]): the same for every activation."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([study.seed, i_case])))
    case = study.cases[i_case]
    return simulate.sample_vectors(study.width, case.init_var_u, case.init_var_w, rng)


def _theory_trace(t, m, ntk, alignment, norm_u2, norm_w2, loss, gram_det0: float) -> simulate.Trace:
    """A theory trajectory in the shape measured_label reads (it uses G only at t = 0)."""
    zero = np.zeros_like(m)
    return simulate.Trace(t=t, m=m, ntk=ntk, alignment=alignment, norm_u2=norm_u2, norm_w2=norm_w2, loss=loss,
                          U=norm_u2, W=norm_w2, V=zero, imbalance=zero, gram_det=np.full_like(m, gram_det0))


def _label_code(label: str | None) -> int:
    return DIVERGED_CODE if label is None else core.PHASES.index(label)


def _deviation(measured: np.ndarray, theory: np.ndarray) -> float:
    """max_t |measured - theory| / max_t |theory| (inf where the run or its theory diverged: "diverged")."""
    if not (np.all(np.isfinite(measured)) and np.all(np.isfinite(theory))):
        return float("inf")
    scale = float(np.max(np.abs(theory)))
    return float(np.max(np.abs(measured - theory)) / scale) if scale > 0 else float(np.max(np.abs(measured)))


def run_case(study: Study, i_case: int, activation: str) -> dict:
    """Train one network of a case and evaluate its theory; returns the arrays of the record (see DIMS)."""
    case = study.cases[i_case]
    u0, w0 = initial_vectors(study, i_case)
    m0 = case.output_scale * float(u0 @ w0)
    hyper = dict(output_scale=case.output_scale, lr_u=case.lr_u, lr_w=case.lr_w, input_var=study.input_var,
                 teacher=case.teacher_for(m0))
    return {**run_network(study, u0, w0, activation, hyper), "init": np.array([m0, hyper["teacher"],
                                                                                float(u0 @ u0), float(w0 @ w0),
                                                                                float(u0 @ w0)])}


def run_network(study: Study, u0: np.ndarray, w0: np.ndarray, activation: str, hyper: dict) -> dict:
    """Train the activated network from (u0, w0) by population GD and evaluate its theory (module docstring):
    the records, the deviations, both labels, the quadrature's error estimate and the ReLU crossings."""
    steps = record_steps(study.steps, study.record)
    diagnostics: dict = {}
    with single_threaded_blas():
        trace = simulate.gd_vectors(u0, w0, **hyper, steps=steps, activation=activation, slope=study.slope,
                                    nodes=study.nodes, diagnostics=diagnostics)
    gram = core.explicit_gram(float(u0 @ u0), float(w0 @ w0), float(u0 @ w0))
    first, crossed = -1, np.zeros(steps.size, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging theory: inf records, reported as diverged
        if activation == "relu":
            sol = core.relu_solution(u0, w0, **hyper, times=steps, optimizer="gd")
            theory = (sol.m, sol.ntk, sol.alignment, sol.norm_u2, sol.norm_w2, sol.loss)
            first = -1 if sol.first_crossing == np.inf else int(sol.first_crossing)
            crossed = sol.crossed
        else:
            gain = acts.activation(activation, study.slope).gain
            problem = core.Problem(*(np.asarray(float(x)) for x in (gain * hyper["output_scale"], hyper["lr_u"],
                                                                      hyper["lr_w"], hyper["input_var"],
                                                                      hyper["teacher"])), gram)
            state = core.gd_state(core.invariants(problem), steps)
            theory = (state.m, state.ntk, state.alignment, state.norm_u2, state.norm_w2, state.loss)
    t = steps.astype(float)
    teacher = hyper["teacher"]
    measured = measured_label(trace, teacher, study.ntk_threshold, study.alignment_threshold)
    predicted = measured_label(_theory_trace(t, *theory, float(gram.G)), teacher, study.ntk_threshold,
                               study.alignment_threshold)
    predicted_records = np.stack([theory[0], theory[1], theory[2], theory[5]])
    # a diverged theory (exact GD past float range) holds inf, like a diverged network's records (simulate.Trace)
    predicted_records = np.where(np.isfinite(predicted_records), predicted_records, np.inf)
    return {
        "measured": np.stack([trace.m, trace.ntk, trace.alignment, trace.loss, trace.norm_u2, trace.norm_w2]),
        "theory": predicted_records,
        "deviation": np.array([_deviation(trace.alignment, theory[2]), _deviation(trace.ntk, theory[1]),
                               _deviation(trace.m, theory[0])]),
        "labels": np.array([_label_code(measured), _label_code(predicted)], dtype=np.int64),
        "quadrature_error": float(diagnostics.get("quadrature_error", 0.0)),
        "crossed": crossed, "first_crossing": first,
    }


def map_vectors(study: Study, i_width: int, init_var: float) -> tuple[np.ndarray, np.ndarray]:
    """u0, w0 of the map's width i at initial variance init_var: the standard-normal draws depend on (seed,
    width) only, so every variance and activation of a width starts from the same draws."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([study.seed, 1, i_width])))
    return simulate.sample_vectors(study.label_map.widths[i_width], init_var, init_var, rng)


def run_map_point(study: Study, activation: str, i_width: int, i_var: int) -> dict:
    grid = study.label_map
    u0, w0 = map_vectors(study, i_width, grid.init_vars[i_var])
    hyper = dict(output_scale=grid.output_scale[1][i_width], lr_u=grid.lr_u[1][i_width],
                 lr_w=grid.lr_w[1][i_width], input_var=study.input_var, teacher=grid.teacher)
    run = run_network(study, u0, w0, activation, hyper)
    return {"labels": run["labels"], "deviation": run["deviation"]}


def _task(args: tuple) -> dict:
    if args[0] == "map":
        return run_map_point(*args[1:])
    study, i_case, activation = args
    return run_case(study, i_case, activation)


MEASURED = ("m", "ntk", "alignment", "loss", "norm_u2", "norm_w2")
PREDICTED = ("m", "ntk", "alignment", "loss")
DEVIATIONS = ("alignment", "ntk", "m")


def simulate_study(study: Study, *, workers: int = 1, progress: Callable[[int], None] | None = None) -> dict:
    """Every (case, activation) run (ordered_map: bit-identical for any `workers`); the arrays of results.npz."""
    steps = record_steps(study.steps, study.record)
    shape = (len(study.cases), len(study.activations))
    tasks = [(study, i, a) for i in range(shape[0]) for a in study.activations]
    out = {f"measured_{f}": np.empty(shape + (steps.size,)) for f in MEASURED}
    out.update({f"theory_{f}": np.empty(shape + (steps.size,)) for f in PREDICTED})
    out.update({f"deviation_{f}": np.empty(shape) for f in DEVIATIONS})
    out.update({"label_measured": np.empty(shape, dtype=np.int64), "label_theory": np.empty(shape, dtype=np.int64),
                "quadrature_error": np.empty(shape)})
    relu = "relu" in study.activations
    if relu:
        out["relu_crossed"] = np.zeros((shape[0], steps.size), dtype=np.int64)
        out["relu_first_crossing"] = np.full(shape[0], -1, dtype=np.int64)
    init = np.empty((shape[0], 5))
    map_tasks = [("map", study, a, i, k) for a in study.activations for i, k in np.ndindex(*study.map_shape[1:])]
    results = ordered_map(_task, tasks + map_tasks, workers, progress, chunksize=1)
    for (_, i, activation), run in zip(tasks, results):
        j = study.activations.index(activation)
        for k, f in enumerate(MEASURED):
            out[f"measured_{f}"][i, j] = run["measured"][k]
        for k, f in enumerate(PREDICTED):
            out[f"theory_{f}"][i, j] = run["theory"][k]
        for k, f in enumerate(DEVIATIONS):
            out[f"deviation_{f}"][i, j] = run["deviation"][k]
        out["label_measured"][i, j], out["label_theory"][i, j] = run["labels"]
        out["quadrature_error"][i, j] = run["quadrature_error"]
        if activation == "relu":
            out["relu_crossed"][i], out["relu_first_crossing"][i] = run["crossed"], run["first_crossing"]
        init[i] = run["init"]
    for k, f in enumerate(("m0", "teacher", "U0", "W0", "V0")):
        out[f] = init[:, k]
    if not study.cases:
        out = {}
    if study.label_map:
        out.update({"map_label_measured": np.empty(study.map_shape, dtype=np.int64),
                    "map_label_theory": np.empty(study.map_shape, dtype=np.int64),
                    "map_deviation_alignment": np.empty(study.map_shape)})
        for (_, _, activation, i, k), run in zip(map_tasks, results):
            j = study.activations.index(activation)
            out["map_label_measured"][j, i, k], out["map_label_theory"][j, i, k] = run["labels"]
            out["map_deviation_alignment"][j, i, k] = run["deviation"][0]
    return out


# ---------------------------------------------------------------- findings


def _theory_name(activation: str, slope: float) -> str:
    if activation == "linear":
        return "exact linear GD"
    if activation == "relu":
        return "exact ReLU split solution"
    gain = acts.activation(activation, slope).gain
    return f"linear GD with output scale {gain:g} kappa (small-weight gain)"


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _sig(x, digits: int = 4) -> float | None:
    x = _num(x)
    return None if x is None else float(f"{x:.{digits}g}")


def _change(ntk: np.ndarray) -> float | None:
    """Theta_T/Theta_0 - 1 (None for a diverged trajectory)."""
    return _sig(ntk[-1] / ntk[0] - 1.0) if np.all(np.isfinite(ntk)) and ntk[0] > 0 else None


def _label_name(code: int) -> str:
    return "diverged" if code == DIVERGED_CODE else core.PHASES[code]


def findings(study: Study, arrays: dict) -> dict:
    """Per case: the initial slope m0 and the teacher, zeta_0; per activation: zeta and the NTK change at the end
    (measured and theory), the worst deviations, both labels and whether they agree, the quadrature's error
    estimate; for relu the first crossing step and the fraction of units crossed by the end (JSON-ready)."""
    out = []
    for i, case in enumerate(study.cases):
        rows = []
        for j, activation in enumerate(study.activations):
            measured_ntk, theory_ntk = arrays["measured_ntk"][i, j], arrays["theory_ntk"][i, j]
            row = {
                "activation": activation, "theory": _theory_name(activation, study.slope),
                "alignment_final": _sig(arrays["measured_alignment"][i, j, -1]),
                "theory_alignment_final": _sig(arrays["theory_alignment"][i, j, -1]),
                "ntk_change": _change(measured_ntk),
                "theory_ntk_change": _change(theory_ntk),
                **{f"deviation_{f}": _sig(arrays[f"deviation_{f}"][i, j], 3) for f in DEVIATIONS},
                "label": _label_name(int(arrays["label_measured"][i, j])),
                "theory_label": _label_name(int(arrays["label_theory"][i, j])),
                "quadrature_error": _sig(arrays["quadrature_error"][i, j], 2),
            }
            row["labels_agree"] = row["label"] == row["theory_label"]
            if activation == "relu":
                first = int(arrays["relu_first_crossing"][i])
                row["first_crossing_step"] = None if first < 0 else first
                row["crossed_fraction"] = _sig(arrays["relu_crossed"][i, -1] / study.width, 3)
            rows.append(row)
        m0, teacher = float(arrays["m0"][i]), float(arrays["teacher"][i])
        norms = float(np.sqrt(arrays["U0"][i] * arrays["W0"][i]))
        zeta0 = float(arrays["V0"][i]) / norms if norms > 0 else 0.0  # a zero layer: zeta0 = 0 (as in Trace)
        out.append({"case": case.name, "m0": _sig(m0), "teacher": _sig(teacher), "zeta0": _sig(zeta0),
                    "kind": "alignment (|m0| < |m*|)" if abs(m0) < abs(teacher) else "disalignment (|m0| > |m*|)",
                    "by_activation": rows})
    agree = sum(r["labels_agree"] for c in out for r in c["by_activation"])
    found = {"steps": study.steps, "width": study.width, "cases": out, "labels_agree": agree,
             "runs": len(study.cases) * len(study.activations)}
    if study.label_map:
        found["map"] = _map_findings(study, arrays)
    return found


def _map_findings(study: Study, arrays: dict) -> dict:
    """Per activation: the share of the map where the theory's label is the network's, and the disagreements."""
    grid = study.label_map
    rows = []
    for j, activation in enumerate(study.activations):
        measured, theory = arrays["map_label_measured"][j], arrays["map_label_theory"][j]
        agree = measured == theory
        rows.append({
            "activation": activation, "agree": int(np.count_nonzero(agree)), "points": int(agree.size),
            "diverged": int(np.count_nonzero(measured == DIVERGED_CODE)),
            "theory_diverged": int(np.count_nonzero(theory == DIVERGED_CODE)),
            "disagreements": [{"width": grid.widths[i], "init_var": _sig(grid.init_vars[k]),
                               "label": _label_name(int(measured[i, k])), "theory_label": _label_name(int(theory[i, k]))}
                              for i, k in zip(*np.nonzero(~agree))]})
    return {"widths": list(grid.widths), "init_var": [_sig(v) for v in grid.init_vars], "by_activation": rows}


# ---------------------------------------------------------------- figures
#
# One panel per activation (small multiples: activations are not ordered, and curves of two activations would
# coincide); in each, one colour per case: the phase colour of its mechanism (alignment orange, disalignment
# purple, plots.base.CATEGORY_COLOURS) when the case is named after one, else base.CURVE_COLOURS. Theory solid,
# measured as open markers; the ReLU split solution's first crossing marked by a vertical dotted line.

_DISPLAY = {"linear": "linear", "relu": "ReLU", "leaky_relu": "leaky ReLU", "tanh": "tanh", "sigmoid": "sigmoid",
            "swish": "swish"}


def _case_colour(study: Study, i: int) -> str:
    from phasediag.plots.base import CURVE_COLOURS, phase_colour

    return phase_colour("phase", study.cases[i].name) or CURVE_COLOURS[i % len(CURVE_COLOURS)]


def _panel_name(study: Study, activation: str) -> str:
    from phasediag.plots.notation import number_tex

    name = _DISPLAY[activation]
    if activation == "leaky_relu":
        name += f" (slope ${number_tex(study.slope)}$)"
    return name


def _options(study: Study):
    from phasediag.plots.base import current_options

    return current_options({"config": study.resolved})


def _grid(study: Study, options):
    from phasediag.plots.base import new_figure

    n = len(study.activations)
    cols = min(n, 2 if options.narrow else 3)
    rows = -(-n // cols)
    width = 7.0 if options.narrow else 9.5
    fig = new_figure(width, (2.3 if options.narrow else 2.5) * rows + 1.1, layout=None)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False, sharex=True))
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _curves_figure(study: Study, arrays: dict, quantity: Callable[[np.ndarray], np.ndarray], ylabel: str,
                   figure: str, default_title: str) -> Figure:
    from matplotlib.lines import Line2D
    from phasediag.plots.base import close_columns, fit, keep_inside, legend, readable_log_ticks, wrapped_title

    options = _options(study)
    fig, axes = _grid(study, options)
    steps = arrays["step"].astype(float)
    shown = steps > 0  # log steps: step 0 is the start of every curve
    for j, activation in enumerate(study.activations):
        ax = axes.flat[j]
        for i in range(len(study.cases)):
            colour = _case_colour(study, i)
            theory = quantity(arrays, "theory", i, j)
            measured = quantity(arrays, "measured", i, j)
            keep = shown & np.isfinite(theory) & (theory > 0)
            ax.plot(steps[keep], theory[keep], color=colour, linewidth=1.4, zorder=2)
            keep = shown & np.isfinite(measured) & (measured > 0)
            ax.plot(steps[keep], measured[keep], linestyle="none", marker="o", markersize=3.2, markerfacecolor="none",
                    markeredgecolor=colour, markeredgewidth=0.8, zorder=3, clip_on=False)
        ax.set_xscale("log")
        ax.set_yscale("log")
        readable_log_ticks(ax, 4 if options.narrow else 6)
        ax.set_title(options.title_of(_panel_name(study, activation), activation))

        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(options.label(figure, ylabel))
    for ax in axes[-1]:
        ax.set_xlabel(options.label("step", "step $t$"))
    handles = [Line2D([], [], color=_case_colour(study, i), linewidth=1.4, marker="o", markerfacecolor="none",
                      label=f"{study.cases[i].name} case: theory (line), network (markers)")
               for i in range(len(study.cases))]
    if "relu" in study.activations:
        handles.append(Line2D([], [], linestyle="none", label=_crossing_note(study, arrays)))
    legend(fig, handles, below=True, ncols=1 if options.narrow else 2)
    title = options.title_of(default_title, figure, f"{study.name}__{figure}")
    if title:
        fig.suptitle(wrapped_title(fig, title, fig.get_size_inches()[0] - 0.5))
    fit(fig)
    keep_inside(fig)
    close_columns(fig)
    return fig


def _crossing_note(study: Study, arrays: dict) -> str:
    """A legend line for ReLU: per case, the share of units whose w_i crossed 0 by the end (the split solution is
    exact before the first crossing; units crossing later serve the other half)."""
    parts = []
    for i, case in enumerate(study.cases):
        first = int(arrays["relu_first_crossing"][i])
        share = 100.0 * float(arrays["relu_crossed"][i, -1]) / study.width
        parts.append(f"{case.name} none" if first < 0 else f"{case.name} {share:.3g}% (first at step {first})")
    return "ReLU: $w_i$ crossing 0 by the end: " + ", ".join(parts)


def _abs_alignment(arrays: dict, which: str, i: int, j: int) -> np.ndarray:
    return np.abs(arrays[f"{which}_alignment"][i, j])


def _ntk_change(arrays: dict, which: str, i: int, j: int) -> np.ndarray:
    ntk = arrays[f"{which}_ntk"][i, j]
    with np.errstate(invalid="ignore", over="ignore"):  # a diverged run: inf records, not drawn
        return np.abs(ntk / ntk[0] - 1.0)


def _setting(study: Study) -> str:
    from phasediag.plots.notation import number_tex as num

    return (rf"$d = {num(study.width)}$, population GD; theory: exact linear GD at output scale $\gamma\kappa$ "
            "(ReLU: exact split solution)")


def alignment_figure(study: Study, arrays: dict) -> Figure:
    """|zeta_t| against the step, one panel per activation: theory (line) and network (markers) per case."""
    return _curves_figure(study, arrays, _abs_alignment, r"$|\zeta_t| = |\cos(u, w)|$", "alignment_vs_step",
                          "Layer alignment of activated networks against the exact theory\n" + _setting(study))


def ntk_figure(study: Study, arrays: dict) -> Figure:
    """|Theta_t/Theta_0 - 1| against the step (Theta: the kernel's linear component), as alignment_figure."""
    return _curves_figure(study, arrays, _ntk_change, r"$|\Theta_t/\Theta_0 - 1|$", "ntk_vs_step",
                          "NTK change of activated networks against the exact theory\n" + _setting(study))


def deviation_figure(study: Study, arrays: dict) -> Figure:
    """The worst deviation from the theory per activation (x) and case (colour): zeta (circles), the NTK
    (squares); filled where the network's phase label is the theory's, open where it is not."""
    from matplotlib.lines import Line2D
    from phasediag.plots.base import fit, keep_inside, legend, new_figure, readable_log_ticks, wrapped_title

    options = _options(study)
    fig = new_figure(7.0 if options.narrow else 8.0, 3.6, layout=None)
    ax = fig.subplots()
    n_cases = len(study.cases)
    x = np.arange(len(study.activations), dtype=float)
    floor = 1e-17  # an exact match (0) is drawn at the floor of the axis
    for i in range(n_cases):
        colour = _case_colour(study, i)
        agree = arrays["label_measured"][i] == arrays["label_theory"][i]
        for k, (quantity, marker) in enumerate((("alignment", "o"), ("ntk", "s"))):
            values = np.maximum(arrays[f"deviation_{quantity}"][i], floor)
            offset = (i - (n_cases - 1) / 2) * 0.18 + (k - 0.5) * 0.08
            finite = np.isfinite(values)
            for face, mask in ((colour, agree & finite), ("none", ~agree & finite)):
                ax.plot(x[mask] + offset, values[mask], linestyle="none", marker=marker, markersize=5.5,
                        markerfacecolor=face, markeredgecolor=colour, markeredgewidth=1.0, clip_on=False)
    ax.set_yscale("log")
    readable_log_ticks(ax, 6)
    ax.set_xticks(x, [_DISPLAY[a] for a in study.activations])
    ax.set_xlim(-0.6, len(study.activations) - 0.4)
    ax.set_ylabel(options.label("deviation", "worst relative deviation\nfrom the theory"))
    ax.grid(True, axis="y", which="major", alpha=0.3)
    handles = [Line2D([], [], color=_case_colour(study, i), marker="o", linestyle="none",
                      label=f"{study.cases[i].name} case") for i in range(n_cases)]
    handles += [Line2D([], [], color="#555555", marker="o", linestyle="none", markerfacecolor="none",
                       label=r"$\zeta$"),
                Line2D([], [], color="#555555", marker="s", linestyle="none", markerfacecolor="none",
                       label=r"$\Theta$ (NTK)"),
                Line2D([], [], color="#555555", marker="o", linestyle="none", label="label as the theory's (filled)"),
                Line2D([], [], color="#555555", marker="o", linestyle="none", markerfacecolor="none",
                       label="label differs (open)")]
    legend(fig, handles, below=True, ncols=3)
    title = options.title_of("Deviation of each network from its theory over training", "deviation",
                             f"{study.name}__deviation")
    if title:
        fig.suptitle(wrapped_title(fig, title, fig.get_size_inches()[0] - 0.5))
    fit(fig)
    keep_inside(fig)
    return fig


# ---------------------------------------------------------------- the job kind (phasediag.jobs)

COORDS = ("case", "activation", "step", "map_width", "map_init_var")
_RUN = ("case", "activation")
DIMS: dict[str, tuple[str, ...]] = {
    **{f"measured_{f}": _RUN + ("step",) for f in MEASURED},
    **{f"theory_{f}": _RUN + ("step",) for f in PREDICTED},
    **{f"deviation_{f}": _RUN for f in DEVIATIONS},
    "label_measured": _RUN, "label_theory": _RUN, "quadrature_error": _RUN,
    "relu_crossed": ("case", "step"), "relu_first_crossing": ("case",),
    "m0": ("case",), "teacher": ("case",), "U0": ("case",), "W0": ("case",), "V0": ("case",),
    "map_label_measured": ("activation", "map_width", "map_init_var"),
    "map_label_theory": ("activation", "map_width", "map_init_var"),
    "map_deviation_alignment": ("activation", "map_width", "map_init_var"),
}
#: what plot.labels may name: coordinates, data variables, the figures' y quantities and the activations
FIGURE_NAMES = ("alignment_vs_step", "ntk_vs_step", "deviation", "label_map")
PLOT_LABELS = COORDS + tuple(DIMS) + FIGURE_NAMES + rules.ACTIVATIONS
TABLES = {"by_case_activation": "runs", "by_case_step": "relu_crossings", "by_case": "cases"}
DEFINITIONS = {
    "model": "f(x) = kappa sum_i u_i phi(w_i x), x ~ N(0, input_var), y = m* x; population GD (quadrature)",
    "m": "E[x f(x)] / E[x^2]",
    "loss": "E[(f(x) - m* x)^2] / 2",
    "ntk": "E[x K(x, x') x'] / a^2 = kappa^2 [lr_u sum_i (E[x phi(w_i x)]/a)^2 + lr_w sum_i u_i^2 (E[x^2 phi'(w_i x)]/a)^2]",
    "alignment": "cos(u, w)",
    "deviation": "max over the recorded steps of |measured - theory| / max |theory|",
    "theory": "linear: exact GD; relu: exact split solution (until the first crossing); others: exact linear GD with "
              "output scale gain * kappa",
    "relu_first_crossing": "-1: no w_i changed sign within the run",
    "labels": "docs/theory.md section 6 rules on the recorded trajectory; -1 = diverged",
    "diverged": "a diverged network's or theory's records are +inf from its divergence on (its deviations inf)",
}


def _legends() -> dict:
    phases = {**{str(code): name for code, name in enumerate(core.PHASES)}, str(DIVERGED_CODE): "diverged"}
    return {"label_measured": phases, "label_theory": phases}


def units(study: Study, options) -> int:
    return study.runs


def execute(study: Study, options, checkpoint: Path | None) -> Result:
    """Train every run (options.workers processes, options.progress) and evaluate the theory; `checkpoint` is
    unused (a study is neither sharded nor resumed)."""
    started = time.perf_counter()
    arrays = simulate_study(study, workers=options.workers, progress=options.progress)
    trained = time.perf_counter()
    grid = study.label_map
    arrays = {"case": np.array([c.name for c in study.cases], dtype=str), "activation": np.array(study.activations),
              "step": record_steps(study.steps, study.record),
              "map_width": np.array(grid.widths if grid else (), dtype=np.int64),
              "map_init_var": np.array(grid.init_vars if grid else (), dtype=float), **arrays}
    found = findings(study, arrays)
    coords = {name: arrays.pop(name) for name in COORDS}
    meta = {
        "kind": "activations", "name": study.name, "experiment": "activations", "coords": list(COORDS),
        "dims": {name: list(DIMS[name]) for name in arrays}, "legends": _legends(),
        "timing": {"train_s": round(trained - started, 3)}, "seed": study.seed, "runs": study.runs,
        "workers": options.workers, "definitions": DEFINITIONS, "findings": found,
    }
    return Result(coords=coords, arrays=arrays, meta=meta)




def study_of(result: Result) -> Study:
    """The Study of a result (also one loaded from disk): re-read from the resolved config in its meta."""
    return read(located(result.meta["config"]), "meta.json", None)


def figures(result: Result) -> list[tuple[str, Callable[[], Figure]]]:
    study = study_of(result)
    arrays = {**result.coords, **result.arrays}
    out = []
    if study.cases:
        out += [(f"{study.name}__alignment_vs_step", partial(alignment_figure, study, arrays)),
                (f"{study.name}__ntk_vs_step", partial(ntk_figure, study, arrays)),
                (f"{study.name}__deviation", partial(deviation_figure, study, arrays))]
    if study.label_map:
        out.append((f"{study.name}__label_map", partial(label_map_figure, study, arrays)))
    return out


def label_map_figure(study: Study, arrays: dict) -> Figure:
    """Per activation, over initial variance (x) and width (y): each point in the colour of the network's phase
    label, crossed where the theory's label differs (the theory's colour then in the cross)."""
    from matplotlib.lines import Line2D
    from phasediag.plots.base import fit, keep_inside, legend, phase_colour, readable_log_ticks, swatch, wrapped_title

    options = _options(study)
    fig, axes = _grid(study, options)
    grid = study.label_map
    x, y = np.meshgrid(np.asarray(grid.init_vars), np.asarray(grid.widths, dtype=float))
    seen = set()

    def colour(code: int) -> str:
        return "#5c5c5c" if code == DIVERGED_CODE else phase_colour("phase", core.PHASES[code])

    for j, activation in enumerate(study.activations):
        ax = axes.flat[j]
        measured, theory = arrays["map_label_measured"][j], arrays["map_label_theory"][j]
        seen.update(int(c) for c in np.unique(measured))
        seen.update(int(c) for c in np.unique(theory))
        ax.scatter(x.ravel(), y.ravel(), c=[colour(int(c)) for c in measured.ravel()], marker="s", s=70,
                   edgecolors="none", clip_on=False)
        off = measured != theory
        if off.any():
            ax.scatter(x[off], y[off], c=[colour(int(c)) for c in theory[off]], marker="X", s=40,
                       edgecolors="black", linewidths=0.6, clip_on=False, zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        readable_log_ticks(ax, 4 if options.narrow else 5)
        agree = np.count_nonzero(~off)
        ax.set_title(options.title_of(f"{_panel_name(study, activation)}: {agree}/{off.size}", activation))
    for ax in axes[:, 0]:
        ax.set_ylabel(options.label("map_width", "width $d$"))
    for ax in axes[-1]:
        ax.set_xlabel(options.label("map_init_var", r"$\sigma_u^2 = \sigma_w^2$"))
    handles = [swatch(colour(c), "diverged" if c == DIVERGED_CODE else core.PHASES[c].replace("_", ", "))
               for c in sorted(seen)]
    handles.append(Line2D([], [], marker="X", linestyle="none", color="#999999", markeredgecolor="black",
                          label="the theory's label differs (its colour)"))
    legend(fig, handles, below=True, ncols=4)
    default = (f"Where the linear theory's label is the network's (agreeing points per panel): squares the "
               f"network's label, crosses the theory's where it differs ({study.steps:,} GD steps)")
    title = options.title_of(default, "label_map", f"{study.name}__label_map")
    if title:
        fig.suptitle(wrapped_title(fig, title, fig.get_size_inches()[0] - 0.5))
    fit(fig)
    keep_inside(fig)
    return fig


def summarize(result: Result) -> dict:
    study = study_of(result)
    timing = result.meta.get("timing", {})
    return {"runs": study.runs, "width": study.width, "steps": study.steps,
            "elapsed_s": timing.get("total_s", timing.get("train_s")), "findings": result.meta["findings"]}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def text(summary: dict) -> str:
    """One block per case: a row per activation (deviations, labels, ReLU crossings)."""
    found = summary["findings"]
    elapsed = summary.get("elapsed_s")
    width = f" (the cases at width {summary['width']:,})" if found["cases"] else ""
    lines = [f"{summary['name']}: {summary['runs']} networks{width}, {summary['steps']:,} "
             f"GD steps" + ("" if elapsed is None else f" in {elapsed:.1f} s")
             + ("" if summary.get("out") is None else f" -> {summary['out']}")
             + (f"; labels as the theory's: {found['labels_agree']} of {found['runs']}" if found["cases"] else "")]
    header = (f"  {'activation':<11} {'zeta_T':>9} {'theory':>9} {'NTK chg':>9} {'theory':>9} {'dev zeta':>9} "
              f"{'dev NTK':>9} {'label (theory)':<36} {'quad err':>8}")
    if "map" in found:
        m = found["map"]
        lines.append(f"map over widths {m['widths']} x initial variances {m['init_var'][0]:g}..{m['init_var'][-1]:g}: "
                     "the theory's label is the network's at")
        for r in m["by_activation"]:
            where = "; ".join(f"d = {p['width']}, s = {p['init_var']:g}: {p['label']} ({p['theory_label']})"
                              for p in r["disagreements"][:4])
            more = "" if len(r["disagreements"]) <= 4 else f"; {len(r['disagreements']) - 4} more"
            diverged = "" if not (r["diverged"] or r["theory_diverged"]) else \
                f" (diverged: {r['diverged']} networks, {r['theory_diverged']} theories)"
            lines.append(f"  {r['activation']:<11} {r['agree']}/{r['points']}{diverged}"
                         + (f"  differs: {where}{more}" if where else ""))
    for case in found["cases"]:
        lines.append(f"{case['case']} case, {case['kind']}: m0 = {_fmt(case['m0'])}, m* = {_fmt(case['teacher'])}, "
                     f"zeta0 = {_fmt(case['zeta0'])}")
        lines.append(header)
        for r in case["by_activation"]:
            label = r["label"] + ("" if r["labels_agree"] else f" ({r['theory_label']})")
            extra = ""
            if "first_crossing_step" in r:
                first = r["first_crossing_step"]
                extra = (f"  first crossing: {'none' if first is None else f'step {first}'}, "
                         f"{_fmt(r['crossed_fraction'])} of units crossed")
            lines.append(f"  {r['activation']:<11} {_fmt(r['alignment_final']):>9} "
                         f"{_fmt(r['theory_alignment_final']):>9} {_fmt(r['ntk_change']):>9} "
                         f"{_fmt(r['theory_ntk_change']):>9} {_fmt(r['deviation_alignment']):>9} "
                         f"{_fmt(r['deviation_ntk']):>9} {label:<36} {_fmt(r['quadrature_error'], 2):>8}{extra}")
    return "\n".join(lines)
