"""Figures of ``phasediag validate``: simulated points over the predicted phase map, and parity plots.

Each plotting function returns its Figure and writes it only when given a path (atomic, deterministic bytes).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from phasediag import core
from phasediag.plots import maps
from phasediag.plots.base import new_figure, save_figure, swatch
from phasediag.engine import sweep
from phasediag.config.sweep import Config


def _colour(label: str | None) -> str:
    return maps.CATEGORY_COLOURS["phase"].get(label or "", maps.SPECIAL_COLOURS["nan"])


def overlay_figure(config: Config, body: dict, path: str | Path | None = None, map_result=None):
    """The predicted phase map over the config's plot axes, each simulated point a marker filled with the colour
    of its measured label (circle: measured = map label, cross-marked square: they differ)."""
    from matplotlib.lines import Line2D

    x, y = config.plot["x"], config.plot.get("y")
    result = map_result if map_result is not None else sweep.run(replace(config, metrics=None))
    fig = new_figure(7.2, 4.8)
    ax = fig.add_subplot()
    maps.phase_map(result, x, y, ax=ax)
    rows = body["rows"]
    agree = [r for r in rows if r["measured_label"] == r["map_label"]]
    differ = [r for r in rows if r["measured_label"] != r["map_label"]]
    for group, marker in ((agree, "o"), (differ, "X")):
        if group:
            ax.scatter([r["coords"][x] for r in group], [r["coords"][y] for r in group], s=46, marker=marker,
                       c=[_colour(r["measured_label"]) for r in group], edgecolors="black", linewidths=0.9,
                       zorder=5, clip_on=False)
    present = set(np.unique(result.arrays["phase"]).tolist())  # the map's own legend lists these
    extra = sorted({r["measured_label"] for r in rows} - {core.PHASES[c] for c in present})
    handles = [swatch(_colour(n), f"measured only: {n.replace('_', ' ')}") for n in extra]
    handles += [Line2D([], [], marker="o", ls="", mfc="white", mec="black", label="simulated: measured = map"),
                Line2D([], [], marker="X", ls="", mfc="white", mec="black", label="simulated: labels differ")]
    legend = ax.get_legend()  # phase_map's: the map's labels, right of the axes
    handles = (list(legend.legend_handles) if legend is not None else []) + handles
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    n = len(rows)
    ax.set_title(f"{body['name']}: {n} simulated points, colour = measured phase\n"
                 f"measured = map label: {sum(r['measured_label'] == r['map_label'] for r in rows)}/{n}; "
                 f"= exact label of the same vectors: "
                 f"{sum(r['measured_label'] == r['predicted_label'] for r in rows)}/{n}", fontsize=8)
    save_figure(fig, path)
    return fig


def parity_figure(body: dict, path: str | Path | None = None):
    """Measured against predicted (same vectors): NTK change and final alignment, and each point's worst
    relative deviation over its path."""
    rows = [r for r in body["rows"] if not r["measured"]["diverged"] and not r["predicted"]["diverged"]]
    fig = new_figure(10.5, 3.4)
    axes = fig.subplots(1, 3)
    for ax, key, label in ((axes[0], "ntk_change", r"NTK change $\Theta_T/\Theta_0 - 1$"),
                           (axes[1], "alignment", r"final alignment $\zeta_T$")):
        p = np.array([r["predicted"][key] for r in rows], dtype=float)
        q = np.array([r["measured"][key] for r in rows], dtype=float)
        colours = [_colour(r["measured_label"]) for r in rows]
        if key == "ntk_change":
            ax.set_xscale("symlog", linthresh=1e-3)
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.tick_params(axis="x", labelrotation=60)
        ax.scatter(p, q, c=colours, edgecolors="black", linewidths=0.5, s=28, zorder=3)
        finite = np.concatenate([p, q])
        finite = finite[np.isfinite(finite)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, zorder=1)
        ax.set_xlabel(f"predicted {label}", fontsize=8)
        ax.set_ylabel(f"measured {label}", fontsize=8)
    worst = np.array([r["error"]["worst"] for r in rows], dtype=float)
    axes[2].scatter(np.arange(len(rows)), np.maximum(worst, 1e-17), c=[_colour(r["measured_label"]) for r in rows],
                    edgecolors="black", linewidths=0.5, s=28)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("simulated point", fontsize=8)
    axes[2].set_ylabel("worst deviation over the path", fontsize=8)
    step = body["settings"]["step"]
    axes[2].set_title("GD configs: rounding; flow configs: O(step) = "
                      f"{step:g}" if body["settings"]["method"] == "gd" else "DOPRI5, rtol 1e-12", fontsize=8)
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{body['name']}: closed form vs simulated training of the same vectors", fontsize=9)
    save_figure(fig, path)
    return fig
