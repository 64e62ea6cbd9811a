"""Training (compilation, seeding, learning), predictions, fold-in, rankings, save/load."""

import dataclasses
import warnings

import jax
import numpy as np
import optax
import pytest

from convae_jax import config as config_lib
from convae_jax.data import RowMatrix, entry_budget, holdout_interactions, iterate_batches
from convae_jax.errors import ConfigError, ConvaeError, ModelFileError
from convae_jax.evaluate import explicit_protocol
from convae_jax.io import load_model, save_model
from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel
from convae_jax.rank import ranking_scores, seen_mask
from convae_jax.train import (
    EncoderCollapsed,
    TrainState,
    _usable,
    evaluated_weights,
    fit,
    make_loss_fn,
    make_optimizer,
    make_train_step,
    validated_epochs,
    warn_if_encoder_collapsed,
)


def quick_config(orientation="item", **train):
    cfg = config_lib.testing().override([f"model.orientation={orientation}"])
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


@pytest.fixture(scope="module", params=["item", "user"])
def fitted(request, small_data):
    train, test = holdout_interactions(small_data, fraction=0.15, seed=0)
    return fit(train, quick_config(request.param, max_epochs=12, patience=12)), train, test


def test_no_compilation_after_first_epoch(small_data):
    cfg = quick_config()
    matrix = RowMatrix.from_interactions(small_data, orientation="item")
    module = build_model(cfg.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    params = init_params(module, jax.random.key(0))
    tx = make_optimizer(cfg)
    state = TrainState(params, tx.init(params), jax.numpy.zeros((), jax.numpy.int32))
    step = make_train_step(model=module, tx=tx, config=cfg, dropout_key=jax.random.key(1))
    budget = entry_budget(matrix.lengths, cfg.train.batch_rows)
    rng = np.random.default_rng(0)
    losses = []
    for epoch in range(4):
        for batch in iterate_batches(matrix, rng.permutation(matrix.n_rows), batch_rows=cfg.train.batch_rows, budget=budget):
            state, loss = step(state, batch)
            losses.append(float(loss))
        if epoch == 0:
            traces_after_first = step.traces
    assert traces_after_first == 1 and step.traces == 1
    assert int(state.step) == len(losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # it learns


def test_jit_step_equals_unjitted_loss(small_data):
    cfg = quick_config()
    matrix = RowMatrix.from_interactions(small_data, orientation="item")
    module = build_model(cfg.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    params = init_params(module, jax.random.key(0))
    batch = next(iterate_batches(matrix, np.arange(matrix.n_rows), batch_rows=32, budget=entry_budget(matrix.lengths, 32)))
    loss_fn = make_loss_fn(model=module, config=cfg, batch_rows=32)
    key = jax.random.key(5)
    with jax.disable_jit():
        eager = loss_fn(params, batch, key)
    np.testing.assert_allclose(jax.jit(loss_fn)(params, batch, key), eager, rtol=1e-5)
    assert np.all(np.isfinite(jax.tree_util.tree_leaves(jax.grad(loss_fn)(params, batch, key))[0]))


def test_weight_average_is_the_moving_average_of_the_trajectory(small_data):
    """With train.weight_average = 0.5, the average after t steps is 0.5^t·w0 + Σ 0.5^(t−s+1)·w_s,
    the step's weights are those Adam alone gives, and fit returns the average."""
    cfg = quick_config(weight_average=0.5)
    matrix = RowMatrix.from_interactions(small_data, orientation="item")
    module = build_model(cfg.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    params = init_params(module, jax.random.key(0))
    budget = entry_budget(matrix.lengths, 32)
    batches = list(iterate_batches(matrix, np.arange(matrix.n_rows), batch_rows=32, budget=budget))[:3]

    def run(config):
        tx = make_optimizer(config)
        state = TrainState(params, tx.init(params), jax.numpy.zeros((), jax.numpy.int32))
        step = make_train_step(model=module, tx=tx, config=config, dropout_key=jax.random.key(1))
        trajectory = [state.params]
        for batch in batches:
            state, _ = step(state, batch)
            trajectory.append(state.params)
        return state, trajectory

    averaged, trajectory = run(cfg)
    plain, plain_trajectory = run(quick_config())
    expected = trajectory[0]["decoder_kernel"]
    for weights in trajectory[1:]:
        expected = 0.5 * expected + 0.5 * weights["decoder_kernel"]
    np.testing.assert_allclose(evaluated_weights(averaged, cfg)["decoder_kernel"], expected, rtol=1e-6)
    np.testing.assert_array_equal(averaged.params["decoder_kernel"], plain.params["decoder_kernel"])
    assert not np.allclose(expected, averaged.params["decoder_kernel"])
    assert evaluated_weights(plain, quick_config()) is plain.params

    model = fit(small_data, quick_config(weight_average=0.9, max_epochs=2, patience=2))
    trained = fit(small_data, quick_config(max_epochs=2, patience=2))
    assert not np.allclose(model.params["decoder_kernel"], trained.params["decoder_kernel"])


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_weight_average_outside_0_1_is_refused(decay):
    with pytest.raises(ConvaeError, match="weight_average"):
        quick_config(weight_average=decay).validate()


@pytest.mark.parametrize("bad, usable", [(1e18, True), (-1e18, True), (2e19, False), (-2e19, False),
                                         (np.inf, False), (-np.inf, False), (np.nan, False)])
def test_step_guard_flags_gradients_adam_cannot_square(bad, usable):
    """Adam's second moment of |g| > sqrt(float32 max) ~ 1.8e19 is inf, which freezes the weight:
    the step's guard treats it like a NaN or inf gradient."""
    params = {"a": jax.numpy.ones((3, 4)), "b": {"c": jax.numpy.ones(5)}}
    grads = {"a": jax.numpy.ones((3, 4)), "b": {"c": jax.numpy.zeros(5).at[2].set(bad)}}
    tx = optax.adam(1e-3)
    _, state = tx.update(grads, tx.init(params), params)
    assert bool(_usable(optax.tree_utils.tree_get(state, "nu"))) is usable
    assert bool(jax.numpy.isfinite(jax.numpy.square(jax.numpy.float32(bad)))) is usable


def test_same_seed_same_model_different_seed_differs(small_data):
    a = fit(small_data, quick_config(max_epochs=2))
    b = fit(small_data, quick_config(max_epochs=2))
    c = fit(small_data, quick_config(max_epochs=2, seed=1))
    np.testing.assert_array_equal(a.params["decoder_kernel"], b.params["decoder_kernel"])
    assert not np.allclose(a.params["decoder_kernel"], c.params["decoder_kernel"])


def test_an_encoder_driven_to_zero_is_reported(small_data):
    """L2 1000 over 120 steps zeroes the encoder: every item row gets the code of the empty row."""
    with pytest.warns(EncoderCollapsed, match="every item row has the same code"):
        collapsed = fit(small_data, quick_config(l2=1000.0, max_epochs=60, patience=60))
    codes = np.asarray(collapsed.row_codes)
    np.testing.assert_allclose(codes, np.broadcast_to(codes[:1], codes.shape), atol=1e-4)


def test_a_working_encoder_is_not_reported_as_collapsed(fitted):
    model, _, _ = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_encoder_collapsed(model) > 0.1


def test_distributions_are_normalised_and_consistent(fitted):
    model, train, test = fitted
    users = np.arange(10)
    scores = next(model.score_users(users, batch=16))
    np.testing.assert_allclose(np.exp(scores.log_p_consume).sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.exp(scores.log_p_rating).sum(axis=-1), 1.0, rtol=1e-4)
    pairs = model.rating_log_probs(test.user[:20], test.item[:20])
    batched = {int(u): s for u, s in zip(scores.users, scores.log_p_rating)}
    for (u, i), row in zip(zip(test.user[:20], test.item[:20]), pairs):
        if u in batched:
            np.testing.assert_allclose(row, batched[u][i], rtol=1e-4, atol=1e-5)


def test_explicit_protocol_beats_uninformed_guesses(fitted):
    model, train, test = fitted
    result = explicit_protocol(model, train, test, ks=(10,))
    assert result["nll"] < np.log(5)  # better than a uniform rating distribution over 5 levels
    assert 0.0 <= result["recall@10"] <= 1.0 and result["n_users"] == len(np.unique(test.user))


def test_fold_in_user_rows_reproduces_training_user(small_data):
    model = fit(small_data, quick_config("user", max_epochs=3))
    history = small_data.subset(small_data.user == 4)
    folded_user = model.fold_in(history)
    trained = next(model.score_users([4], batch=1))
    np.testing.assert_allclose(next(folded_user.score()).log_p_consume, trained.log_p_consume, rtol=1e-4, atol=1e-5)
    items = np.array([0, 7, 7, 39])
    np.testing.assert_allclose(folded_user.rating_log_probs(np.full(4, 4), items),
                               model.rating_log_probs(np.full(4, 4), items), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConvaeError, match="folded-in users"):
        folded_user.rating_log_probs(np.array([5]), np.array([0]))


def test_fold_in_refuses_an_empty_history(fitted):
    model, train, _ = fitted
    with pytest.raises(ConvaeError, match="at least one interaction"):
        model.fold_in(train.subset(np.zeros(train.nnz, bool)))


def test_fold_in_item_rows_ranks_like_the_trained_user(small_data):
    model = fit(small_data, quick_config("item", max_epochs=15, patience=15))
    users = np.arange(8)
    folded = np.concatenate([s.log_p_consume for s in model.fold_in(small_data.subset(np.isin(small_data.user, users))).score()])
    trained = np.concatenate([s.log_p_consume for s in model.score_users(users)])
    np.testing.assert_allclose(np.exp(folded).sum(axis=1), 1.0, rtol=1e-4)
    correlations = [np.corrcoef(f, t)[0, 1] for f, t in zip(folded, trained)]
    assert np.median(correlations) > 0.5


def test_item_rows_fold_in_takes_its_steps_from_the_config(small_data):
    model = fit(small_data, quick_config("item", max_epochs=3))
    history = small_data.subset(small_data.user < 4)
    configured = FittedModel(model.config.override(["eval.fold_in_steps=20", "eval.fold_in_learning_rate=0.01"]),
                             model.params, model.train)
    first = lambda folded: next(folded.score()).log_p_rating
    from_config = first(configured.fold_in(history))
    np.testing.assert_allclose(from_config, first(model.fold_in(history, steps=20, learning_rate=0.01)), rtol=1e-6)
    assert not np.allclose(from_config, first(model.fold_in(history)), atol=1e-3)
    with pytest.raises(ConfigError, match="fold_in_steps"):
        model.config.override(["eval.fold_in_steps=0"])


def test_user_rows_refined_fold_in_fits_the_history_better_near_the_encoder_code(small_data):
    """With a code prior the folded-in code trades a higher likelihood of the user's own history
    for distance from the encoder's code: a better objective than that code, a huge prior leaves
    it where it was, and the config's `eval.fold_in_code_prior` is the call's default."""
    model = fit(small_data, quick_config("user", max_epochs=6))
    history = small_data.subset(small_data.user < 6)
    weight = model.config.model.rating_weight

    def history_log_likelihood(folded):
        scores = next(folded.score())
        users = np.searchsorted(folded.users, history.user)
        return np.bincount(users, history.count * (scores.log_p_consume[users, history.item]
                                                   + weight * scores.log_p_rating[users, history.item, history.channel]))

    encoder, refined = model.fold_in(history), model.fold_in(history, code_prior=1.0)
    moved = np.sum((np.asarray(refined.codes) - np.asarray(encoder.codes)) ** 2, axis=1)
    gain = history_log_likelihood(refined) - history_log_likelihood(encoder)
    assert np.all(moved > 1e-4)
    assert np.all(gain > moved)  # the objective, likelihood − 1·‖h − h0‖², beats the encoder's code
    pinned = model.fold_in(history, code_prior=1e6)
    np.testing.assert_allclose(np.asarray(pinned.codes), np.asarray(encoder.codes), atol=1e-4)
    configured = FittedModel(model.config.override(["eval.fold_in_code_prior=1.0"]), model.params, model.train)
    np.testing.assert_allclose(np.asarray(configured.fold_in(history).codes), np.asarray(refined.codes), rtol=1e-6)
    with pytest.raises(ConvaeError, match="code_prior=-1"):
        model.fold_in(history, code_prior=-1.0)
    item_rows = fit(small_data, quick_config("item", max_epochs=1))
    with pytest.raises(ConvaeError, match="only user rows"):
        item_rows.fold_in(history, code_prior=1.0)
    with pytest.raises(ConfigError, match="fold_in_code_prior"):
        item_rows.config.override(["eval.fold_in_code_prior=1.0"])


@pytest.mark.parametrize("orientation", ["item", "user"])
def test_fold_ins_weigh_the_implicit_term_as_training_does(small_data, orientation):
    """Doubling every term of a fold-in's objective (implicit weight, λ, L2, code prior) leaves
    Adam's path where it was, since Adam ignores the objective's scale; a fold-in that left one
    term unweighted would move. Doubling the implicit weight alone must move it."""
    model = fit(small_data, quick_config(orientation, max_epochs=3))
    history = small_data.subset(small_data.user < 5)
    prior = 1.0 if orientation == "user" else 0.0

    def folded(implicit_weight, rating_weight, l2, code_prior):
        config = model.config.override([f"model.implicit_weight={implicit_weight}", f"model.rating_weight={rating_weight}",
                                        f"train.l2={l2}"])
        scores = next(FittedModel(config, model.params, model.train).fold_in(history, code_prior=code_prior).score())
        return scores.log_p_consume

    l2 = model.config.train.l2
    base = folded(1.0, 1.0, l2, prior)
    np.testing.assert_allclose(folded(2.0, 2.0, 2 * l2, 2 * prior), base, rtol=1e-4, atol=1e-4)
    assert not np.allclose(folded(2.0, 1.0, l2, prior), base, atol=1e-3)


def test_rankings_exclude_seen_items():
    log_consume = np.log(np.array([[0.4, 0.3, 0.2, 0.1]]))
    log_rating = np.log(np.array([[[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.1, 0.9]]]))
    seen = np.array([[False, True, False, False]])
    kw = dict(channel_values=(1.0, 5.0), threshold=4.0)
    consume = ranking_scores(log_consume, log_rating, seen, mode="consume", **kw)
    enjoy = ranking_scores(log_consume, log_rating, seen, mode="enjoy", **kw)
    gems = ranking_scores(log_consume, log_rating, seen, mode="gems", **kw)
    assert np.argmax(consume) == 0 and np.isneginf(consume[0, 1])
    np.testing.assert_allclose(enjoy[0, [0, 2, 3]], [0.1, 0.8, 0.9])
    # Unseen P(consume) 0.4, 0.2, 0.1 sit at percentiles 1, 2/3, 1/3: only item 3 is in the bottom half.
    assert np.isneginf(gems[0, [0, 1, 2]]).all() and gems[0, 3] == pytest.approx(0.9)


def test_seen_mask_handles_unsorted_users(small_data):
    users = np.array([5, 2])
    mask = seen_mask(users, small_data, small_data.n_items)
    assert set(np.flatnonzero(mask[0])) == set(small_data.item[small_data.user == 5])
    assert set(np.flatnonzero(mask[1])) == set(small_data.item[small_data.user == 2])


def test_save_load_roundtrip_and_refusals(fitted, tmp_path):
    model, train, test = fitted
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.rating_log_probs(test.user, test.item), model.rating_log_probs(test.user, test.item))
    params = tmp_path / "m" / "params.npz"
    raw = bytearray(params.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    params.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelFileError, match="manifest"):
        load_model(tmp_path / "nothing-here")


def test_load_refuses_parameters_that_do_not_match_the_config(fitted, tmp_path):
    model, _, _ = fitted
    wider = dataclasses.replace(model.config, model=dataclasses.replace(model.config.model, hidden=(17,)))
    save_model(FittedModel(wider, model.params, model.train), tmp_path / "m")
    with pytest.raises(ModelFileError, match="decoder_kernel should be"):
        load_model(tmp_path / "m")


ORDINAL_INIT_CUTPOINTS = np.array([-1.5, np.log(np.e - 1), np.log(np.e - 1), np.log(np.e - 1)])  # C = 5


ORDINAL = "model.rating_head='ordinal'"


# (overrides, parameter they add, that parameter at init): each starts at a fixed value and must learn.
@pytest.mark.parametrize("overrides, name, initial", [
    (["model.row_offsets=True"], "row_offset_kernel", 0.0),
    ([ORDINAL], "cutpoints", ORDINAL_INIT_CUTPOINTS),
    ([ORDINAL, "model.cutpoints='per_column'"], "cutpoints", ORDINAL_INIT_CUTPOINTS)],
    ids=["row_offsets", "ordinal_head", "ordinal_per_column"])
def test_head_extensions_train_save_and_score_every_path(small_data, tmp_path, overrides, name, initial):
    """With model.row_offsets (the shared map V) or the ordinal head (its cut-points, shared or
    per column) the added parameters learn, survive a save/load, the item-row scorer (columns by
    their own parameters) agrees with the rating path, and new users fold in."""
    train, test = holdout_interactions(small_data, fraction=0.15, seed=0)
    config = quick_config("item", max_epochs=4, patience=4).override(overrides)
    model = fit(train, config)
    assert np.abs(np.asarray(model.params[name]) - initial).max() > 1e-3
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.rating_log_probs(test.user, test.item), model.rating_log_probs(test.user, test.item))
    scores = next(iter(model.score_users(np.unique(test.user)[:3])))
    pairs = (np.repeat(scores.users, train.n_items), np.tile(np.arange(train.n_items), scores.users.size))
    np.testing.assert_allclose(scores.log_p_rating.reshape(-1, train.n_channels), model.rating_log_probs(*pairs),
                               rtol=1e-4, atol=1e-5)
    folded = next(model.fold_in(test.subset(np.isin(test.user, scores.users))).score())
    np.testing.assert_allclose(np.exp(folded.log_p_rating).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.exp(folded.log_p_consume).sum(-1), 1.0, rtol=1e-4)


def test_separate_inputs_equal_to_the_targets_train_the_default_model(small_data):
    """`fit(inputs=train)` builds each row's input from input entries and scores target entries,
    here the same interactions: without dropout it is the default training, summed in another
    order (float32 tolerance after three epochs)."""
    cfg = quick_config("user", max_epochs=3, patience=3, validation_fraction=0.0).override(["model.input_dropout=0.0"])
    default, split = fit(small_data, cfg), fit(small_data, cfg, inputs=small_data)
    assert split.train is small_data
    for a, b in zip(jax.tree_util.tree_leaves(default.params), jax.tree_util.tree_leaves(split.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_separate_inputs_are_read_and_targets_scored(small_data):
    """The returned model reads `inputs`; a target row without inputs is still scored, and a row
    with inputs but no targets is not trained on (the loss sees only target entries)."""
    inputs = small_data.subset(small_data.user < 40)
    targets = small_data.subset(small_data.user >= 20)
    cfg = quick_config("user", max_epochs=2, patience=2, validation_fraction=0.0)
    model = fit(targets, cfg, inputs=inputs)
    assert model.train is inputs
    assert model.matrix.lengths[45] == 0 and model.matrix.lengths[5] > 0
    with pytest.raises(ConvaeError, match="explicit_on='all'"):
        fit(targets, cfg.override(["model.explicit_on=dropped"]), inputs=inputs)


def test_a_matrix_of_inputs_and_targets_keeps_them_apart(small_data):
    inputs, targets = small_data.subset(np.arange(0, small_data.nnz, 2)), small_data.subset(np.arange(1, small_data.nnz, 2))
    matrix = RowMatrix.from_inputs_and_targets(inputs, targets, orientation="user")
    assert matrix.count.sum() == pytest.approx(inputs.count.sum())
    assert matrix.target.sum() == pytest.approx(targets.count.sum())
    assert np.all((matrix.count == 0) != (matrix.target == 0))
    batch = next(iterate_batches(matrix, np.arange(matrix.n_rows), batch_rows=8, budget=entry_budget(matrix.lengths, 8)))
    assert batch.target is not None and batch.target.shape == batch.count.shape


def test_validating_every_kth_epoch_selects_among_those_epochs_only(small_data):
    """With train.validate_every = 3 the validation set is scored at epochs 3, 6, 9 and the last
    (10), and only those are candidates: the trajectory is the every-epoch run's (validation draws
    no random numbers), so the returned weights are that run's at its best epoch among 3, 6, 9, 10."""
    every = fit(small_data, quick_config("user", max_epochs=10, patience=10))
    third = fit(small_data, quick_config("user", max_epochs=10, patience=10, validate_every=3))
    assert validated_epochs(third.config.train) == (3, 6, 9, 10)
    assert validated_epochs(every.config.train) == tuple(range(1, 11))
    assert [r.epoch for r in third.history if r.validation] == [3, 6, 9, 10]
    metric = every.config.train.select_metric
    for a, b in zip(every.history, third.history):
        if b.validation:
            assert b.validation[metric] == pytest.approx(a.validation[metric], rel=1e-6)
    best = min((every.history[e - 1] for e in (3, 6, 9, 10)), key=lambda r: r.validation[metric]).epoch
    assert third.selected_epoch == best
    reference = fit(small_data, quick_config("user", max_epochs=best, patience=best, validate_every=best))  # epoch `best`
    for a, b in zip(jax.tree_util.tree_leaves(reference.params), jax.tree_util.tree_leaves(third.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_patience_is_counted_in_epochs_and_checked_when_validating(small_data):
    """lr 0.5 overfits at once: with validate_every = 2 and patience 3 the run stops at the second
    validation after its best, never between validations."""
    cfg = quick_config("user", max_epochs=30, patience=3, validate_every=2, learning_rate=0.5)
    model = fit(small_data, cfg)
    validated = [r.epoch for r in model.history if r.validation]
    assert model.history[-1].epoch == validated[-1] < 30
    assert validated[-1] == model.selected_epoch + 4
    with pytest.raises(ConfigError, match="validate_every"):
        fit(small_data, quick_config("user", validate_every=0))
