"""The comparison (benchmarks/accuracy): splits, grids, selection bookkeeping, tables, and the
command line end to end."""

import json
import shlex

import jax
import numpy as np
import pytest
from conftest import dataset_dir

from benchmarks.accuracy import __main__ as accuracy_cli
from benchmarks.accuracy import entrants, grids, presets
from benchmarks.accuracy.report import RATING_METRICS, markdown_tables
from benchmarks.accuracy.run import compare, summarise
from benchmarks.accuracy.splits import (
    CLICK_THRESHOLD,
    MIN_USER_CLICKS,
    ml100k_u1,
    strong_split,
    task_split,
)
from convae_jax.data import Interactions, load_dataset
from convae_jax.errors import ConvaeError


def _keys(data):
    return set(zip(data.user.tolist(), data.item.tolist()))


def test_u1_is_the_first_20000_lines_of_u_data():
    rng = np.random.default_rng(0)
    n = 100_000
    data = Interactions.build(rng.integers(0, 900, n), rng.integers(0, 1600, n), rng.integers(0, 5, n),
                              n_users=900, n_items=1600, channel_values=(1, 2, 3, 4, 5))
    base, test = ml100k_u1(data)
    assert (base.nnz, test.nnz) == (80_000, 20_000)
    np.testing.assert_array_equal(test.user, data.user[:20_000])
    np.testing.assert_array_equal(base.item, data.item[20_000:])
    with pytest.raises(ConvaeError, match="100,000"):
        ml100k_u1(data.subset(np.arange(10)))


def test_u1_on_the_real_file_matches_u_data_line_order():
    path = dataset_dir("ml-100k")
    base, test = ml100k_u1(load_dataset("ml-100k", path).train)
    raw = np.loadtxt(path / "u.data", dtype=np.int64, max_rows=20_000)
    np.testing.assert_array_equal(test.user_ids[test.user], raw[:, 0])
    np.testing.assert_array_equal(test.item_ids[test.item], raw[:, 1])
    np.testing.assert_array_equal(test.ratings, raw[:, 2])
    assert not _keys(base) & _keys(test)


def test_strong_split_targets_are_clicks_and_conv4rec_never_sees_them(small_data):
    split = strong_split(small_data, n_val_users=8, n_test_users=8, seed=0)
    c = split.clicks
    for part in (c.train, c.val_fold_in, c.val_target, c.test_target):
        assert part.nnz and np.all(part.ratings >= CLICK_THRESHOLD)
    held = set(c.val_fold_in.user) | set(c.val_target.user) | set(c.test_fold_in.user) | set(c.test_target.user)
    assert not held & set(split.ratings_train.user)
    assert set(c.train.user) <= set(split.ratings_train.user)
    for fold_in, target in ((split.val_ratings_fold_in, c.val_target), (split.test_ratings_fold_in, c.test_target)):
        assert not _keys(fold_in) & _keys(target)
        assert _keys(fold_in) > _keys(c.test_fold_in if fold_in is split.test_ratings_fold_in else c.val_fold_in)
        assert np.any(fold_in.ratings < CLICK_THRESHOLD)  # the low ratings are Conv4Rec's extra input
    for fold_in, history, target in ((split.val_ratings_fold_in, split.val_rating_history, split.val_rating_target),
                                     (split.test_ratings_fold_in, split.test_rating_history, split.test_rating_target)):
        assert _keys(history) | _keys(target) == _keys(fold_in) and not _keys(history) & _keys(target)
        per_user = np.bincount(fold_in.user, minlength=fold_in.n_users)
        n_targets = np.bincount(target.user, minlength=fold_in.n_users)
        np.testing.assert_array_equal(n_targets, np.where(per_user >= 5, (0.2 * per_user).astype(int), 0))
        assert np.any(target.ratings < CLICK_THRESHOLD)  # the rating targets are not only clicks
    clicks_per_user = np.bincount(small_data.user[small_data.ratings >= CLICK_THRESHOLD], minlength=small_data.n_users)
    kept = set(c.train.user) | held
    assert all(clicks_per_user[u] >= MIN_USER_CLICKS for u in kept)


def test_every_conv4rec_grid_point_builds_a_valid_config():
    """A misspelt preset or override would only fail hours into a real comparison."""
    all_grids = [grids.CONV4REC_EXPLICIT_GRID, grids.CONV4REC_RATINGS_GRID, grids.CONV4REC_USER_ROWS_GRID,
                 grids.CONV4REC_USER_ROWS_MAP_GRID, grids.CONV4REC_CLICKS_GRID, grids.CONV4REC_USER_ROWS_CLICKS_GRID,
                 grids.CONV4REC_ORDINAL_GRID, grids.CONV4REC_DEFAULT_POINT, grids.CONV4REC_CANDIDATE_DEFAULT,
                 grids.CONV4REC_CANDIDATE_DEFAULT_INVERSE_PROPENSITY,
                 grids.CONV4REC_INVERSE_PROPENSITY_GRID, grids.CONV4REC_ORDINAL_INVERSE_PROPENSITY_GRID]
    for grid in all_grids:
        configs = [presets.conv4rec_config(p["preset"], p.get("overrides", ()), seed=2) for p in grid]
        assert all(c.train.seed == 2 and not c.train.progress for c in configs)
        assert len({c.to_json() for c in configs}) == len(configs)  # no two points are the same model


def test_implicit_conv4rec_grids_start_at_the_point_reported_alone_before():
    """The first point is the preset itself: its input dropout is the preset's own, so the earlier
    one-point tables stay the first point's figures."""
    for grid in (grids.CONV4REC_RATINGS_GRID, grids.CONV4REC_USER_ROWS_GRID, grids.CONV4REC_CLICKS_GRID):
        first = grid[0]
        without_dropout = tuple(o for o in first["overrides"] if not o.startswith("model.input_dropout="))
        as_before = presets.conv4rec_config(first["preset"], without_dropout, seed=0)
        assert presets.conv4rec_config(first["preset"], first["overrides"], seed=0) == as_before

    def configs(grid):
        return [presets.conv4rec_config(p["preset"], p["overrides"], seed=0) for p in grid]

    for grid in (grids.CONV4REC_USER_ROWS_GRID, grids.CONV4REC_CLICKS_GRID):
        assert [c.model.input_dropout for c in configs(grid)] == list(grids.IMPLICIT_INPUT_DROPOUT_GRID)
    # the MAP fold-in's points are the user rows' own, trained alike, folded in with the code prior
    for plain, refined in zip(configs(grids.CONV4REC_USER_ROWS_GRID), configs(grids.CONV4REC_USER_ROWS_MAP_GRID)):
        assert (plain.model, plain.train) == (refined.model, refined.train)
        assert (plain.eval.fold_in_code_prior, refined.eval.fold_in_code_prior) == (0.0, 1.0)
    # the item rows on ratings trade dropout 0.5 for L2 0.03 (their encoder collapsed on ML-latest-small)
    item_rows = configs(grids.CONV4REC_RATINGS_GRID)
    assert [(c.model.input_dropout, c.train.l2) for c in item_rows] == [(0.6, 0.1), (0.7, 0.1), (0.6, 0.03)]


def test_every_entrant_of_the_full_comparison_keeps_the_budget():
    """The budget rule of docs/results.md: every model, ours and the peers', gets one to three grid points."""
    everyone = (entrants.explicit_entrants(quick=False) + entrants.explicit_entrants(quick=False, random_exposure=True)
                + entrants.implicit_entrants(quick=False))
    sizes = {e.name: len(e.grid) for e in everyone}
    assert {"conv4rec", "I-AutoRec", "EASE", "conv4rec user rows (ratings)", "conv4rec user rows (clicks)",
            "conv4rec (ordinal head)", "IPS-MF", "conv4rec (inverse propensity)"} <= set(sizes)
    assert all(1 <= size <= 3 for size in sizes.values()), sizes


def test_compare_refuses_names_that_match_nothing(tmp_path):
    """A misspelt model or task would run nothing and rewrite the report: refused before any work,
    naming what exists; and every entrant's name survives `--models`' comma-separated list."""
    with pytest.raises(ConvaeError, match=r"--models: \['EASY'\] not among ml-100k's models.*'EASE'"):
        compare("ml-100k", tmp_path / "absent", out_dir=tmp_path, models=("EASY",))
    with pytest.raises(ConvaeError, match=r"--models: \['EASE'\]"):  # a ranking model, not one of u1's
        compare("ml-100k", tmp_path / "absent", out_dir=tmp_path, models=("EASE",), tasks=("explicit/u1",))
    with pytest.raises(ConvaeError, match=r"--tasks: \['explicit/u2'\].*'explicit/u1'"):
        compare("ml-100k", tmp_path / "absent", out_dir=tmp_path, tasks=("explicit/u2",))
    assert list(tmp_path.iterdir()) == []
    everyone = (entrants.explicit_entrants(quick=False) + entrants.explicit_entrants(quick=False, random_exposure=True)
                + entrants.implicit_entrants(quick=False))
    assert not [e.name for e in everyone if "," in e.name]


def test_summarise_and_markdown():
    results = [{"rmse": 0.9, "n": 5}, {"rmse": 1.1, "n": 5}, {"rmse": 1.0, "n": 5}]
    summary = summarise(results)
    assert set(summary) == {"rmse"}
    np.testing.assert_allclose([summary["rmse"]["mean"], summary["rmse"]["std"]], [1.0, 0.1])
    env = {"command": "python -m benchmarks.accuracy --dataset x", "cpu": "cpu", "cores": 2, "versions": {}}
    doc = {"dataset": "x", "seeds": [0, 1, 2], "tables": {"explicit/fixed": {
        "m": {"source": "ours", "summary": summary, "selected_point": {"a": 1}, "environment": env}}}}
    table = markdown_tables(doc)
    assert "| m | ours | 3 | 1.0000 ± 0.1000 |" in table and "`python -m benchmarks.accuracy --dataset x`" in table

    def row_of_m(table):
        return next(line for line in table.splitlines() if line.startswith("| m |"))

    assert row_of_m(table).endswith('| `{"a": 1}` | – |')  # recorded before commits were kept
    env["commit"] = "0123456789abcdef0123456789abcdef01234567+dirty"
    assert row_of_m(markdown_tables(doc)).endswith('| `{"a": 1}` | 0123456+dirty |')
    rates_only = {"source": "ours", "summary": summarise([{"new-users/rmse": 1.0}]), "environment": env}
    ranks_only = {"source": "ours", "summary": summarise([{"ndcg@100": 0.5}]), "environment": env}
    doc["tables"] = {"implicit/strong-generalization": {"floor": rates_only, "ranker": ranks_only}}
    ranking, ratings = markdown_tables(doc).split("## implicit/strong-generalization")[1:]
    assert "| ranker |" in ranking and "| floor |" not in ranking
    assert ratings.startswith(", the held-out users' ratings") and "| floor | ours | 1 | 1.0000" in ratings
    assert "| ranker |" not in ratings


def test_command_line_quick_run_writes_json_table_and_plot(tmp_path, capsys):
    data_dir = dataset_dir("coat")
    argv = ["--dataset", "coat", "--quick", "--data-dir", str(data_dir), "--out", str(tmp_path),
            "--models", "item-mean,user+item-biases"]
    rc = accuracy_cli.main(argv)
    assert rc == 0
    doc = json.loads((tmp_path / "coat.json").read_text())
    table = doc["tables"]["explicit/random-exposure"]
    assert set(table) == {"item-mean", "user+item-biases"}
    for record in table.values():
        assert record["summary"]["rmse"]["n"] == 1
        assert 0.55 < record["summary"]["user_auc/expected_rating"]["mean"] < 0.9  # better than chance, short of perfect
        assert 0.8 < record["summary"]["rmse"]["mean"] < 1.6  # Coat's random-exposure ratings, 1..5 stars
        assert sum(r["selected"] for r in record["runs"]) == 1
        assert record["environment"]["command"] == shlex.join(["python", "-m", "benchmarks.accuracy", *argv])
    assert "item-mean" in (tmp_path / "coat.md").read_text()
    assert (tmp_path / "coat.png").stat().st_size > 1000


@pytest.mark.parametrize("run", [entrants.run_conv4rec_ratings, entrants.ranking_run(entrants.fit_conv4rec_clicks)],
                         ids=["ratings", "clicks"])
def test_user_rows_keep_the_epoch_whose_validation_users_rank_best(monkeypatch, run):
    """Strong generalization, user rows, on ratings or on clicks alone: every epoch is scored by the
    validation users' NDCG@100 (as Mult-DAE/VAE are), and the returned model is the best epoch's:
    its validation score is the curve's maximum."""
    split = task_split("ml-100k", None, dataset_dir("ml-100k"), seed=0, quick=True)
    fitted = []
    real_fit = entrants.fit
    monkeypatch.setattr(entrants, "fit", lambda *a, **k: fitted.append(real_fit(*a, **k)) or fitted[-1])
    point = {"preset": "testing", "overrides": ("model.orientation='user'", "train.max_epochs=4", "train.patience=4")}
    val_score, test = run(split, point, 0)
    model = fitted[0]
    curve = [-r.validation["neg_ndcg@100"] for r in model.history]
    assert model.config.train.select_metric == "neg_ndcg@100" and len(curve) == 4
    assert val_score == pytest.approx(max(curve), abs=1e-9)
    assert len(set(np.round(curve, 6))) > 1 and 0 < test["ndcg@100"] < 1
    if run is entrants.run_conv4rec_ratings:  # the same trained model, scored on the held-out users' ratings
        assert {f"new-users/{m}" for m in RATING_METRICS} <= set(test)
        assert test["new-users/nll"] < np.log(5) and 0 < test["new-users/rmse"] < 1.5
    else:
        assert "new-users/rmse" not in test


def test_the_map_fold_in_scores_the_user_rows_own_trained_model():
    """The MAP fold-in entrant trains and picks its epoch exactly as the user rows do (the code
    prior stays out of the per-epoch score) and refines only the returned model's fold-in, which
    then ranks the validation users differently."""
    split = task_split("ml-100k", None, dataset_dir("ml-100k"), seed=0, quick=True)
    point = ("model.orientation='user'", "train.max_epochs=3", "train.patience=3")
    fits = {}
    for prior in (0.0, 1.0):
        config = presets.conv4rec_config("testing", (*point, f"eval.fold_in_code_prior={prior}"), seed=0)
        fits[prior] = entrants.fit_user_rows(split.ratings_train, config, val_fold_in=split.val_ratings_fold_in,
                                             val_target=split.clicks.val_target, rank_by="like")
    plain, refined = fits[0.0], fits[1.0]
    assert refined.config.eval.fold_in_code_prior == 1.0 and refined.selected_epoch == plain.selected_epoch
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(plain.params),
                                                    jax.tree_util.tree_leaves(refined.params)))
    codes = [np.asarray(m.fold_in(split.val_ratings_fold_in).codes) for m in (plain, refined)]
    assert np.abs(codes[0] - codes[1]).max() > 1e-3


def test_the_clicks_alone_get_the_map_fold_in_on_the_same_trained_model():
    """The clicks-only user rows with the MAP fold-in are the plain clicks-only user rows (same
    weights, same epoch) with each new user's code refined, so ratings and clicks compare with the
    same fold-in."""
    split = task_split("ml-100k", None, dataset_dir("ml-100k"), seed=0, quick=True)
    by_name = {e.name: e for e in entrants.implicit_entrants(quick=True)}
    plain, refined = (entrants.fit_conv4rec_clicks(split, by_name[name].grid[0], seed=0)[0]
                      for name in ("conv4rec user rows (clicks)", "conv4rec user rows (clicks; MAP fold-in)"))
    assert plain.model.config.eval.fold_in_code_prior == 0.0 and refined.model.config.eval.fold_in_code_prior == 1.0
    assert refined.model.selected_epoch == plain.model.selected_epoch
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(plain.model.params),
                                                    jax.tree_util.tree_leaves(refined.model.params)))
    history = split.clicks.val_fold_in
    (users, plain_scores), = plain.fold_in_scores(history)
    (same_users, refined_scores), = refined.fold_in_scores(history)
    assert np.array_equal(users, same_users) and np.abs(plain_scores - refined_scores).max() > 1e-3


def test_rating_floors_on_the_held_out_users_read_their_rating_history():
    """The biases floor refitted with the held-out users' rating history knows each new user's bias,
    so it rates them better than the item mean, which ignores users."""
    split = task_split("ml-100k", None, dataset_dir("ml-100k"), seed=0, quick=True)
    floors = {e.name: e for e in entrants.implicit_entrants(quick=True) if e.name in ("item-mean", "user+item-biases")}
    rmse = {}
    for name, entrant in floors.items():
        val_score, test = entrant.run(split, entrant.grid[0], 0)
        assert set(test) == {"new-users/rmse", "new-users/mae"} | ({"new-users/nll", "new-users/accuracy", "new-users/ece"}
                                                                  if name == "item-mean" else set())
        assert -1.5 < val_score < -0.7
        rmse[name] = test["new-users/rmse"]
    assert rmse["user+item-biases"] < rmse["item-mean"] - 0.03, rmse
