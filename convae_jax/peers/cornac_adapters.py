"""Adapters that run Cornac's models (Salah, Truong & Lauw 2020; cornac 3.0.1) on our splits, so
that at least one peer in every table is code nobody here wrote. Cornac is optional: importing
this module without it raises ImportError naming the package."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.rank import seen_mask

try:
    import cornac
except ImportError as err:  # pragma: no cover - exercised only where cornac is absent
    raise ImportError("the Cornac peers need the 'cornac' package (pip install cornac)") from err


def _cornac_train_set(train: Interactions, *, seed: int, binary: bool = False):
    """A cornac Dataset whose raw ids are our dense indices (as strings), and the maps from our
    user and item indices to cornac's (−1 where absent from `train`). `binary`: every value 1,
    as the implicit models' references binarise (Cornac's EASE otherwise factors the ratings)."""
    values = np.ones(train.nnz) if binary else train.ratings.astype(float)
    triples = list(zip(train.user.astype(str), train.item.astype(str), values))
    data = cornac.data.Dataset.from_uir(triples, seed=seed)
    item_map = np.full(train.n_items, -1, np.int64)
    for raw, idx in data.iid_map.items():
        item_map[int(raw)] = idx
    user_map = np.full(train.n_users, -1, np.int64)
    for raw, idx in data.uid_map.items():
        user_map[int(raw)] = idx
    return data, user_map, item_map


@dataclasses.dataclass(eq=False)
class CornacRatingModel:
    """A Cornac rating predictor (e.g. `cornac.models.MF`): r̂_ui from `model.score`, the training
    mean for users or items Cornac never saw, clipped to the rating scale."""

    model: object
    user_map: np.ndarray
    item_map: np.ndarray
    global_mean: float
    scale: tuple[float, float]

    @classmethod
    def fit(cls, model, train: Interactions, *, seed: int = 0) -> "CornacRatingModel":
        data, user_map, item_map = _cornac_train_set(train, seed=seed)
        model.fit(data)
        return cls(model, user_map, item_map, float(train.ratings.mean()),
                   (min(train.channel_values), max(train.channel_values)))

    def predict_ratings(self, users, items) -> np.ndarray:
        u, i = self.user_map[np.asarray(users)], self.item_map[np.asarray(items)]
        out = np.full(u.size, self.global_mean)
        known = (u >= 0) & (i >= 0)
        # MF keeps its factors and biases as arrays; score pairs in one vectorised pass.
        m = self.model
        out[known] = (m.u_factors[u[known]] * m.i_factors[i[known]]).sum(1) + m.u_biases[u[known]] \
            + m.i_biases[i[known]] + m.global_mean
        return np.clip(out, *self.scale)


@dataclasses.dataclass(eq=False)
class CornacFoldIn:
    """A Cornac item-based implicit model scored on users it never saw, from their clicks:
    EASE as x_u B (`model.B`), VAECF as the softmax decoder of the encoder mean of x_u
    (`model.vae`, exactly what `VAECF.score` does for a training user). Items absent from
    Cornac's training set score −inf."""

    model: object
    item_map: np.ndarray

    @classmethod
    def fit(cls, model, train: Interactions, *, seed: int = 0) -> "CornacFoldIn":
        data, _, item_map = _cornac_train_set(train, seed=seed, binary=True)
        model.fit(data)
        return cls(model, item_map)

    def fold_in_scores(self, history: Interactions, *, batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        users = np.unique(history.user)
        known = self.item_map >= 0
        n_cornac = int(known.sum())
        for start in range(0, users.size, batch):
            chunk = users[start:start + batch]
            x = np.zeros((chunk.size, n_cornac), np.float32)
            x[:, self.item_map[known]] = seen_mask(chunk, history, history.n_items)[:, known]
            scores = np.full((chunk.size, history.n_items), -np.inf)
            scores[:, known] = self._score(x)[:, self.item_map[known]]
            yield chunk, scores

    def _score(self, x: np.ndarray) -> np.ndarray:
        if hasattr(self.model, "B"):
            return x @ self.model.B
        import torch

        with torch.no_grad():
            mu, _ = self.model.vae.encode(torch.tensor(x))
            return self.model.vae.decode(mu).numpy()
