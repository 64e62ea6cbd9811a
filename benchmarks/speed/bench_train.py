"""Side-by-side training and inference benchmark: convae_jax against the PyTorch baseline.

Every variant trains the same model (user rows, one hidden layer, the config's loss, dropout and
Adam) from the same initial weights on the same pre-packed batches, staged on the device before the
clock starts. Per variant: warm-up (first step, compilation included) timed apart; then epochs,
interleaved across variants (round robin, start rotated each round) so that load on a shared machine
hits all of them alike, on a CPU each variant in its own process (`RemoteVariant`); the median
epoch, users/s and interactions/s; the final epoch's mean loss against jax-fp32's (so a fast wrong
run cannot win); peak memory from a separate probe process per variant; and inference, the top-K
unseen items of up to 10,000 users with jax-fp32's trained weights loaded into every variant,
checked by overlap with jax-fp32's lists. With `max_steps`, an "epoch" is the first `max_steps`
batches and s/epoch is projected as the median of those runs × steps per epoch / max_steps (flagged
`projected`). Without `interleave`, variants run one after another, to keep one model in memory at a
time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from convae_jax.machine import ALLOCATOR_ENVIRONMENT, reuse_freed_memory
from convae_jax.record import run_record

VARIANTS = {
    # name: (framework, flavour, precision, compiled); JAX's flavour is its model.decoder_fold
    "jax-fp32": ("jax", "auto", "float32", True),
    "jax-tf32": ("jax", "auto", "tensorfloat32", True),
    "jax-bf16": ("jax", "auto", "bfloat16", True),
    "jax-bf16-fold": ("jax", "always", "bfloat16", True),  # = jax-bf16 on GPUs since "auto" folds there
    "jax-bf16-unfolded": ("jax", "never", "bfloat16", True),
    "torch-dense": ("torch", "dense", "fp32", False),
    "torch-fast": ("torch", "fast", "fp32", False),
    "torch-fast-compiled": ("torch", "fast", "fp32", True),
    "torch-fast-tf32": ("torch", "fast", "tf32", False),
    "torch-fast-bf16": ("torch", "fast", "bf16", False),
    "torch-fast-bf16-compiled": ("torch", "fast", "bf16", True),
}
VARIANT_SETS = {
    "cpu": ("jax-fp32", "torch-dense", "torch-fast", "torch-fast-compiled"),
    "precision": ("jax-fp32", "jax-tf32", "jax-bf16", "torch-fast", "torch-fast-bf16"),
    "gpu": ("jax-fp32", "jax-tf32", "jax-bf16", "jax-bf16-unfolded", "torch-dense", "torch-fast", "torch-fast-tf32",
            "torch-fast-bf16", "torch-fast-compiled", "torch-fast-bf16-compiled"),
}
REFERENCE = "jax-fp32"
CPU_ALLOCATOR = ("glibc malloc keeping freed memory (convae_jax.machine.ALLOCATOR_ENVIRONMENT, from each process's start) "
                 "in every variant's process")
LOSS_RTOL = 0.02  # final-epoch losses of differently seeded dropout streams agree to 2% (see README)
PROGRAM = ("python", "-m", "benchmarks.speed")  # how a record names the command that made it
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]  # where `python -m benchmarks...` resolves


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """One benchmark cell: a shape, a batch size and the variants to run side by side."""

    shape: str  # a key of shapes.SHAPES
    batch_rows: int  # users per step
    variants: tuple[str, ...]
    epochs: int = 5  # timed epochs per variant (median reported)
    max_steps: int | None = None  # time only this many steps per epoch (projected s/epoch)
    hidden: int = 600  # d
    conv_channels: int = 8  # k
    decoder_channels: int = 8  # k'
    infer_users: int = 10_000  # users scored in the inference benchmark (fewer if the shape has fewer)
    top_k: int = 100
    device: str = "cpu"  # "cpu" or "gpu"
    seed: int = 0
    data_dir: str | None = None  # folder holding ml-100k/
    interleave: bool = True  # round-robin epochs across variants; False: one variant at a time (big shapes)


# --- one variant ------------------------------------------------------------------------------------


class Workload:
    """What every variant shares: data, config, batches, initial weights."""

    def __init__(self, spec: BenchSpec):
        import dataclasses as dc

        import jax

        from benchmarks.speed.shapes import load_shape
        from convae_jax import config as config_lib
        from convae_jax.data.batches import RowMatrix, entry_budget, iterate_batches
        from convae_jax.model import build_model, init_params

        self.spec = spec
        self.data = load_shape(spec.shape, data_dir=spec.data_dir, seed=spec.seed)
        self.matrix = RowMatrix.from_interactions(self.data, orientation="user")
        base = config_lib.default()
        model_config = dc.replace(base.model, orientation="user", hidden=(spec.hidden,),
                                  conv_channels=spec.conv_channels, decoder_channels=spec.decoder_channels,
                                  logit_chunk=max(base.model.logit_chunk, self.matrix.n_cols))
        self.config = dc.replace(base, model=model_config,
                                 train=dc.replace(base.train, batch_rows=spec.batch_rows, progress=False)).validate()
        rng = np.random.default_rng(spec.seed)
        active = np.flatnonzero(self.matrix.lengths > 0)
        budget = entry_budget(self.matrix.lengths, spec.batch_rows)
        self.batches = list(iterate_batches(self.matrix, rng.permutation(active), batch_rows=spec.batch_rows,
                                            budget=budget))
        self.steps_per_epoch = len(self.batches)
        if spec.max_steps is not None:
            self.batches = self.batches[: spec.max_steps]
        infer_rows = np.arange(min(spec.infer_users, self.matrix.n_rows))
        infer_batch = min(1024, infer_rows.size)
        self.infer_batches = list(iterate_batches(self.matrix, infer_rows, batch_rows=infer_batch,
                                                  budget=entry_budget(self.matrix.lengths, infer_batch)))
        self.infer_users = infer_rows.size
        self.rows_per_epoch = int(active.size)
        self.model = build_model(self.config.model, n_cols=self.matrix.n_cols, n_channels=self.data.n_channels)
        self.params0 = jax.device_get(init_params(self.model, jax.random.key(spec.seed)))


class JaxVariant:
    def __init__(self, work: Workload, precision: str, decoder_fold: str):
        import dataclasses as dc

        import jax
        import jax.numpy as jnp

        from convae_jax.model import build_model
        from convae_jax.train import TrainState, make_optimizer, make_train_step

        model_config = dc.replace(work.config.model, matmul_precision=precision, decoder_fold=decoder_fold)
        self.config = dc.replace(work.config, model=model_config).validate()
        self.model = build_model(self.config.model, n_cols=work.matrix.n_cols, n_channels=work.data.n_channels)
        tx = make_optimizer(self.config)
        params = jax.tree_util.tree_map(jnp.array, work.params0)
        self.state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
        self.step = make_train_step(model=self.model, tx=tx, config=self.config, dropout_key=jax.random.key(1))
        self.batches = jax.device_put(work.batches)
        self.infer_batches = jax.device_put(work.infer_batches)
        self.top_k = work.spec.top_k
        self._infer = jax.jit(self._top_k_fn)

    def warm_up(self) -> float:
        start = time.perf_counter()
        self.state, loss = self.step(self.state, self.batches[0])
        loss.block_until_ready()
        return time.perf_counter() - start

    def epoch(self) -> tuple[float, float]:
        """(seconds, mean batch loss) of one pass over the batches."""
        losses = []
        start = time.perf_counter()
        for batch in self.batches:
            self.state, loss = self.step(self.state, batch)
            losses.append(loss)
        mean = float(np.mean([float(x) for x in losses]))  # float() waits for the device
        return time.perf_counter() - start, mean

    def params(self):
        import jax
        return jax.device_get(self.state.params)

    def _top_k_fn(self, params, batch):
        import jax
        import jax.numpy as jnp

        from convae_jax.model import Conv4Rec

        rows = batch.row_mask.shape[0]
        h = self.model.apply({"params": params}, batch.segment, batch.col, batch.channel, batch.count, rows,
                             method=Conv4Rec.encode)
        scores = jax.nn.logsumexp(self.model.apply({"params": params}, h, method=Conv4Rec.column_logits), axis=-1)
        seen = jnp.zeros((rows + 1, scores.shape[1]), bool).at[batch.segment, batch.col].set(True)[:rows]
        return jax.lax.top_k(jnp.where(seen, -jnp.inf, scores), self.top_k)[1]

    def infer(self, params) -> tuple[float, float, np.ndarray]:
        """(first pass seconds incl. compilation, median of 3 passes, indices (users, K))."""
        import jax
        params = jax.device_put(params)

        def run():
            out = [self._infer(params, b) for b in self.infer_batches]
            return np.concatenate([np.asarray(o) for o in out])

        return _timed_passes(run)


class TorchVariant:
    def __init__(self, work: Workload, flavour: str, precision: str, compiled: bool):
        import torch

        from benchmarks.speed import torch_baseline as tb

        self.tb, self.torch = tb, torch
        self.device = "cuda" if work.spec.device == "gpu" else "cpu"
        torch.manual_seed(work.spec.seed)
        arch = tb.Architecture.of(work.config.model, n_cols=work.matrix.n_cols, n_channels=work.data.n_channels)
        self.model = tb.build(flavour, arch, params=work.params0, device=self.device)
        self.precision = precision
        self.step = tb.make_train_step(self.model, config=work.config, precision=precision, compile=compiled)
        self.batches = [tb.TorchBatch.of(b, self.device) for b in work.batches]
        self.infer_batches = [tb.TorchBatch.of(b, self.device) for b in work.infer_batches]
        self.top_k = work.spec.top_k

    def _sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def warm_up(self) -> float:
        start = time.perf_counter()
        self.step(self.batches[0])
        self._sync()
        return time.perf_counter() - start

    def epoch(self) -> tuple[float, float]:
        start = time.perf_counter()
        losses = [self.step(batch) for batch in self.batches]
        mean = float(self.torch.stack(losses).mean())  # waits for the device
        self._sync()
        return time.perf_counter() - start, mean

    def params(self):
        return self.tb.jax_layout(self.model)

    def infer(self, params) -> tuple[float, float, np.ndarray]:
        self.tb.load_jax(self.model, params)
        autocast_dtype = self.torch.bfloat16 if self.precision == "bf16" else None

        def run():
            with self.tb.matmul_precision(self.precision):
                out = [self.tb.top_k_consume(self.model, b, k=self.top_k, autocast_dtype=autocast_dtype)
                       for b in self.infer_batches]
                return np.concatenate([o.cpu().numpy() for o in out])

        return _timed_passes(run)


def make_variant(name: str, work: Workload):
    framework, flavour, precision, compiled = VARIANTS[name]
    return JaxVariant(work, precision, flavour) if framework == "jax" else TorchVariant(work, flavour, precision, compiled)


class RemoteVariant:
    """A variant built and run in a process of its own, driven over a pipe; only one variant
    computes at a time. On a CPU the frameworks slowed each other down inside one process (their
    thread pools and allocators share it): ML-100K, batch 512, 2 cores, JAX took 0.58 s/epoch
    alone and 0.83 beside torch. The same spec gives every process the same data, batches and
    initial weights."""

    def __init__(self, spec: BenchSpec, name: str):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_variant, args=(spec, name, child), daemon=True)
        with _started_under_allocator_setting(spec):
            self._process.start()
        child.close()
        self._reply(f"building {name}")

    def _reply(self, what: str):
        ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"{what} failed in its process:\n{value}")
        return value

    def _call(self, method: str, *args):
        self._conn.send((method, args))
        return self._reply(method)

    def warm_up(self) -> float:
        return self._call("warm_up")

    def epoch(self) -> tuple[float, float]:
        return self._call("epoch")

    def params(self):
        return self._call("params")

    def infer(self, params) -> tuple[float, float, np.ndarray]:
        return self._call("infer", params)

    def close(self) -> None:
        self._conn.send(("close", ()))
        self._process.join(timeout=60)


@contextlib.contextmanager
def _started_under_allocator_setting(spec: BenchSpec):
    """Processes started inside get `ALLOCATOR_ENVIRONMENT` on a CPU. `set_up_process` alone came
    too late for threads that already had an arena: ML-100K, batch 512, the JAX process faulted
    46,000 pages (0.15-0.47 s of kernel time) in most epochs, which swung between 0.33 and 0.66 s."""
    added = ALLOCATOR_ENVIRONMENT if spec.device == "cpu" else {}
    saved = {key: os.environ.get(key) for key in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def set_up_process(spec: BenchSpec) -> None:
    """On a CPU every process that builds a variant, torch or JAX, timed or memory-probed, runs
    under the allocator setting of CPU training, as `CPU_ALLOCATOR` records. Processes this module
    starts already have it from their environment (`_started_under_allocator_setting`); this call
    covers the parent, which builds the variants itself in sequential runs. Both frameworks gain
    from it (ML-100K, batch 128: compiled torch 1.13 -> 0.91-0.99 s/epoch, JAX 1.18-1.31 ->
    1.06-1.08)."""
    if spec.device == "cpu":
        reuse_freed_memory()


def _serve_variant(spec: BenchSpec, name: str, conn) -> None:
    """The remote side of `RemoteVariant`: builds the variant, then answers calls until "close"."""
    set_up_process(spec)
    try:
        variant = make_variant(name, Workload(spec))
        conn.send((True, None))
    except Exception:  # noqa: BLE001 (any failure goes back to the parent, with its traceback)
        conn.send((False, traceback.format_exc()))
        return
    for method, args in iter(conn.recv, ("close", ())):
        try:
            conn.send((True, getattr(variant, method)(*args)))
        except Exception:  # noqa: BLE001 (any failure goes back to the parent, with its traceback)
            conn.send((False, traceback.format_exc()))


def _timed_passes(run, repeats: int = 3) -> tuple[float, float, np.ndarray]:
    start = time.perf_counter()
    out = run()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return first, float(np.median(times)), out


# --- memory probe (a fresh process per variant) -----------------------------------------------------


def probe_memory(spec: BenchSpec, name: str) -> float | None:
    """Peak memory (MiB) of one variant: warm-up plus two steps in a fresh process. CPU: the rise of
    the process's peak RSS (VmHWM, reset after the data is built); GPU: the framework's peak
    device allocation. None when the probe fails (its stderr is printed)."""
    cmd = [sys.executable, "-m", "benchmarks.speed.bench_train", "--probe", name, "--spec", json.dumps(dataclasses.asdict(spec))]
    with _started_under_allocator_setting(spec):
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPOSITORY_ROOT, check=False)
    if done.returncode != 0:
        print(f"memory probe of {name} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def _probe_main(name: str, spec: BenchSpec) -> None:
    set_up_process(spec)
    work = Workload(spec)
    status = Path("/proc/self/status")
    if spec.device == "cpu":
        rss_before = _status_kib(status, "VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS
    variant = make_variant(name, work)
    for _ in range(3):
        variant.warm_up()
    if spec.device == "cpu":
        peak = (_status_kib(status, "VmHWM") - rss_before) / 1024
    elif VARIANTS[name][0] == "jax":
        import jax
        peak = jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
    else:
        import torch
        peak = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps({"peak_mib": peak}))


def _status_kib(path: Path, key: str) -> float:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    raise KeyError(key)


# --- one cell ---------------------------------------------------------------------------------------


def run_cell(spec: BenchSpec, *, memory: bool = True, log=print) -> dict:
    """Measures every variant of `spec` side by side; returns the result record (see README)."""
    from benchmarks.speed import floors

    if REFERENCE not in spec.variants:
        raise ValueError(f"{REFERENCE} must be among the variants: it is the reference of losses and top-K lists")
    unknown = set(spec.variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; expected some of {sorted(VARIANTS)}")
    set_up_process(spec)  # for the variants built in this process (sequential runs)
    load = [os.getloadavg()[0]]
    work = Workload(spec)
    log(f"[{spec.shape} b={spec.batch_rows}] {work.rows_per_epoch} rows, {work.data.nnz} interactions, "
        f"{work.steps_per_epoch} steps/epoch, timing {len(work.batches)} steps per epoch")
    results = {name: {"epoch_seconds": [], "losses": []} for name in spec.variants}
    order = list(spec.variants)
    ref_params = work.params0

    def measure(name, variant):
        results[name]["warmup_seconds"] = variant.warm_up()
        log(f"  {name}: warm-up {results[name]['warmup_seconds']:.2f}s")

    def finish(name, variant):
        nonlocal ref_params
        if name == REFERENCE:
            ref_params = variant.params()

    if spec.interleave:
        # GPU variants stay in this process: one process per variant would each claim device memory.
        remote = spec.device == "cpu"
        variants = {name: RemoteVariant(spec, name) if remote else make_variant(name, work) for name in order}
        for name in order:
            measure(name, variants[name])
        for round_ in range(spec.epochs):
            load.append(os.getloadavg()[0])
            for name in order[round_ % len(order):] + order[: round_ % len(order)]:
                seconds, loss = variants[name].epoch()
                results[name]["epoch_seconds"].append(seconds)
                results[name]["losses"].append(loss)
                log(f"  round {round_ + 1} {name}: {seconds:.2f}s loss {loss:.5f}")
        finish(REFERENCE, variants[REFERENCE])
        for name in order:
            _record_inference(results[name], variants[name], ref_params)
            log(f"  {name}: top-{spec.top_k} of {work.infer_users} users in {results[name]['infer_seconds']:.2f}s")
        if remote:
            for variant in variants.values():
                variant.close()
        del variants
    else:
        for name in [REFERENCE] + [n for n in order if n != REFERENCE]:
            variant = make_variant(name, work)
            measure(name, variant)
            for _ in range(spec.epochs):
                load.append(os.getloadavg()[0])
                seconds, loss = variant.epoch()
                results[name]["epoch_seconds"].append(seconds)
                results[name]["losses"].append(loss)
                log(f"  {name}: {len(work.batches)} steps {seconds:.2f}s loss {loss:.5f}")
            finish(name, variant)
            _record_inference(results[name], variant, ref_params)
            log(f"  {name}: top-{spec.top_k} of {work.infer_users} users in {results[name]['infer_seconds']:.2f}s")
            del variant
    load.append(os.getloadavg()[0])

    reference_top = results[REFERENCE]["top"]
    for name in order:
        r = results[name]
        top = r.pop("top")
        r["top_k_overlap_with_reference"] = float(np.mean([len(set(a) & set(b)) / spec.top_k
                                                           for a, b in zip(top, reference_top)]))
        median = float(np.median(r["epoch_seconds"]))
        r["projected"] = spec.max_steps is not None
        r["seconds_per_epoch"] = median * work.steps_per_epoch / len(work.batches)
        r["users_per_second"] = work.rows_per_epoch / r["seconds_per_epoch"]
        r["interactions_per_second"] = work.data.nnz / r["seconds_per_epoch"]
        r["final_loss"] = r["losses"][-1]
        r["infer_users_per_second"] = work.infer_users / r["infer_seconds"]
        if memory:
            r["peak_memory_mib"] = probe_memory(spec, name)
            log(f"  {name}: peak memory {r['peak_memory_mib']} MiB")
    ref_loss = results[REFERENCE]["final_loss"]
    for name in order:
        r = results[name]
        r["final_loss_rel_diff"] = abs(r["final_loss"] - ref_loss) / abs(ref_loss)
        r["loss_matches_reference"] = r["final_loss_rel_diff"] <= LOSS_RTOL
        r["speedup_of_reference"] = r["seconds_per_epoch"] / results[REFERENCE]["seconds_per_epoch"]

    mc = work.config.model
    torch_device = "cuda" if spec.device == "gpu" else "cpu"
    gemm = {"m": spec.batch_rows, "k": spec.hidden, "n": work.matrix.n_cols * spec.decoder_channels, "device": torch_device}
    rates = floors.measure_matmul_flops(**gemm)
    # On a GPU bf16 GEMMs run on faster units, so bf16 variants are priced at the bf16 rate.
    bf16_rates = floors.measure_matmul_flops(**gemm, dtype="bfloat16") if spec.device == "gpu" else None
    bandwidth = floors.measure_bandwidth()

    def floor_at(matmul_rates):
        return floors.epoch_floor(rows=work.rows_per_epoch, steps=work.steps_per_epoch, batch_rows=spec.batch_rows,
                                  n_cols=work.matrix.n_cols, n_channels=work.data.n_channels,
                                  conv_channels=spec.conv_channels, hidden=spec.hidden,
                                  decoder_channels=spec.decoder_channels, matmul_flops=max(matmul_rates.values()),
                                  bandwidth=bandwidth)

    floor = floor_at(rates)
    bf16_floor = floor_at(bf16_rates) if bf16_rates else floor
    for name, r in results.items():
        r["times_floor"] = r["seconds_per_epoch"] / (bf16_floor if "bf16" in name else floor).seconds
    return {
        "spec": dataclasses.asdict(spec),
        **cell_record(spec.device),
        "load_average_1min": {"min": min(load), "median": float(np.median(load)), "max": max(load)},
        "data": {"rows_per_epoch": work.rows_per_epoch, "n_cols": work.matrix.n_cols, "n_channels": work.data.n_channels,
                 "interactions": int(work.data.nnz), "steps_per_epoch": work.steps_per_epoch,
                 "timed_steps_per_epoch": len(work.batches), "infer_users": work.infer_users},
        "config": {"model": dataclasses.asdict(mc), "train": dataclasses.asdict(work.config.train)},
        "rates": {"matmul_flops": rates, "bandwidth_bytes_per_s": bandwidth,
                  **({"matmul_flops_bf16": bf16_rates} if bf16_rates else {})},
        "floor": dataclasses.asdict(floor),
        **({"floor_bf16": dataclasses.asdict(bf16_floor)} if bf16_rates else {}),
        "variants": results,
    }


def _record_inference(record: dict, variant, params) -> None:
    first, median, top = variant.infer(params)
    record["infer_first_seconds"], record["infer_seconds"], record["top"] = first, median, top


def cell_record(device: str) -> dict:
    """The run record (`convae_jax.record.run_record`) laid out as the cell's JSON keeps it:
    command, machine (with the allocator on a CPU, the GPU's name on a GPU), versions (with JAX's
    backend) and commit."""
    import jax

    record = run_record(program=PROGRAM)
    machine = {key: record[key] for key in ("cpu", "cores", "platform")}
    if device == "cpu":
        machine["allocator"] = CPU_ALLOCATOR
    if device == "gpu":
        import torch
        machine["gpu"] = torch.cuda.get_device_name()
    return {"command": record["command"], "machine": machine,
            "versions": record["versions"] | {"jax_backend": jax.default_backend()},
            "commit": record["commit"], "date": record["date"]}


# --- the whole run ----------------------------------------------------------------------------------


def run_benchmarks(*, shapes, batch_rows, variants, epochs: int = 5, max_steps: int | None = None, hidden: int = 600,
                   infer_users: int = 10_000, interleave: bool = True, device: str = "cpu", data_dir=None,
                   out="benchmarks/results/speed", memory: bool = True, seed: int = 0) -> list[dict]:
    """Runs every (shape, batch) cell, writes `<out>/<device>-<shape>-b<batch>.json`, then the
    markdown table and chart of every result of `device` in `out` (`report.write_report`)."""
    from benchmarks.speed import report

    if device == "gpu":
        import jax
        if jax.default_backend() != "gpu":
            raise RuntimeError(f"device=gpu but JAX runs on {jax.default_backend()!r}: install jax[cuda12]")
    names = tuple(VARIANT_SETS.get(v, (v,)) for v in variants)
    names = tuple(dict.fromkeys(n for group in names for n in group))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for shape in shapes:
        for rows in batch_rows:
            spec = BenchSpec(shape=shape, batch_rows=rows, variants=names, epochs=epochs, max_steps=max_steps,
                             hidden=hidden, infer_users=infer_users, interleave=interleave, device=device, seed=seed,
                             data_dir=None if data_dir is None else str(data_dir))
            record = run_cell(spec, memory=memory)
            path = out / f"{device}-{shape}-b{rows}.json"
            path.write_text(json.dumps(record, indent=2))
            print(f"wrote {path}")
            records.append(record)
    report.write_report(out, device=device)
    return records


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="memory probe of one variant (used by run_cell)")
    parser.add_argument("--probe", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--spec", required=True, help="BenchSpec as JSON")
    args = parser.parse_args(argv)
    raw = json.loads(args.spec)
    raw["variants"] = tuple(raw["variants"])
    _probe_main(args.probe, BenchSpec(**raw))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
