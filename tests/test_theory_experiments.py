"""End to end: `convae theory recovery|bounds --quick` write their artefacts, and the quick
preset already shows the acceptance behaviour (TV falls, the model beats both baselines)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convae_jax.cli import main
from theory.bounds import FORMS


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    for experiment in ("recovery", "bounds"):
        assert main(["theory", experiment, "--quick", "--out", str(out)]) == 0
    return out


def _mean_by_n(runs, value):
    sizes = sorted({r["n"] for r in runs})
    return sizes, [np.mean([value(r) for r in runs if r["n"] == n]) for n in sizes]


def test_quick_runs_write_json_markdown_and_plots(quick_results):
    for experiment in ("recovery", "bounds"):
        for suffix in ("json", "md", "png"):
            path = quick_results / f"{experiment}.{suffix}"
            assert path.stat().st_size > 500, path
    recovery = json.loads((quick_results / "recovery.json").read_text())
    assert recovery["environment"]["command"] == "convae theory recovery --quick"
    assert len(recovery["runs"]) == len(recovery["preset"]["sample_sizes"]) * len(recovery["preset"]["seeds"])
    assert all(r[k]["pinsker_holds_share"] == 1.0 for r in recovery["runs"]
               for k in ("model", "per_user_empirical", "global_popularity"))


def test_quick_recovery_model_tv_falls_and_beats_both_baselines(quick_results):
    result = json.loads((quick_results / "recovery.json").read_text())
    runs = result["runs"]
    _, model = _mean_by_n(runs, lambda r: r["model"]["tv_joint"])
    _, per_user = _mean_by_n(runs, lambda r: r["per_user_empirical"]["tv_joint"])
    _, global_ = _mean_by_n(runs, lambda r: r["global_popularity"]["tv_joint"])
    assert all(a > b for a, b in zip(model, model[1:])), model
    assert result["tv_slopes"]["model"]["joint"]["ci95"][1] < 0
    assert model[-1] < min(per_user[-1], global_[-1])
    assert model[0] < per_user[0]


def test_quick_bounds_measure_gap_and_show_weight_sharing(quick_results):
    result = json.loads((quick_results / "bounds.json").read_text())
    for run in result["runs"]:
        m = run["measured"]
        np.testing.assert_allclose(m["population_risk"], result["truth_entropy"] + m["excess_risk"], rtol=1e-12)
        assert m["excess_risk"] > 0
        assert run["bounds"]["output_bias_residual"] < 1e-3
        for form in FORMS:
            assert run["bounds"]["shared"][form]["bound"] <= run["bounds"]["naive"][form]["bound"]
    frobenius = [run["naive_over_shared"]["frobenius"] for run in result["catalogue"]]
    assert frobenius[0] < frobenius[1] < frobenius[2]
