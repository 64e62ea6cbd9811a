"""PNG plots of the theory experiments (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from theory.bounds import FORMS, VARIANTS  # noqa: E402
from theory.reporting import ESTIMATOR_LABELS, _grouped  # noqa: E402


def recovery_plot(result, path) -> None:
    """TV against N on log-log axes (joint, implicit, explicit) for every estimator: seed means
    with ± sd bars and the fitted line, its slope and 95% CI in the legend."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, part in zip(axes, ("joint", "implicit", "explicit")):
        for name, label in ESTIMATOR_LABELS.items():
            stats = _grouped(result["runs"], lambda r: r[name][f"tv_{part}"])
            n = np.array(list(stats))
            mean, sd = (np.array([stats[k][j] for k in n]) for j in (0, 1))
            slope = result["tv_slopes"][name][part]
            line = ax.errorbar(n, mean, yerr=sd, marker="o", capsize=3, linestyle="none",
                               label=f"{label}: slope {slope['slope']:.2f} [{slope['ci95'][0]:.2f}, {slope['ci95'][1]:.2f}]")
            ax.plot(n, np.exp(slope["intercept"]) * n ** slope["slope"], color=line[0].get_color(), alpha=0.6)
        ax.set(xscale="log", yscale="log", xlabel="N (draws)", ylabel=f"TV ({part})", title=f"TV to the truth: {part}")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def bounds_plot(result, path) -> None:
    """Left: gap, excess risk and every bound against N; middle: bound/gap; right: the
    naive/shared ratio of each bound against the catalogue size."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    runs = result["runs"]
    gap = _grouped(runs, lambda r: r["measured"]["generalization_gap"])
    n = np.array(list(gap))
    gap_mean = np.array([gap[k][0] for k in n])
    excess = np.array([v[0] for v in _grouped(runs, lambda r: r["measured"]["excess_risk"]).values()])
    axes[0].plot(n, np.abs(gap_mean), "k-o", label="|generalization gap|")
    axes[0].plot(n, excess, "k--s", label="excess risk (E KL)")
    for form, color in zip(FORMS, ("C0", "C1", "C2")):
        for variant, style in zip(VARIANTS, ("-", ":")):
            b = np.array([v[0] for v in _grouped(runs, lambda r: r["bounds"][variant][form]["bound"]).values()])
            axes[0].plot(n, b, style, color=color, marker=".", label=f"{form} ({variant})")
            axes[1].plot(n, b / gap_mean, style, color=color, marker=".", label=f"{form} ({variant})")
    axes[0].set(xscale="log", yscale="log", xlabel="N (draws)", ylabel="nats", title="gap, excess risk and bounds")
    axes[1].set(xscale="log", yscale="log", xlabel="N (draws)", ylabel="bound / gap", title="looseness")
    sizes = [run["n_items"] for run in result["catalogue"]]
    for form, color in zip(FORMS, ("C0", "C1", "C2")):
        axes[2].plot(sizes, [run["naive_over_shared"][form] for run in result["catalogue"]], "-o", color=color, label=form)
    axes[2].set(xscale="log", yscale="log", xlabel="n items", ylabel="naive / shared bound",
                title=f"weight sharing (N = {result['preset']['catalogue_draws']})")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
