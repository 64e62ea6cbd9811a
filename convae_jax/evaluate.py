"""Evaluation protocols (docs/model.md, "Protocols"), shared by Conv4Rec and its peers.

A model takes part through one or both of:
- `rating_log_probs(users, items) -> (P, C)` (a rating distribution), or
  `predict_ratings(users, items) -> (P,)` (a point prediction only: RMSE and MAE);
- `consumption_scores(users) -> iterator of (users (b,), scores (b, n_items))`, higher = ranked first.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from convae_jax import metrics
from convae_jax.data.interactions import Interactions
from convae_jax.errors import ConvaeError
from convae_jax.rank import p_rating_at_least, seen_mask

# The random-exposure protocol's defaults: liked means rated >= 4 on a 1-5 scale, and each user is
# shown few items (Coat: 16), so the ranking is read at the top 3.
LIKED_AT_LEAST = 4.0
SHOWN_TOP_K = 3


def rating_protocol(model, test: Interactions) -> dict:
    """Rating metrics on held-out (user, item) pairs: RMSE/MAE of the expected rating, and, for
    models with a distribution, NLL, accuracy and top-label ECE."""
    if hasattr(model, "rating_log_probs"):
        return metrics.rating_metrics(model.rating_log_probs(test.user, test.item), test.channel, test.channel_values)
    predicted = model.predict_ratings(test.user, test.item)
    return {"rmse": metrics.rmse(predicted, test.ratings), "mae": metrics.mae(predicted, test.ratings), "n": test.nnz}


def random_exposure_protocol(model, test: Interactions, *, liked_at_least: float = LIKED_AT_LEAST,
                             k: int = SHOWN_TOP_K) -> dict:
    """Ratings of randomly exposed pairs (docs/model.md, "Protocols"): `rating_protocol`'s metrics,
    then, per user over the test items they were shown, how well the model tells the items they
    liked (rating >= `liked_at_least`) from the others: the AUC of liked against not liked
    (`metrics.per_user_auc`) and precision@K of liked (`metrics.per_user_precision_at_k`), each
    ranked by the expected rating (`…/expected_rating`; a model's own point prediction where it
    has one, `predict_ratings`, which also gives RMSE and MAE) and, for models with a rating
    distribution, by P(rating >= `liked_at_least`) (`…/p_liked`). Means over the users that have
    the metric (AUC: at least one liked and one not liked item; precision: one liked item).

    Exposure being random, a user's shown items are a uniform sample of the catalogue, so these are
    unbiased estimates of how the model ranks the whole catalogue for the user, which no metric on
    self-selected test pairs is."""
    values = np.asarray(test.channel_values, np.float64)
    liked = test.ratings >= liked_at_least
    result, rankings = {"n": test.nnz}, {}
    if hasattr(model, "rating_log_probs"):
        log_probs = np.asarray(model.rating_log_probs(test.user, test.item), np.float64)
        result = metrics.rating_metrics(log_probs, test.channel, values)
        rankings = {"expected_rating": np.exp(log_probs) @ values,
                    "p_liked": p_rating_at_least(log_probs, values, liked_at_least)}
    if hasattr(model, "predict_ratings"):  # a model's own point prediction is its rating (MF: r̂, not its Gaussian's mean)
        rankings["expected_rating"] = np.asarray(model.predict_ratings(test.user, test.item), np.float64)
        result |= {"rmse": metrics.rmse(rankings["expected_rating"], test.ratings),
                   "mae": metrics.mae(rankings["expected_rating"], test.ratings)}
    for name, scores in rankings.items():
        auc_users, auc = metrics.per_user_auc(test.user, scores, liked)
        precision_users, precision = metrics.per_user_precision_at_k(test.user, scores, liked, k)
        result |= {f"user_auc/{name}": float(np.mean(auc)) if auc.size else float("nan"),
                   f"user_p@{k}/{name}": float(np.mean(precision)) if precision.size else float("nan"),
                   "n_users_auc": int(auc_users.size), f"n_users_p@{k}": int(precision_users.size)}
    return result


def ranking_protocol(score_batches: Iterable[tuple[np.ndarray, np.ndarray]], *, seen: Interactions,
                     relevant: Interactions, ks=(20,), ndcg_ks=None) -> dict:
    """Mean Recall@K (min-normalised, Liang et al. 2018) and NDCG@K over users with at least one
    relevant item; `seen` items are excluded from the ranking (scored −inf)."""
    per_user = ranking_per_user(score_batches, seen=seen, relevant=relevant, ks=ks, ndcg_ks=ndcg_ks)
    users = per_user.pop("user")
    if users.size == 0:
        raise ConvaeError("ranking_protocol: no user has a relevant item to score")
    return {name: float(np.mean(values)) for name, values in per_user.items()} | {"n_users": int(users.size)}


def ranking_per_user(score_batches: Iterable[tuple[np.ndarray, np.ndarray]], *, seen: Interactions,
                     relevant: Interactions, ks=(20,), ndcg_ks=None) -> dict[str, np.ndarray]:
    """`ranking_protocol`'s metrics user by user: {"user": (m,), "recall@K": (m,), "ndcg@K": (m,)}
    for the m users with at least one relevant item, in the order the batches gave them; what a
    paired comparison of two models on the same users needs."""
    ndcg_ks = tuple(ks if ndcg_ks is None else ndcg_ks)
    parts = {"user": [], **{f"recall@{k}": [] for k in ks}, **{f"ndcg@{k}": [] for k in ndcg_ks}}
    n_items = relevant.n_items
    for users, scores in score_batches:
        masked = np.where(seen_mask(users, seen, n_items), -np.inf, scores)
        target = seen_mask(users, relevant, n_items)
        has_target = target.any(axis=1)
        masked, target = masked[has_target], target[has_target]
        parts["user"].append(np.asarray(users)[has_target])
        for k in ks:
            parts[f"recall@{k}"].append(metrics.recall_at_k_min_norm(masked, target, k))
        for k in ndcg_ks:
            parts[f"ndcg@{k}"].append(metrics.ndcg_at_k(masked, target, k))
    return {name: np.concatenate(values) if values else np.zeros(0) for name, values in parts.items()}


def explicit_protocol(model, train: Interactions, test: Interactions, *, ks=(20,)) -> dict:
    """Random hold-out protocol: rating metrics on the test pairs (for models that predict
    ratings), and top-K metrics of the test items when each test user's unseen items are ranked by
    P(consume) (for models that rank)."""
    rates = hasattr(model, "rating_log_probs") or hasattr(model, "predict_ratings")
    result = rating_protocol(model, test) if rates else {}
    if hasattr(model, "consumption_scores"):
        users = np.unique(test.user)
        result |= ranking_protocol(model.consumption_scores(users), seen=train, relevant=test, ks=ks)
    return result


def strong_generalization_protocol(score_batches, *, fold_in: Interactions, target: Interactions,
                                   ks=(20, 50), ndcg_ks=(100,)) -> dict:
    """Mult-VAE protocol (Liang et al. 2018): held-out users, scored from their fold-in part only,
    fold-in items excluded; Recall@20, Recall@50 (min-normalised) and NDCG@100 of the target."""
    return ranking_protocol(score_batches, seen=fold_in, relevant=target, ks=ks, ndcg_ks=ndcg_ks)
