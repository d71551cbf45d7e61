"""phasediag.load while another process commits to the same run directory: the meta.json it returns and the
data (read or memory-mapped) are always one committed state, never one run's meta with another run's data.

A commit is simulated deterministically at the two moments it can fall into: between the verification of
results.npz against the manifest and the reading (or mapping) of its arrays, and between reading meta.json
and opening results.npz. The commit is a real one (phasediag.run into the same directory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import phasediag
from phasediag.results import store

ROOT = Path(__file__).resolve().parent.parent


def config(teacher: float) -> dict:
    cfg = yaml.safe_load((ROOT / "configs" / "1_width_vs_init.yaml").read_text())
    cfg["sweep"] = {"d": {"log": [1, 1e6, 4]}, "s": {"log": [1e-8, 1, 3]}}
    cfg["data"] = {**cfg["data"], "teacher": teacher}
    return cfg


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[float, dict[str, np.ndarray]]:
    """teacher -> the data variables of a run of that config (loaded with nobody writing)."""
    out = {}
    for teacher in (1, 2):
        directory = tmp_path_factory.mktemp(f"teacher{teacher}")
        phasediag.run(config(teacher), out=directory, plot=False)
        result = phasediag.load(directory)
        out[float(teacher)] = {name: np.array(result[name]) for name in result.keys()}
    return out


def committing(monkeypatch, directory: Path, when: str) -> list[int]:
    """Make the next opening of `directory`'s results.npz by a loader commit the teacher-2 run into
    `directory` (`when`: "before" the file is opened, or "after" it was opened and verified). Returns the
    list that counts the commits done."""
    done: list[int] = []
    original = store.open_data

    def open_data(out_dir, meta, name, verify=True):
        due = not done and Path(out_dir) == directory and name == store.RESULTS_FILE
        if due and when == "before":
            done.append(1)
            phasediag.run(config(2), out=directory, plot=False)
        fh = original(out_dir, meta, name, verify)
        if due and when == "after":
            done.append(1)
            phasediag.run(config(2), out=directory, plot=False)
        return fh

    monkeypatch.setattr(store, "open_data", open_data)
    return done


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize("when", ["after", "before"])
def test_load_never_pairs_one_runs_meta_with_another_runs_data(tmp_path, monkeypatch, reference, when, mmap):
    directory = tmp_path / "alt"
    phasediag.run(config(1), out=directory, plot=False)
    done = committing(monkeypatch, directory, when)
    result = phasediag.load(directory, mmap=mmap)
    assert done == [1]  # the commit did fall into the load
    teacher = float(result.meta["config"]["data"]["teacher"])  # (the resolved config holds it as text)
    assert float(np.median(result["m_final"])) == pytest.approx(teacher, rel=1e-6)
    for name, values in reference[teacher].items():
        np.testing.assert_array_equal(np.asarray(result[name]), values, err_msg=name)
    if when == "before":  # the commit finished before the data were opened: the new result is the one read
        assert teacher == 2


def test_the_memory_maps_stay_the_verified_file_after_the_directory_moves_on(tmp_path, monkeypatch, reference):
    """The maps are of the file that was verified (its inode), whatever the directory holds afterwards."""
    directory = tmp_path / "alt"
    phasediag.run(config(1), out=directory, plot=False)
    result = phasediag.load(directory, mmap=True)
    phasediag.run(config(2), out=directory, plot=False)  # replaces results.npz and meta.json
    assert float(result.meta["config"]["data"]["teacher"]) == 1
    for name, values in reference[1].items():
        np.testing.assert_array_equal(np.asarray(result[name]), values, err_msg=name)
