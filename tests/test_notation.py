"""Labels in the model's notation (phasediag.plots.notation): expected strings written from the rules, every
bundled config's axes, and that every label is mathtext matplotlib can draw, one complete $...$ per line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from phasediag.config.expr import CONSTANTS, FUNCTIONS, parse
from phasediag.config.reader import read_config
from phasediag.config.sweep import load_config
from phasediag.plots.notation import (NAMES, SYMBOLS, axis_label, expression_tex, mathtext_error, metric_label,
                                      number_tex, rendered_length, value_text, variable_tex)
from phasediag.studies import nonlinear_digits, sgd_drift

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolved(name: str) -> dict:
    """The resolved config (meta.json "config") of a bundled config file, by its reader."""
    path = CONFIGS / name
    if name.startswith("11_"):
        return sgd_drift.parse_study(read_config(path)[0]).resolved
    if name.startswith("12_"):
        return nonlinear_digits.parse_study(read_config(path)[0]).resolved
    if name.split("_")[0] in ("13", "14", "15", "16"):  # the studies of issue 15 (activations, deep)
        from phasediag.jobs import lifecycle

        return lifecycle.resolve(path)[2].resolved
    return load_config(path).resolved


def drawable(label: str) -> None:
    """matplotlib draws `label`: every line has paired unescaped $ and parses as mathtext."""
    for line in label.split("\n"):
        assert len(re.findall(r"(?<!\\)\$", line)) % 2 == 0, f"a line break inside $...$: {label!r}"
    assert mathtext_error(label) is None, label


# ---------------------------------------------------------------- symbols and names

def test_symbols_follow_the_theory_notation():
    assert SYMBOLS["width"] == "d" and SYMBOLS["output_scale"] == r"\kappa"
    assert (SYMBOLS["lr_u"], SYMBOLS["lr_w"]) == (r"\eta_u", r"\eta_w")
    assert (SYMBOLS["init_var_u"], SYMBOLS["init_var_w"]) == (r"\sigma_u^2", r"\sigma_w^2")
    assert (SYMBOLS["input_var"], SYMBOLS["teacher"]) == ("a", "m^*")
    assert [SYMBOLS[k] for k in "UWV"] == ["U", "W", "V"]
    assert (NAMES["width"], NAMES["output_scale"], NAMES["lr_u"]) == ("width", "output scale", "learning rate")
    assert set(NAMES) == set(SYMBOLS)
    for tex in SYMBOLS.values():
        drawable(f"${tex}$")


@pytest.mark.parametrize("name, tex", [
    ("width", "d"), ("output_scale", r"\kappa"), ("alpha", r"\alpha"), ("omega", r"\omega"), ("Theta", r"\Theta"),
    ("r", "r"), ("s2", "s_{2}"), ("x_y", "x_{y}"), ("eta_u", r"\eta_{u}"), ("lam", r"\lambda"),
    ("su", "s_{u}"), ("ew", "e_{w}"), ("mu", r"\mu"), ("lr_ratio", r"\mathrm{lr\_ratio}"), ("x_", r"\mathrm{x\_}"),
    ("Alpha", r"\mathrm{Alpha}"), ("batch_size", r"\mathrm{batch\_size}"),
])
def test_variable_tex(name, tex):
    assert variable_tex(name) == tex
    drawable(f"${tex}$")


@pytest.mark.parametrize("value, tex", [
    (0.001, "10^{-3}"), (2.5e-05, r"2.5 \times 10^{-5}"), (1e6, "10^{6}"), (1500, "1500"), (0.25, "0.25"),
    (3.0, "3"), (4000, "4000"), (1 / 3, "0.333"), (0.01, "10^{-2}"), (0.1, "0.1"), (123456, r"1.23 \times 10^{5}"),
    (-2.5e-05, r"-2.5 \times 10^{-5}"), (-1, "-1"), (float("inf"), r"\infty"), (-float("inf"), r"-\infty"), (0, "0"),
])
def test_number_tex(value, tex):
    assert number_tex(value) == tex


def test_number_tex_digits():
    assert number_tex(1234.5, digits=2) == "1200"
    assert number_tex(0.123456, digits=5) == "0.12346"


# ---------------------------------------------------------------- expressions

@pytest.mark.parametrize("text, tex", [
    ("sqrt(r)", r"\sqrt{r}"), ("1 / sqrt(r)", r"1/\sqrt{r}"), ("kappa**2", r"\kappa^{2}"), ("2 * s", "2s"),
    ("r * s", r"r\,s"), ("s**-0.5", "s^{-0.5}"), ("exp(x)", "e^{x}"), ("abs(x)", "|x|"), ("log(x)", r"\log x"),
    ("log(x + 1)", r"\log(x + 1)"), ("log10(x)", r"\log_{10} x"), ("-1 - 2 * k - s", "-1 - 2k - s"),
    ("1 / kappa**2", r"1/\kappa^{2}"), ("q * sqrt(lam)", r"q\sqrt{\lambda}"), ("rho * q", r"\rho\,q"),
    ("2 * (a + b)", "2(a + b)"), ("(a + b) / (c * d)", r"(a + b)/(c\,d)"), ("a - (b - c)", "a - (b - c)"),
    ("a + (b + c)", "a + b + c"), ("a + -b", "a + (-b)"), ("a * -b", r"a \cdot (-b)"), ("-(a + b)", "-(a + b)"),
    ("-a**2", "-a^{2}"), ("(-a)**2", "(-a)^{2}"), ("a**b**c", "a^{b^{c}}"), ("(a**b)**c", "(a^{b})^{c}"),
    ("exp(x)**2", "(e^{x})^{2}"), ("log(x) * y", r"(\log x)\,y"), ("(a / b) * c", r"(a/b)\,c"), ("2 * 3", r"2 \cdot 3"),
    ("2 * pi", r"2\pi"), ("1e-3 * s", r"10^{-3}\,s"), ("x ** (1/2)", "x^{1/2}"), ("(s)", "s"), ("+s", "s"),
])
def test_expression_tex(text, tex):
    assert expression_tex(text) == tex
    drawable(f"${tex}$")


@pytest.mark.parametrize("text, tex", [("1 +", r"\mathrm{1\ +}"), ("a $ b", r"\mathrm{a\ \$\ b}"),
                                       ("f(x)", r"\mathrm{f(x)}"), ("{x}_^", r"\mathrm{\{x\}\_\wedge }")])
def test_unparsable_text_is_shown_upright(text, tex):
    assert expression_tex(text) == tex
    drawable(f"${tex}$")


_NAMES = ["s", "r", "kappa", "lam", "s2", "x_y", "lr_ratio", "width", "Theta", "pi", "e", "su", "x_", "T_max"]
_LEAVES = st.one_of(st.sampled_from(_NAMES), st.floats(0, 1e15, allow_nan=False), st.integers(0, 10**6).map(float),
                    st.sampled_from([1e-300, 2.5e-5, 0.001, 1e20]))
_TREES = st.recursive(_LEAVES, lambda sub: st.one_of(
    st.tuples(st.just("neg"), sub),
    st.tuples(st.just("call"), st.sampled_from(sorted(FUNCTIONS)), sub),
    st.tuples(st.sampled_from(["+", "-", "*", "/", "**"]), sub, sub)), max_leaves=12)


def _source(node) -> str:
    """A tree of phasediag.config.expr as text, fully parenthesized."""
    if isinstance(node, float):
        return repr(node)
    if isinstance(node, str):
        return node
    if node[0] == "neg":
        return f"-({_source(node[1])})"
    if node[0] == "call":
        return f"{node[1]}({_source(node[2])})"
    return f"({_source(node[1])}) {node[0]} ({_source(node[2])})"


@settings(max_examples=40)
@given(_TREES)
def test_expression_tex_of_any_tree_is_valid_mathtext(tree):
    text = _source(tree)
    assert parse(text) == tree  # (the strategy builds trees of the grammar)
    tex = expression_tex(text)
    assert "\n" not in tex and r"\ " not in tex  # (the upright fallback would show the source's spaces)
    drawable(f"${tex}$")


@settings(max_examples=25)
@given(st.text(max_size=40))
@example("#A")  # (found by this test: mathtext read \#A as one unknown symbol)
def test_expression_tex_of_any_text_never_raises(text):
    drawable(f"${expression_tex(text)}$" if text.strip() else "$x$")


def test_deeply_nested_signs_fall_back_to_text():
    text = "-" * 1900 + "x"
    assert expression_tex(text).startswith(r"\mathrm{")


def test_constants_and_functions_are_covered():
    assert set(FUNCTIONS) == {"sqrt", "log", "exp", "log10", "abs"} and set(CONSTANTS) == {"pi", "e"}


# ---------------------------------------------------------------- axis labels

FINITE = {"sweep": {"d": {}, "s": {}, "kappa": {}, "r": {}, "t": {}},
          "model": {"width": "d", "output_scale": "kappa", "lr_u": "1 / kappa**2", "lr_w": "1 / kappa**2",
                    "init_var_u": "s", "init_var_w": "s"},
          "data": {"input_var": "1.0", "teacher": "1.0", "noise_var": "0.0"}, "init": "typical"}


def test_axis_label_cases():
    assert axis_label(FINITE, "d") == "width $d$"  # (a)
    assert axis_label(FINITE, "s") == r"$\sigma_u^2 = \sigma_w^2 = s$"  # (b)
    assert axis_label(FINITE, "kappa") == r"output scale $\kappa$  ($\eta_u = \eta_w = 1/\kappa^{2}$)"  # (c)
    assert axis_label(FINITE, "t") == "$t$"  # (d)
    assert axis_label(FINITE, "s", {"s": "init $s$"}) == "init $s$"


def test_axis_label_lists_keys_in_model_order():
    config = {"model": {"lr_w": "1 / sqrt(r)", "init_var_u": "r * s", "lr_u": "sqrt(r)"}, "data": {"teacher": "r"}}
    assert axis_label(config, "r") == (r"$r$  ($m^* = r$, $\eta_u = \sqrt{r}$, $\eta_w = 1/\sqrt{r}$, "
                                       r"$\sigma_u^2 = r\,s$)")


def test_a_key_named_by_another_variable():
    config = {"model": {"width": "n", "output_scale": "1 / sqrt(n)"}}
    assert axis_label(config, "n") == r"$n$  ($d = n$, $\kappa = 1/\sqrt{n}$)"
    assert axis_label({"model": {"width": "n"}}, "n") == "width $d$"


def test_explicit_gram_replaces_width_and_variances():
    config = {"model": {"width": "d", "init_var_u": "d", "init_var_w": "q"}, "init": {"gram": ["d", "d", "0.5 * q"]}}
    assert axis_label(config, "d") == "$U = W = d$"
    assert axis_label(config, "q") == r"$q$  ($V = 0.5q$)"


def test_scaling_entries_are_width_exponents():
    config = {"mode": "scaling", "model": {
        "output_scale": {"base": "1.0", "exp": "k"}, "lr_u": {"base": "1.0", "exp": "-1 - 2 * k - s"},
        "lr_w": {"base": "1.0", "exp": "-1 - 2 * k - s"}, "init_var_u": {"base": "2 * b", "exp": "0.0"}}}
    assert axis_label(config, "k") == r"$k$  ($\kappa \propto d^{k}$, $\eta_u = \eta_w \propto d^{-1 - 2k - s}$)"
    assert axis_label(config, "b") == r"$b$  ($\sigma_u^2 = 2b\,d^{0}$)"


def test_long_labels_break_between_parts_only():
    config = {"model": {"lr_u": "sqrt(r)", "lr_w": "1 / sqrt(r)"}}
    assert axis_label(config, "r", max_chars=12) == "$r$\n" r"($\eta_u = \sqrt{r}$," "\n" r"$\eta_w = 1/\sqrt{r}$)"
    assert axis_label(config, "r", max_chars=20) == "$r$\n" r"($\eta_u = \sqrt{r}$, $\eta_w = 1/\sqrt{r}$)"
    many = {"model": {"output_scale": "1 / sqrt(t)", "lr_u": "t**2", "lr_w": "t / 2", "init_var_u": "exp(-t)",
                      "init_var_w": "log(t)", "input_var": "abs(t)"}}
    broken, whole = axis_label(many, "t"), axis_label(many, "t", max_chars=10**6)
    assert "\n" in broken and "\n" not in whole and rendered_length(whole) > 48
    assert broken.replace("$\n(", "$  (", 1).replace(",\n", ", ") == whole
    assert all(rendered_length(line) <= 48 for line in broken.split("\n"))
    drawable(broken)


def test_rendered_length():
    assert rendered_length(r"$\sigma_u^2 = \sigma_w^2 = s$") == 13
    assert rendered_length("width $d$") == 7


# ---------------------------------------------------------------- every bundled config

BUNDLED = {
    "1_width_vs_init.yaml": {"d": "width $d$", "s": r"$\sigma_u^2 = \sigma_w^2 = s$"},
    "big.yaml": {"d": "width $d$", "s": r"$\sigma_u^2 = \sigma_w^2 = s$"},
    "2_output_scale_vs_init.yaml": {"kappa": r"output scale $\kappa$  ($\eta_u = \eta_w = 1/\kappa^{2}$)",
                                    "s": r"$\sigma_u^2 = \sigma_w^2 = s$"},
    "3_lr_ratio_vs_init.yaml": {"r": r"$r$  ($\eta_u = \sqrt{r}$, $\eta_w = 1/\sqrt{r}$)",
                                "s": r"$\sigma_u^2 = \sigma_w^2 = s$"},
    "4_mechanism_trajectories.yaml": {"q": r"$q$  ($U = W = q$, $V = \rho\,q$)", "rho": r"$\rho$  ($V = \rho\,q$)"},
    "5_init_scale_alignment.yaml": {"s": r"$\sigma_u^2 = \sigma_w^2 = s$"},
    "6_init_scale_vs_imbalance.yaml": {
        "q": r"$q$  ($\sigma_u^2 = q\sqrt{\lambda}$, $\sigma_w^2 = q/\sqrt{\lambda}$)",
        "lam": r"$\lambda$  ($\sigma_u^2 = q\sqrt{\lambda}$, $\sigma_w^2 = q/\sqrt{\lambda}$)"},
    "7_gd_lr_vs_width.yaml": {"eta": r"$\eta_u = \eta_w = \eta$", "d": r"width $d$  ($\kappa = 1/\sqrt{d}$)"},
    "8_limit_output_scale_vs_init.yaml": {
        "k": r"$k$  ($\kappa \propto d^{k}$, $\eta_u = \eta_w \propto d^{-1 - 2k - s}$)",
        "s": r"$s$  ($\sigma_u^2 = \sigma_w^2 \propto d^{s}$, $\eta_u = \eta_w \propto d^{-1 - 2k - s}$)"},
    "9_limit_layer_rates.yaml": {"eu": r"$e_{u}$  ($\eta_u \propto d^{e_{u}}$)",
                                 "ew": r"$e_{w}$  ($\eta_w \propto d^{e_{w}}$)"},
    "10_limit_init_imbalance.yaml": {"su": r"$s_{u}$  ($\sigma_u^2 \propto d^{s_{u}}$, $\eta_w \propto d^{-s_{u}}$)",
                                     "sw": r"$s_{w}$  ($\sigma_w^2 \propto d^{s_{w}}$, $\eta_u \propto d^{-s_{w}}$)"},
    "11_gd_vs_sgd.yaml": {"lr": r"$\eta_u = \eta_w = \eta$", "batch_size": "batch size $B$",
                          "noise_var": r"label-noise variance $\sigma_\epsilon^2$"},
    "12_nonlinear_digits.yaml": {"init_scale": "init scale $s$"},
    "13_activations_vs_theory.yaml": {},  # no sweep: its axes are the step and the cases' curves
    "14_deep_relu_init_scale.yaml": {"init_scale": "init scale $s$"},
    "15_deep_init_scale_losses.yaml": {"init_scale": "init scale $s$"},
    "16_activations_label_map.yaml": {},  # its axes (width, initial variance) are the map's, drawn by the study
    "17_width_vs_init_boundaries.yaml": {"d": "width $d$", "s": r"$\sigma_u^2 = \sigma_w^2 = s$"},
}


def test_every_bundled_config_is_covered():
    assert sorted(BUNDLED) == sorted(p.name for p in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_config_labels(name):
    config = resolved(name)
    assert list(config.get("sweep", {})) == list(BUNDLED[name])
    for var, label in BUNDLED[name].items():
        assert axis_label(config, var) == label
        drawable(label)


def test_sgd_rates_with_a_layer_ratio():
    config = resolved("11_gd_vs_sgd.yaml")
    config["model"]["lr_ratio"] = 2.0  # eta_u = 2 lr, eta_w = lr
    assert axis_label(config, "lr") == r"learning rate $\eta$  ($\eta_w = \eta$, $\eta_u = 2\eta$)"


# ---------------------------------------------------------------- titles, metrics, checking

def test_value_text():
    assert value_text("s", 0.01) == "$s = 10^{-2}$"
    assert value_text("kappa", 2.5) == r"$\kappa = 2.5$"
    assert value_text("lr_ratio", 1e-8) == r"$\mathrm{lr\_ratio} = 10^{-8}$"


def test_metric_label():
    meta = {"metrics": {"tau": {"label": r"time scale $\tau$"}}}
    assert metric_label(meta, "tau") == r"time scale $\tau$"
    assert metric_label(meta, "tau", {"tau": "relaxation time"}) == "relaxation time"
    assert metric_label(meta, "phase", {"tau": "x"}) == "phase"


def test_mathtext_error():
    assert mathtext_error("width $d$") is None and mathtext_error(r"costs \$5") is None
    assert mathtext_error("plain text") is None
    assert mathtext_error("$x") == "unpaired $ in '$x'"
    assert mathtext_error("$x$\n$y") == "line 2: unpaired $ in '$y'"
    assert mathtext_error("$x\n$").startswith("line 1: unpaired $")
    message = mathtext_error(r"$\frac{1}$")
    assert message.startswith("not valid mathtext") and "\n" not in message
    assert mathtext_error("$x^^2$") == "not valid mathtext: unexpected '^' in '$x^^2$'"
