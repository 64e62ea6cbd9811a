"""The capacity studies: bounds of untied models (block-diagonal convs) against the materialised
network, the naive reading as an untied copy, the exponent fit, τ and the paired interval by hand."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import block_diag

from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel
from theory.bounds import (
    frobenius_norm,
    layer_norms,
    ledent_layers,
    norm_2_1,
    output_bias_into_decoder,
    spectral_norm,
    untied_filters,
)
from theory.capacity import catalogue_exponents, paired_interval, sharing_statistics
from theory.fitting import BOUNDS_OVERRIDES, theory_config
from theory.synthetic import draw_samples, make_truth

N_ITEMS = 6


def _random_model(*, tied: bool, seed: int = 0):
    """A user-row model with random weights (k = 2 < C = 5, k' = C), and random initial weights."""
    truth = make_truth(n_users=20, n_items=N_ITEMS, rank=2, seed=seed)
    _, fit, _ = draw_samples(truth, 400, seed=seed)
    config = theory_config(["model.hidden=(6,)", "model.conv_channels=2", "model.decoder_channels=5",
                            f"model.tie_filters={tied}", *BOUNDS_OVERRIDES])
    module = build_model(config.model, n_cols=N_ITEMS, n_channels=5)
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda key: init_params(module, key), jax.random.key(0))
    draw = lambda s: rng.normal(0, 0.5, s.shape).astype(np.float32)
    params, params0 = jax.tree_util.tree_map(draw, shapes), jax.tree_util.tree_map(draw, shapes)
    return FittedModel(config, params, fit), params0, module


def _untied_chain(params):
    """The four augmented layer matrices of an untied model, built in full: block-diagonal convs."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), dict(params))
    def aug(m, b=None, last=False):
        top = np.concatenate([m, (np.zeros(m.shape[0]) if b is None else b)[:, None]], axis=1)
        return top if last else np.vstack([top, np.eye(1, top.shape[1], top.shape[1] - 1)])
    n, k, d = p["encoder_kernel"].shape
    moved, _ = output_bias_into_decoder(p)
    return [aug(block_diag(*[a.T for a in p["input_conv"]])),
            aug(p["encoder_kernel"].reshape(n * k, d).T, p["encoder_bias"]),
            aug(p["decoder_kernel"].reshape(-1, d), moved.ravel()),
            aug(block_diag(*[b.T for b in p["output_conv"]]), last=True)]


def test_untied_layer_chain_reproduces_the_model_and_its_norms():
    """Per-column filters: the chain with block-diagonal convs gives the model's logits (the output
    bias moved into the decoder exactly, k' = C), and each layer's norms are the built matrix's, in
    both readings (an untied model has nothing to share)."""
    model, params0, module = _random_model(tied=False)
    assert model.params["input_conv"].shape == (N_ITEMS, 5, 2)
    _, residual = output_bias_into_decoder(model.params)
    assert residual < 1e-5
    items, channels, counts = np.array([0, 3, 3, 5]), np.array([4, 0, 2, 1]), np.array([1.0, 2.0, 1.0, 3.0])
    x = np.zeros((N_ITEMS, 5))
    x[items, channels] = counts
    mats, mats0 = _untied_chain(model.params), _untied_chain(params0)
    h = mats[1] @ (mats[0] @ np.append(x.ravel() / np.linalg.norm(x), 1.0))
    h = mats[3] @ (mats[2] @ np.maximum(h, 0.0))
    logits = module.apply({"params": model.params}, jnp.zeros(4, jnp.int32), jnp.asarray(items), jnp.asarray(channels),
                          jnp.asarray(counts, jnp.float32), 1)[0]
    np.testing.assert_allclose(h.reshape(N_ITEMS, 5), np.asarray(logits), rtol=1e-4, atol=1e-4)
    for variant in ("shared", "naive"):
        for layer, m, m0 in zip(layer_norms(model.params, params0, variant=variant), mats, mats0):
            np.testing.assert_allclose(
                [layer.spectral, layer.frobenius, layer.distance_2_1, layer.distance_frobenius],
                [spectral_norm(m), frobenius_norm(m), norm_2_1((m - m0).T), frobenius_norm(m - m0)], rtol=1e-9,
                err_msg=f"{variant} {layer.name}")


def test_naive_reading_of_a_tied_model_is_its_untied_copy():
    """`naive` counts a tied filter n times: the norms of the copy with that filter at every column,
    read as an untied model. The untied Ledent chain has dense layers: one position, whole-input patches."""
    model, params0, _ = _random_model(tied=True)
    copy, copy0 = untied_filters(model.params, N_ITEMS), untied_filters(params0, N_ITEMS)
    for naive, untied in zip(layer_norms(model.params, params0, variant="naive"), layer_norms(copy, copy0, variant="shared")):
        assert (naive.name, naive.n_params, naive.width) == (untied.name, untied.n_params, untied.width)
        np.testing.assert_allclose([naive.spectral, naive.frobenius, naive.distance_2_1, naive.distance_frobenius],
                                   [untied.spectral, untied.frobenius, untied.distance_2_1, untied.distance_frobenius],
                                   rtol=1e-12, err_msg=naive.name)
    tied_chain = ledent_layers(model.params, params0, model.train, model.train)
    dense_chain = ledent_layers(copy, copy0, model.train, model.train)
    a, a0 = (np.asarray(q["input_conv"], np.float64) for q in (model.params, params0))
    assert dense_chain[0].distance == pytest.approx(N_ITEMS * tied_chain[0].distance)
    assert dense_chain[0].distance == pytest.approx(N_ITEMS * norm_2_1(a - a0))
    assert dense_chain[0].input_patch_norm == pytest.approx(1.0)  # ℓ2-normalised rows, read whole
    assert [(c.positions, c.channels, c.input_side) for c in dense_chain] == [
        (1, N_ITEMS * 2, 1.0), (1, 6, 1.0), (1, N_ITEMS * 5, 1.0), (1, N_ITEMS * 5, 1.0)]
    assert [(c.positions, c.channels) for c in tied_chain] == [(N_ITEMS, 2), (1, 6), (N_ITEMS, 5), (1, N_ITEMS * 5)]


def test_paired_interval_by_hand():
    """Differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3027 → 2 ± 4.3027/√3."""
    out = paired_interval([1.0, 2.0, 3.0])
    half = 4.30265272974946 / math.sqrt(3)  # t(0.975, 2), tables: 4.303
    assert out["mean"] == pytest.approx(2.0) and out["positive"] == 3 and out["count"] == 3
    np.testing.assert_allclose(out["ci95"], [2 - half, 2 + half], rtol=1e-10)


def _run(n_items, n, gap, bound, **extra):
    return {"n_items": n_items, "n": n, "smoothed": {"gap": gap},
            "bounds": {"ledent (shared)": {"bound": bound}, "ledent (naive)": {"bound": 2 * bound}}, **extra}


def test_catalogue_exponents_recover_a_power_law():
    """Gap 0.1·n^0.4 and bound 3·n^1.5 on two seeds: slopes 0.4 and 1.5, intervals of zero width;
    a series with a gap <= 0 gets no slope."""
    items = (50, 100, 200, 400)
    runs = [_run(m, 1000, 0.1 * m**0.4, 3 * m**1.5) for m in items for _ in range(2)]
    out = catalogue_exponents(runs, {"fixed_n": list(range(len(runs)))})["fixed_n"]
    assert out["gap (split, smoothed)"]["slope"] == pytest.approx(0.4)
    assert out["ledent (shared)"]["slope"] == pytest.approx(1.5) and out["ledent (naive)"]["slope"] == pytest.approx(1.5)
    np.testing.assert_allclose(out["ledent (shared)"]["ci95"], [1.5, 1.5], atol=1e-9)
    runs[0]["smoothed"]["gap"] = -0.01
    out = catalogue_exponents(runs, {"fixed_n": list(range(len(runs)))})["fixed_n"]
    assert out["gap (split, smoothed)"] == {"slope": None, "ci95": None, "nonpositive": 1}


def test_sharing_statistics_by_hand():
    """Four configurations: the bound orders the gaps perfectly (τ = 1) across n; untied − tied gaps
    0.1, 0.2, 0.3, −0.2 and bound differences +1 each."""
    runs = []
    for n_items, k, gap_tied, step in [(10, 2, 0.5, 0.1), (10, 3, 0.6, 0.2), (20, 2, 0.9, 0.3), (20, 3, 1.2, -0.2)]:
        for tied in (True, False):
            gap = gap_tied + (0 if tied else step)
            runs.append(_run(n_items, 100, gap, 10 * gap, seed=0, k=k, dropout=0.0, tied=tied))
    out = sharing_statistics(runs)
    assert out["kendall_tau"]["ledent (shared)"]["tau"] == pytest.approx(1.0)
    gap = out["paired_untied_minus_tied"]["gap (split, smoothed)"]
    assert gap["mean"] == pytest.approx(0.1) and gap["positive"] == 3 and gap["count"] == 4
    bound = out["paired_untied_minus_tied"]["ledent (shared)"]
    assert bound["mean"] == pytest.approx(1.0) and bound["positive"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["catalogue", "sharing"])
def test_capacity_commands_end_to_end(tmp_path, experiment):
    """The quick presets write JSON, markdown and PNG; every bound lies above its smoothed gap."""
    from theory.experiments import run_theory

    run_theory(experiment, quick=True, out_dir=tmp_path, log=lambda line: None)
    result = json.loads((tmp_path / f"{experiment}.json").read_text())
    assert (tmp_path / f"{experiment}.md").stat().st_size > 0 and (tmp_path / f"{experiment}.png").stat().st_size > 0
    for run in result["runs"]:
        assert all(entry["bound"] > run["smoothed"]["gap"] for entry in run["bounds"].values())
