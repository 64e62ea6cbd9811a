"""Flax modules of Conv4Rec (SPEC §2): the sparse 1x1-convolutional encoder and the decoder.

Shapes: B rows in a batch, T observed entries, n columns, C channels, k = conv_channels,
d = hidden[-1], k' = decoder_channels. No loss, no optimiser here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATION_FNS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "selu": jax.nn.selu,
                  "identity": lambda x: x}


def contract(spec: str, a, b, *, precision: str = "default"):
    """`jnp.einsum(spec, a, b)` under a matmul precision (config.MATMUL_PRECISIONS): "default" is the
    backend's own (exact fp32 on CPU, TF32 on Ampere+ GPUs), "float32" and "tensorfloat32" pin
    `lax.Precision` HIGHEST and HIGH, "bfloat16" casts both operands to bf16 and accumulates in fp32.
    The result is float32 in every case."""
    if precision == "bfloat16":
        return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    return jnp.einsum(spec, a, b, precision=None if precision == "default" else precision)


class Conv4Rec(nn.Module):
    """Encoder  h = φ(Σ_(col,c) x[col,c] · A[c] · W_enc[col] + b)  (an embedding bag over observed
    entries, O(T·k·d)), optional dense layers, then decoder
    L[col] = ψ(h · W_dec[col] + b_dec[col]) · B + bias[col]  ∈ R^C, for any set of columns.

    `A` (C, k) and `B` (k', C) are the 1x1 convolutions shared by every column.
    """

    n_cols: int
    n_channels: int
    conv_channels: int = 8
    hidden: tuple[int, ...] = (128,)
    decoder_channels: int = 8
    encoder_activation: str = "tanh"
    decoder_activation: str = "identity"
    matmul_precision: str = "default"

    def setup(self):
        c, k, d, k_out = self.n_channels, self.conv_channels, self.hidden[0], self.decoder_channels
        d_last = self.hidden[-1]
        lecun = nn.initializers.lecun_normal
        self.input_conv = self.param("input_conv", lecun(), (c, k))
        self.encoder_kernel = self.param("encoder_kernel", lecun(in_axis=(0, 1), out_axis=2), (self.n_cols, k, d))
        self.encoder_bias = self.param("encoder_bias", nn.initializers.zeros, (d,))
        self.extra_layers = [nn.Dense(width, name=f"dense_{j}") for j, width in enumerate(self.hidden[1:])]
        self.decoder_kernel = self.param("decoder_kernel", lecun(in_axis=1, out_axis=2, batch_axis=(0,)),
                                         (self.n_cols, d_last, k_out))
        self.decoder_bias = self.param("decoder_bias", nn.initializers.zeros, (self.n_cols, k_out))
        self.output_conv = self.param("output_conv", lecun(), (k_out, c))
        self.output_bias = self.param("output_bias", nn.initializers.zeros, (self.n_cols, c))

    def encode(self, segment, col, channel, count, n_rows: int):
        """Row codes h (n_rows, d) from entries (T,); entries with segment == n_rows are padding.

        Two contraction orders of the same sum, picked from static shapes by what they move:
        - per entry: gather W_enc[col] (T, k, d), weight by count·A[channel]: O(T·k·d);
        - table: M = A·W_enc (C, n, d) once, gather M[channel, col] (T, d): O(n·C·k·d + T·d),
          cheaper as soon as T·k > n·C (any training batch; one-user fold-in stays per entry).
        """
        c, n, d = self.n_channels, self.n_cols, self.hidden[0]
        if segment.shape[0] * self.conv_channels > n * c:
            table = contract("ck,nkd->cnd", self.input_conv, self.encoder_kernel, precision=self.matmul_precision)
            per_entry = count[:, None] * table.reshape(c * n, d)[channel * n + col]
        else:
            coefficient = count[:, None] * self.input_conv[channel]  # (T, k)
            per_entry = contract("tk,tkd->td", coefficient, self.encoder_kernel[col], precision=self.matmul_precision)
        pre = jax.ops.segment_sum(per_entry, segment, num_segments=n_rows + 1)[:n_rows] + self.encoder_bias
        h = ACTIVATION_FNS[self.encoder_activation](pre)
        for layer in self.extra_layers:
            h = ACTIVATION_FNS[self.encoder_activation](layer(h))
        return h

    def column_logits(self, h, cols=None):
        """Logits (B, m, C) of every row in h (B, d) at columns `cols` (m,); `cols=None` is the whole
        catalogue (m = n) read in place, without gathering (and, backwards, scattering) W_dec."""
        if cols is None:
            kernel, bias, out_bias = self.decoder_kernel, self.decoder_bias, self.output_bias
        else:
            kernel, bias, out_bias = self.decoder_kernel[cols], self.decoder_bias[cols], self.output_bias[cols]
        y = contract("bd,mdk->bmk", h, kernel, precision=self.matmul_precision) + bias
        return self._output_conv(y) + out_bias

    def entry_logits(self, h_entries, cols):
        """Logits (T, C) of row code h_entries[t] at column cols[t]: the observed entries only."""
        y = contract("td,tdk->tk", h_entries, self.decoder_kernel[cols], precision=self.matmul_precision)
        return self._output_conv(y + self.decoder_bias[cols]) + self.output_bias[cols]

    def _output_conv(self, y):
        """ψ(y) · B: the output 1x1 convolution (…, k') -> (…, C)."""
        y = ACTIVATION_FNS[self.decoder_activation](y)
        return contract("...k,kc->...c", y, self.output_conv, precision=self.matmul_precision)

    def __call__(self, segment, col, channel, count, n_rows: int):
        """Full logits (n_rows, n_cols, C); used for initialisation and small-catalogue checks."""
        h = self.encode(segment, col, channel, count, n_rows)
        return self.column_logits(h)


def build_model(model_config, *, n_cols: int, n_channels: int) -> Conv4Rec:
    """The module for a config and a catalogue of `n_cols` columns."""
    return Conv4Rec(n_cols=n_cols, n_channels=n_channels, conv_channels=model_config.conv_channels,
                    hidden=tuple(model_config.hidden), decoder_channels=model_config.decoder_channels,
                    encoder_activation=model_config.encoder_activation,
                    decoder_activation=model_config.decoder_activation,
                    matmul_precision=model_config.matmul_precision)


def init_params(model: Conv4Rec, key):
    """Parameters from one key, traced on a one-entry dummy batch."""
    dummy = jnp.zeros((1,), jnp.int32)
    return model.init(key, dummy, dummy, dummy, jnp.ones((1,)), 1)["params"]


def weight_names(params) -> list[str]:
    """Names of the weight arrays (kernels and convolutions) that the L2 penalty covers; biases excluded."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = ["/".join(str(getattr(p, "key", p)) for p in path) for path, _ in flat]
    return [n for n in names if not n.endswith("bias")]
