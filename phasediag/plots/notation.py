r"""Labels in the model's notation (docs/theory.md section 1): a run's resolved config -> matplotlib mathtext.

A pure module: the stdlib and the config expression parser only (matplotlib is imported lazily by
:func:`mathtext_error`). Every function returns a string that matplotlib renders as a label: math sits in
``$...$`` pieces and a line break never falls inside one (matplotlib lays out each line on its own).

>>> axis_label({"sweep": {"r": {}}, "model": {"lr_u": "sqrt(r)", "lr_w": "1 / sqrt(r)"}}, "r")
'$r$  ($\\eta_u = \\sqrt{r}$, $\\eta_w = 1/\\sqrt{r}$)'
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from phasediag.config import expr

__all__ = ["SYMBOLS", "NAMES", "KEY_ORDER", "MAX_CHARS", "variable_tex", "escape_text", "number_tex",
           "expression_tex", "axis_label", "rendered_length", "value_text", "metric_label", "mathtext_error"]

#: model/data keys (and the Gram entries of init.gram) -> TeX, as docs/theory.md sections 1-2 write them
SYMBOLS: dict[str, str] = {
    "width": "d", "output_scale": r"\kappa", "lr_u": r"\eta_u", "lr_w": r"\eta_w",
    "init_var_u": r"\sigma_u^2", "init_var_w": r"\sigma_w^2", "input_var": "a", "teacher": "m^*",
    "noise_var": r"\sigma_\epsilon^2",  # theory.md names no symbol: the label-noise variance, sigma_eps^2
    "U": "U", "W": "W", "V": "V",
}
#: key -> words, written before the symbol when one key is swept alone ("width $d$")
NAMES: dict[str, str] = {
    "width": "width", "output_scale": "output scale", "lr_u": "learning rate", "lr_w": "learning rate",
    "init_var_u": "init variance", "init_var_w": "init variance", "input_var": "input variance",
    "teacher": "teacher slope", "noise_var": "label-noise variance", "U": "Gram entry", "W": "Gram entry",
    "V": "Gram entry",
}
#: the order in which an axis label lists the keys that use its variable
KEY_ORDER = ("width", "output_scale", "lr_u", "lr_w", "init_var_u", "init_var_w", "input_var", "teacher",
             "noise_var", "U", "W", "V")
MAX_CHARS = 48  # rendered characters of one label line before it is broken between its parts

# ---------------------------------------------------------------- names

_GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "pi", "varpi", "rho", "varrho", "sigma", "varsigma", "tau",
          "upsilon", "phi", "varphi", "chi", "psi", "omega",
          "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega")
# `lambda` is a Python keyword, so sweeps spell it like this (config 6 sweeps `lam`)
_GREEK_SPELLINGS = {"lam": "lambda", "lamda": "lambda", "lmbda": "lambda"}
_LETTERS_DIGITS = re.compile(r"([A-Za-z]+)([0-9]+)")
_LAYER = re.compile(r"([a-z])([uw])")  # su, sw, eu, ew: the width exponents of docs/theory.md section 7


def _greek(name: str) -> str | None:
    name = _GREEK_SPELLINGS.get(name, name)
    return "\\" + name if name in _GREEK else None


def _head(name: str) -> str | None:
    """A single letter or a Greek letter's name as TeX (None otherwise)."""
    if len(name) == 1 and name.isalpha() and name.isascii():
        return name
    return _greek(name)


def _subscript(name: str) -> str | None:
    """A short subscript: digits, one letter, a Greek name, or up to three letters (upright)."""
    if name.isdigit() or _head(name) is not None:
        return _head(name) or name
    if name.isascii() and name.isalnum() and len(name) <= 3:
        return rf"\mathrm{{{name}}}"
    return None


def variable_tex(name: str) -> str:
    r"""A sweep variable's name as TeX (no $): always valid mathtext.

    >>> [variable_tex(n) for n in ("width", "alpha", "Theta", "r", "s2", "x_y", "su", "lr_ratio")]
    ['d', '\\alpha', '\\Theta', 'r', 's_{2}', 'x_{y}', 's_{u}', '\\mathrm{lr\\_ratio}']
    """
    if name in SYMBOLS:
        return SYMBOLS[name]
    if _head(name) is not None:
        return _head(name)
    digits = _LETTERS_DIGITS.fullmatch(name)
    if digits:
        head = _head(digits[1]) or rf"\mathrm{{{digits[1]}}}"
        return f"{head}_{{{digits[2]}}}"
    if _LAYER.fullmatch(name):
        return f"{name[0]}_{{{name[1]}}}"
    parts = name.split("_")
    if len(parts) == 2 and _head(parts[0]) and _subscript(parts[1]):
        return f"{_head(parts[0])}_{{{_subscript(parts[1])}}}"
    return rf"\mathrm{{{escape_text(name)}}}"


#: TeX specials inside \mathrm{...} (mathtext reads \# before a letter as one unknown symbol: \#{} ends it)
_ESCAPES = {"_": r"\_", "#": r"\#{}", "$": r"\$", "%": r"\%", "{": r"\{", "}": r"\}", "\\": r"\backslash ",
            "^": r"\wedge ", '"': "'", "`": "'", " ": r"\ "}


def escape_text(text: str) -> str:
    r"""`text` made safe inside ``\mathrm{...}``: TeX specials escaped, other whitespace and non-ASCII as ``?``.

    >>> escape_text("lr_ratio 2")
    'lr\\_ratio\\ 2'
    """
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isascii() and char.isprintable():
            out.append(char)
        else:
            out.append(r"\ " if char.isspace() else "?")
    return "".join(out)


# ---------------------------------------------------------------- numbers

def number_tex(value: float, digits: int = 3) -> str:
    r"""A number as TeX (no $) with `digits` significant digits: positional from 0.01 to 10^5 (integers below
    10^5 exactly), else scientific; powers of ten from 10^{-2} down as such (as log-axis ticks show them).

    >>> [number_tex(v) for v in (0.001, 2.5e-05, 1e6, 1500, 0.25, -3, float("inf"))]
    ['10^{-3}', '2.5 \\times 10^{-5}', '10^{6}', '1500', '0.25', '-3', '\\infty']
    """
    value = float(value)
    if math.isnan(value):
        return r"\mathrm{nan}"
    if value < 0:
        return "-" + number_tex(-value, digits)
    if math.isinf(value):
        return r"\infty"
    if value == int(value) and value < 1e5:
        return str(int(value))
    mantissa, exponent = f"{value:.{max(digits, 1) - 1}e}".split("e")
    exponent, mantissa = int(exponent), _trim(mantissa)
    if -2 <= exponent <= 4 and not (mantissa == "1" and exponent < -1):  # 0.01 .. 99999 positional, but 10^{-2}
        return _trim(f"{float(f'{value:.{max(digits, 1) - 1}e}'):.{max(0, digits - 1 - exponent)}f}")
    return f"10^{{{exponent}}}" if mantissa == "1" else rf"{mantissa} \times 10^{{{exponent}}}"


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


# ---------------------------------------------------------------- expressions

_ADD, _MUL, _NEG, _POW, _ATOM = 1, 2, 3, 4, 5  # rendering precedence, loosest first
_LOGS = {"log": r"\log", "log10": r"\log_{10}"}


def _prec(node: Any) -> int:
    if isinstance(node, float):
        return _NEG if node < 0 or "times" in number_tex(node) else _ATOM
    if isinstance(node, str):
        return _ATOM
    op = node[0]
    if op == "call":
        return _POW if node[1] == "exp" else _MUL if node[1] in _LOGS else _ATOM
    return {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "neg": _NEG, "**": _POW}[op]


def _open_right(node: Any) -> bool:
    """Whether the rendering ends in a bare `\\log x`, which a following factor would seem to join."""
    if isinstance(node, tuple) and node[0] == "call":
        return node[1] in _LOGS
    if isinstance(node, tuple) and node[0] in ("*", "/", "neg"):
        return _open_right(node[-1])
    return False


def _wrap(tex: str, needed: bool) -> str:
    return f"({tex})" if needed else tex


def _tex(node: Any) -> str:
    if isinstance(node, float):
        return number_tex(node)
    if isinstance(node, str):
        return variable_tex(node)
    op = node[0]
    if op == "call":
        return _call(node[1], node[2])
    if op == "neg":
        inner = _tex(node[1])
        return "-" + _wrap(inner, _prec(node[1]) < _MUL or inner.startswith("-"))
    if op == "**":
        base = _tex(node[1])
        plain = _prec(node[1]) == _ATOM and "^" not in base and not base.startswith(r"\sqrt")
        return f"{_wrap(base, not plain)}^{{{_tex(node[2])}}}"
    return _binary(op, node[1], node[2])


def _call(name: str, arg: Any) -> str:
    inner = _tex(arg)
    if name == "sqrt":
        return rf"\sqrt{{{inner}}}"
    if name == "abs":
        return f"|{inner}|"
    if name == "exp":
        return f"e^{{{inner}}}"
    bare = _prec(arg) == _ATOM and not inner.startswith("-") and "^" not in inner  # `\log x`, `\log(10^{3})`
    return f"{_LOGS[name]} {inner}" if bare else f"{_LOGS[name]}({inner})"


def _binary(op: str, left_node: Any, right_node: Any) -> str:
    left, right = _tex(left_node), _tex(right_node)
    lp, rp = _prec(left_node), _prec(right_node)
    signed = right.startswith("-")  # `a + -b`, `a\,-b`: a sign after an operator reads badly
    if op in "+-":
        right = _wrap(right, signed or (op == "-" and rp <= _ADD))
        return f"{left} {op} {right}"
    left = _wrap(left, lp < _MUL or _open_right(left_node) or (op == "*" and _is_op(left_node, "/")))
    if op == "/":
        return f"{left}/{_wrap(right, signed or rp <= _NEG)}"
    right = _wrap(right, signed or rp < _MUL or rp == _NEG)
    return left + _times(left_node, right_node, left, right) + right


def _is_op(node: Any, op: str) -> bool:
    return isinstance(node, tuple) and node[0] == op


def _times(left_node: Any, right_node: Any, left: str, right: str) -> str:
    """How a product joins: `s \\cdot 2`, `a \\cdot (-b)`, `2s`, `q\\sqrt{r}`, `a(b + c)`, else `r\\,s`."""
    if isinstance(right_node, float) or right[0].isdigit() or right.startswith("(-"):
        return r" \cdot "
    if isinstance(left_node, float) and re.fullmatch(r"[0-9.]+", left) and not right.startswith("e"):
        return ""  # (`1.5e` would read as a float literal)
    return "" if right.startswith((r"\sqrt", "(")) else r"\,"


def expression_tex(text: str) -> str:
    r"""A config expression (phasediag.config.expr grammar) as TeX (no $), with parentheses only where the
    precedence needs them; text that does not parse comes back upright, escaped.

    >>> [expression_tex(t) for t in ("1 / sqrt(r)", "kappa**2", "2 * s", "r * s", "-1 - 2 * k - s")]
    ['1/\\sqrt{r}', '\\kappa^{2}', '2s', 'r\\,s', '-1 - 2k - s']
    """
    try:
        return _tex(expr.parse(text))
    except (expr.ExpressionError, RecursionError):  # (RecursionError: thousands of nested signs)
        return rf"\mathrm{{{escape_text(text.strip())}}}"


def _tree_tex(tree: Any, text: str) -> str:
    try:
        return _tex(tree)
    except RecursionError:
        return rf"\mathrm{{{escape_text(text.strip())}}}"


# ---------------------------------------------------------------- axis labels

#: sweep variables of the `experiment:` studies -> (words, the name they have in the notation); the studies'
#: model keys are numbers, not expressions of them
_STUDY_VARIABLES = {
    "sgd_drift": {"lr": ("learning rate", "eta"), "batch_size": ("batch size", "B")},
    "nonlinear": {"init_scale": ("init scale", "s")},  # a factor on both initial standard deviations
    "deep": {"init_scale": ("init scale", "s")},  # likewise, on every layer's
}


class _Use:
    """How one key depends on the sweep variables: its relation as TeX (`= 1/\\sqrt{r}`, `\\propto d^{k}`)."""

    def __init__(self, key: str, relation: str, names: set[str], direct: bool):
        self.key, self.relation, self.names, self.direct = key, relation, names, direct


def _parsed(value: Any) -> tuple[Any, str] | None:
    """(tree or None when unparsable, text) of a config entry; None for lists and other non-expressions."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    text = value if isinstance(value, str) else repr(float(value))
    try:
        return expr.parse(text), text
    except expr.ExpressionError:
        return None, text


def _names(tree: Any, text: str) -> set[str]:
    return expr.names(tree) if tree is not None else set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text))


def _finite_use(key: str, value: Any, var: str) -> _Use | None:
    parsed = _parsed(value)
    if parsed is None:
        return None
    tree, text = parsed
    tex = _tree_tex(tree, text) if tree is not None else rf"\mathrm{{{escape_text(text)}}}"
    return _Use(key, f"= {tex}", _names(tree, text), tree == var)


def _scaling_use(key: str, value: Any, var: str) -> _Use | None:
    """{base: b, exp: e}: the key is b d^e; `\\propto d^{e}` unless the base itself is swept."""
    if not isinstance(value, dict) or "exp" not in value:
        return _finite_use(key, value, var)
    exp, base = _parsed(value["exp"]), _parsed(value.get("base", 1.0))
    if exp is None or base is None:
        return None
    exp_tex = _tree_tex(*exp) if exp[0] is not None else rf"\mathrm{{{escape_text(exp[1])}}}"
    base_names = _names(*base)
    if not base_names - set(expr.CONSTANTS):
        return _Use(key, rf"\propto d^{{{exp_tex}}}", _names(*exp), exp[0] == var)
    base_tex = _tree_tex(*base) if base[0] is not None else rf"\mathrm{{{escape_text(base[1])}}}"
    return _Use(key, rf"= {base_tex}\,d^{{{exp_tex}}}", _names(*exp) | base_names, False)


def _entries(config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys that enter the dynamics -> their config entries (explicit Grams replace width and variances)."""
    entries = {**(config.get("model") or {}), **(config.get("data") or {})}
    init = config.get("init")
    if isinstance(init, dict) and isinstance(init.get("gram"), list) and len(init["gram"]) == 3:
        for key in ("width", "init_var_u", "init_var_w"):
            entries.pop(key, None)
        entries.update(zip(("U", "W", "V"), init["gram"]))
    if config.get("experiment") == "sgd_drift":  # eta_w = lr, eta_u = lr_ratio lr (lr is eta: _STUDY_VARIABLES)
        ratio = entries.get("lr_ratio", 1.0)
        entries.update(lr_u="eta" if ratio == 1 else f"{ratio!r} * eta", lr_w="eta")
    for key in (config.get("sweep") or {}):  # a study may sweep a key itself (sgd_drift: noise_var)
        if key in SYMBOLS:
            entries[key] = key
    return {key: entries[key] for key in KEY_ORDER if key in entries}


def _uses(config: Mapping[str, Any], var: str) -> list[_Use]:
    make = _scaling_use if config.get("mode") == "scaling" else _finite_use
    uses = (make(key, value, var) for key, value in _entries(config).items())
    return [use for use in uses if use is not None and var in use.names]


def _groups(uses: list[_Use]) -> list[str]:
    """`$\\eta_u = \\eta_w = 1/\\kappa^{2}$` pieces: keys with the same relation share one; the keys that are
    the variable itself first (they say what it is), then in KEY_ORDER."""
    grouped: dict[str, list[str]] = {}
    for use in sorted(uses, key=lambda use: not use.direct):  # (stable: KEY_ORDER within each)
        grouped.setdefault(use.relation, []).append(SYMBOLS[use.key])
    return [f"${' = '.join(keys)} {relation}$" for relation, keys in grouped.items()]


def _variable(config: Mapping[str, Any], var: str) -> tuple[str, str]:
    """(words, name in the notation) of a sweep variable: words only for a study's own variables (a sweep's
    variables are just names)."""
    return _STUDY_VARIABLES.get(str(config.get("experiment")), {}).get(var, ("", var))


def _named(words: str, tex: str) -> str:
    return f"{words} ${tex}$" if words else f"${tex}$"


def axis_label(config: Mapping[str, Any], var: str, labels: Mapping[str, str] | None = None, *,
               max_chars: int = MAX_CHARS) -> str:
    r"""The axis label of sweep variable `var` of a resolved config (meta.json "config"), in the model's notation.

    `labels[var]` verbatim when given. Otherwise from the keys whose expressions use `var`: one key that is
    `var` itself gives its words and symbol (``width $d$``), several give ``$\sigma_u^2 = \sigma_w^2 = s$``;
    otherwise the variable and what each key is (keys with the same expression grouped; under
    ``mode: scaling`` as powers of the width). Longer than `max_chars` rendered characters, it is broken
    between the parenthesized parts only, each line a complete mathtext piece.

    >>> finite = {"model": {"width": "d", "init_var_u": "s", "init_var_w": "s", "lr_u": "1 / kappa**2"}}
    >>> axis_label(finite, "d"), axis_label(finite, "s"), axis_label(finite, "kappa")
    ('width $d$', '$\\sigma_u^2 = \\sigma_w^2 = s$', '$\\kappa$  ($\\eta_u = 1/\\kappa^{2}$)')
    >>> axis_label({"mode": "scaling", "model": {"output_scale": {"base": "1.0", "exp": "k"}}}, "k")
    '$k$  ($\\kappa \\propto d^{k}$)'
    """
    if labels and var in labels:
        return labels[var]
    words, var = _variable(config, var)
    tex, uses = variable_tex(var), _uses(config, var)
    if config.get("mode") != "scaling":
        direct = [use for use in uses if use.direct]
        same = [use for use in direct if SYMBOLS[use.key] == tex]  # sweeping `kappa` as output_scale
        if len(direct) == 1 and (len(uses) == 1 or same):  # `width $d$`, `output scale $\kappa$  (...)`
            key, others = direct[0].key, [use for use in uses if use is not direct[0]]
            return _join(_named(NAMES[key], SYMBOLS[key]), _groups(others), max_chars)
        if direct and len(direct) == len(uses):
            return "$" + " = ".join([SYMBOLS[use.key] for use in direct] + [tex]) + "$"
    return _join(_named(words, tex), _groups(uses), max_chars)


def rendered_length(text: str) -> int:
    r"""An estimate of how many characters `text` shows: a TeX command counts one, ``$ { } ^ _`` none.

    >>> rendered_length(r"$\eta_u = \sqrt{r}$")
    7
    """
    text = re.sub(r"\\[A-Za-z]+|\\.", "#", text)
    return len(re.sub(r"[${}^_]", "", text))


def _join(head: str, parts: list[str], max_chars: int) -> str:
    """`head  (part, part)`, or broken after the head and between parts when longer than `max_chars`."""
    if not parts:
        return head
    whole = f"{head}  ({', '.join(parts)})"
    if rendered_length(whole) <= max_chars:
        return whole
    lines, line = [head], "(" + parts[0]
    for part in parts[1:]:
        if rendered_length(f"{line}, {part}") <= max_chars:
            line = f"{line}, {part}"
        else:
            lines.append(line + ",")
            line = part
    return "\n".join(lines + [line + ")"])


# ---------------------------------------------------------------- titles, metrics, checking

def value_text(var: str, value: float) -> str:
    r"""`var = value` in mathtext, for the titles of held axes and small multiples.

    >>> value_text("s", 0.01), value_text("kappa", 2.5)
    ('$s = 10^{-2}$', '$\\kappa = 2.5$')
    """
    return f"${variable_tex(var)} = {number_tex(value)}$"


def metric_label(meta: Mapping[str, Any], metric: str, labels: Mapping[str, str] | None = None) -> str:
    r"""A metric's label: `labels[metric]` when given, else the run's registry label (already mathtext).

    >>> metric_label({"metrics": {"tau": {"label": r"time scale $\tau$"}}}, "tau")
    'time scale $\\tau$'
    """
    if labels and metric in labels:
        return labels[metric]
    info = (meta.get("metrics") or {}).get(metric) or {}
    return info.get("label") or metric.replace("$", r"\$")


def _dollars(line: str) -> list[int]:
    """Positions of the unescaped `$` of a line."""
    return [m.start() for m in re.finditer(r"(?<!\\)(?:\\\\)*\$", line)]


def mathtext_error(text: str) -> str | None:
    r"""None when matplotlib renders `text` as a label (each line: paired `$`, parsable mathtext), else a
    one-line message naming what is wrong.

    >>> mathtext_error(r"width $d$"), mathtext_error("$x$\n$y")
    (None, "line 2: unpaired $ in '$y'")
    """
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("path")
    for number, line in enumerate(text.split("\n"), 1):
        where = f"line {number}: " if "\n" in text else ""
        if len(_dollars(line)) % 2:
            return f"{where}unpaired $ in {line!r}"
        if not _dollars(line):
            continue
        try:
            parser.parse(line)
        except Exception as exc:  # (ValueError from the parser; anything else is reported the same way)
            return f"{where}not valid mathtext: {_parse_message(exc)} in {line!r}"
    return None


def _parse_message(exc: Exception) -> str:
    """The last line of matplotlib's several-line parse error, without the exception's name and position."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = re.sub(r"^\w*Exception:\s*", "", lines[-1] if lines else type(exc).__name__)
    text = re.sub(r",?\s*\(at char \d+\),?\s*\(line:\d+, col:\d+\)\s*$", "", text).strip()
    expected = re.fullmatch(r"Expected (.*), found (.*)", text)
    if expected and len(expected[1]) > 40:  # pyparsing lists every alternative: name only what was found
        text = f"unexpected {expected[2]}"
    return text if len(text) <= 100 else text[:97] + "..."


def tick_text(value: float, _=None) -> str:
    """A log-axis tick label: positional from 0.001 to 10^4 ('0.02'), else as a power ('$10^{-5}$')."""
    return f"{value:g}" if 1e-3 <= value < 1e4 else f"${number_tex(value)}$"
