"""The one YAML reader of every config: positions (line numbers), typed accessors, did-you-mean.

Every job kind reads its config through :func:`read_config`: the file (or a dict from Python) becomes a tree of
:class:`Located` values, so every error can name the key path and line (`model.lr_w (line 9): must be > 0`).
Plain YAML 1.1 reads `1e6` as a string; here every plain scalar that looks like a number is a number (ASCII
decimal, within float range: phasediag.config.rules.number_text, as the command line reads its numbers).
Refused, with the line, before anything is built: explicit tags (`!!python/object`, `!!set`, `!custom`, on
any node), aliases (so no alias bomb and no self-reference is ever expanded) and nesting deeper than
MAX_DEPTH; a config file must be a regular file of at most MAX_CONFIG_BYTES of UTF-8.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phasediag.config.rules import INF, NUMBER, number_text
from phasediag.errors import ConfigError, FieldError

FORMATS = ("png", "pdf", "svg")  # figure formats a config may ask for

MAX_DEPTH = 32  # nesting of YAML collections: a config needs 4; deeper is a mistake (or an attack)


def fail(where: str, line: int | None, message: str) -> ConfigError:
    return ConfigError(f"{where} (line {line}): {message}" if line else f"{where}: {message}")


def did_you_mean(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class Located:
    """A YAML value with the line of its key or item (1-based) and its dotted path; the root of a config read
    from a file knows the file's folder (`base_dir`: relative file names in the config are relative to it)."""

    value: Any
    line: int
    path: str
    base_dir: Path | None = field(default=None, compare=False, repr=False)


class _Refused(Exception):
    """YAML the reader refuses while composing (an alias, nesting too deep): the line and why."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


def _strict_loader():
    """A SafeLoader whose composer refuses aliases (so nothing is ever expanded: no alias bomb, no
    self-reference) and nesting deeper than MAX_DEPTH, and records each node's explicit tag (refused by
    :func:`_build`, which knows the key path)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            event = self.peek_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                raise _Refused(line, f"YAML alias *{event.anchor}: aliases are not supported; write the value "
                                     "out")
            if self.depth >= MAX_DEPTH:
                raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels")
            self.depth += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self.depth -= 1
            node.explicit_tag = getattr(event, "tag", None)
            return node

    return StrictLoader


def _tag_text(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _check_tag(node, where: str) -> None:
    tag = getattr(node, "explicit_tag", None)
    if tag is not None:  # !!python/object, !!set, !custom, even !!str: never constructed, never ignored
        raise fail(where, node.start_mark.line + 1, f"unsupported tag {_tag_text(tag)} (explicit YAML tags "
                                                     "are not allowed; write plain values)")


def _scalar(node, where: str) -> Any:
    """A scalar's value: quoted text as written; plain null, booleans and numbers as such (ConfigError
    naming `where` for an explicit tag or a number beyond float range)."""
    _check_tag(node, where)
    text = node.value
    if node.style is not None:  # quoted or block scalar: text as written
        return text
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if NUMBER.fullmatch(text) or INF.fullmatch(text):
        try:
            return number_text(text)
        except ValueError as exc:
            raise fail(where, node.start_mark.line + 1, str(exc)) from None
    return text


def _build(node, path: str) -> Located:
    import yaml

    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        _check_tag(node, path or "config")
        out: dict[str, Located] = {}
        for key_node, value_node in node.value:
            written = f"{path}.{key_node.value}" if path else str(key_node.value)  # (for a tagged key)
            key = _scalar(key_node, written) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise fail(path or "config", key_node.start_mark.line + 1, "keys must be names")
            sub = f"{path}.{key}" if path else key
            if key in out:
                raise fail(sub, key_node.start_mark.line + 1, "duplicate key")
            item = _build(value_node, sub)
            item.line = key_node.start_mark.line + 1
            out[key] = item
        return Located(out, line, path)
    if isinstance(node, yaml.SequenceNode):
        _check_tag(node, path or "config")
        return Located([_build(item, f"{path}[{i}]") for i, item in enumerate(node.value)], line, path)
    return Located(_scalar(node, path or "config"), line, path)


def parse_yaml(text: str, source: str = "config") -> Located:
    """Parse YAML into Located values; broken YAML raises ConfigError with its line. Aliases, explicit tags
    and nesting deeper than MAX_DEPTH are refused before anything is built."""
    import yaml

    try:
        node = yaml.compose(text, Loader=_strict_loader())
    except _Refused as exc:
        raise ConfigError(f"{source}: line {exc.line}: {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError(f"{source}: line {line}: broken YAML: {exc.problem or exc.context}{context}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other control characters)
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{source}: line {line}: character {exc.character!r} is not allowed in YAML text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: broken YAML: {' '.join(str(exc).split())}") from None
    if node is None:
        raise ConfigError(f"{source}: the file is empty")
    return _build(node, "")


def mapping(item: Located, allowed, required=()) -> dict[str, Located]:
    if not isinstance(item.value, dict):
        raise fail(item.path or "config", item.line, "must be a mapping (key: value)")
    for key, sub in item.value.items():
        if key not in allowed:
            raise fail(sub.path, sub.line, f"unknown key{did_you_mean(key, allowed)}; "
                                            f"allowed: {', '.join(allowed)}")
    for key in required:
        if key not in item.value:
            where = f"{item.path!r} (line {item.line})" if item.path else "the top level"
            raise ConfigError(f"{item.path + '.' if item.path else ''}{key}: is required, missing in {where}")
    return item.value


def number(item: Located, *, positive=False, nonneg=False, allow_inf=False, integer=False) -> float:
    value = item.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(item.path, item.line, f"must be a number, got {shown(item)}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range (from Python: the YAML reader refuses it already)
        raise fail(item.path, item.line, "is beyond the floating-point range (about 1.8e308)") from None
    if np.isnan(value) or (np.isinf(value) and not allow_inf):
        raise fail(item.path, item.line, f"must be a finite number, got {value}")
    if positive and not value > 0:
        raise fail(item.path, item.line, f"must be > 0, got {value:g}")
    if nonneg and value < 0:
        raise fail(item.path, item.line, f"must be >= 0, got {value:g}")
    if integer and value != int(value):
        raise fail(item.path, item.line, f"must be an integer, got {value:g}")
    return value


def string(item: Located) -> str:
    if not isinstance(item.value, str):
        raise fail(item.path, item.line, f"must be text, got {shown(item)}")
    return item.value


def shown(item: Located, limit: int = 60) -> str:
    """The value as written, for a message: its repr, cut to `limit` characters (a message is one line)."""
    text = repr(plain(item))
    return text if len(text) <= limit else text[:limit - 3] + "..."


class AnyKey:
    """`allowed` for mappings whose keys are user names (sweep variables)."""

    def __contains__(self, key) -> bool:
        return True

    def __iter__(self):
        return iter(())


def plain(item: Located) -> Any:
    """Strip positions: Located tree -> plain Python data."""
    if isinstance(item.value, dict):
        return {k: plain(v) for k, v in item.value.items()}
    if isinstance(item.value, list):
        return [plain(v) for v in item.value]
    return item.value


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; a larger file is a mistake (or an attack)
MAX_NAME = 100  # characters of a name: it names folders and files, with suffixes, within a 255-byte file name
NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")  # names that name folders and files


def read_config(source: str | Path | dict) -> tuple[Located, str]:
    """The config at `source` (a path, or a dict of the YAML's content) as a Located tree, and a text naming
    the source for messages. ConfigError for a file that cannot be read, is not UTF-8 text, is too large or
    is not a mapping."""
    if isinstance(source, dict):
        root = located(source)
        label = "config"
    else:
        label = str(source)
        root = parse_yaml(read_text(source, label), label)
        root.base_dir = Path(os.path.abspath(source)).parent
    if not isinstance(root.value, dict):
        raise fail("config", root.line, "must be a mapping (key: value)")
    return root, label


def read_text(source: str | Path, label: str) -> str:
    """The text of a config file: a regular file (never a FIFO, a device or a directory: opened without
    blocking, checked before reading), at most MAX_CONFIG_BYTES, UTF-8; ConfigError otherwise."""
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{label}: not a regular file (a directory, FIFO or device); give a YAML file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{label}: more than {MAX_CONFIG_BYTES:,} bytes; a config is a page of YAML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not UTF-8 text (byte {exc.start})") from None


def located(data: Any, path: str = "", depth: int = 0) -> Located:
    """A plain Python value (a dict as the YAML would give) as a Located tree without line numbers; the
    YAML reader's rules hold (nesting depth, numbers within float range)."""
    if depth > MAX_DEPTH:  # also a dict that contains itself
        raise fail(path or "config", None, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if not isinstance(key, str):
                raise fail(path or "config", None, f"keys must be names, got {key!r}")
            out[key] = located(value, f"{path}.{key}" if path else key, depth + 1)
        return Located(out, 0, path)
    if isinstance(data, (list, tuple)):
        return Located([located(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(data)], 0, path)
    if isinstance(data, np.generic):
        data = data.item()
    try:
        if isinstance(data, str) and (NUMBER.fullmatch(data) or INF.fullmatch(data)):
            data = number_text(data)  # as the YAML reader reads a plain scalar (yaml.safe_load gives '1e6' as text)
        elif isinstance(data, int) and not isinstance(data, bool):
            data = number_text(str(data)) if abs(data) > sys.float_info.max else data
    except ValueError as exc:
        raise fail(path or "config", None, str(exc)) from None
    if data is not None and not isinstance(data, (bool, int, float, str)):
        raise fail(path or "config", None, f"must be a number, text, list or mapping, got {type(data).__name__}")
    return Located(data, 0, path)


def config_hash(resolved: dict) -> str:
    """Fingerprint of everything in a resolved config that determines the numbers (plot settings and the
    description excluded): two runs with the same hash compute the same results."""
    numeric = {k: v for k, v in resolved.items() if k not in ("plot", "description")}
    return hashlib.sha256(json.dumps(_as_floats(numeric), sort_keys=True).encode()).hexdigest()[:16]


def _as_floats(value):
    """Numbers as floats, so that 1e4 and 10000 (or 1 and 1.0) hash alike: they compute the same."""
    if isinstance(value, dict):
        return {k: _as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def bounded_int(item: Located, *, low: int, high: int) -> int:
    """The integer at a YAML key, in [low, high] (ConfigError naming the key and line otherwise); an integer
    written out is compared exactly (2^63 - 1 is not rounded to 2^63)."""
    exact = isinstance(item.value, int) and not isinstance(item.value, bool)
    value = item.value if exact else number(item, integer=True)
    if not low <= value <= high:
        raise fail(item.path, item.line, f"must be an integer in [{low:,}, {high:,}], got {value:g}")
    return int(value)


def figure_formats(plot: dict[str, Located]) -> tuple[str, ...]:
    """`plot.formats` (default png): known formats, each once, in the order written."""
    if "formats" not in plot:
        return ("png",)
    sub = plot["formats"]
    if not isinstance(sub.value, list) or not sub.value:
        raise fail(sub.path, sub.line, "must be a non-empty list, e.g. [png, pdf]")
    for v in sub.value:
        if string(v) not in FORMATS:
            raise fail(v.path, v.line, f"unknown format {v.value!r}{did_you_mean(str(v.value), FORMATS)}; "
                                       f"allowed: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(string(v) for v in sub.value))


def check_name(item: Located) -> str:
    """A `name` key: it names output folders and files, so only letters, digits, '_', '-', '.' (the whole
    text: fullmatch, so no trailing newline slips through), at most MAX_NAME characters."""
    name = string(item)
    if not NAME_PATTERN.fullmatch(name):
        raise fail(item.path, item.line, f"use letters, digits, '_', '-', '.', at most {MAX_NAME} characters, "
                                         f"starting with a letter or digit (it names output files); got {shown(item)}")
    return name


# ---------------------------------------------------------------- the figures: what the user decides

#: the keys of a `plot` section that every job kind reads with :func:`figure_options` (beside its own)
FIGURE_KEYS = ("labels", "title", "size", "style", "dpi")
FIGURE_SIZES = ("column", "page")  # named figure sizes: one column of a two-column paper, a page width
MAX_LABEL = 200  # characters of a label or a title
INCHES = (1, 30)  # a figure's width and height, in inches: [low, high]
DPI_RANGE = (50, 1200)  # PNG resolution (dots per inch)


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = _NotGiven()  # figure_option_values(title=...) not given (None means: no title)
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)[$]")  # a $ not written as \$
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # (a newline is allowed: a label of two lines)


class _BadValue(Exception):
    """A figure setting's value that a rule below refuses: the message, without where it was written."""


def figure_options(plot: dict[str, Located], label_names: Sequence[str], base_dir: Path | None = None,
                   figure_names: Sequence[str] = ()) -> dict[str, Any]:
    """The figure settings of a config's `plot` mapping (FIGURE_KEYS; a kind reads its other keys itself),
    resolved, with only the keys given (so a config without them resolves as before):

    - labels: {name: text}, each name one of `label_names` (the kind's sweep variables, metrics and the
      other quantities its figures show), each text at most MAX_LABEL characters of valid mathtext;
    - title: a text, None (no title), or {name: text or None}, names from `label_names` and `figure_names`;
    - size: "column", "page" or [width, height] in inches, each in INCHES;
    - style: a name of matplotlib.style.available, or a style file (relative to `base_dir`, the config's
      folder; else the working directory) that matplotlib reads without a complaint: its absolute path;
    - dpi: an integer in DPI_RANGE.

    ConfigError naming the key path and line for anything else; matplotlib is imported only to check
    mathtext (a text with `$`) and a style."""
    out: dict[str, Any] = {}
    if "labels" in plot:
        labels = {}
        for name, sub in mapping(plot["labels"], AnyKey()).items():
            _known_name(sub, name, label_names)
            labels[name] = _checked(sub, _label_text, string(sub))
        out["labels"] = labels
    if "title" in plot:
        item = plot["title"]
        if isinstance(item.value, dict):
            names = tuple(dict.fromkeys([*label_names, *figure_names]))
            titles = {}
            for name, sub in item.value.items():
                _known_name(sub, name, names)
                titles[name] = None if sub.value is None else _checked(sub, _label_text, string(sub), "title")
            out["title"] = titles
        elif item.value is None:
            out["title"] = None
        elif not isinstance(item.value, str):
            raise fail(item.path, item.line, f"must be text, null (no title) or a mapping {{figure or metric: "
                                             f"text}}, got {shown(item)}")
        else:
            out["title"] = _checked(item, _label_text, item.value, "title")
    if "size" in plot:
        item = plot["size"]
        if isinstance(item.value, list):
            if len(item.value) != 2:
                raise fail(item.path, item.line, f"must be [width, height] in inches, got a list of "
                                                 f"{len(item.value)}")
            out["size"] = _checked(item, _figure_size, [number(v) for v in item.value])
        elif isinstance(item.value, str):
            out["size"] = _checked(item, _figure_size, item.value)
        else:
            raise fail(item.path, item.line, f"must be {' or '.join(FIGURE_SIZES)} or [width, height] in inches, "
                                             f"got {shown(item)}")
    if "style" in plot:
        item = plot["style"]
        out["style"] = _checked(item, _figure_style, string(item), base_dir)
    if "dpi" in plot:
        out["dpi"] = bounded_int(plot["dpi"], low=DPI_RANGE[0], high=DPI_RANGE[1])
    return out


def ruled(item: Located, rule, *, numeric: bool = True, **kw):
    """The value at a key checked by a shared rule (phasediag.config.rules: also the CLI's and the API's), its
    FieldError becoming the key path and line; `numeric`: the value must be a number (not text or a bool)."""
    if numeric and (isinstance(item.value, bool) or not isinstance(item.value, (int, float))):
        raise fail(item.path, item.line, f"must be a number, got {shown(item)}")
    try:
        return rule(item.value, **kw)
    except FieldError as exc:
        raise fail(item.path, item.line, exc.message) from None


WIDTH_VARIABLE = "d"


def width_expression(item: Located, widths, *, positive: bool) -> tuple[str, tuple[float, ...]]:
    """A number or an expression in d (the width) at `item`, evaluated at every width: (its text, the values).
    ConfigError naming the key and line for a bad expression or a value that is not finite and >= 0 (> 0 with
    `positive`) at some width."""
    from phasediag.config import expr

    value = item.value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise fail(item.path, item.line, f"must be a number or an expression in d (the width), got {plain(item)!r}")
    if isinstance(value, str):
        try:
            tree = expr.parse(value)
            expr.check_names(tree, (WIDTH_VARIABLE,))
            values = expr.evaluate(tree, {WIDTH_VARIABLE: np.array(widths, dtype=float)})
        except expr.ExpressionError as exc:
            raise fail(item.path, item.line, f"{value!r}: {exc} (the only variable is d, the width)") from None
        values = np.broadcast_to(np.asarray(values, dtype=float), (len(widths),))
        text = value
    else:
        values = np.full(len(widths), float(value))
        text = repr(float(value)) if isinstance(value, float) else str(value)
    for d, v in zip(widths, values):
        if not np.isfinite(v) or (positive and not v > 0) or v < 0:
            at = f" at d = {d}" if isinstance(value, str) else ""
            raise fail(item.path, item.line, f"must be {'> 0' if positive else '>= 0'} and finite, got {v:g}{at}")
    return text, tuple(float(v) for v in values)


def _checked(item: Located, rule, *args):
    try:
        return rule(*args)
    except _BadValue as exc:
        raise fail(item.path, item.line, str(exc)) from None


def _known_name(item: Located, name: str, allowed: Sequence[str]) -> None:
    problem = unknown_name(name, allowed)
    if problem:
        raise fail(item.path, item.line, problem)


def unknown_name(name: str, allowed: Sequence[str]) -> str | None:
    """Why `name` may not be labelled (not one of `allowed`, with a did-you-mean and the names), or None."""
    if name in allowed:
        return None
    return f"unknown name {name!r}{did_you_mean(name, allowed)}; names: {', '.join(allowed)}"


def _label_text(text: str, what: str = "label") -> str:
    """A label's (or title's) text: non-empty, at most MAX_LABEL characters, no control characters but a
    newline, and valid matplotlib mathtext (each $...$ piece parses; `$` balanced, `\\$` is a dollar)."""
    if not text.strip():
        raise _BadValue(f"the {what} must not be empty" + (" (use null for no title)" if what == "title" else ""))
    if len(text) > MAX_LABEL:
        raise _BadValue(f"the {what} has {len(text)} characters; at most {MAX_LABEL}")
    bad = _CONTROL.search(text)
    if bad:
        raise _BadValue(f"control character U+{ord(bad.group()):04X} in the {what}")
    problem = mathtext_problem(text)
    if problem:
        raise _BadValue(problem)
    return text


def mathtext_problem(text: str) -> str | None:
    """Why matplotlib cannot draw `text` as a label (one line), or None. matplotlib is imported only when the
    text has math in it."""
    if "$" not in text:
        return None
    parts = _UNESCAPED_DOLLAR.split(text)
    if len(parts) % 2 == 0:
        return r"unbalanced $: math goes between two $ signs (write \$ for a dollar sign)"
    if len(parts) == 1:  # escaped dollars only
        return None
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("path")
    for piece in parts[1::2]:
        try:
            parser.parse(f"${piece}$")
        except ValueError as exc:
            shown_piece = "$" + piece.replace("\n", "\\n") + "$"
            return f"not valid mathtext: {_parse_message(exc)} in '{shown_piece}'"
    return None


def _parse_message(exc: Exception) -> str:
    """The last line of matplotlib's (several-line) mathtext error, without its exception name and column."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    text = re.sub(r"^\w*Exception:\s*", "", text)
    text = re.sub(r",?\s*\(line:\d+, col:\d+\)\s*\Z", "", text)
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def _figure_size(value) -> str | list[float]:
    """"column", "page", or [width, height] (numbers, in inches, each in INCHES) as a list of floats."""
    if isinstance(value, str):
        if value not in FIGURE_SIZES:
            raise _BadValue(f"unknown size {value!r}{did_you_mean(value, FIGURE_SIZES)}; use "
                            f"{' or '.join(FIGURE_SIZES)} or [width, height] in inches")
        return value
    if not isinstance(value, (list, tuple)) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise _BadValue(f"must be {' or '.join(FIGURE_SIZES)} or [width, height] in inches, got {value!r:.60}")
    low, high = INCHES
    for what, v in zip(("width", "height"), value):
        if not low <= v <= high:  # (NaN too)
            raise _BadValue(f"the {what} must be in [{low}, {high}] inches, got {v:g}")
    return [float(v) for v in value]


def _figure_dpi(value) -> int:
    """An integer (an integral number) in DPI_RANGE."""
    low, high = DPI_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value != int(value) \
            or not low <= value <= high:
        raise _BadValue(f"must be an integer in [{low:,}, {high:,}], got {value!r:.40}")
    return int(value)


def _figure_style(value: str, base_dir: Path | None = None) -> str:
    """A matplotlib style name (matplotlib.style.available, or "default"), or the absolute path of a style
    file (relative to `base_dir`, else the working directory) that matplotlib reads without a warning and
    that sets style parameters only."""
    import matplotlib.style

    names = sorted(matplotlib.style.available)
    if value in names or value == "default":
        return value
    if not value.strip():
        raise _BadValue("must be a matplotlib style name or a style file, got ''")
    path = Path(os.path.expanduser(value))
    path = Path(os.path.abspath(path if path.is_absolute() else (base_dir or Path.cwd()) / path))
    if not os.path.lexists(path):
        raise _BadValue(f"{value!r} is neither a matplotlib style{did_you_mean(value, names)} nor a file "
                        f"({path} does not exist); styles: {', '.join(names)}")
    _read_style_text(path)
    _check_style_file(path)
    return str(path)


def _read_style_text(path: Path) -> str:
    """The text of a style file: a regular file (opened without blocking), at most MAX_CONFIG_BYTES, UTF-8."""
    try:
        return read_text(path, str(path))
    except ConfigError as exc:
        raise _BadValue(f"style file {exc}") from None


def _check_style_file(path: Path) -> None:
    """Read `path` as matplotlib reads a style file; any warning or logged complaint (a line without a
    colon, an unknown key, a bad value) and any non-style parameter (backend, ...) is a one-line refusal."""
    import logging
    import warnings

    import matplotlib

    complaints: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            complaints.append(record.getMessage())

    logger = logging.getLogger("matplotlib")
    handler, propagate = Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            params = matplotlib.rc_params_from_file(str(path), use_default_template=False)
    except Exception as exc:  # noqa: BLE001 - whatever matplotlib raises for a file it cannot read
        raise _BadValue(f"style file {path}: {type(exc).__name__}: {_one_line(str(exc))}") from None
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    complaints += [str(w.message) for w in caught]
    if complaints:
        raise _BadValue(f"style file {path}: {_one_line(complaints[0])}")
    not_style = sorted(set(params) & _style_blacklist())
    if not_style:
        raise _BadValue(f"style file {path}: sets {', '.join(not_style)}, not a style parameter (matplotlib "
                        "ignores it with a warning)")


def _style_blacklist() -> set[str]:
    """The rc parameters matplotlib does not take from a style (backend, interactive, ...)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from matplotlib.style.core import STYLE_BLACKLIST
        return set(STYLE_BLACKLIST)
    except ImportError:  # pragma: no cover - another matplotlib layout
        return {"interactive", "backend", "webagg.port", "webagg.address", "webagg.port_retries",
                "webagg.open_in_browser", "backend_fallback", "toolbar", "timezone", "figure.max_open_warning",
                "figure.raise_window", "savefig.directory", "tk.window_focus", "docstring.hardcopy", "date.epoch"}


def _one_line(text: str, limit: int = 160) -> str:
    """The first non-empty line of `text`, whitespace collapsed, at most `limit` characters."""
    line = next((ln for ln in text.splitlines() if ln.strip()), text)
    line = " ".join(line.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def figure_option_values(*, labels: dict | None = None, title: Any = NOT_GIVEN, size: Any = None,
                         style: str | None = None, dpi: Any = None, base_dir: Path | None = None) -> dict[str, Any]:
    """The figure settings given as values (``phasediag plot`` options, :func:`phasediag.api.plot` keywords)
    in the resolved shape of :func:`figure_options`, only those given (`title=None`: no title). The same
    rules, but FieldError naming the field (labels, title, size, style, dpi). Label names are checked against
    a run's names with :func:`check_figure_names`."""
    out: dict[str, Any] = {}
    try:
        if labels is not None:
            field_name = "labels"
            if not isinstance(labels, dict):
                raise _BadValue(f"must be a mapping {{name: text}}, got {type(labels).__name__}")
            out["labels"] = {}
            for name, text in labels.items():
                if not isinstance(name, str) or not name:
                    raise _BadValue(f"names must be non-empty text, got {name!r:.40}")
                if not isinstance(text, str):
                    raise _BadValue(f"{name}: must be text, got {text!r:.40}")
                try:
                    out["labels"][name] = _label_text(text)
                except _BadValue as exc:
                    raise _BadValue(f"{name}: {exc}") from None
        if title is not NOT_GIVEN:
            field_name = "title"
            if isinstance(title, dict):
                out["title"] = {}
                for name, text in title.items():
                    if not isinstance(name, str) or not (text is None or isinstance(text, str)):
                        raise _BadValue(f"must map names to text or None, got {name!r:.30}: {text!r:.30}")
                    out["title"][name] = None if text is None else _label_text(text, "title")
            elif title is None or isinstance(title, str):
                out["title"] = None if title is None else _label_text(title, "title")
            else:
                raise _BadValue(f"must be text, None (no title) or a mapping, got {title!r:.40}")
        if size is not None:
            field_name = "size"
            out["size"] = _figure_size(size)
        if style is not None:
            field_name = "style"
            if not isinstance(style, (str, os.PathLike)):
                raise _BadValue(f"must be a matplotlib style name or a style file, got {style!r:.40}")
            out["style"] = _figure_style(os.fspath(style), base_dir)
        if dpi is not None:
            field_name = "dpi"
            out["dpi"] = _figure_dpi(dpi)
    except _BadValue as exc:
        raise FieldError(field_name, str(exc)) from None
    return out


def check_figure_names(options: dict[str, Any], label_names: Sequence[str],
                       figure_names: Sequence[str] = ()) -> None:
    """FieldError (labels, title) for a label name not in `label_names`, or a title's name in neither list."""
    for name in options.get("labels") or {}:
        problem = unknown_name(name, label_names)
        if problem:
            raise FieldError("labels", problem)
    title = options.get("title")
    if isinstance(title, dict):
        names = tuple(dict.fromkeys([*label_names, *figure_names]))
        for name in title:
            problem = unknown_name(name, names)
            if problem:
                raise FieldError("title", problem)
