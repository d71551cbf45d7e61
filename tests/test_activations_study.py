"""The `activations` study (issue 15, the paper's Fig. 1): activated networks on the model's task against the
exact theory, through the one job lifecycle."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import phasediag
from phasediag import core
from phasediag.cli import phasediag as cli
from phasediag.studies import activations as study_module
from phasediag.training import simulate

from helpers import assert_refused

pytestmark = pytest.mark.filterwarnings("error")
ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny_act", "experiment": "activations",
    "model": {"width": 60, "output_scale": 0.13, "lr_u": 5, "lr_w": 5,
              "activations": ["linear", "relu", "leaky_relu", "tanh", "sigmoid", "swish"]},
    "cases": {"alignment": {"init_var_u": 0.0017, "init_var_w": 0.0017, "teacher": 1},
              "disalignment": {"init_var_u": 0.17, "init_var_w": 0.17, "teacher_over_m0": 0.1}},
    "train": {"steps": 80, "record": 12, "nodes": 24},
    "seed": 4,
}


@pytest.fixture(scope="module")
def tiny():
    return phasediag.run(TINY)


def test_linear_networks_follow_their_exact_theory_to_rounding(tiny):
    j = list(tiny.coords["activation"]).index("linear")
    for name in ("deviation_alignment", "deviation_ntk", "deviation_m"):
        assert np.all(tiny[name][:, j] < 1e-12), name
    assert np.all(tiny["label_measured"][:, j] == tiny["label_theory"][:, j])


def test_every_activation_of_a_case_starts_from_the_same_vectors(tiny):
    for name in ("measured_norm_u2", "measured_norm_w2"):
        start = tiny[name][..., 0]
        assert np.all(start == start[:, :1]), name
    u0, w0 = study_module.initial_vectors(study_module.study_of(tiny), 0)
    assert tiny["U0"][0] == u0 @ u0 and tiny["V0"][0] == u0 @ w0


def test_the_relu_theory_is_the_split_solution_and_the_others_the_gain_scaled_linear_model(tiny):
    study = study_module.study_of(tiny)
    steps = tiny.coords["step"]
    for i, case in enumerate(study.cases):
        u0, w0 = study_module.initial_vectors(study, i)
        teacher = float(tiny["teacher"][i])
        hyper = dict(output_scale=case.output_scale, lr_u=case.lr_u, lr_w=case.lr_w, input_var=1.0, teacher=teacher)
        sol = core.relu_solution(u0, w0, **hyper, times=steps, optimizer="gd")
        j = list(study.activations).index("relu")
        assert np.array_equal(tiny["theory_alignment"][i, j], sol.alignment)
        assert np.array_equal(tiny["relu_crossed"][i], sol.crossed)
        j = list(study.activations).index("sigmoid")
        gram = core.explicit_gram(u0 @ u0, w0 @ w0, u0 @ w0)
        problem = core.Problem(*(np.asarray(x) for x in (0.25 * case.output_scale, case.lr_u, case.lr_w, 1.0,
                                                          teacher)), gram)
        exact = core.gd_state(core.invariants(problem), steps)
        assert np.array_equal(tiny["theory_ntk"][i, j], exact.ntk)
        # the measured network is simulate's population GD of that activation from the same vectors
        trace = simulate.gd_vectors(u0, w0, **hyper, steps=steps, activation="sigmoid", nodes=24)
        assert np.array_equal(tiny["measured_alignment"][i, j], trace.alignment)


def test_teacher_over_m0_sets_the_disalignment_case_from_the_drawn_vectors(tiny):
    i = list(tiny.coords["case"]).index("disalignment")
    assert tiny["teacher"][i] == 0.1 * tiny["m0"][i]
    found = tiny.meta["findings"]["cases"][i]
    assert found["kind"].startswith("disalignment") and abs(found["m0"]) > abs(found["teacher"])


def test_relu_is_exact_until_its_first_crossing_and_counts_the_crossings(tiny):
    j = list(tiny.coords["activation"]).index("relu")
    steps = tiny.coords["step"]
    for i in range(2):
        first = int(tiny["relu_first_crossing"][i])
        crossed = tiny["relu_crossed"][i]
        assert np.all(np.diff(crossed) >= 0) and (first < 0) == (crossed[-1] == 0)
        upto = steps <= first if first >= 0 else np.ones(steps.size, dtype=bool)
        measured, theory = tiny["measured_alignment"][i, j, upto], tiny["theory_alignment"][i, j, upto]
        assert np.all(np.abs(measured - theory) <= 1e-11 * np.abs(theory))  # rounding, grown over the steps


def test_results_are_the_same_bits_for_any_number_of_workers(tiny):
    two = phasediag.run(TINY, workers=2)
    for name in tiny.arrays:
        assert np.array_equal(tiny[name], two[name]), name


def test_where_the_linearized_theory_fails_tanh_saturates_while_the_linear_model_diverges():
    """Larger init at a rate the linear model cannot take (a Theta_0 > 2): its GD and tanh's linearized theory
    diverge, while the tanh network saturates and trains: the README's 'where it fails'."""
    config = {**TINY, "model": {**TINY["model"], "width": 200, "output_scale": 0.0707, "activations": ["linear", "tanh"]},
              "cases": {"disalignment": {"init_var_u": 0.5, "init_var_w": 0.5, "teacher_over_m0": 0.1}},
              "train": {"steps": 300, "record": 25, "nodes": 32}, "seed": 0}
    result = phasediag.run(config)
    rows = {r["activation"]: r for r in result.meta["findings"]["cases"][0]["by_activation"]}
    assert rows["linear"]["label"] == "diverged" and rows["tanh"]["theory_label"] == "diverged"
    assert rows["tanh"]["label"] != "diverged" and rows["tanh"]["deviation_ntk"] is None
    j = list(result.coords["activation"]).index("tanh")
    assert np.all(np.isfinite(result["measured_m"][0, j])) and not np.all(np.isfinite(result["theory_m"][0, j]))


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["model"].update(activations=["relu", "gelu"]), "model.activations"),
    (lambda c: c["model"].update(activations=["relu", "relu"]), "distinct"),
    (lambda c: c["cases"]["alignment"].update(teacher_over_m0=0.5), "not both"),
    (lambda c: c["cases"].update(third={"init_var_u": 0, "init_var_w": 0, "teacher": 1}), "both 0"),
    (lambda c: c["cases"].update(bad={"init_var_u": 1, "init_var_w": 1}), "cases.bad.teacher"),
    (lambda c: c["train"].update(nodes=3), "train.nodes"),
    (lambda c: c["model"].update(slope="steep"), "model.slope"),
    (lambda c: (c["model"].update(width=1_000_000), c["train"].update(steps=100_000)), "train.steps"),
    (lambda c: c["cases"]["alignment"].update(lr=1), "cases.alignment.lr"),
    (lambda c: (c["model"].update(width=1_000_000), c["train"].update(nodes=4096, steps=1)), "train.nodes"),
    (lambda c: c["cases"]["disalignment"].update(init_var_u=0), "teacher_over_m0"),
    (lambda c: c["cases"]["disalignment"].update(teacher_over_m0=0), "teacher_over_m0"),
    (lambda c: c["cases"]["alignment"].update(init_var_u=1e300), "cases.alignment.init_var_u"),
    (lambda c: c["model"].update(slope=-1), "model.slope"),
    (lambda c: c.update(data={"input_var": 1e-308}), "data.input_var"),
])
def test_bad_configs_get_one_line_naming_the_key_and_exit_2(tmp_path, edit, needle):
    assert_refused(tmp_path, TINY, edit, needle)


def test_the_readme_rows_of_the_piecewise_linear_networks_are_the_bundled_runs():
    """The README's table, for linear, ReLU and leaky ReLU (the fast ones: ~10 s at width 10^4), against the
    bundled config itself (tanh, sigmoid and swish take ~80 s more: `phasediag experiment
    configs/13_activations_vs_theory.yaml --workers 2` prints them)."""
    config = yaml.safe_load((ROOT / "configs/13_activations_vs_theory.yaml").read_text())
    config["model"]["activations"] = ["linear", "relu", "leaky_relu"]
    result = phasediag.run(config)
    readme = (ROOT / "README.md").read_text()
    names = {"linear": "linear", "relu": "ReLU", "leaky_relu": "leaky ReLU (0.01)"}
    for activation, shown in names.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {shown} |"))
        shown_numbers = re.findall(r"(\d+(?:\.\d+)?)e-(\d+)", row.split("|", 3)[3])
        j = list(result.coords["activation"]).index(activation)
        got = [result["deviation_alignment"][0, j], result["deviation_ntk"][0, j],
               result["deviation_alignment"][1, j], result["deviation_ntk"][1, j]]
        assert len(shown_numbers) == 4
        if activation == "linear":  # rounding only: the README states the bound, which any numpy meets
            assert row.count("< 1e-13") == 4 and max(got) < 1e-13, got
            continue
        for (mantissa, exponent), value in zip(shown_numbers, got):  # equal to the digits the README shows
            digits = len(mantissa.replace(".", ""))
            assert float(f"{value:.{digits}g}") == float(f"{mantissa}e-{exponent}"), (activation, mantissa, value)
    assert result.meta["findings"]["labels_agree"] == 6


MAP = {
    "name": "tiny_map", "experiment": "activations",
    "model": {"width": 10, "activations": ["linear", "relu", "tanh"]},
    "map": {"widths": [8, 32], "init_var": {"log": [1e-3, 0.3, 3]}, "teacher": 1, "output_scale": "1/sqrt(d)",
            "lr_u": 1, "lr_w": 1},
    "train": {"steps": 60, "record": 10, "nodes": 16}, "seed": 3,
}


def test_the_label_map_compares_every_networks_label_with_its_theorys():
    result = phasediag.run(MAP)
    assert result["map_label_measured"].shape == (3, 2, 3) and list(result.coords["map_width"]) == [8, 32]
    linear = list(result.coords["activation"]).index("linear")
    assert np.array_equal(result["map_label_measured"][linear], result["map_label_theory"][linear])  # exact theory
    assert np.all(result["map_deviation_alignment"][linear] < 1e-12)
    rows = {r["activation"]: r for r in result.meta["findings"]["map"]["by_activation"]}
    for name, row in rows.items():
        j = list(result.coords["activation"]).index(name)
        assert row["agree"] == np.count_nonzero(result["map_label_measured"][j] == result["map_label_theory"][j])
        assert row["agree"] + len(row["disagreements"]) == row["points"] == 6
    # every variance of a width starts from the same draws: the vectors are the same up to the scale sqrt(s)
    study = study_module.study_of(result)
    u_small, _ = study_module.map_vectors(study, 1, 1e-3)
    u_large, _ = study_module.map_vectors(study, 1, 0.3)
    assert np.allclose(u_large, np.sqrt(0.3 / 1e-3) * u_small, rtol=1e-14)
    assert [stem.split("__")[-1] for stem, _ in study_module.figures(result)] == ["label_map"]


def test_a_config_needs_cases_or_a_map(tmp_path):
    config = {k: v for k, v in TINY.items() if k != "cases"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert out.exit_code == 2 and "cases: is required" in out.stderr


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["map"].update(init_var=[]), "map.init_var"),
    (lambda c: c["map"].update(init_var=[0.1, 0.1]), "distinct"),
    (lambda c: c["map"].update(init_var=0.1), "map.init_var"),
    (lambda c: c["map"].update(widths=[8, 8]), "distinct"),
    (lambda c: c["map"].update(output_scale="1/(d-8)"), "map.output_scale"),
])
def test_bad_maps_get_one_line_naming_the_key_and_exit_2(tmp_path, edit, needle):
    assert_refused(tmp_path, MAP, edit, needle)


def test_a_zero_layer_and_diverging_runs_are_reported_without_warnings():
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["cases"]["alignment"]["init_var_u"] = 0  # m0 = 0, zeta0 = 0 (a zero layer)
    config["cases"]["disalignment"] = {"init_var_u": 0.01, "init_var_w": 0.01, "teacher": 1, "lr_u": 1e4,
                                       "lr_w": 1e4}  # GD diverges
    result = phasediag.run(config)
    i = list(result.coords["case"]).index("disalignment")
    assert np.all(result["label_measured"][i] == -1)
    assert not np.any(np.isnan(result["theory_alignment"])) and not np.any(np.isnan(result["measured_alignment"]))
    assert result.meta["findings"]["cases"][0]["zeta0"] == 0.0
    for _, draw in study_module.figures(result):
        draw()
