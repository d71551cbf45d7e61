"""GD versus SGD: how minibatch noise breaks the conservation laws of the linear model.

``phasediag experiment CONFIG`` (or ``phasediag run CONFIG``) with ``experiment: sgd_drift``: a job kind of
:mod:`phasediag.jobs` (``read``, ``units``, ``execute``, ``figures``, ``summarize``, ``text``). Notation of docs/theory.md sections 1-3 and 9:
kappa output scale, eta_u = lr_ratio * lr and eta_w = lr the layer learning rates, a = E[x^2], m* teacher,
c = kappa sqrt(eta_u eta_w), Delta = |u|^2/eta_u - |w|^2/eta_w, G = |u|^2 |w|^2 - (u . w)^2,
zeta = cos(u, w).

What is exact. One descent step with batch moments (a_k, b_k) (population GD: (a, b); SGD: the minibatch's
(mean x_B^2, mean x_B y_B)) is the linear map [u; w] <- [[1, -eta_u kappa r_k], [-eta_w kappa r_k, 1]] [u; w]
with the batch residual r_k = a_k m - b_k. Hence, for GD and SGD alike,

    Delta_t = P_t Delta_0,   G_t = P_t^2 G_0,   P_t = prod_{k < t} (1 - c^2 r_k^2),

and the gradient flow (c^2 r^2 -> 0 per unit time) conserves both. The whole drift of the two conservation
laws is the one number P_t, and the alignment follows from it: zeta_t = m_t / hypot(m_t, kappa sqrt(G_0) |P_t|).

Normalization. The drift is measured multiplicatively, as the log-decay

    D_t := -ln |Delta_t / Delta_0|   (= -ln |P_t|; relative drift (Delta_t - Delta_0)/Delta_0 = +-e^-D_t - 1),

which does not depend on the size of Delta_0: a nearly balanced start (Delta_0 -> 0) has the same D_t.
For an exactly balanced start Delta_t = 0 for ever (the balanced set is invariant under GD and SGD), and the
same number is read from the Gram determinant, D_t = -ln(G_t / G_0) / 2, which is also stored
(``sgd_gram_decay``) and checked against the Delta-based value. Where |Delta_t| falls below RESOLUTION times
S_t = |u|^2/eta_u + |w|^2/eta_w, float64 cannot resolve Delta_t (it is a difference of two such terms) and
the Delta-based D_t is NaN ("unresolved"); the Gram-based one stays accurate there, and the reported D_t
(``sgd_decay``) is the Delta-based value where resolved and the Gram-based one elsewhere.

What is compared, per seed s (same u0, w0, dataset and epoch permutations for every cell, see `_rngs`):
- the gradient flow: D = 0 exactly; its alignment from the closed form (core.flow_state);
- population GD: exact map (core.gd_state), D_t = -sum_k ln(1 - c^2 r_k^2), r_k = a (m_k - m*);
- SGD at every batch size B on n samples (B = n: full-batch GD on the sample), trained as vectors
  (simulate.sgd_vectors);
- a leading-order prediction of SGD: D_t ~ sum_{k<t} [-ln(1 - c^2 rhat_k^2) + c^2 f_B v(m_k)] along the
  full-batch path m_k on the sample (rhat_k = ahat m_k - bhat), where v(m) = var_i(x_i^2 m - x_i y_i) is the
  per-sample variance of the residual and f_B = (n - B) / (B (n - 1)) the without-replacement factor, so that
  E[r_k^2] = rhat_k^2 + f_B v(m_k). It neglects the feedback of the noise on m (higher order in eta).

Results: results.npz (the coordinates noise_var, lr, batch_size, seed, step, then arrays with dimensions
(noise_var, lr, batch_size, seed, step) for SGD, (lr, seed, step) for the population references,
(noise_var, lr, seed, step) for the full-batch path, (seed,) for the initial Gram entries: meta["dims"]),
meta.json (written last), figures ``<name>__drift_vs_step`` and ``<name>__drift_vs_lr``, drawn from the run
directory alone (the study is rebuilt from the stored config).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field as dataclass_field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from phasediag import core
from phasediag.training import simulate
from phasediag.training.nonlinear import record_steps
from phasediag.config.reader import (FIGURE_KEYS, ConfigError, Located, bounded_int, check_name, fail,
                                     figure_formats, figure_options, located, mapping, number, plain, string)
from phasediag.config.sweep import axis_values
from phasediag.plots.maps import nan_median as _median
from phasediag.engine.workers import ordered_map
from phasediag.results import store
from phasediag.results.store import Result

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Study", "parse_study", "record_steps", "dataset", "run_sgd", "population_references", "sample_path",
    "log_decay", "gram_decay", "misalignment", "simulate_study", "chosen_lr", "findings", "drift_vs_step_figure",
    "drift_vs_lr_figure", "COORDS", "DIMS", "TABLES", "study_of_result", "read", "units", "execute", "load_data",
    "figures", "summarize", "text",
]

TOP_KEYS = ("name", "description", "experiment", "model", "data", "sweep", "train", "seeds", "seed", "plot")
MODEL_KEYS = ("width", "output_scale", "init_var_u", "init_var_w", "lr_ratio")
DATA_KEYS = ("input_var", "teacher", "noise_var", "samples")
SWEEP_KEYS = ("lr", "batch_size", "noise_var")
TRAIN_KEYS = ("steps", "record")
PLOT_KEYS = ("lr", "formats", *FIGURE_KEYS)

#: cap on the training work: SGD runs x steps x (1 + width / 4000) "step units" (~7 us each on one core,
#: so the cap is about an hour of one core)
MAX_WORK = 5e8
MAX_STEPS = 200_000  # the exact references cost O(steps) Python-level iterations per chunk of points
MAX_RECORD = 1000
MAX_WIDTH = 10_000_000
MAX_NOISE_LEVELS = 4  # one figure row each
#: |Delta_t| below RESOLUTION * (|u|^2/eta_u + |w|^2/eta_w) is not resolved by float64 (D_t -> NaN there)
RESOLUTION = 1e-9
_PATH_BYTES = 128e6  # memory per exact-map call over all steps (points are chunked to stay below it)
_FIELDS = ("imbalance", "gram_det", "alignment", "m", "loss", "norm_u2", "norm_w2")


# ---------------------------------------------------------------- the config


@dataclass(frozen=True)
class Study:
    """A validated sgd_drift config. eta_w = lr and eta_u = lr_ratio * lr for every lr of the sweep."""

    name: str
    description: str
    width: int
    output_scale: float
    init_var_u: float
    init_var_w: float
    lr_ratio: float
    input_var: float
    teacher: float
    samples: int
    noise_vars: tuple[float, ...]
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    steps: int
    record: int
    seeds: int
    seed: int
    plot_lr: float | None  # None: chosen after training (see `chosen_lr`)
    formats: tuple[str, ...]
    noise_swept: bool = False
    lr_spec: object = None
    figure: dict = dataclass_field(default_factory=dict, compare=False)  # plot labels, title, size, style, dpi

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(noise levels, learning rates, batch sizes, seeds): the grid of SGD runs."""
        return len(self.noise_vars), len(self.lrs), len(self.batch_sizes), self.seeds

    @property
    def runs(self) -> int:
        return int(np.prod(self.shape))

    def c(self, lr: np.ndarray | float) -> np.ndarray:
        """c = kappa sqrt(eta_u eta_w) = kappa lr sqrt(lr_ratio)."""
        return self.output_scale * np.asarray(lr, dtype=float) * np.sqrt(self.lr_ratio)

    @property
    def resolved(self) -> dict:
        """Plain data of everything that determines the results (stored in meta.json; it reads back as this
        study, see `study_of_result`)."""
        return {
            "name": self.name, "description": self.description, "experiment": "sgd_drift",
            "model": {"width": self.width, "output_scale": self.output_scale, "init_var_u": self.init_var_u,
                      "init_var_w": self.init_var_w, "lr_ratio": self.lr_ratio},
            "data": {"input_var": self.input_var, "teacher": self.teacher, "samples": self.samples,
                     **({} if self.noise_swept else {"noise_var": self.noise_vars[0]})},
            "sweep": {"lr": self.lr_spec if self.lr_spec is not None else list(self.lrs),
                      "batch_size": list(self.batch_sizes),
                      **({"noise_var": list(self.noise_vars)} if self.noise_swept else {})},
            "lr_values": list(self.lrs),
            "train": {"steps": self.steps, "record": self.record},
            "seeds": self.seeds, "seed": self.seed,
            "plot": {"lr": "auto" if self.plot_lr is None else self.plot_lr, "formats": list(self.formats),
                     **self.figure},
        }


def _values(item: Located, *, positive: bool) -> np.ndarray:
    """A swept list: [v1, v2, ...] or {values: [...]} / {log: [start, stop, num]} / {lin: [...]}."""
    if isinstance(item.value, list):
        if not item.value:
            raise fail(item.path, item.line, "must be a non-empty list")
        values = np.array([number(v, positive=positive, nonneg=not positive) for v in item.value])
        if len(np.unique(values)) != len(values):
            raise fail(item.path, item.line, "values must be distinct")
        return values
    values = axis_values(item)
    bad = values[~(values > 0)] if positive else values[values < 0]
    if bad.size:
        raise fail(item.path, item.line, f"must be {'> 0' if positive else '>= 0'}, got {bad[0]:g}")
    return values


def _batch_sizes(item: Located, samples: int) -> tuple[int, ...]:
    if not isinstance(item.value, list) or not item.value:
        raise fail(item.path, item.line, "must be a non-empty list of batch sizes, e.g. [1, 4, 16, 64]")
    sizes = []
    for v in item.value:
        if number(v, integer=True) > samples:
            raise fail(v.path, v.line, f"batch size {number(v):g} is larger than data.samples = {samples} "
                                        f"(use {samples} for full-batch GD on the sample)")
        sizes.append(bounded_int(v, low=1, high=samples))
    if len(set(sizes)) != len(sizes):
        raise fail(item.path, item.line, "batch sizes must be distinct")
    return tuple(sorted(sizes))


def _optional(items: dict, key: str, default: float, **kw) -> float:
    return number(items[key], **kw) if key in items else default


def parse_study(root: Located) -> Study:
    """Validate the whole config (ConfigError naming the key path and line) before any training."""
    top = mapping(root, TOP_KEYS, required=("name", "experiment", "model", "sweep", "train"))
    if string(top["experiment"]) != "sgd_drift":
        raise fail("experiment", top["experiment"].line, f"this study is sgd_drift, got {top['experiment'].value!r}")
    name = check_name(top["name"])
    description = string(top["description"]) if "description" in top else ""

    model = mapping(top["model"], MODEL_KEYS, required=("width", "init_var_u", "init_var_w"))
    width = bounded_int(model["width"], low=1, high=MAX_WIDTH)
    init_var_u = number(model["init_var_u"], nonneg=True)
    init_var_w = number(model["init_var_w"], nonneg=True)
    if init_var_u == 0 and init_var_w == 0:
        raise fail("model.init_var_w", model["init_var_w"].line,
                    "init_var_u and init_var_w are both 0: u = w = 0 is a fixed point, nothing trains")
    output_scale = _optional(model, "output_scale", 1.0, positive=True)
    lr_ratio = _optional(model, "lr_ratio", 1.0, positive=True)

    data = mapping(top["data"], DATA_KEYS, required=("samples",)) if "data" in top else {}
    if "samples" not in data:
        raise ConfigError("data.samples: is required (the size n of the training set SGD samples from)")
    samples = bounded_int(data["samples"], low=1, high=10_000_000)
    input_var = _optional(data, "input_var", 1.0, positive=True)
    teacher = _optional(data, "teacher", 1.0)

    sweep = mapping(top["sweep"], SWEEP_KEYS, required=("lr", "batch_size"))
    lrs = _values(sweep["lr"], positive=True)
    batch_sizes = _batch_sizes(sweep["batch_size"], samples)
    noise_vars, noise_swept = _noise(data, sweep)
    _in_range(data, sweep, input_var, teacher, noise_vars)

    train = mapping(top["train"], TRAIN_KEYS, required=("steps",))
    steps = bounded_int(train["steps"], low=1, high=MAX_STEPS)
    record = bounded_int(train["record"], low=2, high=MAX_RECORD) if "record" in train else 60
    seeds = bounded_int(top["seeds"], low=1, high=10_000) if "seeds" in top else 8
    seed = bounded_int(top["seed"], low=0, high=2**63 - 1) if "seed" in top else 0
    plot_lr, formats, figure = _plot_settings(top.get("plot"), lrs, root.base_dir)

    study = Study(name=name, description=description, width=width, output_scale=output_scale,
                  init_var_u=init_var_u, init_var_w=init_var_w, lr_ratio=lr_ratio, input_var=input_var,
                  teacher=teacher, samples=samples, noise_vars=noise_vars, lrs=tuple(float(v) for v in lrs),
                  batch_sizes=batch_sizes, steps=steps, record=record, seeds=seeds, seed=seed, plot_lr=plot_lr,
                  formats=formats, noise_swept=noise_swept, lr_spec=plain(sweep["lr"]), figure=figure)
    _check_work(study, train["steps"])
    return study


#: the data values the exact references support (docs/theory.md section 8; beyond them the squares overflow)
DATA_RANGE = {"input_var": (1e-3, 1e3), "teacher": (-1e3, 1e3), "noise_var": (0.0, 1e6)}


def _in_range(data: dict, sweep: dict, input_var: float, teacher: float, noise_vars) -> None:
    for key, values in (("input_var", [input_var]), ("teacher", [teacher]), ("noise_var", noise_vars)):
        low, high = DATA_RANGE[key]
        bad = [v for v in values if not low <= v <= high]
        if bad:
            item = sweep.get(key) or data.get(key)
            where = item.path if item is not None else f"data.{key}"
            raise fail(where, item.line if item is not None else None,
                       f"must be in [{low:g}, {high:g}] (the supported range), got {bad[0]:g}")


def _noise(data: dict, sweep: dict) -> tuple[tuple[float, ...], bool]:
    if "noise_var" in sweep and "noise_var" in data:
        raise fail("sweep.noise_var", sweep["noise_var"].line,
                    f"noise_var is also set in data (line {data['noise_var'].line}); give it in one place")
    if "noise_var" not in sweep:
        return (_optional(data, "noise_var", 0.0, nonneg=True),), False
    values = _values(sweep["noise_var"], positive=False)
    if values.size > MAX_NOISE_LEVELS:
        raise fail("sweep.noise_var", sweep["noise_var"].line,
                    f"at most {MAX_NOISE_LEVELS} values (one figure row each), got {values.size}")
    return tuple(float(v) for v in values), True


def _plot_settings(item: Located | None, lrs: np.ndarray,
                   base_dir: Path | None = None) -> tuple[float | None, tuple[str, ...], dict]:
    """plot.lr (None: auto), plot.formats and the figure settings (phasediag.config.reader.figure_options)."""
    spec = mapping(item, PLOT_KEYS) if item is not None else {}
    plot_lr = None
    if "lr" in spec and spec["lr"].value != "auto":  # auto (the default): chosen after training
        want = number(spec["lr"], positive=True)
        hit = np.flatnonzero(np.isclose(lrs, want, rtol=1e-9, atol=0))
        if hit.size == 0:
            raise fail("plot.lr", spec["lr"].line, f"{want:g} is not one of the swept learning rates "
                                                    f"({', '.join(f'{v:.4g}' for v in lrs)})")
        plot_lr = float(lrs[hit[0]])
    return plot_lr, figure_formats(spec), figure_options(spec, PLOT_LABELS, base_dir, FIGURE_NAMES)


def _check_work(study: Study, steps_item: Located) -> None:
    work = study.runs * study.steps * (1 + study.width / 4000)
    if work > MAX_WORK:
        raise fail("train.steps", steps_item.line,
                    f"{study.runs:,} SGD runs (noise levels x lr x batch sizes x seeds) x {study.steps:,} steps at "
                    f"width {study.width:,} is {work:.3g} step units, above the cap of {MAX_WORK:.0e} (about an "
                    f"hour of one core); reduce train.steps, seeds, the sweep or model.width")


# ---------------------------------------------------------------- randomness and training


def _rngs(study: Study, s: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(init, data) generators of seed index s: SeedSequence([seed, s, 0]) and SeedSequence([seed, s, 1]).

    Common random numbers: at seed s every (noise_var, lr, B) cell sees the same u0, w0, the same x and
    standard-normal label noise, and the same epoch permutations, so cells differ only by noise_var, lr, B."""
    return tuple(np.random.Generator(np.random.PCG64(np.random.SeedSequence([study.seed, s, k]))) for k in (0, 1))


def initial_vectors(study: Study, s: int) -> tuple[np.ndarray, np.ndarray]:
    """u0, w0 of seed index s: float64 arrays of shape (width,)."""
    return simulate.sample_vectors(study.width, study.init_var_u, study.init_var_w, _rngs(study, s)[0])


def dataset(samples: int, input_var: float, teacher: float, noise_var: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The training set exactly as simulate.sgd_vectors draws it first from its generator: x ~ N(0, a) of
    shape (n,), then y = m* x + sqrt(noise_var) N(0, 1) of shape (n,)."""
    x = np.sqrt(input_var) * rng.standard_normal(samples)
    y = teacher * x + np.sqrt(noise_var) * rng.standard_normal(samples)
    return x, y


def run_sgd(study: Study, i_noise: int, i_lr: int, i_batch: int, s: int) -> np.ndarray:
    """Train one SGD cell as vectors; returns float64 (len(_FIELDS), n_record) of the Trace fields in _FIELDS
    order at record_steps (+inf from a divergence on: the Trace sentinel)."""
    lr = study.lrs[i_lr]
    u0, w0 = initial_vectors(study, s)
    trace = simulate.sgd_vectors(
        u0, w0, output_scale=study.output_scale, lr_u=study.lr_ratio * lr, lr_w=lr, input_var=study.input_var,
        teacher=study.teacher, batch_size=study.batch_sizes[i_batch], samples=study.samples,
        noise_var=study.noise_vars[i_noise], steps=record_steps(study.steps, study.record), rng=_rngs(study, s)[1])
    return np.stack([getattr(trace, f) for f in _FIELDS])


def _task(args: tuple) -> np.ndarray:
    study, index = args
    return run_sgd(study, *index)


def _execute(study: Study, workers: int, progress: Callable[[int], None] | None) -> Iterator[np.ndarray]:
    """Run every SGD cell in C order of study.shape; yields each result in that order (any `workers`)."""
    return ordered_map(_task, [(study, index) for index in np.ndindex(*study.shape)], workers, progress)


# ---------------------------------------------------------------- drift measures


def log_decay(imbalance: np.ndarray, norm_u2: np.ndarray, norm_w2: np.ndarray, lr_u: np.ndarray,
              lr_w: np.ndarray) -> np.ndarray:
    """D_t = -ln|Delta_t / Delta_0| along the last axis (Delta_0 = imbalance[..., 0]).

    NaN where undefined: Delta_0 = 0, a diverged record (inf), or |Delta_t| < RESOLUTION (|u|^2/eta_u +
    |w|^2/eta_w) (float64 does not resolve Delta_t there). lr_u, lr_w broadcast against imbalance[..., :1]."""
    scale = norm_u2 / lr_u + norm_w2 / lr_w  # S_t >= 0 (inf at a diverged record: no warning)
    ok = np.isfinite(imbalance) & (np.abs(imbalance) >= RESOLUTION * scale) & (imbalance[..., :1] != 0)
    ratio = np.ones_like(imbalance)
    np.divide(np.abs(imbalance), np.abs(imbalance[..., :1]), out=ratio, where=ok)
    out = np.full(imbalance.shape, np.nan)
    np.negative(np.log(ratio, out=np.ones_like(ratio), where=ok), out=out, where=ok)
    return out


def gram_decay(gram_det: np.ndarray) -> np.ndarray:
    """-ln(G_t / G_0) / 2 along the last axis (= -ln|P_t| like D_t); NaN where G_0 = 0 or G_t is 0 or inf."""
    ok = np.isfinite(gram_det) & (gram_det > 0) & (gram_det[..., :1] > 0)
    ratio = np.ones_like(gram_det)
    np.divide(gram_det, gram_det[..., :1], out=ratio, where=ok)
    out = np.full(gram_det.shape, np.nan)
    np.multiply(np.log(ratio, out=np.ones_like(ratio), where=ok), -0.5, out=out, where=ok)
    return out


def misalignment(alignment: np.ndarray) -> np.ndarray:
    """1 - |zeta| (NaN where zeta is the +inf divergence sentinel)."""
    out = np.full(np.shape(alignment), np.nan)
    np.subtract(1.0, np.abs(alignment), out=out, where=np.isfinite(alignment))
    return out


# ---------------------------------------------------------------- exact references (closed form, core)


def _path(problem: core.Problem, steps: int) -> core.FlowState:
    """Exact GD state at every step 0..steps for every point (points flattened to 1-D)."""
    return core.gd_state(core.invariants(problem), np.arange(steps + 1))


def _chunks(n_points: int, steps: int) -> Iterator[slice]:
    size = max(1, int(_PATH_BYTES // (100 * (steps + 1))))  # ~100 bytes per point and step in core.gd_state
    for start in range(0, n_points, size):
        yield slice(start, min(n_points, start + size))


def _step_decay(c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """-ln(1 - c^2 r^2) per step (NaN where c |r| >= 1 or r is not finite: the product changes sign / blows)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging path: inf / NaN, reported as NaN
        x = (c * r) ** 2
    ok = x < 1.0
    out = np.full(x.shape, np.nan)
    np.negative(np.log1p(-np.where(ok, x, 0.0)), out=out, where=ok)
    return out


def population_references(study: Study, grams: core.Gram) -> dict[str, np.ndarray]:
    """Exact population GD and flow, shapes (lr, seed, record): ``gd_decay`` D_t = -sum_{k<t} ln(1 - c^2 r_k^2)
    with r_k = a (m_k - m*) on the exact GD path, ``gd_alignment``, ``gd_loss``; ``flow_alignment``,
    ``flow_loss`` (the flow conserves Delta and G: its D is 0). grams: the seeds' Gram entries, shape (seed,)."""
    lr = np.asarray(study.lrs)[:, None]
    steps = record_steps(study.steps, study.record)
    gram = core.explicit_gram(grams.U[None, :], grams.W[None, :], grams.V[None, :])
    problem = core.Problem(np.asarray(study.output_scale), study.lr_ratio * lr, lr, np.asarray(study.input_var),
                           np.asarray(study.teacher), gram)
    flow = core.flow_state(core.with_time_axis(core.invariants(problem)), steps.astype(float))
    decay, align, loss = _exact_gd(problem, study.c(lr), study.input_var, study.teacher, study.steps, steps)
    return {"gd_decay": decay, "gd_alignment": align, "gd_loss": loss, "flow_alignment": flow.alignment,
            "flow_loss": flow.loss}


def _exact_gd(problem: core.Problem, c: np.ndarray, a, teacher, steps: int,
              at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D_t, zeta_t, loss_t) of exact GD at the steps `at`, for every point of `problem` (chunked)."""
    shape = np.broadcast_shapes(*(np.shape(x) for x in (*problem[:5], problem.gram.U)))
    flat = _flatten(problem, shape)
    c, a, teacher = (np.broadcast_to(x, shape).reshape(-1) for x in (c, a, teacher))
    n = int(np.prod(shape))
    decay, align, loss = (np.empty((n, at.size)) for _ in range(3))
    for part in _chunks(n, steps):
        path = _path(_take(flat, part), steps)
        per_step = _step_decay(c[part, None], a[part, None] * (path.m[:, :-1] - teacher[part, None]))
        total = np.concatenate([np.zeros((per_step.shape[0], 1)), np.cumsum(per_step, axis=1)], axis=1)
        decay[part], align[part], loss[part] = total[:, at], path.alignment[:, at], path.loss[:, at]
    return tuple(x.reshape(shape + (at.size,)) for x in (decay, align, loss))


def _flatten(problem: core.Problem, shape: tuple[int, ...]) -> core.Problem:
    flat = lambda x: np.broadcast_to(np.asarray(x, dtype=float), shape).reshape(-1)  # noqa: E731
    gram = core.Gram(*(flat(x) for x in problem.gram))
    return core.Problem(*(flat(x) for x in problem[:5]), gram)


def _take(problem: core.Problem, part: slice) -> core.Problem:
    return core.Problem(*(x[part] for x in problem[:5]), core.Gram(*(x[part] for x in problem.gram)))


def sample_path(study: Study, grams: core.Gram, moments: np.ndarray) -> dict[str, np.ndarray]:
    """Full-batch GD on each sample (exact map with a = ahat, m* = bhat / ahat) and its noise budget.

    moments: (noise, seed, 5) with columns ahat = mean x^2, bhat = mean x y, var(x^2), cov(x^2, x y), var(x y)
    (ddof 0). Returns, shapes (noise, lr, seed, record): ``sample_decay`` = -sum_{k<t} ln(1 - c^2 rhat_k^2)
    and ``noise_budget`` = c^2 sum_{k<t} v(m_k), v(m) = var_i(x_i^2 m - x_i y_i), so that the leading-order
    SGD prediction at batch size B is sample_decay + f_B noise_budget, f_B = (n - B) / (B (n - 1))."""
    lr = np.asarray(study.lrs)[None, :, None]
    ahat, bhat, var_aa, cov_ab, var_bb = (moments[:, None, :, j] for j in range(5))
    steps = record_steps(study.steps, study.record)
    gram = core.explicit_gram(grams.U[None, None, :], grams.W[None, None, :], grams.V[None, None, :])
    problem = core.Problem(np.asarray(study.output_scale), study.lr_ratio * lr, lr, ahat, bhat / ahat, gram)
    shape = np.broadcast_shapes(lr.shape, ahat.shape)
    flat = _flatten(problem, shape)
    c = np.broadcast_to(study.c(lr), shape).reshape(-1)
    coef = [np.broadcast_to(x, shape).reshape(-1) for x in (ahat, bhat, var_aa, cov_ab, var_bb)]
    n = int(np.prod(shape))
    decay, budget = np.empty((n, steps.size)), np.empty((n, steps.size))
    for part in _chunks(n, study.steps):
        m = _path(_take(flat, part), study.steps).m[:, :-1]
        ah, bh, vaa, cab, vbb = (x[part, None] for x in coef)
        per_step = _step_decay(c[part, None], ah * m - bh)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging path: inf/NaN, reported as NaN
            v = (vaa * m - 2.0 * cab) * m + vbb
        noise = np.where(np.isfinite(v), c[part, None] ** 2 * np.where(np.isfinite(v), v, 0.0), np.nan)
        zero = np.zeros((per_step.shape[0], 1))
        decay[part] = np.concatenate([zero, np.cumsum(per_step, axis=1)], axis=1)[:, steps]
        budget[part] = np.concatenate([zero, np.cumsum(noise, axis=1)], axis=1)[:, steps]
    return {"sample_decay": decay.reshape(shape + (steps.size,)),
            "noise_budget": budget.reshape(shape + (steps.size,))}


def _moments(study: Study) -> np.ndarray:
    """(noise, seed, 5): ahat, bhat, var(x^2), cov(x^2, x y), var(x y) of each seed's training set."""
    out = np.empty((len(study.noise_vars), study.seeds, 5))
    for i, noise_var in enumerate(study.noise_vars):
        for s in range(study.seeds):
            x, y = dataset(study.samples, study.input_var, study.teacher, noise_var, _rngs(study, s)[1])
            aa, ab = x * x, x * y
            da, db = aa - aa.mean(), ab - ab.mean()
            out[i, s] = aa.mean(), ab.mean(), np.mean(da * da), np.mean(da * db), np.mean(db * db)
    return out


# ---------------------------------------------------------------- the study


def simulate_study(study: Study, *, workers: int = 1,
                   progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train every SGD cell and compute the exact references; returns the arrays of results.npz.

    Coordinates: noise_var (N,), lr (L,), batch_size (B,), seed (S,), step (T,). SGD arrays sgd_<field>
    (N, L, B, S, T) for the Trace fields imbalance, gram_det, alignment, m, loss, norm_u2, norm_w2, plus
    sgd_imbalance_decay (D_t from Delta; NaN where unresolved), sgd_gram_decay (from G), sgd_decay (from Delta,
    from G where Delta is unresolved), sgd_misalignment (1 - |zeta|), sgd_diverged (N, L, B, S) and
    predicted_decay (N, L, B, S, T). Population references (L, S, T): gd_decay, gd_alignment, gd_loss,
    flow_alignment, flow_loss; sample references (N, L, S, T): sample_decay, noise_budget; init: U0, W0, V0 (S,).
    """
    out = np.empty(study.shape + (len(_FIELDS), record_steps(study.steps, study.record).size))
    for index, cell in zip(np.ndindex(*study.shape), _execute(study, workers, progress)):
        out[index] = cell
    arrays: dict[str, np.ndarray] = {
        "noise_var": np.asarray(study.noise_vars), "lr": np.asarray(study.lrs),
        "batch_size": np.asarray(study.batch_sizes, dtype=np.int64), "seed": np.arange(study.seeds),
        "step": record_steps(study.steps, study.record)}
    arrays.update({f"sgd_{f}": out[..., j, :] for j, f in enumerate(_FIELDS)})
    lr_w = np.asarray(study.lrs)[None, :, None, None, None]
    arrays["sgd_imbalance_decay"] = log_decay(arrays["sgd_imbalance"], arrays["sgd_norm_u2"], arrays["sgd_norm_w2"],
                                              study.lr_ratio * lr_w, lr_w)
    arrays["sgd_gram_decay"] = gram_decay(arrays["sgd_gram_det"])
    resolved = np.isfinite(arrays["sgd_imbalance_decay"])
    arrays["sgd_decay"] = np.where(resolved, arrays["sgd_imbalance_decay"], arrays["sgd_gram_decay"])
    arrays["sgd_misalignment"] = misalignment(arrays["sgd_alignment"])
    arrays["sgd_diverged"] = ~np.isfinite(arrays["sgd_m"][..., -1])
    u0w0 = [initial_vectors(study, s) for s in range(study.seeds)]
    U, W, V = (np.array([f(u, w) for u, w in u0w0]) for f in (lambda u, w: u @ u, lambda u, w: w @ w,
                                                               lambda u, w: u @ w))
    grams = core.explicit_gram(U, W, V)
    arrays.update({"U0": U, "W0": W, "V0": V})
    arrays.update(population_references(study, grams))
    arrays.update(sample_path(study, grams, _moments(study)))
    n, b = study.samples, np.asarray(study.batch_sizes, dtype=float)
    f_b = (n - b) / (b * max(n - 1, 1))
    arrays["predicted_decay"] = (arrays["sample_decay"][:, :, None] +
                                 f_b[None, None, :, None, None] * arrays["noise_budget"][:, :, None])
    return arrays


# ---------------------------------------------------------------- statistics for the findings


def _quantiles(values: np.ndarray, qs=(0.25, 0.75)) -> tuple[np.ndarray, ...]:
    """Quantiles over the last axis ignoring NaN (NaN where all are NaN), without warnings."""
    srt = np.sort(values, axis=-1)
    count = np.sum(~np.isnan(values), axis=-1)
    out = []
    for q in qs:
        pos = np.maximum(count - 1, 0) * q
        lo, frac = np.floor(pos).astype(int), pos - np.floor(pos)
        hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
        a = np.take_along_axis(srt, lo[..., None], axis=-1)[..., 0]
        b = np.take_along_axis(srt, hi[..., None], axis=-1)[..., 0]
        out.append(np.where(count > 0, a + frac * (b - a), np.nan))
    return tuple(out)


def _slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of log y against log x over the points with finite y > 0 (None if < 2 points)."""
    ok = np.isfinite(y) & (y > 0)
    if np.count_nonzero(ok) < 2:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def _num(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _sig(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over `axis` of the finite values; NaN where there are none (no warning)."""
    ok = np.isfinite(values)
    count = np.sum(ok, axis=axis)
    total = np.sum(np.where(ok, values, 0.0), axis=axis)
    out = np.full(np.shape(total), np.nan)
    return np.divide(total, count, out=out, where=count > 0)


def findings(study: Study, arrays: dict[str, np.ndarray]) -> dict:
    """The numbers behind the README statement (JSON-ready: non-finite -> None), at the last step K.

    - identity: max |D from Delta - D from G| / max(1, D) where both are resolved (exactly 0 in exact arithmetic);
    - at plot.lr: medians over seeds of D_K and of 1 - |zeta_K| for the flow, population GD and each batch size;
    - slopes (least squares, log-log) of the median D_K against lr, for GD and each B, and of the median noise part
      D_K(B) - D_K(full batch on the same sample) against lr, against 1/B and against f_B = (n - B)/(B (n - 1));
    - growth of D over the second half of training (0: the drift has stopped);
    - measured / predicted: mean over seeds of D_K over the mean of its leading-order prediction, at plot.lr and at
      the smallest lr (the prediction is leading order in eta: the ratio should tend to 1 as lr -> 0)."""
    study = replace(study, plot_lr=chosen_lr(study, arrays))
    lrs = np.asarray(study.lrs)
    i_lr = _lr_index(study)
    both = np.isfinite(arrays["sgd_imbalance_decay"]) & np.isfinite(arrays["sgd_gram_decay"])
    gap = np.abs(arrays["sgd_imbalance_decay"] - arrays["sgd_gram_decay"])[both]
    rel = gap / np.maximum(1.0, np.abs(arrays["sgd_gram_decay"][both]))
    live = ~arrays["sgd_diverged"][..., None]
    return {
        "lr": study.plot_lr, "smallest_lr": float(lrs.min()), "steps": study.steps, "samples": study.samples,
        "identity_max_abs_diff": _sig(_num(rel.max()), 3) if rel.size else None,
        "diverged_runs": int(np.count_nonzero(arrays["sgd_diverged"])),
        "records_from_gram": int(np.count_nonzero(~np.isfinite(arrays["sgd_imbalance_decay"]) & live
                                                  & np.isfinite(arrays["sgd_gram_decay"]))),
        "flow_decay": 0.0,
        "gd_decay": _sig(_num(_median(arrays["gd_decay"][i_lr, :, -1]))),
        "gd_slope_vs_lr": _sig(_slope(lrs, _median(arrays["gd_decay"][:, :, -1])), 3),
        "flow_misalignment": _sig(_num(_median(misalignment(arrays["flow_alignment"][i_lr, :, -1])))),
        "gd_misalignment": _sig(_num(_median(misalignment(arrays["gd_alignment"][i_lr, :, -1])))),
        "by_noise": [_noise_findings(study, arrays, i, i_lr) for i in range(len(study.noise_vars))],
    }


def _noise_findings(study: Study, arrays: dict, i: int, i_lr: int) -> dict:
    lrs, sizes = np.asarray(study.lrs), np.asarray(study.batch_sizes, dtype=float)
    i_small = int(np.argmin(lrs))
    d_k = arrays["sgd_decay"][i, ..., -1]  # (L, B, S)
    noise_part = _median(d_k - arrays["sample_decay"][i, :, None, :, -1])  # paired by seed: (L, B)
    measured, predicted = _mean(d_k), _mean(arrays["predicted_decay"][i, ..., -1])  # (L, B)
    ratio = np.full(measured.shape, np.nan)
    np.divide(measured, predicted, out=ratio, where=np.isfinite(measured) & (predicted > 0))
    growth = d_k - _at_half(study, arrays["sgd_decay"][i])
    n = study.samples
    partial = sizes < n
    rows = [{
        "batch_size": b,
        "decay": _sig(_num(_median(d_k[i_lr, j]))),
        "decay_iqr": [_sig(_num(q)) for q in _quantiles(d_k[i_lr, j])],
        "misalignment": _sig(_num(_median(arrays["sgd_misalignment"][i, i_lr, j, :, -1]))),
        "noise_part": _sig(_num(noise_part[i_lr, j])),
        "growth_last_half": _sig(_num(_median(growth[i_lr, j]))),
        "slope_vs_lr": _sig(_slope(lrs, _median(d_k[:, j])), 3),
        "noise_part_slope_vs_lr": _sig(_slope(lrs, noise_part[:, j]), 3) if b < n else None,
        "measured_over_predicted": _sig(_num(ratio[i_lr, j]), 3),
        "measured_over_predicted_smallest_lr": _sig(_num(ratio[i_small, j]), 3),
        "diverged": int(np.count_nonzero(arrays["sgd_diverged"][i, :, j])),
    } for j, b in enumerate(study.batch_sizes)]
    f_b = (n - sizes) / (sizes * max(n - 1, 1))
    return {
        "noise_var": study.noise_vars[i],
        "by_batch": rows,
        "noise_part_slope_vs_inverse_batch": _sig(_slope(1.0 / sizes[partial], noise_part[i_lr, partial]), 3),
        "noise_part_slope_vs_f_B": _sig(_slope(f_b[partial], noise_part[i_lr, partial]), 3),
    }


def chosen_lr(study: Study, arrays: dict[str, np.ndarray]) -> float:
    """plot.lr if given, else the largest lr at which no SGD run diverged (the largest lr if all did)."""
    if study.plot_lr is not None:
        return study.plot_lr
    stable = ~arrays["sgd_diverged"].any(axis=(0, 2, 3))  # (L,)
    lrs = np.asarray(study.lrs)
    return float(lrs[stable].max() if stable.any() else lrs.max())


def _lr_index(study: Study) -> int:
    return int(np.flatnonzero(np.asarray(study.lrs) == study.plot_lr)[0])


def _at_half(study: Study, values: np.ndarray) -> np.ndarray:
    """values (..., T) at the recorded step closest to steps / 2."""
    steps = record_steps(study.steps, study.record)
    return values[..., int(np.argmin(np.abs(steps - study.steps / 2)))]


# ---------------------------------------------------------------- figures
#
# One visual language with the other figure kinds (phasediag.plots.base): the batch size B is an ordered
# quantity, drawn in base.levels greys (darkest: B = 1, the noisiest) with one marker each, so that curves that
# coincide (no label noise: every B on top of GD) stay apart; the exact references in colours of their own
# (population GD blue, gradient flow vermillion dashed; these figures show no phases); the leading-order
# prediction dotted in its curve's grey. Labels in docs/theory.md's notation, each through the run's
# plot.labels (names: step, lr, batch_size, noise_var, decay, misalignment, noise_part) and titles through
# plot.title (names: drift_vs_step, drift_vs_lr for the figure's title; noise_var for the panels' titles).
# Legends are figure legends beside (below, on a narrow figure) the axes; layout by base.fit.

_BAND_ALPHA = 0.1
_MARKS = 9  # markers per curve against the step (every record would bury the lines)
_GD_COLOUR, _FLOW_COLOUR = "#0072B2", "#D55E00"  # base.CURVE_COLOURS[0], [1]
_PREDICTION = ":"


def _options(study: Study):
    """The figure options being drawn with (base.render), else those of the study's config (a direct call)."""
    from phasediag.plots.base import current_options

    return current_options({"config": study.resolved})


def _panel_title(options, default: str | None, *names: str) -> str | None:
    """A panel's title: the user's when a plot.title mapping names one of `names`, else `default` (a plain
    plot.title, or null, is the figure's title)."""
    from collections.abc import Mapping

    return options.title_of(default, *names) if isinstance(options.title, Mapping) else default


def _batch_styles(study: Study) -> tuple[list[tuple[str, str]], object]:
    """(colour, marker) per batch size, and a ScalarMappable for a colour bar when there are more batch sizes
    than distinguishable levels (None otherwise)."""
    from phasediag.plots.base import MARKERS, MAX_LEVELS, levels

    n = len(study.batch_sizes)
    markers = [MARKERS[j % len(MARKERS)] for j in range(n)]
    if n <= MAX_LEVELS:
        return list(zip(levels(n)[::-1], markers)), None
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    norm = LogNorm(min(study.batch_sizes), max(study.batch_sizes))
    cmap = colormaps["viridis"]
    colours = [cmap(0.9 * float(norm(b))) for b in study.batch_sizes]
    return list(zip(colours, markers)), ScalarMappable(norm=norm, cmap=cmap)


def _batch_text(study: Study, b: int, short: bool = False) -> str:
    if b != study.samples:
        return f"$B = {b}$"
    return f"$B = {b} = n$" + ("" if short else " (full batch)")


def _noise_text(value: float, short: bool = False) -> str:
    """A row's label-noise level (`short`: the symbol and value only, for a narrow figure)."""
    from phasediag.plots.notation import SYMBOLS, number_tex

    symbol = SYMBOLS["noise_var"]
    if short:
        return f"${symbol} = {number_tex(value)}$"
    return f"label noise ${symbol} = {number_tex(value)}$" if value > 0 else f"no label noise (${symbol} = 0$)"


def _curve(options) -> dict:
    """Marker size and line width of the SGD curves: smaller on a narrow figure."""
    return {"markersize": 2.6, "linewidth": 1.0} if options.narrow else {"markersize": 3.5, "linewidth": 1.3}


def _band(ax: Axes, x: np.ndarray, values: np.ndarray, colour, label: str | None = None, **style) -> None:
    """values (len(x), seeds): the median over seeds as a line, the 25-75% range as a band (values <= 0 and
    NaN are left out: the axes are logarithmic)."""
    med = _median(values)
    lo, hi = _quantiles(values)
    keep = np.isfinite(med) & (med > 0) & (x > 0)
    ax.plot(x[keep], med[keep], color=colour, label=label, **style)
    band = keep & np.isfinite(lo) & np.isfinite(hi) & (lo > 0)
    if np.count_nonzero(band) > 1:
        ax.fill_between(x[band], lo[band], hi[band], color=colour, alpha=_BAND_ALPHA, linewidth=0)


def _marked(j: int, n: int, points: int) -> dict:
    """Line style of the j-th of n ordered curves of `points` points: about _MARKS markers, each curve's
    shifted so that coinciding curves show all their markers."""
    every = max(1, points // _MARKS)
    return {"markevery": (int(round(j * every / max(n, 1))) % every, every)}


def _reference_handles(options, gd_slopes: list[float | None] | None = None,
                       prediction: str = "leading-order prediction") -> list:
    from matplotlib.lines import Line2D

    gd = "GD, population" if options.narrow else "GD, population (exact)"
    flow = "gradient flow ($D = 0$)" if options.narrow else "gradient flow (exact, $D = 0$)"
    return [Line2D([], [], color=_GD_COLOUR, linewidth=2.0, label=gd + _slopes_text(options, gd_slopes)),
            Line2D([], [], color=_FLOW_COLOUR, linestyle="--", linewidth=1.5, label=flow),
            Line2D([], [], color="#555555", linestyle=_PREDICTION, linewidth=1.2, label=prediction)]


def _slopes_text(options, slopes: list[float | None] | None) -> str:
    """': slope 2.10, 0.93' (': 2.10, 0.93' on a narrow figure): one per noise level; '' without slopes."""
    if slopes is None:
        return ""
    return (": " if options.narrow else ": slope ") + ", ".join("n/a" if v is None else f"{v:.2f}" for v in slopes)


def _batch_handles(study: Study, styles, options, slopes: dict[int, list[float | None]] | None = None) -> list:
    from matplotlib.lines import Line2D

    handles = []
    for j, (b, (colour, marker)) in enumerate(zip(study.batch_sizes, styles)):
        text = _batch_text(study, b, options.narrow) + _slopes_text(options, None if slopes is None else slopes[j])
        handles.append(Line2D([], [], color=colour, marker=marker, label=text, **_curve(options)))
    return handles


def _finish(fig: Figure, axes: np.ndarray, handles: list, options, mappable, title: str | None,
            legend_title: str | None = None) -> None:
    """The legend (or a colour bar for many batch sizes), the title and the layout."""
    from phasediag.plots.base import close_columns, colorbar, fit, keep_inside, legend, wrapped_title

    if mappable is not None:
        colorbar(axes.flat[min(axes.shape[1], axes.size) - 1], mappable,
                 options.label("batch_size", "batch size $B$"))
        handles = [h for h in handles if not h.get_label().startswith("$B =")]
    item = legend(fig, handles, below=options.narrow, ncols=2 if options.narrow else 1, title=legend_title)
    if title:  # wrapped to the width left of a legend at the right (the title is centred over the axes)
        beside = 0.0 if item is None or options.narrow else item.get_window_extent(fig._get_renderer()).width
        fig.suptitle(wrapped_title(fig, title, fig.get_size_inches()[0] - beside / fig.dpi - 0.9))
    fit(fig)
    keep_inside(fig)
    close_columns(fig)


def _shared_xlabel(fig: Figure, text: str) -> None:
    """One x label under the grid (every panel shares the x quantity; base.fit places it), at the axes'
    label size."""
    import matplotlib

    fig.supxlabel(text, fontsize=matplotlib.rcParams["axes.labelsize"])


def _setting(study: Study) -> str:
    """The point of the linear model and the data, in the notation of docs/theory.md section 1."""
    from phasediag.plots.notation import number_tex as num

    var = (rf"$\sigma_u^2 = \sigma_w^2 = {num(study.init_var_u)}$" if study.init_var_u == study.init_var_w else
           rf"$\sigma_u^2 = {num(study.init_var_u)}$, $\sigma_w^2 = {num(study.init_var_w)}$")
    ratio = "" if study.lr_ratio == 1 else rf", $\eta_u/\eta_w = {num(study.lr_ratio)}$"
    return (rf"$d = {num(study.width)}$, $\kappa = {num(study.output_scale)}$, {var}{ratio}, "
            rf"$a = {num(study.input_var)}$, $m^* = {num(study.teacher)}$, $n = {num(study.samples)}$; "
            f"median and 25-75% band over {study.seeds} seeds")


def _axis(study: Study, options, name: str) -> str:
    from phasediag.plots.notation import axis_label

    return options.label(name, axis_label(study.resolved, name))


def drift_vs_step_figure(study: Study, arrays: dict[str, np.ndarray]) -> Figure:
    """Per noise level (rows): D_t = -ln|Delta_t/Delta_0| and 1 - |zeta_t| against the step at plot.lr, for
    population GD (exact), gradient flow and SGD at each batch size (median and 25-75% band over seeds),
    with the leading-order prediction of each SGD curve (dotted). `arrays`: the coordinates and data variables
    of results.npz. Nothing is saved."""
    from phasediag.plots.base import new_figure
    from phasediag.plots.notation import number_tex

    options = _options(study)
    study = replace(study, plot_lr=chosen_lr(study, arrays))
    rows = len(study.noise_vars)
    fig = new_figure(7.0, 7.0 * rows, layout=None) if options.narrow else \
        new_figure(10.0, 3.3 * rows + 0.9, layout=None)
    axes = np.atleast_2d(fig.subplots(rows, 2, squeeze=False, sharex=True))
    i_lr = _lr_index(study)
    t = arrays["step"].astype(float)
    per_step = {k: np.swapaxes(arrays[k], -1, -2) for k in ("sgd_decay", "sgd_misalignment", "gd_decay")}
    per_step["gd_mis"] = np.swapaxes(misalignment(arrays["gd_alignment"]), -1, -2)
    per_step["flow_mis"] = np.swapaxes(misalignment(arrays["flow_alignment"]), -1, -2)
    styles, mappable = _batch_styles(study)
    n = len(study.batch_sizes)
    for i, (left, right) in enumerate(axes):
        _band(left, t, per_step["gd_decay"][i_lr], _GD_COLOUR, linewidth=2.0, zorder=1.5)
        _band(right, t, per_step["gd_mis"][i_lr], _GD_COLOUR, linewidth=2.0, zorder=1.5)
        _band(right, t, per_step["flow_mis"][i_lr], _FLOW_COLOUR, linestyle="--", linewidth=1.5, zorder=1.6)
        for j, (colour, marker) in enumerate(styles):
            line = dict(marker=marker, zorder=2 + j / n, **_curve(options), **_marked(j, n, t.size))
            _band(left, t, per_step["sgd_decay"][i, i_lr, j], colour, **line)
            pred = _mean(arrays["predicted_decay"][i, i_lr, j], axis=0)
            ok = np.isfinite(pred) & (pred > 0) & (t > 0)
            left.plot(t[ok], pred[ok], color=colour, linestyle=_PREDICTION, linewidth=1.1, zorder=2 + j / n)
            _band(right, t, per_step["sgd_misalignment"][i, i_lr, j], colour, **line)
        title = _panel_title(options, _noise_text(study.noise_vars[i], options.narrow), "noise_var")
        for ax in (left, right):
            _log_log(ax, options)
            ax.set_title(title)
            ax.grid(True, which="major", alpha=0.3)
        left.set_ylabel(options.label("decay", r"$D_t = -\ln|\Delta_t/\Delta_0|$"))
        right.set_ylabel(options.label("misalignment", r"$1 - |\zeta_t|$"))
    _shared_xlabel(fig, options.label("step", "step $t$"))
    handles = _batch_handles(study, styles, options) + _reference_handles(options)
    default = f"Imbalance decay and misalignment under GD and SGD at $\\eta = {number_tex(study.plot_lr)}$"
    default += "" if options.narrow else "\n" + _setting(study)  # (a column figure's caption says it)
    _finish(fig, axes, handles, options, mappable,
            options.title_of(default, "drift_vs_step", f"{study.name}__drift_vs_step"), "SGD, batch size")
    return fig


def drift_vs_lr_figure(study: Study, arrays: dict[str, np.ndarray]) -> Figure:
    """Per noise level, at the last step K (median and 25-75% range over seeds, log-log), against the
    learning rate: D_K for each batch size and population GD (least-squares slopes against lr in the legend);
    the noise part D_K(B) - D_K(full batch on the same sample) for each B < n, with the leading-order
    prediction (dotted: proportional to f_B = (n - B)/(B (n - 1))); and 1 - |zeta_K|. A row per noise level
    (a column on a narrow figure). Nothing is saved."""
    from phasediag.plots.base import new_figure
    from phasediag.plots.notation import number_tex

    options = _options(study)
    levels_n = len(study.noise_vars)
    if options.narrow:  # quantities down, noise levels across: a column-wide figure stays readable
        fig = new_figure(7.0, 9.0, layout=None)
        grid = np.atleast_2d(fig.subplots(3, levels_n, squeeze=False, sharex=True))
        panels = grid.T
    else:
        fig = new_figure(13.0, 3.4 * levels_n + 0.9, layout=None)
        grid = np.atleast_2d(fig.subplots(levels_n, 3, squeeze=False, sharex=True))
        panels = grid
    lrs = np.asarray(study.lrs)
    styles, mappable = _batch_styles(study)
    n = len(study.batch_sizes)
    sizes = np.asarray(study.batch_sizes)
    slopes = {j: [] for j in range(n)}
    gd_slopes = []
    x_label = _axis(study, options, "lr")
    for i, (left, middle, right) in enumerate(panels):
        gd = arrays["gd_decay"][:, :, -1]
        gd_slopes.append(_slope(lrs, _median(gd)))
        _band(left, lrs, gd, _GD_COLOUR, linewidth=2.0, zorder=1.5)
        _band(right, lrs, misalignment(arrays["gd_alignment"][:, :, -1]), _GD_COLOUR, linewidth=2.0, zorder=1.5)
        _band(right, lrs, misalignment(arrays["flow_alignment"][:, :, -1]), _FLOW_COLOUR, linestyle="--",
              linewidth=1.5, zorder=1.6)
        sample = arrays["sample_decay"][i, :, :, -1]  # (L, S): full batch on the same sample
        for j, (colour, marker) in enumerate(styles):
            line = dict(marker=marker, zorder=2 + j / n, **_curve(options))
            d_k = arrays["sgd_decay"][i, :, j, :, -1]
            slopes[j].append(_slope(lrs, _median(d_k)))
            _band(left, lrs, d_k, colour, **line)
            _band(right, lrs, arrays["sgd_misalignment"][i, :, j, :, -1], colour, **line)
            if sizes[j] < study.samples:
                _band(middle, lrs, d_k - sample, colour, **line)
                mean = _mean(arrays["predicted_decay"][i, :, j, :, -1] - sample)
                ok = np.isfinite(mean) & (mean > 0)
                middle.plot(lrs[ok], mean[ok], color=colour, linestyle=_PREDICTION, linewidth=1.1, zorder=2 + j / n)
        noise = _noise_text(study.noise_vars[i], options.narrow)
        if not options.narrow or i == 0:  # (narrow: the rows share a quantity, labelled once at the left)
            left.set_ylabel(options.label("decay", "$D_K$" if options.narrow else r"$D_K = -\ln|\Delta_K/\Delta_0|$"))
            middle.set_ylabel(options.label("noise_part", "$D_K(B) - D_K(n)$" if options.narrow else
                                            r"$D_K(B) - D_K(n)$, $B < n$"))
            right.set_ylabel(options.label("misalignment", r"$1 - |\zeta_K|$"))
        for ax in (left, middle, right):
            _log_log(ax, options)
            ax.grid(True, which="major", alpha=0.3)
            if not options.narrow or ax is left:
                ax.set_title(_panel_title(options, noise, "noise_var"))
    _shared_xlabel(fig, x_label)
    handles = _batch_handles(study, styles, options, slopes)  # slopes per noise level (rows; narrow: columns)
    handles += _reference_handles(options, gd_slopes, "prediction (noise part)")
    order = "" if levels_n == 1 else " by column" if options.narrow else " by row"
    legend_title = f"slope of $D_K$ against $\\eta${order}"
    default = f"Imbalance decay, its noise part and misalignment at the last step $K = {number_tex(study.steps)}$"
    default += "" if options.narrow else "\n" + _setting(study)
    _finish(fig, grid, handles, options, mappable,
            options.title_of(default, "drift_vs_lr", f"{study.name}__drift_vs_lr"), legend_title)
    return fig


def _log_log(ax: Axes, options) -> None:
    """Log scales on both axes (over many decades: at most ~6 labelled powers of ten, no minor ticks), or a
    note when nothing positive was drawn (e.g. 1 - |zeta| = 0 at d = 1)."""
    from phasediag.plots.base import readable_log_ticks
    drawn = [(np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float))
             for line in ax.get_lines()]
    if not any(np.any((x > 0) & np.isfinite(y) & (y > 0)) for x, y in drawn if y.size):
        ax.text(0.5, 0.5, "nothing positive to draw on a log scale\n(values 0, undefined or diverged)",
                transform=ax.transAxes, ha="center", va="center", fontsize="small", color="#555555")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ax.set_xscale("log")
    ax.set_yscale("log")
    readable_log_ticks(ax, 3 if options.narrow else 7)


# ---------------------------------------------------------------- the job kind (phasediag.jobs)

#: the coordinates of results.npz, in the order they are written (before the data variables)
COORDS = ("noise_var", "lr", "batch_size", "seed", "step")
_SGD = ("noise_var", "lr", "batch_size", "seed", "step")
#: data variable -> its dimensions (every array of results.npz that is not a coordinate)
DIMS: dict[str, tuple[str, ...]] = {
    **{f"sgd_{f}": _SGD for f in _FIELDS},
    "sgd_imbalance_decay": _SGD, "sgd_gram_decay": _SGD, "sgd_decay": _SGD, "sgd_misalignment": _SGD,
    "sgd_diverged": ("noise_var", "lr", "batch_size", "seed"),
    "U0": ("seed",), "W0": ("seed",), "V0": ("seed",),
    **{k: ("lr", "seed", "step") for k in ("gd_decay", "gd_alignment", "gd_loss", "flow_alignment", "flow_loss")},
    "sample_decay": ("noise_var", "lr", "seed", "step"), "noise_budget": ("noise_var", "lr", "seed", "step"),
    "predicted_decay": _SGD,
}
#: what plot.labels may name: the coordinates, the data variables, and the quantities on the figures' axes:
#: decay (D_t, D_K), misalignment (1 - |zeta|), noise_part (D_K(B) - D_K(full batch), against batch_size)
PLOT_LABELS = COORDS + tuple(DIMS) + ("decay", "misalignment", "noise_part")
#: what a plot.title mapping may name beyond PLOT_LABELS: the figures
FIGURE_NAMES = ("drift_vs_step", "drift_vs_lr")
#: export: the CSV table of each set of dimensions other than the SGD records' (<name>_<table>.csv)
TABLES = {"by_noise_var_lr_batch_size_seed": "runs", "by_seed": "init", "by_lr_seed_step": "population",
          "by_noise_var_lr_seed_step": "sample"}
NORMALIZATION = ("D_t = -ln|Delta_t / Delta_0| = -ln|prod_k (1 - c^2 r_k^2)| (also from G: -ln(G_t/G_0)/2); "
                 "NaN where Delta_t is not resolved in float64")


def read(root: Located, source: str, options) -> Study:
    """The validated study (every bad value, naming its key and line, and the work cap; no I/O)."""
    return parse_study(root)


def units(study: Study, options) -> int:
    """Work units of the progress bar: the SGD runs."""
    return study.runs


def execute(study: Study, options, checkpoint: Path | None) -> Result:
    """Train every SGD run (options.workers, options.progress) and compute the exact references and the
    findings (`checkpoint` is unused: a study is neither sharded nor resumed)."""
    started = time.perf_counter()
    arrays = simulate_study(study, workers=options.workers, progress=options.progress)
    trained = time.perf_counter()
    study = replace(study, plot_lr=chosen_lr(study, arrays))
    found = findings(study, arrays)
    coords = {name: arrays.pop(name) for name in COORDS}
    meta = {
        "kind": "sgd_drift", "name": study.name, "coords": list(COORDS),
        "dims": {name: list(DIMS[name]) for name in arrays},
        "timing": {"train_s": round(trained - started, 6)},
        "seed": study.seed, "runs": study.runs, "shape": list(study.shape), "workers": options.workers,
        "plot_lr": study.plot_lr, "normalization": NORMALIZATION, "findings": found,
    }
    return Result(coords=coords, arrays=arrays, meta=meta)


def load_data(directory: Path, meta: dict) -> Result:
    """results.npz of a run directory; one written before sgd_drift was a job kind (no coords/dims in its
    meta.json) gets them from COORDS and DIMS."""
    if not meta.get("coords") or "dims" not in meta:
        meta = {**meta, "kind": "sgd_drift", "coords": list(COORDS),
                "dims": {name: list(dims) for name, dims in DIMS.items()}}
    return store.load(directory, meta=meta)



def study_of_result(result: Result) -> Study:
    """The study of a result (e.g. loaded from a run directory), rebuilt from its stored config, with the
    step figure's lr as chosen after training."""
    config = {k: v for k, v in result.meta["config"].items() if k != "lr_values"}  # lr_values: derived
    study = parse_study(located(config))
    return replace(study, plot_lr=chosen_lr(study, {"sgd_diverged": result.arrays["sgd_diverged"]}))


def figures(result: Result):
    """<name>__drift_vs_step and <name>__drift_vs_lr, each drawn from the result alone."""
    study = study_of_result(result)
    arrays = {**result.coords, **result.arrays}
    return [(f"{study.name}__drift_vs_step", partial(drift_vs_step_figure, study, arrays)),
            (f"{study.name}__drift_vs_lr", partial(drift_vs_lr_figure, study, arrays))]


def summarize(result: Result) -> dict:
    """The grid of runs, the elapsed time and the findings (JSON-ready)."""
    study = study_of_result(result)
    timing = result.meta.get("timing", {})
    return {"runs": study.runs, "shape": list(study.shape), "steps": study.steps, "width": study.width,
            "elapsed_s": timing.get("total_s", timing.get("train_s")), "findings": result.meta["findings"]}


def _fmt(value: float | None, digits: int = 3) -> str:
    """A number for the human summary ("n/a" for a missing one)."""
    return "n/a" if value is None else f"{value:.{digits}g}"


def text(summary: dict) -> str:
    """The human summary: the identity check, the references and one table per noise level."""
    found = summary["findings"]
    n, l, b, s = summary["shape"]
    elapsed = summary.get("elapsed_s")
    lines = [
        f"{summary['name']}: {summary['runs']:,} SGD runs ({n} noise level(s) x {l} lr x {b} batch sizes x {s} "
        f"seeds, {summary['steps']:,} steps, width {summary['width']:,})"
        + ("" if elapsed is None else f" in {elapsed:.1f} s")
        + ("" if summary.get("out") is None else f" -> {summary['out']}"),
        f"identity Delta_t/Delta_0 = sqrt(G_t/G_0) = prod_k (1 - c^2 r_k^2): the two log-decays differ by at most "
        f"{_fmt(found['identity_max_abs_diff'])}; records with Delta below float64 resolution (D from G): "
        f"{found['records_from_gram']}; diverged runs: {found['diverged_runs']}",
        f"lr = {found['lr']:.3g}, step K = {found['steps']:,}; D = -ln|Delta_K/Delta_0|: flow 0 (exact), "
        f"population GD {_fmt(found['gd_decay'])} (slope vs lr {_fmt(found['gd_slope_vs_lr'])}); "
        f"1 - |zeta_K|: flow {_fmt(found['flow_misalignment'])}, GD {_fmt(found['gd_misalignment'])}",
    ]
    header = (f"{'B':>8} {'D_K':>10} {'noise part':>11} {'2nd-half growth':>16} {'slope vs lr':>12} "
              f"{'noise slope':>12} {'1-|zeta_K|':>11} {'meas/pred':>10} {'(smallest lr)':>14}")
    for block in found["by_noise"]:
        lines += [f"noise_var = {block['noise_var']:g}:", header]
        for r in block["by_batch"]:
            noise = "~0" if r["noise_part"] is not None and abs(r["noise_part"]) < 1e-12 else _fmt(r["noise_part"])
            lines.append(f"{r['batch_size']:>8} {_fmt(r['decay']):>10} {noise:>11} "
                         f"{_fmt(r['growth_last_half']):>16} {_fmt(r['slope_vs_lr']):>12} "
                         f"{_fmt(r['noise_part_slope_vs_lr']):>12} {_fmt(r['misalignment']):>11} "
                         f"{_fmt(r['measured_over_predicted']):>10} "
                         f"{_fmt(r['measured_over_predicted_smallest_lr']):>14}")
        lines.append(f"  noise part against 1/B: slope {_fmt(block['noise_part_slope_vs_inverse_batch'])} "
                     f"(against f_B = (n - B)/(B (n - 1)): {_fmt(block['noise_part_slope_vs_f_B'])})")
    return "\n".join(lines)
