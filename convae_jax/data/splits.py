"""Seeded splits of the protocols (docs/model.md, "Protocols"): random hold-out of interactions;
hold-out of whole users with fold-in."""

from __future__ import annotations

import dataclasses

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.errors import DataError


def holdout_interactions(data: Interactions, *, fraction: float, seed: int) -> tuple[Interactions, Interactions]:
    """(kept, held): a uniformly random `fraction` of the interactions is held out."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"hold-out fraction must lie in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(data.nnz)
    n_held = int(round(fraction * data.nnz))
    held = np.zeros(data.nnz, bool)
    held[order[:n_held]] = True
    return data.subset(~held), data.subset(held)


def hashed_part(row: np.ndarray, col: np.ndarray, *, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """For each (row, column) pair, the index of the part it falls in: part j with probability
    fractions[j], the rest len(fractions). A seeded hash of the pair (SplitMix64), so that any
    process decides any pair alone, in bounded memory (a prepared layout's hold-outs)."""
    if any(f < 0 for f in fractions) or sum(fractions) >= 1.0:
        raise DataError(f"hold-out fractions must be >= 0 and sum below 1, got {fractions}")
    with np.errstate(over="ignore"):
        z = (row.astype(np.uint64) << np.uint64(32)) ^ col.astype(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    uniform = (z >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.searchsorted(np.cumsum(fractions), uniform, side="right")


@dataclasses.dataclass(frozen=True)
class UserSplit:
    """Strong generalisation (Liang et al. 2018): train users, and held-out users split into fold-in/target."""

    train: Interactions
    val_fold_in: Interactions
    val_target: Interactions
    test_fold_in: Interactions
    test_target: Interactions


def holdout_users(data: Interactions, *, n_val_users: int, n_test_users: int, target_fraction: float = 0.2,
                  min_items: int = 5, seed: int) -> UserSplit:
    """Holds out whole users; of each held-out user with >= `min_items` interactions, a random
    `floor(target_fraction · n)` become the target and the rest the fold-in input (the Mult-VAE
    notebook's `split_train_test_proportion`). Held-out interactions on items never seen in
    training are dropped, as in the reference.
    """
    users = np.unique(data.user)
    if n_val_users + n_test_users >= users.size:
        raise DataError(f"cannot hold out {n_val_users + n_test_users} of {users.size} users")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(users)
    val_users, test_users = shuffled[:n_val_users], shuffled[n_val_users:n_val_users + n_test_users]
    train = data.subset(~np.isin(data.user, shuffled[:n_val_users + n_test_users]))
    seen_items = np.zeros(data.n_items, bool)
    seen_items[train.item] = True
    parts = []
    for group in (val_users, test_users):
        held = data.subset(np.isin(data.user, group) & seen_items[data.item])
        parts += _split_each_user(held, target_fraction, min_items, rng)
    return UserSplit(train, *parts)


def holdout_per_user(data: Interactions, *, target_fraction: float = 0.2, min_items: int = 5,
                     seed: int) -> tuple[Interactions, Interactions]:
    """(history, target): of each user with >= `min_items` interactions, a random
    `floor(target_fraction · n)` are held out as the target, as `holdout_users` does for its
    held-out users; users with fewer keep them all in the history."""
    return tuple(_split_each_user(data, target_fraction, min_items, np.random.default_rng(seed)))


def _split_each_user(data: Interactions, target_fraction: float, min_items: int,
                     rng: np.random.Generator) -> list[Interactions]:
    target = np.zeros(data.nnz, bool)
    order = np.argsort(data.user, kind="stable")
    starts = np.searchsorted(data.user[order], np.unique(data.user))
    for start, stop in zip(starts, list(starts[1:]) + [data.nnz]):
        n = stop - start
        if n >= min_items:
            pick = rng.choice(n, size=int(target_fraction * n), replace=False)
            target[order[start + pick]] = True
    return [data.subset(~target), data.subset(target)]
