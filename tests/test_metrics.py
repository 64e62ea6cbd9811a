"""Metrics against hand-computed cases."""

import numpy as np
import pytest

from convae_jax import metrics


def test_rmse_mae_hand_case():
    predicted, actual = np.array([3.0, 4.0, 1.0]), np.array([4.0, 4.0, 3.0])
    np.testing.assert_allclose(metrics.rmse(predicted, actual), np.sqrt((1 + 0 + 4) / 3), rtol=1e-12)
    np.testing.assert_allclose(metrics.mae(predicted, actual), (1 + 0 + 2) / 3, rtol=1e-12)


def test_rating_metrics_hand_case():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = np.array([0, 1])
    result = metrics.rating_metrics(np.log(probs), labels, (1.0, 2.0, 3.0))
    expected_ratings = probs @ np.array([1.0, 2.0, 3.0])  # 1.4 and 2.7
    np.testing.assert_allclose(result["rmse"], np.sqrt(((1.4 - 1) ** 2 + (2.7 - 2) ** 2) / 2), rtol=1e-12)
    np.testing.assert_allclose(result["mae"], (0.4 + 0.7) / 2, rtol=1e-12)
    np.testing.assert_allclose(result["nll"], -(np.log(0.7) + np.log(0.1)) / 2, rtol=1e-12)
    assert result["accuracy"] == 0.5
    np.testing.assert_allclose(expected_ratings, [1.4, 2.7])


def test_ece_hand_case():
    # Bins of width 0.1: 0.75 and 0.72 share bin (0.7, 0.8], accuracy 1/2, mean confidence 0.735;
    # 0.95 alone in (0.9, 1.0], accuracy 1.
    confidence = np.array([0.75, 0.72, 0.95])
    correct = np.array([1, 0, 1])
    expected = (2 / 3) * abs(0.5 - 0.735) + (1 / 3) * abs(1.0 - 0.95)
    np.testing.assert_allclose(metrics.expected_calibration_error(confidence, correct, n_bins=10), expected, rtol=1e-12)


def test_ece_is_zero_when_calibrated():
    confidence = np.full(10, 0.7)
    correct = np.array([1] * 7 + [0] * 3)
    assert metrics.expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)


def test_recall_min_norm_and_ndcg_hand_case():
    scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.0],
                       [0.1, 0.2, 0.3, 0.4, 0.5]])
    relevant = np.array([[1, 0, 1, 1, 0],
                         [0, 0, 0, 0, 0]], bool)
    recall = metrics.recall_at_k_min_norm(scores, relevant, 2)
    # Top-2 of user 0: items 0, 1 -> one hit; normalised by min(2, 3) = 2.
    np.testing.assert_allclose(recall[0], 0.5)
    assert np.isnan(recall[1])  # nothing relevant: excluded by callers
    ndcg = metrics.ndcg_at_k(scores, relevant, 3)
    dcg = 1 / np.log2(2) + 1 / np.log2(4)  # hits at ranks 1 and 3
    idcg = 1 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    np.testing.assert_allclose(ndcg[0], dcg / idcg, rtol=1e-12)


def test_recall_normaliser_is_min_k_n():
    scores = np.array([[3.0, 2.0, 1.0, 0.0]])
    relevant = np.array([[1, 0, 0, 0]], bool)
    # One relevant item found in the top 3: recall 1, not 1/3.
    assert metrics.recall_at_k_min_norm(scores, relevant, 3)[0] == 1.0


def test_top_k_orders_and_breaks_ties_by_index():
    items, values = metrics.top_k(np.array([[1.0, 3.0, 3.0, -np.inf, 2.0]]), 3)
    np.testing.assert_array_equal(items, [[1, 2, 4]])
    np.testing.assert_array_equal(values, [[3.0, 3.0, 2.0]])


def test_ranking_per_user_is_what_the_protocol_averages(small_data):
    """Users come back in batch order, those without a relevant item dropped; the protocol's
    means are the per-user values' means; a hand case checks one user's NDCG."""
    from convae_jax.data import holdout_interactions
    from convae_jax.errors import ConvaeError
    from convae_jax.evaluate import ranking_per_user, ranking_protocol

    seen, relevant = holdout_interactions(small_data, fraction=0.2, seed=0)
    rng = np.random.default_rng(0)
    users = np.array([7, 3, 11, 0])
    scores = rng.normal(size=(users.size, small_data.n_items))
    relevant = relevant.subset(relevant.user != 11)  # user 11 has nothing to find
    batches = lambda: iter([(users[:2], scores[:2]), (users[2:], scores[2:])])
    per_user = ranking_per_user(batches(), seen=seen, relevant=relevant, ks=(5,), ndcg_ks=(10,))
    np.testing.assert_array_equal(per_user["user"], [7, 3, 0])
    summary = ranking_protocol(batches(), seen=seen, relevant=relevant, ks=(5,), ndcg_ks=(10,))
    assert summary["n_users"] == 3
    for name in ("recall@5", "ndcg@10"):
        assert summary[name] == pytest.approx(per_user[name].mean(), rel=1e-12)
    masked = np.where(np.isin(np.arange(small_data.n_items), seen.item[seen.user == 3]), -np.inf, scores[1])
    hits = np.isin(np.argsort(-masked, kind="stable")[:10], relevant.item[relevant.user == 3])
    n_relevant = min(10, np.sum(relevant.user == 3))
    ideal = np.sum(1 / np.log2(np.arange(2, n_relevant + 2)))
    assert per_user["ndcg@10"][1] == pytest.approx(np.sum(hits / np.log2(np.arange(2, 12))) / ideal, rel=1e-9)
    with pytest.raises(ConvaeError, match="no user has a relevant item"):
        ranking_protocol(iter([(users[2:3], scores[2:3])]), seen=seen, relevant=relevant)


def test_per_user_auc_hand_case_with_a_tie():
    # User 7: liked scores {0.9, 0.5}, not liked {0.5, 0.1}: pairs 0.9>0.5, 0.9>0.1, 0.5=0.5 (half), 0.5>0.1
    # -> (3 + 0.5) / 4. User 3 has only liked pairs: no AUC. User 5: the liked item ranked last -> 0.
    users = np.array([7, 7, 7, 7, 3, 3, 5, 5, 5])
    scores = np.array([0.9, 0.5, 0.5, 0.1, 0.2, 0.3, 0.1, 0.4, 0.8])
    liked = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0], bool)
    kept, auc = metrics.per_user_auc(users, scores, liked)
    np.testing.assert_array_equal(kept, [5, 7])
    np.testing.assert_allclose(auc, [0.0, 3.5 / 4], rtol=1e-12)


def test_per_user_precision_at_k_shares_the_places_of_ties_at_the_cut():
    # User 0, K = 3: 0.9 (liked) is above the cut; 0.5, 0.5, 0.5 tie for the two places left, one of
    # them liked -> 1 + 2 · (1/3) hits of 3. User 1: two pairs only -> divided by min(3, 2) = 2.
    # User 2 likes nothing: no precision.
    users = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.3, 0.7, 0.1, 0.2, 0.3])
    liked = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0], bool)
    kept, precision = metrics.per_user_precision_at_k(users, scores, liked, 3)
    np.testing.assert_array_equal(kept, [0, 1])
    np.testing.assert_allclose(precision, [(1 + 2 / 3) / 3, 1 / 2], rtol=1e-12)


def test_per_user_metrics_of_no_pairs_are_empty():
    empty = np.zeros(0)
    for kept, values in (metrics.per_user_auc(empty.astype(int), empty, empty.astype(bool)),
                         metrics.per_user_precision_at_k(empty.astype(int), empty, empty.astype(bool), 3)):
        assert kept.size == values.size == 0
