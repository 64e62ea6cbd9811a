"""Markdown tables and PNGs of `convae theory catalogue` and `convae theory sharing`, from their JSON alone."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from theory.reporting import _grouped, _header

GAP = "gap (split, smoothed)"


def _union_line(result) -> str:
    return (f"Every bound at δ/{result['bounds_in_union']} (δ = {result['delta']}: all models × bounds per model), "
            "so all of them hold together at 95%. Smoothed log-loss γ = 0.01; gaps R − R̂ in nats, exact R on the truth.")


def _slope(entry) -> str:
    if entry["slope"] is None:
        return f"none ({entry['nonpositive']} values ≤ 0)"
    return f"{entry['slope']:+.3f} [{entry['ci95'][0]:+.3f}, {entry['ci95'][1]:+.3f}]"


def _verdict(entry, predicted: float, tolerance: float) -> str:
    if entry["slope"] is None:
        return "—"
    return "yes" if abs(entry["slope"] - predicted) <= tolerance else f"**no** ({entry['slope'] - predicted:+.2f})"


def catalogue_markdown(result) -> str:
    """Exponents against predictions per series, then the mean values per (series, n)."""
    runs, tolerance = result["runs"], result["tolerance"]
    lines = [_header(result) + _union_line(result), "",
             f"Catalogue n ∈ {result['grid']['items']}; series `fixed_n`: N = {result['preset']['sample_sizes']}; "
             f"`fixed_per_item`: N = {result['grid']['draws_per_item']}·n. Exponent: OLS slope of log value on log n "
             f"over every run of the series, 95% t-interval; a hit is within {tolerance} of the prediction.", ""]
    for series, exponents in result["exponents"].items():
        predictions = {q: p.get(series) for q, p in result["predictions"].items()}
        lines += [f"**{series}**", "", "| quantity | exponent in n [95% CI] | predicted | within tolerance |",
                  "|---|---:|---:|---|"]
        for quantity, entry in exponents.items():
            predicted = predictions.get(quantity)
            shown = "—" if predicted is None else f"{predicted:+.2f}"
            lines.append(f"| {quantity} | {_slope(entry)} | {shown} | "
                         f"{'—' if predicted is None else _verdict(entry, predicted, tolerance)} |")
        lines.append("")
    names = list(runs[0]["bounds"])
    lines += ["Mean over seeds per (series, n):", "",
              "| series | n | N | gap (smoothed) | " + " | ".join(names) + " | epochs |",
              "|---|---:|---:|---:|" + "---:|" * (len(names) + 1)]
    for series, indices in result["series"].items():
        chosen = [dict(runs[i], n=runs[i]["n_items"], draws=runs[i]["n"]) for i in indices]
        cols = [_grouped(chosen, lambda r: r["smoothed"]["gap"])] + [_grouped(chosen, lambda r, q=q: r["bounds"][q]["bound"])
                                                                     for q in names]
        draws, epochs = _grouped(chosen, lambda r: r["draws"]), _grouped(chosen, lambda r: r["epochs"])
        for n in cols[0]:
            lines.append(f"| {series} | {n} | {draws[n][0]:.0f} | {cols[0][n][0]:.4f} | "
                         + " | ".join(f"{c[n][0]:.3g}" for c in cols[1:]) + f" | {epochs[n][0]:.0f} |")
    return "\n".join(lines) + "\n"


def catalogue_plot(result, path) -> None:
    """Per series: the gap and each shared bound against n, each divided by its value at the smallest n."""
    runs = result["runs"]
    fig, axes = plt.subplots(1, len(result["series"]), figsize=(6 * len(result["series"]), 5), squeeze=False)
    for ax, (series, indices) in zip(axes[0], result["series"].items()):
        chosen = [dict(runs[i], n=runs[i]["n_items"]) for i in indices]
        quantities = [(GAP, lambda r: r["smoothed"]["gap"])] + [
            (q, lambda r, q=q: r["bounds"][q]["bound"]) for q in runs[0]["bounds"] if "shared" in q]
        for name, value in quantities:
            stats = _grouped(chosen, value)
            first = next(iter(stats.values()))[0]
            if first > 0:
                ax.plot(list(stats), [v[0] / first for v in stats.values()], "o-" if name == GAP else ".--", label=name)
        ax.set(xscale="log", yscale="log", xlabel="catalogue n (items)", ylabel="value / value at the smallest n",
               title=f"{series}: exponents in n")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sharing_markdown(result) -> str:
    """Kendall's τ of each bound with the gap; paired untied − tied differences; every model."""
    runs = result["runs"]
    lines = [_header(result) + _union_line(result), "",
             f"Grid: n ∈ {result['grid']['items']}, k ∈ {result['grid']['conv_channels']} (k' = C), input dropout ∈ "
             f"{result['grid']['dropouts']}, each tied and untied: {len(runs)} models. Sharing-aware bound: "
             f"`{result['sharing_aware']}`; naive: `{result['naive']}`.", "",
             "| bound | Kendall τ with the split gap (all models) | p-value | mean τ within each n |"
             " untied − tied: mean [95% CI] | configurations untied > tied |", "|---|---:|---:|---:|---:|---:|"]
    gap = result["paired_untied_minus_tied"][GAP]
    lines.append(f"| {GAP} | — | — | — | {gap['mean']:+.4f} [{gap['ci95'][0]:+.4f}, {gap['ci95'][1]:+.4f}] | "
                 f"{gap['positive']} / {gap['count']} |")
    for name, tau in result["kendall_tau"].items():
        d = result["paired_untied_minus_tied"][name]
        within = list(tau["within_n"].values())
        lines.append(f"| {name} | {tau['tau']:+.3f} | {tau['p_value']:.2g} | {sum(within) / len(within):+.3f} | "
                     f"{d['mean']:+.4g} [{d['ci95'][0]:+.4g}, {d['ci95'][1]:+.4g}] | {d['positive']} / {d['count']} |")
    aware, naive = result["sharing_aware"], result["naive"]
    lines += ["", f"| n | k | dropout | filters | parameters | gap (smoothed) | R̂ | R | {aware} | {naive} | epochs |",
              "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        s = r["smoothed"]
        lines.append(f"| {r['n_items']} | {r['k']} | {r['dropout']} | {'tied' if r['tied'] else 'untied'} | "
                     f"{r['model_parameters']} | {s['gap']:.4f} | {s['empirical_risk']:.4f} | {s['population_risk']:.4f} | "
                     f"{r['bounds'][aware]['bound']:.4g} | {r['bounds'][naive]['bound']:.4g} | {r['epochs']} |")
    return "\n".join(lines) + "\n"


def sharing_plot(result, path) -> None:
    """The split gap against the sharing-aware and the naive bound, tied (o) and untied (x) per n."""
    runs = result["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colours = {n: f"C{j}" for j, n in enumerate(sorted({r["n_items"] for r in runs}))}
    for ax, name in zip(axes, (result["sharing_aware"], result["naive"])):
        for r in runs:
            ax.scatter(r["bounds"][name]["bound"], r["smoothed"]["gap"], marker="o" if r["tied"] else "x",
                       color=colours[r["n_items"]])
        for n, colour in colours.items():
            ax.scatter([], [], color=colour, label=f"n = {n}")
        ax.scatter([], [], marker="o", color="k", label="tied")
        ax.scatter([], [], marker="x", color="k", label="untied")
        ax.set(xscale="log", xlabel=f"bound: {name} (nats)", ylabel="split gap, smoothed (nats)",
               title=f"Kendall τ = {result['kendall_tau'][name]['tau']:+.2f}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
