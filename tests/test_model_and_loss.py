"""Model structure, sparse encoder against its dense definition, and the joint loss by hand."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convae_jax import config as config_lib
from convae_jax import losses
from convae_jax.data import RowMatrix, entry_budget, iterate_batches
from convae_jax.errors import ConfigError
from convae_jax.model import Conv4Rec, build_model, init_params, weight_names


def test_parameter_count_of_testing_config():
    cfg = config_lib.testing().model  # k = 4, d = 16, k' = 4
    n, c = 30, 5
    params = init_params(build_model(cfg, n_cols=n, n_channels=c), jax.random.key(0))
    sizes = {name: leaf.size for name, leaf in params.items()}
    assert sizes == {"input_conv": c * 4, "encoder_kernel": n * 4 * 16, "encoder_bias": 16,
                     "decoder_kernel": n * 16 * 4, "decoder_bias": n * 4, "output_conv": 4 * c,
                     "output_bias": n * c}


def test_extra_dense_layer_counts():
    cfg = config_lib.testing().override(["model.hidden=(16, 6)"]).model
    params = init_params(build_model(cfg, n_cols=10, n_channels=3), jax.random.key(0))
    assert params["dense_0"]["kernel"].shape == (16, 6) and params["decoder_kernel"].shape == (10, 4, 6)


def dense_reference_logits(params, x, activation=jnp.tanh):
    """The model of docs/model.md written densely: Z = X·A, h = φ(Σ_i Z[i]·W_enc[i] + b), L = (h·W_dec + b_dec)·B + bias."""
    z = jnp.einsum("rnc,ck->rnk", x, params["input_conv"])
    h = activation(jnp.einsum("rnk,nkd->rd", z, params["encoder_kernel"]) + params["encoder_bias"])
    y = jnp.einsum("rd,nkd->rnk", h, params["decoder_kernel"]) + params["decoder_bias"]
    row_offset = (h @ params["row_offset_kernel"])[:, None, :] if "row_offset_kernel" in params else 0.0
    return y @ params["output_conv"] + params["output_bias"] + row_offset


# (k', decoder_fold, folds, row_offsets): "auto" applies B to activations when k' < C and folds it
# into W_dec when k' >= C; "always" and "never" force either order whatever k'.
@pytest.mark.parametrize("decoder_channels, fold, folds, row_offsets", [
    (4, "auto", False, False), (8, "auto", True, False), (4, "always", True, False), (8, "never", False, False),
    (4, "auto", False, True), (8, "auto", True, True)])
def test_model_equals_dense_definition_with_gradients(small_data, decoder_channels, fold, folds, row_offsets):
    cfg = config_lib.testing().override([f"model.decoder_channels={decoder_channels}", f"model.decoder_fold={fold}",
                                         f"model.row_offsets={row_offsets}"])
    matrix = RowMatrix.from_interactions(small_data, orientation="user")
    module = build_model(cfg.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    assert module._folds_output_conv() == folds
    params = init_params(module, jax.random.key(1))
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
    batch = next(iterate_batches(matrix, np.arange(8), batch_rows=8, budget=entry_budget(matrix.lengths, 8)))
    x = np.zeros((8, matrix.n_cols, small_data.n_channels), np.float32)
    real = batch.segment < 8
    np.add.at(x, (batch.segment[real], batch.col[real], batch.channel[real]), batch.count[real])
    weights = jnp.asarray(np.random.default_rng(0).normal(size=x.shape).astype(np.float32))

    def model_scalar(p):
        return jnp.sum(weights * module.apply({"params": p}, batch.segment, batch.col, batch.channel, batch.count, 8))

    def reference_scalar(p):
        return jnp.sum(weights * dense_reference_logits(p, jnp.asarray(x)))

    sparse = module.apply({"params": params}, batch.segment, batch.col, batch.channel, batch.count, 8)
    np.testing.assert_allclose(sparse, dense_reference_logits(params, jnp.asarray(x)), rtol=1e-5, atol=1e-5)
    got, want = jax.grad(model_scalar)(params), jax.grad(reference_scalar)(params)
    for name in want:  # the hand-written backward passes of mix_last and mix_middle
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4 * float(np.abs(want[name]).max()),
                                   err_msg=name)


def test_l2_input_norm_divides_each_row_by_the_norm_of_its_full_counts(small_data):
    """`input_norm="l2"` encodes x_r / ||x_r||, with the norm taken over `norm_count` (training's
    counts before dropout) when given: the dense definition on hand-normalised inputs."""
    cfg = config_lib.testing().override(["model.input_norm=l2", "model.hidden=(6,)"])
    matrix = RowMatrix.from_interactions(small_data, orientation="user")
    module = build_model(cfg.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    plain = build_model(config_lib.testing().override(["model.hidden=(6,)"]).model, n_cols=matrix.n_cols,
                        n_channels=small_data.n_channels)
    params = init_params(module, jax.random.key(1))
    batch = next(iterate_batches(matrix, np.arange(8), batch_rows=8, budget=entry_budget(matrix.lengths, 8)))
    count = batch.count * np.random.default_rng(0).uniform(0.5, 3.0, batch.count.shape).astype(np.float32)
    real = batch.segment < 8
    norms = np.sqrt(np.bincount(batch.segment[real], weights=count[real] ** 2, minlength=8))
    normalised = np.where(real, count / norms[np.minimum(batch.segment, 7)], 0.0).astype(np.float32)

    def encode(m, c, *norm):
        return m.apply({"params": params}, batch.segment, batch.col, batch.channel, c, 8, *norm, method=Conv4Rec.encode)

    np.testing.assert_allclose(encode(module, count), encode(plain, normalised), rtol=1e-5, atol=1e-6)
    dropped = count * (np.arange(count.size) % 3 != 0)
    dropped_normalised = dropped * normalised / np.where(count > 0, count, 1)
    np.testing.assert_allclose(encode(module, dropped, count), encode(plain, dropped_normalised), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(encode(module, count)) - np.asarray(encode(plain, count))).max() > 1e-3
    with pytest.raises(ConfigError, match="input_norm"):
        config_lib.testing().override(["model.input_norm=l1"])


def test_auto_fold_at_any_channel_count_only_for_bf16_off_cpu(monkeypatch):
    def folds(precision):
        cfg = config_lib.testing().override(["model.decoder_channels=4", f"model.matmul_precision={precision}"])
        return build_model(cfg.model, n_cols=10, n_channels=5)._folds_output_conv()

    assert not folds("bfloat16") and not folds("float32")  # CPU: C = 5 > k' = 4 keeps the cheaper order
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert folds("bfloat16") and not folds("float32")


def test_decoder_fold_always_needs_a_linear_decoder():
    with pytest.raises(ConfigError, match="decoder_fold"):
        config_lib.testing().override(["model.decoder_activation=relu", "model.decoder_fold=always"])
    with pytest.raises(ConfigError, match="decoder_fold"):
        config_lib.testing().override(["model.decoder_fold=sometimes"])


def test_row_losses_equal_hand_likelihood():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 4, 3)).astype(np.float32))  # 2 rows, 4 columns, 3 channels
    segment = jnp.array([0, 0, 1, 2])  # last entry is padding (segment == n_rows)
    col, channel = jnp.array([1, 3, 0, 0]), jnp.array([2, 0, 1, 0])
    count = jnp.array([1.0, 2.0, 1.0, 0.0])
    log_z = jax.nn.logsumexp(logits, axis=(1, 2))
    entry_logits = jnp.concatenate([logits, logits[:1]])[segment, col]
    for lam in (1.0, 0.5):
        got = losses.row_losses(entry_logits, log_z, segment, channel, count, jnp.ones(4), rating_weight=lam, n_rows=2)
        p = np.exp(np.asarray(logits) - np.asarray(log_z)[:, None, None])
        p_item = p.sum(-1)
        expected = []
        for r, entries in ((0, [(1, 2, 1.0), (3, 0, 2.0)]), (1, [(0, 1, 1.0)])):
            expected.append(-sum(n * (np.log(p_item[r, i]) + lam * np.log(p[r, i, c] / p_item[r, i]))
                                 for i, c, n in entries))
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    joint = losses.row_losses(entry_logits, log_z, segment, channel, count, jnp.ones(4), rating_weight=1.0, n_rows=2)
    np.testing.assert_allclose(joint[1], -np.log(p[1, 0, 1]), rtol=1e-5)  # λ = 1: the joint likelihood


@pytest.mark.parametrize("n_cols, chunk", [(10, 3), (9, 3), (7, 100)])
def test_chunked_logsumexp_matches_full(n_cols, chunk):
    table = jax.random.normal(jax.random.key(0), (4, n_cols, 3)) * 30.0  # large logits
    fn = lambda cols: table[:, cols]
    got = losses.chunked_logsumexp(fn, n_cols=n_cols, chunk=chunk)
    np.testing.assert_allclose(got, jax.nn.logsumexp(table, axis=(1, 2)), rtol=1e-6)
    grad = jax.grad(lambda t: losses.chunked_logsumexp(lambda c: t[:, c], n_cols=n_cols, chunk=chunk).sum())(table)
    np.testing.assert_allclose(grad, jax.grad(lambda t: jax.nn.logsumexp(t, axis=(1, 2)).sum())(table), rtol=1e-5, atol=1e-7)


def test_loss_stays_finite_for_extreme_logits():
    logits = jnp.array([[1e4, -1e4], [-1e4, 1e4]])
    log_z = jax.nn.logsumexp(logits[None], axis=(1, 2))
    value, grad = jax.value_and_grad(lambda table: losses.row_losses(
        table, log_z, jnp.array([0, 0]), jnp.array([1, 1]), jnp.ones(2), jnp.ones(2), rating_weight=1.0, n_rows=1).sum())(logits)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "no-jit"])
@pytest.mark.parametrize("head", [(), ("model.rating_head='ordinal'", "model.cutpoints='per_column'")],
                         ids=["categorical", "ordinal_per_column"])
def test_item_row_scoring_of_columns_matches_the_module(head, jit):
    """predict's per-user column logits (item rows, columns given by their own parameters) are the
    module's logits, row offsets and each column's own cut-points included, jitted or not."""
    from convae_jax.predict import _column_params, column_logits_for_users

    cfg = config_lib.testing().override(["model.row_offsets=True", "model.hidden=(6,)", *head])
    module = build_model(cfg.model, n_cols=9, n_channels=3)
    params = init_params(module, jax.random.key(0))
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape), params)
    codes = jax.random.normal(jax.random.key(4), (5, 6))  # 5 item rows
    cols = jnp.array([7, 2])
    want = module.apply({"params": params}, codes, None, method=Conv4Rec.column_logits)[:, cols]  # (5, 2, 3)
    with chex.fake_jit(enable_patching=not jit):
        score = jax.jit(lambda p, h, c: column_logits_for_users(module, p, h, _column_params(module, p, c)))
        got = score(params, codes, cols)  # (2, 5, 3)
    chex.assert_shape(got, (2, 5, 3))
    np.testing.assert_allclose(got, jnp.transpose(want, (1, 0, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fold, scope", [("always", "shared"), ("never", "shared"), ("always", "per_column")])
def test_ordinal_head_is_a_cumulative_logit_model_inside_the_joint_softmax(small_data, fold, scope):
    """With the ordinal head B gives (s, η) per column; the C logits must keep s as the consume
    logit (logsumexp over channels) and give P(rating <= v_c) = σ(θ_c − η) with increasing θ,
    one θ for every column or one per column."""
    cfg = config_lib.testing().override(["model.rating_head='ordinal'", f"model.decoder_fold={fold}",
                                         f"model.cutpoints='{scope}'"])
    matrix = RowMatrix.from_interactions(small_data, orientation="user")
    module = build_model(cfg.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    params = init_params(module, jax.random.key(1))
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape), params)
    per_column = (matrix.n_cols,) if scope == "per_column" else ()
    assert params["output_conv"].shape == (4, 2)
    assert params["cutpoints"].shape == per_column + (small_data.n_channels - 1,)
    batch = next(iterate_batches(matrix, np.arange(8), batch_rows=8, budget=entry_budget(matrix.lengths, 8)))
    x = np.zeros((8, matrix.n_cols, small_data.n_channels), np.float32)
    real = batch.segment < 8
    np.add.at(x, (batch.segment[real], batch.col[real], batch.channel[real]), batch.count[real])
    raw = np.asarray(dense_reference_logits(params, jnp.asarray(x)), np.float64)  # (8, n, 2): s, η
    logits = np.asarray(module.apply({"params": params}, batch.segment, batch.col, batch.channel, batch.count, 8), np.float64)

    np.testing.assert_allclose(np.log(np.exp(logits).sum(-1)), raw[..., 0], rtol=1e-5, atol=1e-5)
    raw_cut = np.asarray(params["cutpoints"], np.float64)
    gaps = np.cumsum(np.log1p(np.exp(raw_cut[..., 1:])), axis=-1)
    theta = raw_cut[..., :1] + np.concatenate([np.zeros(per_column + (1,)), gaps], axis=-1)  # (…, C − 1)
    assert np.all(np.diff(theta, axis=-1) > 0)
    p_rating = np.exp(logits - logits.max(-1, keepdims=True))
    p_rating /= p_rating.sum(-1, keepdims=True)
    at_most = np.cumsum(p_rating, -1)[..., :-1]
    np.testing.assert_allclose(at_most, 1 / (1 + np.exp(raw[..., 1:] - theta)), rtol=1e-4, atol=1e-6)

    h = module.apply({"params": params}, batch.segment, batch.col, batch.channel, batch.count, 8, method=Conv4Rec.encode)
    rows, cols = batch.segment[real], batch.col[real]
    entries = module.apply({"params": params}, h[rows], cols, method=Conv4Rec.entry_logits)
    np.testing.assert_allclose(entries, logits[rows, cols], rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, batch.segment, batch.col, batch.channel,
                                                    batch.count, 8)[..., 0]))(params)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads)) and np.abs(grads["cutpoints"]).max() > 0


def test_ordinal_head_needs_two_levels_and_its_cutpoints_are_not_penalised():
    cfg = config_lib.testing().override(["model.rating_head='ordinal'"]).model
    with pytest.raises(ConfigError, match="at least 2 ordered rating levels"):
        build_model(cfg, n_cols=5, n_channels=1)
    params = init_params(build_model(cfg, n_cols=5, n_channels=5), jax.random.key(0))
    assert "cutpoints" in params and "cutpoints" not in weight_names(params) and "output_conv" in weight_names(params)
    with pytest.raises(ConfigError, match="rating_head"):
        config_lib.testing().override(["model.rating_head='probit'"])
    with pytest.raises(ConfigError, match="per_column' needs model.rating_head='ordinal'"):
        config_lib.testing().override(["model.cutpoints='per_column'"])


def hand_propensity_weights(logits, rows_entries, floor):
    """Inverse-propensity weights by the definition of docs/model.md: π = min(1, n_r · p_r(col)),
    w = 1 / max(π, floor), divided by the row's count-weighted mean w."""
    p_col = np.exp(logits).sum(-1) / np.exp(logits).sum(axis=(1, 2))[:, None]
    out = []
    for r, entries in enumerate(rows_entries):
        n_r = sum(n for _, n in entries)
        w = np.array([1 / max(min(n_r * p_col[r, col], 1.0), floor) for col, _ in entries])
        counts = np.array([n for _, n in entries])
        out += list(w / (np.sum(counts * w) / n_r))
    return np.array(out)


def test_propensity_weights_by_hand():
    # Row 0 (3 ratings) reads columns 0 and 2; row 1 (2 ratings) reads column 1 twice; one padding entry.
    # Row 0: p(col 0) = 0.9 -> π = min(1, 2.7) = 1; p(col 2) ≈ 0.01 -> π ≈ 0.03, floored at 0.05.
    logits = np.log(np.array([[[0.45, 0.45], [0.09, 0.0], [0.005, 0.005]],
                              [[0.3, 0.2], [0.1, 0.1], [0.2, 0.1]]]) + 1e-12).astype(np.float32)
    segment, col = jnp.array([0, 0, 1, 2]), jnp.array([0, 2, 1, 0])
    count = jnp.array([1.0, 2.0, 2.0, 0.0])
    entry_logits = jnp.concatenate([logits, logits[:1]])[segment, col]
    log_z = jax.nn.logsumexp(logits, axis=(1, 2))
    got = losses.propensity_weights(entry_logits, log_z, segment, count, floor=0.05, n_rows=2)
    expected = hand_propensity_weights(np.asarray(logits, np.float64), [[(0, 1.0), (2, 2.0)], [(1, 2.0)]], 0.05)
    np.testing.assert_allclose(got[:3], expected, rtol=1e-5)
    np.testing.assert_allclose(got[:2], [1 / (1 + 2 * 20) * 3, 20 / (1 + 2 * 20) * 3], rtol=1e-5)  # π 1 and the floor
    assert got[2] == 1.0 and got[3] == 0.0  # a row of one column; padding
    grads = jax.grad(lambda e: losses.propensity_weights(e, log_z, segment, count, floor=0.05, n_rows=2).sum())(entry_logits)
    np.testing.assert_array_equal(grads, 0.0)  # weights are constants to the optimiser


def uniform_consumption_params(config, n_cols, n_channels, *, key=0):
    """Parameters whose logits are the same at every column (P(consume) uniform over columns),
    the rating distribution still non-uniform: decoder weights 0, output bias a per-channel vector."""
    module = build_model(config.model, n_cols=n_cols, n_channels=n_channels)
    params = init_params(module, jax.random.key(key))
    params["decoder_kernel"] = jnp.zeros_like(params["decoder_kernel"])
    params["output_bias"] = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, n_channels), params["output_bias"].shape)
    return module, params


def test_uniform_consumption_gives_weights_of_one_and_todays_loss_exactly(small_data):
    from convae_jax.train import make_loss_fn

    on = config_lib.testing().override(["model.rating_propensity='inverse'", "model.propensity_floor=0.001"])
    matrix = RowMatrix.from_interactions(small_data, orientation="item")
    module, params = uniform_consumption_params(on, matrix.n_cols, small_data.n_channels)
    batch = next(iterate_batches(matrix, np.arange(matrix.n_rows), batch_rows=32, budget=entry_budget(matrix.lengths, 32)))
    logits = module.apply({"params": params}, jnp.zeros((32, 16)), None, method=Conv4Rec.column_logits)
    log_z = jax.nn.logsumexp(logits, axis=(1, 2))
    segment = jnp.asarray(batch.segment)
    weights = losses.propensity_weights(logits[jnp.minimum(segment, 31), batch.col], log_z, segment, batch.count,
                                        floor=0.001, n_rows=32)
    real = np.asarray(batch.count) > 0
    np.testing.assert_array_equal(np.asarray(weights)[real], 1.0)
    key = jax.random.key(3)  # the same input dropout in both; jitted, as training runs them
    loss_today = jax.jit(make_loss_fn(model=module, config=config_lib.testing(), batch_rows=32))(params, batch, key)
    loss_corrected = jax.jit(make_loss_fn(model=module, config=on, batch_rows=32))(params, batch, key)
    assert float(loss_corrected) == float(loss_today)


def test_propensity_knob_is_checked():
    with pytest.raises(ConfigError, match="rating_propensity"):
        config_lib.testing().override(["model.rating_propensity='dr'"])
    with pytest.raises(ConfigError, match="propensity_floor"):
        config_lib.testing().override(["model.propensity_floor=0.0"])


def _tied_and_untied(small_data, fold):
    """Tied and untied user-row modules on small_data, the untied one holding the tied filters at every column."""
    cfg = config_lib.testing().override(["model.orientation=user", f"model.decoder_fold={fold}"])
    matrix = RowMatrix.from_interactions(small_data, orientation="user")
    tied = build_model(cfg.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    untied = build_model(cfg.override(["model.tie_filters=False"]).model, n_cols=matrix.n_cols,
                         n_channels=small_data.n_channels)
    params = jax.jit(lambda key: jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(key, p.shape),
                                                        init_params(tied, jax.random.fold_in(key, 1))))(jax.random.key(2))
    copies = {name: jnp.broadcast_to(params[name], (matrix.n_cols,) + params[name].shape)
              for name in ("input_conv", "output_conv")}
    return matrix, tied, untied, params, params | copies


@pytest.mark.parametrize("fold", ["always", "never"])
def test_untied_filters_all_equal_to_the_tied_one_give_the_tied_model(small_data, fold):
    """Per-column filters set to the tied filter at every column: the tied logits (up to float32
    rounding: the contractions run in another order), on the per-entry path (one row) and the
    table path (8 rows), at the observed entries, and gradients that sum over columns to the tied ones."""
    matrix, tied, untied, params, copies = _tied_and_untied(small_data, fold)
    assert untied._folds_output_conv() == (fold == "always")
    batches = [next(iterate_batches(matrix, np.arange(rows), batch_rows=rows, budget=entry_budget(matrix.lengths, rows)))
               for rows in (1, 8)]
    args = [(b.segment, b.col, b.channel, b.count, rows) for b, rows in zip(batches, (1, 8))]
    h, cols = jax.random.normal(jax.random.key(3), (5, 16)), jnp.array([0, 3, 3, 7, 39])
    weights = jax.random.normal(jax.random.key(4), (8, matrix.n_cols, small_data.n_channels))

    def outputs(module, p):  # one compiled program per module: logits of both batches, the table, entry logits
        apply = lambda *a, **kw: module.apply({"params": p}, *a, **kw)
        return ([apply(*a) for a in args] + [apply(method=Conv4Rec._input_table)]
                + [apply(h, cols, method=Conv4Rec.entry_logits)])

    scalar = lambda module, p: jnp.sum(weights * module.apply({"params": p}, *args[1]))
    for got, want in zip(jax.jit(lambda p: outputs(untied, p))(copies), jax.jit(lambda p: outputs(tied, p))(params)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    got, want = jax.jit(jax.grad(lambda p: scalar(untied, p)))(copies), jax.jit(jax.grad(lambda p: scalar(tied, p)))(params)
    for name in ("input_conv", "output_conv"):
        np.testing.assert_allclose(got[name].sum(axis=0), want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_untied_parameter_count_and_refused_combinations():
    cfg = config_lib.testing().override(["model.orientation=user", "model.tie_filters=False"])  # k = 4, d = 16, k' = 4
    n, c = 30, 5
    params = jax.eval_shape(lambda key: init_params(build_model(cfg.model, n_cols=n, n_channels=c), key), jax.random.key(0))
    assert {name: leaf.size for name, leaf in params.items()} == {
        "input_conv": n * c * 4, "encoder_kernel": n * 4 * 16, "encoder_bias": 16, "decoder_kernel": n * 16 * 4,
        "decoder_bias": n * 4, "output_conv": n * 4 * c, "output_bias": n * c}
    with pytest.raises(ConfigError, match="model.tie_filters=False needs model.orientation='user'"):
        config_lib.testing().override(["model.tie_filters=False"])
    with pytest.raises(ConfigError, match="model.tie_filters=False needs mesh.model=1"):
        cfg.override(["mesh.model=2"])
