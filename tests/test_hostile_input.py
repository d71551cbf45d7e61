"""Hostile input on the config-reading and option-parsing side of every command (solve, simulate, limit, run,
validate, experiment): configs that are not text, not YAML we accept (aliases, tags, deep nesting), numbers
beyond float range, grids too large to index or build, names that are not names, options out of range.

The promise (README "Exit status"; phasediag/errors.py): bad input is ONE line on stderr starting with
"Error:" that names the config key path (or the option), exit status 2, no traceback, no "internal error", no
warning from numpy or matplotlib, and nothing written to disk: every case runs in an empty directory (its
config written there first, `--out` inside it, the default outputs/ would be there too) that must be unchanged
afterwards. Commands run in-process through click's CliRunner; the cases that would eat the machine or block
if the mechanism regressed (an alias bomb, a 1e9-value axis, /dev/zero, a FIFO, a 10^(10^9) exponent) run in a
subprocess with a 2 GB address-space limit and a timeout, so a regression fails instead of hanging.

Expected messages are the key paths and option names the input names, never text copied from the output.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from phasediag import cli
from phasediag.config import reader, rules
from phasediag.config.reader import ConfigError, Located
from phasediag.config.sweep import MAX_AXIS, MAX_TIMES, config_from_text
from phasediag.errors import FieldError

ROOT = Path(__file__).resolve().parent.parent

SWEEP = """\
name: t
sweep:
  d: {log: [1, 100, 3]}
model:
  width: d
  init_var_u: 1
  init_var_w: 1
"""
SCALING = """\
name: s
mode: scaling
sweep:
  k: {lin: [0, 1, 3]}
model:
  output_scale: {exp: k}
"""
SGD = (ROOT / "configs" / "11_gd_vs_sgd.yaml").read_text()
for _old, _new in (("lr: {log: [0.01, 0.1, 5]}", "lr: {values: [0.1]}"), ("[1, 4, 16, 64, 256]", "[4]"),
                   ("[0.25, 0]", "[0]"), ("steps: 4000", "steps: 20"), ("record: 60", "record: 5"),
                   ("seeds: 16", "seeds: 1")):
    assert _old in SGD, _old
    SGD = SGD.replace(_old, _new)  # a study that takes a moment, should a regression accept a case and run it


def _change(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def sweep_with(old: str, new: str) -> str:
    return _change(SWEEP, old, new)


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into output unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def snapshot(root: Path) -> dict[str, int]:
    """Every path under root (hidden ones too) with its size: what a refused command must leave alone."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            out[str(path.relative_to(root))] = path.lstat().st_size
    return out


def assert_refused(exit_code: int, stdout: str, stderr: str, needle: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert exit_code == 2, (exit_code, stdout, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error:"), lines[0]
    assert needle in lines[0], (needle, lines[0])
    for bad in ("Traceback", "internal error", "Warning"):
        assert bad not in stdout + stderr, stdout + stderr
    assert stdout == ""
    assert len(lines[0]) < 600, "one short line"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty working directory (the default outputs/ would appear here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PHASEDIAG_DEBUG", raising=False)
    return tmp_path


def refuse(sandbox: Path, args: list[str], needle: str, files: dict | None = None) -> None:
    for name, content in (files or {}).items():
        path = sandbox / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    before = snapshot(sandbox)
    res = _runner().invoke(cli.phasediag, args, prog_name="phasediag")
    assert_refused(res.exit_code, res.stdout, res.stderr, needle)
    assert snapshot(sandbox) == before, "a refused command wrote to disk"


# ----------------------------------------------------------------------------------------------------------
# configs: (case id, config text or bytes, the key path or words the one line must name)

DEEP_LIST = "x: " + "[" * 10_000 + "]" * 10_000 + "\n"
DEEP_MAP = "x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"
BIG_INT = "1" + "0" * 400

CONFIGS = [
    # numbers beyond float range, as plain integers or floats, anywhere
    ("int-400-digits", sweep_with("width: d", f"width: {BIG_INT}"), "model.width (line 5)"),
    ("int-5000-digits", sweep_with("width: d", "width: 1" + "0" * 5000), "model.width (line 5)"),
    ("float-1e400", sweep_with("width: d", "width: 1e400"), "model.width (line 5)"),
    ("negative-1e400", sweep_with("init_var_u: 1", "init_var_u: -1e400"), "model.init_var_u (line 6)"),
    ("huge-int-in-values", sweep_with("{log: [1, 100, 3]}", f"{{values: [1, {BIG_INT}]}}"), "sweep.d.values[1]"),
    ("huge-int-num-log", sweep_with("{log: [1, 100, 3]}", f"{{log: [0, 1, {BIG_INT}]}}"), "sweep.d.log"),
    ("num-1e400-lin", sweep_with("{log: [1, 100, 3]}", "{lin: [1, 2, 1e400]}"), "sweep.d.lin[2]"),
    ("horizon-1e400", SWEEP + "train: {horizon: 1e400}\n", "train.horizon (line 8)"),
    ("seed-huge-int", SWEEP + f"init: {{seeds: 2, seed: {BIG_INT}}}\n", "init.seed"),
    ("huge-in-expression", sweep_with("init_var_u: 1", "init_var_u: 1e300 * d * 1e300"), "model.init_var_u"),
    # sizes checked from the lengths, before anything is built
    # (a 1e9-value axis and a grid beyond int64: test_expensive_input_fails_fast)
    ("seeds-beyond-axis-cap", SWEEP + "init: {seeds: 1e12}\n", "init.seeds"),
    ("times-200000", SWEEP + "train: {times: {lin: [0, 1, 200000]}}\n", "train.times.lin[2]"),
    ("gd-times-beyond-steps", SWEEP + "train: {optimizer: gd, times: {values: [0, 1e9]}}\n", "train.times"),
    # one rule per setting (phasediag.config.rules), as the options
    ("alignment-threshold-2", SWEEP + "classify: {alignment_threshold: 2}\n", "classify.alignment_threshold"),
    ("ntk-threshold-text", SWEEP + "classify: {ntk_threshold: '0.5'}\n", "classify.ntk_threshold"),
    ("ntk-threshold-nan", SWEEP + "classify: {ntk_threshold: .nan}\n", "classify.ntk_threshold"),
    ("gd-horizon-above-cap", SWEEP + "train: {optimizer: gd, horizon: 1000001}\n", "train.horizon"),
    ("gd-max-steps-list", SWEEP + "train: {optimizer: gd, max_steps: [1]}\n", "train.max_steps"),
    ("seed-2^63", SWEEP + "init: {seeds: 2, seed: 9223372036854775808}\n", "init.seed"),
    ("seed-negative", SWEEP + "init: {seeds: 2, seed: -1}\n", "init.seed"),
    ("width-beyond-2^53", sweep_with("width: d", "width: 1e300"), "model.width"),
    # explicit tags, on every kind of node
    ("tag-python-object-map", sweep_with("sweep:\n  d: {log: [1, 100, 3]}", "sweep: !!python/object:os.system {}"),
     "sweep (line 2)"),
    ("tag-set", SWEEP + "train: !!set {}\n", "train (line 8)"),
    ("tag-custom-seq", sweep_with("[1, 100, 3]", "!custom [1, 100, 3]"), "sweep.d.log (line 3)"),
    ("tag-on-key", SWEEP + "!!str description: x\n", "description (line 8)"),
    ("tag-str-scalar", SWEEP + "description: !!str x\n", "description (line 8)"),
    ("tag-non-specific", SWEEP + "description: ! x\n", "description (line 8)"),
    ("tag-on-root", "--- !!map\n" + SWEEP, "config (line 1)"),
    ("tag-in-list", sweep_with("[1, 100, 3]", "[1, !!int 100, 3]"), "sweep.d.log[1] (line 3)"),
    # aliases: never expanded, refused where they appear (even under an unknown key)
    ("alias-unknown-key", SWEEP + "x: &a [1]\ny: *a\n", "line 9"),
    ("alias-value", sweep_with("init_var_w: 1", "init_var_w: &v 1\n  lr_u: *v"), "line 8"),
    ("alias-self-reference", SWEEP + "x: &a [*a]\n", "line 8"),
    ("alias-merge-key", SWEEP + "base: &b {a: 1}\nmore: {<<: *b}\n", "line 9"),
    # nesting
    ("nested-10000-lists", SWEEP + DEEP_LIST, "line 8"),
    ("nested-5000-maps", SWEEP + DEEP_MAP, "line 8"),
    # not text, not one mapping
    ("not-utf8", SWEEP.encode() + b"description: \xff\xfe\n", "not UTF-8"),
    ("utf16", SWEEP.encode("utf-16"), "not UTF-8"),
    ("nul-byte", SWEEP.encode() + b"description: a\x00b\n", "line 8"),
    ("bell-character", SWEEP + "description: a\x07b\n", "line 8"),
    ("two-megabytes", SWEEP + "description: " + "a" * (2 << 20) + "\n", "bytes"),
    ("empty-file", "", "empty"),
    ("only-a-comment", "# nothing\n", "empty"),
    ("top-level-list", "- 1\n- 2\n", "config (line 1)"),
    ("top-level-text", "hello\n", "config (line 1)"),
    ("two-documents", SWEEP + "---\n" + SWEEP, "line"),
    ("broken-flow", sweep_with("{log: [1, 100, 3]}", "{log: [1, 100, 3]"), "line"),
    # wrong types and shapes
    ("bool-for-number", sweep_with("init_var_u: 1", "init_var_u: true"), "model.init_var_u (line 6)"),
    ("list-for-number", sweep_with("init_var_u: 1", "init_var_u: [1]"), "model.init_var_u (line 6)"),
    ("map-for-number", sweep_with("init_var_u: 1", "init_var_u: {a: 1}"), "model.init_var_u (line 6)"),
    ("long-list-for-number", sweep_with("init_var_u: 1", "init_var_u: [" + ", ".join(["1"] * 20000) + "]"),
     "model.init_var_u (line 6)"),
    ("map-for-list", sweep_with("{log: [1, 100, 3]}", "{log: {a: 1}}"), "sweep.d.log (line 3)"),
    ("list-for-map", sweep_with("sweep:\n  d: {log: [1, 100, 3]}", "sweep: [1, 2]"), "sweep (line 2)"),
    ("empty-values", sweep_with("{log: [1, 100, 3]}", "{values: []}"), "sweep.d.values (line 3)"),
    ("empty-sweep", sweep_with("sweep:\n  d: {log: [1, 100, 3]}", "sweep: {}"), "sweep (line 2)"),
    ("duplicate-key", SWEEP + "name: u\n", "name (line 8)"),
    ("number-key", SWEEP + "1: x\n", "config (line 8)"),
    ("unicode-digit", sweep_with("init_var_u: 1", "init_var_u: \u0661"), "model.init_var_u (line 6)"),
    ("fullwidth-digit", sweep_with("init_var_u: 1", "init_var_u: \uff11"), "model.init_var_u (line 6)"),
    ("unknown-key", sweep_with("init_var_w: 1", "init_var_w: 1\n  lr_ww: 1"), "model.lr_ww (line 8)"),
    ("format-eps", SWEEP + "plot: {formats: [eps]}\n", "plot.formats[0]"),
    # names: the whole text, and short enough to name files
    ("name-trailing-newline", sweep_with("name: t", 'name: "t\\n"'), "name (line 1)"),
    ("name-path", sweep_with("name: t", "name: a/../b"), "name (line 1)"),
    ("name-dotdot", sweep_with("name: t", 'name: ".."'), "name (line 1)"),
    ("name-unicode", sweep_with("name: t", 'name: "t\u00e9"'), "name (line 1)"),
    ("name-300-chars", sweep_with("name: t", "name: " + "a" * 300), "name (line 1)"),
    ("name-null", sweep_with("name: t", "name:"), "name (line 1)"),
    # values the closed form cannot hold (found at a grid point, before anything is written)
    ("output-scale-1e300", sweep_with("init_var_u: 1", "init_var_u: 1\n  output_scale: 1e300"), "model/data"),
    ("gram-1e300", SWEEP + "init: {gram: [1e300, 1e300, 0]}\n", "model/data/init"),
    ("gd-input-var-1e-300", SWEEP + "data: {input_var: 1e-300}\ntrain: {optimizer: gd}\n", "model/data"),
    # mode: scaling exponents, bounded as `phasediag limit` bounds them
    ("scaling-exp-1e300", _change(SCALING, "{exp: k}", "{exp: 1e300}"), "model.output_scale.exp"),
    ("scaling-exp-expression", _change(SCALING, "{exp: k}", "{exp: 1e300 * k}"), "model.output_scale.exp"),
    ("scaling-tag", _change(SCALING, "{exp: k}", "!!omap {exp: k}"), "model.output_scale"),
]


@pytest.mark.parametrize("text, needle", [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_bad_configs_are_one_line_and_write_nothing(sandbox, text, needle):
    refuse(sandbox, ["run", "c.yaml", "--out", "out"], needle, {"c.yaml": text})


VALIDATE_CONFIGS = CONFIGS[:16] + CONFIGS[22:40:3]


@pytest.mark.parametrize("text, needle", [c[1:] for c in VALIDATE_CONFIGS], ids=[c[0] for c in VALIDATE_CONFIGS])
def test_bad_configs_are_refused_alike_by_validate_and_without_out(sandbox, text, needle):
    refuse(sandbox, ["validate", "c.yaml", "--points", "1", "--max-steps", "100"], needle, {"c.yaml": text})


EXPERIMENT_CONFIGS = [
    ("sweep-config", SWEEP, "experiment"),
    ("unknown-study", SGD.replace("experiment: sgd_drift", "experiment: sgd_drfit"), "experiment (line"),
    ("alias", SGD + "x: &a [1]\ny: *a\n", "alias"),
    ("huge-width", _change(SGD, "width: 100", f"width: {BIG_INT}"), "model.width"),
    ("tagged-width", _change(SGD, "width: 100", "width: !!int 100"), "model.width"),
    ("axis-1e9", _change(SGD, "lr: {values: [0.1]}", "lr: {log: [0.01, 0.1, 1e9]}"), "sweep.lr.log[2]"),
    ("name-newline", _change(SGD, "name: gd_vs_sgd", 'name: "gd\\n"'), "name (line 1)"),
    ("output-scale-1e300", _change(SGD, "output_scale: 1", "output_scale: 1e300"), "output_scale"),
    ("init-var-1e300", _change(SGD, "init_var_u: 0.01", "init_var_u: 1e300"), "variances"),
]


@pytest.mark.parametrize("text, needle", [c[1:] for c in EXPERIMENT_CONFIGS], ids=[c[0] for c in EXPERIMENT_CONFIGS])
def test_bad_experiment_configs(sandbox, text, needle):
    refuse(sandbox, ["experiment", "c.yaml", "--out", "out"], needle, {"c.yaml": text})


def test_validate_refuses_a_scaling_config(sandbox):
    refuse(sandbox, ["validate", "c.yaml"], "validate", {"c.yaml": SCALING})


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.mkdir(), "CONFIG"),
    (lambda p: None, "c.yaml"),  # missing
    (lambda p: (p.parent / "loop").symlink_to(p) or p.symlink_to(p.parent / "loop"), "c.yaml"),
    (lambda p: p.symlink_to("/dev/null"), "not a regular file"),
], ids=["directory", "missing", "symlink-loop", "device"])
def test_a_config_that_is_not_a_readable_regular_file(sandbox, make, needle):
    make(sandbox / "c.yaml")
    refuse(sandbox, ["run", "c.yaml", "--out", "out"], needle)


def test_an_empty_config_path(sandbox):
    refuse(sandbox, ["run", "", "--out", "out"], "Error:")


# ----------------------------------------------------------------------------------------------------------
# options: (command line, the option the one line must name)

OPTIONS = [
    # solve: hyperparameters
    (["solve", "--width", "0"], "--width"),
    (["solve", "--width", "1e300"], "--width"),
    (["solve", "--width", "\uff11"], "--width"),
    (["solve", "--width", "1_000"], "--width"),
    (["solve", "--width", ""], "--width"),
    (["solve", "--width", "2.5"], "--width"),
    (["solve", "--output-scale", "1e400"], "--output-scale"),
    (["solve", "--output-scale", "nan"], "--output-scale"),
    (["solve", "--output-scale", "-0"], "--output-scale"),
    (["solve", "--output-scale", "\u0661"], "--output-scale"),
    (["solve", "--lr-u", "inf"], "--lr-u"),
    (["solve", "--lr-w", "abc"], "--lr-w"),
    (["solve", "--init-var-u", "-1"], "--init-var-u"),
    (["solve", "--init-var-w", "1" + "0" * 400], "--init-var-w"),
    (["solve", "--input-var", "0"], "--input-var"),
    (["solve", "--teacher", "-inf"], "--teacher"),
    # solve: settings with a config counterpart share its rule
    (["solve", "--alignment-threshold", "2"], "--alignment-threshold"),
    (["solve", "--alignment-threshold", "1"], "--alignment-threshold"),
    (["solve", "--ntk-threshold", "0"], "--ntk-threshold"),
    (["solve", "--ntk-threshold", "inf"], "--ntk-threshold"),
    (["solve", "--horizon", "0"], "--horizon"),
    (["solve", "--horizon", "-inf"], "--horizon"),
    (["solve", "--horizon", "nan"], "--horizon"),
    (["solve", "--optimizer", "gd", "--horizon", "2000000"], "--horizon"),
    (["solve", "--seed", "-1"], "--seed"),
    (["solve", "--seed", "9223372036854775808"], "--seed"),
    (["solve", "--seed", "1.5"], "--seed"),
    (["solve", "--seed", "\uff13"], "--seed"),
    # solve: times and figures
    (["solve", "--times", ""], "--times"),
    (["solve", "--times", "1,,2"], "--times"),
    (["solve", "--times", "1e400"], "--times"),
    (["solve", "--gram", "1,1"], "--gram"),
    (["solve", "--gram", "1e400,1,0"], "--gram"),
    (["solve", "--points", "1"], "--points"),
    (["solve", "--points", "1e6"], "--points"),
    (["solve", "--points", "\uff15"], "--points"),
    (["solve", "--t-max", "0"], "--t-max"),
    (["solve", "--plot", "x.unknown"], "--plot"),
    # solve: valid but beyond float range while solving (no warning lines before the one error)
    (["solve", "--output-scale", "1e300"], "supported range"),
    (["solve", "--lr-u", "1e-300"], "supported range"),
    (["solve", "--optimizer", "gd", "--lr-u", "1e300"], "supported range"),
    # simulate
    (["simulate", "--batch-size", "0"], "--batch-size"),
    (["simulate", "--optimizer", "sgd", "--samples", "100", "--batch-size", "200"], "--batch-size"),
    (["simulate", "--samples", "1e8"], "--samples"),
    (["simulate", "--samples", "\uff11"], "--samples"),
    (["simulate", "--noise-var", "-1"], "--noise-var"),
    (["simulate", "--width", "1e8"], "--width"),
    (["simulate", "--times", "inf"], "--times"),
    (["simulate", "--seed", "-1"], "--seed"),
    (["simulate", "--alignment-threshold", "1.5"], "--alignment-threshold"),
    (["simulate", "--output-scale", "1e300"], "supported range"),
    (["simulate", "--init-var-u", "1e300"], "supported range"),
    (["simulate", "--teacher", "-1e300"], "supported range"),
    # limit
    (["limit", "--output-scale-exp", "1e400"], "--output-scale-exp"),
    (["limit", "--lr-u-exp", "-1e400"], "--lr-u-exp"),
    (["limit", "--lr-w-exp", "1000001"], "--lr-w-exp"),
    (["limit", "--init-var-u-exp", "\uff11"], "--init-var-u-exp"),
    (["limit", "--init-var-w-exp", "1_0"], "--init-var-w-exp"),
    (["limit", "--init-var-w-exp", "1/0"], "--init-var-w-exp"),
    (["limit", "--init-var-w-exp", "nan"], "--init-var-w-exp"),
    (["limit", "--init-var-w-exp", ""], "--init-var-w-exp"),
    (["limit", "--init-var-w-exp", "1" + "0" * 5000], "--init-var-w-exp"),
    (["limit", "--param", "nope"], "--param"),
    (["limit", "--param", "ntk", "--lr-u-exp", "1"], "--param"),
    (["limit", "--init", "bogus"], "--init"),
]


@pytest.mark.parametrize("args, option", OPTIONS, ids=[" ".join(a)[:60] for a, _ in OPTIONS])
def test_bad_options_are_one_line_naming_the_option(sandbox, args, option):
    refuse(sandbox, args, option)


JOB_OPTIONS = [
    (["run", "c.yaml", "--workers", "0"], "--workers"),
    (["run", "c.yaml", "--workers", "99999999999999999999999"], "--workers"),
    (["run", "c.yaml", "--workers", "\uff12"], "--workers"),
    (["run", "c.yaml", "--chunk-size", "0"], "--chunk-size"),
    (["run", "c.yaml", "--checkpoint-every", "nan"], "--checkpoint-every"),
    (["run", "c.yaml", "--checkpoint-every", "-1"], "--checkpoint-every"),
    (["run", "c.yaml", "--shard", "0/1"], "--shard"),
    (["run", "c.yaml", "--shard", "1/0"], "--shard"),
    (["run", "c.yaml", "--shard", "abc"], "--shard"),
    (["validate", "c.yaml", "--points", "0"], "--points"),
    (["validate", "c.yaml", "--step", "nan"], "--step"),
    (["validate", "c.yaml", "--step", "2"], "--step"),
    (["validate", "c.yaml", "--max-width", "1e300"], "--max-width"),
    (["validate", "c.yaml", "--max-steps", "x"], "--max-steps"),
    (["validate", "c.yaml", "--workers", "99999999999999999999999"], "--workers"),
    (["validate", "c.yaml", "--method", "adam"], "--method"),
    (["experiment", "c.yaml", "--workers", "99999999999999999999999"], "--workers"),
]


@pytest.mark.parametrize("args, option", JOB_OPTIONS, ids=[" ".join(a) for a, _ in JOB_OPTIONS])
def test_bad_job_options_with_a_good_config(sandbox, args, option):
    config = SGD if args[0] == "experiment" else SWEEP
    refuse(sandbox, args + ["--out", "out"], option, {"c.yaml": config})


# ----------------------------------------------------------------------------------------------------------
# cases that must fail fast by design: a subprocess with 2 GB of address space and a timeout

GRID_BEYOND_INT64 = ("name: t\nsweep:\n" + "".join(f"  a{i}: {{lin: [1, 2, 1000000]}}\n" for i in range(4))
                     + "model: {width: 1, init_var_u: 1, init_var_w: 1}\n")  # 1e24 points
ALIAS_BOMB = SWEEP + "unused:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def _limited() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def run_limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PHASEDIAG_DEBUG"}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "phasediag", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=20, preexec_fn=_limited)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and mkfifo as on Linux")
@pytest.mark.parametrize("setup, args, needle", [
    ({"c.yaml": ALIAS_BOMB}, ["run", "c.yaml"], "line 10"),
    ({"c.yaml": sweep_with("{log: [1, 100, 3]}", "{lin: [1, 2, 1e9]}")}, ["run", "c.yaml"], "sweep.d.lin[2]"),
    ({"c.yaml": SWEEP + "train: {times: {lin: [0, 1, 1e9]}}\n"}, ["run", "c.yaml"], "train.times.lin[2]"),
    ({"c.yaml": "FIFO"}, ["run", "c.yaml"], "not a regular file"),
    ({"c.yaml": "/dev/zero"}, ["validate", "c.yaml"], "not a regular file"),
    ({}, ["limit", "--lr-u-exp", "1e1000000000"], "--lr-u-exp"),
    ({"c.yaml": GRID_BEYOND_INT64}, ["run", "c.yaml"], "2^63"),
    ({"c.yaml": SWEEP + "train: {times: {lin: [0, 1, 1000000]}}\n"}, ["run", "c.yaml"], "train.times.lin[2]"),
    ({}, ["simulate", "--optimizer", "flow", "--t-max", "1e8"], "--times"),
    ({}, ["simulate", "--optimizer", "flow", "--lr-u", "1e8"], "--times"),
], ids=["alias-bomb", "axis-1e9", "times-1e9", "fifo", "dev-zero", "exponent-1e1e9", "grid-beyond-int64",
        "times-1e6", "stiff-flow-long", "stiff-flow-fast-rate"])
def test_expensive_input_fails_fast(tmp_path, setup, args, needle):
    for name, content in setup.items():
        if content == "FIFO":
            os.mkfifo(tmp_path / name)
        elif content.startswith("/dev/"):
            (tmp_path / name).symlink_to(content)
        else:
            (tmp_path / name).write_text(content)
    before = snapshot(tmp_path)
    proc = run_limited(args, tmp_path)  # a regression times out or runs out of memory: the test fails
    assert_refused(proc.returncode, proc.stdout, proc.stderr, needle)
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------
# the reader's mechanisms


def parse(text: str) -> Located:
    return reader.parse_yaml(textwrap.dedent(text), "t.yaml")


def parse_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def test_aliases_are_refused_where_they_appear_before_anything_is_expanded():
    message = parse_error(ALIAS_BOMB)
    assert "line 10" in message and "alias" in message  # the first *a, in the key nobody reads
    assert "line 1" in parse_error("a: &x [*x]\n") and "line 2" in parse_error("a: &x [1]\nb: *x\n")
    assert parse("a: &x [1]\n").value["a"].value[0].value == 1  # an anchor alone is harmless


@pytest.mark.parametrize("text, where", [
    ("a: !!map {b: 1}", "a (line 1)"),
    ("a: !!seq [1]", "a (line 1)"),
    ("a: !!set {b}", "a (line 1)"),
    ("a: !!str x", "a (line 1)"),
    ("a: !!int 1", "a (line 1)"),
    ("a: ! x", "a (line 1)"),
    ("a: !local 'x'", "a (line 1)"),
    ("!!str a: 1", "a (line 1)"),
    ("--- !!map\na: 1", "config (line 1)"),
    ("a:\n  - 1\n  - !!float 2", "a[1] (line 3)"),
    ("a: {b: !!python/object:os.system ls}", "a.b (line 1)"),
    ("a: !!python/object/apply:os.system [ls]", "a (line 1)"),
])
def test_explicit_tags_are_refused_on_every_node_with_their_path(text, where):
    message = parse_error(text)
    assert where in message and "unsupported tag" in message


def test_implicit_tags_read_as_plain_values():
    tree = parse("a: 1\nb: x\nc: 'q'\nd: [1, 2.5]\ne: {f: inf}\ng: null\nh: true\n")
    assert reader.plain(tree) == {"a": 1, "b": "x", "c": "q", "d": [1, 2.5], "e": {"f": float("inf")},
                                  "g": None, "h": True}


def test_nesting_is_bounded_without_recursion_errors():
    depth = reader.MAX_DEPTH - 1  # lists inside the top-level mapping: MAX_DEPTH nodes deep
    assert parse("a: " + "[" * depth + "]" * depth).value["a"].path == "a"
    assert "nested deeper" in parse_error("a: " + "[" * (depth + 1) + "]" * (depth + 1))
    assert "nested deeper" in parse_error(DEEP_LIST)
    cyclic: dict = {}
    cyclic["a"] = cyclic
    with pytest.raises(ConfigError, match="nested deeper"):
        reader.located(cyclic)


@pytest.mark.parametrize("text", [BIG_INT, "-" + BIG_INT, "1" + "0" * 100_000, "1e309", "-2e308", "1.8e308"])
def test_numbers_beyond_float_range_are_refused_with_their_key(text):
    message = parse_error(f"x:\n  y: [1, {text}]\n")
    assert "x.y[1] (line 2)" in message and "floating-point range" in message


def test_numbers_within_range_are_read_exactly():
    values = reader.plain(parse("a: [9223372036854775807, 1.7e308, -1e-320, '1e400', inf, -.inf]\n"))["a"]
    assert values[0] == 2**63 - 1 and isinstance(values[0], int)  # an integer stays exact
    assert values[1] == 1.7e308 and values[2] == -1e-320
    assert values[3] == "1e400"  # quoted: text as written
    assert values[4] == float("inf") and values[5] == float("-inf")
    with pytest.raises(ConfigError, match="x: .*floating-point range"):
        reader.located({"x": 10**400})


@pytest.mark.parametrize("text", ["\u0661", "\uff11", "1_000", "0x10", "1e", "+-1"])
def test_only_ascii_decimal_text_is_a_number(text):
    assert isinstance(reader.plain(parse(f"a: {text}\n"))["a"], str)
    with pytest.raises(ValueError):
        rules.number_text(text)


def test_names_must_match_as_a_whole():
    def name(text):
        return reader.check_name(Located(text, 1, "name"))

    assert name("a" * reader.MAX_NAME) == "a" * reader.MAX_NAME
    for bad in ("trail\n", "a\nb", "a" * (reader.MAX_NAME + 1), "..", "a/b", "-a", "", "t\u00e9"):
        with pytest.raises(ConfigError, match="name"):
            name(bad)


def test_no_validation_in_the_package_matches_only_a_prefix():
    """re.match and '^...$' patterns accept a trailing newline ('$' matches before it): validation uses
    fullmatch. (The expression tokenizer's pattern.match(text, pos) scans tokens: not a validation.)"""
    found = []
    for path in (ROOT / "phasediag").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bre\.match\(|\bre\.compile\(r?[\"'][^\"']*\$[\"']", line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_a_config_file_must_be_a_regular_file(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        reader.read_config(tmp_path)
    with pytest.raises(ConfigError, match="not a regular file"):
        reader.read_config("/dev/null")
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * (reader.MAX_CONFIG_BYTES // 5 + 1))
    with pytest.raises(ConfigError, match="bytes"):
        reader.read_config(big)


def test_axis_and_grid_sizes_are_checked_before_building():
    with pytest.raises(ConfigError, match=rf"sweep\.d\.lin\[2\].*at most {MAX_AXIS:,}"):
        config_from_text(sweep_with("{log: [1, 100, 3]}", f"{{lin: [1, 2, {MAX_AXIS + 1}]}}"))
    with pytest.raises(ConfigError, match=rf"train\.times.*at most {MAX_TIMES:,}"):
        config_from_text(SWEEP + f"train: {{times: {{lin: [0, 1, {MAX_TIMES + 1}]}}}}\n")
    axes = "".join(f"  a{i}: {{lin: [1, 2, 100]}}\n" for i in range(10))  # 1e20 points: beyond int64
    with pytest.raises(ConfigError, match=r"sweep: the grid has 1e\+20 points .*2\^63"):
        config_from_text("name: t\nsweep:\n" + axes + "model: {width: 1, init_var_u: 1, init_var_w: 1}\n")
    config = config_from_text(sweep_with("{log: [1, 100, 3]}", "{lin: [1, 2, 1000]}"))
    assert config.shape == (1000,)  # a sane axis passes


# ----------------------------------------------------------------------------------------------------------
# one rule per setting: the config key, the option and the Python argument refuse (and accept) alike


RULES = [  # (config lines, CLI arguments with {v}, solve_point keyword arguments, bad value, good value)
    ("classify: {{alignment_threshold: {v}}}", ["--alignment-threshold", "{v}"], "alignment_threshold", "2", "0.5"),
    ("classify: {{alignment_threshold: {v}}}", ["--alignment-threshold", "{v}"], "alignment_threshold", "1", "0.99"),
    ("classify: {{ntk_threshold: {v}}}", ["--ntk-threshold", "{v}"], "ntk_threshold", "0", "3"),
    ("train: {{optimizer: gd, horizon: {v}}}", ["--optimizer", "gd", "--horizon", "{v}"], "horizon",
     "2000000", "1000"),
    ("train: {{horizon: {v}}}", ["--horizon", "{v}"], "horizon", "-1", "7.5"),
]


@pytest.mark.parametrize("section, cli_args, keyword, bad, good", RULES)
def test_config_option_and_api_share_one_rule(sandbox, section, cli_args, keyword, bad, good):
    from phasediag.engine.point import solve_point

    def config(value):
        return config_from_text(SWEEP + section.format(v=value) + "\n")

    def cli_run(value):
        args = ["solve", "--times", "0,1", "--quiet"] + [a.format(v=value) for a in cli_args]
        return _runner().invoke(cli.phasediag, args, prog_name="phasediag")

    def api(value):
        gd = {"optimizer": "gd"} if "gd" in cli_args else {}
        return solve_point(times=[0, 1], **gd, **{keyword: float(value)})

    with pytest.raises(ConfigError):
        config(bad)
    assert cli_run(bad).exit_code == 2
    with pytest.raises(FieldError):
        api(bad)
    config(good)  # the same good value passes all three
    assert cli_run(good).exit_code == 0
    api(good)


def test_seed_and_width_rules_are_shared():
    from phasediag.config.hyperparameters import Hyperparameters
    from phasediag.engine.point import solve_point

    with pytest.raises(ConfigError, match="init.seed"):
        config_from_text(SWEEP + "init: {seeds: 2, seed: 9223372036854775808}\n")
    assert config_from_text(SWEEP + "init: {seeds: 2, seed: 9223372036854775807}\n").seed == 2**63 - 1
    with pytest.raises(FieldError):
        solve_point(init="seed", seed=2**63)
    with pytest.raises(FieldError, match="width"):
        Hyperparameters(width=2**53 + 2).checked()
    assert Hyperparameters(width=2**53).checked().width == 2**53


# ----------------------------------------------------------------------------------------------------------
# the memory refusal: MemAvailable, and the threshold it applies


def test_available_memory_is_memavailable_not_memfree(tmp_path):
    from phasediag.jobs.sweep import available_memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:          500000 kB\nMemAvailable:   14800000 kB\n")
    assert available_memory(str(meminfo)) == 14_800_000 * 1024
    assert available_memory(str(tmp_path / "missing")) > 0  # sysconf's free pages instead


def test_memory_refusal_says_the_limit_it_applies(sandbox, monkeypatch):
    monkeypatch.setattr("phasediag.jobs.sweep.available_memory", lambda: 2_000_000)  # 2 MB
    config = sweep_with("{log: [1, 100, 3]}", "{log: [1, 100, 100000]}")  # ~15 MB of results
    refuse(sandbox, ["run", "c.yaml", "--out", "out"], "the limit is 80 % of the 0.002 GB", {"c.yaml": config})
    res = _runner().invoke(cli.phasediag, ["run", "c.yaml", "--out", "out"], prog_name="phasediag")
    assert "--shard" in res.stderr


# ----------------------------------------------------------------------------------------------------------
# no warning line on success either


@pytest.mark.parametrize("suffix", ["eps", "ps", "png"])
def test_figures_are_written_without_a_warning(sandbox, suffix, caplog):
    """matplotlib warns through logging (pytest's log capture takes it here; a terminal would show it)."""
    with caplog.at_level(logging.WARNING):
        res = _runner().invoke(cli.phasediag, ["solve", "--plot", f"x.{suffix}", "--quiet"], prog_name="phasediag")
    assert res.exit_code == 0 and res.stderr == "" and (sandbox / f"x.{suffix}").stat().st_size > 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_threshold_far_beyond_every_value_draws_without_a_warning(sandbox):
    (sandbox / "c.yaml").write_text(SWEEP + "classify: {ntk_threshold: 1e300}\n")
    res = _runner().invoke(cli.phasediag, ["run", "c.yaml", "--out", "out", "--quiet"], prog_name="phasediag")
    assert res.exit_code == 0, res.stderr
    assert res.stderr == "" and any(p.suffix == ".png" for p in (sandbox / "out").iterdir())


@pytest.mark.parametrize("key, value", [("init_scale: {log: [0.01, 10, 13]}", "init_scale: [0.1, 1e300]"),
                                        ("ntk_threshold: 0.1", "ntk_threshold: 1e300")])
def test_the_nonlinear_study_refuses_values_beyond_its_range_in_one_line(tmp_path, key, value):
    text = (Path(__file__).parents[1] / "configs/12_nonlinear_digits.yaml").read_text()
    assert key in text
    (tmp_path / "c.yaml").write_text(text.replace(key, value))
    result = CliRunner().invoke(cli.phasediag, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert value.split(":")[0] in result.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("key, value", [("noise_var: [0.25, 0]", "noise_var: [1e300, 0]"),
                                        ("input_var: 1", "input_var: 1e-300")])
def test_the_sgd_study_refuses_data_beyond_the_supported_range_in_one_line(tmp_path, key, value):
    text = (Path(__file__).parents[1] / "configs/11_gd_vs_sgd.yaml").read_text()
    assert key in text
    (tmp_path / "c.yaml").write_text(text.replace(key, value))
    result = CliRunner().invoke(cli.phasediag, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert value.split(":")[0] in result.output and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------
# grids too large to check first are checked as they are evaluated, and still leave nothing behind


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("checkpoint_every", ["0", "5"])
def test_a_bad_value_found_while_evaluating_is_one_line_and_leaves_nothing(sandbox, monkeypatch, workers,
                                                                          checkpoint_every):
    from phasediag.engine import sweep

    monkeypatch.setattr(sweep, "CHECK_FIRST_POINTS", 10)  # every grid here is "large": checked chunk by chunk
    config = sweep_with("{log: [1, 100, 3]}", "{log: [1, 100, 400]}").replace("init_var_u: 1", "init_var_u: 50 - d")
    # 1200 points in chunks of 100: d > 50 (the last chunks) gives init_var_u < 0, after chunks were recorded
    refuse(sandbox, ["run", "c.yaml", "--out", "out", "--chunk-size", "100", "--workers", workers,
                     "--checkpoint-every", checkpoint_every, "--no-plot"],
           "model.init_var_u (line 6): '50 - d' must be >= 0", {"c.yaml": config})
