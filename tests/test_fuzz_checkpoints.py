"""Fuzzing saved state (issue 7, item 4): truncated, bit-flipped, emptied, extended or deleted
files of a training checkpoint or a saved model are refused by the checksum check
(`CheckpointError` / `ModelFileError`), never half-loaded; and a damaged newest checkpoint makes
resuming fall back to the previous, intact one.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

from convae_jax import config as config_lib
from convae_jax.checkpoint import CheckpointDir, data_fingerprint, read_checkpoint
from convae_jax.errors import CheckpointError, ModelFileError
from convae_jax.io import files_under, load_model, save_model
from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel
from convae_jax.train import TrainState, make_optimizer
from tests.test_fuzz_inputs import BUDGETS, run_fuzz


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_data):
    """Two checkpoints (epochs 1 and 2) of an untrained state, and a saved model."""
    config = config_lib.testing()
    model = build_model(config.model, n_cols=small_data.n_users, n_channels=small_data.n_channels)
    params = init_params(model, jax.random.key(0))
    state = TrainState(params, make_optimizer(config).init(params), jnp.zeros((), jnp.int32))
    root = tmp_path_factory.mktemp("saved")
    checkpoints = CheckpointDir(root / "checkpoints", config=config, fingerprint=data_fingerprint(small_data))
    for epoch in (1, 2):
        checkpoints.save(epoch, {"state": state, "best": params}, {"note": epoch})
    save_model(FittedModel(config, params, small_data), root / "model")
    templates = {"state": state, "best": params}
    return {"root": root, "config": config, "fingerprint": data_fingerprint(small_data), "templates": templates}


@st.composite
def damages(draw, names):
    """(file name, damage kind, position in [0, 1), bit, extra bytes)."""
    return (draw(st.sampled_from(names)), draw(st.sampled_from(["truncate", "flip", "flips", "empty", "append", "delete"])),
            draw(st.floats(0, 1, exclude_max=True)), draw(st.integers(0, 7)), draw(st.binary(min_size=1, max_size=16)))


def apply_damage(path: Path, kind: str, position: float, bit: int, extra: bytes) -> None:
    data = path.read_bytes()
    at = int(position * len(data))
    if kind == "truncate":
        data = data[:at]
    elif kind == "flip":
        data = data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]
    elif kind == "flips":  # a burst of flipped bits from `at` on
        burst = bytes(b ^ 0xFF for b in data[at:at + 8])
        data = data[:at] + burst + data[at + len(burst):]
    elif kind == "empty":
        data = b""
    elif kind == "append":
        data = data + extra
    if kind == "delete":
        path.unlink()
    else:
        path.write_bytes(data)


@contextlib.contextmanager
def damaged_copy(source: Path, relative: Path, case):
    """A temporary copy of the directory `source` whose file `relative` has the damage `case`."""
    _, kind, position, bit, extra = case
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / source.name
        shutil.copytree(source, directory)
        apply_damage(directory / relative, kind, position, bit, extra)
        yield directory


@pytest.mark.parametrize("n", BUDGETS)
def test_checksum_refuses_every_damaged_checkpoint_file(saved, n):
    def check_checkpoint(case):
        with damaged_copy(saved["root"] / "checkpoints", Path("epoch-000002") / case[0], case) as directory:
            with pytest.raises(CheckpointError):
                read_checkpoint(directory / "epoch-000002", saved["templates"])
            resumable = CheckpointDir(directory, config=saved["config"], fingerprint=saved["fingerprint"])
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                found = resumable.latest(saved["templates"])
            assert found.epoch == 1 and found.loop["note"] == 1  # the last good one is used

    every_file = files_under(saved["root"] / "checkpoints" / "epoch-000002") + ["manifest.json"]  # orbax's files too
    run_fuzz(check_checkpoint, damages(every_file), n)


@pytest.mark.parametrize("n", BUDGETS)
def test_checksum_refuses_every_damaged_model_file(saved, n):
    def check_model(case):
        with damaged_copy(saved["root"] / "model", Path(case[0]), case) as directory:
            with pytest.raises(ModelFileError):
                load_model(directory)

    run_fuzz(check_model, damages(["config.json", "params.npz", "train.npz", "manifest.json"]), n)


def test_intact_checkpoint_round_trips_exactly(saved):
    found = read_checkpoint(saved["root"] / "checkpoints" / "epoch-000002", saved["templates"])
    expected = jax.tree_util.tree_leaves(saved["templates"]["state"])
    got = jax.tree_util.tree_leaves(found.trees["state"])
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        assert np.asarray(a).dtype == b.dtype and np.array_equal(np.asarray(a), b)
    assert found.config == saved["config"] and found.fingerprint == saved["fingerprint"]


def test_leftover_of_a_cut_write_is_ignored_and_cleaned(saved, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved["root"] / "checkpoints", directory)
    partial = directory / "epoch-000003.tmp" / "arrays.orbax-checkpoint-tmp-1"  # orbax's own partial write
    partial.mkdir(parents=True)
    (partial / "manifest.ocdbt").write_bytes(b"cut short")
    resumable = CheckpointDir(directory, config=saved["config"], fingerprint=saved["fingerprint"])
    assert resumable.latest(saved["templates"]).epoch == 2
    state = saved["templates"]["state"]
    resumable.save(3, {"state": state, "best": None}, {"note": 3})
    assert sorted(p.name for p in directory.iterdir()) == ["epoch-000002", "epoch-000003"]


def test_a_checkpoint_of_another_mesh_resumes(saved):
    """The mesh is not part of a run's identity: the arrays restore onto any layout (test_mesh.py)."""
    other_mesh = saved["config"].override(["mesh.data=2", "mesh.model=4"])
    resumable = CheckpointDir(saved["root"] / "checkpoints", config=other_mesh, fingerprint=saved["fingerprint"])
    assert resumable.latest(saved["templates"]).epoch == 2
