"""Mult-VAE and Mult-DAE (Liang et al. 2018, "Variational Autoencoders for Collaborative
Filtering"), in JAX, with the reference notebook's (dawenl/vae_cf) architecture and defaults."""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from convae_jax.data.interactions import Interactions
from convae_jax.evaluate import strong_generalization_protocol
from convae_jax.rank import seen_mask


@dataclasses.dataclass(frozen=True)
class MultVAEConfig:
    """Defaults are the notebook's: VAE p_dims [200, 600, n], DAE p_dims [200, n]; tanh; input
    L2-normalised then dropped with keep 0.5; Adam 1e-3; batch 500; 200 epochs, the epoch with the
    best validation NDCG@100 kept; KL weight β = min(anneal_cap, step / total_anneal_steps)."""

    variant: str = "vae"  # "vae" (Mult-VAE) or "dae" (Mult-DAE)
    hidden: int = 600  # width of the hidden layer (VAE only; the DAE has none)
    latent: int = 200  # width of the code z
    keep_prob: float = 0.5  # input keep probability while training
    l2: float = 0.0  # λ in loss + λ Σ‖W‖² (notebook: 0 for the VAE, 0.01 / batch for the DAE)
    anneal_cap: float = 0.2  # cap of the KL weight β (VAE only)
    total_anneal_steps: int = 200_000  # steps over which β grows linearly to 1 before the cap
    learning_rate: float = 1e-3  # Adam step size
    batch_users: int = 500  # users per step
    epochs: int = 200  # training epochs
    seed: int = 98765  # the notebook's random_seed


class _MultAE(nn.Module):
    n_items: int
    config: MultVAEConfig

    def setup(self):
        c = self.config
        init = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.truncated_normal(0.001))
        q_widths = ([c.hidden] if c.variant == "vae" else []) + [2 * c.latent if c.variant == "vae" else c.latent]
        p_widths = ([c.hidden] if c.variant == "vae" else []) + [self.n_items]
        self.q_layers = [nn.Dense(w, **init) for w in q_widths]
        self.p_layers = [nn.Dense(w, **init) for w in p_widths]

    def __call__(self, x, key, *, train: bool):
        """Logits (b, n_items) and the KL term (b,) (zeros for the DAE)."""
        c = self.config
        h = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        if train:
            drop_key, key = jax.random.split(key)
            h = h * jax.random.bernoulli(drop_key, c.keep_prob, h.shape) / c.keep_prob
        for j, layer in enumerate(self.q_layers):
            h = layer(h)
            if j != len(self.q_layers) - 1:
                h = jnp.tanh(h)
        kl = jnp.zeros(x.shape[0])
        if c.variant == "vae":
            mu, logvar = h[:, : c.latent], h[:, c.latent:]
            std = jnp.exp(0.5 * logvar)
            kl = jnp.sum(0.5 * (-logvar + jnp.exp(logvar) + mu**2 - 1.0), axis=1)
            h = mu + std * jax.random.normal(key, mu.shape) if train else mu
        for j, layer in enumerate(self.p_layers):
            h = layer(h)
            if j != len(self.p_layers) - 1:
                h = jnp.tanh(h)
        return h, kl


@dataclasses.dataclass(eq=False)
class MultVAE:
    """A fitted Mult-VAE / Mult-DAE. New users are scored by one forward pass of their clicks."""

    config: MultVAEConfig
    params: dict
    n_items: int
    history: tuple = ()  # validation NDCG@100 per epoch

    @classmethod
    def fit(cls, train: Interactions, *, val_fold_in: Interactions, val_target: Interactions,
            config: MultVAEConfig = MultVAEConfig()) -> "MultVAE":
        """Trains on the binary click rows of `train`'s users; keeps the epoch with the best
        NDCG@100 of the validation users (scored from `val_fold_in`, judged on `val_target`)."""
        if config.variant not in ("vae", "dae"):
            raise ValueError(f"variant must be 'vae' or 'dae', got {config.variant!r}")
        users = np.unique(train.user)
        x_all = seen_mask(users, train, train.n_items).astype(np.float32)
        module = _MultAE(train.n_items, config)
        root = jax.random.key(config.seed)
        params = module.init(jax.random.fold_in(root, 0), x_all[:1], root, train=False)["params"]
        tx = optax.adam(config.learning_rate)
        opt_state = tx.init(params)

        def loss_fn(p, x, key, beta):
            logits, kl = module.apply({"params": p}, x, key, train=True)
            neg_ll = -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * x, axis=1))
            weights = [w for path, w in jax.tree_util.tree_flatten_with_path(p)[0] if "kernel" in str(path[-1])]
            return neg_ll + beta * jnp.mean(kl) + config.l2 * sum(jnp.sum(w**2) for w in weights)

        @jax.jit
        def step(p, state, x, key, beta):
            grads = jax.grad(loss_fn)(p, x, key, beta)
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state

        shuffle = np.random.default_rng(config.seed)
        best, best_ndcg, history, n_steps = params, -np.inf, [], 0
        for _ in range(config.epochs):
            order = shuffle.permutation(users.size)
            for start in range(0, users.size, config.batch_users):
                beta = min(config.anneal_cap, n_steps / config.total_anneal_steps) if config.variant == "vae" else 0.0
                params, opt_state = step(params, opt_state, x_all[order[start:start + config.batch_users]],
                                         jax.random.fold_in(root, n_steps + 1), beta)
                n_steps += 1
            fitted = cls(config, params, train.n_items)
            ndcg = strong_generalization_protocol(fitted.fold_in_scores(val_fold_in), fold_in=val_fold_in,
                                                  target=val_target)["ndcg@100"]
            history.append(ndcg)
            if ndcg > best_ndcg:
                best, best_ndcg = params, ndcg
        return cls(config, best, train.n_items, tuple(history))

    def fold_in_scores(self, history: Interactions, *, batch: int = 500) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(users (b,), logits (b, n_items)) of every user of `history`, from their clicks alone."""
        scorer = _scorer(self.n_items, self.config)
        users = np.unique(history.user)
        for start in range(0, users.size, batch):
            chunk = users[start:start + batch]
            x = seen_mask(chunk, history, history.n_items).astype(np.float32)
            yield chunk, np.asarray(scorer(self.params, x))


@functools.lru_cache(maxsize=16)
def _scorer(n_items: int, config: MultVAEConfig):
    """The jitted evaluation forward pass (no dropout, z = μ) of one architecture."""
    module = _MultAE(n_items, config)
    return jax.jit(lambda params, x: module.apply({"params": params}, x, jax.random.key(0), train=False)[0])
