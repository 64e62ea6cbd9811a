"""Metrics as pure, vectorised numpy functions: rating accuracy and calibration, top-K ranking."""

from __future__ import annotations

import numpy as np


def rmse(predicted, actual) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - actual) ** 2)))


def mae(predicted, actual) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, np.float64) - actual)))


def negative_log_likelihood(log_probs, labels) -> float:
    """Mean −log p(label) over rows of log_probs (P, C)."""
    return float(-np.mean(np.take_along_axis(np.asarray(log_probs, np.float64), np.asarray(labels)[:, None], axis=1)))


def accuracy(log_probs, labels) -> float:
    """Share of rows whose most likely class is the label."""
    return float(np.mean(np.argmax(log_probs, axis=1) == labels))


def expected_calibration_error(confidence, correct, *, n_bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): Σ_b |B_b|/N · |accuracy(B_b) − mean confidence(B_b)| over
    `n_bins` equal-width confidence bins, bin b being (b/n_bins, (b+1)/n_bins]."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, correct, n_bins) - np.bincount(bins, confidence, n_bins))
    return float(gap.sum() / max(total.sum(), 1))


def rating_metrics(log_probs, labels, channel_values) -> dict:
    """RMSE and MAE of the expected rating, NLL, accuracy and ECE of the rating distribution.

    log_probs (P, C): log P(rating = v_c); labels (P,): true channel indices.
    """
    log_probs = np.asarray(log_probs, np.float64)
    labels = np.asarray(labels)
    values = np.asarray(channel_values, np.float64)
    probs = np.exp(log_probs)
    expected = probs @ values
    actual = values[labels]
    return {
        "rmse": rmse(expected, actual),
        "mae": mae(expected, actual),
        "nll": negative_log_likelihood(log_probs, labels),
        "accuracy": accuracy(log_probs, labels),
        "ece": expected_calibration_error(probs.max(axis=1), np.argmax(probs, axis=1) == labels),
        "n": int(labels.size),
    }


def top_k(scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(items (b, k), scores (b, k)) in descending score order; ties put the lower index first."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    items = np.take_along_axis(part, np.lexsort((part, -part_scores), axis=1), axis=1)
    return items, np.take_along_axis(scores, items, axis=1)


def recall_at_k_min_norm(scores, relevant, k: int) -> np.ndarray:
    """Per-user Recall@K = |top-K ∩ relevant| / min(K, |relevant|), as in Liang et al. 2018
    (Mult-VAE); Cornac divides by |relevant|. scores, relevant: (b, n). NaN for users with
    nothing relevant; exclude them before averaging. Exclude seen items by scoring them −inf.
    """
    relevant = np.asarray(relevant, bool)
    hits = np.take_along_axis(relevant, top_k(scores, k)[0], axis=1).sum(axis=1)
    n_relevant = relevant.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, hits / np.minimum(k, n_relevant), np.nan)


def ndcg_at_k(scores, relevant, k: int) -> np.ndarray:
    """Per-user NDCG@K with binary relevance: DCG = Σ_{r<K} rel_r / log2(r + 2), divided by the
    ideal DCG of min(K, |relevant|) hits (Liang et al. 2018). NaN for users with nothing relevant."""
    relevant = np.asarray(relevant, bool)
    top = top_k(scores, k)[0]
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = (np.take_along_axis(relevant, top, axis=1) * discounts).sum(axis=1)
    ideal_hits = np.minimum(relevant.sum(axis=1), top.shape[1])
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_hits]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal_hits > 0, dcg / ideal, np.nan)


def per_user_auc(users, scores, positive) -> tuple[np.ndarray, np.ndarray]:
    """(users (m,), AUC (m,)): per user, over that user's pairs, the ROC AUC of the `positive`
    pairs against the others: the Mann–Whitney U over n_pos · n_neg, a tie counting one half
    (the area under the ROC curve with ties drawn as diagonal steps). Only the m users with at
    least one positive and one negative pair have an AUC. users, scores, positive: (P,)."""
    users, scores, positive = np.asarray(users), np.asarray(scores, np.float64), np.asarray(positive, bool)
    kept, values = [], []
    for user, index in _pairs_by_user(users):
        pos, neg = scores[index][positive[index]], scores[index][~positive[index]]
        if pos.size and neg.size:
            greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
            kept.append(user)
            values.append(greater / (pos.size * neg.size))
    return np.asarray(kept, users.dtype), np.asarray(values, np.float64)


def per_user_precision_at_k(users, scores, positive, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(users (m,), precision@K (m,)): per user, the share of positives among the top K of that
    user's pairs by score, hits / min(K, pairs), for the m users with at least one positive. Ties
    at the cut share its remaining places: a tied item counts as the expected hit of a uniformly
    random order of the ties, so a ranking gains nothing from the order its ties happen to be in.
    users, scores, positive: (P,)."""
    users, scores, positive = np.asarray(users), np.asarray(scores, np.float64), np.asarray(positive, bool)
    kept, values = [], []
    for user, index in _pairs_by_user(users):
        s, hit = scores[index], positive[index]
        if not hit.any():
            continue
        places = min(k, s.size)
        cut = np.sort(s)[::-1][places - 1]
        above, tied = s > cut, s == cut
        hits = hit[above].sum() + (places - above.sum()) * hit[tied].mean()
        kept.append(user)
        values.append(hits / places)
    return np.asarray(kept, users.dtype), np.asarray(values, np.float64)


def _pairs_by_user(users: np.ndarray):
    """(user, indices of that user's pairs) for every user present, in ascending user order."""
    if users.size == 0:
        return
    order = np.argsort(users, kind="stable")
    starts = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1]])
    for index in np.split(order, starts[1:]):
        yield users[index[0]], index
