"""Checkpoints restore onto another mesh (`Layout.abstract`): a train state written sharded on one
mesh, by one process or by two, restores onto other mesh shapes and onto one device, bit for bit.
Runs tests/checkpoint_worker.py as subprocesses of 2 or 4 simulated CPU devices."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.test_mesh import run_workers

WORKER = Path(__file__).with_name("checkpoint_worker.py")


def assert_restored_everywhere(targets: dict) -> None:
    """Every target (1×4: 37 columns padded to 40; 4×1 and one device: 37) got every leaf as
    written, on its own shardings, with zero padding columns."""
    assert {shape: cell["n_padded"] for shape, cell in targets.items()} == {"1x4": 40, "4x1": 37, "1x1": 37}
    for shape, cell in targets.items():
        assert cell["equal"] and cell["shardings"] and cell["padding_zero"] and cell["leaves"] == 34, (shape, cell)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_checkpoint_of_a_2x2_mesh_restores_onto_other_meshes(tmp_path):
    """One process of 4 devices: written on 2×2 (37 columns padded to 38; per-column cut-points,
    best parameters on the host), restored onto 1×4, 4×1 and one device."""
    (found,) = run_workers(("local", str(tmp_path), "2x2"), timeout=180, worker=WORKER)
    assert found["written_rows"] == 38 and found["columns_held"] == [[0, 19], [19, 38]]
    assert_restored_everywhere(found["targets"])


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["2x2", "1x4"])
def test_checkpoint_of_two_processes_restores_on_one(tmp_path, mesh):
    """Written by 2 processes × 2 devices (2×2: each process holds every column, once per data
    shard; 1×4: each holds its own half of the columns, and writes it), restored by 1 process × 4
    devices."""
    port = str(free_port())
    writers = run_workers(*[("write", str(tmp_path), str(i), port, mesh) for i in (0, 1)], timeout=150, worker=WORKER)
    if mesh == "1x4":
        assert {w["process"]: w["columns_held"] for w in writers} == {0: [[0, 10], [10, 20]], 1: [[20, 30], [30, 40]]}
        assert any((tmp_path / "epoch-000001" / "arrays" / "ocdbt.process_1").rglob("d/*"))
    (reader,) = run_workers(("read", str(tmp_path)), timeout=150, worker=WORKER)
    assert_restored_everywhere(reader)
