"""`phasediag experiment` with `experiment: sgd_drift`: GD vs SGD drift of the conservation laws.

The expectations come from the model (docs/theory.md sections 3 and 9), not from this code's output: one descent step
with batch residual r_k multiplies Delta by (1 - c^2 r_k^2) and G by its square; full-batch SGD is GD on the
sample moments; the flow conserves both, so GD's drift is a discretization effect (O(lr^2) per step);
minibatch noise keeps r_k != 0 at the optimum when the labels are noisy, with variance prop. to (n - B)/(B (n - 1)).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from phasediag import core
from phasediag.training import simulate
from phasediag.studies import sgd_drift as sd
from phasediag.cli import phasediag
from phasediag.config.sweep import ConfigError, parse_yaml
from phasediag.jobs import lifecycle
from helpers import line_of

TINY = """\
name: tiny_sgd
description: a small GD vs SGD study
experiment: sgd_drift
model:
  width: 8
  output_scale: 1.5
  init_var_u: 0.2
  init_var_w: 0.05
  lr_ratio: 2
data:
  input_var: 1
  teacher: 1
  samples: 32
sweep:
  lr: [0.02, 0.05]
  batch_size: [1, 4, 32]
  noise_var: [0.25, 0]
train:
  steps: 300
  record: 12
seeds: 3
seed: 7
"""


def study_of(text: str) -> sd.Study:
    return sd.parse_study(parse_yaml(text, "test.yaml"))


# ---------------------------------------------------------------- exact identities of a descent step


def test_full_batch_sgd_is_gd_on_the_sample_moments():
    u0, w0 = simulate.sample_vectors(6, 0.3, 0.1, np.random.default_rng(1))
    n, steps = 40, np.arange(0, 151)
    hyper = dict(output_scale=1.3, lr_u=0.07, lr_w=0.03)
    x, y = sd.dataset(n, 1.7, -0.8, 0.5, np.random.default_rng(11))  # what sgd_vectors draws first
    sgd = simulate.sgd_vectors(u0, w0, **hyper, input_var=1.7, teacher=-0.8, batch_size=n, samples=n,
                               noise_var=0.5, steps=steps, rng=np.random.default_rng(11))
    a_hat, b_hat = np.mean(x * x), np.mean(x * y)
    gd = simulate.gd_vectors(u0, w0, **hyper, input_var=a_hat, teacher=b_hat / a_hat, steps=steps)
    for field in ("m", "imbalance", "gram_det", "alignment", "norm_u2", "norm_w2"):
        np.testing.assert_allclose(getattr(sgd, field), getattr(gd, field), rtol=1e-11, atol=0, err_msg=field)
    assert abs(sgd.m[-1] - b_hat / a_hat) < 1e-6  # it did train, to the sample optimum (not m* = -0.8)


def test_population_gd_drift_is_the_exact_product():
    kappa, lr_u, lr_w, a, teacher, steps = 1.5, 0.08, 0.02, 1.3, 0.9, 400
    u0, w0 = simulate.sample_vectors(7, 0.2, 0.3, np.random.default_rng(3))
    trace = simulate.gd_vectors(u0, w0, output_scale=kappa, lr_u=lr_u, lr_w=lr_w, input_var=a, teacher=teacher,
                                steps=np.arange(steps + 1))
    c2 = kappa**2 * lr_u * lr_w
    r = a * trace.m[:-1] - a * teacher  # the residual before each step
    product = np.concatenate([[1.0], np.cumprod(1.0 - c2 * r**2)])
    assert product[-1] < 0.999  # a drift worth measuring
    np.testing.assert_allclose(trace.imbalance / trace.imbalance[0], product, rtol=1e-10)
    np.testing.assert_allclose(trace.gram_det / trace.gram_det[0], product**2, rtol=1e-10)
    # the study's exact reference (core's GD map, not the vectors) gives the same log-decay
    study = study_of(TINY.replace("[0.02, 0.05]", "[0.02]").replace("lr_ratio: 2", "lr_ratio: 4")
                     .replace("input_var: 1", "input_var: 1.3")
                     .replace("teacher: 1", "teacher: 0.9").replace("steps: 300", f"steps: {steps}"))
    U, W, V = u0 @ u0, w0 @ w0, u0 @ w0
    ref = sd.population_references(study, core.explicit_gram(np.array([U]), np.array([W]), np.array([V])))
    at = sd.record_steps(steps, study.record)
    np.testing.assert_allclose(ref["gd_decay"][0, 0], -np.log(product[at]), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ref["gd_alignment"][0, 0], trace.alignment[at], rtol=1e-9, atol=1e-12)


def test_gd_drift_is_second_order_per_step_and_first_order_over_a_fixed_time():
    """The flow conserves Delta: GD's drift is the discretization error, O(lr^2) per step, so O(lr^2) after a
    fixed number of steps and O(lr) over a fixed training time (steps = T / lr), as for Euler's method."""
    gram = core.explicit_gram(np.array([1.2]), np.array([0.7]), np.array([0.1]))
    lrs = np.array([2.5e-4, 5e-4, 1e-3])

    def final_decay(lr: float, steps: int) -> float:
        study = study_of(TINY.replace("[0.02, 0.05]", f"[{lr}]").replace("steps: 300", f"steps: {steps}"))
        return float(sd.population_references(study, gram)["gd_decay"][0, 0, -1])

    fixed_steps = np.array([final_decay(lr, 20) for lr in lrs])
    fixed_time = np.array([final_decay(lr, int(round(0.1 / lr))) for lr in lrs])
    order_steps = np.polyfit(np.log(lrs), np.log(fixed_steps), 1)[0]
    order_time = np.polyfit(np.log(lrs), np.log(fixed_time), 1)[0]
    assert abs(order_steps - 2.0) < 0.1, order_steps
    assert abs(order_time - 1.0) < 0.1, order_time


def test_balanced_start_keeps_delta_zero_and_the_gram_determinant_measures_the_drift():
    """Delta_0 = 0: the balanced set is invariant (Delta_t = P_t 0), so the drift is read from G."""
    u0, w0 = np.zeros(4), np.zeros(4)
    u0[0], w0[1] = 0.9, 0.9  # |u0| = |w0|, orthogonal: Delta_0 = 0, G_0 > 0
    steps = np.arange(0, 301, 50)
    trace = simulate.sgd_vectors(u0, w0, output_scale=1.0, lr_u=0.2, lr_w=0.2, input_var=1.0, teacher=1.0,
                                 batch_size=2, samples=16, noise_var=0.5, steps=steps, rng=np.random.default_rng(0))
    scale = trace.norm_u2 / 0.2 + trace.norm_w2 / 0.2
    assert np.all(np.abs(trace.imbalance) <= 1e-14 * scale)  # 0 up to the rounding of |u|^2 - |w|^2
    lr = np.array([[0.2]])
    assert np.all(np.isnan(sd.log_decay(trace.imbalance[None], trace.norm_u2[None], trace.norm_w2[None], lr, lr)))
    decay = sd.gram_decay(trace.gram_det[None])[0]
    assert decay[0] == 0.0 and np.all(np.diff(decay) > 0) and decay[-1] > 0.1


def test_drift_measures_flag_divergence_and_rounding_without_warnings():
    imbalance = np.array([[2.0, 1.0, 1e-12, np.inf], [0.0, 0.0, 0.0, 0.0]])
    norms = np.array([[3.0, 3.0, 3.0, np.inf], [1.0, 1.0, 1.0, 1.0]])
    decay = sd.log_decay(imbalance, norms, norms, np.ones((2, 1)), np.ones((2, 1)))
    assert decay[0, 0] == 0.0 and decay[0, 1] == pytest.approx(np.log(2.0))
    assert np.isnan(decay[0, 2])  # |Delta| < 1e-9 (|u|^2/eta_u + |w|^2/eta_w): float64 rounding, not data
    assert np.isnan(decay[0, 3]) and np.all(np.isnan(decay[1]))  # diverged; Delta_0 = 0
    gram = sd.gram_decay(np.array([[4.0, 1.0, 0.0, np.inf]]))
    assert gram[0, 1] == pytest.approx(np.log(2.0)) and np.all(np.isnan(gram[0, 2:]))


# ---------------------------------------------------------------- the study: SGD against GD


STUDY = """\
name: sgd_vs_gd_test
experiment: sgd_drift
model: {width: 20, output_scale: 1, init_var_u: 0.05, init_var_w: 0.05}
data: {input_var: 1, teacher: 1, samples: 64}
sweep:
  lr: [0.02, 0.1]
  batch_size: [1, 4, 16, 64]
  noise_var: [0.25, 0]
train: {steps: 2000, record: 30}
seeds: 8
seed: 3
"""


@pytest.fixture(scope="module")
def study_arrays():
    study = study_of(STUDY)
    return study, sd.simulate_study(study)


def test_sgd_drift_exceeds_gd_and_grows_as_the_batch_shrinks(study_arrays):
    study, arr = study_arrays
    assert not arr["sgd_diverged"].any()
    d_k = arr["sgd_decay"][0, 1, :, :, -1]  # noise_var 0.25, lr 0.1: (batch size, seed)
    gd = arr["gd_decay"][1, :, -1]  # population GD, same seeds
    sample_gd = arr["sample_decay"][0, 1, :, -1]  # full-batch GD on each seed's sample (exact map)
    # B = n is full-batch GD on the sample: the same drift as its exact map, to rounding
    np.testing.assert_allclose(d_k[3], sample_gd, rtol=1e-9)
    noise = np.median(d_k - sample_gd, axis=1)  # paired by seed
    n, sizes = 64, np.array([1, 4, 16])
    f_b = (n - sizes) / (sizes * (n - 1))
    assert np.all(np.median(d_k[:3], axis=1) > 5 * np.median(gd))
    for j in range(2):  # predicted ratio f_B[j] / f_B[j+1] ~ 4.2, 5.0; require a clear factor
        assert noise[j] > 2.5 * noise[j + 1], noise
    slope = np.polyfit(np.log(f_b), np.log(noise[:3]), 1)[0]
    assert 0.8 < slope < 1.25, slope
    # noise part ~ lr^2 (noise budget per step c^2 f_B v), GD's drift ~ lr (finite transient)
    noise_small = np.median(arr["sgd_decay"][0, 0, :, :, -1] - arr["sample_decay"][0, 0, None, :, -1], axis=1)
    lr_slope = np.log(noise[:3] / noise_small[:3]) / np.log(0.1 / 0.02)
    assert np.all((lr_slope > 1.7) & (lr_slope < 2.3)), lr_slope
    gd_slope = np.log(np.median(arr["gd_decay"][1, :, -1]) / np.median(arr["gd_decay"][0, :, -1])) / np.log(5.0)
    assert 0.8 < gd_slope < 1.2, gd_slope


def test_sgd_balances_and_aligns_the_layers_only_with_label_noise(study_arrays):
    study, arr = study_arrays
    half = int(np.argmin(np.abs(arr["step"] - study.steps / 2)))
    d = arr["sgd_decay"][:, 1, 0]  # B = 1, lr 0.1: (noise, seed, step)
    assert np.all(d[0, :, -1] - d[0, :, half] > 0.5)  # with noise the decay keeps growing ...
    np.testing.assert_allclose(d[1, :, -1], d[1, :, half], rtol=1e-9, atol=1e-12)  # ... without it, it stops
    mis = arr["sgd_misalignment"][:, 1, 0, :, -1]
    gd_mis = sd.misalignment(arr["gd_alignment"][1, :, -1])
    assert np.all(mis[0] < 1e-2 * gd_mis)  # SGD with label noise: layers aligned (G -> 0)
    ratio = mis[1] / gd_mis  # without: about GD's alignment (SGD aligns a little more, seed by seed)
    assert np.all((ratio > 0.8) & (ratio <= 1.0 + 1e-9)) and np.median(ratio) > 0.9, ratio
    # zeta is a function of m and P alone: zeta = m / hypot(m, kappa sqrt(G_0) |P|), |P| = exp(-D)
    m = arr["sgd_m"][0, 1, 0, :, -1]
    zeta = m / np.hypot(m, np.sqrt(arr["sgd_gram_det"][0, 1, 0, :, 0]) * np.exp(-arr["sgd_gram_decay"][0, 1, 0, :, -1]))
    np.testing.assert_allclose(arr["sgd_alignment"][0, 1, 0, :, -1], zeta, rtol=1e-9)


def test_delta_and_gram_determinant_drift_by_the_same_factor(study_arrays):
    _, arr = study_arrays
    both = np.isfinite(arr["sgd_imbalance_decay"])
    assert both.mean() > 0.99
    np.testing.assert_allclose(arr["sgd_imbalance_decay"][both], arr["sgd_gram_decay"][both], rtol=1e-6, atol=1e-9)


def test_leading_order_prediction_becomes_exact_as_the_learning_rate_shrinks(study_arrays):
    _, arr = study_arrays
    measured = arr["sgd_decay"][0, :, :3, :, -1].mean(axis=-1)  # noise_var 0.25, B < n: (lr, B)
    predicted = arr["predicted_decay"][0, :, :3, :, -1].mean(axis=-1)
    ratio = measured / predicted
    assert np.all(np.abs(ratio[0] - 1) < 0.1), ratio  # lr 0.02
    assert np.all(np.abs(ratio[0] - 1) < np.abs(ratio[1] - 1)), ratio  # closer than at lr 0.1


# ---------------------------------------------------------------- running it: determinism, files, CLI, errors


def npz_bytes(directory: Path) -> bytes:
    return (directory / "results.npz").read_bytes()


def run_tiny(cfg: Path, out: Path, workers: int = 1, plot: bool = False) -> dict:
    """Run a config through the one lifecycle; the summary as `--json` prints it."""
    _, summary = lifecycle.run(cfg, out=out, options=lifecycle.Options(workers=workers, plot=plot))
    return summary.to_dict()


def test_workers_give_bit_identical_results(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    one = run_tiny(cfg, tmp_path / "w1", workers=1)
    two = run_tiny(cfg, tmp_path / "w2", workers=2)
    assert npz_bytes(tmp_path / "w1") == npz_bytes(tmp_path / "w2")
    assert one["findings"] == two["findings"] and one["runs"] == 2 * 2 * 3 * 3
    again = run_tiny(cfg, tmp_path / "w3", workers=1)
    assert again["findings"] == one["findings"]
    assert npz_bytes(tmp_path / "w3") == npz_bytes(tmp_path / "w1")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory of TINY written without figures (plot and export below read it back from disk)."""
    base = tmp_path_factory.mktemp("tiny_run")
    cfg = base / "tiny.yaml"
    cfg.write_text(TINY)
    run_tiny(cfg, base / "out")
    return base / "out"


def test_result_loaded_from_disk_has_the_dimensions_of_every_array(tiny_run):
    result = lifecycle.load(tiny_run)
    assert result.kind == "sgd_drift" and result.name == "tiny_sgd"
    assert list(result.coords) == ["noise_var", "lr", "batch_size", "seed", "step"]
    with np.load(tiny_run / "results.npz") as data:  # results.npz: the coordinates first, then the data
        assert data.files[:5] == list(result.coords) and set(data.files[5:]) == set(result.arrays)
    assert set(result.meta["dims"]) == set(result.arrays)
    for name, values in result.arrays.items():
        dims = result.dims(name)
        assert values.shape == tuple(result.coords[d].size for d in dims), (name, dims, values.shape)
    assert result.dims("sgd_imbalance") == ("noise_var", "lr", "batch_size", "seed", "step")
    assert result.dims("sgd_diverged") == ("noise_var", "lr", "batch_size", "seed")
    assert result.dims("gd_decay") == ("lr", "seed", "step") and result.dims("U0") == ("seed",)
    assert result.dims("sample_decay") == ("noise_var", "lr", "seed", "step")
    meta = result.meta
    assert meta["seed"] == 7 and meta["runs"] == 36 and meta["workers"] == 1 and meta["plot_lr"] == 0.05
    assert meta["findings"]["lr"] == 0.05 and "train_s" in meta["timing"] and meta["figures"] == []


def test_resolved_config_reads_back_as_the_same_study(tiny_run):
    study = study_of(TINY)
    assert study.resolved == study.resolved and study.resolved["plot"]["lr"] == "auto"
    result = lifecycle.load(tiny_run)
    again = sd.study_of_result(result)  # from meta.json's config, the step figure's lr as chosen after training
    assert again == replace(study, plot_lr=0.05)
    assert sd.read(parse_yaml(TINY + "plot: {lr: auto}\n", "t.yaml"), "t.yaml", lifecycle.Options()) == study


def test_plot_and_export_work_on_a_run_directory(tiny_run, tmp_path):
    directory = tmp_path / "copy"
    directory.mkdir()
    for f in tiny_run.iterdir():
        (directory / f.name).write_bytes(f.read_bytes())
    result = CliRunner().invoke(phasediag, ["plot", str(directory), "--json"])  # lifecycle.plot, from disk
    assert result.exit_code == 0, result.output
    paths = [Path(p) for p in json.loads(result.output)]
    assert sorted(p.name for p in paths) == ["tiny_sgd__drift_vs_lr.png", "tiny_sgd__drift_vs_step.png"]
    assert all(p.parent == directory and p.stat().st_size > 0 for p in paths)
    meta = json.loads((directory / "meta.json").read_text())
    assert sorted(meta["figures"]) == sorted(p.name for p in paths)
    assert set(meta["figures"]) <= set(meta["files"])
    result = CliRunner().invoke(phasediag, ["export", str(directory), "--csv", "--json"])
    assert result.exit_code == 0, result.output
    tables = {Path(p).name: Path(p).read_text().splitlines() for p in json.loads(result.output)}
    assert sorted(tables) == ["tiny_sgd.csv", "tiny_sgd_init.csv", "tiny_sgd_population.csv",
                              "tiny_sgd_runs.csv", "tiny_sgd_sample.csv"]
    loaded = lifecycle.load(directory)
    steps = loaded.coords["step"].size
    header = tables["tiny_sgd.csv"][0].split(",")
    assert header[:5] == ["noise_var", "lr", "batch_size", "seed", "step"] and "sgd_decay" in header
    assert len(tables["tiny_sgd.csv"]) == 1 + 2 * 2 * 3 * 3 * steps
    assert tables["tiny_sgd_runs.csv"][0] == "noise_var,lr,batch_size,seed,sgd_diverged"
    assert len(tables["tiny_sgd_runs.csv"]) == 1 + 36 and tables["tiny_sgd_runs.csv"][1].endswith(",false")
    assert tables["tiny_sgd_init.csv"][0] == "seed,U0,W0,V0" and len(tables["tiny_sgd_init.csv"]) == 1 + 3
    assert len(tables["tiny_sgd_population.csv"]) == 1 + 2 * 3 * steps
    assert len(tables["tiny_sgd_sample.csv"]) == 1 + 2 * 2 * 3 * steps
    merged = CliRunner().invoke(phasediag, ["merge", str(directory), "--out", str(tmp_path / "m")])
    assert merged.exit_code == 2 and "not sharded" in merged.output
    assert len(merged.output.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_cli_end_to_end(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    result = CliRunner().invoke(phasediag, ["experiment", str(cfg), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    names = sorted(Path(f).name for f in info["files"])
    assert names == ["meta.json", "results.npz", "tiny_sgd__drift_vs_lr.png", "tiny_sgd__drift_vs_step.png"]
    assert all(Path(f).stat().st_size > 0 for f in info["files"])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 7 and meta["config"]["sweep"]["batch_size"] == [1, 4, 32] and meta["version"]
    assert meta["findings"] == info["findings"] and info["runs"] == 36
    block = info["findings"]["by_noise"][0]
    assert [row["batch_size"] for row in block["by_batch"]] == [1, 4, 32]
    with np.load(out / "results.npz") as data:
        assert data["sgd_decay"].shape == (2, 2, 3, 3, len(data["step"]))
        assert data["gd_decay"].shape == (2, 3, len(data["step"])) and data["step"][-1] == 300
    assert not list(out.glob(".*")), "no temporary files may remain"
    text = CliRunner().invoke(phasediag, ["experiment", str(cfg), "--out", str(out), "--no-plot"])
    assert text.exit_code == 0 and "identity" in text.output and "noise_var = 0.25" in text.output
    # `phasediag run` runs a study too (the one lifecycle), with the same summary
    again = CliRunner().invoke(phasediag, ["run", str(cfg), "--out", str(tmp_path / "run"), "--no-plot", "--json"])
    assert again.exit_code == 0, again.output
    info_run = json.loads(again.output)
    assert info_run["kind"] == "sgd_drift" and info_run["findings"] == info["findings"] and info_run["runs"] == 36
    assert npz_bytes(tmp_path / "run") == npz_bytes(out)
    text = CliRunner().invoke(phasediag, ["run", str(cfg), "--out", str(tmp_path / "run"), "--no-plot"])
    assert text.exit_code == 0 and "36 SGD runs" in text.output and "noise_var = 0:" in text.output


def edit(old: str, new: str) -> str:
    assert old in TINY
    return TINY.replace(old, new)


BAD = [
    (edit("batch_size: [1, 4, 32]", "batch_size: [1, 4, 64]"), "sweep.batch_size[2]", "batch_size: [1, 4, 64]",
     "larger than data.samples"),
    (edit("  batch_size:", "  batchsize:"), "sweep.batchsize", "batchsize:", "did you mean 'batch_size'"),
    (edit("steps: 300", "steps: 200000").replace("seeds: 3", "seeds: 1000"), "train.steps", "steps: 200000",
     "above the cap"),
    (edit("init_var_u: 0.2", "init_var_u: 0").replace("init_var_w: 0.05", "init_var_w: 0"), "model.init_var_w",
     "init_var_w: 0", "nothing trains"),
    (TINY + "plot: {lr: 0.03}\n", "plot.lr", "plot: {lr: 0.03}", "not one of the swept"),
    (edit("lr: [0.02, 0.05]", "lr: [0.02, -0.05]"), "sweep.lr[1]", "lr: [0.02, -0.05]", "must be > 0"),
    (edit("  samples: 32\n", "  samples: 32\n  noise_var: 0.1\n"), "sweep.noise_var", "noise_var: [0.25, 0]",
     "give it in one place"),
]


@pytest.mark.parametrize("text, where, needle, message", BAD, ids=[b[1] for b in BAD])
def test_bad_config_exits_2_naming_key_and_line(tmp_path, text, where, needle, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    result = CliRunner().invoke(phasediag, ["experiment", str(cfg), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert f"{where} (line {line_of(text, needle)})" in result.output and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_step_figure_defaults_to_the_largest_lr_without_divergence():
    study = study_of(TINY)
    assert study.plot_lr is None  # not given: chosen after training
    diverged = np.zeros(study.shape, dtype=bool)
    assert sd.chosen_lr(study, {"sgd_diverged": diverged}) == 0.05
    diverged[1, 1, 0, 2] = True  # one run at lr 0.05 diverged
    assert sd.chosen_lr(study, {"sgd_diverged": diverged}) == 0.02
    assert study_of(TINY + "plot: {lr: 0.05}\n").plot_lr == 0.05


def test_missing_samples_is_a_config_error():
    with pytest.raises(ConfigError, match="data.samples"):
        study_of(edit("  samples: 32\n", ""))


def test_bundled_config_is_valid_and_within_budget():
    path = Path(__file__).resolve().parents[1] / "configs" / "11_gd_vs_sgd.yaml"
    study = study_of(path.read_text())
    assert study.samples in study.batch_sizes  # full-batch GD on the sample is part of the comparison
    assert 0.0 in study.noise_vars and any(v > 0 for v in study.noise_vars)
    assert study.runs * study.steps <= 4e6  # ~20 s with --workers 2 on the 2-core machine
