"""Figures of a sweep result: phase maps, continuous metric maps, line plots, small multiples, trajectories.

Every public function returns a matplotlib ``Figure`` and writes a file only when given a path (atomically,
format from the suffix; the same result always gives the same bytes). Figures are plain
``matplotlib.figure.Figure`` objects, never registered with pyplot, so nothing needs closing and no global
state changes; matplotlib is imported inside the functions (Agg selected when pyplot is not loaded yet), so
``import phasediag.plots.maps`` stays cheap and no display is needed.

Reading the figures:
- every label has a fixed colour-blind-safe colour (CATEGORY_COLOURS); on phase maps, exact-GD outcomes other
  than "converges" and flags (not converged at T; the health flags of a width-scaling sweep) are hatched;
- the sweep axes are drawn on log scales when swept with ``log`` (or ``values`` spread over decades) and
  labelled in the model's notation: ``d (width)`` when a variable is a model key's whole value, otherwise
  the variable and the keys whose expressions use it (``r  (lr_u = sqrt(r), lr_w = 1 / sqrt(r))``);
- with a seed axis, categorical maps show the most frequent label over the seeds, continuous ones the
  median (titles say so); line plots add the 25-75% band over the seeds;
- with 3 or more sweep axes, maps become small multiples over the extra axes (at most 4 values of each of
  the first two extra axes; further axes held at their middle value, named in the title);
- non-finite cells (``t_learn = inf`` at a saddle, undefined values, zeros on a log colour scale) are grey
  and named in the legend; ``classify`` thresholds (and 0 for width exponents) are labelled black lines.
Grids that are uniform on screen (log or linear sweeps) are drawn as one image in the axes' scaled
coordinates, pixel-identical to a QuadMesh but several times faster: the four default maps of a
1000 x 1000 sweep take about 2 s.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from phasediag.plots.base import (CATEGORY_COLOURS, CURVE_COLOURS, FALLBACK_COLOURS, figure_formats, new_figure,
                                   render, save_figure, swatch)
from phasediag.results.store import Result

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CATEGORY_COLOURS", "GD_HATCHES", "NOT_CONVERGED_HATCH", "NEGATIVE_HATCH", "MAX_TRAJECTORIES", "MAX_FACETS",
    "phase_map", "metric_map", "line_plot", "trajectory_plot", "render_all", "figure_stems", "axis_label",
    "sweep_axes", "reduce_seeds",
]

GD_HATCHES = {"catapult": "///", "diverges": "xxx", "oscillates": "...", "stalls": "\\\\\\"}
NOT_CONVERGED_HATCH = "oo"
# flags hatched on the phase maps (not_converged; the health flags of mode: scaling); others: SPARE_HATCHES
FLAG_HATCHES = {"not_converged": NOT_CONVERGED_HATCH, "unstable": "///", "frozen": "\\\\\\",
                "divergent_output": "..."}
FLAG_TEXT = {"not_converged": "not converged at T (loss > 1% of initial)"}
SPARE_HATCHES = ("**", "OO", "..", "\\\\")
NEGATIVE_HATCH = "//"  # ntk_change < 0 on the NTK-change map
NEGATIVE_HATCH_COLOUR = "#ffffffb0"  # white, translucent
HATCH_COLOUR = "#1a1a1a"
SPECIAL_COLOURS = {"inf": "#5c5c5c", "nan": "#bdbdbd", "off_scale": "#e4e4e4"}
MAX_TRAJECTORIES = 12
MAX_FACETS = 4
MIN_CONTOUR_POINTS = 4  # threshold contours only on maps with at least this many points along each axis
MIN_LOOP_CELLS = 4  # closed threshold contours this small are left out (noise, not a boundary) ...
MIN_LOOP_FRACTION = 0.025  # ... as are those with fewer vertices than this fraction of the longer grid side
TIME_METRICS = ("tau", "t_learn")
DIVERGED_UNDEFINED = ("gd_loss_peak", "gd_ntk_final")  # arbitrary where GD diverges (grey there)
_MODEL_ORDER = ("width", "output_scale", "lr_u", "lr_w", "init_var_u", "init_var_w", "input_var", "teacher",
                "noise_var")


# ---------------------------------------------------------------- matplotlib, files

def sweep_axes(result: Result) -> list[str]:
    """The swept variables (result axes without the seed axis)."""
    return [a for a in result.axes if a != "seed"]


def _seeds(result: Result) -> int:
    return len(result.coords["seed"]) if "seed" in result.axes else 0


def _info(result: Result, metric: str) -> dict:
    """meta["metrics"][metric], with a clear error for a metric this result does not have."""
    if metric not in result.arrays or metric not in result.meta["metrics"]:
        have = ", ".join(m for m in result.meta["metrics"] if m in result.arrays)
        raise ValueError(f"no metric {metric!r} in this result (optimizer-specific?); have: {have}")
    return result.meta["metrics"][metric]


def _check_axes(result: Result, *names: str | None) -> None:
    axes = sweep_axes(result)
    for name in names:
        if name is not None and name not in axes:
            raise ValueError(f"{name!r} is not a sweep axis of this result; sweep axes: {', '.join(axes)}")
    if len(names) == 2 and names[0] == names[1]:
        raise ValueError(f"x and y must differ, both are {names[0]!r}")


def _mode(values: np.ndarray, axis: int) -> np.ndarray:
    """Most frequent code along `axis` (ties go to the smaller code)."""
    codes = np.unique(values)
    counts = np.stack([(values == c).sum(axis=axis) for c in codes])
    return codes[counts.argmax(axis=0)].astype(values.dtype)


def _nan_quantile(values: np.ndarray, q: float | Sequence[float], axis: int) -> np.ndarray:
    """Quantiles of the non-NaN values along `axis` (NaN where all are NaN, without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return np.nanquantile(values, q, axis=axis)


def nan_median(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Median of the non-NaN values along `axis`, exact with infinities (the median of [inf, inf] is inf,
    not the NaN of an interpolation); NaN where every value is NaN."""
    ranked = np.sort(np.moveaxis(np.asarray(values, dtype=float), axis, -1), axis=-1)  # NaN sort last
    count = np.sum(~np.isnan(ranked), axis=-1)
    lo = np.take_along_axis(ranked, np.maximum(count - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(ranked, (count // 2)[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        middle = np.where(lo == hi, lo, lo / 2 + hi / 2)
    return np.where(count > 0, middle, np.nan)


def reduce_seeds(result: Result, metric: str) -> np.ndarray:
    """`metric` over the sweep axes only: the mode over seeds (categorical), the majority (flags) or the
    median (continuous; infinities count as large values: the median of [1, 2, inf] is 2)."""
    values = result.arrays[metric]
    if "seed" not in result.axes:
        return values
    axis = result.axes.index("seed")
    kind = result.meta["metrics"][metric]["kind"]
    if kind == "categorical":
        return _mode(values, axis)
    if kind == "flag" or values.dtype == bool:
        return np.mean(values, axis=axis) >= 0.5
    return nan_median(values.astype(float), axis)


def _index(result: Result, axis: str, value: float) -> int:
    """Index of the coordinate of `axis` nearest to `value`."""
    return int(np.argmin(np.abs(result.coords[axis] - value)))


def _held(result: Result, used: Sequence[str], fixed: Mapping[str, float] | None) -> dict[str, int]:
    """Indices of the sweep axes not drawn: `fixed` values (nearest point) or the middle point."""
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(sweep_axes(result))
    if unknown:
        raise ValueError(f"fixed: {sorted(unknown)} are not sweep axes; sweep axes: {sweep_axes(result)}")
    return {a: _index(result, a, fixed[a]) if a in fixed else len(result.coords[a]) // 2
            for a in sweep_axes(result) if a not in used}


def _plane(result: Result, values: np.ndarray, x: str, y: str | None, at: Mapping[str, int]) -> np.ndarray:
    """`values` (over the sweep axes, then any trailing axes) at the indices `at`, as (y, x, ...) or (x, ...)."""
    axes = sweep_axes(result)
    index = tuple(at.get(a, slice(None)) for a in axes)
    kept = [a for a in axes if a not in at]
    plane = values[index]
    order = [kept.index(y), kept.index(x)] if y is not None else [kept.index(x)]
    order += list(range(len(kept), plane.ndim))
    plane = np.transpose(plane, order)
    if y is not None:
        plane = _ascending(_ascending(plane, result.coords[y], 0), result.coords[x], 1)
        return plane
    return _ascending(plane, result.coords[x], 0)


def _ascending(values: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """`values` with `axis` reordered so that `coords` ascend (sweeps given as unsorted `values` lists)."""
    if np.all(np.diff(coords) > 0):
        return values
    return np.take(values, np.argsort(coords, kind="stable"), axis=axis)


def _picks(n: int, k: int) -> list[int]:
    """Up to k evenly spread indices of range(n), ends included."""
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


def _facet_grid(result: Result, used: Sequence[str]) -> tuple[list[list[dict[str, int]]], dict[str, int]]:
    """Small multiples: rows x columns of index dicts over the first two extra sweep axes (columns: the first,
    rows: the second; at most MAX_FACETS values each); further extra axes are held at their middle value."""
    extra = [a for a in sweep_axes(result) if a not in used]
    held = {a: len(result.coords[a]) // 2 for a in extra[2:]}
    if not extra:
        return [[{}]], held
    cols = [(extra[0], i) for i in _picks(len(result.coords[extra[0]]), MAX_FACETS)]
    rows = [(extra[1], i) for i in _picks(len(result.coords[extra[1]]), MAX_FACETS)] if len(extra) > 1 else [None]
    grid = [[{**held, c[0]: c[1], **({r[0]: r[1]} if r else {})} for c in cols] for r in rows]
    return grid, held


# ---------------------------------------------------------------- axes, labels, titles

def _model_entries(result: Result) -> dict[str, str]:
    """Model/data/init keys -> expression text (only those that enter the dynamics)."""
    cfg = result.meta["config"]
    entries = {**{k: _text(v) for k, v in cfg.get("model", {}).items()},
               **{k: _text(v) for k, v in cfg.get("data", {}).items()}}
    init = cfg.get("init")
    if isinstance(init, dict) and "gram" in init:  # explicit Grams: width and init variances play no part
        for key in ("width", "init_var_u", "init_var_w"):
            entries.pop(key, None)
        entries.update({k: _text(v) for k, v in zip(("U", "W", "V"), init["gram"])})
    return entries


def _text(value: Any) -> str:
    """Expression text of a config entry ({base, exp} entries of a width-scaling config: 'base d^(exp)')."""
    if isinstance(value, dict) and "exp" in value:
        base, exp = _text(value.get("base", 1)), _text(value["exp"])
        power = f"d^{exp}" if exp.isidentifier() else f"d^({exp})"
        return power if base in ("1", "1.0") else f"{base} {power}"
    return str(value).strip()


def _uses(text: str, var: str) -> bool:
    import re

    return re.search(rf"(?<![\w.]){re.escape(var)}(?![\w(])", text) is not None


def axis_label(result: Result, var: str) -> str:
    """'d (width)' when `var` is one model key's whole value and nothing else uses it; otherwise the variable
    and the keys that use it, keys with the same expression grouped: 's  (init_var_u = init_var_w = s)'."""
    users = {k: t for k, t in _model_entries(result).items() if _uses(t, var)}
    if len(users) == 1 and next(iter(users.values())) == var:
        return f"{var} ({next(iter(users))})"
    if not users:
        return var
    groups: dict[str, list[str]] = {}
    for key in sorted(users, key=lambda k: _MODEL_ORDER.index(k) if k in _MODEL_ORDER else len(_MODEL_ORDER)):
        groups.setdefault(users[key], []).append(key)
    parts = [" = ".join(keys + [text]) for text, keys in groups.items()]
    return _wrap(f"{var}  ({', '.join(parts)})")


def _wrap(text: str, width: int = 60) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=False)) if len(text) > width else text


def _is_log(result: Result, var: str) -> bool:
    """Log axis: swept with `log`, or `values` all positive, spread over a decade, closer to geometric spacing."""
    spec = result.meta["config"]["sweep"].get(var, {})
    if "log" in spec:
        return True
    values = np.asarray(result.coords[var], float)
    if "lin" in spec or values.size < 2 or np.any(values <= 0) or values.max() / values.min() < 10:
        return False
    lin, log = np.diff(values), np.diff(np.log(values))
    return np.std(log) / np.mean(np.abs(log)) < np.std(lin) / np.mean(np.abs(lin))


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around the sorted centres `values` (geometric midpoints on log axes)."""
    v = np.log10(values) if log else np.asarray(values, float)
    if v.size == 1:
        e = np.array([v[0] - 0.5, v[0] + 0.5]) if log or v[0] == 0 else v[0] + np.array([-0.5, 0.5]) * abs(v[0])
    else:
        mid = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])
    return 10**e if log else e


@dataclass(frozen=True)
class _Grid:
    """Geometry of an (x, y) map: cell centres and edges in data units, and which axes are logarithmic."""

    x: str
    y: str | None
    xc: np.ndarray
    yc: np.ndarray
    xe: np.ndarray
    ye: np.ndarray
    xlog: bool
    ylog: bool

    @classmethod
    def of(cls, result: Result, x: str, y: str | None) -> _Grid:
        xlog = _is_log(result, x)
        ylog = y is not None and _is_log(result, y)
        xc = np.sort(np.asarray(result.coords[x], float))
        yc = np.sort(np.asarray(result.coords[y], float)) if y is not None else np.array([0.5])
        ye = _edges(yc, ylog) if y is not None else np.array([0.0, 1.0])
        return cls(x, y, xc, yc, _edges(xc, xlog), ye, xlog, ylog)

    def scaled(self) -> tuple[np.ndarray, np.ndarray]:
        """Edges in the axes' scaled coordinates (log10 on log axes)."""
        return (np.log10(self.xe) if self.xlog else self.xe), (np.log10(self.ye) if self.ylog else self.ye)

    def uniform(self) -> bool:
        """Whether every cell has the same size on screen (then a fast image replaces the mesh)."""
        return all(np.allclose(np.diff(e), np.diff(e)[0], rtol=1e-6, atol=0) for e in self.scaled())


def _setup_axes(ax: Axes, result: Result, grid: _Grid, *, xlabel: bool = True, ylabel: bool = True) -> None:
    """Scales, limits (the cells exactly), labels, and ticks at the values of short `values` axes."""
    ax.set_xscale("log" if grid.xlog else "linear")
    ax.set_xlim(grid.xe[0], grid.xe[-1])
    _discrete_ticks(ax.xaxis, result, grid.x)
    if xlabel:
        ax.set_xlabel(axis_label(result, grid.x))
    if grid.y is None:
        return
    ax.set_yscale("log" if grid.ylog else "linear")
    ax.set_ylim(grid.ye[0], grid.ye[-1])
    _discrete_ticks(ax.yaxis, result, grid.y)
    if ylabel:
        ax.set_ylabel(axis_label(result, grid.y))


def _discrete_ticks(axis, result: Result, var: str) -> None:
    """A sweep given as a short list of `values`: one tick per value, labelled with it."""
    spec = result.meta["config"]["sweep"].get(var, {})
    values = result.coords[var]
    if "values" in spec and len(values) <= 8:
        from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

        axis.set_major_locator(FixedLocator(values))
        axis.set_major_formatter(FixedFormatter([f"{v:g}" for v in values]))
        axis.set_minor_locator(NullLocator())


def _horizon_note(result: Result) -> str:
    horizon = result.meta["config"].get("train", {}).get("horizon", "inf")
    return "" if horizon in ("inf", None) or not np.isfinite(float(horizon)) else f" at T = {float(horizon):g} steps"


def _title(result: Result, what: str, *, categorical: bool, held: Mapping[str, int] | None = None) -> str:
    """'<name>: <what>[ at T][, mode/median over N seeds]' and a second line with the axes held fixed."""
    n = _seeds(result)
    over = "most frequent label" if categorical else "median"
    seeds = f", {over} over {n} seeds" if n > 1 else ", one sampled initialization" if n == 1 else ""
    at = ", ".join(f"{a} = {result.coords[a][i]:.3g}" for a, i in (held or {}).items())
    return f"{result.meta['name']}: {what}{_horizon_note(result)}{seeds}" + (f"\n(at {at})" if at else "")


def _facet_title(result: Result, at: Mapping[str, int], held: Mapping[str, int]) -> str:
    return ", ".join(f"{a} = {result.coords[a][i]:.3g}" for a, i in at.items() if a not in held)


# ---------------------------------------------------------------- drawing primitives

def _raster(ax: Axes, grid: _Grid, data: np.ndarray, **style) -> Any:
    """Draw `data` (ny, nx) one cell per point: an image in the axes' scaled coordinates when all cells are
    equally wide on screen (fast at any size, identical pixels), else a QuadMesh. Returns the artist."""
    if grid.uniform():
        from matplotlib.image import AxesImage

        sx, sy = grid.scaled()
        image = AxesImage(ax, interpolation="nearest", origin="lower", extent=(sx[0], sx[-1], sy[0], sy[-1]),
                          transform=ax.transLimits + ax.transAxes, **style)
        image.set_data(data)
        return ax.add_image(image)
    return ax.pcolormesh(grid.xe, grid.ye, data, shading="flat", rasterized=True, **style)


def rectangles(mask: np.ndarray) -> np.ndarray:
    """Rows [r0, r1) x columns [c0, c1) of rectangles that tile the True cells of a 2-D mask: runs along each
    row, merged down the rows while they repeat. Shape (k, 4)."""
    m = np.asarray(mask, bool)
    padded = np.zeros((m.shape[0], m.shape[1] + 2), np.int8)
    padded[:, 1:-1] = m
    step = np.diff(padded, axis=1)
    rows, c0 = np.nonzero(step == 1)
    c1 = np.nonzero(step == -1)[1]
    if rows.size == 0:
        return np.zeros((0, 4), int)
    order = np.lexsort((rows, c1, c0))
    rows, c0, c1 = rows[order], c0[order], c1[order]
    new = np.ones(rows.size, bool)
    new[1:] = (c0[1:] != c0[:-1]) | (c1[1:] != c1[:-1]) | (rows[1:] != rows[:-1] + 1)
    first = np.flatnonzero(new)
    last = np.append(first[1:], rows.size) - 1
    return np.column_stack([rows[first], rows[last] + 1, c0[first], c1[first]])


def _region_path(grid: _Grid, mask: np.ndarray):
    """One compound Path of the cells where `mask` (ny, nx) is True, in data coordinates."""
    from matplotlib.path import Path as MplPath

    r = rectangles(mask)
    x0, x1, y0, y1 = grid.xe[r[:, 2]], grid.xe[r[:, 3]], grid.ye[r[:, 0]], grid.ye[r[:, 1]]
    corners = np.stack([np.stack(p, axis=-1) for p in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))], axis=1)
    codes = np.tile([MplPath.MOVETO, MplPath.LINETO, MplPath.LINETO, MplPath.LINETO, MplPath.CLOSEPOLY], len(r))
    return MplPath(corners.reshape(-1, 2), codes)


def _hatch(ax: Axes, grid: _Grid, mask: np.ndarray, hatch: str, label: str, colour: str = HATCH_COLOUR):
    """Hatch the cells where `mask` is True (one PathPatch, no outline); returns a legend handle or None."""
    from matplotlib.patches import Patch, PathPatch

    if not np.any(mask):
        return None
    transform = ax.transData if grid.y is not None else ax.get_xaxis_transform()
    patch = PathPatch(_region_path(grid, np.atleast_2d(mask)), facecolor="none", edgecolor=colour, linewidth=0.0,
                      hatch=hatch, transform=transform, zorder=2.5, label=label)
    ax.add_artist(patch)  # not add_patch: its data-limit update walks every rectangle in Python (slow)
    return Patch(facecolor="white", edgecolor=colour, hatch=hatch, label=label)


def _category_colours(result: Result, metric: str) -> list[str]:
    """Colour of every code of a categorical metric (fixed per label; unknown labels from FALLBACK_COLOURS)."""
    fixed = CATEGORY_COLOURS.get(metric, {})
    spare = iter(FALLBACK_COLOURS * 4)
    return [fixed.get(name) or next(spare) for name in result.meta["legends"][metric]]


def _pretty(label: str) -> str:
    return label.replace("_", " ")


# ---------------------------------------------------------------- categorical maps

def _draw_categories(ax: Axes, result: Result, metric: str, grid: _Grid, codes: np.ndarray) -> dict:
    """Colour every cell by its label; returns legend handles of the labels present."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    names = result.meta["legends"][metric]
    colours = _category_colours(result, metric)
    norm = BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names))
    _raster(ax, grid, codes, cmap=ListedColormap(colours), norm=norm)
    return {_pretty(names[c]): swatch(colours[c], _pretty(names[c])) for c in np.unique(codes).tolist()}


def _hatch_marks(ax: Axes, result: Result, grid: _Grid, at: Mapping[str, int]) -> dict:
    """Hatch GD outcomes other than 'converges' (one hatch per outcome) and every flag metric where it is set
    (not converged at T; the health flags of a scaling sweep), each with its own hatch; legend handles."""
    marks = []
    if "gd_outcome" in result.arrays:
        outcome = _plane(result, reduce_seeds(result, "gd_outcome"), grid.x, grid.y, at)
        marks += [(outcome == code, GD_HATCHES.get(name, "++"), f"GD {name}")
                  for code, name in enumerate(result.meta["legends"]["gd_outcome"]) if name != "converges"]
    spare = iter(SPARE_HATCHES * 4)
    for name, info in result.meta["metrics"].items():
        if info["kind"] == "flag" and name in result.arrays:
            flag = _plane(result, reduce_seeds(result, name), grid.x, grid.y, at).astype(bool)
            marks.append((flag, FLAG_HATCHES.get(name) or next(spare), FLAG_TEXT.get(name, info["label"])))
    handles = {}
    for mask, hatch, label in marks:
        handle = _hatch(ax, grid, mask, hatch, label)
        handles.update({label: handle} if handle is not None else {})
    return handles


def _panels(result: Result, used: Sequence[str], ax: Axes | None, fixed: Mapping[str, float] | None,
            colorbar: bool) -> tuple[Figure, list[tuple[Axes, dict[str, int]]], dict[str, int]]:
    """The figure and (axes, indices of the other sweep axes) per panel: small multiples over the extra axes
    when we own the figure and no `fixed` is given, else one panel."""
    if ax is not None or fixed or len(sweep_axes(result)) <= len(used):
        held = _held(result, used, fixed)
        if ax is None:
            fig = new_figure(6.4 + (1.2 if colorbar else 2.0), 4.6)
            ax = fig.add_subplot()
        return ax.figure, [(ax, held)], held
    grid, held = _facet_grid(result, used)
    rows, cols = len(grid), len(grid[0])
    fig = new_figure(3.6 * cols + (1.2 if colorbar else 2.2), 3.1 * rows + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    return fig, [(axes[i, j], grid[i][j]) for i in range(rows) for j in range(cols)], held


def _label_panel(ax: Axes, result: Result, grid: _Grid, at: dict, held: dict, many: bool) -> None:
    """Axis setup of one panel; small multiples get their fixed values as titles and no axis labels (the
    figure carries them once, see _outer_labels), and no minor ticks beyond 4 panels (clutter, slow)."""
    _setup_axes(ax, result, grid, xlabel=not many, ylabel=not many)
    if many:
        ax.set_title(_facet_title(result, at, held), fontsize=9)


def _outer_labels(fig: Figure, panels: list, result: Result, grid: _Grid) -> None:
    """Small multiples: one x and one y label for the figure."""
    if len(panels) <= 1:
        return
    fig.supxlabel(axis_label(result, grid.x), fontsize=10)
    fig.supylabel(axis_label(result, grid.y), fontsize=10)
    if len(panels) > 4:
        from matplotlib.ticker import NullLocator

        for ax, _ in panels:
            for axis, log in ((ax.xaxis, grid.xlog), (ax.yaxis, grid.ylog)):
                if log:
                    axis.set_minor_locator(NullLocator())


def _legend(fig: Figure, ax: Axes | None, handles: Sequence, *, below: bool = False) -> None:
    """Legend outside the plotting area: right of it (labels) or below it (notes)."""
    if not handles:
        return
    if ax is not None:  # a caller's axes: keep the legend attached to it
        anchor = dict(loc="upper left", bbox_to_anchor=(0.0, -0.16)) if below else dict(
            loc="upper left", bbox_to_anchor=(1.02, 1.0))
        ax.legend(handles=list(handles), fontsize=8, frameon=False, **anchor)
        return
    loc = "outside lower center" if below else "outside right upper"
    fig.legend(handles=list(handles), loc=loc, fontsize=8, frameon=False, ncols=min(len(handles), 3) if below else 1)


def phase_map(result: Result, x: str, y: str, ax: Axes | None = None, path: str | Path | None = None, *,
              metric: str = "phase", fixed: Mapping[str, float] | None = None) -> Figure:
    """Categorical map of `metric` ("phase", or "gd_outcome") over the sweep axes x (horizontal) and y.

    Every label has a fixed colour (CATEGORY_COLOURS); the legend lists the labels present. On the phase map,
    points whose exact-GD outcome is not "converges" are hatched (one hatch per outcome, GD_HATCHES), as are
    points not converged at a finite horizon. With more sweep axes: small multiples over them, or, with `ax`
    or `fixed` ({axis: value}, nearest point; default the middle), the single slice there.
    """
    _check_axes(result, x, y)
    if _info(result, metric)["kind"] != "categorical":
        raise ValueError(f"{metric!r} is not categorical; draw it with metric_map")
    fig, panels, held = _panels(result, (x, y), ax, fixed, colorbar=False)
    grid = _Grid.of(result, x, y)
    codes_all = reduce_seeds(result, metric)
    handles: dict[str, Any] = {}
    for panel, at in panels:
        handles.update(_draw_categories(panel, result, metric, grid, _plane(result, codes_all, x, y, at)))
        handles.update(_hatch_marks(panel, result, grid, at) if metric != "gd_outcome" else {})
        _label_panel(panel, result, grid, at, held, len(panels) > 1)
    _outer_labels(fig, panels, result, grid)
    order = [_pretty(n) for n in result.meta["legends"][metric]]
    ordered = sorted(handles.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    _legend(fig, ax, [h for _, h in ordered])
    what = _categorical_what(result, metric)
    _set_title(fig, panels, _title(result, what, categorical=True, held=held if len(panels) > 1 else
                                       panels[0][1]))
    save_figure(fig, path)
    return fig


def _categorical_what(result: Result, metric: str) -> str:
    if metric == "gd_outcome":
        return "outcome of exact gradient descent"
    if metric == "limit_phase":
        return "phase as d -> infinity (hatched: health flags)"
    if metric == "phase" and "gd_outcome" in result.arrays:
        return "phase (gradient-flow labels; hatched: GD does not simply converge)"
    return "phase diagram" if metric == "phase" else _pretty(metric)


def _set_title(fig: Figure, panels: list, text: str) -> None:
    """Small multiples: a figure title; one panel: the axes title."""
    if len(panels) > 1:
        fig.suptitle(text, fontsize=10)
    else:
        panels[0][0].set_title(text, fontsize=9)


# ---------------------------------------------------------------- continuous maps

@dataclass
class _Colours:
    """How a continuous metric is coloured: the drawn values (NaN where `special`), norm, colour map,
    colour-bar label, and the special cells: (mask over the sweep axes, colour, legend text)."""

    values: np.ndarray
    norm: Any
    cmap: str
    label: str
    special: list[tuple[np.ndarray, str, str]]
    log_field: bool  # contour the threshold on log10 of the drawn values


def _inf_text(metric: str) -> str:
    return f"{metric} = inf (never reached)" if metric in TIME_METRICS else f"{metric} = inf"


def _colours(result: Result, metric: str, values: np.ndarray) -> _Colours:
    """Colour scale of a continuous metric: log10|ntk_change|, a log scale for positive values spanning a
    decade or more where meta says log, a diverging scale centred at 0 for signed values, else viridis."""
    from matplotlib.colors import LogNorm, Normalize

    info = result.meta["metrics"][metric]
    values = np.asarray(values, float)
    special = [(_diverged(result, metric, values.shape), SPECIAL_COLOURS["nan"], "GD diverges (not shown)"),
               (np.isposinf(values), SPECIAL_COLOURS["inf"], _inf_text(metric)),
               (np.isneginf(values), SPECIAL_COLOURS["inf"], f"{metric} = -inf"),
               (np.isnan(values), SPECIAL_COLOURS["nan"], f"{metric} undefined (NaN)")]
    values = np.where(special[0][0], np.nan, values)
    finite = np.isfinite(values)
    if metric == "ntk_change":
        return _log_abs_colours(values, special)
    positive = finite & (values > 0)
    lo, hi = (values[positive].min(), values[positive].max()) if positive.any() else (1.0, 1.0)
    if info.get("log") and positive.any() and hi / lo >= 10:
        off = finite & ~positive
        sign = "= 0" if np.all(values[off] == 0) else "<= 0"
        special.append((off, SPECIAL_COLOURS["off_scale"], f"{metric} {sign} (off the log scale)"))
        return _Colours(np.where(positive, values, np.nan), LogNorm(lo, hi), "viridis", info["label"], special,
                        log_field=True)
    shown = np.where(finite, values, np.nan)
    if np.nanmin(shown, initial=0.0) < 0 < np.nanmax(shown, initial=0.0):
        top = float(np.nanmax(np.abs(shown)))
        return _Colours(shown, Normalize(-top, top), "RdBu_r", info["label"], special, log_field=False)
    return _Colours(shown, _linear_norm(shown), "viridis", info["label"], special, log_field=False)


def _log_abs_colours(values: np.ndarray, special: list) -> _Colours:
    """ntk_change: log10|value| on a linear scale (it spans many decades and both signs; zeros grey)."""
    finite = np.isfinite(values)
    zero = finite & (values == 0)
    special.append((zero, SPECIAL_COLOURS["off_scale"], "ntk_change = 0 (NTK unchanged)"))
    shown = np.full(values.shape, np.nan)
    np.log10(np.abs(values), out=shown, where=finite & ~zero)
    return _Colours(shown, _linear_norm(shown), "viridis", r"$\log_{10}|\Theta_T/\Theta_0 - 1|$", special,
                    log_field=False)


def _diverged(result: Result, metric: str, shape: tuple[int, ...]) -> np.ndarray:
    """Where exact GD diverges (most frequent outcome over seeds), for metrics that mean nothing there."""
    if metric not in DIVERGED_UNDEFINED or "gd_outcome" not in result.arrays:
        return np.zeros(shape, bool)
    legend = result.meta["legends"]["gd_outcome"]
    return reduce_seeds(result, "gd_outcome") == legend.index("diverges") if "diverges" in legend else \
        np.zeros(shape, bool)


def _linear_norm(values: np.ndarray):
    from matplotlib.colors import Normalize

    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return Normalize(lo, hi if hi > lo else lo + 1.0)


def _draw_special(ax: Axes, result: Result, grid: _Grid, colours: _Colours, at: dict) -> dict:
    """Grey cells where the metric is not on the colour scale; legend handles of those present anywhere."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    masks = [(_plane(result, m, grid.x, grid.y, at), c, t) for m, c, t in colours.special if m.any()]
    if not masks:
        return {}
    codes = np.zeros(masks[0][0].shape)
    for k, (mask, _, _) in enumerate(masks, start=1):
        codes[mask & (codes == 0)] = k
    norm = BoundaryNorm(np.arange(len(masks) + 1) + 0.5, len(masks))
    _raster(ax, grid, np.ma.masked_equal(codes, 0), cmap=ListedColormap([c for _, c, _ in masks]), norm=norm)
    return {t: swatch(c, t) for _, c, t in masks}


def _level(result: Result, metric: str, colours: _Colours) -> tuple[float, str, bool] | None:
    """(level in the drawn units, legend text, contour log10 of the values?) of the line drawn on a map: the
    classify threshold of the metric, or 0 for a width exponent (its sign decides the limit); else None."""
    name = result.meta["metrics"][metric].get("threshold")
    if name is not None:
        level = float(result.meta["thresholds"][name])
        if metric == "ntk_change":
            return np.log10(level), f"|ntk_change| = {level:g} ({name})", False
        return (np.log10(level) if colours.log_field else level), f"{metric} = {level:g} ({name})", colours.log_field
    if metric.endswith("_exp"):
        return 0.0, f"{metric} = 0", False
    return None


def _threshold(ax: Axes, result: Result, metric: str, grid: _Grid, shown: np.ndarray, colours: _Colours):
    """The threshold (see _level) as a black line with a white halo; its legend handle, or None when the values
    do not cross it or the grid is too coarse to interpolate."""
    line = _level(result, metric, colours)
    if line is None or min(shown.shape) < MIN_CONTOUR_POINTS:
        return None
    at, text, log = line
    field = np.log10(shown) if log else shown
    if not np.nanmin(field, initial=np.inf) < at < np.nanmax(field, initial=-np.inf):
        return None
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    halo = [patheffects.withStroke(linewidth=3.4, foreground="white")]
    lines = LineCollection(_contour_lines(grid, field, at), colors="black", linewidths=1.6, zorder=3,
                           path_effects=halo, label=text)
    ax.add_collection(lines, autolim=False)
    return lines


def _contour_lines(grid: _Grid, field: np.ndarray, level: float) -> list[np.ndarray]:
    """Lines where `field` (ny, nx; NaN = missing) crosses `level`, interpolated linearly between cell centres
    in the axes' scaled coordinates (log10 on log axes), in data coordinates. Small closed loops (noise of
    sampled initializations: fewer vertices than MIN_LOOP_FRACTION of the grid's longer side, or around no more
    than MIN_LOOP_CELLS cells) are left out."""
    import contourpy

    sx = np.log10(grid.xc) if grid.xlog else grid.xc
    sy = np.log10(grid.yc) if grid.ylog else grid.yc
    generator = contourpy.contour_generator(sx, sy, np.ma.masked_invalid(field), line_type="Separate")
    shortest = max(2 * MIN_LOOP_CELLS + 2, int(MIN_LOOP_FRACTION * max(field.shape)))
    keep = [xy for xy in generator.lines(level) if not np.array_equal(xy[0], xy[-1]) or len(xy) >= shortest]
    return [np.column_stack([10 ** xy[:, 0] if grid.xlog else xy[:, 0], 10 ** xy[:, 1] if grid.ylog else xy[:, 1]])
            for xy in keep]


def _sign_hatch(ax: Axes, grid: _Grid, raw: np.ndarray) -> None:
    """ntk_change: hatch the cells where it is negative (the NTK shrinks)."""
    _hatch(ax, grid, np.isfinite(raw) & (raw < 0), NEGATIVE_HATCH, "ntk_change < 0", colour=NEGATIVE_HATCH_COLOUR)


def _sign_legend(raw: np.ndarray) -> dict:
    """Legend entry saying where the NTK change is negative (hatched) or that it is positive everywhere."""
    from matplotlib.patches import Patch

    if np.any(raw < 0):
        label = "ntk_change < 0 (NTK shrinks)"
        return {label: Patch(facecolor="0.55", edgecolor=NEGATIVE_HATCH_COLOUR, hatch=NEGATIVE_HATCH, label=label)}
    note = "ntk_change > 0 everywhere (NTK grows)" if np.any(raw > 0) else "ntk_change >= 0 everywhere"
    return {note: Patch(facecolor="none", edgecolor="none", label=note)}


def _metric_panel(ax: Axes, result: Result, metric: str, grid: _Grid, colours: _Colours, raw: np.ndarray,
                  at: dict[str, int]) -> dict:
    """One panel of a metric map: coloured cells, grey special cells, threshold contour, sign hatching."""
    shown = _plane(result, colours.values, grid.x, grid.y, at)
    image = _raster(ax, grid, np.ma.masked_invalid(shown), cmap=colours.cmap, norm=colours.norm)
    image.set_label(metric)
    handles = _draw_special(ax, result, grid, colours, at)
    line = _threshold(ax, result, metric, grid, shown, colours)
    handles.update({line.get_label(): line} if line is not None else {})
    if metric == "ntk_change":
        _sign_hatch(ax, grid, _plane(result, raw, grid.x, grid.y, at))
    return handles


def metric_map(result: Result, metric: str, x: str, y: str, ax: Axes | None = None,
               path: str | Path | None = None, *, fixed: Mapping[str, float] | None = None) -> Figure:
    """Continuous map of `metric` over the sweep axes x and y, with a colour bar.

    Log colour scale where meta says `log` and the values span a decade; the NTK change is drawn as
    log10|ntk_change| with the cells where it is negative hatched. The metric's classify threshold is a
    labelled black contour. Infinite values (t_learn at a saddle), NaN and zeros on a log scale are grey,
    named in the legend. Small multiples / `ax` / `fixed` as in phase_map.
    """
    _check_axes(result, x, y)
    info = _info(result, metric)
    if info["kind"] != "continuous":
        raise ValueError(f"{metric!r} is {info['kind']}; draw it with phase_map")
    fig, panels, held = _panels(result, (x, y), ax, fixed, colorbar=True)
    grid = _Grid.of(result, x, y)
    raw = reduce_seeds(result, metric).astype(float)
    colours = _colours(result, metric, raw)
    handles: dict[str, Any] = {}
    for panel, at in panels:
        handles.update(_metric_panel(panel, result, metric, grid, colours, raw, at))
        _label_panel(panel, result, grid, at, held, len(panels) > 1)
    _outer_labels(fig, panels, result, grid)
    if metric == "ntk_change":
        handles.update(_sign_legend(np.concatenate([_plane(result, raw, x, y, at).ravel() for _, at in panels])))
    mappable = next(a for a in panels[0][0].get_children() if a.get_label() == metric)
    fig.colorbar(mappable, ax=[p for p, _ in panels], label=colours.label,
                 shrink=1.0 if len(panels) <= 4 else 0.6, aspect=25)
    _legend(fig, ax, list(handles.values()), below=True)
    _set_title(fig, panels, _title(result, info["label"], categorical=False,
                                       held=held if len(panels) > 1 else panels[0][1]))
    save_figure(fig, path)
    return fig


# ---------------------------------------------------------------- 1-D sweeps

def _row(grid: _Grid) -> _Grid:
    """The x cells of `grid` as a one-row map spanning the axes height (drawn in x-data, y-axes coordinates)."""
    return _Grid(grid.x, None, grid.xc, np.array([0.5]), grid.xe, np.array([0.0, 1.0]), grid.xlog, False)


def _bands(ax: Axes, result: Result, grid: _Grid, codes: np.ndarray, metric: str = "phase") -> dict:
    """Full-height bands coloured by label along x (one patch per label); legend handles of the labels."""
    from matplotlib.patches import PathPatch

    names = result.meta["legends"][metric]
    colours = _category_colours(result, metric)
    present = np.unique(codes).tolist()
    for code in present:
        ax.add_artist(PathPatch(_region_path(_row(grid), np.atleast_2d(codes == code)), facecolor=colours[code],
                                edgecolor="none", linewidth=0, transform=ax.get_xaxis_transform()))
    return {_pretty(names[c]): swatch(colours[c], _pretty(names[c])) for c in present}


def _per_seed(result: Result, metric: str, x: str, at: dict) -> np.ndarray:
    """(len(x), seeds) values along x at the indices `at` (one column without a seed axis)."""
    values = result.arrays[metric]
    if "seed" not in result.axes:
        return _plane(result, values, x, None, at)[:, None]
    return _plane(result, np.moveaxis(values, result.axes.index("seed"), -1), x, None, at)


def _categorical_line(ax: Axes, result: Result, metric: str, grid: _Grid, at: dict) -> dict:
    """Bands of the label along x; with seeds, stacked fractions of the seeds per label instead."""
    per_seed = _per_seed(result, metric, grid.x, at)
    if per_seed.shape[1] == 1:
        handles = _bands(ax, result, grid, per_seed[:, 0], metric)
        ax.set_yticks([])
    else:
        handles = _seed_fractions(ax, result, metric, grid, per_seed)
    if metric != "gd_outcome":
        handles.update(_hatch_marks(ax, result, _row(grid), at))
    return handles


def _seed_fractions(ax: Axes, result: Result, metric: str, grid: _Grid, per_seed: np.ndarray) -> dict:
    """Stacked fractions of the seeds carrying each label, along x."""
    names = result.meta["legends"][metric]
    colours = _category_colours(result, metric)
    handles, bottom = {}, np.zeros(len(grid.xc))
    for code in np.unique(per_seed).tolist():
        share = np.mean(per_seed == code, axis=1)
        ax.stairs(bottom + share, grid.xe, baseline=bottom, fill=True, color=colours[code], linewidth=0)
        handles[_pretty(names[code])] = swatch(colours[code], _pretty(names[code]))
        bottom = bottom + share
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"fraction of the {per_seed.shape[1]} seeds")
    return handles


def _threshold_line(ax: Axes, level: float, label: str) -> None:
    """The threshold as a dotted line. On a log scale it widens the view only within 6 decades of the data: a
    threshold far beyond every value (ntk_threshold: 1e300) would squash the data and overflow the scale."""
    style = dict(color="black", linestyle=":", linewidth=1, label=label)
    lo, hi = ax.dataLim.intervaly
    if ax.get_yscale() == "log" and not lo / 1e6 <= level <= hi * 1e6:
        ax.plot([0, 1], [level, level], transform=ax.get_yaxis_transform(), scaley=False, **style)
    else:
        ax.axhline(level, **style)


def _continuous_line(ax: Axes, result: Result, metric: str, grid: _Grid, at: dict) -> dict:
    """The values along x (with seeds: median and 25-75% band), the threshold, inf markers; legend handles."""
    info = result.meta["metrics"][metric]
    signed = _per_seed(result, metric, grid.x, at).astype(float)
    values = np.abs(signed) if metric == "ntk_change" else signed
    centre = nan_median(values, axis=1)
    seeds = values.shape[1]
    if seeds > 1:
        q25, q75 = _nan_quantile(np.where(np.isfinite(values), values, np.nan), [0.25, 0.75], axis=1)
        ax.fill_between(grid.xc, q25, q75, color="#0072B2", alpha=0.25, linewidth=0, label=f"25-75% of {seeds} seeds")
    ax.plot(grid.xc, _finite(centre), color="#0072B2", linewidth=1.8,
            label=f"median over {seeds} seeds" if seeds > 1 else None)
    _line_scale(ax, info, centre, metric)
    shrinks = (nan_median(signed, axis=1) < 0) if metric == "ntk_change" else np.zeros(len(centre), bool)
    if shrinks.any():
        ax.plot(grid.xc[shrinks], centre[shrinks], "v", color="#D55E00", markersize=4, linestyle="none",
                label="ntk_change < 0 (NTK shrinks)")
    if info.get("threshold") is not None:
        level = result.meta["thresholds"][info["threshold"]]
        _threshold_line(ax, level, f"{info['threshold']} = {level:g}")
    infinite = np.isposinf(centre)
    if infinite.any():
        ax.plot(grid.xc[infinite], np.full(infinite.sum(), 0.97), "^", color=SPECIAL_COLOURS["inf"], markersize=4,
                transform=ax.get_xaxis_transform(), linestyle="none", label=_inf_text(metric))
    ax.set_ylabel(r"$|\Theta_T/\Theta_0 - 1|$ (NTK change)" if metric == "ntk_change" else info["label"])
    handles, labels = ax.get_legend_handles_labels()
    return dict(zip(labels, handles))


def _line_scale(ax: Axes, info: dict, values: np.ndarray, metric: str) -> None:
    """Log y when meta says log (or for |ntk_change|) and the positive values span a decade."""
    positive = values[np.isfinite(values) & (values > 0)]
    if (info.get("log") or metric == "ntk_change") and positive.size and positive.max() / positive.min() >= 10:
        ax.set_yscale("log")


def _line_axes(ax: Axes | None, with_strip: bool) -> tuple[Figure, Axes, Axes | None]:
    """(figure, main axes, phase-strip axes or None): a new figure unless the caller gives `ax`."""
    if ax is not None:
        return ax.figure, ax, None
    fig = new_figure(7.4, 4.2)
    if not with_strip:
        return fig, fig.add_subplot(), None
    main, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [14, 1]})
    return fig, main, strip


def line_plot(result: Result, metric: str, x: str, path: str | Path | None = None, *,
              ax: Axes | None = None, fixed: Mapping[str, float] | None = None) -> Figure:
    """`metric` along the sweep axis x (a 1-D sweep, or a slice at `fixed`/the middle of the other axes).

    Continuous metrics: the values (with seeds: the median and the 25-75% band), the threshold as a dotted
    line, inf values as grey triangles at the top; below (own figure only), a strip with the phase at every
    x. Categorical metrics: coloured bands (with seeds: stacked fractions of the seeds per label), GD outcomes
    other than converges and points not converged at T hatched.
    """
    _check_axes(result, x)
    info = _info(result, metric)
    held = _held(result, (x,), fixed)
    grid = _Grid.of(result, x, None)
    categorical = info["kind"] == "categorical"
    fig, main, strip = _line_axes(ax, with_strip=not categorical and "phase" in result.arrays)
    if categorical:
        handles = _categorical_line(main, result, metric, grid, held)
    else:
        handles = _continuous_line(main, result, metric, grid, held)
    _setup_axes(main, result, grid, xlabel=strip is None)
    if strip is not None:
        handles.update(_bands(strip, result, grid, _plane(result, reduce_seeds(result, "phase"), x, None, held)))
        strip.set_yticks([])
        strip.set_ylabel("phase" + ("\n(mode)" if _seeds(result) > 1 else ""), rotation=0, ha="right",
                         va="center", fontsize=8)
        _setup_axes(strip, result, grid)
    _legend(fig, ax, list(handles.values()))
    what = _categorical_what(result, metric) if categorical else info["label"]
    main.set_title(_title(result, what, categorical=categorical, held=held), fontsize=9)
    save_figure(fig, path)
    return fig


# ---------------------------------------------------------------- trajectories

def _trajectory_points(result: Result) -> list[tuple[int, ...]]:
    """Up to MAX_TRAJECTORIES grid points: an evenly spread sub-grid of the sweep axes (ends included;
    the axis with the most points per pick gets the next one), the first seed."""
    axes = sweep_axes(result)
    sizes = [len(result.coords[a]) for a in axes]
    counts = [1] * len(axes)
    while True:
        room = [i for i, n in enumerate(sizes) if counts[i] < n and
                np.prod(counts) // counts[i] * (counts[i] + 1) <= MAX_TRAJECTORIES]
        if not room:
            break
        i = max(room, key=lambda k: sizes[k] / counts[k])
        counts[i] += 1
    points = itertools.product(*(_picks(n, k) for n, k in zip(sizes, counts)))
    return [_with_first_seed(result, p) for p in points]


def _with_first_seed(result: Result, point: tuple[int, ...]) -> tuple[int, ...]:
    """Full index of a point of the sweep axes: seed 0 inserted where the seed axis is."""
    if "seed" not in result.axes:
        return tuple(point)
    position = result.axes.index("seed")
    return tuple(point[:position]) + (0,) + tuple(point[position:])


def _curve_label(result: Result, index: tuple[int, ...]) -> str:
    """'q = 1e-06, rho = 0  [alignment; GD converges]': the point and its labels."""
    parts = [f"{a} = {result.coords[a][i]:.3g}" for a, i in zip(result.axes, index) if a != "seed"]
    tags = []
    if "phase" in result.arrays:
        tags.append(_pretty(result.meta["legends"]["phase"][result.arrays["phase"][index]]))
    if "gd_outcome" in result.arrays:
        tags.append("GD " + result.meta["legends"]["gd_outcome"][result.arrays["gd_outcome"][index]])
    return ", ".join(parts) + (f"  [{'; '.join(tags)}]" if tags else "")


def _teacher(result: Result) -> float | None:
    """m* when it is one number (not an expression of sweep variables)."""
    try:
        return float(result.meta["config"].get("data", {}).get("teacher", 1.0))
    except (TypeError, ValueError):  # an expression of sweep variables: differs per curve
        return None


def _time_scale(ax: Axes, t: np.ndarray) -> None:
    """Log time when the positive times span two decades; symlog (linear below the first positive time) when
    t = 0 is among them, so the start is shown."""
    positive = t[t > 0]
    if positive.size < 2 or positive.max() / positive.min() < 100:
        return
    if np.any(t <= 0):
        ax.set_xscale("symlog", linthresh=positive.min(), linscale=0.4)
        ax.set_xlim(t.min(), t.max() * 1.2)
    else:
        ax.set_xscale("log")


def _value_scale(ax: Axes, data: np.ndarray) -> None:
    """log when all finite values are positive and span a decade; symlog around 0 when signs mix over decades;
    limits around the finite values (other curves, e.g. a diverging kernel prediction, may leave the frame)."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    nonzero = np.abs(finite[finite != 0])
    if lo > 0 and hi / lo >= 10:
        ax.set_yscale("log")
        ax.set_ylim(lo / 2, hi * 2)
    elif lo < 0 and nonzero.size and nonzero.max() / nonzero.min() >= 100:
        linthresh = 10.0 ** np.floor(np.log10(max(nonzero.min(), 1e-4 * nonzero.max())))
        ax.set_yscale("symlog", linthresh=linthresh, linscale=1.0)
        ax.set_ylim(lo * 2 if lo < 0 else lo, hi * 2 if hi > 0 else hi)
    else:
        pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.06
        ax.set_ylim(lo - pad, hi + pad)


def _loss_scale(ax: Axes, data: np.ndarray) -> None:
    """Log scale down to 1e-16 of the largest loss (below: converged to rounding)."""
    positive = data[np.isfinite(data) & (data > 0)]
    if positive.size:
        ax.set_yscale("log")
        top = positive.max()
        ax.set_ylim(max(positive.min() / 3, top * 1e-16), top * 5)


TRAJECTORY_PANELS = (("traj_m", "slope $m$ (dashed: kernel prediction)"), ("traj_ntk", r"NTK $\Theta$"),
                     ("traj_alignment", r"alignment $\zeta = \cos(u, w)$"),
                     ("traj_loss", r"excess loss $a(m - m^*)^2/2$"))


def trajectory_plot(result: Result, path: str | Path | None = None) -> Figure:
    """m, NTK, alignment and excess loss against (log) time, one curve per grid point (at most
    MAX_TRAJECTORIES, an evenly spread sub-grid, named in the legend with its label); the kernel
    (frozen-NTK) prediction m_lin dashed; non-finite values (diverging GD) left out."""
    if "time" not in result.coords:
        raise ValueError("no trajectories in this result (set train.times in the config)")
    t = np.asarray(result.coords["time"], float)
    points = _trajectory_points(result)
    fig = new_figure(11.0, 7.6)
    axes = fig.subplots(2, 2, sharex=True)
    for j, index in enumerate(points):
        style = dict(color=CURVE_COLOURS[j % len(CURVE_COLOURS)], linewidth=1.5,
                     marker=None if j < len(CURVE_COLOURS) else "o", markevery=0.1, markersize=3)
        for ax, (key, _) in zip(axes.flat, TRAJECTORY_PANELS):
            ax.plot(t, _finite(result.arrays[key][index]), label=_curve_label(result, index), **style)
        axes[0, 0].plot(t, _finite(result.arrays["traj_m_lin"][index]), color=style["color"], linewidth=1.0,
                        linestyle="--")
    _trajectory_axes(result, axes, points)
    n = _n_points(result)
    shown = f"{len(points)} of {n} grid points" if len(points) < n else f"all {n} grid points"
    first_seed = ", first seed" if "seed" in result.axes else ""
    fig.suptitle(f"{result.meta['name']}: trajectories ({shown}{first_seed}); dashed: kernel (frozen-NTK) "
                 "prediction", fontsize=10)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8,
               frameon=False)
    save_figure(fig, path)
    return fig


def _n_points(result: Result) -> int:
    return int(np.prod([len(result.coords[a]) for a in sweep_axes(result)]))


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


def _trajectory_axes(result: Result, axes, points: list[tuple[int, ...]]) -> None:
    """Scales (from the actual trajectories, not the kernel prediction), labels and the teacher line."""
    gd = result.meta["config"].get("train", {}).get("optimizer") == "gd"
    t = np.asarray(result.coords["time"], float)
    teacher = _teacher(result)
    for ax, (key, ylabel) in zip(axes.flat, TRAJECTORY_PANELS):
        data = np.stack([result.arrays[key][i] for i in points])
        if key == "traj_loss":
            _loss_scale(ax, data)
        elif key == "traj_m":
            _value_scale(ax, np.append(data, [] if teacher is None else [teacher]))
        elif key == "traj_ntk":
            _value_scale(ax, data)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.25)
        _time_scale(ax, t)
    if teacher is not None:
        axes[0, 0].axhline(teacher, color="0.3", linestyle=":", linewidth=1.0)
        axes[0, 0].annotate(f"m* = {teacher:g}", (0.01, teacher), xycoords=("axes fraction", "data"),
                            fontsize=7, color="0.3", va="bottom")
    for ax in axes[1]:
        ax.set_xlabel("GD step k" if gd else "time t [steps]")


# ---------------------------------------------------------------- everything a config asks for

def figure_stems(result: Result) -> list[tuple[str, Callable[[], Figure]]]:
    """(file stem, drawing function) of every figure the config asks for:
    `<name>__<metric>__<y>_vs_<x>` (2-D maps; `__by_<axes>` appended for small multiples),
    `<name>__<metric>__vs_<x>` (1-D sweeps), `<name>__trajectories` (with a time axis)."""
    plot = result.meta["config"].get("plot", {})
    axes = sweep_axes(result)
    x = plot.get("x", axes[0])
    y = plot.get("y", next((a for a in axes if a != x), None))
    name = result.meta["name"]
    by = [a for a in axes if a not in (x, y)]
    suffix = f"__by_{'_'.join(by)}" if by else ""
    stems = []
    for metric in plot.get("maps", ["phase", "ntk_change", "alignment_final", "tau"]):
        if metric not in result.arrays or metric not in result.meta["metrics"]:
            continue  # e.g. gd_outcome of a gradient-flow sweep
        kind = result.meta["metrics"][metric]["kind"]
        if y is None:
            stems.append((f"{name}__{metric}__vs_{x}", partial(line_plot, result, metric, x)))
        elif kind == "categorical":
            stems.append((f"{name}__{metric}__{y}_vs_{x}{suffix}", partial(phase_map, result, x, y, metric=metric)))
        elif kind == "continuous":
            stems.append((f"{name}__{metric}__{y}_vs_{x}{suffix}", partial(metric_map, result, metric, x, y)))
    if "time" in result.coords:
        stems.append((f"{name}__trajectories", partial(trajectory_plot, result)))
    return stems


def render_all(result: Result, out_dir: str | Path, formats: Sequence[str] | None = None) -> list[Path]:
    """Draw every figure of `figure_stems` into `out_dir`, in `formats` (default: the config's plot.formats,
    else PNG); each file written atomically. Returns the paths written."""
    return render(figure_stems(result), out_dir, figure_formats(result.meta, formats))
