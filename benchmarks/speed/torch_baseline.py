"""Conv4Rec in PyTorch, the parity and speed baseline of convae_jax, in two flavours (the model and
its loss as docs/model.md, The model and The loss, define them).

- `DenseConv4Rec`: as a paper implementation writes it. Each batch becomes a dense count tensor
  X (B, C, n); `nn.Conv1d` 1x1 (C -> k), `nn.Linear` (k·n -> d), φ, `nn.Linear` (d -> k'·n), ψ,
  `nn.Conv1d` 1x1 (k' -> C) plus an output bias (C, n). Input dropout is `F.dropout` on X.
- `FastConv4Rec`: as a strong PyTorch engineer writes it. The encoder is an `EmbeddingBag` over the
  table M = A·W_enc (C·n, d) with the counts as per-sample weights (O(n·C·k·d + T·d), never the
  dense input); the decoder is one GEMM h (B, d) @ W_dec (d, n·k'); the loss reads the entries'
  logits from the full logits and normalises with one `logsumexp` per row; Adam is `fused`;
  `precision` picks fp32, TF32 or bf16 autocast (the decoder; the cheap encoder stays fp32);
  `make_train_step(compile=True)` wraps the loss in `torch.compile`.

Both compute exactly the loss of `convae_jax.train.make_loss_fn` (λ, L2 on the four weight
arrays, batch mean over real rows) for the reference options it supports: one hidden layer,
`explicit_on="all"`, `implicit_weight=1`. `load_jax(params)` copies a convae_jax parameter tree
into either flavour and `jax_layout(tensors)` maps parameters or gradients back to the JAX names
and shapes, so parity is checked array by array. The default init, without JAX parameters,
follows the same scheme as convae_jax: LeCun truncated normal with the same fan-ins, zero biases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("fp32", "tf32", "bf16")
FLAVOURS = ("dense", "fast")
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "selu": F.selu,
               "identity": lambda x: x}
# Flax's truncated_normal divides by the std of a unit normal truncated to [-2, 2].
_TRUNCATED_STD = 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The shape of one Conv4Rec: n columns, C channels, k, d, k' and the activations."""

    n_cols: int
    n_channels: int
    conv_channels: int
    hidden: int
    decoder_channels: int
    encoder_activation: str = "tanh"
    decoder_activation: str = "identity"

    @classmethod
    def of(cls, model_config, *, n_cols: int, n_channels: int) -> Architecture:
        """From a convae_jax ModelConfig; refuses the options the baseline does not implement."""
        unsupported = [(len(model_config.hidden) != 1, "model.hidden must have one entry"),
                       (model_config.explicit_on != "all", "model.explicit_on must be 'all'"),
                       (getattr(model_config, "implicit_weight", 1.0) != 1.0, "model.implicit_weight must be 1"),
                       (model_config.row_offsets, "model.row_offsets must be off"),
                       (model_config.rating_head != "categorical", "model.rating_head must be 'categorical'")]
        for bad, message in unsupported:
            if bad:
                raise ValueError(f"the torch baseline implements the reference model and loss only: {message}")
        return cls(n_cols, n_channels, model_config.conv_channels, model_config.hidden[0],
                   model_config.decoder_channels, model_config.encoder_activation, model_config.decoder_activation)


def lecun_truncated_normal_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    """flax.linen.initializers.lecun_normal: truncated normal in ±2σ', σ' = sqrt(1/fan_in)/0.8796."""
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_STD
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


class DenseConv4Rec(nn.Module):
    """Paper-style Conv4Rec over dense inputs X (B, C, n) -> logits (B, C, n)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        n, c, k, d, k_out = arch.n_cols, arch.n_channels, arch.conv_channels, arch.hidden, arch.decoder_channels
        self.arch = arch
        self.input_conv = nn.Conv1d(c, k, 1, bias=False)
        self.encoder = nn.Linear(k * n, d)  # input index j·n + i holds Z[i, j]
        self.decoder = nn.Linear(d, k_out * n)  # output index j·n + i holds Y[i, j]
        self.output_conv = nn.Conv1d(k_out, c, 1, bias=False)
        self.output_bias = nn.Parameter(torch.zeros(c, n))
        for weight, fan_in in ((self.input_conv.weight, c), (self.encoder.weight, n * k), (self.decoder.weight, d),
                               (self.output_conv.weight, k_out)):
            lecun_truncated_normal_(weight, fan_in)
        nn.init.zeros_(self.encoder.bias)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x):
        a = self.arch
        h = ACTIVATIONS[a.encoder_activation](self.encoder(self.input_conv(x).flatten(1)))
        y = self.decoder(h).view(x.shape[0], a.decoder_channels, a.n_cols)
        return self.output_conv(ACTIVATIONS[a.decoder_activation](y)) + self.output_bias

    def weights(self) -> list[torch.Tensor]:
        """The arrays under the L2 penalty (convae_jax.model.weight_names)."""
        return [self.input_conv.weight, self.encoder.weight, self.decoder.weight, self.output_conv.weight]

    def _layout(self):
        a = self.arch
        n, k, d, k_out = a.n_cols, a.conv_channels, a.hidden, a.decoder_channels
        # (jax name, torch tensor, jax -> torch, torch -> jax)
        return [
            ("input_conv", self.input_conv.weight, lambda w: w.T[:, :, None], lambda t: t[:, :, 0].T),
            ("encoder_kernel", self.encoder.weight, lambda w: w.transpose(2, 1, 0).reshape(d, k * n),
             lambda t: t.reshape(d, k, n).transpose(2, 1, 0)),
            ("encoder_bias", self.encoder.bias, lambda w: w, lambda t: t),
            ("decoder_kernel", self.decoder.weight, lambda w: w.transpose(1, 0, 2).reshape(k_out * n, d),
             lambda t: t.reshape(k_out, n, d).transpose(1, 0, 2)),
            ("decoder_bias", self.decoder.bias, lambda w: w.T.reshape(-1), lambda t: t.reshape(k_out, n).T),
            ("output_conv", self.output_conv.weight, lambda w: w.T[:, :, None], lambda t: t[:, :, 0].T),
            ("output_bias", self.output_bias, lambda w: w.T, lambda t: t.T),
        ]


class FastConv4Rec(nn.Module):
    """Engineered Conv4Rec over sparse entries: `encode` (embedding bag) and `logits` (B, n, C)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        n, c, k, d, k_out = arch.n_cols, arch.n_channels, arch.conv_channels, arch.hidden, arch.decoder_channels
        self.arch = arch
        self.input_conv = nn.Parameter(lecun_truncated_normal_(torch.empty(c, k), c))
        self.encoder_kernel = nn.Parameter(lecun_truncated_normal_(torch.empty(n, k, d), n * k))
        self.encoder_bias = nn.Parameter(torch.zeros(d))
        # Stored (d, n·k') so that the decoder is one GEMM without a per-step transpose.
        self.decoder_kernel = nn.Parameter(lecun_truncated_normal_(torch.empty(d, n * k_out), d))
        self.decoder_bias = nn.Parameter(torch.zeros(n * k_out))
        self.output_conv = nn.Parameter(lecun_truncated_normal_(torch.empty(k_out, c), k_out))
        self.output_bias = nn.Parameter(torch.zeros(n, c))

    def encode(self, entry_index, count, offsets):
        """h (B, d): bag b sums count[t]·M[entry_index[t]] over its entries, M = A·W_enc (C·n, d)."""
        a = self.arch
        table = torch.einsum("ck,nkd->cnd", self.input_conv, self.encoder_kernel).reshape(-1, a.hidden)
        pre = F.embedding_bag(entry_index, table, offsets, mode="sum", per_sample_weights=count)
        return ACTIVATIONS[a.encoder_activation](pre + self.encoder_bias)

    def logits(self, h):
        """Logits (B, n, C) over the whole catalogue."""
        a = self.arch
        y = (h @ self.decoder_kernel + self.decoder_bias).view(h.shape[0], a.n_cols, a.decoder_channels)
        return ACTIVATIONS[a.decoder_activation](y) @ self.output_conv + self.output_bias

    def weights(self) -> list[torch.Tensor]:
        return [self.input_conv, self.encoder_kernel, self.decoder_kernel, self.output_conv]

    def _layout(self):
        a = self.arch
        n, d, k_out = a.n_cols, a.hidden, a.decoder_channels
        same = lambda w: w
        return [
            ("input_conv", self.input_conv, same, same),
            ("encoder_kernel", self.encoder_kernel, same, same),
            ("encoder_bias", self.encoder_bias, same, same),
            ("decoder_kernel", self.decoder_kernel, lambda w: w.transpose(2, 0, 1).reshape(d, n * k_out),
             lambda t: t.reshape(d, n, k_out).transpose(1, 2, 0)),
            ("decoder_bias", self.decoder_bias, lambda w: w.reshape(-1), lambda t: t.reshape(n, k_out)),
            ("output_conv", self.output_conv, same, same),
            ("output_bias", self.output_bias, same, same),
        ]


def build(flavour: str, arch: Architecture, *, params=None, device="cpu") -> nn.Module:
    """A torch Conv4Rec of `flavour`, with convae_jax `params` copied in when given."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {FLAVOURS}")
    model = (DenseConv4Rec if flavour == "dense" else FastConv4Rec)(arch)
    if params is not None:
        load_jax(model, params)
    return model.to(device)


def load_jax(model: nn.Module, params) -> None:
    """Copies a convae_jax parameter tree (names as in convae_jax.model.Conv4Rec) into `model`."""
    with torch.no_grad():
        for name, tensor, to_torch, _ in model._layout():
            value = np.array(to_torch(np.asarray(params[name], np.float32)), order="C")
            if value.shape != tuple(tensor.shape):
                raise ValueError(f"parameter {name}: JAX shape maps to {value.shape}, torch has {tuple(tensor.shape)}")
            tensor.copy_(torch.from_numpy(value))


def jax_layout(model: nn.Module, *, grads: bool = False) -> dict[str, np.ndarray]:
    """The model's parameters (or their `.grad`) as numpy arrays in convae_jax names and shapes."""
    out = {}
    for name, tensor, _, to_jax in model._layout():
        value = tensor.grad if grads else tensor
        out[name] = np.ascontiguousarray(to_jax(value.detach().float().cpu().numpy()))
    return out


# --- batches ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TorchBatch:
    """A convae_jax RowBatch on a torch device; `offsets` (B,) start each row's bag (rows are packed
    in order, padding entries last with count 0)."""

    row_mask: torch.Tensor  # (B,) float32
    segment: torch.Tensor  # (T,) int64, B on padding
    col: torch.Tensor  # (T,) int64
    channel: torch.Tensor  # (T,) int64
    count: torch.Tensor  # (T,) float32
    offsets: torch.Tensor  # (B,) int64

    @classmethod
    def of(cls, batch, device="cpu") -> TorchBatch:
        rows = batch.row_mask.shape[0]
        offsets = np.searchsorted(batch.segment, np.arange(rows), side="left")
        to = lambda a, dt: torch.from_numpy(np.asarray(a)).to(device=device, dtype=dt)
        return cls(to(batch.row_mask, torch.float32), to(batch.segment, torch.int64), to(batch.col, torch.int64),
                   to(batch.channel, torch.int64), to(batch.count, torch.float32), to(offsets, torch.int64))


def dense_counts(batch: TorchBatch, n_channels: int, n_cols: int) -> torch.Tensor:
    """X (B, C, n): the batch's counts as a dense tensor (padding entries land in a dropped row)."""
    rows = batch.row_mask.shape[0]
    x = torch.zeros(rows + 1, n_channels, n_cols, device=batch.count.device)
    x.index_put_((batch.segment, batch.channel, batch.col), batch.count, accumulate=True)
    return x[:rows]


# --- losses ---------------------------------------------------------------------------------------


def dense_loss(model: DenseConv4Rec, batch: TorchBatch, *, rating_weight: float, l2: float, keep_prob: float = 1.0):
    """Batch-mean ℓ + l2·Σ‖W‖², ℓ_r = −Σ_(c,i) X[r,c,i]·[log p_r(i) + λ log p_r(c|i)] on dense X."""
    a = model.arch
    x = dense_counts(batch, a.n_channels, a.n_cols)
    x_in = F.dropout(x, p=1.0 - keep_prob, training=keep_prob < 1.0)
    logits = model(x_in).float()
    log_consume = torch.logsumexp(logits, dim=1)  # (B, n)
    log_p_col = log_consume - torch.logsumexp(log_consume, dim=1, keepdim=True)
    log_p_rating = logits - log_consume[:, None, :]
    per_row = -(x.sum(1) * log_p_col).sum(1) - rating_weight * (x * log_p_rating).sum((1, 2))
    return _mean_plus_penalty(per_row, batch.row_mask, model.weights(), l2)


def fast_loss(model: FastConv4Rec, batch: TorchBatch, *, rating_weight: float, l2: float, keep_prob: float = 1.0,
              autocast_dtype=None):
    """The same loss on sparse entries: entries' logits gathered from the full logits (B, n, C)."""
    rows = batch.row_mask.shape[0]
    count_in = batch.count
    if keep_prob < 1.0:
        count_in = count_in * torch.bernoulli(torch.full_like(count_in, keep_prob)) / keep_prob
    device_type = batch.count.device.type
    h = model.encode(batch.channel * model.arch.n_cols + batch.col, count_in, batch.offsets)  # fp32: O(n·C·k·d)
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model.logits(h)
    logits = logits.float()
    log_z = torch.logsumexp(logits.flatten(1), dim=1)
    segment = batch.segment.clamp(max=rows - 1)
    entries = logits[segment, batch.col]  # (T, C)
    log_consume = torch.logsumexp(entries, dim=-1)
    log_p_col = log_consume - log_z[segment]
    log_p_rating = entries.gather(1, batch.channel[:, None])[:, 0] - log_consume
    per_entry = -batch.count * (log_p_col + rating_weight * log_p_rating)
    per_row = torch.zeros(rows + 1, device=per_entry.device).index_add_(0, batch.segment, per_entry)[:rows]
    return _mean_plus_penalty(per_row, batch.row_mask, model.weights(), l2)


def _mean_plus_penalty(per_row, row_mask, weights, l2):
    data = (per_row * row_mask).sum() / row_mask.sum().clamp(min=1.0)
    return data + l2 * sum((w.float() ** 2).sum() for w in weights)


# --- training step --------------------------------------------------------------------------------


@contextlib.contextmanager
def matmul_precision(precision: str):
    """fp32 matmuls stay exact for "fp32"/"bf16"; "tf32" allows TensorFloat-32 (CUDA) for the block."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def make_train_step(model: nn.Module, *, config, precision: str = "fp32", compile: bool = False
                    ) -> Callable[[TorchBatch], torch.Tensor]:
    """`step(batch) -> loss` (a detached 0-d tensor): one Adam update of `model` on the loss of
    convae_jax (config.train.l2, learning_rate; config.model.rating_weight, input_dropout).

    Dense: stock Adam, eager. Fast: fused Adam, `precision` in PRECISIONS, the loss under
    `torch.compile` when `compile` (fixed batch shapes, so it compiles once).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    mc, tc = config.model, config.train
    options = {"rating_weight": mc.rating_weight, "l2": tc.l2, "keep_prob": 1.0 - mc.input_dropout}
    if isinstance(model, DenseConv4Rec):
        if precision != "fp32" or compile:
            raise ValueError("the dense flavour is the plain eager fp32 baseline")
        loss_fn = lambda batch: dense_loss(model, batch, **options)
        optimizer = torch.optim.Adam(model.parameters(), lr=tc.learning_rate)
    else:
        autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        loss_fn = lambda batch: fast_loss(model, batch, autocast_dtype=autocast_dtype, **options)
        if compile:
            loss_fn = torch.compile(loss_fn, dynamic=False)
        optimizer = torch.optim.Adam(model.parameters(), lr=tc.learning_rate, fused=True)

    def step(batch: TorchBatch) -> torch.Tensor:
        with matmul_precision(precision):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            loss.backward()
            optimizer.step()
        return loss.detach()

    return step


def loss_and_grads(model: nn.Module, batch: TorchBatch, *, config) -> tuple[float, dict[str, np.ndarray]]:
    """(loss, gradients in convae_jax layout) without dropout: the parity check's quantities."""
    fn = dense_loss if isinstance(model, DenseConv4Rec) else fast_loss
    model.zero_grad(set_to_none=True)
    loss = fn(model, batch, rating_weight=config.model.rating_weight, l2=config.train.l2)
    loss.backward()
    return float(loss.detach()), jax_layout(model, grads=True)


# --- inference ------------------------------------------------------------------------------------


@torch.no_grad()
def top_k_consume(model: nn.Module, batch: TorchBatch, *, k: int, autocast_dtype=None):
    """Indices (B, k) of each row's k most likely columns outside its own entries, by
    log p(col) = logsumexp_c L[col] (log Z is a per-row constant, so it does not change the order).
    `autocast_dtype` as in `fast_loss` (the decoder only)."""
    a = model.arch
    rows = batch.row_mask.shape[0]
    seen = torch.zeros(rows + 1, a.n_cols, dtype=torch.bool, device=batch.col.device)
    seen = seen.index_put_((batch.segment, batch.col), torch.ones_like(batch.col, dtype=torch.bool))[:rows]
    autocast = torch.autocast(batch.col.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    if isinstance(model, DenseConv4Rec):
        with autocast:
            logits = model(dense_counts(batch, a.n_channels, a.n_cols)).float().transpose(1, 2)
    else:
        h = model.encode(batch.channel * a.n_cols + batch.col, batch.count, batch.offsets)
        with autocast:
            logits = model.logits(h).float()
    scores = torch.logsumexp(logits, dim=-1)
    return torch.topk(scores.masked_fill(seen, -torch.inf), k, dim=1).indices
