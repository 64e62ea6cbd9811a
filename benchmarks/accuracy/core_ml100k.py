"""Acceptance run of the core model on MovieLens 100K (random 90/10 split, seeds 0, 1, 2, CPU).

For each seed: the split and the training both use the seed; Conv4Rec runs with the default
config (early stopping on 5% of train); the user+item-bias floor picks its regularisation on the
same 5% validation; popularity ranks by training frequency. Ranking metrics rank every test user's
unseen items by P(consume) (popularity: by count) and score the held-out items.

    python -m benchmarks.accuracy.core_ml100k [--data-dir ../shared/data/ml-100k] [--seeds 0 1 2] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

from convae_jax import config as config_lib
from convae_jax.data import holdout_interactions, load_dataset
from convae_jax.evaluate import explicit_protocol, rating_protocol
from convae_jax.peers import Popularity, UserItemBiases
from convae_jax.record import mean_std, record_line, run_record
from convae_jax.train import fit

RESULTS = Path("benchmarks/results/core_ml100k")  # relative to the directory the command runs in
PROGRAM = ("python", "-m", "benchmarks.accuracy.core_ml100k")
BIAS_REGS = (1.0, 3.0, 10.0, 30.0)


def fit_biases(train, *, seed: int) -> tuple[UserItemBiases, float]:
    """User+item biases with the regularisation picked on a 5% validation split."""
    fit_part, validation = holdout_interactions(train, fraction=0.05, seed=seed + 7919)
    scores = {reg: rating_protocol(UserItemBiases.fit(fit_part, reg_user=reg, reg_item=reg), validation)["rmse"]
              for reg in BIAS_REGS}
    reg = min(scores, key=scores.get)
    return UserItemBiases.fit(train, reg_user=reg, reg_item=reg), reg


def run_seed(data, seed: int) -> dict:
    train, test = holdout_interactions(data, fraction=0.1, seed=seed)
    config = config_lib.default().override([f"train.seed={seed}", "train.progress=False"])
    start = time.perf_counter()
    model = fit(train, config)
    seconds = time.perf_counter() - start
    biases, reg = fit_biases(train, seed=seed)
    return {
        "seed": seed,
        "conv4rec": explicit_protocol(model, train, test, ks=(20,)) | {"train_seconds": seconds, "epochs": len(model.history),
                                                                     "selected_epoch": model.selected_epoch},
        "biases": rating_protocol(biases, test) | {"reg": reg},
        "popularity": explicit_protocol(Popularity.fit(train), train, test, ks=(20,)),
    }


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for model in ("conv4rec", "biases", "popularity"):
        keys = [k for k, v in runs[0][model].items() if isinstance(v, float) and k not in ("reg", "train_seconds")]
        summary[model] = {k: mean_std([r[model][k] for r in runs]) for k in keys}
    return summary


def markdown(result: dict) -> str:
    s, machine = result["summary"], result["machine"]
    versions = machine.get("versions", machine)  # records before `run_record` kept the versions flat
    fmt = lambda m, k: f"{s[m][k]['mean']:.4f} ± {s[m][k]['std']:.4f}" if k in s[m] else "–"
    lines = [f"# Conv4Rec on MovieLens 100K (random 90/10, seeds {result['seeds']}, default config)", "",
             (f"`{result['command']}` on {machine['cpu']} ({machine['cores']} cores), "
             f"jax {versions['jax']}. Mean ± sample std over seeds."), "",
             "| model | RMSE | MAE | NLL | accuracy | ECE | Recall@20 | NDCG@20 |", "|---|---|---|---|---|---|---|---|"]
    for model in ("conv4rec", "biases", "popularity"):
        lines.append(f"| {model} | " + " | ".join(fmt(model, k) for k in
                                                 ("rmse", "mae", "nll", "accuracy", "ece", "recall@20", "ndcg@20")) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/ml-100k"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS, help="path of the results, without .json / .md")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args(argv)
    if args.report_only:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.with_suffix(".json").read_text())))
        return 0
    record = run_record(program=PROGRAM, argv=argv)
    print(f"{record['command']}\n{record_line(record)}", flush=True)
    machine = {key: value for key, value in record.items() if key != "command"} | {"device": str(jax.devices()[0])}
    data = load_dataset("ml-100k", args.data_dir).train
    runs = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        runs.append(run_seed(data, seed))
        print(json.dumps(runs[-1]), flush=True)
        result = {"command": record["command"], "machine": machine, "seeds": [r["seed"] for r in runs], "runs": runs,
                  "summary": summarise(runs)}
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))  # each seed saved as it ends
        args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
