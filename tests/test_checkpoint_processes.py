"""Checkpoints of several processes (issue: scale-out, several hosts): two processes of two CPU
devices each write one checkpoint, each its own shards, and one process of four devices restores
it onto other meshes (tests/checkpoint_worker.py, run as subprocesses on a free port)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.test_mesh import run_workers

WORKER = Path(__file__).with_name("checkpoint_worker.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["2x2", "1x4"])
def test_checkpoint_of_two_processes_restores_on_one(tmp_path, mesh):
    """Written on 2 processes × 2 devices (2×2: each process holds every column, once per data
    shard; 1×4: each holds its own half of the columns) and restored on 1 process × 4 devices onto
    1×4, 4×1 and one device: every leaf bit for bit; on 1×4 each process wrote its own columns."""
    port = str(free_port())
    writers = run_workers(*[("write", str(tmp_path), str(i), port, mesh) for i in (0, 1)], timeout=150, worker=WORKER)
    held = {w["process"]: [tuple(c) for c in w["columns_held"]] for w in writers}
    if mesh == "1x4":
        assert held == {0: [(0, 10), (10, 20)], 1: [(20, 30), (30, 40)]}
        assert any((tmp_path / "epoch-000001" / "arrays" / "ocdbt.process_1").rglob("d/*"))
    (reader,) = run_workers(("read", str(tmp_path)), timeout=150, worker=WORKER)
    assert set(reader) == {"1x4", "4x1", "1x1"}
    for shape, cell in reader.items():
        assert cell["equal"] and cell["leaves"] == 34, (shape, cell)
