"""Bound quantities: norms on hand matrices, the layer chain against the model, the variants."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convae_jax.data import Interactions
from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel
from theory.bounds import (
    BUDGET_RATIO,
    REPORTED,
    InputNorms,
    LayerNorms,
    LedentLayer,
    bound_values,
    budget_grid,
    frobenius_norm,
    input_norms,
    layer_norms,
    ledent_complexity,
    ledent_layers,
    model_bounds,
    norm_2_1,
    output_bias_into_decoder,
    spectral_norm,
)
from theory.fitting import BOUNDS_OVERRIDES, theory_config
from theory.synthetic import draw_samples, make_truth


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
    _, fit, _ = draw_samples(truth, 400, seed=seed)
    config = theory_config(["model.hidden=(6,)", "model.conv_channels=3", "model.decoder_channels=5", *BOUNDS_OVERRIDES])
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
        model_bounds(ordinal, model.train)


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
    h = np.append(x.ravel() / np.linalg.norm(x), 1.0)  # ℓ2-normalised input
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


def test_input_norms_by_hand():
    """ℓ2-normalised inputs from S_in: ‖x̃_u‖² = 2 with inputs, 1 without; one term per scored draw."""
    inputs = Interactions.build([0, 0], [0, 1], [0, 0], [2, 1], n_users=3, n_items=2, channel_values=(1.0,))
    targets = Interactions.build([0, 1, 2], [1, 0, 0], [0, 0, 0], [3, 1, 2], n_users=3, n_items=2, channel_values=(1.0,))
    norms = input_norms(inputs, targets)
    assert norms.n_draws == 6
    assert norms.data_frobenius == pytest.approx(math.sqrt(3 * 2 + 1 * 1 + 2 * 1))
    assert norms.max_input == pytest.approx(math.sqrt(2))


def test_budget_grid_rounds_up_and_charges_the_prior_weight():
    """Grid 2^(j/4): 1 is j = 0 (cost ln(3·1·2)), 1.1 rounds to 2^(1/4) (j = 1, ln(3·2·3)), 2 is
    j = 4 (ln(3·5·6)), 0.5 is j = −4, and 0 costs ln 2; the prior weights sum to at most 1."""
    rounded, cost = budget_grid([1.0, 1.1, 2.0, 0.5, 0.0])
    np.testing.assert_allclose(rounded, [1.0, 2 ** 0.25, 2.0, 0.5, 0.0], rtol=1e-12)
    assert cost == pytest.approx(math.log(6) + math.log(18) + math.log(90) + math.log(90) + math.log(2))
    j = np.arange(-10**5, 10**5 + 1)
    assert 0.5 + np.sum(1 / (3 * (np.abs(j) + 1) * (np.abs(j) + 2))) == pytest.approx(1.0, abs=1e-4)
    assert BUDGET_RATIO == 2 ** 0.25


def test_bound_formulas_on_a_hand_network():
    """Norms already on the grid (powers of 2^(1/4)), so budgets equal them; K = 8, γ = 0.01."""
    layers = [LayerNorms("a", 2.0, 4.0, 1.0, 0.5, 10, 4), LayerNorms("b", 1.0, 2.0, 2.0, 1.0, 20, 8)]
    inputs = InputNorms(n_draws=100, data_frobenius=30.0, max_input=math.sqrt(2))
    out = bound_values(layers, inputs, n_outputs=8)
    b = math.log(8 / 0.01)
    assert out["loss_range"] == pytest.approx(b)
    log_delta = math.log(2 * len(REPORTED) / 0.05)
    cost = lambda *js: sum(math.log(3 * (abs(j) + 1) * (abs(j) + 2)) for j in js)
    grs = 2 * math.sqrt(8) * (math.sqrt(4 * math.log(2)) + 1) * 8.0 * 30.0 / 100
    assert out["frobenius"]["complexity"] == pytest.approx(2 * grs)
    assert out["frobenius"]["budget_cost"] == pytest.approx(cost(8, 4))  # 4 = 2^(8/4), 2 = 2^(4/4)
    assert out["frobenius"]["bound"] == pytest.approx(2 * grs + 3 * b * math.sqrt((log_delta + cost(8, 4)) / 200))
    r_a = 2.0 * ((1.0 / 2.0) ** (2 / 3) + 2.0 ** (2 / 3)) ** 1.5
    assert out["spectral"]["norm_term"] == pytest.approx(r_a)
    assert out["spectral"]["budget_cost"] == pytest.approx(cost(4, 0, 0, 4))
    kappa = math.sqrt(2) * 30.0 * math.sqrt(math.log(2 * 64)) * r_a
    expected = 4 * b / 100**1.5 + 18 * kappa * math.log(100) / 100
    assert out["spectral"]["complexity"] == pytest.approx(2 * expected, rel=1e-6)  # the integral, by trapezoids


def test_ledent_complexity_by_hand():
    """Two layers, margin γ = 2, N = 100: r_1 = b_0 · d_2 ρ_2/γ · a_1 (d_2 the second layer's input
    side), r_2 = b_1 a_2/γ."""
    layers = [LedentLayer("conv", distance=1.0, lipschitz=3.0, input_patch_norm=0.5, input_side=2.0, positions=4, channels=2),
              LedentLayer("last", distance=2.0, lipschitz=5.0, input_patch_norm=4.0, input_side=3.0, positions=1, channels=3)]
    out = ledent_complexity(layers, margin=2.0, n=100)
    r = [0.5 * (3.0 * 5.0 / 2.0) * 1.0, 4.0 * 2.0 / 2.0]
    np.testing.assert_allclose(out["r"], r, rtol=1e-12)
    big_r = (r[0] ** (2 / 3) + r[1] ** (2 / 3)) ** 1.5
    gamma_ = max(r[0] * 8, r[1] * 3)
    expected = 4 / 100 + 768 * big_r * math.sqrt(math.log2(32 * gamma_ * 100**2 + 7 * 8 * 100)) * math.log(100) / 10
    assert out["rademacher"] == pytest.approx(expected)


def test_ledent_layers_of_a_tiny_network_by_hand():
    """n = 2 items, C = 2, k = d = 1, k' = 2, initialisation 0, one user with counts 3 at (0, 0)
    and 4 at (1, 1): x/‖x‖ = [[0.6, 0], [0, 0.8]], Z = x A = (0.6, 0), h = ReLU(2·0.6 + 1·0 + 0.5)
    = 1.7, Y = W_dec h = ((1.7, 0), (0, 1.7))."""
    params = {"input_conv": np.array([[1.0], [0.0]]), "encoder_kernel": np.array([[[2.0]], [[1.0]]]),
              "encoder_bias": np.array([0.5]), "decoder_kernel": np.array([[[1.0], [0.0]], [[0.0], [1.0]]]),
              "decoder_bias": np.zeros((2, 2)), "output_conv": np.array([[1.0, 0.0], [0.0, 2.0]]),
              "output_bias": np.zeros((2, 2))}
    params0 = {k: np.zeros_like(v) for k, v in params.items()}
    inputs = Interactions.build([0, 0], [0, 1], [0, 1], [3, 4], n_users=1, n_items=2, channel_values=(1.0, 2.0))
    targets = Interactions.build([0], [1], [0], n_users=1, n_items=2, channel_values=(1.0, 2.0))
    layers = ledent_layers(params, params0, inputs, targets)
    expected = [  # (distance a, Lipschitz ρ, input patch norm b, input side d, positions O, channels m)
        (1.0, 1.0, 0.8, math.sqrt(2), 2, 1),  # A: one filter (1, 0); patches x[i, :]
        (math.sqrt(5.25), math.sqrt(5.25), math.sqrt(1.36), math.sqrt(2), 1, 1),  # W̃_enc = [2, 1, 0.5]; [Z; 1]
        (2.0, math.sqrt(2), math.sqrt(1.7**2 + 1), 1.0, 2, 2),  # W̃_dec rows (1,0),(0,0),(0,0),(1,0); [h; 1]
        (math.sqrt(5), 2.0, 1.7, math.sqrt(2), 1, 4),  # B: ‖B‖_F, largest filter norm; patches Y[i, :]
    ]
    for layer, values in zip(layers, expected):
        np.testing.assert_allclose([layer.distance, layer.lipschitz, layer.input_patch_norm, layer.input_side,
                                    layer.positions, layer.channels], values, rtol=1e-12, err_msg=layer.name)


def test_shared_bounds_are_below_naive_ones():
    """The shared variant counts each filter once, so no bound of it exceeds the naive one."""
    model, params0, _ = _random_model(8)
    values = model_bounds(model, model.train, params0)
    for form, variant in REPORTED:
        if variant == "naive":
            assert values["shared"][form]["bound"] <= values["naive"][form]["bound"] * (1 + 1e-9), form
    assert values["shared"]["ledent"]["bound"] > 0
