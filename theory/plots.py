"""PNG plots of the theory experiments (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from theory.bounds import REPORTED
from theory.reporting import ESTIMATOR_LABELS, _grouped


def _series(runs, value):
    stats = _grouped(runs, value)
    n = np.array(list(stats), float)
    return n, np.array([v[0] for v in stats.values()]), np.array([v[1] for v in stats.values()])


def certify_plot(result, path) -> None:
    """Left: TV_joint against N for every estimator and the model's certified TV; right: the
    local TV slopes with their bootstrap intervals."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    runs = result["runs"]
    for name, label in ESTIMATOR_LABELS.items():
        n, mean, sd = _series(runs, lambda r, name=name: r[name]["tv_joint"])
        axes[0].errorbar(n, mean, yerr=sd, marker="o", capsize=3, label=f"{label} (measured)")
    for kind, style in (("best", "k-"), ("centred", "k--"), ("plain", "k:")):
        n, mean, _ = _series(runs, lambda r, kind=kind: r["certificate"][kind]["tv_bound"])
        axes[0].plot(n, mean, style, marker="v", label=f"Conv4Rec certified ({kind}), 95%")
    axes[0].axhline(1.0, color="grey", linestyle=":", label="TV ≤ 1 always: certificates above it are vacuous")
    axes[0].set(xscale="log", yscale="log", xlabel="N (scored draws)", ylabel="E_u TV(p_u, q_u)",
                title="recovery: measured and certified TV")
    if not result["tv_local_slopes"]:  # one N: no slope to draw
        axes[1].set_visible(False)
    for j, (name, label) in enumerate(ESTIMATOR_LABELS.items()):
        local = result["tv_local_slopes"].get(name, [])
        if not local:
            continue
        mid = np.array([np.sqrt(e["from"] * e["to"]) for e in local]) * (1 + 0.03 * (j - 2))
        slope = np.array([e["slope"] for e in local])
        err = np.abs(np.array([e["ci95"] for e in local]).T - slope)
        axes[1].errorbar(mid, slope, yerr=err, marker="o", capsize=3, label=label)
    axes[1].axhline(-0.5, color="grey", linestyle=":", label="−0.5 (parametric TV rate)")
    axes[1].set(xscale="log", xlabel="N (geometric midpoint of neighbouring grid points)",
                ylabel="local slope of log TV on log N", title="local TV slopes, 95% bootstrap over seeds")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def bounds_plot(result, path) -> None:
    """Left: the gaps of both modes and the leakage; right: the split-mode bounds beside the
    split gap, log-log. Legends sit beside their panels, so no curve hides behind them."""
    fig, axes = plt.subplots(1, 2, figsize=(17, 5.5))
    runs = result["runs"]
    for label, value, style in (
            ("Conv4Rec same-sample gap", lambda r: r["same_sample"]["log_loss"]["gap"], "C0-o"),
            ("Conv4Rec split gap (smoothed)", lambda r: r["split"]["smoothed"]["gap"], "C1-o"),
            ("|Conv4Rec leakage| (hollow where negative)", lambda r: r["leakage"], "C2-s"),
            ("per-user same-sample gap", lambda r: r["per_user"]["same_sample"]["log_loss"]["gap"], "C0:^"),
            ("per-user split |gap|", lambda r: abs(r["per_user"]["split"]["log_loss"]["gap"]), "C1:^"),
            ("per-user Hoeffding term", lambda r: r["per_user"]["split"]["hoeffding"], "k:"),
    ):
        n, mean, _ = _series(runs, value)
        line = axes[0].plot(n, np.abs(mean), style, label=label)[0]
        negative = mean < 0
        axes[0].plot(n[negative], -mean[negative], "s", mfc="white", color=line.get_color())
    axes[0].set(xscale="log", yscale="log", xlabel="N (scored draws)", ylabel="nats",
                title="generalization gap: same-sample vs split (leakage)")
    n, gap, _ = _series(runs, lambda r: r["split"]["smoothed"]["gap"])
    axes[1].plot(n, np.abs(gap), "k-o", label="|split gap| (smoothed)")
    for j, (form, variant) in enumerate(REPORTED):
        n, mean, _ = _series(runs, lambda r, form=form, variant=variant: r["bounds"][variant][form]["bound"])
        slope = result["slopes"][f"{form} ({variant})"]["bound"]
        axes[1].plot(n, mean, "-" if variant == "shared" else ":", color=f"C{j // 2}", marker=".",
                     label=f"{form} ({variant}): slope {slope['slope']:.2f} [{slope['ci95'][0]:.2f}, {slope['ci95'][1]:.2f}]")
    axes[1].set(xscale="log", yscale="log", xlabel="N (scored draws)", ylabel="nats",
                title="split mode, ℓ2 inputs, smoothed loss: bounds on the gap")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
