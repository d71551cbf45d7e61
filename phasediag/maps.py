"""Figures of a sweep result: phase maps, continuous metric maps, line plots, small multiples, trajectories.

Every function returns the matplotlib Figure and writes a file only when given a path (atomically).
matplotlib is imported inside the functions with the Agg backend, so importing this module is cheap and no
display is needed. With a seed axis, categorical maps show the most frequent label over seeds and
continuous maps the median (the titles say so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from phasediag.io import atomic_path
from phasediag.results import SweepResult

# Okabe-Ito (colour-blind safe): kernel family in blues/green, feature learning in warm colours
CATEGORY_COLOURS = {
    "phase": {
        "kernel": "#56B4E9", "kernel_aligning": "#0072B2", "kernel_disaligning": "#009E73",
        "alignment": "#E69F00", "disalignment": "#CC79A7", "rescaling": "#D55E00", "saddle": "#000000",
    },
    "gd_outcome": {
        "converges": "#56B4E9", "catapult": "#E69F00", "diverges": "#D55E00", "oscillates": "#CC79A7",
        "stalls": "#000000",
    },
}
GD_HATCHES = {"catapult": "///", "diverges": "xxx", "oscillates": "...", "stalls": "\\\\\\"}
NOT_CONVERGED_HATCH = "ooo"
MAX_TRAJECTORIES = 12
MAX_FACETS = 4


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    if path is None:
        return
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")


# ---------- data selection ----------

def sweep_axes(result: SweepResult) -> list[str]:
    return [a for a in result.axes if a != "seed"]


def _reduced(result: SweepResult, name: str) -> np.ndarray:
    """The metric over the sweep axes only: mode over seeds (categorical) or median (continuous)."""
    values = result.arrays[name]
    if "seed" not in result.axes:
        return values
    axis = result.axes.index("seed")
    if result.meta["metrics"][name]["kind"] == "categorical":
        counts = np.stack([(values == code).sum(axis=axis) for code in range(int(values.max()) + 1)])
        return counts.argmax(axis=0).astype(values.dtype)  # ties -> the smaller code
    if values.dtype == bool:
        return np.mean(values, axis=axis) >= 0.5
    finite = np.where(np.isfinite(values), values, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-inf columns: median of empty
            med = np.nanmedian(finite, axis=axis)
    return np.where(np.isnan(med), np.inf, med)


def _plane(result: SweepResult, values: np.ndarray, x: str, y: str | None, fixed: dict[str, int]) -> np.ndarray:
    """Slice `values` (over the sweep axes) to the (y, x) plane (or the x line) at the fixed indices."""
    axes = sweep_axes(result)
    index = tuple(fixed.get(a, slice(None)) for a in axes)
    kept = [a for a in axes if a not in fixed]
    plane = values[index]
    order = [kept.index(y), kept.index(x)] if y is not None else [kept.index(x)]
    return np.transpose(plane, order)


def _facets(result: SweepResult, used: Sequence[str]) -> list[dict[str, int]]:
    """Index combinations of the sweep axes not drawn (small multiples), at most MAX_FACETS per axis."""
    others = [a for a in sweep_axes(result) if a not in used]
    picks = []
    for a in others:
        n = len(result.coords[a])
        picks.append((a, sorted(set(np.linspace(0, n - 1, min(n, MAX_FACETS)).round().astype(int)))))
    combos: list[dict[str, int]] = [{}]
    for a, idx in picks:
        combos = [{**c, a: i} for c in combos for i in idx]
    return combos


# ---------- labels ----------

def axis_label(result: SweepResult, var: str) -> str:
    """'d (width)' when the variable is a model key's whole value, else the keys whose expressions use it."""
    cfg = result.meta["config"]
    entries = {**cfg.get("model", {}), **cfg.get("data", {})}
    direct = [k for k, v in entries.items() if str(v).strip() == var]
    if direct:
        return f"{var} ({', '.join(direct)})"
    import re

    users = [f"{k} = {v}" for k, v in entries.items() if re.search(rf"\b{re.escape(var)}\b", str(v))]
    return f"{var}  ({'; '.join(users)})" if users else var


def _is_log(result: SweepResult, var: str) -> bool:
    spec = result.meta["config"]["sweep"].get(var, {})
    values = result.coords[var]
    return "log" in spec or ("values" in spec and np.all(values > 0) and values.max() / values.min() > 100)


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted centres (geometric midpoints on log axes)."""
    v = np.log10(values) if log else np.asarray(values, float)
    if v.size == 1:
        e = np.array([v[0] - 0.5, v[0] + 0.5])
    else:
        mid = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return 10**e if log else e


def _title(result: SweepResult, what: str, fixed: dict[str, int] | None = None) -> str:
    n = len(result.coords["seed"]) if "seed" in result.axes else 0
    seeds = (f", {'mode' if what in ('phase', 'gd outcome') else 'median'} over {n} seeds" if n > 1
             else ", one sampled initialization" if n == 1 else "")
    at = ", ".join(f"{a} = {result.coords[a][i]:.3g}" for a, i in (fixed or {}).items())
    return f"{result.meta['name']}: {what}{seeds}" + (f"\n({at})" if at else "")


def _setup_axes(ax, result, x, y) -> None:
    if _is_log(result, x):
        ax.set_xscale("log")
    ax.set_xlabel(axis_label(result, x))
    if y is not None:
        if _is_log(result, y):
            ax.set_yscale("log")
        ax.set_ylabel(axis_label(result, y))


# ---------- 2-D maps ----------

def _category_names(result: SweepResult, name: str) -> list[str]:
    return list(result.meta["legends"][name])


def _draw_categories(ax, result, name, x, y, fixed) -> list:
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    names = _category_names(result, name)
    colours = [CATEGORY_COLOURS[name][n] for n in names]
    codes = _plane(result, _reduced(result, name), x, y, fixed)
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names))
    ax.pcolormesh(_edges(result.coords[x], _is_log(result, x)), _edges(result.coords[y], _is_log(result, y)),
                  codes, cmap=cmap, norm=norm, shading="flat", rasterized=True)
    present = sorted(set(np.unique(codes).tolist()))
    return [Patch(facecolor=colours[c], label=names[c].replace("_", " ")) for c in present]


def _draw_hatches(ax, result, x, y, fixed) -> list:
    """Hatch GD outcomes other than 'converges' and points not converged at the horizon."""
    from matplotlib.patches import Patch

    masks = []
    if "gd_outcome" in result.arrays:
        outcome = _plane(result, _reduced(result, "gd_outcome"), x, y, fixed)
        for code, label in enumerate(result.meta["legends"]["gd_outcome"]):
            if label in GD_HATCHES and np.any(outcome == code):
                masks.append((outcome == code, GD_HATCHES[label], f"GD: {label}"))
    if "not_converged" in result.arrays:
        nc = _plane(result, _reduced(result, "not_converged"), x, y, fixed)
        if np.any(nc):
            masks.append((nc, NOT_CONVERGED_HATCH, "not converged at horizon"))
    handles = []
    xe, ye = _edges(result.coords[x], _is_log(result, x)), _edges(result.coords[y], _is_log(result, y))
    for mask, hatch, label in masks:
        shade = np.ma.masked_where(~mask, np.ones(mask.shape))
        mesh = ax.pcolor(xe, ye, shade, hatch=hatch, facecolor="none", edgecolor="0.15", linewidth=0.0,
                         alpha=None, shading="flat")
        mesh.set_hatch(hatch)
        mesh.set_facecolor("none")
        handles.append(Patch(facecolor="white", edgecolor="0.15", hatch=hatch, label=label))
    return handles


def _grid(result, n_panels):
    plt = _pyplot()
    cols = min(n_panels, MAX_FACETS)
    rows = int(np.ceil(n_panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols + 1.6, 3.9 * rows), squeeze=False,
                             layout="constrained")
    for extra in axes.ravel()[n_panels:]:
        extra.set_visible(False)
    return fig, axes.ravel()


def phase_map(result: SweepResult, x: str, y: str, ax=None, path=None, name: str = "phase"):
    """Categorical map of `name` ("phase" or "gd_outcome") over (x, y), with hatching for GD outcomes other
    than converges and for points not converged at the horizon; small multiples over further axes."""
    facets = _facets(result, (x, y)) if ax is None else [{}]
    fig, axes = (ax.figure, [ax]) if ax is not None else _grid(result, len(facets))
    handles: dict[str, object] = {}
    for panel, fixed in zip(axes, facets):
        for h in _draw_categories(panel, result, name, x, y, fixed):
            handles.setdefault(h.get_label(), h)
        if name == "phase":
            for h in _draw_hatches(panel, result, x, y, fixed):
                handles.setdefault(h.get_label(), h)
        _setup_axes(panel, result, x, y)
        panel.set_title(_title(result, name.replace("_", " "), fixed), fontsize=9)
    fig.legend(handles=list(handles.values()), loc="outside right upper", fontsize=8, frameon=False)
    _save(fig, path)
    return fig


def _continuous(result: SweepResult, metric: str, values: np.ndarray):
    """(data to draw, colour norm, colour-bar label) for a continuous metric."""
    from matplotlib.colors import LogNorm, Normalize

    info = result.meta["metrics"][metric]
    finite = values[np.isfinite(values)]
    if metric == "ntk_change":
        data = np.log10(np.abs(values), where=values != 0, out=np.full(values.shape, -np.inf))
        data = np.where(np.isfinite(data), data, np.nan)
        return data, None, r"$\log_{10}|\Theta_T/\Theta_0 - 1|$"
    if info["log"] and finite.size and np.all(finite > 0) and finite.max() / max(finite.min(), 1e-300) > 30:
        return np.where(np.isfinite(values), values, np.nan), LogNorm(finite.min(), finite.max()), info["label"]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        return np.where(np.isfinite(values), values, np.nan), Normalize(lo, hi if hi > lo else lo + 1), info["label"]
    return np.full(values.shape, np.nan), Normalize(0, 1), info["label"]


def metric_map(result: SweepResult, metric: str, x: str, y: str, ax=None, path=None):
    """Continuous map of `metric` over (x, y): log colours where it spans decades (log10|ntk_change| for the
    NTK change, with the sign change drawn as a dashed line), the classify threshold as a labelled contour,
    non-finite cells (e.g. t_learn = inf at a saddle) grey."""
    facets = _facets(result, (x, y)) if ax is None else [{}]
    fig, axes = (ax.figure, [ax]) if ax is not None else _grid(result, len(facets))
    reduced = _reduced(result, metric).astype(float)
    data_all, norm, label = _continuous(result, metric, reduced)
    info = result.meta["metrics"][metric]
    if norm is None:  # ntk_change: a shared linear scale of the log values
        finite = data_all[np.isfinite(data_all)]
        from matplotlib.colors import Normalize

        norm = Normalize(finite.min() if finite.size else -1, finite.max() if finite.size else 1)
    mesh = None
    xe, ye = _edges(result.coords[x], _is_log(result, x)), _edges(result.coords[y], _is_log(result, y))
    X, Y = np.meshgrid(result.coords[x], result.coords[y])
    for panel, fixed in zip(axes, facets):
        data = _plane(result, data_all, x, y, fixed)
        panel.set_facecolor("0.8")  # non-finite cells
        mesh = panel.pcolormesh(xe, ye, np.ma.masked_invalid(data), norm=norm, cmap="viridis", shading="flat",
                                rasterized=True)
        threshold = info.get("threshold")
        if threshold is not None:
            level = result.meta["thresholds"][threshold]
            raw = _plane(result, reduced, x, y, fixed)
            field = np.log10(np.abs(raw) + 1e-300) if metric == "ntk_change" else raw
            lvl = np.log10(level) if metric == "ntk_change" else level
            if np.nanmin(field) < lvl < np.nanmax(field):
                cs = panel.contour(X, Y, np.where(np.isfinite(field), field, np.nan), levels=[lvl],
                                   colors="white", linewidths=1.4, linestyles="solid", zorder=3)
                panel.clabel(cs, fmt={lvl: f"{threshold.split('_')[0]} threshold {level:g}"}, fontsize=7,
                             inline=False, colors="white")
        if metric == "ntk_change":
            raw = _plane(result, reduced, x, y, fixed)
            if np.nanmin(raw) < 0 < np.nanmax(raw):
                panel.contour(X, Y, np.sign(raw), levels=[0], colors="red", linewidths=0.9, linestyles="dashed",
                              zorder=3)
                panel.text(0.01, 0.01, "red dashed: sign change (NTK shrinks on one side)", color="red",
                           fontsize=7, transform=panel.transAxes)
        _setup_axes(panel, result, x, y)
        panel.set_title(_title(result, metric.replace("_", " "), fixed), fontsize=9)
    fig.colorbar(mesh, ax=list(axes[: len(facets)]), label=label, shrink=0.9)
    _save(fig, path)
    return fig


# ---------- 1-D ----------

def line_plot(result: SweepResult, metric: str, x: str, path=None):
    """A metric along the single sweep axis x (phase: coloured bands); seeds as faint lines + median."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    xs = result.coords[x]
    info = result.meta["metrics"][metric]
    facets = _facets(result, (x,))
    if info["kind"] == "categorical":
        from matplotlib.patches import Patch

        names = _category_names(result, metric)
        codes = _plane(result, _reduced(result, metric), x, None, facets[0])
        edges = _edges(xs, _is_log(result, x))
        for i, code in enumerate(codes):
            ax.axvspan(edges[i], edges[i + 1], color=CATEGORY_COLOURS[metric][names[code]], lw=0)
        ax.set_yticks([])
        present = sorted(set(codes.tolist()))
        ax.legend(handles=[Patch(color=CATEGORY_COLOURS[metric][names[c]], label=names[c].replace("_", " "))
                           for c in present], loc="upper left", bbox_to_anchor=(1, 1), fontsize=8, frameon=False)
    else:
        values = result.arrays[metric].astype(float)
        if "seed" in result.axes:
            seeds = np.moveaxis(values, result.axes.index("seed"), -1)
            for k in range(seeds.shape[-1]):
                ax.plot(xs, _plane(result, seeds[..., k], x, None, facets[0]), color="0.6", lw=0.5, alpha=0.5)
        ax.plot(xs, _plane(result, _reduced(result, metric).astype(float), x, None, facets[0]), color="#0072B2",
                lw=1.8, label="median over seeds" if "seed" in result.axes else None)
        if info["log"] and np.all(np.abs(values[np.isfinite(values)]) > 0):
            ax.set_yscale("log" if np.all(values[np.isfinite(values)] > 0) else "symlog")
        threshold = info.get("threshold")
        if threshold is not None:
            ax.axhline(result.meta["thresholds"][threshold], color="k", ls=":", lw=1,
                       label=f"{threshold} = {result.meta['thresholds'][threshold]:g}")
        ax.set_ylabel(info["label"])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, frameon=False)
    _setup_axes(ax, result, x, None)
    ax.set_title(_title(result, metric.replace("_", " "), facets[0]), fontsize=9)
    _save(fig, path)
    return fig


# ---------- trajectories ----------

def trajectory_plot(result: SweepResult, path=None):
    """m, NTK, alignment and excess loss against log time, one curve per grid point (at most
    MAX_TRAJECTORIES, evenly picked); the kernel (frozen-NTK) prediction dashed."""
    plt = _pyplot()
    t = result.coords["time"]
    shape = tuple(result.meta["shape"])
    n = int(np.prod(shape))
    picks = np.unique(np.linspace(0, n - 1, min(n, MAX_TRAJECTORIES)).round().astype(int))
    labels = result.arrays.get("phase")
    legend = result.meta["legends"]["phase"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, layout="constrained")
    panels = [("traj_m", "slope $m$"), ("traj_ntk", r"NTK $\Theta$"), ("traj_alignment", r"alignment $\zeta$"),
              ("traj_loss", r"excess loss $a(m - m^*)^2/2$")]
    colours = plt.get_cmap("tab10")
    positive = t > 0
    for j, flat in enumerate(picks):
        index = np.unravel_index(flat, shape)
        name = ", ".join(f"{a}={result.coords[a][i]:.3g}" for a, i in zip(result.axes, index))
        if labels is not None:
            name += f" [{legend[labels[index]].replace('_', ' ')}]"
        colour = colours(j % 10)
        for ax, (key, ylabel) in zip(axes.ravel(), panels):
            ax.plot(t[positive], result.arrays[key][index][positive], color=colour, lw=1.4, label=name)
            ax.set_ylabel(ylabel)
        axes[0, 0].plot(t[positive], result.arrays["traj_m_lin"][index][positive], color=colour, lw=1, ls="--")
    for ax in axes.ravel():
        ax.set_xscale("log")
    for ax in axes[1]:
        ax.set_xlabel("time $t$ [steps]")
    axes[0, 1].set_yscale("log")
    axes[1, 1].set_yscale("log")
    m_all = result.arrays["traj_m"][np.unravel_index(picks, shape)]
    scale = np.nanmax(np.abs(np.where(np.isfinite(m_all), m_all, np.nan)))
    axes[0, 0].set_yscale("symlog", linthresh=max(1e-3 * scale, 1e-300) if np.isfinite(scale) else 1.0)
    loss = result.arrays["traj_loss"][np.unravel_index(picks, shape)]
    top = np.nanmax(np.where(np.isfinite(loss), loss, np.nan))
    if np.isfinite(top) and top > 0:
        axes[1, 1].set_ylim(top * 1e-16, top * 10)  # below 1e-16 of the start: converged to rounding
    shown = f" ({len(picks)} of {n} points)" if len(picks) < n else ""
    fig.suptitle(f"{result.meta['name']}: trajectories{shown}; dashed: kernel (frozen-NTK) prediction", fontsize=10)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8,
               frameon=False)
    _save(fig, path)
    return fig


# ---------- everything a config asks for ----------

def render_all(result: SweepResult, out_dir, formats: Sequence[str] | None = None) -> list[Path]:
    """Draw the config's maps (plot.maps over plot.x, plot.y) and, with a time axis, the trajectories.
    File names say what is inside: <name>__<metric>__<y>_vs_<x>.<fmt>."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    plot = result.meta["config"]["plot"]
    formats = list(formats or plot.get("formats") or ["png"])
    x, y = plot["x"], plot.get("y")
    name = result.meta["name"]
    written = []
    for metric in plot["maps"]:
        if metric not in result.arrays:
            continue  # e.g. gd_outcome in a flow sweep
        kind = result.meta["metrics"][metric]["kind"]
        if y is None:
            fig = line_plot(result, metric, x)
            stem = f"{name}__{metric}__vs_{x}"
        elif kind == "categorical":
            fig = phase_map(result, x, y, name=metric)
            stem = f"{name}__{metric}__{y}_vs_{x}"
        else:
            fig = metric_map(result, metric, x, y)
            stem = f"{name}__{metric}__{y}_vs_{x}"
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            _save(fig, path)
            written.append(path)
        plt.close(fig)
    if "time" in result.coords:
        fig = trajectory_plot(result)
        for fmt in formats:
            path = out_dir / f"{name}__trajectories.{fmt}"
            _save(fig, path)
            written.append(path)
        plt.close(fig)
    return written
