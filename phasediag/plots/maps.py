"""Figures of a sweep result: phase maps, continuous metric maps, line plots, small multiples, trajectories.

Every public function returns a matplotlib ``Figure`` and writes a file only when given a path (atomically,
format from the suffix; the same result always gives the same bytes). Figures are plain
``matplotlib.figure.Figure`` objects, never registered with pyplot, so nothing needs closing and no global
state changes; matplotlib is imported inside the functions (Agg selected when pyplot is not loaded yet), so
``import phasediag.plots.maps`` stays cheap and no display is needed. Figures are laid out by base.fit (one
measured pass, no layout engine) and drawn with the run's figure options (plot.labels, plot.title, plot.size,
plot.style; base.current_options).

Reading the figures:
- every phase label and GD outcome has its one colour-blind-safe colour (base.CATEGORY_COLOURS), the same in
  maps, strips and trajectories; on phase maps, exact-GD outcomes other than "converges" and flags (not
  converged at T; the health flags of a width-scaling sweep) are hatched, black on a white halo;
- labels, titles, legends and colour bars are in the model's notation (phasediag.plots.notation): the sweep
  axes as the config's expressions (``$\\sigma_u^2 = \\sigma_w^2 = s$``), held values as ``$r = 1$``; the user's
  plot.labels / plot.title replace them;
- with a seed axis, categorical maps show the most frequent label over the seeds, continuous ones the
  median (titles say so); line plots add the 25-75% band and the values of every seed;
- values below their metric's resolution (the accuracy of its evaluation, meta "resolution") are "no change",
  white and named in the legend with the level, and carry no sign hatch; the sign hatch of the NTK change
  covers decided regions only (scattered single points are counted in the legend instead);
- colour ranges are fixed for alignments ([-1, 1]; gains [0, 1]), colour bars carry one label and ticks with
  0 where it is in range; ``classify`` thresholds (and 0 for width exponents) are black lines on a white
  halo, named in the legend and marked on the colour bar;
- with 3 or more sweep axes, maps become small multiples over the extra axes (at most 4 values of each of
  the first two extra axes; further axes held at their middle value, named in the title), with one shared
  colour range and one colour bar.
Grids that are uniform on screen (log or linear sweeps) are drawn as one image in the axes' scaled
coordinates, pixel-identical to a QuadMesh but several times faster.
"""

from __future__ import annotations

import functools
import itertools
import re
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from phasediag.engine.metrics import FLOW_PREFIX, GD_END_STATE
from phasediag.plots import notation
from phasediag.plots.base import (CATEGORY_COLOURS, FALLBACK_COLOURS, LINESTYLES, MARKERS, SPECIAL_COLOURS, close_up,
                                  FigureOptions, colorbar, current_options, figure_formats, figure_options,
                                  legend, new_figure,
                                  phase_colour, pretty, render, save_figure, swatch)
from phasediag.results.store import Result

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CATEGORY_COLOURS", "SPECIAL_COLOURS", "FALLBACK_COLOURS", "GD_HATCHES", "NOT_CONVERGED_HATCH", "FLAG_HATCHES",
    "NEGATIVE_HATCH", "MAX_TRAJECTORIES", "MAX_FACETS", "phase_map", "metric_map", "line_plot", "trajectory_plot",
    "render_all", "figure_stems", "axis_label", "sweep_axes", "reduce_seeds", "nan_median", "rectangles",
    "resolution", "decided",
]

GD_HATCHES = {"catapult": "//", "diverges": "xx", "oscillates": "..", "stalls": "\\\\"}
NOT_CONVERGED_HATCH = "oo"
# flags hatched on the phase maps (not_converged; the health flags of mode: scaling); others: SPARE_HATCHES
FLAG_HATCHES = {"not_converged": NOT_CONVERGED_HATCH, "unstable": "//", "frozen": "\\\\", "divergent_output": ".."}
FLAG_TEXT = {"not_converged": "not converged at $T$ (loss > 1% of initial)"}
SPARE_HATCHES = ("**", "OO", "++", "--")
NEGATIVE_HATCH = "//"  # ntk_change < 0 on the NTK-change map
HATCH_COLOUR = "#1a1a1a"
HATCH_WIDTH = 0.7  # points; on a white halo HALO_WIDTH wide, so a hatch reads on every phase colour
HALO_WIDTH = 2.2
KERNEL_COLOUR = "0.35"  # legend handle of the kernel (frozen-NTK) prediction
KERNEL_STYLE = (0, (1.2, 1.2))  # the kernel prediction: thin, densely dotted, in its curve's colour
CURVE_COLOUR = "black"  # line plots: the curve is neutral; colours are phases (strip) only
BAND_COLOUR = "0.55"
SEED_DOTS = 20_000  # per-seed values drawn as dots up to this many
MAX_TRAJECTORIES = 12
MAX_FACETS = 4
MIN_CONTOUR_POINTS = 4  # threshold contours only on maps with at least this many points along each axis
MIN_LOOP_CELLS = 4  # closed threshold contours this small are left out (noise, not a boundary) ...
MIN_LOOP_FRACTION = 0.025  # ... as are those with fewer vertices than this fraction of the longer grid side
DECIDED_PER = 10  # a sign region is hatched when a square of 1/DECIDED_PER of the shorter grid side fits in it
DECIDED_MAX = 5  # ... (at most this many cells wide)
TIME_METRICS = ("tau", "t_learn")
# arbitrary where GD diverges (not drawn there): on a GD sweep the end-state metrics are the GD run's
DIVERGED_UNDEFINED = ("gd_loss_peak", "gd_ntk_final", *GD_END_STATE)
ALIGNMENTS = ("alignment_init", "alignment_final")  # signed cosines: always the range [-1, 1]
GAINS = ("alignment_gain", "disalignment")  # amounts of alignment: always [0, 1]
SIGNED = ("m_init", "m_final", "gram_V")
MANY_DECADES = 3  # log axes spanning more decades than this: labelled decades only, no minor ticks
ZERO_INFLATED = 0.2  # line plots: the mean, not the median, when at this share of x the seeds split at 0


# ---------------------------------------------------------------- data

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


def _nan_mean(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return np.nanmean(values, axis=axis)


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


def resolution(result: Result, metric: str) -> float:
    """The absolute accuracy of `metric`'s evaluation (meta "resolution", else the registry's; 0: none):
    values with |x| below it are indistinguishable from 0."""
    from phasediag.engine import metrics

    info = result.meta["metrics"].get(metric, {})
    value = metrics.resolution_of(metric, info)
    return float(value) if value is not None else 0.0


def _noise(values: np.ndarray, level: float) -> np.ndarray:
    """Where finite `values` are below the resolution `level` ("no change"); exact zeros always."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (np.abs(values) < level) if level > 0 else values == 0


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


def _window_sums(mask: np.ndarray, k: int) -> np.ndarray:
    """Sums of `mask` over every k x k window, indexed by the window's last cell (zero-padded before)."""
    padded = np.zeros((mask.shape[0] + k, mask.shape[1] + k), np.int64)
    padded[k:, k:] = mask
    total = padded.cumsum(0).cumsum(1)
    return total[k:, k:] - total[:-k, k:] - total[k:, :-k] + total[:-k, :-k]


def decided(mask: np.ndarray, k: int | None = None) -> np.ndarray:
    """The cells of a 2-D `mask` that belong to a region at least k x k cells wide (a morphological opening:
    the union of the k x k squares that lie wholly inside the mask): a sign that flips from point to point
    (one sampled initialization per point) is not a region. k: 1/DECIDED_PER of the shorter grid side, at most
    DECIDED_MAX (1, every cell, on grids of fewer than 15 points); a k x k square of random signs (p = 1/2) is
    all negative with probability 2^(-k^2)."""
    m = np.asarray(mask, bool)
    if k is None:
        k = max(1, min(DECIDED_MAX, int(round(min(m.shape) / DECIDED_PER))))
    if k <= 1 or not m.any():
        return m
    inside = _window_sums(m, k) == k * k  # squares ending at (i, j), wholly inside
    inside[: k - 1, :] = False  # (windows reaching before the grid)
    inside[:, : k - 1] = False
    covered = np.zeros((m.shape[0] + k - 1, m.shape[1] + k - 1), bool)  # each square covers [i-k+1, i]
    covered[: m.shape[0], : m.shape[1]] = inside
    return _window_sums(covered, k)[k - 1:, k - 1:][: m.shape[0], : m.shape[1]] > 0


# ---------------------------------------------------------------- text: labels, titles (notation)

def _options(result: Result) -> FigureOptions:
    return current_options(result.meta)


def _with_options(draw: Callable) -> Callable:
    """A figure function called directly (Python API, no options active) draws with the options of its result's
    meta (plot.size, fonts, style, labels, title), as render() would."""
    @functools.wraps(draw)
    def drawn(result: Result, *args, **kwargs):
        options = FigureOptions.of(result.meta)
        if current_options() != FigureOptions() or options == FigureOptions():
            return draw(result, *args, **kwargs)
        with figure_options(options):
            return draw(result, *args, **kwargs)
    return drawn


def axis_label(result: Result, var: str) -> str:
    """The axis label of sweep variable `var` in the model's notation (notation.axis_label of the run's
    config), or the user's plot.labels entry."""
    options = _options(result)
    return options.label(var, notation.axis_label(result.meta["config"], var, options.labels))


def _relabel(result: Result, var: str) -> Callable[[int], str]:
    """The axis label of `var` broken after `chars` rendered characters (for a label longer than its axes)."""
    options = _options(result)
    return lambda chars: options.label(var, notation.axis_label(result.meta["config"], var, options.labels,
                                                                max_chars=chars))


def _description(result: Result, metric: str) -> str:
    """What a metric is, for titles: the user's label, else the registry's ('NTK change $\\Theta_T/...$')."""
    return notation.metric_label(result.meta, metric, _options(result).labels)


def _symbol(label: str) -> str:
    """The quantity of a label without its words and definition, for a colour bar or a y axis:
    'relaxation time $\\tau = 1/(a\\Theta_\\infty)$ [steps]' -> '$\\tau$ [steps]'; labels with no single math
    piece unchanged."""
    pieces = re.findall(r"(?<!\\)\$[^$]+(?<!\\)\$", label)
    if len(pieces) != 1:
        return label
    inner = pieces[0][1:-1].split(" = ")[0].strip()
    unit = re.search(r"\[[^\]]*\]\s*$", label)
    return f"${inner}$" + (f" {unit.group(0).strip()}" if unit else "")


def _math(label: str) -> str | None:
    """The TeX of the quantity a label names (no $), or None when it has no single math piece."""
    symbol = _symbol(label)
    found = re.fullmatch(r"\$([^$]+)\$(?: \[.*\])?", symbol)
    return found.group(1) if found else None


def _value_label(result: Result, metric: str) -> str:
    """The colour-bar / y-axis label of a metric: the user's label, else its symbol (and unit)."""
    return _options(result).label(metric, _symbol(result.meta["metrics"][metric]["label"]))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] if text[:1].isalpha() and text[:1].islower() else text


def _horizon(result: Result) -> str | None:
    """'$T = 30$' for a finite horizon, else None."""
    horizon = result.meta["config"].get("train", {}).get("horizon", "inf")
    try:
        value = float(horizon)
    except (TypeError, ValueError):
        return None
    return notation.value_text("T", value) if np.isfinite(value) else None


def _held_text(result: Result, held: Mapping[str, int]) -> str | None:
    """'$r = 1$, $k = 2$': the values of the axes held fixed, else None."""
    if not held:
        return None
    return ", ".join(notation.value_text(a, result.coords[a][i]) for a, i in held.items())


def _title(result: Result, what: str, names: Sequence[str], *, over: str | None = None,
           held: Mapping[str, int] | None = None) -> str | None:
    """The title of a figure (None: none): `what`, the horizon, how seeds are reduced (`over`: e.g. 'median',
    None: no reduction named), the held axes; the user's plot.title for the figure stem or metric (`names`)."""
    n = _seeds(result)
    at = [text for text in (_horizon(result), _held_text(result, held or {})) if text]
    parts = [_capital(what) + (" at " + ", ".join(at) if at else "")]
    if over is not None and n > 1:
        parts.append(f"{over} over {n} seeds")
    elif n == 1:
        parts.append("one sampled initialization")
    return _options(result).title_of(", ".join(parts), *names)


def _stem(result: Result, metric: str, x: str, y: str | None) -> str:
    """The file stem figure_stems gives this figure (the plot.title key of a figure)."""
    name = result.meta["name"]
    if y is None:
        return f"{name}__{metric}__vs_{x}"
    by = [a for a in sweep_axes(result) if a not in (x, y)]
    return f"{name}__{metric}__{y}_vs_{x}" + (f"__by_{'_'.join(by)}" if by else "")


def _facet_title(result: Result, at: Mapping[str, int], held: Mapping[str, int]) -> str:
    return ", ".join(notation.value_text(a, result.coords[a][i]) for a, i in at.items() if a not in held)


def _level_text(math: str | None, words: str, level: float, absolute: bool = False) -> str:
    """'$|\\Theta_T/\\Theta_0 - 1| = 0.1$ (threshold)': a level of a quantity, in its notation."""
    value = notation.number_tex(level)
    if math is None:
        return f"{words} = ${value}$"
    quantity = f"|{math}|" if absolute else math
    return f"${quantity} = {value}$"


def _noise_text(level: float, math: str | None = None, *, signed: bool = True, drawn_as_zero: bool = False) -> str:
    """The legend entry of values below the resolution `level` (0: exact zeros only); `signed`: the quantity
    can be negative (its modulus is compared); `drawn_as_zero`: shown as the 0 of a linear colour scale."""
    quantity = "x" if math is None or len(math) > 24 else math
    quantity = f"|{quantity}|" if signed else quantity
    if level <= 0:
        return f"no change (${quantity} = 0$)"
    text = f"${quantity} < {notation.number_tex(level, 2)}$"
    return f"{text} drawn as 0 (rounding)" if drawn_as_zero else f"no change ({text}, rounding)"


# ---------------------------------------------------------------- axes, ticks

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
    """Scales, limits (the cells exactly), labels, readable ticks; one tick per value of short `values` axes."""
    ax.set_xscale("log" if grid.xlog else "linear")
    ax.set_xlim(grid.xe[0], grid.xe[-1])
    if not _discrete_ticks(ax.xaxis, result, grid.x) and grid.xlog:
        log_ticks(ax.xaxis, grid.xe[0], grid.xe[-1])
    if xlabel:
        ax.set_xlabel(axis_label(result, grid.x))
    if grid.y is None:
        return
    ax.set_yscale("log" if grid.ylog else "linear")
    ax.set_ylim(grid.ye[0], grid.ye[-1])
    if not _discrete_ticks(ax.yaxis, result, grid.y) and grid.ylog:
        log_ticks(ax.yaxis, grid.ye[0], grid.ye[-1])
    if ylabel:
        ax.set_ylabel(axis_label(result, grid.y))


_PARSER: list = []  # the one mathtext parser of every figure drawn here (see _share_mathtext)


def _new_figure(width: float, height: float) -> Figure:
    """base.new_figure (no layout engine) on an Agg canvas of its own (one renderer for base.fit's measuring
    and the PNG drawing, instead of a new one for each), sharing one mathtext parser with every figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = new_figure(width, height, layout=None)
    FigureCanvasAgg(fig)
    _share_mathtext(fig)
    return fig


def _share_mathtext(fig: Figure) -> None:
    """matplotlib caches parsed mathtext per parser, and every renderer has its own parser: the same tick
    labels and axis labels would be parsed again (~15 ms each) for every figure. One parser for all."""
    renderer = fig.canvas.get_renderer()
    parser = getattr(renderer, "mathtext_parser", None)
    if parser is None:
        return
    if not _PARSER:
        _PARSER.append(parser)
    elif type(parser) is type(_PARSER[0]) and getattr(parser, "_output_type", None) == getattr(
            _PARSER[0], "_output_type", None):
        renderer.mathtext_parser = _PARSER[0]


def _discrete_ticks(axis, result: Result, var: str) -> bool:
    """A sweep given as a short list of `values`: one tick per value, labelled with it (True when set)."""
    spec = result.meta["config"]["sweep"].get(var, {})
    values = np.sort(np.asarray(result.coords[var], float))
    if "values" not in spec or len(values) > 8:
        return False
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    axis.set_major_locator(FixedLocator(values))
    axis.set_major_formatter(FixedFormatter([_plain(v) for v in values]))
    axis.set_minor_locator(NullLocator())
    return True


def _plain(value: float) -> str:
    """A tick label: plain text where the number needs no mathtext (each distinct mathtext string costs a
    ~15 ms parse), with a true minus sign."""
    tex = notation.number_tex(value)
    return tex.replace("-", "\u2212") if re.fullmatch(r"-?[0-9.]+", tex) else f"${tex}$"


def log_ticks(axis, lo: float, hi: float, *, most: int = 8) -> None:
    """Readable ticks on a log axis from `lo` to `hi`: over more than MANY_DECADES decades, labelled decades
    (every k-th, at most `most`; the others unlabelled minor ticks) and no 2..9 minor ticks (clutter, and
    ~2 ms each); over fewer, 1-2-5 steps labelled as plain numbers (0.05, 0.1, 0.2, ...)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

    lo, hi = sorted((float(lo), float(hi)))
    if not (lo > 0 and np.isfinite(hi)):
        return
    first, last = int(np.ceil(np.log10(lo) - 1e-9)), int(np.floor(np.log10(hi) + 1e-9))
    decades = np.log10(hi / lo)
    if decades > MANY_DECADES:
        step = max(1, int(np.ceil((last - first + 1) / most)))
        start = first + (-first) % step  # labelled decades include 10^0 when it is in range
        major = [10.0**k for k in range(start, last + 1, step)]
        minor = [10.0**k for k in range(first, last + 1) if (k - start) % step]
        axis.set_major_locator(FixedLocator(major))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"$10^{{{int(round(np.log10(v)))}}}$"))
        axis.set_minor_locator(FixedLocator(minor) if minor else NullLocator())
        axis.set_minor_formatter(NullFormatter())
        return
    for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), tuple(range(1, 10))):
        values = [m * 10.0**k for k in range(first - 1, last + 1) for m in subs if lo <= m * 10.0**k <= hi]
        if len(values) >= 5 or subs[-1] == 9:
            break
    axis.set_major_locator(FixedLocator(values))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _plain(v)))
    axis.set_minor_locator(NullLocator() if len(subs) > 1 else LogLocator(subs=(2.0, 5.0)))
    axis.set_minor_formatter(NullFormatter())


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


def _hatch_width(patch, width: float) -> None:
    if hasattr(patch, "set_hatch_linewidth"):  # matplotlib >= 3.10; older: rcParams["hatch.linewidth"]
        patch.set_hatch_linewidth(width)


def _hatch_handle(hatch: str, label: str):
    """A legend handle of a hatch: the hatch on white."""
    from matplotlib.patches import Patch

    handle = Patch(facecolor="white", edgecolor=HATCH_COLOUR, hatch=hatch, linewidth=0.4, label=label)
    _hatch_width(handle, HATCH_WIDTH)
    return handle


def _hatch(ax: Axes, grid: _Grid, mask: np.ndarray, hatch: str, label: str):
    """Hatch the cells where `mask` is True: black hatch lines on a white halo (two patches of the same
    pattern, one over the other), legible on every colour; returns a legend handle or None."""
    from matplotlib.patches import PathPatch

    if not np.any(mask):
        return None
    transform = ax.transData if grid.y is not None else ax.get_xaxis_transform()
    path = _region_path(grid, np.atleast_2d(mask))
    for colour, width, z in (("white", HALO_WIDTH, 2.4), (HATCH_COLOUR, HATCH_WIDTH, 2.5)):
        patch = PathPatch(path, facecolor="none", edgecolor=colour, linewidth=0.0, hatch=hatch, transform=transform,
                          zorder=z, label=label)
        _hatch_width(patch, width)
        ax.add_artist(patch)  # not add_patch: its data-limit update walks every rectangle in Python (slow)
    return _hatch_handle(hatch, label)


def _category_colours(result: Result, metric: str) -> list[str]:
    """Colour of every code of a categorical metric (fixed per label; unknown labels from FALLBACK_COLOURS)."""
    spare = iter(FALLBACK_COLOURS * 4)
    return [phase_colour(metric, name) or next(spare) for name in result.meta["legends"][metric]]


def _note(text: str):
    """A legend entry without a symbol (a count or a remark)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker="", label=text)


def _line_handle(label: str, **style):
    from matplotlib import patheffects
    from matplotlib.lines import Line2D

    style = {"color": "black", "linewidth": 1.6, **style}
    halo = [patheffects.withStroke(linewidth=style["linewidth"] + 2.0, foreground="white")]
    return Line2D([], [], label=label, path_effects=halo, **style)


# ---------------------------------------------------------------- figures: panels, legends, layout

def _narrow(result: Result) -> bool:
    return _options(result).narrow


def _panels(result: Result, used: Sequence[str], ax: Axes | None, fixed: Mapping[str, float] | None,
            colourbar: bool) -> tuple[Figure, list[tuple[Axes, dict[str, int]]], dict[str, int]]:
    """The figure and (axes, indices of the other sweep axes) per panel: small multiples over the extra axes
    when we own the figure and no `fixed` is given, else one panel."""
    narrow = _narrow(result)
    if ax is not None or fixed or len(sweep_axes(result)) <= len(used):
        held = _held(result, used, fixed)
        if ax is None:
            size = (6.4, 6.0) if narrow else (6.6 + (0.9 if colourbar else 2.0), 4.6)
            fig = _new_figure(*size)
            ax = fig.add_subplot()
        return ax.figure, [(ax, held)], held
    grid, held = _facet_grid(result, used)
    rows, cols = len(grid), len(grid[0])
    size = (7.0, 7.0 * (rows + 0.9) / (cols + 0.3)) if narrow else (3.3 * cols + (1.1 if colourbar else 2.2),
                                                                   2.9 * rows + 1.0)
    fig = _new_figure(*size)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    return fig, [(axes[i, j], grid[i][j]) for i in range(rows) for j in range(cols)], held


def _label_panels(result: Result, grid: _Grid, panels: list, held: dict) -> None:
    """Axis setup of every panel; small multiples get their values as titles, tick labels on the bottom row and
    the left column only, and one x and one y label for the figure."""
    many = len(panels) > 1
    for panel, at in panels:
        _setup_axes(panel, result, grid, xlabel=not many, ylabel=not many)
        if many:
            panel.set_title(_facet_title(result, at, held))
            spec = panel.get_subplotspec()
            panel.tick_params(labelbottom=spec.is_last_row(), labelleft=spec.is_first_col())
    if many:
        panels[0][0].figure.supxlabel(axis_label(result, grid.x))
        panels[0][0].figure.supylabel(axis_label(result, grid.y))


def _set_title(fig: Figure, panels: list, text: str | None) -> None:
    """Small multiples: a figure title; one panel: the axes title. None: no title."""
    if not text:
        return
    if len(panels) > 1:
        fig.suptitle(text)
    else:
        panels[0][0].set_title(text)


def _legend(result: Result, fig: Figure, ax: Axes | None, handles: Sequence, *, below: bool = False) -> None:
    """One legend outside the data: a figure legend right of the axes (below on narrow figures, or when
    `below`); on a caller's axes, attached to it, outside on the right."""
    handles = list(handles)
    if not handles:
        return
    if ax is not None:  # a caller's axes: keep the legend attached to it (validation overlays take it over)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return
    if below or _narrow(result):
        texts = max(notation.rendered_length(h.get_label()) for h in handles)
        ncols = 2 if texts > 30 or _narrow(result) else 3  # (too wide: scaling.finish makes it one column)
        legend(fig, handles, below=True, ncols=min(len(handles), ncols))
    else:
        legend(fig, handles)


def _finish(result: Result, fig: Figure, own: bool, labels: Sequence[tuple[Any, str]] = ()) -> None:
    """Lay out a figure we own (base.fit through scaling.finish: long titles and labels broken between their
    parts); `labels`: (axis, sweep variable) whose labels may be broken again."""
    if not own:
        return
    from phasediag.plots.base import finish

    finish(fig, [(axis, _relabel(result, var)) for axis, var in labels])
    for item in fig.legends:  # base.fit places a figure legend at its anchor; matplotlib would keep it a
        item.borderaxespad = 0.0  # further 0.5 em inside, over the decorations fit measured next to it


# ---------------------------------------------------------------- categorical maps

def _draw_categories(ax: Axes, result: Result, metric: str, grid: _Grid, codes: np.ndarray) -> dict:
    """Colour every cell by its label; returns legend handles of the labels present."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    names = result.meta["legends"][metric]
    colours = _category_colours(result, metric)
    norm = BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names))
    _raster(ax, grid, codes, cmap=ListedColormap(colours), norm=norm)
    return {pretty(names[c]): swatch(colours[c], pretty(names[c])) for c in np.unique(codes).tolist()}


def _flag_text(result: Result, name: str, info: dict) -> str:
    return _options(result).label(name, FLAG_TEXT.get(name, info["label"]))


def _hatch_marks(ax: Axes, result: Result, grid: _Grid, at: Mapping[str, int]) -> dict:
    """Hatch GD outcomes other than 'converges' (one hatch per outcome) and every flag metric where it is set
    (not converged at T; the health flags of a scaling sweep), each with its own hatch; legend handles."""
    marks = []
    if "gd_outcome" in result.arrays:
        outcome = _plane(result, reduce_seeds(result, "gd_outcome"), grid.x, grid.y, at)
        marks += [(outcome == code, GD_HATCHES.get(name, "++"), f"GD {pretty(name)}")
                  for code, name in enumerate(result.meta["legends"]["gd_outcome"]) if name != "converges"]
    spare = iter(SPARE_HATCHES * 4)
    for name, info in result.meta["metrics"].items():
        if info["kind"] == "flag" and name in result.arrays:
            flag = _plane(result, reduce_seeds(result, name), grid.x, grid.y, at).astype(bool)
            marks.append((flag, FLAG_HATCHES.get(name) or next(spare), _flag_text(result, name, info)))
    handles = {}
    for mask, hatch, label in marks:
        handle = _hatch(ax, grid, mask, hatch, label)
        handles.update({label: handle} if handle is not None else {})
    return handles


def _categorical_what(result: Result, metric: str) -> tuple[str, str]:
    """(title text, the noun of 'most frequent <noun>') of a categorical metric."""
    if metric == "gd_outcome":
        return "outcome of exact gradient descent", "GD outcome"
    if metric == "limit_phase":
        return r"phase as $d \to \infty$", "phase"
    if metric == "phase":
        return ("phase (gradient-flow labels; hatched: GD outcome)" if "gd_outcome" in result.arrays else "phase",
                "phase")
    label = _description(result, metric)
    return label, label


def _categorical_title(result: Result, metric: str, names: Sequence[str], held: Mapping[str, int] | None,
                       one_colour: bool = True) -> str | None:
    what, noun = _categorical_what(result, metric)
    n = _seeds(result)
    if n > 1 and one_colour:  # one colour per cell: the most frequent label
        return _title(result, f"most frequent {noun} over {n} seeds" + (
            "" if metric != "phase" or "gd_outcome" not in result.arrays else " (hatched: GD outcome)"),
            names, held=held)
    return _title(result, what, names, held=held)


#: line style and legend text of the exact boundaries each rule decides (engine.boundaries.RULES)
BOUNDARY_STYLES = {
    "ntk_threshold": ("solid", r"$|\Theta_T/\Theta_0 - 1|$ = threshold"),
    "alignment_threshold": ("dashed", "alignment = threshold"),
    "mechanism": ("dotted", "alignment = disalignment"),
    "saddle": ("dashdot", "saddle ($g = 0$)"),
    "gd_outcome": ("solid", "GD outcome changes"),
}


def _boundary_rows(result: Result, metric: str, x: str, y: str, at: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The rows of result.boundaries of `metric` found along x or y on the panel whose other axes are `at`."""
    table = result.boundaries
    if not table or not len(table.get("of", ())):
        return {}
    pick = (table["of"] == metric) & np.isin(table["along"], [x, y])
    for axis, index in at.items():
        if axis in table:
            pick &= table[axis] == np.asarray(result.coords[axis], float)[index]
    return {name: values[pick] for name, values in table.items()}


def _draw_boundaries(ax: Axes, result: Result, metric: str, x: str, y: str, at: Mapping[str, int]) -> dict:
    """The exact boundaries (boundaries.csv) over a categorical map: one curve per kind of crossing (labels
    below and above), through the lines that cross once, broken where a line crosses it more or not at all
    (those crossings are dots); black with a white halo, the line style saying which rule decides. Returns
    legend handles."""
    from matplotlib import patheffects

    rows = _boundary_rows(result, metric, x, y, at)
    handles = {}
    if not rows or not rows["along"].size:
        return handles
    # a sampled initialization's quantiles over seeds: the middle one drawn as the boundary, the others thin
    quantile = rows.get("quantile", np.full(rows["along"].size, -1.0))  # (-1: no quantiles, one curve per kind)
    levels = np.unique(quantile[quantile >= 0])
    middle = levels[np.argmin(np.abs(levels - 0.5))] if levels.size else -1.0
    styles = list(BOUNDARY_STYLES)

    def legend_order(key) -> tuple:  # (the rules in BOUNDARY_STYLES order, then as found)
        first = key[3].split("+")[0]
        return styles.index(first) if first in styles else len(styles), key

    for key in sorted(set(zip(rows["along"], rows["below"], rows["above"], rows["rule"], quantile.tolist())),
                      key=legend_order):
        along, below, above, rule, level = key
        mine = (rows["along"] == along) & (rows["below"] == below) & (rows["above"] == above) & (quantile == level)
        main = level == middle
        other = y if along == x else x
        position = {v: i for i, v in enumerate(np.asarray(result.coords[other], float))}
        line_of = [position[v] for v in rows[other][mine]]  # (the index of each crossing's line)
        at_line, count = np.unique(line_of, return_counts=True)
        once = set(at_line[count == 1].tolist())
        style, text = BOUNDARY_STYLES.get(rule.split("+")[0], ("solid", rule))
        width = 1.4 if main else 0.7
        kw = {"color": "black", "linewidth": width, "linestyle": style, "solid_capstyle": "round",
              "path_effects": [patheffects.withStroke(linewidth=width + 2.0, foreground="white")], "zorder": 4}
        xs, ys = rows[x][mine], rows[y][mine]
        runs: list[list[int]] = []
        for i in np.argsort(line_of, kind="stable"):
            k = line_of[i]
            if k not in once:
                ax.plot([xs[i]], [ys[i]], marker="o", markersize=2.5, **{**kw, "linestyle": "none"})
                continue
            if runs and line_of[runs[-1][-1]] == k - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            ax.plot(xs[run], ys[run], **kw)
        if main:
            label = "boundary: " + text
            handles[label] = _line_handle(label, linestyle=style, linewidth=width)
    spread = [f"{q:g}" for q in levels if q != middle]
    if spread:
        label = f"boundaries of quantile {middle:g} over seeds; thin: {', '.join(spread)}"
        handles[label] = _line_handle(label, linestyle="solid", linewidth=0.7)
    return handles


@_with_options
def phase_map(result: Result, x: str, y: str, ax: Axes | None = None, path: str | Path | None = None, *,
              metric: str = "phase", fixed: Mapping[str, float] | None = None, stem: str | None = None) -> Figure:
    """Categorical map of `metric` ("phase", or "gd_outcome") over the sweep axes x (horizontal) and y.

    Every label has its fixed colour (base.CATEGORY_COLOURS); the legend lists the labels present. On the phase
    map, points whose exact-GD outcome is not "converges" are hatched (one hatch per outcome, GD_HATCHES), as
    are points not converged at a finite horizon. With more sweep axes: small multiples over them, or, with
    `ax` or `fixed` ({axis: value}, nearest point; default the middle), the single slice there. `stem`: the
    figure's file stem (the key of its plot.title; default the one figure_stems gives).
    """
    _check_axes(result, x, y)
    if _info(result, metric)["kind"] != "categorical":
        raise ValueError(f"{metric!r} is not categorical; draw it with metric_map")
    fig, panels, held = _panels(result, (x, y), ax, fixed, colourbar=False)
    grid = _Grid.of(result, x, y)
    codes_all = reduce_seeds(result, metric)
    handles: dict[str, Any] = {}
    for panel, at in panels:
        handles.update(_draw_categories(panel, result, metric, grid, _plane(result, codes_all, x, y, at)))
        handles.update(_hatch_marks(panel, result, grid, at) if metric != "gd_outcome" else {})
        handles.update(_draw_boundaries(panel, result, metric, x, y, at))
    _label_panels(result, grid, panels, held)
    order = [pretty(n) for n in result.meta["legends"][metric]]
    ordered = sorted(handles.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    _legend(result, fig, ax, [h for _, h in ordered])
    names = (stem or _stem(result, metric, x, y), metric)
    _set_title(fig, panels, _categorical_title(result, metric, names, held if len(panels) > 1 else panels[0][1]))
    _finish(result, fig, ax is None, _outer_axes(panels, x, y))
    save_figure(fig, path)
    return fig


def _outer_axes(panels: list, x: str, y: str) -> list[tuple[Any, str]]:
    """(axis, variable) of the labelled axes: the bottom row's x axes and the left column's y axes."""
    out = []
    for panel, _ in panels:
        if panel.get_xlabel():
            out.append((panel.xaxis, x))
        if panel.get_ylabel():
            out.append((panel.yaxis, y))
    return out


# ---------------------------------------------------------------- continuous maps

@dataclass
class _Colours:
    """How a continuous metric is coloured: the drawn values (NaN where `special`), norm, colour map,
    colour-bar label and ticks, and the special cells: (mask over the sweep axes, colour, legend text)."""

    values: np.ndarray
    norm: Any
    cmap: str
    label: str
    special: list[tuple[np.ndarray, str, str]]
    log_field: bool  # contour the threshold on log10 of the drawn values
    ticks: Any = None  # a tick locator for the colour bar (None: by the norm)


def _inf_text(result: Result, metric: str, sign: str = "") -> str:
    math = _math(result.meta["metrics"][metric]["label"])
    quantity = f"${math} = {sign}\\infty$" if math else f"{metric} = {sign}inf"
    return f"{quantity} (never reached)" if metric in TIME_METRICS and not sign else quantity


def _colours(result: Result, metric: str, values: np.ndarray) -> _Colours:
    """Colour scale of a continuous metric: log10|ntk_change|; alignments on [-1, 1] (diverging), gains on
    [0, 1]; a log scale for positive values spanning a decade or more where meta says log; a diverging scale
    centred at 0 for signed values and width exponents; else viridis. Values below the resolution are "no
    change" (white), GD-diverged cells of GD quantities are not drawn (counted in the legend)."""
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import FixedLocator, MaxNLocator

    info = result.meta["metrics"][metric]
    math = _math(info["label"])
    values = np.asarray(values, float)
    diverged = _diverged(result, metric, values.shape)
    level = resolution(result, metric)
    drawn_as = _drawn_as(metric)
    noise = _noise(values, level) & ~diverged if drawn_as == "ntk_change" or level > 0 else np.zeros(values.shape, bool)
    # no change: white off the scale (log scales: log10|ntk_change|, LogNorm), else the 0 of a linear scale
    linear = drawn_as != "ntk_change" and not (info.get("log") and drawn_as not in ALIGNMENTS + GAINS + SIGNED)
    text = _noise_text(level, math, signed=drawn_as not in GAINS, drawn_as_zero=linear)
    special = [(diverged, SPECIAL_COLOURS["nan"], _count_text("GD diverges", diverged)),
               (noise, None if linear else SPECIAL_COLOURS["no_change"], text),
               (np.isposinf(values), SPECIAL_COLOURS["inf"], _inf_text(result, metric)),
               (np.isneginf(values), SPECIAL_COLOURS["inf"], _inf_text(result, metric, "-")),
               (np.isnan(values) & ~diverged, SPECIAL_COLOURS["nan"], "undefined (NaN)")]
    values = np.where(diverged | (noise & ~linear), np.nan, np.where(noise, 0.0, values))
    finite = np.isfinite(values)
    label = _value_label(result, metric)
    if _drawn_as(metric) == "ntk_change":
        shown = np.full(values.shape, np.nan)
        np.log10(np.abs(values), out=shown, where=finite & (values != 0))
        default = f"$\\log_{{10}}|{math}|$" if math else f"log10 |{metric}|"
        return _Colours(shown, _linear_norm(shown, whole=True), "viridis", _options(result).label(metric, default),
                        special, log_field=False, ticks=MaxNLocator(nbins=7, integer=True))
    shown = np.where(finite, values, np.nan)
    if _drawn_as(metric) in ALIGNMENTS:
        return _Colours(shown, Normalize(-1.0, 1.0), "RdBu_r", label, special, log_field=False,
                        ticks=FixedLocator([-1.0, -0.5, 0.0, 0.5, 1.0]))
    if _drawn_as(metric) in GAINS:
        return _Colours(shown, Normalize(0.0, 1.0), "viridis", label, special, log_field=False,
                        ticks=FixedLocator([0.0, 0.25, 0.5, 0.75, 1.0]))
    positive = finite & (values > 0)
    lo, hi = (values[positive].min(), values[positive].max()) if positive.any() else (1.0, 1.0)
    if info.get("log") and positive.any() and hi / lo >= 10:
        off = finite & ~positive
        zero = bool(np.all(values[off] == 0))
        relation = "= 0" if zero else r"\leq 0"
        quantity = f"${math} {relation}$" if math else f"{metric} {'= 0' if zero else '<= 0'}"
        special.append((off, SPECIAL_COLOURS["off_scale"], f"{quantity} (off the log scale)"))
        return _Colours(np.where(positive, values, np.nan), LogNorm(lo, hi), "viridis", label, special,
                        log_field=True)
    ticks = MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10])  # multiples of a step: 0 when it is in range
    signed = _drawn_as(metric) in SIGNED or np.nanmin(shown, initial=0.0) < 0 < np.nanmax(shown, initial=0.0)
    if metric.endswith("_exp") or signed:
        top = float(np.nanmax(np.abs(shown), initial=0.0))
        top = max(0.5, np.ceil(top / 0.5 - 1e-9) * 0.5) if metric.endswith("_exp") else (top or 1.0)
        return _Colours(shown, Normalize(-top, top), "RdBu_r", label, special, log_field=False, ticks=ticks)
    return _Colours(shown, _linear_norm(shown), "viridis", label, special, log_field=False, ticks=ticks)


def _count_text(what: str, mask: np.ndarray) -> str:
    n = int(np.count_nonzero(mask))
    return f"{what}: {n} point{'s' if n != 1 else ''} (not shown)"


def _drawn_as(metric: str) -> str:
    """The metric whose drawing rules `metric` follows: a GD sweep's flow_<name> is drawn as <name> is."""
    return metric.removeprefix(FLOW_PREFIX)


def _diverged(result: Result, metric: str, shape: tuple[int, ...]) -> np.ndarray:
    """Where exact GD diverges (most frequent outcome over seeds), for metrics that mean nothing there."""
    if metric not in DIVERGED_UNDEFINED or "gd_outcome" not in result.arrays:
        return np.zeros(shape, bool)
    legend_ = result.meta["legends"]["gd_outcome"]
    return reduce_seeds(result, "gd_outcome") == legend_.index("diverges") if "diverges" in legend_ else \
        np.zeros(shape, bool)


def _linear_norm(values: np.ndarray, whole: bool = False):
    """A linear norm over the finite values (`whole`: widened to whole numbers, for log10 scales)."""
    from matplotlib.colors import Normalize

    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if whole:
        lo, hi = np.floor(lo), np.ceil(hi)
    return Normalize(lo, hi if hi > lo else lo + 1.0)


def _draw_special(ax: Axes, result: Result, grid: _Grid, colours: _Colours, at: dict,
                  counts: Mapping[str, str]) -> dict:
    """Cells not on the colour scale, in their special colours; legend handles of those present anywhere
    (`counts`: the legend text of a special kind, counted over all panels)."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    masks = [(_plane(result, m, grid.x, grid.y, at), c, counts.get(t, t)) for m, c, t in colours.special if m.any()]
    masks = [(m, c, t) for m, c, t in masks if m.any()]
    notes = {t: _note(t) for m, c, t in masks if c is None}  # drawn on the scale (as 0): named only
    masks = [(m, c, t) for m, c, t in masks if c is not None]
    if not masks:
        return notes
    codes = np.zeros(masks[0][0].shape)
    for k, (mask, _, _) in enumerate(masks, start=1):
        codes[mask & (codes == 0)] = k
    norm = BoundaryNorm(np.arange(len(masks) + 1) + 0.5, len(masks))
    _raster(ax, grid, np.ma.masked_equal(codes, 0), cmap=ListedColormap([c for _, c, _ in masks]), norm=norm)
    return {**{t: swatch(c, t) for _, c, t in masks}, **notes}


def _level(result: Result, metric: str, colours: _Colours) -> tuple[float, float, str, bool] | None:
    """(level in the metric's units, in the drawn units, legend text, contour log10 of the values?) of the
    line a map promises: the classify threshold of the metric, or 0 for a width exponent; else None."""
    info = result.meta["metrics"][metric]
    math = _math(info["label"])
    name = info.get("threshold")
    if name is not None:
        level = float(result.meta["thresholds"][name])
        text = _level_text(math, _description(result, metric), level, absolute=_drawn_as(metric) == "ntk_change")
        text += " (threshold)"
        if _drawn_as(metric) == "ntk_change":
            return level, np.log10(level), text, False
        return level, (np.log10(level) if colours.log_field else level), text, colours.log_field
    if metric.endswith("_exp"):
        return 0.0, 0.0, _level_text(math, _description(result, metric), 0.0), False
    return None


def _threshold(ax: Axes, result: Result, metric: str, grid: _Grid, shown: np.ndarray, colours: _Colours):
    """The threshold (see _level) as a black line with a white halo; the LineCollection, or None when the
    values do not cross it or the grid is too coarse to interpolate."""
    line = _level(result, metric, colours)
    if line is None or min(shown.shape) < MIN_CONTOUR_POINTS:
        return None
    _, at, text, log = line
    with np.errstate(divide="ignore", invalid="ignore"):
        field = np.log10(shown) if log else shown
    if not np.nanmin(field, initial=np.inf) < at < np.nanmax(field, initial=-np.inf):
        return None
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    halo = [patheffects.withStroke(linewidth=3.6, foreground="white")]
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


def _shrinks_text(result: Result) -> str:
    return r"NTK shrinks ($\Theta_T < \Theta_0$)"


def _sign_masks(result: Result, raw: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """ntk_change (y, x): (negative cells in decided regions, negative cells scattered); no change excluded."""
    negative = np.isfinite(raw) & (raw < 0) & ~_noise(raw, level)
    regions = decided(negative) if negative.ndim == 2 else negative
    return regions, negative & ~regions


def _sign_legend(result: Result, regions: int, scattered: int, positive: bool) -> dict:
    """Legend entries of the sign of the NTK change: the hatched regions, the scattered points it does not
    hatch (counted), or that it grows everywhere."""
    out = {}
    if regions:
        out[_shrinks_text(result)] = _hatch_handle(NEGATIVE_HATCH, _shrinks_text(result))
    if scattered:
        text = (rf"$\Theta_T < \Theta_0$ at {scattered} scattered point{'s' if scattered != 1 else ''}"
                " (not hatched)")
        out[text] = _note(text)
    if not regions and not scattered:
        text = r"NTK grows everywhere ($\Theta_T > \Theta_0$)" if positive else r"$\Theta_T \geq \Theta_0$ everywhere"
        out[text] = _note(text)
    return out


def _metric_panel(ax: Axes, result: Result, metric: str, grid: _Grid, colours: _Colours, raw: np.ndarray,
                  at: dict[str, int], counts: Mapping[str, str]) -> tuple[dict, Any]:
    """One panel of a metric map: coloured cells, special cells, threshold contour, sign hatching of decided
    regions; (legend handles, the image)."""
    shown = _plane(result, colours.values, grid.x, grid.y, at)
    image = _raster(ax, grid, np.ma.masked_invalid(shown), cmap=colours.cmap, norm=colours.norm)
    handles = _draw_special(ax, result, grid, colours, at, counts)
    line = _threshold(ax, result, metric, grid, shown, colours)
    if line is not None:
        handles[line.get_label()] = _line_handle(line.get_label())
    if _drawn_as(metric) == "ntk_change":
        regions, _ = _sign_masks(result, _plane(result, raw, grid.x, grid.y, at), resolution(result, metric))
        if regions.any():
            _hatch(ax, grid, regions, NEGATIVE_HATCH, _shrinks_text(result))
    return handles, image


@_with_options
def metric_map(result: Result, metric: str, x: str, y: str, ax: Axes | None = None,
               path: str | Path | None = None, *, fixed: Mapping[str, float] | None = None,
               stem: str | None = None) -> Figure:
    """Continuous map of `metric` over the sweep axes x and y, with a colour bar.

    Log colour scale where meta says `log` and the values span a decade; the NTK change is drawn as
    log10|ntk_change| with the decided regions where it is negative hatched. Values below the metric's
    resolution are white ("no change", the level in the legend). The metric's classify threshold is a labelled
    black contour (and a line on the colour bar). Infinite values (t_learn at a saddle), NaN and zeros on a
    log scale are grey, named in the legend; GD quantities where GD diverges are counted there. Small
    multiples (one colour range, one colour bar) / `ax` / `fixed` / `stem` as in phase_map.
    """
    _check_axes(result, x, y)
    info = _info(result, metric)
    if info["kind"] != "continuous":
        raise ValueError(f"{metric!r} is {info['kind']}; draw it with phase_map")
    fig, panels, held = _panels(result, (x, y), ax, fixed, colourbar=True)
    grid = _Grid.of(result, x, y)
    raw = reduce_seeds(result, metric).astype(float)
    colours = _colours(result, metric, raw)
    counts = _special_counts(result, colours, grid, panels)
    handles: dict[str, Any] = {}
    images = []
    for panel, at in panels:
        found, image = _metric_panel(panel, result, metric, grid, colours, raw, at, counts)
        handles.update(found)
        images.append(image)
    _label_panels(result, grid, panels, held)
    if _drawn_as(metric) == "ntk_change":
        planes = [_plane(result, raw, x, y, at) for _, at in panels]
        signs = [_sign_masks(result, p, resolution(result, metric)) for p in planes]
        handles.update(_sign_legend(result, sum(int(r.sum()) for r, _ in signs), sum(int(s.sum()) for _, s in signs),
                                    any(bool(np.any(p > 0)) for p in planes)))
    bar_axes = _bar_axes(panels)
    bar = colorbar(bar_axes, images[0], colours.label)
    _bar_ticks(bar, colours)
    level = _level(result, metric, colours)
    if level is not None and _on_bar(colours, level[1]):
        bar.ax.axhline(level[1], color="black", linewidth=1.4)
    _legend(result, fig, ax, list(handles.values()), below=True)
    names = (stem or _stem(result, metric, x, y), metric)
    _set_title(fig, panels, _title(result, _description(result, metric), names, over="median",
                                   held=held if len(panels) > 1 else panels[0][1]))
    _finish(result, fig, ax is None, _outer_axes(panels, x, y))
    if ax is None and len(panels) > 1:
        _span_rows(bar, bar_axes, [p for p, _ in panels])
    save_figure(fig, path)
    return fig


def _special_counts(result: Result, colours: _Colours, grid: _Grid, panels: list) -> dict[str, str]:
    """Legend texts of the diverged cells counted over the panels drawn (not the whole sweep)."""
    out = {}
    for mask, _, text in colours.special:
        if text.startswith("GD diverges") and mask.any():
            drawn = sum(int(_plane(result, mask, grid.x, grid.y, at).sum()) for _, at in panels)
            out[text] = _count_text("GD diverges", np.ones(drawn, bool))
    return out


def _bar_axes(panels: list):
    """The panel a colour bar sits beside: the single one, or the top right of small multiples."""
    if len(panels) == 1:
        return panels[0][0]
    return max((p for p, _ in panels), key=lambda p: (-p.get_subplotspec().rowspan.start,
                                                      p.get_subplotspec().colspan.stop))


def _span_rows(bar, top, axes: list) -> None:
    """Stretch the colour bar beside `top` (an inset in its coordinates) down to the lowest panel: one bar for
    all rows of small multiples (base.colorbar makes it one panel tall). Call after the layout."""
    from matplotlib.axes._base import _TransformedBoundsLocator

    box = top.get_position()
    lowest = min(ax.get_position().y0 for ax in axes)
    if lowest >= box.y0 - 1e-9:
        return
    x0, _, width, _ = getattr(bar.ax, "_phasediag_bounds", None) or [1.04, 0.0, 0.04, 1.0]
    y0 = (lowest - box.y0) / box.height
    bar.ax.set_axes_locator(_TransformedBoundsLocator([x0, y0, width, 1.0 - y0], top.transAxes))


def _on_bar(colours: _Colours, value: float) -> bool:
    lo, hi = colours.norm.vmin, colours.norm.vmax
    return lo < value < hi


def _bar_ticks(bar, colours: _Colours) -> None:
    """Readable colour-bar ticks: the scale's locator (0 where it is in range); log bars as log axes."""
    from matplotlib.colors import LogNorm

    if isinstance(colours.norm, LogNorm):
        log_ticks(bar.ax.yaxis, colours.norm.vmin, colours.norm.vmax, most=6)
        return
    if colours.ticks is not None:
        bar.set_ticks(colours.ticks)
    from matplotlib.ticker import FuncFormatter

    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _plain(0.0 if abs(v) < 1e-12 else v)))
    bar.minorticks_off()


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
    return {pretty(names[c]): swatch(colours[c], pretty(names[c])) for c in present}


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
    from matplotlib.ticker import FixedLocator, PercentFormatter

    names = result.meta["legends"][metric]
    colours = _category_colours(result, metric)
    handles, bottom = {}, np.zeros(len(grid.xc))
    for code in np.unique(per_seed).tolist():
        share = np.mean(per_seed == code, axis=1)
        ax.stairs(bottom + share, grid.xe, baseline=bottom, fill=True, color=colours[code], linewidth=0)
        handles[pretty(names[code])] = swatch(colours[code], pretty(names[code]))
        bottom = bottom + share
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_locator(FixedLocator([0.0, 0.25, 0.5, 0.75, 1.0]))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0, symbol=r"$\%$"))
    ax.set_ylabel(f"fraction of the {per_seed.shape[1]} seeds")
    return handles


def _threshold_line(ax: Axes, level: float, label: str) -> None:
    """The threshold as a dotted line. On a log scale it widens the view only within 6 decades of the data: a
    threshold far beyond every value (ntk_threshold: 1e300) would squash the data and overflow the scale."""
    style = dict(color="black", linestyle=":", linewidth=1.1, label=label, zorder=2.2)
    lo, hi = ax.dataLim.intervaly
    if ax.get_yscale() == "log" and not lo / 1e6 <= level <= hi * 1e6:
        ax.plot([0, 1], [level, level], transform=ax.get_yaxis_transform(), scaley=False, **style)
    else:
        ax.axhline(level, **style)


def _zero_inflated(noise: np.ndarray) -> bool:
    """Whether at ZERO_INFLATED of the x points the seeds split between "no change" and a value (a quarter to
    three quarters each): there the median jumps between 0 and the value from point to point."""
    if noise.shape[1] < 4:
        return False
    share = noise.mean(axis=1)
    return bool(np.mean((share >= 0.25) & (share <= 0.75)) >= ZERO_INFLATED)


def _continuous_line(ax: Axes, result: Result, metric: str, grid: _Grid, at: dict) -> tuple[dict, str]:
    """The values along x: with seeds, the median (the mean where the seeds split between no change and a value),
    the 25-75% band and every seed's value as a dot; no change (below the resolution) at 0 or marked at the
    bottom of a log scale; the threshold, inf markers. (legend handles, the reduction named in the title)."""
    info = result.meta["metrics"][metric]
    math = _math(info["label"])
    signed = _per_seed(result, metric, grid.x, at).astype(float)
    level = resolution(result, metric)
    noise = _noise(signed, level) if level > 0 or _drawn_as(metric) == "ntk_change" else np.zeros(signed.shape, bool)
    values = np.abs(signed) if _drawn_as(metric) == "ntk_change" else signed
    values = np.where(noise, 0.0, values)  # no change: the zero of the scale
    seeds = values.shape[1]
    mean = _zero_inflated(noise)
    finite = np.where(np.isfinite(values), values, np.nan)
    centre = _nan_mean(finite, axis=1) if mean else nan_median(values, axis=1)
    handles: dict[str, Any] = {}
    log = _line_scale(ax, info, values, metric)
    if seeds > 1:
        if mean:  # the quartiles of such values jump between 0 and a value too: the mean's standard error
            count = np.sum(np.isfinite(finite), axis=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                error = np.nanstd(finite, axis=1, ddof=1) / np.sqrt(np.maximum(count, 1))
            lo, hi, band = centre - error, centre + error, "mean $\\pm$ standard error"
        else:
            (lo, hi), band = _nan_quantile(finite, [0.25, 0.75], axis=1), f"25-75% of the {seeds} seeds"
        ax.fill_between(grid.xc, lo, hi, color=BAND_COLOUR, alpha=0.35, linewidth=0, zorder=1, label=band)
        if values.size <= SEED_DOTS:
            xs = np.repeat(grid.xc, seeds)
            ax.plot(xs, _finite(values.ravel()) if not log else np.where(values.ravel() > 0, values.ravel(), np.nan),
                    linestyle="none", marker="o", markersize=1.6, color="0.45", alpha=0.5, zorder=1.5,
                    rasterized=True, label="each seed")
    what = "mean" if mean else "median"
    ax.plot(grid.xc, _finite(np.where(centre > 0, centre, np.nan) if log else centre), color=CURVE_COLOUR,
            linewidth=1.8, zorder=3, label=f"{what} over {seeds} seeds" if seeds > 1 else None)
    if mean:
        handles["_why"] = _note("(the mean: at many points part of\nthe seeds are 0, the median jumps)")
    if log:
        log_ticks(ax.yaxis, *_positive_range(ax))
    unchanged = np.all(noise, axis=1)
    if unchanged.any():
        ax.plot(grid.xc[unchanged], np.full(unchanged.sum(), 0.03 if log else 0.0), "o", markersize=3.5,
                markerfacecolor="white", markeredgecolor="black", markeredgewidth=0.8, linestyle="none", zorder=4,
                transform=ax.get_xaxis_transform() if log else ax.transData, label=_noise_text(level, math))
    if _drawn_as(metric) == "ntk_change":
        shrinks = nan_median(np.where(noise, 0.0, signed), axis=1) < 0
        if shrinks.any():
            ax.plot(grid.xc[shrinks], centre[shrinks], "v", markersize=4, markerfacecolor="white",
                    markeredgecolor="black", markeredgewidth=0.8, linestyle="none", zorder=4,
                    label=r"NTK shrinks ($\Theta_T < \Theta_0$)")
    if info.get("threshold") is not None:
        value = float(result.meta["thresholds"][info["threshold"]])
        absolute = _drawn_as(metric) == "ntk_change"
        _threshold_line(ax, value, _level_text(math, _description(result, metric), value, absolute) + " (threshold)")
    infinite = np.isposinf(centre)
    if infinite.any():
        ax.plot(grid.xc[infinite], np.full(infinite.sum(), 0.97), "^", color=SPECIAL_COLOURS["inf"], markersize=4,
                transform=ax.get_xaxis_transform(), linestyle="none", label=_inf_text(result, metric))
    default = f"$|{math}|$" if _drawn_as(metric) == "ntk_change" and math else _symbol(info["label"])
    ax.set_ylabel(_options(result).label(metric, default))
    found, labels = ax.get_legend_handles_labels()
    handles.update(dict(zip(labels, found)))
    why = handles.pop("_why", None)
    if why is not None:
        handles[why.get_label()] = why
    return handles, what


def _positive_range(ax: Axes) -> tuple[float, float]:
    lo, hi = ax.get_ylim()
    return max(lo, 1e-300), hi


def _line_scale(ax: Axes, info: dict, values: np.ndarray, metric: str) -> bool:
    """Log y when meta says log (or for |ntk_change|) and the positive values span a decade; True when log."""
    positive = values[np.isfinite(values) & (values > 0)]
    logged = info.get("log") or _drawn_as(metric) == "ntk_change"
    if logged and positive.size and positive.max() / positive.min() >= 10:
        ax.set_yscale("log")
        ax.set_ylim(positive.min() / 2, positive.max() * 2)
        return True
    return False


def _line_axes(result: Result, ax: Axes | None, with_strip: bool) -> tuple[Figure, Axes, Axes | None]:
    """(figure, main axes, phase-strip axes or None): a new figure unless the caller gives `ax`."""
    if ax is not None:
        return ax.figure, ax, None
    fig = _new_figure(*((6.4, 7.7) if _narrow(result) else (7.6, 5.4)))
    if not with_strip:
        return fig, fig.add_subplot(), None
    main, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [14, 1.1]})
    return fig, main, strip


@_with_options
def line_plot(result: Result, metric: str, x: str, path: str | Path | None = None, *,
              ax: Axes | None = None, fixed: Mapping[str, float] | None = None, stem: str | None = None) -> Figure:
    """`metric` along the sweep axis x (a 1-D sweep, or a slice at `fixed`/the middle of the other axes).

    Continuous metrics: the values in black (with seeds: the median, or the mean where the seeds split between
    no change and a value; the 25-75% band and every seed's value), the threshold as a dotted line, values
    below the resolution as "no change", inf values as grey triangles at the top; below (own figure only), a
    strip with the phase at every x in its phase colours. Categorical metrics: coloured bands (with seeds:
    stacked fractions of the seeds per label), GD outcomes other than converges and points not converged at T
    hatched.
    """
    _check_axes(result, x)
    info = _info(result, metric)
    held = _held(result, (x,), fixed)
    grid = _Grid.of(result, x, None)
    categorical = info["kind"] == "categorical"
    fig, main, strip = _line_axes(result, ax, with_strip=not categorical and "phase" in result.arrays)
    names = (stem or _stem(result, metric, x, None), metric)
    if categorical:
        handles = _categorical_line(main, result, metric, grid, held)
        if _seeds(result) > 1:
            noun = "with each GD outcome" if metric == "gd_outcome" else "in each phase" if metric in (
                "phase", "limit_phase") else "with each label"
            title = _title(result, f"fraction of the {_seeds(result)} seeds {noun}", names, held=held)
        else:
            title = _categorical_title(result, metric, names, held)
    else:
        handles, what = _continuous_line(main, result, metric, grid, held)
        title = _title(result, _description(result, metric), names, over=what, held=held)
    _setup_axes(main, result, grid, xlabel=strip is None)
    if strip is not None:
        if _seeds(result) > 1:
            handles["_strip"] = _note(f"strip: most frequent phase of the {_seeds(result)} seeds")
        handles.update(_bands(strip, result, grid, _plane(result, reduce_seeds(result, "phase"), x, None, held)))
        strip.set_yticks([])
        strip.set_ylabel("phase", rotation=0, ha="right", va="center")
        _setup_axes(strip, result, grid)
        main.tick_params(labelbottom=False)
    _legend(result, fig, ax, list(handles.values()), below=True)
    if title:
        main.set_title(title)
    _finish(result, fig, ax is None, [((strip or main).xaxis, x)])
    if strip is not None:
        close_up(main, strip)
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


def _phase_of(result: Result, index: tuple[int, ...]) -> str | None:
    if "phase" not in result.arrays:
        return None
    return result.meta["legends"]["phase"][int(result.arrays["phase"][index])]


def _colour_key(result: Result) -> str:
    """What colours a trajectory: its phase (one colour per phase in every figure kind; the GD outcome is
    named in the legend), else (a result without phases) its GD outcome."""
    return "phase" if "phase" in result.arrays or "gd_outcome" not in result.arrays else "gd_outcome"


def _label_of(result: Result, index: tuple[int, ...]) -> str | None:
    key = _colour_key(result)
    if key not in result.arrays:
        return None
    return result.meta["legends"][key][int(result.arrays[key][index])]


def _curve_label(result: Result, index: tuple[int, ...]) -> str:
    """'$q = 10^{-6}$, $\\rho = 0$: alignment; GD converges': the point in notation and its labels."""
    parts = [notation.value_text(a, result.coords[a][i]) for a, i in zip(result.axes, index) if a != "seed"]
    tags = []
    phase = _phase_of(result, index)
    if phase is not None:
        tags.append(pretty(phase))
    if "gd_outcome" in result.arrays:
        tags.append("GD " + pretty(result.meta["legends"]["gd_outcome"][int(result.arrays["gd_outcome"][index])]))
    return ", ".join(parts) + (f": {'; '.join(tags)}" if tags else "")


def _curve_styles(result: Result, points: list[tuple[int, ...]], n_times: int, scale: float = 1.0) -> list[dict]:
    """The style of each trajectory: the colour of its phase (base.CATEGORY_COLOURS), told apart from the
    other curves of that phase by line style (LINESTYLES, in order), and from every other curve by its marker
    (MARKERS) at spread positions (no two curves have one at the same time); each curve is drawn thinner and
    over the ones before it, so curves that coincide show both colours."""
    spare = iter(FALLBACK_COLOURS * 4)
    colour_of: dict[str | None, str] = {}
    rank: dict[str | None, int] = {}
    step = max(1, n_times // 6)
    styles = []
    for j, index in enumerate(points):
        phase = _label_of(result, index)
        if phase not in colour_of:
            colour_of[phase] = (phase_colour(_colour_key(result), phase) if phase else None) or next(spare)
        k = rank.get(phase, 0)
        rank[phase] = k + 1
        offset = int(round(step * (j + 0.5) / len(points)))
        styles.append(dict(color=colour_of[phase], linestyle=LINESTYLES[k % len(LINESTYLES)],
                           linewidth=scale * (2.4 - 0.9 * j / max(len(points) - 1, 1)),
                           marker=MARKERS[j % len(MARKERS)], markersize=5.0 * scale, markeredgecolor="white",
                           markeredgewidth=0.6 * scale, markevery=(offset, step),
                           zorder=2.0 + 0.01 * j))
    return styles


def _teacher(result: Result) -> float | None:
    """m* when it is one number (not an expression of sweep variables)."""
    try:
        return float(result.meta["config"].get("data", {}).get("teacher", 1.0))
    except (TypeError, ValueError):  # an expression of sweep variables: differs per curve
        return None


def _room(ax: Axes, inches: float = 0.55, along: str = "x") -> int:
    """How many tick labels fit along an axis of `ax` (one per `inches`; at least 3)."""
    box, (w, h) = ax.get_position(), ax.figure.get_size_inches()
    return max(3, int((box.width * w if along == "x" else box.height * h) / inches))


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
        ax.set_xlim(positive.min(), positive.max())
        log_ticks(ax.xaxis, positive.min(), positive.max(), most=_room(ax))


def _value_scale(ax: Axes, data: np.ndarray) -> None:
    """log when all finite values are positive and span a decade; symlog around 0 when signs mix over decades;
    limits around the finite values (other curves, e.g. a diverging kernel prediction, are clipped to them)."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    nonzero = np.abs(finite[finite != 0])
    if lo > 0 and hi / lo >= 10:
        ax.set_yscale("log")
        ax.set_ylim(lo / 2, hi * 2)
        log_ticks(ax.yaxis, lo / 2, hi * 2, most=_room(ax, 0.3, "y") if _small(ax) else 8)
    elif lo < 0 and nonzero.size and nonzero.max() / nonzero.min() >= 100:
        linthresh = 10.0 ** np.floor(np.log10(max(nonzero.min(), 1e-4 * nonzero.max())))
        ax.set_yscale("symlog", linthresh=linthresh, linscale=1.0)
        ax.set_ylim(lo * 2 if lo < 0 else lo, hi * 2 if hi > 0 else hi)
    else:
        pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.06
        ax.set_ylim(lo - pad, hi + pad)


def _small(ax: Axes) -> bool:
    return ax.figure.get_size_inches()[0] < 5.0


def _loss_scale(ax: Axes, data: np.ndarray) -> None:
    """Log scale down to 1e-12 of the largest initial loss (below: converged to rounding)."""
    positive = data[np.isfinite(data) & (data > 0)]
    if positive.size:
        ax.set_yscale("log")
        top = positive.max()
        start = data[:, 0][np.isfinite(data[:, 0]) & (data[:, 0] > 0)]  # (a diverging curve sets no floor)
        lo = max(positive.min() / 3, (start.max() if start.size else top) * 1e-12)
        ax.set_ylim(lo, top * 5)
        log_ticks(ax.yaxis, lo, top * 5, most=_room(ax, 0.3, "y") if _small(ax) else 6)


TRAJECTORY_PANELS = (("traj_m", "slope $m$"), ("traj_ntk", r"NTK $\Theta$"),
                     ("traj_alignment", r"alignment $\zeta = \cos(u, w)$"),
                     ("traj_loss", r"excess loss $a(m - m^*)^2/2$"))


def _kernel_curve(ax: Axes, t: np.ndarray, values: np.ndarray, style: dict) -> bool:
    """The kernel (frozen-NTK) prediction of one curve: thin, dotted, in the curve's colour, clipped where it
    leaves the axes (a triangle at the edge where it leaves), never drawn as strokes beyond."""
    lo, hi = ax.get_ylim()
    v = _finite(values)
    inside = (v >= lo) & (v <= hi)
    out = ~inside & np.isfinite(v)
    first_out = int(np.argmax(out)) if out.any() and inside.any() and np.argmax(out) > np.argmax(inside) else None
    shown = np.where(inside, v, np.nan)
    if first_out is not None:
        shown[first_out:] = np.nan
    ax.plot(t, shown, color=style["color"], linewidth=0.9, linestyle=KERNEL_STYLE, zorder=1.9, gid="kernel",
            label="_kernel")
    if first_out is not None:
        up = v[first_out] > hi
        ax.plot([t[first_out]], [0.97 if up else 0.03], "^" if up else "v", color=style["color"], markersize=4,
                markeredgecolor="black", markeredgewidth=0.5, linestyle="none", transform=ax.get_xaxis_transform(),
                gid="kernel", label="_kernel leaves")
    return first_out is not None


@_with_options
def trajectory_plot(result: Result, path: str | Path | None = None, *, stem: str | None = None) -> Figure:
    """m, NTK, alignment and excess loss against (log) time, one curve per grid point (at most
    MAX_TRAJECTORIES, an evenly spread sub-grid), coloured by its phase, curves of one phase told apart by line
    style and marker, each named in the legend with its values and labels; the kernel (frozen-NTK) prediction
    of m as a thin dotted line in the curve's colour; non-finite values (diverging GD) left out."""
    if "time" not in result.coords:
        raise ValueError("no trajectories in this result (set train.times in the config)")
    options = _options(result)
    t = np.asarray(result.coords["time"], float)
    points = _trajectory_points(result)
    fig = _new_figure(*((7.0, 9.0) if options.narrow else (10.0, 7.4)))
    axes = fig.subplots(2, 2, sharex=True)
    scale = float(min(1.0, fig.get_size_inches()[0] / 8.0) ** 0.6)  # thinner lines, smaller markers when small
    styles = _curve_styles(result, points, len(t), scale)
    handles = []
    for index, style in zip(points, styles):
        for ax, (key, _) in zip(axes.flat, TRAJECTORY_PANELS):
            (line,) = ax.plot(t, _finite(result.arrays[key][index]), label=_curve_label(result, index), **style)
        handles.append(line)
    _trajectory_axes(result, axes, points)
    left = [_kernel_curve(axes[0, 0], t, result.arrays["traj_m_lin"][index], style)
            for index, style in zip(points, styles)]
    handles.append(_line_handle_plain("kernel (frozen-NTK) prediction of $m$, in each curve's colour" +
                                      (r" ($\blacktriangle$: where it leaves the axes)" if any(left) else ""),
                                      color=KERNEL_COLOUR, linewidth=0.9, linestyle=KERNEL_STYLE))
    n = _n_points(result)
    shown = f"{len(points)} of {n} grid points" if len(points) < n else f"all {n} grid points"
    first_seed = ", first seed" if "seed" in result.axes else ""
    title = options.title_of(f"Trajectories of {shown}{first_seed}", stem or f"{result.meta['name']}__trajectories",
                             "trajectories")
    if title:
        fig.suptitle(title)
    legend(fig, handles, below=True, ncols=1 if options.narrow else 2)
    _finish(result, fig, True)
    _close_rows(axes)
    save_figure(fig, path)
    return fig


def _close_rows(axes, gap: float = 0.14) -> None:
    """Rows of panels that share x (no tick labels between them) `gap` inches apart, grown into the space
    base.fit keeps between rows for the decorations of the lowest row."""
    rows = [list(row) for row in axes]
    height = rows[0][0].figure.get_size_inches()[1]
    top, bottom = rows[0][0].get_position().y1, rows[-1][0].get_position().y0
    each = (top - bottom - (len(rows) - 1) * gap / height) / len(rows)
    for k, row in enumerate(rows):
        y1 = top - k * (each + gap / height)
        for ax in row:
            box = ax.get_position()
            ax.set_position([box.x0, y1 - each, box.width, each])


def _line_handle_plain(label: str, **style):
    from matplotlib.lines import Line2D

    return Line2D([], [], label=label, **style)


def _n_points(result: Result) -> int:
    return int(np.prod([len(result.coords[a]) for a in sweep_axes(result)]))


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, np.nan)


def _trajectory_axes(result: Result, axes, points: list[tuple[int, ...]]) -> None:
    """Scales (from the actual trajectories, not the kernel prediction), labels and the teacher line."""
    options = _options(result)
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
        ax.set_ylabel(options.label(key, ylabel))
        ax.grid(True, which="major", alpha=0.25)
        _time_scale(ax, t)
    if teacher is not None:
        axes[0, 0].axhline(teacher, color="0.3", linestyle=":", linewidth=1.0, zorder=1.5)
        axes[0, 0].annotate(f"$m^* = {notation.number_tex(teacher)}$", (0.01, teacher),
                            xycoords=("axes fraction", "data"), color="0.3", va="bottom", fontsize="small")
    for ax in axes[1]:
        ax.set_xlabel(options.label("time", "GD step $k$" if gd else "time $t$"))


# ---------------------------------------------------------------- everything a config asks for

def figure_stems(result: Result) -> list[tuple[str, Callable[[], Figure]]]:
    """(file stem, drawing function) of every figure the config asks for:
    `<name>__<metric>__<y>_vs_<x>` (2-D maps; `__by_<axes>` appended for small multiples),
    `<name>__<metric>__vs_<x>` (1-D sweeps), `<name>__trajectories` (with a time axis)."""
    plot = result.meta["config"].get("plot", {})
    axes = sweep_axes(result)
    x = plot.get("x", axes[0])
    y = plot.get("y", next((a for a in axes if a != x), None))
    stems = []
    for metric in plot.get("maps", ["phase", "ntk_change", "alignment_final", "tau"]):
        if metric not in result.arrays or metric not in result.meta["metrics"]:
            continue  # e.g. gd_outcome of a gradient-flow sweep
        kind = result.meta["metrics"][metric]["kind"]
        stem = _stem(result, metric, x, y)
        if y is None:
            stems.append((stem, partial(line_plot, result, metric, x, stem=stem)))
        elif kind == "categorical":
            stems.append((stem, partial(phase_map, result, x, y, metric=metric, stem=stem)))
        elif kind == "continuous":
            stems.append((stem, partial(metric_map, result, metric, x, y, stem=stem)))
    if "time" in result.coords:
        stem = f"{result.meta['name']}__trajectories"
        stems.append((stem, partial(trajectory_plot, result, stem=stem)))
    return stems


def render_all(result: Result, out_dir: str | Path, formats: Sequence[str] | None = None, *,
               workers: int = 1) -> list[Path]:
    """Draw every figure of `figure_stems` into `out_dir`, in `formats` (default: the config's plot.formats,
    else PNG), with the run's figure options; each file written atomically. Returns the paths written."""
    return render(figure_stems(result), out_dir, figure_formats(result.meta, formats),
                  options=FigureOptions.of(result.meta), workers=workers)
