"""Sparse row batches of fixed shape: rows packed greedily under a row cap and an entry budget.

A model row is a user (user orientation) or an item (item orientation); its entries are the
(column, channel, count) triples observed for it. Every batch has the same shapes, so the train
step compiles once: `row` (B,), `row_mask` (B,), and per entry `segment` (T,) ∈ [0, B] (B marks
padding), `col`, `channel`, `count` (T,) with count 0 on padding. A matrix built from separate
inputs and targets (`RowMatrix.from_inputs_and_targets`) also carries `target` (T,): the counts
the loss scores, while `count` is what the encoder reads.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator, NamedTuple

import numpy as np

from convae_jax.data.interactions import Interactions


class RowBatch(NamedTuple):
    row: np.ndarray  # (B,) int32 row index, 0 on padding rows
    row_mask: np.ndarray  # (B,) float32, 1 for real rows
    segment: np.ndarray  # (T,) int32 position of the entry's row in the batch, B on padding
    col: np.ndarray  # (T,) int32
    channel: np.ndarray  # (T,) int32
    count: np.ndarray  # (T,) float32, 0 on padding
    target: np.ndarray | None = None  # (T,) float32 counts the loss scores when they differ from `count`; None: `count`


@dataclasses.dataclass(frozen=True)
class RowMatrix:
    """Interactions in compressed sparse rows for one orientation."""

    indptr: np.ndarray  # (n_rows + 1,) int64
    col: np.ndarray
    channel: np.ndarray
    count: np.ndarray
    n_rows: int
    n_cols: int
    target: np.ndarray | None = None  # counts the loss scores, when separate from the input `count`

    @classmethod
    def from_interactions(cls, data: Interactions, *, orientation: str) -> "RowMatrix":
        rows, cols = (data.user, data.item) if orientation == "user" else (data.item, data.user)
        n_rows, n_cols = (data.n_users, data.n_items) if orientation == "user" else (data.n_items, data.n_users)
        order = np.lexsort((cols, rows))
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return cls(indptr, cols[order].astype(np.int32), data.channel[order].astype(np.int32),
                   data.count[order].astype(np.float32), n_rows, n_cols)

    @classmethod
    def from_inputs_and_targets(cls, inputs: Interactions, targets: Interactions, *, orientation: str) -> RowMatrix:
        """One matrix holding both sets as separate entries: an input entry has `count` = its count
        and `target` = 0, a target entry the reverse. The encoder reads only inputs (a zero count
        adds nothing to the embedding bag or to the L2 input norm), the loss only targets."""
        both = inputs.concat(targets)
        is_target = np.concatenate([np.zeros(inputs.nnz, bool), np.ones(targets.nnz, bool)])
        rows, cols = (both.user, both.item) if orientation == "user" else (both.item, both.user)
        order = np.lexsort((cols, rows))
        merged = cls.from_interactions(both, orientation=orientation)
        count = np.where(is_target, 0.0, both.count)[order].astype(np.float32)
        target = np.where(is_target, both.count, 0.0)[order].astype(np.float32)
        return dataclasses.replace(merged, count=count, target=target)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


def entry_budget(lengths: np.ndarray, batch_rows: int) -> int:
    """Entries per batch: room for `batch_rows` rows of 1.25x mean length, and for the longest row."""
    mean = float(lengths.mean()) if lengths.size else 1.0
    return entry_budget_of(mean=mean, longest=int(lengths.max(initial=1)), batch_rows=batch_rows)


def entry_budget_of(*, mean: float, longest: int, batch_rows: int) -> int:
    """`entry_budget` from the mean and the longest row length, rounded up to a multiple of 128."""
    budget = max(longest, int(np.ceil(1.25 * batch_rows * mean)), 1)
    return int(-(-budget // 128) * 128)


def batch_bounds(lengths: np.ndarray, *, batch_rows: int, budget: int) -> Iterator[tuple[int, int]]:
    """[start, stop) of each batch when rows of these `lengths`, in this order, are packed greedily:
    a batch closes at `batch_rows` rows or before the row that would pass `budget` entries."""
    start = 0
    while start < len(lengths):
        stop, used = start, 0
        while stop < len(lengths) and stop - start < batch_rows and used + lengths[stop] <= budget:
            used += lengths[stop]
            stop += 1
        if stop == start:
            raise ValueError(f"the row at position {start} of the order has {lengths[start]} entries, over the budget {budget}")
        yield start, stop
        start = stop


def iterate_batches(matrix: RowMatrix, rows: np.ndarray, *, batch_rows: int, budget: int) -> Iterator[RowBatch]:
    """Packs `rows`, in the given order, into fixed-shape batches."""
    for start, stop in batch_bounds(matrix.lengths[rows], batch_rows=batch_rows, budget=budget):
        yield _pack(matrix, rows[start:stop], batch_rows, budget)


def iterate_sharded_batches(matrix: RowMatrix, rows: np.ndarray, *, batch_rows: int, budget: int,
                            shards: int) -> Iterator[RowBatch]:
    """Packs `rows` into batches of `shards` equal parts, one per device of a mesh's data axis:
    part j holds at most batch_rows / shards rows and `budget` entries, and is rows
    [j·B/shards, (j+1)·B/shards) and entries [j·budget, (j+1)·budget) of the batch, whose
    `segment` values stay positions in the whole batch (B marks padding). One shard: the batches of
    `iterate_batches` themselves."""
    if shards == 1:
        yield from iterate_batches(matrix, rows, batch_rows=batch_rows, budget=budget)
        return
    per_shard = batch_rows // shards
    parts = iterate_batches(matrix, rows, batch_rows=per_shard, budget=budget)
    empty = padding_batch(per_shard, budget, with_target=matrix.target is not None)
    while group := list(itertools.islice(parts, shards)):
        yield join_parts(group + [empty] * (shards - len(group)), batch_rows=batch_rows)


def padding_batch(batch_rows: int, budget: int, *, with_target: bool = False) -> RowBatch:
    """A batch of no rows: row_mask 0, every entry's segment `batch_rows` and count 0, so the loss
    ignores all of it."""
    segment = np.full(budget, batch_rows, np.int32)
    zeros = [np.zeros(budget, dt) for dt in (np.int32, np.int32, np.float32)]
    return RowBatch(np.zeros(batch_rows, np.int32), np.zeros(batch_rows, np.float32), segment, *zeros,
                    target=np.zeros(budget, np.float32) if with_target else None)


def join_parts(parts: list[RowBatch], *, batch_rows: int, first_part: int = 0) -> RowBatch:
    """Parts first_part, first_part+1, ... of a batch of `batch_rows` rows (each part a batch of its
    own, with batch_rows / shards rows), laid end to end: `segment` becomes the position in the
    whole batch, `batch_rows` on padding. All parts (`first_part` 0) make the whole batch; a run of
    them, one process's piece of it."""
    per_part = len(parts[0].row)
    segment = [np.where(p.segment == per_part, batch_rows, p.segment + (first_part + j) * per_part)
               for j, p in enumerate(parts)]
    target = None if parts[0].target is None else np.concatenate([p.target for p in parts])
    return RowBatch(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("row", "row_mask")),
                    np.concatenate(segment).astype(np.int32),
                    *(np.concatenate([getattr(p, f) for p in parts]) for f in ("col", "channel", "count")),
                    target=target)


def _pack(matrix: RowMatrix, rows: np.ndarray, batch_rows: int, budget: int) -> RowBatch:
    lengths = matrix.lengths[rows]
    n = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    entries = np.arange(n) + np.repeat(matrix.indptr[rows] - offsets, lengths)
    segment = np.full(budget, batch_rows, np.int32)
    segment[:n] = np.repeat(np.arange(len(rows), dtype=np.int32), lengths)
    col, channel, count = (np.zeros(budget, dt) for dt in (np.int32, np.int32, np.float32))
    col[:n], channel[:n], count[:n] = matrix.col[entries], matrix.channel[entries], matrix.count[entries]
    target = None
    if matrix.target is not None:
        target = np.zeros(budget, np.float32)
        target[:n] = matrix.target[entries]
    row = np.zeros(batch_rows, np.int32)
    row[: len(rows)] = rows
    row_mask = np.zeros(batch_rows, np.float32)
    row_mask[: len(rows)] = 1.0
    return RowBatch(row, row_mask, segment, col, channel, count, target)
