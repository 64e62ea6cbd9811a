"""Rankings of SPEC §4 from per-user scores: `consume`, `enjoy` and `gems`, seen items excluded."""

from __future__ import annotations

import numpy as np

from convae_jax.errors import ConvaeError
from convae_jax.metrics import top_k  # noqa: F401  (re-exported: rankings and metrics share one top-K)

MODES = ("consume", "enjoy", "gems")


def p_rating_at_least(log_p_rating, channel_values, threshold: float) -> np.ndarray:
    """P(rating >= τ | consumed), (…,) from log P(rating = v_c | consumed) (…, C)."""
    liked = np.asarray(channel_values) >= threshold
    return np.exp(np.asarray(log_p_rating))[..., liked].sum(axis=-1)


def ranking_scores(log_p_consume, log_p_rating, seen, *, mode: str, channel_values, threshold: float,
                   gem_quantile: float = 0.5) -> np.ndarray:
    """Scores (b, n) whose descending order is the ranking; seen items (bool mask) get −inf.

    - `consume`: log P(i | u), what the user would pick on their own.
    - `enjoy`: P(rating >= τ | u, i consumed), what they would like once exposed.
    - `gems`: `enjoy`, restricted to items whose P(consume) is below the user's own
      `gem_quantile` quantile among unseen items: the paper's "items a user would not consume
      naturally but would enjoy if exposed". Items above it score −inf.
    """
    if mode not in MODES:
        raise ConvaeError(f"unknown ranking mode {mode!r}; expected one of {MODES}")
    seen = np.asarray(seen, bool)
    if mode == "consume":
        scores = np.array(log_p_consume, np.float64)
    else:
        scores = p_rating_at_least(log_p_rating, channel_values, threshold).astype(np.float64)
        if mode == "gems":
            unseen_consume = np.where(seen, np.nan, log_p_consume)
            cut = np.nanquantile(unseen_consume, gem_quantile, axis=1, keepdims=True)
            scores = np.where(np.asarray(log_p_consume) <= cut, scores, -np.inf)
    return np.where(seen, -np.inf, scores)


def seen_mask(users, data, n_items: int) -> np.ndarray:
    """(len(users), n_items) bool: which items each user has in `data` (an Interactions)."""
    users = np.asarray(users)
    order = np.argsort(users, kind="stable")
    mask = np.zeros((users.size, n_items), bool)
    keep = np.isin(data.user, users)
    rows = order[np.searchsorted(users[order], data.user[keep])]
    mask[rows, data.item[keep]] = True
    return mask
