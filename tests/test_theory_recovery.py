"""TV / KL to a known truth: hand cases, identities, Pinsker, and a hand-built exact model."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from convae_jax.data import Interactions
from convae_jax.predict import FittedModel
from theory.estimators import (
    GlobalPopularity,
    ModelEstimator,
    PerUserEmpirical,
    mean_log_loss,
    smoothed,
)
from theory.fitting import theory_config
from theory.recovery import (
    kl_divergence,
    population_log_loss,
    recovery_distances,
    total_variation,
    user_distances,
)
from theory.synthetic import conditional_entropy, draw_samples


def test_distance_of_a_distribution_to_itself_is_zero(small_truth):
    log_p = small_truth.log_p_joint(np.arange(small_truth.n_users))
    for name, values in user_distances(log_p, log_p).items():
        np.testing.assert_allclose(values, 0.0, atol=1e-12, err_msg=name)


def test_hand_computed_two_point_case():
    log_p, log_q = np.log([0.5, 0.5]), np.log([0.9, 0.1])
    np.testing.assert_allclose(total_variation(log_p, log_q), 0.4, rtol=1e-12)
    # 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5 ln(25/9)
    np.testing.assert_allclose(kl_divergence(log_p, log_q), 0.5 * np.log(25 / 9), rtol=1e-12)
    # a cell with p = 0 contributes nothing, even where q = 0 too
    with np.errstate(divide="ignore"):
        log_point_mass = np.log([1.0, 0.0])
    np.testing.assert_allclose(kl_divergence(log_point_mass, np.log([0.5, 0.5])), np.log(2), rtol=1e-12)


def test_hand_computed_parts_of_one_user():
    p = np.array([[[0.3, 0.1], [0.2, 0.4]]])  # one user, 2 items x 2 levels
    q = np.full((1, 2, 2), 0.25)
    d = user_distances(np.log(p), np.log(q))
    np.testing.assert_allclose(d["tv_joint"], [0.2], rtol=1e-12)  # ½(.05 + .15 + .05 + .15)
    np.testing.assert_allclose(d["tv_implicit"], [0.1], rtol=1e-12)  # p(i) = (.4, .6) against (.5, .5)
    # p(c|i) = (.75, .25) and (1/3, 2/3) against (.5, .5): 0.4 · 0.25 + 0.6 · 1/6
    np.testing.assert_allclose(d["tv_explicit"], [0.2], rtol=1e-12)
    kl = 0.3 * np.log(1.2) + 0.1 * np.log(0.4) + 0.2 * np.log(0.8) + 0.4 * np.log(1.6)
    np.testing.assert_allclose(d["kl_joint"], [kl], rtol=1e-12)
    np.testing.assert_allclose(d["kl_implicit"] + d["kl_explicit"], d["kl_joint"], rtol=1e-12)  # chain rule


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), concentration=st.floats(0.01, 10.0), size=st.integers(2, 50))
def test_pinsker_inequality_on_random_pairs(seed, concentration, size):
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.full(size, concentration), 2).clip(1e-300)
    log_p, log_q = np.log(p / p.sum()), np.log(q / q.sum())
    assert total_variation(log_p, log_q) <= np.sqrt(kl_divergence(log_p, log_q) / 2) + 1e-12


def test_recovery_averages_under_the_user_marginal_and_reports_pinsker(small_truth):
    fit, _, held = draw_samples(small_truth, 3000, seed=0)
    result = recovery_distances(small_truth, GlobalPopularity(fit).select(held))
    assert result["pinsker_holds_share"] == 1.0
    assert 0 < result["tv_joint"] < 1 and result["tv_implicit"] <= result["tv_joint"] + 1e-12
    np.testing.assert_allclose(result["kl_implicit"] + result["kl_explicit"], result["kl_joint"], rtol=1e-9)


def test_per_user_empirical_is_the_smoothed_frequency_and_alpha_is_selected(small_truth):
    fit, _, held = draw_samples(small_truth, 2000, seed=1)
    est = PerUserEmpirical(fit, alpha=0.5)
    user = int(fit.user[0])
    counts = np.zeros((small_truth.n_items, small_truth.n_channels))
    mine = fit.user == user
    np.add.at(counts, (fit.item[mine], fit.channel[mine]), fit.count[mine])
    expected = (counts + 0.5) / (counts.sum() + 0.5 * counts.size)
    np.testing.assert_allclose(np.exp(est.log_joint(np.array([user])))[0], expected, rtol=1e-12)
    chosen = est.select(held)
    assert mean_log_loss(chosen, held) <= min(mean_log_loss(PerUserEmpirical(fit, alpha=a), held) for a in (1e-3, 10.0))


def hand_built_exact_model(truth):
    """User rows whose network reproduces truth.log_p_joint exactly: user u's history is one
    draw at a cell (i_u, c_u) of its own; the encoder (identity φ, A = I) maps that cell to the
    one-hot code e_u, the decoder's weights for item i, level c are the truth's log p_u(i, c) over
    users (B = I), so the logits of user u are log p_u(i, c) and their softmax is p_u."""
    users, n, c = truth.n_users, truth.n_items, truth.n_channels
    assert n * c >= users
    cell_item, cell_channel = np.divmod(np.arange(users), c)
    train = Interactions.build(np.arange(users), cell_item, cell_channel, n_users=users, n_items=n,
                               channel_values=truth.channel_values)
    config = theory_config(["model.encoder_activation=identity", f"model.hidden=({users},)",
                            f"model.conv_channels={c}", f"model.decoder_channels={c}"])
    encoder = np.zeros((n, c, users), np.float32)
    encoder[cell_item, cell_channel, np.arange(users)] = 1.0
    log_p = truth.log_p_joint(np.arange(users))  # (U, n, C)
    params = {"input_conv": np.eye(c, dtype=np.float32), "encoder_kernel": encoder,
              "encoder_bias": np.zeros(users, np.float32),
              "decoder_kernel": np.transpose(log_p, (1, 2, 0)).astype(np.float32),  # (n, k' = C, d = U)
              "decoder_bias": np.zeros((n, c), np.float32), "output_conv": np.eye(c, dtype=np.float32),
              "output_bias": np.zeros((n, c), np.float32)}
    return config, params, train


def test_hand_built_parameters_reproduce_the_truth_exactly(small_truth):
    config, params, train = hand_built_exact_model(small_truth)
    exact = recovery_distances(small_truth, ModelEstimator(FittedModel(config, params, train)))
    for name in ("tv_joint", "tv_implicit", "tv_explicit"):
        assert exact[name] < 1e-5, (name, exact[name])
    params["decoder_kernel"] = params["decoder_kernel"] * 0.5  # a wrong model is measured as wrong
    wrong = recovery_distances(small_truth, ModelEstimator(FittedModel(config, params, train)))
    assert wrong["tv_joint"] > 0.05


def test_population_log_loss_is_entropy_plus_kl_and_smoothing_mixes_in_the_uniform(small_truth):
    """R(q) = H + E_u KL(p_u ‖ q_u) exactly (γ = 0); the γ-smoothed loss is the log-loss of
    (1 − γ) q + γ/K, checked on a hand pair of cells."""
    fit, _, held = draw_samples(small_truth, 3000, seed=2)
    estimator = GlobalPopularity(fit).select(held)
    kl = recovery_distances(small_truth, estimator)["kl_joint"]
    np.testing.assert_allclose(population_log_loss(small_truth, estimator), conditional_entropy(small_truth) + kl,
                               rtol=1e-10)
    smoothed_risk = population_log_loss(small_truth, estimator, smoothing=0.1)
    assert abs(smoothed_risk - population_log_loss(small_truth, estimator)) < 0.2  # a 10% mix moves it a little
    log_q = np.log(np.array([[[0.9, 0.1]]]))  # one user, K = 2 cells
    np.testing.assert_allclose(np.exp(smoothed(log_q, 0.5)), [[[0.5 * 0.9 + 0.25, 0.5 * 0.1 + 0.25]]], rtol=1e-12)
