"""I-AutoRec: early stopping keeps the best validation epoch, predictions stay on the scale."""

import numpy as np

from convae_jax.data import holdout_interactions
from convae_jax.metrics import rmse
from convae_jax.peers.autorec import AutoRecConfig, IAutoRec


def test_autorec_learns_keeps_its_best_epoch_and_reads_the_given_input(small_data):
    fit_part, validation = holdout_interactions(small_data, fraction=0.15, seed=1)
    config = AutoRecConfig(hidden=16, l2=1.0, learning_rate=1e-2, batch_items=16, max_epochs=30, patience=30)
    model = IAutoRec.fit(fit_part, validation=validation, config=config)
    assert len(model.history) == 30
    predicted = model.predict_ratings(validation.user, validation.item)
    # The returned parameters are those of the best epoch.
    np.testing.assert_allclose(rmse(predicted, validation.ratings), min(model.history), rtol=1e-5)
    assert predicted.min() >= 1.0 and predicted.max() <= 5.0
    # Training must move the held-out RMSE well below that of the first epoch (2.79 when written).
    assert min(model.history) < 0.6 * model.history[0]

    reading_all = IAutoRec.fit(fit_part, validation=validation, config=config, input_data=small_data)
    dense = np.zeros((small_data.n_items, small_data.n_users), np.float32)
    dense[small_data.item, small_data.user] = small_data.ratings
    np.testing.assert_array_equal(reading_all.inputs, dense)
