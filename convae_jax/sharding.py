"""The device mesh (README, "Several devices"): which devices split a batch's rows (`data`) and the
catalogue's columns (`model`), and where every parameter, optimiser moment and batch array lives.

Column-indexed parameters (`COLUMN_PARAMS`, and per-column cut-points) are split on their first
axis over `model`; everything else is replicated. A catalogue whose size `model` does not divide is
padded with zero columns, which stay zero (no data, no L2 gradient, masked out of every softmax) and
never leave the devices in model files: `to_host` strips them, so those keep today's format.
Checkpoints store the arrays as the devices hold them, padding included, and restore onto any
layout through `Layout.abstract` (see `convae_jax.checkpoint`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.multihost_utils import process_allgather
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from convae_jax.config import Config
from convae_jax.data.per_process import global_batch
from convae_jax.errors import ConfigError
from convae_jax.pytrees import leaf_name

DATA, MODEL = "data", "model"
# Parameters whose first axis is the column (docs/model.md, "The model"); per-column cut-points
# (2-D `cutpoints`) join them.
COLUMN_PARAMS = ("encoder_kernel", "decoder_kernel", "decoder_bias", "output_bias")


def is_column_indexed(path, leaf) -> bool:
    """Whether a leaf of the parameters, or of a tree mirroring them (Adam's moments), is indexed
    by column on its first axis; read from the last name of its path."""
    name = leaf_name(path).rsplit("/", 1)[-1]
    return name in COLUMN_PARAMS or (name == "cutpoints" and np.ndim(leaf) == 2)


@dataclasses.dataclass(frozen=True)
class Layout:
    """A (data × model) mesh over a catalogue of `n_cols` columns, padded to `n_padded`."""

    mesh: Mesh
    n_cols: int

    @property
    def data(self) -> int:
        return self.mesh.shape[DATA]

    @property
    def model(self) -> int:
        return self.mesh.shape[MODEL]

    @property
    def spans_devices(self) -> bool:
        """More than one device: the step runs under `jax.shard_map`; on one, it is the plain
        single-device program (bit for bit: the same compiled step as without a mesh)."""
        return self.mesh.size > 1

    @property
    def cols_per_shard(self) -> int:
        return -(-self.n_cols // self.model)

    @property
    def n_padded(self) -> int:
        return self.cols_per_shard * self.model

    @property
    def batch_spec(self) -> P:
        """Batch arrays (rows and entries): split over `data`, the same on every `model` shard.
        An axis of one device is left out of every spec, so that code under `jax.shard_map` sees
        no axis it need reduce over."""
        return P(DATA) if self.data > 1 else P()

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, self.batch_spec)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def specs(self, tree):
        """The PartitionSpec of every leaf of a parameter-shaped tree (parameters, optimiser state)."""
        split = P(MODEL) if self.model > 1 else P()
        return jax.tree_util.tree_map_with_path(lambda path, leaf: split if is_column_indexed(path, leaf) else P(), tree)

    def shardings(self, tree):
        return jax.tree_util.tree_map(lambda spec: NamedSharding(self.mesh, spec), self.specs(tree))

    def pad(self, tree):
        """Column-indexed leaves padded with zero columns to `n_padded` (traceable; a no-op without padding)."""
        extra = self.n_padded - self.n_cols
        if not extra:
            return tree
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.pad(leaf, [(0, extra)] + [(0, 0)] * (leaf.ndim - 1))
            if is_column_indexed(path, leaf) and leaf.shape[0] == self.n_cols else leaf, tree)

    def place(self, tree):
        """A host tree (today's shapes) padded and put on the mesh with `shardings`."""
        return jax.device_put(self.pad(tree), self.shardings(tree))

    def abstract(self, tree):
        """ShapeDtypeStructs of a tree of today's shapes (arrays or ShapeDtypeStructs) once padded,
        each carrying the sharding this layout gives it: the target that restores a checkpoint,
        written on any mesh, straight onto this one (`checkpoint.read_checkpoint`)."""
        padded = jax.eval_shape(self.pad, tree)
        return jax.tree_util.tree_map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                                      padded, self.shardings(padded))

    def to_host(self, tree):
        """The tree on the host as numpy arrays in today's shapes: padding columns dropped. With
        several processes every one gets the whole tree (a collective: all of them call it)."""
        host = process_allgather(tree, tiled=True) if jax.process_count() > 1 else jax.device_get(tree)
        if self.n_padded == self.n_cols:
            return host
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: leaf[: self.n_cols] if is_column_indexed(path, leaf) and np.shape(leaf)[:1] == (self.n_padded,)
            else leaf, host)

    @property
    def local_data_shards(self) -> list[int]:
        """The `data` shards whose devices include this process's (all of them with one process)."""
        me = jax.process_index()
        return [i for i, row in enumerate(self.mesh.devices) if any(d.process_index == me for d in row)]

    def put_batch(self, batch):
        """A batch (arrays split into `data` equal parts along their first axis, as
        `iterate_sharded_batches` cuts them) as global arrays on the mesh, from this process's parts
        alone. With one process the batch is handed to the jitted step as it is."""
        if jax.process_count() == 1:
            return batch
        piece = type(batch)(*(None if leaf is None else
                              np.concatenate([np.split(np.asarray(leaf), self.data)[i] for i in self.local_data_shards])
                              for leaf in batch))
        return global_batch(piece, self.batch_sharding, process_count=jax.process_count())

    def padded_shapes(self, init_fn):
        """Shapes and dtypes of `init_fn(key)` (a tree of today's shapes) once padded."""
        return jax.eval_shape(lambda k: self.pad(init_fn(k)), jax.random.key(0))

    def init(self, init_fn, key):
        """`init_fn(key)` (a tree of today's shapes) computed under jit straight into its padded,
        sharded layout, so that no device holds a whole column-indexed table."""
        shardings = self.shardings(self.padded_shapes(init_fn))
        return jax.jit(lambda k: self.pad(init_fn(k)), out_shardings=shardings)(key)

    def own_columns(self, col):
        """(col numbered within this device's `model` shard, whether the shard owns it), for global
        columns `col`; under `jax.shard_map` over this layout's mesh."""
        if self.model == 1:
            return col, jnp.ones(col.shape, bool)
        first = jax.lax.axis_index(MODEL) * self.cols_per_shard
        owned = (col >= first) & (col < first + self.cols_per_shard)
        return jnp.where(owned, col - first, 0), owned

    def column_valid(self, shard_index):
        """(cols_per_shard,) bool: which of shard `shard_index`'s columns are real (not padding)."""
        return shard_index * self.cols_per_shard + jnp.arange(self.cols_per_shard) < self.n_cols


def vary_over_mesh(params, layout: Layout):
    """Inside `jax.shard_map`: every parameter (split as `layout.specs` says) marked as differing
    between devices on each axis of more than one device. Why: the model's custom-gradient kernels
    (`convae_jax.ops`) return a gradient that differs between devices for an argument that does
    not (a replicated weight), which shard_map refuses; marked as varying, such a weight gets its
    gradient summed over the axis by the transpose of the mark itself."""
    axes = tuple(name for name in (DATA, MODEL) if layout.mesh.shape[name] > 1)

    def mark(spec, leaf):
        missing = tuple(a for a in axes if a not in spec)
        return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree_util.tree_map(mark, layout.specs(params), params, is_leaf=lambda x: isinstance(x, P))


def make_layout(config: Config, *, n_cols: int, devices=None) -> Layout:
    """The mesh of `config.mesh` over the first data × model of `devices` (default: every
    process's, in process order, so that `model` runs within a host and `data` across hosts),
    checked against the devices, the catalogue and the batch; ConfigError names the fields."""
    devices = jax.devices() if devices is None else list(devices)
    mc, rows = config.mesh, config.train.batch_rows
    if len(devices) % mc.model:
        raise ConfigError(f"mesh.model={mc.model} does not divide the {len(devices)} devices")
    data = mc.data or len(devices) // mc.model
    if len(devices) % (data * mc.model):
        raise ConfigError(f"mesh.data × mesh.model = {data}×{mc.model} does not divide the {len(devices)} devices")
    if n_cols < mc.model:
        raise ConfigError(f"mesh.model={mc.model} exceeds the catalogue's {n_cols} columns "
                          f"(model.orientation={config.model.orientation!r} makes them the "
                          f"{'items' if config.model.orientation == 'user' else 'users'})")
    if rows % data:
        raise ConfigError(f"train.batch_rows={rows} must be a multiple of mesh.data={data}")
    mesh = jax.make_mesh((data, mc.model), (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=devices[: data * mc.model])
    return Layout(mesh, n_cols)

