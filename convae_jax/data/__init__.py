"""Data: the `Interactions` container, loaders, one's own ratings table, splits, sparse batches, a synthetic truth."""

from convae_jax.data.batches import RowBatch, RowMatrix, entry_budget, iterate_batches
from convae_jax.data.interactions import Interactions
from convae_jax.data.loaders import (
    DATASETS,
    Dataset,
    load_coat,
    load_dataset,
    load_douban,
    load_movielens,
    load_ratings_table,
)
from convae_jax.data.splits import (
    UserSplit,
    holdout_interactions,
    holdout_per_user,
    holdout_users,
)
from convae_jax.data.synthetic import SyntheticTruth
from convae_jax.data.table import RatingsTable, load_random_exposure

__all__ = [
    "DATASETS", "Dataset", "Interactions", "RatingsTable", "RowBatch", "RowMatrix", "SyntheticTruth", "UserSplit",
    "entry_budget", "holdout_interactions", "holdout_per_user", "holdout_users", "iterate_batches", "load_coat",
    "load_dataset", "load_douban", "load_movielens", "load_random_exposure", "load_ratings_table",
]
