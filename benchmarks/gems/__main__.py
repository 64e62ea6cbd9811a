"""`python -m benchmarks.gems`: the gems study on Coat (rating metrics and gem discovery on random
exposure, and the gem figure), or with --report-only gems.md rewritten from gems.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gems", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("..") / "shared" / "data" / "coat",
                        help="folder holding Coat's train.ascii and test.ascii (default: ../shared/data/coat)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results" / "gems",
                        help="results folder (default: benchmarks/results/gems)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--report-only", action="store_true", help="only rewrite gems.md from gems.json")
    return parser


def main(argv=None) -> int:
    from benchmarks.gems.report import markdown_report, write_report
    from benchmarks.gems.study import evaluate_coat

    args = build_parser().parse_args(argv)
    if args.report_only:
        result = write_report(args.out)
    else:
        result = evaluate_coat(args.data_dir, args.out, seeds=tuple(args.seeds), overrides=tuple(args.overrides))
    print(markdown_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
