"""The prepared layout (`convae prepare`) and per-process input: a layout reads back as the
loader's data, bad input fails as the loader fails, each process reads only its own row groups,
and the pieces make the batches one process would build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convae_jax.cli import main
from convae_jax.data import RatingsTable, RowMatrix, load_dataset
from convae_jax.data.per_process import ProcessInput, deal_groups
from convae_jax.data.prepared import PreparedLayout, prepare_dataset, prepare_table
from convae_jax.errors import ConvaeError, DataError
from tests.conftest import dataset_dir

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "per_process_worker.py"
FIELDS = ("row", "row_mask", "segment", "col", "channel", "count")


def assert_same_data(found, expected):
    """Same index spaces, ids and scale, and the same entries (order aside: the layout sorts them)."""
    assert (found.n_users, found.n_items, found.channel_values) == (expected.n_users, expected.n_items,
                                                                     expected.channel_values)
    for ids in ("user_ids", "item_ids"):
        assert getattr(found, ids).dtype.kind == getattr(expected, ids).dtype.kind
        np.testing.assert_array_equal(getattr(found, ids), getattr(expected, ids))
    for orientation in ("user", "item"):
        a, b = (RowMatrix.from_interactions(d, orientation=orientation) for d in (found, expected))
        for field in ("indptr", "col", "channel", "count"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.fixture(scope="module")
def ml100k_layout(tmp_path_factory):
    """ML-100K in user rows, read 256 KiB at a time (8 chunks) and sorted 20 000 entries at a time."""
    out = tmp_path_factory.mktemp("prepared") / "ml-100k"
    return prepare_dataset("ml-100k", dataset_dir("ml-100k"), out, orientation="user", rows_per_group=50,
                           chunk_bytes=1 << 18, bucket_entries=20_000)


def test_prepared_ml100k_reads_back_as_the_loaders_interactions(ml100k_layout):
    layout = PreparedLayout.open(ml100k_layout.path)
    expected = load_dataset("ml-100k", dataset_dir("ml-100k")).train
    assert_same_data(layout.interactions("train"), expected)
    # 943 users in row groups of exactly 50 records, the last one shorter.
    assert layout.group_rows("train").tolist() == [50] * 18 + [43]
    matrix = RowMatrix.from_interactions(expected, orientation="user")
    assert layout.entry_budget("train", 16) == 2176  # entry_budget(matrix.lengths, 16), written out
    from convae_jax.data.batches import entry_budget
    assert layout.entry_budget("train", 16) == entry_budget(matrix.lengths, 16)


def test_coat_with_its_fixed_split_reads_back_as_loaded(tmp_path):
    layout = prepare_dataset("coat", dataset_dir("coat"), tmp_path / "coat", orientation="item", rows_per_group=64)
    expected = load_dataset("coat", dataset_dir("coat"))
    assert sorted(layout.parts) == ["test", "train"]
    assert_same_data(layout.interactions("train"), expected.train)
    assert_same_data(layout.interactions("test"), expected.test)


TABLE = "user;item;stars\n" + "".join(f"{u};{i};{1 + (len(u) * 7 + i) % 5}\n" for u in ("007", "12", "3", "x9")
                                      for i in range(1, 12) if (len(u) + i) % 3)
TEST = "user;item;stars\n007;2;4\nx9;3;1\n3;1;5\n"


@pytest.mark.parametrize("chunk_bytes", [None, 40])
def test_own_table_with_text_ids_and_a_test_file_reads_back_as_loaded(tmp_path, chunk_bytes):
    (tmp_path / "r.csv").write_text(TABLE)
    (tmp_path / "t.csv").write_text(TEST)
    table = RatingsTable.from_text(ratings=tmp_path / "r.csv", test=tmp_path / "t.csv", columns="user,item,stars",
                                   scale="1,2,3,4,5")
    options = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes, "bucket_entries": 5}
    layout = prepare_table(table, tmp_path / "layout", orientation="item", rows_per_group=4, **options)
    train, test = table.load()
    assert layout.id_kinds == {"user": "text", "item": "int"}  # '007' keeps the users text, as the loader reads them
    assert_same_data(layout.interactions("train"), train)
    assert_same_data(layout.interactions("test"), test)


def test_parquet_table_reads_back_as_loaded(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"u": [5, 5, 9, 1, 9], "i": [10, 30, 10, 20, 20], "r": [1.0, 0.5, 2.0, 1.5, 2.0]})
    frame.to_parquet(tmp_path / "r.parquet")
    table = RatingsTable.from_text(ratings=tmp_path / "r.parquet", columns="u,i,r", scale="0.5:2:0.5")
    layout = prepare_table(table, tmp_path / "layout", orientation="user", chunk_bytes=128)  # 2 rows a chunk
    assert_same_data(layout.interactions(), table.load()[0])


GOOD = [f"{u}\t{i}\t{1 + (u + i) % 5}\t0".encode() for u in range(1, 30) for i in range(1, 6)]  # 145 lines, ~10 a chunk


@pytest.mark.parametrize("line, bad", [
    (120, b"7\t3\t9\t0"),  # a rating off the scale
    (121, b"7\t3\t2"),  # a missing field
    (122, b"7\t3\t2\t0\t1"),  # an extra field
    (123, b"7\tx\t2\t0"),  # an id that is not an integer
    (124, b"7\t\xff\t2\t0"),  # not UTF-8
    (125, b"1\t1\t2\t0"),  # a (user, item) pair seen on line 1
])
def test_bad_input_fails_as_the_loader_fails_naming_file_and_line(tmp_path, line, bad):
    """ML-100K's layout, the defect in a chunk far from the first: the loader's message, at the
    file's own line, and nothing written."""
    lines = GOOD[:]
    lines.insert(line - 1, bad)
    (tmp_path / "u.data").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError) as expected:
        load_dataset("ml-100k", tmp_path)
    with pytest.raises(DataError) as found:
        prepare_dataset("ml-100k", tmp_path, tmp_path / "layout", orientation="item", chunk_bytes=100,
                        bucket_entries=7)
    assert str(found.value) == str(expected.value)
    assert str(found.value).startswith(f"{tmp_path / 'u.data'}:{line} ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.data"]


@pytest.mark.parametrize("bad", ["12,99999999999,1", "x9,4,", "007,5,1"])  # item id past 2³¹−1, no rating, a repeated pair
def test_own_table_defects_fail_as_the_loader_fails(tmp_path, bad):
    lines = [f"{u},{i},{1 + i % 5}" for u in ("007", "12", "x9") for i in range(1, 9)]
    lines.insert(17, bad)
    (tmp_path / "r.csv").write_text("user,item,stars\n" + "\n".join(lines) + "\n")
    table = RatingsTable.from_text(ratings=tmp_path / "r.csv", columns="user,item,stars", scale="1,2,3,4,5")
    with pytest.raises(DataError) as expected:
        table.load()
    with pytest.raises(DataError) as found:
        prepare_table(table, tmp_path / "layout", orientation="item", chunk_bytes=30, bucket_entries=4)
    assert str(found.value) == str(expected.value)
    assert str(found.value).startswith(f"{tmp_path / 'r.csv'}:19 ")
    assert not (tmp_path / "layout").exists()


def test_a_test_id_missing_from_training_fails_at_its_line(tmp_path):
    (tmp_path / "r.csv").write_text(TABLE)
    (tmp_path / "t.csv").write_text(TEST + "zz;1;1\n")
    table = RatingsTable.from_text(ratings=tmp_path / "r.csv", test=tmp_path / "t.csv", columns="user,item,stars",
                                   scale="1,2,3,4,5")
    with pytest.raises(DataError, match=r"t\.csv:5 \[user\]: user id zz is not in the training data"):
        prepare_table(table, tmp_path / "layout", orientation="user", chunk_bytes=40)
    assert not (tmp_path / "layout").exists()


def readers(layout, *, processes, parts, seed=1, batch_rows=16):
    return [ProcessInput(layout, process_index=p, process_count=processes, parts=parts, seed=seed,
                         batch_rows=batch_rows) for p in range(processes)]


def test_each_process_reads_only_its_row_groups_and_together_every_row_once(ml100k_layout):
    group_rows = ml100k_layout.group_rows("train")
    for epoch in (1, 2):
        processes = readers(ml100k_layout, processes=3, parts=6, batch_rows=24)
        steps = max(reader.local_steps(epoch) for reader in processes)
        dealt = deal_groups(len(group_rows), parts=6, seed=1, epoch=epoch)
        seen = []
        for p, reader in enumerate(processes):
            own = np.concatenate(dealt[2 * p:2 * p + 2])
            assert sorted(group for group, _ in reader.reads) == sorted(own)  # planning read its own groups' lengths
            reader.reads.clear()
            pieces = list(reader.batches(epoch, steps=steps))
            assert len(pieces) == steps
            assert sorted(group for group, _ in reader.reads) == sorted(own)
            rows_read = sum(n for _, n in reader.reads)
            assert rows_read == group_rows[own].sum()
            rows = np.concatenate([b.row[b.row_mask > 0] for b in pieces])
            assert rows.size == rows_read
            seen.append(rows)
            # rows are those of the process's groups: 50 consecutive user rows per group
            np.testing.assert_array_equal(np.unique(rows // 50), np.sort(own))
        everything = np.concatenate(seen)
        np.testing.assert_array_equal(np.sort(everything), np.arange(943))


def test_padding_pieces_are_ignored_by_the_loss(ml100k_layout):
    reader = readers(ml100k_layout, processes=2, parts=2)[1]
    steps = reader.local_steps(1)
    pieces = list(reader.batches(1, steps=steps + 3))
    for piece in pieces[steps:]:
        assert piece.row_mask.sum() == 0 and piece.count.sum() == 0
        assert np.all(piece.segment == 16)  # the global batch's row count marks padding
    with pytest.raises(ValueError, match="more than"):
        list(reader.batches(1, steps=steps - 1))


def test_pieces_of_several_processes_make_one_processs_batches(ml100k_layout):
    """For 1, 2 and 4 processes over 4 parts, every step's pieces laid end to end are the same batch;
    another epoch or seed gives other batches."""
    def global_batches(processes, *, epoch=1, seed=1):
        group = readers(ml100k_layout, processes=processes, parts=4, seed=seed)
        steps = max(reader.local_steps(epoch) for reader in group)
        pieces = [list(reader.batches(epoch, steps=steps)) for reader in group]
        return [{f: np.concatenate([getattr(p[s], f) for p in pieces]) for f in FIELDS} for s in range(steps)]

    one = global_batches(1)
    for processes in (2, 4):
        many = global_batches(processes)
        assert len(many) == len(one)
        for a, b in zip(one, many):
            for field in FIELDS:
                np.testing.assert_array_equal(a[field], b[field])
    assert not np.array_equal(one[0]["row"], global_batches(1, epoch=2)[0]["row"])
    assert not np.array_equal(one[0]["row"], global_batches(1, seed=2)[0]["row"])


def test_global_batch_from_process_pieces_on_four_devices(ml100k_layout):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               JAX_PLATFORMS="cpu")
    process = subprocess.Popen([sys.executable, str(WORKER), str(ml100k_layout.path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err[-3000:]
    found = json.loads(out)
    for mesh in ("4x1", "2x2"):
        assert found[mesh]["equal"] and found[mesh]["shards_match"], found
        assert found[mesh]["steps"] == found[mesh]["two_process_steps"] > 1


def test_layout_for_another_orientation_or_data_is_refused(ml100k_layout):
    with pytest.raises(ConvaeError, match="prepared with user rows.*model.orientation='item'"):
        ml100k_layout.require(orientation="item")
    with pytest.raises(ConvaeError, match="prepared from other data"):
        ml100k_layout.require(orientation="user", fingerprint="0" * 64)
    ml100k_layout.require(orientation="user", fingerprint=ml100k_layout.fingerprint)
    with pytest.raises(ConvaeError, match="process index 2 outside 0..1"):
        ProcessInput(ml100k_layout, process_index=2, process_count=2, parts=2, seed=0, batch_rows=16)
    with pytest.raises(ConvaeError, match="4 data-parallel devices cannot be split evenly over 3 processes"):
        ProcessInput(ml100k_layout, process_index=0, process_count=3, parts=4, seed=0, batch_rows=16)


def test_cli_prepare_writes_a_layout_and_refuses_bad_calls(tmp_path, capsys):
    (tmp_path / "r.csv").write_text(TABLE)
    out = tmp_path / "layout"
    assert main(["prepare", "--ratings", str(tmp_path / "r.csv"), "--columns", "user,item,stars", "--scale", "1:5:1",
                 "--out", str(out), "--orientation", "user", "--rows-per-group", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parts"]["train"] == {"nnz": TABLE.count("\n") - 1, "records": 4, "row_groups": 2}
    layout = PreparedLayout.open(out)
    assert layout.orientation == "user"
    (out / "train.parquet").write_bytes((out / "train.parquet").read_bytes()[:-40])  # truncated
    with pytest.raises(DataError, match=r"train\.parquet: not a readable Parquet file"):
        layout.interactions()
    assert main(["prepare", "--ratings", str(tmp_path / "r.csv"), "--columns", "user,item,stars", "--scale", "1:5:1",
                 "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["prepare", "--dataset", "ml-100k", "--out", str(tmp_path / "other")]) == 2
    assert "needs --data-dir" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout", "r.csv"]


def test_hashed_holdouts_are_the_pairs_the_readers_leave_out(ml100k_layout):
    """`convae train --prepared`'s split: ~10% test and ~5% validation pairs by a seeded hash, and
    3 processes reading their own row groups with its filter read exactly the training pairs."""
    from convae_jax import config as config_lib
    from convae_jax.experiment import prepared_split

    config = config_lib.testing().override(["model.orientation=user", "train.validation_fraction=0.05"])
    train, validation, test, prepared = prepared_split(ml100k_layout.path, config)
    assert train.nnz + validation.nnz + test.nnz == 100_000
    assert abs(test.nnz - 10_000) < 400 and abs(validation.nnz - 5_000) < 300  # binomial sd ~95 and ~69
    again = prepared_split(ml100k_layout.path, config.override(["eval.split_seed=1"]))[2]
    assert not np.array_equal(np.sort(again.user * 2000 + again.item), np.sort(test.user * 2000 + test.item))
    processes = [ProcessInput(ml100k_layout, process_index=p, process_count=3, parts=3, seed=1, batch_rows=24,
                              budget=4096, keep=prepared.keep) for p in range(3)]
    steps = max(reader.local_steps(1) for reader in processes)
    pairs = []
    for reader in processes:
        for batch in reader.batches(1, steps=steps):
            real = batch.count > 0
            pairs.append(batch.row[batch.segment[real] % 8] * 2000 + batch.col[real])
    expected = np.sort(train.user.astype(np.int64) * 2000 + train.item)
    np.testing.assert_array_equal(np.sort(np.concatenate(pairs)), expected)
