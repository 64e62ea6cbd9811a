"""Parity of the PyTorch baseline (benchmarks/speed/torch_baseline.py) with convae_jax, in float32:
the same weights give the same logits, loss and gradients, and 20 Adam steps on the same batches
(dropout off) give the same parameters. The reference is convae_jax itself."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch extra is not installed (pip install -e '.[torch]')")

from benchmarks.speed import torch_baseline as tb  # noqa: E402
from convae_jax import config as config_lib  # noqa: E402
from convae_jax.data.batches import RowMatrix, entry_budget, iterate_batches  # noqa: E402
from convae_jax.model import build_model, init_params  # noqa: E402
from convae_jax.train import TrainState, make_loss_fn, make_optimizer, make_train_step  # noqa: E402

# Gradients and logits are sums of a few hundred float32 products accumulated in different orders,
# so each element agrees to rtol 1e-5 up to an absolute floor of 1e-6 of the array's largest entry.
RTOL, ATOL_SCALE = 1e-5, 1e-6


def assert_close(got, want, *, rtol, name=""):
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=ATOL_SCALE * float(np.abs(want).max()), err_msg=name)


# ψ = relu with k' < C applies B to activations; ψ = identity with k' >= C folds B into W_dec.
ARCHITECTURES = {"relu-k4": ["model.decoder_activation=relu"],
                 "identity-k8": ["model.decoder_activation=identity", "model.decoder_channels=8"]}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def setup(small_data, request):
    return _setup(small_data, request.param)


@pytest.fixture(scope="module")
def relu_setup(small_data):
    """The 20-step comparison runs on relu-k4 only. With ψ = identity and k' > C, W_dec has
    directions that only the L2 term moves; Adam's per-element normalisation turns their rounding
    into visible steps, so no two float32 trajectories stay within the tolerance: measured against
    the same 20 steps in float64, convae_jax drifts 3.5e-5 and torch `fast` 2.4e-4 (tolerance 2e-5),
    while on relu-k4 both stay within 3.4e-6."""
    return _setup(small_data, "relu-k4")


def _setup(small_data, architecture):
    config = config_lib.testing().override(["model.orientation=user", "model.input_dropout=0.0"]
                                           + ARCHITECTURES[architecture])
    matrix = RowMatrix.from_interactions(small_data, orientation="user")
    rows = config.train.batch_rows
    budget = entry_budget(matrix.lengths, rows)
    order = np.random.default_rng(0).permutation(matrix.n_rows)
    batches = list(iterate_batches(matrix, order, batch_rows=rows, budget=budget))
    model = build_model(config.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    params = init_params(model, jax.random.key(0))
    arch = tb.Architecture.of(config.model, n_cols=matrix.n_cols, n_channels=small_data.n_channels)
    return config, model, params, arch, batches


@pytest.mark.parametrize("flavour", tb.FLAVOURS)
def test_layout_round_trip(setup, flavour):
    _, _, params, arch, _ = setup
    back = tb.jax_layout(tb.build(flavour, arch, params=params))
    for name, value in params.items():
        np.testing.assert_array_equal(back[name], np.asarray(value), err_msg=name)


@pytest.mark.parametrize("flavour", tb.FLAVOURS)
def test_same_logits(setup, flavour):
    _, model, params, arch, batches = setup
    batch = batches[0]
    rows = batch.row_mask.shape[0]
    want = model.apply({"params": params}, batch.segment, batch.col, batch.channel, batch.count, rows)  # (B, n, C)
    torch_model, tbatch = tb.build(flavour, arch, params=params), tb.TorchBatch.of(batch)
    with torch.no_grad():
        if flavour == "dense":
            got = torch_model(tb.dense_counts(tbatch, arch.n_channels, arch.n_cols)).permute(0, 2, 1)
        else:
            got = torch_model.logits(torch_model.encode(tbatch.channel * arch.n_cols + tbatch.col, tbatch.count,
                                                        tbatch.offsets))
    assert_close(got.numpy(), want, rtol=RTOL)


@pytest.mark.parametrize("flavour", tb.FLAVOURS)
def test_same_loss_and_gradients(setup, flavour):
    config, model, params, arch, batches = setup
    loss_fn = make_loss_fn(model=model, config=config, batch_rows=config.train.batch_rows)
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    for batch in batches:
        want_loss, want_grads = value_and_grad(params, batch, jax.random.key(0))
        got_loss, got_grads = tb.loss_and_grads(tb.build(flavour, arch, params=params), tb.TorchBatch.of(batch),
                                                config=config)
        np.testing.assert_allclose(got_loss, float(want_loss), rtol=RTOL)
        for name, grad in want_grads.items():
            assert np.abs(np.asarray(grad)).max() > 0, name  # every array takes part in the loss
            assert_close(got_grads[name], grad, rtol=RTOL, name=name)


@pytest.mark.parametrize("flavour", tb.FLAVOURS)
def test_same_parameters_after_20_adam_steps(relu_setup, flavour):
    config, model, params, arch, batches = relu_setup
    tx = make_optimizer(config)
    step = make_train_step(model=model, tx=tx, config=config, dropout_key=jax.random.key(1))
    state = TrainState(jax.tree_util.tree_map(jnp.array, params), tx.init(params), jnp.zeros((), jnp.int32))
    torch_model = tb.build(flavour, arch, params=params)
    torch_step = tb.make_train_step(torch_model, config=config)
    tbatches = [tb.TorchBatch.of(b) for b in batches]
    for t in range(20):
        state, loss = step(state, batches[t % len(batches)])
        torch_loss = torch_step(tbatches[t % len(batches)])
        np.testing.assert_allclose(float(torch_loss), float(loss), rtol=1e-4, err_msg=f"loss at step {t}")
    got = tb.jax_layout(torch_model)
    # Adam divides by sqrt(v), which amplifies rounding where a gradient is near zero; an Adam step
    # moves a weight by at most about lr, so the absolute floor is 1e-4 of the 20 steps' reach.
    atol = 1e-4 * 20 * config.train.learning_rate
    chex.assert_trees_all_close({name: got[name] for name in state.params}, jax.device_get(state.params),
                                rtol=1e-4, atol=atol)
    moved = max(float(np.abs(np.asarray(value) - np.asarray(params[name])).max()) for name, value in state.params.items())
    assert moved > 10 * config.train.learning_rate  # the 20 steps really moved the weights


def test_fast_bf16_autocast_tracks_fp32(setup):
    """The bf16 path (GPU's fast variant) runs on CPU and stays within bf16's ~3 significant digits."""
    config, _, params, arch, batches = setup
    batch = tb.TorchBatch.of(batches[0])
    model = tb.build("fast", arch, params=params)
    options = {"rating_weight": config.model.rating_weight, "l2": config.train.l2}
    fp32 = float(tb.fast_loss(model, batch, **options).detach())
    bf16 = float(tb.fast_loss(model, batch, autocast_dtype=torch.bfloat16, **options).detach())
    assert bf16 != fp32
    np.testing.assert_allclose(bf16, fp32, rtol=1e-2)


def test_native_init_matches_flax_scale(setup):
    """Without JAX weights, the torch init draws from the same LeCun truncated normal as Flax."""
    _, _, params, arch, _ = setup
    torch.manual_seed(0)
    native = tb.jax_layout(tb.build("fast", arch))
    for name in ("encoder_kernel", "decoder_kernel"):
        np.testing.assert_allclose(native[name].std(), np.asarray(params[name]).std(), rtol=0.05, err_msg=name)
        assert np.abs(native[name]).max() <= np.abs(np.asarray(params[name])).max() * 1.05


@pytest.mark.parametrize("override, field", [("model.explicit_on=dropped", "explicit_on"),
                                             ("model.row_offsets=True", "row_offsets"),
                                             ("model.rating_head=ordinal", "rating_head")])
def test_reference_options_only(setup, override, field):
    config = setup[0].override([override])
    with pytest.raises(ValueError, match=field):
        tb.Architecture.of(config.model, n_cols=4, n_channels=5)
