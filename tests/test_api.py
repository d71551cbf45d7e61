"""The Python API (phasediag.solve / simulate / run / load / limit) against the command line it mirrors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import phasediag
from phasediag.cli import phasediag as group
from job_cases import CASES, GD_SWEEP, SWEEP

ROOT = Path(__file__).resolve().parent.parent


def cli_json(*args) -> dict:
    result = CliRunner().invoke(group, [str(a) for a in args] + ["--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def without_meta(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "meta"}


# (API keywords, the same point as CLI options)
POINTS = [
    ({}, []),
    ({"width": 4000, "output_scale": 0.00025, "lr_u": 4000, "lr_w": 0.00025, "init_var_u": 1, "init_var_w": 1,
      "seed": 1, "t_max": 10}, ["--width", 4000, "--output-scale", 0.00025, "--lr-u", 4000, "--lr-w", 0.00025,
                                "--init-var-u", 1, "--init-var-w", 1, "--seed", 1, "--t-max", 10]),
    ({"seed": 7, "teacher": -2, "times": [0, 1, 10, 100, math.inf]},
     ["--seed", 7, "--teacher", -2, "--times", "0,1,10,100,inf"]),
    ({"optimizer": "gd", "lr_u": 2.3, "lr_w": 0.2}, ["--optimizer", "gd", "--lr-u", 2.3, "--lr-w", 0.2]),
    ({"width": 1, "gram": (1.0, 1.0, -1.0), "times": [0, 5, math.inf]},
     ["--width", 1, "--gram", "1,1,-1", "--times", "0,5,inf"]),
]


@pytest.mark.parametrize("kwargs, options", POINTS)
def test_solve_equals_the_cli(kwargs, options):
    point = phasediag.solve(**kwargs)
    assert without_meta(point.to_dict()) == without_meta(cli_json("solve", *options))
    data = point.to_dict()
    np.testing.assert_array_equal(point.t, np.array(data["t"], dtype=float))
    np.testing.assert_array_equal(point.m, np.array([np.nan if v is None else v for v in data["m"]], dtype=float))
    assert point.phase == data["final"]["label"] and set(point.trajectory) >= {"t", "m", "ntk", "alignment", "loss"}


@pytest.mark.parametrize("kwargs, options", [
    ({"width": 50, "seed": 3, "times": [0, 10, 100]}, ["--width", 50, "--seed", 3, "--times", "0,10,100"]),
    ({"optimizer": "sgd", "batch_size": 8, "samples": 64, "noise_var": 0.1, "t_max": 200},
     ["--optimizer", "sgd", "--batch-size", 8, "--samples", 64, "--noise-var", 0.1, "--t-max", 200]),
    ({"optimizer": "flow", "width": 10, "times": [0, 1, 4]}, ["--optimizer", "flow", "--width", 10, "--times", "0,1,4"]),
])
def test_simulate_equals_the_cli(kwargs, options):
    point = phasediag.simulate(**kwargs)
    assert without_meta(point.to_dict()) == without_meta(cli_json("simulate", *options))
    assert point.imbalance.shape == point.t.shape


def test_solve_of_the_simulated_gram_is_the_exact_prediction():
    sim = phasediag.simulate(width=30, seed=2, times=[0, 5, 50])
    exact = phasediag.solve(width=30, optimizer="gd", gram=(sim.init["U"], sim.init["W"], sim.init["V"]),
                            times=[0, 5, 50])
    np.testing.assert_allclose(sim.m, exact.m, rtol=1e-10)


def test_point_plot_is_a_figure_that_is_not_saved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = phasediag.solve().plot()
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure) and len(fig.axes) >= 4
    assert list(tmp_path.iterdir()) == []


def test_bad_input_names_the_field():
    with pytest.raises(phasediag.BadInput, match="^lr_u: "):
        phasediag.solve(lr_u=-1)
    with pytest.raises(phasediag.FieldError) as err:
        phasediag.solve(times=[0, 1], t_max=5)
    assert err.value.field == "times"
    with pytest.raises(phasediag.FieldError) as err:
        phasediag.simulate(width=10**9)
    assert err.value.field == "width"
    with pytest.raises(phasediag.FieldError) as err:
        phasediag.limit(param="mean_field", lr_u_exp=1)
    assert err.value.field == "param"


@pytest.mark.parametrize("kwargs, options", [
    ({"param": "mean_field"}, ["--param", "mean_field"]),
    ({"output_scale_exp": "-1/2"}, ["--output-scale-exp", "-1/2"]),
    ({"param": "standard", "init": "sampled"}, ["--param", "standard", "--init", "sampled"]),
    ({"lr_u_exp": 0.25, "lr_w_exp": -0.25, "output_scale_exp": -1}, ["--lr-u-exp", 0.25, "--lr-w-exp", -0.25,
                                                                       "--output-scale-exp", -1]),
])
def test_limit_equals_the_cli(kwargs, options):
    lim = phasediag.limit(**kwargs)
    data = cli_json("limit", *options)
    assert lim.to_dict() == data
    assert (lim.phase, lim.exponents, lim.health) == (data["phase"], data["exponents"], data["health"])


def test_run_in_memory_writes_nothing_and_equals_the_cli_run(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(SWEEP)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = phasediag.run(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # out=None: nothing written
    summary = cli_json("run", config, "--out", tmp_path / "out")
    with np.load(tmp_path / "out" / "results.npz") as z:
        for name in result.keys():
            np.testing.assert_array_equal(result[name], z[name])
        for name, values in result.coords.items():
            np.testing.assert_array_equal(values, z[name])
    assert result.summary["counts"] == summary["counts"]
    assert result.meta["config_hash"] == summary["config_hash"]


def test_run_of_a_dict_equals_the_run_of_its_yaml_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(GD_SWEEP)
    from_file = phasediag.run(config)
    from_dict = phasediag.run(yaml.safe_load(GD_SWEEP))
    assert from_file.meta["config_hash"] == from_dict.meta["config_hash"]
    for name in from_file.keys():
        np.testing.assert_array_equal(from_file[name], from_dict[name])


def test_load_returns_what_run_wrote(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(SWEEP)
    written = phasediag.run(config, out=tmp_path / "out", plot=False)
    loaded = phasediag.load(tmp_path / "out")
    assert loaded.kind == "sweep" and loaded.name == "tiny_sweep"
    assert set(loaded.keys()) == set(written.keys())
    for name in written.keys():
        np.testing.assert_array_equal(loaded[name], written[name])
        assert loaded.dims(name) == written.dims(name)
    assert loaded.dims("ntk_change") == ("d", "s") and loaded.dims("traj_m") == ("d", "s", "time")
    assert loaded.meta["files"] == ["results.npz", "meta.json"]
    mapped = phasediag.load(tmp_path / "out", mmap=True)  # the same values, mapped from the file, not read
    for name in written.keys():
        assert isinstance(mapped[name], np.memmap) and not mapped[name].flags.writeable
        np.testing.assert_array_equal(mapped[name], written[name])
    with pytest.raises(phasediag.BadInput, match="mmap: must be True or False"):
        phasediag.load(tmp_path / "out", mmap="yes")


def test_results_npz_loads_with_plain_numpy(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(SWEEP)
    result = phasediag.run(config, out=tmp_path / "out", plot=False)
    with np.load(tmp_path / "out" / "results.npz") as z:
        assert z["ntk_change"].shape == result["ntk_change"].shape == (5, 4)


def test_result_plot_and_to_xarray(tmp_path):
    xr = pytest.importorskip("xarray", reason="xarray is in the test extra")
    result = phasediag.run(yaml.safe_load(SWEEP))
    from matplotlib.figure import Figure

    assert isinstance(result.plot("phase"), Figure) and isinstance(result.plot(), Figure)
    with pytest.raises(KeyError, match="no figure"):
        result.plot("nonsense")
    ds = result.to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert ds["ntk_change"].dims == ("d", "s") and ds["traj_m"].dims == ("d", "s", "time")
    np.testing.assert_array_equal(ds["ntk_change"].values, result["ntk_change"])
    np.testing.assert_array_equal(ds["d"].values, result.coords["d"])
    assert ds.attrs["kind"] == "sweep" and json.loads(ds.attrs["meta"])["name"] == "tiny_sweep"


@pytest.mark.parametrize("kind", list(CASES))
def test_every_kind_runs_from_python_and_converts_to_xarray(kind):
    pytest.importorskip("xarray", reason="xarray is in the test extra")
    result = phasediag.run(yaml.safe_load(CASES[kind][0]))
    ds = result.to_xarray()
    assert set(ds.data_vars) == set(result.keys())
    for name in result.keys():
        assert ds[name].shape == np.shape(result[name])


def test_import_phasediag_is_light():
    code = "import sys, phasediag; print('numpy' in sys.modules, callable(phasediag.solve))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]  # numpy only once the API is used


@pytest.mark.parametrize("call, field", [
    (lambda: phasediag.run(yaml.safe_load(SWEEP), validate=True, method="x"), "method"),
    (lambda: phasediag.run(yaml.safe_load(SWEEP), validate=True, step=2), "step"),
    (lambda: phasediag.run(yaml.safe_load(SWEEP), validate=True, points=0), "points"),
    (lambda: phasediag.run(yaml.safe_load(SWEEP), validate=True, max_steps=0), "max_steps"),
    (lambda: phasediag.run(yaml.safe_load(SWEEP), validate=True, pointz=3), "pointz"),
    (lambda: phasediag.run(yaml.safe_load(SWEEP), workers=0), "workers"),
    (lambda: phasediag.run(yaml.safe_load(SWEEP), chunk_size=0), "chunk_size"),
    (lambda: phasediag.run(["a"]), "config"),
    (lambda: phasediag.solve(times=5), "times"),
    (lambda: phasediag.solve(points=10**9), "points"),
    (lambda: phasediag.solve(t_max=1, t_min=2), "t_min"),
    (lambda: phasediag.simulate(seed=-1), "seed"),
    (lambda: phasediag.simulate(seed=None), "seed"),
])
def test_every_bad_argument_is_a_field_error_naming_it(call, field):
    with pytest.raises(phasediag.FieldError) as err:
        call()
    assert err.value.field == field and "--" not in str(err.value)


def test_inputs_beyond_the_range_are_bad_input_too():
    with pytest.raises(phasediag.BadInput, match="supported range"):
        phasediag.solve(output_scale=1e200, lr_u=1e200, lr_w=1e200)


def test_run_takes_the_chunk_options_and_they_do_not_change_results():
    config = yaml.safe_load(SWEEP)
    a = phasediag.run(config)
    b = phasediag.run(config, chunk_size=3, checkpoint_every=0)
    for name in a.keys():
        np.testing.assert_array_equal(a[name], b[name])


def test_plot_draws_any_stored_metric_and_refuses_a_shard(tmp_path):
    from matplotlib.figure import Figure

    result = phasediag.run(yaml.safe_load(SWEEP))
    assert "ntk_final" not in yaml.safe_load(SWEEP)["plot"]["maps"]
    assert isinstance(result.plot("ntk_final"), Figure) and isinstance(result.plot("tau"), Figure)
    shard = phasediag.run(yaml.safe_load(SWEEP), shard="1/2")
    with pytest.raises(phasediag.ResultsError, match="merge"):
        shard.plot()
