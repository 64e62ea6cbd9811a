"""Item mean with shrinkage: the expected rating against a hand-written loop."""

import numpy as np
import pytest

from convae_jax.peers.item_mean import ItemMeanShrunk


def test_expected_rating_is_the_shrunk_item_mean(small_data):
    k = 4.0
    model = ItemMeanShrunk.fit(small_data, shrinkage=k)
    values = np.asarray(small_data.channel_values)
    mu = small_data.ratings.mean()
    for item in (0, 3, 11):
        r = small_data.ratings[small_data.item == item]
        expected = (r.sum() + k * mu) / (r.size + k)
        probs = np.exp(model.rating_log_probs([0], [item]))[0]
        np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-12)
        np.testing.assert_allclose(probs @ values, expected, rtol=1e-6)  # μ is a float32 mean


def test_unrated_item_gets_the_global_histogram(small_data):
    data = small_data.subset(small_data.item != 7)
    model = ItemMeanShrunk.fit(data, shrinkage=3.0)
    global_hist = np.bincount(data.channel, minlength=data.n_channels) / data.nnz
    np.testing.assert_allclose(np.exp(model.rating_log_probs([0], [7]))[0], global_hist, rtol=1e-10)


def test_shrinkage_must_be_positive(small_data):
    with pytest.raises(ValueError, match="shrinkage"):
        ItemMeanShrunk.fit(small_data, shrinkage=0.0)
