"""Markdown tables and the environment record of the theory experiments."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import numpy as np
from scipy import stats

from convae_jax.machine import cpu_model, source_commit
from theory.bounds import FORMS, VARIANTS

ESTIMATOR_LABELS = {"model": "Conv4Rec", "per_user_empirical": "per-user empirical (add-α)",
                    "global_popularity": "global popularity × ratings"}


def environment(*, command: str, wall_seconds: float) -> dict:
    """Command, machine, versions, commit and wall time of a run."""
    cpu = cpu_model()
    versions = {name: metadata.version(name) for name in ("jax", "flax", "optax", "numpy", "scipy")}
    return {"command": command, "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "versions": versions, "commit": source_commit(), "wall_seconds": wall_seconds}


def log_log_slope(sizes, values) -> dict:
    """OLS fit of log(value) on log(N) over every run; the slope's 95% t-interval."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(values, float))
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, x.size - 2) * fit.stderr
    return {"slope": fit.slope, "ci95": [fit.slope - half, fit.slope + half], "intercept": fit.intercept}


def _grouped(runs, value):
    """{N: (mean, std)} of value(run) over seeds."""
    by_n: dict[int, list[float]] = {}
    for run in runs:
        by_n.setdefault(run["n"], []).append(value(run))
    return {n: (float(np.mean(v)), float(np.std(v))) for n, v in sorted(by_n.items())}


def _header(result) -> str:
    env = result["environment"]
    return (f"Command: `{env['command']}` · {env['cpu']}, {env['cores']} cores · "
            + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
            + f" · wall {env['wall_seconds'] / 60:.1f} min. Mean ± sd over seeds "
            + ", ".join(str(seed) for seed in result["preset"]["seeds"]) + ".\n\n")


def recovery_markdown(result) -> str:
    """TV_joint (and KL_joint) per N for every estimator, then the slopes."""
    names = list(ESTIMATOR_LABELS)
    lines = [_header(result), "| N | " + " | ".join(f"TV {ESTIMATOR_LABELS[k]}" for k in names) + " | KL Conv4Rec |",
             "|---:|" + "---:|" * (len(names) + 1)]
    tv = {k: _grouped(result["runs"], lambda r, k=k: r[k]["tv_joint"]) for k in names}
    kl = _grouped(result["runs"], lambda r: r["model"]["kl_joint"])
    for n in tv["model"]:
        lines.append(f"| {n} | " + " | ".join(f"{tv[k][n][0]:.4f} ± {tv[k][n][1]:.4f}" for k in names)
                     + f" | {kl[n][0]:.4f} ± {kl[n][1]:.4f} |")
    lines += ["", "| estimator | part | slope of log TV on log N | 95% CI |", "|---|---|---:|---|"]
    for k in names:
        for part, s in result["tv_slopes"][k].items():
            lines.append(f"| {ESTIMATOR_LABELS[k]} | {part} | {s['slope']:.3f} | [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] |")
    return "\n".join(lines) + "\n"


def bounds_markdown(result) -> str:
    """Gap, excess risk and every bound per N; then naive/shared ratios per catalogue size."""
    runs = result["runs"]
    cols = [(v, f) for f in FORMS for v in VARIANTS]
    lines = [_header(result),
             "| N | gap R − R̂ | excess risk | " + " | ".join(f"{f} ({v})" for v, f in cols) + " |",
             "|---:|---:|---:|" + "---:|" * len(cols)]
    gap = _grouped(runs, lambda r: r["measured"]["generalization_gap"])
    excess = _grouped(runs, lambda r: r["measured"]["excess_risk"])
    bound = {c: _grouped(runs, lambda r, c=c: r["bounds"][c[0]][c[1]]["bound"]) for c in cols}
    for n in gap:
        lines.append(f"| {n} | {gap[n][0]:.4f} ± {gap[n][1]:.4f} | {excess[n][0]:.4f} | "
                     + " | ".join(f"{bound[c][n][0]:.3g}" for c in cols) + " |")
    lines += ["", "Log-log slope against N over every run (OLS, 95% CI):", "", "| quantity | slope | 95% CI |", "|---|---:|---|"]
    series = {"generalization gap": lambda r: r["measured"]["generalization_gap"],
              "excess risk": lambda r: r["measured"]["excess_risk"],
              **{f"{f} ({v})": (lambda r, v=v, f=f: r["bounds"][v][f]["bound"]) for v, f in cols}}
    for name, value in series.items():
        kept = [r for r in runs if value(r) > 0]
        s = log_log_slope([r["n"] for r in kept], [value(r) for r in kept])
        lines.append(f"| {name} | {s['slope']:.3f} | [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] |")
    lines += ["", "Bound / gap (mean over seeds):", "",
              "| N | " + " | ".join(f"{f} ({v})" for v, f in cols) + " |", "|---:|" + "---:|" * len(cols)]
    for n in gap:
        lines.append(f"| {n} | " + " | ".join(f"{bound[c][n][0] / gap[n][0]:.3g}" for c in cols) + " |")
    lines += ["", f"Weight sharing (N = {result['preset']['catalogue_draws']}, seed 0): naive / shared bound",
              "", "| n items | gap | " + " | ".join(f"{f} shared | {f} naive | ratio" for f in FORMS) + " |",
              "|---:|---:|" + "---:|---:|---:|" * len(FORMS)]
    for run in result["catalogue"]:
        b = run["bounds"]
        lines.append(f"| {run['n_items']} | {run['measured']['generalization_gap']:.4f} | " + " | ".join(
            f"{b['shared'][f]['bound']:.3g} | {b['naive'][f]['bound']:.3g} | {run['naive_over_shared'][f]:.3g}" for f in FORMS) + " |")
    return "\n".join(lines) + "\n"
