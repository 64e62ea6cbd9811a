"""The fast paths of the JAX model agree with the plain ones: the encoder's two contraction orders,
the fused entry-logits/log Z against the chunked log-sum-exp, and the matmul_precision knob
(fp32 exact, TF32 and bf16 within their stated tolerances: the GPU variants, checked on CPU)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convae_jax import config as config_lib
from convae_jax import losses, ops
from convae_jax import model as model_lib
from convae_jax.data.batches import RowMatrix, entry_budget, iterate_batches
from convae_jax.errors import ConfigError
from convae_jax.model import Conv4Rec, build_model, init_params
from convae_jax.ops import (
    bag_sum,
    mix_middle,
    mix_middle_dm_batched,
    mix_middle_dm_fused,
    mix_middle_reduced,
    mix_middle_unrolled,
)
from convae_jax.train import TrainState, make_loss_fn, make_optimizer, make_train_step


@pytest.fixture(scope="module")
def setup(small_data):
    config = config_lib.testing().override(["model.orientation=user", "model.input_dropout=0.0"])
    matrix = RowMatrix.from_interactions(small_data, orientation="user")
    rows = config.train.batch_rows
    batch = next(iterate_batches(matrix, np.arange(matrix.n_rows), batch_rows=rows,
                                 budget=entry_budget(matrix.lengths, rows)))
    model = build_model(config.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    return config, matrix, model, init_params(model, jax.random.key(0)), batch


def test_encoder_paths_agree(setup, monkeypatch):
    """Per entry, dense input and sparse table gather: one sum, three contraction orders."""
    _, matrix, model, params, batch = setup
    rows = batch.row_mask.shape[0]
    # A one-row batch of 3 entries takes the per-entry path (3·k <= n·C); the same entries padded
    # to 512 take a table path (512·k > n·C). Padding has count 0 and segment = n_rows.
    seg, col, ch, cnt = (np.asarray(a)[:3] for a in (np.zeros(3, np.int32), batch.col, batch.channel, batch.count))
    assert 3 * model.config.conv_channels <= model.n_cols * model.n_channels < 512 * model.config.conv_channels
    pad = lambda a, v: np.concatenate([a, np.full(509, v, a.dtype)])  # noqa: E731
    encode = lambda *a: model.apply({"params": params}, *a, 1, method=Conv4Rec.encode)  # noqa: E731
    whole = lambda: model.apply({"params": params}, batch.segment, batch.col, batch.channel, batch.count, rows,  # noqa: E731
                                method=Conv4Rec.encode)
    assert rows * model.n_cols * model.n_channels <= model_lib.DENSE_INPUT_MAX_CELLS_PER_ENTRY * batch.col.size
    per_entry, dense, h_dense = encode(seg, col, ch, cnt), encode(pad(seg, 1), pad(col, 0), pad(ch, 0), pad(cnt, 0.0)), whole()
    monkeypatch.setattr(model_lib, "DENSE_INPUT_MAX_CELLS_PER_ENTRY", 0)  # every batch gathers table rows
    sparse, h_sparse = encode(pad(seg, 1), pad(col, 0), pad(ch, 0), pad(cnt, 0.0)), whole()
    monkeypatch.setattr(ops, "ENTRY_CHUNK", 5)  # many chunks, the last one padded
    h_small_chunks = whole()
    np.testing.assert_allclose(dense, per_entry, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse, per_entry, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_sparse, h_dense, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_small_chunks, h_dense, rtol=1e-5, atol=1e-6)
    # and the whole batch against the per-entry order, one row at a time
    for r in range(3):
        mine = batch.segment == r
        one = encode(np.zeros(mine.sum(), np.int32), batch.col[mine], batch.channel[mine], batch.count[mine])
        np.testing.assert_allclose(h_dense[r], one[0], rtol=1e-5, atol=1e-6)


def test_fused_entry_logits_equal_chunked_path(setup):
    _, matrix, model, params, batch = setup
    rows = batch.row_mask.shape[0]

    def outputs(p, chunk):
        h = model.apply({"params": p}, batch.segment, batch.col, batch.channel, batch.count, rows, method=Conv4Rec.encode)
        h_padded = jnp.concatenate([h, jnp.zeros((1, h.shape[1]))])
        return losses.entry_logits_and_log_z(
            lambda cols: model.apply({"params": p}, h, cols, method=Conv4Rec.column_logits),
            lambda: model.apply({"params": p}, h_padded[batch.segment], batch.col, method=Conv4Rec.entry_logits),
            batch.segment, batch.col, n_cols=model.n_cols, chunk=chunk)

    real = batch.count > 0
    fused, chunked = (jax.jit(outputs, static_argnums=1)(params, c) for c in (model.n_cols, 7))
    (fused_entries, fused_z), (chunked_entries, chunked_z) = fused, chunked
    np.testing.assert_allclose(fused_entries[real], chunked_entries[real], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused_z, chunked_z, rtol=1e-5)

    def scalar(p, chunk):
        entries, log_z = outputs(p, chunk)
        return jnp.sum(jnp.where(real[:, None], entries, 0.0) ** 2) + jnp.sum(log_z)

    grad = jax.jit(jax.grad(scalar), static_argnums=1)
    g_fused, g_chunked = grad(params, model.n_cols), grad(params, 7)
    for name in g_fused:
        np.testing.assert_allclose(g_fused[name], g_chunked[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("precision, rtol", [("float32", 1e-6), ("tensorfloat32", 1e-3), ("bfloat16", 2e-2)])
def test_matmul_precision_tracks_float32(setup, precision, rtol):
    """Loss and gradients under each precision against the default; on CPU the TF32 request is
    served in fp32, bf16 rounds operands to 8 bits of mantissa (relative error ~4e-3 per product)."""
    config, matrix, model, params, batch = setup
    grads = {}
    for p in ("default", precision):
        cfg = dataclasses.replace(config, model=dataclasses.replace(config.model, matmul_precision=p))
        m = build_model(cfg.model, n_cols=matrix.n_cols, n_channels=model.n_channels)
        loss_fn = make_loss_fn(model=m, config=cfg, batch_rows=cfg.train.batch_rows)
        grads[p] = jax.jit(jax.value_and_grad(loss_fn))(params, batch, jax.random.key(0))
    (want_loss, want_grads), (got_loss, got_grads) = grads["default"], grads[precision]
    np.testing.assert_allclose(got_loss, want_loss, rtol=rtol)
    if precision == "bfloat16":
        assert float(got_loss) != float(want_loss)  # the bf16 path really ran in bf16
    for name in want_grads:
        scale = float(jnp.abs(want_grads[name]).max())
        np.testing.assert_allclose(got_grads[name], want_grads[name], rtol=rtol, atol=10 * rtol * scale, err_msg=name)


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="matmul_precision"):
        config_lib.testing().override(["model.matmul_precision=fp8"])


def test_mix_middle_weight_gradient_forms_agree():
    """The GPU form of mix_middle's dm (batched GEMMs) against the CPU form (one fused reduce)."""
    g = jax.random.normal(jax.random.key(0), (50, 10, 30))
    w = jax.random.normal(jax.random.key(1), (50, 8, 30))
    np.testing.assert_allclose(mix_middle_dm_batched(g, w), mix_middle_dm_fused(g, w), rtol=1e-5, atol=1e-4)


def test_mix_middle_forms_agree():
    """The GPU form of mix_middle (one reduction over k) against the CPU form (k multiply-adds) and
    a plain einsum; CPU runs pick the unrolled form."""
    m = jax.random.normal(jax.random.key(0), (10, 8))
    w = jax.random.normal(jax.random.key(1), (50, 8, 30))
    want = jnp.einsum("ck,nkd->ncd", m, w, precision="highest")
    for form in (mix_middle_reduced, mix_middle_unrolled, mix_middle):
        np.testing.assert_allclose(form(m, w), want, rtol=1e-5, atol=1e-5, err_msg=form.__name__)
    assert jnp.array_equal(jax.jit(mix_middle)(m, w), jax.jit(mix_middle_unrolled)(m, w))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_bag_sum_equals_gather_and_segment_sum(monkeypatch, chunk):
    """The chunked embedding bag against the plain gather and segment sum, values and gradients
    (table and weights), with dropped entries (segment == n_rows) and a padded last chunk."""
    monkeypatch.setattr(ops, "ENTRY_CHUNK", chunk)
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.normal(size=(40, 6)), jnp.float32)
    index, segment = rng.integers(0, 40, 150), np.sort(rng.integers(0, 10, 150))  # 9: dropped
    weight = jnp.asarray(rng.random(150), jnp.float32)

    def plain(table, weight):
        return jax.ops.segment_sum(weight[:, None] * table[index], segment, num_segments=10)[:9]

    cotangent = jnp.asarray(rng.normal(size=(9, 6)), jnp.float32)
    got, want = (jax.value_and_grad(lambda t, w, f=f: jnp.sum(cotangent * f(t, w)), argnums=(0, 1))(table, weight)
                 for f in (lambda t, w: bag_sum(t, index, w, segment, 9), plain))
    np.testing.assert_allclose(bag_sum(table, index, weight, segment, 9), plain(table, weight), rtol=1e-6, atol=1e-6)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_average", [0.0, 0.9])
def test_the_step_updates_the_optimiser_state_in_place(setup, weight_average):
    """Donated Adam moments (and the weight average) are written back into their own buffers: no
    array of W_enc's or W_dec's shape is copied in the compiled step. With the parameters first among the
    outputs, JAX paired the new parameters with the moments' buffers and XLA copied the moments."""
    config, matrix, model, params, batch = setup
    config = config.override([f"train.weight_average={weight_average}"])
    tx = make_optimizer(config)
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    step = make_train_step(model=model, tx=tx, config=config, dropout_key=jax.random.key(1))
    weight_shapes = {",".join(map(str, w.shape)) for w in jax.tree_util.tree_leaves(params) if w.ndim == 3}  # W_enc, W_dec
    copies = [line for line in step.compiled_text(state, batch).splitlines()
              if " copy(" in line and any(f"[{shape}]" in line.split("copy(")[0] for shape in weight_shapes)]
    assert copies == []
    new_state, loss = step(state, batch)
    assert np.isfinite(float(loss)) and int(new_state.step) == 1
