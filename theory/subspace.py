"""Training in a random subspace θ = θ₀ + P·w, and quantising w onto a few levels (Lotfi et al. 2022).

θ₀ is the network's seeded initialisation and P a sparse random D × d matrix, both functions of
a seed alone (no data), so a decoder that knows the seed and d rebuilds them. P has `nonzeros`
entries per row (parameter coordinate): row i is Σ_t ± c_a e_{j_it} / √nonzeros, the columns
j_it uniform in [0, d), the signs fair coins, c_a the scale of the parameter array a that holds
coordinate i (the rms of θ₀ on a, or BIAS_SCALE where θ₀ is zero there, as for biases). Stored
as the (D, nonzeros) column indices and coefficients: a dense P at D ≈ 4·10⁵, d = 10⁴ would be
16 GB in float32.

Quantisation: w is replaced by c[a], a codebook c of Q levels and an assignment a ∈ [0, Q)^d;
the levels start from 1-D k-means on w (Lloyd's iterations from quantiles), are then trained on
the loss with the assignment fixed (the levels learned, as Lotfi et al. do), and stored as
float16: the model the bound certifies is θ₀ + P·c16[a], exactly what the decoder rebuilds.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

BIAS_SCALE = 0.1  # c_a of an array that θ₀ sets to zero (the biases)
KMEANS_ITERATIONS = 50


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Subspace:
    """θ(w) = θ₀ + P·w for a flat θ₀ (D,), P stored as `index`, `coef` (D, nonzeros); `unravel`
    maps a flat vector back to the parameter tree. A pytree, so that jitted functions take it as an
    argument (its arrays are tens of MB: as closure constants they would be folded into every compilation)."""

    origin: jax.Array
    index: jax.Array
    coef: jax.Array
    dim: int = dataclasses.field(metadata={"static": True})
    unravel: object = dataclasses.field(metadata={"static": True})

    def params(self, w):
        """The parameter tree at subspace coordinates w (d,)."""
        return self.unravel(self.origin + jnp.sum(self.coef * w[self.index], axis=1))


def random_subspace(origin_params, *, dim: int, nonzeros: int, seed: int) -> Subspace:
    """The subspace of the module docstring around `origin_params` (θ₀), from `seed`."""
    flat, unravel = ravel_pytree(origin_params)
    scales = [float(np.sqrt(np.mean(np.square(np.asarray(leaf, np.float64))))) or BIAS_SCALE
              for leaf in jax.tree_util.tree_leaves(origin_params)]
    sizes = [int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(origin_params)]
    rng = np.random.default_rng([seed, dim, nonzeros, 33])
    index = rng.integers(0, dim, size=(flat.size, nonzeros), dtype=np.int32)
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=(flat.size, nonzeros))
    coef = signs * np.repeat(np.asarray(scales, np.float32), sizes)[:, None] / np.float32(np.sqrt(nonzeros))
    return Subspace(jnp.asarray(flat), jnp.asarray(index), jnp.asarray(coef), dim, unravel)


def minimise(loss, start, args, *, steps: int, learning_rate: float):
    """Full-batch Adam on loss(x, args) over x from `start` (`args`: a pytree of the data, passed to
    the compiled loop as an argument), with a cosine decay of the learning rate to zero; returns the
    last iterate and the loss before each step."""
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

    @jax.jit
    def run(start, args):
        def step(carry, _):
            x, state = carry
            value, grad = jax.value_and_grad(loss)(x, args)
            updates, state = tx.update(grad, state)
            return (optax.apply_updates(x, updates), state), value

        return jax.lax.scan(step, (start, tx.init(start)), None, length=steps)

    (x, _), values = run(start, args)
    return x, np.asarray(values)


def kmeans_levels(values, levels: int) -> np.ndarray:
    """1-D k-means (Lloyd) codebook of `levels` values for `values`, started at their quantiles."""
    values = np.asarray(values, np.float64)
    centres = np.quantile(values, (np.arange(levels) + 0.5) / levels)
    for _ in range(KMEANS_ITERATIONS):
        assignment = nearest(values, centres)
        sums = np.bincount(assignment, weights=values, minlength=levels)
        counts = np.bincount(assignment, minlength=levels)
        centres = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
    return centres


def nearest(values, codebook) -> np.ndarray:
    """Index of the nearest codebook value for each value."""
    return np.argmin(np.abs(np.asarray(values)[:, None] - np.asarray(codebook)[None, :]), axis=1).astype(np.int32)


def as_stored(codebook) -> np.ndarray:
    """The codebook as the code stores it (float16), back in float32."""
    return np.asarray(codebook, np.float16).astype(np.float32)


def quantise(loss, w, args, *, levels: int, steps: int, learning_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(codebook as stored, assignment): k-means levels of w, trained on loss(c[assignment], args)
    with the assignment (each coordinate's nearest k-means level) fixed, then rounded to float16."""
    codebook = kmeans_levels(w, levels)
    assignment = nearest(w, codebook)
    trained, _ = minimise(lambda c, a: loss(c[a[0]], a[1]), jnp.asarray(codebook, jnp.float32),
                          (jnp.asarray(assignment), args), steps=steps, learning_rate=learning_rate)
    return as_stored(trained), assignment
