"""The tool never overwrites or deletes a file it did not write (phasediag/results/rundir.py: tool_files,
check_owned). A run directory's files are the tool's when its meta.json (one the tool wrote) lists them; every
writer (run, merge, plot, export --csv) refuses, with one line and exit status 2 and before anything is written,
to create or replace a file of another origin, and re-running into the tool's own directory still works.

Also: the shared lock of `--shared` shards goes with the last shard out, including a shard run again after
the result was committed; a lock file the tool did not write is refused and left alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from phasediag.cli import phasediag as group
from phasediag.results.rundir import LOCK
from job_cases import CASES

MINI = """\
name: mini
sweep:
  d: {values: [1, 10, 100]}
  s: {values: [1e-6, 1e-3, 1]}
model: {width: d, init_var_u: s, init_var_w: s}
plot: {x: d, y: s, maps: [phase]}
"""
FIGURE = "mini__phase__s_vs_d.png"
USER = b"the user's own bytes\n"


def cli(*args):
    return CliRunner().invoke(group, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (hidden ones too) -> its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def assert_refused(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "mini.yaml"
    path.write_text(MINI)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """kind -> (its config, the files a run of it commits), from one run of each kind."""
    root = tmp_path_factory.mktemp("kinds")
    found = {}
    for kind, (text, _) in CASES.items():
        path = root / f"{kind}.yaml"
        path.write_text(text)
        result = cli("run", path, "-q", "--out", root / kind)
        assert result.exit_code == 0, result.output
        found[kind] = (path, json.loads((root / kind / "meta.json").read_text())["files"])
    return found


@pytest.mark.parametrize("kind", list(CASES))
def test_no_run_of_any_kind_replaces_a_user_file_that_has_the_name_of_one_it_writes(kind, made, tmp_path):
    path, files = made[kind]
    figures = [n for n in files if n.endswith((".png", ".pdf", ".svg"))]
    data = [n for n in files if n != "meta.json" and n not in figures]
    for name in [*data, "meta.json", *figures[:1]]:
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_bytes(USER)
        before = snapshot(out)
        assert_refused(cli("run", path, "-q", "--out", out), f"{out / name} was not written by phasediag")
        assert snapshot(out) == before, name  # nothing written, nothing left behind


def test_a_user_file_with_a_figure_name_is_refused_before_the_data_are_committed(config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / FIGURE).write_bytes(USER)
    assert_refused(cli("run", config, "-q", "--out", out), "has no meta.json of phasediag")
    assert snapshot(out) == {FIGURE: USER}
    assert cli("run", config, "-q", "--no-plot", "--out", out).exit_code == 0  # no figures: nothing in the way
    assert (out / FIGURE).read_bytes() == USER
    assert_refused(cli("plot", out), "not in")  # the figure is not in the run's meta.json
    assert (out / FIGURE).read_bytes() == USER


def test_a_run_again_into_the_tools_own_directory_replaces_its_files(config, tmp_path):
    out = tmp_path / "out"
    assert cli("run", config, "-q", "--out", out).exit_code == 0
    first = snapshot(out)
    for again in (["--resume"], []):
        assert cli("run", config, "-q", "--out", out, *again).exit_code == 0
        assert set(snapshot(out)) == set(first)
    assert cli("plot", out, "--formats", "pdf").exit_code == 0  # its own figures, in another format
    assert (out / FIGURE.replace(".png", ".pdf")).exists()


def test_a_directory_of_the_first_versions_is_the_tools_and_can_be_run_into(config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.npz").write_bytes(b"old")
    (out / "meta.json").write_text(json.dumps({"name": "mini", "config_hash": "0123456789abcdef"}))
    assert cli("run", config, "-q", "--no-plot", "--out", out).exit_code == 0
    assert (out / "results.npz").read_bytes() != b"old"
    assert "manifest" in json.loads((out / "meta.json").read_text())


def test_a_user_meta_json_that_is_no_phasediag_meta_json_is_refused(config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for text in ('{"files": ["results.npz"]}', "[1, 2]", "not json", '{"files": ["meta.json", "results.npz"]}',
                 '{"dataset": "mine", "manifest": {"images": 3}}'):
        (out / "meta.json").write_text(text)
        (out / "results.npz").write_bytes(USER)
        before = snapshot(out)
        assert_refused(cli("run", config, "-q", "--out", out), "meta.json was not written by phasediag")
        assert snapshot(out) == before


def test_plot_in_another_format_never_replaces_a_user_file(config, tmp_path):
    out = tmp_path / "out"
    assert cli("run", config, "-q", "--out", out).exit_code == 0
    user = out / FIGURE.replace(".png", ".svg")
    user.write_bytes(USER)
    before = snapshot(out)
    assert_refused(cli("plot", out, "--formats", "svg"), f"{user} was not written by phasediag (not in")
    assert snapshot(out) == before


def test_export_never_replaces_a_user_table_and_writes_another_name(config, tmp_path):
    out = tmp_path / "out"
    assert cli("run", config, "-q", "--no-plot", "--out", out).exit_code == 0
    (out / "mini.csv").write_bytes(USER)
    before = snapshot(out)
    assert_refused(cli("export", out, "--csv"), "choose another table name")
    assert snapshot(out) == before
    table = out / "table.csv"
    assert cli("export", out, "--csv", "--out", table).exit_code == 0
    assert (out / "mini.csv").read_bytes() == USER and table.stat().st_size > 0
    assert cli("export", out, "--csv", "--out", table).exit_code == 0  # its own table: replaced


def test_merge_never_replaces_a_user_file_in_its_output(config, tmp_path):
    shards = [tmp_path / f"s{i}" for i in (1, 2)]
    for i, shard in enumerate(shards, 1):
        assert cli("run", config, "-q", "--shard", f"{i}/2", "--out", shard).exit_code == 0
    for name in ("results.npz", "meta.json", FIGURE):
        out = tmp_path / f"m_{name.replace('.', '_')}"
        out.mkdir()
        (out / name).write_bytes(USER)
        before = snapshot(out)
        assert_refused(cli("merge", *shards, "--out", out), f"{out / name} was not written by phasediag")
        assert snapshot(out) == before
    assert cli("merge", *shards, "--out", tmp_path / "merged").exit_code == 0


def test_a_run_again_never_deletes_a_user_file_beside_the_tools_files(config, tmp_path):
    out = tmp_path / "out"
    assert cli("run", config, "-q", "--out", out).exit_code == 0
    names = ["notes.csv", "draft.png", ".mini.results.abcdefgh.tmp.txt", ".results.npz.abcdefgh.tmp.npz.bak"]
    for name in names:
        (out / name).write_bytes(USER)
    assert cli("run", config, "-q", "--no-plot", "--out", out).exit_code == 0
    assert all((out / name).read_bytes() == USER for name in names)


def test_the_shared_lock_goes_with_the_last_shard_even_one_run_again_after_the_commit(config, tmp_path):
    out = tmp_path / "out"
    for step, i in enumerate((1, 2, 1, 2)):
        result = cli("run", config, "-q", "--shard", f"{i}/2", "--shared", "--out", out)
        assert result.exit_code == 0, result.output
        assert not (out / LOCK).exists()
        hidden = {p.name for p in out.iterdir() if p.name.startswith(".")}
        assert len(hidden) == (1 if step == 0 else 0), hidden  # (the shared checkpoint, until the commit)
    assert json.loads((out / "meta.json").read_text())["shard"] is None  # (one whole result)


def test_a_lock_file_the_tool_did_not_write_is_refused_and_left_alone(config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_bytes(USER)
    assert_refused(cli("run", config, "-q", "--out", out), f"{out / LOCK} was not written by phasediag")
    assert snapshot(out) == {LOCK: USER}


def test_a_stale_lock_file_of_the_tool_does_not_block(config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(f"{os.getpid() + 10**6}\n")  # a pid, no flock held on it
    assert cli("run", config, "-q", "--no-plot", "--out", out).exit_code == 0
    assert not (out / LOCK).exists()


@pytest.mark.parametrize("field, error", [("out", "FieldError"), (None, "ResultsError")])
def test_a_directory_that_cannot_be_written_is_named_by_the_option_that_chose_it(field, error, tmp_path,
                                                                                 monkeypatch):
    from phasediag.results import rundir

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / LOCK))

    monkeypatch.setattr(rundir.os, "open", denied)  # (this process is root here: modes do not refuse it)
    with pytest.raises(Exception) as caught:
        with rundir.writer(tmp_path, create=False, field=field):
            pass
    assert type(caught.value).__name__ == error
    assert ("permission denied" in str(caught.value)) and (field is None) == str(caught.value).startswith(
        f"{tmp_path}: ")


def test_the_readme_quotes_the_message_a_run_prints(config, tmp_path):
    import re

    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    shown = re.search(r"`(Error: --out: DIR/results\.npz was not written by phasediag[^`]*)`", readme).group(1)
    out = tmp_path / "DIR"
    out.mkdir()
    (out / "results.npz").write_bytes(USER)
    result = cli("run", config, "-q", "--out", out)
    assert result.stderr.strip().replace(str(out), "DIR") == shown


def test_export_outside_the_run_directory_replaces_only_a_table_of_the_same_columns(config, tmp_path):
    out = tmp_path / "out"
    other = tmp_path / "other"
    for d in (out, other):
        assert cli("run", config, "-q", "--no-plot", "--out", d).exit_code == 0
    mine = tmp_path / "mine.csv"
    mine.write_bytes(USER)
    assert_refused(cli("export", out, "--csv", "--out", mine), "is not a table of these columns")
    assert mine.read_bytes() == USER
    before = snapshot(other)
    for name in ("results.npz", "meta.json", "mini.csv"):  # into another run directory: refused whatever the name
        assert_refused(cli("export", out, "--csv", "--out", other / name), f"{other} is a run directory")
    assert snapshot(other) == before
    assert_refused(cli("export", out, "--csv", "--out", tmp_path / "results.npz"), "a table's name must end in .csv")
    table = tmp_path / "table.csv"
    assert cli("export", out, "--csv", "--out", table).exit_code == 0
    first = table.read_bytes()
    table.write_bytes(first.splitlines(keepends=True)[0] + b"an older export of these columns\n")
    assert cli("export", out, "--csv", "--out", table).exit_code == 0  # (replaced: a table of the same columns)
    assert table.read_bytes() == first


@pytest.mark.parametrize("held", [{"notes.txt": USER}, {"thesis.pdf": USER, "data.csv": USER},
                                  {"COMMITTED": b"x", "meta.json": b'{"files": ["results.npz", "meta.json"]}',
                                   "results.npz": b"other"}])
def test_a_staging_folder_the_tool_did_not_make_is_refused_and_kept(held, config, tmp_path):
    for command in (lambda d: ["run", config, "-q", "--out", d], lambda d: ["plot", d]):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert cli("run", config, "-q", "--no-plot", "--out", out).exit_code == 0
        (out / ".phasediag.txn").mkdir()
        for name, data in held.items():
            (out / ".phasediag.txn" / name).write_bytes(data)
        before = snapshot(out)
        assert_refused(cli(*command(out)), f".phasediag.txn is not a folder phasediag made (it holds {min(held)})")
        assert snapshot(out) == before


def test_a_lock_file_with_other_names_is_never_written_through(config, tmp_path):
    kept = tmp_path / "kept"
    kept.write_bytes(b"42")
    out = tmp_path / "out"
    out.mkdir()
    os.link(kept, out / LOCK)
    assert_refused(cli("run", config, "-q", "--out", out), "has other names")
    assert kept.read_bytes() == b"42" and (out / LOCK).exists()


def test_a_meta_json_that_only_looks_like_the_first_versions_is_not_the_tools(config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "meta.json").write_text('{"config_hash": "x"}')
    (out / "results.npz").write_bytes(USER)
    assert_refused(cli("run", config, "-q", "--out", out), "meta.json was not written by phasediag")
    assert (out / "results.npz").read_bytes() == USER


def test_the_figures_of_a_directory_without_a_manifest_stay_the_tools(config, tmp_path):
    """A directory of the first versions (no manifest) goes through plot and run exactly as one with a manifest:
    the same files after every step, the user's own file beside them untouched."""
    dirs = {kind: tmp_path / kind for kind in ("manifest", "legacy")}
    for kind, out in dirs.items():
        assert cli("run", config, "-q", "--out", out).exit_code == 0
        (out / "mine.png").write_bytes(USER)  # (the user's: meta.json does not list it)
    meta = json.loads((dirs["legacy"] / "meta.json").read_text())
    del meta["manifest"]
    meta["schema"] = 1  # (as the first versions wrote it: files and figures listed, no hashes)
    (dirs["legacy"] / "meta.json").write_text(json.dumps(meta))
    steps = [["plot", "{}", "--formats", "pdf"], ["plot", "{}", "--formats", "svg", "--dpi", "90"],
             ["run", config, "-q", "--out", "{}"], ["run", config, "-q", "--no-plot", "--out", "{}"]]
    for step in steps:
        listings = {}
        for kind, out in dirs.items():
            result = cli(*[out if a == "{}" else a for a in step])
            assert result.exit_code == 0, (kind, step, result.output)
            listings[kind] = {p.name for p in out.iterdir()}
        assert listings["legacy"] == listings["manifest"], step
        assert (dirs["legacy"] / "mine.png").read_bytes() == USER
    assert listings["legacy"] == {"meta.json", "results.npz", "mine.png"}


def test_a_figure_changed_after_a_manifestless_run_is_kept_as_the_users(config, tmp_path):
    out = tmp_path / "out"
    assert cli("run", config, "-q", "--out", out).exit_code == 0
    meta = json.loads((out / "meta.json").read_text())
    del meta["manifest"]
    meta["schema"] = 1
    (out / "meta.json").write_text(json.dumps(meta))
    os.utime(out / "meta.json", ns=(1, 1))  # (written long before the figure below was changed)
    (out / FIGURE).write_bytes(USER)
    assert cli("run", config, "-q", "--no-plot", "--out", out).exit_code == 0
    assert (out / FIGURE).read_bytes() == USER


def test_a_link_at_a_figure_name_is_refused_before_the_new_data_are_committed(config, tmp_path):
    out = tmp_path / "out"
    assert cli("run", config, "-q", "--out", out).exit_code == 0
    (out / FIGURE).unlink()
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(USER)
    (out / FIGURE).symlink_to(elsewhere)
    changed = tmp_path / "changed.yaml"
    changed.write_text(MINI.replace("[1e-6, 1e-3, 1]", "[1e-5, 1e-3, 1]"))  # (new data: the figures are redrawn)
    before = snapshot(out)
    assert_refused(cli("run", changed, "-q", "--out", out), "is a symbolic link")
    assert snapshot(out) == before and elsewhere.read_bytes() == USER
