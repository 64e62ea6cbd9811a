"""Popularity: every user gets the items ranked by training frequency, the implicit floor."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from convae_jax.data.interactions import Interactions


@dataclasses.dataclass(frozen=True)
class Popularity:
    item_counts: np.ndarray  # (n_items,) training interactions per item

    @classmethod
    def fit(cls, train: Interactions):
        return cls(np.bincount(train.item, weights=train.count, minlength=train.n_items))

    def consumption_scores(self, users, *, batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        users = np.asarray(users)
        for start in range(0, users.size, batch):
            chunk = users[start:start + batch]
            yield chunk, np.broadcast_to(self.item_counts, (chunk.size, self.item_counts.size)).astype(np.float64)
