"""I-AutoRec (Sedhain et al. 2015, "AutoRec: Autoencoders Meet Collaborative Filtering"): an
item-based autoencoder of each item's column of ratings over users, trained on observed entries."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from convae_jax.data.interactions import Interactions
from convae_jax.metrics import rmse


@dataclasses.dataclass(frozen=True)
class AutoRecConfig:
    """The paper's I-AutoRec: one sigmoid hidden layer of 500, identity output, squared error on
    observed ratings plus (λ/2)(‖W‖² + ‖V‖²). The paper trains full-batch with Rprop/L-BFGS; here
    Adam on item mini-batches (the per-batch penalty scaled by batch/n_items so that an epoch
    carries it once), early-stopped on validation RMSE."""

    hidden: int = 500  # width of the sigmoid code
    l2: float = 1.0  # λ of the paper's (λ/2)‖·‖² penalty on both weight matrices
    learning_rate: float = 1e-3  # Adam step size
    batch_items: int = 256  # items (rows) per step
    max_epochs: int = 500  # upper bound on epochs
    patience: int = 30  # epochs without validation improvement before stopping
    seed: int = 0  # initialisation and shuffling


@dataclasses.dataclass(eq=False)
class IAutoRec:
    """A fitted I-AutoRec; r̂_ui = f(r_i)[u] with r_i item i's training ratings (0 where unseen),
    clipped to the rating scale."""

    config: AutoRecConfig
    params: dict
    inputs: np.ndarray  # (n_items, n_users) training ratings, 0 where unobserved
    scale: tuple[float, float]  # lowest and highest rating
    history: tuple = ()  # validation RMSE per epoch

    @classmethod
    def fit(cls, train: Interactions, *, validation: Interactions, config: AutoRecConfig = AutoRecConfig(),
            input_data: Interactions | None = None) -> "IAutoRec":
        """Trains on `train`, keeps the epoch of best RMSE on `validation`; predictions read
        `input_data` (default `train`), e.g. train plus validation pairs."""
        ratings, mask = _dense(train)
        n_items, n_users = ratings.shape
        root = jax.random.key(config.seed)
        k_v, k_w = jax.random.split(root)
        # Uniform(±1/sqrt(fan_in)) as in common re-implementations (torch.nn.Linear's default).
        params = {
            "V": jax.random.uniform(k_v, (n_users, config.hidden), minval=-1, maxval=1) / np.sqrt(n_users),
            "mu": jnp.zeros(config.hidden),
            "W": jax.random.uniform(k_w, (config.hidden, n_users), minval=-1, maxval=1) / np.sqrt(config.hidden),
            "b": jnp.zeros(n_users),
        }
        tx = optax.adam(config.learning_rate)
        opt_state = tx.init(params)
        penalty_share = min(config.batch_items, n_items) / n_items

        def loss_fn(p, r, m):
            err = m * (_reconstruct(p, r) - r)
            return jnp.sum(err**2) + penalty_share * 0.5 * config.l2 * (jnp.sum(p["W"] ** 2) + jnp.sum(p["V"] ** 2))

        @jax.jit
        def step(p, state, r, m):
            grads = jax.grad(loss_fn)(p, r, m)
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state

        lo, hi = min(train.channel_values), max(train.channel_values)
        shuffle = np.random.default_rng(config.seed)
        best, best_rmse, since, history = params, np.inf, 0, []
        for _ in range(config.max_epochs):
            order = shuffle.permutation(n_items)
            for start in range(0, n_items, config.batch_items):
                idx = order[start:start + config.batch_items]
                if idx.size < config.batch_items:  # keep one compiled shape: pad with repeated rows, masked out
                    idx = np.concatenate([idx, order[: config.batch_items - idx.size]])
                    m = mask[idx].copy()
                    m[-(config.batch_items - (n_items - start)):] = 0.0
                else:
                    m = mask[idx]
                params, opt_state = step(params, opt_state, ratings[idx], m)
            score = rmse(cls(config, params, ratings, (lo, hi)).predict_ratings(validation.user, validation.item),
                         validation.ratings)
            history.append(score)
            if score < best_rmse:
                best, best_rmse, since = params, score, 0
            else:
                since += 1
                if since >= config.patience:
                    break
        inputs = ratings if input_data is None else _dense(input_data)[0]
        return cls(config, best, inputs, (lo, hi), tuple(history))

    def predict_ratings(self, users, items) -> np.ndarray:
        """r̂ for each (user, item) pair, (P,), clipped to the rating scale."""
        users, items = np.asarray(users), np.asarray(items)
        out = np.empty(users.size, np.float64)
        uniq, inverse = np.unique(items, return_inverse=True)
        for start in range(0, uniq.size, 1024):
            block = uniq[start:start + 1024]
            recon = np.asarray(_reconstruct_jit(self.params, jnp.asarray(self.inputs[block])))
            sel = (inverse >= start) & (inverse < start + block.size)
            out[sel] = recon[inverse[sel] - start, users[sel]]
        return np.clip(out, *self.scale)


def _reconstruct(p, r):
    """f(r) = W σ(V r + μ) + b for item rows r (b, n_users), in batched row form."""
    return jax.nn.sigmoid(r @ p["V"] + p["mu"]) @ p["W"] + p["b"]


_reconstruct_jit = jax.jit(_reconstruct)


def _dense(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(ratings, mask), both (n_items, n_users) float32; the dense matrix is small for the
    datasets I-AutoRec is run on here (at most 10^4 × 3·10^3)."""
    ratings = np.zeros((data.n_items, data.n_users), np.float32)
    ratings[data.item, data.user] = data.ratings
    return ratings, (ratings > 0).astype(np.float32)
