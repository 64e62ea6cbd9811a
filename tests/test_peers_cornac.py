"""The Cornac adapters: our index spaces mapped onto Cornac's, predictions equal Cornac's own."""

import numpy as np
import pytest

cornac = pytest.importorskip("cornac")

from convae_jax.peers.cornac_adapters import CornacRatingModel  # noqa: E402


def test_cornac_mf_predictions_equal_cornac_score(small_data):
    train = small_data.subset(small_data.user != 0)  # user 0 unknown to Cornac
    model = CornacRatingModel.fit(cornac.models.MF(k=4, max_iter=5, seed=1, verbose=False), train, seed=1)
    users, items = train.user[:20], train.item[:20]
    expected = [model.model.score(model.user_map[u], model.item_map[i]) for u, i in zip(users, items)]
    np.testing.assert_allclose(model.predict_ratings(users, items), np.clip(expected, 1, 5), rtol=1e-5)
    np.testing.assert_allclose(model.predict_ratings([0], [train.item[0]]), [train.ratings.mean()], rtol=1e-6)
