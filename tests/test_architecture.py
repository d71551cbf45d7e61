"""The package's shape: private names stay inside their module; nothing points outside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python_files():
    for top in ("phasediag", "tests", "benchmarks"):
        yield from sorted((ROOT / top).rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_imports(path: Path) -> list[str]:
    """Every use of another phasediag module's underscore name in `path`: `from phasediag.x import _y`,
    `x._y` on a module imported from phasediag, and "phasediag.x._y" strings (monkeypatch targets)."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()  # local names bound to phasediag modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "phasediag":
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "phasediag":
                    modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in re.finditer(r"\bphasediag(?:\.\w+)*\.(_\w+)", node.value):
                if _private(match.group(1)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {match.group(0)!r}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.value.id not in ("self", "cls")):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


NAMEDTUPLE_API = {"_fields", "_replace", "_asdict", "_make"}  # public, despite the underscore


def test_no_module_uses_another_modules_private_names():
    found = [hit for path in _python_files() if path != Path(__file__).resolve()
             for hit in _private_imports(path) if hit.rsplit(".", 1)[-1] not in NAMEDTUPLE_API]
    assert not found, "private names used outside their module:\n" + "\n".join(found)


def test_the_checker_finds_private_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from phasediag.plots.maps import _figure\nfrom phasediag.engine import sweep\n"
                   "sweep._allocate(1)\nx = 'phasediag.engine.sweep._execute'\nfrom phasediag import __version__\n")
    hits = [h.split(": ", 1)[1] for h in _private_imports_at(bad)]
    assert hits == ["from phasediag.plots.maps import _figure", "'phasediag.engine.sweep._execute'",
                    "sweep._allocate"]


def _private_imports_at(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return _private_imports(path)
    finally:
        ROOT = saved


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / n for n in names.decode().split("\0") if n]
    out = []
    for p in paths:
        try:
            if p.is_file() and b"\0" not in p.read_bytes()[:8192]:
                out.append(p)
        except OSError:
            continue
    return out


_SPEC = "THE" + "ORY"  # spelled in two parts so that this file does not name what it looks for
OUTSIDE = re.compile(r"\.\./" + "shared" + rf"|(?<![\w/]){_SPEC}(?:\.md)?\b|/work/|" + "shared/" + _SPEC)


def test_no_tracked_file_points_outside_the_repository():
    hits = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue  # this file names the patterns it looks for
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "tracked files refer to paths outside the repository:\n" + "\n".join(hits)


def test_the_outside_pattern_matches_what_it_should():
    for text in (f"see ../{'shared'}/{_SPEC}.md", f"{_SPEC} section 6", f"in {_SPEC}.md", "/work/x"):
        assert OUTSIDE.search(text), text
    for text in ("docs/theory.md section 6", "the theory's rho", f"{_SPEC}X"):
        assert not OUTSIDE.search(text), text


def test_every_relative_markdown_link_resolves():
    missing = []
    for path in _tracked_text_files():
        if path.suffix != ".md":
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                missing.append(f"{path.relative_to(ROOT)}: {target}")
    assert not missing, "broken links:\n" + "\n".join(missing)


REPO_PATH = re.compile(r"(?<![\w/.\-<>{}*$])((?:configs|docs|examples|phasediag|tests|benchmarks)/[\w./-]*\w)"
                       r"(?![\w*<>{}$/])")


def test_every_repository_path_a_tracked_file_names_exists():
    """README, docs, help texts and comments name only files that exist (`configs/big.yaml`, `examples/...`)."""
    missing = []
    for path in _tracked_text_files():
        if path.suffix not in (".md", ".py", ".sh", ".yaml", ".toml") or path == Path(__file__).resolve():
            continue
        for name in REPO_PATH.findall(path.read_text(errors="replace")):
            if "..." not in name and not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "named but missing:\n" + "\n".join(missing)


def test_the_path_pattern_finds_paths_in_prose_and_commands():
    text = "run `phasediag run configs/big.yaml --shard 1/2`, see docs/theory.md and examples/slurm/job.sh."
    assert REPO_PATH.findall(text) == ["configs/big.yaml", "docs/theory.md", "examples/slurm/job.sh"]
    assert REPO_PATH.findall("outputs/<name>/ and configs/*.yaml") == []
