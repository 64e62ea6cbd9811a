"""The `convae` command line. It only parses flags and calls one library function per command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from convae_jax import config as config_lib
from convae_jax.data.loaders import DATASETS
from convae_jax.errors import ConvaeError

PRESETS = {"default": config_lib.default, "testing": config_lib.testing}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="config preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set model.hidden=(256,) (repeatable)")


def config_from(args) -> config_lib.Config:
    return PRESETS[args.preset]().override(args.overrides)


def _default_workdir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _cmd_train(args) -> int:
    from convae_jax.experiment import resume_run, train_and_evaluate

    if args.resume is not None:
        if args.workdir or args.overrides or args.data_dir:
            raise ConvaeError("--resume continues a run with its own config and data; drop --workdir, --set and --data-dir")
        workdir, metrics = args.resume, resume_run(args.resume)
    else:
        workdir = args.workdir or _default_workdir()
        metrics = train_and_evaluate(config_from(args), workdir, dataset=args.dataset, data_dir=args.data_dir)
    print(f"run directory: {workdir}")
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_evaluate(args) -> int:
    from convae_jax.experiment import evaluate_run

    print(json.dumps(evaluate_run(args.workdir, dataset=args.dataset, data_dir=args.data_dir), indent=2))
    return 0


def _cmd_recommend(args) -> int:
    from convae_jax.experiment import recommend

    rows = recommend(args.workdir, user=args.user, mode=args.mode, k=args.k, gem_quantile=args.gem_quantile,
                     gem_tilt=args.gem_tilt)
    print(f"top {len(rows)} '{args.mode}' items for user {args.user}:")
    for rank, row in enumerate(rows, start=1):
        why = row.pop("why")
        detail = "  ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in row.items())
        print(f"{rank:3d}. {detail}  why: {why}")
    return 0


def _cmd_explain(args) -> int:
    from convae_jax.explain import explain_run

    explanation = explain_run(args.workdir, user=args.user, item=args.item, png=args.png)
    for key, value in explanation.summary().items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if args.png is not None:
        print(f"bar chart: {args.png}")
    return 0


def _cmd_theory(args) -> int:
    from theory.experiments import run_theory

    run_theory(args.experiment, quick=args.quick, out_dir=args.out, sizes=args.sizes, seeds=args.seeds,
               l2_per_draw=args.l2_per_draw, overrides=tuple(args.override or ()))
    return 0


def _cmd_compare(args) -> int:
    from convae_jax.compare import RESULTS_DIR, compare, write_report

    if args.report_only:
        write_report(args.dataset, args.out or RESULTS_DIR)
        print(f"results: {(args.out or RESULTS_DIR) / args.dataset}.md, .png")
        return 0
    data_dir = args.data_dir or Path("..") / "shared" / "data" / args.dataset
    models = tuple(args.models.split(",")) if args.models else None
    tasks = tuple(args.tasks.split(",")) if args.tasks else None
    compare(args.dataset, data_dir, quick=args.quick, out_dir=args.out or RESULTS_DIR, models=models, tasks=tasks)
    print(f"results: {(args.out or RESULTS_DIR) / args.dataset}.json, .md, .png")
    return 0


def _cmd_bench(args) -> int:
    from benchmarks.bench_train import run_benchmarks  # benchmarks import torch; convae_jax never does

    run_benchmarks(shapes=args.shapes, batch_rows=args.batch_rows, variants=args.variants, epochs=args.epochs,
                   max_steps=args.max_steps, hidden=args.hidden, infer_users=args.infer_users,
                   interleave=not args.sequential, device=args.device,
                   data_dir=args.data_dir,
                   out=args.out, memory=not args.no_memory)
    print(f"results: {args.out}/{args.device}-*.json, {args.device}.md, {args.device}.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train and evaluate; with no flags, on the built-in synthetic data")
    train.add_argument("--dataset", default="synthetic", choices=("synthetic",) + DATASETS)
    train.add_argument("--data-dir", type=Path, help="directory holding the dataset's files")
    train.add_argument("--workdir", type=Path, help="run directory (default: runs/<timestamp>)")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue an interrupted run from its last checkpoint, with its own config and data")
    add_config_flags(train)
    train.set_defaults(run=_cmd_train)

    evaluate = sub.add_parser("evaluate", help="re-score a saved run on its test split")
    evaluate.add_argument("--workdir", type=Path, required=True)
    evaluate.add_argument("--dataset", choices=("synthetic",) + DATASETS)
    evaluate.add_argument("--data-dir", type=Path)
    evaluate.set_defaults(run=_cmd_evaluate)

    recommend = sub.add_parser("recommend", help="top-k unseen items for one user of a saved run")
    recommend.add_argument("--workdir", type=Path, required=True)
    recommend.add_argument("--user", required=True, help="raw user id, as in the data file")
    recommend.add_argument("--mode", choices=("consume", "enjoy", "gems"), default="consume")
    recommend.add_argument("-k", type=int, default=10)
    recommend.add_argument("--gem-quantile", type=float, default=0.5,
                           help="gems: keep items below this quantile of the user's P(consume) (1 = no cut)")
    recommend.add_argument("--gem-tilt", type=float, default=0.0,
                           help="gems: discount likely picks by (1 - consume percentile)^tilt (0 = none)")
    recommend.set_defaults(run=_cmd_recommend)

    explain = sub.add_parser("explain", help="why one item sits where it does for one user of a saved run")
    explain.add_argument("--workdir", type=Path, required=True)
    explain.add_argument("--user", required=True, help="raw user id, as in the data file")
    explain.add_argument("--item", required=True, help="raw item id, as in the data file")
    explain.add_argument("--png", type=Path, help="also save the bar chart here")
    explain.set_defaults(run=_cmd_explain)

    theory = sub.add_parser("theory", help="theory checks on synthetic data: certified recovery, generalization bounds")
    theory.add_argument("experiment", choices=("certify", "bounds"),
                        help="certify: TV recovery with a held-out certificate; bounds: split-mode bounds and leakage")
    theory.add_argument("--quick", action="store_true", help="the small preset (minutes); default: the full preset")
    theory.add_argument("--sizes", type=int, nargs="+", help="replace the preset's grid of N")
    theory.add_argument("--seeds", type=int, nargs="+", help="replace the preset's seeds")
    theory.add_argument("--l2-per-draw", type=float, help="λ: train.l2 = λ·N/m at each N (a norm budget fixed in N)")
    theory.add_argument("--override", action="append", help="a config assignment section.field=value after the preset's (repeatable)")
    theory.add_argument("--out", type=Path, help="results folder (default: ./theory-results/<preset>)")
    theory.set_defaults(run=_cmd_theory)

    compare = sub.add_parser("compare", help="Conv4Rec against its peers on one real dataset, same splits and metrics")
    compare.add_argument("--dataset", required=True, choices=("ml-100k", "ml-latest-small", "douban", "coat"))
    compare.add_argument("--data-dir", type=Path, help="the dataset's folder (default: ../shared/data/<dataset>)")
    compare.add_argument("--quick", action="store_true", help="one seed, one grid point, a few epochs (for tests)")
    compare.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/accuracy)")
    compare.add_argument("--models", help="comma-separated model names to (re)run, merged into the existing JSON")
    compare.add_argument("--tasks", help="comma-separated tasks to (re)run, e.g. explicit/u1,implicit/strong-generalization")
    compare.add_argument("--report-only", action="store_true", help="only rewrite the .md and .png from the JSON")
    compare.set_defaults(run=_cmd_compare)

    bench = sub.add_parser("bench", help="JAX against the PyTorch baseline, side by side: s/epoch, memory, top-100")
    bench.add_argument("--shapes", nargs="+", default=["ml-100k", "ml-1m-shape"],
                       help="ml-100k, ml-1m-shape, ml-20m-shape (default: ml-100k ml-1m-shape)")
    bench.add_argument("--batch-rows", nargs="+", type=int, default=[128, 512], help="users per step (default: 128 512)")
    bench.add_argument("--variants", nargs="+", default=["cpu"],
                       help="variant names or sets: cpu, precision, gpu (see benchmarks/README.md)")
    bench.add_argument("--epochs", type=int, default=5, help="timed epochs per variant; the median is reported")
    bench.add_argument("--max-steps", type=int, help="time only this many steps per epoch (s/epoch projected)")
    bench.add_argument("--hidden", type=int, default=600, help="d (default 600)")
    bench.add_argument("--infer-users", type=int, default=10_000, help="users whose top-100 is timed (default 10000)")
    bench.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    bench.add_argument("--data-dir", type=Path, default=Path("..") / "shared" / "data", help="folder holding ml-100k/")
    bench.add_argument("--out", type=Path, default=Path("benchmarks") / "results")
    bench.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory probes")
    bench.add_argument("--sequential", action="store_true", help="one variant at a time, not interleaved (big shapes)")
    bench.set_defaults(run=_cmd_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConvaeError as err:
        print(f"convae: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
