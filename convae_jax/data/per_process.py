"""Per-process input from a prepared layout: each process reads only its own row groups.

A batch of B rows is cut into D parts, one per device of the mesh's data axis (as
`iterate_sharded_batches` lays it out: part j is rows [j·B/D, (j+1)·B/D) and entries
[j·budget, (j+1)·budget)). Each epoch the row groups are shuffled with the shared seed and dealt
to the parts round-robin, group g of the shuffled order to part g mod D; part j's rows come from
its groups only, one group at a time, each group's rows in an order drawn from (seed, epoch,
group). Process p of P holds parts [p·D/P, (p+1)·D/P) and reads only their groups. So the global
batch of a step depends on D and the seed, not on how the parts are spread over processes: one
process with 4 devices builds the same batches as 2 processes with 2 devices each.

A part that runs out of rows before the others gets padding (`padding_batch`: row_mask 0,
segment B, count 0), which the loss ignores. Every process must run the same number of steps:
`local_steps` is this process's count, and the steps of the epoch are the largest over all
processes (a reduction the caller does, e.g. `multihost_utils.process_allgather`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from convae_jax.data.batches import RowBatch, RowMatrix, batch_bounds, iterate_batches, join_parts, padding_batch
from convae_jax.data.prepared import PreparedLayout
from convae_jax.errors import ConvaeError


def deal_groups(n_groups: int, *, parts: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The row groups of each of `parts` batch parts this epoch: a permutation drawn from
    (seed, epoch), dealt round-robin. The same on every process."""
    order = np.random.default_rng([seed, epoch]).permutation(n_groups)
    return [order[j::parts] for j in range(parts)]


def row_order(n_rows: int, *, seed: int, epoch: int, group: int) -> np.ndarray:
    """The order in which a group's rows are packed this epoch."""
    return np.random.default_rng([seed, epoch, group]).permutation(n_rows)


@dataclasses.dataclass(frozen=True)
class PreparedTraining:
    """What `train.fit` reads from a prepared layout: its "train" part, of whose entries those
    that `keep(row, col)` accepts (the others are held out for validation or test)."""

    layout: PreparedLayout
    keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


class ProcessInput:
    """Process `process_index` of `process_count`'s share of a prepared layout's part.

    `parts` is the size D of the mesh's data axis (a multiple of `process_count`), `batch_rows`
    the global batch's rows B (a multiple of D), `budget` the entries of one part (default: the
    layout's `entry_budget` for B/D rows, as training computes it). `reads` logs every row group
    read, as (group, rows read).
    """

    def __init__(self, layout: PreparedLayout, *, process_index: int, process_count: int, parts: int, seed: int,
                 batch_rows: int, budget: int | None = None, part: str = "train", keep=None):
        if not 0 <= process_index < process_count:
            raise ConvaeError(f"process index {process_index} outside 0..{process_count - 1}")
        if parts % process_count:
            raise ConvaeError(f"{parts} data-parallel devices cannot be split evenly over {process_count} processes")
        if batch_rows % parts:
            raise ConvaeError(f"train.batch_rows={batch_rows} is not a multiple of the {parts} data-parallel devices")
        self.layout, self.part, self.seed = layout, part, seed
        self.process_index, self.process_count, self.parts, self.batch_rows = process_index, process_count, parts, batch_rows
        self.rows_per_part = batch_rows // parts
        self.budget = layout.entry_budget(part, self.rows_per_part) if budget is None else budget
        self.group_rows = layout.group_rows(part)
        self.own_parts = range(process_index * parts // process_count, (process_index + 1) * parts // process_count)
        self.keep = keep  # keep(row, col) -> bool per entry: the entries read (default all); a row left empty is skipped
        self.reads: list[tuple[int, int]] = []
        self._source = None

    def own_groups(self, epoch: int) -> list[np.ndarray]:
        """The row groups of each of this process's parts this epoch."""
        dealt = deal_groups(len(self.group_rows), parts=self.parts, seed=self.seed, epoch=epoch)
        return [dealt[j] for j in self.own_parts]

    def local_steps(self, epoch: int) -> int:
        """Batches this process's fullest part makes this epoch (reads only the `length` column
        of its own groups)."""
        steps = 0
        for groups in self.own_groups(epoch):
            part_steps = 0
            for group in groups:
                if self.keep is None:
                    lengths = self._read(group, columns=["length"]).column("length").to_numpy()
                else:
                    lengths = np.diff(self._group_matrix(group)[1].indptr)
                order = row_order(len(lengths), seed=self.seed, epoch=epoch, group=group)
                part_steps += sum(1 for _ in batch_bounds(lengths[order], batch_rows=self.rows_per_part,
                                                          budget=self.budget))
            steps = max(steps, part_steps)
        return steps

    def batches(self, epoch: int, *, steps: int) -> Iterator[RowBatch]:
        """Exactly `steps` pieces of global batches: this process's parts laid end to end
        (`join_parts`), `row` in the layout's row index and `segment` in global batch positions,
        padding where a part has run out. ValueError when a part has more than `steps` batches."""
        streams = [self._part_batches(groups, epoch) for groups in self.own_groups(epoch)]
        empty = padding_batch(self.rows_per_part, self.budget)
        for _ in range(steps):
            parts = [next(stream, empty) for stream in streams]
            yield join_parts(parts, batch_rows=self.batch_rows, first_part=self.own_parts.start)
        if any(next(stream, None) is not None for stream in streams):
            raise ValueError(f"epoch {epoch} has more than {steps} steps on process {self.process_index}; "
                             "give the largest `local_steps` over all processes")

    def _part_batches(self, groups: np.ndarray, epoch: int) -> Iterator[RowBatch]:
        """One part's batches: its groups in order, each group's rows packed in `row_order`."""
        for group in groups:
            rows, matrix = self._group_matrix(group)
            order = row_order(len(rows), seed=self.seed, epoch=epoch, group=group)
            order = order[matrix.lengths[order] > 0]  # rows whose every entry was filtered out
            for batch in iterate_batches(matrix, order, batch_rows=self.rows_per_part, budget=self.budget):
                yield batch._replace(row=np.where(batch.row_mask > 0, rows[batch.row], 0).astype(np.int32))

    def _group_matrix(self, group) -> tuple[np.ndarray, RowMatrix]:
        """(the group's rows in the layout's index, its entries as a CSR over those rows), `keep` applied."""
        table = self._read(group)
        rows = table.column("row").to_numpy()
        lists = {name: table.column(name).combine_chunks() for name in ("col", "channel", "count")}
        indptr = lists["col"].offsets.to_numpy().astype(np.int64)
        col, channel, count = (lists[name].values.to_numpy(zero_copy_only=False) for name in ("col", "channel", "count"))
        if self.keep is not None:
            position = np.repeat(np.arange(len(rows)), np.diff(indptr))
            kept = self.keep(rows[position], col)
            indptr = np.concatenate([[0], np.cumsum(np.bincount(position[kept], minlength=len(rows)))])
            col, channel, count = col[kept], channel[kept], count[kept]
        return rows, RowMatrix(indptr, col, channel, count, n_rows=len(rows), n_cols=self.layout.n_cols)

    def _read(self, group, columns=None):
        if self._source is None:
            self._source = self.layout.parquet(self.part)
        table = self._source.read_row_group(int(group), columns=columns)
        self.reads.append((int(group), len(table)))
        return table


def global_batch(piece: RowBatch, sharding, *, process_count: int) -> RowBatch:
    """The global batch as jax Arrays split by `sharding` (the mesh's batch sharding), built
    from every process's piece with `jax.make_array_from_process_local_data`. The mesh must list
    the data axis's devices process by process, process p's after p−1's (as `jax.make_mesh` does),
    so that process p's devices hold its piece; ConvaeError otherwise."""
    import jax

    rows = len(piece.row) * process_count
    covered = {(index[0].start or 0, index[0].stop or rows)
               for index in sharding.addressable_devices_indices_map((rows,)).values()}
    process_index = jax.process_index()
    expected = (process_index * rows // process_count, (process_index + 1) * rows // process_count)
    if (min(covered)[0], max(covered)[1]) != expected:
        raise ConvaeError(f"process {process_index}'s devices hold batch rows {sorted(covered)}, not its piece "
                          f"{expected}: order the mesh's data axis by process")
    return RowBatch(*(None if field is None else
                      jax.make_array_from_process_local_data(sharding, field, (len(field) * process_count,))
                      for field in piece))
