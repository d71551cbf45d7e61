"""Figures of ``phasediag validate``: simulated points over the predicted phase map, and parity plots.

Each plotting function returns its Figure and writes it only when given a path (atomic, deterministic bytes).
Markers are filled with the colour of their measured label (base.CATEGORY_COLOURS, the one colour of each
phase in every figure kind; a diverged run in SPECIAL_COLOURS["inf"]) and always lie whole inside the axes:
the limits are widened by the markers' radius where a point sits at an edge. Points that cannot be drawn
(diverged: no final values) are counted in the legend; every legend sits outside the axes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
import numpy as np

from phasediag import core
from phasediag.plots import maps, notation
from phasediag.plots.base import (FALLBACK_COLOURS, SPECIAL_COLOURS, current_options, legend, new_figure,
                                  phase_colour, pretty, save_figure, swatch)
from phasediag.plots.base import finish
from phasediag.engine import sweep
from phasediag.config.sweep import Config

DIVERGED = "diverged"
MARKER_AREA = {"overlay": 46.0, "parity": 28.0}  # scatter sizes (points^2)
MARKER_EDGE = {"overlay": 0.9, "parity": 0.5}


def _colour(label: str | None) -> str:
    """The measured label's colour: its phase colour, a diverged run dark grey, anything else a spare."""
    if label == DIVERGED:
        return SPECIAL_COLOURS["inf"]
    return phase_colour("phase", label or "") or FALLBACK_COLOURS[0]


def _label_text(label: str) -> str:
    return pretty(label)


# ---------------------------------------------------------------- markers inside the axes


def _radius_inches(kind: str) -> float:
    """Half a marker (its edge included) in inches."""
    return (np.sqrt(MARKER_AREA[kind]) / 2 + MARKER_EDGE[kind] / 2) / 72.0


def _widen(axis, values: np.ndarray, fraction: float) -> tuple[float, float]:
    """Limits of `axis` (in data units) widened, where needed, so that every value lies at least `fraction`
    of the axis length inside; computed in the axis' scaled coordinates (log10 on a log axis)."""
    scale = axis.get_transform()
    lo, hi = sorted(scale.transform(np.asarray(axis.get_view_interval(), dtype=float)))
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if axis.get_scale() == "log":
        values = values[values > 0]
    if values.size == 0:
        return tuple(sorted(axis.get_view_interval()))
    s = scale.transform(values)
    first, last = float(np.min(s)), float(np.max(s))
    for _ in range(8):  # a fixed point: the padding is a fraction of the widened length
        length = max(hi - lo, 1e-300)
        lo, hi = min(lo, first - fraction * length), max(hi, last + fraction * length)
    back = scale.inverted()
    return tuple(float(v) for v in back.transform(np.array([lo, hi])))


def keep_markers_inside(ax, xs, ys, kind: str | float, *, x: bool = True, y: bool = True) -> None:
    """Widen the limits of `ax` (x and/or y) so that markers of `kind` (or of that radius in inches) at (xs, ys)
    are drawn whole inside the axes, measured with the axes' current size: call after the layout."""
    fig = ax.figure
    box = ax.get_position()
    width, height = box.width * fig.get_size_inches()[0], box.height * fig.get_size_inches()[1]
    r = _radius_inches(kind) if isinstance(kind, str) else float(kind)
    inverted_x, inverted_y = ax.xaxis_inverted(), ax.yaxis_inverted()
    x0, x1 = _widen(ax.xaxis, xs, r / max(width, 1e-3))
    y0, y1 = _widen(ax.yaxis, ys, r / max(height, 1e-3))
    if x:
        ax.set_xlim((x1, x0) if inverted_x else (x0, x1))
    if y:
        ax.set_ylim((y1, y0) if inverted_y else (y0, y1))


# ---------------------------------------------------------------- the overlay


def _take_legends(fig, ax) -> list:
    """The handles of the legends phase_map drew (on the axes or the figure), removed: one legend is drawn
    again with the markers' entries."""
    handles = []
    found = [ax.get_legend()] + list(fig.legends)
    for item in found:
        if item is None:
            continue
        handles += list(item.legend_handles)
        for handle, text in zip(item.legend_handles, item.get_texts()):
            handle.set_label(text.get_text())
        item.remove()
    fig.legends.clear()
    return handles


def _note(text: str):
    """A legend entry without a symbol (a count or a remark)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker="", label=text)


def overlay_figure(config: Config, body: dict, path: str | Path | None = None, map_result=None):
    """The predicted phase map over the config's plot axes, each simulated point a marker filled with the colour
    of its measured label (circle: measured = map label, cross: they differ), counted in the legend."""
    from matplotlib.lines import Line2D

    x, y = config.plot["x"], config.plot.get("y")
    result = map_result if map_result is not None else sweep.run(replace(config, metrics=None))
    options = current_options(result.meta)
    fig = new_figure(7.2, 8.0 if options.narrow else 4.8, layout=None)  # narrow: room for the legend below
    ax = fig.add_subplot()
    maps.phase_map(result, x, y, ax=ax)
    map_handles = _take_legends(fig, ax)
    rows = body["rows"]
    agree = [r for r in rows if r["measured_label"] == r["map_label"]]
    differ = [r for r in rows if r["measured_label"] != r["map_label"]]
    for group, marker in ((agree, "o"), (differ, "X")):
        if group:
            ax.scatter([r["coords"][x] for r in group], [r["coords"][y] for r in group], s=MARKER_AREA["overlay"],
                       marker=marker, c=[_colour(r["measured_label"]) for r in group], edgecolors="black",
                       linewidths=MARKER_EDGE["overlay"], zorder=5)
    present = {core.PHASES[c] for c in np.unique(result.arrays["phase"]).tolist()}  # the map's own legend
    measured = list(dict.fromkeys(r["measured_label"] for r in rows))
    extra = [n for n in measured if n not in present]
    handles = map_handles + [swatch(_colour(n), f"{_label_text(n)} (measured)") for n in extra]
    n = len(rows)
    same_vectors = sum(r["measured_label"] == r["predicted_label"] for r in rows)
    handles += [Line2D([], [], marker="o", ls="", mfc="white", mec="black", label=f"measured = map: {len(agree)} of {n}"),
                Line2D([], [], marker="X", ls="", mfc="white", mec="black",
                       label=f"measured $\\neq$ map: {len(differ)} of {n}"),
                _note(f"measured = exact, same vectors: {same_vectors} of {n}")]
    config_dict = result.meta["config"]
    ax.set_xlabel(options.label(x, notation.axis_label(config_dict, x, options.labels)))
    ax.set_ylabel(options.label(y, notation.axis_label(config_dict, y, options.labels)))
    stem = f"validate__phase_overlay__{y}_vs_{x}"
    title = options.title_of("Simulated training over the predicted phases", stem, "phase_overlay")
    ax.set_title(title or "")
    legend(fig, handles, below=options.narrow, ncols=2 if options.narrow else 1)
    xs, ys = [r["coords"][x] for r in rows], [r["coords"][y] for r in rows]
    keep_markers_inside(ax, xs, ys, "overlay")  # before the layout (estimated size), then with the final one
    finish(fig, [(ax.xaxis, _relabel(config_dict, x, options)), (ax.yaxis, _relabel(config_dict, y, options))])
    keep_markers_inside(ax, xs, ys, "overlay")
    save_figure(fig, path)
    return fig


def _relabel(config: dict, var: str, options):
    return lambda chars: options.label(var, notation.axis_label(config, var, options.labels, max_chars=chars))


# ---------------------------------------------------------------- the parity plots


def deviation_title(body: dict) -> str:
    """What the deviation of this validation is: rounding (GD configs: the exact GD map against GD), the
    discretization error O(h) (flow configs simulated by GD at step h) or DOPRI5's tolerance."""
    settings = body["settings"]
    if body.get("optimizer") == "gd":
        return "rounding (exact GD map)"
    if settings["method"] == "gd":
        return f"$O(h)$: GD at step $h = {notation.number_tex(settings['step'])}$"
    return r"DOPRI5, rtol $10^{-12}$"


def _symlog(ax, values: np.ndarray, most: tuple[int, int]) -> None:
    """Both axes of a parity panel symmetric-log over `values`: linear below a threshold decade (at most 4
    decades under the largest |value|), ticks at 0 and at every k-th decade, at most `most` = (x, y) per sign
    (the x tick labels are wider), as powers of ten."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 1.0
    small = finite[finite > 0]
    floor = max(float(small.min()) if small.size else top, top * 1e-4, 1e-300)
    lin = 10.0 ** np.floor(np.log10(floor))
    low = int(round(np.log10(lin)))
    for set_scale, axis, count in ((ax.set_xscale, ax.xaxis, most[0]), (ax.set_yscale, ax.yaxis, most[1])):
        ticks = [0.0]
        for sign in (-1, 1):  # per sign: the largest decade inside the range, then every stride-th one down
            side = values[np.isfinite(values) & (values * sign > 0)] * sign
            if not side.size:
                continue
            high = int(np.floor(np.log10(max(float(side.max()), lin))))
            stride = max(1, int(np.ceil((high - low + 1) / count)))
            ticks += [sign * 10.0 ** k for k in range(high, low - 1, -stride)]
        set_scale("symlog", linthresh=lin, linscale=1.0)
        ticks = _spaced(axis, sorted(ticks), values, 0.16 if axis is ax.xaxis else 0.08)
        texts = ["$0$" if t == 0 else f"${'-' if t < 0 else ''}{'1' if k == 0 else f'10^{{{k}}}'}$"
                 for t, k in ((t, round(np.log10(abs(t))) if t else 0) for t in ticks)]
        set_scale("symlog", linthresh=lin, linscale=1.0)
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FixedFormatter(texts))
        axis.set_minor_locator(NullLocator())


def _spaced(axis, ticks: list, values: np.ndarray, gap: float) -> list:
    """The ticks whose labels cannot collide: 0 and the largest decades first, each kept only if it is at
    least `gap` of the data's extent (in the axis' scaled coordinates) from every tick kept before."""
    scale = axis.get_transform().transform
    finite = values[np.isfinite(values)]
    extent = float(np.ptp(scale(np.append(finite, 0.0)))) or 1.0
    kept: list = []
    for t in sorted(ticks, key=lambda t: (t != 0, -abs(t))):
        if all(abs(scale([t])[0] - scale([k])[0]) >= gap * extent for k in kept):
            kept.append(t)
    return sorted(kept)


def _same_limits(ax) -> None:
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def _parity_panel(ax, rows: list, key: str, title: str, symlog: bool, narrow: bool):
    """Measured against predicted `key` of the rows with both values finite; returns the values drawn."""
    from matplotlib.ticker import MaxNLocator

    p = np.array([r["predicted"][key] for r in rows], dtype=float)
    q = np.array([r["measured"][key] for r in rows], dtype=float)
    ok = np.isfinite(p) & np.isfinite(q)
    p, q = p[ok], q[ok]
    both = np.concatenate([p, q])
    if symlog and both.size:
        _symlog(ax, both, (1, 1) if narrow else (2, 3))
    ax.scatter(p, q, c=[_colour(r["measured_label"]) for r, good in zip(rows, ok) if good], edgecolors="black",
               linewidths=MARKER_EDGE["parity"], s=MARKER_AREA["parity"], zorder=3)
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        if not symlog:
            span = (hi - lo) or max(abs(hi), 1.0)
            lo, hi = lo - 0.02 * span, hi + 0.02 * span
        elif hi == lo:
            lo, hi = lo - 1, hi + 1
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.axline((lo, lo), (hi, hi), color="0.5", lw=0.8, zorder=1)  # equal scales and limits: the diagonal
    if not symlog:
        ax.xaxis.set_major_locator(MaxNLocator(4 if narrow else 5))
        ax.yaxis.set_major_locator(MaxNLocator(4 if narrow else 5))
    ax.set_title(title)
    ax.set_xlabel("predicted")
    ax.set_ylabel("measured")
    return p, q


def parity_figure(body: dict, path: str | Path | None = None):
    """Measured against predicted (same vectors): the NTK change and the final alignment, and each point's
    worst relative deviation over its path; diverged points (no final values) counted in the legend."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

    options = current_options()
    narrow = options.narrow
    rows = body["rows"]
    diverged = [r for r in rows if r["measured"]["diverged"] or r["predicted"]["diverged"]]
    kept = [r for r in rows if not (r["measured"]["diverged"] or r["predicted"]["diverged"])]
    if narrow:
        fig = new_figure(7.0, 7.0, layout=None)
        grid = fig.add_gridspec(2, 2)
        axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])]
    else:
        fig = new_figure(11.0, 3.6, layout=None)
        axes = list(fig.subplots(1, 3))
    parity = [(axes[0], *_parity_panel(axes[0], kept, "ntk_change", options.label(
                  "ntk_change", r"NTK change $\Theta_T/\Theta_0 - 1$"), True, narrow)),
              (axes[1], *_parity_panel(axes[1], kept, "alignment", options.label(
                  "alignment_final", r"final alignment $\zeta_T$"), False, narrow))]

    ax = axes[2]  # every point with a finite deviation, diverged ones too (until they diverged)
    shown = [(k, r) for k, r in enumerate(rows) if isinstance(r["error"]["worst"], (int, float))
             and np.isfinite(r["error"]["worst"])]
    index = np.array([k for k, _ in shown], dtype=float)
    worst = np.array([r["error"]["worst"] for _, r in shown], dtype=float)
    exact = worst <= 0
    floor = float(worst[~exact].min()) / 10 if np.any(~exact) else 1e-17
    ax.scatter(index[~exact], worst[~exact], c=[_colour(r["measured_label"]) for (_, r), z in zip(shown, exact)
                                                 if not z],
               edgecolors="black", linewidths=MARKER_EDGE["parity"], s=MARKER_AREA["parity"], zorder=3)
    notes = []
    if np.any(exact):
        ax.scatter(index[exact], np.full(int(exact.sum()), floor), marker="v", c="white", edgecolors="black",
                   linewidths=MARKER_EDGE["parity"], s=MARKER_AREA["parity"], zorder=3)
        notes.append(Line2D([], [], marker="v", ls="", mfc="white", mec="black",
                            label=f"deviation 0 (drawn at ${notation.number_tex(floor)}$)"))
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(numticks=5 if narrow else 7))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.set_xlabel(options.label("point", "simulated point"))
    ax.set_ylabel(options.label("worst_deviation", "worst deviation"))
    ax.set_title(deviation_title(body))
    dev_x, dev_y = index, np.where(exact, floor, worst)

    order = list(core.PHASES)
    labels = sorted(dict.fromkeys(r["measured_label"] for r in rows if r["measured_label"] != DIVERGED),
                    key=lambda n: order.index(n) if n in order else len(order))
    handles = [swatch(_colour(n), _label_text(n)) for n in labels]
    if diverged or any(r["measured_label"] == DIVERGED for r in rows):
        n = len(diverged)
        where = "bottom only" if narrow else "right panel only"
        handles.append(swatch(_colour(DIVERGED), f"diverged: {n} point{'s' if n != 1 else ''} ({where})"))
    handles.append(Line2D([], [], color="0.5", lw=0.8, label="measured = predicted"))
    title = options.title_of("Closed form against simulated training", "validate__predicted_vs_measured",
                             "predicted_vs_measured")
    if title:
        fig.suptitle(title)
    legend(fig, handles + notes, below=narrow, ncols=2 if narrow else 1)
    for _ in range(2):  # before the layout (estimated sizes), then with the final ones
        for panel, p, q in parity:
            if p.size:
                keep_markers_inside(panel, np.r_[p, q], np.r_[q, p], "parity")
                _same_limits(panel)
        if dev_x.size:
            keep_markers_inside(ax, dev_x, dev_y, "parity")
        if _ == 0:
            finish(fig)
    save_figure(fig, path)
    return fig
