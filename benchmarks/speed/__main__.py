"""`python -m benchmarks.speed`: JAX against the PyTorch baseline, side by side on the same batches:
warm-up, s/epoch, users/s, memory, the epoch's floor and top-100 inference (benchmarks/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__)
    parser.add_argument("--shapes", nargs="+", default=["ml-100k", "ml-1m-shape"],
                        help="ml-100k, ml-1m-shape, ml-20m-shape (default: ml-100k ml-1m-shape)")
    parser.add_argument("--batch-rows", nargs="+", type=int, default=[128, 512], help="users per step (default: 128 512)")
    parser.add_argument("--variants", nargs="+", default=["cpu"],
                        help="variant names or sets: cpu, precision, gpu (see benchmarks/README.md)")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per variant; the median is reported")
    parser.add_argument("--max-steps", type=int, help="time only this many steps per epoch (s/epoch projected)")
    parser.add_argument("--hidden", type=int, default=600, help="d (default 600)")
    parser.add_argument("--infer-users", type=int, default=10_000, help="users whose top-100 is timed (default 10000)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--data-dir", type=Path, default=Path("..") / "shared" / "data", help="folder holding ml-100k/")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results" / "speed")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory probes")
    parser.add_argument("--sequential", action="store_true", help="one variant at a time, not interleaved (big shapes)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite <device>.md and .png from the JSON records")
    return parser


def main(argv=None) -> int:
    from benchmarks.speed import report
    from benchmarks.speed.bench_train import run_benchmarks

    args = build_parser().parse_args(argv)
    if not args.report_only:
        run_benchmarks(shapes=args.shapes, batch_rows=args.batch_rows, variants=args.variants, epochs=args.epochs,
                       max_steps=args.max_steps, hidden=args.hidden, infer_users=args.infer_users,
                       interleave=not args.sequential, device=args.device, data_dir=args.data_dir, out=args.out,
                       memory=not args.no_memory)
    else:
        report.write_report(args.out, device=args.device)
    print(f"results: {args.out}/{args.device}-*.json, {args.device}.md, {args.device}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
