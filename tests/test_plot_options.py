"""What the user decides about the figures (issue 14): plot.labels, plot.title, plot.size, plot.style and
plot.dpi in a config of every kind, and the same as options of `phasediag plot` (and phasediag.api.plot).

Accepted values resolve into meta.json's config.plot (only the keys given); every bad value is one line on
stderr naming the key path and its line (or the option), exit status 2, and nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from phasediag import api
from phasediag.cli import phasediag as group
from phasediag.config.reader import config_hash, located
from phasediag.config.sweep import load_config
from phasediag.errors import FieldError
from phasediag.jobs import lifecycle
from phasediag.studies import nonlinear_digits, sgd_drift
from helpers import line_of
from job_cases import NONLINEAR, SGD_DRIFT

SWEEP = """\
name: po_sweep
sweep:
  d: {log: [1, 1e4, 3]}
  s: {log: [1e-6, 1, 3]}
model: {width: d, init_var_u: s, init_var_w: s}
"""
PLOT_SWEEP = SWEEP + "plot: {maps: [phase]}\n"  # one figure: quick to draw
STYLE_OK = "lines.linewidth: 2\naxes.grid: True\n"
STYLE_GARBAGE = "this is not a style file\n{{{\n"


def invoke(*args):
    try:  # click < 8.2 mixes stderr into the output unless told not to
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(group, [str(a) for a in args], prog_name="phasediag")


def write_config(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_config(tmp_path: Path, text: str, *extra) -> tuple[object, Path]:
    out = tmp_path / "out"
    return invoke("run", write_config(tmp_path, text), "--out", out, "-q", *extra), out


def stored_plot(out: Path) -> dict:
    return json.loads((out / "meta.json").read_text())["config"]["plot"]


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


# ---------------------------------------------------------------- accepted, resolved as given


def test_every_key_resolves_into_meta_json(tmp_path):
    (tmp_path / "styles").mkdir()
    (tmp_path / "styles" / "paper.mplstyle").write_text(STYLE_OK)
    text = SWEEP + ("plot:\n"
                    "  labels: {s: '$\\sigma^2$', d: 'width $d$', phase: regime, time: t}\n"
                    "  title: ~\n"
                    "  size: [6, 4.5]\n"
                    "  style: styles/paper.mplstyle\n"
                    "  dpi: 200\n")
    result, out = run_config(tmp_path, text, "--no-plot")
    assert result.exit_code == 0, result.stderr
    plot = stored_plot(out)
    assert plot == {"x": "d", "y": "s", "maps": ["phase", "ntk_change", "alignment_final", "tau"],
                    "formats": ["png"], "labels": {"s": "$\\sigma^2$", "d": "width $d$", "phase": "regime",
                                                   "time": "t"},
                    "title": None, "size": [6.0, 4.5], "style": str((tmp_path / "styles/paper.mplstyle").resolve()),
                    "dpi": 200}


@pytest.mark.parametrize("snippet, key, expected", [
    ("title: 'Widths $d$'", "title", "Widths $d$"),
    ("title: {phase: Regimes, trajectories: ~}", "title", {"phase": "Regimes", "trajectories": None}),
    ("size: column", "size", "column"),
    ("size: page", "size", "page"),
    ("size: [1, 30]", "size", [1.0, 30.0]),
    ("style: ggplot", "style", "ggplot"),
    ("dpi: 50", "dpi", 50),
    ("labels: {ntk_change: 'NTK change $\\Theta_T/\\Theta_0 - 1$'}", "labels",
     {"ntk_change": "NTK change $\\Theta_T/\\Theta_0 - 1$"}),
    ("labels: {s: 'costs \\$5'}", "labels", {"s": "costs \\$5"}),  # an escaped dollar is no math
])
def test_each_value_resolves(tmp_path, snippet, key, expected):
    config = load_config(write_config(tmp_path, SWEEP + f"plot:\n  {snippet}\n"))
    assert config.plot[key] == expected
    assert set(config.plot) == {"x", "y", "maps", "formats", key}  # only the key given is added


def test_without_the_keys_the_resolved_config_is_as_before(tmp_path):
    config = load_config(write_config(tmp_path, SWEEP))
    assert config.plot == {"x": "d", "y": "s", "maps": ["phase", "ntk_change", "alignment_final", "tau"],
                           "formats": ["png"]}


def test_figure_settings_do_not_change_the_config_hash(tmp_path):
    plain = load_config(write_config(tmp_path, SWEEP, "a.yaml"))
    styled = load_config(write_config(tmp_path, SWEEP + "plot: {labels: {s: '$s$'}, dpi: 300, size: page}\n",
                                      "b.yaml"))
    assert plain.resolved["plot"] != styled.resolved["plot"]
    assert config_hash(plain.resolved) == config_hash(styled.resolved)


def test_scaling_sweep_takes_its_exponents_and_metrics_as_names(tmp_path):
    text = """\
name: po_scaling
mode: scaling
sweep:
  k: {lin: [-1, 0, 3]}
  s: {lin: [-1, 1, 3]}
model: {output_scale: {exp: k}, init_var_u: {exp: s}, init_var_w: {exp: s}}
plot: {labels: {k: '$k$', rho_exp: 'exponent of $\\rho$'}, size: column}
"""
    config = load_config(write_config(tmp_path, text))
    assert config.plot["labels"] == {"k": "$k$", "rho_exp": "exponent of $\\rho$"} and config.plot["size"] == "column"
    bad = invoke("run", write_config(tmp_path, text.replace("rho_exp:", "time:"), "bad.yaml"), "--out",
                 tmp_path / "o", "-q")
    assert "plot.labels.time (line 7): unknown name 'time'" in one_line_error(bad)


@pytest.mark.parametrize("module, text, names", [
    (sgd_drift, SGD_DRIFT, {"lr": "$\\eta$", "decay": "$D_K$", "batch_size": "B"}),
    (nonlinear_digits, NONLINEAR, {"init_scale": "$s$", "test_error": "test error", "step": "t"}),
])
def test_studies_read_the_same_keys_and_read_them_back(tmp_path, module, text, names):
    figure = "drift_vs_lr" if module is sgd_drift else "vs_step"
    labels = ", ".join(f"{k}: '{v}'" for k, v in names.items())
    path = write_config(tmp_path, text + f"plot:\n  labels: {{{labels}}}\n  title: {{{figure}: ~}}\n"
                                         "  size: [8, 3]\n  dpi: 120\n")
    kind, _, study = lifecycle.resolve(path, experiment=True)
    plot = study.resolved["plot"]
    assert plot["labels"] == names and plot["title"] == {figure: None} and plot["size"] == [8.0, 3.0]
    assert plot["dpi"] == 120 and plot["formats"] == ["png"]
    # the figures re-read the stored config (as study_of does): the settings survive the round trip
    stored = {k: v for k, v in study.resolved.items() if k in module.TOP_KEYS}
    assert module.parse_study(located(stored)).resolved["plot"] == plot


# ---------------------------------------------------------------- refused: one line, the key and its line

BAD = [
    ("labels: {x: 'a'}", "plot.labels.x", "unknown name 'x'"),
    ("labels: {s: '$\\frac{$'}", "plot.labels.s", "not valid mathtext"),
    ("labels: {s: 'a $s'}", "plot.labels.s", "unbalanced $"),
    ("labels: {s: ''}", "plot.labels.s", "must not be empty"),
    ("labels: {s: 3}", "plot.labels.s", "must be text"),
    (f"labels: {{s: '{'x' * 201}'}}", "plot.labels.s", "at most 200"),
    ("title: '$\\alpha_$'", "plot.title", "not valid mathtext"),
    ("title: {nope: x}", "plot.title.nope", "unknown name 'nope'"),
    ("size: [0, 3]", "plot.size", "the width must be in [1, 30] inches, got 0"),
    ("size: [3, 31]", "plot.size", "the height must be in [1, 30] inches, got 31"),
    ("size: [3]", "plot.size", "[width, height]"),
    ("size: huge", "plot.size", "unknown size 'huge'"),
    ("dpi: 10", "plot.dpi", "must be an integer in [50, 1,200], got 10"),
    ("dpi: 150.5", "plot.dpi", "must be an integer"),
    ("style: nope", "plot.style", "'nope' is neither a matplotlib style"),
    ("style: missing.mplstyle", "plot.style", "does not exist"),
    ("style: garbage.mplstyle", "plot.style", "Missing colon"),
    ("style: backend.mplstyle", "plot.style", "sets backend, not a style parameter"),
    ("style: binary.mplstyle", "plot.style", "not UTF-8"),
    ("colour: red", "plot.colour", "unknown key"),
]


@pytest.mark.parametrize("snippet, where, message", BAD)
def test_a_bad_value_is_one_line_naming_the_key_and_its_line(tmp_path, snippet, where, message):
    (tmp_path / "garbage.mplstyle").write_text(STYLE_GARBAGE)
    (tmp_path / "backend.mplstyle").write_text("backend: Agg\n")
    (tmp_path / "binary.mplstyle").write_bytes(b"\xff\xfe lines.linewidth: 2\n")
    text = SWEEP + f"plot:\n  {snippet}\n"
    result, out = run_config(tmp_path, text)
    line = one_line_error(result)
    assert f"{where} (line {line_of(text, snippet)}): " in line and message in line, line
    assert not out.exists(), "nothing may be written for a bad config"


@pytest.mark.parametrize("text, snippet, message", [
    (SGD_DRIFT, "labels: {init_scale: s}", "plot.labels.init_scale (line {line}): unknown name 'init_scale'"),
    (NONLINEAR, "dpi: 5000", "plot.dpi (line {line}): must be an integer in [50, 1,200]"),
    (NONLINEAR, "size: huge", "plot.size (line {line}): unknown size 'huge'"),
])
def test_studies_refuse_alike(tmp_path, text, snippet, message):
    text = text + f"plot:\n  {snippet}\n"
    result, out = run_config(tmp_path, text)
    assert message.format(line=line_of(text, snippet)) in one_line_error(result)
    assert not out.exists()


def test_validate_reads_the_plot_section_of_its_sweep(tmp_path):
    text = SWEEP + "plot: {labels: {worst_deviation: 'deviation', zz: z}}\n"
    result = invoke("validate", write_config(tmp_path, text), "--points", 2, "--out", tmp_path / "v", "-q")
    assert "plot.labels.zz (line 6): unknown name 'zz'" in one_line_error(result)
    assert not (tmp_path / "v").exists()


def test_matplotlib_is_imported_only_for_math_and_styles(tmp_path):
    plain = write_config(tmp_path, SWEEP + "plot: {labels: {s: init variance}, title: T, size: page, dpi: 99}\n",
                         "plain.yaml")
    math = write_config(tmp_path, SWEEP + "plot: {labels: {s: '$s$'}}\n", "math.yaml")
    code = ("import sys; from phasediag.config.sweep import load_config; load_config(sys.argv[1]); "
            "print('matplotlib' in sys.modules)")
    seen = [subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, check=True)
            .stdout.strip() for p in (plain, math)]
    assert seen == ["False", "True"]


# ---------------------------------------------------------------- phasediag plot DIR --label ... --dpi N


@pytest.fixture(scope="module")
def drawn_once(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drawn")
    result, out = run_config(tmp, PLOT_SWEEP)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture
def drawn(drawn_once, tmp_path):
    """A run directory with its figure, drawn once: each test gets its own copy (the manifest holds)."""
    return Path(shutil.copytree(drawn_once, tmp_path / "run"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plot_options_update_meta_json_and_leave_the_results(drawn):
    results, hash_before = _digest(drawn / "results.npz"), json.loads((drawn / "meta.json").read_text())["config_hash"]
    result = invoke("plot", drawn, "--label", "s=$s$", "--no-title", "--size", "column", "--dpi", "200")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((drawn / "meta.json").read_text())
    plot = meta["config"]["plot"]
    assert plot["labels"] == {"s": "$s$"} and plot["title"] is None and plot["size"] == "column"
    assert plot["dpi"] == 200 and plot["maps"] == ["phase"] and plot["formats"] == ["png"]
    assert _digest(drawn / "results.npz") == results and meta["config_hash"] == hash_before
    assert meta["figures"] and all((drawn / f).is_file() for f in meta["figures"])
    lifecycle.load(drawn)  # the manifest still verifies
    # a second re-plot merges over the first: labels name by name, the other settings replaced
    result = invoke("plot", drawn, "--label", "d=width", "--title", "Regimes", "--size", "5,3.5", "-q")
    assert result.exit_code == 0, result.stderr
    plot = stored_plot(drawn)
    assert plot["labels"] == {"s": "$s$", "d": "width"} and plot["title"] == "Regimes"
    assert plot["size"] == [5.0, 3.5] and plot["dpi"] == 200


def test_plot_style_file_is_stored_as_an_absolute_path(drawn, tmp_path, monkeypatch):
    (tmp_path / "mine.mplstyle").write_text(STYLE_OK)
    monkeypatch.chdir(tmp_path)  # a relative --style is relative to the working directory
    result = invoke("plot", drawn, "--style", "mine.mplstyle", "-q")
    assert result.exit_code == 0, result.stderr
    assert stored_plot(drawn)["style"] == str((tmp_path / "mine.mplstyle").resolve())


PLOT_BAD = [
    (["--label", "x=foo"], "--label", "unknown name 'x'"),
    (["--label", "s=$\\frac{$"], "--label", "not valid mathtext"),
    (["--label", "s=a $s"], "--label", "unbalanced $"),
    (["--label", "s"], "--label", "expected NAME=TEXT"),
    (["--title", "$\\alpha_$"], "--title", "not valid mathtext"),
    (["--title", "T", "--no-title"], "--no-title", "conflicts"),
    (["--size", "0,3"], "--size", "the width must be in [1, 30] inches"),
    (["--size", "huge"], "--size", "unknown size 'huge'"),
    (["--size", "1,2,3"], "--size", "W,H"),
    (["--dpi", "10"], "--dpi", "must be an integer in [50, 1,200]"),
    (["--dpi", "lots"], "--dpi", "not a number"),
    (["--style", "nope"], "--style", "neither a matplotlib style"),
    (["--style", "garbage.mplstyle"], "--style", "Missing colon"),
]


@pytest.mark.parametrize("args, option, message", PLOT_BAD)
def test_a_bad_plot_option_is_one_line_naming_it_and_writes_nothing(drawn, tmp_path, monkeypatch, args, option,
                                                                     message):
    (tmp_path / "garbage.mplstyle").write_text(STYLE_GARBAGE)
    monkeypatch.chdir(tmp_path)
    before = {p.name: _digest(p) for p in drawn.iterdir()}
    line = one_line_error(invoke("plot", drawn, *args))
    assert option in line and message in line, line
    assert {p.name: _digest(p) for p in drawn.iterdir()} == before, "nothing may be written"


def test_api_plot_takes_the_same_settings(drawn):
    paths = api.plot(drawn, labels={"d": "$d$"}, title=None, size=(4, 3), dpi=72)
    assert paths and all(p.is_file() for p in paths)
    plot = stored_plot(drawn)
    assert plot["labels"] == {"d": "$d$"} and plot["title"] is None and plot["size"] == [4.0, 3.0]
    assert plot["dpi"] == 72
    for kwargs, field in (({"labels": {"nope": "x"}}, "labels"), ({"dpi": 5}, "dpi"), ({"size": "huge"}, "size"),
                          ({"title": "$x"}, "title"), ({"style": "nope"}, "style")):
        with pytest.raises(FieldError) as caught:
            api.plot(drawn, **kwargs)
        assert caught.value.field == field
    assert stored_plot(drawn) == plot
