"""Exact phase boundaries: where the label of a sweep (phase, or GD outcome) changes along one axis.

For every line of the grid along the `along` variable (every combination of the other axes' values) and every
pair of neighbouring grid values whose labels differ, the crossing is located by bisection of the label,
evaluated exactly (the closed form, or the exact GD map) at points between the two. Between neighbouring values
every order parameter is a smooth function of the swept variable, so the label changes exactly where the order
parameter that decides its rule crosses its threshold (|ntk_change| = ntk_threshold, max(alignment_gain,
disalignment) = alignment_threshold, alignment_gain = disalignment) or where the GD outcome's certificate
changes; the bisection stops when the bracket is RELATIVE_WIDTH of the value wide (a relative accuracy better
than 1e-13). Each grid cell is first sampled at SAMPLES interior points and every sub-interval whose labels
differ is bisected; a bracket whose right-hand label is not the one expected is searched again from there, so
a cell that holds several crossings (A | C | B between two grid points) yields all of them, and each row says
how many crossings its cell holds.

The result is a tidy table (`find`): one row per crossing, with every sweep variable's value (the fixed
coordinates of the line, and the crossing value of `along`), the labels below and above it, the rule that
decided it and, for the phase, the order parameters at the crossing. Its rows depend only on the config and
the grid's labels, never on how the grid was chunked, sharded or parallelized.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from phasediag import core
from phasediag.config.sweep import BoundarySpec, Config

__all__ = ["COLUMNS", "RULES", "find", "find_all", "label_at", "rule_of", "fit_slopes", "exact_slope"]

SAMPLES = 8  # interior points sampled in a grid cell whose labels differ (found: sub-cells with changes)
RELATIVE_WIDTH = 2.0 ** -46  # 1.4e-14: bisection stops when the bracket is this wide relative to its value
MAX_ROUNDS = 64  # searches of a cell (each finds at least one crossing): cells with more are flagged

#: the rule each pair of labels is decided by (docs/theory.md section 6): regime, rotation, mechanism, saddle
RULES = ("ntk_threshold", "alignment_threshold", "mechanism", "saddle", "gd_outcome")
# label -> (kernel regime, rotated, mechanism is alignment); None: the bit does not apply to that label
_PHASE_BITS = {
    "kernel": (1, 0, None), "kernel_aligning": (1, 1, 1), "kernel_disaligning": (1, 1, 0),
    "alignment": (0, 1, 1), "disalignment": (0, 1, 0), "rescaling": (0, 0, None), "saddle": None,
}
ORDER_PARAMETERS = ("ntk_change", "alignment_gain", "disalignment")

#: the table's columns after the sweep variables (one column each)
COLUMNS = ("boundary", "along", "of", "rule", "below", "above", "lower", "upper", "crossings_in_cell",
           *ORDER_PARAMETERS)


def rule_of(of: str, below: str, above: str) -> str:
    """The rule that decides a change of label `below` -> `above` of `of` (several joined by '+')."""
    if of != "phase":
        return "gd_outcome"
    if _PHASE_BITS[below] is None or _PHASE_BITS[above] is None:
        return "saddle"
    (k0, r0, m0), (k1, r1, m1) = _PHASE_BITS[below], _PHASE_BITS[above]
    rules = [name for name, differs in (("ntk_threshold", k0 != k1), ("alignment_threshold", r0 != r1),
                                        ("mechanism", r0 == r1 == 1 and m0 != m1)) if differs]
    return "+".join(rules)


def label_at(config: Config, of: str, variables: dict[str, np.ndarray]) -> np.ndarray:
    """Codes of `of` (phase, or gd_outcome) at the sweep-variable values `variables` (name -> 1-D array),
    evaluated as a sweep evaluates its grid points (int8)."""
    from phasediag.engine.metrics import PointSet, metric_for

    points = PointSet(_invariants_at(config, variables), config.horizon, config.ntk_threshold,
                      config.alignment_threshold, config.max_steps, config.optimizer)
    n = len(next(iter(variables.values())))
    return core.broadcast(np.asarray(metric_for(of, config.kind).compute(points), dtype=np.int8), (n,))


def _invariants_at(config: Config, variables: dict[str, np.ndarray]) -> core.Invariants:
    """The core's invariants at `variables`, checked and evaluated as a sweep evaluates its grid points."""
    from phasediag.engine.sweep import values_at

    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        _, problem = values_at(config, variables)
    return core.invariants(problem)


def _order_at(config: Config, variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The gradient flow's order parameters (docs/theory.md section 6) at `variables`."""
    order = core.order_parameters(_invariants_at(config, variables), config.horizon)
    n = len(next(iter(variables.values())))
    return {name: core.broadcast(np.asarray(getattr(order, name), dtype=float), (n,)) for name in ORDER_PARAMETERS}


def _between(lo: np.ndarray, hi: np.ndarray, fraction: np.ndarray | float, log: bool) -> np.ndarray:
    """The point a `fraction` of the way from lo to hi: geometrically on a log axis (lo, hi > 0)."""
    if log:
        return np.exp(np.log(lo) + fraction * (np.log(hi) - np.log(lo)))
    return lo + fraction * (hi - lo)


def _midpoint(lo: np.ndarray, hi: np.ndarray, log: bool) -> np.ndarray:
    mid = np.sqrt(lo) * np.sqrt(hi) if log else lo + 0.5 * (hi - lo)
    return np.clip(mid, np.minimum(lo, hi), np.maximum(lo, hi))


class _Line:
    """The lines of the grid along one axis: the other variables' values per line."""

    def __init__(self, config: Config, along: str):
        self.config, self.along = config, along
        self.k = [a.name for a in config.axes].index(along)
        self.axis = config.axes[self.k].values
        self.others = [a for a in config.axes if a.name != along]
        self.log = bool(np.all(self.axis > 0))

    def variables(self, line: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        """Sweep-variable values at positions x on the lines `line` (flat indices over the other axes)."""
        shape = tuple(len(a.values) for a in self.others)
        index = np.unravel_index(line, shape) if shape else ()
        out = {a.name: a.values[i] for a, i in zip(self.others, index)}
        out[self.along] = np.asarray(x, dtype=float)
        return {a.name: out[a.name] for a in self.config.axes}


def _bisect(labels: Callable, line: np.ndarray, lo: np.ndarray, hi: np.ndarray, left: np.ndarray,
            log: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrink every bracket [lo, hi] (label `left` at lo, another at hi) to RELATIVE_WIDTH; returns (lo, hi,
    the label at hi)."""
    lo, hi = lo.copy(), hi.copy()
    right = labels(line, hi)
    open_ = np.ones(lo.size, dtype=bool)
    while True:
        width = np.abs(hi - lo)
        open_ &= width > RELATIVE_WIDTH * np.maximum(np.abs(lo), np.abs(hi))
        idx = np.flatnonzero(open_)
        if idx.size == 0:
            return lo, hi, right
        mid = _midpoint(lo[idx], hi[idx], log)
        stuck = (mid == lo[idx]) | (mid == hi[idx])  # (adjacent floats: as narrow as the bracket gets)
        open_[idx[stuck]] = False
        idx, mid = idx[~stuck], mid[~stuck]
        if idx.size == 0:
            continue
        got = labels(line[idx], mid)
        same = got == left[idx]
        lo[idx[same]] = mid[same]
        hi[idx[~same]], right[idx[~same]] = mid[~same], got[~same]


#: grid points whose labels are compared at a time: the label changes of a grid of any size (memory-mapped)
#: are found in bounded memory
CHANGE_BLOCK = 1 << 22


def _changes(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, cell, label at the cell's top) of every change of `codes` between neighbours along axis k; a
    line is the flat C-order index over the other axes, a cell j the pair of values (j, j + 1)."""
    lines = np.moveaxis(codes, k, -1)  # (a view: blocks of its leading axis are read at a time)
    n = lines.shape[-1]
    if lines.ndim == 1:
        lines = lines[None, :]
    per_row = int(np.prod(lines.shape[1:-1], dtype=np.int64))  # lines in one index of the leading axis
    step = max(1, CHANGE_BLOCK // max(1, per_row * n))
    found = []
    for start in range(0, lines.shape[0], step):
        block = np.asarray(lines[start:start + step]).reshape(-1, n)
        line, cell = np.nonzero(block[:, 1:] != block[:, :-1])
        found.append((line + start * per_row, cell, block[line, cell + 1]))
    return tuple(np.concatenate(parts) for parts in zip(*found)) if found else (
        np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8))


def find(config: Config, spec: BoundarySpec, codes: np.ndarray, entry: int = 1) -> dict[str, np.ndarray]:
    """The crossings of boundary `spec` as table columns (see the module doc; `codes`: the grid's labels of
    spec.of, shaped config.shape, e.g. memory-mapped). `entry`: the boundary's number in the table."""
    from phasediag.engine.metrics import LEGENDS

    grid = _Line(config, spec.along)
    names = LEGENDS[spec.of]
    line, cell, top = _changes(np.reshape(codes, config.shape), grid.k)

    def labels(which: np.ndarray, x: np.ndarray) -> np.ndarray:
        return label_at(config, spec.of, grid.variables(which, x))

    x0, x1 = grid.axis[cell], grid.axis[cell + 1]
    found: list[tuple[np.ndarray, ...]] = []
    # rounds: sample the open intervals, bisect every sub-interval whose labels differ; a bracket whose label at
    # its top is not the sub-interval's top label leaves an interval [top of bracket, top] for the next round
    owner, lo, hi = np.arange(line.size), x0, x1
    for _ in range(MAX_ROUNDS):
        if owner.size == 0:
            break
        fractions = np.linspace(0.0, 1.0, SAMPLES + 2)
        xs = _between(lo[:, None], hi[:, None], fractions[None, :], grid.log)
        xs[:, 0], xs[:, -1] = lo, hi
        got = labels(np.repeat(line[owner], fractions.size), xs.reshape(-1)).reshape(xs.shape)
        got[:, -1] = top  # (the expected label at the top: a grid value, or the end of a found bracket)
        who, j = np.nonzero(got[:, 1:] != got[:, :-1])
        b_lo, b_hi, b_right = _bisect(labels, line[owner[who]], xs[who, j], xs[who, j + 1], got[who, j], grid.log)
        found.append((owner[who], b_lo, b_hi, got[who, j], b_right))
        again = b_right != got[who, j + 1]  # another change between the bracket and the sub-interval's top
        owner, lo, hi, top = owner[who[again]], b_hi[again], xs[who[again], j[again] + 1], got[who[again], j[again] + 1]
    return _table(config, grid, spec, entry, names, line, cell, found)


def _table(config: Config, grid: _Line, spec: BoundarySpec, entry: int, names, line, cell,
           found) -> dict[str, np.ndarray]:
    if found:
        owner, lo, hi, below, above = (np.concatenate(parts) for parts in zip(*found))
    else:
        owner = np.zeros(0, dtype=int)
        lo = hi = np.zeros(0)
        below = above = np.zeros(0, dtype=np.int8)
    value = _midpoint(lo, hi, grid.log) if lo.size else lo
    order = np.lexsort((value, owner))  # by line (grid order), then along the axis
    owner, value, below, above = owner[order], value[order], below[order], above[order]
    counts = np.bincount(owner, minlength=line.size)[owner] if owner.size else owner
    where = grid.variables(line[owner], value)
    table = {name: np.asarray(values, dtype=float) for name, values in where.items()}
    n = value.size
    below_names = np.array([names[c] for c in below], dtype=str) if n else np.zeros(0, dtype=str)
    above_names = np.array([names[c] for c in above], dtype=str) if n else np.zeros(0, dtype=str)
    table.update({
        "boundary": np.full(n, entry, dtype=np.int64),
        "along": np.full(n, spec.along, dtype=object).astype(str),
        "of": np.full(n, spec.of, dtype=object).astype(str),
        "rule": np.array([rule_of(spec.of, b, a) for b, a in zip(below_names, above_names)], dtype=str)
        if n else np.zeros(0, dtype=str),
        "below": below_names, "above": above_names,
        "lower": grid.axis[cell[owner]] if n else np.zeros(0), "upper": grid.axis[cell[owner] + 1] if n else np.zeros(0),
        "crossings_in_cell": np.asarray(counts, dtype=np.int64),
    })
    order_values = _order_at(config, where) if n and spec.of == "phase" else {}
    for name in ORDER_PARAMETERS:
        table[name] = order_values.get(name, np.full(n, np.nan))
    return table


def find_all(config: Config, codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every `boundaries:` entry's crossings, one table (`codes`: label name -> the grid's codes)."""
    parts = [find(config, spec, codes[spec.of], entry=k + 1) for k, spec in enumerate(config.boundaries)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}


def _exponent_of_rule(config: Config, rule: str, variable: str):
    """The leading power of `variable` in the quantity whose threshold `rule` is, at the end of training with
    a typical initialization (docs/theory.md section 11): rho = 2c|m*|/Theta0 (ntk_threshold), A =
    |m*|/(kappa sqrt(G)) (alignment_threshold); from the leading powers of the hyperparameters (section 7's
    power counting: Theta0 = kappa^2 d (eta_w sigma_u^2 + eta_u sigma_w^2) takes the larger of its two
    terms). None if it does not apply or a hyperparameter is not a power of the variable."""
    from phasediag.config.expr import leading_exponent

    if not (np.isinf(config.horizon) and config.init_kind == "typical") or rule not in (
            "ntk_threshold", "alignment_threshold"):
        return None
    quantities = {**config.model, "teacher": config.data["teacher"]}
    e = {key: leading_exponent(quantities[key].tree, variable) for key in (
        "width", "output_scale", "lr_u", "lr_w", "init_var_u", "init_var_w", "teacher")}
    if any(v is None for v in e.values()):
        return None
    if rule == "alignment_threshold":
        return e["teacher"] - e["output_scale"] - e["width"] - (e["init_var_u"] + e["init_var_w"]) / 2
    ntk_init = 2 * e["output_scale"] + e["width"] + max(e["lr_w"] + e["init_var_u"], e["lr_u"] + e["init_var_w"])
    c = e["output_scale"] + (e["lr_u"] + e["lr_w"]) / 2
    return c + e["teacher"] - ntk_init


def exact_slope(config: Config, spec: BoundarySpec, rule: str):
    """The exponent p of the boundary along ~ against^p as `against` -> infinity, exactly (a Fraction), where
    docs/theory.md section 11 gives the boundary as a threshold of one power law (`_exponent_of_rule`): on it
    along^e_along against^e_against is constant, so p = -e_against / e_along. None elsewhere."""
    along = _exponent_of_rule(config, rule, spec.along)
    against = _exponent_of_rule(config, rule, spec.against) if spec.against else None
    if along is None or against is None or along == 0:
        return None
    return -against / along


def fit_slopes(config: Config, table: dict[str, np.ndarray]) -> list[dict]:
    """For every entry with `against`: per kind of crossing (labels below and above) and per line of the other
    axes, the least-squares slope of log|crossing| against log(against) over the lines that hold exactly one
    such crossing, with the number of points and the range of `against` it spans; beside it the exact
    exponent (`exact_slope`: "p/q" text and its value) where one exists, else None."""
    fits = []
    for k, spec in enumerate(config.boundaries):
        if spec.against is None:
            continue
        mine = table["boundary"] == k + 1
        rest = [a.name for a in config.axes if a.name not in (spec.along, spec.against)]
        keys = sorted({(b, a, *(table[r][i] for r in rest)) for i, (b, a) in
                       enumerate(zip(table["below"], table["above"])) if mine[i]})
        for key in keys:
            pick = mine & (table["below"] == key[0]) & (table["above"] == key[1])
            for r, v in zip(rest, key[2:]):
                pick &= table[r] == v
            x, y = table[spec.against][pick], np.abs(table[spec.along][pick])
            once = np.unique(x, return_counts=True)
            single = np.isin(x, once[0][once[1] == 1]) & (x > 0) & (y > 0)
            x, y = x[single], y[single]
            fit = {"boundary": k + 1, "along": spec.along, "against": spec.against, "below": str(key[0]),
                   "above": str(key[1]), "rule": rule_of(spec.of, key[0], key[1]), "points": int(x.size),
                   **{r: float(v) for r, v in zip(rest, key[2:])}}
            exact = exact_slope(config, spec, fit["rule"])
            fit.update(exact_slope=None if exact is None else str(exact),
                       exact_slope_value=None if exact is None else float(exact))
            if x.size >= 2 and np.ptp(np.log(x)) > 0:
                slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
                residual = np.log(y) - (slope * np.log(x) + intercept)
                fit.update(slope=float(slope), prefactor=float(np.exp(intercept)),
                           worst_log_residual=float(np.max(np.abs(residual))),
                           against_range=[float(x.min()), float(x.max())])
            fits.append(fit)
    return fits
