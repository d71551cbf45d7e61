"""Sweep engine: grid values against direct core calls, determinism across chunks/shards/workers, storage."""

import os
import textwrap
import time

import numpy as np
import pytest

from phasediag import core
from phasediag.results import store as results
from phasediag.engine import sweep
from phasediag.config.sweep import ConfigError, config_from_text
from phasediag.results import npz, stream

GRID = """\
name: grid
sweep:
  d: {log: [1, 1e6, 13]}
  s: {log: [1e-6, 1, 9]}
model:
  width: d
  output_scale: 1 / sqrt(d)
  lr_u: 2
  lr_w: 0.5
  init_var_u: s
  init_var_w: 3 * s
data: {input_var: 1.5, teacher: -2}
"""


def load(text):
    return config_from_text(textwrap.dedent(text))


def assert_same(a, b):
    assert a.arrays.keys() == b.arrays.keys()
    for name in a.arrays:
        assert a.arrays[name].dtype == b.arrays[name].dtype
        assert np.array_equal(a.arrays[name], b.arrays[name], equal_nan=False), name


def direct_point(d, s, gram=None):
    """The same point built by hand from the config's formulas."""
    gram = gram or core.typical_gram(round(d), s, 3 * s)
    return core.invariants(core.Problem(1 / np.sqrt(d), 2.0, 0.5, 1.5, -2.0, gram))


def test_grid_values_equal_direct_core_calls():
    config = load(GRID)
    r = sweep.run(config)
    assert r.arrays["phase"].shape == (13, 9) and r.arrays["phase"].dtype == np.int8
    d_values, s_values = r.coords["d"], r.coords["s"]
    for i, j in [(0, 0), (3, 8), (12, 4), (7, 2)]:
        inv = direct_point(d_values[i], s_values[j])
        op = core.order_parameters(inv)
        assert r.arrays["ntk_change"][i, j] == op.ntk_change
        assert r.arrays["alignment_final"][i, j] == op.alignment_final
        assert r.arrays["tau"][i, j] == core.relaxation_time(inv)
        assert r.arrays["t_learn"][i, j] == core.t_learn(inv)
        assert r.arrays["phase"][i, j] == core.classify(inv)
        assert r.arrays["ntk_final"][i, j] == core.flow_state(inv, np.inf).ntk


def test_results_do_not_depend_on_chunking_workers_or_shards(tmp_path):
    config = load(GRID + "init: {seeds: 3, seed: 5}\n")
    whole = sweep.run(config)
    assert whole.arrays["phase"].shape == (13, 9, 3)
    assert_same(whole, sweep.run(config, chunk_size=7))
    assert_same(whole, sweep.run(config, chunk_size=10, workers=2))
    parts = [sweep.run(config, chunk_size=11, shard=sweep.Shard(k, 4)) for k in (3, 1, 4, 2)]
    for k, part in enumerate(parts):
        results.save(part, tmp_path / f"s{k}")
    merged = results.merge([results.load(tmp_path / f"s{k}") for k in range(4)])
    assert_same(whole, merged)
    results.save(whole, tmp_path / "a")
    results.save(sweep.run(config, chunk_size=5), tmp_path / "b")
    assert (tmp_path / "a/results.npz").read_bytes() == (tmp_path / "b/results.npz").read_bytes()


def test_result_memory_kind_changes_no_bit(monkeypatch):
    """Huge-page, pre-faulted and shared result mappings hold the same values."""
    config = load(GRID + "init: {seeds: 2, seed: 5}\n")
    huge = sweep.run(config)
    monkeypatch.setattr(sweep, "HUGE_PAGE_RESULTS", 0)  # every result pre-faulted (or worker-faulted) instead
    assert_same(huge, sweep.run(config, chunk_size=13))
    assert_same(huge, sweep.run(config, chunk_size=13, workers=2))
    assert all(a.flags.writeable and a.flags.c_contiguous for a in huge.arrays.values())


def test_sampled_points_use_the_flat_index_stream():
    config = load(GRID + "init: {seeds: 2, seed: 9}\n")
    r = sweep.run(config)
    flat = np.ravel_multi_index((4, 6, 1), config.shape)
    d, s = r.coords["d"][4], r.coords["s"][6]
    gram = core.sample_gram(round(d), s, 3 * s, seed=9, index=flat)
    assert r.arrays["gram_U"][4, 6, 1] == gram.U and r.arrays["gram_V"][4, 6, 1] == gram.V
    assert r.arrays["ntk_change"][4, 6, 1] == core.ntk_change(direct_point(d, s, gram))


def test_merge_rejects_incomplete_or_mixed_shards(tmp_path):
    config = load(GRID)
    for k in (1, 2, 3):
        results.save(sweep.run(config, shard=sweep.Shard(k, 3)), tmp_path / f"s{k}")
    shards = [results.load(tmp_path / f"s{k}") for k in (1, 2, 3)]
    with pytest.raises(results.ResultsError, match="missing"):
        results.merge(shards[:2])
    other = load(GRID.replace("teacher: -2", "teacher: 2"))
    results.save(sweep.run(other, shard=sweep.Shard(3, 3)), tmp_path / "x")
    with pytest.raises(results.ResultsError, match="different configs"):
        results.merge(shards[:2] + [results.load(tmp_path / "x")])


def test_trajectories_and_gd():
    config = load(GRID.replace("{log: [1, 1e6, 13]}", "{values: [10, 1000]}") +
                  "train: {times: {log: [0.01, 100, 5]}}\n")
    r = sweep.run(config)
    assert r.arrays["traj_m"].shape == (2, 9, 5)
    inv = direct_point(1000.0, r.coords["s"][3])
    expected = core.flow_state(core.with_time_axis(inv), r.coords["time"])
    assert np.array_equal(r.arrays["traj_ntk"][1, 3], expected.ntk)
    gd = load(GRID.replace("lr_u: 2", "lr_u: 0.1").replace("lr_w: 0.5", "lr_w: 0.1").replace("1e6, 13", "1e3, 13") +
              "train: {optimizer: gd, times: {values: [0, 10, 100]}}\n")
    r = sweep.run(gd, chunk_size=17)
    assert set(np.unique(r.arrays["gd_outcome"])) <= set(range(len(core.GD_OUTCOMES)))
    assert r.arrays["traj_m"].shape == (13, 9, 3)
    assert_same(r, sweep.run(gd, chunk_size=50))


def test_out_of_range_values_name_the_key_line_and_point():
    bad = load(GRID.replace("lr_w: 0.5", "lr_w: 1 - s"))
    with pytest.raises(ConfigError, match=r"model.lr_w \(line 9\): '1 - s' must be > 0, got 0 at d=1, s=1"):
        sweep.validate(bad)
    bad = load(GRID.replace("width: d", "width: d - 1"))
    with pytest.raises(ConfigError, match=r"model.width \(line 6\).*whole number in \[1, 2\^53\], got 0 at d=1"):
        sweep.validate(bad)
    bad = load(GRID + "init: {gram: [1, 1, s + 1]}\n")
    with pytest.raises(ConfigError, match=r"init.gram\[2\].*V\^2 <= U W"):
        sweep.validate(bad)
    bad = load(GRID.replace("output_scale: 1 / sqrt(d)", "output_scale: 1 / (d - 1)"))
    with pytest.raises(ConfigError, match=r"model.output_scale \(line 7\).*not finite"):
        sweep.validate(bad)


def recorded(folder):
    """The flat ranges the checkpoint record of `folder` lists as finished."""
    lines = (folder / stream.RECORD).read_text().splitlines()[1:]
    return [tuple(int(x) for x in line.split()[:2]) for line in lines]


def overwrite_rows(folder, name, lo, values):
    """Write `values` into rows lo.. of array `name` of the results.npz a run streamed into `folder`."""
    layout = npz.Layout([(n, a.shape, a.dtype) for n, a in npz.open_arrays(folder / stream.DATA).items()])
    fd = os.open(folder / stream.DATA, os.O_RDWR)
    try:
        npz.write_rows(fd, layout.members[name], lo, values)
    finally:
        os.close(fd)


def test_results_stream_into_one_file_that_is_its_own_checkpoint(tmp_path):
    config = load(GRID)
    first = sweep.run(config, chunk_size=20, checkpoint=tmp_path, checkpoint_every=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks", "results.npz"]
    assert recorded(tmp_path) == [(lo, min(lo + 20, 117)) for lo in range(0, 117, 20)]  # ceil(117 / 20) chunks
    assert first.data_file == tmp_path / "results.npz" and isinstance(first.arrays["tau"], np.memmap)
    assert_same(sweep.run(config), first)
    with np.load(tmp_path / "results.npz") as data:  # an ordinary .npz, CRCs included
        assert np.array_equal(data["tau"], first.arrays["tau"]) and list(data["d"]) == list(first.coords["d"])
    # recorded chunks are taken from the file, not computed again, once their rows check out against the
    # record's CRC-32s; a chunk whose rows do not (damaged: poisoned values) is computed again
    first_tau = np.array(first.arrays["tau"])
    overwrite_rows(tmp_path, "tau", 0, np.full(20, 123.0))
    computed = []
    again = sweep.run(config, chunk_size=20, checkpoint=tmp_path, checkpoint_every=0, progress=computed.append)
    assert computed == [97, 20]  # (the points taken from the file, then the one chunk computed)
    assert np.array_equal(again.arrays["tau"], first_tau)


@pytest.mark.parametrize("tamper, problem", [
    ("other config", "computed for another config or range"),
    ("garbage record", "record of finished chunks is missing or unreadable"),
    ("truncated", "not the size"),
    ("no data", "unreadable"),
    ("other arrays", "not the ones this run stores"),
])
def test_a_checkpoint_that_does_not_verify_is_computed_again_with_one_warning(tmp_path, tamper, problem):
    import json

    config = load(GRID)
    sweep.run(config, chunk_size=20, checkpoint=tmp_path, checkpoint_every=0)
    data, record = tmp_path / stream.DATA, tmp_path / stream.RECORD
    overwrite_rows(tmp_path, "tau", 0, np.full(20, 123.0))  # must not come back: the file is not trusted
    if tamper == "other config":
        lines = record.read_text().splitlines()
        header = json.loads(lines[0])
        record.write_text("\n".join([json.dumps({**header, "config_hash": "0123456789abcdef"})] + lines[1:]) + "\n")
    elif tamper == "no record":
        record.unlink()
    elif tamper == "garbage record":
        record.write_bytes(b"\xff\xfe not json\n0 20\n")
    elif tamper == "truncated":
        os.truncate(data, data.stat().st_size - 1)
    elif tamper == "no data":
        data.unlink()
    else:  # the same size, but another array where tau was: another metric list
        raw = bytearray(data.read_bytes())
        at = raw.index(b"tau.npy")
        raw[at:at + 3] = b"tav"
        data.write_bytes(bytes(raw))
    warned = []
    again = sweep.run(config, chunk_size=20, checkpoint=tmp_path, checkpoint_every=1e9, warn=warned.append)
    assert_same(sweep.run(config), again)  # every point computed, none taken from the file
    assert len(warned) == 1 and str(data) in warned[0] and problem in warned[0], warned
    warned.clear()
    sweep.run(config, chunk_size=20, checkpoint=tmp_path, warn=warned.append)
    assert warned == []  # replaced by a good file: the next resume does not warn again


@pytest.mark.parametrize("state", ["data only", "empty record", "header only, data cut short",
                                   "header only, no data", "torn header"])
def test_a_checkpoint_that_claims_no_chunk_is_replaced_without_a_warning(tmp_path, state):
    """What a kill while the checkpoint is being created leaves: nothing is lost, so nothing is said."""
    config = load(GRID)
    whole = sweep.run(config, chunk_size=20)
    sweep.run(config, chunk_size=20, checkpoint=tmp_path, checkpoint_every=0)
    data, record = tmp_path / stream.DATA, tmp_path / stream.RECORD
    header = record.read_text().splitlines()[0]
    overwrite_rows(tmp_path, "tau", 0, np.full(117, 7.0))  # must not come back: no chunk is claimed
    if state == "data only":
        record.unlink()
    elif state == "empty record":
        record.write_text("")
    elif state == "torn header":
        record.write_text(header[:9])
        data.unlink()
    else:
        record.write_text(header + "\n")
        if state.endswith("no data"):
            data.unlink()
        else:
            os.truncate(data, 100)
    warned = []
    again = sweep.run(config, chunk_size=20, checkpoint=tmp_path, warn=warned.append)
    assert warned == []
    assert_same(whole, again)  # every point computed again


def test_a_record_line_cut_short_or_out_of_range_is_not_trusted(tmp_path):
    config = load(GRID)
    whole = sweep.run(config, chunk_size=20)
    sweep.run(config, chunk_size=20, checkpoint=tmp_path, checkpoint_every=0)
    record = tmp_path / stream.RECORD
    header, *lines = record.read_text().splitlines()
    line = {tuple(int(x) for x in text.split()[:2]): text for text in lines}
    crcs = line[(0, 20)].split()[2]
    record.write_text("\n".join([header, line[(0, 20)], line[(60, 80)], line[(20, 40)], f"100 900 {crcs}",
                                 line[(40, 60)][:-3]]))  # (a kill while appending the last)
    reused = []
    again = sweep.run(config, chunk_size=20, checkpoint=tmp_path, progress=reused.append)
    assert reused[0] == 60 and sum(reused) == 117  # three recorded chunks taken, the rest computed
    assert_same(again, whole)


def test_checkpoints_are_batched_by_time(tmp_path, monkeypatch):
    config = load(GRID)
    syncs = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd) or real(fd))
    sweep.run(config, chunk_size=20, checkpoint=tmp_path, checkpoint_every=1e9)
    assert recorded(tmp_path) == [(lo, min(lo + 20, 117)) for lo in range(0, 117, 20)]
    few = len(syncs)  # the record's header, one batch of six chunks at the end, the finished file
    syncs.clear()
    sweep.run(config, chunk_size=20, checkpoint=tmp_path / "each", checkpoint_every=0)
    assert few <= 5 and len(syncs) >= few + 2 * 5  # data and record flushed for every chunk


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupted_run_keeps_its_finished_chunks_for_resume(stop, workers, tmp_path):
    config = load(GRID)
    done = []

    def interrupt_after_three(k: int) -> None:  # Ctrl-C (or SIGTERM's exit) arriving after three chunks
        done.append(k)
        if len(done) == 3:
            raise stop()

    with pytest.raises(stop):
        sweep.run(config, chunk_size=5, workers=workers, checkpoint=tmp_path, checkpoint_every=1e9,
                  progress=interrupt_after_three)
    assert recorded(tmp_path) == [(0, 5), (5, 10), (10, 15)]  # recorded, though no checkpoint was due yet
    reused = []
    again = sweep.run(config, chunk_size=5, checkpoint=tmp_path, progress=reused.append)
    assert reused[0] == 15 and sum(reused) == 117
    assert_same(sweep.run(config), again)


def test_a_worker_killed_mid_run_keeps_the_finished_chunks_for_resume(tmp_path, monkeypatch):
    import signal

    config = load(GRID)
    real = sweep.evaluate_chunk

    def oom_at_60(config, lo, hi):  # the kernel's OOM killer, say
        if lo == 60:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(config, lo, hi)

    monkeypatch.setattr(sweep, "evaluate_chunk", oom_at_60)
    with pytest.raises(RuntimeError, match="killed by signal 9"):
        sweep.run(config, chunk_size=5, workers=2, checkpoint=tmp_path, checkpoint_every=1e9)
    monkeypatch.setattr(sweep, "evaluate_chunk", real)
    kept = recorded(tmp_path)
    assert kept[:10] == [(lo, lo + 5) for lo in range(0, 50, 5)]  # the chunks before 50 had landed in order...
    assert not any(lo <= 60 < hi for lo, hi in kept)  # ...and never the one that was lost
    assert_same(sweep.run(config), sweep.run(config, chunk_size=5, checkpoint=tmp_path))


def test_gd_sweeps_with_divergence_are_chunking_invariant():
    # bundled config 7 at lower resolution: diverging points must not change when (or whether) other points
    # of the same chunk are checked or settled
    from pathlib import Path

    text = (Path(__file__).parents[1] / "configs/7_gd_lr_vs_width.yaml").read_text()
    config = load(text.replace("[0.05, 5, 121]", "[0.05, 5, 31]").replace("[1, 1e5, 101]", "[1, 1e5, 21]"))
    whole = sweep.run(config)
    outcomes = set(np.unique(whole.arrays["gd_outcome"]).tolist())
    assert core.GD_CODE["diverges"] in outcomes and core.GD_CODE["catapult"] in outcomes
    assert_same(whole, sweep.run(config, chunk_size=7))
    parallel = sweep.run(config, chunk_size=5, workers=3)
    assert_same(whole, parallel)
    assert parallel.meta["workers"] == 3 and parallel.meta["workers_requested"] == 3


def test_workers_never_exceed_the_chunks_and_an_error_stops_the_run(monkeypatch, tmp_path):
    config = load(GRID)
    one_chunk = sweep.run(config, workers=4)  # 117 points: one chunk
    assert one_chunk.meta["workers"] == 1 and one_chunk.meta["workers_requested"] == 4
    assert sweep.workers_for(2, 80) == 2 and sweep.workers_for(8, 3) == 3
    calls = tmp_path / "calls"  # appended to by every worker process
    real = sweep.evaluate_chunk

    def failing(config, lo, hi):
        with open(calls, "a") as f:
            f.write(f"{lo}\n")
        if lo in (20, 23):  # two failing chunks: the error is always the earlier one's
            raise ConfigError(f"model: bad value at the chunk starting at {lo}")
        if lo > 20:
            time.sleep(0.02)  # later chunks are slow: only cancelling them ends the run early
        return real(config, lo, hi)

    monkeypatch.setattr(sweep, "evaluate_chunk", failing)
    with pytest.raises(ConfigError, match="starting at 20"):
        sweep.run(config, chunk_size=1, workers=2)
    started = calls.read_text().split()
    assert "20" in started and len(started) < 40  # the remaining chunks were cancelled, not computed


@pytest.mark.parametrize("streamed", [False, True])
def test_workers_give_the_same_bits_in_memory_and_on_disk(streamed, tmp_path):
    config = load(GRID + "init: {seeds: 3, seed: 5}\ntrain: {times: {values: [0.5, 2, 8]}}\n")
    whole = sweep.run(config)
    parallel = sweep.run(config, chunk_size=9, workers=3, checkpoint=tmp_path if streamed else None)
    assert_same(whole, parallel)
    assert parallel.meta["worker_kind"] == "processes" and whole.meta["worker_kind"] == "serial"


@pytest.mark.parametrize("lo, hi", [(0, 1), (0, 234), (5, 6), (7, 61), (17, 18), (11, 233), (100, 234)])
def test_chunk_variables_equal_the_unravelled_indices(lo, hi):
    config = load(GRID + "init: {seeds: 2, seed: 9}\n")  # 13 x 9 grid and a seed axis of 2: 234 points
    assert config.shape == (13, 9, 2)
    fast = sweep.grid_variables(config, range(lo, hi))
    slow = sweep.grid_variables(config, np.arange(lo, hi))
    assert fast.keys() == slow.keys()
    for name in fast:
        np.testing.assert_array_equal(fast[name], slow[name])


GD_GRID = """\
name: gd_names
sweep:
  d: {values: [1, 3, 100]}
  eta: {log: [0.05, 3, 9]}
model: {width: d, output_scale: 1 / sqrt(d), init_var_u: 1, init_var_w: 1, lr_u: eta, lr_w: eta}
train: {optimizer: gd, max_steps: 600HORIZON}
"""
END_STATE = {"ntk_final": "ntk", "m_final": "m", "alignment_final": "alignment", "loss_final": "loss",
             "ntk_change": "ntk_change"}


@pytest.mark.parametrize("horizon", ["", ", horizon: 6"])
def test_a_gd_sweep_names_gd_values_as_solve_does_and_the_flow_values_flow_(horizon):
    """On a GD sweep ntk_change (and the other end-state metrics) are the GD run's, the very numbers
    `solve --optimizer gd` prints as final.*; the gradient flow's are flow_<name>, solve's final.flow_*."""
    from phasediag.config.hyperparameters import Hyperparameters
    from phasediag.engine.point import solve_point

    config = load(GD_GRID.replace("HORIZON", horizon))
    r = sweep.run(config)
    outcome = r.arrays["gd_outcome"]
    assert set(np.unique(outcome)) >= {core.GD_CODE["converges"], core.GD_CODE["catapult"], core.GD_CODE["diverges"]}
    for (i, d), (j, eta) in [(a, b) for a in enumerate(r.coords["d"]) for b in enumerate(r.coords["eta"])]:
        point = solve_point(Hyperparameters(width=int(d), output_scale=1 / np.sqrt(d), lr_u=eta, lr_w=eta,
                                            init_var_u=1.0, init_var_w=1.0),
                            optimizer="gd", horizon=config.horizon, gd_max_steps=600, times=[0])
        final = point["final"]
        for metric, key in END_STATE.items():
            assert r.arrays["flow_" + metric][i, j] == pytest.approx(final["flow_" + key], rel=1e-14, abs=1e-300)
            if final[key] is not None:  # (solve reports null past the divergence bound; the sweep a finite value)
                assert r.arrays[metric][i, j] == final[key], (metric, d, eta)
        diverged = outcome[i, j] == core.GD_CODE["diverges"]
        assert diverged == (final["ntk"] is None and final["ntk_change"] is None) or not horizon
        assert all(np.isfinite(r.arrays[m][i, j]) for m in END_STATE)
    # the GD and flow values differ where the steps are large (a catapult), not at a small learning rate
    catapult = outcome == core.GD_CODE["catapult"]
    assert np.all(np.abs(r.arrays["ntk_change"][catapult] - r.arrays["flow_ntk_change"][catapult]) > 0.05)
    assert np.allclose(r.arrays["ntk_change"][:, 0], r.arrays["flow_ntk_change"][:, 0], rtol=0.2) or horizon
    meta = r.meta["metrics"]
    assert "(GD)" in meta["ntk_change"]["label"] and "(gradient flow)" in meta["flow_ntk_change"]["label"]


def test_gd_end_state_metrics_follow_simulated_vector_gd():
    """The GD sweep's ntk_change at a catapult point against GD of the actual vectors (width 3)."""
    from phasediag.training import simulate

    config = load(GD_GRID.replace("HORIZON", ", horizon: 400"))
    r = sweep.run(config)
    i, j = 1, int(np.argmax(r.arrays["gd_outcome"][1] == core.GD_CODE["catapult"]))
    assert r.arrays["gd_outcome"][i, j] == core.GD_CODE["catapult"]
    d, eta = int(r.coords["d"][i]), float(r.coords["eta"][j])
    gram = sweep.model_values(config, np.array([np.ravel_multi_index((i, j), config.shape)]))[1].gram
    u0, w0 = np.zeros(d), np.zeros(d)
    u0[0] = np.sqrt(np.ravel(gram.U)[0])  # a typical Gram: U = W = d, V = 0 (orthogonal vectors)
    w0[1] = np.sqrt(np.ravel(gram.W)[0])
    trace = simulate.gd_vectors(u0, w0, output_scale=1 / np.sqrt(d), lr_u=eta, lr_w=eta, input_var=1.0,
                                teacher=1.0, steps=np.array([0, 400]))
    measured = trace.ntk[-1] / trace.ntk[0] - 1
    assert r.arrays["ntk_change"][i, j] == pytest.approx(measured, rel=1e-10)
    assert abs(r.arrays["flow_ntk_change"][i, j] - measured) > 0.05


def test_shards_write_into_one_file_whose_records_an_unsharded_run_reuses(tmp_path):
    config = load(GRID)
    whole = sweep.run(config, chunk_size=20)
    assert sweep.run_shared_shard(config, sweep.Shard(2, 3), tmp_path, chunk_size=7) == (39, 117)
    assert sweep.run_shared_shard(config, sweep.Shard(1, 3), tmp_path, chunk_size=20) == (78, 117)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks-0001-of-0003", "chunks-0002-of-0003",
                                                          "results.npz"]
    computed = []  # the shards' rows are taken from the file (checked against their CRC-32s), not computed
    again = sweep.run(config, chunk_size=13, checkpoint=tmp_path, progress=computed.append)  # (78 = 6 x 13)
    assert computed[0] == 78 and sum(computed) == 117
    assert_same(again, whole)
    # and a third shard after them gives the file the single run's values
    fresh = tmp_path / "fresh"
    for k in (3, 1, 2):
        done = sweep.run_shared_shard(config, sweep.Shard(k, 3), fresh, chunk_size=11, workers=2)
    assert done == (117, 117)
    assert_same(whole, sweep.run(config, checkpoint=fresh))
