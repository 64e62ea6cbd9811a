"""All knobs of a run in one frozen, commented config, with presets and dotted overrides."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from typing import Any

from convae_jax.errors import ConfigError

ACTIVATIONS = ("tanh", "relu", "sigmoid", "selu", "identity")
MATMUL_PRECISIONS = ("default", "float32", "tensorfloat32", "bfloat16")
DECODER_FOLDS = ("auto", "always", "never")
INPUT_NORMS = ("none", "l2")
RATING_HEADS = ("categorical", "ordinal")
CUTPOINTS = ("shared", "per_column")
RATING_PROPENSITIES = ("none", "inverse")
# Validation metrics that can pick the epoch, lower is better: the rating metrics of held-out pairs,
# or the negated NDCG@100 of held-out users, which only a ranking scorer passed to `fit` returns.
SELECT_METRICS = ("rmse", "nll", "neg_ndcg@100")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and loss of Conv4Rec (docs/model.md, "The model" and "The loss")."""

    orientation: str = "item"  # "item": rows are items, columns users (the measured default; docs/model.md, "Orientation"); "user": rows are users
    conv_channels: int = 8  # k: width of the input 1x1 convolution A (C -> k)
    hidden: tuple[int, ...] = (128,)  # encoder dense widths; hidden[0] is d, further entries are extra layers
    decoder_channels: int = 8  # k': width of the decoder before the output 1x1 convolution B (k' -> C)
    encoder_activation: str = "tanh"  # φ, one of ACTIVATIONS
    decoder_activation: str = "identity"  # ψ, applied before B; one of ACTIVATIONS
    input_dropout: float = 0.6  # p: probability of dropping each observed interaction from the input while training, in [0, 1)
    rating_weight: float = 1.0  # λ in ℓ = −Σ[log p(i) + λ log p(c|i)]; 1 is the joint likelihood
    implicit_weight: float = 1.0  # weight of the implicit term log p(i), >= 0; 0 gives the explicit-only variant (P(consume) untrained)
    explicit_on: str = "all"  # which interactions the explicit term scores: "all" observed, or only those "dropped" this step
    logit_chunk: int = 8192  # columns per chunk of the log-sum-exp over the catalogue; memory O(batch·chunk·C)
    decoder_fold: str = "auto"  # one of DECODER_FOLDS: fold B into W_dec (needs ψ = identity); "auto" folds when B's outputs per column (C; 2 with the ordinal head) are <= k' (fewer FLOPs) and, for bf16 matmuls off CPU, at any C (more FLOPs, two fewer passes over the activations); "always" and "never" force it
    input_norm: str = "none"  # one of INPUT_NORMS: "l2" divides each row's input by the L2 norm of its full (pre-dropout) counts, as Mult-DAE/VAE do
    rating_head: str = "categorical"  # one of RATING_HEADS: "categorical" (a free logit per channel, the paper's) or "ordinal" (cumulative logit over the ordered levels; see Conv4Rec.head)
    cutpoints: str = "shared"  # one of CUTPOINTS, the ordinal head's cut-points θ: "shared" by every column, or "per_column" (a rating scale of its own per column: per user under item rows)
    rating_propensity: str = "none"  # one of RATING_PROPENSITIES: "inverse" weighs each rating's explicit term by the model's own inverse propensity of observing the pair, self-normalised per row, gradients stopped (docs/model.md, "Exposure-corrected rating term"; losses.propensity_weights); "none", the paper's unweighted term
    propensity_floor: float = 0.05  # in (0, 1]: the smallest propensity an inverse weight is computed from (weights <= 1 / floor before normalising); read only with rating_propensity="inverse"
    tie_filters: bool = True  # True: the 1x1 convolutions A (C x k) and B (k' x C) are shared by every column (the paper's); False: each column has its own A and B (untied, user rows on one model shard only)
    row_offsets: bool = False  # add h·V (V: d x C) to every column's logits: a row's rating offset from its code (see Conv4Rec.row_offset)
    matmul_precision: str = "default"  # one of MATMUL_PRECISIONS: "default" (backend's: exact fp32 on CPU, TF32 on Ampere+ GPUs), "float32", "tensorfloat32", "bfloat16" (bf16 operands, fp32 accumulation)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, batching, early stopping."""

    learning_rate: float = 1e-3  # Adam step size
    l2: float = 0.1  # coefficient on the summed squared weights (not biases), added to the batch-mean loss
    batch_rows: int = 128  # most rows (users or items) per step
    max_epochs: int = 150  # upper bound on epochs
    patience: int = 15  # epochs without validation improvement before stopping (checked when the validation set is scored)
    validation_fraction: float = 0.05  # share of training interactions held out for early stopping, in [0, 1)
    select_metric: str = "rmse"  # validation metric that picks the epoch (lower is better), one of SELECT_METRICS
    seed: int = 0  # root of every random stream of the run (split, init, dropout, shuffling)
    progress: bool = True  # show a progress bar
    weight_average: float = 0.0  # decay d in [0, 1) of a moving average of the weights after each update (0: off); validation and the returned model read it
    checkpoint_every: int = 1  # epochs between checkpoints when fit writes them (the last epoch always gets one); >= 1
    validate_every: int = 1  # score the validation set (and so select and stop) only every k-th epoch and at the last one; >= 1 (see train.validated_epochs)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocols (docs/model.md, "Protocols") and fold-in of new users."""

    test_fraction: float = 0.1  # random hold-out of interactions for the explicit protocol
    split_seed: int = 0  # seed of the train/test split (kept apart from the training seed)
    rating_threshold: float = 4.0  # τ in P(rating >= τ | consumed)
    ks: tuple[int, ...] = (20,)  # cut-offs of Recall@K and NDCG@K
    eval_rows: int = 256  # users per batch when scoring the whole catalogue
    # Item rows' fold-in of a new user (`predict.fold_in_columns`): Adam steps and step size from the
    # mean training column. Fewer, smaller steps keep the new column nearer that mean, the fold-in's
    # only prior: the comparison's item rows use 50 steps of 0.005 (`benchmarks/accuracy/grids.py`).
    fold_in_steps: int = 150
    fold_in_learning_rate: float = 0.05
    # User rows' fold-in: 0 scores a new user from the encoder's code h0 as it is; ρ > 0 then refines
    # the code to argmax_h log p(history | h) − ρ‖h − h0‖² (`predict.refine_codes`, the same Adam steps
    # and step size), a MAP estimate under a Gaussian prior centred on the encoder's guess.
    fold_in_code_prior: float = 0.0


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The device mesh of training and scoring (README, "Several devices"): rows over `data`, columns over `model`."""

    data: int = 0  # devices that split each batch's rows; 0: every device not used by `model` (jax.device_count() // model; all processes' devices)
    model: int = 1  # devices that split the catalogue's columns (and every column-indexed parameter with its Adam state); >= 1


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    mesh: MeshConfig = MeshConfig()

    def validate(self) -> "Config":
        m, t, e, mesh = self.model, self.train, self.eval, self.mesh
        checks = [
            (m.orientation in ("item", "user"), "model.orientation must be 'item' or 'user'"),
            (m.conv_channels >= 1 and m.decoder_channels >= 1, "model.conv_channels and model.decoder_channels must be >= 1"),
            (len(m.hidden) >= 1 and all(h >= 1 for h in m.hidden), "model.hidden must be a non-empty tuple of positive widths"),
            (m.encoder_activation in ACTIVATIONS, f"model.encoder_activation must be one of {ACTIVATIONS}"),
            (m.decoder_activation in ACTIVATIONS, f"model.decoder_activation must be one of {ACTIVATIONS}"),
            (0.0 <= m.input_dropout < 1.0, "model.input_dropout must lie in [0, 1)"),
            (m.rating_weight >= 0.0, "model.rating_weight must be >= 0"),
            (m.implicit_weight >= 0.0, "model.implicit_weight must be >= 0"),
            (m.explicit_on in ("all", "dropped"), "model.explicit_on must be 'all' or 'dropped'"),
            (m.input_norm in INPUT_NORMS, f"model.input_norm must be one of {INPUT_NORMS}"),
            (m.rating_head in RATING_HEADS, f"model.rating_head must be one of {RATING_HEADS}"),
            (m.cutpoints in CUTPOINTS, f"model.cutpoints must be one of {CUTPOINTS}"),
            (m.rating_propensity in RATING_PROPENSITIES, f"model.rating_propensity must be one of {RATING_PROPENSITIES}"),
            (0.0 < m.propensity_floor <= 1.0, "model.propensity_floor must lie in (0, 1]"),
            (m.cutpoints == "shared" or m.rating_head == "ordinal",
             "model.cutpoints='per_column' needs model.rating_head='ordinal'"),
            (m.tie_filters or m.orientation == "user",
             "model.tie_filters=False needs model.orientation='user' (item rows fold in a new user as a column without filters of its own)"),
            (m.tie_filters or mesh.model == 1, "model.tie_filters=False needs mesh.model=1 (per-column filters are not split over devices)"),
            (m.logit_chunk >= 1, "model.logit_chunk must be >= 1"),
            (m.decoder_fold in DECODER_FOLDS, f"model.decoder_fold must be one of {DECODER_FOLDS}"),
            (m.decoder_fold != "always" or m.decoder_activation == "identity",
             "model.decoder_fold='always' needs model.decoder_activation='identity' (B folds into W_dec only through a linear ψ)"),
            (m.matmul_precision in MATMUL_PRECISIONS, f"model.matmul_precision must be one of {MATMUL_PRECISIONS}"),
            (t.learning_rate > 0, "train.learning_rate must be > 0"),
            (t.l2 >= 0, "train.l2 must be >= 0"),
            (t.batch_rows >= 1, "train.batch_rows must be >= 1"),
            (t.max_epochs >= 1 and t.patience >= 1, "train.max_epochs and train.patience must be >= 1"),
            (0.0 <= t.validation_fraction < 1.0, "train.validation_fraction must lie in [0, 1)"),
            (t.select_metric in SELECT_METRICS, f"train.select_metric must be one of {SELECT_METRICS}"),
            (0.0 <= t.weight_average < 1.0, "train.weight_average must lie in [0, 1)"),
            (t.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
            (t.validate_every >= 1, "train.validate_every must be >= 1"),
            (0.0 < e.test_fraction < 1.0, "eval.test_fraction must lie in (0, 1)"),
            (len(e.ks) >= 1 and all(k >= 1 for k in e.ks), "eval.ks must be positive cut-offs"),
            (e.fold_in_steps >= 1 and e.fold_in_learning_rate > 0,
             "eval.fold_in_steps must be >= 1 and eval.fold_in_learning_rate > 0"),
            (e.fold_in_code_prior >= 0, "eval.fold_in_code_prior must be >= 0"),
            (e.fold_in_code_prior == 0 or m.orientation == "user",
             "eval.fold_in_code_prior refines a new user's code, which only user rows have (model.orientation='user')"),
            (mesh.data >= 0 and mesh.model >= 1, "mesh.data must be >= 0 (0: every device left) and mesh.model >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Config":
        """Builds and validates a config from plain values (JSON lists become tuples); a value of
        the wrong type is a ConfigError naming its `section.field`."""
        if not isinstance(raw, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
        unknown_sections = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown_sections:
            raise ConfigError(f"unknown config sections: {sorted(map(str, unknown_sections))}")
        sections = {}
        for f in dataclasses.fields(cls):
            section_type = f.type if isinstance(f.type, type) else globals()[f.type]
            values = raw.get(f.name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"config section '{f.name}' must be a mapping, got {type(values).__name__}")
            known = {g.name: g for g in dataclasses.fields(section_type)}
            unknown = set(values) - set(known)
            if unknown:
                raise ConfigError(f"unknown config keys in '{f.name}': {sorted(map(str, unknown))}")
            values = {key: _typed(f"{f.name}.{key}", known[key].default, value) for key, value in values.items()}
            sections[f.name] = section_type(**values)
        return cls(**sections).validate()

    def override(self, assignments: list[str] | tuple[str, ...]) -> "Config":
        """Applies `section.field=value` strings (values parsed as Python literals)."""
        raw = self.to_dict()
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            section, dot, name = key.strip().partition(".")
            if not sep or not dot or section not in raw or name not in raw[section]:
                raise ConfigError(f"bad override {assignment!r}: expected section.field=value with a known field")
            try:
                value = ast.literal_eval(text)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                value = text  # bare words such as item or tanh
            raw[section][name] = value
        return Config.from_dict(raw)


def _typed(field: str, default, value):
    """`value` checked against the type of the field's default: bool, int (not bool), finite
    float (ints accepted), str, or a tuple (lists accepted) of elements of the default's type."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{field}: expected a tuple, got {value!r}")
        return tuple(_typed(field, default[0], item) for item in value) if default else tuple(value)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = "finite float" if isinstance(default, float) else type(default).__name__
        raise ConfigError(f"{field}: expected {kind}, got {value!r}"[:300])
    return value


def default() -> Config:
    """The measured default (see README): item rows, d = 128, dropout 0.6, λ = 1."""
    return Config().validate()


def testing() -> Config:
    """A tiny preset that keeps tests fast."""
    return Config(
        model=ModelConfig(conv_channels=4, hidden=(16,), decoder_channels=4, input_dropout=0.3),
        train=TrainConfig(learning_rate=1e-2, l2=1e-3, batch_rows=32, max_epochs=5, patience=5, progress=False),
        eval=EvalConfig(eval_rows=64),
    ).validate()
