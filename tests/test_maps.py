"""Figures of sweep results under Agg: every kind of sweep draws, and colours, hatches, contours, scales and
labels mean what they say (read back from the artists and from rendered pixels)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.figure
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, to_hex
from matplotlib.collections import LineCollection
from matplotlib.image import AxesImage
from matplotlib.patches import PathPatch

from phasediag.plots import maps
from phasediag.engine import sweep
from phasediag.config.sweep import config_from_text
from phasediag.results.store import Result

matplotlib.use("Agg")

FLOW_2D = """\
name: m
description: width x init
sweep:
  d: {log: [1, 1e5, 12]}
  s: {log: [1e-6, 1, 10]}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: 1, lr_w: 1, init_var_u: s, init_var_w: s}
"""
GD_2D = """\
name: gd
sweep:
  eta: {log: [0.05, 8, 24]}
  d: {log: [1, 1e4, 8]}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: eta, lr_w: eta, init_var_u: 1, init_var_w: 1}
train: {optimizer: gd, max_steps: 3000}
plot: {x: eta, y: d, maps: [gd_outcome, phase, gd_loss_peak]}
"""
THREE_AXES = """\
name: three
sweep:
  d: {log: [1, 1e5, 9]}
  s: {log: [1e-6, 1, 8]}
  r: {values: [0.01, 1, 100]}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: sqrt(r), lr_w: 1 / sqrt(r), init_var_u: s, init_var_w: s}
"""
FOUR_AXES = THREE_AXES.replace("name: three", "name: four").replace(
    "  r: {values", "  k: {lin: [0.5, 2, 6]}\n  r: {values").replace("1 / sqrt(d)", "k / sqrt(d)")
SEEDS_2D = """\
name: seeds
sweep:
  d: {log: [1, 1e4, 8]}
  s: {log: [1e-4, 10, 9]}
model: {width: d, output_scale: 1 / sqrt(d), init_var_u: s, init_var_w: s}
data: {teacher: 0.1}
init: {seeds: 3, seed: 5}
"""
# explicit Grams U = W = q, V = rho q; rho = -1 with m* > 0 is the saddle; finite horizon: not converged
SADDLE = """\
name: saddle
sweep:
  q: {log: [1e-6, 1e2, 9]}
  rho: {lin: [-1, 1, 5]}
model: {width: 1, init_var_u: q, init_var_w: q}
init: {gram: [q, q, rho * q]}
train: {horizon: 30}
plot: {x: q, y: rho, maps: [phase, t_learn, ntk_change]}
"""
ONE_AXIS_SEEDS = """\
name: one
sweep: {s: {log: [1e-6, 10, 25]}}
model: {width: 100, init_var_u: s, init_var_w: s}
init: {seeds: 5}
plot: {maps: [phase, ntk_change, alignment_final, t_learn]}
"""
TRAJECTORIES = """\
name: tr
sweep:
  q: {values: [1e-6, 100]}
  rho: {values: [0, 0.5, 1]}
model: {width: 1, init_var_u: q, init_var_w: q}
init: {gram: [q, q, rho * q]}
train: {times: {log: [1e-3, 1e3, 60]}}
"""
GD_TRAJECTORIES = """\
name: gdtr
sweep: {eta: {log: [0.3, 3, 5]}}
model: {width: 100, output_scale: 0.1, lr_u: eta, lr_w: eta, init_var_u: 1, init_var_w: 1}
train: {optimizer: gd, times: {lin: [0, 100, 101]}}
"""


def run(text: str) -> Result:
    return sweep.run(config_from_text(textwrap.dedent(text)))


@pytest.fixture(scope="module")
def flow2d() -> Result:
    return run(FLOW_2D)


@pytest.fixture(scope="module")
def gd2d() -> Result:
    return run(GD_2D)


@pytest.fixture(scope="module")
def saddle() -> Result:
    return run(SADDLE)


@pytest.fixture(scope="module")
def seeds2d() -> Result:
    return run(SEEDS_2D)


@pytest.fixture(scope="module")
def three() -> Result:
    return run(THREE_AXES)


# ---------- helpers


def images(ax) -> list:
    """Cell layers of an axes (images; QuadMeshes for non-uniform grids), bottom first."""
    return [a for a in ax.get_children() if isinstance(a, AxesImage) or type(a).__name__ == "QuadMesh"]


def panels(fig) -> list:
    """The map panels of a figure (not its colour bar)."""
    return [ax for ax in fig.axes if images(ax) and getattr(ax, "_colorbar", None) is None]


def cells(layer) -> np.ma.MaskedArray:
    return np.ma.asarray(layer.get_array())


def hatched(ax) -> dict[str, PathPatch]:
    return {p.get_label(): p for p in ax.patches if p.get_hatch()}


def centres(result: Result, x: str, y: str) -> np.ndarray:
    """(ny, nx, 2) cell centres in data coordinates."""
    X, Y = np.meshgrid(result.coords[x], result.coords[y])
    return np.stack([X, Y], axis=-1)


def covered(patch: PathPatch, points: np.ndarray) -> np.ndarray:
    """Which points (..., 2) lie inside a hatched region (its path is in data coordinates)."""
    return patch.get_path().contains_points(points.reshape(-1, 2)).reshape(points.shape[:-1])


def pixel(fig, ax, x: float, y: float) -> str:
    """Rendered colour (hex) at the data point (x, y) of `ax`."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    px, py = ax.transData.transform((x, y))
    return to_hex(rgba[int(rgba.shape[0] - py), int(px), :3] / 255)


def threshold_lines(ax) -> list[LineCollection]:
    return [c for c in ax.collections if isinstance(c, LineCollection)]


def on_level(result: Result, x: str, y: str, field: np.ndarray, line: LineCollection, level: float) -> None:
    """Every vertex of the line lies where the field (ny, nx), interpolated linearly between cell centres in
    log coordinates, equals the level."""
    from scipy.interpolate import RegularGridInterpolator

    interpolate = RegularGridInterpolator((np.log10(result.coords[y]), np.log10(result.coords[x])), field)
    for segment in line.get_segments():
        np.testing.assert_allclose(interpolate(np.log10(segment[:, ::-1])), level, atol=1e-9)


def legend_texts(fig) -> set[str]:
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    return {t.get_text() for legend in legends for t in legend.get_texts()}


def mode_over_seeds(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(-1, values.shape[-1])
    return np.array([np.bincount(row).argmax() for row in flat]).reshape(values.shape[:-1])


def only(result: Result, *figures: str) -> Result:
    """`result` whose config asks for these maps only (fewer figures to draw)."""
    config = {**result.meta["config"], "plot": {**result.meta["config"]["plot"], "maps": list(figures)}}
    return Result(result.coords, result.arrays, {**result.meta, "config": config})


def with_metric(result: Result, name: str, values: np.ndarray, kind: str, label: str,
                legend: list[str] | None = None) -> Result:
    """`result` with one more metric (as a newer registry, e.g. the exponents of a width-scaling sweep, adds)."""
    meta = {**result.meta, "metrics": {**result.meta["metrics"],
                                       name: {"label": label, "kind": kind, "log": False, "threshold": None}}}
    if legend is not None:
        meta["legends"] = {**meta["legends"], name: legend}
    return Result(result.coords, {**result.arrays, name: values}, meta)


# ---------- import, files


def test_import_does_not_load_matplotlib():
    code = "import sys, phasediag.plots.maps; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_render_all_writes_named_png_pdf_svg_atomically(flow2d, tmp_path):
    paths = maps.render_all(only(flow2d, "phase", "ntk_change"), tmp_path, ["png", "pdf", "svg"])
    stems = {"m__phase__s_vs_d", "m__ntk_change__s_vs_d"}
    assert {p.name for p in paths} == {f"{s}.{f}" for s in stems for f in ("png", "pdf", "svg")}
    signature = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}
    for p in paths:
        assert p.read_bytes().startswith(signature[p.suffix])
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # nothing under a temporary name


def test_rendering_the_same_result_twice_gives_the_same_bytes(saddle, tmp_path):
    for fmt in ("png", "pdf", "svg"):
        first, second = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        maps.phase_map(saddle, "q", "rho", path=first)
        maps.phase_map(saddle, "q", "rho", path=second)
        assert first.read_bytes() == second.read_bytes()


def test_render_all_uses_the_configs_formats_and_creates_no_pyplot_figures(saddle, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    paths = maps.render_all(saddle, tmp_path)
    assert {p.name for p in paths} == {"saddle__phase__rho_vs_q.png", "saddle__t_learn__rho_vs_q.png",
                                       "saddle__ntk_change__rho_vs_q.png"}
    assert plt.get_fignums() == before


def test_file_names_say_what_is_inside(three):
    assert [s for s, _ in maps.figure_stems(three)] == [
        f"three__{m}__s_vs_d__by_r" for m in ("phase", "ntk_change", "alignment_final", "tau")]
    assert [s for s, _ in maps.figure_stems(run(ONE_AXIS_SEEDS))] == [
        f"one__{m}__vs_s" for m in ("phase", "ntk_change", "alignment_final", "t_learn")]
    assert [s for s, _ in maps.figure_stems(run(TRAJECTORIES))][-1] == "tr__trajectories"


@pytest.mark.parametrize("text,figures,expected", [
    (THREE_AXES, ["phase"], ["three__phase__s_vs_d__by_r.png"]),
    (ONE_AXIS_SEEDS, ["phase", "t_learn"], ["one__phase__vs_s.png", "one__t_learn__vs_s.png"]),
    (TRAJECTORIES, ["alignment_final"], ["tr__alignment_final__rho_vs_q.png", "tr__trajectories.png"]),
    (GD_TRAJECTORIES, ["gd_outcome"], ["gdtr__gd_outcome__vs_eta.png", "gdtr__trajectories.png"]),
])
def test_every_kind_of_sweep_renders_its_files(tmp_path, text, figures, expected):
    paths = maps.render_all(only(run(text), *figures), tmp_path)
    assert [p.name for p in paths] == expected
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in paths)


def test_render_all_skips_metrics_the_result_lacks_and_rejects_unknown_formats(flow2d, tmp_path):
    result = only(flow2d, "gd_outcome", "phase")
    assert [p.name for p in maps.render_all(result, tmp_path)] == ["m__phase__s_vs_d.png"]
    with pytest.raises(ValueError, match="unknown figure format"):
        maps.render_all(result, tmp_path / "x", ["jpg"])
    assert not (tmp_path / "x").exists()


def test_saving_writes_only_when_given_a_path(flow2d, tmp_path):
    maps.phase_map(flow2d, "d", "s")
    assert list(tmp_path.iterdir()) == []
    maps.metric_map(flow2d, "tau", "d", "s", path=tmp_path / "tau.svg")
    assert [p.name for p in tmp_path.iterdir()] == ["tau.svg"]


# ---------- phase maps


def test_phase_map_cells_are_the_codes_in_their_labels_colours(flow2d):
    fig = maps.phase_map(flow2d, "d", "s")
    ax = fig.axes[0]
    (layer,) = images(ax)
    codes = cells(layer)
    assert np.array_equal(codes, flow2d.arrays["phase"].T)  # rows: s, columns: d
    legend = flow2d.meta["legends"]["phase"]
    for code, rgba in zip(codes.ravel(), layer.to_rgba(codes.ravel())):
        assert to_hex(rgba) == maps.CATEGORY_COLOURS["phase"][legend[code]].lower()


def test_phase_map_renders_each_label_in_its_colour(flow2d):
    fig = maps.phase_map(flow2d, "d", "s")
    ax, legend = fig.axes[0], flow2d.meta["legends"]["phase"]
    phase = flow2d.arrays["phase"]
    for code in np.unique(phase):
        i, j = np.argwhere(phase == code)[0]
        colour = pixel(fig, ax, flow2d.coords["d"][i], flow2d.coords["s"][j])
        assert colour == maps.CATEGORY_COLOURS["phase"][legend[code]].lower()


def test_phase_legend_names_the_labels_present(flow2d):
    fig = maps.phase_map(flow2d, "d", "s")
    legend = flow2d.meta["legends"]["phase"]
    assert legend_texts(fig) == {legend[c].replace("_", " ") for c in np.unique(flow2d.arrays["phase"])}


def test_gd_outcomes_are_hatched_exactly_where_they_occur(gd2d):
    fig = maps.phase_map(gd2d, "eta", "d")
    ax = fig.axes[0]
    outcome, legend = gd2d.arrays["gd_outcome"].T, gd2d.meta["legends"]["gd_outcome"]
    present = {legend[c] for c in np.unique(outcome)} - {"converges"}
    assert {"catapult", "diverges"} <= present
    patches = hatched(ax)
    assert set(patches) == {f"GD {name}" for name in present}
    for name in present:
        patch = patches[f"GD {name}"]
        assert patch.get_hatch() == maps.GD_HATCHES[name]
        assert np.array_equal(covered(patch, centres(gd2d, "eta", "d")), outcome == legend.index(name))
    assert {f"GD {name}" for name in present} <= legend_texts(fig)
    assert len({p.get_hatch() for p in patches.values()}) == len(patches)


def test_gd_outcome_map_colours_outcomes_without_hatching(gd2d):
    fig = maps.phase_map(gd2d, "eta", "d", metric="gd_outcome")
    ax = fig.axes[0]
    assert np.array_equal(cells(images(ax)[0]), gd2d.arrays["gd_outcome"].T)
    assert not hatched(ax)
    assert "gradient descent" in ax.get_title()


def test_points_not_converged_at_the_horizon_are_hatched(saddle):
    fig = maps.phase_map(saddle, "q", "rho")
    not_converged = saddle.arrays["not_converged"].T
    assert not_converged.any() and not not_converged.all()
    (patch,) = hatched(fig.axes[0]).values()
    assert patch.get_hatch() == maps.NOT_CONVERGED_HATCH
    assert np.array_equal(covered(patch, centres(saddle, "q", "rho")), not_converged)
    assert "at $T = 30$" in fig.axes[0].get_title()


def test_all_seven_labels_have_distinct_colours():
    colours = maps.CATEGORY_COLOURS["phase"]
    assert set(colours) == {"kernel", "kernel_aligning", "kernel_disaligning", "alignment", "disalignment",
                            "rescaling", "saddle"}
    assert len(set(colours.values())) == 7


def test_every_flag_is_hatched_on_the_phase_map(flow2d):
    frozen = flow2d.coords["d"][:, None] * flow2d.coords["s"][None, :] > 1.0
    result = with_metric(flow2d, "frozen", frozen, "flag", "frozen (NTK vanishes with d)")
    (patch,) = hatched(maps.phase_map(result, "d", "s").axes[0]).values()
    assert patch.get_label() == "frozen (NTK vanishes with d)" and patch.get_hatch() == maps.FLAG_HATCHES["frozen"]
    assert np.array_equal(covered(patch, centres(flow2d, "d", "s")), frozen.T)


def test_labels_without_a_fixed_colour_get_distinct_colour_blind_safe_ones(flow2d):
    codes = (np.log10(flow2d.coords["d"])[:, None] // 2).astype(np.int8) + np.zeros((1, 10), np.int8)
    result = with_metric(flow2d, "regime", codes, "categorical", "a new label set", ["lazy", "rich", "wild"])
    layer = images(maps.phase_map(result, "d", "s", metric="regime").axes[0])[0]
    colours = {to_hex(layer.to_rgba(c)) for c in np.unique(codes)}
    assert len(colours) == len(np.unique(codes)) and colours <= {c.lower() for c in maps.FALLBACK_COLOURS}


def test_width_exponents_get_their_zero_line_and_a_centred_scale(flow2d):
    exponent = np.log10(flow2d.coords["d"])[:, None] / 5 + np.log10(flow2d.coords["s"])[None, :] / 6 + 0.5
    fig = maps.metric_map(with_metric(flow2d, "rho_exp", exponent, "continuous", "exponent of rho"), "rho_exp",
                          "d", "s")
    ax = fig.axes[0]
    (line,) = threshold_lines(ax)
    on_level(flow2d, "d", "s", exponent.T, line, 0.0)
    assert images(ax)[0].norm.vmin == -images(ax)[0].norm.vmax
    assert "exponent of rho = $0$" in legend_texts(fig)


# ---------- continuous maps


def test_ntk_change_map_shows_log10_abs_with_threshold_contour(flow2d):
    fig = maps.metric_map(flow2d, "ntk_change", "d", "s")
    ax = fig.axes[0]
    shown = np.log10(np.abs(flow2d.arrays["ntk_change"].T))
    np.testing.assert_allclose(cells(images(ax)[0]), shown)
    (line,) = threshold_lines(ax)
    assert line.get_segments() and line.get_linestyle()[0][1] is None  # solid, though the level is negative
    on_level(flow2d, "d", "s", shown, line, np.log10(flow2d.meta["thresholds"]["ntk_threshold"]))
    texts = legend_texts(fig)
    assert r"$|\Theta_T/\Theta_0 - 1| = 0.1$ (threshold)" in texts
    assert r"NTK grows everywhere ($\Theta_T > \Theta_0$)" in texts  # the sign, when nothing is hatched
    (bar,) = [c for c in ax.child_axes if getattr(c, "_colorbar", None) is not None]  # the colour bar (an inset)
    assert "log_{10}" in bar.get_ylabel()


def test_negative_ntk_change_is_hatched_exactly(saddle):
    fig = maps.metric_map(saddle, "ntk_change", "q", "rho")
    negative = saddle.arrays["ntk_change"].T < 0
    assert negative.any() and not negative.all()
    (patch,) = hatched(fig.axes[0]).values()
    assert np.array_equal(covered(patch, centres(saddle, "q", "rho")), negative)
    assert r"NTK shrinks ($\Theta_T < \Theta_0$)" in legend_texts(fig)


def test_infinite_values_are_grey_and_named(saddle):
    t_learn = saddle.arrays["t_learn"].T
    assert np.isinf(t_learn).any() and np.isfinite(t_learn).any()
    fig = maps.metric_map(saddle, "t_learn", "q", "rho")
    ax = fig.axes[0]
    values, special = images(ax)
    assert np.array_equal(np.ma.getmaskarray(cells(values)), ~(np.isfinite(t_learn) & (t_learn > 0)))
    assert np.array_equal(~np.ma.getmaskarray(cells(special)), np.isinf(t_learn) | (t_learn == 0))
    assert r"$t_{learn} = \infty$ (never reached)" in legend_texts(fig)
    assert (t_learn == 0).any() and "$t_{learn} = 0$ (off the log scale)" in legend_texts(fig)  # m0 = m*
    j, i = np.argwhere(np.isinf(t_learn))[0]
    assert pixel(fig, ax, saddle.coords["q"][i], saddle.coords["rho"][j]) == maps.SPECIAL_COLOURS["inf"].lower()


def test_log_colour_scale_where_meta_says_log_linear_and_centred_otherwise(saddle):
    assert saddle.meta["metrics"]["tau"]["log"] and not saddle.meta["metrics"]["alignment_final"]["log"]
    tau = images(maps.metric_map(saddle, "tau", "q", "rho").axes[0])[0]
    assert isinstance(tau.norm, LogNorm)
    signed = images(maps.metric_map(saddle, "alignment_final", "q", "rho").axes[0])[0]
    assert not isinstance(signed.norm, LogNorm)
    assert signed.norm.vmin == -signed.norm.vmax  # signed values: a diverging scale centred at 0


def test_gd_quantities_are_not_coloured_where_gd_diverges(gd2d):
    fig = maps.metric_map(gd2d, "gd_loss_peak", "eta", "d")
    diverges = gd2d.arrays["gd_outcome"].T == gd2d.meta["legends"]["gd_outcome"].index("diverges")
    assert np.array_equal(np.ma.getmaskarray(cells(images(fig.axes[0])[0])), diverges)
    assert f"GD diverges: {diverges.sum()} points (not shown)" in legend_texts(fig)


def test_threshold_contour_of_alignment_metrics(flow2d):
    fig = maps.metric_map(flow2d, "alignment_gain", "d", "s")
    (line,) = threshold_lines(fig.axes[0])
    level = flow2d.meta["thresholds"]["alignment_threshold"]
    on_level(flow2d, "d", "s", flow2d.arrays["alignment_gain"].T, line, level)
    assert r"$|\zeta_T| - \min|\zeta| = 0.1$ (threshold)" in legend_texts(fig)


def test_threshold_line_leaves_out_islands_of_noise(flow2d):
    arrays = dict(flow2d.arrays)
    change = np.array(arrays["ntk_change"])
    i, j = np.add(np.unravel_index(np.argmin(change[1:-1, 1:-1]), (10, 8)), 1)  # inside the kernel regime
    change[i, j] = 10.0  # one cell above the threshold: noise, not a boundary
    arrays["ntk_change"] = change
    ax = maps.metric_map(Result(flow2d.coords, arrays, flow2d.meta), "ntk_change", "d", "s").axes[0]
    (line,) = threshold_lines(ax)
    vertices = np.concatenate(line.get_segments())
    assert len(vertices) > 0
    near = (np.abs(np.log10(vertices[:, 0] / flow2d.coords["d"][i])) < 0.5) & (
        np.abs(np.log10(vertices[:, 1] / flow2d.coords["s"][j])) < 0.5)
    assert not near.any()


def test_no_threshold_contour_on_a_grid_too_coarse_to_interpolate():
    result = run(TRAJECTORIES)  # 2 x 3 points
    ax = maps.metric_map(result, "ntk_change", "q", "rho").axes[0]
    assert not threshold_lines(ax)


# ---------- axes, titles


def test_axis_labels_in_the_models_notation_and_scales(flow2d, three, saddle):
    ax = maps.phase_map(flow2d, "d", "s").axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert maps.axis_label(run(GD_2D.replace("output_scale: 1 / sqrt(d)", "output_scale: 1")), "d") == "width $d$"
    assert ax.get_xlabel() == r"width $d$  ($\kappa = 1/\sqrt{d}$)"
    assert ax.get_ylabel() == r"$\sigma_u^2 = \sigma_w^2 = s$"
    assert maps.axis_label(three, "r") == r"$r$  ($\eta_u = \sqrt{r}$, $\eta_w = 1/\sqrt{r}$)"
    assert maps.axis_label(saddle, "rho") == r"$\rho$  ($V = \rho\,q$)"  # explicit Grams: init_var_* play no part
    assert maps.phase_map(saddle, "q", "rho").axes[0].get_yscale() == "linear"


def test_short_values_axes_get_one_tick_per_value(three):
    ax = maps.phase_map(three, "r", "d", fixed={"s": 1e-3}).axes[0]
    assert ax.get_xscale() == "log"  # values spread geometrically over decades
    assert [t.get_text() for t in ax.get_xticklabels()] == ["$10^{-2}$", "1", "100"]


def test_titles_name_the_config_the_quantity_and_the_seed_reduction(seeds2d):
    phase = maps.phase_map(seeds2d, "d", "s").axes[0].get_title()
    assert phase == "Most frequent phase over 3 seeds"  # no config name: the figure says what it shows
    assert "median over 3 seeds" in maps.metric_map(seeds2d, "tau", "d", "s").axes[0].get_title()


# ---------- seeds


def test_seed_axis_mode_for_labels_median_for_values(seeds2d):
    phase = cells(images(maps.phase_map(seeds2d, "d", "s").axes[0])[0])
    assert np.array_equal(phase, mode_over_seeds(seeds2d.arrays["phase"]).T)
    tau = cells(images(maps.metric_map(seeds2d, "tau", "d", "s").axes[0])[0])
    np.testing.assert_allclose(tau, np.median(seeds2d.arrays["tau"], axis=-1).T)


def test_median_over_seeds_is_exact_with_infinities(seeds2d):
    arrays = dict(seeds2d.arrays)
    t_learn = np.array(arrays["t_learn"])
    t_learn[0, 0] = [np.inf, np.inf, 1.0]
    t_learn[0, 1] = [np.inf, np.inf, np.inf]
    t_learn[0, 2] = [np.nan, 2.0, np.inf]
    arrays["t_learn"] = t_learn
    median = maps.reduce_seeds(Result(seeds2d.coords, arrays, seeds2d.meta), "t_learn")
    assert median[0, 0] == np.inf and median[0, 1] == np.inf and median[0, 2] == np.inf
    np.testing.assert_allclose(median[1:], np.median(t_learn[1:], axis=-1))


# ---------- small multiples, slices


def test_three_axes_make_small_multiples_with_one_colour_scale(three):
    fig = maps.metric_map(three, "ntk_change", "d", "s")
    drawn = panels(fig)
    assert [ax.get_title() for ax in drawn] == ["$r = 10^{-2}$", "$r = 1$", "$r = 100$"]
    for k, ax in enumerate(drawn):
        np.testing.assert_allclose(cells(images(ax)[0]), np.log10(np.abs(three.arrays["ntk_change"][:, :, k].T)))
    assert len({(images(ax)[0].norm.vmin, images(ax)[0].norm.vmax) for ax in drawn}) == 1
    assert fig.get_suptitle() == r"NTK change $\Theta_T/\Theta_0 - 1$"


def test_four_axes_make_a_grid_of_at_most_four_by_four_panels():
    result = run(FOUR_AXES)  # extra axes: k (6 values) and r (3 values)
    fig = maps.phase_map(result, "d", "s")
    drawn = panels(fig)
    assert len(drawn) == 4 * 3
    assert drawn[0].get_title() == "$k = 0.5$, $r = 10^{-2}$" and drawn[-1].get_title() == "$k = 2$, $r = 100$"


def test_a_callers_axes_get_one_slice_at_the_fixed_values(three):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2)
    try:
        assert maps.phase_map(three, "d", "s", ax=left, fixed={"r": 90}) is fig
        maps.metric_map(three, "tau", "d", "s", ax=right)
        assert np.array_equal(cells(images(left)[0]), three.arrays["phase"][:, :, 2].T)
        assert "at $r = 100$" in left.get_title() and "at $r = 1$" in right.get_title()
    finally:
        plt.close(fig)


def test_unsorted_values_axis_is_drawn_in_ascending_order():
    result = run(FLOW_2D.replace("s: {log: [1e-6, 1, 10]}", "s: {values: [1, 1e-6, 0.01, 0.001]}"))
    ax = maps.metric_map(result, "ntk_change", "d", "s").axes[0]
    (layer,) = images(ax)
    order = np.argsort(result.coords["s"])
    np.testing.assert_allclose(cells(layer), np.log10(np.abs(result.arrays["ntk_change"][:, order].T)))
    assert type(layer).__name__ == "QuadMesh"  # cells of unequal width on screen
    assert ax.get_ylim()[0] < 1e-6 < 1 < ax.get_ylim()[1]


def test_large_uniform_grids_are_drawn_as_one_image(flow2d):
    layers = images(maps.phase_map(flow2d, "d", "s").axes[0])
    assert [type(layer) for layer in layers] == [AxesImage]


# ---------- 1-D sweeps


def test_line_plot_draws_median_band_threshold_and_phase_strip():
    result = run(ONE_AXIS_SEEDS)
    fig = maps.line_plot(result, "ntk_change", "s")
    main, strip = fig.axes
    (line,) = [ln for ln in main.get_lines() if ln.get_label().startswith("median")]
    np.testing.assert_allclose(line.get_ydata(), np.median(np.abs(result.arrays["ntk_change"]), axis=1))
    assert main.get_yscale() == "log" and main.get_xscale() == "log"
    assert any(c.get_label().startswith("25-75%") for c in main.collections)
    assert any(ln.get_ydata()[0] == 0.1 for ln in main.get_lines())  # the threshold
    phase = mode_over_seeds(result.arrays["phase"])
    legend = result.meta["legends"]["phase"]
    x = result.coords["s"][len(phase) // 2]
    colour = pixel(fig, strip, x, 0.5)
    assert colour == maps.CATEGORY_COLOURS["phase"][legend[phase[len(phase) // 2]]].lower()


def test_categorical_line_plot_stacks_seed_fractions():
    result = run(ONE_AXIS_SEEDS)
    ax = maps.line_plot(result, "phase", "s").axes[0]
    tops = np.array([p.get_data().values for p in ax.patches if type(p).__name__ == "StepPatch"])
    np.testing.assert_allclose(tops.max(axis=0), 1.0)
    assert "fraction of the 5 seeds" in ax.get_ylabel()


def test_line_plot_of_a_gd_sweep_hatches_outcomes():
    result = run(GD_TRAJECTORIES)
    fig = maps.line_plot(result, "phase", "eta")
    outcome = result.arrays["gd_outcome"]
    legend = result.meta["legends"]["gd_outcome"]
    names = {f"GD {legend[c]}" for c in np.unique(outcome) if legend[c] != "converges"}
    assert names and set(hatched(fig.axes[0])) == names


# ---------- trajectories


def test_trajectory_plot_draws_every_point_of_a_short_sweep_with_kernel_prediction():
    result = run(TRAJECTORIES)
    fig = maps.trajectory_plot(result)
    m_panel = fig.axes[0]
    curves = [ln for ln in m_panel.get_lines() if not ln.get_label().startswith("_")]
    kernel = [ln for ln in m_panel.get_lines() if ln.get_gid() == "kernel" and ln.get_label() == "_kernel"]
    assert len(curves) == len(kernel) == 6
    np.testing.assert_allclose(kernel[0].get_ydata(), result.arrays["traj_m_lin"][0, 0])
    assert all(ax.get_xscale() == "log" for ax in fig.axes[:4])
    assert "all 6 grid points" in fig.get_suptitle()
    assert curves[0].get_label() == r"$q = 10^{-6}$, $\rho = 0$: alignment"


def test_trajectory_plot_caps_the_curves_and_says_which():
    result = run(FLOW_2D + "train: {times: {log: [1e-2, 1e3, 20]}}\n")
    fig = maps.trajectory_plot(result)
    curves = [ln for ln in fig.axes[1].get_lines()]
    assert len(curves) == maps.MAX_TRAJECTORIES
    assert f"{maps.MAX_TRAJECTORIES} of 120 grid points" in fig.get_suptitle()
    picked = {(ln.get_label().split(",")[0]) for ln in curves}
    assert len(picked) > 1  # spread over the sweep, not one row of it


def test_gd_trajectories_start_at_step_zero_and_leave_out_divergence():
    result = run(GD_TRAJECTORIES)
    assert not np.isfinite(result.arrays["traj_loss"]).all()
    fig = maps.trajectory_plot(result)
    loss = fig.axes[3]
    assert loss.get_xlim()[0] == 0 and loss.get_xscale() == "symlog"
    assert fig.axes[2].get_xlabel() == "GD step $k$"
    top = max(np.nanmax(ln.get_ydata()) for ln in loss.get_lines())
    assert np.isfinite(top) and loss.get_ylim()[1] >= top


# ---------- the rectangles behind hatching


@pytest.mark.parametrize("seed", range(5))
def test_hatch_rectangles_tile_a_mask_exactly_once(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 17)) < [0.1, 0.5, 0.9, 0.5, 0.3][seed]
    mask[5:15, 3:9] = True  # a block, merged over rows
    cover = np.zeros(mask.shape, int)
    for r0, r1, c0, c1 in maps.rectangles(mask):
        cover[r0:r1, c0:c1] += 1
    assert np.array_equal(cover, mask.astype(int))


# ---------- errors


def test_bad_requests_are_clear_errors(flow2d, gd2d):
    with pytest.raises(ValueError, match="not a sweep axis"):
        maps.phase_map(flow2d, "d", "width")
    with pytest.raises(ValueError, match="must differ"):
        maps.metric_map(flow2d, "tau", "d", "d")
    with pytest.raises(ValueError, match="no metric 'gd_outcome'"):
        maps.phase_map(flow2d, "d", "s", metric="gd_outcome")
    with pytest.raises(ValueError, match="phase_map"):
        maps.metric_map(gd2d, "gd_outcome", "eta", "d")
    with pytest.raises(ValueError, match="no trajectories"):
        maps.trajectory_plot(flow2d)
    with pytest.raises(ValueError, match="not sweep axes"):
        maps.phase_map(flow2d, "d", "s", fixed={"r": 1})


def test_a_failed_save_leaves_no_file(flow2d, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown figure format"):
        maps.phase_map(flow2d, "d", "s", path=tmp_path / "figure.bmp")

    def killed_midway(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", killed_midway)
    with pytest.raises(OSError, match="disk full"):
        maps.phase_map(flow2d, "d", "s", path=tmp_path / "figure.png")
    assert list(tmp_path.iterdir()) == []
