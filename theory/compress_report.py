"""Markdown tables and PNG of `convae theory compress`, from its JSON alone."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from theory.reporting import _grouped, _header

COLUMNS = (  # (heading, value of a run): the chosen configuration's
    ("compression bound B", lambda r: r["bound"]),
    ("L (bits)", lambda r: r["bits"]),
    ("R̂ (quantised, S_tgt)", lambda r: r["empirical_risk"]),
    ("R exact (truth)", lambda r: r["true_risk"]),
    ("global popularity R", lambda r: r["global_popularity_risk"]),
)
CONFIGURATION_VALUES = {  # key -> value of one configuration of a run
    "bits": lambda c: c["bits"]["total"], "payload": lambda c: c["bits"]["payload"],
    "sub": lambda c: c["subspace_empirical_risk"], "emp": lambda c: c["empirical_risk"],
    "true": lambda c: c["true_risk"], "bound": lambda c: c["bound"]}


def _configuration(run, dim, levels):
    return next(c for c in run["configurations"] if c["dim"] == dim and c["levels"] == levels)


def markdown(result) -> str:
    """Per N: the best bound over the grid, its bits and risks; then every configuration's bits,
    risks and bound; then each run's choice."""
    runs, grid = result["runs"], result["grid"]
    lines = [_header(result), (f"γ-smoothed log-loss (γ = {result['smoothing']}, range [0, {runs[0]['loss_range']:.2f}] nats). "
             f"ln K = {result['ln_k']:.3f}; H(I, C | U) = {result['truth_entropy']:.3f}. Occam bound with prior 2^−L "
             f"(PAC-Bayes-kl, KL = L ln 2, n = |S_tgt|) at δ = {runs[0]['delta']}/{len(grid['dims']) * len(grid['levels'])} "
             f"(subspace dimensions d ∈ {tuple(grid['dims'])} × levels Q ∈ {tuple(grid['levels'])}); the smallest is reported."),
             "", "| N | " + " | ".join(h for h, _ in COLUMNS) + " |", "|---:|" + "---:|" * len(COLUMNS)]
    cols = [_grouped(runs, f) for _, f in COLUMNS]
    for n in cols[0]:
        lines.append(f"| {n} | " + " | ".join(f"{c[n][0]:.4f} ± {c[n][1]:.4f}" if j != 1 else f"{c[n][0]:.0f} ± {c[n][1]:.0f}"
                                            for j, c in enumerate(cols)) + " |")
    lines += ["", "Every configuration (mean over seeds): L = header + codebook + histogram + payload bits.", "",
              "| N | d | Q | L (bits) | payload bits / d | R̂ unquantised | R̂ quantised | R exact | bound |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for dim in grid["dims"]:
        for levels in grid["levels"]:
            stats = {key: _grouped(runs, lambda r, value=value, dim=dim, levels=levels: value(_configuration(r, dim, levels)))
                     for key, value in CONFIGURATION_VALUES.items()}
            for n in stats["bits"]:
                lines.append(f"| {n} | {dim} | {levels} | {stats['bits'][n][0]:.0f} | {stats['payload'][n][0] / dim:.3f} | "
                             + " | ".join(f"{stats[k][n][0]:.4f}" for k in ("sub", "emp", "true", "bound")) + " |")
    lines += ["", "| N | seed | chosen d | chosen Q | bound | bound / ln K | bound < global R |",
              "|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        lines.append(f"| {r['n']} | {r['seed']} | {r['chosen']['dim']} | {r['chosen']['levels']} | {r['bound']:.4f} "
                     f"| {r['bound'] / result['ln_k']:.3f} | {'yes' if r['bound'] < r['global_popularity_risk'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(result, path) -> None:
    """Left: the bound and the quantised model's risks against N, with the comparators. Right: the
    chosen code's bits, and every subspace dimension's bits at the fewest levels, against N."""
    runs, grid = result["runs"], result["grid"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for (heading, value), style in zip(COLUMNS[:1] + COLUMNS[2:], ("k-v", "g-s", "b-o", "r--")):
        stats = _grouped(runs, value)
        left.errorbar(list(stats), [v[0] for v in stats.values()], yerr=[v[1] for v in stats.values()], fmt=style,
                      capsize=3, label=heading)
    left.axhline(result["ln_k"], color="grey", linestyle=":", label="ln K (uniform guess)")
    left.axhline(result["truth_entropy"], color="grey", linestyle="-.", label="H (the truth's risk)")
    left.set(xscale="log", xlabel="N (draws of S_tgt)", ylabel="γ-smoothed log-loss (nats)",
             title="Compression bound (best over the grid) and risks of the quantised model")
    left.legend(fontsize=8)
    stats = _grouped(runs, COLUMNS[1][1])
    right.errorbar(list(stats), [v[0] for v in stats.values()], yerr=[v[1] for v in stats.values()], fmt="k-v",
                   capsize=3, label="L of the chosen code")
    for dim in grid["dims"]:
        stats = _grouped(runs, lambda r, dim=dim: _configuration(r, dim, grid["levels"][0])["bits"]["total"])
        right.plot(list(stats), [v[0] for v in stats.values()], "--o", markersize=3, label=f"d = {dim}, Q = {grid['levels'][0]}")
    right.set(xscale="log", yscale="log", xlabel="N (draws of S_tgt)", ylabel="code length L (bits)",
              title="Bits against N")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
