"""Readers for rating files: MovieLens, Douban (Monti's .mat), Coat, and any named-column table.

Every reader validates as it parses and raises `DataError` naming the file, the 1-based line and
the field at fault; a raw pandas or h5py exception never escapes.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from convae_jax.data.interactions import Interactions
from convae_jax.errors import DataError

STARS = (1.0, 2.0, 3.0, 4.0, 5.0)
HALF_STARS = tuple(0.5 * k for k in range(1, 11))
MAX_ID = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named dataset; `test` is set only where the source ships a fixed split."""

    name: str
    train: Interactions
    test: Interactions | None = None


def load_ratings_table(path, *, user_col, item_col, rating_col, scale, sep=None, header=True,
                       integer_ids=True, allow_duplicates=False) -> Interactions:
    """Reads a CSV/TSV (or `.parquet`) file with named or positional columns into `Interactions`.

    `scale` lists the allowed rating values; channel c means "rated scale[c]". With `header=False`
    the column arguments are 0-based positions. Duplicate (user, item) pairs are refused unless
    `allow_duplicates`.
    """
    path = Path(path)
    frame, first_data_line = _read_frame(path, sep=sep, header=header)
    columns = {"user": user_col, "item": item_col, "rating": rating_col}
    for field, col in columns.items():
        if col not in frame.columns:
            raise DataError(f"missing column {col!r} for {field}; found {list(frame.columns)}", path=path, line=1)
    parse_id = _parse_int_ids if integer_ids else _parse_any_ids
    users = parse_id(frame[user_col], path, first_data_line, str(user_col))
    items = parse_id(frame[item_col], path, first_data_line, str(item_col))
    channels = _parse_ratings(frame[rating_col], scale, path, first_data_line, str(rating_col))
    return _index(users, items, channels, scale, path, first_data_line, allow_duplicates)


def load_movielens(data_dir, *, variant: str) -> Interactions:
    """MovieLens: `100k` (`u.data`), `1m`/`10m` (`ratings.dat`, `::`), `latest`/`20m`/`25m` (`ratings.csv`)."""
    data_dir = Path(data_dir)
    if variant == "100k":
        return load_ratings_table(data_dir / "u.data", user_col=0, item_col=1, rating_col=2, scale=STARS,
                                  sep="\t", header=False)
    if variant in ("1m", "10m"):
        scale = STARS if variant == "1m" else HALF_STARS
        return load_ratings_table(data_dir / "ratings.dat", user_col=0, item_col=1, rating_col=2, scale=scale,
                                  sep="::", header=False)
    if variant in ("latest", "20m", "25m"):
        return load_ratings_table(data_dir / "ratings.csv", user_col="userId", item_col="movieId",
                                  rating_col="rating", scale=HALF_STARS, sep=",")
    raise DataError(f"unknown MovieLens variant {variant!r}; expected 100k, 1m, 10m, latest, 20m or 25m")


def load_douban(data_dir) -> Dataset:
    """Monti et al.'s Douban 3000x3000 (`training_test_dataset.mat`, HDF5) with its fixed split.

    Arrays are stored transposed relative to MATLAB, so each is read with `.T` as GC-MC does.
    """
    import h5py

    path = Path(data_dir) / "training_test_dataset.mat"
    _require_file(path)
    try:
        with h5py.File(path, "r") as f:
            ratings, train_mask, test_mask = (np.asarray(f[k]).T for k in ("M", "Otraining", "Otest"))
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"not a readable Douban .mat (HDF5) file with M, Otraining, Otest: {err}", path=path) from None
    if not (ratings.shape == train_mask.shape == test_mask.shape) or ratings.ndim != 2:
        raise DataError(f"M, Otraining and Otest must share one 2-D shape, got {ratings.shape}", path=path)
    return _dense_split("douban", ratings, train_mask > 0, test_mask > 0, path)


def load_coat(data_dir) -> Dataset:
    """Coat (Schnabel et al. 2016): self-selected `train.ascii`, randomly exposed `test.ascii`."""
    data_dir = Path(data_dir)
    matrices = []
    for name in ("train.ascii", "test.ascii"):
        path = data_dir / name
        _require_file(path)
        rows = []
        with open(path, encoding="ascii", errors="replace") as handle:
            for line_no, line in enumerate(handle, start=1):
                fields = line.split()
                try:
                    rows.append([int(x) for x in fields])
                except ValueError:
                    raise DataError(f"expected integers 0..5, got {line.strip()[:60]!r}", path=path, line=line_no) from None
                if rows and len(rows[-1]) != len(rows[0]):
                    raise DataError(f"expected {len(rows[0])} columns, got {len(fields)}", path=path, line=line_no)
        if not rows:
            raise DataError("empty file", path=path)
        matrix = np.asarray(rows)
        bad = np.argwhere((matrix < 0) | (matrix > 5))
        if bad.size:
            raise DataError(f"rating {matrix[tuple(bad[0])]} outside 0..5", path=path, line=int(bad[0][0]) + 1)
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
    if name in ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small"):
        variant = {"ml-latest-small": "latest"}.get(name, name[3:])
        return Dataset(name, load_movielens(data_dir, variant=variant))
    if name == "douban":
        return load_douban(data_dir)
    if name == "coat":
        return load_coat(data_dir)
    raise DataError(f"unknown dataset {name!r}; expected one of {DATASETS}")


# --- helpers -------------------------------------------------------------------------------------

def _require_file(path: Path):
    if not path.is_file():
        raise DataError("file not found", path=path)
    if os.path.getsize(path) == 0:
        raise DataError("empty file", path=path, line=1)


def _read_frame(path: Path, *, sep, header) -> tuple[pd.DataFrame, int]:
    """The raw table as strings, and the line number of its first data row."""
    _require_file(path)
    if path.suffix == ".parquet":
        try:
            return pd.read_parquet(path), 1
        except Exception as err:  # pyarrow raises many types for a bad file
            raise DataError(f"not a readable Parquet file: {err}", path=path) from None
    raw = path.read_bytes()
    if sep == "::":  # the C parser takes one-character separators only
        raw, sep = raw.replace(b"::", b"\t"), "\t"
    try:
        frame = pd.read_csv(io.BytesIO(raw), sep=sep or ",", header=0 if header else None, dtype=str,
                            keep_default_na=False, na_values=[""], skip_blank_lines=False, encoding="utf-8")
    except pd.errors.ParserError as err:
        raise DataError(f"wrong number of fields: {_parser_detail(err)}", path=path, line=_parser_line(err)) from None
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError("not valid UTF-8 text", path=path, line=line) from None
    except pd.errors.EmptyDataError:
        raise DataError("empty file", path=path, line=1) from None
    if frame.empty:
        raise DataError("no data rows", path=path, line=2 if header else 1)
    return frame, 2 if header else 1


def _parser_line(err) -> int | None:
    text = str(err)
    marker = " line "
    if marker in text:
        digits = text.split(marker, 1)[1].split(",")[0].strip()
        return int(digits) if digits.isdigit() else None
    return None


def _parser_detail(err) -> str:
    return str(err).strip().splitlines()[-1]


def _first_bad(mask: np.ndarray, first_line: int) -> int:
    return int(np.flatnonzero(mask)[0]) + first_line


def _check_present(column: pd.Series, path, first_line, field):
    missing = column.isna().to_numpy()
    if missing.any():
        raise DataError("missing value", path=path, line=_first_bad(missing, first_line), field=field)


def _parse_int_ids(column: pd.Series, path, first_line, field) -> np.ndarray:
    _check_present(column, path, first_line, field)
    numeric = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numeric) | (numeric != np.round(numeric)) | (numeric < 0) | (numeric > MAX_ID)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"expected an integer id in 0..{MAX_ID}, got {column.iloc[row]!r}",
                        path=path, line=row + first_line, field=field)
    return numeric.astype(np.int64)


def _parse_any_ids(column: pd.Series, path, first_line, field) -> np.ndarray:
    _check_present(column, path, first_line, field)
    return column.astype(str).to_numpy()


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


def _index(users, items, channels, scale, path, first_line, allow_duplicates) -> Interactions:
    user_ids, user = np.unique(users, return_inverse=True)
    item_ids, item = np.unique(items, return_inverse=True)
    if not allow_duplicates:
        pair = user.astype(np.int64) * len(item_ids) + item
        _, first = np.unique(pair, return_index=True)
        if first.size != pair.size:
            dup = np.ones(pair.size, bool)
            dup[first] = False
            row = int(np.flatnonzero(dup)[0])
            raise DataError(f"duplicate (user, item) pair ({users[row]}, {items[row]})", path=path, line=row + first_line)
    return Interactions.build(user, item, channels, n_users=len(user_ids), n_items=len(item_ids),
                              channel_values=scale, user_ids=user_ids, item_ids=item_ids)


def _dense_split(name, ratings, train_mask, test_mask, path) -> Dataset:
    """Interactions from a dense rating matrix and two masks, raw ids being 1-based positions."""
    values = ratings[train_mask | test_mask]
    if values.size == 0:
        raise DataError("no ratings in the file", path=path)
    if not np.all(np.isin(values, STARS)):
        raise DataError(f"ratings must be 1..5 where a mask is set, found {sorted(set(values.tolist()) - set(STARS))[:5]}", path=path)
    n_users, n_items = ratings.shape
    parts = []
    for mask in (train_mask, test_mask):
        user, item = np.nonzero(mask)
        parts.append(Interactions.build(user, item, ratings[user, item].astype(np.int64) - 1, n_users=n_users,
                                        n_items=n_items, channel_values=STARS, user_ids=np.arange(1, n_users + 1),
                                        item_ids=np.arange(1, n_items + 1)))
    return Dataset(name, parts[0], parts[1])
