"""Several processes (convae_jax.distributed): `convae train` as 2 processes × 2 simulated CPU
devices on localhost, against 1 process × 4 devices; and a lost process. Every process is a
subprocess on a free port with a short timeout, killed if the test fails."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240  # a process that has not finished by then has hung: the test fails
RTOL = 1e-5
EPOCHS = 10
KILLS = 3
# Adam at the default step: the testing preset's 1e-2 lets fp32 rounding between the two meshes
# grow past 1e-5 in 10 epochs (2.6e-5 in the validation RMSE).
TRAIN = ["train", "--preset", "testing", "--set", "mesh.model=2", "--set", f"train.max_epochs={EPOCHS}",
         "--set", f"train.patience={EPOCHS}", "--set", "train.learning_rate=1e-3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(args: list[str], *, processes: int, devices: int, logs: Path) -> list[subprocess.Popen]:
    """`convae ARGS` as `processes` processes of `devices` simulated CPU devices each. They share a
    persistent XLA compilation cache beside `logs`, so that the relaunches of a test compile nothing."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
               JAX_COMPILATION_CACHE_DIR=str(logs.parent / "xla-cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cluster = []
    if processes > 1:
        cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", str(processes)]
    logs.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([sys.executable, "-m", "convae_jax.cli", *args, *cluster,
                              *(["--process-id", str(i)] if processes > 1 else [])],
                             env=env, stdout=open(logs / f"{i}.out", "w"), stderr=open(logs / f"{i}.err", "w"))
            for i in range(processes)]


def wait_all(running: list[subprocess.Popen], *, timeout: float = TIMEOUT_S) -> list[int]:
    """Return codes, in order; kills every process if one runs past `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        return [process.wait(timeout=max(deadline - time.monotonic(), 0.1)) for process in running]
    finally:
        kill(running)


def kill(running: list[subprocess.Popen]) -> None:
    for process in running:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_cluster(args: list[str], *, processes: int, devices: int, logs: Path) -> None:
    codes = wait_all(start_cluster(args, processes=processes, devices=devices, logs=logs))
    assert codes == [0] * processes, [(logs / f"{i}.err").read_text()[-3000:] for i in range(processes)]


def relative_error(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(b[k])), 1e-30)) for k in b)


def read_run(run: Path) -> dict:
    return {"history": json.loads((run / "history.json").read_text()),
            "params": dict(np.load(run / "model" / "params.npz")),
            "test": json.loads((run / "metrics.json").read_text())["test"]}


def test_two_processes_train_as_one_and_survive_a_lost_process(tmp_path):
    """2 processes × 2 devices (a 2×2 mesh: `data` across processes, `model` within each):
    - train to the losses, validation metrics, parameters and test metrics of 1 process × 4
      devices; process 0 alone writes the run and prints;
    - killed KILLS times (one of the two processes, at a random moment after each new checkpoint):
      the other exits within 2 minutes with a one-line error naming it; resumed on both processes
      each time, the run ends bit for bit where the uninterrupted one did."""
    run_cluster(TRAIN + ["--workdir", str(tmp_path / "two")], processes=2, devices=2, logs=tmp_path / "logs-two")
    run_cluster(TRAIN + ["--workdir", str(tmp_path / "one")], processes=1, devices=4, logs=tmp_path / "logs-one")
    two, one = read_run(tmp_path / "two"), read_run(tmp_path / "one")
    assert len(two["history"]) == len(one["history"]) == EPOCHS
    for a, b in zip(two["history"], one["history"]):
        assert abs(a["train_loss"] - b["train_loss"]) <= RTOL * abs(b["train_loss"])
        for key, value in b["validation"].items():
            assert abs(a["validation"][key] - value) <= RTOL * abs(value), key
    assert relative_error(two["params"], one["params"]) <= RTOL
    for key, value in one["test"].items():
        assert abs(two["test"][key] - value) <= RTOL * max(abs(value), 1e-12), key
    assert "run directory" in (tmp_path / "logs-two" / "0.out").read_text()
    # gloo itself prints its connections ("[Gloo] Rank 1 is connected to …"); nothing else may.
    assert [line for line in (tmp_path / "logs-two" / "1.out").read_text().splitlines() if not line.startswith("[Gloo]")] == []

    run, rng = tmp_path / "killed", random.Random(5)
    for kill_number in range(KILLS):
        logs = tmp_path / f"logs-kill-{kill_number}"
        args = TRAIN + ["--workdir", str(run)] if kill_number == 0 else ["train", "--resume", str(run)]
        before = checkpoints(run)
        running = start_cluster(args, processes=2, devices=2, logs=logs)
        victim = rng.randrange(2)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while checkpoints(run) == before and time.monotonic() < deadline:  # each resume makes progress
                time.sleep(0.1)
            time.sleep(rng.uniform(0.0, 1.0))
            running[victim].kill()
            killed_at = time.monotonic()
            code = running[1 - victim].wait(timeout=120)
            stopped_after = time.monotonic() - killed_at
        finally:
            kill(running)
        error = (logs / f"{1 - victim}.err").read_text()
        assert code != 0 and stopped_after < 120, error[-3000:]
        assert names_the_lost_process(error, victim), error[-3000:]
    run_cluster(["train", "--resume", str(run)], processes=2, devices=2, logs=tmp_path / "logs-resumed")
    resumed = read_run(run)
    assert [r["train_loss"] for r in resumed["history"]] == [r["train_loss"] for r in two["history"]]
    for name, value in two["params"].items():
        np.testing.assert_array_equal(resumed["params"][name], value, err_msg=name)


def names_the_lost_process(error: str, victim: int) -> bool:
    """Whether the survivor's stderr names process `victim` as lost, in one of the three ways it
    can end (docs/reliability.md): our one line, when its next collective fails; JAX's fatal error
    naming the task, when the coordinator misses the lost one's heartbeats first; JAX's fatal error
    that the coordination service closed its socket, when the lost one is process 0, which serves it."""
    return (f"convae: error: process {victim} was lost" in error
            or re.search(rf"stopped sending heartbeats\):\s*{victim}\s", error) is not None
            or (victim == 0 and "Terminating process because the JAX distributed service detected fatal errors" in error
                and "coordination_service" in error and "Socket closed" in error))


def checkpoints(run: Path) -> list[str]:
    return sorted(path.name for path in (run / "checkpoints").glob("epoch-*[0-9]")) if (run / "checkpoints").exists() else []


def test_two_processes_each_reading_its_own_row_groups_train_as_one_process(tmp_path):
    """A prepared layout (`convae prepare`'s format; 60 users in row groups of 6): 2 processes × 2
    devices, each reading only its own row groups, train 2 epochs to the losses and parameters of
    1 process × 4 devices reading all of them."""
    from convae_jax.data import SyntheticTruth
    from convae_jax.data.prepared import write_layout

    data = SyntheticTruth(n_users=60, n_items=40, n_channels=5, rank=3, seed=3).sample_histories(12, seed=0)
    layout = write_layout({"train": data}, tmp_path / "layout", orientation="user", source={"test": "synthetic"},
                          rows_per_group=6)
    args = ["train", "--prepared", str(layout.path), "--preset", "testing", "--set", "model.orientation=user",
            "--set", "mesh.model=2", "--set", "train.max_epochs=2", "--set", "train.batch_rows=8"]
    run_cluster(args + ["--workdir", str(tmp_path / "two")], processes=2, devices=2, logs=tmp_path / "logs-two")
    run_cluster(args + ["--workdir", str(tmp_path / "one")], processes=1, devices=4, logs=tmp_path / "logs-one")
    two, one = read_run(tmp_path / "two"), read_run(tmp_path / "one")
    for a, b in zip(two["history"], one["history"]):
        assert abs(a["train_loss"] - b["train_loss"]) <= RTOL * abs(b["train_loss"])
    assert len(two["history"]) == 2 and relative_error(two["params"], one["params"]) <= RTOL
