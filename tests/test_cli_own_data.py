"""`convae train --ratings FILE ...` end to end on small tables made in a temp dir (the layouts of
ML-latest-small, ML-100K, a Parquet file, an implicit-only log), the refusals of bad input, and the
learning-curve PNG every run writes."""

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from convae_jax.cli import main
from convae_jax.data import RatingsTable, load_dataset
from convae_jax.data.loaders import HALF_STARS, IMPLICIT
from convae_jax.data.table import (
    has_header,
    parse_columns,
    parse_scale,
    sniff_separator,
)
from convae_jax.errors import ConvaeError, DataError
from convae_jax.io import load_model
from tests.conftest import dataset_dir

N_USERS, N_ITEMS, PER_USER = 30, 20, 8  # 240 ratings; the seeded 10% hold-out is 24 of them
QUICK = ["--preset", "testing", "--set", "train.max_epochs=2"]
PNG_SHAPE = (418, 704)  # learning_curve's figure: 6.4 x 3.8 inches at 110 dpi


def ratings(seed=0, *, scale=(1, 2, 3, 4, 5)):
    """(user, item, rating) rows: users 101.., items 501.., PER_USER distinct items each."""
    rng = np.random.default_rng(seed)
    return [(101 + u, 501 + i, rng.choice(scale)) for u in range(N_USERS)
            for i in rng.choice(N_ITEMS, size=PER_USER, replace=False)]


def train(argv, run, capsys) -> dict:
    """Runs `convae train`; checks what every run writes and prints, the PNG read back; the metrics."""
    assert main(["train", *argv, "--workdir", str(run), *QUICK]) == 0
    out = capsys.readouterr().out
    assert f"learning curve: {run / 'learning_curve.png'}" in out
    for name in ("run.json", "history.json", "metrics.json", "model/manifest.json"):
        assert (run / name).is_file(), name
    check_png(run / "learning_curve.png")
    return json.loads((run / "metrics.json").read_text())


def check_png(path):
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == PNG_SHAPE
    grey = pixels[..., :3].mean(axis=2)
    assert grey.std() > 0.05 and (grey < 0.5).mean() > 0.005  # lines and text drawn on white, not a blank page


def recommended(run, user, capsys, k=5) -> list[str]:
    assert main(["recommend", "--workdir", str(run), "--user", str(user), "-k", str(k)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == k + 1
    return [line.split("item=")[1].split()[0] for line in lines[1:]]


def seen_items(run, user) -> set[str]:
    train = load_model(run / "model").train
    return {str(i) for i in train.item_ids[train.item[train.user == train.user_index(user)]]}


def test_csv_with_header_as_ml_latest_small(tmp_path, capsys):
    """Header, CRLF, half stars, the seeded hold-out; then evaluate, recommend, explain and resume
    on the run with the file's raw ids."""
    rows = ratings(scale=HALF_STARS)
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\r\n" + "".join(f"{u},{i},{r},964982703\r\n" for u, i, r in rows))
    run = tmp_path / "run"
    metrics = train(["--ratings", str(path), "--columns", "userId,movieId,rating", "--scale", "0.5:5:0.5"], run, capsys)
    assert metrics["dataset"] == "ratings.csv" and metrics["test"]["n"] == 24
    assert 0 < metrics["test"]["rmse"] < 4.5 and 0 <= metrics["test"]["recall@20"] <= 1

    record = json.loads((run / "run.json").read_text())["table"]
    assert record["ratings"] == str(path.resolve()) and record["scale"] == list(HALF_STARS)
    train_part = load_model(run / "model").train
    assert (train_part.nnz, train_part.n_users, train_part.channel_values) == (240 - 24, N_USERS, HALF_STARS)

    assert main(["evaluate", "--workdir", str(run)]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    np.testing.assert_allclose(evaluation["test"]["rmse"], metrics["test"]["rmse"], rtol=1e-6)

    capsys.readouterr()
    items = recommended(run, 107, capsys)
    assert set(items) <= {str(501 + i) for i in range(N_ITEMS)} and not set(items) & seen_items(run, 107)
    assert main(["explain", "--workdir", str(run), "--user", "107", "--item", items[0]]) == 0
    assert "seen: False" in capsys.readouterr().out

    assert main(["train", "--resume", str(run)]) == 0  # finished: re-evaluated only, the same numbers
    assert json.loads((run / "metrics.json").read_text()) == metrics
    check_png(run / "learning_curve.png")


def test_headerless_tsv_as_ml_100k_with_a_test_file(tmp_path, capsys):
    """Positions, no header (detected), tab sniffed; the test file is the test set."""
    rows = ratings(seed=1)
    base = [row for k, row in enumerate(rows) if k % 6]  # every user keeps 6 or more of their 8
    test = [row for row in rows[::6] if row[1] in {i for _, i, _ in base}]
    for name, part in (("u1.base", base), ("u1.test", test)):
        (tmp_path / name).write_text("".join(f"{u}\t{i}\t{r}\t881250949\n" for u, i, r in part))
    run = tmp_path / "run"
    metrics = train(["--ratings", str(tmp_path / "u1.base"), "--test", str(tmp_path / "u1.test"), "--columns", "0,1,2",
                     "--scale", "1,2,3,4,5"], run, capsys)
    assert len(test) >= 30 and metrics["test"]["n"] == len(test)
    assert load_model(run / "model").train.nnz == len(base) == 200  # the test file's pairs are not trained on
    user = rows[-1][0]
    items = recommended(run, user, capsys, k=3)
    assert not set(items) & seen_items(run, user)


def test_parquet_with_text_ids(tmp_path, capsys):
    rows = ratings(seed=2)
    path = tmp_path / "ratings.parquet"
    pd.DataFrame({"customer": [f"c{u}" for u, _, _ in rows], "sku": [f"s{i}" for _, i, _ in rows],
                  "stars": [float(r) for _, _, r in rows]}).to_parquet(path)
    run = tmp_path / "run"
    metrics = train(["--ratings", str(path), "--columns", "customer,sku,stars", "--scale", "1:5:1"], run, capsys)
    assert metrics["test"]["n"] == 24
    items = recommended(run, "c110", capsys)
    assert all(item.startswith("s") for item in items) and not set(items) & seen_items(run, "c110")


def test_implicit_only_file_is_one_channel_ranked_on_ndcg(tmp_path, capsys):
    """No rating column: one channel; the epoch is chosen on validation NDCG@100 and the test
    reports ranking metrics only (rating metrics of one channel are trivially perfect)."""
    path = tmp_path / "clicks.txt"
    path.write_text("customer;product\n" + "".join(f"u{u};p{i}\n" for u, i, _ in ratings(seed=3)))
    run = tmp_path / "run"
    metrics = train(["--ratings", str(path), "--columns", "customer,product"], run, capsys)
    assert set(metrics["test"]) == {"recall@20", "ndcg@20", "n_users"} and 0 < metrics["test"]["ndcg@20"] <= 1
    assert load_model(run / "model").train.channel_values == IMPLICIT
    assert json.loads((run / "run.json").read_text())["config"]["train"]["select_metric"] == "neg_ndcg@100"
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 2 and all(-1 <= r["validation"]["neg_ndcg@100"] < 0 for r in history)
    items = recommended(run, "u105", capsys, k=4)
    assert all(item.startswith("p") for item in items) and not set(items) & seen_items(run, "u105")
    assert main(["recommend", "--workdir", str(run), "--user", "u105", "-k", "4"]) == 0
    assert "expected_rating" not in capsys.readouterr().out  # no ratings: no rating columns
    assert main(["recommend", "--workdir", str(run), "--user", "u105", "--mode", "enjoy"]) == 2
    assert "trained without ratings" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["off_scale", "missing_column", "unseen_test_id"])
def test_bad_input_is_one_line_naming_file_line_field_and_leaves_no_run(tmp_path, capsys, case):
    good = tmp_path / "r.tsv"
    good.write_text("".join(f"{u}\t{i}\t{r}\n" for u, i, r in ratings()))
    argv, where = ["--ratings", str(good), "--columns", "0,1,2", "--scale", "1,2,3,4,5"], None
    if case == "off_scale":
        bad = tmp_path / "r.csv"
        bad.write_text("user,item,rating\n1,1,4\n1,2,5\n2,1,4.5\n")
        argv, where = ["--ratings", str(bad), "--columns", "user,item,rating", "--scale", "1,2,3,4,5"], f"{bad}:4 [rating]"
    elif case == "missing_column":
        bad = tmp_path / "r.csv"
        bad.write_text("user,item,rating\n1,1,4\n")
        argv, where = ["--ratings", str(bad), "--columns", "user,item,stars", "--scale", "1,2,3,4,5"], f"{bad}:1 [stars]"
    else:
        bad = tmp_path / "t.tsv"
        bad.write_text("101\t501\t3\n102\t502\t4\n999\t503\t5\n")
        argv, where = argv + ["--test", str(bad)], f"{bad}:3 [0]"
    run = tmp_path / "run"
    assert main(["train", *argv, "--workdir", str(run), "--preset", "testing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convae: error: {where}: ") and err.count("\n") == 1, err
    assert not run.exists()


def test_table_flags_refuse_mixing_and_missing_parts(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--columns", "0,1", "--workdir", run]) == 2
    assert "--columns: these describe a ratings file; name it with --ratings" in capsys.readouterr().err
    assert main(["train", "--ratings", "r.csv", "--dataset", "ml-100k", "--columns", "0,1", "--workdir", run]) == 2
    assert "drop --dataset and --data-dir" in capsys.readouterr().err
    assert main(["train", "--ratings", "r.csv", "--columns", "0,1,2", "--workdir", run]) == 2
    assert "a rating column needs a scale" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_scale_and_columns_words():
    assert parse_scale("0.5:5:0.5") == HALF_STARS and parse_scale("1:5:1") == parse_scale("1,2,3,4,5") == (1, 2, 3, 4, 5)
    assert parse_scale("-2:2:2") == (-2.0, 0.0, 2.0)
    for bad in ("0.5:5:0.4", "5:1:1", "1,two", "1:5", "1,nan"):
        with pytest.raises(ConvaeError, match="scale"):
            parse_scale(bad)
    assert parse_columns("userId, movieId ,2") == ("userId", "movieId", 2)
    with pytest.raises(ConvaeError, match="columns: expected user,item"):
        RatingsTable.from_text(ratings="r.csv", columns="0")
    with pytest.raises(ConvaeError, match="strictly increasing"):
        RatingsTable.from_text(ratings="r.csv", columns="0,1,2", scale="3,2,1")
    with pytest.raises(ConvaeError, match="without a header"):
        RatingsTable.from_text(ratings="r.csv", columns="user,item", header=False)


def test_separator_and_header_are_told_from_the_first_lines(tmp_path):
    assert sniff_separator(["1\t2\t3", "4\t5\t6"], path="f") == "\t"
    assert sniff_separator(['u,"Toy Story, The",4', "v,Heat,5"], path="f") == ","  # quotes respected
    assert sniff_separator(["1::2::3", "4::5::6"], path="f") == "::"
    with pytest.raises(DataError, match=r"^f:1: cannot tell the field separator"):
        sniff_separator(["1,2", "3;4;5"], path="f")
    assert has_header(["userId,movieId,rating", "1,2,4.5"], ",") and not has_header(["1,2,4.5", "3,4,5"], ",")
    assert not has_header(["alice,book", "bob,pen"], ",")  # text ids alone cannot tell: declare it
    path = tmp_path / "r.csv"
    path.write_text("alice,book\nbob,pen\ncarl,book\n")
    for header, nnz in ((False, 3), (True, 2)):
        data, test = RatingsTable.from_text(ratings=path, columns="0,1", header=header).load()
        assert data.nnz == nnz and test is None


def test_the_readme_command_reads_ml_latest_small_as_the_named_loader_does():
    path = dataset_dir("ml-latest-small") / "ratings.csv"
    own, test = RatingsTable.from_text(ratings=path, columns="userId,movieId,rating", scale="0.5:5:0.5").load()
    named = load_dataset("ml-latest-small", path.parent).train
    assert test is None and (own.nnz, own.n_users, own.n_items) == (100_836, 610, 9_724)
    for name in ("user", "item", "channel", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(own, name), getattr(named, name))
