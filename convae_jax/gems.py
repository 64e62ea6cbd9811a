"""Gems on random exposure (SPEC §5): rating metrics and gem discovery on Coat, and the gem figure.

Coat (Schnabel et al. 2016) trains on ratings users chose to give and tests on 16 items per user
drawn uniformly at random, so its test set measures what a user thinks of items they were merely
shown, including those they would never have picked: the setting the paper's gems claim is about.

Run: `python -m convae_jax.gems --data-dir ../shared/data/coat --out benchmarks/results/gems`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from convae_jax import config as config_lib
from convae_jax.data.interactions import Interactions
from convae_jax.data.loaders import load_dataset
from convae_jax.machine import cpu_model
from convae_jax.metrics import mae, rating_metrics, rmse, top_k
from convae_jax.peers.item_mean import ItemMeanShrunk
from convae_jax.peers.mf import select_biased_mf
from convae_jax.predict import FittedModel
from convae_jax.rank import below_consume_quantile, p_rating_at_least, ranking_scores, seen_mask
from convae_jax.train import fit

KS = (3, 5, 10)
TRADE_OFF_GRID = tuple((q, t) for q in (0.25, 0.5, 0.75, 1.0) for t in (0.0, 1.0, 3.0))  # (gem_quantile, gem_tilt)


# --- rating prediction on the randomly exposed test set ----------------------------------------------


def rating_report(model, test: Interactions) -> dict:
    """RMSE/MAE of the model's point prediction (`predict_ratings` where it has one, else the
    expected rating), and NLL, accuracy and top-label ECE of its rating distribution."""
    result = rating_metrics(model.rating_log_probs(test.user, test.item), test.channel, test.channel_values)
    if hasattr(model, "predict_ratings"):
        predicted = model.predict_ratings(test.user, test.item)
        result |= {"rmse": rmse(predicted, test.ratings), "mae": mae(predicted, test.ratings)}
    return result


# --- gem discovery ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GemTask:
    """Per-user masks (b, n) over the catalogue for gem discovery among randomly exposed items.

    candidates: test items the user had not rated in training (the rankings are compared on these
    alone: the other items have no rating, and exposure was random, so ranking the candidates is an
    unbiased sample of ranking the catalogue). liked: candidates rated >= τ. `targets` maps a
    definition of "would not consume naturally" to liked candidates that satisfy it.
    """

    candidates: np.ndarray
    liked: np.ndarray
    targets: dict


def gem_task(log_p_consume, seen, test_ratings, *, threshold: float, item_popularity) -> GemTask:
    """Targets = liked candidates in the bottom half (`below_consume_quantile` at 0.5, over the
    user's unseen items) of
    - "model": the model's own `consume` ranking (the issue's definition; the `gems` ranking with
      gem_quantile = 0.5 cuts at the same median, so against `enjoy` it starts with an advantage);
    - "popularity": training popularity, a definition no Conv4Rec score enters.
    test_ratings (b, n): the test rating, NaN where the item was not in the user's test set."""
    candidates = ~np.isnan(test_ratings) & ~seen
    with np.errstate(invalid="ignore"):
        liked = candidates & (test_ratings >= threshold)
    log_popularity = np.broadcast_to(np.log1p(np.asarray(item_popularity, np.float64)), seen.shape)
    return GemTask(candidates, liked, {
        "model": liked & below_consume_quantile(log_p_consume, seen, 0.5),
        "popularity": liked & below_consume_quantile(log_popularity, seen, 0.5),
    })


def precision_recall_among(scores, candidates, targets, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user precision@K = hits / K and recall@K = hits / |targets| when only the candidates
    are ranked (others −inf), hits counting targets with a finite score in the top K (a ranking
    that scores an item −inf does not recommend it). NaN for users without targets."""
    ranked = np.where(candidates, scores, -np.inf)
    items, item_scores = top_k(ranked, k)
    hits = (np.take_along_axis(targets, items, axis=1) & np.isfinite(item_scores)).sum(axis=1)
    n_targets = targets.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_targets > 0, hits / k, np.nan), np.where(n_targets > 0, hits / n_targets, np.nan)


def random_precision_recall(candidates, targets, k: int, *, n_targets=None) -> tuple[np.ndarray, np.ndarray]:
    """The exact expectation of `precision_recall_among` under a uniformly random order of the
    candidates: E[hits] = min(K, m) · |targets ∩ candidates| / m for m candidates. Recall divides
    by `n_targets` (default |targets|, as `precision_recall_among` does); users with none get NaN."""
    m, reachable = candidates.sum(axis=1), (targets & candidates).sum(axis=1)
    n_targets = targets.sum(axis=1) if n_targets is None else np.asarray(n_targets)
    with np.errstate(invalid="ignore", divide="ignore"):
        hits = np.where(m > 0, np.minimum(k, m) * reachable / np.maximum(m, 1), 0.0)
        return np.where(n_targets > 0, hits / k, np.nan), np.where(n_targets > 0, hits / n_targets, np.nan)


def gem_rankings(log_p_consume, log_p_rating, seen, *, channel_values, threshold: float) -> dict:
    """The rankings compared, name -> scores (b, n): consume, enjoy, gems (default knobs),
    least_consumed (ascending P(consume): the bottom half without any enjoyment signal), and the
    trade-off grid of gems knobs, named gems_q{quantile}_t{tilt}."""
    common = dict(channel_values=channel_values, threshold=threshold)
    rankings = {mode: ranking_scores(log_p_consume, log_p_rating, seen, mode=mode, **common)
                for mode in ("consume", "enjoy", "gems")}
    rankings["least_consumed"] = np.where(seen, -np.inf, -np.asarray(log_p_consume, np.float64))
    for quantile, tilt in TRADE_OFF_GRID:
        rankings[f"gems_q{quantile:g}_t{tilt:g}"] = ranking_scores(
            log_p_consume, log_p_rating, seen, mode="gems", gem_quantile=quantile, gem_tilt=tilt, **common)
    return rankings


def gem_discovery(model: FittedModel, test: Interactions, *, ks=KS, enjoyment_model: FittedModel | None = None) -> dict:
    """Precision and recall@K of every ranking of `gem_rankings`, of a random order of the
    candidates (`random`) and of a random order of the candidates below the median of P(consume)
    (`random_below_median`: what the cut of `gems` buys without any enjoyment signal), for each
    target definition of `gem_task` and for all liked candidates ("liked"); means over users with
    at least one target. With `enjoyment_model` (e.g. the explicit-only variant), also
    `enjoy_other` and `gems_other`: P(rating | consumed) from that model, P(consume) from `model`."""
    log_c, log_r, seen, task = _score_and_task(model, test)
    train = model.train
    common = dict(channel_values=train.channel_values, threshold=model.config.eval.rating_threshold)
    rankings = gem_rankings(log_c, log_r, seen, **common)
    if enjoyment_model is not None:
        other_log_r = _all_scores(enjoyment_model, np.arange(train.n_users))[1]
        rankings |= {f"{mode}_other": ranking_scores(log_c, other_log_r, seen, mode=mode, **common)
                     for mode in ("enjoy", "gems")}
    below_median = below_consume_quantile(log_c, seen, 0.5)
    result = {}
    for name, targets in {**task.targets, "liked": task.liked}.items():
        per = {"n_users": int(targets.any(axis=1).sum()), "n_targets": int(targets.sum())}
        for k in ks:
            per[f"random@{k}"] = _means(*random_precision_recall(task.candidates, targets, k))
            per[f"random_below_median@{k}"] = _means(*random_precision_recall(
                task.candidates & below_median, targets & below_median, k, n_targets=targets.sum(axis=1)))
            for ranking, scores in rankings.items():
                per[f"{ranking}@{k}"] = _means(*precision_recall_among(scores, task.candidates, targets, k))
        result[name] = per
    return result


def _score_and_task(model: FittedModel, test: Interactions):
    """(log P(consume) (U, n), log P(rating) (U, n, C), seen (U, n), GemTask) for every user."""
    train = model.train
    users = np.arange(train.n_users)
    log_c, log_r = _all_scores(model, users)
    seen = seen_mask(users, train, train.n_items)
    task = gem_task(log_c, seen, _dense_ratings(test, users), threshold=model.config.eval.rating_threshold,
                    item_popularity=np.bincount(train.item, weights=train.count, minlength=train.n_items))
    return log_c, log_r, seen, task


# --- the figure --------------------------------------------------------------------------------------------


def plot_gem_scatter(model: FittedModel, test: Interactions, user: int, path, *, k: int = 5) -> Path:
    """Scatter, over the user's unseen items, of P(consume) (log scale) against P(rating >= τ |
    consumed); randomly exposed test items coloured by their test rating; the median cut of
    P(consume) and the `gems` top-k among the test items marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, tau = model.train, model.config.eval.rating_threshold
    log_c, log_r = _all_scores(model, np.array([user]))
    seen = seen_mask([user], train, train.n_items)
    ratings = _dense_ratings(test, np.array([user]))
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
    *_, task = _score_and_task(model, test)
    test_ratings = _dense_ratings(test, np.arange(model.train.n_users))
    with np.errstate(invalid="ignore"):
        disliked = (task.candidates & (test_ratings <= 2)).sum(axis=1)
    targets = task.targets["model"].sum(axis=1)
    return max(range(targets.size), key=lambda u: (min(targets[u], disliked[u]), targets[u], -u))


# --- the whole evaluation ----------------------------------------------------------------------------------


def evaluate_coat(data_dir, out_dir, *, seeds=(0, 1, 2), config: config_lib.Config | None = None) -> dict:
    """Trains Conv4Rec, its explicit-only variant (model.implicit_weight = 0), biased MF and the
    item mean on Coat's self-selected ratings, once per seed (model seed; Coat's split is fixed);
    scores rating metrics and gem discovery on the randomly exposed test set; writes gems.json,
    gems.md and gem_scatter.png (seed 0) under `out_dir`."""
    config = (config or config_lib.default()).override(["train.progress=False"])
    dataset = load_dataset("coat", data_dir)
    train, test = dataset.train, dataset.test
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:
        seeded = config.override([f"train.seed={seed}"])
        started = time.perf_counter()
        joint = fit(train, seeded)
        explicit_only = fit(train, seeded.override(["model.implicit_weight=0.0"]))
        mf, mf_selection = select_biased_mf(train, seed=seed)
        ratings = {"conv4rec": rating_report(joint, test), "conv4rec_explicit_only": rating_report(explicit_only, test),
                   "biased_mf": rating_report(mf, test), "item_mean": rating_report(ItemMeanShrunk.fit(train), test)}
        runs.append({"seed": seed, "ratings": ratings, "gems": gem_discovery(joint, test, enjoyment_model=explicit_only),
                     "selected_epochs": {"conv4rec": joint.selected_epoch,
                                         "conv4rec_explicit_only": explicit_only.selected_epoch},
                     "biased_mf_selection": mf_selection, "seconds": time.perf_counter() - started})
        if seed == seeds[0]:
            user = figure_user(joint, test)
            plot_gem_scatter(joint, test, user, out_dir / "gem_scatter.png")
            figure = {"seed": seed, "user": train.user_ids[user].tolist()}
    result = {"command": f"python -m convae_jax.gems --data-dir {data_dir} --out {out_dir} --seeds {' '.join(map(str, seeds))}",
              "machine": _machine(), "dataset": {"name": "coat", "train": train.nnz, "test": test.nnz,
                                                 "users": train.n_users, "items": train.n_items},
              "config": config.to_dict(), "seeds": list(seeds), "figure": figure, "runs": runs,
              "summary": summarise(runs)}
    (out_dir / "gems.json").write_text(json.dumps(result, indent=2))
    (out_dir / "gems.md").write_text(markdown_report(result))
    return result


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every number, and the K=5 verdicts: does `gems`
    beat `random` and `enjoy` on every seed, by more than twice the larger seed std?"""
    def spread(values):
        values = np.asarray(values, np.float64)
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                "per_seed": values.tolist()}

    ratings = {m: {k: spread([r["ratings"][m][k] for r in runs]) for k in runs[0]["ratings"][m] if k != "n"}
               for m in runs[0]["ratings"]}
    gems = {}
    for target, per in runs[0]["gems"].items():
        gems[target] = {name: {metric: spread([r["gems"][target][name][metric] for r in runs]) for metric in value}
                        if isinstance(value, dict) else spread([r["gems"][target][name] for r in runs])
                        for name, value in per.items()}
    verdicts = {}
    for target in ("model", "popularity"):
        for rival in ("random", "enjoy", "random_below_median", "least_consumed", "gems_other"):
            ours = np.array([r["gems"][target]["gems@5"]["precision"] for r in runs])
            theirs = np.array([r["gems"][target][f"{rival}@5"]["precision"] for r in runs])
            noise = max(gems[target]["gems@5"]["precision"]["std"], gems[target][f"{rival}@5"]["precision"]["std"])
            verdicts[f"{target}: gems vs {rival} @5"] = {
                "difference_per_seed": (ours - theirs).tolist(),
                "beyond_seed_noise": bool(np.all(ours > theirs) and (ours - theirs).mean() > 2 * noise)}
    return {"ratings": ratings, "gems": gems, "verdicts": verdicts}


def markdown_report(result: dict) -> str:
    s = result["summary"]
    fmt = lambda cell: f"{cell['mean']:.3f} ± {cell['std']:.3f}"
    lines = [f"# Gems on Coat (random-exposure test set), {len(result['seeds'])} seeds", "",
             f"`{result['command']}`  ", f"{result['machine']['cpu']} ({result['machine']['cores']} cores); "
             + ", ".join(f"{k} {v}" for k, v in result["machine"]["versions"].items()), "",
             "## Rating prediction on the randomly exposed test ratings (mean ± std over seeds)", "",
             "| model | RMSE | MAE | NLL | accuracy | ECE |", "| --- | --- | --- | --- | --- | --- |"]
    for model, cells in s["ratings"].items():
        lines.append(f"| {model} | " + " | ".join(fmt(cells[k]) for k in ("rmse", "mae", "nll", "accuracy", "ece")) + " |")
    for target, title in (("model", "liked (≥ 4) test items in the bottom half of Conv4Rec's `consume` ranking"),
                          ("popularity", "liked (≥ 4) test items in the bottom half of training popularity"),
                          ("liked", "all liked (≥ 4) test items")):
        per = s["gems"][target]
        lines += ["", f"## Gem discovery, targets: {title}", "",
                  f"{per['n_targets']['mean']:.0f} targets over {per['n_users']['mean']:.0f} users (mean over seeds); "
                  "each user's unseen test items ranked.", "",
                  "| ranking | " + " | ".join(f"P@{k} | R@{k}" for k in KS) + " |",
                  "| --- |" + " --- | --- |" * len(KS)]
        for ranking in ("random", "random_below_median", "consume", "enjoy", "least_consumed", "gems",
                        "enjoy_other", "gems_other"):
            lines.append(f"| {ranking} | " + " | ".join(f"{fmt(per[f'{ranking}@{k}']['precision'])} | "
                                                       f"{fmt(per[f'{ranking}@{k}']['recall'])}" for k in KS) + " |")
    lines += ["", "`enjoy_other`, `gems_other`: P(rating ≥ 4 | consumed) from the explicit-only variant, "
              "P(consume) from Conv4Rec (the cut of `gems_other` is Conv4Rec's)."]
    lines += ["", "## Trade-off knobs of `gems` at K = 5 (precision; q = gem_quantile, t = gem_tilt)", "",
              "| q | t | model targets | popularity targets | all liked |", "| --- | --- | --- | --- | --- |"]
    for quantile, tilt in TRADE_OFF_GRID:
        name = f"gems_q{quantile:g}_t{tilt:g}@5"
        lines.append(f"| {quantile:g} | {tilt:g} | " + " | ".join(fmt(s["gems"][t][name]["precision"])
                                                         for t in ("model", "popularity", "liked")) + " |")
    lines += ["", "## Verdicts (K = 5; beyond seed noise = better on every seed by more than 2 seed std)", ""]
    for name, verdict in s["verdicts"].items():
        diffs = ", ".join(f"{d:+.3f}" for d in verdict["difference_per_seed"])
        lines.append(f"- {name}: differences {diffs}; beyond seed noise: {verdict['beyond_seed_noise']}")
    lines += ["", f"Figure: `gem_scatter.png` (seed {result['figure']['seed']}, user {result['figure']['user']}).", ""]
    return "\n".join(lines)


# --- helpers -------------------------------------------------------------------------------------------------


def _all_scores(model: FittedModel, users) -> tuple[np.ndarray, np.ndarray]:
    parts = list(model.score_users(users))
    return np.concatenate([p.log_p_consume for p in parts]), np.concatenate([p.log_p_rating for p in parts])


def _dense_ratings(test: Interactions, users) -> np.ndarray:
    """(len(users), n_items) test ratings of `users`, NaN where absent."""
    out = np.full((len(users), test.n_items), np.nan)
    row_of = np.full(test.n_users, -1)
    row_of[users] = np.arange(len(users))
    keep = row_of[test.user] >= 0
    out[row_of[test.user[keep]], test.item[keep]] = test.ratings[keep]
    return out


def _means(precision, recall) -> dict:
    return {"precision": float(np.nanmean(precision)), "recall": float(np.nanmean(recall))}


def _machine() -> dict:
    import jax

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "versions": {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convae_jax.gems", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding Coat's train.ascii and test.ascii")
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    result = evaluate_coat(args.data_dir, args.out, seeds=tuple(args.seeds),
                           config=config_lib.default().override(args.overrides))
    print(markdown_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
