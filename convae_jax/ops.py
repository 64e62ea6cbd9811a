"""Custom-gradient kernels of the model: the same math as plain jnp, in the forms XLA runs fastest.

Each exists because a measured step was faster with it; the measurements are in
docs/performance.md, and `tests/test_speed_paths.py` checks each against its plain form.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Entries per chunk of `bag_sum` on CPU (256 to 2,048 tied; docs/performance.md). Other backends
# take the batch in one chunk.
ENTRY_CHUNK = 1024


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
    operands and fp32 results, forward and backward. Why: plain autodiff multiplies the fp32
    cotangent by a bf16 operand, an fp32 GEMM, so the backward two thirds of the work would miss
    the bf16 units."""
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


@jax.custom_vjp
def mix_last(x, m):
    """x (…, k) · m (k, c) as k fused multiply-adds. Why: XLA's CPU dot is slow for contractions
    this narrow (k, c ≤ a few dozen), and its autodiff of the unrolled sum slower still."""
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
    W_dec·B folded. Why: the fastest form differs by backend, k multiply-adds on CPU
    (`mix_middle_unrolled`), one reduction over k elsewhere (`mix_middle_reduced`)."""
    return jax.lax.platform_dependent(m, w, cpu=mix_middle_unrolled, default=mix_middle_reduced)


def mix_middle_unrolled(m, w):
    """`mix_middle` as k multiply-adds of the slices w[:, j, :]: XLA's fastest form on CPU."""
    return sum(m[None, :, j, None] * w[:, None, j, :] for j in range(m.shape[1]))


def mix_middle_reduced(m, w):
    """`mix_middle` as one multiply-reduce over the middle axis k, which reads w in place (GPUs)."""
    return jnp.sum(m[None, :, :, None] * w[:, None, :, :], axis=2)


def _mix_middle_fwd(m, w):
    return mix_middle(m, w), (m, w)


def _mix_middle_bwd(residuals, g):
    m, w = residuals
    dm = jax.lax.platform_dependent(g, w, cpu=mix_middle_dm_fused, default=mix_middle_dm_batched)
    return dm, mix_middle(m.T, g)


def mix_middle_dm_fused(g, w):
    """dm[c, k] = Σ_n Σ_d g[n, c, d] · w[n, k, d] as one fused multiply-reduce: fastest on CPU."""
    return jnp.sum(g[:, :, None, :] * w[:, None, :, :], axis=(0, 3))


def mix_middle_dm_batched(g, w):
    """The same dm as n small GEMMs (C, d)·(d, k) batched, then a sum over n: fastest on GPUs."""
    return jnp.einsum("ncd,nkd->nck", g, w, precision="float32").sum(axis=0)


mix_middle.defvjp(_mix_middle_fwd, _mix_middle_bwd)


@jax.custom_vjp
def add_to_every_row(x, bias):
    """x (B, …) + bias (…), whose bias gradient, a sum of B rows, is a GEMV (ones · g). Why: XLA's
    CPU reduction over the leading axis of the logits' gradient ran at under 1 GB/s."""
    return x + bias


def _add_to_every_row_bwd(shape, g):
    rows = g.reshape(g.shape[0], -1)
    return g, jnp.dot(jnp.ones((rows.shape[0],), rows.dtype), rows, precision="highest").reshape(shape)


add_to_every_row.defvjp(lambda x, bias: (x + bias, bias.shape), _add_to_every_row_bwd)


def _in_chunks(*arrays_and_fills):
    """Each (T,) array padded with its fill value to a whole number of chunks, as (chunks, chunk)."""
    n_entries = arrays_and_fills[0][0].shape[0]
    chunk = ENTRY_CHUNK if jax.default_backend() == "cpu" else n_entries
    pad = -n_entries % chunk
    return [jnp.pad(a, (0, pad), constant_values=fill).reshape(-1, chunk) for a, fill in arrays_and_fills]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def bag_sum(table, index, weight, segment, n_rows: int):
    """out[r] = Σ_{t: segment[t] = r} weight[t] · table[index[t]], (n_rows, d): an embedding bag;
    entries with segment == n_rows are dropped. Why: walked on CPU in chunks of ENTRY_CHUNK
    entries, forward and backward, the gathered rows stay in cache instead of being written out
    as one (T, d) array and read back."""
    return _bag_sum_fwd(table, index, weight, segment, n_rows)[0]


def _bag_sum_fwd(table, index, weight, segment, n_rows):
    idx, wt, seg = _in_chunks((index, 0), (weight, 0.0), (segment, n_rows))

    def body(j, out):
        return out.at[seg[j]].add(wt[j][:, None] * table[idx[j]], mode="drop")

    # zeros_like: under jax.shard_map the sum varies over the mesh axes the table does.
    out = jax.lax.fori_loop(0, idx.shape[0], body, jnp.zeros_like(table, shape=(n_rows, table.shape[1])))
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
