"""The one YAML reader of every config: positions (line numbers), typed accessors, did-you-mean.

Every job kind reads its config through :func:`read_config`: the file (or a dict from Python) becomes a tree of
:class:`Located` values, so every error can name the key path and line (`model.lr_w (line 9): must be > 0`).
Plain YAML 1.1 reads `1e6` as a string; here every plain scalar that looks like a number is a number.
Explicit tags (`!!python/object`, `!custom`) are never constructed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phasediag.errors import ConfigError

FORMATS = ("png", "pdf", "svg")  # figure formats a config may ask for

_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_INF = re.compile(r"^[-+]?\.?(inf|Inf|INF)(inity)?$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


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


def _scalar(node) -> Any:
    import yaml

    text = node.value
    if node.style is not None:  # quoted or block scalar: text as written
        return text
    if node.tag not in _PLAIN_TAGS:  # explicit tags (!!python/..., !custom) are never constructed
        raise yaml.YAMLError(f"line {node.start_mark.line + 1}: unsupported tag {node.tag}")
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _NUMBER.match(text) or _INF.match(text):
        return _number_text(text)
    return text


def _number_text(text: str) -> int | float:
    if _INF.match(text):
        return float("-inf") if text.startswith("-") else float("inf")
    return float(text) if any(ch in text for ch in ".eE") else int(text)


def _build(node, path: str) -> Located:
    import yaml

    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Located] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
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
        return Located([_build(item, f"{path}[{i}]") for i, item in enumerate(node.value)], line, path)
    return Located(_scalar(node), line, path)


def parse_yaml(text: str, source: str = "config") -> Located:
    """Parse YAML into Located values; broken YAML raises ConfigError with its line."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError(f"{source}: line {line}: broken YAML: {exc.problem or exc.context}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: broken YAML: {exc}") from None
    if node is None:
        raise ConfigError(f"{source}: the file is empty")
    try:
        return _build(node, "")
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: {exc}") from None


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
        raise fail(item.path, item.line, f"must be a number, got {plain(item)!r}")
    value = float(value)
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
        raise fail(item.path, item.line, f"must be text, got {plain(item)!r}")
    return item.value


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
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # names that name output folders and files


def read_config(source: str | Path | dict) -> tuple[Located, str]:
    """The config at `source` (a path, or a dict of the YAML's content) as a Located tree, and a text naming
    the source for messages. ConfigError for a file that cannot be read, is not UTF-8 text, is too large or
    is not a mapping."""
    if isinstance(source, dict):
        root = located(source)
        label = "config"
    else:
        label = str(source)
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{label}: {size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,} bytes")
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{label}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
        root = parse_yaml(text, label)
    if not isinstance(root.value, dict):
        raise fail("config", root.line, "must be a mapping (key: value)")
    return root, label


def located(data: Any, path: str = "") -> Located:
    """A plain Python value (a dict as the YAML would give) as a Located tree without line numbers."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if not isinstance(key, str):
                raise fail(path or "config", None, f"keys must be names, got {key!r}")
            out[key] = located(value, f"{path}.{key}" if path else key)
        return Located(out, 0, path)
    if isinstance(data, (list, tuple)):
        return Located([located(v, f"{path}[{i}]") for i, v in enumerate(data)], 0, path)
    if isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, str) and (_NUMBER.fullmatch(data) or _INF.fullmatch(data)):
        data = _number_text(data)  # as the YAML reader reads a plain scalar (yaml.safe_load gives '1e6' as text)
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
    """The integer at a YAML key, in [low, high] (ConfigError naming the key and line otherwise)."""
    value = number(item, integer=True)
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
    """A `name` key: it names output folders and files, so only letters, digits, '_', '-', '.'."""
    name = string(item)
    if not NAME_PATTERN.fullmatch(name):
        raise fail(item.path, item.line, "use letters, digits, '_', '-', '.' (it names output files)")
    return name
