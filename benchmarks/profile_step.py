"""Where one JAX training step spends its time: a `jax.profiler` trace of a few steps of a benchmark
variant, summed per XLA operation and printed as a table (milliseconds per step, share of the
device time). Reads the trace's Chrome-format JSON, so it needs no profiler plugin.

    python -m benchmarks.profile_step --shape ml-20m-shape --batch-rows 1024 --variant jax-bf16 --device gpu
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_train import VARIANTS, BenchSpec, JaxVariant, Workload, set_up_process

def op_times(trace: dict, *, device: str) -> dict[tuple[str, str], float]:
    """Total duration (µs) per (thread, operation) on the device's threads (GPU streams and the
    profiler's op and module lines, which overlap one another, or XLA's CPU executor threads);
    host-side Python and runtime events are left out."""
    names = {(e["pid"], e.get("tid")): e["args"]["name"] for e in trace["traceEvents"]
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    processes = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for event in trace["traceEvents"]:
        if event.get("ph") == "M" or "dur" not in event:  # metadata: process and thread names
            continue
        process = processes.get(event["pid"], "")
        thread = names.get((event["pid"], event.get("tid")), "")
        on_device = "gpu" in process.lower() if device == "gpu" else "XLA" in thread or "tf_" in thread
        if on_device and not event["name"].startswith(("$", "Thunk", "ThunkExecutor")):
            totals[thread if device == "gpu" else "cpu", event["name"]] += float(event["dur"])
    if not totals:
        seen = sorted({(processes.get(e["pid"], ""), names.get((e["pid"], e.get("tid")), "")) for e in trace["traceEvents"]})
        raise ValueError(f"no {device} operations in the trace; its (process, thread) pairs: {seen[:40]}")
    return dict(totals)


def _read_trace(folder: Path) -> dict:
    found = sorted(folder.rglob("*.trace.json.gz")) or sorted(folder.rglob("perfetto_trace.json.gz"))
    if not found:
        raise FileNotFoundError(f"no Chrome-format trace under {folder}")
    with gzip.open(found[-1], "rt") as handle:
        return json.load(handle)


def profile(spec: BenchSpec, variant: str, *, steps: int) -> tuple[float, dict[tuple[str, str], float]]:
    """(median wall seconds of one step, µs per step of each op) for `variant` on `spec`'s shape."""
    import jax

    _, flavour, precision, _ = VARIANTS[variant]
    set_up_process(spec)  # the allocator the benchmark's processes run under
    runner = JaxVariant(Workload(spec), precision, flavour)
    runner.warm_up()
    walls = []
    for batch in runner.batches[1:steps + 1]:  # untraced, for the wall time
        start = time.perf_counter()
        runner.state, loss = runner.step(runner.state, batch)
        loss.block_until_ready()
        walls.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for batch in runner.batches[1:steps + 1]:
                runner.state, loss = runner.step(runner.state, batch)
            loss.block_until_ready()
        totals = op_times(_read_trace(Path(folder)), device=spec.device)
    return sorted(walls)[len(walls) // 2], {key: us / steps for key, us in totals.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="ml-20m-shape")
    parser.add_argument("--batch-rows", type=int, default=1024)
    parser.add_argument("--variant", default="jax-bf16", choices=[v for v in VARIANTS if v.startswith("jax")])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    spec = BenchSpec(shape=args.shape, batch_rows=args.batch_rows, variants=(args.variant,), device=args.device,
                     data_dir=args.data_dir, max_steps=args.steps + 1, infer_users=1)
    wall, per_step = profile(spec, args.variant, steps=args.steps)
    print(f"{args.variant} on {args.shape}, batch {args.batch_rows}: median step {wall * 1e3:.2f} ms wall")
    for thread in sorted({t for t, _ in per_step}, key=lambda t: -sum(v for (u, _), v in per_step.items() if u == t)):
        ops = {name: us for (t, name), us in per_step.items() if t == thread}
        total = sum(ops.values())
        print(f"\n{thread}: {total / 1e3:.2f} ms/step summed over {len(ops)} ops")
        print(f"{'ms/step':>9} {'share':>6}  op")
        for name, us in sorted(ops.items(), key=lambda item: -item[1])[:args.top]:
            print(f"{us / 1e3:9.3f} {us / total:6.1%}  {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
