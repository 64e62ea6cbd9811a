"""The rank-r ridge: the item-item linear autoencoder of every rank and penalty, read from one
eigen-decomposition of XᵀX; the rank sweep's model (docs/results.md, "Why Douban's ranking gap
stays open")."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.peers.ease import click_gram, user_histories


@dataclasses.dataclass(frozen=True)
class GramSpectrum:
    """The eigen-decomposition XᵀX = V diag(σ²) Vᵀ, computed once, from which the ridge model of
    every rank and penalty is read: W_r = V_r diag(σ²/(σ² + λ)) V_rᵀ minimises ‖X − XW‖²_F + λ‖W‖²_F
    over matrices of rank ≤ r (the full-rank ridge solution, truncated to its top r directions).
    Its point is a control for bottleneck width: how close a linear model of Conv4Rec's width d
    comes to the full-rank one on a catalogue."""

    eigenvalues: np.ndarray  # (n_items,) σ², descending
    eigenvectors: np.ndarray  # (n_items, n_items) V, columns in the same order

    @classmethod
    def of(cls, train: Interactions) -> GramSpectrum:
        eigenvalues, eigenvectors = np.linalg.eigh(click_gram(train))
        order = np.argsort(-eigenvalues)
        return cls(np.maximum(eigenvalues[order], 0.0), eigenvectors[:, order])

    def ridge(self, *, rank: int, l2: float) -> RankRidge:
        if not 1 <= rank <= self.eigenvalues.size:
            raise ValueError(f"rank must be in [1, {self.eigenvalues.size}] (the number of items), got {rank}")
        if l2 <= 0:
            raise ValueError(f"the rank-r ridge needs l2 > 0, got {l2}")
        shrink = self.eigenvalues[:rank] / (self.eigenvalues[:rank] + l2)
        return RankRidge(self.eigenvectors[:, :rank].astype(np.float32), shrink.astype(np.float32))


@dataclasses.dataclass(frozen=True)
class RankRidge:
    """W = U diag(shrink) Uᵀ kept in factored form: scoring a user costs O(n_items·r), not O(n_items²)."""

    basis: np.ndarray  # (n_items, r) U, orthonormal columns
    shrink: np.ndarray  # (r,)

    @property
    def weights(self) -> np.ndarray:
        return (self.basis * self.shrink) @ self.basis.T

    def fold_in_scores(self, history: Interactions, *, batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(users (b,), scores x_u W (b, n_items)) for every user of `history`."""
        for users, x in user_histories(history, batch):
            yield users, (x @ self.basis * self.shrink) @ self.basis.T
