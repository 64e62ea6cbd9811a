"""Readers for rating files: MovieLens, Douban (Monti's .mat), Coat, and any named-column table.

Every reader validates as it parses and raises `DataError` naming the file, the 1-based line and
the field at fault; a raw pandas or h5py exception never escapes.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import os
import re
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pandas as pd

from convae_jax.data.interactions import Interactions
from convae_jax.errors import DataError

STARS = (1.0, 2.0, 3.0, 4.0, 5.0)
HALF_STARS = tuple(0.5 * k for k in range(1, 11))
MAX_ID = 2**31 - 1
IMPLICIT = (1.0,)  # the one channel of an implicit-only table: "consumed"
PLAIN_INTEGER = r"0|[1-9][0-9]*"  # how an id is written to be read as an integer when integers are not declared


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named dataset; `test` is set only where the source ships a fixed split."""

    name: str
    train: Interactions
    test: Interactions | None = None


def load_ratings_table(path, *, user_col, item_col, rating_col, scale, sep=None, header=True,
                       integer_ids=True, allow_duplicates=False, n_fields: int | None = None,
                       ids_from: Interactions | None = None) -> Interactions:
    """Reads a CSV/TSV (or `.parquet`) file with named or positional columns into `Interactions`.

    `scale` lists the allowed rating values; channel c means "rated scale[c]". `rating_col=None`
    (with `scale=None`) reads an implicit-only table: every row is one channel, `IMPLICIT`. A
    column argument is a header name or a 0-based position (the only choice with `header=False`).
    Ids are integers with `integer_ids=True`, text with False, and with None integers where every
    id of that column is written as one (so `007` stays text). `ids_from` (a training set) gives the
    index spaces: each id is read as its ids are, and one it lacks is an error at its line.
    Duplicate (user, item) pairs are refused unless `allow_duplicates`. Every line must have as
    many fields as the header (or, without one, the first line), or exactly `n_fields` when given;
    one trailing empty field (a separator at the end of a line) is tolerated. Text must be UTF-8
    (a BOM is allowed).
    """
    path = Path(path)
    integer = ((_has_integer_ids(ids_from.user_ids), _has_integer_ids(ids_from.item_ids)) if ids_from is not None
               else (integer_ids, integer_ids))
    chunk = next(read_ratings_chunks(path, user_col=user_col, item_col=item_col, rating_col=rating_col, scale=scale,
                                     sep=sep, header=header, integer_ids=integer, n_fields=n_fields))
    where = {"path": path, "first_line": chunk.first_line, "user_field": chunk.user_field, "item_field": chunk.item_field}
    return _index(chunk.users, chunk.items, chunk.channels, IMPLICIT if scale is None else scale,
                  allow_duplicates=allow_duplicates, ids_from=ids_from, **where)


class RatingsChunk(NamedTuple):
    """Consecutive parsed lines of a ratings table: raw ids, channel indices, and where they came from."""

    users: np.ndarray  # (m,) raw user ids: int64, or str objects
    items: np.ndarray  # (m,) raw item ids
    channels: np.ndarray  # (m,) int32 index into the scale (0 for an implicit table)
    first_line: int  # the 1-based file line (Parquet: row) of users[0]
    user_field: str  # how messages name the user column
    item_field: str


def read_ratings_chunks(path, *, user_col, item_col, rating_col, scale, sep=None, header=True,
                        integer_ids: tuple[bool | None, bool | None] = (True, True), n_fields: int | None = None,
                        chunk_bytes: int | None = None) -> Iterator[RatingsChunk]:
    """The table of `load_ratings_table`, parsed and checked a chunk at a time: every line-level
    defect (encoding, field count, missing value, id, rating) raises the loader's `DataError`,
    at the file's own line. `integer_ids` is (user, item), each as `load_ratings_table`'s
    `integer_ids` but decided per chunk when None. `chunk_bytes=None` reads the whole file as one
    chunk; otherwise a chunk is about `chunk_bytes` of text (cut at a line end) or
    `chunk_bytes // PARQUET_ROW_BYTES` Parquet rows. A field quoted across a line end must not
    straddle a cut."""
    path = Path(path)
    if (rating_col is None) != (scale is None):
        raise DataError("a rating column needs a scale, and a scale needs a rating column", path=path)
    wanted = {"user": user_col, "item": item_col} | ({} if rating_col is None else {"rating": rating_col})
    roles = None
    for frame, first_data_line, labels in _read_frames(path, sep=sep, header=header, n_fields=n_fields,
                                                       chunk_bytes=chunk_bytes):
        if roles is None:
            roles, names = {}, list(frame.columns)
            for field, col in wanted.items():
                if col not in names and not (type(col) is int and 0 <= col < len(names)):
                    raise DataError(f"missing column {col!r} for {field}; found {names}", path=path, line=1,
                                    field=str(col))
                roles[field] = col if col in names else names[col]
        users = _parse_ids(frame[roles["user"]], integer_ids[0], path, first_data_line, labels[roles["user"]])
        items = _parse_ids(frame[roles["item"]], integer_ids[1], path, first_data_line, labels[roles["item"]])
        if rating_col is None:
            channels = np.zeros(len(frame), np.int32)
        else:
            channels = _parse_ratings(frame[roles["rating"]], scale, path, first_data_line, labels[roles["rating"]])
        yield RatingsChunk(users, items, channels, first_data_line, labels[roles["user"]], labels[roles["item"]])


def load_movielens(data_dir, *, variant: str) -> Interactions:
    """MovieLens: `100k` (`u.data`), `1m`/`10m` (`ratings.dat`, `::`), `latest`/`20m`/`25m` (`ratings.csv`)."""
    return load_ratings_table(**movielens_read_args(data_dir, variant=variant))


def movielens_read_args(data_dir, *, variant: str) -> dict:
    """How a MovieLens ratings file is read: the keyword arguments of `load_ratings_table` (and
    `read_ratings_chunks`)."""
    data_dir = Path(data_dir)
    if variant == "100k":
        return dict(path=data_dir / "u.data", user_col=0, item_col=1, rating_col=2, scale=STARS, sep="\t",
                    header=False, n_fields=4)
    if variant in ("1m", "10m"):
        scale = STARS if variant == "1m" else HALF_STARS
        return dict(path=data_dir / "ratings.dat", user_col=0, item_col=1, rating_col=2, scale=scale, sep="::",
                    header=False, n_fields=4)
    if variant in ("latest", "20m", "25m"):
        return dict(path=data_dir / "ratings.csv", user_col="userId", item_col="movieId", rating_col="rating",
                    scale=HALF_STARS, sep=",", n_fields=4)
    raise DataError(f"unknown MovieLens variant {variant!r}; expected 100k, 1m, 10m, latest, 20m or 25m")


MOVIELENS_VARIANTS = {"ml-100k": "100k", "ml-1m": "1m", "ml-10m": "10m", "ml-latest-small": "latest", "ml-20m": "20m",
                      "ml-25m": "25m"}


def load_douban(data_dir) -> Dataset:
    """Monti et al.'s Douban 3000x3000 (`training_test_dataset.mat`, HDF5) with its fixed split.

    Arrays are stored transposed relative to MATLAB, so each is read with `.T` as GC-MC does.
    """
    import h5py

    path = Path(data_dir) / "training_test_dataset.mat"
    _require_file(path)
    arrays = {}
    try:
        with h5py.File(path, "r") as f:
            for name in ("M", "Otraining", "Otest"):
                arrays[name] = np.asarray(f[name]).T
    except Exception as err:  # noqa: BLE001 (h5py raises OSError, KeyError, ValueError, TypeError, RuntimeError... on a bad file)
        field = next(name for name in ("M", "Otraining", "Otest") if name not in arrays)
        raise DataError(f"not a readable Douban .mat (HDF5) file: {type(err).__name__}: {err}", path=path,
                        field=field) from None
    for name, arr in arrays.items():
        if arr.ndim != 2 or arr.dtype.kind not in "biuf":
            raise DataError(f"expected a 2-D numeric matrix, got {arr.dtype} of shape {arr.shape}", path=path, field=name)
    ratings, train_mask, test_mask = arrays["M"], arrays["Otraining"], arrays["Otest"]
    if not (ratings.shape == train_mask.shape == test_mask.shape):
        raise DataError(f"M, Otraining and Otest must share one shape, got {ratings.shape}, {train_mask.shape}, "
                        f"{test_mask.shape}", path=path)
    return _dense_split("douban", ratings, train_mask > 0, test_mask > 0, path, field="M")


def load_coat(data_dir) -> Dataset:
    """Coat (Schnabel et al. 2016): self-selected `train.ascii`, randomly exposed `test.ascii`."""
    data_dir = Path(data_dir)
    matrices = []
    for name in ("train.ascii", "test.ascii"):
        path = data_dir / name
        _require_file(path)
        rows = []
        with open(path, encoding="ascii", errors="replace", newline=None) as handle:
            for line_no, line in enumerate(handle, start=1):
                fields = line.split()
                try:
                    rows.append([int(x) for x in fields])
                except ValueError:
                    column = next(k for k, x in enumerate(fields) if not parses_as(int, x)) + 1
                    raise DataError(f"expected integers 0..5, got {fields[column - 1][:30]!r}", path=path,
                                    line=line_no, field=f"column {column}") from None
                if rows and len(rows[-1]) != len(rows[0]):
                    raise DataError(f"expected {len(rows[0])} columns, got {len(fields)}", path=path, line=line_no)
        if not rows:
            raise DataError("empty file", path=path)
        matrix = np.asarray(rows)
        bad = np.argwhere((matrix < 0) | (matrix > 5))
        if bad.size:
            raise DataError(f"rating {matrix[tuple(bad[0])]} outside 0..5", path=path, line=int(bad[0][0]) + 1,
                            field=f"column {int(bad[0][1]) + 1}")
        matrix = matrix.astype(np.int64)
        matrices.append(matrix)
    train, test = matrices
    if train.shape != test.shape:
        raise DataError(f"train is {train.shape} but test is {test.shape}", path=data_dir / "test.ascii")
    ratings = np.where(test > 0, test, train)
    dataset = _dense_split("coat", ratings, train > 0, test > 0, data_dir)
    # Cells rated in both files keep their own rating in each part.
    train_part = dataclasses.replace(dataset.train, channel=(train[dataset.train.user, dataset.train.item] - 1).astype(np.int32))
    return dataclasses.replace(dataset, train=train_part)


DATASETS = ("ml-100k", "ml-1m", "ml-10m", "ml-latest-small", "ml-20m", "ml-25m", "douban", "coat")


def load_dataset(name: str, data_dir) -> Dataset:
    """Loads a dataset by name from its directory (see DATASETS)."""
    if name in MOVIELENS_VARIANTS:
        return Dataset(name, load_movielens(data_dir, variant=MOVIELENS_VARIANTS[name]))
    if name == "douban":
        return load_douban(data_dir)
    if name == "coat":
        return load_coat(data_dir)
    raise DataError(f"unknown dataset {name!r}; expected one of {DATASETS}")


# --- helpers -------------------------------------------------------------------------------------

def parses_as(kind: type, text: str) -> bool:
    """Whether `kind(text)` succeeds: int or float fields told from words."""
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _require_file(path: Path):
    if not path.is_file():
        raise DataError("file not found", path=path)
    if os.path.getsize(path) == 0:
        raise DataError("empty file", path=path, line=1)


PARQUET_ROW_BYTES = 64  # bytes of text a Parquet row stands for when a chunk size is turned into rows


def _read_frames(path: Path, *, sep, header, n_fields: int | None,
                 chunk_bytes: int | None = None) -> Iterator[tuple[pd.DataFrame, int, dict]]:
    """The raw table as strings, a chunk at a time (the whole file when `chunk_bytes` is None):
    each chunk's frame, the line number of its first data row, and a label per column for
    messages (the header name, or the 0-based position without a header).

    The text is decoded here rather than by pandas so that an encoding error has an exact line;
    NUL bytes are refused (pandas' C parser silently cuts a field at one)."""
    _require_file(path)
    if path.suffix == ".parquet":
        yield from _parquet_frames(path, chunk_bytes)
        return
    sep = sep or ","
    double_colon = sep == "::"  # the C parser takes one-character separators only
    if double_colon:
        sep = "\t"
    if len(sep) != 1 or sep in "\r\n\"":
        raise DataError(f"unsupported separator {sep!r}: use one character (or '::')", path=path)
    header_line, names, width, lines_before = None, None, None, 0
    for raw in _byte_chunks(path, chunk_bytes):
        first_chunk = width is None
        if double_colon:
            raw = raw.replace(b"::", b"\t")
        if first_chunk:
            raw = raw.removeprefix(codecs.BOM_UTF8)
            header_line = raw[:raw.find(b"\n")] if header else None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            _raise_at_byte(raw, err.start, "not valid UTF-8 text", path, sep, header_line, lines_before)
        if "\0" in text:
            _raise_at_byte(raw, raw.index(b"\0"), "NUL byte in the text", path, sep, header_line, lines_before)
        if first_chunk and not text.strip():
            raise DataError("empty file", path=path, line=1)
        head = re.split(r"\r\n|\r|\n", text, maxsplit=2)
        if first_chunk:
            names = next(csv.reader([head[0]], delimiter=sep)) if header else None
            if header:
                if n_fields is not None and len(names) != n_fields:
                    raise DataError(f"wrong number of fields: expected {n_fields} in the header, got {len(names)}",
                                    path=path, line=1)
                repeated = sorted({name for name in names if names.count(name) > 1})
                if repeated:
                    raise DataError("column name used twice", path=path, line=1, field=repeated[0])
            width = n_fields or (len(names) if header else head[0].count(sep) + 1)
        yield _parse_text_chunk(text, head, path=path, sep=sep, names=names, width=width, n_fields=n_fields,
                                skip=1 if header and first_chunk else 0, lines_before=lines_before)
        lines_before += raw.count(b"\n")


def _parse_text_chunk(text: str, head: list[str], *, path, sep, names, width, n_fields, skip,
                      lines_before) -> tuple[pd.DataFrame, int, dict]:
    """One chunk of decoded text (its first `skip` lines a header) into a frame of strings, every
    line checked to have `width` fields; lines numbered after the file's first `lines_before`."""
    columns = list(range(width + 1))  # one spare column catches lines with an extra field
    first_data_line = lines_before + skip + 1
    first_fields = len(next(csv.reader([head[skip]], delimiter=sep), [])) if len(head) > skip else 0
    if first_fields > width + 1:  # pandas would drop the surplus of a long first row with only a warning
        raise DataError(f"wrong number of fields: expected {width}, got {first_fields}", path=path,
                        line=first_data_line, field=_column_label(width, names))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # never drop data silently
            frame = pd.read_csv(io.StringIO(text), sep=sep, header=None, names=columns, skiprows=skip,
                                dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=False,
                                index_col=False)
    except pd.errors.ParserWarning as err:
        raise DataError(f"wrong number of fields: {err}", path=path) from None
    except pd.errors.ParserError as err:
        raise DataError(f"wrong number of fields: {_parser_detail(err)}", path=path,
                        line=_parser_line(err, first_data_line, lines_before)) from None
    except pd.errors.EmptyDataError:
        raise DataError("no data rows", path=path, line=first_data_line) from None
    if frame.empty:
        raise DataError("no data rows", path=path, line=first_data_line)
    labels = {i: _column_label(i, names) for i in columns}
    extra = frame[width].notna().to_numpy()
    if extra.any():
        raise DataError(f"wrong number of fields: expected {width}, got more", path=path,
                        line=_first_bad(extra, first_data_line), field=labels[width])
    frame = frame.drop(columns=width)
    short = frame.isna().to_numpy()
    if n_fields is not None and short.any():
        row, col = (int(v) for v in np.argwhere(short)[0])
        raise DataError(f"missing value (or fewer than {width} fields)", path=path, line=row + first_data_line,
                        field=labels[col])
    if names is not None:
        frame.columns = [names[i] if i < len(names) else i for i in range(width)]
        labels = {names[i] if i < len(names) else i: labels[i] for i in range(width)}
    return frame, first_data_line, labels


def _byte_chunks(path: Path, chunk_bytes: int | None) -> Iterator[bytes]:
    """The file's bytes: whole, or in pieces of about `chunk_bytes`, each cut after a line end."""
    try:
        with open(path, "rb") as handle:
            if chunk_bytes is None:
                yield handle.read()
                return
            while block := handle.read(chunk_bytes):
                yield block + (b"" if block.endswith(b"\n") else handle.readline())
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror or err}", path=path) from None


def _parquet_frames(path: Path, chunk_bytes: int | None) -> Iterator[tuple[pd.DataFrame, int, dict]]:
    """A Parquet table, whole or in batches of `chunk_bytes // PARQUET_ROW_BYTES` rows; a row's
    "line" is its 1-based position."""
    try:
        if chunk_bytes is None:
            frames = iter([pd.read_parquet(path)])
        else:
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(path).iter_batches(batch_size=max(1, chunk_bytes // PARQUET_ROW_BYTES))
            frames = (batch.to_pandas() for batch in batches)
        line = 1
        while (frame := next(frames, None)) is not None:
            if frame.empty and line == 1:
                raise DataError("no data rows", path=path)
            yield frame, line, {col: str(col) for col in frame.columns}
            line += len(frame)
        if line == 1:
            raise DataError("no data rows", path=path)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 (pyarrow raises many types for a bad file)
        raise DataError(f"not a readable Parquet file: {err}", path=path) from None


def _column_label(index: int, names: list[str] | None) -> str:
    """How messages name column `index`: its header name, else its 0-based position (as the
    column arguments of `load_ratings_table` give it)."""
    return names[index] if names is not None and index < len(names) else str(index)


def _raise_at_byte(raw: bytes, offset: int, message: str, path, sep: str, header_line: bytes | None, lines_before: int):
    """DataError at the line and field holding byte `offset` of a (separator-normalised) chunk of
    the file that follows its first `lines_before` lines; `header_line` names the fields."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    line = lines_before + raw.count(b"\n", 0, offset) + 1
    column = raw[line_start:offset].count(sep.encode())
    names = None if header_line is None else header_line.decode("utf-8", errors="replace").rstrip("\r").split(sep)
    raise DataError(message, path=path, line=line, field=_column_label(column, names)) from None


def _parser_line(err, first_data_line: int, lines_before: int) -> int | None:
    """The 1-based file line of a pandas ParserError ("... in line 7, ..." or "... starting at
    row 3") in a chunk that follows the file's first `lines_before` lines."""
    text = str(err)
    for marker, offset in ((" line ", lines_before), (" row ", first_data_line)):
        if marker in text:
            digits = text.split(marker, 1)[1].split(",")[0].split()[0].strip()
            if digits.isdigit():
                return int(digits) + offset
    return None


def _parser_detail(err) -> str:
    return str(err).strip().splitlines()[-1]


def _first_bad(mask: np.ndarray, first_line: int) -> int:
    return int(np.flatnonzero(mask)[0]) + first_line


def _check_present(column: pd.Series, path, first_line, field):
    missing = column.isna().to_numpy()
    if missing.any():
        raise DataError("missing value", path=path, line=_first_bad(missing, first_line), field=field)


def _parse_ids(column: pd.Series, integer: bool | None, path, first_line, field) -> np.ndarray:
    """Integer ids (`integer=True`), text ids (False), or integers where every id is plainly
    written as one (None)."""
    _check_present(column, path, first_line, field)
    text = column.astype(str)
    if integer is None:
        integer = bool(text.str.fullmatch(PLAIN_INTEGER).all())
    if not integer:
        return text.to_numpy()
    numeric = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numeric) | (numeric != np.round(numeric)) | (numeric < 0) | (numeric > MAX_ID)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"expected an integer id in 0..{MAX_ID}, got {column.iloc[row]!r}",
                        path=path, line=row + first_line, field=field)
    return numeric.astype(np.int64)


def _has_integer_ids(ids: np.ndarray) -> bool:
    return np.asarray(ids).dtype.kind in "iu"


def _parse_ratings(column: pd.Series, scale, path, first_line, field) -> np.ndarray:
    _check_present(column, path, first_line, field)
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    scale_arr = np.asarray(scale, dtype=np.float64)
    channel = np.clip(np.searchsorted(scale_arr, values), 0, len(scale_arr) - 1)
    bad = ~np.isfinite(values) | (np.abs(scale_arr[channel] - values) > 1e-6)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"rating {column.iloc[row]!r} is not on the scale {tuple(scale)}",
                        path=path, line=row + first_line, field=field)
    return channel.astype(np.int32)


def _index(users, items, channels, scale, *, path, first_line, user_field, item_field, allow_duplicates,
           ids_from: Interactions | None) -> Interactions:
    if ids_from is None:
        user_ids, user = np.unique(users, return_inverse=True)
        item_ids, item = np.unique(items, return_inverse=True)
    else:
        user_ids, item_ids = ids_from.user_ids, ids_from.item_ids
        user = index_of_ids(users, user_ids, "user", path=path, first_line=first_line, field=user_field)
        item = index_of_ids(items, item_ids, "item", path=path, first_line=first_line, field=item_field)
    if not allow_duplicates:
        pair = user.astype(np.int64) * len(item_ids) + item
        _, first = np.unique(pair, return_index=True)
        if first.size != pair.size:
            dup = np.ones(pair.size, bool)
            dup[first] = False
            row = int(np.flatnonzero(dup)[0])
            raise duplicate_pair_error(users[row], items[row], path=path, line=row + first_line, user_field=user_field,
                                       item_field=item_field)
    return Interactions.build(user, item, channels, n_users=len(user_ids), n_items=len(item_ids),
                              channel_values=scale, user_ids=user_ids, item_ids=item_ids)


def duplicate_pair_error(user_id, item_id, *, path, line: int, user_field: str, item_field: str) -> DataError:
    """The error for a (user, item) pair seen before, at the line of its second occurrence."""
    return DataError(f"duplicate (user, item) pair ({user_id}, {item_id})", path=path, line=line,
                     field=f"{user_field}, {item_field}")


def index_of_ids(raw: np.ndarray, known: np.ndarray, kind: str, *, path, first_line, field) -> np.ndarray:
    """The index of each raw id in `known` (sorted, as `np.unique` leaves a loaded table's ids);
    DataError at the first id it lacks."""
    at = np.minimum(np.searchsorted(known, raw), len(known) - 1)
    unseen = known[at] != raw
    if unseen.any():
        row = int(np.flatnonzero(unseen)[0])
        raise DataError(f"{kind} id {raw[row]} is not in the training data", path=path, line=row + first_line,
                        field=field)
    return at


def _dense_split(name, ratings, train_mask, test_mask, path, field=None) -> Dataset:
    """Interactions from a dense rating matrix and two masks, raw ids being 1-based positions."""
    rated = train_mask | test_mask
    if not rated.any():
        raise DataError("no ratings in the file", path=path, field=field)
    bad = np.argwhere(rated & ~np.isin(ratings, STARS))
    if bad.size:
        row, col = (int(v) for v in bad[0])
        raise DataError(f"rating {ratings[row, col]!r} at (user {row + 1}, item {col + 1}) is not one of 1..5 "
                        "where a mask is set", path=path, field=field)
    n_users, n_items = ratings.shape
    parts = []
    for mask in (train_mask, test_mask):
        user, item = np.nonzero(mask)
        parts.append(Interactions.build(user, item, ratings[user, item].astype(np.int64) - 1, n_users=n_users,
                                        n_items=n_items, channel_values=STARS, user_ids=np.arange(1, n_users + 1),
                                        item_ids=np.arange(1, n_items + 1)))
    return Dataset(name, parts[0], parts[1])
