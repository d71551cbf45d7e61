"""The one plotting base: figure creation, deterministic saving, formats and the colours of every figure kind.

matplotlib is imported lazily (inside the functions) and on the non-interactive Agg backend unless pyplot is
already live (switching the backend of a notebook's pyplot would close its figures), so importing phasediag
stays cheap and batch jobs never need a display. Figures are plain ``matplotlib.figure.Figure`` objects, never
registered with pyplot: nothing to close, no global state. Every figure is written through
:func:`save_figure`: atomically, format from the suffix, and the same figure always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from phasediag.config.reader import FORMATS  # the formats a config's plot.formats may name
from phasediag.results.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "WRITABLE_FORMATS", "DPI", "CATEGORY_COLOURS", "FALLBACK_COLOURS", "CURVE_COLOURS",
           "load_matplotlib", "new_figure", "save_figure", "swatch", "figure_formats", "render"]

#: every format matplotlib's Agg backend writes (a figure file named by the user, e.g. `solve --plot x.eps`)
WRITABLE_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf",
                    "raw", "rgba")
DPI = 150

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
#: curves told apart by colour (Okabe-Ito order)
CURVE_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")


def load_matplotlib():
    """Import matplotlib; select Agg unless pyplot is already live."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    return matplotlib


def new_figure(width: float, height: float, *, layout: str | None = "constrained") -> Figure:
    """A Figure of `width` x `height` inches that pyplot does not know about."""
    load_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def save_figure(fig: Figure, path: str | Path | None, *, dpi: int = DPI) -> Path | None:
    """Write `fig` atomically to `path` (format from the suffix, PNG without one); nothing when path is None.
    PDF, SVG and PostScript carry no creation date and SVG ids are fixed, so the bytes are reproducible."""
    if path is None:
        return None
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in WRITABLE_FORMATS:
        raise ValueError(f"{path}: unknown figure format {fmt!r}; allowed: {', '.join(WRITABLE_FORMATS)}")
    matplotlib = load_matplotlib()
    with atomic_path(path) as tmp, matplotlib.rc_context({"svg.hashsalt": "phasediag"}), _opaque_postscript(fmt):
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_metadata(fmt))
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


def render(stems: Sequence[tuple[str, Callable[[], Figure]]], out_dir: str | Path,
           formats: Sequence[str]) -> list[Path]:
    """Draw each (file stem, draw) once and save it as `<stem>.<format>` in `out_dir` for every format.
    Returns the paths written."""
    written = []
    for stem, draw in stems:
        fig = draw()
        try:
            for fmt in formats:
                written.append(save_figure(fig, Path(out_dir) / f"{stem}.{fmt}"))
        finally:
            fig.clear()  # free the artists now (the figure is not registered with pyplot)
    return written
