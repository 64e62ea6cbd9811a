"""Loaders, validation of bad input, splits and sparse batches."""

import numpy as np
import pandas as pd
import pytest

from convae_jax.data import (
    Interactions,
    RowMatrix,
    entry_budget,
    holdout_interactions,
    holdout_per_user,
    holdout_users,
    iterate_batches,
    load_dataset,
    load_movielens,
    load_ratings_table,
)
from convae_jax.errors import DataError
from tests.conftest import dataset_dir


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_movielens_100k_format(tmp_path):
    write(tmp_path, "u.data", "10\t5\t3\t881250949\n7\t5\t5\t881250950\n10\t9\t1\t881250951\n")
    data = load_movielens(tmp_path, variant="100k")
    assert (data.n_users, data.n_items, data.nnz) == (2, 2, 3)
    assert list(data.user_ids) == [7, 10] and list(data.item_ids) == [5, 9]
    np.testing.assert_array_equal(np.sort(data.ratings), [1.0, 3.0, 5.0])


def test_movielens_dat_and_csv_formats(tmp_path):
    write(tmp_path, "ratings.dat", "1::10::4::978300760\n2::10::2::978302109\n")
    assert load_movielens(tmp_path, variant="1m").nnz == 2
    write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\r\n1,1,4.5,9\r\n1,2,0.5,9\r\n")
    data = load_movielens(tmp_path, variant="latest")
    assert data.n_channels == 10
    np.testing.assert_array_equal(np.sort(data.ratings), [0.5, 4.5])


def test_named_column_table(tmp_path):
    path = write(tmp_path, "r.tsv", "who\twhat\tstars\nann\tx\t2\nbob\tx\t4\n")
    data = load_ratings_table(path, user_col="who", item_col="what", rating_col="stars", sep="\t",
                              scale=(1, 2, 3, 4, 5), integer_ids=False)
    assert data.user_index("bob") == 1 and data.nnz == 2


def test_parquet_table(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame({"u": [1, 2], "i": [3, 3], "r": [5.0, 1.0]}).to_parquet(path)
    data = load_ratings_table(path, user_col="u", item_col="i", rating_col="r", scale=(1, 2, 3, 4, 5))
    assert data.nnz == 2


@pytest.mark.parametrize("text, line, needle", [
    ("1\t1\t3\t0\n2\tabc\t4\t0\n", 2, "expected an integer id"),
    ("1\t1\t3\t0\n2\t2\t7\t0\n", 2, "not on the scale"),
    ("1\t1\t3\t0\n2\t2\t4\t0\n1\t1\t5\t0\n", 3, "duplicate (user, item) pair"),
    ("1\t1\t3\t0\n2\t2\t4\t0\t9\t9\n", 2, "wrong number of fields"),
    ("1\t1\tnan\t0\n", 1, "not on the scale"),
    ("1\t-4\t3\t0\n", 1, "expected an integer id"),
])
def test_bad_input_names_file_and_line(tmp_path, text, line, needle):
    write(tmp_path, "u.data", text)
    with pytest.raises(DataError) as err:
        load_movielens(tmp_path, variant="100k")
    assert f"u.data:{line}" in str(err.value) and needle in str(err.value)


def test_empty_file_is_refused(tmp_path):
    write(tmp_path, "u.data", "")
    with pytest.raises(DataError, match=r"u\.data:1: empty file"):
        load_movielens(tmp_path, variant="100k")


def test_interactions_validate_on_build():
    with pytest.raises(DataError, match="item index out of range"):
        Interactions.build([0], [5], [0], n_users=1, n_items=2, channel_values=(1.0,))


def test_holdout_interactions_is_seeded_partition(small_data):
    kept, held = holdout_interactions(small_data, fraction=0.1, seed=4)
    again, _ = holdout_interactions(small_data, fraction=0.1, seed=4)
    assert kept.nnz + held.nnz == small_data.nnz and held.nnz == round(0.1 * small_data.nnz)
    np.testing.assert_array_equal(kept.user, again.user)
    pairs = lambda d: set(zip(d.user.tolist(), d.item.tolist()))
    assert not pairs(kept) & pairs(held)


def test_holdout_users_fold_in_split(small_data):
    split = holdout_users(small_data, n_val_users=5, n_test_users=6, seed=0)
    test_users = set(split.test_fold_in.user.tolist())
    assert len(test_users) == 6 and not test_users & set(split.train.user.tolist())
    for user in test_users:  # 12 items each: floor(0.2 * 12) = 2 targets
        assert np.sum(split.test_target.user == user) == 2
        assert np.sum(split.test_fold_in.user == user) == 10


def test_holdout_per_user_holds_out_a_fifth_of_each_user(small_data):
    data = small_data.subset(small_data.user < 20)
    data = data.subset(~((data.user == 3) & (np.arange(data.nnz) % 3 > 0)))  # user 3 keeps 4 of 12
    history, target = holdout_per_user(data, seed=1)
    pairs = lambda d: set(zip(d.user.tolist(), d.item.tolist()))
    assert pairs(history) | pairs(target) == pairs(data) and not pairs(history) & pairs(target)
    held = np.bincount(target.user, minlength=20)
    assert held[3] == 0 and np.all(np.delete(held, 3) == 2)  # floor(0.2 * 12) = 2; fewer than 5: none
    assert pairs(holdout_per_user(data, seed=1)[1]) == pairs(target) != pairs(holdout_per_user(data, seed=2)[1])


def test_batches_have_fixed_shapes_and_cover_every_entry(small_data):
    matrix = RowMatrix.from_interactions(small_data, orientation="item")
    budget = entry_budget(matrix.lengths, 7)
    seen = 0
    for batch in iterate_batches(matrix, np.random.default_rng(0).permutation(matrix.n_rows), batch_rows=7, budget=budget):
        assert batch.row.shape == (7,) and batch.col.shape == (budget,)
        real = batch.segment < 7
        assert np.all(batch.count[~real] == 0)
        np.testing.assert_array_equal(np.bincount(batch.segment[real], minlength=7),
                                      matrix.lengths[batch.row] * batch.row_mask)
        seen += int(real.sum())
    assert seen == small_data.nnz


def test_real_movielens_100k():
    data = load_dataset("ml-100k", dataset_dir("ml-100k")).train
    assert (data.nnz, data.n_users, data.n_items) == (100_000, 943, 1682)
    np.testing.assert_array_equal(np.bincount(data.channel), [6110, 11370, 27145, 34174, 21201])


def test_real_douban_fixed_split():
    data = load_dataset("douban", dataset_dir("douban"))
    assert (data.train.nnz, data.test.nnz) == (123_202, 13_689)
    assert data.train.n_users == data.train.n_items == 3000


def test_real_coat_and_latest_small():
    coat = load_dataset("coat", dataset_dir("coat"))
    assert (coat.train.nnz, coat.test.nnz) == (6960, 4640)
    np.testing.assert_array_equal(np.bincount(coat.train.channel), [1901, 1437, 1717, 1275, 630])
    latest = load_dataset("ml-latest-small", dataset_dir("ml-latest-small")).train
    assert (latest.nnz, latest.n_users, latest.n_channels) == (100_836, 610, 10)
