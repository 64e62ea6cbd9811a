"""Flax modules of Conv4Rec (docs/model.md, "The model"): the sparse 1x1-convolutional encoder and
the decoder.

Shapes: B rows in a batch, T observed entries, n columns, C channels, k = conv_channels,
d = hidden[-1], k' = decoder_channels. No loss, no optimiser here.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from convae_jax.config import ModelConfig
from convae_jax.errors import ConfigError
from convae_jax.ops import add_to_every_row, bag_sum, contract, mix_last, mix_middle
from convae_jax.pytrees import leaf_name

ACTIVATION_FNS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "selu": jax.nn.selu,
                  "identity": lambda x: x}

# The encoder builds a dense (rows, n·C) input and multiplies it by the table A·W_enc when that input
# has at most this many cells per observed entry; sparser batches gather the table's rows instead
# (MovieLens batches have 63 to 91 cells per entry; docs/performance.md has the measurements).
DENSE_INPUT_MAX_CELLS_PER_ENTRY = 32


class Conv4Rec(nn.Module):
    """Encoder  h = φ(Σ_(col,c) x[col,c] · A[c] · W_enc[col] + b)  (an embedding bag over observed
    entries), optional dense layers, then decoder
    L[col] = ψ(W_dec[col] · h + b_dec[col]) · B + bias[col]  ∈ R^C, for any set of columns,
    plus h · V at every column with `row_offsets` (an extension beyond the paper, off by default).
    With the ordinal `rating_head`, B maps to two outputs per column, a consume logit and a
    location on the rating scale, which `head` turns into the C logits (docs/model.md,
    "Rating heads").

    `A` (C, k) and `B` (k', C) are the 1x1 convolutions shared by every column; with
    `tie_filters=False` each column has its own, A (n, C, k) and B (n, k', C) (the untied model of
    the weight-sharing check, theory/README.md). W_enc (n, k, d)
    and W_dec (n, k', d) are stored column-major with d innermost, so that a column's weights are
    one contiguous row block and both big products are plain GEMMs: (rows, n·C) × (n·C, d) and
    (rows, d) × (n·k' or n·C, d)ᵀ.
    """

    config: ModelConfig
    n_cols: int
    n_channels: int

    def setup(self):
        c, k, d, k_out = self.n_channels, self.config.conv_channels, self.config.hidden[0], self.config.decoder_channels
        n_out = self.n_outputs
        d_last = self.config.hidden[-1]
        lecun = nn.initializers.lecun_normal
        # untied: one filter per column, each drawn as the tied one is (fan-in C, resp. k')
        per_column, batch = ((), ()) if self.config.tie_filters else ((self.n_cols,), (0,))
        self.input_conv = self.param("input_conv", lecun(batch_axis=batch), per_column + (c, k))
        self.encoder_kernel = self.param("encoder_kernel", lecun(in_axis=(0, 1), out_axis=2), (self.n_cols, k, d))
        self.encoder_bias = self.param("encoder_bias", nn.initializers.zeros, (d,))
        self.extra_layers = [nn.Dense(width, name=f"dense_{j}") for j, width in enumerate(self.config.hidden[1:])]
        self.decoder_kernel = self.param("decoder_kernel", _drawn_as_n_d_k(lecun(in_axis=1, out_axis=2, batch_axis=(0,))),
                                         (self.n_cols, k_out, d_last))
        self.decoder_bias = self.param("decoder_bias", nn.initializers.zeros, (self.n_cols, k_out))
        self.output_conv = self.param("output_conv", lecun(batch_axis=batch), per_column + (k_out, n_out))
        self.output_bias = self.param("output_bias", nn.initializers.zeros, (self.n_cols, n_out))
        if self.config.row_offsets:
            self.row_offset_kernel = self.param("row_offset_kernel", nn.initializers.zeros, (d_last, n_out))
        if self.config.rating_head == "ordinal":
            shape = (self.n_cols, c - 1) if self.per_column_cutpoints else (c - 1,)
            self.cutpoints = self.param("cutpoints", _unit_gap_cutpoints, shape)

    @property
    def per_column_cutpoints(self) -> bool:
        """Whether the ordinal head keeps a set of cut-points per column (`model.cutpoints`)."""
        return self.config.cutpoints == "per_column"

    @property
    def n_outputs(self) -> int:
        """Outputs of B per column: C logits, or (consume logit, location) for the ordinal head."""
        return 2 if self.config.rating_head == "ordinal" else self.n_channels

    def head(self, raw, cutpoints=None):
        """Logits (…, C) from B's outputs (…, n_outputs). Categorical: as they are. Ordinal: from
        s (consume logit) and η (location), L_c = s + log P(rating = v_c | η), the cumulative-logit
        model P(rating <= v_c) = σ(θ_c − η) with ordered cut-points θ, so that logsumexp_c L = s
        and softmax_c L is the ordinal distribution. P(θ_(c−1) < · <= θ_c) is written as
        σ(θ_c − η)·σ(η − θ_(c−1))·(1 − exp(θ_(c−1) − θ_c)), whose logs stay finite.
        `cutpoints`: stored cut-points (`cutpoints_at`), C − 1 last, broadcastable against raw's
        leading axes; None reads the module's own, which serve shared cut-points or every column."""
        if self.config.rating_head != "ordinal":
            return raw
        s, eta = raw[..., :1], raw[..., 1:]
        theta = _ordered_cutpoints(self.cutpoints if cutpoints is None else cutpoints)
        zero = jnp.zeros_like(eta)
        edge = jnp.zeros(theta.shape[:-1] + (1,))
        at_most = jnp.concatenate([jax.nn.log_sigmoid(theta - eta), zero], axis=-1)
        above_previous = jnp.concatenate([zero, jax.nn.log_sigmoid(eta - theta)], axis=-1)
        width = jnp.concatenate([edge, jnp.log(-jnp.expm1(theta[..., :-1] - theta[..., 1:])), edge], axis=-1)
        return s + at_most + above_previous + width

    def cutpoints_at(self, cols=None):
        """The ordinal head's stored cut-points at columns `cols` (m,), None for every column:
        (C − 1,) when shared, (m, C − 1) per column. None without the ordinal head."""
        if self.config.rating_head != "ordinal":
            return None
        return self.cutpoints[cols] if self.per_column_cutpoints and cols is not None else self.cutpoints

    def encode(self, segment, col, channel, count, n_rows: int, norm_count=None):
        """Row codes h (n_rows, d) from entries (T,); entries with segment == n_rows are padding.
        With `input_norm="l2"` each row's input is divided by the L2 norm of its entries'
        `norm_count` (default `count`): training passes the counts before dropout, so that a row's
        scale does not depend on which entries were dropped (Mult-DAE's order: normalise, then drop).

        Three contraction orders of the same sum, picked from static shapes by what they cost:
        - per entry: gather W_enc[col] (T, k, d), weight by count·A[channel]: O(T·k·d), for a
          handful of entries (one-user fold-in), when T·k <= n·C;
        - dense: the table M = A·W_enc (n, C, d) once, and the counts scattered into a dense
          (n_rows, n·C) input X, then one GEMM X·M: O(n·C·k·d + n_rows·n·C·d), when X has at most
          DENSE_INPUT_MAX_CELLS_PER_ENTRY cells per entry (denser than MovieLens batches);
        - sparse: the same table, rows M[col, channel] gathered per entry and summed per row:
          O(n·C·k·d + T·d), for sparser batches (ML-100K-, ML-1M- and ML-20M-sized ones), in
          chunks of entries (`bag_sum`).
        """
        return self.code(self.encoder_sum(segment, col, channel, count, n_rows), segment,
                         count if norm_count is None else norm_count, n_rows)

    def encoder_sum(self, segment, col, channel, count, n_rows: int):
        """The encoder's pre-activation Σ_(col,c) x[col,c] · A[c] · W_enc[col], (n_rows, d), over the
        entries given: a sum, so a column shard's part of it adds up with the other shards' (see
        `encode`)."""
        chex.assert_rank([segment, col, channel, count], 1)
        chex.assert_equal_shape([segment, col, channel, count])
        chex.assert_type([segment, col, channel, count], [int, int, int, float])
        c, n, d = self.n_channels, self.n_cols, self.config.hidden[0]
        n_entries = segment.shape[0]
        if n_entries * self.config.conv_channels <= n * c:
            filters = self.input_conv[channel] if self.config.tie_filters else self.input_conv[col, channel]
            coefficient = count[:, None] * filters  # (T, k)
            per_entry = contract("tk,tkd->td", coefficient, self.encoder_kernel[col], precision=self.config.matmul_precision)
            pre = jax.ops.segment_sum(per_entry, segment, num_segments=n_rows + 1)[:n_rows]
        elif n_rows * n * c <= DENSE_INPUT_MAX_CELLS_PER_ENTRY * n_entries:
            table = self._input_table().reshape(n * c, d)
            dense = jnp.zeros((n_rows, n, c)).at[segment, col, channel].add(count, mode="drop")  # padding dropped
            pre = contract("bx,xd->bd", dense.reshape(n_rows, n * c), table, precision=self.config.matmul_precision)
        else:
            table = self._input_table()
            pre = bag_sum(table.reshape(n * c, d), col * c + channel, count, segment, n_rows)
        return pre

    def _input_table(self):
        """The table M = A·W_enc (n, C, d): M[col, c] = Σ_k A[c, k] W_enc[col, k] (A[col, c, k] untied)."""
        if self.config.tie_filters:
            return mix_middle(self.input_conv, self.encoder_kernel)
        return contract("nck,nkd->ncd", self.input_conv, self.encoder_kernel, precision=self.config.matmul_precision)

    def code(self, pre, segment, norm_count, n_rows: int):
        """Row codes h (n_rows, d) from the encoder's summed pre-activation (`encoder_sum`): the
        optional L2 input norm (from the entries' `norm_count`), the bias, φ and the extra layers."""
        if self.config.input_norm == "l2":
            pre = pre * self._inverse_row_norms(segment, norm_count, n_rows)[:, None]
        h = ACTIVATION_FNS[self.config.encoder_activation](pre + self.encoder_bias)
        for layer in self.extra_layers:
            h = ACTIVATION_FNS[self.config.encoder_activation](layer(h))
        return h

    @staticmethod
    def _inverse_row_norms(segment, count, n_rows: int):
        """1 / ||count of row r||₂ for each row, (n_rows,); 1 for rows without entries. The input
        is linear in the counts, so scaling the pre-activation rows scales the input rows."""
        squares = jax.ops.segment_sum(count**2, segment, num_segments=n_rows + 1)[:n_rows]
        return jnp.where(squares > 0, jax.lax.rsqrt(jnp.where(squares > 0, squares, 1.0)), 1.0)

    def column_logits(self, h, cols=None):
        """Logits (B, m, C) of every row in h (B, d) at columns `cols` (m,); `cols=None` is the whole
        catalogue (m = n) read in place, without gathering (and, backwards, scattering) W_dec.

        With ψ = identity, B can fold into the decoder first (`decoder_fold`): one GEMM against
        W_dec·B (m·C, d) replaces a GEMM of width m·k' followed by the 1x1 convolution of every
        logit. Same function; fewer FLOPs when C <= k' ("auto"), and two fewer passes over
        B·m·k' activations (forward and backward) at any C ("always")."""
        kernel, bias, out_bias, out_conv = self.decoder_kernel, self.decoder_bias, self.output_bias, self.output_conv
        if cols is not None:
            kernel, bias, out_bias = kernel[cols], bias[cols], out_bias[cols]
            out_conv = out_conv if self.config.tie_filters else out_conv[cols]
        m, k_out, d = kernel.shape
        if self._folds_output_conv():
            if self.config.tie_filters:
                folded, folded_bias = mix_middle(out_conv.T, kernel), mix_last(bias, out_conv)
            else:
                folded = contract("mko,mkd->mod", out_conv, kernel, precision=self.config.matmul_precision)
                folded_bias = jnp.einsum("mk,mko->mo", bias, out_conv)
            logits = contract("bd,xd->bx", h, folded.reshape(m * self.n_outputs, d), precision=self.config.matmul_precision)
            logits = add_to_every_row(logits.reshape(-1, m, self.n_outputs), folded_bias + out_bias)
        else:
            y = contract("bd,xd->bx", h, kernel.reshape(m * k_out, d), precision=self.config.matmul_precision)
            logits = add_to_every_row(self._output_conv(add_to_every_row(y.reshape(-1, m, k_out), bias), out_conv), out_bias)
        return self.head(logits + self.row_offset(h)[:, None, :], self.cutpoints_at(cols))

    def entry_logits(self, h_entries, cols):
        """Logits (T, C) of row code h_entries[t] at column cols[t]: the observed entries only."""
        y = contract("td,tkd->tk", h_entries, self.decoder_kernel[cols], precision=self.config.matmul_precision)
        out_conv = self.output_conv if self.config.tie_filters else self.output_conv[cols]
        raw = self._output_conv(y + self.decoder_bias[cols], out_conv) + self.output_bias[cols] + self.row_offset(h_entries)
        return self.head(raw, self.cutpoints_at(cols))

    def logits_at_own_columns(self, h, columns):
        """Logits (b, n_rows, C) of every row code h (n_rows, d) at b columns given by their own
        parameters instead of the stored ones: columns = (decoder_kernel (b, k', d), decoder_bias
        (b, k'), output_bias (b, n_outputs)[, per-column cut-points (b, C − 1)]). Item rows score a
        user, or fit a new one (fold-in), this way: the decoder of `entry_logits` for b whole columns."""
        kernel, bias, out_bias = columns[:3]
        cutpoints = columns[3][:, None, :] if len(columns) > 3 else None
        y = jnp.einsum("id,ukd->uik", h, kernel) + bias[:, None, :]
        raw = ACTIVATION_FNS[self.config.decoder_activation](y) @ self.output_conv + out_bias[:, None, :]
        return self.head(raw + self.row_offset(h), cutpoints)

    def column_parameters(self, cols):
        """The parameters that belong to columns `cols`, as `logits_at_own_columns` reads them."""
        names = ("decoder_kernel", "decoder_bias", "output_bias") + (("cutpoints",) if self.per_column_cutpoints else ())
        return tuple(getattr(self, name)[cols] for name in names)

    def row_offset(self, h):
        """Offsets (…, n_outputs) of each row from its code, h·V, added at every column: with
        `row_offsets`, a row's own rating offset is one shared (d, n_outputs) map instead of a
        component of every column's decoder weights (each separately L2-penalised). 0 otherwise."""
        return h @ self.row_offset_kernel if self.config.row_offsets else jnp.zeros(h.shape[:-1] + (self.n_outputs,))

    def _folds_output_conv(self) -> bool:
        """Whether B folds into W_dec (`decoder_fold`). "auto" folds when B's outputs per column
        (C, or 2 with the ordinal head) are at most k' (fewer FLOPs), and at any C for bf16 matmuls
        off CPU, where the extra GEMM FLOPs cost less than the two passes over the activations they
        save (docs/performance.md)."""
        if self.config.decoder_activation != "identity" or self.config.decoder_fold == "never":
            return False
        if self.config.decoder_fold == "always" or self.n_outputs <= self.config.decoder_channels:
            return True
        return self.config.matmul_precision == "bfloat16" and jax.default_backend() != "cpu"

    def _output_conv(self, y, out_conv):
        """ψ(y) · B: the output 1x1 convolution (…, k') -> (…, C); `out_conv` is B (k', C), or untied
        the filters (…, k', C) of y's columns."""
        y = ACTIVATION_FNS[self.config.decoder_activation](y)
        if self.config.tie_filters:
            return mix_last(y, out_conv)
        return jnp.einsum("...k,...kc->...c", y, out_conv)

    def __call__(self, segment, col, channel, count, n_rows: int):
        """Full logits (n_rows, n_cols, C); used for initialisation and small-catalogue checks."""
        h = self.encode(segment, col, channel, count, n_rows)
        return self.column_logits(h)


def _unit_gap_cutpoints(key, shape, dtype=jnp.float32):
    """The ordinal head's cut-points at init, as `_ordered_cutpoints` reads them (C − 1 last, one
    set per column when per column): unit gaps, centred on 0."""
    return jnp.full(shape, math.log(math.e - 1), dtype).at[..., 0].set(-(shape[-1] - 1) / 2)


def _ordered_cutpoints(stored):
    """θ (…, C − 1), increasing along the last axis, from their storage: θ_1, then softplus⁻¹ of
    each later gap, so that any stored values give ordered cut-points."""
    gaps = jnp.cumsum(jax.nn.softplus(stored[..., 1:]), axis=-1)
    return stored[..., :1] + jnp.concatenate([jnp.zeros(stored.shape[:-1] + (1,)), gaps], axis=-1)


def _drawn_as_n_d_k(init):
    """`init` drawn as (n, d, k') and stored (n, k', d): the values of earlier releases, which
    stored W_dec as (n, d, k'), so that a seed still gives the same model."""
    def transposed(key, shape, dtype=jnp.float32):
        n, k_out, d = shape
        return jnp.transpose(init(key, (n, d, k_out), dtype), (0, 2, 1))
    return transposed


def build_model(model_config: ModelConfig, *, n_cols: int, n_channels: int) -> Conv4Rec:
    """The module for a config and a catalogue of `n_cols` columns of `n_channels` rating levels."""
    if model_config.rating_head == "ordinal" and n_channels < 2:
        raise ConfigError("model.rating_head='ordinal' needs at least 2 ordered rating levels; "
                          f"the data has {n_channels} channel")
    return Conv4Rec(config=model_config, n_cols=n_cols, n_channels=n_channels)


def init_params(model: Conv4Rec, key):
    """Parameters from one key, traced on a one-entry dummy batch."""
    dummy = jnp.zeros((1,), jnp.int32)
    return model.init(key, dummy, dummy, dummy, jnp.ones((1,)), 1)["params"]


def weight_names(params) -> list[str]:
    """Names of the weight arrays (kernels and convolutions) that the L2 penalty covers; biases and
    the ordinal head's cut-points (offsets on the rating scale) excluded."""
    names = [leaf_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return [n for n in names if not n.endswith(("bias", "cutpoints"))]
