"""Job kind `nonlinear` (issue 5): a nonlinear two-layer network on a real task; ``phasediag experiment CONFIG``
(or ``phasediag run CONFIG``) with ``experiment: nonlinear``.

The network, its gradients, NTK and alignment are in :mod:`phasediag.training.nonlinear` (notation of docs/theory.md sections
1-3: kappa = output_scale, eta_u = lr_u, eta_w = lr_w, sigma_u^2 = init_var_u, sigma_w^2 = init_var_w). This
module reads the config, trains every point of the grid

    activation x width d x initialization (standard | symmetric) x init scale s x seed,

on scikit-learn's 8 x 8 digits (bundled with scikit-learn, no download), stores the trajectories and draws
NTK change, alignment, test error and the hidden layer's movement against the init scale.

The kind protocol (:mod:`phasediag.jobs`): :func:`read` validates the config into a :class:`Study` (no I/O),
:func:`execute` loads the data and trains every run (:func:`phasediag.engine.workers.ordered_map`), returning a
Result (coordinates activation, width, init, init_scale, seed, step, probe_index; every data variable's
dimensions in meta["dims"]); :func:`figures` draws from a Result alone (the Study is rebuilt from the resolved
config in meta.json, so a run directory can be re-plotted); :func:`summarize` / :func:`text` give the summary.

Choices (all stated in meta.json too):
- init scale s multiplies both initial standard deviations: U_ia ~ N(0, s^2 sigma_u^2), W_ij ~ N(0, s^2 sigma_w^2/p).
  ``standard``: i.i.d.; ``symmetric``: hidden units in pairs (w, u), (w, -u), so f_0 = 0 (the theory's typical
  initialization has m0 = 0 likewise). With the standard initialization the random initial function f_0
  (size ~ s^2) must itself be unlearned, which keeps the NTK moving even at large s.
- rates: model.lr_u, lr_w (numbers or expressions in the width d, like output_scale), times a common factor
  f = min(1, cap / lambda_0) per run, lambda_0 = lambda_max(K_0)/P the initial kernel step on the probe
  (train.initial_ntk_cap, default 1; GD on a frozen kernel is stable iff the step is < 2). A common factor of
  both rates only rescales gradient-flow time, so it keeps large-init runs stable without changing their
  regime; every run then takes the same number of steps at a kernel step of at most `cap`.
- common random numbers: the standard-normal draws behind U_0, W_0 depend on (seed, width, seed index) only,
  so every init scale, activation and initialization type starts from the same draws; the train/test split and
  the probe batch depend on the seed only; minibatch orders on (seed, width, seed index).
- mechanism labels: docs/theory.md section 6's rules (core.phase_codes) on the measured ntk_change (Frobenius) and the
  alignment amounts along the recorded path: alignment gain = A_T - min_t A_t, disalignment = A_0 - min_t A_t.
- BLAS runs single-threaded during training (threadpoolctl, installed with scikit-learn), so results are
  bit-identical for any --workers.
"""

from __future__ import annotations

from functools import partial
import time
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from phasediag import core
from phasediag.training import nonlinear as nl
from phasediag.config.reader import (FIGURE_KEYS, ConfigError, Located, bounded_int, check_name, did_you_mean,
                                     width_expression,
                                     fail, figure_formats, figure_options, located, mapping, number, plain,
                                     string)
from phasediag.config.sweep import axis_values
from phasediag.engine.workers import ordered_map, single_threaded_blas
from phasediag.plots.maps import nan_median as _median
from phasediag.results import store
from phasediag.results.store import Result

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Study", "read", "units", "execute", "figures", "summarize", "text", "study_of", "TABLES", "parse_study",
           "DATASETS", "INITS", "AXES", "COORDS", "prepare_data", "run_point", "simulate_study", "findings",
           "vs_init_scale_figure", "vs_step_figure"]

TOP_KEYS = ("name", "description", "experiment", "dataset", "model", "sweep", "train", "classify", "seeds", "seed",
            "plot")
DATASET_KEYS = ("name", "test_fraction", "standardize", "center_targets")
MODEL_KEYS = ("activations", "widths", "init", "output_scale", "lr_u", "lr_w", "init_var_u", "init_var_w")
SWEEP_KEYS = ("init_scale",)
TRAIN_KEYS = ("steps", "record", "batch_size", "probe_size", "initial_ntk_cap")
CLASSIFY_KEYS = ("ntk_threshold", "alignment_threshold")
PLOT_KEYS = ("formats", *FIGURE_KEYS)
EXPRESSION_KEYS = ("output_scale", "lr_u", "lr_w", "init_var_u", "init_var_w")
EXPRESSION_DEFAULTS = {"output_scale": "1", "lr_u": "1", "lr_w": "1", "init_var_u": "1", "init_var_w": "1"}
DATASETS = {"digits": 1797}  # name -> number of examples (checked when loaded)
INITS = ("standard", "symmetric")
MAX_STEPS = 100_000
MAX_RECORD = 500
MAX_WIDTH = 16_384
MAX_WORK = 4e11  # runs x steps x batch rows x width: ~1e8 per second per core here, so about an hour of one core
MECHANISM_CODES = {name: code for code, name in enumerate(core.PHASES)}
DIVERGED_CODE = -1
FINAL_FIELDS = ("loss", "train_error", "test_error", "ntk_change", "ntk_trace_change", "alignment", "norm_u",
                "norm_w", "move_u", "move_w")
#: the grid axes (the dimensions of every end-of-training array), in order
AXES = ("activation", "width", "init", "init_scale", "seed")
#: the coordinates stored in results.npz, in order: the grid axes, the record axis `step`, the probe batch
COORDS = AXES + ("step", "probe_index")
#: what plot.labels may name: the grid axes, the record axis, the end-of-training values and the mechanism
#: (vs_init_scale draws them against init_scale) and the records traj_<field> (vs_step draws them against step)
PLOT_LABELS = AXES + ("step",) + FINAL_FIELDS + ("alignment_init", "alignment_peak", "mechanism") + tuple(
    f"traj_{f}" for f in nl.RECORD_FIELDS)
#: what a plot.title mapping may name beyond PLOT_LABELS: the figures
FIGURE_NAMES = ("vs_init_scale", "vs_step")


@dataclass(frozen=True)
class Study:
    """A validated config. Per-width hyperparameters are tuples aligned with `widths`."""

    name: str
    description: str
    dataset: str
    test_fraction: float
    standardize: bool
    center_targets: bool
    activations: tuple[str, ...]
    widths: tuple[int, ...]
    inits: tuple[str, ...]
    expressions: dict  # key -> text as written (number or expression in d)
    output_scale: tuple[float, ...]
    lr_u: tuple[float, ...]
    lr_w: tuple[float, ...]
    init_var_u: tuple[float, ...]
    init_var_w: tuple[float, ...]
    init_scales: tuple[float, ...]
    init_scale_spec: Any
    steps: int
    record: int
    batch_size: int | None
    probe_size: int
    initial_ntk_cap: float | None
    ntk_threshold: float
    alignment_threshold: float
    seeds: int
    seed: int
    formats: tuple[str, ...]
    figure: dict = dataclass_field(default_factory=dict, compare=False)  # plot labels, title, size, style, dpi

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(activations, widths, inits, init scales, seeds)."""
        return (len(self.activations), len(self.widths), len(self.inits), len(self.init_scales), self.seeds)

    @property
    def runs(self) -> int:
        return int(np.prod(self.shape))

    def record_steps(self) -> np.ndarray:
        return nl.record_steps(self.steps, self.record)

    @property
    def resolved(self) -> dict:
        """Plain data of everything that determines the results (stored in meta.json)."""
        per_width = {key: {str(d): v for d, v in zip(self.widths, getattr(self, key))} for key in EXPRESSION_KEYS}
        return {
            "name": self.name, "description": self.description, "experiment": "nonlinear",
            "dataset": {"name": self.dataset, "test_fraction": self.test_fraction, "standardize": self.standardize,
                        "center_targets": self.center_targets},
            "model": {"activations": list(self.activations), "widths": list(self.widths), "init": list(self.inits),
                      **{key: self.expressions[key] for key in EXPRESSION_KEYS}},
            "model_values_by_width": per_width,
            "sweep": {"init_scale": self.init_scale_spec},
            "init_scale_values": list(self.init_scales),
            "train": {"steps": self.steps, "record": self.record, "batch_size": self.batch_size,
                      "probe_size": self.probe_size, "initial_ntk_cap": self.initial_ntk_cap},
            "record_steps": [int(v) for v in self.record_steps()],
            "classify": {"ntk_threshold": self.ntk_threshold, "alignment_threshold": self.alignment_threshold},
            "seeds": self.seeds, "seed": self.seed, "plot": {"formats": list(self.formats), **self.figure},
        }


# ---------------------------------------------------------------- config


def _bool(item: Located) -> bool:
    if not isinstance(item.value, bool):
        raise fail(item.path, item.line, f"must be true or false, got {plain(item)!r}")
    return item.value


def _distinct(item: Located, example: str, parse: Callable[[Located], Any], what: str) -> tuple:
    """A value or a non-empty list of distinct values, each read by `parse`; `example` completes "must be a
    non-empty list of ...", `what` names one value in the "listed twice" error."""
    entries = item.value if isinstance(item.value, list) else [item]
    if isinstance(item.value, list) and not entries:
        raise fail(item.path, item.line, f"must be a non-empty list of {example}")
    values: list = []
    for entry in entries:
        value = parse(entry)
        if value in values:
            raise fail(entry.path, entry.line, f"{what} {value!r} is listed twice")
        values.append(value)
    return tuple(values)


def _names(item: Located, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A name or a non-empty list of distinct names from `allowed`."""
    def name_of(entry: Located) -> str:
        name = string(entry)
        if name not in allowed:
            raise fail(entry.path, entry.line, f"unknown {what} {name!r}{did_you_mean(name, allowed)}; "
                                                f"allowed: {', '.join(allowed)}")
        return name

    return _distinct(item, f"{what}s ({', '.join(allowed)})", name_of, what)


def _widths(item: Located, classes: int, symmetric: bool) -> tuple[int, ...]:
    def width_of(entry: Located) -> int:
        width = bounded_int(entry, low=1, high=MAX_WIDTH)
        if width <= classes:
            raise fail(entry.path, entry.line, f"must be > {classes} (the number of classes): the alignment "
                                                f"projects onto the top {classes} directions of the hidden layer, "
                                                f"which is all of R^d when d <= {classes}")
        if symmetric and width <= 2 * classes:
            raise fail(entry.path, entry.line, f"must be > {2 * classes} with init: symmetric: the paired units "
                                                f"give W rank d/2 at init, and the alignment needs {classes} "
                                                f"well-defined top directions of W (d/2 > {classes})")
        if symmetric and width % 2:
            raise fail(entry.path, entry.line, f"must be even with init: symmetric (hidden units come in pairs), "
                                                f"got {width}")
        return width

    return _distinct(item, "widths, e.g. [32, 128]", width_of, "width")


def _expression(model: dict, key: str, widths: tuple[int, ...], *, positive: bool) -> tuple[str, tuple[float, ...]]:
    """model.<key>: a number or an expression in d (the width), evaluated at every width."""
    if key not in model:
        text = EXPRESSION_DEFAULTS[key]
        return text, tuple(float(text) for _ in widths)
    return width_expression(model[key], widths, positive=positive)


MAX_INIT_SCALE = 1e8  # x the initial variances: far beyond docs/theory.md section 8's sigma^2 <= 1e4; 1e300 overflows
MAX_NTK_THRESHOLD = 1e8  # a relative NTK change; larger thresholds overflow the figure's axis


def _init_scales(item: Located) -> tuple[np.ndarray, Any]:
    """sweep.init_scale: [v1, ...] or {log: [a, b, n]} / {lin: ...} / {values: [...]}; all > 0, distinct."""
    if isinstance(item.value, list):
        if not item.value:
            raise fail(item.path, item.line, "must be a non-empty list or {log: [start, stop, num]}")
        values = np.array([number(v, positive=True) for v in item.value])
    else:
        values = axis_values(item)
    if np.any(~((values > 0) & (values <= MAX_INIT_SCALE))):
        bad = values[~((values > 0) & (values <= MAX_INIT_SCALE))][0]
        raise fail(item.path, item.line, f"init scales must be in (0, {MAX_INIT_SCALE:g}], got {bad:g}")
    if len(np.unique(values)) != len(values):
        raise fail(item.path, item.line, "init scales must be distinct")
    return np.sort(values), plain(item)


def _dataset(item: Located | None) -> tuple[str, float, bool, bool, int]:
    spec = mapping(item, DATASET_KEYS) if item is not None else {}
    name = string(spec["name"]) if "name" in spec else "digits"
    if name not in DATASETS:
        raise fail("dataset.name", spec["name"].line, f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; "
                                                       f"allowed: {', '.join(DATASETS)}")
    test_fraction = number(spec["test_fraction"]) if "test_fraction" in spec else 0.25
    if not 0 < test_fraction < 1:
        raise fail("dataset.test_fraction", spec["test_fraction"].line, f"must be in (0, 1), got {test_fraction:g}")
    n_test = int(round(test_fraction * DATASETS[name]))
    if n_test < 1 or n_test > DATASETS[name] - 2:
        raise fail("dataset.test_fraction", spec["test_fraction"].line,
                    f"leaves {n_test} test and {DATASETS[name] - n_test} training examples of {DATASETS[name]}")
    standardize = _bool(spec["standardize"]) if "standardize" in spec else True
    center = _bool(spec["center_targets"]) if "center_targets" in spec else True
    return name, test_fraction, standardize, center, DATASETS[name] - n_test


def parse_study(root: Located) -> Study:
    """Validate the whole config (ConfigError naming the key path and line) before any data or training."""
    top = mapping(root, TOP_KEYS, required=("name", "experiment", "model", "sweep", "train"))
    if string(top["experiment"]) != "nonlinear":
        raise fail("experiment", top["experiment"].line, f"this study is nonlinear, got {top['experiment'].value!r}")
    name = check_name(top["name"])
    description = " ".join(string(top["description"]).split()) if "description" in top else ""
    dataset, test_fraction, standardize, center, n_train = _dataset(top.get("dataset"))
    classes = nl.DIGITS_CLASSES

    model = mapping(top["model"], MODEL_KEYS, required=("activations", "widths"))
    activations = _names(model["activations"], nl.ACTIVATIONS, "activation")
    inits = _names(model["init"], INITS, "init") if "init" in model else ("standard",)
    widths = _widths(model["widths"], classes, "symmetric" in inits)
    expressions, values = {}, {}
    for key in EXPRESSION_KEYS:
        expressions[key], values[key] = _expression(model, key, widths, positive=not key.startswith("init_var"))
    for d, var_u, var_w in zip(widths, values["init_var_u"], values["init_var_w"]):
        if var_u == 0 or var_w == 0:
            key = "init_var_u" if var_u == 0 else "init_var_w"
            raise fail(f"model.{key}", model[key].line, f"is 0 at d = {d}: a zero layer has no alignment "
                                                         f"(0/0) and, for both, nothing trains; use a small value")

    sweep = mapping(top["sweep"], SWEEP_KEYS, required=SWEEP_KEYS)
    init_scales, init_scale_spec = _init_scales(sweep["init_scale"])

    train = mapping(top["train"], TRAIN_KEYS, required=("steps",))
    steps = bounded_int(train["steps"], low=1, high=MAX_STEPS)
    record = bounded_int(train["record"], low=2, high=MAX_RECORD) if "record" in train else 25
    batch_size = None
    if "batch_size" in train and train["batch_size"].value is not None:
        batch_size = bounded_int(train["batch_size"], low=1, high=n_train)
    probe_size = bounded_int(train["probe_size"], low=1, high=min(n_train, 512)) if "probe_size" in train else 32
    cap = 1.0
    if "initial_ntk_cap" in train:
        cap = None if train["initial_ntk_cap"].value is None else number(train["initial_ntk_cap"], positive=True)

    spec = mapping(top["classify"], CLASSIFY_KEYS) if "classify" in top else {}
    ntk_threshold = number(spec["ntk_threshold"], positive=True) if "ntk_threshold" in spec else 0.1
    if ntk_threshold > MAX_NTK_THRESHOLD:
        raise fail("classify.ntk_threshold", spec["ntk_threshold"].line, f"must be in (0, {MAX_NTK_THRESHOLD:g}]")
    alignment_threshold = (number(spec["alignment_threshold"], positive=True) if "alignment_threshold" in spec
                           else 0.1)
    if alignment_threshold >= 1:
        raise fail("classify.alignment_threshold", spec["alignment_threshold"].line, "must be in (0, 1)")
    seeds = bounded_int(top["seeds"], low=1, high=1000) if "seeds" in top else 1
    seed = bounded_int(top["seed"], low=0, high=2**63 - 1) if "seed" in top else 0
    plot = mapping(top["plot"], PLOT_KEYS) if "plot" in top else {}
    formats = figure_formats(plot)
    figure = figure_options(plot, PLOT_LABELS, root.base_dir, FIGURE_NAMES)

    study = Study(
        name=name, description=description, dataset=dataset, test_fraction=test_fraction, standardize=standardize,
        center_targets=center, activations=activations, widths=widths, inits=inits, expressions=expressions,
        output_scale=values["output_scale"], lr_u=values["lr_u"], lr_w=values["lr_w"],
        init_var_u=values["init_var_u"], init_var_w=values["init_var_w"],
        init_scales=tuple(float(v) for v in init_scales), init_scale_spec=init_scale_spec, steps=steps,
        record=record, batch_size=batch_size, probe_size=probe_size, initial_ntk_cap=cap,
        ntk_threshold=ntk_threshold, alignment_threshold=alignment_threshold, seeds=seeds, seed=seed, formats=formats,
        figure=figure)
    _check_work(study, n_train, train["steps"])
    return study


def _check_work(study: Study, n_train: int, steps_item: Located) -> None:
    rows = n_train if study.batch_size is None else study.batch_size
    runs_per_width = study.runs // len(study.widths)
    work = runs_per_width * study.steps * rows * sum(study.widths)
    if work > MAX_WORK:
        raise fail("train.steps", steps_item.line,
                    f"{study.runs:,} runs x {study.steps:,} steps x {rows:,} examples per step x width is "
                    f"{work:.3g} units, above the cap of {MAX_WORK:.0e} (about an hour of one core); reduce "
                    f"train.steps, seeds, the sweep, model.widths or use train.batch_size")


# ---------------------------------------------------------------- data, randomness, one run


@dataclass(frozen=True)
class Prepared:
    """The split data and the probe batch, shared by every run."""

    data: nl.Dataset
    X_probe: np.ndarray
    probe_index: np.ndarray


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def prepare_data(study: Study, raw: tuple[np.ndarray, np.ndarray] | None = None) -> Prepared:
    """Load the dataset (or use `raw` = (X, labels)), split and standardize it, and pick the probe batch:
    all from SeedSequence([seed, 0]), so they depend on the seed only."""
    X, labels = raw if raw is not None else nl.load_digits_data()
    rng = _rng(study.seed, 0)
    data = nl.split_dataset(X, labels, test_fraction=study.test_fraction, rng=rng, standardize=study.standardize,
                            center_targets=study.center_targets, classes=nl.DIGITS_CLASSES)
    probe_index = np.sort(rng.choice(data.X_train.shape[0], size=study.probe_size, replace=False))
    return Prepared(data=data, X_probe=data.X_train[probe_index], probe_index=probe_index)


def _normals(study: Study, width: int, s: int, p: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal Z_W (d, p), Z_U (d, k) of (seed, width, seed index s): SeedSequence([seed, 1, d, s])."""
    rng = _rng(study.seed, 1, width, s)
    return rng.standard_normal((width, p)), rng.standard_normal((width, k))


def run_point(study: Study, prepared: Prepared, index: tuple[int, int, int, int, int]) -> dict[str, Any]:
    """Train the run at grid `index` = (activation, width, init, init scale, seed) indices.

    Returns {"records": (len(RECORD_FIELDS), len(record_steps)) float64, "lr_factor", "ntk_scale0",
    "output_rms0", "diverged", "diverged_step"}."""
    i_act, i_width, i_init, i_scale, s = index
    width, activation = study.widths[i_width], study.activations[i_act]
    data = prepared.data
    normal_w, normal_u = _normals(study, width, s, data.X_train.shape[1], data.Y_train.shape[1])
    params = nl.init_params(normal_w, normal_u, init_var_w=study.init_var_w[i_width],
                            init_var_u=study.init_var_u[i_width], init_scale=study.init_scales[i_scale],
                            symmetric=study.inits[i_init] == "symmetric")
    kappa, lr_u, lr_w = study.output_scale[i_width], study.lr_u[i_width], study.lr_w[i_width]
    K0 = nl.ntk_matrix(params, prepared.X_probe, activation=activation, output_scale=kappa, lr_u=lr_u, lr_w=lr_w)
    scale0 = nl.ntk_scale(K0, study.probe_size)
    factor = nl.rate_factor(scale0, study.initial_ntk_cap)
    f0 = nl.forward(params, data.X_train, activation=activation, output_scale=kappa)
    trace = nl.train(params, data.X_train, data.Y_train, activation=activation, output_scale=kappa,
                     lr_u=factor * lr_u, lr_w=factor * lr_w, steps=study.record_steps(), X_probe=prepared.X_probe,
                     labels=data.labels_train, X_test=data.X_test, labels_test=data.labels_test,
                     batch_size=study.batch_size,
                     rng=_rng(study.seed, 2, width, s) if study.batch_size is not None else None)
    return {"records": np.stack([getattr(trace, f) for f in nl.RECORD_FIELDS]), "lr_factor": factor,
            "ntk_scale0": scale0, "output_rms0": float(np.sqrt(np.mean(f0 * f0))), "diverged": trace.diverged,
            "diverged_step": trace.diverged_step}


# ---------------------------------------------------------------- the sweep


def _task(args: tuple) -> dict:
    """One run with BLAS single-threaded (in a worker process or in this one): the same bits everywhere."""
    study, prepared, index = args
    with single_threaded_blas():
        return run_point(study, prepared, index)


def _execute(study: Study, prepared: Prepared, workers: int,
             progress: Callable[[int], None] | None) -> Iterator[tuple[tuple[int, ...], dict]]:
    """Every run of the grid, widest first (for load balance; one run per task, as runs differ widely in
    cost); yields (index, result) in that order, for any `workers`."""
    indices = sorted(np.ndindex(*study.shape), key=lambda ix: -study.widths[ix[1]])
    results = ordered_map(_task, [(study, prepared, index) for index in indices], workers, progress, chunksize=1)
    return zip(indices, results)


def simulate_study(study: Study, prepared: Prepared, *, workers: int = 1,
                   progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train every run; returns every array of results.npz in its order: the coordinates COORDS first, then
    traj_<field> (AXES + step), the end-of-training values (AXES). Bit-identical for any `workers`."""
    steps = study.record_steps()
    shape = study.shape
    traj = np.full(shape + (len(nl.RECORD_FIELDS), steps.size), np.nan)
    scalars = {key: np.zeros(shape) for key in ("lr_factor", "ntk_scale0", "output_rms0")}
    diverged = np.zeros(shape, dtype=bool)
    diverged_step = np.full(shape, -1, dtype=np.int64)
    for index, out in _execute(study, prepared, workers, progress):
        traj[index] = out["records"]
        for key in scalars:
            scalars[key][index] = out[key]
        diverged[index], diverged_step[index] = out["diverged"], out["diverged_step"]
    arrays: dict[str, np.ndarray] = {
        "activation": np.array(study.activations), "width": np.array(study.widths, dtype=np.int64),
        "init": np.array(study.inits), "init_scale": np.array(study.init_scales), "seed": np.arange(study.seeds),
        "step": steps, "probe_index": prepared.probe_index,
    }
    for j, field in enumerate(nl.RECORD_FIELDS):
        arrays[f"traj_{field}"] = traj[..., j, :]
    for field in FINAL_FIELDS:
        arrays[field] = traj[..., nl.RECORD_FIELDS.index(field), -1]
    arrays["alignment_init"] = arrays["traj_alignment"][..., 0]
    arrays["alignment_peak"] = np.max(arrays["traj_alignment"], axis=-1)  # NaN for a diverged run
    arrays.update(_amounts(arrays["traj_alignment"]))
    factors = scalars["lr_factor"]
    arrays.update(lr_factor=factors, ntk_scale0=scalars["ntk_scale0"], output_rms0=scalars["output_rms0"],
                  lr_u_used=factors * np.array(study.lr_u)[None, :, None, None, None],
                  lr_w_used=factors * np.array(study.lr_w)[None, :, None, None, None],
                  diverged=diverged, diverged_step=diverged_step)
    arrays["mechanism"] = mechanisms(study, arrays)
    return arrays


def _amounts(alignment: np.ndarray) -> dict[str, np.ndarray]:
    """alignment_gain = A_T - min_t A_t and disalignment = A_0 - min_t A_t over the records (NaN if any record
    is NaN: a diverged run)."""
    low = np.min(alignment, axis=-1)  # NaN propagates
    return {"alignment_gain": alignment[..., -1] - low, "disalignment": alignment[..., 0] - low}


def mechanisms(study: Study, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """docs/theory.md section 6's labels (codes into core.PHASES) from the measured order parameters; -1 = diverged."""
    diverged = arrays["diverged"] | ~np.isfinite(arrays["ntk_change"]) | ~np.isfinite(arrays["alignment_gain"])
    safe = {k: np.where(diverged, 0.0, arrays[k]) for k in ("ntk_change", "alignment_gain", "disalignment")}
    op = core.OrderParameters(ntk_change=safe["ntk_change"], alignment_init=arrays["alignment_init"],
                              alignment_final=arrays["alignment"], alignment_gain=safe["alignment_gain"],
                              disalignment=safe["disalignment"], not_converged=np.zeros(diverged.shape, dtype=bool))
    codes = core.phase_codes(op, np.zeros(diverged.shape, dtype=bool), study.ntk_threshold, study.alignment_threshold)
    return np.where(diverged, DIVERGED_CODE, codes).astype(np.int8)


# ---------------------------------------------------------------- findings


def _num(value, digits: int = 4) -> float | None:
    if value is None:
        return None
    value = float(value)
    return float(f"{value:.{digits}g}") if np.isfinite(value) else None


def crossover(init_scales: np.ndarray, ntk: np.ndarray, threshold: float) -> float | None:
    """The init scale above which ntk_change stays below `threshold`: log-log interpolation at the last
    crossing from >= threshold to < threshold (None when no such crossing, e.g. all kernel or none)."""
    below = ntk < threshold
    if not below[-1] or below.all() or not np.all(np.isfinite(ntk)):
        return None
    j = int(np.flatnonzero(~below)[-1])  # last point at or above the threshold
    x0, x1 = np.log(init_scales[j]), np.log(init_scales[j + 1])
    y0, y1 = np.log(ntk[j]), np.log(max(ntk[j + 1], 1e-300))
    return float(np.exp(x0 + (np.log(threshold) - y0) * (x1 - x0) / (y1 - y0)))


def findings(study: Study, arrays: dict[str, np.ndarray]) -> dict:
    """The numbers behind the README statement (JSON-ready, non-finite -> None), medians over seeds at the end.

    Per (activation, width, init): lists over init scales of ntk_change, alignment at init, at the end and
    its maximum over the records (peak), train and test error, hidden-layer movement, RMS of f_0, rate factor,
    the mechanism (the most frequent label over the seeds), the crossover init scale where
    ntk_change falls below classify.ntk_threshold, and the best / smallest-scale / largest-scale test error."""
    s = np.array(study.init_scales)
    groups = []
    med = {k: _median(arrays[k]) for k in ("ntk_change", "alignment_init", "alignment", "alignment_peak",
                                            "train_error", "test_error", "move_w", "output_rms0", "lr_factor")}
    for ia, act in enumerate(study.activations):
        for iw, width in enumerate(study.widths):
            for ii, init in enumerate(study.inits):
                at = (ia, iw, ii)
                test = med["test_error"][at]
                best = int(np.nanargmin(test)) if np.any(np.isfinite(test)) else None
                groups.append({
                    "activation": act, "width": width, "init": init,
                    "ntk_change": [_num(v) for v in med["ntk_change"][at]],
                    "alignment_init": [_num(v) for v in med["alignment_init"][at]],
                    "alignment_final": [_num(v) for v in med["alignment"][at]],
                    "alignment_peak": [_num(v) for v in med["alignment_peak"][at]],
                    "train_error": [_num(v) for v in med["train_error"][at]],
                    "test_error": [_num(v) for v in test],
                    "hidden_layer_movement": [_num(v) for v in med["move_w"][at]],
                    "output_rms0": [_num(v) for v in med["output_rms0"][at]],
                    "lr_factor": [_num(v) for v in med["lr_factor"][at]],
                    "mechanism": [_mode_label(arrays["mechanism"][at][j]) for j in range(s.size)],
                    "kernel_from_init_scale": _num(crossover(s, med["ntk_change"][at], study.ntk_threshold), 3),
                    "best_init_scale": None if best is None else _num(s[best]),
                    "test_error_best": None if best is None else _num(test[best]),
                    "test_error_smallest_scale": _num(test[0]), "test_error_largest_scale": _num(test[-1]),
                })
    return {"init_scale": [_num(v) for v in s], "diverged_runs": int(np.count_nonzero(arrays["diverged"])),
            "runs": study.runs, "groups": groups}


def _mode_label(codes: np.ndarray) -> str:
    values, counts = np.unique(codes, return_counts=True)
    code = int(values[np.argmax(counts)])
    return "diverged" if code == DIVERGED_CODE else core.PHASES[code]


# ---------------------------------------------------------------- figures
#
# One visual language with the other figure kinds (phasediag.plots.base): the mechanism labels in
# base.CATEGORY_COLOURS["phase"] (orange alignment, #CC79A7 disalignment, blues kernel, ...), a diverged run
# hatched dark grey (base.SPECIAL_COLOURS["inf"]); the ordered quantities in base.levels greys with a marker
# each (widths against s; init scales against the step, at most base.MAX_LEVELS of them, evenly picked), the
# initialization by line style. Labels in the notation of the README's model section, each through the
# run's plot.labels (names: init_scale, step, ntk_change, alignment, test_error, train_error, move_w,
# mechanism, width, and traj_ntk_change, traj_alignment, traj_test_error for the trajectories, which fall
# back to the end-of-training names) and titles through plot.title (names: vs_init_scale, vs_step; activation
# for the columns' titles). Figure legends below (or beside) the axes; layout by base.fit.

_INIT_STYLES = {"symmetric": "-", "standard": "--"}
_INIT_TEXT = {"symmetric": "symmetric init ($f_0 = 0$)", "standard": "standard init (i.i.d.)"}
_ACTIVATION_TEX = {"tanh": r"\tanh", "relu": r"\mathrm{relu}", "linear": r"\mathrm{id}"}
_MECHANISM_TEXT = {"kernel": "kernel (lazy)", "kernel_aligning": "kernel, aligning",
                   "kernel_disaligning": "kernel, disaligning", "alignment": "feature learning by alignment",
                   "disalignment": "feature learning by disalignment", "rescaling": "feature learning by rescaling",
                   "saddle": "saddle", "diverged": "diverged"}
_DIVERGED_HATCH = "xxxx"
_THRESHOLD_COLOUR = "#555555"
_MARKS = 9  # markers per trajectory


def _options(study: Study):
    """The figure options being drawn with (base.render), else those of the study's config (a direct call)."""
    from phasediag.plots.base import current_options

    return current_options({"config": study.resolved})


def _panel_title(options, default: str | None, *names: str) -> str | None:
    """A panel's title: the user's when a plot.title mapping names one of `names`, else `default` (a plain
    plot.title, or null, is the figure's title)."""
    from collections.abc import Mapping

    return options.title_of(default, *names) if isinstance(options.title, Mapping) else default


def _activation_text(act: str) -> str:
    from phasediag.plots.notation import escape_text

    tex = _ACTIVATION_TEX.get(act) or r"\mathrm{" + escape_text(act) + "}"
    return rf"$\phi = {tex}$"


def _mechanism_colour(name: str) -> str:
    from phasediag.plots.base import FALLBACK_COLOURS, SPECIAL_COLOURS, phase_colour

    if name == "diverged":
        return SPECIAL_COLOURS["inf"]
    return phase_colour("phase", name) or FALLBACK_COLOURS[list(_MECHANISM_TEXT).index(name) % len(FALLBACK_COLOURS)]


def _ordered_styles(n: int) -> list[tuple[str, str]]:
    """(colour, marker) of n <= base.MAX_LEVELS ordered values: greys light to dark, one marker each."""
    from phasediag.plots.base import MARKERS, levels

    return [(colour, MARKERS[j % len(MARKERS)]) for j, colour in enumerate(levels(n))]


def _shown(n: int) -> list[int]:
    """Indices of at most base.MAX_LEVELS of n ordered values, evenly spread, both ends included (13 -> every
    other one)."""
    from phasediag.plots.base import MAX_LEVELS

    if n <= MAX_LEVELS:
        return list(range(n))
    return [int(i) for i in np.unique(np.linspace(0, n - 1, MAX_LEVELS).round().astype(int))]


def _curve(options) -> dict:
    return {"markersize": 2.6, "linewidth": 1.0} if options.narrow else {"markersize": 3.6, "linewidth": 1.4}


def _line(ax: Axes, x: np.ndarray, values: np.ndarray, *, colour: str, style: str, marker: str = "",
          positive: bool = False, thin: bool = False, options=None, **extra) -> None:
    """values (len(x), seeds): median line, min-max band when seeds > 1; NaN (and <= 0 on log axes) left out.
    thin: a secondary line (thinner, translucent)."""
    med = _median(values)
    keep = np.isfinite(med) & ((med > 0) if positive else True)
    size = _curve(options) if options is not None else {"markersize": 3.6, "linewidth": 1.4}
    ax.plot(x[keep], med[keep], color=colour, linestyle=style, marker=marker, markersize=size["markersize"],
            linewidth=0.6 * size["linewidth"] if thin else size["linewidth"], alpha=0.6 if thin else 1.0, **extra)
    if values.shape[-1] > 1:
        lo = np.min(np.where(np.isnan(values), np.inf, values), axis=-1)
        hi = np.max(np.where(np.isnan(values), -np.inf, values), axis=-1)
        band = keep & np.isfinite(lo) & np.isfinite(hi) & ((lo > 0) if positive else True)
        if np.count_nonzero(band) > 1:
            ax.fill_between(x[band], lo[band], hi[band], color=colour, alpha=0.12, linewidth=0)


def _curves(study: Study) -> list[tuple[int, int, str, str, str, str]]:
    """(width index, init index, colour, marker, line style, label) of each curve against s: the width by
    its grey level and marker, the initialization by the line style."""
    from phasediag.plots.base import MAX_LEVELS

    widths = _ordered_styles(len(study.widths)) if len(study.widths) <= MAX_LEVELS else [
        (colour, "") for colour in _sequential(len(study.widths))]
    out = []
    for iw, width in enumerate(study.widths):
        for ii, init in enumerate(study.inits):
            colour, marker = widths[iw]
            out.append((iw, ii, colour, marker, _INIT_STYLES[init], f"$d = {width}$, {init}"))
    return out


def _sequential(n: int) -> list:
    """n colours of a sequential map (more widths than distinguishable levels: a colour bar says which)."""
    from matplotlib import colormaps

    return [colormaps["viridis"](0.9 * k / max(n - 1, 1)) for k in range(n)]


def _setting(study: Study) -> str:
    """The network, rates and training, in the README's notation."""
    from phasediag.plots.notation import expression_tex, number_tex

    e = {key: expression_tex(str(value)) for key, value in study.expressions.items()}
    rates = (rf"$\eta_u = \eta_w = {e['lr_u']}$" if e["lr_u"] == e["lr_w"] else
             rf"$\eta_u = {e['lr_u']}$, $\eta_w = {e['lr_w']}$")
    if study.initial_ntk_cap is not None:  # the common rate factor, lambda_0 = lambda_max(K_0)/P
        rates += (rf" (both $\times \min(1, {number_tex(study.initial_ntk_cap)}/\lambda_0)$, "
                  rf"$\lambda_0 = \lambda_{{\max}}(K_0)/P$)")
    var = (rf"$\sigma_u^2 = \sigma_w^2 = {e['init_var_u']}$" if e["init_var_u"] == e["init_var_w"] else
           rf"$\sigma_u^2 = {e['init_var_u']}$, $\sigma_w^2 = {e['init_var_w']}$")
    batch = "full-batch GD" if study.batch_size is None else f"minibatch GD ($B = {study.batch_size}$)"
    seeds = f"median over {study.seeds} seeds (band: min to max)" if study.seeds > 1 else "one seed"
    return (rf"$\kappa = {e['output_scale']}$, {rates}, {var}; {batch}; NTK on $P = {study.probe_size}$ "
            f"probe images; {seeds}")


def _rows(options) -> list[tuple[str, float, str, str, bool]]:
    """(key, factor, label name, default label, log) of the rows against s (a narrow figure: the first two,
    with short labels: a column-wide figure cannot hold five rows and the strip)."""
    rows = [("ntk_change", 1.0, "ntk_change", "NTK change\n$\\|K_T - K_0\\|_F/\\|K_0\\|_F$", True),
            ("alignment", 1.0, "alignment", "alignment\n$\\|P_W U\\|_F/\\|U\\|_F$", False),
            ("test_error", 100.0, "test_error", "test error (%)", True),
            ("train_error", 100.0, "train_error", "train error (%)", True),
            ("move_w", 1.0, "move_w", "hidden-layer movement\n$\\|W_T - W_0\\|_F/\\|W_0\\|_F$", True)]
    if options.narrow:
        short = {"ntk_change": "NTK change", "alignment": "alignment"}
        return [(k, f, name, short[k], log) for k, f, name, label, log in rows[:2]]
    return rows


def vs_init_scale_figure(study: Study, arrays: dict[str, np.ndarray], path: str | Path | None = None) -> Figure:
    """Columns: activations. Rows, against the init scale s (log axes), at the end of training: NTK change
    ||K_T - K_0||_F/||K_0||_F (with the kernel threshold); alignment ||P_W U||_F/||U||_F (thin: its peak during
    training, dotted: at init); test error; train error; hidden-layer movement ||W_T - W_0||_F/||W_0||_F (a
    narrow figure: the NTK change and the end alignment only); one line per width (grey level and marker)
    and initialization (line style). Bottom row: the mechanism label of each run (with several seeds, the fraction of seeds with each
    label, stacked). Saves when `path` is given."""
    from phasediag.plots.base import readable_log_ticks
    from phasediag.plots.base import MAX_LEVELS, new_figure, save_figure
    from phasediag.plots.notation import axis_label, number_tex

    options = _options(study)
    s = np.array(study.init_scales)
    n_act = len(study.activations)
    curves = _curves(study)
    rows = _rows(options)
    strip = (0.3 if options.narrow else 0.16) * len(curves) + 0.25
    if options.narrow:
        fig = new_figure(7.0, 9.0, layout=None)
    else:
        fig = new_figure(4.4 * n_act + 1.4, 2.2 * len(rows) + 2.2 * strip + 2.4, layout=None)
    axes = fig.subplots(len(rows) + 1, n_act, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [1] * len(rows) + [strip]})
    for ia, act in enumerate(study.activations):
        col = axes[:, ia]
        for iw, ii, colour, marker, style, _ in curves:
            at = (ia, iw, ii)
            for ax, (key, factor, _, _, log) in zip(col, rows):
                _line(ax, s, factor * arrays[key][at], colour=colour, style=style, marker=marker, positive=log,
                      options=options, zorder=2)
            if not options.narrow:
                _line(col[1], s, arrays["alignment_peak"][at], colour=colour, style=style, thin=True,
                      options=options)
                _line(col[1], s, arrays["alignment_init"][at], colour=colour, style=":", thin=True,
                      options=options)
        col[0].axhline(study.ntk_threshold, color=_THRESHOLD_COLOUR, linewidth=0.9, linestyle="-.", zorder=1)
        col[0].set_title(_panel_title(options, _activation_text(act), "activation"))
        col[1].set_ylim(-0.03, 1.03)
        for ax, (_, _, name, label, log) in zip(col, rows):
            ax.set_xscale("log")
            ax.grid(True, which="major", alpha=0.3)
            if ia == 0:
                ax.set_ylabel(options.label(name, label))
            if log and _has_positive(ax):
                ax.set_yscale("log")
            readable_log_ticks(ax, 3 if options.narrow else 7)
        _mechanism_strip(col[-1], study, arrays, ia, curves, s, labels=ia == 0, short=options.narrow,
                         ylabel=options.label("mechanism", "mechanism") if ia == 0 and not options.narrow else None)
        readable_log_ticks(col[-1], 3 if options.narrow else 7)
    _shared_xlabel(fig, options.label("init_scale", axis_label(study.resolved, "init_scale")))
    handles = _curve_handles(study, curves, options)
    handles += _alignment_handles(options, study.ntk_threshold)[2 if options.narrow else 0:]
    handles += _mechanism_handles(arrays, options)
    if len(study.widths) > MAX_LEVELS:
        _width_colorbar(axes[0, -1], study, options.label("width", "width $d$"))
    title = f"End of training ($T = {number_tex(study.steps)}$ steps) against the init scale $s$"
    title += "" if options.narrow else ", two-layer network on digits\n" + _setting(study)
    _finish(fig, handles, options, options.title_of(title, "vs_init_scale", f"{study.name}__vs_init_scale"),
            below=True, ncols=3)
    save_figure(fig, path)
    return fig


def _curve_handles(study: Study, curves: list, options) -> list:
    """One entry per width (grey level and marker) and one per initialization (line style)."""
    from phasediag.plots.base import MAX_LEVELS
    from matplotlib.lines import Line2D

    size = _curve(options)
    handles = []
    if len(study.widths) <= MAX_LEVELS:
        seen = {}
        for iw, _, colour, marker, _, _ in curves:
            seen.setdefault(iw, (colour, marker))
        handles += [Line2D([], [], color=c, marker=m, linestyle="-", label=f"$d = {study.widths[iw]}$", **size)
                    for iw, (c, m) in seen.items()]
    handles += [Line2D([], [], color="#202020", linestyle=_INIT_STYLES[init], linewidth=size["linewidth"],
                       label=_INIT_TEXT[init] if not options.narrow else f"{init} init") for init in study.inits]
    return handles


def _alignment_handles(options, threshold: float) -> list:
    from matplotlib.lines import Line2D

    from phasediag.plots.notation import number_tex

    width = _curve(options)["linewidth"]
    return [Line2D([], [], color="#202020", linewidth=0.6 * width, alpha=0.6, label="alignment: peak in training"),
            Line2D([], [], color="#202020", linestyle=":", linewidth=0.6 * width, alpha=0.6,
                   label="alignment: at init"),
            Line2D([], [], color=_THRESHOLD_COLOUR, linestyle="-.", linewidth=0.9,
                   label=f"kernel threshold {number_tex(threshold)}" if options.narrow else
                   f"kernel threshold (NTK change ${number_tex(threshold)}$)")]


def _mechanism_handles(arrays: dict[str, np.ndarray], options) -> list:
    from phasediag.plots.base import pretty, swatch

    handles = []
    for name in _labels_present(arrays):
        handle = swatch(_mechanism_colour(name), pretty(name) if options.narrow else _MECHANISM_TEXT[name])
        if name == "diverged":
            handle.set_hatch(_DIVERGED_HATCH)
        handles.append(handle)
    return handles


def _width_colorbar(ax: Axes, study: Study, label: str) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    from phasediag.plots.base import colorbar

    mappable = ScalarMappable(norm=LogNorm(min(study.widths), max(study.widths)), cmap=colormaps["viridis"])
    colorbar(ax, mappable, label)


def _finish(fig: Figure, handles: list, options, title: str | None, *, below: bool, legend_title=None,
            ncols: int = 2) -> None:
    """The figure legend (below, or beside the axes unless the figure is narrow; `ncols` columns on a narrow
    figure), the title, the layout."""
    from phasediag.plots.base import close_columns, fit, keep_inside, legend, wrapped_title

    below = below or options.narrow
    ncols = ncols if options.narrow else (4 if below else 1)
    item = legend(fig, handles, below=below, ncols=ncols, title=legend_title)
    if title:  # wrapped to the width left of a legend at the right (the title is centred over the axes)
        beside = 0.0 if item is None or below else item.get_window_extent(fig._get_renderer()).width
        fig.suptitle(wrapped_title(fig, title, fig.get_size_inches()[0] - beside / fig.dpi - 0.9))
    fit(fig)
    keep_inside(fig)
    close_columns(fig)


def _shared_xlabel(fig: Figure, text: str) -> None:
    """One x label under the grid (every panel shares the x quantity; base.fit places it)."""
    import matplotlib

    fig.supxlabel(text, fontsize=matplotlib.rcParams["axes.labelsize"])


def _has_positive(ax: Axes) -> bool:
    return any(np.any(np.asarray(line.get_ydata(), dtype=float) > 0) for line in ax.get_lines())


def _labels_present(arrays: dict[str, np.ndarray]) -> list[str]:
    codes = np.unique(arrays["mechanism"])
    return [("diverged" if c == DIVERGED_CODE else core.PHASES[int(c)]) for c in codes]


def _mechanism_strip(ax: Axes, study: Study, arrays: dict[str, np.ndarray], ia: int, curves: list, s: np.ndarray,
                     labels: bool = True, ylabel: str | None = None, short: bool = False) -> None:
    """One row of cells per curve: the label of each run on the log s axis; with several seeds each cell is
    split by the fraction of seeds with each label (stacked in the order of core.PHASES, diverged last).
    `short`: rows named by width and the initialization's first three letters."""
    edges = np.exp(np.concatenate([[np.log(s[0]) - 0.5 * _step(s)], 0.5 * (np.log(s[1:]) + np.log(s[:-1])),
                                   [np.log(s[-1]) + 0.5 * _step(s)]]))
    from matplotlib.collections import PolyCollection

    order = list(range(len(core.PHASES))) + [DIVERGED_CODE]
    cells: dict[int, list] = {}  # code -> the cells' rectangles (one collection per label: several times
    for row, (iw, ii, *_rest) in enumerate(curves):  # faster than a patch per cell)
        for j in range(s.size):
            codes = np.asarray(arrays["mechanism"][ia, iw, ii, j]).ravel()
            bottom = float(row)
            for code in order:
                share = np.count_nonzero(codes == code) / max(codes.size, 1)
                if share:
                    top = bottom + 0.9 * share
                    cells.setdefault(code, []).append([(edges[j], bottom), (edges[j + 1], bottom),
                                                       (edges[j + 1], top), (edges[j], top)])
                    bottom = top
    for code, rects in cells.items():
        name = "diverged" if code == DIVERGED_CODE else core.PHASES[code]
        hatched = code == DIVERGED_CODE
        ax.add_collection(PolyCollection(rects, facecolors=_mechanism_colour(name), linewidths=0,
                                         edgecolors="#bdbdbd" if hatched else "none",
                                         hatch=_DIVERGED_HATCH if hatched else None), autolim=False)
    names = [f"$d = {study.widths[c[0]]}$, {study.inits[c[1]][:3]}." if short else c[-1] for c in curves]
    ax.set_yticks([row + 0.45 for row in range(len(curves))], names if labels else [""] * len(curves))
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(len(curves), 0)
    ax.set_xscale("log")
    ax.set_xlim(edges[0], edges[-1])
    if ylabel:
        ax.set_ylabel(ylabel + ("\n(share of seeds)" if study.seeds > 1 else ""))


def _step(s: np.ndarray) -> float:
    return float(np.log(s[-1] / s[0]) / (s.size - 1)) if s.size > 1 else 1.0


def vs_step_figure(study: Study, arrays: dict[str, np.ndarray], path: str | Path | None = None) -> Figure:
    """Trajectories at the largest width: for each initialization (a block of three rows) and activation
    (columns), the NTK change, the alignment and the test error against the step, one line per init scale
    (at most base.MAX_LEVELS of them, evenly picked: greys light (small s) to dark (large s), one marker
    each; median over seeds). A narrow figure: the NTK change and the alignment only. Saves when `path` is
    given."""
    from phasediag.plots.base import readable_log_ticks
    from phasediag.plots.base import new_figure, save_figure
    from phasediag.plots.notation import number_tex
    from matplotlib.lines import Line2D

    options = _options(study)
    iw = len(study.widths) - 1
    steps = arrays["step"].astype(float)
    shown = np.maximum(steps, 0.5)
    s = np.array(study.init_scales)
    picked = _shown(s.size)
    styles = _ordered_styles(len(picked))
    panels = (("traj_ntk_change", 1.0, "ntk_change", "NTK change\n$\\|K_t - K_0\\|_F/\\|K_0\\|_F$", True),
              ("traj_alignment", 1.0, "alignment", "alignment\n$\\|P_W U\\|_F/\\|U\\|_F$", False),
              ("traj_test_error", 100.0, "test_error", "test error (%)", True))
    if options.narrow:  # a column-wide figure cannot hold six rows: the two the README's findings read
        panels = tuple((k, f, n, {"ntk_change": "NTK change", "alignment": "alignment"}[n], log)
                       for k, f, n, lab, log in panels[:2])
    per = len(panels)
    rows = per * len(study.inits)
    if options.narrow:
        fig = new_figure(7.0, 9.0, layout=None)
    else:
        fig = new_figure(4.2 * len(study.activations) + 1.8, 1.9 * rows + 1.3, layout=None)
    axes = fig.subplots(rows, len(study.activations), squeeze=False, sharex=True)
    size = _curve(options)
    every = max(1, steps.size // _MARKS)
    for ii, init in enumerate(study.inits):
        for ia, act in enumerate(study.activations):
            for r, (key, factor, name, ylabel, log) in enumerate(panels):
                ax = axes[per * ii + r, ia]
                for k, j in enumerate(picked):
                    values = factor * _median(np.moveaxis(arrays[key][ia, iw, ii, j], 0, -1))
                    ok = np.isfinite(values) & ((values > 0) if log else True)
                    colour, marker = styles[k]
                    ax.plot(shown[ok], values[ok], color=colour, marker=marker, zorder=2 + k / len(picked),
                            markevery=(round(k * every / len(picked)) % every, every), **size)
                ax.set_xscale("log")
                if log and _has_positive(ax):
                    ax.set_yscale("log")
                ax.grid(True, which="major", alpha=0.3)
                readable_log_ticks(ax, 3 if options.narrow else 7)
                if ia == 0:
                    ax.set_ylabel(options.label(key, options.label(name, ylabel)))
            head = (f"{_activation_text(act)}, {init}" if options.narrow else
                    f"{_activation_text(act)}, $d = {study.widths[iw]}$, {init} init")
            axes[per * ii, ia].set_title(_panel_title(options, head, "activation", "init"))
            axes[per * ii + 1, ia].set_ylim(-0.03, 1.03)
    _shared_xlabel(fig, options.label("step", "GD step $t$ (step 0 drawn at $t = 0.5$)"))
    handles = [Line2D([], [], color=c, marker=m, label=f"$s = {number_tex(s[j])}$", **size)
               for j, (c, m) in zip(picked, styles)]
    legend_title = "init scale $s$" + ("" if len(picked) == s.size else f" ({len(picked)} of {s.size})")
    title = f"Training trajectories at width $d = {study.widths[iw]}$"
    title += "" if options.narrow else ", two-layer network on digits\n" + _setting(study)
    _finish(fig, handles, options, options.title_of(title, "vs_step", f"{study.name}__vs_step"), below=False,
            legend_title=legend_title, ncols=4)
    save_figure(fig, path)
    return fig


# ---------------------------------------------------------------- the job kind (phasediag.jobs)


def read(root: Located, source: str, options) -> Study:
    """The validated study (every bad value reported with its key path and line; no data loaded, no I/O)."""
    return parse_study(root)


def units(study: Study, options) -> int:
    """Work units of the progress bar: one per run."""
    return study.runs


def execute(study: Study, options, checkpoint) -> Result:
    """Load the data, train every run (options.workers processes; bit-identical for any number) and return
    the Result: the coordinates COORDS, every trajectory and end-of-training array, and the study's meta.
    ConfigError when scikit-learn, which provides the dataset, is missing. `checkpoint` is not used."""
    started = time.perf_counter()
    try:
        raw = nl.load_digits_data()
    except ImportError as exc:
        raise ConfigError(f"dataset.name: {exc}") from None
    prepared = prepare_data(study, raw)
    stored = simulate_study(study, prepared, workers=options.workers, progress=options.progress)
    trained = time.perf_counter()
    coords = {name: stored.pop(name) for name in COORDS}
    data = prepared.data
    meta = {
        "kind": "nonlinear", "name": study.name, "experiment": "nonlinear", "coords": list(COORDS),
        "dims": {name: list(AXES) + (["step"] if name.startswith("traj_") else []) for name in stored},
        "legends": _legends(),
        "timing": {"train_s": round(trained - started, 3)},
        "seed": study.seed, "points": study.runs, "workers": options.workers,
        "axes": list(AXES), "record_axis": "step", "record_fields": list(nl.RECORD_FIELDS),
        "data": {"train": int(data.X_train.shape[0]), "test": int(data.X_test.shape[0]),
                 "features": int(data.X_train.shape[1]), "classes": int(data.Y_train.shape[1])},
        "mechanism_labels": {**{str(code): name for code, name in enumerate(core.PHASES)},
                             str(DIVERGED_CODE): "diverged"},
        "definitions": DEFINITIONS,
        "findings": findings(study, stored),
    }
    return Result(coords=coords, arrays=stored, meta=meta)


#: export: the end-of-training table is <name>_finals.csv (the trajectories are <name>.csv)
TABLES = {"by_" + "_".join(AXES): "finals"}



def study_of(result: Result) -> Study:
    """The Study of a result (also one loaded from disk): re-read from the resolved config in its meta."""
    config = {key: value for key, value in result.meta["config"].items() if key in TOP_KEYS}
    return read(located(config), "meta.json", None)


def _legends() -> dict:
    """The names of the categorical codes: the mechanism by phase code, -1 for a diverged run."""
    return {"mechanism": {**{str(code): name for code, name in enumerate(core.PHASES)},
                          str(DIVERGED_CODE): "diverged"}}


def load_data(directory: Path, meta: dict) -> Result:
    """results.npz of a run directory; one written before `nonlinear` was a job kind (no coords/dims in its
    meta.json) gets them from COORDS and AXES."""
    if not meta.get("coords") or "dims" not in meta:
        result = store.load(directory, meta={**meta, "coords": list(COORDS)})
        result.meta["dims"] = {name: list(AXES) + (["step"] if name.startswith("traj_") else [])
                               for name in result.arrays}
        result.meta["kind"] = "nonlinear"
        result.meta.setdefault("legends", _legends())
        return result
    return store.load(directory, meta=meta)


def figures(result: Result) -> list[tuple[str, Callable[[], Figure]]]:
    """<name>__vs_init_scale and <name>__vs_step, each draw() returning the Figure (nothing saved)."""
    study = study_of(result)
    arrays = {**result.coords, **result.arrays}
    return [(f"{study.name}__vs_init_scale", partial(vs_init_scale_figure, study, arrays)),
            (f"{study.name}__vs_step", partial(vs_step_figure, study, arrays))]


def summarize(result: Result) -> dict:
    """JSON-ready: the number of runs, the grid shape and steps, and the findings."""
    config = result.meta["config"]
    shape = [len(config["model"]["activations"]), len(config["model"]["widths"]), len(config["model"]["init"]),
             len(config["init_scale_values"]), config["seeds"]]
    return {"points": result.meta["points"], "shape": shape, "steps": config["train"]["steps"],
            "findings": result.meta["findings"]}


def _fmt(value: float | None, digits: int = 3) -> str:
    """A number for the human summary ("n/a" for a missing one)."""
    return "n/a" if value is None else f"{value:.{digits}g}"


DEFINITIONS = {
    "model": "f(x) = kappa sum_i U_ia phi(w_i . x); L = (1/2n) sum |f - y|^2; "
             "U <- U - eta_u dL/dU, W <- W - eta_w dL/dW",
    "init": "U_ia ~ N(0, s^2 init_var_u), W_ij ~ N(0, s^2 init_var_w / p); symmetric: units in pairs (w, u), (w, -u)",
    "ntk": "K_(x,a),(x',b) = kappa^2 [eta_u delta_ab phi(Wx).phi(Wx') + eta_w (x.x') sum_i U_ia U_ib phi'(w_i.x) "
           "phi'(w_i.x')] on the probe batch, (P k) x (P k), with the rates used for training",
    "ntk_change": "||K_t - K_0||_F / ||K_0||_F",
    "ntk_trace_change": "tr K_t / tr K_0 - 1 (signed; the theory's ntk_change for a linear p = k = 1 network)",
    "ntk_scale": "lambda_max(K) / P",
    "alignment": "||P_W U||_F / ||U||_F, P_W = projection onto the top min(k, p) left singular vectors of W "
                 "(= |cos(u, w)| for p = k = 1)",
    "lr_factor": "min(1, initial_ntk_cap / ntk_scale(K_0)), multiplies both rates",
    "move_w": "||W_t - W_0||_F / ||W_0||_F (move_u likewise)",
    "errors": "fraction of examples whose argmax_a f_a(x) is not the label",
}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def text(summary: dict) -> str:
    """A few human lines: one per (activation, width, init) curve, from the smallest to the largest s."""
    found = summary["findings"]
    s = found["init_scale"]
    timing = summary["timing"]
    elapsed = timing.get("total_s", timing.get("train_s", 0.0))
    lines = [f"{summary['name']}: {summary['points']:,} runs ({' x '.join(str(n) for n in summary['shape'])} "
             f"activation x width x init x init scale x seed, {summary['steps']:,} steps) in {elapsed:.1f} s -> "
             f"{summary['out'] or 'memory (nothing written)'}; diverged: {found['diverged_runs']}",
             f"from s = {_fmt(s[0])} to s = {_fmt(s[-1])}: NTK change ||K_T - K_0||_F/||K_0||_F; alignment "
             f"init/peak/end; test error, best, and train error at the largest s"]
    for g in found["groups"]:
        kernel = g["kernel_from_init_scale"]
        lines.append(
            f"  {g['activation']:>6} d = {g['width']:<5} {g['init']:>9}: NTK change {_fmt(g['ntk_change'][0])} -> "
            f"{_fmt(g['ntk_change'][-1])} "
            f"({'kernel for s > ' + _fmt(kernel, 2) if kernel else 'never below the threshold'}); "
            f"alignment {_align(g['alignment_init'][0])}/{_align(g['alignment_peak'][0])}/"
            f"{_align(g['alignment_final'][0])} -> {_align(g['alignment_init'][-1])}/"
            f"{_align(g['alignment_peak'][-1])}/{_align(g['alignment_final'][-1])}; test error "
            f"{_pct(g['test_error_smallest_scale'])}, best {_pct(g['test_error_best'])} at s = "
            f"{_fmt(g['best_init_scale'], 2)}, {_pct(g['test_error_largest_scale'])} (train "
            f"{_pct(g['train_error'][-1])})")
    return "\n".join(lines)


def _align(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
