"""YAML sweep configs: loading with line numbers, validation, and the resolved form stored with results.

Every error names the key path and its line (`model.lr_w (line 9): must be > 0 ...`). Plain YAML 1.1 reads
`1e6` as a string; here every plain scalar that looks like a number is a number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phasediag.config import expr, rules
from phasediag.config.hyperparameters import DATA_FIELDS, MODEL_FIELDS
from phasediag.config.reader import (FIGURE_KEYS, FORMATS, AnyKey, ConfigError, Located, check_name,
                                     did_you_mean, fail, figure_options, mapping, number, parse_yaml, plain,
                                     read_config, ruled, shown, string)

MODEL_KEYS = MODEL_FIELDS  # the hyperparameters' names, as solve, simulate and the CLI use them
MODEL_DEFAULTS = {"output_scale": 1.0, "lr_u": 1.0, "lr_w": 1.0}
DATA_KEYS = DATA_FIELDS + ("noise_var",)
DATA_DEFAULTS = {"input_var": 1.0, "teacher": 1.0, "noise_var": 0.0}
TOP_KEYS = ("name", "description", "mode", "sweep", "model", "data", "init", "train", "classify", "boundaries",
            "metrics", "plot")
BOUNDARY_KEYS = ("along", "of", "against", "quantiles")
#: with init: {seeds: N}, the quantiles over the seeds whose boundaries are found: the median and its spread
DEFAULT_QUANTILES = (0.25, 0.5, 0.75)
SCALING_KEYS = ("output_scale", "init_var_u", "init_var_w", "lr_u", "lr_w")  # exponents k, su, sw, eu, ew
RESERVED = set(expr.FUNCTIONS) | set(expr.CONSTANTS) | {"seed", "t", "time"}
MAX_GD_STEPS = rules.MAX_GD_STEPS  # as `solve`: the exact GD map costs one vectorized step per step
MAX_AXIS = 100_000_000  # values of one axis (0.8 GB as float64); checked from the spec, before it is built
MAX_GRID = 2**63 - 1  # grid points: flat indices are int64 (a grid that size only runs in --shard parts)
MAX_TIMES = 100_000  # train.times: as solve --points; every grid point stores each time of its trajectory
MAX_EXPONENT = 10**6  # |width exponent| of mode: scaling, as `phasediag limit`

_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


# ---------- the config ----------

@dataclass(frozen=True)
class BoundarySpec:
    """One `boundaries:` entry: find where the labels of `of` (phase, or gd_outcome) change along the sweep
    variable `along` on every line of the grid; `against`: fit the crossing's log-log slope against that
    variable (None: no fit)."""

    along: str
    of: str
    against: str | None = None
    quantiles: tuple[float, ...] | None = None  # init: {seeds: N}: the quantiles over seeds (None otherwise)

@dataclass(frozen=True)
class Axis:
    """One swept variable: its name, its 1-D values, and how they were written."""

    name: str
    values: np.ndarray
    spec: dict
    line: int


@dataclass(frozen=True)
class Quantity:
    """A model/data/init value: a number or an expression of sweep variables (parsed)."""

    path: str
    line: int
    text: str
    tree: Any
    bound: float | None = None  # |value| <= bound at every point (None: any finite value)

    def evaluate(self, variables) -> np.ndarray:
        try:
            value = expr.evaluate(self.tree, variables)
        except expr.ExpressionError as exc:
            raise fail(self.path, self.line, f"{self.text!r}: {exc}") from None
        if self.bound is not None and value.size and np.max(np.abs(value)) > self.bound:
            worst = np.ravel(value)[np.argmax(np.abs(np.ravel(value)))]
            raise fail(self.path, self.line, f"{self.text!r}: |value| must be at most {self.bound:g}, got {worst:g}")
        return value


@dataclass(frozen=True)
class Config:
    """A validated sweep config. `resolved` is the plain-data form stored in meta.json."""

    name: str
    description: str
    axes: tuple[Axis, ...]
    model: dict[str, Quantity]
    data: dict[str, Quantity]
    init_kind: str  # typical | seeds | gram
    seeds: int
    seed: int
    gram: tuple[Quantity, ...]
    horizon: float
    optimizer: str
    times: np.ndarray | None
    max_steps: int
    ntk_threshold: float
    alignment_threshold: float
    plot: dict
    resolved: dict = field(compare=False)
    mode: str = "finite"  # finite | scaling (model entries are {base, exp}: hyperparameter = base d^exp)
    bases: dict = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None  # stored metrics (None: every metric of the kind)
    boundaries: tuple[BoundarySpec, ...] = ()

    @property
    def kind(self) -> str:
        """What a sweep computes: "scaling" (width -> infinity), else the optimizer (flow | gd)."""
        return "scaling" if self.mode == "scaling" else self.optimizer

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape: the sweep axes in order, then the seed axis when sampling."""
        return tuple(len(a.values) for a in self.axes) + ((self.seeds,) if self.init_kind == "seeds" else ())

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes) + (("seed",) if self.init_kind == "seeds" else ())


def _axis_spec(item: Located) -> tuple[str, Located]:
    spec = mapping(item, ("log", "lin", "values"))
    if len(spec) != 1:
        raise fail(item.path, item.line, "give exactly one of log: [start, stop, num], lin: [start, stop, num], "
                                          "values: [...]")
    (kind, sub), = spec.items()
    if not isinstance(sub.value, list) or not sub.value:
        raise fail(sub.path, sub.line, "must be a non-empty list")
    if kind != "values" and len(sub.value) != 3:
        raise fail(sub.path, sub.line, f"must be [start, stop, num], got {len(sub.value)} items")
    return kind, sub


def axis_length(item: Located, limit: int = MAX_AXIS, what: str = "values per axis") -> int:
    """The number of values an axis spec asks for, checked against `limit` from the spec alone (nothing is
    built: `{lin: [1, 2, 1e9]}` is refused in microseconds)."""
    kind, sub = _axis_spec(item)
    where = sub if kind == "values" else sub.value[2]
    n = len(sub.value) if kind == "values" else number(where, positive=True, integer=True)
    if n > limit:
        raise fail(where.path, where.line, f"{n:,.0f} values; at most {limit:,} {what} (split the range into "
                                           "several sweeps)")
    return int(n)


def axis_values(item: Located, limit: int = MAX_AXIS, what: str = "values per axis") -> np.ndarray:
    """The values of an axis spec ({log: [start, stop, num]}, {lin: ...}, {values: [...]}); its length is
    checked against `limit` before the array is built."""
    axis_length(item, limit, what)
    kind, sub = _axis_spec(item)
    if kind == "values":
        values = np.array([number(v) for v in sub.value])
        if len(np.unique(values)) != len(values):
            raise fail(sub.path, sub.line, "values must be distinct")
        return values
    start, stop = (number(v, positive=(kind == "log")) for v in sub.value[:2])
    num = number(sub.value[2], positive=True, integer=True)
    if num > 1 and start == stop:
        raise fail(sub.path, sub.line, "start and stop must differ")
    if kind == "log":
        values = np.logspace(np.log10(start), np.log10(stop), int(num))
        values[0] = start  # the endpoints as written (10^log10(x) can be off by an ulp)
        if num > 1:
            values[-1] = stop
        return values
    return linear_values(start, stop, int(num))


def linear_values(start: float, stop: float, num: int) -> np.ndarray:
    """`num` evenly spaced values from `start` to `stop`, each the float nearest the exact point between the
    decimals start and stop are written as (repr): lin: [-0.9, 0.9, 7] holds 0 and the doubles of 0.3 and
    0.6, where np.linspace gives -1.1e-16 and values an ulp off about half the time. Where the decimals'
    integer numerators would pass 2^53 (many digits, or extreme exponents), np.linspace's values (the ends
    as written)."""
    from fractions import Fraction

    if num == 1:
        return np.array([start], dtype=float)
    a, b = Fraction(repr(start)), Fraction(repr(stop))
    q = math.lcm(a.denominator, b.denominator)
    low, high, den = int(a * q), int(b * q), q * (num - 1)
    if max(abs(low), abs(high)) * (num - 1) >= 2**53 or den >= 2**53:
        # (halved where stop - start overflows: np.linspace would give nan)
        values = np.linspace(start, stop, num) if math.isfinite(stop - start) else \
            2 * np.linspace(start / 2, stop / 2, num)
    else:
        i = np.arange(num, dtype=np.int64)
        # each numerator is an exact integer below 2^53, so one division rounds the exact value once
        values = (low * (num - 1 - i) + high * i).astype(float) / float(den)
    values[0], values[-1] = start, stop  # as written (-0.0 included)
    return values


def swept_values(item: Located, *, low: float, high: float) -> np.ndarray:
    """A study's swept values: a non-empty list of distinct numbers, or an axis spec ({log: [a, b, n]},
    {lin: ...}, {values: [...]}), every value in [low, high] (ConfigError naming the key and line)."""
    if isinstance(item.value, list):
        if not item.value:
            raise fail(item.path, item.line, "must be a non-empty list, or {log: [start, stop, num]}")
        values = np.array([number(v) for v in item.value])
        if len(np.unique(values)) != len(values):
            raise fail(item.path, item.line, "values must be distinct")
    elif isinstance(item.value, dict):
        values = axis_values(item)
    else:
        raise fail(item.path, item.line, f"must be a list of values or {{log: [start, stop, num]}}, got {shown(item)}")
    bad = values[~((values >= low) & (values <= high))]
    if bad.size:
        raise fail(item.path, item.line, f"values must lie in [{low:g}, {high:g}], got {bad[0]:g}")
    return values


def _quantity(item: Located, variables, bound: float | None = None) -> Quantity:
    value = item.value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise fail(item.path, item.line, f"must be a number or an expression, got {shown(item)}")
    text = repr(float(value)) if not isinstance(value, str) else value
    try:
        tree = expr.parse(text) if isinstance(value, str) else float(value)
        expr.check_names(tree, variables)
    except expr.ExpressionError as exc:
        raise fail(item.path, item.line, str(exc)) from None
    if not isinstance(value, str) and not np.isfinite(float(value)):
        raise fail(item.path, item.line, f"must be finite, got {value}")
    if bound is not None and not isinstance(value, str) and abs(value) > bound:
        raise fail(item.path, item.line, f"|value| must be at most {bound:g}, got {value:g}")
    return Quantity(item.path, item.line, text, tree, bound)


def _default_quantity(path: str, value: float) -> Quantity:
    return Quantity(path, 0, repr(value), float(value))


def load_config(source: str | Path | dict) -> Config:
    """Read and validate a YAML sweep config (a path, or a dict of its content); ConfigError names the key
    path and line."""
    root, _ = read_config(source)
    return config_from_root(root)


def config_from_text(text: str, source: str = "config") -> Config:
    """The sweep config written in the YAML `text` (`source` names it in messages)."""
    return config_from_root(parse_yaml(text, source))


def config_from_root(root: Located) -> Config:
    """Validate a parsed config (see :func:`phasediag.config.reader.read_config`) into a :class:`Config`."""
    top = mapping(root, TOP_KEYS, required=("name", "sweep", "model"))
    mode = string(top["mode"]) if "mode" in top else "finite"
    if mode not in ("finite", "scaling"):
        raise fail("mode", top["mode"].line, f"must be finite or scaling, got {mode!r}")
    name = check_name(top["name"])
    description = string(top["description"]) if "description" in top else ""

    sweep_item = top["sweep"]
    sweep = mapping(sweep_item, allowed=AnyKey())
    if not sweep:
        raise fail("sweep", sweep_item.line, "needs at least one variable (name: {log: [start, stop, num]})")
    for key, sub in sweep.items():
        if not _NAME.fullmatch(key) or key in RESERVED or key in MODEL_KEYS or key in DATA_KEYS:
            raise fail(sub.path, sub.line, "sweep variable names must be identifiers other than "
                                            f"{', '.join(sorted(RESERVED | set(MODEL_KEYS) | set(DATA_KEYS)))}")
    variables = list(sweep)
    init_kind, seeds, seed, gram = _init(top.get("init") if mode != "scaling" else None, variables)
    _check_grid(sweep, seeds if init_kind == "seeds" else None)  # from the lengths, before any axis is built
    axes = [Axis(key, axis_values(sub), plain(sub), sub.line) for key, sub in sweep.items()]

    bases: dict[str, Quantity] = {}
    if mode == "scaling":
        for key in ("init", "train"):
            if key in top:
                raise fail(key, top[key].line, "is not used with mode: scaling (the width goes to infinity; "
                                                "phases follow from the exponents alone)")
        model, bases = _scaling_model(top["model"], variables)
    else:
        model_items = mapping(top["model"], MODEL_KEYS, required=("width", "init_var_u", "init_var_w"))
        model = {key: _quantity(model_items[key], variables) if key in model_items
                 else _default_quantity(f"model.{key}", MODEL_DEFAULTS[key]) for key in MODEL_KEYS}
    data_items = mapping(top["data"], DATA_KEYS) if "data" in top else {}
    data = {key: _quantity(data_items[key], variables) if key in data_items
            else _default_quantity(f"data.{key}", DATA_DEFAULTS[key]) for key in DATA_KEYS}

    horizon, optimizer, times, max_steps = _train(top.get("train"))
    ntk_threshold, alignment_threshold = _classify(top.get("classify"))
    plot = _plot(top.get("plot"), variables, mode, optimizer, root.base_dir)
    boundaries = _boundaries(top.get("boundaries"), axes, model, mode, optimizer, init_kind)
    metrics = _metrics(top.get("metrics"), "scaling" if mode == "scaling" else optimizer, plot,
                       [b.of for b in boundaries])
    config = Config(
        name=name, description=description, axes=tuple(axes), model=model, data=data, init_kind=init_kind,
        seeds=seeds, seed=seed, gram=gram, horizon=horizon, optimizer=optimizer, times=times,
        max_steps=max_steps, ntk_threshold=ntk_threshold, alignment_threshold=alignment_threshold, plot=plot,
        resolved={}, mode=mode, bases=bases, metrics=metrics, boundaries=boundaries,
    )
    config.resolved.update(_resolve(config))
    return config


def _check_grid(sweep: dict[str, Located], seeds: int | None) -> None:
    """The grid size, in Python integers (no int64 overflow) from the axis lengths alone: at most MAX_GRID
    points, so that every flat index is an int64."""
    lengths = {key: axis_length(sub) for key, sub in sweep.items()}
    if seeds is not None:
        lengths["seed"] = seeds
    size = math.prod(lengths.values())
    if size > MAX_GRID:
        sizes = " x ".join(f"{n:,} ({key})" for key, n in lengths.items())
        raise ConfigError(f"sweep: the grid has {size:.3g} points ({sizes}); at most 2^63 - 1 = {MAX_GRID:.3g} "
                          "(flat indices are int64), even in --shard parts: make the sweep smaller")


def _scaling_model(item: Located, variables) -> tuple[dict[str, Quantity], dict[str, Quantity]]:
    """model.<key>: {base: b, exp: e} (hyperparameter = b d^e; base defaults to 1, a missing key is d^0)."""
    items = mapping(item, SCALING_KEYS)
    exps, bases = {}, {}
    for key in SCALING_KEYS:
        if key not in items:
            exps[key] = _default_quantity(f"model.{key}.exp", 0.0)
            bases[key] = _default_quantity(f"model.{key}.base", 1.0)
            continue
        sub = items[key]
        if not isinstance(sub.value, dict):
            raise fail(sub.path, sub.line, "with mode: scaling give {base: number, exp: number or expression}")
        spec = mapping(sub, ("base", "exp"), required=("exp",))
        exps[key] = _quantity(spec["exp"], variables, bound=MAX_EXPONENT)
        bases[key] = _quantity(spec["base"], variables) if "base" in spec else _default_quantity(
            f"model.{key}.base", 1.0)
    return exps, bases


def _init(item: Located | None, variables):
    if item is None or item.value == "typical":
        return "typical", 1, 0, ()
    if isinstance(item.value, str):
        raise fail("init", item.line, f"unknown init {shown(item)}; use typical, {{seeds: N}} or "
                                       "{gram: [U, W, V]}")
    spec = mapping(item, ("seeds", "seed", "gram"))
    if "gram" in spec:
        if "seeds" in spec or "seed" in spec:
            raise fail("init", item.line, "give either gram or seeds, not both")
        entries = spec["gram"]
        if not isinstance(entries.value, list) or len(entries.value) != 3:
            raise fail(entries.path, entries.line, "must be a list [U, W, V]")
        return "gram", 1, 0, tuple(_quantity(e, variables) for e in entries.value)
    if "seeds" not in spec:
        raise ConfigError(f"init.seeds: is required (the number of sampled initializations per point), "
                          f"missing in 'init' (line {item.line})")
    seeds = int(number(spec["seeds"], positive=True, integer=True))
    if seeds > MAX_AXIS:
        raise fail("init.seeds", spec["seeds"].line, f"{seeds:,} seeds; at most {MAX_AXIS:,} (the seed axis is "
                                                      "an axis of the grid)")
    seed = ruled(spec["seed"], rules.seed) if "seed" in spec else 0
    return "seeds", seeds, seed, ()


def _train(item: Located | None):
    spec = mapping(item, ("horizon", "optimizer", "times", "max_steps")) if item is not None else {}
    optimizer = string(spec["optimizer"]) if "optimizer" in spec else "flow"
    if optimizer not in ("flow", "gd"):
        raise fail("train.optimizer", spec["optimizer"].line, f"must be flow or gd, got {optimizer!r}")
    horizon = (ruled(spec["horizon"], rules.horizon, steps=optimizer == "gd") if "horizon" in spec
               else float("inf"))
    max_steps = ruled(spec["max_steps"], rules.gd_max_steps) if "max_steps" in spec else 100_000
    times = None
    if "times" in spec and spec["times"].value is not None:  # (a resolved config says times: null)
        item = spec["times"]
        if isinstance(item.value, list):  # a plain list is values: [...] (as a resolved config writes it)
            item = Located({"values": item}, item.line, item.path)
        times = axis_values(item, MAX_TIMES, "times")
        if np.any(times < 0):
            raise fail("train.times", spec["times"].line, "times must be >= 0")
        if optimizer == "gd":  # GD times are step counts
            if np.any(times != np.round(times)):
                bad = times[times != np.round(times)][0]
                raise fail("train.times", spec["times"].line, f"with optimizer gd times are whole numbers of "
                                                               f"steps, got {bad:g} (use values: [...] or lin)")
            if times.max() > MAX_GD_STEPS:
                raise fail("train.times", spec["times"].line, f"at most {MAX_GD_STEPS:,} GD steps (the exact map "
                                                               f"costs O(steps)), got {times.max():g}")
            times = np.unique(times)
        times = np.sort(times)
    return horizon, optimizer, times, max_steps


def _classify(item: Located | None):
    spec = mapping(item, ("ntk_threshold", "alignment_threshold")) if item is not None else {}
    ntk = ruled(spec["ntk_threshold"], rules.ntk_threshold) if "ntk_threshold" in spec else 0.1
    align = ruled(spec["alignment_threshold"], rules.alignment_threshold) if "alignment_threshold" in spec else 0.1
    return ntk, align


#: what plot.labels may name in a finite-width sweep beyond its variables and metrics: the time axis and the
#: panels of the trajectories (with train.times), and the axes of phasediag validate's parity figure
TRAJECTORY_LABELS = ("time", "traj_m", "traj_ntk", "traj_alignment", "traj_loss")
VALIDATION_LABELS = ("worst_deviation", "point")
#: what a plot.title mapping may name beyond those (a map is named by its metric): the other figures
FIGURE_NAMES = ("trajectories", "phase_overlay", "predicted_vs_measured")


def plot_names(variables, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(label names, figure names) of a sweep of `kind` (flow | gd | scaling) over `variables`: what
    plot.labels and a plot.title mapping may name (also `phasediag validate` of the sweep)."""
    from phasediag.engine.metrics import metrics_for

    metrics = [m.name for m in metrics_for(kind)]
    if kind == "scaling":
        return tuple(dict.fromkeys([*variables, *metrics])), ()
    return tuple(dict.fromkeys([*variables, *metrics, *TRAJECTORY_LABELS, *VALIDATION_LABELS])), FIGURE_NAMES


def plot_names_of(meta: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """:func:`plot_names` of a run directory's meta.json (sweep, scaling and validation runs): the sweep
    variables and kind from its resolved config."""
    config = meta.get("config") or {}
    kind = "scaling" if config.get("mode") == "scaling" else (config.get("train") or {}).get("optimizer", "flow")
    return plot_names(list(config.get("sweep") or {}), kind)


def _plot(item: Located | None, variables, mode: str = "finite", optimizer: str = "flow",
          base_dir: Path | None = None):
    from phasediag.engine.metrics import MAP_METRICS, METRICS, SCALING_MAPS  # the registries of plottable metrics

    allowed_maps = SCALING_MAPS if mode == "scaling" else MAP_METRICS
    spec = mapping(item, ("x", "y", "maps", "formats", *FIGURE_KEYS)) if item is not None else {}
    out: dict[str, Any] = {}
    for axis in ("x", "y"):
        if axis in spec:
            name = string(spec[axis])
            if name not in variables:
                raise fail(f"plot.{axis}", spec[axis].line,
                            f"{name!r} is not a sweep variable{did_you_mean(name, variables)}; "
                            f"sweep variables: {', '.join(variables)}")
            out[axis] = name
    if "x" in out and out.get("y") == out["x"]:
        raise fail("plot.y", spec["y"].line, "must differ from plot.x")
    out.setdefault("x", variables[0])
    if len(variables) > 1:
        out.setdefault("y", next(v for v in variables if v != out["x"]))
    for key, allowed in (("maps", allowed_maps), ("formats", FORMATS)):
        if key in spec:
            sub = spec[key]
            if not isinstance(sub.value, list) or not sub.value:
                raise fail(sub.path, sub.line, "must be a non-empty list")
            names = [string(v) for v in sub.value]
            for v, name in zip(sub.value, names):
                if name not in allowed:
                    raise fail(v.path, v.line, f"unknown {key[:-1]} {name!r}{did_you_mean(name, allowed)}; "
                                                f"allowed: {', '.join(allowed)}")
                needs = METRICS[name].optimizer if key == "maps" and mode != "scaling" and name in METRICS else None
                if needs is not None and needs != optimizer:
                    raise fail(v.path, v.line, f"map {name!r} exists only for train.optimizer: {needs} "
                                                f"(this sweep uses {optimizer})")
            out[key] = names
    out.setdefault("maps", ["limit_phase", "rho_exp", "ntk_init_exp"] if mode == "scaling"
                   else ["phase", "ntk_change", "alignment_final", "tau"])
    out.setdefault("formats", ["png"])
    labels, figures = plot_names(variables, "scaling" if mode == "scaling" else optimizer)
    out.update(figure_options(spec, labels, base_dir, figures))  # (only the keys given)
    return out


def _boundaries(item: Located | None, axes: list[Axis], model: dict[str, Quantity], mode: str, optimizer: str,
                init_kind: str) -> tuple[BoundarySpec, ...]:
    """boundaries: one entry {along: var, of: phase | gd_outcome, against: var} or a list of them."""
    variables = [a.name for a in axes]
    if item is None:
        return ()
    if mode == "scaling":
        raise fail(item.path, item.line, "is not used with mode: scaling (its phase boundaries are exact lines "
                                          "of the exponents: the limit_phase map draws them)")
    entries = item.value if isinstance(item.value, list) else [item]
    if not entries:
        raise fail(item.path, item.line, "must be {along: <sweep variable>} or a non-empty list of them")
    width_vars = expr.names(model["width"].tree)
    outcomes = ("phase", "gd_outcome") if optimizer == "gd" else ("phase",)
    out = []
    for entry in entries:
        spec = mapping(entry, BOUNDARY_KEYS, required=("along",))
        names = {}
        for key in ("along", "against"):
            if key in spec:
                name = string(spec[key])
                if name not in variables:
                    raise fail(spec[key].path, spec[key].line, f"{name!r} is not a sweep variable"
                                                                f"{did_you_mean(name, variables)}; sweep variables: "
                                                                f"{', '.join(variables)}")
                names[key] = name
        if names["along"] in width_vars:
            raise fail(spec["along"].path, spec["along"].line,
                       f"{names['along']!r} sets model.width, which takes whole-number values only; find the "
                       "boundaries along another variable and their scaling with against: "
                       f"{names['along']}")
        if names.get("against") == names["along"]:
            raise fail(spec["against"].path, spec["against"].line, "must differ from along")
        of = string(spec["of"]) if "of" in spec else "phase" if init_kind == "seeds" else outcomes[-1]
        if of not in outcomes:
            raise fail(spec["of"].path, spec["of"].line, f"must be one of {', '.join(outcomes)} for a "
                                                          f"{optimizer} sweep, got {of!r}")
        if of != "phase" and init_kind == "seeds":
            raise fail(spec["of"].path, spec["of"].line, "must be phase with init: {seeds: N} (the boundaries "
                                                          "of quantiles of the order parameters over seeds)")
        quantiles = _quantiles(spec.get("quantiles"), init_kind)
        values = next(a.values for a in axes if a.name == names["along"])
        steps = np.diff(values)
        if not (np.all(steps > 0) or np.all(steps < 0)):  # (crossings lie between neighbouring values)
            raise fail(spec["along"].path, spec["along"].line,
                       f"sweep.{names['along']} must be strictly increasing or decreasing to find boundaries "
                       "along it")
        for k, other in enumerate(out):
            if (other.along, other.of) == (names["along"], of):
                raise fail(entry.path, entry.line, f"repeats boundaries[{k}] (along: {other.along}, of: {of}): "
                                                   "one entry per along and of")
        out.append(BoundarySpec(names["along"], of, names.get("against"), quantiles))
    return tuple(out)


def _quantiles(item: Located | None, init_kind: str) -> tuple[float, ...] | None:
    """quantiles: the quantiles over seeds of a sampled initialization's boundaries (increasing, in (0, 1))."""
    if init_kind != "seeds":
        if item is not None:
            raise fail(item.path, item.line, "needs init: {seeds: N} (quantiles over the seeds)")
        return None
    if item is None:
        return DEFAULT_QUANTILES
    if not isinstance(item.value, list) or not item.value:
        raise fail(item.path, item.line, "must be a non-empty list of quantiles in (0, 1), e.g. [0.25, 0.5, 0.75]")
    values = tuple(number(v) for v in item.value)
    if not all(0 < q < 1 for q in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise fail(item.path, item.line, f"must be increasing quantiles in (0, 1), got {list(values)}")
    return values


def _metrics(item: Located | None, kind: str, plot: dict, needed=()) -> tuple[str, ...] | None:
    """metrics: the list of metrics to store (default: all of the kind); the plotted maps and the labels that
    boundaries are found in (`needed`) are always kept."""
    if item is None:
        return None
    from phasediag.engine.metrics import metrics_for

    allowed = [m.name for m in metrics_for(kind)]
    if not isinstance(item.value, list) or not item.value:
        raise fail(item.path, item.line, f"must be a non-empty list of metric names; allowed: {', '.join(allowed)}")
    names = []
    for sub in item.value:
        name = string(sub)
        if name not in allowed:
            raise fail(sub.path, sub.line, f"unknown metric {name!r} for a {kind} sweep"
                                            f"{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}")
        names.append(name)
    wanted = set(names) | set(plot.get("maps", ())) | set(needed)
    return tuple(name for name in allowed if name in wanted)  # registry order


def _resolve(config: Config) -> dict:
    """Plain-data form of everything that determines the results (for meta.json and resume checks)."""
    if config.mode == "scaling":
        return {
            "name": config.name, "description": config.description, "mode": "scaling",
            "sweep": {a.name: a.spec for a in config.axes},
            "model": {k: {"base": config.bases[k].text, "exp": q.text} for k, q in config.model.items()},
            "data": {k: q.text for k, q in config.data.items()},
            "classify": {"ntk_threshold": config.ntk_threshold, "alignment_threshold": config.alignment_threshold},
            **({"metrics": list(config.metrics)} if config.metrics is not None else {}),
            "plot": config.plot,
        }
    return {
        "name": config.name,
        "description": config.description,
        "sweep": {a.name: a.spec for a in config.axes},
        "model": {k: q.text for k, q in config.model.items()},
        "data": {k: q.text for k, q in config.data.items()},
        "init": ("typical" if config.init_kind == "typical" else
                 {"seeds": config.seeds, "seed": config.seed} if config.init_kind == "seeds" else
                 {"gram": [q.text for q in config.gram]}),
        "train": {"horizon": "inf" if np.isinf(config.horizon) else config.horizon,
                  "optimizer": config.optimizer, "max_steps": config.max_steps,
                  "times": None if config.times is None else config.times.tolist()},
        "classify": {"ntk_threshold": config.ntk_threshold, "alignment_threshold": config.alignment_threshold},
        **({"boundaries": [{"along": b.along, "of": b.of, **({"against": b.against} if b.against else {}),
                            **({"quantiles": list(b.quantiles)} if b.quantiles else {})}
                           for b in config.boundaries]} if config.boundaries else {}),
        **({"metrics": list(config.metrics)} if config.metrics is not None else {}),
        "plot": config.plot,
    }
