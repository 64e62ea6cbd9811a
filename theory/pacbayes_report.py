"""Markdown table and PNG of `convae theory pacbayes`, from its JSON alone."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from theory.reporting import _grouped, _header

COLUMNS = (  # (heading, value of a run)
    ("PAC-Bayes bound B", lambda r: r["bound"]),
    ("R(Q) exact (truth)", lambda r: r["true_risk"]["mean"]),
    ("R̂_B(Q) (MC mean)", lambda r: r["empirical_risk"]["mc_mean"]),
    ("R̂_B(Q) MC upper", lambda r: r["empirical_risk"]["mc_upper"]),
    ("KL(Q‖P)", lambda r: r["kl"]),
    ("certified TV", lambda r: r["certified_tv"]),
    ("posterior mean TV", lambda r: r["posterior_mean"]["tv_joint"]),
    ("prior mean R", lambda r: r["prior_mean"]["population_risk"]),
    ("global popularity R", lambda r: r["global_popularity_risk"]),
)


def markdown(result) -> str:
    """Per N: the bound, the stochastic network's exact and empirical risks, KL, certified TV; the
    comparators ln K and the global predictor; then each run's chosen scale and posterior mean."""
    runs = result["runs"]
    lines = [_header(result), (f"γ-smoothed log-loss (γ = {result['smoothing']}, range [0, {runs[0]['loss_range']:.2f}] nats). "
             f"ln K = {result['ln_k']:.3f}; H(I, C | U) = {result['truth_entropy']:.3f}. Each bound at δ = {runs[0]['delta']}: "
             f"PAC-Bayes-kl at δ/(2·{len(result['scales'])}) (the scale grid), Monte Carlo at δ/2 "
             f"({runs[0]['empirical_risk']['mc_draws']} fresh weight draws)."), "",
             "| N | |B| | " + " | ".join(h for h, _ in COLUMNS) + " |", "|---:|---:|" + "---:|" * len(COLUMNS)]
    cols = [_grouped(runs, f) for _, f in COLUMNS]
    sizes = _grouped(runs, lambda r: r["n_b"])
    for n in cols[0]:
        lines.append(f"| {n} | {sizes[n][0]:.0f} | " + " | ".join(f"{c[n][0]:.4f} ± {c[n][1]:.4f}" for c in cols) + " |")
    lines += ["", "| N | seed | scale s | posterior mean (fine-tune on B) | bound | bound / ln K | bound < global R |",
              "|---:|---:|---:|---|---:|---:|---|"]
    for r in runs:
        lines.append(f"| {r['n']} | {r['seed']} | {r['chosen']['scale']} | {r['chosen']['posterior']} | {r['bound']:.4f} "
                     f"| {r['bound'] / result['ln_k']:.3f} | {'yes' if r['bound'] < r['global_popularity_risk'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(result, path) -> None:
    """The bound, the exact and empirical risks of Q, and the comparators against N."""
    fig, ax = plt.subplots(figsize=(8, 5))
    runs = result["runs"]
    for (heading, value), style in zip(COLUMNS[:3] + COLUMNS[7:9], ("k-v", "b-o", "g-s", "c--", "r--")):
        stats = _grouped(runs, value)
        ax.errorbar(list(stats), [v[0] for v in stats.values()], yerr=[v[1] for v in stats.values()], fmt=style,
                    capsize=3, label=heading)
    ax.axhline(result["ln_k"], color="grey", linestyle=":", label="ln K (uniform guess)")
    ax.axhline(result["truth_entropy"], color="grey", linestyle="-.", label="H (the truth's risk)")
    ax.set(xscale="log", xlabel="N (draws of S_tgt; B holds half)", ylabel="γ-smoothed log-loss (nats)",
           title="PAC-Bayes bound with a prior from S_in ∪ A, posterior around weights fine-tuned on B")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
