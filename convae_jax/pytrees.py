"""Names of pytree leaves: the one spelling that checkpoints, model files and the L2 penalty share."""

from __future__ import annotations

import jax


def leaf_name(path) -> str:
    """A pytree path as `a/b/c` (dict keys, attribute names and sequence indices joined by `/`)."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def named_leaves(tree) -> dict:
    """{leaf_name(path): leaf} of every leaf, in the tree's flattening order."""
    return {leaf_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
