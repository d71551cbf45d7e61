r"""The figures of the `experiment:` studies (sgd_drift, nonlinear) are ready for a paper (issue 14).

Read back from the Figure objects (and from the SVG text) of small studies run here: every label and title in
the notation ($\eta$, $\zeta$, $s$, $\Delta$, no snake_case config names), or the user's plot.labels /
plot.title; the mechanism colours are base.CATEGORY_COLOURS["phase"] (legend swatches and strip cells); an
ordered quantity (batch size, width, init scale) gets base.levels greys with at most base.MAX_LEVELS legend
entries (more: a colour bar, or an even pick named in the legend title); several seeds draw stacked label
fractions, not the most frequent label; nothing is outside the figure and no legend covers an axes, at
the figures' own size and at a column's width.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex

from phasediag.jobs import lifecycle
from phasediag.plots import base, notation
from phasediag.studies import nonlinear_digits as ne
from phasediag.studies import sgd_drift as sd

SGD = """\
name: tiny_sgd
experiment: sgd_drift
model: {width: 8, output_scale: 1.5, init_var_u: 0.2, init_var_w: 0.05, lr_ratio: 2}
data: {input_var: 1, teacher: 1, samples: 32}
sweep:
  lr: [0.02, 0.05]
  batch_size: [1, 4, 32]
  noise_var: [0.25, 0]
train: {steps: 200, record: 12}
seeds: 3
seed: 7
"""
SGD_LABELS = """\
plot:
  labels: {decay: 'drift $D$ of the imbalance', step: 'iteration $k$', lr: 'step size'}
  title: {drift_vs_step: 'Imbalance under SGD', drift_vs_lr: null, noise_var: null}
"""
SGD_MANY = (SGD.replace("batch_size: [1, 4, 32]", "batch_size: [1, 2, 3, 4, 6, 8, 12, 16, 32]")
            .replace("noise_var: [0.25, 0]", "noise_var: [0.25]").replace("lr: [0.02, 0.05]", "lr: [0.05]")
            .replace("steps: 200", "steps: 50").replace("seeds: 3", "seeds: 2"))
NONLINEAR = """\
name: tiny_nl
experiment: nonlinear
dataset: {name: digits, test_fraction: 0.25}
model:
  activations: [tanh, relu]
  widths: [24]
  init: [symmetric, standard]
  output_scale: 1/sqrt(d)
  lr_u: 0.2*sqrt(d)
  lr_w: 0.2*sqrt(d)
sweep:
  init_scale: {log: [0.01, 30, 9]}
train: {steps: 24, record: 6, probe_size: 8}
seeds: 2
seed: 3
"""
NONLINEAR_LABELS = r"""plot:
  labels: {init_scale: 'scale $\varsigma$', ntk_change: 'kernel motion', step: 'iteration'}
  title: {vs_step: 'My trajectories', activation: null}
"""
MECHANISM_TEXT = {"kernel": "kernel (lazy)", "kernel_aligning": "kernel, aligning",
                  "kernel_disaligning": "kernel, disaligning", "alignment": "feature learning by alignment",
                  "disalignment": "feature learning by disalignment", "rescaling": "feature learning by rescaling",
                  "saddle": "saddle"}
GD_COLOUR, FLOW_COLOUR = base.CURVE_COLOURS[0], base.CURVE_COLOURS[1]  # the exact references (no phases shown)


def _run(tmp: Path, name: str, text: str) -> lifecycle.Result:
    config = tmp / f"{name}.yaml"
    config.write_text(text)
    lifecycle.run(config, out=tmp / name, options=lifecycle.Options(plot=False))
    return lifecycle.load(tmp / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studies")
    return {"sgd": _run(tmp, "sgd", SGD), "sgd_labels": _run(tmp, "sgd_labels", SGD + SGD_LABELS),
            "sgd_many": _run(tmp, "sgd_many", SGD_MANY), "nl": _run(tmp, "nl", NONLINEAR),
            "nl_labels": _run(tmp, "nl_labels", NONLINEAR + NONLINEAR_LABELS)}


_DRAWN: dict = {}  # (run, figure, options) -> Figure: each drawn once for the tests that only read it


def _draw(result, kind: str, options: base.FigureOptions | None = None):
    """The figure `kind` of a run, drawn as `phasediag plot` draws it (its config's options, or `options`)."""
    options = options or base.FigureOptions.of(result.meta)
    key = (id(result), kind, repr(options))
    if key not in _DRAWN:
        module = sd if result.kind == "sgd_drift" else ne
        draw = {stem.split("__")[-1]: draw for stem, draw in module.figures(result)}[kind]
        with base.figure_options(options):
            _DRAWN[key] = draw()
    return _DRAWN[key]


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and a.get_visible())
            if t.get_text()]


def _outside_math(text: str) -> str:
    return re.sub(r"(?<!\\)\$.*?(?<!\\)\$", "", text)


def _check_text_is_notation(fig) -> None:
    """No snake_case name, code operator or unbalanced $ in any text; every text valid mathtext."""
    for text in _texts(fig):
        plain = _outside_math(text)
        assert not re.search(r"[A-Za-z]_[A-Za-z]|\*\*|\bsqrt\(|\bkappa\b|\beta_|\bzeta\b", plain), text
        assert notation.mathtext_error(text) is None, text


def _check_layout(fig) -> None:
    """Every visible text inside the figure; no figure legend overlaps any axes (or colour bar)."""
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    frame = fig.bbox
    for text in _drawn_texts(fig):
        box = text.get_window_extent(renderer)
        assert frame.x0 - 0.5 <= box.x0 and box.x1 <= frame.x1 + 0.5, text.get_text()
        assert frame.y0 - 0.5 <= box.y0 and box.y1 <= frame.y1 + 0.5, text.get_text()
    assert fig.legends, "a figure legend, not one inside the data"
    for item in fig.legends:
        box = item.get_window_extent(renderer)
        assert frame.x0 - 0.5 <= box.x0 and box.x1 <= frame.x1 + 0.5 and box.y0 >= frame.y0 - 0.5
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (item, ax)
    for ax in fig.axes:
        assert ax.get_legend() is None  # no legend inside an axes (over the data)


def _drawn_texts(fig) -> list:
    """The visible texts a drawing shows: tick labels only of the ticks in the view (matplotlib keeps spare
    Tick objects at positions outside it, which it does not draw)."""
    axes = [ax for ax in fig.findobj(lambda a: hasattr(a, "xaxis"))]
    pool = {id(t) for ax in axes for axis in (ax.xaxis, ax.yaxis) for tick in axis.majorTicks + axis.minorTicks
            for t in (tick.label1, tick.label2)}
    drawn = [t for ax in axes for axis in (ax.xaxis, ax.yaxis) for tick in axis._update_ticks()  # (in the view)
             for t in (tick.label1, tick.label2)]
    others = fig.findobj(lambda a: hasattr(a, "get_text") and id(a) not in pool)
    return [t for t in drawn + others if t.get_visible() and t.get_text()]


def _svg(fig, tmp_path: Path) -> str:
    """The characters of the SVG's <text> elements, without white space (a text with mathtext is written
    glyph by glyph, one <tspan> each, spaces left out), one element per line."""
    path = base.save_figure(fig, tmp_path / "figure.svg")
    elements = re.findall(r"<text[^>]*>(.*?)</text>", path.read_text(), flags=re.S)
    return "\n".join("".join(re.sub(r"<[^>]+>", "", element).split()) for element in elements)


def _in_svg(text: str, svg: str) -> bool:
    return "".join(text.split()) in svg


def _legend_labels(fig) -> list[str]:
    return [t.get_text() for item in fig.legends for t in item.get_texts()]


def _title(fig) -> str | None:
    return fig._suptitle.get_text() if fig._suptitle is not None else None


def _phase(name: str) -> str:
    return base.CATEGORY_COLOURS["phase"][name].lower()  # (matplotlib's to_hex writes lower case)


def _greys(n: int) -> set[str]:
    return {to_hex(c) for c in base.levels(n)}


def _line_colours(ax) -> set[str]:
    return {to_hex(line.get_color()) for line in ax.get_lines()}


# ---------------------------------------------------------------- sgd_drift


def test_sgd_step_figure_labels_and_title_are_in_the_notation(runs, tmp_path):
    fig = _draw(runs["sgd"], "drift_vs_step")
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_ylabel() == r"$D_t = -\ln|\Delta_t/\Delta_0|$" and right.get_ylabel() == r"$1 - |\zeta_t|$"
    assert fig._supxlabel.get_text() == "step $t$"
    assert _title(fig).startswith(r"Imbalance decay and misalignment under GD and SGD at $\eta = 0.05$")
    assert r"$\eta_u/\eta_w = 2$" in _title(fig) and "tiny_sgd" not in _title(fig)
    assert left.get_title() == r"label noise $\sigma_\epsilon^2 = 0.25$"
    assert fig.axes[2].get_title() == r"no label noise ($\sigma_\epsilon^2 = 0$)"
    _check_text_is_notation(fig)
    svg = _svg(fig, tmp_path)
    assert _in_svg("Imbalance decay and misalignment under GD and SGD at", svg) and _in_svg("label noise", svg)


def test_sgd_lr_figure_labels_come_from_the_notation(runs):
    fig = _draw(runs["sgd"], "drift_vs_lr")
    config = runs["sgd"].meta["config"]
    assert fig._supxlabel.get_text() == notation.axis_label(config, "lr")
    assert [ax.get_ylabel() for ax in fig.axes[:3]] == [r"$D_K = -\ln|\Delta_K/\Delta_0|$",
                                                        "$D_K(B) - D_K(n)$, $B < n$", r"$1 - |\zeta_K|$"]
    assert _title(fig).startswith("Imbalance decay, its noise part and misalignment at the last step $K = 200$")
    labels = _legend_labels(fig)
    assert any(label.startswith("$B = 1$: slope ") for label in labels)  # one slope per noise level
    assert fig.legends[0].get_title().get_text() == r"slope of $D_K$ against $\eta$ by row"
    _check_text_is_notation(fig)


def test_sgd_figures_take_the_users_labels_and_titles(runs, tmp_path):
    fig = _draw(runs["sgd_labels"], "drift_vs_step")
    assert fig.axes[0].get_ylabel() == "drift $D$ of the imbalance"
    assert fig.axes[1].get_ylabel() == r"$1 - |\zeta_t|$"  # not named: the notation's
    assert fig._supxlabel.get_text() == "iteration $k$" and _title(fig) == "Imbalance under SGD"
    assert all(ax.get_title() == "" for ax in fig.axes)  # title {noise_var: null}: no panel titles
    svg = _svg(fig, tmp_path)
    assert all(_in_svg(text, svg) for text in ("drift", "of the imbalance", "Imbalance under SGD", "iteration"))
    fig = _draw(runs["sgd_labels"], "drift_vs_lr")
    assert not _title(fig) and fig._supxlabel.get_text() == "step size"  # {drift_vs_lr: null}
    fig = _draw(runs["sgd"], "drift_vs_step", base.FigureOptions(title="One title"))
    assert _title(fig) == "One title" and fig.axes[0].get_title().startswith("label noise")


def test_sgd_batch_sizes_are_ordered_grey_levels_with_a_marker_each(runs):
    fig = _draw(runs["sgd"], "drift_vs_step")
    sgd_lines = [line for line in fig.axes[0].get_lines() if line.get_marker() not in ("None", "", None)]
    assert {to_hex(line.get_color()) for line in sgd_lines} == _greys(3)
    assert len({line.get_marker() for line in sgd_lines}) == 3  # curves that coincide stay apart
    labels = [label for label in _legend_labels(fig) if label.startswith("$B =")]
    assert labels == ["$B = 1$", "$B = 4$", "$B = 32 = n$ (full batch)"]
    for ax in fig.axes:  # greys for B, two curve colours for the references: no phase colour means B
        assert _line_colours(ax) <= _greys(3) | {GD_COLOUR.lower(), FLOW_COLOUR.lower()}


def test_sgd_many_batch_sizes_get_a_colour_bar_not_a_legend_of_nine(runs):
    for kind in ("drift_vs_step", "drift_vs_lr"):
        fig = _draw(runs["sgd_many"], kind)
        assert not [label for label in _legend_labels(fig) if label.startswith("$B =")]
        bars = [child for ax in fig.axes for child in ax.child_axes]
        assert len(bars) == 1 and bars[0].get_ylabel() == "batch size $B$"
        _check_layout(fig)


@pytest.mark.parametrize("kind", ["drift_vs_step", "drift_vs_lr"])
@pytest.mark.parametrize("size", [None, "column"])
def test_sgd_figures_keep_everything_inside_and_legends_off_the_axes(runs, kind, size):
    options = replace(base.FigureOptions.of(runs["sgd"].meta), size=size)
    fig = _draw(runs["sgd"], kind, options)
    _check_layout(fig)
    if size == "column":
        assert fig.get_size_inches()[0] == base.SIZES["column"]
        assert fig.legends[0]._phasediag_side == "bottom"  # a narrow figure: the legend below
        _check_text_is_notation(fig)


# ---------------------------------------------------------------- nonlinear


def _mechanism_swatches(fig) -> dict[str, str]:
    """{legend text: facecolour} of the legend's filled squares."""
    item = fig.legends[0]
    return {text.get_text(): to_hex(handle.get_facecolor()) for handle, text in
            zip(item.legend_handles, item.get_texts()) if hasattr(handle, "get_hatch")}


def test_nonlinear_mechanism_colours_are_the_phase_colours_everywhere(runs):
    result = runs["nl"]
    fig = _draw(result, "vs_init_scale")
    present = [result.meta["mechanism_labels"][str(c)] for c in np.unique(result.arrays["mechanism"])]
    swatches = _mechanism_swatches(fig)
    assert len(swatches) == len(present)
    for name in present:
        assert swatches[MECHANISM_TEXT[name]] == _phase(name), name
    strip = [ax for ax in fig.axes if ax.collections and not ax.get_lines()]
    assert len(strip) == 2  # one strip per activation
    cells = {to_hex(c) for ax in strip for coll in ax.collections for c in coll.get_facecolors()}
    assert cells == {_phase(name) for name in present}
    assert "#E69F00" not in {c for ax in fig.axes for c in _line_colours(ax)}  # orange is alignment only


def test_nonlinear_labels_and_titles_are_in_the_notation(runs, tmp_path):
    fig = _draw(runs["nl"], "vs_init_scale")
    assert fig._supxlabel.get_text() == "init scale $s$" == notation.axis_label(runs["nl"].meta["config"],
                                                                                 "init_scale")
    assert fig.axes[0].get_ylabel() == "NTK change\n$\\|K_T - K_0\\|_F/\\|K_0\\|_F$"
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [r"$\phi = \tanh$", r"$\phi = \mathrm{relu}$"]
    assert _title(fig).startswith("End of training ($T = 24$ steps) against the init scale $s$")
    assert r"$\kappa = 1/\sqrt{d}$" in _title(fig) and "tiny_nl" not in _title(fig)
    _check_text_is_notation(fig)
    assert _in_svg("End of training", _svg(fig, tmp_path))
    fig = _draw(runs["nl"], "vs_step")
    assert fig._supxlabel.get_text().startswith("GD step $t$")
    assert fig.axes[0].get_ylabel() == "NTK change\n$\\|K_t - K_0\\|_F/\\|K_0\\|_F$"
    assert fig.axes[0].get_title() == r"$\phi = \tanh$, $d = 24$, symmetric init"
    _check_text_is_notation(fig)


def test_nonlinear_figures_take_the_users_labels_and_titles(runs, tmp_path):
    fig = _draw(runs["nl_labels"], "vs_init_scale")
    assert fig._supxlabel.get_text() == r"scale $\varsigma$" and fig.axes[0].get_ylabel() == "kernel motion"
    assert not any(ax.get_title() for ax in fig.axes)  # {activation: null}
    assert _title(fig).startswith("End of training")  # not named: the default
    fig = _draw(runs["nl_labels"], "vs_step")
    assert _title(fig) == "My trajectories" and fig._supxlabel.get_text() == "iteration"
    assert fig.axes[0].get_ylabel() == "kernel motion"  # traj_ntk_change falls back to ntk_change
    svg = _svg(fig, tmp_path)
    assert all(_in_svg(text, svg) for text in ("My trajectories", "kernel motion", "iteration"))
    fig = _draw(runs["nl"], "vs_step", base.FigureOptions(labels={"traj_ntk_change": "during", "ntk_change": "x"},
                                                          title=None))
    assert fig.axes[0].get_ylabel() == "during" and not _title(fig)


def test_nonlinear_init_scales_against_the_step_are_at_most_seven_grey_levels(runs):
    fig = _draw(runs["nl"], "vs_step")
    entries = [label for label in _legend_labels(fig) if label.startswith("$s =")]
    scales = runs["nl"].coords["init_scale"]
    assert len(scales) == 9 and len(entries) == base.MAX_LEVELS
    assert entries[0] == f"$s = {notation.number_tex(scales[0])}$"
    assert entries[-1] == f"$s = {notation.number_tex(scales[-1])}$"
    assert fig.legends[0].get_title().get_text() == "init scale $s$ (7 of 9)"
    for ax in fig.axes:
        assert _line_colours(ax) <= _greys(base.MAX_LEVELS)
        assert len({line.get_marker() for line in ax.get_lines()}) == base.MAX_LEVELS


def test_nonlinear_widths_are_grey_levels_and_inits_line_styles(runs):
    fig = _draw(runs["nl"], "vs_init_scale")
    top = fig.axes[0]
    curves = [line for line in top.get_lines() if line.get_marker() not in ("None", "")]
    assert {to_hex(line.get_color()) for line in curves} == _greys(1)
    assert {line.get_linestyle() for line in curves} == {"-", "--"}
    labels = _legend_labels(fig)
    assert "$d = 24$" in labels and "symmetric init ($f_0 = 0$)" in labels
    assert any(label.startswith("kernel threshold") for label in labels)


def test_nonlinear_strip_stacks_the_label_fractions_over_seeds(runs):
    """Two seeds that disagree: the cell is split in halves, one per label (not the most frequent label)."""
    result = runs["nl"]
    study = ne.study_of(result)
    arrays = {**result.coords, **result.arrays}
    codes = np.array(arrays["mechanism"])
    alignment, kernel = ne.core.PHASES.index("alignment"), ne.core.PHASES.index("kernel")
    codes[...] = alignment
    codes[0, 0, 0, 0, 1] = kernel  # tanh, d = 24, symmetric, smallest s: seed 1 lazy
    codes[0, 0, 0, 1, :] = ne.DIVERGED_CODE  # next s: both seeds diverged
    with base.figure_options(base.FigureOptions()):
        fig = ne.vs_init_scale_figure(study, {**arrays, "mechanism": codes})
    strip = next(ax for ax in fig.axes if ax.collections and not ax.get_lines())
    heights = {}
    for coll in strip.collections:
        colour = to_hex(coll.get_facecolors()[0])
        heights[colour] = [np.ptp(p.vertices[:, 1]) for p in coll.get_paths() if p.vertices[:, 0].min() < 0.011]
    assert heights[_phase("kernel")] == [pytest.approx(0.45)]
    assert pytest.approx(0.45) in heights[_phase("alignment")]
    diverged = [coll for coll in strip.collections if coll.get_hatch()]
    assert len(diverged) == 1 and to_hex(diverged[0].get_facecolors()[0]) == base.SPECIAL_COLOURS["inf"].lower()
    assert "diverged" in _legend_labels(fig) and strip.get_ylabel() == "mechanism\n(share of seeds)"


@pytest.mark.parametrize("kind", ["vs_init_scale", "vs_step"])
@pytest.mark.parametrize("size", [None, "column"])
def test_nonlinear_figures_keep_everything_inside_and_legends_off_the_axes(runs, kind, size):
    options = replace(base.FigureOptions.of(runs["nl"].meta), size=size)
    fig = _draw(runs["nl"], kind, options)
    _check_layout(fig)
    if size == "column":
        assert fig.get_size_inches()[0] == base.SIZES["column"]
        assert fig.legends[0]._phasediag_side == "bottom"
        _check_text_is_notation(fig)


def test_the_column_gap_is_what_the_columns_need_not_the_first_columns_labels(runs):
    """The y labels and the strip's row names are in the first column only: the space between the columns
    is that of the second column's tick labels, not that of the first column's labels (base.fit alone)."""
    fig = _draw(runs["nl"], "vs_init_scale")
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    left, right = fig.axes[0], fig.axes[1]
    gap = (right.get_window_extent(renderer).x0 - left.get_window_extent(renderer).x1) / fig.dpi
    labels = (right.get_window_extent(renderer).x0 - right.yaxis.get_tightbbox(renderer).x0) / fig.dpi
    assert labels < gap < labels + 0.3
