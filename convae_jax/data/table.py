"""A ratings table of one's own: which files, which columns, which scale, and how the text is laid out.

`convae train --ratings FILE ...` builds a `RatingsTable` from its flags, a run directory records
it (`to_record`), and `load` turns it into `load_ratings_table` calls, so every command that
reads such a table reads it the same way.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import re
from pathlib import Path

import numpy as np

from convae_jax.data.interactions import Interactions
from convae_jax.data.loaders import Dataset, load_ratings_table, parses_as
from convae_jax.errors import ConvaeError, DataError

# Separators tried, in this order, when none is given: the first that splits every sampled line
# into the same number (>= 2) of fields wins.
SEPARATORS = ("\t", ",", ";", "|", "::", " ")
SNIFF_BYTES = 1 << 16  # how much of a text file the separator and header are told from
SNIFF_LINES = 20  # at most this many of its lines


@dataclasses.dataclass(frozen=True)
class RatingsTable:
    """Where one's own ratings are and how to read them.

    The same columns, scale and layout apply to the ratings file and the test file. Ids are read
    as integers where every id of a column is written as one, else as text; the test file's ids
    must all occur in the ratings file.
    """

    ratings: Path  # the ratings file: text with one separator per line (CSV, TSV, '::', ...) or .parquet
    # (user, item) or (user, item, rating): header names or 0-based positions; no rating = implicit, one channel
    columns: tuple[str | int, ...]
    scale: tuple[float, ...] | None = None  # the rating values allowed, strictly increasing; None without a rating column
    test: Path | None = None  # a test file laid out like `ratings`; None: a seeded hold-out of `ratings` is the test set
    sep: str | None = None  # field separator of text files (one character, or '::'); None: sniffed from the first lines
    header: bool | None = None  # whether a text file's first line names its columns; None: detected (always with column names)

    def __post_init__(self):
        if len(self.columns) not in (2, 3):
            raise ConvaeError(f"columns: expected user,item or user,item,rating, got {len(self.columns)} columns")
        if (len(self.columns) == 3) != (self.scale is not None):
            raise ConvaeError("a rating column needs a scale (e.g. 1,2,3,4,5), and a scale needs a rating column")
        if self.scale is not None and (len(self.scale) < 2 or list(self.scale) != sorted(set(self.scale))):
            raise ConvaeError(f"scale: expected at least two strictly increasing values, got {self.scale}")
        if self.header is False and any(isinstance(col, str) for col in self.columns):
            raise ConvaeError("columns named without a header line: give 0-based positions instead")
        for path in (self.ratings, self.test):
            if path is not None and _is_parquet(path) and (self.sep is not None or self.header is not None):
                raise ConvaeError(f"{path}: a separator or header applies to text files, not to Parquet")

    @classmethod
    def from_text(cls, *, ratings, columns: str, scale: str | None = None, test=None, sep: str | None = None,
                  header: bool | None = None) -> RatingsTable:
        """From the command line's words: `columns` such as `userId,movieId,rating` or `0,1,2`
        (digits are positions), `scale` such as `1,2,3,4,5` or `0.5:5:0.5` (start:stop:step, both
        ends included), `sep` `\\t` or `tab` for a tab."""
        return cls(ratings=Path(ratings), columns=parse_columns(columns), scale=None if scale is None else parse_scale(scale),
                   test=None if test is None else Path(test), sep={"\\t": "\t", "tab": "\t"}.get(sep, sep), header=header)

    @property
    def name(self) -> str:
        """The ratings file's name, which metrics and run records show as the dataset."""
        return self.ratings.name

    def load(self) -> tuple[Interactions, Interactions | None]:
        """(ratings, test): the test part is None without a test file. Every defect is a
        `DataError` naming the file, the line and the field."""
        ratings = self._read(self.ratings, ids_from=None)
        return ratings, None if self.test is None else self._read(self.test, ids_from=ratings)

    def to_record(self) -> dict:
        """Plain values for a run record, paths made absolute so that the run reloads from anywhere."""
        record = dataclasses.asdict(self)
        for key in ("ratings", "test"):
            record[key] = None if record[key] is None else str(Path(record[key]).resolve())
        return record

    @classmethod
    def from_record(cls, record: dict) -> RatingsTable:
        """The inverse of `to_record`."""
        try:
            scale = record["scale"]
            return cls(ratings=Path(record["ratings"]), columns=tuple(record["columns"]),
                       scale=None if scale is None else tuple(float(v) for v in scale),
                       test=None if record["test"] is None else Path(record["test"]), sep=record["sep"],
                       header=record["header"])
        except (KeyError, TypeError, ValueError) as err:
            raise ConvaeError(f"incomplete ratings-table record ({err!r})") from None

    def _read(self, path: Path, *, ids_from: Interactions | None) -> Interactions:
        return load_ratings_table(**self.read_args(path), ids_from=ids_from)

    def read_args(self, path: Path) -> dict:
        """How `path` (the ratings or the test file) is read: the keyword arguments of
        `load_ratings_table` (and `read_ratings_chunks`), separator and header told from its first lines."""
        if _is_parquet(path):
            sep, header = None, True
        else:
            lines = _first_lines(path)
            sep = self.sep or sniff_separator(lines, path=path)
            header = self.header
            if header is None:
                header = any(isinstance(col, str) for col in self.columns) or has_header(lines, sep)
        user, item, *rating = self.columns
        return {"path": path, "user_col": user, "item_col": item, "rating_col": rating[0] if rating else None,
                "scale": self.scale, "sep": sep, "header": header, "integer_ids": None}


def load_random_exposure(table: RatingsTable) -> Dataset:
    """A random-exposure dataset of one's own: `table.ratings` holds the self-selected ratings
    (what users chose to rate) that models train on, `table.test` ratings of items shown to users
    at random, as Coat's test set is (Schnabel et al. 2016), which
    `evaluate.random_exposure_protocol` scores. Both need a rating column. Every test user and
    item must be in the ratings file (a model has no history of the others): one that is not is a
    `DataError` naming the test file, its line and the field. The dataset is named after the
    ratings file (`RatingsTable.name`)."""
    if table.test is None or table.scale is None:
        raise ConvaeError("a random-exposure dataset needs a test file and a rating column with its scale")
    train, test = table.load()
    return Dataset(table.name, train, test)


def parse_columns(text: str) -> tuple[str | int, ...]:
    """`user,item[,rating]`: names, or digits for 0-based positions."""
    parts = [part.strip() for part in str(text).split(",")]
    if any(not part for part in parts):
        raise ConvaeError(f"columns: empty name in {text!r}; expected user,item or user,item,rating")
    return tuple(int(part) if part.isdigit() else part for part in parts)


def parse_scale(text: str) -> tuple[float, ...]:
    """`v1,v2,...` or `start:stop:step` (both ends included, e.g. `0.5:5:0.5` for half stars)."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = round((stop - start) / step)
            if abs(start + n * step - stop) > 1e-9 * max(1.0, abs(stop)):
                raise ValueError
            return tuple(float(v) for v in np.round(start + step * np.arange(n + 1), 12))
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConvaeError(f"scale: expected v1,v2,... or start:stop:step reaching stop, got {text!r}") from None
    if not all(np.isfinite(values)):
        raise ConvaeError(f"scale: values must be finite, got {text!r}")
    return values


def sniff_separator(lines: list[str], *, path) -> str:
    """The first of `SEPARATORS` that splits every line into the same number (>= 2) of fields
    (quotes respected, as the loader reads them)."""
    for sep in SEPARATORS:
        widths = {len(_split(line, sep)) for line in lines}
        if len(widths) == 1 and widths.pop() >= 2:
            return sep
    shown = ", ".join(repr(sep) for sep in SEPARATORS)
    raise DataError(f"cannot tell the field separator (tried {shown}); give it (--sep)", path=path, line=1)


def has_header(lines: list[str], sep: str) -> bool:
    """True when some field of the first line is not a number while that field is one on every
    later sampled line (the test of `csv.Sniffer.has_header`, on types only). A file of text ids
    and no rating column cannot be told this way: declare its header."""
    rows = [_split(line, sep) for line in lines]
    first, rest = rows[0], rows[1:]
    return bool(rest) and any(not parses_as(float, field) and all(i < len(row) and parses_as(float, row[i]) for row in rest)
                              for i, field in enumerate(first))


def _first_lines(path: Path) -> list[str]:
    """Up to `SNIFF_LINES` non-blank lines from the start of a text file (the last, possibly cut
    line of a long file dropped)."""
    if not path.is_file():
        raise DataError("file not found", path=path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES + 1)
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror or err}", path=path) from None
    text = head[:SNIFF_BYTES].removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace")
    lines = re.split(r"\r\n|\r|\n", text)
    if len(head) > SNIFF_BYTES:
        lines = lines[:-1]
    lines = [line for line in lines if line.strip()][:SNIFF_LINES]
    if not lines:
        raise DataError("empty file", path=path, line=1)
    return lines


def _split(line: str, sep: str) -> list[str]:
    if len(sep) > 1:
        return line.split(sep)
    return next(csv.reader([line], delimiter=sep), [])


def _is_parquet(path: Path) -> bool:
    return Path(path).suffix == ".parquet"
