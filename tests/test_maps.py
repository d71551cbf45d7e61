"""Figures of sweep results under Agg: every kind of sweep draws, colours and hatches mean what they say."""

import subprocess
import sys
import textwrap

import matplotlib
import numpy as np
import pytest

from phasediag import core, maps, sweep
from phasediag.config import config_from_text

matplotlib.use("Agg")

BASE = """\
name: m
sweep:
  d: {log: [1, 1e5, 12]}
  s: {log: [1e-6, 1, 10]}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: eta, lr_w: eta, init_var_u: s, init_var_w: s}
"""


def result_of(text):
    return sweep.run(config_from_text(textwrap.dedent(text)))


@pytest.fixture(scope="module")
def flow2d():
    return result_of(BASE.replace("lr_u: eta, lr_w: eta", "lr_u: 1, lr_w: 1"))


def test_phase_map_colours_match_labels(flow2d):
    fig = maps.phase_map(flow2d, "d", "s")
    mesh = fig.axes[0].collections[0]
    codes = np.asarray(mesh.get_array()).reshape(10, 12)
    assert np.array_equal(codes, flow2d.arrays["phase"].T)
    rgba = mesh.to_rgba(codes.ravel())
    for code, colour in zip(codes.ravel(), rgba):
        assert matplotlib.colors.to_hex(colour) == maps.CATEGORY_COLOURS["phase"][core.PHASES[code]].lower()
    legend_labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert legend_labels == {core.PHASES[c].replace("_", " ") for c in np.unique(codes)}
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_xlabel() == "d (width)"


def test_gd_outcomes_are_hatched():
    gd = result_of(BASE.replace("d: {log: [1, 1e5, 12]}", "eta: {log: [0.1, 5, 12]}").replace("width: d", "width: 100")
                   .replace("1 / sqrt(d)", "1").replace("s: {log: [1e-6, 1, 10]}", "s: {log: [0.001, 0.02, 10]}")
                   + "train: {optimizer: gd, max_steps: 5000}\n")
    outcomes = set(np.unique(gd.arrays["gd_outcome"]).tolist())
    assert core.GD_CODE["catapult"] in outcomes or core.GD_CODE["diverges"] in outcomes
    fig = maps.phase_map(gd, "eta", "s")
    hatches = {c.get_hatch() for c in fig.axes[0].collections if c.get_hatch()}
    expected = {maps.GD_HATCHES[core.GD_OUTCOMES[c]] for c in outcomes if core.GD_OUTCOMES[c] in maps.GD_HATCHES}
    assert expected and expected <= hatches


def test_metric_map_threshold_contour_and_log_values(flow2d):
    fig = maps.metric_map(flow2d, "ntk_change", "d", "s")
    mesh = fig.axes[0].collections[0]
    drawn = np.asarray(mesh.get_array()).reshape(10, 12)
    np.testing.assert_allclose(drawn, np.log10(np.abs(flow2d.arrays["ntk_change"].T)))
    contours = [c for c in fig.axes[0].collections if isinstance(c, matplotlib.contour.ContourSet)]
    assert contours and np.isclose(contours[0].levels[0], np.log10(0.1))


def test_render_all_formats_and_names(flow2d, tmp_path):
    paths = maps.render_all(flow2d, tmp_path, ["png", "pdf", "svg"])
    names = {p.name for p in paths}
    assert "m__phase__s_vs_d.png" in names and "m__ntk_change__s_vs_d.pdf" in names
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith({"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[p.suffix[1:]])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("name: one\nsweep: {s: {log: [1e-6, 1, 30]}}\nmodel: {width: 100, init_var_u: s, init_var_w: s}\n"
         "init: {seeds: 3}\n", "one__phase__vs_s.png"),
        (BASE.replace("lr_u: eta, lr_w: eta", "lr_u: k, lr_w: 1") .replace("  s: {log", "  k: {values: [0.1, 1, 10]}\n  s: {log"),
         "m__phase__k_vs_d.png"),
        ("name: tr\nsweep: {q: {values: [1e-6, 100]}}\nmodel: {width: 1, init_var_u: q, init_var_w: q}\n"
         "init: {gram: [q, q, 0.5 * q]}\ntrain: {times: {log: [1e-3, 1e3, 50]}}\n", "tr__trajectories.png"),
    ],
)
def test_one_axis_three_axes_seeds_and_trajectories_draw(tmp_path, text, expected):
    paths = maps.render_all(result_of(text), tmp_path)
    assert expected in {p.name for p in paths}


def test_three_axes_make_small_multiples():
    r = result_of(BASE.replace("lr_u: eta, lr_w: eta", "lr_u: k, lr_w: 1")
                  .replace("  s: {log", "  k: {values: [0.1, 1, 10]}\n  s: {log"))
    fig = maps.phase_map(r, "d", "s")
    assert len([a for a in fig.axes if a.get_visible()]) == 3
    assert "k = 10" in fig.axes[2].get_title()


def test_import_does_not_load_matplotlib():
    code = "import sys, phasediag.maps; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
