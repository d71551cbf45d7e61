"""The run-directory protocol itself (phasediag.results.rundir): the writer lock, the redo-log commit and its
recovery at every step, what a commit may delete, leftovers. The commands on top are tested in test_jobs.py,
test_hostile_rundir.py and test_crash.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from phasediag.errors import BusyError, FieldError, ResultsError
from phasediag.results import rundir
from phasediag.results.rundir import COMMITTED, LOCK, STAGING


def commit(out: Path, files: dict[str, bytes], keep: dict | None = None) -> dict:
    """Commit `files` (name -> bytes) as one transaction; returns the meta.json written."""
    with rundir.writer(out) as held:
        txn = held.begin()
        for name, data in files.items():
            txn.path(name).write_bytes(data)
        meta = {"name": "t", "files": list(files)}
        txn.commit(meta, keep=keep)
    return json.loads((out / "meta.json").read_text())


def listing(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def test_a_commit_writes_the_files_and_a_manifest_and_leaves_nothing_else(tmp_path):
    out = tmp_path / "run"
    meta = commit(out, {"results.npz": b"data", "fig.png": b"png"})
    assert listing(out) == {"results.npz", "fig.png", "meta.json"}
    assert meta["files"] == ["results.npz", "fig.png", "meta.json"]
    assert meta["manifest"]["results.npz"] == {
        "size": 4, "sha256": "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"}  # sha256(b"data")


def test_a_second_writer_fails_at_once_and_the_lock_goes_with_the_first(tmp_path):
    out = tmp_path / "run"
    with rundir.writer(out):
        assert (out / LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(BusyError, match=rf"another phasediag process \(pid {os.getpid()}\) is writing"):
            with rundir.writer(out):
                pass
    assert not (out / LOCK).exists()
    with rundir.writer(out):  # free again
        pass


def test_a_lock_file_left_by_a_killed_writer_does_not_block(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("999999\n")  # nobody holds a flock on it
    with rundir.writer(out):
        pass
    assert listing(out) == set()


def test_a_writer_that_fails_removes_the_folders_it_created_and_nothing_else(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError):
        with rundir.writer(out):
            raise RuntimeError("the run failed")
    assert not (tmp_path / "a").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(RuntimeError):
        with rundir.writer(existing):
            raise RuntimeError("the run failed")
    assert existing.is_dir() and listing(existing) == set()


def test_an_out_that_is_a_file_or_under_one_is_a_field_error(tmp_path):
    (tmp_path / "f").write_text("")
    for out in (tmp_path / "f", tmp_path / "f" / "run"):
        with pytest.raises(FieldError, match=r"^out: .*f is a file, not a directory"):
            with rundir.writer(out):
                pass


def crashed_commit(out: Path, new: dict[str, bytes], moved: int, monkeypatch) -> None:
    """Leave `out` as a process killed after the commit point would: COMMITTED written, the first `moved`
    files (meta.json last) already in place."""
    with monkeypatch.context() as patch:  # the process dies right after the commit point: no clean-up
        patch.setattr(rundir.RunDirectory, "roll_forward", lambda self: None)
        patch.setattr(rundir.RunDirectory, "recover", lambda self: None)
        with rundir.writer(out) as held:
            txn = held.begin()
            for name, data in new.items():
                txn.path(name).write_bytes(data)
            txn.commit({"name": "t", "files": list(new)})
    for name in (list(new) + ["meta.json"])[:moved]:
        os.replace(out / STAGING / name, out / name)


@pytest.mark.parametrize("moved", [0, 1, 2, 3])
def test_a_commit_cut_short_after_its_commit_point_is_finished_by_the_next_writer(tmp_path, moved, monkeypatch):
    out = tmp_path / "run"
    commit(out, {"results.npz": b"old", "old.png": b"old figure"})
    crashed_commit(out, {"results.npz": b"new", "new.png": b"new figure"}, moved, monkeypatch)
    assert (out / STAGING / COMMITTED).is_file()
    assert rundir.recover(out)  # what a reader does when it finds one
    assert listing(out) == {"results.npz", "new.png", "meta.json"}
    assert (out / "results.npz").read_bytes() == b"new"
    assert json.loads((out / "meta.json").read_text())["files"] == ["results.npz", "new.png", "meta.json"]


def test_an_uncommitted_transaction_is_discarded_and_the_previous_result_kept(tmp_path):
    out = tmp_path / "run"
    commit(out, {"results.npz": b"old"})
    before = (out / "meta.json").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with rundir.writer(out) as held:
            txn = held.begin()
            txn.path("results.npz").write_bytes(b"half")
            raise KeyboardInterrupt  # killed before the commit point
    (out / STAGING).mkdir()  # as SIGKILL would leave it (with the mark begin() puts in it)
    (out / STAGING / rundir.STAGING_MARK).write_bytes(b"")
    (out / STAGING / "results.npz").write_bytes(b"half")
    with rundir.writer(out):
        pass
    assert listing(out) == {"results.npz", "meta.json"}
    assert (out / "results.npz").read_bytes() == b"old" and (out / "meta.json").read_bytes() == before


def test_a_commit_removes_only_dropped_figures_and_tables_whose_bytes_it_recorded(tmp_path):
    out = tmp_path / "run"
    commit(out, {"results.npz": b"d", "a.png": b"a", "b.svg": b"b", "t.csv": b"t", "notes.txt": b"n",
                 "old.npz": b"o"})
    (out / "b.svg").write_bytes(b"edited by the user")  # no longer the tool's bytes
    (out / "user.png").write_bytes(b"never in a manifest")
    commit(out, {"results.npz": b"d2"})
    assert listing(out) == {"results.npz", "meta.json", "b.svg", "user.png", "notes.txt", "old.npz"}


def test_a_symlink_device_or_directory_at_an_output_name_is_refused_before_the_commit(tmp_path):
    out = tmp_path / "run"
    commit(out, {"results.npz": b"old"})
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(b"keep")
    (out / "fig.png").symlink_to(elsewhere)
    with pytest.raises(ResultsError, match=r"fig.png: is a symbolic link; phasediag writes and replaces regular"):
        commit(out, {"results.npz": b"new", "fig.png": b"figure"})
    assert (out / "results.npz").read_bytes() == b"old" and elsewhere.read_bytes() == b"keep"
    assert (out / "fig.png").is_symlink() and not (out / STAGING).exists()


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", ".hidden", "x\n", "", "meta.json", "é"])
def test_names_from_file_contents_are_plain_names_or_refused(tmp_path, name):
    with pytest.raises(ResultsError, match="not a plain"):
        rundir.plain_name(name)


def test_leftovers_of_the_tool_are_removed_and_look_alikes_kept(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    tool = [".results.npz.ab12cd34.tmp.npz", ".meta.json.zz99yy88.tmp.json"]
    users = ["results.npz.bak", "my.tmp", ".results.npz", "notes.txt"]
    for name in tool + users:
        (out / name).write_bytes(b"x")
    (out / ".partial-0123456789abcdef").mkdir()
    (out / ".partial-0123456789abcdef" / "chunk-000000000000000-000000000000010.npz").write_bytes(b"x")
    (out / ".partial-0123456789abcdef" / "results.npz").write_bytes(b"x")  # (what a run streams into)
    (out / ".partial-0123456789abcdef" / "chunks").write_bytes(b"x")
    (out / ".partial-fedcba9876543210").mkdir()
    (out / ".partial-fedcba9876543210" / "mine.txt").write_bytes(b"a user file")
    (out / ".partial-notes").mkdir()
    with rundir.writer(out) as held:
        held.partial("1111111111111111")
    assert listing(out) == set(users) | {".partial-fedcba9876543210", ".partial-notes"}


def test_final_name_maps_staged_and_temporary_files_to_the_file_they_become(tmp_path):
    out = tmp_path / "run"
    assert rundir.final_name(str(out / STAGING / ".results.npz.ab12cd34.tmp.npz"), out) == out / "results.npz"
    assert rundir.final_name(str(out / STAGING / "fig.png"), out) == out / "fig.png"
    assert rundir.final_name(str(out / ".fig.png.ab12cd34.tmp.png"), out) == out / "fig.png"
    assert rundir.final_name("/somewhere/else.png", out) is None
