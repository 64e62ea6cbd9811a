"""The learning curve of a run as a PNG: training loss and the validation metric per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from convae_jax.io import atomic_write
from convae_jax.train import EpochRecord


def plot_learning_curve(history: Sequence[EpochRecord], *, select_metric: str, selected_epoch: int | None,
                        path) -> Path:
    """Training loss (left axis) and the validation `select_metric` (right axis) per epoch, the
    selected epoch marked. A negated metric (`neg_ndcg@100`) is drawn as itself (NDCG@100, higher
    is better); a run without validation pairs shows the loss alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    epochs = [r.epoch for r in history]
    fig, loss_axis = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    loss_axis.plot(epochs, [r.train_loss for r in history], "o-", ms=3, color="tab:blue", label="training loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axis.set_ylabel("training loss (L2 included)", color="tab:blue")
    handles = loss_axis.get_lines()
    scored = [r for r in history if select_metric in r.validation]
    if scored:
        sign, name = (-1.0, select_metric[4:]) if select_metric.startswith("neg_") else (1.0, select_metric)
        better = "higher" if sign < 0 else "lower"
        metric_axis = loss_axis.twinx()
        handles += metric_axis.plot([r.epoch for r in scored], [sign * r.validation[select_metric] for r in scored],
                                    "s-", ms=3, color="tab:orange", label=f"validation {name} ({better} is better)")
        metric_axis.set_ylabel(f"validation {name}", color="tab:orange")
    if selected_epoch is not None:
        handles.append(loss_axis.axvline(selected_epoch, color="k", ls="--", lw=1,
                                         label=f"selected epoch {selected_epoch}"))
    loss_axis.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path
