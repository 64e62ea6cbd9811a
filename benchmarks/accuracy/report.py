"""The comparison's report: `<dataset>.md` (mean ± std tables, one per task) and `<dataset>.png`
(each task's headline metric), written from `<dataset>.json` alone, so that they can be rewritten
without rerunning anything (`--report-only`)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.accuracy.entrants import NEW_USERS
from convae_jax.record import DDOF, record_line

RATING_METRICS = ("rmse", "mae", "nll", "accuracy", "ece")
# The random-exposure protocol's columns (`evaluate.random_exposure_protocol`): per-user AUC of liked
# against not liked and precision@3 of liked, ranked by the expected rating and by P(rating >= 4).
EXPOSURE_METRICS = ("rmse", "mae", "nll", "ece", "user_auc/expected_rating", "user_auc/p_liked",
                    "user_p@3/expected_rating", "user_p@3/p_liked")
# Per task kind (or a whole task name, which takes precedence), its tables: (title suffix, metrics).
# The implicit task's second table holds the same trained models' ratings of the held-out users,
# beside the rating floors.
TABLES = {"explicit": [("", (*RATING_METRICS, "recall@20"))],
          "explicit/random-exposure": [("", EXPOSURE_METRICS)],
          "implicit": [("", ("recall@20", "recall@50", "ndcg@100")),
                       (", the held-out users' ratings", tuple(f"{NEW_USERS}/{m}" for m in RATING_METRICS))]}


def write_report(dataset: str, *, out_dir) -> dict:
    """`<dataset>.md` and `<dataset>.png` from `<dataset>.json` (whatever parts of it exist)."""
    out_dir = Path(out_dir)
    doc = json.loads((out_dir / f"{dataset}.json").read_text())
    (out_dir / f"{dataset}.md").write_text(markdown_tables(doc))
    plot(doc, out_dir / f"{dataset}.png")
    return doc


def markdown_tables(doc: dict) -> str:
    """One markdown table per task (two for the implicit task): mean ± std over seeds of each main
    metric, and the commit of the code each row ran (rows are rerun separately, so they can
    differ); a model appears in a table where it has at least one of its metrics."""
    envs = [r["environment"] for table in doc["tables"].values() for r in table.values()]
    commands = sorted({e["command"] for e in envs})
    machine = record_line({k: v for k, v in envs[0].items() if k != "commit"})
    lines = [f"# {doc['dataset']}{' (quick)' if doc.get('quick') else ''}", "",
             f"Seeds: {doc['seeds']}; mean ± std (ddof {DDOF}) over seeds. Machine: {machine}. "
             "Commands: " + "; ".join(f"`{c}`" for c in commands) + ". Commit: the code's, where the "
             "row's record has one (– for rows recorded before commits were kept).", ""]
    for task, table in doc["tables"].items():
        for title, metrics in TABLES.get(task, TABLES[task.split("/")[0]]):
            rows = {name: record for name, record in table.items()
                    if any(m in record.get("summary", {}) for m in metrics)}
            if not rows:
                continue
            lines += [f"## {task}{title}", "",
                      "| model | source | seeds | " + " | ".join(metrics) + " | selected point | commit |",
                      "|---|---|---|" + "---|" * len(metrics) + "---|---|"]
            for name, record in rows.items():
                summary = record["summary"]
                cells = [f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" if m in summary else "–" for m in metrics]
                seeds = next(iter(summary.values()))["n"]
                lines.append(f"| {name} | {record['source']} | {seeds} | " + " | ".join(cells)
                             + f" | `{json.dumps(record.get('selected_point'))}` | {_short_commit(record['environment'])} |")
            lines.append("")
    return "\n".join(lines)


def _short_commit(env: dict) -> str:
    commit = env.get("commit")
    return commit[:7] + ("+dirty" if commit.endswith("+dirty") else "") if commit else "–"


def plot(doc: dict, path) -> None:
    """One bar chart per task of its headline metric (RMSE or NDCG@100), mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(doc["tables"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = "rmse" if task.startswith("explicit") else "ndcg@100"
        names = [n for n, r in doc["tables"][task].items() if metric in r.get("summary", {})]
        means = [doc["tables"][task][n]["summary"][metric]["mean"] for n in names]
        stds = [doc["tables"][task][n]["summary"][metric]["std"] for n in names]
        ax.barh(names, means, xerr=stds, color="tab:blue")
        ax.set_title(f"{doc['dataset']} {task}", fontsize=9)
        ax.set_xlabel(metric)
        if means:
            ax.set_xlim(min(means) * 0.95 if metric == "rmse" else 0, max(means) * 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
