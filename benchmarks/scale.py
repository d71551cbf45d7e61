"""Scale benchmark: a sweep larger than memory, streamed to disk, and the merge of many shards.

Config 1 (width x initial variance) on an n x n grid storing a few metrics (`metrics: [phase, ntk_change]`,
9 bytes per point), run as whole processes (`python -m phasediag run ... --no-plot -q`), each child's peak
RSS read with getrusage. Every figure is also given as a ratio against a reference measured in the same run:

- the big sweep (default 31623^2 = 1.0e9 points, 9 GB of results) against the same config at 1e7 points:
  time per point (how far from linear the cost grows), and peak RSS against the result's size;
- `merge` of `--shards` shards (default 100 shards of the big grid's 1e7-point parts) against the whole-grid
  run: its time, and its peak RSS against one shard's results;
- the merged results.npz byte-identical to the single run's.

    python benchmarks/scale.py                       # the full run (~10 min on 2 cores, ~30 GB of disk)
    python benchmarks/scale.py --side 3163 --shards 10  # a quick one (1e7 points)

Writes a markdown report (default docs/scale.md; --json prints every number). Files live in --tmp
(default: a temporary directory beside the repository, removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """name: scale
sweep:
  d: {{log: [1, 1e4, {n}]}}
  s: {{log: [1e-6, 1, {n}]}}
model: {{width: d, output_scale: 1, lr_u: 1, lr_w: 1, init_var_u: s, init_var_w: s}}
data: {{input_var: 1, teacher: 1}}
metrics: [phase, ntk_change]
plot: {{x: d, y: s, maps: [phase]}}
"""


def child(args: list[str]) -> None:
    """Run `python -m phasediag ARGS` as a child (exit on failure)."""
    proc = subprocess.run([sys.executable, "-m", "phasediag", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"phasediag {' '.join(args)}: exit {proc.returncode}: {proc.stderr}")


def rss_of(args: list[str]) -> dict:
    """`child` in a fresh wrapper process, so that ru_maxrss is this child's alone (not the largest so far)."""
    code = ("import json, resource, subprocess, sys, time\n"
            "t0 = time.perf_counter()\n"
            f"p = subprocess.run([sys.executable, '-m', 'phasediag', *{args!r}], capture_output=True, text=True)\n"
            "w = time.perf_counter() - t0\n"
            "print(json.dumps({'rc': p.returncode, 'err': p.stderr, 'wall_s': w,\n"
            "                  'peak_rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,\n"
            "                  'out': p.stdout}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout)
    if got["rc"] != 0:
        raise SystemExit(f"phasediag {' '.join(args)}: exit {got['rc']}: {got['err']}")
    return got


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=31623, help="grid side n of the big sweep (n x n points)")
    parser.add_argument("--reference-side", type=int, default=3163, help="grid side of the reference sweep")
    parser.add_argument("--shards", type=int, default=100, help="shards of the big grid to merge (0: skip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "scale.md", help="the markdown report")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="phasediag-scale-", dir=args.tmp or ROOT.parent))
    try:
        from bench import machine_info  # (this folder: the machine as bench.py names it)

        info = machine_info()
        res = {"machine": {"cpu": info["cpu"], "cores": info.get("usable_cores", os.cpu_count()),
                           "python": platform.python_version()}}
        for key, side in (("reference", args.reference_side), ("big", args.side)):
            config = tmp / f"{key}.yaml"
            config.write_text(CONFIG.format(n=side))
            got = rss_of(["run", str(config), "--out", str(tmp / key), "--no-plot", "-q", "--json",
                          "--workers", str(args.workers)])
            summary = json.loads(got["out"])
            res[key] = {"points": side * side, "wall_s": got["wall_s"], "peak_rss": got["peak_rss"],
                        "eval_s": summary["timing"]["eval_s"], "save_s": summary["timing"].get("save_s"),
                        "bytes": (tmp / key / "results.npz").stat().st_size}
            print(f"{key}: {side * side:,} points in {got['wall_s']:.1f} s, peak RSS {got['peak_rss'] / 1e6:.0f} MB, "
                  f"results {res[key]['bytes'] / 1e9:.2f} GB", file=sys.stderr)
            if key == "reference":
                shutil.rmtree(tmp / key)
        if args.shards:
            config = tmp / "big.yaml"
            started = time.perf_counter()
            for k in range(1, args.shards + 1):
                child(["run", str(config), "--shard", f"{k}/{args.shards}", "--out", str(tmp / f"shard{k:04d}"),
                       "--no-plot", "-q", "--workers", str(args.workers)])
            shards_s = time.perf_counter() - started
            got = rss_of(["merge", *[str(tmp / f"shard{k:04d}") for k in range(1, args.shards + 1)],
                          "--out", str(tmp / "merged"), "--no-plot", "-q"])
            same = _same(tmp / "merged" / "results.npz", tmp / "big" / "results.npz")
            res["merge"] = {"shards": args.shards, "shards_s": shards_s, "wall_s": got["wall_s"],
                            "peak_rss": got["peak_rss"], "identical": same,
                            "shard_bytes": (tmp / "shard0001" / "results.npz").stat().st_size}
            print(f"merge of {args.shards} shards: {got['wall_s']:.1f} s, peak RSS {got['peak_rss'] / 1e6:.0f} MB, "
                  f"identical {same}", file=sys.stderr)
        args.out.write_text(report(res, " ".join(["python benchmarks/scale.py", *(argv or sys.argv[1:])])))
        print(markdown(res))
        if args.json:
            print(json.dumps(res, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True


def report(res: dict, command: str) -> str:
    m = res["machine"]
    return "\n".join([
        "# Scale benchmark", "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')}; machine: {m['cpu']}, {m['cores']} cores, Python "
        f"{m['python']} (a shared virtual machine: absolute times are examples, the ratios are the measurement).",
        "", "Config 1 (width x initial variance) on an n x n grid storing `metrics: [phase, ntk_change]` (9 bytes "
        "per point), `--workers 2`, each step a whole process whose peak RSS is read with getrusage.", "",
        markdown(res), ""])


def markdown(res: dict) -> str:
    ref, big = res["reference"], res["big"]
    per_point = (big["wall_s"] / big["points"]) / (ref["wall_s"] / ref["points"])
    rows = [
        "| measured | value | ratio |", "|---|---|---|",
        f"| sweep of {big['points']:.3g} points ({big['bytes'] / 1e9:.1f} GB of results), `run --no-plot`, "
        f"whole process | {big['wall_s']:.0f} s, peak RSS {big['peak_rss'] / 1e6:.0f} MB | time per point "
        f"{per_point:.2f}x the {ref['points']:.3g}-point run's ({ref['wall_s']:.1f} s); peak RSS "
        f"{big['peak_rss'] / big['bytes']:.3f}x its results |",
    ]
    if "merge" in res:
        m = res["merge"]
        rows.append(f"| `merge` of {m['shards']} shards ({m['shard_bytes'] / 1e6:.0f} MB each), `--no-plot` | "
                    f"{m['wall_s']:.0f} s, peak RSS {m['peak_rss'] / 1e6:.0f} MB | {m['wall_s'] / big['wall_s']:.2f}x "
                    f"the whole-grid run; peak RSS {m['peak_rss'] / m['shard_bytes']:.2f}x one shard's results; "
                    f"merged results.npz {'byte-identical' if m['identical'] else 'DIFFERENT'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
