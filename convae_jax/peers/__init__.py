"""Peer models, each scored through the same metric and protocol code as Conv4Rec."""

from convae_jax.peers.biases import UserItemBiases
from convae_jax.peers.popularity import Popularity

__all__ = ["Popularity", "UserItemBiases"]
