"""Exact distances between an estimate p̂_u(i, c) and the synthetic truth p_u(i, c) (the recovery claim
of Ledent et al., TNNLS 2025).

For one user, with p the truth and q the estimate over the n·C cells:
    TV_joint    = ½ Σ_(i,c) |p(i,c) − q(i,c)|
    TV_implicit = ½ Σ_i |p(i) − q(i)|,                 p(i) = Σ_c p(i,c)
    TV_explicit = Σ_i p(i) · ½ Σ_c |p(c|i) − q(c|i)|  (weighted by the truth's p(i))
    KL_joint    = Σ p(i,c) log(p(i,c)/q(i,c)) = KL_implicit + KL_explicit   (chain rule)
    KL_implicit = Σ_i p(i) log(p(i)/q(i)),   KL_explicit = Σ_i p(i) KL(p(·|i) ‖ q(·|i))
Pinsker: TV ≤ √(KL/2) for each pair. Averages are taken under the user marginal P(u).
Everything is computed from log-probabilities, one batch of users at a time.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from theory.estimators import smoothed
from theory.synthetic import user_batches, user_marginal

PARTS = ("joint", "implicit", "explicit")


def total_variation(log_p, log_q, *, axis=-1) -> np.ndarray:
    """½ Σ |p − q| over `axis` (an int or a tuple)."""
    return 0.5 * np.sum(np.abs(np.exp(log_p) - np.exp(log_q)), axis=axis)


def kl_divergence(log_p, log_q, *, axis=-1) -> np.ndarray:
    """Σ p (log p − log q) over `axis`; cells with p = 0 contribute 0. Clipped at 0: for nearly
    equal distributions rounding can leave a sum of order −1e-26, which would break sqrt(KL/2)."""
    p = np.exp(log_p)
    return np.maximum(np.sum(p * np.where(p > 0, log_p - log_q, 0.0), axis=axis), 0.0)


def user_distances(log_p, log_q) -> dict[str, np.ndarray]:
    """TV and KL of every part for a batch of users: log_p, log_q (b, n, C) -> {name: (b,)}."""
    log_p, log_q = np.asarray(log_p, np.float64), np.asarray(log_q, np.float64)
    log_p_item, log_q_item = logsumexp(log_p, axis=-1), logsumexp(log_q, axis=-1)
    log_p_rating, log_q_rating = log_p - log_p_item[..., None], log_q - log_q_item[..., None]
    p_item = np.exp(log_p_item)
    return {
        "tv_joint": total_variation(log_p, log_q, axis=(1, 2)),
        "tv_implicit": total_variation(log_p_item, log_q_item),
        "tv_explicit": np.sum(p_item * total_variation(log_p_rating, log_q_rating), axis=-1),
        "kl_joint": kl_divergence(log_p, log_q, axis=(1, 2)),
        "kl_implicit": kl_divergence(log_p_item, log_q_item),
        "kl_explicit": np.sum(p_item * kl_divergence(log_p_rating, log_q_rating), axis=-1),
    }


def recovery_distances(truth, estimator, *, batch: int = 128) -> dict[str, float]:
    """Every distance of `user_distances` averaged under P(u), plus the share of users for
    whom Pinsker's inequality TV_joint ≤ √(KL_joint/2) holds (a sanity check: always 1)."""
    weights = user_marginal(truth)
    sums: dict[str, float] = {}
    pinsker_ok = 0
    for users, log_p in user_batches(truth, batch=batch):
        distances = user_distances(log_p, estimator.log_joint(users))
        for name, values in distances.items():
            sums[name] = sums.get(name, 0.0) + float(weights[users] @ values)
        pinsker_ok += int(np.sum(distances["tv_joint"] <= np.sqrt(np.maximum(distances["kl_joint"], 0.0) / 2) + 1e-9))
    return sums | {"pinsker_holds_share": pinsker_ok / truth.n_users}


def population_log_loss(truth, estimator, *, smoothing: float = 0.0, batch: int = 128) -> float:
    """R(q) = Σ_u P(u) Σ_(i,c) p_u(i,c) · (−log q̃_u(i,c)), exactly, with q̃ the estimate γ-smoothed
    (`estimators.smoothed`); at γ = 0 it equals H(I, C | U) + E_u KL(p_u ‖ q_u)."""
    weights = user_marginal(truth)
    total = 0.0
    for users, log_p in user_batches(truth, batch=batch):
        log_q = smoothed(np.asarray(estimator.log_joint(users), np.float64), smoothing)
        total -= float(weights[users] @ np.sum(np.exp(log_p) * log_q, axis=(1, 2)))
    return total
