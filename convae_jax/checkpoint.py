"""Training checkpoints: atomic, checksummed, pickle-free snapshots of a run that `fit` resumes from;
the arrays are written by orbax-checkpoint, each process writing only its own shards.

Layout of a checkpoint directory (one per run, `RUN_DIR/checkpoints` under the CLI):

    epoch-000003/   config.json  loop.json  arrays/...  manifest.json
    epoch-000004/   ...

- `arrays/`: an orbax PyTree checkpoint (OCDBT/TensorStore files, JSON metadata), one subtree per
  pytree the trainer hands over (the train state: parameters, Adam state, step; the best-so-far
  parameters). Arrays are stored as they lie on the devices: a column-indexed leaf
  (`sharding.is_column_indexed`) of a run whose mesh pads the catalogue holds the `columns` real
  columns followed by zero padding; `loop.json` records `columns`, and reads cut or pad those
  leaves to what the reader's layout wants, so a checkpoint restores onto any mesh.
- `loop.json`: what the epoch loop needs beyond arrays (epochs done, best score, patience
  counter, history, the shuffling generator's exact state, whether the run finished) plus the
  root PRNG key data, the fingerprint of the training data and `columns`.
- `config.json`: the run's config. `manifest.json`: a SHA-256 of every other file, recursively,
  and of itself.

Writing (`CheckpointDir.save`, called by every process): orbax writes the arrays into
`epoch-NNNNNN.tmp/arrays` (every process its own shards; orbax's own save returns once all are
written and finalised); process 0 then writes the JSON files, fsynced, and the manifest last, and
renames the directory into place and fsyncs its parent. A directory named `epoch-NNNNNN` is
therefore complete; a crash leaves at most a `.tmp` directory, which readers ignore and the next
save removes. Older checkpoints are pruned only after the new one is in place, keeping the newest
`keep` (default 2), so the last good checkpoint always survives; a pruned one is renamed to `.old`
before it is deleted, so a crash mid-delete never leaves a gutted directory under a checkpoint's
name (the kill test caught exactly that).

Reading (`read_checkpoint`): the manifest and every checksum are verified, and the directory must
hold exactly the files the manifest lists, before any byte is parsed, so a truncated, altered,
added or deleted file is refused with `CheckpointError`, never half-loaded (orbax itself checks no
content checksums). Arrays are then restored onto the shardings of abstract targets
(`Layout.abstract`), whatever mesh wrote them.

Why orbax's `Checkpointer` with the PyTree handler and not its `CheckpointManager`: the manager
names, finalises (renames into place) and prunes step directories itself, so the manifest, which
must cover the finished save, would land after the checkpoint already looks complete; and its
idea of which steps exist and which to keep would be a second one beside this module's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from convae_jax.config import Config
from convae_jax.data.interactions import Interactions
from convae_jax.distributed import is_writer
from convae_jax.errors import CheckpointError
from convae_jax.io import atomic_write, files_under, fsync_directory, verify_manifest, write_manifest
from convae_jax.pytrees import leaf_name, named_leaves
from convae_jax.sharding import is_column_indexed

FORMAT = "convae-jax/checkpoint/2"
FILES = ("config.json", "loop.json")  # besides the orbax files under ARRAYS
ARRAYS = "arrays"
_NAME = re.compile(r"^epoch-(\d{6})$")
_TMP = re.compile(r"^epoch-\d{6}\.(tmp|old)$")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: `trees[name]` is shaped like the target given for `name`."""

    path: Path
    epoch: int
    config: Config
    fingerprint: str
    trees: dict[str, Any]
    loop: dict


def data_fingerprint(*parts: Interactions | None) -> str:
    """SHA-256 over the index spaces, channel values and interaction arrays of `parts` (None
    counts as an empty part), so a resume on other data is refused."""
    digest = hashlib.sha256()
    for part in parts:
        if part is None:
            digest.update(b"none")
            continue
        digest.update(json.dumps([part.n_users, part.n_items, list(part.channel_values)]).encode())
        for arr in (part.user, part.item, part.channel, part.count):
            digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def list_checkpoints(directory) -> list[Path]:
    """Checkpoint directories under `directory` that finished writing, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def read_checkpoint(path, targets: dict[str, Any] | None = None) -> Checkpoint:
    """Verifies and reads one checkpoint directory; CheckpointError if anything is missing,
    altered, or shaped unlike `targets`.

    `targets[name]` is a tree of `jax.ShapeDtypeStruct`s (or arrays) for group `name`: its leaves
    are restored as jax.Arrays with their `sharding` (the first local device where a leaf has
    none), column-indexed leaves cut or zero-padded to the target's rows (see the module
    docstring). Without targets, `trees[name]` is the flat dict of that group's arrays as numpy,
    in the unpadded format (for inspection)."""
    path = Path(path)
    listed = verify_manifest(path, FORMAT, error=CheckpointError, require_self_check=True)
    missing = [name for name in FILES if name not in listed]
    if missing:
        raise CheckpointError(f"{path / missing[0]}: missing (not in the manifest)")
    try:
        config = Config.from_dict(json.loads((path / "config.json").read_text()))
        loop = json.loads((path / "loop.json").read_text())
        columns = loop["columns"]
        with _orbax() as orbax_checkpointer:
            arrays = (path / ARRAYS).absolute()
            metadata = orbax_checkpointer.metadata(arrays).item_metadata.tree
            if targets is None:
                kinds = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
                found = orbax_checkpointer.restore(arrays, args=ocp.args.PyTreeRestore(restore_args=kinds))
                trees = {name: _unpadded(named_leaves(found[name]), columns) for name in loop["trees"]}
            else:
                wanted = {name: _abstract(targets[name]) for name in loop["trees"]}
                restore_args = _restore_args(wanted, named_leaves(metadata), columns, source=path / ARRAYS)
                trees = orbax_checkpointer.restore(arrays, args=ocp.args.PyTreeRestore(item=wanted,
                                                                                        restore_args=restore_args))
        return Checkpoint(path, int(loop["epoch"]), config, str(loop["fingerprint"]), dict(trees), loop)
    except CheckpointError:
        raise
    except Exception as err:  # orbax and TensorStore raise many types, bare Exception included
        # Reached only if the files passed their checksums yet do not parse: a writer bug, not bit rot.
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None


class CheckpointDir:
    """The checkpoints of one run: `save` after each epoch, `latest` to resume. `columns` is the
    catalogue's real number of columns (rows of the column-indexed leaves before any padding);
    None when the trees hold no padded leaves."""

    def __init__(self, directory, *, config: Config, fingerprint: str, columns: int | None = None, keep: int = 2):
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.directory, self.config, self.fingerprint, self.keep = Path(directory), config, fingerprint, keep
        self.columns = columns

    def complete(self) -> list[Path]:
        """Checkpoint directories that finished writing, newest first."""
        return list_checkpoints(self.directory)

    def save(self, epoch: int, trees: dict[str, Any], loop: dict) -> Path:
        """Writes checkpoint `epoch` atomically (see the module docstring) and prunes old ones.
        `trees` maps names to pytrees of jax.Arrays or numpy arrays (None entries are skipped);
        `loop` must be JSON-able. Every process must call it, with the same arguments: each writes
        its own shards of the jax.Arrays (numpy leaves are written by process 0), process 0 the rest."""
        primary = is_writer()
        final = self.directory / f"epoch-{epoch:06d}"
        tmp = final.with_name(final.name + ".tmp")
        if primary:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
            tmp.mkdir()
        present = {name: tree for name, tree in trees.items() if tree is not None}
        with _orbax() as orbax_checkpointer:  # collective: returns once every process's shards are final
            orbax_checkpointer.save((tmp / ARRAYS).absolute(), args=ocp.args.PyTreeSave(present))
        if primary:
            record = dict(loop, epoch=epoch, trees=sorted(present), fingerprint=self.fingerprint, columns=self.columns)
            atomic_write(tmp / "config.json", lambda f: f.write(self.config.to_json().encode()))
            atomic_write(tmp / "loop.json", lambda f: f.write(json.dumps(record, indent=1).encode()))
            write_manifest(tmp, FORMAT, files_under(tmp))
            if final.exists():  # an unreadable checkpoint of this epoch, skipped when resuming
                final.rename(final.with_name(final.name + ".old"))
            tmp.rename(final)
            fsync_directory(self.directory)
            for old in self.complete()[self.keep:]:
                # Renamed first: a crash mid-delete must not leave a complete-looking, gutted checkpoint.
                old.rename(old.with_name(old.name + ".old"))
            fsync_directory(self.directory)
            self._remove_leftovers()
        ocp.multihost.sync_global_processes(f"convae-checkpoint-{epoch}-in-place")  # a no-op in one process
        return final

    def latest(self, targets: dict[str, Any]) -> Checkpoint | None:
        """The newest readable checkpoint restored onto `targets` (see `read_checkpoint`), or None
        when none was written yet.

        An unreadable newest checkpoint is skipped with a warning in favour of an older one; if
        checkpoints exist and none is readable, CheckpointError. A readable checkpoint of another
        config or other data is never resumed from: CheckpointError."""
        reasons = []
        for path in self.complete():
            try:
                found = read_checkpoint(path, targets)
            except CheckpointError as err:
                warnings.warn(f"skipping unreadable checkpoint: {err}", stacklevel=2)
                reasons.append(str(err))
                continue
            self._check_same_run(found)
            return found
        if reasons:
            raise CheckpointError(f"{self.directory}: no readable checkpoint to resume from: " + "; ".join(reasons))
        return None

    def _check_same_run(self, found: Checkpoint) -> None:
        """CheckpointError unless `found` is of this run: the same config but for `mesh` (a
        checkpoint restores onto any mesh), and the same data."""
        if dataclasses.replace(found.config, mesh=self.config.mesh) != self.config:
            mine, theirs = self.config.to_dict(), found.config.to_dict()
            changed = [f"{section}.{key}" for section in mine for key in mine[section]
                       if section != "mesh" and mine[section][key] != theirs[section][key]]
            raise CheckpointError(f"{found.path}: written with another config (differs in {', '.join(changed)}); "
                                  "resume with the run's own config")
        if found.fingerprint != self.fingerprint:
            raise CheckpointError(f"{found.path}: written for other training data (fingerprint mismatch)")

    def _remove_leftovers(self) -> None:
        """Removes `.tmp` directories of writes cut short and `.old` ones of replaced checkpoints."""
        for path in self.directory.iterdir():
            if path.is_dir() and _TMP.match(path.name):
                shutil.rmtree(path)


def root_key_data(seed: int) -> list[int]:
    """The raw data of the run's root PRNG key, stored so that a checkpoint names its key stream."""
    return np.asarray(jax.random.key_data(jax.random.key(seed))).tolist()


def _orbax() -> ocp.Checkpointer:
    """orbax's synchronous checkpointer of pytrees: OCDBT files, one set per process."""
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler())


def _abstract(tree):
    """`tree` with every leaf as a ShapeDtypeStruct that carries a sharding (the leaf's own, or
    the first local device)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=getattr(leaf, "sharding", None) or device),
        tree)


def _restore_args(wanted: dict, stored: dict, columns: int | None, *, source: Path):
    """orbax restore arguments for every leaf of `wanted`, after checking it against the stored
    leaf of the same name: same dtype and shape, except that a column-indexed leaf's rows may
    differ when both sides hold at least the `columns` real ones (orbax then cuts or zero-pads)."""
    def arg(path, target):
        name = leaf_name(path)
        found = stored.get(name)
        shape, got = tuple(target.shape), None if found is None else tuple(found.shape)
        resizable = columns is not None and is_column_indexed(path, target) and got is not None and len(got) == len(shape)
        fits = got == shape or (resizable and got[1:] == shape[1:] and min(got[0], shape[0]) >= columns)
        if found is None or np.dtype(found.dtype) != np.dtype(target.dtype) or not fits:
            what = "nothing" if found is None else f"{np.dtype(found.dtype)}{list(got)}"
            raise CheckpointError(f"{source}: {name} should be {np.dtype(target.dtype)}{list(shape)}, found {what}")
        return ocp.ArrayRestoreArgs(sharding=target.sharding, global_shape=shape, strict=got == shape)

    return jax.tree_util.tree_map_with_path(arg, wanted)


def _unpadded(flat: dict, columns: int | None) -> dict:
    """Named host arrays with column-indexed leaves cut to the `columns` real columns."""
    if columns is None:
        return flat
    return {name: leaf[:columns] if is_column_indexed((jax.tree_util.DictKey(name),), leaf) else leaf
            for name, leaf in flat.items()}
