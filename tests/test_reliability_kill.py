"""The kill test (issue 7): SIGKILL `convae train` at random moments, resume with
`convae train --resume RUN_DIR` each time, and check that nothing is lost.

Per kill: the child trains (the `testing()` preset, small synthetic ratings written as an
ml-100k `u.data` file); once it has written a new checkpoint the harness waits a random delay of
up to 1.5 epochs and sends SIGKILL. After each kill every complete checkpoint must verify and
parse (`read_checkpoint`), and the next `--resume` must make progress or finish. At the end the
run is resumed to completion and its parameters, final train state (parameters, Adam state,
step), test metrics and history must equal those of an uninterrupted run bit for bit.

To make kills land mid-write often, the children's `os.fsync` sleeps a few milliseconds (a slow
disk); the harness counts the kills that left a partial `.tmp` file or directory behind. Every
child reads XLA programs from a persistent compilation cache warmed by the uninterrupted run, so
a kill never lands mid-way through writing a cache entry (JAX does not write those atomically).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convae_jax.checkpoint import list_checkpoints, read_checkpoint
from convae_jax.data import SyntheticTruth

CHILD = """
import os, sys, time
slow = float(os.environ.get("CONVAE_TEST_FSYNC_DELAY", "0"))
if slow:
    real_fsync = os.fsync
    def fsync(fd):
        time.sleep(slow)
        real_fsync(fd)
    os.fsync = fsync
from convae_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""
CHILD_TIMEOUT_S = 300  # a child that neither progresses nor exits within this is a failure


def write_ratings(directory: Path) -> Path:
    """Small synthetic ratings (60 users x 40 items, 12 each) as an ml-100k `u.data` file."""
    data = SyntheticTruth(n_users=60, n_items=40, n_channels=5, rank=3, seed=3).sample_histories(12, seed=0)
    directory.mkdir(parents=True)
    rows = (f"{u + 1}\t{i + 1}\t{c + 1}\t0\n" for u, i, c in zip(data.user, data.item, data.channel))
    (directory / "u.data").write_text("".join(rows))
    return directory


def child_env(cache: Path, fsync_delay: float) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", CONVAE_TEST_FSYNC_DELAY=str(fsync_delay))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stdout=handle, stderr=subprocess.STDOUT)


def partial_writes(run_dir: Path) -> list[str]:
    """Leftovers of writes cut short: `.tmp` files or directories anywhere in the run directory."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.tmp"))


def verify_all_checkpoints(run_dir: Path) -> int:
    """Reads (checksums, then parsing) every complete checkpoint; returns how many there were."""
    paths = list_checkpoints(run_dir / "checkpoints")
    for path in paths:
        read_checkpoint(path)
    return len(paths)


def kill_and_resume(tmp: Path, *, kills: int, seed: int, fsync_delay: float = 0.005) -> dict:
    """Runs the whole scenario under `tmp`; returns the counts and the two run directories."""
    rng = random.Random(seed)
    data_dir = write_ratings(tmp / "data")
    env = child_env(tmp / "xla-cache", fsync_delay)
    max_epochs = 3 * kills + 5  # each killed child completes at most ~2.5 epochs
    train_args = ["train", "--preset", "testing", "--dataset", "ml-100k", "--data-dir", str(data_dir),
                  "--set", f"train.max_epochs={max_epochs}", "--set", f"train.patience={max_epochs}"]

    reference = tmp / "reference"
    began = time.monotonic()
    child = start(train_args + ["--workdir", str(reference)], env, tmp / "reference.log")
    assert child.wait(timeout=CHILD_TIMEOUT_S) == 0, (tmp / "reference.log").read_text()[-3000:]
    stamps = sorted(p.stat().st_mtime for p in list_checkpoints(reference / "checkpoints"))
    epoch_s = max(stamps[-1] - stamps[-2], 0.05)

    run_dir = tmp / "killed"
    # kills_survived: kills after which every checkpoint verified and the next --resume made
    # progress (a new checkpoint) or, for the last kill, finished the run.
    counts = {"kills_tried": 0, "kills_survived": 0, "kills_mid_write": 0, "checkpoints_verified": 0,
              "max_epochs": max_epochs, "seed": seed, "fsync_delay_s": fsync_delay}
    for attempt in range(kills):
        args = train_args + ["--workdir", str(run_dir)] if attempt == 0 else ["train", "--resume", str(run_dir)]
        before = {p.name for p in list_checkpoints(run_dir / "checkpoints")}
        child = start(args, env, tmp / f"child-{attempt}.log")
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not ({p.name for p in list_checkpoints(run_dir / "checkpoints")} - before):
            assert child.poll() is None, f"child {attempt} exited early:\n" + (tmp / f"child-{attempt}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"child {attempt} made no progress"
            time.sleep(0.002)
        counts["kills_survived"] += attempt > 0  # this resume of the previous kill made progress
        time.sleep(rng.uniform(0.0, 1.5 * epoch_s))
        assert child.poll() is None, f"child {attempt} finished the run before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        counts["kills_tried"] += 1
        counts["kills_mid_write"] += bool(partial_writes(run_dir))
        counts["checkpoints_verified"] += verify_all_checkpoints(run_dir)

    child = start(["train", "--resume", str(run_dir)], env, tmp / "final.log")
    assert child.wait(timeout=CHILD_TIMEOUT_S) == 0, (tmp / "final.log").read_text()[-3000:]
    counts["kills_survived"] += 1
    counts["checkpoints_verified"] += verify_all_checkpoints(run_dir)
    counts["seconds"] = round(time.monotonic() - began, 1)
    return {"counts": counts, "reference": reference, "resumed": run_dir}


def load_arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {name: f[name] for name in f.files}


def assert_same_run(reference: Path, resumed: Path) -> None:
    """Bitwise equality of everything deterministic that the two runs wrote."""
    for name in ("model/params.npz", "model/train.npz"):
        ref, got = load_arrays(reference / name), load_arrays(resumed / name)
        assert ref.keys() == got.keys()
        for key in ref:
            assert ref[key].dtype == got[key].dtype and np.array_equal(ref[key], got[key]), f"{name}:{key} differs"
    final_ref = read_checkpoint(list_checkpoints(reference / "checkpoints")[0])
    final_got = read_checkpoint(list_checkpoints(resumed / "checkpoints")[0])
    assert final_ref.epoch == final_got.epoch and final_got.loop["finished"]
    for group in ("state", "best"):
        ref, got = final_ref.trees[group], final_got.trees[group]
        assert ref.keys() == got.keys()
        for key in ref:
            assert np.array_equal(ref[key], got[key]), f"final checkpoint {group}/{key} differs"
    assert json.loads((reference / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())
    timing = ("seconds", "rows_per_second")
    strip = lambda path: [{k: v for k, v in r.items() if k not in timing} for r in json.loads(path.read_text())]
    assert strip(reference / "history.json") == strip(resumed / "history.json")


def run_kill_test(tmp_path: Path, kills: int, seed: int) -> None:
    result = kill_and_resume(tmp_path, kills=kills, seed=seed)
    counts = result["counts"]
    print("kill test:", json.dumps(counts))
    assert counts["kills_tried"] == counts["kills_survived"] == kills
    assert_same_run(result["reference"], result["resumed"])


def test_three_kills_lose_nothing(tmp_path):
    run_kill_test(tmp_path, kills=3, seed=int(os.environ.get("CONVAE_KILL_SEED", "7")))


@pytest.mark.slow
def test_ten_kills_lose_nothing(tmp_path):
    run_kill_test(tmp_path, kills=10, seed=int(os.environ.get("CONVAE_KILL_SEED", "11")))
