"""`phasediag run / plot / export / merge` end to end: outputs, exit codes, atomicity, determinism."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from phasediag.results import store as results

CONFIG = """\
name: small
description: a small test sweep
sweep:
  d: {log: [1, 1e4, 9]}
  s: {log: [1e-6, 1, 7]}
model:
  width: d
  output_scale: 1 / sqrt(d)
  lr_u: 1
  lr_w: 1
  init_var_u: s
  init_var_w: s
data: {input_var: 1, teacher: 1}
init: {seeds: 2, seed: 3}
"""


def phasediag(*args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "phasediag", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(CONFIG)
    return path


def arrays(directory):
    with np.load(Path(directory) / "results.npz") as data:
        return {k: data[k] for k in data.files}


def test_run_writes_results_meta_and_figures(config, tmp_path):
    out = tmp_path / "out"
    info = json.loads(phasediag("run", config, "--out", out, "--json").stdout)
    assert info["status"] == "done" and info["grid_points"] == 9 * 7 * 2 and info["shape"] == [9, 7, 2]
    data = arrays(out)
    assert data["phase"].shape == (9, 7, 2) and data["d"].shape == (9,) and data["seed"].tolist() == [0, 1]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["model"]["output_scale"] == "1 / sqrt(d)"
    assert meta["version"] and meta["numpy"] and meta["timing"]["eval_s"] >= 0
    assert meta["legends"]["phase"][0] == "kernel"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs and all(p.startswith("small__") for p in pngs) and set(meta["figures"]) == set(pngs)
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not list(out.glob(".*")), "no temporary or partial files may remain"


def test_default_out_dir_and_quiet(config, tmp_path):
    proc = phasediag("run", config, "--no-plot", "--quiet", cwd=tmp_path)
    assert proc.stdout == "" and proc.stderr == ""
    assert (tmp_path / "outputs/small/results.npz").is_file()


def test_shards_merge_and_workers_equal_the_single_run(config, tmp_path):
    phasediag("run", config, "--out", tmp_path / "single", "--no-plot")
    phasediag("run", config, "--out", tmp_path / "workers", "--no-plot", "--workers", "2", "--chunk-size", "10")
    for k in (1, 2, 3):
        phasediag("run", config, "--shard", f"{k}/3", "--out", tmp_path / f"shard{k}", "--chunk-size", "7")
    phasediag("merge", *(tmp_path / f"shard{k}" for k in (3, 1, 2)), "--out", tmp_path / "merged", "--no-plot")
    single = (tmp_path / "single/results.npz").read_bytes()
    assert (tmp_path / "workers/results.npz").read_bytes() == single
    assert (tmp_path / "merged/results.npz").read_bytes() == single
    merged = json.loads(phasediag("merge", *(tmp_path / f"shard{k}" for k in (1, 2, 3)), "--out",
                                  tmp_path / "merged2", "--no-plot", "--json").stdout)
    single_info = json.loads(phasediag("run", config, "--out", tmp_path / "single2", "--no-plot", "--json").stdout)
    assert merged["counts"] == single_info["counts"] and sum(merged["counts"]["phase"].values()) == 9 * 7 * 2
    bad = phasediag("merge", tmp_path / "shard1", tmp_path / "shard2", "--out", tmp_path / "m2", check=False)
    assert bad.returncode == 2 and "missing [3]" in bad.stderr and "Traceback" not in bad.stderr
    plot_shard = phasediag("plot", tmp_path / "shard1", check=False)
    assert plot_shard.returncode == 2 and "merge" in plot_shard.stderr


def test_plot_and_export_from_saved_results(config, tmp_path):
    out = tmp_path / "out"
    phasediag("run", config, "--out", out, "--no-plot")
    assert not list(out.glob("*.png"))
    paths = json.loads(phasediag("plot", out, "--formats", "png,svg", "--json").stdout)
    assert any(p.endswith(".svg") for p in paths) and all(Path(p).is_file() for p in paths)
    written = json.loads(phasediag("export", out, "--csv", "--json").stdout)
    with open(written[0]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 * 7 * 2
    data = arrays(out)
    legend = json.loads((out / "meta.json").read_text())["legends"]["phase"]
    i, j, k = 4, 2, 1
    row = rows[(i * 7 + j) * 2 + k]
    assert float(row["d"]) == data["d"][i] and float(row["s"]) == data["s"][j] and int(row["seed"]) == k
    assert row["phase"] == legend[data["phase"][i, j, k]]
    assert float(row["ntk_change"]) == data["ntk_change"][i, j, k]


@pytest.mark.parametrize(
    "edit,expected",
    [
        (("lr_w: 1", "lr_w: 1 - s"), "model.lr_w (line 10): '1 - s' must be > 0, got 0 at d=1, s=1"),
        (("lr_w: 1", "lr_ww: 1"), "model.lr_ww (line 10): unknown key (did you mean 'lr_w'?)"),
        (("{log: [1, 1e4, 9]}", "{log: [1, 1e4, 9]"), "line 5: broken YAML"),
    ],
)
def test_bad_config_exit_2_one_line_nothing_written(tmp_path, edit, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.replace(*edit))
    proc = phasediag("run", path, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--shard", "0/3"], ["--shard", "4/3"], ["--shard", "x"], ["--workers", "0"]])
def test_bad_options_exit_2(config, tmp_path, args):
    proc = phasediag("run", config, *args, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_missing_results_directory_exit_2(tmp_path):
    for command in (["plot", tmp_path / "nothing"], ["export", tmp_path / "nothing", "--csv"]):
        proc = phasediag(*command, check=False)
        assert proc.returncode == 2 and "no complete results" in proc.stderr


def recorded(out: Path) -> int:
    """How many chunks the checkpoint record of a run in `out` lists as finished."""
    count = 0
    for record in out.glob(".partial-*/chunks"):
        try:
            count += len(record.read_text().splitlines()[1:])
        except OSError:
            pass
    return count


def test_killed_run_leaves_no_results_and_resume_finishes_identically(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(CONFIG.replace("{log: [1, 1e4, 9]}", "{log: [1, 1e4, 1000]}")
                   .replace("{log: [1e-6, 1, 7]}", "{log: [1e-6, 1, 500]}"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "phasediag", "run", big, "--out", out, "--no-plot",
                             "--chunk-size", "10000", "--checkpoint-every", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and recorded(out) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = recorded(out)
    assert done_before >= 3, "the run should have finished some chunks before the kill"
    assert not (out / "results.npz").exists() and not (out / "meta.json").exists()
    phasediag("run", big, "--out", out, "--no-plot", "--chunk-size", "10000", "--resume")
    assert not list(out.glob(".partial-*"))
    phasediag("run", big, "--out", tmp_path / "fresh", "--no-plot", "--chunk-size", "10000")
    assert (out / "results.npz").read_bytes() == (tmp_path / "fresh/results.npz").read_bytes()
    again = json.loads(phasediag("run", big, "--out", out, "--resume", "--json").stdout)
    assert again["status"] == "up to date"


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig, code, message, group", [(signal.SIGINT, 130, "Interrupted", False),
                                                       (signal.SIGTERM, 143, "Terminated", False),
                                                       (signal.SIGTERM, 143, "Terminated", True)])
def test_an_interrupted_parallel_run_cleans_up_and_resumes_identically(sig, code, message, group, tmp_path):
    """group: the signal goes to every process of the job at once, workers first (as `timeout`, SLURM or
    systemd send it): the workers ignore it, the run still ends with the parent's cleanup and 143."""
    big = tmp_path / "big.yaml"
    big.write_text(CONFIG.replace("{log: [1, 1e4, 9]}", "{log: [1, 1e4, 1000]}")
                   .replace("{log: [1e-6, 1, 7]}", "{log: [1e-6, 1, 500]}"))
    out = tmp_path / "out"
    run = ["run", big, "--out", out, "--no-plot", "--chunk-size", "5000", "--workers", "2"]
    # Ctrl-C as on a terminal, even when the tests run in a background job (whose SIGINT is ignored)
    proc = subprocess.Popen([sys.executable, "-m", "phasediag", *run, "--checkpoint-every", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=group,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and recorded(out) < 3:
        time.sleep(0.02)
    workers = children_of(proc.pid)
    for pid in workers if group else []:
        os.kill(pid, sig)
    if group:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err.strip().endswith(message), err
    assert len(workers) == 2, "the run should have been evaluating on its two worker processes"
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # killed and reaped, not even zombies
    assert not (out / "results.npz").exists() and not [p for p in out.rglob("*") if ".tmp" in p.name]
    phasediag(*run, "--resume")
    phasediag("run", big, "--out", tmp_path / "fresh", "--no-plot")
    assert (out / "results.npz").read_bytes() == (tmp_path / "fresh/results.npz").read_bytes()


def test_results_load_round_trip(config, tmp_path):
    phasediag("run", config, "--out", tmp_path / "o", "--no-plot")
    r = results.load(tmp_path / "o")
    assert r.axes == ["d", "s", "seed"] and set(r.coords) == {"d", "s", "seed"}
    assert r.arrays["tau"].shape == (9, 7, 2) and not r.is_shard


def test_a_grid_too_large_for_memory_is_refused_at_once(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(CONFIG.replace("{log: [1, 1e4, 9]}", "{log: [1, 1e4, 100000]}")
                    .replace("{log: [1e-6, 1, 7]}", "{log: [1e-6, 1, 100000]}"))
    proc = phasediag("run", path, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2 and "--shard K/N" in proc.stderr and "GB of result arrays" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_metrics_key_stores_only_the_chosen_metrics_and_the_plotted_maps(tmp_path):
    path = tmp_path / "few.yaml"
    path.write_text(CONFIG + "metrics: [ntk_change, alignment_final]\nplot: {x: d, y: s, maps: [phase]}\n")
    phasediag("run", path, "--out", tmp_path / "few")
    data = arrays(tmp_path / "few")
    assert set(data) == {"d", "s", "seed", "phase", "ntk_change", "alignment_final"}
    full = tmp_path / "all.yaml"
    full.write_text(CONFIG)
    phasediag("run", full, "--out", tmp_path / "all", "--no-plot")
    every = arrays(tmp_path / "all")
    for name in ("phase", "ntk_change", "alignment_final"):
        assert np.array_equal(data[name], every[name])  # a subset changes no number
    assert sorted(p.name for p in (tmp_path / "few").glob("*.png")) == ["small__phase__s_vs_d.png"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG + "metrics: [ntk_chnage]\n")
    proc = phasediag("run", bad, "--out", tmp_path / "bad", check=False)
    assert proc.returncode == 2 and "metrics[0] (line 15)" in proc.stderr and "did you mean 'ntk_change'" in proc.stderr


def test_values_beyond_the_supported_range_are_bad_input_naming_the_point(tmp_path):
    path = tmp_path / "extreme.yaml"
    path.write_text(CONFIG.replace("teacher: 1}", "teacher: 1e300}"))
    proc = phasediag("run", path, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "model/data: floating-point overflow" in proc.stderr and "at d=" in proc.stderr
    assert "closed form supports (d <= 1e15" in proc.stderr and not (tmp_path / "o" / "results.npz").exists()


def test_rerun_removes_its_earlier_figures_and_no_plot_leaves_none(config, tmp_path):
    out = tmp_path / "out"
    phasediag("run", config, "--out", out)
    first = set(json.loads((out / "meta.json").read_text())["figures"])
    assert first and all((out / f).is_file() for f in first)
    (out / "notes.txt").write_text("mine")
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(CONFIG + "plot: {maps: [phase]}\n")
    phasediag("run", fewer, "--out", out)
    second = set(json.loads((out / "meta.json").read_text())["figures"])
    assert second < first and set(p.name for p in out.glob("*.png")) == second
    phasediag("run", fewer, "--out", out, "--no-plot")
    assert not list(out.glob("*.png")) and (out / "notes.txt").read_text() == "mine"


def test_out_under_a_regular_file_is_a_one_line_error(config, tmp_path):
    (tmp_path / "file").write_text("")
    proc = phasediag("run", config, "--out", tmp_path / "file" / "out", "--no-plot", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stderr == f"Error: --out: {tmp_path / 'file'} is a file, not a directory\n"
