"""Measured accuracy of the float64 closed form against the mpmath reference (docs/theory.md section 8).

Draws random points over the full ranges of docs/theory.md section 8 (log-uniform d in [1, 1e15], kappa in
[1e-8, 1e8], sigma^2 in {0} U [1e-16, 1e4], eta in [1e-6, 1e6], a in [1e-3, 1e3], m* in +-[1e-3, 1e3]; exact
sampled initial Grams) at times t = x tau (x log-uniform in [1e-6, 1e3]) and t = inf, and prints the worst
error of each quantity in the units of section 8 (m: |err| / max(|m|, min(sqrt(m^2 + g^2), |m0| + |m*|));
Theta, norms, ntk_change: relative), plus the share of the 1e-9 budget it uses.

    python benchmarks/accuracy.py [--points 300] [--seed 0]      (needs the test extra: mpmath)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reference import Point, Reference, m_scale  # noqa: E402

from phasediag import core  # noqa: E402


def draw(rng: np.random.Generator) -> dict:
    def log_uniform(lo, hi):
        return float(10 ** rng.uniform(math.log10(lo), math.log10(hi)))

    def variance():
        return 0.0 if rng.random() < 0.05 else log_uniform(1e-16, 1e4)

    return dict(width=round(log_uniform(1, 1e15)), var_u=variance(), var_w=variance(),
                kappa=log_uniform(1e-8, 1e8), lr_u=log_uniform(1e-6, 1e6), lr_w=log_uniform(1e-6, 1e6),
                a=log_uniform(1e-3, 1e3), m_star=log_uniform(1e-3, 1e3) * rng.choice([-1.0, 1.0]),
                index=int(rng.integers(0, 2**40)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    worst = {"m": 0.0, "ntk": 0.0, "norm_u2": 0.0, "norm_w2": 0.0, "ntk_change": 0.0}
    evaluations = 0
    for _ in range(args.points):
        p = draw(rng)
        gram = core.sample_gram(p["width"], p["var_u"], p["var_w"], seed=args.seed, index=p["index"])
        inv = core.invariants(core.Problem(p["kappa"], p["lr_u"], p["lr_w"], p["a"], p["m_star"], gram))
        tau = float(core.relaxation_time(inv))
        times = [float(10 ** rng.uniform(-6, 3)) * tau for _ in range(3)] + [math.inf]
        times = [t for t in times if t <= 1e12 or math.isinf(t)]
        state = core.flow_state(inv, np.array(times))
        change = core.ntk_change(inv, np.array(times))
        ref = Reference(Point(p["kappa"], p["lr_u"], p["lr_w"], p["a"], p["m_star"], float(gram.U),
                              float(gram.W), float(gram.V), float(gram.G)))
        inv_ref = ref.invariants()
        for i, exp in enumerate(ref.states(times)):
            evaluations += 1
            scale = m_scale(exp["m"], inv_ref)
            if scale == 0:  # both layers zero: nothing moves, m must be exactly 0
                worst["m"] = max(worst["m"], math.inf if state.m[i] != 0 else 0.0)
                continue
            near_crossing = abs(exp["m"]) < 1e-5 * scale  # section 8's exemption
            if not near_crossing:
                worst["m"] = max(worst["m"], float(abs(state.m[i] - exp["m"]) / scale))
                for key, ref_key in (("ntk", "Theta"), ("norm_u2", "norm_u2"), ("norm_w2", "norm_w2")):
                    if exp[ref_key] != 0:
                        err = abs((getattr(state, key)[i] - exp[ref_key]) / exp[ref_key])
                        worst[key] = max(worst[key], float(err))
                if exp["ntk_change"] not in (None, 0):
                    err = abs((change[i] - exp["ntk_change"]) / exp["ntk_change"])
                    worst["ntk_change"] = max(worst["ntk_change"], float(err))
    print(f"{args.points} points, {evaluations} (point, time) evaluations, seed {args.seed}")
    print(f"{'quantity':<12} {'worst error':>12} {'of 1e-9 budget':>15}")
    for key, value in worst.items():
        print(f"{key:<12} {value:12.2e} {value / 1e-9:15.1e}")


if __name__ == "__main__":
    main()
