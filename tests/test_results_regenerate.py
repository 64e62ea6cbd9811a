"""Every committed report regenerates from its JSON, byte for byte: the report writers still read
the records as they were written (charts are left out: their bytes follow matplotlib's version)."""

import json
from pathlib import Path

import pytest

from benchmarks.accuracy import core_ml100k, loss_control, paired_gap, rank_sweep
from benchmarks.accuracy.report import markdown_tables
from benchmarks.gems.report import markdown_report
from benchmarks.speed import report as speed_report

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
WRITERS = {  # committed markdown -> (its JSON, the writer)
    **{f"accuracy/{d}.md": (f"accuracy/{d}.json", markdown_tables)
       for d in ("ml-100k", "ml-latest-small", "douban", "coat")},
    "accuracy/rank-sweep.md": ("accuracy/rank-sweep.json", rank_sweep.markdown),
    "accuracy/loss-control.md": ("accuracy/loss-control.json", loss_control.markdown),
    "accuracy/paired-gap.md": ("accuracy/paired-gap.json", paired_gap.markdown),
    "gems/gems.md": ("gems/gems.json", markdown_report),
    "gems/candidate-default/gems.md": ("gems/candidate-default/gems.json", markdown_report),
    "core_ml100k.md": ("core_ml100k.json", core_ml100k.markdown),
}


@pytest.mark.parametrize("report", sorted(WRITERS))
def test_report_regenerates_from_its_json(report):
    source, markdown = WRITERS[report]
    assert markdown(json.loads((RESULTS / source).read_text())) == (RESULTS / report).read_text()


@pytest.mark.parametrize(("folder", "device"), [("speed/cpu-idle", "cpu"), ("speed/gpu-h200", "gpu")])
def test_speed_tables_regenerate_from_their_records(folder, device):
    records = speed_report.load_results(RESULTS / folder, device)
    assert speed_report.markdown(records) == (RESULTS / folder / f"{device}.md").read_text()


THEORY_RESULTS = Path(__file__).resolve().parents[1] / "theory" / "results"


@pytest.mark.parametrize("report", sorted(str(p.relative_to(THEORY_RESULTS)) for p in THEORY_RESULTS.glob("*/*.md")))
def test_theory_reports_regenerate_from_their_json(report):
    from theory.experiments import REPORTS

    path = THEORY_RESULTS / report
    markdown = REPORTS[path.stem][0]
    assert markdown(json.loads(path.with_suffix(".json").read_text())) == path.read_text()
