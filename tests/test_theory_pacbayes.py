"""The PAC-Bayes bound of `convae theory pacbayes`: its formulas on hand cases, a posterior with zero
spread against the deterministic network, the split of S_tgt, and the command end to end."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from convae_jax.cli import main
from theory import pacbayes
from theory.estimators import ModelEstimator, mean_log_loss
from theory.fitting import BOUNDS_OVERRIDES, fit_to_draws, theory_config
from theory.gaussian_posterior import DrawRisk
from theory.pacbayes_run import halves
from theory.synthetic import draw_samples, make_truth


def test_bernoulli_kl_and_its_inverse_by_hand():
    """kl(1/2 ‖ 1/4) = kl(1/2 ‖ 3/4) = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3)."""
    half_ln = 0.5 * math.log(4 / 3)
    assert pacbayes.kl_bernoulli(0.5, 0.25) == pytest.approx(half_ln, rel=1e-12)
    assert pacbayes.kl_bernoulli(0.5, 0.75) == pytest.approx(half_ln, rel=1e-12)
    assert pacbayes.kl_bernoulli(0.0, 0.5) == pytest.approx(math.log(2), rel=1e-12)
    assert pacbayes.kl_inverse_upper(0.5, half_ln) == pytest.approx(0.75, abs=1e-10)
    # kl(q ‖ p) ≈ (p − q)²/(2q(1 − q)) near q, so ε = 0 pins p only to about √(machine ε)
    assert pacbayes.kl_inverse_upper(0.3, 0.0) == pytest.approx(0.3, abs=1e-7)
    assert pacbayes.kl_inverse_upper(0.5, 10.0) == pytest.approx(1.0, abs=1e-9)  # kl(q ‖ 1) = ∞: the supremum


def test_pac_bayes_kl_bound_by_hand():
    """n = 100, KL = 0, δ = 20·(3/4)^50, so ε = ln(2√n/δ)/n = ½ ln(4/3); R̂ = 1 on a range [0, 2]:
    the bound is 2 · kl⁻¹(1/2, ½ ln(4/3)) = 1.5. KL = 100·½ ln(4/3) − ln(2√n/δ) + … adds to ε."""
    delta = 20 * 0.75**50
    out = pacbayes.pac_bayes_kl_bound(empirical_risk=1.0, kl=0.0, n=100, delta=delta, loss_range=2.0)
    assert out["epsilon"] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert out["bound"] == pytest.approx(1.5, abs=1e-9)
    more = pacbayes.pac_bayes_kl_bound(empirical_risk=1.0, kl=100 * 0.5 * math.log(4 / 3), n=100, delta=delta,
                                       loss_range=2.0)
    assert more["epsilon"] == pytest.approx(math.log(4 / 3), rel=1e-12)
    assert more["bound"] == pytest.approx(2 * pacbayes.kl_inverse_upper(0.5, math.log(4 / 3)), rel=1e-12)


def test_gaussian_kl_and_scales_by_hand():
    """Differences (1, 2) at σ = 1/2 and (3) at σ = 1: (1 + 4)/(2/4) + 9/2 = 14.5."""
    prior = {"a": np.zeros(2), "b": np.array([[3.0, 4.0]]), "c": np.zeros(3)}
    posterior = {"a": np.array([1.0, 2.0]), "b": np.array([[6.0, 4.0]]), "c": np.zeros(3)}
    scales = pacbayes.layer_scales(prior, 0.2)  # rms(3, 4) = √12.5; zeros get the floor
    assert scales["b"] == pytest.approx(0.2 * math.sqrt(12.5))
    assert scales["a"] == scales["c"] == pytest.approx(0.2 * pacbayes.SCALE_FLOOR)
    assert pacbayes.gaussian_kl(posterior, prior, {"a": 0.5, "b": 1.0, "c": 1.0}) == pytest.approx(14.5)
    assert pacbayes.gaussian_kl(prior, prior, scales) == 0.0


def test_confidence_split_and_monte_carlo_bound():
    assert pacbayes.split_confidence(0.05, priors=5) == {"pac_bayes": 0.005, "monte_carlo": 0.025}
    # M equal risks: no spread, so the bound is the value plus Bernstein's range term 7 b ln(2/δ)/(3(M − 1))
    upper = pacbayes.monte_carlo_upper(np.full(11, 4.0), loss_range=12.0, delta=0.1)
    assert upper == pytest.approx(4.0 + 7 * 12.0 * math.log(20) / 30)


def test_halves_split_every_draw_once():
    truth = make_truth(n_users=30, n_items=20, rank=2)
    draws = truth.sample_iid(1001, seed=0)
    a, b = halves(draws, seed=0)
    assert a.count.sum() == 500 and b.count.sum() == 501
    total = np.zeros((30, 20, 5))
    for part in (a, b):
        np.add.at(total, (part.user, part.item, part.channel), part.count)
    expected = np.zeros_like(total)
    np.add.at(expected, (draws.user, draws.item, draws.channel), draws.count)
    np.testing.assert_array_equal(total, expected)


@pytest.fixture(scope="module")
def small_fit():
    truth = make_truth(n_users=40, n_items=30, rank=2)
    s = draw_samples(truth, 1500, seed=0)
    config = theory_config(BOUNDS_OVERRIDES + ("train.max_epochs=3", "model.hidden=(8,)"))
    return fit_to_draws(s.targets, s.cert, config, inputs=s.inputs), s.targets


def test_zero_spread_posterior_is_the_deterministic_network(small_fit):
    """σ = 0: every weight draw is the mean, so R̂_B(Q) is the network's own smoothed risk (as the
    estimators compute it), and the bound with KL = 0 is the test-set kl bound of that network."""
    model, draws = small_fit
    risk = DrawRisk(model, draws, smoothing=0.01)
    deterministic = mean_log_loss(ModelEstimator(model), draws, smoothing=0.01)
    assert risk(model.params) == pytest.approx(deterministic, rel=1e-5)
    zero = jax.tree_util.tree_map(lambda _: 0.0, model.params)
    sampled = risk.sampled(jax.random.key(0), model.params, zero, draws=5, batch=2)
    np.testing.assert_allclose(sampled, risk(model.params), rtol=1e-6)
    assert pacbayes.gaussian_kl(model.params, model.params, pacbayes.layer_scales(model.params, 0.1)) == 0.0
    # with spread, the draws differ and their mean risk is higher (the network sits near a minimum)
    spread = risk.sampled(jax.random.key(0), model.params, pacbayes.layer_scales(model.params, 0.5), draws=6, batch=3)
    assert np.std(spread) > 0 and np.mean(spread) > risk(model.params)


def test_pacbayes_on_a_small_grid(tmp_path):
    assert main(["theory", "pacbayes", "--quick", "--sizes", "1600", "--out", str(tmp_path)]) == 0
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"pacbayes.{suffix}").stat().st_size > 500, suffix
    result = json.loads((tmp_path / "pacbayes.json").read_text())
    (run,) = result["runs"]
    assert run["n_a"] + run["n_b"] == 1600
    # a 95% bound: above the stochastic network's exact risk, below the trivial range b
    assert run["true_risk"]["mean"] < run["bound"] < run["loss_range"]
    assert run["empirical_risk"]["mc_mean"] < run["empirical_risk"]["mc_upper"]
    assert run["chosen"] == min(run["screen"], key=lambda entry: entry["bound_estimate"])
    assert len(run["screen"]) == len(result["scales"]) * len(result["posterior_steps"])
    assert run["levels"]["pac_bayes"] == pytest.approx(0.05 / (2 * len(result["scales"])))
