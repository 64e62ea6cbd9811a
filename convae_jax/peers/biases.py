"""User + item biases: r̂_ui = μ + b_u + b_i, the classic rating floor (Koren 2008, eq. 1)."""

from __future__ import annotations

import dataclasses

import numpy as np

from convae_jax.data.interactions import Interactions


@dataclasses.dataclass(frozen=True)
class UserItemBiases:
    """Minimises Σ (r − μ − b_u − b_i)² + reg_user Σ b_u² + reg_item Σ b_i² by exact alternating
    updates (each is a closed-form ridge step), μ the global mean."""

    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray

    @classmethod
    def fit(cls, train: Interactions, *, reg_user: float = 10.0, reg_item: float = 10.0, sweeps: int = 20):
        ratings = train.ratings.astype(np.float64)
        mu = float(ratings.mean())
        b_u, b_i = np.zeros(train.n_users), np.zeros(train.n_items)
        n_u = np.bincount(train.user, minlength=train.n_users)
        n_i = np.bincount(train.item, minlength=train.n_items)
        for _ in range(sweeps):
            b_i = np.bincount(train.item, ratings - mu - b_u[train.user], train.n_items) / (n_i + reg_item)
            b_u = np.bincount(train.user, ratings - mu - b_i[train.item], train.n_users) / (n_u + reg_user)
        return cls(mu, b_u, b_i)

    def predict_ratings(self, users, items) -> np.ndarray:
        return self.global_mean + self.user_bias[users] + self.item_bias[items]
