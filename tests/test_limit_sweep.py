"""`mode: scaling` sweeps: config rules, exponent arrays against docs/theory.md section 7 formulas, diagrams, named points."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from phasediag.plots import scaling as limit_maps
from phasediag.engine import sweep
from phasediag.config.sweep import ConfigError, config_from_text

SCALING = """\
name: lim
mode: scaling
sweep:
  k: {lin: [-1.5, 0.5, 41]}
  s: {lin: [-2, 1, 31]}
model:
  output_scale: {exp: k}
  init_var_u: {exp: s}
  init_var_w: {base: 2, exp: s}
  lr_u: {exp: -1 - 2 * k - s}
  lr_w: {exp: -1 - 2 * k - s}
"""


def load(text):
    return config_from_text(textwrap.dedent(text))


def test_exponent_arrays_follow_theory_section_7():
    r = sweep.run(load(SCALING))
    k, s = np.meshgrid(r.coords["k"], r.coords["s"], indexing="ij")
    eu = ew = -1 - 2 * k - s
    theta0 = 2 * k + 1 + np.maximum(ew + s, eu + s)  # docs/theory.md section 7, written out independently
    c = k + (eu + ew) / 2
    np.testing.assert_allclose(r.arrays["ntk_init_exp"], theta0, atol=1e-12)
    np.testing.assert_allclose(r.arrays["rho_exp"], c - theta0, atol=1e-12)
    np.testing.assert_allclose(r.arrays["ntk_final_exp"], np.maximum(theta0, c), atol=1e-12)
    np.testing.assert_allclose(r.arrays["m0_exp"], k + 0.5 + s, atol=1e-12)
    kernel = (c - theta0) < -1e-9
    assert np.array_equal(r.arrays["limit_phase"] == 0, kernel)
    assert np.array_equal(r.arrays["unstable"], np.maximum(theta0, c) > 1e-9)
    assert np.array_equal(r.arrays["divergent_output"], k + 0.5 + s > 1e-9)


def test_named_parametrizations_are_located_exactly():
    r = sweep.run(load(SCALING))
    found = limit_maps.named_points(r, "k", "s")
    assert found["ntk"] == pytest.approx((-0.5, 0.0), abs=1e-9)
    assert found["mean_field"] == pytest.approx((-1.0, 0.0), abs=1e-9)
    assert found["lazy"] == pytest.approx((0.0, 0.0), abs=1e-9)
    assert "mup" not in found  # su != sw: not in this plane


def test_nonlinear_exponents_mark_nothing():
    r = sweep.run(load(SCALING.replace("lr_w: {exp: -1 - 2 * k - s}", "lr_w: {exp: -1 - 2 * k - s + k * s}")))
    assert limit_maps.named_points(r, "k", "s") == {}


@pytest.mark.parametrize(
    "edit,expected",
    [
        (("init_var_u: {exp: s}", "init_var_u: 3"), "model.init_var_u (line 8): with mode: scaling give {base"),
        (("init_var_u: {exp: s}", "init_var_u: {base: 1}"), "model.init_var_u.exp: is required"),
        (("init_var_u: {exp: s}", "width: {exp: 1}"), "model.width (line 8): unknown key"),
        (("init_var_u: {exp: s}", "init_var_u: {exp: q}"), "unknown variable 'q'"),
        (("mode: scaling", "mode: scalling"), "mode (line 2): must be finite or scaling"),
    ],
)
def test_scaling_config_errors(edit, expected):
    with pytest.raises(ConfigError, match=None) as info:
        load(SCALING.replace(*edit))
    assert expected in str(info.value)


def test_scaling_rejects_finite_width_sections_and_bad_bases():
    with pytest.raises(ConfigError, match="train .line 12.: is not used with mode: scaling"):
        load(SCALING + "train: {horizon: 10}\n")
    bad = load(SCALING.replace("{base: 2, exp: s}", "{base: s, exp: s}"))
    with pytest.raises(ConfigError, match=r"model.init_var_w.base .*must be > 0, got -2 at k=-1.5, s=-2"):
        sweep.validate(bad)


def test_run_draws_the_diagram_with_boundaries(tmp_path):
    path = tmp_path / "lim.yaml"
    path.write_text(SCALING)
    proc = subprocess.run([sys.executable, "-m", "phasediag", "run", str(path), "--out", str(tmp_path / "o"),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert set(info["counts"]["limit_phase"]) == {"kernel", "feature_learning"}
    assert (tmp_path / "o/lim__limit_phase__s_vs_k.png").read_bytes()[:4] == b"\x89PNG"
    from phasediag.results import store as results

    r = results.load(tmp_path / "o")
    fig = limit_maps.limit_phase_diagram(r, "k", "s")
    ax = fig.axes[0]
    # the phase boundary exp(rho) = 0 is the straight line k + s = -1: check the drawn contour's vertices
    from matplotlib.contour import ContourSet

    boundary = [c for c in ax.collections if isinstance(c, ContourSet) and list(c.levels) == [0.0]][0]
    vertices = np.concatenate([p.vertices for p in boundary.get_paths() if len(p.vertices)])
    np.testing.assert_allclose(vertices.sum(axis=1), -1.0, atol=1e-9)


def test_scaling_shards_merge_bit_identically(tmp_path):
    from phasediag.results import store as results

    config = load(SCALING)
    whole = sweep.run(config)
    for k in (1, 2, 3):
        results.save(sweep.run(config, shard=sweep.Shard(k, 3), chunk_size=100), tmp_path / f"s{k}")
    merged = results.merge([results.load(tmp_path / f"s{k}") for k in (2, 3, 1)])
    assert all(np.array_equal(whole.arrays[n], merged.arrays[n]) for n in whole.arrays)
