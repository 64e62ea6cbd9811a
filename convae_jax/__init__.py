"""convae-jax: Conv4Rec, a 1x1-convolutional autoencoder over implicit and explicit feedback."""

from convae_jax.config import Config, default, testing
from convae_jax.predict import FittedModel
from convae_jax.train import fit

__all__ = ["Config", "FittedModel", "default", "fit", "testing"]
