"""EASE against an independent per-column ridge solve and Cornac's EASE."""

import numpy as np
import pytest

from convae_jax.peers.ease import EASE
from convae_jax.rank import seen_mask


def test_ease_columns_solve_the_constrained_ridge_problem(small_data):
    # Steck 2019: column j of B minimises ‖X_j − X_{−j} b‖² + λ‖b‖², with B_jj = 0.
    l2 = 7.0
    weights = EASE.fit(small_data, l2=l2).weights
    x = seen_mask(np.unique(small_data.user), small_data, small_data.n_items).astype(np.float64)
    np.testing.assert_array_equal(np.diag(weights), 0.0)
    for j in (0, 5, 17, 39):
        others = np.delete(np.arange(x.shape[1]), j)
        a = x[:, others]
        direct = np.linalg.solve(a.T @ a + l2 * np.eye(others.size), a.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], direct, rtol=1e-4, atol=1e-6)


def test_ease_fold_in_scores_are_history_times_weights(small_data):
    model = EASE.fit(small_data, l2=10.0)
    history = small_data.subset(small_data.user < 5)
    batches = list(model.fold_in_scores(history, batch=2))
    users = np.concatenate([u for u, _ in batches])
    scores = np.concatenate([s for _, s in batches])
    np.testing.assert_array_equal(users, np.arange(5))
    expected = seen_mask(users, history, history.n_items).astype(np.float32) @ model.weights
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_ease_refuses_a_non_positive_penalty(small_data):
    with pytest.raises(ValueError, match="l2 > 0"):
        EASE.fit(small_data, l2=0.0)


def test_ease_equals_cornac_ease_without_positivity(small_data):
    """Reference: cornac 3.0.1 `EASE(posB=False)` on the same binary clicks."""
    cornac = pytest.importorskip("cornac")
    from convae_jax.peers.cornac_adapters import CornacFoldIn

    ours = EASE.fit(small_data, l2=25.0)
    theirs = CornacFoldIn.fit(cornac.models.EASE(lamb=25.0, posB=False, verbose=False), small_data)
    history = small_data.subset(small_data.user < 10)
    for (u1, s1), (u2, s2) in zip(ours.fold_in_scores(history), theirs.fold_in_scores(history)):
        np.testing.assert_array_equal(u1, u2)
        np.testing.assert_allclose(s1, s2, rtol=1e-4, atol=1e-5)
