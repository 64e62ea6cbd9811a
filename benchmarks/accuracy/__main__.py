"""`python -m benchmarks.accuracy`: Conv4Rec against its peers on one real dataset, on the same
splits, grids of the same size and the same metric code (docs/results.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convae_jax.errors import ConvaeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__)
    parser.add_argument("--dataset", required=True, choices=("ml-100k", "ml-latest-small", "douban", "coat"))
    parser.add_argument("--data-dir", type=Path, help="the dataset's folder (default: ../shared/data/<dataset>)")
    parser.add_argument("--quick", action="store_true", help="one seed, one grid point, a few epochs (for tests)")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/accuracy)")
    parser.add_argument("--models", help="comma-separated model names to (re)run, merged into the existing JSON")
    parser.add_argument("--tasks", help="comma-separated tasks to (re)run, e.g. explicit/u1,implicit/strong-generalization")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the .md and .png from the JSON")
    return parser


def main(argv=None) -> int:
    from benchmarks.accuracy.report import write_report
    from benchmarks.accuracy.run import RESULTS_DIR, compare

    args = build_parser().parse_args(argv)
    out = args.out or RESULTS_DIR
    try:
        if args.report_only:
            write_report(args.dataset, out_dir=out)
            print(f"results: {out / args.dataset}.md, .png")
            return 0
        data_dir = args.data_dir or Path("..") / "shared" / "data" / args.dataset
        models = tuple(args.models.split(",")) if args.models else None
        tasks = tuple(args.tasks.split(",")) if args.tasks else None
        compare(args.dataset, data_dir, quick=args.quick, out_dir=out, models=models, tasks=tasks, argv=argv)
    except ConvaeError as err:
        print(f"python -m benchmarks.accuracy: error: {err}", file=sys.stderr)
        return 2
    print(f"results: {out / args.dataset}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
