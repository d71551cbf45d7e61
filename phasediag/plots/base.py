"""The one plotting base: figure creation, deterministic saving, formats and the colours of every figure kind.

matplotlib is imported lazily (inside the functions) and on the non-interactive Agg backend unless pyplot is
already live (switching the backend of a notebook's pyplot would close its figures), so importing phasediag
stays cheap and batch jobs never need a display. Figures are plain ``matplotlib.figure.Figure`` objects, never
registered with pyplot: nothing to close, no global state. Every figure is written through
:func:`save_figure`: atomically, format from the suffix, and the same figure always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from phasediag.config.reader import FORMATS  # the formats a config's plot.formats may name
from phasediag.results.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "WRITABLE_FORMATS", "DPI", "SIZES", "CATEGORY_COLOURS", "FALLBACK_COLOURS", "CURVE_COLOURS",
           "SPECIAL_COLOURS", "LINESTYLES", "MARKERS", "MAX_LEVELS", "phase_colour", "pretty", "levels",
           "FigureOptions", "figure_options", "current_options", "load_matplotlib", "new_figure", "fit", "keep_inside", "close_columns", "wrapped_title", "readable_log_ticks", "finish", "close_up", "break_line", "two_lines", "colorbar", "legend",
           "save_figure", "swatch", "figure_formats", "render"]

#: every format matplotlib's Agg backend writes (a figure file named by the user, e.g. `solve --plot x.eps`)
WRITABLE_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf",
                    "raw", "rgba")
DPI = 150
PNG_COMPRESSION = 2  # zlib level: files ~20% larger than the default 6, encoded ~3x faster

# Okabe-Ito (colour-blind safe): kernel family blue/green, feature learning warm, no learning grey.
CATEGORY_COLOURS: dict[str, dict[str, str]] = {
    "phase": {
        "kernel": "#56B4E9", "kernel_aligning": "#0072B2", "kernel_disaligning": "#009E73",
        "alignment": "#E69F00", "disalignment": "#CC79A7", "rescaling": "#D55E00", "saddle": "#999999",
    },
    "gd_outcome": {
        "converges": "#56B4E9", "catapult": "#E69F00", "diverges": "#D55E00", "oscillates": "#CC79A7",
        "stalls": "#999999",
    },
    "limit_phase": {"kernel": "#56B4E9", "feature_learning": "#E69F00"},
}
#: for categorical metrics or labels not listed above (Paul Tol's "muted", colour-blind safe)
FALLBACK_COLOURS = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
                    "#AA4499")
#: curves told apart by colour (Okabe-Ito order), where no phase or outcome is shown by colour
CURVE_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
#: cells that are not data: infinite, undefined, off a log scale, and below the evaluation's accuracy
SPECIAL_COLOURS = {"inf": "#5c5c5c", "nan": "#bdbdbd", "off_scale": "#e4e4e4", "no_change": "#ffffff"}
#: curves that share a colour (one phase) told apart by line style and marker, in this order
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
MAX_LEVELS = 7  # an ordered quantity with more values than this gets a colour bar, not a legend


def phase_colour(metric: str, label: str) -> str | None:
    """The fixed colour of a label of `metric` ("phase", "gd_outcome", "limit_phase"); None if it has none."""
    return CATEGORY_COLOURS.get(metric, {}).get(label)


def pretty(label: str) -> str:
    """A label code as legend text: 'kernel_aligning' -> 'kernel aligning'."""
    return label.replace("_", " ")


def levels(n: int) -> list[str]:
    """`n` <= MAX_LEVELS colours of one ordered quantity: greys, light to dark, so that no level looks like a
    phase or outcome colour; pair them with LINESTYLES or MARKERS where curves may coincide."""
    if not 1 <= n <= MAX_LEVELS:
        raise ValueError(f"levels: 1 to {MAX_LEVELS} levels, got {n}; use a colour bar for more")
    ramp = ("#b0b0b0", "#929292", "#757575", "#595959", "#3d3d3d", "#202020", "#000000")
    if n == 1:
        return [ramp[4]]
    return [ramp[round(i * (len(ramp) - 1) / (n - 1))] for i in range(n)]


def load_matplotlib():
    """Import matplotlib; select Agg unless pyplot is already live."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    return matplotlib


# ---------------------------------------------------------------- what the user decides (config plot.*)

#: plot.size names: a one-column figure of a two-column paper and a full page width (inches)
SIZES = {"column": 3.4, "page": 7.0}
_DEFAULT = object()  # plot.title not given: each figure's own title


@dataclass(frozen=True)
class FigureOptions:
    """What a config's ``plot`` section (or ``phasediag plot`` options) says about every figure of a run.

    labels: {sweep variable or metric name: label text}; title: None for no title, a text for every figure,
    or {figure stem, metric or variable name: text or None}; size: "column", "page", (width, height) inches,
    or None for each figure's own size; style: a matplotlib style name or file; dpi: PNG resolution."""

    labels: Mapping[str, str] = field(default_factory=dict)
    title: Any = _DEFAULT
    size: Any = None
    style: str | None = None
    dpi: int = DPI

    @classmethod
    def of(cls, meta: Mapping | None) -> FigureOptions:
        """The options stored in a run's meta.json (``config.plot``); defaults for keys not given."""
        plot = dict((meta or {}).get("config", {}).get("plot") or {})
        size = plot.get("size")
        return cls(labels=dict(plot.get("labels") or {}), title=plot.get("title", _DEFAULT),
                   size=tuple(size) if isinstance(size, list) else size, style=plot.get("style"),
                   dpi=int(plot.get("dpi", DPI)))

    def label(self, name: str, default: str) -> str:
        """The user's label of `name` (a sweep variable or metric), else `default`."""
        return self.labels.get(name, default)

    def title_of(self, default: str | None, *names: str) -> str | None:
        """The title of a figure: the user's (for the first of `names` that has one, when plot.title is a
        mapping; None: no title), else `default`."""
        if self.title is _DEFAULT:
            return default
        if isinstance(self.title, Mapping):
            return next((self.title[n] for n in names if n in self.title), default)
        return self.title

    @property
    def width(self) -> float | None:
        """The chosen figure width in inches (None: each figure's own)."""
        if self.size is None:
            return None
        return SIZES[self.size] if isinstance(self.size, str) else float(self.size[0])

    @property
    def narrow(self) -> bool:
        """A figure too narrow for a legend beside the axes (it goes below)."""
        return self.width is not None and self.width < 5.0

    def figsize(self, width: float, height: float) -> tuple[float, float]:
        """A figure kind's own size (`width` x `height`), or the chosen one: [w, h] as given; a named width
        with the kind's aspect ratio (at most 1.2 x the width high)."""
        if self.size is None:
            return width, height
        if not isinstance(self.size, str):
            return float(self.size[0]), float(self.size[1])
        w = SIZES[self.size]
        return w, min(w * height / width, 1.2 * w)

    def rc(self) -> dict[str, Any]:
        """Font sizes that suit the figure width (8 pt for a column, 9 pt for a page, 10 pt otherwise)."""
        width = self.width
        base = 10.0 if width is None or width > 8 else 9.0 if width > 4.5 else 8.0
        return {"font.size": base, "axes.titlesize": base, "axes.labelsize": base, "figure.titlesize": base + 1,
                "legend.fontsize": base - 1, "xtick.labelsize": base - 1, "ytick.labelsize": base - 1,
                "legend.title_fontsize": base - 1}


#: always, after the user's style: fonts embedded as TrueType (editable in PDF/PS), SVG text kept as text,
#: fixed SVG ids (reproducible bytes)
FIXED_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "svg.hashsalt": "phasediag"}

_ACTIVE: contextvars.ContextVar[FigureOptions | None] = contextvars.ContextVar("figure_options", default=None)


@contextlib.contextmanager
def figure_options(options: FigureOptions):
    """Draw (and save) figures with `options`: their fonts, the user's style, then FIXED_RC; figure code
    reads them with :func:`current_options`."""
    matplotlib = load_matplotlib()
    token = _ACTIVE.set(options)
    try:
        with matplotlib.rc_context(options.rc()):
            with _style(options.style), matplotlib.rc_context(FIXED_RC):
                yield options
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def _style(style: str | None):
    if style is None:
        yield
        return
    import matplotlib.style

    with matplotlib.style.context(style):
        yield


def current_options(meta: Mapping | None = None) -> FigureOptions:
    """The options figures are being drawn with (inside :func:`figure_options`), else those of `meta`."""
    active = _ACTIVE.get()
    return active if active is not None else FigureOptions.of(meta)


def new_figure(width: float, height: float, *, layout: str | None = "constrained") -> Figure:
    """A Figure of the kind's own `width` x `height` inches (or the size the options choose), at the dpi it is
    saved with (so text extents measured for the layout hold), that pyplot does not know about."""
    load_matplotlib()
    from matplotlib.figure import Figure

    options = current_options()
    return Figure(figsize=options.figsize(width, height), dpi=options.dpi, layout=layout)


# ---------------------------------------------------------------- layout without a layout engine

def colorbar(ax: Axes, mappable, label: str, *, width: float = 0.12, gap: float = 0.08):
    """A colour bar `width` inches wide, `gap` inches right of `ax` (an inset: it follows the axes when
    :func:`fit` moves them); returns the Colorbar."""
    fig = ax.figure
    box = ax.get_position().width * fig.get_size_inches()[0]
    cax = ax.inset_axes([1 + gap / box, 0.0, width / box, 1.0])
    cax._phasediag_inches = (gap, width)  # fit() keeps the bar's size in inches as the axes grow or shrink
    bar = fig.colorbar(mappable, cax=cax)
    bar.set_label(label)
    return bar


def legend(fig: Figure, handles: Sequence, *, below: bool = False, ncols: int | None = None, title=None):
    """A figure legend at the right edge (below=False) or the bottom edge; :func:`fit` keeps the axes clear
    of it, so it never covers data."""
    if not handles:
        return None
    if below:
        ncols = ncols or min(len(handles), 3)
        limit = (fig.get_size_inches()[0] - 0.15) * fig.dpi
        while True:  # fewer columns where the legend would be wider than the figure
            item = fig.legend(handles=list(handles), loc="lower center", bbox_to_anchor=(0.5, 0.0),
                              frameon=False, ncols=ncols, title=title)
            if ncols == 1 or item.get_window_extent(fig._get_renderer()).width <= limit:
                break
            item.remove()
            ncols -= 1
    else:
        item = fig.legend(handles=list(handles), loc="upper right", bbox_to_anchor=(1.0, 1.0), frameon=False,
                          ncols=ncols or 1, title=title)
    item._phasediag_side = "bottom" if below else "right"
    return item


def fit(fig: Figure, *, pad: float = 0.06, gap: float = 0.12) -> None:
    """Place the subplot grid (``fig.subplots``) so that everything around it fits and nothing overlaps: tick
    labels, axis labels, titles, colour bars (:func:`colorbar`), figure legends (:func:`legend`) and the
    figure's title and labels, measured with the renderer at the saving dpi (text metrics are cached, so the
    drawing reuses them). One measurement, no layout engine: several times faster than constrained layout
    on maps with many log ticks. `pad`: inches at the figure edges; `gap`: inches between panels."""
    renderer = fig._get_renderer()  # Agg at the figure dpi: the metrics the PNG drawing uses
    w, h = fig.get_size_inches()
    main = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    if not main:
        return
    rows, cols = main[0].get_subplotspec().get_gridspec().get_geometry()
    edge = _edges(fig, renderer, pad)
    for _ in range(2):  # a second pass: colour bars are placed relative to the axes' new size
        over = {ax: _overhang(ax, renderer) for ax in main}
        spans = {ax: ax.get_subplotspec() for ax in main}
        left = max(o[0] for ax, o in over.items() if spans[ax].colspan.start == 0)
        right = max(o[1] for ax, o in over.items() if spans[ax].colspan.stop == cols)
        bottom = max(o[2] for ax, o in over.items() if spans[ax].rowspan.stop == rows)
        top = max(o[3] for ax, o in over.items() if spans[ax].rowspan.start == 0)
        across = max(o[0] + o[1] for o in over.values()) + gap
        down = max(o[2] + o[3] for o in over.values()) + gap
        l_in, r_in = edge[0] + left, edge[1] + right
        b_in, t_in = edge[2] + bottom, edge[3] + top
        cell_w = max((w - l_in - r_in - (cols - 1) * across) / cols, 0.2)
        cell_h = max((h - b_in - t_in - (rows - 1) * down) / rows, 0.2)
        fig.subplots_adjust(left=l_in / w, right=1 - r_in / w, bottom=b_in / h, top=1 - t_in / h,
                            wspace=across / cell_w if cols > 1 else 0.2, hspace=down / cell_h if rows > 1 else 0.2)
        _resize_colorbars(main)
    _place_figure_texts(fig, renderer, pad, main)


def _edges(fig: Figure, renderer, pad: float) -> list[float]:
    """Inches reserved at the left, right, bottom and top edges: figure legends, sup-labels, the sup-title."""
    dpi = fig.dpi
    left = right = bottom = top = pad
    for item in fig.legends:
        box = item.get_window_extent(renderer)
        if getattr(item, "_phasediag_side", None) == "bottom":
            item.set_bbox_to_anchor((0.5, pad / fig.get_size_inches()[1]), transform=fig.transFigure)
            bottom += box.height / dpi + 0.04
        elif getattr(item, "_phasediag_side", None) == "right":
            item.set_bbox_to_anchor((1 - pad / fig.get_size_inches()[0], 1 - pad / fig.get_size_inches()[1]),
                                    transform=fig.transFigure)
            right += box.width / dpi + 0.08
    for text, side in ((fig._supxlabel, "bottom"), (fig._supylabel, "left"), (fig._suptitle, "top")):
        if text is None or not text.get_text() or not text.get_visible():
            continue
        box = text.get_window_extent(renderer)
        if side == "left":
            left += box.width / dpi + 0.06
        elif side == "bottom":
            bottom += box.height / dpi + 0.06
        else:
            top += box.height / dpi + 0.06
    return [left, right, bottom, top]


def _place_figure_texts(fig: Figure, renderer, pad: float, main) -> None:
    """The sup-title over the grid, the sup-labels centred on it, just outside the axes' decorations."""
    w, h = fig.get_size_inches()
    l, r, b, t = fig.subplotpars.left, fig.subplotpars.right, fig.subplotpars.bottom, fig.subplotpars.top
    if fig._suptitle is not None and fig._suptitle.get_text():
        fig._suptitle.set_position(((l + r) / 2, 1 - pad / h))
        fig._suptitle.set_verticalalignment("top")
    legend_h = sum(item.get_window_extent(renderer).height / fig.dpi + 0.04 for item in fig.legends
                   if getattr(item, "_phasediag_side", None) == "bottom")
    if fig._supxlabel is not None and fig._supxlabel.get_text():
        fig._supxlabel.set_position(((l + r) / 2, (pad + legend_h) / h))
        fig._supxlabel.set_verticalalignment("bottom")
    if fig._supylabel is not None and fig._supylabel.get_text():
        fig._supylabel.set_position((pad / w, (b + t) / 2))
        fig._supylabel.set_horizontalalignment("left")


def _resize_colorbars(main) -> None:
    for ax in main:
        for child in ax.child_axes:
            inches = getattr(child, "_phasediag_inches", None)
            if inches is not None:
                box = ax.get_position().width * ax.figure.get_size_inches()[0]
                child.set_axes_locator(None)
                child._phasediag_bounds = [1 + inches[0] / box, 0.0, inches[1] / box, 1.0]
                from matplotlib.axes._base import _TransformedBoundsLocator

                child.set_axes_locator(_TransformedBoundsLocator(child._phasediag_bounds, ax.transAxes))


def _overhang(ax: Axes, renderer) -> tuple[float, float, float, float]:
    """Inches that `ax`'s decorations (and its colour bars) reach beyond its box: left, right, bottom, top."""
    left = _axis_reach(ax.yaxis, renderer, "left")
    right = _axis_reach(ax.yaxis, renderer, "right")
    bottom = _axis_reach(ax.xaxis, renderer, "bottom")
    top = _axis_reach(ax.xaxis, renderer, "top") + _title_reach(ax, renderer)
    for child in ax.child_axes:
        inches = getattr(child, "_phasediag_inches", None)
        if inches is not None:  # a colour bar on the right
            right = max(right, inches[0] + inches[1] + _axis_reach(child.yaxis, renderer, "right"))
    return left, right, bottom, top


def _title_reach(ax: Axes, renderer) -> float:
    import matplotlib

    dpi = ax.figure.dpi
    heights = [t.get_window_extent(renderer).height / dpi for t in (ax.title, ax._left_title, ax._right_title)
               if t.get_text() and t.get_visible()]
    return max(heights) + matplotlib.rcParams["axes.titlepad"] / 72 if heights else 0.0


def _axis_reach(axis, renderer, side: str) -> float:
    """Inches of the tick marks, tick labels and label of `axis` on `side` of its axes."""
    params = axis.get_tick_params(which="major")
    kind = "x" if axis.axis_name == "x" else "y"
    import matplotlib

    rc = matplotlib.rcParams
    dpi = axis.figure.dpi
    tick_on = params.get(side, side in ("left", "bottom"))
    label_on = params.get(f"label{side}", side in ("left", "bottom"))
    reach = 0.0
    if tick_on and rc[f"{kind}tick.direction"] != "in":
        reach += params.get("length", rc[f"{kind}tick.major.size"]) / 72
    if label_on:
        texts = _tick_texts(axis)
        if texts:
            size = params.get("labelsize", rc[f"{kind}tick.labelsize"])
            boxes = [_text_box(axis.figure, renderer, t, size) for t in texts]
            reach += max(b.width if kind == "y" else b.height for b in boxes) / dpi
            reach += params.get("pad", rc[f"{kind}tick.major.pad"]) / 72
    label = axis.label
    if label.get_text() and label.get_visible() and axis.get_label_position() == side:
        box = label.get_window_extent(renderer)
        reach += (box.width if kind == "y" else box.height) / dpi + axis.labelpad / 72
    return reach


def _tick_texts(axis) -> list[str]:
    """The tick labels `axis` will draw (major, and minor where labelled), from its locator and formatter."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    texts = []
    for locator, formatter in ((axis.get_major_locator(), axis.get_major_formatter()),
                               (axis.get_minor_locator(), axis.get_minor_formatter())):
        values = [v for v in locator() if lo - slack <= v <= hi + slack]
        formatter.set_locs(values)
        texts += [t for t in (formatter(v, i) for i, v in enumerate(values)) if t]
    return texts


def _text_box(fig: Figure, renderer, text: str, size):
    from matplotlib.text import Text

    probe = Text(0, 0, text, fontsize=size)
    probe.set_figure(fig)
    return probe.get_window_extent(renderer)


def keep_inside(fig: Figure, pad: float = 0.06) -> None:
    """After base.fit: the x tick labels at the ends of the bottom row inside the figure (base.fit does not
    measure how far a tick label at an axes' edge reaches past it)."""
    main = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    if not main:
        return
    rows, cols = main[0].get_subplotspec().get_gridspec().get_geometry()
    renderer = fig._get_renderer()
    width = fig.get_size_inches()[0] * fig.dpi
    over_left = over_right = 0.0
    for ax in main:
        span = ax.get_subplotspec()
        if span.rowspan.stop != rows or not (span.colspan.start == 0 or span.colspan.stop == cols):
            continue
        box = ax.xaxis.get_tightbbox(renderer)
        if box is None:
            continue
        if span.colspan.start == 0:
            over_left = max(over_left, pad * fig.dpi - box.x0)
        if span.colspan.stop == cols:
            over_right = max(over_right, box.x1 - (width - pad * fig.dpi))
    if over_left > 0 or over_right > 0:
        fig.subplots_adjust(left=fig.subplotpars.left + max(over_left, 0.0) / width,
                            right=fig.subplotpars.right - max(over_right, 0.0) / width)


def close_columns(fig: Figure, gap: float = 0.12) -> None:
    """After base.fit: the space between columns of the grid from what each column's axes really reach
    (base.fit reserves the widest left reach of any axes between every two columns, e.g. the y labels that
    only the first column has)."""
    main = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    if not main:
        return
    cols = main[0].get_subplotspec().get_gridspec().get_geometry()[1]
    if cols < 2:
        return
    renderer = fig._get_renderer()
    reach_left, reach_right = [0.0] * cols, [0.0] * cols
    for ax in main:  # what reaches into a gap: the y axis' decorations of columns 1..., colour bars (measured
        span = ax.get_subplotspec().colspan  # only where they matter: each measurement lays out tick labels)
        box = ax.get_window_extent(renderer)
        if span.start > 0:
            reach = ax.yaxis.get_tightbbox(renderer)
            if reach is not None:
                reach_left[span.start] = max(reach_left[span.start], (box.x0 - reach.x0) / fig.dpi)
        if span.stop < cols:
            params = ax.yaxis.get_tick_params(which="major")
            reach = [child.get_tightbbox(renderer) for child in ax.child_axes]
            reach += [ax.yaxis.get_tightbbox(renderer)] if params.get("right") or params.get("labelright") else []
            reach = [b for b in reach if b is not None]
            if reach:
                reach_right[span.stop - 1] = max(reach_right[span.stop - 1],
                                                 (max(b.x1 for b in reach) - box.x1) / fig.dpi)
        reach_right[span.stop - 1] = max(reach_right[span.stop - 1], 4 / 72)  # the tick marks
    across = max(reach_right[c] + reach_left[c + 1] for c in range(cols - 1)) + gap
    width = (fig.subplotpars.right - fig.subplotpars.left) * fig.get_size_inches()[0]
    cell = (width - (cols - 1) * across) / cols
    if cell > 0.2:
        fig.subplots_adjust(wspace=across / cell)


def wrapped_title(fig: Figure, text: str, width: float | None = None) -> str:
    """`text` broken between words (never inside $...$) into lines that fit `width` inches (default: the
    figure's width). Widths are estimated from the rendered characters (notation.rendered_length at ~0.6 em
    each, a little wider than DejaVu Sans' average), not measured: measuring parses every candidate line's
    mathtext, which costs more than drawing the figure."""
    import matplotlib
    from matplotlib.font_manager import FontProperties

    from phasediag.plots.notation import rendered_length

    size = FontProperties(size=matplotlib.rcParams["figure.titlesize"]).get_size_in_points()
    limit = (fig.get_size_inches()[0] - 0.3 if width is None else width) * 72 / (0.6 * size)  # characters
    out = []
    for paragraph in text.split("\n"):
        pieces, math, start = [], False, 0
        for k, char in enumerate(paragraph):
            math ^= char == "$"
            if not math and char == " " and k > start:
                pieces.append(paragraph[start:k])
                start = k + 1
        pieces.append(paragraph[start:])
        line = pieces[0]
        for piece in pieces[1:]:
            if rendered_length(f"{line} {piece}") <= limit:
                line = f"{line} {piece}"
            else:
                out.append(line)
                line = piece
        out.append(line)
    return "\n".join(out)



def readable_log_ticks(ax: Axes, numticks: int) -> None:
    """Readable log axes. Over more than 3 decades: powers of ten only (at most `numticks`), no minor ticks
    (each Tick costs ~2 ms and they clutter). Over up to ~2 decades (1.5 on a narrow figure): 1, 2 and 5 x 10^k
    labelled (and 3 x 10^k where those are fewer than three; matplotlib would label two powers of ten, or
    every minor tick); within a decade where those are fewer than two: 2-4 round numbers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator
    import numpy as np

    from phasediag.plots.notation import tick_text

    ax.autoscale_view()
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        lo, hi = min(lo, hi), max(lo, hi)
        if axis.get_scale() != "log" or not lo > 0:
            continue
        if hi / lo > 1e3:
            axis.set_major_locator(LogLocator(base=10, numticks=numticks))
            axis.set_minor_locator(NullLocator())
            continue
        if hi / lo > 10 ** (1.5 if numticks < 7 else 2.2):
            continue
        k = np.floor(np.log10(lo))
        for subs in ((1, 2, 5), (1, 2, 3, 5)):
            ticks = [m * 10.0 ** e for e in np.arange(k, np.floor(np.log10(hi)) + 1) for m in subs]
            ticks = [v for v in ticks if lo <= v <= hi]
            if len(ticks) >= 3:
                break
        if len(ticks) < 2:
            scale = 10.0 ** k
            for step in (1.0, 0.5, 0.2, 0.1, 0.05):
                ticks = [v for v in np.arange(np.floor(lo / scale), hi / scale + step, step) * scale if lo <= v <= hi]
                if len(ticks) >= 2:
                    break
            keep = np.unique(np.linspace(0, len(ticks) - 1, min(len(ticks), 4)).round().astype(int))
            ticks = [ticks[i] for i in keep] if len(ticks) >= 2 else []
        if ticks:
            axis.set_major_locator(FixedLocator([float(f"{v:.3g}") for v in ticks]))
            axis.set_major_formatter(FuncFormatter(tick_text))
            axis.set_minor_locator(NullLocator())


def finish(fig, labels: Sequence[tuple[object, Callable[[int], str]]] = (), *, pad: float = 0.04) -> None:
    """:func:`base.fit`, then what it does not do: an axis label longer than its axes is broken again (between
    its parts, by `make(max_chars)`; each of `labels` is (axis, make)), crowded tick labels of a linear axis
    thinned, a figure legend wider than the figure put in one column, and tick labels reaching past the figure's left or right edge (the last x tick under a legend
    below the axes) brought inside; fit again only when something changed."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator

    from phasediag.plots.notation import rendered_length

    fit(fig)
    renderer = fig._get_renderer()
    changed = False
    titles = [(fig._suptitle, fig.bbox.width - 2 * pad * fig.dpi)] if fig._suptitle is not None else []
    titles += [(ax.title, ax.get_window_extent(renderer).width * 1.1) for ax in fig.axes if ax.title.get_text()]
    for text, room in titles:  # a title wider than its room: two lines, broken between words
        if text.get_text() and "\n" not in text.get_text() and text.get_window_extent(renderer).width > room:
            text.set_text(break_line(text.get_text()))
            changed = True
    for item in list(fig.legends):  # a legend below wider than the figure: again, in one column
        if getattr(item, "_phasediag_side", None) == "bottom" and item._ncols > 1 and \
                item.get_window_extent(renderer).width > fig.bbox.width - 2 * pad * fig.dpi:
            handles = list(item.legend_handles)
            for handle, text in zip(handles, item.get_texts()):
                handle.set_label(text.get_text())
            item.remove()
            legend(fig, handles, below=True, ncols=1)
            changed = True
    for axis, make in labels:
        frame = axis.axes.get_window_extent(renderer)
        box = axis.label.get_window_extent(renderer)
        vertical = axis.axis_name == "y"
        along, room = (box.height, frame.height) if vertical else (box.width, frame.width)
        if along > room and along > 0:
            chars = max(12, int(rendered_length(axis.label.get_text().split("\n")[0]) * room / along * 0.9))
            axis.set_label_text(two_lines(make(chars)))
            changed = True
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_locator(), FixedLocator) and isinstance(axis.get_major_formatter(),
                                                                                 FixedFormatter):
                changed |= _drop_crowded(axis, renderer, 0.25 * fig.dpi * 8 / 72)
                continue
            if axis.get_scale() != "linear" or not axis.get_ticklabels() or not isinstance(
                    axis.get_major_locator(), MaxNLocator):
                continue
            boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            boxes.sort(key=lambda b: b.x0 if axis.axis_name == "x" else b.y0)
            gap = 0.25 * fig.dpi * 8 / 72
            crowded = any((b.x0 - a.x1 if axis.axis_name == "x" else b.y0 - a.y1) < gap
                          for a, b in zip(boxes, boxes[1:]))
            if crowded:
                axis.set_major_locator(MaxNLocator(nbins=max(2, len(boxes) // 2), steps=[1, 2, 2.5, 5, 10]))
                changed = True
    if changed:
        fit(fig)
    _inside(fig, pad)


def _drop_crowded(axis, renderer, gap: float) -> bool:
    """Fixed ticks whose labels would touch: keep 0 and the outermost first, then each other one that stays
    `gap` pixels clear of those kept; whether any was dropped."""
    from matplotlib.ticker import FixedFormatter, FixedLocator

    texts = dict(zip(axis.get_major_locator().locs, axis.get_major_formatter().seq))
    where = {text: loc for loc, text in texts.items()}
    labels = [t for t in axis.get_majorticklabels() if t.get_text()]  # (positions updated for the layout)
    shown = [(where[t.get_text()], t) for t in labels if t.get_text() in where]
    if len(shown) < 3 or len(where) != len(texts):
        return False
    vertical = axis.axis_name == "y"
    boxes = {loc: label.get_window_extent(renderer) for loc, label in shown}
    order = sorted(boxes, key=lambda loc: (loc != 0, -abs(loc)))
    kept: list[float] = []
    for loc in order:
        box = boxes[loc]
        if all((box.y0 - boxes[k].y1 >= gap or boxes[k].y0 - box.y1 >= gap) if vertical else
               (box.x0 - boxes[k].x1 >= gap or boxes[k].x0 - box.x1 >= gap) for k in kept):
            kept.append(loc)
    if len(kept) == len(shown):
        return False
    kept.sort()
    axis.set_major_locator(FixedLocator(kept))
    axis.set_major_formatter(FixedFormatter([texts.get(k, "") for k in kept]))
    return True


def break_line(text: str) -> str:
    """`text` in two lines, broken at the space nearest its middle that is outside $...$ (after '; ' or ': '
    when one is near the middle)."""
    spaces, inside = [], False
    for k, char in enumerate(text):
        if char == "$" and (k == 0 or text[k - 1] != "\\"):
            inside = not inside
        elif char == " " and not inside:
            spaces.append(k)
    if not spaces:
        return text
    middle = len(text) / 2
    cost = {k: abs(k - middle) - (len(text) / 4 if text[k - 1] in ";:" else 0) for k in spaces}
    k = min(spaces, key=cost.get)
    return text[:k] + "\n" + text[k + 1:]


def two_lines(text: str) -> str:
    """A label of more than two lines (each a complete mathtext piece) joined into the two of most equal
    length."""
    from phasediag.plots.notation import rendered_length

    lines = text.split("\n")
    if len(lines) <= 2:
        return text
    size = [rendered_length(line) for line in lines]
    cut = min(range(1, len(lines)), key=lambda i: max(sum(size[:i]) + i - 1, sum(size[i:]) + len(lines) - i - 1))
    return " ".join(lines[:cut]) + "\n" + " ".join(lines[cut:])


def _inside(fig, pad: float) -> None:
    """Shrink the subplot grid horizontally by what the outermost x tick labels reach past the figure edges
    (the only decorations base.fit does not measure sideways); only those labels are measured."""
    renderer = fig._get_renderer()
    width = fig.bbox.width
    margin = pad * fig.dpi
    right = left = 0.0
    for ax in fig.axes:
        if ax.get_subplotspec() is None:
            continue
        labels = [t for t in ax.xaxis.get_ticklabels() if t.get_visible() and t.get_text()]
        if ax.xaxis.get_tick_params().get("labelbottom", True) is False or not labels:
            continue
        ends = sorted(labels, key=lambda t: t.get_position()[0])
        for text in (ends[0], ends[-1]):
            box = text.get_window_extent(renderer)
            right, left = max(right, box.x1 - (width - margin)), max(left, margin - box.x0)
    if right > 0.5 or left > 0.5:
        sp = fig.subplotpars
        fig.subplots_adjust(left=sp.left + max(left, 0) / width, right=sp.right - max(right, 0) / width)


def close_up(main, strip, gap: float = 0.06) -> None:
    """The strip just under the main axes (`gap` inches), the main axes grown down to it: base.fit spaces
    every row by the largest decorations of any row (the strip's tick labels and x label)."""
    fig = main.figure
    height = fig.get_size_inches()[1]
    top, below = main.get_position(), strip.get_position()
    bottom = below.y1 + gap / height
    main.set_position([top.x0, bottom, top.width, top.y1 - bottom])



def save_figure(fig: Figure, path: str | Path | None, *, dpi: int | None = None) -> Path | None:
    """Write `fig` atomically to `path` (format from the suffix, PNG without one); nothing when path is None.
    PDF, SVG and PostScript carry no creation date, SVG ids are fixed, fonts are embedded as TrueType and SVG
    text stays text (FIXED_RC), so the bytes are reproducible and the text editable. `dpi`: PNG resolution
    (default: the options', 150)."""
    if path is None:
        return None
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in WRITABLE_FORMATS:
        raise ValueError(f"{path}: unknown figure format {fmt!r}; allowed: {', '.join(WRITABLE_FORMATS)}")
    matplotlib = load_matplotlib()
    dpi = dpi or current_options().dpi
    extra = {"pil_kwargs": {"compress_level": PNG_COMPRESSION}} if fmt == "png" else {}
    with atomic_path(path) as tmp, matplotlib.rc_context(FIXED_RC), _opaque_postscript(fmt):
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_metadata(fmt), **extra)
    return path


@contextlib.contextmanager
def _opaque_postscript(fmt: str):
    """PostScript has no transparency: matplotlib draws translucent artists (the bands) opaque and logs a
    warning to stderr on every save. That is the expected rendering of EPS/PS, not a problem to report: only
    that one message of the PostScript backend is dropped, and only while such a file is written."""
    if fmt not in ("eps", "ps"):
        yield
        return
    logger = logging.getLogger("matplotlib.backends.backend_ps")
    keep = lambda record: "does not support transparency" not in record.getMessage()  # noqa: E731
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _metadata(fmt: str) -> dict[str, Any]:
    return ({"CreationDate": None} if fmt in ("pdf", "eps", "ps") else {"Date": None} if fmt in ("svg", "svgz")
            else {})


def swatch(colour: str, label: str):
    """A legend handle: a filled square of `colour`."""
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor="0.4", linewidth=0.3, label=label)


def figure_formats(meta: dict, formats: Sequence[str] | None = None) -> list[str]:
    """`formats` (normalized), else the config's plot.formats, else PNG; unknown names are a ValueError."""
    chosen = [f.lower().lstrip(".") for f in (formats or meta.get("config", {}).get("plot", {}).get("formats")
                                              or ["png"])]
    bad = [f for f in chosen if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown figure format(s) {bad}; allowed: {', '.join(FORMATS)}")
    return list(dict.fromkeys(chosen))


def render(stems: Sequence[tuple[str, Callable[[], Figure]]], out_dir: str | Path, formats: Sequence[str], *,
           options: FigureOptions | None = None, workers: int = 1) -> list[Path]:
    """Draw each (file stem, draw) once, with `options`, and save it as `<stem>.<format>` in `out_dir` for
    every format. `workers` > 1: the figures are shared out over that many forked processes (each draws
    whole figures, so the files are the same bytes as drawn in one). Returns the paths written, in order."""
    options = options or FigureOptions()
    paths = [[Path(out_dir) / f"{stem}.{fmt}" for fmt in formats] for stem, _ in stems]
    jobs = list(zip(stems, paths))
    workers = min(workers, len(jobs))
    if workers > 1 and hasattr(os, "fork"):
        _render_forked(jobs, options, workers)
    else:
        _render_here(jobs, options)
    return [p for group in paths for p in group]


def _render_here(jobs, options: FigureOptions) -> None:
    with figure_options(options):
        for (_, draw), paths in jobs:
            fig = draw()
            try:
                for path in paths:
                    save_figure(fig, path)
            finally:
                fig.clear()  # free the artists now (the figure is not registered with pyplot)


def _render_forked(jobs, options: FigureOptions, workers: int) -> None:
    """Figures k, k + workers, ... drawn by forked process k (the drawing functions and their data are
    inherited, nothing is pickled but an error). The first error of any process is raised here."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    procs = []
    for k in range(workers):
        receive, send = context.Pipe(duplex=False)
        proc = context.Process(target=_render_child, args=(jobs[k::workers], options, send), daemon=True)
        proc.start()
        send.close()
        procs.append((proc, receive))
    errors = []
    try:
        for proc, receive in procs:
            try:
                message = receive.recv()
            except EOFError:
                message = RuntimeError(f"a figure process ended without a word (exit status {proc.exitcode})")
            proc.join()
            if message is not None:
                errors.append(message)
    finally:
        for proc, _ in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join()
    if errors:
        raise errors[0]


def _render_child(jobs, options: FigureOptions, send) -> None:
    try:
        _render_here(jobs, options)
        send.send(None)
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            send.send(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            send.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        send.close()
        os._exit(0)  # no atexit handlers or buffered output of the parent's copy
