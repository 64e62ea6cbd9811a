"""Training: state, the jitted step factory, and the loop with early stopping."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from convae_jax import losses
from convae_jax.config import Config
from convae_jax.data.batches import RowBatch, RowMatrix, entry_budget, iterate_batches
from convae_jax.data.interactions import Interactions
from convae_jax.data.splits import holdout_interactions
from convae_jax.errors import ConvaeError
from convae_jax.metrics import rating_metrics
from convae_jax.model import Conv4Rec, build_model, init_params, weight_names
from convae_jax.predict import FittedModel


class TrainState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jnp.ndarray  # int32 scalar: the number of updates applied


@dataclasses.dataclass
class TrainStep:
    """The jitted update `(state, batch) -> (state, loss)`; `traces` counts how often it was traced."""

    fn: Callable
    traces: int = 0

    def __call__(self, state: TrainState, batch: RowBatch):
        return self.fn(state, batch)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam on the loss that already carries the L2 penalty (SPEC §3 prototype: L2 0.1, Adam 1e-3)."""
    return optax.adam(config.train.learning_rate)


def make_loss_fn(*, model: Conv4Rec, config: Config, batch_rows: int):
    """`loss(params, batch, key) -> scalar`: batch-mean joint loss with input dropout, plus L2."""
    mc = config.model
    keep_prob = 1.0 - mc.input_dropout
    penalised = set(weight_names(init_params(model, jax.random.key(0))))

    def loss_fn(params, batch: RowBatch, key):
        keep = jax.random.bernoulli(key, keep_prob, batch.count.shape).astype(jnp.float32)
        input_count = batch.count * keep / keep_prob
        h = model.apply({"params": params}, batch.segment, batch.col, batch.channel, input_count, batch_rows,
                        method=Conv4Rec.encode)
        h_padded = jnp.concatenate([h, jnp.zeros((1, h.shape[1]), h.dtype)])
        entry_logits = model.apply({"params": params}, h_padded[batch.segment], batch.col, method=Conv4Rec.entry_logits)
        log_z = losses.chunked_logsumexp(
            lambda cols: model.apply({"params": params}, h, cols, method=Conv4Rec.column_logits),
            n_cols=model.n_cols, chunk=mc.logit_chunk)
        explicit_weight = jnp.ones_like(keep) if mc.explicit_on == "all" else 1.0 - keep
        per_row = losses.row_losses(entry_logits, log_z, batch.segment, batch.channel, batch.count, explicit_weight,
                                    rating_weight=mc.rating_weight, n_rows=batch_rows,
                                    implicit_weight=mc.implicit_weight)
        data_loss = jnp.sum(per_row * batch.row_mask) / jnp.maximum(jnp.sum(batch.row_mask), 1.0)
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        penalty = sum(jnp.sum(w**2) for path, w in flat if "/".join(str(getattr(p, "key", p)) for p in path) in penalised)
        return data_loss + config.train.l2 * penalty

    return loss_fn


def make_train_step(*, model: Conv4Rec, tx: optax.GradientTransformation, config: Config, dropout_key) -> TrainStep:
    """Builds the jitted step once. The state is donated; the dropout key of step t is
    fold_in(dropout_key, t), so no key crosses from the host."""
    loss_fn = make_loss_fn(model=model, config=config, batch_rows=config.train.batch_rows)
    holder = TrainStep(fn=None)

    def step(state: TrainState, batch: RowBatch):
        holder.traces += 1
        key = jax.random.fold_in(dropout_key, state.step)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), loss

    holder.fn = jax.jit(step, donate_argnums=0)
    return holder


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float  # mean batch loss of the epoch, L2 included
    seconds: float
    rows_per_second: float
    validation: dict  # rating metrics on the validation pairs ({} when there are none)


def fit(train: Interactions, config: Config, *, validation: Interactions | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        validation_metrics: Callable[[FittedModel, Interactions], dict] | None = None) -> FittedModel:
    """Trains Conv4Rec on `train` and returns the model at the validation-selected epoch.

    Without an explicit `validation` set, `train.validation_fraction` of `train` is held out
    (seeded) for early stopping on `train.select_metric`; the returned model still reads only the
    remaining interactions, so its encoder never sees the validation pairs. The returned model
    reads all of `train` (validation pairs included): at prediction time a user's whole known
    history is the input. `validation_metrics(snapshot, validation) -> dict` replaces the rating
    metrics of the validation pairs (e.g. a held-out joint NLL); it must return `select_metric`.
    """
    config = config.validate()
    tc = config.train
    if train.nnz == 0:
        raise ConvaeError("cannot train on an empty set of interactions")
    full_train = train
    if validation is None and tc.validation_fraction > 0:
        train, validation = holdout_interactions(train, fraction=tc.validation_fraction, seed=tc.seed + 7919)
    matrix = RowMatrix.from_interactions(train, orientation=config.model.orientation)
    model = build_model(config.model, n_cols=matrix.n_cols, n_channels=train.n_channels)
    root = jax.random.key(tc.seed)
    params = init_params(model, jax.random.fold_in(root, 0))
    tx = make_optimizer(config)
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    step = make_train_step(model=model, tx=tx, config=config, dropout_key=jax.random.fold_in(root, 1))
    shuffle_rng = np.random.default_rng(np.asarray(jax.random.key_data(jax.random.fold_in(root, 2))))
    active_rows = np.flatnonzero(matrix.lengths > 0)
    budget = entry_budget(matrix.lengths, tc.batch_rows)

    history, best, best_score, since_best = [], None, np.inf, 0
    bar = tqdm(total=tc.max_epochs, disable=not tc.progress, unit="epoch", dynamic_ncols=True)
    for epoch in range(1, tc.max_epochs + 1):
        start, batch_losses = time.perf_counter(), []
        for batch in iterate_batches(matrix, shuffle_rng.permutation(active_rows), batch_rows=tc.batch_rows, budget=budget):
            state, loss = step(state, batch)
            batch_losses.append(loss)
        train_loss = float(np.mean(jax.device_get(batch_losses)))
        seconds = time.perf_counter() - start
        if not np.isfinite(train_loss):
            raise ConvaeError(f"training diverged at epoch {epoch} (step {int(state.step)}): loss is {train_loss}")
        snapshot = FittedModel(config, jax.device_get(state.params), train)
        scorer = validation_metrics or _validation_metrics
        metrics = scorer(snapshot, validation) if validation is not None and validation.nnz else {}
        record = EpochRecord(epoch, train_loss, seconds, active_rows.size / seconds, metrics)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss:.4g}", rows_per_s=f"{record.rows_per_second:.0f}",
                        **{f"val_{k}": f"{v:.4f}" for k, v in metrics.items() if k in ("rmse", "nll")})
        score = metrics.get(tc.select_metric, -epoch)  # no validation: keep the last epoch
        if score < best_score:
            best, best_score, since_best = snapshot, score, 0
        else:
            since_best += 1
            if since_best >= tc.patience:
                break
    bar.close()
    return FittedModel(config, best.params, full_train, tuple(history))


def _validation_metrics(model: FittedModel, validation: Interactions) -> dict:
    log_probs = model.rating_log_probs(validation.user, validation.item)
    return rating_metrics(log_probs, validation.channel, model.train.channel_values)
