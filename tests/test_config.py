"""Config parsing and expressions: every error path names the key path and line; expressions are safe."""

import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phasediag.config import expr
from phasediag.config.sweep import ConfigError, config_from_text

BASE = """\
name: demo
sweep:
  d: {log: [1, 1e6, 7]}
  s: {lin: [0.1, 1, 4]}
model:
  width: d
  output_scale: 1 / sqrt(d)
  lr_u: 1
  lr_w: 2
  init_var_u: s
  init_var_w: s
data: {input_var: 1, teacher: -1}
"""


def load(text: str):
    return config_from_text(textwrap.dedent(text), source="test.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    return str(info.value)


def test_valid_config_resolves_axes_and_defaults():
    c = load(BASE)
    assert c.shape == (7, 4) and c.axis_names == ("d", "s")
    np.testing.assert_allclose(c.axes[0].values, np.logspace(0, 6, 7))
    np.testing.assert_allclose(c.axes[1].values, np.linspace(0.1, 1, 4))
    assert c.horizon == np.inf and c.optimizer == "flow" and c.init_kind == "typical"
    assert c.data["noise_var"].tree == 0.0 and c.ntk_threshold == 0.1
    assert c.plot["x"] == "d" and c.plot["y"] == "s" and c.plot["formats"] == ["png"]
    assert c.resolved["model"]["output_scale"] == "1 / sqrt(d)"


def test_linear_axes_hold_the_decimals_they_step_through():
    """lin: [start, stop, num] gives the floats nearest the evenly spaced decimals (0 exactly, 0.3 as the
    literal 0.3), not np.linspace's accumulated roundings (-1.1e-16 at the middle of [-0.9, 0.9, 7])."""
    values = load(BASE.replace("{lin: [0.1, 1, 4]}", "{lin: [-0.9, 0.9, 7]}")).axes[1].values
    assert values.tolist() == [-0.9, -0.6, -0.3, 0.0, 0.3, 0.6, 0.9]
    assert np.linspace(-0.9, 0.9, 7)[3] != 0.0  # (what the axis was before)
    assert load(BASE).axes[1].values.tolist() == [0.1, 0.4, 0.7, 1.0]


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6), st.integers(0, 6), st.integers(0, 6),
       st.integers(2, 2000))
def test_linear_values_are_the_exact_decimal_grid_correctly_rounded(p, q, dp, dq, num):
    """Every value is float(exact rational grid point) (one rounding), the ends are as written, the values
    are monotone; checked with fractions.Fraction, independently of the integer arithmetic used."""
    from fractions import Fraction

    from phasediag.config.sweep import linear_values

    a, b = Fraction(p, 10**dp), Fraction(q, 10**dq)
    if a == b:
        return
    start, stop = float(a), float(b)
    values = linear_values(start, stop, num)
    exact = [float(Fraction(repr(start)) + (Fraction(repr(stop)) - Fraction(repr(start))) * k / (num - 1))
             for k in range(num)]
    assert values.tolist() == exact
    assert values[0] == start and values[-1] == stop
    steps = np.diff(values)
    assert (steps > 0).all() if stop > start else (steps < 0).all()


def test_linear_values_fall_back_to_linspace_beyond_exact_integers():
    from phasediag.config.sweep import linear_values

    values = linear_values(1e-300, 1e-299, 5)  # numerators of 300 digits: np.linspace's values
    assert np.array_equal(values, np.linspace(1e-300, 1e-299, 5))
    assert linear_values(0.1, 0.7, 1).tolist() == [0.1]
    wide = linear_values(-1e308, 1e308, 5)  # stop - start overflows: still finite, the ends as written
    assert np.isfinite(wide).all() and wide[0] == -1e308 and wide[-1] == 1e308 and wide[2] == 0.0
    assert (np.diff(wide) > 0).all()


def test_yaml_1_1_exponent_numbers_are_numbers():
    c = load(BASE.replace("lr_w: 2", "lr_w: 1e-3"))
    assert c.model["lr_w"].tree == pytest.approx(1e-3)
    c = load(BASE.replace("{log: [1, 1e6, 7]}", "{values: [1, 1e2, 3E4]}"))
    np.testing.assert_array_equal(c.axes[0].values, [1.0, 100.0, 3e4])


@pytest.mark.parametrize(
    "change,expected",
    [
        (("lr_w: 2", "lr_ww: 2"), "model.lr_ww (line 9): unknown key (did you mean 'lr_w'?)"),
        (("lr_w: 2", "lr_w: 2 * dd"), "model.lr_w (line 9): unknown variable 'dd' (did you mean 'd'?)"),
        (("lr_w: 2", "lr_w: 2 +"), "model.lr_w (line 9): expected"),
        (("lr_w: 2", "lr_w: [1, 2]"), "model.lr_w (line 9): must be a number or an expression"),
        (("lr_w: 2", "lr_w: sqrtt(d)"), "unknown function 'sqrtt' (did you mean 'sqrt'?)"),
        (("  width: d\n", ""), "model.width: is required, missing in 'model' (line 5)"),
        (("name: demo", "name: my/../demo"), "name (line 1): use letters"),
        (("name: demo\n", ""), "name: is required, missing in the top level"),
        (("{log: [1, 1e6, 7]}", "{log: [0, 1e6, 7]}"), "sweep.d.log[0] (line 3): must be > 0"),
        (("{log: [1, 1e6, 7]}", "{log: [1, 1e6]}"), "sweep.d.log (line 3): must be [start, stop, num]"),
        (("{log: [1, 1e6, 7]}", "{log: [1, 1e6, 7.5]}"), "sweep.d.log[2] (line 3): must be an integer"),
        (("{log: [1, 1e6, 7]}", "{logg: [1, 1e6, 7]}"), "sweep.d.logg (line 3): unknown key (did you mean 'log'?)"),
        (("{log: [1, 1e6, 7]}", "{values: []}"), "sweep.d.values (line 3): must be a non-empty list"),
        (("{log: [1, 1e6, 7]}", "{values: [1, 1]}"), "values must be distinct"),
        (("{log: [1, 1e6, 7]}", "{log: [1, 2, 3], lin: [1, 2, 3]}"), "give exactly one of"),
        (("  d: {log: [1, 1e6, 7]}", "  sqrt: {log: [1, 1e6, 7]}"), "sweep.sqrt (line 3): sweep variable names"),
        (("data: {input_var: 1, teacher: -1}", "data: {input_var: one}"), "data.input_var (line 12): unknown variable 'one'"),
        (("data: {input_var: 1, teacher: -1}", "data: {input_var: 1, teacher: -1, noise: 1}"), "data.noise (line 12): unknown key (did you mean 'noise_var'?)"),
    ],
)
def test_errors_name_key_path_and_line(change, expected):
    old, new = change
    assert old in BASE
    assert expected in error_of(BASE.replace(old, new, 1))


def test_unknown_top_level_key_and_broken_yaml():
    assert "swep (line 13): unknown key (did you mean 'sweep'?)" in error_of(BASE + "swep: 1\n")
    broken = error_of(BASE.replace("{log: [1, 1e6, 7]}", "{log: [1, 1e6, 7]"))
    assert "test.yaml: line 4: broken YAML" in broken and "line 3" in broken  # noticed at 4, opened at 3
    assert "duplicate key" in error_of(BASE + "name: again\n")
    assert "is empty" in error_of("")
    assert "must be a mapping" in error_of("- 1\n- 2\n")
    assert "sweep (line 2): needs at least one variable" in error_of(BASE.replace(
        "sweep:\n  d: {log: [1, 1e6, 7]}\n  s: {lin: [0.1, 1, 4]}", "sweep: {}"))
    assert "unsupported tag" in error_of(BASE + "description: !!python/object:os.system ls\n")


@pytest.mark.parametrize(
    "section,expected",
    [
        ("init: sampled", "init (line 13): unknown init 'sampled'"),
        ("init: {seeds: 0}", "init.seeds (line 13): must be > 0"),
        ("init: {seed: 3}", "init.seeds: is required"),
        ("init: {gram: [1, 2]}", "init.gram (line 13): must be a list [U, W, V]"),
        ("init: {gram: [1, 1, 0], seeds: 2}", "give either gram or seeds"),
        ("train: {optimizer: adam}", "train.optimizer (line 13): must be flow or gd"),
        ("train: {horizon: -1}", "train.horizon (line 13): must be > 0"),
        ("train: {horizon: 10.5, optimizer: gd}", "whole number of steps"),
        ("train: {times: {log: [1, 10, 0]}}", "train.times.log[2] (line 13): must be > 0"),
        ("train: {optimizer: gd, times: {values: [1.5, 3]}}", "train.times (line 13): with optimizer gd times are whole"),
        ("train: {optimizer: gd, times: {values: [0, 1e9]}}", "train.times (line 13): at most 1,000,000 GD steps"),
        ("train: {optimizer: gd, max_steps: 1e12}", "train.max_steps (line 13): must be at most 1,000,000"),
        ("classify: {alignment_threshold: 1.5}", "classify.alignment_threshold (line 13): must be in (0, 1)"),
        ("classify: {ntk_threshold: 0}", "classify.ntk_threshold (line 13): must be > 0"),
        ("plot: {x: q}", "plot.x (line 13): 'q' is not a sweep variable"),
        ("plot: {x: d, y: d}", "plot.y (line 13): must differ from plot.x"),
        ("plot: {maps: [phase, ntk_chnage]}", "plot.maps[1] (line 13): unknown map 'ntk_chnage' (did you mean 'ntk_change'?)"),
        ("plot: {formats: [png, gif]}", "plot.formats[1] (line 13): unknown format 'gif'"),
    ],
)
def test_section_errors(section, expected):
    assert expected in error_of(BASE + section + "\n")


def test_sections_parse():
    c = load(BASE + "init: {seeds: 5, seed: 42}\ntrain: {optimizer: gd, times: {lin: [0, 1000, 51]}}\n")
    assert c.shape == (7, 4, 5) and c.axis_names == ("d", "s", "seed") and c.seed == 42
    assert np.all(c.times == np.round(c.times)) and len(np.unique(c.times)) == len(c.times)
    c = load(BASE + "init: {gram: [d, 2 * d, 0.5 * d]}\n")
    assert c.init_kind == "gram" and len(c.gram) == 3


# ---- expressions ----

@pytest.mark.parametrize(
    "text,value",
    [("1 / sqrt(d)", 0.5), ("-2**2", -4.0), ("2**-1", 0.5), ("d**0.5**2", 4**0.25), ("(d + 1) * 2", 10.0),
     ("exp(log(d))", 4.0), ("1e-3 * d", 4e-3), ("pi * 0 + e * 0 + d", 4.0), ("- -d", 4.0), ("log10(d * 25)", 2.0)],
)
def test_expression_values(text, value):
    assert expr.evaluate(expr.parse(text), {"d": np.array(4.0)}) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "d.real", "[d]", "lambda: 1", "d if d else 1", "open('x')",
     "d; 1", "d = 1", "1 2", "(1", "1)", "", "d ** ", "f(d)"],
)
def test_expressions_outside_the_grammar_are_rejected(text):
    with pytest.raises(expr.ExpressionError):
        expr.check_names(expr.parse(text), ["d"])


def test_non_finite_values_are_errors():
    with pytest.raises(expr.ExpressionError):
        expr.evaluate(expr.parse("1 / (d - 4)"), {"d": np.array([3.0, 4.0])})
    with pytest.raises(expr.ExpressionError):
        expr.evaluate(expr.parse("log(d - 5)"), {"d": np.array([4.0])})


@pytest.mark.parametrize("change, shown", [
    (("lr_u: 1", "lr_u: [1, 2]"), "got [1, 2]"),
    (("lr_u: 1", "lr_u: {a: 1}"), "got {'a': 1}"),
    (("d: {log: [1, 1e6, 7]}", "d: {log: [[1], 1e6, 7]}"), "got [1]"),
])
def test_errors_show_the_yaml_value_not_internal_objects(change, shown):
    message = error_of(BASE.replace(*change))
    assert shown in message and "Located" not in message


def test_log_sweep_endpoints_are_exactly_as_written():
    from phasediag.config.sweep import config_from_text

    config = config_from_text("name: e\nsweep:\n  d: {log: [0.3, 7.1, 5]}\n  s: {log: [3, 3, 1]}\n"
                              "model: {width: 10, init_var_u: s, init_var_w: s, lr_u: d}\n", source="e")
    d, s = (axis.values for axis in config.axes)
    assert d[0] == 0.3 and d[-1] == 7.1 and np.all(np.diff(d) > 0)  # 10**log10(0.3) is 0.3 - 2^-54
    assert s.tolist() == [3.0]


def test_map_of_another_optimizer_is_refused_with_its_line():
    from phasediag.config.sweep import ConfigError, config_from_text

    text = ("name: m\nsweep:\n  d: {log: [1, 100, 3]}\nmodel: {width: d, init_var_u: 1, init_var_w: 1}\n"
            "plot:\n  maps: [phase, gd_outcome]\n")
    with pytest.raises(ConfigError, match=r"plot\.maps\[1\] \(line 6\): map 'gd_outcome' exists only for "
                                          r"train\.optimizer: gd \(this sweep uses flow\)"):
        config_from_text(text, source="m")
    config_from_text(text + "train: {optimizer: gd, horizon: 100}\n", source="m")  # fine under GD


@pytest.mark.parametrize("text", ["(" * 400 + "d" + ")" * 400, "-" * 1500 + "d", "d+" * 1200 + "d"])
def test_pathological_expressions_are_a_clear_error(text):
    from phasediag.config import expr

    with pytest.raises(expr.ExpressionError, match="nested too deeply|longer than 2000"):
        expr.parse(text)
