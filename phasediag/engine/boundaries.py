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
how many crossings its cell holds. Not seen: a pair A | B | A between two points whose labels agree (grid
values, or sample points); a cell that needs more than MAX_ROUNDS searches is marked incomplete.

With a sampled initialization the labels are those of quantiles over the seeds, every seed's draws held fixed
along a line (`_Evaluator`; docs/theory.md section 11), evaluated afresh at the grid values of each line.

The result is a tidy table (`find`): one row per crossing, with every sweep variable's value (the fixed
coordinates of the line, and the crossing value of `along`), the labels below and above it, the rule that
decided it, a bound on its distance to the exact crossing (`error`) and, for the phase, the order parameters at
the crossing (with seeds: their quantiles, |ntk_change| for ntk_change; NaN on gd_outcome rows, which no flow
order parameter decides). Its rows depend only on the config and the grid's labels, never on how the grid was
chunked, sharded or parallelized.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from phasediag import core
from phasediag.config.sweep import BoundarySpec, Config

__all__ = ["COLUMNS", "RULES", "find", "find_all", "label_at", "rule_of", "fit_slopes", "exact_slope", "column_kinds",
           "table_problem", "first_difference"]

SAMPLES = 8  # interior points sampled in a grid cell whose labels differ (found: sub-cells with changes)
RELATIVE_WIDTH = 2.0 ** -46  # 1.4e-14: bisection stops when the bracket is this wide relative to its value
MAX_ROUNDS = 64  # searches of a cell (each finds at least one crossing): cells with more are flagged

#: the rule each pair of labels is decided by (docs/theory.md section 6): regime, rotation, mechanism, saddle
RULES = ("ntk_threshold", "alignment_threshold", "mechanism", "saddle", "gd_outcome")
ORDER_PARAMETERS = ("ntk_change", "alignment_gain", "disalignment")
_COMPLEMENTS = ("alignment_gain_complement", "disalignment_complement")  # 1 - each, without cancellation

#: the table's columns after the sweep variables (one column each)
COLUMNS = ("boundary", "along", "of", "rule", "below", "above", "error", "lower", "upper", "crossings_in_cell",
           "cell_complete", *ORDER_PARAMETERS)


def rule_of(of: str, below: str, above: str) -> str:
    """The rule that decides a change of label `below` -> `above` of `of` (several joined by '+')."""
    if of != "phase":
        return "gd_outcome"
    if "saddle" in (core.REGIME[below], core.REGIME[above]):
        return "saddle"
    (k0, r0, m0), (k1, r1, m1) = _phase_bits(below), _phase_bits(above)
    rules = [name for name, differs in (("ntk_threshold", k0 != k1), ("alignment_threshold", r0 != r1),
                                        ("mechanism", r0 and r1 and m0 != m1)) if differs]
    return "+".join(rules)


def _phase_bits(label: str) -> tuple[bool, bool, bool]:
    """(kernel regime, rotated, mechanism is alignment) of a phase label, from core.REGIME and core.MECHANISM."""
    mechanism = core.MECHANISM[label]
    return core.REGIME[label] == "kernel", mechanism in ("alignment", "disalignment"), mechanism == "alignment"


def label_at(config: Config, of: str, variables: dict[str, np.ndarray]) -> np.ndarray:
    """Codes of `of` (phase, or gd_outcome) at the sweep-variable values `variables` (name -> 1-D array),
    evaluated as a sweep evaluates its grid points (int8)."""
    from phasediag.engine.metrics import PointSet, metric_for

    points = PointSet(_invariants_at(config, variables), config.horizon, config.ntk_threshold,
                      config.alignment_threshold, config.max_steps, config.optimizer)
    n = len(next(iter(variables.values())))
    return core.broadcast(np.asarray(metric_for(of, config.kind).compute(points), dtype=np.int8), (n,))


def _invariants_at(config: Config, variables: dict[str, np.ndarray], draws: core.UnitDraws | None = None
                   ) -> core.Invariants:
    """The core's invariants at `variables`, checked and evaluated as a sweep evaluates its grid points
    (`draws`: a sampled initialization's unit draws there)."""
    from phasediag.engine.sweep import values_at

    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        _, problem = values_at(config, variables, draws=draws)
    return core.invariants(problem)


def _order_values(config: Config, inv: core.Invariants, n: int) -> dict[str, np.ndarray]:
    """The gradient flow's order parameters (docs/theory.md section 6) of the n points of `inv` (with their
    complements where the rules use them), and the scale of the cosines they are differences of
    (|zeta_0| + |zeta_T|: their rounding error is relative to it), each of shape (n,)."""
    order = core.order_parameters(inv, config.horizon, complements=core.uses_complements(config.alignment_threshold))
    out = {name: getattr(order, name) for name in (*ORDER_PARAMETERS, *_COMPLEMENTS)
           if getattr(order, name) is not None}
    out["cosine_scale"] = np.abs(order.alignment_init) + np.abs(order.alignment_final)
    return {name: core.broadcast(np.asarray(v, dtype=float), (n,)) for name, v in out.items()}


def _order_at(config: Config, variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`_order_values` at the sweep-variable values `variables`."""
    return _order_values(config, _invariants_at(config, variables), len(next(iter(variables.values()))))


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
        values = config.axes[self.k].values
        self.descending = values.size > 1 and values[0] > values[-1]  # (strictly monotone: the config checks)
        self.axis = values[::-1] if self.descending else values  # cells (j, j + 1) in increasing order
        self.others = [a for a in config.axes if a.name != along]
        self.shape = tuple(len(a.values) for a in self.others)  # of the lines: flat indices over it
        self.lines = int(np.prod(self.shape, dtype=np.int64))
        self.log = bool(np.all(self.axis > 0))

    def first_points(self, line: np.ndarray) -> np.ndarray:
        """The flat index over the sweep axes of the first grid point (along index 0) of lines `line`."""
        index = list(np.unravel_index(line, self.shape)) if self.shape else []
        index.insert(self.k, np.zeros_like(line))
        return np.ravel_multi_index(tuple(index), [len(a.values) for a in self.config.axes])

    def codes(self, codes: np.ndarray) -> np.ndarray:
        """The grid's codes with the along axis in increasing order (a view)."""
        codes = np.reshape(codes, self.config.shape)
        return np.flip(codes, self.k) if self.descending else codes

    def variables(self, line: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        """Sweep-variable values at positions x on the lines `line` (flat indices over the other axes)."""
        index = np.unravel_index(line, self.shape) if self.shape else ()
        out = {a.name: a.values[i] for a, i in zip(self.others, index)}
        out[self.along] = np.asarray(x, dtype=float)
        return {a.name: out[a.name] for a in self.config.axes}


class _Evaluator:
    """Labels and order parameters of one entry at points x of its lines: as the sweep evaluates its grid
    points, or, with a sampled initialization, the phase of the `quantile` over the seeds of each order
    parameter (|ntk_change|, alignment_gain, disalignment; saddle where the quantile of its indicator is at
    least 1/2), every seed's draws those of the line's first grid point, held fixed along the line (the same
    N networks as the variable moves: the quantile is then as smooth in it as each seed's order parameters)."""

    def __init__(self, config: Config, spec: BoundarySpec, grid: _Line, quantile: float | None = None,
                 draws: dict | None = None):
        self.config, self.spec, self.grid, self.quantile = config, spec, grid, quantile
        self.draws = {} if draws is None else draws  # the seeds' unit draws per line (shared by the quantiles)

    def at(self, quantile: float) -> "_Evaluator":
        """The same lines and draws, for another quantile."""
        return _Evaluator(self.config, self.spec, self.grid, quantile, self.draws)

    def _draws_of(self, line: np.ndarray) -> core.UnitDraws:
        """The seeds' unit draws on lines `line` (each seed's at the line's first grid point), flat (points *
        seeds,); drawn once per line: the counter-based draws are most of a sampled point's cost."""
        seeds, lines = self.config.seeds, self.grid.lines
        if not self.draws:
            self.draws.update(drawn=np.zeros(lines, dtype=bool), values=np.zeros((3, lines, seeds)))
        new = np.unique(line[~self.draws["drawn"][line]])
        if new.size:
            width = self.config.model["width"].evaluate(self.grid.variables(new, np.zeros(new.size)))
            width = core.broadcast(np.round(np.asarray(width, dtype=float)), (new.size,))[:, None]
            index = self.grid.first_points(new)[:, None] * seeds + np.arange(seeds)
            self.draws["values"][:, new] = core.unit_draws(width, self.config.seed, index)
            self.draws["drawn"][new] = True
        return core.UnitDraws(*self.draws["values"][:, line].reshape(3, -1))

    def labels(self, line: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self.quantile is None:
            return label_at(self.config, self.spec.of, self.grid.variables(line, x))
        return self._label_of(*self._reduce(self._per_seed(line, x), self.quantile))

    def order(self, line: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.quantile is None:
            return _order_at(self.config, self.grid.variables(line, x))
        return self._reduce(self._per_seed(line, x), self.quantile)[0]

    def _per_seed(self, line: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each seed's order parameters at (line, x) (|ntk_change|, and the saddle indicator), shaped (points,
        seeds)."""
        n, seeds = line.size, self.config.seeds
        variables = self.grid.variables(np.repeat(line, seeds), np.repeat(x, seeds))
        inv = _invariants_at(self.config, variables, self._draws_of(line))
        per_seed = _order_values(self.config, inv, n * seeds)
        per_seed["ntk_change"] = np.abs(per_seed["ntk_change"])
        per_seed["saddle"] = core.broadcast(np.asarray(inv.saddle, dtype=float), (n * seeds,))
        return {name: v.reshape(n, seeds) for name, v in per_seed.items()}

    @staticmethod
    def _reduce(per_seed: dict[str, np.ndarray], quantile: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
        # (1 - the q-quantile of x is the (1 - q)-quantile of 1 - x: linear interpolation is symmetric)
        out = {name: np.quantile(v, 1.0 - quantile if name in _COMPLEMENTS else quantile, axis=1)
               for name, v in per_seed.items()}
        return out, out.pop("saddle") >= 0.5

    def _label_of(self, order: dict[str, np.ndarray], saddle: np.ndarray) -> np.ndarray:
        op = core.OrderParameters(order["ntk_change"], 0.0, 0.0, order["alignment_gain"], order["disalignment"],
                                  False, *(order.get(name) for name in _COMPLEMENTS))
        return core.phase_codes(op, saddle, self.config.ntk_threshold, self.config.alignment_threshold)

    def grid_codes(self, quantiles: tuple[float, ...]) -> dict[float, np.ndarray]:
        """Labels of each quantile at the grid values of every line, shaped (lines, values along); the seeds'
        order parameters evaluated once for all quantiles, in blocks of CHANGE_BLOCK evaluations."""
        axis, lines = self.grid.axis, self.grid.lines
        codes = {q: np.empty((lines, axis.size), dtype=np.int8) for q in quantiles}
        step = max(1, CHANGE_BLOCK // max(1, axis.size * self.config.seeds))
        for start in range(0, lines, step):
            block = np.arange(start, min(lines, start + step))
            per_seed = self._per_seed(np.repeat(block, axis.size), np.tile(axis, block.size))
            for q in quantiles:
                codes[q][block] = self._label_of(*self._reduce(per_seed, q)).reshape(block.size, axis.size)
        return codes


def _bisect(labels: Callable, line: np.ndarray, lo: np.ndarray, hi: np.ndarray, left: np.ndarray,
            log: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrink every bracket [lo, hi] (label `left` at lo, another at hi) to RELATIVE_WIDTH; returns (lo, hi,
    the label at hi)."""
    lo, hi = lo.copy(), hi.copy()
    right = labels(line, hi)
    open_ = np.ones(lo.size, dtype=bool)
    while True:
        _zero_ends(labels, line, lo, hi, left, right, open_)
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


def _zero_ends(labels: Callable, line, lo, hi, left, right, open_) -> None:
    """Brackets with an end exactly at 0 (a linear axis through 0), in place: halving towards 0 never reaches
    a relative width, and would evaluate values outside any supported range (a Gram that underflows). The point
    RELATIVE_WIDTH of the way from 0 to the other end decides: if the other end's label holds there, the label
    changes at 0 itself (the bracket [0, that point] is closed; its crossing is reported at 0); if not, the
    bracket starts there, away from 0."""
    zero = np.flatnonzero(open_ & ((lo == 0) | (hi == 0)) & (lo != hi))
    if zero.size == 0:
        return
    at_lo = lo[zero] == 0
    near = np.where(at_lo, hi[zero], lo[zero]) * RELATIVE_WIDTH
    got = labels(line[zero], near)
    changed = got != left[zero]  # the change lies between lo and near: near is the new hi
    hi[zero[changed]], right[zero[changed]] = near[changed], got[changed]
    lo[zero[~changed]] = near[~changed]
    open_[zero[np.where(at_lo, changed, ~changed)]] = False  # the bracket that was kept touches 0: closed


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


def find(config: Config, spec: BoundarySpec, codes: np.ndarray | None, entry: int = 1) -> dict[str, np.ndarray]:
    """The crossings of boundary `spec` as table columns (see the module doc; `codes`: the grid's labels of
    spec.of, shaped config.shape, e.g. memory-mapped; not used with a sampled initialization, whose
    quantiles' labels are evaluated on each line). `entry`: the boundary's number in the table."""
    grid = _Line(config, spec.along)
    if spec.quantiles is None:
        return _search(_Evaluator(config, spec, grid), *_changes(grid.codes(codes), grid.k), entry)[0]
    sampled = _Evaluator(config, spec, grid)
    codes = sampled.grid_codes(spec.quantiles)
    parts = [_search(sampled.at(q), *_changes(codes[q], 1), entry) for q in spec.quantiles]
    table = {name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]}
    order = np.lexsort((table[spec.along], table["quantile"], np.concatenate([p[1] for p in parts])))
    return {name: values[order] for name, values in table.items()}  # by line, then quantile, then along


def _search(evaluator: _Evaluator, line: np.ndarray, cell: np.ndarray, top: np.ndarray, entry: int
            ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The crossings of one evaluator's labels in the cells (line, cell) whose top carries label `top`
    (`_changes`), and the line of each."""
    grid = evaluator.grid
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
        got = evaluator.labels(np.repeat(line[owner], fractions.size), xs.reshape(-1)).reshape(xs.shape)
        got[:, -1] = top  # (the expected label at the top: a grid value, or the end of a found bracket)
        who, j = np.nonzero(got[:, 1:] != got[:, :-1])
        b_lo, b_hi, b_right = _bisect(evaluator.labels, line[owner[who]], xs[who, j], xs[who, j + 1], got[who, j],
                                      grid.log)
        found.append((owner[who], b_lo, b_hi, got[who, j], b_right))
        again = b_right != got[who, j + 1]  # another change between the bracket and the sub-interval's top
        owner, lo, hi, top = owner[who[again]], b_hi[again], xs[who[again], j[again] + 1], got[who[again], j[again] + 1]
    complete = np.ones(line.size, dtype=bool)
    complete[owner] = False  # (searches left when MAX_ROUNDS ran out)
    return _table(evaluator, entry, line, cell, found, complete)


def _table(evaluator: _Evaluator, entry: int, line, cell, found, complete
           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from phasediag.engine.metrics import LEGENDS

    grid, spec = evaluator.grid, evaluator.spec
    names = LEGENDS[spec.of]
    parts = list(zip(*found)) or [[np.zeros(0, np.int64)], [np.zeros(0)], [np.zeros(0)], *[[np.zeros(0, np.int8)]] * 2]
    owner, lo, hi, below, above = (np.concatenate(p) for p in parts)
    value = np.where((lo == 0) | (hi == 0), 0.0, _midpoint(lo, hi, grid.log))  # (a change at 0: see _zero_ends)
    order = np.lexsort((value, owner))  # by line (grid order), then along the axis
    owner, value, lo, hi, below, above = (x[order] for x in (owner, value, lo, hi, below, above))
    n = value.size
    where = grid.variables(line[owner], value)
    table = {name: np.asarray(values, dtype=float) for name, values in where.items()}
    below_names = np.array([names[c] for c in below] or [""], dtype=str)[:n]
    above_names = np.array([names[c] for c in above] or [""], dtype=str)[:n]
    rules = np.array([rule_of(spec.of, b, a) for b, a in zip(below_names, above_names)] or [""], dtype=str)[:n]
    lower, upper = grid.axis[cell[owner]], grid.axis[cell[owner] + 1]
    order_values = evaluator.order(line[owner], value) if n and spec.of == "phase" else {}
    table.update({"boundary": np.full(n, entry, dtype=np.int64), "along": np.full(n, spec.along).astype(str),
                  "of": np.full(n, spec.of).astype(str)})
    if evaluator.quantile is not None:
        table["quantile"] = np.full(n, evaluator.quantile)
    table.update({
        "rule": rules, "below": below_names, "above": above_names,
        "error": _error(evaluator, line[owner], value, lo, hi, rules, order_values, upper - lower),
        "lower": lower, "upper": upper,
        "crossings_in_cell": np.bincount(owner, minlength=line.size)[owner].astype(np.int64),
        "cell_complete": complete[owner],
    })
    for name in ORDER_PARAMETERS:
        table[name] = order_values.get(name, np.full(n, np.nan))
    return table, line[owner]


#: the quantity each rule compares with its threshold, and its rounding error in the core's evaluation
#: (docs/theory.md section 8: ntk_change relative, cosines absolute; a margin of about 30 over the worst measured)
_EPS = np.finfo(float).eps
_DECIDED_BY = {
    "ntk_threshold": (lambda o: np.abs(o["ntk_change"]), lambda o: 128 * _EPS * np.abs(o["ntk_change"])),
    "alignment_threshold": (lambda o: np.maximum(o["alignment_gain"], o["disalignment"]),
                            lambda o: 64 * _EPS * o["cosine_scale"]),
    "mechanism": (lambda o: o["alignment_gain"] - o["disalignment"], lambda o: 64 * _EPS * o["cosine_scale"]),
}
#: with alignment_threshold above 1/2 the rules compare 1 - alignment_gain and 1 - disalignment (core.phase_codes)
_DECIDED_BY_COMPLEMENTS = {
    **_DECIDED_BY,
    "alignment_threshold": (lambda o: np.minimum(o["alignment_gain_complement"], o["disalignment_complement"]),
                            lambda o: 64 * _EPS * np.minimum(o["alignment_gain_complement"],
                                                             o["disalignment_complement"])),
    "mechanism": (lambda o: o["alignment_gain_complement"] - o["disalignment_complement"],
                  lambda o: 64 * _EPS * (o["alignment_gain_complement"] + o["disalignment_complement"])),
}
_STEPS = 2.0 ** np.arange(-20, -1, 3)  # relative steps of the finite difference that estimates a slope: the
#: first whose difference stands clear of the rounding error (1024 times it) is taken


def _error(evaluator: _Evaluator, line, value, lo, hi, rules, order_values, cell_width) -> np.ndarray:
    """A bound on |crossing - exact crossing| in the along variable, per crossing: the bisection's bracket, or,
    where it is larger, the rounding error of the order parameter that decides the rule divided by its slope
    (a threshold the order parameter approaches flatly, e.g. alignment_threshold near 1, is located only as well
    as the order parameter is evaluated); at most the grid cell's width."""
    error = np.maximum(np.abs(value - lo), np.abs(hi - value))
    parts = [rule.split("+") for rule in rules]
    decided = _DECIDED_BY_COMPLEMENTS if core.uses_complements(evaluator.config.alignment_threshold) else _DECIDED_BY
    for rule, (quantity, rounding) in decided.items():
        mine = np.flatnonzero([rule in p for p in parts] or np.zeros(0, bool))
        mine = mine[value[mine] != 0]  # (a change at 0 is a grid value's own label: the bracket bounds it)
        if not order_values or mine.size == 0:
            continue
        noise = np.maximum(rounding({name: v[mine] for name, v in order_values.items()}),
                           _jitter(evaluator, quantity, line[mine], value[mine]))
        spread = np.full(mine.size, np.inf)
        todo = np.arange(mine.size)
        axis = evaluator.grid.axis
        for step in _STEPS:
            x = value[mine[todo]]
            ends = [np.clip(x * (1 + sign * step), axis[0], axis[-1]) for sign in (-1.0, 1.0)]
            change = np.abs(np.subtract(*(quantity(evaluator.order(line[mine[todo]], e)) for e in ends[::-1])))
            clear = (change > 1024 * noise[todo]) | (step == _STEPS[-1])
            with np.errstate(divide="ignore"):  # (a flat order parameter: the cell's width bounds it)
                spread[todo[clear]] = np.where(change > 0, noise[todo] * (ends[1] - ends[0]) / change, np.inf)[clear]
            todo = todo[~clear]
            if todo.size == 0:
                break
        error[mine] = np.maximum(error[mine], spread)
    return np.minimum(error, cell_width)


_JITTER_STEPS = np.arange(-4.0, 5.0) * 2.0 ** -40  # relative offsets around a crossing where the noise is read


def _jitter(evaluator: _Evaluator, quantity: Callable, line: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Twice the largest departure of the deciding quantity from a straight line through 9 points within
    4e-12 (relative) of each crossing: the noise of its evaluation that no rounding model of the core sees,
    e.g. a nearly parallel explicit Gram whose G = U W - V^2 magnifies the rounding of V in the config's
    expression (the core is exact for the rounded U, W, V)."""
    at = np.clip(x[:, None] * (1.0 + _JITTER_STEPS), evaluator.grid.axis[0], evaluator.grid.axis[-1])
    q = quantity(evaluator.order(np.repeat(line, _JITTER_STEPS.size), at.reshape(-1))).reshape(at.shape)
    j = _JITTER_STEPS / _JITTER_STEPS[-1]
    slope = (q - q.mean(axis=1, keepdims=True)) @ j / (j @ j)
    return 2.0 * np.max(np.abs(q - q.mean(axis=1, keepdims=True) - slope[:, None] * j), axis=1)


def column_kinds(config: Config) -> dict[str, str]:
    """Every column of the table and its kind (as results.store.column_kind names them)."""
    kinds = {"boundary": "int", "crossings_in_cell": "int", "cell_complete": "bool", "along": "str", "of": "str",
             "rule": "str", "below": "str", "above": "str"}
    columns = list(COLUMNS)
    if config.init_kind == "seeds":
        columns.insert(columns.index("of") + 1, "quantile")
    return {**{a.name: "float" for a in config.axes}, **{name: kinds.get(name, "float") for name in columns}}


def table_problem(config: Config, table: dict[str, np.ndarray]) -> str | None:
    """What makes `table` (read back from a file) not a table `find_all` can have found for `config`, or None:
    its columns, an entry's along and of, labels and rules, the fixed coordinates on the grid, the crossing
    within its cell of two neighbouring grid values."""
    from phasediag.engine.metrics import LEGENDS

    if list(table) != list(column_kinds(config)):
        return f"its columns are not the {len(column_kinds(config))} of the config's boundaries"
    specs = config.boundaries
    entry = table["boundary"]
    if np.any((entry < 1) | (entry > len(specs))):
        return f"a boundary number is not one of 1..{len(specs)}"
    for k, spec in enumerate(specs, 1):
        mine = entry == k
        if np.any(table["along"][mine] != spec.along) or np.any(table["of"][mine] != spec.of):
            return f"boundary {k} is not along {spec.along} of {spec.of}"
        if spec.quantiles is not None and not np.all(np.isin(table["quantile"][mine], spec.quantiles)):
            return f"boundary {k}: a quantile is not one of {list(spec.quantiles)}"
        names = set(LEGENDS[spec.of])
        below, above = table["below"][mine], table["above"][mine]
        if not (set(below) | set(above)) <= names or np.any(below == above):
            return f"boundary {k}: a crossing's labels are not two different labels of {spec.of}"
        if any(r != rule_of(spec.of, b, a) for r, b, a in zip(table["rule"][mine], below, above)):
            return f"boundary {k}: a rule is not the one its labels are decided by"
        axis = next(a.values for a in config.axes if a.name == spec.along)
        axis = np.sort(axis)
        j = np.searchsorted(axis, table["lower"][mine])
        value = table[spec.along][mine]
        if np.any(j >= axis.size - 1) or np.any(axis[np.minimum(j, axis.size - 1)] != table["lower"][mine]) or np.any(
                axis[np.minimum(j + 1, axis.size - 1)] != table["upper"][mine]) or np.any(
                ~((table["lower"][mine] <= value) & (value <= table["upper"][mine]))):
            return f"boundary {k}: a crossing does not lie between two neighbouring values of {spec.along}"
        for a in config.axes:
            if a.name != spec.along and not np.all(np.isin(table[a.name][mine], a.values)):
                return f"boundary {k}: a value of {a.name} is not on the grid"
    if np.any(table["crossings_in_cell"] < 1) or not np.all(table["error"] >= 0):
        return "a crossings_in_cell or error is out of range"
    return None


def first_difference(table: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> str | None:
    """Where two tables differ ("row k, column c", "the number of rows"), None if they are the same (floats
    bit for bit, NaN equal to NaN)."""
    if list(table) != list(other):
        return "the columns"
    for name in table:
        a, b = np.asarray(table[name]), np.asarray(other[name])
        if a.shape != b.shape:
            return "the number of rows"
        same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" and b.dtype.kind == "f" else a == b
        if not np.all(same):
            return f"row {int(np.flatnonzero(~same)[0]) + 1}, column {name}"
    return None


def find_all(config: Config, codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every `boundaries:` entry's crossings, one table (`codes`: label name -> the grid's codes)."""
    parts = [find(config, spec, codes.get(spec.of) if spec.quantiles is None else None, k + 1)
             for k, spec in enumerate(config.boundaries)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}


def _exponent_of_rule(config: Config, rule: str, powers: dict):
    """The leading power of t in the quantity whose threshold `rule` is, at the end of training with a typical
    initialization (docs/theory.md section 11), where each sweep variable goes as t to its power in `powers`:
    rho = 2c|m*|/Theta0 (ntk_threshold), A = |m*|/(kappa sqrt(G)) (alignment_threshold); from the leading
    powers of the hyperparameters (section 7's power counting: Theta0 = kappa^2 d (eta_w sigma_u^2 + eta_u
    sigma_w^2) takes the larger of its two terms). None if it does not apply or a hyperparameter is not a
    power law."""
    from phasediag.config.expr import leading_exponent

    if not (np.isinf(config.horizon) and config.init_kind == "typical") or rule not in (
            "ntk_threshold", "alignment_threshold"):
        return None
    quantities = {**config.model, "teacher": config.data["teacher"]}
    e = {key: leading_exponent(quantities[key].tree, powers) for key in (
        "width", "output_scale", "lr_u", "lr_w", "init_var_u", "init_var_w", "teacher")}
    if any(v is None for v in e.values()):
        return None
    if rule == "alignment_threshold":
        return e["teacher"] - e["output_scale"] - e["width"] - (e["init_var_u"] + e["init_var_w"]) / 2
    ntk_init = 2 * e["output_scale"] + e["width"] + max(e["lr_w"] + e["init_var_u"], e["lr_u"] + e["init_var_w"])
    c = e["output_scale"] + (e["lr_u"] + e["lr_w"]) / 2
    return c + e["teacher"] - ntk_init


def exact_slope(config: Config, spec: BoundarySpec, rule: str, near: float):
    """The exponent p of the boundary along ~ against^p as `against` -> infinity, exactly (a Fraction), where
    docs/theory.md section 11 gives the boundary as a threshold of one power law (`_exponent_of_rule`): on the
    curve along = C against^p that quantity must stay constant, so its power of t = against, F(p), is 0. F is
    piecewise linear in p (a sum's dominant term depends on p: along -> 0 for p < 0); the piece through the
    fitted slope `near` is solved exactly and the root checked. None elsewhere."""
    from fractions import Fraction

    if spec.against is None or not np.isfinite(near):
        return None

    def power(p):
        return _exponent_of_rule(config, rule, {spec.against: Fraction(1), spec.along: p})

    p0 = Fraction(near).limit_denominator(1000)
    p1 = p0 + Fraction(1, 1000)
    f0, f1 = power(p0), power(p1)
    if f0 is None or f1 is None or f0 == f1:
        return None
    root = p0 - f0 * (p1 - p0) / (f1 - f0)
    return root if power(root) == 0 else None


def fit_slopes(config: Config, table: dict[str, np.ndarray]) -> list[dict]:
    """For every entry with `against`: per kind of crossing (labels below and above) and per value of the other
    axes and quantile over seeds (`at`: name -> value), the least-squares slope of log|crossing| against
    log(against) over the lines that hold exactly one such crossing, with the number of points and the range of
    `against` it spans; beside it the exact exponent (`exact_slope`: "p/q" text and its value) where one
    exists, else None."""
    fits = []
    for k, spec in enumerate(config.boundaries):
        if spec.against is None:
            continue
        mine = table["boundary"] == k + 1
        rest = [a.name for a in config.axes if a.name not in (spec.along, spec.against)]
        rest += ["quantile"] if "quantile" in table else []
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
                   "at": {r: float(v) for r, v in zip(rest, key[2:])}}
            exact = None
            if x.size >= 2 and np.ptp(np.log(x)) > 0:
                slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
                residual = np.log(y) - (slope * np.log(x) + intercept)
                fit.update(slope=float(slope), prefactor=float(np.exp(intercept)),
                           worst_log_residual=float(np.max(np.abs(residual))),
                           against_range=[float(x.min()), float(x.max())])
                exact = exact_slope(config, spec, fit["rule"], slope)
            fit.update(exact_slope=None if exact is None else str(exact),
                       exact_slope_value=None if exact is None else float(exact))
            fits.append(fit)
    return fits
