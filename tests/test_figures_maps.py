"""Sweep figures ready for a paper (issue 14): labels, titles, legends and colour bars in the model's notation
or the user's plot.labels / plot.title (read back from the Figure and from the SVG text), the one colour of
each phase in maps, strips and trajectories, noise below a metric's resolution masked (no sign hatch on it),
threshold lines and readable colour bars, curves that coincide told apart, nothing drawn outside the figure and
no legend over the axes, at the default size and at a column's width."""

from __future__ import annotations

import re
import textwrap
import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.image import AxesImage
from matplotlib.patches import PathPatch
from matplotlib.text import Text

from phasediag.config.sweep import config_from_text
from phasediag.engine import sweep
from phasediag.plots import base, maps, notation
from phasediag.results.store import Result

matplotlib.use("Agg")

FLOW_2D = """\
name: fm
sweep:
  d: {log: [1, 1e5, 12]}
  s: {log: [1e-6, 1, 10]}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: 1, lr_w: 1, init_var_u: s, init_var_w: s}
plot: {x: d, y: s}
"""
# config 3 in small: one sampled initialization per point; at large s the sign of the NTK change is that of
# m*^2 - m0^2 with m0 random, so it flips from point to point
LR_RATIO = """\
name: lr
sweep:
  r: {log: [1e-8, 1e8, 41]}
  s: {log: [1e-2, 1e2, 41]}
model: {width: 4000, output_scale: 1 / 4000, lr_u: sqrt(r), lr_w: 1 / sqrt(r), init_var_u: s, init_var_w: s}
init: {seeds: 1, seed: 1}
plot: {x: r, y: s, maps: [phase, ntk_change, alignment_gain, alignment_final]}
"""
GD_2D = """\
name: gdm
sweep:
  eta: {log: [0.05, 5, 30]}
  d: {log: [1, 1e4, 8]}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: eta, lr_w: eta, init_var_u: 1, init_var_w: 1}
train: {optimizer: gd, max_steps: 3000}
plot: {x: eta, y: d, maps: [gd_outcome, phase, gd_loss_peak, gd_ntk_final]}
"""
THREE_AXES = """\
name: three
sweep:
  d: {log: [1, 1e5, 7]}
  s: {log: [1e-6, 1, 6]}
  r: {values: [0.01, 1, 100]}
  k: {values: [0.5, 2]}
model: {width: d, output_scale: k / sqrt(d), lr_u: sqrt(r), lr_w: 1 / sqrt(r), init_var_u: s, init_var_w: s}
"""
ONE_AXIS = """\
name: one
sweep: {s: {log: [1e-6, 10, 33]}}
model: {width: 100, init_var_u: s, init_var_w: s}
init: {seeds: 16, seed: 0}
plot: {maps: [disalignment, ntk_change, phase]}
"""
TRAJECTORIES = """\
name: tr
sweep:
  q: {values: [1e-6, 100]}
  rho: {values: [0, 0.5, 1]}
model: {width: 1, init_var_u: q, init_var_w: q}
init: {gram: [q, q, rho * q]}
train: {times: {log: [1e-4, 1e3, 120]}}
"""


def run(text: str) -> Result:
    return sweep.run(config_from_text(textwrap.dedent(text)))


@pytest.fixture(scope="module")
def flow2d() -> Result:
    return run(FLOW_2D)


@pytest.fixture(scope="module")
def lr_ratio() -> Result:
    return run(LR_RATIO)


@pytest.fixture(scope="module")
def gd2d() -> Result:
    return run(GD_2D)


@pytest.fixture(scope="module")
def one_axis() -> Result:
    return run(ONE_AXIS)


@pytest.fixture(scope="module")
def trajectories() -> Result:
    return run(TRAJECTORIES)


def with_plot(result: Result, **plot) -> Result:
    """`result` whose config's plot section has these entries (labels, title, size, ...)."""
    config = {**result.meta["config"], "plot": {**result.meta["config"].get("plot", {}), **plot}}
    return Result(result.coords, result.arrays, {**result.meta, "config": config})


def with_array(result: Result, name: str, values: np.ndarray) -> Result:
    return Result(result.coords, {**result.arrays, name: values}, result.meta)


# ---------------------------------------------------------------- reading figures back


def images(ax) -> list:
    return [a for a in ax.get_children() if isinstance(a, AxesImage) or type(a).__name__ == "QuadMesh"]


def colour_bars(fig) -> list:
    """The colour-bar axes of a figure (insets of its panels)."""
    every = list(fig.axes) + [c for ax in fig.axes for c in ax.child_axes]
    return list({id(a): a for a in every if getattr(a, "_colorbar", None) is not None}.values())


def legend_texts(fig) -> list[str]:
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def legend_handles(fig) -> dict:
    return {t.get_text(): h for legend in fig.legends for t, h in zip(legend.get_texts(), legend.legend_handles)}


def title_of(fig) -> str:
    return fig.get_suptitle() or next((ax.get_title() for ax in fig.axes if ax.get_title()), "")


def svg_text(fig, tmp_path) -> str:
    """Every character of the SVG's <text> elements (svg.fonttype none: text stays text; mathtext is written
    glyph by glyph), without white space: compare with `squeeze(label)`."""
    path = tmp_path / "figure.svg"
    base.save_figure(fig, path)
    return svg_file_text(path)


def svg_file_text(path) -> str:
    root = ET.parse(path).getroot()
    return squeeze("".join("".join(el.itertext()) for el in root.iter() if el.tag.endswith("text")))


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def plain(label: str) -> str:
    """The characters of a label that the SVG shows as they are: its words outside $...$."""
    return re.sub(r"\$[^$]*\$", " ", label)


def shown_texts(fig) -> list[Text]:
    """The texts the figure draws: tick labels of the visible ticks, axis labels, titles, legends, sup-texts."""
    out = []
    for ax in list(fig.axes) + [c for a in fig.axes for c in a.child_axes]:
        for axis in (ax.xaxis, ax.yaxis):  # the ticks drawn (in the view), not stale ones beyond it
            out += [label for tick in axis._update_ticks() for label in (tick.label1, tick.label2)]
        out += [ax.xaxis.label, ax.yaxis.label, ax.title, ax._left_title, ax._right_title]
        out += [t for t in ax.texts]
    out += [t for legend in fig.legends for t in legend.get_texts()]
    out += [t for t in (fig._suptitle, fig._supxlabel, fig._supylabel) if t is not None]
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def assert_laid_out(fig) -> None:
    """Nothing drawn outside the figure; no legend over any axes (colour bars included) or over any text."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = shown_texts(fig)
    assert len(texts) >= 5  # (the check itself sees the figure's texts)
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1 and box.y0 - 1 <= extent.y0 and \
            extent.y1 <= box.y1 + 1, f"{text.get_text()!r} reaches outside the figure: {extent} vs {box}"
    panels = list(fig.axes) + [c for a in fig.axes for c in a.child_axes]
    for legend in fig.legends:
        extent = legend.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1 and box.y0 - 1 <= extent.y0 and \
            extent.y1 <= box.y1 + 1, "the legend reaches outside the figure"
        for ax in panels:
            assert not extent.overlaps(ax.get_window_extent(renderer)), "a legend covers axes"
        own = set(map(id, legend.get_texts()))
        for text in texts:
            if id(text) not in own:
                assert not extent.overlaps(text.get_window_extent(renderer)), f"a legend covers {text.get_text()!r}"


def hatches(ax) -> dict[str, PathPatch]:
    return {p.get_label(): p for p in ax.patches if p.get_hatch()}


def centres(result: Result, x: str, y: str) -> np.ndarray:
    X, Y = np.meshgrid(result.coords[x], result.coords[y])
    return np.stack([X, Y], axis=-1)


def covered(patch: PathPatch, points: np.ndarray) -> np.ndarray:
    return patch.get_path().contains_points(points.reshape(-1, 2)).reshape(points.shape[:-1])


# ---------------------------------------------------------------- labels and titles


def test_map_labels_and_titles_come_from_the_notation(flow2d, tmp_path):
    fig = maps.metric_map(flow2d, "ntk_change", "d", "s")
    ax = fig.axes[0]
    config = flow2d.meta["config"]
    assert ax.get_xlabel() == notation.axis_label(config, "d") == r"width $d$  ($\kappa = 1/\sqrt{d}$)"
    assert ax.get_ylabel() == notation.axis_label(config, "s")
    assert ax.get_title() == r"NTK change $\Theta_T/\Theta_0 - 1$"  # no config name, no snake_case
    (bar,) = colour_bars(fig)
    assert bar.get_ylabel() == r"$\log_{10}|\Theta_T/\Theta_0 - 1|$"  # one label, not the title again
    texts = [ax.get_xlabel(), ax.get_ylabel(), ax.get_title(), bar.get_ylabel(), *legend_texts(fig)]
    for text in texts:
        assert notation.mathtext_error(text) is None
        assert not re.search(r"[a-z]+_[a-z]+", plain(text)), f"snake_case in {text!r}"
    svg = svg_text(fig, tmp_path)
    assert all(squeeze(word) in svg for word in ("width", "NTK change", "threshold", "NTK grows everywhere"))


def test_the_users_labels_and_title_replace_them_on_every_figure_kind(flow2d, one_axis, trajectories, tmp_path):
    labels = {"d": "network width", "s": "init variance", "ntk_change": "relative NTK change"}
    result = with_plot(flow2d, labels=labels, title={"fm__ntk_change__s_vs_d": "Kernel or not", "phase": None})
    fig = maps.metric_map(result, "ntk_change", "d", "s")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("network width", "init variance")
    assert colour_bars(fig)[0].get_ylabel() == "relative NTK change"
    assert ax.get_title() == "Kernel or not"
    svg = svg_text(fig, tmp_path)
    assert all(squeeze(t) in svg for t in ("network width", "init variance", "relative NTK change", "Kernel or not"))
    phase = maps.phase_map(result, "d", "s")
    assert phase.axes[0].get_title() == "" and phase.axes[0].get_xlabel() == "network width"  # title: null
    line = maps.line_plot(with_plot(one_axis, labels={"s": "scale", "disalignment": "turning away"},
                                    title="One title"), "disalignment", "s")
    main, strip = line.axes
    assert (main.get_ylabel(), strip.get_xlabel(), main.get_title()) == ("turning away", "scale", "One title")
    assert squeeze("turning away") in svg_text(line, tmp_path)
    traj = maps.trajectory_plot(with_plot(trajectories, labels={"traj_ntk": "kernel", "time": "steps"},
                                          title={"trajectories": "Paths"}))
    assert traj.get_suptitle() == "Paths" and traj.axes[1].get_ylabel() == "kernel"
    assert traj.axes[2].get_xlabel() == "steps"


def test_titles_say_the_horizon_the_seed_reduction_and_the_held_values(one_axis):
    seeds = one_axis.meta["config"]["init"]["seeds"]
    assert maps.line_plot(one_axis, "ntk_change", "s").axes[0].get_title() == \
        rf"NTK change $\Theta_T/\Theta_0 - 1$, median over {seeds} seeds"
    fractions = maps.line_plot(one_axis, "phase", "s").axes[0].get_title()
    assert fractions == f"Fraction of the {seeds} seeds in each phase"  # stacked fractions, not "most frequent"
    result = run(THREE_AXES.replace("sweep:", "train: {horizon: 30}\nsweep:"))
    fig = maps.phase_map(result, "d", "s", fixed={"r": 100, "k": 2})
    assert fig.axes[0].get_title() == "Phase at $T = 30$, $r = 100$, $k = 2$"
    grid = maps.metric_map(result, "alignment_final", "d", "s")
    assert {ax.get_title() for ax in grid.axes if ax.get_title()} >= {"$r = 10^{-2}$, $k = 0.5$", "$r = 100$, $k = 2$"}
    assert grid._supxlabel.get_text() == notation.axis_label(result.meta["config"], "d")


# ---------------------------------------------------------------- one colour per phase


def test_phase_colours_are_the_bases_in_maps_strips_and_trajectories(flow2d, one_axis, trajectories):
    colours = base.CATEGORY_COLOURS["phase"]
    legend = flow2d.meta["legends"]["phase"]
    fig = maps.phase_map(flow2d, "d", "s")
    (layer,) = images(fig.axes[0])
    codes = np.asarray(layer.get_array())
    for code in np.unique(codes):
        assert to_hex(layer.to_rgba(code)) == colours[legend[code]].lower()
    handles = legend_handles(fig)
    assert handles and {to_hex(h.get_facecolor()) for h in handles.values()} == {
        colours[legend[c]].lower() for c in np.unique(codes)}
    for text, handle in handles.items():
        assert to_hex(handle.get_facecolor()) == colours[text.replace(" ", "_")].lower()
    line = maps.line_plot(one_axis, "ntk_change", "s")
    strip = line.axes[1]
    strip_colours = {to_hex(p.get_facecolor()) for p in strip.patches}
    assert strip_colours and strip_colours <= {c.lower() for c in colours.values()}
    main = line.axes[0]
    assert {to_hex(ln.get_color()) for ln in main.get_lines() if ln.get_label().startswith("median")} == {"#000000"}
    traj = maps.trajectory_plot(trajectories)
    names = trajectories.meta["legends"]["phase"]
    phase = trajectories.arrays["phase"]
    curves = [ln for ln in traj.axes[3].get_lines() if not ln.get_label().startswith("_")]
    points = [(i, j) for i in range(phase.shape[0]) for j in range(phase.shape[1])]
    assert len(curves) == len(points)
    for (i, j), curve in zip(points, curves):
        assert to_hex(curve.get_color()) == colours[names[phase[i, j]]].lower()
        assert curve.get_label().endswith(": " + names[phase[i, j]].replace("_", " "))


def test_gd_outcome_colours_and_legible_hatches(gd2d):
    fig = maps.phase_map(gd2d, "eta", "d", metric="gd_outcome")
    (layer,) = images(fig.axes[0])
    legend = gd2d.meta["legends"]["gd_outcome"]
    for code in np.unique(np.asarray(layer.get_array())):
        assert to_hex(layer.to_rgba(code)) == base.CATEGORY_COLOURS["gd_outcome"][legend[code]].lower()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(ticks) >= 5 and {"0.1", "1"} <= set(ticks)  # 0.05 .. 5: more than two labels
    phase = maps.phase_map(gd2d, "eta", "d")
    patches = [p for p in phase.axes[0].patches if p.get_hatch()]
    by_label: dict[str, list] = {}
    for patch in patches:
        by_label.setdefault(patch.get_label(), []).append(patch)
    assert "GD diverges" in by_label
    for pair in by_label.values():  # a black hatch on a wider white one: legible on every phase colour
        colours = sorted(to_hex(p.get_edgecolor()) for p in pair)
        assert colours == ["#1a1a1a", "#ffffff"]
        assert len({p.get_hatch() for p in pair}) == 1
        black, white = sorted(pair, key=lambda p: to_hex(p.get_edgecolor()))
        assert white.get_hatch_linewidth() > black.get_hatch_linewidth()


# ---------------------------------------------------------------- noise, signs, thresholds


def test_values_below_the_resolution_are_no_change_without_a_sign_hatch(flow2d):
    level = maps.resolution(flow2d, "ntk_change")
    assert 0 < level < 1e-12
    change = np.array(flow2d.arrays["ntk_change"])
    change[:4, :3] = -level / 10  # rounding noise of both signs, in a block that would be a decided region
    change[4:8, :3] = level / 10
    change[6:, 6:] = -np.abs(change[6:, 6:])  # a true region where the NTK shrinks
    fig = maps.metric_map(with_array(flow2d, "ntk_change", change), "ntk_change", "d", "s")
    ax = fig.axes[0]
    values, special = images(ax)
    noise = np.abs(change.T) < level
    assert np.array_equal(np.ma.getmaskarray(np.ma.asarray(values.get_array())), noise)
    drawn = ~np.ma.getmaskarray(np.ma.asarray(special.get_array()))
    assert np.array_equal(drawn, noise)
    assert {to_hex(special.to_rgba(v)) for v in np.unique(np.asarray(special.get_array())[drawn])} == {
        base.SPECIAL_COLOURS["no_change"]}
    (patch,) = hatches(ax).values()
    hatched = covered(patch, centres(flow2d, "d", "s"))
    assert not (hatched & noise).any() and hatched.any()  # no sign on noise; the true region hatched
    assert np.array_equal(hatched, (change.T < 0) & ~noise)
    text = f"no change ($|\\Theta_T/\\Theta_0 - 1| < {notation.number_tex(level, 2)}$, rounding)"
    assert text in legend_texts(fig)


def test_a_sign_that_flips_from_point_to_point_is_counted_not_hatched(lr_ratio):
    fig = maps.metric_map(lr_ratio, "ntk_change", "r", "s")
    negative = lr_ratio.arrays["ntk_change"][..., 0] < 0
    assert negative.sum() > 20  # m0 sampled: |m0| > |m*| at scattered points of large s
    assert not hatches(fig.axes[0])
    scattered = [t for t in legend_texts(fig) if "scattered" in t]
    assert scattered == [rf"$\Theta_T < \Theta_0$ at {negative.sum()} scattered points (not hatched)"]


def test_alignment_maps_share_one_range_with_zero_ticked_and_gains_draw_noise_as_zero(lr_ratio, flow2d):
    for result, (x, y) in ((lr_ratio, ("r", "s")), (flow2d, ("d", "s"))):
        fig = maps.metric_map(result, "alignment_final", x, y)
        (bar,) = colour_bars(fig)
        assert (images(fig.axes[0])[0].norm.vmin, images(fig.axes[0])[0].norm.vmax) == (-1.0, 1.0)
        assert [t.get_text() for t in bar.get_yticklabels()] == ["\u22121", "\u22120.5", "0", "0.5", "1"]
    gain = lr_ratio.arrays["alignment_gain"][..., 0]
    level = maps.resolution(lr_ratio, "alignment_gain")
    assert (gain < level).any()
    fig = maps.metric_map(lr_ratio, "alignment_gain", "r", "s")
    (layer,) = images(fig.axes[0])
    np.testing.assert_array_equal(np.asarray(layer.get_array())[gain.T < level], 0.0)  # the 0 of the scale
    assert (layer.norm.vmin, layer.norm.vmax) == (0.0, 1.0)
    assert any("drawn as 0" in t for t in legend_texts(fig))


def test_every_promised_line_is_drawn_in_black_on_white_and_marked_on_the_colour_bar(flow2d):
    fig = maps.metric_map(flow2d, "alignment_gain", "d", "s")
    (line,) = [c for c in fig.axes[0].collections if c.get_label().endswith("(threshold)")]
    assert to_hex(line.get_colors()[0]) == "#000000" and line.get_path_effects()
    (bar,) = colour_bars(fig)
    marks = [ln for ln in bar.get_lines() if to_hex(ln.get_color()) == "#000000"]
    assert marks and marks[0].get_ydata()[0] == flow2d.meta["thresholds"]["alignment_threshold"]
    exponent = np.log10(flow2d.coords["d"])[:, None] / 5 + np.log10(flow2d.coords["s"])[None, :] / 6 + 0.5
    meta = {**flow2d.meta, "metrics": {**flow2d.meta["metrics"], "rho_exp": {
        "label": r"exponent of $\rho$", "kind": "continuous", "log": False, "threshold": None}}}
    fig = maps.metric_map(Result(flow2d.coords, {**flow2d.arrays, "rho_exp": exponent}, meta), "rho_exp", "d", "s")
    assert r"$\rho = 0$" in legend_texts(fig)  # the zero line of an exponent, named in its notation
    norm = images(fig.axes[0])[0].norm
    assert norm.vmin == -norm.vmax and norm.vmax % 0.5 == 0  # shared steps of 0.5: maps of one kind compare
    assert "0" in [t.get_text() for t in colour_bars(fig)[0].get_yticklabels()]


def test_gd_quantities_count_the_diverged_points_and_have_one_colour_bar_label(gd2d):
    fig = maps.metric_map(gd2d, "gd_ntk_final", "eta", "d")
    diverges = gd2d.arrays["gd_outcome"] == gd2d.meta["legends"]["gd_outcome"].index("diverges")
    assert f"GD diverges: {diverges.sum()} points (not shown)" in legend_texts(fig)
    (bar,) = colour_bars(fig)
    labels = [t for t in bar.texts + [bar.title, bar.yaxis.label, bar.xaxis.label, bar.yaxis.offsetText]
              if t.get_text()]
    assert len(labels) == 1


# ---------------------------------------------------------------- 1-D sweeps


def test_a_median_that_jumps_between_zero_and_a_value_becomes_the_mean_with_every_seed_shown(one_axis):
    values = one_axis.arrays["disalignment"]
    level = maps.resolution(one_axis, "disalignment")
    share = np.mean(values < level, axis=1)
    assert np.mean((share >= 0.25) & (share <= 0.75)) > 0.5  # half the seeds never disalign
    fig = maps.line_plot(one_axis, "disalignment", "s")
    main = fig.axes[0]
    (mean,) = [ln for ln in main.get_lines() if ln.get_label().startswith("mean over 16 seeds")]
    np.testing.assert_allclose(mean.get_ydata(), np.where(values < level, 0.0, values).mean(axis=1))
    assert "mean over 16 seeds" in main.get_title()
    (dots,) = [ln for ln in main.get_lines() if ln.get_label() == "each seed"]
    assert len(dots.get_ydata()) == values.size
    median = maps.line_plot(one_axis, "ntk_change", "s").axes[0]
    assert [ln for ln in median.get_lines() if ln.get_label() == "median over 16 seeds"]


# ---------------------------------------------------------------- trajectories


def test_trajectories_that_coincide_are_told_apart(trajectories):
    fig = maps.trajectory_plot(trajectories)
    for ax in fig.axes[:4]:
        curves = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert len({ln.get_marker() for ln in curves}) == len(curves)  # one marker each
        starts = [ln.get_markevery()[0] for ln in curves]
        assert len(set(starts)) == len(curves)  # at spread positions
        by_colour: dict[str, list] = {}
        for ln in curves:
            by_colour.setdefault(to_hex(ln.get_color()), []).append(ln)
        assert len(by_colour) < len(curves)  # (phases that several curves share)
        for group in by_colour.values():  # one phase: one colour, told apart by line style
            assert len({ln.get_linestyle() for ln in group}) == len(group)
        widths = [ln.get_linewidth() for ln in curves]
        assert widths == sorted(widths, reverse=True)  # later curves thinner, drawn over the earlier
    m_panel = fig.axes[0]
    curves = [ln for ln in m_panel.get_lines() if not ln.get_label().startswith("_")]
    kernel = [ln for ln in m_panel.get_lines() if ln.get_label() == "_kernel"]
    for curve, prediction in zip(curves, kernel):
        assert to_hex(prediction.get_color()) == to_hex(curve.get_color())
        assert prediction.get_linewidth() < curve.get_linewidth()
    assert sum("kernel (frozen-NTK) prediction" in t for t in legend_texts(fig)) == 1
    assert len(legend_texts(fig)) == len(curves) + 1


# ---------------------------------------------------------------- layout, sizes


@pytest.mark.parametrize("size", [None, "column"])
def test_nothing_outside_the_figure_and_no_legend_over_the_data(size, flow2d, gd2d, one_axis, trajectories):
    def sized(result):
        return with_plot(result, size=size) if size else result

    three = run(THREE_AXES)
    figures = [maps.phase_map(sized(flow2d), "d", "s"), maps.metric_map(sized(flow2d), "ntk_change", "d", "s"),
               maps.phase_map(sized(gd2d), "eta", "d"), maps.metric_map(sized(gd2d), "gd_ntk_final", "eta", "d"),
               maps.line_plot(sized(one_axis), "disalignment", "s"), maps.line_plot(sized(one_axis), "phase", "s"),
               maps.trajectory_plot(sized(trajectories)), maps.metric_map(sized(three), "tau", "d", "s")]
    for fig in figures:
        if size == "column":
            assert fig.get_size_inches()[0] == pytest.approx(base.SIZES["column"])
            assert all(getattr(item, "_phasediag_side", None) == "bottom" for item in fig.legends)
        assert_laid_out(fig)


def test_small_multiples_share_one_range_and_one_colour_bar_over_all_rows():
    result = run(THREE_AXES)
    fig = maps.metric_map(result, "tau", "d", "s")
    drawn = [ax for ax in fig.axes if images(ax)]
    assert len(drawn) == 6
    assert len({(images(ax)[0].norm.vmin, images(ax)[0].norm.vmax) for ax in drawn}) == 1
    (bar,) = colour_bars(fig)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    extent = bar.get_window_extent(renderer)
    lowest = min(ax.get_window_extent(renderer).y0 for ax in drawn)
    highest = max(ax.get_window_extent(renderer).y1 for ax in drawn)
    assert extent.y0 == pytest.approx(lowest, abs=1) and extent.y1 == pytest.approx(highest, abs=1)


def test_render_all_draws_with_the_runs_options(flow2d, tmp_path):
    result = with_plot(flow2d, maps=["phase"], size="column", labels={"d": "width of the layer"})
    (path,) = maps.render_all(result, tmp_path, ["svg"])
    assert squeeze("width of the layer") in svg_file_text(path)
    width = ET.parse(path).getroot().get("width")
    assert float(width.rstrip("pt")) == pytest.approx(base.SIZES["column"] * 72)
