"""Where one JAX training step spends its time: a `jax.profiler` trace of a few steps of a benchmark
variant, summed per XLA operation and printed as a table (milliseconds per step, share of the
device time), each op named with the JAX operation and the source line it was compiled from (read
from the step's optimised HLO), so that a fusion's name leads to the code behind it. Reads the
trace's Chrome-format JSON, so it needs no profiler plugin.

    python -m benchmarks.speed.profile_step --shape ml-20m-shape --batch-rows 1024 --variant jax-bf16 --device gpu
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.speed.bench_train import (
    VARIANTS,
    BenchSpec,
    JaxVariant,
    Workload,
    set_up_process,
)


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


def op_instructions(trace: dict) -> dict[str, set[str]]:
    """The HLO instructions behind each traced op name, from the events' `hlo_op` argument (GPU
    kernels are named after their fusion, or by the library for GEMMs, which several instructions
    may share; CPU thunks after the instruction)."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for event in trace["traceEvents"]:
        if isinstance(event.get("args"), dict) and "hlo_op" in event["args"]:
            found[event["name"]].add(event["args"]["hlo_op"])
    return dict(found)


def instruction_sources(hlo_text: str) -> dict[str, str]:
    """For each instruction of an optimised HLO module, "JAX op path @ file:line function": its op
    name without the outer `jit(…)/` (the scopes say which method made it, `transpose(jvp(…))` that
    autodiff's backward pass did), then the innermost Python frame that traced it (the module's
    StackFrames table)."""
    tables: dict[str, dict[int, str]] = {"FileNames": {}, "FunctionNames": {}, "FileLocations": {}, "StackFrames": {}}
    section = None
    for line in hlo_text.splitlines():
        if line in tables:
            section = line
        elif not line.strip():
            section = None
        elif section:
            index, rest = line.split(" ", 1)
            tables[section][int(index)] = rest
    files = {i: Path(name.strip('"')).name for i, name in tables["FileNames"].items()}
    functions = {i: name.strip('"').replace(".<locals>", "") for i, name in tables["FunctionNames"].items()}

    def location(frame_id: int) -> str:
        frame = re.search(r"file_location_id=(\d+)", tables["StackFrames"].get(frame_id, ""))
        found = frame and re.search(r"file_name_id=(\d+) function_name_id=(\d+) line=(\d+)",
                                    tables["FileLocations"].get(int(frame.group(1)), ""))
        if not found:
            return ""
        file_id, function_id, line = map(int, found.groups())
        return f" @ {files[file_id]}:{line} {functions[function_id]}"

    sources = {}
    for match in re.finditer(r'^\s*(?:ROOT )?%([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"([^}]*)\}', hlo_text,
                             flags=re.MULTILINE):
        name, op_name, other_fields = match.groups()  # GPU modules write fields between op_name and the frame
        frame = re.search(r"stack_frame_id=(\d+)", other_fields)
        sources[name] = re.sub(r"^jit\([^)]*\)/", "", op_name) + (location(int(frame.group(1))) if frame else "")
    return sources


def _read_trace(folder: Path) -> dict:
    found = sorted(folder.rglob("*.trace.json.gz")) or sorted(folder.rglob("perfetto_trace.json.gz"))
    if not found:
        raise FileNotFoundError(f"no Chrome-format trace under {folder}")
    with gzip.open(found[-1], "rt") as handle:
        return json.load(handle)


def profile(spec: BenchSpec, variant: str, *, steps: int,
            hlo_out=None) -> tuple[float, dict[tuple[str, str], float], dict[str, str]]:
    """(median wall seconds of one step, µs per step of each op, the source of each op name) for
    `variant` on `spec`'s shape; with `hlo_out`, the step's optimised HLO is written there."""
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
        trace = _read_trace(Path(folder))
    totals = op_times(trace, device=spec.device)
    hlo_text = runner.step.compiled_text(runner.state, runner.batches[1])
    if hlo_out:
        Path(hlo_out).write_text(hlo_text)
    sources = instruction_sources(hlo_text)
    return sorted(walls)[len(walls) // 2], {key: us / steps for key, us in totals.items()}, op_sources(trace, sources)


def op_sources(trace: dict, sources: dict[str, str]) -> dict[str, str]:
    """The source of each traced op name: through the events' HLO instructions where they name
    any (CPU thunks, library GEMMs), else the instruction the name itself spells (a GPU fusion's
    kernel `loop_add_fusion_3` is the instruction `loop_add_fusion.3`)."""
    named = {name.replace(".", "_"): source for name, source in sources.items()}
    for name, instructions in op_instructions(trace).items():
        found = " | ".join(sorted({sources[i] for i in instructions if i in sources}))
        named[name] = found or named.get(name, "")
    return named


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="ml-20m-shape")
    parser.add_argument("--batch-rows", type=int, default=1024)
    parser.add_argument("--variant", default="jax-bf16", choices=[v for v in VARIANTS if v.startswith("jax")])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--hlo-out", default=None, help="file for the step's optimised HLO text")
    args = parser.parse_args(argv)
    spec = BenchSpec(shape=args.shape, batch_rows=args.batch_rows, variants=(args.variant,), device=args.device,
                     data_dir=args.data_dir, max_steps=args.steps + 1, infer_users=1)
    wall, per_step, sources = profile(spec, args.variant, steps=args.steps, hlo_out=args.hlo_out)
    print(f"{args.variant} on {args.shape}, batch {args.batch_rows}: median step {wall * 1e3:.2f} ms wall")
    for thread in sorted({t for t, _ in per_step}, key=lambda t: -sum(v for (u, _), v in per_step.items() if u == t)):
        ops = {name: us for (t, name), us in per_step.items() if t == thread}
        total = sum(ops.values())
        print(f"\n{thread}: {total / 1e3:.2f} ms/step summed over {len(ops)} ops")
        print(f"{'ms/step':>9} {'share':>6}  op")
        for name, us in sorted(ops.items(), key=lambda item: -item[1])[:args.top]:
            print(f"{us / 1e3:9.3f} {us / total:6.1%}  {name[:48]:<48}  {sources.get(name, '')[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
