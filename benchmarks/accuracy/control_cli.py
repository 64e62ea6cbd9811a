"""What the accuracy controls (`rank_sweep`, `loss_control`, `paired_gap`) share: the same dataset
and output options, the same first lines (command and machine) of a run, and the same way of
writing `<stem>.json` and rewriting its report from it (`--report-only`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from benchmarks.accuracy.run import RESULTS_DIR
from benchmarks.accuracy.splits import IMPLICIT_USERS
from convae_jax.record import record_line, run_record


def control_parser(module_doc: str, *, datasets: list[str], outputs: str) -> argparse.ArgumentParser:
    """--data-dir, --datasets (among the comparison's strong-generalization datasets), --out and
    --report-only; the description is the first paragraph of the control's module docstring."""
    parser = argparse.ArgumentParser(description=module_doc.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding one sub-folder per dataset")
    parser.add_argument("--datasets", nargs="+", default=datasets, choices=list(IMPLICIT_USERS))
    parser.add_argument("--out", default=str(RESULTS_DIR), help=f"folder for {outputs}")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the JSON in --out")
    return parser


def announce(module: str, argv) -> dict:
    """The run's record (`convae_jax.record.run_record`), its command and machine printed first."""
    record = run_record(program=("python", "-m", module), argv=argv)
    print(f"{record['command']}\n{record_line(record)}", flush=True)
    return record


def write_report(out, stem: str, *, markdown: Callable[[dict], str],
                 plot: Callable[[dict, Path], None] | None = None) -> dict:
    """`<stem>.md` (and `<stem>.png`, where the control has a plot) from `<stem>.json` in `out`."""
    out = Path(out)
    doc = json.loads((out / f"{stem}.json").read_text())
    (out / f"{stem}.md").write_text(markdown(doc))
    if plot is not None:
        plot(doc, out / f"{stem}.png")
    return doc


def save(out, stem: str, doc: dict, *, markdown: Callable[[dict], str],
         plot: Callable[[dict, Path], None] | None = None) -> None:
    """Writes `<stem>.json`, then its report from that file, and prints the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    print(markdown(write_report(out, stem, markdown=markdown, plot=plot)))
