"""The benchmark's datasets: ML-100K itself, and synthetic data shaped like ML-1M and ML-20M.

A shaped synthetic keeps what the cost of a training epoch depends on: users, items, channels,
the number of interactions and their skew (per-user lengths log-normal with a floor of 20, as
MovieLens keeps users with at least 20 ratings; items Zipf-like by popularity). Ratings follow
item quality plus noise. It is not a model of MovieLens' preferences: use it for timing only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.data.loaders import load_dataset


@dataclasses.dataclass(frozen=True)
class Shape:
    """A dataset shape of the benchmark."""

    name: str
    n_users: int
    n_items: int
    n_interactions: int  # target; the shaped synthetic lands slightly below after de-duplication
    n_channels: int


SHAPES = {
    "ml-100k": Shape("ml-100k", 943, 1682, 100_000, 5),  # the real data, read from --data-dir
    "ml-1m-shape": Shape("ml-1m-shape", 6040, 3706, 1_000_209, 5),
    "ml-20m-shape": Shape("ml-20m-shape", 136_677, 20_108, 10_000_000, 10),
}


def load_shape(name: str, *, data_dir=None, seed: int = 0) -> Interactions:
    """The interactions of shape `name`; ml-100k reads `data_dir / "ml-100k"`."""
    if name not in SHAPES:
        raise ValueError(f"unknown benchmark shape {name!r}; expected one of {sorted(SHAPES)}")
    if name == "ml-100k":
        if data_dir is None:
            raise ValueError("the ml-100k shape is the real dataset: pass data_dir (the folder holding ml-100k/)")
        return load_dataset("ml-100k", Path(data_dir) / "ml-100k").train
    return shaped_synthetic(SHAPES[name], seed=seed)


def shaped_synthetic(shape: Shape, *, seed: int = 0, min_per_user: int = 20) -> Interactions:
    """About `shape.n_interactions` distinct (user, item) pairs with one rating channel each."""
    rng = np.random.default_rng(seed)
    mean_extra = shape.n_interactions / shape.n_users - min_per_user
    raw = rng.lognormal(0.0, 1.0, shape.n_users)
    lengths = min_per_user + np.floor(raw / raw.mean() * mean_extra).astype(np.int64)
    lengths = np.minimum(lengths, shape.n_items // 2)
    popularity = 1.0 / np.arange(1, shape.n_items + 1) ** 0.9
    popularity = rng.permutation(popularity / popularity.sum())
    # Oversample, de-duplicate per user, then keep each user's first `length` distinct items.
    draws = np.repeat(np.arange(shape.n_users), (lengths * 2.0).astype(np.int64) + 10)
    items = rng.choice(shape.n_items, size=draws.size, p=popularity)
    pair = np.sort(draws.astype(np.int64) * shape.n_items + items)
    pair = pair[np.concatenate([[True], pair[1:] != pair[:-1]])]  # np.unique, without its slow hash pass
    user, item = pair // shape.n_items, pair % shape.n_items
    # Each user keeps `length` of their distinct items, chosen at random (not the smallest ids).
    order = np.lexsort((rng.random(user.size), user))
    user, item = user[order], item[order]
    rank = np.arange(user.size) - np.searchsorted(user, user)
    keep = rank < lengths[user]
    user, item = user[keep], item[keep]
    quality = rng.normal(0.0, 1.0, shape.n_items)
    score = quality[item] + rng.normal(0.0, 1.0, item.size)
    cuts = np.quantile(score, np.linspace(0, 1, shape.n_channels + 1)[1:-1])
    channel = np.searchsorted(cuts, score)
    values = tuple(float(v) for v in range(1, shape.n_channels + 1))
    return Interactions.build(user, item, channel, n_users=shape.n_users, n_items=shape.n_items, channel_values=values)
