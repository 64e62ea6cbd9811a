"""The `convae` command line. It only parses flags and calls one library function per command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from convae_jax import config as config_lib
from convae_jax.data.loaders import DATASETS
from convae_jax.data.prepared import ROWS_PER_GROUP
from convae_jax.data.table import RatingsTable
from convae_jax.distributed import Cluster, is_writer, lost_process_message
from convae_jax.errors import ConvaeError

PRESETS = {"default": config_lib.default, "testing": config_lib.testing}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="config preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set model.hidden=(256,) (repeatable)")


def config_from(args) -> config_lib.Config:
    return PRESETS[args.preset]().override(args.overrides)


TABLE_FLAGS = ("ratings", "test", "columns", "scale", "sep", "header")


def add_table_flags(parser: argparse.ArgumentParser) -> None:
    """The flags naming one's own ratings table (`RatingsTable`), for every command that reads one."""
    group = parser.add_argument_group("one's own ratings table (instead of --dataset)")
    group.add_argument("--ratings", type=Path, metavar="FILE",
                       help="ratings file: CSV, TSV or any one-character separator (or '::'), or .parquet")
    group.add_argument("--test", type=Path, metavar="FILE",
                       help="test file laid out like --ratings, every id seen there (default: a seeded hold-out)")
    group.add_argument("--columns", metavar="USER,ITEM[,RATING]",
                       help="header names or 0-based positions, e.g. userId,movieId,rating or 0,1,2; "
                            "without a rating column the table is implicit (one channel)")
    group.add_argument("--scale", metavar="V1,V2,...|START:STOP:STEP",
                       help="the allowed ratings, e.g. 1,2,3,4,5 or 0.5:5:0.5 for half stars")
    group.add_argument("--sep", help="field separator, e.g. , or '\\t' (default: sniffed)")
    group.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                       help="whether the first line names the columns (default: detected)")


def table_from(args) -> RatingsTable | None:
    """The `RatingsTable` the table flags name; None without --ratings."""
    if args.ratings is None:
        given = [f"--{name}" for name in TABLE_FLAGS if getattr(args, name) is not None]
        if given:
            raise ConvaeError(f"{', '.join(given)}: these describe a ratings file; name it with --ratings")
        return None
    if args.columns is None:
        raise ConvaeError("--ratings needs --columns USER,ITEM[,RATING]")
    return RatingsTable.from_text(ratings=args.ratings, test=args.test, columns=args.columns, scale=args.scale,
                                  sep=args.sep, header=args.header)


def _default_workdir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _cmd_train(args) -> int:
    cluster = Cluster.from_flags_or_env(args.coordinator, args.num_processes, args.process_id)
    if cluster is not None:
        cluster.initialize()  # before any JAX computation
    from convae_jax.experiment import LEARNING_CURVE, resume_run, train_and_evaluate

    table = table_from(args)
    if args.resume is not None:
        if args.workdir or args.data_dir or args.dataset or table or args.prepared:
            raise ConvaeError("--resume continues a run with its own config and data; drop --workdir, "
                              "--dataset, --data-dir, --ratings and --prepared")
        workdir, metrics = args.resume, resume_run(args.resume, mesh_overrides=args.overrides)
    else:
        for flag, given in (("--ratings", table is not None), ("--prepared", args.prepared is not None)):
            if given and (args.dataset or args.data_dir):
                raise ConvaeError(f"{flag} names the data: drop --dataset and --data-dir")
        if table is not None and args.prepared is not None:
            raise ConvaeError("--prepared names the data: drop --ratings")
        workdir = args.workdir or _default_workdir()
        metrics = train_and_evaluate(config_from(args), workdir, dataset=args.dataset or "synthetic",
                                     data_dir=args.data_dir, table=table, prepared=args.prepared)
    if is_writer():
        print(f"run directory: {workdir}")
        print(f"learning curve: {Path(workdir) / LEARNING_CURVE}")
        print(json.dumps(metrics, indent=2))
    return 0


def _cmd_prepare(args) -> int:
    from convae_jax.data.prepared import prepare_dataset, prepare_table

    table = table_from(args)
    if (table is None) == (args.dataset is None):
        raise ConvaeError("name the data: --dataset NAME --data-dir DIR, or --ratings FILE --columns ...")
    if table is not None and args.data_dir:
        raise ConvaeError("--ratings names the data: drop --data-dir")
    if args.dataset is not None and args.data_dir is None:
        raise ConvaeError(f"--dataset {args.dataset} needs --data-dir DIR")
    options = {"orientation": args.orientation, "rows_per_group": args.rows_per_group}
    layout = (prepare_table(table, args.out, **options) if table is not None
              else prepare_dataset(args.dataset, args.data_dir, args.out, **options))
    print(json.dumps({"layout": str(layout.path), "orientation": layout.orientation, "n_users": layout.n_users,
                      "n_items": layout.n_items, "fingerprint": layout.fingerprint,
                      "parts": {name: {key: info[key] for key in ("nnz", "records")} | {"row_groups": len(info["group_rows"])}
                                for name, info in layout.parts.items()}}, indent=2))
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
    from theory.experiments import run_theory, write_report

    if args.report_only:
        if args.out is None:
            raise ConvaeError("--report-only rewrites the report of an existing run: give its folder with --out")
        write_report(args.experiment, args.out)
        return 0
    run_theory(args.experiment, quick=args.quick, out_dir=args.out, sizes=args.sizes, seeds=args.seeds,
               l2_per_draw=args.l2_per_draw, overrides=tuple(args.override or ()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train and evaluate; with no flags, on the built-in synthetic data")
    train.add_argument("--dataset", choices=("synthetic",) + DATASETS, help="a named dataset (default: synthetic)")
    train.add_argument("--data-dir", type=Path, help="directory holding the dataset's files")
    train.add_argument("--workdir", type=Path, help="run directory (default: runs/<timestamp>)")
    train.add_argument("--prepared", type=Path, metavar="LAYOUT",
                       help="a layout from `convae prepare`: each process reads only its own row groups")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue an interrupted run from its last checkpoint, with its own config and data")
    add_table_flags(train)
    add_config_flags(train)
    hosts = train.add_argument_group("several hosts (one process per host; or the CONVAE_COORDINATOR, "
                                     "CONVAE_NUM_PROCESSES and CONVAE_PROCESS_ID environment variables)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="where process 0 serves the coordinator")
    hosts.add_argument("--num-processes", type=int, help="how many processes take part")
    hosts.add_argument("--process-id", type=int, help="this process's index, 0..num-processes-1")
    train.set_defaults(run=_cmd_train)

    prepare = sub.add_parser("prepare", help="convert a ratings table into Parquet row groups that each process "
                                              "of a several-host run reads its share of")
    prepare.add_argument("--dataset", choices=DATASETS, help="a named dataset")
    prepare.add_argument("--data-dir", type=Path, help="directory holding the dataset's files")
    prepare.add_argument("--out", type=Path, required=True, help="the layout's directory (must not exist)")
    prepare.add_argument("--orientation", choices=("user", "item"), default=config_lib.ModelConfig().orientation,
                         help="what a row is, as model.orientation (default: %(default)s)")
    prepare.add_argument("--rows-per-group", type=int, default=ROWS_PER_GROUP,
                         help="rows per Parquet row group, the unit each process reads (default: %(default)s)")
    add_table_flags(prepare)
    prepare.set_defaults(run=_cmd_prepare)

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
    theory.add_argument("experiment", choices=("certify", "bounds", "pacbayes", "compress", "catalogue", "sharing"),
                        help="certify: TV recovery with a held-out certificate; bounds: split-mode bounds and leakage; "
                             "pacbayes: a PAC-Bayes bound with a prior from training data; "
                             "compress: a compression (Occam) bound on a quantised subspace model; "
                             "catalogue: exponents in the catalogue size n; sharing: tied vs untied 1x1 filters at k < C")
    theory.add_argument("--quick", action="store_true", help="the small preset (minutes); default: the full preset")
    theory.add_argument("--sizes", type=int, nargs="+", help="replace the preset's grid of N")
    theory.add_argument("--seeds", type=int, nargs="+", help="replace the preset's seeds")
    theory.add_argument("--l2-per-draw", type=float, help="λ: train.l2 = λ·N/m at each N (a norm budget fixed in N)")
    theory.add_argument("--override", action="append",
                        help="a config assignment section.field=value after the preset's (repeatable)")
    theory.add_argument("--out", type=Path, help="results folder (default: ./theory-results/<preset>)")
    theory.add_argument("--report-only", action="store_true", help="only rewrite the .md and .png from the JSON in --out")
    theory.set_defaults(run=_cmd_theory)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConvaeError as err:
        print(f"convae: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # JAX's runtime errors; with several processes, a lost peer
        message = lost_process_message(err)
        if message is None:
            raise
        print(f"convae: error: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(3)  # not the interpreter's exit: JAX's shutdown barrier would wait for the lost process
    except BrokenPipeError:  # the reader went away (`convae recommend … | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 0


if __name__ == "__main__":
    sys.exit(main())
