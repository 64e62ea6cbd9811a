"""Fitting Conv4Rec to i.i.d. synthetic draws for the theory checks, through `convae_jax.train.fit`.

Orientation: user rows. A user row's softmax over all n·C logits *is* the model's p_u(i, c),
so the recovery claim is checked on the quantity the loss trains. (Item rows model the same
joint as P(i)·p_i(u, c), but reading p_u(i, c) off them needs Bayes' rule with an estimated P(i),
which adds an error of its own to the one under test.)

Encoder activation: ReLU, which is 1-Lipschitz, positive-homogeneous and fixes 0 and 1, so the
norm-based bounds (which assume such activations and absorb biases through a constant input
coordinate) apply to the trained network as it is.

Inputs: raw counts by default (the deployed model of the recovery check); the bounds check adds
`model.input_norm=l2` (BOUNDS_OVERRIDES), so that ‖x_u‖ = 1 at every N.

Early stopping: on the held-out draws' joint log-loss −mean log p̂_u(i, c) (λ = 1), not on the
rating metrics `fit` uses by default.
"""

from __future__ import annotations

from convae_jax import config as config_lib
from convae_jax.data import Interactions
from convae_jax.predict import FittedModel
from convae_jax.train import fit
from theory.estimators import ModelEstimator, mean_log_loss

THEORY_OVERRIDES = (
    "model.orientation=user",
    "model.encoder_activation=relu",
    "model.decoder_activation=identity",
    "model.rating_weight=1.0",  # the joint log-likelihood, whose minimiser is the truth
    "train.select_metric=nll",
    "train.validation_fraction=0.0",  # held-out draws are passed explicitly
    "train.progress=False",
)


BOUNDS_OVERRIDES = ("model.input_norm=l2",)  # the bounds read ‖x̃_u‖ ≤ √2


def theory_config(overrides=()) -> config_lib.Config:
    """The default config with the theory settings above, then `overrides`."""
    base = config_lib.default().override(list(THEORY_OVERRIDES) + [
        "model.hidden=(64,)", "model.conv_channels=8", "model.decoder_channels=8", "model.input_dropout=0.2",
        "train.learning_rate=0.003", "train.l2=0.001", "train.batch_rows=64", "train.max_epochs=200",
        "train.patience=10"])
    return base.override(list(overrides))


def joint_nll_metrics(snapshot: FittedModel, heldout: Interactions) -> dict:
    """{'nll': held-out joint log-loss}: the early-stopping score."""
    return {"nll": mean_log_loss(ModelEstimator(snapshot), heldout)}


def fit_to_draws(targets: Interactions, heldout: Interactions, config: config_lib.Config, *,
                 inputs: Interactions | None = None, initial_params=None) -> FittedModel:
    """Conv4Rec fit on `targets`, stopped early on `heldout`. Same-sample mode (`inputs` None):
    its encoder reads `targets` too, as the deployed autoencoder does. Split mode: its encoder
    reads `inputs` (S_in), independent of the scored `targets`. `initial_params`: start from these
    weights instead of the seeded initialisation."""
    return fit(targets, config, validation=heldout, inputs=inputs, validation_metrics=joint_nll_metrics,
               initial_params=initial_params)
