"""How much rank does each catalogue need? The rank-r ridge (`rank_ridge.GramSpectrum.ridge`) on the
comparison's strong-generalization splits, against EASE and Conv4Rec's user rows.

Conv4Rec's code is d = 128 wide, so no decoder it learns is of rank above 128. This sweep shows
where a linear model of that rank stands against the full-rank ones on each dataset: the control
behind Douban's ranking gap in docs/results.md. Per dataset and seed, λ is picked per rank from
EASE's grid on the validation users; test NDCG@100 is reported as mean ± std over seeds.

    python -m benchmarks.accuracy.rank_sweep [--data-dir ../shared/data] [--datasets ml-100k douban]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.accuracy.control_cli import announce, control_parser, save, write_report
from benchmarks.accuracy.grids import EASE_L2_GRID
from benchmarks.accuracy.rank_ridge import GramSpectrum
from benchmarks.accuracy.run import IMPLICIT_TASK, SEEDS
from benchmarks.accuracy.splits import IMPLICIT_USERS, dataset_strong_split
from convae_jax.data import load_dataset
from convae_jax.evaluate import strong_generalization_protocol
from convae_jax.peers.ease import EASE
from convae_jax.record import mean_std, record_line

RANKS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
CONV4REC_ROW = "conv4rec user rows (ratings)"


def _ndcg(model, fold_in, target) -> float:
    return strong_generalization_protocol(model.fold_in_scores(fold_in), fold_in=fold_in, target=target)["ndcg@100"]


def _best_on_validation(models: dict, clicks) -> dict:
    """The model of the grid with the best validation NDCG@100, with its validation and test scores."""
    scored = {l2: _ndcg(m, clicks.val_fold_in, clicks.val_target) for l2, m in models.items()}
    l2 = max(scored, key=scored.get)
    return {"l2": l2, "validation": scored[l2], "test": _ndcg(models[l2], clicks.test_fold_in, clicks.test_target)}


def sweep_seed(data, dataset: str, seed: int) -> dict:
    clicks = dataset_strong_split(dataset, data, seed=seed).clicks
    spectrum = GramSpectrum.of(clicks.train)
    ranks = [r for r in RANKS if r < data.n_items] + [data.n_items]
    return {"seed": seed, "n_train_users": int(np.unique(clicks.train.user).size),
            "ease": _best_on_validation({l2: EASE.fit(clicks.train, l2=l2) for l2 in EASE_L2_GRID}, clicks),
            "ridge": {r: _best_on_validation({l2: spectrum.ridge(rank=r, l2=l2) for l2 in EASE_L2_GRID}, clicks)
                      for r in ranks}}


def summarise(runs: list[dict]) -> dict:
    ranks = runs[0]["ridge"]
    return {"ease": mean_std([run["ease"]["test"] for run in runs]),
            "ridge": {r: mean_std([run["ridge"][r]["test"] for run in runs]) for r in ranks}}


def conv4rec_reference(dataset: str, results_dir: Path) -> dict | None:
    """Conv4Rec user rows' test NDCG@100 from the committed comparison, if it is there."""
    path = results_dir / f"{dataset}.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text())["tables"].get(IMPLICIT_TASK, {}).get(CONV4REC_ROW)
    return None if row is None else {k: row["summary"]["ndcg@100"][k] for k in ("mean", "std")}


def markdown(doc: dict) -> str:
    env = doc["environment"]
    lines = ["# Rank sweep: the rank-r ridge against EASE and Conv4Rec (strong generalization, NDCG@100)", "",
             (f"Test NDCG@100, mean ± std over seeds {doc['seeds']}; λ picked per rank on the validation users "
             f"from {list(EASE_L2_GRID)}. Machine: {record_line(env)}. "
             f"Command: `{doc['command']}`."), ""]
    for dataset, entry in doc["datasets"].items():
        summary = entry["summary"]
        conv = entry["conv4rec"]
        lines += [f"## {dataset} ({entry['n_items']} items, {entry['n_train_users']} training users)", "",
                  "| model | NDCG@100 |", "|---|---|"]
        lines += [f"| ridge, rank {r} | {s['mean']:.3f} ± {s['std']:.3f} |" for r, s in summary["ridge"].items()]
        lines.append(f"| EASE | {summary['ease']['mean']:.3f} ± {summary['ease']['std']:.3f} |")
        if conv:
            lines.append("| Conv4Rec user rows (d = 128; committed comparison) | "
                         f"{conv['mean']:.3f} ± {conv['std']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    for (dataset, entry), colour in zip(doc["datasets"].items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        ridge = entry["summary"]["ridge"]
        ranks = [int(r) for r in ridge]
        ax.errorbar(ranks, [s["mean"] for s in ridge.values()], yerr=[s["std"] for s in ridge.values()],
                    marker="o", color=colour, capsize=2, label=f"{dataset}: rank-r ridge")
        ax.axhline(entry["summary"]["ease"]["mean"], color=colour, linestyle="--", linewidth=1)
        if entry["conv4rec"]:
            ax.plot([128], [entry["conv4rec"]["mean"]], marker="*", markersize=14, color=colour, linestyle="none",
                    label=f"{dataset}: Conv4Rec user rows (d = 128)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank r of the item-item map")
    ax.set_ylabel("test NDCG@100")
    ax.set_title("Linear models by rank (dashed: full-rank EASE)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    args = control_parser(__doc__, datasets=list(IMPLICIT_USERS), outputs="rank-sweep.{json,md,png}").parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        write_report(out, "rank-sweep", markdown=markdown, plot=plot)
        return
    env = announce("benchmarks.accuracy.rank_sweep", argv)
    doc = {"command": env["command"], "environment": env, "seeds": list(SEEDS), "datasets": {}}
    for dataset in args.datasets:
        data = load_dataset(dataset, Path(args.data_dir) / dataset).train
        runs = []
        for seed in SEEDS:
            runs.append(sweep_seed(data, dataset, seed))
            print(f"{dataset} seed {seed}: EASE {runs[-1]['ease']['test']:.4f}; "
                  + ", ".join(f"r{r} {v['test']:.4f}" for r, v in runs[-1]["ridge"].items()), flush=True)
        doc["datasets"][dataset] = {"n_items": data.n_items, "n_train_users": runs[0]["n_train_users"], "runs": runs,
                                    "summary": summarise(runs), "conv4rec": conv4rec_reference(dataset, out)}
    save(out, "rank-sweep", doc, markdown=markdown, plot=plot)


if __name__ == "__main__":
    main()
