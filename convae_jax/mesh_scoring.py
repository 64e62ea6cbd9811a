"""Scoring under user rows on a device mesh: row codes and top-k items, with no device holding a
whole column-indexed table or a (users × items) array.

Each `model` shard encodes its part of a user's history (summed over `model`, as in training),
scores its own items, normalises with the log-sum-exp combined across `model`
(`losses.combine_logsumexp`), takes its own top-k, and the shards' lists are merged: (users, M·k)
values cross devices, never (users, n). Users are replicated over `data`: scoring is one pass of
the decoder, so rows need no splitting for memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from convae_jax import losses
from convae_jax.data.batches import RowMatrix, entry_budget, iterate_batches
from convae_jax.errors import ConvaeError
from convae_jax.model import Conv4Rec, build_model
from convae_jax.predict import FittedModel
from convae_jax.sharding import MODEL, Layout


class MeshScorer:
    """Top-k items of known users of a user-rows `FittedModel`, on `layout`'s mesh, `batch_rows`
    users at a time (each model shard holds batch_rows × n / M × C logits)."""

    def __init__(self, model: FittedModel, layout: Layout, *, batch_rows: int = 64):
        if model.orientation != "user":
            raise ConvaeError("mesh scoring ranks items as columns: it needs model.orientation='user'")
        self.model, self.layout, self.batch_rows = model, layout, batch_rows
        self.shard_module = build_model(model.config.model, n_cols=layout.cols_per_shard, n_channels=model.train.n_channels)
        self.params = layout.place(model.params)
        self._specs = layout.specs(self.params)

    def _shard_map(self, fn, n_args: int):
        return jax.shard_map(fn, mesh=self.layout.mesh, in_specs=(self._specs,) + (P(),) * n_args, out_specs=P())

    def _own_columns(self, col):
        """(column numbered within this shard, owned?) of global columns `col`."""
        if self.layout.model == 1:
            return col, jnp.ones(col.shape, bool)
        first = jax.lax.axis_index(MODEL) * self.layout.cols_per_shard
        owned = (col >= first) & (col < first + self.layout.cols_per_shard)
        return jnp.where(owned, col - first, 0), owned

    @functools.cached_property
    def _codes_and_top_k(self):
        layout, rows = self.layout, self.batch_rows

        def run(params, segment, col, channel, count, *, k):
            apply = lambda method, *args: self.shard_module.apply({"params": params}, *args, method=method)
            local, owned = self._own_columns(col)
            pre = apply(Conv4Rec.encoder_sum, segment, local, channel, jnp.where(owned, count, 0.0), rows)
            if layout.model > 1:
                pre = jax.lax.psum(pre, MODEL)
            codes = apply(Conv4Rec.code, pre, segment, count, rows)
            logits = apply(Conv4Rec.column_logits, codes, None)  # (rows, own columns, C)
            first = (jax.lax.axis_index(MODEL) if layout.model > 1 else 0) * layout.cols_per_shard
            valid = first + jnp.arange(layout.cols_per_shard) < layout.n_cols
            log_z = jax.nn.logsumexp(jnp.where(valid[None, :, None], logits, losses.MASKED_LOGIT), axis=(1, 2))
            if layout.model > 1:
                log_z = losses.combine_logsumexp(log_z, MODEL)
            log_consume = jax.nn.logsumexp(logits, axis=-1) - log_z[:, None]
            # The history's own items (padding entries have segment == rows and drop out).
            log_consume = log_consume.at[jnp.where(owned, segment, rows), local].set(-jnp.inf, mode="drop")
            values, index = jax.lax.top_k(jnp.where(valid[None, :], log_consume, -jnp.inf), min(k, layout.cols_per_shard))
            index = index + first
            if layout.model > 1:
                values = jax.lax.all_gather(values, MODEL, axis=1, tiled=True, to="invarying")
                index = jax.lax.all_gather(index, MODEL, axis=1, tiled=True, to="invarying")
            best, where = jax.lax.top_k(values, k)
            return best, jnp.take_along_axis(index, where, axis=1)

        return jax.jit(lambda params, *batch, k: self._shard_map(functools.partial(run, k=k), 4)(params, *batch),
                       static_argnames="k")

    def top_items(self, users, *, k: int):
        """(items (users, k), log P(i | u) (users, k)): each user's k likeliest unseen items, best
        first, in the order of `users`."""
        matrix: RowMatrix = self.model.matrix
        budget = entry_budget(matrix.lengths, self.batch_rows)
        items, scores = [], []
        for batch in iterate_batches(matrix, np.asarray(users, np.int32), batch_rows=self.batch_rows, budget=budget):
            best, index = self._codes_and_top_k(self.params, batch.segment, batch.col, batch.channel, batch.count, k=k)
            n = int(batch.row_mask.sum())
            items.append(np.asarray(index)[:n])
            scores.append(np.asarray(best)[:n])
        return np.concatenate(items), np.concatenate(scores)
