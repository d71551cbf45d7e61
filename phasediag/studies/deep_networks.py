"""Job kind `deep` (issue 15; the paper's Figs. 2 and 3 and its cross-entropy appendix): fully connected networks of
L layers on real data across init scales. ``phasediag experiment CONFIG`` with ``experiment: deep``.

The network, its gradients, NTK and adjacent-layer alignments are in :mod:`phasediag.training.deep`. This module
reads the config, trains every point of the grid

    activation x loss x init scale s x seed

on a dataset that ships inside a package (scikit-learn's 8 x 8 digits, or MNIST-1D generated locally by the
`mnist1d` package; both behind the `[experiments]` extra), and stores the records: train / test loss and error,
the NTK change on a probe batch, the alignment of every pair of adjacent layers, the layer norms. Each run gets a
mechanism label by docs/theory.md section 6's rules: ntk_change (Frobenius) against classify.ntk_threshold, and the
alignment amounts of the pair of layers that moved most -- gain max_l (A_l(T) - min_t A_l), disalignment
max_l (A_l(0) - min_t A_l).

Choices (stated in meta.json too):
- W_l ~ N(0, s^2 sigma_l^2 / n_{l-1}) with the init scale s multiplying every layer's standard deviation;
- the rates eta_l, times a common factor min(1, cap / lambda_0) per run (lambda_0 = lambda_max(K_0)/P, the initial
  kernel step on the probe; train.initial_ntk_cap, default 1), so that large-init runs stay stable; a common factor
  only rescales gradient-flow time;
- common random numbers: the standard-normal draws behind W_l depend on (seed, seed index) only, so every init
  scale, activation and loss starts from the same draws; the split, the probe and minibatch orders likewise;
- BLAS single-threaded (engine.workers.single_threaded_blas): bit-identical results for any --workers.
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
from phasediag.config.reader import (FIGURE_KEYS, ConfigError, Located, bounded_int, check_name, fail,
                                     figure_formats, figure_options, located, mapping, number, ruled, string)
from phasediag.config.sweep import swept_values
from phasediag.engine.workers import ordered_map, single_threaded_blas
from phasediag.errors import FieldError
from phasediag.results.store import Result
from phasediag.training import activations as acts
from phasediag.training import deep
from phasediag.training import nonlinear as nl

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = ["Study", "read", "units", "execute", "figures", "summarize", "text", "load_dataset", "run_point",
           "findings", "vs_init_scale_figure", "COORDS", "DIMS", "TABLES", "DATASETS"]

TOP_KEYS = ("name", "description", "experiment", "dataset", "model", "sweep", "train", "classify", "seeds", "seed",
            "plot")
DATASET_KEYS = ("name", "test_fraction", "samples", "standardize")
MODEL_KEYS = ("depth", "width", "activations", "slope", "losses", "output_scale", "lr", "init_var")
TRAIN_KEYS = ("steps", "record", "batch_size", "probe_size", "initial_ntk_cap")
PLOT_KEYS = ("formats", *FIGURE_KEYS)
DATASETS = ("digits", "mnist1d")
MAX_DEPTH, MAX_WIDTH, MAX_STEPS = 6, 4096, 100_000
MAX_WORK = 2e13  # runs x steps x n_train x (sum of layer sizes): ~an hour of one core
DIVERGED_CODE = -1
CLASSES = 10  # both datasets


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    dataset: str
    test_fraction: float
    samples: int
    standardize: bool
    depth: int
    widths: tuple[int, ...]  # hidden widths n_1 .. n_{L-1}
    activations: tuple[str, ...]
    slope: float
    losses: tuple[str, ...]
    output_scale: float
    lrs: tuple[float, ...]
    init_vars: tuple[float, ...]
    init_scales: tuple[float, ...]
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
    init_scale_spec: object = None
    figure: dict = dataclass_field(default_factory=dict, compare=False)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.activations), len(self.losses), len(self.init_scales), self.seeds

    @property
    def runs(self) -> int:
        return int(np.prod(self.shape))

    @property
    def resolved(self) -> dict:
        return {
            "name": self.name, "description": self.description, "experiment": "deep",
            "dataset": {"name": self.dataset, "test_fraction": self.test_fraction, "samples": self.samples,
                        "standardize": self.standardize},
            "model": {"depth": self.depth, "width": list(self.widths), "activations": list(self.activations),
                      "slope": self.slope, "losses": list(self.losses), "output_scale": self.output_scale,
                      "lr": list(self.lrs), "init_var": list(self.init_vars)},
            "sweep": {"init_scale": self.init_scale_spec if self.init_scale_spec is not None else list(self.init_scales)},
            "init_scale_values": list(self.init_scales),
            "train": {"steps": self.steps, "record": self.record, "batch_size": self.batch_size,
                      "probe_size": self.probe_size, "initial_ntk_cap": self.initial_ntk_cap},
            "classify": {"ntk_threshold": self.ntk_threshold, "alignment_threshold": self.alignment_threshold},
            "seeds": self.seeds, "seed": self.seed, "plot": {"formats": list(self.formats), **self.figure},
        }


def _per_layer(item: Located, depth: int, high: float) -> tuple[float, ...]:
    """A number in (0, high] for every layer, or a list of `depth` of them."""
    if isinstance(item.value, list):
        if len(item.value) != depth:
            raise fail(item.path, item.line, f"must be one number or a list of {depth} (one per layer), "
                                             f"got {len(item.value)}")
        entries = item.value
    else:
        entries = [item] * depth
    values = []
    for v in entries:
        x = number(v, positive=True)
        if x > high:
            raise fail(v.path, v.line, f"must be at most {high:g} (the supported range), got {x:g}")
        values.append(x)
    return tuple(values)


def _output_scale(model: dict) -> float:
    if "output_scale" not in model:
        return 1.0
    kappa = number(model["output_scale"], positive=True)
    if not 1e-8 <= kappa <= 1e8:
        raise fail(model["output_scale"].path, model["output_scale"].line,
                   f"must be in [1e-8, 1e8] (the supported range), got {kappa:g}")
    return kappa


def _names(item: Located, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not isinstance(item.value, list) or not item.value:
        raise fail(item.path, item.line, f"must be a non-empty list of {what} ({', '.join(allowed)})")
    names = []
    for v in item.value:
        name = string(v)
        if name not in allowed:
            raise fail(v.path, v.line, f"unknown {what.removesuffix('es') if what == 'losses' else what[:-1]} "
                                       f"{name!r}; allowed: {', '.join(allowed)}")
        names.append(name)
    if len(set(names)) != len(names):
        raise fail(item.path, item.line, f"{what} must be distinct")
    return tuple(names)


def read(root: Located, source: str, options) -> Study:
    """The validated study (every bad value named by its key path and line, the work cap); no I/O."""
    top = mapping(root, TOP_KEYS, required=("name", "experiment", "dataset", "model", "sweep", "train"))
    if string(top["experiment"]) != "deep":
        raise fail("experiment", top["experiment"].line, f"this study is deep, got {top['experiment'].value!r}")
    data = mapping(top["dataset"], DATASET_KEYS, required=("name",))
    dataset = string(data["name"])
    if dataset not in DATASETS:
        raise fail(data["name"].path, data["name"].line, f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    test_fraction = number(data["test_fraction"], positive=True) if "test_fraction" in data else 0.25
    if not test_fraction < 1:
        raise fail(data["test_fraction"].path, data["test_fraction"].line, "must be in (0, 1)")
    samples = bounded_int(data["samples"], low=100, high=100_000) if "samples" in data else 4000
    model = mapping(top["model"], MODEL_KEYS, required=("depth", "width", "activations"))
    depth = bounded_int(model["depth"], low=2, high=MAX_DEPTH)
    width_item = model["width"]
    if isinstance(width_item.value, list):
        if len(width_item.value) != depth - 1:
            raise fail(width_item.path, width_item.line, f"must be one width or a list of {depth - 1} (the hidden "
                                                         f"layers of a depth-{depth} network)")
        widths = tuple(bounded_int(v, low=CLASSES + 1, high=MAX_WIDTH) for v in width_item.value)
    else:  # wider than the k = 10 classes: else every adjacent-layer alignment is 1 (its projection is the identity)
        widths = (bounded_int(width_item, low=CLASSES + 1, high=MAX_WIDTH),) * (depth - 1)
    train = mapping(top["train"], TRAIN_KEYS, required=("steps",))
    sweep = mapping(top["sweep"], ("init_scale",), required=("init_scale",))
    scales = swept_values(sweep["init_scale"], low=1e-4, high=1e4)
    classify = mapping(top["classify"], ("ntk_threshold", "alignment_threshold")) if "classify" in top else {}
    plot = mapping(top["plot"], PLOT_KEYS) if "plot" in top else {}
    cap = train.get("initial_ntk_cap")
    study = Study(
        name=check_name(top["name"]), description=string(top["description"]) if "description" in top else "",
        dataset=dataset, test_fraction=test_fraction, samples=samples,
        standardize=_flag(data["standardize"]) if "standardize" in data else True,
        depth=depth, widths=widths,
        activations=_names(model["activations"], rules.ACTIVATIONS, "activations"),
        slope=ruled(model["slope"], rules.slope) if "slope" in model else rules.DEFAULT_SLOPE,
        losses=_names(model["losses"], deep.LOSSES, "losses") if "losses" in model else ("square",),
        output_scale=_output_scale(model),
        lrs=_per_layer(model["lr"], depth, 1e6) if "lr" in model else (0.1,) * depth,
        init_vars=_per_layer(model["init_var"], depth, 1e4) if "init_var" in model else (1.0,) * depth,
        init_scales=tuple(float(s) for s in scales), steps=bounded_int(train["steps"], low=1, high=MAX_STEPS),
        record=bounded_int(train["record"], low=2, high=500) if "record" in train else 20,
        batch_size=(None if "batch_size" not in train or train["batch_size"].value is None
                    else bounded_int(train["batch_size"], low=1, high=100_000)),
        probe_size=bounded_int(train["probe_size"], low=1, high=256) if "probe_size" in train else 16,
        initial_ntk_cap=None if cap is not None and cap.value is None else (number(cap, positive=True) if cap else 1.0),
        ntk_threshold=ruled(classify["ntk_threshold"], rules.ntk_threshold) if "ntk_threshold" in classify else 0.1,
        alignment_threshold=(ruled(classify["alignment_threshold"], rules.alignment_threshold)
                             if "alignment_threshold" in classify else 0.1),
        seeds=bounded_int(top["seeds"], low=1, high=100) if "seeds" in top else 1,
        seed=ruled(top["seed"], rules.seed) if "seed" in top else 0, formats=figure_formats(plot),
        init_scale_spec=_plain(sweep["init_scale"]),
        figure=figure_options(plot, PLOT_LABELS, root.base_dir, FIGURE_NAMES))
    n_train = round((1797 if dataset == "digits" else samples) * (1 - test_fraction))
    if study.batch_size is not None and study.batch_size > n_train:
        item = train["batch_size"]
        raise fail(item.path, item.line, f"must be at most the {n_train:,} training examples (null: full batch), "
                                         f"got {study.batch_size:,}")
    rows = n_train if study.batch_size is None else study.batch_size
    try:
        rules.network_size(max(widths), rows)
    except FieldError as exc:
        raise fail(width_item.path, width_item.line, exc.message) from None
    sizes = (64 if dataset == "digits" else 40, *widths, 10)
    work = study.runs * study.steps * 1400 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    if work > MAX_WORK:
        raise fail("train.steps", train["steps"].line, f"{study.runs} runs x {study.steps:,} steps on this network "
                                                        f"is {work:.3g} multiply-adds, above the cap of {MAX_WORK:.0e} "
                                                        "(about an hour of one core)")
    return study


def _flag(item: Located) -> bool:
    if not isinstance(item.value, bool):
        raise fail(item.path, item.line, f"must be true or false, got {item.value!r}")
    return item.value


def _plain(item: Located):
    from phasediag.config.reader import plain

    return plain(item)


# ---------------------------------------------------------------- data and runs


def load_dataset(study: Study) -> tuple[nl.Dataset, np.ndarray]:
    """The split, standardized dataset (one-hot targets, centred) and the probe rows' indices (the seed's)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([study.seed, 0])))
    if study.dataset == "digits":
        try:
            X, labels = nl.load_digits_data()
        except ImportError as exc:
            raise ConfigError(f"dataset.name: {exc}") from None
    else:
        X, labels = _mnist1d(study.samples, study.seed)
    data = nl.split_dataset(X, labels, test_fraction=study.test_fraction, rng=rng, standardize=study.standardize,
                            center_targets=True, classes=10)
    probe = np.sort(rng.choice(data.X_train.shape[0], size=min(study.probe_size, data.X_train.shape[0]),
                               replace=False))
    return data, probe


def _mnist1d(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D (Greydanus 2020), generated on this machine by the `mnist1d` package from its built-in templates
    (no download): `samples` sequences of length 40, 10 classes."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ConfigError(f"dataset.name: mnist1d needs the mnist1d package: {nl.EXTRA_HINT}") from None
    args = get_dataset_args()
    args.num_samples, args.seed = samples, seed % 2**32
    made = make_dataset(args)  # (its own train/test split is joined again: the study splits like digits)
    X = np.concatenate([made["x"], made["x_test"]]).astype(np.float64)
    y = np.concatenate([made["y"], made["y_test"]]).astype(np.int64)
    return X, y


def _normals(study: Study, s: int, p: int) -> list[np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([study.seed, s, 1])))
    sizes = (p, *study.widths, 10)
    return [rng.standard_normal((sizes[l + 1], sizes[l])) for l in range(study.depth)]


def run_point(study: Study, data: nl.Dataset, probe: np.ndarray, index: tuple[int, int, int, int]) -> dict:
    """Train one run of the grid (activation, loss, init scale, seed indices)."""
    i_act, i_loss, i_scale, s = index
    layers = deep.init_layers(_normals(study, s, data.X_train.shape[1]), study.init_scales[i_scale], study.init_vars)
    act = acts.activation(study.activations[i_act], study.slope)
    net = deep.Network(act, study.output_scale, study.losses[i_loss], study.lrs)
    X_probe = data.X_train[probe]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):  # judged below, not warned
        K0 = deep.ntk_matrix(layers, X_probe, net)
        lam0 = float(np.linalg.eigvalsh(K0)[-1]) / X_probe.shape[0] if np.all(np.isfinite(K0)) else np.inf
    factor = 1.0 if study.initial_ntk_cap is None or not lam0 > study.initial_ntk_cap else study.initial_ntk_cap / lam0
    net = net._replace(lrs=tuple(factor * eta for eta in study.lrs))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([study.seed, s, 2])))
    steps = nl.record_steps(study.steps, study.record)
    with single_threaded_blas():
        record = deep.train(layers, data, net, steps=steps, X_probe=X_probe, batch_size=study.batch_size, rng=rng)
    return {"values": record.values, "diverged_step": record.diverged_step, "lr_factor": factor,
            "ntk_scale0": lam0 if np.isfinite(lam0) else -1.0}


def _task(args):
    study, data, probe, index = args
    return run_point(study, data, probe, index)


def _mechanism(values: dict, study: Study) -> int:
    """docs/theory.md section 6's label of one run's records (-1 if it diverged)."""
    A = values["alignment"]
    if not np.all(np.isfinite(values["ntk_change"])) or not np.all(np.isfinite(A)):
        return DIVERGED_CODE
    low = A.min(axis=1)
    op = core.OrderParameters(
        ntk_change=np.asarray(values["ntk_change"][-1]), alignment_init=np.asarray(0.0),
        alignment_final=np.asarray(0.0), alignment_gain=np.asarray(float(np.max(A[:, -1] - low))),
        disalignment=np.asarray(float(np.max(A[:, 0] - low))), not_converged=np.asarray(False))
    return int(core.phase_codes(op, np.asarray(False), study.ntk_threshold, study.alignment_threshold))


def simulate_study(study: Study, data: nl.Dataset, probe: np.ndarray, *, workers: int = 1,
                   progress: Callable[[int], None] | None = None) -> dict:
    steps = nl.record_steps(study.steps, study.record)
    shape = study.shape
    L = study.depth
    out = {f"traj_{f}": np.full(shape + (steps.size,), np.nan) for f in deep.RECORD_FIELDS[:5]}
    out["traj_alignment"] = np.full(shape + (L - 1, steps.size), np.nan)
    out["traj_norm"] = np.full(shape + (L, steps.size), np.nan)
    for key in ("lr_factor", "ntk_scale0"):
        out[key] = np.zeros(shape)
    out["mechanism"] = np.zeros(shape, dtype=np.int64)
    out["diverged_step"] = np.zeros(shape, dtype=np.int64)
    indices = list(np.ndindex(*shape))
    tasks = [(study, data, probe, index) for index in indices]
    for index, run in zip(indices, ordered_map(_task, tasks, workers, progress, chunksize=1)):
        for f, v in run["values"].items():
            out[f"traj_{f}"][index] = v
        out["lr_factor"][index], out["ntk_scale0"][index] = run["lr_factor"], run["ntk_scale0"]
        out["diverged_step"][index] = run["diverged_step"]
        out["mechanism"][index] = _mechanism(run["values"], study)
    return out


# ---------------------------------------------------------------- findings


def _sig(x, digits: int = 3) -> float | None:
    if x is None:
        return None
    x = float(x)
    return float(f"{x:.{digits}g}") if np.isfinite(x) else None


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation of the finite pairs (None below 3 pairs or for a constant series)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if np.count_nonzero(ok) < 3:
        return None
    rx, ry = (np.argsort(np.argsort(v[ok])).astype(float) for v in (x, y))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _median(values: np.ndarray) -> np.ndarray:
    """Median over the last axis (seeds) of the finite values; NaN where none (no warning)."""
    srt = np.sort(np.where(np.isfinite(values), values, np.inf), axis=-1)
    count = np.sum(np.isfinite(values), axis=-1)
    lo = np.take_along_axis(srt, np.maximum((count - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(srt, np.maximum(count // 2, 0)[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, 0.5 * (lo + hi), np.nan)


def findings(study: Study, arrays: dict) -> dict:
    """Per (activation, loss) across init scales (medians over seeds): final test error, NTK change, the adjacent-
    layer alignments at init and end, the disalignment amount, the norm growth ||W||_T / ||W||_0 (all layers), the
    mechanism per scale; the best scale; rank correlations of the test error with the init scale, the disalignment
    and the final total norm (JSON-ready)."""
    groups = []
    for a, activation in enumerate(study.activations):
        for b, loss in enumerate(study.losses):
            test = _median(arrays["traj_test_error"][a, b, :, :, -1])
            ntk = _median(arrays["traj_ntk_change"][a, b, :, :, -1])
            A = arrays["traj_alignment"][a, b]  # (S, seeds, L-1, T)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # diverged runs: NaN, not warned
                dis = _median(np.max(A[..., 0] - np.min(A, axis=-1), axis=-1))
                norm_T = np.sqrt(np.sum(arrays["traj_norm"][a, b, :, :, :, -1] ** 2, axis=-1))
                norm_0 = np.sqrt(np.sum(arrays["traj_norm"][a, b, :, :, :, 0] ** 2, axis=-1))
            growth = _median(norm_T / norm_0)
            mech = arrays["mechanism"][a, b, :, 0]
            scales = np.asarray(study.init_scales)
            finite = np.isfinite(test)
            best = int(np.argmin(np.where(finite, test, np.inf))) if finite.any() else None
            groups.append({
                "activation": activation, "loss": loss,
                "test_error": [_sig(v) for v in test], "ntk_change": [_sig(v) for v in ntk],
                "alignment_init": [[_sig(v) for v in _median(A[s, :, :, 0].T)] for s in range(scales.size)],
                "alignment_final": [[_sig(v) for v in _median(A[s, :, :, -1].T)] for s in range(scales.size)],
                "disalignment": [_sig(v) for v in dis], "norm_growth": [_sig(v) for v in growth],
                "mechanism": ["diverged" if c == DIVERGED_CODE else core.PHASES[c] for c in mech],
                "best_init_scale": None if best is None else _sig(scales[best]),
                "best_test_error": None if best is None else _sig(test[best]),
                "correlation_test_error_init_scale": _sig(_rank_correlation(scales, test)),
                "correlation_test_error_disalignment": _sig(_rank_correlation(dis, test)),
                "correlation_test_error_norm": _sig(_rank_correlation(_median(norm_T), test)),
            })
    return {"init_scale": list(study.init_scales), "groups": groups,
            "diverged_runs": int(np.count_nonzero(arrays["diverged_step"] >= 0)),
            "capped_runs": int(np.count_nonzero(arrays["lr_factor"] < 1))}


# ---------------------------------------------------------------- figures
#
# Against the init scale: test error, NTK change, each adjacent pair's alignment at the end (pairs told apart by
# marker; the dotted line: its value at init), and the norm growth. One line style per loss and one marker per
# activation, in black; every point filled with its run's mechanism colour (plots.base.CATEGORY_COLOURS), so that
# the phase of each run is read off every panel.


def _options(study: Study):
    from phasediag.plots.base import current_options

    return current_options({"config": study.resolved})


def vs_init_scale_figure(study: Study, arrays: dict) -> Figure:
    """Final test error, NTK change, adjacent-layer alignments and norm growth against the init scale (medians
    over seeds), each point in its mechanism's colour. Nothing is saved."""
    from matplotlib.lines import Line2D
    from phasediag.plots.base import (LINESTYLES, MARKERS, fit, keep_inside, legend, new_figure, phase_colour,
                                      readable_log_ticks, swatch, wrapped_title)

    options = _options(study)
    fig = new_figure(7.0, 6.2, layout=None) if options.narrow else new_figure(10.0, 6.4, layout=None)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    s = np.asarray(study.init_scales)
    seen = set()
    for a, activation in enumerate(study.activations):
        for b, loss in enumerate(study.losses):
            style = dict(color="black", linestyle=LINESTYLES[b % len(LINESTYLES)], linewidth=1.0)
            mech = arrays["mechanism"][a, b, :, 0]
            colours = ["#5c5c5c" if c == DIVERGED_CODE else phase_colour("phase", core.PHASES[c]) for c in mech]
            seen.update(int(c) for c in mech)
            A = arrays["traj_alignment"][a, b]
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                growth = _median(np.sqrt(np.sum(arrays["traj_norm"][a, b, :, :, :, -1] ** 2, axis=-1)) /
                                 np.sqrt(np.sum(arrays["traj_norm"][a, b, :, :, :, 0] ** 2, axis=-1)))
            series = [(axes[0], _median(arrays["traj_test_error"][a, b, :, :, -1])),
                      (axes[1], _median(arrays["traj_ntk_change"][a, b, :, :, -1])), (axes[3], growth)]
            for l in range(study.depth - 1):
                series.append((axes[2], _median(A[:, :, l, -1])))
            for k, (ax, y) in enumerate(series):
                marker = MARKERS[(k - 3) % len(MARKERS)] if k >= 3 else MARKERS[a % len(MARKERS)]
                ax.plot(s, y, **style, zorder=2)
                ax.scatter(s, y, c=colours, marker=marker, s=22, edgecolors="black", linewidths=0.5, zorder=3,
                           clip_on=False)
            for l in range(study.depth - 1):
                axes[2].plot(s, _median(A[:, :, l, 0]), color="#777777", linestyle=":", linewidth=0.9)
    labels = [("test_error", "test error (end)"), ("ntk_change", r"$\|K_T - K_0\|_F / \|K_0\|_F$"),
              ("alignment", "adjacent-layer alignment (end; dotted: init)"),
              ("norm_growth", r"$\|W\|_T / \|W\|_0$ (all layers)")]
    for ax, (name, text) in zip(axes, labels):
        ax.set_xscale("log")
        drawn = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()] or [[]])
        if name in ("ntk_change", "norm_growth") and np.any(np.isfinite(drawn) & (drawn > 0)):
            ax.set_yscale("log")  # (nothing positive, e.g. every run diverged: a linear axis, no warning)
        readable_log_ticks(ax, 5)
        ax.set_ylabel(options.label(name, text))
        ax.grid(True, which="major", alpha=0.3)
    axes[1].axhline(study.ntk_threshold, color="black", linewidth=0.8, linestyle="--")
    from phasediag.plots.notation import axis_label

    for ax in axes[2:]:
        ax.set_xlabel(options.label("init_scale", axis_label(study.resolved, "init_scale")))
    handles = [Line2D([], [], color="black", linestyle=LINESTYLES[b % len(LINESTYLES)],
                      label=f"{loss.replace('_', '-')} loss")
               for b, loss in enumerate(study.losses)]
    handles += [Line2D([], [], color="black", marker=MARKERS[a], linestyle="none", markerfacecolor="white",
                       label=activation) for a, activation in enumerate(study.activations)]
    if study.depth > 2:
        handles += [Line2D([], [], color="black", marker=MARKERS[l % len(MARKERS)], linestyle="none",
                           markerfacecolor="white", label=f"layers {l + 1}-{l + 2}") for l in range(study.depth - 1)]
    handles += [swatch("#5c5c5c" if c == DIVERGED_CODE else phase_colour("phase", core.PHASES[c]),
                       "diverged" if c == DIVERGED_CODE else core.PHASES[c].replace("_", ", "))
                for c in sorted(seen)]
    legend(fig, handles, below=True, ncols=4)
    sizes = " x ".join(str(n) for n in (*study.widths,))
    names = {"digits": "digits (8 x 8)", "mnist1d": "MNIST-1D"}
    default = (f"{study.depth}-layer {', '.join(study.activations)} network on {names[study.dataset]} (hidden "
               f"widths {sizes}) across init scales")
    title = options.title_of(default, "vs_init_scale", f"{study.name}__vs_init_scale")
    if title:
        fig.suptitle(wrapped_title(fig, title, fig.get_size_inches()[0] - 0.5))
    fit(fig)
    keep_inside(fig)
    return fig


# ---------------------------------------------------------------- the job kind

AXES = ("activation", "loss", "init_scale", "seed")
COORDS = AXES + ("pair", "layer", "step")
DIMS: dict[str, tuple[str, ...]] = {
    **{f"traj_{f}": AXES + ("step",) for f in deep.RECORD_FIELDS[:5]},
    "traj_alignment": AXES + ("pair", "step"), "traj_norm": AXES + ("layer", "step"),
    "lr_factor": AXES, "ntk_scale0": AXES, "mechanism": AXES, "diverged_step": AXES,
}
FIGURE_NAMES = ("vs_init_scale",)
PLOT_LABELS = COORDS + tuple(DIMS) + ("test_error", "ntk_change", "alignment", "norm_growth")
TABLES = {"by_" + "_".join(AXES): "runs"}
DEFINITIONS = {
    "model": "f(x) = kappa W_L phi(W_{L-1} ... phi(W_1 x)); W_l ~ N(0, s^2 init_var_l / n_{l-1})",
    "ntk": "K_(x,a),(x',b) = sum_l eta_l (delta_l^a(x).delta_l^b(x')) (h_{l-1}(x).h_{l-1}(x')) on the probe",
    "ntk_change": "||K_t - K_0||_F / ||K_0||_F",
    "alignment": "pair l: ||W_{l+1} P_l||_F / ||W_{l+1}||_F, P_l projecting on the top min(k, n_{l-1}, n_{l+1}) "
                 "left singular vectors of W_l",
    "mechanism": "section 6 rules: ntk_change; gain max_l (A_l(T) - min_t A_l), disalignment max_l (A_l(0) - min_t A_l)",
    "lr_factor": "min(1, initial_ntk_cap / (lambda_max(K_0)/P)), multiplies every rate",
    "errors": "fraction of examples whose argmax_a f_a(x) is not the label",
}


def _legends() -> dict:
    return {"mechanism": {**{str(c): n for c, n in enumerate(core.PHASES)}, str(DIVERGED_CODE): "diverged"}}


def units(study: Study, options) -> int:
    return study.runs


def execute(study: Study, options, checkpoint: Path | None) -> Result:
    started = time.perf_counter()
    data, probe = load_dataset(study)
    arrays = simulate_study(study, data, probe, workers=options.workers, progress=options.progress)
    trained = time.perf_counter()
    coords = {"activation": np.array(study.activations), "loss": np.array(study.losses),
              "init_scale": np.asarray(study.init_scales), "seed": np.arange(study.seeds),
              "pair": np.arange(1, study.depth), "layer": np.arange(1, study.depth + 1),
              "step": nl.record_steps(study.steps, study.record)}
    meta = {
        "kind": "deep", "name": study.name, "experiment": "deep", "coords": list(COORDS),
        "dims": {name: list(DIMS[name]) for name in arrays}, "legends": _legends(),
        "timing": {"train_s": round(trained - started, 3)}, "seed": study.seed, "runs": study.runs,
        "workers": options.workers, "definitions": DEFINITIONS,
        "data": {"train": int(data.X_train.shape[0]), "test": int(data.X_test.shape[0]),
                 "features": int(data.X_train.shape[1]), "classes": 10},
        "findings": findings(study, arrays),
    }
    return Result(coords=coords, arrays=arrays, meta=meta)




def study_of(result: Result) -> Study:
    config = {k: v for k, v in result.meta["config"].items() if k in TOP_KEYS}
    return read(located(config), "meta.json", None)


def figures(result: Result) -> list[tuple[str, Callable[[], Figure]]]:
    study = study_of(result)
    arrays = {**result.coords, **result.arrays}
    return [(f"{study.name}__vs_init_scale", partial(vs_init_scale_figure, study, arrays))]


def summarize(result: Result) -> dict:
    study = study_of(result)
    timing = result.meta.get("timing", {})
    return {"runs": study.runs, "shape": list(study.shape), "steps": study.steps, "depth": study.depth,
            "dataset": study.dataset, "elapsed_s": timing.get("total_s", timing.get("train_s")),
            "findings": result.meta["findings"]}


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def text(summary: dict) -> str:
    found = summary["findings"]
    elapsed = summary.get("elapsed_s")
    lines = [f"{summary['name']}: {summary['runs']} runs of a depth-{summary['depth']} network on "
             f"{summary['dataset']}, {summary['steps']:,} steps" + ("" if elapsed is None else f" in {elapsed:.1f} s")
             + ("" if summary.get("out") is None else f" -> {summary['out']}")
             + f"; diverged: {found['diverged_runs']}, rates capped: {found['capped_runs']}"]
    s = found["init_scale"]
    for g in found["groups"]:
        lines.append(f"  {g['activation']} / {g['loss']} loss: best test error {_fmt(g['best_test_error'])} at "
                     f"s = {_fmt(g['best_init_scale'])}; rank correlation of test error with s "
                     f"{_fmt(g['correlation_test_error_init_scale'], 2)}, with disalignment "
                     f"{_fmt(g['correlation_test_error_disalignment'], 2)}, with the final norm "
                     f"{_fmt(g['correlation_test_error_norm'], 2)}")
        for i, scale in enumerate(s):
            lines.append(f"    s = {scale:<8.3g} test error {_fmt(g['test_error'][i]):>6}  NTK change "
                         f"{_fmt(g['ntk_change'][i]):>8}  alignment {g['alignment_init'][i]} -> "
                         f"{g['alignment_final'][i]}  norm x{_fmt(g['norm_growth'][i])}  {g['mechanism'][i]}")
    return "\n".join(lines)
