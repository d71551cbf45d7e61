"""Figures. matplotlib is imported lazily (inside the functions) with the non-interactive Agg backend, so
importing phasediag (and ``phasediag --help``) never pays for it and batch jobs never need a display."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from phasediag.plots.base import new_figure, save_figure

__all__ = ["trajectory_figure"]


def _finite_xy(t, y, *, positive=False):
    """Points with finite t (inf dropped) and finite y (None/nan/inf dropped); optionally y > 0 only."""
    xs, ys = [], []
    for ti, yi in zip(t, y):
        if ti is None or yi is None:
            continue
        ti, yi = float(ti), float(yi)
        if not (math.isfinite(ti) and math.isfinite(yi)):
            continue
        if positive and yi <= 0:
            continue
        xs.append(ti)
        ys.append(yi)
    return xs, ys


def _limit_to(ax, values, margin=0.08):
    """y-limits around the finite ``values`` (other curves, e.g. a diverging prediction, may leave the frame)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    pad = margin * (hi - lo) if hi > lo else max(abs(hi), 1.0) * margin
    ax.set_ylim(lo - pad, hi + pad)


def trajectory_figure(result: Mapping[str, Any], path: str | os.PathLike | None = None):
    """2x2 figure of a :func:`phasediag.engine.point.solve_point` result: m, NTK, alignment and excess loss vs t.

    The time axis is logarithmic with a short linear stretch around 0 (``symlog``, linear below the smallest
    positive time) so that t = 0 is shown; t = inf (and non-finite values of a diverging GD run) are left
    out. The kernel (frozen-NTK) prediction is dashed in the m and loss panels. Returns the Figure (not
    registered with pyplot, so nothing needs closing); saves it (atomically) only when ``path`` is given.
    """
    t = result["t"]
    params = result.get("params", {})
    final = result.get("final", {})
    steps = params.get("optimizer") in ("gd", "sgd")
    teacher = params.get("teacher")

    fig = new_figure(10, 7)
    axes = fig.subplots(2, 2, sharex=True)
    (ax_m, ax_ntk), (ax_al, ax_loss) = axes

    ax_m.plot(*_finite_xy(t, result["m"]), "-o", ms=3, color="C0", label="m(t)")
    ax_m.plot(*_finite_xy(t, result["m_lin"]), "--", color="C1", label="kernel prediction m_lin")
    if teacher is not None:
        ax_m.axhline(teacher, color="0.5", lw=0.8, ls=":", label="teacher m*")
    _limit_to(ax_m, [v for v in result["m"] if v is not None] + ([teacher] if teacher is not None else []))
    ax_m.set_ylabel("m  (end-to-end slope)")
    ax_m.legend(fontsize="small")

    ax_ntk.plot(*_finite_xy(t, result["ntk"]), "-o", ms=3, color="C2", label="Theta(t)")
    ax_ntk.set_ylabel("NTK  Theta")
    ax_ntk.legend(fontsize="small")

    ax_al.plot(*_finite_xy(t, result["alignment"]), "-o", ms=3, color="C3", label="zeta(t)")
    ax_al.set_ylabel("alignment  zeta = cos(u, w)")
    ax_al.legend(fontsize="small")

    xs, ys = _finite_xy(t, result["loss"], positive=True)
    xl, yl = _finite_xy(t, result.get("loss_lin", []), positive=True)
    ax_loss.plot(xs, ys, "-o", ms=3, color="C4", label="excess loss")
    ax_loss.plot(xl, yl, "--", color="C1", label="kernel prediction")
    if ys or yl:
        ax_loss.set_yscale("log")
    if ys:  # a diverging kernel prediction (GD) must not squash the actual loss
        lo, hi = min(ys), max(ys)
        ax_loss.set_ylim(lo / 10.0, hi * 10.0)
    ax_loss.set_ylabel("excess loss  a (m - m*)^2 / 2")
    ax_loss.legend(fontsize="small")

    positive = sorted(float(x) for x in t if x is not None and math.isfinite(float(x)) and float(x) > 0)
    for ax in axes.flat:
        if positive:
            ax.set_xscale("symlog", linthresh=positive[0], linscale=0.3)
            ax.set_xlim(-0.05 * positive[0], positive[-1] * 1.15)
        ax.grid(True, which="major", alpha=0.3)
    xlabel = f"t ({params.get('optimizer', 'gd').upper()} steps)" if steps else "t"
    notes = []
    if any(x is None for x in t):
        notes.append("t = inf not drawn")
    if positive:
        notes.append(f"symlog axis, linear below {positive[0]:.3g}")
    for ax in axes[1]:
        ax.set_xlabel(xlabel + (f"   [{'; '.join(notes)}]" if notes else ""), fontsize="small")

    simulated = params.get("init") == "sampled vectors"
    title = f"phasediag simulate ({params.get('optimizer')}, width {params.get('width')})" if simulated \
        else "phasediag solve"
    if final:
        title += f": {final.get('phase')}" + (f" ({final.get('mechanism')})" if final.get("mechanism") else "")
        if final.get("label"):
            title += f"   [{'measured ' if simulated else ''}label {final['label']}]"
        if final.get("gd_outcome"):
            title += f"   exact GD: {final['gd_outcome']} (phase label: gradient flow)"
    fig.suptitle(title)

    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig
