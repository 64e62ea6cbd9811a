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
from convae_jax.rank import seen_mask


def rating_protocol(model, test: Interactions) -> dict:
    """Rating metrics on held-out (user, item) pairs: RMSE/MAE of the expected rating, and, for
    models with a distribution, NLL, accuracy and top-label ECE."""
    if hasattr(model, "rating_log_probs"):
        return metrics.rating_metrics(model.rating_log_probs(test.user, test.item), test.channel, test.channel_values)
    predicted = model.predict_ratings(test.user, test.item)
    return {"rmse": metrics.rmse(predicted, test.ratings), "mae": metrics.mae(predicted, test.ratings), "n": test.nnz}


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
