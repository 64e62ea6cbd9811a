"""Training: state, the jitted step factory, and the loop with early stopping, per-epoch
checkpoints, resume and the divergence guard."""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental.multihost_utils import process_allgather
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from convae_jax import losses
from convae_jax.checkpoint import CheckpointDir, data_fingerprint, root_key_data
from convae_jax.config import Config
from convae_jax.data.batches import RowBatch, RowMatrix, entry_budget, iterate_sharded_batches
from convae_jax.data.interactions import Interactions
from convae_jax.data.per_process import ProcessInput, global_batch
from convae_jax.data.splits import holdout_interactions
from convae_jax.distributed import agreed, is_writer
from convae_jax.errors import CheckpointError, ConvaeError, TrainingDiverged
from convae_jax.machine import reuse_freed_memory
from convae_jax.mesh_scoring import MeshScorer
from convae_jax.metrics import rating_metrics
from convae_jax.model import Conv4Rec, build_model, init_params, weight_names
from convae_jax.predict import FittedModel
from convae_jax.pytrees import named_leaves
from convae_jax.sharding import DATA, MODEL, Layout, make_layout, vary_over_mesh


class TrainState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jnp.ndarray  # int32 scalar: the number of updates applied


@dataclasses.dataclass
class TrainStep:
    """The jitted update `(state, batch) -> (state, loss)`; `traces` counts how often it was traced.
    `compiled_text(state, batch)` is the optimised HLO of the step, for profiling and tests (it
    traces the step once more, which `traces` counts)."""

    fn: Callable
    traces: int = 0
    compiled_text: Callable | None = None

    def __call__(self, state: TrainState, batch: RowBatch):
        return self.fn(state, batch)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam on the loss that already carries the L2 penalty (the paper's prototype: L2 0.1, Adam 1e-3),
    followed, with `train.weight_average`, by the moving average of the weights it produces."""
    adam = optax.adam(config.train.learning_rate)
    decay = config.train.weight_average
    return optax.chain(adam, weight_average(decay)) if decay else adam


class WeightAverage(NamedTuple):
    average: dict


def weight_average(decay: float) -> optax.GradientTransformation:
    """Leaves the updates alone and keeps average ← decay·average + (1 − decay)·weights after
    each update (Polyak–Ruppert averaging, started from the initial weights). Kept in the optimiser
    state, so checkpoints and resumption carry it like Adam's moments."""
    def init(params):
        return WeightAverage(jax.tree_util.tree_map(jnp.array, params))

    def update(updates, state, params):
        weights = optax.apply_updates(params, updates)
        average = jax.tree_util.tree_map(lambda a, w: decay * a + (1.0 - decay) * w, state.average, weights)
        return updates, WeightAverage(average)

    return optax.GradientTransformation(init, update)


def evaluated_weights(state: TrainState, config: Config) -> dict:
    """The weights that validation scores and `fit` returns: the moving average with
    `train.weight_average`, else the trained weights themselves."""
    return state.opt_state[1].average if config.train.weight_average else state.params


def make_loss_fn(*, model: Conv4Rec, config: Config, batch_rows: int, layout: Layout | None = None):
    """`loss(params, batch, key) -> scalar`: batch-mean joint loss with input dropout, plus L2.

    On a mesh (`layout`: params padded and sharded as it says, batches from
    `iterate_sharded_batches`), the data term runs under `jax.shard_map`: each device takes its
    data shard's rows and, of their entries, those whose column its model shard owns. The encoder's
    sum is added up over `model`; each model shard takes the log-sum-exp over its own columns,
    combined across `model` (`losses.combine_logsumexp`); an observed entry's logits come from the
    shard that owns its column. Only per-row vectors and (entries, C) logits cross devices. The
    dropout mask is drawn on the whole batch, so it does not depend on the mesh; the gradient is
    taken outside the shard_map, which gives replicated parameters their summed gradient. The encoder
    reads `batch.count` (dropped out); the loss scores `batch.target` when the batch has one
    (separate inputs, see `fit`), else the same `batch.count` before dropout."""
    keep_prob = 1.0 - config.model.input_dropout
    penalised = set(weight_names(jax.eval_shape(lambda key: init_params(model, key), jax.random.key(0))))
    data_loss = _data_loss_fn(model=model, config=config, batch_rows=batch_rows, layout=layout)

    def loss_fn(params, batch: RowBatch, key):
        keep = jax.random.bernoulli(key, keep_prob, batch.count.shape).astype(jnp.float32)
        loss = data_loss(params, batch, keep)
        penalty = sum(jnp.sum(w**2) for name, w in named_leaves(params).items() if name in penalised)
        return loss + config.train.l2 * penalty

    return loss_fn


def _data_loss_fn(*, model: Conv4Rec, config: Config, batch_rows: int, layout: Layout | None):
    """`data_loss(params, batch, keep) -> scalar`, the batch mean of `losses.row_losses` with
    input mask `keep` (see `make_loss_fn`): one device's part of it, under `jax.shard_map` on a mesh."""
    mc = config.model
    keep_prob = 1.0 - mc.input_dropout
    layout = layout if layout is not None and layout.spans_devices else None
    data, columns = (layout.data, layout.model) if layout is not None else (1, 1)
    rows = batch_rows // data
    padded = layout is not None and layout.n_padded > layout.n_cols
    shard_model = model if layout is None else build_model(mc, n_cols=layout.cols_per_shard, n_channels=model.n_channels)

    def data_loss(params, batch: RowBatch, keep):
        if layout is not None:
            params = vary_over_mesh(params, layout)
        apply = lambda method, *args: shard_model.apply({"params": params}, *args, method=method)
        segment, col, input_count = batch.segment, batch.col, batch.count * keep / keep_prob
        if data > 1:  # positions in the whole batch -> in this shard's rows (padding: `rows`)
            segment = jnp.where(segment == batch_rows, rows, segment - jax.lax.axis_index(DATA) * rows)
        if columns > 1:  # the shard's own columns, numbered from 0; other entries weigh 0 here
            col, owned = layout.own_columns(col)
            input_count = jnp.where(owned, input_count, 0.0)
        pre = apply(Conv4Rec.encoder_sum, segment, col, batch.channel, input_count, rows)
        if columns > 1:
            pre = jax.lax.psum(pre, MODEL)
        h = apply(Conv4Rec.code, pre, segment, batch.count, rows)
        h_padded = jnp.concatenate([h, jnp.zeros((1, h.shape[1]), h.dtype)])
        entry_logits, log_z = losses.entry_logits_and_log_z(
            lambda cols: apply(Conv4Rec.column_logits, h, cols),
            lambda: apply(Conv4Rec.entry_logits, h_padded[segment], col),
            segment, col, n_cols=shard_model.n_cols, chunk=mc.logit_chunk,
            valid=layout.column_valid(jax.lax.axis_index(MODEL)) if padded else None)
        if columns > 1:
            entry_logits = jax.lax.psum(jnp.where(owned[:, None], entry_logits, 0.0), MODEL)
            log_z = losses.combine_logsumexp(log_z, MODEL)
        explicit_weight = jnp.ones_like(keep) if mc.explicit_on == "all" else 1.0 - keep
        scored = batch.count if batch.target is None else batch.target
        if mc.rating_propensity == "inverse":
            explicit_weight = explicit_weight * losses.propensity_weights(
                entry_logits, log_z, segment, scored, floor=mc.propensity_floor, n_rows=rows)
        per_row = losses.row_losses(entry_logits, log_z, segment, batch.channel, scored, explicit_weight,
                                    rating_weight=mc.rating_weight, n_rows=rows, implicit_weight=mc.implicit_weight)
        total, n_rows = jnp.sum(per_row * batch.row_mask), jnp.sum(batch.row_mask)
        if data > 1:
            total, n_rows = jax.lax.psum((total, n_rows), DATA)
        return total / jnp.maximum(n_rows, 1.0)

    if layout is None:
        return data_loss
    params = layout.padded_shapes(lambda key: init_params(model, key))
    return jax.shard_map(data_loss, mesh=layout.mesh, out_specs=P(),
                         in_specs=(layout.specs(params), layout.batch_spec, layout.batch_spec))


def init_train_state(*, model: Conv4Rec, tx: optax.GradientTransformation, key, layout: Layout,
                     params=None) -> TrainState:
    """Parameters from `key` (or the given host `params`) and the optimiser's fresh state, each
    created where `layout` keeps it (Adam's moments sharded like the parameters they follow)."""
    params = layout.init(lambda k: init_params(model, k), key) if params is None else layout.place(params)
    opt_state = jax.jit(tx.init, out_shardings=layout.shardings(jax.eval_shape(tx.init, params)))(params)
    return TrainState(params, opt_state, jax.device_put(jnp.zeros((), jnp.int32), layout.replicated))


def host_state_shapes(*, model: Conv4Rec, tx: optax.GradientTransformation) -> TrainState:
    """Shapes and dtypes of a train state on the host (today's shapes, whatever the mesh)."""
    def fresh(key):
        params = init_params(model, key)
        return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    return jax.eval_shape(fresh, jax.random.key(0))


def make_train_step(*, model: Conv4Rec, tx: optax.GradientTransformation, config: Config, dropout_key,
                    layout: Layout | None = None) -> TrainStep:
    """Builds the jitted step once. The optimiser state is donated and comes first among inputs and
    outputs, the parameters are not donated: JAX pairs each output with the first unclaimed donated
    input of its shape, and other orders made XLA copy weights or Adam's moments every step
    (docs/performance.md). The dropout key of step t is fold_in(dropout_key, t), so no key crosses
    from the host. The returned loss is NaN when the loss is non-finite or a gradient entry is
    unusable (NaN, inf, or so large that its square overflows Adam's second moment), so the loop's
    divergence guard can name the step; that test reads Adam's new second moments (`_usable`).
    With a `layout` of several devices, the state lives where `init_train_state` put it and batches
    arrive split over the mesh's data axis (`make_loss_fn`)."""
    loss_fn = make_loss_fn(model=model, config=config, batch_rows=config.train.batch_rows, layout=layout)
    holder = TrainStep(fn=None)

    def step(opt_state, params, count, batch: RowBatch):
        holder.traces += 1
        key = jax.random.fold_in(dropout_key, count)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        loss = jnp.where(_usable(optax.tree_utils.tree_get(opt_state, "nu")), loss, jnp.nan)
        return opt_state, optax.apply_updates(params, updates), count + 1, loss

    if layout is None or not layout.spans_devices:
        jitted = jax.jit(step, donate_argnums=(0, 2))
    else:
        params = layout.padded_shapes(lambda key: init_params(model, key))
        param_sh, opt_sh = layout.shardings(params), layout.shardings(jax.eval_shape(tx.init, params))
        jitted = jax.jit(step, donate_argnums=(0, 2), in_shardings=(opt_sh, param_sh, layout.replicated, layout.batch_sharding),
                         out_shardings=(opt_sh, param_sh, layout.replicated, layout.replicated))

    def run(state: TrainState, batch: RowBatch):
        opt_state, params, count, loss = jitted(state.opt_state, state.params, state.step, batch)
        return TrainState(params, opt_state, count), loss

    holder.fn = run
    holder.compiled_text = lambda state, batch: jitted.lower(state.opt_state, state.params, state.step,
                                                             batch).compile().as_text()
    return holder


def _usable(second_moments) -> jax.Array:
    """True iff the step's gradient was usable, read from Adam's new second moments
    ν' = β₂·ν + (1 − β₂)·g² (≥ 0, finite before the step): ν' is NaN or inf exactly where g is NaN,
    ±inf, or too large to square in float32 (|g| > ~1.8e19, which would freeze the weight).
    Reading ν', which the step writes anyway, keeps each weight's gradient inside Adam's fusions
    instead of written out for a check. Off CPU the check reads ν' after it is written (an
    optimisation barrier), or XLA splits Adam's update in two (docs/performance.md)."""
    if jax.default_backend() != "cpu":
        second_moments = jax.lax.optimization_barrier(second_moments)
    return jnp.all(jnp.stack([jnp.isfinite(jnp.max(v)) for v in jax.tree_util.tree_leaves(second_moments)]))



@dataclasses.dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float  # mean batch loss of the epoch, L2 included
    seconds: float
    rows_per_second: float
    validation: dict  # rating metrics on the validation pairs ({} when there are none)


def fit(train: Interactions, config: Config, *, validation: Interactions | None = None,
        inputs: Interactions | None = None, on_epoch: Callable[[EpochRecord], None] | None = None,
        validation_metrics: Callable[[FittedModel, Interactions], dict] | None = None,
        checkpoint_dir=None, resume: bool = False, initial_params=None, prepared=None) -> FittedModel:
    """Trains Conv4Rec on `train` and returns the model at the validation-selected epoch.

    `initial_params` (a parameter tree of the same model) replaces the seeded initialisation, to
    fine-tune from given weights (the PAC-Bayes posterior in `theory/pacbayes_run.py`); Adam's
    state starts fresh. Default: drawn from `train.seed`.

    Without an explicit `validation` set, `train.validation_fraction` of `train` is held out
    (seeded) for early stopping on `train.select_metric`; the returned model still reads only the
    remaining interactions, so its encoder never sees the validation pairs. The returned model
    reads all of `train` (validation pairs included): at prediction time a user's whole known
    history is the input. `validation_metrics(snapshot, validation) -> dict` replaces the rating
    metrics of the validation pairs (e.g. a held-out joint NLL); it must return `select_metric`. On a
    mesh that splits the catalogue (`mesh.model` > 1) the snapshot it scores is a `MeshScorer`.

    `inputs` separates what the encoder reads from what the loss scores: the rows' inputs are
    built from `inputs` alone and the loss scores `train` alone, and the returned model reads
    `inputs`. With `inputs` drawn independently of `train`, each row's input is a fixed function
    of the row given `inputs`, so the scored entries are independent of it (the setting of
    uniform-convergence bounds; `theory/README.md`). Default: `train` is both, as in the paper.

    With `checkpoint_dir`, a checkpoint (`convae_jax.checkpoint`) is written after every
    `train.checkpoint_every`-th epoch (default: every epoch) and after the last one, which is
    marked finished; a directory that already holds checkpoints is refused unless `resume`.
    With `resume`, training continues from the newest readable checkpoint (from scratch if none
    was written yet), restoring parameters, Adam state, step, the shuffling generator, best-so-far
    and patience: on CPU the result is bit-for-bit that of an uninterrupted run.

    Validation (scoring `validation`, keeping the best epoch, early stopping after
    `train.patience` epochs without improvement) runs on the epochs `validated_epochs(config.train)`
    names: every `train.validate_every`-th epoch and the last (default: every epoch). Only those
    epochs are candidates for the returned model, which bounds what a held-out certificate on the
    same validation draws must take a union over (`theory/certificate.py`).

    Divergence guard: if the loss or a gradient becomes NaN or inf, `TrainingDiverged` names the
    first such step; no checkpoint is written for the failed epoch, so the last good one remains.

    `prepared` (`data.per_process.PreparedTraining`: a layout whose "train" part, filtered by its
    `keep`, holds `train`'s entries) makes every process read its training batches from its own row
    groups alone, shuffled with the shared seed, instead of from `train` in memory; `validation`
    must then be given (nothing is held out of the layout's rows here).
    """
    config = config.validate()
    tc = config.train
    if jax.default_backend() == "cpu":
        reuse_freed_memory()
    if train.nnz == 0:
        raise ConvaeError("cannot train on an empty set of interactions")
    if inputs is not None and config.model.explicit_on != "all":
        raise ConvaeError("separate inputs need model.explicit_on='all': the scored entries are not input entries, "
                          "so none of them is dropped from the input")
    full_train = train
    if validation is None and tc.validation_fraction > 0:
        train, validation = holdout_interactions(train, fraction=tc.validation_fraction, seed=tc.seed + 7919)
    if inputs is None:
        matrix = RowMatrix.from_interactions(train, orientation=config.model.orientation)
        active_rows = np.flatnonzero(matrix.lengths > 0)
    else:
        matrix = RowMatrix.from_inputs_and_targets(inputs, train, orientation=config.model.orientation)
        scored = np.add.reduceat(np.append(matrix.target, 0.0), matrix.indptr[:-1]) * (matrix.lengths > 0)
        active_rows = np.flatnonzero(scored > 0)
    read = full_train if inputs is None else inputs  # what the returned model's encoder reads
    model = build_model(config.model, n_cols=matrix.n_cols, n_channels=train.n_channels)
    layout = make_layout(config, n_cols=matrix.n_cols)
    root = jax.random.key(tc.seed)
    tx = make_optimizer(config)
    state = init_train_state(model=model, tx=tx, key=jax.random.fold_in(root, 0), layout=layout, params=initial_params)
    step = make_train_step(model=model, tx=tx, config=config, dropout_key=jax.random.fold_in(root, 1), layout=layout)
    shuffle_rng = np.random.default_rng(np.asarray(jax.random.key_data(jax.random.fold_in(root, 2))))
    budget = entry_budget(matrix.lengths, tc.batch_rows // layout.data)
    if prepared is not None:
        if validation is None or inputs is not None:
            raise ConvaeError("training from a prepared layout needs an explicit validation set and no separate inputs")
        prepared.layout.require(orientation=config.model.orientation)
        reader = ProcessInput(prepared.layout, process_index=jax.process_index(), process_count=jax.process_count(),
                              parts=layout.data, seed=tc.seed, batch_rows=tc.batch_rows, budget=budget, keep=prepared.keep)

    checkpoints = None
    progress = _Progress()
    if checkpoint_dir is not None:
        fingerprint = data_fingerprint(train, validation, *(() if inputs is None else (inputs,)))
        checkpoints = CheckpointDir(checkpoint_dir, config=config, fingerprint=fingerprint, columns=matrix.n_cols)
        if not resume and checkpoints.complete():
            raise CheckpointError(f"{checkpoint_dir} already holds checkpoints; resume the run or use a new directory")
        template = host_state_shapes(model=model, tx=tx)
        targets = {"state": layout.abstract(template), "best": layout.abstract(template.params)}
        found = checkpoints.latest(targets) if resume else None
        if found is not None:
            state, progress = _restore(found, layout, shuffle_rng, tc.seed)

    bar = tqdm(total=tc.max_epochs, initial=progress.epoch, disable=not (tc.progress and is_writer()), unit="epoch",
               dynamic_ncols=True)
    for epoch in range(progress.epoch + 1, tc.max_epochs + 1):
        if progress.finished:
            break
        start, batch_losses, first_step = time.perf_counter(), [], int(state.step)
        if prepared is None:
            batches = (layout.put_batch(batch) for batch in iterate_sharded_batches(
                matrix, shuffle_rng.permutation(active_rows), batch_rows=tc.batch_rows, budget=budget, shards=layout.data))
        else:
            batches = _own_row_groups(reader, layout, epoch)
        for batch in batches:
            state, loss = step(state, batch)
            batch_losses.append(loss)
        saving = checkpoints is not None and (epoch % tc.checkpoint_every == 0 or epoch == tc.max_epochs)
        # The whole state comes to the host, for the divergence guard, only when it is checkpointed.
        batch_losses = np.asarray(jax.device_get(batch_losses))
        # The whole state is checked where it lies when it is checkpointed, the parameters otherwise.
        _guard_divergence(batch_losses, _all_finite(state if saving else state.params), epoch=epoch,
                          first_step=first_step, checkpoints=checkpoints)
        params = layout.to_host(evaluated_weights(state, config))
        train_loss = float(np.mean(batch_losses))
        seconds = time.perf_counter() - start
        validating = epoch % tc.validate_every == 0 or epoch == tc.max_epochs
        metrics = {}
        if validating and validation is not None and validation.nnz:
            reads = train if inputs is None else inputs
            # A catalogue split over `model` is scored where it lies; otherwise, and with several
            # processes, each process scores the whole model (gathered on its host) on one device.
            on_mesh = layout.model > 1 and jax.process_count() == 1
            snapshot = (MeshScorer(config, evaluated_weights(state, config), reads, layout) if on_mesh
                        else FittedModel(config, params, reads))
            metrics = agreed((validation_metrics or _validation_metrics)(snapshot, validation))
        record = EpochRecord(epoch, train_loss, seconds, active_rows.size / seconds, metrics)
        progress.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss:.4g}", rows_per_s=f"{record.rows_per_second:.0f}",
                        **{f"val_{k}": f"{v:.4f}" for k, v in metrics.items() if k in ("rmse", "nll")})
        score = metrics.get(tc.select_metric, -epoch) if validating else np.inf  # no validation: keep the last epoch
        if score < progress.best_score:
            progress.best_params, progress.best_score, progress.since_best = params, score, 0
        else:
            progress.since_best += 1
        progress.epoch = epoch
        progress.finished = (validating and progress.since_best >= tc.patience) or epoch == tc.max_epochs
        if checkpoints is not None and (saving or progress.finished):
            if not saving:  # early-stopped between checkpoints: check the whole state now
                _guard_divergence(batch_losses, _all_finite(state), epoch=epoch, first_step=first_step,
                                  checkpoints=checkpoints)
            checkpoints.save(epoch, {"state": state, "best": progress.best_params},
                             progress.to_json(shuffle_rng, tc.seed))
    bar.close()
    if progress.best_params is None:
        raise ConvaeError(f"no epoch produced a finite validation {tc.select_metric}")
    fitted = FittedModel(config, progress.best_params, read, tuple(progress.history))
    warn_if_encoder_collapsed(fitted)
    return fitted


def _own_row_groups(reader: ProcessInput, layout: Layout, epoch: int):
    """An epoch's global batches, each process reading only its own row groups; as many steps on
    every process (the most any process needs; the others pad)."""
    steps = reader.local_steps(epoch)
    if jax.process_count() > 1:
        steps = int(np.max(process_allgather(np.asarray([steps], np.int32))))
    for piece in reader.batches(epoch, steps=steps):
        yield global_batch(piece, layout.batch_sharding, process_count=jax.process_count())


def validated_epochs(train_config) -> tuple[int, ...]:
    """The epochs `fit` may score on its validation set, hence the candidates it may return:
    every `validate_every`-th epoch up to `max_epochs`, and `max_epochs` itself."""
    every, last = train_config.validate_every, train_config.max_epochs
    return tuple(range(every, last + 1, every)) + (() if last % every == 0 else (last,))


COLLAPSED_CODE_SPREAD = 1e-3  # row codes' spread across rows, relative to their size, below which the encoder has collapsed


class EncoderCollapsed(UserWarning):
    """Every row got (nearly) the same code: see `warn_if_encoder_collapsed`."""


def warn_if_encoder_collapsed(model: FittedModel) -> float:
    """Warns (`EncoderCollapsed`) when the trained encoder gives every row the same code h. The
    L2 term can drive the encoder's weights to zero when rows hold few entries (item rows on a
    long-tailed catalogue); the model then predicts from its column biases alone, and under item
    rows ranks every user's items by popularity, which no metric flags by itself. Returns the
    spread: the codes' standard deviation across rows over their mean magnitude, dimensions averaged."""
    codes = model.row_codes  # reduced where it lives: only the scalar comes to the host
    spread = float(jnp.std(codes, axis=0).mean() / jnp.maximum(jnp.abs(codes).mean(), 1e-12))
    if spread < COLLAPSED_CODE_SPREAD:
        warnings.warn(f"the encoder collapsed: every {model.config.model.orientation} row has the same code "
                      f"(spread {spread:.1e} across {codes.shape[0]} rows), so predictions come from the column "
                      "biases alone; lower train.l2 or model.input_dropout", EncoderCollapsed, stacklevel=3)
    return spread


@dataclasses.dataclass
class _Progress:
    """The epoch loop's state beyond `TrainState`: with it, a resumed run repeats the
    uninterrupted one exactly (same batches, same selection, same stopping epoch)."""

    epoch: int = 0  # epochs completed
    history: list = dataclasses.field(default_factory=list)  # EpochRecord per completed epoch
    best_params: dict | None = None  # parameters at the best validation score so far
    best_score: float = np.inf  # best `select_metric` so far (-epoch without validation)
    since_best: int = 0  # epochs without improvement (patience counter)
    finished: bool = False  # early-stopped or at max_epochs

    def to_json(self, shuffle_rng: np.random.Generator, seed: int) -> dict:
        """The JSON-able part; the shuffling generator's state makes the next epochs' order exact."""
        return _plain_json({
            "best_score": self.best_score, "since_best": self.since_best, "finished": self.finished,
            "history": [dataclasses.asdict(r) for r in self.history],
            "shuffle_rng": shuffle_rng.bit_generator.state, "root_key": root_key_data(seed),
        })


def _restore(found, layout: Layout, shuffle_rng: np.random.Generator, seed: int) -> tuple[TrainState, _Progress]:
    """Train state (restored onto the mesh, `Layout.abstract`) and loop progress from a checkpoint;
    the shuffling generator is reset in place."""
    loop = found.loop
    if loop["root_key"] != root_key_data(seed):
        raise CheckpointError(f"{found.path}: written with another root PRNG key")
    shuffle_rng.bit_generator.state = loop["shuffle_rng"]
    best = found.trees.get("best")
    progress = _Progress(epoch=found.epoch, history=[EpochRecord(**r) for r in loop["history"]],
                         best_params=None if best is None else layout.to_host(best), best_score=float(loop["best_score"]),
                         since_best=int(loop["since_best"]), finished=bool(loop["finished"]))
    return TrainState(*found.trees["state"]), progress


def _all_finite(tree) -> bool:
    """Whether every entry of a tree of device arrays is finite, reduced where they lie (one
    scalar comes to the host, the same on every process)."""
    return bool(jax.jit(lambda leaves: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])))(
        jax.tree_util.tree_leaves(tree)))


def _guard_divergence(batch_losses: np.ndarray, state_finite: bool, *, epoch: int, first_step: int, checkpoints) -> None:
    """TrainingDiverged naming the first update (1-based) whose loss or gradients were
    unusable (see `make_train_step`); or, if only the state (parameters, plus the optimiser state
    when checkpointing; `state_finite` says whether all of it is finite) is, the epoch's last update."""
    bad = np.flatnonzero(~np.isfinite(batch_losses))
    if bad.size == 0 and state_finite:
        return
    if bad.size:
        step, what = first_step + int(bad[0]) + 1, f"the loss or its gradients became {batch_losses[bad[0]]}"
    else:
        step, what = first_step + batch_losses.size, "the parameters or optimiser state became non-finite"
    kept = checkpoints.complete() if checkpoints is not None else []
    where = f"; the last good checkpoint is {kept[0]}" if kept else "; no checkpoint was written before it"
    raise TrainingDiverged(f"training diverged at step {step} (epoch {epoch}): {what}{where}",
                           step=step, checkpoint=kept[0] if kept else None)


def _plain_json(value):
    """`value` with numpy scalars turned into Python ones (exact for float32 and float64)."""
    def numpy_scalar(x):
        if isinstance(x, np.generic):
            return x.item()
        raise TypeError(f"cannot checkpoint a {type(x).__name__} in the loop state")

    return json.loads(json.dumps(value, default=numpy_scalar))


def _validation_metrics(model: FittedModel, validation: Interactions) -> dict:
    log_probs = model.rating_log_probs(validation.user, validation.item)
    return rating_metrics(log_probs, validation.channel, model.train.channel_values)
