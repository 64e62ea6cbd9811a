"""The held-out certificate, the rates helpers and the rank-r comparator, on hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from theory.certificate import certified_tv, certify, empirical_bernstein_upper
from theory.low_rank import LowRankFit, fit_low_rank
from theory.rates import local_slopes, power_law_fit
from theory.recovery import recovery_distances
from theory.synthetic import draw_samples


def test_empirical_bernstein_by_hand():
    """Values 0 and 1, twice each (n = 4): mean 1/2, unbiased variance (4 · 1/4)/3 = 1/3."""
    log_term = math.log(2 / 0.1)
    expected = 0.5 + math.sqrt(2 * (1 / 3) * log_term / 4) + 7 * log_term / 9
    assert empirical_bernstein_upper([0.0, 1.0], [2, 2], low=0.0, high=1.0, delta=0.1) == pytest.approx(expected)
    # the range enters only the last term, scaled by high − low
    shifted = empirical_bernstein_upper([-1.0, 0.0], [2, 2], low=-3.0, high=1.0, delta=0.1)
    assert shifted == pytest.approx(-0.5 + math.sqrt(2 * (1 / 3) * log_term / 4) + 7 * 4 * log_term / 9)
    with pytest.raises(ValueError, match="outside"):
        empirical_bernstein_upper([2.0], [3], low=0.0, high=1.0, delta=0.1)


def test_empirical_bernstein_covers_the_mean_at_its_level():
    """Bernoulli(0.3) samples of 200: the bound falls below 0.3 in far fewer than 10% of trials."""
    rng = np.random.default_rng(0)
    misses = sum(empirical_bernstein_upper(rng.random(200) < 0.3, np.ones(200), low=0, high=1, delta=0.1) < 0.3
                 for _ in range(300))
    assert misses <= 30


def test_certificate_reads_pinsker_plus_smoothing():
    assert certified_tv(0.08, smoothing=0.001) == pytest.approx(0.2 + 0.001)
    assert certified_tv(-0.01, smoothing=0.0) == 0.0
    out = certify(np.full(10, 2.0), np.full(10, 1.5), np.ones(10), entropy=1.5, n_outputs=10, candidates=4,
                  smoothing=0.01, clip=5.0)
    log_term = math.log(2 * 8 / 0.05)  # δ split over 4 candidate epochs and 2 certificates; no variance
    b = math.log(10 / 0.01)
    assert out["plain"]["kl_bound"] == pytest.approx(0.5 + 7 * b * log_term / 27)
    assert out["centred"]["kl_bound"] == pytest.approx(0.5 + 7 * (b + 5.0) * log_term / 27)
    assert out["best"] == out["plain"]
    # the clip only raises Z: an excess of −7 nats counts as −5, so the bound stays above the true mean
    clipped = certify(np.array([0.0, 3.0]), np.array([7.0, 0.0]), np.ones(2), entropy=0.0, n_outputs=10,
                      candidates=1, smoothing=0.01, clip=5.0)
    assert clipped["centred"]["kl_bound"] > (-5.0 + 3.0) / 2


def test_local_slopes_and_power_law_recover_a_known_curve():
    """values = 0.01 + 3 N^(−0.8) with ±1% seed noise: each local slope is the curve's own, and the
    fit finds α and a."""
    sizes = np.repeat(np.geomspace(1e3, 1e6, 6), 3)
    noise = np.tile([0.99, 1.0, 1.01], 6)
    values = (0.01 + 3 * sizes ** -0.8) * noise
    grid = np.unique(sizes)
    curve = 0.01 + 3 * grid ** -0.8
    local = local_slopes(sizes, values)
    np.testing.assert_allclose([e["slope"] for e in local], np.diff(np.log(curve)) / np.diff(np.log(grid)), atol=1e-9)
    assert all(e["ci95"][0] <= e["slope"] <= e["ci95"][1] for e in local)
    fit = power_law_fit(sizes, values, reps=50)
    assert fit["alpha"] == pytest.approx(0.8, abs=0.02) and fit["a"] == pytest.approx(0.01, abs=1e-3)


def test_low_rank_comparator_learns_and_is_a_distribution(small_truth):
    fit, _, held = draw_samples(small_truth, 20_000, seed=0)
    estimator = fit_low_rank(fit, held, LowRankFit(rank=3, max_checks=20))
    joint = np.exp(estimator.log_joint(np.arange(4)))
    np.testing.assert_allclose(joint.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    tv = recovery_distances(small_truth, estimator)["tv_joint"]
    assert estimator.steps > 0 and tv < 0.35, tv
