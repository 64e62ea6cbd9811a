"""The global-batch check of tests/test_prepared.py, run in a process of 4 simulated CPU devices
(the device count is fixed when JAX starts): `python tests/per_process_worker.py LAYOUT` prints one
JSON object.

For a data axis of 4 devices (mesh 4×1) and of 2 (mesh 2×2, each piece the same on both model
devices), every step's global batch assembled by `global_batch` from this one process's piece is
compared with the pieces two simulated processes read, laid end to end, and each device's shard
with the rows and entries of its own part.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from convae_jax.data.per_process import ProcessInput, global_batch  # noqa: E402
from convae_jax.data.prepared import PreparedLayout  # noqa: E402

BATCH_ROWS, SEED, EPOCH = 16, 5, 2
FIELDS = ("row", "row_mask", "segment", "col", "channel", "count")


def check(layout: PreparedLayout, data: int, model: int) -> dict:
    mesh = jax.make_mesh((data, model), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    sharding = NamedSharding(mesh, P("data"))
    one = ProcessInput(layout, process_index=0, process_count=1, parts=data, seed=SEED, batch_rows=BATCH_ROWS)
    two = [ProcessInput(layout, process_index=p, process_count=2, parts=data, seed=SEED, batch_rows=BATCH_ROWS)
           for p in range(2)]
    steps = one.local_steps(EPOCH)
    two_steps = max(reader.local_steps(EPOCH) for reader in two)
    pieces = [list(reader.batches(EPOCH, steps=steps)) for reader in two]
    equal, shards_match = True, True
    for s, piece in enumerate(one.batches(EPOCH, steps=steps)):
        batch = global_batch(piece, sharding, process_count=1)
        for field in FIELDS:
            found = np.asarray(getattr(batch, field))
            equal &= bool(np.array_equal(found, np.concatenate([getattr(p[s], field) for p in pieces])))
            per_part = len(found) // data
            for shard in getattr(batch, field).addressable_shards:
                j = shard.index[0].start // per_part
                shards_match &= bool(np.array_equal(np.asarray(shard.data), found[j * per_part:(j + 1) * per_part]))
    return {"steps": steps, "two_process_steps": two_steps, "equal": equal, "shards_match": shards_match}


def main(layout_dir: str) -> None:
    layout = PreparedLayout.open(layout_dir)
    print(json.dumps({f"{data}x{model}": check(layout, data, model) for data, model in ((4, 1), (2, 2))}))


if __name__ == "__main__":
    main(sys.argv[1])
