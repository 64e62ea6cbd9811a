"""Alternative forms of the training step's costliest small operations, timed alone at one shape,
so that a short GPU lease can pick between them without rebuilding the step for each:

- `dm`: the 1x1 convolutions' weight gradient, dm[c, k] = Σ_n Σ_d g[n, c, d] · w[n, k, d]
  (`ops.mix_middle`'s backward pass for A and for B), a reduction of two catalogue-sized
  arrays to C·k numbers;
- `mix`: `ops.mix_middle` itself, the table A·W_enc, W_dec·B folded and their backward passes;
- `bias`: the output bias' gradient, the sum of the logits' gradient over the batch's rows
  (`ops.add_to_every_row`'s backward pass);
- `adam`: one Adam update of the two catalogue-sized kernels, the step's memory floor, alone and
  with the step's divergence check (the maximum of the new second moments) fused in or kept apart.

Each form's median of `--reps` timed calls after a compiled warm-up, and its largest difference
from the first form's result (they compute the same numbers).

    python -m benchmarks.speed.op_forms --shape ml-20m-shape --batch-rows 1024 --out OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def dm_forms() -> dict:
    import jax
    import jax.numpy as jnp

    from convae_jax.ops import mix_middle_dm_batched, mix_middle_dm_fused

    def two_stage(g, w):
        per_column = jnp.sum(g[:, :, None, :] * w[:, None, :, :], axis=3)
        return jax.lax.optimization_barrier(per_column).sum(axis=0)

    def transposed_gemm(g, w):
        n, c, d = g.shape
        flat_g = g.transpose(1, 0, 2).reshape(c, n * d)
        flat_w = w.transpose(1, 0, 2).reshape(w.shape[1], n * d)
        return jnp.dot(flat_g, flat_w.T, precision="highest")

    return {
        "batched fp32 (GPU default)": mix_middle_dm_batched,
        "fused (CPU default)": mix_middle_dm_fused,
        "batched tf32": lambda g, w: jnp.einsum("ncd,nkd->nck", g, w, precision="high").sum(axis=0),
        "one einsum fp32": lambda g, w: jnp.einsum("ncd,nkd->ck", g, w, precision="highest"),
        "two-stage": two_stage,
        "transposed gemm": transposed_gemm,
    }


def mix_forms() -> dict:
    from convae_jax.ops import mix_middle_reduced, mix_middle_unrolled

    return {"unrolled (CPU default)": mix_middle_unrolled, "reduced (GPU default)": mix_middle_reduced}


def bias_forms() -> dict:
    import jax.numpy as jnp

    return {
        "ones gemv fp32 (default)": lambda g: jnp.dot(jnp.ones((g.shape[0],), g.dtype), g, precision="highest"),
        "sum over rows": lambda g: jnp.sum(g, axis=0),
    }


def _time(fn, args, reps: int):
    """(median seconds of `reps` calls after a first, compiling one; that first call's output)."""
    import jax

    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def time_forms(group: str, forms: dict, args, reps: int) -> list[dict]:
    """One row per form of `group` on the same `args`: its median ms and its largest difference from
    the first form's result, relative to that result's largest magnitude."""
    import jax

    rows, reference = [], None
    for name, form in forms.items():
        seconds, out = _time(jax.jit(form), args, reps)
        out = np.asarray(out)
        reference = out if reference is None else reference
        scale = float(np.max(np.abs(reference))) or 1.0
        rows.append({"group": group, "form": name, "ms": seconds * 1e3,
                     "max_rel_diff": float(np.max(np.abs(out - reference)) / scale)})
        print(f"{group:5} {name:28} {seconds * 1e3:9.3f} ms   max |diff| / max |first| {rows[-1]['max_rel_diff']:.1e}",
              flush=True)
    return rows


def adam_rows(n: int, k: int, d: int, reps: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import optax

    tx = optax.adam(1e-3)
    params = {"decoder_kernel": jnp.ones((n, k, d)), "encoder_kernel": jnp.ones((n, k, d))}
    grads = jax.tree_util.tree_map(lambda p: p * 1e-3, params)
    state = tx.init(params)

    def largest_nu(state, barrier):
        nu = optax.tree_utils.tree_get(state, "nu")
        nu = jax.lax.optimization_barrier(nu) if barrier else nu
        return jnp.max(jnp.stack([jnp.max(v) for v in jax.tree_util.tree_leaves(nu)]))

    def update(grads, state, params, check):
        updates, state = tx.update(grads, state, params)
        out = optax.apply_updates(params, updates), state
        return out if check is None else (*out, largest_nu(state, barrier=check == "apart"))

    moved = 7 * 4 * 2 * n * k * d  # read p, g, m, v; write p, m, v; fp32; two kernels
    rows = []
    for check in (None, "fused", "apart"):
        seconds, _ = _time(jax.jit(lambda g, s, p, check=check: update(g, s, p, check)), (grads, state, params), reps)
        form = "optax.adam" + ("" if check is None else f", max(nu) {check}")
        print(f"adam  {form:28} {seconds * 1e3:9.3f} ms   {moved / seconds / 1e9:.0f} GB/s of p, g, m, v", flush=True)
        rows.append({"group": "adam", "form": form, "ms": seconds * 1e3, "gb_per_s": moved / seconds / 1e9})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="ml-20m-shape")
    parser.add_argument("--batch-rows", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=600)
    parser.add_argument("--channels", type=int, default=8, help="k = k'")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default=None, help="folder for op_forms.json")
    args = parser.parse_args(argv)

    import jax

    from benchmarks.speed.shapes import SHAPES

    shape = SHAPES[args.shape]
    n, c, k, d = shape.n_items, shape.n_channels, args.channels, args.hidden
    print(f"op forms on {jax.devices()[0].device_kind}, {args.shape}: n {n}, C {c}, k {k}, d {d}, batch {args.batch_rows}")
    keys = jax.random.split(jax.random.key(0), 3)
    g, w = jax.random.normal(keys[0], (n, c, d)), jax.random.normal(keys[1], (n, k, d))
    logits_grad = jax.random.normal(keys[2], (args.batch_rows, n * c))
    rows = (time_forms("dm", dm_forms(), (g, w), args.reps)
            + time_forms("mix", mix_forms(), (jax.random.normal(keys[0], (c, k)), w), args.reps)
            + time_forms("mix", mix_forms(), (jax.random.normal(keys[1], (k, c)), g), args.reps)
            + time_forms("bias", bias_forms(), (logits_grad,), args.reps)
            + adam_rows(n, k, d, args.reps))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "op_forms.json").write_text(json.dumps({"shape": args.shape, "n": n, "C": c, "k": k, "d": d,
                                                                  "batch_rows": args.batch_rows, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
