"""The processes of tests/test_checkpoint_meshes.py (the device count is fixed when JAX starts).

`local DIR DxM`: one process of 4 CPU devices checkpoints a train state sharded on a D×M mesh, then
restores it onto 1×4, 4×1 and one device. `write DIR PROCESS_ID PORT DxM`: one of two processes
of 2 devices each (`jax.distributed` on localhost:PORT) checkpoints the state sharded on a D×M
mesh over all 4 devices. `read DIR`: one process of 4 devices restores that checkpoint as `local`
does. Each prints one JSON object: which columns of the encoder table the writer's devices held,
and per restore target whether every leaf equals the state as written, bit for bit, lies on the
target's shardings, and has zero padding columns.
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
from convae_jax.sharding import is_column_indexed, make_layout  # noqa: E402
from convae_jax.train import TrainState, host_state_shapes, init_train_state, make_optimizer  # noqa: E402

# Per-column cut-points: every kind of column-indexed leaf.
CONFIG = config_lib.testing().override(["model.orientation=user", "model.rating_head=ordinal", "model.cutpoints=per_column"])
N_COLS = 37  # padded to 38 on two model shards, to 40 on four
TARGETS = ("1x4", "4x1", "1x1")


def filled_state(layout, model, tx) -> TrainState:
    """A train state with every leaf set and the padding zero, the same on every mesh: the seeded
    parameters, Adam moments 0.5·p and p², step 7."""
    def fill(fresh: TrainState) -> TrainState:
        adam = fresh.opt_state[0]._replace(mu=jax.tree_util.tree_map(lambda p: 0.5 * p, fresh.params),
                                           nu=jax.tree_util.tree_map(lambda p: p * p, fresh.params))
        return TrainState(fresh.params, (adam, *fresh.opt_state[1:]), fresh.step + 7)

    return jax.jit(fill)(init_train_state(model=model, tx=tx, key=jax.random.key(0), layout=layout))


def layout_of(shape: str, devices=None):
    data, columns = shape.split("x")
    return make_layout(CONFIG.override([f"mesh.data={data}", f"mesh.model={columns}"]), n_cols=N_COLS, devices=devices)


def write(checkpoints: CheckpointDir, shape: str, model, tx, best) -> dict:
    """Saves the filled state on a `shape` mesh over every device (of every process)."""
    layout = layout_of(shape, jax.devices())
    state = filled_state(layout, model, tx)
    checkpoints.save(1, {"state": state, "best": best}, {})
    held = sorted({(s.index[0].start, s.index[0].stop) for s in state.params["encoder_kernel"].addressable_shards})
    return {"process": jax.process_index(), "written_rows": layout.n_padded, "columns_held": held}


def read(checkpoints: CheckpointDir, model, tx, best) -> dict:
    """Restores the checkpoint onto each of TARGETS and compares it with the state as written
    (built on one device: the seeded state is the same on every mesh)."""
    shapes = host_state_shapes(model=model, tx=tx)
    one = layout_of("1x1")
    want = {"best": best, "state": one.to_host(filled_state(one, model, tx))}
    out = {}
    for shape in TARGETS:
        layout = layout_of(shape)
        abstract = {"state": layout.abstract(shapes), "best": layout.abstract(shapes.params)}
        restored = checkpoints.latest(abstract).trees
        got = {name: layout.to_host(tree) for name, tree in restored.items()}
        out[shape] = {
            "n_padded": layout.n_padded, "leaves": len(jax.tree_util.tree_leaves(got)),
            "equal": jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want) and all(
                a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(got),
                                                                           jax.tree_util.tree_leaves(want))),
            "shardings": all(leaf.sharding == target.sharding for leaf, target in
                             zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(abstract))),
            "padding_zero": all(not np.any(np.asarray(leaf)[N_COLS:]) for path, leaf in
                                jax.tree_util.tree_leaves_with_path(restored) if is_column_indexed(path, leaf))}
    return out


def main() -> dict:
    if role == "write":  # before anything starts JAX's backend
        jax.distributed.initialize(f"localhost:{sys.argv[4]}", num_processes=2, process_id=int(sys.argv[3]))
    model = build_model(CONFIG.model, n_cols=N_COLS, n_channels=5)
    tx = make_optimizer(CONFIG)
    best = jax.device_get(jax.jit(lambda key: init_params(model, key))(jax.random.key(3)))  # on the host, as in `fit`
    checkpoints = CheckpointDir(sys.argv[2], config=CONFIG, fingerprint="-", columns=N_COLS)
    if role == "write":
        return write(checkpoints, sys.argv[5], model, tx, best)
    if role == "read":
        return read(checkpoints, model, tx, best)
    return write(checkpoints, sys.argv[3], model, tx, best) | {"targets": read(checkpoints, model, tx, best)}


if __name__ == "__main__":
    print(json.dumps(main()))
