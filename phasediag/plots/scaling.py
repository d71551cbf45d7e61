"""Figures of `mode: scaling` results: infinite-width phase diagrams over one or two scaling exponents.

Every limit exponent is a maximum/minimum of affine functions of the swept exponents (docs/theory.md section 7), so each
region boundary is a polyline: it is drawn as the zero contour of the exponent field (straight segments
between grid points, exact on each affine piece), not as pixel edges. Named parametrizations that lie in
the drawn plane are marked: the config's exponents are affine in the sweep variables, so the point is found
by solving that affine map (least squares, accepted only when it is exact).

One visual language with the other figure kinds: the phases in their fixed colours (base.CATEGORY_COLOURS),
every boundary black with a white halo (it contrasts with every phase colour), health flags hatched where
they are set (the exponent decided beyond the flags' tolerance), the exponent maps of one run on one
symmetric colour range with 0 as a tick and their zero contour drawn. A sweep of one variable draws line
plots (exponent against the variable) over a strip of the limit phase.
"""

from __future__ import annotations

import math
import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from phasediag.plots import notation
from phasediag.plots.base import (CATEGORY_COLOURS, FALLBACK_COLOURS, LINESTYLES, FigureOptions, close_up, colorbar,
                                  current_options, figure_formats, finish, legend, new_figure, phase_colour, pretty,
                                  render, save_figure, swatch)
from phasediag.results.store import Result

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

PHASE_COLOURS = CATEGORY_COLOURS["limit_phase"]
TOL = 1e-9  # core.limit_phase / limit_health decide a sign beyond this tolerance
#: flag -> (hatch, exponent field, sign of the field where the flag is set, legend text)
HEALTH_STYLE = {
    "unstable": ("//", "ntk_final_exp", 1, r"unstable ($\Theta_\infty$ grows)"),
    "frozen": ("\\\\", "ntk_final_exp", -1, r"frozen ($\Theta_\infty$ vanishes)"),
    "divergent_output": ("..", "m0_exp", 1, r"divergent output ($m_0$ grows)"),
}
#: the zero line of each health exponent: its line style (the phase boundary is solid) and legend text
HEALTH_LINES = {"ntk_final_exp": ((0, (5, 2)), r"$\Theta_\infty \propto d^{\,0}$"),
                "m0_exp": ((0, (1, 1.5)), r"$m_0 \propto d^{\,0}$")}
HATCH_COLOUR = "#1a1a1a"
HATCH_WIDTH = 0.6
BOUNDARY_WIDTH = 1.8
INPUTS = ("output_scale_exp", "init_var_u_exp", "init_var_w_exp", "lr_u_exp", "lr_w_exp")
#: named parametrizations as they are written in papers
POINT_NAMES = {"ntk": "NTK", "mean_field": "mean field", "mup": r"$\mu$P", "standard": "SP",
               "standard_stable": r"SP, $\eta \propto 1/d$", "lazy": "lazy"}


# ---------------------------------------------------------------- data


def _plane(result: Result, name: str, x: str, y: str) -> np.ndarray:
    """The (y, x) plane of a metric (other sweep axes at their middle value)."""
    values = result.arrays[name]
    index = tuple(slice(None) if a in (x, y) else len(result.coords[a]) // 2 for a in result.axes)
    kept = [a for a in result.axes if a in (x, y)]
    return np.transpose(values[index], [kept.index(y), kept.index(x)])


def _line(result: Result, name: str, x: str) -> np.ndarray:
    """A metric along the sweep axis `x` (other sweep axes at their middle value)."""
    values = result.arrays[name]
    return values[tuple(slice(None) if a == x else len(result.coords[a]) // 2 for a in result.axes)]


def _held(result: Result, used: Sequence[str]) -> list[str]:
    """'$e = 0$' for every other sweep axis (held at its middle value)."""
    return [notation.value_text(a, float(result.coords[a][len(result.coords[a]) // 2]))
            for a in result.axes if a not in used]


def named_points(result: Result, x: str, y: str) -> dict[str, tuple[float, float]]:
    """Where each named parametrization sits in the (x, y) plane, if it lies on it."""
    from phasediag.core import PARAMETRIZATIONS

    X, Y = np.meshgrid(result.coords[x], result.coords[y])
    design = np.column_stack([X.ravel(), Y.ravel(), np.ones(X.size)])
    maps, exact = [], True
    for name in INPUTS:
        target = _plane(result, name, x, y).ravel()
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        exact &= bool(np.max(np.abs(design @ coef - target)) < 1e-9)
        maps.append(coef)
    if not exact:
        return {}  # nonlinear exponent expressions: no exact location to mark
    A = np.array([c[:2] for c in maps])
    b = np.array([c[2] for c in maps])
    span = [(v.min(), v.max()) for v in (result.coords[x], result.coords[y])]
    found = {}
    for name, p in PARAMETRIZATIONS.items():
        target = np.array([float(e) for e in p.exponents]) - b
        sol, *_ = np.linalg.lstsq(A, target, rcond=None)
        inside = all(lo - 1e-9 <= v <= hi + 1e-9 for v, (lo, hi) in zip(sol, span))
        if np.max(np.abs(A @ sol - target)) < 1e-9 and inside:
            found[name] = (float(sol[0]), float(sol[1]))
    return found


def _exponent_maps(result: Result) -> list[str]:
    """The exponent metrics (continuous) among the config's plot.maps that the result holds."""
    plot = result.meta["config"].get("plot") or {}
    return [m for m in plot.get("maps", []) if m in result.arrays
            and result.meta["metrics"].get(m, {}).get("kind") == "continuous"]


def shared_bound(result: Result, *extra: str) -> float:
    """One symmetric colour (and y) range for every exponent map of a run: the largest |exponent| over the
    config's exponent maps (and `extra`) in the drawn slices, rounded up to a multiple of 0.5 (at least 0.5)."""
    plot = result.meta["config"].get("plot") or {}
    x, y = plot.get("x", result.axes[0]), plot.get("y")
    names = list(dict.fromkeys([*_exponent_maps(result), *(m for m in extra if m in result.arrays)]))
    largest = 0.0
    for name in names:
        values = _plane(result, name, x, y) if y is not None else _line(result, name, x)
        finite = values[np.isfinite(values)]
        largest = max(largest, float(np.max(np.abs(finite), initial=0.0)))
    return max(0.5, math.ceil(largest / 0.5 - 1e-9) * 0.5)


def _tick_step(bound: float) -> float:
    return 0.5 if bound <= 1.5 else 1.0 if bound <= 4 else 2.0 if bound <= 8 else 5.0


def _zero_levels(values: np.ndarray) -> list[float]:
    """[0.0] where a signed exponent field has a zero to draw (it changes sign, or it is 0 on part of the plane
    and not elsewhere), else []: contour :func:`zero_field` of it at that level."""
    finite = values[np.isfinite(values)]
    neg, pos = bool(np.any(finite < -TOL)), bool(np.any(finite > TOL))
    zero = bool(np.any(np.abs(finite) <= TOL))
    return [0.0] if (neg and pos) or (zero and (neg or pos)) else []


def zero_field(values: np.ndarray) -> np.ndarray:
    """`values` (ny, nx) with its zero plateau replaced so that the 0 contour is its exact edge.

    Exponents are piecewise affine, so a field that is 0 on a region is max(0, g) or min(0, g) there, g affine:
    its plain contour at 0 (or just off it) follows the grid points of the plateau in a zigzag. Each plateau
    point next to the nonzero side gets g's value extrapolated linearly from its two nearest nonzero points in
    a row or column (the mean over the directions that have them), so the contour crosses at g = 0 exactly;
    points deeper in the plateau get the sign opposite to the nonzero side (when that side has one sign)."""
    f = np.array(values, dtype=float)
    plateau = np.abs(f) <= TOL
    nonzero = np.isfinite(f) & ~plateau
    if not plateau.any() or not nonzero.any():
        return f
    ny, nx = f.shape
    padded = np.pad(f, 2, constant_values=np.nan)
    known = np.pad(nonzero, 2, constant_values=False)
    total, count = np.zeros_like(f), np.zeros_like(f)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        q = padded[2 + dy:2 + dy + ny, 2 + dx:2 + dx + nx]
        r = padded[2 + 2 * dy:2 + 2 * dy + ny, 2 + 2 * dx:2 + 2 * dx + nx]
        ok = plateau & known[2 + dy:2 + dy + ny, 2 + dx:2 + dx + nx] & \
            known[2 + 2 * dy:2 + 2 * dy + ny, 2 + 2 * dx:2 + 2 * dx + nx] & (np.sign(q) == np.sign(r))
        guess = np.where(np.sign(2 * q - r) == np.sign(q), 0.0, 2 * q - r)  # never on the neighbour's side
        total[ok] += guess[ok]
        count[ok] += 1
    out = f.copy()
    edge = count > 0
    out[edge] = total[edge] / count[edge]
    signs = np.unique(np.sign(f[nonzero]))
    if signs.size == 1:
        out[plateau & ~edge] = -signs[0] * float(np.max(np.abs(f[nonzero])))
    return out


# ---------------------------------------------------------------- text


def _metric_label(result: Result, metric: str) -> str:
    return notation.metric_label(result.meta, metric, current_options(result.meta).labels)


def _short(label: str) -> str:
    """A metric label without the definition inside its math: 'exponent of $\\rho = 2c|m^*|/\\Theta_0$' ->
    'exponent of $\\rho$'."""
    return re.sub(r"\$([^$=]+?)\s*=[^$]*\$", r"$\1$", label)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] if text[:1].isalpha() else text


def _axis_label(result: Result, var: str) -> str:
    options = current_options(result.meta)
    return options.label(var, notation.axis_label(result.meta["config"], var, options.labels))


def _title(result: Result, default: str, stem: str, *names: str, held: Sequence[str] = ()) -> str | None:
    text = default + (f" ({', '.join(held)})" if held else "")
    return current_options(result.meta).title_of(text, stem, *names)


def _stem(result: Result, metric: str, x: str, y: str | None) -> str:
    return f"{result.meta['name']}__{metric}__{y}_vs_{x}" if y is not None else f"{result.meta['name']}__{metric}__vs_{x}"


# ---------------------------------------------------------------- drawing helpers


def _halo(width: float):
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=width + 2.2, foreground="white")]


def _boundary(ax, X, Y, values, levels, *, linestyle="solid", width=BOUNDARY_WIDTH):
    """Black contour line(s) with a white halo at `levels` (a ContourSet), or None."""
    if not levels or min(values.shape) < 2:
        return None
    lines = ax.contour(X, Y, values, levels=levels, colors="black", linewidths=width, linestyles=[linestyle],
                       zorder=4)
    lines.set_path_effects(_halo(width))
    return lines


def _line_handle(label: str, linestyle="solid", width=BOUNDARY_WIDTH, colour="black", **kw):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, lw=width, ls=linestyle, label=label, path_effects=_halo(width), **kw)


def _hatch_handle(hatch: str, label: str):
    from matplotlib.patches import Patch

    patch = Patch(facecolor="white", edgecolor=HATCH_COLOUR, hatch=hatch, linewidth=0.4, label=label)
    patch.set_hatch_linewidth(HATCH_WIDTH)
    return patch


def _phase_colours(result: Result) -> list[str]:
    spare = iter(FALLBACK_COLOURS * 4)
    return [phase_colour("limit_phase", n) or next(spare) for n in result.meta["legends"]["limit_phase"]]


def _phase_handles(result: Result, codes: np.ndarray) -> list:
    names, colours = result.meta["legends"]["limit_phase"], _phase_colours(result)
    return [swatch(colours[c], pretty(names[c])) for c in sorted(set(np.unique(codes).tolist()))]


def _phase_norm(result: Result):
    from matplotlib.colors import BoundaryNorm, ListedColormap

    n = len(result.meta["legends"]["limit_phase"])
    return ListedColormap(_phase_colours(result)), BoundaryNorm(np.arange(n + 1) - 0.5, n)


_NAME_OFFSETS = ((5, 5, "left", "bottom"), (-5, 5, "right", "bottom"), (0, 7, "center", "bottom"),
                 (5, -5, "left", "top"), (-5, -5, "right", "top"), (0, -7, "center", "top"))


def _mark_points(ax, points: dict[str, tuple[float, float]]) -> list:
    """The named parametrizations: white dots with their names (placed by :func:`_place_names`)."""
    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    notes = []
    for name, (px, py) in points.items():
        ax.plot(px, py, "o", color="black", markersize=6, markerfacecolor="white", markeredgewidth=1.2, zorder=6,
                clip_on=False)
        notes.append(ax.annotate(POINT_NAMES.get(name, pretty(name)), (px, py), xytext=(5, 5),
                                 textcoords="offset points", ha="left", va="bottom", zorder=6, path_effects=halo))
    return notes


def _place_names(ax, notes: list) -> None:
    """Each name on the first side of its dot (upper right, upper left, above, lower right, ...) where it stays
    inside the axes and clear of the names and dots placed before; else upper right. Measured after fit()."""
    if not notes:
        return
    renderer = ax.figure._get_renderer()
    frame = ax.get_window_extent(renderer)
    dots = [ax.transData.transform(n.xy) for n in notes]
    taken, gap = [], 6 * ax.figure.dpi / 72  # 6 pt clear around each name
    for k, note in enumerate(notes):
        for dx, dy, ha, va in (*_NAME_OFFSETS, _NAME_OFFSETS[0]):
            note.xyann = (dx, dy)
            note.set_horizontalalignment(ha)
            note.set_verticalalignment(va)
            box = note.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            clear = not any(box.padded(gap).overlaps(t) for t in taken) and not any(
                box.x0 - gap <= px <= box.x1 + gap and box.y0 - gap <= py <= box.y1 + gap
                for j, (px, py) in enumerate(dots) if j != k)
            if inside and clear:
                break
        taken.append(box)


def _place_legend(fig, handles, options) -> None:
    dedup = {h.get_label(): h for h in handles}
    legend(fig, list(dedup.values()), below=options.narrow, ncols=2 if options.narrow else 1)


# ---------------------------------------------------------------- layout checks after base.fit


def _relabel(result: Result, var: str) -> Callable[[int], str]:
    options = current_options(result.meta)
    return lambda chars: options.label(var, notation.axis_label(result.meta["config"], var, options.labels,
                                                                max_chars=chars))


# ---------------------------------------------------------------- two sweep variables


def limit_phase_diagram(result: Result, x: str, y: str, path=None):
    """Kernel / feature-learning regions as d -> infinity, health regions hatched, the exact boundary lines
    (black with a white halo: the phase boundary solid, the health boundaries dashed and dotted), and the
    named parametrizations marked."""
    options = current_options(result.meta)
    fig = new_figure(7.2, 7.0 if options.narrow else 5.0, layout=None)  # narrow: the legend goes below
    ax = fig.add_subplot()
    xs, ys = result.coords[x], result.coords[y]
    X, Y = np.meshgrid(xs, ys)
    codes = _plane(result, "limit_phase", x, y)
    cmap, norm = _phase_norm(result)
    ax.pcolormesh(xs, ys, codes, cmap=cmap, norm=norm, shading="nearest", rasterized=True)
    handles = _phase_handles(result, codes)
    if "rho_exp" in result.arrays:
        rho = _plane(result, "rho_exp", x, y)
        if _boundary(ax, X, Y, rho, [0.0] if rho.min() < 0 < rho.max() or np.any(rho == 0) else []) is not None:
            handles.append(_line_handle(r"phase boundary: $\rho \propto d^{\,0}$"))
    for flag, (hatch, field, sign, text) in HEALTH_STYLE.items():
        if flag not in result.arrays or not np.any(_plane(result, flag, x, y)) or field not in result.arrays:
            continue
        values = sign * zero_field(_plane(result, field, x, y))
        if min(values.shape) >= 2:
            top = max(float(np.nanmax(values)), TOL) * 2 + 1
            regions = ax.contourf(X, Y, values, levels=[0.0, top], colors="none", hatches=[hatch], zorder=2)
            regions.set_edgecolor(HATCH_COLOUR)
            regions.set_linewidth(0.0)
            regions.set_hatch_linewidth(HATCH_WIDTH)
        handles.append(_hatch_handle(hatch, text))
    for field, (style, text) in HEALTH_LINES.items():
        if field not in result.arrays:
            continue
        values = _plane(result, field, x, y)
        if values.min() < -TOL and values.max() > TOL:  # a boundary between two health regions
            _boundary(ax, X, Y, values, [0.0], linestyle=style, width=1.4)
            handles.append(_line_handle(text, linestyle=style, width=1.4))
    ax.set_xlim(xs.min(), xs.max()) if xs.size > 1 else None
    ax.set_ylim(ys.min(), ys.max()) if ys.size > 1 else None
    notes = _mark_points(ax, named_points(result, x, y))
    ax.set_xlabel(_axis_label(result, x))
    ax.set_ylabel(_axis_label(result, y))
    title = _title(result, r"Phase as $d \to \infty$", _stem(result, "limit_phase", x, y), "limit_phase",
                   held=_held(result, (x, y)))
    if title:
        ax.set_title(title)
    _place_legend(fig, handles, options)
    finish(fig, [(ax.xaxis, _relabel(result, x)), (ax.yaxis, _relabel(result, y))])
    _place_names(ax, notes)
    save_figure(fig, path)
    return fig


def exponent_map(result: Result, metric: str, x: str, y: str, path=None, *, bound: float | None = None):
    """A limit exponent over the plane: diverging colours centred at 0 on the run's shared range (`bound`,
    default :func:`shared_bound`), 0 a colour-bar tick, and the zero contour (black, white halo) labelled."""
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MultipleLocator

    options = current_options(result.meta)
    fig = new_figure(6.4, 5.6 if options.narrow else 4.8, layout=None)
    ax = fig.add_subplot()
    xs, ys = result.coords[x], result.coords[y]
    values = _plane(result, metric, x, y)
    bound = bound if bound is not None else shared_bound(result, metric)
    mesh = ax.pcolormesh(xs, ys, values, cmap="RdBu_r", norm=Normalize(-bound, bound), shading="nearest",
                         rasterized=True)
    label = _metric_label(result, metric)
    bar = colorbar(ax, mesh, options.label(metric, label))
    bar.set_ticks(MultipleLocator(_tick_step(bound)))
    handles = []
    zero = _boundary(ax, *np.meshgrid(xs, ys), zero_field(values), _zero_levels(values), width=1.4)
    if zero is not None:
        bar.ax.axhline(0.0, color="black", lw=1.4)
        handles.append(_line_handle("exponent $= 0$", width=1.4))
    ax.set_xlabel(_axis_label(result, x))
    ax.set_ylabel(_axis_label(result, y))
    title = _title(result, _capital(_short(label)), _stem(result, metric, x, y), metric, held=_held(result, (x, y)))
    if title:
        ax.set_title(title)
    legend(fig, handles, below=True)
    finish(fig, [(ax.xaxis, _relabel(result, x)), (ax.yaxis, _relabel(result, y))])
    save_figure(fig, path)
    return fig


# ---------------------------------------------------------------- one sweep variable


def _strip(ax, result: Result, x: str) -> list:
    """The limit phase along x as a one-row strip under the line plot; legend handles of the phases."""
    xs = np.asarray(result.coords[x], dtype=float)
    codes = _line(result, "limit_phase", x)[None, :]
    cmap, norm = _phase_norm(result)
    mids = (xs[1:] + xs[:-1]) / 2 if xs.size > 1 else np.array([])
    half = (xs[-1] - xs[0]) / (2 * (xs.size - 1)) if xs.size > 1 else 0.5
    edges = np.concatenate([[xs[0] - half], mids, [xs[-1] + half]])
    ax.pcolormesh(edges, [-0.5, 0.5], codes, cmap=cmap, norm=norm, shading="flat", rasterized=True)
    ax.set_yticks([])
    ax.set_ylim(-0.5, 0.5)
    ax.set_ylabel("phase", rotation=0, ha="right", va="center")
    return _phase_handles(result, codes)


def _line_figure(result: Result, x: str, curves: Sequence[tuple[str, str]], stem: str, default_title: str,
                 names: Sequence[str], path):
    """Exponent curves [(metric, legend text)] against x (black, told apart by line style) on the run's shared
    range, 0 marked, the limit phase as a strip below; one legend outside."""
    from matplotlib.ticker import MultipleLocator

    options = current_options(result.meta)
    fig = new_figure(6.4, 5.0, layout=None)
    if "limit_phase" in result.arrays:
        main, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [14, 1.2]})
    else:  # (a run that stored only other metrics: no strip)
        main = strip = fig.add_subplot()
    xs = result.coords[x]
    bound = shared_bound(result, *(m for m, _ in curves))
    handles = []
    for k, (metric, text) in enumerate(curves):
        (line,) = main.plot(xs, _line(result, metric, x), color="black", lw=1.6, ls=LINESTYLES[k % len(LINESTYLES)],
                            label=text, zorder=3)
        handles.append(line)
    main.axhline(0.0, color="0.55", lw=0.8, zorder=1)
    main.set_ylim(-1.04 * bound, 1.04 * bound)
    main.yaxis.set_major_locator(MultipleLocator(_tick_step(bound)))
    main.set_xlim(xs.min(), xs.max()) if xs.size > 1 else None
    main.grid(True, color="0.9", lw=0.6, zorder=0)
    main.set_ylabel(options.label(curves[0][0], curves[0][1]) if len(curves) == 1 else "exponent")
    if strip is not main:
        main.tick_params(labelbottom=False)
        handles += _strip(strip, result, x)
    strip.set_xlabel(_axis_label(result, x))
    title = _title(result, default_title, stem, *names, held=_held(result, (x,)))
    if title:
        main.set_title(title)
    shown = handles if len(curves) > 1 else handles[1:]  # one curve: its y label names it
    legend(fig, shown, below=True, ncols=2 if len(shown) > 3 else max(len(shown), 1))
    finish(fig, [(strip.xaxis, _relabel(result, x))])
    if strip is not main:
        close_up(main, strip)
    save_figure(fig, path)
    return fig


def limit_phase_line(result: Result, x: str, path=None):
    """One sweep variable: the exponent that decides the phase (rho) and the health exponents (Theta_inf, m0)
    against it, the limit phase as a strip below."""
    curves = [(m, text) for m, text in (
        ("rho_exp", r"exponent of $\rho$ (kernel below 0)"),
        ("ntk_final_exp", r"exponent of $\Theta_\infty$ (unstable above 0, frozen below)"),
        ("m0_exp", r"exponent of $m_0$ (divergent output above 0)")) if m in result.arrays]
    return _line_figure(result, x, curves, _stem(result, "limit_phase", x, None), r"Phase as $d \to \infty$",
                        ("limit_phase",), path)


def exponent_line(result: Result, metric: str, x: str, path=None):
    """One sweep variable: a limit exponent against it on the run's shared range, the limit phase below."""
    label = _metric_label(result, metric)
    return _line_figure(result, x, [(metric, label)], _stem(result, metric, x, None), _capital(_short(label)),
                        (metric,), path)


# ---------------------------------------------------------------- the figures of a run


def figure_stems(result: Result) -> list[tuple[str, Callable[[], Figure]]]:
    """(file stem, drawing function) of the config's maps: limit_phase as the phase diagram, other entries as
    exponent maps, `<name>__<metric>__<y>_vs_<x>`; with one sweep variable (no plot.y) line plots over the
    phase strip, `<name>__<metric>__vs_<x>`."""
    plot = result.meta["config"]["plot"]
    x, y = plot["x"], plot.get("y")
    stems = []
    for metric in plot["maps"]:
        if metric != "limit_phase" and metric not in result.arrays:
            continue
        if y is None:
            draw = partial(limit_phase_line, result, x) if metric == "limit_phase" else \
                partial(exponent_line, result, metric, x)
        else:
            draw = partial(limit_phase_diagram, result, x, y) if metric == "limit_phase" else \
                partial(exponent_map, result, metric, x, y)
        stems.append((_stem(result, metric, x, y), draw))
    return stems


def render_all(result: Result, out_dir, formats: Sequence[str] | None = None) -> list[Path]:
    """Draw every figure of `figure_stems` into `out_dir` (default formats: the config's plot.formats)."""
    return render(figure_stems(result), out_dir, figure_formats(result.meta, formats),
                  options=FigureOptions.of(result.meta))
