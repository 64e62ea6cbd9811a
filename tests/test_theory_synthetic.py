"""The ground truth of the theory checks: exact arrays, entropy, i.i.d. draws that converge."""

from __future__ import annotations

import numpy as np
import pytest

from theory.recovery import total_variation
from theory.synthetic import (
    conditional_entropy,
    draw_samples,
    empirical_joint,
    joint_array,
    make_truth,
    user_batches,
)


def test_joint_array_is_a_distribution_and_matches_the_user_batches(small_truth):
    joint = joint_array(small_truth)
    assert joint.shape == (small_truth.n_users, small_truth.n_items, small_truth.n_channels)
    np.testing.assert_allclose(joint.sum(), 1.0, rtol=1e-12)
    marginal = np.exp(small_truth.log_user_marginal)
    for users, log_p in user_batches(small_truth, batch=25):
        np.testing.assert_allclose(joint[users], marginal[users, None, None] * np.exp(log_p), rtol=1e-10)


def test_joint_array_refuses_a_large_instance():
    with pytest.raises(ValueError, match="user_batches"):
        joint_array(make_truth(n_users=5000, n_items=2000))


def test_conditional_entropy_is_the_expected_log_loss_of_the_truth(small_truth):
    joint = joint_array(small_truth)
    conditional = joint / joint.sum(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(conditional_entropy(small_truth), -np.sum(joint * np.log(conditional)), rtol=1e-10)


def test_sampling_frequencies_converge_to_the_exact_joint(small_truth):
    """TV(empirical, P) must fall with N and stay near its expectation, which is at most
    ½ Σ √(P(1 − P) / N) (Jensen on each cell's binomial count)."""
    joint = joint_array(small_truth)
    distances = []
    for n in (2_000, 20_000, 200_000):
        draws = small_truth.sample_iid(n, seed=n)
        assert draws.count.sum() == n
        tv = total_variation(np.log(joint.ravel()), np.log(empirical_joint(draws).ravel().clip(1e-300)))
        assert tv <= 1.2 * 0.5 * np.sum(np.sqrt(joint * (1 - joint) / n)), n
        distances.append(tv)
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.12


def test_draw_samples_gives_three_independent_seeded_samples(small_truth):
    s = draw_samples(small_truth, 1000, seed=4)
    assert (s.inputs.count.sum(), s.targets.count.sum(), s.cert.count.sum()) == (1000, 1000, 100)
    again = draw_samples(small_truth, 1000, seed=4)
    np.testing.assert_array_equal(s.targets.item, again.targets.item)  # seeded
    assert not np.array_equal(s.inputs.item[:50], s.targets.item[:50])  # separate streams
    other = draw_samples(small_truth, 1000, seed=5)
    assert not np.array_equal(s.targets.item[:50], other.targets.item[:50])
