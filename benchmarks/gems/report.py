"""The gems study's report: the summary over seeds with its verdicts, and gems.md, written from
gems.json alone so that it can be rewritten without retraining (`--report-only`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.gems.discovery import KS, TRADE_OFF_GRID
from convae_jax.record import mean_std


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation (`convae_jax.record.mean_std`) over seeds of every number, and the K=5 verdicts: does `gems`
    beat `random` and `enjoy` on every seed, by more than twice the larger seed std?"""
    def spread(values):
        return mean_std(values) | {"per_seed": np.asarray(values, np.float64).tolist()}

    ratings = {m: {k: spread([r["ratings"][m][k] for r in runs]) for k in runs[0]["ratings"][m] if k != "n"}
               for m in runs[0]["ratings"]}
    gems = {}
    for target, per in runs[0]["gems"].items():
        gems[target] = {name: {metric: spread([r["gems"][target][name][metric] for r in runs]) for metric in value}
                        if isinstance(value, dict) else spread([r["gems"][target][name] for r in runs])
                        for name, value in per.items()}
    verdicts = {}
    for target in ("model", "popularity", "popular"):
        for rival in ("random", "enjoy", "random_below_median", "least_consumed", "gems_other", "mf"):
            ours = np.array([r["gems"][target]["gems@5"]["precision"] for r in runs])
            theirs = np.array([r["gems"][target][f"{rival}@5"]["precision"] for r in runs])
            noise = max(gems[target]["gems@5"]["precision"]["std"], gems[target][f"{rival}@5"]["precision"]["std"])
            verdicts[f"{target}: gems vs {rival} @5"] = {
                "difference_per_seed": (ours - theirs).tolist(),
                "beyond_seed_noise": bool(np.all(ours > theirs) and (ours - theirs).mean() > 2 * noise)}
    return {"ratings": ratings, "gems": gems, "verdicts": verdicts}


def markdown_report(result: dict) -> str:
    """gems.md: the tables of `summary`, mean ± std over seeds, and the verdicts."""
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
                          ("popular", "liked (≥ 4) test items in the top half of training popularity"),
                          ("liked", "all liked (≥ 4) test items")):
        per = s["gems"][target]
        lines += ["", f"## Gem discovery, targets: {title}", "",
                  (f"{per['n_targets']['mean']:.0f} targets over {per['n_users']['mean']:.0f} users (mean over seeds); "
                  "each user's unseen test items ranked."), "",
                  "| ranking | " + " | ".join(f"P@{k} | R@{k}" for k in KS) + " |",
                  "| --- |" + " --- | --- |" * len(KS)]
        for ranking in ("random", "random_below_median", "consume", "enjoy", "least_consumed", "gems",
                        "enjoy_other", "gems_other", "mf", "ips_mf"):
            lines.append(f"| {ranking} | " + " | ".join(f"{fmt(per[f'{ranking}@{k}']['precision'])} | "
                                                       f"{fmt(per[f'{ranking}@{k}']['recall'])}" for k in KS) + " |")
    lines += ["", ("`enjoy_other`, `gems_other`: P(rating ≥ 4 | consumed) from the explicit-only variant, "
              "P(consume) from Conv4Rec (the cut of `gems_other` is Conv4Rec's). `mf`, `ips_mf`: the candidates "
              "by biased MF's and IPS-weighted MF's predicted rating.")]
    lines += ["", "## Trade-off knobs of `gems` at K = 5 (precision; q = gem_quantile, t = gem_tilt)", "",
              "| q | t | model targets | popularity targets | popular targets | all liked |",
              "| --- | --- | --- | --- | --- | --- |"]
    for quantile, tilt in TRADE_OFF_GRID:
        name = f"gems_q{quantile:g}_t{tilt:g}@5"
        lines.append(f"| {quantile:g} | {tilt:g} | " + " | ".join(fmt(s["gems"][t][name]["precision"])
                                                         for t in ("model", "popularity", "popular", "liked")) + " |")
    lines += ["", "## Verdicts (K = 5; beyond seed noise = better on every seed by more than 2 seed std)", ""]
    for name, verdict in s["verdicts"].items():
        diffs = ", ".join(f"{d:+.3f}" for d in verdict["difference_per_seed"])
        lines.append(f"- {name}: differences {diffs}; beyond seed noise: {verdict['beyond_seed_noise']}")
    lines += ["", f"Figure: `gem_scatter.png` (seed {result['figure']['seed']}, user {result['figure']['user']}).", ""]
    return "\n".join(lines)


def write_report(out_dir) -> dict:
    """gems.md from gems.json in `out_dir` (the figure needs the trained model: it is not rewritten)."""
    out_dir = Path(out_dir)
    result = json.loads((out_dir / "gems.json").read_text())
    (out_dir / "gems.md").write_text(markdown_report(result))
    return result
