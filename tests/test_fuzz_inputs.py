"""Fuzzing the inputs users hand the library (issue 7, item 4): rating files (MovieLens `u.data`,
`ratings.dat`, `ratings.csv`), Coat's `.ascii` matrices, Douban's `.mat` (HDF5) file, configs.

Each case is a valid file with one targeted defect (a non-numeric field, NaN, a negative or huge
id, a rating off the scale, a duplicate pair, a wrong field count, a blank line, bad UTF-8, a NUL
byte, an empty file, ...), for which the error must be `DataError` naming the file, the exact line
and the field; or random byte damage (edits, truncation, bit flips), for which the load must
either succeed with valid data or end in the library's own error naming the file. A raw numpy,
pandas or h5py exception fails the test.

CI runs the `ci` budget of each test (at least 100 cases in all); `-m slow` runs the `slow` one
(at least 1000). `run_fuzz` counts and prints the cases actually tried.
"""

from __future__ import annotations

import io
import math
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convae_jax import config as config_lib
from convae_jax.config import Config
from convae_jax.data import load_coat, load_douban, load_movielens
from convae_jax.data.loaders import HALF_STARS, STARS
from convae_jax.errors import ConfigError, ConvaeError, DataError

BUDGETS = [pytest.param(40, id="ci"), pytest.param(400, id="slow", marks=pytest.mark.slow)]


def run_fuzz(check, strategy, n: int) -> int:
    """Runs `check` on `n` cases drawn from `strategy` (no example database: nothing is written
    outside temporary directories); returns the number of cases tried."""
    tried = []

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def prop(case):
        tried.append(case)
        check(case)

    prop()
    assert len(tried) >= n
    print(f"fuzz {check.__name__}: {len(tried)} cases")
    return len(tried)


def assert_data_error(err: DataError, path: Path, *, line=None, field=None, needle=None):
    message = str(err)
    assert err.path is not None and str(path) in message, message
    if line is not None:
        assert err.line == line, message
    if field is not None:
        assert err.field == field, message
    if needle is not None:
        assert needle in message, message


# --- MovieLens-style rating files -----------------------------------------------------------------

FORMATS = {
    "100k": {"file": "u.data", "sep": "\t", "header": None, "scale": STARS,
             "labels": ("0", "1", "2", "3")},  # positional columns are named by their 0-based index
    "1m": {"file": "ratings.dat", "sep": "::", "header": None, "scale": STARS, "labels": ("0", "1", "2", "3")},
    "latest": {"file": "ratings.csv", "sep": ",", "header": "userId,movieId,rating,timestamp", "scale": HALF_STARS,
               "labels": ("userId", "movieId", "rating", "timestamp")},
}
USER, ITEM, RATING = 0, 1, 2
BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e400", "Infinity"]
BAD_IDS = ["-1", "-70", "2.5", "1e30", str(2**31), str(2**63), "9" * 40, "0x1F"]
OFF_SCALE = {"100k": ["0", "6", "2.5", "-1", "10", "4.75"], "latest": ["0", "0.25", "5.5", "6", "-0.5", "4.75"]}
OFF_SCALE["1m"] = OFF_SCALE["100k"]
TEXT = st.text(alphabet=string.ascii_letters + "_-/ ", min_size=1, max_size=8).filter(lambda t: t.strip())


@st.composite
def rating_files(draw):
    """(format name, file bytes, expectation): ("ok", nnz), ("error", line, field, needle) or ("any",)."""
    name = draw(st.sampled_from(sorted(FORMATS)))
    fmt = FORMATS[name]
    n = draw(st.integers(1, 10))
    pairs = draw(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=n, max_size=n,
                          unique=True))
    rows = [[str(u), str(i), f"{draw(st.sampled_from(fmt['scale'])):g}", str(draw(st.integers(0, 10**9)))]
            for u, i in pairs]
    first = 2 if fmt["header"] else 1
    r = draw(st.integers(0, n - 1))
    line = r + first
    labels = fmt["labels"]
    kind = draw(st.sampled_from(["valid", "crlf", "bom", "no_final_newline", "bad_number", "text", "empty_field",
                                 "bad_id", "off_scale", "extra_fields", "missing_fields", "blank_line",
                                 "duplicate", "bad_utf8", "nul", "empty", "whitespace_only", "header_only",
                                 "renamed_column", "damage"]))
    expect, newline, prefix = ("ok", n), "\n", b""
    if kind == "crlf":
        newline = "\r\n"
    elif kind == "bom":
        prefix = b"\xef\xbb\xbf"
    elif kind in ("bad_number", "text", "empty_field"):
        col = draw(st.sampled_from([USER, ITEM, RATING]))
        rows[r][col] = {"bad_number": draw(st.sampled_from(BAD_NUMBERS)), "text": draw(TEXT), "empty_field": ""}[kind]
        needle = "missing value" if kind == "empty_field" else ("not on the scale" if col == RATING else "integer id")
        expect = ("error", line, labels[col], needle)
    elif kind == "bad_id":
        col = draw(st.sampled_from([USER, ITEM]))
        rows[r][col] = draw(st.sampled_from(BAD_IDS))
        expect = ("error", line, labels[col], "integer id")
    elif kind == "off_scale":
        rows[r][RATING] = draw(st.sampled_from(OFF_SCALE[name]))
        expect = ("error", line, labels[RATING], "not on the scale")
    elif kind == "extra_fields":
        rows[r] += [str(draw(st.integers(0, 99))) for _ in range(draw(st.integers(1, 3)))]
        expect = ("error", line, None, "wrong number of fields")
    elif kind == "missing_fields":
        k = draw(st.integers(1, 3))
        rows[r] = rows[r][: 4 - k]
        expect = ("error", line, labels[4 - k], "missing value")
    elif kind == "duplicate" and n >= 2:
        s = draw(st.integers(0, n - 1).filter(lambda s: s != r))
        rows[max(r, s)][:2] = rows[min(r, s)][:2]
        expect = ("error", max(r, s) + first, f"{labels[USER]}, {labels[ITEM]}", "duplicate (user, item) pair")
    elif kind in ("bad_utf8", "nul"):
        col = draw(st.sampled_from([USER, ITEM, RATING, 3]))
        junk = "\x00" if kind == "nul" else draw(st.sampled_from(["\udcff", "\udce9", "\udcc3"]))  # raw 0xff, 0xe9, 0xc3
        rows[r][col] = junk + rows[r][col]
        expect = ("error", line, labels[col], "NUL byte" if kind == "nul" else "not valid UTF-8")
    sep = fmt["sep"]
    lines = [sep.join(row) for row in rows]
    if kind == "blank_line":
        lines.insert(r, "")
        expect = ("error", line, labels[USER], "missing value")
    header = [fmt["header"]] if fmt["header"] else []
    if kind == "renamed_column" and fmt["header"]:
        names = fmt["header"].split(",")
        col = draw(st.sampled_from([USER, ITEM, RATING]))
        wanted = names[col]
        names[col] = wanted + "_x"
        header = [",".join(names)]
        expect = ("error", 1, wanted, "missing column")
    text = newline.join(header + lines) + ("" if kind == "no_final_newline" else newline)
    data = prefix + text.encode("utf-8", errors="surrogateescape")
    if kind == "empty":
        data, expect = b"", ("error", 1, None, "empty file")
    elif kind == "whitespace_only":
        data, expect = draw(st.sampled_from([b"\n", b"\n\n", b"  \n\t\n", b"\r\n"])), ("error", 1, None, "empty file")
    elif kind == "header_only" and fmt["header"]:
        data, expect = (fmt["header"] + "\n").encode(), ("error", 2, None, "no data rows")
    elif kind == "damage":
        data, expect = damage(draw, data), ("any",)
    return name, data, expect


def damage(draw, data: bytes) -> bytes:
    """1–4 random byte edits: insert random bytes, delete a span, flip a bit, truncate."""
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "flip", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)):]
        elif op == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
        elif op == "truncate":
            data = data[:at]
    return data


def check_rating_file(case):
    name, data, expect = case
    fmt = FORMATS[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / fmt["file"]
        path.write_bytes(data)
        try:
            loaded = load_movielens(tmp, variant=name)
        except DataError as err:
            assert expect[0] != "ok", f"valid file refused: {err}"
            if expect[0] == "error":
                assert_data_error(err, path, line=expect[1], field=expect[2], needle=expect[3])
            else:
                assert_data_error(err, path)
                assert err.line is None or 1 <= err.line <= data.count(b"\n") + 2, str(err)
            return
        assert expect[0] != "error", f"defect not detected: {expect}"
        if expect[0] == "ok":
            assert loaded.nnz == expect[1]
        assert np.all(np.isin(loaded.ratings, fmt["scale"]))


@pytest.mark.parametrize("n", BUDGETS)
def test_fuzz_rating_files(n):
    run_fuzz(check_rating_file, rating_files(), n)


# --- Coat (.ascii matrices) ------------------------------------------------------------------------

@st.composite
def coat_files(draw):
    """(train bytes, test bytes, expectation) for a small users x items matrix pair."""
    n_users, n_items = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    cell = st.integers(0, 5)
    train = [[draw(cell) for _ in range(n_items)] for _ in range(n_users)]
    test = [[draw(cell) for _ in range(n_items)] for _ in range(n_users)]
    train[0][0] = 3  # at least one rating
    target = draw(st.sampled_from(["train.ascii", "test.ascii"]))
    rows = train if target == "train.ascii" else test
    r, c = draw(st.integers(0, n_users - 1)), draw(st.integers(0, n_items - 1))
    kind = draw(st.sampled_from(["valid", "token", "out_of_range", "ragged", "shape", "non_ascii", "empty",
                                 "damage"]))
    tokens = [[str(v) for v in row] for row in rows]
    expect = ("ok",)
    if kind == "token":
        tokens[r][c] = draw(st.sampled_from(["x", "3.5", "nan", "1e3", "--2", "five"]))
        expect = ("error", target, r + 1, f"column {c + 1}", "expected integers")
    elif kind == "out_of_range":
        tokens[r][c] = draw(st.sampled_from(["6", "-1", "99", str(10**30)]))
        expect = ("error", target, r + 1, f"column {c + 1}", "outside 0..5")
    elif kind == "ragged" and n_users >= 2:
        tokens[-1] = tokens[-1] + ["1"]
        expect = ("error", target, n_users, None, "columns")
    elif kind == "shape":
        tokens = tokens + [["0"] * n_items]
        expect = ("error", "test.ascii", None, None, "train is")
    elif kind == "non_ascii":
        tokens[r][c] = "\u00e9" + tokens[r][c]
        expect = ("error", target, r + 1, f"column {c + 1}", "expected integers")
    body = ("\n".join(" ".join(row) for row in tokens) + "\n").encode()
    if kind == "empty":
        body, expect = b"", ("error", target, 1, None, "empty file")
    elif kind == "damage":
        body, expect = damage(draw, body), ("any",)
    other = ("\n".join(" ".join(map(str, row)) for row in (test if target == "train.ascii" else train)) + "\n").encode()
    files = {target: body, ("test.ascii" if target == "train.ascii" else "train.ascii"): other}
    return files, expect


def check_coat(case):
    files, expect = case
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in files.items():
            (Path(tmp) / name).write_bytes(body)
        try:
            loaded = load_coat(tmp)
        except DataError as err:
            assert expect[0] != "ok", f"valid files refused: {err}"
            if expect[0] == "error":
                assert_data_error(err, Path(tmp) / expect[1], line=expect[2], field=expect[3], needle=expect[4])
            else:
                assert err.path is not None and str(tmp) in str(err), str(err)
            return
        assert expect[0] != "error", f"defect not detected: {expect}"
        assert loaded.train.nnz + loaded.test.nnz >= 1


@pytest.mark.parametrize("n", BUDGETS)
def test_fuzz_coat_files(n):
    run_fuzz(check_coat, coat_files(), n)


# --- Douban (.mat, HDF5) ---------------------------------------------------------------------------

def douban_bytes(arrays: dict) -> bytes:
    """An HDF5 file with the given datasets, stored transposed as MATLAB v7.3 does."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=np.asarray(value).T)
    return buffer.getvalue()


@st.composite
def douban_files(draw):
    shape = (draw(st.integers(2, 6)), draw(st.integers(2, 6)))
    ratings = draw(st.lists(st.integers(1, 5), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]))
    m = np.asarray(ratings, np.float64).reshape(shape)
    train = np.zeros(shape)
    train[0, 0] = 1
    test = np.zeros(shape)
    test[-1, -1] = 1
    arrays = {"M": m, "Otraining": train, "Otest": test}
    kind = draw(st.sampled_from(["valid", "missing", "off_scale", "nan", "shape", "one_d", "strings", "truncate",
                                 "flip"]))
    expect = ("ok",)
    if kind == "missing":
        del arrays[draw(st.sampled_from(sorted(arrays)))]
        expect = ("error",)
    elif kind in ("off_scale", "nan"):
        m[0, 0] = np.nan if kind == "nan" else draw(st.sampled_from([0.0, 6.0, 2.5, -1.0]))
        expect = ("error",)
    elif kind == "shape":
        arrays["Otest"] = np.zeros((shape[0] + 1, shape[1]))
        expect = ("error",)
    elif kind == "one_d":
        arrays["Otraining"] = np.ones(3)
        expect = ("error",)
    elif kind == "strings":
        arrays["M"] = np.asarray([[b"a", b"b"], [b"c", b"d"]])
        expect = ("error",)
    data = douban_bytes(arrays)
    if kind == "truncate":
        data, expect = data[:draw(st.integers(0, len(data) - 1))], ("error",)
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1:]
        expect = ("any",)
    return data, expect


def check_douban(case):
    data, expect = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "training_test_dataset.mat"
        path.write_bytes(data)
        try:
            loaded = load_douban(tmp)
        except DataError as err:
            assert expect[0] != "ok", f"valid file refused: {err}"
            assert_data_error(err, path)
            return
        assert expect[0] != "error", "defect not detected"
        assert loaded.train.nnz >= 1 and np.all(np.isin(loaded.train.ratings, STARS))


@pytest.mark.parametrize("n", BUDGETS)
def test_fuzz_douban_mat_files(n):
    run_fuzz(check_douban, douban_files(), n)


# --- configs ---------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@st.composite
def raw_configs(draw):
    """A valid config dict with 1–3 defects: a field replaced by a random JSON value, an unknown
    key or section, a section that is not a mapping, or a field removed (which is allowed)."""
    raw = config_lib.testing().to_dict()
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(sorted(raw)))
        kind = draw(st.sampled_from(["value", "value", "value", "unknown_key", "unknown_section", "not_mapping",
                                     "remove"]))
        if kind == "value" and isinstance(raw[section], dict) and raw[section]:
            raw[section][draw(st.sampled_from(sorted(raw[section])))] = draw(JSON_VALUES)
        elif kind == "unknown_key" and isinstance(raw[section], dict):
            raw[section][draw(st.text(min_size=1, max_size=6))] = draw(JSON_VALUES)
        elif kind == "unknown_section":
            raw[draw(st.text(min_size=1, max_size=6))] = draw(JSON_VALUES)
        elif kind == "not_mapping":
            raw[section] = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
        elif kind == "remove" and isinstance(raw[section], dict) and raw[section]:
            del raw[section][draw(st.sampled_from(sorted(raw[section])))]
    return raw


def check_config(raw):
    try:
        config = Config.from_dict(raw)
    except ConfigError:
        return
    assert Config.from_dict(config.to_dict()) == config  # what is accepted is a valid, round-tripping config
    for section in config.to_dict().values():
        for value in section.values():
            assert not isinstance(value, float) or math.isfinite(value)


KNOWN_KEYS = [f"{s}.{k}" for s, fields in config_lib.testing().to_dict().items() for k in fields]
OVERRIDE_TEXT = st.one_of(
    st.text(max_size=40),
    st.builds(lambda key, value: f"{key}={value}",
              st.sampled_from(KNOWN_KEYS),
              st.one_of(st.text(max_size=12), st.builds(repr, JSON_VALUES), st.just("(" * 200))))


def check_override(text):
    try:
        config = config_lib.testing().override([text])
    except ConfigError as err:
        key = text.partition("=")[0].strip()
        if "=" in text and key in KNOWN_KEYS:  # a known field given a bad value: the message names it
            assert key in str(err), str(err)
        return
    assert Config.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("n", BUDGETS)
def test_fuzz_config_dicts(n):
    run_fuzz(check_config, raw_configs(), n)


@pytest.mark.parametrize("n", BUDGETS)
def test_fuzz_config_overrides(n):
    run_fuzz(check_override, OVERRIDE_TEXT, n)


def test_wrong_config_value_names_the_field():
    raw = config_lib.testing().to_dict()
    raw["train"]["batch_rows"] = "many"
    with pytest.raises(ConfigError, match=r"train\.batch_rows: expected int, got 'many'"):
        Config.from_dict(raw)
    with pytest.raises(ConfigError, match=r"model\.hidden: expected int"):
        config_lib.testing().override(["model.hidden=(16, 'x')"])
    with pytest.raises(ConvaeError, match=r"train\.learning_rate: expected finite float"):
        config_lib.testing().override(["train.learning_rate=float('nan')"])
