"""Training on a device mesh (convae_jax.sharding): the same numbers as one device, each device
holding its share of the catalogue, and one-line errors for meshes that cannot be built. The
multi-device checks run in a subprocess of 8 simulated CPU devices (tests/mesh_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convae_jax import config as config_lib
from convae_jax.errors import ConfigError
from convae_jax.sharding import make_layout

WORKER = Path(__file__).with_name("mesh_worker.py")
ROOT = WORKER.parent.parent
RTOL = 1e-5  # fp32: relative to each leaf's largest magnitude
# Parameters whose first gradient is rounding noise (mesh_worker.NOISE_GRADIENT) are bounded apart:
# Adam turns a gradient's relative rounding error into the same relative error of its step.
RTOL_NOISE_GRADIENTS = 1e-4


def run_workers(*checks: tuple[str, ...], timeout: int, worker: Path = WORKER) -> list[dict]:
    """The JSON that each `worker CHECK ARGS…` (default `mesh_worker.py`) prints last, the checks
    run side by side; one that runs past `timeout` is killed and fails, and so are the others."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               JAX_PLATFORMS="cpu")
    running = [subprocess.Popen([sys.executable, str(worker), *check], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT) for check in checks]
    results = []
    try:
        for process in running:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def run_worker(*check: str, timeout: int) -> dict:
    return run_workers(check, timeout=timeout)[0]


def test_mesh_training_equals_one_device():
    """Mesh shapes 1×1, 8×1, 4×2, 2×4, 1×8, both orientations and both rating heads: the loss and
    gradient of a step and the parameters after 20 Adam steps equal the single-device run's on the
    same batches, padded catalogues included; parameters whose gradient is rounding noise within
    RTOL_NOISE_GRADIENTS."""
    user, item = run_workers(("equivalence", "user"), ("equivalence", "item"), timeout=420)
    errors = user | item
    assert set(errors) == {"user-categorical", "user-ordinal", "item-categorical", "item-ordinal"}
    assert any(cell["padded_columns"] for per_shape in errors.values() for cell in per_shape.values())
    for config, per_shape in errors.items():
        assert set(per_shape) == {"1x1", "8x1", "4x2", "2x4", "1x8"}
        for shape, cell in per_shape.items():
            for what in ("loss", "grads", "params"):
                assert cell[what] <= RTOL, f"{config} on {shape}: {what} differs by {cell[what]:.2e}"
            assert cell["params_all"] <= RTOL_NOISE_GRADIENTS, (config, shape, cell)


def test_each_device_holds_its_share_and_nothing_gathers_a_table():
    """1×8: every column-indexed parameter and both Adam moments are split 8 ways (40 padded
    columns, 5 per device), the rest replicated; the compiled step all-gathers nothing and holds
    no array of rows × n × C logits."""
    found = run_worker("layout", timeout=180)
    column_indexed = ("cutpoints", "decoder_bias", "decoder_kernel", "encoder_kernel", "output_bias")
    for name, shard in found["shards"].items():
        (per_device,) = shard["per_device"]
        expected = [found["n_padded"] // 8, *shard["global"][1:]] if name.endswith(column_indexed) else shard["global"]
        assert per_device == expected, name
    assert found["all_gathers"] == []
    assert found["full_logits_arrays"] == 0
    assert found["largest_array"] < found["batch_rows"] * found["n_cols"] * found["n_channels"]


def test_a_run_on_a_mesh_equals_one_device(tmp_path):
    """The CLI's path on a 1×8 mesh (training with checkpoints and validation scored on the mesh,
    test metrics, `recommend`, `explain`): the same epochs' losses and validation metrics, saved
    parameters in the single-device shapes, test metrics, recommendations and explanation as one device."""
    found = run_worker("fit", str(tmp_path), timeout=180)
    assert found["shapes_equal"] and found["checkpoints"] == ["epoch-000001", "epoch-000002"]
    assert found["validated_epochs"] == 2 and found["same_recommendations"]
    for what in ("loss", "validation", "params", "test"):
        assert found[what] <= RTOL, (what, found)
    assert found["explanation"] <= 1e-5, found


def test_scoring_on_a_mesh_equals_one_device():
    """40 users over 300 items on 1, 4 and 8 model shards, user rows (the items split) and item rows
    (the users split): the top-100 unseen items are the single device's lists, but for swaps of
    items whose scores tie to rounding (fp32, log-probabilities ~ −6); whole-catalogue scores,
    pairs' rating distributions, the explicit protocol's metrics and folded-in users' scores agree
    to fp32 rounding."""
    for orientation, found in zip(("user", "item"), run_workers(("ranking", "user"), ("ranking", "item"), timeout=240)):
        assert set(found) == {"1x1", "2x4", "1x8"}
        assert found["1x1"]["same_lists"] == found["1x1"]["users"]
        for shape, cell in found.items():
            assert cell["same_lists"] >= cell["users"] - 3, (orientation, shape)
            assert cell["fold_in_users_equal"], (orientation, shape)
            for what in ("score_error", "swap_gap", "consume_error", "rating_error", "pair_error", "protocol_error",
                         "fold_in_error"):
                assert cell[what] <= 1e-5, (orientation, shape, what, cell[what])


@pytest.mark.parametrize("mesh, n_cols, message", [
    ("mesh.model=3", 50, "mesh.model=3 does not divide the 8 devices"),
    ("mesh.data=3", 50, "mesh.data × mesh.model = 3×1 does not divide the 8 devices"),
    ("mesh.model=8", 5, "mesh.model=8 exceeds the catalogue's 5 columns"),
    ("mesh.data=8", 50, "train.batch_rows=12 must be a multiple of mesh.data=8"),
])
def test_bad_meshes_stop_with_one_line_naming_the_fields(mesh, n_cols, message):
    config = config_lib.testing().override([mesh, "train.batch_rows=12"])
    with pytest.raises(ConfigError, match=message) as err:
        make_layout(config, n_cols=n_cols, devices=[None] * 8)
    assert "\n" not in str(err.value)


def test_a_mesh_larger_than_the_machine_stops_the_cli(tmp_path, capsys):
    from convae_jax.cli import main

    assert main(["train", "--preset", "testing", "--workdir", str(tmp_path), "--set", "mesh.model=3"]) == 2
    assert "mesh.model=3 does not divide the" in capsys.readouterr().err


def test_recommend_reads_a_mesh_scorer_as_a_model(small_data):
    """`experiment.recommend_for` takes a `MeshScorer` in the fitted model's place (a 1×1 mesh here)."""
    import jax

    from convae_jax.experiment import recommend_for
    from convae_jax.mesh_scoring import MeshScorer
    from convae_jax.model import build_model, init_params
    from convae_jax.predict import FittedModel

    config = config_lib.testing().override(["model.orientation=user"])
    module = build_model(config.model, n_cols=small_data.n_items, n_channels=small_data.n_channels)
    fitted = FittedModel(config, jax.device_get(init_params(module, jax.random.key(0))), small_data)
    scorer = MeshScorer.of(fitted, make_layout(config, n_cols=small_data.n_items))
    for mode in ("consume", "gems"):
        ours, theirs = recommend_for(scorer, 3, mode=mode, k=5), recommend_for(fitted, 3, mode=mode, k=5)
        assert [row["item"] for row in ours] == [row["item"] for row in theirs]
        np.testing.assert_allclose([row["p_consume"] for row in ours], [row["p_consume"] for row in theirs], rtol=1e-5)
