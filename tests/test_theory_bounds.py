"""Bound quantities: norms on hand matrices, the layer chain against the model, the variants."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel
from theory.bounds import (
    FORMS,
    InputNorms,
    LayerNorms,
    bound_values,
    frobenius_norm,
    input_norms,
    layer_norms,
    model_bounds,
    norm_2_1,
    output_bias_into_decoder,
    spectral_norm,
)
from theory.fitting import theory_config
from theory.synthetic import draw_sample, make_truth


def test_norms_of_hand_matrices():
    rank_one = np.array([[1.0, 2.0], [2.0, 4.0]])  # (1, 2)ᵀ(1, 2): σ = ‖(1,2)‖² = 5
    assert spectral_norm(rank_one) == pytest.approx(5.0)
    assert frobenius_norm(rank_one) == pytest.approx(5.0)  # √(1 + 4 + 4 + 16)
    assert norm_2_1(rank_one) == pytest.approx(3 * math.sqrt(5))  # column norms √5 + 2√5
    diagonal = np.diag([3.0, -4.0])
    assert (spectral_norm(diagonal), frobenius_norm(diagonal), norm_2_1(diagonal)) == pytest.approx((4.0, 5.0, 7.0))
    wide = np.array([[3.0, 4.0, 0.0]])
    assert norm_2_1(wide) == pytest.approx(7.0) and norm_2_1(wide.T) == pytest.approx(5.0)


def _random_model(n_items: int, seed: int = 0):
    truth = make_truth(n_users=20, n_items=n_items, rank=2, seed=seed)
    fit, _ = draw_sample(truth, 400, seed=seed)
    config = theory_config(["model.hidden=(6,)", "model.conv_channels=3", "model.decoder_channels=5"])
    module = build_model(config.model, n_cols=n_items, n_channels=5)
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda key: init_params(module, key), jax.random.key(0))  # no op-by-op compiling
    draw = lambda s: rng.normal(0, 0.5, s.shape).astype(np.float32)
    params, params0 = jax.tree_util.tree_map(draw, shapes), jax.tree_util.tree_map(draw, shapes)
    return FittedModel(config, params, fit), params0, module


def test_bounds_refuse_a_model_they_are_not_derived_for():
    """The layer chain ends with B as a linear map; the ordinal head puts a nonlinearity after it."""
    model, _, _ = _random_model(6)
    ordinal = FittedModel(model.config.override(["model.rating_head=ordinal"]), model.params, model.train)
    with pytest.raises(ValueError, match="categorical rating head"):
        model_bounds(ordinal)


def _materialised(params, n):
    """The augmented layer matrices of theory.bounds, built in full (reference for small n)."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), dict(params))
    def aug(m, b=None, last=False):
        top = np.concatenate([m, (np.zeros(m.shape[0]) if b is None else b)[:, None]], axis=1)
        return top if last else np.vstack([top, np.eye(1, top.shape[1], top.shape[1] - 1)])
    k, d = p["input_conv"].shape[1], p["encoder_bias"].size
    moved, _ = output_bias_into_decoder(p)
    decoder = p["decoder_kernel"].reshape(-1, d)
    return [aug(np.kron(np.eye(n), p["input_conv"].T)), aug(p["encoder_kernel"].reshape(n * k, d).T, p["encoder_bias"]),
            aug(decoder, moved.ravel()), aug(np.kron(np.eye(n), p["output_conv"].T), last=True)]


def test_layer_chain_reproduces_the_model_logits():
    model, _, module = _random_model(7)
    _, residual = output_bias_into_decoder(model.params)
    assert residual < 1e-5
    items, channels, counts = np.array([0, 3, 3, 6]), np.array([4, 0, 2, 1]), np.array([1.0, 2.0, 1.0, 3.0])
    x = np.zeros((7, 5))
    x[items, channels] = counts
    h = np.append(x.ravel(), 1.0)
    mats = _materialised(model.params, 7)
    h = mats[1] @ (mats[0] @ h)
    h = mats[3] @ (mats[2] @ np.maximum(h, 0.0))  # ReLU keeps the constant coordinate at 1
    logits = module.apply({"params": model.params}, jnp.zeros(4, jnp.int32), jnp.asarray(items), jnp.asarray(channels),
                          jnp.asarray(counts, jnp.float32), 1)[0]
    np.testing.assert_allclose(h.reshape(7, 5), np.asarray(logits), rtol=1e-4, atol=1e-4)


def test_naive_layer_norms_are_those_of_the_block_diagonal_matrices():
    model, params0, _ = _random_model(6)
    mats, mats0 = _materialised(model.params, 6), _materialised(params0, 6)
    for layer, m, m0 in zip(layer_norms(model.params, params0, variant="naive"), mats, mats0):
        np.testing.assert_allclose(
            [layer.spectral, layer.frobenius, layer.distance_2_1, layer.distance_frobenius],
            [spectral_norm(m), frobenius_norm(m), norm_2_1((m - m0).T), frobenius_norm(m - m0)], rtol=1e-9,
            err_msg=layer.name)
    shared = layer_norms(model.params, params0, variant="shared")
    a, a0 = (np.asarray(q["input_conv"], np.float64) for q in (model.params, params0))
    assert shared[0].frobenius == pytest.approx(math.sqrt(frobenius_norm(a) ** 2 + 1))
    assert shared[0].distance_2_1 == pytest.approx(norm_2_1(a - a0))
    assert (shared[0].n_params, shared[-1].n_params) == (5 * 3, 5 * 5)


def test_input_norms_by_hand(small_truth):
    from convae_jax.data import Interactions
    # user 0: counts 2 and 1 (‖x̃‖² = 4 + 1 + 1 = 6), 3 draws; user 1: count 1 (‖x̃‖² = 2), 1 draw
    draws = Interactions.build([0, 0, 1], [0, 1, 0], [0, 0, 0], [2, 1, 1], n_users=3, n_items=2,
                               channel_values=(1.0,))
    norms = input_norms(draws)
    assert norms.n_draws == 4
    assert norms.data_frobenius == pytest.approx(math.sqrt(3 * 6 + 1 * 2))
    assert norms.max_input == pytest.approx(math.sqrt(6))


def test_bound_formulas_on_a_hand_network():
    layers = [LayerNorms("a", 2.0, 3.0, 1.0, 0.5, 10, 4), LayerNorms("b", 1.0, 2.0, 2.0, 1.0, 20, 8)]
    inputs = InputNorms(n_draws=100, data_frobenius=30.0, max_input=5.0)
    out = bound_values(layers, inputs, n_outputs=8)
    b = math.log(8) + 2 * 2.0 * 5.0
    assert out["loss_range"] == pytest.approx(b)
    r_a = 2.0 * ((1.0 / 2.0) ** (2 / 3) + 2.0 ** (2 / 3)) ** 1.5
    kappa = math.sqrt(2) * 30.0 * math.sqrt(math.log(2 * 64)) * r_a
    assert out["spectral"]["complexity"] == pytest.approx(2 * (4 * b / 1000 + 18 * kappa * math.log(100) / 100))
    grs = math.sqrt(2) * math.sqrt(8) * (math.sqrt(4 * math.log(2)) + 1) * 6.0 * 30.0 / 100
    assert out["frobenius"]["complexity"] == pytest.approx(2 * grs)
    concentration = 3 * b * math.sqrt(math.log(40) / 200)
    for form in FORMS:
        assert out[form]["bound"] == pytest.approx(out[form]["complexity"] + concentration)


def test_shared_bounds_are_below_naive_ones_by_a_factor_growing_with_n():
    """Only the two filters move from initialisation, so the naive spectral complexity counts each
    filter's distance n times: its ratio to the shared one is exactly n (the (2/3)-power sum
    scales by n^{2/3}, then by n under the 3/2 power), up to the shared 4b/N^{3/2} term."""
    ratios = {form: [] for form in FORMS}
    for n in (5, 10, 20):
        model, params0, _ = _random_model(n)
        params0 = dict(params0) | {"output_bias": np.zeros_like(params0["output_bias"])}  # b_dec' = b_dec
        moved = params0 | {k: model.params[k] for k in ("input_conv", "output_conv")}
        values = model_bounds(FittedModel(model.config, moved, model.train), params0)
        complexity = {form: values["naive"][form]["complexity"] / values["shared"][form]["complexity"] for form in FORMS}
        assert complexity["spectral"] == pytest.approx(n, rel=1e-3)  # up to the 4b/N^{3/2} term
        for form in FORMS:
            assert values["shared"][form]["bound"] < values["naive"][form]["bound"]
            ratios[form].append(values["naive"][form]["bound"] / values["shared"][form]["bound"])
    for form in FORMS:
        assert ratios[form][0] < ratios[form][1] < ratios[form][2], (form, ratios[form])
