"""One lifecycle for every job kind: `run`, `plot`, `export`, `merge` and `phasediag.load` on a run directory of
each kind (sweep, GD sweep, scaling, validation, sgd_drift, nonlinear), one meta.json schema for all."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import phasediag
from phasediag.cli import phasediag as group
from phasediag.jobs import KINDS, lifecycle
from job_cases import CASES, SWEEP

COMMON_META = {"schema", "kind", "name", "version", "config", "config_hash", "created", "timing", "shard",
               "coords", "dims", "files", "figures"}


def cli(*args, code=0):
    result = CliRunner().invoke(group, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def run_case(tmp_path: Path, case: str, *extra) -> Path:
    config = tmp_path / f"{case}.yaml"
    config.write_text(CASES[case][0])
    out = tmp_path / case
    cli("run", config, "--out", out, "-q", *extra)
    return out


def run_validation(tmp_path: Path, *extra) -> Path:
    config = tmp_path / "v.yaml"
    config.write_text(SWEEP)
    out = tmp_path / "validation"
    cli("validate", config, "--points", 3, "--out", out, "-q", *extra)
    return out


def run_dir(tmp_path: Path, case: str) -> Path:
    return run_validation(tmp_path) if case == "validation" else run_case(tmp_path, case)


ALL = [*CASES, "validation"]


@pytest.mark.parametrize("case", ALL)
def test_run_writes_one_layout_with_one_meta_schema(tmp_path, case):
    out = run_dir(tmp_path, case)
    meta = json.loads((out / "meta.json").read_text())
    assert COMMON_META <= set(meta), COMMON_META - set(meta)
    assert meta["kind"] in KINDS and meta["schema"] == lifecycle.SCHEMA and meta["version"] == phasediag.__version__
    assert sorted(meta["files"]) == sorted(p.name for p in out.iterdir())  # every file, and only those
    assert set(meta["figures"]) <= set(meta["files"]) and meta["figures"]
    assert all(name.endswith(".png") for name in meta["figures"])
    assert meta["files"][-1] == "meta.json"


@pytest.mark.parametrize("case", ALL)
def test_plot_redraws_every_figure_of_every_kind(tmp_path, case):
    out = run_dir(tmp_path, case)
    figures = json.loads((out / "meta.json").read_text())["figures"]
    for name in figures:
        (out / name).unlink()
    result = cli("plot", out, "--json")
    assert sorted(Path(p).name for p in json.loads(result.output)) == sorted(figures)
    assert all((out / name).stat().st_size > 1000 for name in figures)
    cli("plot", out, "--formats", "svg", "-q")
    svg = [n.replace(".png", ".svg") for n in figures]
    assert all((out / n).is_file() for n in svg)
    meta = json.loads((out / "meta.json").read_text())
    assert set(svg) <= set(meta["figures"]) and set(svg) <= set(meta["files"])


@pytest.mark.parametrize("case", ALL)
def test_export_writes_tidy_tables_of_every_kind(tmp_path, case):
    out = run_dir(tmp_path, case)
    result = phasediag.load(out)
    paths = json.loads(cli("export", out, "--csv", "--json").output)
    assert paths and paths[0] == str(out / f"{result.name}.csv")
    covered = set()
    for path in paths:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], rows[1:]
        variables = [h for h in header if h in result.arrays]
        dims = result.dims(variables[0])
        assert header[:len(dims)] == list(dims)
        assert len(body) == int(np.prod(result[variables[0]].shape))  # one row per point of its dimensions
        covered |= set(variables)
    assert covered == set(result.arrays)  # every data variable is in some table


def test_export_writes_categorical_codes_as_their_names(tmp_path):
    out = run_case(tmp_path, "gd_sweep")
    result = phasediag.load(out)
    with open(json.loads(cli("export", out, "--csv", "--json").output)[0], newline="") as fh:
        rows = list(csv.DictReader(fh))
    legend = result.meta["legends"]
    assert [r["phase"] for r in rows] == [legend["phase"][c] for c in result["phase"].reshape(-1)]
    assert [r["gd_outcome"] for r in rows] == [legend["gd_outcome"][c] for c in result["gd_outcome"].reshape(-1)]
    assert {r["gd_outcome"] for r in rows} >= {"converges", "diverges"}


@pytest.mark.parametrize("case", ["sweep", "gd_sweep", "scaling"])
def test_shards_merge_into_the_single_run_for_every_shardable_kind(tmp_path, case):
    whole = run_case(tmp_path, case)
    config = tmp_path / f"{case}.yaml"
    shards = []
    for k in (1, 2, 3):
        shards.append(tmp_path / f"part{k}")
        cli("run", config, "--shard", f"{k}/3", "--out", shards[-1], "-q")
        with pytest.raises(phasediag.BadInput, match="shard"):
            lifecycle.plot(shards[-1])
    cli("merge", *reversed(shards), "--out", tmp_path / "merged", "-q")
    assert (tmp_path / "merged" / "results.npz").read_bytes() == (whole / "results.npz").read_bytes()
    meta = json.loads((tmp_path / "merged" / "meta.json").read_text())
    assert meta["kind"] == json.loads((whole / "meta.json").read_text())["kind"] and meta["shard"] is None
    assert sorted(meta["files"]) == sorted(p.name for p in (tmp_path / "merged").iterdir())


def test_validation_shards_merge_into_the_single_validation(tmp_path):
    whole = run_validation(tmp_path)
    config = tmp_path / "v.yaml"
    parts = []
    for k in (1, 2):
        parts.append(tmp_path / f"v{k}")
        cli("validate", config, "--points", 3, "--shard", f"{k}/2", "--out", parts[-1], "-q")
    cli("merge", parts[1], parts[0], "--out", tmp_path / "vm", "-q")
    assert (tmp_path / "vm" / "validation.json").read_bytes() == (whole / "validation.json").read_bytes()
    assert phasediag.load(tmp_path / "vm").kind == "validation"


@pytest.mark.parametrize("case", ["sgd_drift", "nonlinear"])
def test_merge_refuses_kinds_that_are_not_sharded(tmp_path, case):
    out = run_case(tmp_path, case)
    result = cli("merge", out, "--out", tmp_path / "m", code=2)
    assert result.output.strip().count("\n") == 0 and case in result.output and "not sharded" in result.output
    assert not (tmp_path / "m").exists()


def test_merge_refuses_mixed_kinds_and_an_output_among_its_inputs(tmp_path):
    a, b = run_case(tmp_path, "sweep"), run_case(tmp_path, "scaling")
    assert "different kinds" in cli("merge", a, b, "--out", tmp_path / "m", code=2).output
    assert "--out" in cli("merge", a, "--out", a, code=2).output


@pytest.mark.parametrize("case", ["sgd_drift", "nonlinear"])
def test_run_and_experiment_are_two_spellings_of_a_study(tmp_path, case):
    config = tmp_path / "c.yaml"
    config.write_text(CASES[case][0])
    a = json.loads(cli("run", config, "--out", tmp_path / "a", "--json", "--no-plot").output)
    b = json.loads(cli("experiment", config, "--out", tmp_path / "b", "--json", "--no-plot").output)
    assert a["kind"] == b["kind"] == case
    assert (tmp_path / "a" / "results.npz").read_bytes() == (tmp_path / "b" / "results.npz").read_bytes()


def test_experiment_refuses_a_sweep_and_study_options_are_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(SWEEP)
    assert "experiment" in cli("experiment", config, code=2).output
    study = tmp_path / "s.yaml"
    study.write_text(CASES["sgd_drift"][0])
    result = cli("run", study, "--shard", "1/2", "--out", tmp_path / "x", code=2)
    assert result.output.startswith("Error: --shard: not available for sgd_drift runs")
    assert not (tmp_path / "x").exists()


def test_every_bundled_config_runs_with_phasediag_run():
    """Each bundled config's kind comes from the config itself (resolve only: nothing is computed)."""
    root = Path(__file__).resolve().parent.parent / "configs"
    kinds = {}
    for path in sorted(root.glob("*.yaml")):
        from phasediag.config.reader import read_config
        from phasediag.jobs import kind_of_config

        kinds[path.name] = kind_of_config(read_config(path)[0])
    assert kinds["11_gd_vs_sgd.yaml"] == "sgd_drift" and kinds["12_nonlinear_digits.yaml"] == "nonlinear"
    assert kinds["8_limit_output_scale_vs_init.yaml"] == "scaling" and kinds["1_width_vs_init.yaml"] == "sweep"
    assert set(kinds.values()) <= set(KINDS)


def test_a_resolved_config_reads_back_as_the_same_config():
    from phasediag.config.reader import located
    from phasediag.config.sweep import config_from_root, load_config

    root = Path(__file__).resolve().parent.parent / "configs"
    for path in sorted(root.glob("*.yaml")):
        if "experiment" in path.read_text():
            continue
        config = load_config(path)
        again = config_from_root(located(json.loads(json.dumps(config.resolved))))
        assert again.resolved == config.resolved, path.name


def test_default_output_rule_is_one_for_every_kind():
    shard = lifecycle.parse_shard("3/10")
    assert lifecycle.default_out("x") == Path("outputs/x")
    assert lifecycle.default_out("x", "validate", shard) == Path("outputs/x/validate/shard-0003-of-0010")


def _drop(key):
    def edit(meta):
        meta.pop(key, None)
        return meta
    return edit


TAMPERINGS = {
    "meta.json is not JSON": lambda out: (out / "meta.json").write_text("{not json"),
    "meta.json is a list": lambda out: (out / "meta.json").write_text("[1, 2]"),
    "results.npz is garbage": lambda out: (out / "results.npz").write_bytes(b"PK\x03\x04 no zip"),
    "results.npz is missing": lambda out: (out / "results.npz").unlink(),
    "results.npz is empty": lambda out: (out / "results.npz").write_bytes(b""),
    "a name that is a path": lambda out: _edit_meta(out, lambda m: {**m, "name": "../../evil"}),
    "NaN in meta.json": lambda out: (out / "meta.json").write_text(
        (out / "meta.json").read_text().replace('"description": ""', '"description": NaN')),
    "unknown kind": lambda out: _edit_meta(out, lambda m: {**m, "kind": "bogus"}),
    "no config": lambda out: _edit_meta(out, _drop("config")),
    "dims of another shape": lambda out: _edit_meta(out, lambda m: {**m, "dims": {k: ["nope"] for k in m["dims"]}}),
    "legend not a list": lambda out: _edit_meta(out, lambda m: {**m, "legends": {"phase": 3}}),
}


def _edit_meta(out: Path, change) -> None:
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps(change(meta)))


@pytest.mark.parametrize("command", ["plot", "export", "merge"])
@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_run_directory_is_one_line_of_bad_input(tmp_path, command, tampering):
    out = run_case(tmp_path, "sweep", "--no-plot")
    TAMPERINGS[tampering](out)
    args = {"plot": ["plot", out], "export": ["export", out, "--csv"],
            "merge": ["merge", out, "--out", tmp_path / "m"]}[command]
    result = CliRunner().invoke(group, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output


def test_an_empty_shard_of_a_validation_is_fine_and_merges(tmp_path):
    whole = run_validation(tmp_path)  # 3 points
    config = tmp_path / "v.yaml"
    parts = []
    for k in range(1, 6):  # more shards than points: some are empty
        parts.append(tmp_path / f"s{k}")
        cli("validate", config, "--points", 3, "--shard", f"{k}/5", "--out", parts[-1], "-q")
    cli("merge", *parts, "--out", tmp_path / "all", "-q")
    assert (tmp_path / "all" / "validation.json").read_bytes() == (whole / "validation.json").read_bytes()


def test_out_named_default_is_a_directory_like_any_other(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(SWEEP)
    cli("run", "c.yaml", "--out", "default", "-q", "--no-plot")
    assert (tmp_path / "default" / "results.npz").is_file() and not (tmp_path / "outputs").exists()


def test_a_run_stopped_while_drawing_draws_its_figures_on_resume(tmp_path):
    out = run_case(tmp_path, "sweep")
    meta = json.loads((out / "meta.json").read_text())
    for name in meta["figures"]:
        (out / name).unlink()
    # the state a run leaves when stopped after saving its data, before its figures
    meta.update(figures=[], files=["results.npz", "meta.json"], figures_pending=True)
    (out / "meta.json").write_text(json.dumps(meta))
    summary = json.loads(cli("run", tmp_path / "sweep.yaml", "--out", out, "--resume", "--json").output)
    assert summary["status"] == "done" and all((out / n).is_file() for n in meta["figures"] or
                                              json.loads((out / "meta.json").read_text())["figures"])
    again = json.loads(cli("run", tmp_path / "sweep.yaml", "--out", out, "--resume", "--json").output)
    assert again["status"] == "up to date" and again["counts"] == summary["counts"]  # the same summary fields
    assert again["grid_points"] == summary["grid_points"]


@pytest.mark.parametrize("case, data", [("sweep", "results.npz"), ("validation", "validation.json")])
def test_a_rerun_never_deletes_a_data_file_an_edited_meta_calls_a_figure(tmp_path, case, data):
    out = run_dir(tmp_path, case)
    _edit_meta(out, lambda m: {**m, "figures": [data, "meta.json"]})
    if case == "validation":
        run_validation(tmp_path, "--no-plot")
    else:
        run_case(tmp_path, case, "--no-plot")
    assert (out / data).is_file() and (out / "meta.json").is_file()
    phasediag.load(out)


def test_merge_without_figures_removes_the_figures_of_an_earlier_merge(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP)
    parts = [tmp_path / "p1", tmp_path / "p2"]
    for k, part in enumerate(parts, 1):
        cli("run", config, "--shard", f"{k}/2", "--out", part, "-q")
    cli("merge", *parts, "--out", tmp_path / "m", "-q")
    assert any(p.suffix == ".png" for p in (tmp_path / "m").iterdir())
    cli("merge", *parts, "--out", tmp_path / "m", "-q", "--no-plot")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(meta["files"]) == ["meta.json", "results.npz"]


def test_replotting_keeps_files_and_figures_true_to_the_directory(tmp_path):
    out = run_case(tmp_path, "sweep")
    timing = json.loads((out / "meta.json").read_text())["timing"]
    for png in out.glob("*.png"):
        png.unlink()
    cli("plot", out, "--formats", "svg", "-q")
    meta = json.loads((out / "meta.json").read_text())
    assert sorted(meta["files"]) == sorted(p.name for p in out.iterdir()) and meta["files"][-1] == "meta.json"
    assert all(name.endswith(".svg") for name in meta["figures"])
    assert meta["timing"]["plot_s"] == timing["plot_s"] and "replot_s" in meta["timing"]


def test_validate_refuses_a_config_that_is_not_a_sweep(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(CASES["sgd_drift"][0])
    result = cli("validate", config, code=2)
    assert "validate needs a finite-width sweep config; this one is a sgd_drift config" in result.output


def test_config_hash_does_not_depend_on_how_numbers_are_written():
    import yaml

    a = yaml.safe_load(SWEEP)
    b = json.loads(json.dumps(a).replace('"1e4"', "10000").replace('"1e-6"', "0.000001"))
    assert a != b
    assert phasediag.run(a).meta["config_hash"] == phasediag.run(b).meta["config_hash"]


@pytest.mark.parametrize("case", ["sweep", "validation"])
def test_a_directory_written_before_manifests_loads_plots_exports_and_gains_a_manifest(tmp_path, case):
    out = run_dir(tmp_path, case)
    meta = json.loads((out / "meta.json").read_text())
    reference = phasediag.load(out)
    legacy = {k: v for k, v in meta.items() if k != "manifest"}
    legacy["schema"] = 1
    (out / "meta.json").write_text(json.dumps(legacy))
    loaded = phasediag.load(out)
    assert loaded.keys() == reference.keys()
    assert all(np.array_equal(loaded[k], reference[k]) for k in reference.keys())
    cli("plot", out, "-q")
    cli("export", out, "--csv", "-q")
    upgraded = json.loads((out / "meta.json").read_text())
    data = [n for n in meta["files"] if n != "meta.json" and n not in meta["figures"]]
    assert set(data) <= set(upgraded["manifest"]) and set(upgraded["manifest"]) == set(upgraded["files"]) - {"meta.json"}
    assert sorted(upgraded["files"]) == sorted(p.name for p in out.iterdir())
    assert upgraded["manifest"][data[0]] == meta["manifest"][data[0]]  # the same bytes, hashed again


def test_a_run_into_a_directory_another_process_writes_exits_75_at_once_and_changes_nothing(tmp_path):
    from phasediag.results import rundir

    out = run_case(tmp_path, "sweep")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    config = tmp_path / "sweep.yaml"
    with rundir.writer(out):
        for args in (["run", config, "--out", out, "-q"], ["plot", out], ["export", out, "--csv"]):
            result = CliRunner().invoke(group, [str(a) for a in args])
            assert result.exit_code == 75, result.output
            assert result.output.count("\n") == 1 and "another phasediag process" in result.output
        assert phasediag.load(out)["phase"].shape  # readers are not blocked by a writer
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_merge_copies_only_the_shard_files_it_checked(tmp_path, monkeypatch):
    """A shard's results.npz replaced after merge checked it (another commit into that shard directory) is not
    copied into the merged result: one line, exit status 2, and no merged result."""
    from phasediag.results import npz, store

    run_case(tmp_path, "sweep")
    shards = [tmp_path / f"part{k}" for k in (1, 2)]
    for k, shard in enumerate(shards, 1):
        cli("run", tmp_path / "sweep.yaml", "--shard", f"{k}/2", "--out", shard, "-q")
    other = tmp_path / "other.npz"
    other.write_bytes((shards[1] / store.RESULTS_FILE).read_bytes())
    real_create = npz.create

    def create(*args, **kwargs):  # (the merged file is laid out after every shard was checked)
        (shards[1] / store.RESULTS_FILE).unlink()
        other.rename(shards[1] / store.RESULTS_FILE)  # the same bytes, another file
        return real_create(*args, **kwargs)

    monkeypatch.setattr(npz, "create", create)
    result = cli("merge", *shards, "--out", tmp_path / "merged", code=2)
    assert result.output.strip().splitlines() == [
        f"Error: {shards[1] / store.RESULTS_FILE}: changed while it was being merged"]
    assert not (tmp_path / "merged" / "results.npz").exists()
