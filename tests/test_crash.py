"""Crash safety of a run directory, end to end through the command line (every command in a subprocess).

Kills at random points (SIGKILL, SIGTERM, SIGINT) of run, plot, merge and export; two writers racing on one
directory, a writer racing with readers; a real full disk (a 1 MiB tmpfs, as root); a lock left by a killed
writer; a staged commit left by a writer killed after its commit point (rolled forward by the next reader or
writer). After every interruption the directory holds the previous complete result or the new one, never a
mix; the next command finishes the job with a results.npz byte-identical to an uninterrupted run into a fresh
directory; and nothing is left over (no staging folder, lock, checkpoints, temporary files; meta.json lists
exactly the directory's files, and its manifest verifies).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import phasediag
from phasediag.errors import ResultsError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals, flock, /proc, tmpfs")

ROOT = Path(__file__).resolve().parent.parent
BASE = (ROOT / "configs" / "1_width_vs_init.yaml").read_text()
D_AXIS, S_AXIS = "{log: [1, 1e6, 121]}", "{log: [1e-8, 1, 121]}"
MAPS = "maps: [phase, ntk_change, alignment_final, tau]"
ENV = {**{k: v for k, v in os.environ.items() if k != "PHASEDIAG_DEBUG"}, "MPLBACKEND": "Agg"}
KILL, TERM, INT = signal.SIGKILL, signal.SIGTERM, signal.SIGINT
#: what a command stopped by a signal exits with, and the one line it prints (SIGKILL: none)
STOPPED = {TERM: (143, "Terminated"), INT: (130, "Interrupted"), KILL: (-9, "")}
BUSY = re.compile(r"Error: \S+: another phasediag process( \(pid \d+\))? is writing this run directory; .*")
NO_SPACE = "No space left on device"
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.\w+)?|.*\.tmp\b.*")

#: the uninterrupted sweep runs: (d values, s values, figures drawn)
CONFIGS = {
    "A": (30, 20, None),       # the "previous result" of a directory
    "B": (300, 200, None),     # 60,000 points, 60 chunks of 1000: the run that is killed
    "P": (40, 30, "phase"),    # drawn: plot, export and run-while-drawing are killed
    "W1": (40, 30, None), "W2": (30, 45, None),     # racing writers
    "R1": (150, 100, None), "R2": (100, 160, None),  # a writer re-writing a directory while readers read
}
SWEEP = ("--no-plot", "-q", "--chunk-size", "1000", "--checkpoint-every", "0")


def config_text(nd: int, ns: int, maps: str | None = None) -> str:
    assert D_AXIS in BASE and S_AXIS in BASE and MAPS in BASE, "configs/1_width_vs_init.yaml changed its axes"
    text = BASE.replace(D_AXIS, f"{{log: [1, 1e6, {nd}]}}").replace(S_AXIS, f"{{log: [1e-8, 1, {ns}]}}")
    return text.replace(MAPS, f"maps: [{maps}]") if maps else text


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "phasediag", *map(str, args)]


def pd(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, env=ENV, timeout=timeout)


def ok(*args) -> subprocess.CompletedProcess:
    """`phasediag args`, which must succeed silently on stderr."""
    proc = pd(*args)
    assert (proc.returncode, proc.stderr) == (0, ""), (args, proc.returncode, proc.stderr)
    return proc


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_entry(path: Path) -> dict:
    data = Path(path).read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@dataclass
class Ref:
    """An uninterrupted run into a fresh directory: its arrays, results.npz bytes and how long it took."""

    dir: Path
    seconds: float
    arrays: dict
    coords: dict
    config_hash: str
    npz: str  # SHA-256 of results.npz
    figures: list

    @classmethod
    def of(cls, directory: Path, seconds: float) -> "Ref":
        result = phasediag.load(directory)
        return cls(directory, seconds, dict(result.arrays), dict(result.coords), result.meta["config_hash"],
                   sha(directory / "results.npz"), list(result.meta.get("figures") or []))

    def matches(self, result) -> bool:
        def same(a: dict, b: dict) -> bool:  # bit for bit (NaN too): dtype, shape and bytes
            return set(a) == set(b) and all(
                np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.shape(a[k]) == np.shape(b[k])
                and np.ascontiguousarray(a[k]).tobytes() == np.ascontiguousarray(b[k]).tobytes() for k in a)

        return (result.meta.get("config_hash") == self.config_hash and same(dict(result.arrays), self.arrays)
                and same(dict(result.coords), self.coords))


class Refs:
    """The configs and their reference runs, each computed once, when first needed (so its duration is
    measured on its own)."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.Lock()
        self.done: dict[str, Ref] = {}
        for name, (nd, ns, maps) in CONFIGS.items():
            (root / f"{name}.yaml").write_text(config_text(nd, ns, maps))

    def config(self, name: str) -> Path:
        return self.root / f"{name}.yaml"

    def args(self, name: str, out: Path) -> list:
        """The run command of config `name` (drawn configs draw their figures)."""
        flags = SWEEP if CONFIGS[name][2] is None else SWEEP[1:]
        return ["run", self.config(name), "--out", out, *flags]

    def prepare(self, *names: str) -> None:
        """Compute these references at once, side by side (for references whose durations are not used)."""
        with self.lock:
            todo = [n for n in names if n not in self.done]
            procs = [subprocess.Popen(cli(*self.args(n, self.root / "ref" / n)), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, env=ENV) for n in todo]
            errs = [proc.communicate(timeout=180)[1] for proc in procs]
            for n, proc, err in zip(todo, procs, errs):
                assert (proc.returncode, err) == (0, ""), (n, proc.returncode, err)
                self.done[n] = Ref.of(self.root / "ref" / n, float("nan"))
                assert_clean(self.root / "ref" / n)

    def __getitem__(self, name: str) -> Ref:
        with self.lock:
            if name not in self.done:
                out = self.root / "ref" / name
                started = time.monotonic()
                ok(*self.args(name, out))
                self.done[name] = Ref.of(out, time.monotonic() - started)
                assert_clean(out)
            return self.done[name]


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> Refs:
    return Refs(tmp_path_factory.mktemp("crash-refs"))


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def leftovers(directory: Path) -> list[str]:
    return [n for n in listing(directory) if n in (".phasediag.txn", ".phasediag.lock")
            or n.startswith(".partial-") or TEMPORARY.fullmatch(n)]


def assert_clean(directory: Path) -> None:
    """No leftovers; meta.json lists exactly the directory's files, with their true sizes and SHA-256."""
    assert leftovers(directory) == [], listing(directory)
    meta = json.loads((directory / "meta.json").read_text())
    assert sorted(meta["files"]) == listing(directory)
    assert {n: file_entry(directory / n) for n in meta["manifest"]} == meta["manifest"]
    assert sorted(meta["manifest"]) == sorted(set(meta["files"]) - {"meta.json"})


def state_of(directory: Path, candidates: dict[str, Ref]) -> str | None:
    """Which reference `phasediag.load(directory)` equals bit for bit (None: a clean ResultsError, no result);
    anything else (a mix, another exception) fails the test."""
    try:
        result = phasediag.load(directory)
    except ResultsError:
        return None
    found = [name for name, ref in candidates.items() if ref.matches(result)]
    assert found, f"{directory}: the loaded result is none of {sorted(candidates)} (a mix?): {listing(directory)}"
    return found[0]


def interrupt(args, sig, delay: float, trigger=None) -> tuple[int, str]:
    """Start `phasediag args`; once `trigger()` holds (if given; polled every 2 ms), wait `delay` seconds and
    send `sig` (unless it has finished). Returns its exit status and stderr."""
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while trigger is not None and proc.poll() is None and not trigger() and time.monotonic() < deadline:
            time.sleep(0.002)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def check_stopped(rc: int, err: str, sig, directory: Path | None = None) -> bool:
    """A command stopped by `sig` exits with its status and one line, or finished first (0, nothing); True
    if it was stopped. Stopped by SIGTERM or SIGINT it cleans up after itself: no lock, staging folder or
    temporary file is left in its run `directory` (its checkpoints are kept, for --resume). (A signal in the
    last moments of a finished command, after the interpreter restored the default handlers, ends it by that
    signal with nothing printed: the shell's status is 128 + sig too.)"""
    assert "Traceback" not in err and "internal error" not in err, err
    if rc == 0:
        assert err == "", err
        return False
    code, line = STOPPED[sig]
    assert (rc, err.strip()) in ((code, line), (-sig, "")), (sig.name, rc, err)
    if rc == code and sig != KILL and directory is not None and directory.exists():
        left = [n for n in leftovers(directory) if not n.startswith(".partial-")]
        assert left == [], f"{sig.name}: the stopped command left {left}"
    return True


def kill_plan(seed: int, seconds: float, kills: int, triggers=(), stops=(TERM, INT)) -> list[tuple]:
    """(signal, delay, trigger name): `kills` SIGKILLs at random points over [0.05, 1.05] x the measured
    duration, a SIGKILL a random moment (up to its delay, in seconds) after each (trigger, delay), and the
    signals `stops` at random points after the lock is taken."""
    rng = random.Random(seed)
    plan = [(KILL, rng.uniform(0.05, 1.05) * seconds, None) for _ in range(kills)]
    plan += [(KILL, rng.uniform(0.0, most), name) for name, most in triggers]
    plan += [(sig, rng.uniform(0.0, 0.5) * seconds, "lock") for sig in stops]
    return plan


def triggers(directory: Path) -> dict:
    return {
        None: None,
        "lock": lambda: (directory / ".phasediag.lock").exists(),
        "chunk": lambda: bool(recorded_chunks(directory)),
        "staging": lambda: (directory / ".phasediag.txn").exists(),
        "committed": lambda: (directory / ".phasediag.txn" / "COMMITTED").exists(),
    }


def recorded_chunks(directory: Path) -> list[str]:
    """The chunks the checkpoint record of a run in `directory` lists as finished (its lines after the header)."""
    lines = []
    for record in directory.glob(".partial-*/chunks"):
        with contextlib.suppress(OSError):
            lines += record.read_text().splitlines()[1:]
    return lines


def each_kill(plan, check) -> None:
    """check(i, sig, delay, trigger) for every kill of `plan`; every failing one is reported, not the first."""
    problems = []
    for i, (sig, delay, trigger) in enumerate(plan):
        try:
            check(i, sig, delay, trigger)
        except AssertionError as exc:
            where = f"kill {i}: {sig.name} {delay:.3f} s after {trigger or 'the start'}"
            problems.append(f"{where}: {' '.join(str(exc).split())[:600]}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------ 1. kills

def test_killed_run_leaves_old_or_new_result_and_resume_is_byte_identical(refs, tmp_path):
    """`run B` into a directory holding A (or nothing), killed at random points of the evaluation, the save
    and the commit; then `run B --resume` (at another chunk size, or with 2 workers) finishes it."""
    a, b = refs["A"], refs["B"]
    plan = kill_plan(101, b.seconds, kills=4, triggers=[("chunk", 0.03), ("staging", 0.03), ("committed", 0.01)])
    resumes = [("--chunk-size", "1000"), ("--chunk-size", "700"), ("--workers", "2", "--chunk-size", "1000"),
               ("--chunk-size", "1500")]
    corrupted = []

    def check(i, sig, delay, trigger):
        out = tmp_path / f"run{i}"
        previous = i % 2 == 0
        if previous:
            shutil.copytree(a.dir, out)
        rc, err = interrupt(refs.args("B", out), sig, delay, triggers(out)[trigger])
        check_stopped(rc, err, sig, out)
        state = state_of(out, {"A": a, "B": b})
        assert state in ({"A", "B"} if previous else {None, "B"}), f"after the kill: {state}"
        streamed = sorted(out.glob(".partial-*/results.npz"))
        warn = state != "B" and streamed and recorded_chunks(out) and not corrupted
        if warn:  # a corrupt checkpoint: one warning, its points computed again
            streamed[0].write_bytes(streamed[0].read_bytes()[:100])
            corrupted.append(i)
        proc = pd(*refs.args("B", out)[:-4], "--resume", *resumes[i % len(resumes)])
        assert proc.returncode == 0, f"--resume: exit {proc.returncode}: {proc.stderr}"
        if warn:
            assert re.fullmatch(r"Warning: checkpoint \S+results\.npz: .*; its points are computed again\n",
                                proc.stderr), proc.stderr
        else:
            assert proc.stderr == "", proc.stderr
        assert sha(out / "results.npz") == b.npz, "--resume: results.npz differs from the uninterrupted run's"
        assert_clean(out)

    each_kill(plan, check)
    assert corrupted, "no kill left a checkpoint to corrupt"


def test_killed_run_while_drawing_leaves_old_or_new_result_and_resume_draws(refs, tmp_path):
    """`run P` (the data, then the figures) into a directory holding A, killed at random points (and while it
    draws, after its data are committed); `--resume` ends with the result and figures of an uninterrupted run."""
    a, p = refs["A"], refs["P"]

    def check(i, sig, delay, trigger):
        out = tmp_path / f"draw{i}"
        shutil.copytree(a.dir, out)
        rc, err = interrupt(refs.args("P", out), sig, delay, triggers(out)[trigger])
        check_stopped(rc, err, sig, out)
        assert state_of(out, {"A": a, "P": p}) in {"A", "P"}
        ok(*refs.args("P", out), "--resume")
        assert sha(out / "results.npz") == p.npz
        assert json.loads((out / "meta.json").read_text())["figures"] == p.figures
        assert_clean(out)

    each_kill(kill_plan(202, p.seconds, kills=2, triggers=[("committed", 0.5 * p.seconds)], stops=[TERM]), check)


def test_killed_plot_keeps_the_result_and_a_replot_finishes(refs, tmp_path):
    p = refs["P"]
    figures = {n: sha(p.dir / n) for n in p.figures}  # (a figure is drawn the same bytes every time)

    def check(i, sig, delay, trigger):
        out = tmp_path / f"plot{i}"
        shutil.copytree(p.dir, out)
        rc, err = interrupt(["plot", out, "-q"], sig, delay, triggers(out)[trigger])
        check_stopped(rc, err, sig, out)
        assert state_of(out, {"P": p}) == "P"
        ok("plot", out, "-q")
        assert sha(out / "results.npz") == p.npz
        meta = json.loads((out / "meta.json").read_text())
        assert meta["figures"] == p.figures and {n: sha(out / n) for n in p.figures} == figures
        assert_clean(out)

    # (a plot takes about as long as the run that drew the figures first: most of it is drawing them)
    each_kill(kill_plan(303, p.seconds, kills=3, triggers=[("staging", 0.03)], stops=[INT]), check)


def test_killed_merge_leaves_old_or_new_result_and_a_new_merge_is_byte_identical(refs, tmp_path):
    a, b = refs["A"], refs["B"]
    shards = [tmp_path / "shards" / f"{k}" for k in (1, 2)]
    for k, shard in enumerate(shards, 1):
        ok("run", refs.config("B"), "--out", shard, "--shard", f"{k}/2", *SWEEP)
    before = [sha(s / "results.npz") for s in shards]
    started = time.monotonic()
    ok("merge", *shards, "--out", tmp_path / "merged", "--no-plot", "-q")
    seconds = time.monotonic() - started
    assert sha(tmp_path / "merged" / "results.npz") == b.npz  # sharded == unsharded, bit for bit

    def check(i, sig, delay, trigger):
        out = tmp_path / f"merge{i}"
        previous = i % 2 == 0
        if previous:
            shutil.copytree(a.dir, out)
        rc, err = interrupt(["merge", *shards, "--out", out, "--no-plot", "-q"], sig, delay,
                            triggers(out)[trigger])
        check_stopped(rc, err, sig, out)
        if out.exists():
            assert state_of(out, {"A": a, "B": b}) in ({"A", "B"} if previous else {None, "B"})
        ok("merge", *shards, "--out", out, "--no-plot", "-q")
        assert sha(out / "results.npz") == b.npz
        assert_clean(out)

    each_kill(kill_plan(404, seconds, kills=3, triggers=[("staging", 0.03)]), check)
    assert [sha(s / "results.npz") for s in shards] == before
    for shard in shards:
        assert_clean(shard)


def test_killed_export_keeps_the_result_and_a_new_export_is_identical(refs, tmp_path):
    p = refs["P"]
    measured = tmp_path / "measured"
    shutil.copytree(p.dir, measured)
    started = time.monotonic()
    ok("export", measured, "--csv", "-q")
    seconds = time.monotonic() - started
    table = "width_vs_init.csv"
    csv = sha(measured / table)
    assert_clean(measured)

    def inside(i, sig, delay, trigger):
        out = tmp_path / f"export{i}"
        shutil.copytree(p.dir, out)
        rc, err = interrupt(["export", out, "--csv", "-q"], sig, delay, triggers(out)[trigger])
        check_stopped(rc, err, sig, out)
        assert state_of(out, {"P": p}) == "P"
        meta = json.loads((out / "meta.json").read_text())
        if table in meta["files"]:  # committed: the complete table
            assert sha(out / table) == csv
        ok("export", out, "--csv", "-q")
        assert sha(out / "results.npz") == p.npz and sha(out / table) == csv
        assert_clean(out)

    def elsewhere(i, sig, delay, trigger):  # a table outside the run directory: there or not, complete
        folder = tmp_path / f"elsewhere{i}"
        folder.mkdir()
        writing = None if trigger is None else (lambda: bool(os.listdir(folder)))  # (no lock: it only reads)
        rc, err = interrupt(["export", p.dir, "--csv", "--out", folder / "t.csv", "-q"], sig, delay, writing)
        check_stopped(rc, err, sig)
        # (SIGKILL may leave the temporary file of the table: outside a run directory nobody owns it)
        left = [n for n in listing(folder) if n != "t.csv" and not (sig == KILL and TEMPORARY.fullmatch(n))]
        assert left == [], listing(folder)
        if (folder / "t.csv").exists():
            assert sha(folder / "t.csv") == csv

    each_kill(kill_plan(505, seconds, kills=3, triggers=[("staging", 0.03)]), inside)
    each_kill(kill_plan(506, seconds, kills=2, stops=[TERM]), elsewhere)
    assert_clean(p.dir)


# ------------------------------------------------------------------------------------------------ 2. races

def test_two_writers_racing_on_one_directory(refs, tmp_path):
    refs.prepare("W1", "W2")
    w = {"W1": refs["W1"], "W2": refs["W2"]}
    # a directory whose lock is held: status 75 at once, one line, nothing changed
    held = tmp_path / "held"
    shutil.copytree(w["W1"].dir, held)
    fd = os.open(held / ".phasediag.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        proc = pd(*refs.args("W2", held))
        assert proc.returncode == 75 and BUSY.fullmatch(proc.stderr.rstrip("\n")), proc.stderr
        assert proc.stderr.count("\n") == 1 and f"(pid {os.getpid()})" in proc.stderr
        for command in (["plot", held, "-q"], ["export", held, "--csv", "-q"]):
            proc = pd(*command)
            assert proc.returncode == 75 and BUSY.fullmatch(proc.stderr.rstrip("\n")), (command, proc.stderr)
        assert state_of(held, w) == "W1" and listing(held) == [".phasediag.lock", "meta.json", "results.npz"]
    finally:
        os.close(fd)
    for i in range(8):
        out = tmp_path / f"race{i}"
        names = ["W1", "W2"] if i % 2 else ["W2", "W1"]
        procs = [subprocess.Popen(cli(*refs.args(n, out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, env=ENV) for n in names]
        ended, deadline = {}, time.monotonic() + 120
        try:
            while len(ended) < 2 and time.monotonic() < deadline:
                for n, proc in zip(names, procs):
                    if n not in ended and proc.poll() is not None:
                        ended[n] = time.monotonic()
                time.sleep(0.002)
        finally:
            for proc in procs:
                if proc.poll() is None and len(ended) < 2:
                    proc.kill()
            errs = [proc.communicate(timeout=60)[1] for proc in procs]
        codes = {n: proc.returncode for n, proc in zip(names, procs)}
        assert sorted(codes.values()) in ([0, 0], [0, 75]), (codes, errs)
        for n, err in zip(names, errs):
            assert "Traceback" not in err
            if codes[n] == 75:
                assert BUSY.fullmatch(err.rstrip("\n")) and err.count("\n") == 1, err
                winner = next(m for m in names if m != n)
                assert ended[n] <= ended[winner] + 0.5  # at once: it did not wait for the winner
            else:
                assert err == ""
        final = state_of(out, w)
        if 75 in codes.values():
            assert final == next(n for n in names if codes[n] == 0), (codes, ended)
        else:  # one after the other: the result of the one that wrote last (clear when they ended apart)
            assert final in w
            if abs(ended["W1"] - ended["W2"]) > 0.3:
                assert final == max(ended, key=ended.get), (codes, ended)
        assert_clean(out)


def test_readers_never_see_a_mix_while_a_writer_rewrites(refs, tmp_path):
    refs.prepare("R1", "R2")
    r = {"R1": refs["R1"], "R2": refs["R2"]}
    tables = {}
    for name, ref in r.items():
        ok("export", ref.dir, "--csv", "--out", tmp_path / f"{name}.csv", "-q")
        tables[sha(tmp_path / f"{name}.csv")] = name
    out = tmp_path / "shared"
    shutil.copytree(r["R1"].dir, out)
    stop = threading.Event()
    seen, exported, problems = [], [], []

    def load_loop():
        while not stop.is_set():
            try:
                seen.append(state_of(out, r))
                time.sleep(0.01)
            except BaseException as exc:  # noqa: BLE001 - reported below
                problems.append(f"load: {type(exc).__name__}: {exc}")
                return

    def export_loop():
        k = 0
        while not stop.is_set():
            target = tmp_path / f"x{k}.csv"
            proc = pd("export", out, "--csv", "--out", target, "-q")
            if proc.returncode == 0 and proc.stderr == "":
                exported.append(tables.get(sha(target)))
            else:  # (even a clean error is wrong: the directory holds a complete result all along)
                problems.append(f"export: exit {proc.returncode}: {proc.stderr}")
            k += 1

    threads = [threading.Thread(target=load_loop), threading.Thread(target=export_loop)]
    for t in threads:
        t.start()
    try:
        for name in ["R2", "R1", "R2"]:
            ok(*refs.args(name, out))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert problems == []
    assert seen and set(seen) <= {"R1", "R2"}, set(seen)  # (None: a clean error, wrong here too)
    assert exported and None not in exported, exported
    assert state_of(out, r) == "R2"
    assert_clean(out)


# ------------------------------------------------------------------------------------------------ 3. full disk

@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(name, options) -> a new tmpfs at tmp_path/name (root only; skips with the reason if it
    cannot be mounted), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("needs mount and umount to mount a tmpfs")
    mounted = []

    def mount(name: str, options: str) -> Path:
        mnt = tmp_path / name
        mnt.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip() or f'mount exited {proc.returncode}'}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in reversed(mounted):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def tmpfs(mount_tmpfs):
    """A 1 MiB tmpfs."""
    return mount_tmpfs("tmpfs", "size=1m")


def fill(mnt: Path, leave: int) -> Path:
    """Fill the file system of `mnt` until at most `leave` bytes are free."""
    filler = mnt / f"filler{len(list(mnt.glob('filler*')))}"
    with open(filler, "wb") as fh:
        try:
            while shutil.disk_usage(mnt).free > leave:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_fails_cleanly_and_keeps_the_previous_result(tmpfs, tmp_path):
    (tmp_path / "small.yaml").write_text(config_text(20, 15))
    (tmp_path / "big.yaml").write_text(config_text(100, 80))  # results.npz ~1.3 MB: does not fit in 1 MiB
    (tmp_path / "fits.yaml").write_text(config_text(60, 40))  # ~0.35 MB: fits, until the disk fills up
    ok("run", tmp_path / "small.yaml", "--out", tmp_path / "small", "--no-plot", "-q")
    small = Ref.of(tmp_path / "small", 0.0)
    out = tmpfs / "D"
    ok("run", tmp_path / "small.yaml", "--out", out, "--no-plot", "-q")
    assert sha(out / "results.npz") == small.npz
    used = shutil.disk_usage(tmpfs).used
    problems = []

    def expect(what, proc, path):
        want = f"Error: cannot read or write {path}: {NO_SPACE}\n"
        if (proc.returncode, proc.stderr) != (1, want):
            problems.append(f"{what}: exit {proc.returncode}, stderr {proc.stderr!r}; expected 1, {want!r}")

    def still_small(what):
        if state_of(out, {"small": small}) != "small":
            problems.append(f"{what}: the previous result does not load")
        if leftovers(out):
            problems.append(f"{what}: leftovers {leftovers(out)}")
        meta = json.loads((out / "meta.json").read_text())
        if sorted(meta["files"]) != listing(out):
            problems.append(f"{what}: meta.json lists {meta['files']}, the directory holds {listing(out)}")

    # a run whose results do not fit: refused before any work, from the free space
    proc = pd("run", tmp_path / "big.yaml", "--out", out, "--no-plot", "-q")
    if proc.returncode != 2 or "GB of result arrays on disk" not in proc.stderr or proc.stderr.count("\n") != 1:
        problems.append(f"run big: exit {proc.returncode}, stderr {proc.stderr!r}; expected the refusal")
    still_small("run big")
    if shutil.disk_usage(tmpfs).used > used + 8192:
        problems.append(f"run big: {shutil.disk_usage(tmpfs).used - used} bytes still taken after it failed")
    # ... and one whose disk fills while it runs (another job writing), with checkpoints: a re-run of the small
    # config frees their space
    filler = []

    def fill_once_started():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(out.glob(".partial-*/results.npz")):
            time.sleep(0.001)
        filler.append(fill(tmpfs, leave=0))

    thief = threading.Thread(target=fill_once_started)
    thief.start()
    # (48 chunks, each made durable: the evaluation outlasts the filling, so the disk fills while it writes)
    proc = pd("run", tmp_path / "fits.yaml", "--out", out, "--no-plot", "-q", "--chunk-size", "50",
              "--checkpoint-every", "0")
    thief.join()
    for path in filler:
        path.unlink()
    # (the message names the run directory, or the file in it being written: which one depends on where the disk
    # filled up, in a checkpoint or at the commit's first step; never a temporary or staging name)
    if proc.returncode != 1 or not re.fullmatch(rf"Error: cannot read or write {re.escape(str(out))}(/[a-z_]+\.[a-z]+)?"
                                                rf": {NO_SPACE}\n", proc.stderr):
        problems.append(f"run big with checkpoints: exit {proc.returncode}, stderr {proc.stderr!r}")
    assert state_of(out, {"small": small}) == "small"
    again = pd("run", tmp_path / "small.yaml", "--out", out, "--no-plot", "-q", "--resume")
    assert (again.returncode, again.stderr) == (0, ""), again.stderr
    assert state_of(out, {"small": small}) == "small"
    if leftovers(out):
        problems.append(f"run small --resume (up to date): leftovers {leftovers(out)}")
    fresh = pd("run", tmp_path / "small.yaml", "--out", out, "--no-plot", "-q")
    assert (fresh.returncode, fresh.stderr) == (0, ""), fresh.stderr
    assert sha(out / "results.npz") == small.npz
    still_small("re-run small")
    if shutil.disk_usage(tmpfs).used > used + 8192:
        problems.append(f"re-run small: {shutil.disk_usage(tmpfs).used - used} bytes still taken by leftovers")
    # an export into a disk with too little room for the table; into one with no room at all
    meta_before = (out / "meta.json").read_bytes()
    filler = fill(tmpfs, leave=16384)
    expect("export", pd("export", out, "--csv", "-q"), out / "width_vs_init.csv")
    still_small("export")
    expect("export --out", pd("export", out, "--csv", "--out", tmpfs / "x.csv", "-q"), tmpfs / "x.csv")
    if listing(tmpfs) != ["D", filler.name]:
        problems.append(f"export --out: left {listing(tmpfs)}")
    fill(tmpfs, leave=0)
    proc = pd("export", out, "--csv", "-q")
    if proc.returncode != 1 or not re.fullmatch(rf"Error: cannot read or write {re.escape(str(out))}"
                                                rf"(/width_vs_init\.csv)?: {NO_SPACE}\n",  # (no room for the lock)
                                                proc.stderr):
        problems.append(f"export into a full disk: exit {proc.returncode}, stderr {proc.stderr!r}")
    still_small("export into a full disk")
    if (out / "meta.json").read_bytes() != meta_before:
        problems.append("a failed export changed meta.json")
    for name in listing(tmpfs):
        if name.startswith("filler"):
            (tmpfs / name).unlink()
    ok("export", out, "--csv", "-q")  # room again: it works
    assert_clean(out)
    assert not problems, "\n".join(problems)


def test_out_of_inodes_fails_cleanly_naming_a_final_path(mount_tmpfs, tmp_path):
    """A file system with room for the data but not for one more file (tmpfs nr_inodes=N, each N in turn: the
    run fails at each file it creates in turn): exit 1, one line naming a file of the run directory as the user
    knows it (meta.json, results.npz, the lock), never a staging folder or a temporary file; the previous result
    intact and nothing left but, when the commit failed, the computed results kept for --resume."""
    (tmp_path / "small.yaml").write_text(config_text(20, 15))
    (tmp_path / "big.yaml").write_text(config_text(100, 80))
    ok("run", tmp_path / "small.yaml", "--out", tmp_path / "small", "--no-plot", "-q")
    small = Ref.of(tmp_path / "small", 0.0)
    counts = range(4, 11)
    outs = []
    for n in counts:
        out = mount_tmpfs(f"inodes{n}", f"size=4m,nr_inodes={n}") / "D"
        shutil.copytree(small.dir, out)
        outs.append(out)
    procs = [subprocess.Popen(cli("run", tmp_path / "big.yaml", "--out", out, "--no-plot", "-q"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV) for out in outs]
    errs = [proc.communicate(timeout=180)[1] for proc in procs]
    problems, failed = [], 0
    for n, out, proc, err in zip(counts, outs, procs, errs):
        if proc.returncode == 0:
            assert err == "" and json.loads((out / "meta.json").read_text())["grid_points"] == 8000
            assert_clean(out)
            continue
        failed += 1
        match = re.fullmatch(rf"Error: cannot read or write (\S+): {NO_SPACE}\n", err)
        named = Path(match.group(1)) if match else None
        if proc.returncode != 1 or named is None or not (
                named == out or named.parent == out and named.name in ("meta.json", "results.npz", ".phasediag.lock")):
            problems.append(f"nr_inodes={n}: exit {proc.returncode}, {err!r}")
        # a run that fails after its results are computed (at the commit) keeps them for --resume: its checkpoint
        # folder holds the finished results.npz, with every chunk recorded
        kept = [n for n in leftovers(out) if n.startswith(".partial-") and (out / n / "results.npz").is_file()
                and sum(int(b) - int(a) for a, b, *_ in (line.split() for line in recorded_chunks(out))) == 8000]
        if state_of(out, {"small": small}) != "small" or set(leftovers(out)) - set(kept) or \
                sorted(json.loads((out / "meta.json").read_text())["files"]) != sorted(set(listing(out)) - set(kept)):
            problems.append(f"nr_inodes={n}: the previous result is not intact and alone: {listing(out)} "
                            f"{[listing(out / k) for k in leftovers(out) if k.startswith('.partial-')]}")
    assert failed >= 3, "too few file creations failed: the test no longer covers the commit"
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------ 4. stale state

CRASHING = '''\
"""phasediag's command line, killed (SIGKILL, by itself) at one point of a commit (PHASEDIAG_TEST_CRASH_AT)."""
import os, signal, sys
from pathlib import Path
from phasediag.results import rundir

def die():
    os.kill(os.getpid(), signal.SIGKILL)

AT = os.environ["PHASEDIAG_TEST_CRASH_AT"]
if AT == "roll-forward":  # past the commit point: the data moved into place, meta.json not yet
    real_replace = os.replace
    def replace(src, dst, *args, **kwargs):
        if Path(src).parent.name == rundir.STAGING and Path(dst).parent.name != rundir.STAGING \\
                and Path(dst).name == "meta.json":
            die()
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
elif AT == "after-commit":  # the first commit of the run is complete, nothing after it is done
    real_commit = rundir.Transaction.commit
    def commit(self, *args, **kwargs):
        real_commit(self, *args, **kwargs)
        die()
    rundir.Transaction.commit = commit
from phasediag.cli import main
main(sys.argv[1:])
'''


def crash(tmp_path: Path, at: str, *args) -> subprocess.CompletedProcess:
    script = tmp_path / "crashing.py"
    script.write_text(CRASHING)
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env={**ENV, "PHASEDIAG_TEST_CRASH_AT": at}, timeout=180)


def test_a_lock_left_by_a_killed_writer_does_not_block_the_next(refs, tmp_path):
    a, b = refs["A"], refs["B"]
    out = tmp_path / "out"
    for _ in range(5):  # (until the kill lands while it holds the lock)
        rc, _ = interrupt(refs.args("B", out), KILL, 0.0, triggers(out)["chunk"])
        if rc == -9 and (out / ".phasediag.lock").exists():
            break
    assert (out / ".phasediag.lock").exists() and list(out.glob(".partial-*"))
    started = time.monotonic()
    ok(*refs.args("A", out))  # not 75; the killed run's checkpoints (another config) are removed
    assert time.monotonic() - started < 60
    assert state_of(out, {"A": a, "B": b}) == "A"
    assert_clean(out)


@pytest.mark.parametrize("how", ["killed writer", "copied staging folder"])
def test_a_committed_staging_folder_is_rolled_forward_by_the_next_reader(refs, tmp_path, how):
    a, b = refs["A"], refs["B"]
    out = tmp_path / "out"
    shutil.copytree(a.dir, out)
    if how == "killed writer":
        proc = crash(tmp_path, "roll-forward", "run", refs.config("B"), "--out", out, "--no-plot", "-q")
        assert proc.returncode == -9, proc.stderr
    else:
        staging = out / ".phasediag.txn"
        staging.mkdir()
        (staging / ".phasediag-staging").write_bytes(b"")  # (the mark of a staging folder the tool made)
        shutil.copy(b.dir / "results.npz", out / "results.npz")  # moved already
        shutil.copy(b.dir / "meta.json", staging / "meta.json")
        (staging / "previous.json").write_text(json.dumps({"manifest": json.loads(
            (a.dir / "meta.json").read_text())["manifest"]}))
        (staging / "COMMITTED").write_text("{}\n")
    # on disk a mix: A's meta.json over B's data; the commit is pending
    assert (out / ".phasediag.txn" / "COMMITTED").is_file() and sha(out / "results.npz") == b.npz
    assert json.loads((out / "meta.json").read_text())["config_hash"] == a.config_hash
    assert state_of(out, {"A": a, "B": b}) == "B"
    assert_clean(out)


def test_a_committed_staging_folder_is_rolled_forward_by_the_next_writer(refs, tmp_path):
    a, b = refs["A"], refs["B"]
    out = tmp_path / "out"
    shutil.copytree(a.dir, out)
    proc = crash(tmp_path, "roll-forward", "run", refs.config("B"), "--out", out, "--no-plot", "-q")
    assert proc.returncode == -9, proc.stderr
    assert (out / ".phasediag.txn" / "COMMITTED").is_file() and (out / ".phasediag.lock").exists()
    proc = ok("run", refs.config("B"), "--out", out, "--no-plot", "--resume")
    assert "up to date" in proc.stdout
    assert sha(out / "results.npz") == b.npz and state_of(out, {"A": a, "B": b}) == "B"
    assert_clean(out)


def test_a_run_killed_right_after_its_commit_leaves_nothing_behind_after_resume(refs, tmp_path):
    """Killed right after its data are committed, before it removed its checkpoints (a temporary file of an
    earlier killed write lying there too): `--resume` finds the run up to date, and must still remove what the
    killed runs left, as any run does."""
    a, b = refs["A"], refs["B"]
    out = tmp_path / "out"
    shutil.copytree(a.dir, out)
    proc = crash(tmp_path, "after-commit", *refs.args("B", out))
    assert proc.returncode == -9, proc.stderr
    assert state_of(out, {"A": a, "B": b}) == "B"
    (out / ".results.npz.k2j4h6g8.tmp.npz").write_bytes(b"PK")  # and a temporary file a killed write left
    ok(*refs.args("B", out), "--resume")
    assert sha(out / "results.npz") == b.npz
    assert_clean(out)


def test_ctrl_c_prints_one_line_even_when_a_half_built_object_fails_in_its_finalizer():
    """Ctrl-C can catch an object half-built (matplotlib's mathtext grammar: a pyparsing Forward without its
    `expr`), whose finalizer then fails as the process ends; the user still sees only 'Interrupted'."""
    script = (
        "import sys, click\n"
        "from phasediag import cli\n"
        "class HalfBuilt:\n"
        "    def __del__(self):\n"
        "        self.expr is None  # AttributeError, as in pyparsing's Forward.__del__\n"
        "@cli.phasediag.command('boom')\n"
        "def boom():\n"
        "    sys.modules['__main__'].kept = HalfBuilt()\n"
        "    raise KeyboardInterrupt\n"
        "cli.main(['boom'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130
    assert done.stderr.split() == ["Interrupted"]


FINALIZER_PROBE = """
import os, signal, sys, time
from phasediag.cli import phasediag

class Closing:
    def __del__(self):  # a finalizer (like ZipFile's) that the signal arrives in
        os.kill(os.getpid(), signal.{sig})
        time.sleep(0.05)
        print("finalizer done", flush=True)

@phasediag.command()
def probe():
    obj = Closing()
    del obj
    time.sleep(0.5)
    print("survived the signal", flush=True)

phasediag.main(["probe"])
"""


# a weakref callback (like matplotlib's): not a __del__ frame, so the handler raises in it and Python drops it
WEAKREF_PROBE = FINALIZER_PROBE.replace("""class Closing:
    def __del__(self):""", """import weakref

class Closing:
    pass

def closed(_ref):""").replace("    del obj\n", "    ref = weakref.ref(obj, closed)\n    del obj\n")


@pytest.mark.parametrize("probe", [FINALIZER_PROBE, WEAKREF_PROBE], ids=["__del__", "weakref"])
@pytest.mark.parametrize("sig, code, message", [("SIGTERM", 143, "Terminated"), ("SIGINT", 130, "Interrupted")])
def test_a_signal_that_arrives_inside_a_finalizer_is_not_lost(probe, sig, code, message):
    """Python drops an exception raised inside __del__ or a weakref callback ("Exception ignored in ..."): a
    SIGTERM or Ctrl-C whose handler ran there used to vanish and the run went on to exit 0 (seen in CI: a
    ZipFile closed by the garbage collector), or print a traceback (a matplotlib weakref callback). The signal
    takes effect as soon as a __del__ has returned (a weakref callback is cut short: there is no telling that
    the handler runs inside one), and only its one line is printed."""
    assert probe.count("closed") in (0, 2) and probe.count("ref = weakref.ref") == (probe != FINALIZER_PROBE)
    proc = subprocess.run([sys.executable, "-c", probe.replace("{sig}", sig)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert ("finalizer done" in proc.stdout) == (probe == FINALIZER_PROBE) and "survived" not in proc.stdout
    assert proc.stderr.strip().splitlines() == [message], proc.stderr


# ------------------------------------------------------------------------- shards sharing one result

def shared(refs, k: int, n: int, out: Path, *extra) -> list:
    return ["run", refs.config("B"), "--shard", f"{k}/{n}", "--shared", "--out", out, *SWEEP, *extra]


def test_shards_writing_into_one_shared_result_commit_it_byte_identical(refs, tmp_path):
    """Four shards run at once (other chunk sizes, 2 workers) into one folder: the last to finish commits a
    results.npz byte-identical to the single run's; a shard run again afterwards finds it up to date."""
    b = refs["B"]
    out = tmp_path / "shared"
    extras = [(), ("--chunk-size", "700"), ("--workers", "2"), ("--chunk-size", "1500")]
    procs = [subprocess.Popen(cli(*shared(refs, k, 4, out, *extras[k - 1])), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=ENV) for k in (3, 1, 4, 2)]
    results = [(proc.communicate(timeout=180)[1], proc.returncode)[::-1] for proc in procs]
    assert results == [(0, "")] * 4, results
    assert sha(out / "results.npz") == b.npz
    assert_clean(out)
    again = pd(*shared(refs, 2, 4, out)[:-len(SWEEP)], "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "up to date", again.stdout


def test_a_killed_shard_runs_again_and_an_unsharded_resume_finishes_what_shards_left(refs, tmp_path):
    """Shard 1 of 3 killed at random points and run again; shard 3 never runs: `run --resume` without
    --shard finishes and commits the result, byte-identical and clean (that it takes the shards' recorded
    chunks from the file: tests/test_sweep.py)."""
    b = refs["B"]
    rng = random.Random(7)
    for i in range(3):
        out = tmp_path / f"run{i}"
        proc = pd(*shared(refs, 2, 3, out))
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
        assert "40,000 of 60,000" not in proc.stdout and not (out / "results.npz").exists()
        rc, err = interrupt(shared(refs, 1, 3, out), KILL, rng.uniform(0.05, 0.8) * b.seconds / 3)
        check_stopped(rc, err, KILL)
        if rc == 0:
            continue
        done = pd(*shared(refs, 1, 3, out), "--json")
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert json.loads(done.stdout)["points_done"] == 40_000, done.stdout
        folder = next(out.glob(".partial-*"))
        before = {p.name for p in folder.iterdir()}
        assert before == {"results.npz", "chunks-0001-of-0003", "chunks-0002-of-0003"}, before
        finish = pd("run", refs.config("B"), "--out", out, *SWEEP, "--resume", "--json")
        assert (finish.returncode, finish.stderr) == (0, ""), finish.stderr
        assert sha(out / "results.npz") == b.npz
        assert_clean(out)


def test_shared_shards_and_writers_exclude_each_other(refs, tmp_path):
    """A writer (a plain run) fails at once while a shard writes into the directory, and a shard while a
    writer holds it: exit status 75, one line; neither disturbs the other's work."""
    out = tmp_path / "busy"
    lock = out / ".phasediag.lock"
    out.mkdir()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # as a shard holds it
        proc = pd(*refs.args("B", out))
        assert proc.returncode == 75 and BUSY.fullmatch(proc.stderr.strip()) or \
            re.fullmatch(r"Error: \S+: a phasediag process is writing this run directory; .*", proc.stderr.strip()), \
            (proc.returncode, proc.stderr)
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer holds it
        proc = pd(*shared(refs, 1, 2, out))
        assert proc.returncode == 75 and proc.stderr.count("\n") == 1 and "is writing this run directory" in \
            proc.stderr, (proc.returncode, proc.stderr)
    finally:
        os.close(fd)
    assert sorted(os.listdir(out)) == [".phasediag.lock"]  # (nothing computed, nothing written)


def test_a_shared_result_that_does_not_check_out_is_refused_not_replaced(refs, tmp_path):
    out = tmp_path / "bad"
    proc = pd(*shared(refs, 1, 2, out))
    assert proc.returncode == 0, proc.stderr
    data = next(out.glob(".partial-*/results.npz"))
    os.truncate(data, data.stat().st_size - 1)
    size = data.stat().st_size
    proc = pd(*shared(refs, 2, 2, out))
    assert proc.returncode == 2 and re.fullmatch(
        r"Error: shared result \S+results\.npz: it is not the size this run's results have; remove \S+ to "
        r"start again\n", proc.stderr), proc.stderr
    assert data.stat().st_size == size  # left as it was: another shard may be writing it


@pytest.mark.parametrize("args, option", [(["--shared"], "--shared"),
                                          (["--shared", "--shard", "1/2"], None)])
def test_shared_needs_a_shard_and_a_sweep(refs, tmp_path, args, option):
    if option:  # a sweep without --shard
        proc = pd("run", refs.config("B"), "--out", tmp_path / "x", *SWEEP, *args)
        assert proc.returncode == 2 and proc.stderr.startswith("Error: --shared: needs --shard K/N"), proc.stderr
    else:  # a study has no shards sharing one result
        study = ROOT / "configs" / "11_gd_vs_sgd.yaml"
        proc = pd("run", study, "--out", tmp_path / "x", "--no-plot", *args)
        assert proc.returncode == 2 and "--shard" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "x").exists()
