"""Rankings (docs/model.md, "Predictions") from per-user scores: `consume`, `enjoy` and `gems`, seen items excluded."""

from __future__ import annotations

import numpy as np

from convae_jax.errors import ConvaeError
from convae_jax.metrics import top_k  # noqa: F401  (re-exported: rankings and metrics share one top-K)

MODES = ("consume", "enjoy", "gems")


def p_rating_at_least(log_p_rating, channel_values, threshold: float) -> np.ndarray:
    """P(rating >= τ | consumed), (…,) from log P(rating = v_c | consumed) (…, C)."""
    liked = np.asarray(channel_values) >= threshold
    return np.exp(np.asarray(log_p_rating))[..., liked].sum(axis=-1)


def consume_percentile(log_p_consume, seen) -> np.ndarray:
    """(b, n) share, in [0, 1], of each user's unseen items whose P(consume) is <= the item's own:
    where the item sits in the `consume` ranking, read from the bottom (1.0 = most likely pick).
    Seen items get NaN."""
    log_p_consume = np.asarray(log_p_consume, np.float64)
    seen = np.asarray(seen, bool)
    out = np.full(log_p_consume.shape, np.nan)
    for row, (values, hidden) in enumerate(zip(log_p_consume, seen)):
        unseen = np.sort(values[~hidden])
        if unseen.size:
            out[row, ~hidden] = np.searchsorted(unseen, values[~hidden], side="right") / unseen.size
    return out


def below_consume_quantile(log_p_consume, seen, quantile: float) -> np.ndarray:
    """(b, n) bool: unseen items whose `consume_percentile` is <= `quantile`: the items the user
    would not naturally consume. `quantile = 0.5` is the bottom half of the user's `consume`
    ranking over unseen items (floor(m/2) of m; the middle item of an odd m is not below the median),
    so an item kept by the cut never shows a percentile above 100·quantile."""
    return ~np.asarray(seen, bool) & (np.nan_to_num(consume_percentile(log_p_consume, seen), nan=np.inf) <= quantile)


def ranking_scores(log_p_consume, log_p_rating, seen, *, mode: str, channel_values, threshold: float,
                   gem_quantile: float = 0.5, gem_tilt: float = 0.0) -> np.ndarray:
    """Scores (b, n) whose descending order is the ranking; seen items (bool mask) get −inf.

    - `consume`: log P(i | u), what the user would pick on their own.
    - `enjoy`: P(rating >= τ | u, i consumed), what they would like once exposed.
    - `gems`: the paper's "items a user would not consume naturally but would enjoy if exposed"
      (Ledent et al. 2025, abstract): with q_u(i) = consume_percentile (1 = the user's likeliest
      unseen pick),
          gems(u, i) = P(rating >= τ | u, i consumed) · (1 − q_u(i))^gem_tilt
      on the items whose percentile q_u(i) is at most `gem_quantile` (`below_consume_quantile`);
      items above it score −inf. Two knobs set the trade-off between "would enjoy" and "would not
      find alone": `gem_quantile` is a hard cut (0.5: the bottom half of the `consume` ranking,
      the default; 1.0: no cut), `gem_tilt` a soft discount of natural picks (0: pure `enjoy`
      below the cut, the default; larger values favour ever less likely picks). Percentiles rather
      than probabilities make the discount independent of catalogue size and of how sharp
      P(consume) is. Evaluated on Coat's random exposure in benchmarks/results/gems/.
    """
    if mode not in MODES:
        raise ConvaeError(f"unknown ranking mode {mode!r}; expected one of {MODES}")
    if not 0.0 <= gem_quantile <= 1.0 or gem_tilt < 0.0:
        raise ConvaeError(f"gems needs gem_quantile in [0, 1] and gem_tilt >= 0, got {gem_quantile}, {gem_tilt}")
    seen = np.asarray(seen, bool)
    if mode == "consume":
        scores = np.array(log_p_consume, np.float64)
    else:
        scores = p_rating_at_least(log_p_rating, channel_values, threshold).astype(np.float64)
        if mode == "gems":
            if gem_tilt:
                scores = scores * (1.0 - np.nan_to_num(consume_percentile(log_p_consume, seen))) ** gem_tilt
            scores = np.where(below_consume_quantile(log_p_consume, seen, gem_quantile), scores, -np.inf)
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
