"""Scoring under user rows on a device mesh: codes, whole-catalogue scores, rating distributions,
top-k and fold-in, with no device holding a whole column-indexed table or a (users × items) array.

Each `model` shard encodes its part of a user's history (summed over `model`, as in training),
scores its own items and normalises them with the log-sum-exp combined across `model`
(`losses.combine_logsumexp`). Top-k: each shard's own k, merged: (users, M·k) values cross devices,
never (users, n). Users go through in batches, replicated over `data` (scoring is one pass of the
decoder: rows need no splitting for memory). `MeshScorer` answers as `predict.FittedModel` does
(`score_users`, `consumption_scores`, `rating_log_probs`, `fold_in`), so the evaluation protocols,
`experiment.recommend_for` and `explain.explain_scores` take it in the model's place.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from convae_jax import losses
from convae_jax.data.batches import RowMatrix, entry_budget, iterate_batches
from convae_jax.data.interactions import Interactions
from convae_jax.errors import ConvaeError
from convae_jax.model import Conv4Rec, build_model
from convae_jax.predict import FittedModel, UserScores, padded_index
from convae_jax.sharding import MODEL, Layout


class MeshScorer:
    """The users of `matrix` (default: the model's training rows) scored by a user-rows
    `FittedModel` on `layout`'s mesh, `batch_rows` users at a time (each model shard holds
    batch_rows × n / M × C logits)."""

    def __init__(self, model: FittedModel, layout: Layout, *, batch_rows: int = 64, matrix: RowMatrix | None = None,
                 _kernels: "_ShardKernels | None" = None):
        if model.orientation != "user":
            raise ConvaeError("mesh scoring ranks items as columns: it needs model.orientation='user'")
        self.model, self.layout, self.batch_rows = model, layout, batch_rows
        self.config, self.train = model.config, model.train
        self.matrix = model.matrix if matrix is None else matrix
        self.kernels = _kernels or _ShardKernels(model, layout, batch_rows)

    def _batches(self, users):
        budget = entry_budget(self.matrix.lengths, self.batch_rows)
        return iterate_batches(self.matrix, np.asarray(users, np.int32), batch_rows=self.batch_rows, budget=budget)

    def score_users(self, users, *, batch: int | None = None):
        """`UserScores` batches over every item, as `FittedModel.score_users` gives them (`batch`
        is fixed by the scorer's `batch_rows`)."""
        n = self.layout.n_cols
        for rows in self._batches(users):
            log_c, log_r = self.kernels.scores(*_entries(rows))
            size = int(rows.row_mask.sum())
            yield UserScores(rows.row[:size], np.asarray(log_c)[:size, :n], np.asarray(log_r)[:size, :n])

    def consumption_scores(self, users=None, *, batch: int | None = None):
        """(users, log P(i | u)) batches: the evaluation protocols' ranking interface."""
        users = np.arange(self.matrix.n_rows) if users is None else users
        for scores in self.score_users(users):
            yield scores.users, scores.log_p_consume

    def codes(self, users) -> jnp.ndarray:
        """Row codes (users, d) from the users' histories, no dropout."""
        parts = []
        for rows in self._batches(users):
            parts.append(self.kernels.encode(*_entries(rows))[: int(rows.row_mask.sum())])
        return jnp.concatenate(parts)

    def rating_log_probs(self, users, items, *, chunk: int = 4096) -> np.ndarray:
        """log P(rating = v_c | u, i consumed), (P, C); each pair's logits from the shard owning its item."""
        users, items = np.asarray(users, np.int32), np.asarray(items, np.int32)
        known, position = np.unique(users, return_inverse=True)
        codes = self.codes(known) if known.size else jnp.zeros((0, self.model.module.config.hidden[-1]))
        out = []
        for start in range(0, users.size, chunk):
            at = padded_index(position[start:start + chunk], chunk)
            logits = self.kernels.pair_logits(codes[at], jnp.asarray(padded_index(items[start:start + chunk], chunk)))
            out.append(np.asarray(jax.nn.log_softmax(logits, axis=-1))[: min(chunk, users.size - start)])
        return np.concatenate(out) if out else np.zeros((0, self.train.n_channels), np.float32)

    def top_items(self, users, *, k: int):
        """(items (users, k), log P(i | u) (users, k)): each user's k likeliest items outside their
        history, best first, in the order of `users`."""
        items, scores = [], []
        for rows in self._batches(users):
            best, index = self.kernels.top_k(*_entries(rows), k=k)
            size = int(rows.row_mask.sum())
            items.append(np.asarray(index)[:size])
            scores.append(np.asarray(best)[:size])
        return np.concatenate(items), np.concatenate(scores)

    def fold_in(self, history: Interactions) -> "MeshScorer":
        """New users scored from their `history` alone, encoded as any row is (user rows'
        fold-in without a code prior): a scorer whose users are the history's, renumbered
        0..m−1 in the order of `.users` (their indices in the history)."""
        if (history.n_items, history.channel_values) != (self.train.n_items, self.train.channel_values):
            raise ConvaeError("fold-in history must use the model's item index space and rating scale")
        if self.config.eval.fold_in_code_prior > 0:
            raise ConvaeError("mesh scoring folds new users in by their code alone: set eval.fold_in_code_prior=0")
        users = np.unique(history.user)
        local = dataclasses.replace(history, user=np.searchsorted(users, history.user).astype(np.int32),
                                    n_users=users.size, user_ids=history.user_ids[users])
        folded = MeshScorer(self.model, self.layout, batch_rows=self.batch_rows, _kernels=self.kernels,
                            matrix=RowMatrix.from_interactions(local, orientation="user"))
        folded.users = users
        return folded


def _entries(rows):
    return rows.segment, rows.col, rows.channel, rows.count


class _ShardKernels:
    """The jitted shard_map programs of a `MeshScorer`, shared by a model's folded-in users."""

    def __init__(self, model: FittedModel, layout: Layout, rows: int):
        self.layout, self.rows = layout, rows
        self.module = build_model(model.config.model, n_cols=layout.cols_per_shard, n_channels=model.train.n_channels)
        self.params = layout.place(model.params)
        self._specs = layout.specs(self.params)
        self._top_k_programs = {}  # k -> the jitted top-k

    def _on_mesh(self, fn, *, n_args: int, out_specs=None):
        mapped = jax.shard_map(fn, mesh=self.layout.mesh, in_specs=(self._specs,) + (P(),) * n_args,
                               out_specs=P() if out_specs is None else out_specs)
        return jax.jit(mapped)

    def _apply(self, params, method, *args):
        return self.module.apply({"params": params}, *args, method=method)

    def _shard(self):
        return jax.lax.axis_index(MODEL) if self.layout.model > 1 else 0

    def _first_column(self):
        return self._shard() * self.layout.cols_per_shard

    def _sum_over_model(self, x):
        return jax.lax.psum(x, MODEL) if self.layout.model > 1 else x

    def _codes(self, params, segment, col, channel, count):
        local, owned = self.layout.own_columns(col)
        pre = self._apply(params, Conv4Rec.encoder_sum, segment, local, channel, jnp.where(owned, count, 0.0), self.rows)
        return self._apply(params, Conv4Rec.code, self._sum_over_model(pre), segment, count, self.rows)

    def _log_consume(self, params, codes):
        """(log P(i | u) of this shard's items (rows, cols_per_shard), their logits, which are real)."""
        logits = self._apply(params, Conv4Rec.column_logits, codes, None)  # (rows, own columns, C)
        valid = self.layout.column_valid(self._shard())
        log_z = jax.nn.logsumexp(losses.masked_logits(logits, valid), axis=(1, 2))
        if self.layout.model > 1:
            log_z = losses.combine_logsumexp(log_z, MODEL)
        return jax.nn.logsumexp(logits, axis=-1) - log_z[:, None], logits, valid

    @functools.cached_property
    def _encode(self):
        return self._on_mesh(self._codes, n_args=4)

    def encode(self, *entries):
        return self._encode(self.params, *entries)

    @functools.cached_property
    def _scores(self):
        def run(params, *entries):
            log_consume, logits, _ = self._log_consume(params, self._codes(params, *entries))
            return log_consume, logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
        split = P(None, MODEL) if self.layout.model > 1 else P()
        return self._on_mesh(run, n_args=4, out_specs=(split, split))

    def scores(self, *entries):
        """(log P(i | u) (rows, n_padded), log P(c | u, i) (rows, n_padded, C)), split over `model`."""
        return self._scores(self.params, *entries)

    @functools.cached_property
    def _pair_logits(self):
        def run(params, codes, cols):
            local, owned = self.layout.own_columns(cols)
            logits = self._apply(params, Conv4Rec.entry_logits, codes, local)
            return self._sum_over_model(jnp.where(owned[:, None], logits, 0.0))
        return self._on_mesh(run, n_args=2)

    def pair_logits(self, codes, cols):
        return self._pair_logits(self.params, codes, cols)

    def _top_k(self, k: int):
        if k in self._top_k_programs:
            return self._top_k_programs[k]

        def run(params, segment, col, channel, count):
            log_consume, _, valid = self._log_consume(params, self._codes(params, segment, col, channel, count))
            local, owned = self.layout.own_columns(col)  # the history's own items; padding entries (segment == rows) drop out
            log_consume = log_consume.at[jnp.where(owned, segment, self.rows), local].set(-jnp.inf, mode="drop")
            values, index = jax.lax.top_k(jnp.where(valid[None, :], log_consume, -jnp.inf),
                                          min(k, self.layout.cols_per_shard))
            index = index + self._first_column()
            if self.layout.model > 1:
                values = jax.lax.all_gather(values, MODEL, axis=1, tiled=True, to="invarying")
                index = jax.lax.all_gather(index, MODEL, axis=1, tiled=True, to="invarying")
            best, where = jax.lax.top_k(values, k)
            return best, jnp.take_along_axis(index, where, axis=1)
        self._top_k_programs[k] = self._on_mesh(run, n_args=4)
        return self._top_k_programs[k]

    def top_k(self, *entries, k: int):
        return self._top_k(k)(self.params, *entries)
