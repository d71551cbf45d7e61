"""The closed-form GD map against a 40-digit iteration of the same vectors, on config 7's validation points.

`phasediag validate configs/7_gd_lr_vs_width.yaml` reports its worst deviation at width-1 points whose GD orbit
oscillates for all 20,000 steps. This script settles which side is off: it iterates the same initial vectors
(population GD at width 1: u, w <- u - eta_u a kappa (m - m*) w, w - eta_w a kappa (m - m*) u) with mpmath at
40 digits and compares the float64 vector simulation and `core.gd_state` with it, step by step.

    python benchmarks/gd_orbit_check.py [--steps 3000] [POINT ...]     (default points 8689 8283)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mpmath
import numpy as np

from phasediag import core
from phasediag.config.sweep import config_from_text
from phasediag.engine import sweep
from phasediag.training import simulate

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("points", nargs="*", type=int, default=[8689, 8283])
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)
    mpmath.mp.dps = 40
    config = config_from_text((ROOT / "configs/7_gd_lr_vs_width.yaml").read_text())
    t = np.arange(args.steps + 1)
    for index in args.points:
        values, _ = sweep.model_values(config, np.array([index]))
        v = {k: float(np.ravel(a)[0]) for k, a in values.items()}
        u0, w0 = simulate.sample_vectors(int(v["width"]), v["init_var_u"], v["init_var_w"],
                                         np.random.default_rng([config.seed, index]))  # as validate draws them
        if u0.size != 1:
            print(f"point {index}: width {u0.size}; this check iterates width 1 only")
            continue
        u, w = float(u0[0]), float(w0[0])  # two numbers: their Gram determinant is 0 exactly
        gram = core.explicit_gram(u * u, w * w, u * w)._replace(G=np.zeros(()))
        inv = core.invariants(core.Problem(v["output_scale"], v["lr_u"], v["lr_w"], v["input_var"], v["teacher"],
                                           gram))
        closed = np.asarray(core.gd_state(inv, t).m).ravel()
        simulated = simulate.gd_vectors(u0, w0, output_scale=v["output_scale"], lr_u=v["lr_u"], lr_w=v["lr_w"],
                                        input_var=v["input_var"], teacher=v["teacher"], steps=t).m
        kappa, a, m_star, lr_u, lr_w = (mpmath.mpf(v[k]) for k in ("output_scale", "input_var", "teacher",
                                                                     "lr_u", "lr_w"))
        u, w = mpmath.mpf(float(u0[0])), mpmath.mpf(float(w0[0]))
        exact = []
        for _ in t:
            m = kappa * u * w
            exact.append(float(m))
            r = a * kappa * (m - m_star)
            u, w = u - lr_u * r * w, w - lr_w * r * u
        exact = np.array(exact)
        scale = max(abs(v["teacher"]), float(np.max(np.abs(exact))))
        for name, path in (("simulated vectors", simulated), ("closed-form GD map", closed)):
            err = np.abs(path - exact) / scale
            print(f"point {index}: {name} vs 40 digits: worst {err.max():.3g} at step {int(err.argmax())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
