"""IPS-weighted MF (Schnabel et al. 2016): propensities from training counts, weights, and the fit."""

import numpy as np

from convae_jax.data import Interactions
from convae_jax.peers.ips_mf import fit_ips_mf, inverse_propensity_weights, popularity_activity_propensities
from convae_jax.peers.mf import BiasedMF

VALUES = (1.0, 2.0, 3.0, 4.0, 5.0)


def test_propensities_and_weights_by_hand():
    # n_u = (3, 1), n_i = (2, 1, 1), N = 4: π(0, 0) = 3·2/4 -> 1 (clipped), π(1, 2) = 1·1/4, π(1, 1) = 1/4.
    train = Interactions.build([0, 0, 0, 1], [0, 1, 2, 0], [4, 3, 2, 1], n_users=2, n_items=3, channel_values=VALUES)
    np.testing.assert_allclose(popularity_activity_propensities(train, [0, 1, 1], [0, 2, 1]), [1.0, 0.25, 0.25])
    # weights 1/max(π, 0.5) = (1, 2, 2), normalised to mean 1 -> (0.6, 1.2, 1.2)
    np.testing.assert_allclose(inverse_propensity_weights([1.0, 0.25, 0.25], floor=0.5), [0.6, 1.2, 1.2])


def test_equal_weights_are_plain_mf_and_inverse_propensities_favour_rare_pairs():
    rng = np.random.default_rng(0)
    user, item = np.nonzero(rng.random((40, 30)) < 0.3)
    data = Interactions.build(user, item, rng.integers(0, 5, user.size), n_users=40, n_items=30, channel_values=VALUES)
    plain = BiasedMF.fit(data, rank=3, reg=2.0, seed=1)
    np.testing.assert_allclose(BiasedMF.fit(data, rank=3, reg=2.0, seed=1, weights=np.full(data.nnz, 1.0)).item_factors,
                               plain.item_factors, rtol=1e-10)
    weighted = fit_ips_mf(data, rank=3, reg=2.0, seed=1, floor=0.01)
    weights = inverse_propensity_weights(popularity_activity_propensities(data, data.user, data.item), floor=0.01)
    # μ is the weighted mean, and each fit's weighted squared error is lower under its own weights
    np.testing.assert_allclose(weighted.global_mean, np.sum(weights * data.ratings) / weights.sum(), rtol=1e-10)
    error = lambda model: (model.predict_ratings(data.user, data.item) - data.ratings) ** 2
    assert np.sum(weights * error(weighted)) < np.sum(weights * error(plain))
    assert np.sum(error(plain)) < np.sum(error(weighted))
