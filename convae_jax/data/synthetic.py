"""A seeded synthetic world with a known truth (docs/model.md, "Synthetic truth"): the built-in default dataset and the
ground truth of the theory checks.

Truth: user marginal `P(u)`; per user a low-rank distribution over items
`p_u(i) = softmax_i(scale · P_u·Q_i + pop_i)`; ratings from an ordinal (cumulative-logit) model
`P(c <= j | u, i) = σ((θ_j − s_ui) / noise)` on a score `s_ui = P_u·R_i + quality_i` whose item
factors `R` correlate with `Q`. So `P(u, i, c) = P(u) · p_u(i) · p(c | u, i)`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from convae_jax.data.interactions import Interactions


@dataclasses.dataclass(frozen=True)
class SyntheticTruth:
    n_users: int = 600  # users
    n_items: int = 400  # items
    n_channels: int = 5  # rating levels 1..C
    rank: int = 4  # rank of the user-item factors
    popularity_skew: float = 1.0  # std of the item log-popularity
    affinity_scale: float = 2.0  # sharpness of each user's item distribution
    rating_correlation: float = 0.7  # correlation between consumption and rating item factors
    rating_noise: float = 0.6  # scale of the ordinal link; smaller is more deterministic
    user_skew: float = 0.5  # std of the user log-marginal; 0 is uniform
    seed: int = 0  # seed of the truth (not of the draws)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        r = self.rank
        p = rng.normal(0, 1 / np.sqrt(r), (self.n_users, r))
        q = rng.normal(0, 1, (self.n_items, r))
        q_other = rng.normal(0, 1, (self.n_items, r))
        rho = self.rating_correlation
        values = {
            "user_factors": p,
            "item_factors": q,
            "rating_factors": rho * q + np.sqrt(1 - rho**2) * q_other,
            "item_popularity": rng.normal(0, self.popularity_skew, self.n_items),
            "item_quality": rng.normal(0, 0.5, self.n_items),
            "log_user_marginal": _log_normalise(rng.normal(0, self.user_skew, self.n_users)),
            "thresholds": np.linspace(-1.5, 1.5, self.n_channels - 1),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def channel_values(self) -> tuple[float, ...]:
        return tuple(float(c) for c in range(1, self.n_channels + 1))

    def log_p_items(self, users) -> np.ndarray:
        """log p_u(i), (len(users), n_items)."""
        logits = self.affinity_scale * self.user_factors[users] @ self.item_factors.T + self.item_popularity
        return _log_normalise(logits)

    def log_p_ratings(self, users) -> np.ndarray:
        """log p(c | u, i), (len(users), n_items, C), from the cumulative-logit model."""
        score = self.user_factors[users] @ self.rating_factors.T + self.item_quality
        below = 1 / (1 + np.exp(-(self.thresholds - score[..., None]) / self.rating_noise))
        cumulative = np.concatenate([np.zeros(score.shape + (1,)), below, np.ones(score.shape + (1,))], axis=-1)
        return np.log(np.clip(np.diff(cumulative, axis=-1), 1e-300, None))

    def log_p_joint(self, users) -> np.ndarray:
        """log p_u(i, c), (len(users), n_items, C): the per-user sampling distribution."""
        return self.log_p_items(users)[..., None] + self.log_p_ratings(users)

    def sample_iid(self, n: int, *, seed: int) -> Interactions:
        """N i.i.d. draws of (u, i, c) from P(u) p_u(i) p(c|u,i); repeats become counts."""
        rng = np.random.default_rng(seed)
        users = rng.choice(self.n_users, size=n, p=np.exp(self.log_user_marginal))
        uniq, per_user = np.unique(users, return_counts=True)
        cells = []
        for start in range(0, uniq.size, 256):
            block = uniq[start:start + 256]
            joint = np.exp(self.log_p_joint(block)).reshape(block.size, -1)
            for u, m, probs in zip(block, per_user[start:start + 256], joint):
                cells.append(u * joint.shape[1] + rng.choice(joint.shape[1], size=m, p=probs / probs.sum()))
        flat, count = np.unique(np.concatenate(cells), return_counts=True)
        user, rest = np.divmod(flat, self.n_items * self.n_channels)
        item, channel = np.divmod(rest, self.n_channels)
        return Interactions.build(user, item, channel, count, n_users=self.n_users, n_items=self.n_items,
                                  channel_values=self.channel_values)

    def sample_histories(self, per_user: int, *, seed: int) -> Interactions:
        """Real-data-like draws: each user consumes `per_user` distinct items (sampled without
        replacement from p_u by Gumbel top-k) and rates each once from p(c | u, i)."""
        rng = np.random.default_rng(seed)
        users, items, channels = [], [], []
        for start in range(0, self.n_users, 256):
            block = np.arange(start, min(start + 256, self.n_users))
            keys = self.log_p_items(block) + rng.gumbel(size=(block.size, self.n_items))
            chosen = np.argsort(-keys, axis=1)[:, :per_user]
            probs = np.exp(np.take_along_axis(self.log_p_ratings(block), chosen[..., None], axis=1))
            cdf = np.cumsum(probs, axis=-1)
            draws = (rng.random(chosen.shape + (1,)) > cdf).sum(-1).clip(0, self.n_channels - 1)
            users.append(np.repeat(block, per_user))
            items.append(chosen.ravel())
            channels.append(draws.ravel())
        return Interactions.build(np.concatenate(users), np.concatenate(items), np.concatenate(channels),
                                  n_users=self.n_users, n_items=self.n_items, channel_values=self.channel_values)


def _log_normalise(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
