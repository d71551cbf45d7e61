"""Figures of `mode: scaling` results: infinite-width phase diagrams over two scaling exponents.

Every limit exponent is a maximum/minimum of affine functions of the swept exponents (docs/theory.md section 7), so each
region boundary is a polyline: it is drawn as the zero contour of the exponent field (straight segments
between grid points, exact on each affine piece), not as pixel edges. Named parametrizations that lie in
the drawn plane are marked: the config's exponents are affine in the sweep variables, so the point is found
by solving that affine map (least squares, accepted only when it is exact).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from phasediag.plots.base import CATEGORY_COLOURS, figure_formats, new_figure, render, save_figure
from phasediag.results.store import Result

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

PHASE_COLOURS = CATEGORY_COLOURS["limit_phase"]
HEALTH_STYLE = {  # flag -> (hatch, boundary exponent field, line colour)
    "unstable": ("///", "ntk_final_exp", "#D55E00"),
    "frozen": ("\\\\\\", "ntk_final_exp", "#0072B2"),
    "divergent_output": ("...", "m0_exp", "#CC79A7"),
}
INPUTS = ("output_scale_exp", "init_var_u_exp", "init_var_w_exp", "lr_u_exp", "lr_w_exp")


def _plane(result: Result, name: str, x: str, y: str) -> np.ndarray:
    """The (y, x) plane of a metric (other sweep axes at their middle value)."""
    values = result.arrays[name]
    index = tuple(slice(None) if a in (x, y) else len(result.coords[a]) // 2 for a in result.axes)
    kept = [a for a in result.axes if a in (x, y)]
    return np.transpose(values[index], [kept.index(y), kept.index(x)])


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


def _label(result: Result, var: str) -> str:
    """The variable and the hyperparameters whose exponents use it: 'k  (output_scale ~ d^(k))'."""
    import re

    model = result.meta["config"].get("model", {})
    users = [f"{key} ~ d^({spec['exp']})" for key, spec in model.items()
             if re.search(rf"\b{re.escape(var)}\b", str(spec.get("exp", "")))]
    per_line = ";\n".join(users)  # one hyperparameter per line, so the label fits beside the axis
    return f"{var}  ({per_line})" if users else var


def limit_phase_diagram(result: Result, x: str, y: str, path=None):
    """Kernel / feature-learning regions as d -> infinity, health regions hatched, exact boundary lines, and
    the named parametrizations marked."""
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = new_figure(7.6, 5.4)
    ax = fig.add_subplot()
    xs, ys = result.coords[x], result.coords[y]
    X, Y = np.meshgrid(xs, ys)
    legend = result.meta["legends"]["limit_phase"]
    codes = _plane(result, "limit_phase", x, y)
    ax.pcolormesh(xs, ys, codes, cmap=ListedColormap([PHASE_COLOURS[n] for n in legend]), vmin=-0.5,
                  vmax=len(legend) - 0.5, shading="nearest", rasterized=True)
    handles = [Patch(color=PHASE_COLOURS[legend[c]], label=legend[c].replace("_", " "))
               for c in sorted(set(np.unique(codes).tolist()))]
    rho = _plane(result, "rho_exp", x, y)
    if rho.min() < 0 < rho.max() or np.any(rho == 0):
        ax.contour(X, Y, rho, levels=[0], colors="black", linewidths=1.6)
        handles.append(Line2D([], [], color="black", lw=1.6, label=r"exp($\rho$) = 0: phase boundary"))
    for flag, (hatch, field, colour) in HEALTH_STYLE.items():
        mask = _plane(result, flag, x, y)
        if np.any(mask):
            ax.contourf(X, Y, mask.astype(float), levels=[0.5, 1.5], colors="none", hatches=[hatch])
            handles.append(Patch(facecolor="none", edgecolor="black", hatch=hatch, label=flag.replace("_", " ")))
        values = _plane(result, field, x, y)
        if values.min() < 0 < values.max():
            ax.contour(X, Y, values, levels=[0], colors=colour, linewidths=1.1, linestyles="dashed")
            handles.append(Line2D([], [], color=colour, lw=1.1, ls="--",
                                  label=f"exp({field.removesuffix('_exp')}) = 0"))
    for name, (px, py) in named_points(result, x, y).items():
        ax.plot(px, py, "o", color="black", markersize=6, markerfacecolor="white", zorder=5)
        ax.annotate(name.replace("_", " "), (px, py), xytext=(5, 5), textcoords="offset points", fontsize=8,
                    zorder=5, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    ax.set_xlabel(_label(result, x))
    ax.set_ylabel(_label(result, y))
    ax.set_title(f"{result.meta['name']}: phase as width d -> infinity", fontsize=10)
    dedup = {h.get_label(): h for h in handles}
    fig.legend(handles=list(dedup.values()), loc="outside right upper", fontsize=8, frameon=False)
    save_figure(fig, path)
    return fig


def exponent_map(result: Result, metric: str, x: str, y: str, path=None):
    """A limit exponent over the plane, diverging colours centred at 0, its zero level as a line."""
    from matplotlib.colors import TwoSlopeNorm

    fig = new_figure(6.8, 5.0)
    ax = fig.add_subplot()
    xs, ys = result.coords[x], result.coords[y]
    values = _plane(result, metric, x, y)
    lo, hi = float(values.min()), float(values.max())
    bound = max(abs(lo), abs(hi), 1e-12)
    mesh = ax.pcolormesh(xs, ys, values, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), shading="nearest",
                         rasterized=True)
    if lo < 0 < hi:
        ax.contour(*np.meshgrid(xs, ys), values, levels=[0], colors="black", linewidths=1.2)
    fig.colorbar(mesh, ax=ax, label=result.meta["metrics"][metric]["label"])
    ax.set_xlabel(_label(result, x))
    ax.set_ylabel(_label(result, y))
    ax.set_title(f"{result.meta['name']}: {metric.replace('_', ' ')}", fontsize=10)
    save_figure(fig, path)
    return fig


def figure_stems(result: Result) -> list[tuple[str, Callable[[], Figure]]]:
    """(file stem, drawing function) of the config's maps: limit_phase as the phase diagram, other entries as
    exponent maps, `<name>__<metric>__<y>_vs_<x>`. Needs two sweep variables (plot.x, plot.y): a 1-D exponent
    sweep has no plane to draw."""
    plot = result.meta["config"]["plot"]
    x, y = plot["x"], plot.get("y")
    if y is None:
        return []
    return [(f"{result.meta['name']}__{metric}__{y}_vs_{x}",
             partial(limit_phase_diagram, result, x, y) if metric == "limit_phase"
             else partial(exponent_map, result, metric, x, y))
            for metric in plot["maps"]]


def render_all(result: Result, out_dir, formats: Sequence[str] | None = None) -> list[Path]:
    """Draw every figure of `figure_stems` into `out_dir` (default formats: the config's plot.formats)."""
    return render(figure_stems(result), out_dir, figure_formats(result.meta, formats))
