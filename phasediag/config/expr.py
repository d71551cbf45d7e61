"""Safe arithmetic expressions for config values: numbers, variables, + - * / **, parentheses, functions.

Parsed by a small recursive-descent parser into a tree of tuples and evaluated with numpy, never with
Python `eval`. Grammar (usual precedence, ** right-associative and binding tighter than unary minus):
    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := ('+' | '-') unary | power
    power  := atom ('**' unary)?
    atom   := NUMBER | NAME | NAME '(' expr ')' | '(' expr ')'
"""

from __future__ import annotations

import difflib
import re
from typing import Mapping, Union

import numpy as np

FUNCTIONS = {"sqrt": np.sqrt, "log": np.log, "exp": np.exp, "log10": np.log10, "abs": np.abs}
CONSTANTS = {"pi": np.pi, "e": np.e}

Node = Union[tuple, float, str]

_TOKEN = re.compile(  # ASCII only: \d would take other scripts' digits (float() reads them) as numbers
    r"\s*(?:(?P<number>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>\*\*|[-+*/(),]))"
)


class ExpressionError(ValueError):
    """A malformed expression, an unknown name, or a value that is not finite."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"unexpected character {text[pos:].strip()[:1]!r} in {text!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            found = "end of expression" if token is None else repr(token[1])
            raise ExpressionError(f"expected {value or 'a value'!r}, found {found} in {self.text!r}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in {self.text!r}")
        return node

    def binary(self, operand, ops) -> Node:
        node = operand()
        while self.peek() is not None and self.peek()[1] in ops:
            op = self.take()[1]
            node = (op, node, operand())
        return node

    def expr(self) -> Node:
        return self.binary(self.term, ("+", "-"))

    def term(self) -> Node:
        return self.binary(self.unary, ("*", "/"))

    def unary(self) -> Node:
        token = self.peek()
        if token is not None and token[1] in ("+", "-"):
            self.take()
            operand = self.unary()
            return ("neg", operand) if token[1] == "-" else operand
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.peek() is not None and self.peek()[1] == "**":
            self.take()
            return ("**", base, self.unary())
        return base

    def atom(self) -> Node:
        kind, value = self.take()
        if kind == "number":
            return float(value)
        if kind == "name":
            if self.peek() is not None and self.peek()[1] == "(":
                if value not in FUNCTIONS:
                    raise ExpressionError(f"unknown function {value!r}{_suggest(value, FUNCTIONS)}; "
                                          f"allowed: {', '.join(FUNCTIONS)}")
                self.take("(")
                arg = self.expr()
                self.take(")")
                return ("call", value, arg)
            return value
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        raise ExpressionError(f"unexpected {value!r} in {self.text!r}")


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


MAX_LENGTH = 2000  # characters: any real hyperparameter formula is far shorter


def parse(text: str) -> Node:
    """Parse an expression string into a tree (raises ExpressionError)."""
    if not text.strip():
        raise ExpressionError("empty expression")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        return _Parser(text).parse()
    except RecursionError:  # a recursive-descent parser: nesting is bounded by the interpreter's stack
        raise ExpressionError("expression nested too deeply (parentheses or signs)") from None


def names(node: Node) -> set[str]:
    """The variable names an expression tree uses."""
    if isinstance(node, str):
        return {node}
    if isinstance(node, tuple):
        children = node[2:] if node[0] == "call" else node[1:]  # a call's node[1] is the function name
        return set().union(*(names(child) for child in children))
    return set()


def check_names(node: Node, variables) -> None:
    """Raise ExpressionError naming the first unknown variable (with a did-you-mean)."""
    known = set(variables) | set(CONSTANTS)
    for name in sorted(names(node) - known):
        allowed = ", ".join(sorted(variables)) or "none (no sweep variables)"
        raise ExpressionError(f"unknown variable {name!r}{_suggest(name, known)}; sweep variables: {allowed}")


_BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power}


def evaluate(node: Node, variables: Mapping[str, np.ndarray]) -> np.ndarray:
    """Evaluate a parsed tree with numpy (float64) on broadcastable variable arrays.

    Raises ExpressionError if the result is not finite somewhere (overflow, division by zero, log of <= 0).
    """
    if isinstance(node, str) and node in variables:  # a bare sweep variable: its axis values, finite already
        return np.asarray(variables[node], dtype=float)
    with np.errstate(all="ignore"):
        value = np.asarray(_eval(node, variables), dtype=float)
    if value.size and not (np.isfinite(value.min()) and np.isfinite(value.max())):  # two reductions, no mask
        raise ExpressionError("expression is not finite (overflow, division by zero or log/sqrt of a "
                              "negative number) for some sweep values")
    return value


def _eval(node: Node, variables):
    if isinstance(node, float):
        return node
    if isinstance(node, str):
        return variables[node] if node in variables else CONSTANTS[node]
    op = node[0]
    if op == "neg":
        return np.negative(_eval(node[1], variables))
    if op == "call":
        return FUNCTIONS[node[1]](_eval(node[2], variables))
    return _BINARY[op](_eval(node[1], variables), _eval(node[2], variables))


def leading_exponent(node: Node, variable):
    """The power p of t that dominates the expression as t -> infinity (value ~ C t^p), where each variable
    goes as t to its power in `variable` (a mapping name -> Fraction; a name alone: that variable is t, the
    others held fixed), as a Fraction: sums take the larger power (assuming their leading terms do not
    cancel), products add, quotients subtract, x ** c multiplies by the constant c, sqrt halves. None where the
    expression is not of that form (log, exp, a power that is not constant)."""
    from fractions import Fraction

    powers = {variable: Fraction(1)} if isinstance(variable, str) else variable
    if isinstance(node, float):
        return Fraction(0)
    if isinstance(node, str):
        return Fraction(powers.get(node, 0))
    op = node[0]
    if op == "neg" or op == "call" and node[1] == "abs":
        return leading_exponent(node[-1], powers)
    if op == "call":
        inner = leading_exponent(node[2], powers)
        if node[1] == "sqrt":
            return None if inner is None else inner / 2
        return Fraction(0) if inner == 0 else None
    left, right = leading_exponent(node[1], powers), leading_exponent(node[2], powers)
    if left is None or right is None:
        return None
    if op in "+-":
        return max(left, right)
    if op == "*":
        return left + right
    if op == "/":
        return left - right
    if right != 0 or names(node[2]) & {n for n, p in powers.items() if p != 0}:  # a power that varies
        return None
    try:
        power = float(evaluate(node[2], {}))
    except (ExpressionError, KeyError):
        return None
    return left * Fraction(power).limit_denominator(10**6)
