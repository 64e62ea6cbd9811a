"""Scoring on a device mesh, both orientations, with no device holding a whole column-indexed
table or a (users × catalogue) array of the sharded columns.

User rows (the items are the sharded columns): each `model` shard encodes its part of a user's
history (summed over `model`, as in training), scores its own items and normalises them with the
log-sum-exp combined across `model` (`losses.combine_logsumexp`). Top-k: each shard's own k,
merged: (users, M·k) values cross devices, never (users, n).

Item rows (the users are the sharded columns): every item's code and its log-sum-exp over all users
are computed once, each shard over its own users and combined across `model`. A batch of users is
scored from its users' own column parameters, fetched from the shards that own them (summed over
`model`: (users, k', d) crosses devices, never a table), against every item, as one device does.

Rows go through in batches of `eval.eval_rows`, replicated over `data` (scoring is one pass of the
decoder: rows need no splitting for memory). `MeshScorer` answers as `predict.FittedModel` does
(`score_users`, `consumption_scores`, `rating_log_probs`, `fold_in`), so the evaluation protocols,
`experiment.recommend_for`, `explain.explain` and `train.fit`'s validation take it in the model's place.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from convae_jax import losses
from convae_jax.config import Config, ModelConfig
from convae_jax.data.batches import RowMatrix, entry_budget, iterate_batches
from convae_jax.data.interactions import Interactions
from convae_jax.errors import ConvaeError
from convae_jax.model import Conv4Rec, build_model, init_params
from convae_jax.predict import FittedModel, FoldedUsers, ScoringKernels, UserScores, log_item_prior, padded_index
from convae_jax.rank import seen_mask
from convae_jax.sharding import MODEL, Layout, make_layout


@dataclasses.dataclass(eq=False)
class MeshScorer:
    """A trained Conv4Rec whose `params` lie on `layout`'s mesh (padded and sharded as
    `Layout.place` puts them), with the training interactions its encoder reads."""

    config: Config
    params: dict
    train: Interactions
    layout: Layout
    history: tuple = ()

    def __post_init__(self):
        self.orientation = self.config.model.orientation
        self.matrix = RowMatrix.from_interactions(self.train, orientation=self.orientation)
        self.batch_rows = self.config.eval.eval_rows
        self.kernels = _ShardKernels.of(self.config.model, self.layout, self.train.n_channels, self.batch_rows)
        # The padded catalogue's module, for programs outside shard_map that read replicated
        # parameters only (item rows: scoring a user's own column parameters, fold-in).
        self.module = build_model(self.config.model, n_cols=self.layout.n_padded, n_channels=self.train.n_channels)

    @classmethod
    def of(cls, model: FittedModel, layout: Layout) -> "MeshScorer":
        """A fitted model's parameters put on `layout`'s mesh."""
        return cls(model.config, layout.place(model.params), model.train, layout, model.history)

    # --- FittedModel's interface -----------------------------------------------------------------

    def score_users(self, users, *, batch: int | None = None):
        """`UserScores` batches over every item, as `FittedModel.score_users` gives them (the batch
        is the config's `eval.eval_rows`)."""
        users = np.asarray(users, np.int32)
        if self.orientation == "user":
            for rows in self._batches(self.matrix, users):
                size = int(rows.row_mask.sum())
                log_c, log_r = self.scores_of_codes(self._encode(rows))
                yield UserScores(rows.row[:size], *self._real(log_c, log_r, size))
            return
        for start in range(0, users.size, self.batch_rows):
            chunk = users[start:start + self.batch_rows]
            columns = self.kernels.column_params(self.params, padded_index(chunk, self.batch_rows))
            yield UserScores(chunk, *self._real(*self.scores_of_columns(columns), chunk.size))

    def consumption_scores(self, users, *, batch: int | None = None):
        """(users, log P(i | u)) batches: the evaluation protocols' ranking interface."""
        for scores in self.score_users(users):
            yield scores.users, scores.log_p_consume

    def rating_log_probs(self, users, items, *, chunk: int = 4096) -> np.ndarray:
        """log P(rating = v_c | u, i consumed), (P, C); each pair's logits from the shard owning its column."""
        users, items = np.asarray(users, np.int32), np.asarray(items, np.int32)
        if self.orientation == "user":
            known, rows = np.unique(users, return_inverse=True)
            codes, cols = self.codes_of_rows(known), items
        else:
            codes, rows, cols = self.row_codes, items, users
        out = []
        for start in range(0, rows.size, chunk):
            at = padded_index(rows[start:start + chunk], chunk)
            logits = self.kernels.pair_logits(self.params, codes[at], jnp.asarray(padded_index(cols[start:start + chunk], chunk)))
            out.append(np.asarray(jax.nn.log_softmax(logits, axis=-1))[: min(chunk, rows.size - start)])
        return np.concatenate(out) if out else np.zeros((0, self.train.n_channels), np.float32)

    def top_items(self, users, *, k: int):
        """(items (users, k), log P(i | u) (users, k)): each user's k likeliest items outside their
        history, best first, in the order of `users`."""
        users = np.asarray(users, np.int32)
        items, scores = [], []
        if self.orientation == "user":
            for rows in self._batches(self.matrix, users):
                best, index = self.kernels.top_k(self.params, self._encode(rows), rows.segment, rows.col, k=k)
                items.append(np.asarray(index)[: int(rows.row_mask.sum())])
                scores.append(np.asarray(best)[: int(rows.row_mask.sum())])
        else:
            for batch in self.score_users(users):
                seen = seen_mask(batch.users, self.train, self.train.n_items)
                best, index = jax.lax.top_k(jnp.where(seen, -jnp.inf, batch.log_p_consume), k)
                items.append(np.asarray(index))
                scores.append(np.asarray(best))
        return np.concatenate(items), np.concatenate(scores)

    def fold_in(self, history: Interactions, *, steps: int | None = None, learning_rate: float | None = None,
                code_prior: float | None = None) -> FoldedUsers:
        """New users scored from their `history` alone, as `FittedModel.fold_in` does; user rows
        without a code prior (its refinement reads the whole catalogue per user)."""
        if (history.n_items, history.channel_values) != (self.train.n_items, self.train.channel_values):
            raise ConvaeError("fold-in history must use the model's item index space and rating scale")
        code_prior = self.config.eval.fold_in_code_prior if code_prior is None else code_prior
        if code_prior > 0 and self.orientation == "user":
            raise ConvaeError("mesh scoring folds new users in by their code alone: set eval.fold_in_code_prior=0")
        return FoldedUsers(self, history, steps, learning_rate, 0.0)

    # --- what FoldedUsers and fold_in_columns read ---------------------------------------------------

    def codes_of(self, rows: Interactions) -> jnp.ndarray:
        """User rows: the codes (users, d) of the users of `rows` (numbered 0..users−1)."""
        matrix = RowMatrix.from_interactions(rows, orientation="user")
        return self._codes(matrix, np.arange(matrix.n_rows, dtype=np.int32))

    def scores_of_codes(self, codes):
        """User rows: (log P(i | u), log P(c | u, i)) of users given by codes (b, d), split over `model`."""
        log_c, log_r = self.kernels.scores(self.params, codes)
        return log_c[:, : self.layout.n_cols], log_r[:, : self.layout.n_cols]

    def scores_of_columns(self, columns):
        """Item rows: the same of users given by their own column parameters, replicated."""
        return ScoringKernels.of(self.module).item_row_scores(self.params, self.row_codes, self.row_log_z, self.log_item_prior,
                                                        columns)

    def codes_of_rows(self, rows) -> jnp.ndarray:
        """Codes (len(rows), d) of training rows `rows`, no dropout."""
        return self._codes(self.matrix, np.asarray(rows, np.int32))

    @functools.cached_property
    def row_codes(self) -> jnp.ndarray:
        """h for every training row (n_rows, d)."""
        return self.codes_of_rows(np.arange(self.matrix.n_rows))

    @functools.cached_property
    def row_log_z(self) -> jnp.ndarray:
        """log Z_r over all n·C logits of every training row (n_rows,), combined across `model`."""
        codes = self.row_codes
        parts = [self.kernels.log_z(self.params, codes[padded_index(np.arange(start, min(start + self.batch_rows, len(codes))),
                                                                   self.batch_rows)])
                 for start in range(0, len(codes), self.batch_rows)]
        return jnp.concatenate(parts)[: len(codes)] if parts else jnp.zeros((0,))

    @functools.cached_property
    def log_item_prior(self) -> jnp.ndarray:
        return log_item_prior(self.train)

    @functools.cached_property
    def mean_column(self) -> tuple:
        """The training columns' mean parameters (item-row fold-in's start), summed shard by shard."""
        return tuple(total / self.layout.n_cols for total in self.kernels.column_sums(self.params))

    # --- helpers -------------------------------------------------------------------------------------

    def _batches(self, matrix: RowMatrix, rows):
        budget = entry_budget(matrix.lengths, self.batch_rows)
        return iterate_batches(matrix, np.asarray(rows, np.int32), batch_rows=self.batch_rows, budget=budget)

    def _encode(self, rows):
        return self.kernels.encode(self.params, rows.segment, rows.col, rows.channel, rows.count)

    def _codes(self, matrix: RowMatrix, rows) -> jnp.ndarray:
        parts = [self._encode(batch)[: int(batch.row_mask.sum())] for batch in self._batches(matrix, rows)]
        return jnp.concatenate(parts) if parts else jnp.zeros((0, self.config.model.hidden[-1]))

    @staticmethod
    def _real(log_c, log_r, size: int):
        return np.asarray(log_c)[:size], np.asarray(log_r)[:size]


class _ShardKernels:
    """The jitted shard_map programs of mesh scoring, shared by every scorer of the same model
    config, mesh, rating scale and batch size (`of`): `train.fit`'s validation builds a scorer per
    epoch."""

    def __init__(self, model_config: ModelConfig, layout: Layout, n_channels: int, rows: int):
        self.layout, self.rows = layout, rows
        self.module = build_model(model_config, n_cols=layout.cols_per_shard, n_channels=n_channels)
        padded = build_model(model_config, n_cols=layout.n_padded, n_channels=n_channels)
        self._specs = layout.specs(jax.eval_shape(lambda key: init_params(padded, key), jax.random.key(0)))
        self._top_k_programs = {}  # k -> the jitted top-k

    @classmethod
    @functools.lru_cache(maxsize=8)
    def of(cls, model_config: ModelConfig, layout: Layout, n_channels: int, rows: int) -> "_ShardKernels":
        return cls(model_config, layout, n_channels, rows)

    def _on_mesh(self, fn, *, n_args: int, out_specs=None):
        mapped = jax.shard_map(fn, mesh=self.layout.mesh, in_specs=(self._specs,) + (P(),) * n_args,
                               out_specs=P() if out_specs is None else out_specs)
        return jax.jit(mapped)

    def _apply(self, params, method, *args):
        return self.module.apply({"params": params}, *args, method=method)

    def _shard(self):
        return jax.lax.axis_index(MODEL) if self.layout.model > 1 else 0

    def _sum_over_model(self, x):
        return jax.lax.psum(x, MODEL) if self.layout.model > 1 else x

    def _log_consume(self, params, codes):
        """(log P(col | row) of this shard's columns (rows, cols_per_shard), which of them are real)."""
        logits = self._apply(params, Conv4Rec.column_logits, codes, None)  # (rows, own columns, C)
        valid = self.layout.column_valid(self._shard())
        log_z = jax.nn.logsumexp(losses.masked_logits(logits, valid), axis=(1, 2))
        if self.layout.model > 1:
            log_z = losses.combine_logsumexp(log_z, MODEL)
        return jax.nn.logsumexp(logits, axis=-1) - log_z[:, None], logits, valid

    @functools.cached_property
    def encode(self):
        """(params, segment, col, channel, count) -> row codes (rows, d): each shard's part of the
        embedding bag over the entries of its own columns, summed over `model`."""
        def run(params, segment, col, channel, count):
            local, owned = self.layout.own_columns(col)
            pre = self._apply(params, Conv4Rec.encoder_sum, segment, local, channel, jnp.where(owned, count, 0.0), self.rows)
            return self._apply(params, Conv4Rec.code, self._sum_over_model(pre), segment, count, self.rows)
        return self._on_mesh(run, n_args=4)

    @functools.cached_property
    def scores(self):
        """(params, codes) -> (log P(col | row) (rows, n_padded), log P(c | row, col) (rows, n_padded, C)), split over `model`."""
        def run(params, codes):
            log_consume, logits, _ = self._log_consume(params, codes)
            return log_consume, logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
        split = P(None, MODEL) if self.layout.model > 1 else P()
        return self._on_mesh(run, n_args=1, out_specs=(split, split))

    @functools.cached_property
    def log_z(self):
        """(params, codes) -> log Z (rows,) over every column and channel, combined across `model`."""
        def run(params, codes):
            valid = self.layout.column_valid(self._shard())
            log_z = losses.chunked_logsumexp(lambda cols: self._apply(params, Conv4Rec.column_logits, codes, cols),
                                             n_cols=self.layout.cols_per_shard, chunk=self.module.config.logit_chunk,
                                             valid=valid)
            return losses.combine_logsumexp(log_z, MODEL) if self.layout.model > 1 else log_z
        return self._on_mesh(run, n_args=1)

    @functools.cached_property
    def pair_logits(self):
        """(params, codes (P, d), cols (P,)) -> logits (P, C), each from the shard owning its column."""
        def run(params, codes, cols):
            local, owned = self.layout.own_columns(cols)
            logits = self._apply(params, Conv4Rec.entry_logits, codes, local)
            return self._sum_over_model(jnp.where(owned[:, None], logits, 0.0))
        return self._on_mesh(run, n_args=2)

    @functools.cached_property
    def column_params(self):
        """(params, cols (b,)) -> the columns' own parameters (`Conv4Rec.column_parameters`),
        each from the shard owning it."""
        def run(params, cols):
            local, owned = self.layout.own_columns(cols)
            own = self._apply(params, Conv4Rec.column_parameters, local)
            return tuple(self._sum_over_model(jnp.where(owned.reshape(-1, *[1] * (p.ndim - 1)), p, 0.0)) for p in own)
        return self._on_mesh(run, n_args=1)

    @functools.cached_property
    def column_sums(self):
        """params -> the column parameters summed over every real column."""
        def run(params):
            own = self._apply(params, Conv4Rec.column_parameters, jnp.arange(self.layout.cols_per_shard))
            valid = self.layout.column_valid(self._shard())
            return tuple(self._sum_over_model(jnp.sum(jnp.where(valid.reshape(-1, *[1] * (p.ndim - 1)), p, 0.0), axis=0))
                         for p in own)
        return self._on_mesh(run, n_args=0)

    def top_k(self, params, codes, segment, col, *, k: int):
        """(best log P(col | row) (rows, k), their columns): per shard, then merged across `model`;
        each row's own entries (`segment`, `col`) left out."""
        if k not in self._top_k_programs:
            def run(params, codes, segment, col):
                log_consume, _, valid = self._log_consume(params, codes)
                local, owned = self.layout.own_columns(col)  # padding entries (segment == rows) drop out
                log_consume = log_consume.at[jnp.where(owned, segment, self.rows), local].set(-jnp.inf, mode="drop")
                values, index = jax.lax.top_k(jnp.where(valid[None, :], log_consume, -jnp.inf),
                                              min(k, self.layout.cols_per_shard))
                index = index + self._shard() * self.layout.cols_per_shard
                if self.layout.model > 1:
                    values = jax.lax.all_gather(values, MODEL, axis=1, tiled=True, to="invarying")
                    index = jax.lax.all_gather(index, MODEL, axis=1, tiled=True, to="invarying")
                best, where = jax.lax.top_k(values, k)
                return best, jnp.take_along_axis(index, where, axis=1)
            self._top_k_programs[k] = self._on_mesh(run, n_args=3)
        return self._top_k_programs[k](params, codes, segment, col)


def on_devices(model: FittedModel) -> FittedModel | MeshScorer:
    """The fitted model where its config's mesh puts it: a `MeshScorer` when the catalogue is split
    over more than one `model` shard, else the model itself (a data axis alone changes nothing in
    scoring). With several processes each scores the whole model on its host."""
    if jax.process_count() > 1:
        return model
    layout = make_layout(model.config, n_cols=model.matrix.n_cols)
    return MeshScorer.of(model, layout) if layout.model > 1 else model
