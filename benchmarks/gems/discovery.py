"""Gem discovery among randomly exposed items: the targets ("liked, and not what the user would
pick"), the rankings compared, and their precision and recall@K against exact random baselines
(docs/model.md, Predictions)."""

from __future__ import annotations

import dataclasses

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.metrics import top_k
from convae_jax.predict import FittedModel
from convae_jax.rank import below_consume_quantile, ranking_scores, seen_mask

KS = (3, 5, 10)
TRADE_OFF_GRID = tuple((q, t) for q in (0.25, 0.5, 0.75, 1.0) for t in (0.0, 1.0, 3.0))  # (gem_quantile, gem_tilt)


@dataclasses.dataclass(frozen=True)
class GemTask:
    """Per-user masks (b, n) over the catalogue for gem discovery among randomly exposed items.

    candidates: test items the user had not rated in training (the rankings are compared on these
    alone: the other items have no rating, and exposure was random, so ranking the candidates is an
    unbiased sample of ranking the catalogue). liked: candidates rated >= τ. `targets` maps a
    definition of "would not consume naturally" to liked candidates that satisfy it.
    """

    candidates: np.ndarray
    liked: np.ndarray
    targets: dict


def gem_task(log_p_consume, seen, test_ratings, *, threshold: float, item_popularity) -> GemTask:
    """Targets = liked candidates in the bottom half (`below_consume_quantile` at 0.5, over the
    user's unseen items) of
    - "model": the model's own `consume` ranking (the issue's definition; the `gems` ranking with
      gem_quantile = 0.5 cuts at the same median, so against `enjoy` it starts with an advantage);
    - "popularity": training popularity, a definition no model's score enters;
    and "popular": liked candidates in the top half of training popularity (the other half of
    the same split). test_ratings (b, n): the test rating, NaN where the item was not in the
    user's test set."""
    candidates = ~np.isnan(test_ratings) & ~seen
    with np.errstate(invalid="ignore"):
        liked = candidates & (test_ratings >= threshold)
    log_popularity = np.broadcast_to(np.log1p(np.asarray(item_popularity, np.float64)), seen.shape)
    niche = below_consume_quantile(log_popularity, seen, 0.5)
    return GemTask(candidates, liked, {
        "model": liked & below_consume_quantile(log_p_consume, seen, 0.5),
        "popularity": liked & niche,
        "popular": liked & ~niche,
    })


def precision_recall_among(scores, candidates, targets, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user precision@K = hits / K and recall@K = hits / |targets| when only the candidates
    are ranked (others −inf), hits counting targets with a finite score in the top K (a ranking
    that scores an item −inf does not recommend it). NaN for users without targets."""
    ranked = np.where(candidates, scores, -np.inf)
    items, item_scores = top_k(ranked, k)
    hits = (np.take_along_axis(targets, items, axis=1) & np.isfinite(item_scores)).sum(axis=1)
    n_targets = targets.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_targets > 0, hits / k, np.nan), np.where(n_targets > 0, hits / n_targets, np.nan)


def random_precision_recall(candidates, targets, k: int, *, n_targets=None) -> tuple[np.ndarray, np.ndarray]:
    """The exact expectation of `precision_recall_among` under a uniformly random order of the
    candidates: E[hits] = min(K, m) · |targets ∩ candidates| / m for m candidates. Recall divides
    by `n_targets` (default |targets|, as `precision_recall_among` does); users with none get NaN."""
    m, reachable = candidates.sum(axis=1), (targets & candidates).sum(axis=1)
    n_targets = targets.sum(axis=1) if n_targets is None else np.asarray(n_targets)
    with np.errstate(invalid="ignore", divide="ignore"):
        hits = np.where(m > 0, np.minimum(k, m) * reachable / np.maximum(m, 1), 0.0)
        return np.where(n_targets > 0, hits / k, np.nan), np.where(n_targets > 0, hits / n_targets, np.nan)


def gem_rankings(log_p_consume, log_p_rating, seen, *, channel_values, threshold: float) -> dict:
    """The rankings compared, name -> scores (b, n): consume, enjoy, gems (default knobs),
    least_consumed (ascending P(consume): the bottom half without any enjoyment signal), and the
    trade-off grid of gems knobs, named gems_q{quantile}_t{tilt}."""
    common = {"channel_values": channel_values, "threshold": threshold}
    rankings = {mode: ranking_scores(log_p_consume, log_p_rating, seen, mode=mode, **common)
                for mode in ("consume", "enjoy", "gems")}
    rankings["least_consumed"] = np.where(seen, -np.inf, -np.asarray(log_p_consume, np.float64))
    for quantile, tilt in TRADE_OFF_GRID:
        rankings[f"gems_q{quantile:g}_t{tilt:g}"] = ranking_scores(
            log_p_consume, log_p_rating, seen, mode="gems", gem_quantile=quantile, gem_tilt=tilt, **common)
    return rankings


def gem_discovery(model: FittedModel, test: Interactions, *, ks=KS, enjoyment_model: FittedModel | None = None,
                  peer_rankings: dict | None = None) -> dict:
    """Precision and recall@K of every ranking of `gem_rankings`, of a random order of the
    candidates (`random`) and of a random order of the candidates below the median of P(consume)
    (`random_below_median`: what the cut of `gems` buys without any enjoyment signal), for each
    target definition of `gem_task` and for all liked candidates ("liked"); means over users with
    at least one target. With `enjoyment_model` (e.g. the explicit-only variant), also
    `enjoy_other` and `gems_other`: P(rating | consumed) from that model, P(consume) from `model`.
    `peer_rankings` (name -> scores (U, n), every user, higher first) adds other models' rankings,
    e.g. MF's predicted ratings (`peer_rating_scores`)."""
    log_c, log_r, seen, task = score_and_task(model, test)
    train = model.train
    common = {"channel_values": train.channel_values, "threshold": model.config.eval.rating_threshold}
    rankings = gem_rankings(log_c, log_r, seen, **common)
    if enjoyment_model is not None:
        other_log_r = all_scores(enjoyment_model, np.arange(train.n_users))[1]
        rankings |= {f"{mode}_other": ranking_scores(log_c, other_log_r, seen, mode=mode, **common)
                     for mode in ("enjoy", "gems")}
    rankings |= peer_rankings or {}
    below_median = below_consume_quantile(log_c, seen, 0.5)
    result = {}
    for name, targets in {**task.targets, "liked": task.liked}.items():
        per = {"n_users": int(targets.any(axis=1).sum()), "n_targets": int(targets.sum())}
        for k in ks:
            per[f"random@{k}"] = _means(*random_precision_recall(task.candidates, targets, k))
            per[f"random_below_median@{k}"] = _means(*random_precision_recall(
                task.candidates & below_median, targets & below_median, k, n_targets=targets.sum(axis=1)))
            for ranking, scores in rankings.items():
                per[f"{ranking}@{k}"] = _means(*precision_recall_among(scores, task.candidates, targets, k))
        result[name] = per
    return result


def score_and_task(model: FittedModel, test: Interactions):
    """(log P(consume) (U, n), log P(rating) (U, n, C), seen (U, n), GemTask) for every user."""
    train = model.train
    users = np.arange(train.n_users)
    log_c, log_r = all_scores(model, users)
    seen = seen_mask(users, train, train.n_items)
    task = gem_task(log_c, seen, dense_ratings(test, users), threshold=model.config.eval.rating_threshold,
                    item_popularity=np.bincount(train.item, weights=train.count, minlength=train.n_items))
    return log_c, log_r, seen, task


def peer_rating_scores(model, n_users: int, n_items: int) -> np.ndarray:
    """(n_users, n_items) predicted ratings of a rating model (`predict_ratings`), every pair: its
    ranking of each user's items."""
    users, items = np.divmod(np.arange(n_users * n_items), n_items)
    return np.asarray(model.predict_ratings(users, items), np.float64).reshape(n_users, n_items)


def all_scores(model: FittedModel, users) -> tuple[np.ndarray, np.ndarray]:
    """(log P(consume) (b, n), log P(rating) (b, n, C)) of `users`, every batch of scores joined."""
    parts = list(model.score_users(users))
    return np.concatenate([p.log_p_consume for p in parts]), np.concatenate([p.log_p_rating for p in parts])


def dense_ratings(test: Interactions, users) -> np.ndarray:
    """(len(users), n_items) test ratings of `users`, NaN where absent."""
    out = np.full((len(users), test.n_items), np.nan)
    row_of = np.full(test.n_users, -1)
    row_of[users] = np.arange(len(users))
    keep = row_of[test.user] >= 0
    out[row_of[test.user[keep]], test.item[keep]] = test.ratings[keep]
    return out


def _means(precision, recall) -> dict:
    return {"precision": float(np.nanmean(precision)), "recall": float(np.nanmean(recall))}
