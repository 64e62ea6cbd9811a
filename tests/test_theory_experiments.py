"""End to end: `convae theory recovery|bounds --quick` write their artefacts, and the quick
preset already shows the acceptance behaviour (TV falls, the model beats both baselines).
The quick bounds run is a slow test; one small bounds run stays in CI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convae_jax.cli import main
from theory.bounds import FORMS
from theory.experiments import PRESETS, _bounds_run
from theory.synthetic import conditional_entropy, make_truth


def _quick(tmp_path_factory, experiment):
    out = tmp_path_factory.mktemp(experiment)
    assert main(["theory", experiment, "--quick", "--out", str(out)]) == 0
    for suffix in ("json", "md", "png"):
        assert (out / f"{experiment}.{suffix}").stat().st_size > 500, suffix
    result = json.loads((out / f"{experiment}.json").read_text())
    assert result["environment"]["command"] == f"convae theory {experiment} --quick"
    return result


@pytest.fixture(scope="module")
def quick_recovery(tmp_path_factory):
    return _quick(tmp_path_factory, "recovery")


def _mean_by_n(runs, value):
    sizes = sorted({r["n"] for r in runs})
    return [np.mean([value(r) for r in runs if r["n"] == n]) for n in sizes]


def test_quick_recovery_writes_every_run_and_pinsker_holds(quick_recovery):
    preset = quick_recovery["preset"]
    assert len(quick_recovery["runs"]) == len(preset["sample_sizes"]) * len(preset["seeds"])
    assert all(r[k]["pinsker_holds_share"] == 1.0 for r in quick_recovery["runs"]
               for k in ("model", "per_user_empirical", "global_popularity"))


def test_quick_recovery_model_tv_falls_and_beats_both_baselines(quick_recovery):
    runs = quick_recovery["runs"]
    model = _mean_by_n(runs, lambda r: r["model"]["tv_joint"])
    per_user = _mean_by_n(runs, lambda r: r["per_user_empirical"]["tv_joint"])
    global_ = _mean_by_n(runs, lambda r: r["global_popularity"]["tv_joint"])
    assert all(a > b for a, b in zip(model, model[1:])), model
    assert quick_recovery["tv_slopes"]["model"]["joint"]["ci95"][1] < 0
    assert model[-1] < min(per_user[-1], global_[-1])
    assert model[0] < per_user[0]


def _check_bounds_run(run, entropy):
    m = run["measured"]
    np.testing.assert_allclose(m["population_risk"], entropy + m["excess_risk"], rtol=1e-12)
    assert m["excess_risk"] > 0 and np.isfinite(m["generalization_gap"])
    assert run["bounds"]["output_bias_residual"] < 1e-3
    for form in FORMS:
        assert 0 < run["bounds"]["shared"][form]["bound"] <= run["bounds"]["naive"][form]["bound"]


def test_one_small_bounds_run_measures_the_gap_exactly():
    truth = make_truth(n_users=40, n_items=20, rank=2)
    run = _bounds_run(truth, conditional_entropy(truth), 800, 0, PRESETS["quick"], log=lambda line: None)
    _check_bounds_run(run, conditional_entropy(truth))


@pytest.mark.slow
def test_quick_bounds_run_shows_weight_sharing(tmp_path_factory):
    result = _quick(tmp_path_factory, "bounds")
    for run in result["runs"]:
        _check_bounds_run(run, result["truth_entropy"])
    frobenius = [run["naive_over_shared"]["frobenius"] for run in result["catalogue"]]
    assert frobenius[0] < frobenius[1] < frobenius[2]
