"""Performance benchmark of phasediag: speed, cost growth and accuracy on one grid.

Everything runs on the bundled `configs/1_width_vs_init.yaml` (width d x initial variance sigma^2, kappa = 1,
eta_u = eta_w = 1, a = m* = 1, typical initialization) scaled to N = n x n points, in one run:

- the core: the sweep engine's chunked evaluation (`sweep.run(config, workers=1)`, all 20 stored metrics),
  best of k repeats, at N = 1e4, 1e5, 1e6 and 1e7 -- final state (horizon inf), final state at T = 10, and
  trajectories (8 log-spaced times up to T = 10, besides the metrics at T = 10; rate = (point, time) pairs/s);
  the same with `workers=2`;
- a naive numpy pass: the textbook formulas of docs/theory.md sections 4-6 (z(t) Riccati form, m = alpha0/z - beta0 z,
  Theta = 2c sqrt(m^2 + g^2), ...) over the whole grid at once, with no accuracy care; its speed, and its
  accuracy against the exact solution over the whole 1000 x 1000 grid (NaN/inf, points off by > 1e-6, phase
  labels that differ);
- the core itself against the mpmath reference of tests/reference.py on a random sample of grid points;
- scipy `solve_ivp` (LSODA with the Jacobian, rtol 1e-10) on the reduced 1-D ODE
  dm/dt = -2c sqrt(m^2 + g^2) (a m - b), on a sample; t = inf is integrated to t_learn + 40 tau;
- explicit GD of the actual vectors at width 1000 (the Euler scheme of the flow: both rates times h with
  a Theta_max h = 0.01, at most 100,000 steps), on a sample, to T = 10;
- whole processes (`python -m phasediag ...`, each in a fresh child whose peak RSS is read with getrusage):
  `run --no-plot` of the 1000 x 1000 sweep against the naive pass in a fresh process, `run` with the default
  figures, `--workers 1` vs `2` on the 1e7 sweep (results.npz compared byte for byte), the 1e7 sweep's peak
  memory against its result arrays, `--help` / `solve` start-up, and `merge` of 100 `--shard` parts.

It writes a markdown report (default docs/benchmarks.md), a figure of time against grid size (default
docs/figures/benchmark_time_vs_size.png) and, with --json, prints every number. All other files live in a
temporary directory. Inputs are deterministic (fixed grid, sample seed 0); timings are best-of-k wall times.

    python benchmarks/bench.py              # the full run (~6 min on 2 cores), writes the two outputs
    python benchmarks/bench.py --quick      # smoke run (< 1 min): smaller sizes and samples
    python benchmarks/bench.py --json --out /tmp/b.md --figure /tmp/b.png

Needs the test extra (scipy, mpmath, matplotlib).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs" / "1_width_vs_init.yaml"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
DEFAULT_FIGURE = ROOT / "docs" / "figures" / "benchmark_time_vs_size.png"

TARGET_FLOOR_RATIO = 2.0  # issue 16: evaluation within 2x of writing its bytes into fresh memory
TRAJ_TIMES = 8          # trajectory variant: times log-spaced in [0.01, 10]
FINITE_T = 10.0         # the finite horizon (steps)
GD_WIDTH = 1000
GD_STEP = 0.01          # a Theta_max h of the explicit GD (Euler) simulation
REL_BAD = 1e-6          # "off by more than" threshold of the accuracy counts

# the issue's targets
# Every target is a ratio against a reference measured in the same run (issue 16): the absolute figures of
# one machine are examples only. The earlier absolute targets (1e7 final-state points/s per core, 5e6 at a
# finite horizon, 300 ms start-up) became these ratios on the machine they were set on.
TARGET_NAIVE_RATIO = 1.0          # final-state evaluation (exact) no slower than the naive pass (not exact)
TARGET_HORIZON_RATIO = 2.0        # a finite horizon, per point or per (point, time): within 2x of t = inf
TARGET_RUN_RATIO = 3.0            # whole `run --no-plot` vs a naive pass in one process
TARGET_STARTUP_RATIO = 3.0        # start-up vs a bare `python -c "import numpy"` (the floor of any numpy CLI)
TARGET_GD_FLOW_RATIO = 5.0        # "exact GD maps cost about what flow maps cost": within 5x on the same grid
TARGET_MEM_EXTRA = 400e6          # peak <= 2 x result arrays + 400 MB
TARGET_EFFICIENCY = 0.85          # "near-linear": >= 85 % of the speed-up this machine gives independent work
MERGE_TIME_RATIO = 2.0            # merge of 100 shards vs one `run --no-plot` of the grid (our criterion)
MERGE_MEM_EXTRA = 200e6           # merge streams one array at a time: peak <= result arrays + 200 MB

MODES = {
    "full": dict(sizes=(100, 316, 1000, 3162), repeats=5, big_repeats=5, traj_max=1000, accuracy_n=1000,
                 ref_points=200, tlearn_points=40, ivp_points=200, gd_points=50, gd_max_steps=100_000,
                 gd_map_n=1000, gd_map_repeats=2, boundary_n=1000, boundary_seeds_n=200,
                 proc_n=1000, proc_repeats=3, big_n=3162, big_proc_repeats=2, startup_runs=7, shard_n=1000),
    "quick": dict(sizes=(100, 316, 1000), repeats=2, big_repeats=1, traj_max=316, accuracy_n=1000,
                  ref_points=20, tlearn_points=5, ivp_points=20, gd_points=8, gd_max_steps=20_000,
                  gd_map_n=316, gd_map_repeats=1, boundary_n=316, boundary_seeds_n=100,
                  proc_n=1000, proc_repeats=1, big_n=1000, big_proc_repeats=1, startup_runs=3, shard_n=316),
}


# ----------------------------------------------------------------------------------------------------------
# configs

def config_text(n: int, horizon: float = math.inf, times: int | None = None) -> str:
    """The bundled config 1 on an n x n grid, horizon `horizon`, optionally `times` log-spaced times to it."""
    text = BASE_CONFIG.read_text()
    if text.count("121]") != 2:
        raise RuntimeError(f"{BASE_CONFIG}: expected two '121]' grid counts to scale")
    text = text.replace("121]", f"{n}]")
    hz = "inf" if math.isinf(horizon) else f"{horizon:g}"
    train = f"train: {{horizon: {hz}, optimizer: flow"
    if times:
        train += f", times: {{log: [0.01, {hz}, {times}]}}"
    text, count = re.subn(r"^train:.*$", train + "}", text, flags=re.M)
    if count != 1:
        raise RuntimeError(f"{BASE_CONFIG}: expected one 'train:' line")
    return text


def make_config(n: int, horizon: float = math.inf, times: int | None = None):
    from phasediag.config.sweep import config_from_text

    return config_from_text(config_text(n, horizon, times), source=f"bench n={n}")


# ----------------------------------------------------------------------------------------------------------
# the naive numpy pass (numpy only: it also runs in a fresh process that imports nothing else)

def naive_pass(d, s, horizon=math.inf, kappa=1.0, lr_u=1.0, lr_w=1.0, a=1.0, m_star=1.0,
               ntk_threshold=0.1, alignment_threshold=0.1) -> dict[str, np.ndarray]:
    """docs/theory.md sections 2-6 taken literally, over whole arrays at once (config 1: typical init, V = 0).

    The same 20 metrics as a sweep; t = inf by section 5, finite t by the z(t) Riccati form of section 4,
    t_learn by inverting that form for z and then e = exp(-lambda t). No accuracy care: no cancellation-free
    forms, no special cases beyond the saddle."""
    with np.errstate(all="ignore"):
        d = np.round(d)
        U, W = d * s, d * s
        V = np.zeros_like(U)
        G = U * W - V * V
        Delta = U / lr_u - W / lr_w
        c = kappa * math.sqrt(lr_u * lr_w)
        g2 = kappa**2 * (lr_u * lr_w * Delta**2 / 4 + G)
        m0 = kappa * V
        s0 = np.sqrt(m0**2 + g2)
        alpha0, beta0 = (s0 + m0) / 2, (s0 - m0) / 2
        b = a * m_star
        q = np.sqrt(b**2 + a**2 * g2)
        z_star, z_minus = 2 * a * alpha0 / (b + q), -(b + q) / (2 * a * beta0)
        lam = 2 * c * q
        theta0 = 2 * c * s0
        saddle = (g2 == 0) & (m0 * m_star <= 0)
        if math.isinf(horizon):
            m = np.where(saddle, 0.0, m_star)
        else:
            e = np.exp(-lam * horizon)
            z = z_star + (1 - z_star) * (z_star - z_minus) * e / ((1 - z_minus) - (1 - z_star) * e)
            m = alpha0 / z - beta0 * z
        theta = 2 * c * np.sqrt(m**2 + g2)
        zeta0 = m0 / np.sqrt(m0**2 + kappa**2 * G)
        zeta = m / np.sqrt(m**2 + kappa**2 * G)
        loss = a * (m - m_star) ** 2 / 2
        change = theta / theta0 - 1
        zmin = np.where(m0 * m < 0, 0.0, np.minimum(np.abs(zeta0), np.abs(zeta)))
        gain = np.where(G > 0, np.abs(zeta) - zmin, 0.0)
        dis = np.where(G > 0, np.abs(zeta0) - zmin, 0.0)
        m_t = m_star + math.sqrt(0.1) * (m0 - m_star)  # 90 % of the excess loss gone
        z_t = (np.sqrt(m_t**2 + g2) - m_t) / (2 * beta0)  # root of m = alpha0/z - beta0 z
        e_t = (z_t - z_star) * (1 - z_minus) / ((1 - z_star) * (z_t - z_minus))
        t_learn = np.where(saddle, np.inf, -np.log(e_t) / lam)
        if math.isinf(horizon):
            not_converged = np.zeros(m.shape, dtype=bool)
        else:
            not_converged = loss > 0.01 * a * (m0 - m_star) ** 2 / 2
        kernel = np.abs(change) < ntk_threshold
        rotated = np.maximum(gain, dis) >= alignment_threshold
        by_alignment = gain >= dis
        phase = np.where(kernel, np.where(rotated, np.where(by_alignment, 1, 2), 0),
                         np.where(rotated, np.where(by_alignment, 3, 4), 5))
        phase = np.where(saddle, 6, phase).astype(np.int8)
        return dict(
            phase=phase, ntk_init=theta0, ntk_final=theta, ntk_change=change, alignment_init=zeta0,
            alignment_final=zeta, alignment_gain=gain, disalignment=dis, m_init=m0, m_final=m, loss_final=loss,
            norm_u2_final=U + (theta - theta0) / (2 * kappa**2 * lr_w),
            norm_w2_final=W + (theta - theta0) / (2 * kappa**2 * lr_u),
            solution_norm=np.sqrt(m**2 + kappa**2 * G), tau=1 / (a * 2 * c * np.sqrt(m_star**2 + g2)),
            t_learn=t_learn, not_converged=not_converged, gram_U=U, gram_W=W, gram_V=V,
        )


def naive_grid(d_axis: np.ndarray, s_axis: np.ndarray, horizon: float) -> dict[str, np.ndarray]:
    """The naive pass over the whole grid (d_axis x s_axis, C order as a sweep stores it)."""
    d, s = np.meshgrid(d_axis, s_axis, indexing="ij")
    return naive_pass(d, s, horizon)


def naive_child(n: int, horizon: float, save: str | None) -> None:
    """Entry point of the fresh-process naive pass: axes as config 1 defines them, optional np.savez."""
    d = np.logspace(0.0, 6.0, n)
    s = np.logspace(-8.0, 0.0, n)
    out = naive_grid(d, s, horizon)
    if save:
        np.savez(save, d=d, s=s, **out)


# ----------------------------------------------------------------------------------------------------------
# timing helpers

def timed_runs(fn, repeats: int) -> list[float]:
    """Wall times of `repeats` calls of fn (each result is dropped before the next call)."""
    walls = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        del result
    gc.collect()
    return walls


# A fresh Python that runs one command and reports its wall time and peak RSS (RUSAGE_CHILDREN of this
# wrapper covers exactly that one command and what it waited for).
_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t0 = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:])\n"
    "wall = time.perf_counter() - t0\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "rss = rss if sys.platform == 'darwin' else rss * 1024\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "sys.stderr.write(f'\\n@@BENCH {wall!r} {rss} {r.returncode} {ru.ru_utime!r} {ru.ru_stime!r}\\n')\n"
)


def run_process(args: list[str], cwd: Path, repeats: int = 1, env=None) -> dict:
    """Run `args` `repeats` times, each in a fresh child; best wall time, every time, peak RSS, last stdout."""
    walls, cpu, rss, stdout = [], [], 0, ""
    for _ in range(repeats):
        p = subprocess.run([sys.executable, "-c", _WRAPPER, *args], cwd=cwd, capture_output=True, text=True,
                           env=env)
        match = re.search(r"@@BENCH (\S+) (\d+) (-?\d+) (\S+) (\S+)\s*$", p.stderr)
        if match is None or int(match.group(3)) != 0:
            raise RuntimeError(f"command failed: {' '.join(map(str, args))}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        walls.append(float(match.group(1)))
        cpu.append((float(match.group(4)), float(match.group(5))))
        rss = max(rss, int(match.group(2)))
        stdout = p.stdout
    best = int(np.argmin(walls))
    return {"best_s": walls[best], "median_s": float(np.median(walls)), "runs_s": walls, "peak_rss": rss,
            "user_s": cpu[best][0], "sys_s": cpu[best][1], "stdout": stdout}


def phasediag_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "phasediag", *map(str, args)]


def npz_array_bytes(path: Path) -> int:
    """Sum of the nbytes of every array in an .npz (read from the headers; nothing is loaded)."""
    import zipfile

    total = 0
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            with zf.open(name) as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
                total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return total


def same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return filecmp.cmp(a, b, shallow=False)


# ----------------------------------------------------------------------------------------------------------
# 1. throughput of the core (in process) and of the naive pass

def measure_throughput(mode: dict, log) -> list[dict]:
    from phasediag.engine import sweep

    rows = []
    for n in mode["sizes"]:
        N = n * n
        big = N >= 5_000_000
        k = mode["big_repeats"] if big else mode["repeats"]
        row = {"n": n, "points": N}
        for key, horizon, times in (("core_inf", math.inf, None), ("core_T", FINITE_T, None),
                                    ("core_traj", FINITE_T, TRAJ_TIMES)):
            if times and n > mode["traj_max"]:
                continue
            config = make_config(n, horizon, times)
            t = _record(row, key, timed_runs(lambda: sweep.run(config, workers=1), k))
            log(f"  N = {N:>10,}  {key:<10} {t:8.4f} s  {N / t:12.4g} points/s   (median {row[key + '_median']:.4f} s)")
        config = make_config(n)
        t = _record(row, "floor_inf", timed_runs(lambda: write_floor(config, N), k))
        log(f"  N = {N:>10,}  {'floor':<10} {t:8.4f} s  (writing the {sweep.result_bytes(config, N) / N:.0f} bytes "
            f"per point into fresh result memory; core {row['core_inf'] / t:.2f}x it)")
        t = _record(row, "core_inf_w2", timed_runs(lambda: first_read(sweep.run(config, workers=2)), k))
        log(f"  N = {N:>10,}  {'workers 2':<10} {t:8.4f} s  {N / t:12.4g} points/s   "
            f"(median {row['core_inf_w2_median']:.4f} s)")
        d_axis, s_axis = (ax.values for ax in config.axes)
        for key, horizon in (("naive_inf", math.inf), ("naive_T", FINITE_T)):
            t = _record(row, key, timed_runs(lambda: naive_grid(d_axis, s_axis, horizon), k))
            log(f"  N = {N:>10,}  {key:<10} {t:8.4f} s  {N / t:12.4g} points/s   (median {row[key + '_median']:.4f} s)")
        rows.append(row)
        gc.collect()
    return rows


def first_read(result):
    """Read one byte of every page of `result`'s arrays and return it: the workers wrote them, and this
    process maps their pages when it reads them, a cost the timing of `workers=2` must include (about 0.1 s
    per GB here; `sweep.run` maps each chunk as it arrives). Returned, so that a timing ends before the
    result is freed, as it does for workers=1."""
    for array in result.arrays.values():
        np.asarray(array).reshape(-1).view(np.uint8)[::4096].max(initial=0)
    return result


def write_floor(config, n: int) -> dict:
    """The floor of any evaluation of `config` on n points: its result arrays allocated as `sweep.run` does
    (fresh memory) and every byte written once. Returned, so that a timing ends before they are freed (as
    for the evaluation it is the floor of: freeing 1.5 GB took 0.2 s)."""
    from phasediag.engine import sweep

    arrays = sweep.allocate(config, n)
    for array in arrays.values():
        array.fill(1)
    return arrays


#: grids other than config 1, to show what the special structure of config 1 (kappa = eta = 1, balanced
#: layers, V = 0) is worth: every hyperparameter varying or non-unit, and a sampled initialization
OTHER_GRIDS = {
    "general (kappa = 1/sqrt(d), eta_u = 2, eta_w = d/2, sigma_w^2 = 3 sigma_u^2, m* = -2, a = 1.5)": "init: typical",
    "the same with a sampled initialization (one seed)": "init: {seeds: 1, seed: 3}",
}
OTHER_BASE = """name: other
sweep:
  d: {{log: [1, 1e6, {n}]}}
  s: {{log: [1e-6, 1, {n}]}}
model: {{width: d, output_scale: 1 / sqrt(d), lr_u: 2, lr_w: 0.5 * d, init_var_u: s, init_var_w: 3 * s}}
data: {{input_var: 1.5, teacher: -2}}
"""


def measure_other_grids(mode: dict, log) -> list[dict]:
    """Final-state throughput (all stored metrics, one process) on OTHER_GRIDS at the 1e6-point size."""
    from phasediag.engine import sweep
    from phasediag.config.sweep import config_from_text

    n = min(1000, max(mode["sizes"]))
    rows = []
    for label, init in OTHER_GRIDS.items():
        config = config_from_text(OTHER_BASE.format(n=n) + init + "\n", source="bench other")
        row = {"grid": label, "points": n * n}
        t = _record(row, "core_inf", timed_runs(lambda: sweep.run(config, workers=1), mode["repeats"]))
        log(f"  {label}: {n * n / t:.3g} points/s")
        rows.append(row)
    return rows


GD_CONFIG = ROOT / "configs" / "7_gd_lr_vs_width.yaml"
TARGET_GD_RATE = 1e6  # exact GD map points / s / core (the issue's target)


def gd_map_config(n: int, optimizer: str = "gd"):
    """configs/7_gd_lr_vs_width.yaml on an n x n grid (eta x d), every metric stored; `optimizer: flow`: the
    same grid under gradient flow (its cost is the reference of the GD map's)."""
    from phasediag.config.sweep import config_from_text

    text = GD_CONFIG.read_text()
    grids = (("eta: {log: [0.05, 5, 121]}", f"eta: {{log: [0.05, 5, {n}]}}"),
             ("d: {log: [1, 1e5, 101]}", f"d: {{log: [1, 1e5, {n}]}}"))
    for old, new in grids:
        if old not in text:
            raise RuntimeError(f"{GD_CONFIG}: expected {old!r} to scale")
        text = text.replace(old, new)
    if optimizer == "flow":
        text = re.sub(r"^train:.*$", "train: {optimizer: flow}", text, flags=re.M)
        text = re.sub(r"^plot:.*$", "", text, flags=re.M)
    return config_from_text(text, source=f"bench gd map {optimizer}")


def measure_gd_maps(mode: dict, log) -> dict:
    """Exact GD map throughput (config 7 scaled to n x n, one process) against the gradient-flow map of the
    same grid measured in the same run, and the GD steps it took per point."""
    from phasediag import core
    from phasediag.engine import sweep

    n = mode["gd_map_n"]
    gd, flow = gd_map_config(n), gd_map_config(n, "flow")
    out = {"points": n * n, "max_steps": gd.max_steps}
    _record(out, "gd", timed_runs(lambda: sweep.run(gd, workers=1), mode["gd_map_repeats"]))
    _record(out, "flow", timed_runs(lambda: sweep.run(flow, workers=1), mode["gd_map_repeats"]))
    with np.errstate(under="ignore"):  # the grid's points, for the steps its runs take (untimed)
        problem = sweep.model_values(gd, np.arange(n * n))[1]
    runs = core.gd_outcome(core.invariants(problem), gd.max_steps)
    out["mean_steps"] = float(np.mean(runs.steps))  # (the gd_steps metric)
    out["mean_run_steps"] = float(np.mean(runs.stopped))  # (to the tail, a certificate or the bound)
    log(f"  GD map, config 7 on {n * n:,} points: {n * n / out['gd']:.3g} points/s, {out['gd'] / out['flow']:.1f}x "
        f"the flow map's time ({n * n / out['flow']:.3g} points/s); outcomes decided at step "
        f"{out['mean_steps']:.1f}, runs left at step {out['mean_run_steps']:.1f} on average")
    return out


BOUNDARY_CONFIG = ROOT / "configs" / "17_width_vs_init_boundaries.yaml"


def measure_boundaries(mode: dict, log) -> dict:
    """Exact boundaries of config 17 on an n x n grid (typical initialization) and on a smaller grid with 8
    sampled initializations: the time of finding them against the evaluation of the same grid (same run)."""
    from phasediag.config.sweep import config_from_text
    from phasediag.engine import boundaries, sweep

    out = {}
    text = BOUNDARY_CONFIG.read_text()
    for key, n, init in (("typical", mode["boundary_n"], "init: typical"),
                         ("seeds", mode["boundary_seeds_n"], "init: {seeds: 8}")):
        config = config_from_text(text.replace("121]", f"{n}]").replace("init: typical", init), source="bench")
        row = {"grid_points": n * n, "seeds": config.seeds}
        _record(row, "eval", timed_runs(lambda: sweep.run(config, workers=1), mode["gd_map_repeats"]))
        codes = {"phase": sweep.run(config, workers=1)["phase"]}
        _record(row, "find", timed_runs(lambda: boundaries.find_all(config, codes), mode["gd_map_repeats"]))
        row["crossings"] = int(boundaries.find_all(config, codes)["boundary"].size)
        out[key] = row
        log(f"  boundaries of config 17 on {n}x{n} ({init}): {row['crossings']:,} crossings in {row['find']:.3f} s, "
            f"{row['find'] / row['eval']:.2f}x the grid's evaluation ({row['eval']:.3f} s)")
    return out


def measure_worker_scaling(mode: dict, log) -> dict:
    """Chunk evaluation alone with 1 and 2 worker processes (`sweep.execute_chunks` into result arrays in
    memory: private for one, shared with the forked workers for two): how the computing scales, apart from
    the kernel's cost of providing fresh result memory."""
    from phasediag.engine import sweep
    from phasediag.results.stream import MemoryResult

    n = max(mode["sizes"])  # the largest grid: many chunks, so that the workers stay evenly loaded
    config = make_config(n)
    sweep.tune_allocator()
    todo = list(sweep.chunks(0, n * n, sweep.DEFAULT_CHUNK))
    one = MemoryResult(sweep.allocate(config, n * n), 0)
    two = sweep.shared_result(config, n * n)
    out = {"points": n * n, "chunks": len(todo), "kind": "processes"}
    _record(out, "w1", timed_runs(lambda: list(sweep.execute_chunks(config, todo, 1, one)), mode["repeats"]))
    _record(out, "w2_processes", timed_runs(lambda: list(sweep.execute_chunks(config, todo, 2, two)),
                                            mode["repeats"]))
    log(f"  chunk evaluation of {n * n:,} points into warm arrays: 1 worker {out['w1']:.3f} s, 2 processes "
        f"{out['w2_processes']:.3f} s ({out['w1'] / out['w2_processes']:.2f}x)")
    return out


def _timed_part(config, shard, warm, barrier, queue, folder=None) -> None:
    """One independent process of `sweep_ceiling`: warm up, wait for the others, time its part (streamed
    into the checkpoint `folder` if one is given)."""
    from phasediag.engine import sweep

    sweep.run(warm, checkpoint=None if folder is None else folder.with_name(folder.name + "-warm"))
    barrier.wait()  # (the allocator's heap and the modules warm, as in a long process)
    t0 = time.perf_counter()
    result = sweep.run(config, workers=1, shard=shard, checkpoint=folder)
    queue.put(time.perf_counter() - t0)  # (before the result is freed, as in every other timing)
    del result


def _streamed_run(config, workers: int, folder: Path) -> float:
    """`sweep.run` of `config` streamed into the checkpoint `folder` as `phasediag run` does (written into
    place chunk by chunk, made durable, completed), timed; the folder is then removed (not timed)."""
    from phasediag.engine import sweep

    t0 = time.perf_counter()
    sweep.run(config, workers=workers, checkpoint=folder)
    wall = time.perf_counter() - t0
    _rmtree(folder)
    return wall


def sweep_ceiling(mode: dict, log) -> dict:
    """`workers=2` against perfect sharding on this machine, the four measured in turn in each of k rounds
    (best of k each), so that all see the same state of a shared machine: in this process `sweep.run` of the
    largest sweep with workers=1 and with workers=2 (the latter until this process has read every page of the
    result, `first_read`); and two independent processes, started together, each evaluating one half
    (`Shard(k, 2)`) with workers=1, against one process evaluating all of it. The last ratio includes what no
    implementation of `--workers` can avoid (both processes faulting in fresh result memory, sharing the
    memory bandwidth and the hypervisor), so it is the most `--workers 2` can reach on this work here."""
    import multiprocessing

    from phasediag.engine import sweep

    n = max(mode["sizes"])
    config, warm = make_config(n), make_config(min(n, 1000))
    ctx = multiprocessing.get_context("fork")
    scratch = Path(tempfile.mkdtemp(prefix="phasediag-ceiling-"))

    def timed(count: int, streamed: bool = False) -> float:
        barrier, queue = ctx.Barrier(count), ctx.Queue()
        shards = [sweep.Shard(k + 1, count) if count > 1 else None for k in range(count)]
        folders = [scratch / f"part{k}" if streamed else None for k in range(count)]
        procs = [ctx.Process(target=_timed_part, args=(config, shard, warm, barrier, queue, folder))
                 for shard, folder in zip(shards, folders)]
        for proc in procs:
            proc.start()
        walls = [queue.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
        for entry in scratch.iterdir():
            _rmtree(entry)
        return max(walls)

    measures = {
        "whole": lambda: timed(1),
        "halves": lambda: timed(2),
        "workers1": lambda: timed_runs(lambda: sweep.run(config, workers=1), 1)[0],
        "workers2": lambda: timed_runs(lambda: first_read(sweep.run(config, workers=2)), 1)[0],
        "streamed_whole": lambda: timed(1, streamed=True),
        "streamed_halves": lambda: timed(2, streamed=True),
        "streamed_workers1": lambda: _streamed_run(config, 1, scratch / "run"),
        "streamed_workers2": lambda: _streamed_run(config, 2, scratch / "run"),
    }
    runs: dict[str, list[float]] = {key: [] for key in measures}
    try:
        for _ in range(mode["big_repeats"]):  # as many as the in-process workers measurement: best of the same k
            for key, measure in measures.items():
                os.sync()  # (no writeback or discard of an earlier measurement's files left to overlap this one)
                runs[key].append(measure())
    finally:
        _rmtree(scratch)
    out = {"points": n * n}
    for key, walls in runs.items():
        _record(out, key + "_s", walls)
    for prefix in ("", "streamed_"):
        out[prefix + "speedup"] = out[prefix + "whole_s"] / out[prefix + "halves_s"]
        out[prefix + "workers_speedup"] = out[prefix + "workers1_s"] / out[prefix + "workers2_s"]
        log(f"  {n * n:,} points{', streamed' if prefix else ''}: one process {out[prefix + 'whole_s']:.3f} s, two "
            f"independent processes on one half each {out[prefix + 'halves_s']:.3f} s: "
            f"{out[prefix + 'speedup']:.2f}x (perfect sharding: the ceiling of --workers 2 here); workers=1 "
            f"{out[prefix + 'workers1_s']:.3f} s, workers=2 {out[prefix + 'workers2_s']:.3f} s: "
            f"{out[prefix + 'workers_speedup']:.2f}x")
    return out


def _fill_part(config, n: int, k: int, parts: int, shared=None, done=None):
    """Write every byte of part k of `parts` of the result arrays of n points: into `shared` (the workers'
    result, chunk by chunk as they write) or its own, which it returns. `done`: a queue told when the part is
    written, before anything is freed (a forked writer's exit frees its memory: 0.2 s per 1.5 GB)."""
    from phasediag.engine import sweep

    lo, hi = k * n // parts, (k + 1) * n // parts
    arrays = None
    if shared is not None:
        for c_lo, c_hi in sweep.chunks(lo, hi, sweep.DEFAULT_CHUNK):
            shared.write(c_lo, c_hi, {name: np.ones((), array.dtype) for name, array in shared.arrays.items()})
    else:
        arrays = sweep.allocate(config, hi - lo)
        for array in arrays.values():
            array.fill(1)
    if done is not None:
        done.put(k)
    return arrays


def _timed_fill(how: str, config, n: int, queue) -> None:
    """One trial of `result_memory`, in a fresh process: the time to provide and write result memory (until
    it is written: freeing it is not timed, as in every other timing)."""
    import multiprocessing

    from phasediag.engine import sweep

    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    if how == "private_whole":
        arrays = _fill_part(config, n, 0, 1)
        queue.put(time.perf_counter() - t0)
        arrays.clear()  # (freed after the timing)
        return
    shared = sweep.shared_result(config, n) if how == "shared_halves" else None
    done = ctx.Queue()
    procs = [ctx.Process(target=_fill_part, args=(config, n, k, 2, shared, done)) for k in (0, 1)]
    for proc in procs:
        proc.start()
    for _ in procs:
        done.get(timeout=600)
    queue.put(time.perf_counter() - t0)
    for proc in procs:
        proc.join()


def result_memory(mode: dict, log) -> dict:
    """What result memory costs the ways a sweep gets it, for the largest sweep's bytes, each trial in a fresh
    process (best of k): one process allocating its arrays as sweep.run does and writing them (the floor);
    two processes each doing so for one half (perfect sharding); two forked processes writing their halves of
    the workers' result (`sweep.shared_result`: files in memory, written with pwrite) chunk by chunk, as the
    workers do so that the parent holds the result. The last two are reported beside the target: what sharing the result costs the memory
    system (the workers pay it while they compute, so it does not simply add to their time)."""
    import multiprocessing

    n = max(mode["sizes"]) ** 2
    config = make_config(max(mode["sizes"]))
    ctx = multiprocessing.get_context("fork")
    out = {"points": n}
    for how in ("private_whole", "private_halves", "shared_halves"):
        walls = []
        for _ in range(mode["big_repeats"]):
            queue = ctx.Queue()
            proc = ctx.Process(target=_timed_fill, args=(how, config, n, queue))
            proc.start()
            walls.append(queue.get(timeout=600))
            proc.join()
        _record(out, how, walls)
    log(f"  result memory of {n:,} points: one process {out['private_whole']:.3f} s, two private halves "
        f"{out['private_halves']:.3f} s, two halves of the workers' result {out['shared_halves']:.3f} s")
    return out


def _independent_work(_=None) -> float:
    """Chunk-like numpy work that shares nothing: a few ufunc passes over 1 MiB arrays."""
    x = np.random.default_rng(0).random(1 << 17)
    t0 = time.perf_counter()
    for _ in range(1500):
        y = np.sqrt(x * x + 1.0)
        x = y / (1.0 + y)
    return time.perf_counter() - t0


def parallel_ceiling(log, repeats: int = 3) -> dict:
    """The speed-up this machine gives two independent numpy processes over one doing both tasks in turn, on
    work that stays in the caches (no fresh memory): how the two CPUs themselves scale (virtual CPUs may share
    a physical core). Information; the target uses `sweep_ceiling`."""
    import multiprocessing

    serial, parallel = [], []
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            _independent_work(), _independent_work()
            serial.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pool.map(_independent_work, [0, 1])
            parallel.append(time.perf_counter() - t0)
    out = {"serial_s": min(serial), "parallel_s": min(parallel), "speedup": min(serial) / min(parallel)}
    log(f"  two independent numpy processes, in-cache work: {out['speedup']:.2f}x one doing both")
    return out


def _record(row: dict, key: str, walls: list[float]) -> float:
    """row[key] = best, row[key_median], row[key_runs]; returns the best."""
    row[key], row[key + "_median"], row[key + "_runs"] = min(walls), float(np.median(walls)), walls
    return min(walls)


# ----------------------------------------------------------------------------------------------------------
# 2. accuracy

# how each metric's error is measured (docs/theory.md section 8 units where it defines them)
ERROR_KIND = {
    "m_init": "m", "m_final": "m", "alignment_init": "zeta", "alignment_final": "zeta", "alignment_gain": "zeta",
    "disalignment": "zeta", "phase": "label", "not_converged": "label",
}


def error_array(x: np.ndarray, ref: np.ndarray, kind: str, m_scale=None, zeta_scale=None) -> np.ndarray:
    """Elementwise error of x against ref: 'rel' |x - ref| / |ref| (|x - ref| where ref = 0), 'm' in units of
    docs/theory.md section 8's m scale, 'zeta' in units of that scale / sqrt(m^2 + kappa^2 G); non-finite x with finite ref
    (or the reverse, or inf of the other sign) -> inf."""
    with np.errstate(all="ignore"):
        diff = np.abs(x - ref)
        if kind == "m":
            err = diff / m_scale
        elif kind == "zeta":
            err = diff * zeta_scale / m_scale
        else:
            err = np.where(ref != 0, diff / np.abs(ref), diff)
        both_inf = np.isinf(x) & np.isinf(ref) & (np.sign(x) == np.sign(ref))
        err = np.where(both_inf, 0.0, err)
        return np.where(np.isfinite(err), err, np.inf)


def scales(m_ref, m0, m_star, g, kappa_sqrt_g):
    """docs/theory.md section 8: m scale = max(|m|, min(sqrt(m^2 + g^2), |m0| + |m*|)); zeta's sqrt(m^2 + kappa^2 G)."""
    m_scale = np.maximum(np.abs(m_ref), np.minimum(np.hypot(m_ref, g), np.abs(m0) + np.abs(m_star)))
    return m_scale, np.hypot(m_ref, kappa_sqrt_g)


def compare_arrays(test: dict, ref: dict, m_scale, zeta_scale) -> dict:
    """Per metric: worst error, points > REL_BAD, non-finite points (labels: disagreements)."""
    out = {}
    for name, r in ref.items():
        if name not in test:
            continue
        x = np.asarray(test[name]).reshape(-1)
        r = np.asarray(r).reshape(-1)
        kind = ERROR_KIND.get(name, "rel")
        if kind == "label":
            out[name] = {"kind": kind, "disagree": int(np.count_nonzero(x != r))}
            continue
        err = error_array(x, r, kind, m_scale, zeta_scale)
        out[name] = {"kind": kind, "worst": float(err.max()), "bad": int(np.count_nonzero(err > REL_BAD)),
                     "nonfinite": int(np.count_nonzero(~np.isfinite(x) & np.isfinite(r)))}
    return out


def grid_invariants(config):
    """(model values, core Invariants) of every point of the grid, flat."""
    from phasediag import core
    from phasediag.engine import sweep

    values, problem = sweep.model_values(config, np.arange(sweep.grid_size(config)))
    return values, core.invariants(problem)


def naive_accuracy(n: int, log) -> dict:
    """The naive pass against the core over the whole n x n grid, at t = inf and at T = 10."""
    from phasediag.engine import sweep

    out = {}
    for key, horizon in (("inf", math.inf), ("T", FINITE_T)):
        config = make_config(n, horizon)
        exact = {k: v.reshape(-1) for k, v in sweep.run(config).arrays.items()}
        d_axis, s_axis = (ax.values for ax in config.axes)
        naive = {k: v.reshape(-1) for k, v in naive_grid(d_axis, s_axis, horizon).items()}
        _, inv = grid_invariants(config)
        m_scale, zeta_scale = scales(exact["m_final"], inv.m0, inv.teacher, inv.g, inv.kappa_sqrt_g)
        per_metric = compare_arrays(naive, exact, m_scale, zeta_scale)
        # points where any float metric is non-finite or off by > REL_BAD, and label disagreements
        any_bad = np.zeros(n * n, dtype=bool)
        any_nonfinite = np.zeros(n * n, dtype=bool)
        for name, r in exact.items():
            kind = ERROR_KIND.get(name, "rel")
            if kind == "label":
                continue
            err = error_array(naive[name], r, kind, m_scale, zeta_scale)
            any_bad |= err > REL_BAD
            any_nonfinite |= ~np.isfinite(naive[name]) & np.isfinite(r)
        out[key] = {"points": n * n, "metrics": per_metric, "points_bad": int(any_bad.sum()),
                    "points_nonfinite": int(any_nonfinite.sum()),
                    "phase_disagree": per_metric["phase"]["disagree"]}
        log(f"  naive vs core, horizon {key}: {int(any_bad.sum()):,} points off by > {REL_BAD:g}, "
            f"{int(any_nonfinite.sum()):,} non-finite, {per_metric['phase']['disagree']:,} phase labels differ")
    return out


def sample_indices(n_points: int, count: int) -> np.ndarray:
    return np.sort(np.random.default_rng(0).choice(n_points, size=min(count, n_points), replace=False))


def _point_inputs(config, idx):
    """Per sampled index: (kappa, lr_u, lr_w, a, m*, U, W, V, G) as floats."""
    from phasediag.engine import sweep

    values, problem = sweep.model_values(config, np.asarray(idx))
    g = problem.gram
    cols = [np.broadcast_to(x, (len(idx),)) for x in (problem.output_scale, problem.lr_u, problem.lr_w,
                                                        problem.input_var, problem.teacher, g.U, g.W, g.V, g.G)]
    return [tuple(float(c[i]) for c in cols) for i in range(len(idx))]


def reference_accuracy(n: int, mode: dict, log) -> dict:
    """Core and naive pass against the mpmath reference on a random sample of the n x n grid."""
    from phasediag import core
    from phasediag.engine import sweep

    sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from reference import Point, Reference  # noqa: E402
    finally:
        sys.path.pop(0)
    idx = sample_indices(n * n, mode["ref_points"])
    inputs = _point_inputs(make_config(n), idx)
    fields = (("m_final", "m", "m"), ("ntk_final", "Theta", "rel"), ("ntk_change", "ntk_change", "rel"),
              ("alignment_final", "zeta", "zeta"), ("norm_u2_final", "norm_u2", "rel"),
              ("norm_w2_final", "norm_w2", "rel"), ("loss_final", "loss", "rel"))
    out = {"sample": int(idx.size)}
    t_ref = 0.0
    for key, horizon in (("inf", math.inf), ("T", FINITE_T)):
        config = make_config(n, horizon)
        exact = {k: v.reshape(-1)[idx] for k, v in sweep.run(config).arrays.items()}
        d_axis, s_axis = (ax.values for ax in config.axes)
        naive = {k: v.reshape(-1)[idx] for k, v in naive_grid(d_axis, s_axis, horizon).items()}
        worst = {"core": {}, "naive": {}}
        label_disagree = {"core": 0, "naive": 0}
        for j, p in enumerate(inputs):
            t0 = time.perf_counter()
            ref = Reference(Point(*p))
            st = ref.state(horizon)
            inv = ref.invariants()
            label, ambiguous = ref.classify(horizon)
            t_ref += time.perf_counter() - t0
            m = st["m"]
            m_scale = float(max(abs(m), min(math.sqrt(float(m * m + inv["g2"])), abs(inv["m0"]) + abs(inv["ms"]))))
            zeta_scale = math.sqrt(float(m * m + inv["k"] ** 2 * inv["G"]))
            for who, arrays in (("core", exact), ("naive", naive)):
                for name, ref_key, kind in fields:
                    r = st[ref_key]
                    if r is None:
                        continue
                    err = float(error_array(np.array(arrays[name][j]), np.array(float(r)), kind,
                                            m_scale, zeta_scale))
                    worst[who][name] = max(worst[who].get(name, 0.0), err)
                if not ambiguous and core.PHASES[int(arrays["phase"][j])] != label:
                    label_disagree[who] += 1
        out[key] = {"worst": worst, "label_disagree": label_disagree}
        log(f"  mpmath sample ({idx.size} points), horizon {key}: core worst "
            f"{max(worst['core'].values()):.2e}, naive worst {max(worst['naive'].values()):.2e}")
    # t_learn (bisection in the reference: slower) on a sub-sample
    config = make_config(n)
    exact = sweep.run(config).arrays["t_learn"].reshape(-1)
    d_axis, s_axis = (ax.values for ax in config.axes)
    naive = naive_grid(d_axis, s_axis, math.inf)["t_learn"].reshape(-1)
    sub = idx[: mode["tlearn_points"]]
    worst = {"core": 0.0, "naive": 0.0}
    for j, p in zip(sub, inputs):
        r = float(Reference(Point(*p)).t_learn())
        for who, arr in (("core", exact), ("naive", naive)):
            worst[who] = max(worst[who], float(error_array(np.array(arr[j]), np.array(r), "rel")))
    out["t_learn"] = {"sample": int(sub.size), "worst": worst}
    out["reference_s_per_point"] = t_ref / (2 * idx.size)
    return out


# ----------------------------------------------------------------------------------------------------------
# 3. solve_ivp on the reduced ODE

def ivp_benchmark(n: int, mode: dict, log) -> dict:
    """LSODA (with the Jacobian) on dm/dt = -2c sqrt(m^2 + g^2)(a m - b), per point, against the exact flow."""
    from scipy.integrate import solve_ivp

    from phasediag import core
    from phasediag.engine import sweep

    config = make_config(n)
    idx = sample_indices(n * n, mode["ivp_points"])
    _, problem = sweep.model_values(config, idx)
    inv_all = core.invariants(problem)
    out = {}
    for key, horizon in (("inf", math.inf), ("T", FINITE_T)):
        times, err_m, err_theta, err_change, nfev, failed = [], [], [], [], [], 0
        for j in range(idx.size):
            inv = type(inv_all)(*(_pick(x, j) for x in inv_all))
            c, a, m_star = float(inv.c), float(inv.input_var), float(inv.teacher)
            g2 = float(inv.g) ** 2
            b = a * m_star
            m0 = float(inv.m0)
            if math.isinf(horizon):
                t_end = float(core.t_learn(inv)) + 40.0 * float(core.relaxation_time(inv))
            else:
                t_end = horizon
            t0 = time.perf_counter()

            def rhs(t, m):
                return -2.0 * c * np.sqrt(m * m + g2) * (a * m - b)

            def jac(t, m):
                r = math.sqrt(m[0] * m[0] + g2)
                return [[-2.0 * c * (m[0] / r * (a * m[0] - b) + r * a)]]

            sol = solve_ivp(rhs, (0.0, t_end), [m0], method="LSODA", jac=jac, rtol=1e-10, atol=1e-20)
            times.append(time.perf_counter() - t0)
            nfev.append(int(sol.nfev))
            if sol.status != 0:
                failed += 1
            m = float(sol.y[0, -1])
            state, change = core.flow_state_and_change(inv, t_end)
            m_ex, theta_ex, change_ex = float(state.m), float(state.ntk), float(change)
            m_scale = max(abs(m_ex), min(math.hypot(m_ex, float(inv.g)), abs(m0) + abs(m_star)))
            err_m.append(abs(m - m_ex) / m_scale)
            theta = 2.0 * c * math.sqrt(m * m + g2)
            err_theta.append(abs(theta / theta_ex - 1.0))
            theta0 = float(inv.ntk_init)
            change_ivp = 4.0 * c * c * (m - m0) * (m + m0) / (theta0 * (theta + theta0))  # NTK law, no cancellation
            err_change.append(abs(change_ivp - change_ex) / abs(change_ex) if change_ex else abs(change_ivp))
        errs = np.array([err_m, err_theta, err_change])
        out[key] = {"sample": int(idx.size), "mean_s": float(np.mean(times)), "median_s": float(np.median(times)),
                    "max_s": float(np.max(times)), "total_s": float(np.sum(times)),
                    "median_nfev": float(np.median(nfev)), "failed": failed,
                    "worst_m": float(errs[0].max()), "worst_ntk": float(errs[1].max()),
                    "worst_ntk_change": float(errs[2].max()), "median_m": float(np.median(errs[0])),
                    "bad": int(np.count_nonzero(np.nan_to_num(errs, nan=np.inf).max(axis=0) > REL_BAD))}
        log(f"  solve_ivp LSODA, horizon {key}: {np.mean(times) * 1e3:.2f} ms/point, worst m error "
            f"{errs[0].max():.1e}, ntk_change {errs[2].max():.1e}")
    return out


def _pick(x, j):
    if isinstance(x, tuple):
        return type(x)(*(_pick(y, j) for y in x))
    a = np.asarray(x)
    return a if a.ndim == 0 else a[j]


# ----------------------------------------------------------------------------------------------------------
# 4. explicit GD of the vectors at width 1000

def gd_benchmark(n: int, mode: dict, log) -> dict:
    """GD with both rates x h (a Theta_max h = GD_STEP, capped steps) at width 1000, to T = 10."""
    from phasediag import core
    from phasediag.training import simulate
    from phasediag.engine import sweep

    config = make_config(n)
    idx = sample_indices(n * n, mode["gd_points"])
    values, _ = sweep.model_values(config, idx)
    times, steps_all, err_m, err_theta, step_sizes = [], [], [], [], []
    for j, i in enumerate(idx):
        v = {k: float(np.asarray(x)[j]) for k, x in values.items()}
        rng = np.random.default_rng([0, int(i)])
        u0, w0 = simulate.sample_vectors(GD_WIDTH, v["init_var_u"], v["init_var_w"], rng)
        t0 = time.perf_counter()
        gram = core.explicit_gram(float(u0 @ u0), float(w0 @ w0), float(u0 @ w0))
        inv = core.invariants(core.Problem(v["output_scale"], v["lr_u"], v["lr_w"], v["input_var"], v["teacher"],
                                           gram))
        theta_max = max(float(inv.ntk_init), float(core.flow_state(inv, np.inf).ntk))
        rate = v["input_var"] * theta_max
        steps = max(1, min(math.ceil(FINITE_T * rate / GD_STEP), mode["gd_max_steps"]))
        h = FINITE_T / steps
        trace = simulate.gd_vectors(u0, w0, output_scale=v["output_scale"], lr_u=v["lr_u"] * h,
                                    lr_w=v["lr_w"] * h, input_var=v["input_var"], teacher=v["teacher"],
                                    steps=np.array([steps]))
        times.append(time.perf_counter() - t0)
        steps_all.append(steps)
        step_sizes.append(rate * h)
        exact = core.flow_state(inv, FINITE_T)
        m, m_ex = float(trace.m[-1]), float(exact.m)
        m_scale = max(abs(m_ex), min(math.hypot(m_ex, float(inv.g)), abs(float(inv.m0)) + abs(v["teacher"])))
        err_m.append(abs(m - m_ex) / m_scale)
        err_theta.append(abs(float(trace.ntk[-1]) / h / float(exact.ntk) - 1.0))
    out = {"sample": int(idx.size), "width": GD_WIDTH, "horizon": FINITE_T, "mean_s": float(np.mean(times)),
           "median_s": float(np.median(times)), "max_s": float(np.max(times)), "total_s": float(np.sum(times)),
           "mean_steps": float(np.mean(steps_all)), "capped": int(sum(s >= mode["gd_max_steps"] for s in steps_all)),
           "max_step": float(np.max(step_sizes)), "worst_m": float(np.max(err_m)), "median_m": float(np.median(err_m)),
           "worst_ntk": float(np.max(err_theta)), "median_ntk": float(np.median(err_theta)),
           "bad": int(np.count_nonzero(np.maximum(err_m, err_theta) > REL_BAD))}
    log(f"  GD width {GD_WIDTH}: {out['mean_s'] * 1e3:.1f} ms/point (mean {out['mean_steps']:.0f} steps), "
        f"worst m error {out['worst_m']:.1e}, NTK {out['worst_ntk']:.1e}")
    return out


# ----------------------------------------------------------------------------------------------------------
# 5. whole processes

# sweep.run three times in a fresh process: the first (cold) call pays for growing the heap and faulting in
# fresh pages, which a best-of-k in one long process never sees
_COLD = """
import json, resource, sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import bench
from phasediag.engine import sweep
config = bench.make_config(int(sys.argv[2]))
rows = []
for _ in range(3):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = sweep.run(config)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    rows.append({"wall_s": t1 - t0, "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
                 "page_faults": r1.ru_minflt - r0.ru_minflt})
    del result
print(json.dumps(rows))
"""


def cold_runs(n: int, tmp: Path, env: dict | None = None) -> list[dict]:
    """Wall, user, system time and minor page faults of three successive sweep.run calls in a fresh process
    (`env`: extra environment variables)."""
    p = subprocess.run([sys.executable, "-c", _COLD, str(Path(__file__).resolve().parent), str(n)], cwd=tmp,
                       capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(p.stdout.strip().splitlines()[-1])


def process_benchmarks(mode: dict, tmp: Path, log) -> dict:
    out = {}
    n = mode["proc_n"]
    out["cold"] = cold_runs(n, tmp)
    log("  sweep.run in a fresh process, 3 calls: " + ", ".join(
        f"{r['wall_s']:.3f} s (sys {r['sys_s']:.3f} s, {r['page_faults']:,} faults)" for r in out["cold"]))
    cfg = tmp / f"grid{n}.yaml"
    cfg.write_text(config_text(n))
    k = mode["proc_repeats"]
    # the naive pass in a fresh process: compute only, and compute + np.savez
    here = str(Path(__file__).resolve())
    naive = run_process([sys.executable, here, "--naive-child", str(n)], tmp, k)
    naive_save = run_process([sys.executable, here, "--naive-child", str(n), "--save", str(tmp / "naive.npz")],
                             tmp, k)
    run = run_process(phasediag_cmd("run", cfg, "--no-plot", "--json", "--out", tmp / "run_noplot"), tmp, k)
    run_plot = run_process(phasediag_cmd("run", cfg, "--json", "--out", tmp / "run_plot"), tmp, k)
    out["naive_process"] = _proc(naive)
    out["naive_process_save"] = _proc(naive_save)
    out["run_noplot"] = {**_proc(run), "timing": json.loads(run["stdout"])["timing"]}
    out["run_plot"] = {**_proc(run_plot), "timing": json.loads(run_plot["stdout"])["timing"]}
    out["grid_points"] = n * n
    log(f"  run --no-plot {n}x{n}: {run['best_s']:.3f} s; naive process {naive['best_s']:.3f} s "
        f"(with np.savez {naive_save['best_s']:.3f} s); run with figures {run_plot['best_s']:.3f} s")
    # start-up
    runs = mode["startup_runs"]
    for key, cmd in (("numpy", [sys.executable, "-c", "import numpy"]), ("help", phasediag_cmd("--help")),
                     ("solve", phasediag_cmd("solve"))):
        run_process(cmd, tmp, 1)  # warm the page cache
        r = run_process(cmd, tmp, runs)
        out[f"startup_{key}"] = _proc(r)
        log(f"  {' '.join(cmd[1:])}: median {r['median_s']:.3f} s")
    # the big sweep: workers 1 (peak memory) and 2 (speed-up, same bytes)
    nb = mode["big_n"]
    big = tmp / f"grid{nb}.yaml"
    big.write_text(config_text(nb))
    runs = {1: [], 2: []}
    for _ in range(mode["big_proc_repeats"]):  # interleaved, so both see the same machine state
        for w in (1, 2):
            cmd = phasediag_cmd("run", big, "--no-plot", "--json", "--workers", w, "--out", tmp / f"big_w{w}")
            r = run_process(cmd, tmp)
            runs[w].append({**_proc(r), "timing": json.loads(r["stdout"])["timing"]})
    arrays = npz_array_bytes(tmp / "big_w1" / "results.npz")
    out["big"] = {"grid_points": nb * nb, "result_bytes": arrays, "runs": {str(w): runs[w] for w in runs},
                  "identical": same_bytes(tmp / "big_w1" / "results.npz", tmp / "big_w2" / "results.npz")}
    for w in (1, 2):
        best = min(runs[w], key=lambda r: r["best_s"])
        out["big"][f"workers{w}"] = {**best, "peak_rss": max(r["peak_rss"] for r in runs[w]),
                                     "eval_best_s": min(r["timing"]["eval_s"] for r in runs[w]),
                                     "runs_s": [r["best_s"] for r in runs[w]]}
    w1, w2 = out["big"]["workers1"], out["big"]["workers2"]
    out["cold_big"] = cold_runs(nb, tmp) if nb != n else out["cold"]
    log(f"  {nb}x{nb} sweep: workers 1 {w1['best_s']:.2f} s (eval {w1['eval_best_s']:.2f} s), workers 2 "
        f"{w2['best_s']:.2f} s (eval {w2['eval_best_s']:.2f} s), peak RSS "
        f"{w1['peak_rss'] / 1e9:.2f} GB for {arrays / 1e9:.2f} GB of result arrays, "
        f"identical: {out['big']['identical']}")
    for d in ("big_w1", "big_w2"):
        _rmtree(tmp / d)
    # 100 shards of the shard_n grid, then merge
    out["merge"] = merge_benchmark(mode, tmp, log)
    return out


def merge_benchmark(mode: dict, tmp: Path, log) -> dict:
    from phasediag.engine import sweep
    from phasediag.jobs import lifecycle

    n = mode["shard_n"]
    cfg = tmp / f"shard{n}.yaml"
    cfg.write_text(config_text(n))
    single = run_process(phasediag_cmd("run", cfg, "--no-plot", "--json", "--out", tmp / "single"), tmp)
    shards = []
    t0 = time.perf_counter()
    for k in range(1, 101):
        d = tmp / "shards" / f"shard-{k:03d}"
        lifecycle.run(cfg, out=d, options=lifecycle.Options(shard=sweep.Shard(k, 100), plot=False))
        shards.append(str(d))
    shard_s = time.perf_counter() - t0
    merge = run_process(phasediag_cmd("merge", *shards, "--out", tmp / "merged", "--no-plot", "--json"), tmp)
    merge_plot = run_process(phasediag_cmd("merge", *shards, "--out", tmp / "merged_plot", "--json"), tmp)
    identical = same_bytes(tmp / "single" / "results.npz", tmp / "merged" / "results.npz")
    result_bytes = npz_array_bytes(tmp / "merged" / "results.npz")
    out = {"grid_points": n * n, "shards": 100, "shards_in_process_s": shard_s, "single_run": _proc(single),
           "merge": _proc(merge), "merge_plot": _proc(merge_plot), "identical": identical,
           "result_bytes": result_bytes}
    log(f"  merge of 100 shards ({n * n:,} points): {merge['best_s']:.3f} s (with figures "
        f"{merge_plot['best_s']:.3f} s), single run {single['best_s']:.3f} s, identical: {identical}")
    for d in ("shards", "single", "merged", "merged_plot"):
        _rmtree(tmp / d)
    return out


def _proc(r: dict) -> dict:
    return {k: r[k] for k in ("best_s", "median_s", "runs_s", "peak_rss", "user_s", "sys_s")}


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# 6. profile of the core

def profile_core(n: int, top: int = 14) -> dict:
    """cProfile of sweep.run on the n x n final-state grid: the functions with the most own time (numpy's
    ufuncs are not profiled, so their time is charged to the Python function that calls them)."""
    import cProfile
    import pstats

    from phasediag.engine import sweep

    config = make_config(n)
    sweep.run(config)  # warm
    prof = cProfile.Profile()
    prof.enable()
    t0 = time.perf_counter()
    sweep.run(config)
    wall = time.perf_counter() - t0
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{func}" if file != "~" else func, "calls": nc,
                     "own_s": tt, "cum_s": ct})
    rows.sort(key=lambda r: -r["own_s"])
    total = sum(r["own_s"] for r in rows)
    return {"points": n * n, "wall_s": wall, "profiled_s": total, "top": rows[:top]}


# ----------------------------------------------------------------------------------------------------------
# machine

def machine_info() -> dict:
    import scipy

    import phasediag

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "memory_bytes": mem,
            "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "phasediag": phasediag.__version__, "commit": commit,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


# ----------------------------------------------------------------------------------------------------------
# targets, figure, markdown

FIGURE_CONFIG = ROOT / "configs" / "1_width_vs_init.yaml"
TARGET_FIGURE_RATIO = 5.0  # the default `run` of config 1 (four maps) within 5x the same run with --no-plot


def figure_benchmarks(mode: dict, tmp: Path, log) -> dict:
    """The bundled config 1 as a user runs it: --no-plot, with its four default maps, and with the maps drawn
    by two worker processes; interleaved rounds (each sees the same machine state), best and median of k."""
    k = max(3, mode["proc_repeats"])
    rows = {"noplot": [], "plot": [], "plot_workers2": []}
    timing = {}
    for _ in range(k):
        for key, extra in (("noplot", ["--no-plot"]), ("plot", []), ("plot_workers2", ["--workers", "2"])):
            r = run_process(phasediag_cmd("run", FIGURE_CONFIG, "--json", "--out", tmp / f"fig_{key}", *extra),
                            tmp, 1)
            rows[key].append(r["best_s"])
            timing.setdefault(key, []).append(json.loads(r["stdout"])["timing"])
    out = {key: {"best_s": min(v), "median_s": float(np.median(v)), "runs_s": v} for key, v in rows.items()}
    for key in ("plot", "plot_workers2"):
        out[key]["plot_s"] = min(t.get("plot_s", 0.0) for t in timing[key])
    out["ratio"] = out["plot"]["best_s"] / out["noplot"]["best_s"]
    out["ratio_median"] = out["plot"]["median_s"] / out["noplot"]["median_s"]
    out["figures"] = len(json.loads((tmp / "fig_plot" / "meta.json").read_text())["figures"])
    log(f"  config 1: --no-plot {out['noplot']['best_s']:.2f} s, with figures {out['plot']['best_s']:.2f} s "
        f"({out['ratio']:.2f}x), --workers 2 {out['plot_workers2']['best_s']:.2f} s")
    return out


def targets(res: dict) -> list[dict]:
    """One row per target of the issue: what, measured, required, PASS/FAIL (None: informational)."""
    thr = {r["points"]: r for r in res["throughput"]}
    at = thr.get(1000 * 1000) or max(res["throughput"], key=lambda r: r["points"])
    N = at["points"]
    largest = max(res["throughput"], key=lambda r: r["points"])
    rows = []

    def add(name, value, required, ok, note=""):
        rows.append({"target": name, "measured": value, "required": required, "pass": ok, "note": note})

    rate = N / at["core_inf"]
    naive = at["core_inf"] / at["naive_inf"]
    add(f"final-state metrics, 1 process, {N:,} points (t = inf) / the naive pass (same run)",
        f"{at['core_inf']:.3f} s / {at['naive_inf']:.3f} s = {naive:.2f}x", f"<= {TARGET_NAIVE_RATIO:g}x",
        naive <= TARGET_NAIVE_RATIO, f"here {rate:.3g} points/s (median {N / at['core_inf_median']:.3g}/s); "
        f"{largest['points']:,} points: {largest['core_inf'] / largest['naive_inf']:.2f}x, "
        f"{largest['points'] / largest['core_inf']:.3g}/s")
    floor = at["core_inf"] / at["floor_inf"]
    add(f"final-state evaluation / the fresh-memory write floor of its bytes, {N:,} points (same run)",
        f"{at['core_inf']:.3f} s / {at['floor_inf']:.3f} s = {floor:.2f}x", f"<= {TARGET_FLOOR_RATIO:g}x",
        floor <= TARGET_FLOOR_RATIO, f"{largest['points']:,} points: "
        f"{largest['core_inf'] / largest['floor_inf']:.2f}x")
    if "gd_maps" in res:  # (absent from the JSON of runs before it was measured)
        g = res["gd_maps"]
        rate_gd = g["points"] / g["gd"]
        add(f"exact GD map, config 7 on {g['points']:,} points, 1 process / the gradient-flow map of the same "
            "grid (same run)", f"{g['gd']:.3f} s / {g['flow']:.3f} s = {g['gd'] / g['flow']:.1f}x",
            f"<= {TARGET_GD_FLOW_RATIO:g}x", g["gd"] / g["flow"] <= TARGET_GD_FLOW_RATIO,
            f"outcomes decided at step {g['mean_steps']:.1f}, runs left at step "
            f"{g.get('mean_run_steps', float('nan')):.1f} on average (max_steps {g['max_steps']:,})")
        add(f"exact GD map, config 7 on {g['points']:,} points, 1 process (the issue's absolute figure)",
            f"{rate_gd:.3g} points/s", f">= {TARGET_GD_RATE:.0e} points/s", rate_gd >= TARGET_GD_RATE,
            "on this machine; the ratio above is the target that holds on any machine")
    for key, b in (res.get("boundaries") or {}).items():  # (absent from the JSON of earlier runs)
        add(f"exact phase boundaries of config 17 on {b['grid_points']:,} points"
            + (f" x {b['seeds']} sampled initializations" if key == "seeds" else ""),
            f"{b['find']:.3f} s for {b['crossings']:,} crossings", "(information)", None,
            f"{b['find'] / b['eval']:.2f}x the evaluation of the grid itself ({b['eval']:.3f} s, same run)")
    with_traj = [r for r in res["throughput"] if "core_traj" in r]
    if with_traj:
        tr = max(with_traj, key=lambda r: r["points"])
        traj = tr["points"] * TRAJ_TIMES / tr["core_traj"]
        per = (tr["core_traj"] / TRAJ_TIMES) / tr["core_inf"]
        add(f"trajectories at a finite horizon, {tr['points']:,} points x {TRAJ_TIMES} times to T = {FINITE_T:g} "
            "(plus the metrics at T): time per (point, time) / per final-state point (same run)", f"{per:.2f}x",
            f"<= {TARGET_HORIZON_RATIO:g}x", per <= TARGET_HORIZON_RATIO,
            f"here {traj:.3g} (point, time)/s (median {tr['points'] * TRAJ_TIMES / tr['core_traj_median']:.3g}/s); "
            f"{tr['points'] / tr['core_traj']:.3g} points/s")
    rate_T = N / at["core_T"]
    horizon = at["core_T"] / at["core_inf"]
    add(f"final-state metrics at the finite horizon T = {FINITE_T:g} / at t = inf, {N:,} points (same run)",
        f"{at['core_T']:.3f} s / {at['core_inf']:.3f} s = {horizon:.2f}x", f"<= {TARGET_HORIZON_RATIO:g}x",
        horizon <= TARGET_HORIZON_RATIO, f"here {rate_T:.3g} points/s (median {N / at['core_T_median']:.3g}/s); "
        f"naive pass {N / at['naive_T']:.3g}/s")
    p = res["process"]
    ratio = p["run_noplot"]["best_s"] / p["naive_process"]["best_s"]
    ratio_save = p["run_noplot"]["best_s"] / p["naive_process_save"]["best_s"]
    add(f"`phasediag run --no-plot`, {p['grid_points']:,} points, whole process / naive pass in one process",
        f"{p['run_noplot']['best_s']:.2f} s / {p['naive_process']['best_s']:.2f} s = {ratio:.2f}x", "<= 3x",
        ratio <= TARGET_RUN_RATIO, f"vs the naive pass that also writes np.savez "
        f"({p['naive_process_save']['best_s']:.2f} s): {ratio_save:.2f}x")
    t = p["run_plot"]["timing"]
    add(f"`phasediag run` with the default figures, {p['grid_points']:,} points", f"{p['run_plot']['best_s']:.2f} s",
        "(information: the ratio to --no-plot below is the target)", None,
        f"eval {t['eval_s']:.2f} s, save {t['save_s']:.2f} s, plot {t.get('plot_s', 0):.2f} s")
    if "figures" in res:
        f = res["figures"]
        add(f"`phasediag run configs/1_width_vs_init.yaml` ({f['figures']} default maps) / the same with --no-plot, "
            "same minute", f"{f['plot']['best_s']:.2f} s / {f['noplot']['best_s']:.2f} s = {f['ratio']:.2f}x",
            f"<= {TARGET_FIGURE_RATIO:g}x", f["ratio"] <= TARGET_FIGURE_RATIO,
            f"medians {f['ratio_median']:.2f}x; drawing {f['plot']['plot_s']:.2f} s")
        add("the same maps drawn by `--workers 2` / by one process (drawing time, timing.plot_s)",
            f"{f['plot_workers2']['plot_s']:.2f} s / {f['plot']['plot_s']:.2f} s = "
            f"{f['plot_workers2']['plot_s'] / f['plot']['plot_s']:.2f}x", "(information)", None,
            f"whole process {f['plot_workers2']['best_s']:.2f} s vs {f['plot']['best_s']:.2f} s")
    big = p["big"]
    peak, arrays = big["workers1"]["peak_rss"], big["result_bytes"]
    limit = 2 * arrays + TARGET_MEM_EXTRA
    add(f"peak memory of a {big['grid_points']:,}-point sweep (`run --no-plot`, whole process)",
        f"{peak / 1e9:.2f} GB", f"<= 2 x {arrays / 1e9:.2f} GB + 0.4 GB = {limit / 1e9:.2f} GB", peak <= limit,
        f"{peak / arrays:.2f}x the result arrays; with --workers 2: {big['workers2']['peak_rss'] / 1e9:.2f} GB "
        "(largest process)")
    bare = p.get("startup_numpy")
    for key, label in (("help", "`phasediag --help`"), ("solve", "`phasediag solve`")):
        s = p[f"startup_{key}"]
        if bare is None:  # (the JSON of a run before the reference was measured)
            add(f"{label} start-up (median of {len(s['runs_s'])})", f"{s['median_s'] * 1e3:.0f} ms", "(information)",
                None, f"best {s['best_s'] * 1e3:.0f} ms")
            continue
        ratio = s["median_s"] / bare["median_s"]
        add(f"{label} start-up / `python -c \"import numpy\"` (medians of {len(s['runs_s'])}, same run)",
            f"{s['median_s'] * 1e3:.0f} ms / {bare['median_s'] * 1e3:.0f} ms = {ratio:.2f}x",
            f"<= {TARGET_STARTUP_RATIO:g}x", ratio <= TARGET_STARTUP_RATIO, f"best {s['best_s'] * 1e3:.0f} ms")
    e1, e2 = big["workers1"]["eval_best_s"], big["workers2"]["eval_best_s"]
    w1, w2 = big["workers1"]["best_s"], big["workers2"]["best_s"]
    c1 = big["workers1"]["user_s"]
    c2 = big["workers2"]["user_s"]
    sc = res["sweep_ceiling"]
    ceiling = sc["speedup"]
    if "workers_speedup" in sc:  # (measured in turn with the ceiling, from the JSON of runs since 2026-12-03)
        points, sw1, sw2 = sc["points"], sc["workers1_s"], sc["workers2_s"]
        sw1_median, sw2_median = sc["workers1_s_median"], sc["workers2_s_median"]
    else:
        thr_big = max(res["throughput"], key=lambda r: r["points"])
        points, sw1, sw2 = thr_big["points"], thr_big["core_inf"], thr_big["core_inf_w2"]
        sw1_median, sw2_median = thr_big["core_inf_median"], thr_big["core_inf_w2_median"]
    speedup = sw1 / sw2
    need = TARGET_EFFICIENCY * min(2.0, ceiling)
    add(f"`workers=2` vs 1 on {points:,} points (`sweep.run`, one long process, best of k, measured in turn with "
        f"the ceiling; {res['worker_scaling']['kind']}; the time of workers=2 includes this process's first read "
        "of every page of the result)", f"{speedup:.2f}x",
        f">= {TARGET_EFFICIENCY:g} x {min(2.0, ceiling):.2f} = {need:.2f}x ({TARGET_EFFICIENCY:.0%} of what perfect "
        f"sharding gains here: two independent processes on one half each, {ceiling:.2f}x)", speedup >= need,
        f"{sw1:.2f} s -> {sw2:.2f} s; medians {sw1_median:.2f} s -> {sw2_median:.2f} s; {speedup / ceiling:.0%} of the "
        "ceiling")
    if "streamed_speedup" in sc:  # (from the JSON of runs since 2026-12-04)
        ceiling, speedup = sc["streamed_speedup"], sc["streamed_workers_speedup"]
        add(f"`workers=2` vs 1 on {points:,} points streamed into a run directory's checkpoint as `phasediag run` "
            "writes it (`sweep.run(checkpoint=...)`: written in place chunk by chunk, made durable, completed; "
            "one long process, best of k, in turn with its ceiling)", f"{speedup:.2f}x",
            f"(information: perfect sharding streamed the same way, two independent processes each streaming one "
            f"half, gains {ceiling:.2f}x here; it rests on the disk's writeback: the one-process run took "
            f"{min(sc['streamed_whole_s_runs']):.1f}-{max(sc['streamed_whole_s_runs']):.1f} s over the rounds)", None,
            f"{sc['streamed_workers1_s']:.2f} s -> {sc['streamed_workers2_s']:.2f} s; medians "
            f"{sc['streamed_workers1_s_median']:.2f} s -> {sc['streamed_workers2_s_median']:.2f} s; "
            f"{speedup / ceiling:.0%} of the ceiling (one process {sc['streamed_whole_s']:.2f} s, halves "
            f"{sc['streamed_halves_s']:.2f} s)")
    add(f"`--workers 2` vs 1 on {big['grid_points']:,} points (`run --no-plot`, fresh processes, best of "
        f"{len(big['runs']['1'])} interleaved): evaluation speed-up", f"{e1 / e2:.2f}x", "(information)", None,
        f"eval {e1:.2f} s -> {e2:.2f} s; user CPU of the whole process {c1:.2f} s -> {c2:.2f} s (workers included)")
    add("`--workers 2` vs 1: whole process", f"{w1 / w2:.2f}x", "(information: saving is serial)", None,
        f"{w1:.2f} s -> {w2:.2f} s")
    if "result_memory" in res:  # (absent from the JSON of runs before it was measured)
        rm = res["result_memory"]
        add("result memory of the largest sweep written as two halves of the workers' result (files in memory, "
            "written with pwrite chunk by chunk, as the workers do) / as two private halves (fresh processes)",
            f"{rm['shared_halves']:.3f} s / {rm['private_halves']:.3f} s = "
            f"{rm['shared_halves'] / rm['private_halves']:.2f}x",
            "(information: what holding the result in one process costs the memory system; the workers pay it "
            "while they compute)", None,
            f"{rm['points']:,} points; in one process {rm['private_whole']:.3f} s")
    pc = res["parallel_ceiling"]
    add("two independent numpy processes on in-cache work (no fresh memory) vs one doing both",
        f"{pc['speedup']:.2f}x", "(information: how the two CPUs scale)", None,
        f"{pc['serial_s']:.3f} s -> {pc['parallel_s']:.3f} s")
    ws = res["worker_scaling"]
    for kind in ("processes",):
        add(f"`workers=2` ({kind}) vs 1, chunk evaluation alone ({ws['points']:,} points in {ws['chunks']} chunks, "
            "into result arrays already in memory)", f"{ws['w1'] / ws[f'w2_{kind}']:.2f}x",
            "(information: the computing's own scaling)", None,
            f"{ws['w1']:.3f} s -> {ws[f'w2_{kind}']:.3f} s; medians {ws['w1_median']:.3f} s -> "
            f"{ws[f'w2_{kind}_median']:.3f} s")
    add("`--workers 2` changes no bit of results.npz", "identical" if big["identical"] else "DIFFERENT",
        "byte-identical", big["identical"])
    m = p["merge"]
    merge_ok = (m["merge"]["best_s"] <= MERGE_TIME_RATIO * m["single_run"]["best_s"]
                and m["merge"]["peak_rss"] <= m["result_bytes"] + MERGE_MEM_EXTRA)
    add(f"`phasediag merge` of 100 shards ({m['grid_points']:,} points, --no-plot, whole process)",
        f"{m['merge']['best_s']:.2f} s, peak {m['merge']['peak_rss'] / 1e6:.0f} MB",
        f"<= {MERGE_TIME_RATIO:g}x `run --no-plot` of the whole grid ({m['single_run']['best_s']:.2f} s) and peak <= "
        f"the result arrays ({m['result_bytes'] / 1e6:.0f} MB) + {MERGE_MEM_EXTRA / 1e6:.0f} MB (our criterion: "
        "merge reads and rewrites every array, run computes and writes them once)", merge_ok,
        f"{m['merge']['best_s'] / m['single_run']['best_s']:.2f}x the run; with figures "
        f"{m['merge_plot']['best_s']:.2f} s")
    add("merged shards == one run (results.npz)", "identical" if m["identical"] else "DIFFERENT", "byte-identical",
        m["identical"])
    return rows


def draw_figure(res: dict, path: Path) -> None:
    """Left: wall time against grid size (log-log); right: throughput. One legend below both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["throughput"]
    N = np.array([r["points"] for r in rows], dtype=float)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.5, 7.0))
    series = [("core_inf", "core, t = inf (sweep.run, 1 process)", "C0", "o-"),
              ("core_T", f"core, T = {FINITE_T:g}", "C0", "s--"),
              ("core_traj", f"core, trajectories: {TRAJ_TIMES} times to T = {FINITE_T:g} "
                            "(right: (point, time)/s)", "C4", "^-"),
              ("core_inf_w2", "core, t = inf, workers = 2", "C2", "D-"),
              ("naive_inf", "naive numpy pass, t = inf (whole grid at once)", "C1", "o-"),
              ("naive_T", f"naive numpy pass, T = {FINITE_T:g}", "C1", "s--")]
    for key, label, color, style in series:
        pts = [(r["points"], r[key]) for r in rows if key in r]
        if not pts:
            continue
        x, y = np.array(pts, dtype=float).T
        ax.loglog(x, y, style, color=color, label=label, ms=5)
        bx.loglog(x, x * (TRAJ_TIMES if key == "core_traj" else 1) / y, style, color=color, ms=5)
    xs = np.logspace(2, math.log10(max(N.max(), 1e7)), 50)
    p = res["process"]
    proc = [([p["grid_points"], p["big"]["grid_points"]], [p["run_noplot"]["best_s"], p["big"]["workers1"]["best_s"]],
             "k", "v", "`phasediag run --no-plot`, whole process"),
            ([p["big"]["grid_points"]], [p["big"]["workers2"]["best_s"]], "C2", "v",
             "`phasediag run --no-plot --workers 2`, whole process"),
            ([p["grid_points"]], [p["run_plot"]["best_s"]], "k", "P", "`phasediag run` with the default figures"),
            ([p["grid_points"]], [p["naive_process"]["best_s"]], "C1", "X", "naive pass in a fresh process")]
    for x, y, color, marker, label in proc:
        ax.loglog(x, y, marker, color=color, ms=9, mfc="none", mew=1.5, label=label)
    for key, label, color in (("ivp", "scipy solve_ivp (LSODA) on the 1-D ODE, t = inf", "C3"),
                              ("gd", f"explicit GD of the vectors, width {GD_WIDTH}, T = {FINITE_T:g}", "C5")):
        r = res[key]["inf"] if key == "ivp" else res[key]
        ax.loglog(xs, r["mean_s"] * xs, ":", color=color, label=f"{label}: mean cost per point x N (extrapolated)")
        ax.loglog([r["sample"]], [r["total_s"]], "*", color=color, ms=12,
                  label=f"{label}: measured on its {r['sample']}-point sample")
        bx.loglog(xs, np.full_like(xs, 1 / r["mean_s"]), ":", color=color)
    ax.set(xlabel="grid points N", ylabel="wall time [s]", title="time against grid size (best of k)")
    bx.set(xlabel="grid points N", ylabel="points per second", title="throughput")
    for a in (ax, bx):
        a.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"phasediag {res['machine']['phasediag']}, config 1 (width x initial variance), "
                 f"{res['machine']['cpu']}, {res['machine']['usable_cores']} cores ({res['mode']} run)", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.24, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


def _fmt_rate(x):
    return f"{x:.3g}"


def _e(x):
    return "-" if x is None else ("inf" if math.isinf(x) else f"{x:.1e}")


def markdown(res: dict, figure_path: Path, out_path: Path) -> str:
    m = res["machine"]
    mode = res["mode"]
    rel_fig = os.path.relpath(figure_path, out_path.parent)
    L = []
    add = L.append
    add("# Benchmarks")
    add("")
    add("Generated by `benchmarks/bench.py` (do not edit by hand; re-run it). Reproduce with")
    add("")
    add("```bash")
    took = f"{res['bench_s'] / 60:.0f} min" if mode == "full" and res.get("bench_s") else "several minutes"
    add(f"python benchmarks/bench.py            # full run ({took} on the machine below): writes this file and the "
        "figure")
    add("python benchmarks/bench.py --quick    # smoke run, < 1 min")
    add("```")
    add("")
    add(f"Run: **{mode}** mode, {m['date']}. Machine: {m['cpu']}, {m['usable_cores']} usable cores of "
        f"{m['cores']}, {(m['memory_bytes'] or 0) / 2**30:.0f} GiB; {m['os']}; Python {m['python']}, numpy "
        f"{m['numpy']}, scipy {m['scipy']}; phasediag {m['phasediag']}"
        + (f" (commit {m['commit']})" if m["commit"] else "") + ". Load average at start "
        f"{_load(m['load_start'])}, at end {_load(res.get('load_end'))} (a shared machine makes timings noisy; "
        "every timing is the best of k runs).")
    add("")
    add("One grid for everything: the bundled `configs/1_width_vs_init.yaml` (width d in [1, 1e6] x initial "
        "variance sigma^2 in [1e-8, 1], log-spaced; kappa = 1, eta_u = eta_w = 1, a = m* = 1, typical "
        "initialization) with both counts `121` replaced by n, so N = n^2 points; `train: {horizon: inf}` "
        f"(final state), `{{horizon: {FINITE_T:g}}}`, or `{{horizon: {FINITE_T:g}, times: {{log: [0.01, "
        f"{FINITE_T:g}, {TRAJ_TIMES}]}}}}` (trajectories). \"Core\" is the sweep engine in one process "
        "(`sweep.run(config, workers=1)`: grid values, chunked evaluation of all 20 stored metrics into the "
        "result arrays; no file I/O). The naive pass is docs/theory.md sections 4-6 taken literally in numpy over the whole "
        "grid at once (`naive_pass` in the script).")
    add("")
    add("## Performance targets")
    add("")
    add("| target | measured | required | result | notes |")
    add("| --- | --- | --- | --- | --- |")
    for t in res["targets"]:
        verdict = "info" if t["pass"] is None else ("**PASS**" if t["pass"] else "**FAIL**")
        add(f"| {t['target']} | {t['measured']} | {t['required']} | {verdict} | {t['note']} |")
    add("")
    add("## Throughput against grid size")
    add("")
    add(f"![time and throughput against grid size]({rel_fig})")
    add("")
    add("Points per second (trajectories: (point, time) pairs per second), best of "
        f"{MODES[mode]['repeats']} ({MODES[mode]['big_repeats']} at N >= 5e6), in this process:")
    add("")
    add(f"| N | core t = inf | core T = {FINITE_T:g} | core trajectories | core t = inf, 2 workers | naive t = inf "
        f"| naive T = {FINITE_T:g} |")
    add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in res["throughput"]:
        N = r["points"]

        def cell(key, per=1):
            if key not in r:
                return "-"
            return f"{_fmt_rate(N * per / r[key])} ({_fmt_rate(N * per / r[key + '_median'])})"

        add(f"| {N:,} | {cell('core_inf')} | {cell('core_T')} | {cell('core_traj', TRAJ_TIMES)} | "
            f"{cell('core_inf_w2')} | {cell('naive_inf')} | {cell('naive_T')} |")
    add("")
    add("(best, and in parentheses the median of the k runs.)")
    add("")
    if res.get("other_grids"):
        add("Config 1 is a favourable grid: unit output scale and rates, balanced layers, V = 0, so several "
            "passes of the closed form reduce to scalars. The same measurement on other grids "
            f"({res['other_grids'][0]['points']:,} points, all stored metrics, best (median)):")
        add("")
        add("| grid | core t = inf |")
        add("| --- | ---: |")
        for r in res["other_grids"]:
            add(f"| {r['grid']} | {_fmt_rate(r['points'] / r['core_inf'])} "
                f"({_fmt_rate(r['points'] / r['core_inf_median'])}) |")
        add("")
        add("With a sampled initialization the exact Gram sampling (counter-based chi-square draws, "
            "bit-identical under any chunking) dominates the cost.")
        add("")
    add("## Accuracy")
    add("")
    add("Errors are in docs/theory.md section 8's units: m relative to max(|m|, min(sqrt(m^2 + g^2), |m0| + |m*|)); "
        "zeta (alignments) the same divided by sqrt(m^2 + kappa^2 G); everything else relative. \"> 1e-6\" counts "
        "points where the quantity is off by more than 1e-6 or not finite. The core is the reference over the "
        "whole grid after its own check against mpmath on the sample below.")
    add("")
    cost = res["cost_per_point"]
    ref = res["reference"]
    ivp, gd = res["ivp"], res["gd"]
    add("| method | cost per point | sample | worst m error | worst NTK / ntk_change error | points > 1e-6 | "
        "non-finite | phase labels that differ |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, label in (("inf", "t = inf"), ("T", f"T = {FINITE_T:g}")):
        r = ref[key]["worst"]["core"]
        add(f"| core ({label}) vs mpmath | {cost['core_' + key] * 1e9:.0f} ns | {ref['sample']} | {_e(r['m_final'])} "
            f"| {_e(r['ntk_final'])} / {_e(r['ntk_change'])} | - | - | {ref[key]['label_disagree']['core']} |")
    for key, label in (("inf", "t = inf"), ("T", f"T = {FINITE_T:g}")):
        a = res["naive_accuracy"][key]
        mt = a["metrics"]
        add(f"| naive pass ({label}) vs core | {cost['naive_' + key] * 1e9:.0f} ns | {a['points']:,} (all) | "
            f"{_e(mt['m_final']['worst'])} | {_e(mt['ntk_final']['worst'])} / {_e(mt['ntk_change']['worst'])} | "
            f"{a['points_bad']:,} | {a['points_nonfinite']:,} | {a['phase_disagree']:,} |")
    for key, label in (("inf", "t = inf, integrated to t_learn + 40 tau"), ("T", f"T = {FINITE_T:g}")):
        r = ivp[key]
        add(f"| solve_ivp LSODA ({label}) vs core | {r['mean_s'] * 1e3:.2f} ms | {r['sample']} | {_e(r['worst_m'])} | "
            f"{_e(r['worst_ntk'])} / {_e(r['worst_ntk_change'])} | {r['bad']} | {r['failed']} failed | - |")
    add(f"| explicit GD, width {gd['width']} (T = {FINITE_T:g}) vs core | {gd['mean_s'] * 1e3:.1f} ms | "
        f"{gd['sample']} | {_e(gd['worst_m'])} | {_e(gd['worst_ntk'])} / - | {gd['bad']} | - | - |")
    add("")
    add(f"Sample points are drawn at random (seed 0) from the {res['accuracy_n']} x {res['accuracy_n']} grid. "
        f"mpmath (tests/reference.py, adaptive precision) costs {ref['reference_s_per_point'] * 1e3:.1f} ms per "
        f"(point, time); on {ref['t_learn']['sample']} points its t_learn gives worst relative error "
        f"{_e(ref['t_learn']['worst']['core'])} for the core and {_e(ref['t_learn']['worst']['naive'])} for the "
        "naive pass. The naive pass against mpmath on the same sample: worst "
        + ", ".join(f"{k} {_e(v)}" for k, v in ref["inf"]["worst"]["naive"].items()) + " (t = inf); "
        + ", ".join(f"{k} {_e(v)}" for k, v in ref["T"]["worst"]["naive"].items()) + f" (T = {FINITE_T:g}).")
    add("")
    add(f"solve_ivp: median {ivp['inf']['median_nfev']:.0f} right-hand-side evaluations per point; its ntk_change "
        "is formed from m by the well-conditioned NTK law, so it inherits m's error only. (An explicit method is no "
        "alternative: DOP853 took minutes on a single stiff point, a Theta0 = 2e6 at T = 10.) "
        f"Explicit GD: mean {gd['mean_steps']:.0f} steps of a Theta_max h <= {GD_STEP:g} "
        f"({gd['capped']} of {gd['sample']} points hit the {MODES[mode]['gd_max_steps']:,}-step cap, so a coarser "
        f"step, up to a Theta h = {gd['max_step']:.2g}); its error is the Euler discretization error, O(h) "
        f"(median m error {_e(gd['median_m'])}, NTK {_e(gd['median_ntk'])}).")
    add("")
    add("Naive pass, per metric over the whole grid (worst error / points > 1e-6 / non-finite):")
    add("")
    add(f"| metric | t = inf | T = {FINITE_T:g} |")
    add("| --- | --- | --- |")
    for name, a in res["naive_accuracy"]["inf"]["metrics"].items():
        b = res["naive_accuracy"]["T"]["metrics"][name]
        add(f"| {name} | {_cell(a)} | {_cell(b)} |")
    add("")
    add("## Whole processes")
    add("")
    p = res["process"]
    add("| command | wall time (best) | peak RSS | inside the process |")
    add("| --- | ---: | ---: | --- |")
    for key, label in (("naive_process", f"naive pass, fresh `python` (numpy only), {p['grid_points']:,} points"),
                       ("naive_process_save", "the same + `np.savez` of the 20 arrays"),
                       ("run_noplot", f"`phasediag run --no-plot`, {p['grid_points']:,} points"),
                       ("run_plot", "`phasediag run` (4 default maps, png)"),
                       ("startup_numpy", "`python -c \"import numpy\"` (the start-up reference)"),
                       ("startup_help", "`phasediag --help`"), ("startup_solve", "`phasediag solve`")):
        if key not in p:  # (the JSON of a run before the reference was measured)
            continue
        r = p[key]
        inside = _timing(r.get("timing"))
        add(f"| {label} | {r['best_s']:.3f} s | {r['peak_rss'] / 1e6:.0f} MB | {inside} |")
    big = p["big"]
    for w in (1, 2):
        for i, r in enumerate(big["runs"][str(w)], 1):
            add(f"| `run --no-plot --workers {w}`, {big['grid_points']:,} points, run {i} | {r['best_s']:.2f} s | "
                f"{r['peak_rss'] / 1e9:.2f} GB | {_timing(r['timing'])}; CPU user {r['user_s']:.2f} s, "
                f"system {r['sys_s']:.2f} s |")
    mg = p["merge"]
    add(f"| `phasediag run --no-plot`, {mg['grid_points']:,} points | {mg['single_run']['best_s']:.3f} s | "
        f"{mg['single_run']['peak_rss'] / 1e6:.0f} MB | |")
    add(f"| `phasediag merge` of its 100 `--shard K/100` parts, `--no-plot` | {mg['merge']['best_s']:.3f} s | "
        f"{mg['merge']['peak_rss'] / 1e6:.0f} MB | |")
    add(f"| the same, with the default figures | {mg['merge_plot']['best_s']:.3f} s | "
        f"{mg['merge_plot']['peak_rss'] / 1e6:.0f} MB | |")
    add("")
    add(f"Result arrays of the {big['grid_points']:,}-point sweep: {big['result_bytes'] / 1e9:.2f} GB "
        f"({big['result_bytes'] / big['grid_points']:.0f} bytes per point); peak RSS "
        f"{big['workers1']['peak_rss'] / 1e9:.2f} GB. "
        f"The 100 shards were written in this process ({mg['shards_in_process_s']:.1f} s in all). This benchmark's "
        f"own peak RSS: {res['bench_peak_rss'] / 1e9:.2f} GB; it ran for {res.get('bench_s', 0):.0f} s.")
    add("")
    add("## Where the time goes")
    add("")
    prof = res["profile"]
    add(f"cProfile of `sweep.run` on {prof['points']:,} points (t = inf; {prof['wall_s']:.3f} s profiled wall "
        "time). Own time of each Python function, including the numpy calls it makes (ufuncs are not profiled "
        "separately):")
    add("")
    add("| function | calls | own time | share | cumulative |")
    add("| --- | ---: | ---: | ---: | ---: |")
    for r in prof["top"]:
        add(f"| `{r['function']}` | {r['calls']} | {r['own_s'] * 1e3:.1f} ms | "
            f"{100 * r['own_s'] / prof['profiled_s']:.0f} % | {r['cum_s'] * 1e3:.1f} ms |")
    add("")
    pr = res["process"]
    cold = [(f"{pr['grid_points']:,}", pr["cold"])]
    if pr["big"]["grid_points"] != pr["grid_points"]:
        cold.append((f"{pr['big']['grid_points']:,}", pr["cold_big"]))
    add("`sweep.run` (workers = 1), three successive calls in a fresh process: wall, user and system (kernel) "
        "time, minor page faults. The system time is the kernel handing out fresh zeroed pages, mostly for the "
        "result arrays, which every call maps anew (private anonymous mappings, with transparent-huge-page "
        "advice up to 256 MiB of results and pre-faulted (MAP_POPULATE) above, "
        "`sweep.allocate`: in 4 KiB pages the faults alone cost more than copying the values in); a best-of-k "
        "timing in a long process cannot avoid it either, since the results of each call are fresh memory.")
    add("")
    add("| N | call | wall | user | system | page faults |")
    add("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for N, rows in cold:
        for i, r in enumerate(rows, 1):
            add(f"| {N} | {i} | {r['wall_s']:.3f} s | {r['user_s']:.3f} s | {r['sys_s']:.3f} s | "
                f"{r['page_faults']:,} |")
    add("")
    L.extend(slurm_section(res))
    return "\n".join(L) + "\n"


def _cell(a: dict) -> str:
    if a["kind"] == "label":
        return f"{a['disagree']:,} differ"
    return f"{_e(a['worst'])} / {a['bad']:,} / {a['nonfinite']:,}"


def _timing(t) -> str:
    if not t:
        return ""
    return ", ".join(f"{k.replace('_s', '')} {v:.2f} s" for k, v in t.items() if isinstance(v, (int, float)))


def _load(x) -> str:
    return "-" if not x else " / ".join(f"{v:.2f}" for v in x)


def slurm_section(res: dict) -> list[str]:
    p = res["process"]
    big = p["big"]
    mg = p["merge"]
    n_big = big["grid_points"]
    per_point_s = big["workers1"]["best_s"] / n_big                # whole process, 1 core, incl. saving
    eval_per_point = big["workers1"]["eval_best_s"] / n_big
    bytes_pp = big["result_bytes"] / n_big
    peak_pp = big["workers1"]["peak_rss"] / n_big
    core_h = 1e9 * per_point_s / 3600
    shard_points = 1e9 / 100
    shard_mem = peak_pp * shard_points
    merge_pp = mg["merge"]["best_s"] / mg["grid_points"]
    L = []
    add = L.append
    add("## Running a very large sweep on a SLURM cluster")
    add("")
    add("A grid too big for one process or one node's memory is cut into N contiguous parts with `--shard K/N`; each part is an ordinary run that writes its own `results.npz`, and `phasediag merge` joins them into the result a single run would have written, bit for bit (checked above for 100 shards). With `--resume` an array task that was killed (time limit, pre-emption) restarts from its last checkpoint (finished chunks are saved every `--checkpoint-every` seconds, default 5, and at once when the task is stopped with SIGTERM, as SLURM does at the time limit), and a task whose part is complete does nothing, so re-submitting the whole array re-runs only what is missing. The repository carries a worked example: `configs/big.yaml` (config 1 on a 3162 x 3162 grid, 9,998,244 points, the 1e7-point grid measured above, storing four metrics via `metrics:`), `examples/slurm/job.sh` (a 100-task array: task K runs `phasediag run configs/big.yaml --shard K/100` into the default shard directory `outputs/big/shard-KKKK-of-0100/`) and `examples/slurm/merge.sh` (the merge step). The core of `examples/slurm/job.sh`:")
    add('')
    add('```bash')
    add('#SBATCH --job-name=phasediag-big')
    add('#SBATCH --array=1-100')
    add('#SBATCH --cpus-per-task=2')
    add('#SBATCH --mem=4G')
    add('#SBATCH --time=00:30:00')
    add('NSHARDS=100        # fixed: re-submitting some ids with --array=3,17 must still mean "K of 100"')
    add('. "${PHASEDIAG_VENV:-.venv}/bin/activate"')
    add('exec phasediag run configs/big.yaml --quiet --resume --no-plot \\')
    add('    --workers "${SLURM_CPUS_PER_TASK:-1}" --shard "$SLURM_ARRAY_TASK_ID/$NSHARDS"')
    add('```')
    add('')
    add('Submit both from the repository root, the merge once every task has finished successfully:')
    add('')
    add('```bash')
    add('jid=$(sbatch --parsable examples/slurm/job.sh)')
    add('sbatch --dependency=afterok:"$jid" examples/slurm/merge.sh   # phasediag merge outputs/big/shard-*-of-0100 --out outputs/big')
    add('```')
    add('')
    add("If some tasks failed, `sbatch --array=<their ids> examples/slurm/job.sh` (or the whole array again: `--resume` skips finished parts) before merging; `merge` refuses an incomplete or mixed set of shards. For another config, change `CONFIG` in `job.sh` and `NAME` (the config's `name:`) in `merge.sh`, and `NSHARDS` in both together with `--array`; for grids of 1e9 points and more submit the merge with `PHASEDIAG_MERGE_FLAGS=--no-plot` (see the merge item below).")
    add("")
    add("**Cost estimate** from the measurements above (config 1's 20 metrics, final state; a config with "
        "`times` stores 5 x 8 bytes more per point and time):")
    add("")
    add(f"- compute: {per_point_s * 1e9:.0f} ns per point for a whole `run --no-plot` process on one core "
        f"(of which evaluation {eval_per_point * 1e9:.0f} ns; the rest is saving and start-up), i.e. "
        f"**{core_h:.2g} core-hours per 1e9 points**. This is so small that the sweep is bound by storage, "
        "not CPU: a task of 1e7 points takes seconds, so a few large shards beat many small ones (each task "
        "pays ~0.5 s of start-up and the scheduler's overhead). `--workers 2` took the evaluation from "
        f"{big['workers1']['eval_best_s']:.2f} s to {big['workers2']['eval_best_s']:.2f} s here (forked worker "
        "processes, each writing its chunks straight into the result arrays), while saving stays serial; on a "
        "cluster, `--cpus-per-task=2 --workers 2` with half as many tasks gives fewer, larger files to merge for "
        f"{2 * big['workers2']['best_s'] / big['workers1']['best_s'] - 1:.0%} more core-hours (whole processes), "
        "so one core per task is the cheaper choice when the queue is not the limit.")
    add(f"- results: {bytes_pp:.0f} bytes per point, i.e. **{bytes_pp * 1e9 / 1e9:.0f} GB per 1e9 points** on "
        "disk (results.npz is uncompressed); the shards and the merged copy together take twice that.")
    add(f"- memory per task: the peak RSS was {big['workers1']['peak_rss'] / 1e9:.2f} GB at {n_big:,} points "
        f"({peak_pp:.0f} bytes per point, interpreter included); a shard of 1e9/100 = 1e7 points needs "
        f"~{shard_mem / 1e9:.1f} GB, so `--mem=4G` fits with room to spare.")
    add(f"- merge: {mg['merge']['best_s']:.2f} s for 100 shards of {mg['grid_points'] // 100:,} points "
        f"({merge_pp * 1e9:.0f} ns per point, peak RSS {mg['merge']['peak_rss'] / 1e6:.0f} MB for "
        f"{mg['result_bytes'] / 1e6:.0f} MB of arrays, "
        f"{mg['merge']['peak_rss'] / mg['result_bytes']:.2f}x, start-up included). `merge` lays out the joined "
        "results.npz and copies each shard's rows into place, so its memory is one block whatever the grid's size, "
        "and it needs disk for the joined copy; `python benchmarks/scale.py` (docs/scale.md) measures 100 shards of "
        "1e7 points. Drawing the "
        f"figures loads the merged result once (~{bytes_pp:.0f} GB per 1e9 points): for grids that large merge "
        "with `--no-plot` and draw a coarser sub-grid, or keep the shards and read them one at a time "
        "(`numpy.load(shard/results.npz)`; each shard's `meta.json` gives its flat index range `shard.start`, "
        "`shard.stop`).")
    add("")
    return L


# ----------------------------------------------------------------------------------------------------------
# main

def run_all(mode_name: str, log) -> dict:
    import phasediag  # noqa: F401  (fail early if not installed)

    mode = MODES[mode_name]
    res = {"mode": mode_name, "machine": machine_info(), "accuracy_n": mode["accuracy_n"]}
    log(f"phasediag benchmark ({mode_name}): {res['machine']['cpu']}, {res['machine']['usable_cores']} cores")
    log("throughput (in process)")
    res["throughput"] = measure_throughput(mode, log)
    res["other_grids"] = measure_other_grids(mode, log)
    res["gd_maps"] = measure_gd_maps(mode, log)
    res["boundaries"] = measure_boundaries(mode, log)
    res["worker_scaling"] = measure_worker_scaling(mode, log)
    res["parallel_ceiling"] = parallel_ceiling(log)
    res["sweep_ceiling"] = sweep_ceiling(mode, log)
    res["result_memory"] = result_memory(mode, log)
    n = mode["accuracy_n"]
    at = next(r for r in res["throughput"] if r["points"] == n * n) if any(
        r["points"] == n * n for r in res["throughput"]) else res["throughput"][-1]
    res["cost_per_point"] = {k: at[k] / at["points"] for k in ("core_inf", "core_T", "naive_inf", "naive_T")}
    log("accuracy")
    res["naive_accuracy"] = naive_accuracy(n, log)
    res["reference"] = reference_accuracy(n, mode, log)
    res["ivp"] = ivp_benchmark(n, mode, log)
    res["gd"] = gd_benchmark(n, mode, log)
    log("profile")
    res["profile"] = profile_core(min(n, 1000))
    log("whole processes")
    with tempfile.TemporaryDirectory(prefix="phasediag-bench-") as tmp:
        res["process"] = process_benchmarks(mode, Path(tmp), log)
        log("figures")
        res["figures"] = figure_benchmarks(mode, Path(tmp), log)
    import resource

    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    res["bench_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    res["load_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    res["targets"] = targets(res)
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run (< 1 min): smaller sizes and samples")
    parser.add_argument("--full", action="store_true", help="the full run (the default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report [docs/benchmarks.md]")
    parser.add_argument("--figure", type=Path, default=DEFAULT_FIGURE,
                        help="time-vs-size figure [docs/figures/benchmark_time_vs_size.png]")
    parser.add_argument("--json", action="store_true", help="print every number as one JSON object on stdout")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="re-draw the report and figure from the --json output of an earlier run (no timing)")
    parser.add_argument("--figures-only", action="store_true",
                        help="only the figure benchmark (config 1 with and without figures); prints, writes nothing")
    parser.add_argument("--naive-child", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--horizon", type=float, default=math.inf, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_child:
        naive_child(args.naive_child, args.horizon, args.save)
        return 0
    if args.quick and args.full:
        parser.error("--quick and --full exclude each other")
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.figures_only:
        with tempfile.TemporaryDirectory(prefix="phasediag-bench-") as tmp:
            figures = figure_benchmarks(MODES["quick" if args.quick else "full"], Path(tmp), log)
        print(json.dumps(figures, default=_json_default) if args.json else
              f"config 1 with figures / --no-plot: {figures['ratio']:.2f}x (medians {figures['ratio_median']:.2f}x); "
              f"drawing with --workers 2 / 1: {figures['plot_workers2']['plot_s'] / figures['plot']['plot_s']:.2f}x")
        return 0
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        res["targets"] = targets(res)
    else:
        started = time.perf_counter()
        res = run_all("quick" if args.quick else "full", log)
        res["bench_s"] = time.perf_counter() - started
    draw_figure(res, args.figure)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(res, args.figure, args.out)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)
    log(f"wrote {args.out} and {args.figure} ({res['bench_s']:.0f} s)")
    for t in res["targets"]:
        verdict = "info" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        log(f"  [{verdict:>4}] {t['target']}: {t['measured']} (required {t['required']})")
    if args.json:
        print(json.dumps(res, default=_json_default))
    return 0


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x).__name__)


if __name__ == "__main__":
    sys.exit(main())
