"""Tests of the command line (`phasediag solve`), its glue (phasediag.engine.point), plotting and atomic writes.

Expected values come from docs/theory.md formulas worked out by hand, from direct calls of phasediag.core at the
same point, or from an explicit vector gradient-descent step -- never from the command's own output.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import phasediag
from phasediag.config.hyperparameters import Hyperparameters
from phasediag import core
from phasediag import cli
from phasediag.results.atomic import atomic_path, atomic_write
from phasediag.engine.point import InputError, log_times, solve_point, split_label

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAJECTORY = ("t", "m", "ntk", "alignment", "norm_u2", "norm_w2", "loss", "m_lin")
FINAL = ("m", "ntk", "alignment", "ntk_change", "phase", "mechanism", "tau", "t_learn", "label", "thresholds")
PHASE_NAMES = {"kernel", "feature_learning", "saddle"}


# --------------------------------------------------------------------------------------------------------
# helpers


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into output unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def run(*args: str, env: dict | None = None):
    """Invoke `phasediag ARGS` in-process; returns click's Result (exit_code, stdout, stderr)."""
    return _runner().invoke(cli.phasediag, list(args), prog_name="phasediag", env=env)


def _reject_constant(name):
    raise AssertionError(f"non-standard JSON token {name!r} in the output")


def run_json(*args: str) -> dict:
    res = run("solve", "--json", *args)
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, "--json must print exactly one line (one object)"
    return json.loads(lines[0], parse_constant=_reject_constant)


def run_process(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PHASEDIAG_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "phasediag", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def gram_vectors(U: float, W: float, V: float, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Vectors u0, w0 in R^d with |u0|^2 = U, |w0|^2 = W, u0.w0 = V (requires U > 0)."""
    u = np.zeros(d)
    w = np.zeros(d)
    u[0] = math.sqrt(U)
    w[0] = V / u[0]
    w[1] = math.sqrt(W - w[0] ** 2)
    return u, w


def close(x, y, rtol=1e-12, atol=0.0) -> bool:
    return x is not None and y is not None and abs(x - y) <= atol + rtol * abs(y)


POINT = {  # a generic point: imbalanced rates, negative teacher, explicit Gram with V != 0
    "output_scale": 0.7, "lr_u": 0.3, "lr_w": 1.7, "input_var": 1.3, "teacher": -0.8,
    "U": 2.0, "W": 0.5, "V": 0.4,
}


def point_args(times: str = "0,0.5,3,20,inf") -> list[str]:
    p = POINT
    return ["--output-scale", str(p["output_scale"]), "--lr-u", str(p["lr_u"]), "--lr-w", str(p["lr_w"]),
            "--input-var", str(p["input_var"]), "--teacher", str(p["teacher"]),
            "--gram", f"{p['U']},{p['W']},{p['V']}", "--times", times]


def point_invariants():
    p = POINT
    gram = core.explicit_gram(p["U"], p["W"], p["V"])
    return core.invariants(core.Problem(p["output_scale"], p["lr_u"], p["lr_w"], p["input_var"],
                                        p["teacher"], gram))


# --------------------------------------------------------------------------------------------------------
# JSON: keys, types, strictness


def test_json_keys_types_and_strictness():
    out = run_json("--times", "0,1,10,inf")
    for key in (*TRAJECTORY, "init", "final", "meta"):
        assert key in out, key
    n = len(out["t"])
    assert n == 4
    assert out["t"][:3] == [0.0, 1.0, 10.0] and out["t"][3] is None  # inf -> null
    for key in TRAJECTORY:
        assert isinstance(out[key], list) and len(out[key]) == n, key
        assert all(v is None or isinstance(v, float) for v in out[key]), key
    for key in TRAJECTORY[1:]:  # a converging flow point: every value is a finite number
        assert all(isinstance(v, float) for v in out[key]), key
    assert set(out["init"]) >= {"U", "W", "V"}
    assert all(isinstance(out["init"][k], float) for k in "UWV")
    final = out["final"]
    for key in FINAL:
        assert key in final, key
    assert final["phase"] in PHASE_NAMES
    assert final["label"] in core.PHASES
    assert (final["phase"], final["mechanism"]) == split_label(final["label"])
    assert final["mechanism"] is None or isinstance(final["mechanism"], str)
    for key in ("m", "ntk", "alignment", "ntk_change", "tau", "t_learn"):
        assert isinstance(final[key], float), key
    assert final["thresholds"] == {"ntk": 0.1, "alignment": 0.1}
    assert "gd_outcome" not in final  # only with --optimizer gd
    assert out["meta"]["version"] == phasediag.__version__
    assert isinstance(out["meta"]["elapsed_s"], float) and out["meta"]["elapsed_s"] >= 0


def test_json_default_point_matches_theory():
    """Defaults: U = W = 1, V = 0, kappa = 1, eta = 0.1, a = m* = 1. By hand (docs/theory.md sections 3-5): c = 0.1,
    g = 1, Theta0 = 0.2, Theta_inf = 2c hypot(m*, g) = 0.2 sqrt(2), zeta_inf = 1/sqrt(2), tau = 1/(a Theta_inf)."""
    out = run_json()
    assert out["init"]["U"] == pytest.approx(1.0, rel=1e-15)
    assert out["init"]["W"] == pytest.approx(1.0, rel=1e-15)
    assert out["init"]["V"] == 0.0
    assert out["t"][0] == 0.0 and out["m"][0] == 0.0 and close(out["ntk"][0], 0.2)
    final = out["final"]
    assert close(final["m"], 1.0)
    assert close(final["ntk"], 0.2 * math.sqrt(2.0))
    assert close(final["ntk_change"], math.sqrt(2.0) - 1.0)
    assert close(final["alignment"], 1.0 / math.sqrt(2.0))
    assert close(final["tau"], 1.0 / (0.2 * math.sqrt(2.0)))
    assert (final["phase"], final["mechanism"], final["label"]) == ("feature_learning", "alignment", "alignment")
    # m rises monotonically from 0 towards m* = 1 and the loss falls
    m = out["m"]
    assert all(b >= a for a, b in zip(m, m[1:])) and m[-1] < 1.0 + 1e-12
    assert all(b <= a for a, b in zip(out["loss"], out["loss"][1:]))


_VAR = st.one_of(st.just(0.0), st.floats(1e-16, 10.0))  # docs/theory.md section 8: sigma^2 in {0} U [1e-16, 1e4]


@settings(max_examples=25, deadline=None)
@given(
    kappa=st.floats(1e-2, 1e2), lr_u=st.floats(1e-2, 1e2), lr_w=st.floats(1e-2, 1e2),
    var_u=_VAR, var_w=_VAR, a=st.floats(1e-2, 1e2),
    teacher=st.builds(lambda s, x: s * x, st.sampled_from([-1.0, 1.0]), st.floats(1e-3, 10.0)),
    seed=st.integers(0, 2**31), width=st.integers(1, 10**6),
)
def test_json_is_strict_and_aligned_for_random_points(kappa, lr_u, lr_w, var_u, var_w, a, teacher, seed, width):
    out = run_json("--width", str(width), "--output-scale", repr(kappa), "--lr-u", repr(lr_u),
                   "--lr-w", repr(lr_w), "--init-var-u", repr(var_u), "--init-var-w", repr(var_w),
                   "--input-var", repr(a), "--teacher", repr(teacher), "--seed", str(seed),
                   "--times", "0,0.1,1,100,inf")
    n = len(out["t"])
    for key in TRAJECTORY[1:]:
        assert len(out[key]) == n
        assert all(v is None or math.isfinite(v) for v in out[key])
    assert out["final"]["phase"] in PHASE_NAMES
    assert out["init"]["V"] ** 2 <= out["init"]["U"] * out["init"]["W"] * (1 + 1e-12)


# --------------------------------------------------------------------------------------------------------
# agreement with the core and with the model


def test_json_agrees_with_direct_core_calls():
    times = [0.0, 0.5, 3.0, 20.0, math.inf]
    out = run_json(*point_args())
    inv = point_invariants()
    state = core.flow_state(inv, np.array(times))
    for key in TRAJECTORY[1:]:
        expected = np.asarray(getattr(state, key), dtype=float)
        np.testing.assert_allclose(np.array(out[key], dtype=float), expected, rtol=1e-14, atol=0, err_msg=key)
    final = out["final"]
    assert close(final["ntk_change"], float(core.ntk_change(inv, np.inf)), rtol=1e-14)
    assert close(final["tau"], float(core.relaxation_time(inv)), rtol=1e-14)
    assert close(final["t_learn"], float(core.t_learn(inv)), rtol=1e-14)
    assert final["label"] == core.PHASES[int(core.classify(inv))]
    end = core.flow_state(inv, np.inf)
    assert close(final["m"], float(end.m), rtol=1e-14)
    assert close(final["ntk"], float(end.ntk), rtol=1e-14)


def test_explicit_gram_gives_initial_state_of_theory():
    """--gram U,W,V: m0 = kappa V, Theta0 = kappa^2 (eta_w U + eta_u W), zeta0 = V / sqrt(U W) (docs/theory.md
    sections 1-3); m(inf) = m* and zeta_inf = m*/sqrt(m*^2 + kappa^2 G) (docs/theory.md section 5)."""
    p = POINT
    out = run_json(*point_args())
    assert (out["init"]["U"], out["init"]["W"], out["init"]["V"]) == (p["U"], p["W"], p["V"])
    kappa = p["output_scale"]
    assert close(out["m"][0], kappa * p["V"])
    assert close(out["ntk"][0], kappa**2 * (p["lr_w"] * p["U"] + p["lr_u"] * p["W"]))
    assert close(out["alignment"][0], p["V"] / math.sqrt(p["U"] * p["W"]))
    assert close(out["norm_u2"][0], p["U"]) and close(out["norm_w2"][0], p["W"])
    G = p["U"] * p["W"] - p["V"] ** 2
    assert close(out["m"][-1], p["teacher"])
    assert close(out["final"]["alignment"], p["teacher"] / math.sqrt(p["teacher"] ** 2 + kappa**2 * G))
    assert close(out["loss"][0], p["input_var"] * (kappa * p["V"] - p["teacher"]) ** 2 / 2)


def test_typical_init_is_the_default_and_matches_theory():
    out_default = run_json("--width", "40", "--init-var-u", "0.3", "--init-var-w", "0.05", "--times", "0,1")
    out_typical = run_json("--width", "40", "--init-var-u", "0.3", "--init-var-w", "0.05", "--times", "0,1",
                           "--typical")
    assert out_default["init"] == out_typical["init"]
    assert close(out_default["init"]["U"], 40 * 0.3) and close(out_default["init"]["W"], 40 * 0.05)
    assert out_default["init"]["V"] == 0.0
    assert out_default["m"] == out_typical["m"]


def test_seed_is_reproducible_and_is_the_exact_sample():
    args = ("--width", "30", "--seed", "12345", "--times", "0,1,5,inf")
    first, second = run_json(*args), run_json(*args)
    first["meta"].pop("elapsed_s"), second["meta"].pop("elapsed_s")
    assert first == second
    other = run_json("--width", "30", "--seed", "12346", "--times", "0,1,5,inf")
    assert other["init"] != first["init"]
    g = core.sample_gram(30, 1 / 30, 1 / 30, 12345, index=0)
    assert (first["init"]["U"], first["init"]["W"], first["init"]["V"]) == (float(g.U), float(g.W), float(g.V))
    assert first["params"]["seed"] == 12345 and first["params"]["init"] == "seed"


def test_width_one_sample_has_parallel_layers():
    """A real d = 1 network always has G = 0 (docs/theory.md section 7): |zeta| = 1 whenever m != 0."""
    out = run_json("--width", "1", "--seed", "3", "--times", "0,1,inf")
    assert out["init"]["G"] == 0.0
    assert all(abs(abs(z) - 1.0) < 1e-12 for z, m in zip(out["alignment"], out["m"]) if m != 0.0)


def test_saddle_point():
    """d = 1 balanced, opposite sign start (U = W = 1, V = -1, equal rates): g = 0 and m0 m* < 0, so m -> 0
    and never learns (docs/theory.md sections 4-5)."""
    out = run_json("--gram", "1,1,-1", "--lr-u", "0.5", "--lr-w", "0.5", "--times", "0,1,10,inf")
    assert out["final"]["phase"] == "saddle" and out["final"]["mechanism"] is None
    assert abs(out["final"]["m"]) < 1e-12
    assert out["final"]["t_learn"] is None  # never learns: inf -> null
    assert all(m <= 0 for m in out["m"])


def test_zero_initialized_layer_and_both_zero():
    one = run_json("--init-var-u", "0", "--times", "0,1,inf")
    assert one["init"]["U"] == 0.0 and one["init"]["G"] == 0.0
    assert close(one["final"]["m"], 1.0)
    assert all(isinstance(v, float) for key in TRAJECTORY[1:] for v in one[key])
    both = run_json("--init-var-u", "0", "--init-var-w", "0", "--times", "0,1,inf")
    assert both["m"] == [0.0, 0.0, 0.0]  # nothing moves from u = w = 0
    assert both["final"]["phase"] == "saddle"


@pytest.mark.parametrize("args", [
    # found by the random-point test: an overflow inside the flow evaluation at t = 0.1
    ["--output-scale", "57", "--lr-u", "50", "--lr-w", "78", "--teacher", "-1", "--times", "0,0.1,1,inf"],
    # exact GD with c a |m*| = 2: nothing moves, yet the Gram-scale factor must not overflow
    ["--optimizer", "gd", "--lr-u", "2", "--lr-w", "2", "--times", "0,1000"],
    ["--optimizer", "gd", "--lr-u", "2", "--lr-w", "2", "--times", "0,100,inf"],
], ids=["flow", "gd-steps", "gd-end"])
def test_both_layers_zero_give_defined_results(args):
    """Degenerate cases (both layers zero) give defined results. u = w = 0 is a fixed point of
    both gradient flow and GD: m stays 0 and the point is a saddle."""
    out = run_json("--init-var-u", "0", "--init-var-w", "0", *args)
    assert all(m == 0.0 for m in out["m"])
    assert all(ntk == 0.0 for ntk in out["ntk"])
    assert out["final"]["phase"] == "saddle"


def test_kernel_aligning_example_of_theory():
    """docs/theory.md section 6: kappa = 1/d, eta_u = d, eta_w = 1/d at d = 4000 (unit init variances): the layers align
    while the NTK does not change."""
    d = 4000
    out = run_json("--width", str(d), "--output-scale", repr(1 / d), "--lr-u", str(d), "--lr-w", repr(1 / d),
                   "--init-var-u", "1", "--init-var-w", "1", "--times", "0,inf")
    final = out["final"]
    assert final["label"] == "kernel_aligning" and final["phase"] == "kernel"
    assert abs(final["ntk_change"]) < 1e-4
    assert final["alignment"] > 0.6


def test_every_core_label_has_a_phase_and_the_tables_agree():
    from phasediag.engine.point import PHASE_OF_LABEL

    for label in core.PHASES:
        phase, mechanism = split_label(label)
        assert phase in PHASE_NAMES
        assert (phase, mechanism) == PHASE_OF_LABEL[label]  # the fallback copy matches the core's tables
    assert split_label("kernel") == ("kernel", None) and split_label("saddle") == ("saddle", None)
    assert split_label("kernel_aligning")[0] == "kernel"
    assert split_label("rescaling") == ("feature_learning", "rescaling")


def test_thresholds_and_horizon_are_used():
    # the default point has ntk_change sqrt(2) - 1 = 0.414: a threshold above it makes it a kernel point
    out = run_json("--ntk-threshold", "0.5", "--times", "0,1")
    assert out["final"]["phase"] == "kernel" and out["final"]["thresholds"]["ntk"] == 0.5
    short = run_json("--horizon", "0.01", "--times", "0,1")
    assert short["final"]["horizon"] == 0.01
    assert short["final"]["phase"] == "kernel"  # hardly anything happens in 0.01 steps
    assert short["final"]["not_converged"] is True


def test_negative_values_parse_as_option_values():
    out = run_json("--teacher", "-2.5", "--times", "0,inf")
    assert close(out["final"]["m"], -2.5)


# --------------------------------------------------------------------------------------------------------
# discrete gradient descent


def test_gd_matches_explicit_vector_gd():
    p = POINT
    steps = [0, 1, 2, 3, 7]
    out = run_json(*point_args(",".join(map(str, steps))), "--optimizer", "gd")
    assert out["t"] == steps and all(isinstance(t, int) for t in out["t"])
    assert out["final"]["gd_outcome"] in core.GD_OUTCOMES
    kappa, eta_u, eta_w, a, m_star = (p[k] for k in ("output_scale", "lr_u", "lr_w", "input_var", "teacher"))
    u, w = gram_vectors(p["U"], p["W"], p["V"])
    k = 0
    for i, step in enumerate(steps):
        while k < step:  # explicit GD on the vectors: u <- u - eta_u kappa r w, w <- w - eta_w kappa r u
            r = a * (kappa * u @ w - m_star)
            u, w = u - eta_u * kappa * r * w, w - eta_w * kappa * r * u
            k += 1
        assert close(out["m"][i], kappa * u @ w, rtol=1e-11), step
        assert close(out["ntk"][i], kappa**2 * (eta_w * u @ u + eta_u * w @ w), rtol=1e-11), step
        assert close(out["norm_u2"][i], u @ u, rtol=1e-11) and close(out["norm_w2"][i], w @ w, rtol=1e-11)


def test_gd_agrees_with_core_and_reports_outcome():
    out = run_json(*point_args("0,1,5,40,inf"), "--optimizer", "gd")
    inv = point_invariants()
    state = core.gd_state(inv, np.array([0, 1, 5, 40]))
    np.testing.assert_allclose(out["m"][:4], state.m, rtol=1e-14, atol=0)
    np.testing.assert_allclose(out["ntk"][:4], state.ntk, rtol=1e-14, atol=0)
    outcome = core.gd_outcome(inv)
    code = getattr(outcome, "outcome", outcome)
    assert out["final"]["gd_outcome"] == core.GD_OUTCOMES[int(code)]
    assert out["t"][-1] is None


def test_gd_outcomes_on_both_sides_of_the_stability_edge():
    """docs/theory.md section 9 at m0 = 0 (typical init, U = W = 1, kappa = a = m* = 1): a Theta0 = eta_u + eta_w. Small
    steps (a Theta0 = 0.2 <= 2, a c m* = 0.1 < 1) converge; eta_u = 2.3, eta_w = 0.2 gives a Theta0 = 2.5
    inside the catapult window 2 < a Theta0 < 4 - (a c m*)^2 = 3.54."""
    small = run_json("--optimizer", "gd", "--times", "0,10,inf")
    assert small["final"]["gd_outcome"] == "converges"
    cat = run_json("--optimizer", "gd", "--lr-u", "2.3", "--lr-w", "0.2", "--times", "0,1,2,inf")
    assert cat["final"]["gd_outcome"] == "catapult"
    assert max(cat["loss"][:3]) > cat["loss"][0]  # the loss first rises ...
    assert cat["final"]["m"] is not None and close(cat["final"]["m"], 1.0, rtol=1e-9)  # ... then converges


def test_gd_diverging_run_gives_strict_json():
    out = run_json("--optimizer", "gd", "--lr-u", "5", "--lr-w", "5", "--times", "0,1,10,200,inf")
    assert out["final"]["gd_outcome"] == "diverges"
    assert out["final"]["m"] is None  # non-finite -> null, never an Infinity token


def test_gd_log_grid_is_integer_steps():
    out = run_json("--optimizer", "gd", "--t-max", "50", "--points", "12")
    t = out["t"]
    assert t[0] == 0 and t[-1] == 50
    assert all(isinstance(x, int) for x in t) and t == sorted(set(t))
    assert 2 <= len(t) <= 12


# --------------------------------------------------------------------------------------------------------
# time grids and text output


def test_flow_log_grid():
    out = run_json("--t-max", "200", "--points", "9")
    t = out["t"]
    assert len(t) == 9 and t[0] == 0.0 and t[-1] == 200.0
    assert t[1] == pytest.approx(0.2, rel=1e-12)  # t-min defaults to t-max / 1000
    ratios = [b / a for a, b in zip(t[1:], t[2:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)  # log-spaced
    custom = run_json("--t-max", "10", "--t-min", "1", "--points", "3")["t"]
    assert custom == pytest.approx([0.0, 1.0, 10.0], rel=1e-12)


def test_log_times_function():
    assert log_times(10.0, 2) == [0.0, 10.0]
    with pytest.raises(InputError) as err:
        log_times(10.0, 1)
    assert err.value.field == "points"


def test_times_are_sorted():
    out = run_json("--times", "10,inf,0,1")
    assert out["t"] == [0.0, 1.0, 10.0, None]


def test_table_output():
    res = run("solve", "--times", "0,1,10,inf")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["t", "m", "NTK", "alignment", "loss", "m_lin"]
    rows = lines[1:5]
    assert [r.split()[0] for r in rows] == ["0", "1", "10", "inf"]
    assert all(len(r.split()) == 6 for r in rows)
    assert len({len(r) for r in lines[:5]}) == 1  # aligned columns
    summary = "\n".join(lines[5:])
    for word in ("init:", "final:", "phase:", "feature learning", "tau", "t_learn"):
        assert word in summary


def test_gd_table_reports_outcome():
    res = run("solve", "--optimizer", "gd", "--times", "0,1,inf")
    assert res.exit_code == 0, res.stderr
    assert "GD:     converges" in res.stdout


def test_quiet():
    res = run("solve", "--quiet", "--times", "0,1")
    assert res.exit_code == 0 and res.stdout == "" and res.stderr == ""
    res = run("solve", "--quiet", "--json", "--times", "0,1")
    assert res.exit_code == 0 and json.loads(res.stdout)["t"] == [0.0, 1.0]


def test_version():
    res = run("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"phasediag {phasediag.__version__}"


# --------------------------------------------------------------------------------------------------------
# errors: exit status 2, one line naming the option, no traceback

BAD_INPUT = [
    (["--width", "0"], "--width"),
    (["--width", "-3"], "--width"),
    (["--width", "2.5"], "--width"),
    (["--width", "many"], "--width"),
    (["--output-scale", "0"], "--output-scale"),
    (["--output-scale", "-1"], "--output-scale"),
    (["--lr-u", "0"], "--lr-u"),
    (["--lr-w", "-0.1"], "--lr-w"),
    (["--input-var", "0"], "--input-var"),
    (["--input-var", "-2"], "--input-var"),
    (["--init-var-u", "-1"], "--init-var-u"),
    (["--init-var-w", "-1e-9"], "--init-var-w"),
    (["--gram", "1,1,1.5"], "--gram"),
    (["--gram", "1,4,-2.0000001"], "--gram"),
    (["--gram", "-1,1,0"], "--gram"),
    (["--gram", "1,1"], "--gram"),
    (["--gram", "1,a,0"], "--gram"),
    (["--gram", "1,nan,0"], "--gram"),
    (["--lr-u", "nan"], "--lr-u"),
    (["--teacher", "nan"], "--teacher"),
    (["--teacher", "inf"], "--teacher"),
    (["--output-scale", "inf"], "--output-scale"),
    (["--times", "0,-1"], "--times"),
    (["--times", "nan"], "--times"),
    (["--times", "-inf"], "--times"),
    (["--times", "1,,2"], "--times"),
    (["--times", "one"], "--times"),
    (["--t-max", "-5"], "--t-max"),
    (["--t-max", "ten"], "--t-max"),
    (["--points", "1"], "--points"),
    (["--points", "2.5"], "--points"),
    (["--t-min", "20", "--t-max", "10"], "--t-min"),
    (["--horizon", "-1"], "--horizon"),
    (["--horizon", "nan"], "--horizon"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "x"], "--seed"),
    (["--ntk-threshold", "0"], "--ntk-threshold"),
    (["--alignment-threshold", "-0.1"], "--alignment-threshold"),
    (["--optimizer", "adam"], "--optimizer"),
    (["--optimizer", "gd", "--times", "0,1.5"], "--times"),
    (["--optimizer", "gd", "--t-max", "10.5"], "--t-max"),
    (["--optimizer", "gd", "--horizon", "2.5"], "--horizon"),
    (["--seed", "1", "--typical"], "--seed"),
    (["--gram", "1,1,0", "--seed", "2"], "--gram"),
    (["--gram", "1,1,0", "--typical"], "--typical"),
    (["--times", "1,2", "--t-max", "10"], "--times"),
    (["--times", "1,2", "--points", "10"], "--points"),
    (["--plot", "figure.unknownformat"], "--plot"),
    (["--no-such-option"], "--no-such-option"),
]


@pytest.mark.parametrize("args, option", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(args, option):
    res = run("solve", *args)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert option in lines[0]
    assert lines[0].startswith("Error:")
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stdout == ""


@pytest.mark.parametrize("args, option", [
    (["solve", "--width", "0"], "--width"),
    (["solve", "--gram", "1,1,2"], "--gram"),
    (["solve", "--optimizer", "gd", "--times", "0.5"], "--times"),
])
def test_bad_input_exit_status_in_a_real_process(args, option):
    proc = run_process(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and option in proc.stderr
    assert "Traceback" not in proc.stderr


def test_internal_error_exits_1_without_traceback(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("phasediag.engine.point.solve_point", boom)
    monkeypatch.delenv("PHASEDIAG_DEBUG", raising=False)
    res = run("solve")
    assert res.exit_code == 1
    assert "internal error" in res.stderr and "boom" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    debug = run("solve", env={"PHASEDIAG_DEBUG": "1"})
    assert debug.exit_code == 1 and isinstance(debug.exception, RuntimeError)  # re-raised for debugging


def test_floating_point_trouble_is_a_one_line_error_not_garbage():
    """Inputs far outside docs/theory.md section 8's range overflow: bad input (exit 2) with a plain message naming
    the supported range, never inf/nan output."""
    res = run("solve", "--output-scale", "1e300", "--json")
    assert res.exit_code == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "supported range" in lines[0] and "Traceback" not in res.stderr


def test_solve_point_validates_like_the_cli():
    with pytest.raises(InputError) as err:
        solve_point(Hyperparameters(width=0))
    assert err.value.field == "width"
    with pytest.raises(InputError) as err:
        solve_point(init="gram", gram=(1.0, 1.0, 1.0000001))
    assert err.value.field == "gram"
    with pytest.raises(InputError) as err:
        solve_point(optimizer="gd", times=[0, 0.5])
    assert err.value.field == "times"


def test_gram_check_is_exact_at_the_boundary():
    """V^2 = U W exactly (parallel layers) is a valid Gram; the next float above is not."""
    ok = run_json("--gram", "4,9,6", "--times", "0,inf")
    assert ok["init"]["G"] == 0.0
    bad = run("solve", "--gram", f"4,9,{np.nextafter(6.0, 7.0)!r}")
    assert bad.exit_code == 2


# --------------------------------------------------------------------------------------------------------
# plotting and atomic writes


def test_plot_writes_png_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "trajectory.png"  # missing parent directories are created
    res = run("solve", "--plot", str(target), "--times", "0,0.1,1,10,100,inf")
    assert res.exit_code == 0, res.stderr
    data = target.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    assert sorted(p.name for p in target.parent.iterdir()) == ["trajectory.png"]
    assert str(target) in res.stderr  # "wrote FILE" (not with --quiet)


def test_plot_to_an_impossible_path_is_a_one_line_error(tmp_path):
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "fig.png"
    res = run("solve", "--plot", str(target), "--quiet")
    assert res.exit_code == 2  # the path given is bad input
    lines = res.stderr.strip().splitlines()
    assert lines == [f"Error: {target}: {tmp_path / 'afile'} is a file, not a directory"]
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_plot_gd_and_pdf(tmp_path):
    target = tmp_path / "gd.pdf"
    res = run("solve", "--optimizer", "gd", "--lr-u", "5", "--lr-w", "5", "--t-max", "100", "--quiet",
              "--plot", str(target))
    assert res.exit_code == 0, res.stderr
    assert target.read_bytes()[:5] == b"%PDF-"
    assert [p.name for p in tmp_path.iterdir()] == ["gd.pdf"]


def test_trajectory_figure_returns_figure_without_saving(tmp_path):
    from phasediag.plots.trajectory import trajectory_figure

    result = solve_point(times=[0.0, 1.0, 10.0, math.inf])
    fig = trajectory_figure(result)
    assert len(fig.axes) == 4
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    with atomic_write(target) as fh:
        fh.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("partial")
            raise RuntimeError("interrupted")
    assert target.read_text() == "first"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # temp file removed
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "fig.png") as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".png"
            tmp.write_bytes(b"x")
            raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    target = tmp_path / "data.bin"
    with atomic_write(target, "wb") as fh:
        fh.write(b"\x00\x01")
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert target.read_bytes() == b"\x00\x01"


# --------------------------------------------------------------------------------------------------------
# start-up: help without heavy imports, console script

_IMPORT_PROBE = """
import json, sys
from phasediag.cli import main
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = [m for m in ("numpy", "matplotlib", "yaml", "tqdm", "phasediag.core", "phasediag.engine.point")
         if m in sys.modules]
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


@pytest.mark.parametrize("args", [["--help"], ["solve", "--help"], ["--version"]])
def test_help_does_not_import_heavy_modules(args):
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE.format(args=args)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] in (0, None)
    assert report["heavy"] == []
    assert "Usage" in proc.stdout or "phasediag" in proc.stdout


def test_help_lists_every_option():
    res = run("solve", "--help")
    assert res.exit_code == 0
    for opt in ("--width", "--output-scale", "--lr-u", "--lr-w", "--init-var-u", "--init-var-w",
                "--input-var", "--teacher", "--gram", "--seed", "--typical", "--times", "--t-max", "--points",
                "--optimizer", "--json", "--plot", "--quiet", "--horizon", "--ntk-threshold",
                "--alignment-threshold"):
        assert opt in res.stdout, opt


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "phasediag"
    assert script.exists(), "install the package (pip install -e '.[test]') so the console script exists"
    proc = subprocess.run([str(script), "solve", "--json", "--times", "0,inf"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout, parse_constant=_reject_constant)["t"] == [0.0, None]


def test_seed_beyond_the_counter_range_is_bad_input():
    from click.testing import CliRunner

    from phasediag.cli import phasediag as group

    result = CliRunner().invoke(group, ["solve", "--seed", str(2**63)])
    assert result.exit_code == 2 and "--seed" in result.output


def test_numbers_beyond_float_range_are_bad_input_not_inf():
    from phasediag.cli import phasediag as group

    result = CliRunner().invoke(group, ["solve", "--times", "0,1e400"])
    assert result.exit_code == 2 and "1e400" in result.output and "floating-point range" in result.output
    assert CliRunner().invoke(group, ["solve", "--times", "0,inf", "--json"]).exit_code == 0


def test_limit_quiet_prints_nothing():
    from phasediag.cli import phasediag as group

    result = CliRunner().invoke(group, ["limit", "--param", "ntk", "--quiet"])
    assert result.exit_code == 0 and result.output == ""


@pytest.mark.parametrize("text, needle", [
    ("name: x\nmodel: {}\n",
     "experiment: is required at the top level (one of nonlinear, sgd_drift, activations, deep)"),
    ("name: x\nexperiment: sgd_drif\n",
     "experiment (line 2): unknown experiment 'sgd_drif' (did you mean 'sgd_drift'?)"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_experiment_without_a_known_study_is_bad_input(tmp_path, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    result = CliRunner().invoke(cli.phasediag, ["experiment", str(cfg), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


REPO = Path(__file__).resolve().parents[1]


def _readme_console_commands():
    """(words after `phasediag`, printed text) of every `$ phasediag ...` command in the README's ```console
    blocks."""
    readme = (REPO / "README.md").read_text()
    commands = []
    for block in readme.split("```console\n")[1:]:
        body = block.split("```", 1)[0]
        for chunk in body.split("$ ")[1:]:
            command, _, printed = chunk.partition("\n")
            words = command.split()
            if words[:1] == ["phasediag"]:
                commands.append((words[1:], printed))
    return commands


def _readme_console_examples():
    """(command, printed text) of the README's ```console blocks that run `solve` or `simulate` (exact text)."""
    return [(args, printed) for args, printed in _readme_console_commands()
            if args[:1] in (["solve"], ["simulate"]) and "--json" not in args]


def _readme_json_examples():
    """(command, printed JSON) of the README's ```console blocks that run `solve` or `simulate` with `--json`."""
    return [(args, printed) for args, printed in _readme_console_commands()
            if args[:1] in (["solve"], ["simulate"]) and "--json" in args]


def _readme_validate_examples():
    """(command, printed text) of the README's ```console blocks that run `validate`."""
    return [(args, printed) for args, printed in _readme_console_commands() if args[:1] == ["validate"]]


#: keys whose values are wall-clock times, which differ from run to run (dropped at any depth)
TIMING_KEYS = frozenset({"elapsed_s", "timing", "train_s", "save_s", "total_s"})


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _json_differences(shown, got, where="") -> list[str]:
    """Where two parsed JSON values differ (key paths), so that a failure names the stale entry of the README."""
    if isinstance(shown, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: missing from the output" for k in shown if k not in got]
        out += [f"{where}.{k}: printed but not shown" for k in got if k not in shown]
        for k in shown:
            if k in got:
                out += _json_differences(shown[k], got[k], f"{where}.{k}")
        return out
    if isinstance(shown, list) and isinstance(got, list) and len(shown) == len(got):
        return [d for i, (a, b) in enumerate(zip(shown, got)) for d in _json_differences(a, b, f"{where}[{i}]")]
    same = shown == got and type(shown) is type(got)
    return [] if same else [f"{where or '(top)'}: README shows {shown!r}, the program prints {got!r}"]


@pytest.mark.parametrize("args, printed", _readme_console_examples(), ids=lambda x: " ".join(x)[:60]
                         if isinstance(x, list) else "")
def test_readme_examples_print_what_the_readme_shows(args, printed):
    assert len(_readme_console_examples()) >= 3
    result = CliRunner().invoke(cli.phasediag, args)
    assert result.exit_code == 0, result.output
    shown, got = printed.rstrip("\n").splitlines(), result.output.rstrip("\n").splitlines()
    if args[0] == "simulate":  # the `exact:` line repeats the sampled Gram to 17 digits (BLAS-dependent)
        shown, got = ([line for line in lines if not line.startswith("exact:")] for lines in (shown, got))
    assert got == shown


def test_readme_console_examples_are_all_checked():
    """Every `$ phasediag ...` command of the README's ```console blocks is one the tests below run (an empty
    parameter list would skip them silently)."""
    kinds = (_readme_console_examples(), _readme_json_examples(), _readme_validate_examples())
    assert all(kinds)
    unchecked = [args for args, _ in _readme_console_commands() if not any(args in [a for a, _ in k] for k in kinds)]
    assert unchecked == [], "README console examples no test runs: extend the tests above"


@pytest.mark.parametrize("args, printed", _readme_json_examples(), ids=lambda x: " ".join(x)[:60]
                         if isinstance(x, list) else "")
def test_readme_json_examples_print_what_the_readme_shows(args, printed):
    """The README's `--json` examples (wrapped over several lines there) parse to the object the program prints,
    timing keys aside."""
    assert len(_readme_json_examples()) >= 1
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, "--json must print exactly one line (one object)"
    got = json.loads(lines[0], parse_constant=_reject_constant)
    shown = json.loads("".join(printed.splitlines()), parse_constant=_reject_constant)
    assert _json_differences(_without_timing(shown), _without_timing(got)) == []


@pytest.mark.parametrize("args, printed", _readme_validate_examples(), ids=lambda x: " ".join(x)[:60]
                         if isinstance(x, list) else "")
def test_readme_validate_example_prints_what_the_readme_shows(args, printed, tmp_path, monkeypatch):
    """The README's `validate` example, run as written (its default output directory under a copy of the
    config's folder in tmp_path, so the repository's outputs/ is not touched), prints the README's text."""
    assert len(_readme_validate_examples()) >= 1
    for word in args[1:]:
        if not word.startswith("-") and (REPO / word).is_file():  # the bundled config the example names
            (tmp_path / word).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / word).write_bytes((REPO / word).read_bytes())
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.rstrip("\n").splitlines() == printed.rstrip("\n").splitlines()


@pytest.mark.parametrize("module", ["sgd_drift", "nonlinear"])
def test_study_figure_formats_are_checked_by_the_shared_parser(module):
    from test_nonlinear import TINY as NONLINEAR
    from test_sgd_drift import TINY as SGD

    from phasediag.studies import nonlinear_digits as nonlinear_experiment
    from phasediag.studies import sgd_drift
    from phasediag.config.sweep import ConfigError, parse_yaml

    parse = {"sgd_drift": sgd_drift.parse_study, "nonlinear": nonlinear_experiment.parse_study}[module]
    text = {"sgd_drift": SGD, "nonlinear": NONLINEAR}[module]
    assert parse(parse_yaml(text, "t.yaml")).formats == ("png",)
    assert parse(parse_yaml(text + "plot: {formats: [pdf, svg, pdf]}\n", "t.yaml")).formats == ("pdf", "svg")
    line = text.count("\n") + 1
    with pytest.raises(ConfigError, match=rf"plot\.formats\[0\] \(line {line}\): unknown format 'pgn' "
                                          r"\(did you mean 'png'\?\); allowed: "):
        parse(parse_yaml(text + "plot: {formats: [pgn]}\n", "t.yaml"))
