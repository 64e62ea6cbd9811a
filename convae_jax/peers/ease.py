"""EASE (Steck 2019): the closed-form item-item linear autoencoder with a zero diagonal."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.rank import seen_mask


def click_gram(train: Interactions) -> np.ndarray:
    """XᵀX of the binary user × item click matrix (counts and rating values are ignored)."""
    x = seen_mask(np.unique(train.user), train, train.n_items).astype(np.float64)
    return x.T @ x


def user_histories(history: Interactions, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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
    def fit(cls, train: Interactions, *, l2: float = 500.0) -> EASE:
        if l2 <= 0:
            raise ValueError(f"EASE needs l2 > 0 to make XᵀX + λI invertible, got {l2}")
        gram = click_gram(train)
        gram[np.diag_indices_from(gram)] += l2
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        return cls(b.astype(np.float32))

    def fold_in_scores(self, history: Interactions, *, batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(users (b,), scores x_u B (b, n_items)) for every user of `history`."""
        for users, x in user_histories(history, batch):
            yield users, x @ self.weights
