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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phasediag.config.rules import INF, NUMBER, number_text
from phasediag.errors import ConfigError

FORMATS = ("png", "pdf", "svg")  # figure formats a config may ask for

MAX_DEPTH = 32  # nesting of YAML collections: a config needs 4; deeper is a mistake (or an attack)


def fail(where: str, line: int | None, message: str) -> ConfigError:
    return ConfigError(f"{where} (line {line}): {message}" if line else f"{where}: {message}")


def did_you_mean(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class Located:
    """A YAML value with the line of its key or item (1-based) and its dotted path."""

    value: Any
    line: int
    path: str


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
