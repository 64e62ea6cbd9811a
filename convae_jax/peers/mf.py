"""Biased matrix factorisation, r̂_ui = μ + b_u + b_i + p_u·q_i (Koren, Bell & Volinsky 2009, eq. 5),
fitted by alternating least squares, with a discretised-Gaussian rating distribution."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.data.splits import holdout_interactions
from convae_jax.errors import ConvaeError
from convae_jax.metrics import rmse


@dataclasses.dataclass(frozen=True)
class BiasedMF:
    """Minimises Σ (r − μ − b_u − b_i − p_u·q_i)² + reg (Σ b_u² + ‖p_u‖² + Σ b_i² + ‖q_i‖²), μ the
    global training mean, by ALS: each sweep solves every user's (b_u, p_u) in closed form (a
    (rank+1)-dimensional ridge regression on [1, q_i]), then every item's (b_i, q_i) likewise.

    `rating_log_probs` turns the point prediction into a distribution over the rating levels v_c:
    P(c) ∝ exp(−(v_c − r̂)² / 2σ²), a Gaussian discretised onto the scale, σ = `rating_scale`
    (set by `select_biased_mf` on validation ratings). Caveat: its expectation is pulled toward
    the middle of the scale, so the RMSE of the expected rating differs from that of r̂.
    """

    global_mean: float
    user_bias: np.ndarray  # (n_users,)
    item_bias: np.ndarray  # (n_items,)
    user_factors: np.ndarray  # (n_users, rank)
    item_factors: np.ndarray  # (n_items, rank)
    channel_values: tuple[float, ...]
    rating_scale: float = 1.0  # σ of the discretised Gaussian, in rating units

    @classmethod
    def fit(cls, train: Interactions, *, rank: int = 10, reg: float = 5.0, sweeps: int = 15, seed: int = 0,
            rating_scale: float = 1.0, weights=None) -> "BiasedMF":
        """`weights` (nnz,), > 0, weigh each rating's squared error (and μ is their weighted
        mean): inverse propensities give IPS-weighted MF (`peers.ips_mf`); None weighs all equally."""
        if train.nnz == 0 or rank < 1 or reg <= 0:
            raise ConvaeError(f"BiasedMF needs ratings, rank >= 1 and reg > 0 (got nnz={train.nnz}, rank={rank}, reg={reg})")
        ratings = train.ratings.astype(np.float64)
        weights = np.ones(train.nnz) if weights is None else np.asarray(weights, np.float64)
        if weights.shape != (train.nnz,) or not np.all(np.isfinite(weights) & (weights > 0)):
            raise ConvaeError(f"BiasedMF weights must be {train.nnz} finite values > 0, one per rating")
        mu = float(np.sum(weights * ratings) / np.sum(weights))
        rng = np.random.default_rng(seed)
        item = np.concatenate([np.zeros((train.n_items, 1)), rng.normal(0.0, 0.1, (train.n_items, rank))], axis=1)
        user = np.zeros((train.n_users, rank + 1))
        for _ in range(sweeps):
            user = _ridge_rows(train.user, train.item, ratings - mu - item[train.item, 0], item[:, 1:], train.n_users, reg,
                               weights)
            item = _ridge_rows(train.item, train.user, ratings - mu - user[train.user, 0], user[:, 1:], train.n_items, reg,
                               weights)
        return cls(mu, user[:, 0], item[:, 0], user[:, 1:], item[:, 1:], tuple(train.channel_values), rating_scale)

    def predict_ratings(self, users, items) -> np.ndarray:
        """r̂ (P,), clipped to the rating scale."""
        users, items = np.asarray(users), np.asarray(items)
        raw = (self.global_mean + self.user_bias[users] + self.item_bias[items]
               + np.einsum("pk,pk->p", self.user_factors[users], self.item_factors[items]))
        return np.clip(raw, self.channel_values[0], self.channel_values[-1])

    def rating_log_probs(self, users, items) -> np.ndarray:
        """log P(rating = v_c) (P, C) under the discretised Gaussian around r̂."""
        values = np.asarray(self.channel_values)
        logits = -0.5 * ((values[None, :] - self.predict_ratings(users, items)[:, None]) / self.rating_scale) ** 2
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def _ridge_rows(rows, cols, targets, col_factors, n_rows: int, reg: float, weights=None) -> np.ndarray:
    """For every row r: argmin_w Σ_(r,j) a_rj (t − [1, f_j]·w)² + reg‖w‖², (n_rows, rank+1), a the
    pairs' `weights` (None: all 1); rows without data get w = 0."""
    weights = np.ones(cols.size) if weights is None else weights
    design = np.concatenate([np.ones((cols.size, 1)), col_factors[cols]], axis=1)  # (P, rank+1)
    dim = design.shape[1]
    gram = np.zeros((n_rows, dim, dim))
    np.add.at(gram, rows, weights[:, None, None] * design[:, :, None] * design[:, None, :])
    rhs = np.zeros((n_rows, dim))
    np.add.at(rhs, rows, design * (weights * targets)[:, None])
    return np.linalg.solve(gram + reg * np.eye(dim), rhs[..., None])[..., 0]


def select_biased_mf(train: Interactions, *, ranks=(2, 5, 10, 20), regs=(1.0, 3.0, 10.0, 30.0),
                     validation_fraction: float = 0.05, seed: int = 0) -> tuple[BiasedMF, dict]:
    """Picks (rank, reg) by RMSE of r̂ on a seeded `validation_fraction` of `train`, and σ of the
    rating distribution by NLL on the same ratings (grid 0.3..2.0); refits on all of `train`.
    Returns the model and the selection record."""
    fit_part, validation = holdout_interactions(train, fraction=validation_fraction, seed=seed + 7919)
    scores = {}
    for rank, reg in itertools.product(ranks, regs):
        model = BiasedMF.fit(fit_part, rank=rank, reg=reg, seed=seed)
        scores[(rank, reg)] = rmse(model.predict_ratings(validation.user, validation.item), validation.ratings)
    rank, reg = min(scores, key=scores.get)
    scale, nll = select_rating_scale(BiasedMF.fit(fit_part, rank=rank, reg=reg, seed=seed), validation)
    record = {"rank": rank, "reg": reg, "rating_scale": scale, "validation_rmse": scores[(rank, reg)],
              "validation_nll": nll}
    return BiasedMF.fit(train, rank=rank, reg=reg, seed=seed, rating_scale=scale), record


RATING_SCALES = tuple(float(s) for s in np.round(np.arange(0.3, 2.01, 0.05), 2))  # σ grid of `select_rating_scale`


def select_rating_scale(model: BiasedMF, validation: Interactions) -> tuple[float, float]:
    """(σ, its NLL): the σ of `RATING_SCALES` whose discretised Gaussian gives `validation` the
    lowest mean NLL under `model`'s point predictions."""
    nll = {}
    for scale in RATING_SCALES:
        log_probs = dataclasses.replace(model, rating_scale=scale).rating_log_probs(validation.user, validation.item)
        nll[scale] = float(-np.mean(log_probs[np.arange(validation.nnz), validation.channel]))
    scale = min(nll, key=nll.get)
    return scale, nll[scale]
