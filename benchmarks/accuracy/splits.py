"""The comparison's splits: the explicit settings (fixed, ML-100K u1, seeded 90/10) with their
validation pairs, and strong generalization (Liang et al. 2018) with Conv4Rec's full-rating view
of the same users (docs/model.md, Protocols)."""

from __future__ import annotations

import dataclasses

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.data.loaders import load_dataset
from convae_jax.data.splits import (
    UserSplit,
    holdout_interactions,
    holdout_per_user,
    holdout_users,
)
from convae_jax.data.table import RatingsTable, load_random_exposure
from convae_jax.errors import ConvaeError

# Coat's test ratings come from random exposure: its setting is scored by the random-exposure protocol
# (`evaluate.random_exposure_protocol`), as is a dataset of one's own given as a self-selected
# ratings file and a randomly exposed test file (`data.load_random_exposure`).
RANDOM_EXPOSURE = "random-exposure"
EXPLICIT_SETTINGS = {"ml-100k": ("u1", "random-90/10"), "ml-latest-small": ("random-90/10",),
                     "douban": ("fixed",), "coat": (RANDOM_EXPOSURE,)}
IMPLICIT_USERS = {"ml-100k": (100, 150), "ml-latest-small": (60, 100), "douban": (300, 300)}  # (validation, test) users held out
CLICK_THRESHOLD = 3.5  # ratings >= this are clicks, as in the Mult-VAE notebook
MIN_USER_CLICKS = 5  # the notebook's min_uc: users with fewer clicks are dropped from the implicit data
VALIDATION_FRACTION = 0.05  # share of the training pairs that selects grid points and epochs (explicit task)
RATING_TARGET_SEED_OFFSET = 104729  # the held-out users' rating targets: a stream apart from the user split's
QUICK_USERS = 30  # quick mode holds out at most this many validation and test users each


def ml100k_u1(data: Interactions) -> tuple[Interactions, Interactions]:
    """(u1.base, u1.test) rebuilt from `u.data`: GroupLens' `mku.sh` makes u1.test the first 20,000
    lines of `u.data` (sorted, which changes no pair) and u1.base the other 80,000. Only `u.data`
    ships here; this needs `data` in file order, as `load_dataset` returns it."""
    if data.nnz != 100_000:
        raise ConvaeError(f"u1 is defined on the 100,000 lines of ML-100K's u.data, got {data.nnz} interactions")
    test = np.zeros(data.nnz, bool)
    test[:20_000] = True
    return data.subset(~test), data.subset(test)


def explicit_split(dataset: str, protocol: str, data_dir, *, seed: int,
                   table: RatingsTable | None = None) -> tuple[Interactions, Interactions]:
    """(train, test) of an explicit setting; `seed` only moves the random 90/10 split. With
    `table` (one's own self-selected ratings and randomly exposed test file), its two files."""
    loaded = load_random_exposure(table) if table is not None else load_dataset(dataset, data_dir)
    if protocol in ("fixed", RANDOM_EXPOSURE):
        if loaded.test is None:
            raise ConvaeError(f"{dataset} ships no fixed split")
        return loaded.train, loaded.test
    if protocol == "u1":
        return ml100k_u1(loaded.train)
    if protocol == "random-90/10":
        return holdout_interactions(loaded.train, fraction=0.1, seed=seed)
    raise ConvaeError(f"unknown explicit protocol {protocol!r}")


@dataclasses.dataclass(frozen=True)
class ExplicitSplit:
    train: Interactions  # everything a model may read at test time
    fit_part: Interactions  # train minus validation: what weights are fitted on
    validation: Interactions
    test: Interactions
    random_exposure: bool = False  # the test pairs were shown at random: scored by `evaluate.random_exposure_protocol`


def make_explicit_split(train: Interactions, test: Interactions, *, seed: int, random_exposure: bool = False) -> ExplicitSplit:
    fit_part, validation = holdout_interactions(train, fraction=VALIDATION_FRACTION, seed=seed + 7919)
    return ExplicitSplit(train, fit_part, validation, test, random_exposure)


@dataclasses.dataclass(frozen=True)
class StrongSplit:
    """Strong generalization on one dataset: `clicks` is the peers' split (UserSplit over ratings
    >= CLICK_THRESHOLD); `ratings_train` and the `*_ratings_fold_in` sets give Conv4Rec the same
    users with their full ratings (the targets are the same clicks). The `*_rating_history` and
    `*_rating_target` sets score the same trained models on the held-out users' ratings: a seeded
    20% of each held-out user's full-rating fold-in is held out, the rest folded in."""

    clicks: UserSplit
    ratings_train: Interactions
    val_ratings_fold_in: Interactions
    test_ratings_fold_in: Interactions
    val_rating_history: Interactions
    val_rating_target: Interactions
    test_rating_history: Interactions
    test_rating_target: Interactions


def strong_split(data: Interactions, *, n_val_users: int, n_test_users: int, seed: int) -> StrongSplit:
    """Clicks = ratings >= CLICK_THRESHOLD of users with >= MIN_USER_CLICKS clicks; whole users held
    out and their clicks split 80/20 into fold-in and target (`holdout_users`). The full-rating view
    keeps every rating of the training users, and of each held-out user every rating except the
    target pairs, on items seen in the clicks' training part (as the notebook drops unseen items);
    that fold-in is split 80/20 again per user (`holdout_per_user`) for the held-out users' ratings."""
    liked = data.ratings >= CLICK_THRESHOLD
    per_user = np.bincount(data.user[liked], minlength=data.n_users)
    clicks = data.subset(liked & (per_user[data.user] >= MIN_USER_CLICKS))
    split = holdout_users(clicks, n_val_users=n_val_users, n_test_users=n_test_users, seed=seed)
    held_out = np.union1d(np.unique(split.val_fold_in.user), np.unique(split.test_fold_in.user))
    seen_items = np.zeros(data.n_items, bool)
    seen_items[split.train.item] = True

    def ratings_fold_in(fold_in: Interactions, target: Interactions) -> Interactions:
        users = np.unique(np.concatenate([fold_in.user, target.user]))
        is_target = np.isin(_pair_keys(data), _pair_keys(target))
        return data.subset(np.isin(data.user, users) & seen_items[data.item] & ~is_target)

    val_ratings = ratings_fold_in(split.val_fold_in, split.val_target)
    test_ratings = ratings_fold_in(split.test_fold_in, split.test_target)
    return StrongSplit(split, data.subset(~np.isin(data.user, held_out)), val_ratings, test_ratings,
                       *holdout_per_user(val_ratings, seed=seed + RATING_TARGET_SEED_OFFSET),
                       *holdout_per_user(test_ratings, seed=seed + RATING_TARGET_SEED_OFFSET))


def dataset_strong_split(dataset: str, data: Interactions, *, seed: int, quick: bool = False) -> StrongSplit:
    """The comparison's strong-generalization split of `dataset` (its `IMPLICIT_USERS` held out;
    at most QUICK_USERS of each in quick mode), shared with the accuracy controls."""
    n_val, n_test = IMPLICIT_USERS[dataset]
    if quick:
        n_val, n_test = min(n_val, QUICK_USERS), min(n_test, QUICK_USERS)
    return strong_split(data, n_val_users=n_val, n_test_users=n_test, seed=seed)


def task_split(dataset: str, protocol: str | None, data_dir, *, seed: int, quick: bool,
               table: RatingsTable | None = None) -> ExplicitSplit | StrongSplit:
    """The split of one task: an explicit `protocol`, or strong generalization (`protocol` None);
    `table`: one's own random-exposure files (`explicit_split`)."""
    if protocol:
        return make_explicit_split(*explicit_split(dataset, protocol, data_dir, seed=seed, table=table), seed=seed,
                                   random_exposure=protocol == RANDOM_EXPOSURE)
    return dataset_strong_split(dataset, load_dataset(dataset, data_dir).train, seed=seed, quick=quick)


def as_clicks(data: Interactions) -> Interactions:
    """The same interactions on a single channel (every interaction a click)."""
    return dataclasses.replace(data, channel=np.zeros(data.nnz, np.int32), channel_values=(1.0,))


def _pair_keys(data: Interactions) -> np.ndarray:
    return data.user.astype(np.int64) * data.n_items + data.item
