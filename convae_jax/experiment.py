"""Runs as the CLI drives them: train and evaluate into a run directory, re-evaluate, recommend."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from convae_jax.checkpoint import list_checkpoints
from convae_jax.config import Config
from convae_jax.data.interactions import Interactions
from convae_jax.data.loaders import load_dataset
from convae_jax.data.per_process import PreparedTraining
from convae_jax.data.prepared import PreparedLayout
from convae_jax.data.splits import hashed_part, holdout_interactions
from convae_jax.data.synthetic import SyntheticTruth
from convae_jax.data.table import RatingsTable
from convae_jax.distributed import is_writer
from convae_jax.errors import CheckpointError, ConvaeError
from convae_jax.evaluate import explicit_protocol, ranking_protocol
from convae_jax.explain import explain_scores
from convae_jax.io import atomic_write, load_model, save_model
from convae_jax.learning_curve import plot_learning_curve
from convae_jax.mesh_scoring import on_devices
from convae_jax.predict import FittedModel
from convae_jax.rank import ranking_scores, seen_mask, top_k
from convae_jax.train import fit

SYNTHETIC = "synthetic"
SYNTHETIC_RATINGS_PER_USER = 40  # the built-in dataset: SyntheticTruth() users each rate this many items
LEARNING_CURVE = "learning_curve.png"  # beside history.json in a run directory
# With a single channel (an implicit-only table) every rating metric is trivially perfect, so the
# epoch is chosen on the validation pairs' ranking instead and the test reports ranking metrics only.
IMPLICIT_SELECT_METRIC = "neg_ndcg@100"


def load_split(dataset: str, data_dir, config: Config, *, table: RatingsTable | None = None
               ) -> tuple[Interactions, Interactions]:
    """(train, test): from one's own ratings `table` where given (its test file, else a seeded
    random hold-out), else from the named dataset: its fixed split where it ships one, else a
    seeded random hold-out."""
    if table is not None:
        data, test = table.load()
        if test is not None:
            return data, test
    elif dataset == SYNTHETIC:
        data = SyntheticTruth().sample_histories(SYNTHETIC_RATINGS_PER_USER, seed=config.eval.split_seed)
    else:
        if data_dir is None:
            raise ConvaeError(f"--data-dir is required for dataset {dataset!r}")
        loaded = load_dataset(dataset, data_dir)
        if loaded.test is not None:
            return loaded.train, loaded.test
        data = loaded.train
    return holdout_interactions(data, fraction=config.eval.test_fraction, seed=config.eval.split_seed)


def prepared_split(path, config: Config) -> tuple[Interactions, Interactions, Interactions, PreparedTraining]:
    """(train, validation, test, what `fit` reads) of a prepared layout (`convae prepare`): its
    "test" part where it has one, else `eval.test_fraction` of its pairs; `train.validation_fraction`
    of the rest for validation; both held out by a seeded hash of the pair (`splits.hashed_part`),
    which each process applies to its own rows as it reads them."""
    layout = PreparedLayout.open(path)
    layout.require(orientation=config.model.orientation)
    data = layout.interactions("train")
    has_test = "test" in layout.parts
    fractions = (config.train.validation_fraction,) if has_test else (config.train.validation_fraction,
                                                                       config.eval.test_fraction)
    seed = config.eval.split_seed

    def part_of(rows, cols):
        return hashed_part(rows, cols, fractions=fractions, seed=seed)

    rows, cols = (data.user, data.item) if config.model.orientation == "user" else (data.item, data.user)
    part = part_of(rows, cols)
    test = layout.interactions("test") if has_test else data.subset(part == 1)
    keep = lambda r, c: part_of(r, c) == len(fractions)
    return data.subset(part == len(fractions)), data.subset(part == 0), test, PreparedTraining(layout, keep)


def train_and_evaluate(config: Config, workdir, *, dataset: str = SYNTHETIC, data_dir=None,
                       table: RatingsTable | None = None, resume: bool = False, prepared=None) -> dict:
    """Trains on the training split, evaluates on the test split (explicit protocol: ratings and
    top-K of held-out items), and writes run.json, checkpoints/ (one per epoch), history.json,
    LEARNING_CURVE, metrics.json and model/, each file atomically. The data is read and checked
    before the run directory is made, so bad input leaves nothing behind. A workdir that already
    holds checkpoints is refused unless `resume` (see `resume_run`)."""
    workdir = Path(workdir)
    if not resume and list_checkpoints(workdir / "checkpoints"):
        raise CheckpointError(f"{workdir} already holds a run; continue it with --resume {workdir} or use a new workdir")
    validation = reader = None
    if prepared is not None:
        train, validation, test, reader = prepared_split(prepared, config)
        dataset = f"prepared layout {Path(prepared).name}"
    else:
        train, test = load_split(dataset, data_dir, config, table=table)
    if train.n_channels == 1:
        config = config.override([f"train.select_metric={IMPLICIT_SELECT_METRIC!r}"])
    dataset = table.name if table is not None else dataset
    workdir.mkdir(parents=True, exist_ok=True)
    writer = is_writer()  # with several processes, process 0 writes the run's files
    if not resume and writer:
        # Paths are stored absolute so that `resume_run` and `evaluate_run` work from any directory.
        run = {"dataset": dataset, "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
               "table": None if table is None else table.to_record(), "config": config.to_dict(),
               "prepared": None if prepared is None else str(Path(prepared).resolve())}
        _write_json(workdir / "run.json", run)
    scorer = _ranking_validation if train.n_channels == 1 else None
    model = fit(train, config, validation=validation, checkpoint_dir=workdir / "checkpoints", resume=resume,
                validation_metrics=scorer, prepared=reader)
    if validation is not None:  # as when `fit` holds validation out itself: predictions read every known pair
        model = FittedModel(model.config, model.params, train.concat(validation), model.history)
    metrics = {"dataset": dataset, "selected_epoch": model.selected_epoch,
               "test": score_test(on_devices(model), train, test, ks=config.eval.ks)}
    if writer:
        save_model(model, workdir / "model")
        _write_json(workdir / "history.json", [dataclasses.asdict(r) for r in model.history])
        plot_learning_curve(model.history, select_metric=config.train.select_metric, selected_epoch=model.selected_epoch,
                            path=workdir / LEARNING_CURVE)
        _write_json(workdir / "metrics.json", metrics)
    return metrics


def score_test(model, train: Interactions, test: Interactions, *, ks) -> dict:
    """The explicit protocol's metrics of `test`; with a single channel, its ranking metrics only."""
    if train.n_channels > 1:
        return explicit_protocol(model, train, test, ks=ks)
    return ranking_protocol(model.consumption_scores(np.unique(test.user)), seen=train, relevant=test, ks=ks)


def resume_run(workdir, *, mesh_overrides=()) -> dict:
    """Continues an interrupted `train_and_evaluate` in `workdir` from its newest readable
    checkpoint, with the config and data recorded in its run.json. On CPU the outcome is
    bit-for-bit that of an uninterrupted run; a finished run is re-evaluated only.
    `mesh_overrides` (`mesh.FIELD=VALUE`) continue it on another mesh: checkpoints restore onto
    any mesh (`convae_jax.checkpoint`); later batches are cut for the new data axis, so the run
    goes on as a valid but not bit-identical continuation."""
    if any(not item.startswith("mesh.") for item in mesh_overrides):
        raise ConvaeError("a resumed run keeps its config; only its mesh may change (--set mesh.data=… mesh.model=…)")
    workdir = Path(workdir)
    run = _read_run(workdir)
    try:
        config = Config.from_dict(run["config"]).override(list(mesh_overrides))
        dataset, data_dir = run["dataset"], run["data_dir"]
    except (KeyError, TypeError) as err:
        raise ConvaeError(f"{workdir / 'run.json'}: incomplete run record ({err})") from None
    return train_and_evaluate(config, workdir, dataset=dataset, data_dir=data_dir, table=_run_table(workdir, run),
                              resume=True, prepared=run.get("prepared"))


def evaluate_run(workdir, *, dataset: str | None = None, data_dir=None) -> dict:
    """Re-scores a saved run on its test split (or on another dataset's) into evaluation.json."""
    workdir = Path(workdir)
    run = _read_run(workdir)
    model = on_devices(load_model(workdir / "model"))
    table = None if dataset else _run_table(workdir, run)
    dataset = dataset or run["dataset"]
    train, test = load_split(dataset, data_dir or run["data_dir"], model.config, table=table)
    result = {"dataset": dataset, "test": score_test(model, train, test, ks=model.config.eval.ks)}
    _write_json(workdir / "evaluation.json", result)
    return result


def recommend(workdir, *, user, mode: str = "consume", k: int = 10, gem_quantile: float = 0.5,
              gem_tilt: float = 0.0) -> list[dict]:
    """Top-k unseen items for a raw user id, each with the numbers that explain its place."""
    model = on_devices(load_model(Path(workdir) / "model"))
    return recommend_for(model, model.train.user_index(user), mode=mode, k=k, gem_quantile=gem_quantile,
                         gem_tilt=gem_tilt)


def recommend_for(model: FittedModel, user: int, *, mode: str, k: int, gem_quantile: float = 0.5,
                  gem_tilt: float = 0.0) -> list[dict]:
    """Top-k unseen items for a user index of `model`, with P(consume), its percentile among the
    unseen items, P(rating >= τ | consumed) and the expected rating where the run has ratings
    (`explain.explain_scores`), and a line saying why the `mode` ranking chose the item; gem knobs
    as in `rank.ranking_scores`."""
    values, tau = model.train.channel_values, model.config.eval.rating_threshold
    rated = model.train.n_channels > 1
    if not rated and mode != "consume":
        raise ConvaeError(f"--mode {mode} ranks by predicted ratings, and this run was trained without ratings "
                          "(one channel): use --mode consume")
    scores = next(model.score_users([user], batch=1))
    seen = seen_mask([user], model.train, model.train.n_items)
    ranked = ranking_scores(scores.log_p_consume, scores.log_p_rating, seen, mode=mode, channel_values=values,
                            threshold=tau, gem_quantile=gem_quantile, gem_tilt=gem_tilt)
    items, item_scores = top_k(ranked, k)
    rows = []
    for item, score in zip(items[0], item_scores[0]):
        if not np.isfinite(score):
            break
        why = explain_scores(scores.log_p_consume[0], scores.log_p_rating[0], seen[0], item, channel_values=values,
                             threshold=tau)
        row = {"item": _plain(model.train.item_ids[item]), "score": float(score), "p_consume": why.p_consume,
               "consume_percentile": why.consume_percentile}
        if rated:
            row |= {f"p_rating_ge_{tau:g}": why.p_rating_at_least, "expected_rating": why.expected_rating}
        rows.append(row | {"why": why.why(mode, gem_quantile=gem_quantile)})
    return rows


def _read_run(workdir: Path) -> dict:
    try:
        run = json.loads((workdir / "run.json").read_text())
    except (OSError, ValueError) as err:
        raise ConvaeError(f"{workdir}: not a run directory ({err})") from None
    if not isinstance(run, dict):
        raise ConvaeError(f"{workdir / 'run.json'}: not a run record")
    return run


def _run_table(workdir: Path, run: dict) -> RatingsTable | None:
    """The ratings table a run was trained on, from its run.json (runs before tables had none)."""
    record = run.get("table")
    if record is None:
        return None
    try:
        return RatingsTable.from_record(record)
    except ConvaeError as err:
        raise ConvaeError(f"{workdir / 'run.json'}: {err}") from None


def _ranking_validation(model: FittedModel, validation: Interactions) -> dict:
    """NDCG@100 of the validation pairs, negated (lower is better), each user's other training
    items excluded: the selection metric of single-channel data."""
    users = np.unique(validation.user)
    ndcg = ranking_protocol(model.consumption_scores(users), seen=model.train, relevant=validation, ks=(),
                            ndcg_ks=(100,))["ndcg@100"]
    return {IMPLICIT_SELECT_METRIC: -ndcg}


def _write_json(path: Path, value) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(value, indent=2).encode()))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
