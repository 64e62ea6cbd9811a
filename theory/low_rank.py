"""The low-rank comparator of the recovery check: a rank-r softmax factorisation fitted by
maximum likelihood, p̂_u(i, c) = softmax_(i,c)(U_u · V_ic + β_ic), U (m, r), V (K, r), β (K,).

The truth's item logits are rank 4 plus popularity, but its rating model is an ordinal link on a
second rank-4 score, so no finite r is exact; at r = 4 and 8 the comparator is a well-specified-ish
estimator that should reach the rate a low-rank model can. Fitted by full-batch Adam on the
joint log-likelihood of the fit draws, stopped early on the held-out draws' log-loss (the only
regularisation, as for Conv4Rec's epoch choice).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from convae_jax.data import Interactions

RANKS = (4, 8)  # the comparator's ranks r


@dataclasses.dataclass(frozen=True)
class LowRankFit:
    rank: int
    learning_rate: float = 0.05  # Adam step size
    steps_per_check: int = 25  # Adam steps between two held-out evaluations
    max_checks: int = 80  # at most steps_per_check · max_checks steps
    patience: int = 6  # checks without held-out improvement before stopping
    seed: int = 0  # initialisation


def _dense_counts(draws: Interactions) -> np.ndarray:
    counts = np.zeros((draws.n_users, draws.n_items * draws.n_channels), np.float32)
    np.add.at(counts, (draws.user, draws.item * draws.n_channels + draws.channel), draws.count)
    return counts


def _log_probs(params):
    logits = params["user"] @ params["cell"].T + params["bias"]
    return jax.nn.log_softmax(logits, axis=-1)


def _mean_nll(params, counts):
    return -jnp.sum(counts * _log_probs(params)) / jnp.sum(counts)


@functools.partial(jax.jit, static_argnames=("steps", "tx"))
def _run(params, opt_state, counts, *, steps: int, tx):
    def step(carry, _):
        params, opt_state = carry
        grads = jax.grad(_mean_nll)(params, counts)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), None, length=steps)
    return params, opt_state


@dataclasses.dataclass(eq=False)
class LowRankEstimator:
    """A fitted rank-r factorisation; `log_joint(users)` is (b, n, C) like the other estimators."""

    log_table: np.ndarray  # (m, n, C) log p̂_u(i, c)
    rank: int
    steps: int  # Adam steps of the selected parameters

    def log_joint(self, users) -> np.ndarray:
        return self.log_table[np.asarray(users)]


def fit_low_rank(draws: Interactions, heldout: Interactions, options: LowRankFit) -> LowRankEstimator:
    """Maximum likelihood on `draws`, the parameters at the best held-out log-loss check."""
    counts, held = jnp.asarray(_dense_counts(draws)), jnp.asarray(_dense_counts(heldout))
    cells = counts.shape[1]
    key_u, key_v = jax.random.split(jax.random.key(options.seed))
    frequency = (np.asarray(counts.sum(0)) + 1.0) / (float(counts.sum()) + cells)
    params = {"user": 0.1 * jax.random.normal(key_u, (counts.shape[0], options.rank)),
              "cell": 0.1 * jax.random.normal(key_v, (cells, options.rank)),
              "bias": jnp.asarray(np.log(frequency), jnp.float32)}
    tx = optax.adam(options.learning_rate)
    opt_state = tx.init(params)
    best, best_loss, best_steps, since = params, float(_mean_nll(params, held)), 0, 0
    for check in range(1, options.max_checks + 1):
        params, opt_state = _run(params, opt_state, counts, steps=options.steps_per_check, tx=tx)
        loss = float(_mean_nll(params, held))
        if loss < best_loss:
            best, best_loss, best_steps, since = params, loss, check * options.steps_per_check, 0
        else:
            since += 1
            if since >= options.patience:
                break
    table = np.asarray(_log_probs(best), np.float64).reshape(counts.shape[0], draws.n_items, draws.n_channels)
    return LowRankEstimator(table, options.rank, best_steps)
