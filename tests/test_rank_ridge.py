"""The rank sweep's rank-r ridge against the direct ridge solve and other rank-r matrices."""

import numpy as np
import pytest

from benchmarks.accuracy.rank_ridge import GramSpectrum
from convae_jax.rank import seen_mask


def _ridge_objective(x, weights, l2):
    return np.sum((x - x @ weights) ** 2) + l2 * np.sum(weights ** 2)


def test_full_rank_ridge_is_the_ridge_solution(small_data):
    l2 = 5.0
    x = seen_mask(np.unique(small_data.user), small_data, small_data.n_items).astype(np.float64)
    weights = GramSpectrum.of(small_data).ridge(rank=small_data.n_items, l2=l2).weights
    direct = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ x)
    np.testing.assert_allclose(weights, direct, rtol=1e-4, atol=1e-5)


def test_rank_r_ridge_has_rank_r_and_beats_other_rank_r_matrices(small_data):
    l2, rank = 5.0, 6
    x = seen_mask(np.unique(small_data.user), small_data, small_data.n_items).astype(np.float64)
    spectrum = GramSpectrum.of(small_data)
    weights = spectrum.ridge(rank=rank, l2=l2).weights.astype(np.float64)
    assert np.linalg.matrix_rank(weights, tol=1e-6) == rank
    best = _ridge_objective(x, weights, l2)
    assert best < _ridge_objective(x, spectrum.ridge(rank=rank - 1, l2=l2).weights, l2)
    rng = np.random.default_rng(0)
    for _ in range(5):  # nearby rank-r matrices: the same basis with other shrinkage, a rotated basis
        top = spectrum.eigenvectors[:, :rank]
        reshrunk = (top * rng.uniform(0.2, 1.0, rank)) @ top.T
        rotated, _ = np.linalg.qr(top + 0.05 * rng.normal(size=top.shape))
        assert best < _ridge_objective(x, reshrunk, l2)
        assert best < _ridge_objective(x, rotated @ np.diag(np.diag(top.T @ weights @ top)) @ rotated.T, l2)


def test_rank_r_ridge_refuses_a_rank_outside_the_catalogue(small_data):
    with pytest.raises(ValueError, match=r"rank must be in \[1, 40\]"):
        GramSpectrum.of(small_data).ridge(rank=small_data.n_items + 1, l2=1.0)


def test_rank_r_ridge_scores_are_history_times_weights(small_data):
    model = GramSpectrum.of(small_data).ridge(rank=8, l2=3.0)
    history = small_data.subset(small_data.user < 5)
    users, scores = next(model.fold_in_scores(history))
    expected = seen_mask(users, history, history.n_items).astype(np.float32) @ model.weights
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
