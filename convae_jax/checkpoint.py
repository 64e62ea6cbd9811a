"""Training checkpoints: atomic, checksummed, pickle-free snapshots of a run that `fit` resumes from.

Layout of a checkpoint directory (one per run, `RUN_DIR/checkpoints` under the CLI):

    epoch-000003/   config.json  arrays.npz  loop.json  manifest.json
    epoch-000004/   ...

- `arrays.npz`: named arrays (`io.flatten_tree`), one group per pytree the trainer hands over
  (the train state: parameters, Adam state, step; the best-so-far parameters).
- `loop.json`: what the epoch loop needs beyond arrays (epochs done, best score, patience
  counter, history, the shuffling generator's exact state, whether the run finished) plus the
  root PRNG key data and the fingerprint of the training data.
- `config.json`: the run's config. `manifest.json`: a SHA-256 per file and of itself.

Writing (`CheckpointDir.save`): every file goes into `epoch-NNNNNN.tmp/` and is fsynced, the
manifest last; the directory is then renamed into place and its parent fsynced. A directory
named `epoch-NNNNNN` is therefore complete; a crash leaves at most a `.tmp` directory, which
readers ignore and the next save removes. Older checkpoints are pruned only after the new one is
in place, keeping the newest `keep` (default 2), so the last good checkpoint always survives; a
pruned one is renamed to `.old` before it is deleted, so a crash mid-delete never leaves a
gutted directory under a checkpoint's name (the kill test caught exactly that).

Reading (`read_checkpoint`): the manifest and every checksum are verified before any byte is
parsed, so a truncated or bit-flipped file is refused with `CheckpointError`, never half-loaded.

Why not orbax-checkpoint: it is not a dependency, it does not verify content checksums (which
the refusal of altered files needs anyway), and a single-host run with a few arrays and a JSON
loop state needs nothing more than npz + JSON. A sharded multi-host run would want orbax.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from convae_jax.config import Config
from convae_jax.data.interactions import Interactions
from convae_jax.errors import CheckpointError
from convae_jax.io import atomic_write, flatten_tree, fsync_directory, restore_tree, verify_manifest, write_manifest

FORMAT = "convae-jax/checkpoint/1"
FILES = ("config.json", "arrays.npz", "loop.json")
_NAME = re.compile(r"^epoch-(\d{6})$")
_TMP = re.compile(r"^epoch-\d{6}\.(tmp|old)$")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: `trees[name]` is shaped like the template given for `name`."""

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


def read_checkpoint(path, templates: dict[str, Any] | None = None) -> Checkpoint:
    """Verifies and reads one checkpoint directory; CheckpointError if anything is missing,
    altered, or shaped unlike `templates`. Without templates, `trees[name]` is the flat dict of
    that group's arrays (for inspection)."""
    path = Path(path)
    verify_manifest(path, FORMAT, FILES, error=CheckpointError, require_self_check=True)
    try:
        config = Config.from_dict(json.loads((path / "config.json").read_text()))
        loop = json.loads((path / "loop.json").read_text())
        with np.load(path / "arrays.npz", allow_pickle=False) as f:
            flat = {name: f[name] for name in f.files}
        if templates is None:
            trees = {name: {k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + "/")}
                     for name in loop["trees"]}
        else:
            trees = {name: restore_tree(templates[name], flat, source=path / "arrays.npz", prefix=name + "/",
                                        error=CheckpointError)
                     for name in loop["trees"]}
        return Checkpoint(path, int(loop["epoch"]), config, str(loop["fingerprint"]), trees, loop)
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile) as err:
        # Reached only if a file passed its checksum yet does not parse: a writer bug, not bit rot.
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None


class CheckpointDir:
    """The checkpoints of one run: `save` after each epoch, `latest` to resume."""

    def __init__(self, directory, *, config: Config, fingerprint: str, keep: int = 2):
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.directory, self.config, self.fingerprint, self.keep = Path(directory), config, fingerprint, keep

    def complete(self) -> list[Path]:
        """Checkpoint directories that finished writing, newest first."""
        return list_checkpoints(self.directory)

    def save(self, epoch: int, trees: dict[str, Any], loop: dict) -> Path:
        """Writes checkpoint `epoch` atomically (see the module docstring) and prunes old ones.
        `trees` maps names to pytrees (None entries are skipped); `loop` must be JSON-able."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        final = self.directory / f"epoch-{epoch:06d}"
        tmp = final.with_name(final.name + ".tmp")
        tmp.mkdir()
        present = {name: tree for name, tree in trees.items() if tree is not None}
        arrays = {}
        for name, tree in present.items():
            arrays.update(flatten_tree(tree, prefix=name + "/"))
        record = dict(loop, epoch=epoch, trees=sorted(present), fingerprint=self.fingerprint)
        atomic_write(tmp / "config.json", lambda f: f.write(self.config.to_json().encode()))
        atomic_write(tmp / "arrays.npz", lambda f: np.savez(f, **arrays))
        atomic_write(tmp / "loop.json", lambda f: f.write(json.dumps(record, indent=1).encode()))
        write_manifest(tmp, FORMAT, FILES)
        if final.exists():  # an unreadable checkpoint of this epoch, skipped when resuming
            final.rename(final.with_name(final.name + ".old"))
        tmp.rename(final)
        fsync_directory(self.directory)
        for old in self.complete()[self.keep:]:
            # Renamed first: a crash mid-delete must not leave a complete-looking, gutted checkpoint.
            old.rename(old.with_name(old.name + ".old"))
        fsync_directory(self.directory)
        self._remove_leftovers()
        return final

    def latest(self, templates: dict[str, Any]) -> Checkpoint | None:
        """The newest readable checkpoint, or None when none was written yet.

        An unreadable newest checkpoint is skipped with a warning in favour of an older one; if
        checkpoints exist and none is readable, CheckpointError. A readable checkpoint of another
        config or other data is never resumed from: CheckpointError."""
        reasons = []
        for path in self.complete():
            try:
                found = read_checkpoint(path, templates)
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
        if found.config != self.config:
            mine, theirs = self.config.to_dict(), found.config.to_dict()
            changed = [f"{section}.{key}" for section in mine for key in mine[section]
                       if mine[section][key] != theirs[section][key]]
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
