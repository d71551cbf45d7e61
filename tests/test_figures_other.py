"""Figures of scaling sweeps, of `phasediag validate` and of one trajectory (`solve/simulate --plot`), issue 14:
labels and titles in the notation or as the user sets them (read back from the Figure and from the SVG text),
the one colour of each phase, boundary and zero lines present and drawn to contrast, one colour range for the
exponent maps of a run, 1-D scaling sweeps drawn, markers whole inside the axes, diverged points counted,
off-scale curves cut at the frame, nothing outside the figure and no legend over an axes."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.contour import ContourSet
from matplotlib.lines import Line2D
from matplotlib.text import Text

from phasediag import api
from phasediag.config.sweep import config_from_text
from phasediag.engine import sweep
from phasediag.plots import base, notation, scaling, trajectory, validation

matplotlib.use("Agg")

SCALING = """\
name: lim
mode: scaling
sweep:
  k: {lin: [-1.5, 0.5, 41]}
  s: {lin: [-2, 1, 31]}
model:
  output_scale: {exp: k}
  init_var_u: {exp: s}
  init_var_w: {exp: s}
  lr_u: {exp: -1 - 2 * k - s}
  lr_w: {exp: -1 - 2 * k - s}
"""
MAPS = "plot: {x: k, y: s, maps: [limit_phase, rho_exp, ntk_final_exp, m0_exp, zeta_inf_exp]%s}\n"
RATES = """\
name: rates
mode: scaling
sweep:
  eu: {lin: [-2, 2, 33]}
  ew: {lin: [-2, 2, 33]}
model: {output_scale: {exp: -0.5}, init_var_u: {exp: 0}, init_var_w: {exp: 0}, lr_u: {exp: eu}, lr_w: {exp: ew}}
plot: {x: eu, y: ew, maps: [limit_phase, ntk_final_exp]}
"""
ONE_D = """\
name: line
mode: scaling
sweep:
  k: {lin: [-1.5, 0.5, 41]}
model:
  output_scale: {exp: k}
  init_var_u: {exp: 0}
  init_var_w: {exp: 0}
  lr_u: {exp: -1 - 2 * k}
  lr_w: {exp: -1 - 2 * k}
plot: {x: k, maps: [limit_phase, rho_exp, ntk_final_exp]}
"""
FLOW = """\
name: vflow
sweep:
  d: {log: [2, 300, 6]}
  s: {log: [1e-6, 1, 7]}
model: {width: d, output_scale: 1, lr_u: 1, lr_w: 1, init_var_u: s, init_var_w: s}
data: {input_var: 1, teacher: 1}
"""


def run(text: str):
    return sweep.run(config_from_text(text))


@pytest.fixture(scope="module")
def lim():
    return run(SCALING + MAPS % "")


@pytest.fixture(scope="module")
def labelled():
    return run(SCALING + MAPS % ", labels: {k: 'output exponent q', rho_exp: 'growth of rho'}, "
                                "title: {limit_phase: 'My phase plane', rho_exp: null}")


# ---------------------------------------------------------------- shared checks


def drawn(fig):
    fig.draw_without_rendering()
    return fig._get_renderer()


def _within(extent, box, what) -> None:
    assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1 and extent.y0 >= box.y0 - 1 and \
        extent.y1 <= box.y1 + 1, f"{what} reaches outside the figure: {extent} vs {box}"


def assert_inside_figure(fig) -> None:
    """Every visible text lies inside the figure: the axes with their drawn ticks, labels and colour bars (their
    tight boxes), and every other text (titles, legends, annotations)."""
    renderer = drawn(fig)
    box = fig.bbox
    ticks = set()
    for ax in [a for parent in fig.axes for a in (parent, *parent.child_axes)]:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks |= {id(tick.label1), id(tick.label2)}
        _within(ax.get_tightbbox(renderer), box, f"axes {ax.get_label() or ax}")
    for text in fig.findobj(Text):
        if id(text) in ticks or not text.get_visible() or not text.get_text().strip():
            continue
        _within(text.get_window_extent(renderer), box, repr(text.get_text()))


def assert_legends_clear(fig) -> None:
    """No figure legend over an axes (nor over a colour bar)."""
    renderer = drawn(fig)
    assert fig.legends or not any(ax.get_legend() for ax in fig.axes)
    for item in fig.legends:
        extent = item.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert not extent.overlaps(ax.get_window_extent(renderer)), (item, ax)
    assert not any(ax.get_legend() for ax in fig.axes), "a legend inside an axes"


def plain(text: str) -> str:
    """`text` without its $...$ pieces (math may hold subscripts; the words around it may not be code)."""
    return re.sub(r"\$[^$]*\$", "", text)


def svg_text(fig, tmp_path, name="f.svg") -> str:
    path = tmp_path / name
    with base.figure_options(base.current_options()):
        base.save_figure(fig, path)
    return path.read_text()


def legend_texts(fig) -> list[str]:
    return [t.get_text() for item in fig.legends for t in item.get_texts()]


def legend_colours(fig) -> dict[str, str]:
    """Legend text -> face colour of its handle (patches)."""
    out = {}
    for item in fig.legends:
        for handle, text in zip(item.legend_handles, item.get_texts()):
            if hasattr(handle, "get_facecolor") and not isinstance(handle, Line2D):
                out[text.get_text()] = to_hex(handle.get_facecolor())
    return out


def marker_overhang(ax, collection) -> float:
    """How many pixels the markers of a scatter collection reach beyond the axes box (<= 0: inside)."""
    renderer = ax.figure._get_renderer()
    box = ax.get_window_extent(renderer)
    points = ax.transData.transform(collection.get_offsets())
    sizes = np.broadcast_to(collection.get_sizes(), (len(points),))
    radius = (np.sqrt(sizes) / 2 + np.max(collection.get_linewidths()) / 2) * ax.figure.dpi / 72
    reach = np.concatenate([box.x0 - (points[:, 0] - radius), points[:, 0] + radius - box.x1,
                            box.y0 - (points[:, 1] - radius), points[:, 1] + radius - box.y1])
    return float(reach.max())


# ---------------------------------------------------------------- scaling: the phase diagram


def test_phase_diagram_labels_title_and_colours_come_from_the_notation(lim, tmp_path):
    fig = scaling.limit_phase_diagram(lim, "k", "s")
    ax = fig.axes[0]
    config = lim.meta["config"]
    assert ax.get_xlabel() == notation.axis_label(config, "k")
    assert ax.get_ylabel() == notation.axis_label(config, "s")
    assert r"\kappa \propto d^{k}" in ax.get_xlabel() and "d^(" not in ax.get_xlabel()
    assert ax.get_title() == r"Phase as $d \to \infty$"
    assert ax.get_ylabel().count("\n") <= 1 and notation.mathtext_error(ax.get_ylabel()) is None
    colours = legend_colours(fig)
    for name, colour in base.CATEGORY_COLOURS["limit_phase"].items():
        assert colours[base.pretty(name)] == colour.lower()
    assert "_" not in plain(" ".join(legend_texts(fig)))  # no snake_case names
    svg = svg_text(fig, tmp_path)
    assert "Phase as" in svg and "feature learning" in svg
    assert_inside_figure(fig)
    assert_legends_clear(fig)


def test_user_labels_and_titles_replace_the_defaults(labelled, tmp_path):
    fig = scaling.limit_phase_diagram(labelled, "k", "s")
    assert fig.axes[0].get_xlabel() == "output exponent q"
    assert fig.axes[0].get_title() == "My phase plane"
    svg = svg_text(fig, tmp_path)
    assert "output exponent q" in svg and "My phase plane" in svg
    fig = scaling.exponent_map(labelled, "rho_exp", "k", "s")
    assert fig.axes[0].get_title() == ""  # plot.title {rho_exp: null}: no title
    bar = fig.axes[0].child_axes[0]
    assert bar.get_ylabel() == "growth of rho"
    assert "growth of rho" in svg_text(fig, tmp_path, "e.svg")


def test_boundaries_are_black_with_a_white_halo_on_the_exact_lines(lim):
    fig = scaling.limit_phase_diagram(lim, "k", "s")
    ax = fig.axes[0]
    lines = [c for c in ax.collections if isinstance(c, ContourSet) and c.filled is False]
    assert len(lines) == 2  # the phase boundary (rho) and the divergent-output boundary (m0)
    phase_colours = {c.lower() for c in base.CATEGORY_COLOURS["limit_phase"].values()}
    for cs in lines:
        assert {to_hex(c) for c in cs.get_edgecolor()} == {"#000000"}
        assert not {to_hex(c) for c in cs.get_edgecolor()} & phase_colours
        assert cs.get_path_effects(), "no halo"
    vertices = [np.concatenate([p.vertices for p in cs.get_paths() if len(p.vertices)]) for cs in lines]
    sums = sorted(float(np.mean(v.sum(axis=1))) for v in vertices)
    np.testing.assert_allclose([v.sum(axis=1) for v in vertices][0].std(), 0, atol=1e-9)
    np.testing.assert_allclose(sums, [-1.0, -0.5], atol=1e-9)  # k + s = -1 (rho), k + s = -1/2 (m0)


def test_health_boundary_contrasts_with_the_regions_it_separates():
    fig = scaling.limit_phase_diagram(run(RATES), "eu", "ew")
    ax = fig.axes[0]
    lines = [c for c in ax.collections if isinstance(c, ContourSet) and c.filled is False]
    assert lines, "the boundary max(eu, ew) = 0 is missing"
    kernel = base.CATEGORY_COLOURS["limit_phase"]["kernel"].lower()
    for cs in lines:
        assert {to_hex(c) for c in cs.get_edgecolor()} == {"#000000"} != {kernel}
        assert cs.get_path_effects()


def test_hatches_only_where_the_flag_is_set(lim):
    fig = scaling.limit_phase_diagram(lim, "k", "s")
    ax = fig.axes[0]
    hatched = [c for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    assert len(hatched) == 2  # unstable, divergent output
    k, s = np.meshgrid(lim.coords["k"], lim.coords["s"])
    points = np.column_stack([k.ravel(), s.ravel()])
    for cs, flag in zip(hatched, ("unstable", "divergent_output")):
        assert cs.hatches and cs.hatches[0]
        inside = np.zeros(len(points), bool)
        for path in cs.get_paths():
            if len(path.vertices):
                inside |= path.contains_points(points, radius=-1e-6)
        values = lim.arrays[flag] if lim.axes.index("s") == 0 else lim.arrays[flag].T  # (s, k), as the points
        mask = values.astype(bool).ravel()
        assert inside.any()
        assert not np.any(inside & ~mask), f"{flag}: hatched where the flag is not set"


def test_named_points_are_marked_inside_and_apart(lim):
    fig = scaling.limit_phase_diagram(lim, "k", "s")
    ax = fig.axes[0]
    renderer = drawn(fig)
    names = [t for t in ax.texts if t.get_text()]
    assert {t.get_text() for t in names} >= {"NTK", "mean field", "lazy"}
    boxes = [t.get_window_extent(renderer) for t in names]
    frame = ax.get_window_extent(renderer)
    for a in range(len(boxes)):
        assert frame.x0 <= boxes[a].x0 and boxes[a].x1 <= frame.x1
        for b in range(a):
            assert not boxes[a].overlaps(boxes[b])


# ---------------------------------------------------------------- scaling: exponent maps


def test_exponent_maps_share_one_symmetric_range_with_zero_a_tick(lim):
    norms = []
    for metric in ("rho_exp", "ntk_final_exp", "m0_exp", "zeta_inf_exp"):
        fig = scaling.exponent_map(lim, metric, "k", "s")
        mesh = fig.axes[0].collections[0]
        norms.append((mesh.norm.vmin, mesh.norm.vmax))
        bar = fig.axes[0].child_axes[0]
        drawn(fig)
        assert 0.0 in [float(v) for v in bar.get_yticks()]
        assert "_" not in plain(fig.axes[0].get_title())
        assert fig.axes[0].get_title().startswith("Exponent of $")
    assert len(set(norms)) == 1
    lo, hi = norms[0]
    assert lo == -hi and hi % 0.5 == 0
    largest = max(np.abs(lim.arrays[m]).max() for m in ("rho_exp", "ntk_final_exp", "m0_exp", "zeta_inf_exp"))
    assert largest <= hi < largest + 0.5


@pytest.mark.parametrize("metric", ["ntk_final_exp", "zeta_inf_exp", "rho_exp"])
def test_every_signed_exponent_map_draws_its_zero_line_labelled(lim, metric):
    """ntk_final_exp is 0 on the kernel side (>= 0 elsewhere), zeta_inf_exp 0 on the feature-learning side (<= 0
    elsewhere): the zero line is the edge of the plateau, k + s = -1, straight (not the grid's staircase)."""
    fig = scaling.exponent_map(lim, metric, "k", "s")
    ax = fig.axes[0]
    lines = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(lines) == 1 and list(lines[0].levels) == [0.0]
    vertices = np.concatenate([p.vertices for p in lines[0].get_paths() if len(p.vertices)])
    np.testing.assert_allclose(vertices.sum(axis=1), -1.0, atol=1e-9)
    assert any("= 0" in t for t in legend_texts(fig))
    assert_inside_figure(fig)
    assert_legends_clear(fig)


def test_zero_field_makes_the_plateau_edge_exact():
    k, s = np.meshgrid(np.linspace(-1.5, 0.5, 41), np.linspace(-2, 1, 31))
    g = -(k + s + 1)
    field = scaling.zero_field(np.maximum(0.0, g))
    edge = (np.maximum(0.0, g) == 0) & (field > -0.2)
    np.testing.assert_allclose(field[edge], g[edge], atol=1e-12)
    np.testing.assert_allclose(scaling.zero_field(g), g, atol=1e-12)  # affine through 0: unchanged


# ---------------------------------------------------------------- scaling: one sweep variable


def test_a_one_variable_scaling_sweep_draws_line_plots_over_a_phase_strip(tmp_path):
    result = run(ONE_D)
    stems = dict(scaling.figure_stems(result))
    assert set(stems) == {"line__limit_phase__vs_k", "line__rho_exp__vs_k", "line__ntk_final_exp__vs_k"}
    fig = stems["line__rho_exp__vs_k"]()
    main, strip = fig.axes[:2]
    (curve,) = [line for line in main.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) > 2]
    np.testing.assert_allclose(curve.get_ydata(), result.arrays["rho_exp"])
    colours = {to_hex(c) for c in strip.collections[0].get_facecolors()} if strip.collections[0].get_array() is None \
        else {to_hex(strip.collections[0].cmap(strip.collections[0].norm(v)))
              for v in np.asarray(strip.collections[0].get_array()).ravel()}
    assert colours == {c.lower() for c in base.CATEGORY_COLOURS["limit_phase"].values()}
    assert strip.get_xlabel() == notation.axis_label(result.meta["config"], "k")
    assert main.get_title() == r"Exponent of $\rho$"
    lo, hi = main.get_ylim()
    assert lo == -hi and 0.0 in main.get_yticks()
    assert main.get_window_extent().y0 - strip.get_window_extent().y1 < 0.1 * fig.dpi  # the strip right below
    fig = stems["line__limit_phase__vs_k"]()
    assert len([line for line in fig.axes[0].get_lines() if len(line.get_xdata()) > 2]) == 3
    assert_inside_figure(fig)
    assert_legends_clear(fig)
    assert scaling.render_all(result, tmp_path) and (tmp_path / "line__rho_exp__vs_k.png").is_file()


def test_scaling_figures_fit_a_column(lim):
    """(Each figure at its own size: the tests above.)"""
    with base.figure_options(replace(base.FigureOptions.of(lim.meta), size="column")):
        for stem, draw in scaling.figure_stems(lim):
            fig = draw()
            assert_inside_figure(fig)
            assert_legends_clear(fig)
            for ax in fig.axes:
                assert ax.get_ylabel().count("\n") <= 1 and ax.get_xlabel().count("\n") <= 1, stem
                assert fig.get_figwidth() == base.SIZES["column"]


# ---------------------------------------------------------------- validate


def _row(coords, measured, mapped, *, diverged=False, worst=1e-3, value=0.5):
    order = {"diverged": diverged, "m": None if diverged else 1.0, "ntk": None if diverged else 1.0,
             "alignment": None if diverged else value, "ntk_change": None if diverged else value}
    return {"coords": coords, "measured_label": measured, "map_label": mapped, "predicted_label": measured,
            "measured": dict(order), "predicted": dict(order), "error": {"worst": worst}, "index": 0,
            "width": 2, "steps": 10}


@pytest.fixture(scope="module")
def flow_map():
    config = config_from_text(FLOW)
    return config, sweep.run(replace(config, metrics=None))


def _frame(result):
    """The limits the predicted map alone is drawn with (the cells' outer edges)."""
    from phasediag.plots import maps

    ax = maps.phase_map(result, "d", "s").axes[0]
    return ax.get_xlim(), ax.get_ylim()


def _body(config, result):
    d, s = result.coords["d"], result.coords["s"]
    (d0, d1), (s0, s1) = _frame(result)
    rows = [_row({"d": d1, "s": s0}, "alignment", "alignment"),  # on the map's corners: half outside unless
            _row({"d": d0, "s": s1}, "kernel", "alignment", value=0.01),  # the limits make room
            _row({"d": float(d[2]), "s": float(s[3])}, "rescaling", "kernel", value=-0.2, worst=0.0),
            _row({"d": float(d[3]), "s": float(s[2])}, "diverged", "kernel", diverged=True),
            _row({"d": float(d[1]), "s": float(s[5])}, "diverged", "kernel", diverged=True)]
    return {"name": "vflow", "optimizer": "flow", "settings": {"step": 0.01, "method": "gd"}, "rows": rows}


def test_overlay_markers_at_the_edges_are_whole_inside_the_axes(flow_map, tmp_path):
    config, result = flow_map
    body = _body(config, result)
    fig = validation.overlay_figure(config, body, map_result=result)
    ax = fig.axes[0]
    drawn(fig)
    markers = [c for c in ax.collections if len(c.get_offsets()) and c.get_sizes().size and c.get_zorder() >= 5]
    assert sum(len(c.get_offsets()) for c in markers) == len(body["rows"])
    for c in markers:
        assert marker_overhang(ax, c) <= 0.5
    colours = {to_hex(f) for c in markers for f in c.get_facecolors()}
    phase = base.CATEGORY_COLOURS["phase"]
    assert {phase["alignment"].lower(), phase["kernel"].lower(), phase["rescaling"].lower()} <= colours
    assert base.SPECIAL_COLOURS["inf"] in colours  # diverged: drawn, in the diverged colour
    texts = legend_texts(fig)
    assert "measured = map: 1 of 5" in texts and any(t.startswith("measured $\\neq$ map: 4 of 5") for t in texts)
    assert ax.get_xlabel() == notation.axis_label(result.meta["config"], "d")
    assert ax.get_title().replace("\n", " ") == "Simulated training over the predicted phases"
    for name, colour in legend_colours(fig).items():
        label = name.removesuffix(" (measured)").replace(" ", "_")
        if label in phase:
            assert colour == phase[label].lower()
    assert "Simulated training" in svg_text(fig, tmp_path)
    assert_inside_figure(fig)
    assert_legends_clear(fig)


def test_overlay_takes_the_users_labels_and_title(tmp_path):
    config = config_from_text(FLOW + "plot: {labels: {s: 'init scale q'}, title: {phase_overlay: 'Checked points'}}\n")
    result = sweep.run(replace(config, metrics=None))
    fig = validation.overlay_figure(config, _body(config, result), map_result=result)
    assert fig.axes[0].get_ylabel() == "init scale q"
    assert fig.axes[0].get_title() == "Checked points"
    svg = svg_text(fig, tmp_path)
    assert "init scale q" in svg and "Checked points" in svg


@pytest.mark.parametrize("size", [None, "column"])
def test_parity_counts_diverged_points_and_names_each_panel(flow_map, size, tmp_path):
    config, result = flow_map
    body = _body(config, result)
    with base.figure_options(base.FigureOptions(size=size)):
        fig = validation.parity_figure(body)
        texts = legend_texts(fig)
        assert any(t.startswith("diverged: 2 points") for t in texts), texts
        titles = [ax.get_title() for ax in fig.axes]
        assert len(set(titles)) == 3 and all(titles)
        titles = [t.replace("\n", " ") for t in titles]  # (a narrow panel breaks a long title)
        assert titles[0] == r"NTK change $\Theta_T/\Theta_0 - 1$" and titles[1] == r"final alignment $\zeta_T$"
        assert "O(h)" in titles[2] and "10^{-2}" in titles[2]  # a flow config simulated by GD at step 0.01
        colours = legend_colours(fig)
        phase = base.CATEGORY_COLOURS["phase"]
        for label in ("alignment", "kernel", "rescaling"):
            assert colours[base.pretty(label)] == phase[label].lower()
        assert colours["diverged: 2 points (" + ("bottom only)" if size else "right panel only)")] == \
            base.SPECIAL_COLOURS["inf"]
        drawn(fig)
        for ax in fig.axes:
            for c in ax.collections:
                if len(c.get_offsets()):
                    assert marker_overhang(ax, c) <= 0.5
        assert_inside_figure(fig)
        assert_legends_clear(fig)
        assert "diverged: 2 points" in svg_text(fig, tmp_path)


def test_parity_titles_say_what_the_deviation_is():
    gd = {"optimizer": "gd", "settings": {"method": "gd", "step": 0.01}}
    flow = {"optimizer": "flow", "settings": {"method": "flow", "step": 0.01}}
    assert "rounding" in validation.deviation_title(gd)
    assert "DOPRI5" in validation.deviation_title(flow)


# ---------------------------------------------------------------- one trajectory


@pytest.fixture(scope="module")
def catapult():
    return api.solve(optimizer="gd", lr_u=2.3, lr_w=0.2).to_dict()


def _kernel_lines(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() == "--" and to_hex(line.get_color()) == "#000000"
            and len(line.get_xdata()) > 1]


@pytest.mark.parametrize("size", [None, "column"])
def test_an_off_scale_kernel_prediction_is_cut_at_the_frame_with_a_mark(catapult, size, tmp_path):
    with base.figure_options(base.FigureOptions(size=size)):
        fig = trajectory.trajectory_figure(catapult)
        ax_m, ax_loss = fig.axes[0], fig.axes[3]
        for ax in (ax_m, ax_loss):
            (kernel,) = _kernel_lines(ax)
            lo, hi = sorted(ax.get_ylim())
            y = np.asarray(kernel.get_ydata(), float)
            y = y[np.isfinite(y)]
            slack = 1e-9 * (hi - lo)
            assert np.all((y >= lo - slack) & (y <= hi + slack)), "drawn off the axes"
            marks = [line for line in ax.get_lines() if line.get_marker() in ("^", "v")]
            assert marks, "no mark where the prediction leaves the frame"
            for mark in marks:
                assert float(mark.get_ydata()[0]) in (pytest.approx(lo), pytest.approx(hi))
        # the raw prediction does leave the frame (the test can fail)
        assert max(abs(v) for v in catapult["m_lin"] if v is not None) > 10 * max(abs(v) for v in ax_m.get_ylim())
        assert any("off scale" in t for t in legend_texts(fig))
        assert_inside_figure(fig)
        assert_legends_clear(fig)


def test_trajectory_colour_is_its_phase_colour_and_labels_are_notation(catapult, tmp_path):
    fig = trajectory.trajectory_figure(catapult)
    phase = base.CATEGORY_COLOURS["phase"][catapult["final"]["label"]].lower()
    for ax in fig.axes:
        assert to_hex(ax.get_lines()[0].get_color()) == phase
    assert fig.axes[0].get_ylabel() == r"end-to-end slope $m$"
    assert fig.axes[2].get_xlabel() == "time $t$ (GD steps)"
    title = fig._suptitle.get_text()
    assert title.startswith("GD, $d = 100$: alignment") and "catapult" in title and "_" not in plain(title)
    assert "catapult" in svg_text(fig, tmp_path)
    with base.figure_options(base.FigureOptions(labels={"m": "output slope"}, title="A catapult")):
        fig = trajectory.trajectory_figure(catapult)
        assert fig.axes[0].get_ylabel() == "output slope" and fig._suptitle.get_text() == "A catapult"
        assert "output slope" in svg_text(fig, tmp_path, "user.svg")


def test_clip_to_frame_ends_on_the_edge_where_the_curve_leaves():
    fig = matplotlib.figure.Figure()
    ax = fig.add_subplot()
    ax.set_ylim(-1, 1)
    x, y, marks = trajectory.clip_to_frame(ax, [0, 1, 2, 3, 4], [0.0, 0.5, 3.0, -5.0, 0.2])
    finite = np.isfinite(y)
    assert np.nanmax(np.abs(y[finite])) <= 1.0 + 1e-12
    assert marks == [(pytest.approx(1.2), pytest.approx(1.0), "^")]  # 0.5 -> 3.0 crosses y = 1 at x = 1.2
    assert x[finite].max() == pytest.approx(1.2)  # nothing drawn after the first exit
    x, y, marks = trajectory.clip_to_frame(ax, [0, 1, 2, 3, 4], [0.0, 0.5, 3.0, -5.0, 0.2], resume=True)
    assert [m[2] for m in marks] == ["^", "v"]  # out at the top; across the frame in one step, out at the bottom
    assert np.nanmax(x) == 4 and np.nanmax(np.abs(y)) <= 1.0 + 1e-12


def test_solve_plot_to_eps_prints_nothing(tmp_path):
    target = tmp_path / "x.eps"
    proc = subprocess.run([sys.executable, "-m", "phasediag", "solve", "--optimizer", "gd", "--lr-u", "2.3",
                           "--lr-w", "0.2", "--plot", str(target), "--quiet"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == ""
    assert target.read_bytes()[:4] == b"%!PS"


def test_nothing_in_the_trajectory_figure_is_translucent(catapult):
    fig = trajectory.trajectory_figure(catapult)
    for ax in fig.axes:
        for artist in ax.findobj():
            alpha = artist.get_alpha() if hasattr(artist, "get_alpha") else None
            assert alpha is None or alpha == 1, artist
            colours = [artist.get_color()] if isinstance(artist, Line2D) else []
            assert all(len(matplotlib.colors.to_rgba(c)) == 4 and matplotlib.colors.to_rgba(c)[3] == 1
                       for c in colours), artist
    assert all(not item.get_frame_on() for item in fig.legends)


def test_pdf_and_svg_are_the_same_bytes_when_drawn_twice(lim, flow_map, catapult, tmp_path):
    config, result = flow_map
    body = _body(config, result)
    draws = {("phase", "pdf"): lambda: scaling.limit_phase_diagram(lim, "k", "s"),
             ("overlay", "svg"): lambda: validation.overlay_figure(config, body, map_result=result),
             ("parity", "pdf"): lambda: validation.parity_figure(body),
             ("trajectory", "svg"): lambda: trajectory.trajectory_figure(catapult)}
    for (name, fmt), draw in draws.items():  # (one format each: the test stays quick)
        first, second = tmp_path / f"{name}1.{fmt}", tmp_path / f"{name}2.{fmt}"
        with base.figure_options(base.FigureOptions()):
            base.save_figure(draw(), first)
            base.save_figure(draw(), second)
        assert first.read_bytes() == second.read_bytes(), (name, fmt)
