"""`python -m benchmarks.accuracy`: Conv4Rec against its peers on one real dataset, on the same
splits, grids of the same size and the same metric code (docs/results.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convae_jax.data.table import RatingsTable
from convae_jax.errors import ConvaeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__)
    parser.add_argument("--dataset", choices=("ml-100k", "ml-latest-small", "douban", "coat"),
                        help="a dataset of the comparison; with --ratings, none: results are named after the ratings file")
    parser.add_argument("--data-dir", type=Path, help="the dataset's folder (default: ../shared/data/<dataset>)")
    own = parser.add_argument_group("random exposure on one's own files (data.load_random_exposure)")
    own.add_argument("--ratings", type=Path, help="self-selected training ratings (what users chose to rate)")
    own.add_argument("--test", type=Path, help="ratings of items shown to the users at random; ids all in --ratings")
    own.add_argument("--columns", help="user,item,rating: header names or 0-based positions")
    own.add_argument("--scale", help="the rating values, e.g. 1,2,3,4,5 or 0.5:5:0.5")
    own.add_argument("--sep", help="field separator (default: sniffed)")
    own.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                     help="whether the files' first line names the columns (default: detected)")
    parser.add_argument("--quick", action="store_true", help="one seed, one grid point, a few epochs (for tests)")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/accuracy)")
    parser.add_argument("--models", help="comma-separated model names to (re)run, merged into the existing JSON")
    parser.add_argument("--tasks", help="comma-separated tasks to (re)run, e.g. explicit/u1,implicit/strong-generalization")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the .md and .png from the JSON")
    return parser


def main(argv=None) -> int:
    from benchmarks.accuracy.report import write_report
    from benchmarks.accuracy.run import RESULTS_DIR, compare

    parser = build_parser()
    args = parser.parse_args(argv)
    out = args.out or RESULTS_DIR
    if (args.ratings is None) != (args.test is None) or (args.ratings is not None and not (args.columns and args.scale)):
        parser.error("--ratings and --test go together, with --columns user,item,rating and --scale")
    if args.dataset is None and args.ratings is None:
        parser.error("give --dataset, or --ratings and --test")
    name = args.dataset or (args.ratings.stem if args.ratings is not None else None)
    try:
        if args.report_only:
            write_report(name, out_dir=out)
            print(f"results: {out / name}.md, .png")
            return 0
        table = None if args.ratings is None else RatingsTable.from_text(
            ratings=args.ratings, test=args.test, columns=args.columns, scale=args.scale, sep=args.sep, header=args.header)
        data_dir = args.data_dir or Path("..") / "shared" / "data" / name
        models = tuple(args.models.split(",")) if args.models else None
        tasks = tuple(args.tasks.split(",")) if args.tasks else None
        compare(name, data_dir, quick=args.quick, out_dir=out, models=models, tasks=tasks, argv=argv, table=table)
    except ConvaeError as err:
        print(f"python -m benchmarks.accuracy: error: {err}", file=sys.stderr)
        return 2
    print(f"results: {out / name}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
