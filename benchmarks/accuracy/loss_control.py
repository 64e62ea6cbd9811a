"""Which loss can a full-rank item-item model learn on each catalogue? A zero-diagonal linear map
S (n_items × n_items) trained by Adam on the comparison's strong-generalization split,
under Conv4Rec's implicit term (the log-likelihood of the consumed items under a softmax over the
catalogue, as in Mult-DAE) or under EASE's squared error. Same data, optimiser, batches and
epoch selection; only the loss differs.

The control behind Douban's ranking gap in docs/results.md: the rank sweep
(`benchmarks/accuracy/rank_sweep.py`) says Douban needs a wide map, and this says whether the softmax
term can fit one. Per dataset, seed and loss, a grid of three (L2, input dropout, learning rate)
points; the point and the epoch are picked on the validation users' NDCG@100, test is reported.

    python -m benchmarks.accuracy.loss_control [--data-dir ../shared/data] [--datasets ml-100k douban]
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.accuracy.control_cli import announce, control_parser, save, write_report
from benchmarks.accuracy.grids import EASE_L2_GRID
from benchmarks.accuracy.run import SEEDS
from benchmarks.accuracy.splits import dataset_strong_split
from convae_jax.data import load_dataset
from convae_jax.evaluate import strong_generalization_protocol
from convae_jax.rank import seen_mask
from convae_jax.record import mean_std, record_line

EPOCHS = 12
BATCH_USERS = 32
LOSSES = ("softmax", "squared")


def grid(loss: str, n_train_users: int) -> tuple[tuple[float, float, float], ...]:
    """(l2 on the summed squared weights, added to the batch-mean loss; input dropout; learning
    rate). Squared error: EASE's λ divided by the training users, so that the objective is EASE's
    (over n_train_users). Softmax: the points tried on Douban's seed-0 validation users before
    this grid was fixed (L2 0.01 and 0.001 with Conv4Rec's input dropout, 0.0001 without)."""
    if loss == "squared":
        return tuple((l2 / n_train_users, 0.0, 1e-3) for l2 in EASE_L2_GRID)
    return (0.01, 0.6, 1e-3), (0.001, 0.6, 1e-3), (0.0001, 0.0, 3e-3)


def _batch_loss(loss: str, params, clicks, keep, l2: float, dropout: float):
    """Batch-mean loss of x·S (diag(S) excluded) + b against the full click rows, plus l2·‖S‖²."""
    x_in = clicks * keep / (1.0 - dropout)
    logits = x_in @ params["s"] - x_in * jnp.diagonal(params["s"]) + params["bias"]
    if loss == "softmax":
        per_user = -jnp.sum(clicks * jax.nn.log_softmax(logits), axis=1)
    else:
        per_user = jnp.sum((clicks - logits) ** 2, axis=1)
    return jnp.mean(per_user) + l2 * jnp.sum(params["s"] ** 2)


def _scores(params, history, n_items: int):
    s = np.array(params["s"])
    np.fill_diagonal(s, 0.0)
    users = np.unique(history.user)
    yield users, seen_mask(users, history, n_items).astype(np.float32) @ s + np.asarray(params["bias"])


def train_point(loss: str, clicks_split, point: tuple, seed: int) -> dict:
    """Best epoch by validation NDCG@100: its validation and test scores."""
    l2, dropout, learning_rate = point
    c = clicks_split
    n_items = c.train.n_items
    rows = jnp.asarray(seen_mask(np.unique(c.train.user), c.train, n_items).astype(np.float32))
    params = {"s": jnp.zeros((n_items, n_items)), "bias": jnp.zeros(n_items)}
    optimiser = optax.adam(learning_rate)
    state = optimiser.init(params)

    @jax.jit
    def step(params, state, batch, key):
        keep = jax.random.bernoulli(key, 1.0 - dropout, batch.shape)
        grads = jax.grad(lambda p: _batch_loss(loss, p, batch, keep, l2, dropout))(params)
        updates, state = optimiser.update(grads, state)
        return optax.apply_updates(params, updates), state

    def ndcg(fold_in, target):
        return strong_generalization_protocol(_scores(params, fold_in, n_items), fold_in=fold_in,
                                              target=target)["ndcg@100"]

    key, rng, best = jax.random.PRNGKey(seed), np.random.default_rng(seed), None
    for epoch in range(1, EPOCHS + 1):
        order = rng.permutation(rows.shape[0])
        for start in range(0, order.size, BATCH_USERS):
            key, sub = jax.random.split(key)
            params, state = step(params, state, rows[order[start:start + BATCH_USERS]], sub)
        validation = ndcg(c.val_fold_in, c.val_target)
        if best is None or validation > best["validation"]:
            best = {"epoch": epoch, "validation": validation, "test": ndcg(c.test_fold_in, c.test_target)}
    return best


def run_seed(data, dataset: str, seed: int) -> dict:
    clicks = dataset_strong_split(dataset, data, seed=seed).clicks
    out = {"seed": seed}
    n_train_users = int(np.unique(clicks.train.user).size)
    for loss in LOSSES:
        runs = [dict(train_point(loss, clicks, point, seed), point=point) for point in grid(loss, n_train_users)]
        out[loss] = max(runs, key=lambda run: run["validation"]) | {"grid": runs}
    return out


def markdown(doc: dict) -> str:
    env = doc["environment"]
    lines = ["# Loss control: a full-rank item-item map under the softmax term or the squared error", "",
             (f"Test NDCG@100 (strong generalization), mean ± std over seeds {doc['seeds']}; point and epoch "
             f"({EPOCHS} epochs, batches of {BATCH_USERS} users, Adam) picked on the validation users. "
             f"Machine: {record_line(env)}. "
             f"Command: `{doc['command']}`."), "",
             "| dataset | softmax (Conv4Rec's implicit term) | squared error (EASE's) |",
             "|---|---|---|"]
    for dataset, runs in doc["datasets"].items():
        cells = []
        for loss in LOSSES:
            test = mean_std([run[loss]["test"] for run in runs])
            cells.append(f"{test['mean']:.3f} ± {test['std']:.3f}")
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = control_parser(__doc__, datasets=["ml-100k", "douban"], outputs="loss-control.{json,md}").parse_args(argv)
    if args.report_only:
        write_report(args.out, "loss-control", markdown=markdown)
        return
    env = announce("benchmarks.accuracy.loss_control", argv)
    doc = {"command": env["command"], "environment": env, "seeds": list(SEEDS), "datasets": {}}
    for dataset in args.datasets:
        data = load_dataset(dataset, Path(args.data_dir) / dataset).train
        doc["datasets"][dataset] = []
        for seed in SEEDS:
            run = run_seed(data, dataset, seed)
            doc["datasets"][dataset].append(run)
            print(f"{dataset} seed {seed}: " + ", ".join(f"{loss} test {run[loss]['test']:.4f} "
                                                         f"(val {run[loss]['validation']:.4f})" for loss in LOSSES),
                  flush=True)
    save(args.out, "loss-control", doc, markdown=markdown)


if __name__ == "__main__":
    main()
