"""`python -m benchmarks.speed.mesh`: training and scoring on a device mesh (README, "Several devices").

`train`: per mesh shape (data × model), in a process of its own (the device count is fixed when
JAX starts; 1×1 runs on one device, the others on 8 simulated CPU devices, or on the GPUs there are
with `--gpu`): the first step (compilation included) timed apart, then `steps` steps, each
synchronised; s/epoch is projected as the median step × steps per epoch. Memory: the bytes of
parameters and Adam state on the fullest device, read from the shard shapes, and the process's peak
resident memory (on simulated devices every device's share sits in the one process). Then the
top-100 unseen items of `score_users` users (`MeshScorer`). The first step's loss is recorded so that
a fast wrong run shows.

`one-device`: the mesh path of `fit` on one device against the step without a mesh (today's), on
ML-100K- and ML-1M-shaped data, steps interleaved in one process; and whether the two compile to
the same program.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.speed.shapes import SHAPES, Shape, shaped_synthetic
from convae_jax.record import record_line, run_record

PROGRAM = ("python", "-m", "benchmarks.speed.mesh")
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Case:
    """A training shape of the benchmark: data, model width, batch, steps timed."""

    shape: Shape
    hidden: int  # d
    batch_rows: int  # users per step
    steps: int  # timed steps after the first (s/epoch projected from their median)
    score_users: int = 1000  # users whose top-100 is scored
    score_batch: int = 32  # users per scoring call (each device holds score_batch × n / model × C logits)


CASES = {
    "ml-20m-shape": Case(SHAPES["ml-20m-shape"], hidden=128, batch_rows=512, steps=4),
    # The 10⁶-item catalogue under user rows (README, "Several devices"): d = 32, 10⁵ users, 10⁷ interactions.
    "1m-items": Case(Shape("1m-items", 100_000, 1_000_000, 10_000_000, 5), hidden=32, batch_rows=256, steps=3),
}
ONE_DEVICE_SHAPES = (Shape("ml-100k-shape", 943, 1682, 100_000, 5), SHAPES["ml-1m-shape"])


def _config(case: Case, data: int, model: int):
    from convae_jax import config as config_lib

    return config_lib.default().override([
        "model.orientation=user", f"model.hidden=({case.hidden},)", f"train.batch_rows={case.batch_rows}",
        "train.progress=False", f"mesh.data={data}", f"mesh.model={model}"])


def _state_bytes_per_device(state) -> int:
    """Bytes of `state`'s shards on its fullest device."""
    import jax

    per_device: dict = {}
    for leaf in jax.tree_util.tree_leaves(state):
        for shard in leaf.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values())


def measure_train(case_name: str, data: int, model: int) -> dict:
    """One mesh shape of a case, in this process (see the module docstring)."""
    import jax

    from convae_jax.data.batches import RowMatrix, entry_budget, iterate_sharded_batches
    from convae_jax.mesh_scoring import MeshScorer
    from convae_jax.model import build_model
    from convae_jax.sharding import make_layout
    from convae_jax.train import init_train_state, make_optimizer, make_train_step

    case = CASES[case_name]
    start = time.perf_counter()
    interactions = shaped_synthetic(case.shape, seed=0)
    config = _config(case, data, model)
    matrix = RowMatrix.from_interactions(interactions, orientation="user")
    layout = make_layout(config, n_cols=matrix.n_cols)
    rows = np.random.default_rng(0).permutation(np.flatnonzero(matrix.lengths > 0))
    budget = entry_budget(matrix.lengths, case.batch_rows // layout.data)
    batches = iterate_sharded_batches(matrix, rows, batch_rows=case.batch_rows, budget=budget, shards=layout.data)
    timed = [next(batches) for _ in range(case.steps + 1)]
    steps_per_epoch = len(timed) + sum(1 for _ in batches)
    data_s = time.perf_counter() - start

    module = build_model(config.model, n_cols=matrix.n_cols, n_channels=interactions.n_channels)
    tx = make_optimizer(config)
    state = init_train_state(model=module, tx=tx, key=jax.random.key(0), layout=layout)
    step = make_train_step(model=module, tx=tx, config=config, dropout_key=jax.random.key(1), layout=layout)
    start = time.perf_counter()
    state, first_loss = step(state, timed[0])
    first_loss = float(first_loss)
    first_step_s = time.perf_counter() - start
    seconds = []
    for batch in timed[1:]:
        start = time.perf_counter()
        state, loss = step(state, batch)
        loss.block_until_ready()
        seconds.append(time.perf_counter() - start)
    state_bytes = _state_bytes_per_device(state)

    scorer = MeshScorer(config.override([f"eval.eval_rows={case.score_batch}"]), state.params, interactions, layout)
    del state
    start = time.perf_counter()
    items, _ = scorer.top_items(np.arange(case.score_users), k=100)
    score_s = time.perf_counter() - start
    median = float(np.median(seconds))
    return {"case": case_name, "mesh": f"{data}x{model}", "devices": layout.mesh.size, "backend": jax.default_backend(),
            "shape": dataclasses.asdict(case.shape), "hidden": case.hidden, "batch_rows": case.batch_rows,
            "n_padded": layout.n_padded, "data_s": data_s, "first_step_s": first_step_s, "first_loss": first_loss,
            "step_s": seconds, "median_step_s": median, "steps_per_epoch": steps_per_epoch,
            "projected_epoch_s": median * steps_per_epoch, "state_bytes_per_device": state_bytes,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "top100_users": int(items.shape[0]), "top100_s": score_s}


def measure_one_device(*, rounds: int, steps: int) -> list[dict]:
    """Per shape: today's step and the mesh path's on one device, `rounds` rounds of `steps` steps
    each, alternating which goes first; the median step of each and whether their HLO is the same."""
    import jax

    from convae_jax.data.batches import RowMatrix, entry_budget, iterate_sharded_batches
    from convae_jax.model import build_model
    from convae_jax.sharding import make_layout
    from convae_jax.train import init_train_state, make_optimizer, make_train_step

    out = []
    for shape in ONE_DEVICE_SHAPES:
        case = Case(shape, hidden=600, batch_rows=128, steps=steps)
        interactions = shaped_synthetic(shape, seed=0)
        config = _config(case, 1, 1)
        matrix = RowMatrix.from_interactions(interactions, orientation="user")
        layout = make_layout(config, n_cols=matrix.n_cols)
        assert layout.mesh.size == 1, "run with one device"
        batches = list(iterate_sharded_batches(matrix, np.arange(matrix.n_rows), batch_rows=case.batch_rows,
                                               budget=entry_budget(matrix.lengths, case.batch_rows), shards=1))[:steps]
        batches = jax.device_put(batches)
        module = build_model(config.model, n_cols=matrix.n_cols, n_channels=interactions.n_channels)
        tx = make_optimizer(config)
        runs = {}
        for name, lay in (("today", None), ("mesh", layout)):
            state = init_train_state(model=module, tx=tx, key=jax.random.key(0), layout=layout)
            step = make_train_step(model=module, tx=tx, config=config, dropout_key=jax.random.key(1), layout=lay)
            hlo = step.compiled_text(state, batches[0])
            state, loss = step(state, batches[0])
            loss.block_until_ready()
            runs[name] = {"state": state, "step": step, "seconds": [], "hlo": hlo.split("\n", 1)[1]}
        for r in range(rounds):
            for name in (("today", "mesh") if r % 2 == 0 else ("mesh", "today")):
                run = runs[name]
                for batch in batches:
                    start = time.perf_counter()
                    run["state"], loss = run["step"](run["state"], batch)
                    loss.block_until_ready()
                    run["seconds"].append(time.perf_counter() - start)
        today, mesh = (float(np.median(runs[n]["seconds"])) for n in ("today", "mesh"))
        out.append({"shape": shape.name, "hidden": case.hidden, "batch_rows": case.batch_rows, "rounds": rounds,
                    "steps_per_round": steps, "today_median_step_s": today, "mesh_median_step_s": mesh,
                    "mesh_over_today": mesh / today, "same_program": runs["today"]["hlo"] == runs["mesh"]["hlo"]})
    return out


def _child(args: list[str], *, devices: int, gpu: bool, timeout: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")])))
    if not gpu:
        env |= {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.speed.mesh", "--child", *args], capture_output=True,
                          text=True, env=env, cwd=REPOSITORY_ROOT, timeout=timeout)
    if done.returncode:
        return {"error": done.stderr[-2000:], "args": args}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def write_report(out: Path, record: dict, train: list[dict], one_device: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "mesh.json").write_text(json.dumps({"record": record, "train": train, "one_device": one_device}, indent=2) + "\n")
    lines = ["# Training and scoring on a device mesh", "", f"Command: `{record['command']}`", "",
             f"Machine: {record_line(record)}", ""]
    if train:
        lines += ["| case | mesh | first step s | median s/step | steps/epoch | projected s/epoch | state GB/device | "
                  "peak RSS GB | top-100 of users, s | first loss |", "|" + "---|" * 10]
        for r in train:
            if "error" in r:
                lines.append(f"| {' '.join(r['args'])} | failed: {r['error'].splitlines()[-1][:80]} |" + " |" * 8)
                continue
            lines.append(f"| {r['case']} | {r['mesh']} | {r['first_step_s']:.1f} | {r['median_step_s']:.2f} | "
                         f"{r['steps_per_epoch']} | {r['projected_epoch_s']:.0f} | {_gb(r['state_bytes_per_device'])} | "
                         f"{_gb(r['peak_rss_bytes'])} | {r['top100_users']} in {r['top100_s']:.1f} | {r['first_loss']:.2f} |")
        lines.append("")
    if one_device:
        lines += ["One device: the mesh path of `fit` against the step without a mesh, interleaved.", "",
                  "| shape | today s/step | mesh s/step | mesh / today | same compiled program |", "|---|---|---|---|---|"]
        lines += [f"| {r['shape']} | {r['today_median_step_s']:.4f} | {r['mesh_median_step_s']:.4f} | "
                  f"{r['mesh_over_today']:.3f} | {r['same_program']} |" for r in one_device]
    (out / "mesh.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=" ".join(PROGRAM), description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), help=f"of {sorted(CASES)}")
    parser.add_argument("--meshes", nargs="*", default=["1x1", "8x1", "4x2", "2x4", "1x8"], help="data x model shapes")
    parser.add_argument("--one-device", action="store_true", help="also time the mesh path against today's step on one device")
    parser.add_argument("--gpu", action="store_true", help="run on the machine's GPUs instead of 8 simulated CPU devices")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per mesh shape")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results" / "speed" / "mesh")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child[0] == "one-device":
            result = measure_one_device(rounds=6, steps=10)
        else:
            data, model = (int(x) for x in args.child[1].split("x"))
            result = measure_train(args.child[0], data, model)
        print(json.dumps(result))
        return 0
    record = run_record(program=PROGRAM, argv=sys.argv[1:] if argv is None else argv)
    train = []
    for case in args.cases:
        for mesh in args.meshes:
            data, model = (int(x) for x in mesh.split("x"))
            train.append(_child([case, mesh], devices=1 if data * model == 1 else 8, gpu=args.gpu, timeout=args.timeout))
            print(json.dumps(train[-1])[:400], flush=True)
            write_report(args.out, record, train, [])
    one_device = _child(["one-device"], devices=1, gpu=args.gpu, timeout=args.timeout) if args.one_device else []
    write_report(args.out, record, train, one_device if isinstance(one_device, list) else [one_device])
    print((args.out / "mesh.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
