"""Saving and loading fitted models without pickle: JSON for config and metadata, `.npz` for
arrays, a SHA-256 per file so that a truncated or altered file is refused."""

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
from convae_jax.errors import ConfigError, ModelFileError
from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel

FORMAT = "convae-jax/model/1"
FILES = ("config.json", "params.npz", "train.npz")


def save_model(model: FittedModel, directory) -> Path:
    """Writes config, parameters and training interactions to `directory`, then `manifest.json`
    (format and checksums) last, atomically, so a half-written model never looks complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {"/".join(str(getattr(p, "key", p)) for p in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(model.params))[0]}
    _atomic(directory / "config.json", lambda f: f.write(model.config.to_json().encode()))
    _atomic(directory / "params.npz", lambda f: np.savez(f, **flat))
    train = model.train
    _atomic(directory / "train.npz", lambda f: np.savez(
        f, user=train.user, item=train.item, channel=train.channel, count=train.count,
        channel_values=np.asarray(train.channel_values), user_ids=_plain(train.user_ids), item_ids=_plain(train.item_ids)))
    manifest = {"format": FORMAT, "sha256": {name: _sha256(directory / name) for name in FILES}}
    _atomic(directory / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=2).encode()))
    return directory


def load_model(directory) -> FittedModel:
    """Reads a model written by `save_model`; ModelFileError if anything is missing, altered or
    inconsistent with the config."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{directory / 'manifest.json'}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{directory}: not a {FORMAT} model")
    for name in FILES:
        path = directory / name
        if not path.is_file() or _sha256(path) != manifest.get("sha256", {}).get(name):
            raise ModelFileError(f"{path}: missing or altered (checksum mismatch)")
    try:
        config = Config.from_dict(json.loads((directory / "config.json").read_text()))
        with np.load(directory / "train.npz", allow_pickle=False) as f:
            train = Interactions.build(f["user"], f["item"], f["channel"], f["count"], n_users=len(f["user_ids"]),
                                       n_items=len(f["item_ids"]), channel_values=tuple(f["channel_values"]),
                                       user_ids=f["user_ids"], item_ids=f["item_ids"])
        with np.load(directory / "params.npz", allow_pickle=False) as f:
            flat = {name: f[name] for name in f.files}
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, ConfigError) as err:
        raise ModelFileError(f"{directory}: unreadable model files ({err})") from None
    n_cols = train.n_users if config.model.orientation == "item" else train.n_items
    expected = jax.eval_shape(lambda: init_params(build_model(config.model, n_cols=n_cols, n_channels=train.n_channels),
                                                  jax.random.key(0)))
    params = {}
    for path, spec in jax.tree_util.tree_flatten_with_path(expected)[0]:
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        if name not in flat or flat[name].shape != spec.shape:
            got = flat[name].shape if name in flat else "nothing"
            raise ModelFileError(f"{directory / 'params.npz'}: parameter {name} should be {spec.shape}, found {got}")
        node = params
        for key in name.split("/")[:-1]:
            node = node.setdefault(key, {})
        node[name.split("/")[-1]] = flat[name]
    return FittedModel(config, params, train)


def _plain(ids: np.ndarray) -> np.ndarray:
    """Ids as a numeric or fixed-width string array, which npz stores without pickle."""
    ids = np.asarray(ids)
    return ids.astype(str) if ids.dtype == object else ids


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _atomic(path: Path, write) -> None:
    """Write to a temporary file, fsync, rename over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
