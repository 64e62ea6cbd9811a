"""Conv4Rec's named presets of the comparison: the configs its grids start from, each a function
returning a `Config` (the validation scores that chose each: docs/results.md, "Presets' selection histories")."""

from __future__ import annotations

from collections.abc import Callable

from convae_jax import config as config_lib


def ratings_fast() -> config_lib.Config:
    """The default model with batches of 32 rows and a 40-epoch cap (patience 5): the comparison's
    budgeted Conv4Rec, reaching the default's validation RMSE in half its epochs."""
    return config_lib.default().override(["train.batch_rows=32", "train.max_epochs=40", "train.patience=5"])


def clicks_fast() -> config_lib.Config:
    """`ratings_fast` for a single click channel: no rating validation exists, so no early
    stopping (validation_fraction 0) and a fixed 30 epochs."""
    return ratings_fast().override(["train.max_epochs=30", "train.validation_fraction=0.0"])


def ratings_dropout() -> config_lib.Config:
    """`ratings_fast` with a lighter L2 (0.05) and heavier input dropout (0.7): the rating grid's
    more regularised-by-noise point, chosen on ML-100K u1 validation data."""
    return ratings_fast().override(["train.l2=0.05", "model.input_dropout=0.7"])


def ratings_narrow() -> config_lib.Config:
    """`ratings_fast` with d = 32 and λ = 3 (L2 0.1 kept): the rating grid's point for sets whose
    ratings are mostly per-item offsets, chosen on Douban validation data."""
    return ratings_fast().override(["model.hidden=(32,)", "model.rating_weight=3.0"])


# The presets a grid point may name; `testing` is the quick mode's tiny model, `default` the library's default.
PRESETS: dict[str, Callable[[], config_lib.Config]] = {
    "testing": config_lib.testing, "default": config_lib.default, "ratings_fast": ratings_fast, "clicks_fast": clicks_fast,
    "ratings_dropout": ratings_dropout, "ratings_narrow": ratings_narrow}


def conv4rec_config(preset: str, overrides=(), *, seed: int) -> config_lib.Config:
    """The config of one grid point: the named preset, its overrides, the run's seed, no progress bar."""
    return PRESETS[preset]().override(list(overrides) + [f"train.seed={seed}", "train.progress=False"])
