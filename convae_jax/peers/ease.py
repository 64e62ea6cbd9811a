"""Closed-form item-item linear autoencoders: EASE (Steck 2019, zero diagonal) and the rank-r ridge
that measures how much rank a catalogue needs (docs/results.md, Douban)."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.rank import seen_mask


def _click_gram(train: Interactions) -> np.ndarray:
    """XᵀX of the binary user × item click matrix (counts and rating values are ignored)."""
    x = seen_mask(np.unique(train.user), train, train.n_items).astype(np.float64)
    return x.T @ x


def _histories(history: Interactions, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(users (b,), their binary histories x_u (b, n_items)) in batches of `batch` users."""
    users = np.unique(history.user)
    for start in range(0, users.size, batch):
        chunk = users[start:start + batch]
        yield chunk, seen_mask(chunk, history, history.n_items).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class EASE:
    """B = argmin ‖X − XB‖²_F + λ‖B‖²_F s.t. diag(B) = 0, solved as P = (XᵀX + λI)⁻¹,
    B = −P / diag(P) (column-wise), diag(B) = 0 (Steck 2019, eq. 8). X is the binary
    user × item click matrix (counts and rating values are ignored). A user's scores are x_u B,
    so new users need no fold-in step. Dense O(n_items²) memory and O(n_items³) time.
    """

    weights: np.ndarray  # (n_items, n_items) B, zero diagonal

    @classmethod
    def fit(cls, train: Interactions, *, l2: float = 500.0) -> "EASE":
        if l2 <= 0:
            raise ValueError(f"EASE needs l2 > 0 to make XᵀX + λI invertible, got {l2}")
        gram = _click_gram(train)
        gram[np.diag_indices_from(gram)] += l2
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        return cls(b.astype(np.float32))

    def fold_in_scores(self, history: Interactions, *, batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(users (b,), scores x_u B (b, n_items)) for every user of `history`."""
        for users, x in _histories(history, batch):
            yield users, x @ self.weights


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
    def of(cls, train: Interactions) -> "GramSpectrum":
        eigenvalues, eigenvectors = np.linalg.eigh(_click_gram(train))
        order = np.argsort(-eigenvalues)
        return cls(np.maximum(eigenvalues[order], 0.0), eigenvectors[:, order])

    def ridge(self, *, rank: int, l2: float) -> "RankRidge":
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
        for users, x in _histories(history, batch):
            yield users, (x @ self.basis * self.shrink) @ self.basis.T
