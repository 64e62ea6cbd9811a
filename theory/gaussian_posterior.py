"""Gaussian weight posteriors of a fitted split-mode Conv4Rec: draws of weights, and the γ-smoothed
empirical risk on fixed draws at any weights, jitted and batched over weight draws.

For the network of a `FittedModel` (user rows; inputs read from its own interactions, S_in in split
mode), `DrawRisk(fitted, draws, smoothing=γ)(params)` is
    R̂(w) = Σ_j c_j ℓ_γ(w; u_j, y_j) / Σ_j c_j,   ℓ_γ = −log((1 − γ) softmax(L_u(w))_y + γ/K),
the loss of `theory.estimators.mean_log_loss(ModelEstimator(fitted), draws, smoothing=γ)` at
w = fitted.params, written as one function of w so that many weight draws can be scored quickly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from convae_jax.data import Interactions
from convae_jax.model import Conv4Rec
from convae_jax.predict import FittedModel


def perturbed(key, mean, scales):
    """One draw w ∼ N(mean, diag σ²), σ constant on each parameter array (`scales`, a tree like `mean`)."""
    leaves, treedef = jax.tree_util.tree_flatten(mean)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
    return jax.tree_util.tree_map(lambda m, s, e: m + s * e, mean, scales, jax.tree_util.tree_unflatten(treedef, noise))


class DrawRisk:
    """R̂(w) of the module docstring on `draws`, for the network and inputs of `fitted`."""

    def __init__(self, fitted: FittedModel, draws: Interactions, *, smoothing: float):
        if fitted.orientation != "user":
            raise ValueError("DrawRisk scores user rows: a row's softmax over all n·C logits is p_u(i, c)")
        matrix, module = fitted.matrix, fitted.module
        segment = np.repeat(np.arange(matrix.n_rows, dtype=np.int32), np.diff(matrix.indptr))
        inputs = tuple(jnp.asarray(a) for a in (segment, matrix.col, matrix.channel, matrix.count))
        n_rows, n_channels = matrix.n_rows, draws.n_channels
        cells = jnp.asarray(draws.item * n_channels + draws.channel)
        users, weights = jnp.asarray(draws.user), jnp.asarray(draws.count / draws.count.sum(), jnp.float32)
        k = draws.n_items * n_channels
        log_floor, log_keep = float(np.log(smoothing / k)), float(np.log1p(-smoothing))

        def risk(params, data):
            (segment, col, channel, count), users, cells, weights = data
            h = module.apply({"params": params}, segment, col, channel, count, n_rows, method=Conv4Rec.encode)
            logits = module.apply({"params": params}, h, method=Conv4Rec.column_logits).reshape(n_rows, k)
            log_q = jax.nn.log_softmax(logits, axis=-1)[users, cells]
            return -jnp.sum(weights * jnp.logaddexp(log_keep + log_q, log_floor))

        # R̂(params, data) as a pure function, to differentiate or compose; the draws and inputs travel
        # as an argument (`data`), not as constants that XLA would fold at every compilation
        self.function, self.data = risk, (inputs, users, cells, weights)
        self._risk = jax.jit(risk)
        self._sampled = jax.jit(jax.vmap(lambda key, mean, scales, data: risk(perturbed(key, mean, scales), data),
                                         in_axes=(0, None, None, None)))

    def __call__(self, params) -> float:
        return float(self._risk(params, self.data))

    def sampled(self, key, mean, scales, *, draws: int, batch: int = 8) -> np.ndarray:
        """R̂(w_j) for `draws` weight draws w_j ∼ N(mean, diag σ²) from `key`, `batch` at a time."""
        keys = jax.random.split(key, -(-draws // batch) * batch).reshape(-1, batch)
        return np.concatenate([np.asarray(self._sampled(chunk, mean, scales, self.data)) for chunk in keys])[:draws]
