"""Why an item sits where it does for a user: the numbers behind the rankings, and their bar chart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from convae_jax.io import load_model
from convae_jax.mesh_scoring import on_devices
from convae_jax.predict import FittedModel
from convae_jax.rank import consume_percentile, p_rating_at_least, seen_mask


@dataclasses.dataclass(frozen=True)
class ItemExplanation:
    """One (user, item) pair as the model sees it (docs/model.md, "Predictions").

    consume_percentile: share (%) of the user's unseen items whose P(consume) is at most this
    item's (`rank.consume_percentile`; 100 = the user's likeliest pick); NaN for a seen item.
    """

    user: object  # raw user id
    item: object  # raw item id
    seen: bool  # the user has the item in the training data
    p_consume: float  # P(i | u), a probability over the whole catalogue
    consume_percentile: float  # in [0, 100]
    rating_values: tuple[float, ...]  # the levels v_1 < … < v_C
    p_rating: tuple[float, ...]  # P(rating = v_c | u, i consumed), sums to 1
    threshold: float  # τ
    p_rating_at_least: float  # P(rating >= τ | u, i consumed)
    expected_rating: float  # Σ_c v_c P(rating = v_c | u, i consumed)

    def why(self, mode: str, *, gem_quantile: float = 0.5) -> str:
        """One line saying why a ranking in `mode` (consume, enjoy, gems) puts the item high."""
        tau = f"{self.threshold:g}"
        place = "already seen" if self.seen else f"percentile {self.consume_percentile:.0f} of unseen items"
        liking = f"P(rating >= {tau} | consumed) = {self.p_rating_at_least:.2f}, expected rating {self.expected_rating:.2f}"
        if mode == "consume":
            return f"likely pick: P(consume) = {self.p_consume:.3g}, {place}"
        if mode == "enjoy":
            return f"likely liked once consumed: {liking}"
        cut = f", below the {100 * gem_quantile:.0f}% cut" if gem_quantile < 1.0 else ""
        return (f"unlikely to be found alone (P(consume) = {self.p_consume:.3g}, {place}{cut}) "
                f"but likely liked once shown: {liking}")

    def summary(self) -> dict:
        """The numbers as a flat, JSON-ready dict."""
        out = dataclasses.asdict(self)
        out.pop("rating_values"), out.pop("p_rating")
        out |= {f"p_rating_{v:g}": p for v, p in zip(self.rating_values, self.p_rating)}
        return out


def explain_scores(log_p_consume, log_p_rating, seen, item: int, *, channel_values, threshold: float,
                   user_id=None, item_id=None) -> ItemExplanation:
    """The explanation of `item` from one user's scores: log P(consume) (n,), log P(rating) (n, C)
    and the seen mask (n,)."""
    log_p_consume, seen = np.asarray(log_p_consume), np.asarray(seen, bool)
    log_rating = np.asarray(log_p_rating[item], np.float64)
    p_rating = np.exp(log_rating)
    return ItemExplanation(
        user=user_id, item=item_id if item_id is not None else item, seen=bool(seen[item]),
        p_consume=float(np.exp(log_p_consume[item])),
        consume_percentile=float(100.0 * consume_percentile(log_p_consume[None], seen[None])[0, item]),
        rating_values=tuple(float(v) for v in channel_values), p_rating=tuple(float(p) for p in p_rating),
        threshold=float(threshold), p_rating_at_least=float(p_rating_at_least(log_rating, channel_values, threshold)),
        expected_rating=float(p_rating @ np.asarray(channel_values, np.float64)))


def explain(model: FittedModel, user: int, item: int) -> ItemExplanation:
    """The explanation of item index `item` for user index `user` of a fitted model."""
    train = model.train
    scores = next(model.score_users([user], batch=1))
    seen = seen_mask([user], train, train.n_items)[0]
    return explain_scores(scores.log_p_consume[0], scores.log_p_rating[0], seen, item,
                          channel_values=train.channel_values, threshold=model.config.eval.rating_threshold,
                          user_id=train.user_ids[user].tolist(), item_id=train.item_ids[item].tolist())


def explain_run(workdir, *, user, item, png=None) -> ItemExplanation:
    """`explain` for raw user and item ids of a saved run; writes the bar chart to `png` if given."""
    model = on_devices(load_model(Path(workdir) / "model"))
    explanation = explain(model, model.train.user_index(user), model.train.item_index(item))
    if png is not None:
        plot_explanation(explanation, png)
    return explanation


def plot_explanation(explanation: ItemExplanation, path) -> Path:
    """A two-panel PNG: P(rating = v | consumed) per level (levels >= τ highlighted, expected rating
    marked), and P(consume) as a percentile bar among the user's unseen items."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = explanation
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.6), dpi=130, gridspec_kw={"width_ratios": [3, 1.2]})
    colours = ["tab:green" if v >= e.threshold else "tab:gray" for v in e.rating_values]
    width = 0.8 * min(np.diff(e.rating_values), default=1.0)
    bars = left.bar(e.rating_values, e.p_rating, width=width, color=colours)
    left.bar_label(bars, labels=[f"{p:.2f}" for p in e.p_rating], fontsize=8)
    left.axvline(e.expected_rating, color="k", ls="--", lw=1, label=f"expected rating {e.expected_rating:.2f}")
    left.set_xticks(e.rating_values)
    left.set_ylim(0, max(e.p_rating) * 1.2)
    left.set_xlabel("rating v")
    left.set_ylabel("P(rating = v | consumed)")
    left.set_title(f"P(rating ≥ {e.threshold:g} | consumed) = {e.p_rating_at_least:.2f} (green)", fontsize=9)
    left.legend(fontsize=8, loc="upper left")
    if e.seen:
        right.text(0.5, 0.5, "already seen", ha="center", va="center")
    else:
        right.bar([0], [e.consume_percentile], color="tab:blue", width=0.6)
        right.axhline(50, color="k", ls=":", lw=1)
        right.text(0.58, 51, "median: gems cut", ha="right", va="bottom", fontsize=7)
        right.text(0, e.consume_percentile + 2, f"{e.consume_percentile:.0f}", ha="center", fontsize=9)
    right.set_xlim(-0.6, 0.6)
    right.set_ylim(0, 110)
    right.set_xticks([])
    right.set_ylabel("percentile among unseen items")
    right.set_title(f"P(consume) = {e.p_consume:.3g}", fontsize=9)
    fig.suptitle(f"user {e.user}, item {e.item}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
