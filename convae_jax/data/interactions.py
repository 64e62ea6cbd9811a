"""The `Interactions` container: (user, item, channel, count) triples over fixed index spaces."""

from __future__ import annotations

import dataclasses

import numpy as np

from convae_jax.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """Observed interactions `(u, i, c)` with multiplicity (docs/model.md, "Data").

    Indices are dense (`0..n_users-1`, `0..n_items-1`, `0..n_channels-1`); `user_ids` and
    `item_ids` map them back to the raw ids of the source file. Channel `c` means "rated
    `channel_values[c]`". Subsets made by splits keep the full index spaces, so a model
    trained on one part can score another.
    """

    user: np.ndarray  # (nnz,) int32
    item: np.ndarray  # (nnz,) int32
    channel: np.ndarray  # (nnz,) int32
    count: np.ndarray  # (nnz,) float32, > 0
    n_users: int
    n_items: int
    channel_values: tuple[float, ...]
    user_ids: np.ndarray  # (n_users,) raw ids
    item_ids: np.ndarray  # (n_items,) raw ids

    def __post_init__(self):
        for name in ("user", "item", "channel", "count"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                raise DataError(f"Interactions.{name} must be a 1-D numpy array")
            if arr.shape != self.user.shape:
                raise DataError(f"Interactions.{name} has {arr.shape[0]} entries, user has {self.user.shape[0]}")
        checks = [
            (self.n_users >= 1 and self.n_items >= 1, "n_users and n_items must be >= 1"),
            (len(self.channel_values) >= 1, "at least one channel is needed"),
            (list(self.channel_values) == sorted(set(self.channel_values)), "channel_values must be strictly increasing"),
            (len(self.user_ids) == self.n_users, "user_ids must have n_users entries"),
            (len(self.item_ids) == self.n_items, "item_ids must have n_items entries"),
        ]
        if self.nnz:
            checks += [
                (0 <= self.user.min() and self.user.max() < self.n_users, "user index out of range"),
                (0 <= self.item.min() and self.item.max() < self.n_items, "item index out of range"),
                (0 <= self.channel.min() and self.channel.max() < self.n_channels, "channel index out of range"),
                (bool(np.all(np.isfinite(self.count)) and np.all(self.count > 0)), "counts must be finite and > 0"),
            ]
        for ok, message in checks:
            if not ok:
                raise DataError(message)

    @classmethod
    def build(cls, user, item, channel, count=None, *, n_users, n_items, channel_values, user_ids=None, item_ids=None):
        """Builds and validates, casting to the canonical dtypes."""
        user = np.asarray(user, dtype=np.int32)
        count = np.ones(user.shape, np.float32) if count is None else np.asarray(count, dtype=np.float32)
        return cls(
            user=user,
            item=np.asarray(item, dtype=np.int32),
            channel=np.asarray(channel, dtype=np.int32),
            count=count,
            n_users=int(n_users),
            n_items=int(n_items),
            channel_values=tuple(float(v) for v in channel_values),
            user_ids=np.arange(n_users) if user_ids is None else np.asarray(user_ids),
            item_ids=np.arange(n_items) if item_ids is None else np.asarray(item_ids),
        )

    @property
    def nnz(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_channels(self) -> int:
        return len(self.channel_values)

    @property
    def ratings(self) -> np.ndarray:
        """The rating value of each interaction."""
        return np.asarray(self.channel_values, np.float32)[self.channel]

    def subset(self, mask_or_index) -> "Interactions":
        """The interactions selected by a boolean mask or an index array; index spaces unchanged."""
        return dataclasses.replace(
            self,
            user=self.user[mask_or_index],
            item=self.item[mask_or_index],
            channel=self.channel[mask_or_index],
            count=self.count[mask_or_index],
        )

    def concat(self, other: "Interactions") -> "Interactions":
        """Both sets of interactions, on the same index spaces."""
        if (self.n_users, self.n_items, self.channel_values) != (other.n_users, other.n_items, other.channel_values):
            raise DataError("cannot concatenate interactions over different index spaces")
        return dataclasses.replace(
            self,
            user=np.concatenate([self.user, other.user]),
            item=np.concatenate([self.item, other.item]),
            channel=np.concatenate([self.channel, other.channel]),
            count=np.concatenate([self.count, other.count]),
        )

    def user_index(self, raw_id) -> int:
        """Dense index of a raw user id; DataError when unknown."""
        return _lookup(self.user_ids, raw_id, "user")

    def item_index(self, raw_id) -> int:
        """Dense index of a raw item id; DataError when unknown."""
        return _lookup(self.item_ids, raw_id, "item")


def _lookup(ids: np.ndarray, raw_id, kind: str) -> int:
    matches = np.flatnonzero(ids.astype(str) == str(raw_id))
    if matches.size == 0:
        raise DataError(f"unknown {kind} id {raw_id!r}")
    return int(matches[0])
