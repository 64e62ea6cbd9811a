"""Several processes, one per host (README, "Several hosts"): JAX's multi-process runtime
(`jax.distributed`; on CPU its collectives use gloo, built into jaxlib), started before any JAX
computation. After it, `jax.devices()` lists every process's devices, and the mesh of
`sharding.make_layout` spans them all.

Each process runs the same program on its own devices. Process 0 alone prints progress and writes
the run directory's files (`is_writer`); values that decide anything (losses, validation metrics)
are reduced over all processes before they are read, so the processes never disagree.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import numpy as np

from convae_jax.errors import ConfigError

# The environment variables a cluster launcher sets instead of the flags.
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "CONVAE_COORDINATOR", "CONVAE_NUM_PROCESSES", "CONVAE_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where the coordinator listens (HOST:PORT, served by process 0), how many processes, which one this is."""

    coordinator: str
    num_processes: int
    process_id: int
    # Seconds without a heartbeat after which a process counts as lost and every other one stops
    # with an error, instead of waiting in a collective for ever.
    heartbeat_timeout_s: int = 20
    initialization_timeout_s: int = 120

    @classmethod
    def from_flags_or_env(cls, coordinator: str | None, num_processes: int | None, process_id: int | None
                          ) -> "Cluster | None":
        """The cluster the flags describe, else the environment's (`CONVAE_*`), else None (one process)."""
        coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
        num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
        process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
        given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
        if all(value is None for value in given.values()):
            return None
        missing = [flag for flag, value in given.items() if value is None]
        if missing:
            raise ConfigError(f"several processes need --coordinator, --num-processes and --process-id (or "
                              f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing: {', '.join(missing)}")
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--coordinator {coordinator!r}: expected HOST:PORT")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id {process_id} must be in 0..{num_processes - 1} (--num-processes {num_processes})")
        return cls(coordinator, num_processes, process_id)

    def initialize(self) -> None:
        """Joins the runtime (process 0 serves the coordinator, bound to the address given, so a
        loopback address stays on this host). Must run before any JAX computation."""
        jax.distributed.initialize(self.coordinator, self.num_processes, self.process_id,
                                   coordinator_bind_address=self.coordinator,
                                   initialization_timeout=self.initialization_timeout_s,
                                   heartbeat_timeout_seconds=self.heartbeat_timeout_s)


def is_writer() -> bool:
    """Whether this process writes the run's files and prints its progress: process 0."""
    return jax.process_index() == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected an integer") from None


def agreed(values: dict) -> dict:
    """Process 0's `values` (a dict of numbers) on every process: what each process computed from
    the same inputs may still differ in the last bits between machines, and a decision (early
    stopping, the selected epoch) taken on differing values would split the processes."""
    if jax.process_count() == 1 or not values:
        return values
    from jax.experimental.multihost_utils import broadcast_one_to_all

    names = sorted(values)
    bits = np.asarray([values[name] for name in names], np.float64).view(np.uint32)  # exact: JAX may lack float64
    shared = np.asarray(broadcast_one_to_all(bits), np.uint32).view(np.float64)
    return {name: float(value) for name, value in zip(names, shared)}


def lost_process_message(err: Exception) -> str | None:
    """A one-line account of a runtime error that means another process was lost (its connection
    closed, or its heartbeats stopped), naming it where the error says which; None for other errors."""
    text = str(err)
    if jax.process_count() < 2 or not re.search(r"[Gg]loo|heartbeat|[Cc]oordination", text):
        return None
    task = re.search(r"Task (\d+) heartbeat timeout", text)
    peer = re.search(r"closed by peer \[?([^\s\]]+)\]?:(\d+)", text)
    if task:
        lost = f"process {task.group(1)}"
    elif jax.process_count() == 2:
        lost = f"process {1 - jax.process_index()}"
    else:
        lost = f"the process at {peer.group(1)}:{peer.group(2)}" if peer else "another process"
    return (f"{lost} was lost (process {jax.process_index()} of {jax.process_count()} stopped): resume the run "
            "with --resume RUN_DIR on every process once all of them are back")
