"""Saving and loading fitted models without pickle: JSON for config and metadata, `.npz` for
arrays, a SHA-256 per file so that a truncated or altered file is refused.

The helpers below (atomic writes, checksummed manifests, pytree <-> named arrays) are shared with
`convae_jax.checkpoint`."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import jax
import numpy as np

from convae_jax.config import Config
from convae_jax.data.interactions import Interactions
from convae_jax.errors import ConvaeError, ModelFileError
from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel
from convae_jax.pytrees import leaf_name, named_leaves

FORMAT = "convae-jax/model/1"
FILES = ("config.json", "params.npz", "train.npz")


def save_model(model: FittedModel, directory) -> Path:
    """Writes config, parameters and training interactions to `directory`, then `manifest.json`
    (format and checksums) last, atomically, so a half-written model never looks complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = flatten_tree(model.params)
    atomic_write(directory / "config.json", lambda f: f.write(model.config.to_json().encode()))
    atomic_write(directory / "params.npz", lambda f: np.savez(f, **flat))
    train = model.train
    atomic_write(directory / "train.npz", lambda f: np.savez(
        f, user=train.user, item=train.item, channel=train.channel, count=train.count,
        channel_values=np.asarray(train.channel_values), user_ids=_plain(train.user_ids), item_ids=_plain(train.item_ids)))
    write_manifest(directory, FORMAT, FILES)
    return directory


def load_model(directory) -> FittedModel:
    """Reads a model written by `save_model`; ModelFileError if anything is missing, altered or
    inconsistent with the config."""
    directory = Path(directory)
    verify_manifest(directory, FORMAT, FILES, error=ModelFileError)
    try:
        config = Config.from_dict(json.loads((directory / "config.json").read_text()))
        with np.load(directory / "train.npz", allow_pickle=False) as f:
            train = Interactions.build(f["user"], f["item"], f["channel"], f["count"], n_users=len(f["user_ids"]),
                                       n_items=len(f["item_ids"]), channel_values=tuple(f["channel_values"]),
                                       user_ids=f["user_ids"], item_ids=f["item_ids"])
        with np.load(directory / "params.npz", allow_pickle=False) as f:
            flat = {name: f[name] for name in f.files}
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile, ConvaeError) as err:
        raise ModelFileError(f"{directory}: unreadable model files ({err})") from None
    n_cols = train.n_users if config.model.orientation == "item" else train.n_items
    expected = jax.eval_shape(lambda: init_params(build_model(config.model, n_cols=n_cols, n_channels=train.n_channels),
                                                  jax.random.key(0)))
    params = restore_tree(expected, flat, source=directory / "params.npz", error=ModelFileError)
    return FittedModel(config, params, train)


# --- helpers shared with convae_jax.checkpoint ---------------------------------------------------

def flatten_tree(tree, *, prefix: str = "") -> dict[str, np.ndarray]:
    """The leaves of a pytree as host arrays named `prefix + leaf_name(path)`, ready for `np.savez`."""
    return {prefix + name: np.asarray(leaf) for name, leaf in named_leaves(jax.device_get(tree)).items()}


def restore_tree(template, flat: dict, *, source, prefix: str = "", error=ModelFileError):
    """Rebuilds a pytree shaped like `template` (arrays or ShapeDtypeStructs) from `flat`, refusing
    any leaf that is missing or differs in shape or dtype."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, spec in paths:
        name = prefix + leaf_name(path)
        found = flat.get(name)
        if found is None or found.shape != tuple(spec.shape) or found.dtype != spec.dtype:
            got = "nothing" if found is None else f"{found.dtype}{list(found.shape)}"
            raise error(f"{source}: {name} should be {np.dtype(spec.dtype)}{list(spec.shape)}, found {got}")
        leaves.append(found)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def write_manifest(directory: Path, fmt: str, names) -> None:
    """Writes `manifest.json` last: the format, a SHA-256 per file, and a SHA-256 of those two
    entries, so that no single altered byte anywhere leaves a consistent-looking directory."""
    body = {"format": fmt, "sha256": {name: file_sha256(directory / name) for name in names}}
    manifest = dict(body, manifest_sha256=_json_sha256(body))
    atomic_write(directory / "manifest.json", lambda f: f.write(_manifest_bytes(manifest)))


def verify_manifest(directory: Path, fmt: str, names=None, *, error=ModelFileError,
                    require_self_check: bool = False) -> list[str]:
    """Raises `error` unless `manifest.json` is intact, of format `fmt`, and every file in `names`
    matches its checksum; returns the names checked. `names=None` checks every file the manifest
    lists, which must then be exactly the files below `directory` (`files_under`). Manifests written
    before the self-check existed are accepted unless `require_self_check`."""
    path = directory / "manifest.json"
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as err:
        raise error(f"{path}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), dict):
        raise error(f"{directory}: not a {fmt} directory (bad manifest)")
    if manifest.get("format") != fmt:  # e.g. a checkpoint of an earlier version
        raise error(f"{directory}: not a {fmt} directory (its manifest says {manifest.get('format')!r})")
    if raw != _manifest_bytes(manifest):  # even a changed space or an appended byte is refused
        raise error(f"{path}: altered (not as written)")
    if "manifest_sha256" in manifest or require_self_check:
        body = {"format": manifest["format"], "sha256": manifest["sha256"]}
        if manifest.get("manifest_sha256") != _json_sha256(body):
            raise error(f"{path}: altered (its own checksum does not match)")
    if names is None:
        names = sorted(manifest["sha256"])
        unexpected = sorted(set(files_under(directory)) - set(names))
        if unexpected:
            raise error(f"{directory / unexpected[0]}: not in the manifest (added after writing)")
    for name in names:
        file = directory / name
        if not file.is_file() or file_sha256(file) != manifest["sha256"].get(name):
            raise error(f"{file}: missing or altered (checksum mismatch)")
    return list(names)


def files_under(directory: Path) -> list[str]:
    """Every file below `directory` but its own `manifest.json`, as sorted relative POSIX paths:
    what a manifest of a directory written by other code (orbax) covers."""
    return sorted(name for name in (p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
                  if name != "manifest.json")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (checkpoint shards may be large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def atomic_write(path: Path, write) -> None:
    """Write to a temporary file, fsync, rename over `path`, fsync the directory: after a crash
    `path` holds either the old or the new content, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Makes a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=2).encode()


def _json_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _plain(ids: np.ndarray) -> np.ndarray:
    """Ids as a numeric or fixed-width string array, which npz stores without pickle."""
    ids = np.asarray(ids)
    return ids.astype(str) if ids.dtype == object else ids

