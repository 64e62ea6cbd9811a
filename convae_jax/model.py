"""Flax modules of Conv4Rec (SPEC §2): the sparse 1x1-convolutional encoder and the decoder.

Shapes: B rows in a batch, T observed entries, n columns, C channels, k = conv_channels,
d = hidden[-1], k' = decoder_channels. No loss, no optimiser here.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from convae_jax.errors import ConfigError

ACTIVATION_FNS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "selu": jax.nn.selu,
                  "identity": lambda x: x}


def contract(spec: str, a, b, *, precision: str = "default"):
    """`jnp.einsum(spec, a, b)` under a matmul precision (config.MATMUL_PRECISIONS): "default" is the
    backend's own (exact fp32 on CPU, TF32 on Ampere+ GPUs), "float32" and "tensorfloat32" pin
    `lax.Precision` HIGHEST and HIGH, "bfloat16" casts both operands to bf16 and accumulates in fp32,
    in the backward pass too (`bf16_einsum`). The result is float32 in every case."""
    if precision == "bfloat16":
        return bf16_einsum(spec, a, b)
    return jnp.einsum(spec, a, b, precision=None if precision == "default" else precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def bf16_einsum(spec: str, a, b):
    """einsum of two-operand `spec` ("ab,bc->ac"; every index in two of the three terms) with bf16
    operands and fp32 results, forward and backward. Plain autodiff would multiply the fp32
    cotangent by a bf16 operand, which XLA promotes to an fp32 (on GPUs TF32) GEMM: the backward
    GEMMs, two thirds of the work, would miss the bf16 units."""
    return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


def _bf16_einsum_fwd(spec, a, b):
    a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    return jnp.einsum(spec, a16, b16, preferred_element_type=jnp.float32), (a16, b16)


def _bf16_einsum_bwd(spec, residuals, g):
    a16, b16 = residuals
    operands, out = spec.split("->")
    lhs, rhs = operands.split(",")
    g16 = g.astype(jnp.bfloat16)
    return (jnp.einsum(f"{out},{rhs}->{lhs}", g16, b16, preferred_element_type=jnp.float32),
            jnp.einsum(f"{lhs},{out}->{rhs}", a16, g16, preferred_element_type=jnp.float32))


bf16_einsum.defvjp(_bf16_einsum_fwd, _bf16_einsum_bwd)


# The encoder builds a dense (rows, n·C) input and multiplies it by the table A·W_enc when that input
# has at most this many cells per observed entry; sparser batches gather the table's rows instead.
# Measured on a 2-core CPU under `reuse_freed_memory`, epochs of both paths interleaved in one
# process (s/epoch or s per timed steps, medians of 6–10 rounds):
# - ML-100K batches, 63 cells per entry: gathering wins, 0.85 against 0.99 (batch 128), 0.51
#   against 0.54 (batch 512);
# - ML-1M-shaped batches, 91 cells per entry: gathering wins at batch 128 (2.12 against 2.22 s
#   for 8 steps, faster in 5 of 6 rounds) and ties at batch 512 (2.48 against 2.47 s, 4 steps).
# Without that allocator setting the gather's scatter-add buffers fault in afresh every step and
# the dense path wins at 63 cells per entry (1.02 against 1.33 at batch 128). Below 63 nothing was
# measured; 32 keeps the dense GEMM for batches much denser than any MovieLens one.
DENSE_INPUT_MAX_CELLS_PER_ENTRY = 32


@jax.custom_vjp
def mix_last(x, m):
    """x (…, k) · m (k, c) as k fused multiply-adds. XLA's CPU dot is slow for contractions this
    narrow (k, c ≤ a few dozen), and its autodiff of the unrolled sum is slower still; hence the
    hand-written backward pass, each part itself one fused loop or one tall GEMM."""
    return sum(x[..., j:j + 1] * m[j] for j in range(m.shape[0]))


def _mix_last_fwd(x, m):
    return mix_last(x, m), (x, m)


def _mix_last_bwd(residuals, g):
    x, m = residuals
    dm = contract("xk,xc->kc", x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]), precision="float32")
    return mix_last(g, m.T), dm


mix_last.defvjp(_mix_last_fwd, _mix_last_bwd)


@jax.custom_vjp
def mix_middle(m, w):
    """out[n, c, :] = Σ_k m[c, k] · w[n, k, :] (m (c, k), w (n, k, d)): the table A·W_enc, and
    W_dec·B folded. On CPU as k fused multiply-adds (see `mix_last`); elsewhere as one reduction
    over k (`mix_middle_reduced`)."""
    return jax.lax.platform_dependent(m, w, cpu=mix_middle_unrolled, default=mix_middle_reduced)


def mix_middle_unrolled(m, w):
    """`mix_middle` as k multiply-adds of the slices w[:, j, :]: XLA's fastest form on CPU. On an
    H200 XLA wrote each slice out first, (n, 1, d) copies of W_enc's 8 slices and of the 10
    channel slices of each table's gradient: about 0.9 ms of a 9.1 ms step at the ML-20M shape."""
    return sum(m[None, :, j, None] * w[:, None, j, :] for j in range(m.shape[1]))


def mix_middle_reduced(m, w):
    """`mix_middle` as one multiply-reduce over the middle axis k, which reads w in place."""
    return jnp.sum(m[None, :, :, None] * w[:, None, :, :], axis=2)


def _mix_middle_fwd(m, w):
    return mix_middle(m, w), (m, w)


def _mix_middle_bwd(residuals, g):
    m, w = residuals
    dm = jax.lax.platform_dependent(g, w, cpu=mix_middle_dm_fused, default=mix_middle_dm_batched)
    return dm, mix_middle(m.T, g)


def mix_middle_dm_fused(g, w):
    """dm[c, k] = Σ_n Σ_d g[n, c, d] · w[n, k, d] as one fused multiply-reduce: XLA's fastest form
    on CPU, and a poorly parallel reduction to C·k outputs on GPUs (about 1.5 ms at the ML-20M shape)."""
    return jnp.sum(g[:, :, None, :] * w[:, None, :, :], axis=(0, 3))


def mix_middle_dm_batched(g, w):
    """The same dm as n small GEMMs (C, d)·(d, k) batched, then a sum over n: for GPUs."""
    return jnp.einsum("ncd,nkd->nck", g, w, precision="float32").sum(axis=0)


mix_middle.defvjp(_mix_middle_fwd, _mix_middle_bwd)


@jax.custom_vjp
def add_to_every_row(x, bias):
    """x (B, …) + bias (…), whose bias gradient, a sum of B rows, is a GEMV (ones · g). XLA's CPU
    reduction over the leading axis of the logits' gradient ran at under 1 GB/s (92 ms of a 1 s
    step in a profile). Interleaved in one process, 2 CPU cores, same losses: ML-1M shape batch
    512, 4 steps 3.12 -> 2.75 s (8 of 8 rounds faster); batch 128, 8 steps 2.79 -> 2.71 (4 of 6);
    ML-100K batch 128 1.22 -> 1.15 s/epoch (6 of 8), batch 512 0.603 -> 0.598 (6 of 10, a tie).
    It runs on every backend; on a GPU it has not been measured."""
    return x + bias


def _add_to_every_row_bwd(shape, g):
    rows = g.reshape(g.shape[0], -1)
    return g, jnp.dot(jnp.ones((rows.shape[0],), rows.dtype), rows, precision="highest").reshape(shape)


add_to_every_row.defvjp(lambda x, bias: (x + bias, bias.shape), _add_to_every_row_bwd)


# Entries per chunk of `bag_sum` on CPU: 256 to 2,048 tied, 4,096 and more were slower (ML-1M shape,
# batch 512, 2 CPU cores, interleaved in one process). Other backends take the batch in one chunk,
# as before chunking existed: a loop of small gathers and scatters was not measured on a GPU.
ENTRY_CHUNK = 1024


def _in_chunks(*arrays_and_fills):
    """Each (T,) array padded with its fill value to a whole number of chunks, as (chunks, chunk)."""
    n_entries = arrays_and_fills[0][0].shape[0]
    chunk = ENTRY_CHUNK if jax.default_backend() == "cpu" else n_entries
    pad = -n_entries % chunk
    return [jnp.pad(a, (0, pad), constant_values=fill).reshape(-1, chunk) for a, fill in arrays_and_fills]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def bag_sum(table, index, weight, segment, n_rows: int):
    """out[r] = Σ_{t: segment[t] = r} weight[t] · table[index[t]], (n_rows, d): an embedding bag;
    entries with segment == n_rows are dropped. Walked on CPU in chunks of ENTRY_CHUNK entries,
    forward and backward, so that the gathered rows stay in cache instead of being written out as
    one (T, d) array and read back. That array was 250 MB at the ML-1M shape, batch 512, and XLA also
    fused the table A·W_enc into the gather, recomputing a row per entry. Interleaved in one
    process, 2 CPU cores, same losses, against the gather and `segment_sum` of the whole batch:
    ML-1M shape batch 512, 4 steps 3.28 -> 2.70 s (8 of 8 rounds faster); batch 128, 8 steps
    2.75 -> 2.51 (4 of 6); ML-100K batch 128 1.03 -> 0.96 s/epoch (6 of 8), batch 512 0.68 -> 0.52
    (10 of 10)."""
    return _bag_sum_fwd(table, index, weight, segment, n_rows)[0]


def _bag_sum_fwd(table, index, weight, segment, n_rows):
    idx, wt, seg = _in_chunks((index, 0), (weight, 0.0), (segment, n_rows))

    def body(j, out):
        return out.at[seg[j]].add(wt[j][:, None] * table[idx[j]], mode="drop")

    out = jax.lax.fori_loop(0, idx.shape[0], body, jnp.zeros((n_rows, table.shape[1]), table.dtype))
    return out, (table, index, weight, segment)


def _bag_sum_bwd(n_rows, residuals, g):
    table, index, weight, segment = residuals
    idx, wt, seg = _in_chunks((index, 0), (weight, 0.0), (segment, n_rows))
    g_padded = jnp.concatenate([g, jnp.zeros((1, g.shape[1]), g.dtype)])

    def body(j, d_table):
        return d_table.at[idx[j]].add(wt[j][:, None] * g_padded[seg[j]])

    d_table = jax.lax.fori_loop(0, idx.shape[0], body, jnp.zeros_like(table))
    d_weight = jnp.sum(g_padded[segment] * table[index], axis=1)  # the counts are data: unused, compiled away
    return d_table, None, d_weight, None


bag_sum.defvjp(_bag_sum_fwd, _bag_sum_bwd)


class Conv4Rec(nn.Module):
    """Encoder  h = φ(Σ_(col,c) x[col,c] · A[c] · W_enc[col] + b)  (an embedding bag over observed
    entries), optional dense layers, then decoder
    L[col] = ψ(W_dec[col] · h + b_dec[col]) · B + bias[col]  ∈ R^C, for any set of columns,
    plus h · V at every column with `row_offsets` (an extension beyond SPEC §2, off by default).
    With the ordinal `rating_head`, B maps to two outputs per column, a consume logit and a
    location on the rating scale, which `head` turns into the C logits (SPEC §3's knob).

    `A` (C, k) and `B` (k', C) are the 1x1 convolutions shared by every column. W_enc (n, k, d)
    and W_dec (n, k', d) are stored column-major with d innermost, so that a column's weights are
    one contiguous row block and both big products are plain GEMMs: (rows, n·C) × (n·C, d) and
    (rows, d) × (n·k' or n·C, d)ᵀ.
    """

    n_cols: int
    n_channels: int
    conv_channels: int = 8
    hidden: tuple[int, ...] = (128,)
    decoder_channels: int = 8
    encoder_activation: str = "tanh"
    decoder_activation: str = "identity"
    decoder_fold: str = "auto"
    input_norm: str = "none"
    rating_head: str = "categorical"
    per_column_cutpoints: bool = False
    row_offsets: bool = False
    matmul_precision: str = "default"

    def setup(self):
        c, k, d, k_out = self.n_channels, self.conv_channels, self.hidden[0], self.decoder_channels
        n_out = self.n_outputs
        d_last = self.hidden[-1]
        lecun = nn.initializers.lecun_normal
        self.input_conv = self.param("input_conv", lecun(), (c, k))
        self.encoder_kernel = self.param("encoder_kernel", lecun(in_axis=(0, 1), out_axis=2), (self.n_cols, k, d))
        self.encoder_bias = self.param("encoder_bias", nn.initializers.zeros, (d,))
        self.extra_layers = [nn.Dense(width, name=f"dense_{j}") for j, width in enumerate(self.hidden[1:])]
        self.decoder_kernel = self.param("decoder_kernel", _drawn_as_n_d_k(lecun(in_axis=1, out_axis=2, batch_axis=(0,))),
                                         (self.n_cols, k_out, d_last))
        self.decoder_bias = self.param("decoder_bias", nn.initializers.zeros, (self.n_cols, k_out))
        self.output_conv = self.param("output_conv", lecun(), (k_out, n_out))
        self.output_bias = self.param("output_bias", nn.initializers.zeros, (self.n_cols, n_out))
        if self.row_offsets:
            self.row_offset_kernel = self.param("row_offset_kernel", nn.initializers.zeros, (d_last, n_out))
        if self.rating_head == "ordinal":
            shape = (self.n_cols, c - 1) if self.per_column_cutpoints else (c - 1,)
            self.cutpoints = self.param("cutpoints", _unit_gap_cutpoints, shape)

    @property
    def n_outputs(self) -> int:
        """Outputs of B per column: C logits, or (consume logit, location) for the ordinal head."""
        return 2 if self.rating_head == "ordinal" else self.n_channels

    def head(self, raw, cutpoints=None):
        """Logits (…, C) from B's outputs (…, n_outputs). Categorical: as they are. Ordinal: from
        s (consume logit) and η (location), L_c = s + log P(rating = v_c | η), the cumulative-logit
        model P(rating <= v_c) = σ(θ_c − η) with ordered cut-points θ, so that logsumexp_c L = s
        and softmax_c L is the ordinal distribution. P(θ_(c−1) < · <= θ_c) is written as
        σ(θ_c − η)·σ(η − θ_(c−1))·(1 − exp(θ_(c−1) − θ_c)), whose logs stay finite.
        `cutpoints`: stored cut-points (`cutpoints_at`), C − 1 last, broadcastable against raw's
        leading axes; None reads the module's own, which serve shared cut-points or every column."""
        if self.rating_head != "ordinal":
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
        if self.rating_head != "ordinal":
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
        c, n, d = self.n_channels, self.n_cols, self.hidden[0]
        n_entries = segment.shape[0]
        if n_entries * self.conv_channels <= n * c:
            coefficient = count[:, None] * self.input_conv[channel]  # (T, k)
            per_entry = contract("tk,tkd->td", coefficient, self.encoder_kernel[col], precision=self.matmul_precision)
            pre = jax.ops.segment_sum(per_entry, segment, num_segments=n_rows + 1)[:n_rows]
        elif n_rows * n * c <= DENSE_INPUT_MAX_CELLS_PER_ENTRY * n_entries:
            table = mix_middle(self.input_conv, self.encoder_kernel).reshape(n * c, d)
            dense = jnp.zeros((n_rows, n, c)).at[segment, col, channel].add(count, mode="drop")  # padding dropped
            pre = contract("bx,xd->bd", dense.reshape(n_rows, n * c), table, precision=self.matmul_precision)
        else:
            table = mix_middle(self.input_conv, self.encoder_kernel)
            pre = bag_sum(table.reshape(n * c, d), col * c + channel, count, segment, n_rows)
        if self.input_norm == "l2":
            pre = pre * self._inverse_row_norms(segment, count if norm_count is None else norm_count, n_rows)[:, None]
        h = ACTIVATION_FNS[self.encoder_activation](pre + self.encoder_bias)
        for layer in self.extra_layers:
            h = ACTIVATION_FNS[self.encoder_activation](layer(h))
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
        kernel, bias, out_bias = self.decoder_kernel, self.decoder_bias, self.output_bias
        if cols is not None:
            kernel, bias, out_bias = kernel[cols], bias[cols], out_bias[cols]
        m, k_out, d = kernel.shape
        if self._folds_output_conv():
            folded = mix_middle(self.output_conv.T, kernel).reshape(m * self.n_outputs, d)
            logits = contract("bd,xd->bx", h, folded, precision=self.matmul_precision)
            logits = add_to_every_row(logits.reshape(-1, m, self.n_outputs), mix_last(bias, self.output_conv) + out_bias)
        else:
            y = contract("bd,xd->bx", h, kernel.reshape(m * k_out, d), precision=self.matmul_precision)
            logits = add_to_every_row(self._output_conv(add_to_every_row(y.reshape(-1, m, k_out), bias)), out_bias)
        return self.head(logits + self.row_offset(h)[:, None, :], self.cutpoints_at(cols))

    def entry_logits(self, h_entries, cols):
        """Logits (T, C) of row code h_entries[t] at column cols[t]: the observed entries only."""
        y = contract("td,tkd->tk", h_entries, self.decoder_kernel[cols], precision=self.matmul_precision)
        raw = self._output_conv(y + self.decoder_bias[cols]) + self.output_bias[cols] + self.row_offset(h_entries)
        return self.head(raw, self.cutpoints_at(cols))

    def row_offset(self, h):
        """Offsets (…, n_outputs) of each row from its code, h·V, added at every column: with
        `row_offsets`, a row's own rating offset is one shared (d, n_outputs) map instead of a
        component of every column's decoder weights (each separately L2-penalised). 0 otherwise."""
        return h @ self.row_offset_kernel if self.row_offsets else jnp.zeros(h.shape[:-1] + (self.n_outputs,))

    def _folds_output_conv(self) -> bool:
        """Whether B folds into W_dec (`decoder_fold`). "auto" folds when B's outputs per column
        (C, or 2 with the ordinal head) are at most k' (fewer FLOPs), and at any C for bf16 matmuls
        off CPU, where the extra GEMM FLOPs cost less than the two passes over the activations they
        save (H200, ML-20M shape, C = 10, k' = 8: 1.27 against 1.52 s/epoch)."""
        if self.decoder_activation != "identity" or self.decoder_fold == "never":
            return False
        if self.decoder_fold == "always" or self.n_outputs <= self.decoder_channels:
            return True
        return self.matmul_precision == "bfloat16" and jax.default_backend() != "cpu"

    def _output_conv(self, y):
        """ψ(y) · B: the output 1x1 convolution (…, k') -> (…, C)."""
        return mix_last(ACTIVATION_FNS[self.decoder_activation](y), self.output_conv)

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


def build_model(model_config, *, n_cols: int, n_channels: int) -> Conv4Rec:
    """The module for a config and a catalogue of `n_cols` columns."""
    if model_config.rating_head == "ordinal" and n_channels < 2:
        raise ConfigError("model.rating_head='ordinal' needs at least 2 ordered rating levels; "
                          f"the data has {n_channels} channel")
    return Conv4Rec(n_cols=n_cols, n_channels=n_channels, conv_channels=model_config.conv_channels,
                    hidden=tuple(model_config.hidden), decoder_channels=model_config.decoder_channels,
                    encoder_activation=model_config.encoder_activation,
                    decoder_activation=model_config.decoder_activation,
                    decoder_fold=model_config.decoder_fold, input_norm=model_config.input_norm,
                    rating_head=model_config.rating_head,
                    per_column_cutpoints=model_config.cutpoints == "per_column", row_offsets=model_config.row_offsets,
                    matmul_precision=model_config.matmul_precision)


def init_params(model: Conv4Rec, key):
    """Parameters from one key, traced on a one-entry dummy batch."""
    dummy = jnp.zeros((1,), jnp.int32)
    return model.init(key, dummy, dummy, dummy, jnp.ones((1,)), 1)["params"]


def weight_names(params) -> list[str]:
    """Names of the weight arrays (kernels and convolutions) that the L2 penalty covers; biases and
    the ordinal head's cut-points (offsets on the rating scale) excluded."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = ["/".join(str(getattr(p, "key", p)) for p in path) for path, _ in flat]
    return [n for n in names if not n.endswith(("bias", "cutpoints"))]
