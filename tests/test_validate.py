"""`phasediag validate`: simulated training of sweep points against the closed form of the same vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from phasediag import core
from phasediag.cli import phasediag
from phasediag.config.sweep import config_from_text
from phasediag.studies.validation import Settings, prediction_arrays, select_points
from phasediag.engine import sweep

FLOW = """\
name: vflow
sweep:
  d: {log: [2, 300, 6]}
  s: {log: [1e-6, 1, 7]}
model: {width: d, output_scale: 1, lr_u: 1, lr_w: 1, init_var_u: s, init_var_w: s}
data: {input_var: 1, teacher: 1}
init: {seeds: 1, seed: 5}
"""

GD = """\
name: vgd
sweep:
  eta: {log: [0.05, 5, 9]}
  d: {log: [1, 1000, 5]}
model: {width: d, output_scale: 1 / sqrt(d), lr_u: eta, lr_w: eta, init_var_u: 1, init_var_w: 1}
data: {input_var: 1, teacher: 1}
train: {optimizer: gd, max_steps: 5000}
"""

SCALING = (Path(__file__).parent.parent / "configs" / "8_limit_output_scale_vs_init.yaml").read_text()


def cli(*args, code=0):
    res = CliRunner().invoke(phasediag, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


@pytest.fixture
def flow_config(tmp_path):
    path = tmp_path / "vflow.yaml"
    path.write_text(FLOW)
    return path


@pytest.fixture
def gd_config(tmp_path):
    path = tmp_path / "vgd.yaml"
    path.write_text(GD)
    return path


def validate(config, out, *args):
    info = json.loads(cli("validate", config, "--out", out, "--json", *args).output)
    body = json.loads((Path(out) / "validation.json").read_text())
    return info, body


def test_flow_config_agrees_to_the_discretization_error(flow_config, tmp_path):
    info, body = validate(flow_config, tmp_path / "v", "--points", 10)
    assert info["points"] == len(body["rows"]) == 10
    assert info["labels_agree"] == 10  # measured label = the rule on the exact path of the same vectors
    assert 0 < info["worst_error"]["worst"]["value"] < 5 * 0.01  # O(step) with step 0.01
    files = {Path(f).name for f in info["files"]}
    assert {"validation.json", "meta.json", "validate__phase_overlay__s_vs_d.png",
            "validate__predicted_vs_measured.png"} <= files
    meta = json.loads((tmp_path / "v" / "meta.json").read_text())
    assert meta["version"] and meta["config"]["name"] == "vflow" and meta["timing"]["total_s"] > 0


def test_flow_deviation_is_first_order_in_the_step(flow_config, tmp_path):
    worst = []
    for step in (0.02, 0.01):
        _, body = validate(flow_config, tmp_path / f"s{step}", "--points", 4, "--step", step, "--no-plot")
        worst.append(np.array([r["error"]["m"] for r in body["rows"]]))
    ratio = worst[0] / worst[1]
    assert np.all((1.7 < ratio) & (ratio < 2.3)), ratio


def test_flow_method_integrates_to_rtol(flow_config, tmp_path):
    info, _ = validate(flow_config, tmp_path / "v", "--points", 5, "--method", "flow", "--no-plot")
    assert info["worst_error"]["worst"]["value"] < 1e-8 and info["labels_agree"] == 5


def test_gd_config_agrees_to_rounding(gd_config, tmp_path):
    info, body = validate(gd_config, tmp_path / "v", "--points", 12, "--no-plot")
    assert info["worst_error"]["worst"]["value"] < 1e-10
    assert info["labels_agree"] == info["points"]
    outcomes = {r["predicted_gd_outcome"] for r in body["rows"]}
    assert {"converges", "diverges"} <= outcomes  # the selection spans GD outcomes too
    for r in body["rows"]:
        assert r["measured"]["diverged"] == (r["predicted_gd_outcome"] == "diverges")


def test_selection_covers_every_eligible_label(flow_config):
    config = config_from_text(FLOW)
    prediction = prediction_arrays(config, sweep.run(config))
    labels = set(np.unique(prediction["phase"]).tolist())
    picked = select_points(config, prediction, Settings(points=len(labels)))
    assert set(prediction["phase"][picked].tolist()) == labels
    narrow = select_points(config, prediction, Settings(points=40, max_width=10))
    assert np.all(prediction["width"][narrow] <= 10) and narrow.size == np.sum(prediction["width"] <= 10)


def test_a_points_row_depends_only_on_its_grid_index(flow_config, tmp_path):
    _, few = validate(flow_config, tmp_path / "a", "--points", 3, "--no-plot")
    _, many = validate(flow_config, tmp_path / "b", "--points", 12, "--no-plot")
    by_index = {r["index"]: r for r in many["rows"]}
    common = [r for r in few["rows"] if r["index"] in by_index]
    assert common and all(r == by_index[r["index"]] for r in common)


def test_shards_and_workers_give_identical_bytes(flow_config, tmp_path):
    validate(flow_config, tmp_path / "whole", "--points", 7, "--no-plot")
    validate(flow_config, tmp_path / "w2", "--points", 7, "--no-plot", "--workers", 2)
    for k in (1, 2, 3):
        cli("validate", flow_config, "--points", 7, "--shard", f"{k}/3", "--out", tmp_path / f"p{k}", "-q")
    cli("merge", tmp_path / "p3", tmp_path / "p1", tmp_path / "p2", "--out", tmp_path / "merged", "-q")
    whole = (tmp_path / "whole" / "validation.json").read_bytes()
    assert (tmp_path / "w2" / "validation.json").read_bytes() == whole
    assert (tmp_path / "merged" / "validation.json").read_bytes() == whole
    assert (tmp_path / "merged" / "validate__phase_overlay__s_vs_d.png").is_file()


def test_merge_refuses_incomplete_or_mixed_sets(flow_config, tmp_path):
    cli("validate", flow_config, "--points", 4, "--shard", "1/2", "--out", tmp_path / "p1", "-q")
    res = cli("merge", tmp_path / "p1", "--out", tmp_path / "m", code=2)
    assert "shards 1..2" in res.output
    res = cli("merge", tmp_path / "p1", "--out", tmp_path / "p1", code=2)
    assert "--out" in res.output


@pytest.mark.parametrize("text, args, message", [
    (SCALING, [], "finite-width"),
    (FLOW, ["--max-width", "1"], "--max-width"),
    (GD, ["--method", "flow"], "--method: must be gd, not flow"),
    (FLOW, ["--step", "2"], "--step"),
    (FLOW.replace("teacher: 1", "teachr: 1"), [], "data.teachr (line 6)"),
])
def test_bad_input_exits_2(tmp_path, text, args, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    res = cli("validate", path, "--out", tmp_path / "v", *args, code=2)
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "v" / "validation.json").exists()


def test_table_output(flow_config, tmp_path):
    out = cli("validate", flow_config, "--points", 3, "--out", tmp_path / "v", "--no-plot").output
    assert "measured" in out and "worst deviation" in out and len(out.splitlines()) >= 6
    assert all(label in core.PHASES for label in json.loads(
        (tmp_path / "v" / "validation.json").read_text())["rows"][0]["measured_label"].split())


def test_gram_configs_are_simulated_from_vectors_with_that_gram(tmp_path):
    """Config 4 gives explicit Grams at width 1; G > 0 needs two dimensions, which the row reports."""
    config = Path(__file__).parent.parent / "configs" / "4_mechanism_trajectories.yaml"
    info, body = validate(config, tmp_path / "v", "--points", 6, "--max-steps", 20000, "--no-plot")
    assert info["points"] == 6 and info["map_labels_agree"] == 6 and info["labels_agree"] == 6
    for row in body["rows"]:
        U, W, V = row["gram"]
        q, rho = row["coords"]["q"], row["coords"]["rho"]
        assert U == pytest.approx(q, rel=1e-15) and W == pytest.approx(q, rel=1e-15)
        assert V == pytest.approx(rho * q, rel=1e-15, abs=1e-300)
        assert row["width"] == (1 if rho == 1 else 2) and row["seed"] is None
