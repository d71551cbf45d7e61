"""Hostile run directories: every reader (plot, export, export --out, merge, run --resume, phasediag.load) on run
directories that a user, a broken disk or an attacker changed.

The promise (phasediag/results/rundir.py, store.py, jobs/lifecycle.py): a run directory is one unit whose
meta.json (written last) records every other file's size and SHA-256; every reader verifies it. Bad input ends
in ONE line on stderr starting with "Error:" that names the file or directory, exit status 2, no traceback, no
"internal error", no warning, and NOTHING changed on disk (every file's bytes, mode and inode, recursively,
hidden ones included, and the files outside the directory: symlink targets, would-be outputs). The tool never
writes through or replaces a non-regular file, compares inputs and outputs by real path, and removes only its
own leftovers (temporary files of atomic writes, unchanged figures/tables its previous manifest recorded).

`run CONFIG --out DIR --resume` over a directory whose *contents* were tampered with must not reuse them as
"up to date": it either refuses (one line, exit 2, nothing changed) or computes the result again (its
`_current` treats a mismatch as no result; the expected state is then that of a fresh run: the data and
meta.json of a clean run, every other file untouched). A directory it cannot write safely (a data file or
meta.json that is a symlink, FIFO, device or folder) is one line of bad input, unchanged.

Reference directories are built once per module and copied per case (shutil.copytree, symlinks kept); the
commands run in-process through click's CliRunner, except those that could block on a FIFO (a subprocess
with a timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

import phasediag
from phasediag.cli import phasediag as group
from job_cases import CASES as JOB_CASES

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# a sweep whose figures draw in a fraction of a second (one map, no trajectories)
MINI = """\
name: mini
sweep:
  d: {values: [1, 100]}
  s: {values: [1e-6, 1]}
model: {width: d, init_var_u: s, init_var_w: s}
plot: {x: d, y: s, maps: [phase]}
"""
OTHER = MINI.replace("[1e-6, 1]", "[1e-4, 1]")  # the same grid shape, another config
FIGURE = "mini__phase__s_vs_d.png"
DATA = {"validation": "validation.json"}  # kind -> its data file (default results.npz)
META = "meta.json"


# ---------------------------------------------------------------------------------------------------- fixtures


def _cli_ok(*args) -> None:
    result = CliRunner().invoke(group, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@dataclass
class Refs:
    root: Path
    dirs: dict[str, Path]
    configs: dict[str, Path]


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> Refs:
    root = tmp_path_factory.mktemp("hostile_refs")
    configs = {"sweep": root / "mini.yaml", "validation": root / "mini.yaml", "other": root / "other.yaml"}
    configs["sweep"].write_text(MINI)
    configs["other"].write_text(OTHER)
    for kind in ("scaling", "sgd_drift"):  # (nonlinear is not cheap: seconds to train)
        configs[kind] = root / f"{kind}.yaml"
        configs[kind].write_text(JOB_CASES[kind][0])
    d = {name: root / name for name in ("sweep", "sweep_fig", "validation", "sweep_s1", "sweep_s2",
                                         "validation_s1", "validation_s2", "other_s2", "scaling", "sgd_drift")}
    mini = configs["sweep"]
    _cli_ok("run", mini, "--out", d["sweep"], "-q", "--no-plot")
    _cli_ok("run", mini, "--out", d["sweep_fig"], "-q")
    _cli_ok("validate", mini, "--points", 2, "--out", d["validation"], "-q", "--no-plot")
    for k in (1, 2):
        _cli_ok("run", mini, "--shard", f"{k}/2", "--out", d[f"sweep_s{k}"], "-q")
        _cli_ok("validate", mini, "--points", 2, "--shard", f"{k}/2", "--out", d[f"validation_s{k}"], "-q",
                "--no-plot")
    _cli_ok("run", configs["other"], "--shard", "2/2", "--out", d["other_s2"], "-q")
    for kind in ("scaling", "sgd_drift"):
        _cli_ok("run", configs[kind], "--out", d[kind], "-q", "--no-plot")
    return Refs(root, d, configs)


# ---------------------------------------------------------------------------------------------------- state


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`, recursively (hidden ones too), without following links: a regular file's mode,
    inode, mtime and SHA-256; a link's target; a folder's mode; a FIFO's or device's mode, inode and device."""
    state: dict[str, tuple] = {}

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            rel = prefix + entry.name
            info = os.lstat(entry.path)
            if stat.S_ISLNK(info.st_mode):
                state[rel] = ("link", os.readlink(entry.path))
            elif stat.S_ISDIR(info.st_mode):
                state[rel] = ("dir", stat.S_IMODE(info.st_mode))
                walk(Path(entry.path), rel + "/")
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
                state[rel] = ("file", info.st_mode, info.st_ino, info.st_mtime_ns, info.st_size, digest)
            else:
                state[rel] = ("special", info.st_mode, info.st_ino, info.st_rdev)

    walk(root, "")
    return state


def assert_same(before: dict, after: dict, what: str = "the directory state") -> None:
    if before == after:
        return
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    raise AssertionError(f"{what} changed: added {added}, removed {removed}, changed {changed}")


# ---------------------------------------------------------------------------------------------------- cases


@dataclass
class Ctx:
    root: Path  # everything a case may touch lives here (the run directory, targets outside it, outputs)
    refs: Refs
    kind: str
    run: Path  # the directory under test (merge: shard 1)
    shards: list[Path] = field(default_factory=list)

    @property
    def data(self) -> str:
        return DATA.get(self.kind, "results.npz")

    @property
    def config(self) -> Path:
        return self.refs.configs[self.kind]

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@dataclass
class Case:
    id: str
    kind: str  # the reference directory to copy (sweep, validation, sweep_fig, ...)
    reader: str
    tamper: Callable[[Ctx], None] | None = None
    expect: Callable[[Ctx, Outcome, dict], None] | None = None
    sub: bool = False  # in a subprocess with a timeout (a FIFO could block a read or a write)
    root_only: bool = False
    layout: str = "run"  # run: the kind's directory at root/run; shards: root/s1, root/s2


CASE_LIST: list[Case] = []


def case(id: str, kind: str, reader: str, tamper=None, expect=None, **kw) -> None:
    CASE_LIST.append(Case(f"{kind}-{reader}-{id}", kind, reader, tamper, expect, **kw))


def base_kind(kind: str) -> str:
    return kind.replace("_fig", "")


def setup(c: Case, refs: Refs, tmp_path: Path) -> Ctx:
    root = tmp_path / "w"
    root.mkdir()
    kind = base_kind(c.kind)
    if c.reader == "merge" or c.layout == "shards":
        shards = [root / "s1", root / "s2"]
        for k, s in enumerate(shards, 1):
            shutil.copytree(refs.dirs[f"{kind}_s{k}"], s, symlinks=True)
        return Ctx(root, refs, kind, shards[0], shards)
    shutil.copytree(refs.dirs[c.kind], root / "run", symlinks=True)
    return Ctx(root, refs, kind, root / "run")


def reader_args(c: Case, ctx: Ctx) -> list:
    r = c.reader
    if r == "plot":
        return ["plot", ctx.run, "-q"]
    if r == "export":
        return ["export", ctx.run, "--csv", "-q"]
    if r == "export_out":
        return ["export", ctx.run, "--csv", "--out", ctx.root / "table.csv", "-q"]
    if r == "merge":  # (a validation's figures take a second to draw: its shards merge without them)
        extra = ["--no-plot"] if ctx.kind == "validation" else []
        return ["merge", *ctx.shards, "--out", ctx.root / "merged", "-q", *extra]
    if r == "resume":
        return ["run", ctx.config, "--out", ctx.run, "--resume", "--no-plot", "-q"]
    if r == "rerun":  # the next run in the directory (not --resume)
        if ctx.kind == "validation":
            return ["validate", ctx.config, "--points", 2, "--out", ctx.run, "-q", "--no-plot"]
        return ["run", ctx.config, "--out", ctx.run, "-q", "--no-plot"]
    raise AssertionError(r)


LOAD_SCRIPT = """\
import sys, phasediag
try:
    phasediag.load(sys.argv[1])
except phasediag.BadInput as exc:
    print("Error: " + str(exc), file=sys.stderr)
    sys.exit(2)
"""


def invoke(c: Case, ctx: Ctx, args: list | None = None) -> Outcome:
    if args is None and c.reader == "load":
        if c.sub:
            return _subprocess([sys.executable, "-c", LOAD_SCRIPT, str(ctx.run)], ctx)
        try:
            phasediag.load(ctx.run)
        except phasediag.BadInput as exc:
            return Outcome(2, "", f"Error: {exc}" + ("" if "\n" in str(exc) else "\n"))
        except Exception as exc:  # noqa: BLE001 - reported as what the CLI would call an internal error
            return Outcome(1, "", f"internal error: {type(exc).__name__}: {exc}\n")
        return Outcome(0, "", "")
    args = [str(a) for a in (args if args is not None else reader_args(c, ctx))]
    if c.sub:
        return _subprocess([sys.executable, "-m", "phasediag", *args], ctx)
    result = CliRunner().invoke(group, args)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def _subprocess(argv: list[str], ctx: Ctx) -> Outcome:
    env = {k: v for k, v in os.environ.items() if k != "PHASEDIAG_DEBUG"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ctx.root, env=env)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(argv[1:])}: still running after 30 s (blocked on a FIFO?)") from None
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------------------------------------------- checks


def one_error_line(out: Outcome) -> str:
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert "internal error" not in out.stderr + out.stdout, out.stderr
    assert out.code == 2, f"exit {out.code}: {out.stderr}{out.stdout}"
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"not one 'Error:' line on stderr: {out.stderr!r}"
    assert out.stdout == "", out.stdout
    return lines[0]


def refused(*names) -> Callable:
    """Exit 2, one 'Error:' line naming one of `names` (default: the directory under test), nothing changed."""

    def check(ctx: Ctx, out: Outcome, before: dict) -> None:
        line = one_error_line(out)
        wanted = [n(ctx) if callable(n) else n for n in names] or [str(ctx.run)]
        assert any(str(w) in line for w in wanted), f"the message names none of {wanted}: {line}"
        assert_same(before, snapshot(ctx.root))

    return check


def _meta_of(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _comparable(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("timing", "created")}


def refused_or_fresh() -> Callable:
    """run --resume over tampered contents: either one line of bad input with nothing changed, or the
    result computed again (the state of a fresh run); never the tampered result reused as "up to date"."""

    def check(ctx: Ctx, out: Outcome, before: dict) -> None:
        (refused() if out.code != 0 else fresh())(ctx, out, before)

    return check


def fresh(*removed: str, ref: str | None = None) -> Callable:
    """Exit 0, nothing on stderr; the directory holds the data and meta.json of a clean run; the entries
    `removed` (relative to root/run) are gone, every other entry is exactly as before."""

    def check(ctx: Ctx, out: Outcome, before: dict) -> None:
        assert out.code == 0 and out.stderr == "", f"exit {out.code}: {out.stderr}{out.stdout}"
        reference = ctx.refs.dirs[ref or ctx.kind]
        after = snapshot(ctx.root)
        run = ctx.rel(ctx.run)
        replaced = {f"{run}/{ctx.data}", f"{run}/{META}"}
        gone = [f"{run}/{r}" for r in removed]

        def keep(k: str) -> bool:
            return k not in replaced and not any(k == g or k.startswith(g + "/") for g in gone)

        for g in gone:
            assert g not in after, f"{g} was not removed"
        assert_same({k: v for k, v in before.items() if keep(k)}, {k: v for k, v in after.items() if keep(k)})
        same_data = (ctx.run / ctx.data).read_bytes() == (reference / ctx.data).read_bytes()
        assert same_data, f"exit 0, but {ctx.data} is not the one a clean run writes (the tampered data kept)"
        got, want = _comparable(_meta_of(ctx.run / META)), _comparable(_meta_of(reference / META))
        differ = sorted(k for k in set(got) | set(want) if got.get(k, "<missing>") != want.get(k, "<missing>"))
        assert not differ, f"exit 0, but meta.json is not the one a clean run writes: {differ} differ"
        phasediag.load(ctx.run)

    return check


# ---------------------------------------------------------------------------------------------------- tamperings


def edit_meta(change: Callable[[dict], dict | None]) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        path = ctx.run / META
        meta = json.loads(path.read_text())
        new = change(meta)
        path.write_text(json.dumps(meta if new is None else new, indent=2))

    return tamper


def set_key(key: str, value) -> Callable[[Ctx], None]:
    return edit_meta(lambda m: {**m, key: value})


def drop_key(key: str) -> Callable[[Ctx], None]:
    return edit_meta(lambda m: {k: v for k, v in m.items() if k != key})


def meta_text(text: str | bytes) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        if isinstance(text, bytes):
            (ctx.run / META).write_bytes(text)
        else:
            (ctx.run / META).write_text(text)

    return tamper


def meta_insert(fragment: str) -> Callable[[Ctx], None]:
    """Insert `fragment` (JSON text: "key": value,) as the first key of meta.json, the rest intact."""

    def tamper(ctx: Ctx) -> None:
        text = (ctx.run / META).read_text()
        (ctx.run / META).write_text(text.replace("{", "{" + fragment + " ", 1))

    return tamper


def meta_bad_utf8(ctx: Ctx) -> None:
    (ctx.run / META).write_bytes(b"\xff\xfe" + (ctx.run / META).read_bytes())


def entry_of(path: Path) -> dict:
    data = Path(path).read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def rehash(ctx: Ctx, name: str | None = None) -> None:
    """Record the current bytes of data file `name` in the manifest (so the hash check passes)."""
    name = name or ctx.data
    path = ctx.run / META
    meta = json.loads(path.read_text())
    meta["manifest"][name] = entry_of(ctx.run / name)
    path.write_text(json.dumps(meta, indent=2))


def manifest_edit(change: Callable[[dict, Ctx], None]) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        path = ctx.run / META
        meta = json.loads(path.read_text())
        change(meta, ctx)
        path.write_text(json.dumps(meta, indent=2))

    return tamper


def data_bytes(make: Callable[[bytes], bytes], consistent: bool = False) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        path = ctx.run / ctx.data
        path.write_bytes(make(path.read_bytes()))
        if consistent:
            rehash(ctx)

    return tamper


def garbage(old: bytes) -> bytes:
    return bytes(np.random.default_rng(1).integers(0, 256, len(old), dtype=np.uint8))


def _alter_values(ctx: Ctx) -> None:
    """Valid data of the same form with other numbers (what an attacker would write)."""
    path = ctx.run / ctx.data
    if ctx.data == "results.npz":
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["ntk_change"] = np.full_like(arrays["ntk_change"], 12345.0)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    else:
        body = json.loads(path.read_text())
        for row in body["rows"]:
            row["measured_label"] = row["predicted_label"] = "kernel"
        path.write_text(json.dumps(body))


def data_missing(ctx: Ctx) -> None:
    (ctx.run / ctx.data).unlink()


def npz_edit(change: Callable[[dict], None], consistent: bool = True) -> Callable[[Ctx], None]:
    """Rewrite results.npz as a valid npz with `change` applied to its arrays (manifest updated if
    `consistent`: the field-by-field validation must catch it, not the hash)."""

    def tamper(ctx: Ctx) -> None:
        path = ctx.run / "results.npz"
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        change(arrays)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        if consistent:
            rehash(ctx, "results.npz")

    return tamper


def json_data_edit(change: Callable[[dict], object], text_change: Callable[[str], str] | None = None,
                   consistent: bool = True) -> Callable[[Ctx], None]:
    """Rewrite validation.json with `change` applied to its body (and its text), manifest updated."""

    def tamper(ctx: Ctx) -> None:
        path = ctx.run / "validation.json"
        body = json.loads(path.read_text())
        new = change(body)
        text = json.dumps(body if new is None else new, indent=1)
        path.write_text(text_change(text) if text_change else text)
        if consistent:
            rehash(ctx, "validation.json")

    return tamper


def _set(d: dict, key: str, value) -> None:
    d[key] = value


def _pop(d: dict, key: str) -> None:
    d.pop(key)


def _phase_code(code: int) -> Callable[[dict], None]:
    def change(arrays: dict) -> None:
        phase = arrays["phase"].copy()
        phase.reshape(-1)[0] = code
        arrays["phase"] = phase

    return change


def replace_with(name_of: Callable[[Ctx], str], make: Callable[[Ctx, Path], None]) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        path = ctx.run / name_of(ctx)
        if path.exists() or path.is_symlink():
            path.unlink()
        make(ctx, path)

    return tamper


def link_to_copy(ctx: Ctx, path: Path) -> None:
    """A symbolic link to an identical copy of the file outside the directory (the hash would pass)."""
    elsewhere = ctx.root / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    reference = ctx.refs.dirs[ctx.kind] if ctx.run.name == "run" else ctx.refs.dirs[f"{ctx.kind}_s1"]
    shutil.copyfile(reference / path.name, elsewhere / path.name)
    path.symlink_to(elsewhere / path.name)


def link_to_dev_zero(ctx: Ctx, path: Path) -> None:
    path.symlink_to("/dev/zero")


def link_dangling(ctx: Ctx, path: Path) -> None:
    path.symlink_to(ctx.root / "nowhere")


def a_directory(ctx: Ctx, path: Path) -> None:
    path.mkdir()
    (path / "keep.txt").write_text("a user file in a folder\n")


def a_fifo(ctx: Ctx, path: Path) -> None:
    os.mkfifo(path)


def a_device(ctx: Ctx, path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))  # like /dev/null


def data_name(ctx: Ctx) -> str:
    return ctx.data


def meta_name(ctx: Ctx) -> str:
    return META


DEEP = "[" * 10_000 + "]" * 10_000

# tamperings of the contents, for every kind: a reader refuses; run --resume refuses or computes it again
CONTENT = {
    "meta-not-json": meta_text("{not json"),
    "meta-empty": meta_text(""),
    "meta-NaN": meta_insert('"injected": NaN,'),
    "meta-Infinity": meta_insert('"injected": -Infinity,'),
    "meta-a-list": meta_text("[1, 2]"),
    "meta-null": meta_text("null"),
    "meta-10000-deep": meta_insert(f'"deep": {DEEP},'),
    "meta-not-utf8": meta_bad_utf8,
    "name-a-path": set_key("name", "../../evil"),
    "files-names-a-path": manifest_edit(lambda m, c: m["files"].insert(0, "../x")),
    "manifest-names-etc-passwd": manifest_edit(lambda m, c: m["manifest"].update(
        {"/etc/passwd": m["manifest"][c.data]})),
    "manifest-size-wrong": manifest_edit(lambda m, c: _set(m["manifest"][c.data], "size",
                                                           m["manifest"][c.data]["size"] + 1)),
    "manifest-hash-wrong": manifest_edit(lambda m, c: _set(m["manifest"][c.data], "sha256", "0" * 64)),
    "manifest-misses-the-data": manifest_edit(lambda m, c: _pop(m["manifest"], c.data)),
    "manifest-lists-an-extra-file": manifest_edit(lambda m, c: m["manifest"].update(
        {"ghost.png": {"size": 1, "sha256": "0" * 64}})),
    "data-unlisted-and-altered": lambda c: (_alter_values(c), manifest_edit(lambda m, c: (
        _pop(m["manifest"], c.data), m["files"].remove(c.data)))(c)),
    "data-empty": data_bytes(lambda b: b""),
    "data-truncated": data_bytes(lambda b: b[: len(b) // 2]),
    "data-garbage": data_bytes(garbage),
    "data-missing": data_missing,
    "data-garbage-manifest-updated": data_bytes(garbage, consistent=True),
    "data-empty-manifest-updated": data_bytes(lambda b: b"", consistent=True),
}

# a valid results.npz that is not what the run wrote, its manifest updated
NPZ = {
    "array-missing": npz_edit(lambda a: _pop(a, "phase")),
    "coordinate-missing": npz_edit(lambda a: _pop(a, "d")),
    "array-extra": npz_edit(lambda a: _set(a, "evil", np.zeros_like(a["ntk_change"]))),
    "array-wrong-shape": npz_edit(lambda a: _set(a, "phase", np.zeros((3, 3), dtype=np.int8))),
    "array-object-dtype": npz_edit(lambda a: _set(a, "ntk_change", a["ntk_change"].astype(object))),
    "metric-strings": npz_edit(lambda a: _set(a, "ntk_change", a["ntk_change"].astype(str))),
    "metric-complex": npz_edit(lambda a: _set(a, "ntk_change", a["ntk_change"].astype(complex))),
    "coordinates-NaN": npz_edit(lambda a: _set(a, "d", np.full_like(a["d"], np.nan))),
    "phase-code-minus-1": npz_edit(_phase_code(-1)),
    "phase-code-99": npz_edit(_phase_code(99)),
    "phase-code-minus-1-manifest-stale": npz_edit(_phase_code(-1), consistent=False),
}

# a validation.json that is not what the run wrote, its manifest updated
VALIDATION_JSON = {
    "body-a-list": json_data_edit(lambda b: []),
    "rows-not-a-list": json_data_edit(lambda b: {**b, "rows": 5}),
    "NaN-literal": json_data_edit(lambda b: None, lambda t: t.replace('"time": ', '"time": NaN, "was": ', 1)),
    "10000-deep": json_data_edit(lambda b: None, lambda t: t.replace("{", '{"deep": ' + DEEP + ",", 1)),
    "index-not-a-number": json_data_edit(lambda b: b["rows"][0].update(index="x")),
    "row-misses-its-errors": json_data_edit(lambda b: b["rows"][0].pop("error")),
    "label-a-number": json_data_edit(lambda b: b["rows"][0].update(measured_label=5)),
}

# the data file or meta.json replaced by something that is not a regular file: every reader refuses
SPECIAL = {
    "data-symlink-to-identical-copy": (data_name, link_to_copy, False),
    "data-symlink-to-dev-zero": (data_name, link_to_dev_zero, False),
    "data-dangling-symlink": (data_name, link_dangling, False),
    "data-a-directory": (data_name, a_directory, False),
    "data-a-device": (data_name, a_device, True),
    "meta-symlink-to-identical-copy": (meta_name, link_to_copy, False),
    "meta-symlink-to-dev-zero": (meta_name, link_to_dev_zero, False),
    "meta-dangling-symlink": (meta_name, link_dangling, False),
    "meta-a-directory": (meta_name, a_directory, False),
    "meta-a-device": (meta_name, a_device, True),
}

READERS = ("plot", "export", "export_out", "merge", "resume", "load")

for kind in ("sweep", "validation"):
    readers = [r for r in READERS if not (r == "resume" and kind == "validation")]
    contents = {**CONTENT, **(NPZ if kind == "sweep" else VALIDATION_JSON)}
    for name, tamper in contents.items():
        for reader in readers:
            if reader == "plot" and name in VALIDATION_JSON and name not in ("body-a-list", "10000-deep"):
                continue  # (plot reads through load; a validation wrongly accepted takes a second to draw)
            case(name, kind, reader, tamper, refused_or_fresh() if reader == "resume" else refused())
    for name, (which, make, root_only) in SPECIAL.items():
        for reader in readers:
            case(name, kind, reader, replace_with(which, make), refused(), root_only=root_only)

# a FIFO must not make a reader hang (subprocesses with a timeout)
for reader in READERS:
    case("data-a-FIFO", "sweep", reader, replace_with(data_name, a_fifo), refused(), sub=True)
for reader in ("plot", "resume", "load"):
    case("meta-a-FIFO", "sweep", reader, replace_with(meta_name, a_fifo), refused(), sub=True)
for reader in ("export", "load"):
    case("data-a-FIFO", "validation", reader, replace_with(data_name, a_fifo), refused(), sub=True)


# ---------------------------------------------------------------------------------------------------- meta fields

NAMES = {"abs": "/abs", "slash": "a/b", "hidden": ".hidden", "newline": "x\n", "unicode": "ünïcödé", "empty": "",
         "int": 5, "null": None, "list": ["mini"]}
LISTED_PATHS = {"etc-passwd": "/etc/passwd", "through-data": "results.npz/../../x", "lock": ".phasediag.lock",
                "int": 5}

FIELD_TAMPERINGS = {
    **{f"name-{k}": set_key("name", v) for k, v in NAMES.items()},
    **{f"missing-{k}": drop_key(k) for k in ("name", "config", "files", "manifest", "kind", "shape", "axes",
                                              "dims", "coords", "legends", "shard", "schema", "config_hash")},
    **{f"files-{k}": manifest_edit(lambda m, c, v=v: m["files"].insert(0, v)) for k, v in LISTED_PATHS.items()},
    **{f"figures-{k}": manifest_edit(lambda m, c, v=v: m.update(figures=[v])) for k, v in LISTED_PATHS.items()},
    **{f"manifest-{k}": manifest_edit(lambda m, c, v=v: m["manifest"].update({v: m["manifest"][c.data]}))
       for k, v in LISTED_PATHS.items() if isinstance(v, str)},
    "figures-meta-json": set_key("figures", ["meta.json"]),
    "config-a-string": set_key("config", "x"),
    "config-a-list": set_key("config", []),
    "files-a-string": set_key("files", "results.npz"),
    "files-a-dict": set_key("files", {"results.npz": 1}),
    "figures-a-string": set_key("figures", "x.png"),
    "figures-a-dict": set_key("figures", {"x.png": 1}),
    "manifest-a-list": set_key("manifest", []),
    "manifest-size-a-string": manifest_edit(lambda m, c: _set(m["manifest"][c.data], "size",
                                                              str(m["manifest"][c.data]["size"]))),
    "manifest-size-a-float": manifest_edit(lambda m, c: _set(m["manifest"][c.data], "size",
                                                             float(m["manifest"][c.data]["size"]))),
    "manifest-size-a-bool": manifest_edit(lambda m, c: _set(m["manifest"][c.data], "size", True)),
    "manifest-size-negative": manifest_edit(lambda m, c: _set(m["manifest"][c.data], "size", -1)),
    "manifest-hash-uppercase": manifest_edit(lambda m, c: _set(m["manifest"][c.data], "sha256",
                                                               m["manifest"][c.data]["sha256"].upper())),
    "kind-unknown": set_key("kind", "bogus"),
    "kind-an-int": set_key("kind", 5),
    "kind-a-list": set_key("kind", ["sweep"]),
    "shape-a-string": set_key("shape", "2x2"),
    "shape-floats": set_key("shape", [2.0, 2.0]),
    "shape-bools": set_key("shape", [True, 2]),
    "shape-wrong": set_key("shape", [3, 3]),
    "axes-a-string": set_key("axes", "ds"),
    "axes-ints": set_key("axes", [5, 6]),
    "axes-unknown": set_key("axes", ["d", "x"]),
    "dims-a-list": set_key("dims", []),
    "dims-a-string": edit_meta(lambda m: m["dims"].update(phase="ds")),
    "dims-unknown": edit_meta(lambda m: m["dims"].update(phase=["nope"])),
    "coords-a-string": set_key("coords", "ds"),
    "coords-ints": set_key("coords", [5]),
    "legends-a-list": set_key("legends", []),
    "legends-an-int": edit_meta(lambda m: m["legends"].update(phase=3)),
    "legends-empty-phase": edit_meta(lambda m: m["legends"].update(phase=[])),
    "shard-a-string": set_key("shard", "1/2"),
    "shard-a-list": set_key("shard", [1, 2]),
    "schema-a-string": set_key("schema", "2"),
    "schema-a-bool": set_key("schema", True),
    "schema-from-the-future": set_key("schema", 99),
}
# export reads through load (covered here) and writes tables: it gets the tamperings that shape the tables
EXPORT_FIELDS = {"name-abs", "missing-dims", "missing-coords", "missing-legends", "missing-axes", "missing-shard",
                 "dims-a-string", "dims-a-list", "coords-a-string", "legends-a-list", "legends-empty-phase",
                 "axes-a-string", "shard-a-string", "shape-wrong", "figures-meta-json", "files-lock"}
# plot reads through load too: it gets those its own code reads (shard, figures, kind, name, legends, shape)
PLOT_FIELDS = {"name-abs", "name-newline", "missing-shard", "missing-legends", "missing-axes", "missing-dims",
               "figures-meta-json", "figures-through-data", "figures-lock", "kind-a-list", "shape-a-string",
               "shape-wrong", "axes-a-string", "dims-a-string", "legends-a-list", "legends-empty-phase",
               "shard-a-string", "shard-a-list", "schema-from-the-future", "files-lock", "manifest-lock"}
for name, tamper in FIELD_TAMPERINGS.items():
    for reader in ("load", "resume", *(["plot"] if name in PLOT_FIELDS else []),
                   *(["export"] if name in EXPORT_FIELDS else [])):
        case(name, "sweep", reader, tamper, refused_or_fresh() if reader == "resume" else refused())
case("missing-grid_points", "sweep", "resume", drop_key("grid_points"), refused_or_fresh())

VALIDATION_FIELDS = ("name-abs", "name-newline", "missing-name", "missing-config", "missing-files",
                     "missing-manifest", "missing-kind", "missing-dims", "missing-coords", "missing-shard",
                     "files-etc-passwd", "figures-through-data", "manifest-lock", "kind-a-list", "dims-a-string",
                     "coords-a-string", "shard-a-string", "schema-a-string")
VALIDATION_OVERRIDES = {"dims-a-string": edit_meta(lambda m: m["dims"].update(width="x"))}  # (it has no phase)
for name in VALIDATION_FIELDS:
    for reader in ("load", "export"):
        case(name, "validation", reader, VALIDATION_OVERRIDES.get(name, FIELD_TAMPERINGS[name]), refused())
case("missing-settings", "validation", "load", drop_key("settings"), refused())

# the schema downgraded (manifest dropped): the field-by-field checks still refuse what a run cannot write
case("schema-1-no-manifest-phase-99", "sweep", "load", lambda c: (
    npz_edit(_phase_code(99), consistent=False)(c), drop_key("manifest")(c), set_key("schema", 1)(c)),
    refused())
case("no-schema-key-hash-wrong", "sweep", "load", lambda c: (
    data_bytes(garbage)(c), drop_key("schema")(c)), refused())


# ---------------------------------------------------------------------------------------------------- other kinds

for kind in ("scaling", "sgd_drift"):
    for name in ("meta-a-list", "data-garbage-manifest-updated", "manifest-hash-wrong"):
        for reader in ("load", "export"):
            case(name, kind, reader, CONTENT[name], refused())
    for reader in ("load", "export"):
        case("data-symlink-to-identical-copy", kind, reader, replace_with(data_name, link_to_copy), refused())
# (a meta.json that is not one the tool wrote is not replaced: tests/test_user_files.py)
case("meta-not-json", "scaling", "resume", CONTENT["meta-not-json"], refused())
case("limit-phase-code-99", "scaling", "load", npz_edit(lambda a: _set(a, "limit_phase", np.full_like(
    a["limit_phase"], 99))), refused())
case("limit-phase-code-minus-1", "scaling", "export", npz_edit(lambda a: _set(a, "limit_phase", np.full_like(
    a["limit_phase"], -1))), refused())

# ---------------------------------------------------------------------------------------- symlinked run directory


def symlinked_run(ctx: Ctx) -> None:
    """The run directory is a symbolic link to the real one (users symlink outputs/)."""
    real = ctx.root / "real"
    ctx.run.rename(real)
    ctx.run.symlink_to(real, target_is_directory=True)


def works(extra: Callable[[Ctx, Outcome], None] | None = None, *, added=(), changed=()) -> Callable:
    """Exit 0, no stderr; the state is the previous one plus `added`, with only `changed` (and added) entries
    different (relative to root)."""

    def check(ctx: Ctx, out: Outcome, before: dict) -> None:
        assert out.code == 0 and out.stderr == "", f"exit {out.code}: {out.stderr}{out.stdout}"
        after = snapshot(ctx.root)
        for a in added:
            assert a in after, f"{a} was not written"
        skip = set(added) | set(changed)
        assert_same({k: v for k, v in before.items() if k not in skip},
                    {k: v for k, v in after.items() if k not in skip})
        if extra:
            extra(ctx, out)

    return check


def _figure_like_reference(ctx: Ctx, out: Outcome) -> None:
    meta = _meta_of(ctx.run / META)
    ref = _meta_of(ctx.refs.dirs["sweep_fig"] / META)
    assert meta["figures"] == ref["figures"] and ctx.run.is_symlink()
    assert (ctx.root / "real" / FIGURE).read_bytes() == (ctx.refs.dirs["sweep_fig"] / FIGURE).read_bytes()
    phasediag.load(ctx.run)


def _table_recorded(ctx: Ctx, out: Outcome) -> None:
    meta = _meta_of(ctx.root / "real" / META)
    assert "mini.csv" in meta["tables"] and "mini.csv" in meta["manifest"] and ctx.run.is_symlink()
    rows = (ctx.root / "real" / "mini.csv").read_text().splitlines()
    assert len(rows) == 1 + (4 if ctx.kind == "sweep" else 2)
    phasediag.load(ctx.run)


def _up_to_date(ctx: Ctx, out: Outcome) -> None:
    assert json.loads(out.stdout)["status"] == "up to date"


def _merged_like_whole(ctx: Ctx, out: Outcome) -> None:
    assert (ctx.root / "merged" / "results.npz").read_bytes() == (
        ctx.refs.dirs["sweep"] / "results.npz").read_bytes()
    phasediag.load(ctx.root / "merged")


def _loads_like_reference(ctx: Ctx, out: Outcome) -> None:
    got, want = phasediag.load(ctx.run), phasediag.load(ctx.refs.dirs[ctx.kind])
    assert set(got.arrays) == set(want.arrays)
    assert all(np.array_equal(got[n], want[n]) for n in got.arrays if got[n].dtype.kind != "f")


case("symlinked-run-dir", "sweep", "plot", symlinked_run,
     works(_figure_like_reference, added=[f"real/{FIGURE}"], changed=["real/meta.json"]))
case("symlinked-run-dir", "sweep", "export", symlinked_run,
     works(_table_recorded, added=["real/mini.csv"], changed=["real/meta.json"]))
case("symlinked-run-dir", "validation", "export", symlinked_run,
     works(_table_recorded, added=["real/mini.csv"], changed=["real/meta.json"]))
case("symlinked-run-dir", "sweep", "export_out", symlinked_run, works(added=["table.csv"]))
case("symlinked-run-dir", "sweep", "load", symlinked_run, works(_loads_like_reference))
case("symlinked-run-dir", "validation", "load", symlinked_run, works(_loads_like_reference))


def symlinked_shards(ctx: Ctx) -> None:
    for s in ctx.shards:
        real = ctx.root / f"real_{s.name}"
        s.rename(real)
        s.symlink_to(real, target_is_directory=True)


case("symlinked-shards", "sweep", "merge", symlinked_shards, works(
    _merged_like_whole, added=["merged", "merged/results.npz", "merged/meta.json", f"merged/{FIGURE}"]))


CUSTOM_ARGS: dict[str, Callable[[Case, Ctx], list]] = {}


def custom(id: str, kind: str, args: Callable[[Ctx], list], tamper=None, expect=None, **kw) -> None:
    c = Case(f"{kind}-{id}", kind, "custom", tamper, expect, **kw)
    CASE_LIST.append(c)
    CUSTOM_ARGS[c.id] = lambda c, ctx: args(ctx)


custom("resume-symlinked-run-dir-up-to-date", "sweep",
       lambda ctx: ["run", ctx.config, "--out", ctx.run, "--resume", "--json", "--no-plot"], symlinked_run,
       works(_up_to_date))


def _rerun_into_link(ctx: Ctx, out: Outcome) -> None:
    assert ctx.run.is_symlink() and (ctx.root / "real" / "results.npz").read_bytes() == (
        ctx.refs.dirs["sweep"] / "results.npz").read_bytes()
    phasediag.load(ctx.run)


custom("rerun-into-symlinked-run-dir", "sweep", lambda ctx: ["run", ctx.config, "--out", ctx.run, "-q",
                                                           "--no-plot"],
       symlinked_run, works(_rerun_into_link, changed=["real/results.npz", "real/meta.json"]))


def symlink_loop(ctx: Ctx) -> None:
    shutil.rmtree(ctx.run)
    (ctx.root / "loop_b").symlink_to(ctx.root / "run")
    ctx.run.symlink_to(ctx.root / "loop_b")


for reader in READERS:
    case("symlink-loop", "sweep", reader, symlink_loop, refused())


# ---------------------------------------------------------------------------------------------------- export --out


def export_to(target: Callable[[Ctx], Path]) -> Callable[[Ctx], list]:
    return lambda ctx: ["export", ctx.run, "--csv", "--out", target(ctx), "-q"]


def plant(rel: str, make: Callable[[Ctx, Path], None]) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        make(ctx, ctx.root / rel)

    return tamper


def user_file(ctx: Ctx, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a user's file\n")


def link_to(target_rel: str, make_target: bool = True) -> Callable[[Ctx, Path], None]:
    def make(ctx: Ctx, path: Path) -> None:
        target = ctx.root / target_rel
        if make_target and not target.exists():
            user_file(ctx, target)
        path.symlink_to(target)

    return make


_MOUNTS: list[Path] = []  # read-only mounts made by a case, unmounted after it


def unwritable_dir(ctx: Ctx, path: Path) -> None:
    """A directory no one may write into: mode 0555, or for root (who ignores modes) a read-only tmpfs."""
    path.mkdir()
    if not ROOT:
        path.chmod(0o555)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"root ignores file modes and cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    _MOUNTS.append(path)


def both(*tampers: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        for t in tampers:
            t(ctx)

    return tamper


OUT_TARGETS = {
    "its-own-results": (lambda c: c.run / "results.npz", None, False),
    "its-own-meta": (lambda c: c.run / "meta.json", None, False),
    "dotdot-to-its-results": (lambda c: c.run / ".." / "run" / "results.npz", None, False),
    "dotdot-to-its-meta": (lambda c: c.root / "nowhere" / ".." / "run" / "meta.json", None, False),
    "symlink-outside-to-its-results": (lambda c: c.root / "link.csv",
                                       plant("link.csv", link_to("run/results.npz")), False),
    "symlink-outside-to-its-meta": (lambda c: c.root / "link.csv", plant("link.csv", link_to("run/meta.json")),
                                    False),
    "symlink-inside-to-its-results": (lambda c: c.run / "link.csv",
                                      plant("run/link.csv", link_to("run/results.npz")), False),
    "symlink-to-a-user-file": (lambda c: c.root / "link.csv", plant("link.csv", link_to("target.csv")), False),
    "dangling-symlink": (lambda c: c.root / "link.csv", plant("link.csv", link_to("nowhere.csv", False)), False),
    "a-device": (lambda c: c.root / "dev.csv", plant("dev.csv", a_device), True),
    "a-directory": (lambda c: c.root / "adir", plant("adir/keep.txt", user_file), False),
    "under-a-regular-file": (lambda c: c.root / "afile" / "x.csv", plant("afile", user_file), False),
    "its-lock-file": (lambda c: c.run / ".phasediag.lock", None, False),
    "its-staging-folder": (lambda c: c.run / ".phasediag.txn" / "x.csv", None, False),
    "inside-not-a-csv": (lambda c: c.run / "notes.txt", None, False),
    "the-run-dir-itself": (lambda c: c.run, None, False),
    "through-a-symlinked-dir-to-its-results": (lambda c: c.root / "alias" / "results.npz",
                                               plant("alias", lambda c, p: p.symlink_to(c.run)), False),
}
for name, (target, tamper, root_only) in OUT_TARGETS.items():
    custom(f"export-out-{name}", "sweep", export_to(target), tamper,
           refused("--out", lambda c, t=target: t(c).name, lambda c, t=target: t(c).parent.name),
           root_only=root_only)
custom("export-out-a-FIFO", "sweep", export_to(lambda c: c.root / "f.csv"), plant("f.csv", a_fifo),
       refused("f.csv"), sub=True)
custom("export-out-an-unwritable-dir", "sweep", export_to(lambda c: c.root / "ro" / "x.csv"),
       plant("ro", unwritable_dir), refused("ro"))

# the default table name taken by something that is not a regular file
for name, make, root_only in (("symlink-to-a-user-file", link_to("target.csv"), False),
                              ("a-directory", a_directory, False), ("a-device", a_device, True)):
    case(f"default-table-{name}", "sweep", "export", plant("run/mini.csv", make), refused("mini.csv"),
         root_only=root_only)


# ---------------------------------------------------------------------------------------------------- merge


def merge_args(*parts: str, out: str = "merged", extra=()) -> Callable[[Ctx], list]:
    return lambda ctx: ["merge", *[ctx.root / p for p in parts], "--out", ctx.root / out, "-q", *extra]


def edit_meta_of(rel: str, change: Callable[[dict], None]) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        path = ctx.root / rel / META
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta, indent=2))

    return tamper


def npz_edit_of(rel: str, change: Callable[[dict], None]) -> Callable[[Ctx], None]:
    def tamper(ctx: Ctx) -> None:
        sub = Ctx(ctx.root, ctx.refs, ctx.kind, ctx.root / rel)
        npz_edit(change)(sub)

    return tamper


def copy_ref(name: str, rel: str) -> Callable[[Ctx], None]:
    return lambda ctx: shutil.copytree(ctx.refs.dirs[name], ctx.root / rel, symlinks=True)


def _shift_bounds(m: dict, delta: int, key: str) -> None:
    m["shard"][key] += delta


MERGE_CASES = {
    "out-a-symlink-to-shard-1": (merge_args("s1", "s2", out="mlink"),
                                 plant("mlink", lambda c, p: p.symlink_to(c.root / "s1")), ("out",)),
    "out-dotdot-equal-to-shard-1": (merge_args("s1", "s2", out="nowhere/../s1"), None, ("out",)),
    "out-dot-in-shard-2": (merge_args("s1", "s2", out="s2/."), None, ("out",)),
    "shards-of-different-configs": (merge_args("s1", "o2"), copy_ref("other_s2", "o2"), ("config",)),
    "a-shard-given-twice": (merge_args("s1", "s1"), None, ("shard",)),
    "a-shard-given-twice-beside-all": (merge_args("s1", "s1", "s2"), None, ("twice",)),
    "a-missing-shard": (merge_args("s1"), None, ("missing",)),
    "a-shard-that-does-not-exist": (merge_args("s1", "s3"), None, ("s3",)),
    "coordinates-differ-manifest-updated": (merge_args("s1", "s2"),
                                            npz_edit_of("s2", lambda a: _set(a, "d", a["d"] * 2)), ("coord",)),
    "shard-bounds-edited": (merge_args("s1", "s2"), both(edit_meta_of("s1", lambda m: _shift_bounds(m, -1, "stop")),
                                                         edit_meta_of("s2", lambda m: _shift_bounds(m, -1, "start"))),
                            ("shard 1/2",)),
    "shard-count-edited": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m["shard"].update(count=3)),
                           ("shard",)),
    "shard-index-a-string": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m["shard"].update(index="1")),
                             ("shard",)),
    "shard-index-a-bool": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m["shard"].update(index=True)),
                           ("shard",)),
    "shard-index-a-float": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m["shard"].update(index=1.0)),
                            ("shard",)),
    "shard-null": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m.update(shard=None)), ("shard",)),
    "shard-a-string": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m.update(shard="1/2")),
                       ("shard", "s1")),
    "config-hash-edited": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m.update(config_hash="0" * 16)),
                           ("config",)),
    "missing-config-hash": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m.pop("config_hash")),
                            ("s1", "config_hash")),
    "shards-of-different-kinds": (merge_args("s1", "v2"), copy_ref("validation_s2", "v2"), ("kind",)),
    "kind-a-list": (merge_args("s1", "s2"), edit_meta_of("s1", lambda m: m.update(kind=["sweep"])), ("s1",)),
    "phase-code-99-in-shard-2-manifest-updated": (merge_args("s1", "s2"), npz_edit_of("s2", _phase_code(99)),
                                                  ("s2",)),
    "phase-code-99-in-shard-2-no-plot": (merge_args("s1", "s2", extra=["--no-plot"]),
                                         npz_edit_of("s2", _phase_code(99)), ("s2",)),
    "metric-strings-in-shard-2-manifest-updated": (merge_args("s1", "s2"), npz_edit_of(
        "s2", lambda a: _set(a, "ntk_change", a["ntk_change"].astype(str))), ("s2",)),
    "out-a-regular-file": (merge_args("s1", "s2", out="afile"), plant("afile", user_file), ("afile",)),
    "out-a-device": (merge_args("s1", "s2", out="dev"), plant("dev", a_device), ("dev",)),
    "out-results-a-symlink-to-a-user-file": (merge_args("s1", "s2", out="m"), both(
        plant("m/notes.txt", user_file), plant("m/results.npz", link_to("target.npz"))), ("results.npz",)),
    "out-meta-a-symlink-to-a-user-file": (merge_args("s1", "s2", out="m", extra=["--no-plot"]), both(
        plant("m/notes.txt", user_file), plant("m/meta.json", link_to("target.json"))), ("meta.json",)),
}
SHARD_PATHS = (lambda c: c.root / "s1", lambda c: c.root / "s2")  # naming the shard at fault is naming it too
for name, (args, tamper, names) in MERGE_CASES.items():
    custom(f"merge-{name}", "sweep", args, tamper, refused(*names, *SHARD_PATHS), root_only=name == "out-a-device",
           layout="shards")

VALIDATION_MERGE = {
    "a-shard-given-twice": (merge_args("s1", "s1"), None, ("shard",)),
    "settings-differ-manifest-updated": (merge_args("s1", "s2"), lambda c: json_data_edit(
        lambda b: b["settings"].update(points=3))(Ctx(c.root, c.refs, "validation", c.root / "s2")), ("settings",)),
    "rows-index-a-string-manifest-updated": (merge_args("s1", "s2"), lambda c: json_data_edit(
        lambda b: b["rows"][0].update(index="x"))(Ctx(c.root, c.refs, "validation", c.root / "s2")), ("s2",)),
    "body-shard-edited-manifest-updated": (merge_args("s1", "s2"), lambda c: json_data_edit(
        lambda b: b.update(shard={"index": 2, "count": 2}))(Ctx(c.root, c.refs, "validation", c.root / "s1")),
        ("shard",)),
}
for name, (args, tamper, names) in VALIDATION_MERGE.items():
    custom(f"merge-{name}", "validation", args, tamper, refused(*names, *SHARD_PATHS), layout="shards")


# ---------------------------------------------------------------------------------------------------- solve --plot


def solve_plot(target: str) -> Callable[[Ctx], list]:
    return lambda ctx: ["solve", "--width", 10, "--points", 5, "--plot", ctx.root / target, "-q"]


SOLVE = {
    "a-device": ("dev.png", plant("dev.png", a_device), True, False),
    "a-symlink-to-a-user-file": ("link.png", plant("link.png", link_to("target.png")), False, False),
    "a-dangling-symlink": ("link.png", plant("link.png", link_to("nowhere.png", False)), False, False),
    "a-directory": ("adir.png", plant("adir.png/keep.txt", user_file), False, False),
    "under-a-regular-file": ("afile/x.png", plant("afile", user_file), False, False),
    "a-FIFO": ("f.png", plant("f.png", a_fifo), False, True),
}
for name, (target, tamper, root_only, sub) in SOLVE.items():
    custom(f"solve-plot-{name}", "sweep", solve_plot(target), tamper,
           refused(lambda c, t=target: c.root / t.split("/")[0]), root_only=root_only, sub=sub)


# ---------------------------------------------------------------------------------------------------- lock and staging


def rerun(ctx: Ctx) -> list:
    return reader_args(Case("", ctx.kind, "rerun"), ctx)


for reader, args in (("plot", lambda c: ["plot", c.run, "-q"]), ("rerun", rerun)):
    custom(f"{reader}-lock-a-symlink-to-a-user-file", "sweep", args,
           plant("run/.phasediag.lock", link_to("target.txt")), refused(".phasediag.lock"))
    custom(f"{reader}-lock-a-directory", "sweep", args, plant("run/.phasediag.lock/keep.txt", user_file),
           refused(".phasediag.lock"))
    custom(f"{reader}-staging-a-symlink-to-a-user-dir", "sweep", args,
           both(plant("userdir/keep.txt", user_file), plant("run/.phasediag.txn", link_to("userdir"))),
           refused(".phasediag.txn"))
    custom(f"{reader}-staging-a-regular-file", "sweep", args, plant("run/.phasediag.txn", user_file),
           refused(".phasediag.txn"))
custom("plot-lock-a-FIFO", "sweep", lambda c: ["plot", c.run, "-q"], plant("run/.phasediag.lock", a_fifo),
       refused(".phasediag.lock"), sub=True)


# ---------------------------------------------------------------------------------------------------- leftovers

TOOL_TEMPORARIES = [".results.npz.abcd1234.tmp.npz", ".meta.json.k2j4h5g6.tmp.json", ".mini.csv.x1y2z3w4.tmp.csv",
                    f".{FIGURE}.0a_b9c8d.tmp.png"]
USER_FILES = ["results.npz.bak", "notes.txt", "my.tmp", ".hidden", ".results.npz.bak",
              "results.npz.abcd1234.tmp.npz", ".results.npz.ABCD1234.tmp.npz", ".results.npz.abc.tmp.npz",
              ".partial-notes/notes.txt", ".partial-0123456789abcdef/notes.txt", "sub/.results.npz.abcd1234.tmp.npz"]
for name in TOOL_TEMPORARIES:
    case(f"cleans-{name}", "sweep", "rerun", plant(f"run/{name}", user_file), fresh(name))
for name in USER_FILES:
    case(f"keeps-{name}", "sweep", "rerun", plant(f"run/{name}", user_file), fresh())
case("keeps-a-temp-named-symlink", "sweep", "rerun",
     plant("run/.results.npz.abcd1234.tmp.npz", link_to("target.npz")), fresh())
case("keeps-a-temp-named-directory", "sweep", "rerun",
     plant("run/.results.npz.abcd1234.tmp.npz/keep.txt", user_file), fresh())
CHUNK = "chunk-000000000000000-000000000000004.npz"
case("cleans-a-checkpoint-folder-of-chunks", "sweep", "rerun",
     plant(f"run/.partial-0123456789abcdef/{CHUNK}", user_file), fresh(".partial-0123456789abcdef"))
case("keeps-a-checkpoint-folder-with-a-user-file", "sweep", "rerun",
     both(plant(f"run/.partial-0123456789abcdef/{CHUNK}", user_file),
          plant("run/.partial-0123456789abcdef/notes.txt", user_file)), fresh())
case("cleans-uncommitted-staging", "sweep", "rerun", both(plant("run/.phasediag.txn/.phasediag-staging", user_file),
                                                          plant("run/.phasediag.txn/results.npz", user_file)),
     fresh(".phasediag.txn"))  # (a killed writer's, with the mark the tool puts in its own)
case("keeps-a-staging-folder-without-the-mark", "sweep", "rerun", plant("run/.phasediag.txn/results.npz", user_file),
     refused())


# ---------------------------------------------------------------------------------------------------- stale files

FIGURES_AS_DATA = set_key("figures", ["results.npz", "meta.json"])
USER_BESIDE = both(plant("run/notes.txt", user_file), plant("run/results.npz.bak", user_file))
case("figures-name-the-data", "sweep", "rerun", both(FIGURES_AS_DATA, USER_BESIDE), fresh())
case("figures-name-the-data", "validation", "rerun",
     both(set_key("figures", ["validation.json", "meta.json"]), USER_BESIDE), fresh())
case("keeps-a-figure-the-user-changed", "sweep_fig", "rerun",
     plant(f"run/{FIGURE}", lambda c, p: p.write_bytes(p.read_bytes() + b"edited")), fresh(ref="sweep"))
case("removes-its-unchanged-figure", "sweep_fig", "rerun", None, fresh(FIGURE, ref="sweep"))


def figure_as_link(ctx: Ctx) -> None:
    shutil.copyfile(ctx.run / FIGURE, ctx.root / "target.png")
    (ctx.run / FIGURE).unlink()
    (ctx.run / FIGURE).symlink_to(ctx.root / "target.png")


case("keeps-a-figure-replaced-by-a-symlink", "sweep_fig", "rerun", figure_as_link, fresh(ref="sweep"))


def manifest_records_outside(ctx: Ctx) -> None:
    shutil.copyfile(ctx.run / FIGURE, ctx.root / "outside.png")
    shutil.copyfile(ctx.run / FIGURE, ctx.run / ".hidden.png")
    path = ctx.run / META
    meta = json.loads(path.read_text())
    entry = meta["manifest"][FIGURE]
    meta["manifest"].update({"../outside.png": entry, ".hidden.png": entry, "/etc/passwd": entry})
    path.write_text(json.dumps(meta))


case("a-manifest-naming-files-outside-removes-none", "sweep_fig", "rerun", manifest_records_outside,
     fresh(FIGURE, ref="sweep"))


def _data_still_recorded(ctx: Ctx, out: Outcome, before: dict) -> None:
    """Success that keeps the data recorded in files and manifest (and every user file), or one-line refusal."""
    if out.code == 2:
        refused()(ctx, out, before)
        return
    assert out.code == 0 and out.stderr == "", f"exit {out.code}: {out.stderr}{out.stdout}"
    assert (ctx.run / "results.npz").read_bytes() == (ctx.refs.dirs["sweep"] / "results.npz").read_bytes()
    meta = _meta_of(ctx.run / META)
    assert "results.npz" in meta["files"] and "results.npz" in meta["manifest"], meta["files"]
    assert "results.npz" not in meta["figures"]
    assert (ctx.run / "notes.txt").is_file() and (ctx.run / "results.npz.bak").is_file()
    phasediag.load(ctx.run)


custom("resume-drawing-figures-pending-that-name-the-data", "sweep_fig",  # (with figures: the drawing path)
       lambda ctx: ["run", ctx.config, "--out", ctx.run, "--resume", "-q"],
       both(set_key("figures", ["results.npz"]), set_key("figures_pending", True), USER_BESIDE), _data_still_recorded)
case("figures-name-the-data", "sweep_fig", "plot", both(set_key("figures", ["results.npz", FIGURE]), USER_BESIDE),
     _data_still_recorded)


# ---------------------------------------------------------------------------------------------------- the test


@pytest.mark.parametrize("c", CASE_LIST, ids=[c.id for c in CASE_LIST])
def test_hostile_run_directory(c: Case, refs: Refs, tmp_path: Path, monkeypatch) -> None:
    if c.root_only and not ROOT:
        pytest.skip("mknod of a device node needs root")
    monkeypatch.delenv("PHASEDIAG_DEBUG", raising=False)
    ctx = setup(c, refs, tmp_path)
    try:
        if c.tamper:
            c.tamper(ctx)
        before = snapshot(ctx.root)
        args = CUSTOM_ARGS[c.id](c, ctx) if c.reader == "custom" else None
        out = invoke(c, ctx, args)
        try:
            (c.expect or refused())(ctx, out, before)
        except AssertionError as exc:  # the finding, without pages of traceback (hundreds of cases)
            pytest.fail(f"{c.id}: {' '.join(str(exc).split())[:1500]}", pytrace=False)
    finally:
        while _MOUNTS:
            subprocess.run(["umount", str(_MOUNTS.pop())], check=True)


def test_there_are_enough_cases():
    assert len(CASE_LIST) >= 70
    assert len({c.id for c in CASE_LIST}) == len(CASE_LIST)  # ids are unique
