"""The prepared layout: a ratings table as Parquet records of whole rows, for input that streams.

`convae prepare` writes a directory holding, per part (`train`, and `test` where the source has a
test file or split), `<part>.parquet`: one record per model row that has entries, sorted by row,
in row groups of exactly `rows_per_group` records (the last one shorter):

    row: int32              the row's index (a user in user orientation, an item in item orientation)
    length: int32           its number of entries, so a reader plans batches without reading the lists
    col, channel: list<int32>, count: list<float32>   its entries, sorted by column

A list array's offsets and values are a CSR matrix, so a row group becomes a `RowMatrix` without
a Python loop per row. `user_ids.parquet` and `item_ids.parquet` hold the raw ids of the index
(one column `id`), and `layout.json` the rest: orientation, shapes, scale, the rows of each row
group, and the source's fingerprint (SHA-256 of how it was read and of its files' bytes).

A text or Parquet table is converted in bounded memory: two passes over the input, `chunk_bytes`
of text (or `chunk_bytes // PARQUET_ROW_BYTES` Parquet rows) at a time, the first collecting the
index, the second spilling entries to bucket files of at most `bucket_entries` entries (or one
longer row), each then sorted and written. The memory bound is the index (the distinct ids and
a count per row) plus one chunk parsed by pandas plus one bucket, whatever the table's length.
Every defect raises the loaders' `DataError` at the file's own line; nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd

from convae_jax.data.batches import entry_budget_of
from convae_jax.data.interactions import Interactions
from convae_jax.data.loaders import (
    MAX_ID,
    MOVIELENS_VARIANTS,
    PLAIN_INTEGER,
    duplicate_pair_error,
    index_of_ids,
    load_dataset,
    movielens_read_args,
    read_ratings_chunks,
)
from convae_jax.data.table import RatingsTable
from convae_jax.errors import ConvaeError, DataError

FORMAT = "convae-prepared"
VERSION = 1
METADATA = "layout.json"
ROWS_PER_GROUP = 1024  # records per Parquet row group: the unit a process reads and the shuffle moves
CHUNK_BYTES = 4 << 20  # text read and parsed at a time by `convae prepare` (about 100 MB of pandas strings)
BUCKET_ENTRIES = 1 << 20  # entries sorted in memory at a time by `convae prepare` (20 MB of spill records)
DENSE_FILES = {"douban": ("training_test_dataset.mat",), "coat": ("train.ascii", "test.ascii")}  # what their loaders read
_SPILL = np.dtype([("row", "<i4"), ("col", "<i4"), ("channel", "<i4"), ("line", "<i8")])


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConvaeError("the prepared layout needs pyarrow: pip install 'convae-jax[parquet]'") from None
    return pa, pq


@dataclasses.dataclass(frozen=True)
class PreparedLayout:
    """A prepared layout on disk, as its `layout.json` describes it."""

    path: Path  # the layout's directory
    orientation: str  # "user": rows are users; "item": rows are items (model.orientation)
    n_users: int
    n_items: int
    channel_values: tuple[float, ...]
    rows_per_group: int
    parts: dict  # part name -> {"file", "nnz", "records", "max_length", "group_rows": [...]}
    id_kinds: dict  # "user"/"item" -> "int" or "text"
    source: dict  # {"name", "read_as", "sha256": {file name: digest}}
    fingerprint: str  # SHA-256 of `source`: which data, read how

    @classmethod
    def open(cls, path) -> PreparedLayout:
        """Reads `layout.json`; ConvaeError naming the file when it is missing or not a layout."""
        path = Path(path)
        meta_path = path / METADATA
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
            return cls(path, meta["orientation"], int(meta["n_users"]), int(meta["n_items"]),
                       tuple(float(v) for v in meta["channel_values"]), int(meta["rows_per_group"]), meta["parts"],
                       meta["id_kinds"], meta["source"], meta["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConvaeError(f"{meta_path}: not a prepared layout ({err})") from None

    @property
    def n_rows(self) -> int:
        return self.n_users if self.orientation == "user" else self.n_items

    @property
    def n_cols(self) -> int:
        return self.n_items if self.orientation == "user" else self.n_users

    def require(self, *, orientation: str, fingerprint: str | None = None) -> None:
        """ConvaeError when this layout was prepared for another orientation or other data."""
        if orientation != self.orientation:
            raise ConvaeError(f"{self.path}: prepared with {self.orientation} rows, the config has "
                              f"model.orientation={orientation!r}; prepare it again with --orientation {orientation}")
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise ConvaeError(f"{self.path}: prepared from other data (fingerprint {self.fingerprint[:12]}, "
                              f"expected {fingerprint[:12]})")

    def part(self, name: str) -> dict:
        if name not in self.parts:
            raise ConvaeError(f"{self.path}: no part {name!r}; it has {sorted(self.parts)}")
        return self.parts[name]

    def group_rows(self, part: str) -> np.ndarray:
        """(n_groups,) records in each row group of `part`."""
        return np.asarray(self.part(part)["group_rows"], np.int64)

    def entry_budget(self, part: str, batch_rows: int) -> int:
        """`entry_budget` of the part's `RowMatrix` (every row of the index counted), from the
        metadata alone."""
        info = self.part(part)
        return entry_budget_of(mean=info["nnz"] / self.n_rows, longest=max(info["max_length"], 1), batch_rows=batch_rows)

    def parquet(self, part: str):
        """The part's `pyarrow.parquet.ParquetFile`, checked against the metadata."""
        _, pq = _pyarrow()
        path = self.path / self.part(part)["file"]
        try:
            source = pq.ParquetFile(path)
        except Exception as err:  # noqa: BLE001 (pyarrow raises many types for a bad file)
            raise DataError(f"not a readable Parquet file: {err}", path=path) from None
        found = [source.metadata.row_group(g).num_rows for g in range(source.num_row_groups)]
        if found != list(self.part(part)["group_rows"]):
            raise DataError(f"row groups {len(found)} of {sum(found)} records, {METADATA} says "
                            f"{len(self.part(part)['group_rows'])} of {self.part(part)['records']}", path=path)
        return source

    def ids(self, kind: str) -> np.ndarray:
        """The raw ids of the user or item index: int64, or str objects (as the loaders give them)."""
        _, pq = _pyarrow()
        ids = pq.read_table(self.path / f"{kind}_ids.parquet").column("id").to_numpy(zero_copy_only=False)
        return ids.astype(np.int64) if self.id_kinds[kind] == "int" else ids.astype(object)

    def interactions(self, part: str = "train") -> Interactions:
        """The whole part in memory: the loader's `Interactions`, entries in (row, column) order."""
        table = self.parquet(part).read()
        rows = table.column("row").to_numpy()
        lengths = table.column("length").to_numpy()
        col, channel, count = (_flat_values(table.column(name)) for name in ("col", "channel", "count"))
        row = np.repeat(rows, lengths)
        user, item = (row, col) if self.orientation == "user" else (col, row)
        return Interactions.build(user, item, channel, count, n_users=self.n_users, n_items=self.n_items,
                                  channel_values=self.channel_values, user_ids=self.ids("user"),
                                  item_ids=self.ids("item"))


def _flat_values(column) -> np.ndarray:
    """The values of a (chunked) list column, concatenated."""
    return column.combine_chunks().flatten().to_numpy(zero_copy_only=False)


def prepare_table(table: RatingsTable, out_dir, *, orientation: str, rows_per_group: int = ROWS_PER_GROUP,
                  chunk_bytes: int = CHUNK_BYTES, bucket_entries: int = BUCKET_ENTRIES) -> PreparedLayout:
    """Converts one's own ratings table (and its test file) into a prepared layout at `out_dir`."""
    parts = {"train": table.read_args(table.ratings)}
    if table.test is not None:
        parts["test"] = table.read_args(table.test)
    return _prepare_streamed(parts, out_dir, name=table.name, orientation=orientation, rows_per_group=rows_per_group,
                             chunk_bytes=chunk_bytes, bucket_entries=bucket_entries)


def prepare_dataset(name: str, data_dir, out_dir, *, orientation: str, rows_per_group: int = ROWS_PER_GROUP,
                    chunk_bytes: int = CHUNK_BYTES, bucket_entries: int = BUCKET_ENTRIES) -> PreparedLayout:
    """A named dataset into a prepared layout: MovieLens streamed as a table, Douban and Coat (dense
    matrices of 3000² and 290×300) loaded whole with their fixed split."""
    if name in MOVIELENS_VARIANTS:
        args = movielens_read_args(data_dir, variant=MOVIELENS_VARIANTS[name])
        return _prepare_streamed({"train": args}, out_dir, name=name, orientation=orientation,
                                 rows_per_group=rows_per_group, chunk_bytes=chunk_bytes, bucket_entries=bucket_entries)
    dataset = load_dataset(name, data_dir)
    parts = {part: data for part, data in (("train", dataset.train), ("test", dataset.test)) if data is not None}
    source = _source_record(name, {"dataset": name}, [Path(data_dir) / file for file in DENSE_FILES[name]])
    return write_layout(parts, out_dir, orientation=orientation, rows_per_group=rows_per_group, source=source)


def write_layout(parts: dict[str, Interactions], out_dir, *, orientation: str, source: dict,
                 rows_per_group: int = ROWS_PER_GROUP) -> PreparedLayout:
    """Interactions already in memory (a dense named dataset, or the parts of a split) as a
    prepared layout; every part on the first part's index. `source` (plain JSON values) says
    where they came from; the layout's fingerprint is its SHA-256."""
    _check_options(orientation=orientation, rows_per_group=rows_per_group)
    first = next(iter(parts.values()))
    with _Staging(out_dir) as staging:
        infos = {}
        for part, data in parts.items():
            if (data.n_users, data.n_items, data.channel_values) != (first.n_users, first.n_items, first.channel_values):
                raise ConvaeError(f"part {part!r} is not on the index of part {next(iter(parts))!r}")
            rows, cols = (data.user, data.item) if orientation == "user" else (data.item, data.user)
            order = np.lexsort((cols, rows))
            with _RecordWriter(staging.path / f"{part}.parquet", rows_per_group) as writer:
                writer.write(rows[order], cols[order], data.channel[order], data.count[order])
            infos[part] = writer.info
        _metadata(orientation, first.user_ids, first.item_ids, first.channel_values, rows_per_group, infos, source,
                  staging.path)
    return PreparedLayout.open(staging.out)


def _prepare_streamed(parts: dict[str, dict], out_dir, *, name, orientation, rows_per_group, chunk_bytes,
                      bucket_entries) -> PreparedLayout:
    """Parts read with `read_ratings_chunks` (keyword arguments per part; the first part's ids
    make the index, every later part's ids must occur in it)."""
    _check_options(orientation=orientation, rows_per_group=rows_per_group)
    first = next(iter(parts.values()))
    index = _collect_index(first, chunk_bytes=chunk_bytes)
    # Files by name only, so that a moved copy of the same data keeps its fingerprint.
    read_as = {part: {k: (Path(v).name if k == "path" else v) for k, v in args.items()} for part, args in parts.items()}
    source = _source_record(name, read_as, [Path(args["path"]) for args in parts.values()])
    with _Staging(out_dir) as staging:
        infos = {part: _write_part(args, index, staging.path, part=part, orientation=orientation,
                                   rows_per_group=rows_per_group, chunk_bytes=chunk_bytes, bucket_entries=bucket_entries)
                 for part, args in parts.items()}
        _metadata(orientation, index.user_ids, index.item_ids, index.scale, rows_per_group, infos, source, staging.path)
    return PreparedLayout.open(staging.out)


def _check_options(*, orientation: str, rows_per_group: int) -> None:
    if orientation not in ("user", "item"):
        raise ConvaeError(f"orientation must be 'user' or 'item', got {orientation!r}")
    if rows_per_group < 1:
        raise ConvaeError(f"rows per group must be >= 1, got {rows_per_group}")


@dataclasses.dataclass(frozen=True)
class _Index:
    user_ids: np.ndarray  # sorted raw ids, as `np.unique` leaves a loaded table's
    item_ids: np.ndarray
    user_counts: np.ndarray  # entries per user in the first part
    item_counts: np.ndarray
    scale: tuple[float, ...]

    @property
    def integer(self) -> tuple[bool, bool]:
        return self.user_ids.dtype.kind in "iu", self.item_ids.dtype.kind in "iu"


def _collect_index(args: dict, *, chunk_bytes: int) -> _Index:
    """First pass: the distinct ids and their counts. Ids that may be text or integers are read as
    text and turned into integers when every one is plainly written as one, as the loader does."""
    integer = args.get("integer_ids", True)
    read_integer = (integer, integer) if integer is not None else (False, False)
    ids = {"user": (np.empty(0, np.int64 if read_integer[0] else object), np.empty(0, np.int64)),
           "item": (np.empty(0, np.int64 if read_integer[1] else object), np.empty(0, np.int64))}
    chunk_args = {k: v for k, v in args.items() if k != "integer_ids"}
    for chunk in read_ratings_chunks(**chunk_args, integer_ids=read_integer, chunk_bytes=chunk_bytes):
        for kind, raw in (("user", chunk.users), ("item", chunk.items)):
            known, counts = ids[kind]
            found, found_counts = np.unique(raw, return_counts=True)
            ids[kind] = _merge_counts(np.concatenate([known, found]), np.concatenate([counts, found_counts]))
    if integer is None:
        decided = tuple(bool(pd.Series(ids[kind][0], dtype=object).str.fullmatch(PLAIN_INTEGER).all())
                        for kind in ("user", "item"))
        for kind, as_integer in zip(("user", "item"), decided):
            known, counts = ids[kind]
            if as_integer:
                if (pd.to_numeric(pd.Series(known, dtype=object), errors="coerce") > MAX_ID).any():
                    # the loader's error at the line of the first such id
                    deque(read_ratings_chunks(**chunk_args, integer_ids=decided, chunk_bytes=chunk_bytes), maxlen=0)
                order = np.argsort(known.astype(np.int64), kind="stable")
                ids[kind] = known.astype(np.int64)[order], counts[order]
    scale = args["scale"] if args.get("rating_col") is not None else (1.0,)
    return _Index(ids["user"][0], ids["item"][0], ids["user"][1], ids["item"][1], tuple(float(v) for v in scale))


def _merge_counts(ids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, inverse = np.unique(ids, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)


def _write_part(args: dict, index: _Index, out: Path, *, part, orientation, rows_per_group, chunk_bytes,
                bucket_entries) -> dict:
    """Second pass: entries spilled to buckets of whole rows, then each bucket sorted, checked for
    duplicate pairs and written as records."""
    if part == "train":
        row_counts = index.user_counts if orientation == "user" else index.item_counts
    else:  # a test part's rows are counted in a pass of their own
        n_rows = len(index.user_ids if orientation == "user" else index.item_ids)
        row_counts = np.zeros(n_rows, np.int64)
        for entries, _ in _indexed_chunks(args, index, orientation=orientation, chunk_bytes=chunk_bytes):
            row_counts += np.bincount(entries["row"], minlength=n_rows)
    # Bucket b holds rows [bounds[b], bounds[b + 1]): those whose first entry falls in
    # [b·bucket_entries, (b+1)·bucket_entries) of the part's row-sorted entries.
    first_entry = (np.cumsum(row_counts) - row_counts) // bucket_entries
    bounds = np.append(np.flatnonzero(np.r_[True, first_entry[1:] != first_entry[:-1]]), len(row_counts))
    spill = out / f"{part}.spill"
    spill.mkdir()
    path = Path(args["path"])
    fields = None  # how messages name the user and item columns
    for entries, chunk in _indexed_chunks(args, index, orientation=orientation, chunk_bytes=chunk_bytes):
        fields = chunk.user_field, chunk.item_field
        bucket = np.searchsorted(bounds, entries["row"], side="right") - 1
        order = np.argsort(bucket, kind="stable")
        starts = np.searchsorted(bucket[order], np.arange(len(bounds)))
        for b in np.flatnonzero(np.diff(starts)):
            with open(spill / f"{b}.bin", "ab") as handle:
                entries[order[starts[b]:starts[b + 1]]].tofile(handle)
    duplicate = None  # (line, row, col) of the first repeated pair in file order
    with _RecordWriter(out / f"{part}.parquet", rows_per_group) as writer:
        for b in range(len(bounds) - 1):
            bucket_path = spill / f"{b}.bin"
            if not bucket_path.exists():
                continue
            entries = np.fromfile(bucket_path, _SPILL)
            bucket_path.unlink()
            entries = entries[np.lexsort((entries["line"], entries["col"], entries["row"]))]
            same_pair = (entries["row"][1:] == entries["row"][:-1]) & (entries["col"][1:] == entries["col"][:-1])
            repeated = np.flatnonzero(same_pair) + 1
            if repeated.size:
                first = repeated[np.argmin(entries["line"][repeated])]
                found = (int(entries["line"][first]), int(entries["row"][first]), int(entries["col"][first]))
                duplicate = found if duplicate is None else min(duplicate, found)
            if duplicate is None:
                writer.write(entries["row"], entries["col"], entries["channel"], np.ones(len(entries), np.float32))
    spill.rmdir()
    if duplicate is not None:
        line, row, col = duplicate
        user, item = (row, col) if orientation == "user" else (col, row)
        raise duplicate_pair_error(index.user_ids[user], index.item_ids[item], path=path, line=line,
                                   user_field=fields[0], item_field=fields[1])
    return writer.info


def _indexed_chunks(args: dict, index: _Index, *, orientation: str, chunk_bytes: int):
    """The part's chunks as spill records (row, col, channel, line) on the index, each with its
    `RatingsChunk`; DataError at the line of an id the index lacks."""
    path = Path(args["path"])
    chunk_args = {k: v for k, v in args.items() if k != "integer_ids"}
    for chunk in read_ratings_chunks(**chunk_args, integer_ids=index.integer, chunk_bytes=chunk_bytes):
        where = {"path": path, "first_line": chunk.first_line}
        user = index_of_ids(chunk.users, index.user_ids, "user", field=chunk.user_field, **where)
        item = index_of_ids(chunk.items, index.item_ids, "item", field=chunk.item_field, **where)
        entries = np.empty(len(user), _SPILL)
        entries["row"], entries["col"] = (user, item) if orientation == "user" else (item, user)
        entries["channel"], entries["line"] = chunk.channels, chunk.first_line + np.arange(len(user))
        yield entries, chunk


class _RecordWriter:
    """Writes entries sorted by (row, col), whole rows at a time, as records in row groups of
    exactly `rows_per_group` (the last shorter); `info` sums up what was written."""

    def __init__(self, path: Path, rows_per_group: int):
        pa, pq = _pyarrow()
        self.pa, self.rows_per_group = pa, rows_per_group
        self.schema = pa.schema([("row", pa.int32()), ("length", pa.int32()), ("col", pa.list_(pa.int32())),
                                 ("channel", pa.list_(pa.int32())), ("count", pa.list_(pa.float32()))])
        self.writer = pq.ParquetWriter(path, self.schema)
        self.path, self.pending, self.group_rows, self.nnz, self.max_length = path, [], [], 0, 0

    def __enter__(self):
        return self

    def write(self, row, col, channel, count) -> None:
        if not len(row):
            return
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        offsets = np.append(starts, len(row)).astype(np.int32)
        lists = [self.pa.ListArray.from_arrays(offsets, self.pa.array(np.asarray(values, dtype)))
                 for values, dtype in ((col, np.int32), (channel, np.int32), (count, np.float32))]
        lengths = np.diff(offsets)
        self.pending.append(self.pa.Table.from_arrays(
            [self.pa.array(np.asarray(row)[starts].astype(np.int32)), self.pa.array(lengths), *lists], schema=self.schema))
        self.nnz += len(row)
        self.max_length = max(self.max_length, int(lengths.max()))
        self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        if not self.pending:
            return
        table = self.pa.concat_tables(self.pending)
        full = len(table) if final else len(table) // self.rows_per_group * self.rows_per_group
        for start in range(0, full, self.rows_per_group):
            group = table.slice(start, min(self.rows_per_group, full - start))
            self.writer.write_table(group, row_group_size=self.rows_per_group)
            self.group_rows.append(len(group))
        self.pending = [table.slice(full)] if full < len(table) else []

    def __exit__(self, kind, *_):
        if kind is None:
            self._flush(final=True)
        self.writer.close()
        self.info = {"file": self.path.name, "nnz": self.nnz, "records": int(sum(self.group_rows)),
                     "max_length": self.max_length, "group_rows": self.group_rows}


class _Staging:
    """A sibling directory the layout is written into, renamed to `out_dir` only when complete:
    bad input leaves nothing behind."""

    def __init__(self, out_dir):
        self.out = Path(out_dir)
        if self.out.exists():
            raise ConvaeError(f"{self.out} already exists; give a new directory")
        self.path = self.out.with_name(f".{self.out.name}.partial-{os.getpid()}")

    def __enter__(self):
        self.path.mkdir(parents=True)
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            self.path.rename(self.out)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def _metadata(orientation, user_ids, item_ids, channel_values, rows_per_group, infos, source, out: Path) -> None:
    """Writes the id files and `layout.json` into `out`."""
    pa, pq = _pyarrow()
    kinds = {}
    for kind, ids in (("user", user_ids), ("item", item_ids)):
        kinds[kind] = "int" if np.asarray(ids).dtype.kind in "iu" else "text"
        values = np.asarray(ids, np.int64) if kinds[kind] == "int" else [str(v) for v in ids]
        pq.write_table(pa.table({"id": pa.array(values)}), out / f"{kind}_ids.parquet")
    meta = {"format": FORMAT, "version": VERSION, "orientation": orientation, "n_users": len(user_ids),
            "n_items": len(item_ids), "channel_values": list(channel_values), "rows_per_group": rows_per_group,
            "id_kinds": kinds, "parts": infos, "source": source,
            "fingerprint": hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()}
    (out / METADATA).write_text(json.dumps(meta, indent=1) + "\n")


def _source_record(name: str, read_as: dict, files: list[Path]) -> dict:
    return {"name": name, "read_as": read_as, "sha256": {path.name: _file_sha256(path) for path in files}}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
