"""The loss control's squared error is EASE's objective: at EASE's weights its gradient vanishes
off the diagonal, and the diagonal never enters either loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.loss_control import LOSSES, _batch_loss
from convae_jax.peers.ease import EASE
from convae_jax.rank import seen_mask


def _clicks(data):
    return jnp.asarray(seen_mask(np.unique(data.user), data, data.n_items).astype(np.float32))


def test_squared_error_is_stationary_at_ease_weights(small_data):
    l2 = 7.0
    clicks = _clicks(small_data)
    params = {"s": jnp.asarray(EASE.fit(small_data, l2=l2).weights), "bias": jnp.zeros(small_data.n_items)}
    keep_all = jnp.ones_like(clicks)
    grads = jax.grad(lambda p: _batch_loss("squared", p, clicks, keep_all, l2 / clicks.shape[0], 0.0))(params)
    off_diagonal = np.asarray(grads["s"])[~np.eye(small_data.n_items, dtype=bool)]
    away = jax.grad(lambda p: _batch_loss("squared", p, clicks, keep_all, l2 / clicks.shape[0], 0.0))(
        {"s": params["s"] * 0.5, "bias": params["bias"]})
    assert np.abs(off_diagonal).max() < 1e-3 * np.abs(np.asarray(away["s"])).max()


@pytest.mark.parametrize("loss", LOSSES)
def test_the_diagonal_does_not_enter_the_data_term(small_data, loss):
    clicks = _clicks(small_data)
    keep = jax.random.bernoulli(jax.random.PRNGKey(0), 0.4, clicks.shape)
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=(small_data.n_items,) * 2).astype(np.float32))
    bias = jnp.zeros(small_data.n_items)
    diagonal = jnp.diag(jnp.asarray(rng.normal(size=small_data.n_items).astype(np.float32)))
    base = _batch_loss(loss, {"s": s, "bias": bias}, clicks, keep, 0.0, 0.6)
    moved = _batch_loss(loss, {"s": s + diagonal, "bias": bias}, clicks, keep, 0.0, 0.6)
    np.testing.assert_allclose(float(moved), float(base), rtol=1e-6)
