"""Estimators of the per-user sampling distribution p_u(i, c) compared in the recovery check.

Each exposes `log_joint(users) -> (b, n, C)` log p̂_u(i, c) and is fit on the fit draws only,
with its one hyperparameter chosen by the mean log-loss of held-out draws:
- `ModelEstimator`: a fitted Conv4Rec, through `FittedModel.score_users` (either orientation);
- `PerUserEmpirical`: each user's own counts, add-α smoothed,
  p̂_u(i,c) = (n_u(i,c) + α) / (n_u + α·n·C);
- `GlobalPopularity`: one distribution for every user, item popularity × global rating histogram,
  p̂(i,c) = (m_i + α)/(N + α·n) · (m_c + 1)/(N + C).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from convae_jax.data import Interactions
from convae_jax.predict import FittedModel

ALPHA_GRID = tuple(float(a) for a in np.logspace(-3, 1, 17))  # candidate smoothing strengths


def smoothed(log_q, smoothing: float):
    """log((1 − γ) q + γ/K) over the last two axes' K cells: the estimate mixed with γ of the
    uniform distribution, whose log-loss is the γ-smoothed loss (in [0, ln(K/γ)]); γ = 0: log q."""
    if smoothing == 0:
        return log_q
    k = log_q.shape[-1] * log_q.shape[-2]
    return np.logaddexp(np.log1p(-smoothing) + log_q, np.log(smoothing / k))


def draw_log_losses(estimator, draws: Interactions, *, smoothing: float = 0.0, batch: int = 256) -> np.ndarray:
    """−log p̂_u(i, c) of every entry of `draws` (nnz,), γ-smoothed; an entry stands for `count` draws."""
    out = np.empty(draws.nnz)
    users = np.unique(draws.user)
    for start in range(0, users.size, batch):
        block = users[start:start + batch]
        log_p = smoothed(estimator.log_joint(block), smoothing)
        mask = np.isin(draws.user, block)
        rows = np.searchsorted(block, draws.user[mask])
        out[mask] = -log_p[rows, draws.item[mask], draws.channel[mask]]
    return out


def mean_log_loss(estimator, draws: Interactions, *, smoothing: float = 0.0) -> float:
    """Mean −log p̂_u(i, c) over `draws` (counts as multiplicity), in nats, γ-smoothed."""
    return float(draws.count @ draw_log_losses(estimator, draws, smoothing=smoothing)) / float(draws.count.sum())


@dataclasses.dataclass(eq=False)
class ModelEstimator:
    model: FittedModel
    batch: int = 256  # users per scoring call; a fixed size, so the scorer compiles once

    def log_joint(self, users) -> np.ndarray:
        parts = [s.log_p_consume[..., None] + s.log_p_rating for s in self.model.score_users(users, batch=self.batch)]
        return np.concatenate(parts)


def _cell_counts(draws: Interactions) -> sp.csr_matrix:
    cells = draws.item.astype(np.int64) * draws.n_channels + draws.channel
    return sp.csr_matrix((draws.count.astype(np.float64), (draws.user, cells)),
                         shape=(draws.n_users, draws.n_items * draws.n_channels))


@dataclasses.dataclass(eq=False)
class PerUserEmpirical:
    """Add-α smoothed per-user frequencies; `select` picks α on held-out draws."""

    draws: Interactions
    alpha: float = 1.0

    def __post_init__(self):
        self.counts = _cell_counts(self.draws)
        self.totals = np.asarray(self.counts.sum(axis=1)).ravel()

    def log_joint(self, users) -> np.ndarray:
        d = self.draws
        dense = self.counts[np.asarray(users)].toarray()
        denominator = self.totals[users] + self.alpha * d.n_items * d.n_channels
        return np.log((dense + self.alpha) / denominator[:, None]).reshape(len(users), d.n_items, d.n_channels)

    def select(self, heldout: Interactions, grid=ALPHA_GRID) -> PerUserEmpirical:
        return _select(self, heldout, grid)


@dataclasses.dataclass(eq=False)
class GlobalPopularity:
    """Item popularity (add-α) × global rating histogram (add-one), shared by all users."""

    draws: Interactions
    alpha: float = 1.0

    def __post_init__(self):
        d = self.draws
        total = float(d.count.sum())
        items = np.bincount(d.item, weights=d.count, minlength=d.n_items)
        ratings = np.bincount(d.channel, weights=d.count, minlength=d.n_channels)
        self.log_table = (np.log((items + self.alpha) / (total + self.alpha * d.n_items))[:, None]
                          + np.log((ratings + 1.0) / (total + d.n_channels))[None, :])

    def log_joint(self, users) -> np.ndarray:
        return np.broadcast_to(self.log_table, (len(users),) + self.log_table.shape)

    def select(self, heldout: Interactions, grid=ALPHA_GRID) -> GlobalPopularity:
        return _select(self, heldout, grid)


def _select(estimator, heldout: Interactions, grid):
    """The estimator refit with the α of `grid` that minimises the held-out log-loss."""
    losses = [mean_log_loss(dataclasses.replace(estimator, alpha=a), heldout) for a in grid]
    return dataclasses.replace(estimator, alpha=grid[int(np.argmin(losses))])
