"""Markdown tables and the environment record of the theory experiments."""

from __future__ import annotations

import numpy as np
from scipy import stats

from convae_jax.record import mean_std, run_record
from theory.bounds import REPORTED

ESTIMATOR_LABELS = {"model": "Conv4Rec", "per_user_empirical": "per-user empirical (add-α)",
                    "global_popularity": "global popularity × ratings", "low_rank_4": "rank-4 softmax MLE",
                    "low_rank_8": "rank-8 softmax MLE"}


def environment(*, argv: list[str], wall_seconds: float) -> dict:
    """The run record of `convae theory` with `argv`, and the run's wall time."""
    return run_record(program=("convae", "theory"), argv=argv) | {"wall_seconds": wall_seconds}


def log_log_slope(sizes, values) -> dict:
    """OLS fit of log(value) on log(N) over every run; the slope's 95% t-interval."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(values, float))
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, x.size - 2) * fit.stderr
    return {"slope": fit.slope, "ci95": [fit.slope - half, fit.slope + half], "intercept": fit.intercept}


def _grouped(runs, value):
    """{N: (mean, sample std)} of value(run) over seeds."""
    by_n: dict[int, list[float]] = {}
    for run in runs:
        by_n.setdefault(run["n"], []).append(value(run))
    summaries = {n: mean_std(v) for n, v in sorted(by_n.items())}
    return {n: (s["mean"], s["std"]) for n, s in summaries.items()}


def _header(result) -> str:
    env = result["environment"]
    return (f"Command: `{env['command']}` · {env['cpu']}, {env['cores']} cores · "
            + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
            + f" · wall {env['wall_seconds'] / 60:.1f} min. Mean ± sample sd (ddof 1) over seeds "
            + ", ".join(str(seed) for seed in result["preset"]["seeds"]) + ".\n\n")


def _ci(entry) -> str:
    return f"[{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}]"


def certify_markdown(result) -> str:
    """TV_joint per N for every estimator with the model's certificate; slopes, local slopes, KL fit."""
    names = list(ESTIMATOR_LABELS)
    runs = result["runs"]
    lines = [_header(result), "Deployed model (same-sample mode, raw-count inputs). TV_joint to the truth:", "",
             "| N | " + " | ".join(ESTIMATOR_LABELS[k] for k in names)
             + " | certified TV (better of two) | certified TV, centred | certified TV, plain | KL Conv4Rec |",
             "|---:|" + "---:|" * (len(names) + 4)]
    tv = {k: _grouped(runs, lambda r, k=k: r[k]["tv_joint"]) for k in names}
    cert = {kind: _grouped(runs, lambda r, kind=kind: r["certificate"][kind]["tv_bound"])
            for kind in ("best", "centred", "plain")}
    kl = _grouped(runs, lambda r: r["model"]["kl_joint"])
    for n in tv["model"]:
        lines.append(f"| {n} | " + " | ".join(f"{tv[k][n][0]:.4f} ± {tv[k][n][1]:.4f}" for k in names)
                     + f" | {cert['best'][n][0]:.4f} ± {cert['best'][n][1]:.4f}"
                     + f" | {cert['centred'][n][0]:.4f} ± {cert['centred'][n][1]:.4f}"
                     + f" | {cert['plain'][n][0]:.4f} ± {cert['plain'][n][1]:.4f} | {kl[n][0]:.4f} ± {kl[n][1]:.4f} |")
    c = runs[0]["certificate"]
    counts = sorted({r["certificate"]["candidates"] for r in runs})
    seeds = {k: sorted({r["seed"] for r in runs if r["certificate"]["candidates"] == k}) for k in counts}
    split = (f"{counts[0]} candidates" if len(counts) == 1 else " or ".join(
        f"{k} candidates (seeds {', '.join(map(str, seeds[k]))})" for k in counts))
    lines += ["", (f"Certificates of the deployed model at δ = {c['delta']}, split over {split} "
              f"(epochs × configurations compared on S_cert) and the two forms; γ = {c['smoothing']} "
              "(certified TV = √(KL bound / 2) + γ)."), ""]
    if not result["tv_slopes"]:  # a grid too short for rates: only the local slopes, if any
        for k in names:
            lines += [f"{ESTIMATOR_LABELS[k]}: local TV slope " + ", ".join(
                f"{e['from']}→{e['to']} {e['slope']:.3f} {_ci(e)}" for e in result["tv_local_slopes"].get(k, []))]
        return "\n".join(lines) + "\n"
    lines += ["| estimator | part | slope of log TV on log N (all runs, OLS) | 95% CI |", "|---|---|---:|---|"]
    for k in names:
        for part, entry in result["tv_slopes"][k].items():
            lines.append(f"| {ESTIMATOR_LABELS[k]} | {part} | {entry['slope']:.3f} | {_ci(entry)} |")
    lines += ["", "Local slopes between neighbouring N (seed means; 95% bootstrap interval over seeds):", "",
              "| estimator | quantity | " + " | ".join(f"{e['from']}→{e['to']}" for e in result["tv_local_slopes"]["model"])
              + " |", "|---|---|" + "---:|" * len(result["tv_local_slopes"]["model"])]
    for k in names:
        for quantity, key in (("TV", "tv_local_slopes"), ("KL", "kl_local_slopes")):
            lines.append(f"| {ESTIMATOR_LABELS[k]} | {quantity} | "
                         + " | ".join(f"{e['slope']:.2f} {_ci(e)}" for e in result[key][k]) + " |")
    if result["kl_power_law"]:
        lines += ["", "KL(N) = a + c·N^(−α), least squares on the seed means (95% bootstrap intervals):", "",
                  "| estimator | a | a 95% | α | α 95% |", "|---|---:|---|---:|---|"]
        for k, fit in result["kl_power_law"].items():
            lines.append(f"| {ESTIMATOR_LABELS[k]} | {fit['a']:.4f} | [{fit['a_ci95'][0]:.4f}, {fit['a_ci95'][1]:.4f}] "
                         f"| {fit['alpha']:.3f} | [{fit['alpha_ci95'][0]:.3f}, {fit['alpha_ci95'][1]:.3f}] |")
    ratio = _grouped(runs, lambda r: r["model"]["tv_joint"] / np.sqrt(r["model"]["kl_joint"] / 2))
    lines += ["", "TV / √(KL/2) of Conv4Rec (Pinsker's ratio, a property of the error's shape): "
              + ", ".join(f"{v[0]:.3f}" for v in ratio.values()) + "."]
    return "\n".join(lines) + "\n"


def bounds_markdown(result) -> str:
    """Leakage of both modes, then the split-mode bounds with their slopes and norm terms."""
    runs = result["runs"]
    g = lambda f: _grouped(runs, f)
    lines = [_header(result), ("Gaps R − R̂ on S_tgt (nats; smoothed: the γ-smoothed loss the bounds are about). "
             "Leakage = same-sample gap − split gap (plain log-loss)."), "",
             ("| N | Conv4Rec split gap (smoothed) | Conv4Rec same-sample gap | leakage | R̂ − H same-sample "
             "| per-user α split / same | per-user split gap | per-user same-sample gap | per-user Hoeffding |"),
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    cols = [g(lambda r: r["split"]["smoothed"]["gap"]), g(lambda r: r["same_sample"]["log_loss"]["gap"]),
            g(lambda r: r["leakage"]), g(lambda r: r["same_sample"]["empirical_minus_entropy"])]
    alpha = {n: (a[0], b[0]) for (n, a), b in zip(g(lambda r: r["per_user"]["split"]["alpha"]).items(),
                                                 g(lambda r: r["per_user"]["same_sample"]["alpha"]).values())}
    pu = [g(lambda r: r["per_user"]["split"]["log_loss"]["gap"]), g(lambda r: r["per_user"]["same_sample"]["log_loss"]["gap"]),
          g(lambda r: r["per_user"]["split"]["hoeffding"])]
    for n in cols[0]:
        lines.append(f"| {n} | " + " | ".join(f"{c[n][0]:.4f} ± {c[n][1]:.4f}" for c in cols)
                     + f" | {alpha[n][0]:.3g} / {alpha[n][1]:.3g} | " + " | ".join(f"{c[n][0]:.4f}" for c in pu) + " |")
    lines += ["", "TV_joint to the truth: split " + ", ".join(f"{v[0]:.3f}" for v in g(lambda r: r["split"]["tv_joint"]).values())
              + "; same-sample " + ", ".join(f"{v[0]:.3f}" for v in g(lambda r: r["same_sample"]["tv_joint"]).values()) + ".",
              "", ("Split-mode bounds on the smoothed gap (nats, mean over seeds), each at δ = "
              f"{runs[0]['bounds']['delta']}/{len(REPORTED)}:"), "",
              "| N | " + " | ".join(f"{f} ({v})" for f, v in REPORTED) + " |", "|---:|" + "---:|" * len(REPORTED)]
    bound = {c: g(lambda r, c=c: r["bounds"][c[1]][c[0]]["bound"]) for c in REPORTED}
    for n in cols[0]:
        lines.append(f"| {n} | " + " | ".join(f"{bound[c][n][0]:.4g}" for c in REPORTED) + " |")
    top = max(cols[0])
    lines += ["", f"Bound / split gap (smoothed) at N = {top}: "
              + ", ".join(f"{f} ({v}) {bound[(f, v)][top][0] / cols[0][top][0]:.3g}" for f, v in REPORTED), "",
              ("Log-log slopes in N (OLS over every run, 95% CI); −0.5 + slope(norm term) is what the bound's form "
              "predicts before its log factors and budget costs:"), "",
              "| quantity | slope | 95% CI | norm term slope | −0.5 + norm term slope |", "|---|---:|---|---:|---:|"]
    for name, entry in result["slopes"].items():
        if "bound" in entry:
            b, t = entry["bound"], entry["norm_term"]
            lines.append(f"| {name} | {b['slope']:.3f} | {_ci(b)} | {t['slope']:.3f} | {t['slope'] - 0.5:.3f} |")
        else:
            lines.append(f"| {name} | {entry['slope']:.3f} | {_ci(entry)} | | |")
    return "\n".join(lines) + "\n"
