"""The figure of one trajectory (``phasediag solve/simulate --plot``, ``Point.plot()``): m, the NTK, the alignment
and the excess loss against t.

matplotlib is imported lazily (inside the functions) with the non-interactive Agg backend, so importing
phasediag (and ``phasediag --help``) never pays for it and batch jobs never need a display. The trajectory is
drawn in the colour of its phase label (base.CATEGORY_COLOURS, the same colour as on every map); the kernel
(frozen-NTK) prediction is black and dashed, and where it leaves the frame (a diverging prediction of large-step
GD) it is cut at the axis and marked there with a triangle: no segment is drawn beyond the axes. The legend
sits outside the panels; nothing is translucent (PostScript has no transparency).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from phasediag.plots import notation
from phasediag.plots.base import current_options, legend, new_figure, phase_colour, pretty, save_figure

__all__ = ["trajectory_figure", "clip_to_frame"]

KERNEL_STYLE = {"color": "black", "ls": (0, (4, 2)), "lw": 1.3}
EDGE_MARKER = {"ls": "", "color": "black", "markersize": 5, "clip_on": False, "zorder": 6}
GRID = {"color": "0.88", "lw": 0.6}
OPTIMIZERS = {"flow": "Gradient flow", "gd": "GD", "sgd": "SGD"}


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


def clip_to_frame(ax, t, y, *, resume: bool = False) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float, str]]]:
    """A curve cut at the y-limits of `ax`: (x, y) ending on the edge where it leaves the frame, and the edge
    marks [(x, y_edge, '^' or 'v')] there (and where it is, when it starts outside). With `resume` it comes
    back where it re-enters (a NaN gap between); without, nothing after the first exit is drawn (a diverging
    prediction: no strokes across the frame). Interpolated on the axes' scales (straight on screen, like the
    line matplotlib draws); t = inf and missing values are left out, +-inf values (and y <= 0 on a log axis)
    are off the frame. Set both scales and the y-limits first."""
    xscale, yscale = ax.xaxis.get_transform(), ax.yaxis.get_transform()
    lo, hi = sorted(float(v) for v in yscale.transform(np.asarray(ax.get_ylim(), dtype=float)))
    log = ax.get_yscale() == "log"
    points = []
    for ti, yi in zip(t, y):
        if ti is None or yi is None or not math.isfinite(float(ti)) or math.isnan(float(yi)):
            continue
        yi = float(yi)
        if log and yi <= 0:
            yi = -math.inf
        sy = float(yscale.transform(np.array([yi]))[0]) if math.isfinite(yi) else yi
        points.append((float(xscale.transform(np.array([float(ti)]))[0]), sy))
    out_x, out_y, marks = [], [], []

    def side(v):
        return 1 if v > hi else -1 if v < lo else 0

    def emit(sx, sy):
        out_x.append(sx)
        out_y.append(sy)

    def mark(sx, edge):
        marks.append((sx, hi if edge > 0 else lo, "^" if edge > 0 else "v"))

    for k, (sx, sy) in enumerate(points):
        where = side(sy)
        if k == 0:
            if where == 0:
                emit(sx, sy)
            elif math.isfinite(sy):  # starts off the frame: marked where it is
                mark(sx, where)
            continue
        px, py = points[k - 1]
        before = side(py)
        if before == 0 and where == 0:
            emit(sx, sy)
            continue
        if before == 0:  # leaves the frame: to the edge, marked, then a gap (or the end)
            edge = hi if where > 0 else lo
            cx = _cross(px, py, sx, sy, edge)
            emit(cx, edge)
            mark(cx, where)
            if not resume:
                break
            emit(math.nan, math.nan)
            continue
        if where == 0:  # comes back: from the edge
            edge = hi if before > 0 else lo
            emit(math.nan, math.nan)
            emit(_cross(px, py, sx, sy, edge), edge)
            emit(sx, sy)
            continue
        if before != where and math.isfinite(py) and math.isfinite(sy):  # across the frame in one step
            first, second = (hi, lo) if before > 0 else (lo, hi)
            emit(math.nan, math.nan)
            emit(_cross(px, py, sx, sy, first), first)
            cx = _cross(px, py, sx, sy, second)
            emit(cx, second)
            mark(cx, where)
            if not resume:
                break
            emit(math.nan, math.nan)
    back_x, back_y = xscale.inverted(), yscale.inverted()
    xs = np.array(out_x, dtype=float)
    ys = np.array(out_y, dtype=float)
    ok = np.isfinite(xs)
    data_x, data_y = np.full(xs.shape, np.nan), np.full(ys.shape, np.nan)
    if ok.any():
        data_x[ok] = back_x.transform(xs[ok])
        data_y[ok] = back_y.transform(ys[ok])
    edge_marks = [(float(back_x.transform(np.array([mx]))[0]), float(back_y.transform(np.array([my]))[0]), m)
                  for mx, my, m in marks]
    return data_x, data_y, edge_marks


def _cross(x0: float, y0: float, x1: float, y1: float, level: float) -> float:
    """Where the segment (x0, y0)-(x1, y1) meets y = level (x of the finite end when the other is infinite)."""
    if not math.isfinite(y0):
        return x1
    if not math.isfinite(y1):
        return x0
    if y1 == y0:
        return x0
    return x0 + (level - y0) / (y1 - y0) * (x1 - x0)


def _kernel(ax, t, y) -> bool:
    """The kernel prediction, clipped at the frame with its edge marks; whether any mark was drawn."""
    xs, ys, marks = clip_to_frame(ax, t, y)
    ax.plot(xs, ys, zorder=3, **KERNEL_STYLE)
    for mx, my, marker in marks:
        ax.plot([mx], [my], marker=marker, **EDGE_MARKER)
    return bool(marks)


def _x_axis(ax, t) -> float | None:
    """Symmetric-log time axis, linear below the smallest positive time (so t = 0 shows); its threshold."""
    from matplotlib.ticker import NullLocator, SymmetricalLogLocator

    positive = sorted(float(x) for x in t if x is not None and math.isfinite(float(x)) and float(x) > 0)
    if not positive:
        return None
    ax.set_xscale("symlog", linthresh=positive[0], linscale=0.3)
    ax.set_xlim(-0.05 * positive[0], positive[-1] * 1.15)
    decades = math.log10(positive[-1] / positive[0]) if positive[-1] > positive[0] else 0
    if decades > 3:
        ax.xaxis.set_major_locator(SymmetricalLogLocator(linthresh=positive[0], base=10,
                                                         subs=[1.0] if decades <= 6 else None))
        ax.xaxis.set_minor_locator(NullLocator())
    return positive[0]


def _log_ticks(axis, lo: float, hi: float, most: int = 6) -> None:
    """Decade ticks 10^(k n) on a log axis from `lo` to `hi`, n a round stride (1, 2, 5, 10, 20, ...) giving at
    most `most` ticks; no minor ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    stride = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000) if (b - a) / s <= most - 1) \
        if (b - a) / 1000 <= most - 1 else math.ceil((b - a) / (most - 1))
    first = math.ceil(a / stride) * stride
    axis.set_major_locator(FixedLocator([10.0 ** k for k in range(first, b + 1, stride)]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"$10^{{{round(math.log10(v))}}}$" if v > 0 else ""))
    axis.set_minor_locator(NullLocator())


def _title(result: Mapping[str, Any]) -> str:
    params, final = result.get("params", {}), result.get("final", {})
    optimizer = params.get("optimizer", "flow")
    simulated = params.get("init") == "sampled vectors"
    head = ("Simulated " + OPTIMIZERS.get(optimizer, optimizer)) if simulated else OPTIMIZERS.get(optimizer, optimizer)
    activation = params.get("activation", "linear")
    if activation != "linear":  # an activated network f(x) = kappa sum_i u_i phi(w_i x)
        head = f"{_ACTIVATION_NAMES.get(activation, activation)} network, {head[0].lower()}{head[1:]}"
    width = params.get("width")
    text = head + (f", $d = {notation.number_tex(width)}$" if width is not None else "")
    if final.get("label"):
        text += f": {'measured ' if simulated else ''}{pretty(final['label'])}"
    if final.get("gd_outcome"):
        text += f" (gradient-flow label); GD {final['gd_outcome']}"
    return text


_ACTIVATION_NAMES = {"relu": "ReLU", "leaky_relu": "Leaky ReLU", "tanh": "tanh", "sigmoid": "Sigmoid",
                     "swish": "Swish"}


def _note(text: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker="", label=text)


def trajectory_figure(result: Mapping[str, Any], path: str | os.PathLike | None = None):
    """2x2 figure of a :func:`phasediag.engine.point.solve_point` result: m, NTK, alignment and excess loss vs t.

    The time axis is logarithmic with a short linear stretch around 0 (``symlog``, linear below the smallest
    positive time) so that t = 0 is shown; t = inf (and non-finite values of a diverging GD run) are left
    out. The trajectory is drawn in the colour of its phase label; the kernel (frozen-NTK) prediction is dashed
    in the m, NTK and loss panels, cut at the frame where it leaves it (a triangle on the edge). Returns the
    Figure (not registered with pyplot, so nothing needs closing); saves it (atomically) only when ``path``
    is given.
    """
    from matplotlib.lines import Line2D

    options = current_options()
    t = result["t"]
    params = result.get("params", {})
    final = result.get("final", {})
    steps = params.get("optimizer") in ("gd", "sgd")
    teacher = params.get("teacher")
    simulated = params.get("init") == "sampled vectors"
    colour = phase_colour("phase", final.get("label") or "") or "0.15"

    fig = new_figure(7.0, 8.4, layout=None) if options.narrow else new_figure(10, 6.6, layout=None)
    axes = fig.subplots(2, 2, sharex=True)
    (ax_m, ax_ntk), (ax_al, ax_loss) = axes
    threshold = None
    for ax in axes.flat:
        threshold = _x_axis(ax, t)
        ax.grid(True, which="major", **GRID)
        ax.set_axisbelow(True)
    line = {"ls": "-", "marker": "o", "ms": 3, "color": colour, "lw": 1.5, "zorder": 4}

    ax_m.plot(*_finite_xy(t, result["m"]), **line)
    if teacher is not None:
        ax_m.axhline(teacher, color="0.45", lw=0.9, ls=":", zorder=2)
    _limit_to(ax_m, [v for v in result["m"] if v is not None] + ([teacher] if teacher is not None else []))
    clipped = _kernel(ax_m, t, result["m_lin"])
    ax_m.set_ylabel(options.label("m", r"end-to-end slope $m$"))

    ntk = _finite_xy(t, result["ntk"])
    ax_ntk.plot(*ntk, **line)
    _limit_to(ax_ntk, ntk[1])
    if ntk[1]:  # the kernel prediction: the NTK frozen at its initial value
        ax_ntk.axhline(ntk[1][0], zorder=3, **KERNEL_STYLE)
    ax_ntk.set_ylabel(options.label("ntk", r"NTK $\Theta$"))

    al = _finite_xy(t, result["alignment"])
    ax_al.plot(*al, **line)
    _limit_to(ax_al, al[1] + [0.0])
    ax_al.set_ylabel(options.label("alignment", r"alignment $\zeta = \cos(u, w)$"))

    xs, ys = _finite_xy(t, result["loss"], positive=True)
    ax_loss.plot(xs, ys, **line)
    if ys or _finite_xy(t, result.get("loss_lin", []), positive=True)[1]:
        ax_loss.set_yscale("log")
    if ys:  # the actual loss sets the scale; a diverging kernel prediction is cut at the frame
        ax_loss.set_ylim(min(ys) / 10.0, max(ys) * 10.0)
    elif result.get("loss_lin"):
        _, yl = _finite_xy(t, result["loss_lin"], positive=True)
        if yl:
            ax_loss.set_ylim(min(yl) / 10.0, max(yl) * 10.0)
    if ax_loss.get_yscale() == "log":
        _log_ticks(ax_loss.yaxis, *ax_loss.get_ylim(), most=5 if options.narrow else 6)
    clipped |= _kernel(ax_loss, t, result.get("loss_lin", []))
    activated = params.get("activation", "linear") != "linear"
    ax_loss.set_ylabel(options.label("loss", r"excess loss $E[(f(x) - m^* x)^2]/2$" if activated else
                                     r"excess loss $a(m - m^*)^2/2$"))
    split = result.get("split")  # (None: not computable at these values)
    if split:  # the ReLU network's exact split solution, drawn over the measured points
        exact = {"color": "black", "lw": 0.9, "ls": "-", "zorder": 5}
        for ax, key in ((ax_m, "m"), (ax_ntk, "ntk"), (ax_al, "alignment"), (ax_loss, "loss")):
            ax.plot(*_finite_xy(t, split[key], positive=key == "loss"), **exact)

    unit = f" ({params.get('optimizer', 'gd').upper()} steps)" if steps else ""
    for ax in axes[1]:
        ax.set_xlabel(options.label("t", f"time $t${unit}"))

    kind = "simulated" if simulated else "exact solution"
    handles = [Line2D([], [], label=f"{kind}: {pretty(final['label'])}" if final.get("label") else kind, **line),
               Line2D([], [], label="kernel prediction (frozen NTK)", **KERNEL_STYLE)]
    if split:
        handles.append(Line2D([], [], color="black", lw=0.9, label="exact ReLU split solution"))
    if teacher is not None:
        handles.append(Line2D([], [], color="0.45", lw=0.9, ls=":", label="teacher $m^*$"))
    if clipped:
        handles.append(Line2D([], [], marker="^", label="off scale: cut at the frame",
                              **{k: v for k, v in EDGE_MARKER.items() if k not in ("clip_on", "zorder")}))
    notes = []
    if threshold is not None:
        notes.append(f"$t$ axis linear below ${notation.number_tex(threshold)}$")
    if any(x is None or (isinstance(x, float) and math.isinf(x)) for x in t):
        notes.append(r"$t = \infty$ not drawn")
    handles += [_note(n) for n in notes]
    legend(fig, handles, below=options.narrow, ncols=2 if options.narrow else 1)
    title = options.title_of(_title(result), "trajectory")
    if title:
        fig.suptitle(title)

    from phasediag.plots.base import finish
    from phasediag.plots.validation import keep_markers_inside

    marker_radius = (3 / 2 + 0.5) / 72  # the trajectories' dots, in inches
    for _ in range(2):  # before the layout (estimated sizes), then with the final ones: the dots at t = 0 whole
        for ax in axes.flat:
            curve = ax.get_lines()[0]
            keep_markers_inside(ax, curve.get_xdata(), curve.get_ydata(), marker_radius, y=False)
        if _ == 0:
            finish(fig)
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig
