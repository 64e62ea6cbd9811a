"""End to end: `convae theory certify|bounds` on small grids write their artefacts and show the
behaviour the full runs are read for; and the leakage regression test on a small truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convae_jax.cli import main
from theory.bounds import REPORTED
from theory.experiments import per_user_leakage
from theory.synthetic import conditional_entropy, draw_samples, make_truth


def _run(tmp_path_factory, experiment, *args):
    out = tmp_path_factory.mktemp(experiment)
    assert main(["theory", experiment, "--quick", *args, "--out", str(out)]) == 0
    for suffix in ("json", "md", "png"):
        assert (out / f"{experiment}.{suffix}").stat().st_size > 500, suffix
    result = json.loads((out / f"{experiment}.json").read_text())
    assert result["environment"]["command"] == " ".join(["convae theory", experiment, "--quick", *args])
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_user_estimator_leaks_only_in_same_sample_mode(seed):
    """The per-user add-α estimator has no trained weights, so a valid bound gives it only its
    Hoeffding term. At its held-out-selected α (60 users × 200 items × 5 levels, N = 3000): built
    from an independent S_in its gap is within 3× that term; built from the scored draws themselves
    it is above 5× (measured: |split| ≤ 0.45×, same-sample ≥ 8.1× over seeds 0–2)."""
    truth = make_truth(n_users=60, n_items=200, rank=3, seed=3)
    result = per_user_leakage(truth, conditional_entropy(truth), draw_samples(truth, 3000, seed=seed))
    hoeffding = result["split"]["hoeffding"]
    assert abs(result["split"]["log_loss"]["gap"]) <= 3 * hoeffding
    assert result["same_sample"]["log_loss"]["gap"] > 5 * hoeffding
    assert result["leakage"] > 0


def test_certify_on_a_small_grid(tmp_path_factory):
    result = _run(tmp_path_factory, "certify", "--sizes", "400", "1600", "6400", "--seeds", "0")
    runs = result["runs"]
    assert [r["n"] for r in runs] == [400, 1600, 6400]
    for run in runs:
        assert all(run[k]["pinsker_holds_share"] == 1.0 for k in ("model", "per_user_empirical", "low_rank_4"))
        # a 95% certificate: above the measured TV (it would fail 5% of the time at most)
        assert run["certificate"]["best"]["tv_bound"] >= run["model"]["tv_joint"]
    tv = [r["model"]["tv_joint"] for r in runs]
    assert tv[0] > tv[1] > tv[2]
    assert tv[-1] < min(runs[-1][k]["tv_joint"] for k in ("per_user_empirical", "global_popularity"))
    assert len(result["tv_local_slopes"]["model"]) == 2


def test_bounds_on_a_small_grid(tmp_path_factory):
    result = _run(tmp_path_factory, "bounds", "--sizes", "400", "1600", "6400", "--seeds", "0")
    entropy = result["truth_entropy"]
    for run in result["runs"]:
        for mode in ("split", "same_sample"):
            m = run[mode]
            np.testing.assert_allclose(m["log_loss"]["population_risk"], entropy + m["excess_risk"], rtol=1e-12)
        assert run["bounds"]["output_bias_residual"] < 1e-3
        assert run["leakage"] == pytest.approx(run["same_sample"]["log_loss"]["gap"] - run["split"]["log_loss"]["gap"])
        for form, variant in REPORTED:
            assert run["bounds"][variant][form]["bound"] > run["split"]["smoothed"]["gap"]
    for form, variant in REPORTED:  # with ℓ2 inputs and the smoothed loss, every bound falls with N
        assert result["slopes"][f"{form} ({variant})"]["bound"]["slope"] < 0, (form, variant)


def test_the_certificate_pays_for_every_model_compared_on_its_held_out_draws():
    """Candidates = the epochs `fit` validated on S_cert, plus, on a seed whose S_cert took part in
    choosing the preset, every model compared there (9 configurations × 200 epochs)."""
    from theory.experiments import PRESETS, certificate_candidates, run_config

    full, quick = PRESETS[("certify", "full")], PRESETS[("certify", "quick")]
    config = lambda preset, seed: run_config(preset, seed, n=2000, n_users=600)  # noqa: E731
    assert config(full, 3).train.validate_every == 10 and config(full, 3).train.max_epochs == 200
    assert [certificate_candidates(full, config(full, s), s) for s in full.seeds] == [20, 20, 20]
    assert [certificate_candidates(full, config(full, s), s) for s in (0, 1, 2)] == [1820] * 3
    assert not set(full.seeds) & set(full.selection_seeds)
    assert certificate_candidates(quick, config(quick, 0), 0) == 25  # every epoch of 25, nothing chosen before
