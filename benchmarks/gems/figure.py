"""The gem figure: one Coat user's unseen items, P(consume) against P(rating ≥ τ | consumed), the
randomly exposed ones coloured by their test rating and the `gems` picks circled."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.gems.discovery import all_scores, dense_ratings, score_and_task
from convae_jax.data.interactions import Interactions
from convae_jax.metrics import top_k
from convae_jax.predict import FittedModel
from convae_jax.rank import (
    below_consume_quantile,
    p_rating_at_least,
    ranking_scores,
    seen_mask,
)


def plot_gem_scatter(model: FittedModel, test: Interactions, user: int, path, *, k: int = 5) -> Path:
    """Scatter, over the user's unseen items, of P(consume) (log scale) against P(rating >= τ |
    consumed); randomly exposed test items coloured by their test rating; the median cut of
    P(consume) and the `gems` top-k among the test items marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, tau = model.train, model.config.eval.rating_threshold
    log_c, log_r = all_scores(model, np.array([user]))
    seen = seen_mask([user], train, train.n_items)
    ratings = dense_ratings(test, np.array([user]))
    enjoy = p_rating_at_least(log_r, train.channel_values, tau)[0]
    p_consume, unseen = np.exp(log_c[0]), ~seen[0]
    exposed = unseen & ~np.isnan(ratings[0])
    gems = ranking_scores(log_c, log_r, seen, mode="gems", channel_values=train.channel_values, threshold=tau)
    picks = top_k(np.where(exposed[None], gems, -np.inf), k)
    picks = picks[0][0][np.isfinite(picks[1][0])]
    kept = below_consume_quantile(log_c, seen, 0.5)[0]
    cut = np.exp((log_c[0][kept].max() + log_c[0][unseen & ~kept].min()) / 2)

    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=130)
    ax.scatter(p_consume[unseen & ~exposed], enjoy[unseen & ~exposed], s=10, c="0.75", label="unseen, not exposed")
    points = ax.scatter(p_consume[exposed], enjoy[exposed], s=60, c=ratings[0][exposed], cmap="RdYlGn", vmin=1, vmax=5,
                        edgecolors="k", linewidths=0.5, zorder=3)
    # A neutral legend marker: each test item's colour is its rating.
    ax.scatter([], [], s=60, c="0.5", edgecolors="k", linewidths=0.5, label="randomly exposed (colour: test rating)")
    ax.scatter(p_consume[picks], enjoy[picks], s=190, facecolors="none", edgecolors="tab:blue", linewidths=1.8,
               zorder=4, label=f"gems top-{k} among exposed")
    ax.axvline(cut, color="tab:blue", ls="--", lw=1, label="median P(consume): gems take the left side")
    ax.set_xscale("log")
    ax.set_xlabel("P(consume)  (model's probability the user picks the item)")
    ax.set_ylabel(f"P(rating ≥ {tau:g} | consumed)")
    ax.set_title(f"Coat user {train.user_ids[user]}: unseen items")
    fig.colorbar(points, ax=ax, label="test rating (random exposure)")
    ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def figure_user(model: FittedModel, test: Interactions) -> int:
    """A user worth looking at: the most "model" gem targets and disliked (<= 2) test items at
    once, i.e. the largest min(#targets, #disliked candidates); ties go to more targets, then to
    the lowest index."""
    *_, task = score_and_task(model, test)
    test_ratings = dense_ratings(test, np.arange(model.train.n_users))
    with np.errstate(invalid="ignore"):
        disliked = (task.candidates & (test_ratings <= 2)).sum(axis=1)
    targets = task.targets["model"].sum(axis=1)
    return max(range(targets.size), key=lambda u: (min(targets[u], disliked[u]), targets[u], -u))
