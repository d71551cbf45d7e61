"""`phasediag validate CONFIG`: the closed form against simulated training on points of a sweep.

For a subset of the config's grid, spread over the predicted phases, the actual vectors u, w in R^d are drawn
(seed = (config seed, flat grid index), so a point's draw does not depend on the selection, shard or worker)
and trained:

- GD configs: GD at the configured rates, to the horizon (or, for ``horizon: inf``, until the exact GD map
  has settled), capped at ``max_steps``. The exact GD map at the same steps is the prediction: the two agree
  to rounding.
- flow configs, ``method="gd"``: GD with both rates scaled by h = step / (a Theta_max) (Theta_max the larger
  of the initial and final NTK), for T/h steps. Time is measured in GD steps with the rates inside, so this
  is the Euler discretization of the same flow; the prediction is the flow at t = steps * h and the
  deviation is the discretization error, O(step).
- flow configs, ``method="flow"``: the flow integrated by DOPRI5 (rtol 1e-12).

The prediction uses the sampled vectors' own Gram (U, W, V), so any deviation is numerical, not a finite-width
fluctuation; the map label (the grid's label, with the config's initialization) is reported beside it. Both
the predicted and the measured labels are taken by :func:`phasediag.training.measure.measured_label` on the same
recorded times, so they apply the same rule. Errors are measured over the whole recorded path:
m (relative to max(|m*|, |m|)), Theta (relative), alignment zeta (absolute), ntk_change at T (absolute,
relative above 1).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from phasediag import core
from phasediag.training import simulate
from phasediag.engine import sweep
from phasediag.config.reader import ConfigError, Located, located
from phasediag.config.sweep import Config, config_from_root
from phasediag.errors import FieldError, ManifestError, ResultsError
from phasediag.results import store
from phasediag.results.store import Result
from phasediag.results.atomic import atomic_write
from phasediag.engine.workers import ordered_map
from phasediag.training.measure import measured_label, measured_order_parameters

__all__ = ["Settings", "Validation", "select_points", "validate_point", "VALIDATION_FILE", "read", "execute",
           "figures", "summarize", "text", "merge", "load_data", "write_data"]

VALIDATION_FILE = "validation.json"
ERROR_FIELDS = ("m", "ntk", "alignment", "ntk_change")


@dataclass(frozen=True)
class Settings:
    """What to validate and how (see ``phasediag validate --help``)."""

    points: int = 24
    max_width: int = 10_000
    step: float = 0.01
    max_steps: int = 200_000
    records: int = 48
    method: str = "gd"

    def check(self, config: Config) -> None:
        """FieldError naming the setting (points, max_width, step, max_steps, records, method)."""
        for name, low, high in (("points", 1, 100_000), ("max_width", 1, 10**15), ("max_steps", 1, 10_000_000),
                                ("records", 2, 100_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FieldError(name, f"must be an integer in [{low:,}, {high:,}], got {value!r}")
        if config.mode == "scaling":
            raise ConfigError("mode: validate needs a finite-width sweep (mode: finite), not a scaling diagram")
        if self.method not in ("gd", "flow"):
            raise FieldError("method", f"must be gd or flow, got {self.method!r}")
        if self.method == "flow" and config.optimizer == "gd":
            raise FieldError("method", "must be gd, not flow: the config trains with optimizer gd, and its exact "
                                       "GD map is validated by GD")
        if isinstance(self.step, bool) or not isinstance(self.step, (int, float)) or not 0 < self.step <= 0.5:
            raise FieldError("step", f"must lie in (0, 0.5], got {self.step!r}")


# ---------------------------------------------------------------- selection

def select_points(config: Config, prediction: dict[str, np.ndarray], settings: Settings) -> np.ndarray:
    """Flat grid indices (sorted) of up to `settings.points` simulable points spread over the predicted labels.

    `prediction`: flat arrays "phase", "width" (and "gd_outcome" for GD configs) over the whole grid. Points
    wider than max_width are skipped. Labels (GD: (outcome, phase) pairs) take turns, in code order, until
    the budget is spent; within a label the picks are evenly spaced in flat-index order.
    """
    key = prediction["phase"].astype(np.int64)
    if "gd_outcome" in prediction:
        key = key + 16 * prediction["gd_outcome"].astype(np.int64)
    eligible = prediction["width"] <= settings.max_width
    groups = [np.flatnonzero(eligible & (key == k)) for k in np.unique(key[eligible])]
    take = [0] * len(groups)
    budget = settings.points
    while budget > 0 and any(t < g.size for t, g in zip(take, groups)):
        for i, g in enumerate(groups):
            if budget > 0 and take[i] < g.size:
                take[i] += 1
                budget -= 1
    picks = [g[((np.arange(k) + 0.5) * g.size / k).astype(np.int64)] for g, k in zip(groups, take) if k]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def prediction_arrays(config: Config, map_result) -> dict[str, np.ndarray]:
    """The map's labels and widths over the whole grid (flat); `map_result` = sweep.run(config)."""
    labels = map_result.arrays
    flat = np.arange(sweep.grid_size(config))
    widths = np.concatenate([sweep.model_values(config, flat[lo:hi])[0]["width"]
                             for lo, hi in sweep.chunks(0, flat.size, sweep.DEFAULT_CHUNK)])
    out = {"phase": labels["phase"].reshape(-1), "width": widths}
    if "gd_outcome" in labels:
        out["gd_outcome"] = labels["gd_outcome"].reshape(-1)
    return out


# ---------------------------------------------------------------- one point

def _gram_of(u: np.ndarray, w: np.ndarray) -> core.Gram:
    """The Gram of the vectors, with V shrunk by ulps if rounding made V^2 > U W (parallel vectors), and G = 0
    exactly for d = 1 (two numbers are always parallel; rounded products would leave G ~ 1e-17 U W)."""
    U, W, V = float(u @ u), float(w @ w), float(u @ w)
    while Fraction(V) ** 2 > Fraction(U) * Fraction(W):
        V = float(np.nextafter(V, 0.0))
    gram = core.explicit_gram(U, W, V)
    return gram._replace(G=np.zeros_like(gram.G)) if u.size == 1 else gram


def _vectors_from_gram(width: int, gram: core.Gram) -> tuple[np.ndarray, np.ndarray]:
    """u0 = sqrt(U) e1, w0 = (V / sqrt(U)) e1 + sqrt(G / U) e2: vectors with the Gram (U, W, V), in R^d, or in
    R^2 when d = 1 but G > 0 (the dynamics see only the Gram; two numbers could not have G > 0)."""
    U, W, V, G = (_scalar(x) for x in gram)
    width = max(width, 2) if G > 0 else width
    u, w = np.zeros(width), np.zeros(width)
    if U > 0:
        u[0], w[0] = math.sqrt(U), V / math.sqrt(U)
        if width > 1:
            w[1] = math.sqrt(G / U)
    else:
        w[0] = math.sqrt(W)
    return u, w


def _record_steps(total: int, records: int) -> np.ndarray:
    """0 and about `records` log-spaced integers up to `total` (always included)."""
    if total <= records:
        return np.arange(total + 1, dtype=np.int64)
    return np.unique(np.concatenate([[0], np.rint(np.geomspace(1, total, records)).astype(np.int64), [total]]))


def _scalar(x) -> float:
    return float(np.asarray(x, dtype=float).reshape(-1)[0])


def _flow_span(inv, horizon: float) -> float:
    """Flow time to simulate: the horizon, or (inf) t_learn + 20 tau, the end of training to ~1e-9."""
    if math.isfinite(horizon):
        return horizon
    tau = _scalar(core.relaxation_time(inv))
    t_learn = _scalar(core.t_learn(inv))
    span = (t_learn if math.isfinite(t_learn) else 0.0) + 20.0 * tau
    return span if math.isfinite(span) and span > 0 else 0.0


def _plan(config: Config, inv, settings: Settings) -> tuple[int, float]:
    """(steps, h): GD steps to run and the factor on both learning rates (1 for GD configs)."""
    if config.optimizer == "gd":
        if math.isfinite(config.horizon):
            total = int(config.horizon)
        else:
            # (stepped to rest, not summed by the exact tail: the vectors are trained until m = m* to rounding)
            res = core.gd_outcome(inv, max_steps=config.max_steps, tail=False)
            total = int(_scalar(res.stopped)) * (2 if core.GD_OUTCOMES[int(_scalar(res.outcome))] == "diverges" else 1)
        return max(1, min(total, settings.max_steps)), 1.0
    span = _flow_span(inv, config.horizon)
    theta_max = max(_scalar(inv.ntk_init), _scalar(core.flow_state(inv, np.inf).ntk))
    rate = _scalar(inv.input_var) * theta_max
    if span <= 0 or rate <= 0:
        return 1, 1.0
    h = settings.step / rate
    steps = max(1, math.ceil(span / h))
    if steps > settings.max_steps:  # coarser step, honestly reported in the row
        steps = settings.max_steps
    return steps, span / steps


def _predicted_trace(config: Config, inv, t: np.ndarray, h: float) -> simulate.Trace:
    """The closed form at the recorded times, as a Trace (GD map for GD configs, else the flow at t h)."""
    if config.optimizer == "gd":
        st = core.gd_state(inv, t.astype(np.int64))
    else:
        st = core.flow_state(inv, t * h)
    f = {k: np.asarray(getattr(st, k), dtype=float).reshape(-1) for k in ("m", "ntk", "alignment", "norm_u2",
                                                                          "norm_w2", "loss")}
    G = np.full(t.shape, _scalar(inv.gram.G))
    nan = np.full(t.shape, np.nan)
    return simulate.Trace(t=t.astype(float), m=f["m"], ntk=f["ntk"], alignment=f["alignment"],
                          norm_u2=f["norm_u2"], norm_w2=f["norm_w2"], loss=f["loss"], U=f["norm_u2"],
                          W=f["norm_w2"], V=nan, imbalance=nan, gram_det=G)


def _measured_trace(config: Config, settings: Settings, u0, w0, hyper: dict, t: np.ndarray, h: float):
    if settings.method == "flow" and config.optimizer == "flow":
        return simulate.integrate_flow(u0, w0, **hyper, times=t.astype(float))
    scaled = {**hyper, "lr_u": hyper["lr_u"] * h, "lr_w": hyper["lr_w"] * h}
    trace = simulate.gd_vectors(u0, w0, **scaled, steps=t)
    return trace._replace(ntk=trace.ntk / h)  # back to the NTK of the configured rates


def _errors(pred: simulate.Trace, meas: simulate.Trace, teacher: float) -> dict[str, float | None]:
    ok = np.isfinite(pred.m) & np.isfinite(meas.m) & np.isfinite(pred.ntk) & np.isfinite(meas.ntk)
    if not ok.any():
        return {f: None for f in (*ERROR_FIELDS, "worst")}
    p = {k: getattr(pred, k)[ok] for k in ("m", "ntk", "alignment")}
    q = {k: getattr(meas, k)[ok] for k in ("m", "ntk", "alignment")}
    scale = np.maximum(abs(teacher), np.maximum(np.abs(p["m"]), np.abs(q["m"])))
    with np.errstate(invalid="ignore", divide="ignore"):
        err = {
            "m": float(np.max(np.where(scale > 0, np.abs(q["m"] - p["m"]) / np.where(scale > 0, scale, 1), 0.0))),
            "ntk": float(np.max(np.where(p["ntk"] > 0, np.abs(q["ntk"] / np.where(p["ntk"] > 0, p["ntk"], 1) - 1),
                                         np.abs(q["ntk"])))),
            "alignment": float(np.max(np.abs(q["alignment"] - p["alignment"]))),
        }
    if ok[-1] and pred.ntk[0] > 0 and meas.ntk[0] > 0:
        cp, cm = pred.ntk[-1] / pred.ntk[0] - 1, meas.ntk[-1] / meas.ntk[0] - 1
        err["ntk_change"] = float(abs(cm - cp) / max(1.0, abs(cp)))
    else:
        err["ntk_change"] = None
    err["worst"] = max(v for v in err.values() if v is not None)
    return err


def _summary_values(trace: simulate.Trace) -> dict[str, float | None]:
    def num(x):
        x = float(x)
        return x if math.isfinite(x) else None

    finite = bool(np.all(np.isfinite(trace.m)))
    change = float(measured_order_parameters(trace).ntk_change) if finite else None
    return {"m": num(trace.m[-1]), "ntk": num(trace.ntk[-1]), "alignment": num(trace.alignment[-1]),
            "ntk_change": change if change is None or math.isfinite(change) else None, "diverged": not finite}


def validate_point(config: Config, index: int, settings: Settings, map_label: str) -> dict:
    """Simulate grid point `index` and compare it with the closed form on the same vectors (a JSON-ready row)."""
    values, problem = sweep.model_values(config, np.array([index]))
    v = {k: _scalar(a) for k, a in values.items()}
    width = int(v["width"])
    hyper = {"output_scale": v["output_scale"], "lr_u": v["lr_u"], "lr_w": v["lr_w"], "input_var": v["input_var"],
             "teacher": v["teacher"]}
    if config.init_kind == "gram":  # the dynamics depend on the Gram only: build vectors that have it
        u0, w0 = _vectors_from_gram(width, problem.gram)
    else:
        rng = np.random.default_rng([config.seed, index])
        u0, w0 = simulate.sample_vectors(width, v["init_var_u"], v["init_var_w"], rng)
    gram = _gram_of(u0, w0)
    inv = core.invariants(core.Problem(hyper["output_scale"], hyper["lr_u"], hyper["lr_w"], hyper["input_var"],
                                       hyper["teacher"], gram))
    steps, h = _plan(config, inv, settings)
    if settings.method == "flow" and config.optimizer == "flow":
        span = steps * h
        t = np.unique(np.concatenate([[0.0], np.geomspace(span / 1e4, span, settings.records)]))
        h_rec, t_int = 1.0, t
    else:
        t_int = _record_steps(steps, settings.records)
        h_rec, t = h, t_int
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        meas = _measured_trace(config, settings, u0, w0, hyper, t_int, h_rec)
        pred = _predicted_trace(config, inv, np.asarray(t, dtype=float), h_rec)
    th = (config.ntk_threshold, config.alignment_threshold)
    position = np.unravel_index(index, config.shape)
    row = {
        "index": int(index),
        "coords": {name: float(config.axes[k].values[position[k]]) if name != "seed" else int(position[k])
                   for k, name in enumerate(config.axis_names)},
        "width": int(u0.size),
        "seed": None if config.init_kind == "gram" else [int(config.seed), int(index)],
        "method": "flow" if settings.method == "flow" and config.optimizer == "flow" else "gd",
        "steps": int(steps),
        "lr_factor": h if config.optimizer == "flow" and settings.method == "gd" else 1.0,
        "time": float(steps * h),
        "gram": [float(gram.U), float(gram.W), float(gram.V)],
        "map_label": map_label,
        "predicted_label": measured_label(pred, hyper["teacher"], *th) or "diverged",
        "measured_label": measured_label(meas, hyper["teacher"], *th) or "diverged",
        "predicted": _summary_values(pred),
        "measured": _summary_values(meas),
        "error": _errors(pred, meas, hyper["teacher"]),
    }
    if config.optimizer == "gd":
        res = core.gd_outcome(inv, max_steps=config.max_steps)
        row["predicted_gd_outcome"] = core.GD_OUTCOMES[int(_scalar(res.outcome))]
    return row


# ---------------------------------------------------------------- the run

def _task(args) -> dict:
    config, index, settings, label = args
    return validate_point(config, index, settings, label)


def _execute(tasks: list, workers: int, progress: Callable[[int], None] | None):
    # one point per chunk: points differ widely in cost (width, steps)
    return ordered_map(_task, tasks, workers, progress, chunksize=1)


# ---------------------------------------------------------------- the job kind (phasediag.jobs)

SUPPORTS = frozenset({"shard"})
OUT_SUFFIX = "validate"  # outputs/<name>/validate/: beside the sweep's own results


@dataclass(frozen=True)
class Validation:
    """A resolved validation: the sweep config, the settings, the predicted map and the selected points."""

    config: Config
    settings: Settings
    map_result: Any = field(compare=False, repr=False)
    prediction: dict = field(compare=False, repr=False)
    selected: np.ndarray = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def description(self) -> str:
        return self.config.description

    @property
    def resolved(self) -> dict:
        return {**self.config.resolved, "validate": asdict(self.settings)}


def read(root: Located, source: str, options) -> Validation:
    """The sweep config with the validation settings (options.settings); the predicted map is evaluated and
    the points chosen here, so that every problem is reported before anything is simulated or written."""
    config = config_from_root(root)
    settings = options.settings or Settings()
    settings.check(config)
    sweep.validate(config)
    map_result = sweep.run(replace(config, metrics=None))  # the labels need the phase (and GD outcome)
    prediction = prediction_arrays(config, map_result)
    selected = select_points(config, prediction, settings)
    if selected.size == 0:
        raise FieldError("max_width", f"no grid point has width <= {settings.max_width:,}; raise it")
    return Validation(config, settings, map_result, prediction, selected)


def _mine(spec: Validation, shard) -> np.ndarray:
    if shard is None:
        return spec.selected
    lo, hi = shard.bounds(spec.selected.size)
    return spec.selected[lo:hi]


def units(spec: Validation, options) -> int:
    return int(_mine(spec, options.shard).size)


def execute(spec: Validation, options, checkpoint) -> Result:
    started = time.perf_counter()
    config, settings = spec.config, spec.settings
    tasks = [(config, int(i), settings, core.PHASES[int(spec.prediction["phase"][i])])
             for i in _mine(spec, options.shard)]
    rows = list(_execute(tasks, options.workers, options.progress))
    shard = options.shard
    body = {"name": config.name, "config_hash": sweep.config_hash(config), "optimizer": config.optimizer,
            "settings": asdict(settings),
            "selected": [int(i) for i in spec.selected],
            "shard": None if shard is None else {"index": shard.index, "count": shard.count},
            "rows": rows}
    meta = {"kind": "validation", "name": config.name, "settings": asdict(settings), "workers": options.workers,
            "timing": {"simulate_s": round(time.perf_counter() - started, 6)}}
    return _result(body, meta, spec.map_result)


_NUMBER, _TEXT, _INTEGER = (int, float), (str,), (int,)
#: what each field of a row holds (a tuple of types; None also allowed where the tuple ends with None)
_ROW = {"index": _INTEGER, "width": _INTEGER, "steps": _INTEGER, "method": _TEXT, "lr_factor": _NUMBER,
        "time": _NUMBER, "map_label": _TEXT, "predicted_label": _TEXT + (type(None),),
        "measured_label": _TEXT + (type(None),)}
_ORDER = {"m": _NUMBER + (type(None),), "ntk": _NUMBER + (type(None),), "alignment": _NUMBER + (type(None),),
          "ntk_change": _NUMBER + (type(None),), "diverged": (bool,)}


#: the fields of a validation's meta.json beyond the common ones (checked when a run directory is read)
META_FIELDS = {"settings": dict}


def _check_rows(body) -> None:
    """ResultsError unless validation.json holds rows of the fields and types a validation writes."""
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise ResultsError("validation.json holds no list of rows")
    for k, row in enumerate(body["rows"]):
        if not isinstance(row, dict):
            raise ResultsError(f"row {k} is not a mapping")
        checks = [(f, row.get(f, ...), t) for f, t in _ROW.items()]
        checks += [(f"{part}.{f}", (row.get(part) if isinstance(row.get(part), dict) else {}).get(f, ...), t)
                   for part in ("predicted", "measured") for f, t in _ORDER.items()]
        checks += [(f"error.{f}", v, _NUMBER + (type(None),)) for f, v in (row.get("error") or {}).items()]
        checks += [(f"coords.{f}", v, _NUMBER) for f, v in (row.get("coords") or {}).items()]
        for field_name, value, types in checks:
            if value is ... or not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ResultsError(f"row {k}: {field_name} is {value if value is not ... else 'missing'!r:.40}, "
                                   f"not what a validation writes")
        if row["index"] < 0 or row["width"] < 1 or row["steps"] < 0:
            raise ResultsError(f"row {k}: index, width or steps out of range")


def _result(body: dict, meta: dict, map_result=None) -> Result:
    """The rows as data variables over the dimension `index` (the flat grid index of each point)."""
    _check_rows(body)
    columns = _columns(body["rows"])
    index = columns.pop("index", np.zeros(0, dtype=np.int64))  # an empty shard (more shards than points)
    meta = {**meta, "coords": ["index"], "dims": {name: ["index"] for name in columns}}
    return Result(coords={"index": index}, arrays=columns, meta=meta, payload={"body": body, "map": map_result})


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Flatten the rows' nested dicts into columns (`predicted_ntk_change`, `coords_d`, ...); None -> NaN in a
    numeric column."""
    flat = [_flatten(r) for r in rows]
    names = list(dict.fromkeys(k for r in flat for k in r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in flat]
        if all(v is None or isinstance(v, (bool, np.bool_)) for v in values) and any(v is not None for v in values):
            columns[name] = np.array([bool(v) for v in values])
        elif all(v is None or isinstance(v, (int, float)) for v in values):
            kind = int if all(isinstance(v, int) for v in values) else float
            columns[name] = np.array([np.nan if v is None else v for v in values], dtype=kind)
        else:
            columns[name] = np.array(["" if v is None else str(v) for v in values])
    return columns


def _flatten(row: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "_"))
        else:
            out[name] = value
    return out


def write_data(result: Result, out: Path) -> list[Path]:
    path = Path(out) / VALIDATION_FILE
    with atomic_write(path) as fh:
        json.dump(result.payload["body"], fh, indent=1, allow_nan=False)
        fh.write("\n")
    return [path]


def _no_constant(text: str):
    raise ValueError(f"{text} is not a number JSON allows")  # (a validation writes with allow_nan=False)


def load_data(directory: Path, meta: dict) -> Result:
    path = Path(directory) / VALIDATION_FILE
    try:
        with store.open_data(directory, meta, VALIDATION_FILE) as fh:
            body = json.loads(fh.read().decode("utf-8"), parse_constant=_no_constant)
        return _result(body, meta)
    except ManifestError:
        raise
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ResultsError(f"{path}: not a readable validation result ({exc})") from None


def summarize(result: Result) -> dict:
    """Counts of label agreement and the worst deviation of every quantity (with its point)."""
    body = result.payload["body"]
    rows = body["rows"]
    worst = {}
    for name in (*ERROR_FIELDS, "worst"):
        vals = [(r["error"][name], r["index"]) for r in rows if r["error"][name] is not None]
        worst[name] = {"value": max(vals)[0], "index": max(vals)[1]} if vals else None
    return {
        "points": len(rows), "optimizer": body["optimizer"], "selected": len(body["selected"]),
        "shard": body["shard"],
        "labels_agree": sum(r["predicted_label"] == r["measured_label"] for r in rows),
        "map_labels_agree": sum(r["map_label"] == r["measured_label"] for r in rows),
        "worst_error": worst, "rows": rows,
    }


def text(info: dict) -> str:
    """Per-point table (predicted vs measured) and the worst deviations."""
    rows = info.get("rows", [])
    head = ["index", "width", "steps", "map", "predicted", "measured", "dNTK pred", "dNTK meas", "zeta pred",
            "zeta meas", "worst err"]
    table = [[str(r["index"]), str(r["width"]), str(r["steps"]), r["map_label"], str(r["predicted_label"]),
              str(r["measured_label"]), _fmt(r["predicted"]["ntk_change"]), _fmt(r["measured"]["ntk_change"]),
              _fmt(r["predicted"]["alignment"]), _fmt(r["measured"]["alignment"]), _fmt(r["error"]["worst"])]
             for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
    n = info["points"]
    lines.append("")
    lines.append(f"{info['name']}: {n} points -> {info['out']}; labels: {info['labels_agree']}/{n} measured = "
                 f"predicted (same vectors), {info['map_labels_agree']}/{n} measured = map"
                 + (" (the map's labels are gradient-flow labels)" if info["optimizer"] == "gd" else ""))
    lines.append("worst deviation: " + ", ".join(
        f"{k} {_fmt(v['value'])} (point {v['index']})" for k, v in info["worst_error"].items() if v is not None))
    return "\n".join(lines)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def merge(directories: list[Path], out: Path, plot: bool) -> Result:
    """Join validate shard directories (any order) into one validation (identical to an unsharded run)."""
    parts = [load_data(d, store.load_meta(d)) for d in directories]
    bodies = [p.payload["body"] for p in parts]
    first = bodies[0]
    if any(b.get("shard") is None for b in bodies):
        raise ConfigError("merge takes validate shard directories (written with --shard K/N)")
    if any(b["config_hash"] != first["config_hash"] or b["settings"] != first["settings"] for b in bodies):
        raise ConfigError("the validate shards come from different configs or settings")
    count = first["shard"]["count"]
    got = sorted(b["shard"]["index"] for b in bodies)
    if got != list(range(1, count + 1)):
        raise ConfigError(f"need validate shards 1..{count} exactly once, got {got}")
    ordered = sorted(bodies, key=lambda b: b["shard"]["index"])
    body = {**first, "shard": None, "rows": [r for b in ordered for r in b["rows"]]}
    meta = {**store.result_meta(parts[0].meta), "shard": None, "timing": {}, "merged_from": len(bodies)}
    result = _result(body, meta)
    result.meta["files"] = [p.name for p in write_data(result, out)]
    return result


def figures(result: Result):
    """validate__phase_overlay__<y>_vs_<x> (predicted map, markers coloured by measured label; a 2-D grid
    only) and validate__predicted_vs_measured (parity plots of ntk_change and final alignment)."""
    from functools import partial

    from phasediag.plots import validation as validate_plots

    body = result.payload["body"]
    config = config_from_root(located({k: v for k, v in result.meta["config"].items() if k != "validate"}))
    stems = []
    if config.plot.get("y"):
        stems.append((f"validate__phase_overlay__{config.plot['y']}_vs_{config.plot['x']}",
                      partial(validate_plots.overlay_figure, config, body, None, result.payload.get("map"))))
    stems.append(("validate__predicted_vs_measured", partial(validate_plots.parity_figure, body)))
    return stems
