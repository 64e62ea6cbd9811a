"""The joint loss (docs/model.md, "The loss") as pure functions over logits.

For a row r with observed entries Ω_r (with counts), logits L ∈ R^{n×C} and
log Z_r = logsumexp over all n·C entries of L:
    log p_r(col)      = logsumexp_c L[col] − log Z_r
    log p_r(c | col)  = L[col, c] − logsumexp_c L[col]
    ℓ_r = − Σ_{(col,c)∈Ω_r} count · [log p_r(col) + λ · log p_r(c | col)]
λ = 1 gives the joint multinomial log-likelihood −Σ count · log p_r(col, c).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def row_losses(entry_logits, log_z, segment, channel, count, explicit_weight, *, rating_weight: float, n_rows: int,
               implicit_weight: float = 1.0):
    """ℓ_r for every row, (n_rows,); `implicit_weight` multiplies the log p_r(col) term (0: the
    explicit-only variant, which leaves P(consume) untrained).

    entry_logits (T, C): logits at the observed entries; log_z (n_rows,); segment (T,) with
    n_rows marking padding; count (T,) with 0 on padding; explicit_weight (T,) in {0, 1} selects
    which entries the explicit term scores (all observed, or only those dropped from the input).

    The −log Z_r share of log p_r(col) enters once per row, times the row's total count, rather
    than gathered to every entry, whose backward pass is a slow scatter-add (docs/performance.md).
    """
    log_consume = jax.nn.logsumexp(entry_logits, axis=-1)
    log_p_rating = jnp.take_along_axis(entry_logits, channel[:, None], axis=-1)[:, 0] - log_consume
    per_entry = -count * (implicit_weight * log_consume + rating_weight * explicit_weight * log_p_rating)
    row_counts = jax.ops.segment_sum(count, segment, num_segments=n_rows + 1)[:n_rows]
    return jax.ops.segment_sum(per_entry, segment, num_segments=n_rows + 1)[:n_rows] + implicit_weight * row_counts * log_z


def propensity_weights(entry_logits, log_z, segment, count, *, floor: float, n_rows: int):
    """Self-normalised inverse-propensity weights (T,) of the scored entries, their gradients
    stopped (docs/model.md, "Exposure-corrected rating term").

    The propensity of entry (r, col) is the model's own probability that the pair is observed
    among the row's n_r = Σ count interactions: π = min(1, n_r · p_r(col)), p_r(col) =
    exp(logsumexp_c L[col] − log Z_r). Its weight 1 / max(π, floor) is divided by the row's
    count-weighted mean weight, so each row's explicit term keeps its total weight; the mean is
    taken as an offset from the row's largest weight, so a row whose weights are all equal (a model
    with uniform P(consume)) gets weights of exactly 1. Padding (segment == n_rows, count 0) gets 0.

    entry_logits (T, C); log_z (n_rows,); segment (T,); count (T,)."""
    entry_logits, log_z = jax.lax.stop_gradient(entry_logits), jax.lax.stop_gradient(log_z)
    row_count = jax.ops.segment_sum(count, segment, num_segments=n_rows + 1)
    log_p_col = jax.nn.logsumexp(entry_logits, axis=-1) - jnp.append(log_z, 0.0)[segment]
    inverse = 1.0 / jnp.maximum(jnp.minimum(row_count[segment] * jnp.exp(log_p_col), 1.0), floor)
    top = jax.ops.segment_max(jnp.where(count > 0, inverse, 0.0), segment, num_segments=n_rows + 1)[segment]
    offset = jax.ops.segment_sum(count * (inverse - top), segment, num_segments=n_rows + 1)[segment]
    mean = top + offset / jnp.maximum(row_count[segment], 1e-30)
    return jnp.where(count > 0, inverse / mean, 0.0)


# The logit that a padding column (`valid` False) takes in a log-sum-exp: finite, so that a shard of
# padding only has a finite log-sum-exp and finite gradients, and so small that exp() of it is 0.
MASKED_LOGIT = -1e30


def chunked_logsumexp(logits_of_columns, *, n_cols: int, chunk: int, valid=None):
    """logsumexp over all columns and channels of `logits_of_columns(cols) -> (B, m, C)`; columns
    whose `valid` (n_cols,) entry is False (padding of a sharded catalogue) are left out.

    Above `chunk` columns the catalogue is walked in chunks under `jax.checkpoint`, so forward and
    backward keep O(B·chunk·C) logits alive instead of O(B·n·C).
    """
    if n_cols <= chunk:
        return jax.nn.logsumexp(masked_logits(logits_of_columns(jnp.arange(n_cols)), valid), axis=(1, 2))
    n_chunks = -(-n_cols // chunk)

    @jax.checkpoint
    def chunk_lse(start):
        cols = start + jnp.arange(chunk)
        inside = jnp.minimum(cols, n_cols - 1)
        logits = masked_logits(logits_of_columns(inside), None if valid is None else valid[inside])
        logits = jnp.where((cols < n_cols)[None, :, None], logits, -jnp.inf)
        return jax.nn.logsumexp(logits, axis=(1, 2))

    def body(running, start):
        return jnp.logaddexp(running, chunk_lse(start)), None

    first = chunk_lse(jnp.int32(0))
    starts = jnp.arange(1, n_chunks, dtype=jnp.int32) * chunk
    total, _ = jax.lax.scan(body, first, starts)
    return total


def masked_logits(logits, valid):
    """logits (B, m, C) with the columns whose `valid` (m,) is False set to MASKED_LOGIT."""
    return logits if valid is None else jnp.where(valid[None, :, None], logits, MASKED_LOGIT)


def entry_logits_and_log_z(logits_of_columns, logits_of_entries, segment, col, *, n_cols: int, chunk: int, valid=None):
    """(entry logits (T, C), log Z (B,)) of a batch, the two inputs of `row_losses`.

    `logits_of_columns(cols)` gives (B, m, C) at columns `cols`, or at the whole catalogue for
    `cols=None`; `logits_of_entries()` gives (T, C) at the observed entries. Up to `chunk` columns
    the full logits are built once (one decoder GEMM) and both outputs are read from them; the
    entries' logits are then a gather L[segment, col] rather than a per-entry gather of W_dec
    (T·d·k' values, and as many scattered back in the backward pass). Above `chunk`, log Z is
    `chunked_logsumexp` and the entries come from `logits_of_entries`. Padding entries
    (segment == B) read row B − 1; `row_losses` gives them count 0. Columns whose `valid` entry is
    False stay out of log Z (`chunked_logsumexp`).
    """
    if n_cols > chunk:
        return logits_of_entries(), chunked_logsumexp(logits_of_columns, n_cols=n_cols, chunk=chunk, valid=valid)
    logits = logits_of_columns(None)
    log_z = jax.nn.logsumexp(masked_logits(logits, valid), axis=(1, 2))
    return logits[jnp.minimum(segment, logits.shape[0] - 1), col], log_z


def combine_logsumexp(partial, axis_name: str):
    """log Σ_shards exp(partial) of per-shard log-sum-exps `partial` (…) over mesh axis `axis_name`
    (inside `jax.shard_map`): a max, its gradient stopped (`lax.pmax` has none, and the result does
    not depend on it), then a sum of exponentials. Moves one value per row between shards."""
    top = jax.lax.pmax(jax.lax.stop_gradient(partial), axis_name)
    return top + jnp.log(jax.lax.psum(jnp.exp(partial - top), axis_name))


def log_probabilities(logits, log_z):
    """(log p(col) (…, m), log p(c | col) (…, m, C)) from logits (…, m, C) and log Z broadcastable
    to (…, m): per row (…, 1) or per column (m,)."""
    log_consume = jax.nn.logsumexp(logits, axis=-1)
    return log_consume - log_z, logits - log_consume[..., None]
