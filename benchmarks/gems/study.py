"""The gems study on Coat (Schnabel et al. 2016): Conv4Rec, its explicit-only variant and two rating
floors trained on self-selected ratings, scored on ratings of items shown to users at random.

Coat's test set measures what a user thinks of items they were merely shown, including those they
would never have picked: the setting the paper's gems claim is about (docs/model.md, Predictions).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.gems.discovery import gem_discovery, peer_rating_scores
from benchmarks.gems.figure import figure_user, plot_gem_scatter
from benchmarks.gems.report import markdown_report, summarise
from convae_jax import config as config_lib
from convae_jax.data.interactions import Interactions
from convae_jax.data.loaders import load_dataset
from convae_jax.metrics import mae, rating_metrics, rmse
from convae_jax.peers.ips_mf import fit_ips_mf
from convae_jax.peers.item_mean import ItemMeanShrunk
from convae_jax.peers.mf import select_biased_mf
from convae_jax.record import run_record
from convae_jax.train import fit

PROGRAM = ("python", "-m", "benchmarks.gems")  # how a record names the command that made it


def rating_report(model, test: Interactions) -> dict:
    """RMSE/MAE of the model's point prediction (`predict_ratings` where it has one, else the
    expected rating), and NLL, accuracy and top-label ECE of its rating distribution."""
    result = rating_metrics(model.rating_log_probs(test.user, test.item), test.channel, test.channel_values)
    if hasattr(model, "predict_ratings"):
        predicted = model.predict_ratings(test.user, test.item)
        result |= {"rmse": rmse(predicted, test.ratings), "mae": mae(predicted, test.ratings)}
    return result


def evaluate_coat(data_dir, out_dir, *, seeds=(0, 1, 2), config: config_lib.Config | None = None,
                  overrides: tuple[str, ...] = ()) -> dict:
    """Trains Conv4Rec, its explicit-only variant (model.implicit_weight = 0), biased MF, MF with
    inverse-propensity weights (at MF's selected rank, regularisation and σ) and the item mean on
    Coat's self-selected ratings, once per seed (model seed; Coat's split is fixed); scores rating
    metrics and gem discovery (MF's and IPS-MF's rankings by predicted rating among them) on the
    randomly exposed test set; writes gems.json, gems.md and gem_scatter.png (seed 0) under `out_dir`.
    `overrides` (`section.field=value`) apply to `config` (default: the default config) and are
    recorded in the command."""
    config = (config or config_lib.default()).override([*overrides, "train.progress=False"])
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
        ips_mf = fit_ips_mf(train, rank=mf_selection["rank"], reg=mf_selection["reg"], seed=seed,
                            rating_scale=mf_selection["rating_scale"])
        ratings = {"conv4rec": rating_report(joint, test), "conv4rec_explicit_only": rating_report(explicit_only, test),
                   "biased_mf": rating_report(mf, test), "ips_mf": rating_report(ips_mf, test),
                   "item_mean": rating_report(ItemMeanShrunk.fit(train), test)}
        peers = {name: peer_rating_scores(m, train.n_users, train.n_items) for name, m in (("mf", mf), ("ips_mf", ips_mf))}
        runs.append({"seed": seed, "ratings": ratings,
                     "gems": gem_discovery(joint, test, enjoyment_model=explicit_only, peer_rankings=peers),
                     "selected_epochs": {"conv4rec": joint.selected_epoch,
                                         "conv4rec_explicit_only": explicit_only.selected_epoch},
                     "biased_mf_selection": mf_selection, "seconds": time.perf_counter() - started})
        if seed == seeds[0]:
            user = figure_user(joint, test)
            plot_gem_scatter(joint, test, user, out_dir / "gem_scatter.png")
            figure = {"seed": seed, "user": train.user_ids[user].tolist()}
    record = run_record(program=PROGRAM, argv=["--data-dir", str(data_dir), "--out", str(out_dir),
                                                "--seeds", *map(str, seeds), *(f for o in overrides for f in ("--set", o))])
    result = {"command": record["command"], "machine": {key: value for key, value in record.items() if key != "command"},
              "dataset": {"name": "coat", "train": train.nnz, "test": test.nnz,
                                                 "users": train.n_users, "items": train.n_items},
              "config": config.to_dict(), "seeds": list(seeds), "figure": figure, "runs": runs,
              "summary": summarise(runs)}
    (out_dir / "gems.json").write_text(json.dumps(result, indent=2))
    (out_dir / "gems.md").write_text(markdown_report(result))
    return result
