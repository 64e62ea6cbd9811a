"""Mult-VAE / Mult-DAE: shapes, best-epoch selection on validation NDCG@100."""

import numpy as np
import pytest

from convae_jax.data import holdout_users
from convae_jax.evaluate import strong_generalization_protocol
from convae_jax.peers.mult_vae import MultVAE, MultVAEConfig


@pytest.fixture(scope="module")
def split(small_data):
    return holdout_users(small_data, n_val_users=10, n_test_users=10, seed=0)


@pytest.mark.parametrize("variant", ["vae", "dae"])
def test_mult_models_keep_the_best_validation_epoch(split, variant):
    config = MultVAEConfig(variant=variant, hidden=16, latent=8, batch_users=16, epochs=3, learning_rate=1e-2)
    model = MultVAE.fit(split.train, val_fold_in=split.val_fold_in, val_target=split.val_target, config=config)
    assert len(model.history) == 3
    ndcg = strong_generalization_protocol(model.fold_in_scores(split.val_fold_in), fold_in=split.val_fold_in,
                                          target=split.val_target)["ndcg@100"]
    np.testing.assert_allclose(ndcg, max(model.history), rtol=1e-6)
    users, scores = next(model.fold_in_scores(split.test_fold_in))
    np.testing.assert_array_equal(users, np.unique(split.test_fold_in.user))
    assert scores.shape == (users.size, split.train.n_items) and np.all(np.isfinite(scores))


def test_unknown_variant_is_refused(split):
    with pytest.raises(ValueError, match="variant"):
        MultVAE.fit(split.train, val_fold_in=split.val_fold_in, val_target=split.val_target,
                    config=MultVAEConfig(variant="gan"))
