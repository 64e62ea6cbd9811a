"""The hardware floor of one training epoch, and the measured machine rates it is priced at.

Floor of an epoch over U rows, n columns, C channels, d = hidden, k, k', batch B, P parameters:
- FLOPs: the three decoder GEMMs per step, forward h·W_dec and backward dh, dW_dec:
  6·U·d·n·k' per epoch;
- bytes: per step, one pass over the parameters, gradients and Adam state (read p, g, m, v;
  write p, m, v; the gradient written once: 8 · 4 bytes · P), and one pass over the fp32 logits
  (4 · B·n·C bytes);
- time: FLOPs / (measured matmul rate) + bytes / (measured memory bandwidth).
Everything else (the encoder, the gathers, the output 1x1 convolution, log-sum-exp arithmetic)
is left out, so the floor is a lower bound, not an estimate.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class EpochFloor:
    rows: int  # U: rows per epoch
    steps: int  # batches per epoch
    parameters: int  # P
    gemm_flop: float  # 6·U·d·n·k'
    pass_bytes: float  # steps · (32·P + 4·B·n·C)
    seconds: float  # gemm_flop / matmul rate + pass_bytes / bandwidth


def parameter_count(*, n_cols: int, n_channels: int, conv_channels: int, hidden: int, decoder_channels: int) -> int:
    """P of a one-hidden-layer Conv4Rec: A, W_enc, b, W_dec, b_dec, B, output bias."""
    n, c, k, d, k2 = n_cols, n_channels, conv_channels, hidden, decoder_channels
    return c * k + n * k * d + d + n * d * k2 + n * k2 + k2 * c + n * c


def epoch_floor(*, rows: int, steps: int, batch_rows: int, n_cols: int, n_channels: int, conv_channels: int,
                hidden: int, decoder_channels: int, matmul_flops: float, bandwidth: float) -> EpochFloor:
    """The floor of one epoch (see the module docstring); rates in FLOP/s and bytes/s."""
    p = parameter_count(n_cols=n_cols, n_channels=n_channels, conv_channels=conv_channels, hidden=hidden,
                        decoder_channels=decoder_channels)
    flop = 6.0 * rows * hidden * n_cols * decoder_channels
    passes = steps * (8 * 4.0 * p + 4.0 * batch_rows * n_cols * n_channels)
    return EpochFloor(rows, steps, p, flop, passes, flop / matmul_flops + passes / bandwidth)


def measure_matmul_flops(*, m: int, k: int, n: int, dtype: str = "float32", device: str = "cpu",
                         repeats: int = 5) -> dict[str, float]:
    """GEMM rate (FLOP/s, median of `repeats`) at the decoder's shape (m, k) @ (k, n) in `dtype`
    ("float32" or "bfloat16"), per framework on the default JAX device and torch `device`:
    {"jax": ..., "torch": ...}; the floor uses the larger."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    ja, jb = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    matmul = jax.jit(jnp.matmul)
    rates = {"jax": 2.0 * m * k * n / _median_seconds(lambda: matmul(ja, jb).block_until_ready(), repeats)}
    try:
        import torch
    except ImportError:
        return rates
    ta, tb = (torch.from_numpy(x).to(device=device, dtype=getattr(torch, dtype)) for x in (a, b))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rates["torch"] = 2.0 * m * k * n / _median_seconds(lambda: (ta @ tb, sync()), repeats)
    return rates


def measure_bandwidth(*, megabytes: int = 256, repeats: int = 5) -> float:
    """Memory bandwidth (bytes/s): a jitted triad a <- a + s·b over `megabytes` per array with `a`
    donated, so it runs in place (a fresh output would also time the kernel's first-touch page
    faults); counts 3 arrays moved; median of `repeats`."""
    import jax
    import jax.numpy as jnp

    size = megabytes * 2**20 // 4
    state = {"a": jnp.ones(size, jnp.float32)}
    b = jnp.full(size, 2.0, jnp.float32)
    triad = jax.jit(lambda a, b: a + 1e-7 * b, donate_argnums=0)

    def run():
        state["a"] = triad(state["a"], b)
        state["a"].block_until_ready()

    return 3 * 4.0 * size / _median_seconds(run, repeats)


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
