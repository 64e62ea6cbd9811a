"""Resume, reproducibility and the divergence guard (issue 7, items 1, 3 and 5).

- An interrupted `fit` resumed from its checkpoints equals an uninterrupted one bit for bit,
  including the early-stopping decision (interrupted while the patience counter is running).
- The same seed and data give identical metrics and parameters; another seed other parameters.
- A huge learning rate makes training diverge: the error names the step, the last good
  checkpoint is kept and readable, the CLI exits non-zero, and resuming repeats the divergence.
"""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from convae_jax import config as config_lib
from convae_jax.checkpoint import list_checkpoints, read_checkpoint
from convae_jax.cli import main
from convae_jax.data.splits import holdout_interactions
from convae_jax.errors import CheckpointError, TrainingDiverged
from convae_jax.evaluate import explicit_protocol
from convae_jax.experiment import resume_run
from convae_jax.pytrees import named_leaves
from convae_jax.train import fit

# lr 5e-2 overfits the small data: validation RMSE is best at epoch 6 and patience 3 stops at 9.
# Checkpoints every 2 epochs (the kill test covers the default, every epoch).
EARLY_STOPPING = ("train.learning_rate=5e-2", "train.max_epochs=12", "train.patience=3", "train.checkpoint_every=2")


class Interrupt(Exception):
    """Stands in for a crash: raised from `on_epoch`, before that epoch's checkpoint is written."""


def leaves(params) -> dict:
    return {name: np.asarray(leaf) for name, leaf in named_leaves(params).items()}


def assert_bitwise_equal(a, b):
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b), strict=True)  # same structure, dtypes, bits


def without_timing(history):
    return [(r.epoch, r.train_loss, r.validation) for r in history]


@pytest.fixture(scope="module")
def split(small_data):
    return holdout_interactions(small_data, fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def config():
    return config_lib.testing().override(list(EARLY_STOPPING))


@pytest.fixture(scope="module")
def reference(split, config):
    return fit(split[0], config)


def test_reference_stops_early_with_patience_running(reference, config):
    """Precondition of the resume test: the run early-stops, so patience state matters."""
    scores = [r.validation["rmse"] for r in reference.history]
    assert len(scores) < config.train.max_epochs
    best = int(np.argmin(scores)) + 1
    assert len(scores) == best + config.train.patience


def test_resume_is_bitwise_identical(tmp_path, split, config, reference):
    best = int(np.argmin([r.validation["rmse"] for r in reference.history])) + 1
    crash_at = len(reference.history)  # crash in the epoch that early-stops ...
    every = config.train.checkpoint_every
    resume_from = (crash_at - 1) // every * every  # ... so the resume starts with patience running
    assert resume_from > best

    def crash(record):
        if record.epoch == crash_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(split[0], config, checkpoint_dir=tmp_path, on_epoch=crash)
    last = read_checkpoint(list_checkpoints(tmp_path)[0])
    assert last.epoch == resume_from and last.loop["since_best"] == resume_from - best and not last.loop["finished"]

    resumed = fit(split[0], config, checkpoint_dir=tmp_path, resume=True)
    assert_bitwise_equal(reference.params, resumed.params)
    assert without_timing(reference.history) == without_timing(resumed.history)
    final = read_checkpoint(list_checkpoints(tmp_path)[0])
    assert final.epoch == len(reference.history) and final.loop["finished"]

    again = fit(split[0], config, checkpoint_dir=tmp_path, resume=True)  # a finished run trains no more
    assert_bitwise_equal(reference.params, again.params)


def test_checkpoints_refuse_another_config_and_a_fresh_start(tmp_path, split, config):
    fit(split[0], config.override(["train.max_epochs=1"]), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        fit(split[0], config.override(["train.max_epochs=1"]), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="train.seed"):
        fit(split[0], config.override(["train.max_epochs=1", "train.seed=5"]), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="other training data"):
        fit(split[1], config.override(["train.max_epochs=1"]), checkpoint_dir=tmp_path, resume=True)


def test_same_seed_same_metrics(split, config, reference):
    train, test = split
    again = fit(train, config)
    assert_bitwise_equal(reference.params, again.params)
    assert without_timing(reference.history) == without_timing(again.history)
    assert explicit_protocol(reference, train, test, ks=(5,)) == explicit_protocol(again, train, test, ks=(5,))


def test_different_seed_different_parameters(split, config, reference):
    other = fit(split[0], config.override(["train.seed=1"]))
    a, b = leaves(reference.params), leaves(other.params)
    assert all(not np.array_equal(a[name], b[name]) for name in a)
    assert without_timing(reference.history) != without_timing(other.history)


def test_huge_learning_rate_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, small_data, capsys):
    """lr 5e16 without L2 on the testing preset: finite for four epochs, NaN in the fifth (the
    divergence step is printed and repeated on resume, so it is not a fixed number here). Where the
    first NaN lands depends on rounding: the step's contraction order moves it (1e17, used before,
    once failed in the first epoch; 3e16, used next, no longer diverges within 30 epochs since the
    bias gradients are a GEMV), so the test asserts the scenario it needs."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = (f"{u + 1}\t{i + 1}\t{c + 1}\t0\n" for u, i, c in zip(small_data.user, small_data.item, small_data.channel))
    (data_dir / "u.data").write_text("".join(rows))
    run_dir = tmp_path / "run"
    argv = ["train", "--preset", "testing", "--dataset", "ml-100k", "--data-dir", str(data_dir), "--workdir",
            str(run_dir), "--set", "train.learning_rate=5e16", "--set", "train.l2=0.0", "--set", "train.max_epochs=30"]
    assert main(argv) != 0
    message = capsys.readouterr().err
    assert "training diverged at step" in message, message
    step = int(message.split("at step ")[1].split()[0])

    kept = list_checkpoints(run_dir / "checkpoints")
    assert kept, "the run diverged before its first checkpoint: the guard's keep-the-last-good part is untested"
    last = read_checkpoint(kept[0])
    assert str(kept[0]) in message
    state_step = int(last.trees["state"]["step"])
    assert state_step < step  # the named step came after the last good checkpoint ...
    assert all(np.all(np.isfinite(a)) for a in last.trees["state"].values())  # ... whose state is finite
    assert not (run_dir / "model").exists()

    with pytest.raises(TrainingDiverged) as resumed:
        resume_run(run_dir)
    assert resumed.value.step == step and resumed.value.checkpoint == kept[0]


def test_cli_refuses_to_overwrite_a_run_or_to_change_it_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "epoch-000001").mkdir(parents=True)
    assert main(["train", "--preset", "testing", "--workdir", str(run_dir)]) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err
    assert not (run_dir / "run.json").exists()
    assert main(["train", "--resume", str(run_dir), "--set", "train.seed=3"]) == 2
    assert "a resumed run keeps its config; only its mesh may change" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--workdir", str(tmp_path / "other")]) == 2
    assert "drop --workdir, --dataset, --data-dir, --ratings and --prepared" in capsys.readouterr().err
