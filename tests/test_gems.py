"""The gems ranking, the gem-discovery metrics, the MF peer and the Coat evaluation on a tiny fake Coat."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

from benchmarks.gems.discovery import (
    gem_task,
    peer_rating_scores,
    precision_recall_among,
    random_precision_recall,
)
from benchmarks.gems.study import evaluate_coat, rating_report
from convae_jax import config as config_lib
from convae_jax.data import SyntheticTruth
from convae_jax.data.interactions import Interactions
from convae_jax.errors import ConfigError, ConvaeError
from convae_jax.losses import row_losses
from convae_jax.peers.mf import BiasedMF, _ridge_rows, select_biased_mf
from convae_jax.rank import below_consume_quantile, consume_percentile, ranking_scores
from tests.conftest import dataset_dir

VALUES = (1.0, 2.0, 3.0, 4.0, 5.0)


def hand_user():
    """One user, 7 items. P(consume) ∝ (8, 7, 6, 5, 4, 3, 2) (item 0 likeliest); item 6 is seen.
    P(rating >= 4 | consumed) = (0.9, 0.2, 0.8, 0.3, 0.7, 0.95, 0.99), carried by levels 4 and 1 only.

    Unseen log P(consume) has median between items 3 and 4 (6 unseen: items 0..5), so the bottom
    half is items 3, 4, 5. The gems (bottom half, by enjoyment) are therefore 5 (0.95), 4 (0.7),
    3 (0.3); enjoy would start with the seen item 6, which is excluded, then 5, 0, 2, 4."""
    weights = np.array([8, 7, 6, 5, 4, 3, 2], float)
    log_c = np.log(weights / weights.sum())[None]
    liked = np.array([0.9, 0.2, 0.8, 0.3, 0.7, 0.95, 0.99])
    p = np.zeros((7, 5))
    p[:, 3] = liked
    p[:, 0] = 1 - liked
    with np.errstate(divide="ignore"):
        log_r = np.log(p)[None]
    seen = np.zeros((1, 7), bool)
    seen[0, 6] = True
    return log_c, log_r, seen


def order(scores):
    finite = np.isfinite(scores[0])
    return [int(i) for i in np.argsort(-scores[0], kind="stable") if finite[i]]


def test_gems_on_a_hand_built_user_finds_the_known_gems():
    log_c, log_r, seen = hand_user()
    common = {"channel_values": VALUES, "threshold": 4.0}
    gems = ranking_scores(log_c, log_r, seen, mode="gems", **common)
    assert order(gems) == [5, 4, 3]
    np.testing.assert_allclose(gems[0, [5, 4, 3]], [0.95, 0.7, 0.3], atol=1e-12)
    assert order(ranking_scores(log_c, log_r, seen, mode="enjoy", **common)) == [5, 0, 2, 4, 3, 1]
    assert order(ranking_scores(log_c, log_r, seen, mode="consume", **common)) == [0, 1, 2, 3, 4, 5]


def test_gem_knobs_on_the_hand_built_user():
    log_c, log_r, seen = hand_user()
    common = {"channel_values": VALUES, "threshold": 4.0}
    # No cut, no tilt: exactly enjoy.
    np.testing.assert_array_equal(ranking_scores(log_c, log_r, seen, mode="gems", gem_quantile=1.0, **common),
                                  ranking_scores(log_c, log_r, seen, mode="enjoy", **common))
    # No cut, tilt 1: enjoyment x (1 - percentile); percentiles of items 0..5 are 6/6 .. 1/6.
    tilted = ranking_scores(log_c, log_r, seen, mode="gems", gem_quantile=1.0, gem_tilt=1.0, **common)
    expected = np.array([0.9, 0.2, 0.8, 0.3, 0.7, 0.95]) * (1 - np.arange(6, 0, -1) / 6)
    np.testing.assert_allclose(tilted[0, :6], expected, atol=1e-12)
    assert tilted[0, 6] == -np.inf
    assert order(tilted) == [5, 4, 2, 3, 1, 0]  # 0.79, 0.47, 0.27, 0.15, 0.03; item 0 scores 0 (kept, last)
    # A lower cut keeps fewer items: percentiles of items 5, 4 are 1/6, 2/6.
    assert order(ranking_scores(log_c, log_r, seen, mode="gems", gem_quantile=2 / 6, **common)) == [5, 4]
    assert order(ranking_scores(log_c, log_r, seen, mode="gems", gem_quantile=0.2, **common)) == [5]
    assert order(ranking_scores(log_c, log_r, seen, mode="gems", gem_quantile=0.1, **common)) == []
    for bad in ({"gem_quantile": 1.5}, {"gem_tilt": -1.0}):
        with pytest.raises(ConvaeError, match="gem_quantile"):
            ranking_scores(log_c, log_r, seen, mode="gems", **bad, **common)


def test_consume_percentile_and_cut_by_hand():
    log_c, _, seen = hand_user()
    np.testing.assert_allclose(consume_percentile(log_c, seen)[0, :6], [1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert np.isnan(consume_percentile(log_c, seen)[0, 6])
    np.testing.assert_array_equal(below_consume_quantile(log_c, seen, 0.5)[0], [0, 0, 0, 1, 1, 1, 0])
    # Odd number of unseen items (item 5 seen too): 5 left, the middle one (item 2) is not below the median.
    seen_two = seen.copy()
    seen_two[0, 5] = True
    np.testing.assert_array_equal(below_consume_quantile(log_c, seen_two, 0.5)[0], [0, 0, 0, 1, 1, 0, 0])
    # Ties share the higher percentile.
    np.testing.assert_allclose(consume_percentile(np.log([[0.5, 0.25, 0.25]]), np.zeros((1, 3), bool)), [[1, 2 / 3, 2 / 3]])


def test_user_who_has_seen_everything_gets_nothing_and_no_warning():
    log_c, log_r, _ = hand_user()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for tilt in (0.0, 2.0):
            scores = ranking_scores(log_c, log_r, np.ones((1, 7), bool), mode="gems", gem_tilt=tilt,
                                    channel_values=VALUES, threshold=4.0)
            assert np.all(scores == -np.inf)


def test_gem_task_targets_by_hand():
    log_c, _, seen = hand_user()
    ratings = np.full((1, 7), np.nan)
    ratings[0, [0, 2, 4, 5, 6]] = [5, 2, 4, 1, 5]  # item 6 was also rated in training: not a candidate
    popularity = np.array([0, 1, 9, 9, 0, 9, 3])  # popularity bottom half of unseen items 0..5: items 0, 1, (4)
    task = gem_task(log_c, seen, ratings, threshold=4.0, item_popularity=popularity)
    np.testing.assert_array_equal(task.candidates[0], [1, 0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(task.liked[0], [1, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(task.targets["model"][0], [0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(task.targets["popularity"][0], [1, 0, 0, 0, 1, 0, 0])
    ratings[0, 2] = 5  # item 2 (popularity 9, top half) liked too: the popular half's one target
    task = gem_task(log_c, seen, ratings, threshold=4.0, item_popularity=popularity)
    np.testing.assert_array_equal(task.targets["popular"][0], [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(task.targets["popular"] | task.targets["popularity"], task.liked)


def test_precision_recall_among_candidates_by_hand():
    scores = np.array([[0.9, 0.8, -np.inf, 0.5, 0.4, 0.1]])
    candidates = np.array([[1, 0, 1, 1, 1, 1]], bool)  # item 1 is ranked high but is no candidate
    targets = np.array([[0, 0, 1, 0, 1, 1]], bool)
    p, r = precision_recall_among(scores, candidates, targets, 2)  # top 2 among candidates: 0, 3 -> no hit
    np.testing.assert_allclose([p[0], r[0]], [0.0, 0.0])
    p, r = precision_recall_among(scores, candidates, targets, 4)  # 0, 3, 4, 5 -> hits 4, 5 (item 2 is −inf)
    np.testing.assert_allclose([p[0], r[0]], [2 / 4, 2 / 3])
    p, r = precision_recall_among(scores, candidates, np.zeros_like(targets), 4)
    assert np.isnan(p[0]) and np.isnan(r[0])


@pytest.mark.parametrize("k", [1, 2, 5])
def test_random_precision_recall_is_the_exact_mean_over_all_orders(k):
    candidates = np.array([[1, 1, 0, 1, 1]], bool)
    targets = np.array([[1, 0, 1, 1, 0]], bool)  # item 2 is a target but not a candidate: never reachable
    results = []
    for perm in itertools.permutations(range(5)):
        results.append(precision_recall_among(np.array([perm], float), candidates, targets, k))
    mean_p, mean_r = np.mean([r[0][0] for r in results]), np.mean([r[1][0] for r in results])
    p, r = random_precision_recall(candidates, targets, k)
    np.testing.assert_allclose([p[0], r[0]], [mean_p, mean_r], atol=1e-12)


def test_ridge_rows_matches_the_normal_equations():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 3, 40), rng.integers(0, 6, 40)
    targets, factors = rng.normal(size=40), rng.normal(size=(6, 2))
    solved = _ridge_rows(rows, cols, targets, factors, 4, reg=0.7)
    for r in range(3):
        x = np.concatenate([np.ones((np.sum(rows == r), 1)), factors[cols[rows == r]]], axis=1)
        expected = np.linalg.solve(x.T @ x + 0.7 * np.eye(3), x.T @ targets[rows == r])
        np.testing.assert_allclose(solved[r], expected, rtol=1e-10)
    np.testing.assert_array_equal(solved[3], 0.0)  # a row without data stays at zero


def low_rank_ratings(seed=0, n_users=60, n_items=50, density=0.5):
    """Ratings r = clip(round(3 + b_u + b_i + p_u·q_i)) of a rank-2 truth on a random half of the cells."""
    rng = np.random.default_rng(seed)
    score = 3 + rng.normal(0, 0.5, (n_users, 1)) + rng.normal(0, 0.5, (1, n_items)) \
        + rng.normal(0, 0.8, (n_users, 2)) @ rng.normal(0, 0.8, (2, n_items))
    user, item = np.nonzero(rng.random((n_users, n_items)) < density)
    channel = np.clip(np.round(score[user, item]), 1, 5).astype(int) - 1
    return Interactions.build(user, item, channel, n_users=n_users, n_items=n_items, channel_values=VALUES)


def test_biased_mf_beats_the_global_mean_on_low_rank_data_and_gives_distributions():
    data = low_rank_ratings()
    rng = np.random.default_rng(1)
    held = rng.random(data.nnz) < 0.1
    train, test = data.subset(~held), data.subset(held)
    model, record = select_biased_mf(train, ranks=(1, 2, 4), regs=(0.3, 3.0), seed=0)
    assert record["rank"] in (1, 2, 4) and record["reg"] in (0.3, 3.0)
    mean_rmse = np.sqrt(np.mean((test.ratings - train.ratings.mean()) ** 2))
    report = rating_report(model, test)
    assert report["rmse"] < 0.6 * mean_rmse  # rounding noise alone is ~0.29; the global mean is ~1.1
    log_probs = model.rating_log_probs(test.user, test.item)
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(np.argmax(log_probs, axis=1) == np.rint(model.predict_ratings(test.user, test.item)) - 1)
    with pytest.raises(ConvaeError, match="rank"):
        BiasedMF.fit(train, rank=0)


def write_fake_coat(directory, *, seed=0):
    """A small Coat look-alike: `train.ascii` self-selected (synthetic histories), `test.ascii` a
    uniformly random 6 items per user with the truth's ratings."""
    truth = SyntheticTruth(n_users=40, n_items=30, n_channels=5, rank=3, seed=seed)
    train = truth.sample_histories(8, seed=seed)
    rng = np.random.default_rng(seed)
    train_matrix = np.zeros((40, 30), int)
    train_matrix[train.user, train.item] = train.channel + 1
    test_matrix = np.zeros((40, 30), int)
    for u in range(40):
        items = rng.choice(30, 6, replace=False)
        p = np.exp(truth.log_p_ratings([u])[0, items])  # (6, C)
        test_matrix[u, items] = [rng.choice(5, p=row / row.sum()) + 1 for row in p]
    directory.mkdir(parents=True, exist_ok=True)
    np.savetxt(directory / "train.ascii", train_matrix, fmt="%d")
    np.savetxt(directory / "test.ascii", test_matrix, fmt="%d")
    return directory


def test_evaluate_coat_end_to_end_on_a_fake_coat(tmp_path):
    data_dir = write_fake_coat(tmp_path / "coat")
    out = tmp_path / "results"
    result = evaluate_coat(data_dir, out, seeds=(0,), config=config_lib.testing(), overrides=("train.max_epochs=2",))
    stored = json.loads((out / "gems.json").read_text())
    assert stored["command"].endswith("--set train.max_epochs=2") and stored["config"]["train"]["max_epochs"] == 2
    assert stored["summary"] == json.loads(json.dumps(result["summary"]))
    assert set(stored["runs"][0]["ratings"]) == {"conv4rec", "conv4rec_explicit_only", "biased_mf", "ips_mf", "item_mean"}
    for target in ("model", "popularity", "popular", "liked"):
        per = stored["runs"][0]["gems"][target]
        for k in (3, 5, 10):
            # gems with no cut and no tilt is enjoy, number for number.
            assert per[f"gems_q1_t0@{k}"] == per[f"enjoy@{k}"]
            for name in ("random", "random_below_median", "consume", "enjoy", "least_consumed", "gems", "mf", "ips_mf"):
                assert 0.0 <= per[f"{name}@{k}"]["precision"] <= 1.0 and 0.0 <= per[f"{name}@{k}"]["recall"] <= 1.0
    # The explicit-only variant was trained with a different loss: its numbers differ.
    ratings = stored["runs"][0]["ratings"]
    assert ratings["conv4rec"]["nll"] != ratings["conv4rec_explicit_only"]["nll"]
    assert (out / "gem_scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| gems |" in (out / "gems.md").read_text()


def test_explicit_only_row_loss_by_hand():
    """Two entries of one row, logits L (2, 3), log Z = 1.5 or 7. With implicit_weight = 0 the loss is
    −λ Σ log p(c | col) = −λ Σ (L[t, c_t] − logsumexp_c L[t]) whatever log Z; with weight w it adds
    −w Σ (logsumexp_c L[t] − log Z). λ = 2."""
    logits = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, -1.0]], np.float32)
    channel, count = np.array([2, 0]), np.ones(2, np.float32)
    lse = np.log(np.exp(logits).sum(axis=1))
    explicit = -np.sum(logits[[0, 1], channel] - lse)
    for weight in (0.0, 1.0):
        for log_z in (1.5, 7.0):
            got = row_losses(logits, np.array([log_z], np.float32), np.zeros(2, np.int32), channel, count,
                             np.ones(2, np.float32), rating_weight=2.0, n_rows=1, implicit_weight=weight)
            np.testing.assert_allclose(float(got[0]), weight * -np.sum(lse - log_z) + 2.0 * explicit, rtol=1e-5)
    assert config_lib.default().model.implicit_weight == 1.0  # the joint likelihood stays the default
    with pytest.raises(ConfigError, match="implicit_weight"):
        config_lib.default().override(["model.implicit_weight=-1"])


@pytest.mark.slow
def test_evaluate_coat_on_real_coat_one_seed(tmp_path):
    result = evaluate_coat(dataset_dir("coat"), tmp_path, seeds=(0,), config=config_lib.testing())
    assert result["dataset"] == {"name": "coat", "train": 6960, "test": 4640, "users": 290, "items": 300}


def test_peer_rating_scores_are_the_peer_predictions_of_every_pair():
    class Peer:
        def predict_ratings(self, users, items):
            return 10.0 * np.asarray(users) + np.asarray(items)

    np.testing.assert_array_equal(peer_rating_scores(Peer(), 2, 3), [[0, 1, 2], [10, 11, 12]])
