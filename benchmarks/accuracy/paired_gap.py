"""Is a ranking gap of the comparison larger than its noise? Conv4Rec against each peer, user by
user: the paired difference of test NDCG@100 on the same held-out users, with a bootstrap
confidence interval over those users.

The comparison's tables give mean ± std over three seeds, and on Douban that spread (0.008–0.013)
is as large as the gaps it is read against. Pairing each test user's two scores removes the part
of the noise that comes from which users were drawn. Every model is retrained at the point the
committed comparison selected (`benchmarks/results/accuracy/<dataset>.json`), and its per-seed
test NDCG@100 is printed beside the recorded one, so the rerun is checked against the record.

    python -m benchmarks.accuracy.paired_gap [--data-dir ../shared/data] [--datasets douban ml-100k] [--seeds 0 1 2]

More seeds than the comparison's three (their models at the point it selected on seed 0) ask
whether a gap holds beyond the users and trainings those three drew.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.accuracy.control_cli import announce, control_parser, save, write_report
from benchmarks.accuracy.entrants import (
    fit_conv4rec_ratings,
    fit_ease,
    fit_mult,
    implicit_entrants,
)
from benchmarks.accuracy.run import IMPLICIT_TASK, RESULTS_DIR, SEEDS
from benchmarks.accuracy.splits import QUICK_USERS, StrongSplit, dataset_strong_split
from convae_jax.data import load_dataset
from convae_jax.errors import ConvaeError
from convae_jax.evaluate import ranking_per_user
from convae_jax.record import record_line

CONV4REC = "conv4rec user rows (ratings; MAP fold-in)"
PEERS = ("EASE", "Mult-VAE")
BOOTSTRAP_DRAWS = 10_000


def _fit_mult_vae(split: StrongSplit, point: dict, seed: int):
    return fit_mult("vae")(split, point, seed)[0]


# name -> (fit(split, point, seed) -> a model with `fold_in_scores`, whether it folds in ratings)
RANKERS: dict[str, tuple[Callable, bool]] = {
    "EASE": (fit_ease, False), "Mult-VAE": (_fit_mult_vae, False), CONV4REC: (fit_conv4rec_ratings, True)}


def ndcg_per_test_user(model, split: StrongSplit, *, reads_ratings: bool) -> dict[int, float]:
    """{user: NDCG@100} on the split's test users, each scored from its own fold-in (the full
    ratings for Conv4Rec, the clicks for the peers), as the comparison scores them."""
    fold_in = split.test_ratings_fold_in if reads_ratings else split.clicks.test_fold_in
    per_user = ranking_per_user(model.fold_in_scores(fold_in), seen=fold_in, relevant=split.clicks.test_target,
                                ks=(), ndcg_ks=(100,))
    return dict(zip(per_user["user"].tolist(), per_user["ndcg@100"].tolist()))


def paired_differences(ours: dict[int, float], theirs: dict[int, float]) -> np.ndarray:
    """ours − theirs per user, over the users both were scored on (sorted by user)."""
    users = sorted(ours.keys() & theirs.keys())
    if not users:
        raise ConvaeError("paired_differences: the two models share no scored user")
    return np.array([ours[u] - theirs[u] for u in users])


def paired_bootstrap(differences: list[np.ndarray], *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """Mean over seeds of each seed's mean per-user difference, and its 95% percentile interval
    from resampling each seed's users with replacement (seeds are kept apart: each has its own
    users and its own trained models)."""
    rng = np.random.default_rng(seed)
    means = np.zeros(draws)
    for d in differences:
        means += d[rng.integers(0, d.size, size=(draws, d.size))].mean(axis=1) / len(differences)
    low, high = np.percentile(means, [2.5, 97.5])
    per_seed = [float(d.mean()) for d in differences]
    pooled = np.concatenate(differences)
    return {"mean": float(np.mean(per_seed)), "low": float(low), "high": float(high), "per_seed": per_seed,
            "n_users": int(pooled.size), "better": int((pooled > 0).sum()), "tied": int((pooled == 0).sum()),
            "worse": int((pooled < 0).sum())}


def recorded_table(dataset: str, results_dir: Path) -> dict:
    """The committed comparison's strong-generalization records of `dataset`, by model name."""
    path = results_dir / f"{dataset}.json"
    return json.loads(path.read_text())["tables"].get(IMPLICIT_TASK, {}) if path.exists() else {}


def selected_points(dataset: str, table: dict, *, quick: bool) -> dict[str, dict]:
    """The grid point of each model: its selected point in the comparison's `table`, or in quick
    mode the first point of the quick grid (what `python -m benchmarks.accuracy --quick` runs)."""
    names = (CONV4REC, *PEERS)
    if quick:
        grids = {e.name: e.grid for e in implicit_entrants(quick=True)}
        return {name: dict(grids[name][0]) for name in names}
    missing = [name for name in names if name not in table]
    if missing:
        raise ConvaeError(f"{dataset}.json: no recorded {IMPLICIT_TASK} result for {missing}; "
                          f"run `python -m benchmarks.accuracy --dataset {dataset}` first")
    return {name: table[name]["selected_point"] for name in names}


def recorded_test(table: dict, name: str, seed: int) -> float | None:
    """The comparison's test NDCG@100 of `name` at `seed`, if it was recorded."""
    runs = table.get(name, {}).get("runs", [])
    return next((r["test"]["ndcg@100"] for r in runs if r["selected"] and r["seed"] == seed), None)


def run_dataset(dataset: str, data_dir: Path, results_dir: Path, *, quick: bool, seeds: list[int] | None = None,
                log=print) -> dict:
    """Paired gaps on `seeds` (default: the comparison's, the first alone in quick mode)."""
    data = load_dataset(dataset, data_dir / dataset).train
    table = {} if quick else recorded_table(dataset, results_dir)
    points = selected_points(dataset, table, quick=quick)
    seeds = list(seeds or (SEEDS[:1] if quick else SEEDS))
    scores = {name: [] for name in points}
    reruns = {name: [] for name in points}
    for seed in seeds:
        split = dataset_strong_split(dataset, data, seed=seed, quick=quick)
        for name, point in points.items():
            fit_fn, reads_ratings = RANKERS[name]
            per_user = ndcg_per_test_user(fit_fn(split, point, seed), split, reads_ratings=reads_ratings)
            scores[name].append(per_user)
            recorded = recorded_test(table, name, seed)
            reruns[name].append({"seed": seed, "ndcg@100": float(np.mean(list(per_user.values()))), "recorded": recorded})
            log(f"{dataset} seed {seed} {name}: test NDCG@100 {reruns[name][-1]['ndcg@100']:.4f} "
                f"(recorded {'–' if recorded is None else f'{recorded:.4f}'})")
    gaps = {peer: paired_bootstrap([paired_differences(ours, theirs) for ours, theirs in zip(scores[CONV4REC], scores[peer])])
            for peer in PEERS}
    return {"seeds": seeds, "points": points, "reruns": reruns, "gaps": gaps}


def markdown(doc: dict) -> str:
    lines = ["# Paired gaps: Conv4Rec against each peer, user by user (strong generalization, test NDCG@100)", "",
             f"Conv4Rec is `{CONV4REC}`. Δ = Conv4Rec − peer per test user; the mean over a run's seeds of each "
             f"seed's mean Δ, with a 95% bootstrap interval ({BOOTSTRAP_DRAWS} draws of each seed's users: it covers which "
             "users were drawn, not the training's own randomness, which a retraining can show). "
             + (f"Quick mode: the quick grids' first points on {QUICK_USERS} + {QUICK_USERS} held-out users. "
                if doc["quick"] else "Each model was retrained at the comparison's selected point. ")
             + "Machine and command of each dataset's run: "
             + "; ".join(f"{dataset}: {record_line(entry['environment'])}, `{entry['environment']['command']}`"
                         for dataset, entry in doc["datasets"].items()) + ".", "",
             "| dataset | seeds | peer | mean Δ | 95% interval | per-seed Δ | users better / tied / worse |",
             "|---|---|---|---|---|---|---|"]
    for dataset, entry in doc["datasets"].items():
        seeds = ", ".join(map(str, entry["seeds"]))
        for peer, gap in entry["gaps"].items():
            per_seed = ", ".join(f"{d:+.4f}" for d in gap["per_seed"])
            lines.append(f"| {dataset} | {seeds} | {peer} | {gap['mean']:+.4f} | [{gap['low']:+.4f}, {gap['high']:+.4f}] | "
                         f"{per_seed} | {gap['better']} / {gap['tied']} / {gap['worse']} |")
    lines += ["", "Reruns against the record (test NDCG@100 per seed, rerun / recorded):", ""]
    for dataset, entry in doc["datasets"].items():
        for name, runs in entry["reruns"].items():
            cells = ", ".join(f"{r['ndcg@100']:.4f} / {'–' if r['recorded'] is None else format(r['recorded'], '.4f')}"
                              for r in runs)
            lines.append(f"- {dataset}, {name}: {cells}")
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    """One interval per (dataset, peer): where Conv4Rec stands against zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{dataset} vs {peer} ({len(entry['seeds'])} seeds)", gap)
            for dataset, entry in doc["datasets"].items() for peer, gap in entry["gaps"].items()]
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(rows) + 1.2))
    for y, (_, gap) in enumerate(rows):
        ax.errorbar([gap["mean"]], [y], xerr=[[gap["mean"] - gap["low"]], [gap["high"] - gap["mean"]]], fmt="o",
                    color="tab:blue", capsize=3)
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlabel("Conv4Rec − peer, test NDCG@100\n(mean over seeds, 95% interval over users)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = control_parser(__doc__, datasets=["douban", "ml-100k"],
                            outputs="paired-gap.{json,md,png}; datasets already there are kept unless rerun")
    parser.add_argument("--results", default=str(RESULTS_DIR), help="folder of the comparison's <dataset>.json")
    parser.add_argument("--quick", action="store_true",
                        help=f"one seed, {QUICK_USERS} + {QUICK_USERS} held-out users, the quick grids' points")
    parser.add_argument("--seeds", nargs="+", type=int, help=f"splits and trainings to pair (default {list(SEEDS)}; "
                        "quick: the first)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        write_report(out, "paired-gap", markdown=markdown, plot=plot)
        return
    env = announce("benchmarks.accuracy.paired_gap", argv)
    path = out / "paired-gap.json"
    doc = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
    if doc.get("quick", args.quick) != args.quick:
        doc = {"datasets": {}}  # quick and full runs never share a table
    doc["quick"] = args.quick
    for dataset in args.datasets:
        entry = run_dataset(dataset, Path(args.data_dir), Path(args.results), quick=args.quick, seeds=args.seeds,
                            log=lambda line: print(line, flush=True))
        doc["datasets"][dataset] = entry | {"environment": env}
    save(out, "paired-gap", doc, markdown=markdown, plot=plot)


if __name__ == "__main__":
    main()
