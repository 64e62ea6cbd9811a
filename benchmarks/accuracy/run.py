"""The comparison's run: every task of a dataset, every entrant, selected on seed 0's validation
data and then run for every seed, each entrant's record merged into `<dataset>.json` as it ends.

Selection: every model's grid point is chosen on validation data of seed 0 only (validation RMSE
of a seeded 5% of the training pairs; validation users' NDCG@100), then the chosen point is run
for every seed. Iterative models keep the epoch of best validation score and, at test time,
read the whole training set as input; closed-form models are refit on the whole training set.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy.entrants import explicit_entrants, implicit_entrants
from benchmarks.accuracy.report import write_report
from benchmarks.accuracy.splits import EXPLICIT_SETTINGS, IMPLICIT_USERS, RANDOM_EXPOSURE, task_split
from convae_jax.data.table import RatingsTable
from convae_jax.errors import ConvaeError
from convae_jax.record import mean_std, run_record

RESULTS_DIR = Path("benchmarks/results/accuracy")  # relative to the directory the command runs in
SEEDS = (0, 1, 2)
PROGRAM = ("python", "-m", "benchmarks.accuracy")  # how a record names the command that made it
IMPLICIT_TASK = "implicit/strong-generalization"


def compare(dataset: str, data_dir, *, quick: bool = False, out_dir=RESULTS_DIR, seeds=SEEDS,
            models: tuple[str, ...] | None = None, tasks: tuple[str, ...] | None = None, argv: list[str] | None = None,
            table: RatingsTable | None = None, log=print) -> dict:
    """Runs every task of `dataset` (explicit settings, then strong generalization where listed)
    for every entrant and seed; writes `<dataset>.json` after each run (so a partial table
    survives), then `<dataset>.md` and `<dataset>.png`. `models` restricts to the named entrants
    (their results are merged into an existing JSON); `tasks` likewise restricts to the named tasks
    (e.g. "explicit/u1", "implicit/strong-generalization"); `argv`, the command's arguments as
    recorded (default: this process's). With `table` (one's own self-selected ratings and randomly
    exposed test file, `data.load_random_exposure`), `dataset` only names the results and the one
    task is the random-exposure setting. Returns the JSON document."""
    if table is None and dataset not in EXPLICIT_SETTINGS:
        raise ConvaeError(f"no comparison is defined for {dataset!r}; expected one of {sorted(EXPLICIT_SETTINGS)}")
    settings = (RANDOM_EXPOSURE,) if table is not None else EXPLICIT_SETTINGS[dataset]
    all_tasks = [(f"explicit/{p}", p) for p in settings]
    if table is None and dataset in IMPLICIT_USERS:
        all_tasks.append((IMPLICIT_TASK, None))
    run_tasks = [(task, protocol) for task, protocol in all_tasks if not tasks or task in tasks]
    entrants_of = {task: explicit_entrants(quick=quick, random_exposure=protocol == RANDOM_EXPOSURE) if protocol
                   else implicit_entrants(quick=quick) for task, protocol in run_tasks}
    _check_requested("tasks", tasks, [task for task, _ in all_tasks], dataset)
    _check_requested("models", models, sorted({e.name for found in entrants_of.values() for e in found}), dataset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = tuple(seeds[:1]) if quick else tuple(seeds)
    path = out_dir / f"{dataset}.json"
    if path.exists() and not (models or tasks):
        path.unlink()  # a full run starts a fresh table
    env = run_record(program=PROGRAM, argv=argv)
    for task, protocol in run_tasks:
        for entrant in entrants_of[task]:
            if models and entrant.name not in models:
                continue
            record = {"source": entrant.source, "grid": list(entrant.grid), "runs": [], "environment": env}
            point = None
            for seed in seeds:
                split = task_split(dataset, protocol, data_dir, seed=seed, quick=quick, table=table)
                if point is None:  # select on seed 0's validation data
                    scores = []
                    for candidate in entrant.grid:
                        start = time.perf_counter()
                        score, test = entrant.run(split, candidate, seed)
                        scores.append(score)
                        record["runs"].append(_seed_run(seed, candidate, score, test, start, selected=False))
                        log(f"{dataset} {task} {entrant.name} seed {seed} {candidate}: validation {score:.4f}")
                    best = int(np.argmax(scores))
                    point = entrant.grid[best]
                    record["runs"][len(record["runs"]) - len(scores) + best]["selected"] = True
                else:
                    start = time.perf_counter()
                    score, test = entrant.run(split, point, seed)
                    record["runs"].append(_seed_run(seed, point, score, test, start, selected=True))
                record["selected_point"] = point
                record["summary"] = summarise([r["test"] for r in record["runs"] if r["selected"]])
                save_record(path, task, entrant.name, record, dataset=dataset, quick=quick, seeds=seeds)
                selected = [r for r in record["runs"] if r["selected"]][-1]  # seed 0: the chosen point, not the last tried
                log(f"{dataset} {task} {entrant.name} seed {seed}: {selected['test']}")
    return write_report(dataset, out_dir=out_dir)


def _check_requested(kind: str, requested, known: list[str], dataset: str) -> None:
    """A name that matches nothing would run nothing and still rewrite the report: refuse it."""
    unknown = [name for name in requested or () if name not in known]
    if unknown:
        raise ConvaeError(f"compare --{kind}: {unknown} not among {dataset}'s {kind} for the tasks run; "
                          f"expected names from {known}")


def save_record(path: Path, task: str, name: str, record: dict, *, dataset: str, quick: bool, seeds) -> dict:
    """Merges one entrant's record into the JSON at `path` (re-read first, so that runs of
    different entrants in parallel processes keep each other's results) and replaces it atomically."""
    doc = json.loads(path.read_text()) if path.exists() else {"tables": {}}
    doc |= {"dataset": dataset, "quick": quick, "seeds": list(seeds)}
    doc["tables"].setdefault(task, {})[name] = record
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, default=_plain))
    os.replace(tmp, path)
    return doc


def _seed_run(seed, point, score, test, start, *, selected):
    return {"seed": seed, "point": point, "validation": float(score), "test": test, "selected": selected,
            "seconds": round(time.perf_counter() - start, 2)}


def summarise(results: list[dict]) -> dict:
    """mean, std (`convae_jax.record.mean_std`) and n of every numeric metric over seeds."""
    keys = [k for k in results[0] if isinstance(results[0][k], (int, float)) and k not in ("n", "n_users")]
    return {key: mean_std([r[key] for r in results]) | {"n": len(results)} for key in keys}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)
