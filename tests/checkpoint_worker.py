"""The processes of tests/test_checkpoint_processes.py (the device count is fixed when JAX starts).

`write DIR PROCESS_ID PORT DxM`: one of two processes of 2 CPU devices each (`jax.distributed` on
localhost:PORT) checkpoints a train state sharded on a D×M mesh over all 4 devices, and prints
which columns of the encoder table its devices hold. `read DIR`: one process of 4 devices restores
that checkpoint onto 1×4, 4×1 and one device and prints, per target, whether every leaf equals
the same state built there, bit for bit.
"""

from __future__ import annotations

import json
import os
import sys

role = sys.argv[1]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={2 if role == 'write' else 4}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from convae_jax import config as config_lib  # noqa: E402
from convae_jax.checkpoint import CheckpointDir  # noqa: E402
from convae_jax.model import build_model, init_params  # noqa: E402
from convae_jax.sharding import make_layout  # noqa: E402
from convae_jax.train import TrainState, host_state_shapes, init_train_state, make_optimizer  # noqa: E402

CONFIG = config_lib.testing().override(["model.orientation=user", "model.rating_head=ordinal", "model.cutpoints=per_column"])
N_COLS = 37  # padded to 38 on two model shards, to 40 on four


def state_on(layout, model, tx) -> TrainState:
    """A train state with every leaf set and the padding zero, the same on every mesh: the seeded
    parameters, Adam moments 0.5·p and p², step 7."""
    fresh = init_train_state(model=model, tx=tx, key=jax.random.key(0), layout=layout)
    adam = fresh.opt_state[0]._replace(mu=jax.tree_util.tree_map(lambda p: 0.5 * p, fresh.params),
                                       nu=jax.tree_util.tree_map(lambda p: p * p, fresh.params))
    return TrainState(fresh.params, (adam, *fresh.opt_state[1:]), fresh.step + 7)


def layout_of(shape: str, devices=None):
    data, columns = shape.split("x")
    return make_layout(CONFIG.override([f"mesh.data={data}", f"mesh.model={columns}"]), n_cols=N_COLS, devices=devices)


def main() -> dict:
    directory = sys.argv[2]
    if role == "write":  # before anything starts JAX's backend
        jax.distributed.initialize(f"localhost:{sys.argv[4]}", num_processes=2, process_id=int(sys.argv[3]))
    model = build_model(CONFIG.model, n_cols=N_COLS, n_channels=5)
    tx = make_optimizer(CONFIG)
    best = jax.device_get(init_params(model, jax.random.key(3)))  # host arrays, as `fit` keeps them
    checkpoints = CheckpointDir(directory, config=CONFIG, fingerprint="-", columns=N_COLS)
    if role == "write":
        layout = layout_of(sys.argv[5], jax.devices())
        state = state_on(layout, model, tx)
        checkpoints.save(1, {"state": state, "best": best}, {})
        held = sorted({(s.index[0].start, s.index[0].stop) for s in state.params["encoder_kernel"].addressable_shards})
        return {"process": jax.process_index(), "columns_held": held}
    shapes = host_state_shapes(model=model, tx=tx)
    out = {}
    for shape in ("1x4", "4x1", "1x1"):
        layout = layout_of(shape)
        found = checkpoints.latest({"state": layout.abstract(shapes), "best": layout.abstract(shapes.params)})
        want = {"best": best, "state": layout.to_host(state_on(layout, model, tx))}
        got = {name: layout.to_host(tree) for name, tree in found.trees.items()}
        out[shape] = {"leaves": len(jax.tree_util.tree_leaves(got)),
                      "equal": jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want) and all(
                          a.dtype == b.dtype and np.array_equal(a, b)
                          for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)))}
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
