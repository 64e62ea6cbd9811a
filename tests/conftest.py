"""Shared fixtures: the real datasets beside the checkout, and small synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convae_jax.data import SyntheticTruth

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONVAE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def dataset_dir(name: str) -> Path:
    """The directory of a real dataset; the calling test is skipped, with the reason, when absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (set CONVAE_DATA_DIR to the folder holding it)")
    return path


@pytest.fixture(scope="session")
def small_truth() -> SyntheticTruth:
    return SyntheticTruth(n_users=60, n_items=40, n_channels=5, rank=3, seed=3)


@pytest.fixture(scope="session")
def small_data(small_truth):
    """60 users x 40 items, 12 ratings per user: real-data-like (0/1, one rating per pair)."""
    return small_truth.sample_histories(12, seed=0)
