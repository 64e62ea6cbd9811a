"""The random-exposure protocol: its metrics on a hand-built model, the loader of one's own
self-selected and randomly exposed files, and the comparison run on such files."""

import json

import numpy as np
import pytest

from benchmarks.accuracy import __main__ as accuracy_cli
from convae_jax.data import Interactions, RatingsTable, load_random_exposure
from convae_jax.errors import ConvaeError, DataError
from convae_jax.evaluate import random_exposure_protocol

VALUES = (1.0, 2.0, 3.0, 4.0, 5.0)


class TwoLevelModel:
    """P(rating = 5) = p_item, P(rating = 1) = 1 − p_item: expected rating 1 + 4 p_item, P(≥ 4) = p_item."""

    def __init__(self, p_item):
        self.p_item = np.asarray(p_item, np.float64)

    def rating_log_probs(self, users, items):
        p = self.p_item[np.asarray(items)]
        with np.errstate(divide="ignore"):
            return np.log(np.stack([1 - p, 0 * p, 0 * p, 0 * p, p], axis=1))


def test_protocol_by_hand():
    # User 0 was shown items 0, 1, 2 and liked 0 and 2; user 1 was shown 1, 2 and liked 1.
    test = Interactions.build([0, 0, 0, 1, 1], [0, 1, 2, 1, 2], [4, 1, 3, 4, 0], n_users=2, n_items=3,
                              channel_values=VALUES)
    model = TwoLevelModel([0.75, 0.5, 0.25])  # expected ratings 4, 3, 2
    result = random_exposure_protocol(model, test, k=1)
    errors = np.array([4 - 5, 3 - 2, 2 - 4, 3 - 5, 2 - 1], np.float64)
    np.testing.assert_allclose(result["rmse"], np.sqrt(np.mean(errors**2)), rtol=1e-12)
    np.testing.assert_allclose(result["mae"], np.mean(np.abs(errors)), rtol=1e-12)
    # AUC: user 0, liked {4, 2} vs not {3}: one of two pairs right -> 0.5; user 1, liked {3} vs {2} -> 1.
    assert result["user_auc/expected_rating"] == result["user_auc/p_liked"] == pytest.approx(0.75, abs=1e-12)
    # Precision@1: user 0's top item (0) is liked, user 1's (1) is liked.
    assert result["user_p@1/expected_rating"] == result["user_p@1/p_liked"] == 1.0
    assert (result["n_users_auc"], result["n_users_p@1"]) == (2, 2)
    # The rating 2 given to item 1 has probability 0 under this model: the NLL says so.
    assert result["nll"] == np.inf


def test_point_predictions_rank_and_rate_where_a_model_has_them():
    class PointModel:
        def predict_ratings(self, users, items):
            return np.array([5.0, 1.0, 3.0])[np.asarray(items)]

    test = Interactions.build([0, 0, 0], [0, 1, 2], [4, 0, 0], n_users=1, n_items=3, channel_values=VALUES)
    result = random_exposure_protocol(PointModel(), test)
    assert result["rmse"] == pytest.approx(np.sqrt(4 / 3)) and result["user_auc/expected_rating"] == 1.0
    assert "nll" not in result and "user_auc/p_liked" not in result


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def own_files(tmp_path, test_lines):
    ratings = write(tmp_path / "chosen.csv", ["user,item,rating", "a,x,5", "a,y,4", "b,x,3", "b,z,1", "c,y,2"])
    return RatingsTable(ratings=ratings, columns=("user", "item", "rating"), scale=VALUES,
                        test=write(tmp_path / "shown.csv", ["user,item,rating", *test_lines]))


def test_own_random_exposure_files_load_on_the_training_index(tmp_path):
    dataset = load_random_exposure(own_files(tmp_path, ["b,y,5", "c,z,1"]))
    assert dataset.name == "chosen.csv" and (dataset.train.nnz, dataset.test.nnz) == (5, 2)
    assert [dataset.train.user_ids[u] for u in dataset.test.user] == ["b", "c"]
    assert [dataset.train.item_ids[i] for i in dataset.test.item] == ["y", "z"]


@pytest.mark.parametrize(("line", "message"), [("d,x,3", r"shown.csv:3 \[user\]: user id d is not in the training"),
                                               ("a,w,3", r"shown.csv:3 \[item\]: item id w is not in the training")])
def test_a_test_user_or_item_outside_the_training_index_is_refused_at_its_line(tmp_path, line, message):
    with pytest.raises(DataError, match=message):
        load_random_exposure(own_files(tmp_path, ["b,y,5", line]))


def test_random_exposure_needs_a_test_file_and_ratings(tmp_path):
    table = own_files(tmp_path, ["b,y,5"])
    with pytest.raises(ConvaeError, match="needs a test file"):
        load_random_exposure(RatingsTable(ratings=table.ratings, columns=table.columns, scale=VALUES))


def test_the_comparison_runs_on_own_files(tmp_path):
    rng = np.random.default_rng(0)
    chosen = [f"{u},{i},{rng.integers(1, 6)}" for u in range(30) for i in rng.choice(40, 12, replace=False)]
    shown = [f"{u},{i},{rng.integers(1, 6)}" for u in range(30) for i in rng.choice(40, 6, replace=False)]
    write(tmp_path / "chosen.csv", ["user,item,rating", *chosen])
    write(tmp_path / "shown.csv", ["user,item,rating", *shown])
    argv = ["--ratings", str(tmp_path / "chosen.csv"), "--test", str(tmp_path / "shown.csv"), "--columns",
            "user,item,rating", "--scale", "1,2,3,4,5", "--quick", "--out", str(tmp_path / "out"),
            "--models", "item-mean,IPS-MF"]
    assert accuracy_cli.main(argv) == 0
    doc = json.loads((tmp_path / "out" / "chosen.json").read_text())
    table = doc["tables"]["explicit/random-exposure"]
    assert set(table) == {"item-mean", "IPS-MF"}
    for record in table.values():
        assert record["summary"]["user_auc/expected_rating"]["n"] == 1 and record["runs"][0]["test"]["n"] == 180
    assert "user_p@3/p_liked" in (tmp_path / "out" / "chosen.md").read_text()
