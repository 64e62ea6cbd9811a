"""The accuracy controls: the loss control's squared error is EASE's objective (at EASE's weights
its gradient vanishes off the diagonal, and the diagonal never enters either loss); the paired
gap's differences, intervals and rerun agree with the comparison's own scoring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dataset_dir

from benchmarks.accuracy import paired_gap
from benchmarks.accuracy.entrants import implicit_entrants
from benchmarks.accuracy.loss_control import LOSSES, _batch_loss
from benchmarks.accuracy.splits import task_split
from convae_jax.errors import ConvaeError
from convae_jax.peers.ease import EASE
from convae_jax.rank import seen_mask


def _clicks(data):
    return jnp.asarray(seen_mask(np.unique(data.user), data, data.n_items).astype(np.float32))


def test_squared_error_is_stationary_at_ease_weights(small_data):
    l2 = 7.0
    clicks = _clicks(small_data)
    params = {"s": jnp.asarray(EASE.fit(small_data, l2=l2).weights), "bias": jnp.zeros(small_data.n_items)}
    keep_all = jnp.ones_like(clicks)
    grads = jax.grad(lambda p: _batch_loss("squared", p, clicks, keep_all, l2 / clicks.shape[0], 0.0))(params)
    off_diagonal = np.asarray(grads["s"])[~np.eye(small_data.n_items, dtype=bool)]
    away = jax.grad(lambda p: _batch_loss("squared", p, clicks, keep_all, l2 / clicks.shape[0], 0.0))(
        {"s": params["s"] * 0.5, "bias": params["bias"]})
    assert np.abs(off_diagonal).max() < 1e-3 * np.abs(np.asarray(away["s"])).max()


@pytest.mark.parametrize("loss", LOSSES)
def test_the_diagonal_does_not_enter_the_data_term(small_data, loss):
    clicks = _clicks(small_data)
    keep = jax.random.bernoulli(jax.random.PRNGKey(0), 0.4, clicks.shape)
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=(small_data.n_items,) * 2).astype(np.float32))
    bias = jnp.zeros(small_data.n_items)
    diagonal = jnp.diag(jnp.asarray(rng.normal(size=small_data.n_items).astype(np.float32)))
    base = _batch_loss(loss, {"s": s, "bias": bias}, clicks, keep, 0.0, 0.6)
    moved = _batch_loss(loss, {"s": s + diagonal, "bias": bias}, clicks, keep, 0.0, 0.6)
    np.testing.assert_allclose(float(moved), float(base), rtol=1e-6)


def test_paired_differences_pair_the_same_users():
    ours, theirs = {4: 0.5, 1: 0.25, 9: 0.0}, {1: 0.5, 4: 0.25, 7: 1.0}
    np.testing.assert_allclose(paired_gap.paired_differences(ours, theirs), [-0.25, 0.25])  # users 1, 4
    with pytest.raises(ConvaeError, match="share no scored user"):
        paired_gap.paired_differences({1: 0.1}, {2: 0.1})


def test_paired_bootstrap_interval_covers_the_shift_and_keeps_seeds_apart():
    rng = np.random.default_rng(0)
    shifted = [0.03 + 0.05 * rng.standard_normal(300) for _ in range(3)]
    gap = paired_gap.paired_bootstrap(shifted, draws=4000)
    assert gap["low"] < 0.03 < gap["high"] and gap["low"] > 0  # a 0.03 shift over 900 users is not noise
    assert gap["mean"] == pytest.approx(np.mean([d.mean() for d in shifted]), rel=1e-12)
    assert gap["n_users"] == 900 and gap["better"] + gap["worse"] + gap["tied"] == 900
    constant = paired_gap.paired_bootstrap([np.full(5, -0.01), np.zeros(3)], draws=100)
    assert constant["low"] == pytest.approx(-0.005) and constant["high"] == pytest.approx(-0.005)
    assert constant["per_seed"] == pytest.approx([-0.01, 0.0]) and (constant["tied"], constant["worse"]) == (3, 5)
    noise = paired_gap.paired_bootstrap([0.05 * rng.standard_normal(300) for _ in range(3)], draws=4000)
    assert noise["low"] < 0 < noise["high"]


def test_paired_gap_quick_run_scores_as_the_comparison_does():
    """Quick mode on ML-100K, on a seed of its own choosing: each rerun model's per-user NDCG@100
    averages to what the comparison's own entrant reports for the same point and seed (EASE,
    closed form), and the mean paired difference is the difference of the means (the same users
    on both sides)."""
    data_dir = dataset_dir("ml-100k").parent
    entry = paired_gap.run_dataset("ml-100k", data_dir, data_dir, quick=True, seeds=[1], log=lambda _: None)
    split = task_split("ml-100k", None, data_dir / "ml-100k", seed=1, quick=True)
    ease = next(e for e in implicit_entrants(quick=True) if e.name == "EASE")
    _, ease_test = ease.run(split, ease.grid[0], 1)
    assert entry["seeds"] == [1] and all(runs[0]["seed"] == 1 for runs in entry["reruns"].values())
    reruns = {name: runs[0]["ndcg@100"] for name, runs in entry["reruns"].items()}
    assert reruns["EASE"] == pytest.approx(ease_test["ndcg@100"], rel=1e-9)
    for peer in paired_gap.PEERS:
        gap = entry["gaps"][peer]
        assert gap["n_users"] == ease_test["n_users"]
        assert gap["mean"] == pytest.approx(reruns[paired_gap.CONV4REC] - reruns[peer], abs=1e-9)
        assert gap["low"] <= gap["mean"] <= gap["high"]
