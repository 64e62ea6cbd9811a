"""The ground truth of the theory checks (Ledent et al., TNNLS 2025), built on `convae_jax.data.SyntheticTruth`.

The truth is `P(u, i, c) = P(u) · p_u(i) · p(c | u, i)` with
    p_u(i)      = softmax_i(affinity_scale · P_u·Q_i + pop_i)          (low rank + popularity)
    p(c <= j|u,i) = σ((θ_j − P_u·R_i − quality_i) / rating_noise)      (ordinal, on a related score)
and a log-normal user marginal. Knobs (all `SyntheticTruth` fields): `n_users`, `n_items`,
`n_channels`, `rank`, `popularity_skew`, `affinity_scale`, `rating_correlation`, `rating_noise`,
`user_skew`, `seed`. Draws are i.i.d.; repeats of a cell `(u, i, c)` become its count.

Exact evaluation: `user_batches` walks the per-user conditionals `log p_u(i, c)` (b, n, C) one
batch of users at a time (any size); `joint_array` returns the full `P(u, i, c)` (U, n, C) for
small instances only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from convae_jax.data import Interactions, SyntheticTruth

FULL_ARRAY_LIMIT = 20_000_000  # cells above which `joint_array` refuses (use `user_batches`)


def make_truth(**knobs) -> SyntheticTruth:
    """The truth with `knobs` overriding `SyntheticTruth`'s defaults (the default setting: 600
    users, 400 items, 5 rating levels, rank 4)."""
    return SyntheticTruth(**knobs)


def user_marginal(truth: SyntheticTruth) -> np.ndarray:
    """P(u), (U,)."""
    return np.exp(truth.log_user_marginal)


def user_batches(truth: SyntheticTruth, *, batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(users (b,), log p_u(i, c) (b, n, C)) for every user, `batch` users at a time."""
    for start in range(0, truth.n_users, batch):
        users = np.arange(start, min(start + batch, truth.n_users))
        yield users, truth.log_p_joint(users)


def joint_array(truth: SyntheticTruth) -> np.ndarray:
    """The full joint P(u, i, c), (U, n, C); only for instances under FULL_ARRAY_LIMIT cells."""
    cells = truth.n_users * truth.n_items * truth.n_channels
    if cells > FULL_ARRAY_LIMIT:
        raise ValueError(f"{cells} cells is too many for a full array; walk user_batches instead")
    return np.exp(truth.log_user_marginal[:, None, None] + truth.log_p_joint(np.arange(truth.n_users)))


def conditional_entropy(truth: SyntheticTruth) -> float:
    """H(I, C | U) = −Σ_u P(u) Σ_(i,c) p_u(i,c) log p_u(i,c) in nats: the population risk of the
    truth itself under the joint log-loss, so test NLL minus this is the excess risk E_u KL."""
    weights = user_marginal(truth)
    total = 0.0
    for users, log_p in user_batches(truth):
        per_user = -np.sum(np.exp(log_p) * log_p, axis=(1, 2))
        total += float(weights[users] @ per_user)
    return total


class Samples(NamedTuple):
    """Three independent i.i.d. samples of one (N, seed): `inputs` (S_in, N draws) builds the
    encoder's inputs x_u in split mode, `targets` (S_tgt, N draws) is what the loss scores (and,
    in same-sample mode, also the inputs), `cert` (S_cert, round(0.1·N) draws) picks the epoch and
    α, and carries the held-out certificate."""

    inputs: Interactions
    targets: Interactions
    cert: Interactions


def draw_samples(truth: SyntheticTruth, n: int, *, seed: int, cert_fraction: float = 0.1) -> Samples:
    """`Samples` of sizes (N, N, round(cert_fraction·N)), each from its own stream 3·seed + j, so the
    targets and certificate draws of a seed do not depend on whether the inputs are drawn."""
    return Samples(truth.sample_iid(n, seed=3 * seed), truth.sample_iid(n, seed=3 * seed + 1),
                   truth.sample_iid(max(round(cert_fraction * n), 1), seed=3 * seed + 2))


def empirical_joint(draws: Interactions) -> np.ndarray:
    """Relative frequencies of the cells (U, n, C): the sample's estimate of P(u, i, c)."""
    counts = np.zeros((draws.n_users, draws.n_items, draws.n_channels))
    np.add.at(counts, (draws.user, draws.item, draws.channel), draws.count)
    return counts / counts.sum()
