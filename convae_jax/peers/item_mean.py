"""Item mean with shrinkage, as a rating distribution: the per-item rating histogram smoothed
toward the global one. The simplest rating floor that still has an NLL."""

from __future__ import annotations

import dataclasses

import numpy as np

from convae_jax.data.interactions import Interactions


@dataclasses.dataclass(frozen=True)
class ItemMeanShrunk:
    """P(c | i) = (n_ic + k · p_c) / (n_i + k), p_c the global rating histogram, k = `shrinkage`.

    Its expected rating Σ_c v_c P(c | i) = (Σ_{u∈i} r_ui + k · μ) / (n_i + k) is exactly the
    item mean shrunk toward the global mean μ with k pseudo-ratings (Koren 2008, §2.1 style
    damping). Users do not enter: it scores (u, i) by the item alone.
    """

    log_probs: np.ndarray  # (n_items, C) log P(c | i)

    @classmethod
    def fit(cls, train: Interactions, *, shrinkage: float = 5.0) -> "ItemMeanShrunk":
        if shrinkage <= 0:
            raise ValueError(f"shrinkage must be > 0 (it keeps P(c | i) > 0), got {shrinkage}")
        counts = np.zeros((train.n_items, train.n_channels))
        np.add.at(counts, (train.item, train.channel), train.count)
        prior = counts.sum(axis=0) / counts.sum()
        smoothed = counts + shrinkage * prior
        return cls(np.log(smoothed / smoothed.sum(axis=1, keepdims=True)))

    def rating_log_probs(self, users, items) -> np.ndarray:
        """log P(rating = v_c | i), (P, C); `users` only sets the number of pairs."""
        return self.log_probs[np.asarray(items)]
