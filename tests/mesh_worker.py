"""The multi-device checks of tests/test_mesh.py, run in a process of 8 simulated CPU devices (the
device count is fixed when JAX starts): `python tests/mesh_worker.py CHECK` prints one JSON object.

`equivalence`: per config and mesh shape, the loss, its gradients and the parameters after 20 Adam
steps on the mesh against the single-device program on the same batches, as the largest error of
each relative to the largest magnitude of its leaf. `layout`: shard shapes on a 1×8 mesh and what
the compiled step's HLO all-gathers. `ranking user|item`: sharded scoring (`MeshScorer`) against
the single device's. `fit DIR`: the CLI's path (training, validation, test metrics, recommend,
explain) on a 1×8 mesh against one device.
"""

from __future__ import annotations

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from convae_jax import config as config_lib  # noqa: E402
from convae_jax.data.batches import RowMatrix, entry_budget, iterate_sharded_batches  # noqa: E402
from convae_jax.data.interactions import Interactions  # noqa: E402
from convae_jax.evaluate import explicit_protocol  # noqa: E402
from convae_jax.mesh_scoring import MeshScorer  # noqa: E402
from convae_jax.model import build_model, init_params  # noqa: E402
from convae_jax.predict import FittedModel  # noqa: E402
from convae_jax.rank import seen_mask  # noqa: E402
from convae_jax.sharding import make_layout  # noqa: E402
from convae_jax.train import init_train_state, make_optimizer, make_train_step  # noqa: E402

SHAPES = ((1, 1), (8, 1), (4, 2), (2, 4), (1, 8))
STEPS = 20
# Each combination of orientation and rating head, with other paths of the loss switched on along
# the way: the chunked log-sum-exp (logit_chunk 4 < columns per shard), per-column cut-points,
# the L2 input norm, row offsets, a weighted implicit term, weight averaging. Every column is observed
# in every batch: a parameter whose true gradient is 0 (the location η of an unobserved column under
# the ordinal head) gets rounding noise as its gradient, which Adam's first steps turn into ±lr.
CONFIGS = {
    "user-categorical": ["model.orientation=user"],
    "user-ordinal": ["model.orientation=user", "model.rating_head=ordinal", "model.cutpoints=per_column",
                     "model.logit_chunk=4", "model.input_norm=l2"],
    "item-categorical": ["model.orientation=item", "model.row_offsets=True", "train.weight_average=0.5"],
    "item-ordinal": ["model.orientation=item", "model.rating_head=ordinal", "model.implicit_weight=0.5",
                     "model.logit_chunk=4"],
}


def tiny_data(*, n_users: int = 42, n_items: int = 37, seed: int = 0) -> Interactions:
    """Random ratings on 5 levels of 60% of the pairs; 37 items and 42 users, which 2, 4 and 8 do
    not all divide, so the catalogue is padded on some meshes."""
    rng = np.random.default_rng(seed)
    pairs = np.flatnonzero(rng.random(n_users * n_items) < 0.6)
    return Interactions.build(pairs // n_items, pairs % n_items, rng.integers(0, 5, pairs.size),
                              n_users=n_users, n_items=n_items, channel_values=(1.0, 2.0, 3.0, 4.0, 5.0))


# Parameters whose first gradient is below this share of their leaf's largest are left out of the
# rtol comparison of parameters (and bounded apart, "params_all"): Adam divides each gradient by
# its own size, so fp32 rounding of ~1e-7 of the leaf's largest gradient, on an entry 1e-4 of it
# (terms that cancel), moves that entry by ~1e-3 of Adam's step lr from the first step on.
NOISE_GRADIENT = 1e-4


def _relative_error(a, b, *, where=None) -> float:
    """Largest |a − b| over each leaf's entries (those of `where`, a tree of masks, if given),
    relative to the leaf's largest |b|; the worst leaf."""
    masks = jax.tree_util.tree_leaves(where) if where is not None else [True] * len(jax.tree_util.tree_leaves(b))
    return max(float(np.max(np.where(m, np.abs(np.asarray(x) - np.asarray(y)), 0.0)) / max(np.max(np.abs(np.asarray(y))), 1e-30))
               for x, y, m in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), masks))


def _setup(overrides, shape):
    # Adam's step of the default config (the testing preset's 1e-2 makes the first step's rounding
    # noise ten times as large in the parameters; see NOISE_GRADIENT).
    config = config_lib.testing().override(overrides + ["train.learning_rate=1e-3", f"mesh.data={shape[0]}",
                                                        f"mesh.model={shape[1]}"])
    data = tiny_data()
    matrix = RowMatrix.from_interactions(data, orientation=config.model.orientation)
    model = build_model(config.model, n_cols=matrix.n_cols, n_channels=data.n_channels)
    layout = make_layout(config, n_cols=matrix.n_cols)
    rows = config.train.batch_rows
    batches = list(iterate_sharded_batches(matrix, np.random.default_rng(1).permutation(matrix.n_rows), batch_rows=rows,
                                           budget=entry_budget(matrix.lengths, rows // layout.data), shards=layout.data))
    return config, model, layout, batches


def _train(config, model, layout, batches) -> dict:
    """Loss and gradient of the first step (the gradient read from Adam's first moment, (1 − β₁)·g,
    so that one compiled step serves both) and the parameters after STEPS steps, on the host."""
    tx = make_optimizer(config)
    state = init_train_state(model=model, tx=tx, key=jax.random.key(0), layout=layout)
    step = make_train_step(model=model, tx=tx, config=config, dropout_key=jax.random.key(1), layout=layout)
    state, loss = step(state, batches[0])
    first = {"loss": float(loss), "grads": layout.to_host(optax.tree_utils.tree_get(state.opt_state, "mu"))}
    for t in range(1, STEPS):
        state, _ = step(state, batches[t % len(batches)])
    return first | {"params": layout.to_host(state.params)}


def _moved(grads):
    """Per leaf, the entries whose gradient stands above rounding noise (NOISE_GRADIENT)."""
    return jax.tree_util.tree_map(lambda g: np.abs(g) >= NOISE_GRADIENT * np.abs(g).max(), grads)


def equivalence(orientation: str) -> dict:
    """{config: {"DxM": {"loss", "grads", "params"}}} of the configs of one orientation: relative
    errors against one device on the same batches. The batches are cut for an 8-way data axis,
    which serves every data axis that divides 8 (part j of a D-way axis is parts 8j/D to
    8(j+1)/D − 1), so one single-device run is the reference of every mesh shape; a 1×1 mesh is
    the single-device program itself."""
    out = {}
    for name, overrides in CONFIGS.items():
        if not name.startswith(orientation):
            continue
        out[name] = {}
        config, model, _, batches = _setup(overrides, (8, 1))
        single = make_layout(config.override(["mesh.data=1", "mesh.model=1"]), n_cols=model.n_cols)
        one = _train(config, model, single, batches)
        for data, columns in SHAPES:
            layout = make_layout(config.override([f"mesh.data={data}", f"mesh.model={columns}"]), n_cols=model.n_cols)
            mesh = one if layout.mesh.size == 1 else _train(config, model, layout, batches)
            out[name][f"{data}x{columns}"] = {
                "loss": abs(mesh["loss"] - one["loss"]) / abs(one["loss"]),
                "grads": _relative_error(mesh["grads"], one["grads"]),
                "params": _relative_error(mesh["params"], one["params"], where=_moved(one["grads"])),
                "params_all": _relative_error(mesh["params"], one["params"]),
                "padded_columns": layout.n_padded - layout.n_cols}
    return out


def layout_check() -> dict:
    """On a 1×8 mesh (user rows, per-column cut-points): each device's shard shape of every
    column-indexed parameter and Adam moment, and the compiled step's all-gathers and largest arrays."""
    overrides = CONFIGS["user-ordinal"] + ["model.logit_chunk=8192"]
    config, model, layout, batches = _setup(overrides, (1, 8))
    tx = make_optimizer(config)
    state = init_train_state(model=model, tx=tx, key=jax.random.key(0), layout=layout)
    step = make_train_step(model=model, tx=tx, config=config, dropout_key=jax.random.key(1), layout=layout)
    shards = {}
    for tree_name, tree in (("params", state.params), ("mu", state.opt_state[0].mu), ("nu", state.opt_state[0].nu)):
        for leaf_name, leaf in tree.items():
            shards[f"{tree_name}/{leaf_name}"] = {"global": list(leaf.shape),
                                                  "per_device": sorted({tuple(s.data.shape) for s in leaf.addressable_shards})}
    hlo = step.compiled_text(state, jax.device_put(batches[0], layout.batch_sharding))
    gathered = re.findall(r"= (\w+\[[0-9,]*\])[^=\n]* all-gather\(", hlo)
    shapes = [tuple(int(d) for d in dims.split(",") if d) for dims in re.findall(r"f32\[([0-9,]*)\]", hlo)]
    rows = config.train.batch_rows
    return {"shards": shards, "all_gathers": gathered, "n_padded": layout.n_padded, "n_cols": layout.n_cols,
            "batch_rows": rows, "n_channels": model.n_channels,
            "largest_array": max(int(np.prod(s)) for s in shapes),
            "full_logits_arrays": sum(int(np.prod(s)) >= rows * layout.n_cols * model.n_channels for s in shapes)}


def fit_check(tmp: str) -> dict:
    """A run of the CLI's path (`experiment.train_and_evaluate`, then `recommend` and
    `explain_run` on the saved run) on a 1×8 mesh against one device: the epochs' losses and
    validation metrics (scored on the mesh), the saved parameters, the test metrics, a
    recommendation list and an explanation."""
    from convae_jax.experiment import recommend, train_and_evaluate
    from convae_jax.explain import explain_run
    from convae_jax.io import load_model

    # Adam at the default step (see `_setup`).
    config = config_lib.testing().override(["model.orientation=user", "train.max_epochs=2", "train.validation_fraction=0.1",
                                            "train.learning_rate=1e-3"])
    runs = {}
    for shape in ("1", "8"):
        workdir = os.path.join(tmp, shape)
        metrics = train_and_evaluate(config.override(["mesh.data=1", f"mesh.model={shape}"]), workdir)
        model = load_model(os.path.join(workdir, "model"))
        user = model.train.user_ids[0].item()
        with open(os.path.join(workdir, "history.json")) as f:
            history = json.load(f)
        runs[shape] = {"metrics": metrics["test"], "model": model, "history": history,
                       "recommended": recommend(workdir, user=user, k=10),
                       "explained": explain_run(workdir, user=user, item=model.train.item_ids[3].item()).summary()}
    one, mesh = runs["1"], runs["8"]
    epochs = list(zip(mesh["history"], one["history"]))
    return {"loss": max(abs(a["train_loss"] - b["train_loss"]) / abs(b["train_loss"]) for a, b in epochs),
            "validation": max(abs(a["validation"][key] - b["validation"][key]) / abs(b["validation"][key])
                              for a, b in epochs for key in b["validation"]),
            "validated_epochs": sum(bool(b["validation"]) for _, b in epochs),
            "params": _relative_error(mesh["model"].params, one["model"].params),
            "test": max(abs(mesh["metrics"][key] - one["metrics"][key]) / max(abs(one["metrics"][key]), 1e-12)
                        for key in one["metrics"]),
            "same_recommendations": [row["item"] for row in mesh["recommended"]] == [row["item"] for row in one["recommended"]],
            "explanation": max(abs(mesh["explained"][key] - value) for key, value in one["explained"].items()
                               if isinstance(value, float)),
            "shapes_equal": jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: a.shape == b.shape,
                                                                          mesh["model"].params, one["model"].params)),
            "checkpoints": sorted(os.listdir(os.path.join(tmp, "8", "checkpoints")))}


def ranking(orientation: str) -> dict:
    """40 users over 300 items, on meshes with 1, 4 and 8 model shards (the items split under user
    rows, the users under item rows) against the single device (`FittedModel`): top-100 unseen
    items (`MeshScorer.top_items`), whole-catalogue scores, rating distributions of pairs, the
    explicit protocol's metrics and fold-in scores of new users."""
    config = config_lib.testing().override([f"model.orientation={orientation}"])
    rng = np.random.default_rng(2)
    pairs = np.flatnonzero(rng.random(40 * 300) < 0.1)
    data = Interactions.build(pairs // 300, pairs % 300, rng.integers(0, 5, pairs.size), n_users=40, n_items=300,
                              channel_values=(1.0, 2.0, 3.0, 4.0, 5.0))
    train, test = data.subset(pairs % 7 != 0), data.subset(pairs % 7 == 0)
    n_cols = 300 if orientation == "user" else 40
    model = build_model(config.model, n_cols=n_cols, n_channels=5)
    fitted = FittedModel(config, jax.device_get(init_params(model, jax.random.key(0))), train)
    users = np.arange(40)
    one = list(fitted.score_users(users))
    consume = np.concatenate([s.log_p_consume for s in one])
    rating = np.concatenate([s.log_p_rating for s in one])
    masked = np.where(seen_mask(users, train, 300), -np.inf, consume)
    expected = np.argsort(-masked, axis=1, kind="stable")[:, :100]
    protocol = explicit_protocol(fitted, train, test)
    history = test.subset(test.user < 10)
    folded = np.concatenate([s.log_p_consume for s in fitted.fold_in(history).score()])
    out = {}
    for data_axis, model_axis in ((1, 1), (2, 4), (1, 8)):
        layout = make_layout(config.override([f"mesh.data={data_axis}", f"mesh.model={model_axis}"]), n_cols=n_cols)
        scorer = MeshScorer.of(fitted, layout)
        items, values = scorer.top_items(users, k=100)
        mesh = list(scorer.score_users(users))
        on_mesh = explicit_protocol(scorer, train, test)
        folded_on_mesh = scorer.fold_in(history)
        out[f"{data_axis}x{model_axis}"] = {
            "same_lists": int(np.sum(np.all(items == expected, axis=1))), "users": int(users.size),
            "score_error": float(np.max(np.abs(values - np.take_along_axis(masked, expected, axis=1)))),
            # Where the lists differ, by how much the single-device scores of the two items at a
            # rank differ: a swap of two items whose scores tie to rounding is ~1e-6.
            "swap_gap": float(np.max(np.abs(np.take_along_axis(masked, items, axis=1)
                                            - np.take_along_axis(masked, expected, axis=1)))),
            "consume_error": float(np.max(np.abs(np.concatenate([s.log_p_consume for s in mesh]) - consume))),
            "rating_error": float(np.max(np.abs(np.concatenate([s.log_p_rating for s in mesh]) - rating))),
            "pair_error": float(np.max(np.abs(scorer.rating_log_probs(test.user, test.item)
                                              - fitted.rating_log_probs(test.user, test.item)))),
            "protocol_error": max(abs(on_mesh[key] - protocol[key]) for key in protocol),
            "fold_in_users_equal": bool(np.array_equal(folded_on_mesh.users, np.unique(history.user))),
            "fold_in_error": float(np.max(np.abs(np.concatenate([s for _, s in folded_on_mesh.consumption_scores()])
                                                 - folded)))}
    return out


if __name__ == "__main__":
    checks = {"equivalence": equivalence, "layout": layout_check, "ranking": ranking, "fit": fit_check}
    print(json.dumps(checks[sys.argv[1]](*sys.argv[2:])))
