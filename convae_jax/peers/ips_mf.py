"""MF with inverse-propensity weighting (Schnabel et al. 2016, "Recommendations as Treatments"):
biased MF whose squared errors are weighted by 1 / P(rating observed), the propensities estimated
from the training ratings alone (no randomly exposed sample is trained on)."""

from __future__ import annotations

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.peers.mf import BiasedMF

PROPENSITY_FLOOR = 0.05  # smallest propensity a weight is computed from: weights stay <= 1 / 0.05 = 20


def popularity_activity_propensities(train: Interactions, users, items) -> np.ndarray:
    """P(u rates i) ≈ min(1, n_u · n_i / N), (P,): the expected count of the pair when users pick
    what to rate independently of one another, each user as often as their number of training
    ratings n_u and each item as often as its number n_i, N the total (a rank-one Poisson model of
    exposure, a logistic propensity model on user and item alone in the limit of rare pairs).

    Caveat: Schnabel et al. estimated Coat's propensities by naive Bayes on a randomly exposed
    sample, which also sees that users rate items they like more often; this estimator sees only
    who rates how much and what is rated how often, and cannot."""
    n_u = np.bincount(train.user, weights=train.count, minlength=train.n_users)
    n_i = np.bincount(train.item, weights=train.count, minlength=train.n_items)
    return np.minimum(1.0, n_u[np.asarray(users)] * n_i[np.asarray(items)] / train.count.sum())


def inverse_propensity_weights(propensities, *, floor: float = PROPENSITY_FLOOR) -> np.ndarray:
    """1 / max(π, floor), self-normalised to mean 1 (SNIPS, Swaminathan & Joachims 2015), so that
    the regulariser keeps the scale it has in unweighted MF."""
    weights = 1.0 / np.maximum(np.asarray(propensities, np.float64), floor)
    return weights / weights.mean()


def fit_ips_mf(train: Interactions, *, rank: int, reg: float, floor: float = PROPENSITY_FLOOR, seed: int = 0,
               rating_scale: float = 1.0, sweeps: int = 15) -> BiasedMF:
    """`BiasedMF` minimising Σ w_ui (r − r̂)² + reg(…), w = `inverse_propensity_weights` of
    `popularity_activity_propensities` (Schnabel et al. 2016, eq. 9 with MF as the model)."""
    weights = inverse_propensity_weights(popularity_activity_propensities(train, train.user, train.item), floor=floor)
    return BiasedMF.fit(train, rank=rank, reg=reg, seed=seed, sweeps=sweeps, rating_scale=rating_scale, weights=weights)
