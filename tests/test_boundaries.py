"""Exact phase boundaries (`boundaries:`, engine.boundaries): crossings against the closed-form boundaries of
docs/theory.md section 11, the label on either side of every crossing, GD outcomes against a fine grid,
several crossings in one grid cell, identical tables whatever the chunking, workers or shards, and the
config errors."""

from __future__ import annotations

import math
from pathlib import Path

import mpmath
import numpy as np
import pytest

import phasediag
from phasediag.config.sweep import ConfigError, config_from_text
from phasediag.engine import boundaries
from phasediag.engine.metrics import LEGENDS
from phasediag.jobs import lifecycle


def width_vs_init(n_d: int = 25, n_s: int = 31, ntk: float = 0.1, align: float = 0.1, extra: str = "",
                  s_axis: str | None = None) -> str:
    """Config 1 (kappa = eta = a = m* = 1, U = W = width s: rho = A = 1/(width s)) with boundaries along s."""
    s_axis = s_axis or f"{{log: [1e-8, 1, {n_s}]}}"
    return f"""name: bounds
sweep: {{d: {{log: [1, 1e6, {n_d}]}}, s: {s_axis}}}
model: {{width: d, output_scale: 1, lr_u: 1, lr_w: 1, init_var_u: s, init_var_w: s}}
data: {{input_var: 1, teacher: 1}}
classify: {{ntk_threshold: {ntk}, alignment_threshold: {align}}}
boundaries: {{along: s, against: d}}
{extra}"""


def table_of(text: str) -> dict[str, np.ndarray]:
    return phasediag.run(config_from_text(text).resolved, plot=False).boundaries


def exact_ds(rule: str, ntk: float, align: float) -> float:
    """width * s at the boundary of `rule` (docs/theory.md section 11: rho = A = 1/(width s))."""
    if rule == "ntk_threshold":
        return 1.0 / math.sqrt((1.0 + ntk) ** 2 - 1.0)
    return math.sqrt(1.0 - align**2) / align


@pytest.mark.parametrize("ntk, align", [(0.1, 0.1), (0.3, 0.05), (0.01, 0.5)])
def test_flow_crossings_are_the_closed_form_boundaries(ntk, align):
    table = table_of(width_vs_init(ntk=ntk, align=align))
    assert set(table["rule"]) == {"ntk_threshold", "alignment_threshold"}
    for rule in ("ntk_threshold", "alignment_threshold"):
        mine = table["rule"] == rule
        ds = np.round(table["d"][mine]) * table["s"][mine]
        assert np.max(np.abs(ds / exact_ds(rule, ntk, align) - 1.0)) < 1e-12
    assert np.all((table["lower"] < table["s"]) & (table["s"] < table["upper"]))
    ntk_rows = table["rule"] == "ntk_threshold"
    np.testing.assert_allclose(np.abs(table["ntk_change"][ntk_rows]), ntk, rtol=1e-12)
    align_rows = table["rule"] == "alignment_threshold"
    np.testing.assert_allclose(table["alignment_gain"][align_rows], align, rtol=1e-12)


def test_every_label_change_of_the_grid_has_its_crossing():
    result = phasediag.run(config_from_text(width_vs_init()).resolved, plot=False)
    phase, table = result["phase"], result.boundaries
    names = LEGENDS["phase"]
    s = result.coords["s"]
    for i, d in enumerate(result.coords["d"]):
        expected = [(names[a], names[b], s[j], s[j + 1]) for j, (a, b) in enumerate(zip(phase[i, :-1], phase[i, 1:]))
                    if a != b]
        mine = table["d"] == d
        got = list(zip(table["below"][mine], table["above"][mine], table["lower"][mine], table["upper"][mine]))
        assert got == expected


@pytest.mark.parametrize("text", [
    width_vs_init(),
    width_vs_init(ntk=0.1, align=0.4, s_axis="{log: [1e-6, 1, 4]}"),
    width_vs_init(n_d=9, extra="train: {optimizer: gd, max_steps: 3000}\n", s_axis="{log: [1e-4, 3, 15]}").replace(
        "boundaries: {along: s, against: d}", "boundaries: [{along: s}, {along: s, of: phase}]"),
])
def test_the_label_on_either_side_of_every_crossing(text):
    """The label 1e-12 below a crossing is `below`, 1e-12 above it `above` (the bisection's own evaluation
    is not used: the labels are evaluated afresh, as the sweep evaluates its grid)."""
    config = config_from_text(text)
    table = phasediag.run(config.resolved, plot=False).boundaries
    assert table["s"].size > 0
    for of in set(table["of"]):
        mine = table["of"] == of
        names = LEGENDS[of]
        for factor, side in ((1 - 1e-12, "below"), (1 + 1e-12, "above")):
            got = boundaries.label_at(config, of, {"d": table["d"][mine], "s": table["s"][mine] * factor})
            assert [names[c] for c in got] == list(table[side][mine])


def test_several_crossings_in_one_grid_cell_are_all_found():
    """One cell of s from 0.1 to 1 at width 10 (width s from 1 to 10) holds both boundaries of section 11
    (2.18 and 9.95); with alignment_threshold 0.4 the kernel_aligning band is 5 % wide (2.182 to 2.291),
    narrower than the sampling of the cell, and is found by searching again from the first crossing."""
    for align, s_values in ((0.1, "[0.1, 1.0]"), (0.4, "[0.1, 1.0]"), (0.4, "[0.01, 10.0]")):
        text = f"""name: cell
sweep: {{s: {{values: {s_values}}}}}
model: {{width: 10, init_var_u: s, init_var_w: s}}
classify: {{alignment_threshold: {align}}}
boundaries: {{along: s}}
"""
        table = table_of(text)
        assert list(zip(table["below"], table["above"])) == [("alignment", "kernel_aligning"),
                                                              ("kernel_aligning", "kernel")]
        assert list(table["crossings_in_cell"]) == [2, 2]
        np.testing.assert_allclose(10 * table["s"], [exact_ds("ntk_threshold", 0.1, align),
                                                     exact_ds("alignment_threshold", 0.1, align)], rtol=1e-12)


GD_CONFIG = """name: gd_bounds
sweep: {eta: {log: [0.5, 3, 7]}, d: {values: [3, 100, 10000]}}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: eta, lr_w: eta, init_var_u: 1, init_var_w: 1}
train: {optimizer: gd, max_steps: 20000}
boundaries: {along: eta}
"""


def test_gd_outcome_crossings_against_a_fine_grid():
    """Each GD crossing lies in the interval where a 2001-point grid of the cell changes label, and the
    fine grid changes label as often as the table has crossings in that cell."""
    config = config_from_text(GD_CONFIG)
    table = phasediag.run(config.resolved, plot=False).boundaries
    assert set(table["rule"]) == {"gd_outcome"} and {"converges", "catapult", "diverges"} <= set(table["below"]) | set(
        table["above"])
    for lower, upper, d in sorted(set(zip(table["lower"], table["upper"], table["d"]))):
        mine = (table["lower"] == lower) & (table["d"] == d)
        fine = np.geomspace(lower, upper, 2001)
        codes = boundaries.label_at(config, "gd_outcome", {"eta": fine, "d": np.full(fine.size, d)})
        change = np.flatnonzero(codes[1:] != codes[:-1])
        assert change.size == mine.sum()
        for k, x in zip(change, np.sort(table["eta"][mine])):
            assert fine[k] <= x <= fine[k + 1]


def test_crossings_are_identical_whatever_the_chunking_workers_or_shards(tmp_path):
    text = width_vs_init(n_d=13, n_s=17)
    config = config_from_text(text).resolved
    whole = tmp_path / "whole"
    phasediag.run(config, out=whole, plot=False)
    reference = (whole / "boundaries.csv").read_bytes()
    phasediag.run(config, out=tmp_path / "chunked", plot=False, chunk_size=7, workers=2)
    assert (tmp_path / "chunked" / "boundaries.csv").read_bytes() == reference
    shards = [tmp_path / f"shard{k}" for k in (1, 2, 3)]
    for k, out in enumerate(shards, 1):
        phasediag.run(config, out=out, plot=False, shard=f"{k}/3", chunk_size=11)
        assert not (out / "boundaries.csv").exists()
    lifecycle.merge(shards, tmp_path / "merged", plot=False)
    assert (tmp_path / "merged" / "boundaries.csv").read_bytes() == reference
    loaded = phasediag.load(tmp_path / "merged").boundaries
    fresh = phasediag.run(config, plot=False).boundaries
    assert loaded.keys() == fresh.keys()
    for name in fresh:
        np.testing.assert_array_equal(loaded[name], fresh[name])


def test_the_slope_of_the_boundary_against_width():
    """width s = constant at both boundaries: log s against log width has slope -1 exactly; against the
    sweep variable d (width = round(d)) the fit is -1 to the rounding of the small widths."""
    table = table_of(width_vs_init(n_d=61, n_s=61))
    fits = boundaries.fit_slopes(config_from_text(width_vs_init(n_d=61, n_s=61)), table)
    assert {(f["below"], f["above"]) for f in fits} == {("alignment", "kernel_aligning"), ("kernel_aligning", "kernel")}
    for f in fits:
        assert f["points"] >= 50 and abs(f["slope"] + 1.0) < 2e-3
        mine = (table["below"] == f["below"]) & (table["above"] == f["above"])
        width, s = np.round(table["d"][mine]), table["s"][mine]
        assert abs(np.polyfit(np.log(width), np.log(s), 1)[0] + 1.0) < 1e-12


def test_boundaries_are_drawn_and_exported(tmp_path):
    out = tmp_path / "run"
    result = phasediag.run(config_from_text(width_vs_init(n_d=13, n_s=17)).resolved, out=out, plot=False)
    fig = result.plot("phase")
    drawn = [line for ax in fig.axes for line in ax.get_lines() if line.get_xdata().size > 1]
    assert {line.get_linestyle() for line in drawn} == {"-", "--"}
    assert len(drawn) == 2  # (one curve per kind of crossing, not one per crossing: 23 here)
    x = np.concatenate([line.get_xdata() for line in drawn])
    assert set(x) <= set(result.boundaries["d"])
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any(t.startswith("boundary:") for t in legend)
    paths = lifecycle.export_csv(out)
    side = [p for p in paths if p.endswith("_boundaries.csv")]
    assert len(side) == 1 and Path(side[0]).read_text() == (out / "boundaries.csv").read_text()
    assert phasediag.load(out).boundaries["s"].size == result.boundaries["s"].size
    # elsewhere: the tables appear together or not at all (here the boundaries' name is taken by a folder)
    (tmp_path / "e_boundaries.csv").mkdir()
    with pytest.raises(phasediag.BadInput, match="e_boundaries.csv: is a directory"):
        lifecycle.export_csv(out, tmp_path / "e.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e_boundaries.csv", "run"]
    long = tmp_path / ("x" * 245 + ".csv")  # (its _boundaries.csv sibling is a name too long for the system)
    with pytest.raises(phasediag.BadInput, match="_boundaries.csv: File name too long"):
        lifecycle.export_csv(out, long)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e_boundaries.csv", "run"]


@pytest.mark.parametrize("entry, needle", [
    ("boundaries: {along: q}", "boundaries.along (line 6): 'q' is not a sweep variable"),
    ("boundaries: {along: d}", "boundaries.along (line 6): 'd' sets model.width"),
    ("boundaries: {along: s, of: gd_outcome}", "boundaries.of (line 6): must be one of phase for a flow sweep"),
    ("boundaries: {along: s, against: s}", "boundaries.against (line 6): must differ from along"),
    ("boundaries: {along: s, across: d}", "boundaries.across (line 6): unknown key"),
    ("boundaries: []", "boundaries (line 6): must be {along: <sweep variable>}"),
    ("boundaries: {of: phase}", "boundaries.along: is required"),
    ("boundaries: {along: s, quantiles: [0.5]}", "boundaries.quantiles (line 6): needs init: {seeds: N}"),
    ("boundaries: {along: s, quantiles: [0.5, 0.2]}\ninit: {seeds: 3}",
     "boundaries.quantiles (line 6): must be increasing quantiles in (0, 1), got [0.5, 0.2]"),
    ("boundaries: {along: s, quantiles: [1]}\ninit: {seeds: 3}", "boundaries.quantiles (line 6): must be increasing"),
    ("boundaries: {along: s, quantiles: 0.5}\ninit: {seeds: 3}", "boundaries.quantiles (line 6): must be a non-empty"),
    ("boundaries: [{along: s}, {along: s, against: d}]", "boundaries[1] (line 6): repeats boundaries[0]"),
])
def test_bad_boundaries_entries_are_one_line_naming_the_key(entry, needle):
    text = """name: bad
sweep: {d: {log: [1, 100, 3]}, s: {log: [0.01, 1, 3]}}
model: {width: d, init_var_u: s, init_var_w: s}
data: {input_var: 1, teacher: 1}
train: {optimizer: flow}
""" + entry + "\n"
    with pytest.raises(ConfigError) as err:
        config_from_text(text)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_rules_of_label_pairs():
    assert boundaries.rule_of("phase", "alignment", "kernel_aligning") == "ntk_threshold"
    assert boundaries.rule_of("phase", "kernel", "kernel_aligning") == "alignment_threshold"
    assert boundaries.rule_of("phase", "alignment", "disalignment") == "mechanism"
    assert boundaries.rule_of("phase", "rescaling", "alignment") == "alignment_threshold"
    assert boundaries.rule_of("phase", "kernel", "alignment") == "ntk_threshold+alignment_threshold"
    assert boundaries.rule_of("phase", "saddle", "kernel") == "saddle"
    assert boundaries.rule_of("gd_outcome", "converges", "catapult") == "gd_outcome"


def test_exact_exponent_beside_the_fit():
    """NTK parametrization (kappa = 1/sqrt(d)): rho = 2c|m*|/Theta0 = sqrt(d)/(width s) and A = sqrt(d)/(width s),
    so both boundaries are s ~ d^(-1/2) (section 7's power counting: exponents -1/2 in d, -1 in s)."""
    text = """name: ntk_param
sweep: {d: {log: [1e2, 1e8, 31]}, s: {log: [1e-8, 1, 81]}}
model: {width: d, output_scale: 1 / sqrt(d), init_var_u: s, init_var_w: s}
boundaries: {along: s, against: d}
"""
    config = config_from_text(text)
    result = phasediag.run(config.resolved, plot=False)
    fits = result.meta["boundaries"]["slopes"]
    assert len(fits) == 2
    for f in fits:
        assert f["exact_slope"] == "-1/2" and f["exact_slope_value"] == -0.5
        assert abs(f["slope"] + 0.5) < 2e-4 and f["points"] >= 20  # (width = round(d): 0.5 % at d = 100)
    table = result.boundaries
    np.testing.assert_allclose(table["s"] * np.round(table["d"]) / np.sqrt(table["d"]),  # (s sqrt(d) = const)
                               [exact_ds(r, 0.1, 0.1) for r in table["rule"]], rtol=1e-12)
    assert boundaries.exact_slope(config, config.boundaries[0], "gd_outcome", -0.5) is None
    assert boundaries.exact_slope(config_from_text(text.replace("1 / sqrt(d)", "1 / log(d)")),
                                  config.boundaries[0], "ntk_threshold", -0.5) is None


def test_leading_exponents_of_expressions():
    from fractions import Fraction

    from phasediag.config import expr

    cases = {"d": 1, "1 / sqrt(d)": Fraction(-1, 2), "2 * d ** 1.5 / s": Fraction(3, 2), "d + d**2": 2,
             "abs(-d) / 3": 1, "s": 0, "pi * s ** 2": 0, "log(d)": None, "d ** s": None, "exp(s)": 0}
    for text, want in cases.items():
        assert expr.leading_exponent(expr.parse(text), "d") == want, text


@pytest.mark.parametrize("along", ["s", "r"])
def test_three_axes_in_blocks_of_any_size(monkeypatch, along):
    """The label changes are read block by block (bounded memory): any block size gives the same crossings,
    and on a grid of three axes every crossing has its labels on either side, along any of the axes."""
    text = f"""name: three
sweep: {{d: {{log: [1, 1e4, 7]}}, r: {{log: [0.25, 4, 5]}}, s: {{log: [1e-6, 1, 9]}}}}
model: {{width: d, lr_u: r, lr_w: 1 / r, init_var_u: s, init_var_w: s}}
boundaries: {{along: {along}}}
"""
    config = config_from_text(text)
    result = phasediag.run(config.resolved, plot=False)
    reference = result.boundaries
    assert reference["s"].size > 0
    codes = {"phase": result["phase"]}
    for block in (1, 7, 45):
        monkeypatch.setattr(boundaries, "CHANGE_BLOCK", block)
        table = boundaries.find_all(config, codes)
        for name in reference:
            np.testing.assert_array_equal(table[name], reference[name])
    names = LEGENDS["phase"]
    for factor, side in ((1 - 1e-12, "below"), (1 + 1e-12, "above")):
        where = {v: reference[v] * (factor if v == along else 1.0) for v in ("d", "r", "s")}
        assert [names[c] for c in boundaries.label_at(config, "phase", where)] == list(reference[side])


@pytest.mark.parametrize("variance_w, slopes", [
    ("s ** 2", {"ntk_threshold": "-1", "alignment_threshold": "-2/3"}),  # Theta0 ~ d (s + s^2): s dominates
    ("s ** 2 + s", {"ntk_threshold": "-1", "alignment_threshold": "-1"}),
    ("s ** 0.5", {"ntk_threshold": "-2", "alignment_threshold": "-4/3"}),  # s^(1/2) dominates as s -> 0
])
def test_exact_exponent_where_the_along_variable_goes_to_zero(variance_w, slopes):
    """On a boundary s ~ d^p with p < 0, s -> 0: the dominant term of a sum of powers of s is the smallest
    power (rho ~ 1/(d (s + s^2)) -> s ~ 1/d, not 1/sqrt(d)); A = 1/(d sqrt(s sigma_w^2)). The fit agrees."""
    text = f"""name: small_s
sweep: {{d: {{log: [10, 1e6, 21]}}, s: {{log: [1e-12, 1e3, 61]}}}}
model: {{width: d, init_var_u: s, init_var_w: {variance_w}}}
boundaries: {{along: s, against: d}}
"""
    fits = phasediag.run(config_from_text(text).resolved, plot=False).meta["boundaries"]["slopes"]
    assert {f["rule"]: f["exact_slope"] for f in fits} == slopes
    for f in fits:
        assert abs(f["slope"] - f["exact_slope_value"]) < 0.02 * abs(f["exact_slope_value"]), f


def test_a_descending_axis_gives_the_same_crossings_with_their_labels_in_increasing_order():
    text = width_vs_init(n_d=7, n_s=13)
    up = table_of(text)
    values = config_from_text(text).axes[1].values[::-1]
    down = table_of(width_vs_init(n_d=7, s_axis="{values: [" + ", ".join(map(repr, map(float, values))) + "]}"))
    for name in up:
        if up[name].dtype.kind == "f":
            np.testing.assert_allclose(down[name], up[name], rtol=1e-15, atol=0, equal_nan=True)
        else:
            np.testing.assert_array_equal(down[name], up[name])
    assert np.all(down["lower"] < down["upper"])


def test_an_axis_that_is_not_monotone_is_refused():
    with pytest.raises(ConfigError) as err:
        config_from_text(width_vs_init(s_axis="{values: [1e-4, 1e-2, 1e-3]}"))
    assert "boundaries.along (line 6): sweep.s must be strictly increasing or decreasing" in str(err.value)


def test_a_label_change_at_zero_on_a_linear_axis_is_at_zero():
    """s = 0 is the saddle; every s > 0 rotates. Halving towards 0 would reach s ~ 1e-162, where the Gram
    underflows and the label is wrong: the crossing is reported at 0 itself, and the other crossings of the
    cell still at their closed-form values."""
    table = table_of(width_vs_init(n_d=3, s_axis="{lin: [0, 1, 11]}").replace("against: d", ""))
    first = table["lower"] == 0
    zero = table["s"] == 0
    assert np.array_equal(zero, first & (table["below"] == "saddle")) and zero.sum() == 3
    assert set(table["rule"][zero]) == {"saddle"} and np.all(table["error"][zero] < 1e-15)
    rest = ~zero & (table["rule"] != "saddle")
    exact = np.array([exact_ds(r, 0.1, 0.1) for r in table["rule"][rest]]) / np.round(table["d"][rest])
    np.testing.assert_allclose(table["s"][rest], exact, rtol=1e-12)


@pytest.mark.parametrize("align", [1e-15, 1e-3, 0.1, 0.9, 1 - 1e-6, 1 - 1e-10, 1 - 1e-13])
@mpmath.workdps(40)
def test_crossings_are_exact_at_any_alignment_threshold_and_within_their_stated_error(align):
    """Against sqrt(1 - A^2)/A (mpmath, 40 digits): near A = 1 alignment_gain is 1 minus a small number, so the
    rules compare 1 - alignment_gain formed without cancellation (it used to be located only to 8e-7 at
    1 - 1e-10); the error column bounds the distance and is itself below 1e-13 relative."""
    table = table_of(width_vs_init(align=align, s_axis="{log: [1e-16, 1e4, 41]}").replace("[1, 1e6, 25]",
                                                                                         "[1, 1e15, 7]"))
    mine = table["rule"] == "alignment_threshold"
    a = mpmath.mpf(align)
    width = np.round(table["d"][mine])
    exact = np.array([float(mpmath.sqrt(1 - a * a) / (a * int(w))) for w in width])
    distance = np.abs(table["s"][mine] - exact)
    assert mine.sum() >= 2 and np.all(distance <= table["error"][mine])
    assert np.all(distance / exact < 1e-14) and np.all(table["error"][mine] / table["s"][mine] < 1e-13)
    ntk = table["rule"] == "ntk_threshold"
    assert np.all(table["error"][ntk] / table["s"][ntk] < 1e-13)


@mpmath.workdps(80)
def test_the_complements_are_one_minus_the_gains():
    """alignment_gain_complement and disalignment_complement (core.order_parameters) against 1 - alignment_gain
    and 1 - disalignment in 40-digit arithmetic, for sampled Grams (m0 != 0, both gains non-zero) at finite and
    infinite horizons, including points where the gain is within 1e-12 of 1 (80 digits: 1 - |zeta| at 1e-28
    leaves 40-digit arithmetic only 12)."""
    from phasediag import core

    rng = np.random.default_rng(5)
    n = 400
    width = np.round(10 ** rng.uniform(0, 6, n))
    var = 10 ** rng.uniform(-12, 0, n) / width
    gram = core.sample_gram(width, var, var * 10 ** rng.uniform(-1, 1, n), seed=1, index=np.arange(n))
    inv = core.invariants(core.Problem(1.0, 1.0, 1.0, 1.0, 10 ** rng.uniform(-3, 3, n), gram))
    for horizon in (np.inf, 10.0):
        order = core.order_parameters(inv, horizon)
        final = core.flow_state_and_change(inv, horizon)[0]  # (the state order_parameters uses)
        k = inv.kappa_sqrt_g
        for complement, at in ((order.alignment_gain_complement, final.m), (order.disalignment_complement, inv.m0)):
            for i in range(n):
                def zeta(m):
                    m = mpmath.mpf(float(m))
                    return abs(m) / mpmath.sqrt(m ** 2 + mpmath.mpf(float(k[i])) ** 2)

                ends = (zeta(inv.m0[i]), zeta(final.m[i]))
                low = 0 if inv.m0[i] * final.m[i] < 0 else min(ends)
                want = 1 - (zeta(at[i]) - low) if inv.gram.G[i] > 0 else mpmath.mpf(1)  # (G = 0: no rotation)
                assert abs(complement[i] - float(want)) <= 1e-14 * float(want) + 1e-300, (horizon, i)
    assert np.min(order.alignment_gain_complement) < 1e-12  # (the range reaches nearly full alignment)
    # the rules on the complements (threshold above 1/2) give the direct rules' labels away from the threshold
    for threshold in (0.6, 0.9, 1 - 1e-9):
        sharp = core.phase_codes(order, inv.saddle, 0.1, threshold)
        plain = core.phase_codes(order._replace(alignment_gain_complement=None, disalignment_complement=None),
                                 inv.saddle, 0.1, threshold)
        near = np.abs(np.maximum(order.alignment_gain, order.disalignment) - threshold) < 1e-12
        assert np.array_equal(sharp[~near], plain[~near]) and len(set(sharp)) >= 3
    assert core.order_parameters(inv, np.inf, complements=False).alignment_gain_complement is None


def test_a_cell_whose_search_ran_out_of_rounds_is_flagged(monkeypatch):
    """The kernel_aligning band inside one cell needs two searches (see the test of several crossings); with one
    round allowed, the cell's row says it was not searched to the end."""
    text = width_vs_init(n_d=2, s_axis="{log: [0.1, 1, 2]}", align=0.4).replace("[1, 1e6, 2]", "[10, 10, 1]")
    monkeypatch.setattr(boundaries, "MAX_ROUNDS", 1)
    cut = table_of(text)
    monkeypatch.setattr(boundaries, "MAX_ROUNDS", 64)
    full = table_of(text)
    assert full["s"].size == 2 and np.all(full["cell_complete"])
    assert cut["s"].size == 1 and not cut["cell_complete"][0] and cut["s"][0] == full["s"][0]


def _forge_csv(column: str, value: str):
    def forge(out: Path) -> None:
        import csv
        import hashlib
        import io
        import json

        with (out / "boundaries.csv").open(newline="") as fh:
            rows = list(csv.reader(fh))
        rows[1][rows[0].index(column)] = value
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        data = text.getvalue().encode()
        (out / "boundaries.csv").write_bytes(data)
        meta = json.loads((out / "meta.json").read_text())
        meta["manifest"]["boundaries.csv"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (out / "meta.json").write_text(json.dumps(meta))
    return forge


def _forge_rows(change):
    """Rows of boundaries.csv changed by `change(header, rows)`, with meta.json's entry (crossings, slopes) and
    manifest made to agree: only finding the crossings again can tell."""
    def forge(out: Path) -> None:
        import csv
        import hashlib
        import io
        import json

        from phasediag.config.reader import located
        from phasediag.config.sweep import config_from_root
        from phasediag.results import store

        with (out / "boundaries.csv").open(newline="") as fh:
            header, *rows = list(csv.reader(fh))
        rows = change(header, rows)
        text = io.StringIO()
        csv.writer(text).writerows([header, *rows])
        data = text.getvalue().encode()
        (out / "boundaries.csv").write_bytes(data)
        meta = json.loads((out / "meta.json").read_text())
        config = config_from_root(located(meta["config"]))
        table = store.read_columns(io.StringIO(text.getvalue()), boundaries.column_kinds(config), out)
        meta["boundaries"].update(crossings=len(rows),
                                  slopes=json.loads(json.dumps(boundaries.fit_slopes(config, table))))
        meta["manifest"]["boundaries.csv"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (out / "meta.json").write_text(json.dumps(meta))
    return forge


def _set(column: str, value):
    def change(header, rows):
        j = header.index(column)
        rows[0][j] = value(header, rows[0]) if callable(value) else value
        return rows
    return change


def _edit_entry(change):
    def edit(out: Path) -> None:
        import json

        meta = json.loads((out / "meta.json").read_text())
        change(meta)
        (out / "meta.json").write_text(json.dumps(meta))
    return edit


BOUNDARY_TAMPERINGS = {
    "crossings not a number": _edit_entry(lambda m: m["boundaries"].update(crossings="x")),
    "crossings off by one": _edit_entry(lambda m: m["boundaries"].update(crossings=m["boundaries"]["crossings"] + 1)),
    "slopes garbage": _edit_entry(lambda m: m["boundaries"].update(slopes="x")),
    "a slope without along": _edit_entry(lambda m: m["boundaries"]["slopes"][0].pop("along")),
    "a slope changed": _edit_entry(lambda m: m["boundaries"]["slopes"][0].update(slope=-2.0)),
    "a column kind changed": _edit_entry(lambda m: m["boundaries"]["columns"].update(s="str")),
    "the entry deleted": _edit_entry(lambda m: m.pop("boundaries")),
    "a d off the grid": _forge_csv("d", "3.5"),
    "a crossing outside its cell": _forge_csv("s", "0.5"),
    "an unknown label": _forge_csv("below", "gaseous"),
    "a rule of other labels": _forge_csv("rule", "mechanism"),
    "a boundary number": _forge_csv("boundary", "7"),
    "another along": _forge_csv("along", "d"),
    "a cell of no neighbours": _forge_csv("upper", "0.5"),
    "an integer beyond int64": _forge_csv("crossings_in_cell", "9" * 30),
    "a crossing moved within its cell": _forge_rows(_set("s", lambda h, r: repr(
        math.sqrt(float(r[h.index("lower")]) * float(r[h.index("upper")]))))),
    "below and above swapped": _forge_rows(lambda h, rows: [
        [r[h.index("above")] if i == h.index("below") else r[h.index("below")] if i == h.index("above") else c
         for i, c in enumerate(r)] if k == 0 else r for k, r in enumerate(rows)]),
    "a row dropped": _forge_rows(lambda h, rows: rows[1:]),
    "a row repeated": _forge_rows(lambda h, rows: [rows[0], *rows]),
    "no rows": _forge_rows(lambda h, rows: []),
    "rows reversed": _forge_rows(lambda h, rows: rows[::-1]),
    "crossings_in_cell changed": _forge_rows(_set("crossings_in_cell", "7")),
    "an infinite error": _forge_rows(_set("error", "inf")),
    "a NaN order parameter": _forge_rows(_set("ntk_change", "nan")),
    "the config edited": _edit_entry(lambda m: m["config"]["classify"].update(ntk_threshold=0.2)),
}


@pytest.mark.parametrize("tampering", list(BOUNDARY_TAMPERINGS))
@pytest.mark.parametrize("sampled", [False, True], ids=["typical", "seeds"])
def test_a_tampered_boundaries_table_or_entry_is_one_line_of_bad_input(tmp_path, tampering, sampled):
    from click.testing import CliRunner

    from phasediag.cli import phasediag as group

    config = tmp_path / "b.yaml"
    config.write_text(width_vs_init(n_d=7, n_s=9) + ("init: {seeds: 4}\n" if sampled else ""))
    out = tmp_path / "run"
    phasediag.run(str(config), out=out, plot=False)
    original = (out / "boundaries.csv").read_bytes()
    BOUNDARY_TAMPERINGS[tampering](out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for args in (["plot", out], ["export", out, "--csv"]):
        result = CliRunner().invoke(group, [str(a) for a in args])
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
        assert "internal error" not in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # --resume takes only a result that verifies: this one is computed again
    result = CliRunner().invoke(group, [str(a) for a in ["run", config, "--out", out, "--resume", "-q", "--no-plot"]])
    assert result.exit_code == 0 and (out / "boundaries.csv").read_bytes() == original, result.output


SAMPLED = """name: sampled
sweep: {{d: {{log: [10, 1e6, {n_d}]}}, s: {{log: [1e-8, 1, {n_s}]}}}}
model: {{width: d, output_scale: 1, lr_u: 1, lr_w: 1, init_var_u: s, init_var_w: s}}
data: {{input_var: 1, teacher: 1}}
init: {{seeds: {seeds}, seed: 3}}
boundaries: {{along: s, against: d}}
"""


def test_sampled_boundaries_are_crossings_of_quantiles_over_the_lines_own_draws():
    """With init: {seeds: N}: each crossing is where the phase of the q-quantiles over the seeds (of
    |ntk_change|, alignment_gain, disalignment) changes, every seed's Gram drawn as at the line's first grid
    point (flat index (line start) * N + seed) and scaled with s: recomputed here from core.sample_gram and the
    rules of docs/theory.md section 6, 1e-12 below and above each crossing."""
    from phasediag import core

    seeds, n_s = 8, 13
    config = config_from_text(SAMPLED.format(n_d=4, n_s=n_s, seeds=seeds))
    table = phasediag.run(config.resolved, plot=False).boundaries
    assert set(table["quantile"]) == {0.25, 0.5, 0.75} and table["s"].size >= 20
    d_values = list(config.axes[0].values)
    bits = {(1, 0): "kernel", (1, 1, 1): "kernel_aligning", (1, 1, 0): "kernel_disaligning",
            (0, 1, 1): "alignment", (0, 1, 0): "disalignment", (0, 0): "rescaling"}
    for i in range(table["s"].size):
        first = d_values.index(table["d"][i]) * n_s  # (d is the first axis, s the second)
        width = float(np.round(table["d"][i]))
        for factor, side in ((1 - 1e-12, "below"), (1 + 1e-12, "above")):
            s = table["s"][i] * factor
            gram = core.sample_gram(width, s, s, seed=3, index=first * seeds + np.arange(seeds))
            inv = core.invariants(core.Problem(1.0, 1.0, 1.0, 1.0, 1.0, gram))
            order = core.order_parameters(inv, np.inf)
            q = table["quantile"][i]
            ntk = np.quantile(np.abs(order.ntk_change), q)
            gain, dis = np.quantile(order.alignment_gain, q), np.quantile(order.disalignment, q)
            kernel, rotated = int(ntk < 0.1), int(max(gain, dis) >= 0.1)
            key = (kernel, rotated, int(gain >= dis)) if rotated else (kernel, 0)
            assert bits[key] == table[side][i], (i, side)


def test_sampled_median_boundaries_approach_the_typical_ones_as_the_width_grows():
    """The sampled Gram concentrates on the typical one as d -> infinity: at d = 1e6 the median's boundaries
    are within 0.5 % of section 11's d sigma^2 = 1/sqrt(0.21) and sqrt(99); the quartiles bracket the median
    on the NTK boundary (|ntk_change| falls with s at every seed)."""
    table = table_of(SAMPLED.format(n_d=5, n_s=17, seeds=16))
    wide = (table["d"] == 1e6) & (table["quantile"] == 0.5)
    for rule in ("ntk_threshold", "alignment_threshold"):
        mine = wide & (table["rule"] == rule)
        assert mine.sum() == 1
        assert abs(table["s"][mine][0] * 1e6 / exact_ds(rule, 0.1, 0.1) - 1) < 5e-3
    for d in set(table["d"][table["d"] >= 100]):
        mine = (table["d"] == d) & (table["rule"] == "ntk_threshold")
        assert list(table["quantile"][mine]) == [0.25, 0.5, 0.75] and np.all(np.diff(table["s"][mine]) > 0)


def test_sampled_boundaries_are_identical_whatever_the_chunking_workers_or_shards(tmp_path):
    config = config_from_text(SAMPLED.format(n_d=5, n_s=9, seeds=4)).resolved
    phasediag.run(config, out=tmp_path / "whole", plot=False)
    reference = (tmp_path / "whole" / "boundaries.csv").read_bytes()
    assert reference.count(b"\n") > 10
    phasediag.run(config, out=tmp_path / "chunked", plot=False, chunk_size=7, workers=2)
    assert (tmp_path / "chunked" / "boundaries.csv").read_bytes() == reference
    shards = [tmp_path / f"shard{k}" for k in (1, 2)]
    for k, out in enumerate(shards, 1):
        phasediag.run(config, out=out, plot=False, shard=f"{k}/2", chunk_size=5)
    lifecycle.merge(shards, tmp_path / "merged", plot=False)
    assert (tmp_path / "merged" / "boundaries.csv").read_bytes() == reference
    fig = phasediag.load(tmp_path / "merged").plot("phase")
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "boundaries of quantile 0.5 over seeds; thin: 0.25, 0.75" in legend
    widths = {line.get_linewidth() for ax in fig.axes for line in ax.get_lines() if line.get_xdata().size > 1}
    assert widths == {0.7, 1.4}


@pytest.mark.parametrize("text", [
    "name: none\nsweep: {d: {values: [100000]}, s: {lin: [1e-7, 1e-5, 5]}}\n"
    "model: {width: d, init_var_u: s, init_var_w: s}\nboundaries: {along: s}\n",  # kernel throughout
    "name: none\nsweep: {d: {values: [10]}, r: {values: [1]}}\nmodel: {width: d, init_var_u: 0.1, init_var_w: 0.1}\n"
    "boundaries: {along: r}\n",  # one value along
    "name: none\nsweep: {s: {log: [1e3, 1e4, 3]}}\nmodel: {width: 100, init_var_u: s, init_var_w: s}\n"
    "init: {seeds: 3}\nboundaries: {along: s}\n",  # one axis, sampled
])
def test_an_entry_without_crossings_gives_an_empty_table(tmp_path, text):
    config = tmp_path / "none.yaml"
    config.write_text(text)
    result = phasediag.run(str(config), out=tmp_path / "run", plot=False)
    assert result.boundaries["boundary"].size == 0 and result.meta["boundaries"]["crossings"] == 0
    loaded = phasediag.load(tmp_path / "run")
    assert list(loaded.boundaries) == list(result.boundaries) and loaded.boundaries["boundary"].size == 0


def test_a_sampled_boundary_on_a_one_axis_sweep():
    text = "name: one\nsweep: {s: {log: [1e-4, 1, 5]}}\nmodel: {width: 100, init_var_u: s, init_var_w: s}\n" \
           "init: {seeds: 5}\nboundaries: {along: s, quantiles: [0.5]}\n"
    table = table_of(text)
    assert list(table["rule"]) == ["ntk_threshold", "alignment_threshold"]
    np.testing.assert_allclose(table["s"] * 100, [exact_ds("ntk_threshold", 0.1, 0.1),
                                                  exact_ds("alignment_threshold", 0.1, 0.1)], rtol=0.15)


def test_the_error_covers_the_noise_of_a_nearly_parallel_explicit_gram():
    """G = U W - V^2 with V^2 = 0.9999998 U W magnifies the rounding of V (its expression is evaluated at each
    s) 5e6 times: the label flips back and forth within 1e-9 of the crossing. The core is exact for the rounded
    Gram; the error column reads that noise off the order parameter around the crossing, and every flip lies
    within it."""
    config = config_from_text("""name: parallel
sweep: {v: {values: [-0.9999999]}, s: {log: [1e-12, 1e3, 91]}}
model: {width: 2, init_var_u: 1, init_var_w: 1, lr_w: 3}
init: {gram: [s, 2 * s, v * s * sqrt(2)]}
classify: {alignment_threshold: 0.9999999999}
boundaries: {along: s}
""")
    table = phasediag.run(config.resolved, plot=False).boundaries
    i = int(np.flatnonzero(table["rule"] == "alignment_threshold")[0])
    x, error = table["s"][i], table["error"][i]
    xs = x * (1 + np.linspace(-4e-9, 4e-9, 161))
    names = np.array(LEGENDS["phase"])[boundaries.label_at(config, "phase", {"v": np.full(xs.size, -0.9999999),
                                                                            "s": xs})]
    assert len(set(names[np.abs(xs - x) <= error])) == 2  # (the noisy stretch: both labels)
    assert set(names[xs < x - error]) == {table["below"][i]} and set(names[xs > x + error]) == {table["above"][i]}
    assert 1e-10 < error / x < 1e-8
