"""The compression bound of `convae theory compress`: the arithmetic coder and the model's code word
round-trip exactly and are prefix-free, the Occam bound on a hand case, the subspace and its
quantisation, the decoded model is the certified one, and the command end to end."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convae_jax.cli import main
from convae_jax.model import build_model, init_params
from convae_jax.predict import FittedModel
from theory import arithmetic_coding, compress_run, pacbayes, subspace
from theory.compressed_code import QuantisedModel, code_length, decode_model, encode_model
from theory.fitting import BOUNDS_OVERRIDES, theory_config
from theory.gaussian_posterior import DrawRisk
from theory.synthetic import draw_samples, make_truth


@pytest.mark.parametrize("levels", [16, 32])
def test_coder_round_trips_and_nears_the_ideal_length(levels):
    rng = np.random.default_rng(levels)
    symbols = rng.choice(levels, size=3000, p=rng.dirichlet(np.full(levels, 0.5)))
    counts = np.bincount(symbols, minlength=levels)
    bits = arithmetic_coding.encode(symbols, counts)
    assert arithmetic_coding.decode(bits, counts, symbols.size) == symbols.tolist()
    ideal = arithmetic_coding.ideal_bits(symbols, counts)
    assert ideal <= len(bits) <= ideal + 3  # 2 bits of termination, and a fraction of a bit of rounding


def test_coder_words_are_prefix_free():
    """Every sequence of 4 symbols under counts (2, 1): no word is a prefix of another, and Kraft's sum ≤ 1."""
    words = ["".join(map(str, arithmetic_coding.encode(s, [2, 1]))) for s in itertools.product((0, 1), repeat=4)]
    assert len(set(words)) == 16
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    assert sum(2.0 ** -len(w) for w in words) <= 1.0
    for s, w in zip(itertools.product((0, 1), repeat=4), words):
        assert arithmetic_coding.decode([int(b) for b in w], [2, 1], 4) == list(s)


def test_elias_gamma_lengths():
    assert [arithmetic_coding.elias_gamma_bits(v) for v in (1, 2, 3, 4, 1000, 1024)] == [1, 3, 3, 5, 19, 21]


def test_model_code_word_round_trips_and_its_length_is_the_count():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=16).astype(np.float16)
    assignment = np.minimum(rng.integers(0, 16, 500), rng.integers(0, 16, 500)).astype(np.int32)  # skewed
    model = QuantisedModel(500, 7, codebook, assignment)
    bits = encode_model(model)
    back = decode_model(bits)
    assert (back.dim, back.seed) == (500, 7)
    np.testing.assert_array_equal(back.assignment, assignment)
    np.testing.assert_array_equal(back.codebook.view(np.uint16), codebook.view(np.uint16))
    length = code_length(model)
    # header: gamma(500) 17 + gamma(16) 9 + gamma(8) 7; codebook 16·16; histogram 16 counts of 9 bits
    assert (length["header"], length["codebook"], length["histogram"]) == (33, 256, 144)
    assert length["total"] == len(bits) == sum(length[k] for k in ("header", "codebook", "histogram", "payload"))
    assert length["payload"] <= arithmetic_coding.ideal_bits(assignment, np.bincount(assignment, minlength=16)) + 3


def test_occam_bound_by_hand():
    """n = 100, L = 10 bits, δ = 20·2^10·(3/4)^50: ε = (10 ln 2 + ln(2√n/δ))/n = ½ ln(4/3), and
    with R̂ = 1 on the range [0, 2] the bound is 2·kl⁻¹(½, ½ ln(4/3)) = 2·¾ = 1.5."""
    delta = 20 * 2.0**10 * 0.75**50
    out = pacbayes.occam_bound(empirical_risk=1.0, bits=10, n=100, delta=delta, loss_range=2.0)
    assert out["epsilon"] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert out["bound"] == pytest.approx(1.5, abs=1e-9)


def test_kmeans_finds_separated_levels():
    values = np.concatenate([np.full(30, -2.0), np.full(50, 0.5), np.full(20, 3.0)]) + np.linspace(-0.01, 0.01, 100)
    np.testing.assert_allclose(np.sort(subspace.kmeans_levels(values, 3)), [-2.0, 0.5, 3.0], atol=0.01)


@pytest.fixture(scope="module")
def tiny_setting():
    truth = make_truth(n_users=30, n_items=20, rank=2)
    samples = draw_samples(truth, 600, seed=0)
    config = theory_config(BOUNDS_OVERRIDES + ("model.hidden=(8,)",))
    theta0 = init_params(build_model(config.model, n_cols=20, n_channels=truth.n_channels), jax.random.key(3))
    risk = DrawRisk(FittedModel(config, theta0, samples.inputs), samples.targets, smoothing=0.01)
    return config, theta0, risk


def test_subspace_origin_and_linearity(tiny_setting):
    _, theta0, _ = tiny_setting
    space = subspace.random_subspace(theta0, dim=12, nonzeros=2, seed=3)
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
    np.testing.assert_array_equal(flat(space.params(jnp.zeros(12))), flat(theta0))
    a, b = jnp.arange(12.0) / 12, jnp.ones(12)
    np.testing.assert_allclose(flat(space.params(a + b)) - flat(theta0),
                               flat(space.params(a)) + flat(space.params(b)) - 2 * flat(theta0), atol=1e-5)
    assert space.index.shape == (flat(theta0).size, 2) and int(space.index.max()) < 12
    again = subspace.random_subspace(theta0, dim=12, nonzeros=2, seed=3)  # what the decoder rebuilds
    np.testing.assert_array_equal(again.index, space.index)
    np.testing.assert_array_equal(again.coef, space.coef)


def test_decoded_model_is_the_certified_one(tiny_setting):
    """Train, quantise, encode; a decoder holding only the code word (and the fixed architecture)
    rebuilds θ₀ and P from the seed and gets the same empirical risk, bit for bit."""
    config, _, risk = tiny_setting
    module = build_model(config.model, n_cols=20, n_channels=5)
    theta0 = init_params(module, jax.random.key(3))
    space = subspace.random_subspace(theta0, dim=40, nonzeros=2, seed=3)
    loss = lambda v, args: risk.function(args.params(v), risk.data)
    w, losses = subspace.minimise(loss, jnp.zeros(40), space, steps=60, learning_rate=0.1)
    assert losses[-1] < losses[0] - 0.1  # the subspace trains
    codebook, assignment = subspace.quantise(loss, np.asarray(w), space, levels=16, steps=10, learning_rate=0.01)
    model = QuantisedModel(40, 3, codebook.astype(np.float16), assignment)
    certified = risk(space.params(jnp.asarray(model.weights)))
    decoded = decode_model(encode_model(model))
    rebuilt = subspace.random_subspace(init_params(module, jax.random.key(decoded.seed)), dim=decoded.dim, nonzeros=2,
                                       seed=decoded.seed)
    assert risk(rebuilt.params(jnp.asarray(decoded.weights))) == certified


def test_compress_command_end_to_end(tmp_path, monkeypatch, capsys):
    grid = compress_run.Grid(dims=(10, 20), levels=(16,), steps=20, level_steps=3)
    monkeypatch.setitem(compress_run.GRIDS, "quick", grid)
    assert main(["theory", "compress", "--quick", "--sizes", "800", "--seeds", "0", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "compress.json").read_text())
    assert (tmp_path / "compress.md").exists() and (tmp_path / "compress.png").stat().st_size > 0
    (run,) = result["runs"]
    assert run["level"] == pytest.approx(0.05 / 2)
    configurations = run["configurations"]
    assert [(c["dim"], c["levels"]) for c in configurations] == [(10, 16), (20, 16)]
    assert run["bound"] == min(c["bound"] for c in configurations)
    for c in configurations:
        assert c["empirical_risk"] < c["bound"] < run["loss_range"]
        assert c["true_risk"] < c["bound"]
        assert c["bits"]["total"] == sum(c["bits"][k] for k in ("header", "codebook", "histogram", "payload"))
        assert c["bits"]["codebook"] == 16 * 16 and c["bits"]["payload"] > 0
    assert main(["theory", "compress", "--report-only", "--out", str(tmp_path)]) == 0


def test_grid_size_counts_every_configuration():
    assert compress_run.GRIDS["full"].size == 8
    assert dataclasses.replace(compress_run.GRIDS["full"], levels=(16,)).size == 4
